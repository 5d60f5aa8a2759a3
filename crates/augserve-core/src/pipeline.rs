//! The pipeline: for one batch of sample ids, read + decode + per-image CPU ops in parallel
//! (one image per task), then the batch ops (resize, mixup/cutmix + normalise, statistics)
//! on the CPU or on a GPU backend.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rayon::prelude::*;
use rayon::ThreadPool;

use crate::batch::{Batch, StageTimings, Tensor};
use crate::buffers::BufferPool;
use crate::dataset::Dataset;
use crate::decode::{decode_image, decode_image_accepting_damage, decode_jpeg, DecodeLimits};
use crate::error::{Error, Result, SampleError, SampleErrorKind};
use crate::image::RgbImage;
use crate::ops::color::{apply_color_jitter, ColorFactors};
use crate::ops::crop::{choose_crop, CropBox};
use crate::ops::mix::{mix_normalize_image, plan_mix, soft_targets, MixPlan, NormalizeCoeffs};
use crate::ops::resize::{read_region, resize_u8_reference_into, FastResizer};
use crate::ops::stats::{abs_dev_sums, combine_stats, output_percentiles, BatchStats};
use crate::rng::{keyed_rng, Purpose};
use crate::spec::{DamagedPolicy, ErrorPolicy, Layout, PipelineSpec};

/// An image after the per-image stage: the region the resize will read, already colour
/// jittered, and where in it the crop box lies.
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedImage {
    pub sample_id: u64,
    pub label: i64,
    pub region: RgbImage,
    /// The crop box in `region`'s coordinates.
    pub crop: CropBox,
    pub flip: bool,
    /// Set when the batch ops decode this image on their device (GPU JPEG decoding): then
    /// `region` is empty, and the decoder cuts and jitters the region described here.
    pub deferred: Option<Box<DeferredDecode>>,
    /// A damaged image the spec accepts (`on_damaged = accept`): what was wrong with it.
    pub warning: Option<SampleError>,
}

/// An image left encoded for the batch ops' device decoder, with what the CPU path would
/// have done to it after decoding: cut `region` (x, y, w, h) out of the full image and apply
/// `color` to that region. `crop` of the image is relative to the region, as on the CPU path.
#[derive(Debug, Clone, PartialEq)]
pub struct DeferredDecode {
    pub bytes: Vec<u8>,
    pub source_name: String,
    /// The JPEG header: full image size, sampling (what the device decoder plans with).
    pub info: crate::decode::JpegInfo,
    /// The part the CPU path would cut (x, y, width, height), from the crop box.
    pub region: (u32, u32, u32, u32),
    pub color: ColorFactors,
    /// The pipeline's decode limits, for a CPU fallback.
    pub limits: DecodeLimits,
}

impl DeferredDecode {
    /// The whole image decoded on the CPU (zune-jpeg), checked against the header's size:
    /// the fallback for what a device decoder refuses.
    pub fn decode_full(&self) -> std::result::Result<RgbImage, SampleErrorKind> {
        let img = decode_jpeg(&self.bytes, &self.limits)?;
        if (img.width, img.height) != (self.info.width, self.info.height) {
            return Err(SampleErrorKind::Decode(format!(
                "decoded size {}x{} differs from the header's {}x{}",
                img.width, img.height, self.info.width, self.info.height
            )));
        }
        Ok(img)
    }
}

impl PreparedImage {
    /// Decodes a deferred image on the CPU, exactly as the per-image stage would have (the
    /// fallback for images a device decoder refuses). No-op for other images.
    pub fn decode_deferred_on_cpu(&mut self) -> std::result::Result<(), SampleError> {
        let Some(d) = self.deferred.take() else {
            return Ok(());
        };
        let img = d.decode_full().map_err(|kind| SampleError {
            sample_id: self.sample_id,
            source_name: d.source_name.clone(),
            kind,
        })?;
        let mut region = cut_region(img, d.region);
        apply_color_jitter(&mut region, &d.color);
        self.region = region;
        Ok(())
    }
}

/// `region` (x, y, w, h) of `img`, without a copy when it is the whole image.
pub fn cut_region(img: RgbImage, (x, y, w, h): (u32, u32, u32, u32)) -> RgbImage {
    if (x, y, w, h) == (0, 0, img.width, img.height) {
        img
    } else {
        img.crop(x, y, w, h)
    }
}

/// Where images were decoded, since the device decoder was enabled.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct DecodeCounts {
    /// Decoded by the device decoder.
    pub on_device: u64,
    /// Left to the device, refused there, decoded on the CPU at the batch stage.
    pub fell_back: u64,
    /// Kept on the CPU by their headers (formats the device decoder does not take).
    pub kept_on_cpu: u64,
    /// The share of eligible images currently sent to the device (the tuned split).
    pub device_share: f64,
    /// Pixels decoded over the pixels of the whole images (below 1 with ROI decode).
    pub pixel_fraction: Option<f64>,
}

/// A device decoder the per-image stage can leave images to (GPU JPEG decoding): it says,
/// from the headers, which images it takes, and learns the CPU's decode rate to balance the
/// split.
pub trait DeviceDecoder: Send + Sync {
    /// Whether the device decodes this image (route + the current CPU/GPU split).
    /// `sample_id` makes the choice a function of the image, not of thread timing.
    fn takes(&self, info: &crate::decode::JpegInfo, sample_id: u64) -> bool;
    /// The CPU workers decoded `images` in `wall` (per-image stage wall time).
    fn observe_cpu(&self, images: usize, wall: Duration);
}

/// Per-image random decisions, drawn from the (seed, epoch, sample id) stream.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ImagePlan {
    pub crop: CropBox,
    pub flip: bool,
    pub color: ColorFactors,
}

impl ImagePlan {
    pub fn draw(
        spec: &PipelineSpec,
        seed: u64,
        epoch: u64,
        sample_id: u64,
        width: u32,
        height: u32,
    ) -> Self {
        let mut rng = keyed_rng(seed, epoch, Purpose::Sample, sample_id);
        let crop = choose_crop(&mut rng, &spec.crop, width, height, spec.size);
        let flip = spec.flip_prob > 0.0 && rand::Rng::random::<f32>(&mut rng) < spec.flip_prob;
        let color = ColorFactors::sample(&mut rng, &spec.color);
        ImagePlan { crop, flip, color }
    }
}

/// A region ready for the batch ops: the pixels, the crop box in them, the flip, and what
/// was wrong with a damaged image the spec accepts.
pub type PreparedRegion = (RgbImage, CropBox, bool, Option<SampleErrorKind>);

/// Decodes `bytes` and runs the per-image CPU ops under `plan_for(width, height)`.
pub fn prepare_image(
    bytes: &[u8],
    limits: &DecodeLimits,
    spec: &PipelineSpec,
    plan_for: impl FnOnce(u32, u32) -> ImagePlan,
    timings: &mut (Duration, Duration),
) -> Result<PreparedRegion, SampleErrorKind> {
    let t0 = Instant::now();
    let (img, damage) = match spec.on_damaged {
        DamagedPolicy::Reject => (decode_image(bytes, limits)?, None),
        DamagedPolicy::Accept => decode_image_accepting_damage(bytes, limits)?,
    };
    let t1 = Instant::now();
    let plan = plan_for(img.width, img.height);
    let region_box = read_region(
        img.width,
        img.height,
        plan.crop,
        spec.size.width,
        spec.size.height,
    );
    let mut region = cut_region(img, region_box);
    apply_color_jitter(&mut region, &plan.color);
    let crop = plan.crop.relative_to(region_box.0, region_box.1);
    timings.0 += t1 - t0;
    timings.1 += t1.elapsed();
    Ok((region, crop, plan.flip, damage))
}

/// The batch-wise stage: resize the prepared crops to the output size (flip fused), then
/// mix + normalise into the output tensor and compute its statistics.
pub trait BatchOps: Send + Sync {
    /// "cpu", or the GPU's name.
    fn device(&self) -> String;

    /// The device JPEG decoder, when this backend has one and it is enabled.
    fn device_decoder(&self) -> Option<&dyn DeviceDecoder> {
        None
    }

    /// A one-line report of where images were decoded (GPU decoding), for logs and summaries.
    fn decode_report(&self) -> Option<String> {
        None
    }

    /// Where images were decoded so far (GPU decoding), for metrics.
    fn decode_counts(&self) -> Option<DecodeCounts> {
        None
    }

    /// Device memory in use, in bytes, for the GPU backends (metrics); `None` on the CPU.
    fn device_memory_used(&self) -> Option<u64> {
        None
    }

    /// Takes back a finished batch's tensor buffer (`Pipeline::recycle`) for a later batch.
    fn recycle(&self, _buf: Vec<u8>) {}

    /// Frees the buffers kept for reuse (the server calls this when no stream is left).
    fn release_idle_memory(&self) {}

    /// Like `run`, but the output tensor is written to `out` (exactly its length, host
    /// memory) and the returned tensor has no data. The default runs `run` and copies.
    fn run_into_host(
        &self,
        images: &[PreparedImage],
        plan: &MixPlan,
        spec: &PipelineSpec,
        pool: &ThreadPool,
        out: &mut [u8],
    ) -> Result<BatchOutput> {
        let mut done = self.run(images, plan, spec, pool)?;
        if done.tensor.data.len() != out.len() {
            return Err(Error::Backend(format!(
                "the batch ops made {} bytes for a {}-byte output",
                done.tensor.data.len(),
                out.len()
            )));
        }
        out.copy_from_slice(&done.tensor.data);
        self.recycle(std::mem::take(&mut done.tensor.data));
        Ok(done)
    }

    fn run(
        &self,
        images: &[PreparedImage],
        plan: &MixPlan,
        spec: &PipelineSpec,
        pool: &ThreadPool,
    ) -> Result<BatchOutput>;

    /// A ring of `slots` x `slot_bytes` bytes of device memory that another process on the
    /// same GPU can map (CUDA IPC), for `run_into_ring`. `None`: this backend keeps no output
    /// on a device (the CPU).
    fn device_ring(&self, _slots: u32, _slot_bytes: usize) -> Option<Result<Arc<dyn DeviceRing>>> {
        None
    }

    /// Like `run`, but the output tensor goes to slot `slot` of `ring` (device memory) and
    /// never to the host: the returned tensor has the shape and dtype, and no data.
    fn run_into_ring(
        &self,
        _images: &[PreparedImage],
        _plan: &MixPlan,
        _spec: &PipelineSpec,
        _ring: &dyn DeviceRing,
        _slot: u32,
    ) -> Result<BatchOutput> {
        Err(Error::Backend(format!(
            "{} cannot write batches to device memory",
            self.device()
        )))
    }
}

/// Device memory shared with a trainer on the same GPU (see `BatchOps::device_ring`).
pub trait DeviceRing: Send + Sync {
    /// The CUDA IPC memory handle of the whole ring (64 bytes).
    fn ipc_handle(&self) -> Vec<u8>;
    /// The device's ordinal.
    fn device_ordinal(&self) -> i32;
    fn slot_bytes(&self) -> usize;
    fn slots(&self) -> u32;
    /// For the backend that made it, to reach its own type.
    fn as_any(&self) -> &dyn std::any::Any;
}

pub struct BatchOutput {
    pub tensor: Tensor,
    pub stats: BatchStats,
    pub resize: Duration,
    /// Mixing, normalisation and statistics (fused on the CPU).
    pub mix_normalize: Duration,
    /// Statistics, when a backend computes them separately.
    pub stats_time: Duration,
}

/// Which CPU resize implementation the CPU batch ops use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CpuResize {
    /// The Pillow-exact reference, the arithmetic the GPU kernel copies: CPU and GPU batches
    /// are then identical byte for byte.
    #[default]
    Reference,
    /// fast_image_resize (SIMD); within one level of the reference; about 2x faster per image
    /// (0.15 vs 0.31 ms), under 10 % faster over the whole CPU batch stage.
    Fast,
}

/// Batch ops on the CPU, parallel over images.
#[derive(Debug, Default, Clone)]
pub struct CpuBatchOps {
    pub resize: CpuResize,
    /// The resized images' buffer and output tensors given back (`BatchOps::recycle`).
    pub buffers: Arc<BufferPool>,
}

/// Output tensor size in bytes for `n` images.
pub fn tensor_bytes(spec: &PipelineSpec, n: usize) -> usize {
    tensor_shape(spec, n).iter().product::<usize>() * spec.output.dtype.size_bytes()
}

/// Output tensor shape for `n` images.
pub fn tensor_shape(spec: &PipelineSpec, n: usize) -> [usize; 4] {
    let (h, w) = (spec.size.height as usize, spec.size.width as usize);
    match spec.output.layout {
        Layout::Nchw => [n, 3, h, w],
        Layout::Nhwc => [n, h, w, 3],
    }
}

impl CpuBatchOps {
    /// CPU batch ops with the given resize implementation.
    pub fn new(resize: CpuResize) -> Self {
        CpuBatchOps {
            resize,
            ..Default::default()
        }
    }

    /// Resizes every prepared image into one contiguous HWC u8 batch.
    pub fn resize_batch(
        &self,
        images: &[PreparedImage],
        spec: &PipelineSpec,
        pool: &ThreadPool,
    ) -> Vec<u8> {
        let (w, h) = (spec.size.width, spec.size.height);
        let img_len = w as usize * h as usize * 3;
        // Every byte is written below (one whole image per chunk), so a reused buffer's old
        // contents never show.
        let mut out = self.buffers.take(images.len() * img_len);
        pool.install(|| {
            out.par_chunks_mut(img_len.max(1))
                .zip(images.par_iter())
                .for_each_init(FastResizer::default, |fast, (dst, im)| {
                    match self.resize {
                        CpuResize::Fast => fast.resize_into(&im.region, im.crop, w, h, dst),
                        CpuResize::Reference => {
                            resize_u8_reference_into(&im.region, im.crop, w, h, dst)
                        }
                    }
                    if im.flip {
                        flip_rows(dst, w as usize);
                    }
                })
        });
        out
    }
}

fn flip_rows(img: &mut [u8], width: usize) {
    for row in img.chunks_exact_mut(width * 3) {
        for x in 0..width / 2 {
            let (a, b) = (x * 3, (width - 1 - x) * 3);
            for c in 0..3 {
                row.swap(a + c, b + c);
            }
        }
    }
}

/// Mixes and normalises a contiguous HWC u8 batch into the output tensor (CPU), and
/// computes its statistics.
pub fn mix_normalize_batch(
    resized: &[u8],
    plan: &MixPlan,
    spec: &PipelineSpec,
    pool: &ThreadPool,
) -> (Tensor, BatchStats) {
    let mut data = vec![0u8; tensor_bytes(spec, plan.len())];
    let stats = mix_normalize_batch_to(resized, plan, spec, pool, &mut data);
    let tensor = Tensor {
        data,
        shape: tensor_shape(spec, plan.len()),
        dtype: spec.output.dtype,
        layout: spec.output.layout,
    };
    (tensor, stats)
}

/// [`mix_normalize_batch`] into `out`, exactly the tensor's length (`tensor_bytes`); every
/// byte is written, whatever it held.
///
/// # Panics
/// If `out` has another length (a caller's bug).
pub fn mix_normalize_batch_to(
    resized: &[u8],
    plan: &MixPlan,
    spec: &PipelineSpec,
    pool: &ThreadPool,
    out: &mut [u8],
) -> BatchStats {
    let n = plan.len();
    let (w, h) = (spec.size.width, spec.size.height);
    let hw = w as usize * h as usize;
    let (dtype, layout) = (spec.output.dtype, spec.output.layout);
    let out_img = hw * 3 * dtype.size_bytes();
    assert_eq!(out.len(), n * out_img, "output buffer size");
    let norm = NormalizeCoeffs::new(&spec.normalize);
    let (sums, stats) = pool.install(|| {
        let sums: Vec<_> = out
            .par_chunks_mut(out_img.max(1))
            .enumerate()
            .map(|(i, img)| mix_normalize_image(resized, h, w, plan, i, &norm, dtype, layout, img))
            .collect();
        let stats = combine_stats(&sums, hw, |mean| {
            out.par_chunks(out_img.max(1))
                .map(|img| abs_dev_sums(img, hw, dtype, layout, mean))
                .collect()
        });
        (sums, stats)
    });
    debug_assert_eq!(sums.len(), n);
    stats
}

impl BatchOps for CpuBatchOps {
    fn device(&self) -> String {
        "cpu".into()
    }

    fn recycle(&self, buf: Vec<u8>) {
        self.buffers.give(buf);
    }

    fn release_idle_memory(&self) {
        self.buffers.clear();
    }

    fn run(
        &self,
        images: &[PreparedImage],
        plan: &MixPlan,
        spec: &PipelineSpec,
        pool: &ThreadPool,
    ) -> Result<BatchOutput> {
        let mut data = self.buffers.take(tensor_bytes(spec, plan.len()));
        let mut done = self.run_cpu(images, plan, spec, pool, &mut data)?;
        done.tensor.data = data;
        Ok(done)
    }

    fn run_into_host(
        &self,
        images: &[PreparedImage],
        plan: &MixPlan,
        spec: &PipelineSpec,
        pool: &ThreadPool,
        out: &mut [u8],
    ) -> Result<BatchOutput> {
        self.run_cpu(images, plan, spec, pool, out)
    }
}

impl CpuBatchOps {
    /// The CPU batch ops into `out` (the tensor's length); the returned tensor has no data.
    fn run_cpu(
        &self,
        images: &[PreparedImage],
        plan: &MixPlan,
        spec: &PipelineSpec,
        pool: &ThreadPool,
        out: &mut [u8],
    ) -> Result<BatchOutput> {
        if images.iter().any(|im| im.deferred.is_some()) {
            // Left for a device decoder that is not here (or gave up): decode them now.
            let mut owned = images.to_vec();
            let failed: Vec<SampleError> = pool.install(|| {
                owned
                    .par_iter_mut()
                    .filter_map(|im| im.decode_deferred_on_cpu().err())
                    .collect()
            });
            if !failed.is_empty() {
                return Err(Error::DeferredImagesFailed(failed));
            }
            return self.run_cpu(&owned, plan, spec, pool, out);
        }
        let t0 = Instant::now();
        let resized = self.resize_batch(images, spec, pool);
        let t1 = Instant::now();
        let stats = mix_normalize_batch_to(&resized, plan, spec, pool, out);
        self.buffers.give(resized);
        let t2 = Instant::now();
        Ok(BatchOutput {
            tensor: Tensor {
                data: Vec::new(),
                shape: tensor_shape(spec, plan.len()),
                dtype: spec.output.dtype,
                layout: spec.output.layout,
            },
            stats,
            resize: t1 - t0,
            mix_normalize: t2 - t1,
            stats_time: Duration::ZERO,
        })
    }
}

/// The per-image stage of an image `dec` takes: only its header is read; the crop, flip and
/// colour draws use the header's size (equal to the decoded size, so they are the CPU path's
/// draws). Gives the bytes back when the decoder does not take the image; a header the parser
/// rejects also stays with the CPU decoder, which judges it.
#[allow(clippy::too_many_arguments)]
fn defer_image(
    spec: &PipelineSpec,
    limits: &DecodeLimits,
    seed: u64,
    epoch: u64,
    id: u64,
    label: i64,
    name: &str,
    bytes: Vec<u8>,
    dec: &dyn DeviceDecoder,
) -> std::result::Result<PreparedImage, Vec<u8>> {
    let Ok(info) = crate::decode::jpeg_info(&bytes) else {
        return Err(bytes);
    };
    let within_limits = u64::from(info.width) * u64::from(info.height) <= limits.max_pixels
        && bytes.len() as u64 <= limits.max_file_bytes;
    if !within_limits || !dec.takes(&info, id) {
        return Err(bytes);
    }
    let plan = ImagePlan::draw(spec, seed, epoch, id, info.width, info.height);
    let region = read_region(
        info.width,
        info.height,
        plan.crop,
        spec.size.width,
        spec.size.height,
    );
    Ok(PreparedImage {
        sample_id: id,
        label,
        region: RgbImage::new(0, 0),
        crop: plan.crop.relative_to(region.0, region.1),
        flip: plan.flip,
        deferred: Some(Box::new(DeferredDecode {
            bytes,
            source_name: name.to_string(),
            info,
            region,
            color: plan.color,
            limits: *limits,
        })),
        warning: None,
    })
}

/// What a sample source gives for one id: the sample's name, its label, its encoded bytes.
pub type SampleRead = (String, i64, std::result::Result<Vec<u8>, SampleErrorKind>);

/// The per-image stage over `ids` in parallel on `pool`: `source(id)` gives the sample's
/// name, label and encoded bytes. Results keep the order of `ids`.
#[allow(clippy::type_complexity)]
pub fn prepare_images<F>(
    spec: &PipelineSpec,
    limits: &DecodeLimits,
    pool: &ThreadPool,
    seed: u64,
    epoch: u64,
    ids: &[u64],
    source: F,
) -> (
    Vec<std::result::Result<PreparedImage, SampleError>>,
    StageTimings,
)
where
    F: Fn(u64) -> SampleRead + Sync,
{
    prepare_images_with(spec, limits, pool, seed, epoch, ids, source, None)
}

/// `prepare_images`, leaving to `decoder` (a GPU JPEG decoder) the images it takes: those
/// are only read and header-parsed here, and their random decisions drawn from the header's
/// size, which equals the decoded size (so the draws are the same as on the CPU path).
#[allow(clippy::type_complexity, clippy::too_many_arguments)]
pub fn prepare_images_with<F>(
    spec: &PipelineSpec,
    limits: &DecodeLimits,
    pool: &ThreadPool,
    seed: u64,
    epoch: u64,
    ids: &[u64],
    source: F,
    decoder: Option<&dyn DeviceDecoder>,
) -> (
    Vec<std::result::Result<PreparedImage, SampleError>>,
    StageTimings,
)
where
    F: Fn(u64) -> SampleRead + Sync,
{
    let t0 = Instant::now();
    let results: Vec<_> = pool.install(|| {
        ids.par_iter()
            .map(|&id| {
                let mut t = (Duration::ZERO, Duration::ZERO);
                let r0 = Instant::now();
                let (name, label, bytes) = source(id);
                let fail = |kind| SampleError {
                    sample_id: id,
                    source_name: name.clone(),
                    kind,
                };
                let bytes = match bytes {
                    Ok(b) => b,
                    Err(k) => return (Err(fail(k)), r0.elapsed(), t, false),
                };
                let read = r0.elapsed();
                let bytes = match decoder {
                    Some(dec) => {
                        match defer_image(spec, limits, seed, epoch, id, label, &name, bytes, dec) {
                            Ok(image) => return (Ok(image), read, t, true),
                            Err(bytes) => bytes,
                        }
                    }
                    None => bytes,
                };
                let res = prepare_image(
                    &bytes,
                    limits,
                    spec,
                    |w, h| ImagePlan::draw(spec, seed, epoch, id, w, h),
                    &mut t,
                );
                let res = res
                    .map(|(region, crop, flip, damage)| PreparedImage {
                        sample_id: id,
                        label,
                        region,
                        crop,
                        flip,
                        deferred: None,
                        warning: damage.map(&fail),
                    })
                    .map_err(fail);
                (res, read, t, false)
            })
            .collect()
    });
    let mut timings = StageTimings::default();
    let mut out = Vec::with_capacity(results.len());
    let mut cpu_decoded = 0;
    for (r, read, (decode, color), deferred) in results {
        timings.read += read;
        timings.decode += decode;
        timings.color += color;
        cpu_decoded += usize::from(!deferred);
        out.push(r);
    }
    timings.per_image_wall = t0.elapsed();
    if let Some(dec) = decoder {
        dec.observe_cpu(cpu_decoded, timings.per_image_wall);
    }
    (out, timings)
}

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
            self.ops.device_decoder(),
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
        self.finish_batch(self.prepare_batch(seed, epoch, index, mix_key, ids)?)
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

    /// The batch stage: mixing plan, batch ops, labels and targets.
    pub fn finish_batch(&self, prepared: PreparedBatch) -> Result<Batch> {
        finish_batch(&self.spec, self.ops.as_ref(), &self.pool, prepared)
    }

    /// `batch`, with the output tensor written to slot `slot` of a device ring.
    #[allow(clippy::too_many_arguments)]
    pub fn batch_into_ring(
        &self,
        seed: u64,
        epoch: u64,
        index: u64,
        mix_key: u64,
        ids: &[u64],
        ring: &dyn DeviceRing,
        slot: u32,
    ) -> Result<Batch> {
        let prepared = self.prepare_batch(seed, epoch, index, mix_key, ids)?;
        finish_batch_to(
            &self.spec,
            self.ops.as_ref(),
            &self.pool,
            prepared,
            OutputTo::DeviceRing(ring, slot),
        )
    }

    /// `batch`, with the output tensor written to the front of `out` (a shared-memory slot,
    /// say) instead of a new buffer: the batch's tensor has the shape and dtype, and no data.
    /// Fails when the tensor does not fit.
    pub fn batch_into_host(
        &self,
        seed: u64,
        epoch: u64,
        index: u64,
        mix_key: u64,
        ids: &[u64],
        out: &mut [u8],
    ) -> Result<Batch> {
        let prepared = self.prepare_batch(seed, epoch, index, mix_key, ids)?;
        finish_batch_to(
            &self.spec,
            self.ops.as_ref(),
            &self.pool,
            prepared,
            OutputTo::Host(out),
        )
    }
}

/// Where a batch's output tensor goes.
pub enum OutputTo<'a> {
    /// A new `Vec` in `Batch::tensor.data`.
    Vec,
    /// Slot `u32` of a device ring (CUDA IPC); the batch's tensor has no data.
    DeviceRing(&'a dyn DeviceRing, u32),
    /// The front of this host buffer (a shared-memory slot); the batch's tensor has no data.
    Host(&'a mut [u8]),
}

/// The batch stage of a prepared batch under `spec`, with `ops` on `pool`.
pub fn finish_batch(
    spec: &PipelineSpec,
    ops: &dyn BatchOps,
    pool: &ThreadPool,
    prepared: PreparedBatch,
) -> Result<Batch> {
    finish_batch_to(spec, ops, pool, prepared, OutputTo::Vec)
}

/// `finish_batch`, with the tensor written to `to`.
pub fn finish_batch_to(
    spec: &PipelineSpec,
    ops: &dyn BatchOps,
    pool: &ThreadPool,
    prepared: PreparedBatch,
    mut to: OutputTo<'_>,
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
    timings.resize = out.resize;
    timings.mix_normalize = out.mix_normalize;
    // Percentiles from the output itself (host memory; a CUDA IPC batch has none here), so
    // every backend reports the same figures for the same bytes.
    let t_percentiles = Instant::now();
    let mut stats = out.stats;
    let written: &[u8] = match &to {
        OutputTo::Host(buf) => &buf[..tensor_bytes(spec, images.len())],
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
    timings.total = t0.elapsed();
    Ok(Batch {
        epoch,
        index,
        tensor: out.tensor,
        labels_a,
        labels_b,
        lam: plan.lam,
        soft_targets: soft,
        sample_ids: images.iter().map(|p| p.sample_id).collect(),
        warnings: images.iter().filter_map(|p| p.warning.clone()).collect(),
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
    to: &mut OutputTo<'_>,
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
        }
    } else {
        match to {
            OutputTo::Vec => ops.run(images, &plan, spec, pool)?,
            OutputTo::DeviceRing(ring, slot) => {
                ops.run_into_ring(images, &plan, spec, *ring, *slot)?
            }
            OutputTo::Host(buf) => {
                let len = tensor_bytes(spec, n);
                let Some(out) = buf.get_mut(..len) else {
                    return Err(Error::Backend(format!(
                        "a {len}-byte batch does not fit the {}-byte output buffer",
                        buf.len()
                    )));
                };
                ops.run_into_host(images, &plan, spec, pool, out)?
            }
        }
    };
    Ok((plan, out))
}
