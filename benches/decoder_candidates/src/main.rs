//! One-core decode rates of the JPEG decoder candidates for "decode only what the crop needs":
//!
//!     taskset -c 0 cargo run --release --manifest-path benches/decoder_candidates/Cargo.toml -- CORPUS [OUT.json]
//!
//! For every image of CORPUS a RandomResizedCrop box is drawn (scale 0.08-1, ratio 3/4-4/3,
//! torchvision's sampling, fixed seed), with the DCT-domain scale 1/k (k in 1, 2, 4, 8) that
//! keeps the crop at least 224 px on both sides. Each candidate decodes every image (after one
//! warm-up pass) to RGB:
//!   zune_whole         zune-jpeg 0.5, the whole image (augserve's decoder today)
//!   turbo_whole        libjpeg-turbo 3 (TurboJPEG API), the whole image
//!   turbo_crop         the same, only the crop region (tj3SetCroppingRegion: entropy decoding
//!                      stops after the crop's last MCU row, IDCT and colour skip the columns;
//!                      one iMCU column more on a side whose edge is on an iMCU
//!                      boundary, see EXTRA_IMCU; augserve's turbojpeg.rs does the same)
//!   turbo_scaled       the whole image at 1/k (tj3SetScalingFactor: a reduced IDCT)
//!   turbo_crop_scaled  the crop region at 1/k
//!   jpeg_decoder_scaled  image-rs jpeg-decoder 0.3, the whole image at 1/k (its `scale`)
//! It prints images/s per candidate and checks, for every image, that the crop region decoded
//! alone equals the same region of the whole decode, bit for bit (also at 1/k); with
//! OUT.json it writes both there. libjpeg-turbo is built from the source turbojpeg-sys bundles:
//! cmake and nasm must be on PATH (`scripts/fetch-build-tools.sh target/tools target/pyenv`
//! fetches both without root and prints their folder).

use std::ffi::c_int;
use std::path::{Path, PathBuf};
use std::time::Instant;

use turbojpeg_sys as tj;

const SIZE: f64 = 224.0;
/// iMCU columns decoded beyond a side of the crop whose edge is on an iMCU boundary: fancy
/// upsampling of the decoded area's first and last columns lacks the neighbouring chroma, so
/// those pixels would differ from the whole decode. An edge inside an iMCU needs none (the
/// area already reaches past it).
const EXTRA_IMCU: u32 = 1;

/// One image: its bytes, size, crop box (x, y, w, h) and DCT scale denominator.
struct Item {
    bytes: Vec<u8>,
    width: u32,
    height: u32,
    crop: (u32, u32, u32, u32),
    k: u32,
}

/// splitmix64: a fixed, dependency-free stream of uniforms for the crop boxes.
struct Rng(u64);
impl Rng {
    fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        lo + (hi - lo) * ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// torchvision's RandomResizedCrop.get_params, scale (0.08, 1), ratio (3/4, 4/3).
fn rrc_box(rng: &mut Rng, w: u32, h: u32) -> (u32, u32, u32, u32) {
    let area = f64::from(w) * f64::from(h);
    for _ in 0..10 {
        let target = area * rng.uniform(0.08, 1.0);
        let ar = rng.uniform((3f64 / 4.0).ln(), (4f64 / 3.0).ln()).exp();
        let cw = (target * ar).sqrt().round() as u32;
        let ch = (target / ar).sqrt().round() as u32;
        if cw > 0 && cw <= w && ch > 0 && ch <= h {
            let x = rng.uniform(0.0, f64::from(w - cw + 1)).floor() as u32;
            let y = rng.uniform(0.0, f64::from(h - ch + 1)).floor() as u32;
            return (x.min(w - cw), y.min(h - ch), cw, ch);
        }
    }
    let (cw, ch) = (w.min(h * 4 / 3), h.min(w * 4 / 3));
    ((w - cw) / 2, (h - ch) / 2, cw, ch)
}

fn scale_for(cw: u32, ch: u32) -> u32 {
    let mut k = 1;
    while k < 8 && f64::from(cw.min(ch)) / f64::from(2 * k) >= SIZE {
        k *= 2;
    }
    k
}

fn jpeg_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            jpeg_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "jpg") {
            out.push(p);
        }
    }
}

fn load(corpus: &Path) -> Vec<Item> {
    let mut files = Vec::new();
    jpeg_files(corpus, &mut files);
    files.sort();
    let mut rng = Rng(0);
    let mut items = Vec::new();
    for f in files {
        let Ok(bytes) = std::fs::read(&f) else {
            continue;
        };
        let mut d = zune_jpeg::JpegDecoder::new(zune_core::bytestream::ZCursor::new(&bytes));
        if d.decode_headers().is_err() {
            continue;
        }
        let Some((w, h)) = d.dimensions() else {
            continue;
        };
        let (width, height) = (w as u32, h as u32);
        let crop = rrc_box(&mut rng, width, height);
        let k = scale_for(crop.2, crop.3);
        items.push(Item {
            bytes,
            width,
            height,
            crop,
            k,
        });
    }
    items
}

fn zune_whole(it: &Item) -> usize {
    let opts = zune_core::options::DecoderOptions::default()
        .jpeg_set_out_colorspace(zune_core::colorspace::ColorSpace::RGB)
        .set_strict_mode(false);
    let mut d = zune_jpeg::JpegDecoder::new_with_options(
        zune_core::bytestream::ZCursor::new(&it.bytes),
        opts,
    );
    d.decode().map(|p| p.len()).unwrap_or(0)
}

fn jpeg_decoder_scaled(it: &Item) -> usize {
    let mut d = jpeg_decoder::Decoder::new(std::io::Cursor::new(&it.bytes));
    let (w, h) = (
        it.width.div_ceil(it.k) as u16,
        it.height.div_ceil(it.k) as u16,
    );
    if d.scale(w, h).is_err() {
        return 0;
    }
    d.decode().map(|p| p.len()).unwrap_or(0)
}

/// A TurboJPEG 3 decompressor handle.
struct Turbo(tj::tjhandle);
impl Turbo {
    fn new() -> Turbo {
        // SAFETY: tj3Init has no preconditions; a null handle is checked by every caller below.
        Turbo(unsafe { tj::tj3Init(tj::TJINIT_TJINIT_DECOMPRESS as c_int) })
    }

    /// Decodes `it` at 1/k (k = 1: full size), only the crop region when `crop`; bytes out.
    fn decode(&self, it: &Item, crop: bool, k: u32, buf: &mut Vec<u8>) -> usize {
        self.decode_at(it, crop, k, buf).map_or(0, |_| buf.len())
    }

    /// As `decode`; returns the region's origin and width in the (scaled) image, or None.
    fn decode_at(
        &self,
        it: &Item,
        crop: bool,
        k: u32,
        buf: &mut Vec<u8>,
    ) -> Option<(u32, u32, u32)> {
        let h = self.0;
        // SAFETY: h is a live decompressor handle; the source slice outlives the calls; the
        // destination holds region width * 3 * region height bytes, with pitch 0 = width * 3.
        unsafe {
            if h.is_null()
                || tj::tj3DecompressHeader(h, it.bytes.as_ptr(), it.bytes.len() as u64) != 0
            {
                return None;
            }
            let sf = tj::tjscalingfactor {
                num: 1,
                denom: k as c_int,
            };
            if tj::tj3SetScalingFactor(h, sf) != 0 {
                return None;
            }
            let scaled = |v: u32| v.div_ceil(k);
            let (sw, sh) = (scaled(it.width), scaled(it.height));
            let mut region = tj::tjregion {
                x: 0,
                y: 0,
                w: 0,
                h: 0,
            };
            let (mut ow, mut oh) = (sw, sh);
            if crop {
                let subsamp = tj::tj3Get(h, tj::TJPARAM_TJPARAM_SUBSAMP as c_int);
                let mcu_w = match subsamp {
                    1 | 2 => 16, // 4:2:2, 4:2:0
                    5 => 32,     // 4:1:1
                    _ => 8,
                };
                let imcu = (mcu_w / k).max(1);
                let (x, y, cw, ch) = it.crop;
                let margin = |v: u32| {
                    if v.is_multiple_of(imcu) {
                        EXTRA_IMCU
                    } else {
                        0
                    }
                };
                let (left, right) = (x / k, scaled(x + cw));
                let x0 = (left / imcu).saturating_sub(margin(left)) * imcu;
                let x1 = (right.div_ceil(imcu) * imcu + imcu * margin(right)).min(sw);
                let (y0, y1) = ((y / k).min(sh - 1), scaled(y + ch).min(sh));
                region = tj::tjregion {
                    x: x0 as c_int,
                    y: y0 as c_int,
                    w: (x1 - x0) as c_int,
                    h: (y1 - y0) as c_int,
                };
                (ow, oh) = (x1 - x0, y1 - y0);
            }
            if tj::tj3SetCroppingRegion(h, region) != 0 {
                return None;
            }
            buf.resize((ow * oh * 3) as usize, 0);
            let rc = tj::tj3Decompress8(
                h,
                it.bytes.as_ptr(),
                it.bytes.len() as u64,
                buf.as_mut_ptr(),
                0,
                tj::TJPF_TJPF_RGB as c_int,
            );
            (rc == 0).then_some((region.x as u32, region.y as u32, ow))
        }
    }
}
impl Drop for Turbo {
    fn drop(&mut self) {
        // SAFETY: the handle came from tj3Init and is destroyed once.
        unsafe { tj::tj3Destroy(self.0) }
    }
}

/// Bytes of the crop where the region decode differs from the whole decode, at 1/k:
/// (images that differ, bytes, largest difference).
fn region_mismatches(turbo: &Turbo, items: &[Item], scaled: bool) -> (usize, usize, u8) {
    let (mut whole, mut region) = (Vec::new(), Vec::new());
    let (mut images, mut bytes, mut max) = (0, 0, 0u8);
    for it in items {
        let k = if scaled { it.k } else { 1 };
        let (Some((_, _, sw)), Some((x0, y0, ow))) = (
            turbo.decode_at(it, false, k, &mut whole),
            turbo.decode_at(it, true, k, &mut region),
        ) else {
            continue;
        };
        let (sw, x0, y0, ow) = (sw as usize, x0 as usize, y0 as usize, ow as usize);
        // The crop's own columns, in the region's coordinates.
        let cx0 = (it.crop.0 / k) as usize - x0;
        let cx1 = ((it.crop.0 + it.crop.2).div_ceil(k) as usize - x0).min(ow);
        let mut differs = false;
        for (r, row) in region.chunks_exact(ow * 3).enumerate() {
            let start = ((y0 + r) * sw + x0) * 3;
            let ours = &row[cx0 * 3..cx1 * 3];
            let theirs = &whole[start + cx0 * 3..start + cx1 * 3];
            for (a, b) in ours.iter().zip(theirs) {
                if a != b {
                    bytes += 1;
                    max = max.max(a.abs_diff(*b));
                    differs = true;
                }
            }
        }
        images += usize::from(differs);
    }
    (images, bytes, max)
}

fn rate(items: &[Item], mut f: impl FnMut(&Item) -> usize) -> (f64, usize) {
    let failed = items.iter().filter(|it| f(it) == 0).count(); // warm-up, and decodable?
    let t = Instant::now();
    for it in items {
        std::hint::black_box(f(it));
    }
    (items.len() as f64 / t.elapsed().as_secs_f64(), failed)
}

fn main() {
    // The allocator settings augserve's binary runs with
    // (`augserve_server::memory::keep_freed_memory_for_reuse`): freed decoder memory (the
    // outputs, a progressive file's coefficient arrays) kept for the next image instead of
    // faulted in afresh, so "decode alone" is measured as the pipeline's decoder runs.
    // SAFETY: mallopt only changes the allocator's tuning; no other thread runs yet.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
    }
    let args: Vec<String> = std::env::args().collect();
    let Some(corpus) = args.get(1) else {
        eprintln!("usage: decoder-candidates CORPUS [OUT.json]");
        std::process::exit(2);
    };
    let items = load(Path::new(corpus));
    let mut json_checks: Vec<String> = Vec::new();
    let turbo = Turbo::new();
    let mut buf = Vec::new();
    let mut buf2 = Vec::new();
    let mut buf3 = Vec::new();
    let mut buf4 = Vec::new();
    let results = [
        ("zune_whole", rate(&items, zune_whole)),
        (
            "turbo_whole",
            rate(&items, |it| turbo.decode(it, false, 1, &mut buf)),
        ),
        (
            "turbo_crop",
            rate(&items, |it| turbo.decode(it, true, 1, &mut buf2)),
        ),
        (
            "turbo_scaled",
            rate(&items, |it| turbo.decode(it, false, it.k, &mut buf3)),
        ),
        (
            "turbo_crop_scaled",
            rate(&items, |it| turbo.decode(it, true, it.k, &mut buf4)),
        ),
        ("jpeg_decoder_scaled", rate(&items, jpeg_decoder_scaled)),
    ];
    let scaled = items.iter().filter(|it| it.k > 1).count();
    for (name, at_scale) in [
        ("crop region = whole's region", false),
        ("scaled crop = scaled whole's region", true),
    ] {
        let (n, b, m) = region_mismatches(&turbo, &items, at_scale);
        println!("  {name}: {n} images differ ({b} bytes, max {m} levels)");
        json_checks.push(format!(
            "\"{}\": [{n}, {b}, {m}]",
            if at_scale {
                "scaled_region_mismatch"
            } else {
                "region_mismatch"
            }
        ));
    }
    println!(
        "{corpus}: {} images, {scaled} decodable at 1/2 or smaller",
        items.len()
    );
    let mut json = format!("{{\n  \"corpus\": \"{corpus}\",\n  \"images\": {},\n  \"scaled_images\": {scaled},\n  \"images_per_s\": {{", items.len());
    for (i, (name, (ips, failed))) in results.iter().enumerate() {
        println!("  {name:20} {ips:8.1} images/s ({failed} failed)");
        json += &format!("{}\n    \"{name}\": {ips:.1}", if i > 0 { "," } else { "" });
    }
    json += &format!("\n  }},\n  {}\n}}\n", json_checks.join(",\n  "));
    if let Some(out) = args.get(2) {
        if let Err(e) = std::fs::write(out, json) {
            eprintln!("cannot write {out}: {e}");
            std::process::exit(1);
        }
    }
}
