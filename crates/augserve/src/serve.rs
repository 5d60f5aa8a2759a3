//! `augserve serve`: the configuration from file, environment and flags, then the server
//! until SIGTERM or SIGINT.

use std::path::PathBuf;

use anyhow::Context;
use augserve_server::config::DatasetConfig;
use augserve_server::{run_server, ServerConfig, ShutdownSignal};
use clap::Args;

use crate::runtime::runtime;
use crate::serve_flags::SettingFlags;

#[derive(Args, Debug)]
#[command(after_long_help = crate::serve_flags::config_help())]
pub struct ServeArgs {
    /// Server configuration (TOML); AUGSERVE_* environment variables and flags override it.
    #[arg(long, env = "AUGSERVE_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// Extra dataset as NAME=PATH (repeatable). With no dataset at all, the built-in demo
    /// dataset is served as "demo".
    #[arg(long = "dataset")]
    pub(crate) datasets: Vec<String>,
    /// Demo dataset cache (default: $XDG_CACHE_HOME/augserve or ~/.cache/augserve).
    #[arg(long, env = "AUGSERVE_CACHE_DIR")]
    pub(crate) cache_dir: Option<PathBuf>,
    /// Load and check the configuration (file, environment, flags), print the result as TOML
    /// and exit without serving.
    #[arg(long)]
    pub(crate) check_config: bool,
    #[command(flatten)]
    pub(crate) settings: SettingFlags,
}

pub fn server_config(args: &ServeArgs) -> anyhow::Result<ServerConfig> {
    let mut cfg = ServerConfig::load(args.config.as_deref(), std::env::vars(), &args.settings.0)?;
    for d in &args.datasets {
        let (name, path) = d
            .split_once('=')
            .with_context(|| format!("--dataset {d}: expected NAME=PATH"))?;
        cfg.datasets.push(DatasetConfig {
            name: name.into(),
            path: path.into(),
            format: None,
        });
    }
    if cfg.datasets.is_empty() && !args.check_config {
        let cache = args
            .cache_dir
            .clone()
            .unwrap_or_else(crate::cache_dir::default_cache_dir);
        std::fs::create_dir_all(&cache)?;
        let path = augserve_core::demo::ensure_demo_dataset(&cache)?;
        tracing::info!(path = %path.display(), "no dataset configured: serving the built-in demo dataset as \"demo\"");
        cfg.datasets.push(DatasetConfig {
            name: "demo".into(),
            path,
            format: None,
        });
    }
    Ok(cfg)
}

fn signals() -> ShutdownSignal {
    Box::pin(async {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = term => tracing::info!("SIGTERM"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT"),
        }
    })
}

pub fn serve(args: ServeArgs) -> anyhow::Result<()> {
    augserve_server::memory::use_one_malloc_arena();
    let cfg = server_config(&args)?;
    if args.check_config {
        print!("{}", toml::to_string(&cfg)?);
        return Ok(());
    }
    runtime()?.block_on(run_server(cfg, signals()))?;
    Ok(())
}
