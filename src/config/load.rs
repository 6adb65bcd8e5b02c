//! From arguments and environment to an [`Action`]: merge the command line, the
//! `--config` file and the environment (in that precedence), then validate in
//! the reference's order, so that the first problem reported is the one the
//! reference reports.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

use super::cli::{help_text, parse_args, version_text};
use super::error::ConfigError;
use super::mapping::{self, DirIssue, Located};
use super::opt::{Opt, Origin};
use super::{file, settings, token_file};
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

/// Longest access token accepted (the reference's limit).
const MAX_ACCESS_TOKEN_LENGTH: usize = 4096;

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
    /// `--settings-json`, for the reference's "Using settings specified in
    /// file" line.
    pub settings_file: Option<PathBuf>,
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

/// Checks that every environment variable the proxy reads ([`ENV_VARS`],
/// and the web proxy's) is UTF-8 when set: one that is not would otherwise
/// count as unset (a web proxy bypassed without a word, a token "missing").
pub fn check_env(get: &dyn Fn(&str) -> Option<OsString>) -> Result<(), ConfigError> {
    let names = ENV_VARS
        .iter()
        .map(|(name, _)| *name)
        .chain(crate::transport::PROXY_ENV_VARS);
    for name in names {
        if get(name).is_some_and(|v| v.to_str().is_none()) {
            return Err(ConfigError::EnvNotUtf8 { name });
        }
    }
    Ok(())
}

/// Parses `args` (the arguments after the program name) with `env` as the
/// environment, reading `./config` as the default `--config-dir`.
pub fn parse(args: &[String], env: &dyn Fn(&str) -> Option<String>) -> Result<Action, ConfigError> {
    parse_with_default_dir(args, env, Path::new(DEFAULT_CONFIG_DIR))
}

/// Adds `(opt, given)` to `layer`; a repeated `-s`/`-d` adds its mappings to
/// the first one's.
fn push(layer: &mut Vec<(Opt, Given)>, opt: Opt, given: Given) {
    match layer.iter_mut().find(|(o, _)| *o == opt) {
        Some((_, first)) if opt.is_repeatable() => {
            first.value.push(',');
            first.value.push_str(&given.value);
        }
        Some(_) => {}
        None => layer.push((opt, given)),
    }
}

/// [`parse`] with another default `--config-dir` (used when it exists and
/// neither `-s`, `-d` nor `--config-dir` gives the mappings).
pub fn parse_with_default_dir(
    args: &[String],
    env: &dyn Fn(&str) -> Option<String>,
    default_config_dir: &Path,
) -> Result<Action, ConfigError> {
    let cli = parse_args(args).map_err(ConfigError::Usage)?;
    if cli.has(Opt::Version) {
        return Ok(Action::Version(version_text()));
    }
    if cli.has(Opt::Help) {
        return Ok(Action::Help(help_text()));
    }
    if let Some(path) = cli.value(Opt::ExportDefaultSettings) {
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
    let config_path = cli.value(Opt::Config).map(PathBuf::from);
    if let Some(path) = &config_path {
        let entries = file::read(path).map_err(|issue| ConfigError::ConfigFile {
            path: path.clone(),
            line: issue.line,
            reason: issue.reason,
            reference: issue.reference,
            source: issue.source,
        })?;
        let mut layer = Vec::new();
        for e in entries {
            let origin = Origin::ConfigFile(path.clone(), e.line);
            let value = e.value;
            push(&mut layer, e.opt, Given { value, origin });
        }
        layers.push(layer);
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
    let verbosity = match given.get(&Opt::Verbose) {
        None => DEFAULT_VERBOSITY,
        // The reference takes 0-65535 (6 and above: trace).
        Some(g) => match g.value.trim().parse::<u16>() {
            Ok(v) => u8::try_from(v).unwrap_or(u8::MAX),
            Err(_) => {
                return Err(invalid(
                    Opt::Verbose,
                    g,
                    "a number 0-255 (0 off, 1 fatal, 2 error, 3 warning, 4 info, 5 debug, \
                     6+ trace)",
                    Some(boost_invalid(Opt::Verbose, g)),
                ))
            }
        },
    };
    let config = build(&given, default_config_dir, &mut warnings)?;

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
            settings_file: given
                .get(&Opt::SettingsJson)
                .map(|g| PathBuf::from(&g.value)),
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

fn invalid(opt: Opt, g: &Given, expected: &str, reference: Option<String>) -> ConfigError {
    ConfigError::InvalidValue {
        opt,
        origin: g.origin.clone(),
        value: g.value.clone(),
        expected: expected.to_string(),
        reference,
    }
}

/// The reference's parser message for a value it cannot convert.
fn boost_invalid(opt: Opt, g: &Given) -> String {
    format!(
        "the argument ('{}') for option '{}' is invalid",
        g.value,
        opt.boost_name(&g.origin)
    )
}

fn bad_token(opt: Opt, g: &Given, reason: String, reference: Option<&'static str>) -> ConfigError {
    ConfigError::InvalidToken {
        opt,
        origin: g.origin.clone(),
        reason,
        reference,
    }
}

/// Checks the access token without ever echoing it.
fn access_token(g: &Given) -> Result<Secret, ConfigError> {
    // Spaces around it (a copy and paste) are not part of it: an HTTP
    // header value loses them anyway, and the reference sends it so.
    let t = &g.value.trim_matches(' ').to_string();
    let fail =
        |reason: &str, reference| Err(bad_token(Opt::AccessToken, g, reason.into(), reference));
    if t.is_empty() {
        return fail("is empty", Some("Access token cannot be empty"));
    }
    if t.len() > MAX_ACCESS_TOKEN_LENGTH {
        return fail(
            &format!("is longer than {MAX_ACCESS_TOKEN_LENGTH} characters"),
            Some("Access token exceeds maximum allowed length"),
        );
    }
    if t.bytes().any(|b| !(0x20..0x7f).contains(&b)) {
        return fail(
            "holds control or non-ASCII characters, which cannot be sent in an HTTP header",
            Some("Access token contains invalid control characters"),
        );
    }
    if t.contains(' ') {
        return fail(
            "holds white space inside it, which no access token has (check what was pasted)",
            None,
        );
    }
    Ok(Secret::new(t.clone()))
}

/// Checks a client token given with `-i` or the environment.
fn client_token(g: &Given) -> Result<Secret, ConfigError> {
    let t = &g.value;
    if let Err(why) = token_file::check_token(t) {
        let n = t.chars().count();
        let reference =
            if !(protocol::CLIENT_TOKEN_MIN_LEN..=protocol::CLIENT_TOKEN_MAX_LEN).contains(&n) {
                Some("Client token must be between 32 and 128 characters")
            } else if t.bytes().any(|b| b < 0x20 || b == 0x7f) {
                Some("Client token contains invalid control characters")
            } else {
                None
            };
        return Err(bad_token(
            Opt::ClientToken,
            g,
            format!("does not match ^[a-zA-Z0-9-]{{32,128}}$: {why}"),
            reference,
        ));
    }
    Ok(Secret::new(t.clone()))
}

/// Reads `--settings-json` over the defaults.
fn settings(g: Option<&Given>, warnings: &mut Vec<String>) -> Result<Settings, ConfigError> {
    let mut settings = Settings::default();
    let Some(g) = g else {
        return Ok(settings);
    };
    let path = PathBuf::from(&g.value);
    let text = file::read_text(&path).map_err(|e| ConfigError::SettingsFile {
        path: path.clone(),
        key: None,
        reason: "cannot be read".into(),
        source: Some(e),
    })?;
    let unknown =
        settings::apply_json(&mut settings, &text).map_err(|issue| ConfigError::SettingsFile {
            path: path.clone(),
            key: issue.key,
            reason: issue.reason,
            source: None,
        })?;
    for w in unknown {
        warnings.push(format!(
            "{} file {}: {w}",
            Opt::SettingsJson,
            path.display()
        ));
    }
    Ok(settings)
}

fn build(
    given: &BTreeMap<Opt, Given>,
    default_config_dir: &Path,
    warnings: &mut Vec<String>,
) -> Result<Config, ConfigError> {
    let get = |o: Opt| given.get(&o);

    // The reference's order: settings file, required options, -r/-e, tokens,
    // region and endpoint values, mode, mappings, bind address, capath.
    let settings = settings(get(Opt::SettingsJson), warnings)?;
    let token = get(Opt::AccessToken).ok_or(ConfigError::MissingAccessToken)?;
    let (region, proxy_endpoint) = (get(Opt::Region), get(Opt::ProxyEndpoint));
    if region.is_none() && proxy_endpoint.is_none() {
        return Err(ConfigError::MissingEndpoint);
    }
    let access_token = access_token(token)?;
    if token.origin == Origin::CommandLine {
        warnings.push(format!(
            "the access token was given with {} on the command line, where other users of \
             this machine can see it (process list, shell history): set \
             AWSIOT_TUNNEL_ACCESS_TOKEN or use a --config file instead",
            Opt::AccessToken
        ));
    }
    let client_token_given = match (get(Opt::ClientToken), get(Opt::ClientTokenFile)) {
        (Some(t), Some(f)) => {
            return Err(ConfigError::ClientTokenTwice {
                token: t.origin.clone(),
                file: f.origin.clone(),
            })
        }
        (Some(g), None) => Some(client_token(g)?),
        _ => None,
    };
    let endpoint = endpoint(region, proxy_endpoint, &settings)?;

    // Mode: -m, or implied by -s / -d.
    let explicit_mode = match get(Opt::Mode) {
        None => None,
        Some(g) => Some((
            match g.value.trim().to_ascii_lowercase().as_str() {
                "src" | "source" => Mode::Source,
                "dst" | "destination" => Mode::Destination,
                _ => {
                    return Err(invalid(
                        Opt::Mode,
                        g,
                        "src, source, dst or destination",
                        Some(
                            "Mode value is wrong! Allowed values are: src, dst, source, \
                             destination"
                                .into(),
                        ),
                    ))
                }
            },
            g,
        )),
    };
    let peer_version = match get(Opt::DestinationClientType) {
        None => None,
        Some(g) => Some((
            match g.value.trim().to_ascii_uppercase().as_str() {
                "V1" => PeerVersion::V1,
                "V2" => PeerVersion::V2,
                "V3" => PeerVersion::V3,
                _ => return Err(invalid(Opt::DestinationClientType, g, "V1 or V2", None)),
            },
            g,
        )),
    };
    let source = get(Opt::SourceListenPort);
    let destination = get(Opt::DestinationApp);
    if let (Some(s), Some(d)) = (source, destination) {
        return Err(ConfigError::SourceAndDestination {
            source: s.origin.clone(),
            destination: d.origin.clone(),
        });
    }
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
    let explicit_y = peer_version;
    let peer_version = match peer_version {
        None => PeerVersion::V3,
        Some(_) if mode == Mode::Destination => {
            warnings.push(format!(
                "{} is for the source only; ignored in destination mode (a destination \
                 answers each peer in its own protocol version)",
                Opt::DestinationClientType
            ));
            PeerVersion::V3
        }
        Some((v, _)) => v,
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
                    reference: issue.reference,
                })?
                .into_iter()
                .map(|mapping| Located {
                    mapping,
                    location: location.clone(),
                })
                .collect()
        }
        None => match get(Opt::ConfigDir) {
            Some(g) => read_dir(Path::new(&g.value), mode, warnings)?,
            None if default_config_dir.is_dir() => read_dir(default_config_dir, mode, warnings)?,
            None => Vec::new(),
        },
    };
    let services_from_dir = implied.is_none() && !located.is_empty();
    if let Some((id, first, second)) = mapping::find_duplicate(&located) {
        return Err(ConfigError::DuplicateService { id, first, second });
    }
    // With -s only: a mapping directory is looked up for the tunnel's
    // services only (checked when they are known).
    if let (PeerVersion::V1, Some((_, g)), true, [_, _, ..]) =
        (peer_version, &explicit_y, implied.is_some(), &located[..])
    {
        return Err(ConfigError::V1WithServices {
            origin: g.origin.clone(),
            services: located
                .iter()
                .map(|l| l.mapping.id.clone().unwrap_or_default())
                .collect(),
        });
    }
    let services = located.into_iter().map(|l| l.mapping).collect();

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
                    (!v.is_empty()).then(|| "Bind address contains invalid characters".to_string()),
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
                    g.value
                        .is_empty()
                        .then(|| "Path cannot be empty".to_string()),
                ));
            }
            Some(p)
        }
    };

    let no_ssl_host_verify = match get(Opt::NoSslHostVerify) {
        None => false,
        Some(g) => match g.value.trim().to_ascii_lowercase().as_str() {
            // An empty value is true, as boost's bool parser reads it
            // (`no-ssl-host-verify =` in a config file).
            "" | "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" => false,
            _ => {
                return Err(invalid(
                    Opt::NoSslHostVerify,
                    g,
                    "true or false",
                    Some(format!(
                        "{}. Valid choices are 'on|off', 'yes|no', '1|0' and 'true|false'",
                        boost_invalid(Opt::NoSslHostVerify, g)
                    )),
                ))
            }
        },
    };
    // The warning for -k is logged by the session at every connect.

    // Last, once everything else is valid: it may create the file.
    let client_token = match (client_token_given, get(Opt::ClientTokenFile)) {
        (Some(t), _) => Some(t),
        (None, Some(g)) => Some(
            token_file::load_or_create(Path::new(&g.value))
                .map_err(ConfigError::ClientTokenFile)?,
        ),
        (None, None) => None,
    };

    Ok(Config {
        access_token,
        client_token,
        endpoint,
        mode,
        services,
        services_from_dir,
        bind_address,
        capath,
        no_ssl_host_verify,
        peer_version,
        settings,
    })
}

/// The service endpoint from `-r` (through the settings' region table) or `-e`.
fn endpoint(
    region: Option<&Given>,
    endpoint: Option<&Given>,
    settings: &Settings,
) -> Result<Endpoint, ConfigError> {
    match (region, endpoint) {
        (Some(g), None) => {
            let r = g.value.trim();
            if let Err(why) = settings::check_region(r) {
                let reference = if r.is_empty() {
                    "Region cannot be empty"
                } else if r.len() > 64 {
                    "Region exceeds maximum allowed length"
                } else {
                    "Region must contain only lowercase letters, numbers, and hyphens"
                };
                return Err(invalid(
                    Opt::Region,
                    g,
                    &format!("a region name such as us-east-1 ({why})"),
                    Some(reference.into()),
                ));
            }
            let (host, port) = settings.endpoint_for_region(r).map_err(|why| {
                invalid(
                    Opt::Region,
                    g,
                    &format!("a region whose endpoint setting is HOST[:PORT] ({why})"),
                    None,
                )
            })?;
            Ok(Endpoint { host, port })
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
                    |reason| {
                        let reference = if g.value.trim().is_empty() {
                            "Proxy endpoint cannot be empty".to_string()
                        } else if g
                            .value
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"._:[]-".contains(&b))
                        {
                            format!("Invalid endpoint specified: {}", g.value)
                        } else {
                            "Proxy endpoint contains invalid characters".to_string()
                        };
                        invalid(
                            Opt::ProxyEndpoint,
                            g,
                            &format!("HOST[:PORT] ({reason})"),
                            Some(reference),
                        )
                    },
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

/// The mappings of a `--config-dir`; what it skipped becomes warnings,
/// in the reference's words first.
fn read_dir(
    dir: &Path,
    mode: Mode,
    warnings: &mut Vec<String>,
) -> Result<Vec<Located>, ConfigError> {
    let read = mapping::read_config_dir(dir, mode).map_err(|issue| match issue {
        DirIssue::Unreadable {
            path,
            reason,
            source,
        } => ConfigError::ConfigDir {
            reason: if path == dir {
                reason
            } else {
                format!("{}: {reason}", path.display())
            },
            path: dir.to_path_buf(),
            source,
        },
    })?;
    for skipped in read.skipped {
        warnings.push(format!(
            "Fail to parse part of {} {}: {skipped}",
            Opt::ConfigDir,
            dir.display()
        ));
    }
    Ok(read.found)
}

/// Writes the default settings JSON to `path` (`--export-default-settings`).
pub fn write_default_settings(path: &Path) -> Result<(), ConfigError> {
    fs::write(path, settings::export_json(&Settings::default())).map_err(|source| {
        ConfigError::ExportSettings {
            path: path.to_path_buf(),
            source,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DestinationAddr, ServiceMapping, Target};

    #[test]
    fn variables_that_are_not_utf8_are_refused_by_name() {
        use std::os::unix::ffi::OsStringExt;
        let bad = |want: &'static str| {
            move |name: &str| (name == want).then(|| OsString::from_vec(b"caf\xe9".to_vec()))
        };
        for name in ["AWSIOT_TUNNEL_ACCESS_TOKEN", "https_proxy", "NO_PROXY"] {
            match check_env(&bad(name)) {
                Err(ConfigError::EnvNotUtf8 { name: n }) => assert_eq!(n, name),
                other => panic!("{name}: {other:?}"),
            }
        }
        assert!(check_env(&bad("UNRELATED")).is_ok());
        assert!(check_env(&|_: &str| Some(OsString::from("ok"))).is_ok());
    }

    const TOKEN: &str = "AQGAAXhQSECRETtoken";
    const CLIENT: &str = "0123456789abcdef-0123456789abcdef";

    /// A scratch directory removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let dir = std::env::temp_dir().join(format!("lp-load-{}-{name}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }
        fn file(&self, name: &str, text: &str) -> String {
            let p = self.0.join(name);
            if let Some(parent) = p.parent() {
                fs::create_dir_all(parent).unwrap();
            }
            fs::write(&p, text).unwrap();
            p.to_string_lossy().into_owned()
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn parse_in(args: &[&str], env: &[(&str, &str)], dir: &Path) -> Result<Action, ConfigError> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = move |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        parse_with_default_dir(&args, &lookup, dir)
    }

    fn go(args: &[&str], env: &[(&str, &str)]) -> Result<Action, ConfigError> {
        parse_in(args, env, Path::new("/nonexistent/localproxy-test-config"))
    }

    fn run(args: &[&str], env: &[(&str, &str)]) -> (Config, RunNotes) {
        match go(args, env) {
            Ok(Action::Run(c, n)) => (*c, n),
            other => panic!("{other:?}"),
        }
    }

    fn fail(args: &[&str], env: &[(&str, &str)]) -> ConfigError {
        match go(args, env) {
            Err(e) => {
                let text = e.to_string();
                assert!(!text.contains("SECRET"), "token leaked: {text}");
                assert!(!text.contains(CLIENT), "client token leaked: {text}");
                e
            }
            other => panic!("expected an error, got {other:?}"),
        }
    }

    const ENV: [(&str, &str); 2] = [
        ("AWSIOT_TUNNEL_ACCESS_TOKEN", TOKEN),
        ("AWSIOT_TUNNEL_REGION", "us-east-1"),
    ];

    #[test]
    fn actions_come_before_validation() {
        assert!(matches!(go(&["-h"], &[]), Ok(Action::Help(t)) if t.contains("--config-dir")));
        assert!(matches!(
            go(&["-s", "0", "--help"], &[]),
            Ok(Action::Help(_))
        ));
        assert!(matches!(go(&["-V"], &[]), Ok(Action::Version(t)) if t.starts_with("localproxy ")));
        assert!(matches!(
            go(&["--export-default-settings", "out.json"], &[]),
            Ok(Action::ExportSettings(p)) if p == Path::new("out.json")
        ));
    }

    #[test]
    fn a_source_from_the_command_line() {
        let (c, n) = run(&["-t", TOKEN, "-r", "us-east-1", "-s", "5555"], &[]);
        assert_eq!(c.access_token.expose(), TOKEN);
        assert_eq!(c.mode, Mode::Source);
        assert_eq!(
            c.endpoint.host,
            "data.tunneling.iot.us-east-1.amazonaws.com"
        );
        assert_eq!(c.endpoint.port, 443);
        assert_eq!(
            c.services,
            [ServiceMapping {
                id: None,
                target: Target::Listen(5555)
            }]
        );
        assert_eq!(c.peer_version, PeerVersion::V3);
        assert_eq!(c.settings, Settings::default());
        assert!(c.client_token.is_none() && c.bind_address.is_none() && !c.no_ssl_host_verify);
        assert_eq!(n.verbosity, 4);
        assert_eq!(n.warnings.len(), 1);
        assert!(n.warnings[0].contains("AWSIOT_TUNNEL_ACCESS_TOKEN"));
        assert!(!n.warnings[0].contains("SECRET"));
    }

    #[test]
    fn a_destination_from_the_environment() {
        let (c, n) = run(
            &["-d", "SSH1=22,WEB=10.0.0.1:80,APP=/run/app.sock", "-v", "6"],
            &[
                ("AWSIOT_TUNNEL_ACCESS_TOKEN", TOKEN),
                ("AWSIOT_TUNNEL_CLIENT_TOKEN", CLIENT),
                ("AWSIOT_TUNNEL_ENDPOINT", "tunnel.example:8443"),
            ],
        );
        assert_eq!(c.mode, Mode::Destination);
        assert_eq!(c.client_token.as_ref().map(|s| s.expose()), Some(CLIENT));
        assert_eq!(
            c.endpoint,
            Endpoint {
                host: "tunnel.example".into(),
                port: 8443
            }
        );
        assert_eq!(c.services.len(), 3);
        assert_eq!(
            c.services[0].target,
            Target::Connect(DestinationAddr::Tcp {
                host: "localhost".into(),
                port: 22
            })
        );
        assert_eq!(n.verbosity, 6);
        assert!(n.warnings.is_empty(), "{:?}", n.warnings);
    }

    #[test]
    fn command_line_beats_config_file_beats_environment() {
        let dir = Scratch::new("precedence");
        let ini = dir.file(
            "c.ini",
            "access-token = FILEtoken\nclient-token = ffffffffffffffffffffffffffffffff\n\
             source-listen-port = 6000\nverbose = 5\nlocal-bind-address = ::1\n",
        );
        let env = [
            ("AWSIOT_TUNNEL_ACCESS_TOKEN", "ENVtoken"),
            ("AWSIOT_TUNNEL_CLIENT_TOKEN", CLIENT),
            ("AWSIOT_TUNNEL_REGION", "eu-west-1"),
        ];
        // File over environment.
        let (c, n) = run(&["--config", &ini], &env);
        assert_eq!(c.access_token.expose(), "FILEtoken");
        assert_eq!(c.client_token.unwrap().expose(), "f".repeat(32));
        assert_eq!(
            c.endpoint.host,
            "data.tunneling.iot.eu-west-1.amazonaws.com"
        );
        assert_eq!(c.services[0].target, Target::Listen(6000));
        assert_eq!(c.bind_address.as_deref(), Some("::1"));
        assert_eq!(n.verbosity, 5);
        // Command line over file.
        let (c, n) = run(
            &[
                "--config",
                &ini,
                "-t",
                "CLItoken",
                "-s",
                "7000",
                "-v",
                "3",
                "-b",
                "127.0.0.1",
            ],
            &env,
        );
        assert_eq!(c.access_token.expose(), "CLItoken");
        assert_eq!(c.services[0].target, Target::Listen(7000));
        assert_eq!(c.bind_address.as_deref(), Some("127.0.0.1"));
        assert_eq!(n.verbosity, 3);
        // Environment alone.
        let (c, _) = run(&["-m", "src"], &env);
        assert_eq!(c.access_token.expose(), "ENVtoken");
    }

    #[test]
    fn region_and_endpoint_are_one_choice_across_sources() {
        let (c, _) = run(&["-s", "1", "-e", "localhost:9000"], &ENV);
        assert_eq!(
            c.endpoint,
            Endpoint {
                host: "localhost".into(),
                port: 9000
            }
        );
        let dir = Scratch::new("endpoint");
        let ini = dir.file("c.ini", "proxy-endpoint = [::1]\n");
        let (c, _) = run(&["-s", "1", "--config", &ini], &ENV);
        assert_eq!(
            c.endpoint,
            Endpoint {
                host: "::1".into(),
                port: 443
            }
        );
        let (c, _) = run(&["-s", "1", "--config", &ini, "-r", "cn-north-1"], &ENV);
        assert_eq!(
            c.endpoint.host,
            "data.tunneling.iot.cn-north-1.amazonaws.com.cn"
        );

        let both = dir.file("both.ini", "region = us-east-1\nproxy-endpoint = h\n");
        let e = fail(&["-s", "1", "--config", &both], &ENV);
        assert!(matches!(e, ConfigError::RegionAndEndpoint { .. }));
        assert!(e.to_string().contains("both.ini"));
        let e = fail(&["-s", "1", "-r", "us-east-1", "-e", "h"], &ENV);
        assert!(e
            .to_string()
            .contains("-r/--region and -e/--proxy-endpoint"));
        let e = fail(
            &["-s", "1"],
            &[
                ("AWSIOT_TUNNEL_ACCESS_TOKEN", TOKEN),
                ("AWSIOT_TUNNEL_REGION", "us-east-1"),
                ("AWSIOT_TUNNEL_ENDPOINT", "h"),
            ],
        );
        assert!(e
            .to_string()
            .contains("environment variable AWSIOT_TUNNEL_REGION"));
        let e = fail(&["-s", "1", "-t", TOKEN], &[]);
        assert!(matches!(e, ConfigError::MissingEndpoint));
        let e = fail(&["-s", "1", "-t", TOKEN, "-e", "wss://h:99999"], &[]);
        assert!(e.to_string().contains("-e/--proxy-endpoint"));
        let e = fail(&["-s", "1", "-t", TOKEN, "-r", "us east"], &[]);
        assert!(e.to_string().contains("-r/--region"));
        let (c, _) = run(&["-s", "1", "-e", "wss://h.example/"], &ENV);
        assert_eq!(
            c.endpoint,
            Endpoint {
                host: "h.example".into(),
                port: 443
            }
        );
    }

    #[test]
    fn mode_errors() {
        assert!(matches!(fail(&[], &ENV), ConfigError::MissingMode));
        let e = fail(&["-s", "1", "-d", "2"], &ENV);
        assert!(e
            .to_string()
            .contains("-s/--source-listen-port (on the command line)"));
        assert!(e.to_string().contains("-d/--destination-app"));
        let e = fail(&["-m", "dst", "-s", "5555"], &ENV);
        assert!(matches!(e, ConfigError::ModeConflict { .. }));
        assert!(e.to_string().contains("-m/--mode destination"));
        let e = fail(&["-m", "destination", "-s", "5555"], &ENV);
        assert!(matches!(e, ConfigError::ModeConflict { .. }));
        let e = fail(&["-m", "sideways"], &ENV);
        assert!(e.to_string().contains("'sideways' for -m/--mode"));
        let (c, _) = run(&["-m", "source", "-s", "5555"], &ENV);
        assert_eq!(c.mode, Mode::Source);
        let (c, _) = run(&["-m", "dst"], &ENV);
        assert_eq!((c.mode, c.services.len()), (Mode::Destination, 0));
    }

    #[test]
    fn repeated_mappings_add_up_and_duplicates_are_refused() {
        let (c, _) = run(&["-d", "SSH1=22", "-d", "WEB=localhost:80"], &ENV);
        let ids: Vec<_> = c.services.iter().map(|s| s.id.clone()).collect();
        assert_eq!(ids, vec![Some("SSH1".to_string()), Some("WEB".to_string())]);
        let e = fail(&["-s", "SSH1=5555", "-s", "SSH1=6666"], &ENV);
        assert!(e.to_string().contains("SSH1"), "{e}");
    }

    #[test]
    fn mapping_errors() {
        let e = fail(&["-s", "0"], &ENV);
        assert!(e.to_string().contains("-s/--source-listen-port"), "{e}");
        assert!(e.to_string().contains("1-65535"));
        let e = fail(&["-d", "host:0"], &ENV);
        assert!(e.to_string().contains("-d/--destination-app"));
        let e = fail(&["-s", "A=1,A=2"], &ENV);
        assert!(matches!(e, ConfigError::DuplicateService { ref id, .. } if id == "A"));
    }

    #[test]
    fn peer_version_is_for_the_source() {
        let (c, _) = run(&["-s", "1", "-y", "V1"], &ENV);
        assert_eq!(c.peer_version, PeerVersion::V1);
        let (c, _) = run(&["-s", "1", "--destination-client-type", "v2"], &ENV);
        assert_eq!(c.peer_version, PeerVersion::V2);
        let (c, n) = run(&["-d", "22", "-y", "V1"], &ENV);
        assert_eq!(c.peer_version, PeerVersion::V3);
        assert!(n
            .warnings
            .iter()
            .any(|w| w.contains("-y/--destination-client-type")));
        let e = fail(&["-s", "1", "-y", "V4"], &ENV);
        assert!(e
            .to_string()
            .contains("'V4' for -y/--destination-client-type"));
    }

    #[test]
    fn token_errors_never_show_the_token() {
        assert!(matches!(
            fail(&["-s", "1", "-r", "us-east-1"], &[]),
            ConfigError::MissingAccessToken
        ));
        let e = fail(&["-s", "1", "-t", "SECRET with space"], &ENV);
        assert!(e.to_string().contains("-t/--access-token"));
        assert!(!e.to_string().contains("SECRET"));
        // Spaces around it are a copy and paste, not part of it.
        let (c, _) = run(&["-s", "1", "-t", " SECRET-pasted "], &ENV);
        assert_eq!(c.access_token.expose(), "SECRET-pasted");
        let e = fail(&["-s", "1", "-t", ""], &ENV);
        assert!(e.to_string().contains("is empty"));
        let e = fail(&["-s", "1", "-i", "SECRET-too-short"], &ENV);
        assert!(e.to_string().contains("-i/--client-token"));
        assert!(e.to_string().contains("16 characters long"));
        let bad = format!("{CLIENT}_");
        let e = fail(&["-s", "1", "-i", &bad], &ENV);
        assert!(e.to_string().contains("characters other than"));
    }

    #[test]
    fn verbosity_values() {
        let (_, n) = run(&["-s", "1", "-v", "0"], &ENV);
        assert_eq!(n.verbosity, 0);
        let (_, n) = run(&["-s", "1", "-v", "255"], &ENV);
        assert_eq!(n.verbosity, 255);
        // The reference takes any 16-bit number (6 and above: trace).
        let (_, n) = run(&["-s", "1", "-v", "65535"], &ENV);
        assert_eq!(n.verbosity, 255);
        for bad in ["65536", "-1", "loud"] {
            let e = fail(&["-s", "1", "-v", bad], &ENV);
            let text = e.to_string();
            assert!(text.contains("-v/--verbose"), "{e}");
            assert!(
                text.starts_with(&format!(
                    "the argument ('{bad}') for option '--verbose' is invalid\n"
                )),
                "{e}"
            );
        }
        // Named as the reference's parser names a config-file key.
        let dir = Scratch::new("verbose");
        let ini = dir.file("v.ini", "verbose = loud\n");
        let e = fail(&["-s", "1", "--config", &ini], &ENV);
        assert!(e
            .to_string()
            .starts_with("the argument ('loud') for option 'verbose' is invalid\n"));
    }

    #[test]
    fn parser_errors_name_the_option() {
        let e = fail(&["--bogus"], &ENV);
        assert!(e.to_string().contains("--bogus"));
        let e = fail(&["-s"], &ENV);
        assert!(e
            .to_string()
            .contains("the required argument for option '--source-listen-port' is missing"));
        let e = fail(&["stray"], &ENV);
        assert!(e.to_string().contains("stray"));
    }

    #[test]
    fn config_dir_explicit_default_and_ignored() {
        let dir = Scratch::new("cfgdir");
        dir.file("m/a.ini", "SSH1 = 5555\nSSH2 = 6666\n");
        let m = dir.0.join("m");
        let m_str = m.to_string_lossy().into_owned();
        let (c, _) = run(&["-m", "src", "--config-dir", &m_str], &ENV);
        assert_eq!(c.services.len(), 2);
        assert_eq!(c.services[1].id.as_deref(), Some("SSH2"));
        // Default directory: read when it exists and nothing else gives mappings.
        match parse_in(&["-m", "src"], &ENV, &m) {
            Ok(Action::Run(c, _)) => assert_eq!(c.services.len(), 2),
            other => panic!("{other:?}"),
        }
        match parse_in(&["-s", "9"], &ENV, &m) {
            Ok(Action::Run(c, _)) => assert_eq!(c.services.len(), 1),
            other => panic!("{other:?}"),
        }
        let (c, n) = run(&["-s", "9", "--config-dir", &m_str], &ENV);
        assert_eq!(c.services.len(), 1);
        assert!(n.warnings.iter().any(|w| w.contains("--config-dir")));
        // Destination reading the same file: ports become localhost addresses.
        let (c, _) = run(&["-m", "dst", "--config-dir", &m_str], &ENV);
        assert_eq!(
            c.services[0].target,
            Target::Connect(DestinationAddr::Tcp {
                host: "localhost".into(),
                port: 5555
            })
        );
        // Errors.
        let missing = dir.0.join("nope").to_string_lossy().into_owned();
        let e = fail(&["-m", "src", "--config-dir", &missing], &ENV);
        assert!(matches!(e, ConfigError::ConfigDir { .. }));
        assert!(e.to_string().starts_with(&format!(
            "Invalid configuration directory: {missing}\n--config-dir "
        )));
        dir.file("m/b.ini", "SSH1 = 7777\n");
        let e = fail(&["-m", "src", "--config-dir", &m_str], &ENV);
        assert!(matches!(e, ConfigError::DuplicateService { .. }));
        assert!(e.to_string().contains("a.ini, line 1") && e.to_string().contains("b.ini"));
        // As in the reference: 0 picks a port; what is not a mapping is
        // skipped with a warning naming the place, not refused.
        dir.file("m/b.ini", "SSH3 = 0\nSSH4 = x\n");
        let (c, n) = run(&["-m", "src", "--config-dir", &m_str], &ENV);
        assert!(c.services_from_dir);
        let ids: Vec<_> = c
            .services
            .iter()
            .map(|s| s.id.as_deref().unwrap())
            .collect();
        assert_eq!(ids, ["SSH1", "SSH2", "SSH3"]);
        assert_eq!(c.services[2].target, Target::Listen(0));
        assert!(
            n.warnings
                .iter()
                .any(|w| w.contains("--config-dir") && w.contains("b.ini, line 2: 'SSH4 = x'")),
            "{:?}",
            n.warnings
        );
    }

    #[test]
    fn config_file_errors() {
        let e = fail(&["--config", "/nonexistent/lp.ini"], &ENV);
        assert!(e.to_string().starts_with(
            "can not read options configuration file '/nonexistent/lp.ini'\n\
             --config file /nonexistent/lp.ini"
        ));
        assert!(std::error::Error::source(&e).is_some());
        let dir = Scratch::new("cfgfile");
        let ini = dir.file("bad.ini", "region = us-east-1\nsauce = yes\n");
        let e = fail(&["--config", &ini], &ENV);
        assert!(e.to_string().contains("line 2") && e.to_string().contains("'sauce'"));
        let ini = dir.file(
            "k.ini",
            "no-ssl-host-verify = true\nsource-listen-port = A=1,B=2\n",
        );
        let (c, _) = run(&["--config", &ini], &ENV);
        assert!(c.no_ssl_host_verify);
        assert_eq!(c.services.len(), 2);
        let ini = dir.file("k1.ini", "no-ssl-host-verify =\nsource-listen-port = A=1\n");
        let (c, _) = run(&["--config", &ini], &ENV);
        assert!(c.no_ssl_host_verify, "empty is true, as for boost");
        let ini = dir.file("k2.ini", "no-ssl-host-verify = maybe\n");
        let e = fail(&["-s", "1", "--config", &ini], &ENV);
        assert!(e.to_string().contains("-k/--no-ssl-host-verify"));
    }

    #[cfg(unix)]
    #[test]
    fn a_token_in_a_world_readable_config_file_is_a_warning() {
        use std::os::unix::fs::PermissionsExt;
        let dir = Scratch::new("perm");
        let ini = dir.file("t.ini", "access-token = SECRETfromfile\n");
        fs::set_permissions(&ini, fs::Permissions::from_mode(0o644)).unwrap();
        let (_, n) = run(&["-s", "1", "-r", "us-east-1", "--config", &ini], &[]);
        assert!(n.warnings.iter().any(|w| w.contains("chmod 600")));
        assert!(n.warnings.iter().all(|w| !w.contains("SECRET")));
        fs::set_permissions(&ini, fs::Permissions::from_mode(0o600)).unwrap();
        let (_, n) = run(&["-s", "1", "-r", "us-east-1", "--config", &ini], &[]);
        assert!(n.warnings.is_empty(), "{:?}", n.warnings);
    }

    #[test]
    fn settings_json_overrides_and_warns() {
        let dir = Scratch::new("settings");
        let json = dir.file(
            "s.json",
            r#"{"tunneling":{"proxy":{"tcp":{"connection_retry_count":"9"},"extra":"1"}}}"#,
        );
        let (c, n) = run(&["-s", "1", "--settings-json", &json], &ENV);
        assert_eq!(c.settings.tcp_connection_retry_count, 9);
        assert_eq!(c.settings.max_payload_size, 64_512);
        assert!(n
            .warnings
            .iter()
            .any(|w| w.contains("'tunneling.proxy.extra'")));
        let bad = dir.file(
            "b.json",
            r#"{"tunneling":{"proxy":{"tcp":{"read_buffer_size":"x"}}}}"#,
        );
        let e = fail(&["-s", "1", "--settings-json", &bad], &ENV);
        assert!(e
            .to_string()
            .contains("'tunneling.proxy.tcp.read_buffer_size'"));
        let e = fail(&["-s", "1", "--settings-json", "/nonexistent/s.json"], &ENV);
        assert!(e.to_string().starts_with("--settings-json file"));
    }

    #[test]
    fn bind_address_and_capath() {
        let (c, _) = run(&["-s", "1", "-b", "[::1]"], &ENV);
        assert_eq!(c.bind_address.as_deref(), Some("::1"));
        let e = fail(&["-s", "1", "-b", ""], &ENV);
        assert!(e.to_string().contains("-b/--local-bind-address"));
        let dir = Scratch::new("capath");
        let p = dir.0.to_string_lossy().into_owned();
        let (c, _) = run(&["-s", "1", "-c", &p], &ENV);
        assert_eq!(c.capath.as_deref(), Some(dir.0.as_path()));
        let e = fail(&["-s", "1", "-c", "/nonexistent/ca"], &ENV);
        assert!(e.to_string().contains("-c/--capath"));
    }

    #[test]
    fn export_then_import_round_trips() {
        let dir = Scratch::new("export");
        let path = dir.0.join("defaults.json");
        write_default_settings(&path).unwrap();
        let p = path.to_string_lossy().into_owned();
        let (c, n) = run(&["-s", "1", "--settings-json", &p], &ENV);
        assert_eq!(c.settings, Settings::default());
        assert!(n.warnings.is_empty());
        let e = write_default_settings(&dir.0.join("no/such/dir.json")).unwrap_err();
        assert!(e
            .to_string()
            .contains("\n--export-default-settings cannot write"));
        let bad = dir.0.join("no/such/dir.json");
        assert!(e
            .to_string()
            .starts_with(&format!("{}: cannot open file\n", bad.display())));
    }

    #[cfg(unix)]
    #[test]
    fn non_utf8_arguments_are_an_error() {
        use std::os::unix::ffi::OsStringExt;
        let args = vec![OsString::from("-s"), OsString::from_vec(vec![0xff, 0xfe])];
        assert!(matches!(
            args_from_os(args),
            Err(ConfigError::NotUtf8 { position: 2 })
        ));
        assert_eq!(
            args_from_os(vec![OsString::from("-h")]).unwrap(),
            vec!["-h".to_string()]
        );
    }

    #[test]
    fn a_user_added_region_override_routes_r() {
        let dir = Scratch::new("override");
        let json = dir.file(
            "s.json",
            r#"{"tunneling":{"proxy":{"region_endpoint_overrides":{"lab-east-1":"127.0.0.1:4443"}}}}"#,
        );
        let env = [("AWSIOT_TUNNEL_ACCESS_TOKEN", TOKEN)];
        let (c, _) = run(
            &["-s", "1", "-r", "lab-east-1", "--settings-json", &json],
            &env,
        );
        assert_eq!(
            c.endpoint,
            Endpoint {
                host: "127.0.0.1".into(),
                port: 4443
            }
        );
        // Other regions keep the defaults, the China ones included.
        let (c, _) = run(
            &["-s", "1", "-r", "cn-north-1", "--settings-json", &json],
            &env,
        );
        assert_eq!(
            c.endpoint.host,
            "data.tunneling.iot.cn-north-1.amazonaws.com.cn"
        );
        // An override of a China region wins over the default.
        let json = dir.file(
            "cn.json",
            r#"{"tunneling":{"proxy":{"region_endpoint_overrides":{"cn-north-1":"cn.example:9"}}}}"#,
        );
        let (c, _) = run(
            &["-s", "1", "-r", "cn-north-1", "--settings-json", &json],
            &env,
        );
        assert_eq!(
            (c.endpoint.host.as_str(), c.endpoint.port),
            ("cn.example", 9)
        );
    }

    #[test]
    fn the_reference_export_file_loads_through_settings_json() {
        let p = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/reference-settings.json"
        );
        let (c, n) = run(&["-s", "1", "--settings-json", p], &ENV);
        assert_eq!(c.settings, Settings::default());
        assert!(n.warnings.is_empty(), "{:?}", n.warnings);
    }

    #[test]
    fn errors_come_in_the_reference_order_with_its_words() {
        let first_line = |args: &[&str], env: &[(&str, &str)]| {
            fail(args, env)
                .to_string()
                .lines()
                .next()
                .unwrap()
                .to_string()
        };
        let token = [("AWSIOT_TUNNEL_ACCESS_TOKEN", TOKEN)];
        assert_eq!(
            first_line(&[], &[]),
            "the option '--access-token' is required but missing"
        );
        assert_eq!(
            first_line(&["-s", "5555"], &token),
            "Must specify one and only one of --region/-r or --proxy-endpoint/-e options"
        );
        assert_eq!(
            first_line(&["-r", "us-east-1"], &token),
            "Must specify one of --source-listen-port/-s or --destination-app/-d or --mode"
        );
        assert_eq!(
            first_line(
                &["-r", "us-east-1", "-s", "5555", "-d", "127.0.0.1:22"],
                &token
            ),
            "Must specify one and only one of --source-listen-port/-s or --destination-app/-d"
        );
        assert_eq!(
            first_line(
                &["-r", "us-east-1", "-m", "bogus", "-s", "1", "-d", "2"],
                &token
            ),
            "Mode value is wrong! Allowed values are: src, dst, source, destination"
        );
        assert_eq!(
            first_line(&["-r", "us-east-1", "-s", "5555", "-m", "dst"], &token),
            "-s and --mode have mismatched mode. Mode is set to destination!"
        );
        assert_eq!(
            first_line(&["-r", "us-east-1", "-d", "22", "-m", "src"], &token),
            "-s and --mode have mismatched mode. Mode is set to source!"
        );
        assert_eq!(
            first_line(&["-r", "US", "-s", "1"], &token),
            "Region must contain only lowercase letters, numbers, and hyphens"
        );
        assert_eq!(
            first_line(&["-e", "h:99999", "-s", "1"], &token),
            "Invalid endpoint specified: h:99999"
        );
        assert_eq!(
            first_line(&["-s", "1", "-t", "SECRET\u{1}x"], &ENV[1..]),
            "Access token contains invalid control characters"
        );
        assert_eq!(
            first_line(&["-s", "1", "-i", "SECRET"], &ENV),
            "Client token must be between 32 and 128 characters"
        );
        assert_eq!(
            first_line(&["-s", "0"], &ENV),
            "Port must be between 1 and 65535"
        );
        assert_eq!(
            first_line(&["-s", "1", "-b", "a b"], &ENV),
            "Bind address contains invalid characters"
        );
    }

    #[test]
    fn client_token_file_is_created_then_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = Scratch::new("ctf");
        let file = dir.0.join("client-token");
        let f = file.to_string_lossy().into_owned();
        let (c, n) = run(&["-d", "22", "--client-token-file", &f], &ENV);
        let token = c.client_token.expect("a client token");
        assert!(protocol::is_valid_client_token(token.expose()));
        assert!(n.warnings.iter().all(|w| !w.contains(token.expose())));
        let mode = fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // The same token after a restart, also from a --config file.
        let ini = dir.file("d.ini", &format!("client-token-file = {f}\n"));
        let (c, _) = run(&["-d", "22", "--config", &ini], &ENV);
        assert_eq!(c.client_token, Some(token));
        // Too open: refused, saying what to do.
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
        let e = fail(&["-d", "22", "--client-token-file", &f], &ENV);
        assert!(matches!(e, ConfigError::ClientTokenFile(_)));
        assert!(e.to_string().contains(&format!("chmod 600 {f}")), "{e}");
    }

    #[test]
    fn client_token_file_conflicts_with_a_client_token() {
        let dir = Scratch::new("ctf-conflict");
        let f = dir.0.join("t").to_string_lossy().into_owned();
        let e = fail(&["-d", "22", "-i", CLIENT, "--client-token-file", &f], &ENV);
        assert!(matches!(e, ConfigError::ClientTokenTwice { .. }));
        let mut env = ENV.to_vec();
        env.push(("AWSIOT_TUNNEL_CLIENT_TOKEN", CLIENT));
        let e = fail(&["-d", "22", "--client-token-file", &f], &env);
        assert!(e
            .to_string()
            .contains("environment variable AWSIOT_TUNNEL_CLIENT_TOKEN"));
        // Nothing was created, and neither when another option is wrong.
        let e = fail(&["-d", "22", "-b", "a b", "--client-token-file", &f], &ENV);
        assert!(matches!(e, ConfigError::InvalidValue { .. }));
        assert!(!Path::new(&f).exists());
    }
}
