//! The local side: listeners, outgoing connections (TCP or Unix socket) and
//! the two halves that pump one local connection to and from the tunnel.
//!
//! A local connection is one socket (one descriptor) shared by its two
//! halves, each on its own small thread. The read half turns local bytes
//! into DATA frames, built in the buffer it read into with room for the
//! WebSocket header (see [`crate::transport::wire`]), and sends them into
//! the tunnel writer's bounded channel
//! (so a slow tunnel slows local reads: TCP backpressure instead of memory
//! growth). The write half drains the connection's own bounded channel into
//! the socket; when that channel's senders are gone (the tunnel side closed
//! the connection) it first writes everything already queued, then shuts the
//! socket down, which also ends the read half.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::buffers::BufferPool;
use crate::config::DestinationAddr;
use crate::frame::DataFramer;
pub use crate::sockets::BoundPort;
use crate::streams::WireIds;
use crate::transport::wire::{Outgoing, HEADER_ROOM};

/// Stack size of the two worker threads of a local connection: they only
/// move heap buffers around, so a small stack keeps thousands of
/// connections cheap.
pub const CONNECTION_THREAD_STACK: usize = 128 * 1024;
/// First read buffer of a local connection. It grows to the configured read
/// size the first time a read fills it, so idle and interactive connections
/// (most of them) keep a small buffer and bulk ones read in large chunks,
/// straight into pooled buffers that become the DATA frames.
pub const INITIAL_READ_BUFFER: usize = 4 * 1024;
/// Pooled buffers one bulk read from a local socket may fill at once (one
/// `readv`), when that many bytes are already there: up to this many DATA
/// frames per system call. A read that may wait uses one buffer. Two, so a
/// read half never holds more than it did with one buffer to read into and
/// one frame waiting for room in the tunnel's queue.
pub const READ_BATCH: usize = 2;
/// Payloads from the tunnel one write to a local socket may carry (`writev`).
pub const WRITE_BATCH: usize = 4;
/// How long one write to a local application may block before the
/// connection is considered stalled and closed.
pub const LOCAL_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one attempt to connect to a local service may take.
pub const LOCAL_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A connected local socket, TCP or Unix domain.
#[derive(Debug)]
pub enum LocalStream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl LocalStream {
    /// Shuts down one or both directions; errors (already closed) are moot.
    pub fn shutdown(&self, how: Shutdown) {
        let _ = match self {
            LocalStream::Tcp(s) => s.shutdown(how),
            LocalStream::Unix(s) => s.shutdown(how),
        };
    }

    /// Ends the connection because data was lost (the tunnel went away, the
    /// application stopped reading, the peer reset the whole stream): TCP
    /// gets a reset, so the application sees an error rather than a clean
    /// end of a stream that was cut. A Unix socket has no reset: it is shut
    /// down both ways.
    pub fn abort(&self) {
        match self {
            LocalStream::Tcp(s) => {
                if let Err(e) = crate::sockets::abort(s) {
                    log::debug!("Cannot reset a local connection ({e}): closing it");
                    self.shutdown(Shutdown::Both);
                }
            }
            LocalStream::Unix(_) => self.shutdown(Shutdown::Both),
        }
    }

    /// The other end, for logs: `IP:PORT`, or the socket path.
    pub fn peer(&self) -> String {
        match self {
            LocalStream::Tcp(s) => s.peer_addr().map(|a| a.to_string()).unwrap_or_default(),
            LocalStream::Unix(s) => s
                .peer_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(|p| p.display().to_string()))
                .unwrap_or_default(),
        }
    }

    /// Bytes that arrived and are not read yet.
    fn readable(&self) -> io::Result<usize> {
        match self {
            LocalStream::Tcp(s) => crate::sockets::readable_bytes(s),
            LocalStream::Unix(s) => crate::sockets::readable_bytes(s),
        }
    }

    fn prepare(&self) -> io::Result<()> {
        match self {
            LocalStream::Tcp(s) => {
                // Interactive protocols (SSH) must not wait for Nagle.
                s.set_nodelay(true)?;
                s.set_write_timeout(Some(LOCAL_WRITE_TIMEOUT))
            }
            LocalStream::Unix(s) => s.set_write_timeout(Some(LOCAL_WRITE_TIMEOUT)),
        }
    }
}

impl Read for &LocalStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            LocalStream::Tcp(s) => (&*s).read(buf),
            LocalStream::Unix(s) => (&*s).read(buf),
        }
    }

    fn read_vectored(&mut self, bufs: &mut [io::IoSliceMut<'_>]) -> io::Result<usize> {
        match self {
            LocalStream::Tcp(s) => (&*s).read_vectored(bufs),
            LocalStream::Unix(s) => (&*s).read_vectored(bufs),
        }
    }
}

impl Write for &LocalStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            LocalStream::Tcp(s) => (&*s).write(buf),
            LocalStream::Unix(s) => (&*s).write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match self {
            LocalStream::Tcp(s) => (&*s).write_vectored(bufs),
            LocalStream::Unix(s) => (&*s).write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Lets the session abort a connection whose data was lost (see
/// [`LocalStream::abort`]), and tells it whether the connection has an
/// application yet. Empty until the connection's socket exists.
#[derive(Debug, Default)]
pub struct Closer {
    stream: OnceLock<Arc<LocalStream>>,
    /// A connect failed and no later one succeeded yet: the application is
    /// not there, and what is queued for it waits for a retry.
    unreachable: AtomicBool,
    /// Aborted, possibly before the socket existed.
    aborted: AtomicBool,
}

impl Closer {
    /// Records the socket once it is connected; a connection aborted while
    /// it connected is aborted now (its data was lost meanwhile).
    pub fn set(&self, stream: Arc<LocalStream>) {
        self.unreachable.store(false, Ordering::Relaxed);
        let _ = self.stream.set(stream);
        // With the fence in abort(): one of the two sees the other's store.
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.aborted.load(Ordering::SeqCst) {
            self.abort_socket();
        }
    }

    /// Records that a connect failed and is to be retried.
    pub fn set_unreachable(&self) {
        self.unreachable.store(true, Ordering::Relaxed);
    }

    /// Whether a connect failed and none succeeded since.
    pub fn is_unreachable(&self) -> bool {
        self.unreachable.load(Ordering::Relaxed)
    }

    /// Aborts the connection: at once when its socket exists, else as soon
    /// as it does. Both halves end.
    pub fn abort(&self) {
        self.aborted.store(true, Ordering::SeqCst);
        std::sync::atomic::fence(Ordering::SeqCst);
        self.abort_socket();
    }

    fn abort_socket(&self) {
        if let Some(s) = self.stream.get() {
            s.abort();
        }
    }
}

/// Resolves `host` and binds a port for a listener on `port` (0 = any free
/// port), preferring IPv4 so that `localhost` means 127.0.0.1 as clients
/// expect. It refuses connections until [`BoundPort::listen`].
pub fn bind_port(host: &str, port: u16) -> io::Result<BoundPort> {
    let mut addrs: Vec<SocketAddr> = (host, port).to_socket_addrs()?.collect();
    addrs.sort_by_key(|a| !a.is_ipv4());
    let mut last = io::Error::new(
        io::ErrorKind::NotFound,
        format!("{host} resolves to no address"),
    );
    for addr in addrs {
        match crate::sockets::bind_port(addr) {
            Ok(bound) => return Ok(bound),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Connects to a destination once, within [`LOCAL_CONNECT_TIMEOUT`] per
/// address. `bind` is the local address to bind the outgoing TCP socket to
/// (`-b`).
pub fn connect_once(addr: &DestinationAddr, bind: Option<&str>) -> io::Result<LocalStream> {
    match addr {
        DestinationAddr::Unix(path) => {
            crate::sockets::connect_unix(path, LOCAL_CONNECT_TIMEOUT).map(LocalStream::Unix)
        }
        DestinationAddr::Tcp { host, port } => {
            let mut addrs: Vec<SocketAddr> = (host.as_str(), *port).to_socket_addrs()?.collect();
            addrs.sort_by_key(|a| !a.is_ipv4());
            let mut last = io::Error::new(
                io::ErrorKind::NotFound,
                format!("{host} resolves to no address"),
            );
            for target in addrs {
                let attempt = match bind {
                    Some(b) => crate::sockets::connect_from(b, target, LOCAL_CONNECT_TIMEOUT),
                    None => TcpStream::connect_timeout(&target, LOCAL_CONNECT_TIMEOUT),
                };
                match attempt {
                    Ok(s) => return Ok(LocalStream::Tcp(s)),
                    Err(e) => last = e,
                }
            }
            Err(last)
        }
    }
}

/// Human-readable destination for logs.
pub fn describe(addr: &DestinationAddr) -> String {
    match addr {
        DestinationAddr::Tcp { host, port } => format!("{host}:{port}"),
        DestinationAddr::Unix(p) => p.display().to_string(),
    }
}

/// Byte counters and timing of one connection, logged when both halves
/// end. It also holds what must live exactly as long as the connection's
/// threads (its connection slot).
pub struct ConnStats {
    pub label: String,
    /// The other end of the local socket.
    pub remote: String,
    pub started: Instant,
    /// Local application to tunnel.
    pub to_tunnel: AtomicU64,
    /// Tunnel to local application.
    pub from_tunnel: AtomicU64,
    /// When the local application first sent something.
    pub first_sent: OnceLock<Instant>,
    _hold: Box<dyn Send + Sync>,
}

impl ConnStats {
    /// Stats for a connection; `hold` is dropped with them.
    pub fn new(label: String, remote: String, hold: Box<dyn Send + Sync>) -> Arc<Self> {
        Arc::new(ConnStats {
            label,
            remote,
            started: Instant::now(),
            to_tunnel: AtomicU64::new(0),
            from_tunnel: AtomicU64::new(0),
            first_sent: OnceLock::new(),
            _hold: hold,
        })
    }
}

impl Drop for ConnStats {
    fn drop(&mut self) {
        log::info!(
            "Disconnected from: {} ({}, {} bytes sent to the tunnel, {} bytes received, {:.1?})",
            self.remote,
            self.label,
            self.to_tunnel.load(Ordering::Relaxed),
            self.from_tunnel.load(Ordering::Relaxed),
            self.started.elapsed()
        );
    }
}

/// What the read half needs to speak for its connection.
pub struct ReadHalf {
    /// The tunnel writer's data channel.
    pub to_tunnel: Sender<Outgoing>,
    /// The ids every DATA message of this connection carries.
    pub ids: WireIds,
    /// Bytes read from the local socket at once (at most max_payload_size).
    pub read_size: usize,
    /// Buffers for full-size reads, back once the frame is encrypted.
    pub pool: BufferPool,
    /// Called once when the local side ends (EOF or error).
    pub on_closed: Box<dyn FnOnce() + Send>,
}

/// See [`WriteHalf::on_silence`].
pub type SilenceCheck = Box<dyn FnMut() -> Option<Duration> + Send>;

/// What the write half needs.
pub struct WriteHalf {
    /// Payloads from the tunnel; the senders' drop ends the connection.
    pub from_tunnel: Receiver<Vec<u8>>,
    /// A payload already taken off the channel (while connecting).
    pub first: Option<Vec<u8>>,
    /// Where written payloads' buffers go back to (those of its size).
    pub pool: BufferPool,
    /// Watches for a tunnel side that never answers: called when nothing
    /// came from the tunnel for the duration; returns how much longer to
    /// wait before calling again, or `None` to stop watching.
    pub on_silence: Option<(Duration, SilenceCheck)>,
}

/// A connected local socket and what both halves share.
///
/// Closing from the tunnel side is orderly: the write half writes what it
/// was given, then ends its direction (FIN); from then on the read half
/// reads and drops what the application still sends, so its writes neither
/// block nor fail, until the application closes too or [`LINGER`] passes,
/// after which the socket closes with whatever is unread (the application
/// then sees a reset, the right signal for data nobody will deliver).
/// A connection whose data was lost is aborted instead ([`Closer::abort`]).
pub struct Conn {
    stream: Arc<LocalStream>,
    stats: Arc<ConnStats>,
    /// Set when the write half is done: the read half forwards nothing more
    /// (on Linux a socket shut down for reading still returns bytes that
    /// arrive later, and a peer that keeps sending must not keep DATA
    /// flowing toward a dead stream).
    closed: Arc<AtomicBool>,
    /// Held by the read half while it runs: its drop tells the write half.
    read_running: Option<Sender<()>>,
    read_done: Receiver<()>,
}

/// How long a connection closed from the tunnel side waits for the local
/// application to close its end before the socket is closed regardless.
pub const LINGER: Duration = Duration::from_secs(5);

impl Conn {
    /// Prepares a connected socket (no Nagle, a write timeout).
    pub fn new(stream: Arc<LocalStream>, stats: Arc<ConnStats>) -> io::Result<Conn> {
        stream.prepare()?;
        let (running, done) = crossbeam_channel::bounded(0);
        Ok(Conn {
            stream,
            stats,
            closed: Arc::new(AtomicBool::new(false)),
            read_running: Some(running),
            read_done: done,
        })
    }

    /// Starts the read half on a thread of its own.
    pub fn spawn_read(&mut self, half: ReadHalf) -> io::Result<()> {
        let (stream, stats, closed) =
            (self.stream.clone(), self.stats.clone(), self.closed.clone());
        let running = self.read_running.take();
        thread::Builder::new()
            .name("local-read".into())
            .stack_size(CONNECTION_THREAD_STACK)
            .spawn(move || {
                read_loop(&stream, half, &stats, &closed);
                drop(running);
            })?;
        Ok(())
    }

    /// Starts the write half on a thread of its own.
    pub fn spawn_write(self, half: WriteHalf) -> io::Result<()> {
        thread::Builder::new()
            .name("local-write".into())
            .stack_size(CONNECTION_THREAD_STACK)
            .spawn(move || self.run_write(half))?;
        Ok(())
    }

    /// Runs the write half on the calling thread until the connection ends.
    pub fn run_write(mut self, half: WriteHalf) {
        if write_loop(&self.stream, half, &self.stats) {
            // The tunnel side is done with this connection: everything
            // given was written; what the application still sends is
            // dropped (see [`Conn`]).
            self.closed.store(true, Ordering::SeqCst);
        }
        // Else the socket failed (the application reset it, possibly with
        // a reply still unread by us): the read half forwards what it can
        // still read, as TCP would deliver it, until the error or EOF.
        // Either way, end this direction and let the application finish.
        self.stream.shutdown(Shutdown::Write);
        drop(self.read_running.take());
        if let Err(RecvTimeoutError::Timeout) = self.read_done.recv_timeout(LINGER) {
            // Wakes the read half; the socket closes with it.
            self.stream.shutdown(Shutdown::Read);
        }
    }
}

/// Writes what the tunnel sends; true when the tunnel side ended the
/// connection, false when a write to the local socket failed.
fn write_loop(mut sock: &LocalStream, half: WriteHalf, stats: &ConnStats) -> bool {
    let pool = half.pool;
    // Payloads written with one system call: what is queued, up to a few.
    let mut batch: Vec<Vec<u8>> = Vec::with_capacity(WRITE_BATCH);
    let write =
        |sock: &mut &LocalStream, batch: &mut Vec<Vec<u8>>| match write_all_vectored(sock, batch) {
            Ok(n) => {
                stats.from_tunnel.fetch_add(n as u64, Ordering::Relaxed);
                for chunk in batch.drain(..) {
                    pool.give(chunk);
                }
                true
            }
            Err(e) => {
                log::debug!("{}: local write failed: {e}", stats.label);
                false
            }
        };
    if let Some(chunk) = half.first {
        batch.push(chunk);
        if !write(&mut sock, &mut batch) {
            return false;
        }
    }
    let rx = half.from_tunnel;
    if let Some((mut after, mut on_silence)) = half.on_silence {
        loop {
            match rx.recv_timeout(after) {
                Ok(chunk) => {
                    batch.push(chunk);
                    gather(&rx, &mut batch);
                    if !write(&mut sock, &mut batch) {
                        return false;
                    }
                    break;
                }
                // When the check gives the connection up, its handle is
                // dropped and the loop below ends once the queue is empty.
                Err(RecvTimeoutError::Timeout) => match on_silence() {
                    Some(more) => after = more,
                    None => break,
                },
                Err(RecvTimeoutError::Disconnected) => return true,
            }
        }
    }
    // Ends when the senders are gone and everything queued is written.
    for chunk in rx.iter() {
        batch.push(chunk);
        gather(&rx, &mut batch);
        if !write(&mut sock, &mut batch) {
            return false;
        }
    }
    true
}

/// Adds what is already queued to `batch`, up to [`WRITE_BATCH`] payloads.
fn gather(rx: &Receiver<Vec<u8>>, batch: &mut Vec<Vec<u8>>) {
    while batch.len() < WRITE_BATCH {
        match rx.try_recv() {
            Ok(chunk) => batch.push(chunk),
            Err(_) => break,
        }
    }
}

/// Writes all of `chunks`, in order, with as few system calls as the socket
/// allows (`writev`); returns the bytes written.
fn write_all_vectored(sock: &mut &LocalStream, chunks: &[Vec<u8>]) -> io::Result<usize> {
    let total = chunks.iter().map(Vec::len).sum();
    let (mut idx, mut off) = (0, 0);
    let mut slices: Vec<io::IoSlice<'_>> = Vec::with_capacity(chunks.len());
    while idx < chunks.len() {
        if off == chunks[idx].len() {
            idx += 1;
            off = 0;
            continue;
        }
        slices.clear();
        slices.push(io::IoSlice::new(&chunks[idx][off..]));
        slices.extend(chunks[idx + 1..].iter().map(|c| io::IoSlice::new(c)));
        let mut n = match sock.write_vectored(&slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        while n > 0 {
            let step = n.min(chunks[idx].len() - off);
            off += step;
            n -= step;
            if off == chunks[idx].len() && n > 0 {
                idx += 1;
                off = 0;
            }
        }
    }
    Ok(total)
}

/// What one read from the local socket means for the read half.
enum Got {
    /// Bytes to forward.
    Data(usize),
    /// Interrupted: read again.
    Again,
    /// The connection is done on this side.
    End,
}

fn outcome(
    read: io::Result<usize>,
    sock: &LocalStream,
    stats: &ConnStats,
    closed: &AtomicBool,
) -> Got {
    match read {
        Ok(n) if n > 0 && !closed.load(Ordering::SeqCst) => Got::Data(n),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Got::Again,
        Err(e) => {
            log::debug!("{}: local read ended: {e}", stats.label);
            Got::End
        }
        // The write half is done: drop what the application still sends
        // until it closes (see [`Conn`]).
        Ok(n) if n > 0 => {
            drain(sock);
            Got::End
        }
        Ok(_) => Got::End,
    }
}

/// Reads and drops what the application sends until it closes its end or
/// the socket is shut down.
fn drain(mut sock: &LocalStream) {
    let mut scratch = vec![0u8; 16 * 1024];
    loop {
        match sock.read(&mut scratch) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

fn read_loop(mut sock: &LocalStream, half: ReadHalf, stats: &ConnStats, closed: &AtomicBool) {
    let full = half.read_size.max(1);
    let ids = &half.ids;
    let framer = match DataFramer::new(ids.stream_id, &ids.service_id, ids.connection_id, full) {
        Ok(f) => f,
        Err(e) => {
            log::error!("{}: cannot frame local data: {e}", stats.label);
            (half.on_closed)();
            return;
        }
    };
    // A payload is read to `off`, leaving room for the fields before it
    // and, before those, the WebSocket header.
    let off = HEADER_ROOM + framer.payload_offset();
    let buffer_len = HEADER_ROOM + framer.buffer_len();
    let pool = &half.pool;
    let pooled = buffer_len <= pool.size();
    // Frames the payload of `n` bytes at `off` in place: the DATA frame's
    // range in `buf`, with room for the WebSocket header before it.
    let seal = |buf: &mut [u8], n: usize| {
        let msg = framer.seal(&mut buf[HEADER_ROOM..], n);
        msg.start + HEADER_ROOM..msg.end + HEADER_ROOM
    };
    let mut size = INITIAL_READ_BUFFER.min(full);
    // Reused for reads of up to `size` bytes until bulk reads use the pool.
    let mut own: Vec<u8> = Vec::new();
    // Pooled buffers for the next read, and how many it uses: one for a
    // read that may wait (so an idle connection holds one buffer), after a
    // read that filled them all as many as the bytes already there need.
    let mut bufs: Vec<Vec<u8>> = Vec::new();
    let mut want = 1;
    // The tunnel connection went away under a read: what was read is lost.
    let mut lost = false;
    loop {
        if size == full && pooled {
            while bufs.len() > want {
                if let Some(b) = bufs.pop() {
                    pool.give(b);
                }
            }
            while bufs.len() < want {
                bufs.push(pool.take());
            }
            let read = {
                let mut slices: Vec<io::IoSliceMut<'_>> = bufs
                    .iter_mut()
                    .map(|b| io::IoSliceMut::new(&mut b[off..off + full]))
                    .collect();
                sock.read_vectored(&mut slices)
            };
            let n = match outcome(read, sock, stats, closed) {
                Got::Data(n) => n,
                Got::Again => continue,
                Got::End => break,
            };
            let used = n.div_ceil(full);
            want = if used == bufs.len() && n % full == 0 {
                // More may be there already: read it all at once.
                sock.readable()
                    .unwrap_or(0)
                    .div_ceil(full)
                    .clamp(1, READ_BATCH)
            } else {
                1
            };
            let mut left = n;
            let mut gone = false;
            for mut buf in bufs.drain(..used) {
                let k = left.min(full);
                left -= k;
                // The buffer travels as the frame and comes back to the
                // pool once the writer has encrypted it.
                let frame = seal(&mut buf, k);
                if half
                    .to_tunnel
                    .send(Outgoing::pooled(buf, frame, pool))
                    .is_err()
                {
                    gone = true;
                    break;
                }
            }
            if gone {
                lost = true;
                break;
            }
            if stats.to_tunnel.fetch_add(n as u64, Ordering::Relaxed) == 0 {
                let _ = stats.first_sent.set(Instant::now());
            }
            continue;
        }
        let mut buf = std::mem::take(&mut own);
        // Room for the payload and the fields after it.
        let len = buffer_len - full + size;
        if buf.len() < len {
            buf.resize(len, 0);
        }
        let read = sock.read(&mut buf[off..off + size]);
        let n = match outcome(read, sock, stats, closed) {
            Got::Data(n) => n,
            Got::Again => {
                own = buf;
                continue;
            }
            Got::End => break,
        };
        let frame = seal(&mut buf, n);
        let frame = Outgoing::copied(&buf[frame]);
        own = buf;
        if half.to_tunnel.send(frame).is_err() {
            lost = true;
            break;
        }
        if stats.to_tunnel.fetch_add(n as u64, Ordering::Relaxed) == 0 {
            let _ = stats.first_sent.set(Instant::now());
        }
        if n == size && size < full {
            // A read filled the small buffer: a bulk transfer, read in full.
            size = full;
            if pooled {
                own = Vec::new();
            }
        }
    }
    for b in bufs {
        pool.give(b);
    }
    if lost {
        // The session may not get to close this connection first (its
        // entry goes with on_closed): abort it here, so the application
        // sees a reset, not the clean end of a cut stream.
        sock.abort();
    }
    (half.on_closed)();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_aborted_while_it_connected_is_reset_once_connected() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let mut app = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (ours, _) = listener.accept().expect("accept");
        let closer = Closer::default();
        closer.abort();
        closer.set(Arc::new(LocalStream::Tcp(ours)));
        app.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let got = app.read(&mut [0u8; 16]).map_err(|e| e.kind());
        assert_eq!(got, Err(io::ErrorKind::ConnectionReset));
    }

    #[test]
    fn vectored_writes_deliver_every_byte_in_order_through_partial_writes() {
        let (a, b) = UnixStream::pair().expect("socket pair");
        // Far more than a socket buffer holds: writev returns partial counts.
        let chunks: Vec<Vec<u8>> = (0..6u8)
            .map(|i| (0..300_000u32).map(|j| (j as u8) ^ i).collect())
            .collect();
        let want: Vec<u8> = chunks.concat();
        let reader = thread::spawn(move || {
            let mut b = b;
            let mut got = Vec::new();
            let mut buf = [0u8; 7000];
            loop {
                match b.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(e) => panic!("read: {e}"),
                }
            }
            got
        });
        let sock = LocalStream::Unix(a);
        let mut w = &sock;
        let mut empty = chunks.clone();
        empty.insert(2, Vec::new());
        assert_eq!(
            write_all_vectored(&mut w, &empty).expect("written"),
            want.len()
        );
        sock.shutdown(Shutdown::Write);
        assert!(reader.join().expect("reader") == want, "bytes differ");
    }
}
