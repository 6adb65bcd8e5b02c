//! A data-plane client socket, with or without TLS, and the WebSocket limits
//! the service applies to it.
//!
//! Under TLS the socket is [`Buffered`]: OpenSSL reads a record's header and
//! then its body with a system call each, and writes each 16 KiB record with
//! one, which made the relay's system calls (counted: about 185,000 per GiB
//! relayed) its largest cost after the cipher.

use std::io::{self, Read, Write};
use std::net::TcpStream;

use openssl::ssl::SslStream;
use tungstenite::protocol::WebSocketConfig;

use localproxy::protocol::MAX_WEBSOCKET_FRAME;

/// A client socket, with or without TLS.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<SslStream<Buffered>>),
}

impl Stream {
    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => &s.get_ref().sock,
        }
    }
}

/// First size of a [`Buffered`] read; it grows to [`READ_MAX`] once a read
/// fills it, so an idle connection keeps a small buffer.
const READ_FIRST: usize = 16 * 1024;
/// Largest read from the socket at once.
const READ_MAX: usize = 256 * 1024;
/// Ciphertext gathered before a write must wait for the socket.
const WRITE_MAX: usize = 256 * 1024;

/// The socket under OpenSSL, read in large chunks and written when flushed.
///
/// Reads take what the socket has (up to [`READ_MAX`]) and serve OpenSSL's
/// small reads from it; a read that finds both empty is the socket's (its
/// `WouldBlock` included), so polling the socket after one stays right.
/// Writes are gathered until `flush` (OpenSSL flushes after a handshake
/// flight, tungstenite after its writes) or until [`WRITE_MAX`] bytes wait;
/// then a write that the socket cannot take is `WouldBlock`, for OpenSSL to
/// retry.
pub struct Buffered {
    sock: TcpStream,
    rbuf: Vec<u8>,
    /// Unread bytes are `rbuf[rpos..rend]`.
    rpos: usize,
    rend: usize,
    rsize: usize,
    wbuf: Vec<u8>,
    /// Bytes of `wbuf` already written.
    wpos: usize,
}

impl std::fmt::Debug for Buffered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Buffered")
            .field("sock", &self.sock)
            .field("unread", &(self.rend - self.rpos))
            .field("unwritten", &(self.wbuf.len() - self.wpos))
            .finish()
    }
}

impl Buffered {
    pub fn new(sock: TcpStream) -> Buffered {
        Buffered {
            sock,
            rbuf: Vec::new(),
            rpos: 0,
            rend: 0,
            rsize: READ_FIRST,
            wbuf: Vec::new(),
            wpos: 0,
        }
    }

    /// Writes what is gathered until done or the socket would block.
    fn write_out(&mut self) -> io::Result<()> {
        while self.wpos < self.wbuf.len() {
            match self.sock.write(&self.wbuf[self.wpos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.wpos += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.wbuf.clear();
        self.wpos = 0;
        Ok(())
    }
}

impl Read for Buffered {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.rpos == self.rend {
            if self.rbuf.len() < self.rsize {
                self.rbuf.resize(self.rsize, 0);
            }
            let n = self.sock.read(&mut self.rbuf[..self.rsize])?;
            if n == self.rsize {
                self.rsize = READ_MAX;
            }
            self.rpos = 0;
            self.rend = n;
        }
        let n = out.len().min(self.rend - self.rpos);
        out[..n].copy_from_slice(&self.rbuf[self.rpos..self.rpos + n]);
        self.rpos += n;
        Ok(n)
    }
}

impl Write for Buffered {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.wbuf.len() >= WRITE_MAX {
            // The socket must take some first; its WouldBlock passes on.
            self.write_out()?;
        }
        self.wbuf.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write_out()?;
        self.sock.flush()
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
fn write_records(s: &mut SslStream<Buffered>, buf: &[u8]) -> io::Result<usize> {
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

/// Most bytes tungstenite's write buffer holds: one largest message the
/// relay sends (it writes only once the buffer is flushed) and pongs. A pong
/// that does not fit waits in tungstenite, replaced by the next one, so a
/// client that pings and never reads holds at most this much (before, its
/// pongs piled up without limit: 305 MiB after 300 MiB of pings).
pub const MAX_WRITE_BUFFER: usize = 2 * MAX_WEBSOCKET_FRAME;

/// WebSocket limits of the service: frames up to 131076 bytes.
pub fn ws_config() -> WebSocketConfig {
    // Reads of one TLS record at most: tungstenite zeroes the free part of
    // its read buffer, up to this size, before each read.
    WebSocketConfig::default()
        .max_frame_size(Some(MAX_WEBSOCKET_FRAME))
        .max_message_size(Some(4 * MAX_WEBSOCKET_FRAME))
        .write_buffer_size(MAX_WEBSOCKET_FRAME)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .read_buffer_size(16 * 1024)
}
