//! augserve's gRPC types and services, generated from `proto/augserve/v1/augserve.proto`,
//! and the conversions between them and augserve-core's types.

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod v1 {
    tonic::include_proto!("augserve.v1");
}

/// The encoded file descriptor set, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/augserve_descriptor.bin"));

pub mod convert;
