//! Black-box tests of the `localproxy` command line: every configuration error
//! exits 1 naming the option, `--help`/`--version` print to stdout, and the
//! exported settings read back to the defaults. The environment is cleared for
//! every run, so nothing of the developer's shell leaks in.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use localproxy::config::{self, Action, Settings, TRY_HELP};

const TOKEN: &str = "AQGAAXhQSECRETaccessTOKEN";
const CLIENT: &str = "0123456789abcdef-0123456789abcdef";

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

/// Runs the binary in `cwd` with only PATH and `env` in its environment.
fn localproxy(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_localproxy"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .current_dir(cwd)
        .args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run localproxy")
}

/// Asserts a usage error: exit 1, nothing on stdout, one message on stderr
/// naming `needle`, ending with the Try line, and no token in it.
fn assert_usage_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        out.stdout.is_empty(),
        "stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(stderr.contains(needle), "expected {needle:?} in: {stderr}");
    assert!(stderr.trim_end().ends_with(TRY_HELP), "{stderr}");
    assert_eq!(stderr.matches(TRY_HELP).count(), 1, "{stderr}");
    assert!(!stderr.contains("SECRET"), "access token leaked: {stderr}");
    assert!(!stderr.contains(CLIENT), "client token leaked: {stderr}");
}

/// Runs with a complete valid base (token and region in the environment)
/// plus `args`, expecting a usage error naming `needle`.
fn rejects(args: &[&str], needle: &str) {
    static COUNT: AtomicUsize = AtomicUsize::new(0);
    let dir = Scratch::new(&format!("rej-{}", COUNT.fetch_add(1, Ordering::Relaxed)));
    let env = [
        ("AWSIOT_TUNNEL_ACCESS_TOKEN", TOKEN),
        ("AWSIOT_TUNNEL_REGION", "us-east-1"),
    ];
    assert_usage_error(&localproxy(&dir.0, args, &env), needle);
}

#[test]
fn help_goes_to_stdout_and_exits_0() {
    let dir = Scratch::new("help");
    for flag in ["-h", "--help"] {
        let out = localproxy(&dir.0, &[flag], &[]);
        assert_eq!(out.status.code(), Some(0));
        let text = String::from_utf8(out.stdout).unwrap();
        for needle in [
            "--access-token",
            "--destination-client-type",
            "--config-dir",
            "--export-default-settings",
            "AWSIOT_TUNNEL_ACCESS_TOKEN",
            "AWSIOT_TUNNEL_CLIENT_TOKEN",
            "AWSIOT_TUNNEL_ENDPOINT",
            "AWSIOT_TUNNEL_REGION",
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
    let dir = Scratch::new("version");
    for flag in ["-V", "--version"] {
        let out = localproxy(&dir.0, &[flag], &[]);
        assert_eq!(out.status.code(), Some(0));
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.starts_with(&format!("localproxy {}", env!("CARGO_PKG_VERSION"))));
    }
}

#[test]
fn missing_access_token() {
    let dir = Scratch::new("notoken");
    let out = localproxy(&dir.0, &["-r", "us-east-1", "-s", "5555"], &[]);
    assert_usage_error(&out, "-t/--access-token");
}

#[test]
fn region_and_endpoint_together() {
    rejects(
        &["-s", "5555", "-r", "us-east-1", "-e", "localhost"],
        "-r/--region and -e/--proxy-endpoint",
    );
}

#[test]
fn neither_region_nor_endpoint() {
    let dir = Scratch::new("noendpoint");
    let out = localproxy(&dir.0, &["-s", "5555", "-t", TOKEN], &[]);
    assert_usage_error(&out, "-r/--region");
}

#[test]
fn no_mode() {
    rejects(&[], "-m/--mode");
}

#[test]
fn source_with_destination() {
    rejects(&["-s", "5555", "-d", "22"], "-d/--destination-app");
}

#[test]
fn source_contradicting_mode() {
    rejects(&["-m", "dst", "-s", "5555"], "-s/--source-listen-port");
}

#[test]
fn destination_contradicting_mode() {
    rejects(&["-m", "src", "-d", "22"], "-d/--destination-app");
}

#[test]
fn bad_mode_value() {
    rejects(&["-m", "both"], "-m/--mode");
}

#[test]
fn bad_destination_client_type() {
    rejects(&["-s", "5555", "-y", "V9"], "-y/--destination-client-type");
}

#[test]
fn port_zero_refused_for_source() {
    rejects(&["-s", "0"], "-s/--source-listen-port");
}

#[test]
fn port_zero_refused_for_destination() {
    rejects(&["-d", "SSH=localhost:0"], "-d/--destination-app");
}

#[test]
fn port_above_65535_refused() {
    rejects(&["-s", "SSH1=65536"], "-s/--source-listen-port");
}

#[test]
fn duplicate_service_id() {
    rejects(&["-s", "SSH1=5555,SSH1=6666"], "'SSH1'");
}

#[test]
fn bad_client_token() {
    rejects(&["-s", "5555", "-i", "short-SECRET"], "-i/--client-token");
    rejects(
        &["-s", "5555", "-i", &format!("{CLIENT}!")],
        "-i/--client-token",
    );
}

#[test]
fn unreadable_config_file() {
    let dir = Scratch::new("nocfg");
    let missing = dir.path("absent.ini");
    rejects(&["--config", &missing], "--config file");
}

#[test]
fn unreadable_config_dir() {
    let dir = Scratch::new("nocfgdir");
    let missing = dir.path("absent");
    rejects(&["-m", "src", "--config-dir", &missing], "--config-dir");
}

#[test]
fn unknown_option() {
    rejects(&["-s", "5555", "--frobnicate"], "--frobnicate");
}

#[test]
fn option_missing_its_value() {
    rejects(&["-s"], "-s");
    rejects(&["-s", "5555", "--settings-json"], "--settings-json");
}

#[test]
fn bad_verbosity() {
    rejects(&["-s", "5555", "-v", "256"], "-v/--verbose");
    rejects(&["-s", "5555", "-v", "debug"], "-v/--verbose");
}

#[test]
fn token_on_the_command_line_is_not_echoed_in_errors() {
    let dir = Scratch::new("echo");
    let out = localproxy(
        &dir.0,
        &["-t", TOKEN, "-i", CLIENT, "-s", "0", "-r", "us-east-1"],
        &[],
    );
    assert_usage_error(&out, "-s/--source-listen-port");
}

#[test]
fn config_file_is_read() {
    let dir = Scratch::new("cfgread");
    // Gives everything but the token: the error is about the token.
    let ini = dir.file(
        "tunnel.ini",
        "# tunnel\nregion = us-east-1\nsource-listen-port = 5555\n",
    );
    let out = localproxy(&dir.0, &["--config", &ini], &[]);
    assert_usage_error(&out, "-t/--access-token");
    // Its values are checked, and errors name the file and line.
    let ini = dir.file("bad.ini", "region = us-east-1\nsource-listen-port = 0\n");
    let out = localproxy(
        &dir.0,
        &["--config", &ini],
        &[("AWSIOT_TUNNEL_ACCESS_TOKEN", TOKEN)],
    );
    assert_usage_error(&out, "bad.ini, line 2");
    let ini = dir.file("key.ini", "region = us-east-1\nlisten = 5555\n");
    let out = localproxy(&dir.0, &["--config", &ini], &[]);
    assert_usage_error(&out, "'listen'");
    // The command line wins over the file: its -d contradicts the file's -m.
    let ini = dir.file("mode.ini", "mode = src\nregion = us-east-1\n");
    let out = localproxy(
        &dir.0,
        &["--config", &ini, "-d", "22"],
        &[("AWSIOT_TUNNEL_ACCESS_TOKEN", TOKEN)],
    );
    assert_usage_error(&out, "mode.ini, line 1");
}

#[test]
fn default_config_dir_is_read_from_the_working_directory() {
    let dir = Scratch::new("defdir");
    dir.file("config/services.ini", "SSH1 = 0\n");
    let env = [
        ("AWSIOT_TUNNEL_ACCESS_TOKEN", TOKEN),
        ("AWSIOT_TUNNEL_REGION", "us-east-1"),
    ];
    let out = localproxy(&dir.0, &["-m", "src"], &env);
    assert_usage_error(&out, "services.ini, line 1");
}

#[test]
fn settings_file_errors_name_the_key() {
    let dir = Scratch::new("settingsbad");
    let json = dir.file(
        "s.json",
        r#"{"tunneling":{"proxy":{"websocket":{"ping_period_ms":"soon"}}}}"#,
    );
    rejects(
        &["-s", "5555", "--settings-json", &json],
        "tunneling.proxy.websocket.ping_period_ms",
    );
    let missing = dir.path("absent.json");
    rejects(
        &["-s", "5555", "--settings-json", &missing],
        "--settings-json file",
    );
}

#[test]
fn export_writes_the_defaults_and_they_read_back() {
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
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        json["tunneling"]["proxy"]["message"]["data_length_size"],
        "2"
    );
    assert_eq!(
        json["tunneling"]["proxy"]["websocket"]["connect_retry_count"],
        "-1"
    );

    // Import: the file the binary wrote gives exactly the defaults.
    let args: Vec<String> = ["-s", "5555", "-r", "us-east-1", "--settings-json", &file]
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

    // A file that cannot be written is an error naming the option.
    let bad = dir.path("no/such/dir/s.json");
    let out = localproxy(&dir.0, &["--export-default-settings", &bad], &[]);
    assert_usage_error(&out, "--export-default-settings");
}
