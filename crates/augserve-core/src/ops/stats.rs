//! Per-channel statistics of an output batch, for telemetry: mean, standard deviation, mean
//! absolute deviation (robust to outliers) and the fraction of clipped pixels.

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
}

/// Sum of `|x - mean[c]|` per channel over one output image (`data` is that image only).
/// Values are widened to f32 a block at a time (half via F16C where present) and summed in
/// eight f32 lanes per block, then in f64 across blocks.
pub fn abs_dev_sums(
    data: &[u8],
    hw: usize,
    dtype: DType,
    layout: Layout,
    mean: [f64; 3],
) -> [f64; 3] {
    use half::slice::HalfFloatSliceExt;
    const BLOCK: usize = 768; // a multiple of 3, so NHWC blocks start at channel 0
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
            DType::Float16 => {
                let h = &mut halfs[..n];
                h.iter_mut()
                    .zip(bytes.chunks_exact(2))
                    .for_each(|(o, b)| *o = half::f16::from_le_bytes([b[0], b[1]]));
                h.convert_to_f32_slice(v);
            }
            DType::Float32 => v
                .iter_mut()
                .zip(bytes.chunks_exact(4))
                .for_each(|(o, b)| *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        }
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
        start += n;
    }
    out
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
}
