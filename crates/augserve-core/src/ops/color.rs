//! Colour jitter on u8 pixels: brightness, then contrast, then saturation (torchvision's
//! ColorJitter factors, in a fixed order). Each step rounds to bytes and clamps, so the result
//! is exact integer arithmetic that a GPU kernel can reproduce bit for bit.

use multiversion::multiversion;
use rand::Rng;

use crate::image::RgbImage;
use crate::spec::ColorJitter;

/// Multipliers for one image; 1.0 leaves a property unchanged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ColorFactors {
    pub brightness: f32,
    pub contrast: f32,
    pub saturation: f32,
}

impl ColorFactors {
    pub const IDENTITY: ColorFactors = ColorFactors {
        brightness: 1.0,
        contrast: 1.0,
        saturation: 1.0,
    };

    pub fn is_identity(&self) -> bool {
        *self == Self::IDENTITY
    }

    /// Draws each enabled factor uniformly from `[max(0, 1 - f), 1 + f]`.
    pub fn sample<R: Rng>(rng: &mut R, jitter: &ColorJitter) -> Self {
        let mut draw = |f: f32| {
            if f == 0.0 {
                1.0
            } else {
                let lo = (1.0 - f).max(0.0);
                lo + (1.0 + f - lo) * rng.random::<f32>()
            }
        };
        ColorFactors {
            brightness: draw(jitter.brightness),
            contrast: draw(jitter.contrast),
            saturation: draw(jitter.saturation),
        }
    }
}

/// ITU-R 601 luma in 16-bit fixed point, rounded: (0.299, 0.587, 0.114) * 65536.
#[inline]
pub fn gray_u8(r: u8, g: u8, b: u8) -> u8 {
    ((u32::from(r) * 19595 + u32::from(g) * 38470 + u32::from(b) * 7471 + 32768) >> 16) as u8
}

#[inline]
fn round_clamp_u8(v: f32) -> u8 {
    v.round().clamp(0.0, 255.0) as u8
}

/// Fixed-point bits of [`linear_form`]'s multiplier.
const LINEAR_BITS: u32 = 22;

/// A multiplier `mul` near `slope` for which `min((v * mul + 2^21) >> 22, 255)` is `lut[v]` for every byte
/// `v`, checked here for all 256: brightness alone is such a table (`round(v * f)`, clamped),
/// unless a product falls within 2^-22 of a rounding boundary. The formula vectorises; a byte
/// table lookup does not (jitter on the region was 10 % of a one-core run on large photos).
fn linear_form(lut: &[u8; 256], slope: f32) -> Option<u32> {
    // The slope in fixed point, and its neighbours.
    let guess = (f64::from(slope) * f64::from(1u32 << LINEAR_BITS)).round() as i64;
    let max_mul = (u32::MAX - (1 << (LINEAR_BITS - 1))) / 255;
    let fits = |mul: u32| {
        (0..256u32).all(|v| {
            ((v * mul + (1 << (LINEAR_BITS - 1))) >> LINEAR_BITS).min(255)
                == u32::from(lut[v as usize])
        })
    };
    (-64..=64)
        .map(|k| guess + k)
        .filter_map(|m| u32::try_from(m).ok().filter(|&m| m <= max_mul))
        .find(|&m| fits(m))
}

/// `v = min((v * mul + 2^21) >> 22, 255)` for every byte: [`linear_form`]'s table, vectorised.
#[multiversion(targets("x86_64+avx2", "x86_64+sse4.1"))]
fn scale_bytes(data: &mut [u8], mul: u32) {
    for v in data.iter_mut() {
        *v = ((u32::from(*v) * mul + (1 << (LINEAR_BITS - 1))) >> LINEAR_BITS).min(255) as u8;
    }
}

/// `v = lut[v]` for every byte. The whole table in four registers where the CPU has AVX-512
/// VBMI (64 bytes per two 128-entry permutes and a blend; the scaling below was 3.7 % of the
/// CPU path's time on ImageNet-size images); else, for brightness alone (`brightness` given:
/// the table is `round(v * f)`), its linear form; else one lookup per byte.
fn map_bytes(data: &mut [u8], lut: &[u8; 256], brightness: Option<f32>) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512vbmi")
        && std::arch::is_x86_feature_detected!("avx512bw")
    {
        // SAFETY: the CPU has AVX-512 BW and VBMI (and so F), checked just above.
        unsafe { x86::map_bytes_avx512(data, lut) };
        return;
    }
    match brightness.and_then(|b| linear_form(lut, b)) {
        Some(mul) => scale_bytes(data, mul),
        None => {
            for v in data.iter_mut() {
                *v = lut[*v as usize];
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// [`super::map_bytes`] with AVX-512 VBMI: each 64 bytes looked up in both halves of the
    /// table (`vpermi2b`, 128 entries each, indexed by the low 7 bits) and blended on the top
    /// bit; the last bytes with masked loads and stores.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F, BW and VBMI.
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
    #[allow(unused_unsafe)] // the intrinsics are safe here from Rust 1.87 on, unsafe before
    pub(super) unsafe fn map_bytes_avx512(data: &mut [u8], lut: &[u8; 256]) {
        // SAFETY: the features are enabled; the table loads read 64 bytes at 0, 64, 128, 192
        // of the 256-byte table; the data loads and stores stay in `data` (whole chunks of
        // 64, then the remainder under a mask of its length).
        unsafe {
            let t: [__m512i; 4] =
                std::array::from_fn(|i| _mm512_loadu_si512(lut.as_ptr().add(64 * i).cast()));
            let map = |x: __m512i| {
                let low = _mm512_permutex2var_epi8(t[0], x, t[1]);
                let high = _mm512_permutex2var_epi8(t[2], x, t[3]);
                _mm512_mask_blend_epi8(_mm512_movepi8_mask(x), low, high)
            };
            let mut chunks = data.chunks_exact_mut(64);
            for c in &mut chunks {
                let x = _mm512_loadu_si512(c.as_ptr().cast());
                _mm512_storeu_si512(c.as_mut_ptr().cast(), map(x));
            }
            let rest = chunks.into_remainder();
            if !rest.is_empty() {
                let mask = (1u64 << rest.len()) - 1; // rest.len() < 64
                let x = _mm512_maskz_loadu_epi8(mask, rest.as_ptr().cast());
                _mm512_mask_storeu_epi8(rest.as_mut_ptr().cast(), mask, map(x));
            }
        }
    }
}

/// Applies `f` to every pixel of `img`.
pub fn apply_color_jitter(img: &mut RgbImage, f: &ColorFactors) {
    if f.is_identity() || img.data.is_empty() {
        return;
    }
    let mut lut_b = [0u8; 256];
    for (v, out) in lut_b.iter_mut().enumerate() {
        *out = round_clamp_u8(v as f32 * f.brightness);
    }
    let mut lut = lut_b;
    if f.contrast != 1.0 {
        // Contrast blends with the mean luma of the brightness-adjusted image.
        let sum: u64 = img
            .data
            .chunks_exact(3)
            .map(|p| {
                u64::from(gray_u8(
                    lut_b[p[0] as usize],
                    lut_b[p[1] as usize],
                    lut_b[p[2] as usize],
                ))
            })
            .sum();
        let mean = (sum as f64 / img.pixel_count() as f64) as f32;
        for (v, out) in lut.iter_mut().enumerate() {
            let b = f32::from(lut_b[v]);
            *out = round_clamp_u8(f.contrast * b + (1.0 - f.contrast) * mean);
        }
    }
    if f.saturation == 1.0 {
        map_bytes(
            &mut img.data,
            &lut,
            (f.contrast == 1.0).then_some(f.brightness),
        );
        return;
    }
    // Saturation blends each pixel with its own luma, in 16-bit fixed point.
    let s = (f.saturation * 65536.0).round() as i32;
    for p in img.data.chunks_exact_mut(3) {
        let (r, g, b) = (lut[p[0] as usize], lut[p[1] as usize], lut[p[2] as usize]);
        let gray = i32::from(gray_u8(r, g, b));
        for (c, v) in [r, g, b].into_iter().enumerate() {
            let mixed = (i32::from(v) * s + gray * (65536 - s) + 32768) >> 16;
            p[c] = mixed.clamp(0, 255) as u8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{keyed_rng, Purpose};

    fn img(px: &[[u8; 3]]) -> RgbImage {
        RgbImage::from_vec(px.len() as u32, 1, px.iter().flatten().copied().collect()).unwrap()
    }

    #[test]
    fn identity_changes_nothing() {
        let mut a = img(&[[1, 2, 3], [250, 128, 0]]);
        let b = a.clone();
        apply_color_jitter(&mut a, &ColorFactors::IDENTITY);
        assert_eq!(a, b);
    }

    #[test]
    fn brightness_scales_and_clamps() {
        let mut a = img(&[[10, 100, 200]]);
        apply_color_jitter(
            &mut a,
            &ColorFactors {
                brightness: 1.5,
                ..ColorFactors::IDENTITY
            },
        );
        assert_eq!(a.data, vec![15, 150, 255]);
    }

    #[test]
    fn zero_contrast_gives_mean_gray_and_zero_saturation_gives_luma() {
        let mut a = img(&[[0, 0, 0], [255, 255, 255]]);
        apply_color_jitter(
            &mut a,
            &ColorFactors {
                contrast: 0.0,
                ..ColorFactors::IDENTITY
            },
        );
        assert_eq!(a.data, vec![128; 6]); // mean 127.5 rounds up
        let mut b = img(&[[255, 0, 0]]);
        apply_color_jitter(
            &mut b,
            &ColorFactors {
                saturation: 0.0,
                ..ColorFactors::IDENTITY
            },
        );
        assert_eq!(b.data, vec![76, 76, 76]); // 0.299 * 255
    }

    /// The vectorised brightness gives the table's bytes, and is found for nearly every factor.
    #[test]
    fn linear_brightness_equals_the_table() {
        let mut found = 0;
        for i in 0..2000 {
            let f = 0.6 + 0.0004 * i as f32 + 1e-7 * (i % 7) as f32;
            let mut lut = [0u8; 256];
            for (v, out) in lut.iter_mut().enumerate() {
                *out = round_clamp_u8(v as f32 * f);
            }
            if let Some(mul) = linear_form(&lut, f) {
                found += 1;
                let mut all: Vec<u8> = (0..=255).collect();
                scale_bytes(&mut all, mul);
                assert_eq!(all, lut, "factor {f}");
            }
        }
        assert!(found > 1900, "{found} of 2000 factors");
        let mut a = img(&[[10, 100, 200], [0, 255, 3]]);
        let mut b = a.clone();
        let f = ColorFactors {
            brightness: 1.23,
            ..ColorFactors::IDENTITY
        };
        apply_color_jitter(&mut a, &f);
        for v in b.data.iter_mut() {
            *v = round_clamp_u8(f32::from(*v) * 1.23);
        }
        assert_eq!(a, b);
    }

    /// Every path of `map_bytes` gives the table's bytes: arbitrary tables (contrast's), and
    /// lengths around the 64-byte chunks.
    #[test]
    fn mapped_bytes_equal_the_table() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for len in [0usize, 1, 63, 64, 65, 127, 128, 1000, 4099] {
            let data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let table: [u8; 256] = std::array::from_fn(|_| next() as u8);
            let want: Vec<u8> = data.iter().map(|&v| table[usize::from(v)]).collect();
            let mut got = data.clone();
            map_bytes(&mut got, &table, None);
            assert_eq!(got, want, "{len}");
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx512vbmi")
                && std::arch::is_x86_feature_detected!("avx512bw")
            {
                let mut got = data.clone();
                // SAFETY: the CPU has the features (checked).
                unsafe { x86::map_bytes_avx512(&mut got, &table) };
                assert_eq!(got, want, "avx512, {len}");
            }
        }
    }

    #[test]
    fn factors_lie_in_range() {
        let j = ColorJitter {
            brightness: 0.4,
            contrast: 2.0,
            saturation: 0.0,
        };
        for id in 0..1000 {
            let f = ColorFactors::sample(&mut keyed_rng(0, 0, Purpose::Sample, id), &j);
            assert!((0.6..=1.4).contains(&f.brightness));
            assert!((0.0..=3.0).contains(&f.contrast));
            assert_eq!(f.saturation, 1.0);
        }
    }
}
