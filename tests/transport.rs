//! Transport against a real TLS WebSocket server (and CONNECT proxies) on 127.0.0.1.

#[path = "../src/bin/tunnel-service/cert.rs"]
#[allow(dead_code)]
mod cert;

use cert::Identity;
use std::cell::RefCell;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use localproxy::config::{Endpoint, Mode};
use localproxy::protocol::{SUBPROTOCOL_V2, SUBPROTOCOL_V3};
use localproxy::secret::Secret;

use localproxy::transport::{
    connect, wire, ConnectError, ConnectOptions, Connection, Incoming, ProxyFailure,
    TransportError, WebProxy,
};
use openssl::ssl::{SslAcceptor, SslMethod, SslStream};
use tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Message, WebSocket};

const IO_TIMEOUT: Duration = Duration::from_secs(15);
const ACCESS: &str = "ACCESS-TOKEN-VALUE-1234";
const CLIENT: &str = "client-token-0123456789abcdef0123456789";
const MAX_FRAME: usize = 131_076;

/// Records the log lines (trace included) of this test binary but tungstenite's: lines of
/// the transport module are kept, and any line holding a token is counted.
struct Capture;

static TRANSPORT_LOGS: Mutex<Vec<String>> = Mutex::new(Vec::new());
static LEAKS: Mutex<Vec<String>> = Mutex::new(Vec::new());

impl log::Log for Capture {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        // tungstenite never sees the tokens (the upgrade request is ours) and
        // its trace hex-dumps every frame: too slow for the bulk test.
        !m.target().starts_with("tungstenite")
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = format!("{} {}", record.target(), record.args());
        if line.contains(ACCESS) || line.contains(CLIENT) {
            LEAKS.lock().unwrap().push(line.clone());
        }
        if record.target().starts_with("localproxy::transport") {
            TRANSPORT_LOGS.lock().unwrap().push(line);
        }
    }

    fn flush(&self) {}
}

fn init_logger() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = log::set_logger(&Capture);
        log::set_max_level(log::LevelFilter::Trace);
    });
}

thread_local! {
    /// The server threads that the running test body started (see [`spawn_server`]).
    static SERVERS: RefCell<Vec<thread::JoinHandle<()>>> = const { RefCell::new(Vec::new()) };
}

/// Starts a server thread of the running test: [`with_deadline`] joins it
/// after the test body, so its assertions count (a panic there fails the test).
fn spawn_server<F: FnOnce() + Send + 'static>(f: F) {
    let handle = thread::spawn(f);
    SERVERS.with(|s| s.borrow_mut().push(handle));
}

/// Runs `f` on a thread, then joins the server threads it started, and fails
/// if any of them panicked or if all this has not finished within `secs`.
fn with_deadline<F: FnOnce() + Send + 'static>(secs: u64, f: F) {
    let (tx, rx) = mpsc::channel();
    let body_done = Arc::new(AtomicBool::new(false));
    let done = body_done.clone();
    let h = thread::spawn(move || {
        // The body's client ends are dropped when it returns (or unwinds),
        // so a server still reading sees the connection go and finishes.
        let body = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        done.store(true, Ordering::SeqCst);
        let mut server_panic = None;
        for server in SERVERS.with(|s| std::mem::take(&mut *s.borrow_mut())) {
            if let Err(p) = server.join() {
                server_panic.get_or_insert(p);
            }
        }
        // Both messages were printed when they happened; fail with the first.
        if let Err(p) = body {
            std::panic::resume_unwind(p)
        }
        if let Some(p) = server_panic {
            std::panic::resume_unwind(p)
        }
        let _ = tx.send(());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(()) => h.join().expect("test thread"),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            if let Err(p) = h.join() {
                std::panic::resume_unwind(p)
            }
        }
        Err(mpsc::RecvTimeoutError::Timeout) if body_done.load(Ordering::SeqCst) => {
            panic!("a server thread of the test was still running after its {secs} s deadline")
        }
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("test exceeded its {secs} s deadline"),
    }
}

fn identity() -> &'static Identity {
    static ID: OnceLock<Identity> = OnceLock::new();
    ID.get_or_init(|| cert::self_signed(&["localhost", "127.0.0.1"]).expect("cert"))
}

fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    std::env::temp_dir().join(format!(
        "lp-transport-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ))
}

/// A CA directory trusting `id`.
fn ca_dir(id: &Identity) -> PathBuf {
    let dir = temp_dir("ca");
    cert::write_ca_dir(&id.cert, &dir, |p, d| std::fs::write(p, d)).expect("ca dir");
    dir
}

fn acceptor(id: &Identity) -> SslAcceptor {
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).expect("acceptor");
    b.set_private_key(&id.key).expect("key");
    b.set_certificate(&id.cert).expect("cert");
    b.build()
}

/// Accepts one TLS connection on a fresh port and hands it to `f`.
fn spawn_tls_server<F>(id: &'static Identity, f: F) -> u16
where
    F: FnOnce(SslStream<TcpStream>) + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let acc = acceptor(id);
    spawn_server(move || {
        let (tcp, _) = listener.accept().expect("accept");
        tcp.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        tcp.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
        // A client that rejects the certificate makes this fail: fine.
        if let Ok(s) = acc.accept(tcp) {
            f(s)
        }
    });
    port
}

type Headers = Vec<(String, String)>;

/// What the server's upgrade answer holds.
#[derive(Clone)]
enum Answer {
    Accept {
        subprotocol: Option<&'static str>,
    },
    Refuse {
        status: u16,
        reason: Option<&'static str>,
        body: Option<&'static str>,
    },
}

fn ws_accept(
    s: SslStream<TcpStream>,
    answer: Answer,
    seen: mpsc::Sender<(String, Headers)>,
) -> Option<WebSocket<SslStream<TcpStream>>> {
    // The callback's signature is tungstenite's.
    #[allow(clippy::result_large_err)]
    let cb = move |req: &Request, mut resp: Response| -> Result<Response, ErrorResponse> {
        let headers = req
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        let _ = seen.send((req.uri().to_string(), headers));
        match answer {
            Answer::Accept { subprotocol } => {
                if let Some(p) = subprotocol {
                    resp.headers_mut()
                        .insert("Sec-WebSocket-Protocol", p.parse().unwrap());
                }
                resp.headers_mut()
                    .insert("channel-id", "chan-42".parse().unwrap());
                Ok(resp)
            }
            Answer::Refuse {
                status,
                reason,
                body,
            } => {
                let mut r = ErrorResponse::new(body.map(|b| b.to_string()));
                *r.status_mut() = status.try_into().unwrap();
                if let Some(reason) = reason {
                    r.headers_mut()
                        .insert("X-Status-Reason", reason.parse().unwrap());
                }
                Err(r)
            }
        }
    };
    let config = WebSocketConfig::default()
        .max_message_size(Some(64 << 20))
        .max_frame_size(Some(64 << 20));
    tungstenite::accept_hdr_with_config(s, cb, Some(config)).ok()
}

/// A server that accepts the upgrade and then runs `f` on the WebSocket.
fn spawn_ws_server<F>(f: F) -> (u16, mpsc::Receiver<(String, Headers)>)
where
    F: FnOnce(WebSocket<SslStream<TcpStream>>) + Send + 'static,
{
    spawn_answering(
        Answer::Accept {
            subprotocol: Some(SUBPROTOCOL_V3),
        },
        f,
    )
}

fn spawn_answering<F>(answer: Answer, f: F) -> (u16, mpsc::Receiver<(String, Headers)>)
where
    F: FnOnce(WebSocket<SslStream<TcpStream>>) + Send + 'static,
{
    let (tx, rx) = mpsc::channel();
    let port = spawn_tls_server(identity(), move |s| {
        if let Some(ws) = ws_accept(s, answer, tx) {
            f(ws)
        }
    });
    (port, rx)
}

struct Client {
    endpoint: Endpoint,
    access: Secret,
    client: Option<Secret>,
    subprotocol: String,
    capath: Option<PathBuf>,
    insecure: bool,
    proxy: Option<WebProxy>,
}

impl Client {
    fn new(port: u16) -> Self {
        Client {
            endpoint: Endpoint {
                host: "localhost".into(),
                port,
            },
            access: Secret::new(ACCESS),
            client: Some(Secret::new(CLIENT)),
            subprotocol: SUBPROTOCOL_V3.into(),
            capath: Some(ca_dir(identity())),
            insecure: false,
            proxy: None,
        }
    }

    fn connect(&self) -> Result<Connection, ConnectError> {
        init_logger();
        connect(&ConnectOptions {
            endpoint: &self.endpoint,
            mode: Mode::Source,
            access_token: &self.access,
            client_token: self.client.as_ref(),
            subprotocol: &self.subprotocol,
            capath: self.capath.as_deref(),
            no_ssl_host_verify: self.insecure,
            max_frame_size: MAX_FRAME,
            web_proxy: self.proxy.as_ref(),
            connect_timeout: Duration::from_secs(5),
            on_socket: None,
        })
    }
}

fn header<'a>(h: &'a Headers, name: &str) -> Option<&'a str> {
    h.iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn assert_no_secrets(text: &str) {
    assert!(!text.contains(ACCESS), "access token leaked: {text}");
    assert!(!text.contains(CLIENT), "client token leaked: {text}");
}

#[test]
fn handshake_sends_tokens_and_reports_channel_and_subprotocol() {
    with_deadline(20, || {
        let (port, seen) = spawn_ws_server(|mut ws| {
            // Sent at once: may arrive in the same read as the 101.
            ws.send(Message::Binary(b"hello".to_vec().into())).unwrap();
            assert_eq!(
                ws.read().unwrap(),
                Message::Binary(b"from client".to_vec().into())
            );
        });
        let conn = Client::new(port).connect().expect("connect");
        assert_eq!(conn.channel_id(), Some("chan-42"));
        assert_eq!(conn.subprotocol(), SUBPROTOCOL_V3);
        let (uri, headers) = seen.recv_timeout(IO_TIMEOUT).unwrap();
        assert_eq!(uri, "/tunnel?local-proxy-mode=source");
        assert_eq!(header(&headers, "access-token"), Some(ACCESS));
        assert_eq!(header(&headers, "client-token"), Some(CLIENT));
        assert_eq!(
            header(&headers, "sec-websocket-protocol"),
            Some(SUBPROTOCOL_V3)
        );
        assert_eq!(
            header(&headers, "host"),
            Some(&*format!("localhost:{port}"))
        );
        assert!(header(&headers, "user-agent")
            .unwrap()
            .starts_with("localproxy-rs/"));
        assert_no_secrets(&format!("{conn:?}"));
        let (mut r, mut w) = conn.split();
        assert_eq!(
            r.read().unwrap(),
            Incoming::Binary(b"hello".to_vec().into())
        );
        w.send_binary(b"from client").unwrap();
        // Trace was on: the redacted request was logged, no token anywhere.
        let logs = TRANSPORT_LOGS.lock().unwrap().join("\n");
        assert!(logs.contains("access-token: <redacted>"), "{logs}");
        assert!(logs.contains("client-token: <redacted>"), "{logs}");
        assert!(logs.contains("Web socket session ID: chan-42"), "{logs}");
        assert_eq!(*LEAKS.lock().unwrap(), Vec::<String>::new());
    });
}

#[test]
fn service_may_choose_any_offered_subprotocol() {
    with_deadline(20, || {
        let (port, _seen) = spawn_answering(
            Answer::Accept {
                subprotocol: Some(SUBPROTOCOL_V2),
            },
            |_ws| {},
        );
        let mut c = Client::new(port);
        c.subprotocol = format!("{SUBPROTOCOL_V3}, {SUBPROTOCOL_V2}");
        c.client = None;
        let conn = c.connect().expect("connect");
        assert_eq!(conn.subprotocol(), SUBPROTOCOL_V2);
    });
}

/// Message `i` of a test stream: varied lengths and contents, cheap to make.
fn chunk(i: usize) -> Vec<u8> {
    static PATTERN: OnceLock<Vec<u8>> = OnceLock::new();
    let pattern = PATTERN.get_or_init(|| {
        (0..70_000u32)
            .map(|j| (j.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect()
    });
    let len = 1 + (i * 7919) % 60_000;
    let off = (i * 131) % 9_000;
    pattern[off..off + len].to_vec()
}

#[test]
fn twenty_megabytes_each_way_with_reader_and_writer_in_two_threads() {
    with_deadline(120, || {
        let (port, _seen) = spawn_ws_server(|mut ws| loop {
            match ws.read() {
                Ok(Message::Binary(b)) => ws.send(Message::Binary(b)).unwrap(),
                Ok(Message::Close(_)) => {
                    let _ = ws.flush();
                    break;
                }
                Ok(_) => {}
                Err(_) => break,
            }
        });
        let conn = Client::new(port).connect().expect("connect");
        let (mut r, mut w) = conn.split();
        const TOTAL: usize = 20 << 20;
        let mut count = 0;
        let mut sent = 0;
        while sent < TOTAL {
            sent += chunk(count).len();
            count += 1;
        }
        let reader = thread::spawn(move || {
            let mut got = 0;
            for i in 0..count {
                match r.read().expect("read") {
                    Incoming::Binary(b) => {
                        assert_eq!(b, chunk(i), "message {i} corrupted");
                        got += b.len();
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            match r.read().expect("close") {
                Incoming::Close(Some((code, _))) => assert_eq!(code, 1000),
                other => panic!("expected close, got {other:?}"),
            }
            got
        });
        for i in 0..count {
            w.send_binary(&chunk(i)).expect("send");
        }
        w.send_close(1000, "done").expect("close");
        let got = reader.join().expect("reader");
        assert_eq!(got, sent);
        assert!(sent >= TOTAL);
    });
}

#[test]
fn close_from_client_is_answered() {
    with_deadline(20, || {
        let (port, _seen) = spawn_ws_server(|mut ws| {
            match ws.read().unwrap() {
                Message::Close(Some(c)) => {
                    assert_eq!(u16::from(c.code), 1000);
                    assert_eq!(c.reason, "bye");
                }
                other => panic!("expected close, got {other:?}"),
            }
            let _ = ws.flush();
        });
        let (mut r, mut w) = Client::new(port).connect().unwrap().split();
        w.send_close(1000, "bye").unwrap();
        match r.read().unwrap() {
            Incoming::Close(Some((1000, reason))) => assert_eq!(reason, "bye"),
            other => panic!("expected close reply, got {other:?}"),
        }
        assert!(matches!(
            w.send_binary(b"late"),
            Err(TransportError::Closed)
        ));
        // Data frames built in place are refused alike.
        let mut late = vec![wire::Outgoing::copied(b"late")];
        assert!(matches!(
            w.send_wire(&mut late),
            Err(TransportError::Closed)
        ));
    });
}

#[test]
fn server_ping_gets_exactly_one_pong_and_client_ping_gets_pong() {
    with_deadline(20, || {
        let (port, _seen) = spawn_ws_server(|mut ws| {
            ws.send(Message::Ping(b"hb".to_vec().into())).unwrap();
            assert_eq!(ws.read().unwrap(), Message::Pong(b"hb".to_vec().into()));
            ws.send(Message::Binary(b"after".to_vec().into())).unwrap();
            // The next thing must be the client's data, not a second pong.
            assert_eq!(ws.read().unwrap(), Message::Binary(b"done".to_vec().into()));
            assert_eq!(ws.read().unwrap(), Message::Ping(b"cp".to_vec().into()));
            ws.flush().unwrap();
            assert_eq!(ws.read().unwrap(), Message::Binary(b"end".to_vec().into()));
        });
        let (mut r, mut w) = Client::new(port).connect().unwrap().split();
        assert_eq!(r.read().unwrap(), Incoming::Ping);
        w.flush_control().unwrap();
        assert_eq!(
            r.read().unwrap(),
            Incoming::Binary(b"after".to_vec().into())
        );
        w.flush_control().unwrap();
        w.send_binary(b"done").unwrap();
        w.send_ping(b"cp").unwrap();
        assert_eq!(r.read().unwrap(), Incoming::Pong(b"cp".to_vec().into()));
        w.send_binary(b"end").unwrap();
    });
}

fn refused_with(status: u16) -> ConnectError {
    let (port, _seen) = spawn_answering(
        Answer::Refuse {
            status,
            reason: Some("Tunnel is closed"),
            body: Some("token spent"),
        },
        |_ws| {},
    );
    Client::new(port).connect().expect_err("refused")
}

#[test]
fn refusals_4xx_are_final_with_the_reason() {
    with_deadline(20, || {
        for status in [401u16, 403] {
            let e = refused_with(status);
            match &e {
                ConnectError::Refused {
                    status: s,
                    reason,
                    body,
                    ..
                } => {
                    assert_eq!(*s, status);
                    assert_eq!(reason.as_deref(), Some("Tunnel is closed"));
                    assert_eq!(body.as_deref(), Some("token spent"));
                }
                other => panic!("expected Refused, got {other:?}"),
            }
            assert!(!e.is_retryable());
            assert_eq!(e.status(), Some(status));
            let text = e.to_string();
            assert!(text.contains(&status.to_string()) && text.contains("Tunnel is closed"));
            assert!(text.contains("localhost:"), "{text}");
            assert!(text.contains("Hint"), "{text}");
            assert_no_secrets(&format!("{text} {e:?}"));
        }
    });
}

#[test]
fn server_errors_5xx_are_retryable() {
    with_deadline(20, || {
        let e = refused_with(500);
        assert!(
            matches!(e, ConnectError::ServerError { status: 500, .. }),
            "{e:?}"
        );
        assert!(e.is_retryable());
    });
}

#[test]
fn missing_or_unoffered_subprotocol_is_a_protocol_error() {
    with_deadline(20, || {
        for chosen in [None, Some("aws.iot.securetunneling-9.0")] {
            let (port, _seen) = spawn_answering(
                Answer::Accept {
                    subprotocol: chosen,
                },
                |_ws| {},
            );
            let e = Client::new(port).connect().expect_err("protocol");
            assert!(matches!(e, ConnectError::Protocol { .. }), "{e:?}");
            // Only a 4xx is final (docs/protocol.md 1): a broken answer is retried.
            assert!(e.is_retryable());
            assert!(e.to_string().contains("subprotocol"), "{e}");
        }
    });
}

#[test]
fn text_frame_is_an_error_not_data() {
    with_deadline(20, || {
        let (port, _seen) = spawn_ws_server(|mut ws| {
            ws.send(Message::Text("not tunnel bytes".into())).unwrap();
            let _ = ws.read();
        });
        let (mut r, _w) = Client::new(port).connect().unwrap().split();
        assert!(matches!(
            r.read(),
            Err(TransportError::TextFrame { len: 16 })
        ));
    });
}

#[test]
fn data_frames_built_in_place_reach_a_server_as_binary_messages_after_a_queued_pong() {
    with_deadline(20, || {
        // What the server read, in order (its panics would not reach us).
        let (got_tx, got) = mpsc::channel();
        let (port, _seen) = spawn_ws_server(move |mut ws| {
            ws.send(Message::Ping(b"p".to_vec().into())).unwrap();
            for _ in 0..4 {
                let m = ws.read().map_err(|e| e.to_string());
                let _ = got_tx.send(m);
            }
        });
        let (mut r, mut w) = Client::new(port).connect().unwrap().split();
        assert_eq!(r.read().unwrap(), Incoming::Ping);
        // No flush_control: the pong the reader queued goes first anyway.
        let big: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        let mut frames = vec![
            wire::Outgoing::copied(b"one"),
            wire::Outgoing::copied(&big),
            wire::Outgoing::copied(b"three"),
        ];
        w.send_wire(&mut frames).unwrap();
        assert!(frames.is_empty());
        let want = [
            Message::Pong(b"p".to_vec().into()),
            Message::Binary(b"one".to_vec().into()),
            Message::Binary(big.into()),
            Message::Binary(b"three".to_vec().into()),
        ];
        for (i, w) in want.into_iter().enumerate() {
            let m = got
                .recv_timeout(Duration::from_secs(10))
                .expect("the server read a message")
                .expect("a valid message");
            assert!(m == w, "message {i}: got {m:?}");
        }
    });
}

#[test]
fn frames_over_max_frame_size_are_errors_both_ways() {
    with_deadline(20, || {
        let (port, _seen) = spawn_ws_server(|mut ws| {
            // The client may hang up as soon as it saw the frame's header,
            // before the rest is written: that send may fail.
            let _ = ws.send(Message::Binary(vec![7; MAX_FRAME + 1].into()));
            let _ = ws.read();
        });
        let (mut r, mut w) = Client::new(port).connect().unwrap().split();
        match w.send_binary(&vec![0; MAX_FRAME + 1]) {
            Err(TransportError::FrameTooLarge { size, max }) => {
                assert_eq!((size, max), (MAX_FRAME + 1, MAX_FRAME))
            }
            other => panic!("expected FrameTooLarge, got {other:?}"),
        }
        let mut big = vec![wire::Outgoing::copied(&vec![0; MAX_FRAME + 1])];
        match w.send_wire(&mut big) {
            Err(TransportError::FrameTooLarge { size, max }) => {
                assert_eq!((size, max), (MAX_FRAME + 1, MAX_FRAME))
            }
            other => panic!("expected FrameTooLarge from send_wire, got {other:?}"),
        }
        match r.read() {
            Err(TransportError::FrameTooLarge { max, .. }) => assert_eq!(max, MAX_FRAME),
            other => panic!("expected FrameTooLarge, got {other:?}"),
        }
    });
}

#[test]
fn untrusted_certificate_fails_with_a_hint_about_c() {
    with_deadline(20, || {
        let (port, _seen) = spawn_ws_server(|_ws| {});
        let mut c = Client::new(port);
        c.capath = None;
        let e = c.connect().expect_err("untrusted");
        match &e {
            ConnectError::Tls { verify, .. } => assert!(verify.is_some()),
            other => panic!("expected Tls, got {other:?}"),
        }
        assert!(!e.is_retryable());
        let text = e.to_string();
        assert!(text.contains("-c"), "{text}");
        assert!(
            text.contains("self-signed") || text.contains("self signed"),
            "{text}"
        );
    });
}

#[test]
fn host_name_mismatch_is_reported() {
    with_deadline(20, || {
        static OTHER: OnceLock<Identity> = OnceLock::new();
        let other = OTHER.get_or_init(|| cert::self_signed(&["example.invalid"]).unwrap());
        let port = spawn_tls_server(other, |_s| {});
        let mut c = Client::new(port);
        c.capath = Some(ca_dir(other));
        let e = c.connect().expect_err("mismatch");
        let text = e.to_string();
        assert!(matches!(e, ConnectError::Tls { .. }), "{e:?}");
        assert!(
            text.to_ascii_lowercase().contains("hostname mismatch"),
            "{text}"
        );
    });
}

#[test]
fn insecure_mode_accepts_an_untrusted_certificate() {
    with_deadline(20, || {
        let (port, _seen) = spawn_ws_server(|mut ws| {
            ws.send(Message::Binary(b"ok".to_vec().into())).unwrap();
        });
        let mut c = Client::new(port);
        c.capath = None;
        c.insecure = true;
        let (mut r, _w) = c.connect().expect("-k connects").split();
        assert_eq!(r.read().unwrap(), Incoming::Binary(b"ok".to_vec().into()));
    });
}

#[test]
fn shutdown_handle_unblocks_a_blocked_read() {
    with_deadline(20, || {
        let (port, _seen) = spawn_ws_server(|mut ws| {
            // Wait for the client to go away.
            let _ = ws.read();
        });
        let (mut r, w) = Client::new(port).connect().unwrap().split();
        let handle = w.shutdown_handle();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let _ = tx.send(r.read());
        });
        // The reader must still be blocked: nothing was sent.
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
        let started = Instant::now();
        handle.clone().shutdown();
        let result = rx
            .recv_timeout(Duration::from_secs(3))
            .expect("read returned");
        assert!(result.is_err(), "{result:?}");
        assert!(started.elapsed() < Duration::from_secs(3));
    });
}

#[test]
fn silence_past_the_limit_is_reported_and_the_reader_can_go_on() {
    with_deadline(20, || {
        let (port, _seen) = spawn_ws_server(|mut ws| {
            let _ = ws.read();
            ws.send(Message::Binary(b"late".to_vec().into())).unwrap();
            let _ = ws.read();
        });
        let (mut r, mut w) = Client::new(port).connect().unwrap().split();
        let limit = Duration::from_millis(100);
        r.set_silence_limit(Some(limit)).unwrap();
        match r.read() {
            Err(TransportError::Silent { after }) => assert_eq!(after, limit),
            other => panic!("expected silence, got {other:?}"),
        }
        r.set_silence_limit(Some(IO_TIMEOUT)).unwrap();
        w.send_binary(b"go").unwrap();
        assert_eq!(r.read().unwrap(), Incoming::Binary(b"late".to_vec().into()));
    });
}

/// A service that stops reading while it floods pings: the writer gives up
/// at its stall limit, and the reader (which stops reading once its pongs
/// back up) ends with it instead of queueing pongs without end.
#[test]
fn a_service_that_stops_reading_while_pinging_ends_both_halves() {
    with_deadline(30, || {
        let (port, _seen) = spawn_ws_server(|mut ws| {
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if ws.write(Message::Ping(b"p".to_vec().into())).is_err() || ws.flush().is_err() {
                    break;
                }
            }
        });
        let (mut r, mut w) = Client::new(port).connect().unwrap().split();
        let limit = Duration::from_millis(1500);
        r.set_silence_limit(Some(limit)).unwrap();
        w.set_stall_limit(Some(limit)).unwrap();
        let reader = thread::spawn(move || loop {
            match r.read() {
                Ok(Incoming::Ping) => {}
                Ok(other) => panic!("unexpected {other:?}"),
                Err(e) => return e,
            }
        });
        let started = Instant::now();
        let payload = vec![7u8; 64 * 1024];
        let err = loop {
            if let Err(e) = w.send_binary(&payload) {
                break e;
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "writes never stalled"
            );
        };
        assert!(
            matches!(err, TransportError::WriteStalled { after } if after == limit),
            "{err:?}"
        );
        drop(w);
        let ended = Instant::now();
        let reader_err = reader.join().expect("reader");
        assert!(
            ended.elapsed() < Duration::from_secs(5),
            "the reader went on for {:?}: {reader_err:?}",
            ended.elapsed()
        );
    });
}

// ---- web proxies ----

/// Reads an HTTP request head byte by byte (so nothing past it is consumed).
fn read_request_head<S: Read>(s: &mut S) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).expect("proxy read"), 1, "EOF in CONNECT");
        head.push(b[0]);
    }
    String::from_utf8(head).expect("utf8")
}

struct ProxySeen {
    request_line: String,
    host: Option<String>,
    auth: Option<String>,
}

fn parse_connect(head: &str) -> ProxySeen {
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap().to_string();
    let mut seen = ProxySeen {
        request_line,
        host: None,
        auth: None,
    };
    for l in lines {
        if let Some((n, v)) = l.split_once(':') {
            match n.trim().to_ascii_lowercase().as_str() {
                "host" => seen.host = Some(v.trim().to_string()),
                "proxy-authorization" => seen.auth = Some(v.trim().to_string()),
                _ => {}
            }
        }
    }
    seen
}

fn pipe(a: TcpStream, b: TcpStream) {
    let (mut a2, mut b2) = (a.try_clone().unwrap(), b.try_clone().unwrap());
    let t = thread::spawn(move || {
        let mut a = a;
        let mut b = b;
        let _ = std::io::copy(&mut a, &mut b);
        let _ = b.shutdown(Shutdown::Write);
    });
    let _ = std::io::copy(&mut b2, &mut a2);
    let _ = a2.shutdown(Shutdown::Write);
    let _ = t.join();
}

/// A plain CONNECT proxy answering `status`; reports what it saw.
fn spawn_connect_proxy(status: u16) -> (u16, mpsc::Receiver<ProxySeen>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    spawn_server(move || {
        let (mut c, _) = listener.accept().unwrap();
        c.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let seen = parse_connect(&read_request_head(&mut c));
        let target = seen.request_line.split(' ').nth(1).unwrap().to_string();
        let _ = tx.send(seen);
        if status != 200 {
            let _ = c.write_all(
                format!("HTTP/1.1 {status} Nope\r\nContent-Length: 0\r\n\r\n").as_bytes(),
            );
            return;
        }
        let up = TcpStream::connect(target.replace("localhost", "127.0.0.1")).unwrap();
        up.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        c.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .unwrap();
        pipe(c, up);
    });
    (port, rx)
}

fn echo_once_server() -> u16 {
    spawn_ws_server(|mut ws| {
        let m = ws.read().unwrap();
        ws.send(m).unwrap();
        let _ = ws.read();
    })
    .0
}

fn round_trip(conn: Connection) {
    let (mut r, mut w) = conn.split();
    w.send_binary(b"through the proxy").unwrap();
    assert_eq!(
        r.read().unwrap(),
        Incoming::Binary(b"through the proxy".to_vec().into())
    );
}

#[test]
fn http_connect_proxy_with_credentials() {
    with_deadline(20, || {
        let port = echo_once_server();
        let (pport, seen) = spawn_connect_proxy(200);
        let mut c = Client::new(port);
        c.proxy = Some(WebProxy::parse(&format!("http://user:p%40ss@127.0.0.1:{pport}")).unwrap());
        round_trip(c.connect().expect("via proxy"));
        let seen = seen.recv_timeout(IO_TIMEOUT).unwrap();
        assert_eq!(
            seen.request_line,
            format!("CONNECT localhost:{port} HTTP/1.1")
        );
        assert_eq!(seen.host.as_deref(), Some(&*format!("localhost:{port}")));
        let expected = openssl::base64::encode_block(b"user:p@ss");
        assert_eq!(seen.auth, Some(format!("Basic {expected}")));
    });
}

#[test]
fn http_connect_proxy_without_credentials_scheme_less() {
    with_deadline(20, || {
        let port = echo_once_server();
        let (pport, seen) = spawn_connect_proxy(200);
        let mut c = Client::new(port);
        c.proxy = Some(WebProxy::parse(&format!("127.0.0.1:{pport}")).unwrap());
        round_trip(c.connect().expect("via proxy"));
        assert_eq!(seen.recv_timeout(IO_TIMEOUT).unwrap().auth, None);
    });
}

#[test]
fn proxy_refusal_names_the_proxy_without_credentials_and_is_retryable() {
    with_deadline(20, || {
        let (pport, _seen) = spawn_connect_proxy(407);
        let mut c = Client::new(1);
        c.proxy = Some(WebProxy::parse(&format!("http://user:hunter2@127.0.0.1:{pport}")).unwrap());
        let e = c.connect().expect_err("407");
        assert!(
            matches!(
                e,
                ConnectError::Proxy {
                    failure: ProxyFailure::Status { status: 407, .. },
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.is_retryable());
        let text = format!("{e} {e:?}");
        assert!(text.contains(&format!("127.0.0.1:{pport}")), "{text}");
        assert!(
            !text.contains("hunter2") && !text.contains("user:"),
            "{text}"
        );
    });
}

#[test]
fn unreachable_proxy_is_retryable_and_no_proxy_bypasses_it() {
    with_deadline(20, || {
        // A port with nothing listening.
        let closed = TcpListener::bind("127.0.0.1:0").unwrap();
        let dead = closed.local_addr().unwrap().port();
        drop(closed);
        let value = format!("http://127.0.0.1:{dead}");
        let env_with = |no_proxy: Option<&'static str>| {
            let value = value.clone();
            move |k: &str| match k {
                "HTTPS_PROXY" => Some(value.clone()),
                "NO_PROXY" => no_proxy.map(|s| s.to_string()),
                _ => None,
            }
        };
        let port = echo_once_server();
        let mut c = Client::new(port);
        c.proxy = WebProxy::from_env(&env_with(None), "localhost").unwrap();
        assert!(c.proxy.is_some());
        let e = c.connect().expect_err("dead proxy");
        assert!(matches!(e, ConnectError::Proxy { .. }), "{e:?}");
        assert!(e.is_retryable());
        c.proxy =
            WebProxy::from_env(&env_with(Some("example.com,localhost")), "localhost").unwrap();
        assert!(c.proxy.is_none());
        round_trip(c.connect().expect("direct"));
    });
}

/// A CONNECT proxy reached over TLS: pipes plaintext of its TLS session to
/// the target, with poll(2) so one thread serves both directions.
fn spawn_tls_connect_proxy() -> (u16, mpsc::Receiver<ProxySeen>) {
    use std::os::unix::io::AsRawFd;
    let (tx, rx) = mpsc::channel();
    let port = spawn_tls_server(identity(), move |mut s| {
        let seen = parse_connect(&read_request_head(&mut s));
        let target = seen.request_line.split(' ').nth(1).unwrap().to_string();
        let _ = tx.send(seen);
        let mut up = TcpStream::connect(target.replace("localhost", "127.0.0.1")).unwrap();
        s.write_all(b"HTTP/1.1 200 OK\r\n\r\n").unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let mut fds = [
                libc::pollfd {
                    fd: s.get_ref().as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: up.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            if s.ssl().pending() == 0 {
                // SAFETY: two valid pollfd entries, length 2.
                let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, 15_000) };
                assert!(n > 0, "proxy poll timed out or failed");
            } else {
                fds[0].revents = libc::POLLIN;
            }
            if fds[0].revents != 0 {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => up.write_all(&buf[..n]).unwrap(),
                }
            }
            if fds[1].revents != 0 {
                match up.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => s.write_all(&buf[..n]).unwrap(),
                }
            }
        }
    });
    (port, rx)
}

#[test]
fn https_connect_proxy_carries_tls_inside_tls() {
    with_deadline(30, || {
        let (port, _seen) = spawn_ws_server(|mut ws| {
            for _ in 0..50 {
                let m = ws.read().unwrap();
                ws.send(m).unwrap();
            }
            let _ = ws.read();
        });
        let (pport, seen) = spawn_tls_connect_proxy();
        let mut c = Client::new(port);
        c.proxy = Some(WebProxy::parse(&format!("https://u:pw@localhost:{pport}")).unwrap());
        let conn = c.connect().expect("via https proxy");
        assert_eq!(conn.channel_id(), Some("chan-42"));
        let seen = seen.recv_timeout(IO_TIMEOUT).unwrap();
        assert_eq!(
            seen.request_line,
            format!("CONNECT localhost:{port} HTTP/1.1")
        );
        assert!(seen.auth.is_some());
        let (mut r, w) = conn.split();
        let w = Arc::new(std::sync::Mutex::new(w));
        let w2 = w.clone();
        let sender = thread::spawn(move || {
            for i in 0..50 {
                w2.lock().unwrap().send_binary(&chunk(i)).unwrap();
            }
        });
        for i in 0..50 {
            assert_eq!(r.read().unwrap(), Incoming::Binary(chunk(i).into()));
        }
        sender.join().unwrap();
    });
}
