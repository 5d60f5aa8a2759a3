//! augserve-core: the augmentation pipeline without any network or GPU code.
//!
//! Data flow for one batch: [`sampler`] picks sample ids for (seed, epoch, rank) ->
//! [`dataset`] reads the encoded bytes -> [`decode`] turns them into RGB -> per-image ops
//! ([`ops::crop`], [`ops::color`]) prepare the region to resize -> a [`pipeline::BatchOps`]
//! backend resizes ([`ops::resize`]), mixes and normalises ([`ops::mix`]) and measures
//! ([`ops::stats`]) -> a [`batch::Batch`]. Randomness comes from [`rng`], keyed so that
//! results never depend on threading.

pub mod batch;
pub mod buffers;
pub mod dataset;
pub mod decode;
pub mod demo;
pub mod error;
pub mod image;
pub mod ops;
pub mod pipeline;
pub mod rng;
pub mod sampler;
pub mod spec;
mod turbojpeg;

pub use batch::{Batch, StageTimings, Tensor};
pub use dataset::{Dataset, DatasetFormat};
pub use decode::DecodeLimits;
pub use error::{Error, Result, SampleError, SampleErrorKind};
pub use pipeline::{
    BatchOps, CpuBatchOps, CpuResize, Destination, DeviceOutput, Pipeline, PipelineOptions,
};
pub use sampler::{ShardSpec, TailPolicy};
pub use spec::PipelineSpec;
