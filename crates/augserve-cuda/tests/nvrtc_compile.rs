#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]
//! Every kernel compiles with NVRTC through the code path the server uses, to PTX and to
//! machine code (cubin). Needs libnvrtc (no GPU): the test script installs PyPI's
//! nvidia-cuda-nvrtc-cu12 and puts it on LD_LIBRARY_PATH. Without it the test prints
//! `skipped: ...` unless AUGSERVE_REQUIRE_PEERS=1 (CI), where it fails.
//! `tests/cuda_libs.rs` does the same with CUDA 13's NVRTC and checks which one is chosen.

mod common;

use augserve_cuda::kernels::{compile, program_source, Target, DEFAULT_ARCH, KERNEL_NAMES};
use augserve_cuda::nvrtc_available;
use common::{check_compiled, skipped};

#[test]
fn all_kernels_compile_to_ptx_and_machine_code() {
    if !nvrtc_available() {
        if std::env::var("AUGSERVE_REQUIRE_PEERS").as_deref() == Ok("1") {
            panic!(
                "libnvrtc not found; LD_LIBRARY_PATH={:?}",
                std::env::var("LD_LIBRARY_PATH")
            );
        }
        skipped("libnvrtc not found (run ./scripts/test.sh)");
        return;
    }
    let src = program_source();
    assert!(!src.contains("#include \""), "our includes are inlined");
    for target in [
        Target::Ptx(DEFAULT_ARCH),
        Target::Cubin(DEFAULT_ARCH),
        Target::Cubin(90),
    ] {
        let compiled = compile(target).unwrap_or_else(|e| panic!("{target:?}: {e}"));
        check_compiled(&compiled, target);
        println!(
            "{}: {} kernels, {} bytes of PTX",
            compiled.describe(),
            KERNEL_NAMES.len(),
            compiled.ptx.len()
        );
    }
}

#[test]
fn no_gpu_gives_a_typed_error_not_a_panic() {
    match augserve_cuda::GpuDevice::open(0) {
        Ok(d) => println!("GPU present: {:?}", d.info()),
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.contains("GPU unavailable") || msg.contains("compil"),
                "{msg}"
            );
            skipped(&format!("no GPU ({msg})"));
        }
    }
}
