//! `augserve pull`: stream epochs from a server, report throughput, optionally record each
//! batch's digests (the Python client's tests compare clients byte for byte with them).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use augserve_client::v1;
use augserve_proto::convert::spec_to_proto;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::digest::{f32_bytes, sha256_hex};
use crate::runtime::runtime;

#[derive(Args, Debug)]
pub struct PullArgs {
    /// Server address: host:port or unix:///path/to.sock.
    #[arg(long, default_value = "127.0.0.1:50051", env = "AUGSERVE_ADDR")]
    pub(crate) addr: String,
    #[arg(long, default_value = "demo")]
    pub(crate) dataset: String,
    /// Pipeline spec (.toml or .json); default: the ImageNet training recipe.
    #[arg(long)]
    pub(crate) spec: Option<PathBuf>,
    #[arg(long, default_value_t = 64)]
    pub(crate) batch_size: u32,
    /// Epochs to pull (0 = until interrupted).
    #[arg(long, default_value_t = 1)]
    pub(crate) epochs: u64,
    #[arg(long, default_value_t = 0)]
    pub(crate) start_epoch: u64,
    #[arg(long, default_value_t = 0)]
    pub(crate) seed: u64,
    #[arg(long, default_value_t = 0)]
    pub(crate) rank: u32,
    #[arg(long, default_value_t = 1)]
    pub(crate) world_size: u32,
    /// Batches the server prepares ahead.
    #[arg(long, default_value_t = 2)]
    pub(crate) prefetch: u32,
    #[command(flatten)]
    pub(crate) security: SecurityArgs,
    /// Skip the first N batches of the start epoch (resume).
    #[arg(long, default_value_t = 0)]
    pub(crate) start_batch: u64,
    /// Elastic resume: samples of the start epoch the whole job consumed already (any world
    /// size); the rest of the epoch is sharded among --world-size ranks.
    #[arg(long, default_value_t = 0)]
    pub(crate) start_position: u64,
    /// Write one JSON line per batch: its ids, labels and SHA-256 digests of its tensors (for
    /// comparing clients byte for byte; the Python client's tests use it).
    #[arg(long)]
    pub(crate) record: Option<PathBuf>,
    /// How batches travel: inline (in the gRPC message), shm (shared memory, same host) or
    /// cuda-ipc (device memory, same GPU); the server falls back and says why.
    #[arg(long, value_enum, default_value = "inline")]
    pub(crate) transport: TransportArg,
    #[arg(long)]
    pub(crate) quiet: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TransportArg {
    Inline,
    Shm,
    CudaIpc,
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
    pub(crate) token: Option<String>,
    /// PEM CA certificate to verify a TLS server with (turns TLS on; TCP only).
    #[arg(long, env = "AUGSERVE_TLS_CA")]
    pub(crate) tls_ca: Option<PathBuf>,
    /// Name to verify the server certificate against (default: the address's host).
    #[arg(long)]
    pub(crate) tls_domain: Option<String>,
}

impl SecurityArgs {
    pub(crate) fn load(&self) -> anyhow::Result<augserve_client::Security> {
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
/// The StreamBatches request `pull`'s flags ask for.
fn stream_request(args: &PullArgs, spec: &augserve_core::PipelineSpec) -> v1::StreamBatchesRequest {
    v1::StreamBatchesRequest {
        dataset: args.dataset.clone(),
        spec: Some(spec_to_proto(spec)),
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
    }
}

pub(crate) async fn pull_async(args: &PullArgs) -> anyhow::Result<()> {
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
    let req = stream_request(args, &spec);
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
