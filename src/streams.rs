//! Stream and connection bookkeeping of one tunnel, without sockets.
//!
//! A service (one mapping) has at most one active stream; a stream carries
//! one TCP connection (V1, V2) or many (V3), each known by a connection id.
//! [`Table`] decides which ids a new connection gets, which incoming message
//! is stale, and which connections a reset closes. It is generic over the
//! per-connection handle `C` so these rules are tested without sockets.

use std::collections::BTreeMap;

use crate::config::PeerVersion;

/// Index of a service in the table (the order of the mappings).
pub type ServiceIdx = usize;

/// Identifies one local connection on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConnKey {
    pub service: ServiceIdx,
    pub stream_id: i32,
    /// Internal id; 1 for the single connection of V1/V2 streams.
    pub conn_id: u32,
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

/// What the source must send to open a local connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opening {
    /// First connection of a new stream.
    StreamStart,
    /// Another connection on the service's current V3 stream.
    ConnectionStart,
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

#[derive(Debug)]
struct Stream<C> {
    id: i32,
    /// The service id as the peer writes it (empty for V1 peers).
    wire_service_id: String,
    version: PeerVersion,
    conns: BTreeMap<u32, C>,
    next_conn_id: u32,
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
}

#[derive(Debug)]
struct Service<C> {
    /// Configured id; `None` for the single unnamed (V1) mapping.
    name: Option<String>,
    stream: Option<Stream<C>>,
}

/// The streams and connections of a tunnel.
#[derive(Debug)]
pub struct Table<C> {
    services: Vec<Service<C>>,
    next_stream_id: i32,
}

impl<C> Table<C> {
    /// A table for the services in mapping order.
    pub fn new(names: Vec<Option<String>>) -> Self {
        Table {
            services: names
                .into_iter()
                .map(|name| Service { name, stream: None })
                .collect(),
            next_stream_id: 1,
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
            return (self.services.len() == 1).then_some(0);
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

    /// Source: a local connection for `service` was accepted. `version` is
    /// the destination's protocol generation (`-y`, V3 by default).
    pub fn source_open(
        &mut self,
        service: ServiceIdx,
        version: PeerVersion,
        handle: C,
    ) -> Result<(ConnKey, WireIds, Opening), Refusal> {
        // V1 peers get no service id; an unnamed mapping never has one.
        let wire_service_id = match (&self.services[service].name, version) {
            (Some(n), PeerVersion::V2 | PeerVersion::V3) => n.clone(),
            _ => String::new(),
        };
        if version == PeerVersion::V3 {
            if let Some(st) = self.services[service].stream.as_mut() {
                let conn_id = st.next_conn_id;
                st.next_conn_id = st.next_conn_id.wrapping_add(1).max(1);
                st.conns.insert(conn_id, handle);
                let key = ConnKey {
                    service,
                    stream_id: st.id,
                    conn_id,
                };
                return Ok((key, st.ids(conn_id), Opening::ConnectionStart));
            }
        } else if self.services[service]
            .stream
            .as_ref()
            .is_some_and(|st| !st.conns.is_empty())
        {
            return Err(Refusal::Busy {
                service: self.label(service),
                version,
            });
        }
        let id = self.fresh_stream_id();
        let mut conns = BTreeMap::new();
        conns.insert(1, handle);
        let st = Stream {
            id,
            wire_service_id,
            version,
            conns,
            next_conn_id: 2,
        };
        let ids = st.ids(1);
        self.services[service].stream = Some(st);
        let key = ConnKey {
            service,
            stream_id: id,
            conn_id: 1,
        };
        Ok((key, ids, Opening::StreamStart))
    }

    /// A local connection ended on its own. Returns its handle and what to
    /// tell the peer, or `None` when the tunnel side already closed it.
    pub fn local_closed(&mut self, key: &ConnKey) -> Option<(C, ClosingMessage)> {
        let svc = self.services.get_mut(key.service)?;
        let st = svc.stream.as_mut().filter(|st| st.id == key.stream_id)?;
        let handle = st.conns.remove(&key.conn_id)?;
        let ids = st.ids(key.conn_id);
        if st.version == PeerVersion::V3 {
            Some((handle, ClosingMessage::ConnectionReset(ids)))
        } else {
            svc.stream = None;
            Some((handle, ClosingMessage::StreamReset(ids)))
        }
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
        let version = match (connection_id, wire_service_id.is_empty()) {
            (0, true) => PeerVersion::V1,
            (0, false) => PeerVersion::V2,
            _ => PeerVersion::V3,
        };
        let conn_id = connection_id.max(1);
        let old = self.services[service]
            .stream
            .take()
            .map(|st| st.conns.into_values().collect())
            .unwrap_or_default();
        let mut conns = BTreeMap::new();
        conns.insert(conn_id, handle);
        let st = Stream {
            id: stream_id,
            wire_service_id: wire_service_id.to_string(),
            version,
            conns,
            next_conn_id: conn_id.wrapping_add(1).max(1),
        };
        let ids = st.ids(conn_id);
        self.services[service].stream = Some(st);
        let key = ConnKey {
            service,
            stream_id,
            conn_id,
        };
        (key, ids, old)
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

    /// Destination: CONNECTION_START on the current stream. `Err(true)` when
    /// the connection id is already open, `Err(false)` when the stream is stale.
    pub fn connection_start(
        &mut self,
        service: ServiceIdx,
        stream_id: i32,
        connection_id: u32,
        handle: C,
    ) -> Result<(ConnKey, WireIds), (bool, C)> {
        let Some(st) = self.services[service]
            .stream
            .as_mut()
            .filter(|st| st.id == stream_id && stream_id != 0)
        else {
            return Err((false, handle));
        };
        if connection_id == 0 || st.conns.contains_key(&connection_id) {
            return Err((true, handle));
        }
        st.conns.insert(connection_id, handle);
        // A CONNECTION_START means the peer speaks V3 even if its first
        // STREAM_START had no connection id.
        st.version = PeerVersion::V3;
        let key = ConnKey {
            service,
            stream_id,
            conn_id: connection_id,
        };
        Ok((key, st.ids(connection_id)))
    }

    /// The handle of the connection a DATA message is for, if it is live.
    pub fn data_target(
        &self,
        service: ServiceIdx,
        stream_id: i32,
        connection_id: u32,
    ) -> Option<&C> {
        self.current(service, stream_id)?
            .conns
            .get(&connection_id.max(1))
    }

    /// STREAM_RESET: closes every connection of the stream if it is current.
    pub fn stream_reset(&mut self, service: ServiceIdx, stream_id: i32) -> Option<Vec<C>> {
        self.current(service, stream_id)?;
        let st = self.services[service].stream.take()?;
        Some(st.conns.into_values().collect())
    }

    /// CONNECTION_RESET: closes one connection of the current stream. The
    /// stream itself stays open for later CONNECTION_STARTs.
    pub fn connection_reset(
        &mut self,
        service: ServiceIdx,
        stream_id: i32,
        connection_id: u32,
    ) -> Option<C> {
        self.current(service, stream_id)?;
        let svc = &mut self.services[service];
        let st = svc.stream.as_mut()?;
        let handle = st.conns.remove(&connection_id.max(1))?;
        if st.version != PeerVersion::V3 {
            svc.stream = None;
        }
        Some(handle)
    }

    /// Removes a connection whatever its state (a failed destination connect,
    /// a stalled local reader). Returns its wire ids when it was still live.
    pub fn remove(&mut self, key: &ConnKey) -> Option<(C, WireIds)> {
        let svc = self.services.get_mut(key.service)?;
        let st = svc.stream.as_mut().filter(|st| st.id == key.stream_id)?;
        let handle = st.conns.remove(&key.conn_id)?;
        let ids = st.ids(key.conn_id);
        Some((handle, ids))
    }

    /// SESSION_RESET or tunnel lost: every stream ends. Stream ids keep
    /// counting so that none repeats.
    pub fn reset_all(&mut self) -> Vec<C> {
        let mut out = Vec::new();
        for svc in &mut self.services {
            if let Some(st) = svc.stream.take() {
                out.extend(st.conns.into_values());
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
        // Another service gets its own stream id.
        let (_, ids3, _) = t.source_open(1, PeerVersion::V3, "c").expect("opens");
        assert_eq!(ids3.stream_id, 2);
        assert_eq!(t.data_target(0, 1, 2), Some(&"b"));
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
            assert_eq!(t.data_target(0, k.stream_id, 0), Some(&"a"));
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
        assert!(t.data_target(0, 4, 1).is_none(), "stale stream");
        assert!(t.data_target(0, 0, 1).is_none(), "stream 0");
        assert!(t.stream_reset(0, 4).is_none(), "stale reset ignored");
        assert!(t.connection_reset(0, 4, 1).is_none());
        assert_eq!(t.data_target(0, 5, 1), Some(&"a"));
        // A new STREAM_START replaces the stream and returns the old connections.
        let (_, _, old) = t.stream_start(0, 6, "SSH1", 1, "b");
        assert_eq!(old, vec!["a"]);
        assert!(t.data_target(0, 5, 1).is_none());
    }

    #[test]
    fn destination_connections_and_resets() {
        let mut t = table();
        t.stream_start(1, 9, "WEB", 1, "a");
        let (k2, ids) = t.connection_start(1, 9, 2, "b").expect("opens");
        assert_eq!(ids.connection_id, 2);
        assert!(matches!(t.connection_start(1, 9, 2, "c"), Err((true, "c"))));
        assert!(matches!(
            t.connection_start(1, 8, 3, "d"),
            Err((false, "d"))
        ));
        assert_eq!(t.connection_reset(1, 9, 1), Some("a"));
        assert!(t.is_current(1, 9), "stream survives a connection reset");
        assert_eq!(t.remove(&k2).map(|(h, _)| h), Some("b"));
        t.connection_start(1, 9, 3, "e").expect("opens");
        assert_eq!(t.stream_reset(1, 9), Some(vec!["e"]));
        assert!(!t.is_current(1, 9));
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
            "single mapping takes all"
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
}
