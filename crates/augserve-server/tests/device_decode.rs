#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The server's GPU-decoding path (`AUGSERVE_GPU_DECODE=1`), exercised without a GPU: a backend
//! whose "device decoder" takes every image the per-image stage offers and decodes it at the
//! batch stage on the CPU stands in for nvJPEG. Streams must carry the same batches, bytes
//! and per-image errors as a plain CPU server on the same seed, corrupt files among them, and
//! the decode counts must reach the Prometheus metrics.
//! What this cannot check (nvJPEG itself, the kernels) runs in `benches/gpu/run.sh`.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use augserve_client::v1;
use augserve_core::decode::JpegInfo;
use augserve_core::ops::mix::MixPlan;
use augserve_core::pipeline::{BatchOutput, DecodeCounts, DeviceDecoder, PreparedImage};
use augserve_core::{BatchOps, CpuBatchOps, Destination, PipelineSpec};
use augserve_server::{AugServeService, ServerConfig};
use rayon::ThreadPool;

/// Takes every image; decodes the deferred ones on the CPU at the batch stage.
#[derive(Default)]
struct CpuStandInDecoder {
    cpu: CpuBatchOps,
    taken: AtomicUsize,
    deferred_seen: AtomicUsize,
}

impl DeviceDecoder for CpuStandInDecoder {
    fn takes(&self, _: &JpegInfo, _: u64) -> bool {
        self.taken.fetch_add(1, Ordering::Relaxed);
        true
    }
    fn observe_cpu(&self, _: usize, _: std::time::Duration) {}
}

impl BatchOps for CpuStandInDecoder {
    fn device(&self) -> String {
        "stand-in device decoder".into()
    }
    fn device_decoder(&self) -> Option<&dyn DeviceDecoder> {
        Some(self)
    }
    fn decode_counts(&self) -> Option<DecodeCounts> {
        Some(DecodeCounts {
            on_device: self.deferred_seen.load(Ordering::Relaxed) as u64,
            device_share: 1.0,
            pixel_fraction: Some(0.5),
            ..DecodeCounts::default()
        })
    }
    fn decode_report(&self) -> Option<String> {
        Some(format!(
            "stand-in: {} images taken",
            self.taken.load(Ordering::Relaxed)
        ))
    }
    fn run(
        &self,
        images: &[PreparedImage],
        plan: &MixPlan,
        spec: &PipelineSpec,
        pool: &ThreadPool,
        to: Destination<'_>,
    ) -> augserve_core::Result<BatchOutput> {
        let deferred = images.iter().filter(|im| im.deferred.is_some()).count();
        self.deferred_seen.fetch_add(deferred, Ordering::Relaxed);
        self.cpu.run(images, plan, spec, pool, to)
    }
}

/// Streams one epoch of "data" from a server on `ops` (socket `name`): (tensor bytes, errors'
/// names) per batch. With `ticker`, the server's metrics ticker runs too, for a second past
/// the stream's end.
fn stream_epoch(
    dir: &Path,
    name: &str,
    ops: Arc<dyn BatchOps>,
    ticker: bool,
) -> Vec<(Vec<u8>, Vec<String>)> {
    let mut cfg = ServerConfig::default();
    cfg.datasets.push(augserve_server::config::DatasetConfig {
        name: "data".into(),
        path: dir.join("data"),
        format: None,
    });
    cfg.threads = 2;
    let service =
        AugServeService::with_batch_ops(&cfg, Arc::new(AtomicBool::new(false)), ops.clone(), None)
            .unwrap();
    let sock = dir.join(format!("{name}.sock"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        if ticker {
            tokio::spawn(service.telemetry().run_ticker(ops, Duration::ZERO));
        }
        let mut c = common::serve_and_connect(service, &sock).await;
        let mut s = c
            .stream_batches(v1::StreamBatchesRequest {
                dataset: "data".into(),
                batch_size: 16,
                epochs: 1,
                seed: 11,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let mut out = Vec::new();
        while let Some(b) = s.message().await.unwrap() {
            let mut errors: Vec<String> = b.errors.iter().map(|e| e.source.clone()).collect();
            errors.sort();
            out.push((b.images.unwrap().data.to_vec(), errors));
        }
        if ticker {
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
        out
    })
}

#[test]
fn device_decoding_streams_the_cpu_batches_and_exports_decode_counts() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    augserve_core::demo::write_demo_dataset(&data, 3).unwrap();
    // Headers that parse (so the image is left to the device decoder) over bodies that fail.
    let crash = common::jpeg_testdata().join("crash");
    let bad = data.join("zz_bad");
    std::fs::create_dir(&bad).unwrap();
    for f in [
        "derive-huffman-codes-overflow.jpg",
        "2c9e7a1805f8b47630bbb83d21bf8222.jpg",
    ] {
        std::fs::copy(crash.join(f), bad.join(f)).unwrap();
    }
    let plain = stream_epoch(d.path(), "cpu", Arc::new(CpuBatchOps::default()), false);
    let stand_in = Arc::new(CpuStandInDecoder::default());
    // Metrics on: the decode counts must reach Prometheus.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let metrics_addr = format!("127.0.0.1:{port}");
    augserve_server::telemetry::install_exporter(metrics_addr.parse().unwrap()).unwrap();
    let decoded = stream_epoch(d.path(), "stand-in", stand_in.clone(), true);
    assert!(stand_in.deferred_seen.load(Ordering::Relaxed) >= 30);
    assert_eq!(plain.len(), decoded.len());
    for (k, (a, b)) in plain.iter().zip(&decoded).enumerate() {
        assert_eq!(a.1, b.1, "batch {k}: per-image errors");
        assert_eq!(a.0, b.0, "batch {k}: tensor bytes");
    }
    let errors: Vec<&String> = decoded.iter().flat_map(|b| &b.1).collect();
    assert_eq!(errors.len(), 2, "{errors:?}");

    let metrics = http_get(&metrics_addr, "/metrics");
    let seen = stand_in.deferred_seen.load(Ordering::Relaxed);
    let line = format!("augserve_decoded_images_total{{decoder=\"gpu\"}} {seen}");
    assert!(
        metrics.lines().any(|l| l == line),
        "no '{line}' in:\n{metrics}"
    );
    assert!(metrics.contains("augserve_decoded_images_total{decoder=\"cpu_fallback\"} 0"));
    assert!(metrics.lines().any(|l| l == "augserve_gpu_decode_share 1"));
    assert!(metrics
        .lines()
        .any(|l| l == "augserve_gpu_decode_pixel_fraction 0.5"));
}

fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}
