//! augserve-cuda: the GPU batch ops. Our CUDA kernels (`kernels/*.cu`) are compiled once per
//! process by NVRTC (`nvrtc`, loaded at run time) to machine code for the device's own
//! architecture and launched through cudarc, which loads libcuda at run time: the crate
//! builds without a CUDA toolkit and runs without a GPU, where [`GpuDevice::open`] returns
//! a [`GpuError`] and callers use the CPU.

mod backend;
pub mod cuda_libs;
pub mod decode_check;
mod device;
mod error;
pub mod gpu_decode;
mod ipc;
pub mod jpeg_planes;
pub mod kernels;
mod launch;
pub mod nvjpeg;
pub mod nvrtc;
mod ops;

pub use backend::{open_backend, Backend, DeviceRequest, CPU_JPEG_DECODER};
pub use device::{nvrtc_available, GpuDevice, GpuInfo};
pub use error::GpuError;
pub use ipc::IpcRing;
pub use ops::{
    mix_descs, packed_sources, plan_resize, plan_resize_sources, GpuBatchOps, GpuTimings,
    OutputSink, ResizePlan, ResizeSource,
};
