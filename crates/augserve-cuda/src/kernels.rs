//! The kernel sources, embedded at build time, and their NVRTC compilation.

use cudarc::driver::DeviceRepr;
use cudarc::nvrtc::Ptx;

use crate::nvrtc::Nvrtc;
use crate::GpuError;

// SOURCES (every `kernels/` file, embedded) and UNITS (its `.cu` files), written by build.rs.
include!(concat!(env!("OUT_DIR"), "/kernel_sources.rs"));

/// Declares the kernels once: the enum a launch names them by, and the list the loader and
/// the tests walk. Adding a kernel: its `extern "C"` function in a `kernels/*.cu` unit, and one
/// line here.
macro_rules! kernels {
    ($($(#[doc = $doc:literal])* $variant:ident => $name:literal,)+) => {
        /// A kernel of the module, by what it does.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Kernel {
            $($(#[doc = $doc])* $variant,)+
        }

        impl Kernel {
            /// Every kernel, in the order `GpuDevice` loads them (`Kernel as usize`).
            pub const ALL: &'static [Kernel] = &[$(Kernel::$variant,)+];

            /// The kernel's `extern "C"` name.
            pub fn name(self) -> &'static str {
                match self {
                    $(Kernel::$variant => $name,)+
                }
            }
        }

        /// Every `extern "C"` kernel of the module.
        pub const KERNEL_NAMES: &[&str] = &[$($name,)+];
    };
}

kernels! {
    /// The resize weights of every image, axis and output pixel (resize.cu).
    ResizeWeights => "resize_weights",
    /// Horizontal pass of the u8 resize (resize.cu).
    ResizeH => "resize_horizontal_u8",
    /// Vertical pass of the u8 resize, flip fused (resize.cu).
    ResizeV => "resize_vertical_u8",
    /// Mixup/cutmix + normalisation into the output tensor, with its sums (mix_normalize.cu).
    MixNormalize => "mix_normalize",
    /// Sums of absolute deviations from the mean, for the MAD (mix_normalize.cu).
    AbsDev => "abs_dev_sums",
    /// Per-image luma sums for contrast jitter on the device (color.cu).
    ColorLumaSums => "color_luma_sums",
    /// Brightness, contrast and saturation jitter on the device (color.cu).
    ColorApply => "color_apply",
    /// nvJPEG's planar YCbCr to interleaved RGB, zune-jpeg's arithmetic (ycbcr.cu).
    YcbcrToRgb => "ycbcr_to_rgb_u8",
}

/// Architecture used when no device tells us its own (CI compiles without a GPU): 8.0, the
/// oldest that CUDA 12's and 13's NVRTC both support and the A100's.
pub const DEFAULT_ARCH: u32 = 80;

/// What the kernels are compiled to for an architecture (`major * 10 + minor`, e.g. 90).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Machine code for `sm_XY`: loads on any driver of the NVRTC's CUDA major version or
    /// later, and nothing is compiled at load time.
    Cubin(u32),
    /// PTX for `compute_XY`, which the driver compiles when loading it; only a driver at
    /// least as new as the NVRTC accepts it.
    Ptx(u32),
}

impl Target {
    /// The NVRTC `--gpu-architecture` value.
    pub fn arch_option(self) -> String {
        match self {
            Target::Cubin(a) => format!("sm_{a}"),
            Target::Ptx(a) => format!("compute_{a}"),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Cubin(a) => write!(f, "sm_{a} machine code"),
            Target::Ptx(a) => write!(f, "compute_{a} PTX"),
        }
    }
}

/// The target for a device of architecture `arch` given the real architectures an NVRTC
/// supports: its cubin when listed; a device newer than the NVRTC knows gets PTX for the
/// newest architecture it does know (the driver, necessarily newer than that NVRTC then,
/// compiles it); None for a device older than all of them.
pub fn target_for(arch: u32, supported: &[i32]) -> Option<Target> {
    if supported.iter().any(|&a| a as u32 == arch) {
        return Some(Target::Cubin(arch));
    }
    supported
        .iter()
        .map(|&a| a as u32)
        .filter(|&a| a < arch)
        .max()
        .map(Target::Ptx)
}

/// The compiled module, ready for `CudaContext::load_module`, and how it was made.
pub struct CompiledKernels {
    pub module: Ptx,
    /// The PTX text, also when `module` holds the cubin (kept for inspection and tests).
    pub ptx: String,
    /// The machine code `module` holds, for a cubin target.
    pub cubin: Option<Vec<u8>>,
    pub target: Target,
    /// The NVRTC that compiled it: (major, minor) and where it was found.
    pub nvrtc_version: (i32, i32),
    pub nvrtc_found: crate::cuda_libs::Found,
}

impl CompiledKernels {
    /// "sm_90 machine code by NVRTC 12.9" style.
    pub fn describe(&self) -> String {
        let jit = match self.target {
            Target::Cubin(_) => "",
            Target::Ptx(_) => ", which the driver compiles at load",
        };
        format!(
            "{} by NVRTC {}.{}{jit}",
            self.target, self.nvrtc_version.0, self.nvrtc_version.1
        )
    }
}

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

/// Compiles the module for `target` with `nvrtc`. FMA contraction is off so the float
/// arithmetic equals the CPU's bit for bit.
pub fn compile_with(nvrtc: &Nvrtc, target: Target) -> Result<CompiledKernels, GpuError> {
    let options = [
        "--fmad=false".to_owned(),
        format!("--gpu-architecture={}", target.arch_option()),
        "--std=c++17".to_owned(),
    ];
    let out = nvrtc.compile(&program_source(), &options)?;
    let module = match (target, &out.cubin) {
        (Target::Cubin(_), Some(cubin)) => Ptx::from_binary(cubin.clone()),
        (Target::Cubin(a), None) => {
            return Err(GpuError::Compile(format!("NVRTC gave no cubin for sm_{a}")))
        }
        (Target::Ptx(_), _) => Ptx::from_src(out.ptx.clone()),
    };
    Ok(CompiledKernels {
        module,
        ptx: out.ptx,
        cubin: out.cubin.filter(|_| matches!(target, Target::Cubin(_))),
        target,
        nvrtc_version: nvrtc.version,
        nvrtc_found: nvrtc.found.clone(),
    })
}

/// Compiles the module for a device of compute capability `cc`: with the preferred NVRTC
/// (`nvrtc::preferred`), or an older one where it no longer supports the device (CUDA 13
/// dropped architectures before 7.5).
pub fn compile_for_device(cc: (i32, i32)) -> Result<CompiledKernels, GpuError> {
    let arch = (cc.0 * 10 + cc.1).max(0) as u32;
    let preferred = crate::nvrtc::preferred().map_err(GpuError::NoNvrtc)?;
    if let Some(target) = target_for(arch, &preferred.supported_archs) {
        return compile_with(preferred, target);
    }
    let too_old = format!(
        "compute capability {}.{} is older than NVRTC {}.{} supports ({})",
        cc.0, cc.1, preferred.version.0, preferred.version.1, preferred.found
    );
    let older = crate::nvrtc::older_than(preferred.version.0)
        .map_err(|e| GpuError::NoNvrtc(format!("{too_old}, and no older NVRTC: {e}")))?;
    let target = target_for(arch, &older.supported_archs).ok_or_else(|| {
        GpuError::NoNvrtc(format!(
            "{too_old}, and NVRTC {}.{} does not support it either",
            older.version.0, older.version.1
        ))
    })?;
    compile_with(older, target)
}

/// Compiles the module for `target` with the preferred NVRTC (no device involved: CI
/// and tests).
pub fn compile(target: Target) -> Result<CompiledKernels, GpuError> {
    compile_with(
        crate::nvrtc::preferred().map_err(GpuError::NoNvrtc)?,
        target,
    )
}

/// Mirrors `ResizeDesc` in kernels/resize.cuh.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq)]
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
    pub src_h: i32,
    /// The crop box in the region, what `Coeffs::new` takes per axis (`resize_weights`).
    pub crop_x0: f32,
    pub crop_x1: f32,
    pub crop_y0: f32,
    pub crop_y1: f32,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_gets_its_machine_code_else_the_newest_ptx_below_it() {
        // CUDA 12.9's NVRTC and CUDA 13.5's lists, as nvrtcGetSupportedArchs gave them.
        let cu12 = [
            50, 52, 53, 60, 61, 62, 70, 72, 75, 80, 86, 87, 89, 90, 100, 101, 103, 120, 121,
        ];
        let cu13 = [75, 80, 86, 87, 88, 89, 90, 100, 103, 107, 110, 120, 121];
        assert_eq!(target_for(90, &cu12), Some(Target::Cubin(90)));
        assert_eq!(target_for(90, &cu13), Some(Target::Cubin(90)));
        assert_eq!(target_for(70, &cu12), Some(Target::Cubin(70)));
        // Older than CUDA 13 supports: none (compile_for_device then tries CUDA 12's).
        assert_eq!(target_for(70, &cu13), None);
        // Newer than the NVRTC knows (a future GPU): the newest PTX, for the driver to compile.
        assert_eq!(target_for(130, &cu13), Some(Target::Ptx(121)));
        // Between listed ones (compute 10.1 is not in CUDA 13's list): the next one down.
        assert_eq!(target_for(101, &cu13), Some(Target::Ptx(100)));
        assert_eq!(Target::Cubin(90).arch_option(), "sm_90");
        assert_eq!(Target::Ptx(121).arch_option(), "compute_121");
    }
}
