//! The built-in demo dataset: 10 classes of simple shapes on textured backgrounds, written
//! as real JPEGs in ImageFolder layout. Generated deterministically on first use, so a fresh
//! machine can run the whole pipeline without any data.

use std::path::{Path, PathBuf};

use image::codecs::jpeg::JpegEncoder;
use rand::Rng;

use crate::error::{Error, Result};
use crate::rng::{keyed_rng, Purpose};

/// Class names, in label order.
pub const CLASSES: [&str; 10] = [
    "circle", "square", "triangle", "ring", "cross", "hstripes", "vstripes", "checker", "diamond",
    "ellipse",
];

/// Images per class.
pub const PER_CLASS: usize = 32;

/// Bumped whenever the generated content changes, so stale caches are regenerated.
const VERSION: &str = "demo-v1";

/// Returns the demo dataset folder under `cache_dir`, generating it if missing.
pub fn ensure_demo_dataset(cache_dir: &Path) -> Result<PathBuf> {
    let dir = cache_dir.join(VERSION);
    if dir.join(".complete").exists() {
        return Ok(dir);
    }
    // Write into a temporary sibling and rename, so a crash never leaves half a dataset.
    let tmp = cache_dir.join(format!("{VERSION}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    write_demo_dataset(&tmp, PER_CLASS)?;
    std::fs::write(tmp.join(".complete"), b"ok")?;
    match std::fs::rename(&tmp, &dir) {
        Ok(()) => Ok(dir),
        // Another process finished first: use theirs.
        Err(_) if dir.join(".complete").exists() => {
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(dir)
        }
        Err(e) => Err(Error::dataset(
            &dir,
            format!("cannot install demo dataset: {e}"),
        )),
    }
}

/// Writes `per_class` JPEGs for each class into `dir/<class>/`.
pub fn write_demo_dataset(dir: &Path, per_class: usize) -> Result<()> {
    for (label, class) in CLASSES.iter().enumerate() {
        let cdir = dir.join(class);
        std::fs::create_dir_all(&cdir)?;
        for i in 0..per_class {
            let id = (label * 1000 + i) as u64;
            let (w, h, rgb, quality) = render(label, id);
            let mut bytes = Vec::new();
            JpegEncoder::new_with_quality(&mut bytes, quality)
                .encode(&rgb, w, h, image::ExtendedColorType::Rgb8)
                .map_err(|e| Error::dataset(&cdir, format!("cannot encode demo image: {e}")))?;
            std::fs::write(cdir.join(format!("{class}_{i:03}.jpg")), bytes)?;
        }
    }
    Ok(())
}

/// Renders one image: returns width, height, RGB bytes and JPEG quality.
fn render(label: usize, id: u64) -> (u32, u32, Vec<u8>, u8) {
    let mut rng = keyed_rng(0x00de_0000, 0, Purpose::Sample, id);
    let w: u32 = rng.random_range(240..=500);
    let h: u32 = rng.random_range(180..=400);
    let quality: u8 = rng.random_range(75..=95);
    let bg0: [f32; 3] = [rng.random(), rng.random(), rng.random()];
    let bg1: [f32; 3] = [rng.random(), rng.random(), rng.random()];
    let fg: [f32; 3] = [rng.random(), rng.random(), rng.random()];
    let cx = rng.random_range(0.35..0.65) * w as f32;
    let cy = rng.random_range(0.35..0.65) * h as f32;
    let r = rng.random_range(0.2..0.4) * w.min(h) as f32;
    let period = rng.random_range(8.0..24.0f32);
    let mut data = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h {
        for x in 0..w {
            let (fx, fy) = (x as f32, y as f32);
            let (dx, dy) = (fx - cx, fy - cy);
            let inside = match label {
                0 => dx * dx + dy * dy < r * r,
                1 => dx.abs() < r && dy.abs() < r,
                2 => dy < r && dy > -r && dx.abs() < (dy + r) * 0.5,
                3 => {
                    let d = (dx * dx + dy * dy).sqrt();
                    d < r && d > r * 0.6
                }
                4 => (dx.abs() < r * 0.25 && dy.abs() < r) || (dy.abs() < r * 0.25 && dx.abs() < r),
                5 => ((fy / period) as i32) % 2 == 0,
                6 => ((fx / period) as i32) % 2 == 0,
                7 => (((fx / period) as i32) + ((fy / period) as i32)) % 2 == 0,
                8 => dx.abs() + dy.abs() < r,
                _ => (dx / (r * 1.5)).powi(2) + (dy / (r * 0.7)).powi(2) < 1.0,
            };
            let t = (fx / w as f32 + fy / h as f32) * 0.5;
            // Cheap deterministic texture so JPEG has real detail to encode.
            let noise = (((x.wrapping_mul(73_856_093) ^ y.wrapping_mul(19_349_663) ^ id as u32)
                % 32) as f32
                - 16.0)
                / 255.0;
            for c in 0..3 {
                let v = if inside {
                    fg[c]
                } else {
                    bg0[c] * (1.0 - t) + bg1[c] * t
                };
                data.push(((v + noise) * 255.0).clamp(0.0, 255.0) as u8);
            }
        }
    }
    (w, h, data, quality)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_images_are_deterministic_jpegs() {
        let dir = tempfile::tempdir().unwrap();
        write_demo_dataset(dir.path(), 2).unwrap();
        let a = std::fs::read(dir.path().join("ring/ring_001.jpg")).unwrap();
        let dir2 = tempfile::tempdir().unwrap();
        write_demo_dataset(dir2.path(), 2).unwrap();
        let b = std::fs::read(dir2.path().join("ring/ring_001.jpg")).unwrap();
        assert_eq!(a, b);
        let img = crate::decode::decode_jpeg(&a, &Default::default()).unwrap();
        assert!(img.width >= 240 && img.height >= 180);
    }
}
