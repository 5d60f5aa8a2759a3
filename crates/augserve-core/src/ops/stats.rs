//! Per-channel statistics of an output batch, for telemetry: mean, standard deviation, mean
//! absolute deviation (robust to outliers), the fraction of clipped pixels and percentiles.

use multiversion::multiversion;

use crate::ops::mix::ImageSums;
use crate::spec::{DType, Layout};

#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct BatchStats {
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// Mean absolute deviation from the mean.
    pub mad: [f32; 3],
    /// Fraction of values at the ends of the u8 range (0 or 255 before normalisation).
    pub clipped: [f32; 3],
    /// Per channel, the output values at the [`PERCENTILES`] levels, estimated from a
    /// deterministic sample (`output_percentiles`); None when the batch never reached host
    /// memory (CUDA IPC delivery).
    pub percentiles: Option<[[f32; 3]; PERCENTILES.len()]>,
}

/// The percentile levels reported per channel.
pub const PERCENTILES: [f32; 5] = [1.0, 5.0, 50.0, 95.0, 99.0];

/// At most this many values per channel are sampled for the percentiles: telemetry needs
/// them to a fraction of a level, not exactly, and sorting the whole batch would cost more
/// than normalising it.
pub const PERCENTILE_SAMPLE: usize = 1 << 14;

/// Per-channel percentiles of an output tensor of `n` images of `hw` pixels (`PERCENTILES`,
/// linearly interpolated between the closest ranks as numpy does), from a sample of at most
/// [`PERCENTILE_SAMPLE`] values per channel, one from each equal run of (image, pixel)
/// positions at a fixed pseudo-random offset: the same output always gives the same figures,
/// whichever device produced it. None for an empty or short tensor.
pub fn output_percentiles(
    data: &[u8],
    n: usize,
    hw: usize,
    dtype: DType,
    layout: Layout,
) -> Option<[[f32; 3]; PERCENTILES.len()]> {
    let total = n.checked_mul(hw)?;
    let size = dtype.size_bytes();
    if total == 0 || data.len() < total.checked_mul(3 * size)? {
        return None;
    }
    let count = total.min(PERCENTILE_SAMPLE);
    let stride = total / count;
    // The sampled pixels' element indices, one per channel.
    let positions = (0..count).map(move |j| {
        // One value from each run of `stride`, at a hashed offset: a plain stride would
        // alias with image widths (a stride of 196 over 224-wide rows visits 8 columns).
        let offset = ((j as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as usize % stride;
        let at = j * stride + offset;
        let (image, pixel) = (at / hw, at % hw);
        std::array::from_fn(|c| match layout {
            Layout::Nchw => (image * 3 + c) * hw + pixel,
            Layout::Nhwc => (image * hw + pixel) * 3 + c,
        })
    });
    let samples = sorted_samples(data, dtype, positions);
    let per_channel: [[f32; PERCENTILES.len()]; 3] = std::array::from_fn(|c| {
        let sample = &samples[c];
        PERCENTILES.map(|q| {
            let rank = f64::from(q) / 100.0 * (count - 1) as f64;
            let (lo, frac) = (rank.floor() as usize, rank - rank.floor());
            let hi = (lo + 1).min(count - 1);
            let (a, b) = (f64::from(sample[lo]), f64::from(sample[hi]));
            (a + (b - a) * frac) as f32
        })
    });
    let out = std::array::from_fn(|level| per_channel.map(|p| p[level]));
    Some(out)
}

/// Per channel, the values of `data` (elements of `dtype`) at `positions` (each sampled
/// pixel's element index per channel), sorted in `f32::total_cmp`'s order. uint8 and float16
/// values are counted into one bin per bit pattern and read back in order: the same sorted
/// values a comparison sort gives, at a fraction of its cost. float32 values are sorted.
fn sorted_samples(
    data: &[u8],
    dtype: DType,
    positions: impl Iterator<Item = [usize; 3]> + Clone,
) -> [Vec<f32>; 3] {
    let elements = match dtype {
        DType::Uint8 => gather_elements::<1>(data, positions),
        DType::Float16 => gather_elements::<2>(data, positions),
        DType::Float32 => gather_elements::<4>(data, positions),
    };
    match dtype {
        DType::Uint8 => elements.map(|values| {
            let mut bins = [0u32; 256];
            for v in values {
                bins[v as usize] += 1;
            }
            from_bins(&bins, |v| v as f32)
        }),
        DType::Float16 => {
            // IEEE's total order of halves as unsigned keys: negatives reversed below the
            // positives, as f32::total_cmp orders their f32 values.
            let key = |bits: u16| {
                if bits & 0x8000 != 0 {
                    !bits
                } else {
                    bits | 0x8000
                }
            };
            let unkey = |k: usize| {
                let k = k as u16;
                half::f16::from_bits(if k & 0x8000 != 0 { k & 0x7FFF } else { !k }).to_f32()
            };
            let mut bins = vec![0u32; 1 << 16];
            elements.map(|values| {
                bins.fill(0);
                for v in values {
                    bins[usize::from(key(v as u16))] += 1;
                }
                from_bins(&bins, unkey)
            })
        }
        DType::Float32 => elements.map(|values| {
            let mut v: Vec<f32> = values.into_iter().map(f32::from_bits).collect();
            v.sort_unstable_by(f32::total_cmp);
            v
        }),
    }
}

/// How many sampled pixels ahead [`gather_elements`] prefetches.
const PREFETCH_AHEAD: usize = 32;

/// Per channel, the little-endian `SIZE`-byte elements of `data` at `positions`, as u32
/// bit patterns. The sampled positions are far apart in a tensor that is out of cache (tens
/// of MB, just written by the batch ops or a device), so each read is a cache and TLB miss;
/// prefetching some pixels ahead overlaps them (float16 NCHW, batch 256, out of cache on the
/// 2-core Xeon VM: 10.1-11.5 us per image read one after another, 3.3-3.5 with prefetching).
fn gather_elements<const SIZE: usize>(
    data: &[u8],
    positions: impl Iterator<Item = [usize; 3]> + Clone,
) -> [Vec<u32>; 3] {
    let (count, _) = positions.size_hint();
    let mut out: [Vec<u32>; 3] = std::array::from_fn(|_| Vec::with_capacity(count));
    let mut ahead = positions.clone().skip(PREFETCH_AHEAD);
    for at in positions {
        if let Some(next) = ahead.next() {
            // One prefetch per cache line (an NHWC pixel's channels share one).
            let mut line = usize::MAX;
            for i in next {
                if (SIZE * i) / 64 != line {
                    line = (SIZE * i) / 64;
                    prefetch(data, SIZE * i);
                }
            }
        }
        for (values, i) in out.iter_mut().zip(at) {
            let mut le = [0u8; 4];
            le[..SIZE].copy_from_slice(&data[SIZE * i..SIZE * (i + 1)]);
            values.push(u32::from_le_bytes(le));
        }
    }
    out
}

/// Asks the CPU to bring `data[at]`'s cache line in (a hint; nothing elsewhere).
#[inline]
fn prefetch(data: &[u8], at: usize) {
    #[cfg(target_arch = "x86_64")]
    if let Some(byte) = data.get(at) {
        // SAFETY: SSE is part of x86-64; a prefetch never faults, and the address is a byte
        // of `data`.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                std::ptr::from_ref(byte).cast(),
            )
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (data, at);
}

/// The values of counted bins in bin order, each as often as counted.
fn from_bins(bins: &[u32], value: impl Fn(usize) -> f32) -> Vec<f32> {
    let mut out = Vec::with_capacity(bins.iter().map(|&n| n as usize).sum());
    for (k, &n) in bins.iter().enumerate().filter(|(_, &n)| n > 0) {
        out.extend(std::iter::repeat_n(value(k), n as usize));
    }
    out
}

/// Sum of `|x - mean[c]|` per channel over one output image (`data` is that image only).
/// Values are widened to f32 a block at a time (half via F16C where present) and summed in
/// eight f32 lanes per block, then in f64 across blocks.
#[multiversion(targets("x86_64+avx2", "x86_64+sse4.1"))]
pub fn abs_dev_sums(
    data: &[u8],
    hw: usize,
    dtype: DType,
    layout: Layout,
    mean: [f64; 3],
) -> [f64; 3] {
    use half::slice::HalfFloatSliceExt;
    const BLOCK: usize = 768; // a multiple of 3, so NHWC blocks start at channel 0
    if dtype == DType::Uint8 {
        return abs_dev_sums_u8(data, hw, layout, mean);
    }
    let size = dtype.size_bytes();
    let mut vals = [0f32; BLOCK];
    let mut halfs = [half::f16::ZERO; BLOCK];
    let mut out = [0.0f64; 3];
    let total = (hw * 3).min(data.len() / size);
    let mut start = 0;
    while start < total {
        let n = BLOCK.min(total - start);
        let bytes = &data[start * size..(start + n) * size];
        let v = &mut vals[..n];
        match dtype {
            DType::Uint8 => v
                .iter_mut()
                .zip(bytes)
                .for_each(|(o, &b)| *o = f32::from(b)),
            DType::Float16 => match halfs_in_place(bytes) {
                Some(h) => h.convert_to_f32_slice(v),
                None => {
                    let h = &mut halfs[..n];
                    h.iter_mut()
                        .zip(bytes.chunks_exact(2))
                        .for_each(|(o, b)| *o = half::f16::from_le_bytes([b[0], b[1]]));
                    h.convert_to_f32_slice(v);
                }
            },
            DType::Float32 => v
                .iter_mut()
                .zip(bytes.chunks_exact(4))
                .for_each(|(o, b)| *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        }
        continue_block(&mut out, v, start, hw, layout, mean);
        start += n;
    }
    out
}

/// [`abs_dev_sums`] of uint8 values, in integers: with `t = floor(mean)` and `f = mean - t`,
/// `|x - mean| = |x - t| - f` where `x > t` and `|x - t| + f` elsewhere, so the sum is
/// `sum |x - t| + f * (count(x <= t) - count(x > t))`. Both sums are exact integers, counted
/// 64 or 32 bytes at a time where the CPU has AVX-512 or AVX2 (the float loop was 4 % of the CPU path's time on
/// ImageNet-size uint8 batches); the figure is exact, and the same whichever way it is split.
fn abs_dev_sums_u8(data: &[u8], hw: usize, layout: Layout, mean: [f64; 3]) -> [f64; 3] {
    let data = &data[..(hw * 3).min(data.len())];
    let t = mean.map(|m| m.floor().clamp(0.0, 255.0) as u8);
    let (dev, above, count) = match layout {
        Layout::Nhwc => deviation_counts_nhwc(data, t),
        Layout::Nchw => {
            let mut out = ([0u64; 3], [0u64; 3], [0u64; 3]);
            for (c, plane) in data.chunks(hw.max(1)).take(3).enumerate() {
                let (d, a) = deviation_counts(plane, t[c]);
                (out.0[c], out.1[c], out.2[c]) = (d, a, plane.len() as u64);
            }
            out
        }
    };
    std::array::from_fn(|c| {
        let f = mean[c] - f64::from(t[c]);
        dev[c] as f64 + f * (count[c] as f64 - 2.0 * above[c] as f64)
    })
}

/// `sum |x - t|` and `count(x > t)` over `values`.
fn deviation_counts(values: &[u8], t: u8) -> (u64, u64) {
    let (mut dev, mut above) = (0u64, 0u64);
    // In runs short enough for u32 sums, which vectorise.
    for run in values.chunks(1 << 16) {
        let d: u32 = run.iter().map(|&x| u32::from(x.abs_diff(t))).sum();
        let a: u32 = run.iter().map(|&x| u32::from(x > t)).sum();
        (dev, above) = (dev + u64::from(d), above + u64::from(a));
    }
    (dev, above)
}

/// Per channel of NHWC bytes: `sum |x - t[c]|`, `count(x > t[c])` and the number of values.
fn deviation_counts_nhwc(data: &[u8], t: [u8; 3]) -> ([u64; 3], [u64; 3], [u64; 3]) {
    let count = std::array::from_fn(|c| ((data.len() + 2 - c) / 3) as u64);
    let mut done = 0;
    let (mut dev, mut above) = ([0u64; 3], [0u64; 3]);
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512bw") {
        // SAFETY: the CPU has AVX-512 BW (and so F), checked just above.
        (done, dev, above) = unsafe { x86::deviation_counts_nhwc_avx512(data, t) };
    } else if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above.
        (done, dev, above) = unsafe { x86::deviation_counts_nhwc_avx2(data, t) };
    }
    // The rest (or all, without AVX2) from where the SIMD part stopped: a multiple of 3.
    for (i, &x) in data[done..].iter().enumerate() {
        let c = i % 3;
        dev[c] += u64::from(x.abs_diff(t[c]));
        above[c] += u64::from(x > t[c]);
    }
    (dev, above, count)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// [`super::deviation_counts_nhwc`] over the leading 96-byte blocks (32 pixels, three
    /// registers whose channel pattern repeats): per register `|x - t|` and `x > t` as bytes
    /// (saturating subtractions), split per channel by multiplying-and-adding byte pairs with
    /// a 0/1 channel mask (`pmaddubsw`: adjacent bytes are different channels, so a 16-bit
    /// lane gets at most 255 per register), summed in 16 bits for 63 registers, then in 32.
    /// Returns the bytes done, and the sums.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    #[allow(unused_unsafe)] // the intrinsics are safe here from Rust 1.87 on, unsafe before
    pub(super) unsafe fn deviation_counts_nhwc_avx2(
        data: &[u8],
        t: [u8; 3],
    ) -> (usize, [u64; 3], [u64; 3]) {
        const GROUP: usize = 21; // blocks per 16-bit run: 63 registers * 255 < 2^15
        let blocks = data.len() / 96;
        let (mut thresholds, mut masks) = ([0u8; 96], [[0u8; 96]; 3]);
        for i in 0..96 {
            thresholds[i] = t[i % 3];
            masks[i % 3][i] = 1;
        }
        // SAFETY: AVX2 is enabled; the pattern loads read 32 bytes at 0, 32, 64 of 96-byte
        // arrays; the data loads read block `b < blocks` at 96 * b + 32 * j + 32 <= len.
        unsafe {
            let load = |a: &[u8; 96], j: usize| _mm256_loadu_si256(a.as_ptr().add(32 * j).cast());
            let tv: [__m256i; 3] = std::array::from_fn(|j| load(&thresholds, j));
            let mv: [[__m256i; 3]; 3] =
                std::array::from_fn(|j| std::array::from_fn(|c| load(&masks[c], j)));
            let (one8, one16) = (_mm256_set1_epi8(1), _mm256_set1_epi16(1));
            let total = |v: __m256i| {
                let mut lanes = [0u32; 8];
                _mm256_storeu_si256(lanes.as_mut_ptr().cast(), v);
                lanes.iter().map(|&x| u64::from(x)).sum::<u64>()
            };
            let (mut dev, mut above) = ([0u64; 3], [0u64; 3]);
            for group in (0..blocks).step_by(GROUP) {
                let (mut dev16, mut above16) =
                    ([_mm256_setzero_si256(); 3], [_mm256_setzero_si256(); 3]);
                for b in group..blocks.min(group + GROUP) {
                    for j in 0..3 {
                        let x = _mm256_loadu_si256(data.as_ptr().add(96 * b + 32 * j).cast());
                        let up = _mm256_subs_epu8(x, tv[j]);
                        let dev = _mm256_or_si256(up, _mm256_subs_epu8(tv[j], x));
                        let above = _mm256_min_epu8(up, one8);
                        for c in 0..3 {
                            dev16[c] =
                                _mm256_add_epi16(dev16[c], _mm256_maddubs_epi16(dev, mv[j][c]));
                            above16[c] =
                                _mm256_add_epi16(above16[c], _mm256_maddubs_epi16(above, mv[j][c]));
                        }
                    }
                }
                // Into u64 per run: any image size, no 32-bit lane wraps.
                for c in 0..3 {
                    dev[c] += total(_mm256_madd_epi16(dev16[c], one16));
                    above[c] += total(_mm256_madd_epi16(above16[c], one16));
                }
            }
            (96 * blocks, dev, above)
        }
    }

    /// [`deviation_counts_nhwc_avx2`] with 512-bit registers: 192-byte blocks (64 pixels).
    ///
    /// # Safety
    /// The CPU must support AVX-512 F and BW.
    #[target_feature(enable = "avx512f,avx512bw")]
    #[allow(unused_unsafe)] // the intrinsics are safe here from Rust 1.87 on, unsafe before
    pub(super) unsafe fn deviation_counts_nhwc_avx512(
        data: &[u8],
        t: [u8; 3],
    ) -> (usize, [u64; 3], [u64; 3]) {
        const GROUP: usize = 21; // blocks per 16-bit run: 63 registers * 255 < 2^15
        const BLOCK: usize = 192;
        let blocks = data.len() / BLOCK;
        let (mut thresholds, mut masks) = ([0u8; BLOCK], [[0u8; BLOCK]; 3]);
        for i in 0..BLOCK {
            thresholds[i] = t[i % 3];
            masks[i % 3][i] = 1;
        }
        // SAFETY: the features are enabled; the pattern loads read 64 bytes at 0, 64, 128 of
        // 192-byte arrays; the data loads read block `b < blocks` at 192 * b + 64 * j + 64
        // <= len.
        unsafe {
            let load =
                |a: &[u8; BLOCK], j: usize| _mm512_loadu_si512(a.as_ptr().add(64 * j).cast());
            let tv: [__m512i; 3] = std::array::from_fn(|j| load(&thresholds, j));
            let mv: [[__m512i; 3]; 3] =
                std::array::from_fn(|j| std::array::from_fn(|c| load(&masks[c], j)));
            let (one8, one16) = (_mm512_set1_epi8(1), _mm512_set1_epi16(1));
            let zero = _mm512_setzero_si512();
            // A run's 16-bit sums widened: at most 63 * 255 * 2 per 32-bit lane.
            let total = |v: __m512i| _mm512_reduce_add_epi32(v) as u32 as u64;
            let (mut dev, mut above) = ([0u64; 3], [0u64; 3]);
            for group in (0..blocks).step_by(GROUP) {
                let (mut dev16, mut above16) = ([zero; 3], [zero; 3]);
                for b in group..blocks.min(group + GROUP) {
                    for j in 0..3 {
                        let x = _mm512_loadu_si512(data.as_ptr().add(BLOCK * b + 64 * j).cast());
                        let up = _mm512_subs_epu8(x, tv[j]);
                        let dev = _mm512_or_si512(up, _mm512_subs_epu8(tv[j], x));
                        let above = _mm512_min_epu8(up, one8);
                        for c in 0..3 {
                            dev16[c] =
                                _mm512_add_epi16(dev16[c], _mm512_maddubs_epi16(dev, mv[j][c]));
                            above16[c] =
                                _mm512_add_epi16(above16[c], _mm512_maddubs_epi16(above, mv[j][c]));
                        }
                    }
                }
                // Into u64 per run: any image size, no 32-bit lane wraps.
                for c in 0..3 {
                    dev[c] += total(_mm512_madd_epi16(dev16[c], one16));
                    above[c] += total(_mm512_madd_epi16(above16[c], one16));
                }
            }
            (BLOCK * blocks, dev, above)
        }
    }
}

/// `bytes` as half floats without a copy, where they already are in memory: on a
/// little-endian host, when 2-aligned (as output buffers are).
fn halfs_in_place(bytes: &[u8]) -> Option<&[half::f16]> {
    if cfg!(target_endian = "little") {
        bytemuck::try_cast_slice(bytes).ok()
    } else {
        None
    }
}

/// Adds the absolute deviations of one block `v` (elements `start..` of the image) to `out`.
#[inline]
fn continue_block(
    out: &mut [f64; 3],
    v: &[f32],
    start: usize,
    hw: usize,
    layout: Layout,
    mean: [f64; 3],
) {
    let n = v.len();
    match layout {
        Layout::Nchw => {
            // A block may straddle two planes: split it at the plane boundary.
            let mut k = 0;
            while k < n {
                let c = (start + k) / hw.max(1);
                let end = n.min((c + 1) * hw - start);
                out[c.min(2)] += abs_dev_lanes(&v[k..end], mean[c.min(2)] as f32);
                k = end;
            }
        }
        Layout::Nhwc => {
            let mut lanes = [[0f32; 3]; 8];
            let mut px = v.chunks_exact(24);
            for ch in &mut px {
                for (k, lane) in lanes.iter_mut().enumerate() {
                    for c in 0..3 {
                        lane[c] += (ch[k * 3 + c] - mean[c] as f32).abs();
                    }
                }
            }
            for lane in &lanes {
                for c in 0..3 {
                    out[c] += f64::from(lane[c]);
                }
            }
            for p in px.remainder().chunks_exact(3) {
                for c in 0..3 {
                    out[c] += f64::from((p[c] - mean[c] as f32).abs());
                }
            }
        }
    }
}

/// `sum |x - m|` over `v` in eight f32 lanes, returned in f64.
#[inline]
fn abs_dev_lanes(v: &[f32], m: f32) -> f64 {
    let mut lanes = [0f32; 8];
    let mut chunks = v.chunks_exact(8);
    for ch in &mut chunks {
        for k in 0..8 {
            lanes[k] += (ch[k] - m).abs();
        }
    }
    let mut sum: f64 = lanes.iter().map(|&x| f64::from(x)).sum();
    for &x in chunks.remainder() {
        sum += f64::from((x - m).abs());
    }
    sum
}

/// Combines per-image sums (in image order, so the result does not depend on threads) into
/// the batch statistics; `abs_dev` computes each image's absolute deviations from the batch
/// mean (a second pass, since the mean must be known first).
pub fn combine_stats(
    sums: &[ImageSums],
    hw: usize,
    abs_dev: impl FnOnce([f64; 3]) -> Vec<[f64; 3]>,
) -> BatchStats {
    let n = (sums.len() * hw) as f64;
    if n == 0.0 {
        return BatchStats::default();
    }
    let mut total = ImageSums::default();
    for s in sums {
        for c in 0..3 {
            total.sum[c] += s.sum[c];
            total.sum_sq[c] += s.sum_sq[c];
            total.clipped[c] += s.clipped[c];
        }
    }
    let mean = total.sum.map(|s| s / n);
    let mut abs = [0.0f64; 3];
    for a in abs_dev(mean) {
        for c in 0..3 {
            abs[c] += a[c];
        }
    }
    let mut st = BatchStats::default();
    for c in 0..3 {
        st.mean[c] = mean[c] as f32;
        st.std[c] = (total.sum_sq[c] / n - mean[c] * mean[c]).max(0.0).sqrt() as f32;
        st.mad[c] = (abs[c] / n) as f32;
        st.clipped[c] = (total.clipped[c] as f64 / n) as f32;
    }
    st
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_of_a_small_u8_tensor() {
        // One image, two pixels, NHWC: channel 0 = [0, 255], 1 = [10, 20], 2 = [5, 5].
        let data = [0u8, 10, 5, 255, 20, 5];
        let sums = ImageSums {
            sum: [255.0, 30.0, 10.0],
            sum_sq: [65025.0, 500.0, 50.0],
            clipped: [2, 0, 0],
        };
        let s = combine_stats(&[sums], 2, |m| {
            vec![abs_dev_sums(&data, 2, DType::Uint8, Layout::Nhwc, m)]
        });
        assert_eq!(s.mean, [127.5, 15.0, 5.0]);
        assert_eq!(s.std, [127.5, 5.0, 0.0]);
        assert_eq!(s.mad, [127.5, 5.0, 0.0]);
        assert_eq!(s.clipped, [1.0, 0.0, 0.0]);
    }

    /// The integer uint8 sums equal `sum |x - mean|` in f64, in both layouts, at sizes around
    /// the 96-byte SIMD blocks and the 16-bit runs, with means at, between and beside levels.
    #[test]
    fn u8_abs_dev_sums_equal_the_float_sums() {
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for hw in [1usize, 2, 31, 32, 33, 64, 65, 700, 2016, 2017, 50176] {
            let data: Vec<u8> = (0..hw * 3).map(|_| next() as u8).collect();
            for mean in [
                [0.0, 255.0, 127.5],
                [3.25, 200.0, 99.999],
                [254.7, 0.3, 128.0],
            ] {
                for layout in [Layout::Nhwc, Layout::Nchw] {
                    let channel = |i: usize| match layout {
                        Layout::Nhwc => i % 3,
                        Layout::Nchw => i / hw,
                    };
                    let mut want = [0f64; 3];
                    for (i, &v) in data.iter().enumerate() {
                        want[channel(i)] += (f64::from(v) - mean[channel(i)]).abs();
                    }
                    let got = abs_dev_sums(&data, hw, DType::Uint8, layout, mean);
                    #[cfg(target_arch = "x86_64")]
                    if layout == Layout::Nhwc {
                        simd_deviation_counts_equal_the_scalar_ones(&data, mean);
                    }
                    for c in 0..3 {
                        assert!(
                            (got[c] - want[c]).abs() <= 1e-9 * want[c].max(1.0),
                            "{hw} {layout:?} {mean:?}: {got:?} vs {want:?}"
                        );
                    }
                }
            }
        }
    }

    /// Both SIMD deviation counters (where the CPU has them) give the scalar sums.
    #[cfg(target_arch = "x86_64")]
    fn simd_deviation_counts_equal_the_scalar_ones(data: &[u8], mean: [f64; 3]) {
        let t = mean.map(|m| m.floor() as u8);
        let count = |from: usize, mut d: ([u64; 3], [u64; 3])| {
            for (i, &v) in data[from..].iter().enumerate() {
                d.0[i % 3] += u64::from(v.abs_diff(t[i % 3]));
                d.1[i % 3] += u64::from(v > t[i % 3]);
            }
            d
        };
        let want = count(0, ([0; 3], [0; 3]));
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked).
            let (done, d, a) = unsafe { x86::deviation_counts_nhwc_avx2(data, t) };
            assert_eq!(count(done, (d, a)), want, "avx2 {} {mean:?}", data.len());
        }
        if std::arch::is_x86_feature_detected!("avx512bw") {
            // SAFETY: the CPU has AVX-512 BW (checked).
            let (done, d, a) = unsafe { x86::deviation_counts_nhwc_avx512(data, t) };
            assert_eq!(count(done, (d, a)), want, "avx512 {} {mean:?}", data.len());
        }
    }

    /// Counting gives the values a comparison sort gives, in its order: halves of both signs,
    /// zeros of both signs, infinities, bytes.
    #[test]
    fn counted_samples_equal_sorted_ones() {
        let mut x = 0x1234_5678_9ABC_DEF1u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let halves: Vec<u16> = (0..5000)
            .map(|i| match i % 50 {
                0 => 0x8000,
                1 => 0,
                2 => 0x7C00,
                3 => 0xFC00,
                _ => (next() as u16) & 0xFBFF, // no NaN
            })
            .collect();
        let bytes: Vec<u8> = halves.iter().flat_map(|h| h.to_le_bytes()).collect();
        // Channels as NCHW planes of 1,000 values (the first 3,000 halves).
        let planes = (0..1000).map(|p| [p, 1000 + p, 2000 + p]);
        let got = sorted_samples(&bytes, DType::Float16, planes);
        for (c, got) in got.iter().enumerate() {
            let mut want: Vec<f32> = halves[c * 1000..(c + 1) * 1000]
                .iter()
                .map(|&h| half::f16::from_bits(h).to_f32())
                .collect();
            want.sort_unstable_by(f32::total_cmp);
            assert_eq!(got.len(), want.len());
            assert!(got
                .iter()
                .zip(&want)
                .all(|(a, b)| a.to_bits() == b.to_bits()));
        }
        // NHWC bytes, pixels visited in reverse.
        let u8s: Vec<u8> = (0..3000).map(|_| next() as u8).collect();
        let got = sorted_samples(
            &u8s,
            DType::Uint8,
            (0..1000).rev().map(|p| [3 * p, 3 * p + 1, 3 * p + 2]),
        );
        for (c, got) in got.iter().enumerate() {
            let mut want: Vec<f32> = u8s
                .iter()
                .skip(c)
                .step_by(3)
                .map(|&v| f32::from(v))
                .collect();
            want.sort_unstable_by(f32::total_cmp);
            assert_eq!(got, &want);
        }
    }

    #[test]
    fn percentiles_match_numpy_and_do_not_depend_on_layout_or_dtype() {
        // Two images of 100 pixels; channel c of pixel k of image i holds
        // (i * 100 + k) * (c + 1): 0..=199 times 1, 2 and 3. numpy.percentile of 0..=199 at
        // 1, 5, 50, 95, 99 (linear): 1.99, 9.95, 99.5, 189.05, 197.01.
        let (n, hw) = (2, 100);
        let value = |i: usize, k: usize, c: usize| ((i * hw + k) * (c + 1)) as f32;
        let mut nchw = Vec::new();
        let mut nhwc = vec![0f32; n * hw * 3];
        for i in 0..n {
            for c in 0..3 {
                nchw.extend((0..hw).map(|k| value(i, k, c)));
            }
            for k in 0..hw {
                for c in 0..3 {
                    nhwc[(i * hw + k) * 3 + c] = value(i, k, c);
                }
            }
        }
        let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let p = output_percentiles(&bytes(&nchw), n, hw, DType::Float32, Layout::Nchw).unwrap();
        let expected = [1.99f32, 9.95, 99.5, 189.05, 197.01];
        for (level, e) in expected.iter().enumerate() {
            for c in 0..3 {
                let want = e * (c + 1) as f32;
                assert!((p[level][c] - want).abs() < 1e-3, "{level} {c}: {p:?}");
            }
        }
        let q = output_percentiles(&bytes(&nhwc), n, hw, DType::Float32, Layout::Nhwc).unwrap();
        assert_eq!(p, q);
        let halfs: Vec<u8> = nchw
            .iter()
            .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
            .collect();
        let h = output_percentiles(&halfs, n, hw, DType::Float16, Layout::Nchw).unwrap();
        for level in 0..5 {
            for c in 0..3 {
                assert!((h[level][c] - p[level][c]).abs() < 0.5, "{h:?}");
            }
        }
        // Short or empty tensors give none.
        assert_eq!(
            output_percentiles(&bytes(&nchw)[4..], n, hw, DType::Float32, Layout::Nchw),
            None
        );
        assert_eq!(
            output_percentiles(&[], 0, hw, DType::Uint8, Layout::Nchw),
            None
        );
    }

    #[test]
    fn percentiles_of_a_large_batch_come_from_a_bounded_sample() {
        // 64 images of 64x64, u8 NHWC, pixel k holding k % 256 in every channel: each value
        // equally often, in a pattern whose period divides the sample stride (16), so a plain
        // strided sample would see only multiples of 16. The 16384 values per channel still
        // put the median near 127.5, p1 near 2.5 and p99 near 252.5.
        let (n, hw) = (64, 64 * 64);
        let data: Vec<u8> = (0..n * hw * 3).map(|i| ((i / 3) % 256) as u8).collect();
        let p = output_percentiles(&data, n, hw, DType::Uint8, Layout::Nhwc).unwrap();
        for c in 0..3 {
            assert!((p[2][c] - 127.5).abs() <= 1.0, "{p:?}");
            assert!((p[0][c] - 2.5).abs() <= 1.0, "{p:?}");
            assert!((p[4][c] - 252.5).abs() <= 1.0, "{p:?}");
        }
    }
}
