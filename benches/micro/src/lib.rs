//! Inputs for the criterion benchmarks in `benches/stages.rs`: a photo-sized JPEG and the
//! prepared images of a batch. Run with `cargo bench -p augserve-benches`.

use std::path::Path;

use augserve_core::decode::{decode_jpeg, DecodeLimits};
use augserve_core::image::RgbImage;
use augserve_core::ops::crop::CropBox;
use augserve_core::pipeline::PreparedImage;

/// The benchmark JPEG: `AUGSERVE_BENCH_JPEG` if set (e.g. a file of `benches/make_corpus.py`'s
/// corpus), else a 500x375 quality-85 4:2:0 JPEG of a smooth synthetic scene.
pub fn sample_jpeg() -> Vec<u8> {
    if let Some(p) = std::env::var_os("AUGSERVE_BENCH_JPEG") {
        if let Ok(b) = std::fs::read(Path::new(&p)) {
            return b;
        }
    }
    let (w, h) = (500u32, 375u32);
    let mut rgb = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h {
        for x in 0..w {
            let t = ((x * 7 + y * 13) % 97) as u8;
            rgb.extend_from_slice(&[
                (x * 255 / w) as u8 ^ t,
                (y * 255 / h) as u8,
                ((x + y) % 256) as u8 / 2 + t,
            ]);
        }
    }
    let mut out = Vec::new();
    let mut enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85);
    // Encoding an in-memory buffer of the right size cannot fail.
    if enc
        .encode(&rgb, w, h, image::ExtendedColorType::Rgb8)
        .is_err()
    {
        return Vec::new();
    }
    out
}

/// The sample JPEG decoded (a mid-grey image if it does not decode).
pub fn sample_image() -> RgbImage {
    decode_jpeg(&sample_jpeg(), &DecodeLimits::default()).unwrap_or_else(|_| {
        RgbImage::from_vec(500, 375, vec![128; 500 * 375 * 3])
            .unwrap_or_else(|| RgbImage::new(1, 1))
    })
}

/// `n` prepared images: the sample image with a different central crop each.
pub fn prepared_batch(n: usize) -> Vec<PreparedImage> {
    let img = sample_image();
    (0..n)
        .map(|i| {
            let s = 0.6 + 0.4 * (i % 5) as f32 / 5.0;
            let (cw, ch) = (img.width as f32 * s, img.height as f32 * s);
            let x0 = (img.width as f32 - cw) / 2.0;
            let y0 = (img.height as f32 - ch) / 2.0;
            PreparedImage {
                sample_id: i as u64,
                label: (i % 10) as i64,
                region: img.clone(),
                crop: CropBox {
                    x0,
                    y0,
                    x1: x0 + cw,
                    y1: y0 + ch,
                },
                flip: i % 2 == 0,
                deferred: None,
                warning: None,
                weights: None,
            }
        })
        .collect()
}
