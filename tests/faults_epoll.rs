//! `tests/faults.rs` again, on the epoll driver (see `common::driver`).

#[path = "faults.rs"]
mod faults;
