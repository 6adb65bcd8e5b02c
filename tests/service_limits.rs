//! `tunnel-service` left running against hostile clients: a 1,000-client
//! slowloris, handshakes and requests that never finish, connections over
//! the cap, and a client that floods without reading.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::raw::*;
use common::{fds_and_threads, watchdog};
use localproxy::frame::{message, FrameDecoder, MessageType};
use serde_json::json;
use tungstenite::Message as WsMessage;

/// Raises this process's soft limit on descriptors to at least `want`
/// (within the hard limit); returns the limit in force.
fn raise_nofile(want: u64) -> u64 {
    // SAFETY: getrlimit/setrlimit on a valid, initialised struct.
    unsafe {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut r), 0);
        if r.rlim_cur < want {
            r.rlim_cur = want.min(r.rlim_max);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &r), 0);
        }
        r.rlim_cur
    }
}

/// Whether the service closed `s` (EOF or reset), without waiting.
fn closed_now(s: &mut TcpStream) -> bool {
    let _ = s.set_nonblocking(true);
    let mut b = [0u8; 64];
    let r = match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    };
    let _ = s.set_nonblocking(false);
    r
}

/// Waits until the service closes `s`; returns how long that took.
fn wait_closed(s: &mut TcpStream, limit: Duration) -> Duration {
    let start = Instant::now();
    s.set_read_timeout(Some(limit)).expect("timeout");
    let mut b = [0u8; 64];
    loop {
        match s.read(&mut b) {
            Ok(0) => return start.elapsed(),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                panic!("still open after {limit:?}")
            }
            Err(_) => return start.elapsed(),
        }
    }
}

#[test]
fn a_1000_client_slowloris_does_not_lock_legitimate_clients_out() {
    let _w = watchdog("slowloris", Duration::from_secs(120));
    const CLIENTS: usize = 1000;
    let limit = raise_nofile(4 * CLIENTS as u64);
    assert!(
        limit >= 2 * CLIENTS as u64 + 100,
        "ulimit -n is {limit}: this test needs {} descriptors",
        2 * CLIENTS + 100
    );
    let svc = Svc::start(&[]);
    // Half on each plane: a TLS record header, or a request line, begun
    // and never finished.
    let mut drips: Vec<TcpStream> = Vec::with_capacity(CLIENTS);
    for i in 0..CLIENTS {
        let addr = if i % 2 == 0 { &svc.data } else { &svc.api };
        let mut s = TcpStream::connect(addr).expect("connect");
        let _ = s.write_all(if i % 2 == 0 { b"\x16" } else { b"P" });
        drips.push(s);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let dripper = {
        let stop = stop.clone();
        let mut socks: Vec<TcpStream> = drips
            .iter()
            .map(|s| s.try_clone().expect("clone"))
            .collect();
        thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                for s in &mut socks {
                    let _ = s.set_nonblocking(true);
                    let _ = s.write(b"\x03");
                }
                thread::sleep(Duration::from_millis(200)); // drip pace, not synchronisation
            }
        })
    };

    // While they drip: an API call and a tunnel handshake go through.
    let t0 = Instant::now();
    let (id, src, dst) = svc.open(&["SSH1"], 10);
    let api_time = t0.elapsed();
    let t1 = Instant::now();
    let mut s = join(&svc, "source", &src, None);
    let mut d = join(&svc, "destination", &dst, None);
    let handshake_time = t1.elapsed();
    recv(&mut s, &mut FrameDecoder::default(), 1);
    recv(&mut d, &mut FrameDecoder::default(), 1);
    assert!(
        api_time < Duration::from_secs(3),
        "API call took {api_time:?}"
    );
    assert!(
        handshake_time < Duration::from_secs(3),
        "two handshakes took {handshake_time:?}"
    );
    // And data flows between them.
    send(
        &mut s,
        frames(&[
            message(MessageType::STREAM_START, 1, "SSH1", 1, b""),
            message(MessageType::DATA, 1, "SSH1", 1, b"through"),
        ]),
    );
    match recv(&mut d, &mut FrameDecoder::default(), 2) {
        Event::Frames(m) => assert_eq!(&m[1].payload[..], b"through"),
        e => panic!("{e:?}"),
    }
    assert_eq!(
        svc.describe(&id)["sourceConnectionState"]["status"],
        "CONNECTED"
    );

    // The service holds at most its per-address share of each plane.
    let (fds, threads) = fds_and_threads(svc.pid());
    assert!(threads < 400, "{threads} threads in the service");
    assert!(fds < 1200, "{fds} descriptors in the service");
    let closed = drips.iter_mut().map(closed_now).filter(|c| *c).count();
    assert!(
        closed >= CLIENTS - 2 * 128,
        "only {closed} of {CLIENTS} dripping connections were closed"
    );
    stop.store(true, Ordering::SeqCst);
    dripper.join().expect("dripper");
}

#[test]
fn handshakes_and_requests_have_an_overall_deadline() {
    let _w = watchdog("deadline", Duration::from_secs(60));
    let svc = Svc::start(&["--request-timeout", "1"]);
    // A TLS record header announcing 16 KiB, or a request line: then one
    // byte at a time, never the end.
    for (addr, first) in [
        (&svc.data, &b"\x16\x03\x01\x40\x00"[..]),
        (&svc.api, &b"POST / HTTP/1.1\r\n"[..]),
    ] {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.write_all(first).expect("first bytes");
        let mut w = s.try_clone().expect("clone");
        let stop = Arc::new(AtomicBool::new(false));
        let dripping = {
            let stop = stop.clone();
            thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) && w.write_all(b"\0").is_ok() {
                    thread::sleep(Duration::from_millis(100)); // drip pace, not synchronisation
                }
            })
        };
        let took = wait_closed(&mut s, Duration::from_secs(5));
        stop.store(true, Ordering::SeqCst);
        dripping.join().expect("dripper");
        assert!(
            took >= Duration::from_millis(700) && took < Duration::from_secs(3),
            "{addr}: closed after {took:?}, deadline 1 s"
        );
    }
    // A keep-alive API connection idle past the deadline is closed too.
    let mut s = TcpStream::connect(&svc.api).expect("connect");
    let body = "{}";
    write!(
        s,
        "POST / HTTP/1.1\r\nHost: x\r\nX-Amz-Target: IoTSecuredTunneling.ListTunnels\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("request");
    let took = wait_closed(&mut s, Duration::from_secs(5));
    assert!(took < Duration::from_secs(3), "idle for {took:?}");
}

#[test]
fn connections_over_the_cap_are_refused_at_once() {
    let _w = watchdog("cap", Duration::from_secs(60));
    let svc = Svc::start(&["--max-connections", "2"]);
    let (_, src, dst) = svc.open(&["SSH1"], 10);
    let _s = join(&svc, "source", &src, None);
    let _d = join(&svc, "destination", &dst, None);
    // Both places are taken by connections past their handshake.
    let mut third = TcpStream::connect(&svc.data).expect("connect");
    let took = wait_closed(&mut third, Duration::from_secs(5));
    assert!(took < Duration::from_secs(1), "refused after {took:?}");
}

#[test]
fn a_client_flooding_stream_starts_with_no_destination_costs_the_service_nothing() {
    let _w = watchdog("flood", Duration::from_secs(90));
    let svc = Svc::start(&[]);
    let (_, src, _) = svc.open(&["SSH1"], 10);
    let mut s = join(&svc, "source", &src, None);
    recv(&mut s, &mut FrameDecoder::default(), 1);
    s.get_ref()
        .get_ref()
        .set_write_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    // Streams started with no destination connected: as the real service,
    // ours drops them without a word, so nothing queues toward this client
    // (which never reads) and nothing grows in the service.
    let starts: Vec<_> = (1..=5000)
        .map(|i| message(MessageType::STREAM_START, i, "SSH1", 1, b""))
        .collect();
    let chunk = frames(&starts);
    let mut sent = 0usize;
    while sent < 32 << 20 {
        s.send(WsMessage::Binary(chunk.clone().into()))
            .expect("the service keeps reading");
        sent += chunk.len();
    }
    let status = std::fs::read_to_string(format!("/proc/{}/status", svc.pid())).expect("status");
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    assert!(rss_kib < 64 * 1024, "service RSS {rss_kib} KiB");
    // Nothing was said back, and the API is still served.
    assert_silent(
        &mut s,
        Duration::from_millis(200),
        "the service answered a start without a peer",
    );
    svc.ok("IoTSecuredTunneling.ListTunnels", json!({}));
}

/// The service's resident memory, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

#[test]
fn a_client_that_pings_and_never_reads_costs_the_service_bounded_memory() {
    let _w = watchdog("ping flood", Duration::from_secs(120));
    let svc = Svc::start(&[]);
    let (_, src, _) = svc.open(&["SSH1"], 10);
    let mut s = join(&svc, "source", &src, None);
    recv(&mut s, &mut FrameDecoder::default(), 1);
    let before = rss_kib(svc.pid());
    // Masked client pings of 125 bytes, written as raw bytes (1 MiB at a
    // time); the client reads nothing, so the service's pongs cannot go
    // out. Before, each one was kept: the service grew by about the pings
    // sent. Now it stops reading this client, so the writes block.
    let mut ping = vec![0x89, 0x80 | 125, 0, 0, 0, 0];
    ping.extend([b'p'; 125]);
    let batch: Vec<u8> = ping
        .iter()
        .copied()
        .cycle()
        .take(ping.len() * 8000)
        .collect();
    s.get_ref()
        .get_ref()
        .set_write_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let mut sent = 0usize;
    while sent < 64 << 20 {
        match s.get_mut().write_all(&batch) {
            Ok(()) => sent += batch.len(),
            // Blocked for 2 s: the service no longer reads this client.
            Err(e) => {
                eprintln!("blocked after {sent} bytes: {e}");
                break;
            }
        }
    }
    let after = rss_kib(svc.pid());
    assert!(
        after < before + 24 * 1024,
        "service RSS grew from {before} to {after} KiB after {} MiB of pings",
        sent >> 20
    );
    // The client is still served once it reads: its pongs come.
    s.get_ref()
        .get_ref()
        .set_read_timeout(Some(WATCHDOG))
        .expect("timeout");
    match s.read().expect("the connection is still open") {
        WsMessage::Pong(p) => assert_eq!(&p[..], &[b'p'; 125][..]),
        m => panic!("unexpected {m:?}"),
    }
    svc.ok("IoTSecuredTunneling.ListTunnels", json!({}));
}
