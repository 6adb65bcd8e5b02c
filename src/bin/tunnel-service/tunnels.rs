//! Tunnel state: tunnels, their access tokens, connected clients and the
//! streams seen on each tunnel, behind one mutex shared by both planes.

use std::collections::{BTreeSet, HashMap};
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::Sender;
use serde_json::{json, Value};
use tungstenite::Bytes;

use localproxy::buffers::BufferPool;
use localproxy::frame::{encode_frame, message, MessageType};
use localproxy::protocol::{
    CLOSE_GOING_AWAY, CLOSE_NORMAL, CLOSE_POLICY_VIOLATION, CLOSE_REASON_REPLACED,
};
use localproxy::secret::{fill_random, Secret};

use crate::faults::Faults;
use crate::model::ApiError;
use crate::side::Side;
use crate::state;

/// Close reason sent when the tunnel is closed through the API.
pub const CLOSE_REASON_TUNNEL_CLOSED: &str = "tunnel closed";
/// Close reason sent when the tunnel's lifetime is over.
pub const CLOSE_REASON_TUNNEL_EXPIRED: &str = "tunnel expired";
/// Close reason sent to every connection when the service stops.
pub const CLOSE_REASON_SHUTDOWN: &str = "service shutting down";
/// Close reason sent when the connection's access token was rotated.
pub const CLOSE_REASON_ROTATED: &str = "access token rotated";

/// What a connection's relay thread is asked to do.
#[derive(Debug)]
pub enum Out {
    /// Tunnel frames (whole or not) to send as binary WebSocket data.
    Bytes(Bytes),
    /// A text WebSocket message (fault injection only).
    Text(String),
    /// Close the WebSocket with this code and reason.
    Close { code: u16, reason: String },
    /// Drop the TCP connection without a close frame (fault injection).
    Drop,
    /// Neither read nor write this connection any more (fault injection);
    /// the relay acknowledges on the channel once it has stopped.
    Silence(Sender<()>),
    /// Stop reading this connection but keep writing to it, with a ping
    /// every interval (fault injection); acknowledged like `Silence`.
    StopReading {
        ping_interval: Duration,
        ack: Sender<()>,
    },
}

/// Wakes a relay thread blocked in `poll`: a non-blocking eventfd (one
/// descriptor per connection).
pub struct Waker {
    fd: RawFd,
}

impl Waker {
    /// A new eventfd.
    pub fn new() -> std::io::Result<Waker> {
        // SAFETY: eventfd with valid flags; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Waker { fd })
    }

    /// The descriptor to poll for readability.
    pub fn fd(&self) -> RawFd {
        self.fd
    }

    /// Makes the poller return (a saturated counter already means "wake up").
    pub fn wake(&self) {
        let one = 1u64;
        // SAFETY: writes 8 bytes from a valid u64 to our own eventfd.
        let _ = unsafe { libc::write(self.fd, &one as *const u64 as *const libc::c_void, 8) };
    }

    /// Resets the counter after a wake-up.
    pub fn drain(&self) {
        let mut n = 0u64;
        // SAFETY: reads 8 bytes into a valid u64 from our own eventfd.
        let _ = unsafe { libc::read(self.fd, &mut n as *mut u64 as *mut libc::c_void, 8) };
    }
}

impl Drop for Waker {
    fn drop(&mut self) {
        // SAFETY: the fd was opened by `new` and is closed only here.
        unsafe {
            libc::close(self.fd);
        }
    }
}

/// The handle other threads use to reach a connected client.
#[derive(Clone)]
pub struct ConnHandle {
    pub id: u64,
    tx: Sender<Out>,
    waker: Arc<Waker>,
    /// Bytes queued toward this client and not yet written (backpressure).
    pub queued: Arc<AtomicUsize>,
}

impl ConnHandle {
    /// A handle over a relay thread's queue and waker.
    pub fn new(id: u64, tx: Sender<Out>, waker: Arc<Waker>) -> Self {
        ConnHandle {
            id,
            tx,
            waker,
            queued: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Queues `out` and wakes the relay thread.
    pub fn send(&self, out: Out) {
        if let Out::Bytes(b) = &out {
            self.queued.fetch_add(b.len(), Ordering::AcqRel);
        }
        let _ = self.tx.send(out);
        self.waker.wake();
    }
}

/// A refused handshake: the HTTP status and the reason for X-Status-Reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub reason: String,
    /// The reason for the log, when `reason` repeats request input (a path
    /// or header value, which may hold a token): it names the part instead.
    logged: Option<String>,
}

impl Refusal {
    pub fn new(status: u16, reason: impl Into<String>) -> Self {
        Refusal {
            status,
            reason: reason.into(),
            logged: None,
        }
    }

    /// A refusal whose `reason` quotes the request: the log says `logged`.
    pub fn echoing(status: u16, reason: impl Into<String>, logged: impl Into<String>) -> Self {
        Refusal {
            logged: Some(logged.into()),
            ..Refusal::new(status, reason)
        }
    }

    /// What the log may say: no value taken from the request.
    pub fn for_log(&self) -> &str {
        self.logged.as_deref().unwrap_or(&self.reason)
    }
}

struct SideState {
    token: Secret,
    /// A handshake without a client token used the token up.
    spent: bool,
    /// The client token bound by the first handshake that carried one.
    client_token: Option<Secret>,
    conn: Option<ConnHandle>,
    state_updated_at: f64,
    /// The drop-after-bytes fault already hit this side once.
    dropped_once: bool,
}

impl SideState {
    fn new(token: Secret, now: f64) -> Self {
        SideState {
            token,
            spent: false,
            client_token: None,
            conn: None,
            state_updated_at: now,
            dropped_once: false,
        }
    }
}

struct Tunnel {
    /// Creation order (ListTunnels lists the highest first).
    seq: u64,
    id: String,
    arn: String,
    description: Option<String>,
    /// `{"key", "value"}` objects, keys unique, in the order given.
    tags: Vec<Value>,
    thing_name: Option<String>,
    services: Arc<Vec<String>>,
    lifetime_minutes: u64,
    created_at: f64,
    last_updated_at: f64,
    open: bool,
    expires_at: Instant,
    /// When the tunnel closed (it is forgotten [`CLOSED_RETENTION`] later).
    closed_at: Option<Instant>,
    sides: [SideState; 2],
    /// Current stream of each service id ("" for V1), from STREAM_START.
    streams: Vec<(String, i32)>,
    /// Service ids that had a STREAM_START in the tunnel's life (since this
    /// process started): the only ones other messages may name.
    started: BTreeSet<String>,
}

impl Tunnel {
    /// The DestinationConfig, absent for a tunnel opened without one (its
    /// `services` would be an empty list, which the model does not allow).
    fn destination_config(&self) -> Option<Value> {
        if self.services.is_empty() {
            return None;
        }
        let mut c = json!({ "services": *self.services });
        if let Some(t) = &self.thing_name {
            c["thingName"] = json!(t);
        }
        Some(c)
    }

    fn summary(&self) -> Value {
        let mut v = json!({
            "tunnelId": self.id,
            "tunnelArn": self.arn,
            "status": if self.open { "OPEN" } else { "CLOSED" },
            "createdAt": self.created_at,
            "lastUpdatedAt": self.last_updated_at,
        });
        if let Some(d) = &self.description {
            v["description"] = json!(d);
        }
        v
    }

    fn connection_state(&self, side: Side) -> Value {
        let s = &self.sides[side.index()];
        json!({
            "status": if s.conn.is_some() { "CONNECTED" } else { "DISCONNECTED" },
            "lastUpdatedAt": s.state_updated_at,
        })
    }

    /// The persistent part of the tunnel (no connections, no streams).
    fn to_state(&self) -> Value {
        let remaining = self
            .expires_at
            .saturating_duration_since(Instant::now())
            .as_secs_f64();
        let sides: Vec<Value> = self
            .sides
            .iter()
            .map(|s| {
                json!({
                    "token": s.token.expose(),
                    "spent": s.spent,
                    "clientToken": s.client_token.as_ref().map(|c| c.expose()),
                    "droppedOnce": s.dropped_once,
                })
            })
            .collect();
        json!({
            "id": self.id,
            "arn": self.arn,
            "description": self.description,
            "tags": self.tags,
            "thingName": self.thing_name,
            "services": *self.services,
            "lifetimeMinutes": self.lifetime_minutes,
            "createdAt": self.created_at,
            "lastUpdatedAt": self.last_updated_at,
            "open": self.open,
            "expiresAtEpoch": now_epoch() + remaining,
            "sides": sides,
        })
    }

    /// The inverse of [`Tunnel::to_state`]; `None` when a field is missing.
    fn from_state(v: &Value) -> Option<Tunnel> {
        let now = now_epoch();
        let side = |s: &Value| -> Option<SideState> {
            Some(SideState {
                token: Secret::new(s["token"].as_str()?),
                spent: s["spent"].as_bool()?,
                client_token: s["clientToken"].as_str().map(Secret::new),
                conn: None,
                state_updated_at: now,
                dropped_once: s["droppedOnce"].as_bool().unwrap_or(false),
            })
        };
        let sides = v["sides"].as_array()?;
        let left = (v["expiresAtEpoch"].as_f64()? - now).max(0.0);
        let open = v["open"].as_bool()?;
        Some(Tunnel {
            seq: 0,
            id: v["id"].as_str()?.to_string(),
            arn: v["arn"].as_str()?.to_string(),
            description: v["description"].as_str().map(str::to_string),
            tags: v["tags"].as_array().cloned().unwrap_or_default(),
            thing_name: v["thingName"].as_str().map(str::to_string),
            services: Arc::new(
                v["services"]
                    .as_array()?
                    .iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect(),
            ),
            lifetime_minutes: v["lifetimeMinutes"].as_u64()?,
            created_at: v["createdAt"].as_f64()?,
            last_updated_at: v["lastUpdatedAt"].as_f64()?,
            open,
            expires_at: Instant::now() + Duration::from_secs_f64(left.min(1e9)),
            closed_at: (!open).then(Instant::now),
            sides: [side(sides.first()?)?, side(sides.get(1)?)?],
            streams: Vec::new(),
            started: BTreeSet::new(),
        })
    }

    /// Sends STREAM_RESET for every tracked stream to `to` and forgets them.
    fn reset_streams_toward(&mut self, to: Side) {
        let streams = std::mem::take(&mut self.streams);
        if streams.is_empty() {
            return;
        }
        let Some(conn) = &self.sides[to.index()].conn else {
            return;
        };
        let mut out = Vec::new();
        for (svc, stream) in &streams {
            let m = message(MessageType::STREAM_RESET, *stream, svc, 0, b"");
            // A reset of a known service id is far below the frame limit.
            if encode_frame(&m, &mut out).is_err() {
                log::warn!("tunnel {}: could not encode a stream reset", self.id);
            }
        }
        log::debug!(
            "tunnel {}: reset {} stream(s) toward the {to}",
            self.id,
            streams.len()
        );
        conn.send(Out::Bytes(out.into()));
    }

    /// Detaches the connection of `side` (if any), closing it with `close`.
    /// Its peer is told nothing: as with the real service, a peer learns of
    /// a side gone only when a new connection of that side attaches.
    fn detach(&mut self, side: Side, close: Option<(u16, &str)>, now: f64) {
        if let Some(conn) = self.sides[side.index()].conn.take() {
            if let Some((code, reason)) = close {
                conn.send(Out::Close {
                    code,
                    reason: reason.to_string(),
                });
            }
            self.sides[side.index()].state_updated_at = now;
        }
    }

    fn close(&mut self, reason: &str, now: f64) {
        self.open = false;
        self.closed_at = Some(Instant::now());
        self.last_updated_at = now;
        self.streams.clear();
        for side in Side::BOTH {
            if let Some(conn) = self.sides[side.index()].conn.take() {
                conn.send(Out::Close {
                    code: CLOSE_NORMAL,
                    reason: reason.to_string(),
                });
                self.sides[side.index()].state_updated_at = now;
            }
        }
    }
}

/// The tunnel closed (or was deleted) while a client was joining it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunnelClosed;

/// Parameters of OpenTunnel, validated by the API layer.
#[derive(Debug, Default, Clone)]
pub struct OpenParams {
    pub description: Option<String>,
    pub tags: Vec<Value>,
    pub thing_name: Option<String>,
    pub services: Vec<String>,
    pub lifetime_minutes: u64,
}

/// A tunnel just opened, with its tokens.
pub struct Opened {
    pub tunnel_id: String,
    pub tunnel_arn: String,
    pub source_token: Secret,
    pub destination_token: Secret,
}

/// Tokens returned by a rotation (only for the rotated sides).
pub struct Rotated {
    pub tunnel_arn: String,
    pub source_token: Option<Secret>,
    pub destination_token: Option<Secret>,
}

/// A handshake the registry accepted.
pub struct Admission {
    pub tunnel_id: String,
    pub side: Side,
    pub services: Arc<Vec<String>>,
}

/// A stream event seen in a client's frames, applied under the lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    Start {
        service: String,
        stream: i32,
    },
    Reset {
        service: String,
        stream: i32,
    },
    /// A message of type `what` naming `service`, new to its connection:
    /// the service must have had a STREAM_START in the tunnel's life.
    Uses {
        service: String,
        what: MessageType,
    },
}

/// What the relay learns when it routes frames.
pub enum Route {
    /// This connection is still current; the peer, if connected.
    Peer(Option<ConnHandle>),
    /// This connection was replaced, rotated out or its tunnel closed.
    Gone,
    /// The frames broke a rule of the tunnel's state: close the client.
    Violation(String),
}

struct Inner {
    tunnels: HashMap<String, Tunnel>,
    /// Ids in creation order (ascending `seq`), for ListTunnels and saving.
    order: Vec<String>,
    /// `seq` of the next tunnel opened.
    next_seq: u64,
    tokens: HashMap<String, (String, Side)>,
    shutdown: bool,
}

impl Inner {
    /// Removes a tunnel and its tokens; false when it was not there.
    fn forget(&mut self, id: &str) -> bool {
        let Some(t) = self.tunnels.remove(id) else {
            return false;
        };
        for s in &t.sides {
            self.tokens.remove(s.token.expose());
        }
        self.order.retain(|x| x != id);
        true
    }
}

/// All tunnels of the service.
/// Spare relay buffers kept (at most 32 x 66 KiB, about 2 MiB, for all
/// connections together).
const RELAY_POOL_DEPTH: usize = 32;
/// A relay buffer holds one message of a largest DATA frame (65537 bytes).
const RELAY_POOL_BUFFER: usize = 66 * 1024;

pub struct Registry {
    inner: Mutex<Inner>,
    expiry: Condvar,
    /// Length of one "minute" of maxLifetimeTimeoutMinutes (a second in tests).
    lifetime_unit: Duration,
    region: String,
    account: String,
    next_conn: AtomicU64,
    pub faults: Faults,
    /// OpenTunnel answers LimitExceededException with this many open.
    max_open: usize,
    /// `--state-file`: where every change is saved.
    state_file: OnceLock<PathBuf>,
    /// Relay threads running, and a signal when the count drops.
    live: Mutex<usize>,
    idle: Condvar,
    /// Buffers the relays copy received frames into, recycled once sent.
    pub pool: BufferPool,
}

/// Counts a relay thread as running until dropped.
pub struct Live(Arc<Registry>);

impl Drop for Live {
    fn drop(&mut self) {
        let mut n = self.0.live.lock().unwrap_or_else(|p| p.into_inner());
        *n = n.saturating_sub(1);
        self.0.idle.notify_all();
    }
}

/// How long a closed tunnel stays visible to Describe and List (AWS: "at
/// least three hours"), in units of the lifetime minute.
pub const CLOSED_RETENTION_MINUTES: u32 = 180;
/// Closed tunnels kept at most; the oldest are forgotten first.
pub const MAX_CLOSED_KEPT: usize = 10_000;
/// Tags of one tunnel at most (the model's TagList maximum).
pub const MAX_TAGS: usize = 200;
/// Default of `--max-open-tunnels`.
pub const DEFAULT_MAX_OPEN_TUNNELS: usize = 1000;

/// Seconds since the epoch, as the API's timestamps.
pub fn now_epoch() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| (d.as_millis() as f64) / 1000.0)
        .unwrap_or(0.0)
}

impl Registry {
    pub fn new(
        lifetime_unit: Duration,
        region: &str,
        faults: Faults,
        max_open: usize,
    ) -> Arc<Registry> {
        Arc::new(Registry {
            inner: Mutex::new(Inner {
                tunnels: HashMap::new(),
                order: Vec::new(),
                next_seq: 1,
                tokens: HashMap::new(),
                shutdown: false,
            }),
            expiry: Condvar::new(),
            lifetime_unit,
            region: region.to_string(),
            account: "123456789012".to_string(),
            next_conn: AtomicU64::new(1),
            faults,
            max_open,
            state_file: OnceLock::new(),
            live: Mutex::new(0),
            idle: Condvar::new(),
            pool: BufferPool::new(RELAY_POOL_DEPTH, RELAY_POOL_BUFFER),
        })
    }

    /// Loads the tunnels saved in `path` (if it exists) and saves every
    /// later change there. Returns how many tunnels were loaded.
    pub fn use_state_file(&self, path: &Path) -> std::io::Result<usize> {
        let loaded = state::load(path)?;
        let mut g = self.lock();
        let mut n = 0;
        if let Some(v) = loaded {
            for tv in v["tunnels"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
                let Some(mut t) = Tunnel::from_state(tv) else {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!(
                            "state file {}: a tunnel entry lacks a field",
                            path.display()
                        ),
                    ));
                };
                for (i, side) in Side::BOTH.into_iter().enumerate() {
                    g.tokens
                        .insert(t.sides[i].token.expose().to_string(), (t.id.clone(), side));
                }
                t.seq = g.next_seq;
                g.next_seq += 1;
                g.order.push(t.id.clone());
                g.tunnels.insert(t.id.clone(), t);
                n += 1;
            }
        }
        // A state file that cannot be written now would lose every tunnel
        // at the next restart, save after save: refuse to start instead.
        state::save(path, &snapshot(&g)).map_err(|e| {
            let dir = match path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
            std::io::Error::new(
                e.kind(),
                format!(
                    "state file {} cannot be written ({e}): create the directory {} \
                     (writable by this user) or choose another --state-file",
                    path.display(),
                    dir.display()
                ),
            )
        })?;
        let _ = self.state_file.set(path.to_path_buf());
        drop(g);
        self.expiry.notify_all();
        Ok(n)
    }

    /// Saves the tunnels to the state file, if one is in use. Called with
    /// the lock held, after each change, so saves are in change order.
    fn persist(&self, g: &Inner) {
        let Some(path) = self.state_file.get() else {
            return;
        };
        if let Err(e) = state::save(path, &snapshot(g)) {
            log::error!("cannot save the state file {}: {e}", path.display());
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent-enough state for a
        // test service; keep serving rather than poisoning every thread.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A fresh connection id.
    pub fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// OpenTunnel.
    pub fn open(&self, p: OpenParams) -> Result<Opened, ApiError> {
        let now = now_epoch();
        let id = uuid_like()?;
        let (source_token, destination_token) = (random_token()?, random_token()?);
        let arn = format!("arn:aws:iot:{}:{}:tunnel/{id}", self.region, self.account);
        let lifetime = self
            .lifetime_unit
            .saturating_mul(u32::try_from(p.lifetime_minutes).unwrap_or(u32::MAX));
        let mut t = Tunnel {
            seq: 0,
            id: id.clone(),
            arn: arn.clone(),
            description: p.description,
            tags: p.tags,
            thing_name: p.thing_name,
            services: Arc::new(p.services),
            lifetime_minutes: p.lifetime_minutes,
            created_at: now,
            last_updated_at: now,
            open: true,
            expires_at: Instant::now() + lifetime,
            closed_at: None,
            sides: [
                SideState::new(source_token, now),
                SideState::new(destination_token, now),
            ],
            streams: Vec::new(),
            started: BTreeSet::new(),
        };
        let opened = Opened {
            tunnel_id: id.clone(),
            tunnel_arn: arn,
            source_token: t.sides[0].token.clone(),
            destination_token: t.sides[1].token.clone(),
        };
        let mut g = self.lock();
        let open = g.tunnels.values().filter(|t| t.open).count();
        if open >= self.max_open {
            return Err(ApiError::limit(format!(
                "{open} tunnels are open: this service allows {} at once (--max-open-tunnels); close one first",
                self.max_open
            )));
        }
        t.seq = g.next_seq;
        g.next_seq += 1;
        g.tokens.insert(
            t.sides[0].token.expose().to_string(),
            (id.clone(), Side::Source),
        );
        g.tokens.insert(
            t.sides[1].token.expose().to_string(),
            (id.clone(), Side::Destination),
        );
        g.order.push(id.clone());
        g.tunnels.insert(id.clone(), t);
        self.persist(&g);
        drop(g);
        self.expiry.notify_all();
        log::info!("tunnel {id} opened");
        Ok(opened)
    }

    /// CloseTunnel: closes both sides normally; `delete` also forgets it.
    pub fn close(&self, id: &str, delete: bool) -> Result<(), ApiError> {
        let mut g = self.lock();
        let t = g
            .tunnels
            .get_mut(id)
            .ok_or_else(|| ApiError::not_found(id))?;
        if t.open {
            t.close(CLOSE_REASON_TUNNEL_CLOSED, now_epoch());
            log::info!("tunnel {id} closed");
        }
        if delete {
            g.forget(id);
            log::info!("tunnel {id} deleted");
        }
        self.persist(&g);
        Ok(())
    }

    /// DescribeTunnel's `tunnel` object.
    pub fn describe(&self, id: &str) -> Result<Value, ApiError> {
        let g = self.lock();
        let t = g.tunnels.get(id).ok_or_else(|| ApiError::not_found(id))?;
        let mut v = t.summary();
        v["sourceConnectionState"] = t.connection_state(Side::Source);
        v["destinationConnectionState"] = t.connection_state(Side::Destination);
        if let Some(c) = t.destination_config() {
            v["destinationConfig"] = c;
        }
        v["timeoutConfig"] = json!({ "maxLifetimeTimeoutMinutes": t.lifetime_minutes });
        if !t.tags.is_empty() {
            v["tags"] = json!(t.tags);
        }
        Ok(v)
    }

    /// ListTunnels: summaries, newest first, filtered by thing name. A page
    /// ends before `before` (the `seq` its token carries); returns the
    /// `seq` to continue before when more remain.
    pub fn list(
        &self,
        thing: Option<&str>,
        max: usize,
        before: Option<u64>,
    ) -> (Vec<Value>, Option<u64>) {
        let g = self.lock();
        let mut matching = g
            .order
            .iter()
            .rev()
            .filter_map(|id| g.tunnels.get(id))
            .filter(|t| before.map_or(true, |b| t.seq < b))
            .filter(|t| thing.map_or(true, |n| t.thing_name.as_deref() == Some(n)));
        let page: Vec<&Tunnel> = matching.by_ref().take(max).collect();
        let next = match (matching.next(), page.last()) {
            (Some(_), Some(last)) => Some(last.seq),
            _ => None,
        };
        (page.iter().map(|t| t.summary()).collect(), next)
    }

    /// The tunnel an ARN names: `arn:aws:iot:REGION:ACCOUNT:tunnel/ID`.
    fn by_arn<'a>(g: &'a mut Inner, arn: &str) -> Result<&'a mut Tunnel, ApiError> {
        let id = arn.rsplit_once(":tunnel/").map_or("", |(_, id)| id);
        g.tunnels
            .get_mut(id)
            .filter(|t| t.arn == arn)
            .ok_or_else(|| ApiError::not_found(format!("resource {arn}")))
    }

    /// TagResource: adds tags (a key already there takes the new value).
    pub fn tag(&self, arn: &str, tags: Vec<Value>) -> Result<(), ApiError> {
        let mut g = self.lock();
        let t = Self::by_arn(&mut g, arn)?;
        let mut merged = t.tags.clone();
        for tag in tags {
            match merged.iter_mut().find(|x| x["key"] == tag["key"]) {
                Some(old) => *old = tag,
                None => merged.push(tag),
            }
        }
        if merged.len() > MAX_TAGS {
            return Err(ApiError::validation(format!(
                "resource {arn} would have {} tags: at most {MAX_TAGS} allowed",
                merged.len()
            )));
        }
        t.tags = merged;
        self.persist(&g);
        Ok(())
    }

    /// UntagResource: removes the tags with these keys (absent keys are fine).
    pub fn untag(&self, arn: &str, keys: &[String]) -> Result<(), ApiError> {
        let mut g = self.lock();
        let t = Self::by_arn(&mut g, arn)?;
        t.tags
            .retain(|x| !keys.iter().any(|k| x["key"].as_str() == Some(k)));
        self.persist(&g);
        Ok(())
    }

    /// ListTagsForResource: the tags, `None` when there are none.
    pub fn tags(&self, arn: &str) -> Result<Option<Value>, ApiError> {
        let mut g = self.lock();
        let t = Self::by_arn(&mut g, arn)?;
        Ok((!t.tags.is_empty()).then(|| json!(t.tags)))
    }

    /// RotateTunnelAccessToken.
    pub fn rotate(
        &self,
        id: &str,
        sides: &[Side],
        new_config: Option<(Option<String>, Vec<String>)>,
    ) -> Result<Rotated, ApiError> {
        let now = now_epoch();
        let mut fresh = Vec::new();
        for _ in sides {
            fresh.push(random_token()?);
        }
        let mut g = self.lock();
        let inner = &mut *g;
        let t = inner
            .tunnels
            .get_mut(id)
            .ok_or_else(|| ApiError::not_found(id))?;
        if !t.open {
            return Err(ApiError::not_found(format!(
                "open tunnel {id} (it is CLOSED: its tokens cannot be rotated)"
            ))
            .logged_as(format!(
                "tunnel {id} is CLOSED: its tokens cannot be rotated"
            )));
        }
        let mut r = Rotated {
            tunnel_arn: t.arn.clone(),
            source_token: None,
            destination_token: None,
        };
        if let Some((thing, services)) = new_config {
            if thing.is_some() {
                t.thing_name = thing;
            }
            t.services = Arc::new(services);
        }
        for (&side, token) in sides.iter().zip(fresh) {
            t.detach(
                side,
                Some((CLOSE_POLICY_VIOLATION, CLOSE_REASON_ROTATED)),
                now,
            );
            let s = &mut t.sides[side.index()];
            inner.tokens.remove(s.token.expose());
            s.token = token;
            s.spent = false;
            s.client_token = None;
            inner
                .tokens
                .insert(s.token.expose().to_string(), (id.to_string(), side));
            match side {
                Side::Source => r.source_token = Some(s.token.clone()),
                Side::Destination => r.destination_token = Some(s.token.clone()),
            }
            log::info!("tunnel {id}: {side} access token rotated");
        }
        t.last_updated_at = now;
        self.persist(inner);
        Ok(r)
    }

    /// Checks an access token (and client token) for a handshake in `mode`
    /// and, when accepted, spends the token or binds the client token.
    pub fn admit(
        &self,
        token: &str,
        mode: Side,
        client_token: Option<&str>,
    ) -> Result<Admission, Refusal> {
        let mut g = self.lock();
        let inner = &mut *g;
        let (id, side) = inner
            .tokens
            .get(token)
            .cloned()
            .ok_or_else(|| Refusal::new(403, "invalid access token"))?;
        // A client token is unique across the open tunnels (the protocol
        // guide): one bound to another tunnel or side cannot be bound here.
        let taken_elsewhere = client_token.is_some_and(|given| {
            inner.tunnels.iter().any(|(other, t)| {
                t.open
                    && Side::BOTH.iter().any(|&sd| {
                        (*other != id || sd != side)
                            && t.sides[sd.index()]
                                .client_token
                                .as_ref()
                                .is_some_and(|c| c.expose() == given)
                    })
            })
        });
        let t = inner
            .tunnels
            .get_mut(&id)
            .ok_or_else(|| Refusal::new(403, "invalid access token"))?;
        if !t.open {
            return Err(Refusal::new(403, "tunnel is closed"));
        }
        if side != mode {
            return Err(Refusal::new(
                403,
                format!("access token is for {side} mode, not {mode}"),
            ));
        }
        let s = &mut t.sides[side.index()];
        match (&s.client_token, client_token) {
            (Some(bound), Some(given)) if bound.expose() == given => {}
            (Some(_), Some(_)) => return Err(Refusal::new(403, "client token mismatch")),
            (Some(_), None) => {
                return Err(Refusal::new(
                    403,
                    "access token is bound to a client token: client-token header required",
                ))
            }
            (None, _) if s.spent => {
                return Err(Refusal::new(
                    403,
                    "access token already used (connect with a client token to reconnect)",
                ))
            }
            (None, Some(_)) if taken_elsewhere => {
                return Err(Refusal::new(
                    403,
                    "client token already in use by another open tunnel connection",
                ))
            }
            (None, Some(given)) => s.client_token = Some(Secret::new(given)),
            (None, None) => s.spent = true,
        }
        let admission = Admission {
            tunnel_id: id,
            side,
            services: t.services.clone(),
        };
        self.persist(inner);
        Ok(admission)
    }

    /// Makes `conn` the connection of `side`, replacing (closing) the
    /// previous one. Returns the drop-after-bytes limit for this connection,
    /// or `Err` when the tunnel closed meanwhile.
    pub fn register(
        &self,
        id: &str,
        side: Side,
        conn: ConnHandle,
    ) -> Result<Option<u64>, TunnelClosed> {
        let now = now_epoch();
        let mut g = self.lock();
        if g.shutdown {
            return Err(TunnelClosed);
        }
        let t = g.tunnels.get_mut(id).ok_or(TunnelClosed)?;
        if !t.open {
            return Err(TunnelClosed);
        }
        if t.sides[side.index()].conn.is_some() {
            log::info!("tunnel {id}: {side} connection replaced by a new one");
            t.detach(
                side,
                Some((CLOSE_POLICY_VIOLATION, CLOSE_REASON_REPLACED)),
                now,
            );
        }
        t.sides[side.index()].conn = Some(conn);
        // "The tunnel peer is replaced by a new peer" (the protocol guide):
        // the streams started before are reset toward the other side.
        t.reset_streams_toward(side.peer());
        let s = &mut t.sides[side.index()];
        s.state_updated_at = now;
        let f = &self.faults;
        let drop_after = match f.drop_after_bytes {
            Some(n)
                if f.drop_side.map_or(true, |d| d == side)
                    && (f.drop_repeat || !s.dropped_once) =>
            {
                s.dropped_once = true;
                Some(n)
            }
            _ => None,
        };
        Ok(drop_after)
    }

    /// Forgets connection `conn_id` of `side` if it is still current.
    pub fn unregister(&self, id: &str, side: Side, conn_id: u64) {
        let mut g = self.lock();
        if let Some(t) = g.tunnels.get_mut(id) {
            if t.sides[side.index()].conn.as_ref().map(|c| c.id) == Some(conn_id) {
                t.detach(side, None, now_epoch());
            }
        }
    }

    /// Applies stream events from connection `conn_id` and returns its peer.
    pub fn route(&self, id: &str, side: Side, conn_id: u64, events: Vec<StreamEvent>) -> Route {
        let mut g = self.lock();
        let Some(t) = g.tunnels.get_mut(id) else {
            return Route::Gone;
        };
        if t.sides[side.index()].conn.as_ref().map(|c| c.id) != Some(conn_id) {
            return Route::Gone;
        }
        let peer = t.sides[side.peer().index()].conn.clone();
        for e in events {
            match e {
                StreamEvent::Uses { service, what } if !t.started.contains(&service) => {
                    // The protocol guide: "a stream start message for the
                    // specific service ID must be sent first. Otherwise,
                    // the service will disconnect the client".
                    return Route::Violation(format!(
                        "{what:?} names service id {service:?}, which has had no STREAM_START"
                    ));
                }
                StreamEvent::Uses { .. } => {}
                StreamEvent::Reset { service, .. }
                    if !service.is_empty() && !t.started.contains(&service) =>
                {
                    return Route::Violation(format!(
                        "STREAM_RESET names service id {service:?}, which has had no STREAM_START"
                    ));
                }
                StreamEvent::Start { service, stream } => {
                    t.started.insert(service.clone());
                    // Kept with or without a peer: a destination that
                    // attaches later resets it (see register).
                    t.streams.retain(|(s, _)| *s != service);
                    t.streams.push((service, stream));
                }
                StreamEvent::Reset { service, stream } => {
                    t.streams
                        .retain(|(s, id)| !(*s == service && *id == stream));
                }
            }
        }
        Route::Peer(peer)
    }

    /// The current services of a tunnel (they change on rotation).
    pub fn services(&self, id: &str) -> Option<Arc<Vec<String>>> {
        self.lock().tunnels.get(id).map(|t| t.services.clone())
    }

    /// Sends `out` to the connection of `side` (fault injection).
    pub fn send_to(&self, id: &str, side: Side, out: Out) -> Result<(), ApiError> {
        let g = self.lock();
        let t = g.tunnels.get(id).ok_or_else(|| ApiError::not_found(id))?;
        let conn = t.sides[side.index()].conn.as_ref().ok_or_else(|| {
            ApiError::invalid_request(format!("no {side} connected to tunnel {id}"))
        })?;
        conn.send(out);
        Ok(())
    }

    /// Closes tunnels whose lifetime is over; blocks until `shutdown`.
    pub fn run_expiry(&self) {
        let mut g = self.lock();
        loop {
            if g.shutdown {
                return;
            }
            let now = Instant::now();
            let retention = self.lifetime_unit.saturating_mul(CLOSED_RETENTION_MINUTES);
            let mut next: Option<Instant> = None;
            let mut changed = false;
            let mut gone = Vec::new();
            for t in g.tunnels.values_mut() {
                if t.open && t.expires_at <= now {
                    t.close(CLOSE_REASON_TUNNEL_EXPIRED, now_epoch());
                    log::info!("tunnel {} expired", t.id);
                    changed = true;
                }
                let due = match t.closed_at {
                    None => t.expires_at,
                    Some(c) => c + retention,
                };
                if t.closed_at.is_some() && due <= now {
                    gone.push(t.id.clone());
                } else {
                    next = Some(next.map_or(due, |n| n.min(due)));
                }
            }
            // Closed tunnels beyond the cap go first, oldest first.
            let closed = g
                .order
                .iter()
                .filter(|id| g.tunnels.get(*id).is_some_and(|t| !t.open));
            let excess: Vec<String> = closed
                .take(
                    g.tunnels
                        .values()
                        .filter(|t| !t.open)
                        .count()
                        .saturating_sub(MAX_CLOSED_KEPT),
                )
                .cloned()
                .collect();
            gone.extend(excess);
            for id in gone {
                if g.forget(&id) {
                    log::info!("tunnel {id} forgotten (closed {CLOSED_RETENTION_MINUTES} minutes ago, or too many closed)");
                    changed = true;
                }
            }
            if changed {
                self.persist(&g);
            }
            let wait = next.map_or(Duration::from_secs(3600), |n| n - now);
            g = self
                .expiry
                .wait_timeout(g, wait)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    /// Stops the expiry thread and closes every connection with 1001
    /// (going away). The tunnels stay open: a service restarted with the
    /// same `--state-file` still has them.
    pub fn shutdown(&self) {
        let mut g = self.lock();
        g.shutdown = true;
        for t in g.tunnels.values_mut() {
            for side in Side::BOTH {
                if let Some(conn) = t.sides[side.index()].conn.take() {
                    conn.send(Out::Close {
                        code: CLOSE_GOING_AWAY,
                        reason: CLOSE_REASON_SHUTDOWN.to_string(),
                    });
                }
            }
            t.streams.clear();
        }
        drop(g);
        self.expiry.notify_all();
    }

    /// Counts a relay thread as running while the guard lives.
    pub fn live(self: &Arc<Self>) -> Live {
        *self.live.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        Live(self.clone())
    }

    /// Waits until no relay thread runs, at most `limit`; false on time-out.
    pub fn wait_idle(&self, limit: Duration) -> bool {
        let n = self.live.lock().unwrap_or_else(|p| p.into_inner());
        let (n, _) = self
            .idle
            .wait_timeout_while(n, limit, |n| *n > 0)
            .unwrap_or_else(|p| p.into_inner());
        *n == 0
    }
}

/// A random UUID-shaped tunnel id.
/// The state file's contents for the tunnels in `g`, in opening order.
fn snapshot(g: &Inner) -> Value {
    let tunnels: Vec<Value> = g
        .order
        .iter()
        .filter_map(|id| g.tunnels.get(id))
        .map(Tunnel::to_state)
        .collect();
    json!({ "version": state::FORMAT_VERSION, "tunnels": tunnels })
}

fn uuid_like() -> Result<String, ApiError> {
    let h = localproxy::secret::random_hex(16).map_err(no_randomness)?;
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

/// A new access token: `AQGA` then 96 random bytes in URL-safe base64 (132
/// characters). The fixed prefix (as on AWS) keeps a token from starting
/// with `-`, which a command line would take for an option.
fn random_token() -> Result<Secret, ApiError> {
    let mut b = [0u8; 96];
    fill_random(&mut b).map_err(no_randomness)?;
    let body: String = openssl::base64::encode_block(&b)
        .chars()
        .filter(|c| *c != '=')
        .map(|c| match c {
            '+' => '-',
            '/' => '_',
            c => c,
        })
        .collect();
    Ok(Secret::new(format!("AQGA{body}")))
}

fn no_randomness(e: std::io::Error) -> ApiError {
    log::error!("no source of randomness: {e}");
    ApiError::internal("the service has no source of randomness for tokens")
}
