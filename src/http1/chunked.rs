//! A streaming validator for the chunked transfer coding (RFC 9112 §7.1). The proxy forwards
//! chunked bodies byte for byte; this decoder walks the same bytes to find where the body ends
//! and to refuse malformed framing (bad or oversized chunk sizes, missing CRLF, bare LF/CR),
//! which would otherwise let two parties disagree about message boundaries.

/// Longest chunk-size line accepted (size + extensions), in bytes.
const MAX_LINE: usize = 4096;

/// Largest trailer section accepted (all its lines, CRLFs included), in bytes: trailers are
/// held to a bound as heads are (HAProxy holds them to its 16 KiB buffer).
pub const MAX_TRAILER_SECTION: u64 = 64 * 1024;

/// Where the decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading hex digits of a chunk size.
    Size { digits: u8 },
    /// After the size, whitespace: only more of it, `;` or CR may follow (RFC 9112 §7.1.1:
    /// BWS comes only before an extension).
    SizeWs,
    /// In the chunk extensions (RFC 9112 §7.1.1), where in their grammar.
    Ext(Ext),
    /// Expecting the LF after the size line's CR.
    SizeLf,
    /// Inside chunk data, this many bytes left.
    Data(u64),
    /// Expecting CR after chunk data.
    DataCr,
    /// Expecting LF after chunk data.
    DataLf,
    /// In the trailer section, at the start of a line.
    TrailerStart,
    /// In a trailer field's name (RFC 9112 §7.1.2: a field line, `token ":" value`).
    TrailerName,
    /// In a trailer field's value.
    TrailerLine,
    /// Expecting LF of a trailer line (`end` = the line was empty: body done after LF).
    TrailerLf { end: bool },
    /// The body is complete.
    Done,
}

/// Where in a chunk extension the decoder is (RFC 9112 §7.1.1: `*( BWS ";" BWS
/// chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )`, the name a token, the value a token or a
/// quoted-string). Whitespace is BWS: only before `;`, after `;`, and around `=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ext {
    /// After `;`: whitespace, then the name.
    BeforeName,
    /// In the name.
    Name,
    /// Whitespace after the name: `=` or `;` next.
    AfterName,
    /// After `=`: whitespace, then the value.
    BeforeValue,
    /// In a token value.
    Token,
    /// In a quoted-string value.
    Quoted,
    /// After a backslash in a quoted-string.
    QuotedPair,
    /// Right after a value: CR, `;` or whitespace.
    AfterValue,
    /// Whitespace after a value: only `;` may follow.
    Ws,
}

impl Ext {
    /// The state after byte `b` (never CR or LF: the caller handles line ends); `Err` for a
    /// byte the grammar does not allow here.
    fn step(self, b: u8) -> Result<Ext, ChunkError> {
        let ws = b == b' ' || b == b'\t';
        let bad = Err(ChunkError("malformed chunk extension"));
        Ok(match self {
            Ext::BeforeName if ws => Ext::BeforeName,
            Ext::BeforeName | Ext::Name if is_tchar(b) => Ext::Name,
            Ext::Name | Ext::AfterName if ws => Ext::AfterName,
            Ext::Name | Ext::AfterName | Ext::AfterValue | Ext::Ws if b == b';' => Ext::BeforeName,
            Ext::Name | Ext::AfterName if b == b'=' => Ext::BeforeValue,
            Ext::BeforeValue if ws => Ext::BeforeValue,
            Ext::BeforeValue if b == b'"' => Ext::Quoted,
            Ext::BeforeValue | Ext::Token if is_tchar(b) => Ext::Token,
            Ext::Token if ws => Ext::Ws,
            Ext::Token if b == b';' => Ext::BeforeName,
            // qdtext: HTAB, SP, visible ASCII but `"` and `\`, obs-text.
            Ext::Quoted if b == b'"' => Ext::AfterValue,
            Ext::Quoted if b == b'\\' => Ext::QuotedPair,
            Ext::Quoted | Ext::QuotedPair if ws || (0x21..=0x7e).contains(&b) || b >= 0x80 => {
                Ext::Quoted
            }
            Ext::AfterValue | Ext::Ws if ws => Ext::Ws,
            _ => return bad,
        })
    }

    /// Whether the line may end here (CR): after a name or a value, not inside a
    /// quoted-string, not after `;`, `=` or whitespace.
    fn may_end(self) -> bool {
        matches!(self, Ext::Name | Ext::Token | Ext::AfterValue)
    }
}

/// A chunked-framing error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkError(pub &'static str);

/// Streaming chunked decoder.
#[derive(Debug, Clone)]
pub struct Decoder {
    state: State,
    size: u64,
    /// The size of the last chunk with data whose size line was read (0 before the first).
    chunk: u64,
    /// Bytes of the current size or trailer line (at most [`MAX_LINE`]; `u32` keeps the
    /// decoder, which the h2→h1 bridge holds per response body, at 40 bytes).
    line: u32,
    last_chunk: bool,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder {
            state: State::Size { digits: 0 },
            size: 0,
            chunk: 0,
            line: 0,
            last_chunk: false,
        }
    }
}

impl Decoder {
    /// Whether the whole body (through the final CRLF) has been seen.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Bytes of the current chunk's data not yet fed (0 outside chunk data): a run that may
    /// pass without being looked at, then be accounted with [`Decoder::skip_data`].
    pub fn data_left(&self) -> u64 {
        match self.state {
            State::Data(left) => left,
            _ => 0,
        }
    }

    /// Whether what comes next is a chunk's closing CRLF or (part of) a chunk-size line: the
    /// framing between two chunks' data.
    pub fn between_chunks(&self) -> bool {
        matches!(
            self.state,
            State::Size { .. }
                | State::SizeWs
                | State::Ext(_)
                | State::SizeLf
                | State::DataCr
                | State::DataLf
        )
    }

    /// The declared size of the last chunk with data whose size line was read (0: none yet).
    pub fn last_chunk_size(&self) -> u64 {
        self.chunk
    }

    /// Accounts `n` bytes of chunk data that went past without being fed (spliced).
    ///
    /// Panics (a caller bug, not bad input) if `n` is more than [`Decoder::data_left`].
    pub fn skip_data(&mut self, n: u64) {
        let left = self.data_left();
        assert!(n <= left, "skipped {n} bytes of a chunk with {left} left");
        if n > 0 {
            self.state = if n == left {
                State::DataCr
            } else {
                State::Data(left - n)
            };
        }
    }

    /// Feeds bytes. Returns how many belong to the body (all of `buf`, or fewer when the
    /// body ends inside it; the rest is the next message).
    pub fn feed(&mut self, buf: &[u8]) -> Result<usize, ChunkError> {
        self.decode(buf, |_| {})
    }

    /// [`feed`](Self::feed) that also hands each piece of chunk data (the payload without
    /// framing) to `data`, in order: what the HTTP/2 side sends as DATA frames.
    pub fn decode(&mut self, buf: &[u8], mut data: impl FnMut(&[u8])) -> Result<usize, ChunkError> {
        let mut i = 0;
        while i < buf.len() {
            let b = buf[i];
            match self.state {
                State::Done => return Ok(i),
                State::Data(left) => {
                    let take = (left.min((buf.len() - i) as u64)) as usize;
                    data(&buf[i..i + take]);
                    i += take;
                    self.state = if left - take as u64 == 0 {
                        State::DataCr
                    } else {
                        State::Data(left - take as u64)
                    };
                    continue;
                }
                State::Size { digits } => {
                    if let Some(v) = (b as char).to_digit(16) {
                        if digits >= 16 {
                            return Err(ChunkError("chunk size too large"));
                        }
                        self.size = self.size << 4 | v as u64;
                        self.state = State::Size { digits: digits + 1 };
                    } else if digits == 0 {
                        return Err(ChunkError("invalid chunk size"));
                    } else if b == b'\r' {
                        self.state = State::SizeLf;
                    } else if b == b';' {
                        self.state = State::Ext(Ext::BeforeName);
                    } else if b == b' ' || b == b'\t' {
                        self.state = State::SizeWs;
                    } else {
                        return Err(ChunkError("invalid chunk size"));
                    }
                }
                // Whitespace after the size: BWS before an extension's `;`, or before the
                // CRLF (taken, as h11 does; no more size digits, no other byte).
                State::SizeWs => match b {
                    b' ' | b'\t' => {}
                    b';' => self.state = State::Ext(Ext::BeforeName),
                    b'\r' => self.state = State::SizeLf,
                    _ => return Err(ChunkError("invalid chunk size")),
                },
                State::Ext(e) => match b {
                    b'\r' if e.may_end() => self.state = State::SizeLf,
                    b'\n' => return Err(ChunkError("bare LF in chunk size line")),
                    _ => self.state = State::Ext(e.step(b)?),
                },
                State::SizeLf => {
                    if b != b'\n' {
                        return Err(ChunkError("bare CR in chunk size line"));
                    }
                    self.line = 0;
                    if self.size == 0 {
                        self.last_chunk = true;
                        self.state = State::TrailerStart;
                    } else {
                        self.state = State::Data(self.size);
                        self.chunk = self.size;
                        self.size = 0;
                    }
                }
                State::DataCr => {
                    if b != b'\r' {
                        return Err(ChunkError("chunk data longer than its size"));
                    }
                    self.state = State::DataLf;
                }
                State::DataLf => {
                    if b != b'\n' {
                        return Err(ChunkError("missing LF after chunk data"));
                    }
                    self.state = State::Size { digits: 0 };
                }
                State::TrailerStart => match b {
                    b'\r' => self.state = State::TrailerLf { end: true },
                    b'\n' => return Err(ChunkError("bare LF in trailers")),
                    b' ' | b'\t' => return Err(ChunkError("obs-fold in trailers")),
                    _ if is_tchar(b) => self.state = State::TrailerName,
                    _ => return Err(ChunkError("invalid trailer field")),
                },
                State::TrailerName => match b {
                    b':' => self.state = State::TrailerLine,
                    _ if is_tchar(b) => {}
                    _ => return Err(ChunkError("invalid trailer field")),
                },
                State::TrailerLine => match b {
                    b'\r' => self.state = State::TrailerLf { end: false },
                    b'\n' => return Err(ChunkError("bare LF in trailers")),
                    // RFC 9110 §5.5: no CTLs but HTAB in a field value (as httparse for heads).
                    b'\t' => {}
                    0..=0x1f | 0x7f => return Err(ChunkError("invalid trailer field value")),
                    _ => {}
                },
                State::TrailerLf { end } => {
                    if b != b'\n' {
                        return Err(ChunkError("bare CR in trailers"));
                    }
                    self.line = 0;
                    // The line's LF, counted in the trailer section too (see below).
                    self.size += 1;
                    self.state = if end {
                        State::Done
                    } else {
                        State::TrailerStart
                    };
                    i += 1;
                    if end {
                        return Ok(i);
                    }
                    continue;
                }
            }
            i += 1;
            self.line += 1;
            if self.line as usize > MAX_LINE && !matches!(self.state, State::Data(_)) {
                return Err(ChunkError("chunk size or trailer line too long"));
            }
            if self.last_chunk {
                // In the trailer section `size` (0 after the last chunk) counts its bytes.
                self.size += 1;
                if self.size > MAX_TRAILER_SECTION {
                    return Err(ChunkError("trailer section too large"));
                }
            }
        }
        Ok(i)
    }
}

/// RFC 9110 §5.6.2: `tchar`, what a field name is made of.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(body: &[u8]) -> Result<usize, ChunkError> {
        let mut d = Decoder::default();
        let n = d.feed(body)?;
        assert!(d.is_done(), "not done after {n} of {} bytes", body.len());
        Ok(n)
    }

    #[test]
    fn valid_bodies_end_exactly() {
        let body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\nGET /next";
        assert_eq!(whole(body).unwrap(), body.len() - "GET /next".len());
        let trailers = b"3\r\nabc\r\n0\r\nX-Checksum: 1\r\nX-Other: 2\r\n\r\n";
        assert_eq!(whole(trailers).unwrap(), trailers.len());
        assert_eq!(whole(b"0\r\n\r\n").unwrap(), 5);
        assert_eq!(
            whole(b"A\r\n0123456789\r\n0\r\n\r\n").unwrap(),
            20,
            "hex sizes"
        );
    }

    /// Chunk extensions follow RFC 9112 §7.1.1's grammar (review: whitespace after an
    /// extension, an empty one, a CTL, an unterminated quoted-string and `;a b` were all
    /// taken). Whitespace right after the size stays taken (see the test below).
    #[test]
    fn chunk_extensions_follow_the_grammar() {
        for line in [
            "5;a",
            "5;a=b",
            "5 ; a = b",
            "5\t;\ta\t=\tb",
            "5;a=b;c;d=\"e f\"",
            "5;a=\"q \\\" x\"",
            "5;a=\"\"",
            "5;a=\"x\" ;b",
            "5;a=b ;c",
            "5;!#$%&'*+-.^_`|~09AZaz",
        ] {
            let body = format!("{line}\r\nhello\r\n0\r\n\r\n");
            assert_eq!(whole(body.as_bytes()), Ok(body.len()), "{line:?}");
        }
        for line in [
            "5;",
            "5; ",
            "5;a ",
            "5;a=",
            "5;a= ",
            "5;a=b ",
            "5;a=\x01",
            "5;a\x7f",
            "5;a=\"x",
            "5;a=\"x\" y",
            "5;a b",
            "5;=b",
            "5;a=b=c",
            "5;a=\"x\"y",
            "5;;a",
        ] {
            let body = format!("{line}\r\nhello\r\n0\r\n\r\n");
            assert!(
                Decoder::default().feed(body.as_bytes()).is_err(),
                "{line:?} was taken"
            );
        }
    }

    /// The trailer section is bounded as a head is (review: 1.6 MB of trailers were relayed).
    #[test]
    fn trailer_section_is_bounded() {
        let line = b"X-Trailer-Field: 0123456789012345678901234567890123456789\r\n";
        let mut body = b"3\r\nabc\r\n0\r\n".to_vec();
        let fits = (MAX_TRAILER_SECTION as usize - 8) / line.len();
        for _ in 0..fits {
            body.extend_from_slice(line);
        }
        let mut ok = body.clone();
        ok.extend_from_slice(b"\r\n");
        assert_eq!(whole(&ok), Ok(ok.len()));
        for _ in 0..2 {
            body.extend_from_slice(line);
        }
        body.extend_from_slice(b"\r\n");
        assert_eq!(whole(&body), Err(ChunkError("trailer section too large")));
    }

    #[test]
    fn decode_hands_out_the_payload_at_any_split() {
        let body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nT: v\r\n\r\nnext";
        let framed = body.len() - "next".len();
        for split in 0..=body.len() {
            let mut dec = Decoder::default();
            let mut out = Vec::new();
            let a = dec
                .decode(&body[..split], |d| out.extend_from_slice(d))
                .unwrap();
            let mut used = a;
            if !dec.is_done() {
                used += dec
                    .decode(&body[a..], |d| out.extend_from_slice(d))
                    .unwrap();
            }
            assert!(dec.is_done(), "split {split}");
            assert_eq!(used, framed, "split {split}");
            assert_eq!(out, b"hello world", "split {split}");
        }
    }

    #[test]
    fn byte_at_a_time_gives_the_same_boundary() {
        let body = b"1a\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nT: v\r\n\r\nrest";
        let mut d = Decoder::default();
        let mut consumed = 0;
        for b in body.iter() {
            if d.is_done() {
                break;
            }
            consumed += d.feed(std::slice::from_ref(b)).unwrap();
        }
        assert!(d.is_done());
        assert_eq!(consumed, body.len() - 4);
    }

    #[test]
    fn malformed_framing_is_rejected() {
        let cases: &[&[u8]] = &[
            b"\r\nabc\r\n0\r\n\r\n",   // empty size
            b"g\r\nabc\r\n0\r\n\r\n",  // not hex
            b"-1\r\nabc\r\n0\r\n\r\n", // sign
            b"11111111111111111\r\n",  // 17 hex digits: overflow
            b"3\nabc\r\n0\r\n\r\n",    // bare LF after size
            b"3\rXabc\r\n0\r\n\r\n",   // bare CR after size
            b"3\r\nabcd\r\n0\r\n\r\n", // data longer than size
            b"3\r\nabc\rX0\r\n\r\n",   // CR without LF after data
            b"0\r\nT: v\n\r\n",        // bare LF in trailers
            // Found by the differential fuzzer against h11 (tests/h1_differential.rs):
            b"5 x\r\nhello\r\n0\r\n\r\n", // whitespace, then no `;`
            b"fffffffffffffff\tff\r\nx\r\n0\r\n\r\n", // the same, hiding more digits
            b"5\r\nhello\r\n0\r\n0\r\n\r\n", // trailer line without a colon
            b"0\r\n T: v\r\n\r\n",        // obs-fold in trailers
            b"0\r\nT : v\r\n\r\n",        // whitespace before the colon
            b"0\r\n: v\r\n\r\n",          // empty field name
            b"0\r\nT: a\x01b\r\n\r\n",    // CTL in a trailer value
        ];
        for c in cases {
            let mut d = Decoder::default();
            assert!(
                d.feed(c).is_err(),
                "{:?} accepted",
                String::from_utf8_lossy(c)
            );
        }
    }

    /// RFC 9112 §7.1.1: BWS before `;` (h11 refuses it; the RFC allows it), and whitespace
    /// before the CRLF of a size line (as h11); RFC 9112 §7.1.2 trailer field lines.
    #[test]
    fn whitespace_in_size_lines_and_valid_trailers_are_accepted() {
        for body in [
            &b"5 ;x=1\r\nhello\r\n0\r\n\r\n"[..],
            b"5\t;x\r\nhello\r\n0\r\n\r\n",
            b"5 \r\nhello\r\n0\r\n\r\n",
            b"0\r\nT:v\r\nX-Y: a\tb \xff\r\n\r\n",
        ] {
            assert_eq!(whole(body).unwrap(), body.len(), "{body:?}");
        }
    }

    #[test]
    fn overlong_size_line_is_rejected() {
        let mut line = b"5;".to_vec();
        line.extend(std::iter::repeat_n(b'x', MAX_LINE + 10));
        assert!(Decoder::default().feed(&line).is_err());
    }
}
