#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]
//! Region decoding (only the part a crop needs, libjpeg-turbo's cropping region) gives exactly
//! the same bytes as decoding the whole image with the same decoder and cutting the region:
//! on every chroma layout, odd sizes, restart markers, progressive files, real photos and the
//! shared test suites; and at each DCT scale (1/2, 1/4, 1/8), the same as the whole decode at
//! that scale. Regions are drawn at random (fixed seed), plus the edges and corners.

mod common;

use std::path::PathBuf;

use augserve_core::decode::{
    decode_image_region, decode_jpeg, decode_jpeg_turbo, DecodeLimits, RegionHeader, RegionRequest,
    DCT_DENOMS,
};
use augserve_core::image::RgbImage;
use jpeg_encoder::{ColorType, Encoder, SamplingFactor};
use rand::{Rng, SeedableRng};

/// A photo-like test image: gradients plus noise, so every block has detail and the chroma
/// differs between neighbouring blocks (where a region's edge would show a wrong upsampling).
fn pattern(w: u32, h: u32, seed: u64) -> Vec<u8> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut v = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h {
        for x in 0..w {
            let n: i32 = rng.random_range(-40..40);
            let px = [
                (x * 255 / w) as i32 + n,
                (y * 255 / h) as i32 - n,
                ((x + y) * 7 % 256) as i32 + n / 2,
            ];
            v.extend(px.map(|c| c.clamp(0, 255) as u8));
        }
    }
    v
}

fn encode(
    w: u32,
    h: u32,
    sampling: SamplingFactor,
    progressive: bool,
    restart: u16,
    gray: bool,
) -> Vec<u8> {
    let rgb = pattern(w, h, u64::from(w * 31 + h));
    let mut out = Vec::new();
    let mut enc = Encoder::new(&mut out, 88);
    enc.set_sampling_factor(sampling);
    enc.set_progressive(progressive);
    if restart > 0 {
        enc.set_restart_interval(restart);
    }
    if gray {
        let luma: Vec<u8> = rgb.chunks(3).map(|p| p[1]).collect();
        enc.encode(&luma, w as u16, h as u16, ColorType::Luma)
            .unwrap();
    } else {
        enc.encode(&rgb, w as u16, h as u16, ColorType::Rgb)
            .unwrap();
    }
    out
}

/// Regions of a w x h image: the whole image, the corners and edges, 1-pixel ones, and
/// `random` drawn at random.
fn regions(w: u32, h: u32, random: usize, seed: u64) -> Vec<(u32, u32, u32, u32)> {
    let mut v = vec![
        (0, 0, w, h),
        (0, 0, 1, 1),
        (w - 1, h - 1, 1, 1),
        (0, 0, w.div_ceil(2), h.div_ceil(2)),
        (w / 2, h / 2, w - w / 2, h - h / 2),
        (w / 3, 0, (w / 3).max(1), h),
        (0, h / 3, w, (h / 3).max(1)),
    ];
    // Edges on and next to the first and last iMCU boundaries (8, 16 and 32 pixels: every
    // layout and scale), where the decoded area's edge columns meet the wanted region.
    for imcu in [8, 16, 32] {
        for b in [imcu, w / imcu * imcu].into_iter().filter(|&b| b > 0) {
            for x in [b - 1, b, b + 1].into_iter().filter(|&x| x < w) {
                v.push((x, 0, (w - x).min(imcu + 3), h));
                v.push((0, 0, x, h.min(5)));
            }
        }
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    for _ in 0..random {
        let rw = rng.random_range(1..=w);
        let rh = rng.random_range(1..=h);
        v.push((
            rng.random_range(0..=w - rw),
            rng.random_range(0..=h - rh),
            rw,
            rh,
        ));
    }
    v
}

/// Checks every region of `jpeg`, unscaled and at each DCT scale, against libjpeg-turbo's
/// whole decode at the same scale; returns how many were checked.
fn check_regions(name: &str, jpeg: &[u8], random: usize) -> usize {
    let mut checked = check_regions_at(name, jpeg, random, 1);
    for denom in DCT_DENOMS {
        checked += check_regions_at(name, jpeg, random / 4 + 1, denom);
    }
    checked
}

/// libjpeg-turbo's decode of `area` of `jpeg` at 1/`denom`, asserting that libjpeg-turbo ran
/// (it alone offers scaling) and was asked with the full size.
fn decode_at(name: &str, jpeg: &[u8], denom: u32, area: Option<(u32, u32, u32, u32)>) -> RgbImage {
    let limits = DecodeLimits::default();
    let mut asked = None;
    let mut region_for = |head: RegionHeader| {
        asked = Some(head.max_denom);
        let whole = (
            0,
            0,
            head.width.div_ceil(denom),
            head.height.div_ceil(denom),
        );
        RegionRequest {
            denom,
            area: area.unwrap_or(whole),
        }
    };
    let (region, damage) = decode_image_region(jpeg, &limits, false, &mut region_for)
        .unwrap_or_else(|e| panic!("{name} 1/{denom} {area:?}: {e}"));
    assert_eq!(asked, Some(8), "{name}: libjpeg-turbo declined");
    assert!(damage.is_none());
    region
}

fn check_regions_at(name: &str, jpeg: &[u8], random: usize, denom: u32) -> usize {
    let whole = decode_at(name, jpeg, denom, None);
    if denom == 1 {
        let turbo = decode_jpeg_turbo(jpeg, &DecodeLimits::default());
        assert!(turbo.as_ref() == Some(&whole), "{name}: whole decode");
    }
    let boxes = regions(whole.width, whole.height, random, jpeg.len() as u64);
    for &(x, y, w, h) in &boxes {
        let region = decode_at(name, jpeg, denom, Some((x, y, w, h)));
        let expected: RgbImage = whole.crop(x, y, w, h);
        if region != expected {
            let differing = region
                .data
                .iter()
                .zip(&expected.data)
                .filter(|(a, b)| a != b)
                .count();
            panic!(
                "{name} at 1/{denom}: region {x},{y} {w}x{h} differs from the whole decode in {differing} bytes"
            );
        }
    }
    boxes.len()
}

#[test]
fn region_equals_whole_decode_on_every_layout() {
    use SamplingFactor::*;
    let layouts = [
        ("4:4:4", F_1_1),
        ("4:2:2", F_2_1),
        ("4:2:0", F_2_2),
        ("4:4:0", F_1_2),
        ("4:1:1", F_4_1),
        ("4:1:0", F_4_2),
        ("1x4", F_1_4),
        ("2x4", F_2_4),
    ];
    let mut checked = 0;
    for (size_i, (w, h)) in [(333u32, 251u32), (97, 61), (16, 16), (1, 9)]
        .into_iter()
        .enumerate()
    {
        for (name, sampling) in layouts {
            for progressive in [false, true] {
                for restart in [0u16, 3] {
                    let jpeg = encode(w, h, sampling, progressive, restart, false);
                    let label =
                        format!("{name} {w}x{h} progressive={progressive} restart={restart}");
                    checked += check_regions(&label, &jpeg, if size_i == 0 { 40 } else { 8 });
                }
            }
        }
        let gray = encode(w, h, F_1_1, false, 2, true);
        checked += check_regions(&format!("gray {w}x{h}"), &gray, 10);
    }
    println!("{checked} regions equal to the whole decode");
}

#[test]
fn region_equals_whole_decode_on_real_files() {
    let photos = std::env::var("AUGSERVE_TEST_PHOTOS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/testdata/photos")
        });
    let mut files = Vec::new();
    if photos.is_dir() {
        files.extend(common::files_with_ext(&photos, "jpg"));
    } else {
        common::skip_or_fail(&format!(
            "real photos for the region decode test: {} (scripts/fetch-photos.sh)",
            photos.display()
        ));
    }
    // The decoder test suites' reference files: odd sizes, unusual layouts, restart markers.
    files.extend(common::files_with_ext(
        &common::jpeg_testdata().join("reftest"),
        "jpg",
    ));
    let limits = DecodeLimits::default();
    let (mut checked, mut declined) = (0, Vec::new());
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        if decode_jpeg_turbo(&bytes, &limits).is_none() {
            // Not a JPEG, or one libjpeg-turbo declines or warns about: zune-jpeg judges those.
            if decode_jpeg(&bytes, &limits).is_ok() {
                declined.push(name);
            }
            continue;
        }
        checked += check_regions(&name, &bytes, 12);
    }
    assert!(checked > 100, "only {checked} regions checked");
    println!(
        "{checked} regions of {} files equal to the whole decode; declined or warned about: {declined:?}",
        files.len()
    );
}
