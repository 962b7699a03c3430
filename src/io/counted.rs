//! Byte counting for the sockets under HTTP/2 connections: what `h2` reads and writes goes
//! into the listener's `tcp_read_bytes_total` / `tcp_write_bytes_total`, as the splice path
//! and the HTTP/1 proxy count theirs.
//!
//! Not here: buffering (see `coalesce`), any change to the bytes.

use std::io;
use std::ops::Deref;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::metrics::PeerCounters;

/// `io` with every byte read or written counted in `counters` (a borrowed `&PeerCounters`
/// for the client side, an `Rc` for upstream connections whose driver task outlives the call).
#[derive(Debug)]
pub struct Counted<T, C> {
    io: T,
    counters: C,
}

impl<T, C> Counted<T, C> {
    /// Wraps `io`.
    pub fn new(io: T, counters: C) -> Counted<T, C> {
        Counted { io, counters }
    }
}

impl<T: AsyncRead + Unpin, C: Deref<Target = PeerCounters> + Unpin> AsyncRead for Counted<T, C> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            self.counters.read((buf.filled().len() - before) as u64);
        }
        r
    }
}

impl<T: AsyncWrite + Unpin, C: Deref<Target = PeerCounters> + Unpin> AsyncWrite for Counted<T, C> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = r {
            self.counters.wrote(n as u64);
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r {
            self.counters.wrote(n as u64);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn counts_what_passes_each_way() {
        let counters = PeerCounters::default();
        let (a, mut b) = tokio::io::duplex(64);
        let mut c = Counted::new(a, &counters);
        c.write_all(b"hello").await.unwrap();
        let mut got = [0u8; 5];
        b.read_exact(&mut got).await.unwrap();
        b.write_all(b"abc").await.unwrap();
        let mut back = [0u8; 3];
        c.read_exact(&mut back).await.unwrap();
        assert_eq!((&got, &back), (b"hello", b"abc"));
        let s = counters.snapshot();
        assert_eq!((s.read_bytes, s.write_bytes), (3, 5));
    }
}
