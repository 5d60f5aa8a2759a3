#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The CUDA IPC transport's server side, exercised without a GPU: a backend whose "device
//! ring" is host memory stands in for the CUDA one (augserve-cuda's `IpcRing`), so the
//! negotiation, the slot protocol (acquire, write through `Destination::Device`, SlotRef, release,
//! reuse, reclaim at stream end) and byte-identity with inline batches are all checked here.
//! What this cannot check (the real cuIpcGetMemHandle / device-to-device copy, and a trainer
//! opening the handle) needs a GPU: `clients/python/tests/test_cuda_ipc.py` in
//! benches/gpu/run.sh checks it there (passed on an H200).

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use augserve_client::v1;
use augserve_core::ops::mix::MixPlan;
use augserve_core::pipeline::{BatchOutput, HostOutputRegistration, PreparedImage};
use augserve_core::{BatchOps, CpuBatchOps, Destination, DeviceOutput, PipelineSpec};
use augserve_server::{AugServeService, ServerConfig};
use rayon::ThreadPool;

struct HostRing {
    mem: Mutex<Vec<u8>>,
    slot_bytes: usize,
    slots: u32,
}

impl DeviceOutput for HostRing {
    fn handle(&self) -> Vec<u8> {
        b"host-ring"
            .iter()
            .copied()
            .chain(std::iter::repeat(0))
            .take(64)
            .collect()
    }
    fn device_ordinal(&self) -> i32 {
        0
    }
    fn slot_bytes(&self) -> usize {
        self.slot_bytes
    }
    fn slots(&self) -> u32 {
        self.slots
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// CPU batch ops that pretend to be a GPU: output goes to a HostRing slot.
struct FakeGpu {
    cpu: CpuBatchOps,
    pool: Arc<ThreadPool>,
    rings: Mutex<Vec<Weak<HostRing>>>,
    /// Host output memory registered now (start, length), as a GPU would page-lock it.
    registered: Arc<Mutex<Vec<(usize, usize)>>>,
    registrations: AtomicUsize,
    /// Host destinations that lay inside a registered range (a GPU downloads into them).
    in_place: AtomicUsize,
    /// Batches it takes at once (a GPU's streams), how many run now, and the most that did.
    in_flight: usize,
    running: AtomicUsize,
    most: AtomicUsize,
}

impl FakeGpu {
    fn new() -> Self {
        Self::with_in_flight(1)
    }

    fn with_in_flight(in_flight: usize) -> Self {
        FakeGpu {
            in_flight,
            running: AtomicUsize::new(0),
            most: AtomicUsize::new(0),
            cpu: CpuBatchOps::default(),
            pool: augserve_core::pipeline::worker_pool(1).unwrap(),
            rings: Mutex::new(Vec::new()),
            registered: Arc::default(),
            registrations: AtomicUsize::new(0),
            in_place: AtomicUsize::new(0),
        }
    }
}

impl FakeGpu {
    /// The batch: into a registered host range or a host ring's slot as a GPU would.
    fn run_batch(
        &self,
        images: &[PreparedImage],
        plan: &MixPlan,
        spec: &PipelineSpec,
        pool: &ThreadPool,
        to: Destination<'_>,
    ) -> augserve_core::Result<BatchOutput> {
        if self.in_flight > 1 {
            // Long enough for the next batches to be admitted meanwhile.
            std::thread::sleep(Duration::from_millis(30));
        }
        if let Destination::Host(out) = &to {
            let (a, b) = (out.as_ptr() as usize, out.as_ptr() as usize + out.len());
            let regs = self.registered.lock().unwrap();
            if regs.iter().any(|&(s, len)| s <= a && b <= s + len) {
                self.in_place.fetch_add(1, Ordering::Relaxed);
            }
        }
        let Destination::Device { memory, slot } = to else {
            return self.cpu.run(images, plan, spec, pool, to);
        };
        let ring = memory.as_any().downcast_ref::<HostRing>().unwrap();
        let mut out = self
            .cpu
            .run(images, plan, spec, &self.pool, Destination::Owned)?;
        let at = slot as usize * ring.slot_bytes;
        ring.mem.lock().unwrap()[at..at + out.tensor.data.len()].copy_from_slice(&out.tensor.data);
        out.tensor.data = Vec::new();
        Ok(out)
    }
}

/// Takes its range off the list when dropped, as the GPU's registration unregisters it.
struct Registered(Arc<Mutex<Vec<(usize, usize)>>>, (usize, usize));

impl Drop for Registered {
    fn drop(&mut self) {
        self.0.lock().unwrap().retain(|r| *r != self.1);
    }
}

impl BatchOps for FakeGpu {
    fn device(&self) -> String {
        "gpu:0 (host ring stand-in)".into()
    }
    fn batches_in_flight(&self) -> usize {
        self.in_flight
    }
    fn run(
        &self,
        images: &[PreparedImage],
        plan: &MixPlan,
        spec: &PipelineSpec,
        pool: &ThreadPool,
        to: Destination<'_>,
    ) -> augserve_core::Result<BatchOutput> {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        let out = self.run_batch(images, plan, spec, pool, to);
        self.running.fetch_sub(1, Ordering::SeqCst);
        out
    }
    unsafe fn register_host_output(
        &self,
        start: *mut u8,
        len: usize,
    ) -> Option<HostOutputRegistration> {
        self.registrations.fetch_add(1, Ordering::Relaxed);
        let range = (start as usize, len);
        self.registered.lock().unwrap().push(range);
        Some(Box::new(Registered(self.registered.clone(), range)))
    }
    fn device_output(
        &self,
        slots: u32,
        slot_bytes: usize,
    ) -> Option<augserve_core::Result<Arc<dyn DeviceOutput>>> {
        let ring = Arc::new(HostRing {
            mem: Mutex::new(vec![0; slots as usize * slot_bytes]),
            slot_bytes,
            slots,
        });
        self.rings.lock().unwrap().push(Arc::downgrade(&ring));
        Some(Ok(ring))
    }
}

/// A server over a 3-per-class demo dataset in `dir` (its shm rings there too) on fake GPU ops.
fn demo_service(dir: &std::path::Path) -> (Arc<FakeGpu>, AugServeService) {
    demo_service_on(dir, FakeGpu::new())
}

/// `demo_service` on these fake GPU ops.
fn demo_service_on(dir: &std::path::Path, fake: FakeGpu) -> (Arc<FakeGpu>, AugServeService) {
    let data = dir.join("data");
    augserve_core::demo::write_demo_dataset(&data, 3).unwrap();
    let mut cfg = ServerConfig::default();
    cfg.datasets.push(augserve_server::config::DatasetConfig {
        name: "demo".into(),
        path: data,
        format: None,
    });
    cfg.threads = 2;
    cfg.shm_dir = dir.to_path_buf();
    let fake = Arc::new(fake);
    let service =
        AugServeService::with_batch_ops(&cfg, Arc::new(AtomicBool::new(false)), fake.clone(), None)
            .unwrap();
    (fake, service)
}

#[test]
fn cuda_ipc_slots_carry_the_inline_bytes_and_are_reclaimed() {
    let d = tempfile::tempdir().unwrap();
    let (fake, service) = demo_service(d.path());
    let sock = d.path().join("s.sock");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = common::serve_and_connect(service, &sock).await;
        let info = c
            .get_server_info(v1::GetServerInfoRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(info.transports, ["inline", "shm", "cuda_ipc"]);
        let req = |t: v1::Transport, slots: u32| v1::StreamBatchesRequest {
            dataset: "demo".into(),
            batch_size: 8,
            epochs: 1,
            seed: 9,
            transport: t as i32,
            slots,
            ..Default::default()
        };
        let mut inline = Vec::new();
        let mut s = c
            .stream_batches(req(v1::Transport::Inline, 0))
            .await
            .unwrap()
            .into_inner();
        while let Some(b) = s.message().await.unwrap() {
            inline.push(b.images.unwrap().data);
        }
        assert_eq!(inline.len(), 4);

        let mut releaser = c.clone();
        let mut s = c
            .stream_batches(req(v1::Transport::CudaIpc, 2))
            .await
            .unwrap()
            .into_inner();
        let first = s.message().await.unwrap().unwrap();
        let t = first.transport.clone().unwrap();
        assert_eq!(t.transport, v1::Transport::CudaIpc as i32);
        assert!(t.fallback_reason.is_empty(), "{}", t.fallback_reason);
        assert!(t.cuda_ipc_handle.starts_with(b"host-ring") && t.cuda_ipc_handle.len() == 64);
        assert_eq!((t.cuda_device, t.slots, t.shm_path.as_str()), (0, 2, ""));
        let ring = fake
            .rings
            .lock()
            .unwrap()
            .last()
            .unwrap()
            .upgrade()
            .unwrap();
        let read = |slot: &v1::SlotRef| {
            ring.mem.lock().unwrap()[slot.offset as usize..][..slot.length as usize].to_vec()
        };
        let mut got = Vec::new();
        let a = first.slot.unwrap();
        assert!(first.images.unwrap().data.is_empty());
        got.push(read(&a));
        let second = s.message().await.unwrap().unwrap();
        let b = second.slot.unwrap();
        got.push(read(&b));
        // Both device slots are out: the next batch waits for a release.
        assert!(
            tokio::time::timeout(Duration::from_millis(600), s.message())
                .await
                .is_err()
        );
        let rel = |slot: v1::SlotRef| v1::ReleaseSlotsRequest {
            stream_id: t.stream_id.clone(),
            slots: vec![slot],
        };
        releaser.release_slots(rel(a)).await.unwrap();
        let third = s.message().await.unwrap().unwrap();
        let c3 = third.slot.unwrap();
        assert_eq!(c3.slot, a.slot);
        got.push(read(&c3));
        releaser.release_slots(rel(b)).await.unwrap();
        releaser.release_slots(rel(c3)).await.unwrap();
        while let Some(m) = s.message().await.unwrap() {
            let slot = m.slot.unwrap();
            got.push(read(&slot));
            // The last batch's release may come after the stream ended (ring gone).
            if let Err(e) = releaser.release_slots(rel(slot)).await {
                assert_eq!(e.code(), tonic::Code::NotFound, "{e}");
            }
        }
        assert_eq!(got, inline, "device-ring batches differ from inline ones");
        drop(ring);
        // The stream ended: the server dropped its ring.
        for _ in 0..100 {
            if fake
                .rings
                .lock()
                .unwrap()
                .iter()
                .all(|w| w.strong_count() == 0)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(fake
            .rings
            .lock()
            .unwrap()
            .iter()
            .all(|w| w.strong_count() == 0));
        // From TCP a remote client would get no device ring: checked by the shm tests'
        // loopback/remote rules; here, a CPU-only server is covered by tests/shm.rs.
    });
}

/// A shared-memory ring is registered with the batch ops once, for its stream's life: every
/// batch's slot lies inside it (a GPU downloads straight into the slot, no copy out of pinned
/// memory), and the registration ends with the stream.
#[test]
fn a_shm_ring_is_registered_for_its_stream_and_every_slot_written_in_place() {
    let d = tempfile::tempdir().unwrap();
    let (fake, service) = demo_service(d.path());
    let sock = d.path().join("s.sock");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = common::serve_and_connect(service, &sock).await;
        let mut releaser = c.clone();
        let req = v1::StreamBatchesRequest {
            dataset: "demo".into(),
            batch_size: 8,
            epochs: 1,
            seed: 9,
            transport: v1::Transport::Shm as i32,
            slots: 2,
            ..Default::default()
        };
        let mut s = c.stream_batches(req).await.unwrap().into_inner();
        let mut batches = 0;
        let mut stream_id = String::new();
        while let Some(m) = s.message().await.unwrap() {
            if let Some(t) = &m.transport {
                assert_eq!(t.transport, v1::Transport::Shm as i32, "{t:?}");
                stream_id = t.stream_id.clone();
            }
            batches += 1;
            // While the producer waits for a slot (two slots, four batches), the ring is
            // registered; by the last message the stream may have ended already.
            if batches == 1 {
                assert_eq!(fake.registered.lock().unwrap().len(), 1);
            }
            let release = v1::ReleaseSlotsRequest {
                stream_id: stream_id.clone(),
                slots: vec![m.slot.unwrap()],
            };
            // The last release may come after the stream ended (ring gone).
            let _ = releaser.release_slots(release).await;
        }
        assert_eq!(batches, 4);
        assert_eq!(fake.registrations.load(Ordering::Relaxed), 1);
        assert_eq!(fake.in_place.load(Ordering::Relaxed), 4);
        for _ in 0..100 {
            if fake.registered.lock().unwrap().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            fake.registered.lock().unwrap().is_empty(),
            "the ring stayed registered after its stream ended"
        );
    });
}

/// A backend that makes three batches at once (a GPU's streams): every transport still gets
/// every batch, in order, with the inline bytes; the rings get a slot for each batch being
/// made (prefetch 2 + 3 + the one the client reads).
#[test]
fn three_batches_in_flight_reach_every_transport_in_order() {
    let d = tempfile::tempdir().unwrap();
    let (fake, service) = demo_service_on(d.path(), FakeGpu::with_in_flight(3));
    let sock = d.path().join("s.sock");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = common::serve_and_connect(service, &sock).await;
        let mut releaser = c.clone();
        let req = |t: v1::Transport| v1::StreamBatchesRequest {
            dataset: "demo".into(),
            batch_size: 4,
            epochs: 2,
            seed: 9,
            transport: t as i32,
            ..Default::default()
        };
        let mut streams = Vec::new();
        for t in [
            v1::Transport::Inline,
            v1::Transport::Shm,
            v1::Transport::CudaIpc,
        ] {
            let mut s = c.stream_batches(req(t)).await.unwrap().into_inner();
            let (mut order, mut bytes, mut info) = (Vec::new(), Vec::new(), None);
            // Opened at the first batch, as a client maps them: the stream may end (its ring
            // unlinked, dropped) before the last messages are read.
            let (mut shm, mut ring) = (None, None);
            while let Some(m) = s.message().await.unwrap() {
                if let Some(t) = &m.transport {
                    info = Some(t.clone());
                    shm = std::fs::File::open(&t.shm_path).ok();
                    ring = fake.rings.lock().unwrap().last().and_then(Weak::upgrade);
                }
                order.push((m.epoch, m.index));
                let data = m.images.as_ref().unwrap().data.clone();
                bytes.push(match (t, m.slot) {
                    (v1::Transport::Inline, _) => data.to_vec(),
                    (_, Some(slot)) => {
                        let info = info.as_ref().unwrap();
                        let mut got = vec![0u8; slot.length as usize];
                        match (&shm, &ring) {
                            (Some(f), _) if t == v1::Transport::Shm => {
                                use std::os::unix::fs::FileExt;
                                f.read_exact_at(&mut got, slot.offset).unwrap();
                            }
                            (_, Some(r)) => got.copy_from_slice(
                                &r.mem.lock().unwrap()[slot.offset as usize..]
                                    [..slot.length as usize],
                            ),
                            _ => panic!("no ring for a {t:?} batch"),
                        }
                        let release = v1::ReleaseSlotsRequest {
                            stream_id: info.stream_id.clone(),
                            slots: vec![slot],
                        };
                        // The last release may come after the stream ended (ring gone).
                        let _ = releaser.release_slots(release).await;
                        got
                    }
                    (_, None) => panic!("a {t:?} batch without a slot"),
                });
            }
            let info = info.unwrap();
            assert_eq!(info.transport, t as i32, "{}", info.fallback_reason);
            if t != v1::Transport::Inline {
                assert_eq!(info.slots, 2 + 3 + 1, "{t:?}");
            }
            streams.push((order, bytes));
        }
        let (order, inline) = &streams[0];
        let want: Vec<(u64, u64)> = (0..2)
            .flat_map(|e| (0..order.len() as u64 / 2).map(move |i| (e, i)))
            .collect();
        assert_eq!(order, &want, "inline batches out of order");
        assert!(order.len() >= 8, "{} batches", order.len());
        for (got_order, got) in &streams[1..] {
            assert_eq!(got_order, order);
            assert!(got == inline, "slot batches differ from inline ones");
        }
        let most = fake.most.load(Ordering::SeqCst);
        assert!((2..=3).contains(&most), "{most} batches at once");
    });
}
