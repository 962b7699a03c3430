//! A per-core pool of empty splice pipes. Creating one costs `pipe2` + `fcntl(F_SETPIPE_SZ)`,
//! two syscalls per direction per connection that churn-heavy traffic would otherwise pay.

use std::cell::{Cell, RefCell};
use std::io;

use tracing::warn;

use crate::sys::Pipe;

/// Empty pipes kept per core for reuse: 128 pipes are 256 fds and no pinned memory (an
/// empty pipe holds no pages).
const PIPE_POOL_MAX: usize = 128;

/// Empty pipes of one worker, each asked for `bytes` of capacity.
#[derive(Debug)]
pub struct PipePool {
    /// Capacity asked for each new pipe (`runtime.splice_pipe_bytes`), and the most one
    /// splice moves.
    pub bytes: usize,
    /// The worker, for the log line.
    core: usize,
    pipes: RefCell<Vec<Pipe>>,
    size_refused: Cell<bool>,
}

impl PipePool {
    /// An empty pool for worker `core` whose pipes ask for `bytes` of capacity.
    pub fn new(core: usize, bytes: usize) -> PipePool {
        PipePool {
            bytes,
            core,
            pipes: RefCell::new(Vec::new()),
            size_refused: Cell::new(false),
        }
    }

    /// An empty pipe, from the pool or new.
    ///
    /// Errors: `pipe2` failing (fd exhaustion). A refused capacity is not an error: it is
    /// logged once per worker and the pipe keeps the kernel's size.
    pub fn take(&self) -> io::Result<Pipe> {
        if let Some(p) = self.pipes.borrow_mut().pop() {
            return Ok(p);
        }
        let (p, granted) = Pipe::new(self.bytes)?;
        if !granted && !self.size_refused.replace(true) {
            warn!(
                core = self.core,
                bytes = self.bytes,
                "the kernel refused the splice pipe size (pipe-user-pages-soft or pipe-max-size); \
                 forwarding continues with smaller pipes and more syscalls"
            );
        }
        Ok(p)
    }

    /// Returns an **empty** pipe to the pool (or closes it when the pool is full).
    pub fn put(&self, p: Pipe) {
        let mut pool = self.pipes.borrow_mut();
        if pool.len() < PIPE_POOL_MAX {
            pool.push(p);
        }
    }
}
