#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]
//! The byte-level resize against Pillow's `Image.resize(size, BILINEAR, box=...)` on real
//! photographs: downscale, upscale, odd sizes, fractional boxes. Pillow runs in a Python
//! subprocess on the same decoded pixels (so decoder differences do not count).
//!
//! Needs python3 with Pillow and the photos from `scripts/fetch-photos.sh` (the test script
//! provides both). Without them the test prints `skipped: ...`, unless
//! `AUGSERVE_REQUIRE_PEERS=1` (set in CI), where it fails instead.

mod common;

use std::path::PathBuf;

use augserve_core::decode::{decode_jpeg, DecodeLimits};
use augserve_core::ops::crop::{random_resized_crop_params, CropBox};
use augserve_core::ops::resize::{resize_u8_reference, FastResizer};
use augserve_core::rng::{keyed_rng, Purpose};
use rand::Rng;

fn photos_dir() -> PathBuf {
    std::env::var("AUGSERVE_TEST_PHOTOS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/testdata/photos")
        })
}

struct Case {
    photo: usize,
    bx: CropBox,
    size: (u32, u32),
}

#[test]
fn resize_matches_pillow_on_real_photos() {
    let Some(python) = common::python_with_pillow() else {
        return;
    };
    let dir = photos_dir();
    let mut photos = if dir.is_dir() {
        common::files_with_ext(&dir, "jpg")
    } else {
        Vec::new()
    };
    if photos.is_empty() {
        return common::skip_or_fail(&format!(
            "no photos in {} (run ./scripts/fetch-photos.sh)",
            dir.display()
        ));
    }
    photos.truncate(6);
    let tmp = tempfile::tempdir().unwrap();
    let mut images = Vec::new();
    for (i, p) in photos.iter().enumerate() {
        let img = decode_jpeg(&std::fs::read(p).unwrap(), &DecodeLimits::default()).unwrap();
        std::fs::write(tmp.path().join(format!("in{i}.rgb")), &img.data).unwrap();
        images.push(img);
    }
    // Per photo: a RandomResizedCrop box to 224 (downscale), a small fractional box blown up
    // to odd sizes (upscale), the whole photo to odd sizes, and mixed up/down scaling.
    let mut cases = Vec::new();
    for (i, img) in images.iter().enumerate() {
        let mut rng = keyed_rng(11, 0, Purpose::Sample, i as u64);
        let (w, h) = (img.width, img.height);
        for _ in 0..2 {
            let (t, l, ch, cw) =
                random_resized_crop_params(&mut rng, w, h, [0.08, 1.0], [0.75, 4.0 / 3.0]);
            let bx = CropBox {
                x0: l as f32,
                y0: t as f32,
                x1: (l + cw) as f32,
                y1: (t + ch) as f32,
            };
            cases.push(Case {
                photo: i,
                bx,
                size: (224, 224),
            });
        }
        let x0 = rng.random_range(0.0..(w as f32 - 80.0));
        let y0 = rng.random_range(0.0..(h as f32 - 60.0));
        cases.push(Case {
            photo: i,
            bx: CropBox {
                x0,
                y0,
                x1: x0 + 57.3,
                y1: y0 + 41.7,
            },
            size: (301, 257),
        });
        cases.push(Case {
            photo: i,
            bx: CropBox::full(w, h),
            size: (333, 199),
        });
        cases.push(Case {
            photo: i,
            bx: CropBox {
                x0: 10.5,
                y0: 20.25,
                x1: w as f32 - 3.75,
                y1: 20.25 + 90.0,
            },
            size: (97, 131),
        });
    }
    let jobs: Vec<serde_json::Value> = cases
        .iter()
        .enumerate()
        .map(|(k, c)| {
            let img = &images[c.photo];
            serde_json::json!({
                "input": tmp.path().join(format!("in{}.rgb", c.photo)),
                "width": img.width, "height": img.height,
                "box": [c.bx.x0, c.bx.y0, c.bx.x1, c.bx.y1],
                "size": [c.size.0, c.size.1],
                "output": tmp.path().join(format!("out{k}.rgb")),
            })
        })
        .collect();
    let jobs_path = tmp.path().join("jobs.json");
    std::fs::write(&jobs_path, serde_json::to_string(&jobs).unwrap()).unwrap();
    common::run_script(&python, "pillow_resize.py", &[&jobs_path]);

    let mut fast = FastResizer::default();
    let (mut total, mut ref_exact, mut ref_within1, mut fast_within1, mut ref_max, mut fast_max) =
        (0u64, 0u64, 0u64, 0u64, 0u8, 0u8);
    for (k, c) in cases.iter().enumerate() {
        let pil = std::fs::read(tmp.path().join(format!("out{k}.rgb"))).unwrap();
        let img = &images[c.photo];
        let ours = resize_u8_reference(img, c.bx, c.size.0, c.size.1);
        let mut f = vec![0u8; pil.len()];
        fast.resize_into(img, c.bx, c.size.0, c.size.1, &mut f);
        assert_eq!(ours.data.len(), pil.len());
        for ((a, b), p) in ours.data.iter().zip(&f).zip(&pil) {
            let (dr, df) = (a.abs_diff(*p), b.abs_diff(*p));
            total += 1;
            ref_exact += u64::from(dr == 0);
            ref_within1 += u64::from(dr <= 1);
            fast_within1 += u64::from(df <= 1);
            ref_max = ref_max.max(dr);
            fast_max = fast_max.max(df);
        }
    }
    let pct = |n: u64| 100.0 * n as f64 / total as f64;
    println!(
        "{} resizes of {} photos, {total} values: reference exact {:.4}%, within 1 {:.4}% (max {ref_max}); fast path within 1 {:.4}% (max {fast_max})",
        cases.len(),
        images.len(),
        pct(ref_exact),
        pct(ref_within1),
        pct(fast_within1)
    );
    assert!(
        pct(ref_within1) >= 99.9,
        "reference: {:.4}% within 1 level",
        pct(ref_within1)
    );
    assert!(
        pct(fast_within1) >= 99.9,
        "fast path: {:.4}% within 1 level",
        pct(fast_within1)
    );
}
