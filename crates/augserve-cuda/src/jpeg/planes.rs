//! Where nvJPEG's planar output of an image goes and how the conversion kernel reads it
//! (`plane_layout`), and which part of an image ROI decode asks for (`roi_for_header`,
//! `roi_for_region`, `roi_planes`). Pure logic: tested on the CPU; the decoder is `decoder.rs`.

use augserve_core::decode::JpegInfo;

use crate::kernels::YccDesc;

/// nvJPEG's NVJPEG_MAX_COMPONENT: planes per image.
pub const MAX_COMPONENTS: usize = 4;

/// One image's components and plane sizes as nvJPEG reads them (`nvjpegGetImageInfo`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlaneInfo {
    pub components: i32,
    pub widths: [i32; MAX_COMPONENTS],
    pub heights: [i32; MAX_COMPONENTS],
}

/// Where one image's planes go in the planar buffer, from byte `at`, and how the conversion
/// kernel reads them (`dst_off` left 0); with the bytes the planes take. `None` for what the
/// kernel does not convert: not 1 or 3 components, Cb and Cr of different sizes, chroma
/// neither full size nor halved (rounding up) in each direction.
pub fn plane_layout(p: &PlaneInfo, at: usize) -> Option<(YccDesc, usize)> {
    let (w, h) = (p.widths[0], p.heights[0]);
    if w <= 0 || h <= 0 {
        return None;
    }
    let luma = w as usize * h as usize;
    let mut d = YccDesc {
        y_off: at as u64,
        width: w,
        height: h,
        y_pitch: w,
        ..YccDesc::default()
    };
    match p.components {
        1 => {
            // Chroma destinations at full size although a grayscale image has none: what
            // nvJPEG might write there for YUV output then stays inside our buffer.
            d.gray = 1;
            d.c_width = w;
            d.c_height = h;
            d.c_pitch = w;
        }
        3 => {
            let (cw, ch) = (p.widths[1], p.heights[1]);
            if (cw, ch) != (p.widths[2], p.heights[2]) {
                return None;
            }
            let shift = |full: i32, part: i32| match part {
                _ if part == full => Some(0),
                _ if part == (full + 1) / 2 => Some(1),
                _ => None,
            };
            d.h_shift = shift(w, cw)?;
            d.v_shift = shift(h, ch)?;
            d.c_width = cw;
            d.c_height = ch;
            d.c_pitch = cw;
        }
        _ => return None,
    }
    let chroma = d.c_width as usize * d.c_height as usize;
    d.cb_off = (at + luma) as u64;
    d.cr_off = (at + luma + chroma) as u64;
    Some((d, luma + 2 * chroma))
}

/// An image's chroma layout as nvJPEG reads it: what `decode_into` groups a batch by (one
/// nvJPEG call and decoding state per layout and output format).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ChromaLayout {
    Gray,
    /// Chroma subsampled by 2 horizontally (`h`) and/or vertically (`v`); neither: 4:4:4.
    Color {
        h: bool,
        v: bool,
    },
    /// Anything else (the conversion kernel refuses it; `batch_planes` says why).
    Other,
}

/// The chroma layout of an image from nvJPEG's plane sizes.
pub fn chroma_layout(p: &PlaneInfo) -> ChromaLayout {
    match p.components {
        1 => ChromaLayout::Gray,
        3 => {
            let halved = |full: i32, part: i32| {
                if part == full {
                    Some(false)
                } else if part == (full + 1) / 2 {
                    Some(true)
                } else {
                    None
                }
            };
            match (
                halved(p.widths[0], p.widths[1]),
                halved(p.heights[0], p.heights[1]),
            ) {
                (Some(h), Some(v))
                    if (p.widths[1], p.heights[1]) == (p.widths[2], p.heights[2]) =>
                {
                    ChromaLayout::Color { h, v }
                }
                _ => ChromaLayout::Other,
            }
        }
        _ => ChromaLayout::Other,
    }
}

/// A rectangle of an image in luma pixels: the part nvJPEG decodes (ROI decode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roi {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

impl Roi {
    /// The whole of a `width` x `height` image.
    pub fn full(width: u32, height: u32) -> Self {
        Roi {
            x: 0,
            y: 0,
            width,
            height,
        }
    }

    pub fn pixels(&self) -> u64 {
        u64::from(self.width) * u64::from(self.height)
    }
}

/// Pixels the decoded part keeps around the crop region: the chroma interpolation of a
/// region pixel reads the chroma samples next to its own (2 luma pixels away), so with this
/// margin every region pixel is computed from the same samples as in a full decode.
pub const ROI_MARGIN: u32 = 2;

/// The part of a `width` x `height` image to decode for the crop `region` (x, y, w, h): the
/// region grown by [`ROI_MARGIN`] and aligned outwards to whole MCUs (8 pixels, 16 where the
/// chroma is halved), so that the chroma planes of the part start on a chroma sample.
pub fn roi_for_region(
    width: u32,
    height: u32,
    h_shift: i32,
    v_shift: i32,
    (x, y, w, h): (u32, u32, u32, u32),
) -> Roi {
    let span = |start: u32, len: u32, size: u32, mcu: u32| {
        let lo = start.saturating_sub(ROI_MARGIN) / mcu * mcu;
        let hi = (start.saturating_add(len).saturating_add(ROI_MARGIN))
            .div_ceil(mcu)
            .saturating_mul(mcu)
            .min(size);
        (lo.min(hi), hi)
    };
    let (x0, x1) = span(x, w, width, 8 << h_shift);
    let (y0, y1) = span(y, h, height, 8 << v_shift);
    Roi {
        x: x0,
        y: y0,
        width: x1 - x0,
        height: y1 - y0,
    }
}

/// The part to decode for the crop `region` of the image with header `info`: chroma halving
/// from its sampling factors (4:2:0, 4:2:2, 4:4:0, 4:4:4, grayscale); the whole image for any
/// other sampling (the GPU does not take those).
pub fn roi_for_header(info: &JpegInfo, region: (u32, u32, u32, u32)) -> Roi {
    let whole = Roi::full(info.width, info.height);
    let (h_shift, v_shift) = match (info.components, info.sampling.as_slice()) {
        (1, _) => (0, 0),
        (3, [(hy, vy), (1, 1), (1, 1)]) if *hy <= 2 && *vy <= 2 => {
            (i32::from(*hy == 2), i32::from(*vy == 2))
        }
        _ => return whole,
    };
    roi_for_region(info.width, info.height, h_shift, v_shift, region)
}

/// The planes nvJPEG writes when it decodes `roi` of an image whose whole planes are `p`
/// (laid out as `full`): luma the ROI's size, chroma the samples covering it. `None` when the
/// ROI does not lie in the image or does not start on a chroma sample.
pub fn roi_planes(p: &PlaneInfo, full: &YccDesc, roi: Roi) -> Option<PlaneInfo> {
    let (x, y, w, h) = (
        roi.x as i32,
        roi.y as i32,
        roi.width as i32,
        roi.height as i32,
    );
    if w <= 0 || h <= 0 || x + w > full.width || y + h > full.height {
        return None;
    }
    if (full.h_shift == 1 && x % 2 != 0) || (full.v_shift == 1 && y % 2 != 0) {
        return None;
    }
    let mut r = *p;
    r.widths[0] = w;
    r.heights[0] = h;
    if p.components == 3 {
        for c in 1..3 {
            r.widths[c] = (w + full.h_shift) >> full.h_shift;
            r.heights[c] = (h + full.v_shift) >> full.v_shift;
        }
    }
    Some(r)
}

/// The planes of one decode batch. Image k (nvJPEG's reading of its header `infos[k]`, the
/// size our header parse found `dims[k]`, the part to decode `rois[k]`, its RGB destination
/// at byte `offsets[k]`) gets its planes back to back after image k-1's in the scratch
/// buffer; returns how the conversion kernel reads each image (`dst_off` set) and the scratch
/// bytes the batch needs. Fails, naming the image, where nvJPEG's reading disagrees with
/// ours, the planes are not ones the kernel converts, or the part does not fit them.
pub fn batch_planes(
    infos: &[PlaneInfo],
    dims: &[(u32, u32)],
    rois: &[Roi],
    offsets: &[usize],
) -> Result<(Vec<YccDesc>, usize), String> {
    let n = infos.len();
    if dims.len() != n || rois.len() != n || offsets.len() != n {
        return Err(format!(
            "{n} images, {} sizes, {} parts, {} offsets",
            dims.len(),
            rois.len(),
            offsets.len()
        ));
    }
    let mut descs = Vec::with_capacity(n);
    let mut bytes = 0usize;
    for (k, info) in infos.iter().enumerate() {
        let not_converted = || format!("image {k}: planes {info:?} not converted on the GPU");
        let (full, _) = plane_layout(info, 0).ok_or_else(not_converted)?;
        if (full.width as u32, full.height as u32) != dims[k] {
            return Err(format!(
                "image {k}: nvJPEG reads {}x{}, the header says {}x{}",
                full.width, full.height, dims[k].0, dims[k].1
            ));
        }
        let part = roi_planes(info, &full, rois[k])
            .ok_or_else(|| format!("image {k}: part {:?} of a {info:?} image", rois[k]))?;
        let (mut d, len) = plane_layout(&part, bytes).ok_or_else(not_converted)?;
        d.dst_off = offsets[k] as u64;
        descs.push(d);
        bytes += len;
    }
    Ok((descs, bytes))
}

/// Where nvJPEG is told to write the Y, Cb and Cr planes of an image laid out as `d`: byte
/// offset in the scratch buffer and pitch of each.
pub fn plane_destinations(d: &YccDesc) -> [(u64, usize); 3] {
    [
        (d.y_off, d.y_pitch as usize),
        (d.cb_off, d.c_pitch as usize),
        (d.cr_off, d.c_pitch as usize),
    ]
}

/// The chroma layout of an image the GPU decodes, by name ("4:2:0", ..., "gray"): what ROI
/// decode is checked and switched on per.
pub fn layout_name(info: &JpegInfo) -> &'static str {
    if info.components == 1 {
        "gray"
    } else {
        info.subsampling().unwrap_or("other")
    }
}

/// The layouts ROI decode's start-up check passed for (`GpuJpegDecoder::check_roi`), and
/// why it is off for the others: one layout failing (an alignment rule of some backend, say)
/// leaves it on for the rest, and a layout never checked stays off.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoiSupport {
    on: Vec<&'static str>,
    off: Vec<String>,
}

impl RoiSupport {
    /// Off for every layout, for `why`.
    pub fn off(why: impl Into<String>) -> Self {
        RoiSupport {
            on: Vec::new(),
            off: vec![why.into()],
        }
    }

    /// Records one layout's check.
    pub fn record(&mut self, layout: &'static str, result: Result<(), String>) {
        match result {
            Ok(()) => self.on.push(layout),
            Err(why) => self.off.push(format!("{layout}: {why}")),
        }
    }

    /// Whether images of `info`'s layout are decoded as their crop's part.
    pub fn allows(&self, info: &JpegInfo) -> bool {
        self.on.contains(&layout_name(info))
    }

    /// Whether ROI decode is on for any layout.
    pub fn any(&self) -> bool {
        !self.on.is_empty()
    }
}

impl std::fmt::Display for RoiSupport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.on.is_empty(), self.off.is_empty()) {
            (true, _) => write!(f, "ROI decode off ({})", self.off.join("; ")),
            (false, true) => write!(f, "ROI decode on for {}", self.on.join(", ")),
            (false, false) => write!(
                f,
                "ROI decode on for {}, off for {}",
                self.on.join(", "),
                self.off.join("; ")
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use augserve_core::decode::JpegCoding;

    /// A 500x375 baseline header with these components and sampling factors.
    fn info(components: u8, sampling: Vec<(u8, u8)>) -> JpegInfo {
        JpegInfo {
            width: 500,
            height: 375,
            components,
            precision: 8,
            coding: JpegCoding::Baseline,
            sampling,
            restarts: false,
            rgb: false,
            ends_with_eoi: true,
        }
    }

    fn part(x: u32, y: u32, width: u32, height: u32) -> Roi {
        Roi {
            x,
            y,
            width,
            height,
        }
    }

    fn planes(components: i32, sizes: &[(i32, i32)]) -> PlaneInfo {
        let mut p = PlaneInfo {
            components,
            widths: [0; 4],
            heights: [0; 4],
        };
        for (c, &(w, h)) in sizes.iter().enumerate() {
            p.widths[c] = w;
            p.heights[c] = h;
        }
        p
    }

    #[test]
    fn chroma_layouts_from_plane_sizes() {
        let full = (75, 53);
        let color = |h, v| ChromaLayout::Color { h, v };
        for (sizes, layout) in [
            (vec![full, (38, 27), (38, 27)], color(true, true)),
            (vec![full, (38, 53), (38, 53)], color(true, false)),
            (vec![full, (75, 27), (75, 27)], color(false, true)),
            (vec![full, full, full], color(false, false)),
            (vec![full, (19, 53), (19, 53)], ChromaLayout::Other), // 4:1:1
            (vec![full, (38, 27), (38, 53)], ChromaLayout::Other), // Cb and Cr apart
        ] {
            assert_eq!(chroma_layout(&planes(3, &sizes)), layout, "{sizes:?}");
        }
        assert_eq!(chroma_layout(&planes(1, &[full])), ChromaLayout::Gray);
    }

    #[test]
    fn plane_layouts_follow_the_chroma_subsampling() {
        // 4:2:0 of an odd-sized image: chroma halved, rounding up (what the H200 reported).
        let (d, bytes) =
            plane_layout(&planes(3, &[(375, 499), (188, 250), (188, 250)]), 1000).expect("4:2:0");
        assert_eq!((d.h_shift, d.v_shift, d.gray), (1, 1, 0));
        assert_eq!(
            (d.width, d.height, d.c_width, d.c_height),
            (375, 499, 188, 250)
        );
        assert_eq!((d.y_off, d.cb_off), (1000, 1000 + 375 * 499));
        assert_eq!(d.cr_off, d.cb_off + 188 * 250);
        assert_eq!(bytes, 375 * 499 + 2 * 188 * 250);
        let (d, _) = plane_layout(&planes(3, &[(64, 48), (32, 48), (32, 48)]), 0).expect("4:2:2");
        assert_eq!((d.h_shift, d.v_shift), (1, 0));
        let (d, _) = plane_layout(&planes(3, &[(64, 48), (64, 24), (64, 24)]), 0).expect("4:4:0");
        assert_eq!((d.h_shift, d.v_shift), (0, 1));
        let (d, _) = plane_layout(&planes(3, &[(64, 48), (64, 48), (64, 48)]), 0).expect("4:4:4");
        assert_eq!((d.h_shift, d.v_shift), (0, 0));
        // Grayscale: scratch chroma planes at full size, so nothing nvJPEG writes escapes.
        let (d, bytes) = plane_layout(&planes(1, &[(40, 30)]), 0).expect("gray");
        assert_eq!(d.gray, 1);
        assert_eq!(bytes, 3 * 40 * 30);
        // What the kernel does not convert.
        assert!(plane_layout(&planes(3, &[(64, 48), (16, 48), (16, 48)]), 0).is_none()); // 4:1:1
        assert!(plane_layout(&planes(3, &[(64, 48), (32, 24), (64, 48)]), 0).is_none());
        assert!(plane_layout(&planes(4, &[(64, 48); 4]), 0).is_none());
        assert!(plane_layout(&planes(3, &[(0, 48), (0, 48), (0, 48)]), 0).is_none());
    }

    #[test]
    fn roi_parts_cover_the_region_with_a_margin_on_mcu_boundaries() {
        // 4:2:0: MCUs of 16 pixels; the region grown by 2 and aligned outwards.
        let r = roi_for_region(500, 375, 1, 1, (100, 50, 200, 150));
        assert_eq!(r, part(96, 48, 208, 160));
        assert_eq!(
            roi_for_region(500, 375, 1, 1, (0, 0, 500, 375)),
            Roi::full(500, 375)
        );
        // At the right and bottom edges the part ends with the image.
        let r = roi_for_region(500, 375, 1, 1, (300, 200, 200, 175));
        assert_eq!((r.x + r.width, r.y + r.height), (500, 375));
        // 4:4:4 and grayscale: MCUs of 8.
        let r = roi_for_region(64, 64, 0, 0, (13, 9, 20, 20));
        assert_eq!(r, part(8, 0, 32, 32));
        // Random regions: always inside the image, aligned, covering region + margin.
        let mut seed = 7u64;
        let mut next = |m: u32| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 33) % u64::from(m.max(1))) as u32
        };
        for _ in 0..2000 {
            let (w, h) = (1 + next(900), 1 + next(700));
            let (hs, vs) = (next(2) as i32, next(2) as i32);
            let (x, y) = (next(w), next(h));
            let (rw, rh) = (1 + next(w - x), 1 + next(h - y));
            let r = roi_for_region(w, h, hs, vs, (x, y, rw, rh));
            assert!(
                r.x + r.width <= w && r.y + r.height <= h,
                "{r:?} in {w}x{h}"
            );
            assert_eq!(r.x % (8 << hs), 0);
            assert_eq!(r.y % (8 << vs), 0);
            assert!(r.x <= x.saturating_sub(ROI_MARGIN) && r.y <= y.saturating_sub(ROI_MARGIN));
            assert!(r.x + r.width >= (x + rw + ROI_MARGIN).min(w));
            assert!(r.y + r.height >= (y + rh + ROI_MARGIN).min(h));
        }
    }

    #[test]
    fn roi_planes_are_the_chroma_samples_under_the_part() {
        let p = planes(3, &[(375, 499), (188, 250), (188, 250)]);
        let (full, _) = plane_layout(&p, 0).unwrap();
        let r = roi_planes(&p, &full, part(96, 48, 208, 160)).unwrap();
        assert_eq!(
            (r.widths[0], r.heights[0], r.widths[1], r.heights[1]),
            (208, 160, 104, 80)
        );
        // A part that ends at the odd right edge: the last chroma column is shared.
        let r = roi_planes(&p, &full, part(368, 0, 7, 499)).unwrap();
        assert_eq!((r.widths[1], r.heights[1]), (4, 250));
        let (d, _) = plane_layout(&r, 0).unwrap();
        assert_eq!((d.h_shift, d.v_shift), (1, 1));
        // Not on a chroma sample, or outside the image.
        assert!(roi_planes(&p, &full, part(3, 0, 16, 16)).is_none());
        assert!(roi_planes(&p, &full, part(368, 0, 16, 16)).is_none());
        let g = planes(1, &[(40, 30)]);
        let (gfull, _) = plane_layout(&g, 0).unwrap();
        let r = roi_planes(&g, &gfull, part(3, 5, 10, 10)).unwrap();
        assert_eq!((r.components, r.widths[0], r.heights[0]), (1, 10, 10));
    }

    #[test]
    fn roi_from_the_header_follows_its_sampling() {
        let region = (100, 50, 200, 150);
        let s420 = info(3, vec![(2, 2), (1, 1), (1, 1)]);
        assert_eq!(
            roi_for_header(&s420, region),
            roi_for_region(500, 375, 1, 1, region)
        );
        let s422 = info(3, vec![(2, 1), (1, 1), (1, 1)]);
        assert_eq!(
            roi_for_header(&s422, region),
            roi_for_region(500, 375, 1, 0, region)
        );
        let gray = info(1, vec![(1, 1)]);
        assert_eq!(
            roi_for_header(&gray, region),
            roi_for_region(500, 375, 0, 0, region)
        );
        // Sampling the conversion does not take: the whole image.
        let s411 = info(3, vec![(4, 1), (1, 1), (1, 1)]);
        assert_eq!(roi_for_header(&s411, region), Roi::full(500, 375));
        let odd = info(3, vec![(2, 2), (1, 1), (2, 1)]);
        assert_eq!(roi_for_header(&odd, region), Roi::full(500, 375));
    }

    #[test]
    fn roi_support_is_per_layout_and_off_for_unchecked_ones() {
        let s420 = info(3, vec![(2, 2), (1, 1), (1, 1)]);
        let s422 = info(3, vec![(2, 1), (1, 1), (1, 1)]);
        let s444 = info(3, vec![(1, 1), (1, 1), (1, 1)]);
        let gray = info(1, vec![(1, 1)]);
        assert_eq!(layout_name(&s420), "4:2:0");
        assert_eq!(layout_name(&gray), "gray");

        let mut roi = RoiSupport::default();
        roi.record("4:2:0", Ok(()));
        roi.record("4:2:2", Err("row 3 differs".into()));
        roi.record("gray", Ok(()));
        assert!(roi.any());
        assert!(roi.allows(&s420) && roi.allows(&gray));
        assert!(!roi.allows(&s422), "failed its check");
        assert!(!roi.allows(&s444), "never checked");
        assert_eq!(
            roi.to_string(),
            "ROI decode on for 4:2:0, gray, off for 4:2:2: row 3 differs"
        );

        let none = RoiSupport::off("no nvjpegDecodeBatchedEx");
        assert!(!none.any() && !none.allows(&s420));
        assert_eq!(
            none.to_string(),
            "ROI decode off (no nvjpegDecodeBatchedEx)"
        );
    }

    #[test]
    fn batch_planes_follow_each_other_and_reject_what_does_not_fit() {
        let a = planes(3, &[(33, 17), (17, 9), (17, 9)]);
        let g = planes(1, &[(40, 30)]);
        let part = Roi {
            x: 16,
            y: 8,
            width: 17,
            height: 9,
        };
        let (descs, bytes) = batch_planes(
            &[a, g],
            &[(33, 17), (40, 30)],
            &[part, Roi::full(40, 30)],
            &[300, 900],
        )
        .unwrap();
        // The 4:2:0 part: 17x9 luma, 9x5 chroma; then the gray image at full size.
        assert_eq!(
            (descs[0].y_off, descs[0].cb_off, descs[0].cr_off),
            (0, 153, 198)
        );
        assert_eq!(descs[1].y_off, 153 + 2 * 45);
        assert_eq!(bytes, 243 + 3 * 1200);
        assert_eq!((descs[0].dst_off, descs[1].dst_off), (300, 900));
        assert_eq!(plane_destinations(&descs[0]), [(0, 17), (153, 9), (198, 9)]);

        let wrong_size = batch_planes(&[a], &[(32, 17)], &[Roi::full(33, 17)], &[0]);
        assert!(wrong_size.unwrap_err().contains("nvJPEG reads 33x17"));
        let outside = batch_planes(&[a], &[(33, 17)], &[Roi::full(34, 17)], &[0]);
        assert!(outside.unwrap_err().contains("image 0: part"));
        let quartered = planes(3, &[(64, 16), (16, 16), (16, 16)]);
        let not_ours = batch_planes(&[quartered], &[(64, 16)], &[Roi::full(64, 16)], &[0]);
        assert!(not_ours.unwrap_err().contains("not converted"));
        assert!(batch_planes(&[a], &[], &[], &[]).is_err());
    }
}
