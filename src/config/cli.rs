//! The command line: splitting the arguments into options the way the
//! reference's parser (boost::program_options, default style) does, its
//! error messages, and the `--help` and `--version` texts.
//!
//! Accepted forms: `-t VALUE`, `-tVALUE`, `--access-token VALUE`,
//! `--access-token=VALUE`, flags grouped (`-kv 5`), unambiguous prefixes of
//! long names (`--acc`), `--` ending the options.

use std::fmt;

use super::opt::Opt;
use super::settings;

/// Why the arguments cannot be split into options. `Display` is the
/// reference's message, word for word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsageError {
    /// An option nobody knows, as given (`-Z`, `--frob`; never a value).
    Unknown(String),
    /// A long-name prefix matching several options.
    Ambiguous { given: String, matches: Vec<Opt> },
    /// An option that takes a value came last or before another option.
    MissingArgument(Opt),
    /// `--name=` with nothing after `=`.
    EmptyAdjacent(String),
    /// A flag given a value (`--help=1`).
    ExtraArgument(Opt),
    /// An option given twice (only `-s` and `-d` may be repeated).
    Repeated(Opt),
    /// A known long option with more characters glued to it
    /// (`--access-tokenVALUE`); the characters are not shown.
    Glued(Opt),
    /// An argument that is not an option.
    Stray(String),
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UsageError::Unknown(given) => write!(f, "unrecognised option '{given}'"),
            UsageError::Glued(opt) => write!(f, "unrecognised option '--{}...'", opt.long()),
            UsageError::Ambiguous { given, matches } => {
                let mut names: Vec<String> = matches
                    .iter()
                    .map(|o| format!("'--{}'", o.long()))
                    .collect();
                names.sort();
                let last = names.pop().unwrap_or_default();
                write!(f, "option '{given}' is ambiguous and matches ")?;
                for name in &names {
                    write!(f, "{name}, ")?;
                }
                if !names.is_empty() {
                    f.write_str("and ")?;
                }
                f.write_str(&last)
            }
            UsageError::MissingArgument(opt) => write!(
                f,
                "the required argument for option '--{}' is missing",
                opt.long()
            ),
            UsageError::EmptyAdjacent(name) => write!(
                f,
                "the argument for option '--{name}' should follow immediately after the equal sign"
            ),
            UsageError::ExtraArgument(opt) => {
                write!(f, "option '--{}' does not take any arguments", opt.long())
            }
            UsageError::Repeated(opt) => write!(
                f,
                "option '--{}' cannot be specified more than once",
                opt.long()
            ),
            UsageError::Stray(arg) => {
                // Long words may be a token given without its option: not shown.
                if arg.chars().count() <= 24 {
                    write!(f, "unexpected argument '{arg}'")
                } else {
                    write!(
                        f,
                        "unexpected argument of {} characters (not shown: it may be a token)",
                        arg.chars().count()
                    )
                }
            }
        }
    }
}

impl UsageError {
    /// Our explanation, printed after the reference's message when it adds
    /// something.
    pub fn hint(&self) -> Option<String> {
        match self {
            UsageError::Repeated(_) => {
                Some("only -s and -d may be given more than once (their mappings add up)".into())
            }
            UsageError::Stray(_) => Some(
                "every value belongs to an option (for example -s 5555); this proxy takes no \
                 other arguments"
                    .into(),
            ),
            UsageError::Glued(opt) => Some(format!(
                "a value glued to {opt}? Write it after a space or '=': {opt} VALUE or --{}=VALUE",
                opt.long()
            )),
            UsageError::MissingArgument(opt) if !opt.is_flag() => Some(format!(
                "{opt} takes a value: {opt} VALUE or --{}=VALUE",
                opt.long()
            )),
            _ => None,
        }
    }
}

/// The options given on the command line, in order; flags carry no value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CliArgs {
    pub given: Vec<(Opt, Option<String>)>,
}

impl CliArgs {
    /// Whether `opt` was given.
    pub fn has(&self, opt: Opt) -> bool {
        self.given.iter().any(|(o, _)| *o == opt)
    }

    /// The value of `opt` (the first, for a repeatable option).
    pub fn value(&self, opt: Opt) -> Option<&str> {
        self.given
            .iter()
            .find(|(o, _)| *o == opt)
            .and_then(|(_, v)| v.as_deref())
    }

    /// The value-carrying options given, as `(option, value)` pairs; the
    /// `-k` flag appears as `"true"`, repeated `-s`/`-d` values joined by
    /// `,`. Help, version, `--config` and `--export-default-settings` are
    /// left out (they are actions).
    pub fn values(&self) -> Vec<(Opt, String)> {
        let mut out: Vec<(Opt, String)> = Vec::new();
        for (opt, value) in &self.given {
            if matches!(
                opt,
                Opt::Help | Opt::Version | Opt::Config | Opt::ExportDefaultSettings
            ) {
                continue;
            }
            let value = value.clone().unwrap_or_else(|| "true".to_string());
            match out.iter_mut().find(|(o, _)| o == opt) {
                // Repeated mappings add up; a service id given twice is
                // still refused later as a duplicate.
                Some((_, joined)) => {
                    joined.push(',');
                    joined.push_str(&value);
                }
                None => out.push((*opt, value)),
            }
        }
        out
    }
}

/// The option a long name (or an unambiguous prefix of one) names.
fn find_long(name: &str) -> Result<Opt, UsageError> {
    if let Some(opt) = Opt::ALL.into_iter().find(|o| o.long() == name) {
        return Ok(opt);
    }
    let matches: Vec<Opt> = Opt::ALL
        .into_iter()
        .filter(|o| !name.is_empty() && o.long().starts_with(name))
        .collect();
    match matches.as_slice() {
        [one] => Ok(*one),
        [] => Err(unknown_long(name)),
        _ => Err(UsageError::Ambiguous {
            given: format!("--{name}"),
            matches,
        }),
    }
}

/// The error for a long name no option has. The word may carry a value
/// glued to it, a token perhaps (`--access-tokenAQGA...`, or a misspelt
/// `--acess-tokenAQGA...`): only what looks like an option name is shown,
/// the lowercase letters and dashes before anything else, at most 40.
fn unknown_long(name: &str) -> UsageError {
    if let Some(opt) = Opt::ALL
        .into_iter()
        .filter(|o| name.starts_with(o.long()))
        .max_by_key(|o| o.long().len())
    {
        return UsageError::Glued(opt);
    }
    let shown: String = name
        .chars()
        .take_while(|c| c.is_ascii_lowercase() || *c == '-')
        .take(40)
        .collect();
    if shown.len() == name.len() {
        UsageError::Unknown(format!("--{name}"))
    } else {
        UsageError::Unknown(format!("--{shown}..."))
    }
}

fn find_short(c: char) -> Option<Opt> {
    Opt::ALL.into_iter().find(|o| o.short() == Some(c))
}

/// Whether `token` is a known option by itself (then it is not taken as the
/// value of the option before it).
fn is_option(token: &str) -> bool {
    if let Some(body) = token.strip_prefix("--") {
        let name = body.split('=').next().unwrap_or(body);
        return !name.is_empty() && find_long(name).is_ok();
    }
    let mut chars = token.chars();
    chars.next() == Some('-')
        && matches!((chars.next(), chars.next()), (Some(c), None) if find_short(c).is_some())
}

/// Splits `args` (after the program name) into options.
pub fn parse_args(args: &[String]) -> Result<CliArgs, UsageError> {
    let mut out = CliArgs::default();
    let mut record = |opt: Opt, value: Option<String>| {
        if !opt.is_repeatable() && out.has(opt) {
            return Err(UsageError::Repeated(opt));
        }
        out.given.push((opt, value));
        Ok(())
    };
    let mut rest = args.iter();
    let next_value =
        |rest: &mut std::slice::Iter<'_, String>, opt: Opt| match rest.as_slice().first() {
            Some(token) if !is_option(token) => {
                rest.next();
                Ok(token.clone())
            }
            _ => Err(UsageError::MissingArgument(opt)),
        };
    while let Some(arg) = rest.next() {
        if arg == "--" {
            if let Some(stray) = rest.next() {
                return Err(UsageError::Stray(stray.clone()));
            }
            break;
        }
        if let Some(body) = arg.strip_prefix("--") {
            let (name, adjacent) = match body.split_once('=') {
                Some((name, "")) => return Err(UsageError::EmptyAdjacent(name.to_string())),
                Some((name, value)) => (name, Some(value)),
                None => (body, None),
            };
            let opt = find_long(name)?;
            let value = match (opt.is_flag(), adjacent) {
                (true, Some(_)) => return Err(UsageError::ExtraArgument(opt)),
                (true, None) => None,
                (false, Some(v)) => Some(v.to_string()),
                (false, None) => Some(next_value(&mut rest, opt)?),
            };
            record(opt, value)?;
            continue;
        }
        let Some(cluster) = arg.strip_prefix('-').filter(|c| !c.is_empty()) else {
            return Err(UsageError::Stray(arg.clone()));
        };
        // Flags may be grouped; an option taking a value ends the group,
        // the rest of the word being its value.
        for (i, c) in cluster.char_indices() {
            let opt = find_short(c).ok_or_else(|| UsageError::Unknown(format!("-{c}")))?;
            if opt.is_flag() {
                record(opt, None)?;
                continue;
            }
            let adjacent = &cluster[i + c.len_utf8()..];
            let value = if adjacent.is_empty() {
                next_value(&mut rest, opt)?
            } else {
                adjacent.to_string()
            };
            record(opt, Some(value))?;
            break;
        }
    }
    Ok(out)
}

/// The `--version` line.
pub fn version_text() -> String {
    format!(
        "localproxy {} (AWS IoT Secure Tunneling local proxy; protocol V3, V2 and V1)\n",
        env!("CARGO_PKG_VERSION")
    )
}

/// What `--help` shows for `opt`'s value.
fn value_name(opt: Opt) -> &'static str {
    match opt {
        Opt::AccessToken | Opt::ClientToken => "TOKEN",
        Opt::ProxyEndpoint => "HOST[:PORT]",
        Opt::Region => "REGION",
        Opt::SourceListenPort | Opt::DestinationApp => "MAPPING",
        Opt::LocalBindAddress => "ADDRESS",
        Opt::Capath | Opt::ConfigDir => "DIR",
        Opt::ExportDefaultSettings | Opt::SettingsJson | Opt::Config | Opt::ClientTokenFile => {
            "FILE"
        }
        Opt::Verbose => "LEVEL",
        Opt::Mode => "MODE",
        Opt::DestinationClientType => "V1|V2",
        Opt::NoSslHostVerify | Opt::Help | Opt::Version => "",
    }
}

/// Our notes on `opt`, after the reference's description.
fn our_help(opt: Opt) -> &'static str {
    match opt {
        Opt::Help => "Prints this help to stdout and exits 0.",
        Opt::Version => "Prints the version to stdout and exits 0.",
        Opt::AccessToken => {
            "From OpenTunnel: the source or destination token, matching the mode. Prefer \
             AWSIOT_TUNNEL_ACCESS_TOKEN or a --config file: a token on the command line is \
             visible to other users."
        }
        Opt::ClientToken => {
            "^[a-zA-Z0-9-]{32,128}$ (e.g. a UUID). Sent on every connection so the access \
             token can be used again to reconnect; generated per process when absent (see \
             --client-token-file)."
        }
        Opt::ProxyEndpoint => {
            "Instead of -r; port 443 when absent, IPv6 as [ADDRESS]:PORT. Exactly one of -r \
             and -e."
        }
        Opt::Region => {
            "Connects to the region's entry in the region_endpoint_overrides setting, else to \
             the endpoint_format setting with the region (data.tunneling.iot.REGION.amazonaws.com), \
             port 443."
        }
        Opt::SourceListenPort => {
            "Source mode: PORT, or ID=PORT,ID=PORT,... one local listening port per service \
             id of the tunnel. May be repeated."
        }
        Opt::DestinationApp => {
            "Destination mode: TARGET, or ID=TARGET,ID=TARGET,... where TARGET is PORT (on \
             localhost), HOST:PORT, [IPV6]:PORT, or a Unix socket path (contains '/'). May be \
             repeated."
        }
        Opt::LocalBindAddress => {
            "Source: the address to listen on (default: the default_bind_address setting, \
             localhost). Destination: the address to connect from."
        }
        Opt::Capath => {
            "A directory of hashed CA certificates ('openssl rehash'), added to the system's."
        }
        Opt::NoSslHostVerify => "Neither the certificate nor the host name is checked.",
        Opt::ExportDefaultSettings => {
            "The reference's keys and format, plus the keys this proxy adds; exits 0."
        }
        Opt::SettingsJson => {
            "The shape of --export-default-settings; keys override the defaults one by one, \
             unknown keys are reported and ignored (see Settings below)."
        }
        Opt::Config => {
            "Lines 'long-option = value' (e.g. 'region = us-east-1', 'access-token = ...'), \
             '#' comments."
        }
        Opt::Verbose => {
            "Default 4. RUST_LOG, when set, overrides it. Tokens are never logged, at any level."
        }
        Opt::Mode => {
            "src|source or dst|destination. Needed only when no -s/-d gives the mapping: the \
             mapping then comes from --config-dir, or (source) free ports are picked for the \
             services the tunnel advertises."
        }
        Opt::DestinationClientType => {
            "V1: AWS IoT Device Client, console SSH, localproxy 1.x; V2: localproxy 2.x. One \
             TCP connection per service at a time. Default: V3."
        }
        Opt::ConfigDir => {
            "Read recursively when -s/-d give no mapping: lines ID = PORT (source) or ID = \
             TARGET (destination), '#' comments. The default is ./config under the working \
             directory."
        }
        Opt::ClientTokenFile => {
            "Read the client token from FILE; when FILE does not exist, generate one and create \
             FILE (mode 0600), so that a restarted proxy rejoins its tunnel. FILE must belong to \
             this user and not be readable by others. Not with -i/--client-token or \
             AWSIOT_TUNNEL_CLIENT_TOKEN."
        }
    }
}

/// `text` wrapped at 78 columns, each line indented by `indent` spaces.
fn wrap(text: &str, indent: usize) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && indent + line.len() + 1 + word.len() > 78 {
            out.push_str(&format!("{:indent$}{line}\n", ""));
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        out.push_str(&format!("{:indent$}{line}\n", ""));
    }
    out
}

/// The option list of `--help`: each option's description from the
/// reference on one line (so a `grep -F` for it matches), then ours.
fn options_text() -> String {
    let mut out = String::from("Allowed options:\n");
    for opt in Opt::ALL {
        let names = match opt.short() {
            Some(c) => format!("-{c}, --{}", opt.long()),
            None => format!("    --{}", opt.long()),
        };
        out.push_str(&format!("  {names} {}\n", value_name(opt)).replace(" \n", "\n"));
        if let Some(reference) = opt.reference_help() {
            out.push_str(&format!("        {reference}\n"));
        }
        out.push_str(&wrap(our_help(opt), 8));
    }
    out
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

{options}
Precedence: command line, then the --config file, then the environment. -r and
-e count as one choice: the first source that gives either decides.

Environment:
  AWSIOT_TUNNEL_ACCESS_TOKEN   access token (like -t)
  AWSIOT_TUNNEL_CLIENT_TOKEN   client token (like -i)
  AWSIOT_TUNNEL_ENDPOINT       service endpoint (like -e)
  AWSIOT_TUNNEL_REGION         region (like -r)
  https_proxy, HTTPS_PROXY     web proxy to reach the service through
                               (http://[USER:PASS@]HOST[:PORT]); the
                               lower-case name wins when both are set
  RUST_LOG                     log filter (overrides -v), e.g. localproxy=debug

Settings (--settings-json FILE, defaults shown):
{settings}
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
  Destination (device side), sshd on port 22, rejoining after a restart:
    AWSIOT_TUNNEL_ACCESS_TOKEN=... localproxy -r us-east-1 -d 22 \\
        --client-token-file /var/lib/localproxy/client-token
  Several services:
    localproxy -r us-east-1 -s SSH1=5555,WEB=8080
    localproxy -r us-east-1 -d SSH1=22,WEB=10.0.0.1:80,APP=/run/app.sock
  Source for an AWS IoT Device Client destination:
    localproxy -r us-east-1 -s 5555 -y V1
  Settings:
    localproxy --export-default-settings settings.json
    localproxy --config tunnel.ini --settings-json settings.json
",
        version = env!("CARGO_PKG_VERSION"),
        options = options_text(),
        settings = settings::help_text(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<CliArgs, UsageError> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        parse_args(&args)
    }

    fn err(args: &[&str]) -> String {
        parse(args).unwrap_err().to_string()
    }

    #[test]
    fn help_lists_every_option_with_the_reference_description_on_one_line() {
        let help = help_text();
        for opt in Opt::ALL {
            assert!(help.contains(&format!("--{}", opt.long())), "{opt}");
            if let Some(c) = opt.short() {
                assert!(help.contains(&format!("-{c}, --{}", opt.long())), "{opt}");
            }
            if let Some(text) = opt.reference_help() {
                assert!(
                    help.lines().any(|l| l.trim() == text),
                    "reference description of {opt} not on a line of its own"
                );
            }
        }
        assert!(help.contains("Show help message\n"));
        // The reference's options come first, ours after.
        let pos = |line: &str| help.find(&format!("\n{line}\n")).unwrap();
        assert!(pos("      --config-dir DIR") < pos("      --client-token-file FILE"));
    }

    #[test]
    fn every_form_of_an_option_is_accepted() {
        for args in [
            &["-t", "X"][..],
            &["-tX"],
            &["--access-token", "X"],
            &["--access-token=X"],
            &["--access", "X"],
            &["--access=X"],
        ] {
            let got = parse(args).unwrap();
            assert_eq!(got.value(Opt::AccessToken), Some("X"), "{args:?}");
        }
        let got = parse(&["-kv", "5", "-s", "1", "-s", "2"]).unwrap();
        assert!(got.has(Opt::NoSslHostVerify));
        assert_eq!(got.value(Opt::Verbose), Some("5"));
        assert!(got
            .values()
            .contains(&(Opt::SourceListenPort, "1,2".to_string())));
        assert!(got
            .values()
            .contains(&(Opt::NoSslHostVerify, "true".to_string())));
        // A value may start with '-' when it is not an option.
        assert_eq!(
            parse(&["-v", "-1"]).unwrap().value(Opt::Verbose),
            Some("-1")
        );
        // --config is exact, not a prefix of --config-dir.
        assert!(parse(&["--config", "f"]).unwrap().has(Opt::Config));
        assert!(parse(&["--"]).unwrap().given.is_empty());
    }

    #[test]
    fn errors_are_the_reference_parser_messages() {
        assert_eq!(err(&["-Z"]), "unrecognised option '-Z'");
        assert_eq!(err(&["-kZ"]), "unrecognised option '-Z'");
        assert_eq!(err(&["--frob"]), "unrecognised option '--frob'");
        // A value glued to an unknown option is never shown.
        assert_eq!(
            err(&["--acess-token=SECRET"]),
            "unrecognised option '--acess-token'"
        );
        assert_eq!(
            err(&["--acess-tokenAQGA5Wr7_noCC-MB2G"]),
            "unrecognised option '--acess-token...'"
        );
        assert_eq!(
            err(&["--access-tokenAQGA5Wr7noCC"]),
            "unrecognised option '--access-token...'"
        );
        assert_eq!(
            err(&["--client-token0123456789abcdef0123456789abcdef"]),
            "unrecognised option '--client-token...'"
        );
        assert_eq!(
            err(&["-v"]),
            "the required argument for option '--verbose' is missing"
        );
        assert_eq!(
            err(&["--verbose"]),
            "the required argument for option '--verbose' is missing"
        );
        assert_eq!(
            err(&["-v", "-s", "5555"]),
            "the required argument for option '--verbose' is missing"
        );
        assert_eq!(
            err(&["-t", "--region", "x"]),
            "the required argument for option '--access-token' is missing"
        );
        assert_eq!(
            err(&["--verbose="]),
            "the argument for option '--verbose' should follow immediately after the equal sign"
        );
        assert_eq!(
            err(&["--help=yes"]),
            "option '--help' does not take any arguments"
        );
        assert_eq!(
            err(&["-r", "a", "--region", "b"]),
            "option '--region' cannot be specified more than once"
        );
        assert_eq!(
            err(&["--conf", "x"]),
            "option '--conf' is ambiguous and matches '--config', and '--config-dir'"
        );
        assert_eq!(
            err(&["--de", "x"]),
            "option '--de' is ambiguous and matches '--destination-app', and \
             '--destination-client-type'"
        );
        assert_eq!(err(&["stray"]), "unexpected argument 'stray'");
        let long = "AQGAAXhQSECRETtokenVALUEthatIsLong";
        assert!(!err(&["-s", "1", long]).contains("SECRET"));
        assert!(!err(&["--", long]).contains("SECRET"));
    }
}
