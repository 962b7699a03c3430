//! HPACK, header compression for HTTP/2 (RFC 7541), sans-IO.
//!
//! - [`Decoder`]: one per connection, for the header blocks the peer sends. It keeps the
//!   dynamic table the peer's encoder fills (bounded by the `SETTINGS_HEADER_TABLE_SIZE` we
//!   advertise) and nothing else: Huffman-decoded strings go to a scratch buffer the caller
//!   owns (one per core), so an idle connection's decoder holds only its table entries, and
//!   no allocation at all until the peer first inserts an entry.
//! - [`Encoder`]: one per connection, for the header blocks we send. Stateless: it uses the
//!   static table (RFC 7541 Appendix A) and Huffman coding, never the dynamic table, and its
//!   first block sets the peer's view of our dynamic table to size 0.
//!
//! Any [`DecodeError`] is a connection error of type `COMPRESSION_ERROR` (RFC 9113 §4.3): the
//! decoder's state no longer matches the peer's encoder.

mod huffman;
mod table;

use std::fmt;

use huffman::HuffmanError;
use table::{DynamicTable, Entry};

/// An HPACK decoding failure: the connection must end with `COMPRESSION_ERROR` (RFC 9113
/// §4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// An integer (RFC 7541 §5.1) over `u32::MAX`, or with more than 5 continuation octets.
    IntegerOverflow,
    /// The block ends inside a representation: in an integer, before a string's length, or
    /// before the end of a string literal whose length runs past the block (§5.1, §5.2).
    Truncated,
    /// Index 0 in an indexed header field (RFC 7541 §6.1).
    ZeroIndex,
    /// An index past the static and dynamic tables (RFC 7541 §2.3.3).
    BadIndex,
    /// A Huffman-coded string contains the EOS symbol (RFC 7541 §5.2).
    HuffmanEos,
    /// A Huffman-coded string ends in more than 7 bits of padding, or in padding that is not
    /// the most significant bits of EOS (all 1s) (RFC 7541 §5.2).
    HuffmanPadding,
    /// A dynamic table size update above the `SETTINGS_HEADER_TABLE_SIZE` we advertise
    /// (RFC 7541 §6.3).
    SizeUpdateTooLarge,
    /// A dynamic table size update after a header field of the block (RFC 7541 §4.2).
    SizeUpdateNotFirst,
    /// The block copied more into the dynamic table than twice its own length plus twice the
    /// table's maximum size: literals with incremental indexing that name a large entry
    /// cost a copy of it each (two octets can copy 4 KiB), a CPU amplification no honest
    /// encoder needs (it would re-insert the same name thousands of times in one block).
    TooManyInsertions,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DecodeError::IntegerOverflow => "HPACK integer too large",
            DecodeError::Truncated => "HPACK header block truncated",
            DecodeError::ZeroIndex => "HPACK index 0",
            DecodeError::BadIndex => "HPACK index past the end of the tables",
            DecodeError::HuffmanEos => "HPACK Huffman string contains EOS",
            DecodeError::HuffmanPadding => "HPACK Huffman string has invalid padding",
            DecodeError::TooManyInsertions => "HPACK block copies too much into its table",
            DecodeError::SizeUpdateTooLarge => {
                "HPACK dynamic table size update above SETTINGS_HEADER_TABLE_SIZE"
            }
            DecodeError::SizeUpdateNotFirst => {
                "HPACK dynamic table size update after a header field"
            }
        })
    }
}

impl std::error::Error for DecodeError {}

impl From<HuffmanError> for DecodeError {
    fn from(err: HuffmanError) -> DecodeError {
        match err {
            HuffmanError::Eos => DecodeError::HuffmanEos,
            HuffmanError::Padding => DecodeError::HuffmanPadding,
        }
    }
}

/// Most continuation octets an integer may have: 5 hold 35 bits, enough for any `u32`.
const MAX_CONTINUATION_OCTETS: usize = 5;

/// Reads the rest of an integer (RFC 7541 §5.1) whose first octet is `first`, with a
/// `prefix`-bit prefix (1..=8), continuation octets taken from the front of `rest`.
fn read_int(first: u8, prefix: u32, rest: &mut &[u8]) -> Result<usize, DecodeError> {
    let max_prefix = (1u32 << prefix) - 1;
    let mut value = u64::from(u32::from(first) & max_prefix);
    if value < u64::from(max_prefix) {
        return usize::try_from(value).map_err(|_| DecodeError::IntegerOverflow);
    }
    let mut shift = 0u32;
    for _ in 0..MAX_CONTINUATION_OCTETS {
        let (&octet, tail) = rest.split_first().ok_or(DecodeError::Truncated)?;
        *rest = tail;
        // At most 255 + 127 * (2^0 + 2^7 + ... + 2^28) < 2^36: no overflow in u64.
        value += u64::from(octet & 0x7f) << shift;
        if octet & 0x80 == 0 {
            let value = u32::try_from(value).map_err(|_| DecodeError::IntegerOverflow)?;
            return usize::try_from(value).map_err(|_| DecodeError::IntegerOverflow);
        }
        shift += 7;
    }
    Err(DecodeError::IntegerOverflow)
}

/// Appends `value` as an integer (RFC 7541 §5.1) with a `prefix`-bit prefix (1..=8), the
/// first octet's high bits taken from `first` (the representation's pattern).
fn write_int(first: u8, prefix: u32, value: usize, out: &mut Vec<u8>) {
    let max_prefix = (1usize << prefix) - 1;
    if value < max_prefix {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max_prefix as u8);
    let mut rest = value - max_prefix;
    while rest >= 0x80 {
        out.push(0x80 | (rest & 0x7f) as u8);
        rest >>= 7;
    }
    out.push(rest as u8);
}

/// A decoded string literal: borrowed from the block, or a range of the scratch buffer.
#[derive(Clone, Copy)]
enum Str<'a> {
    /// A raw literal, in the block.
    Raw(&'a [u8]),
    /// A Huffman-coded literal, decoded into `scratch[start..end]`.
    Scratch(usize, usize),
}

impl<'a> Str<'a> {
    /// The string's octets.
    fn get(self, scratch: &'a [u8]) -> &'a [u8] {
        match self {
            Str::Raw(s) => s,
            Str::Scratch(start, end) => scratch.get(start..end).unwrap_or_default(),
        }
    }
}

/// Reads a string literal (RFC 7541 §5.2) from the front of `rest`, Huffman-decoding into
/// `scratch` when it is coded.
fn read_string<'a>(rest: &mut &'a [u8], scratch: &mut Vec<u8>) -> Result<Str<'a>, DecodeError> {
    let (&first, tail) = rest.split_first().ok_or(DecodeError::Truncated)?;
    *rest = tail;
    let len = read_int(first, 7, rest)?;
    if len > rest.len() {
        return Err(DecodeError::Truncated);
    }
    let (literal, tail) = rest.split_at(len);
    *rest = tail;
    if first & 0x80 == 0 {
        return Ok(Str::Raw(literal));
    }
    let start = scratch.len();
    huffman::decode(literal, scratch)?;
    Ok(Str::Scratch(start, scratch.len()))
}

/// Appends a string literal (RFC 7541 §5.2), Huffman-coded when that is strictly shorter.
fn write_string(s: &[u8], out: &mut Vec<u8>) {
    let coded_len = huffman::encoded_len(s);
    if coded_len < s.len() {
        write_int(0x80, 7, coded_len, out);
        huffman::encode(s, out);
    } else {
        write_int(0, 7, s.len(), out);
        out.extend_from_slice(s);
    }
}

/// An HPACK decoder (RFC 7541 §3.2), one per connection: the dynamic table the peer's
/// encoder drives, and the limit on its size.
///
/// Memory: nothing is allocated until the peer inserts its first entry; then the table holds
/// its entries (each name and value in one allocation) and a deque of them, at most
/// `max_table_size` octets by the RFC's measure (§4.1) plus per-entry bookkeeping.
#[derive(Debug)]
pub struct Decoder {
    /// The dynamic table, its maximum size as last set by the peer (initially the limit).
    table: DynamicTable,
    /// The `SETTINGS_HEADER_TABLE_SIZE` we advertise: the most a size update may set.
    max_table_size: usize,
}

impl Decoder {
    /// A decoder with an empty dynamic table. `max_table_size`: the `SETTINGS_HEADER_TABLE_SIZE`
    /// we advertise (octets, RFC 7541 §4.2); it is the table's initial maximum size, and
    /// dynamic table size updates above it are errors ([`DecodeError::SizeUpdateTooLarge`]).
    pub fn new(max_table_size: usize) -> Decoder {
        Decoder {
            table: DynamicTable::new(max_table_size),
            max_table_size,
        }
    }

    /// Decodes one complete header block (the HEADERS or PUSH_PROMISE fragment and all its
    /// CONTINUATION fragments, concatenated), calling `emit(name, value)` once per field in
    /// order. Dynamic table size updates (§6.3) are applied and not emitted; literals with
    /// incremental indexing (§6.2.1) update the dynamic table whether or not the caller uses
    /// the field.
    ///
    /// Huffman-coded strings are decoded into `scratch`, a buffer the caller owns and reuses
    /// across connections: it is cleared at entry (and between fields) and may grow, so the
    /// decoder itself keeps no buffer between blocks. Names are passed as sent: validating
    /// them (lowercase, pseudo-fields) is the caller's job, as is any header list size limit.
    ///
    /// Errors ([`DecodeError`]) end the connection (`COMPRESSION_ERROR`); fields before the
    /// error have been emitted and the table may be partly updated.
    pub fn decode(
        &mut self,
        block: &[u8],
        scratch: &mut Vec<u8>,
        mut emit: impl FnMut(&[u8], &[u8]),
    ) -> Result<(), DecodeError> {
        scratch.clear();
        let mut rest = block;
        let mut field_seen = false;
        // Octets the block may copy into the table (see `TooManyInsertions`).
        // Huffman coding expands a string by at most 8/5 (its shortest code is 5 bits), so
        // an encoder that inserts each field it sends once stays within twice the block.
        let mut copy_budget = 2 * block.len() + 2 * self.max_table_size;
        while let Some((&first, tail)) = rest.split_first() {
            rest = tail;
            if first & 0x80 != 0 {
                // Indexed header field (§6.1): 1xxxxxxx.
                let index = read_int(first, 7, &mut rest)?;
                let (name, value) = self.field(index)?;
                emit(name, value);
            } else if first & 0xe0 == 0x20 {
                // Dynamic table size update (§6.3): 001xxxxx, only before the first field.
                if field_seen {
                    return Err(DecodeError::SizeUpdateNotFirst);
                }
                let size = read_int(first, 5, &mut rest)?;
                if size > self.max_table_size {
                    return Err(DecodeError::SizeUpdateTooLarge);
                }
                self.table.set_max_size(size);
                continue;
            } else {
                // Literal header field with incremental indexing (§6.2.1): 01xxxxxx; without
                // indexing (§6.2.2): 0000xxxx; never indexed (§6.2.3): 0001xxxx.
                let indexing = first & 0x40 != 0;
                let index = read_int(first, if indexing { 6 } else { 4 }, &mut rest)?;
                scratch.clear();
                let name = if index == 0 {
                    Some(read_string(&mut rest, scratch)?)
                } else {
                    None
                };
                let value = read_string(&mut rest, scratch)?;
                let name = match name {
                    Some(name) => name.get(scratch),
                    None => self.field(index)?.0,
                };
                let value = value.get(scratch);
                emit(name, value);
                if indexing {
                    copy_budget = copy_budget
                        .checked_sub(name.len() + value.len())
                        .ok_or(DecodeError::TooManyInsertions)?;
                    if table::entry_size(name, value) > self.table.max_size() {
                        // §4.4: empties the table; nothing to copy.
                        self.table.clear();
                    } else {
                        // Copied before inserting: the name may be an entry that the
                        // insertion evicts.
                        let entry = Entry::new(name, value);
                        self.table.insert(entry);
                    }
                }
            }
            field_seen = true;
        }
        Ok(())
    }

    /// Bytes currently held by the dynamic table per RFC 7541 §4.1: the sum over its entries
    /// of name length + value length + 32.
    pub fn table_size(&self) -> usize {
        self.table.size()
    }

    /// Field `index` of the static table then the dynamic table (RFC 7541 §2.3.3).
    fn field(&self, index: usize) -> Result<(&[u8], &[u8]), DecodeError> {
        if index == 0 {
            return Err(DecodeError::ZeroIndex);
        }
        if let Some(field) = table::static_entry(index) {
            return Ok(field);
        }
        index
            .checked_sub(table::STATIC_LEN + 1)
            .and_then(|i| self.table.get(i))
            .ok_or(DecodeError::BadIndex)
    }
}

/// A stateless HPACK encoder (RFC 7541 §3.1), one per connection: it never inserts into its
/// dynamic table, only uses the static table and Huffman coding.
///
/// The first block it writes on a connection starts with a dynamic table size update to 0
/// (RFC 7541 §6.3), so later `SETTINGS_HEADER_TABLE_SIZE` changes from the peer never oblige
/// it to signal anything (§4.2). Its only state is whether that update has been written.
#[derive(Debug, Default)]
pub struct Encoder {
    /// Whether the first block (with its size update to 0) has been started.
    started: bool,
}

impl Encoder {
    /// An encoder for a new connection (its first block will carry the size update).
    pub fn new() -> Encoder {
        Encoder::default()
    }

    /// Starts a header block in `out` (appended to): the first time, a dynamic table size
    /// update to 0 (the octet `0x20`); afterwards nothing. Call it once per block, before
    /// its fields.
    pub fn begin_block(&mut self, out: &mut Vec<u8>) {
        if !self.started {
            self.started = true;
            write_int(0x20, 5, 0, out);
        }
    }

    /// Appends one field to `out`: a name and value matching a static table entry → an
    /// indexed field (RFC 7541 §6.1); a static table name → a literal without indexing with
    /// the indexed name (§6.2.2); else a literal without indexing with a literal name.
    /// `sensitive` (credentials, cookies) → always a literal never indexed (§6.2.3), with the
    /// static name index when there is one, so intermediaries never index it either.
    /// Strings are Huffman-coded when that is strictly shorter (§5.2). `name` must already
    /// be lowercase (HTTP/2 requires it; the caller guarantees it).
    pub fn field(&mut self, name: &[u8], value: &[u8], sensitive: bool, out: &mut Vec<u8>) {
        let pattern = if sensitive { 0x10 } else { 0x00 };
        match table::static_find(name, value) {
            Some((index, true)) if !sensitive => write_int(0x80, 7, index, out),
            Some((index, _)) => {
                write_int(pattern, 4, index, out);
                write_string(value, out);
            }
            None => {
                out.push(pattern);
                write_string(name, out);
                write_string(value, out);
            }
        }
    }

    /// Appends the `:status` pseudo-header field for `status` (a 3-digit code, 100..=999):
    /// indexed for 200 204 206 304 400 404 500 (RFC 7541 Appendix A), else a literal without
    /// indexing with name index 8 and the decimal value. (A value outside 100..=999 is
    /// written in decimal all the same.)
    pub fn status(&mut self, status: u16, out: &mut Vec<u8>) {
        let index = match status {
            200 => 8,
            204 => 9,
            206 => 10,
            304 => 11,
            400 => 12,
            404 => 13,
            500 => 14,
            _ => {
                let mut digits = [0u8; 5];
                let mut start = digits.len();
                let mut rest = status;
                loop {
                    start -= 1;
                    digits[start] = b'0' + (rest % 10) as u8;
                    rest /= 10;
                    if rest == 0 {
                        break;
                    }
                }
                write_int(0x00, 4, 8, out);
                write_string(digits.get(start..).unwrap_or_default(), out);
                return;
            }
        };
        write_int(0x80, 7, index, out);
    }
}

/// Bytes from hex digits (whitespace ignored), for the tests' RFC 7541 vectors.
#[cfg(test)]
fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    type Fields = Vec<(Vec<u8>, Vec<u8>)>;

    fn decode(decoder: &mut Decoder, block: &[u8]) -> Result<Fields, DecodeError> {
        let mut scratch = Vec::new();
        let mut fields = Vec::new();
        decoder
            .decode(block, &mut scratch, |name, value| {
                fields.push((name.to_vec(), value.to_vec()))
            })
            .map(|()| fields)
    }

    fn owned(fields: &[(&str, &str)]) -> Fields {
        fields
            .iter()
            .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    }

    /// Decodes `block` and checks the fields, the table size and the table's entries (newest
    /// first).
    fn check(
        decoder: &mut Decoder,
        block: &str,
        fields: &[(&str, &str)],
        table_size: usize,
        table: &[(&str, &str)],
    ) {
        assert_eq!(
            decode(decoder, &hex(block)).unwrap(),
            owned(fields),
            "{block}"
        );
        assert_eq!(decoder.table_size(), table_size, "{block}");
        let entries: Fields = (0..)
            .map_while(|i| decoder.table.get(i))
            .map(|(n, v)| (n.to_vec(), v.to_vec()))
            .collect();
        assert_eq!(entries, owned(table), "{block}");
    }

    /// A tiny xorshift64 PRNG (fixed seed, reproducible).
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    // RFC 7541 Appendix C.3 / C.4 (requests) and C.5 / C.6 (responses).
    const C3_1: &str = "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d";
    const C3_2: &str = "8286 84be 5808 6e6f 2d63 6163 6865";
    const C3_3: &str = "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65";
    const C4_1: &str = "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff";
    const C4_2: &str = "8286 84be 5886 a8eb 1064 9cbf";
    const C4_3: &str = "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf";
    const C5_1: &str = "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 \
                        3230 3133 2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 \
                        7777 2e65 7861 6d70 6c65 2e63 6f6d";
    const C5_2: &str = "4803 3330 37c1 c0bf";
    const C5_3: &str = "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 \
                        3220 474d 54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a \
                        584f 5157 454f 5049 5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 \
                        3630 303b 2076 6572 7369 6f6e 3d31";
    const C6_1: &str = "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 \
                        66e0 82a6 2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3";
    const C6_2: &str = "4883 640e ffc1 c0bf";
    const C6_3: &str = "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a \
                        839b d9ab 77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 \
                        72c1 ab27 0fb5 291f 9587 3160 65c0 03ed 4ee5 b106 3d50 07";

    const AUTHORITY: (&str, &str) = (":authority", "www.example.com");
    const NO_CACHE: (&str, &str) = ("cache-control", "no-cache");
    const CUSTOM: (&str, &str) = ("custom-key", "custom-value");
    const PRIVATE: (&str, &str) = ("cache-control", "private");
    const DATE_21: (&str, &str) = ("date", "Mon, 21 Oct 2013 20:13:21 GMT");
    const DATE_22: (&str, &str) = ("date", "Mon, 21 Oct 2013 20:13:22 GMT");
    const LOCATION: (&str, &str) = ("location", "https://www.example.com");
    const GZIP: (&str, &str) = ("content-encoding", "gzip");
    const COOKIE: (&str, &str) = (
        "set-cookie",
        "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1",
    );

    fn requests(blocks: [&str; 3]) {
        let mut d = Decoder::new(4096);
        let first = [
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
            AUTHORITY,
        ];
        check(&mut d, blocks[0], &first, 57, &[AUTHORITY]);
        let second = [
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
            AUTHORITY,
            NO_CACHE,
        ];
        check(&mut d, blocks[1], &second, 110, &[NO_CACHE, AUTHORITY]);
        let third = [
            (":method", "GET"),
            (":scheme", "https"),
            (":path", "/index.html"),
            AUTHORITY,
            CUSTOM,
        ];
        check(
            &mut d,
            blocks[2],
            &third,
            164,
            &[CUSTOM, NO_CACHE, AUTHORITY],
        );
    }

    fn responses(blocks: [&str; 3]) {
        let mut d = Decoder::new(256);
        let first = [(":status", "302"), PRIVATE, DATE_21, LOCATION];
        let table = [LOCATION, DATE_21, PRIVATE, (":status", "302")];
        check(&mut d, blocks[0], &first, 222, &table);
        let second = [(":status", "307"), PRIVATE, DATE_21, LOCATION];
        let table = [(":status", "307"), LOCATION, DATE_21, PRIVATE];
        check(&mut d, blocks[1], &second, 222, &table);
        let third = [(":status", "200"), PRIVATE, DATE_22, LOCATION, GZIP, COOKIE];
        check(&mut d, blocks[2], &third, 215, &[COOKIE, GZIP, DATE_22]);
    }

    #[test]
    fn rfc_c_1_integers() {
        // C.1.1: 10 with a 5-bit prefix; C.1.2: 1337 with a 5-bit prefix.
        let mut rest: &[u8] = &[];
        assert_eq!(read_int(0xea, 5, &mut rest), Ok(10));
        let mut rest: &[u8] = &[0x9a, 0x0a, 0x55];
        assert_eq!(read_int(0x1f, 5, &mut rest), Ok(1337));
        assert_eq!(rest, [0x55]);
        let mut out = Vec::new();
        write_int(0xe0, 5, 10, &mut out);
        write_int(0x00, 5, 1337, &mut out);
        assert_eq!(out, [0xea, 0x1f, 0x9a, 0x0a]);
        // Round trips at every prefix, around the boundaries.
        for prefix in 1..=8 {
            for value in [
                0,
                1,
                126,
                127,
                128,
                254,
                255,
                256,
                16_383,
                16_384,
                1 << 21,
                1 << 28,
            ]
            .into_iter()
            .chain([u32::MAX as usize - 1, u32::MAX as usize])
            {
                let mut out = Vec::new();
                write_int(0, prefix, value, &mut out);
                let (&first, mut rest) = out.split_first().unwrap();
                assert_eq!(
                    read_int(first, prefix, &mut rest),
                    Ok(value),
                    "{prefix} {value}"
                );
                assert!(rest.is_empty());
            }
        }
    }

    #[test]
    fn rfc_c_2_1_literal_with_indexing() {
        let mut d = Decoder::new(4096);
        let block = "400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572";
        let field = ("custom-key", "custom-header");
        check(&mut d, block, &[field], 55, &[field]);
    }

    #[test]
    fn rfc_c_2_2_literal_without_indexing() {
        let mut d = Decoder::new(4096);
        check(
            &mut d,
            "040c 2f73 616d 706c 652f 7061 7468",
            &[(":path", "/sample/path")],
            0,
            &[],
        );
    }

    #[test]
    fn rfc_c_2_3_literal_never_indexed() {
        let mut d = Decoder::new(4096);
        let block = "1008 7061 7373 776f 7264 0673 6563 7265 74";
        check(&mut d, block, &[("password", "secret")], 0, &[]);
    }

    #[test]
    fn rfc_c_2_4_indexed() {
        let mut d = Decoder::new(4096);
        check(&mut d, "82", &[(":method", "GET")], 0, &[]);
        assert_eq!(d.table.capacity(), 0, "no allocation without an insertion");
    }

    #[test]
    fn rfc_c_3_requests() {
        requests([C3_1, C3_2, C3_3]);
    }

    #[test]
    fn rfc_c_4_requests_huffman() {
        requests([C4_1, C4_2, C4_3]);
    }

    #[test]
    fn rfc_c_5_responses() {
        responses([C5_1, C5_2, C5_3]);
    }

    #[test]
    fn rfc_c_6_responses_huffman() {
        responses([C6_1, C6_2, C6_3]);
    }

    #[test]
    fn encoder_round_trip() {
        let mut enc = Encoder::new();
        let mut dec = Decoder::new(4096);
        let token = "Bearer eyJhbGciOiJIUzI1NiJ9.e30.ZRrHA1JJJW8opsbCGfG_HACGpVUMN_a9IV7pAx_Zmeo";

        let mut head = Vec::new();
        enc.begin_block(&mut head);
        enc.status(200, &mut head);
        enc.field(b"content-type", b"application/grpc", false, &mut head);
        enc.field(b"authorization", token.as_bytes(), true, &mut head);
        enc.field(
            b"x-request-id",
            b"5f0c2a3e-9d1b-4c55-8f3e-0a1b2c3d4e5f",
            false,
            &mut head,
        );
        enc.field(b"accept-encoding", b"gzip, deflate", false, &mut head);
        assert_eq!(
            head[0], 0x20,
            "the first block starts with a size update to 0"
        );
        assert_eq!(head[1], 0x88, ":status 200 is indexed");
        let expected = [
            (":status", "200"),
            ("content-type", "application/grpc"),
            ("authorization", token),
            ("x-request-id", "5f0c2a3e-9d1b-4c55-8f3e-0a1b2c3d4e5f"),
            ("accept-encoding", "gzip, deflate"),
        ];
        assert_eq!(decode(&mut dec, &head).unwrap(), owned(&expected));

        let mut trailers = Vec::new();
        enc.begin_block(&mut trailers);
        enc.field(b"grpc-status", b"0", false, &mut trailers);
        enc.field(b"grpc-message", b"", false, &mut trailers);
        assert_ne!(
            trailers[0], 0x20,
            "only the first block has the size update"
        );
        let expected = [("grpc-status", "0"), ("grpc-message", "")];
        assert_eq!(decode(&mut dec, &trailers).unwrap(), owned(&expected));

        let mut teapot = Vec::new();
        enc.begin_block(&mut teapot);
        enc.status(418, &mut teapot);
        enc.field(b"content-length", b"0", false, &mut teapot);
        enc.field(
            b"set-cookie",
            b"session=abc123; HttpOnly",
            true,
            &mut teapot,
        );
        assert_eq!(
            &teapot[..5],
            b"\x08\x03418",
            ":status 418 is a literal (raw: not shorter)"
        );
        let expected = [
            (":status", "418"),
            ("content-length", "0"),
            ("set-cookie", "session=abc123; HttpOnly"),
        ];
        assert_eq!(decode(&mut dec, &teapot).unwrap(), owned(&expected));
        assert_eq!(dec.table_size(), 0, "the encoder never indexes");
    }

    #[test]
    fn encoder_representations() {
        let mut enc = Encoder::new();
        let mut out = Vec::new();
        for (status, byte) in [(200, 0x88), (204, 0x89), (206, 0x8a), (304, 0x8b)]
            .into_iter()
            .chain([(400, 0x8c), (404, 0x8d), (500, 0x8e)])
        {
            out.clear();
            enc.status(status, &mut out);
            assert_eq!(out, [byte], "{status}");
        }
        // 302 is shorter Huffman-coded (C.6.1's "6402").
        out.clear();
        enc.status(302, &mut out);
        assert_eq!(out, hex("0882 6402"));
        for status in [100, 101, 201, 307, 418, 429, 503, 999, 0, 7, 65535] {
            out.clear();
            enc.status(status, &mut out);
            let fields = decode(&mut Decoder::new(0), &out).unwrap();
            let digits = status.to_string();
            assert_eq!(fields, owned(&[(":status", digits.as_str())]));
        }
        // Exact static match: indexed.
        out.clear();
        enc.field(b":method", b"GET", false, &mut out);
        assert_eq!(out, [0x82]);
        // Static name: literal without indexing, name index 31 (4-bit prefix: 0f 10).
        out.clear();
        enc.field(b"content-type", b"text/plain", false, &mut out);
        assert_eq!(&out[..2], [0x0f, 0x10]);
        // Sensitive, even with an exact static match: never indexed (0001xxxx), name index 2.
        out.clear();
        enc.field(b":method", b"GET", true, &mut out);
        assert_eq!(out, hex("1203 4745 54"));
        // New name: 0x00 then the two strings; "x" is not shorter Huffman-coded (1 octet).
        out.clear();
        enc.field(b"x", b"y", false, &mut out);
        assert_eq!(out, hex("0001 7801 79"));
        out.clear();
        enc.field(b"x", b"y", true, &mut out);
        assert_eq!(out, hex("1001 7801 79"));
        // Huffman when strictly shorter: the C.4.1 value.
        out.clear();
        enc.field(b":authority", b"www.example.com", false, &mut out);
        assert_eq!(out, hex("018c f1e3 c2e5 f23a 6ba0 ab90 f4ff"));
    }

    #[test]
    fn several_size_updates_at_the_start() {
        let mut d = Decoder::new(256);
        // 0, then 256 (3f e1 01), then a field.
        assert_eq!(
            decode(&mut d, &hex("20 3fe1 01 82")).unwrap(),
            owned(&[(":method", "GET")])
        );
        assert_eq!(d.table.max_size(), 256);
    }

    #[test]
    fn size_update_evicts() {
        let mut d = Decoder::new(4096);
        requests_prefix(&mut d);
        assert_eq!(d.table_size(), 164);
        // Down to 110: the oldest entry (:authority, 57) goes.
        assert_eq!(decode(&mut d, &hex("3f4f")).unwrap(), owned(&[]));
        assert_eq!(d.table_size(), 107);
        assert_eq!(decode(&mut d, &hex("20 be")), Err(DecodeError::BadIndex));
        assert_eq!(d.table_size(), 0);
        assert_eq!(d.table.capacity(), 0, "an emptied table frees its memory");
    }

    fn requests_prefix(d: &mut Decoder) {
        for block in [C3_1, C3_2, C3_3] {
            decode(d, &hex(block)).unwrap();
        }
    }

    #[test]
    fn indexed_name_evicted_by_its_own_insertion() {
        let mut d = Decoder::new(100);
        // "aaaa" / 30 x 'v': 66 octets.
        let mut block = hex("4004 6161 6161 1e");
        block.extend_from_slice(&[b'v'; 30]);
        decode(&mut d, &block).unwrap();
        assert_eq!(d.table_size(), 66);
        // Name index 62 (that entry), 12-octet value: 48 octets, which evicts the name's entry.
        let mut block = hex("7e0c");
        block.extend_from_slice(b"twelve bytes");
        assert_eq!(
            decode(&mut d, &block).unwrap(),
            owned(&[("aaaa", "twelve bytes")])
        );
        assert_eq!(d.table_size(), 48);
        assert_eq!(d.table.get(0), Some((&b"aaaa"[..], &b"twelve bytes"[..])));
        assert_eq!(d.table.get(1), None);
    }

    #[test]
    fn max_table_size_zero() {
        let mut d = Decoder::new(0);
        let first = [
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
            AUTHORITY,
        ];
        check(&mut d, C3_1, &first, 0, &[]);
        check(&mut d, C4_1, &first, 0, &[]);
        assert_eq!(d.table.capacity(), 0);
        assert_eq!(decode(&mut d, &hex(C3_2)), Err(DecodeError::BadIndex));
        assert_eq!(
            decode(&mut d, &hex("20 82")).unwrap(),
            owned(&[(":method", "GET")])
        );
        assert_eq!(
            decode(&mut d, &hex("21")),
            Err(DecodeError::SizeUpdateTooLarge)
        );
    }

    #[test]
    fn truncated_integer() {
        let mut d = Decoder::new(4096);
        for block in ["ff", "1f", "1fff", "7f80", "3f", "3fe1"] {
            assert_eq!(
                decode(&mut d, &hex(block)),
                Err(DecodeError::Truncated),
                "{block}"
            );
        }
        // A string length cut short.
        assert_eq!(decode(&mut d, &hex("407f")), Err(DecodeError::Truncated));
    }

    #[test]
    fn integer_overflow() {
        let mut d = Decoder::new(4096);
        let cases = [
            "1fff ffff ffff ff", // six continuation octets
            "1f80 8080 8080 00", // six, though the value is small
            "ffff ffff ff0f",    // 127 + 2^32 - 1 > u32::MAX
            "0f00 7fff ffff ff7f",
        ];
        for block in cases {
            assert_eq!(
                decode(&mut d, &hex(block)),
                Err(DecodeError::IntegerOverflow),
                "{block}"
            );
        }
        // u32::MAX itself is an integer (then a bad index).
        assert_eq!(
            decode(&mut d, &hex("ff80 ffff ff0f")),
            Err(DecodeError::BadIndex)
        );
    }

    /// A 4,064-octet name inserted once, then named by index 6,000 times with empty values
    /// (two octets each, a 4 KiB copy each): stopped, while re-inserting it a few times is
    /// fine (review of 2026-12-03).
    #[test]
    fn re_inserting_a_large_name_thousands_of_times_is_refused() {
        let mut block = vec![0x40, 0x7f, 0xe1, 0x1e];
        block.extend([b'a'; 4064]);
        block.push(0);
        let mut few = block.clone();
        for _ in 0..6000 {
            block.extend([0x7e, 0]);
        }
        let mut d = Decoder::new(4096);
        assert_eq!(decode(&mut d, &block), Err(DecodeError::TooManyInsertions));
        few.extend([0x7e, 0, 0x7e, 0]);
        let mut d = Decoder::new(4096);
        assert!(decode(&mut d, &few).is_ok());
    }

    #[test]
    fn index_zero() {
        let mut d = Decoder::new(4096);
        assert_eq!(decode(&mut d, &hex("80")), Err(DecodeError::ZeroIndex));
    }

    #[test]
    fn index_beyond_table() {
        let mut d = Decoder::new(4096);
        assert_eq!(decode(&mut d, &hex("be")), Err(DecodeError::BadIndex));
        assert_eq!(decode(&mut d, &hex("7e01 61")), Err(DecodeError::BadIndex));
        assert_eq!(
            decode(&mut d, &hex("0f30 0161")),
            Err(DecodeError::BadIndex)
        );
        decode(&mut d, &hex(C3_1)).unwrap();
        assert_eq!(decode(&mut d, &hex("be")).unwrap(), owned(&[AUTHORITY]));
        assert_eq!(decode(&mut d, &hex("bf")), Err(DecodeError::BadIndex));
    }

    #[test]
    fn size_update_above_max() {
        let mut d = Decoder::new(256);
        assert_eq!(
            decode(&mut d, &hex("3fe2 01")),
            Err(DecodeError::SizeUpdateTooLarge)
        );
        let mut d = Decoder::new(4096);
        assert_eq!(decode(&mut d, &hex("3fe1 1f")), Ok(vec![]), "4096 is fine");
        assert_eq!(
            decode(&mut d, &hex("3fe2 1f")),
            Err(DecodeError::SizeUpdateTooLarge)
        );
    }

    #[test]
    fn size_update_after_field() {
        let mut d = Decoder::new(4096);
        assert_eq!(
            decode(&mut d, &hex("8220")),
            Err(DecodeError::SizeUpdateNotFirst)
        );
        assert_eq!(
            decode(&mut d, &hex("2082 20")),
            Err(DecodeError::SizeUpdateNotFirst)
        );
        // A new block may start with one again.
        assert_eq!(
            decode(&mut d, &hex("2082")).unwrap(),
            owned(&[(":method", "GET")])
        );
    }

    #[test]
    fn string_past_block_end() {
        let mut d = Decoder::new(4096);
        for block in [
            "400a 6375",
            "040c 2f",
            "4001 61",
            "0402 61",
            "40",
            "04",
            "8586 0403",
        ] {
            let block = hex(block);
            assert_eq!(
                decode(&mut d, &block),
                Err(DecodeError::Truncated),
                "{block:02x?}"
            );
        }
        assert_eq!(d.table_size(), 0);
    }

    #[test]
    fn huffman_errors_in_a_block() {
        let mut d = Decoder::new(4096);
        assert_eq!(
            decode(&mut d, &hex("0481 ff")),
            Err(DecodeError::HuffmanPadding)
        );
        assert_eq!(
            decode(&mut d, &hex("0484 ffff ffff")),
            Err(DecodeError::HuffmanEos)
        );
        assert_eq!(
            decode(&mut d, &hex("0481 06")),
            Err(DecodeError::HuffmanPadding)
        );
    }

    #[test]
    fn scratch_is_cleared_and_reused() {
        let mut d = Decoder::new(4096);
        let mut scratch = b"stale".to_vec();
        let mut n = 0;
        d.decode(&hex(C4_1), &mut scratch, |_, _| n += 1).unwrap();
        assert_eq!(n, 4);
        assert!(!scratch.starts_with(b"stale"));
    }

    #[test]
    fn random_blocks_do_not_panic() {
        let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
        let mut d = Decoder::new(4096);
        let mut scratch = Vec::new();
        let seeds: Vec<Vec<u8>> = [C3_1, C3_3, C4_3, C5_1, C5_3, C6_1, C6_3]
            .iter()
            .map(|s| hex(s))
            .collect();
        for i in 0..20_000 {
            let block: Vec<u8> = if i % 2 == 0 {
                let len = (rng.next() % 48) as usize;
                (0..len).map(|_| rng.next() as u8).collect()
            } else {
                // A valid block with a few octets changed, to get past the first octets.
                let mut block = seeds[(rng.next() % seeds.len() as u64) as usize].clone();
                for _ in 0..1 + rng.next() % 3 {
                    let at = (rng.next() % block.len() as u64) as usize;
                    block[at] = rng.next() as u8;
                }
                block.truncate(block.len() - (rng.next() % 4) as usize);
                block
            };
            if i % 1000 == 0 {
                d = Decoder::new([0, 64, 256, 4096][(i / 1000) % 4]);
            }
            let mut total = 0usize;
            let _ = d.decode(&block, &mut scratch, |name, value| {
                total += name.len() + value.len()
            });
            assert!(d.table_size() <= 4096);
        }
    }

    #[test]
    fn error_display() {
        assert_eq!(DecodeError::ZeroIndex.to_string(), "HPACK index 0");
        let err: Box<dyn std::error::Error> = Box::new(DecodeError::Truncated);
        assert!(err.to_string().contains("truncated"));
    }
}
