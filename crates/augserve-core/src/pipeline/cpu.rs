//! Batch ops on the CPU: resize (flip fused), mix + normalise, statistics, parallel over
//! images. The reference the GPU backend matches.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rayon::prelude::*;
use rayon::ThreadPool;

use super::backend::{tensor_bytes, tensor_shape, BatchOps, BatchOutput, Destination};
use super::prepare::PreparedImage;
use crate::batch::Tensor;
use crate::buffers::BufferPool;
use crate::error::{Error, Result, SampleError};
use crate::image::{copy_flipped, flip_rows, RgbImage};
use crate::ops::crop::CropBox;
use crate::ops::mix::{
    keeps_image, kept_image_sums, mix_normalize_image, ImageSums, MixPlan, NormalizeCoeffs,
};
use crate::ops::resize::{resize_u8_reference_into, FastResizer};
use crate::ops::stats::{abs_dev_sums, combine_stats, BatchStats};
use crate::spec::{DType, Layout, PipelineSpec};

/// Which CPU resize implementation the CPU batch ops use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CpuResize {
    /// The Pillow-exact reference, the arithmetic the GPU kernel copies: CPU and GPU batches
    /// are then identical byte for byte.
    #[default]
    Reference,
    /// fast_image_resize (SIMD); within one level of the reference. Once 2x faster per image
    /// (0.15 vs 0.31 ms); since the reference's AVX2 and AVX-512 passes, slower (190 against
    /// 124-176 us for a 400x330 crop, criterion, 2026-12-04). Kept for comparison.
    Fast,
}

impl CpuResize {
    /// Resizes the box `bx` of `src` to `w x h` into `dst` (HWC, `w * h * 3` bytes).
    pub fn resize_one(self, src: &RgbImage, bx: CropBox, w: u32, h: u32, dst: &mut [u8]) {
        match self {
            CpuResize::Fast => {
                FAST_RESIZER.with(|f| f.borrow_mut().resize_into(src, bx, w, h, dst))
            }
            CpuResize::Reference => resize_u8_reference_into(src, bx, w, h, dst),
        }
    }
}

thread_local! {
    /// fast_image_resize keeps scratch buffers between calls: one resizer per worker thread.
    static FAST_RESIZER: std::cell::RefCell<FastResizer> = std::cell::RefCell::new(FastResizer::default());
}

/// Batch ops on the CPU, parallel over images.
#[derive(Debug, Default, Clone)]
pub struct CpuBatchOps {
    pub resize: CpuResize,
    /// The resized images' buffer and output tensors given back (`BatchOps::recycle`).
    pub buffers: Arc<BufferPool>,
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
        let img_len = spec.size.width as usize * spec.size.height as usize * 3;
        let mut out = self.buffers.take(images.len() * img_len);
        self.resize_batch_into(images, spec, pool, &mut out);
        out
    }

    /// [`Self::resize_batch`] into `out` (exactly the batch's HWC u8 length).
    pub fn resize_batch_into(
        &self,
        images: &[PreparedImage],
        spec: &PipelineSpec,
        pool: &ThreadPool,
        out: &mut [u8],
    ) {
        self.resize_each_into(images, spec, pool, out, |_| ());
    }

    /// [`Self::resize_batch_into`], calling `then` on each image as soon as it is written
    /// (while it is in cache); its results in batch order.
    fn resize_each_into<T: Send>(
        &self,
        images: &[PreparedImage],
        spec: &PipelineSpec,
        pool: &ThreadPool,
        out: &mut [u8],
        then: impl Fn(&[u8]) -> T + Sync,
    ) -> Vec<T> {
        let (w, h) = (spec.size.width, spec.size.height);
        let img_len = w as usize * h as usize * 3;
        // Every byte is written below (one whole image per chunk), so a reused buffer's old
        // contents never show.
        // Images the per-image stage resized already (the output size, the whole image as
        // the crop) are copied.
        pool.install(|| {
            out.par_chunks_mut(img_len.max(1))
                .zip(images.par_iter())
                .map(|(dst, im)| {
                    let resized = (im.region.width, im.region.height) == (w, h)
                        && im.crop == CropBox::full(w, h);
                    match (resized, im.flip) {
                        (true, false) => dst.copy_from_slice(&im.region.data),
                        // The flip fused into the copy: one pass instead of two.
                        (true, true) => copy_flipped(&im.region.data, dst, w as usize),
                        (false, flip) => {
                            self.resize.resize_one(&im.region, im.crop, w, h, dst);
                            if flip {
                                flip_rows(dst, w as usize);
                            }
                        }
                    }
                    then(dst)
                })
                .collect()
        })
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

    fn per_image_resize(&self) -> Option<CpuResize> {
        Some(self.resize)
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
        to: Destination<'_>,
    ) -> Result<BatchOutput> {
        match to {
            Destination::Owned => {
                let mut data = self.buffers.take(tensor_bytes(spec, plan.len()));
                let mut done = self.run_cpu(images, plan, spec, pool, &mut data)?;
                done.tensor.data = data;
                Ok(done)
            }
            Destination::Host(out) => self.run_cpu(images, plan, spec, pool, out),
            Destination::Device { .. } => Err(Error::Backend(
                "the CPU batch ops cannot write to device memory".into(),
            )),
        }
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
        let (t1, stats) = if output_is_resized(plan, spec) {
            // uint8 NHWC, nothing mixed: the output is the resized batch, so the resize
            // writes it in place and only the statistics read it (no second pass writing
            // the whole tensor again).
            // Each image's sums are taken as it is written, while it is in cache (a pass
            // over the whole batch afterwards read it from memory again).
            let (w, h) = (spec.size.width, spec.size.height);
            let sums =
                self.resize_each_into(images, spec, pool, out, |im| kept_image_sums(im, h, w));
            let t1 = Instant::now();
            (t1, kept_batch_stats(out, &sums, spec, pool))
        } else {
            let resized = self.resize_batch(images, spec, pool);
            let t1 = Instant::now();
            let stats = mix_normalize_batch_to(&resized, plan, spec, pool, out);
            self.buffers.give(resized);
            (t1, stats)
        };
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
            device_busy: None,
            host_copy_bytes: None,
        })
    }
}

/// Whether the output tensor is the resized batch itself: uint8 NHWC, every image kept.
fn output_is_resized(plan: &MixPlan, spec: &PipelineSpec) -> bool {
    spec.output.dtype == DType::Uint8
        && spec.output.layout == Layout::Nhwc
        && (0..plan.len()).all(|i| keeps_image(plan, i))
}

/// The statistics of a uint8 NHWC batch written unchanged, from its images' sums
/// ([`kept_image_sums`]): the same figures, bit for bit, as `mix_normalize_batch_to` gives
/// for it.
fn kept_batch_stats(
    out: &[u8],
    sums: &[ImageSums],
    spec: &PipelineSpec,
    pool: &ThreadPool,
) -> BatchStats {
    let hw = spec.size.width as usize * spec.size.height as usize;
    let (img, n) = (hw * 3, sums.len());
    pool.install(|| {
        combine_stats(sums, hw, |mean| {
            out.par_chunks(img.max(1))
                .take(n)
                .map(|im| abs_dev_sums(im, hw, DType::Uint8, Layout::Nhwc, mean))
                .collect()
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pixel `(x, y)` of the mirror is pixel `(width - 1 - x, y)` of the image.
    fn mirrored_reference(img: &[u8], width: usize) -> Vec<u8> {
        let mut out = vec![0u8; img.len()];
        for (y, row) in img.chunks_exact(width * 3).enumerate() {
            for x in 0..width {
                let (d, s) = ((y * width + x) * 3, (width - 1 - x) * 3);
                out[d..d + 3].copy_from_slice(&row[s..s + 3]);
            }
        }
        out
    }

    #[test]
    fn flips_match_the_reference_for_odd_and_even_widths() {
        for (width, height) in [
            (1, 2),
            (2, 3),
            (5, 4),
            (6, 2),
            (11, 3),
            (224, 3),
            (7, 1),
            (301, 2),
        ] {
            let img: Vec<u8> = (0..width * height * 3)
                .map(|i| (i * 7 % 251) as u8)
                .collect();
            let want = mirrored_reference(&img, width);
            let mut in_place = img.clone();
            flip_rows(&mut in_place, width);
            assert_eq!(in_place, want, "flip_rows, width {width}");
            let mut copied = vec![0u8; img.len()];
            copy_flipped(&img, &mut copied, width);
            assert_eq!(copied, want, "copy_flipped, width {width}");
        }
    }
}
