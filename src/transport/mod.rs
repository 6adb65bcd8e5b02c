//! TLS WebSocket transport to the tunneling service (stub).
