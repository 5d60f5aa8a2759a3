//! Finding the CUDA libraries opened at run time (libnvrtc, libnvjpeg) where the dynamic
//! loader does not look by itself.
//!
//! Opened by file name alone, LD_LIBRARY_PATH and the loader's cache would decide. A GPU
//! host often has them elsewhere: in the CUDA toolkit's folder, or in PyPI's NVIDIA wheels
//! of a Python environment (`site-packages/nvidia/cuda_nvrtc/lib`, which PyTorch's CUDA 12
//! builds bring; `nvidia/nvjpeg/lib`; CUDA 13's wheels share `nvidia/cu13/lib`), or where
//! `scripts/run.sh` installed them (`AUGSERVE_CUDA_LIB_DIRS`).
//! When the loader cannot find a library by name, it is looked for in those folders and
//! opened by its full path (`open_first`).
//!
//! CUDA 13's libraries need a CUDA 13 driver; CUDA 12's run on 12.x and 13.x drivers. Both
//! are looked for, the newest the installed driver can run first (`driver_cuda_version`).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The variable naming extra folders to search (`:`-separated), first.
pub const LIB_DIRS_VAR: &str = "AUGSERVE_CUDA_LIB_DIRS";

/// A CUDA library augserve opens at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CudaLib {
    Nvrtc,
    NvJpeg,
}

impl CudaLib {
    /// File names, newest CUDA first (CUDA 13's and 12's runtimes; the unversioned link of a
    /// toolkit's development files).
    pub fn file_names(self) -> &'static [&'static str] {
        match self {
            CudaLib::Nvrtc => &["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"],
            // Newest CUDA first (CUDA 13 and 12 runtimes; the unversioned dev link).
            CudaLib::NvJpeg => &["libnvjpeg.so.13", "libnvjpeg.so.12", "libnvjpeg.so"],
        }
    }

    /// PyPI's wheel that carries it: CUDA 12's, which runs on CUDA 12 and 13 drivers.
    pub fn pip_package(self) -> &'static str {
        match self {
            CudaLib::Nvrtc => "nvidia-cuda-nvrtc-cu12",
            CudaLib::NvJpeg => "nvidia-nvjpeg-cu12",
        }
    }

    /// The folders of PyPI's wheels for it under `site-packages/nvidia/`: CUDA 12 wheels have
    /// one per package, CUDA 13 wheels share `cu13`.
    fn wheel_folders(self) -> &'static [&'static str] {
        match self {
            CudaLib::Nvrtc => &["cuda_nvrtc", "cu13"],
            CudaLib::NvJpeg => &["nvjpeg", "cu13"],
        }
    }

    fn short_name(self) -> &'static str {
        match self {
            CudaLib::Nvrtc => "libnvrtc",
            CudaLib::NvJpeg => "libnvjpeg",
        }
    }
}

/// The CUDA major version a file name says it belongs to ("libnvrtc.so.13": 13); None for
/// the unversioned link.
pub fn soname_major(name: &str) -> Option<i32> {
    let (_, version) = name.rsplit_once(".so.")?;
    version.split('.').next()?.parse().ok()
}

/// The CUDA version (major, minor) the installed driver supports, None without libcuda.
/// Cached: the driver does not change under a running process.
pub fn driver_cuda_version() -> Option<(i32, i32)> {
    static VERSION: OnceLock<Option<(i32, i32)>> = OnceLock::new();
    *VERSION.get_or_init(|| {
        // SAFETY: only tries to dlopen libcuda by its usual names; cudarc panics on a driver
        // call without it, so this probe comes first.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return None;
        }
        let mut v: std::ffi::c_int = 0;
        // SAFETY: libcuda is present (just checked); cuDriverGetVersion needs no cuInit and
        // writes one int.
        let status = unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut v) };
        (status == cudarc::driver::sys::CUresult::CUDA_SUCCESS && v > 0)
            .then_some((v / 1000, v % 1000 / 10))
    })
}

/// The newest CUDA major version a library may belong to: a CUDA 13 library needs a CUDA
/// 13 driver, CUDA 12's runs on any 12.x or later one (CUDA's minor version compatibility,
/// which covers cubins but not PTX: see `nvrtc`); and at most `max_major`.
pub fn major_limit(driver: Option<(i32, i32)>, max_major: Option<i32>) -> Option<i32> {
    match (driver.map(|d| d.0), max_major) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Opens the first usable `lib`: by name through the dynamic loader (file names newest
/// first), else from the searched folders (`search_dirs`), skipping the CUDA versions the
/// driver cannot run (`major_limit`). `bind` checks the library and takes what it needs;
/// `major_of` says the CUDA major version of what it bound (for the unversioned link), when
/// known. Err: why none was usable, with what was tried.
pub fn open_first<T>(
    lib: CudaLib,
    driver: Option<(i32, i32)>,
    max_major: Option<i32>,
    bind: &dyn Fn(libloading::Library, Found) -> Result<T, String>,
    major_of: &dyn Fn(&T) -> Option<i32>,
) -> Result<T, String> {
    let limit = major_limit(driver, max_major);
    let allowed = |name: &str| match (soname_major(name), limit) {
        (Some(m), Some(l)) => m <= l,
        _ => true,
    };
    let mut problems: Vec<String> = Vec::new();
    let try_bind = |opened: Result<libloading::Library, libloading::Error>,
                    found: Found,
                    problems: &mut Vec<String>| {
        let bound = opened
            .map_err(|e| e.to_string())
            .and_then(|l| bind(l, found.clone()));
        match bound {
            Ok(t) => match (major_of(&t), limit) {
                (Some(m), Some(l)) if m > l => {
                    problems.push(format!("{found} is CUDA {m}, {}", too_new(driver, l)));
                    None
                }
                _ => Some(t),
            },
            Err(e) => {
                problems.push(format!("{found}: {e}"));
                None
            }
        }
    };
    for name in lib.file_names().iter().copied().filter(|n| allowed(n)) {
        // SAFETY: loading a CUDA library runs its initialisers, which only set up its own
        // state. A name the loader does not find is simply the next one's turn.
        if let Ok(opened) = unsafe { libloading::Library::new(name) } {
            if let Some(t) = try_bind(Ok(opened), Found::ByLoader(name.to_owned()), &mut problems) {
                return Ok(t);
            }
        }
    }
    let dirs = search_dirs(lib, &|v| std::env::var_os(v));
    for path in files_in(lib, &dirs) {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if !allowed(&name) {
            let major = soname_major(&name).unwrap_or_default();
            problems.push(format!(
                "{} is CUDA {major}, {}",
                path.display(),
                too_new(driver, limit.unwrap_or_default())
            ));
            continue;
        }
        // SAFETY: as above.
        let opened = unsafe { libloading::Library::new(&path) };
        if let Some(t) = try_bind(opened, Found::At(path), &mut problems) {
            return Ok(t);
        }
    }
    if problems.is_empty() {
        return Err(not_found_reason(lib, &dirs));
    }
    let hint = match driver {
        // CUDA 12's libraries are the oldest augserve binds (cubins need NVRTC 11.2+, the
        // kernels CUDA 12).
        Some((major, minor)) if major < 12 => format!(
            "the driver runs CUDA {major}.{minor}; augserve's GPU path needs a driver for CUDA \
             12 or later"
        ),
        _ => install_hint(lib),
    };
    Err(format!(
        "no usable {}: {}; {hint}",
        lib.short_name(),
        problems.join("; ")
    ))
}

/// Why a library of CUDA version `> limit` is skipped.
fn too_new(driver: Option<(i32, i32)>, limit: i32) -> String {
    match driver {
        Some((major, minor)) if major <= limit => {
            format!("newer than the driver, which runs CUDA {major}.{minor}")
        }
        _ => format!("and CUDA {limit} or older is asked for"),
    }
}

/// Folders searched for `lib`, in order: `AUGSERVE_CUDA_LIB_DIRS`, the CUDA toolkit
/// (`CUDA_HOME`, `CUDA_PATH`, /usr/local/cuda), then the NVIDIA wheels of the Python
/// environments a GPU host usually has (the active virtualenv or conda environment, the
/// user's, the system's, /opt/conda). `env` reads a variable (a parameter for tests).
pub fn search_dirs(lib: CudaLib, env: &dyn Fn(&str) -> Option<OsString>) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(list) = env(LIB_DIRS_VAR) {
        dirs.extend(std::env::split_paths(&list).filter(|p| !p.as_os_str().is_empty()));
    }
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Some(root) = env(var).filter(|r| !r.is_empty()) {
            let root = PathBuf::from(root);
            dirs.push(root.join("lib64"));
            dirs.push(root.join("lib"));
        }
    }
    dirs.push(PathBuf::from("/usr/local/cuda/lib64"));
    let mut prefixes: Vec<PathBuf> = ["VIRTUAL_ENV", "CONDA_PREFIX"]
        .into_iter()
        .filter_map(|v| env(v).filter(|p| !p.is_empty()).map(PathBuf::from))
        .collect();
    if let Some(home) = env("HOME").filter(|h| !h.is_empty()) {
        prefixes.push(PathBuf::from(home).join(".local"));
    }
    prefixes.extend(["/usr/local", "/usr", "/opt/conda"].map(PathBuf::from));
    for prefix in prefixes {
        for packages in site_packages(&prefix) {
            for folder in lib.wheel_folders() {
                dirs.push(packages.join("nvidia").join(folder).join("lib"));
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    dirs.retain(|d| seen.insert(d.clone()));
    dirs
}

/// `prefix/lib/python3*/{site,dist}-packages`, newest Python first.
fn site_packages(prefix: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(prefix.join("lib")) else {
        return Vec::new();
    };
    let mut pythons: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("python3"))
        .map(|e| e.path())
        .collect();
    // "python3.12" before "python3.9": compare the minor version as a number.
    pythons.sort_by_key(|p| {
        let name = p
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let minor: u32 = name
            .strip_prefix("python3.")
            .and_then(|m| m.parse().ok())
            .unwrap_or(0);
        std::cmp::Reverse(minor)
    });
    pythons
        .into_iter()
        .flat_map(|p| [p.join("site-packages"), p.join("dist-packages")])
        .collect()
}

/// The files of `lib` in `dirs`, in folder order, then name order (newest CUDA first).
pub fn files_in(lib: CudaLib, dirs: &[PathBuf]) -> Vec<PathBuf> {
    dirs.iter()
        .flat_map(|d| lib.file_names().iter().map(move |n| d.join(n)))
        .filter(|p| p.is_file())
        .collect()
}

/// Where a library came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// The dynamic loader found it by this name (LD_LIBRARY_PATH, its cache, system folders).
    ByLoader(String),
    /// Found in a searched folder and opened by its full path.
    At(PathBuf),
}

impl Found {
    /// The file name the loader found, or the full path.
    pub fn file(&self) -> String {
        match self {
            Found::ByLoader(name) => name.clone(),
            Found::At(p) => p.to_string_lossy().into_owned(),
        }
    }
}

impl std::fmt::Display for Found {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Found::ByLoader(name) => write!(f, "{name} (found by the dynamic loader)"),
            Found::At(p) => write!(f, "{}", p.display()),
        }
    }
}

fn install_hint(lib: CudaLib) -> String {
    format!(
        "install the CUDA toolkit, or `pip install {}` (scripts/run.sh does)",
        lib.pip_package()
    )
}

/// Why a library was not found (the folders searched besides the loader's path) and how to
/// install it.
pub fn not_found_reason(lib: CudaLib, dirs: &[PathBuf]) -> String {
    format!(
        "{} not found by the dynamic loader (LD_LIBRARY_PATH, ld.so.cache) nor in {} other \
         folders (the CUDA toolkit's, Python environments' NVIDIA wheels, {LIB_DIRS_VAR}); {}",
        lib.file_names().join(" / "),
        dirs.len(),
        install_hint(lib)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The file `open_first` tries first among the folders.
    fn find_in(lib: CudaLib, dirs: &[PathBuf]) -> Option<PathBuf> {
        files_in(lib, dirs).into_iter().next()
    }

    fn touch(p: &Path) {
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, b"").expect("write");
    }

    #[test]
    fn search_follows_the_variable_then_the_toolkit_then_python_environments() {
        let root = tempfile::tempdir().expect("tempdir");
        let r = root.path();
        let venv = r.join("venv");
        let home = r.join("home");
        for py in ["python3.9", "python3.12", "python2.7"] {
            std::fs::create_dir_all(venv.join("lib").join(py)).expect("mkdir");
        }
        std::fs::create_dir_all(home.join(".local/lib/python3.11")).expect("mkdir");
        let env = |v: &str| -> Option<OsString> {
            match v {
                LIB_DIRS_VAR => {
                    Some(format!("{}::{}", r.join("a").display(), r.join("b").display()).into())
                }
                "CUDA_HOME" => Some(r.join("cuda").into()),
                "CUDA_PATH" => Some("".into()),
                "VIRTUAL_ENV" => Some(venv.clone().into()),
                "HOME" => Some(home.clone().into()),
                _ => None,
            }
        };
        let dirs = search_dirs(CudaLib::Nvrtc, &env);
        let wheel = |base: &Path, py: &str, kind: &str, folder: &str| {
            let packages = base.join("lib").join(py).join(kind);
            packages.join("nvidia").join(folder).join("lib")
        };
        let nvrtc = |base: &Path, py: &str, kind: &str, folder: &str| wheel(base, py, kind, folder);
        assert_eq!(
            dirs[..11],
            [
                r.join("a"),
                r.join("b"),
                r.join("cuda/lib64"),
                r.join("cuda/lib"),
                PathBuf::from("/usr/local/cuda/lib64"),
                nvrtc(&venv, "python3.12", "site-packages", "cuda_nvrtc"),
                nvrtc(&venv, "python3.12", "site-packages", "cu13"),
                nvrtc(&venv, "python3.12", "dist-packages", "cuda_nvrtc"),
                nvrtc(&venv, "python3.12", "dist-packages", "cu13"),
                nvrtc(&venv, "python3.9", "site-packages", "cuda_nvrtc"),
                nvrtc(&venv, "python3.9", "site-packages", "cu13"),
            ]
        );
        let local = nvrtc(
            &home.join(".local"),
            "python3.11",
            "site-packages",
            "cuda_nvrtc",
        );
        assert_eq!(dirs[13], local);
        assert!(!dirs.iter().any(|d| d.to_string_lossy().contains("python2")));
        let reason = not_found_reason(CudaLib::Nvrtc, &dirs);
        assert!(
            reason.contains("libnvrtc.so.13 / libnvrtc.so.12"),
            "{reason}"
        );
        assert!(
            reason.contains("pip install nvidia-cuda-nvrtc-cu12"),
            "{reason}"
        );

        // libnvjpeg: the CUDA 12 wheel's folder, then the CUDA 13 wheels' shared one. The
        // first folder holding one of the names wins, whatever comes later.
        let dirs = search_dirs(CudaLib::NvJpeg, &env);
        let (cu12, cu13) = (
            wheel(&venv, "python3.9", "site-packages", "nvjpeg"),
            wheel(&venv, "python3.9", "site-packages", "cu13"),
        );
        let at = |d: &PathBuf| dirs.iter().position(|x| x == d).expect("searched");
        assert_eq!(at(&cu13), at(&cu12) + 1);
        assert_eq!(find_in(CudaLib::NvJpeg, &dirs), None);
        let in_cu13 = cu13.join("libnvjpeg.so.13");
        touch(&in_cu13);
        assert_eq!(find_in(CudaLib::NvJpeg, &dirs), Some(in_cu13));
        let in_toolkit = r.join("cuda/lib64/libnvjpeg.so.12");
        touch(&in_toolkit);
        assert_eq!(find_in(CudaLib::NvJpeg, &dirs), Some(in_toolkit.clone()));
        // Within a folder, the newest CUDA first.
        let newer_in_toolkit = r.join("cuda/lib64/libnvjpeg.so.13");
        touch(&newer_in_toolkit);
        assert_eq!(
            files_in(CudaLib::NvJpeg, &dirs),
            [newer_in_toolkit, in_toolkit, cu13.join("libnvjpeg.so.13")]
        );
    }

    #[test]
    fn a_library_runs_on_a_driver_of_its_cuda_major_version_or_later() {
        assert_eq!(soname_major("libnvrtc.so.13"), Some(13));
        assert_eq!(soname_major("/x/libnvjpeg.so.12.4.0"), Some(12));
        assert_eq!(soname_major("libnvrtc.so"), None);
        assert_eq!(major_limit(Some((12, 4)), None), Some(12));
        assert_eq!(major_limit(Some((13, 0)), Some(12)), Some(12));
        assert_eq!(major_limit(None, Some(12)), Some(12));
        assert_eq!(major_limit(None, None), None);
        assert_eq!(
            too_new(Some((12, 4)), 12),
            "newer than the driver, which runs CUDA 12.4"
        );
        assert_eq!(
            too_new(Some((13, 0)), 12),
            "and CUDA 12 or older is asked for"
        );
    }
}
