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
        for (sp, dp) in s.chunks_exact(3).rev().zip(d.chunks_exact_mut(3)) {
            dp.copy_from_slice(sp);
        }
    }
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
