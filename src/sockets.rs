//! Socket operations std lacks: an outgoing TCP connection bound to a chosen
//! local address (`-b` on the destination side), with a timeout; a Unix
//! socket connect with a timeout; TCP
//! keepalive and `TCP_USER_TIMEOUT` for the tunnel socket; how many bytes a
//! socket holds unread; aborting a TCP connection with a reset; a listening
//! port bound before it listens.

use std::io;
use std::mem;
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// Connects to `target` from a socket bound to `bind` (host or IP, port 0),
/// giving up after `timeout` like [`TcpStream::connect_timeout`].
pub fn connect_from(bind: &str, target: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let local = (bind, 0)
        .to_socket_addrs()?
        .find(|a| a.is_ipv4() == target.is_ipv4())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::AddrNotAvailable,
                format!("bind address {bind} has no address of the family of {target}"),
            )
        })?;
    let owned = tcp_socket(&target)?;
    let fd = owned.as_raw_fd();
    bind_fd(fd, &local)?;
    let (addr, len) = sockaddr(&target);
    set_nonblocking(fd, true)?;
    // SAFETY: as above, for the target address.
    let rc = unsafe { libc::connect(fd, &addr as *const _ as *const libc::sockaddr, len) };
    if rc != 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(err);
        }
        wait_connected(fd, timeout)?;
    }
    set_nonblocking(fd, false)?;
    Ok(TcpStream::from(owned))
}

/// A TCP port bound for a listener that does not listen yet: binding is
/// where a port another server listens on shows, while connections to it
/// are still refused, as if nothing were there, until [`BoundPort::listen`].
#[derive(Debug)]
pub struct BoundPort(OwnedFd);

/// Binds `addr` for a listener, without listening. The port is held
/// against other servers, unless connections of an earlier listener still
/// linger on it (`TIME_WAIT`, after a restart): then it is bound with
/// `SO_REUSEADDR`, as listeners usually are, which only a listening socket
/// stops, so another server that binds meanwhile makes `listen` fail.
pub fn bind_port(addr: SocketAddr) -> io::Result<BoundPort> {
    let strict = tcp_socket(&addr)?;
    match bind_fd(strict.as_raw_fd(), &addr) {
        Ok(()) => Ok(BoundPort(strict)),
        Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) => {
            let shared = tcp_socket(&addr)?;
            setsockopt(shared.as_raw_fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
            bind_fd(shared.as_raw_fd(), &addr)?;
            Ok(BoundPort(shared))
        }
        Err(e) => Err(e),
    }
}

impl BoundPort {
    /// Starts listening: connections are queued from now on. The listener
    /// gets `SO_REUSEADDR` first: the connections it accepts inherit it, so
    /// once they linger in `TIME_WAIT` they do not stop the next run from
    /// binding the port.
    pub fn listen(self) -> io::Result<TcpListener> {
        setsockopt(self.0.as_raw_fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
        // SAFETY: a valid, bound stream socket.
        if unsafe { libc::listen(self.0.as_raw_fd(), libc::SOMAXCONN) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(TcpListener::from(self.0))
    }
}

/// A new TCP socket of `addr`'s family, closed on exec.
fn tcp_socket(addr: &SocketAddr) -> io::Result<OwnedFd> {
    let family = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor we own; OwnedFd closes it on error paths.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn bind_fd(fd: RawFd, local: &SocketAddr) -> io::Result<()> {
    let (addr, len) = sockaddr(local);
    // SAFETY: `addr` is a valid sockaddr of `len` bytes for this family.
    if unsafe { libc::bind(fd, &addr as *const _ as *const libc::sockaddr, len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Connects to the Unix stream socket at `path`, giving up after `timeout`
/// (a service that does not accept fills its backlog, and a plain connect
/// then waits until it accepts or dies).
pub fn connect_unix(path: &Path, timeout: Duration) -> io::Result<UnixStream> {
    // SAFETY: sockaddr_un is plain data; all zeroes is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    if bytes.is_empty() || bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "Unix socket path {} is empty, contains NUL or is longer than {} bytes",
                path.display(),
                addr.sun_path.len() - 1
            ),
        ));
    }
    for (d, b) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *b as libc::c_char;
    }
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor we own; OwnedFd closes it on error paths.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // A blocking connect to a full backlog waits at most the send timeout
    // (then fails with EAGAIN).
    set_send_timeout(fd, timeout)?;
    let len = mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    loop {
        // SAFETY: `addr` is a valid sockaddr_un of `len` bytes.
        let rc = unsafe { libc::connect(fd, &addr as *const _ as *const libc::sockaddr, len) };
        if rc == 0 {
            break;
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "connection timed out after {timeout:?} (the service does not accept: \
                         its backlog is full)"
                    ),
                ))
            }
            _ => return Err(err),
        }
    }
    set_send_timeout(fd, Duration::ZERO)?;
    Ok(UnixStream::from(owned))
}

/// `SO_SNDTIMEO`; zero is none.
fn set_send_timeout(fd: RawFd, timeout: Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_usec: libc::suseconds_t::from(timeout.subsec_micros() as i32),
    };
    // SAFETY: SO_SNDTIMEO reads one timeval.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDTIMEO,
            &tv as *const _ as *const libc::c_void,
            mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn set_nonblocking(fd: RawFd, on: bool) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own; return codes are checked.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 {
            return Err(io::Error::last_os_error());
        }
        let flags = if on {
            flags | libc::O_NONBLOCK
        } else {
            flags & !libc::O_NONBLOCK
        };
        if libc::fcntl(fd, libc::F_SETFL, flags) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Waits for a non-blocking connect to finish, at most `timeout`.
fn wait_connected(fd: RawFd, timeout: Duration) -> io::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connection timed out after {timeout:?}"),
            ));
        }
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLOUT,
            revents: 0,
        };
        let ms = libc::c_int::try_from(left.as_millis().max(1)).unwrap_or(libc::c_int::MAX);
        // SAFETY: one valid pollfd for the duration of the call.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        if rc < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if rc == 0 {
            continue;
        }
        let mut err: libc::c_int = 0;
        let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: SO_ERROR writes one c_int into `err`.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                &mut err as *mut _ as *mut libc::c_void,
                &mut len,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        return if err == 0 {
            Ok(())
        } else {
            Err(io::Error::from_raw_os_error(err))
        };
    }
}

/// How the kernel watches an idle or stuck tunnel connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    /// Idle time before the first probe.
    pub idle: Duration,
    /// Time between probes.
    pub interval: Duration,
    /// Unanswered probes before the connection is dropped.
    pub probes: u32,
    /// Linux `TCP_USER_TIMEOUT`: how long sent data may stay unacknowledged.
    pub user_timeout: Duration,
}

/// Turns on TCP keepalive with `k`'s timing, and `TCP_USER_TIMEOUT` where
/// the platform has it.
pub fn set_keepalive(sock: &TcpStream, k: &Keepalive) -> io::Result<()> {
    let fd = sock.as_raw_fd();
    let secs = |d: Duration| libc::c_int::try_from(d.as_secs().max(1)).unwrap_or(libc::c_int::MAX);
    setsockopt(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1)?;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, secs(k.idle))?;
        setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, secs(k.interval))?;
        let probes = libc::c_int::try_from(k.probes.max(1)).unwrap_or(libc::c_int::MAX);
        setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_KEEPCNT, probes)?;
        let ms = libc::c_int::try_from(k.user_timeout.as_millis()).unwrap_or(libc::c_int::MAX);
        setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, ms)?;
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = (secs, k);
    Ok(())
}

fn setsockopt(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `value` is a c_int that outlives the call; its size is passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            &value as *const _ as *const libc::c_void,
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn sockaddr(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in.
            unsafe { std::ptr::write(&mut storage as *mut _ as *mut libc::sockaddr_in, sin) };
            mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in6.
            unsafe { std::ptr::write(&mut storage as *mut _ as *mut libc::sockaddr_in6, sin6) };
            mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// Bytes received on `fd` and not read yet (`FIONREAD`; TCP and Unix
/// stream sockets alike).
pub fn readable_bytes(fd: &impl AsRawFd) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int through the valid pointer given.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(usize::try_from(n).unwrap_or(0))
}

/// Aborts a TCP connection at once: the peer gets a reset (RST), not the
/// end of a complete stream, what was not sent yet is dropped, and every
/// thread blocked on the socket wakes with an error. (Linux: a `connect`
/// to `AF_UNSPEC` disconnects the socket; the descriptor stays valid.)
pub fn abort(sock: &TcpStream) -> io::Result<()> {
    // SAFETY: sockaddr is plain data (all zeroes is valid); connect reads
    // exactly `len` bytes of it.
    let mut addr: libc::sockaddr = unsafe { mem::zeroed() };
    addr.sa_family = libc::AF_UNSPEC as libc::sa_family_t;
    let len = mem::size_of::<libc::sockaddr>() as libc::socklen_t;
    // SAFETY: a valid socket descriptor and a valid address of `len` bytes.
    let rc = unsafe { libc::connect(sock.as_raw_fd(), &addr, len) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    /// A free loopback port (bound for a moment by the system).
    fn free_port() -> SocketAddr {
        TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
    }

    #[test]
    fn a_bound_port_refuses_and_is_held_until_it_listens() {
        let addr = free_port();
        let bound = bind_port(addr).expect("binds");
        let early = TcpStream::connect(addr).map_err(|e| e.kind());
        assert_eq!(early.err(), Some(io::ErrorKind::ConnectionRefused));
        let other = TcpListener::bind(addr).map_err(|e| e.kind());
        assert_eq!(other.err(), Some(io::ErrorKind::AddrInUse));
        let listener = bound.listen().expect("listens");
        let mut client = TcpStream::connect(addr).expect("connects once listening");
        let (mut server, _) = listener.accept().expect("accepts");
        server.write_all(b"x").expect("writes");
        let mut byte = [0u8; 1];
        client.read_exact(&mut byte).expect("reads");
    }

    #[test]
    fn a_port_is_bound_again_while_its_last_connections_linger() {
        let addr = free_port();
        let listener = bind_port(addr)
            .and_then(BoundPort::listen)
            .expect("listens");
        let mut client = TcpStream::connect(addr).expect("connects");
        let (server, _) = listener.accept().expect("accepts");
        // The server side closes first: its end lingers in TIME_WAIT.
        drop(server);
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).expect("end of stream");
        drop(client);
        drop(listener);
        let again = bind_port(addr).and_then(BoundPort::listen);
        assert!(again.is_ok(), "{again:?}");
    }

    #[test]
    fn an_aborted_connection_is_reset_for_the_peer_and_wakes_local_readers() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let mut client =
            TcpStream::connect(listener.local_addr().expect("addr")).expect("connects");
        let (server, _) = listener.accept().expect("accepts");
        let server = std::sync::Arc::new(server);
        let reader = {
            let server = server.clone();
            std::thread::spawn(move || (&*server).read(&mut [0u8; 16]))
        };
        // The reader is blocked (or about to be): abort must wake it either way.
        abort(&server).expect("aborts");
        let woke = reader.join().expect("reader thread");
        assert!(matches!(woke, Err(_) | Ok(0)), "{woke:?}");
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let err = client
            .read(&mut [0u8; 16])
            .expect_err("a reset, not an end of stream");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err}");
        assert!((&*server).write_all(b"late").is_err());
    }

    #[test]
    fn outgoing_connection_is_bound_to_the_given_address() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let target = listener.local_addr().expect("addr");
        let stream = connect_from("127.0.0.2", target, Duration::from_secs(5)).expect("connects");
        let (_, peer) = listener.accept().expect("accepts");
        assert_eq!(peer.ip().to_string(), "127.0.0.2");
        assert_eq!(
            stream.local_addr().expect("local").ip().to_string(),
            "127.0.0.2"
        );
    }

    #[test]
    fn readable_bytes_counts_what_arrived_and_was_not_read() {
        use std::io::{Read, Write};
        let (mut a, mut b) = std::os::unix::net::UnixStream::pair().expect("pair");
        assert_eq!(readable_bytes(&b).expect("ioctl"), 0);
        a.write_all(b"hello").expect("write");
        assert_eq!(readable_bytes(&b).expect("ioctl"), 5);
        let mut two = [0u8; 2];
        b.read_exact(&mut two).expect("read");
        assert_eq!(readable_bytes(&b).expect("ioctl"), 3);
    }

    #[test]
    fn a_refused_connection_fails_at_once() {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr")
        };
        let started = Instant::now();
        let e = connect_from("127.0.0.1", port, Duration::from_secs(5)).expect_err("refused");
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    /// A listener whose accept queue is full drops new SYNs: from the
    /// client's side, an address that does not answer.
    fn unanswering_listener() -> (TcpListener, TcpStream, SocketAddr) {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        // SAFETY: listen(2) on the listener's own descriptor.
        assert_eq!(unsafe { libc::listen(l.as_raw_fd(), 0) }, 0);
        let addr = l.local_addr().expect("addr");
        // Fills the queue (backlog 0 still admits one), never accepted.
        let first = TcpStream::connect(addr).expect("first connects");
        (l, first, addr)
    }

    #[test]
    fn a_connect_to_an_address_that_does_not_answer_gives_up_at_the_timeout() {
        let (_l, _first, addr) = unanswering_listener();
        let started = Instant::now();
        let e = connect_from("127.0.0.1", addr, Duration::from_millis(700))
            .expect_err("nobody answers");
        let took = started.elapsed();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
        assert!(
            took >= Duration::from_millis(600) && took < Duration::from_secs(5),
            "gave up after {took:?}"
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn keepalive_options_are_set() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let s = TcpStream::connect(listener.local_addr().expect("addr")).expect("connects");
        let k = Keepalive {
            idle: Duration::from_secs(7),
            interval: Duration::from_secs(3),
            probes: 4,
            user_timeout: Duration::from_millis(12_500),
        };
        set_keepalive(&s, &k).expect("sets");
        let get = |level, name| {
            let mut v: libc::c_int = 0;
            let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
            // SAFETY: reads one c_int option into `v`.
            let rc = unsafe {
                libc::getsockopt(
                    s.as_raw_fd(),
                    level,
                    name,
                    &mut v as *mut _ as *mut libc::c_void,
                    &mut len,
                )
            };
            assert_eq!(rc, 0);
            v
        };
        assert_eq!(get(libc::SOL_SOCKET, libc::SO_KEEPALIVE), 1);
        assert_eq!(get(libc::IPPROTO_TCP, libc::TCP_KEEPIDLE), 7);
        assert_eq!(get(libc::IPPROTO_TCP, libc::TCP_KEEPINTVL), 3);
        assert_eq!(get(libc::IPPROTO_TCP, libc::TCP_KEEPCNT), 4);
        assert_eq!(get(libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT), 12_500);
    }
}
