//! Moving HTTP/2 bodies: DATA frames and trailers from one stream to another with flow
//! control end to end ([`pump_within`]), and sending a chunk as the peer's
//! window allows ([`send_chunk_within`]).

use std::cell::Cell;
use std::future::{poll_fn, Future};
use std::task::{Context, Poll};

use bytes::Bytes;
use h2::{Reason, RecvStream, SendStream};
use http::HeaderMap;

use super::conn::{RecvBody, SendBody};
use super::grpc;

/// Where an HTTP/2 body comes from: the client's request ([`RecvBody`]) or an HTTP/2
/// upstream's response (`h2`'s [`RecvStream`]).
pub trait Source {
    /// The next DATA payload; `None` at the end.
    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, h2::Error>>>;
    /// The trailers, after the DATA.
    fn poll_trailers(&mut self, cx: &mut Context<'_>)
        -> Poll<Result<Option<HeaderMap>, h2::Error>>;
    /// Whether everything of the body was taken.
    fn is_end_stream(&self) -> bool;
    /// `n` bytes were passed on: the sender may send as much more.
    fn release(&mut self, n: usize);
}

/// Where an HTTP/2 body goes: the client's response ([`SendBody`]) or an HTTP/2 upstream's
/// request (`h2`'s [`SendStream`]).
pub trait Sink {
    /// Asks for room for `n` bytes.
    fn reserve_capacity(&mut self, n: usize);
    /// Room granted: bytes that may be sent now.
    fn poll_capacity(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<usize, h2::Error>>>;
    /// Sends DATA (`eos`: the last).
    fn send_data(&mut self, data: Bytes, eos: bool) -> Result<(), h2::Error>;
    /// Sends the trailers (the end).
    fn send_trailers(&mut self, trailers: HeaderMap) -> Result<(), h2::Error>;
    /// Resets the stream.
    fn send_reset(&mut self, reason: Reason);
    /// Ready once the peer reset the stream.
    fn poll_reset(&mut self, cx: &mut Context<'_>) -> Poll<Result<Reason, h2::Error>>;
}

impl Source for RecvStream {
    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, h2::Error>>> {
        RecvStream::poll_data(self, cx)
    }
    fn poll_trailers(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<HeaderMap>, h2::Error>> {
        RecvStream::poll_trailers(self, cx)
    }
    fn is_end_stream(&self) -> bool {
        RecvStream::is_end_stream(self)
    }
    fn release(&mut self, n: usize) {
        let _ = self.flow_control().release_capacity(n);
    }
}

impl Source for RecvBody {
    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, h2::Error>>> {
        RecvBody::poll_data(self, cx)
    }
    fn poll_trailers(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<HeaderMap>, h2::Error>> {
        RecvBody::poll_trailers(self, cx)
    }
    fn is_end_stream(&self) -> bool {
        RecvBody::is_end_stream(self)
    }
    fn release(&mut self, n: usize) {
        RecvBody::release(self, n);
    }
}

impl Sink for SendStream<Bytes> {
    fn reserve_capacity(&mut self, n: usize) {
        SendStream::reserve_capacity(self, n);
    }
    fn poll_capacity(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<usize, h2::Error>>> {
        SendStream::poll_capacity(self, cx)
    }
    fn send_data(&mut self, data: Bytes, eos: bool) -> Result<(), h2::Error> {
        SendStream::send_data(self, data, eos)
    }
    fn send_trailers(&mut self, trailers: HeaderMap) -> Result<(), h2::Error> {
        SendStream::send_trailers(self, trailers)
    }
    fn send_reset(&mut self, reason: Reason) {
        SendStream::send_reset(self, reason);
    }
    fn poll_reset(&mut self, cx: &mut Context<'_>) -> Poll<Result<Reason, h2::Error>> {
        SendStream::poll_reset(self, cx)
    }
}

impl Sink for SendBody {
    fn reserve_capacity(&mut self, n: usize) {
        SendBody::reserve_capacity(self, n);
    }
    fn poll_capacity(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<usize, h2::Error>>> {
        SendBody::poll_capacity(self, cx)
    }
    fn send_data(&mut self, data: Bytes, eos: bool) -> Result<(), h2::Error> {
        SendBody::send_data(self, data, eos)
    }
    fn send_trailers(&mut self, trailers: HeaderMap) -> Result<(), h2::Error> {
        SendBody::send_trailers(self, trailers)
    }
    fn send_reset(&mut self, reason: Reason) {
        SendBody::send_reset(self, reason);
    }
    fn poll_reset(&mut self, cx: &mut Context<'_>) -> Poll<Result<Reason, h2::Error>> {
        SendBody::poll_reset(self, cx)
    }
}

/// Why [`pump_within`] stopped early.
#[derive(Debug)]
pub enum Stop {
    /// A stream error on either side (`dst` was reset with [`reset_reason`]).
    Stream(h2::Error),
    /// `dst` took no byte of a chunk within the bound (`dst` was reset with CANCEL).
    Stalled,
}

impl From<h2::Error> for Stop {
    fn from(e: h2::Error) -> Stop {
        Stop::Stream(e)
    }
}

/// Moves one HTTP/2 body, DATA then trailers, from `src` to `dst`, releasing `src`'s window
/// only as `dst` takes the bytes, and adding the DATA bytes `dst` took to `sent` as they go
/// (for the access log). A reset on `src` resets `dst` with the same reason. Returns the
/// trailers' `grpc-status`. `first` runs once, when the first DATA frame arrives or the
/// stream ends without one (a response's latency ends there).
///
/// `take_within`: the longest `dst` may take to accept each chunk (flow-control window and
/// send buffer room for it); past it, `dst` is reset with CANCEL and [`Stop::Stalled`]
/// returned. Waits for `src` are not bounded.
pub async fn pump_within(
    mut src: impl Source,
    mut dst: impl Sink,
    first: &dyn Fn(),
    sent: &Cell<u64>,
    take_within: Option<std::time::Duration>,
) -> Result<Option<u8>, Stop> {
    let mut first = Some(first);
    let moved: Result<Option<u8>, Stop> = async {
        while let Some(chunk) = unless_reset(&mut dst, poll_fn(|cx| src.poll_data(cx)))
            .await
            .map_err(Stop::Stream)?
        {
            let chunk = chunk.map_err(Stop::Stream)?;
            if let Some(f) = first.take() {
                f();
            }
            let n = chunk.len();
            // END_STREAM rides on the last DATA frame, not on an extra empty one (peers
            // budget small frames: h2's flood defence counts them).
            let eos = src.is_end_stream();
            send_chunk_within(&mut dst, chunk, eos, take_within).await?;
            sent.set(sent.get() + n as u64);
            src.release(n);
            if eos {
                return Ok(None);
            }
        }
        let trailers = unless_reset(&mut dst, poll_fn(|cx| src.poll_trailers(cx)))
            .await
            .map_err(Stop::Stream)?
            .map_err(Stop::Stream)?;
        if let Some(f) = first.take() {
            f();
        }
        match trailers {
            Some(t) => {
                let g = grpc::status(&t);
                dst.send_trailers(t).map_err(Stop::Stream)?;
                Ok(g)
            }
            None => {
                dst.send_data(Bytes::new(), true).map_err(Stop::Stream)?;
                Ok(None)
            }
        }
    }
    .await;
    match &moved {
        Err(Stop::Stream(e)) => dst.send_reset(reset_reason(e)),
        Err(Stop::Stalled) => dst.send_reset(Reason::CANCEL),
        Ok(_) => {}
    }
    moved
}

/// `next`, a wait for what comes next from one side of a proxied stream, cut short when the
/// peer of `dst` (the other side) resets its stream (RST_STREAM, RFC 9113 §6.4): then
/// `Err` with that reset's reason, so the caller drops the waiting side's stream (or
/// connection) at once. Else a client's cancel of a long poll or a gRPC watch would reach
/// the upstream only with the upstream's next bytes, holding its connection or stream (and
/// its share of the upstream's concurrent streams) until then.
pub async fn unless_reset<T>(
    dst: &mut impl Sink,
    next: impl Future<Output = T>,
) -> Result<T, h2::Error> {
    let mut next = std::pin::pin!(next);
    poll_fn(|cx| {
        if let Poll::Ready(t) = next.as_mut().poll(cx) {
            return Poll::Ready(Ok(t));
        }
        match dst.poll_reset(cx) {
            Poll::Ready(Ok(reason)) => Poll::Ready(Err(reason.into())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// The reason a stream is reset with when moving its body failed: the peer's, or, when no peer
/// gave one (a connection lost, an I/O error), `INTERNAL_ERROR` (RFC 9113 §7: the proxy's own
/// failure; the HTTP/1 upstream path resets with it too). The metric's `error="h2(REASON)"`
/// label names the same reason.
pub fn reset_reason(e: &h2::Error) -> Reason {
    e.reason().unwrap_or(Reason::INTERNAL_ERROR)
}

/// Sends `data` as `dst`'s window and the send buffer allow (`eos` ends the stream with its
/// last frame), each wait for the window (or for room in the connection's send buffer)
/// bounded by `within` (`None`: unbounded): [`Stop::Stalled`] when `dst` granted
/// nothing for that long (the caller resets it). A bound on no progress, not on the whole
/// chunk: a slow but steady reader that grants a little at a time is not cut (review: one
/// granting 3–4 KB/s was cut with a 2 s bound, the chunk being 8 KiB).
pub async fn send_chunk_within(
    dst: &mut impl Sink,
    mut data: Bytes,
    eos: bool,
    within: Option<std::time::Duration>,
) -> Result<(), Stop> {
    if data.is_empty() {
        return if eos {
            dst.send_data(data, true).map_err(Stop::Stream)
        } else {
            Ok(())
        };
    }
    while !data.is_empty() {
        dst.reserve_capacity(data.len());
        let granted = crate::io::within(poll_fn(|cx| dst.poll_capacity(cx)), within).await;
        match granted.ok_or(Stop::Stalled)? {
            None => return Err(Stop::Stream(Reason::CANCEL.into())),
            Some(Err(e)) => return Err(Stop::Stream(e)),
            Some(Ok(0)) => {}
            Some(Ok(n)) => {
                let part = data.split_to(n.min(data.len()));
                dst.send_data(part, eos && data.is_empty())
                    .map_err(Stop::Stream)?;
            }
        }
    }
    Ok(())
}
