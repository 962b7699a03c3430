//! HTTP/2 wire codec, sans-IO: frames (RFC 9113), HPACK (RFC 7541) and the server side of a
//! connection; no I/O, and no buffer held while a connection is idle.
//!
//! Everything here works on byte slices the caller owns: parsers borrow from the caller's
//! buffer, writers append to the caller's `Vec<u8>`. Nothing reads or writes a socket or
//! imports from the rest of the crate.
//!
//! - [`frame`]: frame heads, payload parsing with the per-frame rules, and writers.
//! - [`hpack`]: the header block decoder (with its dynamic table) and a stateless encoder.
//! - [`server`]: one server connection's state (streams, flow control, settings, the request
//!   rules of RFC 9113 §8) from bytes in to events and bytes out.

pub mod frame;
pub mod hpack;
pub mod server;
