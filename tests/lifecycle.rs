//! Tunnel lifecycle end to end: refusal, normal close, replacement, signals,
//! and tokens kept out of every log line.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

const SECS_20: Duration = Duration::from_secs(20);

#[test]
fn refused_token_exits_2_with_the_status_and_reason() {
    let _w = watchdog("refused_token", Duration::from_secs(60));
    let service = Service::start(&[]);
    service.open(&["SSH1"]);
    let bogus = "AQGAAXhQ-not-a-real-token-0123456789";
    let mut p = proxy(&service, bogus, &["-d", "SSH1=22", "-v", "6"], "dst");
    let code = p.wait_exit(SECS_20);
    let err = p.final_stderr();
    assert_eq!(code, 2, "a refused handshake exits 2:\n{err}");
    // An unknown access token: the service answers 403 with this reason
    // (src/service/tunnels.rs; 401 is only for a request without a token).
    assert!(err.contains("HTTP 403 Forbidden"), "status shown:\n{err}");
    assert!(
        err.contains("X-Status-Reason: invalid access token"),
        "reason shown:\n{err}"
    );
    assert!(!err.contains(bogus), "token never printed:\n{err}");
}

#[test]
fn closed_tunnel_exits_0() {
    let _w = watchdog("closed_tunnel", Duration::from_secs(60));
    let service = Service::start(&[]);
    let tunnel = service.open(&["SSH1"]);
    let mut dest = proxy(
        &service,
        &tunnel.destination_token,
        &["-d", "SSH1=22"],
        "dst",
    );
    dest.stderr.wait_for(
        "Successfully established websocket connection with proxy server",
        SECS_20,
    );
    service.client(&["close", "--tunnel-id", &tunnel.id]);
    assert_eq!(dest.wait_exit(SECS_20), 0, "{}", dest.stderr.all());
    dest.stderr
        .wait_for("Tunnel closed by the service", SECS_20);
}

#[test]
fn a_second_proxy_with_the_same_token_replaces_the_first_which_exits_3() {
    let _w = watchdog("replaced", Duration::from_secs(60));
    let service = Service::start(&[]);
    let tunnel = service.open(&["SSH1"]);
    // Two proxies started with the same configuration (same access and
    // client token), as a duplicated service unit would.
    let args = [
        "-d",
        "SSH1=22",
        "-i",
        "shared-client-token-0123456789abcdef",
    ];
    let mut first = proxy(&service, &tunnel.destination_token, &args, "dst1");
    first.stderr.wait_for(
        "Successfully established websocket connection with proxy server",
        SECS_20,
    );
    let second = proxy(&service, &tunnel.destination_token, &args, "dst2");
    second.stderr.wait_for(
        "Successfully established websocket connection with proxy server",
        SECS_20,
    );
    let code = first.wait_exit(SECS_20);
    let err = first.final_stderr();
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("replaced"));
}

#[test]
fn sigterm_closes_and_exits_0_within_a_second() {
    let _w = watchdog("sigterm", Duration::from_secs(60));
    let service = Service::start(&[]);
    let tunnel = service.open(&["SSH1"]);
    let echo = echo_server();
    let dest = proxy(
        &service,
        &tunnel.destination_token,
        &["-d", &format!("SSH1={echo}")],
        "dst",
    );
    dest.stderr.wait_for(
        "Successfully established websocket connection with proxy server",
        SECS_20,
    );
    let mut source = proxy(&service, &tunnel.source_token, &["-m", "source"], "src");
    let port = listening_port(&source, "SSH1");
    let client = connect(port);
    let got = echo_through(
        client.try_clone().expect("clone"),
        Arc::new(b"ping".to_vec()),
    );
    assert_eq!(got, b"ping");
    let t = Instant::now();
    source.signal(libc::SIGTERM);
    let code = source.wait_exit(Duration::from_secs(5));
    let took = t.elapsed();
    assert_eq!(code, 0, "{}", source.stderr.all());
    assert!(took < Duration::from_millis(1500), "exit took {took:?}");
    // The local connection was closed.
    let mut c = client;
    let early = wait_closed(&mut c, "local connection of the stopped source", SECS_20);
    assert_eq!(early, b"");
}

#[test]
fn tokens_never_appear_in_output_at_trace_level() {
    let _w = watchdog("tokens_hidden", Duration::from_secs(60));
    let service = Service::start(&[]);
    let tunnel = service.open(&["SSH1"]);
    let echo = echo_server();
    let client_token = "visible-client-token-must-not-leak-0123456789";
    let mut dest = proxy(
        &service,
        &tunnel.destination_token,
        &["-d", &format!("SSH1={echo}"), "-v", "6", "-i", client_token],
        "dst",
    );
    dest.stderr.wait_for(
        "Successfully established websocket connection with proxy server",
        SECS_20,
    );
    let mut source = proxy(
        &service,
        &tunnel.source_token,
        &["-m", "source", "-v", "6", "-t", &tunnel.source_token],
        "src",
    );
    let port = listening_port(&source, "SSH1");
    let got = echo_through(connect(port), Arc::new(b"secret-free".to_vec()));
    assert_eq!(got, b"secret-free");
    service.client(&["close", "--tunnel-id", &tunnel.id]);
    dest.wait_exit(SECS_20);
    source.wait_exit(SECS_20);
    for (name, p) in [("destination", &dest), ("source", &source)] {
        let out = format!("{}\n{}", p.stdout.all(), p.stderr.all());
        assert!(out.len() > 200, "{name} logged at trace level");
        for secret in [
            &tunnel.source_token,
            &tunnel.destination_token,
            client_token,
        ] {
            assert!(!out.contains(secret), "{name} printed a token");
        }
    }
    // -t on the command line earns a warning.
    assert!(source.stderr.all().contains("other users"));
}

#[test]
fn systemd_readiness_is_notified_once_the_tunnel_is_up() {
    let _w = watchdog("sd_notify", Duration::from_secs(60));
    let dir = std::env::temp_dir().join(format!("lp-notify-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("notify.sock");
    let _ = std::fs::remove_file(&path);
    let sock = std::os::unix::net::UnixDatagram::bind(&path).expect("bind notify socket");
    sock.set_read_timeout(Some(SECS_20)).expect("timeout");
    let service = Service::start(&[]);
    let tunnel = service.open(&["SSH1"]);
    let notify_socket = path.to_str().expect("utf-8 path");
    let mut dest = proxy_with_env(
        &service,
        &tunnel.destination_token,
        &["-d", "SSH1=22"],
        &[("NOTIFY_SOCKET", notify_socket)],
        "dst",
    );
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf).expect("a notification arrives");
    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(msg.contains("READY=1"), "{msg}");
    // READY=1 follows the handshake, whose success is logged first.
    dest.stderr.wait_for(
        "Successfully established websocket connection with proxy server",
        SECS_20,
    );
    service.client(&["close", "--tunnel-id", &tunnel.id]);
    assert_eq!(dest.wait_exit(SECS_20), 0);
    let n = sock.recv(&mut buf).expect("stopping notification");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A "service" that accepts every connection and holds it open without
/// writing a byte: its port, and a signal per connection accepted.
fn silent_service() -> (u16, std::sync::mpsc::Receiver<()>) {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let (accepted_tx, accepted) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in silent.incoming().flatten() {
            held.push(c);
            let _ = accepted_tx.send(());
        }
    });
    (port, accepted)
}

/// A stop while connecting: the service accepted the TCP connection and
/// never answers the TLS handshake. The proxy exits 0 at once instead of
/// waiting out its 15 s connect timeout (and trying again).
#[test]
fn sigterm_while_the_service_does_not_answer_the_connect_exits_0_at_once() {
    let _w = watchdog("sigterm_connecting", Duration::from_secs(60));
    let (port, accepted) = silent_service();
    let mut source = proxy_with(
        port,
        None,
        "token-of-a-silent-service",
        &["-m", "source"],
        "src",
        &[],
        &fast_settings(),
    );
    accepted
        .recv_timeout(SECS_20)
        .expect("the proxy connects to the silent service");
    source
        .stderr
        .wait_for("Attempting to establish web socket connection", SECS_20);
    let t = Instant::now();
    source.signal(libc::SIGTERM);
    let code = source.wait_exit(Duration::from_secs(10));
    let took = t.elapsed();
    assert_eq!(code, 0, "{}", source.stderr.all());
    assert!(took < Duration::from_millis(1500), "exit took {took:?}");
    assert_eq!(
        source.stderr.count("reconnect attempt"),
        0,
        "{}",
        source.stderr.all()
    );
}

/// A log reader that stopped reading (stderr a pipe left full, as with a
/// stuck `| logger`) stalls neither the connections nor a stop: lines stderr
/// cannot take are dropped, not waited on.
#[test]
fn a_stuck_log_reader_stalls_neither_connections_nor_sigterm() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    let _w = watchdog("stuck_stderr", Duration::from_secs(90));
    let service = Service::start(&[]);
    let tunnel = service.open(&["SSH1"]);
    let echo = echo_server();
    let (unread, write_end) = os_pipe();
    let mut cmd = Command::new(localproxy_bin());
    cmd.env_clear()
        .env("AWSIOT_TUNNEL_ACCESS_TOKEN", &tunnel.destination_token)
        .args(["-e", &format!("127.0.0.1:{}", service.port())])
        .args(["-c", service.ca_dir.to_str().expect("utf-8 path")])
        .args([
            "--settings-json",
            fast_settings().to_str().expect("utf-8 path"),
        ])
        .args(["-d", &format!("SSH1={echo}"), "-v", "6"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(write_end));
    // SAFETY: prctl in the child before exec: it dies with the test.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut dest = cmd.spawn().expect("spawn destination");
    drop(cmd);
    let source = proxy(&service, &tunnel.source_token, &["-m", "source"], "src");
    let port = listening_port(&source, "SSH1");
    // SAFETY: F_GETPIPE_SZ and FIONREAD read into what they are given.
    let capacity = unsafe { libc::fcntl(unread.as_raw_fd(), libc::F_GETPIPE_SZ) };
    assert!(capacity > 0);
    let queued = || {
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int.
        unsafe { libc::ioctl(unread.as_raw_fd(), libc::FIONREAD, &mut n) };
        n
    };
    // Trace lines fill the pipe, a few per connection, until it takes no
    // more (a pipe counts pages: it is full before every byte is used).
    let (mut seed, mut same) = (0, 0);
    let mut last = queued();
    while last < capacity / 2 || same < 3 {
        seed += 1;
        assert!(seed < 5000, "the pipe never filled: {last} of {capacity}");
        echo_eventually(port, seed, 64, SECS_20);
        let now = queued();
        same = if now == last { same + 1 } else { 0 };
        last = now;
    }
    // Full, and nobody reads: connections still flow, each promptly.
    for i in 0..10 {
        echo_eventually(port, 10_000 + i, 1024, Duration::from_secs(10));
    }
    let t = Instant::now();
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(dest.id() as i32, libc::SIGTERM) };
    let deadline = t + Duration::from_secs(5);
    let status = loop {
        if let Some(status) = dest.try_wait().expect("try_wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "SIGTERM ignored while stderr is full"
        );
        std::thread::sleep(Duration::from_millis(10)); // polling interval
    };
    assert_eq!(status.code(), Some(0), "{status:?}");
}

/// Until the tunnel is up, a source's `-s` port is held but does not
/// listen: a client is refused at once, as with the reference (whose ports
/// open once connected), instead of waiting in a backlog for a tunnel that
/// may never come; and another server cannot take the port meanwhile.
#[test]
fn a_source_port_refuses_connections_until_the_tunnel_is_up() {
    let _w = watchdog("port_before_tunnel", Duration::from_secs(60));
    let (service_port, _accepted) = silent_service();
    let port = {
        let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        free.local_addr().expect("addr").port()
    };
    let map = format!("SSH1={port}");
    let source = proxy_with(
        service_port,
        None,
        "token-of-a-silent-service",
        &["-m", "source", "-b", "127.0.0.1", "-s", &map],
        "src",
        &[],
        &fast_settings(),
    );
    source
        .stderr
        .wait_for("Attempting to establish web socket connection", SECS_20);
    let refused = std::net::TcpStream::connect(("127.0.0.1", port));
    assert_eq!(
        refused.as_ref().map_err(std::io::Error::kind).err(),
        Some(std::io::ErrorKind::ConnectionRefused),
        "a connection before the tunnel is up: {refused:?}"
    );
    let other = std::net::TcpListener::bind(("127.0.0.1", port));
    assert_eq!(
        other.as_ref().map_err(std::io::Error::kind).err(),
        Some(std::io::ErrorKind::AddrInUse),
        "another server took the port: {other:?}"
    );
}

/// A source whose `-s` port is taken fails before it connects: the access
/// token is not spent (the service binds it to the first client token it
/// sees), so the corrected command works with the same token.
#[test]
fn a_taken_source_port_fails_before_the_token_is_spent() {
    let _w = watchdog("taken_port", Duration::from_secs(60));
    let service = Service::start(&[]);
    let tunnel = service.open(&["SSH1"]);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let map = format!("SSH1={port}");
    let mut first = proxy(
        &service,
        &tunnel.source_token,
        &["-m", "source", "-b", "127.0.0.1", "-s", &map],
        "src",
    );
    assert_eq!(first.wait_exit(SECS_20), 1);
    let err = first.final_stderr();
    assert!(
        err.contains(&format!(
            "cannot listen on 127.0.0.1:{port} for service SSH1"
        )),
        "{err}"
    );
    assert!(
        !err.contains("Attempting to establish"),
        "it connected:\n{err}"
    );
    drop(taken);
    let second = proxy(
        &service,
        &tunnel.source_token,
        &["-m", "source", "-b", "127.0.0.1", "-s", &map],
        "src2",
    );
    second.stderr.wait_for(
        &format!("Listening for new connection on port {port}"),
        SECS_20,
    );
}
