//! The per-message decisions of a tunnel session: a state machine over the
//! streams table with no sockets, threads or clocks, so every rule is
//! unit-tested here.
//!
//! The session's threads feed it what happened (a message from the peer, a
//! local connection accepted, closed, failed or stalled) under the session
//! lock and get back a [`Step`] or a frame: what to deliver, open, close or
//! answer. They act on it after releasing the lock, so no lock is ever held
//! across I/O. Logging is left to them too: each decision carries a
//! [`Note`] saying what happened and how loud it is.

use std::collections::{BTreeSet, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use crate::config::{DestinationAddr, Mode, PeerVersion, ServiceMapping, Target};
use crate::frame::{Message, MessageType};
use crate::logging;
use crate::protocol;
use crate::streams::{ConnKey, Duplicate, Opening, Refusal, ServiceIdx, Table, WireIds};

/// How many recently closed streams and connections are remembered, so
/// that data still in flight for them is dropped quietly instead of being
/// answered with another reset.
const RECENT: usize = 256;

/// The local connections a tunnel may hold at once
/// (`tcp.max_active_connections`). A [`Slot`] is taken for each connection
/// and given back when its threads are done, so connections that are still
/// flushing after a reset count too: the cap bounds threads and sockets.
#[derive(Clone)]
pub struct Slots {
    active: Arc<AtomicUsize>,
    max: usize,
    on_idle: Arc<OnceLock<IdleHook>>,
}

/// What to do when the last connection's threads are done.
pub type IdleHook = Box<dyn Fn() + Send + Sync>;

impl std::fmt::Debug for Slots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slots")
            .field("active", &self.active())
            .field("max", &self.max)
            .finish()
    }
}

impl Slots {
    pub fn new(max: usize) -> Self {
        Slots {
            active: Arc::new(AtomicUsize::new(0)),
            max: max.max(1),
            on_idle: Arc::new(OnceLock::new()),
        }
    }

    /// Sets what runs each time the last slot is given back (once).
    pub fn on_idle(&self, hook: IdleHook) {
        let _ = self.on_idle.set(hook);
    }

    /// A slot, unless `max` are taken.
    pub fn take(&self) -> Option<Slot> {
        self.active
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot {
                active: self.active.clone(),
                on_idle: self.on_idle.clone(),
            })
    }

    /// Slots in use.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }

    /// The cap.
    pub fn max(&self) -> usize {
        self.max
    }
}

/// One taken connection slot; dropping it gives it back.
pub struct Slot {
    active: Arc<AtomicUsize>,
    on_idle: Arc<OnceLock<IdleHook>>,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Slot")
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.active.fetch_sub(1, Ordering::SeqCst) == 1 {
            if let Some(hook) = self.on_idle.get() {
                hook();
            }
        }
    }
}

/// What happened, for the log. [`Note::level`] says how loud; warnings come
/// from peer input and are rate-limited by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// Nothing worth a line.
    Quiet,
    /// A stream message before the tunnel's services are known.
    NotReady { kind: MessageType },
    /// A message for a stream or connection that is not open (closed
    /// recently, or a reset for something this side does not have).
    Stale {
        kind: MessageType,
        stream: i32,
        conn: u32,
    },
    /// A message naming a service this side does not map.
    UnknownService { kind: MessageType, service: String },
    /// A message for a stream or connection this side never knew, answered
    /// with a reset so that the peer stops using it.
    AnsweredUnknown {
        kind: MessageType,
        stream: i32,
        conn: u32,
    },
    /// `max_active_connections` reached: refused.
    OverCap { kind: MessageType, max: usize },
    /// A source received a message only a destination handles.
    WrongSide { kind: MessageType, stream: i32 },
    /// A stream message with stream id 0.
    StreamIdZero { kind: MessageType },
    /// A CONNECTION_START without a connection id.
    ConnectionIdZero { stream: i32 },
    /// A CONNECTION_START for a connection that is already open.
    Duplicate { stream: i32, conn: u32 },
    /// A STREAM_START replaced the service's stream.
    StreamReplaced {
        service: String,
        old: usize,
        stream: i32,
    },
    /// The peer reset a stream.
    StreamReset { stream: i32, closed: usize },
    /// The peer reset one connection.
    ConnectionReset { stream: i32, conn: u32 },
    /// The service reset every stream.
    SessionReset { closed: usize },
}

impl Note {
    /// The level this note is logged at.
    pub fn level(&self) -> log::Level {
        match self {
            Note::Quiet | Note::NotReady { .. } | Note::Stale { .. } => log::Level::Debug,
            Note::ConnectionReset { .. } => log::Level::Debug,
            Note::StreamReplaced { .. } | Note::StreamReset { .. } | Note::SessionReset { .. } => {
                log::Level::Info
            }
            Note::UnknownService { .. }
            | Note::AnsweredUnknown { .. }
            | Note::OverCap { .. }
            | Note::WrongSide { .. }
            | Note::StreamIdZero { .. }
            | Note::ConnectionIdZero { .. }
            | Note::Duplicate { .. } => log::Level::Warn,
        }
    }

    /// A small number naming the kind of note, for per-kind rate limits.
    pub fn category(&self) -> usize {
        match self {
            Note::Quiet => 0,
            Note::NotReady { .. } => 1,
            Note::Stale { .. } => 2,
            Note::UnknownService { .. } => 3,
            Note::AnsweredUnknown { .. } => 4,
            Note::OverCap { .. } => 5,
            Note::WrongSide { .. } => 6,
            Note::StreamIdZero { .. } => 7,
            Note::ConnectionIdZero { .. } => 8,
            Note::Duplicate { .. } => 9,
            Note::StreamReplaced { .. } => 10,
            Note::StreamReset { .. } => 11,
            Note::ConnectionReset { .. } => 12,
            Note::SessionReset { .. } => 13,
        }
    }

    /// Number of categories.
    pub const CATEGORIES: usize = 14;
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Note::Quiet => Ok(()),
            Note::NotReady { kind } => write!(
                f,
                "Dropping {kind:?}: the tunnel's services are not known yet"
            ),
            Note::Stale { kind, stream, conn } => write!(
                f,
                "Dropping {kind:?} for stream {stream} connection {conn}: not open"
            ),
            Note::UnknownService { kind, service } if service.is_empty() => write!(
                f,
                "{kind:?} without a service id (V1 messages: a -y V1 source or one \
                 unnamed mapping), which this side does not map: refused; the two sides \
                 must both name their services or both map one unnamed port"
            ),
            Note::UnknownService { kind, service } => write!(
                f,
                "{kind:?} for service id '{}', which this side does not map: refused",
                logging::printable(service)
            ),
            Note::AnsweredUnknown { kind, stream, conn } => write!(
                f,
                "{kind:?} for stream {stream} connection {conn}, which this side does not \
                 know (its start may have been lost while a side was away): answering with \
                 a reset so the peer starts afresh"
            ),
            Note::OverCap { kind, max } => write!(
                f,
                "Refusing {kind:?}: {max} connections are open \
                 (tunneling.proxy.tcp.max_active_connections)"
            ),
            Note::WrongSide { kind, stream } => write!(
                f,
                "Ignoring {kind:?} for stream {stream}: a source proxy does not accept connections"
            ),
            Note::StreamIdZero { kind } => write!(f, "Ignoring {kind:?} with stream id 0"),
            Note::ConnectionIdZero { stream } => write!(
                f,
                "Ignoring CONNECTION_START for stream {stream} without a connection id"
            ),
            Note::Duplicate { stream, conn } => write!(
                f,
                "Ignoring CONNECTION_START for stream {stream} connection {conn}: already open"
            ),
            Note::StreamReplaced {
                service,
                old,
                stream,
            } => write!(
                f,
                "New stream {stream} for service {service} replaces the previous one: \
                 closing {old} connection(s)"
            ),
            Note::StreamReset { stream, closed } => write!(
                f,
                "Stream {stream} reset by the peer: closing {closed} connection(s)"
            ),
            Note::ConnectionReset { stream, conn } => {
                write!(f, "Connection {conn} of stream {stream} reset by the peer")
            }
            Note::SessionReset { closed } => write!(
                f,
                "Session reset by the service: closing {closed} connection(s)"
            ),
        }
    }
}

/// A destination connection to make.
#[derive(Debug)]
pub struct Open {
    pub key: ConnKey,
    pub ids: WireIds,
    pub addr: DestinationAddr,
    pub label: String,
    pub slot: Slot,
}

/// What to do about one message from the peer.
#[derive(Debug)]
pub enum Step<C> {
    /// Nothing but the note.
    Note(Note),
    /// Hand the DATA payload to this connection.
    Deliver { key: ConnKey, to: C },
    /// Destination: connect to a local service for a new connection; the
    /// connections of a replaced stream (the peer moved on without
    /// resetting it) are aborted.
    Connect {
        open: Open,
        replaced: Vec<C>,
        note: Note,
    },
    /// Close these connections: dropping their handles lets each flush what
    /// it was given, then close. With `abort`, their data was lost (the
    /// peer reset a whole V3 stream or the session, which it does only
    /// when something failed): abort them, so the applications see a reset.
    Close {
        conns: Vec<C>,
        note: Note,
        abort: bool,
    },
    /// Send this frame (a reset) back to the peer.
    Reply {
        frame: Vec<u8>,
        replaced: Vec<C>,
        note: Note,
    },
    /// The tunnel's services are known (SERVICE_IDS).
    Services(Result<Known, ServicesError>),
}

/// A service to listen for (source, first time the services are known).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenOn {
    pub service: ServiceIdx,
    pub label: String,
    /// 0 = any free port.
    pub port: u16,
}

/// The services became known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Known {
    /// Nothing to start.
    Ready,
    /// A source starts listening for these.
    Listen(Vec<ListenOn>),
}

/// Why the tunnel's services cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServicesError {
    /// SERVICE_IDS lists more services than a tunnel may have (a protocol error).
    TooMany { count: usize, max: usize },
    /// SERVICE_IDS holds a value that is not a service id (a protocol error).
    InvalidId(String),
    /// The services changed between two connections of the same tunnel.
    Changed {
        before: BTreeSet<String>,
        now: BTreeSet<String>,
    },
    /// The mappings of this side name other services than the tunnel's.
    Mismatch {
        mapped: BTreeSet<String>,
        advertised: BTreeSet<String>,
    },
    /// A destination with no mapping at all.
    NoDestination(BTreeSet<String>),
    /// A source with neither a mapping nor an advertised service.
    NoService,
    /// A source for a V1 destination (`-y V1`) on a tunnel of several
    /// services: V1 messages carry no service id.
    V1WithServices(BTreeSet<String>),
}

impl ServicesError {
    /// Whether the service broke the protocol (rather than the
    /// configuration not matching the tunnel).
    pub fn is_protocol(&self) -> bool {
        matches!(
            self,
            ServicesError::TooMany { .. } | ServicesError::InvalidId(_)
        )
    }
}

impl fmt::Display for ServicesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServicesError::TooMany { count, max } => write!(
                f,
                "SERVICE_IDS lists {count} services; a tunnel has at most {max}"
            ),
            ServicesError::InvalidId(id) => write!(
                f,
                "SERVICE_IDS holds '{}', which is not a service id (1 to {} characters of \
                 a-z A-Z 0-9 : _ -)",
                logging::printable(id),
                protocol::SERVICE_ID_MAX_LEN
            ),
            ServicesError::Changed { before, now } => write!(
                f,
                "the tunnel now advertises services {now:?} instead of {before:?}"
            ),
            ServicesError::Mismatch { mapped, advertised } => write!(
                f,
                "the service ids mapped on this side {mapped:?} do not match the tunnel's \
                 services {advertised:?}: map exactly the services the tunnel was opened with"
            ),
            ServicesError::NoDestination(set) => write!(
                f,
                "no destination given for the tunnel's services {set:?}: map each with \
                 -d ID=PORT or --config-dir"
            ),
            ServicesError::NoService => {
                f.write_str("the tunnel advertised no service and none is mapped")
            }
            ServicesError::V1WithServices(set) => write!(
                f,
                "-y/--destination-client-type V1 on a tunnel of {} services {set:?}: V1 \
                 messages carry no service id, so a V1 destination serves one service; map \
                 one service with -s, or use V2 or V3",
                set.len()
            ),
        }
    }
}

/// Why a local connection (source) was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// The services are not known yet.
    NotReady,
    /// `max_active_connections` reached.
    OverCap { max: usize },
    /// A V1/V2 destination carries one connection per service.
    Busy(Refusal),
}

/// A local connection the source accepted.
#[derive(Debug)]
pub struct Accepted {
    pub key: ConnKey,
    pub ids: WireIds,
    pub opening: Opening,
    /// The framed STREAM_START or CONNECTION_START.
    pub frame: Vec<u8>,
    pub label: String,
    pub slot: Slot,
}

/// A destination connection to make; the connections of the stream it
/// replaces (if any) close.
fn connect_step<C>(open: Open, replaced: Vec<C>) -> Step<C> {
    let note = if replaced.is_empty() {
        Note::Quiet
    } else {
        Note::StreamReplaced {
            service: open.label.clone(),
            old: replaced.len(),
            stream: open.key.stream_id,
        }
    };
    Step::Connect {
        open,
        replaced,
        note,
    }
}

/// Streams and connections closed lately, by (service, stream, connection);
/// connection 0 stands for the whole stream. Bounded: the oldest is
/// forgotten first.
#[derive(Debug, Default)]
struct Recent(VecDeque<(ServiceIdx, i32, u32)>);

impl Recent {
    fn add(&mut self, service: ServiceIdx, stream: i32, conn: u32) {
        if self.0.len() == RECENT {
            self.0.pop_front();
        }
        self.0.push_back((service, stream, conn));
    }

    fn contains(&self, service: ServiceIdx, stream: i32, conn: u32) -> bool {
        self.0
            .iter()
            .any(|&(s, st, c)| s == service && st == stream && (c == 0 || c == conn))
    }
}

/// The decisions of one proxy's session, kept across tunnel connections.
#[derive(Debug)]
pub struct Machine<C> {
    mode: Mode,
    peer_version: PeerVersion,
    /// Service ids of the mappings (empty with an unnamed or no mapping).
    named: BTreeSet<String>,
    /// Created when the services are known (mapping or SERVICE_IDS).
    table: Option<Table<C>>,
    /// Local end of each service, in table order.
    targets: Vec<Target>,
    /// The service ids the tunnel advertised first; later ones must match.
    advertised: Option<BTreeSet<String>>,
    /// Mappings read from a directory, looked up by the advertised ids
    /// (instead of `named`/`table`, which they become).
    pool: Option<Vec<(String, Target)>>,
    listening: bool,
    /// The current tunnel connection got as far as knowing its services.
    ready: bool,
    slots: Slots,
    recent: Recent,
}

impl<C: Clone> Machine<C> {
    /// A machine for this side's mode and mappings, with at most
    /// `max_connections` local connections at once.
    pub fn new(
        mode: Mode,
        peer_version: PeerVersion,
        services: &[ServiceMapping],
        max_connections: usize,
    ) -> Self {
        let (table, targets) = if services.is_empty() {
            (None, Vec::new())
        } else {
            let names = services.iter().map(|s| s.id.clone()).collect();
            let targets = services.iter().map(|s| s.target.clone()).collect();
            (Some(Table::new(names)), targets)
        };
        Machine {
            mode,
            peer_version,
            named: services.iter().filter_map(|s| s.id.clone()).collect(),
            table,
            targets,
            advertised: None,
            pool: None,
            listening: false,
            ready: false,
            slots: Slots::new(max_connections),
            recent: Recent::default(),
        }
    }

    /// The mappings came from a mapping directory: as in the reference, the
    /// services the tunnel advertises are looked up in them, the others are
    /// ignored, and a source picks a port for an advertised one they lack (a
    /// destination refuses to start).
    pub fn with_directory_mappings(mut self, services: &[ServiceMapping]) -> Self {
        self.pool = Some(
            services
                .iter()
                .filter_map(|s| Some((s.id.clone()?, s.target.clone())))
                .collect(),
        );
        self.named.clear();
        self.table = None;
        self.targets.clear();
        self
    }

    /// The connection slots (shared with the connections' threads).
    pub fn slots(&self) -> &Slots {
        &self.slots
    }

    /// Whether the current tunnel connection knows its services.
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// Number of connections in the table.
    pub fn connection_count(&self) -> usize {
        self.table.as_ref().map_or(0, |t| t.connection_count())
    }

    /// A new tunnel connection starts, or the current one ended: every
    /// stream ends (the returned connections close).
    pub fn reset_all(&mut self) -> Vec<C> {
        self.ready = false;
        self.recent.0.clear();
        self.table
            .as_mut()
            .map(Table::reset_all)
            .unwrap_or_default()
    }

    /// The tunnel's services are known: from SERVICE_IDS (`Some`) or, for
    /// V1, from the mappings alone. Checks them against the mappings; the
    /// first time on a source, says what to listen on.
    pub fn services_known(
        &mut self,
        advertised: Option<Vec<String>>,
    ) -> Result<Known, ServicesError> {
        if let Some(ids) = advertised {
            if ids.len() > protocol::MAX_SERVICES_PER_TUNNEL {
                return Err(ServicesError::TooMany {
                    count: ids.len(),
                    max: protocol::MAX_SERVICES_PER_TUNNEL,
                });
            }
            if let Some(bad) = ids
                .iter()
                .find(|s| !s.is_empty() && !protocol::is_valid_service_id(s))
            {
                return Err(ServicesError::InvalidId(bad.clone()));
            }
            let set: BTreeSet<String> = ids.into_iter().filter(|s| !s.is_empty()).collect();
            match &self.advertised {
                Some(prev) if *prev != set => {
                    return Err(ServicesError::Changed {
                        before: prev.clone(),
                        now: set,
                    })
                }
                Some(_) => {}
                None => {
                    // One unnamed mapping speaks V1, which any tunnel
                    // accepts; no mapping at all takes the advertised services.
                    if !self.named.is_empty() && self.named != set {
                        return Err(ServicesError::Mismatch {
                            mapped: self.named.clone(),
                            advertised: set,
                        });
                    }
                    if let Some(pool) = &self.pool {
                        let find = |id: &String| pool.iter().find(|(p, _)| p == id);
                        let missing: BTreeSet<String> = set
                            .iter()
                            .filter(|id| find(id).is_none())
                            .cloned()
                            .collect();
                        if self.mode == Mode::Destination && !missing.is_empty() {
                            return Err(ServicesError::NoDestination(missing));
                        }
                        self.targets = set
                            .iter()
                            .map(|id| find(id).map_or(Target::Listen(0), |(_, t)| t.clone()))
                            .collect();
                        self.table = Some(Table::new(set.iter().cloned().map(Some).collect()));
                    }
                    if self.table.is_none() {
                        if self.mode == Mode::Destination {
                            return Err(ServicesError::NoDestination(set));
                        }
                        // No mapping: a free port for each advertised service.
                        self.table = Some(Table::new(set.iter().cloned().map(Some).collect()));
                        self.targets = set.iter().map(|_| Target::Listen(0)).collect();
                    }
                    self.advertised = Some(set);
                }
            }
        }
        let table = self.table.as_ref().ok_or(ServicesError::NoService)?;
        if table.service_count() == 0 {
            return Err(ServicesError::NoService);
        }
        if self.mode == Mode::Source
            && self.peer_version == PeerVersion::V1
            && table.service_count() > 1
        {
            return Err(ServicesError::V1WithServices(
                self.advertised.clone().unwrap_or_default(),
            ));
        }
        self.ready = true;
        if self.mode == Mode::Destination || self.listening {
            return Ok(Known::Ready);
        }
        self.listening = true;
        let listen = self
            .targets
            .iter()
            .enumerate()
            .filter_map(|(service, target)| match target {
                Target::Listen(port) => Some(ListenOn {
                    service,
                    label: table.label(service),
                    port: *port,
                }),
                Target::Connect(_) => None,
            })
            .collect();
        Ok(Known::Listen(listen))
    }

    /// Decides what one message from the peer means. `new_handle` makes the
    /// handle of a connection the message opens.
    pub fn on_message(&mut self, msg: &Message<'_>, new_handle: impl FnOnce() -> C) -> Step<C> {
        let kind = msg.type_pb;
        match kind {
            MessageType::SERVICE_IDS => {
                let ids = msg
                    .availableServiceIds
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
                return Step::Services(self.services_known(Some(ids)));
            }
            MessageType::SESSION_RESET => {
                let conns = self.reset_streams();
                return Step::Close {
                    note: Note::SessionReset {
                        closed: conns.len(),
                    },
                    conns,
                    abort: true,
                };
            }
            MessageType::UNKNOWN => return Step::Note(Note::Quiet),
            _ => {}
        }
        if msg.streamId == 0 {
            return Step::Note(Note::StreamIdZero { kind });
        }
        let starts = matches!(
            kind,
            MessageType::STREAM_START | MessageType::CONNECTION_START
        );
        if starts && self.mode == Mode::Source {
            return Step::Note(Note::WrongSide {
                kind,
                stream: msg.streamId,
            });
        }
        let Some(table) = self.table.as_ref() else {
            return Step::Note(Note::NotReady { kind });
        };
        let Some(svc) = table.find_service(&msg.serviceId, msg.streamId) else {
            if starts {
                let ids = self.wire_ids(msg);
                let frame = if kind == MessageType::STREAM_START {
                    ids.whole_stream().frame(MessageType::STREAM_RESET)
                } else {
                    ids.frame(MessageType::CONNECTION_RESET)
                };
                return Step::Reply {
                    frame,
                    replaced: Vec::new(),
                    note: Note::UnknownService {
                        kind,
                        service: msg.serviceId.to_string(),
                    },
                };
            }
            if kind == MessageType::DATA && msg.serviceId.is_empty() {
                // A V1 message for a stream no service has.
                return self.answer_unknown(None, msg);
            }
            return Step::Note(Note::UnknownService {
                kind,
                service: msg.serviceId.to_string(),
            });
        };
        match kind {
            MessageType::DATA => self.on_data(svc, msg),
            MessageType::STREAM_START => self.on_stream_start(svc, msg, new_handle),
            MessageType::CONNECTION_START => self.on_connection_start(svc, msg, new_handle),
            MessageType::STREAM_RESET => self.on_stream_reset(svc, msg),
            MessageType::CONNECTION_RESET => self.on_connection_reset(svc, msg),
            _ => Step::Note(Note::Quiet),
        }
    }

    /// The ids of a message, to answer it.
    fn wire_ids(&self, msg: &Message<'_>) -> WireIds {
        let version = match (msg.connectionId, msg.serviceId.is_empty()) {
            (0, true) => PeerVersion::V1,
            (0, false) => PeerVersion::V2,
            _ => PeerVersion::V3,
        };
        WireIds {
            stream_id: msg.streamId,
            service_id: msg.serviceId.to_string(),
            connection_id: msg.connectionId,
            version,
        }
    }

    fn table_mut(&mut self) -> Option<&mut Table<C>> {
        self.table.as_mut()
    }

    fn on_data(&mut self, svc: ServiceIdx, msg: &Message<'_>) -> Step<C> {
        let routed = self
            .table_mut()
            .and_then(|t| t.route_data(svc, msg.streamId, msg.connectionId))
            .map(|(key, to)| (key, to.clone()));
        match routed {
            Some((key, to)) => Step::Deliver { key, to },
            None => self.answer_unknown(Some(svc), msg),
        }
    }

    /// A DATA message for a stream or connection this side does not have:
    /// dropped when it was closed recently (data in flight), otherwise
    /// answered once with a reset so that the peer does not keep sending
    /// into the void and its next connection starts a stream this side knows.
    fn answer_unknown(&mut self, svc: Option<ServiceIdx>, msg: &Message<'_>) -> Step<C> {
        let (stream, conn) = (msg.streamId, msg.connectionId);
        let note = Note::Stale {
            kind: msg.type_pb,
            stream,
            conn,
        };
        let key = svc.unwrap_or(usize::MAX);
        if self.recent.contains(key, stream, conn) {
            return Step::Note(note);
        }
        let current =
            svc.is_some_and(|s| self.table.as_ref().is_some_and(|t| t.is_current(s, stream)));
        let ids = self.wire_ids(msg);
        let frame = if current && conn != 0 {
            self.recent.add(key, stream, conn);
            ids.frame(MessageType::CONNECTION_RESET)
        } else {
            self.recent.add(key, stream, 0);
            ids.whole_stream().frame(MessageType::STREAM_RESET)
        };
        Step::Reply {
            frame,
            replaced: Vec::new(),
            note: Note::AnsweredUnknown {
                kind: msg.type_pb,
                stream,
                conn,
            },
        }
    }

    fn destination(&self, svc: ServiceIdx) -> Option<DestinationAddr> {
        match self.targets.get(svc) {
            Some(Target::Connect(addr)) => Some(addr.clone()),
            _ => None,
        }
    }

    fn on_stream_start(
        &mut self,
        svc: ServiceIdx,
        msg: &Message<'_>,
        new_handle: impl FnOnce() -> C,
    ) -> Step<C> {
        let ids = self.wire_ids(msg);
        let (Some(addr), Some(table)) = (self.destination(svc), self.table.as_mut()) else {
            return Step::Note(Note::Quiet);
        };
        let label = table.label(svc);
        let Some(slot) = self.slots.take() else {
            // The source has moved on to this stream: the old one ends
            // either way; this connection is refused.
            let replaced =
                table.replace_stream(svc, msg.streamId, &msg.serviceId, msg.connectionId);
            let frame = if msg.connectionId != 0 {
                self.recent.add(svc, msg.streamId, msg.connectionId);
                ids.frame(MessageType::CONNECTION_RESET)
            } else {
                table.stream_reset(svc, msg.streamId);
                self.recent.add(svc, msg.streamId, 0);
                ids.whole_stream().frame(MessageType::STREAM_RESET)
            };
            return Step::Reply {
                frame,
                replaced,
                note: Note::OverCap {
                    kind: msg.type_pb,
                    max: self.slots.max,
                },
            };
        };
        let (key, ids, replaced) = table.stream_start(
            svc,
            msg.streamId,
            &msg.serviceId,
            msg.connectionId,
            new_handle(),
        );
        connect_step(
            Open {
                key,
                ids,
                addr,
                label,
                slot,
            },
            replaced,
        )
    }

    fn on_connection_start(
        &mut self,
        svc: ServiceIdx,
        msg: &Message<'_>,
        new_handle: impl FnOnce() -> C,
    ) -> Step<C> {
        let (stream, conn) = (msg.streamId, msg.connectionId);
        if conn == 0 {
            return Step::Note(Note::ConnectionIdZero { stream });
        }
        let ids = self.wire_ids(msg);
        let (Some(addr), Some(table)) = (self.destination(svc), self.table.as_mut()) else {
            return Step::Note(Note::Quiet);
        };
        if table.has_connection(svc, stream, conn) {
            return Step::Note(Note::Duplicate { stream, conn });
        }
        let label = table.label(svc);
        let Some(slot) = self.slots.take() else {
            let replaced = if table.is_current(svc, stream) {
                Vec::new()
            } else {
                table.replace_stream(svc, stream, &msg.serviceId, conn)
            };
            self.recent.add(svc, stream, conn);
            return Step::Reply {
                frame: ids.frame(MessageType::CONNECTION_RESET),
                replaced,
                note: Note::OverCap {
                    kind: msg.type_pb,
                    max: self.slots.max,
                },
            };
        };
        match table.connection_start(svc, stream, &msg.serviceId, conn, new_handle()) {
            Ok((key, ids, replaced)) => connect_step(
                Open {
                    key,
                    ids,
                    addr,
                    label,
                    slot,
                },
                replaced,
            ),
            // Checked above; the slot goes back.
            Err(Duplicate(_)) => Step::Note(Note::Duplicate { stream, conn }),
        }
    }

    fn on_stream_reset(&mut self, svc: ServiceIdx, msg: &Message<'_>) -> Step<C> {
        let stream = msg.streamId;
        let closed = self.table_mut().and_then(|t| t.stream_reset(svc, stream));
        match closed {
            Some((conns, version)) => {
                self.recent.add(svc, stream, 0);
                Step::Close {
                    note: Note::StreamReset {
                        stream,
                        closed: conns.len(),
                    },
                    conns,
                    // Before V3 a STREAM_RESET is how every connection
                    // ends; in V3 each ends with a CONNECTION_RESET, and a
                    // stream is reset only when something failed (a peer
                    // replaced, a local service unreachable).
                    abort: version == PeerVersion::V3,
                }
            }
            None => Step::Note(Note::Stale {
                kind: msg.type_pb,
                stream,
                conn: 0,
            }),
        }
    }

    fn on_connection_reset(&mut self, svc: ServiceIdx, msg: &Message<'_>) -> Step<C> {
        let (stream, conn) = (msg.streamId, msg.connectionId);
        let closed = self
            .table_mut()
            .and_then(|t| t.connection_reset(svc, stream, conn));
        match closed {
            Some(c) => {
                self.recent.add(svc, stream, conn.max(1));
                Step::Close {
                    conns: vec![c],
                    note: Note::ConnectionReset { stream, conn },
                    abort: false,
                }
            }
            None => Step::Note(Note::Stale {
                kind: msg.type_pb,
                stream,
                conn,
            }),
        }
    }

    /// SESSION_RESET: every stream ends (data still in flight for them is
    /// answered once, like any unknown stream's).
    fn reset_streams(&mut self) -> Vec<C> {
        self.table
            .as_mut()
            .map(Table::reset_all)
            .unwrap_or_default()
    }

    /// Source: a local client connected to `service`'s port.
    pub fn accept(&mut self, service: ServiceIdx, handle: C) -> Result<Accepted, Refused> {
        let Some(table) = self.table.as_mut() else {
            return Err(Refused::NotReady);
        };
        if !self.ready {
            return Err(Refused::NotReady);
        }
        let slot = self.slots.take().ok_or(Refused::OverCap {
            max: self.slots.max,
        })?;
        let label = table.label(service);
        let (key, ids, opening) = table
            .source_open(service, self.peer_version, handle)
            .map_err(Refused::Busy)?;
        Ok(Accepted {
            frame: ids.frame(opening.message_type()),
            key,
            ids,
            opening,
            label,
            slot,
        })
    }

    /// A local connection ended on its own: the reset to send, unless the
    /// tunnel side closed it first.
    pub fn local_closed(&mut self, key: &ConnKey) -> Option<Vec<u8>> {
        let (_handle, closing) = self.table.as_mut()?.local_closed(key)?;
        self.recent.add(key.service, key.stream_id, key.conn_id);
        Some(closing.frame())
    }

    /// Destination: connecting to the local service failed: the reset to
    /// send, unless the connection was closed meanwhile.
    pub fn connect_failed(&mut self, key: &ConnKey) -> Option<Vec<u8>> {
        let (_handle, ids) = self.table.as_mut()?.remove(key)?;
        self.recent.add(key.service, key.stream_id, key.conn_id);
        Some(ids.reset_frame())
    }

    /// Whether connection `key` is still open on the tunnel side (a reset,
    /// a replaced stream or a lost tunnel closes it).
    pub fn is_open(&self, key: &ConnKey) -> bool {
        self.table.as_ref().is_some_and(|t| t.contains(key))
    }

    /// A local application stopped reading: its handle (to force it closed)
    /// and the reset to send, unless it was closed meanwhile.
    pub fn stalled(&mut self, key: &ConnKey) -> Option<(C, Vec<u8>)> {
        let (handle, ids) = self.table.as_mut()?.remove(key)?;
        self.recent.add(key.service, key.stream_id, key.conn_id);
        Some((handle, ids.reset_frame()))
    }

    /// Source: connection `key` sent data and heard nothing back from the
    /// destination for too long (its start may have been lost while the
    /// destination was away): the connections to close and the reset to
    /// send, unless it was answered meanwhile. The whole stream ends when
    /// none of its connections was ever answered.
    pub fn unanswered(&mut self, key: &ConnKey) -> Option<(Vec<C>, Vec<u8>)> {
        let (conns, ids) = self.table.as_mut()?.remove_unanswered(key)?;
        self.recent
            .add(key.service, key.stream_id, ids.connection_id);
        let frame = if ids.connection_id == 0 {
            ids.frame(MessageType::STREAM_RESET)
        } else {
            ids.frame(MessageType::CONNECTION_RESET)
        };
        Some((conns, frame))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{decode_message, message, Decoded};

    type M = Machine<&'static str>;

    fn dest(max: usize) -> M {
        let services = vec![
            ServiceMapping {
                id: Some("SSH1".into()),
                target: Target::Connect(DestinationAddr::Tcp {
                    host: "localhost".into(),
                    port: 22,
                }),
            },
            ServiceMapping {
                id: Some("WEB".into()),
                target: Target::Connect(DestinationAddr::Tcp {
                    host: "localhost".into(),
                    port: 80,
                }),
            },
        ];
        let mut m = Machine::new(Mode::Destination, PeerVersion::V3, &services, max);
        assert_eq!(
            m.services_known(Some(vec!["SSH1".into(), "WEB".into()])),
            Ok(Known::Ready)
        );
        m
    }

    fn source(version: PeerVersion) -> M {
        let services = vec![ServiceMapping {
            id: Some("SSH1".into()),
            target: Target::Listen(5555),
        }];
        Machine::new(Mode::Source, version, &services, 128)
    }

    fn msg(kind: MessageType, stream: i32, service: &'static str, conn: u32) -> Message<'static> {
        message(kind, stream, service, conn, b"x")
    }

    /// The type, stream and connection of a framed message.
    fn parsed(frame: &[u8]) -> (MessageType, i32, u32) {
        match decode_message(&frame[2..], 1024) {
            Ok(Decoded::Message(m)) => (m.type_pb, m.streamId, m.connectionId),
            other => panic!("not a message: {other:?}"),
        }
    }

    fn reply(step: Step<&'static str>) -> (MessageType, i32, u32, Note) {
        match step {
            Step::Reply { frame, note, .. } => {
                let (k, s, c) = parsed(&frame);
                (k, s, c, note)
            }
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    fn connect(step: Step<&'static str>) -> (Open, Vec<&'static str>) {
        match step {
            Step::Connect { open, replaced, .. } => (open, replaced),
            other => panic!("expected a connect, got {other:?}"),
        }
    }

    #[test]
    fn stream_start_connects_and_data_reaches_the_connection() {
        let mut m = dest(8);
        let (open, replaced) =
            connect(m.on_message(&msg(MessageType::STREAM_START, 1, "SSH1", 1), || "a"));
        assert!(replaced.is_empty());
        assert_eq!(
            (open.key.stream_id, open.key.conn_id, open.label.as_str()),
            (1, 1, "SSH1")
        );
        assert!(matches!(open.addr, DestinationAddr::Tcp { port: 22, .. }));
        match m.on_message(&msg(MessageType::DATA, 1, "SSH1", 1), || "unused") {
            Step::Deliver { key, to } => assert_eq!((key, to), (open.key, "a")),
            other => panic!("{other:?}"),
        }
        assert_eq!(m.slots().active(), 1);
        drop(open);
        assert_eq!(
            m.slots().active(),
            0,
            "the slot goes back with the connection"
        );
    }

    #[test]
    fn data_for_an_unknown_connection_is_answered_once_and_closed_ones_are_quiet() {
        let mut m = dest(8);
        let (open, _) =
            connect(m.on_message(&msg(MessageType::STREAM_START, 3, "SSH1", 1), || "a"));
        // Connection 2 of the current stream was never opened here.
        let (k, s, c, note) = reply(m.on_message(&msg(MessageType::DATA, 3, "SSH1", 2), || "x"));
        assert_eq!((k, s, c), (MessageType::CONNECTION_RESET, 3, 2));
        assert_eq!(note.level(), log::Level::Warn);
        // Answered once: more data for it is dropped.
        assert!(matches!(
            m.on_message(&msg(MessageType::DATA, 3, "SSH1", 2), || "x"),
            Step::Note(Note::Stale { .. })
        ));
        // A stream this side does not know at all: STREAM_RESET, so the
        // source's next connection starts a fresh stream.
        let (k, s, c, _) = reply(m.on_message(&msg(MessageType::DATA, 9, "SSH1", 1), || "x"));
        assert_eq!((k, s, c), (MessageType::STREAM_RESET, 9, 0));
        // A connection this side closed itself: data in flight is dropped.
        assert!(m.local_closed(&open.key).is_some());
        assert!(matches!(
            m.on_message(&msg(MessageType::DATA, 3, "SSH1", 1), || "x"),
            Step::Note(Note::Stale { .. })
        ));
    }

    #[test]
    fn a_connection_start_for_a_lost_stream_start_adopts_the_stream() {
        let mut m = dest(8);
        connect(m.on_message(&msg(MessageType::STREAM_START, 1, "SSH1", 1), || "old"));
        // STREAM_START 5 was dropped while this side was away.
        let (open, replaced) =
            connect(m.on_message(&msg(MessageType::CONNECTION_START, 5, "SSH1", 2), || "new"));
        assert_eq!(replaced, vec!["old"]);
        assert_eq!(
            (open.key.stream_id, open.key.conn_id, open.ids.connection_id),
            (5, 2, 2)
        );
        // The next connection of that stream works too.
        let (next, _) =
            connect(m.on_message(&msg(MessageType::CONNECTION_START, 5, "SSH1", 3), || "next"));
        // A duplicate is ignored (the open connection keeps working).
        assert!(matches!(
            m.on_message(&msg(MessageType::CONNECTION_START, 5, "SSH1", 3), || "dup"),
            Step::Note(Note::Duplicate { stream: 5, conn: 3 })
        ));
        assert_eq!(m.slots().active(), 2, "the duplicate took no slot");
        drop((open, next));
        assert_eq!(m.slots().active(), 0);
    }

    #[test]
    fn the_connection_cap_refuses_with_a_reset() {
        let mut m = dest(2);
        let (a, _) = connect(m.on_message(&msg(MessageType::STREAM_START, 1, "SSH1", 1), || "a"));
        let (_b, _) =
            connect(m.on_message(&msg(MessageType::CONNECTION_START, 1, "SSH1", 2), || "b"));
        let (k, s, c, note) =
            reply(m.on_message(&msg(MessageType::CONNECTION_START, 1, "SSH1", 3), || "c"));
        assert_eq!((k, s, c), (MessageType::CONNECTION_RESET, 1, 3));
        assert_eq!(
            note,
            Note::OverCap {
                kind: MessageType::CONNECTION_START,
                max: 2
            }
        );
        // A V2 STREAM_START over the cap gets a STREAM_RESET.
        let (k, s, c, _) = reply(m.on_message(
            &message(MessageType::STREAM_START, 7, "WEB", 0, b""),
            || "d",
        ));
        assert_eq!((k, s, c), (MessageType::STREAM_RESET, 7, 0));
        // A slot freed (connection threads done) lets the next one in.
        drop(a);
        connect(m.on_message(&msg(MessageType::CONNECTION_START, 1, "SSH1", 4), || "e"));
    }

    #[test]
    fn unknown_services_and_bad_ids_are_refused_or_ignored() {
        let mut m = dest(8);
        let (k, s, _, note) =
            reply(m.on_message(&msg(MessageType::STREAM_START, 4, "FTP", 1), || "a"));
        assert_eq!((k, s), (MessageType::STREAM_RESET, 4));
        assert!(matches!(note, Note::UnknownService { .. }));
        let (k, ..) = reply(m.on_message(&msg(MessageType::CONNECTION_START, 4, "FTP", 2), || "a"));
        assert_eq!(k, MessageType::CONNECTION_RESET);
        assert!(matches!(
            m.on_message(&msg(MessageType::STREAM_START, 0, "SSH1", 1), || "a"),
            Step::Note(Note::StreamIdZero { .. })
        ));
        assert!(matches!(
            m.on_message(&msg(MessageType::CONNECTION_START, 2, "SSH1", 0), || "a"),
            Step::Note(Note::ConnectionIdZero { stream: 2 })
        ));
        assert_eq!(m.slots().active(), 0);
        let mut s = source(PeerVersion::V3);
        s.services_known(Some(vec!["SSH1".into()])).expect("known");
        assert!(matches!(
            s.on_message(&msg(MessageType::STREAM_START, 1, "SSH1", 1), || "a"),
            Step::Note(Note::WrongSide { .. })
        ));
    }

    #[test]
    fn resets_close_current_streams_only() {
        let mut m = dest(8);
        connect(m.on_message(&msg(MessageType::STREAM_START, 2, "SSH1", 1), || "a"));
        connect(m.on_message(&msg(MessageType::CONNECTION_START, 2, "SSH1", 2), || "b"));
        assert!(matches!(
            m.on_message(&msg(MessageType::STREAM_RESET, 1, "SSH1", 0), || "x"),
            Step::Note(Note::Stale { .. })
        ));
        match m.on_message(&msg(MessageType::CONNECTION_RESET, 2, "SSH1", 1), || "x") {
            Step::Close { conns, abort, .. } => {
                assert_eq!(conns, vec!["a"]);
                assert!(!abort, "a connection's normal end");
            }
            other => panic!("{other:?}"),
        }
        match m.on_message(&msg(MessageType::STREAM_RESET, 2, "SSH1", 0), || "x") {
            Step::Close { conns, note, abort } => {
                assert!(abort, "a V3 stream reset is a failure");
                assert_eq!(conns, vec!["b"]);
                assert_eq!(
                    note,
                    Note::StreamReset {
                        stream: 2,
                        closed: 1
                    }
                );
            }
            other => panic!("{other:?}"),
        }
        connect(m.on_message(&msg(MessageType::STREAM_START, 3, "WEB", 1), || "c"));
        match m.on_message(&message(MessageType::SESSION_RESET, 0, "", 0, b""), || "x") {
            Step::Close { conns, abort, .. } => {
                assert_eq!(conns, vec!["c"]);
                assert!(abort);
            }
            other => panic!("{other:?}"),
        }
        // Before V3, a stream reset is how a connection ends normally.
        connect(m.on_message(&msg(MessageType::STREAM_START, 4, "SSH1", 0), || "d"));
        match m.on_message(&msg(MessageType::STREAM_RESET, 4, "SSH1", 0), || "x") {
            Step::Close { conns, abort, .. } => {
                assert_eq!(conns, vec!["d"]);
                assert!(!abort);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn service_ids_are_checked() {
        let mut s = source(PeerVersion::V3);
        let four = vec!["A".into(), "B".into(), "C".into(), "D".into()];
        let e = s.services_known(Some(four)).expect_err("too many");
        assert!(e.is_protocol());
        assert!(e.to_string().contains("at most 3"), "{e}");
        let e = s
            .services_known(Some(vec!["bad id\u{7}".into()]))
            .expect_err("invalid");
        assert!(e.is_protocol());
        assert!(e.to_string().contains("\\u{7}"), "printed safely: {e}");
        let e = s
            .services_known(Some(vec!["WEB".into()]))
            .expect_err("mismatch");
        assert!(matches!(e, ServicesError::Mismatch { .. }));
        let known = s
            .services_known(Some(vec!["SSH1".into()]))
            .expect("matches");
        assert_eq!(
            known,
            Known::Listen(vec![ListenOn {
                service: 0,
                label: "SSH1".into(),
                port: 5555
            }])
        );
        // Listening starts once; a reconnect must advertise the same set.
        assert_eq!(
            s.services_known(Some(vec!["SSH1".into()])),
            Ok(Known::Ready)
        );
        assert!(matches!(
            s.services_known(Some(vec![])),
            Err(ServicesError::Changed { .. })
        ));
    }

    #[test]
    fn a_v1_source_refuses_a_tunnel_of_several_services() {
        let mut s: M = Machine::new(Mode::Source, PeerVersion::V1, &[], 128);
        let e = s
            .services_known(Some(vec!["WEB".into(), "SSH1".into()]))
            .expect_err("two services for V1");
        assert!(matches!(e, ServicesError::V1WithServices(_)), "{e}");
        assert!(!e.is_protocol());
        let mut one: M = Machine::new(Mode::Source, PeerVersion::V1, &[], 128);
        assert!(one.services_known(Some(vec!["SSH1".into()])).is_ok());
    }

    #[test]
    fn a_source_without_mappings_listens_on_free_ports_for_the_advertised_services() {
        let mut s: M = Machine::new(Mode::Source, PeerVersion::V3, &[], 128);
        match s.services_known(Some(vec!["WEB".into(), "SSH1".into()])) {
            Ok(Known::Listen(l)) => {
                let labels: Vec<_> = l.iter().map(|l| (l.label.as_str(), l.port)).collect();
                assert_eq!(labels, vec![("SSH1", 0), ("WEB", 0)]);
            }
            other => panic!("{other:?}"),
        }
        let mut d: M = Machine::new(Mode::Destination, PeerVersion::V3, &[], 128);
        assert!(matches!(
            d.services_known(Some(vec!["SSH1".into()])),
            Err(ServicesError::NoDestination(_))
        ));
    }

    #[test]
    fn source_accepts_until_the_cap_and_resets_what_it_closes() {
        let mut s = source(PeerVersion::V3);
        assert_eq!(
            s.accept(0, "early").map(|_| ()).unwrap_err(),
            Refused::NotReady
        );
        s.services_known(Some(vec!["SSH1".into()])).expect("known");
        let a = s.accept(0, "a").expect("accepts");
        assert_eq!(a.opening, Opening::StreamStart);
        assert_eq!(parsed(&a.frame), (MessageType::STREAM_START, 1, 1));
        let b = s.accept(0, "b").expect("accepts");
        assert_eq!(parsed(&b.frame), (MessageType::CONNECTION_START, 1, 2));
        let reset = s.local_closed(&b.key).expect("live");
        assert_eq!(parsed(&reset), (MessageType::CONNECTION_RESET, 1, 2));
        assert!(s.local_closed(&b.key).is_none(), "once");
        // The stream never heard from the destination: given up.
        let (conns, frame) = s.unanswered(&a.key).expect("unanswered");
        assert_eq!(conns, vec!["a"]);
        assert_eq!(parsed(&frame), (MessageType::STREAM_RESET, 1, 0));
        let c = s.accept(0, "c").expect("accepts");
        assert_eq!(
            parsed(&c.frame),
            (MessageType::STREAM_START, 2, 1),
            "a fresh stream"
        );
        // Answered streams are kept.
        assert!(matches!(
            s.on_message(&msg(MessageType::DATA, 2, "SSH1", 1), || "x"),
            Step::Deliver { .. }
        ));
        assert!(s.unanswered(&c.key).is_none());
        let mut cap = Machine::new(
            Mode::Source,
            PeerVersion::V3,
            &[ServiceMapping {
                id: None,
                target: Target::Listen(0),
            }],
            1,
        );
        cap.services_known(None).expect("v1");
        let _held = cap.accept(0, "a").expect("accepts");
        assert_eq!(
            cap.accept(0, "b").map(|_| ()).unwrap_err(),
            Refused::OverCap { max: 1 }
        );
    }

    #[test]
    fn v2_sources_refuse_a_second_connection_and_reset_streams() {
        let mut s = source(PeerVersion::V2);
        s.services_known(Some(vec!["SSH1".into()])).expect("known");
        let a = s.accept(0, "a").expect("accepts");
        assert_eq!(parsed(&a.frame), (MessageType::STREAM_START, 1, 0));
        assert!(matches!(s.accept(0, "b"), Err(Refused::Busy(_))));
        let reset = s.local_closed(&a.key).expect("live");
        assert_eq!(parsed(&reset), (MessageType::STREAM_RESET, 1, 0));
    }

    #[test]
    fn failed_and_stalled_connections_are_reset_in_the_peer_format() {
        let mut m = dest(8);
        let (v3, _) = connect(m.on_message(&msg(MessageType::STREAM_START, 1, "SSH1", 1), || "a"));
        let (v2, _) = connect(m.on_message(
            &message(MessageType::STREAM_START, 2, "WEB", 0, b""),
            || "b",
        ));
        let f = m.connect_failed(&v3.key).expect("live");
        assert_eq!(parsed(&f), (MessageType::CONNECTION_RESET, 1, 1));
        assert!(m.connect_failed(&v3.key).is_none(), "once");
        let (h, f) = m.stalled(&v2.key).expect("live");
        assert_eq!(h, "b");
        assert_eq!(parsed(&f), (MessageType::STREAM_RESET, 2, 0));
        assert_eq!(m.connection_count(), 0);
        // A reconnect forgets everything.
        connect(m.on_message(&msg(MessageType::STREAM_START, 4, "SSH1", 1), || "c"));
        assert_eq!(m.reset_all(), vec!["c"]);
        assert!(!m.is_ready());
    }

    #[test]
    fn directory_mappings_are_looked_up_by_the_advertised_services() {
        let pool = [
            ServiceMapping {
                id: Some("SSH1".into()),
                target: Target::Listen(5555),
            },
            ServiceMapping {
                id: Some("RDP".into()),
                target: Target::Listen(3389),
            },
        ];
        // A source: RDP is not the tunnel's (ignored), WEB is not in the
        // directory (a port is picked), both in the advertised order.
        let mut s: M =
            Machine::new(Mode::Source, PeerVersion::V3, &pool, 128).with_directory_mappings(&pool);
        let known = s
            .services_known(Some(vec!["WEB".into(), "SSH1".into()]))
            .expect("known");
        assert_eq!(
            known,
            Known::Listen(vec![
                ListenOn {
                    service: 0,
                    label: "SSH1".into(),
                    port: 5555
                },
                ListenOn {
                    service: 1,
                    label: "WEB".into(),
                    port: 0
                },
            ])
        );
        // A later connection must see the same services.
        let e = s
            .services_known(Some(vec!["SSH1".into()]))
            .expect_err("changed");
        assert!(matches!(e, ServicesError::Changed { .. }));
        // A destination cannot pick: a service the directory lacks stops it.
        let mut d: M = Machine::new(Mode::Destination, PeerVersion::V3, &pool, 128)
            .with_directory_mappings(&pool);
        let e = d
            .services_known(Some(vec!["SSH1".into(), "WEB".into()]))
            .expect_err("WEB has no destination");
        assert_eq!(e, ServicesError::NoDestination(["WEB".to_string()].into()));
    }
}
