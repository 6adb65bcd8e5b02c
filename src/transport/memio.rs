//! In-memory I/O under the TLS layers, and the blocking pump used while connecting.
//!
//! OpenSSL never touches the socket: each `SslStream<MemIo>` reads ciphertext
//! that someone pushed into its inbound buffer and appends what it produces to
//! its outbound buffer. With an `https://` web proxy there are two TLS layers:
//! the outer one (to the proxy) carries the inner one's (to the endpoint)
//! ciphertext as its plaintext; [`push_inbound`] and [`take_outbound`] move
//! bytes through both.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Instant;

use openssl::ssl::SslStream;

/// Bytes to and from the socket, buffered; reading an empty buffer is `WouldBlock`.
#[derive(Debug, Default)]
pub(crate) struct MemIo {
    inbound: Inbound,
    outbound: Vec<u8>,
    eof: bool,
}

/// Received bytes not yet read by OpenSSL: `buf[start..end]`. The whole of
/// `buf` is initialized, so a buffer the socket was read into can be put in
/// place as it is ([`swap_received`]) instead of being copied.
#[derive(Debug, Default)]
struct Inbound {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Inbound {
    fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Makes room for `more` bytes after `end`.
    fn reserve(&mut self, more: usize) {
        if self.is_empty() {
            self.start = 0;
            self.end = 0;
        }
        if self.end + more > self.buf.len() {
            // Move what is left to the front, and grow if that is not enough.
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.end + more > self.buf.len() {
                self.buf.resize(self.end + more, 0);
            }
        }
    }

    fn extend(&mut self, data: &[u8]) {
        self.reserve(data.len());
        self.buf[self.end..self.end + data.len()].copy_from_slice(data);
        self.end += data.len();
    }

    /// Reads at most `max` bytes from `r` straight in.
    fn read_from(&mut self, r: &mut impl Read, max: usize) -> io::Result<usize> {
        self.reserve(max);
        let n = r.read(&mut self.buf[self.end..self.end + max])?;
        self.end += n;
        Ok(n)
    }

    fn read(&mut self, out: &mut [u8]) -> usize {
        let n = out.len().min(self.end - self.start);
        out[..n].copy_from_slice(&self.buf[self.start..self.start + n]);
        self.start += n;
        n
    }

    fn take(&mut self) -> Vec<u8> {
        let rest = self.buf[self.start..self.end].to_vec();
        self.start = 0;
        self.end = 0;
        rest
    }
}

impl MemIo {
    pub(crate) fn with_inbound(data: &[u8]) -> Self {
        let mut m = MemIo::default();
        m.inbound.extend(data);
        m
    }

    /// Bytes produced for the socket and not taken yet.
    pub(crate) fn outbound_len(&self) -> usize {
        self.outbound.len()
    }

    /// Bytes received and not yet consumed.
    pub(crate) fn take_inbound(&mut self) -> Vec<u8> {
        self.inbound.take()
    }
}

impl Read for MemIo {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.inbound.is_empty() {
            if self.eof || buf.is_empty() {
                return Ok(0);
            }
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(self.inbound.read(buf))
    }
}

impl Write for MemIo {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.outbound.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The TLS layer as the WebSocket sees it once connected.
///
/// Its writes land in memory and never block, so a write takes the whole
/// buffer: tungstenite then drops what it handed over in one go. With
/// `SslStream`'s own `write`, which stops after each 16 KiB TLS record,
/// tungstenite moved the rest of a message down after every record, which
/// copied a 128 KiB message about four more times.
pub(crate) struct TlsIo(pub(crate) SslStream<MemIo>);

impl TlsIo {
    pub(crate) fn mem(&self) -> &MemIo {
        self.0.get_ref()
    }

    pub(crate) fn mem_mut(&mut self) -> &mut MemIo {
        self.0.get_mut()
    }
}

impl Read for TlsIo {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for TlsIo {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// Anything whose bottom is a [`MemIo`].
pub(crate) trait HasMemIo {
    fn mem(&mut self) -> &mut MemIo;
}

impl HasMemIo for MemIo {
    fn mem(&mut self) -> &mut MemIo {
        self
    }
}

impl HasMemIo for SslStream<MemIo> {
    fn mem(&mut self) -> &mut MemIo {
        self.get_mut()
    }
}

/// The optional outer TLS layer (to an `https://` web proxy).
pub(crate) type Outer = Option<SslStream<MemIo>>;

/// Bytes read from the socket (or the outer layer) at once while connecting.
const CHUNK: usize = 16 * 1024;

/// Decrypts what the outer layer has buffered into `inner`'s inbound bytes.
fn drain_outer(outer: &mut SslStream<MemIo>, inner: &mut MemIo) -> io::Result<()> {
    loop {
        match inner.inbound.read_from(outer, CHUNK) {
            Ok(0) => {
                inner.eof = true;
                return Ok(());
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

/// Feeds bytes read from the socket in, through the outer layer if any.
pub(crate) fn push_inbound(outer: &mut Outer, inner: &mut MemIo, data: &[u8]) -> io::Result<()> {
    match outer {
        None => {
            inner.inbound.extend(data);
            Ok(())
        }
        Some(o) => {
            o.get_mut().inbound.extend(data);
            drain_outer(o, inner)
        }
    }
}

/// Feeds `buf[..n]`, just read from the socket, in. Without an outer layer
/// and with nothing left over, `buf` itself becomes the inbound buffer and
/// the previous one (all of it consumed) comes back in `buf` for the next
/// read: no copy. Otherwise the bytes are copied in.
pub(crate) fn swap_received(
    outer: &mut Outer,
    inner: &mut MemIo,
    buf: &mut Vec<u8>,
    n: usize,
) -> io::Result<()> {
    if outer.is_none() && inner.inbound.is_empty() {
        std::mem::swap(&mut inner.inbound.buf, buf);
        inner.inbound.start = 0;
        inner.inbound.end = n;
        return Ok(());
    }
    push_inbound(outer, inner, &buf[..n])
}

/// Records that the socket reached end of file.
pub(crate) fn push_eof(outer: &mut Outer, inner: &mut MemIo) -> io::Result<()> {
    match outer {
        None => {
            inner.eof = true;
            Ok(())
        }
        Some(o) => {
            o.get_mut().eof = true;
            drain_outer(o, inner)
        }
    }
}

/// Takes the ciphertext produced so far, ready for the socket, through the
/// outer layer if any. Order is preserved as long as callers write the
/// returned bytes before the next call's (the writer lock sees to that).
pub(crate) fn take_outbound(outer: &mut Outer, inner: &mut MemIo) -> io::Result<Vec<u8>> {
    let mut data = Vec::new();
    swap_outbound(outer, inner, &mut data)?;
    Ok(data)
}

/// [`take_outbound`] into `buf` (cleared first), handing `buf`'s allocation
/// back to the layer: the writer reuses two buffers instead of allocating
/// one per message.
pub(crate) fn swap_outbound(
    outer: &mut Outer,
    inner: &mut MemIo,
    buf: &mut Vec<u8>,
) -> io::Result<()> {
    buf.clear();
    match outer {
        None => std::mem::swap(&mut inner.outbound, buf),
        Some(o) => {
            if !inner.outbound.is_empty() {
                let data = std::mem::take(&mut inner.outbound);
                let written = o.write_all(&data);
                inner.outbound = data;
                inner.outbound.clear();
                written?;
            }
            std::mem::swap(&mut o.get_mut().outbound, buf);
        }
    }
    Ok(())
}

/// Moves bytes between the socket and the layers while connecting, blocking
/// on the socket with the remaining time of the connect deadline.
pub(crate) struct Pump<'a> {
    pub(crate) sock: &'a TcpStream,
    pub(crate) deadline: Instant,
}

impl Pump<'_> {
    fn remaining(&self) -> io::Result<std::time::Duration> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "connect deadline passed",
            ));
        }
        Ok(left)
    }

    /// Writes out everything the layers produced.
    pub(crate) fn flush(&self, outer: &mut Outer, inner: &mut MemIo) -> io::Result<()> {
        let data = take_outbound(outer, inner)?;
        if data.is_empty() {
            return Ok(());
        }
        self.sock.set_write_timeout(Some(self.remaining()?))?;
        let mut sock = self.sock;
        sock.write_all(&data)
    }

    /// Blocks for the next bytes from the socket and feeds them in.
    pub(crate) fn fill(&self, outer: &mut Outer, inner: &mut MemIo) -> io::Result<()> {
        self.sock.set_read_timeout(Some(self.remaining()?))?;
        let mut sock = self.sock;
        // Straight into the bottom layer's input.
        let bottom = match outer {
            Some(o) => o.get_mut(),
            None => &mut *inner,
        };
        let n = match bottom.inbound.read_from(&mut sock, CHUNK) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(io::Error::new(io::ErrorKind::TimedOut, e))
            }
            Err(e) => return Err(e),
        };
        match (n, outer) {
            (0, outer) => push_eof(outer, inner),
            (_, Some(o)) => drain_outer(o, inner),
            (_, None) => Ok(()),
        }
    }

    /// Writes all of `data` into `s` and out to the socket.
    pub(crate) fn write_all<S: Write + HasMemIo>(
        &self,
        s: &mut S,
        outer: &mut Outer,
        data: &[u8],
    ) -> io::Result<()> {
        s.write_all(data)?;
        self.flush(outer, s.mem())
    }

    /// Reads from `s`, pumping the socket until something (or EOF) arrives.
    pub(crate) fn read<S: Read + HasMemIo>(
        &self,
        s: &mut S,
        outer: &mut Outer,
        buf: &mut [u8],
    ) -> io::Result<usize> {
        loop {
            match s.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.flush(outer, s.mem())?;
                    self.fill(outer, s.mem())?;
                }
                r => return r,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_memio_would_block_until_eof() {
        let mut m = MemIo::default();
        let mut buf = [0u8; 4];
        assert_eq!(
            m.read(&mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        m.inbound.extend(b"ab");
        assert_eq!(m.read(&mut buf).unwrap(), 2);
        assert_eq!(
            m.read(&mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        m.eof = true;
        assert_eq!(m.read(&mut buf).unwrap(), 0);
    }

    #[test]
    fn outbound_passes_through_without_outer_layer() {
        let mut m = MemIo::default();
        m.write_all(b"hello").unwrap();
        let mut outer: Outer = None;
        assert_eq!(take_outbound(&mut outer, &mut m).unwrap(), b"hello");
        assert!(take_outbound(&mut outer, &mut m).unwrap().is_empty());
        push_inbound(&mut outer, &mut m, b"xy").unwrap();
        assert_eq!(m.take_inbound(), b"xy");
    }

    #[test]
    fn received_buffers_are_swapped_in_when_all_was_read() {
        let mut m = MemIo::with_inbound(b"abc");
        let mut outer: Outer = None;
        let mut buf = b"defg".to_vec();
        // "abc" not read yet: copied in behind it.
        swap_received(&mut outer, &mut m, &mut buf, 2).unwrap();
        assert_eq!(buf, b"defg", "kept for the next read");
        let mut out = [0u8; 8];
        assert_eq!(m.read(&mut out).unwrap(), 5);
        assert_eq!(&out[..5], b"abcde");
        // All read: swapped in, the old buffer comes back.
        let at = buf.as_ptr();
        swap_received(&mut outer, &mut m, &mut buf, 3).unwrap();
        assert_ne!(buf.as_ptr(), at);
        assert_eq!(m.read(&mut out).unwrap(), 3);
        assert_eq!(&out[..3], b"def");
        // Growing, compacting: bytes come out in order.
        let mut m = MemIo::default();
        for i in 0..100u8 {
            m.inbound.extend(&[i; 7]);
            let mut one = [0u8; 5];
            assert_eq!(m.read(&mut one).unwrap(), 5);
        }
        let rest = m.take_inbound();
        assert_eq!(rest.len(), 200);
        assert!(rest.windows(2).all(|w| w[0] <= w[1]));
    }
}
