//! Choosing the source region of each image: torchvision's RandomResizedCrop, a centre crop,
//! or the whole image.

use rand::Rng;

use crate::spec::{CropSpec, Size};

/// A source rectangle in pixel coordinates, `[x0, x1) x [y0, y1)`, possibly fractional
/// (the `box` argument of Pillow's `Image.resize`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CropBox {
    pub x0: f32,
    pub y0: f32,
    pub x1: f32,
    pub y1: f32,
}

impl CropBox {
    pub fn full(width: u32, height: u32) -> Self {
        CropBox {
            x0: 0.0,
            y0: 0.0,
            x1: width as f32,
            y1: height as f32,
        }
    }
    pub fn width(&self) -> f32 {
        self.x1 - self.x0
    }
    pub fn height(&self) -> f32 {
        self.y1 - self.y0
    }
    /// The box in the coordinates of the image scaled by 1/`denom` in the DCT domain, whose
    /// pixel `i` covers this image's `[i * denom, (i + 1) * denom)` (exact: a power of two).
    pub fn scaled_down(&self, denom: u32) -> CropBox {
        let d = denom as f32;
        CropBox {
            x0: self.x0 / d,
            y0: self.y0 / d,
            x1: self.x1 / d,
            y1: self.y1 / d,
        }
    }
    /// The box in the coordinates of a region whose top-left pixel is (x, y).
    pub fn relative_to(&self, x: u32, y: u32) -> CropBox {
        CropBox {
            x0: self.x0 - x as f32,
            y0: self.y0 - y as f32,
            x1: self.x1 - x as f32,
            y1: self.y1 - y as f32,
        }
    }
}

/// torchvision's `RandomResizedCrop.get_params`: returns `(top, left, height, width)`.
/// Ten tries at a random area fraction in `scale` and a log-uniform aspect ratio in `ratio`;
/// if none fits, a centre crop clamped to the ratio range. Rounding is Python's (ties to even).
pub fn random_resized_crop_params<R: Rng>(
    rng: &mut R,
    width: u32,
    height: u32,
    scale: [f32; 2],
    ratio: [f32; 2],
) -> (u32, u32, u32, u32) {
    let area = f64::from(width) * f64::from(height);
    let (log_r0, log_r1) = (f64::from(ratio[0]).ln(), f64::from(ratio[1]).ln());
    for _ in 0..10 {
        let target_area = area * uniform(rng, f64::from(scale[0]), f64::from(scale[1]));
        let aspect = uniform(rng, log_r0, log_r1).exp();
        let w = (target_area * aspect).sqrt().round_ties_even();
        let h = (target_area / aspect).sqrt().round_ties_even();
        if w > 0.0 && w <= f64::from(width) && h > 0.0 && h <= f64::from(height) {
            let (w, h) = (w as u32, h as u32);
            let top = rng.random_range(0..=height - h);
            let left = rng.random_range(0..=width - w);
            return (top, left, h, w);
        }
    }
    let in_ratio = f64::from(width) / f64::from(height);
    let (rmin, rmax) = (
        f64::from(ratio[0].min(ratio[1])),
        f64::from(ratio[0].max(ratio[1])),
    );
    let (w, h) = if in_ratio < rmin {
        let h = (f64::from(width) / rmin).round_ties_even() as u32;
        (width, h.clamp(1, height))
    } else if in_ratio > rmax {
        let w = (f64::from(height) * rmax).round_ties_even() as u32;
        (w.clamp(1, width), height)
    } else {
        (width, height)
    };
    ((height - h) / 2, (width - w) / 2, h, w)
}

/// `uniform_(a, b)`: a + (b - a) * U[0, 1).
fn uniform<R: Rng>(rng: &mut R, a: f64, b: f64) -> f64 {
    a + (b - a) * rng.random::<f64>()
}

/// The eval-time centre crop as one box: resizing the shorter side to
/// `floor(min(out) / crop_pct)` and taking the centred `out` window is the same as resizing
/// the centred source box computed here, without the intermediate image. A window larger
/// than the image along one side is clamped to the image.
pub fn center_crop_box(width: u32, height: u32, out: Size, crop_pct: f32) -> CropBox {
    let out_min = out.width.min(out.height) as f32;
    let scale_size = (out_min / crop_pct).floor().max(1.0);
    let k = scale_size / width.min(height) as f32; // resized / source
    let bw = (out.width as f32 / k).min(width as f32);
    let bh = (out.height as f32 / k).min(height as f32);
    let x0 = (width as f32 - bw) / 2.0;
    let y0 = (height as f32 - bh) / 2.0;
    CropBox {
        x0,
        y0,
        x1: x0 + bw,
        y1: y0 + bh,
    }
}

/// The source box for one image under `crop`.
pub fn choose_crop<R: Rng>(
    rng: &mut R,
    crop: &CropSpec,
    width: u32,
    height: u32,
    out: Size,
) -> CropBox {
    match crop {
        CropSpec::RandomResized { scale, ratio } => {
            let (top, left, h, w) = random_resized_crop_params(rng, width, height, *scale, *ratio);
            CropBox {
                x0: left as f32,
                y0: top as f32,
                x1: (left + w) as f32,
                y1: (top + h) as f32,
            }
        }
        CropSpec::Center { crop_pct } => center_crop_box(width, height, out, *crop_pct),
        CropSpec::Resize => CropBox::full(width, height),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{keyed_rng, Purpose};
    use statrs::distribution::{ContinuousCDF, Uniform};

    /// Kolmogorov-Smirnov statistic of `xs` against `cdf`.
    fn ks(mut xs: Vec<f64>, cdf: impl Fn(f64) -> f64) -> f64 {
        xs.sort_by(f64::total_cmp);
        let n = xs.len() as f64;
        xs.iter()
            .enumerate()
            .map(|(i, &x)| {
                let f = cdf(x);
                (f - i as f64 / n).abs().max(((i + 1) as f64 / n - f).abs())
            })
            .fold(0.0, f64::max)
    }

    #[test]
    fn area_and_log_ratio_follow_the_requested_distributions() {
        // On a large image with scale <= 0.5 every first try fits, so the area fraction is
        // U(scale) and log(w/h) is U(log ratio), up to the integer rounding of w and h.
        let (w, h) = (4000u32, 3000u32);
        let (scale, ratio) = ([0.08f32, 0.5], [0.75f32, 4.0 / 3.0]);
        let mut areas = Vec::new();
        let mut logr = Vec::new();
        let mut tops = Vec::new();
        for id in 0..20_000 {
            let mut rng = keyed_rng(7, 0, Purpose::Sample, id);
            let (top, left, ch, cw) = random_resized_crop_params(&mut rng, w, h, scale, ratio);
            assert!(top + ch <= h && left + cw <= w);
            areas.push(f64::from(cw) * f64::from(ch) / (f64::from(w) * f64::from(h)));
            logr.push((f64::from(cw) / f64::from(ch)).ln());
            // Position is uniform over the free range.
            tops.push(f64::from(top) / f64::from(h - ch + 1));
        }
        let n = areas.len() as f64;
        let crit = 1.63 / n.sqrt() + 0.002; // 1% level, plus the rounding of w and h
        let ua = Uniform::new(0.08, 0.5).unwrap();
        let ur = Uniform::new(0.75f64.ln(), (4.0f64 / 3.0).ln()).unwrap();
        let u01 = Uniform::new(0.0, 1.0).unwrap();
        let d_area = ks(areas, |x| ua.cdf(x));
        let d_ratio = ks(logr, |x| ur.cdf(x));
        let d_top = ks(tops, |x| u01.cdf(x));
        assert!(d_area < crit, "area KS {d_area} >= {crit}");
        assert!(d_ratio < crit, "ratio KS {d_ratio} >= {crit}");
        assert!(d_top < crit, "position KS {d_top} >= {crit}");
    }

    #[test]
    fn full_scale_range_mixes_accepted_tries_and_fallbacks() {
        // torchvision's defaults on a square image: tries are rejected only when w or h
        // overflows, so crops never exceed the image and sometimes cover all of it.
        let mut full = 0;
        for id in 0..5000 {
            let mut rng = keyed_rng(1, 0, Purpose::Sample, id);
            let (t, l, h, w) =
                random_resized_crop_params(&mut rng, 100, 100, [0.08, 1.0], [0.75, 4.0 / 3.0]);
            assert!(t + h <= 100 && l + w <= 100 && h > 0 && w > 0);
            if h == 100 && w == 100 {
                full += 1;
            }
        }
        assert!(full < 250, "{full} fallbacks to the whole image");
    }

    #[test]
    fn fallback_is_a_ratio_clamped_centre_crop() {
        // Scale 1.0 with ratio != image ratio can never fit: always the fallback.
        let mut rng = keyed_rng(0, 0, Purpose::Sample, 0);
        // Very wide image: in_ratio > max ratio -> h = height, w = round(h * max_ratio).
        let p = random_resized_crop_params(&mut rng, 1000, 10, [1.0, 1.0], [0.75, 4.0 / 3.0]);
        assert_eq!(p, (0, (1000 - 13) / 2, 10, 13));
        // Very tall image: w = width, h = round(w / min_ratio).
        let p = random_resized_crop_params(&mut rng, 10, 1000, [1.0, 1.0], [0.75, 4.0 / 3.0]);
        assert_eq!(p, ((1000 - 13) / 2, 0, 13, 10));
        // Image ratio below the range: full width, h = round(w / 2).
        let p = random_resized_crop_params(&mut rng, 100, 90, [1.0, 1.0], [2.0, 3.0]);
        assert_eq!(p, (20, 0, 50, 100));
        // Python rounding: 90 * 1.05 = 94.5 rounds to 94 (ties to even).
        let p = random_resized_crop_params(&mut rng, 100, 90, [1.0, 1.0], [1.0, 1.05]);
        assert_eq!(p, (0, 3, 90, 94));
        // Ratio in range: the whole image (whether a try fits or the fallback runs).
        let p = random_resized_crop_params(&mut rng, 100, 90, [1.0, 1.0], [1.0, 1.2]);
        assert_eq!(p, (0, 0, 90, 100));
    }

    #[test]
    fn center_crop_matches_resize_then_crop() {
        // 500x375 -> shorter side 256 -> centre 224x224: box side 224 * 375/256.
        let b = center_crop_box(
            500,
            375,
            Size {
                width: 224,
                height: 224,
            },
            0.875,
        );
        let side = 224.0 * 375.0 / 256.0;
        assert!((b.width() - side).abs() < 1e-3 && (b.height() - side).abs() < 1e-3);
        assert!((b.x0 - (500.0 - side) / 2.0).abs() < 1e-3);
        assert!((b.y0 - (375.0 - side) / 2.0).abs() < 1e-3);
    }
}
