//! A thin Rust client for augserve: connect over TCP (`host:port`, `http://host:port`) or a
//! Unix socket (`unix:///path/to.sock`), then call the generated gRPC methods.

use augserve_proto::v1::aug_serve_client::AugServeClient;
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

pub use augserve_proto::v1;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("bad address '{0}': {1}")]
    Address(String, String),
    #[error(transparent)]
    Transport(#[from] tonic::transport::Error),
    #[error(transparent)]
    Status(#[from] tonic::Status),
}

/// Opens a channel to `addr`.
pub async fn connect_channel(addr: &str) -> Result<Channel, ClientError> {
    if let Some(path) = addr.strip_prefix("unix://") {
        let path = path.to_owned();
        // The URI is a placeholder: the connector below always dials the socket.
        let ep = Endpoint::try_from("http://[::1]:50051")
            .map_err(|e| ClientError::Address(addr.into(), e.to_string()))?;
        let channel = ep
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }))
            .await?;
        return Ok(channel);
    }
    let url = if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    };
    let ep =
        Endpoint::try_from(url).map_err(|e| ClientError::Address(addr.into(), e.to_string()))?;
    Ok(ep.connect().await?)
}

/// A client with message size limits raised for large batches (`max_message_bytes`).
pub async fn connect(
    addr: &str,
    max_message_bytes: usize,
) -> Result<AugServeClient<Channel>, ClientError> {
    Ok(AugServeClient::new(connect_channel(addr).await?)
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes))
}
