//! `make demo`: the whole product end to end on the local tunneling service.
//!
//! Starts the service, opens a tunnel with two services through its API,
//! starts a destination proxy in front of an echo server and a small HTTP
//! responder, starts a source proxy, drives simultaneous connections
//! through both services, closes the tunnel, and stops every process it
//! started (children are killed on drop, and die with this process).

#[path = "../common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

fn http_responder() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind http");
    let port = l.local_addr().expect("addr").port();
    thread::spawn(move || {
        for (n, s) in l.incoming().enumerate() {
            let Ok(mut s) = s else { continue };
            thread::spawn(move || {
                let mut line = String::new();
                let mut r = BufReader::new(s.try_clone().expect("clone"));
                let _ = r.read_line(&mut line);
                // Skip the headers.
                let mut h = String::new();
                while r.read_line(&mut h).map(|n| n > 2).unwrap_or(false) {
                    h.clear();
                }
                let body = format!(
                    "hello from the device, request {} was: {}\n",
                    n + 1,
                    line.trim()
                );
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    port
}

fn main() {
    let _w = watchdog("demo", Duration::from_secs(120));
    let t0 = Instant::now();
    println!("1. Starting the local tunneling service (tunnel-service serve)");
    let service = Service::start(&[]);
    println!(
        "   data plane wss://{}  API http://{}  CA {}",
        service.data_addr,
        service.api_addr,
        service.ca_dir.display()
    );
    println!("2. Opening a tunnel with services ECHO and HTTP (OpenTunnel)");
    let tunnel = service.open(&["ECHO", "HTTP"]);
    println!("   tunnel {}", tunnel.id);

    let echo = echo_server();
    let http = http_responder();
    println!("3. Device side: echo server on port {echo}, HTTP responder on port {http}");
    let dest = proxy(
        &service,
        &tunnel.destination_token,
        &["-d", &format!("ECHO={echo},HTTP={http}")],
        "destination",
    );
    dest.stderr.wait_for(
        "Successfully established websocket connection with proxy server",
        Duration::from_secs(20),
    );
    println!("   destination localproxy connected (pid {})", dest.pid());

    let source = proxy(&service, &tunnel.source_token, &["-m", "source"], "source");
    let echo_port = listening_port(&source, "ECHO");
    let http_port = listening_port(&source, "HTTP");
    println!(
        "4. Source localproxy (pid {}) listens on port {echo_port} for ECHO and {http_port} for HTTP",
        source.pid()
    );

    println!("5. Four simultaneous echo connections, 1 MiB each, checked by SHA-256");
    let workers: Vec<_> = (0..4u64)
        .map(|i| {
            thread::spawn(move || {
                let data = Arc::new(random_bytes(i + 1, 1 << 20));
                let got = echo_through(connect(echo_port), data.clone());
                assert_eq!(sha256(&got), sha256(&data), "echo connection {i}");
                got.len()
            })
        })
        .collect();
    for (i, w) in workers.into_iter().enumerate() {
        let n = w.join().expect("echo connection");
        println!(
            "   connection {}: {n} bytes sent and echoed back intact",
            i + 1
        );
    }

    println!("6. Three simultaneous HTTP requests through the HTTP service");
    let requests: Vec<_> = (0..3)
        .map(|i| {
            thread::spawn(move || {
                let mut s = connect(http_port);
                write!(s, "GET /page{i} HTTP/1.1\r\nHost: device\r\n\r\n").expect("request");
                let mut reply = String::new();
                s.read_to_string(&mut reply).expect("response");
                reply
            })
        })
        .collect();
    for r in requests {
        let reply = r.join().expect("http request");
        let status = reply.lines().next().unwrap_or("");
        let body = reply.split("\r\n\r\n").nth(1).unwrap_or("").trim();
        assert!(status.contains("200"), "HTTP status: {status}");
        println!("   {status}: {body}");
    }

    println!("7. Closing the tunnel (CloseTunnel): both proxies exit");
    service.client(&["close", "--tunnel-id", &tunnel.id]);
    let mut dest = dest;
    let mut source = source;
    let d = dest.wait_exit(Duration::from_secs(10));
    let s = source.wait_exit(Duration::from_secs(10));
    println!("   destination exited with {d}, source exited with {s}");
    assert_eq!((d, s), (0, 0), "proxies exit 0 when the tunnel is closed");
    println!("Demo finished in {:.1?}: everything worked.", t0.elapsed());
}
