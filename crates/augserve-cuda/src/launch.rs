//! The one place kernels are launched.

use cudarc::driver::{CudaFunction, CudaStream, LaunchArgs, LaunchConfig};

use crate::GpuError;

/// Threads per block of every kernel (the statistics reduction assumes a multiple of 32,
/// at most 256).
pub const BLOCK: u32 = 256;

/// A 3-D grid: x covers `x_items` with [`BLOCK`] threads, y and z one block each.
pub fn grid(x_items: u32, y: u32, z: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (x_items.div_ceil(BLOCK).max(1), y.max(1), z.max(1)),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Launches `func` on `stream` with the arguments `push` adds.
pub fn launch<'a>(
    stream: &'a CudaStream,
    func: &'a CudaFunction,
    cfg: LaunchConfig,
    push: impl FnOnce(&mut LaunchArgs<'a>),
) -> Result<(), GpuError> {
    let mut args = stream.launch_builder(func);
    push(&mut args);
    // SAFETY: every caller passes, in order, arguments whose types match the kernel's C
    // signature (kernels/*.cu); device buffers are sized by the caller for the grid it
    // launches, and every kernel bounds-checks its thread indices against the sizes passed.
    unsafe { args.launch(cfg) }?;
    Ok(())
}

/// An event recorded now on `stream`, with timing on: cudarc's default events have
/// CU_EVENT_DISABLE_TIMING, and cuEventElapsedTime on such events fails with INVALID_HANDLE.
pub fn timing_event(stream: &CudaStream) -> Result<cudarc::driver::CudaEvent, GpuError> {
    let e = stream
        .context()
        .new_event(Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT))?;
    e.record(stream)?;
    Ok(e)
}

/// Milliseconds between two recorded events (both complete: after a synchronize).
pub fn elapsed_ms(
    from: &cudarc::driver::CudaEvent,
    to: &cudarc::driver::CudaEvent,
) -> Result<f64, GpuError> {
    Ok(f64::from(from.elapsed_ms(to)?))
}
