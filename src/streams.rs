//! Stream and connection bookkeeping of one tunnel, without sockets.
//!
//! A service (one mapping) has at most one active stream; a stream carries
//! one TCP connection (V1, V2) or many (V3), each known by a connection id.
//! [`Table`] decides which ids a new connection gets, which incoming message
//! is stale, and which connections a reset closes. It is generic over the
//! per-connection handle `C` so these rules are tested without sockets.
//!
//! Every connection also gets a serial number that never repeats in the
//! process, carried in its [`ConnKey`]: a late event from a connection of an
//! earlier tunnel connection (whose peer may reuse stream and connection ids)
//! never touches a newer connection with the same ids.

use std::collections::BTreeMap;

use crate::config::PeerVersion;
use crate::frame::{encode_frame, message, MessageType};

/// Index of a service in the table (the order of the mappings).
pub type ServiceIdx = usize;

/// Identifies one local connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnKey {
    pub service: ServiceIdx,
    pub stream_id: i32,
    /// Internal id; 1 for the single connection of V1/V2 streams.
    pub conn_id: u32,
    /// Unique for the life of the table.
    pub serial: u64,
}

/// The ids a message about one connection carries on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireIds {
    pub stream_id: i32,
    /// Empty for V1 peers.
    pub service_id: String,
    /// 0 (absent) for V1 and V2 peers.
    pub connection_id: u32,
    /// The protocol generation this stream speaks.
    pub version: PeerVersion,
}

impl WireIds {
    /// A message of `kind` without payload (a start or a reset) for these
    /// ids, framed.
    pub fn frame(&self, kind: MessageType) -> Vec<u8> {
        let msg = message(
            kind,
            self.stream_id,
            &self.service_id,
            self.connection_id,
            b"",
        );
        let mut out = Vec::with_capacity(32 + self.service_id.len());
        // Cannot fail: without payload the only variable part is the service
        // id, which the service limits to 128 characters, far below the
        // 65535-byte frame limit; on a (theoretical) failure nothing is sent.
        if let Err(e) = encode_frame(&msg, &mut out) {
            log::error!("cannot frame {kind:?}: {e}");
            out.clear();
        }
        out
    }

    /// The reset that ends this connection: CONNECTION_RESET for V3 streams,
    /// STREAM_RESET (the stream ends with its only connection) otherwise.
    pub fn reset_frame(&self) -> Vec<u8> {
        if self.version == PeerVersion::V3 {
            self.frame(MessageType::CONNECTION_RESET)
        } else {
            self.frame(MessageType::STREAM_RESET)
        }
    }

    /// The same stream without a connection id, for a STREAM_RESET.
    pub fn whole_stream(&self) -> WireIds {
        WireIds {
            connection_id: 0,
            ..self.clone()
        }
    }
}

/// What the source must send to open a local connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opening {
    /// First connection of a new stream.
    StreamStart,
    /// Another connection on the service's current V3 stream.
    ConnectionStart,
}

impl Opening {
    /// The message type that opens the connection.
    pub fn message_type(self) -> MessageType {
        match self {
            Opening::StreamStart => MessageType::STREAM_START,
            Opening::ConnectionStart => MessageType::CONNECTION_START,
        }
    }
}

/// Why a local connection could not be opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// V1/V2 peers carry one connection per service at a time.
    Busy {
        service: String,
        version: PeerVersion,
    },
}

/// What a locally closed connection must send to the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClosingMessage {
    /// V3: close this one connection.
    ConnectionReset(WireIds),
    /// V1/V2: the stream ends with its only connection.
    StreamReset(WireIds),
}

impl ClosingMessage {
    /// The framed message.
    pub fn frame(&self) -> Vec<u8> {
        match self {
            ClosingMessage::ConnectionReset(ids) => ids.frame(MessageType::CONNECTION_RESET),
            ClosingMessage::StreamReset(ids) => ids.frame(MessageType::STREAM_RESET),
        }
    }
}

/// A CONNECTION_START for a connection id that is already open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duplicate<C>(pub C);

#[derive(Debug)]
struct Entry<C> {
    serial: u64,
    handle: C,
    /// Something came from the peer for this connection.
    answered: bool,
}

impl<C> Entry<C> {
    fn new(serial: u64, handle: C) -> Self {
        Entry {
            serial,
            handle,
            answered: false,
        }
    }
}

#[derive(Debug)]
struct Stream<C> {
    id: i32,
    /// The service id as the peer writes it (empty for V1 peers).
    wire_service_id: String,
    version: PeerVersion,
    conns: BTreeMap<u32, Entry<C>>,
    next_conn_id: u32,
    /// Something came from the peer for this stream (source side: the
    /// destination knows the stream).
    answered: bool,
}

impl<C> Stream<C> {
    fn ids(&self, conn_id: u32) -> WireIds {
        WireIds {
            stream_id: self.id,
            service_id: self.wire_service_id.clone(),
            connection_id: if self.version == PeerVersion::V3 {
                conn_id
            } else {
                0
            },
            version: self.version,
        }
    }

    fn into_handles(self) -> Vec<C> {
        self.conns.into_values().map(|e| e.handle).collect()
    }
}

#[derive(Debug)]
struct Service<C> {
    /// Configured id; `None` for the single unnamed (V1) mapping.
    name: Option<String>,
    stream: Option<Stream<C>>,
}

/// Where this process starts numbering the streams it opens: a point
/// picked at random in the lower quarter of the id space (then counting up,
/// over 1.6 billion ids before a wrap). A proxy restarted into the same
/// tunnel (`--client-token-file`) must not reuse the ids of the process
/// before it: DATA of that process's streams may still be on its way, and
/// would be handed to the new connection with the same id.
fn first_stream_id() -> i32 {
    // Unit tests read ids from 1.
    if cfg!(test) {
        1
    } else {
        random_first_stream_id()
    }
}

fn random_first_stream_id() -> i32 {
    use std::hash::{BuildHasher, RandomState};
    // RandomState's keys come from the OS's random source; the clock and
    // pid only add to them.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let h = RandomState::new().hash_one((now, std::process::id()));
    // In 1..=2^29: fits an i32 with room to count.
    (h % (1 << 29)) as i32 + 1
}

/// The streams and connections of a tunnel.
#[derive(Debug)]
pub struct Table<C> {
    services: Vec<Service<C>>,
    next_stream_id: i32,
    next_serial: u64,
}

impl<C> Table<C> {
    /// A table for the services in mapping order.
    pub fn new(names: Vec<Option<String>>) -> Self {
        Table {
            services: names
                .into_iter()
                .map(|name| Service { name, stream: None })
                .collect(),
            next_stream_id: first_stream_id(),
            next_serial: 1,
        }
    }

    /// Number of services.
    pub fn service_count(&self) -> usize {
        self.services.len()
    }

    /// The configured name of a service (`None` for the unnamed mapping).
    pub fn service_name(&self, idx: ServiceIdx) -> Option<&str> {
        self.services.get(idx).and_then(|s| s.name.as_deref())
    }

    /// A readable label for logs.
    pub fn label(&self, idx: ServiceIdx) -> String {
        match self.service_name(idx) {
            Some(n) => n.to_string(),
            None => "(default)".to_string(),
        }
    }

    /// The service an incoming message is for: by its service id, or, for
    /// messages without one (V1), the only service or the one whose current
    /// stream has `stream_id`.
    pub fn find_service(&self, service_id: &str, stream_id: i32) -> Option<ServiceIdx> {
        if !service_id.is_empty() {
            if let Some(i) = self
                .services
                .iter()
                .position(|s| s.name.as_deref() == Some(service_id))
            {
                return Some(i);
            }
            // A named message reaching a single unnamed mapping.
            return (self.services.len() == 1 && self.services[0].name.is_none()).then_some(0);
        }
        if self.services.len() == 1 {
            return Some(0);
        }
        self.services
            .iter()
            .position(|s| s.stream.as_ref().map(|st| st.id) == Some(stream_id))
    }

    fn fresh_stream_id(&mut self) -> i32 {
        let id = self.next_stream_id;
        // Stream ids never repeat in a tunnel's life; wrap past i32::MAX to 1.
        self.next_stream_id = if id == i32::MAX { 1 } else { id + 1 };
        id
    }

    fn fresh_serial(&mut self) -> u64 {
        let s = self.next_serial;
        self.next_serial += 1;
        s
    }

    /// Source: a local connection for `service` was accepted. `version` is
    /// the destination's protocol generation (`-y`, V3 by default).
    pub fn source_open(
        &mut self,
        service: ServiceIdx,
        version: PeerVersion,
        handle: C,
    ) -> Result<(ConnKey, WireIds, Opening), Refusal> {
        let serial = self.fresh_serial();
        let label = self.label(service);
        let svc = &mut self.services[service];
        if version == PeerVersion::V3 {
            if let Some(st) = svc.stream.as_mut() {
                let conn_id = st.next_conn_id;
                st.next_conn_id = st.next_conn_id.wrapping_add(1).max(1);
                st.conns.insert(conn_id, Entry::new(serial, handle));
                let key = ConnKey {
                    service,
                    stream_id: st.id,
                    conn_id,
                    serial,
                };
                return Ok((key, st.ids(conn_id), Opening::ConnectionStart));
            }
        } else if svc.stream.as_ref().is_some_and(|st| !st.conns.is_empty()) {
            return Err(Refusal::Busy {
                service: label,
                version,
            });
        }
        // V1 peers get no service id; an unnamed mapping never has one.
        let wire_service_id = match (&svc.name, version) {
            (Some(n), PeerVersion::V2 | PeerVersion::V3) => n.clone(),
            _ => String::new(),
        };
        let id = self.fresh_stream_id();
        let mut conns = BTreeMap::new();
        conns.insert(1, Entry::new(serial, handle));
        let st = Stream {
            id,
            wire_service_id,
            version,
            conns,
            next_conn_id: 2,
            answered: false,
        };
        let ids = st.ids(1);
        self.services[service].stream = Some(st);
        let key = ConnKey {
            service,
            stream_id: id,
            conn_id: 1,
            serial,
        };
        Ok((key, ids, Opening::StreamStart))
    }

    /// Whether `key` is a live connection (its serial still matches).
    pub fn contains(&self, key: &ConnKey) -> bool {
        self.services
            .get(key.service)
            .and_then(|svc| svc.stream.as_ref())
            .filter(|st| st.id == key.stream_id)
            .and_then(|st| st.conns.get(&key.conn_id))
            .is_some_and(|e| e.serial == key.serial)
    }

    /// The live stream and entry of `key`, if its serial still matches.
    fn entry_of(&mut self, key: &ConnKey) -> Option<(&mut Service<C>, u32)> {
        let svc = self.services.get_mut(key.service)?;
        let st = svc.stream.as_ref().filter(|st| st.id == key.stream_id)?;
        let e = st.conns.get(&key.conn_id)?;
        (e.serial == key.serial).then_some((svc, key.conn_id))
    }

    /// A local connection ended on its own. Returns its handle and what to
    /// tell the peer, or `None` when the tunnel side already closed it.
    pub fn local_closed(&mut self, key: &ConnKey) -> Option<(C, ClosingMessage)> {
        let (svc, conn_id) = self.entry_of(key)?;
        let st = svc.stream.as_mut()?;
        let handle = st.conns.remove(&conn_id)?.handle;
        let ids = st.ids(conn_id);
        if st.version == PeerVersion::V3 {
            Some((handle, ClosingMessage::ConnectionReset(ids)))
        } else {
            svc.stream = None;
            Some((handle, ClosingMessage::StreamReset(ids)))
        }
    }

    /// A new current stream for `service` without connections; the peer's
    /// generation follows its message: no connection id and no service id
    /// is V1, a service id alone V2, a connection id V3.
    fn new_stream(stream_id: i32, wire_service_id: &str, connection_id: u32) -> Stream<C> {
        let version = match (connection_id, wire_service_id.is_empty()) {
            (0, true) => PeerVersion::V1,
            (0, false) => PeerVersion::V2,
            _ => PeerVersion::V3,
        };
        Stream {
            id: stream_id,
            wire_service_id: wire_service_id.to_string(),
            version,
            conns: BTreeMap::new(),
            next_conn_id: connection_id.wrapping_add(1).max(1),
            answered: true,
        }
    }

    /// Makes `stream_id` the service's current stream, with no connection
    /// yet, and returns the connections of the stream it replaces.
    pub fn replace_stream(
        &mut self,
        service: ServiceIdx,
        stream_id: i32,
        wire_service_id: &str,
        connection_id: u32,
    ) -> Vec<C> {
        let st = Self::new_stream(stream_id, wire_service_id, connection_id);
        let old = self.services[service].stream.replace(st);
        old.map(Stream::into_handles).unwrap_or_default()
    }

    /// Destination: STREAM_START. Replaces the service's current stream (its
    /// connections are returned to be closed) and registers connection
    /// `connection_id` (0 = a V1/V2 peer). Returns the new connection's key.
    pub fn stream_start(
        &mut self,
        service: ServiceIdx,
        stream_id: i32,
        wire_service_id: &str,
        connection_id: u32,
        handle: C,
    ) -> (ConnKey, WireIds, Vec<C>) {
        let serial = self.fresh_serial();
        let conn_id = connection_id.max(1);
        let mut st = Self::new_stream(stream_id, wire_service_id, connection_id);
        st.conns.insert(conn_id, Entry::new(serial, handle));
        let ids = st.ids(conn_id);
        let old = self.services[service].stream.replace(st);
        let key = ConnKey {
            service,
            stream_id,
            conn_id,
            serial,
        };
        (key, ids, old.map(Stream::into_handles).unwrap_or_default())
    }

    /// Destination: CONNECTION_START (`connection_id` is not 0). The
    /// protocol checks stream ids on DATA and STREAM_RESET only, so a
    /// stream this side does not know (its STREAM_START may have been lost
    /// while this side was away) becomes the current one, replacing the
    /// previous stream (returned to be closed). An id already open is a
    /// [`Duplicate`].
    pub fn connection_start(
        &mut self,
        service: ServiceIdx,
        stream_id: i32,
        wire_service_id: &str,
        connection_id: u32,
        handle: C,
    ) -> Result<(ConnKey, WireIds, Vec<C>), Duplicate<C>> {
        let old = if self.is_current(service, stream_id) {
            Vec::new()
        } else {
            self.replace_stream(service, stream_id, wire_service_id, connection_id)
        };
        if let Some(st) = self.services[service].stream.as_mut() {
            // A CONNECTION_START means the peer speaks V3 even if its first
            // STREAM_START had no connection id.
            st.version = PeerVersion::V3;
        }
        let (key, ids) = self.add_connection(service, connection_id, handle)?;
        Ok((key, ids, old))
    }

    /// Adds connection `conn_id` to the service's current stream.
    fn add_connection(
        &mut self,
        service: ServiceIdx,
        conn_id: u32,
        handle: C,
    ) -> Result<(ConnKey, WireIds), Duplicate<C>> {
        let serial = self.fresh_serial();
        let Some(st) = self.services[service].stream.as_mut() else {
            return Err(Duplicate(handle));
        };
        if st.conns.contains_key(&conn_id) {
            return Err(Duplicate(handle));
        }
        st.conns.insert(conn_id, Entry::new(serial, handle));
        let key = ConnKey {
            service,
            stream_id: st.id,
            conn_id,
            serial,
        };
        Ok((key, st.ids(conn_id)))
    }

    /// Whether `stream_id` is the service's current stream.
    pub fn is_current(&self, service: ServiceIdx, stream_id: i32) -> bool {
        self.current(service, stream_id).is_some()
    }

    fn current(&self, service: ServiceIdx, stream_id: i32) -> Option<&Stream<C>> {
        self.services
            .get(service)?
            .stream
            .as_ref()
            .filter(|st| st.id == stream_id && stream_id != 0)
    }

    /// The connection a DATA message is for, if it is live; marks its
    /// stream as answered.
    pub fn route_data(
        &mut self,
        service: ServiceIdx,
        stream_id: i32,
        connection_id: u32,
    ) -> Option<(ConnKey, &C)> {
        let st = self
            .services
            .get_mut(service)?
            .stream
            .as_mut()
            .filter(|st| st.id == stream_id && stream_id != 0)?;
        st.answered = true;
        let conn_id = connection_id.max(1);
        let e = st.conns.get_mut(&conn_id)?;
        e.answered = true;
        let key = ConnKey {
            service,
            stream_id,
            conn_id,
            serial: e.serial,
        };
        Some((key, &e.handle))
    }

    /// Whether connection `connection_id` of the current stream `stream_id`
    /// is open.
    pub fn has_connection(&self, service: ServiceIdx, stream_id: i32, connection_id: u32) -> bool {
        self.current(service, stream_id)
            .is_some_and(|st| st.conns.contains_key(&connection_id.max(1)))
    }

    /// STREAM_RESET: closes every connection of the stream if it is current;
    /// also says which generation the stream spoke.
    pub fn stream_reset(
        &mut self,
        service: ServiceIdx,
        stream_id: i32,
    ) -> Option<(Vec<C>, PeerVersion)> {
        self.current(service, stream_id)?;
        let st = self.services[service].stream.take()?;
        let version = st.version;
        Some((st.into_handles(), version))
    }

    /// CONNECTION_RESET: closes one connection of the current stream. The
    /// stream itself stays open for later CONNECTION_STARTs (V3).
    pub fn connection_reset(
        &mut self,
        service: ServiceIdx,
        stream_id: i32,
        connection_id: u32,
    ) -> Option<C> {
        self.current(service, stream_id)?;
        let svc = &mut self.services[service];
        let st = svc.stream.as_mut()?;
        st.answered = true;
        let handle = st.conns.remove(&connection_id.max(1))?.handle;
        if st.version != PeerVersion::V3 {
            svc.stream = None;
        }
        Some(handle)
    }

    /// Removes a connection whatever its state (a failed destination connect,
    /// a stalled local reader). Returns its wire ids when it was still live.
    pub fn remove(&mut self, key: &ConnKey) -> Option<(C, WireIds)> {
        let (svc, conn_id) = self.entry_of(key)?;
        let st = svc.stream.as_mut()?;
        let handle = st.conns.remove(&conn_id)?.handle;
        let ids = st.ids(conn_id);
        if st.version != PeerVersion::V3 {
            svc.stream = None;
        }
        Some((handle, ids))
    }

    /// Source: when connection `key` has still heard nothing from the
    /// peer, ends it: returns the connections to close and the ids of the
    /// reset to send. When it is the last connection of a stream that never
    /// heard anything, the whole stream ends (its ids have no connection
    /// id), so that the next connection starts a fresh one; other
    /// connections of the stream may be young and still waiting for their
    /// answer, so they are left alone. `None` when the connection was
    /// answered or is gone.
    pub fn remove_unanswered(&mut self, key: &ConnKey) -> Option<(Vec<C>, WireIds)> {
        let (svc, conn_id) = self.entry_of(key)?;
        let st = svc.stream.as_mut()?;
        if st.conns.get(&conn_id)?.answered {
            return None;
        }
        if st.version == PeerVersion::V3 && (st.answered || st.conns.len() > 1) {
            let handle = st.conns.remove(&conn_id)?.handle;
            return Some((vec![handle], st.ids(conn_id)));
        }
        let st = svc.stream.take()?;
        let ids = st.ids(0);
        Some((st.into_handles(), ids))
    }

    /// SESSION_RESET or tunnel lost: every stream ends. Stream ids keep
    /// counting so that none repeats.
    pub fn reset_all(&mut self) -> Vec<C> {
        let mut out = Vec::new();
        for svc in &mut self.services {
            if let Some(st) = svc.stream.take() {
                out.extend(st.into_handles());
            }
        }
        out
    }

    /// Number of live connections.
    pub fn connection_count(&self) -> usize {
        self.services
            .iter()
            .filter_map(|s| s.stream.as_ref())
            .map(|st| st.conns.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Table<&'static str> {
        Table::new(vec![Some("SSH1".into()), Some("WEB".into())])
    }

    fn data(
        t: &mut Table<&'static str>,
        svc: usize,
        stream: i32,
        conn: u32,
    ) -> Option<&'static str> {
        t.route_data(svc, stream, conn).map(|(_, h)| *h)
    }

    #[test]
    fn v3_source_opens_a_stream_then_connections_on_it() {
        let mut t = table();
        let (k1, ids1, op1) = t.source_open(0, PeerVersion::V3, "a").expect("opens");
        assert_eq!(op1, Opening::StreamStart);
        assert_eq!((ids1.stream_id, ids1.connection_id), (1, 1));
        assert_eq!(ids1.service_id, "SSH1");
        let (k2, ids2, op2) = t.source_open(0, PeerVersion::V3, "b").expect("opens");
        assert_eq!(op2, Opening::ConnectionStart);
        assert_eq!((ids2.stream_id, ids2.connection_id), (1, 2));
        assert_ne!(k1.serial, k2.serial);
        // Another service gets its own stream id.
        let (_, ids3, _) = t.source_open(1, PeerVersion::V3, "c").expect("opens");
        assert_eq!(ids3.stream_id, 2);
        assert_eq!(data(&mut t, 0, 1, 2), Some("b"));
        // Local close of one connection: CONNECTION_RESET, the stream stays.
        let (h, msg) = t.local_closed(&k1).expect("live");
        assert_eq!(h, "a");
        assert!(matches!(msg, ClosingMessage::ConnectionReset(ref i) if i.connection_id == 1));
        assert!(t.local_closed(&k1).is_none(), "closed once");
        let (_, ids4, op4) = t.source_open(0, PeerVersion::V3, "d").expect("opens");
        assert_eq!((op4, ids4.connection_id), (Opening::ConnectionStart, 3));
        assert_eq!(t.connection_count(), 3);
        assert!(t.local_closed(&k2).is_some());
    }

    #[test]
    fn v2_and_v1_sources_carry_one_connection_per_service() {
        for version in [PeerVersion::V1, PeerVersion::V2] {
            let mut t = table();
            let (k, ids, _) = t.source_open(0, version, "a").expect("opens");
            assert_eq!(ids.connection_id, 0, "no connection id for {version:?}");
            assert_eq!(ids.service_id.is_empty(), version == PeerVersion::V1);
            let refused = t.source_open(0, version, "b").expect_err("busy");
            assert!(matches!(refused, Refusal::Busy { .. }));
            // The first one still works.
            assert_eq!(data(&mut t, 0, k.stream_id, 0), Some("a"));
            let (_, msg) = t.local_closed(&k).expect("live");
            assert!(matches!(msg, ClosingMessage::StreamReset(_)));
            let (_, ids2, op) = t.source_open(0, version, "c").expect("free again");
            assert_eq!(op, Opening::StreamStart);
            assert_ne!(ids2.stream_id, ids.stream_id, "a new stream id");
        }
    }

    #[test]
    fn stale_stream_ids_are_dropped() {
        let mut t = table();
        let (_, _, old) = t.stream_start(0, 5, "SSH1", 1, "a");
        assert!(old.is_empty());
        assert!(data(&mut t, 0, 4, 1).is_none(), "stale stream");
        assert!(data(&mut t, 0, 0, 1).is_none(), "stream 0");
        assert!(t.stream_reset(0, 4).is_none(), "stale reset ignored");
        assert!(t.connection_reset(0, 4, 1).is_none());
        assert_eq!(data(&mut t, 0, 5, 1), Some("a"));
        // A new STREAM_START replaces the stream and returns the old connections.
        let (_, _, old) = t.stream_start(0, 6, "SSH1", 1, "b");
        assert_eq!(old, vec!["a"]);
        assert!(data(&mut t, 0, 5, 1).is_none());
    }

    #[test]
    fn destination_connections_and_resets() {
        let mut t = table();
        t.stream_start(1, 9, "WEB", 1, "a");
        let (k2, ids, old) = t.connection_start(1, 9, "WEB", 2, "b").expect("opens");
        assert_eq!(ids.connection_id, 2);
        assert!(old.is_empty());
        assert_eq!(
            t.connection_start(1, 9, "WEB", 2, "c").map(|_| ()),
            Err(Duplicate("c"))
        );
        assert_eq!(t.connection_reset(1, 9, 1), Some("a"));
        assert!(t.is_current(1, 9), "stream survives a connection reset");
        assert_eq!(t.remove(&k2).map(|(h, _)| h), Some("b"));
        let (k3, ..) = t.connection_start(1, 9, "WEB", 3, "e").expect("opens");
        assert!(t.has_connection(1, 9, 3));
        assert!(t.contains(&k3) && !t.contains(&k2));
        assert_eq!(t.stream_reset(1, 9), Some((vec!["e"], PeerVersion::V3)));
        assert!(!t.contains(&k3));
        assert!(!t.is_current(1, 9));
    }

    #[test]
    fn a_connection_start_for_an_unknown_stream_adopts_it() {
        // The STREAM_START of stream 8 was lost while this side was away:
        // the next CONNECTION_START makes 8 current instead of being dropped.
        let mut t = table();
        t.stream_start(0, 5, "SSH1", 1, "old");
        let (key, ids, old) = t.connection_start(0, 8, "SSH1", 2, "new").expect("adopts");
        assert_eq!(old, vec!["old"], "the replaced stream's connections close");
        assert_eq!(
            (key.stream_id, ids.connection_id, ids.version),
            (8, 2, PeerVersion::V3)
        );
        assert!(t.is_current(0, 8));
        assert_eq!(data(&mut t, 0, 8, 2), Some("new"));
        assert!(
            !t.has_connection(0, 8, 1),
            "connection 1 was never opened here"
        );
    }

    #[test]
    fn late_events_of_an_older_connection_do_not_touch_a_newer_one() {
        let mut t = table();
        let (old_key, _, _) = t.stream_start(0, 1, "SSH1", 1, "old");
        t.reset_all();
        // The peer reconnected and reuses stream 1, connection 1.
        let (new_key, _, _) = t.stream_start(0, 1, "SSH1", 1, "new");
        assert_eq!(
            (old_key.stream_id, old_key.conn_id),
            (new_key.stream_id, new_key.conn_id)
        );
        assert!(t.local_closed(&old_key).is_none());
        assert!(t.remove(&old_key).is_none());
        assert!(t.remove_unanswered(&old_key).is_none());
        assert_eq!(data(&mut t, 0, 1, 1), Some("new"));
    }

    #[test]
    fn an_unanswered_stream_can_be_given_up_once() {
        let mut t = table();
        let (k1, _, _) = t.source_open(0, PeerVersion::V3, "a").expect("opens");
        let (k2, _, _) = t.source_open(0, PeerVersion::V3, "b").expect("opens");
        // Another connection of the stream may still get its answer: only
        // this one ends.
        let (conns, ids) = t.remove_unanswered(&k1).expect("unanswered");
        assert_eq!(conns, vec!["a"]);
        assert_eq!((ids.stream_id, ids.connection_id), (1, 1));
        assert!(t.remove_unanswered(&k1).is_none());
        // The last one takes the stream with it.
        let (conns, ids) = t.remove_unanswered(&k2).expect("unanswered");
        assert_eq!(conns, vec!["b"]);
        assert_eq!((ids.stream_id, ids.connection_id), (1, 0));
        // The next connection starts a fresh stream.
        let (k3, _, op) = t.source_open(0, PeerVersion::V3, "c").expect("opens");
        assert_eq!((op, k3.stream_id), (Opening::StreamStart, 2));
        // Once the peer sent something for a connection it is answered.
        assert!(data(&mut t, 0, 2, 1).is_some());
        assert!(t.remove_unanswered(&k3).is_none());
        // A connection of an answered stream that heard nothing itself
        // (its CONNECTION_START was lost) ends alone.
        let (k4, _, _) = t.source_open(0, PeerVersion::V3, "d").expect("opens");
        let (conns, ids) = t.remove_unanswered(&k4).expect("unanswered");
        assert_eq!(conns, vec!["d"]);
        assert_eq!((ids.stream_id, ids.connection_id), (2, 2));
        assert!(t.is_current(0, 2), "the stream stays");
    }

    #[test]
    fn peer_format_follows_the_stream_start() {
        let mut t = Table::new(vec![None]);
        // A V1 peer: no service id, no connection id.
        let (_, ids, _) = t.stream_start(0, 3, "", 0, "a");
        assert_eq!((ids.version, ids.connection_id), (PeerVersion::V1, 0));
        assert_eq!(t.find_service("", 3), Some(0));
        assert_eq!(
            t.find_service("NAMED", 3),
            Some(0),
            "single unnamed mapping takes all"
        );
        // V1/V2 connection reset ends the stream.
        assert_eq!(t.connection_reset(0, 3, 0), Some("a"));
        assert!(!t.is_current(0, 3));
        let mut t = table();
        let (_, ids, _) = t.stream_start(0, 3, "SSH1", 0, "a");
        assert_eq!(ids.version, PeerVersion::V2);
        assert_eq!(t.find_service("WEB", 3), Some(1));
        assert_eq!(t.find_service("NOPE", 3), None);
        assert_eq!(t.find_service("", 3), Some(0), "by stream id");
        let single = Table::<()>::new(vec![Some("SSH1".into())]);
        assert_eq!(
            single.find_service("WEB", 1),
            None,
            "a named mapping is not a wildcard"
        );
    }

    #[test]
    fn a_process_starts_its_stream_ids_at_a_random_point() {
        let firsts: std::collections::BTreeSet<i32> =
            (0..8).map(|_| random_first_stream_id()).collect();
        assert!(firsts.len() > 1, "{firsts:?}");
        assert!(
            firsts.iter().all(|&id| (1..=1 << 29).contains(&id)),
            "{firsts:?}"
        );
    }

    #[test]
    fn session_reset_closes_everything_and_ids_do_not_repeat() {
        let mut t = table();
        t.source_open(0, PeerVersion::V3, "a").expect("opens");
        t.source_open(0, PeerVersion::V3, "b").expect("opens");
        t.source_open(1, PeerVersion::V3, "c").expect("opens");
        let mut all = t.reset_all();
        all.sort();
        assert_eq!(all, vec!["a", "b", "c"]);
        assert_eq!(t.connection_count(), 0);
        let (_, ids, op) = t.source_open(0, PeerVersion::V3, "d").expect("opens");
        assert_eq!((op, ids.stream_id), (Opening::StreamStart, 3));
    }

    #[test]
    fn reset_frames_follow_the_peer_generation() {
        use crate::frame::{decode_message, Decoded};
        let kind = |f: Vec<u8>| match decode_message(&f[2..], 1024) {
            Ok(Decoded::Message(m)) => (m.type_pb, m.streamId, m.connectionId),
            other => panic!("not a message: {other:?}"),
        };
        let mut ids = WireIds {
            stream_id: 4,
            service_id: "SSH1".into(),
            connection_id: 2,
            version: PeerVersion::V3,
        };
        assert_eq!(
            kind(ids.reset_frame()),
            (MessageType::CONNECTION_RESET, 4, 2)
        );
        assert_eq!(
            kind(ids.whole_stream().frame(MessageType::STREAM_RESET)),
            (MessageType::STREAM_RESET, 4, 0)
        );
        ids.version = PeerVersion::V2;
        ids.connection_id = 0;
        assert_eq!(kind(ids.reset_frame()), (MessageType::STREAM_RESET, 4, 0));
    }
}
