//! End to end: source and destination `localproxy` processes through the
//! local tunneling service, with real sockets on 127.0.0.1.

mod common;

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::*;

const SECS_20: Duration = Duration::from_secs(20);

/// Starts a destination for `maps` (`ID=PORT` pairs) and a source that picks
/// its own ports; waits until both are connected.
fn pair(service: &Service, tunnel: &Tunnel, dest_maps: &str, source_args: &[&str]) -> (Proc, Proc) {
    let dest = proxy(
        service,
        &tunnel.destination_token,
        &["-d", dest_maps, "-v", "5"],
        "dst",
    );
    dest.stderr.wait_for(
        "Successfully established websocket connection with proxy server",
        SECS_20,
    );
    let mut args = vec!["-m", "source", "-v", "5"];
    args.extend_from_slice(source_args);
    let source = proxy(service, &tunnel.source_token, &args, "src");
    source.stderr.wait_for(
        "Successfully established websocket connection with proxy server",
        SECS_20,
    );
    (dest, source)
}

#[test]
fn one_service_one_connection_with_rechunking() {
    let _w = watchdog("one_service_one_connection", Duration::from_secs(60));
    let service = Service::start(&["--rechunk-seed", "7"]);
    let tunnel = service.open(&["SSH1"]);
    let echo = echo_server();
    let (_dest, source) = pair(&service, &tunnel, &format!("SSH1={echo}"), &[]);
    // The reference's line for the --settings-json every test proxy gets.
    let settings = fast_settings();
    source.stderr.wait_for(
        &format!("Using settings specified in file: {}", settings.display()),
        SECS_20,
    );
    let port = listening_port(&source, "SSH1");
    let data = Arc::new(random_bytes(1, 300_000));
    let got = echo_through(connect(port), data.clone());
    assert_eq!(sha256(&got), sha256(&data));
}

#[test]
fn three_services_eight_connections_each_no_cross_talk() {
    let _w = watchdog("three_services", Duration::from_secs(240));
    let service = Service::start(&["--rechunk-seed", "42", "--rechunk-max", "20000"]);
    let names = ["SSH1", "WEB", "DB"];
    let tunnel = service.open(&names);
    let maps: Vec<String> = names
        .iter()
        .map(|n| format!("{n}={}", echo_server()))
        .collect();
    let (_dest, source) = pair(&service, &tunnel, &maps.join(","), &[]);
    let ports: Vec<u16> = names.iter().map(|n| listening_port(&source, n)).collect();
    let mut workers = Vec::new();
    for (si, port) in ports.iter().copied().enumerate() {
        for ci in 0..8u64 {
            let seed = (si as u64) * 100 + ci + 1;
            workers.push(thread::spawn(move || {
                let data = Arc::new(random_bytes(seed, 4 << 20));
                let got = echo_through(connect(port), data.clone());
                assert_eq!(sha256(&got), sha256(&data), "service {si} connection {ci}");
            }));
        }
    }
    for w in workers {
        w.join().expect("connection verified");
    }
    // Each simultaneous connection after the first used CONNECTION_START.
    assert!(source.stderr.count("Accepted tcp connection") >= 24);
}

#[test]
fn v2_and_v1_sources_against_a_v3_destination() {
    let _w = watchdog("v2_v1_sources", Duration::from_secs(90));
    for version in ["V2", "V1"] {
        let service = Service::start(&[]);
        let tunnel = service.open(&["SSH1"]);
        let echo = echo_server();
        let source_maps: &[&str] = if version == "V1" {
            &["-y", "V1"]
        } else {
            &["-y", "V2"]
        };
        let (_dest, source) = pair(&service, &tunnel, &format!("SSH1={echo}"), source_maps);
        let port = listening_port(&source, "SSH1");
        let first = connect(port);
        let data = Arc::new(random_bytes(9, 100_000));
        let got = echo_through(first.try_clone().expect("clone"), data.clone());
        assert_eq!(got, *data, "{version}");
        // A second simultaneous connection is refused; the first keeps working.
        let mut second = connect(port);
        let early = wait_closed(&mut second, &format!("{version}: second"), SECS_20);
        assert_eq!(early, b"", "{version}: second refused");
        source.stderr.wait_for("Refusing local connection", SECS_20);
        let again = echo_through(
            first.try_clone().expect("clone"),
            Arc::new(b"still here".to_vec()),
        );
        assert_eq!(again, b"still here");
        drop(first);
        // Once closed, a new connection gets a new stream.
        source.stderr.wait_for("Disconnected from", SECS_20);
        let got = echo_through(connect(port), Arc::new(b"next".to_vec()));
        assert_eq!(got, b"next", "{version}");
    }
}

/// A V1 source serves one service: on a tunnel of two, a source that takes
/// the advertised services (no `-s`) stops at once, saying why, instead of
/// listening on ports whose connections all fail.
#[test]
fn a_v1_source_on_a_tunnel_of_two_services_stops_with_a_clear_error() {
    let _w = watchdog("v1_two_services", Duration::from_secs(60));
    let service = Service::start(&[]);
    let tunnel = service.open(&["SSH1", "HTTP"]);
    let mut source = proxy(
        &service,
        &tunnel.source_token,
        &["-m", "source", "-y", "V1"],
        "src",
    );
    assert_eq!(source.wait_exit(SECS_20), 1, "{}", source.stderr.all());
    let err = source.final_stderr();
    assert!(
        err.contains("V1 on a tunnel of 2 services") && err.contains("use V2 or V3"),
        "{err}"
    );
    assert_eq!(
        source.stderr.count("Listening for new connection"),
        0,
        "{err}"
    );
}

/// A mapping directory is looked up for the tunnel's services only: a V1
/// source whose directory maps several services runs on a tunnel of one.
#[test]
fn a_v1_source_takes_its_one_service_from_a_mapping_directory_of_several() {
    let _w = watchdog("v1_config_dir", Duration::from_secs(60));
    let service = Service::start(&[]);
    let tunnel = service.open(&["SSH1"]);
    let dir = temp_dir("v1-config-dir");
    std::fs::write(dir.join("ports.ini"), "SSH1 = 0\nHTTP = 0\n").expect("write");
    let dir_arg = dir.to_str().expect("utf-8 path");
    let (_dest, source) = pair(
        &service,
        &tunnel,
        &format!("SSH1={}", echo_server()),
        &["-y", "V1", "--config-dir", dir_arg],
    );
    let port = listening_port(&source, "SSH1");
    let got = echo_through(connect(port), Arc::new(b"one service".to_vec()));
    assert_eq!(got, b"one service");
}

#[test]
fn destination_service_down_closes_the_client_socket() {
    let _w = watchdog("destination_down", Duration::from_secs(60));
    let service = Service::start(&[]);
    let tunnel = service.open(&["SSH1"]);
    // A port with nothing listening, kept ours until the service comes up.
    let dead = ReservedPort::new();
    let (dest, source) = pair(&service, &tunnel, &format!("SSH1={}", dead.port), &[]);
    let port = listening_port(&source, "SSH1");
    let mut client = connect(port);
    let _ = client.write_all(b"hello?");
    let early = wait_closed(&mut client, "client of the down service", SECS_20);
    assert_eq!(
        early, b"",
        "the reset reached the source and closed the client"
    );
    dest.stderr.wait_for("Cannot connect to", SECS_20);
    // The tunnel still works for the next connection once the service is up.
    let listener = dead.listen();
    thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { continue };
            thread::spawn(move || {
                let mut r = s.try_clone().expect("clone");
                let _ = std::io::copy(&mut r, &mut s);
            });
        }
    });
    let data = Arc::new(random_bytes(4, 100_000));
    assert_eq!(
        echo_through(connect(port), data.clone()),
        *data,
        "a connection after the service came up"
    );
}

/// A local service that comes up while a connection waits for its connect
/// retry gets everything the client sent meanwhile, however many small
/// writes (an interactive client): the wait keeps them in the connection's
/// own buffer, bounded in bytes, not in its queue of 32 payloads.
#[test]
fn a_service_that_comes_up_during_the_retry_gets_every_small_write() {
    let _w = watchdog("late_service_small_writes", Duration::from_secs(60));
    let service = Service::start(&[]);
    let tunnel = service.open(&["SSH1"]);
    let dead = ReservedPort::new();
    let retry = settings_file(
        "late_service_small_writes",
        r#"{"tunneling":{"proxy":{"tcp":{"connection_retry_count":"3","connection_retry_delay_ms":"1500"}}}}"#,
    );
    let dest = proxy_with(
        service.port(),
        Some(&service.ca_dir),
        &tunnel.destination_token,
        &["-d", &format!("SSH1={}", dead.port)],
        "dst",
        &[],
        &retry,
    );
    dest.stderr.wait_for(CONNECTED, SECS_20);
    let source = proxy(&service, &tunnel.source_token, &["-m", "source"], "src");
    let port = listening_port(&source, "SSH1");
    let mut client = connect(port);
    client.set_nodelay(true).expect("nodelay");
    let mut sent = Vec::new();
    for i in 0..60u8 {
        let typed = [b'a' + i % 26; 5];
        client.write_all(&typed).expect("write");
        sent.extend_from_slice(&typed);
        if i == 0 {
            dest.stderr.wait_for("Cannot connect to", SECS_20);
        }
        // The behaviour under test, not synchronisation: a typing client,
        // each write its own read and its own DATA message.
        thread::sleep(Duration::from_millis(5));
    }
    let listener = dead.listen();
    thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            let mut r = s.try_clone().expect("clone");
            let _ = std::io::copy(&mut r, &mut s);
        }
    });
    client.set_read_timeout(Some(SECS_20)).expect("timeout");
    let mut back = vec![0u8; sent.len()];
    client.read_exact(&mut back).expect("every write echoed");
    assert_eq!(back, sent);
}

/// A port on 127.0.0.1 that is bound but not listening: connections to it
/// are refused, and no other socket can take it until [`ReservedPort::listen`]
/// turns it into a listener.
struct ReservedPort {
    fd: OwnedFd,
    port: u16,
}

impl ReservedPort {
    fn new() -> ReservedPort {
        // SAFETY: socket(2) with constant arguments; the result is checked
        // and owned by the OwnedFd from here on.
        let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        assert!(raw >= 0, "socket: {}", std::io::Error::last_os_error());
        // SAFETY: `raw` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: all-zero is a valid sockaddr_in (port 0, address 0).
        let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        addr.sin_family = libc::AF_INET as libc::sa_family_t;
        addr.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
        let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        // SAFETY: `addr` is a sockaddr_in of length `len`, valid for both calls.
        unsafe {
            let p = &mut addr as *mut libc::sockaddr_in as *mut libc::sockaddr;
            assert_eq!(libc::bind(fd.as_raw_fd(), p, len), 0, "bind");
            assert_eq!(
                libc::getsockname(fd.as_raw_fd(), p, &mut len),
                0,
                "getsockname"
            );
        }
        ReservedPort {
            fd,
            port: u16::from_be(addr.sin_port),
        }
    }

    fn listen(self) -> std::net::TcpListener {
        // SAFETY: listen(2) on the bound socket we own.
        let r = unsafe { libc::listen(self.fd.as_raw_fd(), 128) };
        assert_eq!(r, 0, "listen: {}", std::io::Error::last_os_error());
        std::net::TcpListener::from(self.fd)
    }
}

#[test]
fn unix_socket_destination() {
    let _w = watchdog("unix_destination", Duration::from_secs(60));
    let dir = std::env::temp_dir().join(format!("lp-unix-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("app.sock");
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).expect("bind unix");
    thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { continue };
            thread::spawn(move || {
                let mut r = s.try_clone().expect("clone");
                let _ = std::io::copy(&mut r, &mut s);
            });
        }
    });
    let service = Service::start(&[]);
    let tunnel = service.open(&["APP"]);
    let (_dest, source) = pair(&service, &tunnel, &format!("APP={}", path.display()), &[]);
    let port = listening_port(&source, "APP");
    let data = Arc::new(random_bytes(3, 200_000));
    assert_eq!(echo_through(connect(port), data.clone()), *data);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn stalled_reader_does_not_stop_the_other_connections() {
    let _w = watchdog("stalled_reader", Duration::from_secs(120));
    let service = Service::start(&[]);
    let tunnel = service.open(&["SSH1"]);
    // A server that sends 64 MiB to each client as fast as it can.
    let flood = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let flood_port = flood.local_addr().expect("addr").port();
    thread::spawn(move || {
        for s in flood.incoming() {
            let Ok(mut s) = s else { continue };
            thread::spawn(move || {
                let chunk = vec![0x5au8; 64 * 1024];
                for _ in 0..1024 {
                    if s.write_all(&chunk).is_err() {
                        break;
                    }
                }
            });
        }
    });
    let (_dest, source) = pair(&service, &tunnel, &format!("SSH1={flood_port}"), &[]);
    let port = listening_port(&source, "SSH1");
    // The stalled client connects and never reads.
    let stalled = connect(port);
    // Meanwhile other connections keep receiving.
    for _ in 0..3 {
        let mut c = connect(port);
        let mut total = 0usize;
        let mut buf = vec![0u8; 64 * 1024];
        while total < 8 << 20 {
            let n = c.read(&mut buf).expect("flowing connection reads");
            assert!(n > 0, "flowing connection closed early");
            total += n;
        }
    }
    source
        .stderr
        .wait_for("stopped reading", Duration::from_secs(60));
    drop(stalled);
}

/// A mapping directory as the reference reads it: only the tunnel's
/// services are looked up (an entry for another service, even an invalid
/// one, is ignored), a file that is not INI is skipped with a warning, and a
/// source picks a port for a service the directory lacks and prints the
/// reference's "New port mapping" lines for it.
#[test]
fn config_dir_is_looked_up_by_the_tunnels_services() {
    let _w = watchdog("config_dir_lookup", Duration::from_secs(60));
    let service = Service::start(&[]);
    let tunnel = service.open(&["SSH1", "WEB"]);
    let (echo_ssh, echo_web) = (echo_server(), echo_server());
    let dir = temp_dir("config-dir-lookup");
    let (dst_dir, src_dir) = (dir.join("dst"), dir.join("src"));
    for d in [&dst_dir, &src_dir] {
        std::fs::create_dir_all(d).expect("mkdir");
        std::fs::write(d.join("README"), "Mappings for our devices.\n").expect("write");
    }
    std::fs::write(
        dst_dir.join("devices.ini"),
        format!("SSH1 = 127.0.0.1:{echo_ssh}\nRDP = notaport\nWEB = 127.0.0.1:{echo_web}\n"),
    )
    .expect("write");
    std::fs::write(src_dir.join("ports.ini"), "SSH1 = 0\nRDP = 3389\n").expect("write");

    let dst_arg = dst_dir.to_str().expect("utf-8 path");
    let dest = proxy(
        &service,
        &tunnel.destination_token,
        &["-m", "dst", "--config-dir", dst_arg, "-v", "5"],
        "dst",
    );
    dest.stderr.wait_for(
        "README, line 1: 'Mappings for our devices.' is not an .ini line",
        SECS_20,
    );
    dest.stderr
        .wait_for("devices.ini, line 2: 'RDP = notaport'", SECS_20);
    dest.stderr.wait_for(
        "Successfully established websocket connection with proxy server",
        SECS_20,
    );
    let src_arg = src_dir.to_str().expect("utf-8 path");
    let source = proxy(
        &service,
        &tunnel.source_token,
        &["-m", "src", "--config-dir", src_arg, "-v", "5"],
        "src",
    );
    source.stderr.wait_for("Use port mapping:", SECS_20);
    let mut ports = Vec::new();
    for id in ["SSH1", "WEB"] {
        source.stderr.wait_for(
            &format!("Listen port assigned for service id {id}. New port mapping:"),
            SECS_20,
        );
        // The mapping block's "ID = 0" comes first, the picked port second.
        let line = source
            .stderr
            .wait_for_nth(&format!("] {id} = "), 2, SECS_20);
        let port: u16 = line
            .rsplit(" = ")
            .next()
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("no port in {line:?}"));
        assert_ne!(port, 0, "{line}");
        assert_eq!(listening_port(&source, id), port);
        ports.push(port);
    }
    assert_eq!(source.stderr.count("RDP"), 0, "{}", source.stderr.all());
    for (port, echo) in [(ports[0], echo_ssh), (ports[1], echo_web)] {
        let data = Arc::new(random_bytes(u64::from(port), 20_000));
        let got = echo_through(connect(port), data.clone());
        assert_eq!(sha256(&got), sha256(&data));
        dest.stderr
            .wait_for(&format!("Connected to 127.0.0.1, port: {echo}"), SECS_20);
    }
}
