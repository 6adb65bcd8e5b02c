//! The command line: gumdrop options, `--help` text and `--version` line.

use gumdrop::Options;

use super::opt::Opt;

/// The command line as typed (values unchecked; checks happen after merging
/// with the `--config` file and the environment).
#[derive(Debug, Default, Options)]
pub struct CliArgs {
    #[options(short = "h", help = "print help and exit")]
    pub help: bool,
    #[options(short = "V", help = "print the version and exit")]
    pub version: bool,
    #[options(short = "t", meta = "TOKEN", help = "client access token")]
    pub access_token: Option<String>,
    #[options(short = "i", meta = "TOKEN", help = "client token")]
    pub client_token: Option<String>,
    #[options(short = "e", meta = "HOST[:PORT]", help = "service endpoint")]
    pub proxy_endpoint: Option<String>,
    #[options(short = "r", meta = "REGION", help = "AWS region of the tunnel")]
    pub region: Option<String>,
    /// Repeatable: `-s SSH1=5555 -s WEB=8080` is `-s SSH1=5555,WEB=8080`.
    #[options(short = "s", meta = "MAPPING", help = "source mode: listen ports")]
    pub source_listen_port: Vec<String>,
    /// Repeatable, like `-s`.
    #[options(short = "d", meta = "MAPPING", help = "destination mode: services")]
    pub destination_app: Vec<String>,
    #[options(short = "b", meta = "ADDRESS", help = "local bind address")]
    pub local_bind_address: Option<String>,
    #[options(short = "c", meta = "DIR", help = "extra CA directory")]
    pub capath: Option<String>,
    #[options(short = "k", help = "do not verify the service certificate")]
    pub no_ssl_host_verify: bool,
    #[options(no_short, meta = "FILE", help = "write default settings and exit")]
    pub export_default_settings: Option<String>,
    #[options(no_short, meta = "FILE", help = "read settings overrides")]
    pub settings_json: Option<String>,
    #[options(no_short, meta = "FILE", help = "read options from a file")]
    pub config: Option<String>,
    #[options(short = "v", meta = "LEVEL", help = "verbosity 0-255")]
    pub verbose: Option<String>,
    #[options(short = "m", meta = "MODE", help = "src|source|dst|destination")]
    pub mode: Option<String>,
    #[options(short = "y", meta = "V1|V2", help = "destination client type")]
    pub destination_client_type: Option<String>,
    #[options(no_short, meta = "DIR", help = "service mapping directory")]
    pub config_dir: Option<String>,
}

impl CliArgs {
    /// The value-carrying options given, as `(option, value)` pairs; the
    /// `-k` flag appears as `"true"`. Help, version, `--config` and
    /// `--export-default-settings` are left out (they are actions).
    pub fn values(&self) -> Vec<(Opt, String)> {
        let pairs = [
            (Opt::AccessToken, &self.access_token),
            (Opt::ClientToken, &self.client_token),
            (Opt::ProxyEndpoint, &self.proxy_endpoint),
            (Opt::Region, &self.region),
            (Opt::LocalBindAddress, &self.local_bind_address),
            (Opt::Capath, &self.capath),
            (Opt::SettingsJson, &self.settings_json),
            (Opt::Verbose, &self.verbose),
            (Opt::Mode, &self.mode),
            (Opt::DestinationClientType, &self.destination_client_type),
            (Opt::ConfigDir, &self.config_dir),
        ];
        let mut out: Vec<(Opt, String)> = pairs
            .into_iter()
            .filter_map(|(opt, v)| v.clone().map(|v| (opt, v)))
            .collect();
        // Repeated mappings add up; a service id given twice is still
        // refused later as a duplicate.
        for (opt, list) in [
            (Opt::SourceListenPort, &self.source_listen_port),
            (Opt::DestinationApp, &self.destination_app),
        ] {
            if !list.is_empty() {
                out.push((opt, list.join(",")));
            }
        }
        if self.no_ssl_host_verify {
            out.push((Opt::NoSslHostVerify, "true".to_string()));
        }
        out
    }
}

/// The `--version` line.
pub fn version_text() -> String {
    format!(
        "localproxy {} (AWS IoT Secure Tunneling local proxy; protocol V3, V2 and V1)\n",
        env!("CARGO_PKG_VERSION")
    )
}

/// The `--help` text.
pub fn help_text() -> String {
    format!(
        "\
localproxy {version}: AWS IoT Secure Tunneling local proxy

Carries TCP connections through an AWS IoT secure tunnel. The source side
listens on local ports for clients (an ssh client, a browser); the destination
side connects to the local services (sshd, a web server) the tunnel leads to.

Usage:
  localproxy (-r REGION | -e HOST[:PORT]) (-s MAPPING | -d MAPPING | -m MODE) [OPTIONS]
  localproxy --export-default-settings FILE
  localproxy -h | --help | -V | --version

Tunnel:
  -t, --access-token TOKEN   Client access token from OpenTunnel (source or
                             destination token, matching the mode). Prefer
                             AWSIOT_TUNNEL_ACCESS_TOKEN or a --config file: a
                             token on the command line is visible to other users.
  -i, --client-token TOKEN   Client token, ^[a-zA-Z0-9-]{{32,128}}$ (e.g. a UUID).
                             Sent on every connection so the access token can be
                             used again to reconnect.
  -r, --region REGION        Region of the tunnel: connects to
                             data.tunneling.iot.REGION.amazonaws.com:443.
  -e, --proxy-endpoint HOST[:PORT]
                             Service endpoint instead of -r (port 443 when
                             absent; IPv6 as [ADDRESS]:PORT). Exactly one of -r
                             and -e.
  -c, --capath DIR           Extra directory of trusted CA certificates (hashed,
                             as made by 'openssl rehash'), added to the system's.
  -k, --no-ssl-host-verify   Do not verify the service's certificate and host
                             name. For tests only, never in production.

Mode and services:
  -s, --source-listen-port MAPPING
                             Source mode. PORT, or ID=PORT,ID=PORT,... one local
                             listening port per service id of the tunnel.
  -d, --destination-app MAPPING
                             Destination mode. TARGET, or ID=TARGET,ID=TARGET,...
                             where TARGET is PORT (on localhost), HOST:PORT,
                             [IPV6]:PORT, or a Unix socket path (contains '/').
  -m, --mode MODE            src|source or dst|destination. Needed only when no
                             -s/-d gives the mapping: the mapping then comes from
                             --config-dir, or (source) free ports are picked for
                             the services the tunnel advertises.
      --config-dir DIR       Directory of service mapping files, read recursively
                             when -s/-d give no mapping; each line ID = PORT (source)
                             or ID = TARGET (destination), '#' starts a comment.
                             Default: ./config, if it exists.
  -b, --local-bind-address ADDRESS
                             Source: address to listen on. Destination: address to
                             connect from. Default: the default_bind_address
                             setting (localhost) for the source.
  -y, --destination-client-type V1|V2
                             Source only: the destination runs an older proxy
                             (V1: AWS IoT Device Client, the Secure Tunneling
                             component, console SSH, localproxy 1.x; V2:
                             localproxy 2.x). One TCP connection per service at a
                             time. Default: V3.

Files and output:
      --config FILE          Read options from FILE: lines 'long-option = value'
                             (e.g. 'region = us-east-1', 'access-token = ...'),
                             '#' comments. Command-line options win over it.
      --settings-json FILE   Override fine-grained settings key by key (the shape
                             of --export-default-settings; unknown keys are
                             reported and ignored).
      --export-default-settings FILE
                             Write the default settings as JSON to FILE and exit.
  -v, --verbose LEVEL        0 off, 1 fatal, 2 error, 3 warning, 4 info (default),
                             5 debug, 6-255 trace. RUST_LOG, when set, overrides it.
                             Tokens are never logged.
  -h, --help                 Print this help and exit.
  -V, --version              Print the version and exit.

Precedence: command line, then the --config file, then the environment. -r and
-e count as one choice: the first source that gives either decides.

Environment:
  AWSIOT_TUNNEL_ACCESS_TOKEN   access token (like -t)
  AWSIOT_TUNNEL_CLIENT_TOKEN   client token (like -i)
  AWSIOT_TUNNEL_ENDPOINT       service endpoint (like -e)
  AWSIOT_TUNNEL_REGION         region (like -r)
  HTTPS_PROXY, https_proxy     web proxy to reach the service through
                               (http://[USER:PASS@]HOST[:PORT])
  RUST_LOG                     log filter (overrides -v), e.g. localproxy=debug

Exit status:
  0  the tunnel was closed or expired; --help, --version, --export-default-settings
  1  usage or configuration error
  2  the service refused the connection (bad, spent or wrong-mode token; wrong region)
     or its certificate did not verify (-c)
  3  replaced by another proxy connecting with the same token
  4  could not connect to the service, retries exhausted
  5  protocol error with reconnect_on_data_error=false

Examples:
  Source (client side), ssh through the tunnel:
    AWSIOT_TUNNEL_ACCESS_TOKEN=... localproxy -r us-east-1 -s 5555
    ssh -p 5555 user@localhost
  Destination (device side), sshd on port 22:
    AWSIOT_TUNNEL_ACCESS_TOKEN=... localproxy -r us-east-1 -d 22
  Several services:
    localproxy -r us-east-1 -s SSH1=5555,WEB=8080
    localproxy -r us-east-1 -d SSH1=22,WEB=10.0.0.1:80,APP=/run/app.sock
  Source for an AWS IoT Device Client destination:
    localproxy -r us-east-1 -s 5555 -y V1
  Settings:
    localproxy --export-default-settings settings.json
    localproxy --config tunnel.ini --settings-json settings.json
",
        version = env!("CARGO_PKG_VERSION")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_lists_every_option_of_the_parser() {
        let help = help_text();
        for opt in Opt::ALL {
            assert!(help.contains(&format!("--{}", opt.long())), "{opt}");
            if let Some(c) = opt.short() {
                assert!(help.contains(&format!("-{c}, --{}", opt.long())), "{opt}");
            }
        }
        // And the gumdrop parser knows exactly those long names.
        let mut parsed: Vec<&str> = CliArgs::usage()
            .split_whitespace()
            .filter_map(|w| w.strip_prefix("--"))
            .collect();
        let mut catalogue: Vec<&str> = Opt::ALL.iter().map(|o| o.long()).collect();
        parsed.sort_unstable();
        catalogue.sort_unstable();
        assert_eq!(parsed, catalogue);
    }

    #[test]
    fn gumdrop_names_match_the_catalogue() {
        for opt in Opt::ALL {
            let mut args = vec![format!("--{}", opt.long())];
            if !opt.is_flag() {
                args.push("x".into());
            }
            assert!(CliArgs::parse_args_default(&args).is_ok(), "{opt}");
            if let Some(c) = opt.short() {
                args[0] = format!("-{c}");
                assert!(CliArgs::parse_args_default(&args).is_ok(), "{opt}");
            }
        }
    }
}
