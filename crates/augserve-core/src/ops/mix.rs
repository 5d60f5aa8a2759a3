//! Mixup / cutmix (timm's `Mixup`), fused with normalisation, layout and dtype conversion.
//!
//! Sample `i` is mixed with its partner `B-1-i` (timm flips the batch). Mixup blends whole
//! images with weight `lam`; cutmix pastes the partner's pixels inside a box and corrects
//! `lam` to the area actually kept. Labels: `a = label[i]`, `b = label[partner]`, target
//! `lam * onehot(a) + (1 - lam) * onehot(b)`.

use multiversion::multiversion;
use rand::Rng;
use rand_distr::{Beta, Distribution};

use crate::spec::{DType, EpochMix, Layout, MixMode, Normalize};

/// A cutmix box in output pixels: rows `[y0, y1)`, columns `[x0, x1)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CutBox {
    pub y0: u32,
    pub y1: u32,
    pub x0: u32,
    pub x1: u32,
}

impl CutBox {
    pub fn contains(&self, y: u32, x: u32) -> bool {
        y >= self.y0 && y < self.y1 && x >= self.x0 && x < self.x1
    }
    pub fn area(&self) -> u32 {
        (self.y1 - self.y0) * (self.x1 - self.x0)
    }
}

/// What to do to each sample of one batch.
#[derive(Debug, Clone, PartialEq)]
pub struct MixPlan {
    /// The sample mixed into sample i.
    pub partner: Vec<u32>,
    /// Weight of the sample's own image (after cutmix area correction).
    pub lam: Vec<f32>,
    /// `Some` for samples that get cutmix instead of mixup.
    pub cut: Vec<Option<CutBox>>,
}

impl MixPlan {
    /// No mixing: every sample keeps its own image.
    pub fn identity(batch: usize) -> MixPlan {
        MixPlan {
            partner: (0..batch as u32).collect(),
            lam: vec![1.0; batch],
            cut: vec![None; batch],
        }
    }

    pub fn len(&self) -> usize {
        self.lam.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lam.is_empty()
    }
}

/// Beta(alpha, alpha), sampled in f64: rand_distr's f32 Beta rounds about 2% of draws
/// to exactly 1.0 at alpha = 0.2, which would silently skip mixing.
fn beta<R: Rng>(rng: &mut R, alpha: f32) -> f32 {
    match Beta::new(f64::from(alpha), f64::from(alpha)) {
        Ok(d) => d.sample(rng) as f32,
        Err(_) => 1.0,
    }
}

/// One lambda and the cutmix choice, as timm's `_params_per_batch` / `_params_per_elem`.
fn draw_lam<R: Rng>(rng: &mut R, m: &EpochMix) -> (f32, bool) {
    if rng.random::<f32>() >= m.prob {
        return (1.0, false);
    }
    if m.mixup_alpha > 0.0 && m.cutmix_alpha > 0.0 {
        let use_cut = rng.random::<f32>() < m.switch_prob;
        let alpha = if use_cut {
            m.cutmix_alpha
        } else {
            m.mixup_alpha
        };
        (beta(rng, alpha), use_cut)
    } else if m.mixup_alpha > 0.0 {
        (beta(rng, m.mixup_alpha), false)
    } else if m.cutmix_alpha > 0.0 {
        (beta(rng, m.cutmix_alpha), true)
    } else {
        (1.0, false)
    }
}

/// timm's `rand_bbox` + `cutmix_bbox_and_lam(correct_lam=True)`.
pub fn cutmix_box<R: Rng>(rng: &mut R, lam: f32, height: u32, width: u32) -> (CutBox, f32) {
    let ratio = (1.0 - f64::from(lam)).max(0.0).sqrt();
    let cut_h = (f64::from(height) * ratio) as i64;
    let cut_w = (f64::from(width) * ratio) as i64;
    let cy = rng.random_range(0..i64::from(height));
    let cx = rng.random_range(0..i64::from(width));
    let clip = |v: i64, hi: u32| v.clamp(0, i64::from(hi)) as u32;
    let b = CutBox {
        y0: clip(cy - cut_h / 2, height),
        y1: clip(cy + cut_h / 2, height),
        x0: clip(cx - cut_w / 2, width),
        x1: clip(cx + cut_w / 2, width),
    };
    let lam = 1.0 - b.area() as f32 / (height * width) as f32;
    (b, lam)
}

/// Draws the mixing of a batch of `batch` images of `height x width`.
pub fn plan_mix<R: Rng>(
    rng: &mut R,
    m: &EpochMix,
    batch: usize,
    height: u32,
    width: u32,
) -> MixPlan {
    let mut plan = MixPlan::identity(batch);
    if batch < 2 {
        return plan;
    }
    for i in 0..batch {
        plan.partner[i] = (batch - 1 - i) as u32;
    }
    match m.mode {
        MixMode::Batch => {
            let (lam, use_cut) = draw_lam(rng, m);
            if lam == 1.0 {
                return plan;
            }
            if use_cut {
                let (b, lam) = cutmix_box(rng, lam, height, width);
                plan.lam.fill(lam);
                plan.cut.fill(Some(b));
            } else {
                plan.lam.fill(lam);
            }
        }
        MixMode::Elem => {
            for i in 0..batch {
                let (lam, use_cut) = draw_lam(rng, m);
                if lam != 1.0 && use_cut {
                    let (b, lam) = cutmix_box(rng, lam, height, width);
                    plan.lam[i] = lam;
                    plan.cut[i] = Some(b);
                } else {
                    plan.lam[i] = lam;
                }
            }
        }
        MixMode::Pair => {
            for i in 0..batch / 2 {
                let j = batch - 1 - i;
                let (lam, use_cut) = draw_lam(rng, m);
                if lam != 1.0 && use_cut {
                    let (b, lam) = cutmix_box(rng, lam, height, width);
                    plan.lam[i] = lam;
                    plan.lam[j] = lam;
                    plan.cut[i] = Some(b);
                    plan.cut[j] = Some(b);
                } else {
                    plan.lam[i] = lam;
                    plan.lam[j] = lam;
                }
            }
        }
    }
    plan
}

/// Per-channel affine map from a 0..255 pixel value to the normalised output.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NormalizeCoeffs {
    pub scale: [f32; 3],
    pub bias: [f32; 3],
}

impl NormalizeCoeffs {
    /// `(v / 255 - mean) / std = v * scale + bias`.
    pub fn new(n: &Normalize) -> Self {
        let mut scale = [0.0; 3];
        let mut bias = [0.0; 3];
        for c in 0..3 {
            scale[c] = 1.0 / (255.0 * n.std[c]);
            bias[c] = -n.mean[c] / n.std[c];
        }
        NormalizeCoeffs { scale, bias }
    }
}

/// The mixed pixel value before normalisation (0..255, fractional under mixup).
/// Written as `b + lam * (a - b)`-free plain form so the GPU kernel reproduces it exactly.
#[inline]
pub fn mix_value(own: u8, other: u8, lam: f32) -> f32 {
    lam * f32::from(own) + (1.0 - lam) * f32::from(other)
}

/// Per-image sums of the output values, per channel (for batch statistics).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ImageSums {
    pub sum: [f64; 3],
    pub sum_sq: [f64; 3],
    /// Values whose mixed pixel is 0 or 255 (at the ends of the byte range).
    pub clipped: [u64; 3],
}

/// How the pixels of one output row are made.
#[derive(Clone, Copy)]
enum RowMix {
    /// The sample's own pixels.
    Own,
    /// `mix_value(own, other, lam)` everywhere.
    Blend(f32),
    /// The partner's pixels in columns `[x0, x1)` (a cutmix box crossing this row).
    Cut(usize, usize),
}

/// `v.round().clamp(0.0, 255.0)` for a mixed pixel value `v` in `[0, 255]`, without the
/// libm call (`round` is not an instruction on baseline x86-64): truncate, then step up when
/// the fraction is at least one half (round half away from zero, as `f32::round`).
#[inline]
fn round_pixel(v: f32) -> f32 {
    let t = v.clamp(0.0, 255.0) as i32 as f32;
    if v.clamp(0.0, 255.0) - t >= 0.5 {
        t + 1.0
    } else {
        t
    }
}

/// Sum and sum of squares of `v`, in eight f64 lanes (exact enough that the variance
/// E[x^2] - E[x]^2 of a flat image stays ~0: f32 sums of squares would not). Lane `k` sums
/// elements `k, k + 8, ...`; the lanes are then added in order, and the tail after them, so
/// the AVX path and the scalar one give the same bits.
#[inline]
pub(crate) fn lane_sums(v: &[f32]) -> (f64, f64) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: the CPU has AVX, checked just above.
        return unsafe { lane_sums_avx(v) };
    }
    lane_sums_scalar(v)
}

/// [`lane_sums`] in plain Rust: the definition.
fn lane_sums_scalar(v: &[f32]) -> (f64, f64) {
    let (mut s, mut q) = ([0f64; 8], [0f64; 8]);
    let mut chunks = v.chunks_exact(8);
    for ch in &mut chunks {
        for k in 0..8 {
            let x = f64::from(ch[k]);
            s[k] += x;
            q[k] += x * x;
        }
    }
    finish_lane_sums(s, q, chunks.remainder())
}

fn finish_lane_sums(s: [f64; 8], q: [f64; 8], tail: &[f32]) -> (f64, f64) {
    let (mut sum, mut sq) = (0.0, 0.0);
    for k in 0..8 {
        sum += s[k];
        sq += q[k];
    }
    for &x in tail {
        sum += f64::from(x);
        sq += f64::from(x) * f64::from(x);
    }
    (sum, sq)
}

/// [`lane_sums`] in two AVX registers of four f64 lanes each (LLVM leaves the scalar
/// version's squares unvectorised).
///
/// # Safety
/// The CPU must support AVX.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
#[allow(unused_unsafe)] // the intrinsics are safe here from Rust 1.87 on, unsafe before
unsafe fn lane_sums_avx(v: &[f32]) -> (f64, f64) {
    use std::arch::x86_64::*;
    let mut chunks = v.chunks_exact(8);
    let (mut s, mut q) = ([0f64; 8], [0f64; 8]);
    // SAFETY: AVX is enabled on this function; the loads read 8 f32 of a chunk of 8, and
    // the stores write 4 f64 into arrays of 8 at offsets 0 and 4 (unaligned forms).
    unsafe {
        let (mut s0, mut s1, mut q0, mut q1) = (
            _mm256_setzero_pd(),
            _mm256_setzero_pd(),
            _mm256_setzero_pd(),
            _mm256_setzero_pd(),
        );
        for ch in &mut chunks {
            let x = _mm256_loadu_ps(ch.as_ptr());
            let lo = _mm256_cvtps_pd(_mm256_castps256_ps128(x));
            let hi = _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(x));
            s0 = _mm256_add_pd(s0, lo);
            s1 = _mm256_add_pd(s1, hi);
            q0 = _mm256_add_pd(q0, _mm256_mul_pd(lo, lo));
            q1 = _mm256_add_pd(q1, _mm256_mul_pd(hi, hi));
        }
        _mm256_storeu_pd(s.as_mut_ptr(), s0);
        _mm256_storeu_pd(s.as_mut_ptr().add(4), s1);
        _mm256_storeu_pd(q.as_mut_ptr(), q0);
        _mm256_storeu_pd(q.as_mut_ptr().add(4), q1);
    }
    finish_lane_sums(s, q, chunks.remainder())
}

/// Whether `plan` leaves image `i` as it is (no partner, or mixup with weight 1, no cut):
/// then a uint8 HWC output is the resized image, byte for byte.
pub fn keeps_image(plan: &MixPlan, i: usize) -> bool {
    plan.partner[i] as usize == i || (plan.lam[i] == 1.0 && plan.cut[i].is_none())
}

/// The statistics sums of one HWC u8 image written unchanged (uint8 NHWC output, no mixing):
/// what [`mix_normalize_image`] returns for it, without writing anything. Sums of whole pixel
/// values are exact in f64 (far below 2^53 for any output size allowed), so integer sums give
/// the float path's bits in any order.
#[multiversion(targets("x86_64+avx2", "x86_64+sse4.1"))]
pub fn kept_image_sums(image: &[u8], height: u32, width: u32) -> ImageSums {
    // Byte j of a 24-byte block (8 pixels) is channel j % 3: sums kept per byte position,
    // 24 lanes that vectorise (three AVX2 registers per sum, all nine held in registers),
    // and folded into channels at the end (a loop over 3-byte pixels did not vectorise).
    const LANES: usize = 24;
    // Blocks summed in u32 before they are added to the u64 totals: 255^2 x 4096 < 2^32.
    const RUN: usize = LANES * 4096;
    let len = height as usize * width as usize * 3;
    let (mut sum, mut sum_sq, mut clipped) = ([0u64; 3], [0u64; 3], [0u64; 3]);
    // Every run starts at channel 0: RUN is a multiple of 3.
    for run in image[..len.min(image.len())].chunks(RUN) {
        let (mut s, mut q, mut k) = ([0u32; LANES], [0u32; LANES], [0u32; LANES]);
        let mut blocks = run.chunks_exact(LANES);
        for block in &mut blocks {
            for j in 0..LANES {
                let v = u32::from(block[j]);
                s[j] += v;
                q[j] += v * v;
                k[j] += u32::from(v == 0 || v == 255);
            }
        }
        for j in 0..LANES {
            let c = j % 3;
            sum[c] += u64::from(s[j]);
            sum_sq[c] += u64::from(q[j]);
            clipped[c] += u64::from(k[j]);
        }
        for (j, &b) in blocks.remainder().iter().enumerate() {
            let (c, v) = (j % 3, u64::from(b));
            sum[c] += v;
            sum_sq[c] += v * v;
            clipped[c] += u64::from(b == 0 || b == 255);
        }
    }
    ImageSums {
        sum: sum.map(|v| v as f64),
        sum_sq: sum_sq.map(|v| v as f64),
        clipped,
    }
}

/// Mixes image `i` of a batch of HWC u8 images (`images`, contiguous) per `plan` and writes
/// it to `out` in `dtype` and `layout`. u8 output rounds the mixed value and is not
/// normalised. Returns the image's sums (of the values as written) for the statistics.
/// Works one channel of one row at a time, so every inner loop runs over a contiguous f32
/// slice (vectorised) and half conversion goes through `half`'s slice routines (F16C).
/// One long function on purpose: it is the CPU batch stage's hot loop, and `multiversion`
/// clones the whole body per target; helpers split out would run unvectorised.
#[allow(clippy::too_many_arguments)]
#[multiversion(targets("x86_64+avx2", "x86_64+sse4.1"))]
pub fn mix_normalize_image(
    images: &[u8],
    height: u32,
    width: u32,
    plan: &MixPlan,
    i: usize,
    norm: &NormalizeCoeffs,
    dtype: DType,
    layout: Layout,
    out: &mut [u8],
) -> ImageSums {
    use half::slice::HalfFloatSliceExt;
    let w = width as usize;
    let hw = height as usize * w;
    let img_len = hw * 3;
    let own = &images[i * img_len..(i + 1) * img_len];
    let j = plan.partner[i] as usize;
    let other = &images[j * img_len..(j + 1) * img_len];
    let (lam, cut) = if j == i {
        (1.0, None)
    } else {
        (plan.lam[i], plan.cut[i])
    };
    let mut mixed = vec![0f32; w];
    let mut vals = vec![0f32; w];
    let mut halfs = vec![half::f16::ZERO; w];
    let mut sums = ImageSums::default();
    let elem = dtype.size_bytes();
    for y in 0..height as usize {
        let mode = match cut {
            Some(b) if (y as u32) >= b.y0 && (y as u32) < b.y1 => {
                RowMix::Cut(b.x0 as usize, b.x1 as usize)
            }
            Some(_) => RowMix::Own,
            None if lam == 1.0 => RowMix::Own,
            None => RowMix::Blend(lam),
        };
        let r = y * w * 3..(y + 1) * w * 3;
        let (own_row, other_row) = (&own[r.clone()], &other[r]);
        for c in 0..3 {
            let own_c = own_row[c..].iter().step_by(3);
            match mode {
                RowMix::Own => mixed
                    .iter_mut()
                    .zip(own_c)
                    .for_each(|(m, &a)| *m = f32::from(a)),
                RowMix::Blend(lam) => mixed
                    .iter_mut()
                    .zip(own_c.zip(other_row[c..].iter().step_by(3)))
                    .for_each(|(m, (&a, &b))| *m = mix_value(a, b, lam)),
                RowMix::Cut(x0, x1) => {
                    for (x, m) in mixed.iter_mut().enumerate() {
                        let src = if x >= x0 && x < x1 {
                            other_row
                        } else {
                            own_row
                        };
                        *m = f32::from(src[x * 3 + c]);
                    }
                }
            }
            sums.clipped[c] += mixed
                .iter()
                .map(|&v| u64::from(v <= 0.0 || v >= 255.0))
                .sum::<u64>();
            match dtype {
                DType::Uint8 => match mode {
                    // Whole pixel values already: nothing to round.
                    RowMix::Own | RowMix::Cut(..) => vals.copy_from_slice(&mixed),
                    RowMix::Blend(_) => vals
                        .iter_mut()
                        .zip(&mixed)
                        .for_each(|(o, &v)| *o = round_pixel(v)),
                },
                DType::Float16 | DType::Float32 => {
                    let (scale, bias) = (norm.scale[c], norm.bias[c]);
                    vals.iter_mut()
                        .zip(&mixed)
                        .for_each(|(o, &m)| *o = m * scale + bias);
                    if dtype == DType::Float16 {
                        // Round to half, and keep the rounded values for the statistics.
                        halfs.convert_from_f32_slice(&vals);
                        halfs.convert_to_f32_slice(&mut vals);
                    }
                }
            }
            let (s, q) = lane_sums(&vals);
            sums.sum[c] += s;
            sums.sum_sq[c] += q;
            // Output: a contiguous run of one channel plane (NCHW), or every third element
            // of the interleaved row (NHWC).
            match layout {
                Layout::Nchw => {
                    let start = (c * hw + y * w) * elem;
                    let dst = &mut out[start..start + w * elem];
                    match dtype {
                        DType::Uint8 => dst.iter_mut().zip(&vals).for_each(|(d, &v)| *d = v as u8),
                        // Little-endian hosts store the values as they are in memory.
                        #[cfg(target_endian = "little")]
                        DType::Float16 => dst.copy_from_slice(bytemuck::cast_slice(&halfs)),
                        #[cfg(target_endian = "little")]
                        DType::Float32 => dst.copy_from_slice(bytemuck::cast_slice(&vals)),
                        #[cfg(not(target_endian = "little"))]
                        DType::Float16 => dst
                            .chunks_exact_mut(2)
                            .zip(&halfs)
                            .for_each(|(d, h)| d.copy_from_slice(&h.to_le_bytes())),
                        #[cfg(not(target_endian = "little"))]
                        DType::Float32 => dst
                            .chunks_exact_mut(4)
                            .zip(&vals)
                            .for_each(|(d, v)| d.copy_from_slice(&v.to_le_bytes())),
                    }
                }
                Layout::Nhwc => {
                    let start = y * w * 3 * elem;
                    let dst = out[start..start + w * 3 * elem].chunks_exact_mut(3 * elem);
                    match dtype {
                        DType::Uint8 => dst.zip(&vals).for_each(|(d, &v)| d[c] = v as u8),
                        DType::Float16 => dst.zip(&halfs).for_each(|(d, h)| {
                            d[c * 2..c * 2 + 2].copy_from_slice(&h.to_le_bytes())
                        }),
                        DType::Float32 => dst.zip(&vals).for_each(|(d, v)| {
                            d[c * 4..c * 4 + 4].copy_from_slice(&v.to_le_bytes())
                        }),
                    }
                }
            }
        }
    }
    sums
}

/// timm's `mixup_target`: smoothed one-hot targets mixed with `lam`, row-major `(B, classes)`.
pub fn soft_targets(
    labels_a: &[i64],
    labels_b: &[i64],
    lam: &[f32],
    num_classes: u32,
    smoothing: f32,
) -> Vec<f32> {
    let n = num_classes as usize;
    let off = smoothing / n as f32;
    let on = 1.0 - smoothing + off;
    let mut out = vec![0.0f32; labels_a.len() * n];
    for (i, row) in out.chunks_exact_mut(n.max(1)).enumerate() {
        if n == 0 {
            break;
        }
        let mut add = |label: i64, w: f32| {
            for v in row.iter_mut() {
                *v += off * w;
            }
            if (0..n as i64).contains(&label) {
                row[label as usize] += (on - off) * w;
            }
        };
        add(labels_a[i], lam[i]);
        add(labels_b[i], 1.0 - lam[i]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lane_sums_give_the_same_bits_on_every_path() {
        // The AVX path (taken here when the CPU has it) against the scalar definition.
        for len in [0usize, 1, 7, 8, 9, 224, 1000] {
            let v: Vec<f32> = (0..len)
                .map(|i| ((i * 7919) % 997) as f32 * 0.37 - 50.0)
                .collect();
            let want = lane_sums_scalar(&v);
            let got = lane_sums(&v);
            assert_eq!(
                (got.0.to_bits(), got.1.to_bits()),
                (want.0.to_bits(), want.1.to_bits()),
                "len {len}"
            );
        }
    }
    use crate::rng::{keyed_rng, Purpose};
    use statrs::distribution::{Beta as BetaDist, ContinuousCDF};

    fn mixup(alpha: f32, mode: MixMode) -> EpochMix {
        EpochMix {
            mixup_alpha: alpha,
            cutmix_alpha: 0.0,
            prob: 1.0,
            switch_prob: 0.5,
            mode,
        }
    }

    #[test]
    fn round_pixel_matches_f32_round() {
        let mut v = 0.0f32;
        while v <= 255.0 {
            for x in [v, v + 0.5, v + 0.49999997, v + 0.50000006] {
                assert_eq!(round_pixel(x), x.round().clamp(0.0, 255.0), "{x}");
            }
            v += 1.0;
        }
        for x in [-0.0f32, 0.25, 254.75, 255.0, 1e-7] {
            assert_eq!(round_pixel(x), x.round().clamp(0.0, 255.0), "{x}");
        }
    }

    #[test]
    fn mixup_lambda_follows_beta() {
        for alpha in [0.2f32, 1.0, 2.0] {
            let mut lams: Vec<f64> = (0..10_000)
                .map(|b| {
                    let p = plan_mix(
                        &mut keyed_rng(3, 0, Purpose::Batch, b),
                        &mixup(alpha, MixMode::Batch),
                        4,
                        8,
                        8,
                    );
                    f64::from(p.lam[0])
                })
                .collect();
            lams.sort_by(f64::total_cmp);
            let d = BetaDist::new(f64::from(alpha), f64::from(alpha)).unwrap();
            let n = lams.len() as f64;
            let ks = lams
                .iter()
                .enumerate()
                .map(|(i, &x)| {
                    let f = d.cdf(x);
                    (f - i as f64 / n).abs().max(((i + 1) as f64 / n - f).abs())
                })
                .fold(0.0, f64::max);
            assert!(ks < 1.63 / n.sqrt(), "alpha {alpha}: KS {ks}");
        }
    }

    #[test]
    fn partners_are_the_flipped_batch_and_pair_mode_shares_lambda() {
        let p = plan_mix(
            &mut keyed_rng(0, 0, Purpose::Batch, 0),
            &mixup(1.0, MixMode::Pair),
            6,
            4,
            4,
        );
        assert_eq!(p.partner, vec![5, 4, 3, 2, 1, 0]);
        for i in 0..3 {
            assert_eq!(p.lam[i], p.lam[5 - i]);
        }
        let e = plan_mix(
            &mut keyed_rng(0, 0, Purpose::Batch, 0),
            &mixup(1.0, MixMode::Elem),
            6,
            4,
            4,
        );
        assert!(e.lam.windows(2).any(|w| w[0] != w[1]));
    }

    #[test]
    fn cutmix_lambda_is_the_kept_area() {
        let m = EpochMix {
            mixup_alpha: 0.0,
            cutmix_alpha: 1.0,
            prob: 1.0,
            switch_prob: 0.5,
            mode: MixMode::Elem,
        };
        for b in 0..200 {
            let p = plan_mix(&mut keyed_rng(1, 0, Purpose::Batch, b), &m, 8, 30, 40);
            for i in 0..8 {
                let c = p.cut[i].unwrap();
                assert!(c.y1 <= 30 && c.x1 <= 40);
                let kept = 1.0 - c.area() as f32 / 1200.0;
                assert!((p.lam[i] - kept).abs() < 1e-6);
            }
        }
    }

    #[test]
    fn kept_image_sums_equal_the_mix_pass_bit_for_bit() {
        let norm = NormalizeCoeffs::new(&Normalize::default());
        for (w, h) in [(333u32, 7u32), (1, 1), (224, 224), (4097, 2), (300, 301)] {
            let len = (w * h * 3) as usize;
            // Ends of the range included, for the clipped counts.
            let img: Vec<u8> = (0..len)
                .map(|i| match i % 11 {
                    0 => 0,
                    1 => 255,
                    k => (i * 37 + k) as u8,
                })
                .collect();
            let mut out = vec![0u8; len];
            let plan = MixPlan::identity(1);
            let want = mix_normalize_image(
                &img,
                h,
                w,
                &plan,
                0,
                &norm,
                DType::Uint8,
                Layout::Nhwc,
                &mut out,
            );
            assert_eq!(out, img, "{w}x{h}: kept as it is");
            assert_eq!(kept_image_sums(&img, h, w), want, "{w}x{h}");
        }
    }

    #[test]
    fn mixing_pixels_and_labels() {
        // Two 1x2 images; mixup with lam 0.25.
        let imgs = [0u8, 0, 0, 100, 100, 100, 200, 200, 200, 40, 40, 40];
        let plan = MixPlan {
            partner: vec![1, 0],
            lam: vec![0.25, 0.25],
            cut: vec![None, None],
        };
        let norm = NormalizeCoeffs::new(&Normalize {
            mean: [0.0; 3],
            std: [1.0 / 255.0; 3],
        });
        let mut out = [0u8; 12 * 4];
        let sums = mix_normalize_image(
            &imgs,
            1,
            2,
            &plan,
            0,
            &norm,
            DType::Float32,
            Layout::Nhwc,
            &mut out[..24],
        );
        let f: Vec<f32> = out[..24]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        assert_eq!(f, vec![150.0, 150.0, 150.0, 55.0, 55.0, 55.0]);
        assert_eq!(sums.sum, [205.0; 3]);
        assert_eq!(sums.clipped, [0; 3]);
        let mut u = vec![0u8; 6];
        mix_normalize_image(
            &imgs,
            1,
            2,
            &plan,
            1,
            &norm,
            DType::Uint8,
            Layout::Nchw,
            &mut u,
        );
        // own 200/40, other 0/100, lam 0.25: 50, 85 -> NCHW puts the two pixels per channel together.
        assert_eq!(u, vec![50, 85, 50, 85, 50, 85]);
        let t = soft_targets(&[0, 2], &[2, 0], &[0.25, 0.25], 3, 0.0);
        assert_eq!(t, vec![0.25, 0.0, 0.75, 0.75, 0.0, 0.25]);
        let s = soft_targets(&[1], &[1], &[1.0], 4, 0.1);
        assert!((s.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!((s[1] - 0.925).abs() < 1e-6);
    }
}
