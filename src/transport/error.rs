//! Error types of the transport: connecting ([`ConnectError`]), a running
//! connection ([`TransportError`]) and the web proxy setting ([`ProxyConfigError`]).

use std::fmt;
use std::io;
use std::time::Duration;

use crate::logging::printable;

/// Why [`super::connect`] failed. `Display` names the endpoint (or the web
/// proxy, without credentials) and the failure; [`ConnectError::is_retryable`]
/// says whether trying again later can help.
#[derive(Debug)]
pub enum ConnectError {
    /// The endpoint's (or proxy's) host name did not resolve.
    Resolve { target: String, source: io::Error },
    /// TCP connect, read or write failed, or the connect timeout elapsed.
    Network {
        target: String,
        during: &'static str,
        source: io::Error,
    },
    /// The whole connect (TCP, TLS, upgrade) took longer than allowed.
    Timeout { target: String, after: Duration },
    /// The TLS handshake failed. `verify` holds OpenSSL's certificate
    /// verification error ("self-signed certificate", "hostname mismatch"...)
    /// when the peer's certificate was rejected.
    Tls {
        target: String,
        detail: String,
        verify: Option<String>,
    },
    /// The TLS context could not be set up (bad `-c` path, OpenSSL failure).
    TlsSetup { detail: String },
    /// The upgrade request could not be formed (token with characters not
    /// allowed in a header, request over the size limit).
    InvalidRequest { detail: String },
    /// The service answered the upgrade with a 4xx: the request is refused.
    Refused {
        target: String,
        status: u16,
        status_text: String,
        /// The `X-Status-Reason` header, when present.
        reason: Option<String>,
        /// The first bytes of the response body, printable characters only.
        body: Option<String>,
    },
    /// The service answered the upgrade with a 5xx.
    ServerError {
        target: String,
        status: u16,
        status_text: String,
        reason: Option<String>,
    },
    /// The service's answer broke the protocol (not 101, bad accept key,
    /// missing or unoffered subprotocol, malformed HTTP).
    Protocol { target: String, detail: String },
    /// The web proxy could not be reached or refused the CONNECT.
    Proxy {
        /// `scheme://host:port` of the proxy, never its credentials.
        proxy: String,
        failure: ProxyFailure,
    },
}

/// What went wrong with the web proxy.
#[derive(Debug)]
pub enum ProxyFailure {
    /// Connecting, reading or writing failed.
    Io(io::Error),
    /// The proxy answered the CONNECT with a non-2xx status.
    Status { status: u16, status_text: String },
    /// The TLS handshake with an `https://` proxy failed.
    Tls {
        detail: String,
        verify: Option<String>,
    },
    /// The proxy's answer was not HTTP.
    Malformed(String),
}

impl ConnectError {
    /// Whether a later attempt may succeed: network trouble, timeouts, 5xx
    /// answers, proxy failures and a malformed upgrade answer (a middlebox,
    /// a service mid-restart: docs/protocol.md 1 makes only a 4xx final) are; a
    /// refused request (4xx), a rejected certificate or a local setup
    /// problem are not.
    pub fn is_retryable(&self) -> bool {
        match self {
            ConnectError::Resolve { .. }
            | ConnectError::Network { .. }
            | ConnectError::Timeout { .. }
            | ConnectError::ServerError { .. }
            | ConnectError::Proxy { .. }
            | ConnectError::Protocol { .. } => true,
            ConnectError::Tls { verify, .. } => verify.is_none(),
            ConnectError::TlsSetup { .. }
            | ConnectError::InvalidRequest { .. }
            | ConnectError::Refused { .. } => false,
        }
    }

    /// The HTTP status of a refused or failed upgrade, if the service answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ConnectError::Refused { status, .. } | ConnectError::ServerError { status, .. } => {
                Some(*status)
            }
            _ => None,
        }
    }
}

fn verify_hint(f: &mut fmt::Formatter<'_>, verify: &str) -> fmt::Result {
    write!(
        f,
        ": certificate verification failed ({verify}); if the server uses a private \
         CA, pass its certificate directory or file with -c/--capath \
         (-k/--no-ssl-host-verify disables verification, for tests only)"
    )
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::Resolve { target, source } => {
                write!(f, "cannot resolve {target}: {source}")
            }
            ConnectError::Network {
                target,
                during,
                source,
            } => write!(f, "network error with {target} while {during}: {source}"),
            ConnectError::Timeout { target, after } => write!(
                f,
                "connecting to {target} did not complete within {} ms",
                after.as_millis()
            ),
            ConnectError::Tls {
                target,
                detail,
                verify,
            } => {
                write!(f, "TLS handshake with {target} failed")?;
                match verify {
                    Some(v) => verify_hint(f, v),
                    None => write!(f, ": {detail}"),
                }
            }
            ConnectError::TlsSetup { detail } => write!(f, "TLS setup failed: {detail}"),
            ConnectError::InvalidRequest { detail } => {
                write!(f, "cannot form the tunnel upgrade request: {detail}")
            }
            ConnectError::Refused {
                target,
                status,
                status_text,
                reason,
                body,
            } => {
                write!(
                    f,
                    "the tunneling service at {target} refused the connection: HTTP {status} {}",
                    printable(status_text)
                )?;
                if let Some(r) = reason {
                    write!(f, " (X-Status-Reason: {})", printable(r))?;
                }
                if let Some(b) = body {
                    write!(f, " body: {b:?}")?;
                }
                f.write_str(
                    ". Hint: the access token may be wrong, already used (without a client \
                     token an access token is good for one connection) or rotated, or the \
                     region/endpoint or the mode (source -s / destination -d) does not match \
                     the token. Not retrying.",
                )
            }
            ConnectError::ServerError {
                target,
                status,
                status_text,
                reason,
            } => {
                write!(
                    f,
                    "the tunneling service at {target} failed: HTTP {status} {}",
                    printable(status_text)
                )?;
                if let Some(r) = reason {
                    write!(f, " (X-Status-Reason: {})", printable(r))?;
                }
                Ok(())
            }
            ConnectError::Protocol { target, detail } => {
                write!(
                    f,
                    "protocol error in the upgrade with {target}: {}",
                    printable(detail)
                )
            }
            ConnectError::Proxy { proxy, failure } => {
                write!(f, "web proxy {proxy}: ")?;
                match failure {
                    ProxyFailure::Io(e) => write!(f, "{e}"),
                    ProxyFailure::Status {
                        status,
                        status_text,
                    } => {
                        write!(
                            f,
                            "CONNECT refused with HTTP {status} {}",
                            printable(status_text)
                        )?;
                        if *status == 407 {
                            f.write_str(
                                " (proxy authentication required: check the user and password \
                                 in HTTPS_PROXY)",
                            )?;
                        }
                        Ok(())
                    }
                    ProxyFailure::Tls { detail, verify } => {
                        f.write_str("TLS handshake failed")?;
                        match verify {
                            Some(v) => verify_hint(f, v),
                            None => write!(f, ": {detail}"),
                        }
                    }
                    ProxyFailure::Malformed(d) => write!(f, "malformed answer: {d}"),
                }
            }
        }
    }
}

impl std::error::Error for ConnectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConnectError::Resolve { source, .. } | ConnectError::Network { source, .. } => {
                Some(source)
            }
            ConnectError::Proxy {
                failure: ProxyFailure::Io(e),
                ..
            } => Some(e),
            _ => None,
        }
    }
}

/// A failure of an established connection.
#[derive(Debug)]
pub enum TransportError {
    /// Reading or writing the socket failed (includes a read timeout).
    Io(io::Error),
    /// The service sent a text frame: only binary messages carry tunnel data.
    TextFrame { len: usize },
    /// A message over the frame size limit, received or about to be sent.
    FrameTooLarge { size: usize, max: usize },
    /// The peer broke the WebSocket protocol (or TLS failed mid-stream).
    Protocol(String),
    /// The WebSocket was already closed (close handshake done or sent).
    Closed,
    /// The connection ended without a WebSocket close (reset, EOF, or
    /// [`super::ShutdownHandle::shutdown`]).
    Eof,
    /// Another thread panicked while holding the connection's lock.
    Poisoned,
    /// Nothing at all (data, ping, pong) came from the service for `after`.
    Silent { after: Duration },
    /// A write to the service made no progress for `after` (it stopped
    /// reading, or the path went dead).
    WriteStalled { after: Duration },
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransportError::Io(e) => write!(f, "tunnel connection I/O error: {e}"),
            TransportError::TextFrame { len } => write!(
                f,
                "the service sent a text frame ({len} bytes): only binary messages are allowed"
            ),
            TransportError::FrameTooLarge { size, max } => write!(
                f,
                "WebSocket message of {size} bytes exceeds the limit of {max} bytes (max_frame_size)"
            ),
            TransportError::Protocol(d) => write!(f, "WebSocket protocol error: {d}"),
            TransportError::Closed => f.write_str("the WebSocket connection is closed"),
            TransportError::Eof => {
                f.write_str("the tunnel connection ended without a WebSocket close")
            }
            TransportError::Poisoned => {
                f.write_str("the tunnel connection's lock was poisoned by a panic")
            }
            TransportError::Silent { after } => write!(
                f,
                "nothing (data, ping or pong) received from the service for {after:.1?}: \
                 the connection is dead"
            ),
            TransportError::WriteStalled { after } => write!(
                f,
                "a write to the service made no progress for {after:.1?}: it stopped reading \
                 or the connection is dead"
            ),
        }
    }
}

impl std::error::Error for TransportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TransportError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for TransportError {
    fn from(e: io::Error) -> Self {
        TransportError::Io(e)
    }
}

impl From<tungstenite::Error> for TransportError {
    fn from(e: tungstenite::Error) -> Self {
        use tungstenite::error::{CapacityError, ProtocolError};
        use tungstenite::Error as E;
        match e {
            E::Io(e) => TransportError::Io(e),
            E::ConnectionClosed | E::AlreadyClosed => TransportError::Closed,
            E::Protocol(ProtocolError::SendAfterClosing) => TransportError::Closed,
            E::Protocol(ProtocolError::ResetWithoutClosingHandshake) => TransportError::Eof,
            E::Capacity(CapacityError::MessageTooLong { size, max_size }) => {
                TransportError::FrameTooLarge {
                    size,
                    max: max_size,
                }
            }
            E::Utf8(_) => TransportError::TextFrame { len: 0 },
            other => TransportError::Protocol(other.to_string()),
        }
    }
}

/// A bad `HTTPS_PROXY` / `https_proxy` value. Never echoes credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyConfigError {
    /// A scheme other than `http://` or `https://`.
    UnsupportedScheme(String),
    /// No host after the scheme and credentials.
    MissingHost,
    /// The port is not a number in 1..=65535.
    InvalidPort(String),
    /// A `%` in the credentials not followed by two hex digits.
    InvalidPercentEncoding,
}

impl fmt::Display for ProxyConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyConfigError::UnsupportedScheme(s) => write!(
                f,
                "HTTPS_PROXY: unsupported scheme `{s}` (only http:// and https:// proxies are supported)"
            ),
            ProxyConfigError::MissingHost => f.write_str("HTTPS_PROXY: no proxy host given"),
            ProxyConfigError::InvalidPort(p) => {
                write!(f, "HTTPS_PROXY: invalid port `{p}` (expected 1-65535)")
            }
            ProxyConfigError::InvalidPercentEncoding => f.write_str(
                "HTTPS_PROXY: the credentials hold a `%` not followed by two hex digits",
            ),
        }
    }
}

impl std::error::Error for ProxyConfigError {}
