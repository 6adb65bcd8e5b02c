//! Hostile input toward a running proxy, end to end: crafted tunnel frames
//! injected by the service (LocalTest.Inject, which bypasses the service's
//! own validation), and handshake / WebSocket violations from a raw TLS
//! front that impersonates the service (with its certificate) and passes
//! later connections through to it. For each case: the behaviour docs/protocol.md
//! asks for (skip, reset, or reconnect), no crash, and an echo round trip
//! through the tunnel afterwards.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use localproxy::frame::{encode_frame, message, MessageType};
use openssl::ssl::{SslAcceptor, SslMethod};

const SECS_20: Duration = Duration::from_secs(20);
/// The destination's client token, so a second destination may take over.
const DEST_CLIENT_TOKEN: &str = "hostile-dest-client-token-0123456789ab";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn frame(kind: MessageType, stream: i32, service: &str, conn: u32) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(&message(kind, stream, service, conn, b"hostile"), &mut out).expect("encodes");
    out
}

/// A frame whose body is `body` verbatim (the length prefix is its length).
fn raw_frame(body: &[u8]) -> Vec<u8> {
    let mut out = u16::try_from(body.len())
        .expect("fits the prefix")
        .to_be_bytes()
        .to_vec();
    out.extend_from_slice(body);
    out
}

/// A protobuf varint.
fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A message body by hand: type (raw number), stream id 1, ignorable, and a
/// payload of `payload_len` bytes.
fn body(raw_type: u64, ignorable: bool, payload_len: usize) -> Vec<u8> {
    let mut b = vec![0x08];
    varint(raw_type, &mut b);
    b.extend_from_slice(&[0x10, 0x01]);
    if ignorable {
        b.extend_from_slice(&[0x18, 0x01]);
    }
    if payload_len > 0 {
        b.push(0x22);
        varint(payload_len as u64, &mut b);
        b.extend(std::iter::repeat(0x61).take(payload_len));
    }
    b
}

/// Service, tunnel, echo server, both proxies at debug level, and the
/// source's port. The service keeps its key in `certs` for the front.
struct Fixture {
    service: Service,
    tunnel: Tunnel,
    dest: Proc,
    source: Proc,
    port: u16,
    certs: PathBuf,
}

impl Fixture {
    fn new(name: &str) -> Fixture {
        let certs = temp_dir(&format!("hostile-{name}"));
        let service = Service::start(&["--cert-dir", certs.to_str().expect("utf-8")]);
        let tunnel = service.open(&["SSH1"]);
        let echo = echo_server();
        let dest = proxy(
            &service,
            &tunnel.destination_token,
            &[
                "-d",
                &format!("SSH1={echo}"),
                "-v",
                "5",
                "-i",
                DEST_CLIENT_TOKEN,
            ],
            "dst",
        );
        let source = proxy(
            &service,
            &tunnel.source_token,
            &["-m", "source", "-v", "5"],
            "src",
        );
        dest.stderr.wait_for(CONNECTED, SECS_20);
        let port = listening_port(&source, "SSH1");
        echo_eventually(port, 0, 1024, SECS_20);
        Fixture {
            service,
            tunnel,
            dest,
            source,
            port,
            certs,
        }
    }

    fn proc(&self, side: &str) -> &Proc {
        if side == "source" {
            &self.source
        } else {
            &self.dest
        }
    }

    fn inject(&self, side: &str, bytes: &[u8]) {
        self.call(
            "LocalTest.Inject",
            serde_json::json!({"tunnelId": self.tunnel.id, "side": side, "hexBytes": hex(bytes)}),
        );
    }

    fn inject_text(&self, side: &str, text: &str) {
        self.call(
            "LocalTest.Inject",
            serde_json::json!({"tunnelId": self.tunnel.id, "side": side, "textFrame": text}),
        );
    }

    fn call(&self, op: &str, body: serde_json::Value) {
        let (status, _, v) = raw::raw_call(&self.service.api_addr, op, &body.to_string());
        assert_eq!(status, 200, "{op}: {v}");
    }

    /// Both proxies still run.
    fn assert_alive(&mut self) {
        for p in [&mut self.source, &mut self.dest] {
            assert!(
                p.child.try_wait().expect("try_wait").is_none(),
                "a proxy exited:\n{}",
                p.stderr.all()
            );
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.certs);
    }
}

/// Writes `n` bytes on an open echo connection and reads them back.
fn round_trip(s: &mut TcpStream, seed: u64, n: usize) {
    let data = random_bytes(seed, n);
    s.write_all(&data).expect("write on the open connection");
    let mut got = vec![0u8; n];
    s.read_exact(&mut got).expect("echo on the open connection");
    assert!(got == data, "echo corrupted");
}

/// Stream and connection id of the source's latest local connection, from its log.
fn current_ids(source: &Proc) -> (i32, u32) {
    const OPENED: &str = "Accepted tcp connection on port";
    source.stderr.wait_for(OPENED, SECS_20);
    let n = source.stderr.count(OPENED);
    let line = source.stderr.wait_for_nth(OPENED, n, SECS_20);
    let num = |after: &str| -> Option<u64> {
        let rest = line.split(after).nth(1)?;
        rest.trim_start()
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    match (num(", stream "), num(", connection ")) {
        (Some(s), Some(c)) => (s as i32, c as u32),
        _ => panic!("no ids in {line:?}"),
    }
}

#[test]
fn messages_to_skip_leave_the_tunnel_and_open_connections_alone() {
    let _w = watchdog("skipped", Duration::from_secs(60));
    let mut f = Fixture::new("skip");
    let mut open = connect(f.port);
    round_trip(&mut open, 1, 1000);
    let (stream, conn) = current_ids(&f.source);
    let connected = (
        f.source.stderr.count(CONNECTED),
        f.dest.stderr.count(CONNECTED),
    );
    let stale = stream + 1000;
    let mut to_dest = Vec::new();
    let mut to_source = Vec::new();
    for out in [&mut to_dest, &mut to_source] {
        // Unknown type with ignorable set: skip.
        out.extend(raw_frame(&body(42, true, 3)));
        // DATA and resets with stream id 0 or a stale id: dropped; DATA
        // for a stream the side does not know is answered with a reset
        // (which the other side drops: it does not know the stream either).
        out.extend(frame(MessageType::DATA, 0, "SSH1", 1));
        out.extend(frame(MessageType::DATA, stale, "SSH1", 1));
        out.extend(frame(MessageType::STREAM_RESET, 0, "SSH1", 0));
        out.extend(frame(MessageType::STREAM_RESET, stale, "SSH1", 0));
        out.extend(frame(MessageType::CONNECTION_RESET, stale, "SSH1", 5));
        out.extend(frame(MessageType::CONNECTION_RESET, stream, "SSH1", 9));
    }
    // A STREAM_START to a source: ignored.
    to_source.extend(frame(MessageType::STREAM_START, stale, "SSH1", 1));
    // A CONNECTION_START for the connection id already open: ignored.
    to_dest.extend(frame(MessageType::CONNECTION_START, stream, "SSH1", conn));
    f.inject("destination", &to_dest);
    f.inject("source", &to_source);
    // The open connection still works; its bytes travel behind the
    // injected frames on both paths, so they were handled by now.
    round_trip(&mut open, 2, 50_000);
    for side in ["source", "destination"] {
        let p = f.proc(side);
        for needle in [
            "Skipping ignorable message of unknown type 42".to_string(),
            "Ignoring DATA with stream id 0".to_string(),
            format!("DATA for stream {stale} connection 1, which this side does not know"),
            "Ignoring STREAM_RESET with stream id 0".to_string(),
            format!("Dropping STREAM_RESET for stream {stale} connection 0: not open"),
            format!("Dropping CONNECTION_RESET for stream {stale} connection 5: not open"),
            format!("Dropping CONNECTION_RESET for stream {stream} connection 9: not open"),
        ] {
            p.stderr.wait_for(&needle, Duration::from_secs(5));
        }
    }
    f.source.stderr.wait_for(
        &format!("Ignoring STREAM_START for stream {stale}"),
        Duration::from_secs(5),
    );
    f.dest.stderr.wait_for(
        &format!("Ignoring CONNECTION_START for stream {stream} connection {conn}: already open"),
        Duration::from_secs(5),
    );
    assert_eq!(
        (
            f.source.stderr.count(CONNECTED),
            f.dest.stderr.count(CONNECTED)
        ),
        connected,
        "no reconnect"
    );
    f.assert_alive();
    echo_eventually(f.port, 3, 64 * 1024, SECS_20);
    round_trip(&mut open, 4, 1000);
}

#[test]
fn protocol_errors_reconnect_and_serving_resumes() {
    let _w = watchdog("protocol_errors", Duration::from_secs(90));
    let mut f = Fixture::new("protocol");
    // Payload of 65000 bytes: over max_payload_size (64512), within the prefix.
    let too_big = raw_frame(&body(1, false, 65_000));
    let not_protobuf = raw_frame(&[0xff, 0xff, 0xff, 0xff, 0x07]);
    let type_unknown = raw_frame(&body(0, false, 0));
    let unknown_not_ignorable = raw_frame(&body(42, false, 2));
    let cases: [(&str, &str, Option<&[u8]>, &str); 5] = [
        (
            "source",
            "length prefix over the limit",
            Some(&too_big),
            "exceeds max_payload_size",
        ),
        (
            "destination",
            "not protobuf",
            Some(&not_protobuf),
            "is not a valid message",
        ),
        (
            "source",
            "type UNKNOWN",
            Some(&type_unknown),
            "unknown type 0 is not marked ignorable",
        ),
        (
            "destination",
            "unknown type",
            Some(&unknown_not_ignorable),
            "unknown type 42 is not marked ignorable",
        ),
        ("source", "text frame", None, "text frame"),
    ];
    for (i, (side, what, bytes, reason)) in cases.into_iter().enumerate() {
        let mut open = connect(f.port);
        round_trip(&mut open, 10 + i as u64, 1000);
        let n = f.proc(side).stderr.count(CONNECTED);
        match bytes {
            Some(b) => f.inject(side, b),
            None => f.inject_text(side, "not tunnel bytes"),
        }
        let p = f.proc(side);
        let line = p.stderr.wait_for(reason, SECS_20);
        p.stderr.wait_for_nth(CONNECTED, n + 1, SECS_20);
        // Local connections are closed on a reconnect.
        let early = wait_closed(&mut open, what, SECS_20);
        assert_eq!(early, b"", "{what}: open connection closed");
        f.assert_alive();
        echo_eventually(f.port, 20 + i as u64, 64 * 1024, SECS_20);
        assert!(line.contains(reason), "{what}: {line}");
    }
}

#[test]
fn session_reset_mid_transfer_closes_connections_and_serving_resumes() {
    let _w = watchdog("session_reset", Duration::from_secs(60));
    let mut f = Fixture::new("session-reset");
    let s = connect(f.port);
    let mut w = s.try_clone().expect("clone");
    // Keep writing until the connection breaks (it must: the proxy closes
    // a reset connection both ways, so writes end with a reset). A write
    // that times out is no break: writing goes on until the deadline.
    let writer = thread::spawn(move || {
        use std::io::ErrorKind;
        let chunk = random_bytes(5, 16 * 1024);
        let start = Instant::now();
        w.set_write_timeout(Some(Duration::from_secs(1)))
            .expect("timeout");
        loop {
            match w.write_all(&chunk) {
                Ok(()) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::BrokenPipe
                            | ErrorKind::ConnectionReset
                            | ErrorKind::ConnectionAborted
                    ) =>
                {
                    return Ok(())
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(format!("write failed with {e}, not a reset")),
            }
            if start.elapsed() > SECS_20 {
                return Err(format!("writes neither failed nor ended after {SECS_20:?}"));
            }
        }
    });
    let echoed = Arc::new(AtomicUsize::new(0));
    let e2 = echoed.clone();
    let mut r = s;
    r.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let reader = thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match r.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => {
                    e2.fetch_add(n, Ordering::SeqCst);
                }
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    });
    let deadline = Instant::now() + SECS_20;
    while echoed.load(Ordering::SeqCst) < 256 * 1024 {
        assert!(Instant::now() < deadline, "transfer did not start");
        thread::sleep(Duration::from_millis(10)); // polling interval
    }
    let connected = (
        f.source.stderr.count(CONNECTED),
        f.dest.stderr.count(CONNECTED),
    );
    let reset = frame(MessageType::SESSION_RESET, 0, "", 0);
    f.inject("source", &reset);
    f.inject("destination", &reset);
    let ended = reader.join().expect("reader");
    assert!(
        ended.is_ok(),
        "the connection was closed, not hung: {ended:?}"
    );
    let written = writer.join().expect("writer");
    assert!(
        written.is_ok(),
        "the proxy still reads a connection the session reset closed: {written:?}"
    );
    f.source
        .stderr
        .wait_for("Session reset by the service", SECS_20);
    f.dest
        .stderr
        .wait_for("Session reset by the service", SECS_20);
    assert_eq!(
        (
            f.source.stderr.count(CONNECTED),
            f.dest.stderr.count(CONNECTED)
        ),
        connected,
        "a session reset is not a reconnect"
    );
    f.assert_alive();
    echo_eventually(f.port, 6, 256 * 1024, SECS_20);
}

/// What the front does with one connection.
#[derive(Clone, Copy, Debug)]
enum Script {
    /// Relay the TCP bytes to the real service.
    Pass,
    /// 101 without Sec-WebSocket-Protocol.
    NoSubprotocol,
    /// 101 choosing a subprotocol the proxy did not offer.
    WrongSubprotocol,
    /// A proper 101, then bytes that are no WebSocket frame.
    Garbage,
    /// A proper 101, then a binary frame of 200000 bytes (limit 131076).
    Oversized,
    /// A proper 101, then a close with code 4000.
    OddClose,
}

/// A TLS front on 127.0.0.1 with the service's certificate and key, acting
/// out `scripts` on successive connections (then `Pass`). Returns its port
/// and the number of connections accepted.
fn front(service_port: u16, certs: &Path, scripts: Vec<Script>) -> (u16, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind front");
    let port = l.local_addr().expect("addr").port();
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).expect("acceptor");
    b.set_certificate_chain_file(certs.join("tunnel-service.pem"))
        .expect("cert");
    b.set_private_key_file(
        certs.join("tunnel-service.key"),
        openssl::ssl::SslFiletype::PEM,
    )
    .expect("key");
    let acceptor = Arc::new(b.build());
    let count = Arc::new(AtomicUsize::new(0));
    let c2 = count.clone();
    thread::spawn(move || {
        for (i, c) in l.incoming().enumerate() {
            let Ok(c) = c else { continue };
            c2.fetch_add(1, Ordering::SeqCst);
            let script = scripts.get(i).copied().unwrap_or(Script::Pass);
            let acceptor = acceptor.clone();
            thread::spawn(move || act(c, script, service_port, &acceptor));
        }
    });
    (port, count)
}

fn act(c: TcpStream, script: Script, service_port: u16, acceptor: &SslAcceptor) {
    c.set_read_timeout(Some(Duration::from_secs(10))).ok();
    c.set_write_timeout(Some(Duration::from_secs(10))).ok();
    if let Script::Pass = script {
        let Ok(up) = TcpStream::connect(("127.0.0.1", service_port)) else {
            return;
        };
        c.set_read_timeout(None).ok();
        let (mut c_r, mut up_w) = (
            c.try_clone().expect("clone"),
            up.try_clone().expect("clone"),
        );
        thread::spawn(move || {
            let _ = std::io::copy(&mut c_r, &mut up_w);
            let _ = up_w.shutdown(Shutdown::Write);
        });
        let (mut up_r, mut c_w) = (up, c);
        let _ = std::io::copy(&mut up_r, &mut c_w);
        let _ = c_w.shutdown(Shutdown::Both);
        return;
    }
    let Ok(tls) = acceptor.accept(c) else { return };
    let mut r = BufReader::new(tls);
    let mut key = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.trim().eq_ignore_ascii_case("sec-websocket-key") {
                key = v.trim().to_string();
            }
        }
    }
    let accept = openssl::base64::encode_block(&openssl::sha::sha1(
        format!("{key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11").as_bytes(),
    ));
    let protocol = match script {
        Script::NoSubprotocol => String::new(),
        Script::WrongSubprotocol => {
            "Sec-WebSocket-Protocol: aws.iot.securetunneling-9.9\r\n".into()
        }
        _ => "Sec-WebSocket-Protocol: aws.iot.securetunneling-3.0\r\n".into(),
    };
    let mut out = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n{protocol}channel-id: hostile-front\r\n\r\n"
    )
    .into_bytes();
    match script {
        Script::Garbage => out.extend_from_slice(b"\xff\xfe this is no websocket frame"),
        Script::Oversized => {
            out.extend_from_slice(&[0x82, 127]);
            out.extend_from_slice(&200_000u64.to_be_bytes());
            out.extend(std::iter::repeat(0u8).take(200_000));
        }
        Script::OddClose => {
            out.extend_from_slice(&[0x88, 5, 0x0f, 0xa0]);
            out.extend_from_slice(b"odd");
        }
        _ => {}
    }
    let tls = r.get_mut();
    let _ = tls.write_all(&out);
    let _ = tls.flush();
    // Wait for the proxy to hang up (read timeout as the backstop).
    let mut buf = [0u8; 4096];
    while matches!(tls.read(&mut buf), Ok(n) if n > 0) {}
}

#[test]
fn handshake_and_websocket_violations_are_retried_and_serving_resumes() {
    let _w = watchdog("front", Duration::from_secs(90));
    let mut f = Fixture::new("front");
    let cases = [
        (Script::NoSubprotocol, "subprotocol"),
        (Script::WrongSubprotocol, "subprotocol"),
        (Script::Garbage, "WebSocket protocol error"),
        (Script::Oversized, "exceeds the limit of 131076 bytes"),
        (Script::OddClose, "code 4000"),
    ];
    let mut scripts = vec![Script::Pass];
    for (s, _) in &cases {
        scripts.extend([*s, Script::Pass]);
    }
    let (front_port, accepted) = front(f.service.port(), &f.certs, scripts);
    // The destination goes through the front instead: stop the direct one,
    // then take over its access and client token.
    f.dest.signal(libc::SIGTERM);
    assert_eq!(f.dest.wait_exit(SECS_20), 0);
    let echo = echo_server();
    let mut via = proxy_with(
        front_port,
        Some(&f.service.ca_dir),
        &f.tunnel.destination_token,
        &[
            "-d",
            &format!("SSH1={echo}"),
            "-v",
            "5",
            "-i",
            DEST_CLIENT_TOKEN,
        ],
        "dst-front",
        &[],
        &fast_settings(),
    );
    via.stderr.wait_for(CONNECTED, SECS_20);
    echo_eventually(f.port, 30, 16 * 1024, SECS_20);
    for (i, (script, reason)) in cases.iter().enumerate() {
        let seen = via.stderr.count(reason);
        // Drop the passed-through connection: the proxy reconnects into the
        // next script, then (retrying) into a pass-through again.
        f.call(
            "LocalTest.Drop",
            serde_json::json!({"tunnelId": f.tunnel.id, "side": "destination"}),
        );
        let want = 2 * i + 3;
        let deadline = Instant::now() + SECS_20;
        while accepted.load(Ordering::SeqCst) < want {
            assert!(Instant::now() < deadline, "{script:?}: no reconnect");
            thread::sleep(Duration::from_millis(10)); // polling interval
        }
        let line = via.stderr.wait_for_nth(reason, seen + 1, SECS_20);
        assert!(line.contains("reconnect attempt"), "{script:?}: {line}");
        assert!(
            via.child.try_wait().expect("try_wait").is_none(),
            "{script:?}: proxy exited:\n{}",
            via.stderr.all()
        );
        echo_eventually(f.port, 31 + i as u64, 16 * 1024, SECS_20);
    }
}
