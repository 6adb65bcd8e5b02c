//! Configuration errors: each names the option or file at fault and ends with
//! the "Try 'localproxy --help'" line. None of them carries a token value.

use std::fmt;
use std::path::PathBuf;

use super::opt::{Opt, Origin};
use super::Mode;

/// The last line of every configuration error message.
pub const TRY_HELP: &str = "Try 'localproxy --help' for more information.";

/// Why the configuration cannot be used (exit status 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// The command-line parser refused the arguments (unknown option, option
    /// missing its value, stray argument); the message names the option.
    Usage(String),
    /// An argument is not valid UTF-8 (its position, 1-based).
    NotUtf8 { position: usize },
    /// A value that is not accepted (never used for tokens).
    InvalidValue {
        opt: Opt,
        origin: Origin,
        value: String,
        expected: String,
    },
    /// No access token from `-t`, the config file or the environment.
    MissingAccessToken,
    /// A token that cannot be used; `reason` does not contain the token.
    InvalidToken {
        opt: Opt,
        origin: Origin,
        reason: String,
    },
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
    },
    /// The `--config-dir` directory (or a file below it) cannot be read.
    ConfigDir { path: PathBuf, reason: String },
    /// The `--settings-json` file cannot be read or holds a bad value.
    SettingsFile {
        path: PathBuf,
        key: Option<String>,
        reason: String,
    },
    /// The `--export-default-settings` file cannot be written.
    ExportSettings { path: PathBuf, reason: String },
}

impl ConfigError {
    /// The process exit status for this error.
    pub fn exit_code(&self) -> i32 {
        1
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Usage(msg) => write!(f, "{msg}")?,
            ConfigError::NotUtf8 { position } => {
                write!(f, "argument {position} is not valid UTF-8")?
            }
            ConfigError::InvalidValue {
                opt,
                origin,
                value,
                expected,
            } => write!(
                f,
                "invalid value '{value}' for {opt} {origin}: expected {expected}"
            )?,
            ConfigError::MissingAccessToken => write!(
                f,
                "no access token: set AWSIOT_TUNNEL_ACCESS_TOKEN, 'access-token' in a --config \
                 file, or {}",
                Opt::AccessToken
            )?,
            ConfigError::InvalidToken {
                opt,
                origin,
                reason,
            } => write!(f, "the value of {opt} {origin} {reason}")?,
            ConfigError::RegionAndEndpoint { origin } => write!(
                f,
                "{} and {} are both given {origin}: give exactly one",
                Opt::Region,
                Opt::ProxyEndpoint
            )?,
            ConfigError::MissingEndpoint => write!(
                f,
                "no service endpoint: give {} (or AWSIOT_TUNNEL_REGION) or {} (or \
                 AWSIOT_TUNNEL_ENDPOINT)",
                Opt::Region,
                Opt::ProxyEndpoint
            )?,
            ConfigError::MissingMode => write!(
                f,
                "no mode: give {} (source), {} (destination) or {}",
                Opt::SourceListenPort,
                Opt::DestinationApp,
                Opt::Mode
            )?,
            ConfigError::SourceAndDestination {
                source,
                destination,
            } => write!(
                f,
                "{} ({source}) and {} ({destination}) cannot be used together: a proxy is \
                 either the source or the destination",
                Opt::SourceListenPort,
                Opt::DestinationApp
            )?,
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
            )?,
            ConfigError::InvalidMapping {
                location,
                item,
                reason,
            } => write!(
                f,
                "invalid service mapping '{item}' in {location}: {reason}"
            )?,
            ConfigError::DuplicateService { id, first, second } if first == second => {
                write!(f, "service id '{id}' is mapped twice in {first}")?
            }
            ConfigError::DuplicateService { id, first, second } => write!(
                f,
                "service id '{id}' is mapped twice: in {first} and in {second}"
            )?,
            ConfigError::ConfigFile { path, line, reason } => {
                if *line == 0 {
                    write!(f, "{} file {}: {reason}", Opt::Config, path.display())?
                } else {
                    write!(
                        f,
                        "{} file {}, line {line}: {reason}",
                        Opt::Config,
                        path.display()
                    )?
                }
            }
            ConfigError::ConfigDir { path, reason } => {
                write!(f, "{} {}: {reason}", Opt::ConfigDir, path.display())?
            }
            ConfigError::SettingsFile { path, key, reason } => match key {
                Some(key) => write!(
                    f,
                    "{} file {}: key '{key}': {reason}",
                    Opt::SettingsJson,
                    path.display()
                )?,
                None => write!(f, "{} file {}: {reason}", Opt::SettingsJson, path.display())?,
            },
            ConfigError::ExportSettings { path, reason } => write!(
                f,
                "{} cannot write {}: {reason}",
                Opt::ExportDefaultSettings,
                path.display()
            )?,
        }
        write!(f, "\n{TRY_HELP}")
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_ends_with_the_try_line() {
        let errors = [
            ConfigError::MissingAccessToken,
            ConfigError::MissingEndpoint,
            ConfigError::MissingMode,
            ConfigError::Usage("unrecognized option `--x`".into()),
            ConfigError::RegionAndEndpoint {
                origin: Origin::Environment("AWSIOT_TUNNEL_REGION"),
            },
        ];
        for e in errors {
            let text = e.to_string();
            assert!(text.ends_with(TRY_HELP), "{text}");
            assert_eq!(e.exit_code(), 1);
        }
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
            text.contains("-m/--mode destination (on the command line)"),
            "{text}"
        );
        assert!(text.contains("-s/--source-listen-port (in config file a.ini, line 3)"));
    }
}
