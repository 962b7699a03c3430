//! The server side of one HTTP/2 connection (RFC 9113), sans-IO: bytes in, [`Event`]s and
//! bytes out. The connection's owner reads from the socket, hands what it read to
//! [`Server::recv`], routes the events to its streams, calls the `send_*` methods for what the
//! streams answer, and writes [`Server::take_output`] to the socket.
//!
//! What it holds while idle is the point: no read or write buffer (the owner reads into a
//! per-core buffer and keeps only the bytes of an incomplete frame; the output is taken
//! whole), the HPACK decoder's dynamic table (the client's entries only), the settings and
//! the open streams (about 48 bytes each). Huffman-decoded strings go to a per-core scratch
//! buffer.
//!
//! Enforced here (each with its RFC 9113 section at the check): the preface and the client's
//! first SETTINGS (§3.4), frame sizes (§4.2), header blocks without interleaving (§4.3, §6.10)
//! and their size, stream identifiers and states (§5.1, §5.1.1), the concurrency limit (§5.1.2,
//! refused with REFUSED_STREAM), flow control in both directions (§5.2, §6.9), the request
//! header rules (§8.2, §8.3.1: pseudo-header fields, connection-specific fields, `te`, names
//! and values), `content-length` against the DATA received (§8.1.1), trailers (§8.1), no push
//! from clients (§8.4); and two floods: streams the client resets before they are answered
//! (rapid reset, CVE-2023-44487) and streams the proxy resets for the client's errors
//! ([`Config::max_local_error_reset_streams`]).
//!
//! Not here: priorities (parsed, checked and ignored, as RFC 9113 §5.3 allows), server push,
//! extended CONNECT (not advertised).

use std::cell::RefCell;
use std::ops::Range;

use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, Uri};

use super::frame::{self, ErrorCode, Frame, FrameError, Head, Settings, HEAD_LEN, PREFACE};
use super::hpack::{Decoder, Encoder};

/// Flow-control window largest value (RFC 9113 §6.9.1), as the windows' type.
const MAX_WINDOW: i64 = frame::MAX_WINDOW as i64;

/// The window every stream and the connection start with before SETTINGS say otherwise
/// (RFC 9113 §6.5.2, §6.9.2).
const DEFAULT_WINDOW: i64 = frame::DEFAULT_WINDOW as i64;

/// Output bytes past which [`Server::recv`] handles no more frames until the output is taken.
pub const OUTPUT_BOUND: usize = 64 * 1024;

/// The HPACK dynamic table size the decoder allows (RFC 7541 §4.2): the protocol's default,
/// which the server does not change (so no size update is ever owed to it).
const HEADER_TABLE_SIZE: usize = 4096;

thread_local! {
    /// Huffman-decoded strings of the block being decoded (per core, reused: a connection
    /// holds no decode buffer).
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// The server's limits for one connection: what it advertises in its SETTINGS and enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// SETTINGS_MAX_CONCURRENT_STREAMS: client streams open at once; more are refused with
    /// RST_STREAM REFUSED_STREAM (RFC 9113 §5.1.2).
    pub max_concurrent_streams: u32,
    /// SETTINGS_MAX_HEADER_LIST_SIZE, bytes (RFC 9113 §6.5.2: names, values and 32 bytes per
    /// field): a larger request header section is answered 431 (RFC 6585 §5). Also bounds a
    /// header block's encoded size (HEADERS and CONTINUATION together): past it the connection
    /// ends with ENHANCE_YOUR_CALM.
    pub max_header_list_size: u32,
    /// SETTINGS_INITIAL_WINDOW_SIZE: each stream's receive window, bytes (≤ 2^31 − 1).
    pub initial_stream_window: u32,
    /// The connection's receive window, bytes (65,535 or more: raised by a WINDOW_UPDATE on
    /// stream 0 right after the SETTINGS).
    pub initial_connection_window: u32,
    /// SETTINGS_MAX_FRAME_SIZE: the largest frame payload the client may send, bytes
    /// (16,384 ..= 2^24 − 1, RFC 9113 §4.2).
    pub max_frame_size: u32,
    /// Streams the client may reset before they are answered, net of the answered ones,
    /// before the connection ends with ENHANCE_YOUR_CALM (rapid reset).
    pub max_pending_accept_reset_streams: usize,
    /// Streams the server may reset for the client's errors (malformed requests, flow-control
    /// errors, frames on closed streams) before the connection ends with ENHANCE_YOUR_CALM.
    pub max_local_error_reset_streams: usize,
}

/// What the client did, for the connection's owner. Stream ids are the client's (odd).
#[derive(Debug)]
pub enum Event {
    /// A new stream: its request head, checked (RFC 9113 §8.3.1). `end_stream`: no body.
    /// The URI has the scheme and authority when `:authority` came (else only the path).
    Request {
        /// The stream.
        stream: u32,
        /// Method, URI, version HTTP/2 and the regular fields.
        head: http::request::Parts,
        /// The request has no body.
        end_stream: bool,
    },
    /// Request body bytes: `data` is their range in the input given to [`Server::recv`].
    /// The stream's receive window grows back only as [`Server::release`] is called.
    Data {
        /// The stream.
        stream: u32,
        /// Where the bytes are in the input.
        data: Range<usize>,
        /// The last of the body (trailers cannot follow).
        end_stream: bool,
    },
    /// The request's trailer section, which ends the body.
    Trailers {
        /// The stream.
        stream: u32,
        /// The trailer fields (no pseudo-header fields: a trailer section with one is
        /// malformed and resets the stream instead, RFC 9113 §8.1).
        fields: HeaderMap,
    },
    /// The stream ended abnormally: the client reset it (`by_client`), or the server did for
    /// a client error (a malformed trailer section, a flow-control or `content-length`
    /// violation). Nothing more is sent or received on it.
    Reset {
        /// The stream.
        stream: u32,
        /// The RST_STREAM error code.
        code: ErrorCode,
        /// The client sent the RST_STREAM.
        by_client: bool,
    },
    /// The client granted send window: on `Some(stream)`, or (None) on the connection or on
    /// every stream (a new SETTINGS_INITIAL_WINDOW_SIZE).
    Window {
        /// The stream, or None for the connection or all streams.
        stream: Option<u32>,
    },
    /// The client sent GOAWAY: it will open no more streams (RFC 9113 §6.8).
    GoAway {
        /// The error code it gave.
        code: ErrorCode,
    },
}

/// A connection error (RFC 9113 §5.4.1): GOAWAY with `code` is in the output; the connection
/// ends once it is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnError {
    /// The GOAWAY error code sent.
    pub code: ErrorCode,
    /// What the client did, for the log.
    pub why: &'static str,
}

impl std::fmt::Display for ConnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.why, self.code)
    }
}

impl std::error::Error for ConnError {}

/// Why a `send_*` call wrote nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// The stream is not open for sending (never opened, ended, or reset by either side).
    Closed,
    /// The connection has ended (a connection error, or GOAWAY was received and sent and
    /// the stream is past it).
    ConnectionClosed,
    /// The owner asked for something HTTP/2 does not allow (a bug in the caller): a status
    /// outside 100..=999 or 101 (RFC 9113 §8.6), a second final response, a response
    /// after the final one, DATA or trailers before it.
    Misuse(&'static str),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SendError::Closed => "stream not open for sending",
            SendError::ConnectionClosed => "connection closed",
            SendError::Misuse(why) => why,
        })
    }
}

impl std::error::Error for SendError {}

/// One open stream (RFC 9113 §5.1: open, or half-closed on one side).
#[derive(Debug)]
struct Stream {
    id: u32,
    /// The client may still send (not half-closed (remote)).
    recv_open: bool,
    /// The server may still send (not half-closed (local)).
    send_open: bool,
    /// The response head has been sent (a 1xx does not count).
    answered: bool,
    /// Bytes the client may still send on the stream.
    recv_window: i64,
    /// Bytes received and delivered, not yet released by the owner.
    unreleased: u32,
    /// Bytes consumed (released, or padding) and not yet granted back on the stream.
    to_grant: u32,
    /// Bytes the server may still send on the stream.
    send_window: i64,
    /// The request's `content-length`, if it gave one.
    content_length: Option<u64>,
    /// Request body bytes received.
    received: u64,
}

/// A header block in the making: HEADERS without END_HEADERS, waiting for CONTINUATION.
#[derive(Debug)]
struct Block {
    stream: u32,
    end_stream: bool,
    bytes: Vec<u8>,
}

/// Where the connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the rest of the client's connection preface (this many bytes matched).
    Preface(usize),
    /// The preface came; the next frame must be SETTINGS (RFC 9113 §3.4).
    FirstSettings,
    /// Frames flow.
    Open,
    /// A connection error was sent: nothing more is read or sent.
    Failed,
}

/// The server side of one HTTP/2 connection. See the module docs.
#[derive(Debug)]
pub struct Server {
    cfg: Config,
    phase: Phase,
    decoder: Decoder,
    encoder: Encoder,
    /// Open streams by ascending id (ids only grow: new ones are pushed at the end).
    streams: Vec<Stream>,
    /// The highest stream id the client has opened (or tried to: refused ones count).
    last_stream: u32,
    /// A header block waiting for CONTINUATION.
    block: Option<Box<Block>>,
    /// Our SETTINGS have been acknowledged (RFC 9113 §6.5.3).
    acked: bool,
    /// The client's SETTINGS_INITIAL_WINDOW_SIZE (for new streams' send windows).
    peer_initial_window: i64,
    /// The client's SETTINGS_MAX_FRAME_SIZE (our frames' payload limit).
    peer_max_frame_size: u32,
    /// Bytes the client may still send on the connection.
    recv_window: i64,
    /// Bytes consumed on the connection (released, discarded, padding), not yet granted
    /// back.
    to_grant: u32,
    /// The last few streams the server reset: frames the client sent before it saw the
    /// RST_STREAM are ignored on these (RFC 9113 §5.1, closed), not answered.
    recent_resets: [u32; 8],
    /// Bit `i` set: `recent_resets[i]` was reset by the client, not by the server.
    reset_by_client: u8,
    /// The next slot of `recent_resets` to overwrite.
    next_reset_slot: usize,
    /// Bytes the server may still send on the connection.
    send_window: i64,
    /// GOAWAY sent: new streams are refused.
    goaway_sent: bool,
    /// Streams the client reset before their response head (never forgiven: see
    /// `rapid_resets`).
    pending_resets: usize,
    /// Streams the client opened (accepted ones).
    opened: usize,
    /// Bit `i` set: client stream `last_stream - 2 i` was used (opened, refused or
    /// answered 431); ids further back count as used. Tells a closed stream (a stream error
    /// for late frames) from one the client skipped (a connection error, §5.1.1).
    used: u128,
    /// The last stream id our GOAWAY named (a later GOAWAY may not name a higher one,
    /// §6.8).
    goaway_last: u32,
    /// Streams reset for the client's errors.
    local_resets: usize,
    /// Bytes for the socket.
    out: Vec<u8>,
}

impl Server {
    /// A connection with `cfg`'s limits. Its SETTINGS (and the connection WINDOW_UPDATE when
    /// `initial_connection_window` is above 65,535) are in the output at once: the server's
    /// preface (RFC 9113 §3.4) need not wait for the client's.
    pub fn new(cfg: Config) -> Server {
        let mut s = Server {
            cfg,
            phase: Phase::Preface(0),
            decoder: Decoder::new(HEADER_TABLE_SIZE),
            encoder: Encoder::new(),
            streams: Vec::new(),
            last_stream: 0,
            block: None,
            acked: false,
            peer_initial_window: DEFAULT_WINDOW,
            peer_max_frame_size: frame::DEFAULT_MAX_FRAME_SIZE,
            recv_window: DEFAULT_WINDOW,
            to_grant: 0,
            recent_resets: [0; 8],
            reset_by_client: 0,
            next_reset_slot: 0,
            send_window: DEFAULT_WINDOW,
            goaway_sent: false,
            pending_resets: 0,
            opened: 0,
            used: 0,
            goaway_last: u32::MAX >> 1,
            local_resets: 0,
            out: Vec::new(),
        };
        let settings = Settings {
            max_concurrent_streams: Some(cfg.max_concurrent_streams),
            initial_window_size: Some(cfg.initial_stream_window),
            max_frame_size: Some(cfg.max_frame_size),
            max_header_list_size: Some(cfg.max_header_list_size),
            enable_push: Some(false),
            ..Settings::default()
        };
        frame::write_settings(&mut s.out, &settings);
        let raise = i64::from(cfg.initial_connection_window) - DEFAULT_WINDOW;
        if raise > 0 {
            frame::write_window_update(&mut s.out, 0, raise as u32);
            s.recv_window += raise;
        }
        s
    }

    /// Takes the bytes to write to the socket (empty when there are none). The connection
    /// keeps no capacity afterwards.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// Bytes waiting in the output.
    pub fn output_len(&self) -> usize {
        self.out.len()
    }

    /// Streams open now.
    pub fn open_streams(&self) -> usize {
        self.streams.len()
    }

    /// Whether the connection failed (a connection error was sent).
    pub fn failed(&self) -> bool {
        self.phase == Phase::Failed
    }

    /// Handles the complete frames at the start of `input`, calling `emit` for each event,
    /// and returns how many bytes it consumed. The rest is the start of a frame that has not
    /// all arrived, or, once [`OUTPUT_BOUND`] bytes of output wait, frames not yet handled:
    /// the caller writes [`Server::take_output`], then passes the rest again (before reading
    /// more, while the call consumes something).
    ///
    /// Errors: a connection error (RFC 9113 §5.4.1); its GOAWAY is in the output and nothing
    /// more may be passed.
    pub fn recv(&mut self, input: &[u8], emit: &mut dyn FnMut(Event)) -> Result<usize, ConnError> {
        let mut pos = 0;
        if let Phase::Preface(matched) = self.phase {
            let want = &PREFACE[matched..];
            let n = want.len().min(input.len());
            if input[..n] != want[..n] {
                return Err(self.fail(ErrorCode::PROTOCOL_ERROR, "invalid connection preface"));
            }
            if n < want.len() {
                self.phase = Phase::Preface(matched + n);
                return Ok(n);
            }
            self.phase = Phase::FirstSettings;
            pos = n;
        }
        if self.phase == Phase::Failed {
            return Err(ConnError {
                code: ErrorCode::PROTOCOL_ERROR,
                why: "connection already failed",
            });
        }
        // Stops at a frame boundary once OUTPUT_BOUND bytes wait to be written: the answers
        // to a flood of PINGs or SETTINGS (or frames on closed streams) would otherwise grow
        // with what the client sends while it reads nothing.
        while input.len() - pos >= HEAD_LEN && self.out.len() < OUTPUT_BOUND {
            let mut raw = [0u8; HEAD_LEN];
            raw.copy_from_slice(&input[pos..pos + HEAD_LEN]);
            let head = Head::parse(&raw);
            // §4.2: a frame larger than our SETTINGS_MAX_FRAME_SIZE (the default until our
            // SETTINGS are acknowledged would be stricter; ours is never below it).
            if let Err(e) = head.check_len(self.cfg.max_frame_size) {
                return Err(self.frame_error(e, "frame larger than SETTINGS_MAX_FRAME_SIZE"));
            }
            let end = pos + HEAD_LEN + head.len as usize;
            if end > input.len() {
                break;
            }
            let start = pos + HEAD_LEN;
            self.frame(&head, &input[start..end], start, emit)?;
            pos = end;
        }
        Ok(pos)
    }

    /// One whole frame whose payload starts at `at` in the caller's input.
    fn frame(
        &mut self,
        head: &Head,
        payload: &[u8],
        at: usize,
        emit: &mut dyn FnMut(Event),
    ) -> Result<(), ConnError> {
        if self.phase == Phase::FirstSettings {
            // §3.4: the client preface's SETTINGS frame comes first.
            if head.kind != frame::kind::SETTINGS || head.flags & frame::flag::ACK != 0 {
                return Err(self.fail(
                    ErrorCode::PROTOCOL_ERROR,
                    "the client preface did not continue with SETTINGS",
                ));
            }
            self.phase = Phase::Open;
        }
        // §6.10: while a header block is open, only its CONTINUATION frames may come.
        if let Some(b) = &self.block {
            if head.kind != frame::kind::CONTINUATION || head.stream != b.stream {
                return Err(self.fail(
                    ErrorCode::PROTOCOL_ERROR,
                    "frame inside a header block (expected CONTINUATION)",
                ));
            }
        }
        let f = match frame::parse(head, payload) {
            Ok(f) => f,
            Err(FrameError::Stream(id, code)) if head.kind != frame::kind::HEADERS => {
                // The frame's own fault, for its stream only (a PRIORITY of the wrong size or
                // depending on itself). A HEADERS frame's would leave its header block
                // undecoded and the HPACK state out of step: that ends the connection below.
                self.reset_for_error(id, code, emit)?;
                return Ok(());
            }
            Err(e) => return Err(self.frame_error(e, "malformed frame")),
        };
        match f {
            Frame::Data {
                stream,
                data,
                end_stream,
                flow_len,
            } => {
                // Where `data` starts in the input (after a pad length octet, if padded).
                let offset = data.as_ptr() as usize - payload.as_ptr() as usize;
                let range = at + offset..at + offset + data.len();
                self.data(stream, range, end_stream, flow_len, emit)
            }
            Frame::Headers {
                stream,
                block,
                end_stream,
                end_headers,
                priority: _,
            } => self.headers(stream, block, end_stream, end_headers, emit),
            Frame::Continuation {
                stream: _,
                block,
                end_headers,
            } => {
                let Some(mut b) = self.block.take() else {
                    // §6.10: CONTINUATION not preceded by HEADERS or CONTINUATION.
                    return Err(self.fail(ErrorCode::PROTOCOL_ERROR, "unexpected CONTINUATION"));
                };
                if b.bytes.len() + block.len() > self.cfg.max_header_list_size as usize {
                    return Err(self.fail(
                        ErrorCode::ENHANCE_YOUR_CALM,
                        "header block larger than max_header_list_size",
                    ));
                }
                b.bytes.extend_from_slice(block);
                if end_headers {
                    let Block {
                        stream,
                        end_stream,
                        bytes,
                    } = *b;
                    self.header_block(stream, &bytes, end_stream, emit)
                } else {
                    self.block = Some(b);
                    Ok(())
                }
            }
            Frame::Priority { .. } => Ok(()),
            Frame::RstStream { stream, code } => {
                if self.idle(stream) {
                    // §6.4: RST_STREAM on an idle stream.
                    return Err(
                        self.fail(ErrorCode::PROTOCOL_ERROR, "RST_STREAM on an idle stream")
                    );
                }
                if let Some(i) = self.index(stream) {
                    let s = self.remove(i);
                    self.note(stream, true);
                    if !s.answered {
                        self.pending_resets += 1;
                        // More than the bound, and more than half of the streams opened:
                        // cancelling some requests is normal (deadlines, hedging); cancelling
                        // most, and many, is the rapid reset flood.
                        if self.pending_resets > self.cfg.max_pending_accept_reset_streams
                            && self.pending_resets * 2 > self.opened
                        {
                            return Err(self.fail(
                                ErrorCode::ENHANCE_YOUR_CALM,
                                "too many streams reset by the client before their response",
                            ));
                        }
                    }
                    emit(Event::Reset {
                        stream,
                        code,
                        by_client: true,
                    });
                }
                Ok(())
            }
            Frame::Settings { ack, settings } => self.settings(ack, settings, emit),
            Frame::PushPromise { .. } => {
                // §8.4: a client cannot push.
                Err(self.fail(ErrorCode::PROTOCOL_ERROR, "PUSH_PROMISE from a client"))
            }
            Frame::Ping { ack, data } => {
                if !ack {
                    frame::write_ping(&mut self.out, true, data);
                }
                Ok(())
            }
            Frame::GoAway { code, .. } => {
                emit(Event::GoAway { code });
                Ok(())
            }
            Frame::WindowUpdate { stream, increment } => {
                self.window_update(stream, increment, emit)
            }
            Frame::Unknown { .. } => Ok(()),
        }
    }

    fn data(
        &mut self,
        stream: u32,
        range: Range<usize>,
        end_stream: bool,
        flow_len: u32,
        emit: &mut dyn FnMut(Event),
    ) -> Result<(), ConnError> {
        // §6.9.1: the connection window first, whatever becomes of the stream.
        let flow = i64::from(flow_len);
        if flow > self.recv_window {
            return Err(self.fail(
                ErrorCode::FLOW_CONTROL_ERROR,
                "DATA beyond the connection's flow-control window",
            ));
        }
        self.recv_window -= flow;
        let Some(i) = self.index(stream) else {
            if self.idle(stream) {
                // §5.1: DATA on an idle stream.
                return Err(self.fail(ErrorCode::PROTOCOL_ERROR, "DATA on an idle stream"));
            }
            // A closed stream: the window is given back; frames in flight after our
            // RST_STREAM are ignored, others answered STREAM_CLOSED (§5.1).
            self.grant_conn(flow_len);
            if self.recently_reset(stream) {
                return Ok(());
            }
            return self.reset_closed(stream);
        };
        let s = &mut self.streams[i];
        if !s.recv_open {
            // §5.1: half-closed (remote): a stream error STREAM_CLOSED.
            self.grant_conn(flow_len);
            return self.reset_for_error(stream, ErrorCode::STREAM_CLOSED, emit);
        }
        if flow > s.recv_window {
            // §6.9.1: beyond the stream's window.
            self.grant_conn(flow_len);
            return self.reset_for_error(stream, ErrorCode::FLOW_CONTROL_ERROR, emit);
        }
        s.recv_window -= flow;
        s.received += range.len() as u64;
        // §8.1.1: more than `content-length`, or less at the end.
        let length_broken = match s.content_length {
            Some(cl) => s.received > cl || (end_stream && s.received != cl),
            None => false,
        };
        // Padding is never delivered, so never released by the owner: granted back now.
        let padding = flow_len - range.len() as u32;
        s.unreleased += range.len() as u32;
        if end_stream {
            s.recv_open = false;
        }
        if padding > 0 {
            self.grant_stream(i, padding);
        }
        if length_broken {
            return self.reset_for_error(stream, ErrorCode::PROTOCOL_ERROR, emit);
        }
        emit(Event::Data {
            stream,
            data: range,
            end_stream,
        });
        self.close_if_done(stream);
        Ok(())
    }

    fn headers(
        &mut self,
        stream: u32,
        block: &[u8],
        end_stream: bool,
        end_headers: bool,
        emit: &mut dyn FnMut(Event),
    ) -> Result<(), ConnError> {
        if stream % 2 == 0 {
            // §5.1.1: clients open odd-numbered streams.
            return Err(self.fail(ErrorCode::PROTOCOL_ERROR, "even stream id from a client"));
        }
        if block.len() > self.cfg.max_header_list_size as usize {
            return Err(self.fail(
                ErrorCode::ENHANCE_YOUR_CALM,
                "header block larger than max_header_list_size",
            ));
        }
        if !end_headers {
            self.block = Some(Box::new(Block {
                stream,
                end_stream,
                bytes: block.to_vec(),
            }));
            return Ok(());
        }
        self.header_block(stream, block, end_stream, emit)
    }

    /// A complete header block on `stream`: a request, or trailers.
    fn header_block(
        &mut self,
        stream: u32,
        block: &[u8],
        end_stream: bool,
        emit: &mut dyn FnMut(Event),
    ) -> Result<(), ConnError> {
        // Decoded whatever becomes of the stream: the HPACK state is the connection's
        // (RFC 9113 §4.3).
        let limit = self.cfg.max_header_list_size as usize;
        let decoded = {
            let decoder = &mut self.decoder;
            SCRATCH.with(|scratch| {
                let mut scratch = scratch.borrow_mut();
                let mut fields = Fields::new(limit);
                decoder
                    .decode(block, &mut scratch, |n, v| fields.field(n, v))
                    .map(|()| fields)
            })
        };
        let fields = match decoded {
            Ok(f) => f,
            Err(_) => {
                // §4.3: a decoding error is a connection error COMPRESSION_ERROR.
                return Err(self.fail(ErrorCode::COMPRESSION_ERROR, "HPACK decoding failed"));
            }
        };
        if let Some(i) = self.index(stream) {
            return self.trailers(i, fields, end_stream, emit);
        }
        if stream <= self.last_stream {
            // Trailers the client sent before it saw our RST_STREAM are ignored (§5.1,
            // closed); HEADERS after its own RST_STREAM are a stream error; otherwise a
            // stream identifier not above every one already used is a connection error
            // (§5.1.1).
            match self.recent(stream) {
                Some(false) => return Ok(()),
                // §5.1: the client closed it; a stream error STREAM_CLOSED.
                Some(true) => return self.reset_for_error(stream, ErrorCode::STREAM_CLOSED, emit),
                None if self.was_used(stream) => {
                    return self.reset_for_error(stream, ErrorCode::STREAM_CLOSED, emit)
                }
                None => {}
            }
            return Err(self.fail(
                ErrorCode::PROTOCOL_ERROR,
                "HEADERS on a closed stream (identifiers only grow)",
            ));
        }
        let shift = (stream - self.last_stream) / 2;
        self.used = if shift >= 128 { 0 } else { self.used << shift } | 1;
        self.last_stream = stream;
        if self.goaway_sent || self.streams.len() >= self.cfg.max_concurrent_streams as usize {
            // §6.8: a stream opened after our GOAWAY is not processed; §5.1.2: nor one past
            // the concurrency limit. REFUSED_STREAM tells the client it may retry it
            // (§8.7).
            frame::write_rst_stream(&mut self.out, stream, ErrorCode::REFUSED_STREAM);
            self.note_reset(stream);
            return Ok(());
        }
        if fields.too_large {
            // RFC 6585 §5 (RFC 9113 §10.5.1 lets a server answer it).
            self.answer_431(stream, end_stream);
            return Ok(());
        }
        let head = match fields.request() {
            Ok(head) => head,
            Err(_why) => {
                // §8.1.1: a malformed request is a stream error PROTOCOL_ERROR.
                return self.reset_for_error(stream, ErrorCode::PROTOCOL_ERROR, emit);
            }
        };
        let content_length = match content_length(&head.headers) {
            Ok(cl) => cl,
            Err(()) => return self.reset_for_error(stream, ErrorCode::PROTOCOL_ERROR, emit),
        };
        if end_stream && content_length.is_some_and(|cl| cl != 0) {
            // §8.1.1: the body is empty, not `content-length` bytes.
            return self.reset_for_error(stream, ErrorCode::PROTOCOL_ERROR, emit);
        }
        let recv_window = if self.acked {
            i64::from(self.cfg.initial_stream_window)
        } else {
            // Until our SETTINGS are acknowledged the client may assume the default window
            // (RFC 9113 §6.9.2); the difference is taken back at the acknowledgement.
            i64::from(self.cfg.initial_stream_window).max(DEFAULT_WINDOW)
        };
        self.opened += 1;
        self.streams.push(Stream {
            id: stream,
            recv_open: !end_stream,
            send_open: true,
            answered: false,
            recv_window,
            unreleased: 0,
            to_grant: 0,
            send_window: self.peer_initial_window,
            content_length,
            received: 0,
        });
        emit(Event::Request {
            stream,
            head,
            end_stream,
        });
        Ok(())
    }

    /// A header block on open stream `i`: the request's trailers.
    fn trailers(
        &mut self,
        i: usize,
        fields: Fields,
        end_stream: bool,
        emit: &mut dyn FnMut(Event),
    ) -> Result<(), ConnError> {
        let s = &self.streams[i];
        let stream = s.id;
        if !s.recv_open {
            // §5.1: half-closed (remote).
            return self.reset_for_error(stream, ErrorCode::STREAM_CLOSED, emit);
        }
        // §8.1: trailers end the stream and carry no pseudo-header fields; §8.1.1: the body
        // matches `content-length`.
        let length_broken = s.content_length.is_some_and(|cl| cl != s.received);
        if !end_stream || fields.has_pseudo || fields.broken.is_some() || length_broken {
            return self.reset_for_error(stream, ErrorCode::PROTOCOL_ERROR, emit);
        }
        if fields.too_large {
            return self.reset_for_error(stream, ErrorCode::PROTOCOL_ERROR, emit);
        }
        self.streams[i].recv_open = false;
        emit(Event::Trailers {
            stream,
            fields: fields.map,
        });
        self.close_if_done(stream);
        Ok(())
    }

    fn settings(
        &mut self,
        ack: bool,
        settings: Settings,
        emit: &mut dyn FnMut(Event),
    ) -> Result<(), ConnError> {
        if ack {
            if !self.acked {
                self.acked = true;
                // The streams opened with the default window give back the difference.
                let cut = DEFAULT_WINDOW - i64::from(self.cfg.initial_stream_window);
                if cut > 0 {
                    for s in &mut self.streams {
                        s.recv_window -= cut;
                    }
                }
            }
            return Ok(());
        }
        if let Some(w) = settings.initial_window_size {
            // §6.9.2: the change applies to every stream's send window, and may not take
            // one past 2^31 − 1.
            let delta = i64::from(w) - self.peer_initial_window;
            self.peer_initial_window = i64::from(w);
            if delta != 0 {
                for s in &mut self.streams {
                    s.send_window += delta;
                    if s.send_window > MAX_WINDOW {
                        return Err(self.fail(
                            ErrorCode::FLOW_CONTROL_ERROR,
                            "SETTINGS_INITIAL_WINDOW_SIZE overflows a stream's window",
                        ));
                    }
                }
                emit(Event::Window { stream: None });
            }
        }
        if let Some(m) = settings.max_frame_size {
            self.peer_max_frame_size = m;
        }
        // The encoder never uses its dynamic table, so SETTINGS_HEADER_TABLE_SIZE asks
        // nothing of it (RFC 7541 §4.2); push is never sent; SETTINGS_MAX_HEADER_LIST_SIZE is
        // advisory (RFC 9113 §6.5.2).
        frame::write_settings_ack(&mut self.out);
        Ok(())
    }

    fn window_update(
        &mut self,
        stream: u32,
        increment: u32,
        emit: &mut dyn FnMut(Event),
    ) -> Result<(), ConnError> {
        let inc = i64::from(increment);
        if stream == 0 {
            self.send_window += inc;
            if self.send_window > MAX_WINDOW {
                // §6.9.1.
                return Err(self.fail(
                    ErrorCode::FLOW_CONTROL_ERROR,
                    "WINDOW_UPDATE takes the connection window past 2^31-1",
                ));
            }
            emit(Event::Window { stream: None });
            return Ok(());
        }
        if self.idle(stream) {
            // §5.1: WINDOW_UPDATE on an idle stream.
            return Err(self.fail(ErrorCode::PROTOCOL_ERROR, "WINDOW_UPDATE on an idle stream"));
        }
        let Some(i) = self.index(stream) else {
            // A closed stream: frames in flight are ignored (§6.9).
            return Ok(());
        };
        let s = &mut self.streams[i];
        s.send_window += inc;
        if s.send_window > MAX_WINDOW {
            // §6.9.1: a stream error.
            return self.reset_for_error(stream, ErrorCode::FLOW_CONTROL_ERROR, emit);
        }
        emit(Event::Window {
            stream: Some(stream),
        });
        Ok(())
    }

    /// The owner took `n` bytes of `stream`'s request body (delivered by [`Event::Data`]):
    /// the client may send that much more. WINDOW_UPDATE frames go out once half a window
    /// (the stream's, the connection's) has been consumed, so a steady reader gets one frame
    /// per half window, not one per DATA frame. Bytes of a stream that has ended were given
    /// back when it ended: releasing them does nothing.
    pub fn release(&mut self, stream: u32, n: u32) {
        if let Some(i) = self.index(stream) {
            let s = &mut self.streams[i];
            let n = n.min(s.unreleased);
            s.unreleased -= n;
            self.grant_stream(i, n);
        }
    }

    /// `n` bytes of stream `i` were consumed: granted back on the stream (while the client
    /// may still send on it) and on the connection, each at half its window.
    fn grant_stream(&mut self, i: usize, n: u32) {
        let s = &mut self.streams[i];
        if s.recv_open {
            let initial = self.cfg.initial_stream_window;
            owe(
                &mut self.out,
                s.id,
                initial,
                &mut s.to_grant,
                &mut s.recv_window,
                n,
            );
        }
        self.grant_conn(n);
    }

    /// `n` bytes were consumed on the connection: a WINDOW_UPDATE on stream 0 once half its
    /// window is owed.
    fn grant_conn(&mut self, n: u32) {
        let initial = self.cfg.initial_connection_window;
        owe(
            &mut self.out,
            0,
            initial,
            &mut self.to_grant,
            &mut self.recv_window,
            n,
        );
    }

    /// Removes stream `i`: what it received and the owner had not released is granted back
    /// on the connection now (the owner's later releases of it do nothing).
    fn remove(&mut self, i: usize) -> Stream {
        let s = self.streams.remove(i);
        if self.streams.is_empty() {
            // An idle connection holds no stream storage.
            self.streams = Vec::new();
        }
        self.grant_conn(s.unreleased);
        s
    }

    /// Whether client stream `stream` (≤ `last_stream`) was ever used (see `used`).
    fn was_used(&self, stream: u32) -> bool {
        if stream % 2 == 0 || stream > self.last_stream {
            return false;
        }
        let d = (self.last_stream - stream) / 2;
        d >= 128 || self.used >> d & 1 == 1
    }

    /// Whether `stream` is idle (RFC 9113 §5.1): never opened by the client, and not
    /// implicitly closed by a higher one (even ids never open on a server).
    fn idle(&self, stream: u32) -> bool {
        stream > self.last_stream || stream % 2 == 0
    }

    /// Whether the server reset `stream` lately (see `recent_resets`).
    fn recently_reset(&self, stream: u32) -> bool {
        self.recent(stream) == Some(false)
    }

    /// Whether `stream` was reset lately: `Some(true)` by the client, `Some(false)` by the
    /// server.
    fn recent(&self, stream: u32) -> Option<bool> {
        let i = self.recent_resets.iter().position(|&s| s == stream)?;
        Some(self.reset_by_client & (1 << i) != 0)
    }

    /// Notes that the server reset `stream`.
    fn note_reset(&mut self, stream: u32) {
        self.note(stream, false);
    }

    fn note(&mut self, stream: u32, by_client: bool) {
        let i = self.next_reset_slot;
        self.recent_resets[i] = stream;
        if by_client {
            self.reset_by_client |= 1 << i;
        } else {
            self.reset_by_client &= !(1 << i);
        }
        self.next_reset_slot = (i + 1) % self.recent_resets.len();
    }

    /// A frame on a closed stream the server did not reset: RST_STREAM STREAM_CLOSED (RFC
    /// 9113 §5.1, a stream error), counted as a client error.
    fn reset_closed(&mut self, stream: u32) -> Result<(), ConnError> {
        self.reset_for_error(stream, ErrorCode::STREAM_CLOSED, &mut |_| {})
    }

    /// Bytes of DATA `stream` may send now (its window and the connection's, 0 when either is
    /// spent or negative). A DATA frame is at most the client's SETTINGS_MAX_FRAME_SIZE;
    /// [`Server::send_data`] splits.
    pub fn send_capacity(&self, stream: u32) -> usize {
        match self.index(stream) {
            Some(i) if self.streams[i].send_open && !self.failed() => {
                self.streams[i].send_window.min(self.send_window).max(0) as usize
            }
            _ => 0,
        }
    }

    /// Sends a response head on `stream` (RFC 9113 §8.3.2: `:status`, then the fields;
    /// connection-specific fields and `te` are dropped, §8.2.2). A 1xx status is an interim
    /// response (it cannot end the stream). `end_stream`: no body follows. A 1xx or 204
    /// response carries no `content-length` (RFC 9110 §8.6; a client such as nghttp2 takes
    /// one for a malformed response), so it is dropped there; a 304 or the answer to a HEAD
    /// keeps it (RFC 9113 §8.1.1).
    ///
    /// Errors: [`SendError::Closed`] when the stream is not open for sending (the client
    /// reset it, or it was answered and ended).
    pub fn send_response(
        &mut self,
        stream: u32,
        status: u16,
        fields: &HeaderMap,
        end_stream: bool,
    ) -> Result<(), SendError> {
        let i = self.sendable(stream)?;
        if !(100..=999).contains(&status) || status == 101 {
            return Err(SendError::Misuse("status outside 100..=999, or 101"));
        }
        if self.streams[i].answered {
            return Err(SendError::Misuse("the final response was already sent"));
        }
        let informational = (100..200).contains(&status);
        let mut block = Vec::new();
        self.encoder.begin_block(&mut block);
        self.encoder.status(status, &mut block);
        let bodiless = informational || status == 204;
        encode_fields(&mut self.encoder, fields, bodiless, &mut block);
        let end_stream = end_stream && !informational;
        frame::write_headers(
            &mut self.out,
            stream,
            &block,
            end_stream,
            self.peer_max_frame_size,
        );
        if !informational && !self.streams[i].answered {
            self.streams[i].answered = true;
        }
        if end_stream {
            self.end_send(i);
        }
        Ok(())
    }

    /// Sends as much of `data` on `stream` as the flow-control windows allow (RFC 9113 §6.9),
    /// in DATA frames of at most the client's SETTINGS_MAX_FRAME_SIZE, and returns how many
    /// bytes it took. `end_stream` is set on the last frame only when all of `data` was taken
    /// (an empty `data` with `end_stream` sends an empty DATA frame that ends the stream).
    ///
    /// Errors: [`SendError::Closed`] when the stream is not open for sending.
    pub fn send_data(
        &mut self,
        stream: u32,
        data: &[u8],
        end_stream: bool,
    ) -> Result<usize, SendError> {
        let i = self.sendable(stream)?;
        if !self.streams[i].answered {
            return Err(SendError::Misuse("DATA before the final response head"));
        }
        let room = self.streams[i].send_window.min(self.send_window).max(0) as usize;
        let n = data.len().min(room);
        let end = end_stream && n == data.len();
        let max = self.peer_max_frame_size as usize;
        let mut chunks = data[..n].chunks(max).peekable();
        if n == 0 {
            if end {
                frame::write_data(&mut self.out, stream, &[], true);
            }
        } else {
            while let Some(c) = chunks.next() {
                frame::write_data(&mut self.out, stream, c, end && chunks.peek().is_none());
            }
        }
        self.streams[i].send_window -= n as i64;
        self.send_window -= n as i64;
        if end {
            self.end_send(i);
        }
        Ok(n)
    }

    /// Sends the response's trailer section, which ends the stream (RFC 9113 §8.1); a
    /// `content-length` in it is dropped (a framing field, RFC 9110 §6.5.1).
    ///
    /// Errors: [`SendError::Closed`] when the stream is not open for sending.
    pub fn send_trailers(&mut self, stream: u32, fields: &HeaderMap) -> Result<(), SendError> {
        let i = self.sendable(stream)?;
        if !self.streams[i].answered {
            return Err(SendError::Misuse("trailers before the final response head"));
        }
        let mut block = Vec::new();
        self.encoder.begin_block(&mut block);
        encode_fields(&mut self.encoder, fields, true, &mut block);
        frame::write_headers(
            &mut self.out,
            stream,
            &block,
            true,
            self.peer_max_frame_size,
        );
        self.end_send(i);
        Ok(())
    }

    /// Resets `stream` with `code` (RST_STREAM, RFC 9113 §6.4), unless it has ended. What
    /// the client had sent on it and the owner had not released is granted back on the
    /// connection.
    pub fn send_reset(&mut self, stream: u32, code: ErrorCode) {
        if let Some(i) = self.index(stream) {
            if self.phase != Phase::Failed {
                frame::write_rst_stream(&mut self.out, stream, code);
            }
            self.remove(i);
            self.note_reset(stream);
        }
    }

    /// Starts a graceful shutdown: GOAWAY NO_ERROR naming the last stream opened (RFC 9113
    /// §6.8). Open streams go on; streams the client opens afterwards are refused
    /// (REFUSED_STREAM: it may retry them elsewhere).
    pub fn go_away(&mut self) {
        if !self.goaway_sent && self.phase != Phase::Failed {
            self.goaway_sent = true;
            self.goaway_last = self.last_stream;
            frame::write_goaway(&mut self.out, self.goaway_last, ErrorCode::NO_ERROR, b"");
        }
    }

    /// Whether GOAWAY has been sent.
    pub fn going_away(&self) -> bool {
        self.goaway_sent
    }

    /// Whether the client's preface and first SETTINGS have come (RFC 9113 §3.4): the
    /// connection is open for streams.
    pub fn established(&self) -> bool {
        self.phase == Phase::Open
    }

    /// Where `stream` stands: `Some((recv_open, send_open))` while it is open (the client
    /// may still send on it; the server may), `None` once it has ended either way.
    pub fn stream_state(&self, stream: u32) -> Option<(bool, bool)> {
        self.index(stream)
            .map(|i| (self.streams[i].recv_open, self.streams[i].send_open))
    }

    /// The index of a stream open for sending.
    fn sendable(&self, stream: u32) -> Result<usize, SendError> {
        if self.phase == Phase::Failed {
            return Err(SendError::ConnectionClosed);
        }
        match self.index(stream) {
            Some(i) if self.streams[i].send_open => Ok(i),
            _ => Err(SendError::Closed),
        }
    }

    /// The server has sent the end of stream `i`.
    fn end_send(&mut self, i: usize) {
        self.streams[i].send_open = false;
        let id = self.streams[i].id;
        self.close_if_done(id);
    }

    /// Removes `stream` when both sides have ended it (RFC 9113 §5.1 closed).
    fn close_if_done(&mut self, stream: u32) {
        if let Some(i) = self.index(stream) {
            let s = &self.streams[i];
            if !s.recv_open && !s.send_open {
                self.remove(i);
            }
        }
    }

    /// A stream error (RFC 9113 §5.4.2) for the client's fault: RST_STREAM `code`, the
    /// stream's unreleased bytes given back, an [`Event::Reset`] if the owner knew it; too
    /// many end the connection (ENHANCE_YOUR_CALM).
    fn reset_for_error(
        &mut self,
        stream: u32,
        code: ErrorCode,
        emit: &mut dyn FnMut(Event),
    ) -> Result<(), ConnError> {
        self.local_resets += 1;
        if self.local_resets > self.cfg.max_local_error_reset_streams {
            return Err(self.fail(
                ErrorCode::ENHANCE_YOUR_CALM,
                "too many streams reset for the client's errors",
            ));
        }
        frame::write_rst_stream(&mut self.out, stream, code);
        self.note_reset(stream);
        if let Some(i) = self.index(stream) {
            self.remove(i);
            emit(Event::Reset {
                stream,
                code,
                by_client: false,
            });
        }
        Ok(())
    }

    /// Answers a request whose header section is too large: 431, no body; what the client
    /// sends on the stream afterwards is discarded as on a closed stream.
    fn answer_431(&mut self, stream: u32, end_stream: bool) {
        let mut block = Vec::new();
        self.encoder.begin_block(&mut block);
        self.encoder.status(431, &mut block);
        frame::write_headers(
            &mut self.out,
            stream,
            &block,
            true,
            self.peer_max_frame_size,
        );
        if !end_stream {
            // The request body will not be read (RFC 9113 §8.1: NO_ERROR after a complete
            // response).
            frame::write_rst_stream(&mut self.out, stream, ErrorCode::NO_ERROR);
            self.note_reset(stream);
        }
    }

    /// A frame-level error from [`frame::parse`] or [`Head::check_len`].
    fn frame_error(&mut self, e: FrameError, why: &'static str) -> ConnError {
        match e {
            FrameError::Connection(code) | FrameError::Stream(_, code) => self.fail(code, why),
        }
    }

    /// A connection error: GOAWAY `code` with the last stream processed (RFC 9113 §5.4.1).
    fn fail(&mut self, code: ErrorCode, why: &'static str) -> ConnError {
        if self.phase != Phase::Failed {
            let last = self.last_stream.min(self.goaway_last);
            frame::write_goaway(&mut self.out, last, code, why.as_bytes());
            self.phase = Phase::Failed;
        }
        self.streams.clear();
        self.block = None;
        ConnError { code, why }
    }

    fn index(&self, stream: u32) -> Option<usize> {
        self.streams.binary_search_by_key(&stream, |s| s.id).ok()
    }
}

/// Adds `n` consumed bytes to what `stream` (0: the connection) owes the client; once that
/// reaches half of `initial` (its initial receive window), grants it all in one WINDOW_UPDATE
/// (RFC 9113 §6.9) and widens `window` by as much.
fn owe(out: &mut Vec<u8>, stream: u32, initial: u32, owed: &mut u32, window: &mut i64, n: u32) {
    *owed = owed.saturating_add(n);
    if *owed >= (initial / 2).max(1) {
        *window += i64::from(*owed);
        frame::write_window_update(out, stream, *owed);
        *owed = 0;
    }
}

/// Connection-specific fields (RFC 9113 §8.2.2): malformed in a request, never sent.
fn connection_specific(name: &[u8]) -> bool {
    matches!(
        name,
        b"connection" | b"keep-alive" | b"proxy-connection" | b"transfer-encoding" | b"upgrade"
    )
}

/// Appends the fields of a response head or trailer section (names are lower case in a
/// `HeaderMap`), minus connection-specific ones and `te` (a request field, RFC 9113 §8.2.2),
/// and minus `content-length` when `drop_length` (a section that cannot carry it); sensitive
/// values as never-indexed literals.
fn encode_fields(
    encoder: &mut Encoder,
    fields: &HeaderMap,
    drop_length: bool,
    block: &mut Vec<u8>,
) {
    for (name, value) in fields {
        let n = name.as_str().as_bytes();
        if connection_specific(n) || n == b"te" || (drop_length && n == b"content-length") {
            continue;
        }
        encoder.field(n, value.as_bytes(), value.is_sensitive(), block);
    }
}

/// The `content-length` of a request (RFC 9110 §8.6: digits only; several fields or a list
/// must agree). Err: malformed.
fn content_length(fields: &HeaderMap) -> Result<Option<u64>, ()> {
    let mut found: Option<u64> = None;
    for v in fields.get_all(http::header::CONTENT_LENGTH) {
        for part in v.as_bytes().split(|&b| b == b',') {
            let part = part.trim_ascii();
            if part.is_empty() || !part.iter().all(u8::is_ascii_digit) || part.len() > 19 {
                return Err(());
            }
            let n = part.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
            match found {
                Some(f) if f != n => return Err(()),
                _ => found = Some(n),
            }
        }
    }
    Ok(found)
}

/// Sets a pseudo-header field's `slot` from its parsed value, unless it came already
/// (RFC 9113 §8.3: each at most once).
fn once<T>(slot: &mut Option<T>, v: Result<T, &'static str>) -> Result<(), &'static str> {
    if slot.is_some() {
        return Err("repeated pseudo-header field");
    }
    *slot = Some(v?);
    Ok(())
}

/// A header block's fields as they are decoded, checked as they come (RFC 9113 §8.2, §8.3.1).
#[derive(Debug)]
struct Fields {
    limit: usize,
    /// Bytes counted so far (name + value + 32 per field, RFC 9113 §6.5.2).
    size: usize,
    too_large: bool,
    /// The first rule broken, if any.
    broken: Option<&'static str>,
    has_pseudo: bool,
    regular_seen: bool,
    method: Option<Method>,
    scheme: Option<Vec<u8>>,
    authority: Option<http::uri::Authority>,
    path: Option<http::uri::PathAndQuery>,
    map: HeaderMap,
}

impl Fields {
    fn new(limit: usize) -> Fields {
        Fields {
            limit,
            size: 0,
            too_large: false,
            broken: None,
            has_pseudo: false,
            regular_seen: false,
            method: None,
            scheme: None,
            authority: None,
            path: None,
            map: HeaderMap::new(),
        }
    }

    fn field(&mut self, name: &[u8], value: &[u8]) {
        self.size += name.len() + value.len() + 32;
        if self.size > self.limit {
            self.too_large = true;
        }
        if self.too_large || self.broken.is_some() {
            return;
        }
        if let Err(why) = self.check(name, value) {
            self.broken = Some(why);
        }
    }

    fn check(&mut self, name: &[u8], value: &[u8]) -> Result<(), &'static str> {
        // §8.2.1: no NUL, CR or LF anywhere in a value; no leading or trailing SP or HTAB.
        if value.iter().any(|&b| b == 0 || b == b'\r' || b == b'\n') {
            return Err("field value with NUL, CR or LF");
        }
        if matches!(value.first(), Some(b' ' | b'\t')) || matches!(value.last(), Some(b' ' | b'\t'))
        {
            return Err("field value with leading or trailing whitespace");
        }
        if let Some(pseudo) = name.strip_prefix(b":") {
            self.has_pseudo = true;
            // §8.3: pseudo-header fields come before the regular ones, once each.
            if self.regular_seen {
                return Err("pseudo-header field after a regular field");
            }
            // Each parsed as it comes (one copy of the value).
            return match pseudo {
                b"method" => once(
                    &mut self.method,
                    Method::from_bytes(value).map_err(|_| "invalid :method"),
                ),
                b"scheme" => once(&mut self.scheme, Ok(value.to_vec())),
                b"authority" => once(
                    &mut self.authority,
                    // RFC 9113 §8.3.1: no userinfo.
                    if value.contains(&b'@') {
                        Err(":authority with userinfo")
                    } else {
                        http::uri::Authority::try_from(value).map_err(|_| "invalid :authority")
                    },
                ),
                b"path" => once(
                    &mut self.path,
                    http::uri::PathAndQuery::try_from(value).map_err(|_| "invalid :path"),
                ),
                _ => Err("unknown pseudo-header field"),
            };
        }
        self.regular_seen = true;
        // §8.2: names are lower case; §8.2.2: no connection-specific fields; `te` only
        // "trailers".
        if name.iter().any(u8::is_ascii_uppercase) {
            return Err("upper-case field name");
        }
        if connection_specific(name) {
            return Err("connection-specific field");
        }
        if name == b"te" && value != b"trailers" {
            return Err("te other than trailers");
        }
        let name = HeaderName::from_bytes(name).map_err(|_| "invalid field name")?;
        let value = HeaderValue::from_bytes(value).map_err(|_| "invalid field value")?;
        // `HeaderMap` holds at most 24,576 distinct names (more panics in `append`): a
        // section that large is answered as too large.
        if self.map.try_append(name, value).is_err() {
            self.too_large = true;
        }
        Ok(())
    }

    /// The request head (RFC 9113 §8.3.1), or why it is malformed.
    fn request(self) -> Result<http::request::Parts, &'static str> {
        if let Some(why) = self.broken {
            return Err(why);
        }
        let method = self.method.ok_or("no :method")?;
        let mut uri = http::uri::Parts::default();
        if method == Method::CONNECT {
            // §8.5: only :method and :authority.
            if self.scheme.is_some() || self.path.is_some() {
                return Err("CONNECT with :scheme or :path");
            }
            uri.authority = Some(self.authority.ok_or("CONNECT without :authority")?);
        } else {
            let scheme = self.scheme.ok_or("no :scheme")?;
            let path = self.path.ok_or("no :path")?;
            // §8.3.1: origin-form ("/..."), or "*" for OPTIONS (asterisk-form). `http`'s
            // parser takes "?a" and "*" with any method.
            let asterisk = path == "*" && method == Method::OPTIONS;
            if !path.as_str().starts_with('/') && !asterisk {
                return Err(":path not origin-form (or * for OPTIONS)");
            }
            uri.path_and_query = Some(path);
            if let Some(a) = self.authority {
                uri.authority = Some(a);
                uri.scheme = Some(
                    http::uri::Scheme::try_from(scheme.as_slice())
                        .map_err(|_| "invalid :scheme")?,
                );
            }
        }
        let uri = Uri::from_parts(uri).map_err(|_| "invalid request target")?;
        let (mut head, ()) = http::Request::new(()).into_parts();
        head.method = method;
        head.uri = uri;
        head.version = http::Version::HTTP_2;
        head.headers = self.map;
        Ok(head)
    }
}

#[cfg(test)]
mod tests;
