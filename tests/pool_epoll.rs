//! `tests/pool.rs` again, with every proxy on the epoll driver (`runtime.driver = "epoll"`,
//! chosen by `common::driver` from this target's name): the fallback where io_uring is refused
//! must pass the same data-path tests.

#[path = "pool.rs"]
mod pool;
