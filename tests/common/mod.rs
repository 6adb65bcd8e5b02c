//! Test harness: the built binaries as child processes, loopback servers,
//! and waiting for conditions with deadlines (never sleeping to synchronise).
#![allow(dead_code)]

pub mod raw;

/// The service's certificate generation, shared with the tests that need a
/// TLS server of their own (the library has no certificate code).
#[path = "../../src/bin/tunnel-service/cert.rs"]
pub mod cert;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// A binary of this crate: Cargo names it for integration tests; the demo
/// (an example) finds it beside its own executable's parent directory.
fn binary(from_cargo: Option<&'static str>, name: &str) -> PathBuf {
    if let Some(p) = from_cargo {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    dir.join(name)
}

pub fn localproxy_bin() -> PathBuf {
    binary(option_env!("CARGO_BIN_EXE_localproxy"), "localproxy")
}

pub fn service_bin() -> PathBuf {
    binary(
        option_env!("CARGO_BIN_EXE_tunnel-service"),
        "tunnel-service",
    )
}

/// Fails the whole test binary if a test runs past its deadline, so a hang
/// shows up as a failure instead of blocking CI. Dropping the guard disarms it.
pub struct Watchdog {
    done: Arc<(Mutex<bool>, Condvar)>,
}

pub fn watchdog(name: &'static str, limit: Duration) -> Watchdog {
    let done = Arc::new((Mutex::new(false), Condvar::new()));
    let d = done.clone();
    thread::spawn(move || {
        let (lock, cv) = &*d;
        let guard = lock.lock().expect("watchdog lock");
        let (guard, _) = cv
            .wait_timeout_while(guard, limit, |done| !*done)
            .expect("watchdog wait");
        if !*guard {
            // Straight to stderr: eprintln! from a test's thread is captured,
            // and the capture is lost with the process.
            let _ = writeln!(
                std::io::stderr(),
                "WATCHDOG: test {name} still running after {limit:?}: aborting"
            );
            std::process::exit(101);
        }
    });
    Watchdog { done }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        let (lock, cv) = &*self.done;
        if let Ok(mut d) = lock.lock() {
            *d = true;
        }
        cv.notify_all();
    }
}

/// Lines a child printed, shared with the thread that reads them.
#[derive(Clone, Default)]
pub struct Lines(Arc<(Mutex<Vec<String>>, Condvar)>);

impl Lines {
    fn collect(&self, stream: impl Read + Send + 'static, echo: Option<String>) {
        let me = self.clone();
        thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                if let Some(tag) = &echo {
                    eprintln!("[{tag}] {line}");
                }
                let (lock, cv) = &*me.0;
                lock.lock().expect("lines lock").push(line);
                cv.notify_all();
            }
        });
    }

    /// Waits until a line contains `needle`; returns that line.
    pub fn wait_for(&self, needle: &str, limit: Duration) -> String {
        self.wait_for_nth(needle, 1, limit)
    }

    /// Waits until `n` lines contain `needle`; returns the n-th.
    pub fn wait_for_nth(&self, needle: &str, n: usize, limit: Duration) -> String {
        let (lock, cv) = &*self.0;
        let deadline = Instant::now() + limit;
        let mut lines = lock.lock().expect("lines lock");
        loop {
            if let Some(l) = lines.iter().filter(|l| l.contains(needle)).nth(n - 1) {
                return l.clone();
            }
            let now = Instant::now();
            if now >= deadline {
                panic!(
                    "no line with {needle:?} (#{n}) within {limit:?}; got:\n{}",
                    lines.join("\n")
                );
            }
            lines = cv
                .wait_timeout(lines, deadline - now)
                .expect("lines wait")
                .0;
        }
    }

    pub fn count(&self, needle: &str) -> usize {
        let (lock, _) = &*self.0;
        lock.lock()
            .expect("lines lock")
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    pub fn all(&self) -> String {
        self.0 .0.lock().expect("lines lock").join("\n")
    }
}

/// A child process killed when dropped, with its output collected.
pub struct Proc {
    pub child: Child,
    pub stdout: Lines,
    pub stderr: Lines,
}

impl Proc {
    pub fn spawn(mut cmd: Command, tag: &str) -> Proc {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: prctl in the forked child before exec: the child dies with
        // the test process, so an aborted test leaves no process behind.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("spawn child");
        let stdout = Lines::default();
        let stderr = Lines::default();
        let echo = std::env::var("TEST_ECHO").ok().map(|_| tag.to_string());
        stdout.collect(child.stdout.take().expect("stdout"), echo.clone());
        stderr.collect(child.stderr.take().expect("stderr"), echo);
        Proc {
            child,
            stdout,
            stderr,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> i32 {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code().unwrap_or(-1);
            }
            if Instant::now() >= deadline {
                panic!(
                    "process did not exit within {limit:?}; stderr:\n{}",
                    self.stderr.all()
                );
            }
            thread::sleep(Duration::from_millis(10)); // polling interval, not synchronisation
        }
    }

    /// Everything the process wrote to stderr, once its final message
    /// (`localproxy: ...`, printed just before a failing exit) has been read.
    pub fn final_stderr(&self) -> String {
        self.stderr
            .wait_for("localproxy: ", Duration::from_secs(20));
        self.stderr.all()
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The local tunneling service, started as a child.
pub struct Service {
    pub proc: Proc,
    pub data_addr: String,
    pub api_addr: String,
    pub ca_dir: PathBuf,
}

pub struct Tunnel {
    pub id: String,
    pub source_token: String,
    pub destination_token: String,
}

impl Service {
    pub fn start(extra: &[&str]) -> Service {
        let mut cmd = Command::new(service_bin());
        cmd.args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--api-listen",
            "127.0.0.1:0",
        ])
        .args(extra);
        let proc = Proc::spawn(cmd, "service");
        let ready = proc.stdout.wait_for("READY", Duration::from_secs(20));
        let fields: HashMap<&str, &str> = ready
            .split_whitespace()
            .filter_map(|f| f.split_once('='))
            .collect();
        Service {
            data_addr: fields["data"].to_string(),
            api_addr: fields["api"].to_string(),
            ca_dir: PathBuf::from(fields.get("ca_dir").copied().unwrap_or("")),
            proc,
        }
    }

    pub fn port(&self) -> u16 {
        self.data_addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("data port")
    }

    /// Runs a client subcommand against this service; returns stdout.
    pub fn client(&self, args: &[&str]) -> String {
        let out = Command::new(service_bin())
            .args(args)
            .args(["--api", &self.api_addr])
            .output()
            .expect("run client");
        assert!(
            out.status.success(),
            "tunnel-service {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until the service has attached the tunnel's `side`
    /// ("source" or "destination"): a proxy logs its connection a moment
    /// before the service registers it, and what it sends meanwhile may be
    /// refused.
    pub fn wait_attached(&self, tunnel_id: &str, side: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        let body = format!(r#"{{"tunnelId":"{tunnel_id}"}}"#);
        loop {
            let (status, _, v) =
                raw::raw_call(&self.api_addr, "IoTSecuredTunneling.DescribeTunnel", &body);
            let state = &v["tunnel"][format!("{side}ConnectionState")]["status"];
            if status == 200 && state == "CONNECTED" {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the service did not attach the {side} within {limit:?}: {status} {v}"
            );
            thread::sleep(Duration::from_millis(10)); // polling interval
        }
    }

    pub fn open(&self, services: &[&str]) -> Tunnel {
        let mut args = vec!["open", "--format", "env"];
        let list = services.join(",");
        if !services.is_empty() {
            args.extend(["--services", &list]);
        }
        let out = self.client(&args);
        let kv: HashMap<&str, &str> = out
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim(), v.trim().trim_matches('\'').trim_matches('"')))
            .collect();
        Tunnel {
            id: kv["TUNNEL_ID"].to_string(),
            source_token: kv["SOURCE_TOKEN"].to_string(),
            destination_token: kv["DESTINATION_TOKEN"].to_string(),
        }
    }
}

/// A `localproxy` child pointed at the local service.
pub fn proxy(service: &Service, token: &str, args: &[&str], tag: &str) -> Proc {
    proxy_with_env(service, token, args, &[], tag)
}

/// [`proxy`] with extra environment variables.
pub fn proxy_with_env(
    service: &Service,
    token: &str,
    args: &[&str],
    env: &[(&str, &str)],
    tag: &str,
) -> Proc {
    let mut cmd = Command::new(localproxy_bin());
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWSIOT_TUNNEL_ACCESS_TOKEN", token)
        .args(["-e", &format!("127.0.0.1:{}", service.port())])
        .args(["-c", service.ca_dir.to_str().expect("utf-8 path")])
        .args([
            "--settings-json",
            fast_settings().to_str().expect("utf-8 path"),
        ])
        .args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    Proc::spawn(cmd, tag)
}

/// A `localproxy` child for `127.0.0.1:port` with a settings file of its
/// own, `-c ca_dir` only when given, and extra environment variables (the
/// rest of the environment is cleared, as in [`proxy`]).
pub fn proxy_with(
    port: u16,
    ca_dir: Option<&std::path::Path>,
    token: &str,
    args: &[&str],
    tag: &str,
    env: &[(&str, &str)],
    settings: &std::path::Path,
) -> Proc {
    let mut cmd = Command::new(localproxy_bin());
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWSIOT_TUNNEL_ACCESS_TOKEN", token)
        .envs(env.iter().copied())
        .args(["-e", &format!("127.0.0.1:{port}")])
        .args(["--settings-json", settings.to_str().expect("utf-8 path")]);
    if let Some(d) = ca_dir {
        cmd.args(["-c", d.to_str().expect("utf-8 path")]);
    }
    cmd.args(args);
    Proc::spawn(cmd, tag)
}

/// A settings file `name` in the temp dir holding `json` (written once per
/// test process).
pub fn settings_file(name: &str, json: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!(
        "localproxy-test-{name}-{}.json",
        std::process::id()
    ));
    std::fs::write(&path, json).expect("write settings");
    path
}

/// A fresh, empty directory under the temp dir for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("localproxy-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// A new pipe: (read end, write end).
pub fn os_pipe() -> (std::os::fd::OwnedFd, std::os::fd::OwnedFd) {
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    // SAFETY: pipe fills the two descriptors it is given.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0, "pipe");
    // SAFETY: both descriptors are new and owned by nothing else.
    unsafe {
        (
            std::os::fd::OwnedFd::from_raw_fd(fds[0]),
            std::os::fd::OwnedFd::from_raw_fd(fds[1]),
        )
    }
}

/// Entries of /proc/PID/fd and /proc/PID/task: open descriptors, threads.
pub fn fds_and_threads(pid: u32) -> (usize, usize) {
    let count = |what: &str| {
        std::fs::read_dir(format!("/proc/{pid}/{what}"))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    (count("fd"), count("task"))
}

/// Sends `len` bytes through a new connection to `port` and checks the echo;
/// retries (until `limit`) while the tunnel is not yet usable end to end,
/// which shows as the connection closing early. Returns the attempts made.
pub fn echo_eventually(port: u16, seed: u64, len: usize, limit: Duration) -> usize {
    let data = Arc::new(random_bytes(seed, len));
    let deadline = Instant::now() + limit;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let s = connect(port);
        // A path that silently lost the stream shows within seconds.
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let d = data.clone();
        let got = thread::spawn(move || {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| echo_through(s, d)))
        })
        .join()
        .expect("echo thread");
        match got {
            Ok(got) => {
                assert!(got == *data, "echo through port {port} corrupted");
                return attempts;
            }
            Err(_) if Instant::now() < deadline => {}
            Err(_) => panic!("no echo through port {port} within {limit:?} ({attempts} attempts)"),
        }
    }
}

/// Settings that keep retry delays short in tests.
pub fn fast_settings() -> PathBuf {
    let path = std::env::temp_dir().join(format!(
        "localproxy-test-settings-{}.json",
        std::process::id()
    ));
    if !path.exists() {
        let json = r#"{"tunneling":{"proxy":{"tcp":{"connection_retry_count":"1","connection_retry_delay_ms":"100"},"websocket":{"retry_delay_ms":"200"}}}}"#;
        let tmp = path
            .with_extension(format!("{:?}.tmp", thread::current().id()).replace(['(', ')'], ""));
        std::fs::write(&tmp, json).expect("write settings");
        std::fs::rename(&tmp, &path).expect("rename settings");
    }
    path
}

/// Source proxy's listening port for a service, from its log.
pub fn listening_port(source: &Proc, service: &str) -> u16 {
    let needle = format!("for service {service}");
    let line = source.stderr.wait_for(&needle, Duration::from_secs(20));
    line.split("on port ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"))
}

/// An echo server on 127.0.0.1:0; returns its port. Runs until the test ends.
pub fn echo_server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind echo");
    let port = l.local_addr().expect("addr").port();
    thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            thread::spawn(move || {
                let mut r = s.try_clone().expect("clone");
                let _ = std::io::copy(&mut r, &mut s);
                let _ = s.shutdown(Shutdown::Write);
            });
        }
    });
    port
}

/// A TCP client to 127.0.0.1:port with timeouts, retrying until the port accepts.
pub fn connect(port: u16) -> TcpStream {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => {
                s.set_read_timeout(Some(Duration::from_secs(30)))
                    .expect("timeout");
                s.set_write_timeout(Some(Duration::from_secs(30)))
                    .expect("timeout");
                return s;
            }
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                thread::sleep(Duration::from_millis(20)); // polling interval
            }
            Err(e) => panic!("cannot connect to 127.0.0.1:{port}: {e}"),
        }
    }
}

/// Deterministic pseudo-random bytes.
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    // Spread the seed first: `seed | 1` alone made seeds 2k and 2k+1 equal.
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x2545_f491_4f6c_dd1d | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    openssl::sha::sha256(data)
}

/// Sends `data` through `stream` while reading the echo; returns what came back.
pub fn echo_through(stream: TcpStream, data: Arc<Vec<u8>>) -> Vec<u8> {
    let mut w = stream.try_clone().expect("clone");
    let d = data.clone();
    let writer = thread::spawn(move || {
        for chunk in d.chunks(16 * 1024) {
            w.write_all(chunk).expect("write through tunnel");
        }
    });
    let mut r = stream;
    let mut got = Vec::with_capacity(data.len());
    let mut buf = vec![0u8; 64 * 1024];
    while got.len() < data.len() {
        let n = r.read(&mut buf).expect("read echo");
        assert!(
            n > 0,
            "connection closed after {} of {} bytes",
            got.len(),
            data.len()
        );
        got.extend_from_slice(&buf[..n]);
    }
    writer.join().expect("writer");
    got
}

/// Waits until the peer closes `stream`: a read returns 0 (an orderly close)
/// or fails with a reset. A read timeout is not a close: reading goes on
/// until `limit`, then the test fails naming `what`. Returns the bytes that
/// arrived before the close (callers expecting none assert it is empty).
pub fn wait_closed(stream: &mut TcpStream, what: &str, limit: Duration) -> Vec<u8> {
    use std::io::ErrorKind;
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "{what}: connection still open after {limit:?} ({} bytes read)",
            got.len()
        );
        stream.set_read_timeout(Some(left)).expect("read timeout");
        match stream.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                ) =>
            {
                return got
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(e) => panic!("{what}: read failed ({e}) instead of seeing a close"),
        }
    }
}

/// The line both proxies log once connected to the service.
pub const CONNECTED: &str = "Successfully established websocket connection with proxy server";

/// A service, a tunnel, and both proxies connected to it: the destination
/// maps `map` (the first service is the one `port` listens for), the source
/// takes the advertised services on free ports.
pub struct Pair {
    pub service: Service,
    pub tunnel: Tunnel,
    pub dest: Proc,
    pub source: Proc,
    pub port: u16,
}

/// How to start a [`Pair`]; `Default` is a new service, one tunnel service
/// (SSH1) and the fast test settings.
#[derive(Default)]
pub struct PairOpts<'a> {
    /// A service already started (with faults, a state file...).
    pub service: Option<Service>,
    pub services: &'a [&'a str],
    pub dest_extra: &'a [&'a str],
    pub src_extra: &'a [&'a str],
    pub dest_settings: Option<&'a std::path::Path>,
    pub src_settings: Option<&'a std::path::Path>,
}

impl Pair {
    pub fn start(map: &str, o: PairOpts<'_>) -> Pair {
        let service = o.service.unwrap_or_else(|| Service::start(&[]));
        let services = if o.services.is_empty() {
            &["SSH1"][..]
        } else {
            o.services
        };
        let tunnel = service.open(services);
        let fast = fast_settings();
        let start = |token: &str,
                     args: &[&str],
                     extra: &[&str],
                     settings: Option<&std::path::Path>,
                     tag: &str| {
            let args: Vec<&str> = args.iter().chain(extra).copied().collect();
            proxy_with(
                service.port(),
                Some(&service.ca_dir),
                token,
                &args,
                tag,
                &[],
                settings.unwrap_or(&fast),
            )
        };
        let dest = start(
            &tunnel.destination_token,
            &["-d", map],
            o.dest_extra,
            o.dest_settings,
            "dst",
        );
        let source = start(
            &tunnel.source_token,
            &["-m", "source"],
            o.src_extra,
            o.src_settings,
            "src",
        );
        dest.stderr.wait_for(CONNECTED, Duration::from_secs(20));
        let port = listening_port(&source, services[0]);
        for side in ["source", "destination"] {
            service.wait_attached(&tunnel.id, side, Duration::from_secs(20));
        }
        Pair {
            service,
            tunnel,
            dest,
            source,
            port,
        }
    }

    /// With an echo server behind SSH1.
    pub fn echo(o: PairOpts<'_>) -> Pair {
        Pair::start(&format!("SSH1={}", echo_server()), o)
    }
}
