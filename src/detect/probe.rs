//! The answer type every protocol probe shares.

/// A tri-state answer of one protocol probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe<T> {
    /// The bytes are this protocol.
    Yes(T),
    /// Undecided until at least this many bytes (in total) are there.
    NeedMore(usize),
    /// The bytes are not this protocol.
    No,
}
