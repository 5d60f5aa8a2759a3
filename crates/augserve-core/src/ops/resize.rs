//! Byte-level antialiased bilinear resize: u8 in, u8 out, no float image in between.
//!
//! [`resize_u8_reference`] reproduces Pillow's `Image.resize(size, BILINEAR, box=...)`
//! (libImaging/Resample.c): per-output-pixel triangle-filter weights computed in double,
//! stretched by the downscale factor (the antialiasing), converted to 22-bit fixed point;
//! a horizontal pass into a u8 intermediate, then a vertical pass. The GPU kernel
//! (`kernels/resize.cuh`) copies this arithmetic, so CPU and GPU batches are identical; the
//! reference is the default CPU path. [`FastResizer`] (fast_image_resize, SIMD) is the
//! optional faster CPU path, within one level of the reference.

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use multiversion::multiversion;

use super::crop::CropBox;
use crate::image::RgbImage;

/// Fixed-point precision of the weights (Pillow's `PRECISION_BITS` for 8-bit images).
pub const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Support of the bilinear (triangle) filter.
const BILINEAR_SUPPORT: f64 = 1.0;

fn bilinear_filter(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 {
        1.0 - x
    } else {
        0.0
    }
}

/// Weights of a 1-D resample from `[in0, in1)` of an axis of `in_size` pixels to `out_size`
/// pixels. Output pixel `i` reads `count[i]` inputs from `first[i]` on, with weights
/// `weights[i * ksize ..][..count[i]]` in fixed point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coeffs {
    pub ksize: usize,
    pub first: Vec<u32>,
    pub count: Vec<u32>,
    pub weights: Vec<i32>,
}

impl Coeffs {
    /// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc`: the same double arithmetic in
    /// the same order, so the same weights. Four output pixels at a time, each its own serial
    /// sum (the taps of one pixel must be summed in order to round as Pillow does), so the
    /// four chains overlap; SIMD where present. Built per image on the GPU path, the one-
    /// pixel-at-a-time loop was a quarter of its host time.
    pub fn new(in_size: u32, in0: f32, in1: f32, out_size: u32) -> Coeffs {
        coeffs_new(in_size, in0, in1, out_size)
    }

    /// The input range `[lo, hi)` read by any output pixel.
    pub fn span(&self) -> (u32, u32) {
        let lo = self.first.first().copied().unwrap_or(0);
        let hi = self
            .first
            .iter()
            .zip(&self.count)
            .map(|(f, c)| f + c)
            .max()
            .unwrap_or(lo);
        (lo, hi)
    }
}

/// Both axes' weights of one image's resize, with what they were computed for: a GPU
/// backend has the per-image workers compute them (they know each crop), so the batch's host
/// plan only gathers them.
#[derive(Debug, Clone, PartialEq)]
pub struct ResizeWeights {
    /// Source width and height, crop box in it, output width and height.
    pub key: (u32, u32, CropBox, u32, u32),
    pub h: Coeffs,
    pub v: Coeffs,
}

impl ResizeWeights {
    pub fn new(src_w: u32, src_h: u32, crop: CropBox, out_w: u32, out_h: u32) -> Self {
        ResizeWeights {
            key: (src_w, src_h, crop, out_w, out_h),
            h: Coeffs::new(src_w, crop.x0, crop.x1, out_w),
            v: Coeffs::new(src_h, crop.y0, crop.y1, out_h),
        }
    }
}

/// Output pixels whose weights [`coeffs_new`] computes together.
const LANES: usize = 4;

/// The per-axis constants of Pillow's `precompute_coeffs`, and each output pixel's input
/// range: shared by [`coeffs_new`] and [`AxisExtent`] so both give the same ranges, and
/// copied by the device's weights kernel (`resize_weights_pixel`, kernels/resize.cuh).
struct AxisParams {
    in0: f64,
    scale: f64,
    support: f64,
    ss: f64,
    ksize: usize,
}

impl AxisParams {
    #[inline(always)]
    fn new(in0: f32, in1: f32, out_size: u32) -> Self {
        // Pillow subtracts in single precision, then widens.
        let scale = f64::from(in1 - in0) / f64::from(out_size);
        let filterscale = scale.max(1.0);
        let support = BILINEAR_SUPPORT * filterscale;
        AxisParams {
            in0: f64::from(in0),
            scale,
            support,
            ss: 1.0 / filterscale,
            ksize: support.ceil() as usize * 2 + 1,
        }
    }

    /// Output pixel `xx`'s filter centre, first input and input count.
    #[inline(always)]
    fn pixel(&self, in_size: u32, xx: usize) -> (f64, i32, usize) {
        let center = self.in0 + (xx as f64 + 0.5) * self.scale;
        // C's (int) truncates toward zero; `as i32` does too.
        let xmin = ((center - self.support + 0.5) as i32).max(0);
        let xmax = ((center + self.support + 0.5) as i32).min(in_size as i32);
        (
            center,
            xmin,
            ((xmax - xmin).max(0) as usize).min(self.ksize),
        )
    }
}

/// What the host needs of an axis's weights when the device computes them: the taps per
/// output pixel and the input span `[lo, hi)` read, as [`Coeffs::new`]'s `ksize` and
/// [`Coeffs::span`] give them, without a division per tap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AxisExtent {
    pub ksize: usize,
    pub lo: u32,
    pub hi: u32,
}

impl AxisExtent {
    pub fn new(in_size: u32, in0: f32, in1: f32, out_size: u32) -> Self {
        let p = AxisParams::new(in0, in1, out_size);
        let end = |xx: usize| {
            let (_, xmin, n) = p.pixel(in_size, xx);
            (xmin as u32, xmin as u32 + n as u32)
        };
        let last = (out_size as usize).max(1) - 1;
        let (lo, hi) = if out_size == 0 {
            (0, 0)
        } else if p.scale > 0.0 {
            // A pixel's first input and its end (first + count: the lesser of xmax and
            // xmin + ksize, at least xmin) never decrease with the pixel, as the centre
            // grows: the first pixel starts the span, the last ends it.
            (end(0).0, end(last).1)
        } else {
            let hi = (0..=last).map(|xx| end(xx).1).max().unwrap_or(0);
            (end(0).0, hi)
        };
        AxisExtent {
            ksize: p.ksize,
            lo,
            hi: hi.max(lo),
        }
    }
}

#[multiversion(targets("x86_64+avx2", "x86_64+sse4.1"))]
fn coeffs_new(in_size: u32, in0: f32, in1: f32, out_size: u32) -> Coeffs {
    let p = AxisParams::new(in0, in1, out_size);
    let (ksize, ss) = (p.ksize, p.ss);
    let out = out_size as usize;
    let mut first = Vec::with_capacity(out);
    let mut count = Vec::with_capacity(out);
    let mut weights = vec![0i32; out * ksize];
    let mut k = vec![[0f64; LANES]; ksize];
    for (group, rows) in weights.chunks_mut(LANES * ksize).enumerate() {
        let (mut center, mut xmin, mut n) = ([0f64; LANES], [0i32; LANES], [0usize; LANES]);
        for l in 0..rows.len() / ksize {
            (center[l], xmin[l], n[l]) = p.pixel(in_size, group * LANES + l);
        }
        let taps = n.iter().copied().max().unwrap_or(0);
        let mut ww = [0f64; LANES];
        for (x, kx) in k[..taps].iter_mut().enumerate() {
            for l in 0..LANES {
                // x + xmin is exact in f64, as Pillow's (x + xmin - center + 0.5); a tap past a
                // pixel's count is 0 and adding it leaves that pixel's sum as it is.
                let t = (f64::from(x as i32 + xmin[l]) - center[l] + 0.5) * ss;
                let w = if x < n[l] { bilinear_filter(t) } else { 0.0 };
                kx[l] = w;
                ww[l] += w;
            }
        }
        // Dividing by 1 leaves a weight as it is: Pillow's `if (ww != 0.0)`.
        let div = ww.map(|w| if w != 0.0 { w } else { 1.0 });
        let here = rows.len() / ksize;
        for (x, kx) in k[..taps].iter().enumerate() {
            let fixed: [i32; LANES] = std::array::from_fn(|l| to_fixed(kx[l] / div[l]));
            // A tap past a pixel's count gives to_fixed(0) = 0, what the row holds there.
            for (l, &f) in fixed.iter().enumerate().take(here) {
                rows[l * ksize + x] = f;
            }
        }
        for l in 0..here {
            first.push(xmin[l] as u32);
            count.push(n[l] as u32);
        }
    }
    Coeffs {
        ksize,
        first,
        count,
        weights,
    }
}

#[inline(always)]
fn to_fixed(w: f64) -> i32 {
    let scaled = w * f64::from(1u32 << PRECISION_BITS);
    if w < 0.0 {
        (-0.5 + scaled) as i32
    } else {
        (0.5 + scaled) as i32
    }
}

/// Rounds a fixed-point accumulator to a byte (Pillow's `clip8`).
#[inline]
pub fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resizes the region `bx` of `src` to `out_w x out_h`, exactly as Pillow does.
pub fn resize_u8_reference(src: &RgbImage, bx: CropBox, out_w: u32, out_h: u32) -> RgbImage {
    let mut data = vec![0u8; out_w as usize * out_h as usize * 3];
    resize_u8_reference_into(src, bx, out_w, out_h, &mut data);
    RgbImage {
        width: out_w,
        height: out_h,
        data,
    }
}

/// [`resize_u8_reference`] into `out` (`out_w * out_h * 3` bytes, HWC).
///
/// # Panics
/// If `out` has another length (a caller's bug, not a data error).
pub fn resize_u8_reference_into(
    src: &RgbImage,
    bx: CropBox,
    out_w: u32,
    out_h: u32,
    out: &mut [u8],
) {
    let stride = out_w as usize * 3;
    assert_eq!(out.len(), stride * out_h as usize, "output buffer size");
    let horiz = Coeffs::new(src.width, bx.x0, bx.x1, out_w);
    let vert = Coeffs::new(src.height, bx.y0, bx.y1, out_h);
    let need_h = out_w != src.width || bx.x0 != 0.0 || bx.x1 != out_w as f32;
    let need_v = out_h != src.height || bx.y0 != 0.0 || bx.y1 != out_h as f32;
    let in_stride = src.width as usize * 3;
    match (need_h, need_v) {
        // Neither axis changes: the output is the input.
        (false, false) => out.copy_from_slice(&src.data[..out.len()]),
        // Only reachable when the height is unchanged: the horizontal pass is the output.
        (true, false) => horizontal_pass(&src.data, in_stride, 0, &horiz, out, stride),
        (false, true) => vertical_pass(&src.data, 0, &vert, out, stride),
        (true, true) => {
            // The horizontal pass covers only the rows the vertical pass will read.
            let (row_lo, row_hi) = vert.span();
            INTERMEDIATE.with_borrow_mut(|tmp| {
                // Every byte of it is written by the horizontal pass: a buffer kept from the
                // last image need not be zeroed (a fresh one each time was 2 % of the CPU
                // path's time on ImageNet-size images, most of it the zeroing).
                let len = (row_hi - row_lo) as usize * stride;
                if tmp.len() < len {
                    tmp.resize(len, 0);
                }
                let tmp = &mut tmp[..len];
                horizontal_pass(&src.data, in_stride, row_lo as usize, &horiz, tmp, stride);
                vertical_pass(tmp, row_lo, &vert, out, stride);
            });
        }
    }
}

thread_local! {
    /// The horizontal pass's output, kept per thread between images (the largest yet: an
    /// output row of 224 pixels by the crop's rows, a few hundred KB).
    static INTERMEDIATE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Resamples rows `row_lo..` of `src` (rows of `in_stride` bytes) along x into `out` (rows
/// of `out_stride` bytes), one output row per row of `out`. AVX-512 (`avx512::usable`), AVX2
/// or SSE4.1 where the CPU has them, else scalar; all give the same bytes.
fn horizontal_pass(
    src: &[u8],
    in_stride: usize,
    row_lo: usize,
    coeffs: &Coeffs,
    out: &mut [u8],
    out_stride: usize,
) {
    #[cfg(target_arch = "x86_64")]
    {
        if avx512::usable(coeffs) {
            // SAFETY: the CPU has AVX-512 F, BW and VBMI and the weights suit the pass:
            // `usable` checks both.
            unsafe {
                avx512::horizontal_pass_avx512(src, in_stride, row_lo, coeffs, out, out_stride)
            };
            return;
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            unsafe { x86::horizontal_pass_avx2(src, in_stride, row_lo, coeffs, out, out_stride) };
            return;
        }
        if std::arch::is_x86_feature_detected!("sse4.1") {
            // SAFETY: the CPU has SSE4.1, checked just above.
            unsafe { x86::horizontal_pass_sse41(src, in_stride, row_lo, coeffs, out, out_stride) };
            return;
        }
    }
    horizontal_pass_scalar(src, in_stride, row_lo, coeffs, out, out_stride);
}

/// [`horizontal_pass`] one channel at a time, in plain Rust.
fn horizontal_pass_scalar(
    src: &[u8],
    in_stride: usize,
    row_lo: usize,
    coeffs: &Coeffs,
    out: &mut [u8],
    out_stride: usize,
) {
    for (r, out_row) in out.chunks_exact_mut(out_stride).enumerate() {
        let row = &src[(row_lo + r) * in_stride..][..in_stride];
        for (xx, px) in out_row.chunks_exact_mut(3).enumerate() {
            px.copy_from_slice(&resample_pixel(row, coeffs, xx));
        }
    }
}

/// Output pixel `xx` of a horizontal pass over `row`.
#[inline]
fn resample_pixel(row: &[u8], coeffs: &Coeffs, xx: usize) -> [u8; 3] {
    let half = 1i32 << (PRECISION_BITS - 1);
    let n = coeffs.count[xx] as usize;
    let weights = &coeffs.weights[xx * coeffs.ksize..][..n];
    let first = coeffs.first[xx] as usize * 3;
    let (mut a0, mut a1, mut a2) = (half, half, half);
    for (t, &w) in row[first..first + n * 3].chunks_exact(3).zip(weights) {
        a0 += i32::from(t[0]) * w;
        a1 += i32::from(t[1]) * w;
        a2 += i32::from(t[2]) * w;
    }
    [clip8(a0), clip8(a1), clip8(a2)]
}

#[cfg(target_arch = "x86_64")]
mod avx512;

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{Coeffs, PRECISION_BITS};

    /// The horizontal pass with one pixel's three channels in the lanes of one register:
    /// per tap, one 4-byte load (the pixel and the next one's first byte, whose lane is
    /// discarded), one widening, one 32-bit multiply and one add, where the scalar loop
    /// needs three of each. The arithmetic is the scalar loop's (32-bit products and sums
    /// cannot overflow: 255 * 2^22 per tap, weights summing to 2^22), so the bytes match.
    ///
    /// # Safety
    /// The CPU must support SSE4.1.
    #[target_feature(enable = "sse4.1")]
    #[allow(unused_unsafe)] // the intrinsics are safe here from Rust 1.87 on, unsafe before
    pub(super) unsafe fn horizontal_pass_sse41(
        src: &[u8],
        in_stride: usize,
        row_lo: usize,
        coeffs: &Coeffs,
        out: &mut [u8],
        out_stride: usize,
    ) {
        let mut last_row = Vec::new();
        for (r, out_row) in out.chunks_exact_mut(out_stride).enumerate() {
            let start = (row_lo + r) * in_stride;
            // Every row is read with one byte of slack; the image's last row has none after
            // it, so it is read from a padded copy.
            let row: &[u8] = if start + in_stride < src.len() {
                &src[start..start + in_stride + 1]
            } else {
                last_row.clear();
                last_row.extend_from_slice(&src[start..start + in_stride]);
                last_row.push(0);
                &last_row
            };
            for (xx, px) in out_row.chunks_exact_mut(3).enumerate() {
                let n = coeffs.count[xx] as usize;
                let weights = &coeffs.weights[xx * coeffs.ksize..][..n];
                let first = coeffs.first[xx] as usize * 3;
                let taps = &row[first..first + n * 3 + 1];
                // SAFETY: SSE4.1 is enabled on this function; every load reads a 4-byte
                // window of `taps` (`windows(4)`), by value.
                unsafe {
                    let mut acc = _mm_set1_epi32(1 << (PRECISION_BITS - 1));
                    for (tap, &w) in taps.windows(4).step_by(3).zip(weights) {
                        let bytes = i32::from_le_bytes([tap[0], tap[1], tap[2], tap[3]]);
                        let v = _mm_cvtepu8_epi32(_mm_cvtsi32_si128(bytes));
                        acc = _mm_add_epi32(acc, _mm_mullo_epi32(v, _mm_set1_epi32(w)));
                    }
                    // clip8 on each lane: the shift, then saturating packs to 0..=255.
                    let v = _mm_srai_epi32::<{ PRECISION_BITS as i32 }>(acc);
                    let packed = _mm_packus_epi16(_mm_packus_epi32(v, v), _mm_setzero_si128());
                    let [p0, p1, p2, _] = _mm_cvtsi128_si32(packed).to_le_bytes();
                    px[0] = p0;
                    px[1] = p1;
                    px[2] = p2;
                }
            }
        }
    }

    /// The split of every weight `w` into `w >> 11` and `w & 0x7ff`: both fit in 16 bits
    /// (weights lie in `[-2^22, 2^22]`), and `(hi << 11) + lo == w`, so two 16-bit
    /// multiply-adds (`pmaddwd`) per pair of taps give the scalar loop's 32-bit sums exactly.
    pub(super) const SPLIT_BITS: i32 = 11;

    /// Two weights as one `pmaddwd` operand word: `a` in the low 16 bits, `b` in the high.
    pub(super) fn weight_pair(a: i32, b: i32) -> i32 {
        (u32::from(a as i16 as u16) | (u32::from(b as i16 as u16) << 16)) as i32
    }

    /// Per pair of output pixels (a, b) and pair of taps j, the `pmaddwd` operands of the
    /// high and the low weight parts: 8 words each, lanes 0-3 pixel a's, 4-7 pixel b's.
    /// Taps past a pixel's count get weight 0.
    fn split_weights(coeffs: &Coeffs, out_w: usize, tap_pairs: usize) -> (Vec<i32>, Vec<i32>) {
        let (mut hi, mut lo) = (Vec::new(), Vec::new());
        let weight = |xx: usize, t: usize| {
            let n = coeffs.count[xx] as usize;
            if t < n {
                coeffs.weights[xx * coeffs.ksize + t]
            } else {
                0
            }
        };
        for pair in 0..out_w / 2 {
            for j in 0..tap_pairs {
                for xx in [2 * pair, 2 * pair + 1] {
                    let (w0, w1) = (weight(xx, 2 * j), weight(xx, 2 * j + 1));
                    let h = weight_pair(w0 >> SPLIT_BITS, w1 >> SPLIT_BITS);
                    let mask = (1 << SPLIT_BITS) - 1;
                    let l = weight_pair(w0 & mask, w1 & mask);
                    hi.extend([h; 4]);
                    lo.extend([l; 4]);
                }
            }
        }
        (hi, lo)
    }

    /// The horizontal pass two output pixels at a time, one in each 128-bit half of an AVX2
    /// register, two taps per step: the taps' 6 bytes (two RGB pixels) are spread into 16-bit
    /// lanes `[r0, r1, g0, g1, b0, b1, 0, 0]` and multiplied-and-added (`pmaddwd`) with the
    /// two weights, once for their high and once for their low parts ([`SPLIT_BITS`]); the
    /// 32-bit sums are the scalar loop's, so the bytes match (no overflow: 255 * 2^22 per
    /// tap at most, weights summing to 2^22). Rows are read from a copy padded with
    /// `ksize * 3 + 16` zero bytes, so reads past a pixel's last tap stay inside it; their
    /// weights are 0.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    #[allow(unused_unsafe)] // the intrinsics are safe here from Rust 1.87 on, unsafe before
    pub(super) unsafe fn horizontal_pass_avx2(
        src: &[u8],
        in_stride: usize,
        row_lo: usize,
        coeffs: &Coeffs,
        out: &mut [u8],
        out_stride: usize,
    ) {
        let ksize = coeffs.ksize;
        let out_w = out_stride / 3;
        let tap_pairs = ksize.div_ceil(2);
        let (w_hi, w_lo) = split_weights(coeffs, out_w, tap_pairs);
        let reach = in_stride + ksize * 3 + 16;
        // SAFETY: AVX2 is enabled on this function; the intrinsics take values only.
        let spread = unsafe {
            // Bytes r0 g0 b0 r1 g1 b1 to 16-bit lanes r0 r1 g0 g1 b0 b1 0 0 (-1: zero).
            _mm256_broadcastsi128_si256(_mm_setr_epi8(
                0, -1, 3, -1, 1, -1, 4, -1, 2, -1, 5, -1, -1, -1, -1, -1,
            ))
        };
        // Per pixel pair: where its two pixels' taps start in a row, and its steps.
        let plan: Vec<(usize, usize, usize)> = (0..out_w / 2)
            .map(|pair| {
                let (a, b) = (2 * pair, 2 * pair + 1);
                let steps = (coeffs.count[a].max(coeffs.count[b]) as usize).div_ceil(2);
                (
                    coeffs.first[a] as usize * 3,
                    coeffs.first[b] as usize * 3,
                    steps,
                )
            })
            .collect();
        // Every tap read lies within `reach` of its row's start: first * 3 <= in_stride (a box
        // inside the image) and a pixel's reads end 6 * tap_pairs + 2 <= ksize * 3 + 5 bytes
        // after its first tap. Checked, not assumed: the unchecked reads below rely on it.
        // A row with `reach` bytes of `src` after its start is read in place (reads past its
        // end fall on the next row, with weight 0); only the last rows are copied into
        // zero-padded buffers (copying every row was 3 % of the CPU path's time per
        // ImageNet-size image).
        assert!(plan
            .iter()
            .all(|&(fa, fb, _)| fa.max(fb) + 6 * tap_pairs + 2 <= reach));
        let ctx = PassContext {
            plan: &plan,
            w_hi: &w_hi,
            w_lo: &w_lo,
            tap_pairs,
            spread,
            coeffs,
        };
        let rows = RowPairs {
            src,
            in_stride,
            row_lo,
            reach,
        };
        rows.each(
            out,
            out_stride,
            // SAFETY: AVX2 is enabled here; `ctx.plan` was checked against `reach` above, and
            // the rows are at least that long (`RowPairs`).
            |r, o| unsafe { row_block_avx2(r, o, &ctx) },
            // SAFETY: as above.
            |r, o| unsafe { row_block_avx2(r, o, &ctx) },
        );
    }

    /// Rows `row_lo..` of `src` (rows of `in_stride` bytes), each seen as a slice at least
    /// `reach` bytes long: in place where `src` holds that much after the row's start, else
    /// a copy padded with zeros. A pass reads past a pixel's taps (weight 0) up to `reach`.
    pub(super) struct RowPairs<'a> {
        pub src: &'a [u8],
        pub in_stride: usize,
        pub row_lo: usize,
        pub reach: usize,
    }

    impl RowPairs<'_> {
        /// Calls `two` with each pair of rows and its two rows of `out` (rows of `out_stride`
        /// bytes), so each weight load serves both; `one` with a last odd row.
        pub fn each(
            &self,
            out: &mut [u8],
            out_stride: usize,
            mut two: impl FnMut([&[u8]; 2], [&mut [u8]; 2]),
            mut one: impl FnMut([&[u8]; 1], [&mut [u8]; 1]),
        ) {
            let (mut pad0, mut pad1) = (vec![0u8; self.reach], vec![0u8; self.reach]);
            for (block, outs) in out.chunks_mut(2 * out_stride).enumerate() {
                let start = (self.row_lo + 2 * block) * self.in_stride;
                let r0 = padded_row(self.src, start, self.in_stride, self.reach, &mut pad0);
                if outs.len() == 2 * out_stride {
                    let next = start + self.in_stride;
                    let r1 = padded_row(self.src, next, self.in_stride, self.reach, &mut pad1);
                    let (o0, o1) = outs.split_at_mut(out_stride);
                    two([r0, r1], [o0, o1]);
                } else {
                    one([r0], [outs]);
                }
            }
        }
    }

    /// A row's taps as `pmaddwd` operand words, two taps each: the high and the low parts
    /// of their weights ([`SPLIT_BITS`]); a last odd tap paired with weight 0.
    pub(super) fn split_pairs(weights: &[i32]) -> impl Iterator<Item = (i32, i32)> + '_ {
        let mask = (1 << SPLIT_BITS) - 1;
        weights.chunks(2).map(move |ws| {
            let (w0, w1) = (ws[0], ws.get(1).copied().unwrap_or(0));
            (
                weight_pair(w0 >> SPLIT_BITS, w1 >> SPLIT_BITS),
                weight_pair(w0 & mask, w1 & mask),
            )
        })
    }

    /// The row of `src` at `start` (`in_stride` bytes) as a slice at least `reach` bytes
    /// long: `src` itself when it holds that much from `start`, else the row copied into
    /// `pad` (zero past the row, `reach` bytes long).
    pub(super) fn padded_row<'a>(
        src: &'a [u8],
        start: usize,
        in_stride: usize,
        reach: usize,
        pad: &'a mut [u8],
    ) -> &'a [u8] {
        match src.get(start..start + reach) {
            Some(row) => row,
            None => {
                pad[..in_stride].copy_from_slice(&src[start..start + in_stride]);
                pad
            }
        }
    }

    /// What every row block of one horizontal pass shares.
    struct PassContext<'a> {
        /// Per pixel pair: where its two pixels' taps start in a row, and its steps.
        plan: &'a [(usize, usize, usize)],
        w_hi: &'a [i32],
        w_lo: &'a [i32],
        tap_pairs: usize,
        spread: __m256i,
        coeffs: &'a Coeffs,
    }

    /// `R` padded rows resampled into `outs`, two output pixels per register, the weights
    /// loaded once per step for all rows; the sums of two pixel pairs are packed and stored
    /// together (one pair at a time, packing and storing was a third of the pass).
    ///
    /// # Safety
    /// The CPU must support AVX2, and every pixel pair's reads (`fa.max(fb) + 6 * tap_pairs
    /// + 2`) must lie in each row.
    #[target_feature(enable = "avx2")]
    #[allow(unused_unsafe)] // the intrinsics are safe here from Rust 1.87 on, unsafe before
    unsafe fn row_block_avx2<const R: usize>(
        rows: [&[u8]; R],
        outs: [&mut [u8]; R],
        ctx: &PassContext<'_>,
    ) {
        let out_w = outs[0].len() / 3;
        let pairs = ctx.plan.len();
        // SAFETY (whole block): AVX2 is enabled; `pair_sums` has this function's contract,
        // and every store below is bounds-checked (`copy_from_slice`, or `at + 16 <= len`).
        unsafe {
            // Dwords a, c, a, c | b, d, b, d (one pixel's 3 bytes + 1 each) to a, b, c, d.
            let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
            // Four 3-byte pixels from their dwords, 12 bytes.
            let compact = _mm_setr_epi8(0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, -1, -1, -1, -1);
            let mut pair = 0;
            while pair + 2 <= pairs {
                let (v0, v1) = (pair_sums(&rows, ctx, pair), pair_sums(&rows, ctx, pair + 1));
                for k in 0..R {
                    // Saturating packs (clip8), per 128-bit half: pixels a, c | b, d.
                    let words = _mm256_packus_epi32(v0[k], v1[k]);
                    let bytes = _mm256_packus_epi16(words, words);
                    let ordered = _mm256_permutevar8x32_epi32(bytes, order);
                    let px = _mm_shuffle_epi8(_mm256_castsi256_si128(ordered), compact);
                    let (at, out) = (pair * 6, &mut *outs[k]);
                    if at + 16 <= out.len() {
                        // 4 bytes past the 12 are written too; the next pixels overwrite them.
                        _mm_storeu_si128(out.as_mut_ptr().add(at).cast(), px);
                    } else {
                        let mut b = [0u8; 16];
                        _mm_storeu_si128(b.as_mut_ptr().cast(), px);
                        out[at..at + 12].copy_from_slice(&b[..12]);
                    }
                }
                pair += 2;
            }
            if pair < pairs {
                let v = pair_sums(&rows, ctx, pair);
                for k in 0..R {
                    let words = _mm_packus_epi32(
                        _mm256_castsi256_si128(v[k]),
                        _mm256_extracti128_si256::<1>(v[k]),
                    );
                    let bytes = _mm_packus_epi16(words, _mm_setzero_si128());
                    let [a0, a1, a2, _, b0, b1, b2, _] = _mm_cvtsi128_si64(bytes).to_le_bytes();
                    outs[k][pair * 6..pair * 6 + 6].copy_from_slice(&[a0, a1, a2, b0, b1, b2]);
                }
            }
        }
        // An odd last pixel: on its own.
        if out_w % 2 == 1 {
            for (row, out) in rows.iter().zip(outs) {
                out[3 * (out_w - 1)..].copy_from_slice(&super::resample_pixel(
                    row,
                    ctx.coeffs,
                    out_w - 1,
                ));
            }
        }
    }

    /// Pixel pair `pair`'s sums in each of the `R` rows, shifted down to the output range
    /// (lanes 0-3 pixel a, 4-7 pixel b; not yet clamped).
    ///
    /// # Safety
    /// As [`row_block_avx2`].
    #[target_feature(enable = "avx2")]
    #[allow(unused_unsafe)] // the intrinsics are safe here from Rust 1.87 on, unsafe before
    #[inline]
    unsafe fn pair_sums<const R: usize>(
        rows: &[&[u8]; R],
        ctx: &PassContext<'_>,
        pair: usize,
    ) -> [__m256i; R] {
        let (fa, fb, steps) = ctx.plan[pair];
        // SAFETY: AVX2 is enabled; the row reads stay in each row (the caller's bound), the
        // weight reads in `w_hi`/`w_lo` (pair * tap_pairs + steps <= their length / 8).
        unsafe {
            let at = pair * ctx.tap_pairs * 8;
            let (mut hi, mut lo) = (ctx.w_hi.as_ptr().add(at), ctx.w_lo.as_ptr().add(at));
            let mut acc_hi = [_mm256_setzero_si256(); R];
            // The rounding half, added once here rather than per pixel at the end.
            let mut acc_lo = [_mm256_set1_epi32(1 << (PRECISION_BITS - 1)); R];
            for step in 0..steps {
                let (h, l) = (_mm256_loadu_si256(hi.cast()), _mm256_loadu_si256(lo.cast()));
                for k in 0..R {
                    let row = rows[k].as_ptr();
                    let bytes = _mm256_set_m128i(
                        _mm_loadl_epi64(row.add(fb + 6 * step).cast()),
                        _mm_loadl_epi64(row.add(fa + 6 * step).cast()),
                    );
                    let v = _mm256_shuffle_epi8(bytes, ctx.spread);
                    acc_hi[k] = _mm256_add_epi32(acc_hi[k], _mm256_madd_epi16(v, h));
                    acc_lo[k] = _mm256_add_epi32(acc_lo[k], _mm256_madd_epi16(v, l));
                }
                (hi, lo) = (hi.add(8), lo.add(8));
            }
            std::array::from_fn(|k| {
                let acc = _mm256_add_epi32(_mm256_slli_epi32::<SPLIT_BITS>(acc_hi[k]), acc_lo[k]);
                _mm256_srai_epi32::<{ PRECISION_BITS as i32 }>(acc)
            })
        }
    }

    /// The vertical pass 16 bytes of a row at a time, the sums kept in registers across
    /// taps (the autovectorised loop stored them after every tap and multiplied in 32 bits,
    /// two uops each): two input rows' bytes are interleaved into 16-bit pairs and
    /// multiplied-and-added (`pmaddwd`) with the two rows' weights, split into high and low
    /// parts as in the horizontal pass ([`SPLIT_BITS`]), so the 32-bit sums, and the bytes,
    /// are the scalar loop's. A last odd tap is paired with itself at weight 0. Rows whose
    /// width is not a multiple of 16 end with a chunk overlapping the one before it.
    ///
    /// # Safety
    /// The CPU must support AVX2; `stride >= 16`.
    #[target_feature(enable = "avx2")]
    #[allow(unused_unsafe)] // the intrinsics are safe here from Rust 1.87 on, unsafe before
    pub(super) unsafe fn vertical_pass_avx2(
        tmp: &[u8],
        row_offset: u32,
        coeffs: &Coeffs,
        out: &mut [u8],
        stride: usize,
    ) {
        assert!(
            stride >= 16,
            "vertical_pass_avx2 needs rows of 16 bytes or more"
        );
        let mut pairs: Vec<(__m256i, __m256i)> = Vec::with_capacity(coeffs.ksize.div_ceil(2));
        // The chunks' starts: every 16 bytes, the last one ending at the row's end.
        let starts: Vec<usize> = (0..stride.div_ceil(16))
            .map(|c| (16 * c).min(stride - 16))
            .collect();
        for (yy, out_row) in out.chunks_exact_mut(stride).enumerate() {
            let n = coeffs.count[yy] as usize;
            let weights = &coeffs.weights[yy * coeffs.ksize..][..n];
            let first_row = (coeffs.first[yy] - row_offset) as usize;
            // Bounds-checked once: every read below lies in `rows`.
            let rows = &tmp[first_row * stride..(first_row + n) * stride];
            pairs.clear();
            // SAFETY: AVX2 is enabled; the intrinsics take values only.
            pairs.extend(
                split_pairs(weights)
                    .map(|(h, l)| unsafe { (_mm256_set1_epi32(h), _mm256_set1_epi32(l)) }),
            );
            for &x in &starts {
                // SAFETY: AVX2 is enabled; tap `t` reads bytes `t * stride + x..+16` of
                // `rows` with `t < n` and `x + 16 <= stride`, so inside it; the store writes
                // `out_row[x..x + 16]`, inside it.
                unsafe {
                    let base = rows.as_ptr().add(x);
                    let mut acc = [_mm256_setzero_si256(); 4];
                    for (p, &(hi, lo)) in pairs.iter().enumerate() {
                        let t0 = 2 * p;
                        let t1 = if t0 + 1 < n { t0 + 1 } else { t0 };
                        let a = _mm_loadu_si128(base.add(t0 * stride).cast());
                        let b = _mm_loadu_si128(base.add(t1 * stride).cast());
                        // Pixels 0-7 and 8-15 as 16-bit pairs (row t0, row t1).
                        let p0 = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(a, b));
                        let p1 = _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(a, b));
                        acc[0] = _mm256_add_epi32(acc[0], _mm256_madd_epi16(p0, hi));
                        acc[1] = _mm256_add_epi32(acc[1], _mm256_madd_epi16(p1, hi));
                        acc[2] = _mm256_add_epi32(acc[2], _mm256_madd_epi16(p0, lo));
                        acc[3] = _mm256_add_epi32(acc[3], _mm256_madd_epi16(p1, lo));
                    }
                    let half = _mm256_set1_epi32(1 << (PRECISION_BITS - 1));
                    let sum = |h: __m256i, l: __m256i| {
                        let acc = _mm256_add_epi32(
                            _mm256_slli_epi32::<SPLIT_BITS>(h),
                            _mm256_add_epi32(l, half),
                        );
                        _mm256_srai_epi32::<{ PRECISION_BITS as i32 }>(acc)
                    };
                    let (v0, v1) = (sum(acc[0], acc[2]), sum(acc[1], acc[3]));
                    // Saturating packs (clip8); the 256-bit pack works per 128-bit half,
                    // so its 64-bit quarters come out as v0 0-3, v1 0-3, v0 4-7, v1 4-7.
                    let words =
                        _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packus_epi32(v0, v1));
                    let bytes = _mm_packus_epi16(
                        _mm256_castsi256_si128(words),
                        _mm256_extracti128_si256::<1>(words),
                    );
                    _mm_storeu_si128(out_row.as_mut_ptr().add(x).cast(), bytes);
                }
            }
        }
    }
}

/// Resamples `tmp` (rows of `stride` bytes, its first row being input row `row_offset`)
/// along y into `out`, one output row per row of `out`. AVX-512 or AVX2 where the CPU has
/// it, else the autovectorised loop; all give the same bytes.
fn vertical_pass(tmp: &[u8], row_offset: u32, coeffs: &Coeffs, out: &mut [u8], stride: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        if avx512::vertical_usable(stride) {
            // SAFETY: the CPU has AVX-512 F, BW and VBMI and the stride is at least 32:
            // `vertical_usable` checks both.
            unsafe { avx512::vertical_pass_avx512(tmp, row_offset, coeffs, out, stride) };
            return;
        }
        if stride >= 16 && std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above; the stride is at least 16.
            unsafe { x86::vertical_pass_avx2(tmp, row_offset, coeffs, out, stride) };
            return;
        }
    }
    vertical_pass_rows(tmp, row_offset, coeffs, out, stride);
}

/// [`vertical_pass`] whole rows at a time (taps outer, pixels inner), which vectorises.
#[multiversion(targets("x86_64+avx2", "x86_64+sse4.1"))]
fn vertical_pass_rows(tmp: &[u8], row_offset: u32, coeffs: &Coeffs, out: &mut [u8], stride: usize) {
    let mut acc = vec![0i32; stride];
    for (yy, out_row) in out.chunks_exact_mut(stride).enumerate() {
        let n = coeffs.count[yy] as usize;
        let weights = &coeffs.weights[yy * coeffs.ksize..][..n];
        let first_row = (coeffs.first[yy] - row_offset) as usize;
        acc.fill(1 << (PRECISION_BITS - 1));
        for (i, &w) in weights.iter().enumerate() {
            let row = &tmp[(first_row + i) * stride..][..stride];
            for (a, &v) in acc.iter_mut().zip(row) {
                *a += i32::from(v) * w;
            }
        }
        for (o, &a) in out_row.iter_mut().zip(&acc) {
            *o = clip8(a);
        }
    }
}

/// The production CPU resize (SIMD convolution from fast_image_resize, same filter).
pub struct FastResizer {
    resizer: Resizer,
}

impl Default for FastResizer {
    fn default() -> Self {
        FastResizer {
            resizer: Resizer::new(),
        }
    }
}

impl FastResizer {
    /// Resizes the region `bx` of `src` into `out` (`out_w * out_h * 3` bytes).
    /// Falls back to the reference when fast_image_resize refuses the input.
    pub fn resize_into(
        &mut self,
        src: &RgbImage,
        bx: CropBox,
        out_w: u32,
        out_h: u32,
        out: &mut [u8],
    ) {
        let done = (|| {
            let src_ref = ImageRef::new(src.width, src.height, &src.data, PixelType::U8x3).ok()?;
            let mut dst = Image::from_slice_u8(out_w, out_h, out, PixelType::U8x3).ok()?;
            let opts = ResizeOptions::new()
                .resize_alg(ResizeAlg::Convolution(FilterType::Bilinear))
                .crop(
                    f64::from(bx.x0),
                    f64::from(bx.y0),
                    f64::from(bx.width()),
                    f64::from(bx.height()),
                );
            self.resizer.resize(&src_ref, &mut dst, &opts).ok()
        })();
        if done.is_none() {
            resize_u8_reference_into(src, bx, out_w, out_h, out);
        }
    }
}

/// The integer source rectangle `(x, y, w, h)` that a resize of `bx` to `out_w x out_h` reads.
/// Colour jitter is applied to exactly this region, so pixels outside it are never touched.
pub fn read_region(
    width: u32,
    height: u32,
    bx: CropBox,
    out_w: u32,
    out_h: u32,
) -> (u32, u32, u32, u32) {
    let x = AxisExtent::new(width, bx.x0, bx.x1, out_w);
    let y = AxisExtent::new(height, bx.y0, bx.y1, out_h);
    (x.lo, y.lo, (x.hi - x.lo).max(1), (y.hi - y.lo).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` one output pixel at a time, as
    /// `Coeffs::new` was written before it computed four at a time.
    fn coeffs_one_at_a_time(in_size: u32, in0: f32, in1: f32, out_size: u32) -> Coeffs {
        let scale = f64::from(in1 - in0) / f64::from(out_size);
        let filterscale = scale.max(1.0);
        let support = BILINEAR_SUPPORT * filterscale;
        let ksize = support.ceil() as usize * 2 + 1;
        let (mut first, mut count) = (Vec::new(), Vec::new());
        let mut weights = vec![0i32; out_size as usize * ksize];
        let mut k = vec![0f64; ksize];
        for xx in 0..out_size as usize {
            let center = f64::from(in0) + (xx as f64 + 0.5) * scale;
            let ss = 1.0 / filterscale;
            let xmin = ((center - support + 0.5) as i32).max(0);
            let xmax = ((center + support + 0.5) as i32).min(in_size as i32);
            let n = (xmax - xmin).max(0) as usize;
            let mut ww = 0.0;
            for (x, kx) in k.iter_mut().enumerate().take(n) {
                let w = bilinear_filter((x as f64 + f64::from(xmin) - center + 0.5) * ss);
                *kx = w;
                ww += w;
            }
            for x in 0..n {
                let w = if ww != 0.0 { k[x] / ww } else { k[x] };
                weights[xx * ksize + x] = to_fixed(w);
            }
            first.push(xmin as u32);
            count.push(n as u32);
        }
        Coeffs {
            ksize,
            first,
            count,
            weights,
        }
    }

    /// The four-at-a-time weights are the one-at-a-time weights, bit for bit: downscales and
    /// upscales, crops at the edges, boxes past them, output sizes not a multiple of four.
    #[test]
    fn coeffs_equal_the_one_at_a_time_loop() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = |m: u32| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % u64::from(m)) as u32
        };
        for case in 0..3000 {
            let in_size = 1 + next(3000);
            let out_size = 1 + next(if case % 3 == 0 { 40 } else { 600 });
            let a = next(in_size * 4) as f32 / 4.0 - if case % 7 == 0 { 3.5 } else { 0.0 };
            let b = a + 0.25 + next(in_size * 4) as f32 / 4.0;
            let want = coeffs_one_at_a_time(in_size, a, b, out_size);
            let got = Coeffs::new(in_size, a, b, out_size);
            assert_eq!(got, want, "in {in_size}, [{a}, {b}) -> {out_size}");
            // The extent the host plans a device-weights batch with is the weights' own.
            let (lo, hi) = want.span();
            let extent = AxisExtent::new(in_size, a, b, out_size);
            assert_eq!((extent.ksize, extent.lo, extent.hi), (want.ksize, lo, hi));
        }
    }

    fn ramp(w: u32, h: u32) -> RgbImage {
        let data = (0..w * h * 3).map(|i| ((i * 37) % 251) as u8).collect();
        RgbImage::from_vec(w, h, data).unwrap()
    }

    #[test]
    fn identity_box_is_a_copy() {
        let img = ramp(13, 7);
        let out = resize_u8_reference(&img, CropBox::full(13, 7), 13, 7);
        assert_eq!(out, img);
    }

    #[test]
    fn constant_image_stays_constant() {
        let img = RgbImage::from_vec(50, 40, vec![77; 50 * 40 * 3]).unwrap();
        for (w, h) in [(7, 9), (224, 224), (50, 13), (1, 1)] {
            let out = resize_u8_reference(
                &img,
                CropBox {
                    x0: 3.5,
                    y0: 2.25,
                    x1: 47.0,
                    y1: 39.0,
                },
                w,
                h,
            );
            assert!(out.data.iter().all(|&v| v == 77), "{w}x{h}");
        }
    }

    #[test]
    fn weights_sum_to_one_in_fixed_point() {
        for (n, a, b, m) in [
            (500, 0.0, 500.0, 224),
            (100, 10.5, 60.25, 333),
            (7, 0.0, 7.0, 3),
        ] {
            let c = Coeffs::new(n, a, b, m);
            for i in 0..m as usize {
                let s: i64 = c.weights[i * c.ksize..(i + 1) * c.ksize]
                    .iter()
                    .map(|&w| i64::from(w))
                    .sum();
                assert!(
                    (s - (1 << PRECISION_BITS)).abs() <= c.ksize as i64,
                    "sum {s}"
                );
            }
        }
    }

    #[test]
    fn fast_path_agrees_with_reference_within_one_level() {
        let img = ramp(317, 211);
        let mut fast = FastResizer::default();
        for (bx, w, h) in [
            (CropBox::full(317, 211), 224, 224),
            (
                CropBox {
                    x0: 10.0,
                    y0: 20.0,
                    x1: 300.0,
                    y1: 200.0,
                },
                64,
                48,
            ),
            (
                CropBox {
                    x0: 100.5,
                    y0: 50.25,
                    x1: 140.0,
                    y1: 90.0,
                },
                301,
                199,
            ),
        ] {
            let r = resize_u8_reference(&img, bx, w, h);
            let mut out = vec![0u8; (w * h * 3) as usize];
            fast.resize_into(&img, bx, w, h, &mut out);
            let max = r
                .data
                .iter()
                .zip(&out)
                .map(|(a, b)| a.abs_diff(*b))
                .max()
                .unwrap();
            assert!(max <= 1, "max diff {max} for {bx:?} -> {w}x{h}");
        }
    }

    #[test]
    fn simd_horizontal_pass_equals_the_scalar_one() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut avx512_cases = 0;
        for case in 0..240 {
            // The last 40: photo-sized rows shrunk to about 224 (wide filters, many taps).
            let (w, h) = if case < 200 {
                (rng.random_range(1..120u32), rng.random_range(1..40u32))
            } else {
                (rng.random_range(300..2600u32), rng.random_range(1..4u32))
            };
            let data: Vec<u8> = (0..w * h * 3).map(|_| rng.random()).collect();
            let img = RgbImage::from_vec(w, h, data).unwrap();
            // Boxes reaching the right edge and the last row (the padded reads) included.
            let x0 = rng.random_range(0.0..w as f32);
            let x1 = if case % 2 == 0 {
                w as f32
            } else {
                rng.random_range(x0..=w as f32)
            };
            let out_w = if case < 200 {
                rng.random_range(1..200u32)
            } else {
                rng.random_range(220..230u32)
            };
            let coeffs = Coeffs::new(w, x0, x1.max(x0 + 0.01), out_w);
            let stride = out_w as usize * 3;
            let row_lo = rng.random_range(0..h) as usize;
            let rows = h as usize - row_lo;
            let in_stride = w as usize * 3;
            let mut want = vec![0u8; rows * stride];
            horizontal_pass_scalar(&img.data, in_stride, row_lo, &coeffs, &mut want, stride);
            let mut paths: Vec<(&str, Vec<u8>)> = Vec::new();
            let mut got = vec![1u8; rows * stride];
            horizontal_pass(&img.data, in_stride, row_lo, &coeffs, &mut got, stride);
            paths.push(("dispatched", got));
            #[cfg(target_arch = "x86_64")]
            {
                type Pass = unsafe fn(&[u8], usize, usize, &Coeffs, &mut [u8], usize);
                let simd: [(&str, bool, Pass); 3] = [
                    (
                        "avx512",
                        avx512::usable(&coeffs),
                        avx512::horizontal_pass_avx512,
                    ),
                    (
                        "sse4.1",
                        std::arch::is_x86_feature_detected!("sse4.1"),
                        x86::horizontal_pass_sse41,
                    ),
                    (
                        "avx2",
                        std::arch::is_x86_feature_detected!("avx2"),
                        x86::horizontal_pass_avx2,
                    ),
                ];
                avx512_cases += usize::from(simd[0].1);
                for (name, _, pass) in simd.into_iter().filter(|(_, present, _)| *present) {
                    let mut got = vec![2u8; rows * stride];
                    // SAFETY: the CPU has the pass's features (filtered on `present`).
                    unsafe { pass(&img.data, in_stride, row_lo, &coeffs, &mut got, stride) };
                    paths.push((name, got));
                }
            }
            for (path, got) in paths {
                assert_eq!(
                    got, want,
                    "{path}, case {case}: {w}x{h}, x {x0}..{x1} -> {out_w}"
                );
            }
        }
        // Where the CPU has the AVX-512 pass, most cases ran it (not the wide downscales).
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512vbmi") {
            assert!(
                avx512_cases > 150,
                "{avx512_cases} cases ran the AVX-512 pass"
            );
        }
    }

    #[test]
    fn simd_vertical_pass_equals_the_row_loop() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        for case in 0..200 {
            // Widths around the 16-byte chunks (the overlapping last chunk), the last 40
            // photo-sized columns shrunk to about 224 (many taps, odd counts).
            let (w, h) = if case < 160 {
                (rng.random_range(6..90u32), rng.random_range(1..60u32))
            } else {
                (224, rng.random_range(300..2600u32))
            };
            let stride = w as usize * 3;
            let y0 = rng.random_range(0.0..h as f32);
            let y1 = if case % 2 == 0 {
                h as f32
            } else {
                rng.random_range(y0..=h as f32)
            };
            let out_h = if case < 160 {
                rng.random_range(1..120u32)
            } else {
                rng.random_range(220..230u32)
            };
            let coeffs = Coeffs::new(h, y0, y1.max(y0 + 0.01), out_h);
            let (lo, hi) = coeffs.span();
            let tmp: Vec<u8> = (0..(hi - lo) as usize * stride)
                .map(|_| rng.random())
                .collect();
            let mut want = vec![0u8; out_h as usize * stride];
            vertical_pass_rows(&tmp, lo, &coeffs, &mut want, stride);
            let mut got = vec![1u8; out_h as usize * stride];
            vertical_pass(&tmp, lo, &coeffs, &mut got, stride);
            assert_eq!(got, want, "dispatched, case {case}: {w}x{h} y {y0}..{y1}");
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                let mut got = vec![2u8; out_h as usize * stride];
                // SAFETY: the CPU has AVX2 (checked); every stride here is at least 18.
                unsafe { x86::vertical_pass_avx2(&tmp, lo, &coeffs, &mut got, stride) };
                assert_eq!(got, want, "avx2, case {case}: {w}x{h} y {y0}..{y1}");
            }
            #[cfg(target_arch = "x86_64")]
            if avx512::vertical_usable(stride) {
                let mut got = vec![3u8; out_h as usize * stride];
                // SAFETY: the CPU has the features and the stride is at least 32 (checked).
                unsafe { avx512::vertical_pass_avx512(&tmp, lo, &coeffs, &mut got, stride) };
                assert_eq!(got, want, "avx512, case {case}: {w}x{h} y {y0}..{y1}");
            }
        }
    }

    #[test]
    fn read_region_covers_what_the_resize_reads() {
        let img = ramp(120, 90);
        let bx = CropBox {
            x0: 30.0,
            y0: 10.0,
            x1: 90.0,
            y1: 70.0,
        };
        let (x, y, w, h) = read_region(120, 90, bx, 17, 23);
        let region = img.crop(x, y, w, h);
        let shifted = CropBox {
            x0: bx.x0 - x as f32,
            y0: bx.y0 - y as f32,
            x1: bx.x1 - x as f32,
            y1: bx.y1 - y as f32,
        };
        assert_eq!(
            resize_u8_reference(&region, shifted, 17, 23),
            resize_u8_reference(&img, bx, 17, 23)
        );
    }
}
