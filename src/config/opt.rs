//! The catalogue of options (short and long names) and where a value came from.

use std::fmt;
use std::path::PathBuf;

/// One option of the command line, as named in messages and in `--config` files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Opt {
    AccessToken,
    ClientToken,
    ProxyEndpoint,
    Region,
    SourceListenPort,
    DestinationApp,
    LocalBindAddress,
    Capath,
    NoSslHostVerify,
    ExportDefaultSettings,
    SettingsJson,
    Config,
    Verbose,
    Mode,
    DestinationClientType,
    ConfigDir,
    Help,
    Version,
}

impl Opt {
    /// Every option, in the order of `--help`.
    pub const ALL: [Opt; 18] = [
        Opt::Help,
        Opt::Version,
        Opt::AccessToken,
        Opt::ClientToken,
        Opt::ProxyEndpoint,
        Opt::Region,
        Opt::SourceListenPort,
        Opt::DestinationApp,
        Opt::Mode,
        Opt::LocalBindAddress,
        Opt::ConfigDir,
        Opt::DestinationClientType,
        Opt::Capath,
        Opt::NoSslHostVerify,
        Opt::Config,
        Opt::SettingsJson,
        Opt::ExportDefaultSettings,
        Opt::Verbose,
    ];

    /// The long name, without the leading `--` (also the key in a `--config` file).
    pub fn long(self) -> &'static str {
        match self {
            Opt::AccessToken => "access-token",
            Opt::ClientToken => "client-token",
            Opt::ProxyEndpoint => "proxy-endpoint",
            Opt::Region => "region",
            Opt::SourceListenPort => "source-listen-port",
            Opt::DestinationApp => "destination-app",
            Opt::LocalBindAddress => "local-bind-address",
            Opt::Capath => "capath",
            Opt::NoSslHostVerify => "no-ssl-host-verify",
            Opt::ExportDefaultSettings => "export-default-settings",
            Opt::SettingsJson => "settings-json",
            Opt::Config => "config",
            Opt::Verbose => "verbose",
            Opt::Mode => "mode",
            Opt::DestinationClientType => "destination-client-type",
            Opt::ConfigDir => "config-dir",
            Opt::Help => "help",
            Opt::Version => "version",
        }
    }

    /// The short name, when there is one.
    pub fn short(self) -> Option<char> {
        Some(match self {
            Opt::AccessToken => 't',
            Opt::ClientToken => 'i',
            Opt::ProxyEndpoint => 'e',
            Opt::Region => 'r',
            Opt::SourceListenPort => 's',
            Opt::DestinationApp => 'd',
            Opt::LocalBindAddress => 'b',
            Opt::Capath => 'c',
            Opt::NoSslHostVerify => 'k',
            Opt::Verbose => 'v',
            Opt::Mode => 'm',
            Opt::DestinationClientType => 'y',
            Opt::Help => 'h',
            Opt::Version => 'V',
            Opt::ExportDefaultSettings | Opt::SettingsJson | Opt::Config | Opt::ConfigDir => {
                return None
            }
        })
    }

    /// The option a `--config` file key names, if the key may appear in such a
    /// file (every option but `--config`, `--export-default-settings`, `--help`
    /// and `--version`).
    pub fn from_file_key(key: &str) -> Option<Opt> {
        Opt::ALL.into_iter().find(|o| {
            o.long() == key
                && !matches!(
                    o,
                    Opt::Config | Opt::ExportDefaultSettings | Opt::Help | Opt::Version
                )
        })
    }

    /// Whether the option is a flag (takes no value).
    pub fn is_flag(self) -> bool {
        matches!(self, Opt::NoSslHostVerify | Opt::Help | Opt::Version)
    }
}

/// `-t/--access-token`, or `--config` for options without a short name.
impl fmt::Display for Opt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.short() {
            Some(c) => write!(f, "-{c}/--{}", self.long()),
            None => write!(f, "--{}", self.long()),
        }
    }
}

/// Where an option's value came from (sources in decreasing precedence).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    CommandLine,
    /// A `--config` file, and the line the value is on (1-based; 0: the whole file).
    ConfigFile(PathBuf, usize),
    /// An environment variable.
    Environment(&'static str),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::CommandLine => f.write_str("on the command line"),
            Origin::ConfigFile(path, 0) => write!(f, "in config file {}", path.display()),
            Origin::ConfigFile(path, line) => {
                write!(f, "in config file {}, line {line}", path.display())
            }
            Origin::Environment(var) => write!(f, "in environment variable {var}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_print_short_and_long_forms() {
        assert_eq!(Opt::AccessToken.to_string(), "-t/--access-token");
        assert_eq!(Opt::ConfigDir.to_string(), "--config-dir");
        assert_eq!(Opt::Version.to_string(), "-V/--version");
    }

    #[test]
    fn file_keys_are_long_names_except_the_actions() {
        assert_eq!(Opt::from_file_key("region"), Some(Opt::Region));
        assert_eq!(
            Opt::from_file_key("no-ssl-host-verify"),
            Some(Opt::NoSslHostVerify)
        );
        assert_eq!(Opt::from_file_key("config"), None);
        assert_eq!(Opt::from_file_key("export-default-settings"), None);
        assert_eq!(Opt::from_file_key("r"), None);
        assert_eq!(Opt::from_file_key("Region"), None);
    }
}
