//! Per-channel statistics of an output batch, for telemetry: mean, standard deviation, mean
//! absolute deviation (robust to outliers) and the fraction of clipped pixels.

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

/// Reads element `idx` of a tensor as f64.
#[inline]
fn value(data: &[u8], dtype: DType, idx: usize) -> f64 {
    match dtype {
        DType::Uint8 => f64::from(data[idx]),
        DType::Float16 => f64::from(half::f16::from_le_bytes([data[idx * 2], data[idx * 2 + 1]])),
        DType::Float32 => f64::from(f32::from_le_bytes([
            data[idx * 4],
            data[idx * 4 + 1],
            data[idx * 4 + 2],
            data[idx * 4 + 3],
        ])),
    }
}

/// Statistics of an output tensor `data` of `batch` images of `hw` pixels. `clip_lo`/`clip_hi`
/// are the output values of pixel 0 and 255 per channel. Sums run in f64 in a fixed order, so
/// the result does not depend on threads.
pub fn batch_stats(
    data: &[u8],
    batch: usize,
    hw: usize,
    dtype: DType,
    layout: Layout,
    clip_lo: [f32; 3],
    clip_hi: [f32; 3],
) -> BatchStats {
    let n = (batch * hw) as f64;
    if n == 0.0 {
        return BatchStats::default();
    }
    let index = |b: usize, p: usize, c: usize| match layout {
        Layout::Nchw => (b * 3 + c) * hw + p,
        Layout::Nhwc => (b * hw + p) * 3 + c,
    };
    let mut st = BatchStats::default();
    for c in 0..3 {
        let (lo, hi) = (f64::from(clip_lo[c]), f64::from(clip_hi[c]));
        let (lo, hi) = (lo.min(hi), lo.max(hi));
        let mut sum = 0.0;
        let mut clipped = 0u64;
        for b in 0..batch {
            for p in 0..hw {
                let v = value(data, dtype, index(b, p, c));
                sum += v;
                clipped += u64::from(v <= lo + 1e-6 || v >= hi - 1e-6);
            }
        }
        let mean = sum / n;
        let (mut sq, mut abs) = (0.0, 0.0);
        for b in 0..batch {
            for p in 0..hw {
                let d = value(data, dtype, index(b, p, c)) - mean;
                sq += d * d;
                abs += d.abs();
            }
        }
        st.mean[c] = mean as f32;
        st.std[c] = (sq / n).sqrt() as f32;
        st.mad[c] = (abs / n) as f32;
        st.clipped[c] = (clipped as f64 / n) as f32;
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
        let s = batch_stats(&data, 1, 2, DType::Uint8, Layout::Nhwc, [0.0; 3], [255.0; 3]);
        assert_eq!(s.mean, [127.5, 15.0, 5.0]);
        assert_eq!(s.std, [127.5, 5.0, 0.0]);
        assert_eq!(s.mad, [127.5, 5.0, 0.0]);
        assert_eq!(s.clipped, [1.0, 0.0, 0.0]);
    }
}
