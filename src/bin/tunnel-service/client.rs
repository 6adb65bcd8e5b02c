//! A minimal client of the control plane, for the `open`/`close`/`list`/
//! `describe`/`rotate` subcommands and for tests: one JSON 1.1 call per
//! connection.

use std::fmt;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(10);

/// Why an API call failed.
#[derive(Debug)]
pub enum ClientError {
    /// `--api` is not `host:port`.
    Address(String),
    Io(String, std::io::Error),
    BadResponse(String),
    /// The service answered with an AWS error.
    Api {
        status: u16,
        kind: String,
        message: String,
    },
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Address(why) => write!(f, "--api {why}"),
            ClientError::Io(what, e) => write!(f, "{what}: {e}"),
            ClientError::BadResponse(why) => write!(f, "bad response from the service: {why}"),
            ClientError::Api {
                status,
                kind,
                message,
            } => write!(f, "{kind} (HTTP {status}): {message}"),
        }
    }
}

impl std::error::Error for ClientError {}

/// Calls `target` (e.g. `IoTSecuredTunneling.OpenTunnel`) at `api` (host:port).
pub fn call(api: &str, target: &str, body: &Value) -> Result<Value, ClientError> {
    let (host, port) = localproxy::config::parse_host_port(api, None)
        .map_err(|e| ClientError::Address(e.to_string()))?;
    let addr = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| ClientError::Io(format!("resolving {api}"), e))?
        .next()
        .ok_or_else(|| ClientError::BadResponse(format!("{api} resolves to no address")))?;
    let mut tcp = TcpStream::connect_timeout(&addr, TIMEOUT)
        .map_err(|e| ClientError::Io(format!("connecting to {api}"), e))?;
    let _ = tcp.set_read_timeout(Some(TIMEOUT));
    let _ = tcp.set_write_timeout(Some(TIMEOUT));
    let body = body.to_string();
    let req = format!(
        "POST / HTTP/1.1\r\nHost: {api}\r\nX-Amz-Target: {target}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        crate::api::CONTENT_TYPE,
        body.len()
    );
    tcp.write_all(req.as_bytes())
        .map_err(|e| ClientError::Io(format!("sending to {api}"), e))?;
    let mut resp = Vec::new();
    tcp.read_to_end(&mut resp)
        .map_err(|e| ClientError::Io(format!("reading from {api}"), e))?;
    let text = String::from_utf8_lossy(&resp);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| ClientError::BadResponse("no end of headers".into()))?;
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            ClientError::BadResponse(format!("bad status line {:?}", head.lines().next()))
        })?;
    let v: Value = serde_json::from_str(body)
        .map_err(|e| ClientError::BadResponse(format!("body is not JSON: {e}")))?;
    if status != 200 {
        return Err(ClientError::Api {
            status,
            kind: v["__type"].as_str().unwrap_or("?").to_string(),
            message: v["message"].as_str().unwrap_or("").to_string(),
        });
    }
    Ok(v)
}
