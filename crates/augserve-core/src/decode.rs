//! Image decoding to RGB bytes: JPEG with libjpeg-turbo (`turbojpeg.rs`: only the region a
//! crop needs), and with zune-jpeg for what libjpeg-turbo warns about or does not take
//! (damaged files, CMYK), which zune-jpeg also judges (`truncated`, `damaged`); PNG and WebP
//! with the image crate's decoders, for datasets that mix them in (ImageNet's training set
//! itself has one PNG under a .JPEG name; web-scraped sets carry WebP).
//! The header is read first so that oversize images are refused before any pixel buffer is
//! allocated.

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

/// The encoded formats augserve decodes, told apart by their first bytes (not by file name:
/// datasets hold PNGs named .jpg and the reverse).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    Jpeg,
    Png,
    WebP,
}

const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

/// Which format `bytes` hold, or an `UnsupportedFormat` error naming what they look like. A
/// damaged PNG signature still counts as PNG, so that the error says what is wrong with it.
pub fn sniff_format(bytes: &[u8]) -> Result<ImageFormat, SampleErrorKind> {
    if bytes.starts_with(b"\x89PNG") {
        return Ok(ImageFormat::Png);
    }
    if bytes.starts_with(b"RIFF") && bytes.get(8..12) == Some(b"WEBP") {
        return Ok(ImageFormat::WebP);
    }
    check_signature(bytes).map(|()| ImageFormat::Jpeg)
}

/// Width and height from a JPEG's, PNG's or WebP's header, without decoding pixels.
pub fn image_dimensions(bytes: &[u8]) -> Result<(u32, u32), SampleErrorKind> {
    match sniff_format(bytes)? {
        ImageFormat::Jpeg => jpeg_dimensions(bytes),
        ImageFormat::Png => png_dimensions(bytes),
        ImageFormat::WebP => webp_decoder(bytes).map(|d| image::ImageDecoder::dimensions(&d)),
    }
}

/// Decodes a JPEG, PNG or WebP to RGB (`decode_jpeg`, `decode_png`, `decode_webp`).
pub fn decode_image(bytes: &[u8], limits: &DecodeLimits) -> Result<RgbImage, SampleErrorKind> {
    decode_image_with(bytes, limits, decode_jpeg)
}

/// A JPEG decoder: libjpeg-turbo first (`decode_jpeg`), or zune-jpeg alone (`decode_jpeg_zune`).
type JpegDecoderFn = fn(&[u8], &DecodeLimits) -> Result<RgbImage, SampleErrorKind>;

fn decode_image_with(
    bytes: &[u8],
    limits: &DecodeLimits,
    jpeg: JpegDecoderFn,
) -> Result<RgbImage, SampleErrorKind> {
    check_file_size(bytes, limits)?;
    match sniff_format(bytes)? {
        ImageFormat::Jpeg => jpeg(bytes, limits),
        ImageFormat::Png => decode_png(bytes, limits),
        ImageFormat::WebP => decode_webp(bytes, limits),
    }
}

/// The part of an image a caller wants: `area` (x, y, width, height) of the image scaled by
/// 1/`denom` in libjpeg-turbo's DCT domain (`denom` 1, 2, 4 or 8; the scaled image is
/// `ceil(size / denom)` on each side, its pixel `i` covering the full image's
/// `[i * denom, (i + 1) * denom)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionRequest {
    pub denom: u32,
    pub area: (u32, u32, u32, u32),
}

impl RegionRequest {
    /// `area` of the full-size image.
    pub fn unscaled(area: (u32, u32, u32, u32)) -> Self {
        RegionRequest { denom: 1, area }
    }
}

/// What the decoder that runs read from a file's header, for the caller to choose its region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionHeader {
    /// The full image's size.
    pub width: u32,
    pub height: u32,
    /// The largest DCT scaling denominator the decoder offers (1: none).
    pub max_denom: u32,
    /// A progressive JPEG: libjpeg-turbo reads every scan, each down to the region's last
    /// rows (vendor/turbojpeg-sys).
    pub progressive: bool,
}

impl RegionHeader {
    /// A header of a decoder that decodes whole images, unscaled.
    pub fn whole(width: u32, height: u32) -> Self {
        RegionHeader {
            width,
            height,
            max_denom: 1,
            progressive: false,
        }
    }
}

/// The part of an image a caller wants, from what the header said.
pub type RegionFor<'a> = &'a mut dyn FnMut(RegionHeader) -> RegionRequest;

/// A decoded region with what the decoder decoded around it: libjpeg-turbo decodes whole iMCU
/// columns (8-32 pixels), so the area asked for is `inner` (x, y, w, h) of `image`. A caller
/// that reads only inside `inner` (the resize) skips the copy that cuts it out.
#[derive(Debug)]
pub struct DecodedArea {
    pub image: RgbImage,
    pub inner: (u32, u32, u32, u32),
}

impl DecodedArea {
    /// Exactly the area asked for, cut out in its own buffer.
    pub fn into_inner(self) -> RgbImage {
        let mut image = self.image;
        image.crop_in_place(self.inner);
        image
    }
}

/// The scaling denominators libjpeg-turbo's IDCT offers (of its 1/8 steps, the ones that keep
/// every 8x8 block a whole number of pixels).
pub const DCT_DENOMS: [u32; 3] = [8, 4, 2];

/// Decodes the part of an image that `region_for(header)` asks for and
/// returns exactly it, at the scale of `region_for`'s last answer. Unscaled, it equals byte for
/// byte that region of `decode_image` (or of `decode_image_accepting_damage` with
/// `accept_damage`, which also gives the damage); scaled, that region of libjpeg-turbo's
/// whole decode at the same scale. A JPEG libjpeg-turbo takes cleanly is decoded only there
/// (the crop's region, plus a margin), and may be scaled (`max_denom` 8); anything else is
/// decoded whole, unscaled (`region_for` is asked again with `max_denom` 1), and cut.
pub fn decode_image_region(
    bytes: &[u8],
    limits: &DecodeLimits,
    accept_damage: bool,
    region_for: RegionFor<'_>,
) -> Result<(RgbImage, Option<SampleErrorKind>), SampleErrorKind> {
    decode_image_area(bytes, limits, accept_damage, region_for)
        .map(|(area, damage)| (area.into_inner(), damage))
}

/// [`decode_image_region`] with what was decoded around the region left in place.
pub fn decode_image_area(
    bytes: &[u8],
    limits: &DecodeLimits,
    accept_damage: bool,
    region_for: RegionFor<'_>,
) -> Result<(DecodedArea, Option<SampleErrorKind>), SampleErrorKind> {
    check_file_size(bytes, limits)?;
    if sniff_format(bytes)? == ImageFormat::Jpeg {
        if let Some(area) = turbo_region(bytes, limits, region_for) {
            return Ok((area, None));
        }
    }
    // libjpeg-turbo declined (or not a JPEG): zune-jpeg decodes and judges it, whole.
    let (img, damage) = if accept_damage {
        accepting_damage(bytes, limits, decode_jpeg_zune)?
    } else {
        (decode_image_with(bytes, limits, decode_jpeg_zune)?, None)
    };
    let asked = region_for(RegionHeader::whole(img.width, img.height));
    let (x, y, w, h) = asked.area;
    if asked.denom != 1 {
        return Err(SampleErrorKind::Decode(format!(
            "a scale of 1/{} asked of a decoder that offers none",
            asked.denom
        )));
    }
    if x + w > img.width || y + h > img.height {
        return Err(SampleErrorKind::Decode(format!(
            "region {x},{y} {w}x{h} outside the {}x{} image",
            img.width, img.height
        )));
    }
    let image = img.into_region((x, y, w, h));
    Ok((
        DecodedArea {
            image,
            inner: (0, 0, w, h),
        },
        damage,
    ))
}

/// A WebP decoder with the file's chunk headers read (no pixels decoded or allocated).
fn webp_decoder(
    bytes: &[u8],
) -> Result<image::codecs::webp::WebPDecoder<std::io::Cursor<&[u8]>>, SampleErrorKind> {
    image::codecs::webp::WebPDecoder::new(std::io::Cursor::new(bytes))
        .map_err(|e| SampleErrorKind::Decode(format!("WebP: {e}")))
}

/// Decodes a WebP (lossy or lossless; an animation's first frame) to RGB, alpha dropped as
/// for PNG. Equal byte for byte to libwebp's output (through Pillow) in CI.
pub fn decode_webp(bytes: &[u8], limits: &DecodeLimits) -> Result<RgbImage, SampleErrorKind> {
    check_file_size(bytes, limits)?;
    // A decoder bug on hostile input must fail this image, not the worker thread.
    std::panic::catch_unwind(|| {
        let decoder = webp_decoder(bytes)?;
        let (w, h) = image::ImageDecoder::dimensions(&decoder);
        check_pixels(w, h, limits)?;
        to_rgb(decoder, w, h, "WebP")
    })
    .unwrap_or_else(|_| {
        Err(SampleErrorKind::Decode(
            "WebP decoder panicked on this input".into(),
        ))
    })
}

/// Decodes with one of the image crate's decoders (headers read, size checked) to RGB.
fn to_rgb(
    decoder: impl image::ImageDecoder,
    w: u32,
    h: u32,
    format: &str,
) -> Result<RgbImage, SampleErrorKind> {
    let rgb = image::DynamicImage::from_decoder(decoder)
        .map_err(|e| SampleErrorKind::Decode(format!("{format}: {e}")))?
        .into_rgb8();
    RgbImage::from_vec(w, h, rgb.into_raw())
        .ok_or_else(|| SampleErrorKind::Decode(format!("{format}: decoded size does not match")))
}

/// Width and height from a PNG's IHDR chunk, which must come first.
pub fn png_dimensions(bytes: &[u8]) -> Result<(u32, u32), SampleErrorKind> {
    let bad = |m: &str| SampleErrorKind::Decode(format!("PNG: {m}"));
    if !bytes.starts_with(PNG_SIGNATURE) {
        return Err(bad("damaged or truncated signature"));
    }
    // Signature (8), chunk length (4), "IHDR" (4), width (4), height (4).
    let ihdr = bytes.get(8..24).ok_or_else(|| bad("truncated header"))?;
    if &ihdr[4..8] != b"IHDR" {
        return Err(bad("the first chunk is not IHDR"));
    }
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    Ok((be(&ihdr[8..12]), be(&ihdr[12..16])))
}

/// Decodes a PNG (any bit depth and colour type, palette and transparency expanded, 16-bit
/// samples rounded to 8) to RGB. Alpha is dropped, as PIL's `convert("RGB")` does, which
/// is what torchvision's ImageFolder gives trainers; so is any gamma or colour profile.
pub fn decode_png(bytes: &[u8], limits: &DecodeLimits) -> Result<RgbImage, SampleErrorKind> {
    check_file_size(bytes, limits)?;
    let (w, h) = png_dimensions(bytes)?;
    check_pixels(w, h, limits)?;
    // A decoder bug on hostile input must fail this image, not the worker thread.
    std::panic::catch_unwind(|| {
        use image::ImageDecoder;
        let png_error = |e: image::ImageError| SampleErrorKind::Decode(format!("PNG: {e}"));
        let mut image_limits = image::Limits::default();
        image_limits.max_image_width = Some(w);
        image_limits.max_image_height = Some(h);
        // The largest buffer a w x h image needs: 16-bit RGBA, plus the RGB copy.
        image_limits.max_alloc = Some(u64::from(w) * u64::from(h) * 11 + (1 << 20));
        let decoder =
            image::codecs::png::PngDecoder::with_limits(std::io::Cursor::new(bytes), image_limits)
                .map_err(png_error)?;
        if decoder.dimensions() != (w, h) {
            return Err(SampleErrorKind::Decode(
                "PNG: size differs from IHDR".into(),
            ));
        }
        to_rgb(decoder, w, h, "PNG")
    })
    .unwrap_or_else(|_| {
        Err(SampleErrorKind::Decode(
            "PNG decoder panicked on this input".into(),
        ))
    })
}

fn check_file_size(bytes: &[u8], limits: &DecodeLimits) -> Result<(), SampleErrorKind> {
    if bytes.len() as u64 > limits.max_file_bytes {
        return Err(SampleErrorKind::FileTooLarge {
            size: bytes.len() as u64,
            limit: limits.max_file_bytes,
        });
    }
    Ok(())
}

fn check_pixels(w: u32, h: u32, limits: &DecodeLimits) -> Result<(), SampleErrorKind> {
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
    Ok(())
}

/// A zune-jpeg decoder over an in-memory file.
type MemDecoder<'a> = JpegDecoder<ZCursor<&'a [u8]>>;

/// A decoder with its headers read, and the image's width and height.
fn read_header(bytes: &[u8]) -> Result<(MemDecoder<'_>, u32, u32), SampleErrorKind> {
    read_header_with(bytes, false)
}

fn read_header_with(
    bytes: &[u8],
    strict: bool,
) -> Result<(MemDecoder<'_>, u32, u32), SampleErrorKind> {
    let options = decoder_options().set_strict_mode(strict);
    let mut dec = JpegDecoder::new_with_options(ZCursor::new(bytes), options);
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
        return Err(SampleErrorKind::UnsupportedFormat("empty file".into()));
    }
    if bytes.starts_with(&[0xFF, 0xD8]) {
        return Ok(());
    }
    let what = if bytes.starts_with(b"\x89PNG") {
        "PNG data"
    } else if bytes.starts_with(b"GIF8") {
        "GIF data"
    } else if bytes.starts_with(b"RIFF") {
        "RIFF data that is not WebP"
    } else if bytes.starts_with(b"BM") {
        "BMP data"
    } else {
        "neither a JPEG start-of-image marker nor a PNG signature"
    };
    Err(SampleErrorKind::UnsupportedFormat(what.into()))
}

/// Decodes a JPEG (baseline or progressive; YCbCr, grayscale, CMYK or YCCK) to RGB: with
/// libjpeg-turbo, or (a file it warns about or does not take) with zune-jpeg, which judges it.
pub fn decode_jpeg(bytes: &[u8], limits: &DecodeLimits) -> Result<RgbImage, SampleErrorKind> {
    check_file_size(bytes, limits)?;
    check_signature(bytes)?;
    match decode_jpeg_turbo(bytes, limits) {
        Some(img) => Ok(img),
        None => decode_jpeg_zune(bytes, limits),
    }
}

/// Decodes a JPEG with zune-jpeg only: strictly, then (a damaged file) leniently to say how.
pub fn decode_jpeg_zune(bytes: &[u8], limits: &DecodeLimits) -> Result<RgbImage, SampleErrorKind> {
    check_file_size(bytes, limits)?;
    check_signature(bytes)?;
    // A decoder bug on hostile input must fail this image, not the worker thread.
    std::panic::catch_unwind(|| decode_checked(bytes, limits)).unwrap_or_else(|_| {
        Err(SampleErrorKind::Decode(
            "decoder panicked on this input".into(),
        ))
    })
}

/// `decode_image`, but a damaged JPEG (`truncated` / `damaged`) is decoded leniently (the
/// missing part made up, as libjpeg does) and comes back with its complaint as a warning:
/// for a spec whose `on_damaged` is `accept`.
pub fn decode_image_accepting_damage(
    bytes: &[u8],
    limits: &DecodeLimits,
) -> Result<(RgbImage, Option<SampleErrorKind>), SampleErrorKind> {
    accepting_damage(bytes, limits, decode_jpeg)
}

fn accepting_damage(
    bytes: &[u8],
    limits: &DecodeLimits,
    jpeg: JpegDecoderFn,
) -> Result<(RgbImage, Option<SampleErrorKind>), SampleErrorKind> {
    match decode_image_with(bytes, limits, jpeg) {
        Err(damage @ SampleErrorKind::Damaged { .. }) => {
            let lenient = std::panic::catch_unwind(|| decode_pixels(bytes, limits, false))
                .unwrap_or_else(|_| {
                    Err(SampleErrorKind::Decode(
                        "decoder panicked on this input".into(),
                    ))
                })?;
            Ok((lenient, Some(damage)))
        }
        decoded => decoded.map(|img| (img, None)),
    }
}

/// The kinds of JPEG the decoder does not take, named from the header (zune-jpeg would call
/// them corrupt, e.g. "Number of components cannot be zero" for a lossless file).
fn check_supported_jpeg(bytes: &[u8]) -> Result<(), SampleErrorKind> {
    let Ok(info) = jpeg_info(bytes) else {
        return Ok(()); // a damaged header: the decoder says what is wrong
    };
    match unsupported_kind(&info) {
        Some(k) => Err(SampleErrorKind::UnsupportedJpeg(k)),
        None => Ok(()),
    }
}

fn unsupported_kind(info: &JpegInfo) -> Option<String> {
    let kind = match info.coding {
        JpegCoding::Baseline | JpegCoding::Progressive => None,
        JpegCoding::Lossless => Some("lossless (SOF3)".to_string()),
        JpegCoding::Arithmetic => Some("arithmetic-coded (SOF9-SOF11)".to_string()),
        JpegCoding::Hierarchical => Some("hierarchical (SOF5-SOF7, SOF13-SOF15)".to_string()),
    };
    kind.or_else(|| (info.precision != 8).then(|| format!("{}-bit samples", info.precision)))
}

/// Whether libjpeg-turbo decodes `bytes`: a kind augserve takes, with its end marker. A file
/// cut short goes to zune-jpeg, which reports the truncation whatever the crop (libjpeg-turbo
/// stops reading after the crop's last row, so it would not see a cut below it).
fn for_turbo(bytes: &[u8]) -> bool {
    match jpeg_info(bytes) {
        Ok(i) => i.ends_with_eoi && unsupported_kind(&i).is_none(),
        // Headers our parser does not follow (padding between segments): libjpeg-turbo tries,
        // and what it warns about, zune-jpeg judges.
        Err(_) => ends_with_eoi(bytes),
    }
}

/// Decodes a whole JPEG with libjpeg-turbo only; `None` when it declines the file (anything
/// it warns about, CMYK, no end marker, a kind augserve refuses), which `decode_jpeg` then
/// leaves to zune-jpeg. For tests and benchmarks that need to know which decoder ran.
pub fn decode_jpeg_turbo(bytes: &[u8], limits: &DecodeLimits) -> Option<RgbImage> {
    turbo_region(bytes, limits, &mut |h| {
        RegionRequest::unscaled((0, 0, h.width, h.height))
    })
    .map(DecodedArea::into_inner)
}

/// Takes back a decoded region's buffer for the next decode on this thread: the per-image
/// stage gives it once it has resized the region, so large photos do not fault in fresh pages
/// for every image.
pub fn recycle_decode_buffer(buf: Vec<u8>) {
    crate::turbojpeg::recycle_buffer(buf);
}

fn turbo_region(
    bytes: &[u8],
    limits: &DecodeLimits,
    region_for: RegionFor<'_>,
) -> Option<DecodedArea> {
    if bytes.len() as u64 > limits.max_file_bytes || !for_turbo(bytes) {
        return None;
    }
    crate::turbojpeg::decode_region(bytes, limits, region_for).ok()
}

/// zune-jpeg's strict-mode complaints that leave the pixels intact: padding between header
/// segments, which libjpeg only warns about.
const HARMLESS_STRICT: &[&str] = &["Extra bytes between headers"];

/// Strict-mode messages that mean the data ended early.
const TRUNCATION: &[&str] = &[
    "Exhausted data",
    "Premature end",
    "bits left",
    "No more bytes",
];

/// Decodes strictly (no extra cost on a good file). A file only the lenient decoder takes
/// decoded in part, the rest made up (grey after a truncation, a skipped scan): that is an
/// error of its own, `truncated` or `damaged`, unless the strict complaint was harmless.
fn decode_checked(bytes: &[u8], limits: &DecodeLimits) -> Result<RgbImage, SampleErrorKind> {
    check_supported_jpeg(bytes)?;
    match decode_pixels(bytes, limits, true) {
        Err(SampleErrorKind::Decode(strict)) => {
            let lenient = decode_pixels(bytes, limits, false)?;
            if HARMLESS_STRICT.iter().any(|h| strict.contains(h)) {
                return Ok(lenient);
            }
            Err(SampleErrorKind::Damaged {
                truncated: TRUNCATION.iter().any(|t| strict.contains(t)),
                detail: strict,
            })
        }
        decoded => decoded,
    }
}

fn decode_pixels(
    bytes: &[u8],
    limits: &DecodeLimits,
    strict: bool,
) -> Result<RgbImage, SampleErrorKind> {
    let (mut dec, w, h) = read_header_with(bytes, strict)?;
    check_pixels(w, h, limits)?;
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
    fn unsupported_inputs_are_named() {
        let l = DecodeLimits::default();
        let unsupported = |r: Result<RgbImage, SampleErrorKind>, what: &str| matches!(r, Err(SampleErrorKind::UnsupportedFormat(m)) if m.contains(what));
        assert!(unsupported(decode_image(b"", &l), "empty"));
        assert!(unsupported(decode_image(b"GIF89a", &l), "GIF"));
        assert!(unsupported(
            decode_image(b"RIFF\x04\0\0\0WAVE", &l),
            "not WebP"
        ));
        // Where only a JPEG will do (the GPU decoder's CPU fallback), a PNG is refused.
        assert!(unsupported(decode_jpeg(b"\x89PNG\r\n\x1a\n", &l), "PNG"));
        assert!(matches!(
            decode_image(
                &[0xFF, 0xD8, 0xFF],
                &DecodeLimits {
                    max_file_bytes: 2,
                    ..l
                }
            ),
            Err(SampleErrorKind::FileTooLarge { size: 3, limit: 2 })
        ));
    }

    fn png(w: u32, h: u32) -> Vec<u8> {
        use image::ImageEncoder;
        let mut out = Vec::new();
        image::codecs::png::PngEncoder::new(&mut out)
            .write_image(
                &vec![90u8; (w * h * 3) as usize],
                w,
                h,
                image::ExtendedColorType::Rgb8,
            )
            .unwrap();
        out
    }

    #[test]
    fn webp_header_is_checked_before_decoding() {
        use image::ImageEncoder;
        let l = DecodeLimits::default();
        let mut ok = Vec::new();
        image::codecs::webp::WebPEncoder::new_lossless(&mut ok)
            .write_image(&[200u8; 9 * 4 * 3], 9, 4, image::ExtendedColorType::Rgb8)
            .unwrap();
        assert_eq!(sniff_format(&ok).unwrap(), ImageFormat::WebP);
        assert_eq!(image_dimensions(&ok).unwrap(), (9, 4));
        let img = decode_image(&ok, &l).unwrap();
        assert_eq!((img.width, img.height), (9, 4));
        assert!(img.data.iter().all(|&v| v == 200));
        // A lossless header (VP8L: signature byte 0x2f, then 14-bit width-1 and height-1)
        // claiming 16383 x 16383: refused from the header, no pixel buffer.
        assert_eq!(&ok[12..16], b"VP8L");
        let mut huge = ok.clone();
        let packed: u32 = 16382 | (16382 << 14);
        huge[21..25].copy_from_slice(&packed.to_le_bytes());
        assert!(matches!(
            decode_image(&huge, &l),
            Err(SampleErrorKind::TooManyPixels {
                width: 16383,
                height: 16383,
                ..
            })
        ));
        // image-webp 0.2.4 reads the largest size, 16384, as 0 (it masks after adding one):
        // such a file fails as a zero-size image rather than decoding.
        huge[21..25].copy_from_slice(&(16383u32 | (16383 << 14)).to_le_bytes());
        let e = decode_image(&huge, &l);
        assert!(matches!(e, Err(SampleErrorKind::Decode(m)) if m.contains("zero dimension")));
        for cut in [12, 16, 22, ok.len() - 3] {
            match decode_image(&ok[..cut], &l) {
                Err(SampleErrorKind::Decode(m)) => assert!(m.starts_with("WebP"), "{cut}: {m}"),
                other => panic!("{cut} bytes: {other:?}"),
            }
        }
    }

    #[test]
    fn png_header_is_checked_before_decoding() {
        let l = DecodeLimits::default();
        let ok = png(7, 5);
        assert_eq!(sniff_format(&ok).unwrap(), ImageFormat::Png);
        assert_eq!(image_dimensions(&ok).unwrap(), (7, 5));
        let img = decode_image(&ok, &l).unwrap();
        assert_eq!((img.width, img.height), (7, 5));
        assert!(img.data.iter().all(|&v| v == 90));

        // A header claiming 65535 x 65535 is refused from the header: no pixel buffer.
        let mut huge = ok.clone();
        huge[16..20].copy_from_slice(&65535u32.to_be_bytes());
        huge[20..24].copy_from_slice(&65535u32.to_be_bytes());
        assert!(matches!(
            decode_image(&huge, &l),
            Err(SampleErrorKind::TooManyPixels {
                width: 65535,
                height: 65535,
                ..
            })
        ));
        // Within the limit but not matching the data: a decode error (bad CRC), no panic.
        let mut lying = ok.clone();
        lying[19] = 9;
        let e = decode_image(&lying, &l);
        assert!(matches!(e, Err(SampleErrorKind::Decode(m)) if m.starts_with("PNG: ")));
        for cut in [4, 8, 20, 40, ok.len() - 13] {
            match decode_image(&ok[..cut], &l) {
                Err(SampleErrorKind::Decode(m)) => assert!(m.starts_with("PNG"), "{cut}: {m}"),
                other => panic!("{cut} bytes: {other:?}"),
            }
        }
        let mut zero = ok.clone();
        zero[16..20].copy_from_slice(&0u32.to_be_bytes());
        assert!(
            matches!(decode_image(&zero, &l), Err(SampleErrorKind::Decode(m)) if m.contains("zero"))
        );
    }
}

/// An EOI marker among the file's last bytes (a file cut short has none).
fn ends_with_eoi(bytes: &[u8]) -> bool {
    let tail = &bytes[bytes.len().saturating_sub(EOI_WINDOW)..];
    tail.windows(2).any(|w| w == [0xFF, 0xD9])
}

/// What a JPEG's headers say about how it is coded: enough to choose a decoder (the GPU's
/// hardware engine takes only some kinds) and the crop before decoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JpegInfo {
    pub width: u32,
    pub height: u32,
    /// Colour components: 1 grayscale, 3 YCbCr (or RGB), 4 CMYK / YCCK.
    pub components: u8,
    /// Sample precision in bits (8; 12 for extended JPEGs).
    pub precision: u8,
    pub coding: JpegCoding,
    /// Per component: (horizontal, vertical) sampling factors.
    pub sampling: Vec<(u8, u8)>,
    /// A restart interval is set (DRI).
    pub restarts: bool,
    /// Three components stored as RGB rather than YCbCr (Adobe transform 0, or component ids
    /// 'R', 'G', 'B'): decoders that assume YCbCr get the colours wrong.
    pub rgb: bool,
    /// An EOI marker among the file's last bytes. A file cut short has none; the GPU route
    /// leaves such files to the CPU decoder, which reports what is missing.
    pub ends_with_eoi: bool,
}

/// The frame type, from the SOFn marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JpegCoding {
    /// SOF0 / SOF1: sequential Huffman.
    Baseline,
    /// SOF2: progressive Huffman.
    Progressive,
    /// SOF3: lossless.
    Lossless,
    /// SOF9..SOF11: arithmetic coding.
    Arithmetic,
    /// SOF5..7, SOF13..15: hierarchical.
    Hierarchical,
}

impl JpegInfo {
    /// Chroma subsampling name for 3-component images ("4:2:0", "4:4:4", ...), else None.
    pub fn subsampling(&self) -> Option<&'static str> {
        if self.sampling.len() != 3 || self.sampling[1] != (1, 1) || self.sampling[2] != (1, 1) {
            return None;
        }
        Some(match self.sampling[0] {
            (1, 1) => "4:4:4",
            (2, 1) => "4:2:2",
            (2, 2) => "4:2:0",
            (1, 2) => "4:4:0",
            (4, 1) => "4:1:1",
            _ => return None,
        })
    }
}

/// Reads the markers of the whole file, skipping the entropy-coded data (a fast byte scan).
/// Only headers are read; a truncated or malformed header anywhere is a `Decode` error, as
/// from the decoder.
/// How far from the end of a file its EOI marker is looked for (writers may pad after it).
const EOI_WINDOW: usize = 64;

pub fn jpeg_info(bytes: &[u8]) -> Result<JpegInfo, SampleErrorKind> {
    check_signature(bytes)?;
    let bad = |m: &str| SampleErrorKind::Decode(m.to_string());
    let mut pos = 2;
    let mut restarts = false;
    let mut adobe_transform: Option<u8> = None;
    let mut frame: Option<JpegInfo> = None;
    let mut seen_scan = false;
    let ends_with_eoi = ends_with_eoi(bytes);
    let finish = |mut f: JpegInfo, restarts: bool, adobe_transform: Option<u8>| {
        f.ends_with_eoi = ends_with_eoi;
        f.restarts = restarts;
        f.rgb |= f.components == 3 && adobe_transform == Some(0);
        f
    };
    loop {
        // Fill bytes (0xFF runs) may precede a marker.
        while bytes.get(pos) == Some(&0xFF) && bytes.get(pos + 1) == Some(&0xFF) {
            pos += 1;
        }
        let (Some(&0xFF), Some(&marker)) = (bytes.get(pos), bytes.get(pos + 1)) else {
            // After the first scan, junk is the decoder's to judge (zune-jpeg skips some).
            return match (frame, seen_scan) {
                (Some(f), true) => Ok(finish(f, restarts, adobe_transform)),
                _ => Err(bad("no marker where one was expected")),
            };
        };
        pos += 2;
        if matches!(marker, 0x01 | 0xD0..=0xD7) {
            continue; // no length
        }
        if marker == 0xD9 {
            return match (frame, seen_scan) {
                (Some(f), true) => Ok(finish(f, restarts, adobe_transform)),
                _ => Err(bad("end of image before any scan")),
            };
        }
        let len = match (bytes.get(pos), bytes.get(pos + 1)) {
            (Some(&a), Some(&b)) => usize::from(u16::from_be_bytes([a, b])),
            _ => return Err(bad("truncated marker segment")),
        };
        let seg = bytes
            .get(pos + 2..pos + len.max(2))
            .ok_or_else(|| bad("truncated marker segment"))?;
        // The checks below are the header errors zune-jpeg rejects and a GPU decoder may
        // not: an image routed to the GPU must fail there exactly as it fails on the CPU.
        match marker {
            0xDD => {
                if seg.len() != 2 {
                    return Err(bad("bad restart interval (DRI) length"));
                }
                restarts = u16::from_be_bytes([seg[0], seg[1]]) != 0;
            }
            0xC4 => check_huffman_tables(seg).map_err(bad)?,
            0xDB => check_quant_tables(seg).map_err(bad)?,
            0xEE if seg.len() >= 12 && seg.starts_with(b"Adobe") => adobe_transform = Some(seg[11]),
            0xC0..=0xCF if !matches!(marker, 0xC4 | 0xC8 | 0xCC) => {
                if frame.is_some() {
                    return Err(bad("two frame headers (SOF)"));
                }
                if seg.len() < 6 {
                    return Err(bad("short frame header"));
                }
                let n = usize::from(seg[5]);
                if seg.len() < 6 + 3 * n || n == 0 {
                    return Err(bad("frame header with a bad component count"));
                }
                let coding = match marker {
                    0xC0 | 0xC1 => JpegCoding::Baseline,
                    0xC2 => JpegCoding::Progressive,
                    0xC3 => JpegCoding::Lossless,
                    0xC9..=0xCB => JpegCoding::Arithmetic,
                    _ => JpegCoding::Hierarchical,
                };
                let ids: Vec<u8> = (0..n).map(|k| seg[6 + 3 * k]).collect();
                frame = Some(JpegInfo {
                    width: u32::from(u16::from_be_bytes([seg[3], seg[4]])),
                    height: u32::from(u16::from_be_bytes([seg[1], seg[2]])),
                    components: seg[5],
                    precision: seg[0],
                    coding,
                    sampling: (0..n)
                        .map(|k| (seg[7 + 3 * k] >> 4, seg[7 + 3 * k] & 0x0F))
                        .collect(),
                    restarts: false,
                    rgb: n == 3 && ids == b"RGB",
                    ends_with_eoi: false,
                });
            }
            0xDA => {
                if frame.is_none() {
                    return Err(bad("scan before the frame header"));
                }
                seen_scan = true;
                // Skip the entropy-coded data to the next marker: 0xFF followed by neither a
                // stuffed zero nor a restart marker. Later segments (tables between the scans
                // of a progressive image, or a stray second frame) get the same checks.
                pos = next_marker(bytes, pos + len);
                if pos + 1 >= bytes.len() {
                    // No end-of-image marker: the decoder decides what a truncated scan gives.
                    return frame
                        .map(|f| finish(f, restarts, adobe_transform))
                        .ok_or_else(|| bad("no frame header"));
                }
                continue;
            }
            _ => {}
        }
        pos += len;
    }
}

/// The position of the first marker at or after `pos` in entropy-coded data: 0xFF followed by
/// neither a stuffed zero, a restart marker nor another 0xFF; `bytes.len()` when there is none.
/// 32 bytes at a time on x86-64 (SSE2), where a block without 0xFF (most of them: about one
/// byte in 200 is 0xFF) costs a few instructions; a memchr per 0xFF cost a call each, 15 us
/// per large photo, a sixth of the GPU path's host time for it. The tail: memchr.
fn next_marker(bytes: &[u8], pos: usize) -> usize {
    #[cfg(target_arch = "x86_64")]
    let pos = match marker_in_blocks(bytes, pos) {
        Ok(found) => return found,
        Err(tail) => tail,
    };
    next_marker_memchr(bytes, pos)
}

/// Whether the byte after a 0xFF at `at` makes it a marker (`Ok(true)`), or it is stuffing, a
/// restart marker or fill (`Ok(false)`); `Err(())` when the 0xFF is the last byte.
fn ff_starts_marker(bytes: &[u8], at: usize) -> std::result::Result<bool, ()> {
    match bytes.get(at + 1) {
        None => Err(()),
        Some(0x00 | 0xD0..=0xD7 | 0xFF) => Ok(false),
        Some(_) => Ok(true),
    }
}

/// [`next_marker`] over the whole 32-byte blocks from `pos`: `Ok` with the answer, or `Err`
/// with where the blocks ended and no marker was found.
#[cfg(target_arch = "x86_64")]
fn marker_in_blocks(bytes: &[u8], mut pos: usize) -> std::result::Result<usize, usize> {
    use std::arch::x86_64::{_mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi8};
    // SAFETY: SSE2 is part of x86-64.
    let ff = unsafe { _mm_set1_epi8(-1) };
    while pos.checked_add(32).is_some_and(|end| end <= bytes.len()) {
        // SAFETY: SSE2 is part of x86-64; both 16-byte loads lie inside `bytes`
        // (pos + 32 <= len), and unaligned loads are allowed.
        let mut mask = unsafe {
            let p = bytes.as_ptr().add(pos);
            let lo = _mm_cmpeq_epi8(_mm_loadu_si128(p.cast()), ff);
            let hi = _mm_cmpeq_epi8(_mm_loadu_si128(p.add(16).cast()), ff);
            (_mm_movemask_epi8(lo) as u32 & 0xFFFF) | ((_mm_movemask_epi8(hi) as u32) << 16)
        };
        while mask != 0 {
            let at = pos + mask.trailing_zeros() as usize;
            match ff_starts_marker(bytes, at) {
                Ok(true) => return Ok(at),
                Ok(false) => mask &= mask - 1,
                Err(()) => return Ok(bytes.len()),
            }
        }
        pos += 32;
    }
    Err(pos)
}

/// [`next_marker`] with memchr finding each 0xFF.
fn next_marker_memchr(bytes: &[u8], mut pos: usize) -> usize {
    while let Some(at) = bytes.get(pos..).and_then(|rest| memchr::memchr(0xFF, rest)) {
        pos += at;
        match ff_starts_marker(bytes, pos) {
            Err(()) => return bytes.len(),
            Ok(false) => pos += 1,
            Ok(true) => return pos,
        }
    }
    bytes.len()
}

/// DHT segment: table class 0/1, id 0-3, at most 256 codes, no truncated table.
fn check_huffman_tables(mut seg: &[u8]) -> std::result::Result<(), &'static str> {
    while let Some((&tc_th, rest)) = seg.split_first() {
        if tc_th >> 4 > 1 || tc_th & 0x0F > 3 {
            return Err("bad Huffman table class or index");
        }
        let counts = rest.get(..16).ok_or("truncated Huffman table")?;
        let total: usize = counts.iter().map(|&c| usize::from(c)).sum();
        if total > 256 {
            return Err("Huffman table with more than 256 codes");
        }
        seg = rest.get(16 + total..).ok_or("truncated Huffman table")?;
    }
    Ok(())
}

/// DQT segment: precision 8/16 bits, id 0-3, no truncated table.
fn check_quant_tables(mut seg: &[u8]) -> std::result::Result<(), &'static str> {
    while let Some((&pq_tq, rest)) = seg.split_first() {
        if pq_tq >> 4 > 1 || pq_tq & 0x0F > 3 {
            return Err("bad quantisation table precision or index");
        }
        let size = if pq_tq >> 4 == 1 { 128 } else { 64 };
        seg = rest.get(size..).ok_or("truncated quantisation table")?;
    }
    Ok(())
}

#[cfg(test)]
mod info_tests {
    use super::*;

    /// `next_marker` (and its memchr tail on its own) finds what the plain byte loop it
    /// replaced finds, from every start: on bytes dense in 0xFF, stuffed zeros, restart
    /// markers and real markers, and on bytes like entropy-coded data, where markers are
    /// several 32-byte blocks apart.
    #[test]
    fn next_marker_equals_the_byte_loop() {
        let byte_loop = |b: &[u8], mut pos: usize| {
            while pos + 1 < b.len()
                && (b[pos] != 0xFF || matches!(b[pos + 1], 0x00 | 0xD0..=0xD7 | 0xFF))
            {
                pos += 1;
            }
            pos
        };
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let dense: Vec<u8> = (0..5000)
            .map(|_| {
                let x = next();
                [0xFF, 0x00, 0xD3, 0xD9, 0xC4, (x >> 32) as u8][(x % 6) as usize]
            })
            .collect();
        // About one byte in 128 is 0xFF, and the byte after it a stuffed zero, a restart
        // marker, 0xFF or anything, so markers are some hundred bytes apart.
        let sparse: Vec<u8> = (0..5000)
            .map(|_| match next() % 256 {
                0 => 0xFF,
                1..=40 => 0x00,
                41..=60 => 0xD5,
                x => x as u8,
            })
            .collect();
        for bytes in [dense, sparse] {
            for len in [0, 1, 2, 3, 31, 32, 33, 63, 64, 65, 100, bytes.len()] {
                let b = &bytes[..len];
                for pos in 0..=len + 2 {
                    let want = byte_loop(b, pos);
                    for got in [next_marker(b, pos), next_marker_memchr(b, pos)] {
                        // Both say "no marker" alike: at or past the last byte.
                        assert_eq!(want + 1 >= len, got + 1 >= len, "len {len} from {pos}");
                        if want + 1 < len {
                            assert_eq!(want, got, "len {len} from {pos}");
                        }
                    }
                }
            }
        }
    }

    fn reftest() -> Vec<std::path::PathBuf> {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/jpeg/reftest");
        let mut v: Vec<_> = std::fs::read_dir(&dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|e| e == "jpg" || e == "jpeg"))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    #[test]
    fn header_info_agrees_with_the_decoder_on_the_reference_files() {
        let files = reftest();
        assert!(
            !files.is_empty(),
            "testdata/jpeg/reftest is part of the repository"
        );
        let (mut progressive, mut cmyk, mut gray, mut s420) = (0, 0, 0, 0);
        for f in &files {
            let bytes = std::fs::read(f).unwrap();
            let Ok(dims) = jpeg_dimensions(&bytes) else {
                continue;
            };
            let info = jpeg_info(&bytes).unwrap_or_else(|e| panic!("{}: {e:?}", f.display()));
            assert_eq!((info.width, info.height), dims, "{}", f.display());
            progressive += usize::from(info.coding == JpegCoding::Progressive);
            cmyk += usize::from(info.components == 4);
            gray += usize::from(info.components == 1);
            s420 += usize::from(info.subsampling() == Some("4:2:0"));
        }
        assert!(
            progressive > 0 && cmyk > 0 && gray > 0 && s420 > 0,
            "{progressive} {cmyk} {gray} {s420}"
        );
        let rgb: Vec<_> = files
            .iter()
            .filter(|f| jpeg_info(&std::fs::read(f).unwrap()).is_ok_and(|i| i.rgb))
            .filter_map(|f| f.file_name()?.to_str().map(str::to_owned))
            .collect();
        assert_eq!(rgb, ["rgb.jpg"]);
    }

    /// The crash files nvJPEG decoded without complaint while zune-jpeg rejected them (seen on
    /// an H200): the header check must reject them too, so they fail on either route.
    #[test]
    fn header_errors_the_gpu_decoder_would_miss() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/jpeg/crash");
        for name in [
            "2c9e7a1805f8b47630bbb83d21bf8222.jpg",
            "5315c35bbcc28d8eee419028ac9f38e0.jpg",
            "f006e96f3b27fdfaa075322d759ea2e8.jpg",
        ] {
            let bytes = std::fs::read(dir.join(name)).expect("testdata/jpeg/crash");
            assert!(decode_jpeg(&bytes, &DecodeLimits::default()).is_err());
            let e = jpeg_info(&bytes).expect_err(name);
            assert!(matches!(e, SampleErrorKind::Decode(_)), "{name}: {e:?}");
        }
    }

    /// `pixels` (RGB, `w` x `h`) as a baseline 4:4:4 JPEG of `quality`: the image crate's encoder.
    fn encoded_jpeg(pixels: &[u8], w: u32, h: u32, quality: u8) -> Vec<u8> {
        let mut img = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut img, quality)
            .encode(pixels, w, h, image::ExtendedColorType::Rgb8)
            .unwrap();
        img
    }

    /// A truncated file decodes leniently (grey below the cut), so it must fail as
    /// `truncated`; padding between header segments (harmless) must not.
    #[test]
    fn partial_decodes_are_errors_of_their_own() {
        let (w, h) = (96u32, 64u32);
        let pixels: Vec<u8> = (0..w * h * 3).map(|i| (i * 7 % 251) as u8).collect();
        let img = encoded_jpeg(&pixels, w, h, 90);
        let l = DecodeLimits::default();
        let whole = decode_jpeg(&img, &l).unwrap();
        // The header check the GPU route uses: a cut file has no end marker.
        assert!(jpeg_info(&img).unwrap().ends_with_eoi);
        assert!(
            !jpeg_info(&img[..img.len() * 95 / 100])
                .unwrap()
                .ends_with_eoi
        );
        for keep in [40, 95] {
            let cut = &img[..img.len() * keep / 100];
            let e = decode_jpeg(cut, &l).unwrap_err();
            assert_eq!(e.reason_code(), "truncated", "{keep} %: {e}");
            assert!(e.to_string().starts_with("damaged JPEG: "), "{e}");
            // Accepted (on_damaged = accept): the lenient decode, its complaint as a warning.
            let (kept, warning) = decode_image_accepting_damage(cut, &l).unwrap();
            assert_eq!((kept.width, kept.height), (w, h));
            assert_eq!(warning.map(|k| k.reason_code()), Some("truncated"));
        }
        let (same, none) = decode_image_accepting_damage(&img, &l).unwrap();
        assert!(none.is_none() && same.data == whole.data);
        // Two padding bytes before the second marker segment: libjpeg-turbo warns, zune-jpeg
        // judges it harmless and decodes it, with the pixels it gives the unpadded file.
        let second = 2 + 2 + usize::from(u16::from_be_bytes([img[4], img[5]]));
        let mut padded = img[..second].to_vec();
        padded.extend_from_slice(&[0, 0]);
        padded.extend_from_slice(&img[second..]);
        assert!(decode_jpeg(&padded, &l).unwrap() == decode_jpeg_zune(&img, &l).unwrap());
    }

    /// Lossless, arithmetic-coded, hierarchical and 12-bit JPEGs are valid files the decoder
    /// does not take: their reason says which, not "corrupt image".
    #[test]
    fn unsupported_kinds_of_jpeg_are_named() {
        let img = encoded_jpeg(&[128u8; 16 * 8 * 3], 16, 8, 80);
        let sof = img
            .windows(2)
            .position(|w| w == [0xFF, 0xC0])
            .expect("a baseline SOF0");
        let l = DecodeLimits::default();
        for (marker, precision, want) in [
            (0xC3, 8, "unsupported JPEG: lossless (SOF3)"),
            (0xC9, 8, "unsupported JPEG: arithmetic-coded"),
            (0xC5, 8, "unsupported JPEG: hierarchical"),
            (0xC1, 12, "unsupported JPEG: 12-bit samples"),
        ] {
            let mut b = img.clone();
            b[sof + 1] = marker;
            b[sof + 4] = precision; // after the marker and the segment length
            let e = decode_jpeg(&b, &l).unwrap_err();
            assert!(e.to_string().starts_with(want), "{marker:#x}: {e}");
            assert_eq!(e.reason_code(), "unsupported_jpeg");
        }
        assert!(decode_jpeg(&img, &l).is_ok());
    }

    #[test]
    fn subsampling_and_refusals() {
        let img = encoded_jpeg(&[128u8; 16 * 8 * 3], 16, 8, 80);
        let info = jpeg_info(&img).unwrap();
        assert_eq!((info.width, info.height, info.components), (16, 8, 3));
        assert_eq!(info.coding, JpegCoding::Baseline);
        assert_eq!(info.subsampling(), Some("4:4:4")); // what the image crate's encoder writes
        assert!(matches!(
            jpeg_info(b"\x89PNG"),
            Err(SampleErrorKind::UnsupportedFormat(_))
        ));
        assert!(matches!(
            jpeg_info(&img[..20]),
            Err(SampleErrorKind::Decode(_))
        ));
        assert!(matches!(
            jpeg_info(&[0xFF, 0xD8, 0xFF, 0xD9]),
            Err(SampleErrorKind::Decode(_))
        ));
    }
}
