use tonic::{Code, Status};

/// Everything the service can fail with; one mapping to gRPC status codes.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Core(#[from] augserve_core::Error),
    #[error("unknown dataset '{0}' (ListDatasets shows the configured names)")]
    UnknownDataset(String),
    #[error("{field}: {message}")]
    InvalidArgument {
        field: &'static str,
        message: String,
    },
    #[error("{0}")]
    ResourceExhausted(String),
    #[error("configuration: {0}")]
    Config(String),
    /// A listener that could not be opened: which address, and why.
    #[error("cannot listen on {address}: {reason}")]
    Listen { address: String, reason: String },
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Transport(#[from] tonic::transport::Error),
}

/// The status code of a core error. Every variant is named, so a new one must be placed here
/// (no wildcard lets it fall silently into INTERNAL).
fn core_code(e: &augserve_core::Error) -> Code {
    use augserve_core::Error as C;
    match e {
        C::InvalidSpec { .. } | C::InvalidArgument { .. } | C::SpecParse(_) => {
            Code::InvalidArgument
        }
        C::SampleFailed(_) => Code::FailedPrecondition,
        C::LimitExceeded(_) => Code::ResourceExhausted,
        C::Dataset { .. } => Code::FailedPrecondition,
        // The server's own failures: reading a dataset file mid-stream, its worker pool, the
        // batch-ops backend. Deferred-image failures are per-image errors by the time a batch
        // is done; one reaching a request is a bug, as the others are the server's fault.
        C::Io(_) | C::ThreadPool(_) | C::Backend(_) | C::DeferredImagesFailed(_) => Code::Internal,
    }
}

impl From<ServerError> for Status {
    fn from(e: ServerError) -> Status {
        let code = match &e {
            ServerError::Core(c) => core_code(c),
            ServerError::UnknownDataset(_) => Code::NotFound,
            ServerError::InvalidArgument { .. } => Code::InvalidArgument,
            ServerError::ResourceExhausted(_) => Code::ResourceExhausted,
            // Start-up failures (configuration, listeners): no request sees them, but a
            // caller that maps one anyway gets the server's fault.
            ServerError::Config(_) | ServerError::Listen { .. } => Code::Internal,
            ServerError::Io(_) | ServerError::Transport(_) => Code::Internal,
        };
        Status::new(code, e.to_string())
    }
}
