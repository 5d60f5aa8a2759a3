//! augserve-server: the tonic gRPC service. `StreamBatches` runs a dataset's pipeline on a
//! producer thread feeding a bounded channel (a failed send means the client left);
//! `AugmentImages` augments JPEGs sent in the request. Health and reflection are served too.

pub mod auth;
pub mod config;
mod error;
mod lingering_close;
pub mod memory;
mod serve;
mod service;
pub mod shm;
mod stream_producer;
pub mod telemetry;
mod transport;

pub use config::ServerConfig;
pub use error::ServerError;
pub use serve::{run_server, ShutdownSignal};
pub use service::AugServeService;
