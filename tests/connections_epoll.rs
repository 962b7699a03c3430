//! `tests/connections.rs` again, with every proxy on the epoll driver (`runtime.driver =
//! "epoll"`, chosen by `common::driver` from this target's name), whose sockets close at once
//! when dropped (the table must never read a closed socket's counters).

#[path = "connections.rs"]
mod connections;
