//! A PNG contact sheet of a batch, so a person can see what the pipeline produced.

use std::path::Path;

use augserve_core::spec::{DType, Layout, Normalize};
use augserve_core::Batch;

/// Writes up to 32 images of `batch` in a grid of 8 columns, undoing the normalisation.
pub fn write_preview(
    batch: &Batch,
    data: &[u8],
    norm: &Normalize,
    path: &Path,
) -> anyhow::Result<()> {
    let t = &batch.tensor;
    let (n, h, w) = match t.layout {
        Layout::Nchw => (t.shape[0], t.shape[2], t.shape[3]),
        Layout::Nhwc => (t.shape[0], t.shape[1], t.shape[2]),
    };
    let shown = n.min(32);
    anyhow::ensure!(shown > 0, "the batch has no images to preview");
    let cols = shown.min(8);
    let rows = shown.div_ceil(cols);
    let (gw, gh) = (cols * (w + 2), rows * (h + 2));
    let mut grid = image::RgbImage::new(gw as u32, gh as u32);
    let hw = h * w;
    for i in 0..shown {
        let (ox, oy) = ((i % cols) * (w + 2) + 1, (i / cols) * (h + 2) + 1);
        for y in 0..h {
            for x in 0..w {
                let mut px = [0u8; 3];
                for (c, v) in px.iter_mut().enumerate() {
                    let idx = match t.layout {
                        Layout::Nchw => (i * 3 + c) * hw + y * w + x,
                        Layout::Nhwc => (i * hw + y * w + x) * 3 + c,
                    };
                    let f = match t.dtype {
                        DType::Uint8 => f32::from(data[idx]),
                        DType::Float16 => {
                            let h = half::f16::from_le_bytes([data[idx * 2], data[idx * 2 + 1]])
                                .to_f32();
                            (h * norm.std[c] + norm.mean[c]) * 255.0
                        }
                        DType::Float32 => {
                            let b = [
                                data[idx * 4],
                                data[idx * 4 + 1],
                                data[idx * 4 + 2],
                                data[idx * 4 + 3],
                            ];
                            (f32::from_le_bytes(b) * norm.std[c] + norm.mean[c]) * 255.0
                        }
                    };
                    *v = f.round().clamp(0.0, 255.0) as u8;
                }
                grid.put_pixel((ox + x) as u32, (oy + y) as u32, image::Rgb(px));
            }
        }
    }
    grid.save(path)?;
    Ok(())
}
