//! TLS WebSocket transport to the tunneling service (stub API; the real one lands from the transport branch).
#![allow(dead_code, unused_variables)]

use std::fmt;
use std::path::Path;
use std::time::Duration;

use crate::config::{Endpoint, Mode};
use crate::secret::Secret;

pub struct WebProxy;
#[derive(Debug)]
pub struct ProxyConfigError;
impl fmt::Display for ProxyConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("stub")
    }
}
impl std::error::Error for ProxyConfigError {}
impl WebProxy {
    pub fn from_env(
        env: &dyn Fn(&str) -> Option<String>,
        target_host: &str,
    ) -> Result<Option<WebProxy>, ProxyConfigError> {
        Ok(None)
    }
}

pub struct ConnectOptions<'a> {
    pub endpoint: &'a Endpoint,
    pub mode: Mode,
    pub access_token: &'a Secret,
    pub client_token: Option<&'a Secret>,
    pub subprotocol: &'a str,
    pub capath: Option<&'a Path>,
    pub no_ssl_host_verify: bool,
    pub max_frame_size: usize,
    pub web_proxy: Option<&'a WebProxy>,
    pub connect_timeout: Duration,
}

#[derive(Debug)]
pub enum ConnectError {
    Refused { status: u16, reason: Option<String> },
    Network(std::io::Error),
}
impl ConnectError {
    pub fn is_retryable(&self) -> bool {
        !matches!(self, ConnectError::Refused { .. })
    }
}
impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("stub")
    }
}
impl std::error::Error for ConnectError {}

#[derive(Debug)]
pub enum TransportError {
    Io(std::io::Error),
}
impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("stub")
    }
}
impl std::error::Error for TransportError {}

pub struct Connection;
pub struct WsReader;
pub struct WsWriter;
#[derive(Clone)]
pub struct ShutdownHandle;
pub enum Incoming {
    Binary(Vec<u8>),
    Ping,
    Pong(Vec<u8>),
    Close(Option<(u16, String)>),
}

pub fn connect(opts: &ConnectOptions<'_>) -> Result<Connection, ConnectError> {
    Err(ConnectError::Network(std::io::Error::other("stub")))
}
impl Connection {
    pub fn channel_id(&self) -> Option<&str> {
        None
    }
    pub fn subprotocol(&self) -> &str {
        ""
    }
    pub fn split(self) -> (WsReader, WsWriter) {
        (WsReader, WsWriter)
    }
}
impl WsReader {
    pub fn read(&mut self) -> Result<Incoming, TransportError> {
        Err(TransportError::Io(std::io::Error::other("stub")))
    }
}
impl WsWriter {
    pub fn send_binary(&mut self, payload: &[u8]) -> Result<(), TransportError> {
        Ok(())
    }
    pub fn send_ping(&mut self, payload: &[u8]) -> Result<(), TransportError> {
        Ok(())
    }
    pub fn send_close(&mut self, code: u16, reason: &str) -> Result<(), TransportError> {
        Ok(())
    }
    pub fn flush_control(&mut self) -> Result<(), TransportError> {
        Ok(())
    }
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle
    }
}
impl ShutdownHandle {
    pub fn shutdown(&self) {}
}
