//! A thin Rust client for augserve: connect over TCP (`host:port`, `http://host:port`) or a
//! Unix socket (`unix:///path/to.sock`), then call the generated gRPC methods.

use augserve_proto::v1::aug_serve_client::AugServeClient;
use hyper_util::rt::TokioIo;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Uri};

pub use augserve_proto::v1;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("bad address '{0}': {1}")]
    Address(String, String),
    #[error(transparent)]
    Transport(#[from] tonic::transport::Error),
    #[error(transparent)]
    Status(#[from] tonic::Status),
    #[error("shared memory: {0}")]
    Shm(String),
}

/// The client side of the SHM transport: the stream's ring, mapped read-only.
pub struct ShmView {
    map: memmap2::Mmap,
    stream_id: String,
}

impl ShmView {
    /// Maps the ring named in a stream's first batch (`Batch.transport`).
    pub fn open(info: &v1::TransportInfo) -> Result<Self, ClientError> {
        let file = std::fs::File::open(&info.shm_path)
            .map_err(|e| ClientError::Shm(format!("{}: {e}", info.shm_path)))?;
        // SAFETY: the server only writes a slot after this client released it, so the bytes
        // a live SlotRef points to do not change while this client reads them; the file is
        // never truncated while the stream lives.
        let map = unsafe { memmap2::Mmap::map(&file) }
            .map_err(|e| ClientError::Shm(format!("mapping {}: {e}", info.shm_path)))?;
        Ok(ShmView {
            map,
            stream_id: info.stream_id.clone(),
        })
    }

    /// The tensor bytes of one batch (bounds-checked against the mapping).
    pub fn tensor(&self, slot: &v1::SlotRef) -> Result<&[u8], ClientError> {
        let (o, l) = (slot.offset as usize, slot.length as usize);
        o.checked_add(l)
            .and_then(|end| self.map.get(o..end))
            .ok_or_else(|| {
                ClientError::Shm(format!(
                    "slot {} ({o}+{l}) is outside the {}-byte ring",
                    slot.slot,
                    self.map.len()
                ))
            })
    }

    /// The request that hands `slots` back to the server.
    pub fn release_request(&self, slots: Vec<v1::SlotRef>) -> v1::ReleaseSlotsRequest {
        v1::ReleaseSlotsRequest {
            stream_id: self.stream_id.clone(),
            slots,
        }
    }
}

/// What a server that requires TLS and/or a bearer token needs from a client.
#[derive(Debug, Clone, Default)]
pub struct Security {
    /// Sent as `authorization: Bearer <token>` on every call.
    pub token: Option<String>,
    /// PEM CA certificate(s) to verify the server with; set = TLS (TCP only).
    pub ca_pem: Option<Vec<u8>>,
    /// The name to verify the server certificate against (default: the address's host).
    pub domain: Option<String>,
}

/// Adds the bearer token to every request.
#[derive(Debug, Clone, Default)]
pub struct BearerToken(Option<MetadataValue<Ascii>>);

impl Interceptor for BearerToken {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// A client that sends a token (if any) with every call.
pub type SecureClient = AugServeClient<InterceptedService<Channel, BearerToken>>;

/// Like `connect`, with TLS and/or a bearer token.
pub async fn connect_secure(
    addr: &str,
    max_message_bytes: usize,
    security: &Security,
) -> Result<SecureClient, ClientError> {
    let token = match &security.token {
        Some(t) => Some(
            format!("Bearer {t}")
                .parse()
                .map_err(|_| ClientError::Address(addr.into(), "token is not ASCII".into()))?,
        ),
        None => None,
    };
    let channel = connect_channel_secure(addr, security).await?;
    Ok(
        AugServeClient::with_interceptor(channel, BearerToken(token))
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes),
    )
}

/// Opens a channel to `addr`, over TLS when `security.ca_pem` is set.
pub async fn connect_channel_secure(
    addr: &str,
    security: &Security,
) -> Result<Channel, ClientError> {
    let Some(ca) = &security.ca_pem else {
        return connect_channel(addr).await;
    };
    if addr.starts_with("unix://") {
        return Err(ClientError::Address(
            addr.into(),
            "TLS is for TCP; the Unix socket is plaintext".into(),
        ));
    }
    let hostport = addr
        .strip_prefix("https://")
        .or_else(|| addr.strip_prefix("http://"))
        .unwrap_or(addr);
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
    let host = hostport.rsplit_once(':').map_or(hostport, |(h, _)| h);
    tls = tls.domain_name(security.domain.clone().unwrap_or_else(|| host.to_string()));
    let ep = Endpoint::try_from(format!("https://{hostport}"))
        .map_err(|e| ClientError::Address(addr.into(), e.to_string()))?
        .tls_config(tls)?;
    Ok(ep.connect().await?)
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
