//! TLS ClientHello recognition and parsing (RFC 8446 §4.1.2, RFC 5246 §7.4.1.2): just enough
//! to say "this is TLS" early and to read SNI (RFC 6066 §3) and ALPN (RFC 7301) once the whole
//! hello has arrived. Handles hellos split across several records and hellos far above 1 KiB
//! (post-quantum key shares). Every length is checked before use: bad input is `No` or a
//! hello without fields, never a panic.

use super::probe::Probe;

/// Record content type `handshake`.
const HANDSHAKE: u8 = 0x16;
/// Handshake message type `client_hello`.
const CLIENT_HELLO: u8 = 0x01;
/// Largest plaintext record payload (RFC 8446 §5.1).
const MAX_RECORD: usize = 1 << 14;
/// Largest ClientHello we will wait for (several records). Bigger ones are still TLS, only
/// without SNI/ALPN (see `detect`).
pub const MAX_HELLO: usize = 64 * 1024;
/// Bytes kept of an SNI that is not a host name: a DNS name has at most 253 characters, so
/// this shows any name a client could mean, and bounds what a hostile one makes us keep.
pub const MAX_BAD_SNI: usize = 255;

/// Peer bytes for people, unambiguously: printable ASCII except `\` as is; every other byte
/// (space, `\`, control bytes, anything non-ASCII) as `\xNN`. So `h2` stays `h2`, and a
/// backslash in the output always starts an escape.
pub fn escape(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len());
    for &x in b {
        if x.is_ascii_graphic() && x != b'\\' {
            s.push(char::from(x));
        } else {
            s.push_str(&format!("\\x{x:02x}"));
        }
    }
    s
}

/// What detection learns from a ClientHello.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientHello {
    /// `server_name` (host_name entry), if sent and a host name (lowercased).
    pub sni: Option<String>,
    /// A host_name entry that is not a host name, as sent: [`escape`]d, at most
    /// [`MAX_BAD_SNI`] bytes of it (then `…`).
    pub bad_sni: Option<String>,
    /// ALPN protocol names (RFC 7301: opaque bytes), in client order, each [`escape`]d.
    pub alpn: Vec<String>,
    /// The hello was complete but did not parse; fields are empty.
    pub malformed: bool,
}

/// `Yes(hello)` when the complete ClientHello is in `buf`; `NeedMore(total)` while the record
/// headers seen so far are TLS and `total` bytes are needed; `No` when it is not TLS.
pub fn probe(buf: &[u8]) -> Probe<ClientHello> {
    // Record header: type, legacy version 3.x, 2-byte length.
    if buf.is_empty() {
        return Probe::NeedMore(5);
    }
    if buf[0] != HANDSHAKE {
        return Probe::No;
    }
    if buf.len() >= 2 && buf[1] != 0x03 {
        return Probe::No;
    }
    if buf.len() >= 3 && buf[2] > 0x04 {
        return Probe::No;
    }
    if buf.len() < 5 {
        return Probe::NeedMore(5);
    }
    let rec_len = u16::from_be_bytes([buf[3], buf[4]]) as usize;
    if rec_len == 0 || rec_len > MAX_RECORD {
        return Probe::No;
    }
    if buf.len() >= 6 && buf[5] != CLIENT_HELLO {
        return Probe::No;
    }
    if buf.len() < 9 {
        return Probe::NeedMore(9);
    }
    let hs_len = u32::from_be_bytes([0, buf[6], buf[7], buf[8]]) as usize;
    if hs_len + 4 > MAX_HELLO {
        return Probe::No;
    }
    // Gather the handshake message from consecutive handshake records.
    let want = hs_len + 4;
    let mut msg: Vec<u8> = Vec::new();
    let mut single: Option<&[u8]> = None;
    let mut at = 0;
    let mut have = 0;
    while have < want {
        if buf.len() < at + 5 {
            return Probe::NeedMore(at + 5);
        }
        let hdr = &buf[at..at + 5];
        if hdr[0] != HANDSHAKE || hdr[1] != 0x03 {
            return Probe::No;
        }
        let len = u16::from_be_bytes([hdr[3], hdr[4]]) as usize;
        if len == 0 || len > MAX_RECORD {
            return Probe::No;
        }
        let end = at + 5 + len;
        if buf.len() < end {
            // Ask for the rest of this record at once: one wake-up, not one per segment.
            return Probe::NeedMore(end);
        }
        let payload = &buf[at + 5..end];
        if at == 0 && len >= want {
            single = Some(&payload[..want]);
        } else {
            if at == 0 {
                msg.reserve(want);
            }
            msg.extend_from_slice(payload);
        }
        have += len;
        at = end;
    }
    let hello = single.unwrap_or(&msg[..want.min(msg.len())]);
    Probe::Yes(parse_hello(&hello[4..]).unwrap_or(ClientHello {
        malformed: true,
        ..ClientHello::default()
    }))
}

/// A bounds-checked reader over a byte slice.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|b| b[0] as usize)
    }
    fn u16(&mut self) -> Option<usize> {
        self.take(2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
    }
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(n)
    }
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(n)
    }
}

/// Parses a ClientHello body (after the 4-byte handshake header).
pub fn parse_hello(body: &[u8]) -> Option<ClientHello> {
    let mut r = Reader(body);
    let version = r.u16()?;
    if version >> 8 != 3 {
        return None;
    }
    r.take(32)?; // random
    let sid = r.vec8()?;
    if sid.len() > 32 {
        return None;
    }
    let suites = r.vec16()?;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return None;
    }
    r.vec8()?; // compression methods
    let mut out = ClientHello::default();
    if r.0.is_empty() {
        return Some(out); // no extensions (SSL 3.0 / old TLS 1.0 clients)
    }
    let mut exts = Reader(r.vec16()?);
    while !exts.0.is_empty() {
        let ty = exts.u16()?;
        let data = exts.vec16()?;
        match ty {
            0x0000 => match parse_sni(data) {
                Some(Ok(name)) => out.sni = Some(name),
                Some(Err(sent)) => out.bad_sni = Some(sent),
                None => {}
            },
            0x0010 => out.alpn = parse_alpn(data)?,
            _ => {}
        }
    }
    Some(out)
}

/// The first host_name entry: `Ok` when it is a host name (lowercased), `Err` with what was
/// sent ([`escape`]d, capped at [`MAX_BAD_SNI`] bytes) when not; `None` without one (or when
/// the extension does not parse).
fn parse_sni(data: &[u8]) -> Option<Result<String, String>> {
    let mut list = Reader(Reader(data).vec16()?);
    while !list.0.is_empty() {
        let kind = list.u8()?;
        let name = list.vec16()?;
        if kind == 0 {
            // A DNS name: ASCII letters, digits, '-', '.', and '_' seen in the wild.
            if name.is_empty()
                || !name
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(b))
            {
                let mut sent = escape(&name[..name.len().min(MAX_BAD_SNI)]);
                if name.len() > MAX_BAD_SNI {
                    sent.push('…');
                }
                return Some(Err(sent));
            }
            return Some(Ok(String::from_utf8_lossy(name).to_ascii_lowercase()));
        }
    }
    None
}

fn parse_alpn(data: &[u8]) -> Option<Vec<String>> {
    let mut list = Reader(Reader(data).vec16()?);
    let mut out = Vec::new();
    while !list.0.is_empty() {
        let p = list.vec8()?;
        out.push(escape(p));
    }
    Some(out)
}
