//! `tests/exhaustion.rs` again, on the epoll driver (see `common::driver`).

#[path = "exhaustion.rs"]
mod exhaustion;
