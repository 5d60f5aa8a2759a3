//! JPEG decoding with zune-jpeg, to RGB bytes. The header is read first so that oversize
//! images are refused before any pixel buffer is allocated.

use serde::{Deserialize, Serialize};
use zune_core::bytestream::ZCursor;
use zune_core::colorspace::ColorSpace;
use zune_core::options::DecoderOptions;
use zune_jpeg::JpegDecoder;

use crate::error::SampleErrorKind;
use crate::image::RgbImage;

/// Decompression limits, checked before reading a file and before decoding its pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecodeLimits {
    /// Largest accepted `width * height` of a source image.
    pub max_pixels: u64,
    /// Largest accepted encoded file size in bytes.
    pub max_file_bytes: u64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_pixels: 50_000_000,
            max_file_bytes: 64 << 20,
        }
    }
}

/// Width and height from the JPEG header, without decoding pixels.
pub fn jpeg_dimensions(bytes: &[u8]) -> Result<(u32, u32), SampleErrorKind> {
    check_signature(bytes)?;
    read_header(bytes).map(|(_, w, h)| (w, h))
}

/// A zune-jpeg decoder over an in-memory file.
type MemDecoder<'a> = JpegDecoder<ZCursor<&'a [u8]>>;

/// A decoder with its headers read, and the image's width and height.
fn read_header(bytes: &[u8]) -> Result<(MemDecoder<'_>, u32, u32), SampleErrorKind> {
    let mut dec = JpegDecoder::new_with_options(ZCursor::new(bytes), decoder_options());
    dec.decode_headers()
        .map_err(|e| SampleErrorKind::Decode(decode_error(&e)))?;
    let (w, h) = dec
        .dimensions()
        .ok_or_else(|| SampleErrorKind::Decode("no frame header".into()))?;
    Ok((dec, w as u32, h as u32))
}

/// zune-jpeg's messages are its Debug strings, some quoted or ending in a newline.
fn decode_error(e: &zune_jpeg::errors::DecodeErrors) -> String {
    let s = format!("{e:?}");
    s.trim()
        .trim_matches('"')
        .trim_end_matches("\\n")
        .trim()
        .to_owned()
}

fn decoder_options() -> DecoderOptions {
    DecoderOptions::default()
        .jpeg_set_out_colorspace(ColorSpace::RGB)
        .set_max_width(usize::from(u16::MAX))
        .set_max_height(usize::from(u16::MAX))
        .set_strict_mode(false)
}

fn check_signature(bytes: &[u8]) -> Result<(), SampleErrorKind> {
    if bytes.is_empty() {
        return Err(SampleErrorKind::NotJpeg("empty file".into()));
    }
    if bytes.starts_with(&[0xFF, 0xD8]) {
        return Ok(());
    }
    let what = if bytes.starts_with(b"\x89PNG") {
        "PNG data"
    } else if bytes.starts_with(b"GIF8") {
        "GIF data"
    } else if bytes.starts_with(b"RIFF") {
        "RIFF/WebP data"
    } else if bytes.starts_with(b"BM") {
        "BMP data"
    } else {
        "no JPEG start-of-image marker"
    };
    Err(SampleErrorKind::NotJpeg(what.into()))
}

/// Decodes a JPEG (baseline or progressive; YCbCr, grayscale, CMYK or YCCK) to RGB.
pub fn decode_jpeg(bytes: &[u8], limits: &DecodeLimits) -> Result<RgbImage, SampleErrorKind> {
    if bytes.len() as u64 > limits.max_file_bytes {
        return Err(SampleErrorKind::FileTooLarge {
            size: bytes.len() as u64,
            limit: limits.max_file_bytes,
        });
    }
    check_signature(bytes)?;
    // A decoder bug on hostile input must fail this image, not the worker thread.
    std::panic::catch_unwind(|| decode_checked(bytes, limits)).unwrap_or_else(|_| {
        Err(SampleErrorKind::Decode(
            "decoder panicked on this input".into(),
        ))
    })
}

fn decode_checked(bytes: &[u8], limits: &DecodeLimits) -> Result<RgbImage, SampleErrorKind> {
    let (mut dec, w, h) = read_header(bytes)?;
    let pixels = u64::from(w) * u64::from(h);
    if w == 0 || h == 0 {
        return Err(SampleErrorKind::Decode(format!("zero dimension {w}x{h}")));
    }
    if pixels > limits.max_pixels {
        return Err(SampleErrorKind::TooManyPixels {
            width: w,
            height: h,
            pixels,
            limit: limits.max_pixels,
        });
    }
    let out_cs = dec
        .output_colorspace()
        .ok_or_else(|| SampleErrorKind::Decode("unknown output colour space".into()))?;
    let size = dec
        .output_buffer_size()
        .ok_or_else(|| SampleErrorKind::Decode("image size overflows".into()))?;
    let mut buf = vec![0u8; size];
    dec.decode_into(&mut buf)
        .map_err(|e| SampleErrorKind::Decode(decode_error(&e)))?;
    let rgb = match out_cs.num_components() {
        3 => buf,
        1 => buf.iter().flat_map(|&v| [v, v, v]).collect(),
        n => {
            return Err(SampleErrorKind::Decode(format!(
                "unexpected {n} output components ({out_cs:?})"
            )))
        }
    };
    RgbImage::from_vec(w, h, rgb)
        .ok_or_else(|| SampleErrorKind::Decode("decoded size does not match header".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_jpeg_inputs_are_named() {
        let l = DecodeLimits::default();
        assert!(
            matches!(decode_jpeg(b"", &l), Err(SampleErrorKind::NotJpeg(m)) if m.contains("empty"))
        );
        assert!(
            matches!(decode_jpeg(b"\x89PNG\r\n", &l), Err(SampleErrorKind::NotJpeg(m)) if m.contains("PNG"))
        );
        assert!(
            matches!(decode_jpeg(b"GIF89a", &l), Err(SampleErrorKind::NotJpeg(m)) if m.contains("GIF"))
        );
        assert!(matches!(
            decode_jpeg(
                &[0xFF, 0xD8, 0xFF],
                &DecodeLimits {
                    max_file_bytes: 2,
                    ..l
                }
            ),
            Err(SampleErrorKind::FileTooLarge { size: 3, limit: 2 })
        ));
    }
}
