//! Configuration errors. Each message starts, where the reference refuses the
//! same input, with the reference's own words (so a `grep -F` written for the
//! reference matches), then says in ours which option or file is at fault and
//! what to do. None of them carries a token value. The cause (an I/O or JSON
//! error) is kept as [`std::error::Error::source`], not repeated in the text.

use std::fmt;
use std::io;
use std::path::PathBuf;

use super::cli::UsageError;
use super::opt::{Opt, Origin};
use super::token_file::TokenFileError;
use super::Mode;

/// The line `main` prints after a configuration error (the reference's words).
pub const TRY_HELP: &str = "Try 'localproxy --help' for a list of options.";

/// Why the configuration cannot be used (exit status 1).
#[derive(Debug)]
pub enum ConfigError {
    /// The command line cannot be split into options.
    Usage(UsageError),
    /// An argument is not valid UTF-8 (its position, 1-based).
    NotUtf8 { position: usize },
    /// An environment variable the proxy reads is not valid UTF-8.
    EnvNotUtf8 { name: &'static str },
    /// A value that is not accepted (never used for tokens).
    InvalidValue {
        opt: Opt,
        origin: Origin,
        value: String,
        expected: String,
        /// The reference's message for this value, when it refuses it too.
        reference: Option<String>,
    },
    /// No access token from `-t`, the config file or the environment.
    MissingAccessToken,
    /// A token that cannot be used; `reason` does not contain the token.
    InvalidToken {
        opt: Opt,
        origin: Origin,
        reason: String,
        reference: Option<&'static str>,
    },
    /// A client token given both directly and by `--client-token-file`.
    ClientTokenTwice { token: Origin, file: Origin },
    /// The `--client-token-file` cannot be used.
    ClientTokenFile(TokenFileError),
    /// Both `-r` and `-e` in one source.
    RegionAndEndpoint { origin: Origin },
    /// Neither `-r` nor `-e`.
    MissingEndpoint,
    /// None of `-s`, `-d`, `-m`.
    MissingMode,
    /// `-s` and `-d` together.
    SourceAndDestination { source: Origin, destination: Origin },
    /// `-s` or `-d` contradicting `-m`.
    ModeConflict {
        mode: Mode,
        mode_origin: Origin,
        opt: Opt,
        origin: Origin,
    },
    /// An item of a mapping is not accepted; `location` says where it was written.
    InvalidMapping {
        location: String,
        item: String,
        reason: String,
        reference: Option<String>,
    },
    /// `-y V1` with several services: V1 messages carry no service id.
    V1WithServices {
        origin: Origin,
        services: Vec<String>,
    },
    /// The same service id twice.
    DuplicateService {
        id: String,
        first: String,
        second: String,
    },
    /// The `--config` file cannot be read or parsed (`line` 0: the whole file).
    ConfigFile {
        path: PathBuf,
        line: usize,
        reason: String,
        reference: Option<String>,
        source: Option<io::Error>,
    },
    /// The `--config-dir` directory (or a file below it) cannot be read.
    ConfigDir {
        path: PathBuf,
        reason: String,
        source: Option<io::Error>,
    },
    /// The `--settings-json` file cannot be read or holds a bad value.
    SettingsFile {
        path: PathBuf,
        key: Option<String>,
        reason: String,
        source: Option<io::Error>,
    },
    /// The `--export-default-settings` file cannot be written.
    ExportSettings { path: PathBuf, source: io::Error },
}

impl ConfigError {
    /// The process exit status for this error.
    pub fn exit_code(&self) -> u8 {
        1
    }

    /// The reference's message for the same refusal, when it has one.
    pub fn reference(&self) -> Option<String> {
        Some(match self {
            ConfigError::Usage(e) => e.to_string(),
            ConfigError::InvalidValue { reference, .. } => reference.clone()?,
            ConfigError::MissingAccessToken => {
                "the option '--access-token' is required but missing".into()
            }
            ConfigError::InvalidToken { reference, .. } => (*reference)?.into(),
            ConfigError::RegionAndEndpoint { .. } | ConfigError::MissingEndpoint => {
                "Must specify one and only one of --region/-r or --proxy-endpoint/-e options".into()
            }
            ConfigError::MissingMode => {
                "Must specify one of --source-listen-port/-s or --destination-app/-d or --mode"
                    .into()
            }
            ConfigError::SourceAndDestination { .. } => {
                "Must specify one and only one of --source-listen-port/-s or --destination-app/-d"
                    .into()
            }
            // The reference says "-s" for -d too.
            ConfigError::ModeConflict { mode, .. } => format!(
                "-s and --mode have mismatched mode. Mode is set to {}!",
                mode.as_query()
            ),
            ConfigError::InvalidMapping { reference, .. } => reference.clone()?,
            ConfigError::ConfigFile { reference, .. } => reference.clone()?,
            ConfigError::ConfigDir { path, .. } => {
                format!("Invalid configuration directory: {}", path.display())
            }
            ConfigError::ExportSettings { path, .. } => {
                format!("{}: cannot open file", path.display())
            }
            ConfigError::NotUtf8 { .. }
            | ConfigError::EnvNotUtf8 { .. }
            | ConfigError::ClientTokenTwice { .. }
            | ConfigError::ClientTokenFile(_)
            | ConfigError::DuplicateService { .. }
            | ConfigError::V1WithServices { .. }
            | ConfigError::SettingsFile { .. } => return None,
        })
    }

    /// Our explanation: the option or file at fault and what to do.
    fn explain(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Usage(e) => match e.hint() {
                Some(hint) => f.write_str(&hint),
                None => write!(f, "{e}"),
            },
            ConfigError::NotUtf8 { position } => {
                write!(f, "argument {position} is not valid UTF-8")
            }
            ConfigError::EnvNotUtf8 { name } => write!(
                f,
                "environment variable {name} is not valid UTF-8: set it in UTF-8 (in a URL, \
                 percent-encode other bytes: %E9), or unset it"
            ),
            ConfigError::InvalidValue {
                opt,
                origin,
                value,
                expected,
                ..
            } => write!(
                f,
                "invalid value '{value}' for {opt} {origin}: expected {expected}"
            ),
            ConfigError::MissingAccessToken => write!(
                f,
                "no access token: set AWSIOT_TUNNEL_ACCESS_TOKEN, 'access-token' in a --config \
                 file, or {}",
                Opt::AccessToken
            ),
            ConfigError::InvalidToken {
                opt,
                origin,
                reason,
                ..
            } => write!(f, "the value of {opt} {origin} {reason}"),
            ConfigError::ClientTokenTwice { token, file } => write!(
                f,
                "{} ({token}) and {} ({file}) both give the client token: use one (the file \
                 keeps a token across restarts)",
                Opt::ClientToken,
                Opt::ClientTokenFile
            ),
            ConfigError::ClientTokenFile(e) => write!(f, "{}: {e}", Opt::ClientTokenFile),
            ConfigError::RegionAndEndpoint { origin } => write!(
                f,
                "{} and {} are both given {origin}: give exactly one",
                Opt::Region,
                Opt::ProxyEndpoint
            ),
            ConfigError::MissingEndpoint => write!(
                f,
                "no service endpoint: give {} (or AWSIOT_TUNNEL_REGION) or {} (or \
                 AWSIOT_TUNNEL_ENDPOINT)",
                Opt::Region,
                Opt::ProxyEndpoint
            ),
            ConfigError::MissingMode => write!(
                f,
                "no mode: give {} (source), {} (destination) or {}",
                Opt::SourceListenPort,
                Opt::DestinationApp,
                Opt::Mode
            ),
            ConfigError::SourceAndDestination {
                source,
                destination,
            } => write!(
                f,
                "{} ({source}) and {} ({destination}) cannot be used together: a proxy is \
                 either the source or the destination",
                Opt::SourceListenPort,
                Opt::DestinationApp
            ),
            ConfigError::ModeConflict {
                mode,
                mode_origin,
                opt,
                origin,
            } => write!(
                f,
                "{} {} ({mode_origin}) contradicts {opt} ({origin})",
                Opt::Mode,
                mode.as_query()
            ),
            ConfigError::InvalidMapping {
                location,
                item,
                reason,
                ..
            } => write!(
                f,
                "invalid service mapping '{item}' in {location}: {reason}"
            ),
            ConfigError::V1WithServices { origin, services } => write!(
                f,
                "{} V1 {origin} with {} services ({}): V1 messages carry no service id, so \
                 a V1 destination serves one service; map one service with -s, or use V2 \
                 or V3",
                Opt::DestinationClientType,
                services.len(),
                services.join(", ")
            ),
            ConfigError::DuplicateService { id, first, second } if first == second => {
                write!(f, "service id '{id}' is mapped twice in {first}")
            }
            ConfigError::DuplicateService { id, first, second } => write!(
                f,
                "service id '{id}' is mapped twice: in {first} and in {second}"
            ),
            ConfigError::ConfigFile {
                path, line, reason, ..
            } => {
                if *line == 0 {
                    write!(f, "{} file {}: {reason}", Opt::Config, path.display())
                } else {
                    write!(
                        f,
                        "{} file {}, line {line}: {reason}",
                        Opt::Config,
                        path.display()
                    )
                }
            }
            ConfigError::ConfigDir { path, reason, .. } => {
                write!(f, "{} {}: {reason}", Opt::ConfigDir, path.display())
            }
            ConfigError::SettingsFile {
                path, key, reason, ..
            } => match key {
                Some(key) => write!(
                    f,
                    "{} file {}: key '{key}': {reason}",
                    Opt::SettingsJson,
                    path.display()
                ),
                None => write!(f, "{} file {}: {reason}", Opt::SettingsJson, path.display()),
            },
            ConfigError::ExportSettings { path, .. } => write!(
                f,
                "{} cannot write {}",
                Opt::ExportDefaultSettings,
                path.display()
            ),
        }
    }
}

/// The reference's message (when there is one) on its own line, then ours.
impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let reference = self.reference();
        if let Some(r) = &reference {
            f.write_str(r)?;
        }
        // A parser message that needs no more words is not repeated.
        if let ConfigError::Usage(e) = self {
            if e.hint().is_none() {
                return Ok(());
            }
        }
        if reference.is_some() {
            f.write_str("\n")?;
        }
        self.explain(f)
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::ConfigFile { source, .. }
            | ConfigError::ConfigDir { source, .. }
            | ConfigError::SettingsFile { source, .. } => source
                .as_ref()
                .map(|e| e as &(dyn std::error::Error + 'static)),
            ConfigError::ExportSettings { source, .. } => Some(source),
            // Its own text is already in ours; its cause is next.
            ConfigError::ClientTokenFile(e) => std::error::Error::source(e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn reference_words_come_first_on_their_own_line() {
        let cases = [
            (
                ConfigError::MissingAccessToken,
                "the option '--access-token' is required but missing",
            ),
            (
                ConfigError::MissingEndpoint,
                "Must specify one and only one of --region/-r or --proxy-endpoint/-e options",
            ),
            (
                ConfigError::RegionAndEndpoint {
                    origin: Origin::Environment("AWSIOT_TUNNEL_REGION"),
                },
                "Must specify one and only one of --region/-r or --proxy-endpoint/-e options",
            ),
            (
                ConfigError::MissingMode,
                "Must specify one of --source-listen-port/-s or --destination-app/-d or --mode",
            ),
            (
                ConfigError::Usage(UsageError::Unknown("-Z".into())),
                "unrecognised option '-Z'",
            ),
        ];
        for (e, first) in cases {
            let text = e.to_string();
            assert_eq!(text.lines().next(), Some(first), "{text}");
            assert_eq!(e.exit_code(), 1);
        }
        // A bare parser message is not followed by a copy of itself.
        assert_eq!(
            ConfigError::Usage(UsageError::Unknown("-Z".into())).to_string(),
            "unrecognised option '-Z'"
        );
    }

    #[test]
    fn messages_name_the_options_and_origins() {
        let e = ConfigError::ModeConflict {
            mode: Mode::Destination,
            mode_origin: Origin::CommandLine,
            opt: Opt::SourceListenPort,
            origin: Origin::ConfigFile("a.ini".into(), 3),
        };
        let text = e.to_string();
        assert!(
            text.starts_with("-s and --mode have mismatched mode. Mode is set to destination!\n")
        );
        assert!(
            text.contains("-m/--mode destination (on the command line)"),
            "{text}"
        );
        assert!(text.contains("-s/--source-listen-port (in config file a.ini, line 3)"));
    }

    #[test]
    fn the_cause_is_kept_as_source_not_repeated() {
        let io = io::Error::new(io::ErrorKind::PermissionDenied, "denied for test");
        let e = ConfigError::ExportSettings {
            path: "/x/s.json".into(),
            source: io,
        };
        assert!(!e.to_string().contains("denied for test"));
        assert_eq!(e.source().unwrap().to_string(), "denied for test");
        assert!(e.to_string().starts_with("/x/s.json: cannot open file\n"));
    }
}
