//! Operations telemetry: Prometheus metrics on their own HTTP port, and the statistics every
//! batch carries (per-channel mean, std, mean absolute deviation, clipped fraction) exported as
//! gauges and logged at an interval, so a broken augmentation (all-black images, saturated
//! brightness, wrong normalisation) shows on a dashboard before it ruins a training run.
//!
//! Metrics go through the `metrics` facade: without an installed exporter (metrics_listen unset)
//! every call is a no-op.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use augserve_core::batch::Batch;
use augserve_core::ops::stats::{BatchStats, PERCENTILES};
use augserve_core::BatchOps;
use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

use crate::ServerError;

/// Metric names (dashboards and tests use these).
pub mod names {
    pub const IMAGES_TOTAL: &str = "augserve_images_total";
    pub const IMAGES_PER_SECOND: &str = "augserve_images_per_second";
    pub const BATCHES_TOTAL: &str = "augserve_batches_total";
    pub const BYTES_SENT_TOTAL: &str = "augserve_bytes_sent_total";
    pub const IMAGE_ERRORS_TOTAL: &str = "augserve_image_errors_total";
    pub const IMAGE_WARNINGS_TOTAL: &str = "augserve_image_warnings_total";
    pub const IMAGES_DECODED_TOTAL: &str = "augserve_images_decoded_total";
    pub const STAGE_SECONDS: &str = "augserve_stage_seconds";
    pub const HOST_COPY_BYTES_TOTAL: &str = "augserve_host_copy_bytes_total";
    pub const ACTIVE_STREAMS: &str = "augserve_active_streams";
    pub const STREAMS_TOTAL: &str = "augserve_streams_total";
    pub const QUEUED_BATCHES: &str = "augserve_queued_batches";
    pub const GPU_MEMORY_USED_BYTES: &str = "augserve_gpu_memory_used_bytes";
    pub const BATCH_MEMORY_RESERVED_BYTES: &str = "augserve_batch_memory_reserved_bytes";
    pub const BATCH_MEMORY_BUDGET_BYTES: &str = "augserve_batch_memory_budget_bytes";
    pub const BATCH_MEAN: &str = "augserve_batch_mean";
    pub const BATCH_STD: &str = "augserve_batch_std";
    pub const BATCH_MAD: &str = "augserve_batch_mad";
    pub const BATCH_CLIPPED: &str = "augserve_batch_clipped_fraction";
    pub const BATCH_PERCENTILE: &str = "augserve_batch_percentile";
    pub const INFO: &str = "augserve_info";
    pub const DECODED_IMAGES_TOTAL: &str = "augserve_decoded_images_total";
    pub const GPU_DECODE_SHARE: &str = "augserve_gpu_decode_share";
    pub const GPU_DECODE_PIXEL_FRACTION: &str = "augserve_gpu_decode_pixel_fraction";
}

/// Histogram buckets for stage latencies, 100 us to 30 s.
const STAGE_BUCKETS: [f64; 14] = [
    1e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
];

/// Starts the Prometheus exporter: `GET /metrics` on `addr` (text format).
pub fn install_exporter(addr: SocketAddr) -> Result<(), ServerError> {
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(Matcher::Full(names::STAGE_SECONDS.into()), &STAGE_BUCKETS)
        .map_err(|e| ServerError::Config(format!("metrics: {e}")))?
        .install()
        .map_err(|e| ServerError::Config(format!("metrics_listen {addr}: {e}")))?;
    metrics::describe_counter!(names::IMAGES_TOTAL, "Images delivered in batches");
    metrics::describe_gauge!(
        names::IMAGES_PER_SECOND,
        "Images delivered over the last second, all streams"
    );
    metrics::describe_counter!(names::BATCHES_TOTAL, "Batches delivered");
    metrics::describe_counter!(
        names::BYTES_SENT_TOTAL,
        "Tensor bytes handed to the transport"
    );
    metrics::describe_counter!(
        names::IMAGE_ERRORS_TOTAL,
        "Images left out of their batch, by reason code"
    );
    metrics::describe_counter!(
        names::IMAGE_WARNINGS_TOTAL,
        "Damaged images kept in their batch (spec on_damaged = accept), by reason code"
    );
    metrics::describe_counter!(
        names::IMAGES_DECODED_TOTAL,
        "Images decoded, by path: region (libjpeg-turbo, the crop's region only), scaled and progressive (of region), whole, device"
    );
    metrics::describe_histogram!(
        names::STAGE_SECONDS,
        metrics::Unit::Seconds,
        "Time per batch and stage; read/decode/color are summed over worker threads, send is the wait for the client"
    );
    metrics::describe_counter!(
        names::HOST_COPY_BYTES_TOTAL,
        "Bytes the host copied for GPU batches: packing uploads into pinned memory, pageable uploads, JPEG bytes for nvJPEG, output out of pinned memory (none for a shared-memory slot the device writes into)"
    );
    metrics::describe_gauge!(names::ACTIVE_STREAMS, "Streams being served");
    metrics::describe_gauge!(
        names::QUEUED_BATCHES,
        "Batches prepared and waiting for their clients, all streams"
    );
    metrics::describe_gauge!(
        names::BATCH_MEMORY_RESERVED_BYTES,
        "Batch memory the open streams have reserved (see max_batch_memory_bytes)"
    );
    metrics::describe_gauge!(
        names::BATCH_MEMORY_BUDGET_BYTES,
        "max_batch_memory_bytes, as resolved at start-up"
    );
    metrics::describe_gauge!(
        names::GPU_MEMORY_USED_BYTES,
        "Device memory in use (all processes on the device)"
    );
    metrics::describe_gauge!(
        names::BATCH_MEAN,
        "Per-channel mean of the last batch's output values"
    );
    metrics::describe_gauge!(names::BATCH_STD, "Per-channel std of the last batch");
    metrics::describe_gauge!(
        names::BATCH_MAD,
        "Per-channel mean absolute deviation of the last batch"
    );
    metrics::describe_gauge!(
        names::BATCH_CLIPPED,
        "Per-channel fraction of the last batch's pixels at 0 or 255"
    );
    metrics::describe_gauge!(
        names::BATCH_PERCENTILE,
        "Per-channel percentiles of the last batch's output values (label percentile: 1, 5, 50, 95, 99)"
    );
    metrics::describe_counter!(
        names::DECODED_IMAGES_TOTAL,
        "With GPU decoding: images by where they were decoded (gpu, cpu_fallback: refused by the GPU decoder, cpu_by_header: formats it does not take)"
    );
    metrics::describe_gauge!(
        names::GPU_DECODE_SHARE,
        "With GPU decoding: share of the eligible images sent to the GPU (tuned from measured rates)"
    );
    metrics::describe_gauge!(
        names::GPU_DECODE_PIXEL_FRACTION,
        "With GPU decoding: pixels decoded over the whole images' pixels (below 1 with ROI decode)"
    );
    Ok(())
}

const CHANNELS: [&str; 3] = ["0", "1", "2"];

/// The GPU-decoding counts as metrics (totals kept by the backend, exported as they are).
fn record_decode_counts(c: &augserve_core::pipeline::DecodeCounts) {
    for (place, n) in [
        ("gpu", c.on_device),
        ("cpu_fallback", c.fell_back),
        ("cpu_by_header", c.kept_on_cpu),
    ] {
        counter!(names::DECODED_IMAGES_TOTAL, "decoder" => place).absolute(n);
    }
    gauge!(names::GPU_DECODE_SHARE).set(c.device_share);
    if let Some(f) = c.pixel_fraction {
        gauge!(names::GPU_DECODE_PIXEL_FRACTION).set(f);
    }
}

/// Server-wide counters behind the gauges, and the latest statistics per dataset.
#[derive(Default)]
pub struct Telemetry {
    images: AtomicU64,
    queued: AtomicI64,
    latest: Mutex<BTreeMap<String, LatestStats>>,
}

#[derive(Clone, Copy)]
struct LatestStats {
    stats: BatchStats,
    images: u64,
}

impl Telemetry {
    /// Records a finished batch of `dataset` (before it is sent).
    pub fn record_batch(&self, dataset: &str, b: &Batch) {
        let n = b.len() as u64;
        self.images.fetch_add(n, Ordering::Relaxed);
        let ds = dataset.to_string();
        counter!(names::IMAGES_TOTAL, "dataset" => ds.clone()).increment(n);
        counter!(names::BATCHES_TOTAL, "dataset" => ds.clone()).increment(1);
        for e in &b.errors {
            counter!(names::IMAGE_ERRORS_TOTAL, "dataset" => ds.clone(), "reason" => e.kind.reason_code())
                .increment(1);
        }
        for w in &b.warnings {
            counter!(names::IMAGE_WARNINGS_TOTAL, "dataset" => ds.clone(), "reason" => w.kind.reason_code())
                .increment(1);
        }
        let t = &b.timings;
        let d = &t.decoded;
        for (path, count) in [
            ("region", d.region),
            ("scaled", d.scaled),
            ("progressive", d.progressive),
            ("whole", d.whole),
            ("device", d.device),
        ] {
            if count > 0 {
                counter!(names::IMAGES_DECODED_TOTAL, "dataset" => ds.clone(), "path" => path)
                    .increment(u64::from(count));
            }
        }
        for (stage, d) in [
            ("read", t.read),
            ("decode", t.decode),
            ("color", t.color),
            ("per_image_wall", t.per_image_wall),
            ("resize", t.resize),
            ("mix_normalize", t.mix_normalize),
            ("stats", t.stats),
            ("total", t.total),
        ] {
            histogram!(names::STAGE_SECONDS, "stage" => stage).record(d.as_secs_f64());
        }
        // What augmentation costs the GPU a trainer shares (CPU batches record nothing).
        if !t.device_busy.is_zero() {
            let busy = t.device_busy.as_secs_f64();
            histogram!(names::STAGE_SECONDS, "stage" => "gpu_busy").record(busy);
        }
        if t.host_copy_bytes > 0 {
            counter!(names::HOST_COPY_BYTES_TOTAL, "dataset" => ds.clone())
                .increment(t.host_copy_bytes);
        }
        if n > 0 {
            let s = &b.stats;
            for (c, ch) in CHANNELS.iter().enumerate() {
                let labels = [("dataset", ds.clone()), ("channel", (*ch).to_string())];
                gauge!(names::BATCH_MEAN, &labels).set(f64::from(s.mean[c]));
                gauge!(names::BATCH_STD, &labels).set(f64::from(s.std[c]));
                gauge!(names::BATCH_MAD, &labels).set(f64::from(s.mad[c]));
                gauge!(names::BATCH_CLIPPED, &labels).set(f64::from(s.clipped[c]));
                for (level, values) in PERCENTILES.iter().zip(s.percentiles.iter().flatten()) {
                    let labels = [
                        ("dataset", ds.clone()),
                        ("channel", (*ch).to_string()),
                        ("percentile", level.to_string()),
                    ];
                    gauge!(names::BATCH_PERCENTILE, &labels).set(f64::from(values[c]));
                }
            }
            if let Ok(mut latest) = self.latest.lock() {
                let e = latest.entry(ds).or_insert(LatestStats {
                    stats: b.stats,
                    images: 0,
                });
                e.stats = b.stats;
                e.images += n;
            }
        }
    }

    /// Records a batch handed to the transport after waiting `wait` for room in the queue.
    pub fn record_send(&self, dataset: &str, bytes: usize, wait: Duration) {
        counter!(names::BYTES_SENT_TOTAL, "dataset" => dataset.to_string()).increment(bytes as u64);
        histogram!(names::STAGE_SECONDS, "stage" => "send").record(wait.as_secs_f64());
    }

    /// Moves this server's count of queued batches by `delta`.
    pub fn queue_changed(&self, delta: i64) {
        let now = self.queued.fetch_add(delta, Ordering::Relaxed) + delta;
        gauge!(names::QUEUED_BATCHES).set(now as f64);
    }

    pub fn stream_started(&self) {
        counter!(names::STREAMS_TOTAL).increment(1);
        gauge!(names::ACTIVE_STREAMS).increment(1.0);
    }

    pub fn stream_ended(&self) {
        gauge!(names::ACTIVE_STREAMS).decrement(1.0);
    }

    /// Once a second: images/s and device memory; every `log_every` (if non-zero): one log
    /// line per dataset with its latest batch statistics, and the GPU decoding split when it
    /// is on. Runs until the server stops.
    pub async fn run_ticker(self: Arc<Self>, ops: Arc<dyn BatchOps>, log_every: Duration) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_images = self.images.load(Ordering::Relaxed);
        let mut last_log = tokio::time::Instant::now();
        let mut last_log_images = last_images;
        loop {
            tick.tick().await;
            let images = self.images.load(Ordering::Relaxed);
            gauge!(names::IMAGES_PER_SECOND).set((images - last_images) as f64);
            last_images = images;
            if let Some(bytes) = ops.device_memory_used() {
                gauge!(names::GPU_MEMORY_USED_BYTES).set(bytes as f64);
            }
            if let Some(c) = ops.decode_counts() {
                record_decode_counts(&c);
            }
            if !log_every.is_zero() && last_log.elapsed() >= log_every {
                let secs = last_log.elapsed().as_secs_f64();
                let rate = (images - last_log_images) as f64 / secs;
                last_log = tokio::time::Instant::now();
                last_log_images = images;
                self.log_latest(rate);
                if let Some(report) = ops.decode_report() {
                    tracing::info!("{report}");
                }
            }
        }
    }

    fn log_latest(&self, images_per_s: f64) {
        let Ok(latest) = self.latest.lock() else {
            return;
        };
        if latest.is_empty() {
            return;
        }
        for (dataset, l) in latest.iter() {
            let s = &l.stats;
            tracing::info!(
                dataset = %dataset,
                images_per_s = format!("{images_per_s:.1}"),
                images_total = l.images,
                mean = ?s.mean,
                std = ?s.std,
                mad = ?s.mad,
                clipped = ?s.clipped,
                percentiles = ?s.percentiles.map(|p| PERCENTILES.iter().copied().zip(p).collect::<Vec<_>>()),
                "batch telemetry"
            );
        }
    }
}
