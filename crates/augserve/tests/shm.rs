#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]
//! The shared-memory transport against the real server binary: byte-identical to inline,
//! slots released and reused, rings reclaimed when a client dies holding slots, fallbacks
//! (no shm_dir, CUDA IPC without a GPU) reported in the first batch, and the throughput of
//! SHM against inline over the Unix socket.

mod common;
use common::{rt, Killed, Server};

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use augserve_client::{v1, ShmView};
use tonic::Code;

fn demo(dir: &Path, per_class: usize) -> std::path::PathBuf {
    let data = dir.join("data");
    augserve_core::demo::write_demo_dataset(&data, per_class).unwrap();
    data
}

/// A temp folder with `per_class` x 10 demo images and a ring folder, and a CPU server
/// over them with `shm_dir` there.
struct ShmSetup {
    dir: tempfile::TempDir,
    data: std::path::PathBuf,
    shm_dir: std::path::PathBuf,
    server: Server,
}

fn shm_setup(per_class: usize) -> ShmSetup {
    let dir = tempfile::tempdir().unwrap();
    let data = demo(dir.path(), per_class);
    let shm_dir = dir.path().join("shm");
    std::fs::create_dir(&shm_dir).unwrap();
    let server = Server::start(
        &[("demo", &data)],
        &[("AUGSERVE_SHM_DIR", shm_dir.to_str().unwrap())],
    );
    ShmSetup {
        dir,
        data,
        shm_dir,
        server,
    }
}

fn rings(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("augserve-"))
        .collect()
}

fn request(transport: v1::Transport, slots: u32, epochs: u64) -> v1::StreamBatchesRequest {
    v1::StreamBatchesRequest {
        dataset: "demo".into(),
        batch_size: 16,
        epochs,
        seed: 7,
        transport: transport as i32,
        slots,
        spec: Some(v1::PipelineSpec {
            dtype: v1::DType::DtypeFloat16 as i32,
            mix: Some(v1::Mix {
                mixup_alpha: 0.4,
                cutmix_alpha: 1.0,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn pull_record(server: &Server, transport: &str, out: &Path) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_augserve"))
        .args(["pull", "--quiet", "--dataset", "demo", "--batch-size", "24"])
        .args(["--epochs", "2", "--seed", "3", "--transport", transport])
        .arg("--addr")
        .arg(server.addr())
        .arg("--record")
        .arg(out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    stdout
}

#[test]
fn shm_batches_equal_inline_ones_byte_for_byte() {
    let ShmSetup {
        dir: d,
        data: _,
        shm_dir,
        server,
    } = shm_setup(6);
    let inline = d.path().join("inline.jsonl");
    let shm = d.path().join("shm.jsonl");
    pull_record(&server, "inline", &inline);
    let out = pull_record(&server, "shm", &shm);
    assert!(!out.contains("transport: TRANSPORT_INLINE"), "{out}");
    let (a, b) = (
        std::fs::read_to_string(&inline).unwrap(),
        std::fs::read_to_string(&shm).unwrap(),
    );
    assert_eq!(
        a.lines().count(),
        6,
        "2 epochs of 60 images in batches of 24"
    );
    assert_eq!(a, b, "SHM records differ from inline ones");
    // The stream ended: its ring is gone.
    let t = Instant::now();
    while !rings(&shm_dir).is_empty() && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(rings(&shm_dir).is_empty(), "{:?}", rings(&shm_dir));
}

#[test]
fn slots_are_reused_only_after_release_and_reclaimed_when_the_client_leaves() {
    let ShmSetup {
        dir: d,
        data: _,
        shm_dir,
        server,
    } = shm_setup(4);
    rt().block_on(async {
        let mut c = augserve_client::connect(&server.addr(), 1 << 30)
            .await
            .unwrap();
        let info = c
            .get_server_info(v1::GetServerInfoRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(info.transports, ["inline", "shm"]);
        let mut releaser = c.clone();
        let mut s = c
            .stream_batches(request(v1::Transport::Shm, 2, 0))
            .await
            .unwrap()
            .into_inner();
        let first = s.message().await.unwrap().unwrap();
        let t = first.transport.clone().unwrap();
        assert_eq!(t.transport, v1::Transport::Shm as i32);
        assert!(t.fallback_reason.is_empty(), "{}", t.fallback_reason);
        assert_eq!((t.slots, t.stream_id.len()), (2, 32));
        let meta = std::fs::metadata(&t.shm_path).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
            0o600
        );
        assert!(first.images.as_ref().unwrap().data.is_empty());
        let view = ShmView::open(&t).unwrap();
        let a = first.slot.unwrap();
        assert_eq!(view.tensor(&a).unwrap().len(), 16 * 3 * 224 * 224 * 2);
        let second = s.message().await.unwrap().unwrap();
        assert!(
            second.transport.is_none(),
            "transport info only in the first batch"
        );
        let b = second.slot.unwrap();
        assert_ne!(a.slot, b.slot);
        // Both slots are out: the server waits rather than overwrite them.
        let third = tokio::time::timeout(Duration::from_millis(800), s.message()).await;
        assert!(third.is_err(), "a third batch arrived with both slots held");
        let r = releaser
            .release_slots(view.release_request(vec![a]))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.released, 1);
        let third = tokio::time::timeout(Duration::from_secs(10), s.message())
            .await
            .expect("the released slot was not refilled")
            .unwrap()
            .unwrap();
        let c3 = third.slot.unwrap();
        assert_eq!(c3.slot, a.slot, "the released slot is reused");
        assert!(c3.generation > b.generation);
        // Releasing the old generation again is refused and changes nothing.
        let e = releaser
            .release_slots(view.release_request(vec![a]))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e}");
        assert!(e.message().contains("slots"), "{e}");
        // A stream id nobody was given.
        let mut bogus = view.release_request(vec![b]);
        bogus.stream_id = "0".repeat(32);
        let e = releaser.release_slots(bogus).await.unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{e}");
        // The client leaves holding both slots: the ring goes when the stream ends.
        assert_eq!(rings(&shm_dir).len(), 1);
        drop(s);
        let t0 = Instant::now();
        while !rings(&shm_dir).is_empty() && t0.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(rings(&shm_dir).is_empty(), "ring not reclaimed");
        let e = releaser
            .release_slots(view.release_request(vec![b]))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{e}");
    });

    // A client process killed while it holds slots: reclaimed too, and the server serves on.
    let mut client = Killed(
        Command::new(env!("CARGO_BIN_EXE_augserve"))
            .args(["pull", "--quiet", "--dataset", "demo", "--batch-size", "8"])
            .args(["--epochs", "0", "--transport", "shm"])
            .arg("--addr")
            .arg(server.addr())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let t0 = Instant::now();
    while rings(&shm_dir).is_empty() && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(rings(&shm_dir).len(), 1, "the pull's ring never appeared");
    std::thread::sleep(Duration::from_millis(300));
    client.0.kill().unwrap();
    client.0.wait().unwrap();
    let t0 = Instant::now();
    while !rings(&shm_dir).is_empty() && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        rings(&shm_dir).is_empty(),
        "killed client's ring not reclaimed"
    );
    let rec = d.path().join("after.jsonl");
    pull_record(&server, "shm", &rec);
}

#[test]
fn transports_fall_back_and_say_why() {
    let ShmSetup {
        dir: _dir, // kept: the data lives there
        data,
        shm_dir: _,
        server: with_shm,
    } = shm_setup(2);
    let without = Server::start(&[("demo", &data)], &[("AUGSERVE_SHM_DIR", "")]);
    rt().block_on(async {
        let first = |addr: String, t: v1::Transport| async move {
            let mut c = augserve_client::connect(&addr, 1 << 30).await.unwrap();
            let mut s = c
                .stream_batches(request(t, 0, 1))
                .await
                .unwrap()
                .into_inner();
            s.message().await.unwrap().unwrap()
        };
        // CUDA IPC on a CPU server: SHM instead, with the reason.
        let b = first(with_shm.addr(), v1::Transport::CudaIpc).await;
        let t = b.transport.unwrap();
        assert_eq!(t.transport, v1::Transport::Shm as i32);
        assert!(
            t.fallback_reason.starts_with("cuda_ipc: "),
            "{}",
            t.fallback_reason
        );
        assert!(t.cuda_ipc_handle.is_empty());
        // TCP from loopback counts as the same host.
        let b = first(with_shm.tcp.clone(), v1::Transport::Shm).await;
        assert_eq!(b.transport.unwrap().transport, v1::Transport::Shm as i32);
        // No shm_dir: inline, with the reason; the data is in the message.
        let b = first(without.addr(), v1::Transport::Shm).await;
        let t = b.transport.clone().unwrap();
        assert_eq!(t.transport, v1::Transport::Inline as i32);
        assert!(
            t.fallback_reason.contains("shm_dir"),
            "{}",
            t.fallback_reason
        );
        assert!(b.slot.is_none() && !b.images.unwrap().data.is_empty());
        let mut c = augserve_client::connect(&without.addr(), 1 << 30)
            .await
            .unwrap();
        let info = c
            .get_server_info(v1::GetServerInfoRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(info.transports, ["inline"]);
        // An unknown transport value is refused naming the field.
        let mut r = request(v1::Transport::Shm, 0, 1);
        r.transport = 9;
        let e = c.stream_batches(r).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains("transport"), "{e}");
        let mut r = request(v1::Transport::Shm, 100, 1);
        r.dataset = "demo".into();
        let e = c.stream_batches(r).await.unwrap_err();
        assert!(e.message().contains("slots"), "{e}");
    });
}

/// Delivery rate over the Unix socket, inline against SHM: the server first fills its
/// prefetch queue (6 batches of 16 x 3 x 224 x 224 float32, 9.6 MB each), then the client
/// times taking those 6 and reading every byte (a checksum), so the pipeline is not what is
/// measured. A measurement, printed for the record: no timing is asserted (speed is shown by
/// benchmarks, not timed tests).
#[test]
fn shm_and_inline_delivery_rates() {
    let ShmSetup {
        dir: _dir,
        data: _,
        shm_dir: _,
        server,
    } = shm_setup(8);
    let addr = server.addr();
    let rate = |transport: v1::Transport| {
        let addr = addr.clone();
        async move {
            let mut c = augserve_client::connect(&addr, 1 << 30).await.unwrap();
            let mut releaser = c.clone();
            let mut req = request(transport, 0, 0);
            req.prefetch = 6;
            req.spec = None; // float32 NCHW 224
            let mut s = c.stream_batches(req).await.unwrap().into_inner();
            let first = s.message().await.unwrap().unwrap();
            let view = first.transport.as_ref().and_then(|t| {
                (t.transport == v1::Transport::Shm as i32).then(|| ShmView::open(t).unwrap())
            });
            assert_eq!(view.is_some(), transport == v1::Transport::Shm);
            if let (Some(v), Some(slot)) = (&view, first.slot) {
                releaser
                    .release_slots(v.release_request(vec![slot]))
                    .await
                    .unwrap();
            }
            tokio::time::sleep(Duration::from_millis(1200)).await; // the queue fills
            let (mut bytes, mut check) = (0usize, 0u64);
            let t0 = Instant::now();
            for _ in 0..6 {
                let b = s.message().await.unwrap().unwrap();
                let data: &[u8] = match (&view, &b.slot) {
                    (Some(v), Some(slot)) => v.tensor(slot).unwrap(),
                    _ => &b.images.as_ref().unwrap().data,
                };
                check = data.chunks_exact(8).fold(check, |a, w| {
                    a.wrapping_add(u64::from_le_bytes(w.try_into().unwrap()))
                });
                bytes += data.len();
                if let (Some(v), Some(slot)) = (&view, b.slot) {
                    releaser
                        .release_slots(v.release_request(vec![slot]))
                        .await
                        .unwrap();
                }
            }
            let secs = t0.elapsed().as_secs_f64();
            std::hint::black_box(check);
            bytes as f64 / secs / 1e6
        }
    };
    let (mut inline, mut shm) = (Vec::new(), Vec::new());
    rt().block_on(async {
        for _ in 0..3 {
            inline.push(rate(v1::Transport::Inline).await);
            shm.push(rate(v1::Transport::Shm).await);
        }
    });
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (i, s) = (median(&mut inline), median(&mut shm));
    println!(
        "UDS, queued 16 x 3 x 224 x 224 float32 batches (9.6 MB), Rust client reading every byte: \
         inline {i:.0} MB/s, shm {s:.0} MB/s = {:.2}x (median of 3)",
        s / i
    );
    assert!(s > 0.0 && i > 0.0);
}
