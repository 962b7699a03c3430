//! `tests/bodies.rs` again, with every proxy on the epoll driver (`runtime.driver = "epoll"`,
//! chosen by `common::driver` from this target's name): spliced bodies must behave the same
//! where io_uring is refused.

#[path = "bodies.rs"]
mod bodies;
