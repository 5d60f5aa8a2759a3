// The binary is the one place that prints (library crates never do).
#![allow(clippy::print_stdout, clippy::print_stderr)]

//! `augserve`: the command-line entry point. Thin: argument parsing, logging, progress
//! output and exit codes live here; the work is in the library crates.

mod bench;
mod cache_dir;
mod chart;
mod demo;
mod digest;
mod gpu;
mod health;
mod preview;
mod pull;
mod run;
mod runtime;
mod serve;
mod serve_flags;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[derive(Parser, Debug)]
#[command(
    name = "augserve",
    version,
    about = "GPU data augmentation for vision training: decode, crop, jitter, resize, mixup, normalise"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "AUGSERVE_LOG_FORMAT"
    )]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the pipeline over a dataset (the built-in demo dataset when none is given) and
    /// report throughput, errors and batch statistics.
    Run(run::RunArgs),
    /// Serve batches over gRPC (TCP and/or a Unix socket).
    Serve(serve::ServeArgs),
    /// Measure the pipeline: images/s and ms per stage with the batch ops on the CPU and (when
    /// usable) the GPU, over thread counts and batch sizes; writes JSON/CSV with --out-dir.
    Bench(bench::BenchArgs),
    /// Stream epochs from a server and report throughput.
    Pull(pull::PullArgs),
    /// Check a server's gRPC health (exit 0 when SERVING).
    Health(health::HealthArgs),
    /// Say whether the GPU path is usable here and what it would use: the CUDA libraries
    /// (where each was found), the device, nvJPEG's start-up check; or why not (exit 1).
    Gpu(gpu::GpuArgs),
    /// Start a server on the demo dataset and pull from it, in one process.
    Demo {
        #[arg(long, default_value_t = 2)]
        epochs: u64,
        #[arg(long, default_value_t = 64)]
        batch_size: u32,
        #[arg(long, env = "AUGSERVE_CACHE_DIR")]
        cache_dir: Option<PathBuf>,
    },
    /// Print the default pipeline spec as TOML, or check a spec file.
    Spec {
        /// A .toml or .json spec to validate.
        file: Option<PathBuf>,
    },
    /// Write the built-in demo dataset (ImageFolder layout) to a folder.
    DemoData {
        /// Destination folder.
        out: PathBuf,
        /// Images per class.
        #[arg(long, default_value_t = augserve_core::demo::PER_CLASS)]
        per_class: usize,
    },
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_env("AUGSERVE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only on a terminal: log files and collectors get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve(_)) {
        // Not for the server: its one arena is shared by every stream's batch buffers, which
        // glibc's defaults map and unmap whole (the documented memory bound counts on it).
        augserve_server::memory::keep_freed_memory_for_reuse();
    }
    init_logging(cli.log_format);
    // A mistyped AUGSERVE_* variable must not pass silently, whichever subcommand reads it.
    if let Err(e) = augserve_server::config::check_variables(std::env::vars()) {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    let result = match cli.command {
        Command::Run(args) => run::run(args),
        Command::Serve(args) => serve::serve(args),
        Command::Bench(args) => bench::bench(args),
        Command::Pull(args) => pull::pull(args),
        Command::Health(args) => health::health(args),
        Command::Gpu(args) => gpu::gpu(args),
        Command::Demo {
            epochs,
            batch_size,
            cache_dir,
        } => demo::demo(epochs, batch_size, cache_dir),
        Command::Spec { file: None } => {
            print!(
                "{}",
                augserve_core::PipelineSpec::default().to_toml_string()
            );
            Ok(())
        }
        Command::Spec { file: Some(f) } => augserve_core::PipelineSpec::from_path(&f)
            .map(|_| println!("{}: valid", f.display()))
            .map_err(anyhow::Error::from),
        Command::DemoData { out, per_class } => {
            augserve_core::demo::write_demo_dataset(&out, per_class)
                .map(|()| println!("wrote {} images to {}", per_class * 10, out.display()))
                .map_err(anyhow::Error::from)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
