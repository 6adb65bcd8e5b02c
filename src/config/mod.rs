//! Configuration: command line, `--config` file, environment, settings JSON and
//! service mappings, merged and validated into one [`Config`].

use std::path::PathBuf;

use crate::secret::Secret;

/// Which side of the tunnel this proxy is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Listens on local ports and carries accepted connections to the tunnel.
    Source,
    /// Receives streams from the tunnel and connects to local services.
    Destination,
}

impl Mode {
    /// The value of the `local-proxy-mode` query parameter.
    pub fn as_query(self) -> &'static str {
        match self {
            Mode::Source => "source",
            Mode::Destination => "destination",
        }
    }
}

/// Protocol generation of the destination peer (`-y`, source side only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PeerVersion {
    /// No service id, no connection id: one connection at a time.
    V1,
    /// Service ids, no connection ids: one stream per TCP connection.
    V2,
    /// Service ids and connection ids: many connections per stream.
    V3,
}

/// Where a destination service is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DestinationAddr {
    /// `host:port` (host defaults to localhost when only a port is given).
    Tcp { host: String, port: u16 },
    /// A Unix domain socket path (the value contained `/`).
    Unix(PathBuf),
}

/// What a service id maps to on this side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Source: the local port to listen on (0 = pick a free one).
    Listen(u16),
    /// Destination: the address to connect to.
    Connect(DestinationAddr),
}

/// One service of the tunnel and its local end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceMapping {
    /// The service id; `None` for the single unnamed mapping of V1 (`-s 5555`).
    pub id: Option<String>,
    pub target: Target,
}

/// The service's WebSocket endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

/// `tunneling.proxy.*` settings (docs/protocol.md 5), after overrides.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub default_bind_address: String,
    pub data_length_size: usize,
    pub max_payload_size: usize,
    pub max_size: usize,
    pub tcp_connection_retry_count: i64,
    pub tcp_connection_retry_delay_ms: u64,
    pub tcp_read_buffer_size: usize,
    /// Simultaneous local connections of one tunnel.
    pub tcp_max_active_connections: usize,
    /// Source: a connection whose data got no answer at all from the
    /// destination this long is reset (0: never).
    pub tcp_answer_timeout_ms: u64,
    pub ping_period_ms: u64,
    pub retry_delay_ms: u64,
    pub connect_retry_count: i64,
    pub reconnect_on_data_error: bool,
    pub subprotocol: String,
    pub max_frame_size: usize,
    pub ws_write_buffer_size: usize,
    pub ws_read_buffer_size: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            default_bind_address: "localhost".into(),
            data_length_size: 2,
            max_payload_size: 64_512,
            max_size: 65_536,
            tcp_connection_retry_count: 5,
            tcp_connection_retry_delay_ms: 2_500,
            tcp_read_buffer_size: 131_076,
            tcp_max_active_connections: 128,
            tcp_answer_timeout_ms: 30_000,
            ping_period_ms: 20_000,
            retry_delay_ms: 2_500,
            connect_retry_count: -1,
            reconnect_on_data_error: true,
            subprotocol: crate::protocol::SUBPROTOCOL_V3.into(),
            max_frame_size: 131_076,
            ws_write_buffer_size: 131_076,
            ws_read_buffer_size: 131_076,
        }
    }
}

/// Everything the proxy needs to run, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub access_token: Secret,
    /// Given by `-i` or the environment; the tunnel generates one when absent.
    pub client_token: Option<Secret>,
    pub endpoint: Endpoint,
    pub mode: Mode,
    /// Empty means: source picks free ports for the advertised services.
    pub services: Vec<ServiceMapping>,
    /// `-b`: source listens on it, destination binds outgoing connections to it.
    pub bind_address: Option<String>,
    pub capath: Option<PathBuf>,
    pub no_ssl_host_verify: bool,
    pub peer_version: PeerVersion,
    pub settings: Settings,
}

mod cli;
mod error;
mod file;
mod load;
mod mapping;
mod opt;
mod settings;

pub use error::{ConfigError, TRY_HELP};
pub use load::{
    args_from_os, parse, parse_with_default_dir, write_default_settings, Action, RunNotes,
    DEFAULT_CONFIG_DIR, DEFAULT_VERBOSITY, ENV_VARS,
};
pub use mapping::{parse_destination, parse_host_port};
pub use opt::{Opt, Origin};
pub use settings::{
    apply_json as apply_settings_json, export_json as export_settings_json, keys as settings_keys,
};
