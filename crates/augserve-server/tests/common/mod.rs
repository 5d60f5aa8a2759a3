//! Shared by the server's integration tests.
#![allow(dead_code)] // each test file uses a part

use std::path::Path;

use augserve_client::v1;
use augserve_server::AugServeService;
use tokio_stream::wrappers::UnixListenerStream;

/// Serves `service` on a Unix socket at `sock` (in the background, on the current runtime)
/// and returns a client connected to it.
pub async fn serve_and_connect(
    service: AugServeService,
    sock: &Path,
) -> v1::aug_serve_client::AugServeClient<tonic::transport::Channel> {
    let listener = tokio::net::UnixListener::bind(sock).unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(
                v1::aug_serve_server::AugServeServer::new(service)
                    .max_encoding_message_size(usize::MAX),
            )
            .serve_with_incoming(UnixListenerStream::new(listener)),
    );
    let addr = format!("unix://{}", sock.display());
    augserve_client::connect(&addr, 1 << 30).await.unwrap()
}

/// The repository's JPEG test files (`testdata/jpeg`), or the GPU kit's copy: the kit's test
/// binaries run on a device machine where this checkout's path does not exist, and
/// `benches/gpu/run.sh` points AUGSERVE_JPEG_TESTDATA at the copy.
pub fn jpeg_testdata() -> std::path::PathBuf {
    std::env::var_os("AUGSERVE_JPEG_TESTDATA")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/jpeg")
        })
}
