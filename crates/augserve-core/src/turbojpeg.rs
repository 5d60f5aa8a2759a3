//! libjpeg-turbo 3 (TurboJPEG API, linked statically from the source `turbojpeg-sys` bundles):
//! the CPU path's JPEG decoder for the files it takes cleanly. Its edge over zune-jpeg is the
//! crop region: `tj3SetCroppingRegion` skips the entropy-decoded blocks left of the region
//! (no IDCT, upsampling or colour conversion there) and the rows above and below it, so a
//! RandomResizedCrop costs what its region costs (benches/decoder_candidates: 1.85x zune-jpeg's
//! whole decode on ImageNet-size files, 1.80x on large photos). A progressive file's scans are
//! decoded only down to the region's rows too: a patch of ours (vendor/turbojpeg-sys, see
//! vendor/README.md).
//!
//! What libjpeg-turbo warns about (corrupt data, padding between segments) or refuses (CMYK,
//! a fatal error) is `Declined`: zune-jpeg then decodes the whole file and judges it, so the
//! error kinds and damage rules are the same whatever decoder ran. The warning stops the
//! decode at once (STOPONWARNING), and the handle with its buffers is freed before zune-jpeg
//! starts: a hostile file never holds both decoders' memory.

use std::cell::RefCell;
use std::ffi::{c_int, CStr};

use turbojpeg_sys as tj;

use crate::decode::{DecodeLimits, DecodedArea, RegionHeader, RegionRequest, DCT_DENOMS};
use crate::image::RgbImage;

/// Why libjpeg-turbo did not decode a file: the caller decodes it with zune-jpeg instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Declined(pub String);

/// Columns decoded beyond the wanted region on a side, in iMCUs, where the region's edge lies
/// on an iMCU boundary inside the image. libjpeg-turbo's "fancy" chroma upsampling of the
/// decoded area's first and last columns reads chroma outside the area, which it replicates
/// from the edge instead: without any margin 772 of 1000 ImageNet-size files differed from the
/// whole decode at the region's edges (by up to 37 levels). Only those two columns differ, so
/// a wanted edge inside an iMCU (the area is widened to the iMCU boundary past it) needs no
/// margin; one that falls on the boundary gets one iMCU (a margin on every side was 2 iMCUs,
/// 32 pixels, of IDCT, upsampling and colour conversion per 4:2:0 region). Rows need no
/// margin: libjpeg-turbo's row skipping keeps the context rows the upsampler reads.
const MARGIN_IMCUS: u32 = 1;

/// Scans a progressive file may have before libjpeg-turbo refuses it: a hostile file with
/// thousands of tiny scans otherwise costs seconds (libjpeg-turbo's own fuzzers use 500).
const SCAN_LIMIT: c_int = 500;

/// A TurboJPEG decompressor, one per thread (a handle is not thread-safe, and making one per
/// image would allocate libjpeg's state each time).
struct Decompressor(tj::tjhandle);

impl Decompressor {
    fn new() -> Option<Self> {
        // SAFETY: tj3Init has no preconditions; it returns null on failure, checked here.
        let h = unsafe { tj::tj3Init(tj::TJINIT_TJINIT_DECOMPRESS as c_int) };
        (!h.is_null()).then_some(Decompressor(h))
    }

    /// libjpeg-turbo's message for the last failure on this handle.
    fn error(&self) -> Declined {
        // SAFETY: the handle is live; tj3GetErrorStr returns a NUL-terminated string owned by
        // the handle (or a static one), read before the next call on it.
        let msg = unsafe { CStr::from_ptr(tj::tj3GetErrorStr(self.0)) };
        Declined(format!("libjpeg-turbo: {}", msg.to_string_lossy().trim()))
    }

    fn get(&self, param: tj::TJPARAM) -> c_int {
        // SAFETY: the handle is live; an unknown parameter returns -1.
        unsafe { tj::tj3Get(self.0, param as c_int) }
    }

    fn set(&self, param: tj::TJPARAM, value: c_int) -> Result<(), Declined> {
        // SAFETY: the handle is live; a bad value returns -1 with a message.
        match unsafe { tj::tj3Set(self.0, param as c_int, value) } {
            0 => Ok(()),
            _ => Err(self.error()),
        }
    }

    /// Reads the headers: the image's width and height, within the pixel limit.
    fn read_header(&self, bytes: &[u8], limits: &DecodeLimits) -> Result<(u32, u32), Declined> {
        let max_pixels = c_int::try_from(limits.max_pixels).unwrap_or(c_int::MAX);
        self.set(tj::TJPARAM_TJPARAM_STOPONWARNING, 1)?;
        self.set(tj::TJPARAM_TJPARAM_SCANLIMIT, SCAN_LIMIT)?;
        self.set(tj::TJPARAM_TJPARAM_MAXPIXELS, max_pixels)?;
        // SAFETY: the handle is live and `bytes` outlives the call, which only reads it.
        let rc = unsafe { tj::tj3DecompressHeader(self.0, bytes.as_ptr(), bytes.len() as _) };
        if rc != 0 {
            return Err(self.error());
        }
        let colorspace = self.get(tj::TJPARAM_TJPARAM_COLORSPACE) as tj::TJCS;
        if !matches!(
            colorspace,
            tj::TJCS_TJCS_YCbCr | tj::TJCS_TJCS_GRAY | tj::TJCS_TJCS_RGB
        ) {
            // CMYK and YCCK: zune-jpeg converts them to RGB; libjpeg-turbo does not.
            return Err(Declined(format!("colour space {colorspace}")));
        }
        let (w, h) = (
            self.get(tj::TJPARAM_TJPARAM_JPEGWIDTH),
            self.get(tj::TJPARAM_TJPARAM_JPEGHEIGHT),
        );
        match (u32::try_from(w), u32::try_from(h)) {
            // Over the limit: zune-jpeg refuses it from its header, with the error that says so.
            (Ok(w), Ok(h)) if u64::from(w) * u64::from(h) > limits.max_pixels => {
                Err(Declined(format!("{w}x{h} over the pixel limit")))
            }
            (Ok(w), Ok(h)) if w > 0 && h > 0 => Ok((w, h)),
            _ => Err(Declined(format!("size {w}x{h}"))),
        }
    }

    /// The width of one iMCU column (8, 16 or 32 pixels), or None for a layout TurboJPEG
    /// cannot crop (unusual sampling factors).
    fn imcu_width(&self) -> Option<u32> {
        // turbojpeg.h's tjMCUWidth, indexed by TJSAMP (444, 422, 420, GRAY, 440, 411, 441);
        // a `static const` in the header, so not a symbol the library exports.
        const MCU_WIDTH: [u32; 7] = [8, 16, 16, 8, 8, 32, 8];
        let subsamp = usize::try_from(self.get(tj::TJPARAM_TJPARAM_SUBSAMP)).ok()?;
        MCU_WIDTH.get(subsamp).copied()
    }

    /// Sets the scale of the next decode of the image whose headers were just read: 1/`denom`.
    fn set_scale(&self, denom: u32) -> Result<(), Declined> {
        let denom = c_int::try_from(denom).map_err(|_| Declined(format!("scale 1/{denom}")))?;
        // SAFETY: the handle is live; a factor TurboJPEG does not offer returns -1.
        match unsafe { tj::tj3SetScalingFactor(self.0, tj::tjscalingfactor { num: 1, denom }) } {
            0 => Ok(()),
            _ => Err(self.error()),
        }
    }

    /// Decodes the area (x, y, w, h) of the image whose headers were just read (at the scale
    /// set), to RGB; `whole` when the area is the whole (scaled) image.
    fn decode_area(
        &self,
        bytes: &[u8],
        area: (u32, u32, u32, u32),
        whole: bool,
    ) -> Result<RgbImage, Declined> {
        let (_, _, w, h) = area;
        let to_int = |v: u32| c_int::try_from(v).map_err(|_| Declined(format!("area {area:?}")));
        // All zeros: uncropped (the region stays set on the handle between images).
        let (rx, ry, rw, rh) = if whole { (0, 0, 0, 0) } else { area };
        let region = tj::tjregion {
            x: to_int(rx)?,
            y: to_int(ry)?,
            w: to_int(rw)?,
            h: to_int(rh)?,
        };
        // SAFETY: the handle is live; the region is checked against the image by TurboJPEG.
        if unsafe { tj::tj3SetCroppingRegion(self.0, region) } != 0 {
            return Err(self.error());
        }
        // Not zeroed first (a memset of every region was 2 % of a one-core run): TurboJPEG
        // writes every byte of the output on success; on an error (a warning is one) the
        // buffer is dropped unread.
        let len = w as usize * h as usize * 3;
        let mut data = take_spare_buffer(len);
        // SAFETY: the handle is live, `bytes` outlives the call and is only read; `data` has
        // room for exactly w * h RGB pixels, the cropped output's size at pitch 0 (= w * 3).
        let rc = unsafe {
            tj::tj3Decompress8(
                self.0,
                bytes.as_ptr(),
                bytes.len() as _,
                data.as_mut_ptr(),
                0,
                tj::TJPF_TJPF_RGB,
            )
        };
        if rc != 0 {
            return Err(self.error());
        }
        // SAFETY: TurboJPEG returned success, having written all `len` bytes.
        unsafe { data.set_len(len) };
        RgbImage::from_vec(w, h, data).ok_or_else(|| Declined("output size".into()))
    }
}

impl Drop for Decompressor {
    fn drop(&mut self) {
        // SAFETY: the handle came from tj3Init and is destroyed once, here.
        unsafe { tj::tj3Destroy(self.0) }
    }
}

thread_local! {
    static DECOMPRESSOR: RefCell<Option<Decompressor>> = const { RefCell::new(None) };
    /// A decode output buffer given back (`recycle_buffer`) for this thread's next decode.
    static SPARE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// The largest buffer a thread keeps for its next decode: a region of a 4000x4000 photo. A
/// fresh buffer of that size costs its page faults (kernel page clearing was 19 % of a one-core
/// run on large photos); a kept one costs this much memory per worker thread at most.
const MAX_SPARE_BYTES: usize = 48 << 20;

/// An empty buffer with room for `len` bytes: this thread's spare one when it is there.
fn take_spare_buffer(len: usize) -> Vec<u8> {
    let mut buf = SPARE.with(|s| std::mem::take(&mut *s.borrow_mut()));
    buf.clear();
    buf.reserve_exact(len);
    buf
}

/// Keeps `buf` (a decoded region the caller is done with) for this thread's next decode.
pub(crate) fn recycle_buffer(buf: Vec<u8>) {
    if buf.capacity() <= MAX_SPARE_BYTES {
        SPARE.with(|s| {
            let mut spare = s.borrow_mut();
            if buf.capacity() > spare.capacity() {
                *spare = buf;
            }
        });
    }
}

/// Decodes the JPEG `bytes` with libjpeg-turbo, only as much as `region_for` (called with the
/// header: size, scaling up to 1/8, progressive or not) asks for: that region comes back
/// (inside the whole iMCU columns decoded around it: `DecodedArea::inner`), at the scale
/// asked, equal byte for byte to the same region of libjpeg-turbo's whole-image decode at
/// that scale. Damage
/// libjpeg-turbo sees in the rows it decodes declines the file; it stops reading after the
/// region's last row, so damage below it goes unseen (a missing end is checked before).
pub(crate) fn decode_region(
    bytes: &[u8],
    limits: &DecodeLimits,
    region_for: &mut dyn FnMut(RegionHeader) -> RegionRequest,
) -> Result<DecodedArea, Declined> {
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Decompressor::new();
        }
        let Some(d) = slot.as_ref() else {
            return Err(Declined("tj3Init failed".into()));
        };
        let result = decode_with(d, bytes, limits, region_for);
        if result.is_err() {
            // A fresh handle after a failure: its buffers are freed before zune-jpeg starts,
            // and nothing of a hostile file's state carries over.
            *slot = None;
        }
        result
    })
}

fn decode_with(
    d: &Decompressor,
    bytes: &[u8],
    limits: &DecodeLimits,
    region_for: &mut dyn FnMut(RegionHeader) -> RegionRequest,
) -> Result<DecodedArea, Declined> {
    let (full_w, full_h) = d.read_header(bytes, limits)?;
    let asked = region_for(RegionHeader {
        width: full_w,
        height: full_h,
        max_denom: DCT_DENOMS[0],
        progressive: d.get(tj::TJPARAM_TJPARAM_PROGRESSIVE) == 1,
    });
    let denom = asked.denom;
    if !(denom == 1 || DCT_DENOMS.contains(&denom)) {
        return Err(Declined(format!("scale 1/{denom}")));
    }
    // TJSCALED: the scaled image's size rounds up.
    let (width, height) = (full_w.div_ceil(denom), full_h.div_ceil(denom));
    let (x, y, w, h) = asked.area;
    if w == 0 || h == 0 || x + w > width || y + h > height {
        return Err(Declined(format!(
            "region {x},{y} {w}x{h} of a {width}x{height} image"
        )));
    }
    d.set_scale(denom)?;
    // A crop starts on an iMCU column of the scaled image (8, 16 or 32 pixels / denom).
    let area = match d.imcu_width().map(|imcu| imcu / denom) {
        Some(imcu) if imcu > 0 => {
            let on_boundary = |v: u32| v.is_multiple_of(imcu);
            let left = if on_boundary(x) { MARGIN_IMCUS } else { 0 };
            let right = if on_boundary(x + w) { MARGIN_IMCUS } else { 0 };
            let x0 = (x / imcu).saturating_sub(left) * imcu;
            let x1 = ((x + w).div_ceil(imcu) + right) * imcu;
            (x0, y, x1.min(width) - x0, h)
        }
        // TurboJPEG crops no other layout: the whole image.
        _ => (0, 0, width, height),
    };
    let image = d.decode_area(bytes, area, area == (0, 0, width, height))?;
    Ok(DecodedArea {
        image,
        inner: (x - area.0, y - area.1, w, h),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 4:2:0 JPEG of `w` x `h` with detail everywhere.
    fn jpeg(w: u16, h: u16, progressive: bool, restart: u16) -> Vec<u8> {
        let rgb: Vec<u8> = (0..u32::from(w) * u32::from(h) * 3)
            .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
            .collect();
        let mut out = Vec::new();
        let mut enc = jpeg_encoder::Encoder::new(&mut out, 90);
        enc.set_sampling_factor(jpeg_encoder::SamplingFactor::F_2_2);
        enc.set_progressive(progressive);
        if restart > 0 {
            enc.set_restart_interval(restart);
        }
        enc.encode(&rgb, w, h, jpeg_encoder::ColorType::Rgb)
            .expect("encodes");
        out
    }

    /// libjpeg-turbo itself decodes every kind of region of a clean file (a decline would
    /// hide behind zune-jpeg's fallback and the region test would still pass).
    #[test]
    fn clean_files_are_not_declined() {
        let l = DecodeLimits::default();
        for (progressive, restart) in [(false, 0), (true, 0), (false, 2)] {
            let f = jpeg(301, 203, progressive, restart);
            for r in [
                (0, 0, 301, 203),
                (0, 0, 40, 30),
                (100, 150, 60, 53),
                (261, 0, 40, 203),
                (17, 90, 1, 1),
            ] {
                let got = decode_region(&f, &l, &mut |_| RegionRequest::unscaled(r));
                assert!(got.is_ok(), "{progressive} {restart} {r:?}: {got:?}");
            }
        }
    }
}
