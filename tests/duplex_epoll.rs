//! `tests/duplex.rs` again, with every proxy on the epoll driver (`runtime.driver = "epoll"`,
//! chosen by `common::driver` from this target's name).

#[path = "duplex.rs"]
mod duplex;
