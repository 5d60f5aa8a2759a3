#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]
//! libnvrtc and libnvjpeg are found where PyTorch's pip wheels put them, with nothing on
//! LD_LIBRARY_PATH (`cuda_libs`), and every nvJPEG function augserve binds exists in the real
//! libraries, CUDA 12's and CUDA 13's. No GPU needed: the test script's venv holds PyPI's
//! nvidia-cuda-nvrtc-cu12, nvidia-nvjpeg-cu12 and nvidia-nvjpeg (CUDA 13); AUGSERVE_PYTHON
//! names its interpreter. The checks run in child processes, because the loader reads
//! LD_LIBRARY_PATH only at process start.

use std::path::{Path, PathBuf};
use std::process::Command;

use augserve_cuda::cuda_libs::{locate_nvrtc, nvrtc_version, Found, LIB_DIRS_VAR};
use augserve_cuda::kernels::{compile_ptx, DEFAULT_ARCH, KERNEL_NAMES};
use augserve_cuda::nvjpeg::NvJpeg;

const TEST: &str = "libraries_are_found_in_a_python_environment_without_ld_library_path";
/// In a child: the folder both libraries must come from.
const CHILD: &str = "AUGSERVE_CUDA_LIBS_CHILD";
/// In a child: whether libnvrtc is checked too.
const CHILD_NVRTC: &str = "AUGSERVE_CUDA_LIBS_CHILD_NVRTC";

#[test]
fn libraries_are_found_in_a_python_environment_without_ld_library_path() {
    if let Some(root) = std::env::var_os(CHILD) {
        return in_child(Path::new(&root), std::env::var_os(CHILD_NVRTC).is_some());
    }
    let Some(venv) = std::env::var_os("AUGSERVE_PYTHON")
        .map(PathBuf::from)
        .and_then(|py| Some(py.parent()?.parent()?.to_path_buf()))
    else {
        assert_ne!(
            std::env::var("AUGSERVE_REQUIRE_PEERS").as_deref(),
            Ok("1"),
            "AUGSERVE_PYTHON (the test venv) is not set"
        );
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "skipped: no test venv (run ./scripts/test.sh)"
        );
        return;
    };
    // The venv as a Python environment (its CUDA 12 wheels, found by the search).
    child(&venv, |c| c.env("VIRTUAL_ENV", &venv).env(CHILD_NVRTC, "1"));
    // The CUDA 13 wheel's libnvjpeg.so.13, named by AUGSERVE_CUDA_LIB_DIRS.
    let cu13 = std::fs::read_dir(venv.join("lib"))
        .expect("venv lib")
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("site-packages/nvidia/cu13/lib"))
        .find(|p| p.is_dir())
        .expect("nvidia-nvjpeg (CUDA 13) in the venv");
    child(&cu13, |c| c.env(LIB_DIRS_VAR, &cu13));
}

/// Runs this test in a child with `setup`'s environment and nothing on LD_LIBRARY_PATH.
fn child(root: &Path, setup: impl FnOnce(&mut Command) -> &mut Command) {
    let mut cmd = Command::new(std::env::current_exe().expect("test binary"));
    cmd.args(["--exact", TEST, "--nocapture", "--test-threads=1"])
        .env(CHILD, root)
        .env_remove("LD_LIBRARY_PATH")
        .env_remove(LIB_DIRS_VAR)
        .env_remove("VIRTUAL_ENV")
        .env_remove(CHILD_NVRTC);
    let out = setup(&mut cmd).output().expect("run the child");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The harness may print "test ... " in front of the child's line.
    for line in text
        .lines()
        .filter_map(|l| l.find("found lib").map(|at| &l[at..]))
    {
        println!("{line}");
    }
    assert!(out.status.success(), "child failed:\n{text}");
}

fn in_child(root: &Path, nvrtc: bool) {
    // Both must come from `root`: the loader alone cannot see them here.
    if nvrtc {
        let found = locate_nvrtc().expect("libnvrtc");
        let Found::At(path) = &found else {
            panic!("libnvrtc {found}: the loader found it without LD_LIBRARY_PATH; nothing to test")
        };
        assert!(path.starts_with(root), "{}", path.display());
        // cudarc, which opens it by name, compiles every kernel with it.
        let ptx = compile_ptx(DEFAULT_ARCH).expect("kernels compile").to_src();
        for name in KERNEL_NAMES {
            assert!(ptx.contains(&format!(".entry {name}(")), "{name}");
        }
        let (major, minor) = nvrtc_version().expect("nvrtcVersion");
        assert_eq!(major, 12, "the CUDA 12 wheel");
        println!(
            "found libnvrtc {major}.{minor} at {} and compiled {} kernels with it",
            path.display(),
            KERNEL_NAMES.len()
        );
    }
    let nv = NvJpeg::load().expect("libnvjpeg");
    assert!(Path::new(&nv.library).starts_with(root), "{}", nv.library);
    assert!(
        nv.has_roi_decode(),
        "{} lacks the batched ROI decode",
        nv.library
    );
    let (major, _, _) = nv.version.expect("nvjpegGetProperty");
    assert!(
        nv.library.ends_with(&format!(".so.{major}")),
        "{} says it is {}",
        nv.library,
        nv.version_string()
    );
    println!(
        "found libnvjpeg {} at {}: every bound function present, ROI decode included",
        nv.version_string(),
        nv.library
    );
}
