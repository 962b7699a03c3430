//! The HPACK tables (RFC 7541 §2.3): the static table (Appendix A) and the decoder's dynamic
//! table (§2.3.2, §4).

use std::collections::VecDeque;

/// The static table (RFC 7541 Appendix A): `STATIC[i - 1]` is entry `i`, `(name, value)`.
static STATIC: [(&[u8], &[u8]); 61] = [
    (b":authority", b""),
    (b":method", b"GET"),
    (b":method", b"POST"),
    (b":path", b"/"),
    (b":path", b"/index.html"),
    (b":scheme", b"http"),
    (b":scheme", b"https"),
    (b":status", b"200"),
    (b":status", b"204"),
    (b":status", b"206"),
    (b":status", b"304"),
    (b":status", b"400"),
    (b":status", b"404"),
    (b":status", b"500"),
    (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""),
    (b"accept-ranges", b""),
    (b"accept", b""),
    (b"access-control-allow-origin", b""),
    (b"age", b""),
    (b"allow", b""),
    (b"authorization", b""),
    (b"cache-control", b""),
    (b"content-disposition", b""),
    (b"content-encoding", b""),
    (b"content-language", b""),
    (b"content-length", b""),
    (b"content-location", b""),
    (b"content-range", b""),
    (b"content-type", b""),
    (b"cookie", b""),
    (b"date", b""),
    (b"etag", b""),
    (b"expect", b""),
    (b"expires", b""),
    (b"from", b""),
    (b"host", b""),
    (b"if-match", b""),
    (b"if-modified-since", b""),
    (b"if-none-match", b""),
    (b"if-range", b""),
    (b"if-unmodified-since", b""),
    (b"last-modified", b""),
    (b"link", b""),
    (b"location", b""),
    (b"max-forwards", b""),
    (b"proxy-authenticate", b""),
    (b"proxy-authorization", b""),
    (b"range", b""),
    (b"referer", b""),
    (b"refresh", b""),
    (b"retry-after", b""),
    (b"server", b""),
    (b"set-cookie", b""),
    (b"strict-transport-security", b""),
    (b"transfer-encoding", b""),
    (b"user-agent", b""),
    (b"vary", b""),
    (b"via", b""),
    (b"www-authenticate", b""),
];

/// Number of static table entries; dynamic table indexes start after it (RFC 7541 §2.3.3).
pub(super) const STATIC_LEN: usize = STATIC.len();

/// Static table entry `index` (1-based, RFC 7541 §2.3.3), `(name, value)`; `None` outside
/// `1..=61`.
pub(super) fn static_entry(index: usize) -> Option<(&'static [u8], &'static [u8])> {
    STATIC.get(index.checked_sub(1)?).copied()
}

/// The best static table match for a field: `Some((index, true))` for an entry with this
/// name and value, else `Some((index, false))` for the first entry with this name, else
/// `None`. Indexes are 1-based.
pub(super) fn static_find(name: &[u8], value: &[u8]) -> Option<(usize, bool)> {
    let first = STATIC.iter().position(|&(n, _)| n == name)?;
    // Entries sharing a name are adjacent.
    let exact = STATIC
        .get(first..)
        .unwrap_or_default()
        .iter()
        .take_while(|&&(n, _)| n == name)
        .position(|&(_, v)| v == value);
    Some(match exact {
        Some(offset) => (first + offset + 1, true),
        None => (first + 1, false),
    })
}

/// Per-entry overhead in the table size (RFC 7541 §4.1).
const ENTRY_OVERHEAD: usize = 32;

/// The size of a `(name, value)` entry per RFC 7541 §4.1: name + value + 32 octets.
pub(super) fn entry_size(name: &[u8], value: &[u8]) -> usize {
    name.len()
        .saturating_add(value.len())
        .saturating_add(ENTRY_OVERHEAD)
}

/// One dynamic table entry: name and value in one allocation.
#[derive(Debug)]
pub(super) struct Entry {
    /// The name followed by the value.
    bytes: Box<[u8]>,
    /// Where the name ends in `bytes`.
    name_len: usize,
}

impl Entry {
    /// An entry holding copies of `name` and `value`.
    pub(super) fn new(name: &[u8], value: &[u8]) -> Entry {
        let mut bytes = Vec::with_capacity(name.len().saturating_add(value.len()));
        bytes.extend_from_slice(name);
        bytes.extend_from_slice(value);
        Entry {
            bytes: bytes.into_boxed_slice(),
            name_len: name.len(),
        }
    }

    /// `(name, value)`.
    pub(super) fn field(&self) -> (&[u8], &[u8]) {
        let name_len = self.name_len.min(self.bytes.len());
        self.bytes.split_at(name_len)
    }

    /// The entry's size per RFC 7541 §4.1.
    fn size(&self) -> usize {
        self.bytes.len().saturating_add(ENTRY_OVERHEAD)
    }
}

/// The decoder's dynamic table (RFC 7541 §2.3.2, §4): newest entry first, evicting oldest
/// first. It allocates nothing until the first insertion and holds only its entries (and the
/// deque's slots) between header blocks.
#[derive(Debug)]
pub(super) struct DynamicTable {
    /// Entries, newest at the front (dynamic index 1, i.e. HPACK index 62).
    entries: VecDeque<Entry>,
    /// Sum of the entries' sizes (RFC 7541 §4.1), at most `max_size`.
    size: usize,
    /// The maximum size currently in force (RFC 7541 §4.2), in octets.
    max_size: usize,
}

impl DynamicTable {
    /// An empty table whose maximum size is `max_size` octets.
    pub(super) fn new(max_size: usize) -> DynamicTable {
        DynamicTable {
            entries: VecDeque::new(),
            size: 0,
            max_size,
        }
    }

    /// The current size in octets (RFC 7541 §4.1).
    pub(super) fn size(&self) -> usize {
        self.size
    }

    /// The maximum size currently in force, in octets.
    pub(super) fn max_size(&self) -> usize {
        self.max_size
    }

    /// Entry `i` counting from the newest (0), `(name, value)`; `None` past the last.
    pub(super) fn get(&self, i: usize) -> Option<(&[u8], &[u8])> {
        self.entries.get(i).map(Entry::field)
    }

    /// Sets the maximum size (a dynamic table size update, RFC 7541 §6.3), evicting the oldest
    /// entries until the table fits (§4.3). The caller checks `max_size` against the limit.
    pub(super) fn set_max_size(&mut self, max_size: usize) {
        self.max_size = max_size;
        self.evict_to(max_size);
        self.release_if_empty();
    }

    /// Adds `entry` as the newest, first evicting the oldest entries until it fits (RFC 7541
    /// §4.4). An entry larger than the maximum size empties the table and is not added.
    pub(super) fn insert(&mut self, entry: Entry) {
        let size = entry.size();
        if size > self.max_size {
            self.clear();
            return;
        }
        self.evict_to(self.max_size - size);
        self.entries.push_front(entry);
        self.size += size;
    }

    /// Evicts every entry (what inserting an entry larger than the maximum size does, RFC 7541
    /// §4.4) and gives the memory back.
    pub(super) fn clear(&mut self) {
        self.evict_to(0);
        self.release_if_empty();
    }

    /// Evicts the oldest entries until the size is at most `target`.
    fn evict_to(&mut self, target: usize) {
        while self.size > target {
            match self.entries.pop_back() {
                Some(entry) => self.size = self.size.saturating_sub(entry.size()),
                None => self.size = 0,
            }
        }
    }

    /// Frees the deque's slots once the table is empty (after a size update or an oversized
    /// entry; not on ordinary eviction, which is about to insert): back to no allocation.
    fn release_if_empty(&mut self) {
        if self.entries.is_empty() {
            self.entries = VecDeque::new();
        }
    }

    /// Slots allocated for entries (tests: nothing before the first insertion).
    #[cfg(test)]
    pub(super) fn capacity(&self) -> usize {
        self.entries.capacity()
    }

    /// Number of entries.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_table_is_rfc_7541_appendix_a() {
        assert_eq!(STATIC_LEN, 61);
        assert_eq!(static_entry(0), None);
        assert_eq!(static_entry(1), Some((&b":authority"[..], &b""[..])));
        assert_eq!(static_entry(2), Some((&b":method"[..], &b"GET"[..])));
        assert_eq!(static_entry(8), Some((&b":status"[..], &b"200"[..])));
        assert_eq!(
            static_entry(16),
            Some((&b"accept-encoding"[..], &b"gzip, deflate"[..]))
        );
        assert_eq!(static_entry(31), Some((&b"content-type"[..], &b""[..])));
        assert_eq!(static_entry(61), Some((&b"www-authenticate"[..], &b""[..])));
        assert_eq!(static_entry(62), None);
        assert_eq!(static_entry(usize::MAX), None);
    }

    #[test]
    fn static_find_finds_every_entry() {
        for index in 1..=STATIC_LEN {
            let (name, value) = static_entry(index).unwrap();
            assert_eq!(
                static_find(name, value),
                Some((index, true)),
                "entry {index}"
            );
            let first = (1..=index)
                .find(|&i| static_entry(i).unwrap().0 == name)
                .unwrap();
            assert_eq!(
                static_find(name, b"\x00no such value"),
                Some((first, false))
            );
        }
        assert_eq!(static_find(b":status", b"418"), Some((8, false)));
        assert_eq!(static_find(b":status", b"404"), Some((13, true)));
        assert_eq!(static_find(b"grpc-status", b"0"), None);
        assert_eq!(static_find(b"", b""), None);
    }

    #[test]
    fn insertion_evicts_oldest_first() {
        let mut table = DynamicTable::new(100);
        assert_eq!(
            table.capacity(),
            0,
            "no allocation before the first insertion"
        );
        table.insert(Entry::new(b"aaaa", b"1111")); // 40
        table.insert(Entry::new(b"bbbb", b"2222")); // 40
        assert_eq!(table.size(), 80);
        assert_eq!(table.get(0), Some((&b"bbbb"[..], &b"2222"[..])));
        assert_eq!(table.get(1), Some((&b"aaaa"[..], &b"1111"[..])));
        table.insert(Entry::new(b"cc", b"3")); // 35: evicts aaaa
        assert_eq!(table.size(), 75);
        assert_eq!(table.len(), 2);
        assert_eq!(table.get(0), Some((&b"cc"[..], &b"3"[..])));
        assert_eq!(table.get(1), Some((&b"bbbb"[..], &b"2222"[..])));
        assert_eq!(table.get(2), None);
        // Exactly the maximum fits, alone.
        table.insert(Entry::new(&[b'x'; 30], &[b'y'; 38]));
        assert_eq!((table.size(), table.len()), (100, 1));
    }

    #[test]
    fn oversized_entry_empties_the_table() {
        let mut table = DynamicTable::new(64);
        table.insert(Entry::new(b"a", b"b"));
        table.insert(Entry::new(&[b'n'; 20], &[b'v'; 13])); // 65 > 64
        assert_eq!((table.size(), table.len(), table.capacity()), (0, 0, 0));
        table.insert(Entry::new(b"a", b"b"));
        table.clear();
        assert_eq!((table.size(), table.len(), table.capacity()), (0, 0, 0));
    }

    #[test]
    fn size_update_evicts_and_zero_frees() {
        let mut table = DynamicTable::new(4096);
        for i in 0..10u8 {
            table.insert(Entry::new(&[b'k', i], b"vv")); // 36 each
        }
        assert_eq!(table.size(), 360);
        table.set_max_size(100);
        assert_eq!((table.size(), table.len()), (72, 2));
        assert_eq!(table.get(0).unwrap().0, &[b'k', 9][..]);
        table.set_max_size(0);
        assert_eq!((table.size(), table.len(), table.capacity()), (0, 0, 0));
        table.insert(Entry::new(b"", b""));
        assert_eq!(table.size(), 0, "a 32-octet entry does not fit in 0");
    }
}
