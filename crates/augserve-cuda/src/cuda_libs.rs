//! Finding the CUDA libraries opened at run time (libnvrtc, libnvjpeg) where the dynamic
//! loader does not look by itself.
//!
//! cudarc and [`crate::nvjpeg::NvJpeg::load`] open them by file name, so LD_LIBRARY_PATH and
//! the loader's cache decide. A GPU host often has them elsewhere: in the CUDA toolkit's
//! folder, or in PyPI's NVIDIA wheels of a Python environment (`site-packages/nvidia/
//! cuda_nvrtc/lib`, which PyTorch's CUDA 12 builds bring; `nvidia/nvjpeg/lib`, CUDA 13's
//! `nvidia/cu13/lib`), or where `scripts/run.sh` installed them (`AUGSERVE_CUDA_LIB_DIRS`).
//! When the loader cannot find a library by name, it is looked for in those folders and
//! opened once by its full path; glibc answers later opens of the same soname with the
//! object already loaded, so cudarc's by-name open then succeeds too.

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
    /// File names, preferred first. cudarc is built for CUDA 12 (feature `cuda-12060`), so
    /// it opens libnvrtc by the CUDA 12 soname only.
    pub fn file_names(self) -> &'static [&'static str] {
        match self {
            CudaLib::Nvrtc => &["libnvrtc.so.12"],
            CudaLib::NvJpeg => crate::nvjpeg::LIBRARY_NAMES,
        }
    }

    /// PyPI's wheel that carries it (CUDA 12).
    pub fn pip_package(self) -> &'static str {
        match self {
            CudaLib::Nvrtc => "nvidia-cuda-nvrtc-cu12",
            CudaLib::NvJpeg => "nvidia-nvjpeg-cu12",
        }
    }

    /// The folders of PyPI's wheels for it under `site-packages/nvidia/`: CUDA 12 wheels have
    /// one per package, CUDA 13 wheels share `cu13`. libnvrtc.so.13 is not looked for: cudarc,
    /// built for CUDA 12, opens libnvrtc by the CUDA 12 soname only.
    fn wheel_folders(self) -> &'static [&'static str] {
        match self {
            CudaLib::Nvrtc => &["cuda_nvrtc"],
            CudaLib::NvJpeg => &["nvjpeg", "cu13"],
        }
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

/// The first file of `lib` in `dirs` (in folder order, then name order).
pub fn find_in(lib: CudaLib, dirs: &[PathBuf]) -> Option<PathBuf> {
    dirs.iter()
        .flat_map(|d| lib.file_names().iter().map(move |n| d.join(n)))
        .find(|p| p.is_file())
}

/// Where a library came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// The dynamic loader found it by name (LD_LIBRARY_PATH, its cache, system folders).
    ByLoader,
    /// Found in a searched folder and opened by its full path.
    At(PathBuf),
}

impl std::fmt::Display for Found {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Found::ByLoader => f.write_str("found by the dynamic loader"),
            Found::At(p) => write!(f, "{}", p.display()),
        }
    }
}

/// Why a library was not found (the folders searched besides the loader's path) and how to
/// install it.
pub fn not_found_reason(lib: CudaLib, dirs: &[PathBuf]) -> String {
    format!(
        "{} not found by the dynamic loader (LD_LIBRARY_PATH, ld.so.cache) nor in {} other \
         folders (the CUDA toolkit's, Python environments' NVIDIA wheels, {LIB_DIRS_VAR}); \
         install the CUDA toolkit, or `pip install {}` (scripts/run.sh does)",
        lib.file_names().join(" / "),
        dirs.len(),
        lib.pip_package()
    )
}

/// The libnvrtc cudarc will use, loading it from a searched folder if the loader alone does
/// not find it (once per process). Err: why not found.
pub fn locate_nvrtc() -> Result<Found, String> {
    // The library opened by path stays loaded for the whole process, so that cudarc's
    // by-name opens keep finding it.
    static NVRTC: OnceLock<(Result<Found, String>, Option<libloading::Library>)> = OnceLock::new();
    let (found, _lib) = NVRTC.get_or_init(|| {
        if cudarc_finds_nvrtc() {
            return (Ok(Found::ByLoader), None);
        }
        let dirs = search_dirs(CudaLib::Nvrtc, &|v| std::env::var_os(v));
        let Some(path) = find_in(CudaLib::Nvrtc, &dirs) else {
            return (Err(not_found_reason(CudaLib::Nvrtc, &dirs)), None);
        };
        // SAFETY: loading libnvrtc runs its initialisers, which only set up its own state.
        match unsafe { libloading::Library::new(&path) } {
            Ok(lib) if cudarc_finds_nvrtc() => (Ok(Found::At(path)), Some(lib)),
            Ok(_) => (
                Err(format!(
                    "{} loaded, but not under the soname cudarc asks for",
                    path.display()
                )),
                None,
            ),
            Err(e) => (Err(format!("{}: {e}", path.display())), None),
        }
    });
    found.clone()
}

/// The version (major, minor) of the libnvrtc cudarc uses, once it is located.
pub fn nvrtc_version() -> Option<(i32, i32)> {
    locate_nvrtc().ok()?;
    let (mut major, mut minor) = (0, 0);
    // SAFETY: libnvrtc is loadable (just checked), so cudarc's lazy binding succeeds; a
    // plain query with out-pointers to locals.
    let status = unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
    (status == cudarc::nvrtc::sys::nvrtcResult::NVRTC_SUCCESS).then_some((major, minor))
}

fn cudarc_finds_nvrtc() -> bool {
    // SAFETY: only tries to dlopen the library by its usual names; no NVRTC call is made.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let nvrtc = |base: &Path, py: &str, kind: &str| wheel(base, py, kind, "cuda_nvrtc");
        assert_eq!(
            dirs[..10],
            [
                r.join("a"),
                r.join("b"),
                r.join("cuda/lib64"),
                r.join("cuda/lib"),
                PathBuf::from("/usr/local/cuda/lib64"),
                nvrtc(&venv, "python3.12", "site-packages"),
                nvrtc(&venv, "python3.12", "dist-packages"),
                nvrtc(&venv, "python3.9", "site-packages"),
                nvrtc(&venv, "python3.9", "dist-packages"),
                nvrtc(&home.join(".local"), "python3.11", "site-packages"),
            ]
        );
        assert!(!dirs.iter().any(|d| d.to_string_lossy().contains("python2")));
        assert!(not_found_reason(CudaLib::Nvrtc, &dirs).contains("libnvrtc.so.12"));

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
        assert_eq!(find_in(CudaLib::NvJpeg, &dirs), Some(in_toolkit));
    }
}
