//! augserve-cuda: the GPU batch ops. Our CUDA kernels (`kernels/*.cu`) are compiled once per
//! process by NVRTC (`nvrtc`, loaded at run time) to machine code for the device's own
//! architecture and launched through cudarc, which loads libcuda at run time: the crate
//! builds without a CUDA toolkit and runs without a GPU, where [`GpuDevice::open`] returns
//! a [`GpuError`] and callers use the CPU.

mod backend;
pub mod cuda_libs;
mod device;
mod error;
mod host_output;
mod ipc;
pub mod jpeg;
pub mod kernels;
mod launch;
pub mod nvrtc;
mod ops;
mod plan;
mod stages;
mod staging;
mod stand_in;
pub mod weights_check;

pub use backend::{open_backend, Backend, DeviceRequest, CPU_JPEG_DECODER};
pub use device::{nvrtc_available, GpuDevice, GpuInfo};
pub use error::GpuError;
pub use ipc::IpcRing;
pub use ops::{GpuBatchOps, GpuTimings};
pub use plan::{
    mix_descs, packed_sources, plan_resize, plan_resize_sources, ResizePlan, ResizeSource,
    WeightsOn,
};
pub use stand_in::StandInOps;
