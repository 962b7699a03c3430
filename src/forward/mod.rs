//! Opaque forwarding: bytes moved between client and upstream without being looked at.
//!
//! - [`splice`]: both directions with `splice(2)` through a pipe (plain TCP on both sides).
//! - [`pipes`]: the per-core pool of empty pipes the splices borrow.
//!
//! Not here: buffered copying for streams the kernel cannot splice (TLS, later).

pub mod pipes;
pub mod splice;

pub use pipes::PipePool;
pub use splice::{splice_both, Counters, Ended, IdleLimits, SpliceError};
