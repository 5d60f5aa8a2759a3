//! The in-memory image type: interleaved RGB bytes, row-major (HWC).

/// An RGB image of `width * height` pixels, 3 bytes each, rows stored top to bottom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

impl RgbImage {
    pub fn new(width: u32, height: u32) -> Self {
        RgbImage {
            width,
            height,
            data: vec![0; width as usize * height as usize * 3],
        }
    }

    /// Wraps `data`; `None` when its length is not `width * height * 3`.
    pub fn from_vec(width: u32, height: u32, data: Vec<u8>) -> Option<Self> {
        (data.len() == width as usize * height as usize * 3).then_some(RgbImage {
            width,
            height,
            data,
        })
    }

    pub fn pixel_count(&self) -> usize {
        self.width as usize * self.height as usize
    }

    /// The region (x, y, w, h) of the image, without a copy when it is the whole image.
    pub fn into_region(self, (x, y, w, h): (u32, u32, u32, u32)) -> RgbImage {
        if (x, y, w, h) == (0, 0, self.width, self.height) {
            self
        } else {
            self.crop(x, y, w, h)
        }
    }

    /// Cuts (x, y, w, h) out of the image in its own buffer: each row moves towards the start,
    /// never over a row not yet moved (a new buffer would cost an allocation and its page
    /// faults). The spare capacity stays. The caller keeps the rectangle inside the image.
    pub fn crop_in_place(&mut self, (x, y, w, h): (u32, u32, u32, u32)) {
        debug_assert!(x + w <= self.width && y + h <= self.height);
        if (x, y, w, h) == (0, 0, self.width, self.height) {
            return;
        }
        let (stride, row) = (self.width as usize * 3, w as usize * 3);
        for r in 0..h as usize {
            let from = (y as usize + r) * stride + x as usize * 3;
            self.data.copy_within(from..from + row, r * row);
        }
        self.data.truncate(row * h as usize);
        (self.width, self.height) = (w, h);
    }

    /// Copies the rectangle `[x0, x0+w) x [y0, y0+h)`; the caller keeps it inside the image.
    pub fn crop(&self, x0: u32, y0: u32, w: u32, h: u32) -> RgbImage {
        debug_assert!(x0 + w <= self.width && y0 + h <= self.height);
        let mut out = Vec::with_capacity(w as usize * h as usize * 3);
        let stride = self.width as usize * 3;
        for y in y0..y0 + h {
            let start = y as usize * stride + x0 as usize * 3;
            out.extend_from_slice(&self.data[start..start + w as usize * 3]);
        }
        RgbImage {
            width: w,
            height: h,
            data: out,
        }
    }

    /// Mirrors the image left to right, in place.
    pub fn flip_horizontal(&mut self) {
        flip_rows(&mut self.data, self.width as usize);
    }
}

/// Mirrors each row of HWC u8 pixels (`width` a row) in place, pixel by pixel.
pub fn flip_rows(img: &mut [u8], width: usize) {
    let half = width / 2 * 3;
    for row in img.chunks_exact_mut(width * 3) {
        // The middle pixel of an odd width stays where it is.
        let (left, rest) = row.split_at_mut(half);
        let skip = rest.len() - half;
        let right = &mut rest[skip..];
        for (a, b) in left
            .chunks_exact_mut(3)
            .zip(right.chunks_exact_mut(3).rev())
        {
            a.swap_with_slice(b);
        }
    }
}

/// `src` mirrored row by row into `dst` (both HWC u8, `width` pixels a row).
pub fn copy_flipped(src: &[u8], dst: &mut [u8], width: usize) {
    for (s, d) in src
        .chunks_exact(width * 3)
        .zip(dst.chunks_exact_mut(width * 3))
    {
        mirror_row(s, d);
    }
}

/// One row of RGB pixels mirrored into `d`. Five pixels at a time with one byte shuffle
/// where the CPU has SSSE3: the pixel-by-pixel 3-byte moves were 3 % of the CPU path's time
/// per ImageNet-size image.
fn mirror_row(s: &[u8], d: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("ssse3") {
        // SAFETY: the CPU has SSSE3, checked just above.
        let done = unsafe { mirror_row_ssse3(s, d) };
        return mirror_row_scalar(&s[..s.len() - done], &mut d[done..]);
    }
    mirror_row_scalar(s, d);
}

/// The mirror of `s` into `d`, one pixel at a time.
fn mirror_row_scalar(s: &[u8], d: &mut [u8]) {
    for (sp, dp) in s.chunks_exact(3).rev().zip(d.chunks_exact_mut(3)) {
        dp.copy_from_slice(sp);
    }
}

/// Mirrors the first pixels of `d` (five at a time, from the end of `s`) and returns how
/// many bytes of `d` it wrote: the caller mirrors the rest, `s[..len - done]` into
/// `d[done..]`. Each step loads the 16 bytes that end at the next five source pixels and
/// stores 16 bytes, the 16th overwritten by the next step, so it stops while a whole
/// 16-byte store still fits in `d`.
///
/// # Safety
/// The CPU must support SSSE3.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "ssse3")]
#[allow(unused_unsafe)] // the intrinsics are safe here from Rust 1.87 on, unsafe before
unsafe fn mirror_row_ssse3(s: &[u8], d: &mut [u8]) -> usize {
    use std::arch::x86_64::*;
    let n = s.len().min(d.len());
    // Loaded bytes 1..16 are source pixels q = 0..5 (byte 1 + 3q + c); output pixel p takes
    // source pixel 4 - p.
    let mask = _mm_setr_epi8(13, 14, 15, 10, 11, 12, 7, 8, 9, 4, 5, 6, 1, 2, 3, -1);
    let mut done = 0;
    while done + 16 <= n {
        // The five source pixels end `done` bytes before the end of `s`: 16 <= n - done.
        let from = n - done - 16;
        // SAFETY: `from + 16 <= n <= s.len()` and `done + 16 <= n <= d.len()`: both
        // 16-byte accesses lie inside their slices.
        unsafe {
            let v = _mm_loadu_si128(s.as_ptr().add(from).cast());
            _mm_storeu_si128(d.as_mut_ptr().add(done).cast(), _mm_shuffle_epi8(v, mask));
        }
        done += 15;
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crop_and_flip() {
        let data: Vec<u8> = (0..4 * 2 * 3).map(|v| v as u8).collect();
        let img = RgbImage::from_vec(4, 2, data).unwrap();
        let c = img.crop(1, 1, 2, 1);
        assert_eq!(c.data, vec![15, 16, 17, 18, 19, 20]);
        let mut f = c.clone();
        f.flip_horizontal();
        assert_eq!(f.data, vec![18, 19, 20, 15, 16, 17]);
        assert!(RgbImage::from_vec(2, 2, vec![0; 11]).is_none());
    }
}
