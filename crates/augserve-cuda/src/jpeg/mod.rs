//! GPU JPEG decoding (nvJPEG), one home: the C interface (`ffi`), the batched decoder's state
//! machine (`decoder`), where planes and ROIs lie (`planes`), which images go to the GPU and
//! the CPU/GPU split (`route`), the start-up check against the CPU decoder (`check`), the
//! batch stage that decodes a batch's deferred images (`stage`), and measurement code kept
//! apart from all of them (`measure`). Core sees one narrow seam: `DeviceDecoder` and
//! `DeferredDecode` in `augserve_core::pipeline`.

pub mod check;
mod decoder;
mod ffi;
mod measure;
pub mod planes;
pub mod route;
pub(crate) mod stage;

pub use decoder::{DecodeTimes, DecodedBatch, GpuJpegDecoder};
pub use ffi::NvJpeg;
pub use measure::NvJpegOutput;
