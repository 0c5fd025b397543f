//! Closing a connection so that the client reads the last response: a lingering close.

use std::{
    future::Future,
    io,
    pin::Pin,
    task::{Context, Poll, ready},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::Sleep,
};

/// The most bytes a closing connection reads and discards: 4 MiB.
pub(super) const LINGER_BYTES: usize = 4 * 1024 * 1024;

/// The longest a closing connection waits for its client to close: 2 s.
pub(super) const LINGER_TIME: Duration = Duration::from_secs(2);

/// A connection whose shutdown lingers ([RFC 9112 §9.6]): it shuts its write side (the
/// client reads the response, then the end), then reads and discards what the client still
/// sends, until the client closes, [`LINGER_BYTES`] are discarded or [`LINGER_TIME`] is
/// over; only then is the socket closed.
///
/// Closed at once instead, a socket with bytes unread (the rest of a refused request's body)
/// sends a reset, and a client still sending, or that has not read the response yet, gets the
/// reset instead of the response: Python's `http.client`, which sends a whole body before it
/// reads, got a `413` only 5 times in 20.
///
/// [RFC 9112 §9.6]: https://www.rfc-editor.org/rfc/rfc9112#section-9.6
#[derive(Debug)]
pub(super) struct Linger<T> {
    io: T,
    state: State,
}

#[derive(Debug)]
enum State {
    Open,
    /// The write side is shut: discarding what comes until the client closes.
    Lingering {
        discarded: usize,
        // Boxed: only a closing connection holds the timer.
        deadline: Pin<Box<Sleep>>,
    },
    Closed,
}

impl<T> Linger<T> {
    pub(super) fn new(io: T) -> Linger<T> {
        Linger {
            io,
            state: State::Open,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Linger<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Linger<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            match &mut this.state {
                State::Open => {
                    ready!(Pin::new(&mut this.io).poll_shutdown(cx))?;
                    this.state = State::Lingering {
                        discarded: 0,
                        deadline: Box::pin(tokio::time::sleep(LINGER_TIME)),
                    };
                }
                State::Lingering {
                    discarded,
                    deadline,
                } => {
                    if deadline.as_mut().poll(cx).is_ready() {
                        this.state = State::Closed;
                        continue;
                    }
                    let mut scratch = [0; 8192];
                    let mut buf = ReadBuf::new(&mut scratch);
                    match ready!(Pin::new(&mut this.io).poll_read(cx, &mut buf)) {
                        Ok(()) if !buf.filled().is_empty() => {
                            *discarded += buf.filled().len();
                            if *discarded >= LINGER_BYTES {
                                this.state = State::Closed;
                            }
                        }
                        // The client closed (or reset): nothing left to wait for.
                        Ok(()) | Err(_) => this.state = State::Closed,
                    }
                }
                State::Closed => return Poll::Ready(Ok(())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn shutdown_sends_the_end_then_discards_until_the_client_closes() {
        let (server, mut client) = tokio::io::duplex(64 * 1024);
        let mut server = Linger::new(server);
        server.write_all(b"413").await.unwrap();
        let closing = tokio::spawn(async move { server.shutdown().await });
        // The client reads the answer and its end while it still sends.
        let mut answer = Vec::new();
        client.write_all(&[b'x'; 10_000]).await.unwrap();
        client.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, b"413");
        client.write_all(&[b'x'; 10_000]).await.unwrap();
        drop(client);
        closing.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn lingering_stops_after_its_bytes() {
        let (server, mut client) = tokio::io::duplex(64 * 1024);
        let mut server = Linger::new(server);
        let closing = tokio::spawn(async move { server.shutdown().await });
        let chunk = vec![b'x'; 64 * 1024];
        let mut sent = 0;
        // Sends until the server stops reading: once it has shut down, the pipe is closed.
        while client.write_all(&chunk).await.is_ok() {
            sent += chunk.len();
            assert!(sent <= LINGER_BYTES + chunk.len() * 2, "{sent}");
        }
        closing.await.unwrap().unwrap();
        assert!(sent >= LINGER_BYTES, "{sent}");
    }

    #[tokio::test(start_paused = true)]
    async fn lingering_stops_after_its_time() {
        let (server, _client) = tokio::io::duplex(64);
        let mut server = Linger::new(server);
        // The client neither sends nor closes: the paused clock jumps to the deadline.
        let start = tokio::time::Instant::now();
        server.shutdown().await.unwrap();
        assert_eq!(start.elapsed(), LINGER_TIME);
    }
}
