//! Both resize passes with AVX-512 (F, BW, VBMI and VNNI). The same arithmetic as the AVX2
//! passes (`x86::horizontal_pass_avx2`, `x86::vertical_pass_avx2`), so the same bytes, with
//! twice the lanes: byte permutes (VBMI `vpermb`) spread the taps into 16-bit pairs in one
//! instruction where AVX2 needs loads, inserts and shuffles, and each multiply-add of a
//! pair of taps is one VNNI `vpdpwssd` (a `pmaddwd` and an add in one). In the horizontal
//! pass, four output pixels per register, one in each 128-bit lane.

use std::arch::x86_64::*;

use super::x86::{split_pairs, RowPairs, SPLIT_BITS};
use super::{Coeffs, PRECISION_BITS};

/// Output pixels per register.
const GROUP: usize = 4;

/// How far past a group's first tap byte its reads go: one 64-byte load per step.
const LOAD: usize = 64;

/// Whether [`horizontal_pass_avx512`] can run `coeffs` (it needs the four pixels' taps of a
/// step inside one 64-byte load: downscales up to about 6x) on this CPU.
pub(super) fn usable(coeffs: &Coeffs) -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512vbmi")
        && std::arch::is_x86_feature_detected!("avx512vnni")
        && coeffs.first.chunks_exact(GROUP).all(|f| {
            // Lane k reads bytes 3 * (f[k] - f[0]) + 0..6 of each step's load.
            (f[GROUP - 1] - f[0]) as usize * 3 + 6 <= LOAD
        })
}

/// A group of four output pixels: where its first pixel's taps start in a row, its steps
/// (tap pairs), and the byte permute that spreads a step's load into the four lanes.
struct Group {
    first: usize,
    steps: usize,
    spread: __m512i,
}

/// What every row block of one pass shares.
struct Pass<'a> {
    groups: Vec<Group>,
    /// Per group and tap pair, the `pmaddwd` operands of the high and low weight parts:
    /// 16 words each, lane k pixel k's pair of weights, four times.
    w_hi: Vec<i32>,
    w_lo: Vec<i32>,
    tap_pairs: usize,
    /// The byte permute from two packed groups (lane k: pixel k's 4 bytes, then pixel
    /// 4 + k's) to their eight pixels' 3 bytes in order.
    order: __m512i,
    coeffs: &'a Coeffs,
}

impl<'a> Pass<'a> {
    /// # Safety
    /// The CPU must support AVX-512 F.
    #[target_feature(enable = "avx512f")]
    unsafe fn new(coeffs: &'a Coeffs, out_w: usize) -> Self {
        let tap_pairs = coeffs.ksize.div_ceil(2);
        let count = out_w / GROUP;
        let (mut w_hi, mut w_lo) = (
            vec![0; count * tap_pairs * 16],
            vec![0; count * tap_pairs * 16],
        );
        let mut groups = Vec::with_capacity(count);
        for g in 0..count {
            let px = g * GROUP..(g + 1) * GROUP;
            let first = coeffs.first[px.start] as usize * 3;
            let mut idx = [0u8; 64];
            for (k, xx) in px.clone().enumerate() {
                let o = (coeffs.first[xx] as usize * 3 - first) as u8;
                // Words r0 r1 g0 g1 b0 b1 (low bytes; the high bytes are zeroed by the mask).
                for (w, b) in [0u8, 3, 1, 4, 2, 5].into_iter().enumerate() {
                    idx[16 * k + 2 * w] = o + b;
                }
                let n = coeffs.count[xx] as usize;
                let weights = &coeffs.weights[xx * coeffs.ksize..][..n];
                // Tap pairs past the pixel's count keep weight 0.
                for (j, (h, l)) in split_pairs(weights).enumerate() {
                    let at = (g * tap_pairs + j) * 16 + 4 * k;
                    w_hi[at..at + 4].fill(h);
                    w_lo[at..at + 4].fill(l);
                }
            }
            let steps = px
                .map(|xx| (coeffs.count[xx] as usize).div_ceil(2))
                .max()
                .unwrap_or(0);
            // SAFETY: AVX-512 F is enabled; the load reads the 64 bytes of `idx`.
            let spread = unsafe { _mm512_loadu_si512(idx.as_ptr().cast()) };
            groups.push(Group {
                first,
                steps,
                spread,
            });
        }
        let order: [u8; 64] = std::array::from_fn(|i| {
            let (p, c) = ((i / 3).min(7), i % 3);
            (16 * (p % 4) + 4 * (p / 4) + c) as u8
        });
        Pass {
            groups,
            w_hi,
            w_lo,
            tap_pairs,
            // SAFETY: AVX-512 F is enabled; the load reads the 64 bytes of `order`.
            order: unsafe { _mm512_loadu_si512(order.as_ptr().cast()) },
            coeffs,
        }
    }

    /// How many bytes past a row's start the reads of this pass go.
    fn reach(&self) -> usize {
        self.groups
            .iter()
            .map(|g| g.first + 6 * g.steps.saturating_sub(1) + LOAD)
            .max()
            .unwrap_or(0)
    }
}

/// [`super::horizontal_pass`] with AVX-512: two rows at a time, four pixels per register.
///
/// # Safety
/// The CPU must support AVX-512 F, BW, VBMI and VNNI, and [`usable`] must hold for `coeffs`.
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi,avx512vnni")]
pub(super) unsafe fn horizontal_pass_avx512(
    src: &[u8],
    in_stride: usize,
    row_lo: usize,
    coeffs: &Coeffs,
    out: &mut [u8],
    out_stride: usize,
) {
    let out_w = out_stride / 3;
    // SAFETY: AVX-512 F is enabled.
    let pass = unsafe { Pass::new(coeffs, out_w) };
    // Rows with `reach` bytes of `src` after their start are read in place; the last ones
    // from zero-padded copies (reads past a pixel's taps have weight 0).
    let reach = pass.reach().max(in_stride);
    let rows = RowPairs {
        src,
        in_stride,
        row_lo,
        reach,
    };
    rows.each(
        out,
        out_stride,
        // SAFETY: the features are enabled; the rows are `reach` bytes long or more.
        |r, o| unsafe { row_block(r, o, &pass) },
        // SAFETY: as above.
        |r, o| unsafe { row_block(r, o, &pass) },
    );
}

/// `R` rows (each at least `pass.reach()` bytes) resampled into `outs`, eight pixels (two
/// groups) packed and stored together.
///
/// # Safety
/// The CPU must support AVX-512 F, BW, VBMI and VNNI; every row holds `pass.reach()` bytes.
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi,avx512vnni")]
#[allow(unused_unsafe)] // the intrinsics are safe here from Rust 1.87 on, unsafe before
unsafe fn row_block<const R: usize>(rows: [&[u8]; R], outs: [&mut [u8]; R], pass: &Pass<'_>) {
    let out_w = outs[0].len() / 3;
    let groups = pass.groups.len();
    // SAFETY (whole block): the features are enabled; `group_sums` has this function's
    // contract; each masked store writes 24 or 12 bytes at `24 * q`, inside the row (the
    // groups cover `out_w / 4 * 4` pixels).
    unsafe {
        let order = pass.order;
        let zero = _mm512_setzero_si512();
        let mut g = 0;
        while g < groups {
            let v0 = group_sums(&rows, pass, g);
            let two = g + 1 < groups;
            let v1 = if two {
                group_sums(&rows, pass, g + 1)
            } else {
                v0
            };
            let len = if two { 24 } else { 12 };
            for k in 0..R {
                // Saturating packs: clip8 (negative sums to 0, past 255 to 255).
                let words = _mm512_packus_epi32(
                    _mm512_max_epi32(v0[k], zero),
                    _mm512_max_epi32(v1[k], zero),
                );
                let bytes = _mm512_packus_epi16(words, words);
                let px = _mm512_permutexvar_epi8(order, bytes);
                let out = &mut *outs[k];
                assert!(12 * g + len <= out.len());
                _mm512_mask_storeu_epi8(out.as_mut_ptr().add(12 * g).cast(), (1u64 << len) - 1, px);
            }
            g += 2;
        }
    }
    // The last pixels past the groups: on their own.
    for (row, out) in rows.iter().zip(outs) {
        for xx in groups * GROUP..out_w {
            out[3 * xx..3 * xx + 3].copy_from_slice(&super::resample_pixel(row, pass.coeffs, xx));
        }
    }
}

/// Group `g`'s sums in each of the `R` rows, shifted down to the output range (lane k pixel
/// k: r, g, b and a discarded lane; not yet clamped).
///
/// # Safety
/// As [`row_block`].
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi,avx512vnni")]
#[allow(unused_unsafe)] // the intrinsics are safe here from Rust 1.87 on, unsafe before
#[inline]
unsafe fn group_sums<const R: usize>(rows: &[&[u8]; R], pass: &Pass<'_>, g: usize) -> [__m512i; R] {
    let group = &pass.groups[g];
    // Even bytes of the first 6 words of each lane: the spread's low bytes; the rest zero.
    const KEEP: u64 = 0x0555_0555_0555_0555;
    // SAFETY: the features are enabled; step `s` loads 64 bytes at `first + 6 * s`, inside
    // each row (`reach`); the weight reads stay in `w_hi`/`w_lo` (g * tap_pairs + steps).
    unsafe {
        let at = g * pass.tap_pairs * 16;
        let (mut hi, mut lo) = (pass.w_hi.as_ptr().add(at), pass.w_lo.as_ptr().add(at));
        let mut acc_hi = [_mm512_setzero_si512(); R];
        let mut acc_lo = [_mm512_set1_epi32(1 << (PRECISION_BITS - 1)); R];
        for step in 0..group.steps {
            let (h, l) = (_mm512_loadu_si512(hi.cast()), _mm512_loadu_si512(lo.cast()));
            for k in 0..R {
                let bytes = _mm512_loadu_si512(rows[k].as_ptr().add(group.first + 6 * step).cast());
                let v = _mm512_maskz_permutexvar_epi8(KEEP, group.spread, bytes);
                acc_hi[k] = _mm512_dpwssd_epi32(acc_hi[k], v, h);
                acc_lo[k] = _mm512_dpwssd_epi32(acc_lo[k], v, l);
            }
            (hi, lo) = (hi.add(16), lo.add(16));
        }
        std::array::from_fn(|k| {
            let acc = _mm512_add_epi32(
                _mm512_slli_epi32::<{ SPLIT_BITS as u32 }>(acc_hi[k]),
                acc_lo[k],
            );
            _mm512_srai_epi32::<{ PRECISION_BITS }>(acc)
        })
    }
}

/// Whether [`vertical_pass_avx512`] can run on this CPU for rows of `stride` bytes.
pub(super) fn vertical_usable(stride: usize) -> bool {
    stride >= 32
        && std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512vbmi")
        && std::arch::is_x86_feature_detected!("avx512vnni")
}

/// The vertical pass 32 bytes of a row at a time, as `x86::vertical_pass_avx2` does 16: two
/// input rows' 32 bytes side by side in one register, spread by byte permutes into 16-bit
/// pairs (row t0, row t1) for pixels 0-15 and 16-31, multiplied-and-added with the split
/// weights; the same sums, so the same bytes.
///
/// # Safety
/// The CPU must support AVX-512 F, BW, VBMI and VNNI; `stride >= 32`.
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi,avx512vnni")]
#[allow(unused_unsafe)] // the intrinsics are safe here from Rust 1.87 on, unsafe before
pub(super) unsafe fn vertical_pass_avx512(
    tmp: &[u8],
    row_offset: u32,
    coeffs: &Coeffs,
    out: &mut [u8],
    stride: usize,
) {
    assert!(
        stride >= 32,
        "vertical_pass_avx512 needs rows of 32 bytes or more"
    );
    // Words (a_j, b_j) for pixels j = 0..16 and 16..32 of a register holding 32 bytes of row
    // a, then 32 of row b; the high bytes are zeroed by the mask.
    let spread = |first: usize| -> [u8; 64] {
        std::array::from_fn(|i| match i % 4 {
            0 => (first + i / 4) as u8,
            2 => (32 + first + i / 4) as u8,
            _ => 0,
        })
    };
    const LOW_BYTES: u64 = 0x5555_5555_5555_5555;
    let (s0, s1) = (spread(0), spread(16));
    let starts: Vec<usize> = (0..stride.div_ceil(32))
        .map(|c| (32 * c).min(stride - 32))
        .collect();
    let mut pairs: Vec<(__m512i, __m512i)> = Vec::with_capacity(coeffs.ksize.div_ceil(2));
    // SAFETY (whole block): the features are enabled; tap `t` reads bytes `t * stride + x..
    // +32` of `rows` with `t < n` and `x + 32 <= stride`, so inside it; the stores write
    // `out_row[x..x + 32]`, inside it.
    unsafe {
        let (s0, s1) = (
            _mm512_loadu_si512(s0.as_ptr().cast()),
            _mm512_loadu_si512(s1.as_ptr().cast()),
        );
        let (half, zero) = (
            _mm512_set1_epi32(1 << (PRECISION_BITS - 1)),
            _mm512_setzero_si512(),
        );
        for (yy, out_row) in out.chunks_exact_mut(stride).enumerate() {
            let n = coeffs.count[yy] as usize;
            let weights = &coeffs.weights[yy * coeffs.ksize..][..n];
            let first_row = (coeffs.first[yy] - row_offset) as usize;
            let rows = &tmp[first_row * stride..(first_row + n) * stride];
            pairs.clear();
            pairs.extend(
                split_pairs(weights).map(|(h, l)| (_mm512_set1_epi32(h), _mm512_set1_epi32(l))),
            );
            for &x in &starts {
                let base = rows.as_ptr().add(x);
                let mut acc = [zero, zero, half, half];
                for (p, &(hi, lo)) in pairs.iter().enumerate() {
                    let t0 = 2 * p;
                    let t1 = if t0 + 1 < n { t0 + 1 } else { t0 };
                    let both = _mm512_inserti64x4::<1>(
                        _mm512_castsi256_si512(_mm256_loadu_si256(base.add(t0 * stride).cast())),
                        _mm256_loadu_si256(base.add(t1 * stride).cast()),
                    );
                    let p0 = _mm512_maskz_permutexvar_epi8(LOW_BYTES, s0, both);
                    let p1 = _mm512_maskz_permutexvar_epi8(LOW_BYTES, s1, both);
                    acc[0] = _mm512_dpwssd_epi32(acc[0], p0, hi);
                    acc[1] = _mm512_dpwssd_epi32(acc[1], p1, hi);
                    acc[2] = _mm512_dpwssd_epi32(acc[2], p0, lo);
                    acc[3] = _mm512_dpwssd_epi32(acc[3], p1, lo);
                }
                for (i, (h, l)) in [(acc[0], acc[2]), (acc[1], acc[3])].into_iter().enumerate() {
                    let sum = _mm512_add_epi32(_mm512_slli_epi32::<{ SPLIT_BITS as u32 }>(h), l);
                    let v = _mm512_max_epi32(_mm512_srai_epi32::<{ PRECISION_BITS }>(sum), zero);
                    // Unsigned saturation to bytes: clip8.
                    let bytes = _mm512_cvtusepi32_epi8(v);
                    _mm_storeu_si128(out_row.as_mut_ptr().add(x + 16 * i).cast(), bytes);
                }
            }
        }
    }
}
