//! The image operations. Per-image ops (crop choice, colour jitter, flip) run on the CPU;
//! the batch ops (resize to the output size, mixup/cutmix, normalisation) have a CPU
//! implementation here, which is also the reference the GPU kernels are checked against.

pub mod color;
pub mod crop;
pub mod mix;
pub mod resize;
pub mod stats;
