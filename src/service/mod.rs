//! The local tunneling service (stub).
