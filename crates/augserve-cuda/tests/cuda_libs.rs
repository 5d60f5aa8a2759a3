#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]
//! libnvrtc and libnvjpeg are found where PyTorch's pip wheels put them, with nothing on
//! LD_LIBRARY_PATH (`cuda_libs`), and every nvJPEG function augserve binds exists in the real
//! library. No GPU needed: the test script's venv holds PyPI's nvidia-cuda-nvrtc-cu12 and
//! nvidia-nvjpeg-cu12 (AUGSERVE_PYTHON names its interpreter). The check runs in a child
//! process, because the loader reads LD_LIBRARY_PATH only at process start.

use std::path::{Path, PathBuf};
use std::process::Command;

use augserve_cuda::cuda_libs::{locate_nvrtc, Found};
use augserve_cuda::kernels::{compile_ptx, DEFAULT_ARCH, KERNEL_NAMES};
use augserve_cuda::nvjpeg::NvJpeg;

const TEST: &str = "libraries_are_found_in_a_python_environment_without_ld_library_path";
const CHILD: &str = "AUGSERVE_CUDA_LIBS_CHILD";

#[test]
fn libraries_are_found_in_a_python_environment_without_ld_library_path() {
    if let Some(venv) = std::env::var_os(CHILD) {
        return in_child(Path::new(&venv));
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
    let out = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
        .env(CHILD, &venv)
        .env("VIRTUAL_ENV", &venv)
        .env_remove("LD_LIBRARY_PATH")
        .env_remove(augserve_cuda::cuda_libs::LIB_DIRS_VAR)
        .output()
        .expect("run the child");
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

fn in_child(venv: &Path) {
    // Both must come from the venv: the loader alone cannot see them here.
    let nvrtc = locate_nvrtc().expect("libnvrtc in the venv");
    let Found::At(path) = &nvrtc else {
        panic!("libnvrtc {nvrtc}: the loader found it without LD_LIBRARY_PATH; nothing to test")
    };
    assert!(path.starts_with(venv), "{}", path.display());
    // cudarc, which opens it by name, compiles every kernel with it.
    let ptx = compile_ptx(DEFAULT_ARCH).expect("kernels compile").to_src();
    for name in KERNEL_NAMES {
        assert!(ptx.contains(&format!(".entry {name}(")), "{name}");
    }
    println!(
        "found libnvrtc at {} and compiled {} kernels with it",
        path.display(),
        KERNEL_NAMES.len()
    );
    let nv = NvJpeg::load().expect("libnvjpeg in the venv");
    assert!(Path::new(&nv.library).starts_with(venv), "{}", nv.library);
    assert!(
        nv.has_roi_decode(),
        "{} lacks the batched ROI decode",
        nv.library
    );
    println!(
        "found libnvjpeg at {}: every bound function present, ROI decode included",
        nv.library
    );
}
