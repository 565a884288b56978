//! natter's integration tests: the real server on port 0 with a temp data dir, driven over real sockets.
//! One binary, one module per area (the zero-to-production layout).

mod helpers;

mod abuse;
mod access;
mod chat;
mod crash;
mod email;
mod faults;
mod limits;
mod ops;
mod push;
