//! Opaque forwarding: bytes moved between client and upstream without being looked at.
//!
//! - [`splice`]: both directions with `splice(2)` through a pipe (plain TCP on both sides).
//! - [`pipes`]: the per-core pool of empty pipes the splices borrow.
//! - [`body`]: runs of HTTP/1 body bytes of known length, spliced the same way (the HTTP/1
//!   code keeps the framing and decides each run).
//!
//! Not here: buffered copying for streams the kernel cannot splice (TLS, later).

pub mod body;
pub mod pipes;
pub mod splice;

pub use body::{splice_run, BodySockets, BodySplice, BodyWatch, RunError};
pub use pipes::PipePool;
pub use splice::{splice_both, Counters, Ended, IdleLimits, SpliceError};
