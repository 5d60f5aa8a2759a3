//! One criterion group per pipeline stage, on photo-sized inputs, single-threaded unless
//! the name says otherwise: decode, resize (reference vs fast), colour jitter, mixup +
//! normalise (u8, f16, f32), batch assembly (the CPU batch ops end to end) and encoding a
//! batch as protobuf.

use std::hint::black_box;
use std::time::Duration;

use augserve_benches::{prepared_batch, sample_image, sample_jpeg};
use augserve_core::decode::{decode_jpeg, DecodeLimits};
use augserve_core::ops::color::{apply_color_jitter, ColorFactors};
use augserve_core::ops::crop::CropBox;
use augserve_core::ops::mix::{plan_mix, MixPlan};
use augserve_core::ops::resize::{resize_u8_reference, FastResizer};
use augserve_core::pipeline::{mix_normalize_batch, BatchOps, CpuBatchOps, CpuResize, Destination};
use augserve_core::rng::{keyed_rng, Purpose};
use augserve_core::spec::{DType, EpochMix, Layout, MixMode, PipelineSpec};
use augserve_core::{Batch, StageTimings};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use prost::Message;

const BATCH: usize = 64;

fn one_thread() -> rayon::ThreadPool {
    match rayon::ThreadPoolBuilder::new().num_threads(1).build() {
        Ok(p) => p,
        Err(e) => panic!("thread pool: {e}"),
    }
}

fn decode(c: &mut Criterion) {
    let jpeg = sample_jpeg();
    let limits = DecodeLimits::default();
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(1));
    g.bench_function("zune_jpeg_500x375", |b| {
        b.iter(|| decode_jpeg(black_box(&jpeg), &limits))
    });
    g.finish();
}

fn resize(c: &mut Criterion) {
    let img = sample_image();
    let crop = CropBox {
        x0: 40.0,
        y0: 20.0,
        x1: 440.5,
        y1: 350.25,
    };
    let mut out = vec![0u8; 224 * 224 * 3];
    let mut fast = FastResizer::default();
    let mut g = c.benchmark_group("resize_to_224");
    g.throughput(Throughput::Elements(1));
    g.bench_function("reference", |b| {
        b.iter(|| resize_u8_reference(black_box(&img), crop, 224, 224))
    });
    g.bench_function("fast_image_resize", |b| {
        b.iter(|| fast.resize_into(black_box(&img), crop, 224, 224, &mut out))
    });
    g.finish();
}

fn colour(c: &mut Criterion) {
    let img = sample_image();
    let f = ColorFactors {
        brightness: 1.2,
        contrast: 0.8,
        saturation: 1.3,
    };
    let mut g = c.benchmark_group("colour_jitter");
    g.throughput(Throughput::Elements(1));
    g.bench_function("brightness_contrast_saturation_500x375", |b| {
        b.iter_batched_ref(
            || img.clone(),
            |im| apply_color_jitter(im, &f),
            criterion::BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn mixup_plan() -> MixPlan {
    let m = EpochMix {
        mixup_alpha: 0.2,
        cutmix_alpha: 0.0,
        prob: 1.0,
        switch_prob: 0.5,
        mode: MixMode::Elem,
    };
    plan_mix(&mut keyed_rng(1, 0, Purpose::Batch, 0), &m, BATCH, 224, 224)
}

fn mix_normalise(c: &mut Criterion) {
    let pool = one_thread();
    let resized: Vec<u8> = (0..BATCH * 224 * 224 * 3)
        .map(|i| (i * 31 % 251) as u8)
        .collect();
    let mut g = c.benchmark_group("mix_normalise_batch64");
    g.throughput(Throughput::Elements(BATCH as u64));
    for (name, plan) in [
        ("normalise_only", MixPlan::identity(BATCH)),
        ("mixup", mixup_plan()),
    ] {
        for (dtype, layout) in [
            (DType::Uint8, Layout::Nhwc),
            (DType::Float16, Layout::Nchw),
            (DType::Float32, Layout::Nchw),
        ] {
            let mut spec = PipelineSpec::default();
            spec.output.dtype = dtype;
            spec.output.layout = layout;
            g.bench_with_input(
                BenchmarkId::new(name, format!("{dtype:?}_{layout:?}")),
                &spec,
                |b, spec| b.iter(|| mix_normalize_batch(black_box(&resized), &plan, spec, &pool)),
            );
        }
    }
    g.finish();
}

fn batch_assembly(c: &mut Criterion) {
    let pool = one_thread();
    let images = prepared_batch(BATCH);
    let plan = mixup_plan();
    let mut spec = PipelineSpec::default();
    spec.output.dtype = DType::Float16;
    let mut g = c.benchmark_group("batch_ops_batch64");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.sample_size(10);
    for (name, resize) in [
        ("reference_resize", CpuResize::Reference),
        ("fast_resize", CpuResize::Fast),
    ] {
        let ops = CpuBatchOps::new(resize);
        g.bench_function(name, |b| {
            b.iter(|| ops.run(black_box(&images), &plan, &spec, &pool, Destination::Owned))
        });
    }
    g.finish();
}

fn proto_encode(c: &mut Criterion) {
    let pool = one_thread();
    let images = prepared_batch(BATCH);
    let plan = mixup_plan();
    let mut spec = PipelineSpec::default();
    spec.output.dtype = DType::Float16;
    let out = match CpuBatchOps::default().run(&images, &plan, &spec, &pool, Destination::Owned) {
        Ok(o) => o,
        Err(e) => panic!("batch ops: {e}"),
    };
    let batch = Batch {
        epoch: 0,
        index: 0,
        tensor: out.tensor,
        labels_a: (0..BATCH as i64).collect(),
        labels_b: (0..BATCH as i64).rev().collect(),
        lam: plan.lam.clone(),
        soft_targets: None,
        sample_ids: (0..BATCH as u64).collect(),
        errors: Vec::new(),
        warnings: Vec::new(),
        stats: out.stats,
        timings: StageTimings::default(),
        device: "cpu".into(),
    };
    let mut g = c.benchmark_group("proto_encode_batch64_f16");
    g.throughput(Throughput::Bytes(batch.tensor.data.len() as u64));
    g.bench_function("batch_to_proto_and_encode", |b| {
        b.iter_batched(
            || batch.clone(),
            |bt| augserve_proto::convert::batch_to_proto(bt, 0).encode_to_vec(),
            criterion::BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group! {
    name = stages;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = decode, resize, colour, mix_normalise, batch_assembly, proto_encode
}
criterion_main!(stages);
