//! Admission of TCP connections to one plane (data or API), so a flood of
//! slow or idle clients cannot lock legitimate ones out.
//!
//! - A cap on the plane's open connections, and one per client address.
//! - An overall deadline for each handshake (data plane: TLS and the
//!   WebSocket upgrade) or request (API: head and body, idle keep-alive
//!   included), enforced by one reaper thread that shuts the socket down:
//!   a client dripping a byte at a time gains nothing.
//! - While a connection waits for its handshake or request it is *pending*;
//!   when a cap is reached, the oldest pending connection (of that address
//!   first) is evicted for the new one, since a real client completes its
//!   handshake in milliseconds and an attacker's never does. With nothing
//!   pending to evict, the new connection is refused at once.
//!
//! Every admitted connection holds a [`Ticket`] until it ends; dropping the
//! ticket gives its place back.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Shutdown, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

/// The limits of one plane.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Open connections at most.
    pub max_connections: usize,
    /// Open connections from one client address at most.
    pub max_per_address: usize,
    /// Time allowed for a handshake or a request, from its start.
    pub deadline: Duration,
}

/// Default of `--max-connections` (each plane).
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;
/// Default of `--max-connections-per-address` (each plane).
pub const DEFAULT_MAX_PER_ADDRESS: usize = 128;
/// Default of `--request-timeout`: handshake and request deadline.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(10);

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_per_address: DEFAULT_MAX_PER_ADDRESS,
            deadline: DEFAULT_DEADLINE,
        }
    }
}

/// Why a new connection was not admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// The plane is full of connections past their handshake.
    Full { limit: usize },
    /// This address holds its whole share, none of it pending.
    AddressFull { addr: IpAddr, limit: usize },
    /// The socket cannot be watched (no descriptor left to clone it).
    Unwatchable(String),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Full { limit } => write!(
                f,
                "{limit} connections open, all past their handshake (--max-connections)"
            ),
            Refused::AddressFull { addr, limit } => write!(
                f,
                "{limit} connections open from {addr}, all past their handshake \
                 (--max-connections-per-address)"
            ),
            Refused::Unwatchable(e) => write!(f, "cannot watch the connection: {e}"),
        }
    }
}

struct Pending {
    addr: IpAddr,
    deadline: Instant,
    /// A clone of the connection's socket, to shut it down.
    sock: TcpStream,
}

struct Inner {
    total: usize,
    per_address: HashMap<IpAddr, usize>,
    /// Pending connections by ticket number (lower = waiting longer).
    pending: BTreeMap<u64, Pending>,
    /// Tickets evicted and not yet dropped (their place is given back).
    evicted: HashSet<u64>,
    next: u64,
    stopped: bool,
}

/// The gate of one plane.
pub struct Gate {
    name: &'static str,
    limits: Limits,
    inner: Mutex<Inner>,
    reaper: Condvar,
}

/// An admitted connection's place; given back on drop.
pub struct Ticket {
    gate: Arc<Gate>,
    addr: IpAddr,
    /// Number of the current pending period, if pending (or evicted).
    pending: Option<u64>,
}

impl Gate {
    /// A gate for the plane called `name` (for logs), with its reaper thread.
    pub fn new(name: &'static str, limits: Limits) -> std::io::Result<Arc<Gate>> {
        let gate = Arc::new(Gate {
            name,
            limits,
            inner: Mutex::new(Inner {
                total: 0,
                per_address: HashMap::new(),
                pending: BTreeMap::new(),
                evicted: HashSet::new(),
                next: 1,
                stopped: false,
            }),
            reaper: Condvar::new(),
        });
        let g = gate.clone();
        thread::Builder::new()
            .name(format!("{name} reaper"))
            .stack_size(64 * 1024)
            .spawn(move || g.reap())?;
        Ok(gate)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits `tcp` as a pending connection (its deadline starts now),
    /// evicting the oldest pending one when a cap is reached.
    pub fn admit(self: &Arc<Self>, tcp: &TcpStream) -> Result<Ticket, Refused> {
        let addr = tcp
            .peer_addr()
            .map(|a| a.ip())
            .unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let sock = tcp
            .try_clone()
            .map_err(|e| Refused::Unwatchable(e.to_string()))?;
        let mut g = self.lock();
        let from_addr = g.per_address.get(&addr).copied().unwrap_or(0);
        if from_addr >= self.limits.max_per_address {
            let oldest = g
                .pending
                .iter()
                .find(|(_, p)| p.addr == addr)
                .map(|(n, _)| *n);
            match oldest {
                Some(n) => self.evict(&mut g, n, "its address is at its limit"),
                None => {
                    return Err(Refused::AddressFull {
                        addr,
                        limit: self.limits.max_per_address,
                    })
                }
            }
        }
        if g.total >= self.limits.max_connections {
            match g.pending.keys().next().copied() {
                Some(n) => self.evict(&mut g, n, "the plane is at its limit"),
                None => {
                    return Err(Refused::Full {
                        limit: self.limits.max_connections,
                    })
                }
            }
        }
        g.total += 1;
        *g.per_address.entry(addr).or_insert(0) += 1;
        let n = self.start_pending(&mut g, addr, sock);
        Ok(Ticket {
            gate: self.clone(),
            addr,
            pending: Some(n),
        })
    }

    fn start_pending(&self, g: &mut Inner, addr: IpAddr, sock: TcpStream) -> u64 {
        let n = g.next;
        g.next += 1;
        let deadline = Instant::now() + self.limits.deadline;
        let wake = g.pending.values().all(|p| p.deadline > deadline);
        g.pending.insert(
            n,
            Pending {
                addr,
                deadline,
                sock,
            },
        );
        if wake {
            self.reaper.notify_all();
        }
        n
    }

    /// Shuts a pending connection down; its thread ends and gives its place
    /// back, which is counted as given back now.
    fn evict(&self, g: &mut Inner, n: u64, why: &str) {
        if let Some(p) = g.pending.remove(&n) {
            log::info!(
                "{}: evicting a connection from {} still in its handshake or request: {why}",
                self.name,
                p.addr
            );
            let _ = p.sock.shutdown(Shutdown::Both);
            Self::release(g, p.addr);
            g.evicted.insert(n);
        }
    }

    fn release(g: &mut Inner, addr: IpAddr) {
        g.total = g.total.saturating_sub(1);
        if let Some(c) = g.per_address.get_mut(&addr) {
            *c = c.saturating_sub(1);
            if *c == 0 {
                g.per_address.remove(&addr);
            }
        }
    }

    /// Shuts down pending connections past their deadline; runs until stop.
    fn reap(&self) {
        let mut g = self.lock();
        loop {
            if g.stopped {
                return;
            }
            let now = Instant::now();
            let late: Vec<u64> = g
                .pending
                .iter()
                .filter(|(_, p)| p.deadline <= now)
                .map(|(n, _)| *n)
                .collect();
            for n in late {
                if let Some(p) = g.pending.remove(&n) {
                    log::info!(
                        "{}: closing a connection from {}: no complete handshake or request within {:?}",
                        self.name,
                        p.addr,
                        self.limits.deadline
                    );
                    // Still counted: its ticket gives the place back.
                    let _ = p.sock.shutdown(Shutdown::Both);
                }
            }
            let next = g.pending.values().map(|p| p.deadline).min();
            let wait = next.map_or(Duration::from_secs(3600), |d| {
                d.saturating_duration_since(now)
            });
            g = self
                .reaper
                .wait_timeout(g, wait)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    /// Stops the reaper thread.
    pub fn stop(&self) {
        self.lock().stopped = true;
        self.reaper.notify_all();
    }

    /// Connections counted as open now.
    #[cfg(test)]
    pub fn open(&self) -> usize {
        self.lock().total
    }
}

impl Ticket {
    /// The handshake or request is complete: no deadline, no eviction.
    pub fn settled(&mut self) {
        if let Some(n) = self.pending {
            let mut g = self.gate.lock();
            // An evicted ticket stays marked: its place is already given back.
            if g.pending.remove(&n).is_some() || !g.evicted.contains(&n) {
                self.pending = None;
            }
        }
    }

    /// Waits for the next request on this connection (API keep-alive): a
    /// new deadline, evictable again. False when the connection was evicted
    /// or its socket cannot be watched: the caller closes it.
    pub fn next_request(&mut self, tcp: &TcpStream) -> bool {
        let Ok(sock) = tcp.try_clone() else {
            return false;
        };
        let gate = self.gate.clone();
        let mut g = gate.lock();
        if let Some(n) = self.pending {
            if g.evicted.contains(&n) {
                return false;
            }
            g.pending.remove(&n);
        }
        self.pending = Some(gate.start_pending(&mut g, self.addr, sock));
        true
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut g = self.gate.lock();
        if let Some(n) = self.pending {
            g.pending.remove(&n);
            if g.evicted.remove(&n) {
                return;
            }
        }
        Gate::release(&mut g, self.addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;

    /// A connected pair on loopback: (client side, server side).
    fn pair(l: &TcpListener) -> (TcpStream, TcpStream) {
        let c = TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        let (s, _) = l.accept().expect("accept");
        c.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        (c, s)
    }

    /// Whether the server closed the client's connection (EOF or reset).
    fn closed(c: &mut TcpStream) -> bool {
        let mut b = [0u8; 1];
        match c.read(&mut b) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        }
    }

    #[test]
    fn the_oldest_pending_connection_of_a_full_address_is_evicted() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let gate = Gate::new(
            "test",
            Limits {
                max_connections: 10,
                max_per_address: 2,
                deadline: Duration::from_secs(60),
            },
        )
        .expect("gate");
        let (mut c1, s1) = pair(&l);
        let t1 = gate.admit(&s1).expect("first");
        let (_c2, s2) = pair(&l);
        let mut t2 = gate.admit(&s2).expect("second");
        let (_c3, s3) = pair(&l);
        let mut t3 = gate.admit(&s3).expect("third evicts the first");
        assert!(closed(&mut c1), "the oldest pending one is shut down");
        assert_eq!(gate.open(), 2);
        drop(t1);
        assert_eq!(gate.open(), 2, "an evicted ticket was given back already");
        t2.settled();
        t3.settled();
        let (_c4, s4) = pair(&l);
        assert!(matches!(
            gate.admit(&s4),
            Err(Refused::AddressFull { limit: 2, .. })
        ));
        drop((t2, t3));
        assert_eq!(gate.open(), 0);
        gate.stop();
    }

    #[test]
    fn a_full_plane_refuses_when_nothing_is_pending() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let limits = Limits {
            max_connections: 1,
            max_per_address: 5,
            deadline: Duration::from_secs(60),
        };
        let gate = Gate::new("test", limits).expect("gate");
        let (_c1, s1) = pair(&l);
        let mut t1 = gate.admit(&s1).expect("first");
        t1.settled();
        let (_c2, s2) = pair(&l);
        let err = gate.admit(&s2).err().expect("refused");
        assert_eq!(err, Refused::Full { limit: 1 });
        assert!(err.to_string().contains("--max-connections"));
        drop(t1);
        let (_c3, s3) = pair(&l);
        assert!(gate.admit(&s3).is_ok());
        gate.stop();
    }

    #[test]
    fn a_connection_past_its_deadline_is_shut_down_and_keep_alive_restarts_it() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let limits = Limits {
            max_connections: 5,
            max_per_address: 5,
            deadline: Duration::from_millis(200),
        };
        let gate = Gate::new("test", limits).expect("gate");
        let (mut c1, s1) = pair(&l);
        let t1 = gate.admit(&s1).expect("admitted");
        let start = Instant::now();
        assert!(closed(&mut c1));
        assert!(start.elapsed() < Duration::from_secs(3));
        assert_eq!(gate.open(), 1, "counted until the connection ends");
        drop(t1);
        assert_eq!(gate.open(), 0);
        let (mut c2, s2) = pair(&l);
        let mut t2 = gate.admit(&s2).expect("admitted");
        t2.settled();
        assert!(t2.next_request(&s2));
        assert!(closed(&mut c2), "the next request has a deadline too");
        gate.stop();
    }
}
