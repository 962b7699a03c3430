//! HTTP/2 frames (RFC 9113 §4 and §6), sans-IO.
//!
//! Receiving is two steps, so that the connection layer can bound what it buffers: read
//! [`HEAD_LEN`] octets and [`Head::parse`] them, check the length against the
//! SETTINGS_MAX_FRAME_SIZE in force with [`Head::check_len`], then read `head.len` octets and
//! [`parse`] them into a [`Frame`] that borrows from that payload. [`parse`] checks every rule
//! that can be checked from the frame alone and says what a violation costs ([`FrameError`]:
//! the connection or one stream, §5.4); rules that need state (stream states, CONTINUATION
//! sequencing, SETTINGS in force, flow-control windows) belong to the connection layer.
//!
//! Sending: the `write_*` functions append whole frames (head and payload) to a `Vec<u8>`,
//! except [`write_data_head`], which writes only the head so that a DATA payload can go out
//! from its own buffer without a copy. Writers never pad and never send PRIORITY.
//!
//! Nothing here panics on peer data: every length is checked before a slice is taken.

use std::fmt;

/// Octets in a frame header (§4.1): 24-bit length, 8-bit type, 8-bit flags, 1 reserved bit and
/// a 31-bit stream identifier.
pub const HEAD_LEN: usize = 9;

/// The client connection preface (§3.4), sent before the client's first SETTINGS frame.
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The initial SETTINGS_MAX_FRAME_SIZE (§6.5.2), in octets of payload; also the smallest value
/// a peer may set, so every peer accepts frames this large.
pub const DEFAULT_MAX_FRAME_SIZE: u32 = 16_384;

/// The largest SETTINGS_MAX_FRAME_SIZE allowed (§6.5.2): 2^24-1 octets of payload.
pub const MAX_FRAME_SIZE_LIMIT: u32 = (1 << 24) - 1;

/// The largest flow-control window (§6.9.1): 2^31-1 octets; also the largest
/// SETTINGS_INITIAL_WINDOW_SIZE (§6.5.2).
pub const MAX_WINDOW: u32 = (1 << 31) - 1;

/// The initial flow-control window of the connection and of each stream (§6.9.2), in octets.
pub const DEFAULT_WINDOW: u32 = 65_535;

/// The reserved bit of a stream identifier (§4.1) or of a promised, last or dependency stream
/// identifier and a window increment; ignored on receipt, never set when sending.
const RESERVED_BIT: u32 = 1 << 31;

/// An error code (§7), as carried by RST_STREAM and GOAWAY; unknown codes are kept as they
/// came (§7: they must not trigger special behaviour, and may be treated as INTERNAL_ERROR).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ErrorCode(pub u32);

impl ErrorCode {
    /// 0x0: graceful shutdown, not an error.
    pub const NO_ERROR: ErrorCode = ErrorCode(0x0);
    /// 0x1: an unspecific protocol error.
    pub const PROTOCOL_ERROR: ErrorCode = ErrorCode(0x1);
    /// 0x2: an unexpected internal error.
    pub const INTERNAL_ERROR: ErrorCode = ErrorCode(0x2);
    /// 0x3: the peer violated the flow-control protocol.
    pub const FLOW_CONTROL_ERROR: ErrorCode = ErrorCode(0x3);
    /// 0x4: a SETTINGS frame was not acknowledged in time.
    pub const SETTINGS_TIMEOUT: ErrorCode = ErrorCode(0x4);
    /// 0x5: a frame arrived after the stream was half-closed.
    pub const STREAM_CLOSED: ErrorCode = ErrorCode(0x5);
    /// 0x6: a frame had an invalid size.
    pub const FRAME_SIZE_ERROR: ErrorCode = ErrorCode(0x6);
    /// 0x7: the stream was refused before any application processing.
    pub const REFUSED_STREAM: ErrorCode = ErrorCode(0x7);
    /// 0x8: the stream is no longer needed.
    pub const CANCEL: ErrorCode = ErrorCode(0x8);
    /// 0x9: the field-compression (HPACK) context could not be maintained.
    pub const COMPRESSION_ERROR: ErrorCode = ErrorCode(0x9);
    /// 0xa: the connection of a CONNECT request was reset or closed abnormally.
    pub const CONNECT_ERROR: ErrorCode = ErrorCode(0xa);
    /// 0xb: the peer is generating excessive load.
    pub const ENHANCE_YOUR_CALM: ErrorCode = ErrorCode(0xb);
    /// 0xc: the transport's security properties are not good enough.
    pub const INADEQUATE_SECURITY: ErrorCode = ErrorCode(0xc);
    /// 0xd: the endpoint requires HTTP/1.1 instead of HTTP/2.
    pub const HTTP_1_1_REQUIRED: ErrorCode = ErrorCode(0xd);

    /// The code's name in RFC 9113 §7 (`"PROTOCOL_ERROR"`), or `None` for an unknown code.
    fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0x0 => "NO_ERROR",
            0x1 => "PROTOCOL_ERROR",
            0x2 => "INTERNAL_ERROR",
            0x3 => "FLOW_CONTROL_ERROR",
            0x4 => "SETTINGS_TIMEOUT",
            0x5 => "STREAM_CLOSED",
            0x6 => "FRAME_SIZE_ERROR",
            0x7 => "REFUSED_STREAM",
            0x8 => "CANCEL",
            0x9 => "COMPRESSION_ERROR",
            0xa => "CONNECT_ERROR",
            0xb => "ENHANCE_YOUR_CALM",
            0xc => "INADEQUATE_SECURITY",
            0xd => "HTTP_1_1_REQUIRED",
            _ => return None,
        })
    }
}

impl fmt::Display for ErrorCode {
    /// The name (`PROTOCOL_ERROR`), or the code in hex (`0x2a`) when unknown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "{:#x}", self.0),
        }
    }
}

/// Frame types (§6), the `kind` octet of a [`Head`].
pub mod kind {
    /// DATA (§6.1): request or response content.
    pub const DATA: u8 = 0x0;
    /// HEADERS (§6.2): opens a stream and carries a field block (fragment).
    pub const HEADERS: u8 = 0x1;
    /// PRIORITY (§6.3): deprecated stream priority; parsed and otherwise ignored.
    pub const PRIORITY: u8 = 0x2;
    /// RST_STREAM (§6.4): ends a stream at once.
    pub const RST_STREAM: u8 = 0x3;
    /// SETTINGS (§6.5): configuration parameters, or their acknowledgement.
    pub const SETTINGS: u8 = 0x4;
    /// PUSH_PROMISE (§6.6): a server push; never valid from a client.
    pub const PUSH_PROMISE: u8 = 0x5;
    /// PING (§6.7): round-trip measurement and liveness.
    pub const PING: u8 = 0x6;
    /// GOAWAY (§6.8): graceful or abortive connection shutdown.
    pub const GOAWAY: u8 = 0x7;
    /// WINDOW_UPDATE (§6.9): flow-control credit.
    pub const WINDOW_UPDATE: u8 = 0x8;
    /// CONTINUATION (§6.10): the rest of a field block.
    pub const CONTINUATION: u8 = 0x9;
}

/// Frame flags (§6), bits of the `flags` octet of a [`Head`]; each means something only on the
/// frame types named. Flags a type does not define are ignored on receipt (§4.1).
pub mod flag {
    /// DATA, HEADERS (§6.1, §6.2): the last frame the sender sends on this stream.
    pub const END_STREAM: u8 = 0x1;
    /// SETTINGS, PING (§6.5, §6.7): an acknowledgement.
    pub const ACK: u8 = 0x1;
    /// HEADERS, PUSH_PROMISE, CONTINUATION (§6.2, §6.6, §6.10): the field block ends here.
    pub const END_HEADERS: u8 = 0x4;
    /// DATA, HEADERS, PUSH_PROMISE (§6.1, §6.2, §6.6): a Pad Length octet and padding present.
    pub const PADDED: u8 = 0x8;
    /// HEADERS (§6.2): the Exclusive, Stream Dependency and Weight fields are present.
    pub const PRIORITY: u8 = 0x20;
}

/// The 9-octet frame header (§4.1). The reserved bit of the stream identifier is ignored on
/// receipt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    /// Payload length in octets, not counting these 9 (24 bits: below 2^24).
    pub len: u32,
    /// Frame type: one of [`kind`], or an unknown type to be ignored.
    pub kind: u8,
    /// Flags: bits of [`flag`]; undefined bits are ignored.
    pub flags: u8,
    /// Stream identifier (31 bits); 0 is the connection.
    pub stream: u32,
}

impl Head {
    /// Reads a frame header; any 9 octets are a header (the reserved bit is dropped). What the
    /// fields allow is [`Head::check_len`]'s and [`parse`]'s concern.
    pub fn parse(b: &[u8; HEAD_LEN]) -> Head {
        Head {
            len: u32::from_be_bytes([0, b[0], b[1], b[2]]),
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & !RESERVED_BIT,
        }
    }

    /// Appends the 9 octets of this header to `out`. `len` must be below 2^24 and `stream`
    /// below 2^31 (checked by `debug_assert`; in release the high bits are dropped).
    pub fn write(&self, out: &mut Vec<u8>) {
        debug_assert!(
            self.len <= MAX_FRAME_SIZE_LIMIT,
            "frame length {}",
            self.len
        );
        debug_assert!(self.stream & RESERVED_BIT == 0, "stream id {}", self.stream);
        let len = self.len.to_be_bytes();
        out.extend_from_slice(&[len[1], len[2], len[3], self.kind, self.flags]);
        out.extend_from_slice(&(self.stream & !RESERVED_BIT).to_be_bytes());
    }

    /// Checks the payload length against the receiver's SETTINGS_MAX_FRAME_SIZE (§4.2), before
    /// the payload is buffered: longer → `Connection(FRAME_SIZE_ERROR)`. (§4.2 allows a stream
    /// error for some frames; a connection error is always allowed, and the oversized payload
    /// is never read.)
    pub fn check_len(&self, max_frame_size: u32) -> Result<(), FrameError> {
        if self.len > max_frame_size {
            return Err(FrameError::Connection(ErrorCode::FRAME_SIZE_ERROR));
        }
        Ok(())
    }
}

/// A stream's priority (RFC 9113 §5.3.2, §6.3; the RFC 7540 scheme, deprecated but still
/// carried by HEADERS and PRIORITY frames).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Priority {
    /// The stream this one depends on (31 bits; 0 is the root).
    pub dependency: u32,
    /// The E bit: an exclusive dependency.
    pub exclusive: bool,
    /// The weight as sent: 0..=255, meaning 1..=256.
    pub weight: u8,
}

/// SETTINGS parameters (§6.5.2) as received; `None` = not in this frame; when one appears twice
/// the last wins. Unknown identifiers are ignored (§6.5.2). Values in `Some` have passed
/// [`parse`]'s range checks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// SETTINGS_HEADER_TABLE_SIZE (0x1): the largest HPACK dynamic table the sender's decoder
    /// allows, in octets (initially 4096).
    pub header_table_size: Option<u32>,
    /// SETTINGS_ENABLE_PUSH (0x2): whether server push is allowed (initially true; a server must
    /// never send 1).
    pub enable_push: Option<bool>,
    /// SETTINGS_MAX_CONCURRENT_STREAMS (0x3): streams the sender lets its peer open (initially
    /// unlimited).
    pub max_concurrent_streams: Option<u32>,
    /// SETTINGS_INITIAL_WINDOW_SIZE (0x4): each stream's initial send window, in octets
    /// (initially 65,535; at most [`MAX_WINDOW`]).
    pub initial_window_size: Option<u32>,
    /// SETTINGS_MAX_FRAME_SIZE (0x5): the largest frame payload the sender accepts, in octets
    /// ([`DEFAULT_MAX_FRAME_SIZE`]..=[`MAX_FRAME_SIZE_LIMIT`]).
    pub max_frame_size: Option<u32>,
    /// SETTINGS_MAX_HEADER_LIST_SIZE (0x6): advisory largest field section, in octets of
    /// uncompressed names and values plus 32 per field (initially unlimited).
    pub max_header_list_size: Option<u32>,
    /// SETTINGS_ENABLE_CONNECT_PROTOCOL (0x8, RFC 8441 §3): whether extended CONNECT
    /// (`:protocol`) is allowed.
    pub enable_connect_protocol: Option<bool>,
}

/// SETTINGS identifiers (§6.5.2; 0x8 is RFC 8441 §3).
mod setting {
    pub const HEADER_TABLE_SIZE: u16 = 0x1;
    pub const ENABLE_PUSH: u16 = 0x2;
    pub const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    pub const INITIAL_WINDOW_SIZE: u16 = 0x4;
    pub const MAX_FRAME_SIZE: u16 = 0x5;
    pub const MAX_HEADER_LIST_SIZE: u16 = 0x6;
    pub const ENABLE_CONNECT_PROTOCOL: u16 = 0x8;
}

/// One parsed frame; slices borrow from the payload given to [`parse`].
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// DATA (§6.1), padding removed.
    Data {
        /// The stream (never 0).
        stream: u32,
        /// The content, without Pad Length octet and padding.
        data: &'a [u8],
        /// END_STREAM: the sender's last frame on this stream.
        end_stream: bool,
        /// The whole payload length, padding included: what counts against flow control
        /// (§6.9.1), in octets.
        flow_len: u32,
    },
    /// HEADERS (§6.2), padding and priority fields removed.
    Headers {
        /// The stream (never 0).
        stream: u32,
        /// The field block fragment (HPACK), to be joined with any CONTINUATION fragments.
        block: &'a [u8],
        /// END_STREAM: no DATA follows on this stream.
        end_stream: bool,
        /// END_HEADERS: the field block is complete; otherwise CONTINUATION frames follow.
        end_headers: bool,
        /// The priority fields, when the PRIORITY flag was set.
        priority: Option<Priority>,
    },
    /// PRIORITY (§6.3).
    Priority {
        /// The stream (never 0).
        stream: u32,
        /// Its priority (never depending on itself).
        priority: Priority,
    },
    /// RST_STREAM (§6.4).
    RstStream {
        /// The stream (never 0).
        stream: u32,
        /// Why the stream ends.
        code: ErrorCode,
    },
    /// SETTINGS (§6.5), on stream 0.
    Settings {
        /// ACK: acknowledges the peer's SETTINGS; then `settings` is empty.
        ack: bool,
        /// The parameters carried, range-checked.
        settings: Settings,
    },
    /// PUSH_PROMISE (§6.6), padding removed. Clients must not send it; the connection layer
    /// rejects it.
    PushPromise {
        /// The associated stream (never 0).
        stream: u32,
        /// The promised stream identifier (reserved bit dropped).
        promised: u32,
        /// The field block fragment of the promised request.
        block: &'a [u8],
        /// END_HEADERS: the field block is complete.
        end_headers: bool,
    },
    /// PING (§6.7), on stream 0.
    Ping {
        /// ACK: this is a reply to our PING.
        ack: bool,
        /// The opaque data, to be echoed in the reply.
        data: [u8; 8],
    },
    /// GOAWAY (§6.8), on stream 0.
    GoAway {
        /// The highest stream the sender may have processed (reserved bit dropped).
        last_stream: u32,
        /// Why the connection ends.
        code: ErrorCode,
        /// Opaque diagnostic data (possibly empty).
        debug: &'a [u8],
    },
    /// WINDOW_UPDATE (§6.9).
    WindowUpdate {
        /// The stream, or 0 for the connection window.
        stream: u32,
        /// The credit in octets: 1..=2^31-1 (reserved bit dropped).
        increment: u32,
    },
    /// CONTINUATION (§6.10).
    Continuation {
        /// The stream (never 0).
        stream: u32,
        /// The next field block fragment.
        block: &'a [u8],
        /// END_HEADERS: the field block is complete.
        end_headers: bool,
    },
    /// A frame type this implementation does not know: to be ignored (§4.1, §5.5).
    Unknown {
        /// The frame type.
        kind: u8,
        /// The stream identifier it carried.
        stream: u32,
    },
}

/// What a malformed frame costs (§5.4): the whole connection, or only one stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// A connection error (§5.4.1): send GOAWAY with this code and close.
    Connection(ErrorCode),
    /// A stream error (§5.4.2): send RST_STREAM with this code on this stream; the connection
    /// goes on.
    Stream(u32, ErrorCode),
}

impl FrameError {
    /// The error code to send (in GOAWAY or RST_STREAM).
    pub fn code(&self) -> ErrorCode {
        match *self {
            FrameError::Connection(code) | FrameError::Stream(_, code) => code,
        }
    }
}

impl fmt::Display for FrameError {
    /// `connection error PROTOCOL_ERROR`, or `stream 3 error FRAME_SIZE_ERROR`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Connection(code) => write!(f, "connection error {code}"),
            FrameError::Stream(id, code) => write!(f, "stream {id} error {code}"),
        }
    }
}

impl std::error::Error for FrameError {}

/// `Connection(code)`, shorter.
fn conn_err(code: ErrorCode) -> FrameError {
    FrameError::Connection(code)
}

/// A big-endian u32 from the first 4 octets of `b` (the caller has checked `b.len() >= 4`).
fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Removes the Pad Length octet and the padding (§6.1, also §6.2, §6.6) when `flags` has
/// PADDED, returning what lies between.
fn unpad(flags: u8, payload: &[u8]) -> Result<&[u8], FrameError> {
    if flags & flag::PADDED == 0 {
        return Ok(payload);
    }
    // §4.2: a frame too small to contain mandatory frame data (here the Pad Length octet) is a
    // FRAME_SIZE_ERROR.
    let (&pad, rest) = payload
        .split_first()
        .ok_or(conn_err(ErrorCode::FRAME_SIZE_ERROR))?;
    // §6.1: padding as long as the frame payload or longer is a connection PROTOCOL_ERROR.
    // The payload counts the Pad Length octet, so `pad == rest.len()` (no data) is allowed.
    let keep = rest
        .len()
        .checked_sub(usize::from(pad))
        .ok_or(conn_err(ErrorCode::PROTOCOL_ERROR))?;
    Ok(&rest[..keep])
}

/// Reads the 5 priority octets (§6.3: E bit and 31-bit dependency, weight) at the start of `b`;
/// `None` when `b` is shorter.
fn read_priority(b: &[u8]) -> Option<(Priority, &[u8])> {
    if b.len() < 5 {
        return None;
    }
    let (fields, rest) = b.split_at(5);
    let word = be32(fields);
    let priority = Priority {
        dependency: word & !RESERVED_BIT,
        exclusive: word & RESERVED_BIT != 0,
        weight: fields[4],
    };
    Some((priority, rest))
}

/// Parses one frame's payload (`payload.len() == head.len as usize`, else
/// `Connection(FRAME_SIZE_ERROR)`). Checks everything that can be checked from the frame alone;
/// state-dependent rules (stream state, CONTINUATION sequencing, SETTINGS_MAX_FRAME_SIZE) are the
/// connection layer's. Flags a type does not define are ignored, and so is an unknown type's
/// payload ([`Frame::Unknown`]). Never panics, whatever the input.
pub fn parse<'a>(head: &Head, payload: &'a [u8]) -> Result<Frame<'a>, FrameError> {
    if payload.len() != head.len as usize {
        return Err(conn_err(ErrorCode::FRAME_SIZE_ERROR));
    }
    let stream = head.stream & !RESERVED_BIT;
    let flags = head.flags;
    match head.kind {
        kind::DATA => {
            // §6.1: DATA must be associated with a stream.
            if stream == 0 {
                return Err(conn_err(ErrorCode::PROTOCOL_ERROR));
            }
            let data = unpad(flags, payload)?;
            Ok(Frame::Data {
                stream,
                data,
                end_stream: flags & flag::END_STREAM != 0,
                // §6.1, §6.9.1: the entire payload, padding included, is flow-controlled.
                flow_len: head.len,
            })
        }
        kind::HEADERS => {
            // §6.2: HEADERS must be associated with a stream.
            if stream == 0 {
                return Err(conn_err(ErrorCode::PROTOCOL_ERROR));
            }
            // §6.2: Pad Length first, then the priority fields, then the block, then padding.
            let mut block = unpad(flags, payload)?;
            let mut priority = None;
            if flags & flag::PRIORITY != 0 {
                // §4.2: too small to hold the priority fields → FRAME_SIZE_ERROR.
                let (p, rest) =
                    read_priority(block).ok_or(conn_err(ErrorCode::FRAME_SIZE_ERROR))?;
                // §5.3.1: a stream cannot depend on itself: stream PROTOCOL_ERROR.
                if p.dependency == stream {
                    return Err(FrameError::Stream(stream, ErrorCode::PROTOCOL_ERROR));
                }
                priority = Some(p);
                block = rest;
            }
            Ok(Frame::Headers {
                stream,
                block,
                end_stream: flags & flag::END_STREAM != 0,
                end_headers: flags & flag::END_HEADERS != 0,
                priority,
            })
        }
        kind::PRIORITY => {
            // §6.3: PRIORITY on stream 0 is a connection PROTOCOL_ERROR.
            if stream == 0 {
                return Err(conn_err(ErrorCode::PROTOCOL_ERROR));
            }
            // §6.3: a length other than 5 is a stream FRAME_SIZE_ERROR.
            let priority = match read_priority(payload) {
                Some((p, [])) => p,
                _ => return Err(FrameError::Stream(stream, ErrorCode::FRAME_SIZE_ERROR)),
            };
            // §5.3.1: a stream cannot depend on itself: stream PROTOCOL_ERROR.
            if priority.dependency == stream {
                return Err(FrameError::Stream(stream, ErrorCode::PROTOCOL_ERROR));
            }
            Ok(Frame::Priority { stream, priority })
        }
        kind::RST_STREAM => {
            // §6.4: RST_STREAM on stream 0 is a connection PROTOCOL_ERROR.
            if stream == 0 {
                return Err(conn_err(ErrorCode::PROTOCOL_ERROR));
            }
            // §6.4: a length other than 4 is a connection FRAME_SIZE_ERROR.
            if payload.len() != 4 {
                return Err(conn_err(ErrorCode::FRAME_SIZE_ERROR));
            }
            Ok(Frame::RstStream {
                stream,
                code: ErrorCode(be32(payload)),
            })
        }
        kind::SETTINGS => parse_settings(stream, flags, payload),
        kind::PUSH_PROMISE => {
            // §6.6: PUSH_PROMISE must be associated with a stream.
            if stream == 0 {
                return Err(conn_err(ErrorCode::PROTOCOL_ERROR));
            }
            let rest = unpad(flags, payload)?;
            // §4.2: too small to hold the Promised Stream ID → FRAME_SIZE_ERROR.
            if rest.len() < 4 {
                return Err(conn_err(ErrorCode::FRAME_SIZE_ERROR));
            }
            let (promised, block) = rest.split_at(4);
            Ok(Frame::PushPromise {
                stream,
                // §6.6: the reserved bit is ignored.
                promised: be32(promised) & !RESERVED_BIT,
                block,
                end_headers: flags & flag::END_HEADERS != 0,
            })
        }
        kind::PING => {
            // §6.7: PING on a stream other than 0 is a connection PROTOCOL_ERROR.
            if stream != 0 {
                return Err(conn_err(ErrorCode::PROTOCOL_ERROR));
            }
            // §6.7: a length other than 8 is a connection FRAME_SIZE_ERROR.
            let data: [u8; 8] = payload
                .try_into()
                .map_err(|_| conn_err(ErrorCode::FRAME_SIZE_ERROR))?;
            Ok(Frame::Ping {
                ack: flags & flag::ACK != 0,
                data,
            })
        }
        kind::GOAWAY => {
            // §6.8: GOAWAY on a stream other than 0 is a connection PROTOCOL_ERROR.
            if stream != 0 {
                return Err(conn_err(ErrorCode::PROTOCOL_ERROR));
            }
            // §4.2: shorter than Last-Stream-ID and Error Code → FRAME_SIZE_ERROR.
            if payload.len() < 8 {
                return Err(conn_err(ErrorCode::FRAME_SIZE_ERROR));
            }
            let (fixed, debug) = payload.split_at(8);
            Ok(Frame::GoAway {
                // §6.8: the reserved bit is ignored.
                last_stream: be32(fixed) & !RESERVED_BIT,
                code: ErrorCode(be32(&fixed[4..])),
                debug,
            })
        }
        kind::WINDOW_UPDATE => {
            // §6.9: a length other than 4 is a connection FRAME_SIZE_ERROR.
            if payload.len() != 4 {
                return Err(conn_err(ErrorCode::FRAME_SIZE_ERROR));
            }
            // §6.9: the reserved bit is ignored.
            let increment = be32(payload) & !RESERVED_BIT;
            // §6.9: an increment of 0 is a PROTOCOL_ERROR: of the connection on stream 0, of
            // the stream otherwise.
            if increment == 0 {
                return Err(if stream == 0 {
                    conn_err(ErrorCode::PROTOCOL_ERROR)
                } else {
                    FrameError::Stream(stream, ErrorCode::PROTOCOL_ERROR)
                });
            }
            Ok(Frame::WindowUpdate { stream, increment })
        }
        kind::CONTINUATION => {
            // §6.10: CONTINUATION must be associated with a stream.
            if stream == 0 {
                return Err(conn_err(ErrorCode::PROTOCOL_ERROR));
            }
            Ok(Frame::Continuation {
                stream,
                block: payload,
                end_headers: flags & flag::END_HEADERS != 0,
            })
        }
        // §4.1, §5.5: frames of unknown types are ignored and discarded.
        kind => Ok(Frame::Unknown { kind, stream }),
    }
}

/// SETTINGS (§6.5): the frame-level checks and the parameters.
fn parse_settings(stream: u32, flags: u8, payload: &[u8]) -> Result<Frame<'_>, FrameError> {
    // §6.5: SETTINGS on a stream other than 0 is a connection PROTOCOL_ERROR.
    if stream != 0 {
        return Err(conn_err(ErrorCode::PROTOCOL_ERROR));
    }
    let ack = flags & flag::ACK != 0;
    // §6.5: an ACK with a payload is a connection FRAME_SIZE_ERROR.
    if ack && !payload.is_empty() {
        return Err(conn_err(ErrorCode::FRAME_SIZE_ERROR));
    }
    // §6.5: a length that is not a multiple of 6 is a connection FRAME_SIZE_ERROR.
    if payload.len() % 6 != 0 {
        return Err(conn_err(ErrorCode::FRAME_SIZE_ERROR));
    }
    let mut s = Settings::default();
    for p in payload.chunks_exact(6) {
        let id = u16::from_be_bytes([p[0], p[1]]);
        let value = be32(&p[2..]);
        // §6.5.2 (RFC 8441 §3 for 0x8): a later value of the same identifier replaces an
        // earlier one; unknown identifiers are ignored.
        match id {
            setting::HEADER_TABLE_SIZE => s.header_table_size = Some(value),
            // §6.5.2: ENABLE_PUSH other than 0 or 1 is a connection PROTOCOL_ERROR.
            setting::ENABLE_PUSH => s.enable_push = Some(flag_value(value)?),
            setting::MAX_CONCURRENT_STREAMS => s.max_concurrent_streams = Some(value),
            setting::INITIAL_WINDOW_SIZE => {
                // §6.5.2: above 2^31-1 is a connection FLOW_CONTROL_ERROR.
                if value > MAX_WINDOW {
                    return Err(conn_err(ErrorCode::FLOW_CONTROL_ERROR));
                }
                s.initial_window_size = Some(value);
            }
            setting::MAX_FRAME_SIZE => {
                // §6.5.2: outside 2^14..=2^24-1 is a connection PROTOCOL_ERROR.
                if !(DEFAULT_MAX_FRAME_SIZE..=MAX_FRAME_SIZE_LIMIT).contains(&value) {
                    return Err(conn_err(ErrorCode::PROTOCOL_ERROR));
                }
                s.max_frame_size = Some(value);
            }
            setting::MAX_HEADER_LIST_SIZE => s.max_header_list_size = Some(value),
            // RFC 8441 §3: ENABLE_CONNECT_PROTOCOL other than 0 or 1 is a PROTOCOL_ERROR.
            setting::ENABLE_CONNECT_PROTOCOL => {
                s.enable_connect_protocol = Some(flag_value(value)?)
            }
            _ => {}
        }
    }
    Ok(Frame::Settings { ack, settings: s })
}

/// A boolean setting's value: 0 or 1, anything else a connection PROTOCOL_ERROR (§6.5.2).
fn flag_value(value: u32) -> Result<bool, FrameError> {
    match value {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(conn_err(ErrorCode::PROTOCOL_ERROR)),
    }
}

/// Appends a frame header with these fields.
fn head(out: &mut Vec<u8>, len: usize, kind: u8, flags: u8, stream: u32) {
    debug_assert!(len <= MAX_FRAME_SIZE_LIMIT as usize, "frame length {len}");
    Head {
        len: len as u32,
        kind,
        flags,
        stream,
    }
    .write(out);
}

/// Appends the 9-octet head of a DATA frame (§6.1) of `len` payload octets on `stream`
/// (END_STREAM when `end_stream`); the caller sends the `len` octets after it, from its own
/// buffer. `len` must not exceed the peer's SETTINGS_MAX_FRAME_SIZE, nor the flow-control
/// windows; `stream` must not be 0.
pub fn write_data_head(out: &mut Vec<u8>, stream: u32, len: u32, end_stream: bool) {
    debug_assert!(stream != 0);
    let flags = if end_stream { flag::END_STREAM } else { 0 };
    head(out, len as usize, kind::DATA, flags, stream);
}

/// Appends a whole DATA frame (§6.1, unpadded) carrying `data` on `stream` (END_STREAM when
/// `end_stream`). `data.len()` must not exceed the peer's SETTINGS_MAX_FRAME_SIZE, nor the
/// flow-control windows; `stream` must not be 0.
pub fn write_data(out: &mut Vec<u8>, stream: u32, data: &[u8], end_stream: bool) {
    out.reserve(HEAD_LEN + data.len());
    write_data_head(out, stream, data.len() as u32, end_stream);
    out.extend_from_slice(data);
}

/// Appends a field block (HPACK-encoded) on `stream` (§6.2, §6.10, §4.3): one HEADERS frame,
/// followed by CONTINUATION frames when `block` is longer than `max_frame_size` (the peer's
/// SETTINGS_MAX_FRAME_SIZE, octets per frame payload; taken as at least 1 and at most
/// [`MAX_FRAME_SIZE_LIMIT`]). END_STREAM (when `end_stream`) goes on the HEADERS frame,
/// END_HEADERS on the last frame only. No padding, no priority. An empty block is one empty
/// HEADERS frame with END_HEADERS.
pub fn write_headers(
    out: &mut Vec<u8>,
    stream: u32,
    block: &[u8],
    end_stream: bool,
    max_frame_size: u32,
) {
    debug_assert!(stream != 0);
    let max = max_frame_size.clamp(1, MAX_FRAME_SIZE_LIMIT) as usize;
    let frames = block.len().div_ceil(max).max(1);
    out.reserve(frames * HEAD_LEN + block.len());
    let mut rest = block;
    let mut kind = kind::HEADERS;
    let mut flags = if end_stream { flag::END_STREAM } else { 0 };
    loop {
        let (chunk, next) = rest.split_at(rest.len().min(max));
        if next.is_empty() {
            flags |= flag::END_HEADERS;
        }
        head(out, chunk.len(), kind, flags, stream);
        out.extend_from_slice(chunk);
        if next.is_empty() {
            return;
        }
        rest = next;
        kind = kind::CONTINUATION;
        flags = 0;
    }
}

/// Appends an RST_STREAM frame (§6.4) ending `stream` (not 0) with `code`.
pub fn write_rst_stream(out: &mut Vec<u8>, stream: u32, code: ErrorCode) {
    debug_assert!(stream != 0);
    head(out, 4, kind::RST_STREAM, 0, stream);
    out.extend_from_slice(&code.0.to_be_bytes());
}

/// Appends a SETTINGS frame (§6.5) carrying the parameters of `settings` that are `Some`, in
/// identifier order (0x1..=0x6, then 0x8); all `None` makes an empty SETTINGS frame (which
/// still needs an ACK). The values must be in range (§6.5.2); they are written as given.
pub fn write_settings(out: &mut Vec<u8>, settings: &Settings) {
    let params = [
        (setting::HEADER_TABLE_SIZE, settings.header_table_size),
        (setting::ENABLE_PUSH, settings.enable_push.map(u32::from)),
        (
            setting::MAX_CONCURRENT_STREAMS,
            settings.max_concurrent_streams,
        ),
        (setting::INITIAL_WINDOW_SIZE, settings.initial_window_size),
        (setting::MAX_FRAME_SIZE, settings.max_frame_size),
        (setting::MAX_HEADER_LIST_SIZE, settings.max_header_list_size),
        (
            setting::ENABLE_CONNECT_PROTOCOL,
            settings.enable_connect_protocol.map(u32::from),
        ),
    ];
    let count = params.iter().filter(|(_, v)| v.is_some()).count();
    out.reserve(HEAD_LEN + 6 * count);
    head(out, 6 * count, kind::SETTINGS, 0, 0);
    for (id, value) in params {
        if let Some(value) = value {
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&value.to_be_bytes());
        }
    }
}

/// Appends a SETTINGS frame with ACK and no payload (§6.5), acknowledging the peer's SETTINGS.
pub fn write_settings_ack(out: &mut Vec<u8>) {
    head(out, 0, kind::SETTINGS, flag::ACK, 0);
}

/// Appends a PING frame (§6.7) with these 8 octets of opaque data; `ack` for a reply (which
/// must echo the data of the PING it answers).
pub fn write_ping(out: &mut Vec<u8>, ack: bool, data: [u8; 8]) {
    let flags = if ack { flag::ACK } else { 0 };
    head(out, 8, kind::PING, flags, 0);
    out.extend_from_slice(&data);
}

/// Appends a GOAWAY frame (§6.8): the highest stream processed `last_stream`, `code`, and the
/// opaque `debug` data, cut to what fits in a frame of [`DEFAULT_MAX_FRAME_SIZE`] (which every
/// peer accepts): at most 16,376 octets.
pub fn write_goaway(out: &mut Vec<u8>, last_stream: u32, code: ErrorCode, debug: &[u8]) {
    let debug = &debug[..debug.len().min(DEFAULT_MAX_FRAME_SIZE as usize - 8)];
    out.reserve(HEAD_LEN + 8 + debug.len());
    head(out, 8 + debug.len(), kind::GOAWAY, 0, 0);
    out.extend_from_slice(&(last_stream & !RESERVED_BIT).to_be_bytes());
    out.extend_from_slice(&code.0.to_be_bytes());
    out.extend_from_slice(debug);
}

/// Appends a WINDOW_UPDATE frame (§6.9) granting `increment` octets (1..=[`MAX_WINDOW`]) on
/// `stream`, or on the connection when `stream` is 0.
pub fn write_window_update(out: &mut Vec<u8>, stream: u32, increment: u32) {
    debug_assert!(
        (1..=MAX_WINDOW).contains(&increment),
        "increment {increment}"
    );
    head(out, 4, kind::WINDOW_UPDATE, 0, stream);
    out.extend_from_slice(&(increment & !RESERVED_BIT).to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROTOCOL: FrameError = FrameError::Connection(ErrorCode::PROTOCOL_ERROR);
    const FRAME_SIZE: FrameError = FrameError::Connection(ErrorCode::FRAME_SIZE_ERROR);

    /// A frame built by hand: head fields and payload, as wire bytes.
    fn bytes(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut b = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        b.extend_from_slice(&stream.to_be_bytes());
        b.extend_from_slice(payload);
        b
    }

    /// Parses one whole frame from wire bytes (head and payload, nothing after).
    fn decode(wire: &[u8]) -> Result<Frame<'_>, FrameError> {
        let (h, payload) = wire.split_at(HEAD_LEN);
        let head = Head::parse(h.try_into().unwrap());
        assert_eq!(head.len as usize, payload.len(), "test frame's length");
        parse(&head, payload)
    }

    /// Splits wire bytes into (head, payload) pairs, checking every length fits.
    fn split_frames(mut wire: &[u8]) -> Vec<(Head, &[u8])> {
        let mut frames = Vec::new();
        while !wire.is_empty() {
            let head = Head::parse(wire[..HEAD_LEN].try_into().unwrap());
            let end = HEAD_LEN + head.len as usize;
            frames.push((head, &wire[HEAD_LEN..end]));
            wire = &wire[end..];
        }
        frames
    }

    /// A frame made by hand (kind, flags, stream, payload): what [`parse`] says.
    fn parse_bytes(
        kind: u8,
        flags: u8,
        stream: u32,
        payload: &[u8],
    ) -> Result<Frame<'_>, FrameError> {
        let head = Head {
            len: payload.len() as u32,
            kind,
            flags,
            stream,
        };
        parse(&head, payload)
    }

    /// The 6 octets of one SETTINGS parameter.
    fn param(id: u16, value: u32) -> [u8; 6] {
        let (i, v) = (id.to_be_bytes(), value.to_be_bytes());
        [i[0], i[1], v[0], v[1], v[2], v[3]]
    }

    /// Parses a SETTINGS frame of one parameter: only whether it passes.
    fn settings_err(id: u16, value: u32) -> Result<(), FrameError> {
        parse_bytes(kind::SETTINGS, 0, 0, &param(id, value)).map(|_| ())
    }

    // ---- §4.1, §4.2: the head ----

    #[test]
    fn head_parse_reads_fields_and_drops_reserved_bit() {
        let b = [0x01, 0x02, 0x03, 0x09, 0xff, 0x80, 0x00, 0x00, 0x05];
        let head = Head::parse(&b);
        assert_eq!(
            head,
            Head {
                len: 0x010203,
                kind: 9,
                flags: 0xff,
                stream: 5
            }
        );
        let mut out = Vec::new();
        head.write(&mut out);
        assert_eq!(out, [0x01, 0x02, 0x03, 0x09, 0xff, 0x00, 0x00, 0x00, 0x05]);
    }

    #[test]
    fn head_check_len_against_max_frame_size() {
        let head = |len| Head {
            len,
            kind: kind::DATA,
            flags: 0,
            stream: 1,
        };
        assert_eq!(head(16_384).check_len(DEFAULT_MAX_FRAME_SIZE), Ok(()));
        assert_eq!(
            head(16_385).check_len(DEFAULT_MAX_FRAME_SIZE),
            Err(FRAME_SIZE)
        );
        assert_eq!(
            head(MAX_FRAME_SIZE_LIMIT).check_len(MAX_FRAME_SIZE_LIMIT),
            Ok(())
        );
    }

    #[test]
    fn payload_length_must_match_head() {
        let head = Head {
            len: 4,
            kind: kind::WINDOW_UPDATE,
            flags: 0,
            stream: 0,
        };
        assert_eq!(parse(&head, &[0, 0, 0, 1, 0]), Err(FRAME_SIZE));
        assert_eq!(parse(&head, &[0, 0, 1]), Err(FRAME_SIZE));
    }

    #[test]
    fn preface_is_rfc_bytes() {
        assert_eq!(&PREFACE[..], b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    }

    // ---- §6.1 DATA ----

    #[test]
    fn data_on_stream_zero_is_protocol_error() {
        assert_eq!(decode(&bytes(kind::DATA, 0, 0, b"abc")), Err(PROTOCOL));
    }

    #[test]
    fn data_padding_as_long_as_payload_is_protocol_error() {
        // Pad Length 3 with a payload of 3 octets (the Pad Length octet and 2 more).
        assert_eq!(
            decode(&bytes(kind::DATA, flag::PADDED, 1, &[3, 0, 0])),
            Err(PROTOCOL)
        );
        assert_eq!(
            decode(&bytes(kind::DATA, flag::PADDED, 1, &[200, 0])),
            Err(PROTOCOL)
        );
        // Pad Length 2 with 2 octets after it: no data, allowed.
        assert_eq!(
            decode(&bytes(kind::DATA, flag::PADDED, 1, &[2, 0, 0])),
            Ok(Frame::Data {
                stream: 1,
                data: b"",
                end_stream: false,
                flow_len: 3
            })
        );
    }

    #[test]
    fn data_padded_without_pad_length_octet_is_frame_size_error() {
        assert_eq!(
            decode(&bytes(kind::DATA, flag::PADDED, 1, &[])),
            Err(FRAME_SIZE)
        );
    }

    #[test]
    fn data_padded_strips_padding_and_flow_len_counts_it() {
        let wire = bytes(
            kind::DATA,
            flag::PADDED | flag::END_STREAM,
            3,
            b"\x04hello\0\0\0\0",
        );
        assert_eq!(
            decode(&wire),
            Ok(Frame::Data {
                stream: 3,
                data: b"hello",
                end_stream: true,
                flow_len: 10
            })
        );
    }

    // ---- §6.2 HEADERS ----

    #[test]
    fn headers_on_stream_zero_is_protocol_error() {
        let wire = bytes(kind::HEADERS, flag::END_HEADERS, 0, b"\x82");
        assert_eq!(decode(&wire), Err(PROTOCOL));
    }

    #[test]
    fn headers_padding_too_long_is_protocol_error() {
        let wire = bytes(kind::HEADERS, flag::PADDED, 1, &[4, 0x82, 0, 0]);
        assert_eq!(decode(&wire), Err(PROTOCOL));
        let wire = bytes(kind::HEADERS, flag::PADDED, 1, &[]);
        assert_eq!(decode(&wire), Err(FRAME_SIZE));
    }

    #[test]
    fn headers_priority_too_short_is_frame_size_error() {
        let wire = bytes(kind::HEADERS, flag::PRIORITY, 1, &[0, 0, 0, 0]);
        assert_eq!(decode(&wire), Err(FRAME_SIZE));
        // With padding: 5 octets after Pad Length, but 1 of them is padding.
        let wire = bytes(
            kind::HEADERS,
            flag::PRIORITY | flag::PADDED,
            1,
            &[1, 0, 0, 0, 0, 16],
        );
        assert_eq!(decode(&wire), Err(FRAME_SIZE));
    }

    #[test]
    fn headers_depending_on_itself_is_stream_protocol_error() {
        let wire = bytes(kind::HEADERS, flag::PRIORITY, 5, &[0x80, 0, 0, 5, 16, 0x82]);
        assert_eq!(
            decode(&wire),
            Err(FrameError::Stream(5, ErrorCode::PROTOCOL_ERROR))
        );
    }

    #[test]
    fn headers_padded_with_priority_by_hand() {
        let payload = [2, 0x80, 0, 0, 3, 255, 0x82, 0x86, 0, 0];
        let flags = flag::PADDED | flag::PRIORITY | flag::END_STREAM | flag::END_HEADERS;
        assert_eq!(
            decode(&bytes(kind::HEADERS, flags, 7, &payload)),
            Ok(Frame::Headers {
                stream: 7,
                block: &[0x82, 0x86],
                end_stream: true,
                end_headers: true,
                priority: Some(Priority {
                    dependency: 3,
                    exclusive: true,
                    weight: 255
                }),
            })
        );
    }

    // ---- §6.3 PRIORITY ----

    #[test]
    fn priority_on_stream_zero_is_protocol_error() {
        let wire = bytes(kind::PRIORITY, 0, 0, &[0, 0, 0, 1, 16]);
        assert_eq!(decode(&wire), Err(PROTOCOL));
    }

    #[test]
    fn priority_wrong_length_is_stream_frame_size_error() {
        let stream_err = Err(FrameError::Stream(3, ErrorCode::FRAME_SIZE_ERROR));
        assert_eq!(
            decode(&bytes(kind::PRIORITY, 0, 3, &[0, 0, 0, 1])),
            stream_err
        );
        assert_eq!(
            decode(&bytes(kind::PRIORITY, 0, 3, &[0, 0, 0, 1, 16, 0])),
            stream_err
        );
    }

    #[test]
    fn priority_depending_on_itself_is_stream_protocol_error() {
        let wire = bytes(kind::PRIORITY, 0, 3, &[0, 0, 0, 3, 16]);
        assert_eq!(
            decode(&wire),
            Err(FrameError::Stream(3, ErrorCode::PROTOCOL_ERROR))
        );
    }

    #[test]
    fn priority_round_trip_by_hand() {
        let mut wire = Vec::new();
        Head {
            len: 5,
            kind: kind::PRIORITY,
            flags: 0,
            stream: 9,
        }
        .write(&mut wire);
        wire.extend_from_slice(&[0x80, 0, 0, 7, 41]);
        assert_eq!(
            decode(&wire),
            Ok(Frame::Priority {
                stream: 9,
                priority: Priority {
                    dependency: 7,
                    exclusive: true,
                    weight: 41
                }
            })
        );
    }

    // ---- §6.4 RST_STREAM ----

    #[test]
    fn rst_stream_on_stream_zero_is_protocol_error() {
        assert_eq!(
            decode(&bytes(kind::RST_STREAM, 0, 0, &[0, 0, 0, 8])),
            Err(PROTOCOL)
        );
    }

    #[test]
    fn rst_stream_wrong_length_is_frame_size_error() {
        assert_eq!(
            decode(&bytes(kind::RST_STREAM, 0, 1, &[0, 0, 8])),
            Err(FRAME_SIZE)
        );
        assert_eq!(
            decode(&bytes(kind::RST_STREAM, 0, 1, &[0, 0, 0, 8, 0])),
            Err(FRAME_SIZE)
        );
    }

    // ---- §6.5 SETTINGS ----

    #[test]
    fn settings_on_a_stream_is_protocol_error() {
        assert_eq!(
            decode(&bytes(kind::SETTINGS, 0, 1, &param(3, 100))),
            Err(PROTOCOL)
        );
    }

    #[test]
    fn settings_ack_with_payload_is_frame_size_error() {
        let wire = bytes(kind::SETTINGS, flag::ACK, 0, &param(3, 100));
        assert_eq!(decode(&wire), Err(FRAME_SIZE));
    }

    #[test]
    fn settings_length_not_multiple_of_six_is_frame_size_error() {
        assert_eq!(
            decode(&bytes(kind::SETTINGS, 0, 0, &[0, 3, 0, 0, 0])),
            Err(FRAME_SIZE)
        );
        let mut p = param(3, 100).to_vec();
        p.push(0);
        assert_eq!(decode(&bytes(kind::SETTINGS, 0, 0, &p)), Err(FRAME_SIZE));
    }

    #[test]
    fn settings_enable_push_not_boolean_is_protocol_error() {
        assert_eq!(settings_err(0x2, 2), Err(PROTOCOL));
        assert!(settings_err(0x2, 1).is_ok());
    }

    #[test]
    fn settings_initial_window_too_large_is_flow_control_error() {
        let flow = FrameError::Connection(ErrorCode::FLOW_CONTROL_ERROR);
        assert_eq!(settings_err(0x4, MAX_WINDOW + 1), Err(flow));
        assert_eq!(settings_err(0x4, u32::MAX), Err(flow));
        assert!(settings_err(0x4, MAX_WINDOW).is_ok());
    }

    #[test]
    fn settings_max_frame_size_out_of_range_is_protocol_error() {
        assert_eq!(settings_err(0x5, 16_383), Err(PROTOCOL));
        assert_eq!(settings_err(0x5, 1 << 24), Err(PROTOCOL));
        assert_eq!(settings_err(0x5, 0), Err(PROTOCOL));
        assert!(settings_err(0x5, 16_384).is_ok());
        assert!(settings_err(0x5, (1 << 24) - 1).is_ok());
    }

    #[test]
    fn settings_enable_connect_protocol_not_boolean_is_protocol_error() {
        assert_eq!(settings_err(0x8, 7), Err(PROTOCOL));
        assert!(settings_err(0x8, 0).is_ok());
    }

    #[test]
    fn settings_duplicates_last_wins_and_unknown_ignored() {
        let mut p = Vec::new();
        p.extend_from_slice(&param(0x3, 10));
        p.extend_from_slice(&param(0x1, 0));
        p.extend_from_slice(&param(0x99, 0xdead_beef)); // unknown: ignored
        p.extend_from_slice(&param(0x9, 1)); // RFC 9218's NO_RFC7540_PRIORITIES: unknown here
        p.extend_from_slice(&param(0x3, 250));
        p.extend_from_slice(&param(0x2, 1));
        p.extend_from_slice(&param(0x2, 0));
        assert_eq!(
            decode(&bytes(kind::SETTINGS, 0, 0, &p)),
            Ok(Frame::Settings {
                ack: false,
                settings: Settings {
                    header_table_size: Some(0),
                    enable_push: Some(false),
                    max_concurrent_streams: Some(250),
                    ..Settings::default()
                }
            })
        );
    }

    // ---- §6.6 PUSH_PROMISE ----

    #[test]
    fn push_promise_on_stream_zero_is_protocol_error() {
        let wire = bytes(
            kind::PUSH_PROMISE,
            flag::END_HEADERS,
            0,
            &[0, 0, 0, 2, 0x82],
        );
        assert_eq!(decode(&wire), Err(PROTOCOL));
    }

    #[test]
    fn push_promise_too_short_is_frame_size_error() {
        assert_eq!(
            decode(&bytes(kind::PUSH_PROMISE, 0, 1, &[0, 0, 2])),
            Err(FRAME_SIZE)
        );
        // Padded: 4 octets after Pad Length, 1 of them padding.
        let wire = bytes(kind::PUSH_PROMISE, flag::PADDED, 1, &[1, 0, 0, 2, 0]);
        assert_eq!(decode(&wire), Err(FRAME_SIZE));
        let wire = bytes(kind::PUSH_PROMISE, flag::PADDED, 1, &[9, 0, 0, 0, 2]);
        assert_eq!(decode(&wire), Err(PROTOCOL));
    }

    #[test]
    fn push_promise_round_trip_by_hand_padded_reserved_bit_masked() {
        let mut wire = Vec::new();
        let payload = [1, 0x80, 0, 0, 4, 0x82, 0x84, 0];
        Head {
            len: payload.len() as u32,
            kind: kind::PUSH_PROMISE,
            flags: flag::PADDED | flag::END_HEADERS,
            stream: 1,
        }
        .write(&mut wire);
        wire.extend_from_slice(&payload);
        assert_eq!(
            decode(&wire),
            Ok(Frame::PushPromise {
                stream: 1,
                promised: 4,
                block: &[0x82, 0x84],
                end_headers: true
            })
        );
    }

    // ---- §6.7 PING ----

    #[test]
    fn ping_on_a_stream_is_protocol_error() {
        assert_eq!(decode(&bytes(kind::PING, 0, 1, &[0; 8])), Err(PROTOCOL));
    }

    #[test]
    fn ping_wrong_length_is_frame_size_error() {
        assert_eq!(decode(&bytes(kind::PING, 0, 0, &[0; 7])), Err(FRAME_SIZE));
        assert_eq!(
            decode(&bytes(kind::PING, flag::ACK, 0, &[0; 9])),
            Err(FRAME_SIZE)
        );
    }

    // ---- §6.8 GOAWAY ----

    #[test]
    fn goaway_on_a_stream_is_protocol_error() {
        assert_eq!(decode(&bytes(kind::GOAWAY, 0, 3, &[0; 8])), Err(PROTOCOL));
    }

    #[test]
    fn goaway_too_short_is_frame_size_error() {
        assert_eq!(decode(&bytes(kind::GOAWAY, 0, 0, &[0; 7])), Err(FRAME_SIZE));
        assert_eq!(decode(&bytes(kind::GOAWAY, 0, 0, &[])), Err(FRAME_SIZE));
    }

    #[test]
    fn goaway_last_stream_reserved_bit_masked() {
        let wire = bytes(kind::GOAWAY, 0, 0, &[0x80, 0, 0, 9, 0, 0, 0, 0x2a, b'x']);
        assert_eq!(
            decode(&wire),
            Ok(Frame::GoAway {
                last_stream: 9,
                code: ErrorCode(0x2a),
                debug: b"x"
            })
        );
    }

    // ---- §6.9 WINDOW_UPDATE ----

    #[test]
    fn window_update_wrong_length_is_frame_size_error() {
        assert_eq!(
            decode(&bytes(kind::WINDOW_UPDATE, 0, 0, &[0, 0, 1])),
            Err(FRAME_SIZE)
        );
        // A connection error even on a stream.
        assert_eq!(
            decode(&bytes(kind::WINDOW_UPDATE, 0, 5, &[0, 0, 0, 1, 0])),
            Err(FRAME_SIZE)
        );
    }

    #[test]
    fn window_update_zero_increment_on_connection_is_connection_error() {
        assert_eq!(
            decode(&bytes(kind::WINDOW_UPDATE, 0, 0, &[0, 0, 0, 0])),
            Err(PROTOCOL)
        );
        // Only the reserved bit set: still 0.
        assert_eq!(
            decode(&bytes(kind::WINDOW_UPDATE, 0, 0, &[0x80, 0, 0, 0])),
            Err(PROTOCOL)
        );
    }

    #[test]
    fn window_update_zero_increment_on_stream_is_stream_error() {
        assert_eq!(
            decode(&bytes(kind::WINDOW_UPDATE, 0, 7, &[0x80, 0, 0, 0])),
            Err(FrameError::Stream(7, ErrorCode::PROTOCOL_ERROR))
        );
    }

    #[test]
    fn window_update_reserved_bit_masked() {
        assert_eq!(
            decode(&bytes(kind::WINDOW_UPDATE, 0, 7, &[0xff, 0xff, 0xff, 0xff])),
            Ok(Frame::WindowUpdate {
                stream: 7,
                increment: MAX_WINDOW
            })
        );
    }

    // ---- §6.10 CONTINUATION ----

    #[test]
    fn continuation_on_stream_zero_is_protocol_error() {
        let wire = bytes(kind::CONTINUATION, flag::END_HEADERS, 0, b"\x82");
        assert_eq!(decode(&wire), Err(PROTOCOL));
    }

    // ---- §4.1, §5.5: unknown types and flags ----

    #[test]
    fn unknown_type_is_ignored_with_its_payload() {
        assert_eq!(
            decode(&bytes(0x0a, 0xff, 0, b"anything at all")),
            Ok(Frame::Unknown {
                kind: 0x0a,
                stream: 0
            })
        );
        assert_eq!(
            decode(&bytes(0xff, 0, 0x8000_0003, b"")),
            Ok(Frame::Unknown {
                kind: 0xff,
                stream: 3
            })
        );
    }

    #[test]
    fn unknown_flags_are_ignored() {
        // Every undefined bit set on each type.
        let wire = bytes(kind::DATA, !(flag::PADDED | flag::END_STREAM), 1, b"ab");
        assert_eq!(
            decode(&wire),
            Ok(Frame::Data {
                stream: 1,
                data: b"ab",
                end_stream: false,
                flow_len: 2
            })
        );
        let undefined = !(flag::END_STREAM | flag::END_HEADERS | flag::PADDED | flag::PRIORITY);
        assert_eq!(
            decode(&bytes(kind::HEADERS, undefined, 1, b"\x82")),
            Ok(Frame::Headers {
                stream: 1,
                block: b"\x82",
                end_stream: false,
                end_headers: false,
                priority: None
            })
        );
        assert_eq!(
            decode(&bytes(kind::PING, !flag::ACK, 0, &[1; 8])),
            Ok(Frame::Ping {
                ack: false,
                data: [1; 8]
            })
        );
        assert_eq!(
            decode(&bytes(kind::SETTINGS, !flag::ACK, 0, &[])),
            Ok(Frame::Settings {
                ack: false,
                settings: Settings::default()
            })
        );
        assert_eq!(
            decode(&bytes(kind::RST_STREAM, 0xff, 1, &[0, 0, 0, 8])),
            Ok(Frame::RstStream {
                stream: 1,
                code: ErrorCode::CANCEL
            })
        );
        assert_eq!(
            decode(&bytes(kind::WINDOW_UPDATE, 0xff, 0, &[0, 0, 0, 1])),
            Ok(Frame::WindowUpdate {
                stream: 0,
                increment: 1
            })
        );
        assert_eq!(
            decode(&bytes(kind::CONTINUATION, !flag::END_HEADERS, 1, b"")),
            Ok(Frame::Continuation {
                stream: 1,
                block: b"",
                end_headers: false
            })
        );
    }

    // ---- round trips: writer → Head::parse → parse ----

    #[test]
    fn round_trip_data_and_data_head() {
        let mut out = Vec::new();
        write_data(&mut out, 1, b"hello", false);
        write_data(&mut out, 3, b"", true);
        write_data_head(&mut out, 5, 3, true);
        out.extend_from_slice(b"xyz");
        let frames = split_frames(&out);
        let parsed: Vec<_> = frames.iter().map(|(h, p)| parse(h, p).unwrap()).collect();
        assert_eq!(
            parsed,
            [
                Frame::Data {
                    stream: 1,
                    data: b"hello",
                    end_stream: false,
                    flow_len: 5
                },
                Frame::Data {
                    stream: 3,
                    data: b"",
                    end_stream: true,
                    flow_len: 0
                },
                Frame::Data {
                    stream: 5,
                    data: b"xyz",
                    end_stream: true,
                    flow_len: 3
                },
            ]
        );
    }

    #[test]
    fn round_trip_headers_single_frame() {
        let mut out = Vec::new();
        write_headers(&mut out, 1, b"\x82\x86\x84", true, DEFAULT_MAX_FRAME_SIZE);
        write_headers(&mut out, 3, b"", false, DEFAULT_MAX_FRAME_SIZE);
        let frames = split_frames(&out);
        assert_eq!(frames.len(), 2);
        assert_eq!(
            parse(&frames[0].0, frames[0].1),
            Ok(Frame::Headers {
                stream: 1,
                block: b"\x82\x86\x84",
                end_stream: true,
                end_headers: true,
                priority: None
            })
        );
        assert_eq!(
            parse(&frames[1].0, frames[1].1),
            Ok(Frame::Headers {
                stream: 3,
                block: b"",
                end_stream: false,
                end_headers: true,
                priority: None
            })
        );
    }

    #[test]
    fn round_trip_headers_split_into_continuations() {
        let block: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
        let mut out = Vec::new();
        write_headers(&mut out, 7, &block, true, 16_384);
        assert_eq!(out.len(), 3 * HEAD_LEN + 40_000);
        let frames = split_frames(&out);
        let heads: Vec<Head> = frames.iter().map(|(h, _)| *h).collect();
        assert_eq!(
            heads,
            [
                Head {
                    len: 16_384,
                    kind: kind::HEADERS,
                    flags: flag::END_STREAM,
                    stream: 7
                },
                Head {
                    len: 16_384,
                    kind: kind::CONTINUATION,
                    flags: 0,
                    stream: 7
                },
                Head {
                    len: 40_000 - 2 * 16_384,
                    kind: kind::CONTINUATION,
                    flags: flag::END_HEADERS,
                    stream: 7
                },
            ]
        );
        let mut joined = Vec::new();
        for (i, (h, p)) in frames.iter().enumerate() {
            match parse(h, p).unwrap() {
                Frame::Headers {
                    stream: 7,
                    block,
                    end_stream: true,
                    end_headers: false,
                    priority: None,
                } if i == 0 => joined.extend_from_slice(block),
                Frame::Continuation {
                    stream: 7,
                    block,
                    end_headers,
                } if i > 0 => {
                    assert_eq!(end_headers, i == 2);
                    joined.extend_from_slice(block);
                }
                other => panic!("frame {i}: {other:?}"),
            }
        }
        assert_eq!(joined, block);
        // Exactly a multiple of the frame size: no empty CONTINUATION at the end.
        let mut out = Vec::new();
        write_headers(&mut out, 1, &block[..32_768], false, 16_384);
        let heads: Vec<Head> = split_frames(&out).iter().map(|(h, _)| *h).collect();
        assert_eq!(heads.len(), 2);
        assert_eq!(
            (heads[1].kind, heads[1].flags),
            (kind::CONTINUATION, flag::END_HEADERS)
        );
    }

    #[test]
    fn round_trip_rst_stream() {
        let mut out = Vec::new();
        write_rst_stream(&mut out, 9, ErrorCode::REFUSED_STREAM);
        assert_eq!(
            decode(&out),
            Ok(Frame::RstStream {
                stream: 9,
                code: ErrorCode::REFUSED_STREAM
            })
        );
    }

    #[test]
    fn round_trip_settings_and_ack() {
        let all = Settings {
            header_table_size: Some(4096),
            enable_push: Some(false),
            max_concurrent_streams: Some(100),
            initial_window_size: Some(MAX_WINDOW),
            max_frame_size: Some(MAX_FRAME_SIZE_LIMIT),
            max_header_list_size: Some(16 << 10),
            enable_connect_protocol: Some(true),
        };
        let mut out = Vec::new();
        write_settings(&mut out, &all);
        assert_eq!(out.len(), HEAD_LEN + 7 * 6);
        // Identifier order.
        let ids: Vec<u8> = out[HEAD_LEN..].chunks(6).map(|p| p[1]).collect();
        assert_eq!(ids, [1, 2, 3, 4, 5, 6, 8]);
        assert_eq!(
            decode(&out),
            Ok(Frame::Settings {
                ack: false,
                settings: all
            })
        );

        let some = Settings {
            initial_window_size: Some(1 << 20),
            enable_push: Some(true),
            ..Settings::default()
        };
        let mut out = Vec::new();
        write_settings(&mut out, &some);
        assert_eq!(&out[HEAD_LEN..], [param(2, 1), param(4, 1 << 20)].concat());
        assert_eq!(
            decode(&out),
            Ok(Frame::Settings {
                ack: false,
                settings: some
            })
        );

        let mut out = Vec::new();
        write_settings(&mut out, &Settings::default());
        assert_eq!(out, bytes(kind::SETTINGS, 0, 0, &[]));
        let mut out = Vec::new();
        write_settings_ack(&mut out);
        assert_eq!(
            decode(&out),
            Ok(Frame::Settings {
                ack: true,
                settings: Settings::default()
            })
        );
    }

    #[test]
    fn round_trip_ping() {
        for ack in [false, true] {
            let mut out = Vec::new();
            write_ping(&mut out, ack, *b"12345678");
            assert_eq!(
                decode(&out),
                Ok(Frame::Ping {
                    ack,
                    data: *b"12345678"
                })
            );
        }
    }

    #[test]
    fn round_trip_goaway() {
        let mut out = Vec::new();
        write_goaway(
            &mut out,
            41,
            ErrorCode::ENHANCE_YOUR_CALM,
            b"too many resets",
        );
        assert_eq!(
            decode(&out),
            Ok(Frame::GoAway {
                last_stream: 41,
                code: ErrorCode::ENHANCE_YOUR_CALM,
                debug: b"too many resets"
            })
        );
        // Long debug data is cut to fit the default frame size.
        let mut out = Vec::new();
        write_goaway(&mut out, 0, ErrorCode::NO_ERROR, &[b'x'; 20_000]);
        assert_eq!(out.len(), HEAD_LEN + DEFAULT_MAX_FRAME_SIZE as usize);
        assert!(decode(&out).is_ok());
    }

    #[test]
    fn round_trip_window_update() {
        let mut out = Vec::new();
        write_window_update(&mut out, 0, MAX_WINDOW);
        write_window_update(&mut out, 11, 1);
        let parsed: Vec<_> = split_frames(&out)
            .iter()
            .map(|(h, p)| parse(h, p).unwrap())
            .collect();
        assert_eq!(
            parsed,
            [
                Frame::WindowUpdate {
                    stream: 0,
                    increment: MAX_WINDOW
                },
                Frame::WindowUpdate {
                    stream: 11,
                    increment: 1
                },
            ]
        );
    }

    // ---- Display ----

    #[test]
    fn error_code_and_frame_error_display() {
        assert_eq!(ErrorCode::PROTOCOL_ERROR.to_string(), "PROTOCOL_ERROR");
        assert_eq!(
            ErrorCode::HTTP_1_1_REQUIRED.to_string(),
            "HTTP_1_1_REQUIRED"
        );
        assert_eq!(ErrorCode(0x2a).to_string(), "0x2a");
        assert_eq!(PROTOCOL.to_string(), "connection error PROTOCOL_ERROR");
        let e = FrameError::Stream(3, ErrorCode::FRAME_SIZE_ERROR);
        assert_eq!(e.to_string(), "stream 3 error FRAME_SIZE_ERROR");
        assert_eq!(e.code(), ErrorCode::FRAME_SIZE_ERROR);
    }

    // ---- no panic on any input ----

    /// xorshift64: a tiny deterministic PRNG for the test.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }
    }

    #[test]
    fn no_panic_on_random_frames() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let mut payload = Vec::new();
        let (mut oks, mut errs) = (0u32, 0u32);
        for _ in 0..50_000 {
            let r = rng.next();
            // Mostly known types, some unknown; flags and stream ids biased to small values.
            let kind = (r % 12) as u8;
            let flags = (r >> 8) as u8;
            let stream = match (r >> 16) % 4 {
                0 => 0,
                1 => 1,
                2 => (r >> 24) as u32 % 8,
                _ => (r >> 24) as u32, // reserved bit included
            };
            let actual = (rng.next() % 40) as usize;
            let len = match (r >> 56) % 8 {
                0 => actual as u32 + 1,
                1 => (actual as u32).saturating_sub(1),
                2 => (rng.next() as u32) & MAX_FRAME_SIZE_LIMIT,
                _ => actual as u32,
            };
            payload.clear();
            // Small first octets make Pad Lengths and settings ids that fit, sometimes.
            for i in 0..actual {
                let b = rng.next() as u8;
                payload.push(if i % 3 == 0 { b % 10 } else { b });
            }
            let head = Head {
                len,
                kind,
                flags,
                stream,
            };
            let _ = head.check_len(DEFAULT_MAX_FRAME_SIZE);
            match parse(&head, &payload) {
                Ok(frame) => {
                    oks += 1;
                    let inner: &[u8] = match frame {
                        Frame::Data { data, .. } => data,
                        Frame::Headers { block, .. }
                        | Frame::PushPromise { block, .. }
                        | Frame::Continuation { block, .. } => block,
                        Frame::GoAway { debug, .. } => debug,
                        _ => &[],
                    };
                    assert!(inner.len() <= payload.len());
                }
                Err(e) => {
                    errs += 1;
                    let _ = e.to_string();
                }
            }
            // The head read back from its own bytes parses the same.
            let mut h = Vec::new();
            Head {
                len: len & MAX_FRAME_SIZE_LIMIT,
                stream: stream & !RESERVED_BIT,
                ..head
            }
            .write(&mut h);
            let back = Head::parse(h.as_slice().try_into().unwrap());
            assert_eq!(back.len, len & MAX_FRAME_SIZE_LIMIT);
            assert_eq!(back.stream, stream & !RESERVED_BIT);
        }
        // The generator reaches both outcomes often.
        assert!(oks > 5_000 && errs > 5_000, "oks {oks} errs {errs}");
    }
}
