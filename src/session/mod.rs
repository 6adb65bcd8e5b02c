//! The tunnel session: connect (and reconnect) to the service, then carry
//! local connections through the tunnel, in source or destination mode.
//!
//! Files, one job each:
//! - here: the run loop (connect, serve, reconnect with backoff), the
//!   errors that end it, and the state the session's threads share;
//! - [`machine`]: the per-message decisions, a state machine without I/O;
//! - `reader`: one tunnel connection's life: the reader thread decodes
//!   tunnel frames and acts on the machine's decisions;
//! - `writer`: the thread that owns the WebSocket's sending side;
//! - `source`: listeners and accepted local connections;
//! - `destination`: connecting to local services.
//!
//! Threads: the caller's thread reads the WebSocket; one writer thread per
//! tunnel connection; two threads per local connection (see [`crate::tcp`]);
//! on a source one accept thread per listener. They share one mutex (the
//! machine and the current tunnel link), never held across I/O: a thread
//! takes a decision under the lock, releases it, then acts.

mod destination;
pub mod machine;
mod reader;
mod source;
mod writer;

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender};

use crate::buffers::BufferPool;
use crate::config::{Config, Mode};
use crate::frame::FrameError;
use crate::logging::Limiter;
use crate::secret::Secret;
use crate::stop::{Hook, Stop};
use crate::tcp::Closer;
use crate::transport::{self, ConnectError, ProxyConfigError, TransportError, WebProxy};
use machine::{Machine, Note, ServicesError};
use writer::Link;

/// A connection that stayed up this long resets the reconnect backoff (so
/// does one that got as far as the service's SERVICE_IDS: see [`run`]).
const HEALTHY_PERIOD: Duration = Duration::from_secs(30);
/// Upper bound of the reconnect backoff.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Bounds the whole connect to the service: TCP, web proxy, TLS, upgrade.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Payloads waiting to be written to one local application (at most
/// 32 x max_payload_size, about 2 MiB per connection).
const LOCAL_QUEUE: usize = 32;
/// Spare data buffers kept for reuse (see [`crate::buffers`]): at most
/// 40 x 64.8 KiB, about 2.5 MiB, and only once traffic has used them. As
/// many as one bulk connection has in flight (the tunnel's data queue, a
/// write group and a read batch; or a local queue and a write batch), so a
/// steady transfer allocates nothing: with fewer, every refill of the data
/// queue allocated and zeroed the difference (2% of a sender's CPU).
const POOL_DEPTH: usize = 40;
/// Size of a pooled buffer: the largest DATA frame (the largest payload and
/// its fields, a 128-byte service id included) with room to spare.
const POOL_BUFFER: usize = crate::protocol::MAX_PAYLOAD_SIZE + 256;

/// Why the proxy stopped, with its exit status. `Display` says what this
/// layer knows; the cause, if any, is the error's `source()`.
#[derive(Debug)]
pub enum RunError {
    /// The service refused the handshake (4xx), its certificate did not
    /// verify, or the connection cannot be set up: retrying cannot help.
    Refused(ConnectError),
    /// Another proxy connected with the same token.
    Replaced,
    /// `connect_retry_count` attempts failed in a row.
    GaveUp { attempts: u32, last: TunnelError },
    /// A protocol error with `reconnect_on_data_error` off.
    Protocol(TunnelError),
    /// The tunnel and the configuration disagree.
    Services(ServicesError),
    /// A local port cannot be listened on.
    Listen {
        address: String,
        service: String,
        source: std::io::Error,
    },
    /// The process cannot run (signal handling, threads).
    Setup {
        what: &'static str,
        source: std::io::Error,
    },
    /// The web proxy settings in the environment are unusable.
    WebProxy(ProxyConfigError),
}

impl RunError {
    /// The process exit status (documented in the README and `--help`).
    pub fn exit_code(&self) -> u8 {
        match self {
            RunError::Services(_)
            | RunError::Listen { .. }
            | RunError::Setup { .. }
            | RunError::WebProxy(_) => 1,
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
            RunError::Refused(_) => f.write_str("cannot use the tunnel"),
            RunError::Replaced => f.write_str(
                "another local proxy connected with the same access token and replaced this one; \
                 not reconnecting so the two do not take turns",
            ),
            RunError::GaveUp { attempts, .. } => write!(
                f,
                "could not connect to the tunneling service after {attempts} attempt(s) \
                 (connect_retry_count); last error"
            ),
            RunError::Protocol(_) => {
                f.write_str("protocol error and reconnect_on_data_error is false")
            }
            RunError::Services(_) => f.write_str("the tunnel's services cannot be served"),
            RunError::Listen {
                address, service, ..
            } => write!(f, "cannot listen on {address} for service {service}"),
            RunError::Setup { what, .. } => write!(f, "cannot {what}"),
            RunError::WebProxy(_) => f.write_str("unusable web proxy setting"),
        }
    }
}

impl std::error::Error for RunError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RunError::Refused(e) => Some(e),
            RunError::Replaced => None,
            RunError::GaveUp { last, .. } => Some(last),
            RunError::Protocol(e) => Some(e),
            RunError::Services(e) => Some(e),
            RunError::Listen { source, .. } | RunError::Setup { source, .. } => Some(source),
            RunError::WebProxy(e) => Some(e),
        }
    }
}

impl std::error::Error for ServicesError {}

/// Why one tunnel connection failed or ended.
#[derive(Debug)]
pub enum TunnelError {
    /// Connecting failed (retryable).
    Connect(ConnectError),
    /// The WebSocket broke, went silent, or stopped taking writes.
    Transport(TransportError),
    /// The service's byte stream is not valid tunnel frames.
    Frame(FrameError),
    /// The service's SERVICE_IDS break the protocol.
    Services(ServicesError),
    /// The service closed the WebSocket with a code other than normal.
    Closed { code: u16, reason: String },
    /// The service closed the connection without a close frame.
    ClosedWithoutCode,
    /// A thread of the session could not be started.
    Thread(std::io::Error),
}

impl fmt::Display for TunnelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TunnelError::Connect(e) => write!(f, "{e}"),
            TunnelError::Transport(e) => write!(f, "{e}"),
            TunnelError::Frame(e) => write!(f, "invalid tunnel frame from the service: {e}"),
            TunnelError::Services(e) => write!(f, "{e}"),
            TunnelError::Closed { code, reason } => write!(
                f,
                "the service closed the connection with code {code}: {}",
                crate::logging::printable(reason)
            ),
            TunnelError::ClosedWithoutCode => {
                f.write_str("the service closed the connection without a close code")
            }
            TunnelError::Thread(e) => write!(f, "cannot start a session thread: {e}"),
        }
    }
}

impl std::error::Error for TunnelError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TunnelError::Connect(e) => e.source(),
            TunnelError::Transport(e) => e.source(),
            TunnelError::Thread(e) => Some(e),
            _ => None,
        }
    }
}

/// A random client token (64 hex digits, within `^[a-zA-Z0-9-]{32,128}$`).
pub fn generate_client_token() -> Secret {
    match crate::secret::new_client_token() {
        Ok(token) => token,
        Err(_) => {
            // No randomness at all: the clock and pid still make a token
            // unique, which is all a client token needs.
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos()
                ^ u128::from(std::process::id());
            Secret::new(format!("{t:032x}"))
        }
    }
}

/// How long the tunnel may stay silent (nothing received: no data, ping or
/// pong) or refuse writes before it is declared lost: two and a half ping
/// periods, so two pings went unanswered, and at least one second.
pub fn liveness_limit(ping_period: Duration) -> Duration {
    (ping_period * 5 / 2).max(Duration::from_secs(1))
}

/// Runs the proxy until the tunnel is closed, a final error, or a stop.
///
/// Reconnects: after losing a tunnel that was established (the service sent
/// its services, or it stayed up [`HEALTHY_PERIOD`]) the first attempt is
/// immediate, at most once per [`HEALTHY_PERIOD`]; after each failed attempt
/// the wait starts at `retry_delay_ms` and doubles up to [`MAX_BACKOFF`].
/// `connect_retry_count` counts failed attempts in a row (the loss of an
/// established tunnel is not one).
pub fn run(config: Config, stop: Arc<Stop>) -> Result<(), RunError> {
    let client_token = config
        .client_token
        .clone()
        .unwrap_or_else(generate_client_token);
    let env = |k: &str| std::env::var(k).ok();
    let web_proxy = WebProxy::from_env(&env, &config.endpoint.host).map_err(RunError::WebProxy)?;
    let shared = Arc::new(Shared::new(config));
    let cfg = &shared.config;
    let base = Duration::from_millis(cfg.settings.retry_delay_ms);
    let mode = match cfg.mode {
        Mode::Source => "source",
        Mode::Destination => "destination",
    };
    log::info!("Starting proxy in {mode} mode");
    // Before the token is spent on a connection: a local port that is taken
    // (or a -b that does not resolve) is found now, while a corrected
    // retry can still use the token.
    source::prebind(&shared)?;
    let mut failures: u32 = 0;
    let mut last_immediate: Option<Instant> = None;
    loop {
        if stop.is_set() {
            return Ok(());
        }
        log::info!(
            "Attempting to establish web socket connection with endpoint wss://{}",
            transport::host_port(&cfg.endpoint.host, cfg.endpoint.port)
        );
        let reason = match connect_unless_stopped(&shared, &client_token, web_proxy.as_ref(), &stop)
        {
            Attempt::Stopped => return Ok(()),
            Attempt::Done(Err(e)) if !e.is_retryable() => return Err(RunError::Refused(e)),
            Attempt::Done(Err(e)) => TunnelError::Connect(e),
            Attempt::Done(Ok(conn)) => {
                // systemd (Type=notify): ready once the tunnel is up; a
                // repeated READY=1 after a reconnect is harmless.
                crate::notify::notify_ready(&format!(
                    "connected to {} ({})",
                    cfg.endpoint.host,
                    conn.subprotocol()
                ));
                let started = Instant::now();
                let (end, usable) = reader::serve(&shared, conn, &stop);
                let established = usable || started.elapsed() >= HEALTHY_PERIOD;
                match end {
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
                        if established {
                            // A recovery: the backoff and the
                            // connect_retry_count budget start over. The
                            // loss is not a failed attempt: the next
                            // attempt is made, now or (a second loss within
                            // HEALTHY_PERIOD) after retry_delay_ms.
                            failures = 0;
                            crate::notify::notify_status(&format!("reconnecting: {e}"));
                            let now = Instant::now();
                            if last_immediate.map_or(true, |t| now - t >= HEALTHY_PERIOD) {
                                last_immediate = Some(now);
                                log::warn!("Tunnel connection lost ({e}); reconnecting now");
                                continue;
                            }
                            log::warn!(
                                "Tunnel connection lost ({e}) again within {HEALTHY_PERIOD:?}; \
                                 reconnecting in {base:.1?}"
                            );
                            if stop.wait(base) {
                                return Ok(());
                            }
                            continue;
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

/// How a connect attempt ended.
// One value per attempt, moved once: its size does not matter.
#[allow(clippy::large_enum_variant)]
enum Attempt {
    Done(Result<transport::Connection, transport::ConnectError>),
    /// A stop was requested during the attempt, which was abandoned.
    Stopped,
}

/// Connects, with the connection under construction registered with
/// `stop`: a stop (SIGTERM) shuts its socket down, so a service or web
/// proxy that accepted and does not answer does not keep the proxy waiting
/// for [`CONNECT_TIMEOUT`]. (Before the TCP connection exists, the wait is
/// that of the TCP connect: at most the same timeout.)
fn connect_unless_stopped(
    shared: &Shared,
    client_token: &Secret,
    web_proxy: Option<&WebProxy>,
    stop: &Stop,
) -> Attempt {
    let cfg = &shared.config;
    let on_socket = |handle: transport::ShutdownHandle| {
        let now = handle.clone();
        stop.set_hook(Some(Hook {
            send_close: Box::new(move || now.shutdown()),
            shutdown: handle.clone(),
        }));
        // A stop that came before the hook found nothing to shut down.
        if stop.is_set() {
            handle.shutdown();
        }
    };
    let opts = transport::ConnectOptions {
        endpoint: &cfg.endpoint,
        mode: cfg.mode,
        access_token: &cfg.access_token,
        client_token: Some(client_token),
        subprotocol: &cfg.settings.subprotocol,
        capath: cfg.capath.as_deref(),
        no_ssl_host_verify: cfg.no_ssl_host_verify,
        max_frame_size: cfg.settings.max_frame_size,
        web_proxy,
        connect_timeout: CONNECT_TIMEOUT,
        on_socket: Some(&on_socket),
    };
    let result = transport::connect(&opts);
    stop.set_hook(None);
    if stop.is_set() {
        return Attempt::Stopped;
    }
    Attempt::Done(result)
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
    Lost(TunnelError),
    /// The service sent something invalid.
    Protocol(TunnelError),
    /// Cannot go on at all.
    Fatal(RunError),
}

/// One local connection as the session sees it: the way to hand it data
/// and to force it closed. Dropping every clone of `tx` (the table's copy
/// goes when the connection is closed from the tunnel side) makes the
/// connection write what it was given, then close.
#[derive(Clone)]
struct LocalConn {
    tx: Sender<Vec<u8>>,
    closer: Arc<Closer>,
}

impl LocalConn {
    /// A new connection's handle and the receiving end of its queue.
    fn new() -> (LocalConn, Receiver<Vec<u8>>) {
        let (tx, rx) = bounded(LOCAL_QUEUE);
        let conn = LocalConn {
            tx,
            closer: Arc::new(Closer::default()),
        };
        (conn, rx)
    }

    /// Drops the handle after aborting its connection: for connections
    /// whose data was lost (the local application gets a reset, not a
    /// clean end of a cut stream).
    fn abort(self) {
        self.closer.abort();
    }
}

struct State {
    machine: Machine<LocalConn>,
    /// The current tunnel connection's writer, while there is one.
    link: Option<Link>,
}

/// What the session's threads share.
struct Shared {
    config: Config,
    state: Mutex<State>,
    /// Rate limit of the log lines peer input can trigger.
    limiter: Limiter,
    /// Data buffers recycled between local connections and the tunnel.
    pool: BufferPool,
    /// Source: the listeners of the `-s` ports, bound before connecting,
    /// until the tunnel's services are known.
    prebound: Mutex<Vec<(u16, crate::tcp::BoundPort)>>,
    /// The connection slots (shared with the machine's).
    slots: machine::Slots,
    /// When the last connection ended, until its memory is released.
    idle_since: Arc<Mutex<Option<Instant>>>,
}

/// How long no connection must be open before the memory connections used
/// is handed back (see [`Shared::release_idle_memory`]).
const IDLE_RELEASE_AFTER: Duration = Duration::from_secs(1);

impl Shared {
    fn new(config: Config) -> Self {
        let machine = Machine::new(
            config.mode,
            config.peer_version,
            &config.services,
            config.settings.tcp_max_active_connections,
        );
        let machine = if config.services_from_dir {
            machine.with_directory_mappings(&config.services)
        } else {
            machine
        };
        let idle_since = Arc::new(Mutex::new(None));
        let marker = idle_since.clone();
        machine.slots().on_idle(Box::new(move || {
            *marker.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        }));
        Shared {
            slots: machine.slots().clone(),
            idle_since,
            config,
            state: Mutex::new(State {
                machine,
                link: None,
            }),
            limiter: Limiter::new(Note::CATEGORIES + 4),
            pool: BufferPool::new(POOL_DEPTH, POOL_BUFFER),
            prebound: Mutex::new(Vec::new()),
        }
    }

    /// Once no connection has been open for [`IDLE_RELEASE_AFTER`], frees
    /// the spare buffers and hands the free heap back to the system, so
    /// memory comes back after a burst (glibc keeps what threads freed).
    /// Called at each pong (every `ping_period_ms`): connections that come
    /// one after another do not pay for refilling the pool each time.
    fn release_idle_memory(&self) {
        let due = {
            let mut idle = self.idle_since.lock().unwrap_or_else(|p| p.into_inner());
            let due =
                idle.is_some_and(|t| t.elapsed() >= IDLE_RELEASE_AFTER) && self.slots.active() == 0;
            if due {
                *idle = None;
            }
            due
        };
        if due {
            self.pool.clear();
            crate::buffers::release_free_memory();
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the table consistent enough
        // (every operation is a few map edits): keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Logs what a decision says happened; what peer input can trigger at
    /// info level and above is rate-limited.
    fn note(&self, note: &Note) {
        match note.level() {
            _ if *note == Note::Quiet => {}
            log::Level::Debug | log::Level::Trace => log::log!(note.level(), "{note}"),
            level => self.limiter.log(note.category(), level, note),
        }
    }

    /// Logs a warning about local connections being refused, rate-limited.
    fn refusal(&self, what: &dyn fmt::Display) {
        self.limiter.log(Note::CATEGORIES, log::Level::Warn, what);
    }

    /// Logs a warning about a local connection stalled or given up,
    /// rate-limited.
    fn dropped(&self, what: &dyn fmt::Display) {
        self.limiter
            .log(Note::CATEGORIES + 1, log::Level::Warn, what);
    }

    /// Logs a warning about a local service that cannot be reached,
    /// rate-limited: how often it comes is the peer's choice (each
    /// STREAM_START or CONNECTION_START is an attempt).
    fn unreachable(&self, what: &dyn fmt::Display) {
        self.limiter
            .log(Note::CATEGORIES + 2, log::Level::Warn, what);
    }

    /// Logs a warning about a local connection this process has no
    /// resources for (no thread could be started), rate-limited: each
    /// connection of a burst would log it.
    fn exhausted(&self, what: &dyn fmt::Display) {
        self.limiter
            .log(Note::CATEGORIES + 3, log::Level::Warn, what);
    }

    /// Bytes read from a local socket at once.
    fn read_size(&self) -> usize {
        let s = &self.config.settings;
        s.tcp_read_buffer_size.min(s.max_payload_size)
    }
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
    fn liveness_is_two_and_a_half_ping_periods() {
        assert_eq!(
            liveness_limit(Duration::from_secs(20)),
            Duration::from_secs(50)
        );
        assert_eq!(
            liveness_limit(Duration::from_secs(2)),
            Duration::from_secs(5)
        );
        assert_eq!(
            liveness_limit(Duration::from_millis(100)),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn generated_client_tokens_are_valid_and_distinct() {
        let a = generate_client_token();
        let b = generate_client_token();
        assert!(crate::protocol::is_valid_client_token(a.expose()));
        assert_ne!(a.expose(), b.expose());
    }

    #[test]
    fn errors_keep_their_cause() {
        use std::error::Error;
        let e = RunError::GaveUp {
            attempts: 3,
            last: TunnelError::Closed {
                code: 1011,
                reason: "bad\nthing".into(),
            },
        };
        assert_eq!(e.exit_code(), 4);
        let cause = e.source().expect("a cause").to_string();
        assert!(cause.contains("code 1011: bad\\nthing"), "{cause}");
        assert!(
            !e.to_string().contains("1011"),
            "printed once, by the chain"
        );
    }
}
