//! TLS WebSocket transport to the tunneling service: TCP (optionally through
//! an HTTP CONNECT web proxy), TLS with OpenSSL, the upgrade handshake, and a
//! reader/writer split usable from two threads.
//!
//! Files: [`memio`] (OpenSSL over in-memory buffers), `tls` (OpenSSL setup),
//! `proxy` (web proxy), `handshake` (upgrade request and checks), `http`
//! (response heads), `split` (reader and writer), [`wire`] (data frames
//! built in place), `error` (error types).

mod error;
mod handshake;
mod http;
pub(crate) mod memio;
mod proxy;
mod split;
mod tls;
pub mod wire;

use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openssl::ssl::SslStream;
use tungstenite::protocol::{Role, WebSocketConfig};
use tungstenite::WebSocket;

pub use error::{ConnectError, ProxyConfigError, ProxyFailure, TransportError};
pub use http::{find_head_end, host_port, parse_header_lines, BadHeaderLine};
pub use proxy::{no_proxy_matches, percent_decode, ProxyScheme, WebProxy, PROXY_ENV_VARS};
pub use split::{Incoming, ShutdownHandle, WsReader, WsWriter};

use crate::config::{Endpoint, Mode};
use crate::secret::Secret;
use handshake::{UpgradeRequest, Verdict};
use http::{read_head, HeadError};
use memio::{MemIo, Outer, Pump, TlsIo};

/// What [`connect`] needs.
#[derive(Clone, Copy)]
pub struct ConnectOptions<'a> {
    pub endpoint: &'a Endpoint,
    pub mode: Mode,
    pub access_token: &'a Secret,
    pub client_token: Option<&'a Secret>,
    /// The subprotocol offered (`settings.subprotocol`, one of
    /// [`crate::protocol::SUBPROTOCOLS`]; the answer is checked against a
    /// comma-separated list, so a caller could offer several).
    pub subprotocol: &'a str,
    /// `-c`: extra trusted CAs. The command line accepts a directory (hashed
    /// names, as `c_rehash` makes them); a PEM file works here too.
    pub capath: Option<&'a Path>,
    /// `-k`: no certificate or host name verification.
    pub no_ssl_host_verify: bool,
    /// `settings.max_frame_size`: largest message accepted or sent.
    pub max_frame_size: usize,
    pub web_proxy: Option<&'a WebProxy>,
    /// Bounds the whole connect: TCP, proxy, TLS and upgrade.
    pub connect_timeout: Duration,
    /// Called once the TCP connection exists, with a handle that shuts it
    /// down: the way to abandon the rest of the connect from another thread
    /// (a stop request), which then fails at once.
    pub on_socket: Option<&'a dyn Fn(ShutdownHandle)>,
}

/// An upgraded connection, ready to [`split`](Connection::split).
pub struct Connection {
    state: split::State,
    read_sock: TcpStream,
    sock: Arc<TcpStream>,
    channel_id: Option<String>,
    subprotocol: String,
    max_frame_size: usize,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("channel_id", &self.channel_id)
            .field("subprotocol", &self.subprotocol)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// The service's `channel-id` for this connection, if it sent one.
    pub fn channel_id(&self) -> Option<&str> {
        self.channel_id.as_deref()
    }

    /// The subprotocol the service chose.
    pub fn subprotocol(&self) -> &str {
        &self.subprotocol
    }

    /// Turns on TCP keepalive (and `TCP_USER_TIMEOUT` on Linux) on the
    /// tunnel socket, a backstop for the session's own liveness checks.
    pub fn set_keepalive(&self, k: &crate::sockets::Keepalive) -> std::io::Result<()> {
        crate::sockets::set_keepalive(&self.sock, k)
    }

    /// A handle that shuts the socket down (also available from the writer).
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle::new(self.sock.clone())
    }

    /// Splits into the reading and the writing half.
    pub fn split(self) -> (WsReader, WsWriter) {
        split::split(self.state, self.read_sock, self.sock, self.max_frame_size)
    }
}

/// What tungstenite reads at once, and the first size of its read buffer
/// (it grows to the largest message). One TLS record's plaintext: the
/// buffer's free part is zeroed before each read, so a larger size would
/// zero more than a read brings.
const WS_READ_CHUNK: usize = 16 * 1024;

/// The WebSocket limits for a given `max_frame_size`.
fn ws_config(max_frame_size: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .max_frame_size(Some(max_frame_size))
        .max_message_size(Some(max_frame_size))
        .write_buffer_size(0)
        .read_buffer_size(WS_READ_CHUNK)
        .accept_unmasked_frames(false)
}

/// Connects to the service and upgrades to a WebSocket.
pub fn connect(opts: &ConnectOptions<'_>) -> Result<Connection, ConnectError> {
    let host = opts.endpoint.host.as_str();
    let port = opts.endpoint.port;
    let target = host_port(host, port);
    let started = Instant::now();
    let deadline = started + opts.connect_timeout;
    if opts.no_ssl_host_verify {
        log::warn!(
            "TLS certificate and host name verification is OFF (-k/--no-ssl-host-verify) \
             for {target}: anyone on the path can read the tunnel; use only for tests"
        );
    }
    let tls_settings = tls::TlsSettings {
        capath: opts.capath,
        no_verify: opts.no_ssl_host_verify,
    };
    let connector =
        tls::connector(&tls_settings).map_err(|detail| ConnectError::TlsSetup { detail })?;

    // TCP, to the proxy or the endpoint.
    let (tcp_host, tcp_port) = match opts.web_proxy {
        Some(p) => (p.host(), p.port()),
        None => (host, port),
    };
    let timeout_err = || ConnectError::Timeout {
        target: target.clone(),
        after: opts.connect_timeout,
    };
    let proxy_err = |p: &WebProxy, failure: ProxyFailure| ConnectError::Proxy {
        proxy: p.to_string(),
        failure,
    };
    let sock = match tcp_connect(tcp_host, tcp_port, deadline) {
        Ok(s) => s,
        Err(e) => {
            return Err(match opts.web_proxy {
                Some(p) => proxy_err(p, ProxyFailure::Io(e.into_io())),
                None => e.into_connect_error(&target, opts.connect_timeout),
            })
        }
    };
    if let Err(e) = sock.set_nodelay(true) {
        log::debug!("TCP_NODELAY on the tunnel socket: {e}");
    }
    if let Some(on_socket) = opts.on_socket {
        // Shutting down a duplicate descriptor shuts down the socket.
        match sock.try_clone() {
            Ok(dup) => on_socket(ShutdownHandle::new(Arc::new(dup))),
            Err(e) => log::debug!("no handle to abandon the connect with: {e}"),
        }
    }
    log::debug!(
        "TCP connected to {} in {} ms",
        host_port(tcp_host, tcp_port),
        started.elapsed().as_millis()
    );
    let pump = Pump {
        sock: &sock,
        deadline,
    };

    // Web proxy: optional TLS to it, then CONNECT.
    let mut outer: Outer = None;
    let mut initial = Vec::new();
    if let Some(p) = opts.web_proxy {
        let rest = match p.scheme() {
            ProxyScheme::Http => {
                let mut plain = MemIo::default();
                let mut rest = proxy::connect_through(p, &mut plain, &pump, host, port)
                    .map_err(|f| proxy_err(p, f))?;
                rest.extend(plain.take_inbound());
                rest
            }
            ProxyScheme::Https => {
                let mut none: Outer = None;
                let mut s = tls::handshake(
                    &connector,
                    p.host(),
                    opts.no_ssl_host_verify,
                    &[],
                    &pump,
                    &mut none,
                )
                .map_err(|f| {
                    proxy_err(
                        p,
                        match f.io {
                            Some(e) => ProxyFailure::Io(e),
                            None => ProxyFailure::Tls {
                                detail: f.detail,
                                verify: f.verify,
                            },
                        },
                    )
                })?;
                let rest = proxy::connect_through(p, &mut s, &pump, host, port)
                    .map_err(|f| proxy_err(p, f))?;
                outer = Some(s);
                rest
            }
        };
        log::debug!("web proxy {p} connected us to {target}");
        initial = rest;
    }

    // TLS to the endpoint.
    let mut tls = tls::handshake(
        &connector,
        host,
        opts.no_ssl_host_verify,
        &initial,
        &pump,
        &mut outer,
    )
    .map_err(|f| match f.io {
        Some(e) if e.kind() == std::io::ErrorKind::TimedOut => timeout_err(),
        Some(e) => ConnectError::Network {
            target: target.clone(),
            during: "the TLS handshake",
            source: e,
        },
        None => ConnectError::Tls {
            target: target.clone(),
            detail: f.detail,
            verify: f.verify,
        },
    })?;
    log::debug!(
        "TLS established with {target} ({})",
        tls.ssl().version_str()
    );

    // WebSocket upgrade.
    let key = tungstenite::handshake::client::generate_key();
    let (request, redacted) = UpgradeRequest {
        host,
        port,
        mode: opts.mode,
        access_token: opts.access_token,
        client_token: opts.client_token,
        subprotocol: opts.subprotocol,
        key: &key,
    }
    .render()
    .map_err(|detail| ConnectError::InvalidRequest { detail })?;
    log::trace!("upgrade request to {target}:\n{redacted}");
    let net = |during: &'static str| {
        let target = target.clone();
        move |e: std::io::Error| {
            if e.kind() == std::io::ErrorKind::TimedOut {
                timeout_err()
            } else {
                ConnectError::Network {
                    target,
                    during,
                    source: e,
                }
            }
        }
    };
    pump.write_all(&mut tls, &mut outer, request.as_bytes())
        .map_err(net("sending the upgrade request"))?;
    // What the service says may quote the request: its text is shown
    // without our tokens.
    let secrets: Vec<&Secret> = std::iter::once(opts.access_token)
        .chain(opts.client_token)
        .collect();
    let scrub = |text: &str| crate::secret::scrub(text, &secrets);
    let (mut head, mut tail) = read_head(&mut tls, &pump, &mut outer).map_err(|e| match e {
        HeadError::Io(e) => net("reading the upgrade response")(e),
        HeadError::Malformed(detail) => ConnectError::Protocol {
            target: target.clone(),
            detail: scrub(&detail),
        },
    })?;
    head.status_text = scrub(&head.status_text);
    for (name, value) in &mut head.headers {
        *name = scrub(name);
        *value = scrub(value);
    }
    log::trace!(
        "upgrade response from {target}: {} {} {:?}",
        head.status,
        head.status_text,
        head.headers
    );
    let upgraded = match handshake::verify(&head, &key, opts.subprotocol) {
        Verdict::Upgraded(u) => u,
        Verdict::Refused { reason } => {
            read_body(&head, &mut tail, &mut tls, &pump, &mut outer);
            return Err(ConnectError::Refused {
                target,
                status: head.status,
                status_text: head.status_text,
                reason,
                body: http::body_snippet(scrub(&String::from_utf8_lossy(&tail)).as_bytes()),
            });
        }
        Verdict::ServerError { reason } => {
            return Err(ConnectError::ServerError {
                target,
                status: head.status,
                status_text: head.status_text,
                reason,
            })
        }
        Verdict::Protocol(detail) => return Err(ConnectError::Protocol { target, detail }),
    };

    let net_setup = |e: std::io::Error| ConnectError::Network {
        target: target.clone(),
        during: "setting up the socket",
        source: e,
    };
    sock.set_read_timeout(None).map_err(net_setup)?;
    sock.set_write_timeout(None).map_err(net_setup)?;
    let read_sock = sock.try_clone().map_err(net_setup)?;
    // The reference's lines, which scripts wait for (README, Compatibility).
    match &upgraded.channel_id {
        Some(id) => log::info!("Web socket session ID: {}", crate::logging::printable(id)),
        None => log::warn!("The service sent no channel-id (web socket session ID)"),
    }
    log::info!(
        "Successfully established websocket connection with proxy server: wss://{target} \
         (subprotocol {})",
        upgraded.subprotocol
    );
    let ws = WebSocket::from_partially_read(
        TlsIo(tls),
        tail,
        Role::Client,
        Some(ws_config(opts.max_frame_size)),
    );
    Ok(Connection {
        state: split::State { outer, ws },
        read_sock,
        sock: Arc::new(sock),
        channel_id: upgraded.channel_id,
        subprotocol: upgraded.subprotocol,
        max_frame_size: opts.max_frame_size,
    })
}

/// Best effort: reads a refusal's body up to its Content-Length (at most
/// 1 KiB) so the error can quote it.
fn read_body(
    head: &http::ResponseHead,
    body: &mut Vec<u8>,
    tls: &mut SslStream<MemIo>,
    pump: &Pump<'_>,
    outer: &mut Outer,
) {
    let want = head
        .header("Content-Length")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0)
        .min(1024);
    let mut buf = [0u8; 1024];
    while body.len() < want {
        match pump.read(tls, outer, &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => body.extend_from_slice(&buf[..n]),
        }
    }
}

/// Why the TCP connect failed.
enum TcpError {
    Resolve(std::io::Error),
    Connect(std::io::Error),
    Timeout,
}

impl TcpError {
    fn into_io(self) -> std::io::Error {
        match self {
            TcpError::Resolve(e) | TcpError::Connect(e) => e,
            TcpError::Timeout => {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timeout elapsed")
            }
        }
    }

    fn into_connect_error(self, target: &str, after: Duration) -> ConnectError {
        match self {
            TcpError::Resolve(source) => ConnectError::Resolve {
                target: target.to_string(),
                source,
            },
            TcpError::Connect(source) => ConnectError::Network {
                target: target.to_string(),
                during: "connecting",
                source,
            },
            TcpError::Timeout => ConnectError::Timeout {
                target: target.to_string(),
                after,
            },
        }
    }
}

/// Connects to each resolved address of `host:port` in turn until `deadline`.
fn tcp_connect(host: &str, port: u16, deadline: Instant) -> Result<TcpStream, TcpError> {
    let addrs: Vec<_> = (host, port)
        .to_socket_addrs()
        .map_err(TcpError::Resolve)?
        .collect();
    if addrs.is_empty() {
        return Err(TcpError::Resolve(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no addresses",
        )));
    }
    let mut last = None;
    for addr in addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(TcpError::Timeout);
        }
        match TcpStream::connect_timeout(&addr, left) {
            Ok(s) => return Ok(s),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => last = Some(TcpError::Timeout),
            Err(e) => {
                log::debug!("connecting to {addr}: {e}");
                last = Some(TcpError::Connect(e));
            }
        }
    }
    Err(last.unwrap_or(TcpError::Timeout))
}
