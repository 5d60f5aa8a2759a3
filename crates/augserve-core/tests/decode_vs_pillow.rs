#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]
//! PNG and WebP decoding against Pillow's `Image.open(path).convert("RGB")` (what
//! torchvision's ImageFolder loader gives a trainer): the reference suite's PNGs (real files
//! of several kinds), generated ones of every colour type and bit depth, palette and
//! transparency included, and libwebp's lossy, lossless and alpha WebPs of the real RGB ones.
//! 8-bit PNGs and every WebP must match byte for byte. 16-bit ones are checked against the
//! exact rounding v/257 instead: Pillow keeps only the high byte of 16-bit RGB and clips
//! 16-bit grayscale at 255, which is Pillow's behaviour, not the image's.
//!
//! Needs python3 with Pillow (the test script provides it). Without it the test prints
//! `skipped: ...`, unless `AUGSERVE_REQUIRE_PEERS=1` (set in CI), where it fails instead.

mod common;

use std::path::{Path, PathBuf};

use augserve_core::decode::{
    decode_image, image_dimensions, sniff_format, DecodeLimits, ImageFormat,
};
use image::{ExtendedColorType, ImageEncoder};

fn write_png(path: &Path, data: &[u8], w: u32, h: u32, color: ExtendedColorType) {
    let file = std::fs::File::create(path).unwrap();
    image::codecs::png::PngEncoder::new(file)
        .write_image(data, w, h, color)
        .unwrap();
}

/// A 16-bit sample rounded to 8 bits.
fn to8(v: u16) -> u8 {
    ((u32::from(v) + 128) / 257) as u8
}

/// A deterministic pattern of `n` bytes.
fn pattern(n: usize, seed: u32) -> Vec<u8> {
    (0..n as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 13) as u8)
        .collect()
}

#[test]
fn png_and_webp_decodes_match_pillow() {
    let Some(python) = common::python_with_pillow() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (w, h) = (41u32, 29u32);
    let px = (w * h) as usize;
    // 8-bit colour types the image crate writes.
    let mut paths: Vec<PathBuf> = Vec::new();
    for (name, channels, color) in [
        ("gray8", 1, ExtendedColorType::L8),
        ("gray_alpha8", 2, ExtendedColorType::La8),
        ("rgb8", 3, ExtendedColorType::Rgb8),
        ("rgba8", 4, ExtendedColorType::Rgba8),
    ] {
        let p = tmp.path().join(format!("{name}.png"));
        write_png(&p, &pattern(px * channels, 7), w, h, color);
        paths.push(p);
    }
    let reftest = common::jpeg_testdata().join("reftest");
    let real = common::files_with_ext(&reftest, "png");
    assert!(
        real.len() >= 20,
        "the reftest PNGs in {}",
        reftest.display()
    );
    paths.extend(real);

    let list = tmp.path().join("list.json");
    let names: Vec<String> = paths
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    std::fs::write(&list, serde_json::to_string(&names).unwrap()).unwrap();
    let out = common::run_script(&python, "pillow_decode.py", &[tmp.path(), &list]);
    let results: Vec<serde_json::Value> = serde_json::from_slice(&out).unwrap();
    let mut kinds = Vec::new();
    let mut webps = 0;
    for r in &results {
        let path = r["path"].as_str().unwrap();
        let bytes = std::fs::read(path).unwrap();
        let expected = std::fs::read(r["raw"].as_str().unwrap()).unwrap();
        let size = (
            r["width"].as_u64().unwrap() as u32,
            r["height"].as_u64().unwrap() as u32,
        );
        assert_eq!(image_dimensions(&bytes).unwrap(), size, "{path}");
        let ours = decode_image(&bytes, &DecodeLimits::default())
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!((ours.width, ours.height), size, "{path}");
        if sniff_format(&bytes).unwrap() == ImageFormat::WebP {
            assert!(
                ours.data == expected,
                "{path}: differs from Pillow (libwebp)"
            );
            webps += 1;
            continue;
        }
        if bytes[24] == 16 {
            // A real 16-bit file: the exact rounding of its samples (see the top).
            let wide = image::load_from_memory(&bytes).unwrap().into_rgb16();
            let rounded: Vec<u8> = wide.as_raw().iter().map(|&v| to8(v)).collect();
            assert!(ours.data == rounded, "{path}: not v/257 rounded");
        } else {
            assert!(ours.data == expected, "{path}: differs from Pillow");
        }
        // IHDR colour type and bit depth, for the report.
        kinds.push((bytes[25], bytes[24]));
    }
    kinds.sort_unstable();
    kinds.dedup();
    println!(
        "{} PNGs equal to Pillow's (8-bit) or to v/257 (16-bit), byte for byte; (colour type, \
         bit depth) covered: {kinds:?}; {webps} WebPs (lossy, lossless, alpha) equal to \
         libwebp's",
        results.len() - webps
    );
    assert_eq!(
        results.len() - webps,
        paths.len() + 3,
        "Pillow's three PNGs of its own"
    );
    assert!(webps >= 6, "WebPs of at least two real images");
    for needed in [(0, 1), (0, 8), (2, 8), (3, 8), (4, 8), (6, 8)] {
        assert!(kinds.contains(&needed), "no PNG of kind {needed:?}");
    }
}

#[test]
fn sixteen_bit_pngs_round_to_eight_bits() {
    let tmp = tempfile::tempdir().unwrap();
    let (w, h) = (19u32, 11u32);
    let px = (w * h) as usize;
    for (channels, color) in [
        (1, ExtendedColorType::L16),
        (2, ExtendedColorType::La16),
        (3, ExtendedColorType::Rgb16),
        (4, ExtendedColorType::Rgba16),
    ] {
        let samples: Vec<u16> = pattern(px * channels * 2, 3)
            .chunks(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        let p = tmp.path().join(format!("{channels}.png"));
        // The encoder takes 16-bit samples as native-endian bytes.
        let raw: Vec<u8> = samples.iter().flat_map(|v| v.to_ne_bytes()).collect();
        write_png(&p, &raw, w, h, color);
        let ours = decode_image(&std::fs::read(&p).unwrap(), &DecodeLimits::default()).unwrap();
        let expected: Vec<u8> = samples
            .chunks(channels)
            .flat_map(|s| match channels {
                1 | 2 => [to8(s[0]); 3],
                _ => [to8(s[0]), to8(s[1]), to8(s[2])],
            })
            .collect();
        let worst = ours
            .data
            .iter()
            .zip(&expected)
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap();
        assert!(worst <= 1, "{color:?}: {worst} levels from v/257");
    }
}
