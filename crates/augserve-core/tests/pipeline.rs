#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]
//! End-to-end pipeline checks on real JPEGs: reproducibility across thread counts, sharding,
//! per-image errors, and the error policy.

mod common;

use std::path::Path;
use std::sync::Arc;

use augserve_core::pipeline::{CpuBatchOps, CpuResize, Destination};
use augserve_core::sampler::batches;
use augserve_core::spec::{ColorJitter, DType, ErrorPolicy, Layout, MixMode, MixSpec};
use augserve_core::{
    demo, Dataset, DatasetFormat, Pipeline, PipelineOptions, PipelineSpec, ShardSpec, TailPolicy,
};

fn demo_dataset(dir: &Path) -> Arc<Dataset> {
    demo::write_demo_dataset(dir, 4).unwrap();
    Arc::new(Dataset::open(dir, DatasetFormat::ImageFolder, 1 << 24).unwrap())
}

fn busy_spec() -> PipelineSpec {
    PipelineSpec {
        color: ColorJitter {
            brightness: 0.4,
            contrast: 0.4,
            saturation: 0.4,
        },
        mix: MixSpec {
            mixup_alpha: 0.4,
            cutmix_alpha: 1.0,
            mode: MixMode::Elem,
            num_classes: 10,
            label_smoothing: 0.1,
            ..MixSpec::default()
        },
        ..PipelineSpec::default()
    }
}

fn run_epoch(p: &Pipeline, seed: u64, epoch: u64, bs: usize) -> Vec<augserve_core::Batch> {
    let shard = ShardSpec {
        seed,
        ..ShardSpec::default()
    };
    let ids = shard.epoch_ids(p.dataset().len(), epoch).unwrap();
    batches(&ids, bs, false)
        .into_iter()
        .enumerate()
        .map(|(i, b)| p.batch(seed, epoch, i as u64, i as u64, b).unwrap())
        .collect()
}

#[test]
fn same_seed_gives_identical_batches_with_1_and_8_threads() {
    let d = tempfile::tempdir().unwrap();
    let ds = demo_dataset(d.path());
    for (dtype, layout) in [
        (DType::Float32, Layout::Nchw),
        (DType::Float16, Layout::Nhwc),
        (DType::Uint8, Layout::Nchw),
    ] {
        let mut spec = busy_spec();
        spec.output.dtype = dtype;
        spec.output.layout = layout;
        let one = Pipeline::new(
            ds.clone(),
            spec.clone(),
            PipelineOptions {
                threads: 1,
                ..Default::default()
            },
        )
        .unwrap();
        let eight = Pipeline::new(
            ds.clone(),
            spec,
            PipelineOptions {
                threads: 8,
                ..Default::default()
            },
        )
        .unwrap();
        for epoch in 0..2 {
            let a = run_epoch(&one, 5, epoch, 16);
            let b = run_epoch(&eight, 5, epoch, 16);
            assert_eq!(a.len(), b.len());
            for (x, y) in a.iter().zip(&b) {
                assert_eq!(x.tensor, y.tensor, "epoch {epoch} batch {}", x.index);
                assert_eq!(
                    (&x.labels_a, &x.labels_b, &x.lam),
                    (&y.labels_a, &y.labels_b, &y.lam)
                );
                assert_eq!(x.soft_targets, y.soft_targets);
                assert_eq!(x.stats, y.stats);
                assert_eq!(x.sample_ids, y.sample_ids);
            }
        }
        // A different seed changes the output.
        let c = run_epoch(&one, 6, 0, 16);
        assert_ne!(c[0].tensor, run_epoch(&one, 5, 0, 16)[0].tensor);
    }
}

#[test]
fn epoch_covers_the_dataset_and_labels_mix() {
    let d = tempfile::tempdir().unwrap();
    let ds = demo_dataset(d.path());
    let p = Pipeline::new(ds.clone(), busy_spec(), PipelineOptions::default()).unwrap();
    let out = run_epoch(&p, 1, 0, 12);
    let mut ids: Vec<u64> = out.iter().flat_map(|b| b.sample_ids.clone()).collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..ds.len() as u64).collect::<Vec<_>>());
    for b in &out {
        assert_eq!(b.tensor.shape, [b.len(), 3, 224, 224]);
        assert_eq!(b.tensor.data.len(), b.len() * 3 * 224 * 224 * 4);
        let t = b.soft_targets.as_ref().unwrap();
        for (i, row) in t.chunks_exact(10).enumerate() {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
            assert_eq!(b.labels_a[i], ds.entry(b.sample_ids[i]).unwrap().label);
        }
        // Normalised ImageNet-ish data: per-channel std near 1, MAD below std.
        for c in 0..3 {
            assert!(
                b.stats.std[c] > 0.2 && b.stats.std[c] < 3.0,
                "{:?}",
                b.stats
            );
            assert!(b.stats.mad[c] <= b.stats.std[c]);
        }
    }
}

#[test]
fn shards_of_a_real_dataset_are_disjoint_and_complete() {
    let d = tempfile::tempdir().unwrap();
    let ds = demo_dataset(d.path());
    for ws in [1u32, 2, 3, 8] {
        let mut all = Vec::new();
        for rank in 0..ws {
            let s = ShardSpec {
                seed: 3,
                rank,
                world_size: ws,
                tail: TailPolicy::Uneven,
                ..ShardSpec::default()
            };
            all.extend(s.epoch_ids(ds.len(), 4).unwrap());
        }
        all.sort_unstable();
        assert_eq!(
            all,
            (0..ds.len() as u64).collect::<Vec<_>>(),
            "world_size {ws}"
        );
    }
}

#[test]
fn corrupt_images_fail_alone_or_fail_the_batch_by_policy() {
    let d = tempfile::tempdir().unwrap();
    demo::write_demo_dataset(d.path(), 2).unwrap();
    let crash = common::jpeg_testdata().join("crash");
    let bad_dir = d.path().join("zz_bad");
    std::fs::create_dir(&bad_dir).unwrap();
    for f in [
        "missing-sos.jpg",
        "null_height.jpg",
        "derive-huffman-codes-overflow.jpg",
    ] {
        std::fs::copy(crash.join(f), bad_dir.join(f)).unwrap();
    }
    std::fs::write(bad_dir.join("empty.jpg"), b"").unwrap();
    std::fs::write(bad_dir.join("png.jpg"), b"\x89PNG\r\n\x1a\nxxxx").unwrap();
    let ds = Arc::new(Dataset::open(d.path(), DatasetFormat::ImageFolder, 1 << 24).unwrap());
    let all: Vec<u64> = (0..ds.len() as u64).collect();
    let p = Pipeline::new(
        ds.clone(),
        PipelineSpec::default(),
        PipelineOptions::default(),
    )
    .unwrap();
    let b = p.batch(0, 0, 0, 0, &all).unwrap();
    assert_eq!(b.errors.len(), 5, "{:?}", b.errors);
    assert_eq!(b.len(), 20);
    for e in &b.errors {
        assert!(e.source_name.starts_with("zz_bad/"), "{e}");
        println!("{e}");
    }
    assert!(b.errors.iter().any(|e| e.to_string().contains("PNG")));
    assert!(b.errors.iter().any(|e| e.to_string().contains("empty")));

    let strict = PipelineSpec {
        on_error: ErrorPolicy::Fail,
        ..PipelineSpec::default()
    };
    let p = Pipeline::new(ds, strict, PipelineOptions::default()).unwrap();
    let err = p.batch(0, 0, 0, 0, &all).unwrap_err().to_string();
    assert!(
        err.contains("batch failed") && err.contains("zz_bad/"),
        "{err}"
    );
}

#[test]
fn reference_and_fast_cpu_resize_agree_through_the_pipeline() {
    let d = tempfile::tempdir().unwrap();
    let ds = demo_dataset(d.path());
    let spec = PipelineSpec {
        output: augserve_core::spec::OutputSpec {
            dtype: DType::Uint8,
            layout: Layout::Nhwc,
        },
        ..busy_spec()
    };
    let fast = Pipeline::new(ds.clone(), spec.clone(), PipelineOptions::default())
        .unwrap()
        .with_batch_ops(Arc::new(CpuBatchOps::new(CpuResize::Fast)));
    let reference = Pipeline::new(ds, spec, PipelineOptions::default())
        .unwrap()
        .with_batch_ops(Arc::new(CpuBatchOps::new(CpuResize::Reference)));
    let ids: Vec<u64> = (0..16).collect();
    let a = fast.batch(1, 0, 0, 0, &ids).unwrap();
    let b = reference.batch(1, 0, 0, 0, &ids).unwrap();
    let max = a
        .tensor
        .data
        .iter()
        .zip(&b.tensor.data)
        .map(|(x, y)| x.abs_diff(*y))
        .max()
        .unwrap();
    assert!(max <= 1, "max diff {max}");
}

#[test]
fn recycled_buffers_never_show_through() {
    // Buffers handed back keep their old bytes; every output byte must still be written.
    // Poison the pool with buffers of every size a batch asks for, then compare batches of
    // every dtype and layout with those of a pipeline that allocates afresh.
    let d = tempfile::tempdir().unwrap();
    let ds = demo_dataset(d.path());
    let ids: Vec<u64> = (0..16).collect();
    let ops = Arc::new(CpuBatchOps::default());
    for (dtype, layout) in [
        (DType::Uint8, Layout::Nhwc),
        (DType::Float16, Layout::Nchw),
        (DType::Float32, Layout::Nhwc),
        (DType::Uint8, Layout::Nchw),
    ] {
        let spec = PipelineSpec {
            output: augserve_core::spec::OutputSpec { dtype, layout },
            ..busy_spec()
        };
        let fresh = Pipeline::new(ds.clone(), spec.clone(), PipelineOptions::default())
            .unwrap()
            .batch(3, 1, 0, 0, &ids)
            .unwrap();
        let pooled = Pipeline::new(ds.clone(), spec, PipelineOptions::default())
            .unwrap()
            .with_batch_ops(ops.clone());
        for _ in 0..2 {
            let image_bytes = 224 * 224 * 3;
            ops.buffers.give(vec![0xA5; image_bytes * ids.len()]);
            ops.buffers.give(vec![0x5A; fresh.tensor.data.len()]);
            let b = pooled.batch(3, 1, 0, 0, &ids).unwrap();
            assert_eq!(b.tensor, fresh.tensor, "{dtype:?} {layout:?}");
            assert_eq!(b.stats, fresh.stats);
            pooled.recycle(b.tensor.data);
        }
    }
}

#[test]
fn a_batch_written_into_a_host_buffer_equals_the_usual_one() {
    let d = tempfile::tempdir().unwrap();
    let ds = demo_dataset(d.path());
    let p = Pipeline::new(ds, busy_spec(), PipelineOptions::default()).unwrap();
    let ids: Vec<u64> = (0..12).collect();
    let want = p.batch(5, 2, 1, 1, &ids).unwrap();
    // A slot larger than the batch, holding old bytes: the front gets the tensor.
    let mut slot = vec![0xC3u8; want.tensor.data.len() + 100];
    let got = p
        .batch_to(5, 2, 1, 1, &ids, Destination::Host(&mut slot))
        .unwrap();
    assert!(got.tensor.data.is_empty());
    assert_eq!(got.tensor.shape, want.tensor.shape);
    assert!(slot[..want.tensor.data.len()] == want.tensor.data[..]);
    assert!(slot[want.tensor.data.len()..].iter().all(|&b| b == 0xC3));
    assert_eq!(got.stats, want.stats, "statistics, percentiles included");
    assert_eq!((got.labels_a, got.lam), (want.labels_a, want.lam));
    // Too small: an error, not a panic.
    let mut small = vec![0u8; 10];
    assert!(p
        .batch_to(5, 2, 1, 1, &ids, Destination::Host(&mut small))
        .is_err());
}

#[test]
fn invalid_specs_and_shards_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let ds = demo_dataset(d.path());
    let mut spec = PipelineSpec::default();
    spec.size.width = 0;
    let err = Pipeline::new(ds, spec, PipelineOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("size.width"), "{err}");
}

/// A stand-in for a GPU decoder that takes every image: the CPU batch ops then decode the
/// deferred images themselves. The batches must equal the ordinary pipeline's byte for byte
/// (same crop and jitter draws from the header's size, same region, same colour), and
/// corrupt files must still fail alone, now at the batch stage.
struct TakeEverything {
    cpu: CpuBatchOps,
    taken: std::sync::atomic::AtomicUsize,
}

impl augserve_core::pipeline::DeviceDecoder for TakeEverything {
    fn takes(&self, _: &augserve_core::decode::JpegInfo, _: u64) -> bool {
        self.taken
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        true
    }
    fn observe_cpu(&self, _: usize, _: std::time::Duration) {}
}

impl augserve_core::BatchOps for TakeEverything {
    fn device(&self) -> String {
        "deferred-cpu".into()
    }
    fn device_decoder(&self) -> Option<&dyn augserve_core::pipeline::DeviceDecoder> {
        Some(self)
    }
    fn run(
        &self,
        images: &[augserve_core::pipeline::PreparedImage],
        plan: &augserve_core::ops::mix::MixPlan,
        spec: &PipelineSpec,
        pool: &rayon::ThreadPool,
        to: Destination<'_>,
    ) -> augserve_core::Result<augserve_core::pipeline::BatchOutput> {
        assert!(images.iter().all(|im| im.deferred.is_some()));
        augserve_core::BatchOps::run(&self.cpu, images, plan, spec, pool, to)
    }
}

#[test]
fn deferred_decoding_gives_the_same_batches_and_per_image_errors() {
    let d = tempfile::tempdir().unwrap();
    demo::write_demo_dataset(d.path(), 3).unwrap();
    let crash = common::jpeg_testdata().join("crash");
    let bad_dir = d.path().join("zz_bad");
    std::fs::create_dir(&bad_dir).unwrap();
    // Headers that parse (so the image is deferred) over bodies that do not decode.
    for f in [
        "derive-huffman-codes-overflow.jpg",
        "2c9e7a1805f8b47630bbb83d21bf8222.jpg",
    ] {
        std::fs::copy(crash.join(f), bad_dir.join(f)).unwrap();
    }
    let ds = Arc::new(Dataset::open(d.path(), DatasetFormat::ImageFolder, 1 << 24).unwrap());
    let all: Vec<u64> = (0..ds.len() as u64).collect();
    let mut spec = busy_spec();
    spec.mix.num_classes = 11; // the bad files' folder is an eleventh class
    let plain = Pipeline::new(ds.clone(), spec.clone(), PipelineOptions::default()).unwrap();
    let ops = Arc::new(TakeEverything {
        cpu: CpuBatchOps::default(),
        taken: Default::default(),
    });
    let deferred = Pipeline::new(ds, spec, PipelineOptions::default())
        .unwrap()
        .with_batch_ops(ops.clone());
    let a = plain.batch(5, 1, 0, 0, &all).unwrap();
    let b = deferred.batch(5, 1, 0, 0, &all).unwrap();
    assert!(ops.taken.load(std::sync::atomic::Ordering::Relaxed) >= 30);
    assert_eq!(a.sample_ids, b.sample_ids);
    assert_eq!(a.tensor.data, b.tensor.data);
    assert_eq!(a.labels_b, b.labels_b);
    assert_eq!(a.errors.len(), 2, "{:?}", a.errors);
    let mut errs: Vec<_> = b.errors.iter().map(|e| e.source_name.clone()).collect();
    errs.sort();
    assert_eq!(
        errs,
        [
            "zz_bad/2c9e7a1805f8b47630bbb83d21bf8222.jpg",
            "zz_bad/derive-huffman-codes-overflow.jpg"
        ]
    );
}

/// PNGs and WebPs in a dataset (ImageNet's training set has one PNG under a .JPEG name; other
/// datasets are all PNG or WebP) go through the same stages: a lossless PNG or WebP of a
/// JPEG's decoded pixels gives the same output image as the JPEG, whatever its name says.
#[test]
fn png_and_webp_images_give_the_output_of_their_pixels() {
    use image::ImageEncoder;
    let d = tempfile::tempdir().unwrap();
    demo::write_demo_dataset(d.path(), 2).unwrap();
    let mut classes: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    classes.sort();
    let jpegs = common::files_with_ext(&classes[0], "jpg");
    assert_eq!(jpegs.len(), 2);
    let png_dir = d.path().join("zz_png");
    std::fs::create_dir(&png_dir).unwrap();
    for (i, jpg) in jpegs.iter().enumerate() {
        let img = augserve_core::decode::decode_jpeg(
            &std::fs::read(jpg).unwrap(),
            &augserve_core::DecodeLimits::default(),
        )
        .unwrap();
        // Lossless encodings of the same pixels.
        let encode = |encoder: &dyn Fn(&mut Vec<u8>) -> image::ImageResult<()>| {
            let mut out = Vec::new();
            encoder(&mut out).unwrap();
            out
        };
        let (data, w, h, rgb) = (
            &img.data,
            img.width,
            img.height,
            image::ExtendedColorType::Rgb8,
        );
        let png =
            encode(&|out| image::codecs::png::PngEncoder::new(out).write_image(data, w, h, rgb));
        // One named .png, one under a .jpg name; a WebP of the first.
        let name = if i == 0 { "a.png" } else { "b_really_png.jpg" };
        std::fs::write(png_dir.join(name), png).unwrap();
        if i == 0 {
            let webp = encode(&|out| {
                image::codecs::webp::WebPEncoder::new_lossless(out).write_image(data, w, h, rgb)
            });
            std::fs::write(png_dir.join("c.webp"), webp).unwrap();
        }
    }
    let ds = Arc::new(Dataset::open(d.path(), DatasetFormat::ImageFolder, 1 << 24).unwrap());
    let spec = PipelineSpec {
        crop: augserve_core::spec::CropSpec::Center { crop_pct: 0.875 },
        flip_prob: 0.0,
        output: augserve_core::spec::OutputSpec {
            dtype: DType::Uint8,
            ..augserve_core::spec::OutputSpec::default()
        },
        ..PipelineSpec::default()
    };
    let p = Pipeline::new(ds.clone(), spec, PipelineOptions::default()).unwrap();
    let all: Vec<u64> = (0..ds.len() as u64).collect();
    let b = p.batch(0, 0, 0, 0, &all).unwrap();
    assert!(b.errors.is_empty(), "{:?}", b.errors);
    let per_image = b.tensor.data.len() / b.len();
    let image_of = |name: &str| {
        let id = (0..ds.len() as u64)
            .find(|&i| ds.entry(i).unwrap().name.ends_with(name))
            .unwrap_or_else(|| panic!("{name} indexed"));
        let at = b.sample_ids.iter().position(|&s| s == id).unwrap();
        &b.tensor.data[at * per_image..(at + 1) * per_image]
    };
    let twin = |jpg: &Path| {
        let rel = jpg
            .strip_prefix(d.path())
            .unwrap()
            .to_string_lossy()
            .into_owned();
        image_of(&rel).to_vec()
    };
    assert_eq!(image_of("zz_png/a.png"), twin(&jpegs[0]).as_slice());
    assert_eq!(image_of("zz_png/c.webp"), twin(&jpegs[0]).as_slice());
    assert_eq!(
        image_of("zz_png/b_really_png.jpg"),
        twin(&jpegs[1]).as_slice()
    );
}

/// Each delivered batch equals the batch its job makes on its own, byte for byte, in order.
fn assert_made_one_by_one(
    p: &Pipeline,
    seed: u64,
    delivered: &[augserve_core::Batch],
    jobs: &[augserve_core::pipeline::BatchJob],
) {
    assert_eq!(delivered.len(), jobs.len());
    for (b, j) in delivered.iter().zip(jobs) {
        let one = p.batch(seed, j.epoch, j.index, j.mix_key, &j.ids).unwrap();
        assert_eq!((b.epoch, b.index), (j.epoch, j.index));
        assert!(
            b.tensor.data == one.tensor.data,
            "batch {} of epoch {}",
            j.index,
            j.epoch
        );
        assert_eq!((&b.labels_a, &b.lam), (&one.labels_a, &one.lam));
    }
}

/// Runs the loop (one batch at a time) with a `deliver` that stops at once: whether it said
/// it completed, and how many batches it delivered.
fn stopped_at_first_delivery<R: Send>(
    p: &Pipeline,
    seed: u64,
    jobs: impl Iterator<Item = augserve_core::Result<augserve_core::pipeline::BatchJob>> + Send,
    make: impl Fn(augserve_core::Result<augserve_core::pipeline::PreparedBatch>) -> R + Sync,
) -> (bool, usize) {
    use std::ops::ControlFlow;
    let mut seen = 0;
    let done = augserve_core::pipeline::run_in_flight(
        p,
        seed,
        jobs,
        1,
        ControlFlow::Continue,
        make,
        |_| {
            seen += 1;
            ControlFlow::Break(())
        },
    );
    (done, seen)
}

/// The shared batch loop (`pipeline::schedule`): `BatchOrder` lists the batches a reader
/// makes exactly as the sampler cuts them (resume point, position, worker stride, limit), and
/// `run_in_flight` delivers the same bytes, in the same order, as making each batch in turn.
#[test]
fn the_shared_batch_loop_equals_batches_made_one_by_one() {
    use augserve_core::pipeline::{run_in_flight, BatchOrder};
    use std::ops::ControlFlow;
    let d = tempfile::tempdir().unwrap();
    let ds = demo_dataset(d.path());
    let p = Pipeline::new(ds, busy_spec(), PipelineOptions::default()).unwrap();
    let len = p.dataset().len();
    let shard = ShardSpec {
        seed: 3,
        rank: 1,
        world_size: 2,
        ..ShardSpec::default()
    };
    // Resume at a position, skip a batch, take every other batch (worker 1 of 2), two epochs.
    let mut order = BatchOrder::new(shard, 5, false, 4..6);
    (order.start_position, order.start_batch) = (7, 1);
    (order.batch_stride, order.batch_offset) = (2, 1);
    let mut want = Vec::new();
    for epoch in 4..6u64 {
        let position = if epoch == 4 { 7 } else { 0 };
        let ids = shard.ids_from(len, epoch, position).unwrap();
        for (i, chunk) in batches(&ids, 5, false).into_iter().enumerate() {
            if (epoch == 4 && i < 1) || i % 2 != 1 {
                continue;
            }
            want.push((
                epoch,
                i as u64,
                shard.mix_key(position, 5, i as u64),
                chunk.to_vec(),
            ));
        }
    }
    let jobs: Vec<_> = order.jobs(len).map(Result::unwrap).collect();
    let got: Vec<_> = jobs
        .iter()
        .map(|j| (j.epoch, j.index, j.mix_key, j.ids.clone()))
        .collect();
    assert_eq!(got, want);
    assert!(got.len() >= 4, "{} batches", got.len());
    // The overlapped loop gives the batches made one by one, byte for byte, in order.
    let mut delivered = Vec::new();
    let make = |prepared: augserve_core::Result<_>| {
        p.finish_batch(prepared.unwrap(), Destination::Owned)
            .unwrap()
    };
    let jobs_again = order.jobs(len);
    let done = run_in_flight(
        &p,
        shard.seed,
        jobs_again,
        1,
        ControlFlow::Continue,
        make,
        |b| {
            delivered.push(b);
            ControlFlow::Continue(())
        },
    );
    assert!(done);
    assert_made_one_by_one(&p, shard.seed, &delivered, &jobs);
    // A limit, and a stop: `Break` ends the loop early and says so.
    order.max_batches = 2;
    assert_eq!(order.jobs(len).count(), 2);
    let stopped = stopped_at_first_delivery(&p, shard.seed, order.jobs(len), make);
    assert_eq!(stopped, (false, 1));
    // An epoch whose shard cannot be drawn ends the list with its error.
    order.start_position = len as u64 + 1;
    let first = order.jobs(len).next().unwrap();
    assert!(first.unwrap_err().to_string().contains("start_position"));
}

/// CPU batch ops posing as a backend that takes three batches at once (a GPU's streams),
/// counting how many run together and what the loop reserved.
struct ThreeAtOnce {
    cpu: CpuBatchOps,
    running: std::sync::atomic::AtomicUsize,
    most: std::sync::atomic::AtomicUsize,
    reserved: std::sync::Mutex<Option<usize>>,
}

impl augserve_core::BatchOps for ThreeAtOnce {
    fn device(&self) -> String {
        "three at once".into()
    }
    fn per_image_resize(&self) -> Option<CpuResize> {
        self.cpu.per_image_resize()
    }
    fn batches_in_flight(&self) -> usize {
        3
    }
    fn reserve_for_batches(&self, _spec: &PipelineSpec, batch_size: usize) {
        *self.reserved.lock().unwrap() = Some(batch_size);
    }
    fn run(
        &self,
        images: &[augserve_core::pipeline::PreparedImage],
        plan: &augserve_core::ops::mix::MixPlan,
        spec: &PipelineSpec,
        pool: &rayon::ThreadPool,
        to: Destination<'_>,
    ) -> augserve_core::Result<augserve_core::pipeline::BatchOutput> {
        use std::sync::atomic::Ordering::SeqCst;
        let now = self.running.fetch_add(1, SeqCst) + 1;
        self.most.fetch_max(now, SeqCst);
        // Long enough for the next batches to be prepared and admitted meanwhile; a batch
        // that starts alone takes longest, so later ones finish before it.
        std::thread::sleep(std::time::Duration::from_millis(if now == 1 {
            150
        } else {
            60
        }));
        let out = self.cpu.run(images, plan, spec, pool, to);
        self.running.fetch_sub(1, SeqCst);
        out
    }
}

/// With batch ops that take three batches at once, the loop makes up to three concurrently
/// and still delivers the bytes of batches made one by one, in order; `Break` stops it.
#[test]
fn batches_made_three_at_once_are_delivered_in_order() {
    use augserve_core::pipeline::{run_in_flight, BatchOrder};
    use std::ops::ControlFlow;
    let d = tempfile::tempdir().unwrap();
    let ds = demo_dataset(d.path());
    let ops = Arc::new(ThreeAtOnce {
        cpu: CpuBatchOps::default(),
        running: Default::default(),
        most: Default::default(),
        reserved: Default::default(),
    });
    let p = Pipeline::new(ds, busy_spec(), PipelineOptions::default())
        .unwrap()
        .with_batch_ops(ops.clone());
    let len = p.dataset().len();
    let shard = ShardSpec {
        seed: 5,
        ..ShardSpec::default()
    };
    let order = BatchOrder::new(shard, 3, false, 0..2);
    let jobs: Vec<_> = order.jobs(len).map(Result::unwrap).collect();
    assert!(jobs.len() >= 6, "{} batches", jobs.len());
    let make = |prepared: augserve_core::Result<_>| {
        prepared.and_then(|b| p.finish_batch(b, Destination::Owned))
    };
    let mut delivered = Vec::new();
    let mut admitted = Vec::new();
    let admit = |prepared: augserve_core::Result<augserve_core::pipeline::PreparedBatch>| {
        admitted.push(prepared.as_ref().map(|b| b.index).unwrap_or(u64::MAX));
        ControlFlow::Continue(prepared)
    };
    let done = run_in_flight(&p, shard.seed, order.jobs(len), 8, admit, make, |b| {
        delivered.push(b.unwrap());
        ControlFlow::Continue(())
    });
    assert!(done);
    assert_eq!(*ops.reserved.lock().unwrap(), Some(3));
    let most = ops.most.load(std::sync::atomic::Ordering::SeqCst);
    assert!((2..=3).contains(&most), "{most} batches at once");
    assert_eq!(admitted, jobs.iter().map(|j| j.index).collect::<Vec<_>>());
    assert_made_one_by_one(&p, shard.seed, &delivered, &jobs);
    // The caller's cap wins over the ops' own; a stop at the first delivery ends the loop.
    ops.most.store(0, std::sync::atomic::Ordering::SeqCst);
    let stopped = stopped_at_first_delivery(&p, shard.seed, order.jobs(len), make);
    assert_eq!(stopped, (false, 1));
    assert_eq!(ops.most.load(std::sync::atomic::Ordering::SeqCst), 1);
}

/// uint8 NHWC without mixing writes the resized batch in place and only measures it: the
/// same bytes and the same statistics, bit for bit, as the mix + normalise pass gives.
#[test]
fn uint8_output_without_mixing_equals_the_mix_pass() {
    use augserve_core::ops::mix::MixPlan;
    use augserve_core::pipeline::mix_normalize_batch;
    let d = tempfile::tempdir().unwrap();
    let ds = demo_dataset(d.path());
    let mut spec = busy_spec();
    spec.mix = MixSpec::default();
    spec.output.dtype = DType::Uint8;
    spec.output.layout = Layout::Nhwc;
    let p = Pipeline::new(ds, spec.clone(), PipelineOptions::default()).unwrap();
    let ids: Vec<u64> = (0..24).collect();
    let got = p.batch(2, 0, 0, 0, &ids).unwrap();
    let prepared = p.prepare_batch(2, 0, 0, 0, &ids).unwrap();
    let pool = augserve_core::pipeline::worker_pool(2).unwrap();
    let cpu = CpuBatchOps::default();
    let resized = cpu.resize_batch(&prepared.images, &spec, &pool);
    let plan = MixPlan::identity(prepared.images.len());
    let (want, stats) = mix_normalize_batch(&resized, &plan, &spec, &pool);
    assert!(got.tensor.data == want.data, "tensor bytes");
    let s = &got.stats;
    assert_eq!(
        (s.mean, s.std, s.mad, s.clipped),
        (stats.mean, stats.std, stats.mad, stats.clipped),
        "statistics"
    );
}

/// The CPU batch ops with the resize left to the batch stage (as before the per-image stage
/// resized): the batches must be the same bytes either way.
struct ResizeInBatchStage(CpuBatchOps);

impl augserve_core::BatchOps for ResizeInBatchStage {
    fn device(&self) -> String {
        "cpu".into()
    }
    fn run(
        &self,
        images: &[augserve_core::pipeline::PreparedImage],
        plan: &augserve_core::ops::mix::MixPlan,
        spec: &PipelineSpec,
        pool: &rayon::ThreadPool,
        to: Destination<'_>,
    ) -> augserve_core::Result<augserve_core::pipeline::BatchOutput> {
        augserve_core::BatchOps::run(&self.0, images, plan, spec, pool, to)
    }
}

#[test]
fn resizing_in_the_per_image_stage_gives_the_same_batches() {
    let d = tempfile::tempdir().unwrap();
    let ds = demo_dataset(d.path());
    let all: Vec<u64> = (0..ds.len() as u64).collect();
    let mut uint8 = busy_spec();
    uint8.mix = MixSpec::default();
    uint8.output.dtype = DType::Uint8;
    uint8.output.layout = Layout::Nhwc;
    for spec in [busy_spec(), uint8] {
        for kind in [CpuResize::Reference, CpuResize::Fast] {
            let per_image = Pipeline::new(ds.clone(), spec.clone(), PipelineOptions::default())
                .unwrap()
                .with_batch_ops(Arc::new(CpuBatchOps::new(kind)));
            let batch_stage = Pipeline::new(ds.clone(), spec.clone(), PipelineOptions::default())
                .unwrap()
                .with_batch_ops(Arc::new(ResizeInBatchStage(CpuBatchOps::new(kind))));
            let a = per_image.batch(3, 1, 0, 0, &all).unwrap();
            let b = batch_stage.batch(3, 1, 0, 0, &all).unwrap();
            assert_eq!(a.sample_ids, b.sample_ids);
            assert!(a.tensor.data == b.tensor.data, "{kind:?} {:?}", spec.output);
            assert_eq!(a.stats, b.stats);
            let d = a.timings.decoded;
            assert_eq!((d.region, d.whole, d.device), (all.len() as u32, 0, 0));
        }
    }
}

/// Batch ops that ask the per-image stage for resize weights (as a GPU backend does) and
/// check them: every image has them, equal to the weights of its region, crop and output.
struct WantsWeights(CpuBatchOps);

impl augserve_core::BatchOps for WantsWeights {
    fn device(&self) -> String {
        "cpu".into()
    }
    fn per_image_weights(&self) -> bool {
        true
    }
    fn run(
        &self,
        images: &[augserve_core::pipeline::PreparedImage],
        plan: &augserve_core::ops::mix::MixPlan,
        spec: &PipelineSpec,
        pool: &rayon::ThreadPool,
        to: Destination<'_>,
    ) -> augserve_core::Result<augserve_core::pipeline::BatchOutput> {
        use augserve_core::ops::resize::ResizeWeights;
        let (ow, oh) = (spec.size.width, spec.size.height);
        for im in images {
            let (w, h) = (im.region.width, im.region.height);
            let want = ResizeWeights::new(w, h, im.crop, ow, oh);
            assert_eq!(im.weights.as_deref(), Some(&want), "image {}", im.sample_id);
        }
        augserve_core::BatchOps::run(&self.0, images, plan, spec, pool, to)
    }
}

#[test]
fn the_per_image_stage_computes_resize_weights_when_asked() {
    let d = tempfile::tempdir().unwrap();
    let ds = demo_dataset(d.path());
    let ids: Vec<u64> = (0..40).collect();
    let spec = busy_spec();
    let asked = Pipeline::new(ds.clone(), spec.clone(), PipelineOptions::default())
        .unwrap()
        .with_batch_ops(Arc::new(WantsWeights(CpuBatchOps::default())));
    let plain = Pipeline::new(ds, spec, PipelineOptions::default())
        .unwrap()
        .with_batch_ops(Arc::new(ResizeInBatchStage(CpuBatchOps::default())));
    let (a, b) = (
        asked.batch(5, 0, 0, 0, &ids).unwrap(),
        plain.batch(5, 0, 0, 0, &ids).unwrap(),
    );
    assert!(a.tensor.data == b.tensor.data);
}

/// The batch says how its images were decoded: by region, scaled (dct_scaling), or left to a
/// device decoder.
#[test]
fn batches_count_how_their_images_were_decoded() {
    let d = tempfile::tempdir().unwrap();
    let ds = demo_dataset(d.path());
    let all: Vec<u64> = (0..ds.len() as u64).collect();
    let mut spec = busy_spec();
    spec.size = augserve_core::spec::Size {
        width: 32,
        height: 32,
    };
    spec.dct_scaling = true;
    let p = Pipeline::new(ds.clone(), spec.clone(), PipelineOptions::default()).unwrap();
    let t = p.batch(3, 1, 0, 0, &all).unwrap().timings.decoded;
    assert_eq!(t.region, all.len() as u32);
    assert!(t.scaled > all.len() as u32 / 2, "{t:?}");
    let deferred = Pipeline::new(ds, spec, PipelineOptions::default())
        .unwrap()
        .with_batch_ops(Arc::new(TakeEverything {
            cpu: CpuBatchOps::default(),
            taken: Default::default(),
        }));
    let t = deferred.batch(3, 1, 0, 0, &all).unwrap().timings.decoded;
    assert_eq!((t.region, t.device), (0, all.len() as u32));
}
