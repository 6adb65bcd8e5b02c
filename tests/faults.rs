//! Faults a device meets, end to end with real processes on 127.0.0.1:
//! the local application down then up, connections that send and close at
//! once, a flood of connection starts, the connection cap on both sides,
//! a SERVICE_IDS over the limit, a destination away while the source opens
//! connections, and the reconnect after a drop.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use localproxy::frame::{encode_frame, message, Message, MessageType};

const SECS_20: Duration = Duration::from_secs(20);

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn frame(msg: &Message<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(msg, &mut out).expect("encodes");
    out
}

/// Calls a LocalTest operation; retries while the service has not
/// registered the side yet (a proxy logs its connection a moment before).
fn local_test(service: &Service, op: &str, body: serde_json::Value) {
    let deadline = Instant::now() + SECS_20;
    loop {
        let (status, _, v) = raw::raw_call(&service.api_addr, op, &body.to_string());
        let waiting = status == 400 && v.to_string().contains("connected to tunnel");
        if !waiting || Instant::now() >= deadline {
            assert_eq!(status, 200, "{op}: {v}");
            return;
        }
        thread::sleep(Duration::from_millis(20)); // polling interval
    }
}

fn inject(service: &Service, tunnel: &Tunnel, side: &str, bytes: &[u8]) {
    local_test(
        service,
        "LocalTest.Inject",
        serde_json::json!({"tunnelId": tunnel.id, "side": side, "hexBytes": hex(bytes)}),
    );
}

/// Makes the service drop `side`'s WebSocket connection of `tunnel`.
fn drop_tunnel(service: &Service, tunnel: &Tunnel, side: &str) {
    local_test(
        service,
        "LocalTest.Drop",
        serde_json::json!({"tunnelId": tunnel.id, "side": side}),
    );
}

/// A settings file: the fast test settings plus `tcp` and `websocket` extras.
fn settings(name: &str, tcp: &str, ws: &str) -> std::path::PathBuf {
    let tcp = if tcp.is_empty() {
        String::new()
    } else {
        format!(",{tcp}")
    };
    let ws = if ws.is_empty() {
        String::new()
    } else {
        format!(",{ws}")
    };
    settings_file(
        name,
        &format!(
            r#"{{"tunneling":{{"proxy":{{"tcp":{{"connection_retry_count":"1","connection_retry_delay_ms":"100"{tcp}}},"websocket":{{"retry_delay_ms":"200"{ws}}}}}}}}}"#
        ),
    )
}

/// The stream and connection ids of the last connection the source accepted.
fn last_ids(source: &Proc) -> (i32, u32) {
    const OPENED: &str = "Accepted tcp connection on port";
    source.stderr.wait_for(OPENED, SECS_20);
    let n = source.stderr.count(OPENED);
    let line = source.stderr.wait_for_nth(OPENED, n, SECS_20);
    let num = |after: &str| -> u64 {
        line.split(after)
            .nth(1)
            .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|d| d.parse().ok())
            .unwrap_or_else(|| panic!("no {after:?} in {line:?}"))
    };
    (num(", stream ") as i32, num(", connection ") as u32)
}

/// Sends `data` and reads the same number of bytes back.
fn round_trip(s: &mut TcpStream, data: &[u8]) {
    s.write_all(data).expect("write");
    let mut back = vec![0; data.len()];
    s.read_exact(&mut back).expect("echo");
    assert!(back == data, "echo corrupted");
}

/// Whether the peer closed `s` (EOF or reset) within `limit`; data is
/// skipped. A read timeout is not a close.
fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        s.set_read_timeout(Some(left)).expect("timeout");
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
}

/// A server that reads each connection to its end and records a digest of
/// what it received.
#[derive(Clone, Default)]
struct Sink(Arc<(Mutex<Vec<[u8; 32]>>, Condvar)>);

impl Sink {
    fn start() -> (Sink, u16) {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind sink");
        let port = l.local_addr().expect("addr").port();
        let sink = Sink::default();
        let me = sink.clone();
        thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                let me = me.clone();
                thread::spawn(move || {
                    let mut got = Vec::new();
                    let _ = s.read_to_end(&mut got);
                    let (lock, cv) = &*me.0;
                    lock.lock().expect("sink").push(sha256(&got));
                    cv.notify_all();
                });
            }
        });
        (sink, port)
    }

    /// Waits until `n` connections ended; returns their digests.
    fn wait(&self, n: usize, limit: Duration) -> Vec<[u8; 32]> {
        let (lock, cv) = &*self.0;
        let deadline = Instant::now() + limit;
        let mut got = lock.lock().expect("sink");
        while got.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "{} of {n} connections reached the application",
                got.len()
            );
            got = cv.wait_timeout(got, left).expect("sink wait").0;
        }
        got.clone()
    }
}

/// A port on 127.0.0.1 held by a socket that is bound but not listening:
/// connecting to it is refused, no other test can take it meanwhile, and
/// [`ReservedPort::listen`] turns it into the application's listener.
struct ReservedPort {
    fd: std::os::fd::OwnedFd,
    port: u16,
}

impl ReservedPort {
    fn new() -> ReservedPort {
        use std::os::fd::FromRawFd;
        // SAFETY: socket(2); the result is checked, then owned.
        let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        assert!(raw >= 0, "socket: {}", std::io::Error::last_os_error());
        // SAFETY: a fresh descriptor we own.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_in is plain data; all-zero is valid.
        let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        addr.sin_family = libc::AF_INET as libc::sa_family_t;
        addr.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        // SAFETY: `addr` is a valid sockaddr_in of `len` bytes.
        let rc = unsafe { libc::bind(raw, &addr as *const _ as *const libc::sockaddr, len) };
        assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
        let mut len = len;
        // SAFETY: getsockname writes at most `len` bytes into `addr`.
        let rc =
            unsafe { libc::getsockname(raw, &mut addr as *mut _ as *mut libc::sockaddr, &mut len) };
        assert_eq!(rc, 0, "getsockname: {}", std::io::Error::last_os_error());
        ReservedPort {
            fd,
            port: u16::from_be(addr.sin_port),
        }
    }

    fn listen(self) -> TcpListener {
        use std::os::fd::AsRawFd;
        // SAFETY: listen(2) on the bound socket we own.
        let rc = unsafe { libc::listen(self.fd.as_raw_fd(), 128) };
        assert_eq!(rc, 0, "listen: {}", std::io::Error::last_os_error());
        TcpListener::from(self.fd)
    }
}

#[test]
fn app_down_then_up_resets_the_stream_and_later_connections_reach_the_app() {
    let _w = watchdog("app_down", Duration::from_secs(60));
    let reserved = ReservedPort::new();
    let app_port = reserved.port;
    let Pair {
        mut dest,
        port,
        service: _service,
        tunnel: _tunnel,
        source: _source,
    } = Pair::start(&format!("SSH1={app_port}"), PairOpts::default());
    // Nothing listens: after the retries the source's client is closed.
    let started = Instant::now();
    let mut first = connect(port);
    first.write_all(b"hello?").expect("write");
    assert!(
        closed_within(&mut first, Duration::from_secs(10)),
        "the stream is reset when the application cannot be reached"
    );
    dest.stderr.wait_for("Cannot connect to", SECS_20);
    assert!(started.elapsed() < Duration::from_secs(10));
    // The application comes up: a later connection reaches it.
    let app = reserved.listen();
    thread::spawn(move || {
        for s in app.incoming() {
            let Ok(mut s) = s else { continue };
            thread::spawn(move || {
                let mut r = s.try_clone().expect("clone");
                let _ = std::io::copy(&mut r, &mut s);
            });
        }
    });
    echo_eventually(port, 3, 64 * 1024, SECS_20);
    // And the destination still stops promptly.
    let stopping = Instant::now();
    dest.signal(libc::SIGTERM);
    assert_eq!(dest.wait_exit(SECS_20), 0);
    assert!(
        stopping.elapsed() < Duration::from_secs(2),
        "SIGTERM took {:?}",
        stopping.elapsed()
    );
}

/// 100 connections that each send 128 KiB and close at once, `burst` at a
/// time: every byte reaches the application.
fn short_connections(tag: &str, src_extra: &[&str], burst: usize) {
    let (sink, sink_port) = Sink::start();
    let opts = PairOpts {
        src_extra,
        ..PairOpts::default()
    };
    let Pair {
        source,
        port,
        service: _service,
        tunnel: _tunnel,
        dest: _dest,
    } = Pair::start(&format!("SSH1={sink_port}"), opts);
    let mut expected = BTreeSet::new();
    let mut closed = 0;
    for round in 0..100 / burst {
        let mut threads = Vec::new();
        for i in 0..burst {
            let seed = (round * burst + i) as u64;
            let data = random_bytes(seed + 1000, 128 * 1024);
            expected.insert(sha256(&data));
            threads.push(thread::spawn(move || {
                let mut s = connect(port);
                s.write_all(&data).expect("write");
                // Close at once, both ways.
                drop(s);
            }));
        }
        for t in threads {
            t.join().expect("client");
        }
        // A V1/V2 destination carries one connection at a time: the next
        // one waits until the source is done with this one.
        closed += burst;
        if burst == 1 {
            source
                .stderr
                .wait_for_nth("Disconnected from", closed, SECS_20);
        }
    }
    let got: BTreeSet<_> = sink
        .wait(100, Duration::from_secs(60))
        .into_iter()
        .collect();
    assert_eq!(got.len(), 100, "{tag}: every connection arrived once");
    assert!(got == expected, "{tag}: data lost or corrupted");
}

#[test]
fn short_connections_deliver_every_byte_v3() {
    let _w = watchdog("short_v3", Duration::from_secs(120));
    short_connections("V3", &[], 4);
}

#[test]
fn short_connections_deliver_every_byte_v2() {
    let _w = watchdog("short_v2", Duration::from_secs(120));
    short_connections("V2", &["-y", "V2"], 1);
}

#[test]
fn short_connections_deliver_every_byte_v1() {
    let _w = watchdog("short_v1", Duration::from_secs(120));
    short_connections("V1", &["-y", "V1"], 1);
}

/// A V1/V2 destination carries one connection per service at a time. A
/// client that closes one connection and at once opens the next (`scp`
/// then `ssh`) reaches the port before the source has processed the end of
/// the first: the new one is held until then, not refused (it was, about
/// once in 15).
#[test]
fn back_to_back_connections_to_a_v2_service_are_held_not_refused() {
    let _w = watchdog("v2_back_to_back", Duration::from_secs(120));
    let pair = Pair::echo(PairOpts {
        src_extra: &["-y", "V2"],
        ..PairOpts::default()
    });
    for i in 0..100 {
        let data = Arc::new(random_bytes(i, 64 * 1024));
        let got = echo_through(connect(pair.port), data.clone());
        assert!(
            got == *data,
            "connection {i}: {} of {} bytes echoed",
            got.len(),
            data.len()
        );
    }
    assert_eq!(
        pair.source.stderr.count("Refusing local connection"),
        0,
        "{}",
        pair.source.stderr.all()
    );
}

/// The other way: an application that answers each connection with 128 KiB
/// and closes at once; every client reads all of it.
#[test]
fn short_answers_from_the_application_arrive_whole() {
    let _w = watchdog("short_answers", Duration::from_secs(120));
    let app = TcpListener::bind("127.0.0.1:0").expect("bind app");
    let app_port = app.local_addr().expect("addr").port();
    thread::spawn(move || {
        for (i, s) in app.incoming().enumerate() {
            let Ok(mut s) = s else { continue };
            let data = random_bytes(2000 + i as u64, 128 * 1024);
            thread::spawn(move || {
                let _ = s.write_all(&data);
                // Closed at once, before the client has read anything.
            });
        }
    });
    let p = Pair::start(&format!("SSH1={app_port}"), PairOpts::default());
    let mut expected = BTreeSet::new();
    let mut got = BTreeSet::new();
    for i in 0..100u64 {
        expected.insert(sha256(&random_bytes(2000 + i, 128 * 1024)));
        let mut s = connect(p.port);
        let mut all = Vec::new();
        s.read_to_end(&mut all).expect("read to the end");
        assert_eq!(
            all.len(),
            128 * 1024,
            "connection {i} got {} bytes",
            all.len()
        );
        got.insert(sha256(&all));
    }
    assert!(got == expected, "answers lost or corrupted");
}

#[test]
fn a_connection_start_flood_stays_under_the_cap() {
    let _w = watchdog("flood", Duration::from_secs(90));
    let Pair {
        service,
        tunnel,
        dest,
        source,
        port,
    } = Pair::echo(PairOpts::default());
    let mut open = connect(port);
    round_trip(&mut open, b"first");
    let (stream, _) = last_ids(&source);
    let base = fds_and_threads(dest.pid());
    let mut flood = Vec::new();
    for i in 0..3000u32 {
        flood.extend(frame(&message(
            MessageType::CONNECTION_START,
            stream,
            "SSH1",
            1000 + i,
            b"",
        )));
    }
    inject(&service, &tunnel, "destination", &flood);
    dest.stderr.wait_for("Refusing CONNECTION_START", SECS_20);
    // The cap (128) holds: one descriptor and two threads per connection.
    let (mut max_fds, mut max_threads) = base;
    let settle = Instant::now() + Duration::from_secs(2);
    while Instant::now() < settle {
        let (f, t) = fds_and_threads(dest.pid());
        max_fds = max_fds.max(f);
        max_threads = max_threads.max(t);
        thread::sleep(Duration::from_millis(20)); // sampling period
    }
    assert!(
        max_fds <= base.0 + 128 + 4,
        "descriptors {base:?} -> {max_fds}"
    );
    assert!(
        max_threads <= base.1 + 2 * 128 + 4,
        "threads {base:?} -> {max_threads}"
    );
    // Refusals are logged a few at a time, not 2,873 lines.
    assert!(
        dest.stderr.count("Refusing CONNECTION_START") <= 10,
        "{} refusal lines",
        dest.stderr.count("Refusing CONNECTION_START")
    );
    // The first connection still works.
    round_trip(&mut open, &random_bytes(5, 100_000));
}

#[test]
fn a_source_refuses_local_connections_beyond_the_cap() {
    let _w = watchdog("source_cap", Duration::from_secs(60));
    let capped = settings("cap3", r#""max_active_connections":"3""#, "");
    let Pair {
        source,
        port,
        service: _service,
        tunnel: _tunnel,
        dest: _dest,
    } = Pair::echo(PairOpts {
        src_settings: Some(&capped),
        ..PairOpts::default()
    });
    let mut held: Vec<TcpStream> = (0..3)
        .map(|i| {
            let mut s = connect(port);
            round_trip(&mut s, format!("held {i}").as_bytes());
            s
        })
        .collect();
    let mut extra = connect(port);
    assert!(
        closed_within(&mut extra, Duration::from_secs(5)),
        "a fourth connection is refused"
    );
    source.stderr.wait_for("max_active_connections", SECS_20);
    for s in &mut held {
        round_trip(s, b"still here");
    }
    // One closes: there is room again.
    let gone = held.pop().expect("held");
    let _ = gone.shutdown(Shutdown::Both);
    drop(gone);
    echo_eventually(port, 4, 1024, SECS_20);
}

#[test]
fn too_many_service_ids_are_a_protocol_error_and_the_proxy_reconnects() {
    let _w = watchdog("service_ids", Duration::from_secs(60));
    let Pair {
        service,
        tunnel,
        source,
        port,
        dest: _dest,
    } = Pair::echo(PairOpts::default());
    echo_eventually(port, 1, 1024, SECS_20);
    let n = source.stderr.count(CONNECTED);
    let mut ids = message(MessageType::SERVICE_IDS, 0, "", 0, b"");
    ids.availableServiceIds = ["A", "B", "C", "D", "E"]
        .iter()
        .map(|s| std::borrow::Cow::Borrowed(*s))
        .collect();
    inject(&service, &tunnel, "source", &frame(&ids));
    let line = source.stderr.wait_for(
        "SERVICE_IDS lists 5 services; a tunnel has at most 3",
        SECS_20,
    );
    assert!(line.contains("[warning]"), "{line}");
    source.stderr.wait_for_nth(CONNECTED, n + 1, SECS_20);
    echo_eventually(port, 2, 1024, SECS_20);
}

#[test]
fn a_destination_away_while_connections_start_strands_no_service() {
    let _w = watchdog("away", Duration::from_secs(90));
    let (ssh, web) = (echo_server(), echo_server());
    let map = format!("SSH1={ssh},WEB={web}");
    let client_token = "away-test-client-token-0123456789abcdef";
    let answer = settings("away", r#""answer_timeout_ms":"2000""#, "");
    let Pair {
        service,
        tunnel,
        mut dest,
        source,
        port: _,
    } = Pair::start(
        &map,
        PairOpts {
            services: &["SSH1", "WEB"],
            dest_extra: &["-i", client_token],
            src_settings: Some(&answer),
            ..PairOpts::default()
        },
    );
    let dest_args = ["-d", &map, "-i", client_token];
    let ports = [
        listening_port(&source, "SSH1"),
        listening_port(&source, "WEB"),
    ];
    for (i, p) in ports.iter().enumerate() {
        echo_eventually(*p, i as u64, 1024, SECS_20);
    }
    // The destination goes away (a crash); the source opens connections
    // whose starts the service drops, and sends on them.
    dest.child.kill().expect("kill");
    dest.child.wait().expect("wait");
    let mut stranded = Vec::new();
    for p in ports {
        for _ in 0..2 {
            let mut s = connect(p);
            s.write_all(b"anyone there?").expect("write");
            stranded.push(s);
        }
    }
    // Back with the same tokens.
    let dest = proxy(&service, &tunnel.destination_token, &dest_args, "dst2");
    dest.stderr.wait_for(CONNECTED, SECS_20);
    // A connection opened in the instant the destination logs its return,
    // before the service has attached it, is dropped by the service and
    // given up after the answer timeout; from then on every connection
    // works at the first attempt.
    let back = Instant::now();
    for (i, p) in ports.iter().enumerate() {
        echo_eventually(*p, 10 + i as u64, 4096, Duration::from_secs(5));
    }
    for (i, p) in ports.iter().enumerate() {
        for round in 0..3 {
            let attempts = echo_eventually(*p, 20 + 3 * i as u64 + round, 4096, SECS_20);
            assert_eq!(
                attempts, 1,
                "service {i}: a connection after the return failed"
            );
        }
    }
    assert!(
        back.elapsed() < Duration::from_secs(5),
        "later connections took {:?}",
        back.elapsed()
    );
    // The connections opened during the gap do not hang for ever.
    for s in &mut stranded {
        assert!(
            closed_within(s, Duration::from_secs(10)),
            "a connection opened while the destination was away hangs"
        );
    }
}

#[test]
fn the_first_reconnect_after_a_drop_is_immediate() {
    let _w = watchdog("reconnect_now", Duration::from_secs(60));
    // A long retry delay: only an immediate reconnect is fast.
    let slow = settings("slow_retry", "", r#""retry_delay_ms":"5000""#);
    let Pair {
        service,
        tunnel,
        dest,
        port,
        source: _source,
    } = Pair::echo(PairOpts {
        dest_settings: Some(&slow),
        ..PairOpts::default()
    });
    echo_eventually(port, 1, 1024, SECS_20);
    let n = dest.stderr.count(CONNECTED);
    let dropped = Instant::now();
    drop_tunnel(&service, &tunnel, "destination");
    dest.stderr.wait_for_nth(CONNECTED, n + 1, SECS_20);
    let took = dropped.elapsed();
    assert!(took < Duration::from_secs(2), "reconnected after {took:?}");
    dest.stderr.wait_for("reconnecting now", SECS_20);
    echo_eventually(port, 2, 1024, SECS_20);
}

/// The loss of an established tunnel is not a failed connect attempt, even
/// a second one soon after the first: with `connect_retry_count` 0 (give up
/// at the first failed attempt) the proxy still reconnects after each drop.
/// It used to count the second loss as a failure and exit 4 without trying.
#[test]
fn a_second_drop_soon_after_the_first_does_not_spend_a_connect_attempt() {
    let _w = watchdog("second_drop", Duration::from_secs(60));
    let strict = settings(
        "second_drop",
        "",
        r#""connect_retry_count":"0","retry_delay_ms":"100""#,
    );
    let Pair {
        service,
        tunnel,
        mut dest,
        port,
        source: _source,
    } = Pair::echo(PairOpts {
        dest_settings: Some(&strict),
        ..PairOpts::default()
    });
    echo_eventually(port, 1, 1024, SECS_20);
    for drop in 1..=2 {
        let n = dest.stderr.count(CONNECTED);
        drop_tunnel(&service, &tunnel, "destination");
        dest.stderr.wait_for_nth(CONNECTED, n + 1, SECS_20);
        echo_eventually(port, 1 + drop, 1024, SECS_20);
    }
    dest.stderr.wait_for("again within", SECS_20);
    let exited = dest.child.try_wait().expect("try_wait");
    assert!(exited.is_none(), "{exited:?}: {}", dest.stderr.all());
}

/// RssAnon of a process, in KiB (its own heap and stacks).
fn rss_anon_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// A pair with ping_period_ms = 1000: the tunnel is declared lost after
/// 2.5 s of silence or of writes without progress.
fn quick_liveness_pair(tag: &str) -> Pair {
    let quick = settings(tag, "", r#""ping_period_ms":"1000""#);
    let p = Pair::echo(PairOpts {
        dest_settings: Some(&quick),
        src_settings: Some(&quick),
        ..PairOpts::default()
    });
    echo_eventually(p.port, 1, 64 * 1024, SECS_20);
    p
}

#[test]
fn a_silent_service_is_noticed_within_the_bound_and_data_flows_again() {
    let _w = watchdog("silence", Duration::from_secs(60));
    let Pair {
        service,
        tunnel,
        dest,
        port,
        source: _source,
    } = quick_liveness_pair("silence");
    let n = dest.stderr.count(CONNECTED);
    let lost = dest.stderr.count("lost (");
    local_test(
        &service,
        "LocalTest.Silence",
        serde_json::json!({"tunnelId": tunnel.id, "side": "destination"}),
    );
    let silenced = Instant::now();
    let line = dest.stderr.wait_for_nth("lost (", lost + 1, SECS_20);
    let after = silenced.elapsed();
    assert!(
        line.contains("nothing (data, ping or pong) received"),
        "{line}"
    );
    // 2.5 ping periods, plus scheduling slack.
    assert!(
        after < Duration::from_millis(4500),
        "noticed after {after:?}"
    );
    dest.stderr.wait_for_nth(CONNECTED, n + 1, SECS_20);
    echo_eventually(port, 2, 64 * 1024, SECS_20);
}

#[test]
fn a_service_that_stops_reading_is_left_within_the_bound_with_memory_flat() {
    let _w = watchdog("stop_reading", Duration::from_secs(60));
    let Pair {
        service,
        tunnel,
        source,
        port,
        dest: _dest,
    } = quick_liveness_pair("stopread");
    let base = rss_anon_kib(source.pid());
    let n = source.stderr.count(CONNECTED);
    let lost = source.stderr.count("lost (");
    // Pings as fast as the service can, and the source's writes block.
    local_test(
        &service,
        "LocalTest.StopReading",
        serde_json::json!({"tunnelId": tunnel.id, "side": "source", "pingIntervalMs": 1}),
    );
    let stopped = Instant::now();
    // A local client pushes data into the tunnel meanwhile.
    let pump = thread::spawn(move || {
        let mut s = connect(port);
        let chunk = vec![0x5a; 64 * 1024];
        let until = Instant::now() + Duration::from_secs(15);
        while Instant::now() < until && s.write_all(&chunk).is_ok() {}
    });
    let mut peak = base;
    while source.stderr.count("lost (") == lost {
        peak = peak.max(rss_anon_kib(source.pid()));
        assert!(
            stopped.elapsed() < Duration::from_secs(15),
            "the source never gave up on a service that stopped reading"
        );
        thread::sleep(Duration::from_millis(20)); // sampling period
    }
    let after = stopped.elapsed();
    // The writer's stall limit, or the kernel's TCP_USER_TIMEOUT on the
    // zero window (the same bound), ends the connection.
    let line = source.stderr.wait_for_nth("lost (", lost + 1, SECS_20);
    assert!(
        after < Duration::from_secs(8),
        "left after {after:?}: {line}"
    );
    // Queues are bounded in bytes: about 4 MiB toward the tunnel, 64 KiB of
    // pongs; nothing grows with the pings.
    assert!(
        peak <= base + 16 * 1024,
        "RssAnon grew from {base} KiB to {peak} KiB"
    );
    source.stderr.wait_for_nth(CONNECTED, n + 1, SECS_20);
    let _ = pump.join();
    echo_eventually(port, 3, 64 * 1024, SECS_20);
}

#[test]
fn a_destination_killed_and_restarted_with_its_client_token_file_rejoins() {
    let _w = watchdog("token_file", Duration::from_secs(60));
    let map = format!("SSH1={}", echo_server());
    let file = temp_dir("token-file").join("client-token");
    let file_arg = file.to_str().expect("utf-8 path");
    let Pair {
        service,
        tunnel,
        mut dest,
        port,
        source: _source,
    } = Pair::start(
        &map,
        PairOpts {
            dest_extra: &["--client-token-file", file_arg],
            ..PairOpts::default()
        },
    );
    let dest_args = ["-d", &map, "--client-token-file", file_arg];
    echo_eventually(port, 1, 4096, SECS_20);
    // The file was created, private.
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&file).expect("token file").permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    // A crash: no close frame, the service still holds the old connection.
    dest.child.kill().expect("kill");
    dest.child.wait().expect("wait");
    // Without the file, a new client token is refused: the access token was
    // used with another one.
    let mut stranger = proxy(
        &service,
        &tunnel.destination_token,
        &["-d", &map],
        "dst-new",
    );
    assert_eq!(stranger.wait_exit(SECS_20), 2, "{}", stranger.stderr.all());
    assert!(
        stranger.final_stderr().contains("client token mismatch"),
        "{}",
        stranger.stderr.all()
    );
    // With the file, the restarted destination rejoins and carries data.
    let dest = proxy(&service, &tunnel.destination_token, &dest_args, "dst-again");
    dest.stderr.wait_for(CONNECTED, SECS_20);
    echo_eventually(port, 2, 64 * 1024, SECS_20);
}

#[test]
fn a_bound_connect_to_an_address_that_does_not_answer_gives_up_at_the_timeout() {
    let _w = watchdog("bind_timeout", Duration::from_secs(60));
    // A listener whose accept queue is full drops new SYNs: an address that
    // does not answer, on loopback.
    let app = TcpListener::bind("127.0.0.1:0").expect("bind");
    // SAFETY: listen(2) on the listener's own descriptor.
    assert_eq!(
        unsafe { libc::listen(std::os::fd::AsRawFd::as_raw_fd(&app), 0) },
        0
    );
    let app_port = app.local_addr().expect("addr").port();
    let _queued = TcpStream::connect(("127.0.0.1", app_port)).expect("fills the queue");
    let once = settings("bind_once", r#""connection_retry_count":"0""#, "");
    let Pair {
        dest,
        port,
        service: _service,
        tunnel: _tunnel,
        source: _source,
    } = Pair::start(
        &format!("SSH1={app_port}"),
        PairOpts {
            dest_extra: &["-b", "127.0.0.1"],
            dest_settings: Some(&once),
            ..PairOpts::default()
        },
    );
    let started = Instant::now();
    let mut client = connect(port);
    client.write_all(b"anyone?").expect("write");
    assert!(
        closed_within(&mut client, Duration::from_secs(20)),
        "the connection hangs"
    );
    let took = started.elapsed();
    // One attempt of 10 s (LOCAL_CONNECT_TIMEOUT), then the reset.
    assert!(
        took >= Duration::from_secs(9) && took < Duration::from_secs(13),
        "gave up after {took:?}"
    );
    let line = dest.stderr.wait_for("Cannot connect to", SECS_20);
    assert!(line.contains("timed out"), "{line}");
}

/// The stream id a source's log gives an accepted connection.
fn accepted_stream_id(source: &Proc, nth: usize) -> i64 {
    let line = source
        .stderr
        .wait_for_nth("Accepted tcp connection on port", nth, SECS_20);
    line.split("stream ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("no stream id in {line:?}"))
}

/// A source killed and restarted into the same tunnel must not reuse the
/// stream ids of the process before it: the DATA of that process's streams
/// may still be on its way (a black-holed path, a slow link), and a new
/// connection with the same id would be handed another client's bytes.
#[test]
fn a_restarted_source_does_not_reuse_the_stream_ids_of_the_process_before_it() {
    let _w = watchdog("restart_stream_ids", Duration::from_secs(60));
    let file = temp_dir("source-token-file").join("client-token");
    let file_arg = file.to_str().expect("utf-8 path");
    let src_extra = ["--client-token-file", file_arg];
    let Pair {
        service,
        tunnel,
        dest: _dest,
        mut source,
        port,
    } = Pair::echo(PairOpts {
        src_extra: &src_extra,
        ..PairOpts::default()
    });
    echo_eventually(port, 1, 4096, SECS_20);
    let before = accepted_stream_id(&source, 1);
    source.child.kill().expect("kill");
    source.child.wait().expect("wait");
    let again = proxy(
        &service,
        &tunnel.source_token,
        &["-m", "source", "--client-token-file", file_arg],
        "src-again",
    );
    let port = listening_port(&again, "SSH1");
    echo_eventually(port, 2, 4096, SECS_20);
    let after = accepted_stream_id(&again, 1);
    assert_ne!(before, after, "stream id {before} reused after a restart");
}

/// A destination application that answers and closes with unread input (a
/// reset), as an HTTP server refusing a request body does, while the client
/// keeps sending: the answer, already in the destination's receive queue
/// when the reset comes, reaches the client whole, as plain TCP delivers
/// it. (A failed local write used to make the read half drop it.)
#[test]
fn an_answer_sent_before_the_application_resets_arrives_whole() {
    let _w = watchdog("reset_after_answer", Duration::from_secs(120));
    const ANSWER: usize = 30_000;
    let answer = Arc::new(random_bytes(9, ANSWER));
    let app = TcpListener::bind("127.0.0.1:0").expect("bind");
    let app_port = app.local_addr().expect("addr").port();
    let served = answer.clone();
    thread::spawn(move || {
        for c in app.incoming().flatten() {
            let answer = served.clone();
            thread::spawn(move || {
                let mut c = c;
                let mut head = [0u8; 1000];
                if c.read_exact(&mut head).is_err() || c.write_all(&answer).is_err() {
                    return;
                }
                // Until every answer byte has left this socket (SIOCOUTQ),
                // so the reset cannot discard any of it here.
                let deadline = Instant::now() + Duration::from_secs(5);
                loop {
                    let mut queued: libc::c_int = 0;
                    // SAFETY: SIOCOUTQ writes one int for a TCP socket.
                    let rc = unsafe {
                        libc::ioctl(
                            std::os::fd::AsRawFd::as_raw_fd(&c),
                            libc::TIOCOUTQ,
                            &mut queued,
                        )
                    };
                    if rc != 0 || queued == 0 || Instant::now() > deadline {
                        break;
                    }
                    thread::sleep(Duration::from_millis(1)); // polling interval
                }
                // Dropped with the client's upload unread: a reset.
            });
        }
    });
    let Pair {
        port,
        service: _service,
        tunnel: _tunnel,
        dest: _dest,
        source: _source,
    } = Pair::start(&format!("SSH1={app_port}"), PairOpts::default());
    let mut cut = Vec::new();
    for attempt in 0..30 {
        let client = connect(port);
        client
            .set_read_timeout(Some(SECS_20))
            .expect("read timeout");
        let mut upload = client.try_clone().expect("clone");
        let uploader = thread::spawn(move || {
            let blob = vec![b'u'; 64 * 1024];
            while upload.write_all(&blob).is_ok() {}
        });
        let mut got = Vec::new();
        let mut reader = &client;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match reader.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        let _ = client.shutdown(Shutdown::Both);
        uploader.join().expect("uploader");
        if got[..] != answer[..] {
            cut.push((attempt, got.len()));
        }
    }
    assert!(
        cut.is_empty(),
        "answers cut (attempt, bytes of {ANSWER}): {cut:?}"
    );
}

/// A Unix-socket service that does not accept (its backlog full): each
/// connect gives up at the local connect timeout, as a TCP one does,
/// instead of waiting in the kernel until the service accepts, holding its
/// thread and connection slot for good.
#[test]
fn a_unix_socket_service_that_does_not_accept_gives_up_at_the_timeout() {
    let _w = watchdog("unix_backlog", Duration::from_secs(90));
    let dir = temp_dir("unix-backlog");
    let path = dir.join("wedged.sock");
    let wedged = std::os::unix::net::UnixListener::bind(&path).expect("bind");
    // SAFETY: listen(2) on the listener's own descriptor, to shrink its backlog.
    assert_eq!(
        unsafe { libc::listen(std::os::fd::AsRawFd::as_raw_fd(&wedged), 0) },
        0
    );
    // Never accepted: the backlog is full from now on.
    let _queued = std::os::unix::net::UnixStream::connect(&path).expect("fills the backlog");
    let once = settings("unix_once", r#""connection_retry_count":"0""#, "");
    let pair = pair_with_destination_settings(&format!("SSH1={}", path.display()), &once);
    let (dest, port) = (&pair.dest, pair.port);
    let started = Instant::now();
    let mut client = connect(port);
    client.write_all(b"anyone?").expect("write");
    assert!(
        closed_within(&mut client, Duration::from_secs(20)),
        "the connection hangs"
    );
    let took = started.elapsed();
    let line = dest
        .stderr
        .wait_for(&format!("Cannot connect to {}", path.display()), SECS_20);
    assert!(line.contains("timed out"), "{line}");
    // One attempt of 10 s (LOCAL_CONNECT_TIMEOUT), then the reset.
    assert!(
        took >= Duration::from_secs(9) && took < Duration::from_secs(13),
        "gave up after {took:?}"
    );
}

/// `tcp.connection_retry_count` -1 means no limit, as in the reference
/// (whose default it was before 3.2): a local service that comes up late is
/// waited for, and the connection opened meanwhile carries data once it is.
#[test]
fn a_retry_count_of_minus_one_waits_for_a_late_local_service() {
    let _w = watchdog("retry_forever", Duration::from_secs(60));
    let dir = temp_dir("late-service");
    let path = dir.join("late.sock");
    let forever = settings(
        "retry_forever",
        r#""connection_retry_count":"-1","connection_retry_delay_ms":"100""#,
        "",
    );
    let pair = pair_with_destination_settings(&format!("SSH1={}", path.display()), &forever);
    let (dest, port) = (&pair.dest, pair.port);
    let client = connect(port);
    // Attempts without a limit (the first five are logged; the warnings
    // are rate-limited).
    dest.stderr.wait_for("(attempt 5, no limit)", SECS_20);
    late_unix_echo(&path);
    let data = Arc::new(random_bytes(11, 100_000));
    let got = echo_through(client, data.clone());
    assert_eq!(sha256(&got), sha256(&data));
}

/// An echo service on a Unix socket at `path`, started late; what each
/// connection sent first (its first read) is recorded.
fn late_unix_echo(path: &std::path::Path) -> Arc<Mutex<Vec<Vec<u8>>>> {
    let late = std::os::unix::net::UnixListener::bind(path).expect("bind");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    thread::spawn(move || {
        for c in late.incoming().flatten() {
            let record = record.clone();
            thread::spawn(move || {
                let mut buf = vec![0u8; 64];
                let n = (&c).read(&mut buf).unwrap_or(0);
                record.lock().expect("lock").push(buf[..n].to_vec());
                let _ = (&c).write_all(&buf[..n]);
                let (mut r, mut w) = (&c, &c);
                let _ = std::io::copy(&mut r, &mut w);
            });
        }
    });
    seen
}

/// "Cannot connect" is a warning the peer can trigger at will (each start
/// is an attempt): it is rate-limited like the others, five per 10 s, the
/// rest counted.
#[test]
fn unreachable_local_service_warnings_are_rate_limited() {
    let _w = watchdog("unreachable_flood", Duration::from_secs(60));
    let closed = TcpListener::bind("127.0.0.1:0").expect("bind");
    let closed_port = closed.local_addr().expect("addr").port();
    drop(closed);
    let once = settings("unreachable_once", r#""connection_retry_count":"0""#, "");
    let pair = pair_with_destination_settings(&format!("SSH1={closed_port}"), &once);
    let (dest, port) = (&pair.dest, pair.port);
    for _ in 0..30 {
        let mut c = connect(port);
        c.write_all(b"x").expect("write");
        assert!(closed_within(&mut c, SECS_20), "a connection hangs");
    }
    let lines = dest.stderr.count("Cannot connect to");
    assert!(
        (1..=5).contains(&lines),
        "{lines} warnings for 30 failed connects:\n{}",
        dest.stderr.all()
    );
}

/// A pair (one service, SSH1) whose destination runs with `settings`.
fn pair_with_destination_settings(map: &str, settings: &std::path::Path) -> Pair {
    Pair::start(
        map,
        PairOpts {
            dest_settings: Some(settings),
            ..PairOpts::default()
        },
    )
}

/// Reads `s` until it ends; true when it ended with a reset (the proxy
/// aborted it), false on a clean end of stream.
fn ends_with_reset(s: &mut TcpStream, limit: Duration) -> bool {
    s.set_read_timeout(Some(limit)).expect("timeout");
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return false,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(e) => panic!("neither an end nor a reset: {e}"),
        }
    }
}

/// A pair whose destination serves SSH1 with `app`, and one local
/// connection through it, accepted by `app`, with a first payload across.
fn one_connection(app: &TcpListener, o: PairOpts<'_>) -> (Pair, TcpStream, TcpStream) {
    let app_port = app.local_addr().expect("addr").port();
    let pair = Pair::start(&format!("SSH1={app_port}"), o);
    let mut client = connect(pair.port);
    client.write_all(b"hello").expect("write");
    let (mut served, _) = app.accept().expect("accept");
    served.set_read_timeout(Some(SECS_20)).expect("timeout");
    let mut hello = [0u8; 5];
    served.read_exact(&mut hello).expect("first payload");
    assert_eq!(&hello, b"hello");
    (pair, client, served)
}

/// The destination's tunnel connection is lost in the middle of a local
/// connection: what was in flight is gone, so the application gets a reset
/// (ECONNRESET), not the clean end of a cut stream it would take for a
/// complete one.
#[test]
fn a_lost_tunnel_resets_the_local_connections_it_carried() {
    let _w = watchdog("lost_tunnel_reset", Duration::from_secs(60));
    let app = TcpListener::bind("127.0.0.1:0").expect("bind");
    let (pair, _client, mut served) = one_connection(&app, PairOpts::default());
    drop_tunnel(&pair.service, &pair.tunnel, "destination");
    assert!(
        ends_with_reset(&mut served, SECS_20),
        "the application saw a clean end of stream"
    );
}

/// An application that stops reading has its connection given up (its
/// queue full for a second); the bytes it did not take are lost, so it gets
/// a reset after what had reached it, not a clean end.
#[test]
fn an_application_that_stops_reading_is_reset_not_ended() {
    let _w = watchdog("stalled_app_reset", Duration::from_secs(90));
    let app = TcpListener::bind("127.0.0.1:0").expect("bind");
    let (pair, client, mut served) = one_connection(&app, PairOpts::default());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        thread::spawn(move || {
            let chunk = vec![7u8; 64 * 1024];
            client
                .set_write_timeout(Some(Duration::from_millis(200)))
                .expect("timeout");
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                match (&client).write(&chunk) {
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => break,
                }
            }
        })
    };
    // The application does not read until the destination gives it up.
    pair.dest
        .stderr
        .wait_for("stopped reading", Duration::from_secs(40));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    writer.join().expect("writer");
    assert!(
        ends_with_reset(&mut served, SECS_20),
        "the application saw a clean end of stream"
    );
}

/// A connection reset from the tunnel side while the destination is still
/// retrying its connect (its first payload already taken) ends the retries
/// at once: the slot comes back, and its data never reaches a local
/// service that comes up later.
#[test]
fn a_reset_while_connecting_ends_the_connect_retries() {
    let _w = watchdog("reset_while_connecting", Duration::from_secs(60));
    let dir = temp_dir("reset-connecting");
    let path = dir.join("late.sock");
    let one_slot = settings(
        "reset_connecting",
        r#""connection_retry_count":"-1","connection_retry_delay_ms":"100","max_active_connections":"1""#,
        "",
    );
    let pair = Pair::start(
        &format!("SSH1={}", path.display()),
        PairOpts {
            dest_settings: Some(&one_slot),
            dest_extra: &["-v", "5"],
            ..PairOpts::default()
        },
    );
    let (dest, port) = (&pair.dest, pair.port);
    let mut first = connect(port);
    first.write_all(b"from a dead connection").expect("write");
    dest.stderr.wait_for("(attempt 2, no limit)", SECS_20);
    drop(first);
    dest.stderr.wait_for(
        "closed from the tunnel side before it connected: not connecting",
        SECS_20,
    );
    let seen = late_unix_echo(&path);
    // The only slot is free again (once the thread that logged that line
    // has ended): a new connection is served.
    echo_eventually(port, 12, 50_000, SECS_20);
    let seen = seen.lock().expect("lock");
    assert!(
        seen.iter().all(|first| !first.starts_with(b"from a dead")),
        "a reset connection's data reached the local service"
    );
}

/// A service whose application is down does not hold up the others. Data
/// for a connection whose connect failed and waits for a retry is not
/// waited for (that wait stalled every service of the tunnel for a second
/// per such connection): the connection is reset once its queue is full.
#[test]
fn an_unreachable_service_does_not_stall_the_others() {
    let _w = watchdog("unreachable_isolation", Duration::from_secs(90));
    let down = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a port nothing listens on")
        .port();
    let slow_retry = settings_file(
        "unreachable_isolation",
        r#"{"tunneling":{"proxy":{"tcp":{"connection_retry_count":"3","connection_retry_delay_ms":"5000"}}}}"#,
    );
    let pair = Pair::start(
        &format!("SSH1={},HTTP={down}", echo_server()),
        PairOpts {
            services: &["SSH1", "HTTP"],
            dest_settings: Some(&slow_retry),
            ..PairOpts::default()
        },
    );
    let http = listening_port(&pair.source, "HTTP");
    let mut ssh = connect(pair.port);
    round_trip(&mut ssh, b"before");
    // Uploads of 4 MiB each, more than a connection's queue, one after
    // the other, to the service that is down.
    let uploads = thread::spawn(move || {
        for _ in 0..3 {
            let mut c = connect(http);
            c.set_write_timeout(Some(SECS_20)).expect("timeout");
            let chunk = vec![7u8; 64 * 1024];
            for _ in 0..64 {
                if c.write_all(&chunk).is_err() {
                    break;
                }
            }
            wait_closed(&mut c, "upload to a service that is down", SECS_20);
        }
    });
    let mut worst = Duration::ZERO;
    while !uploads.is_finished() {
        let t = Instant::now();
        round_trip(&mut ssh, &[1u8; 64]);
        worst = worst.max(t.elapsed());
    }
    uploads.join().expect("uploads");
    assert!(
        worst < Duration::from_millis(800),
        "an SSH1 round trip took {worst:?} while HTTP was down"
    );
    pair.dest
        .stderr
        .wait_for("KiB wait for it (at most 2016 KiB): resetting", SECS_20);
}

/// After a burst of connections ends, the proxies give the memory those
/// connections used back (glibc would keep it in its arenas for good): a
/// device's memory comes back to what it was, within a few MiB (the
/// tunnel's own buffers keep the size the burst gave them). The stacks of
/// exited threads are counted apart: glibc keeps them for reuse (at most
/// 40 MiB of address space), each with the few pages its thread touched
/// last, so their number depends on how many threads the burst overlapped.
#[test]
fn memory_comes_back_after_a_burst_of_connections() {
    let _w = watchdog("burst_memory", Duration::from_secs(120));
    // Memory is handed back at a pong, once no connection is left.
    let quick = settings("burst_memory", "", r#""ping_period_ms":"1000""#);
    let pair = Pair::echo(PairOpts {
        dest_settings: Some(&quick),
        src_settings: Some(&quick),
        ..PairOpts::default()
    });
    echo_eventually(pair.port, 1, 1024, SECS_20);
    let pids = [pair.source.pid(), pair.dest.pid()];
    let before = pids.map(AnonMemory::of);
    let data = Arc::new(random_bytes(3, 256 * 1024));
    let port = pair.port;
    let clients: Vec<_> = (0..100)
        .map(|_| {
            let data = data.clone();
            thread::spawn(move || echo_through(connect(port), data))
        })
        .collect();
    for c in clients {
        assert!(c.join().expect("client") == *data, "echo corrupted");
    }
    let peak = pids.map(AnonMemory::of);
    // The old code kept all of it: 8 MiB more outside the stacks.
    let deadline = Instant::now() + SECS_20;
    loop {
        let now = pids.map(AnonMemory::of);
        if now
            .iter()
            .zip(&before)
            .all(|(n, b)| n.other_kib < b.other_kib + 3 * 1024 && n.stack_kib <= 32 * n.stacks)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "private memory before {before:?}, after the burst {peak:?}, still {now:?}"
        );
        thread::sleep(Duration::from_millis(50)); // polling interval
    }
}

/// A process's private memory (`Anonymous` in `/proc/PID/smaps`, which
/// adds up to `RssAnon`), the thread stacks apart.
#[derive(Debug)]
struct AnonMemory {
    /// KiB in thread stacks, live or cached by glibc for reuse.
    stack_kib: u64,
    /// How many thread stacks.
    stacks: u64,
    /// KiB in everything else: the heap, OpenSSL's and the binary's data.
    other_kib: u64,
}

impl AnonMemory {
    fn of(pid: u32) -> AnonMemory {
        let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).expect("smaps");
        let mut memory = AnonMemory {
            stack_kib: 0,
            stacks: 0,
            other_kib: 0,
        };
        // A thread stack (glibc's layout): an unnamed read-write mapping
        // right above a one-page guard mapping with no access.
        // SAFETY: sysconf only reads a system constant.
        let page = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).expect("page");
        let mut previous: Option<(u64, u64, bool)> = None; // start, end, no access
        let mut in_stack = false;
        for line in smaps.lines() {
            let mut fields = line.split_whitespace();
            let first = fields.next().unwrap_or_default();
            if let Some((start, end)) = first.split_once('-').and_then(|(a, b)| {
                Some((
                    u64::from_str_radix(a, 16).ok()?,
                    u64::from_str_radix(b, 16).ok()?,
                ))
            }) {
                let perms = fields.next().unwrap_or_default();
                let named = fields.nth(3).is_some();
                in_stack = perms == "rw-p"
                    && !named
                    && previous.is_some_and(|(s, e, guard)| guard && e == start && e - s == page);
                memory.stacks += u64::from(in_stack);
                previous = Some((start, end, perms == "---p"));
            } else if first == "Anonymous:" {
                let kib: u64 = fields.next().and_then(|v| v.parse().ok()).unwrap_or(0);
                if in_stack {
                    memory.stack_kib += kib;
                } else {
                    memory.other_kib += kib;
                }
            }
        }
        memory
    }
}

/// A source stopped (SIGTERM) in the middle of a transfer resets its local
/// connections: the client that was receiving sees an error, not the clean
/// end of a stream that was cut.
#[test]
fn a_stopped_proxy_resets_the_connections_it_carried() {
    let _w = watchdog("stopped_reset", Duration::from_secs(60));
    let app = TcpListener::bind("127.0.0.1:0").expect("bind");
    let (pair, mut client, served) = one_connection(&app, PairOpts::default());
    // The application streams toward the client until it cannot.
    let streaming = thread::spawn(move || {
        let chunk = vec![5u8; 64 * 1024];
        while (&served).write_all(&chunk).is_ok() {}
    });
    client.set_read_timeout(Some(SECS_20)).expect("timeout");
    let mut first = [0u8; 1];
    client.read_exact(&mut first).expect("streaming");
    pair.source.signal(libc::SIGTERM);
    assert!(
        ends_with_reset(&mut client, SECS_20),
        "the client saw a clean end of stream"
    );
    drop(pair);
    streaming.join().expect("streaming thread");
}
