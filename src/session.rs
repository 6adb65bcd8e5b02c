//! The tunnel session: connect (and reconnect), then route tunnel messages
//! between the WebSocket and the local connections, in source or
//! destination mode.
//!
//! Threads: the caller's thread reads the WebSocket and dispatches messages;
//! one writer thread owns the WebSocket's sending side and batches frames;
//! each local connection has a read and a write thread (see [`crate::tcp`]);
//! a source has one accept thread per listener. State shared between them
//! (the stream table and the current tunnel link) sits behind one mutex that
//! is never held while blocking.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, select, tick, unbounded, Receiver, SendTimeoutError, Sender};

use crate::config::{Config, DestinationAddr, Mode, PeerVersion, Target};
use crate::frame::{Decoded, FrameDecoder, FrameError, Message, MessageType};
use crate::protocol;
use crate::secret::Secret;
use crate::stop::{Hook, Stop};
use crate::streams::{ClosingMessage, ConnKey, Opening, ServiceIdx, Table, WireIds};
use crate::tcp::{self, ConnStats, LocalStream, ReadHalf};
use crate::transport::{self, ConnectError, Incoming, ShutdownHandle, WebProxy, WsWriter};

/// Frames waiting for the tunnel writer, from all local connections. With
/// frames of at most 64 KiB this bounds that queue to about 4 MiB.
const DATA_QUEUE: usize = 64;
/// Payloads waiting to be written to one local application (at most
/// 32 x max_payload_size, about 2 MiB per connection).
const LOCAL_QUEUE: usize = 32;
/// How long the tunnel reader waits for a local application whose queue is
/// full before resetting that connection. While it waits, the tunnel (and
/// so every connection) pauses: the bound on that pause.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(1);
/// A connection that stayed up this long resets the reconnect backoff (so
/// does one that got as far as the service's SERVICE_IDS: see [`run`]).
const HEALTHY_PERIOD: Duration = Duration::from_secs(30);
/// Upper bound of the reconnect backoff.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Stack of the tunnel's own threads.
const TUNNEL_THREAD_STACK: usize = 256 * 1024;

/// Why the proxy stopped, with its exit status.
#[derive(Debug)]
pub enum RunError {
    /// The service refused the handshake (4xx), its certificate did not
    /// verify, or the connection cannot be set up: retrying cannot help.
    Refused(ConnectError),
    /// Another proxy connected with the same token.
    Replaced,
    /// `connect_retry_count` attempts failed in a row.
    GaveUp { attempts: u32, last: String },
    /// A protocol error with `reconnect_on_data_error` off.
    Protocol(String),
    /// The tunnel and the configuration disagree, or a local port is taken.
    Setup(String),
    /// The web proxy settings in the environment are unusable.
    WebProxy(String),
}

impl RunError {
    /// The process exit status (documented in the README and `--help`).
    pub fn exit_code(&self) -> i32 {
        match self {
            RunError::Setup(_) | RunError::WebProxy(_) => 1,
            RunError::Refused(_) => 2,
            RunError::Replaced => 3,
            RunError::GaveUp { .. } => 4,
            RunError::Protocol(_) => 5,
        }
    }
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::Refused(e) => write!(f, "{e}"),
            RunError::Replaced => f.write_str(
                "another local proxy connected with the same access token and replaced this one; \
                 not reconnecting so the two do not take turns",
            ),
            RunError::GaveUp { attempts, last } => write!(
                f,
                "could not connect to the tunneling service after {attempts} attempt(s) \
                 (connect_retry_count); last error: {last}"
            ),
            RunError::Protocol(e) => write!(
                f,
                "protocol error and reconnect_on_data_error is false: {e}"
            ),
            RunError::Setup(e) => f.write_str(e),
            RunError::WebProxy(e) => write!(f, "web proxy setting: {e}"),
        }
    }
}

impl std::error::Error for RunError {}

/// A random client token (64 hex digits, within `^[a-zA-Z0-9-]{32,128}$`).
pub fn generate_client_token() -> Secret {
    let mut bytes = [0u8; 32];
    if openssl::rand::rand_bytes(&mut bytes).is_err() {
        // Fall back on the clock and pid: uniqueness is all a client token needs.
        let t = Instant::now().elapsed().as_nanos() ^ u128::from(std::process::id());
        bytes[..16].copy_from_slice(&t.to_le_bytes());
    }
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Secret::new(hex)
}

/// Runs the proxy until the tunnel is closed, a final error, or a stop.
pub fn run(config: Config, stop: Arc<Stop>) -> Result<(), RunError> {
    let client_token = config
        .client_token
        .clone()
        .unwrap_or_else(generate_client_token);
    let env = |k: &str| std::env::var(k).ok();
    let web_proxy = WebProxy::from_env(&env, &config.endpoint.host)
        .map_err(|e| RunError::WebProxy(e.to_string()))?;
    let shared = Arc::new(Shared::new(config));
    let cfg = &shared.config;
    let base = Duration::from_millis(cfg.settings.retry_delay_ms);
    let mut failures: u32 = 0;
    loop {
        if stop.is_set() {
            return Ok(());
        }
        if cfg.no_ssl_host_verify {
            log::warn!(
                "-k/--no-ssl-host-verify: the service's certificate is NOT verified; anyone on \
                 the path can read the tunnel. Use this for tests only"
            );
        }
        log::info!(
            "Connecting to {}:{} as {}",
            cfg.endpoint.host,
            cfg.endpoint.port,
            cfg.mode.as_query()
        );
        let opts = transport::ConnectOptions {
            endpoint: &cfg.endpoint,
            mode: cfg.mode,
            access_token: &cfg.access_token,
            client_token: Some(&client_token),
            subprotocol: &cfg.settings.subprotocol,
            capath: cfg.capath.as_deref(),
            no_ssl_host_verify: cfg.no_ssl_host_verify,
            max_frame_size: cfg.settings.max_frame_size,
            web_proxy: web_proxy.as_ref(),
            connect_timeout: Duration::from_secs(15),
        };
        let reason = match transport::connect(&opts) {
            Err(e) if !e.is_retryable() => return Err(RunError::Refused(e)),
            Err(e) => e.to_string(),
            Ok(conn) => {
                log::info!(
                    "Connected to the tunneling service: channel-id {}, subprotocol {}",
                    conn.channel_id().unwrap_or("(none)"),
                    conn.subprotocol()
                );
                // systemd (Type=notify): ready once the tunnel is up; a
                // repeated READY=1 after a reconnect is harmless.
                crate::notify::notify_ready(&format!(
                    "connected to {} ({})",
                    cfg.endpoint.host,
                    conn.subprotocol()
                ));
                let started = Instant::now();
                match shared.serve(conn, &stop) {
                    End::Closed(why) => {
                        log::info!("Tunnel closed by the service ({why}): exiting");
                        return Ok(());
                    }
                    End::Stopped => return Ok(()),
                    End::Replaced => return Err(RunError::Replaced),
                    End::Fatal(e) => return Err(e),
                    End::Protocol(e) if !cfg.settings.reconnect_on_data_error => {
                        return Err(RunError::Protocol(e))
                    }
                    End::Protocol(e) | End::Lost(e) => {
                        // A tunnel that was usable (handshake accepted and
                        // the services known) or stayed up a while counts
                        // as a recovery: the backoff and the
                        // connect_retry_count budget start over, so a
                        // service restarted again and again is rejoined at
                        // retry_delay_ms each time. A service that accepts
                        // and drops at once is still retried no faster than
                        // retry_delay_ms.
                        if shared.was_usable() || started.elapsed() >= HEALTHY_PERIOD {
                            failures = 0;
                        }
                        e
                    }
                }
            }
        };
        failures += 1;
        let limit = cfg.settings.connect_retry_count;
        if limit >= 0 && i64::from(failures) > limit {
            return Err(RunError::GaveUp {
                attempts: failures,
                last: reason,
            });
        }
        let delay = backoff(base, failures);
        crate::notify::notify_status(&format!("reconnecting: {reason}"));
        log::warn!(
            "Tunnel connection failed or lost ({reason}); reconnect attempt {failures} in {delay:.1?}"
        );
        if stop.wait(delay) {
            return Ok(());
        }
    }
}

/// `base` doubled for each failure after the first, capped.
fn backoff(base: Duration, failures: u32) -> Duration {
    let factor = 1u32 << failures.saturating_sub(1).min(16);
    base.saturating_mul(factor).min(MAX_BACKOFF.max(base))
}

/// How one tunnel connection ended.
enum End {
    /// Normal close from the service: the tunnel was closed or expired.
    Closed(String),
    /// Stopped by a signal.
    Stopped,
    /// Another proxy took over with the same token.
    Replaced,
    /// The connection broke: reconnect.
    Lost(String),
    /// The peer or service sent something invalid.
    Protocol(String),
    /// Cannot go on at all.
    Fatal(RunError),
}

/// Sent to the writer thread by everyone but the local connections' data path.
enum Control {
    /// A protocol frame (already framed).
    Frame(Vec<u8>),
    /// Flush pongs and close replies queued by the reader.
    Flush,
    /// Send a close frame.
    Close(u16, String),
    /// End the writer.
    Stop,
}

/// The channels into the current tunnel connection's writer.
#[derive(Clone)]
struct Link {
    data: Sender<Vec<u8>>,
    control: Sender<Control>,
}

/// Where a connection's socket lands once connected (shared with its handle).
type SockSlot = Arc<Mutex<Option<LocalStream>>>;

/// One local connection as the tunnel side sees it.
struct LocalConn {
    /// Payloads toward the local application; dropping it closes the connection.
    tx: Sender<Vec<u8>>,
    /// Set once connected, to force a stalled connection closed.
    sock: SockSlot,
}

impl LocalConn {
    /// A destination connection still connecting: its queue (data may
    /// arrive before the connect completes) and the slot for its socket.
    fn pending() -> (LocalConn, Receiver<Vec<u8>>, SockSlot) {
        let (tx, rx) = bounded(LOCAL_QUEUE);
        let sock = Arc::new(Mutex::new(None));
        let conn = LocalConn {
            tx,
            sock: sock.clone(),
        };
        (conn, rx, sock)
    }

    fn force_close(&self) {
        if let Ok(s) = self.sock.lock() {
            if let Some(s) = s.as_ref() {
                s.shutdown(Shutdown::Both);
            }
        }
    }
}

struct State {
    /// Created when the services are known (mapping or SERVICE_IDS).
    table: Option<Table<LocalConn>>,
    /// Local end of each service, in table order.
    targets: Vec<Target>,
    link: Option<Link>,
    /// The service ids the tunnel advertised first; later ones must match.
    advertised: Option<BTreeSet<String>>,
    listening: bool,
}

struct Shared {
    config: Config,
    state: Mutex<State>,
    /// The current tunnel connection got as far as knowing its services.
    usable: AtomicBool,
}

impl Shared {
    fn new(config: Config) -> Self {
        let (table, targets) = if config.services.is_empty() {
            (None, Vec::new())
        } else {
            let names = config.services.iter().map(|s| s.id.clone()).collect();
            let targets = config.services.iter().map(|s| s.target.clone()).collect();
            (Some(Table::new(names)), targets)
        };
        Shared {
            config,
            state: Mutex::new(State {
                table,
                targets,
                link: None,
                advertised: None,
                listening: false,
            }),
            usable: AtomicBool::new(false),
        }
    }

    /// Whether the last tunnel connection became usable (see `usable`).
    fn was_usable(&self) -> bool {
        self.usable.load(Ordering::SeqCst)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the table consistent enough
        // (every operation is a few map edits): keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Serves one tunnel connection until it ends.
    fn serve(self: &Arc<Self>, conn: transport::Connection, stop: &Arc<Stop>) -> End {
        self.usable.store(false, Ordering::SeqCst);
        let v1_only = conn.subprotocol() == protocol::SUBPROTOCOL_V1;
        let (mut reader, writer) = conn.split();
        let shutdown = writer.shutdown_handle();
        let (data_tx, data_rx) = bounded::<Vec<u8>>(DATA_QUEUE);
        let (control_tx, control_rx) = unbounded::<Control>();
        let ping = Duration::from_millis(self.config.settings.ping_period_ms.max(100));
        let max_frame = self.config.settings.max_frame_size;
        let wshutdown = shutdown.clone();
        let writer_thread = thread::Builder::new()
            .name("tunnel-write".into())
            .stack_size(TUNNEL_THREAD_STACK)
            .spawn(move || write_loop(writer, data_rx, control_rx, ping, max_frame, wshutdown));
        let writer_thread = match writer_thread {
            Ok(t) => t,
            Err(e) => return End::Lost(format!("cannot start the writer thread: {e}")),
        };
        self.lock().link = Some(Link {
            data: data_tx,
            control: control_tx.clone(),
        });
        let close_tx = control_tx.clone();
        stop.set_hook(Some(Hook {
            send_close: Box::new(move || {
                let _ = close_tx.send(Control::Close(
                    protocol::CLOSE_NORMAL,
                    "local proxy stopped".into(),
                ));
            }),
            shutdown: shutdown.clone(),
        }));
        if v1_only {
            // V1 has no SERVICE_IDS: the mappings stand as configured.
            if let Err(e) = self.services_known(None) {
                return self.finish(End::Fatal(e), stop, &control_tx, &shutdown, writer_thread);
            }
        }
        let mut decoder = FrameDecoder::new(self.config.settings.max_payload_size);
        let end = loop {
            match reader.read() {
                Ok(Incoming::Binary(chunk)) => {
                    let r = decoder.decode::<Failure, _>(&chunk, |d| self.dispatch(d));
                    match r {
                        Ok(()) => {}
                        Err(Failure::Frame(e)) => break End::Protocol(e.to_string()),
                        Err(Failure::Fatal(e)) => break End::Fatal(e),
                    }
                }
                Ok(Incoming::Ping) => {
                    let _ = control_tx.send(Control::Flush);
                }
                Ok(Incoming::Pong(payload)) => log_pong(&payload),
                Ok(Incoming::Close(frame)) => {
                    // The close reply is queued: let the writer send it.
                    let _ = control_tx.send(Control::Flush);
                    break close_outcome(frame);
                }
                Err(e) if stop.is_set() => {
                    log::debug!("reader ended while stopping: {e}");
                    break End::Stopped;
                }
                // What the service sent breaks the protocol (PROTOCOL.md 2):
                // a data error, subject to reconnect_on_data_error.
                Err(
                    e @ (transport::TransportError::TextFrame { .. }
                    | transport::TransportError::FrameTooLarge { .. }),
                ) => break End::Protocol(e.to_string()),
                Err(e) => break End::Lost(e.to_string()),
            }
        };
        let end = if stop.is_set() { End::Stopped } else { end };
        self.finish(end, stop, &control_tx, &shutdown, writer_thread)
    }

    fn finish(
        &self,
        end: End,
        stop: &Stop,
        control: &Sender<Control>,
        shutdown: &ShutdownHandle,
        writer: thread::JoinHandle<()>,
    ) -> End {
        let closed = {
            let mut st = self.lock();
            st.link = None;
            st.table.as_mut().map(|t| t.reset_all()).unwrap_or_default()
        };
        if !closed.is_empty() {
            log::info!("Closing {} local connection(s)", closed.len());
        }
        drop(closed);
        if let End::Fatal(_) | End::Protocol(_) = end {
            let _ = control.send(Control::Close(1002, "protocol error".into()));
        }
        let _ = control.send(Control::Stop);
        let _ = writer.join();
        shutdown.shutdown();
        stop.set_hook(None);
        end
    }

    /// Handles one decoded message on the reader thread.
    fn dispatch(self: &Arc<Self>, d: Decoded<'_>) -> Result<(), Failure> {
        let msg = match d {
            Decoded::Message(m) => m,
            Decoded::Ignored { raw_type } => {
                log::debug!("Skipping ignorable message of unknown type {raw_type}");
                return Ok(());
            }
        };
        log::trace!(
            "received {:?} stream {} service '{}' connection {} payload {} bytes",
            msg.type_pb,
            msg.streamId,
            msg.serviceId,
            msg.connectionId,
            msg.payload.len()
        );
        match msg.type_pb {
            MessageType::DATA => self.on_data(&msg),
            MessageType::SERVICE_IDS => {
                let ids = msg
                    .availableServiceIds
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
                self.services_known(Some(ids)).map_err(Failure::Fatal)?;
            }
            MessageType::STREAM_START => self.on_stream_start(&msg),
            MessageType::CONNECTION_START => self.on_connection_start(&msg),
            MessageType::STREAM_RESET => {
                let closed = self.with_service(&msg, |t, svc| t.stream_reset(svc, msg.streamId));
                match closed {
                    Some(conns) => log::info!(
                        "Stream {} reset by the peer: closing {} connection(s)",
                        msg.streamId,
                        conns.len()
                    ),
                    None => log::debug!("Dropping STREAM_RESET for stale stream {}", msg.streamId),
                }
            }
            MessageType::CONNECTION_RESET => {
                let closed = self.with_service(&msg, |t, svc| {
                    t.connection_reset(svc, msg.streamId, msg.connectionId)
                });
                match closed {
                    Some(_) => log::debug!(
                        "Connection {} of stream {} reset by the peer",
                        msg.connectionId,
                        msg.streamId
                    ),
                    None => log::debug!(
                        "Dropping CONNECTION_RESET for stream {} connection {}: not open",
                        msg.streamId,
                        msg.connectionId
                    ),
                }
            }
            MessageType::SESSION_RESET => {
                let closed = self
                    .lock()
                    .table
                    .as_mut()
                    .map(|t| t.reset_all())
                    .unwrap_or_default();
                log::info!(
                    "Session reset by the service: closing {} connection(s)",
                    closed.len()
                );
            }
            MessageType::UNKNOWN => {}
        }
        Ok(())
    }

    /// Runs `f` on the table with the message's service, if both exist.
    fn with_service<R>(
        &self,
        msg: &Message<'_>,
        f: impl FnOnce(&mut Table<LocalConn>, ServiceIdx) -> Option<R>,
    ) -> Option<R> {
        let mut st = self.lock();
        let table = st.table.as_mut()?;
        let svc = table.find_service(&msg.serviceId, msg.streamId)?;
        f(table, svc)
    }

    fn on_data(&self, msg: &Message<'_>) {
        let target = {
            let st = self.lock();
            st.table.as_ref().and_then(|t| {
                let svc = t.find_service(&msg.serviceId, msg.streamId)?;
                let conn = t.data_target(svc, msg.streamId, msg.connectionId)?;
                let key = ConnKey {
                    service: svc,
                    stream_id: msg.streamId,
                    conn_id: msg.connectionId.max(1),
                };
                Some((key, conn.tx.clone()))
            })
        };
        let Some((key, tx)) = target else {
            log::debug!(
                "Dropping DATA for stream {} connection {}: not open (stale or closed)",
                msg.streamId,
                msg.connectionId
            );
            return;
        };
        match tx.send_timeout(msg.payload.to_vec(), STALL_TIMEOUT) {
            Ok(()) => {}
            Err(SendTimeoutError::Disconnected(_)) => {}
            Err(SendTimeoutError::Timeout(_)) => {
                let removed = self.lock().table.as_mut().and_then(|t| t.remove(&key));
                if let Some((conn, ids)) = removed {
                    log::warn!(
                        "Local application of stream {} connection {} stopped reading \
                         ({} KiB queued for {:?}): resetting that connection",
                        key.stream_id,
                        key.conn_id,
                        LOCAL_QUEUE * self.config.settings.max_payload_size / 1024,
                        STALL_TIMEOUT
                    );
                    conn.force_close();
                    self.send_reset(&ids);
                }
            }
        }
    }

    /// Tells the peer a connection is gone, in the format its stream speaks.
    fn send_reset(&self, ids: &WireIds) {
        let kind = if ids.version == PeerVersion::V3 {
            MessageType::CONNECTION_RESET
        } else {
            MessageType::STREAM_RESET
        };
        self.send_control(tcp::control_frame(kind, ids));
    }

    fn send_control(&self, frame: Vec<u8>) {
        let link = self.lock().link.clone();
        if let Some(link) = link {
            let _ = link.control.send(Control::Frame(frame));
        }
    }

    fn on_stream_start(self: &Arc<Self>, msg: &Message<'_>) {
        if self.config.mode == Mode::Source {
            log::warn!(
                "Ignoring STREAM_START for stream {}: a source proxy does not accept streams",
                msg.streamId
            );
            return;
        }
        if msg.streamId == 0 {
            log::warn!("Ignoring STREAM_START with stream id 0");
            return;
        }
        let (conn, rx, sock) = LocalConn::pending();
        let started = {
            let mut st = self.lock();
            let State { table, targets, .. } = &mut *st;
            table.as_mut().and_then(|t| {
                let svc = t.find_service(&msg.serviceId, msg.streamId)?;
                let (key, ids, old) =
                    t.stream_start(svc, msg.streamId, &msg.serviceId, msg.connectionId, conn);
                Some((key, ids, old, targets.get(svc).cloned(), t.label(svc)))
            })
        };
        let Some((key, ids, old, Some(Target::Connect(addr)), label)) = started else {
            log::warn!(
                "STREAM_START for unknown service '{}': answering with STREAM_RESET",
                msg.serviceId
            );
            let ids = WireIds {
                stream_id: msg.streamId,
                service_id: msg.serviceId.to_string(),
                connection_id: 0,
                version: PeerVersion::V2,
            };
            self.send_control(tcp::control_frame(MessageType::STREAM_RESET, &ids));
            return;
        };
        if !old.is_empty() {
            log::info!(
                "New stream {} for service {label} replaces the previous one: closing {} connection(s)",
                msg.streamId,
                old.len()
            );
        }
        self.spawn_connect(key, ids, addr, label, rx, sock, MessageType::STREAM_RESET);
    }

    fn on_connection_start(self: &Arc<Self>, msg: &Message<'_>) {
        if self.config.mode == Mode::Source {
            log::warn!(
                "Ignoring CONNECTION_START for stream {}: a source proxy does not accept connections",
                msg.streamId
            );
            return;
        }
        let (conn, rx, sock) = LocalConn::pending();
        let outcome = {
            let mut st = self.lock();
            let State { table, targets, .. } = &mut *st;
            let Some(t) = table.as_mut() else { return };
            let Some(svc) = t.find_service(&msg.serviceId, msg.streamId) else {
                log::debug!(
                    "Dropping CONNECTION_START for unknown service '{}'",
                    msg.serviceId
                );
                return;
            };
            let label = t.label(svc);
            t.connection_start(svc, msg.streamId, msg.connectionId, conn)
                .map(|(key, ids)| (key, ids, targets.get(svc).cloned(), label))
        };
        match outcome {
            Ok((key, ids, Some(Target::Connect(addr)), label)) => self.spawn_connect(
                key,
                ids,
                addr,
                label,
                rx,
                sock,
                MessageType::CONNECTION_RESET,
            ),
            Ok(_) => {}
            Err((true, _)) => log::warn!(
                "Ignoring CONNECTION_START for stream {} connection {}: already open (or id 0)",
                msg.streamId,
                msg.connectionId
            ),
            Err((false, _)) => log::debug!(
                "Dropping CONNECTION_START for stale stream {}",
                msg.streamId
            ),
        }
    }

    /// Destination: connects to the local service on a thread of its own
    /// (with the configured retries), then starts the connection's pipe.
    #[allow(clippy::too_many_arguments)]
    fn spawn_connect(
        self: &Arc<Self>,
        key: ConnKey,
        ids: WireIds,
        addr: DestinationAddr,
        label: String,
        rx: Receiver<Vec<u8>>,
        sock: SockSlot,
        failure: MessageType,
    ) {
        let me = self.clone();
        let spawned = thread::Builder::new()
            .name("local-connect".into())
            .stack_size(tcp::CONNECTION_THREAD_STACK)
            .spawn(move || me.connect_local(key, ids, addr, label, rx, sock, failure));
        if let Err(e) = spawned {
            log::error!("Cannot start a connection thread: {e}");
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn connect_local(
        self: Arc<Self>,
        key: ConnKey,
        ids: WireIds,
        addr: DestinationAddr,
        label: String,
        rx: Receiver<Vec<u8>>,
        sock: SockSlot,
        failure: MessageType,
    ) {
        let s = &self.config.settings;
        let attempts = s.tcp_connection_retry_count.max(0) + 1;
        let delay = Duration::from_millis(s.tcp_connection_retry_delay_ms);
        let bind = self.config.bind_address.as_deref();
        let target = tcp::describe(&addr);
        let mut result = Err(std::io::Error::other("no attempt"));
        for attempt in 1..=attempts {
            if !self.is_live(&key) {
                return;
            }
            result = tcp::connect_once(&addr, bind);
            match &result {
                Ok(_) => break,
                Err(e) if attempt < attempts => {
                    log::warn!(
                        "Cannot connect to {target} for service {label} (attempt {attempt} of {attempts}): {e}; retrying in {delay:?}"
                    );
                    thread::sleep(delay);
                }
                Err(_) => {}
            }
        }
        let stream = match result {
            Ok(s) => s,
            Err(e) => {
                log::warn!(
                    "Cannot connect to {target} for service {label}: {e}; resetting stream {} connection {}",
                    key.stream_id,
                    key.conn_id
                );
                // Bound first: a guard in the `if let` scrutinee would be held
                // through send_control, which locks again (a self-deadlock).
                let removed = self.lock().table.as_mut().and_then(|t| t.remove(&key));
                if let Some((_, ids)) = removed {
                    let kind = if ids.version == PeerVersion::V3 {
                        failure
                    } else {
                        MessageType::STREAM_RESET
                    };
                    self.send_control(tcp::control_frame(kind, &ids));
                }
                return;
            }
        };
        if let Ok(clone) = stream.try_clone() {
            if let Ok(mut slot) = sock.lock() {
                *slot = Some(clone);
            }
        }
        let Some(link) = self.lock().link.clone() else {
            return;
        };
        log::info!(
            "Connection opened: service {label}, stream {}, connection {} -> {target}",
            key.stream_id,
            key.conn_id
        );
        self.start_pipe(stream, key, ids, rx, link.data, &label);
    }

    fn is_live(&self, key: &ConnKey) -> bool {
        self.lock().table.as_ref().is_some_and(|t| {
            t.data_target(key.service, key.stream_id, key.conn_id)
                .is_some()
        })
    }

    fn start_pipe(
        self: &Arc<Self>,
        stream: LocalStream,
        key: ConnKey,
        ids: WireIds,
        rx: Receiver<Vec<u8>>,
        data: Sender<Vec<u8>>,
        label: &str,
    ) {
        let stats = ConnStats::new(format!(
            "service {label}, stream {}, connection {}",
            key.stream_id, key.conn_id
        ));
        let me = self.clone();
        let closer_tx = data.clone();
        let on_closed = Box::new(move || me.local_closed(&key, &closer_tx));
        let half = ReadHalf {
            to_tunnel: data,
            ids,
            read_size: self
                .config
                .settings
                .tcp_read_buffer_size
                .min(self.config.settings.max_payload_size),
            on_closed,
        };
        if let Err(e) = tcp::spawn_pipe(stream, rx, half, stats) {
            log::error!("Cannot start the threads of a local connection: {e}");
        }
    }

    /// A local connection ended: tell the peer unless the tunnel side
    /// closed it first. Sent on the data channel, after the connection's
    /// last DATA, so the peer receives everything before the reset.
    fn local_closed(&self, key: &ConnKey, data: &Sender<Vec<u8>>) {
        let closed = self.lock().table.as_mut().and_then(|t| t.local_closed(key));
        if let Some((_conn, closing)) = closed {
            let frame = match &closing {
                ClosingMessage::ConnectionReset(ids) => {
                    tcp::control_frame(MessageType::CONNECTION_RESET, ids)
                }
                ClosingMessage::StreamReset(ids) => {
                    tcp::control_frame(MessageType::STREAM_RESET, ids)
                }
            };
            let _ = data.send(frame);
        }
    }

    /// The tunnel's services are known: from SERVICE_IDS (`Some`) or, for
    /// V1, from the mappings alone. Validates them against the mappings and,
    /// the first time on a source, starts listening.
    fn services_known(self: &Arc<Self>, advertised: Option<Vec<String>>) -> Result<(), RunError> {
        let mut st = self.lock();
        if let Some(ids) = &advertised {
            let set: BTreeSet<String> = ids.iter().filter(|s| !s.is_empty()).cloned().collect();
            log::debug!("Tunnel services: {set:?}");
            match &st.advertised {
                Some(prev) if *prev != set => {
                    return Err(RunError::Setup(format!(
                        "the tunnel now advertises services {set:?} instead of {prev:?}"
                    )))
                }
                Some(_) => {}
                None => {
                    self.check_mappings(&set)?;
                    st.advertised = Some(set.clone());
                    if st.table.is_none() {
                        if self.config.mode == Mode::Destination {
                            return Err(RunError::Setup(format!(
                                "no destination given for the tunnel's services {set:?}: map each with -d ID=PORT or --config-dir"
                            )));
                        }
                        // No mapping: a free port for each advertised service.
                        st.table = Some(Table::new(set.iter().cloned().map(Some).collect()));
                        st.targets = set.iter().map(|_| Target::Listen(0)).collect();
                    }
                }
            }
        }
        if self.config.mode == Mode::Source && !st.listening {
            let names: Vec<String> = {
                let t = st.table.as_ref().ok_or_else(|| {
                    RunError::Setup("the tunnel advertised no service and none is mapped".into())
                })?;
                (0..t.service_count()).map(|i| t.label(i)).collect()
            };
            let host = self
                .config
                .bind_address
                .clone()
                .unwrap_or_else(|| self.config.settings.default_bind_address.clone());
            // Bind every listener before spawning any accept thread.
            let mut listeners = Vec::new();
            for (idx, target) in st.targets.iter().enumerate() {
                let port = match target {
                    Target::Listen(p) => *p,
                    Target::Connect(_) => continue,
                };
                let l = tcp::bind_listener(&host, port).map_err(|e| {
                    RunError::Setup(format!(
                        "cannot listen on {host}:{port} for service {}: {e}",
                        names[idx]
                    ))
                })?;
                listeners.push((idx, l));
            }
            st.listening = true;
            drop(st);
            for (idx, l) in listeners {
                let port = l.local_addr().map(|a| a.port()).unwrap_or(0);
                log::info!(
                    "Listening for new connection on port {port} for service {}",
                    names[idx]
                );
                let me = self.clone();
                thread::Builder::new()
                    .name("accept".into())
                    .stack_size(tcp::CONNECTION_THREAD_STACK)
                    .spawn(move || me.accept_loop(idx, l))
                    .map_err(|e| RunError::Setup(format!("cannot start a listener thread: {e}")))?;
            }
        }
        self.usable.store(true, Ordering::SeqCst);
        Ok(())
    }

    fn check_mappings(&self, advertised: &BTreeSet<String>) -> Result<(), RunError> {
        let named: BTreeSet<String> = self
            .config
            .services
            .iter()
            .filter_map(|s| s.id.clone())
            .collect();
        if named.is_empty() {
            // One unnamed mapping speaks V1, which any tunnel accepts; no
            // mapping at all takes the advertised services.
            return Ok(());
        }
        if named != *advertised {
            return Err(RunError::Setup(format!(
                "the service ids mapped on this side {named:?} do not match the tunnel's services {advertised:?}: \
                 map exactly the services the tunnel was opened with"
            )));
        }
        Ok(())
    }

    fn accept_loop(self: Arc<Self>, service: ServiceIdx, listener: TcpListener) {
        for incoming in listener.incoming() {
            match incoming {
                Ok(stream) => self.accept_local(service, stream),
                Err(e) => {
                    log::warn!("Accepting a local connection failed: {e}");
                    thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    /// Source: a local client connected to a service's port.
    fn accept_local(self: &Arc<Self>, service: ServiceIdx, stream: TcpStream) {
        let peer = stream
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let (tx, rx) = bounded(LOCAL_QUEUE);
        let sock = Arc::new(Mutex::new(stream.try_clone().ok().map(LocalStream::Tcp)));
        let conn = LocalConn { tx, sock };
        let opened = {
            let mut st = self.lock();
            let Some(link) = st.link.clone() else {
                log::warn!("Refusing local connection from {peer}: the tunnel is not connected");
                return;
            };
            let Some(t) = st.table.as_mut() else { return };
            let label = t.label(service);
            t.source_open(service, self.config.peer_version, conn)
                .map(|(key, ids, op)| (key, ids, op, link, label))
        };
        let (key, ids, op, link, label) = match opened {
            Ok(v) => v,
            Err(refusal) => {
                let crate::streams::Refusal::Busy { service, version } = refusal;
                log::warn!(
                    "Refusing local connection from {peer} for service {service}: a {version:?} destination \
                     carries one connection per service and one is open (use a V3 destination for more)"
                );
                let _ = stream.shutdown(Shutdown::Both);
                return;
            }
        };
        let kind = match op {
            Opening::StreamStart => MessageType::STREAM_START,
            Opening::ConnectionStart => MessageType::CONNECTION_START,
        };
        log::info!(
            "Connection opened: service {label}, stream {}, connection {} from {peer}",
            key.stream_id,
            key.conn_id
        );
        if link.data.send(tcp::control_frame(kind, &ids)).is_err() {
            return;
        }
        self.start_pipe(LocalStream::Tcp(stream), key, ids, rx, link.data, &label);
    }
}

/// Errors that end the reader loop from inside a dispatch.
enum Failure {
    Frame(FrameError),
    Fatal(RunError),
}

impl From<FrameError> for Failure {
    fn from(e: FrameError) -> Self {
        Failure::Frame(e)
    }
}

fn close_outcome(frame: Option<(u16, String)>) -> End {
    match frame {
        Some((_, reason)) if reason.to_ascii_lowercase().contains("replaced") => End::Replaced,
        Some((code, reason)) if code == protocol::CLOSE_NORMAL => {
            End::Closed(if reason.is_empty() {
                "normal close".into()
            } else {
                reason
            })
        }
        Some((code, reason)) => End::Lost(format!(
            "the service closed the connection with code {code}: {reason}"
        )),
        None => End::Lost("the service closed the connection without a close code".into()),
    }
}

/// Process-wide origin of ping timestamps.
fn ping_epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn log_pong(payload: &[u8]) {
    if let Ok(b) = <[u8; 8]>::try_from(payload) {
        let sent = Duration::from_micros(u64::from_be_bytes(b));
        let now = ping_epoch().elapsed();
        if let Some(rtt) = now.checked_sub(sent) {
            log::debug!("Tunnel round trip (ping/pong): {rtt:.1?}");
        }
    }
}

fn write_loop(
    mut ws: WsWriter,
    data: Receiver<Vec<u8>>,
    control: Receiver<Control>,
    ping_period: Duration,
    max_frame: usize,
    shutdown: ShutdownHandle,
) {
    let ticker = tick(ping_period);
    let result = (|| -> Result<(), transport::TransportError> {
        loop {
            select! {
                recv(control) -> c => match c {
                    Ok(Control::Frame(f)) => ws.send_binary_owned(f)?,
                    Ok(Control::Flush) => ws.flush_control()?,
                    Ok(Control::Close(code, reason)) => ws.send_close(code, &reason)?,
                    Ok(Control::Stop) | Err(_) => return Ok(()),
                },
                recv(data) -> d => match d {
                    Ok(first) => send_batch(&mut ws, first, &data, max_frame)?,
                    Err(_) => return Ok(()),
                },
                recv(ticker) -> _ => {
                    let micros = ping_epoch().elapsed().as_micros() as u64;
                    ws.send_ping(&micros.to_be_bytes())?;
                }
            }
        }
    })();
    if let Err(e) = result {
        log::debug!("Tunnel writer ended: {e}");
        // Make the reader notice at once.
        shutdown.shutdown();
    }
}

/// Sends `first` and whatever else is queued, packed into WebSocket
/// messages of at most `max_frame` bytes (frames may share a message). The
/// frames' buffers are handed to the WebSocket without another copy; a
/// batch grows in place, reserving room for a whole message once.
fn send_batch(
    ws: &mut WsWriter,
    first: Vec<u8>,
    data: &Receiver<Vec<u8>>,
    max_frame: usize,
) -> Result<(), transport::TransportError> {
    let mut batch = first;
    // Bound the work per call so control messages are not starved.
    for _ in 0..DATA_QUEUE {
        let Ok(next) = data.try_recv() else { break };
        if batch.len() + next.len() > max_frame {
            ws.send_binary_owned(std::mem::replace(&mut batch, next))?;
        } else {
            if batch.capacity() < batch.len() + next.len() {
                batch.reserve(max_frame - batch.len());
            }
            batch.extend_from_slice(&next);
        }
    }
    ws.send_binary_owned(batch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let base = Duration::from_millis(2500);
        assert_eq!(backoff(base, 1), base);
        assert_eq!(backoff(base, 2), base * 2);
        assert_eq!(backoff(base, 3), base * 4);
        assert_eq!(backoff(base, 40), MAX_BACKOFF);
        assert_eq!(
            backoff(Duration::from_secs(120), 3),
            Duration::from_secs(120)
        );
    }

    #[test]
    fn generated_client_tokens_are_valid_and_distinct() {
        let a = generate_client_token();
        let b = generate_client_token();
        assert!(protocol::is_valid_client_token(a.expose()));
        assert_ne!(a.expose(), b.expose());
    }

    #[test]
    fn close_codes_map_to_outcomes() {
        assert!(matches!(
            close_outcome(Some((1000, "closed".into()))),
            End::Closed(_)
        ));
        assert!(matches!(
            close_outcome(Some((1008, protocol::CLOSE_REASON_REPLACED.into()))),
            End::Replaced
        ));
        assert!(matches!(
            close_outcome(Some((1011, "oops".into()))),
            End::Lost(_)
        ));
        assert!(matches!(close_outcome(None), End::Lost(_)));
    }
}
