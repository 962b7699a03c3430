//! The HPACK Huffman code (RFC 7541 §5.2, Appendix B): encoding, and decoding through a
//! nibble-at-a-time state machine built at compile time.
//!
//! Decoding walks the code tree four bits at a time. The states are the tree's 256 internal
//! nodes (state 0 is the root: no bits pending since the last symbol); [`DECODE`] gives, for
//! each state and nibble, the next state, the symbol completed on the way (codes are at least
//! 5 bits long, so a nibble completes at most one), whether the pending bits are acceptable
//! padding should the string end there, and whether the nibble completed EOS (an error).

/// Why a Huffman-coded string is invalid (RFC 7541 §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum HuffmanError {
    /// The string contains the EOS symbol.
    Eos,
    /// The string ends in more than 7 bits of padding, or in padding that is not all 1s.
    Padding,
}

/// The Huffman code of RFC 7541 Appendix B: `(code, bit length)` for symbols 0..=255 and EOS
/// (256), codes right-aligned in the `u32`.
///
/// The values are RFC 7541 Appendix B, copied from the `h2` crate's
/// `src/hpack/huffman/table.rs` (`ENCODE_CODES` and `ENCODE_CODE_LENGTHS`, h2 0.4.20, MIT
/// licence, copyright (c) 2017 h2 authors), with EOS (`0x3fffffff`, 30 bits) appended.
#[rustfmt::skip]
const CODES: [(u32, u8); 257] = [
    (0x1ff8, 13), (0x7fffd8, 23), (0xfffffe2, 28), (0xfffffe3, 28), (0xfffffe4, 28),
    (0xfffffe5, 28), (0xfffffe6, 28), (0xfffffe7, 28), (0xfffffe8, 28), (0xffffea, 24),
    (0x3ffffffc, 30), (0xfffffe9, 28), (0xfffffea, 28), (0x3ffffffd, 30), (0xfffffeb, 28),
    (0xfffffec, 28), (0xfffffed, 28), (0xfffffee, 28), (0xfffffef, 28), (0xffffff0, 28),
    (0xffffff1, 28), (0xffffff2, 28), (0x3ffffffe, 30), (0xffffff3, 28), (0xffffff4, 28),
    (0xffffff5, 28), (0xffffff6, 28), (0xffffff7, 28), (0xffffff8, 28), (0xffffff9, 28),
    (0xffffffa, 28), (0xffffffb, 28), (0x14, 6), (0x3f8, 10), (0x3f9, 10), (0xffa, 12),
    (0x1ff9, 13), (0x15, 6), (0xf8, 8), (0x7fa, 11), (0x3fa, 10), (0x3fb, 10), (0xf9, 8),
    (0x7fb, 11), (0xfa, 8), (0x16, 6), (0x17, 6), (0x18, 6), (0x0, 5), (0x1, 5), (0x2, 5),
    (0x19, 6), (0x1a, 6), (0x1b, 6), (0x1c, 6), (0x1d, 6), (0x1e, 6), (0x1f, 6), (0x5c, 7),
    (0xfb, 8), (0x7ffc, 15), (0x20, 6), (0xffb, 12), (0x3fc, 10), (0x1ffa, 13), (0x21, 6),
    (0x5d, 7), (0x5e, 7), (0x5f, 7), (0x60, 7), (0x61, 7), (0x62, 7), (0x63, 7), (0x64, 7),
    (0x65, 7), (0x66, 7), (0x67, 7), (0x68, 7), (0x69, 7), (0x6a, 7), (0x6b, 7), (0x6c, 7),
    (0x6d, 7), (0x6e, 7), (0x6f, 7), (0x70, 7), (0x71, 7), (0x72, 7), (0xfc, 8), (0x73, 7),
    (0xfd, 8), (0x1ffb, 13), (0x7fff0, 19), (0x1ffc, 13), (0x3ffc, 14), (0x22, 6), (0x7ffd, 15),
    (0x3, 5), (0x23, 6), (0x4, 5), (0x24, 6), (0x5, 5), (0x25, 6), (0x26, 6), (0x27, 6), (0x6, 5),
    (0x74, 7), (0x75, 7), (0x28, 6), (0x29, 6), (0x2a, 6), (0x7, 5), (0x2b, 6), (0x76, 7),
    (0x2c, 6), (0x8, 5), (0x9, 5), (0x2d, 6), (0x77, 7), (0x78, 7), (0x79, 7), (0x7a, 7),
    (0x7b, 7), (0x7ffe, 15), (0x7fc, 11), (0x3ffd, 14), (0x1ffd, 13), (0xffffffc, 28),
    (0xfffe6, 20), (0x3fffd2, 22), (0xfffe7, 20), (0xfffe8, 20), (0x3fffd3, 22), (0x3fffd4, 22),
    (0x3fffd5, 22), (0x7fffd9, 23), (0x3fffd6, 22), (0x7fffda, 23), (0x7fffdb, 23), (0x7fffdc, 23),
    (0x7fffdd, 23), (0x7fffde, 23), (0xffffeb, 24), (0x7fffdf, 23), (0xffffec, 24), (0xffffed, 24),
    (0x3fffd7, 22), (0x7fffe0, 23), (0xffffee, 24), (0x7fffe1, 23), (0x7fffe2, 23), (0x7fffe3, 23),
    (0x7fffe4, 23), (0x1fffdc, 21), (0x3fffd8, 22), (0x7fffe5, 23), (0x3fffd9, 22), (0x7fffe6, 23),
    (0x7fffe7, 23), (0xffffef, 24), (0x3fffda, 22), (0x1fffdd, 21), (0xfffe9, 20), (0x3fffdb, 22),
    (0x3fffdc, 22), (0x7fffe8, 23), (0x7fffe9, 23), (0x1fffde, 21), (0x7fffea, 23), (0x3fffdd, 22),
    (0x3fffde, 22), (0xfffff0, 24), (0x1fffdf, 21), (0x3fffdf, 22), (0x7fffeb, 23), (0x7fffec, 23),
    (0x1fffe0, 21), (0x1fffe1, 21), (0x3fffe0, 22), (0x1fffe2, 21), (0x7fffed, 23), (0x3fffe1, 22),
    (0x7fffee, 23), (0x7fffef, 23), (0xfffea, 20), (0x3fffe2, 22), (0x3fffe3, 22), (0x3fffe4, 22),
    (0x7ffff0, 23), (0x3fffe5, 22), (0x3fffe6, 22), (0x7ffff1, 23), (0x3ffffe0, 26),
    (0x3ffffe1, 26), (0xfffeb, 20), (0x7fff1, 19), (0x3fffe7, 22), (0x7ffff2, 23), (0x3fffe8, 22),
    (0x1ffffec, 25), (0x3ffffe2, 26), (0x3ffffe3, 26), (0x3ffffe4, 26), (0x7ffffde, 27),
    (0x7ffffdf, 27), (0x3ffffe5, 26), (0xfffff1, 24), (0x1ffffed, 25), (0x7fff2, 19),
    (0x1fffe3, 21), (0x3ffffe6, 26), (0x7ffffe0, 27), (0x7ffffe1, 27), (0x3ffffe7, 26),
    (0x7ffffe2, 27), (0xfffff2, 24), (0x1fffe4, 21), (0x1fffe5, 21), (0x3ffffe8, 26),
    (0x3ffffe9, 26), (0xffffffd, 28), (0x7ffffe3, 27), (0x7ffffe4, 27), (0x7ffffe5, 27),
    (0xfffec, 20), (0xfffff3, 24), (0xfffed, 20), (0x1fffe6, 21), (0x3fffe9, 22), (0x1fffe7, 21),
    (0x1fffe8, 21), (0x7ffff3, 23), (0x3fffea, 22), (0x3fffeb, 22), (0x1ffffee, 25),
    (0x1ffffef, 25), (0xfffff4, 24), (0xfffff5, 24), (0x3ffffea, 26), (0x7ffff4, 23),
    (0x3ffffeb, 26), (0x7ffffe6, 27), (0x3ffffec, 26), (0x3ffffed, 26), (0x7ffffe7, 27),
    (0x7ffffe8, 27), (0x7ffffe9, 27), (0x7ffffea, 27), (0x7ffffeb, 27), (0xffffffe, 28),
    (0x7ffffec, 27), (0x7ffffed, 27), (0x7ffffee, 27), (0x7ffffef, 27), (0x7fffff0, 27),
    (0x3ffffee, 26), (0x3fffffff, 30),
];

/// [`CODES`] as a static, for run-time lookups (the `const` feeds the table builder).
static ENCODE: [(u32, u8); 257] = CODES;

/// The EOS symbol's index in [`CODES`].
const EOS: u16 = 256;

/// [`Step::flags`]: the nibble completed the symbol in [`Step::sym`].
const EMIT: u8 = 1;
/// [`Step::flags`]: the bits pending after this nibble are valid padding (RFC 7541 §5.2: at
/// most 7 bits, all 1s, i.e. the most significant bits of EOS), so the string may end here.
const ACCEPT: u8 = 2;
/// [`Step::flags`]: the nibble completed EOS, which must not appear in a string.
const FAIL: u8 = 4;

/// One transition of the decoding state machine.
#[derive(Clone, Copy)]
struct Step {
    /// The state after the nibble (an internal node of the code tree; 0 is the root).
    next: u8,
    /// The symbol completed, when `flags` has [`EMIT`].
    sym: u8,
    /// [`EMIT`], [`ACCEPT`], [`FAIL`].
    flags: u8,
}

/// The decoding state machine: `DECODE[state][nibble]`.
static DECODE: [[Step; 16]; 256] = build_decode_table();

/// A child slot of the code tree not filled (yet).
const NO_CHILD: u16 = u16::MAX;
/// A child that is a leaf: `LEAF | symbol`; other children are internal node numbers.
const LEAF: u16 = 0x8000;

/// Builds [`DECODE`] from [`CODES`]: first the code tree, then each (node, nibble) walk.
/// Panics (at compile time) unless the code is prefix-free and complete with 256 internal
/// nodes.
const fn build_decode_table() -> [[Step; 16]; 256] {
    // The tree: children[node] = [child on 0, child on 1]; depth and "path is all 1s" per node.
    let mut children = [[NO_CHILD; 2]; 256];
    let mut depth = [0u8; 256];
    let mut all_ones = [false; 256];
    all_ones[0] = true;
    let mut nodes: usize = 1;
    let mut sym = 0;
    while sym < CODES.len() {
        let (code, len) = CODES[sym];
        let mut node = 0;
        let mut bit = len;
        while bit > 1 {
            bit -= 1;
            let b = ((code >> bit) & 1) as usize;
            let child = children[node][b];
            if child == NO_CHILD {
                assert!(nodes < 256, "more than 256 internal nodes");
                children[node][b] = nodes as u16;
                depth[nodes] = depth[node] + 1;
                all_ones[nodes] = all_ones[node] && b == 1;
                node = nodes;
                nodes += 1;
            } else {
                assert!(child & LEAF == 0, "the code is not prefix-free");
                node = child as usize;
            }
        }
        let b = (code & 1) as usize;
        assert!(children[node][b] == NO_CHILD, "the code is not prefix-free");
        children[node][b] = LEAF | sym as u16;
        sym += 1;
    }
    assert!(nodes == 256, "the code tree must have 256 internal nodes");

    let mut table = [[Step {
        next: 0,
        sym: 0,
        flags: 0,
    }; 16]; 256];
    let mut state = 0;
    while state < 256 {
        let mut nibble = 0;
        while nibble < 16 {
            let mut node = state;
            let mut sym = 0u8;
            let mut flags = 0u8;
            let mut bit = 4;
            while bit > 0 {
                bit -= 1;
                let child = children[node][(nibble >> bit) & 1];
                assert!(child != NO_CHILD, "the code is not complete");
                if child & LEAF == 0 {
                    node = child as usize;
                } else if child & !LEAF == EOS {
                    flags |= FAIL;
                    break;
                } else {
                    sym = (child & !LEAF) as u8;
                    flags |= EMIT;
                    node = 0;
                }
            }
            if node == 0 || (all_ones[node] && depth[node] <= 7) {
                flags |= ACCEPT;
            }
            table[state][nibble] = Step {
                next: node as u8,
                sym,
                flags,
            };
            nibble += 1;
        }
        state += 1;
    }
    table
}

/// Decodes the Huffman-coded string `src` (RFC 7541 §5.2), appending the octets to `out`.
///
/// Errors: [`HuffmanError::Eos`] when the string contains the EOS code;
/// [`HuffmanError::Padding`] when it ends in more than 7 bits of padding or in padding
/// that is not all 1s (the most significant bits of EOS). On error `out` may hold part of
/// the string.
pub(super) fn decode(src: &[u8], out: &mut Vec<u8>) -> Result<(), HuffmanError> {
    // The shortest code is 5 bits.
    out.reserve(src.len().saturating_mul(8) / 5);
    let mut state = 0u8;
    let mut accept = true;
    for &byte in src {
        for nibble in [byte >> 4, byte & 0x0f] {
            let step = DECODE[usize::from(state)][usize::from(nibble)];
            if step.flags & FAIL != 0 {
                return Err(HuffmanError::Eos);
            }
            if step.flags & EMIT != 0 {
                out.push(step.sym);
            }
            state = step.next;
            accept = step.flags & ACCEPT != 0;
        }
    }
    if accept {
        Ok(())
    } else {
        Err(HuffmanError::Padding)
    }
}

/// The length in octets of `src` Huffman-coded (padding included).
pub(super) fn encoded_len(src: &[u8]) -> usize {
    let bits: u64 = src
        .iter()
        .map(|&b| u64::from(ENCODE[usize::from(b)].1))
        .sum();
    // At most 30 bits per octet: no overflow for any slice that fits in memory.
    usize::try_from(bits.div_ceil(8)).unwrap_or(usize::MAX)
}

/// Appends `src` Huffman-coded to `out`, the last octet padded with 1s (the most significant
/// bits of EOS, RFC 7541 §5.2).
pub(super) fn encode(src: &[u8], out: &mut Vec<u8>) {
    // Pending bits are the low `bits` bits of `acc`: at most 7 + 30.
    let mut acc: u64 = 0;
    let mut bits: u32 = 0;
    for &b in src {
        let (code, len) = ENCODE[usize::from(b)];
        acc = (acc << len) | u64::from(code);
        bits += u32::from(len);
        while bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    if bits > 0 {
        out.push(((acc << (8 - bits)) | (0xff >> bits)) as u8);
    }
}

#[cfg(test)]
mod tests {
    use super::super::hex;
    use super::*;

    fn decoded(src: &[u8]) -> Result<Vec<u8>, HuffmanError> {
        let mut out = Vec::new();
        decode(src, &mut out).map(|()| out)
    }

    fn encoded(src: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode(src, &mut out);
        assert_eq!(out.len(), encoded_len(src));
        out
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

    #[test]
    fn code_is_rfc_7541_appendix_b() {
        // Spot checks against the RFC's table.
        assert_eq!(CODES[0], (0x1ff8, 13));
        assert_eq!(CODES[usize::from(b' ')], (0x14, 6));
        assert_eq!(CODES[usize::from(b'0')], (0x0, 5));
        assert_eq!(CODES[usize::from(b'a')], (0x3, 5));
        assert_eq!(CODES[usize::from(b'z')], (0x7b, 7));
        assert_eq!(CODES[255], (0x3ffffee, 26));
        assert_eq!(CODES[256], (0x3fffffff, 30));
        // Complete (Kraft sum exactly 1) and every code fits its length.
        let mut kraft: u64 = 0;
        for &(code, len) in CODES.iter() {
            assert!((5..=30).contains(&len));
            assert!(u64::from(code) < 1u64 << len);
            kraft += 1u64 << (30 - len);
        }
        assert_eq!(kraft, 1u64 << 30);
    }

    #[test]
    fn rfc_7541_appendix_c_strings() {
        let cases = [
            ("f1e3 c2e5 f23a 6ba0 ab90 f4ff", "www.example.com"),
            ("a8eb 1064 9cbf", "no-cache"),
            ("25a8 49e9 5ba9 7d7f", "custom-key"),
            ("25a8 49e9 5bb8 e8b4 bf", "custom-value"),
            ("6402", "302"),
            ("aec3 771a 4b", "private"),
            (
                "d07a be94 1054 d444 a820 0595 040b 8166 e082 a62d 1bff",
                "Mon, 21 Oct 2013 20:13:21 GMT",
            ),
            (
                "9d29 ad17 1863 c78f 0b97 c8e9 ae82 ae43 d3",
                "https://www.example.com",
            ),
            ("640e ff", "307"),
            (
                "d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff",
                "Mon, 21 Oct 2013 20:13:22 GMT",
            ),
            ("9bd9 ab", "gzip"),
            (
                "94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 \
                 3160 65c0 03ed 4ee5 b106 3d50 07",
                "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1",
            ),
        ];
        for (code, plain) in cases {
            assert_eq!(decoded(&hex(code)).unwrap(), plain.as_bytes(), "{plain}");
            assert_eq!(encoded(plain.as_bytes()), hex(code), "{plain}");
        }
    }

    #[test]
    fn empty_string() {
        assert_eq!(encoded(b""), b"");
        assert_eq!(decoded(b"").unwrap(), b"");
    }

    #[test]
    fn every_byte_round_trips() {
        for b in 0..=255u8 {
            for len in [1, 2, 3, 7] {
                let plain = vec![b; len];
                assert_eq!(
                    decoded(&encoded(&plain)).unwrap(),
                    plain,
                    "byte {b:#04x} x{len}"
                );
            }
        }
        let all: Vec<u8> = (0..=255u8).collect();
        assert_eq!(decoded(&encoded(&all)).unwrap(), all);
    }

    #[test]
    fn random_bytes_round_trip() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for _ in 0..2000 {
            let len = (rng.next() % 64) as usize;
            let plain: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            assert_eq!(decoded(&encoded(&plain)).unwrap(), plain);
            // Mostly-ASCII strings, the common case.
            let text: Vec<u8> = (0..len).map(|_| b' ' + (rng.next() % 95) as u8).collect();
            assert_eq!(decoded(&encoded(&text)).unwrap(), text);
        }
    }

    #[test]
    fn rejects_eos_in_string() {
        // EOS alone (30 1s) padded with two 1s.
        assert_eq!(decoded(&hex("ffff ffff")), Err(HuffmanError::Eos));
        // 'a' (00011), EOS, then 5 bits of padding: 40 bits.
        assert_eq!(decoded(&hex("1fff ffff ff")), Err(HuffmanError::Eos));
        // EOS in the middle, a valid symbol after it.
        // 'a', EOS, then "00000" ('0').
        assert_eq!(decoded(&hex("1fff ffff e0")), Err(HuffmanError::Eos));
    }

    #[test]
    fn rejects_padding_longer_than_7_bits() {
        // '0' (00000) then 11 bits of 1s.
        assert_eq!(decoded(&hex("07ff")), Err(HuffmanError::Padding));
        // Only padding, 8 bits.
        assert_eq!(decoded(&hex("ff")), Err(HuffmanError::Padding));
        // 3 bits of 1s is fine.
        assert_eq!(decoded(&hex("07")).unwrap(), b"0");
    }

    #[test]
    fn rejects_padding_with_a_zero_bit() {
        // '0' (00000) then padding 110.
        assert_eq!(decoded(&hex("06")), Err(HuffmanError::Padding));
        // '0' then padding 011.
        assert_eq!(decoded(&hex("03")), Err(HuffmanError::Padding));
        // 'a' (00011) then 000: "000" is a prefix of '0', i.e. a truncated code.
        assert_eq!(decoded(&hex("18")), Err(HuffmanError::Padding));
    }
}
