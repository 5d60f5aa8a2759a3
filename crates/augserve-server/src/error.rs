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

impl From<ServerError> for Status {
    fn from(e: ServerError) -> Status {
        use augserve_core::Error as C;
        let code = match &e {
            ServerError::UnknownDataset(_) => Code::NotFound,
            ServerError::InvalidArgument { .. } => Code::InvalidArgument,
            ServerError::ResourceExhausted(_) => Code::ResourceExhausted,
            ServerError::Core(
                C::InvalidSpec { .. } | C::InvalidArgument { .. } | C::SpecParse(_),
            ) => Code::InvalidArgument,
            ServerError::Core(C::SampleFailed(_)) => Code::FailedPrecondition,
            ServerError::Core(C::LimitExceeded(_)) => Code::ResourceExhausted,
            ServerError::Core(C::Dataset { .. }) => Code::FailedPrecondition,
            _ => Code::Internal,
        };
        Status::new(code, e.to_string())
    }
}
