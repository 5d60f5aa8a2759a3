//! NVRTC, loaded at run time (dlopen through libloading, as nvJPEG is): CUDA 13's
//! libnvrtc.so.13 or CUDA 12's libnvrtc.so.12, whichever the installed driver can run.
//!
//! Ours rather than cudarc's `nvrtc` module for three reasons: cudarc (built for CUDA 12)
//! opens CUDA 12 sonames only, so a host with only CUDA 13's NVRTC (today's PyTorch wheels)
//! ran on the CPU; it panics where the library is missing, or on a failed log fetch; and it
//! returns PTX only. PTX carries its ISA version, and a driver older than the NVRTC that
//! wrote it refuses to JIT it (CUDA_ERROR_UNSUPPORTED_PTX_VERSION), which is the usual case
//! when `scripts/run.sh` installs PyPI's newest CUDA 12 NVRTC next to an older CUDA 12
//! driver. A cubin (machine code for one architecture) has no such limit within a CUDA major
//! version, so the kernels are compiled to one for the device (`kernels::compile_for_device`).
//! cudarc still loads the result (`Ptx::from_binary`) and does everything else on the GPU.
//!
//! Signatures from `nvrtc.h`, the same in CUDA 12 and 13 for everything bound here;
//! `tests/nvrtc_compile.rs` compiles the kernels with both PyPI libraries (no GPU needed).

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::OnceLock;

use crate::cuda_libs::{self, CudaLib, Found};
use crate::GpuError;

type Status = c_int;
type Program = *mut c_void;

type Version = unsafe extern "C" fn(*mut c_int, *mut c_int) -> Status;
type GetErrorString = unsafe extern "C" fn(Status) -> *const c_char;
type GetNumSupportedArchs = unsafe extern "C" fn(*mut c_int) -> Status;
type GetSupportedArchs = unsafe extern "C" fn(*mut c_int) -> Status;
type CreateProgram = unsafe extern "C" fn(
    *mut Program,
    *const c_char,
    *const c_char,
    c_int,
    *const *const c_char,
    *const *const c_char,
) -> Status;
type CompileProgram = unsafe extern "C" fn(Program, c_int, *const *const c_char) -> Status;
type DestroyProgram = unsafe extern "C" fn(*mut Program) -> Status;
/// nvrtcGetProgramLogSize, nvrtcGetPTXSize, nvrtcGetCUBINSize.
type GetSize = unsafe extern "C" fn(Program, *mut usize) -> Status;
/// nvrtcGetProgramLog, nvrtcGetPTX, nvrtcGetCUBIN: fill a buffer of the size above.
type GetBytes = unsafe extern "C" fn(Program, *mut c_char) -> Status;

/// One loaded libnvrtc and the functions we use (valid while `_lib` lives).
pub struct Nvrtc {
    get_error_string: GetErrorString,
    create_program: CreateProgram,
    compile_program: CompileProgram,
    destroy_program: DestroyProgram,
    get_log_size: GetSize,
    get_log: GetBytes,
    get_ptx_size: GetSize,
    get_ptx: GetBytes,
    get_cubin_size: GetSize,
    get_cubin: GetBytes,
    /// (major, minor), from nvrtcVersion.
    pub version: (i32, i32),
    /// The real architectures it compiles for (`sm_XY` as XY: 75, 80, ..., 120).
    pub supported_archs: Vec<i32>,
    /// Where it was found.
    pub found: Found,
    _lib: libloading::Library,
}

/// The NVRTC to compile with, loaded once per process: the first the search finds that the
/// installed driver runs (any, without a driver), the dynamic loader's before the searched
/// folders' and the newest CUDA first in each (`cuda_libs::open_first`). Err: why none is
/// usable.
pub fn preferred() -> Result<&'static Nvrtc, String> {
    static PREFERRED: OnceLock<Result<Nvrtc, String>> = OnceLock::new();
    PREFERRED
        .get_or_init(|| Nvrtc::load(cuda_libs::driver_cuda_version(), None))
        .as_ref()
        .map_err(Clone::clone)
}

/// The newest NVRTC of a CUDA major version before `major`, for devices `preferred()` no
/// longer supports; loaded once per process.
pub fn older_than(major: i32) -> Result<&'static Nvrtc, String> {
    static OLDER: OnceLock<Result<Nvrtc, String>> = OnceLock::new();
    OLDER
        .get_or_init(|| Nvrtc::load(cuda_libs::driver_cuda_version(), Some(major - 1)))
        .as_ref()
        .map_err(Clone::clone)
}

/// What one compilation produced.
pub struct NvrtcOutput {
    pub ptx: String,
    /// Machine code, when compiled for a real architecture (`sm_XY`).
    pub cubin: Option<Vec<u8>>,
}

/// Destroys the program however compilation ends.
struct ProgramGuard<'a> {
    nvrtc: &'a Nvrtc,
    prog: Program,
}

impl Drop for ProgramGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: `prog` came from nvrtcCreateProgram and is destroyed once, here.
        unsafe { (self.nvrtc.destroy_program)(&mut self.prog) };
    }
}

impl Nvrtc {
    /// Loads the first libnvrtc the search finds that a driver running CUDA `driver` (e.g.
    /// (12, 4); None without a driver, when only compiling) can use, of CUDA `max_major` or
    /// older. Err: why none was found or usable.
    pub fn load(driver: Option<(i32, i32)>, max_major: Option<i32>) -> Result<Self, String> {
        cuda_libs::open_first(
            CudaLib::Nvrtc,
            driver,
            max_major,
            &|lib, found| Self::bind(lib, found),
            &|nvrtc| Some(nvrtc.version.0),
        )
    }

    /// Binds the functions of an opened libnvrtc.
    pub fn bind(lib: libloading::Library, found: Found) -> Result<Self, String> {
        fn get<T: Copy>(lib: &libloading::Library, sym: &str) -> Result<T, String> {
            // SAFETY: each symbol is looked up with the C signature nvrtc.h declares for it.
            unsafe { lib.get::<T>(sym.as_bytes()) }
                .map(|f| *f)
                .map_err(|e| format!("{sym}: {e}"))
        }
        let version_fn: Version = get(&lib, "nvrtcVersion")?;
        let num_archs: GetNumSupportedArchs = get(&lib, "nvrtcGetNumSupportedArchs")?;
        let archs_fn: GetSupportedArchs = get(&lib, "nvrtcGetSupportedArchs")?;
        let (mut major, mut minor) = (0, 0);
        // SAFETY: a plain query with out-pointers to locals.
        if unsafe { version_fn(&mut major, &mut minor) } != 0 {
            return Err("nvrtcVersion failed".into());
        }
        let mut count: c_int = 0;
        // SAFETY: as above.
        if unsafe { num_archs(&mut count) } != 0 || !(0..=1024).contains(&count) {
            return Err("nvrtcGetNumSupportedArchs failed".into());
        }
        let mut archs = vec![0 as c_int; count as usize];
        // SAFETY: the buffer holds the `count` entries nvrtc said it would write.
        if unsafe { archs_fn(archs.as_mut_ptr()) } != 0 {
            return Err("nvrtcGetSupportedArchs failed".into());
        }
        Ok(Nvrtc {
            get_error_string: get(&lib, "nvrtcGetErrorString")?,
            create_program: get(&lib, "nvrtcCreateProgram")?,
            compile_program: get(&lib, "nvrtcCompileProgram")?,
            destroy_program: get(&lib, "nvrtcDestroyProgram")?,
            get_log_size: get(&lib, "nvrtcGetProgramLogSize")?,
            get_log: get(&lib, "nvrtcGetProgramLog")?,
            get_ptx_size: get(&lib, "nvrtcGetPTXSize")?,
            get_ptx: get(&lib, "nvrtcGetPTX")?,
            get_cubin_size: get(&lib, "nvrtcGetCUBINSize")?,
            get_cubin: get(&lib, "nvrtcGetCUBIN")?,
            version: (major, minor),
            supported_archs: archs,
            found,
            _lib: lib,
        })
    }

    fn status_text(&self, status: Status) -> String {
        // SAFETY: nvrtcGetErrorString returns a static string for any status (or null).
        let text = unsafe { (self.get_error_string)(status) };
        if text.is_null() {
            format!("status {status}")
        } else {
            // SAFETY: non-null, NUL-terminated, static.
            unsafe { CStr::from_ptr(text) }
                .to_string_lossy()
                .into_owned()
        }
    }

    fn error(&self, call: &str, status: Status) -> GpuError {
        GpuError::Compile(format!("{call}: {}", self.status_text(status)))
    }

    /// Reads one of the program's outputs (`size` then `bytes`); the C string outputs end
    /// with a NUL, which is dropped.
    fn read(&self, prog: Program, size: GetSize, bytes: GetBytes) -> Result<Vec<u8>, Status> {
        let mut n = 0usize;
        // SAFETY: `prog` is a live program; out-pointer to a local.
        let s = unsafe { size(prog, &mut n) };
        if s != 0 {
            return Err(s);
        }
        let mut buf = vec![0u8; n];
        if n > 0 {
            // SAFETY: the buffer has the size nvrtc reported for this output.
            let s = unsafe { bytes(prog, buf.as_mut_ptr().cast()) };
            if s != 0 {
                return Err(s);
            }
        }
        Ok(buf)
    }

    /// Compiles one self-contained CUDA C++ source with `options`. Err carries the options
    /// and NVRTC's log.
    pub fn compile(&self, source: &str, options: &[String]) -> Result<NvrtcOutput, GpuError> {
        let c_source = CString::new(source)
            .map_err(|_| GpuError::Compile("kernel source contains a NUL byte".into()))?;
        let name = c"augserve_kernels.cu";
        let c_options = options
            .iter()
            .map(|o| CString::new(o.as_str()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| GpuError::Compile("an NVRTC option contains a NUL byte".into()))?;
        let option_ptrs: Vec<*const c_char> = c_options.iter().map(|o| o.as_ptr()).collect();
        let mut prog: Program = std::ptr::null_mut();
        // SAFETY: source and name are NUL-terminated and outlive the call; no headers (our
        // includes are inlined), so both header arrays may be null.
        let s = unsafe {
            (self.create_program)(
                &mut prog,
                c_source.as_ptr(),
                name.as_ptr(),
                0,
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        if s != 0 {
            return Err(self.error("nvrtcCreateProgram", s));
        }
        let guard = ProgramGuard { nvrtc: self, prog };
        // SAFETY: a live program; `option_ptrs` holds c_options.len() valid C strings.
        let s = unsafe {
            (self.compile_program)(guard.prog, option_ptrs.len() as c_int, option_ptrs.as_ptr())
        };
        if s != 0 {
            let log = self
                .read(guard.prog, self.get_log_size, self.get_log)
                .map(|l| c_text(&l))
                .unwrap_or_default();
            return Err(GpuError::Compile(format!(
                "nvrtcCompileProgram: {} (NVRTC {}.{}, options {}): {}",
                self.status_text(s),
                self.version.0,
                self.version.1,
                options.join(" "),
                log.trim()
            )));
        }
        let ptx = self
            .read(guard.prog, self.get_ptx_size, self.get_ptx)
            .map_err(|s| self.error("nvrtcGetPTX", s))?;
        let cubin = self
            .read(guard.prog, self.get_cubin_size, self.get_cubin)
            .map_err(|s| self.error("nvrtcGetCUBIN", s))?;
        Ok(NvrtcOutput {
            ptx: c_text(&ptx),
            // A virtual architecture (compute_XY) gives an empty cubin.
            cubin: (!cubin.is_empty()).then_some(cubin),
        })
    }
}

/// A C string output as text, without its terminating NUL.
fn c_text(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}
