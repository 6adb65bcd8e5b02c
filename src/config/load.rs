//! From arguments and environment to an [`Action`]: merge the command line, the
//! `--config` file and the environment (in that precedence), then validate.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

use gumdrop::Options;

use super::cli::{help_text, version_text, CliArgs};
use super::error::ConfigError;
use super::mapping::{self, DirIssue, Located};
use super::opt::{Opt, Origin};
use super::{file, settings};
use super::{Config, Endpoint, Mode, PeerVersion, Settings};
use crate::protocol;
use crate::secret::Secret;

/// Environment variables and the option each one stands for (lowest precedence).
pub const ENV_VARS: [(&str, Opt); 4] = [
    ("AWSIOT_TUNNEL_ACCESS_TOKEN", Opt::AccessToken),
    ("AWSIOT_TUNNEL_CLIENT_TOKEN", Opt::ClientToken),
    ("AWSIOT_TUNNEL_ENDPOINT", Opt::ProxyEndpoint),
    ("AWSIOT_TUNNEL_REGION", Opt::Region),
];

/// The `--config-dir` used when none is given (relative to the working directory).
pub const DEFAULT_CONFIG_DIR: &str = "config";

/// Verbosity when `-v` is not given (info).
pub const DEFAULT_VERBOSITY: u8 = 4;

/// What the command line asks for.
#[derive(Debug)]
pub enum Action {
    /// Run the proxy.
    Run(Box<Config>, RunNotes),
    /// Print this text (the `--help` text) to stdout and exit 0.
    Help(String),
    /// Print this text (the version line) to stdout and exit 0.
    Version(String),
    /// Write the default settings to this file ([`super::write_default_settings`]) and exit 0.
    ExportSettings(PathBuf),
}

/// What `main` needs besides the [`Config`]: the log level, and warnings to
/// log once logging is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunNotes {
    /// `-v`: 0 off, 1-2 error, 3 warn, 4 info, 5 debug, 6+ trace.
    pub verbosity: u8,
    /// Configuration warnings (token on the command line, unknown settings
    /// keys, ignored options). None holds a token value.
    pub warnings: Vec<String>,
}

/// A value and where it came from.
#[derive(Debug, Clone)]
struct Given {
    value: String,
    origin: Origin,
}

/// Converts the process arguments (after the program name) to strings.
pub fn args_from_os(args: impl IntoIterator<Item = OsString>) -> Result<Vec<String>, ConfigError> {
    args.into_iter()
        .enumerate()
        .map(|(i, a)| {
            a.into_string()
                .map_err(|_| ConfigError::NotUtf8 { position: i + 1 })
        })
        .collect()
}

/// Parses `args` (the arguments after the program name) with `env` as the
/// environment, reading `./config` as the default `--config-dir`.
pub fn parse(args: &[String], env: &dyn Fn(&str) -> Option<String>) -> Result<Action, ConfigError> {
    parse_with_default_dir(args, env, Path::new(DEFAULT_CONFIG_DIR))
}

/// [`parse`] with another default `--config-dir` (used when it exists and
/// neither `-s`, `-d` nor `--config-dir` gives the mappings).
pub fn parse_with_default_dir(
    args: &[String],
    env: &dyn Fn(&str) -> Option<String>,
    default_config_dir: &Path,
) -> Result<Action, ConfigError> {
    let cli = CliArgs::parse_args_default(args).map_err(|e| ConfigError::Usage(e.to_string()))?;
    if cli.help {
        return Ok(Action::Help(help_text()));
    }
    if cli.version {
        return Ok(Action::Version(version_text()));
    }
    if let Some(path) = &cli.export_default_settings {
        return Ok(Action::ExportSettings(PathBuf::from(path)));
    }

    let mut layers: Vec<Vec<(Opt, Given)>> = Vec::new();
    layers.push(
        cli.values()
            .into_iter()
            .map(|(opt, value)| {
                let origin = Origin::CommandLine;
                (opt, Given { value, origin })
            })
            .collect(),
    );
    let config_path = cli.config.as_ref().map(PathBuf::from);
    if let Some(path) = &config_path {
        let entries = file::read(path).map_err(|issue| ConfigError::ConfigFile {
            path: path.clone(),
            line: issue.line,
            reason: issue.reason,
        })?;
        layers.push(
            entries
                .into_iter()
                .map(|e| {
                    let origin = Origin::ConfigFile(path.clone(), e.line);
                    (
                        e.opt,
                        Given {
                            value: e.value,
                            origin,
                        },
                    )
                })
                .collect(),
        );
    }
    layers.push(
        ENV_VARS
            .iter()
            .filter_map(|&(var, opt)| {
                let value = env(var).filter(|v| !v.is_empty())?;
                let origin = Origin::Environment(var);
                Some((opt, Given { value, origin }))
            })
            .collect(),
    );
    let given = merge(layers)?;
    let mut warnings = Vec::new();
    let config = build(&given, default_config_dir, &mut warnings)?;

    let verbosity = match given.get(&Opt::Verbose) {
        None => DEFAULT_VERBOSITY,
        Some(g) => g
            .value
            .trim()
            .parse::<u8>()
            .map_err(|_| ConfigError::InvalidValue {
                opt: Opt::Verbose,
                origin: g.origin.clone(),
                value: g.value.clone(),
                expected: "a number 0-255 (0 off, 1 fatal, 2 error, 3 warning, 4 info, 5 debug, \
                       6+ trace)"
                    .to_string(),
            })?,
    };
    if let Some(path) = &config_path {
        let holds_token = matches!(
            given.get(&Opt::AccessToken),
            Some(Given {
                origin: Origin::ConfigFile(..),
                ..
            })
        );
        if holds_token && file::readable_by_others(path) {
            warnings.push(format!(
                "config file {} holds the access token and other users can read it; \
                 restrict it (chmod 600 {})",
                path.display(),
                path.display()
            ));
        }
    }
    Ok(Action::Run(
        Box::new(config),
        RunNotes {
            verbosity,
            warnings,
        },
    ))
}

/// Merges the sources, first one first: a key keeps its value from the first
/// source that gives it, except `-r`/`-e`, which count as one choice (the
/// first source giving either decides; giving both there is an error).
fn merge(layers: Vec<Vec<(Opt, Given)>>) -> Result<BTreeMap<Opt, Given>, ConfigError> {
    let mut merged: BTreeMap<Opt, Given> = BTreeMap::new();
    for layer in layers {
        let endpoint_decided =
            merged.contains_key(&Opt::Region) || merged.contains_key(&Opt::ProxyEndpoint);
        let has = |o: Opt| layer.iter().find(|(opt, _)| *opt == o);
        if !endpoint_decided {
            if let (Some((_, r)), Some(_)) = (has(Opt::Region), has(Opt::ProxyEndpoint)) {
                return Err(ConfigError::RegionAndEndpoint {
                    origin: match &r.origin {
                        // Name the file, not one line of it.
                        Origin::ConfigFile(p, _) => Origin::ConfigFile(p.clone(), 0),
                        o => o.clone(),
                    },
                });
            }
        }
        for (opt, g) in layer {
            if endpoint_decided && matches!(opt, Opt::Region | Opt::ProxyEndpoint) {
                continue;
            }
            merged.entry(opt).or_insert(g);
        }
    }
    Ok(merged)
}

fn invalid(opt: Opt, g: &Given, expected: &str) -> ConfigError {
    ConfigError::InvalidValue {
        opt,
        origin: g.origin.clone(),
        value: g.value.clone(),
        expected: expected.to_string(),
    }
}

fn bad_token(opt: Opt, g: &Given, reason: String) -> ConfigError {
    ConfigError::InvalidToken {
        opt,
        origin: g.origin.clone(),
        reason,
    }
}

fn build(
    given: &BTreeMap<Opt, Given>,
    default_config_dir: &Path,
    warnings: &mut Vec<String>,
) -> Result<Config, ConfigError> {
    let get = |o: Opt| given.get(&o);

    // Tokens: checked without ever echoing them.
    let token = get(Opt::AccessToken).ok_or(ConfigError::MissingAccessToken)?;
    if token.value.is_empty() {
        return Err(bad_token(Opt::AccessToken, token, "is empty".into()));
    }
    if !token.value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad_token(
            Opt::AccessToken,
            token,
            "holds white space or characters that cannot be sent in an HTTP header".into(),
        ));
    }
    if token.origin == Origin::CommandLine {
        warnings.push(format!(
            "the access token was given with {} on the command line, where other users of \
             this machine can see it (process list, shell history): set \
             AWSIOT_TUNNEL_ACCESS_TOKEN or use a --config file instead",
            Opt::AccessToken
        ));
    }
    let access_token = Secret::new(token.value.clone());
    let client_token = match get(Opt::ClientToken) {
        None => None,
        Some(g) => {
            if !protocol::is_valid_client_token(&g.value) {
                let n = g.value.chars().count();
                let why = if (protocol::CLIENT_TOKEN_MIN_LEN..=protocol::CLIENT_TOKEN_MAX_LEN)
                    .contains(&n)
                {
                    "holds characters other than letters, digits and '-'".to_string()
                } else {
                    format!(
                        "is {n} characters long, not {}-{}",
                        protocol::CLIENT_TOKEN_MIN_LEN,
                        protocol::CLIENT_TOKEN_MAX_LEN
                    )
                };
                return Err(bad_token(
                    Opt::ClientToken,
                    g,
                    format!("does not match ^[a-zA-Z0-9-]{{32,128}}$: it {why}"),
                ));
            }
            Some(Secret::new(g.value.clone()))
        }
    };

    let endpoint = endpoint(get(Opt::Region), get(Opt::ProxyEndpoint))?;

    // Mode: -m, or implied by -s / -d.
    let source = get(Opt::SourceListenPort);
    let destination = get(Opt::DestinationApp);
    if let (Some(s), Some(d)) = (source, destination) {
        return Err(ConfigError::SourceAndDestination {
            source: s.origin.clone(),
            destination: d.origin.clone(),
        });
    }
    let explicit_mode = match get(Opt::Mode) {
        None => None,
        Some(g) => Some((
            match g.value.trim().to_ascii_lowercase().as_str() {
                "src" | "source" => Mode::Source,
                "dst" | "destination" => Mode::Destination,
                _ => return Err(invalid(Opt::Mode, g, "src, source, dst or destination")),
            },
            g,
        )),
    };
    let implied = match (source, destination) {
        (Some(s), _) => Some((Mode::Source, Opt::SourceListenPort, s)),
        (_, Some(d)) => Some((Mode::Destination, Opt::DestinationApp, d)),
        _ => None,
    };
    let mode = match (explicit_mode, implied) {
        (Some((m, mg)), Some((i, opt, ig))) if m != i => {
            return Err(ConfigError::ModeConflict {
                mode: m,
                mode_origin: mg.origin.clone(),
                opt,
                origin: ig.origin.clone(),
            })
        }
        (Some((m, _)), _) | (None, Some((m, _, _))) => m,
        (None, None) => return Err(ConfigError::MissingMode),
    };

    // Services: -s/-d, else --config-dir, else ./config when it exists.
    let located: Vec<Located> = match implied {
        Some((_, opt, g)) => {
            if let Some(dir) = get(Opt::ConfigDir) {
                warnings.push(format!(
                    "{} {} is ignored: {opt} gives the service mappings",
                    Opt::ConfigDir,
                    dir.value
                ));
            }
            let location = format!("{opt} ({})", g.origin);
            mapping::parse_mappings(&g.value, mode)
                .map_err(|issue| ConfigError::InvalidMapping {
                    location: location.clone(),
                    item: issue.item,
                    reason: issue.reason,
                })?
                .into_iter()
                .map(|mapping| Located {
                    mapping,
                    location: location.clone(),
                })
                .collect()
        }
        None => match get(Opt::ConfigDir) {
            Some(g) => read_dir(Path::new(&g.value), mode)?,
            None if default_config_dir.is_dir() => read_dir(default_config_dir, mode)?,
            None => Vec::new(),
        },
    };
    if let Some((id, first, second)) = mapping::find_duplicate(&located) {
        return Err(ConfigError::DuplicateService { id, first, second });
    }
    let services = located.into_iter().map(|l| l.mapping).collect();

    let peer_version = match get(Opt::DestinationClientType) {
        None => PeerVersion::V3,
        Some(g) => {
            let v = match g.value.trim().to_ascii_uppercase().as_str() {
                "V1" => PeerVersion::V1,
                "V2" => PeerVersion::V2,
                "V3" => PeerVersion::V3,
                _ => return Err(invalid(Opt::DestinationClientType, g, "V1 or V2")),
            };
            if mode == Mode::Destination {
                warnings.push(format!(
                    "{} is for the source only; ignored in destination mode (a destination \
                     answers each peer in its own protocol version)",
                    Opt::DestinationClientType
                ));
                PeerVersion::V3
            } else {
                v
            }
        }
    };

    let bind_address = match get(Opt::LocalBindAddress) {
        None => None,
        Some(g) => {
            let v = g.value.trim();
            let v = v
                .strip_prefix('[')
                .and_then(|v| v.strip_suffix(']'))
                .unwrap_or(v);
            if v.is_empty() || v.chars().any(|c| c.is_whitespace() || c == '/') {
                return Err(invalid(
                    Opt::LocalBindAddress,
                    g,
                    "a host name or IP address",
                ));
            }
            Some(v.to_string())
        }
    };

    let capath = match get(Opt::Capath) {
        None => None,
        Some(g) => {
            let p = PathBuf::from(&g.value);
            if !p.is_dir() {
                return Err(invalid(
                    Opt::Capath,
                    g,
                    "an existing directory of CA certificates",
                ));
            }
            Some(p)
        }
    };

    let no_ssl_host_verify = match get(Opt::NoSslHostVerify) {
        None => false,
        Some(g) => match g.value.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" => false,
            _ => return Err(invalid(Opt::NoSslHostVerify, g, "true or false")),
        },
    };
    if no_ssl_host_verify {
        warnings.push(format!(
            "{}: the service's certificate is NOT verified; anyone on the path can read \
             the tunnel. Use this for tests only",
            Opt::NoSslHostVerify
        ));
    }

    let mut settings = Settings::default();
    if let Some(g) = get(Opt::SettingsJson) {
        let path = PathBuf::from(&g.value);
        let text = fs::read_to_string(&path).map_err(|e| ConfigError::SettingsFile {
            path: path.clone(),
            key: None,
            reason: e.to_string(),
        })?;
        let unknown = settings::apply_json(&mut settings, &text).map_err(|issue| {
            ConfigError::SettingsFile {
                path: path.clone(),
                key: issue.key,
                reason: issue.reason,
            }
        })?;
        for w in unknown {
            warnings.push(format!(
                "{} file {}: {w}",
                Opt::SettingsJson,
                path.display()
            ));
        }
    }

    Ok(Config {
        access_token,
        client_token,
        endpoint,
        mode,
        services,
        bind_address,
        capath,
        no_ssl_host_verify,
        peer_version,
        settings,
    })
}

fn endpoint(region: Option<&Given>, endpoint: Option<&Given>) -> Result<Endpoint, ConfigError> {
    match (region, endpoint) {
        (Some(g), None) => {
            let r = g.value.trim();
            let ok = !r.is_empty()
                && r.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !ok {
                return Err(invalid(
                    Opt::Region,
                    g,
                    "a region name such as us-east-1 (lower-case letters, digits, '-')",
                ));
            }
            Ok(Endpoint {
                host: protocol::endpoint_host_for_region(r),
                port: protocol::DEFAULT_ENDPOINT_PORT,
            })
        }
        (None, Some(g)) => {
            let text = g.value.trim();
            let text = text
                .strip_prefix("wss://")
                .or_else(|| text.strip_prefix("https://"))
                .unwrap_or(text);
            let text = text.strip_suffix('/').unwrap_or(text);
            let (host, port) =
                mapping::parse_host_port(text, Some(protocol::DEFAULT_ENDPOINT_PORT)).map_err(
                    |reason| invalid(Opt::ProxyEndpoint, g, &format!("HOST[:PORT] ({reason})")),
                )?;
            Ok(Endpoint { host, port })
        }
        (None, None) => Err(ConfigError::MissingEndpoint),
        // `merge` keeps only one of the two.
        (Some(g), Some(_)) => Err(ConfigError::RegionAndEndpoint {
            origin: g.origin.clone(),
        }),
    }
}

fn read_dir(dir: &Path, mode: Mode) -> Result<Vec<Located>, ConfigError> {
    mapping::read_config_dir(dir, mode).map_err(|issue| match issue {
        DirIssue::Unreadable { path, reason } => ConfigError::ConfigDir {
            reason: if path == dir {
                reason
            } else {
                format!("{}: {reason}", path.display())
            },
            path: dir.to_path_buf(),
        },
        DirIssue::BadLine { path, line, issue } => ConfigError::InvalidMapping {
            location: format!("{} file {}, line {line}", Opt::ConfigDir, path.display()),
            item: issue.item,
            reason: issue.reason,
        },
    })
}

/// Writes the default settings JSON to `path` (`--export-default-settings`).
pub fn write_default_settings(path: &Path) -> Result<(), ConfigError> {
    fs::write(path, settings::export_json(&Settings::default())).map_err(|e| {
        ConfigError::ExportSettings {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }
    })
}
