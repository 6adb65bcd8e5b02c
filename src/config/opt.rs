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
    /// Ours: the client token kept in a file across restarts.
    ClientTokenFile,
}

impl Opt {
    /// Every option, in the order of `--help`: the reference's order, then ours.
    pub const ALL: [Opt; 19] = [
        Opt::Help,
        Opt::Version,
        Opt::AccessToken,
        Opt::ClientToken,
        Opt::ProxyEndpoint,
        Opt::Region,
        Opt::SourceListenPort,
        Opt::DestinationApp,
        Opt::LocalBindAddress,
        Opt::Capath,
        Opt::NoSslHostVerify,
        Opt::ExportDefaultSettings,
        Opt::SettingsJson,
        Opt::Config,
        Opt::Verbose,
        Opt::Mode,
        Opt::DestinationClientType,
        Opt::ConfigDir,
        Opt::ClientTokenFile,
    ];

    /// The reference's description of the option in its `--help`, verbatim
    /// (its main.cpp); `None` for options the reference does not have.
    pub fn reference_help(self) -> Option<&'static str> {
        Some(match self {
            Opt::Help => "Show help message",
            Opt::Version => "Show current version of Local Proxy and exit",
            Opt::AccessToken => "Client access token",
            Opt::ClientToken => "Optional Client Token",
            Opt::ProxyEndpoint => {
                "Endpoint of proxy server with port (if not default 443). Example: \
                 data.tunneling.iot.us-east-1.amazonaws.com:443"
            }
            Opt::Region => {
                "Endpoint region where tunnel exists. Mutually exclusive flag with --proxy-endpoint"
            }
            Opt::SourceListenPort => {
                "Sets the mappings between source listening ports and service identifier. \
                 Example: SSH1=5555 or 5555"
            }
            Opt::DestinationApp => {
                "Sets the mappings between the endpoint(address:port/port) and service \
                 identifier. Example: SSH1=127.0.0.1:22 or 22"
            }
            Opt::LocalBindAddress => {
                "Assigns a specific local address to bind to for listening in source mode or a \
                 local socket address for destination mode."
            }
            Opt::Capath => {
                "Adds the directory containing certificate authority files to be used for \
                 performing verification"
            }
            Opt::NoSslHostVerify => {
                "[INSECURE - DEV/TEST ONLY] Turn off SSL host verification. WARNING: This \
                 disables critical security checks and should NEVER be used in production."
            }
            Opt::ExportDefaultSettings => {
                "Exports the default settings for the TCP adapter to the given file as json and \
                 exit program"
            }
            Opt::SettingsJson => "Use the input JSON file to apply fine grained settings.",
            Opt::Config => {
                "Use the supplied configuration file to apply CLI args. Actual CLI args override \
                 the contents of this file"
            }
            Opt::Verbose => {
                "Logging level to standard out. [0, 255] (0=off, 1=fatal, 2=error, 3=warning, \
                 4=info, 5=debug, >=6=trace)"
            }
            Opt::Mode => "The mode local proxy will run: src(source) or dst(destination)",
            Opt::DestinationClientType => {
                "Specify the value V1 or V2 to run the localproxy in compatibility mode with \
                 older clients. This should only be used when running localproxy in source mode."
            }
            Opt::ConfigDir => {
                "Set the configuration directory where service identifier mappings are stored. \
                 If not specified, will read mappings from default directory ./config (same \
                 directory where local proxy binary is running)"
            }
            Opt::ClientTokenFile => return None,
        })
    }

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
            Opt::ClientTokenFile => "client-token-file",
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
            Opt::ExportDefaultSettings
            | Opt::SettingsJson
            | Opt::Config
            | Opt::ConfigDir
            | Opt::ClientTokenFile => return None,
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

    /// Whether giving the option several times adds up (`-s`, `-d`) instead
    /// of being an error.
    pub fn is_repeatable(self) -> bool {
        matches!(self, Opt::SourceListenPort | Opt::DestinationApp)
    }

    /// How the reference's option parser (boost::program_options) names the
    /// option in its messages: `--long` for the command line, the bare long
    /// name for a config file or the environment.
    pub fn boost_name(self, origin: &Origin) -> String {
        match origin {
            Origin::CommandLine => format!("--{}", self.long()),
            Origin::ConfigFile(..) | Origin::Environment(_) => self.long().to_string(),
        }
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
