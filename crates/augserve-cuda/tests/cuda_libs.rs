#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]
//! libnvrtc and libnvjpeg are found where PyTorch's pip wheels put them, with nothing on
//! LD_LIBRARY_PATH (`cuda_libs`); CUDA 12's and CUDA 13's NVRTC compile every kernel; the
//! newest library the driver can run is chosen, and an older NVRTC where the newest does not
//! support the device; every nvJPEG function augserve binds exists in the real libraries.
//! No GPU needed: the test script's venv holds PyPI's nvidia-cuda-nvrtc-cu12,
//! nvidia-cuda-nvrtc (CUDA 13), nvidia-nvjpeg-cu12 and nvidia-nvjpeg (CUDA 13);
//! AUGSERVE_PYTHON names its interpreter. The checks run in child processes, because the
//! loader reads LD_LIBRARY_PATH only at process start and the chosen NVRTC is cached.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use augserve_cuda::cuda_libs::{Found, LIB_DIRS_VAR};
use augserve_cuda::jpeg::NvJpeg;
use augserve_cuda::kernels::{
    compile_for_device, compile_with, Target, DEFAULT_ARCH, KERNEL_NAMES,
};
use augserve_cuda::nvrtc::{self, Nvrtc};
use common::check_compiled;

const TEST: &str = "libraries_are_found_in_a_python_environment_without_ld_library_path";
/// In a child: the folder both libraries must come from.
const CHILD: &str = "AUGSERVE_CUDA_LIBS_CHILD";
/// In a child: which checks, "cu12" (a venv's CUDA 12 wheels) or "cu13" (CUDA 13's first).
const CHILD_CASE: &str = "AUGSERVE_CUDA_LIBS_CHILD_CASE";

#[test]
fn libraries_are_found_in_a_python_environment_without_ld_library_path() {
    if let Some(root) = std::env::var_os(CHILD) {
        let case = std::env::var(CHILD_CASE).unwrap_or_default();
        return in_child(Path::new(&root), &case);
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
    // The venv as a Python environment: its CUDA 12 wheels' folders come first.
    child(&venv, |c| {
        c.env("VIRTUAL_ENV", &venv).env(CHILD_CASE, "cu12")
    });
    // The CUDA 13 wheels' shared folder named by AUGSERVE_CUDA_LIB_DIRS, so searched first;
    // the venv's CUDA 12 wheels after it.
    let cu13 = std::fs::read_dir(venv.join("lib"))
        .expect("venv lib")
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("site-packages/nvidia/cu13/lib"))
        .find(|p| p.is_dir())
        .expect("nvidia-nvjpeg and nvidia-cuda-nvrtc (CUDA 13) in the venv");
    child(&cu13, |c| {
        c.env(LIB_DIRS_VAR, &cu13)
            .env("VIRTUAL_ENV", &venv)
            .env(CHILD_CASE, "cu13")
    });
}

/// Runs this test in a child with `setup`'s environment and nothing on LD_LIBRARY_PATH.
fn child(root: &Path, setup: impl FnOnce(&mut Command) -> &mut Command) {
    let mut cmd = Command::new(std::env::current_exe().expect("test binary"));
    cmd.args(["--exact", TEST, "--nocapture", "--test-threads=1"])
        .env(CHILD, root)
        .env_remove("LD_LIBRARY_PATH")
        .env_remove(LIB_DIRS_VAR)
        .env_remove("VIRTUAL_ENV")
        .env_remove("CUDA_HOME")
        .env_remove("CUDA_PATH")
        .env_remove(CHILD_CASE);
    let out = setup(&mut cmd).output().expect("run the child");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The harness may print "test ... " in front of the child's line.
    for line in text
        .lines()
        .filter_map(|l| l.find("found ").map(|at| &l[at..]))
    {
        println!("{line}");
    }
    assert!(out.status.success(), "child failed:\n{text}");
}

fn in_child(root: &Path, case: &str) {
    let cu13 = case == "cu13";
    let major = if cu13 { 13 } else { 12 };
    // The preferred NVRTC comes from `root`: the loader alone cannot see it here.
    let preferred = nvrtc::preferred().expect("libnvrtc");
    let Found::At(path) = &preferred.found else {
        panic!(
            "libnvrtc {}: the loader found it without LD_LIBRARY_PATH; nothing to test",
            preferred.found
        )
    };
    assert!(path.starts_with(root), "{}", path.display());
    assert_eq!(preferred.version.0, major, "{}", path.display());
    for target in [Target::Ptx(DEFAULT_ARCH), Target::Cubin(90)] {
        let compiled = compile_with(preferred, target).expect("kernels compile");
        check_compiled(&compiled, target);
    }
    println!(
        "found libnvrtc {}.{} at {} and compiled {} kernels with it, to PTX and to sm_90 \
         machine code",
        preferred.version.0,
        preferred.version.1,
        path.display(),
        KERNEL_NAMES.len()
    );
    let nv = NvJpeg::load().expect("libnvjpeg");
    check_nvjpeg(&nv, root, major);
    if !cu13 {
        return;
    }

    // A device CUDA 13's NVRTC supports gets its machine code from it; an older one (7.0:
    // CUDA 13 starts at 7.5) from CUDA 12's, found after it; a newer one than it knows, its
    // newest architecture's PTX.
    let for_device = |cc: (i32, i32)| {
        let compiled = compile_for_device(cc).unwrap_or_else(|e| panic!("{cc:?}: {e}"));
        check_compiled(&compiled, compiled.target);
        println!(
            "found for compute {}.{}: {}",
            cc.0,
            cc.1,
            compiled.describe()
        );
        (compiled.target, compiled.nvrtc_version.0)
    };
    assert_eq!(for_device((9, 0)), (Target::Cubin(90), 13));
    assert_eq!(for_device((7, 0)), (Target::Cubin(70), 12));
    let newest_arch = *preferred.supported_archs.iter().max().expect("archs") as u32;
    assert_eq!(for_device((99, 0)), (Target::Ptx(newest_arch), 13));
    let too_old = compile_for_device((3, 0))
        .err()
        .expect("compute 3.0 is refused");
    assert!(
        too_old.to_string().contains("older than NVRTC"),
        "{too_old}"
    );

    // A CUDA 12.4 driver cannot run CUDA 13's libraries: the CUDA 12 wheels are used.
    let for_12 = Nvrtc::load(Some((12, 4)), None).expect("CUDA 12's NVRTC");
    assert_eq!(for_12.version.0, 12);
    let nv12 = NvJpeg::load_for(Some((12, 4))).expect("CUDA 12's nvJPEG");
    check_nvjpeg(&nv12, &root.join("../../.."), 12);
    // A CUDA 11 driver runs neither; the error names what was skipped and why.
    let Err(why) = Nvrtc::load(Some((11, 8)), None) else {
        panic!("a CUDA 11.8 driver cannot run CUDA 12's or 13's NVRTC")
    };
    assert!(
        why.contains("libnvrtc.so.13 is CUDA 13, newer than the driver, which runs CUDA 11.8")
            && why.ends_with("needs a driver for CUDA 12 or later"),
        "{why}"
    );
    println!(
        "found for a CUDA 12.4 driver: libnvrtc {}.{} at {} and libnvjpeg {} at {}; for a \
         CUDA 11.8 driver: {why}",
        for_12.version.0,
        for_12.version.1,
        for_12.found,
        nv12.version_string(),
        nv12.library
    );
}

/// nvJPEG came from under `root`, is CUDA `major`'s, and has every function we bind.
fn check_nvjpeg(nv: &NvJpeg, root: &Path, major: i32) {
    let root = root.canonicalize().expect("root");
    let library = Path::new(&nv.library).canonicalize().expect("library");
    assert!(library.starts_with(&root), "{}", nv.library);
    assert!(
        nv.has_roi_decode(),
        "{} lacks the batched ROI decode",
        nv.library
    );
    assert_eq!(
        nv.version.expect("nvjpegGetProperty").0,
        major,
        "{}",
        nv.library
    );
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
