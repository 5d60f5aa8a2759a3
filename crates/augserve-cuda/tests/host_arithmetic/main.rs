#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]
//! The kernels' per-pixel arithmetic, compiled for the host with the system C++ compiler
//! (kernels/host_check.cpp includes the same .cuh headers NVRTC compiles), checked against
//! the Rust reference on random inputs. Runs everywhere, no GPU needed. One test binary: the
//! shared helpers are here; resize, mix + normalise, colour and half in `arithmetic.rs`, the
//! YCbCr conversion and plane geometry in `ycbcr.rs`, libjpeg-turbo's native planes in
//! `turbojpeg.rs`.

use std::path::PathBuf;

#[path = "../common/mod.rs"]
mod common;

mod arithmetic;
mod turbojpeg;
mod ycbcr;

use augserve_core::image::RgbImage;
use augserve_core::ops::crop::CropBox;
use augserve_core::ops::mix::{plan_mix, MixPlan};
use augserve_core::ops::resize::resize_u8_reference;
use augserve_core::pipeline::{mix_normalize_batch, PreparedImage};
use augserve_core::rng::{keyed_rng, Purpose};
use augserve_core::spec::{DType, EpochMix, Layout, MixMode, OutputSpec, PipelineSpec, Size};
use augserve_cuda::kernels::{dtype_code, layout_code, MixDesc, ResizeDesc, YccDesc};
use augserve_cuda::{
    mix_descs, plan_resize, plan_resize_sources, ResizePlan, ResizeSource, WeightsOn,
};
use rand::{Rng, RngCore};

type ResizeBatchFn = unsafe extern "C" fn(
    *const u8,
    *mut u8,
    *mut u8,
    *const ResizeDesc,
    i32,
    *const i32,
    *const i32,
    *const i32,
    *const i32,
    *const i32,
    *const i32,
    i32,
    i32,
);
type MixFn = unsafe extern "C" fn(
    *const u8,
    *const MixDesc,
    *const f32,
    *const f32,
    i32,
    i32,
    *mut u8,
    i32,
    i32,
    i32,
    *mut f64,
);

/// Builds kernels/host_check.cpp into a shared library with the cc crate's compiler.
fn host_library() -> libloading::Library {
    let kernels = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../kernels");
    let out = tempfile::tempdir().unwrap().keep();
    let lib = out.join("libaugserve_host_check.so");
    let target = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    let compiler = cc::Build::new()
        .cpp(true)
        .target(&target)
        .host(&target)
        .opt_level(2)
        .cargo_metadata(false)
        .cargo_warnings(false)
        .get_compiler();
    let status = compiler
        .to_command()
        .args([
            "-shared",
            "-fPIC",
            "-std=c++17",
            "-ffp-contract=off",
            "-fno-strict-aliasing",
            "-Wall",
            "-Werror",
        ])
        .arg("-I")
        .arg(&kernels)
        .arg(kernels.join("host_check.cpp"))
        .arg("-o")
        .arg(&lib)
        .status()
        .expect("run the C++ compiler");
    assert!(status.success(), "host build of the kernels failed");
    // SAFETY: the library is ours, built just now; loading runs no initialisers of note.
    unsafe { libloading::Library::new(&lib).unwrap() }
}

fn sym<T: Copy>(lib: &libloading::Library, name: &[u8]) -> T {
    // SAFETY: each name is declared in host_check.cpp with the signature given as T.
    unsafe { *lib.get::<T>(name).unwrap() }
}

#[test]
fn struct_layouts_match_the_cuda_side() {
    let lib = host_library();
    let rs: extern "C" fn() -> u64 = sym(&lib, b"host_sizeof_resize_desc");
    let ms: extern "C" fn() -> u64 = sym(&lib, b"host_sizeof_mix_desc");
    assert_eq!(rs() as usize, std::mem::size_of::<ResizeDesc>());
    assert_eq!(ms() as usize, std::mem::size_of::<MixDesc>());
}

fn random_image(rng: &mut impl Rng, w: u32, h: u32) -> RgbImage {
    let mut data = vec![0u8; (w * h * 3) as usize];
    rng.fill_bytes(&mut data);
    // Smooth half the rows so the image has structure as well as noise.
    for (i, v) in data.iter_mut().enumerate() {
        if (i / (w as usize * 3)).is_multiple_of(2) {
            *v = ((i % 251) as u8).wrapping_add(*v / 8);
        }
    }
    RgbImage::from_vec(w, h, data).unwrap()
}

type YccFn = unsafe extern "C" fn(*const u8, *mut u8, *const YccDesc, i32);

fn zune_decode(bytes: &[u8], out: zune_core::colorspace::ColorSpace) -> (Vec<u8>, usize, usize) {
    use zune_core::bytestream::ZCursor;
    use zune_core::options::DecoderOptions;
    let opts = DecoderOptions::default().jpeg_set_out_colorspace(out);
    let mut dec = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), opts);
    let px = dec.decode().unwrap();
    let (w, h) = dec.dimensions().unwrap();
    (px, w, h)
}

/// Planar layout of one image (planes back to back from 0, RGB output at 0), as
/// `nvjpeg::plane_layout` makes it for nvJPEG's output.
fn ycc_desc(w: usize, h: usize, h_shift: i32, v_shift: i32, gray: bool) -> YccDesc {
    let (cw, ch) = (
        (w + h_shift as usize) >> h_shift,
        (h + v_shift as usize) >> v_shift,
    );
    YccDesc {
        y_off: 0,
        cb_off: (w * h) as u64,
        cr_off: (w * h + cw * ch) as u64,
        dst_off: 0,
        width: w as i32,
        height: h as i32,
        y_pitch: w as i32,
        c_pitch: cw as i32,
        c_width: cw as i32,
        c_height: ch as i32,
        h_shift,
        v_shift,
        gray: i32::from(gray),
        pad_: 0,
    }
}

fn host_convert(f: YccFn, planes: &[u8], d: &YccDesc) -> Vec<u8> {
    let mut out = vec![0u8; d.width as usize * d.height as usize * 3];
    assert!(planes.len() >= d.cr_off as usize + (d.c_width * d.c_height) as usize);
    // SAFETY: `planes` holds the three planes `d` describes (checked), `out` the RGB image.
    unsafe { f(planes.as_ptr(), out.as_mut_ptr(), d, 1) };
    out
}

/// The planes nvJPEG would deliver for a grayscale JPEG: luma, and (unused) chroma room.
fn gray_planes(jpeg: &[u8]) -> (Vec<u8>, YccDesc) {
    let (mut planes, w, h) = zune_decode(jpeg, zune_core::colorspace::ColorSpace::Luma);
    planes.resize(3 * w * h, 0);
    (planes, ycc_desc(w, h, 0, 0, true))
}

/// The `.jpg` files directly in `dir`, sorted (none if it is missing).
fn jpg_files(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "jpg"))
        .collect();
    files.sort();
    files
}

/// The planes nvJPEG would deliver for a JPEG whose chroma is flat over each chroma block
/// (8x8 chroma samples) with chroma halved per `h_shift`/`v_shift`: luma, and each block's
/// chroma value read from zune-jpeg's YCbCr output where the block's interpolation cannot
/// reach (its centre, or its visible part's far end when the image edge cuts it).
fn flat_chroma_planes(jpeg: &[u8], hs: i32, vs: i32) -> (Vec<u8>, YccDesc) {
    let (full, w, h) = zune_decode(jpeg, zune_core::colorspace::ColorSpace::YCbCr);
    let (bw, bh) = (8usize << hs, 8usize << vs); // luma pixels per chroma block
    let d = ycc_desc(w, h, hs, vs, false);
    let (cw, ch) = (d.c_width as usize, d.c_height as usize);
    let mut planes = vec![0u8; w * h + 2 * cw * ch];
    for i in 0..w * h {
        planes[i] = full[i * 3];
    }
    for cy in 0..ch {
        for cx in 0..cw {
            let (bx, by) = ((cx << hs) / bw, (cy << vs) / bh);
            let px = (bx * bw + bw / 2).min(w - 1);
            let py = (by * bh + bh / 2).min(h - 1);
            let p = (py * w + px) * 3;
            planes[w * h + cy * cw + cx] = full[p + 1];
            planes[w * h + cw * ch + cy * cw + cx] = full[p + 2];
        }
    }
    (planes, d)
}

/// The same image with its chroma replicated to full size (each luma pixel takes the chroma
/// sample it lies in), as a 4:4:4 layout: what nvJPEG's own RGB output does.
fn replicated_chroma(planes: &[u8], d: &YccDesc) -> (Vec<u8>, YccDesc) {
    if d.gray != 0 {
        return (planes.to_vec(), *d);
    }
    let (w, h) = (d.width as usize, d.height as usize);
    let mut out = planes[..w * h].to_vec();
    for off in [d.cb_off as usize, d.cr_off as usize] {
        for y in 0..h {
            for x in 0..w {
                let c = (y >> d.v_shift) * d.c_pitch as usize + (x >> d.h_shift);
                out.push(planes[off + c]);
            }
        }
    }
    (out, ycc_desc(w, h, 0, 0, false))
}
