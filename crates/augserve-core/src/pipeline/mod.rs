//! The pipeline: for one batch of sample ids, read + decode + per-image CPU ops in parallel
//! (one image per task), then the batch ops (resize, mixup/cutmix + normalise, statistics)
//! on the CPU or on a GPU backend.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rayon::ThreadPool;

use crate::batch::{Batch, StageTimings, Tensor};
use crate::dataset::Dataset;
use crate::decode::DecodeLimits;
use crate::error::{Error, Result, SampleError};
use crate::ops::mix::{plan_mix, soft_targets, MixPlan};
use crate::ops::stats::{output_percentiles, BatchStats};
use crate::rng::{keyed_rng, Purpose};
use crate::spec::{ErrorPolicy, PipelineSpec};

mod backend;
mod cpu;
mod deferred;
mod prepare;
mod schedule;

pub use backend::*;
pub use cpu::*;
pub use deferred::*;
pub use prepare::*;
pub use schedule::*;

/// A batch after its per-image stage, waiting for its batch ops.
#[derive(Debug)]
pub struct PreparedBatch {
    pub seed: u64,
    pub epoch: u64,
    pub index: u64,
    pub mix_key: u64,
    pub images: Vec<PreparedImage>,
    pub errors: Vec<SampleError>,
    pub timings: StageTimings,
    started: Instant,
}

impl PreparedBatch {
    /// Splits per-image results into images and errors, applying the spec's error policy.
    /// Seed, epoch, index and mix key start at 0; callers set them.
    pub fn collect(
        spec: &PipelineSpec,
        prepared: Vec<std::result::Result<PreparedImage, SampleError>>,
        timings: StageTimings,
        started: Instant,
    ) -> Result<Self> {
        let mut images = Vec::with_capacity(prepared.len());
        let mut errors = Vec::new();
        for r in prepared {
            match r {
                Ok(p) => images.push(p),
                Err(e) => errors.push(e),
            }
        }
        if spec.on_error == ErrorPolicy::Fail {
            if let Some(e) = errors.first() {
                return Err(Error::SampleFailed(e.clone()));
            }
        }
        Ok(PreparedBatch {
            seed: 0,
            epoch: 0,
            index: 0,
            mix_key: 0,
            images,
            errors,
            timings,
            started,
        })
    }
}

/// Settings of a pipeline that are not part of the spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PipelineOptions {
    /// Worker threads for the per-image stage and CPU batch ops; 0 = one per core.
    pub threads: usize,
    pub limits: DecodeLimits,
}

/// A dataset bound to a spec, a thread pool and a batch-ops backend.
pub struct Pipeline {
    dataset: Arc<Dataset>,
    spec: PipelineSpec,
    limits: DecodeLimits,
    pool: Arc<ThreadPool>,
    ops: Arc<dyn BatchOps>,
}

/// A worker pool of `threads` threads (0 = one per core).
pub fn worker_pool(threads: usize) -> Result<Arc<ThreadPool>> {
    Ok(Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("augserve-worker-{i}"))
            .build()?,
    ))
}

impl Pipeline {
    /// Validates `spec` and builds the worker pool. Batch ops default to the CPU.
    pub fn new(
        dataset: Arc<Dataset>,
        spec: PipelineSpec,
        options: PipelineOptions,
    ) -> Result<Self> {
        let pool = worker_pool(options.threads)?;
        Self::with_pool(dataset, spec, options.limits, pool)
    }

    /// A pipeline on a shared worker pool (a server's streams share one).
    pub fn with_pool(
        dataset: Arc<Dataset>,
        spec: PipelineSpec,
        limits: DecodeLimits,
        pool: Arc<ThreadPool>,
    ) -> Result<Self> {
        spec.validate()?;
        let classes = dataset.num_classes();
        let soft_columns = spec.mix.num_classes as usize;
        if soft_columns > 0 && soft_columns < classes {
            // Labels past the soft-target row would be dropped: rows that do not sum to 1.
            return Err(Error::spec(
                "mix.num_classes",
                format!(
                    "is {soft_columns}, but the dataset has {classes} classes: soft targets \
                     need a column for each (0 = no soft targets)"
                ),
            ));
        }
        Ok(Pipeline {
            dataset,
            spec,
            limits,
            pool,
            ops: Arc::new(CpuBatchOps::default()),
        })
    }

    /// Replaces the batch-ops backend (e.g. with a GPU one).
    pub fn with_batch_ops(mut self, ops: Arc<dyn BatchOps>) -> Self {
        self.ops = ops;
        self
    }

    pub fn spec(&self) -> &PipelineSpec {
        &self.spec
    }

    pub fn dataset(&self) -> &Arc<Dataset> {
        &self.dataset
    }

    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    pub fn device(&self) -> String {
        self.ops.device()
    }

    /// Reads, decodes and prepares `ids` in parallel; results keep the order of `ids`.
    pub fn prepare(
        &self,
        seed: u64,
        epoch: u64,
        ids: &[u64],
    ) -> (
        Vec<std::result::Result<PreparedImage, SampleError>>,
        StageTimings,
    ) {
        let ds = &self.dataset;
        prepare_images_with(
            &self.spec,
            &self.limits,
            &self.pool,
            seed,
            epoch,
            ids,
            |id| {
                let name = ds.entry(id).map(|e| e.name.clone()).unwrap_or_default();
                let label = ds.entry(id).map_or(-1, |e| e.label);
                (name, label, ds.read(id))
            },
            PerImageWork::of(self.ops.as_ref()),
        )
    }

    /// Builds batch `index` of `epoch` from `ids`. `mix_key` keys the batch's mixing draws
    /// (use a global batch index, unique across ranks). Same as [`Self::prepare_batch`]
    /// followed by [`Self::finish_batch`].
    pub fn batch(
        &self,
        seed: u64,
        epoch: u64,
        index: u64,
        mix_key: u64,
        ids: &[u64],
    ) -> Result<Batch> {
        self.batch_to(seed, epoch, index, mix_key, ids, Destination::Owned)
    }

    /// The per-image stage of a batch (read, decode, crop, jitter), in parallel. Splitting it
    /// from [`Self::finish_batch`] lets a caller prepare batch k+1 while batch k's batch ops
    /// run (on the GPU, or on other cores).
    pub fn prepare_batch(
        &self,
        seed: u64,
        epoch: u64,
        index: u64,
        mix_key: u64,
        ids: &[u64],
    ) -> Result<PreparedBatch> {
        let started = Instant::now();
        let (prepared, timings) = self.prepare(seed, epoch, ids);
        let mut batch = PreparedBatch::collect(&self.spec, prepared, timings, started)?;
        (batch.seed, batch.epoch, batch.index, batch.mix_key) = (seed, epoch, index, mix_key);
        Ok(batch)
    }

    /// Gives a delivered batch's tensor bytes (`Batch::tensor.data`) back, for a later batch
    /// to reuse: cheaper than a fresh allocation of that size (see `buffers`). Optional.
    pub fn recycle(&self, tensor_data: Vec<u8>) {
        self.ops.recycle(tensor_data);
    }

    /// The batch-ops backend (to recycle buffers after the pipeline is gone, say).
    pub fn batch_ops(&self) -> Arc<dyn BatchOps> {
        self.ops.clone()
    }

    /// The batch stage: mixing plan, batch ops (output to `to`), labels and targets.
    pub fn finish_batch(&self, prepared: PreparedBatch, to: Destination<'_>) -> Result<Batch> {
        finish_batch(&self.spec, self.ops.as_ref(), &self.pool, prepared, to)
    }

    /// `batch`, with the output tensor written to `to` (a shared-memory slot, device memory):
    /// the batch's tensor then has the shape and dtype, and no data.
    pub fn batch_to(
        &self,
        seed: u64,
        epoch: u64,
        index: u64,
        mix_key: u64,
        ids: &[u64],
        to: Destination<'_>,
    ) -> Result<Batch> {
        let prepared = self.prepare_batch(seed, epoch, index, mix_key, ids)?;
        self.finish_batch(prepared, to)
    }
}

/// The batch stage of a prepared batch under `spec`, with `ops` on `pool`, the output
/// tensor written to `to`.
pub fn finish_batch(
    spec: &PipelineSpec,
    ops: &dyn BatchOps,
    pool: &ThreadPool,
    prepared: PreparedBatch,
    mut to: Destination<'_>,
) -> Result<Batch> {
    let PreparedBatch {
        seed,
        epoch,
        index,
        mix_key,
        mut images,
        mut errors,
        mut timings,
        started: t0,
    } = prepared;
    // Images left to a device decoder can fail only now; the batch is then built again
    // without them (a second attempt holds only images that decoded; three at most).
    let mut attempts = 0;
    let (plan, out) = loop {
        attempts += 1;
        match run_batch_ops(spec, ops, pool, seed, epoch, mix_key, &images, &mut to) {
            Err(Error::DeferredImagesFailed(failed)) if attempts < 3 => {
                if spec.on_error == ErrorPolicy::Fail {
                    if let Some(e) = failed.first() {
                        return Err(Error::SampleFailed(e.clone()));
                    }
                }
                images.retain(|im| !failed.iter().any(|f| f.sample_id == im.sample_id));
                errors.extend(failed);
            }
            other => break other?,
        }
    };
    let labels_a: Vec<i64> = images.iter().map(|p| p.label).collect();
    let labels_b: Vec<i64> = plan.partner.iter().map(|&j| labels_a[j as usize]).collect();
    let soft = (spec.mix.num_classes > 0).then(|| {
        soft_targets(
            &labels_a,
            &labels_b,
            &plan.lam,
            spec.mix.num_classes,
            spec.mix.label_smoothing,
        )
    });
    // The CPU path resizes in the per-image stage (summed there); the batch stage adds its own.
    timings.resize += out.resize;
    timings.mix_normalize = out.mix_normalize;
    timings.device_busy = out.device_busy.unwrap_or_default();
    timings.host_copy_bytes = out.host_copy_bytes.unwrap_or_default();
    // Percentiles from the output itself (host memory; a CUDA IPC batch has none here), so
    // every backend reports the same figures for the same bytes.
    let t_percentiles = Instant::now();
    let mut stats = out.stats;
    let written: &[u8] = match &to {
        Destination::Host(buf) => &buf[..tensor_bytes(spec, images.len())],
        _ => &out.tensor.data,
    };
    stats.percentiles = output_percentiles(
        written,
        images.len(),
        spec.size.height as usize * spec.size.width as usize,
        out.tensor.dtype,
        out.tensor.layout,
    );
    timings.stats = out.stats_time + t_percentiles.elapsed();
    let sample_ids = images.iter().map(|p| p.sample_id).collect();
    let warnings = images.iter().filter_map(|p| p.warning.clone()).collect();
    // The device-decoded images' files and the per-image stage's resized images, in recycled
    // buffers, go back for the next reads and resizes.
    for p in images {
        crate::buffers::recycle_read_buffer(p.region.data);
        if let Some(d) = p.deferred {
            crate::buffers::recycle_read_buffer(d.bytes);
        }
    }
    timings.total = t0.elapsed();
    Ok(Batch {
        epoch,
        index,
        tensor: out.tensor,
        labels_a,
        labels_b,
        lam: plan.lam,
        soft_targets: soft,
        sample_ids,
        warnings,
        errors,
        stats,
        timings,
        device: ops.device(),
    })
}

/// The mixing plan for `images` and the batch ops on them.
#[allow(clippy::too_many_arguments)]
fn run_batch_ops(
    spec: &PipelineSpec,
    ops: &dyn BatchOps,
    pool: &ThreadPool,
    seed: u64,
    epoch: u64,
    mix_key: u64,
    images: &[PreparedImage],
    to: &mut Destination<'_>,
) -> Result<(MixPlan, BatchOutput)> {
    let n = images.len();
    let plan = match spec.mix.at_epoch(epoch) {
        Some(m) => plan_mix(
            &mut keyed_rng(seed, epoch, Purpose::Batch, mix_key),
            &m,
            n,
            spec.size.height,
            spec.size.width,
        ),
        None => MixPlan::identity(n),
    };
    let out = if n == 0 {
        BatchOutput {
            tensor: Tensor {
                data: Vec::new(),
                shape: tensor_shape(spec, 0),
                dtype: spec.output.dtype,
                layout: spec.output.layout,
            },
            stats: BatchStats::default(),
            resize: Duration::ZERO,
            mix_normalize: Duration::ZERO,
            stats_time: Duration::ZERO,
            device_busy: None,
            host_copy_bytes: None,
        }
    } else {
        let to = to.for_len(tensor_bytes(spec, n))?;
        ops.run(images, &plan, spec, pool, to)?
    };
    Ok((plan, out))
}
