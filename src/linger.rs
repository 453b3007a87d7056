//! Closing a connection so that the last packet the broker sent reaches the client.
//!
//! When the broker closes a socket that still has unread bytes from the client (it was
//! sending more PUBLISHes when it was told DISCONNECT 0x93, or packets behind a refused
//! CONNECT), the kernel answers with a TCP reset instead of a FIN, and the client loses
//! what was sent but not yet read: it sees a broken pipe instead of the reason code. So
//! a server-initiated close flushes, shuts down the write side (FIN after the last
//! packet), and reads and discards what the client still sends until it closes too, for
//! at most [`DRAIN_TIME`] and [`DRAIN_BYTES`]; only then is the socket dropped.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Longest wait for the client to close after the broker has.
pub const DRAIN_TIME: Duration = Duration::from_secs(1);
/// Most bytes read and discarded meanwhile: past that the client is not listening.
pub const DRAIN_BYTES: usize = 1024 * 1024;
/// Time given to write the last packets.
const WRITE_TIME: Duration = Duration::from_secs(2);

/// Writes `last` (a refusing CONNACK, say), then closes gracefully.
pub async fn close_after<S>(stream: &mut S, last: &[u8])
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if !matches!(
        tokio::time::timeout(WRITE_TIME, stream.write_all(last)).await,
        Ok(Ok(()))
    ) {
        return;
    }
    shutdown_and_drain(stream).await;
}

/// [`shutdown`], then [`drain`] if that worked.
pub async fn shutdown_and_drain<S>(stream: &mut S)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if shutdown(stream).await {
        drain(stream).await;
    }
}

/// Shuts down the write side after what was written (TCP: a FIN; TLS: close_notify
/// first). True when done.
pub async fn shutdown<W: AsyncWrite + Unpin>(stream: &mut W) -> bool {
    matches!(
        tokio::time::timeout(WRITE_TIME, stream.shutdown()).await,
        Ok(Ok(()))
    )
}

/// Reads and discards what the client still sends until it closes, for at most
/// [`DRAIN_TIME`] and [`DRAIN_BYTES`]. Boxed: only closing connections pay for its
/// buffer, not every connection's future.
pub async fn drain<R: AsyncRead + Unpin>(rd: &mut R) {
    let _ = tokio::time::timeout(DRAIN_TIME, Box::pin(discard(rd))).await;
}

/// Reads and discards until end of stream, an error, or [`DRAIN_BYTES`].
async fn discard<R: AsyncRead + Unpin>(rd: &mut R) {
    let mut buf = vec![0u8; 4096];
    let mut total = 0;
    while total < DRAIN_BYTES {
        match rd.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => total += n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn writes_then_shuts_down_and_drains_until_the_peer_closes() {
        let (mut broker, mut client) = tokio::io::duplex(64 * 1024);
        client.write_all(&[0x30; 10_000]).await.unwrap();
        let closer = tokio::spawn(async move {
            close_after(&mut broker, &[0x20, 0x02, 0x00, 0x03]).await;
        });
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(
            got,
            [0x20, 0x02, 0x00, 0x03],
            "the last packet, then end of stream"
        );
        client.shutdown().await.unwrap();
        drop(client);
        closer.await.unwrap();
    }

    #[tokio::test]
    async fn a_peer_that_never_closes_is_given_drain_time_only() {
        let (mut broker, _client) = tokio::io::duplex(1024);
        let started = tokio::time::Instant::now();
        shutdown_and_drain(&mut broker).await;
        assert!(started.elapsed() >= DRAIN_TIME);
    }
}
