//! The start-up check of GPU JPEG decoding against the CPU decoder (libjpeg-turbo,
//! `decode_jpeg`): a few generated images, one of each chroma layout the GPU takes plus an odd
//! size, are decoded in one batch on the GPU and by the CPU decoder, and GPU decoding is switched on only if every
//! image the GPU decodes is within [`TOLERANCE`] of the CPU's pixels.
//!
//! Why at start-up: the GPU path depends on the driver, the libnvjpeg version and the
//! backend of the card it meets, and a wrong decode (say, the chroma planes misread) would
//! not fail anything: the trainer would silently get wrong colours. A failed check costs
//! only speed, because decoding then stays on the CPU and the reason is logged.
//!
//! Pure logic, tested on the CPU with stand-in decoders; `GpuJpegDecoder::check_against_cpu`
//! runs it with nvJPEG.

use std::fmt;

use augserve_core::decode::{decode_jpeg, DecodeLimits, JpegInfo};
use jpeg_encoder::{ColorType, Encoder, EncodingError, SamplingFactor};

use super::planes::{layout_name, roi_for_header, RoiSupport};
use super::GpuJpegDecoder;

/// Mean absolute difference, in levels, above which a test image fails the check. A correct
/// GPU decode is within 0.02 of zune-jpeg (libjpeg-turbo's native planes through our kernel:
/// worst 0.014 over 88 real files; nvJPEG's planes equal libjpeg-turbo's, H200 probe);
/// replicated instead of interpolated chroma, the error the YCbCr kernel exists to avoid,
/// is up to 2.8 on photos and 2.0 to 3.9 on the subsampled test images here, whose chroma
/// changes from block to block (host tests).
pub const TOLERANCE: f64 = 0.5;

/// One generated test image.
pub struct CheckImage {
    /// What it tests, e.g. "4:2:0 96x80".
    pub name: String,
    /// Its chroma layout (`planes::layout_name`).
    pub layout: &'static str,
    pub jpeg: Vec<u8>,
    pub width: u32,
    pub height: u32,
}

/// What the check found.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckReport {
    /// Images the GPU decoded and that matched.
    pub matched: usize,
    /// The largest mean absolute difference among them, and that image.
    pub worst: f64,
    pub worst_image: String,
    /// Images the GPU refused, with why.
    pub refused: Vec<String>,
    /// Their layouts: the pipeline keeps images of these on the CPU, rather than have a
    /// batch fail and be retried image by image.
    pub refused_layouts: Vec<&'static str>,
}

impl CheckReport {
    /// Whether images of `info`'s layout were refused at start-up.
    pub fn refuses(&self, info: &JpegInfo) -> bool {
        self.refused_layouts.contains(&layout_name(info))
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} test images decoded within {:.3} levels of the CPU decoder (worst: {})",
            self.matched, self.worst, self.worst_image
        )?;
        if !self.refused.is_empty() {
            write!(f, "; refused: {}", self.refused.join(", "))?;
        }
        Ok(())
    }
}

/// Mean absolute difference of two equally long byte buffers, in levels.
pub fn mean_abs_diff(a: &[u8], b: &[u8]) -> f64 {
    if a.is_empty() {
        return 0.0;
    }
    let sum: u64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| u64::from(x.abs_diff(*y)))
        .sum();
    sum as f64 / a.len() as f64
}

/// A test image with detail in luma (gradients and a checker) and chroma that is flat over
/// each chroma block (8x8 chroma samples) and changes from block to block, encoded at
/// quality 90 with `sampling`, or grayscale for `None`. Flat blocks make the decoder's
/// native chroma planes known exactly on the host (every decoder's DC-only block is
/// constant), so host tests can run the real conversion kernel on them; the block-to-block
/// changes are where replicated chroma differs from interpolated chroma.
pub fn test_jpeg(
    width: u32,
    height: u32,
    sampling: Option<SamplingFactor>,
) -> Result<Vec<u8>, EncodingError> {
    let (w, h) = (width as u16, height as u16);
    let luma = |x: u32, y: u32| {
        let checker = if (x / 5 + y / 7).is_multiple_of(2) {
            60
        } else {
            0
        };
        ((x * 127 / width + y * 63 / height) as u8).wrapping_add(checker)
    };
    let mut out = Vec::new();
    let mut enc = Encoder::new(&mut out, 90);
    let Some(sampling) = sampling else {
        let gray: Vec<u8> = (0..height)
            .flat_map(|y| (0..width).map(move |x| luma(x, y)))
            .collect();
        enc.encode(&gray, w, h, ColorType::Luma)?;
        return Ok(out);
    };
    let (hs, vs) = match sampling {
        SamplingFactor::F_2_2 => (1, 1),
        SamplingFactor::F_2_1 => (1, 0),
        SamplingFactor::F_1_2 => (0, 1),
        _ => (0, 0),
    };
    let (bw, bh) = (8u32 << hs, 8u32 << vs); // luma pixels per chroma block
    let mut ycc = Vec::with_capacity((width * height * 3) as usize);
    for y in 0..height {
        for x in 0..width {
            // A fixed pseudo-random colour per block (Knuth's multiplicative hash).
            let block = (y / bh) * 64 + x / bw;
            let hash = block.wrapping_mul(2_654_435_761);
            ycc.push(luma(x, y));
            ycc.push(16 + (hash >> 8) as u8 % 224);
            ycc.push(16 + (hash >> 20) as u8 % 224);
        }
    }
    enc.set_sampling_factor(sampling);
    enc.encode(&ycc, w, h, ColorType::Ycbcr)?;
    Ok(out)
}

/// The chroma layouts the GPU decodes, by the names `planes::layout_name` gives them,
/// with the encoder setting that makes each (`None`: grayscale): what the start-up checks and
/// ROI support go through one by one.
pub const GPU_LAYOUTS: [(&str, Option<SamplingFactor>); 5] = [
    ("4:2:0", Some(SamplingFactor::F_2_2)),
    ("4:2:2", Some(SamplingFactor::F_2_1)),
    ("4:4:0", Some(SamplingFactor::F_1_2)),
    ("4:4:4", Some(SamplingFactor::F_1_1)),
    ("gray", None),
];

/// The check's images: every layout of [`GPU_LAYOUTS`] at 96x80 (whole MCUs), and 4:2:0 at
/// 75x53 (partial MCUs, odd chroma planes).
pub fn check_images() -> Result<Vec<CheckImage>, String> {
    GPU_LAYOUTS
        .into_iter()
        .map(|(layout, sampling)| (layout, sampling, 96, 80))
        .chain([("4:2:0", Some(SamplingFactor::F_2_2), 75, 53)])
        .map(|(layout, sampling, width, height)| {
            let name = format!("{layout} {width}x{height}");
            let jpeg = test_jpeg(width, height, sampling)
                .map_err(|e| format!("test image {name}: {e}"))?;
            Ok(CheckImage {
                name,
                layout,
                jpeg,
                width,
                height,
            })
        })
        .collect()
}

/// Checks a GPU decoder against the CPU decoder on `images`. `decode` decodes a batch to
/// interleaved RGB on the host, one buffer per image, or fails the batch (as nvJPEG does
/// when one image is refused); after a failed batch each image is tried alone, and images
/// refused alone are reported, not failed (the pipeline sends those to the CPU). Fails when
/// a decoded image is off by more than [`TOLERANCE`] or has the wrong size, or when every
/// image is refused.
pub fn check_decoder<F>(images: &[CheckImage], mut decode: F) -> Result<CheckReport, String>
where
    F: FnMut(&[&CheckImage]) -> Result<Vec<Vec<u8>>, String>,
{
    let all: Vec<&CheckImage> = images.iter().collect();
    let mut decoded: Vec<(&CheckImage, Vec<u8>)> = Vec::new();
    let mut refused = Vec::new();
    let mut refused_layouts = Vec::new();
    match decode(&all) {
        Ok(outs) if outs.len() == all.len() => decoded.extend(all.iter().copied().zip(outs)),
        Ok(outs) => {
            return Err(format!(
                "the GPU returned {} images for a batch of {}",
                outs.len(),
                all.len()
            ))
        }
        Err(_) => {
            for &img in &all {
                match decode(&[img]).map(|mut v| v.pop()) {
                    Ok(Some(out)) => decoded.push((img, out)),
                    Ok(None) => return Err(format!("{}: the GPU returned no image", img.name)),
                    Err(why) => {
                        refused.push(format!("{} ({why})", img.name));
                        if !refused_layouts.contains(&img.layout) {
                            refused_layouts.push(img.layout);
                        }
                    }
                }
            }
        }
    }
    if decoded.is_empty() {
        return Err(format!(
            "the GPU decoded none of the {} test images: {}",
            images.len(),
            refused.join(", ")
        ));
    }
    let mut report = CheckReport {
        matched: 0,
        worst: 0.0,
        worst_image: String::new(),
        refused,
        refused_layouts,
    };
    for (img, gpu) in decoded {
        let cpu = decode_jpeg(&img.jpeg, &DecodeLimits::default())
            .map_err(|e| format!("{}: the CPU decoder failed: {e}", img.name))?;
        if gpu.len() != cpu.data.len() {
            return Err(format!(
                "{}: the GPU decoded {} bytes, the CPU {} ({}x{} RGB)",
                img.name,
                gpu.len(),
                cpu.data.len(),
                img.width,
                img.height
            ));
        }
        let mad = mean_abs_diff(&gpu, &cpu.data);
        if mad > TOLERANCE {
            return Err(format!(
                "{}: the GPU decode is {mad:.2} levels from the CPU decoder's on average (tolerance {TOLERANCE})",
                img.name
            ));
        }
        if mad >= report.worst {
            report.worst = mad;
            report.worst_image.clone_from(&img.name);
        }
        report.matched += 1;
    }
    Ok(report)
}

impl GpuJpegDecoder {
    /// Decodes the start-up check's generated images (every chroma layout the GPU takes, an
    /// odd size) in one batch and compares them with the CPU decoder's (`check_decoder`):
    /// GPU decoding should be switched on only if this passes. Images nvJPEG refuses are
    /// reported, not failed.
    pub fn check_against_cpu(&mut self) -> Result<CheckReport, String> {
        let images = check_images()?;
        check_decoder(&images, |batch| {
            let jpegs: Vec<&[u8]> = batch.iter().map(|i| i.jpeg.as_slice()).collect();
            let dims: Vec<(u32, u32)> = batch.iter().map(|i| (i.width, i.height)).collect();
            let decoded = self
                .decode_batch(&jpegs, &dims)
                .map_err(|e| e.to_string())?;
            (0..batch.len())
                .map(|k| self.download(&decoded, k).map_err(|e| e.to_string()))
                .collect()
        })
    }

    /// Where ROI decode can be used: this nvJPEG has it, and, per chroma layout (4:2:0,
    /// 4:2:2, 4:4:0, 4:4:4, gray), a part of a generated image decodes to the same pixels as
    /// the whole image inside the crop region, so a library that places partial planes
    /// otherwise than [`crate::jpeg::planes::roi_planes`] assumes is found before any batch.
    pub fn check_roi(&mut self) -> RoiSupport {
        if self.nv.roi.is_none() {
            return RoiSupport::off(
                "this libnvjpeg has no batched ROI decode (nvjpegDecodeBatchedEx)",
            );
        }
        let mut support = RoiSupport::default();
        for (layout, sampling) in GPU_LAYOUTS {
            support.record(layout, self.check_roi_on(sampling));
        }
        support
    }

    /// One layout of `check_roi`: a 96x80 image's part around a region at odd offsets
    /// against its whole decode.
    fn check_roi_on(&mut self, sampling: Option<SamplingFactor>) -> Result<(), String> {
        let (w, h) = (96u32, 80u32);
        let region = (21u32, 19u32, 40u32, 33u32);
        let jpeg = test_jpeg(w, h, sampling).map_err(|e| format!("test image: {e}"))?;
        let whole = self
            .decode_batch(&[&jpeg], &[(w, h)])
            .and_then(|b| self.download(&b, 0))
            .map_err(|e| format!("whole image: {e}"))?;
        let info =
            augserve_core::decode::jpeg_info(&jpeg).map_err(|e| format!("test image: {e}"))?;
        let roi = roi_for_header(&info, region);
        let part = self
            .decode_part_to_host(&jpeg, (w, h), roi)
            .map_err(|e| format!("ROI {roi:?}: {e}"))?;
        let (x, y, rw, rh) = region;
        for row in y..y + rh {
            let a = ((row * w + x) * 3) as usize;
            let b = (((row - roi.y) * roi.width + (x - roi.x)) * 3) as usize;
            let n = rw as usize * 3;
            if whole.get(a..a + n) != part.get(b..b + n) {
                return Err(format!(
                    "ROI {roi:?} decode differs from the whole-image decode in row {row}"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jpeg::route::{route, DecodeRoute, NvJpegBackend};
    use augserve_core::decode::jpeg_info;

    /// A stand-in GPU decoder: the CPU decoder, passed through `alter`.
    fn cpu_decode(img: &CheckImage) -> Vec<u8> {
        decode_jpeg(&img.jpeg, &DecodeLimits::default())
            .expect("test image decodes")
            .data
    }

    #[test]
    fn check_images_are_all_gpu_decodable_and_cover_each_layout() {
        let images = check_images().unwrap();
        let mut layouts = Vec::new();
        for img in &images {
            let info = jpeg_info(&img.jpeg).unwrap();
            assert_eq!((info.width, info.height), (img.width, img.height));
            for backend in [NvJpegBackend::Hardware, NvJpegBackend::Cuda] {
                assert_eq!(route(&info, backend), DecodeRoute::Gpu, "{}", img.name);
            }
            assert_eq!(layout_name(&info), img.layout, "{}", img.name);
            layouts.push(img.layout);
        }
        for want in ["4:2:0", "4:2:2", "4:4:0", "4:4:4"] {
            assert!(layouts.contains(&want), "{want} missing: {layouts:?}");
        }
        assert_eq!(
            images.iter().filter(|i| i.name.starts_with("gray")).count(),
            1
        );
    }

    #[test]
    fn a_decoder_equal_to_the_cpu_passes() {
        let images = check_images().unwrap();
        let mut calls = 0;
        let report = check_decoder(&images, |batch| {
            calls += 1;
            Ok(batch.iter().map(|i| cpu_decode(i)).collect())
        })
        .unwrap();
        assert_eq!(calls, 1, "one batch");
        assert_eq!(report.matched, images.len());
        assert_eq!(report.worst, 0.0);
        assert!(report.refused.is_empty());
        println!("{report}");
    }

    #[test]
    fn small_decoder_differences_pass_and_the_worst_is_reported() {
        let images = check_images().unwrap();
        // Every 8th byte one level off: an IDCT that rounds differently.
        let report = check_decoder(&images, |batch| {
            Ok(batch
                .iter()
                .map(|i| {
                    let mut px = cpu_decode(i);
                    let every = if i.name == "4:4:4 96x80" { 4 } else { 8 };
                    px.iter_mut()
                        .step_by(every)
                        .for_each(|p| *p = p.saturating_add(1).min(254));
                    px
                })
                .collect())
        })
        .unwrap();
        assert_eq!(report.worst_image, "4:4:4 96x80");
        assert!(report.worst > 0.1 && report.worst < 0.3, "{}", report.worst);
    }

    #[test]
    fn misread_pixels_fail_the_check_with_the_image_named() {
        let images = check_images().unwrap();
        // A decoder that reads one column too far (a pitch bug): shifted left by one pixel.
        let shifted = check_decoder(&images, |batch| {
            Ok(batch
                .iter()
                .map(|i| {
                    let px = cpu_decode(i);
                    let w = i.width as usize * 3;
                    px.chunks_exact(w)
                        .flat_map(|row| {
                            let mut r = row[3..].to_vec();
                            r.extend_from_slice(&row[w - 3..]);
                            r
                        })
                        .collect()
                })
                .collect())
        });
        let why = shifted.unwrap_err();
        assert!(
            why.contains("levels from the CPU decoder") && why.contains("4:2:0 96x80"),
            "{why}"
        );

        // Red and blue swapped (Cb and Cr planes exchanged would look like this, roughly).
        let swapped = check_decoder(&images, |batch| {
            Ok(batch
                .iter()
                .map(|i| {
                    let mut px = cpu_decode(i);
                    px.chunks_exact_mut(3).for_each(|p| p.swap(0, 2));
                    px
                })
                .collect())
        });
        assert!(swapped.is_err());

        // A wrong size is a failure too, not a panic.
        let short = check_decoder(&images, |batch| {
            Ok(batch.iter().map(|i| cpu_decode(i)[3..].to_vec()).collect())
        });
        assert!(short.unwrap_err().contains("bytes"));
    }

    #[test]
    fn refused_images_are_reported_and_a_decoder_that_refuses_all_fails() {
        let images = check_images().unwrap();
        // nvJPEG fails a whole batch when it refuses one image: the check retries one by one.
        let mut calls = 0;
        let report = check_decoder(&images, |batch| {
            calls += 1;
            if batch.iter().any(|i| i.name.starts_with("4:4:0")) {
                return Err("JPEG_NOT_SUPPORTED".into());
            }
            Ok(batch.iter().map(|i| cpu_decode(i)).collect())
        })
        .unwrap();
        assert_eq!(calls, 1 + images.len());
        assert_eq!(report.matched, images.len() - 1);
        assert_eq!(report.refused, ["4:4:0 96x80 (JPEG_NOT_SUPPORTED)"]);
        let header = |i: usize| jpeg_info(&images[i].jpeg).unwrap();
        let s440 = images.iter().position(|i| i.layout == "4:4:0").unwrap();
        let s420 = images.iter().position(|i| i.layout == "4:2:0").unwrap();
        assert!(report.refuses(&header(s440)), "kept on the CPU from now on");
        assert!(!report.refuses(&header(s420)));
        assert!(report.to_string().contains("refused: 4:4:0"), "{report}");

        let none = check_decoder(&images, |_| Err("EXECUTION_FAILED".into())).unwrap_err();
        assert!(none.contains("none of the 6"), "{none}");
    }

    #[test]
    fn mean_abs_diff_in_levels() {
        assert_eq!(mean_abs_diff(&[0, 10, 200], &[2, 10, 197]), 5.0 / 3.0);
        assert_eq!(mean_abs_diff(&[], &[]), 0.0);
    }
}
