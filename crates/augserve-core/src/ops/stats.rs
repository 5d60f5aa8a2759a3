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
pub fn abs_dev_sums(
    data: &[u8],
    hw: usize,
    dtype: DType,
    layout: Layout,
    mean: [f64; 3],
) -> [f64; 3] {
    match dtype {
        DType::Uint8 => abs_dev_typed(data, hw, layout, mean, 1, |b| f64::from(b[0])),
        DType::Float16 => abs_dev_typed(data, hw, layout, mean, 2, |b| {
            f64::from(half::f16::from_le_bytes([b[0], b[1]]))
        }),
        DType::Float32 => abs_dev_typed(data, hw, layout, mean, 4, |b| {
            f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        }),
    }
}

/// The loop of [`abs_dev_sums`], monomorphised per element type so `value` inlines.
#[inline(always)]
fn abs_dev_typed(
    data: &[u8],
    hw: usize,
    layout: Layout,
    mean: [f64; 3],
    size: usize,
    value: impl Fn(&[u8]) -> f64,
) -> [f64; 3] {
    let mut out = [0.0f64; 3];
    match layout {
        Layout::Nchw => {
            for (c, plane) in data.chunks_exact(hw * size).take(3).enumerate() {
                out[c] = plane
                    .chunks_exact(size)
                    .map(|b| (value(b) - mean[c]).abs())
                    .sum();
            }
        }
        Layout::Nhwc => {
            for px in data.chunks_exact(3 * size) {
                for c in 0..3 {
                    out[c] += (value(&px[c * size..]) - mean[c]).abs();
                }
            }
        }
    }
    out
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
