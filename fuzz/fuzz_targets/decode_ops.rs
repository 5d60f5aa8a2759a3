//! Arbitrary bytes as a JPEG, PNG or WebP through the whole per-image stage (header check,
//! decode, crop choice, colour jitter) and the CPU batch stage (resize, mixup, normalise,
//! statistics).
//! Must never panic, hang or allocate past the limits; bad input is a per-image error.
#![no_main]

use std::sync::OnceLock;
use std::time::Instant;

use augserve_core::pipeline::{
    finish_batch, prepare_images, worker_pool, Destination, PreparedBatch,
};
use augserve_core::spec::{ColorJitter, MixSpec, PipelineSpec, Size};
use augserve_core::{CpuBatchOps, DecodeLimits};
use libfuzzer_sys::fuzz_target;
use rayon::ThreadPool;

fn pool() -> &'static ThreadPool {
    static POOL: OnceLock<std::sync::Arc<ThreadPool>> = OnceLock::new();
    POOL.get_or_init(|| worker_pool(1).expect("pool"))
}

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, jpeg)) = data.split_first() else {
        return;
    };
    let spec = PipelineSpec {
        size: Size {
            width: 24 + u32::from(ctl & 7),
            height: 16 + u32::from(ctl >> 5),
        },
        color: ColorJitter {
            brightness: 0.4,
            contrast: 0.4,
            saturation: 0.4,
        },
        mix: MixSpec {
            mixup_alpha: 0.4,
            cutmix_alpha: if ctl & 8 != 0 { 1.0 } else { 0.0 },
            num_classes: 4,
            ..MixSpec::default()
        },
        ..PipelineSpec::default()
    };
    // Small limits keep each run fast; the header check must enforce them before allocating.
    let limits = DecodeLimits {
        max_pixels: 1 << 22,
        max_file_bytes: 1 << 20,
    };
    let started = Instant::now();
    let ids = [0u64, 1];
    let (prepared, timings) =
        prepare_images(&spec, &limits, pool(), u64::from(ctl), 0, &ids, |id| {
            ("fuzz".to_string(), id as i64, Ok(jpeg.to_vec()))
        });
    if let Ok(p) = PreparedBatch::collect(&spec, prepared, timings, started) {
        let _ = finish_batch(
            &spec,
            &CpuBatchOps::default(),
            pool(),
            p,
            Destination::Owned,
        );
    }
});
