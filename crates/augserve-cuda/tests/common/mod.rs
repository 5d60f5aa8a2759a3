#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]
//! Checks shared by the NVRTC tests.

use augserve_cuda::kernels::{CompiledKernels, Target, KERNEL_NAMES};

/// Prints a skip notice past the test harness's capture, so it shows in the run's output.
pub fn skipped(why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "skipped: {why}");
}

/// The PTX names every kernel and targets `target`'s architecture; a cubin is an ELF file
/// whose symbols include every kernel.
pub fn check_compiled(c: &CompiledKernels, target: Target) {
    let (Target::Cubin(a) | Target::Ptx(a)) = target;
    let arch = format!("sm_{a}");
    assert!(
        c.ptx.contains(&format!(".target {arch}")),
        "{target:?}: no `.target {arch}` in the PTX"
    );
    for name in KERNEL_NAMES {
        assert!(
            c.ptx.contains(&format!(".entry {name}(")),
            "{target:?}: kernel {name} missing from PTX"
        );
    }
    // And the other way: a kernel written but not registered in `kernels!` is never loaded.
    for entry in c.ptx.split(".entry ").skip(1) {
        let name = entry.split('(').next().unwrap_or_default().trim();
        assert!(
            KERNEL_NAMES.contains(&name),
            "{target:?}: kernel {name} is in kernels/ but not registered in kernels.rs"
        );
    }
    match (target, &c.cubin) {
        (Target::Cubin(_), Some(elf)) => {
            assert_eq!(
                &elf[..4],
                b"\x7fELF",
                "{target:?}: the cubin is an ELF file"
            );
            for name in KERNEL_NAMES {
                assert!(
                    elf.windows(name.len() + 1)
                        .any(|w| &w[..name.len()] == name.as_bytes() && w[name.len()] == 0),
                    "{target:?}: kernel {name} missing from the cubin's symbols"
                );
            }
        }
        (Target::Cubin(_), None) => panic!("{target:?}: no cubin"),
        (Target::Ptx(_), cubin) => assert!(cubin.is_none(), "{target:?}: PTX only"),
    }
}

/// The repository's JPEG test files (`testdata/jpeg`), or the GPU kit's copy: the kit's test
/// binaries run on a device machine where this checkout's path does not exist, and
/// `benches/gpu/run.sh` points AUGSERVE_JPEG_TESTDATA at the copy.
pub fn jpeg_testdata() -> std::path::PathBuf {
    std::env::var_os("AUGSERVE_JPEG_TESTDATA")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/jpeg")
        })
}
