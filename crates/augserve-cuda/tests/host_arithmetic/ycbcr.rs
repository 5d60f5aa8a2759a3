//! The YCbCr conversion kernel and the plane geometry against zune-jpeg.

use super::*;

/// The start-up check of GPU decoding (`jpeg::check`), with the host build of the
/// conversion kernel on the check images' exact native planes standing in for nvJPEG + the
/// kernel: it passes, within 0.1 levels of the CPU decoder (the kernel keeps zune-jpeg's
/// upsampling and conversion, libjpeg-turbo's differ at chroma edges: 0.067 on the worst check
/// image, 4:2:0 75x53; it was 0 when zune-jpeg was the CPU decoder). With the chroma replicated instead (nvJPEG's own RGB
/// output, which failed the tolerance on the H200) it fails, so the check would catch that
/// error on a card.
#[test]
fn start_up_check_passes_the_conversion_kernel_and_catches_replicated_chroma() {
    use augserve_cuda::jpeg::check::{check_decoder, check_images, mean_abs_diff, TOLERANCE};
    let lib = host_library();
    let convert: YccFn = sym(&lib, b"host_ycbcr_to_rgb");
    let images = check_images().unwrap();
    let planes_of = |jpeg: &[u8]| {
        let info = augserve_core::decode::jpeg_info(jpeg).unwrap();
        match info.subsampling() {
            None => gray_planes(jpeg),
            Some("4:2:0") => flat_chroma_planes(jpeg, 1, 1),
            Some("4:2:2") => flat_chroma_planes(jpeg, 1, 0),
            Some("4:4:0") => flat_chroma_planes(jpeg, 0, 1),
            Some("4:4:4") => flat_chroma_planes(jpeg, 0, 0),
            Some(other) => panic!("check image with {other}"),
        }
    };
    let report = check_decoder(&images, |batch| {
        Ok(batch
            .iter()
            .map(|img| {
                let (planes, d) = planes_of(&img.jpeg);
                host_convert(convert, &planes, &d)
            })
            .collect())
    })
    .unwrap();
    assert_eq!(report.matched, images.len());
    assert!(report.worst <= 0.1, "{report}");

    let mut replicated = Vec::new();
    let failed = check_decoder(&images, |batch| {
        Ok(batch
            .iter()
            .map(|img| {
                let (planes, d) = planes_of(&img.jpeg);
                let (planes, d) = replicated_chroma(&planes, &d);
                let got = host_convert(convert, &planes, &d);
                let (want, ..) = zune_decode(&img.jpeg, zune_core::colorspace::ColorSpace::RGB);
                replicated.push(format!("{} {:.2}", img.name, mean_abs_diff(&got, &want)));
                got
            })
            .collect())
    })
    .unwrap_err();
    assert!(failed.contains("levels from the CPU decoder"), "{failed}");
    println!(
        "start-up check: conversion kernel on the exact planes: {report}; replicated chroma, mean abs diff per image: {} (tolerance {TOLERANCE}): {failed}",
        replicated.join(", ")
    );
}

/// The upsampling + conversion kernel against zune-jpeg's own decode, byte for byte. nvJPEG's
/// native-resolution chroma planes cannot be had on the host, so the test makes JPEGs whose
/// chroma is flat over each chroma block (8x8 chroma samples): then the decoded chroma plane
/// is known exactly (zune-jpeg's YCbCr output inside each block), and every block edge
/// exercises the interpolation with neighbours of other values. Luma is noise.
#[test]
fn ycbcr_kernel_equals_zune_jpeg_on_subsampled_images() {
    use jpeg_encoder::{ColorType, Encoder, SamplingFactor};
    use zune_core::colorspace::ColorSpace;
    let lib = host_library();
    let convert: YccFn = sym(&lib, b"host_ycbcr_to_rgb");
    let size: extern "C" fn() -> u64 = sym(&lib, b"host_sizeof_ycc_desc");
    assert_eq!(size() as usize, std::mem::size_of::<YccDesc>());
    let mut rng = keyed_rng(9, 0, Purpose::Sample, 0);
    let mut images = 0;
    for (name, factor, hs, vs) in [
        ("4:2:0", SamplingFactor::F_2_2, 1, 1),
        ("4:2:2", SamplingFactor::F_2_1, 1, 0),
        ("4:4:0", SamplingFactor::F_1_2, 0, 1),
        ("4:4:4", SamplingFactor::F_1_1, 0, 0),
    ] {
        for (w, h) in [(64usize, 48usize), (61, 37), (35, 19), (130, 66), (48, 64)] {
            let (bw, bh) = (8usize << hs, 8usize << vs); // luma pixels per chroma block
            let (nbx, nby) = (w.div_ceil(bw), h.div_ceil(bh));
            let colours: Vec<(u8, u8)> = (0..nbx * nby)
                .map(|_| (rng.random_range(16..=240), rng.random_range(16..=240)))
                .collect();
            let mut ycc = vec![0u8; w * h * 3];
            for y in 0..h {
                for x in 0..w {
                    let (cb, cr) = colours[(y / bh) * nbx + x / bw];
                    let p = (y * w + x) * 3;
                    ycc[p] = rng.random_range(0..=255);
                    ycc[p + 1] = cb;
                    ycc[p + 2] = cr;
                }
            }
            let mut jpeg = Vec::new();
            let mut enc = Encoder::new(&mut jpeg, 100);
            enc.set_sampling_factor(factor);
            enc.encode(&ycc, w as u16, h as u16, ColorType::Ycbcr)
                .unwrap();
            let (want, ..) = zune_decode(&jpeg, ColorSpace::RGB);
            let (planes, d) = flat_chroma_planes(&jpeg, hs, vs);
            assert_eq!((d.width, d.height), (w as i32, h as i32));
            let got = host_convert(convert, &planes, &d);
            let diffs = got.iter().zip(&want).filter(|(a, b)| a != b).count();
            assert_eq!(
                diffs, 0,
                "{name} {w}x{h}: {diffs} bytes differ from zune-jpeg"
            );
            images += 1;
        }
    }
    // Grayscale: R = G = B = Y, as zune-jpeg expands it.
    let (w, h) = (45usize, 33usize);
    let gray: Vec<u8> = (0..w * h).map(|_| rng.random_range(0..=255)).collect();
    let mut jpeg = Vec::new();
    Encoder::new(&mut jpeg, 90)
        .encode(&gray, w as u16, h as u16, ColorType::Luma)
        .unwrap();
    let (want, ..) = zune_decode(&jpeg, ColorSpace::RGB);
    let (planes, d) = gray_planes(&jpeg);
    assert_eq!(host_convert(convert, &planes, &d), want, "grayscale");
    println!(
        "YCbCr -> RGB kernel: {images} subsampled images + 1 grayscale equal zune-jpeg byte for byte"
    );
}

/// The colour conversion alone on real photographs' pixels: zune-jpeg's YCbCr output
/// (chroma already upsampled) through the kernel with full-size chroma equals zune-jpeg's RGB
/// output, for every YCbCr file of the reference set.
#[test]
fn ycbcr_conversion_equals_zune_jpeg_on_reference_files() {
    use zune_core::colorspace::ColorSpace;
    let lib = host_library();
    let convert: YccFn = sym(&lib, b"host_ycbcr_to_rgb");
    let dir = common::jpeg_testdata().join("reftest");
    let files = jpg_files(&dir);
    assert!(
        !files.is_empty(),
        "{} is part of the repository",
        dir.display()
    );
    let (mut checked, mut pixels) = (0, 0usize);
    for f in files {
        let bytes = std::fs::read(&f).unwrap();
        let Ok(info) = augserve_core::decode::jpeg_info(&bytes) else {
            continue;
        };
        if info.components != 3 || info.rgb {
            continue; // gray, CMYK and RGB-coded files convert otherwise
        }
        let Ok((want, w, h)) = std::panic::catch_unwind(|| zune_decode(&bytes, ColorSpace::RGB))
        else {
            continue;
        };
        let (full, ..) = zune_decode(&bytes, ColorSpace::YCbCr);
        let d = ycc_desc(w, h, 0, 0, false);
        let mut planes = vec![0u8; 3 * w * h];
        for i in 0..w * h {
            for c in 0..3 {
                planes[c * w * h + i] = full[i * 3 + c];
            }
        }
        let got = host_convert(convert, &planes, &d);
        assert_eq!(got, want, "{}", f.display());
        checked += 1;
        pixels += w * h;
    }
    assert!(checked >= 10, "only {checked} reference files checked");
    println!(
        "YCbCr -> RGB: {checked} reference files ({pixels} pixels) equal zune-jpeg byte for byte"
    );
}

/// ROI decode: nvJPEG decodes only the MCU-aligned part around the crop region, and the
/// kernel converts that part alone, treating its borders as image edges. With the margin
/// `roi_for_region` adds, every pixel of the crop region must still equal the whole image's
/// conversion. Checked on random planes (the part's planes cut from the whole image's, as
/// nvJPEG returns them), with the part's layout from `roi_planes` + `plane_layout`.
#[test]
fn roi_conversion_equals_the_whole_image_inside_the_crop_region() {
    use augserve_cuda::jpeg::planes::{plane_layout, roi_for_region, roi_planes, PlaneInfo};
    let lib = host_library();
    let convert: YccFn = sym(&lib, b"host_ycbcr_to_rgb");
    let mut rng = keyed_rng(10, 0, Purpose::Sample, 0);
    let mut parts = 0;
    for trial in 0..300 {
        let (w, h) = (
            rng.random_range(20..=200usize),
            rng.random_range(20..=160usize),
        );
        let (hs, vs) = [(1, 1), (1, 0), (0, 1), (0, 0)][trial % 4];
        let whole = ycc_desc(w, h, hs, vs, false);
        let (cw, ch) = (whole.c_width as usize, whole.c_height as usize);
        let mut planes = vec![0u8; w * h + 2 * cw * ch];
        rng.fill_bytes(&mut planes);
        let full_rgb = host_convert(convert, &planes, &whole);
        let (x, y) = (rng.random_range(0..w), rng.random_range(0..h));
        let (rw, rh) = (rng.random_range(1..=w - x), rng.random_range(1..=h - y));
        let region = (x as u32, y as u32, rw as u32, rh as u32);
        let roi = roi_for_region(w as u32, h as u32, hs, vs, region);
        let info = PlaneInfo {
            components: 3,
            widths: [w as i32, cw as i32, cw as i32, 0],
            heights: [h as i32, ch as i32, ch as i32, 0],
        };
        let part = roi_planes(&info, &whole, roi).expect("part on chroma samples");
        let (d, bytes) = plane_layout(&part, 0).unwrap();
        // The part's planes, cut from the whole image's as nvJPEG would decode them.
        let mut cut = vec![0u8; bytes];
        let (px, py) = (roi.x as usize, roi.y as usize);
        for r in 0..d.height as usize {
            for c in 0..d.width as usize {
                cut[r * d.y_pitch as usize + c] = planes[(py + r) * w + px + c];
            }
        }
        let (cx0, cy0) = (px >> hs, py >> vs);
        for (plane, off) in [(1usize, d.cb_off), (2, d.cr_off)] {
            let base = w * h + (plane - 1) * cw * ch;
            for r in 0..d.c_height as usize {
                for c in 0..d.c_width as usize {
                    cut[off as usize + r * d.c_pitch as usize + c] =
                        planes[base + (cy0 + r) * cw + cx0 + c];
                }
            }
        }
        let part_rgb = host_convert(convert, &cut, &d);
        for row in y..y + rh {
            let a = (row * w + x) * 3;
            let b = ((row - py) * d.width as usize + (x - px)) * 3;
            assert_eq!(
                &part_rgb[b..b + rw * 3],
                &full_rgb[a..a + rw * 3],
                "trial {trial}: {w}x{h} shifts ({hs},{vs}) region {region:?} part {roi:?} row {row}"
            );
        }
        parts += 1;
    }
    println!("ROI conversion: {parts} random parts equal the whole-image conversion inside the crop region");
}

/// The batch assembly of `GpuJpegDecoder::decode_into`, on the host: a batch of mixed images
/// (every chroma layout, odd sizes, whole images and ROI parts) laid out by `batch_planes`;
/// a model of nvJPEG writing each image's planes (a part's planes are the window of the
/// whole image's at the part's corner) where `plane_destinations` points; the conversion
/// kernel run once over the batch. Every image's crop region must land at its destination
/// offset with zune-jpeg's pixels, and nothing else of the destination may be written:
/// offset, pitch and plane-order mistakes that one-image tests cannot see.
#[test]
fn batch_planes_put_every_image_where_the_resize_reads_it() {
    use augserve_core::decode::jpeg_info;
    use augserve_cuda::jpeg::check::test_jpeg;
    use augserve_cuda::jpeg::planes::{
        batch_planes, plane_destinations, roi_for_header, PlaneInfo, Roi,
    };
    use jpeg_encoder::SamplingFactor as F;
    use zune_core::colorspace::ColorSpace;
    let lib = host_library();
    let convert: YccFn = sym(&lib, b"host_ycbcr_to_rgb");
    let mut rng = keyed_rng(11, 0, Purpose::Sample, 0);
    // (sampling, h_shift, v_shift, width, height); None: grayscale.
    let cases = [
        (Some(F::F_2_2), 1, 1, 96u32, 80u32),
        (Some(F::F_2_1), 1, 0, 61, 37),
        (None, 0, 0, 45, 33),
        (Some(F::F_1_2), 0, 1, 48, 64),
        (Some(F::F_1_1), 0, 0, 35, 19),
        (Some(F::F_2_2), 1, 1, 75, 53),
        (Some(F::F_2_2), 1, 1, 130, 66),
    ];
    struct Image {
        planes: Vec<u8>,
        whole: YccDesc,
        want: Vec<u8>,
        shifts: (usize, usize),
        region: (u32, u32, u32, u32),
    }
    let (mut batches, mut parts) = (0, 0);
    for _ in 0..20 {
        let (mut images, mut infos, mut dims, mut rois, mut offsets) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        // CPU-decoded regions come first in the source buffer.
        let mut at = rng.random_range(0..2000usize) * 3;
        for (sampling, hs, vs, w, h) in cases {
            let jpeg = test_jpeg(w, h, sampling).unwrap();
            let info = jpeg_info(&jpeg).unwrap();
            let (planes, whole) = match sampling {
                Some(_) => flat_chroma_planes(&jpeg, hs, vs),
                None => gray_planes(&jpeg),
            };
            // nvJPEG's own reading of the header (nvjpegGetImageInfo).
            let mut p = PlaneInfo {
                components: i32::from(info.components),
                widths: [w as i32, 0, 0, 0],
                heights: [h as i32, 0, 0, 0],
            };
            if sampling.is_some() {
                p.widths[1..3].fill(whole.c_width);
                p.heights[1..3].fill(whole.c_height);
            }
            let (x, y) = (rng.random_range(0..w), rng.random_range(0..h));
            let region = (
                x,
                y,
                rng.random_range(1..=w - x),
                rng.random_range(1..=h - y),
            );
            let roi = if rng.random_bool(0.6) {
                parts += 1;
                roi_for_header(&info, region)
            } else {
                Roi::full(w, h)
            };
            offsets.push(at);
            at += roi.pixels() as usize * 3 + rng.random_range(0..3usize) * 3;
            infos.push(p);
            dims.push((w, h));
            rois.push(roi);
            let (want, ..) = zune_decode(&jpeg, ColorSpace::RGB);
            images.push(Image {
                planes,
                whole,
                want,
                shifts: (hs as usize, vs as usize),
                region,
            });
        }
        let (descs, bytes) = batch_planes(&infos, &dims, &rois, &offsets).unwrap();
        // nvJPEG's writes; the rest of the scratch buffer is garbage.
        let mut scratch = vec![0xA5u8; bytes];
        for ((img, d), roi) in images.iter().zip(&descs).zip(&rois) {
            let [yd, cbd, crd] = plane_destinations(d);
            let (wp, ws) = (img.whole.y_pitch as usize, img.whole.c_pitch as usize);
            let (rx, ry) = (roi.x as usize, roi.y as usize);
            for row in 0..d.height as usize {
                let from = (ry + row) * wp + rx;
                let to = yd.0 as usize + row * yd.1;
                scratch[to..to + d.width as usize]
                    .copy_from_slice(&img.planes[from..from + d.width as usize]);
            }
            if img.whole.gray != 0 {
                continue;
            }
            let (cx, cy) = (rx >> img.shifts.0, ry >> img.shifts.1);
            let cw = d.c_width as usize;
            for (plane, dest) in [(img.whole.cb_off, cbd), (img.whole.cr_off, crd)] {
                for row in 0..d.c_height as usize {
                    let from = plane as usize + (cy + row) * ws + cx;
                    let to = dest.0 as usize + row * dest.1;
                    scratch[to..to + cw].copy_from_slice(&img.planes[from..from + cw]);
                }
            }
        }
        let mut out = vec![0x5Au8; at];
        // SAFETY: `scratch` holds every plane `descs` reads (`bytes` long), `out` every
        // destination (the offsets and parts above).
        unsafe {
            convert(
                scratch.as_ptr(),
                out.as_mut_ptr(),
                descs.as_ptr(),
                descs.len() as i32,
            )
        };
        let mut written = vec![false; at];
        for (k, ((img, roi), &off)) in images.iter().zip(&rois).zip(&offsets).enumerate() {
            written[off..off + roi.pixels() as usize * 3].fill(true);
            let w = img.whole.width as u32;
            let (x, y, rw, rh) = img.region;
            for row in y..y + rh {
                let a = ((row * w + x) * 3) as usize;
                let b = off + (((row - roi.y) * roi.width + (x - roi.x)) * 3) as usize;
                let n = rw as usize * 3;
                assert_eq!(
                    &out[b..b + n],
                    &img.want[a..a + n],
                    "image {k} ({}x{}, part {roi:?}), row {row}",
                    w,
                    img.whole.height
                );
            }
        }
        let stray = out
            .iter()
            .zip(&written)
            .filter(|(&v, &w)| !w && v != 0x5A)
            .count();
        assert_eq!(stray, 0, "bytes written outside the images' destinations");
        batches += 1;
    }
    println!(
        "batch planes: {batches} batches of {} mixed images ({parts} ROI parts): every crop region at its offset, equal to zune-jpeg",
        cases.len()
    );
}
