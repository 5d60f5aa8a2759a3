//! The per-image stage: read, decode (or leave to a device decoder), crop region, colour
//! jitter, one image per task on the worker pool.

use std::time::{Duration, Instant};

use rayon::prelude::*;
use rayon::ThreadPool;

use super::backend::BatchOps;
use super::cpu::CpuResize;
use super::deferred::{DeferredDecode, DeviceDecoder};
use crate::batch::{DecodeTally, StageTimings};
use crate::buffers::recycle_read_buffer;
use crate::decode::{
    decode_image_area, recycle_decode_buffer, DecodeLimits, RegionHeader, RegionRequest, DCT_DENOMS,
};
use crate::error::{SampleError, SampleErrorKind};
use crate::image::RgbImage;
use crate::ops::color::{apply_color_jitter, ColorFactors};
use crate::ops::crop::{choose_crop, CropBox};
use crate::ops::resize::{read_region, ResizeWeights};
use crate::rng::{keyed_rng, Purpose};
use crate::spec::{DamagedPolicy, PipelineSpec};

/// An image after the per-image stage: the region the resize will read, already colour
/// jittered, and where in it the crop box lies; or, when the per-image stage resized it
/// ([`PerImageWork::resize`]), the image at the output size with a crop box of all of it.
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
    /// The resize weights for `crop`, when the batch ops asked the per-image stage for them
    /// ([`PerImageWork::weights`]).
    pub weights: Option<Box<ResizeWeights>>,
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
pub fn cut_region(img: RgbImage, region: (u32, u32, u32, u32)) -> RgbImage {
    img.into_region(region)
}

/// What the batch ops leave to the per-image stage besides reading, decoding and colour.
#[derive(Clone, Copy, Default)]
pub struct PerImageWork<'a> {
    /// A device JPEG decoder (GPU decoding): the images it takes are only read and
    /// header-parsed here.
    pub decoder: Option<&'a dyn DeviceDecoder>,
    /// Resize each image to the output size here, with this implementation (the CPU batch
    /// ops ask for it). The region is resized while it is still in cache and its buffer is
    /// reused for the next decode, instead of every region of the batch (up to 11 MB each
    /// for large photos) waiting in fresh memory for the batch stage. Same bytes either way.
    pub resize: Option<CpuResize>,
    /// Compute each image's resize weights here (a GPU backend asks for them): in parallel,
    /// off the thread that plans the batch.
    pub weights: bool,
}

impl<'a> PerImageWork<'a> {
    /// What `ops` leaves to the per-image stage.
    pub fn of(ops: &'a dyn BatchOps) -> Self {
        PerImageWork {
            decoder: ops.device_decoder(),
            resize: ops.per_image_resize(),
            weights: ops.per_image_weights(),
        }
    }
}

/// Time one image spent in each per-image step, and how it was decoded.
#[derive(Debug, Clone, Copy, Default)]
pub struct ImageTimes {
    pub decode: Duration,
    pub color: Duration,
    pub resize: Duration,
    pub decoded: DecodeTally,
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

/// Decodes the part of `bytes` the crop needs and runs the per-image CPU ops under
/// `plan_for(width, height)`; then, with `resize`, resizes it to the output size (the crop
/// box is then the whole result). The region cut is `read_region`'s (the crop box plus the
/// resize filter's support) whichever decoder ran, so the pixels are those of a whole decode.
pub fn prepare_image(
    bytes: &[u8],
    limits: &DecodeLimits,
    spec: &PipelineSpec,
    plan_for: impl Fn(u32, u32) -> ImagePlan,
    resize: Option<CpuResize>,
    timings: &mut ImageTimes,
) -> Result<PreparedRegion, SampleErrorKind> {
    let t0 = Instant::now();
    let (sw, sh) = (spec.size.width, spec.size.height);
    let mut planned = None;
    // Asked again (max_denom 1) when libjpeg-turbo declines and zune-jpeg decodes whole: the
    // last answer is the one the region was decoded at.
    let mut region_for = |header: RegionHeader| {
        let (w, h) = (header.width, header.height);
        let plan = plan_for(w, h);
        let denom = match spec.dct_scaling {
            true => dct_denom(plan.crop, sw, sh, header.max_denom),
            false => 1,
        };
        let crop = plan.crop.scaled_down(denom);
        let area = read_region(w.div_ceil(denom), h.div_ceil(denom), crop, sw, sh);
        planned = Some((plan, crop, area, header, denom));
        RegionRequest { denom, area }
    };
    let accept = spec.on_damaged == DamagedPolicy::Accept;
    let (decoded, damage) = decode_image_area(bytes, limits, accept, &mut region_for)?;
    let t1 = Instant::now();
    let Some((plan, crop, area, header, denom)) = planned else {
        return Err(SampleErrorKind::Decode("no region was planned".into()));
    };
    // Only libjpeg-turbo offers scaling, and it asks once: its header says it ran.
    let by_region = header.max_denom > 1;
    timings.decoded = DecodeTally {
        region: u32::from(by_region),
        scaled: u32::from(denom > 1),
        progressive: u32::from(by_region && header.progressive),
        whole: u32::from(!by_region),
        device: 0,
    };
    // The resize reads only the region, inside the columns decoded around it, so those stay
    // (cutting the region out was 1.7 % of a one-core run); contrast's mean is the region's,
    // and a region that waits for its batch takes only its own memory: those are cut.
    let (mut region, origin) = if resize.is_none() || plan.color.contrast != 1.0 {
        (decoded.into_inner(), (area.0, area.1))
    } else {
        let (x, y, _, _) = decoded.inner;
        (decoded.image, (area.0 - x, area.1 - y))
    };
    apply_color_jitter(&mut region, &plan.color);
    let crop = crop.relative_to(origin.0, origin.1);
    let t2 = Instant::now();
    timings.decode += t1 - t0;
    timings.color += t2 - t1;
    let Some(kind) = resize else {
        // The region waits for its batch: no more memory than its pixels.
        if region.data.capacity() > 2 * region.data.len() {
            region.data.shrink_to_fit();
        }
        return Ok((region, crop, plan.flip, damage));
    };
    let resized = resize_and_recycle(region, crop, kind, sw, sh)?;
    timings.resize += t2.elapsed();
    Ok((resized, CropBox::full(sw, sh), plan.flip, damage))
}

/// `crop` of `region` resized to `w x h` with `kind`; the region's buffer goes back for the
/// thread's next decode.
fn resize_and_recycle(
    region: RgbImage,
    crop: CropBox,
    kind: CpuResize,
    w: u32,
    h: u32,
) -> Result<RgbImage, SampleErrorKind> {
    // Given back by the batch stage once copied into the batch (`finish_batch`).
    let mut out = crate::buffers::take_buffer_to_overwrite(w as usize * h as usize * 3);
    kind.resize_one(&region, crop, w, h, &mut out);
    recycle_decode_buffer(region.data);
    RgbImage::from_vec(w, h, out)
        .ok_or_else(|| SampleErrorKind::Decode("resized image size".into()))
}

/// The largest DCT scaling denominator (of those `max_denom` allows) after which `crop` is
/// still at least the output size on each side; 1 when none is.
pub fn dct_denom(crop: CropBox, out_w: u32, out_h: u32, max_denom: u32) -> u32 {
    DCT_DENOMS
        .into_iter()
        .find(|&d| {
            d <= max_denom
                && crop.width() >= (d * out_w) as f32
                && crop.height() >= (d * out_h) as f32
        })
        .unwrap_or(1)
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
        weights: None,
    })
}

/// `image` with its resize weights when `work` asks for them: from its region's size (a
/// deferred image's region, which the device decodes) and its crop.
fn with_weights(
    mut image: PreparedImage,
    spec: &PipelineSpec,
    work: PerImageWork<'_>,
) -> PreparedImage {
    if work.weights {
        let (w, h) = match image.deferred.as_deref() {
            Some(d) => (d.region.2, d.region.3),
            None => (image.region.width, image.region.height),
        };
        let (ow, oh) = (spec.size.width, spec.size.height);
        image.weights = Some(Box::new(ResizeWeights::new(w, h, image.crop, ow, oh)));
    }
    image
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
    prepare_images_with(
        spec,
        limits,
        pool,
        seed,
        epoch,
        ids,
        source,
        PerImageWork::default(),
    )
}

/// `prepare_images`, doing also what `work` asks. A device decoder's images (GPU JPEG
/// decoding) are only read and header-parsed here, and their random decisions drawn from the
/// header's size, which equals the decoded size (so the draws are the same as on the CPU path).
#[allow(clippy::type_complexity, clippy::too_many_arguments)]
pub fn prepare_images_with<F>(
    spec: &PipelineSpec,
    limits: &DecodeLimits,
    pool: &ThreadPool,
    seed: u64,
    epoch: u64,
    ids: &[u64],
    source: F,
    work: PerImageWork<'_>,
) -> (
    Vec<std::result::Result<PreparedImage, SampleError>>,
    StageTimings,
)
where
    F: Fn(u64) -> SampleRead + Sync,
{
    let t0 = Instant::now();
    let decoder = work.decoder;
    let results: Vec<_> = pool.install(|| {
        ids.par_iter()
            .map(|&id| {
                let mut t = ImageTimes::default();
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
                            Ok(image) => {
                                t.decoded.device = 1;
                                return (Ok(with_weights(image, spec, work)), read, t, true);
                            }
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
                    work.resize,
                    &mut t,
                );
                recycle_read_buffer(bytes);
                let res = res
                    .map(|(region, crop, flip, damage)| PreparedImage {
                        sample_id: id,
                        label,
                        region,
                        crop,
                        flip,
                        deferred: None,
                        warning: damage.map(&fail),
                        weights: None,
                    })
                    .map(|image| with_weights(image, spec, work))
                    .map_err(fail);
                (res, read, t, false)
            })
            .collect()
    });
    let mut timings = StageTimings::default();
    let mut out = Vec::with_capacity(results.len());
    let mut cpu_decoded = 0;
    for (r, read, t, deferred) in results {
        timings.read += read;
        timings.decode += t.decode;
        timings.color += t.color;
        timings.resize += t.resize;
        timings.decoded.add(&t.decoded);
        cpu_decoded += usize::from(!deferred);
        out.push(r);
    }
    timings.per_image_wall = t0.elapsed();
    if let Some(dec) = decoder {
        dec.observe_cpu(cpu_decoded, timings.per_image_wall);
    }
    (out, timings)
}
