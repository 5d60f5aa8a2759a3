//! Lingering close for accepted connections, so the last frames of a stream reach the client.
//!
//! When a socket is closed while bytes the peer sent are still unread (here: the client's
//! WINDOW_UPDATE and PING frames that arrive after h2 stopped reading), Linux answers with a
//! reset and drops whatever the socket had not yet transmitted, typically the trailers with a
//! stream's final status. The client then sees "error reading a body from connection"
//! (UNKNOWN) instead of the UNAVAILABLE the shutdown contract promises. As nginx does
//! (`lingering_close`), a finished connection here half-closes (FIN after the data), then reads
//! and discards until the client closes or [`LINGER`] passes, and only then closes.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tonic::transport::server::Connected;

/// How long a closed connection waits for its client to close before it is dropped.
pub const LINGER: Duration = Duration::from_secs(2);

/// Counts connections still lingering, so the server can wait for them before it exits.
#[derive(Clone, Default)]
pub struct Lingering(Arc<()>);

impl Lingering {
    /// Waits until every lingering connection has closed, or until `deadline`.
    pub async fn wait_until(&self, deadline: Instant) {
        // Each lingering connection holds one clone; this handle is the last one.
        while Arc::strong_count(&self.0) > 1 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// The bounds of a connection a server accepts (a TCP or Unix stream).
pub trait Accepted: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static> Accepted for T {}

/// An accepted connection that lingers when dropped (see the module comment).
pub struct LingeringClose<T: Accepted> {
    /// Taken only by `drop`.
    io: Option<T>,
    info: T::ConnectInfo,
    lingering: Lingering,
}

// Nothing in it is pinned: the connection is `Unpin` and polled through `Pin::new`.
impl<T: Accepted> Unpin for LingeringClose<T> {}

impl<T: Accepted> LingeringClose<T> {
    pub fn new(io: T, lingering: &Lingering) -> Self {
        Self {
            info: io.connect_info(),
            io: Some(io),
            lingering: lingering.clone(),
        }
    }

    /// The connection, or (never seen: only `drop` takes it) a closed-connection error.
    fn io(&mut self) -> std::io::Result<Pin<&mut T>> {
        self.io
            .as_mut()
            .map(Pin::new)
            .ok_or_else(|| std::io::ErrorKind::NotConnected.into())
    }
}

async fn half_close_and_drain<T: AsyncRead + AsyncWrite + Unpin>(mut io: T) {
    let _ = io.shutdown().await;
    let mut scratch = [0u8; 4096];
    while let Ok(n) = io.read(&mut scratch).await {
        if n == 0 {
            break;
        }
    }
}

impl<T: Accepted> Drop for LingeringClose<T> {
    fn drop(&mut self) {
        let (Some(io), Ok(runtime)) = (self.io.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        let guard = self.lingering.clone();
        runtime.spawn(async move {
            let _ = tokio::time::timeout(LINGER, half_close_and_drain(io)).await;
            drop(guard);
        });
    }
}

impl<T: Accepted> AsyncRead for LingeringClose<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.io()?.poll_read(cx, buf)
    }
}

impl<T: Accepted> AsyncWrite for LingeringClose<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.io()?.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.io()?.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.as_ref().is_some_and(|io| io.is_write_vectored())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.io()?.poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.io()?.poll_shutdown(cx)
    }
}

impl<T: Accepted> Connected for LingeringClose<T> {
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.info.clone()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn a_dropped_connection_half_closes_and_waits_for_its_peer() {
        let (server, mut client) = tokio::net::UnixStream::pair().unwrap();
        let lingering = Lingering::default();
        drop(LingeringClose::new(server, &lingering));
        // The peer sees the end of the data (FIN), not an error, and may still write.
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert!(got.is_empty());
        client.write_all(b"late window update").await.unwrap();
        assert_eq!(Arc::strong_count(&lingering.0), 2, "still lingering");
        drop(client);
        lingering
            .wait_until(Instant::now() + Duration::from_secs(5))
            .await;
        assert_eq!(
            Arc::strong_count(&lingering.0),
            1,
            "closed once the peer closed"
        );
    }
}
