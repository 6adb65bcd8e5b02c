//! The data plane after the handshake: one thread per client relays its
//! tunnel frames to the peer and the peer's frames to it.
//!
//! The thread owns the client's (TLS) WebSocket in non-blocking mode and
//! waits in `poll(2)` on the socket and on a wake-up pipe signalled whenever
//! something is queued for it, so reads and writes never block each other.
//! Incoming binary messages are reassembled into tunnel frames, each frame is
//! checked against the protocol's rules (see [`validate`]), and the raw bytes of
//! whole frames go to the peer's queue, copied into a recycled buffer. Outgoing,
//! a large item goes out as a message of its own, as it is, and small ones are
//! coalesced into binary messages of up to 131076 bytes (or re-chunked by the
//! fault injector). A client whose peer, or who itself, has more than
//! [`PAUSE_ABOVE`] bytes queued is not read from until the queue drains
//! (backpressure), and neither is one owing more than [`PONGS_PAUSE_ABOVE`]
//! bytes of pongs that its socket did not take: a client's outbound queue
//! is bounded by about `PAUSE_ABOVE` plus one read burst, and tungstenite's
//! write buffer by [`MAX_WRITE_BUFFER`], whether it reads or not.
//!
//! Close codes: 1000 tunnel closed or expired; 1008 protocol rule broken,
//! connection replaced by a newer one with the same token
//! ([`CLOSE_REASON_REPLACED`](localproxy::protocol::CLOSE_REASON_REPLACED)) or
//! access token rotated; 1003 text frame; 1009 frame over 131076 bytes.

use std::collections::VecDeque;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, TryRecvError};
use quick_protobuf::BytesReader;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;
use tungstenite::{Bytes, Error as WsError, Message as WsMessage, WebSocket};

use localproxy::buffers::BufferPool;
use localproxy::frame::{encode_frame, message, Decoded, FrameDecoder, FrameError, MessageType};
use localproxy::protocol::{
    CLOSE_POLICY_VIOLATION, CLOSE_TOO_BIG, CLOSE_UNSUPPORTED_DATA, FRAME_LENGTH_PREFIX,
    MAX_PAYLOAD_SIZE, MAX_WEBSOCKET_FRAME, SUBPROTOCOL_V1,
};

use crate::faults::{Throttle, XorShift};
use crate::gate::Ticket;
use crate::side::Side;
use crate::stream::{Stream, MAX_WRITE_BUFFER};
use crate::tunnels::{
    Admission, ConnHandle, Out, Registry, Route, StreamEvent, TunnelClosed, Waker,
    CLOSE_REASON_TUNNEL_CLOSED,
};

/// Stop reading a client while its peer has this many bytes queued.
pub const PAUSE_ABOVE: usize = 8 << 20;
/// Stop reading a client that owes this many bytes of pongs (its pings read
/// since its socket last took everything): a client that pings and does
/// not read is not read either.
pub const PONGS_PAUSE_ABOVE: usize = 64 * 1024;
/// Messages read in one go before the loop turns to writing.
const READ_BURST: usize = 64;
/// Queued bytes of at least this size are sent as they are, without being
/// copied into a coalesced message.
const SEND_AS_IS: usize = 8 * 1024;
/// Longest sleep in poll: a safety net for TLS wanting the other direction.
const MAX_POLL: Duration = Duration::from_millis(250);
/// Time allowed for the close handshake.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// A broken protocol rule: close code and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub code: u16,
    pub reason: String,
}

impl Violation {
    fn policy(reason: impl Into<String>) -> Self {
        Violation {
            code: CLOSE_POLICY_VIOLATION,
            reason: reason.into(),
        }
    }
}

impl From<FrameError> for Violation {
    fn from(e: FrameError) -> Self {
        Violation::policy(e.to_string())
    }
}

/// Checks one frame sent by a client of `side` on a tunnel with `services`:
/// `raw` as received (length prefix included) and `decoded` by the codec.
/// Returns the stream event it carries, if any: starts and resets, and a
/// message naming a service id not in `known` (those this connection
/// already named), which the tunnel checks had a STREAM_START.
pub fn validate(
    raw: &[u8],
    decoded: Decoded<'_>,
    side: Side,
    services: &[String],
    known: &[String],
) -> Result<Option<StreamEvent>, Violation> {
    // A message to skip is held to the same field rules (its payload size
    // was checked by the codec); only its unknown type is let through.
    check_fields(&raw[FRAME_LENGTH_PREFIX..])?;
    let m = match decoded {
        Decoded::Message(m) => m,
        Decoded::Ignored { raw_type: 0 } => {
            return Err(Violation::policy(
                "message of type 0 (UNKNOWN): the type must be non-zero, ignorable or not",
            ))
        }
        Decoded::Ignored { .. } => return Ok(None),
    };
    let t = m.type_pb;
    match t {
        MessageType::SERVICE_IDS | MessageType::SESSION_RESET => {
            return Err(Violation::policy(format!("clients must not send {t:?}")))
        }
        MessageType::STREAM_START if side == Side::Destination => {
            return Err(Violation::policy(
                "a destination must not send STREAM_START",
            ))
        }
        _ => {}
    }
    if m.streamId == 0 {
        return Err(Violation::policy(format!("{t:?} with stream id 0")));
    }
    if !m.serviceId.is_empty() && !services.iter().any(|s| *s == m.serviceId) {
        return Err(Violation::policy(format!(
            "{t:?} names service id {:?}, not one of the tunnel's [{}]",
            m.serviceId,
            services.join(",")
        )));
    }
    Ok(match t {
        MessageType::STREAM_START => Some(StreamEvent::Start {
            service: m.serviceId.into_owned(),
            stream: m.streamId,
        }),
        MessageType::STREAM_RESET => Some(StreamEvent::Reset {
            service: m.serviceId.into_owned(),
            stream: m.streamId,
        }),
        _ if !m.serviceId.is_empty() && !known.iter().any(|k| *k == m.serviceId) => {
            Some(StreamEvent::Uses {
                service: m.serviceId.into_owned(),
                what: t,
            })
        }
        _ => None,
    })
}

/// Refuses fields outside the schema (and known fields of the wrong wire type).
fn check_fields(body: &[u8]) -> Result<(), Violation> {
    let mut r = BytesReader::from_bytes(body);
    while !r.is_eof() {
        let tag = r
            .next_tag(body)
            .map_err(|e| Violation::policy(format!("bad field tag: {e}")))?;
        let (field, wire) = (tag >> 3, tag & 7);
        let expected = match field {
            1 | 2 | 3 | 7 => 0,
            4..=6 => 2,
            _ => {
                return Err(Violation::policy(format!(
                    "message has unknown field {field}"
                )))
            }
        };
        if wire != expected {
            return Err(Violation::policy(format!(
                "field {field} has wire type {wire}, expected {expected}"
            )));
        }
        r.read_unknown(body, tag)
            .map_err(|e| Violation::policy(format!("bad field {field}: {e}")))?;
    }
    Ok(())
}

/// Feeds one binary message to the connection's frame decoder (frames may
/// span messages), checking each complete frame; returns the bytes of the
/// complete frames, unchanged, and their stream events.
///
/// The frames are copied out of the message, so tungstenite's read buffer is
/// free again at once (a slice of it kept in a queue would make it allocate
/// a new one for every message). A message that nearly fills a pooled buffer
/// (7/8 or more: a largest DATA frame from a proxy) goes into one from
/// `pool`, which it returns to once sent; others get a buffer of their size.
fn take_frames(
    decoder: &mut FrameDecoder,
    data: &[u8],
    side: Side,
    services: &[String],
    known: &[String],
    pool: &BufferPool,
) -> Result<(Bytes, Vec<StreamEvent>), Violation> {
    let most = data.len() + decoder.pending();
    let pooled = most >= pool.size() / 8 * 7 && most <= pool.size();
    let mut out = if pooled {
        pool.take_empty()
    } else {
        Vec::with_capacity(most)
    };
    let mut events = Vec::new();
    decoder.decode_raw::<Violation, _>(data, |raw, decoded| {
        if let Some(e) = validate(raw, decoded, side, services, known)? {
            events.push(e);
        }
        out.extend_from_slice(raw);
        Ok(())
    })?;
    let frames = if pooled {
        let len = out.len();
        pool.lend(out, 0..len)
    } else {
        out.into()
    };
    Ok((frames, events))
}

/// How a connection ended, for the log.
enum End {
    /// Ended while silenced: closed without a word (no close frame).
    Silenced(String),
    ClientClosed(String),
    Violation(Violation),
    Closed {
        code: u16,
        reason: String,
    },
    Dropped(&'static str),
    Error(String),
    Gone,
}

/// What the relay does with its client (fault injection changes it for
/// the rest of the connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Normal,
    /// `LocalTest.Silence`: no reads, no writes, not even pongs.
    Silenced,
    /// `LocalTest.StopReading`: no reads; writes go on, plus a ping every
    /// `interval` (the next one due at `next`).
    StopReading {
        interval: Duration,
        next: Instant,
    },
}

enum Item {
    /// Bytes to send, and how many of them went already.
    Bytes(Bytes, usize),
    Text(String),
}

struct Relay {
    ws: WebSocket<Stream>,
    registry: Arc<Registry>,
    tunnel_id: String,
    side: Side,
    conn: ConnHandle,
    rx: Receiver<Out>,
    waker: Arc<Waker>,
    decoder: FrameDecoder,
    outq: VecDeque<Item>,
    write_blocked: bool,
    /// Bytes of pongs owed: pings read since the last complete flush.
    pongs_owed: usize,
    rng: Option<XorShift>,
    rechunk_max: usize,
    throttle: Option<Throttle>,
    drop_after: Option<u64>,
    bytes_in: u64,
    bytes_out: u64,
    relayed: u64,
    peer: Option<ConnHandle>,
    mode: Mode,
    /// Service ids this client named that the tunnel found started.
    known: Vec<String>,
}

/// A write error for the log; a full write buffer names its limit.
fn write_error(e: WsError) -> End {
    match e {
        WsError::WriteBufferFull(_) => End::Error(format!(
            "write buffer full: a message would exceed its limit of {MAX_WRITE_BUFFER} bytes"
        )),
        e => End::Error(e.to_string()),
    }
}

fn is_would_block(e: &WsError) -> bool {
    matches!(e, WsError::Io(io) if io.kind() == io::ErrorKind::WouldBlock || io.kind() == io::ErrorKind::Interrupted)
}

/// Runs a connection until it ends; the handshake has been answered.
pub fn run(
    ws: WebSocket<Stream>,
    _ticket: Ticket,
    adm: Admission,
    subprotocol: &str,
    channel_id: String,
    peer_addr: String,
    registry: Arc<Registry>,
) {
    let _live = registry.live();
    let mut ws = ws;
    let waker = match Waker::new() {
        Ok(w) => Arc::new(w),
        Err(e) => {
            log::warn!(
                "tunnel {}: cannot create a wake-up pipe: {e}",
                adm.tunnel_id
            );
            let _ = ws.close(None);
            let _ = ws.flush();
            registry.unregister(&adm.tunnel_id, adm.side, 0);
            return;
        }
    };
    let (tx, rx) = crossbeam_channel::unbounded();
    let conn_id = registry.next_conn_id();
    let conn = ConnHandle::new(conn_id, tx, waker.clone());
    if subprotocol != SUBPROTOCOL_V1 {
        let services = registry
            .services(&adm.tunnel_id)
            .unwrap_or(adm.services.clone());
        let mut ids = message(MessageType::SERVICE_IDS, 0, "", 0, b"");
        ids.availableServiceIds = services.iter().map(|s| s.as_str().into()).collect();
        let mut out = Vec::new();
        match encode_frame(&ids, &mut out) {
            Ok(()) => conn.send(Out::Bytes(out.into())),
            Err(e) => log::warn!("tunnel {}: SERVICE_IDS not sent: {e}", adm.tunnel_id),
        }
    }
    let drop_after = match registry.register(&adm.tunnel_id, adm.side, conn.clone()) {
        Ok(d) => d,
        Err(TunnelClosed) => {
            log::info!(
                "tunnel {}: closed before the {} could join",
                adm.tunnel_id,
                adm.side
            );
            let _ = ws.close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: CLOSE_REASON_TUNNEL_CLOSED.into(),
            }));
            let _ = ws.flush();
            return;
        }
    };
    if let Err(e) = ws.get_ref().tcp().set_nonblocking(true) {
        log::warn!(
            "tunnel {}: cannot make the socket non-blocking: {e}",
            adm.tunnel_id
        );
        registry.unregister(&adm.tunnel_id, adm.side, conn_id);
        return;
    }
    let f = &registry.faults;
    let mut relay = Relay {
        rng: f.rechunk_seed.map(|s| XorShift::new(s ^ conn_id)),
        rechunk_max: f.rechunk_max.clamp(1, MAX_WEBSOCKET_FRAME),
        throttle: f.bandwidth.map(Throttle::new),
        ws,
        registry: registry.clone(),
        tunnel_id: adm.tunnel_id.clone(),
        side: adm.side,
        conn,
        rx,
        waker,
        decoder: FrameDecoder::new(MAX_PAYLOAD_SIZE),
        outq: VecDeque::new(),
        write_blocked: false,
        pongs_owed: 0,
        drop_after,
        bytes_in: 0,
        bytes_out: 0,
        relayed: 0,
        peer: None,
        mode: Mode::Normal,
        known: Vec::new(),
    };
    let end = relay.run_loop();
    let how = match &end {
        End::ClientClosed(r) => format!("client closed ({r})"),
        End::Violation(v) => {
            log::warn!(
                "tunnel {}: {} channel-id {channel_id} broke a protocol rule: {}",
                adm.tunnel_id,
                adm.side,
                v.reason
            );
            format!("protocol violation, closed with {}: {}", v.code, v.reason)
        }
        End::Closed { code, reason } => format!("closed by the service with {code}: {reason}"),
        End::Silenced(why) => format!("closed while silenced ({why}), without a close frame"),
        End::Dropped(why) => format!("dropped ({why})"),
        End::Error(e) => format!("connection error: {e}"),
        End::Gone => "detached".to_string(),
    };
    registry.unregister(&adm.tunnel_id, adm.side, conn_id);
    log::info!(
        "tunnel {}: {} from {peer_addr} (channel-id {channel_id}) disconnected: {how}; {} bytes relayed to the peer, {} bytes received, {} bytes sent",
        adm.tunnel_id,
        adm.side,
        relay.relayed,
        relay.bytes_in,
        relay.bytes_out
    );
}

impl Relay {
    fn run_loop(&mut self) -> End {
        let fd = self.ws.get_ref().tcp().as_raw_fd();
        loop {
            let mut paused = self.peer_backlogged();
            if paused {
                // The cached peer may have been replaced or dropped with a
                // backlog nobody will drain: look up the current one.
                match self
                    .registry
                    .route(&self.tunnel_id, self.side, self.conn.id, Vec::new())
                {
                    Route::Peer(p) => self.peer = p,
                    // No events, no violation.
                    Route::Gone | Route::Violation(_) => self.peer = None,
                }
                paused = self.peer_backlogged();
            }
            paused |= self.own_backlogged();
            // Silenced or told to stop reading: the socket is not read.
            paused |= self.mode != Mode::Normal;
            let mut more = false;
            if !paused {
                match self.read_burst() {
                    Ok(m) => more = m,
                    Err(end) => return self.finish(end),
                }
            }
            self.waker.drain();
            loop {
                match self.rx.try_recv() {
                    Ok(Out::Bytes(b)) => self.outq.push_back(Item::Bytes(b, 0)),
                    Ok(Out::Text(t)) => self.outq.push_back(Item::Text(t)),
                    Ok(Out::Close { code, reason }) if self.mode == Mode::Silenced => {
                        return self.finish(End::Silenced(format!("{code}: {reason}")));
                    }
                    Ok(Out::Close { code, reason }) => {
                        return self.finish(End::Closed { code, reason });
                    }
                    Ok(Out::Drop) => return self.finish(End::Dropped("dropped on request")),
                    Ok(Out::Silence(ack)) => {
                        log::info!("tunnel {}: {} silenced", self.tunnel_id, self.side);
                        self.mode = Mode::Silenced;
                        let _ = ack.send(());
                    }
                    Ok(Out::StopReading { ping_interval, ack }) => {
                        log::info!(
                            "tunnel {}: {} no longer read (a ping every {ping_interval:?})",
                            self.tunnel_id,
                            self.side
                        );
                        if self.mode != Mode::Silenced {
                            self.mode = Mode::StopReading {
                                interval: ping_interval,
                                next: Instant::now() + ping_interval,
                            };
                        }
                        let _ = ack.send(());
                    }
                    Err(TryRecvError::Empty) | Err(TryRecvError::Disconnected) => break,
                }
            }
            let mut wait = MAX_POLL;
            if self.mode == Mode::Silenced {
                // Nothing goes out: queued bytes wait (and, past the
                // limit, pause the peer), the socket is not polled.
            } else {
                match self.write_out() {
                    Ok(Some(d)) => wait = wait.min(d),
                    Ok(None) => {}
                    Err(end) => return self.finish(end),
                }
                match self.ping_due() {
                    Ok(Some(d)) => wait = wait.min(d),
                    Ok(None) => {}
                    Err(end) => return self.finish(end),
                }
            }
            if more {
                wait = Duration::ZERO;
            }
            if paused && self.mode == Mode::Normal {
                wait = wait.min(Duration::from_millis(10));
            }
            let mut events = 0;
            if !paused {
                events |= libc::POLLIN;
            }
            if self.write_blocked && self.mode != Mode::Silenced {
                events |= libc::POLLOUT;
            }
            let mut fds = [
                libc::pollfd {
                    // A silenced socket is not watched at all: its hang-up
                    // would wake the loop again and again.
                    fd: if self.mode == Mode::Silenced { -1 } else { fd },
                    events,
                    revents: 0,
                },
                libc::pollfd {
                    fd: self.waker.fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            let ms = wait.as_millis().min(i32::MAX as u128) as libc::c_int;
            // A zero timeout with nothing pending would spin; one ms minimum
            // only when we are waiting for time, not for readiness.
            // SAFETY: `fds` is a valid array of two pollfd for the call's duration.
            unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) };
            if paused && fds[0].revents & (libc::POLLHUP | libc::POLLERR) != 0 {
                // Not reading, so no end of stream would be seen, and poll
                // would return at once again and again: a connection reset
                // or shut down both ways (POLLHUP) ends here.
                return self.finish(End::ClientClosed("connection lost while not read".into()));
            }
        }
    }

    /// Sends the ping of `LocalTest.StopReading` when due; returns the time
    /// to the next one.
    fn ping_due(&mut self) -> Result<Option<Duration>, End> {
        let Mode::StopReading { interval, next } = self.mode else {
            return Ok(None);
        };
        let now = Instant::now();
        if now < next {
            return Ok(Some(next - now));
        }
        if !self.write_blocked {
            match self.ws.write(WsMessage::Ping(Default::default())) {
                Ok(()) => {}
                Err(e) if is_would_block(&e) => self.write_blocked = true,
                Err(e) => return Err(End::Error(e.to_string())),
            }
            if !self.write_blocked {
                match self.ws.flush() {
                    Ok(()) => {}
                    Err(e) if is_would_block(&e) => self.write_blocked = true,
                    Err(e) => return Err(End::Error(e.to_string())),
                }
            }
        }
        self.mode = Mode::StopReading {
            interval,
            next: now + interval,
        };
        Ok(Some(interval))
    }

    /// Whether the peer has more than PAUSE_ABOVE bytes waiting.
    fn peer_backlogged(&self) -> bool {
        self.peer
            .as_ref()
            .is_some_and(|p| p.queued.load(Ordering::Acquire) > PAUSE_ABOVE)
    }

    /// Whether this client has more than PAUSE_ABOVE bytes waiting for it,
    /// or owes more than PONGS_PAUSE_ABOVE bytes of pongs: a client that
    /// does not read is not read.
    fn own_backlogged(&self) -> bool {
        self.conn.queued.load(Ordering::Acquire) > PAUSE_ABOVE
            || self.pongs_owed > PONGS_PAUSE_ABOVE
    }

    /// Flushes tungstenite's buffer (queued pongs included) to the socket;
    /// `Ok(false)` when the socket would block.
    fn flush(&mut self) -> Result<bool, End> {
        match self.ws.flush() {
            Ok(()) => {
                self.pongs_owed = 0;
                Ok(true)
            }
            Err(e) if is_would_block(&e) => Ok(false),
            Err(e) => Err(write_error(e)),
        }
    }

    /// Reads up to READ_BURST messages; `Ok(true)` when more may be waiting.
    fn read_burst(&mut self) -> Result<bool, End> {
        for _ in 0..READ_BURST {
            match self.ws.read() {
                Ok(WsMessage::Binary(data)) => {
                    self.bytes_in += data.len() as u64;
                    log::debug!(
                        "tunnel {}: {} sent a binary message of {} bytes",
                        self.tunnel_id,
                        self.side,
                        data.len()
                    );
                    self.relay_in(&data)?;
                    self.check_drop()?;
                }
                Ok(WsMessage::Text(t)) => {
                    return Err(End::Violation(Violation {
                        code: CLOSE_UNSUPPORTED_DATA,
                        reason: format!(
                            "text frame of {} bytes: only binary frames carry tunnel data",
                            t.len()
                        ),
                    }))
                }
                Ok(WsMessage::Ping(p)) => {
                    // Its pong (payload and a 2-byte header) is owed until
                    // a flush gets it out.
                    self.pongs_owed += p.len() + 2;
                    log::debug!("tunnel {}: ping from the {}", self.tunnel_id, self.side);
                    if self.own_backlogged() {
                        return Ok(false);
                    }
                }
                Ok(WsMessage::Pong(_)) | Ok(WsMessage::Frame(_)) => {}
                Ok(WsMessage::Close(frame)) => {
                    let why = frame
                        .map(|f| format!("{}: {}", u16::from(f.code), f.reason))
                        .unwrap_or_else(|| "no code".into());
                    return Err(End::ClientClosed(why));
                }
                Err(e) if is_would_block(&e) => return Ok(false),
                Err(WsError::Capacity(e)) => {
                    return Err(End::Violation(Violation {
                        code: CLOSE_TOO_BIG,
                        reason: format!("{e} (limit {MAX_WEBSOCKET_FRAME} bytes)"),
                    }))
                }
                Err(WsError::Protocol(e)) => {
                    return Err(End::Violation(Violation {
                        code: CLOSE_POLICY_VIOLATION,
                        reason: format!("WebSocket protocol error: {e}"),
                    }))
                }
                Err(WsError::ConnectionClosed) | Err(WsError::AlreadyClosed) => {
                    return Err(End::ClientClosed("connection closed".into()))
                }
                Err(e) => return Err(End::Error(e.to_string())),
            }
        }
        Ok(true)
    }

    fn relay_in(&mut self, data: &[u8]) -> Result<(), End> {
        let services = match self.registry.services(&self.tunnel_id) {
            Some(s) => s,
            None => return Err(End::Gone),
        };
        let (frames, events) = take_frames(
            &mut self.decoder,
            data,
            self.side,
            &services,
            &self.known,
            &self.registry.pool,
        )
        .map_err(End::Violation)?;
        let uses: Vec<String> = events
            .iter()
            .filter_map(|e| match e {
                StreamEvent::Uses { service, .. } => Some(service.clone()),
                _ => None,
            })
            .collect();
        match self
            .registry
            .route(&self.tunnel_id, self.side, self.conn.id, events)
        {
            Route::Violation(reason) => return Err(End::Violation(Violation::policy(reason))),
            Route::Gone => {
                // Replaced, rotated or closed: the Close is in our queue.
                self.peer = None;
            }
            Route::Peer(Some(peer)) => {
                if !frames.is_empty() {
                    self.relayed += frames.len() as u64;
                    peer.send(Out::Bytes(frames));
                }
                self.peer = Some(peer);
            }
            Route::Peer(None) => {
                self.peer = None;
                if !frames.is_empty() {
                    log::debug!(
                        "tunnel {}: {} bytes from the {} dropped: no {} connected",
                        self.tunnel_id,
                        frames.len(),
                        self.side,
                        self.side.peer()
                    );
                }
                // As the real service: with no peer, nothing is said back
                // (a stream started now is reset toward the source when a
                // destination attaches, see Registry::register).
            }
        }
        for service in uses {
            if !self.known.contains(&service) {
                self.known.push(service);
            }
        }
        Ok(())
    }

    fn check_drop(&self) -> Result<(), End> {
        match self.drop_after {
            Some(n) if self.bytes_in + self.bytes_out >= n => {
                Err(End::Dropped("--drop-after-bytes"))
            }
            _ => Ok(()),
        }
    }

    /// Writes queued items; returns how long the throttle wants to wait.
    fn write_out(&mut self) -> Result<Option<Duration>, End> {
        // What is buffered goes first (pongs queued by reads too), so a
        // message is written only into an empty buffer: it always fits
        // MAX_WRITE_BUFFER, and what waits for a client that does not
        // read is bounded.
        self.write_blocked = !self.flush()?;
        if self.write_blocked {
            return Ok(None);
        }
        while !self.write_blocked {
            if let Some(t) = &self.throttle {
                if let Some(d) = t.delay() {
                    return Ok(Some(d));
                }
            }
            let Some(msg) = self.next_message() else {
                break;
            };
            let n = match &msg {
                WsMessage::Binary(b) => b.len(),
                WsMessage::Text(t) => t.len(),
                _ => 0,
            };
            log::debug!(
                "tunnel {}: sending {n} bytes to the {}",
                self.tunnel_id,
                self.side
            );
            match self.ws.write(msg) {
                Ok(()) => {}
                Err(e) if is_would_block(&e) => self.write_blocked = true,
                Err(e) => return Err(write_error(e)),
            }
            self.bytes_out += n as u64;
            if let Some(t) = &mut self.throttle {
                t.record(n);
            }
            if !self.write_blocked {
                self.write_blocked = !self.flush()?;
            }
            if self.drop_after.is_some() {
                self.check_drop()?;
            }
        }
        Ok(None)
    }

    /// The next WebSocket message from the queue: a text item, or queued
    /// bytes coalesced up to the frame limit (or a re-chunked size).
    fn next_message(&mut self) -> Option<WsMessage> {
        if let Some(Item::Text(_)) = self.outq.front() {
            if let Some(Item::Text(t)) = self.outq.pop_front() {
                return Some(WsMessage::Text(t.into()));
            }
        }
        let mut limit = MAX_WEBSOCKET_FRAME;
        if let Some(rng) = &mut self.rng {
            limit = rng.size(self.rechunk_max);
        }
        if let Some(t) = &self.throttle {
            limit = limit.min(t.chunk());
        }
        if let Some(n) = self.drop_after {
            let left = n.saturating_sub(self.bytes_in + self.bytes_out);
            limit = limit.min(usize::try_from(left).unwrap_or(usize::MAX).max(1));
        }
        // A large item (or what fits of it) goes as it is: no copy.
        if let Some(Item::Bytes(b, off)) = self.outq.front_mut() {
            let left = b.len() - *off;
            if left >= SEND_AS_IS.min(limit) {
                let take = left.min(limit);
                let part = b.slice(*off..*off + take);
                *off += take;
                if *off == b.len() {
                    self.outq.pop_front();
                }
                self.conn.queued.fetch_sub(take, Ordering::AcqRel);
                return Some(WsMessage::Binary(part));
            }
        }
        // Small items, coalesced up to a large one or the limit.
        let mut buf: Vec<u8> = Vec::new();
        while buf.len() < limit {
            let Some(Item::Bytes(b, off)) = self.outq.front_mut() else {
                break;
            };
            let left = b.len() - *off;
            if left >= SEND_AS_IS && !buf.is_empty() {
                break;
            }
            let take = left.min(limit - buf.len());
            buf.extend_from_slice(&b[*off..*off + take]);
            *off += take;
            if *off == b.len() {
                self.outq.pop_front();
            }
        }
        if buf.is_empty() {
            return None;
        }
        self.conn.queued.fetch_sub(buf.len(), Ordering::AcqRel);
        Some(WsMessage::Binary(buf.into()))
    }

    /// Ends the connection as `end` says; returns it for the log.
    fn finish(&mut self, end: End) -> End {
        let close = match &end {
            End::Violation(v) => Some((v.code, v.reason.clone())),
            End::Closed { code, reason } => Some((*code, reason.clone())),
            End::ClientClosed(_) => None,
            End::Dropped(_) | End::Silenced(_) => {
                let _ = self.ws.get_ref().tcp().shutdown(std::net::Shutdown::Both);
                return end;
            }
            End::Error(_) | End::Gone => None,
        };
        let tcp = self.ws.get_ref().tcp();
        let _ = tcp.set_nonblocking(false);
        let _ = tcp.set_read_timeout(Some(CLOSE_TIMEOUT));
        let _ = tcp.set_write_timeout(Some(CLOSE_TIMEOUT));
        if let Some((code, reason)) = close {
            let _ = self.ws.flush();
            let _ = self.ws.close(Some(CloseFrame {
                code: CloseCode::from(code),
                reason: reason.into(),
            }));
        }
        // Finish the close handshake (send our reply or wait for theirs).
        let deadline = Instant::now() + CLOSE_TIMEOUT;
        while Instant::now() < deadline {
            match self.ws.flush() {
                Err(WsError::ConnectionClosed) | Err(WsError::AlreadyClosed) => break,
                Err(e) if !is_would_block(&e) => break,
                _ => {}
            }
            match self.ws.read() {
                Ok(_) => {}
                Err(e) if is_would_block(&e) => {}
                Err(_) => break,
            }
        }
        // Half-close, then discard what the client still sends, so unread
        // bytes do not turn our close into a reset that loses the close frame.
        let _ = self.ws.get_ref().tcp().shutdown(std::net::Shutdown::Write);
        let mut buf = [0u8; 16 * 1024];
        let mut left = 4usize << 20;
        while Instant::now() < deadline && left > 0 {
            match std::io::Read::read(self.ws.get_mut(), &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
        end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(m: &localproxy::frame::Message<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        encode_frame(m, &mut out).expect("encodes");
        out
    }

    fn check(f: &[u8], side: Side, svcs: &[String]) -> Result<Option<StreamEvent>, Violation> {
        let d = localproxy::frame::decode_message(&f[2..], MAX_PAYLOAD_SIZE)?;
        validate(f, d, side, svcs, &[])
    }

    #[test]
    fn rules() {
        let svcs = vec!["SSH1".to_string()];
        let ok = frame(&message(MessageType::STREAM_START, 1, "SSH1", 1, b""));
        assert_eq!(
            check(&ok, Side::Source, &svcs),
            Ok(Some(StreamEvent::Start {
                service: "SSH1".into(),
                stream: 1
            }))
        );
        assert!(check(&ok, Side::Destination, &svcs).is_err());
        let zero = frame(&message(MessageType::DATA, 0, "SSH1", 1, b"x"));
        assert!(check(&zero, Side::Source, &svcs)
            .expect_err("0")
            .reason
            .contains("stream id 0"));
        let unknown = frame(&message(MessageType::DATA, 1, "WEB", 1, b"x"));
        assert!(check(&unknown, Side::Source, &svcs).is_err());
        let ids = frame(&message(MessageType::SERVICE_IDS, 1, "", 0, b""));
        assert!(check(&ids, Side::Source, &svcs).is_err());
        let reset = frame(&message(MessageType::SESSION_RESET, 1, "", 0, b""));
        assert!(check(&reset, Side::Destination, &svcs).is_err());
        // DATA stream 1 + unknown field 9 (varint).
        let extra = [0, 6, 0x08, 1, 0x10, 1, 0x48, 1];
        assert!(check(&extra, Side::Source, &svcs)
            .expect_err("extra")
            .reason
            .contains("unknown field 9"));
        // Ignorable messages: type 0, unknown fields and wrong wire types
        // are refused; a valid unknown type passes.
        let type0 = [0, 6, 0x08, 0, 0x10, 1, 0x18, 1];
        assert!(check(&type0, Side::Source, &svcs)
            .expect_err("type 0")
            .reason
            .contains("type 0"));
        let no_type = [0, 4, 0x10, 1, 0x18, 1];
        assert!(check(&no_type, Side::Source, &svcs).is_err());
        let extra_ign = [0, 8, 0x08, 42, 0x10, 1, 0x18, 1, 0x48, 1];
        assert!(check(&extra_ign, Side::Source, &svcs)
            .expect_err("extra")
            .reason
            .contains("unknown field 9"));
        // Field 2 (stream id) as length-delimited.
        let wire_ign = [0, 7, 0x08, 42, 0x18, 1, 0x12, 1, 0x61];
        assert!(check(&wire_ign, Side::Source, &svcs)
            .expect_err("wire type")
            .reason
            .contains("field 2 has wire type 2"));
        let ok_ign = [0, 6, 0x08, 42, 0x10, 1, 0x18, 1];
        assert_eq!(check(&ok_ign, Side::Source, &svcs), Ok(None));
        let v1 = frame(&message(MessageType::DATA, 1, "", 0, b"x"));
        assert_eq!(check(&v1, Side::Destination, &svcs), Ok(None));
    }

    #[test]
    fn a_service_id_new_to_the_connection_is_reported_once_known_it_is_not() {
        let svcs = vec!["A".to_string(), "B".to_string()];
        let data = frame(&message(MessageType::DATA, 1, "B", 1, b"x"));
        let d = localproxy::frame::decode_message(&data[2..], MAX_PAYLOAD_SIZE).expect("decodes");
        let got = validate(&data, d, Side::Destination, &svcs, &svcs[..1]);
        assert_eq!(
            got,
            Ok(Some(StreamEvent::Uses {
                service: "B".into(),
                what: MessageType::DATA
            }))
        );
        let d = localproxy::frame::decode_message(&data[2..], MAX_PAYLOAD_SIZE).expect("decodes");
        assert_eq!(
            validate(&data, d, Side::Destination, &svcs, &svcs),
            Ok(None)
        );
    }

    #[test]
    fn frames_split_across_messages() {
        let svcs = vec!["A".to_string()];
        let mut bytes = frame(&message(MessageType::DATA, 1, "A", 1, b"hello"));
        bytes.extend(frame(&message(MessageType::STREAM_RESET, 1, "A", 0, b"")));
        let pool = BufferPool::new(1, 1000);
        let mut dec = FrameDecoder::default();
        // "A" is known to this connection: only the reset is an event.
        let (a, ev) =
            take_frames(&mut dec, &bytes[..5], Side::Source, &svcs, &svcs, &pool).expect("ok");
        assert!(a.is_empty() && ev.is_empty());
        let (b, ev) =
            take_frames(&mut dec, &bytes[5..], Side::Source, &svcs, &svcs, &pool).expect("ok");
        assert_eq!(b, bytes);
        assert_eq!(ev.len(), 1);
        assert_eq!(dec.pending(), 0);
    }

    #[test]
    fn large_messages_are_copied_into_pooled_buffers() {
        let svcs = vec!["A".to_string()];
        let pool = BufferPool::new(1, 1000);
        let msg = frame(&message(MessageType::DATA, 1, "A", 1, &[5u8; 900]));
        let mut dec = FrameDecoder::default();
        let (out, _) = take_frames(&mut dec, &msg, Side::Source, &svcs, &[], &pool).expect("ok");
        assert_eq!(out, msg);
        let at = out.as_ptr();
        drop(out);
        // Sent and dropped: its buffer is the next one handed out.
        let again = pool.take_empty();
        assert_eq!(again.as_ptr(), at);
    }
}
