//! `augserve serve`, `pull`, `health` and `demo`: the service and its command-line client.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use augserve_client::v1;
use augserve_proto::convert::spec_to_proto;
use augserve_server::config::DatasetConfig;
use augserve_server::{run_server, ServerConfig, ShutdownSignal};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::serve_flags::SettingFlags;

#[derive(Args, Debug)]
#[command(after_long_help = crate::serve_flags::config_help())]
pub struct ServeArgs {
    /// Server configuration (TOML); AUGSERVE_* environment variables and flags override it.
    #[arg(long, env = "AUGSERVE_CONFIG")]
    config: Option<PathBuf>,
    /// Extra dataset as NAME=PATH (repeatable). With no dataset at all, the built-in demo
    /// dataset is served as "demo".
    #[arg(long = "dataset")]
    datasets: Vec<String>,
    /// Demo dataset cache (default: $XDG_CACHE_HOME/augserve or ~/.cache/augserve).
    #[arg(long, env = "AUGSERVE_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Load and check the configuration (file, environment, flags), print the result as TOML
    /// and exit without serving.
    #[arg(long)]
    check_config: bool,
    #[command(flatten)]
    settings: SettingFlags,
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
            .unwrap_or_else(crate::run::default_cache_dir);
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

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
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

#[derive(Args, Debug)]
pub struct PullArgs {
    /// Server address: host:port or unix:///path/to.sock.
    #[arg(long, default_value = "127.0.0.1:50051", env = "AUGSERVE_ADDR")]
    addr: String,
    #[arg(long, default_value = "demo")]
    dataset: String,
    /// Pipeline spec (.toml or .json); default: the ImageNet training recipe.
    #[arg(long)]
    spec: Option<PathBuf>,
    #[arg(long, default_value_t = 64)]
    batch_size: u32,
    /// Epochs to pull (0 = until interrupted).
    #[arg(long, default_value_t = 1)]
    epochs: u64,
    #[arg(long, default_value_t = 0)]
    start_epoch: u64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value_t = 0)]
    rank: u32,
    #[arg(long, default_value_t = 1)]
    world_size: u32,
    /// Batches the server prepares ahead.
    #[arg(long, default_value_t = 2)]
    prefetch: u32,
    #[command(flatten)]
    security: SecurityArgs,
    /// Skip the first N batches of the start epoch (resume).
    #[arg(long, default_value_t = 0)]
    start_batch: u64,
    /// Elastic resume: samples of the start epoch the whole job consumed already (any world
    /// size); the rest of the epoch is sharded among --world-size ranks.
    #[arg(long, default_value_t = 0)]
    start_position: u64,
    /// Write one JSON line per batch: its ids, labels and SHA-256 digests of its tensors (for
    /// comparing clients byte for byte; the Python client's tests use it).
    #[arg(long)]
    record: Option<PathBuf>,
    /// How batches travel: inline (in the gRPC message), shm (shared memory, same host) or
    /// cuda-ipc (device memory, same GPU); the server falls back and says why.
    #[arg(long, value_enum, default_value = "inline")]
    transport: TransportArg,
    #[arg(long)]
    quiet: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum TransportArg {
    Inline,
    Shm,
    CudaIpc,
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(bytes))
}

/// Lower-case hex of `bytes` (digests in records and `run --digest`).
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn f32_bytes(values: &[&[f32]]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|v| v.iter().flat_map(|x| x.to_le_bytes()))
        .collect()
}

/// One batch as a JSON record: everything but its timings, tensors as digests.
fn batch_record(b: &v1::Batch, data: &[u8]) -> serde_json::Value {
    let t = b.images.clone().unwrap_or_default();
    let s = b.stats.clone().unwrap_or_default();
    serde_json::json!({
        "epoch": b.epoch,
        "index": b.index,
        "sample_ids": b.sample_ids,
        "labels_a": b.labels_a,
        "labels_b": b.labels_b,
        "num_classes": b.num_classes,
        "shape": t.shape,
        "dtype": t.dtype,
        "layout": t.layout,
        "device": b.device,
        "images_sha256": sha256_hex(data),
        "lam_sha256": sha256_hex(&f32_bytes(&[&b.lam])),
        "soft_targets_sha256": sha256_hex(&f32_bytes(&[&b.soft_targets])),
        "stats_sha256": sha256_hex(&f32_bytes(&[&s.mean, &s.std, &s.mad, &s.clipped, &s.percentiles])),
        "errors": b.errors.iter().map(|e| (e.sample_id, e.code.clone(), e.source.clone())).collect::<Vec<_>>(),
    })
}

/// TLS and token options of the client subcommands.
#[derive(Args, Debug, Clone, Default)]
pub struct SecurityArgs {
    /// Bearer token, for servers that require one.
    #[arg(long, env = "AUGSERVE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// PEM CA certificate to verify a TLS server with (turns TLS on; TCP only).
    #[arg(long, env = "AUGSERVE_TLS_CA")]
    tls_ca: Option<PathBuf>,
    /// Name to verify the server certificate against (default: the address's host).
    #[arg(long)]
    tls_domain: Option<String>,
}

impl SecurityArgs {
    fn load(&self) -> anyhow::Result<augserve_client::Security> {
        Ok(augserve_client::Security {
            token: self.token.clone(),
            ca_pem: match &self.tls_ca {
                Some(p) => {
                    Some(std::fs::read(p).with_context(|| format!("--tls-ca {}", p.display()))?)
                }
                None => None,
            },
            domain: self.tls_domain.clone(),
        })
    }
}

/// Pulls batches and prints throughput and a summary.
async fn pull_async(args: &PullArgs) -> anyhow::Result<()> {
    let spec = match &args.spec {
        Some(p) => augserve_core::PipelineSpec::from_path(p)?,
        None => augserve_core::PipelineSpec::default(),
    };
    let mut client = augserve_client::connect_secure(&args.addr, 2 << 30, &args.security.load()?)
        .await
        .with_context(|| format!("cannot connect to {}", args.addr))?;
    let info = client
        .get_server_info(v1::GetServerInfoRequest {})
        .await?
        .into_inner();
    println!(
        "server {} at {}: batch ops on {}, {} worker threads",
        info.version, args.addr, info.batch_device, info.worker_threads
    );
    let req = v1::StreamBatchesRequest {
        dataset: args.dataset.clone(),
        spec: Some(spec_to_proto(&spec)),
        batch_size: args.batch_size,
        seed: args.seed,
        start_epoch: args.start_epoch,
        epochs: args.epochs,
        rank: args.rank,
        world_size: args.world_size,
        prefetch: args.prefetch,
        start_batch: args.start_batch,
        start_position: args.start_position,
        transport: match args.transport {
            TransportArg::Inline => v1::Transport::Inline,
            TransportArg::Shm => v1::Transport::Shm,
            TransportArg::CudaIpc => v1::Transport::CudaIpc,
        } as i32,
        ..Default::default()
    };
    let mut record = match &args.record {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("--record {}", p.display()))?,
        )),
        None => None,
    };
    let mut releaser = client.clone();
    let mut stream = client.stream_batches(req).await?.into_inner();
    let mut shm: Option<augserve_client::ShmView> = None;
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new_spinner()
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} {pos} batches {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    let started = Instant::now();
    let (mut images, mut bytes, mut batches, mut errors) = (0u64, 0u64, 0u64, 0u64);
    while let Some(b) = stream.message().await? {
        if let Some(t) = &b.transport {
            let chosen = v1::Transport::try_from(t.transport).unwrap_or(v1::Transport::Inline);
            if !args.quiet || !t.fallback_reason.is_empty() {
                println!(
                    "transport: {}{}",
                    chosen.as_str_name(),
                    if t.fallback_reason.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", t.fallback_reason)
                    }
                );
            }
            if chosen == v1::Transport::Shm {
                shm = Some(augserve_client::ShmView::open(t)?);
            }
        }
        let data: &[u8] = match (&b.slot, &shm) {
            (Some(slot), Some(view)) => view.tensor(slot)?,
            (Some(_), None) => anyhow::bail!("a slot reference without a shared-memory ring"),
            (None, _) => b.images.as_ref().map_or(&[][..], |t| &t.data[..]),
        };
        images += b.sample_ids.len() as u64;
        bytes += data.len() as u64;
        errors += b.errors.len() as u64;
        batches += 1;
        if let Some(w) = record.as_mut() {
            use std::io::Write;
            writeln!(w, "{}", batch_record(&b, data))?;
        }
        // Consumed: hand the slot back so the server can fill it again.
        if let (Some(slot), Some(view)) = (&b.slot, &shm) {
            match releaser
                .release_slots(view.release_request(vec![*slot]))
                .await
            {
                // The stream has ended and its ring is gone: nothing left to release.
                Err(s) if s.code() == tonic::Code::NotFound => {}
                r => {
                    r?;
                }
            }
        }
        let s = started.elapsed().as_secs_f64().max(1e-9);
        bar.set_message(format!(
            "epoch {} | {:.0} images/s | {:.1} MB/s",
            b.epoch,
            images as f64 / s,
            bytes as f64 / s / 1e6
        ));
        bar.inc(1);
    }
    bar.finish_and_clear();
    if let Some(mut w) = record {
        use std::io::Write;
        w.flush()?;
    }
    let s = started.elapsed().as_secs_f64().max(1e-9);
    println!(
        "pulled {images} images in {batches} batches, {s:.2} s: {:.1} images/s, {:.1} MB/s; image errors: {errors}",
        images as f64 / s,
        bytes as f64 / s / 1e6
    );
    Ok(())
}

pub fn pull(args: PullArgs) -> anyhow::Result<()> {
    runtime()?.block_on(pull_async(&args))
}

#[derive(Args, Debug)]
pub struct HealthArgs {
    /// Server address: host:port or unix:///path/to.sock.
    #[arg(long, default_value = "127.0.0.1:50051", env = "AUGSERVE_ADDR")]
    addr: String,
    /// PEM CA certificate, for a TLS server (health needs no token).
    #[arg(long, env = "AUGSERVE_TLS_CA")]
    tls_ca: Option<PathBuf>,
    #[arg(long)]
    tls_domain: Option<String>,
}

/// Exit 0 when the server reports SERVING (for container health checks).
pub fn health(args: HealthArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let security = SecurityArgs {
            token: None,
            tls_ca: args.tls_ca.clone(),
            tls_domain: args.tls_domain.clone(),
        }
        .load()?;
        let channel = augserve_client::connect_channel_secure(&args.addr, &security).await?;
        let mut h = tonic_health::pb::health_client::HealthClient::new(channel);
        let r = h
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await?
            .into_inner();
        let status = tonic_health::pb::health_check_response::ServingStatus::try_from(r.status)
            .map(|s| s.as_str_name().to_string())
            .unwrap_or_else(|_| r.status.to_string());
        println!("{status}");
        anyhow::ensure!(status == "SERVING", "server is {status}");
        Ok(())
    })
}

/// `augserve demo`: a server on the demo dataset and a client pulling from it, in one process.
pub fn demo(epochs: u64, batch_size: u32, cache_dir: Option<PathBuf>) -> anyhow::Result<()> {
    let sock = std::env::temp_dir().join(format!("augserve-demo-{}.sock", std::process::id()));
    let args = ServeArgs {
        config: None,
        datasets: vec![],
        cache_dir,
        check_config: false,
        settings: SettingFlags(vec![("listen_uds", sock.display().to_string())]),
    };
    let cfg = server_config(&args)?;
    let rt = runtime()?;
    rt.block_on(async move {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(run_server(
            cfg,
            Box::pin(async move {
                let _ = rx.await;
            }),
        ));
        for _ in 0..100 {
            if sock.exists() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        println!("demo: server on {}", sock.display());
        let pull = PullArgs {
            addr: format!("unix://{}", sock.display()),
            dataset: "demo".into(),
            spec: None,
            batch_size,
            epochs,
            start_epoch: 0,
            seed: 0,
            rank: 0,
            world_size: 1,
            prefetch: 2,
            start_batch: 0,
            start_position: 0,
            record: None,
            security: SecurityArgs::default(),
            // Same host: shared memory (falls back to inline where /dev/shm is missing).
            transport: TransportArg::Shm,
            quiet: false,
        };
        let r = pull_async(&pull).await;
        let _ = tx.send(());
        server.await??;
        r
    })
}
