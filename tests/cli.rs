//! Black-box tests of the `localproxy` command line: every usage error exits
//! 1 with the reference's words first (so a `grep -F` written for the
//! reference matches), then ours naming the option, then the reference's
//! "Try" line; `--help`/`--version` print to stdout; the exported settings are
//! the reference's plus ours and read back to the defaults; `-r` goes where
//! `region_endpoint_overrides` says. The environment is cleared for every run,
//! so nothing of the developer's shell leaks in, and the base environment
//! names a loopback endpoint: a case that wrongly passed validation would
//! reach nothing but 127.0.0.1. Every run has a deadline, every test a
//! watchdog.

mod common;

use std::fs;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use localproxy::config::{self, Action, Settings, TRY_HELP};

const TOKEN: &str = "AQGAAXhQSECRETaccessTOKEN";
const CLIENT: &str = "0123456789abcdef-0123456789abcdef";
/// A run that does not end by then is killed and fails its test.
const RUN_LIMIT: Duration = Duration::from_secs(20);
const TEST_LIMIT: Duration = Duration::from_secs(60);

/// A scratch directory (also the working directory of the runs), removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("lp-cli-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn file(&self, name: &str, text: &str) -> String {
        let p = self.0.join(name);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, text).unwrap();
        p.to_string_lossy().into_owned()
    }

    fn path(&self, name: &str) -> String {
        self.0.join(name).to_string_lossy().into_owned()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn command(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_localproxy"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .current_dir(cwd)
        .args(args)
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Runs the binary in `cwd` with only PATH and `env` in its environment;
/// kills it and fails if it runs longer than [`RUN_LIMIT`].
fn localproxy(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let child = command(cwd, args, env)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run localproxy");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(RUN_LIMIT) {
        Ok(out) => out.expect("wait for localproxy"),
        Err(_) => {
            // SAFETY: kill has no memory preconditions; the pid is our child's,
            // not yet reaped (its waiter has not returned).
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("localproxy {args:?} still running after {RUN_LIMIT:?}: it should have refused");
        }
    }
}

/// stdout and stderr together, as the reference's UAT reads them (`2>&1`).
fn both(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Asserts a usage error: exit 1, nothing on stdout, one message on stderr
/// holding every needle, ending with the Try line, and no token in it.
/// Returns stderr.
fn assert_usage_error(out: &Output, needles: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        out.stdout.is_empty(),
        "stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    for needle in needles {
        assert!(stderr.contains(needle), "expected {needle:?} in: {stderr}");
    }
    assert!(stderr.trim_end().ends_with(TRY_HELP), "{stderr}");
    assert_eq!(stderr.matches(TRY_HELP).count(), 1, "{stderr}");
    assert!(!stderr.contains("SECRET"), "access token leaked: {stderr}");
    assert!(!stderr.contains(CLIENT), "client token leaked: {stderr}");
    stderr
}

/// The base environment: a token and a loopback endpoint nothing listens on.
const BASE_ENV: [(&str, &str); 2] = [
    ("AWSIOT_TUNNEL_ACCESS_TOKEN", TOKEN),
    ("AWSIOT_TUNNEL_ENDPOINT", "127.0.0.1:1"),
];

/// Runs with the base environment plus `args`, expecting a usage error whose
/// first line is `reference` (the reference's words; `None`: ours only) and
/// whose text holds `ours`.
fn rejects(args: &[&str], reference: Option<&str>, ours: &str) {
    static COUNT: AtomicUsize = AtomicUsize::new(0);
    let dir = Scratch::new(&format!("rej-{}", COUNT.fetch_add(1, Ordering::Relaxed)));
    let stderr = assert_usage_error(&localproxy(&dir.0, args, &BASE_ENV), &[ours]);
    if let Some(reference) = reference {
        assert_eq!(
            stderr.lines().next(),
            Some(format!("localproxy: {reference}").as_str()),
            "{stderr}"
        );
    }
}

/// The cases of the reference's own `uat/test_cli_usage.sh`, run the way it
/// runs them: exit status, then `grep -qF PATTERN` on stdout and stderr
/// together; an empty pattern means no error text at all.
#[test]
fn the_reference_uat_cli_cases_pass() {
    let _w = common::watchdog("the_reference_uat_cli_cases_pass", TEST_LIMIT);
    let dir = Scratch::new("uat");
    let dummy = "a".repeat(100);
    let token = [("AWSIOT_TUNNEL_ACCESS_TOKEN", dummy.as_str())];
    /// Arguments, environment, exit status, pattern.
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], i32, &'a str);
    let cases: [Case; 15] = [
        (&["--version"], &[], 0, ""),
        (&["-V"], &[], 0, ""),
        (&["--help"], &[], 0, "Show help message"),
        (&["-h"], &[], 0, "Show help message"),
        (
            &[],
            &[],
            1,
            "the option '--access-token' is required but missing",
        ),
        (&[], &[], 1, "Try 'localproxy --help'"),
        (&["-Z"], &[], 1, "unrecognised option '-Z'"),
        (
            &["-v"],
            &[],
            1,
            "the required argument for option '--verbose' is missing",
        ),
        (
            &[
                "-r",
                "us-east-1",
                "-e",
                "data.tunneling.iot.us-east-1.amazonaws.com",
                "-s",
                "5555",
            ],
            &token,
            1,
            "Must specify one and only one of --region/-r or --proxy-endpoint/-e",
        ),
        (
            &["-s", "5555"],
            &token,
            1,
            "Must specify one and only one of --region/-r or --proxy-endpoint/-e",
        ),
        (
            &["-r", "us-east-1"],
            &token,
            1,
            "Must specify one of --source-listen-port/-s or --destination-app/-d or --mode",
        ),
        (
            &["-r", "us-east-1", "-s", "5555", "-d", "127.0.0.1:22"],
            &token,
            1,
            "Must specify one and only one of --source-listen-port/-s or --destination-app/-d",
        ),
        (
            &["-r", "us-east-1", "-m", "bogus"],
            &token,
            1,
            "Mode value is wrong! Allowed values are: src, dst, source, destination",
        ),
        (
            &["-r", "us-east-1", "-s", "5555", "-m", "dst"],
            &token,
            1,
            "-s and --mode have mismatched mode. Mode is set to destination!",
        ),
        // Not in the UAT script, the other half of the same check.
        (
            &["-r", "us-east-1", "-d", "22", "-m", "src"],
            &token,
            1,
            "-s and --mode have mismatched mode. Mode is set to source!",
        ),
    ];
    for (args, env, code, pattern) in cases {
        let out = localproxy(&dir.0, args, env);
        let text = both(&out);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {text}");
        if pattern.is_empty() {
            let lower = text.to_lowercase();
            assert!(
                !lower.contains("fatal") && !lower.contains("[error]") && !text.contains("Try '"),
                "{args:?}: unexpected error output: {text}"
            );
        } else {
            assert!(
                text.contains(pattern),
                "{args:?}: {pattern:?} not in {text}"
            );
        }
    }
}

#[test]
fn help_goes_to_stdout_and_keeps_the_reference_descriptions() {
    let _w = common::watchdog("help", TEST_LIMIT);
    let dir = Scratch::new("help");
    for flag in ["-h", "--help"] {
        let out = localproxy(&dir.0, &[flag], &[]);
        assert_eq!(out.status.code(), Some(0));
        let text = String::from_utf8(out.stdout).unwrap();
        for needle in [
            "Allowed options:",
            "Show help message",
            "Show current version of Local Proxy and exit",
            "Client access token",
            "Optional Client Token",
            "Endpoint of proxy server with port (if not default 443). Example: \
             data.tunneling.iot.us-east-1.amazonaws.com:443",
            "Endpoint region where tunnel exists. Mutually exclusive flag with --proxy-endpoint",
            "Sets the mappings between source listening ports and service identifier. \
             Example: SSH1=5555 or 5555",
            "Sets the mappings between the endpoint(address:port/port) and service \
             identifier. Example: SSH1=127.0.0.1:22 or 22",
            "[INSECURE - DEV/TEST ONLY] Turn off SSL host verification.",
            "Exports the default settings for the TCP adapter to the given file as json and \
             exit program",
            "Use the input JSON file to apply fine grained settings.",
            "Use the supplied configuration file to apply CLI args. Actual CLI args override \
             the contents of this file",
            "Logging level to standard out. [0, 255] (0=off, 1=fatal, 2=error, 3=warning, \
             4=info, 5=debug, >=6=trace)",
            "The mode local proxy will run: src(source) or dst(destination)",
            "Specify the value V1 or V2 to run the localproxy in compatibility mode with older \
             clients.",
            "Set the configuration directory where service identifier mappings are stored.",
            "--client-token-file FILE",
            "AWSIOT_TUNNEL_ACCESS_TOKEN",
            "AWSIOT_TUNNEL_CLIENT_TOKEN",
            "AWSIOT_TUNNEL_ENDPOINT",
            "AWSIOT_TUNNEL_REGION",
            "tunneling.proxy.tcp.max_active_connections = 128",
            "Exit status",
            "Examples",
        ] {
            assert!(text.contains(needle), "{needle} missing from --help");
        }
        assert!(out.stderr.is_empty());
    }
}

#[test]
fn version_goes_to_stdout_and_exits_0() {
    let _w = common::watchdog("version", TEST_LIMIT);
    let dir = Scratch::new("version");
    for flag in ["-V", "--version"] {
        let out = localproxy(&dir.0, &[flag], &[]);
        assert_eq!(out.status.code(), Some(0));
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.starts_with(&format!("localproxy {}", env!("CARGO_PKG_VERSION"))));
    }
}

#[test]
fn parser_errors_use_the_reference_parser_words() {
    let _w = common::watchdog("parser_errors", TEST_LIMIT);
    rejects(
        &["-s", "5555", "--frobnicate"],
        Some("unrecognised option '--frobnicate'"),
        "--frobnicate",
    );
    rejects(
        &["-s", "5555", "-Z"],
        Some("unrecognised option '-Z'"),
        "-Z",
    );
    rejects(
        &["-s"],
        Some("the required argument for option '--source-listen-port' is missing"),
        "-s/--source-listen-port takes a value",
    );
    rejects(
        &["-s", "5555", "--settings-json"],
        Some("the required argument for option '--settings-json' is missing"),
        "--settings-json",
    );
    rejects(
        &["-v", "-s", "5555"],
        Some("the required argument for option '--verbose' is missing"),
        "-v/--verbose",
    );
    rejects(
        &["-s", "5555", "-r", "us-east-1", "--region", "eu-west-1"],
        Some("option '--region' cannot be specified more than once"),
        "only -s and -d may be given more than once",
    );
    rejects(
        &["-s", "5555", "--conf", "x"],
        Some("option '--conf' is ambiguous and matches '--config', and '--config-dir'"),
        "--config-dir",
    );
    rejects(
        &["-s", "5555", "--verbose="],
        Some("the argument for option '--verbose' should follow immediately after the equal sign"),
        "--verbose",
    );
    rejects(
        &["-s", "5555", "--no-ssl-host-verify=yes"],
        Some("option '--no-ssl-host-verify' does not take any arguments"),
        "--no-ssl-host-verify",
    );
    rejects(
        &["-s", "5555", "stray"],
        None,
        "unexpected argument 'stray'",
    );
}

#[test]
fn value_errors_use_the_reference_words() {
    let _w = common::watchdog("value_errors", TEST_LIMIT);
    rejects(
        &["-s", "5555", "-v", "65536"],
        Some("the argument ('65536') for option '--verbose' is invalid"),
        "-v/--verbose",
    );
    rejects(
        &["-s", "5555", "-v", "debug"],
        Some("the argument ('debug') for option '--verbose' is invalid"),
        "-v/--verbose",
    );
    rejects(
        &["-m", "both"],
        Some("Mode value is wrong! Allowed values are: src, dst, source, destination"),
        "-m/--mode",
    );
    rejects(
        &["-s", "5555", "-y", "V9"],
        None,
        "-y/--destination-client-type",
    );
    // V1 messages carry no service id: one service only.
    rejects(
        &["-s", "SSH1=5555,HTTP=5556", "-y", "V1"],
        None,
        "-y/--destination-client-type V1 on the command line with 2 services (SSH1, HTTP)",
    );
    rejects(
        &["-s", "0"],
        Some("Port must be between 1 and 65535"),
        "-s/--source-listen-port",
    );
    rejects(
        &["-s", "SSH1=65536"],
        Some("Port must be between 1 and 65535"),
        "-s/--source-listen-port",
    );
    rejects(
        &["-d", "SSH=localhost:0"],
        Some("Port must be between 1 and 65535"),
        "-d/--destination-app",
    );
    rejects(
        &["-d", "SSH=localhost:ssh"],
        Some("Port must contain only digits"),
        "-d/--destination-app",
    );
    rejects(
        &["-s", "5555,SSH2=6666"],
        Some("Wrong format for the port mappings! Example: SSH1=5555,SSH2=6666."),
        "ID=value",
    );
    rejects(
        &["-s", "SSH1="],
        Some("Wrong format for the port mappings: SSH1= .Example: SSH1=5555"),
        "-s/--source-listen-port",
    );
    rejects(&["-s", "SSH1=5555,SSH1=6666"], None, "'SSH1'");
    rejects(
        &["-s", "5555", "-b", "a b"],
        Some("Bind address contains invalid characters"),
        "-b/--local-bind-address",
    );
    let dir = Scratch::new("values");
    let out = localproxy(
        &dir.0,
        &["-s", "5555", "-r", "Us-East-1"],
        &[("AWSIOT_TUNNEL_ACCESS_TOKEN", TOKEN)],
    );
    assert_usage_error(
        &out,
        &[
            "localproxy: Region must contain only lowercase letters, numbers, and hyphens\n",
            "-r/--region",
        ],
    );
    let out = localproxy(
        &dir.0,
        &["-s", "5555", "-e", "h:99999"],
        &[("AWSIOT_TUNNEL_ACCESS_TOKEN", TOKEN)],
    );
    assert_usage_error(
        &out,
        &[
            "localproxy: Invalid endpoint specified: h:99999\n",
            "-e/--proxy-endpoint",
        ],
    );
}

#[test]
fn required_and_exclusive_options() {
    let _w = common::watchdog("required", TEST_LIMIT);
    let dir = Scratch::new("required");
    let out = localproxy(&dir.0, &["-r", "us-east-1", "-s", "5555"], &[]);
    assert_usage_error(
        &out,
        &[
            "localproxy: the option '--access-token' is required but missing\n",
            "-t/--access-token",
        ],
    );
    rejects(
        &["-s", "5555", "-r", "us-east-1", "-e", "localhost"],
        Some("Must specify one and only one of --region/-r or --proxy-endpoint/-e options"),
        "-r/--region and -e/--proxy-endpoint",
    );
    let out = localproxy(&dir.0, &["-s", "5555", "-t", TOKEN], &[]);
    assert_usage_error(
        &out,
        &[
            "localproxy: Must specify one and only one of --region/-r or --proxy-endpoint/-e \
             options\n",
            "-r/--region",
        ],
    );
    rejects(
        &[],
        Some("Must specify one of --source-listen-port/-s or --destination-app/-d or --mode"),
        "-m/--mode",
    );
    rejects(
        &["-s", "5555", "-d", "22"],
        Some("Must specify one and only one of --source-listen-port/-s or --destination-app/-d"),
        "-d/--destination-app",
    );
    rejects(
        &["-m", "dst", "-s", "5555"],
        Some("-s and --mode have mismatched mode. Mode is set to destination!"),
        "-s/--source-listen-port",
    );
    rejects(
        &["-m", "src", "-d", "22"],
        Some("-s and --mode have mismatched mode. Mode is set to source!"),
        "-d/--destination-app",
    );
}

#[test]
fn token_errors_never_show_the_token() {
    let _w = common::watchdog("tokens", TEST_LIMIT);
    rejects(
        &["-s", "5555", "-i", "short-SECRET"],
        Some("Client token must be between 32 and 128 characters"),
        "-i/--client-token",
    );
    rejects(
        &["-s", "5555", "-i", &format!("{CLIENT}!")],
        None,
        "-i/--client-token",
    );
    rejects(
        &["-s", "5555", "-t", "SECRET\u{7}bell"],
        Some("Access token contains invalid control characters"),
        "-t/--access-token",
    );
    // A value glued to an option, the option spelt right or not.
    rejects(
        &["-s", "5555", "--access-tokenSECRETvalue"],
        Some("unrecognised option '--access-token...'"),
        "-t/--access-token VALUE",
    );
    rejects(
        &["-s", "5555", "--acess-tokenSECRETvalue"],
        Some("unrecognised option '--acess-token...'"),
        "unrecognised",
    );
    let dir = Scratch::new("echo");
    let out = localproxy(
        &dir.0,
        &["-t", TOKEN, "-i", CLIENT, "-s", "0", "-r", "us-east-1"],
        &[],
    );
    assert_usage_error(&out, &["-s/--source-listen-port"]);
}

/// A variable that is not UTF-8 would read as unset: a web proxy bypassed
/// without a word, a token reported missing. It is refused by name.
#[test]
fn an_environment_variable_that_is_not_utf8_is_refused_by_name() {
    use std::os::unix::ffi::OsStrExt;
    let _w = common::watchdog("env_utf8", TEST_LIMIT);
    let dir = Scratch::new("envutf8");
    for name in ["HTTPS_PROXY", "no_proxy", "AWSIOT_TUNNEL_ACCESS_TOKEN"] {
        let child = command(&dir.0, &["-s", "5555"], &BASE_ENV)
            .env(
                name,
                std::ffi::OsStr::from_bytes(b"http://alice:caf\xe9@127.0.0.1:1"),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run localproxy");
        let out = child.wait_with_output().expect("wait");
        assert_usage_error(
            &out,
            &[&format!("environment variable {name} is not valid UTF-8")],
        );
    }
}

#[test]
fn config_file_errors_use_the_reference_words() {
    let _w = common::watchdog("config_file", TEST_LIMIT);
    let dir = Scratch::new("cfgread");
    let missing = dir.path("absent.ini");
    rejects(
        &["--config", &missing],
        Some(&format!(
            "can not read options configuration file '{missing}'"
        )),
        "--config file",
    );
    // Gives everything but the token: the error is about the token.
    let ini = dir.file(
        "tunnel.ini",
        "# tunnel\nregion = us-east-1\nsource-listen-port = 5555\n",
    );
    let out = localproxy(&dir.0, &["--config", &ini], &[]);
    assert_usage_error(
        &out,
        &["the option '--access-token' is required but missing"],
    );
    // Its values are checked, and errors name the file and line.
    let ini = dir.file("bad.ini", "region = us-east-1\nsource-listen-port = 0\n");
    let out = localproxy(
        &dir.0,
        &["--config", &ini],
        &[("AWSIOT_TUNNEL_ACCESS_TOKEN", TOKEN)],
    );
    assert_usage_error(&out, &["bad.ini, line 2"]);
    let ini = dir.file("key.ini", "region = us-east-1\nlisten = 5555\n");
    rejects(
        &["--config", &ini],
        Some("unrecognised option 'listen'"),
        "'listen'",
    );
    let ini = dir.file("twice.ini", "region = us-east-1\nregion = eu-west-1\n");
    rejects(
        &["--config", &ini],
        Some("option 'region' cannot be specified more than once"),
        "line 1",
    );
    let ini = dir.file("line.ini", "AQGAAXhQSECRETtokenWithoutItsKey\n");
    rejects(
        &["--config", &ini],
        Some("the options configuration file contains an invalid line"),
        "line.ini, line 1",
    );
    let ini = dir.file("k.ini", "no-ssl-host-verify = maybe\n");
    rejects(
        &["-s", "1", "--config", &ini],
        Some(
            "the argument ('maybe') for option 'no-ssl-host-verify' is invalid. Valid choices \
             are 'on|off', 'yes|no', '1|0' and 'true|false'",
        ),
        "-k/--no-ssl-host-verify",
    );
    // The command line wins over the file: its -d contradicts the file's -m.
    let ini = dir.file("mode.ini", "mode = src\nregion = us-east-1\n");
    let out = localproxy(
        &dir.0,
        &["--config", &ini, "-d", "22"],
        &[("AWSIOT_TUNNEL_ACCESS_TOKEN", TOKEN)],
    );
    assert_usage_error(&out, &["mode.ini, line 1"]);
}

#[test]
fn config_dirs() {
    let _w = common::watchdog("config_dirs", TEST_LIMIT);
    let dir = Scratch::new("nocfgdir");
    let missing = dir.path("absent");
    rejects(
        &["-m", "src", "--config-dir", &missing],
        Some(&format!("Invalid configuration directory: {missing}")),
        "--config-dir",
    );
    // The default ./config is read; a file in it that is not INI is
    // skipped (as by the reference), a service mapped twice is refused.
    let dir = Scratch::new("defdir");
    dir.file("config/README", "Port mappings for this project.\n");
    dir.file("config/more.ini", "SSH1 = 6666\n");
    dir.file("config/services.ini", "SSH1 = 5555\n");
    let out = localproxy(&dir.0, &["-m", "src"], &BASE_ENV);
    assert_usage_error(&out, &["more.ini, line 1", "services.ini, line 1"]);
}

#[test]
fn settings_file_errors_name_the_key() {
    let _w = common::watchdog("settings_errors", TEST_LIMIT);
    let dir = Scratch::new("settingsbad");
    let json = dir.file(
        "s.json",
        r#"{"tunneling":{"proxy":{"websocket":{"ping_period_ms":"soon"}}}}"#,
    );
    rejects(
        &["-s", "5555", "--settings-json", &json],
        None,
        "tunneling.proxy.websocket.ping_period_ms",
    );
    let json = dir.file(
        "cap.json",
        r#"{"tunneling":{"proxy":{"tcp":{"max_active_connections":"0"}}}}"#,
    );
    rejects(
        &["-s", "5555", "--settings-json", &json],
        None,
        "tunneling.proxy.tcp.max_active_connections': expected an integer >= 1",
    );
    let missing = dir.path("absent.json");
    let out = localproxy(
        &dir.0,
        &["-s", "5555", "--settings-json", &missing],
        &BASE_ENV,
    );
    // The cause follows once, after our words.
    assert_usage_error(
        &out,
        &["--settings-json file", "cannot be read: No such file"],
    );
}

#[test]
fn export_is_the_reference_plus_ours_and_reads_back() {
    let _w = common::watchdog("export", TEST_LIMIT);
    let dir = Scratch::new("export");
    let file = dir.path("lpsettings.json");
    let out = localproxy(&dir.0, &["--export-default-settings", &file], &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = fs::read_to_string(&file).unwrap();
    assert_eq!(text, config::export_settings_json(&Settings::default()));
    // Every line of the reference's export is in ours, in the same order.
    let reference = include_str!("data/reference-settings.json");
    let mut ours = text.lines();
    for line in reference.lines() {
        let bare = line.trim_end_matches(',');
        assert!(
            ours.any(|l| l.trim_end_matches(',') == bare),
            "{line:?} missing or out of order in {text}"
        );
    }
    assert_eq!(
        config::export_reference_settings_json(&Settings::default()),
        reference
    );

    // Import: the file the binary wrote, and the reference's, give the defaults.
    let reference_file = dir.file("reference.json", reference);
    for path in [&file, &reference_file] {
        let args: Vec<String> = ["-s", "5555", "-r", "us-east-1", "--settings-json", path]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let env = |name: &str| (name == "AWSIOT_TUNNEL_ACCESS_TOKEN").then(|| TOKEN.to_string());
        match config::parse(&args, &env) {
            Ok(Action::Run(c, notes)) => {
                assert_eq!(c.settings, Settings::default());
                assert!(notes.warnings.is_empty(), "{:?}", notes.warnings);
            }
            other => panic!("{other:?}"),
        }
    }

    // A file that cannot be written: the reference's words, ours, the cause.
    let bad = dir.path("no/such/dir/s.json");
    let out = localproxy(&dir.0, &["--export-default-settings", &bad], &[]);
    assert_usage_error(
        &out,
        &[
            &format!("localproxy: {bad}: cannot open file\n"),
            "--export-default-settings cannot write",
            "No such file or directory",
        ],
    );
}

/// `-r REGION` with a `region_endpoint_overrides` entry the user added goes
/// to that endpoint: here a loopback listener, which sees the TLS handshake.
#[test]
fn a_user_region_override_routes_r_to_its_endpoint() {
    let _w = common::watchdog("region_override", TEST_LIMIT);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let dir = Scratch::new("route");
    let json = dir.file(
        "s.json",
        &format!(
            r#"{{"tunneling":{{"proxy":{{"region_endpoint_overrides":{{"lab-test-1":"127.0.0.1:{port}"}},
                "websocket":{{"connect_retry_count":"0"}}}}}}}}"#
        ),
    );
    let mut child = command(
        &dir.0,
        &["-r", "lab-test-1", "-d", "22", "--settings-json", &json],
        &[("AWSIOT_TUNNEL_ACCESS_TOKEN", TOKEN)],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(listener.accept());
    });
    let accepted = rx.recv_timeout(Duration::from_secs(15));
    let Ok(Ok((mut conn, _))) = accepted else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("no connection from the proxy to the override's endpoint: {accepted:?}");
    };
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut first = [0u8; 1];
    let read = conn.read_exact(&mut first);
    let _ = child.kill();
    let _ = child.wait();
    read.expect("the proxy's first byte");
    assert_eq!(first[0], 0x16, "a TLS handshake record");
}

#[test]
fn client_token_file_errors() {
    let _w = common::watchdog("client_token_file", TEST_LIMIT);
    use std::os::unix::fs::PermissionsExt;
    let dir = Scratch::new("ctf");
    let file = dir.file("client-token", &format!("{CLIENT}\n"));
    fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
    rejects(
        &["-d", "22", "--client-token-file", &file],
        None,
        &format!("chmod 600 {file}"),
    );
    rejects(
        &["-d", "22", "-i", CLIENT, "--client-token-file", &file],
        None,
        "both give the client token",
    );
    let link = dir.path("link");
    std::os::unix::fs::symlink(&file, &link).unwrap();
    rejects(
        &["-d", "22", "--client-token-file", &link],
        None,
        "symbolic link",
    );
}

/// A closed stderr (its reader gone: EPIPE) or a full disk does not turn a
/// documented exit status into a panic's 101: supervisors decide on it.
#[test]
fn an_unwritable_stderr_keeps_the_exit_status() {
    let _w = common::watchdog("stderr_epipe", TEST_LIMIT);
    let dir = Scratch::new("epipe");
    let (read_end, write_end) = common::os_pipe();
    drop(read_end);
    let full = fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full");
    for stderr in [Stdio::from(write_end), Stdio::from(full)] {
        let status = command(&dir.0, &["--frob"], &BASE_ENV)
            .stdout(Stdio::null())
            .stderr(stderr)
            .status()
            .expect("run localproxy");
        assert_eq!(status.code(), Some(1), "{status:?}");
    }
}
