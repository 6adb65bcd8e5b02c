//! Raw clients for the tunnel-service tests: the service as a child
//! process, a raw HTTP JSON client and raw WebSocket clients.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub use localproxy::frame::into_owned;
use localproxy::frame::{encode_frame, FrameDecoder, FrameError, Message};
use openssl::ssl::{SslConnector, SslMethod, SslStream};
use serde_json::Value;
use tungstenite::client::IntoClientRequest;
use tungstenite::http::HeaderValue;
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Message as WsMessage, WebSocket};

/// Every network read in the tests gives up after this long.
pub const WATCHDOG: Duration = Duration::from_secs(15);

/// A running `tunnel-service serve`, killed on drop.
pub struct Svc {
    child: Child,
    pub data: String,
    pub api: String,
    pub ca_dir: PathBuf,
    /// The CA directory is the service's temporary one (not --cert-dir).
    temp_ca_dir: bool,
}

impl Svc {
    pub fn start(extra: &[&str]) -> Svc {
        let mut cmd = Command::new(super::service_bin());
        cmd.arg("serve").args(extra).stdout(Stdio::piped());
        if std::env::var_os("SERVICE_LOG").is_none() {
            cmd.stderr(Stdio::null()).arg("-v").arg("0");
        }
        let mut child = cmd.spawn().expect("service starts");
        let stdout = child.stdout.take().expect("stdout piped");
        let (tx, rx) = crossbeam_channel::bounded(1);
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(WATCHDOG).expect("READY line in time");
        let field = |k: &str| {
            line.split_whitespace()
                .find_map(|f| f.strip_prefix(&format!("{k}=")).map(str::to_string))
                .unwrap_or_else(|| panic!("no {k} in {line:?}"))
        };
        assert!(line.starts_with("READY "), "{line:?}");
        Svc {
            data: field("data"),
            api: field("api"),
            ca_dir: PathBuf::from(field("ca_dir")),
            temp_ca_dir: !extra.contains(&"--cert-dir"),
            child,
        }
    }

    /// Calls an API operation; returns status, headers (lowercased names) and JSON body.
    pub fn call(&self, target: &str, body: &str) -> (u16, Vec<(String, String)>, Value) {
        raw_call(&self.api, target, body)
    }

    /// Calls an operation that must succeed.
    pub fn ok(&self, target: &str, body: Value) -> Value {
        let (status, _, v) = self.call(target, &body.to_string());
        assert_eq!(status, 200, "{target}: {v}");
        v
    }

    /// Opens a tunnel with these services; returns (id, source token, destination token).
    pub fn open(&self, services: &[&str], minutes: u64) -> (String, String, String) {
        let v = self.ok(
            "IoTSecuredTunneling.OpenTunnel",
            serde_json::json!({
                "destinationConfig": {"thingName": "t", "services": services},
                "timeoutConfig": {"maxLifetimeTimeoutMinutes": minutes},
            }),
        );
        let s = |k: &str| v[k].as_str().expect(k).to_string();
        (
            s("tunnelId"),
            s("sourceAccessToken"),
            s("destinationAccessToken"),
        )
    }

    /// The service's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends signal `sig` to the service.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// Waits for the service to exit; returns its exit code (-1 for a signal).
    pub fn wait_exit(&mut self, limit: Duration) -> i32 {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code().unwrap_or(-1);
            }
            assert!(
                std::time::Instant::now() < deadline,
                "service did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(10)); // polling interval, not synchronisation
        }
    }

    pub fn describe(&self, id: &str) -> Value {
        self.ok(
            "IoTSecuredTunneling.DescribeTunnel",
            serde_json::json!({"tunnelId": id}),
        )["tunnel"]
            .clone()
    }
}

impl Drop for Svc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if self.temp_ca_dir {
            let _ = std::fs::remove_dir_all(&self.ca_dir);
        }
    }
}

pub fn raw_call(api: &str, target: &str, body: &str) -> (u16, Vec<(String, String)>, Value) {
    let mut tcp = TcpStream::connect(api).expect("API connects");
    tcp.set_read_timeout(Some(WATCHDOG)).expect("timeout");
    write!(
        tcp,
        "POST / HTTP/1.1\r\nHost: {api}\r\nX-Amz-Target: {target}\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("request sent");
    let mut resp = String::new();
    tcp.read_to_string(&mut resp).expect("response read");
    let (head, body) = resp.split_once("\r\n\r\n").expect("head");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (
        status,
        headers,
        serde_json::from_str(body).expect("JSON body"),
    )
}

pub type Ws = WebSocket<SslStream<TcpStream>>;

/// An accepted connection, its subprotocol and channel-id.
pub type Accepted = (Ws, Option<String>, Option<String>);

/// Opens a WebSocket to the service with `query` and extra headers; on a
/// refusal returns (status, X-Status-Reason).
pub fn connect(
    svc: &Svc,
    path_query: &str,
    headers: &[(&str, &str)],
) -> Result<Accepted, (u16, String)> {
    let url = format!(
        "wss://localhost:{}{path_query}",
        svc.data.rsplit(':').next().expect("port")
    );
    let mut req = url.into_client_request().expect("request");
    for (n, v) in headers {
        let name = tungstenite::http::HeaderName::from_bytes(n.as_bytes()).expect("header name");
        req.headers_mut()
            .append(name, HeaderValue::from_str(v).expect("header value"));
    }
    let tcp = TcpStream::connect(&svc.data).expect("data plane connects");
    tcp.set_read_timeout(Some(WATCHDOG)).expect("timeout");
    tcp.set_nodelay(true).expect("nodelay");
    let mut b = SslConnector::builder(SslMethod::tls_client()).expect("connector");
    b.set_ca_file(svc.ca_dir.join("tunnel-service.pem"))
        .expect("CA");
    let tls = b.build().connect("localhost", tcp).expect("TLS handshake");
    let config = WebSocketConfig::default().max_frame_size(Some(131_076));
    match tungstenite::client::client_with_config(req, tls, Some(config)) {
        Ok((ws, resp)) => {
            let h = |n: &str| {
                resp.headers()
                    .get(n)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            Ok((ws, h("sec-websocket-protocol"), h("channel-id")))
        }
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(resp))) => {
            let reason = resp
                .headers()
                .get("x-status-reason")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            Err((resp.status().as_u16(), reason))
        }
        Err(e) => panic!("handshake failed oddly: {e}"),
    }
}

pub const V3: &str = "aws.iot.securetunneling-3.0";

/// Connects in `mode` with an access token (and optional client token).
pub fn join(svc: &Svc, mode: &str, token: &str, client_token: Option<&str>) -> Ws {
    let mut h = vec![("access-token", token), ("sec-websocket-protocol", V3)];
    if let Some(c) = client_token {
        h.push(("client-token", c));
    }
    connect(svc, &format!("/tunnel?local-proxy-mode={mode}"), &h)
        .expect("accepted")
        .0
}

/// Frames of the messages.
pub fn frames(msgs: &[Message<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in msgs {
        encode_frame(m, &mut out).expect("encodes");
    }
    out
}

/// What a client saw next.
#[derive(Debug)]
pub enum Event {
    Frames(Vec<Message<'static>>),
    Close(u16, String),
    Text(String),
    Eof(String),
}

/// Reads until at least `n` tunnel messages arrived (or a close / EOF).
pub fn recv(ws: &mut Ws, dec: &mut FrameDecoder, n: usize) -> Event {
    let mut got = Vec::new();
    while got.len() < n {
        match ws.read() {
            Ok(WsMessage::Binary(b)) => {
                assert!(b.len() <= 131_076);
                dec.decode::<FrameError, _>(&b, |d| {
                    if let localproxy::frame::Decoded::Message(m) = d {
                        got.push(into_owned(m));
                    }
                    Ok(())
                })
                .expect("valid frames");
            }
            Ok(WsMessage::Close(f)) => {
                return f.map_or(Event::Close(1005, String::new()), |f| {
                    Event::Close(f.code.into(), f.reason.as_str().to_owned())
                })
            }
            Ok(WsMessage::Text(t)) => return Event::Text(t.as_str().to_owned()),
            Ok(_) => {}
            Err(e) => return Event::Eof(e.to_string()),
        }
    }
    Event::Frames(got)
}

/// Reads the next close frame (skipping data); panics on anything else.
pub fn expect_close(ws: &mut Ws) -> (u16, String) {
    loop {
        let next = ws.read();
        // Send the close reply tungstenite queued, so the service need not wait.
        let _ = ws.flush();
        match next {
            Ok(WsMessage::Close(Some(f))) => return (f.code.into(), f.reason.as_str().to_owned()),
            Ok(WsMessage::Close(None)) => return (1005, String::new()),
            Ok(_) => {}
            Err(e) => panic!("no close frame: {e}"),
        }
    }
}

pub fn send(ws: &mut Ws, bytes: Vec<u8>) {
    ws.send(WsMessage::Binary(bytes.into())).expect("sent");
}

/// Asserts that nothing arrives on `ws` for `quiet` (`what` says what would
/// have been wrong), then restores the read bound of every test client.
#[allow(dead_code)]
pub fn assert_silent(ws: &mut Ws, quiet: Duration, what: &str) {
    let sock = ws.get_ref().get_ref();
    sock.set_read_timeout(Some(quiet)).expect("timeout");
    match ws.read() {
        Err(tungstenite::Error::Io(e))
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) => {}
        other => panic!("{what}: {other:?}"),
    }
    ws.get_ref()
        .get_ref()
        .set_read_timeout(Some(WATCHDOG))
        .expect("timeout");
}
