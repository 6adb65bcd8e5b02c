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

/// Everything the proxy needs to run, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub access_token: Secret,
    /// Given by `-i`, the environment or `--client-token-file`; the tunnel
    /// generates one per process when absent.
    pub client_token: Option<Secret>,
    pub endpoint: Endpoint,
    pub mode: Mode,
    /// Empty means: source picks free ports for the advertised services.
    pub services: Vec<ServiceMapping>,
    /// `services` came from a mapping directory (`--config-dir`, `./config`):
    /// as in the reference, only the services the tunnel advertises are
    /// looked up in it; a source picks a port for one it lacks, a
    /// destination refuses to start.
    pub services_from_dir: bool,
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
mod token_file;

pub use cli::UsageError;
pub use error::{ConfigError, TRY_HELP};
pub use load::{
    args_from_os, check_env, parse, parse_with_default_dir, write_default_settings, Action,
    RunNotes, DEFAULT_CONFIG_DIR, DEFAULT_VERBOSITY, ENV_VARS,
};
pub use mapping::{parse_destination, parse_host_port, HostPortError};
pub use opt::{Opt, Origin};
pub use settings::{
    apply_json as apply_settings_json, export_json as export_settings_json,
    export_reference_json as export_reference_settings_json, keys as settings_keys, Settings,
    KEYS as SETTINGS,
};
pub use token_file::{
    load_or_create as load_or_create_client_token, TokenFileError, TokenFileProblem,
};
