//! The local side: listeners, outgoing connections (TCP or Unix socket) and
//! the two worker threads that pump one local connection to and from the tunnel.
//!
//! Each local connection is split into a read half and a write half, each on
//! its own small thread. The read half turns local bytes into DATA frames and
//! sends them into the tunnel writer's bounded channel (so a slow tunnel slows
//! local reads: TCP backpressure instead of memory growth). The write half
//! drains the connection's own bounded channel into the socket; when that
//! channel's senders are gone it shuts the socket down, which also ends the
//! read half.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::config::DestinationAddr;
use crate::frame::{encode_frame, message, MessageType};
use crate::streams::WireIds;

/// Stack size of the two worker threads of a local connection: they only
/// move heap buffers around, so a small stack keeps thousands of
/// connections cheap.
pub const CONNECTION_THREAD_STACK: usize = 128 * 1024;
/// First read buffer of a local connection. It grows to the configured read
/// size the first time a read fills it, so idle and interactive connections
/// (most of them) keep a small buffer and bulk ones read in large chunks.
pub const INITIAL_READ_BUFFER: usize = 4 * 1024;
/// How long one write to a local application may block before the
/// connection is considered stalled and closed.
pub const LOCAL_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// A connected local socket, TCP or Unix domain.
#[derive(Debug)]
pub enum LocalStream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl LocalStream {
    /// A second handle on the same socket.
    pub fn try_clone(&self) -> io::Result<LocalStream> {
        Ok(match self {
            LocalStream::Tcp(s) => LocalStream::Tcp(s.try_clone()?),
            LocalStream::Unix(s) => LocalStream::Unix(s.try_clone()?),
        })
    }

    /// Shuts down one or both directions; errors (already closed) are moot.
    pub fn shutdown(&self, how: Shutdown) {
        let _ = match self {
            LocalStream::Tcp(s) => s.shutdown(how),
            LocalStream::Unix(s) => s.shutdown(how),
        };
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

impl Read for LocalStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            LocalStream::Tcp(s) => s.read(buf),
            LocalStream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for LocalStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            LocalStream::Tcp(s) => s.write(buf),
            LocalStream::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Resolves `host` and binds a listener on `port` (0 = any free port),
/// preferring IPv4 so that `localhost` means 127.0.0.1 as clients expect.
pub fn bind_listener(host: &str, port: u16) -> io::Result<TcpListener> {
    let mut addrs: Vec<SocketAddr> = (host, port).to_socket_addrs()?.collect();
    addrs.sort_by_key(|a| !a.is_ipv4());
    let mut last = io::Error::new(
        io::ErrorKind::NotFound,
        format!("{host} resolves to no address"),
    );
    for addr in addrs {
        match TcpListener::bind(addr) {
            Ok(l) => return Ok(l),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Connects to a destination once. `bind` is the local address to bind the
/// outgoing TCP socket to (`-b`).
pub fn connect_once(addr: &DestinationAddr, bind: Option<&str>) -> io::Result<LocalStream> {
    match addr {
        DestinationAddr::Unix(path) => UnixStream::connect(path).map(LocalStream::Unix),
        DestinationAddr::Tcp { host, port } => {
            let mut addrs: Vec<SocketAddr> = (host.as_str(), *port).to_socket_addrs()?.collect();
            addrs.sort_by_key(|a| !a.is_ipv4());
            let mut last = io::Error::new(
                io::ErrorKind::NotFound,
                format!("{host} resolves to no address"),
            );
            for target in addrs {
                let attempt = match bind {
                    Some(b) => crate::sockets::connect_from(b, target),
                    None => TcpStream::connect_timeout(&target, Duration::from_secs(10)),
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

/// Byte counters and timing of one connection, logged when both halves end.
#[derive(Debug)]
pub struct ConnStats {
    pub label: String,
    pub started: Instant,
    /// Local application to tunnel.
    pub to_tunnel: AtomicU64,
    /// Tunnel to local application.
    pub from_tunnel: AtomicU64,
}

impl ConnStats {
    pub fn new(label: String) -> Arc<Self> {
        Arc::new(ConnStats {
            label,
            started: Instant::now(),
            to_tunnel: AtomicU64::new(0),
            from_tunnel: AtomicU64::new(0),
        })
    }
}

impl Drop for ConnStats {
    fn drop(&mut self) {
        log::info!(
            "Connection closed: {}, {} bytes sent to the tunnel, {} bytes received, {:.1?}",
            self.label,
            self.to_tunnel.load(Ordering::Relaxed),
            self.from_tunnel.load(Ordering::Relaxed),
            self.started.elapsed()
        );
    }
}

/// What the read half needs to speak for its connection.
pub struct ReadHalf {
    /// The tunnel writer's data channel (framed bytes).
    pub to_tunnel: Sender<Vec<u8>>,
    /// The ids every DATA message of this connection carries.
    pub ids: WireIds,
    /// Bytes read from the local socket at once (at most max_payload_size).
    pub read_size: usize,
    /// Called once when the local side ends (EOF or error).
    pub on_closed: Box<dyn FnOnce() + Send>,
}

/// Starts the two worker threads of a connected local socket.
pub fn spawn_pipe(
    stream: LocalStream,
    from_tunnel: Receiver<Vec<u8>>,
    read_half: ReadHalf,
    stats: Arc<ConnStats>,
) -> io::Result<()> {
    stream.prepare()?;
    let writer = stream.try_clone()?;
    let wstats = stats.clone();
    let closed = Arc::new(AtomicBool::new(false));
    let wclosed = closed.clone();
    thread::Builder::new()
        .name("local-write".into())
        .stack_size(CONNECTION_THREAD_STACK)
        .spawn(move || write_half(writer, from_tunnel, wstats, &wclosed))?;
    thread::Builder::new()
        .name("local-read".into())
        .stack_size(CONNECTION_THREAD_STACK)
        .spawn(move || read_loop(stream, read_half, stats, &closed))?;
    Ok(())
}

/// `closed` is set when the tunnel side is done with the connection, so
/// that the read half stops too: on Linux a socket shut down for reading
/// still returns bytes that arrive later, and a peer that keeps sending
/// would keep the connection (and its DATA toward a dead stream) alive.
fn write_half(
    mut sock: LocalStream,
    rx: Receiver<Vec<u8>>,
    stats: Arc<ConnStats>,
    closed: &AtomicBool,
) {
    for chunk in rx.iter() {
        if let Err(e) = sock.write_all(&chunk) {
            log::debug!("{}: local write failed: {e}", stats.label);
            break;
        }
        stats
            .from_tunnel
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
    }
    // The tunnel side is done with this connection (or the socket failed):
    // close both directions so the read half ends too.
    closed.store(true, Ordering::SeqCst);
    sock.shutdown(Shutdown::Both);
}

fn read_loop(mut sock: LocalStream, half: ReadHalf, stats: Arc<ConnStats>, closed: &AtomicBool) {
    let full = half.read_size.max(1);
    let mut buf = vec![0u8; INITIAL_READ_BUFFER.min(full)];
    let ids = &half.ids;
    loop {
        let n = match sock.read(&mut buf) {
            Ok(0) => break,
            Ok(_) if closed.load(Ordering::SeqCst) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                log::debug!("{}: local read ended: {e}", stats.label);
                break;
            }
        };
        let msg = message(
            MessageType::DATA,
            ids.stream_id,
            &ids.service_id,
            ids.connection_id,
            &buf[..n],
        );
        let mut frame = Vec::with_capacity(n + 32);
        if let Err(e) = encode_frame(&msg, &mut frame) {
            log::error!("{}: cannot frame local data: {e}", stats.label);
            break;
        }
        if half.to_tunnel.send(frame).is_err() {
            // The tunnel connection is gone; the session closes us.
            break;
        }
        stats.to_tunnel.fetch_add(n as u64, Ordering::Relaxed);
        if n == buf.len() && buf.len() < full {
            buf = vec![0u8; full];
        }
    }
    (half.on_closed)();
}

/// Encodes a message without payload (starts and resets) into a frame.
pub fn control_frame(kind: MessageType, ids: &WireIds) -> Vec<u8> {
    let msg = message(kind, ids.stream_id, &ids.service_id, ids.connection_id, b"");
    let mut out = Vec::with_capacity(64);
    // A message without payload is far below the frame limit: the only
    // variable part is the service id, bounded by the handshake size.
    if let Err(e) = encode_frame(&msg, &mut out) {
        log::error!("cannot frame {kind:?}: {e}");
    }
    out
}
