//! Resilience end to end, with real processes on 127.0.0.1: the service
//! killed and restarted ten times (no descriptor or thread leak), dropped
//! connections, token rotation, connect_retry_count, web proxies (with and
//! without auth, 407, NO_PROXY), certificate rejection, and
//! reconnect_on_data_error=false.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::*;
use localproxy::frame::{encode_frame, message, MessageType};

const SECS_20: Duration = Duration::from_secs(20);
/// Descriptors and threads a proxy may hold above its baseline after the
/// restarts: a local connection's threads and socket end a moment after
/// the client sees its close, and glibc may keep one extra descriptor
/// (e.g. a resolver socket) open. Anything growing per cycle exceeds it.
const LEAK_SLACK: usize = 3;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Calls a LocalTest operation on the service. A proxy logs "Connected"
/// on the 101, a moment before the service registers it: retry while the
/// service says the side is not connected yet.
fn local_test(service: &Service, op: &str, body: serde_json::Value) {
    let deadline = std::time::Instant::now() + SECS_20;
    loop {
        let (status, _, v) = raw::raw_call(&service.api_addr, op, &body.to_string());
        let waiting = status == 400 && v.to_string().contains("connected to tunnel");
        if !waiting || std::time::Instant::now() >= deadline {
            assert_eq!(status, 200, "{op}: {v}");
            return;
        }
        thread::sleep(Duration::from_millis(20)); // polling interval
    }
}

/// Waits until `pid`'s descriptors and threads are back within
/// `LEAK_SLACK` of `base` (they settle shortly after connections close).
fn assert_no_leak(name: &str, pid: u32, base: (usize, usize)) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now = fds_and_threads(pid);
        if now.0 <= base.0 + LEAK_SLACK && now.1 <= base.1 + LEAK_SLACK {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name} leaks: (fds, threads) {base:?} before, {now:?} after"
        );
        thread::sleep(Duration::from_millis(50)); // polling interval
    }
}

/// A service already started, its tunnel, an echo server and both proxies,
/// connected.
fn pair(service: Service, dest_extra: &[&str], src_extra: &[&str]) -> Pair {
    Pair::echo(PairOpts {
        service: Some(service),
        dest_extra,
        src_extra,
        ..PairOpts::default()
    })
}

#[test]
fn service_restarted_ten_times_every_cycle_recovers_without_leaks() {
    let _w = watchdog("restart_ten_times", Duration::from_secs(120));
    let dir = temp_dir("restart");
    let state = dir.join("state.json");
    let certs = dir.join("certs");
    let (state_s, certs_s) = (state.to_str().unwrap(), certs.to_str().unwrap());
    let service = Service::start(&["--state-file", state_s, "--cert-dir", certs_s]);
    let data_port = service.port();
    // The destination with a client token of its own, the source with the
    // one it generates: both must be accepted again after every restart.
    let mut p = pair(
        service,
        &["-i", "restart-test-client-token-0123456789ab"],
        &[],
    );
    echo_eventually(p.port, 0, 4096, SECS_20);
    let base_dst = fds_and_threads(p.dest.pid());
    let base_src = fds_and_threads(p.source.pid());
    let listen = format!("127.0.0.1:{data_port}");
    for cycle in 1..=10u64 {
        let n_src = p.source.stderr.count(CONNECTED);
        let n_dst = p.dest.stderr.count(CONNECTED);
        // SIGKILL: no close frame, the proxies see the connection drop.
        let _ = p.service.proc.child.kill();
        let _ = p.service.proc.child.wait();
        p.service = Service::start(&[
            "--listen",
            &listen,
            "--state-file",
            state_s,
            "--cert-dir",
            certs_s,
        ]);
        p.source.stderr.wait_for_nth(CONNECTED, n_src + 1, SECS_20);
        p.dest.stderr.wait_for_nth(CONNECTED, n_dst + 1, SECS_20);
        echo_eventually(p.port, cycle, 64 * 1024, SECS_20);
        for proc in [&mut p.source, &mut p.dest] {
            assert!(
                proc.child.try_wait().expect("try_wait").is_none(),
                "proxy exited in cycle {cycle}:\n{}",
                proc.stderr.all()
            );
        }
    }
    assert_no_leak("destination", p.dest.pid(), base_dst);
    assert_no_leak("source", p.source.pid(), base_src);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn restarted_service_keeps_tunnels_and_certificate() {
    let _w = watchdog("state_file", Duration::from_secs(60));
    let dir = temp_dir("state");
    let state = dir.join("state.json");
    let certs = dir.join("certs");
    let args = [
        "--state-file",
        state.to_str().unwrap(),
        "--cert-dir",
        certs.to_str().unwrap(),
    ];
    let service = Service::start(&args);
    let tunnel = service.open(&["SSH1", "WEB"]);
    let pem = std::fs::read(certs.join("tunnel-service.pem")).expect("pem");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&state)
            .expect("state written")
            .permissions(),
    );
    assert_eq!(mode & 0o077, 0, "state file holds tokens: owner only");
    drop(service);
    let service = Service::start(&args);
    assert_eq!(
        std::fs::read(certs.join("tunnel-service.pem")).expect("pem"),
        pem,
        "certificate reused"
    );
    let described = service.client(&["describe", "--tunnel-id", &tunnel.id]);
    assert!(
        described.contains("OPEN") && described.contains("WEB"),
        "{described}"
    );
    // The old token is still good after the restart.
    let mut dest = proxy(
        &service,
        &tunnel.destination_token,
        &["-d", "SSH1=22,WEB=80"],
        "dst",
    );
    dest.stderr.wait_for(CONNECTED, SECS_20);
    service.client(&["close", "--tunnel-id", &tunnel.id]);
    assert_eq!(dest.wait_exit(SECS_20), 0, "{}", dest.stderr.all());
    // A closed tunnel stays closed across a restart.
    drop(service);
    let service = Service::start(&args);
    let described = service.client(&["describe", "--tunnel-id", &tunnel.id]);
    assert!(described.contains("CLOSED"), "{described}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn dropped_connections_reconnect_without_a_restart() {
    let _w = watchdog("dropped", Duration::from_secs(60));
    // The destination's first connection drops after 100 kB (a flaky link).
    let service = Service::start(&["--drop-after-bytes", "100000", "--drop-side", "destination"]);
    let p = pair(service, &[], &[]);
    let n_dst = p.dest.stderr.count(CONNECTED);
    // This transfer crosses the drop: the local connection is closed, not hung.
    let s = connect(p.port);
    let data = Arc::new(random_bytes(7, 1 << 20));
    let broken = thread::spawn(move || {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| echo_through(s, data))).is_err()
    });
    assert!(
        broken.join().expect("join"),
        "a transfer across a dropped tunnel fails"
    );
    p.dest.stderr.wait_for_nth(CONNECTED, n_dst + 1, SECS_20);
    // The first reconnect after losing an established tunnel is immediate.
    p.dest
        .stderr
        .wait_for("reconnecting now", Duration::from_secs(1));
    echo_eventually(p.port, 8, 256 * 1024, SECS_20);
    // LocalTest.Drop: the source's connection vanishes without a close.
    let n_src = p.source.stderr.count(CONNECTED);
    local_test(
        &p.service,
        "LocalTest.Drop",
        serde_json::json!({"tunnelId": p.tunnel.id, "side": "source"}),
    );
    p.source.stderr.wait_for_nth(CONNECTED, n_src + 1, SECS_20);
    echo_eventually(p.port, 9, 64 * 1024, SECS_20);
}

#[test]
fn rotated_token_closes_the_old_proxy_which_exits_2_and_the_new_token_works() {
    let _w = watchdog("rotation", Duration::from_secs(60));
    let service = Service::start(&[]);
    let mut p = pair(
        service,
        &["-i", "rotation-client-token-0123456789abcdef"],
        &[],
    );
    echo_eventually(p.port, 1, 1024, SECS_20);
    let out = p.service.client(&[
        "rotate",
        "--tunnel-id",
        &p.tunnel.id,
        "--client-mode",
        "DESTINATION",
        "--format",
        "env",
    ]);
    let new_token = out
        .lines()
        .find_map(|l| l.strip_prefix("DESTINATION_TOKEN="))
        .expect("new destination token")
        .trim()
        .to_string();
    let code = p.dest.wait_exit(SECS_20);
    let err = p.dest.final_stderr();
    assert_eq!(code, 2, "old token refused on reconnect:\n{err}");
    assert!(
        err.contains("access token rotated"),
        "why it was closed:\n{err}"
    );
    assert!(
        err.contains("403") && err.contains("rotated"),
        "hint:\n{err}"
    );
    assert!(!err.contains(&new_token) && !err.contains(&p.tunnel.destination_token));
    let echo = echo_server();
    let dest = proxy(
        &p.service,
        &new_token,
        &["-d", &format!("SSH1={echo}")],
        "dst2",
    );
    dest.stderr.wait_for(CONNECTED, SECS_20);
    echo_eventually(p.port, 2, 64 * 1024, SECS_20);
}

#[test]
fn connect_retry_count_2_gives_up_with_exit_4_after_3_attempts() {
    let _w = watchdog("retry_count", Duration::from_secs(60));
    // A port nobody listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let settings = settings_file(
        "retry2",
        r#"{"tunneling":{"proxy":{"websocket":{"retry_delay_ms":"50","connect_retry_count":"2"}}}}"#,
    );
    let mut p = proxy_with(
        port,
        None,
        "AQGA-token",
        &["-d", "22"],
        "dst",
        &[],
        &settings,
    );
    assert_eq!(p.wait_exit(SECS_20), 4, "{}", p.stderr.all());
    let err = p.final_stderr();
    assert_eq!(
        err.matches("Attempting to establish web socket connection")
            .count(),
        3,
        "{err}"
    );
    for n in 1..=2 {
        let line = p
            .stderr
            .wait_for(&format!("reconnect attempt {n} "), SECS_20);
        assert!(
            line.contains("[warning]") && line.contains("refused"),
            "{line}"
        );
    }
    assert!(err.contains("after 3 attempt(s)"), "{err}");
}

/// A CONNECT web proxy on 127.0.0.1: checks `Proxy-Authorization` when
/// `auth` is set (407 otherwise), or refuses everything when `always_407`.
/// Records each request's target and credentials header.
struct WebProxyServer {
    port: u16,
    seen: Seen,
}

/// CONNECT targets and Proxy-Authorization headers a web proxy saw.
type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

fn web_proxy(auth: Option<&str>, always_407: bool) -> WebProxyServer {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let expected = auth.map(|a| format!("Basic {}", openssl::base64::encode_block(a.as_bytes())));
    let s2 = seen.clone();
    thread::spawn(move || {
        for c in l.incoming() {
            let Ok(c) = c else { continue };
            let (seen, expected) = (s2.clone(), expected.clone());
            thread::spawn(move || serve_connect(c, seen, expected, always_407));
        }
    });
    WebProxyServer { port, seen }
}

fn serve_connect(mut c: TcpStream, seen: Seen, expected: Option<String>, always_407: bool) {
    c.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut r = BufReader::new(c.try_clone().expect("clone"));
    let mut first = String::new();
    if r.read_line(&mut first).is_err() {
        return;
    }
    let mut headers = HashMap::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let target = first
        .strip_prefix("CONNECT ")
        .and_then(|t| t.split_whitespace().next())
        .unwrap_or("")
        .to_string();
    let auth = headers.get("proxy-authorization").cloned();
    seen.lock()
        .expect("seen")
        .push((target.clone(), auth.clone()));
    if always_407 || (expected.is_some() && auth != expected) || target.is_empty() {
        let _ = c.write_all(
            b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"t\"\r\nContent-Length: 0\r\n\r\n",
        );
        return;
    }
    let Ok(up) = TcpStream::connect(&target) else {
        let _ = c.write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n");
        return;
    };
    let _ = c.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n");
    c.set_read_timeout(None).ok();
    // The BufReader may hold bytes the client sent after the headers.
    let buffered = r.buffer().to_vec();
    let mut up_w = up.try_clone().expect("clone");
    let mut c_r = c.try_clone().expect("clone");
    thread::spawn(move || {
        let _ = up_w.write_all(&buffered);
        let _ = std::io::copy(&mut c_r, &mut up_w);
        let _ = up_w.shutdown(Shutdown::Write);
    });
    let mut up_r = up;
    let _ = std::io::copy(&mut up_r, &mut c);
    let _ = c.shutdown(Shutdown::Write);
}

#[test]
fn web_proxy_with_and_without_auth_carries_the_tunnel() {
    let _w = watchdog("web_proxy", Duration::from_secs(60));
    let service = Service::start(&[]);
    let tunnel = service.open(&["SSH1"]);
    let with_auth = web_proxy(Some("user:p@ss"), false);
    let no_auth = web_proxy(None, false);
    let echo = echo_server();
    let https_proxy = format!("http://user:p%40ss@127.0.0.1:{}", with_auth.port);
    let dest = proxy_with(
        service.port(),
        Some(&service.ca_dir),
        &tunnel.destination_token,
        &["-d", &format!("SSH1={echo}")],
        "dst",
        &[("HTTPS_PROXY", &https_proxy)],
        &fast_settings(),
    );
    // No scheme means http:// (lower-case variable, as curl also reads it).
    let bare = format!("127.0.0.1:{}", no_auth.port);
    let source = proxy_with(
        service.port(),
        Some(&service.ca_dir),
        &tunnel.source_token,
        &["-m", "source"],
        "src",
        &[("https_proxy", &bare)],
        &fast_settings(),
    );
    dest.stderr.wait_for(CONNECTED, SECS_20);
    let port = listening_port(&source, "SSH1");
    echo_eventually(port, 3, 128 * 1024, SECS_20);
    let target = format!("127.0.0.1:{}", service.port());
    let seen = with_auth.seen.lock().expect("seen").clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].0, target);
    assert_eq!(
        seen[0].1.as_deref(),
        Some(format!("Basic {}", openssl::base64::encode_block(b"user:p@ss")).as_str()),
        "credentials percent-decoded"
    );
    let seen = no_auth.seen.lock().expect("seen").clone();
    assert_eq!(seen, vec![(target, None)]);
    for p in [&dest, &source] {
        assert!(!p.stderr.all().contains("p@ss") && !p.stderr.all().contains("p%40ss"));
    }
}

#[test]
fn web_proxy_407_is_a_clear_error_without_credentials_and_is_retried() {
    let _w = watchdog("web_proxy_407", Duration::from_secs(60));
    let service = Service::start(&[]);
    let tunnel = service.open(&["SSH1"]);
    let refusing = web_proxy(None, true);
    let settings = settings_file(
        "retry1",
        r#"{"tunneling":{"proxy":{"websocket":{"retry_delay_ms":"50","connect_retry_count":"1"}}}}"#,
    );
    let https_proxy = format!("http://user:wrong-secret@127.0.0.1:{}", refusing.port);
    let mut dest = proxy_with(
        service.port(),
        Some(&service.ca_dir),
        &tunnel.destination_token,
        &["-d", "SSH1=22"],
        "dst",
        &[("HTTPS_PROXY", &https_proxy)],
        &settings,
    );
    assert_eq!(dest.wait_exit(SECS_20), 4, "{}", dest.stderr.all());
    let err = dest.final_stderr();
    assert_eq!(refusing.seen.lock().expect("seen").len(), 2, "retried once");
    let proxy_name = format!("http://127.0.0.1:{}", refusing.port);
    assert!(err.contains(&proxy_name) && err.contains("407"), "{err}");
    assert!(
        !err.contains("wrong-secret") && !err.contains("user:"),
        "{err}"
    );
}

#[test]
fn no_proxy_bypasses_the_web_proxy() {
    let _w = watchdog("no_proxy", Duration::from_secs(60));
    let service = Service::start(&[]);
    let web = web_proxy(None, true);
    let https_proxy = format!("http://127.0.0.1:{}", web.port);
    let tunnel = service.open(&["SSH1"]);
    let echo = echo_server();
    let dest = proxy_with(
        service.port(),
        Some(&service.ca_dir),
        &tunnel.destination_token,
        &["-d", &format!("SSH1={echo}")],
        "dst",
        &[("HTTPS_PROXY", &https_proxy), ("NO_PROXY", "127.0.0.1")],
        &fast_settings(),
    );
    let source = proxy_with(
        service.port(),
        Some(&service.ca_dir),
        &tunnel.source_token,
        &["-m", "source"],
        "src",
        &[("https_proxy", &https_proxy), ("no_proxy", "example.org,*")],
        &fast_settings(),
    );
    dest.stderr.wait_for(CONNECTED, SECS_20);
    let port = listening_port(&source, "SSH1");
    echo_eventually(port, 4, 1024, SECS_20);
    assert!(web.seen.lock().expect("seen").is_empty(), "proxy bypassed");
}

/// Runs a destination proxy with `ca` as its -c (or none) and checks that
/// the certificate rejection is final: exit 2, one attempt, a clear message.
fn assert_certificate_refused(service: &Service, token: &str, ca: Option<&Path>) {
    let mut p = proxy_with(
        service.port(),
        ca,
        token,
        &["-d", "SSH1=22"],
        "dst",
        &[],
        &fast_settings(),
    );
    let code = p.wait_exit(SECS_20);
    let err = p.final_stderr();
    assert_eq!(code, 2, "a rejected certificate is final:\n{err}");
    assert_eq!(
        err.matches("Attempting to establish web socket connection")
            .count(),
        1,
        "not retried:\n{err}"
    );
    assert!(
        err.contains("certificate verification failed") && err.contains("-c/--capath"),
        "names the check and -c:\n{err}"
    );
}

#[test]
fn a_certificate_that_does_not_verify_is_refused_once_with_exit_2() {
    let _w = watchdog("wrong_ca", Duration::from_secs(60));
    let service = Service::start(&[]);
    let tunnel = service.open(&["SSH1"]);
    // No -c: the system store does not know the service's own CA.
    assert_certificate_refused(&service, &tunnel.destination_token, None);
    // -c with an unrelated CA.
    let other = temp_dir("other-ca");
    let id = common::cert::self_signed(&["localhost", "127.0.0.1"]).expect("cert");
    common::cert::write_ca_dir(&id.cert, &other, |p, d| std::fs::write(p, d)).expect("ca dir");
    assert_certificate_refused(&service, &tunnel.destination_token, Some(&other));
    let _ = std::fs::remove_dir_all(&other);
}

#[test]
fn system_roots_come_from_ssl_cert_dir_and_ssl_cert_file() {
    let _w = watchdog("system_roots", Duration::from_secs(90));
    let service = Service::start(&[]);
    // A tunnel for each run: a destination token is bound to its first
    // connection's client token.
    let start = |env: &[(&str, &str)]| {
        proxy_with(
            service.port(),
            None,
            &service.open(&["SSH1"]).destination_token,
            &["-d", "SSH1=22"],
            "dst",
            env,
            &fast_settings(),
        )
    };
    let dir = service.ca_dir.to_str().expect("utf-8");
    let pem = service.ca_dir.join("tunnel-service.pem");
    let pem = pem.to_str().expect("utf-8");
    // The service's CA directory is hashed: looked up there, without -c.
    let p = start(&[("SSL_CERT_DIR", dir)]);
    p.stderr.wait_for(CONNECTED, SECS_20);
    drop(p);
    // A bundle named by SSL_CERT_FILE is read, whatever the directory.
    let empty = temp_dir("no-hashes");
    let empty_s = empty.to_str().expect("utf-8");
    let p = start(&[("SSL_CERT_DIR", empty_s), ("SSL_CERT_FILE", pem)]);
    p.stderr.wait_for(CONNECTED, SECS_20);
    drop(p);
    // An unhashed directory alone trusts nothing of ours (the built-in
    // bundle, read instead, does not know the service's CA): refused.
    let mut p = start(&[("SSL_CERT_DIR", empty_s)]);
    let code = p.wait_exit(SECS_20);
    let err = p.final_stderr();
    assert_eq!(code, 2, "refused:\n{err}");
    assert!(err.contains("certificate verification failed"), "{err}");
    let _ = std::fs::remove_dir_all(&empty);
}

#[test]
fn protocol_error_with_reconnect_on_data_error_false_exits_5() {
    let _w = watchdog("data_error", Duration::from_secs(60));
    let service = Service::start(&[]);
    let tunnel = service.open(&["SSH1"]);
    let settings = settings_file(
        "no-reconnect",
        r#"{"tunneling":{"proxy":{"websocket":{"retry_delay_ms":"200","reconnect_on_data_error":"false"}}}}"#,
    );
    let mut dest = proxy_with(
        service.port(),
        Some(&service.ca_dir),
        &tunnel.destination_token,
        &["-d", "SSH1=22"],
        "dst",
        &[],
        &settings,
    );
    dest.stderr.wait_for(CONNECTED, SECS_20);
    // A valid frame first (ignored: stale stream), then bytes that are
    // not a protobuf message.
    let mut bytes = Vec::new();
    encode_frame(&message(MessageType::DATA, 77, "SSH1", 0, b"x"), &mut bytes).expect("frame");
    bytes.extend_from_slice(&[0, 4, 0xff, 0xff, 0xff, 0xff]);
    local_test(
        &service,
        "LocalTest.Inject",
        serde_json::json!({"tunnelId": tunnel.id, "side": "destination", "hexBytes": hex(&bytes)}),
    );
    assert_eq!(dest.wait_exit(SECS_20), 5, "{}", dest.stderr.all());
    let err = dest.final_stderr();
    assert!(err.contains("reconnect_on_data_error"), "{err}");
    assert_eq!(err.matches(CONNECTED).count(), 1, "no reconnect:\n{err}");
}

#[test]
fn a_stream_started_before_the_destination_joins_is_reset_and_data_then_flows() {
    let _w = watchdog("early_stream", Duration::from_secs(60));
    let service = Service::start(&[]);
    let tunnel = service.open(&["SSH1"]);
    let source = proxy(&service, &tunnel.source_token, &["-m", "source"], "src");
    let port = listening_port(&source, "SSH1");
    // No destination yet: as the real service, ours says nothing back, and
    // the connection waits.
    let mut early = connect(port);
    early.write_all(b"anyone there?").expect("write");
    let accepted = source
        .stderr
        .wait_for("Accepted tcp connection on port", SECS_20);
    let stream = accepted
        .split("stream ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .unwrap_or_else(|| panic!("no stream id in {accepted:?}"));
    // The destination attaches: the stream started without it is reset
    // toward the source, which closes the waiting connection.
    let echo = echo_server();
    let dest = proxy(
        &service,
        &tunnel.destination_token,
        &["-d", &format!("SSH1={echo}")],
        "dst",
    );
    dest.stderr.wait_for(CONNECTED, SECS_20);
    source
        .stderr
        .wait_for(&format!("Stream {stream} reset by the peer"), SECS_20);
    let first = wait_closed(&mut early, "connection before the destination", SECS_20);
    assert_eq!(first, b"");
    // Then data flows both ways (the reset must not upset the service's
    // backpressure accounting).
    echo_eventually(port, 5, 1 << 20, SECS_20);
}
