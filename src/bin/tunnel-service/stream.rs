//! A data-plane client socket, with or without TLS, and the WebSocket limits
//! the service applies to it.

use std::io::{self, Read, Write};
use std::net::TcpStream;

use openssl::ssl::SslStream;
use tungstenite::protocol::WebSocketConfig;

use localproxy::protocol::MAX_WEBSOCKET_FRAME;

/// A client socket, with or without TLS.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<SslStream<TcpStream>>),
}

impl Stream {
    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => s.get_ref(),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => write_records(s, buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// Writes as many TLS records of `buf` as the socket takes. `SslStream`'s
/// own `write` stops after one 16 KiB record, and tungstenite moves the rest
/// of its buffer down after every write: for a 128 KiB message that copied
/// it about four more times. A record that would block is not counted, so
/// the next call starts with it, as OpenSSL requires of a retried write.
fn write_records(s: &mut SslStream<TcpStream>, buf: &[u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match s.write(&buf[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            // What went out counts; the error comes back on the next call.
            Err(_) if done > 0 => break,
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// WebSocket limits of the service: frames up to 131076 bytes.
pub fn ws_config() -> WebSocketConfig {
    // Reads of one TLS record at most: tungstenite zeroes the free part of
    // its read buffer, up to this size, before each read.
    WebSocketConfig::default()
        .max_frame_size(Some(MAX_WEBSOCKET_FRAME))
        .max_message_size(Some(4 * MAX_WEBSOCKET_FRAME))
        .write_buffer_size(MAX_WEBSOCKET_FRAME)
        .read_buffer_size(16 * 1024)
}
