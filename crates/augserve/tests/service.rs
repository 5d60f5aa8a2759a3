#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]
//! The gRPC service, tested through the real `augserve serve` binary over TCP and a Unix
//! socket: exact epochs and shards, reproducibility, per-image errors, error codes, health,
//! reflection. Load, cancellations, SIGTERM and hostile input: tests/robustness.rs.

mod common;
use common::{free_port, rt};

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use augserve_client::v1;
use tonic::Code;

struct Server {
    child: Child,
    tcp: String,
    uds: PathBuf,
    data: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(extra_env: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        augserve_core::demo::write_demo_dataset(&data, 3).unwrap(); // 30 real JPEGs, 10 classes
        let port = free_port();
        let tcp = format!("127.0.0.1:{port}");
        let uds = dir.path().join("augserve.sock");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_augserve"));
        cmd.args(["serve", "--listen-tcp", &tcp, "--device", "cpu"])
            .arg("--listen-uds")
            .arg(&uds)
            .arg("--dataset")
            .arg(format!("shapes={}", data.display()))
            .env("AUGSERVE_THREADS", "2")
            .env("AUGSERVE_MAX_BATCH_SIZE", "64")
            .env("AUGSERVE_MAX_REQUEST_BYTES", "4000000")
            .env("AUGSERVE_GRACE_PERIOD_S", "5")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        let s = Server {
            child,
            tcp,
            uds,
            data,
            _dir: dir,
        };
        let t = Instant::now();
        // A connect, not the socket file, which exists from bind(), before listen().
        while !(std::os::unix::net::UnixStream::connect(&s.uds).is_ok()
            && std::net::TcpStream::connect(&s.tcp).is_ok())
        {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }

    fn uds_addr(&self) -> String {
        format!("unix://{}", self.uds.display())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn request(batch_size: u32, epochs: u64, rank: u32, world_size: u32) -> v1::StreamBatchesRequest {
    v1::StreamBatchesRequest {
        dataset: "shapes".into(),
        spec: Some(v1::PipelineSpec {
            width: Some(64),
            height: Some(64),
            mix: Some(v1::Mix {
                mixup_alpha: 0.4,
                cutmix_alpha: 1.0,
                num_classes: 10,
                ..Default::default()
            }),
            ..Default::default()
        }),
        batch_size,
        seed: 7,
        epochs,
        rank,
        world_size,
        tail: v1::Tail::Uneven as i32,
        ..Default::default()
    }
}

async fn pull_all(addr: &str, req: v1::StreamBatchesRequest) -> Vec<v1::Batch> {
    let mut c = augserve_client::connect(addr, 256 << 20).await.unwrap();
    let mut s = c.stream_batches(req).await.unwrap().into_inner();
    let mut out = Vec::new();
    while let Some(b) = s.message().await.unwrap() {
        out.push(b);
    }
    out
}

#[test]
fn epochs_shards_and_reproducibility_over_tcp_and_uds() {
    let server = Server::start(&[]);
    rt().block_on(async {
        // Two epochs: every sample exactly once per epoch.
        let batches = pull_all(&server.tcp, request(8, 2, 0, 1)).await;
        for epoch in 0..2 {
            let mut ids: Vec<u64> = batches
                .iter()
                .filter(|b| b.epoch == epoch)
                .flat_map(|b| b.sample_ids.clone())
                .collect();
            ids.sort_unstable();
            assert_eq!(ids, (0..30).collect::<Vec<_>>(), "epoch {epoch}");
        }
        let b = &batches[0];
        let t = b.images.as_ref().unwrap();
        assert_eq!(t.shape, vec![8, 3, 64, 64]);
        assert_eq!(t.data.len(), 8 * 3 * 64 * 64 * 4);
        assert_eq!(b.soft_targets.len(), 8 * 10);
        assert_eq!(b.stats.as_ref().unwrap().mean.len(), 3);
        // The server's tensors are the in-process pipeline's, byte for byte (its buffers
        // are recycled from batch to batch; none of their old bytes may show).
        let spec =
            augserve_proto::convert::spec_from_proto(request(8, 2, 0, 1).spec.as_ref()).unwrap();
        let ds = augserve_core::Dataset::open(
            &server.data,
            augserve_core::DatasetFormat::ImageFolder,
            1 << 24,
        )
        .unwrap();
        let local = augserve_core::Pipeline::new(
            std::sync::Arc::new(ds),
            spec,
            augserve_core::PipelineOptions::default(),
        )
        .unwrap();
        for b in &batches {
            // One rank: the mixing key is the batch index.
            let want = local
                .batch(7, b.epoch, b.index, b.index, &b.sample_ids)
                .unwrap();
            let got = &b.images.as_ref().unwrap().data;
            assert!(
                got[..] == want.tensor.data[..],
                "batch {} of epoch {}",
                b.index,
                b.epoch
            );
        }
        // The same request again, over the Unix socket: byte-identical batches.
        let again = pull_all(&server.uds_addr(), request(8, 2, 0, 1)).await;
        assert_eq!(batches.len(), again.len());
        for (mut a, mut b) in batches.iter().cloned().zip(again) {
            // Timings differ run to run; everything else must be identical.
            a.timings = None;
            b.timings = None;
            assert!(a == b, "batch {} of epoch {} differs", a.index, a.epoch);
        }
        // Ranks 0..3 of world_size 4: disjoint and complete.
        let mut all = Vec::new();
        for rank in 0..4 {
            let part = pull_all(&server.uds_addr(), request(4, 1, rank, 4)).await;
            all.extend(part.iter().flat_map(|b| b.sample_ids.clone()));
        }
        let set: BTreeSet<u64> = all.iter().copied().collect();
        assert_eq!(all.len(), 30);
        assert_eq!(set.len(), 30);
    });
}

/// The first `n` batches of a stream; the stream is then dropped (the client leaves).
async fn pull_first(addr: &str, req: v1::StreamBatchesRequest, n: usize) -> Vec<v1::Batch> {
    let mut c = augserve_client::connect(addr, 256 << 20).await.unwrap();
    let mut s = c.stream_batches(req).await.unwrap().into_inner();
    let mut out = Vec::new();
    while out.len() < n {
        out.push(s.message().await.unwrap().expect("a batch"));
    }
    out
}

/// A batch without what differs from stream to stream: timings, the first batch's transport
/// (its stream id), the alignment filler (it follows the message's size) and the index.
fn comparable(mut b: v1::Batch) -> v1::Batch {
    (b.timings, b.transport, b.index) = (None, None, 0);
    if let Some(t) = b.images.as_mut() {
        t.align.clear();
    }
    b
}

fn ids_of(batches: &[v1::Batch]) -> Vec<u64> {
    batches.iter().flat_map(|b| b.sample_ids.clone()).collect()
}

/// Every rank of a job of `from` takes `k` batches of `b`; a job of `to` ranks continues the
/// epoch from the global position through the raw request: every sample exactly once.
async fn elastic_epoch(addr: &str, b: u32, k: usize, from: u32, to: u32) -> Vec<u64> {
    let mut seen = Vec::new();
    for rank in 0..from {
        seen.extend(ids_of(
            &pull_first(addr, request(b, 1, rank, from), k).await,
        ));
    }
    let position = k as u64 * u64::from(b) * u64::from(from);
    for rank in 0..to {
        let req = v1::StreamBatchesRequest {
            start_position: position,
            ..request(b, 1, rank, to)
        };
        seen.extend(ids_of(&pull_all(addr, req).await));
    }
    seen.sort_unstable();
    seen
}

#[test]
fn elastic_resume_continues_the_epoch_with_another_world_size() {
    let server = Server::start(&[]);
    let addr = server.uds_addr();
    rt().block_on(async {
        let all: Vec<u64> = (0..30).collect();
        assert_eq!(elastic_epoch(&addr, 2, 2, 4, 3).await, all, "4 -> 3 ranks");
        assert_eq!(elastic_epoch(&addr, 2, 2, 3, 5).await, all, "3 -> 5 ranks");
        assert_eq!(elastic_epoch(&addr, 3, 1, 2, 4).await, all, "2 -> 4 ranks");
        // The same world size: the resumed batches are the uninterrupted ones, byte for byte
        // (mixing draws included), with their index counted from the position.
        for rank in 0..3 {
            let whole = pull_all(&addr, request(2, 1, rank, 3)).await;
            let req = v1::StreamBatchesRequest {
                start_position: 2 * 2 * 3,
                ..request(2, 1, rank, 3)
            };
            let resumed = pull_all(&addr, req).await;
            assert_eq!(resumed.len(), whole.len() - 2);
            for (a, b) in whole[2..].iter().cloned().zip(resumed) {
                assert!(
                    comparable(a) == comparable(b),
                    "rank {rank}: a resumed batch differs"
                );
            }
        }
        // DataLoader workers: two streams with batch_stride 2, read round-robin, are the
        // rank's stream.
        let whole = pull_all(&addr, request(2, 1, 1, 2)).await;
        let mut workers = Vec::new();
        for offset in 0..2 {
            let req = v1::StreamBatchesRequest {
                batch_stride: 2,
                batch_offset: offset,
                ..request(2, 1, 1, 2)
            };
            workers.push(pull_all(&addr, req).await);
        }
        let interleaved: Vec<v1::Batch> = (0..whole.len())
            .map(|i| workers[i % 2][i / 2].clone())
            .collect();
        for (a, b) in whole.into_iter().zip(interleaved) {
            let index = a.index;
            assert!(comparable(a) == comparable(b), "batch {index} differs");
        }
        // Refusals: a position past the epoch, and an offset outside the stride.
        let mut c = augserve_client::connect(&addr, 256 << 20).await.unwrap();
        for (req, field) in [
            (
                v1::StreamBatchesRequest {
                    start_position: 31,
                    ..request(2, 1, 0, 1)
                },
                "start_position",
            ),
            (
                v1::StreamBatchesRequest {
                    batch_stride: 2,
                    batch_offset: 2,
                    ..request(2, 1, 0, 1)
                },
                "batch_offset",
            ),
        ] {
            let e = c.stream_batches(req).await.unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument);
            assert!(e.message().contains(field), "{}", e.message());
        }
    });
}

fn testdata() -> PathBuf {
    common::jpeg_testdata()
}

fn jpgs(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .collect();
    v.sort();
    v
}

#[test]
fn augment_images_reports_bad_images_and_stays_healthy() {
    let server = Server::start(&[]);
    rt().block_on(async {
        let mut c = augserve_client::connect(&server.tcp, 256 << 20)
            .await
            .unwrap();
        let crash = jpgs(&testdata().join("crash"));
        let good = std::fs::read(testdata().join("reftest/rgb.jpg")).unwrap();
        let mut images: Vec<bytes::Bytes> = vec![good.clone().into()];
        let mut total = 1;
        for chunk in crash.chunks(8) {
            images.truncate(1);
            images.extend(
                chunk
                    .iter()
                    .map(|p| bytes::Bytes::from(std::fs::read(p).unwrap())),
            );
            total += chunk.len();
            let req = v1::AugmentImagesRequest {
                images: images.clone(),
                spec: Some(v1::PipelineSpec {
                    width: Some(32),
                    height: Some(32),
                    ..Default::default()
                }),
                ..Default::default()
            };
            let b = c.augment_images(req).await.unwrap().into_inner();
            assert!(b.sample_ids.contains(&0), "the good image is in the batch");
            assert_eq!(b.sample_ids.len() + b.errors.len(), images.len());
            for e in &b.errors {
                assert!(
                    !e.reason.is_empty() && !e.code.is_empty() && e.source.starts_with("request[")
                );
            }
        }
        println!("{total} images sent through AugmentImages");
        let mut h = tonic_health::pb::health_client::HealthClient::new(
            augserve_client::connect_channel(&server.tcp).await.unwrap(),
        );
        let r = h
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            r.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        );
    });
}

#[test]
fn errors_map_to_documented_codes() {
    let server = Server::start(&[]);
    rt().block_on(async {
        let mut c = augserve_client::connect(&server.uds_addr(), 256 << 20)
            .await
            .unwrap();
        let code = |r: Result<
            tonic::Response<tonic::codec::Streaming<v1::Batch>>,
            tonic::Status,
        >| r.err().map(|e| (e.code(), e.message().to_string()));
        let mut req = request(8, 1, 0, 1);
        req.dataset = "nope".into();
        let (c1, m1) = code(c.stream_batches(req).await).unwrap();
        assert_eq!(c1, Code::NotFound, "{m1}");
        let mut req = request(8, 1, 0, 1);
        req.spec.as_mut().unwrap().width = Some(0);
        let (c2, m2) = code(c.stream_batches(req).await).unwrap();
        assert_eq!(c2, Code::InvalidArgument);
        assert!(m2.contains("size.width"), "{m2}");
        let mut req = request(8, 1, 0, 1);
        req.spec.as_mut().unwrap().flip_prob = Some(f32::NAN);
        assert!(code(c.stream_batches(req).await)
            .unwrap()
            .1
            .contains("flip_prob"));
        let mut req = request(8, 1, 0, 1);
        req.spec.as_mut().unwrap().dtype = 77;
        assert_eq!(
            code(c.stream_batches(req).await).unwrap().0,
            Code::InvalidArgument
        );
        let (c3, m3) = code(c.stream_batches(request(1_000_000_000, 1, 0, 1)).await).unwrap();
        assert_eq!(c3, Code::InvalidArgument);
        assert!(m3.contains("batch_size"), "{m3}");
        let (c4, _) = code(c.stream_batches(request(8, 1, 5, 2)).await).unwrap();
        assert_eq!(c4, Code::InvalidArgument);
        // Over max_request_bytes (4 MB here).
        let big = v1::AugmentImagesRequest {
            images: vec![bytes::Bytes::from(vec![0u8; 5_000_000])],
            ..Default::default()
        };
        let e = c.augment_images(big).await.unwrap_err();
        println!("oversize request: {:?}: {}", e.code(), e.message());
        assert!(
            e.code() == Code::OutOfRange && e.message().contains("limit"),
            "{e:?}"
        );
        // Over max_batch_bytes.
        let (c5, m5) = code(
            c.stream_batches(v1::StreamBatchesRequest {
                spec: Some(v1::PipelineSpec {
                    width: Some(8192),
                    height: Some(8192),
                    ..Default::default()
                }),
                ..request(64, 1, 0, 1)
            })
            .await,
        )
        .unwrap();
        assert_eq!(c5, Code::ResourceExhausted, "{m5}");
    });
}

#[test]
fn reflection_lists_the_service() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let server = Server::start(&[]);
    rt().block_on(async {
        let mut c = ServerReflectionClient::new(
            augserve_client::connect_channel(&server.tcp).await.unwrap(),
        );
        let req = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut resp = c
            .server_reflection_info(tokio_stream::iter(vec![req]))
            .await
            .unwrap()
            .into_inner();
        let msg = resp.message().await.unwrap().unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = msg.message_response else {
            panic!("{msg:?}")
        };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        assert!(
            names.contains(&"augserve.v1.AugServe".to_string()),
            "{names:?}"
        );
        assert!(
            names.contains(&"grpc.health.v1.Health".to_string()),
            "{names:?}"
        );
    });
}
