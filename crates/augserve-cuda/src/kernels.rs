//! The kernel sources, embedded at build time, and their NVRTC compilation.

use cudarc::driver::DeviceRepr;
use cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions, Ptx};

use crate::GpuError;

/// `kernels/` files, by the name `#include` uses.
pub const SOURCES: &[(&str, &str)] = &[
    ("common.cuh", include_str!("../../../kernels/common.cuh")),
    ("resize.cuh", include_str!("../../../kernels/resize.cuh")),
    ("mix.cuh", include_str!("../../../kernels/mix.cuh")),
    ("color.cuh", include_str!("../../../kernels/color.cuh")),
    ("color.cu", include_str!("../../../kernels/color.cu")),
    ("ycbcr.cuh", include_str!("../../../kernels/ycbcr.cuh")),
    ("ycbcr.cu", include_str!("../../../kernels/ycbcr.cu")),
    ("resize.cu", include_str!("../../../kernels/resize.cu")),
    (
        "mix_normalize.cu",
        include_str!("../../../kernels/mix_normalize.cu"),
    ),
];

/// The `.cu` translation units that make up the module.
const UNITS: &[&str] = &["resize.cu", "mix_normalize.cu", "color.cu", "ycbcr.cu"];

/// Every `extern "C"` kernel of the module.
pub const KERNEL_NAMES: &[&str] = &[
    "resize_horizontal_u8",
    "resize_vertical_u8",
    "mix_normalize",
    "abs_dev_sums",
    "color_luma_sums",
    "color_apply",
    "ycbcr_to_rgb_u8",
];

/// Architecture used when no device tells us its own (CI compiles without a GPU).
pub const DEFAULT_ARCH: &str = "compute_80";

fn source(name: &str) -> Option<&'static str> {
    SOURCES.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

/// Inlines our own `#include "x"` lines (each header once), so NVRTC gets one self-contained
/// program and needs no include paths.
pub fn program_source() -> String {
    fn expand(name: &str, seen: &mut Vec<String>, out: &mut String) {
        if seen.iter().any(|s| s == name) {
            return;
        }
        seen.push(name.to_owned());
        for line in source(name).unwrap_or_default().lines() {
            let t = line.trim();
            if let Some(inc) = t
                .strip_prefix("#include \"")
                .and_then(|r| r.strip_suffix('"'))
            {
                expand(inc, seen, out);
            } else if t != "#pragma once" {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    let mut seen = Vec::new();
    let mut out = String::new();
    for unit in UNITS {
        expand(unit, &mut seen, &mut out);
    }
    out
}

/// Compiles the module to PTX for `arch` (e.g. `compute_90`). FMA contraction is off so the
/// float arithmetic equals the CPU's bit for bit.
pub fn compile_ptx(arch: &str) -> Result<Ptx, GpuError> {
    // cudarc panics when it cannot load libnvrtc; this finds it first (or says why not).
    crate::cuda_libs::locate_nvrtc().map_err(GpuError::NoNvrtc)?;
    let opts = CompileOptions {
        fmad: Some(false),
        options: vec![format!("--gpu-architecture={arch}"), "--std=c++17".into()],
        ..Default::default()
    };
    compile_ptx_with_opts(program_source(), opts).map_err(|e| GpuError::Compile(format!("{e:?}")))
}

/// Mirrors `ResizeDesc` in kernels/resize.cuh.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResizeDesc {
    pub src_off: u64,
    pub tmp_off: u64,
    pub hw_off: u64,
    pub vw_off: u64,
    pub src_w: i32,
    pub row_lo: i32,
    pub tmp_rows: i32,
    pub hk: i32,
    pub vk: i32,
    pub flip: i32,
    /// Source row length in pixels (the region's width, or the decoded image's).
    pub src_pitch: i32,
}

/// Mirrors `ColorDesc` in kernels/color.cuh: colour jitter of a region of a GPU-decoded image.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ColorDesc {
    pub offset: u64,
    pub width: i32,
    pub height: i32,
    pub brightness: f32,
    pub contrast: f32,
    pub saturation: f32,
    pub pitch: i32,
}

/// Mirrors `YccDesc` in kernels/ycbcr.cuh: one nvJPEG-decoded image, planar YCbCr at its
/// native chroma subsampling, to be converted to interleaved RGB.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct YccDesc {
    pub y_off: u64,
    pub cb_off: u64,
    pub cr_off: u64,
    pub dst_off: u64,
    pub width: i32,
    pub height: i32,
    pub y_pitch: i32,
    pub c_pitch: i32,
    pub c_width: i32,
    pub c_height: i32,
    pub h_shift: i32,
    pub v_shift: i32,
    pub gray: i32,
    pub pad_: i32,
}

/// Mirrors `MixDesc` in kernels/mix.cuh.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MixDesc {
    pub partner: i32,
    pub lam: f32,
    pub has_cut: i32,
    pub y0: i32,
    pub y1: i32,
    pub x0: i32,
    pub x1: i32,
}

// SAFETY: both are #[repr(C)] plain-old-data with the same layout as the CUDA structs
// (checked against the host build's sizeof in tests/host_arithmetic.rs).
unsafe impl DeviceRepr for ResizeDesc {}
// SAFETY: as above.
unsafe impl DeviceRepr for MixDesc {}
// SAFETY: as above.
unsafe impl DeviceRepr for ColorDesc {}
// SAFETY: as above.
unsafe impl DeviceRepr for YccDesc {}

/// Output dtype / layout codes of the kernels.
pub fn dtype_code(d: augserve_core::spec::DType) -> i32 {
    match d {
        augserve_core::spec::DType::Uint8 => 0,
        augserve_core::spec::DType::Float16 => 1,
        augserve_core::spec::DType::Float32 => 2,
    }
}

pub fn layout_code(l: augserve_core::spec::Layout) -> i32 {
    match l {
        augserve_core::spec::Layout::Nchw => 0,
        augserve_core::spec::Layout::Nhwc => 1,
    }
}
