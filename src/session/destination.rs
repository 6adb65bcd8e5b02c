//! Destination side: connecting to a local service for each connection the
//! peer opens, with the configured retries, then running the connection.
//!
//! The connection's thread connects, then becomes its write half (the read
//! half gets a thread of its own). Data the peer sends while it connects
//! waits in the connection's bounded queue, and while a retry waits in the
//! thread's own buffer (at most as many bytes as the queue holds; beyond,
//! the connection is reset): the tunnel reader never waits for a service
//! that is not there. A close from the peer before the first attempt means
//! "no more data": what was queued is still delivered. Once an attempt has
//! failed, a close from the peer ends the retries, and what waited is
//! dropped (a service that comes up later gets no dead stream's data).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};

use super::machine::Open;
use super::writer::Link;
use super::Shared;
use crate::config::DestinationAddr;
use crate::streams::ConnKey;
use crate::tcp::{self, Closer, Conn, ConnStats, LocalStream, ReadHalf, WriteHalf};

/// Starts the thread that connects `open` and runs it. When no thread can
/// be started the connection is reset at once.
pub(super) fn spawn(
    shared: &Arc<Shared>,
    link: &Link,
    open: Open,
    rx: Receiver<Vec<u8>>,
    closer: Arc<Closer>,
) {
    let key = open.key;
    let (me, link2) = (shared.clone(), link.clone());
    let spawned = std::thread::Builder::new()
        .name("local-connect".into())
        .stack_size(tcp::CONNECTION_THREAD_STACK)
        .spawn(move || connect(&me, &link2, open, rx, &closer));
    if let Err(e) = spawned {
        shared.exhausted(&format_args!(
            "Cannot start a connection thread: {e}; resetting the connection"
        ));
        let frame = shared.lock().machine.connect_failed(&key);
        if let Some(frame) = frame {
            link.send_control(frame);
        }
    }
}

/// The reference's line for a connected local service (the address it
/// resolved to, as the reference prints it), with the ids.
fn log_connected(stream: &LocalStream, addr: &DestinationAddr, what: &str) {
    match (stream, addr) {
        (LocalStream::Tcp(s), _) => match s.peer_addr() {
            Ok(peer) => log::info!("Connected to {}, port: {} ({what})", peer.ip(), peer.port()),
            Err(_) => log::info!("Connected to {} ({what})", tcp::describe(addr)),
        },
        (LocalStream::Unix(_), _) => {
            log::info!("Connected to Unix socket: {} ({what})", tcp::describe(addr))
        }
    }
}

fn connect(shared: &Arc<Shared>, link: &Link, open: Open, rx: Receiver<Vec<u8>>, closer: &Closer) {
    let Open {
        key,
        ids,
        addr,
        label,
        slot,
    } = open;
    let s = &shared.config.settings;
    // connection_retry_count is -1..=i64::MAX: -1 is no limit (as in the
    // reference, whose default it was before 3.2); else at least one
    // attempt, and a huge count means "keep trying", never an overflow.
    // Either way the attempts end when the tunnel side closes the
    // connection (checked before each attempt).
    let attempts = match u64::try_from(s.tcp_connection_retry_count) {
        Ok(retries) => retries.saturating_add(1),
        Err(_) => u64::MAX,
    };
    let of = |attempt: u64| match attempts {
        u64::MAX => format!("attempt {attempt}, no limit"),
        n => format!("attempt {attempt} of {n}"),
    };
    let delay = Duration::from_millis(s.tcp_connection_retry_delay_ms);
    let bind = shared.config.bind_address.as_deref();
    let target = tcp::describe(&addr);
    log::debug!(
        "Attempting to establish tcp socket connection to: {target} (service {label}, stream {}, \
         connection {})",
        key.stream_id,
        key.conn_id
    );
    // What the peer sent before the service could be reached, taken out of
    // the connection's queue while a retry waits (so that the queue, which
    // the tunnel reader must not wait for, does not fill), bounded in bytes.
    let budget = super::LOCAL_QUEUE * s.max_payload_size;
    let mut pending: Vec<u8> = Vec::new();
    let mut attempt: u64 = 0;
    let stream = loop {
        attempt += 1;
        let closed = match take_queued(shared, &rx, &mut pending, budget, None) {
            Queue::Over => return too_much(shared, link, &key, pending.len(), budget),
            // Closed with nothing to deliver; or, once an attempt failed,
            // closed at all (the retries end).
            Queue::Closed => pending.is_empty() || attempt > 1,
            // Payloads were taken: the channel cannot tell.
            Queue::Open if attempt > 1 && !pending.is_empty() => {
                !shared.lock().machine.is_open(&key)
            }
            Queue::Open => false,
        };
        if closed {
            log::debug!(
                "Stream {} connection {} closed from the tunnel side before it connected: \
                 not connecting",
                key.stream_id,
                key.conn_id
            );
            return;
        }
        match tcp::connect_once(&addr, bind) {
            Ok(stream) => break stream,
            Err(e) if attempt < attempts => {
                closer.set_unreachable();
                shared.unreachable(&format_args!(
                    "Cannot connect to {target} for service {label} ({}): {e}; retrying in \
                     {delay:?}",
                    of(attempt)
                ));
                // The wait for the retry takes in what arrives meanwhile;
                // it ends early when the tunnel side closes the connection
                // (the next turn sees it).
                let until = Instant::now() + delay;
                if let Queue::Over = take_queued(shared, &rx, &mut pending, budget, Some(until)) {
                    return too_much(shared, link, &key, pending.len(), budget);
                }
            }
            Err(e) => {
                shared.unreachable(&format_args!(
                    "Cannot connect to {target} for service {label}: {e}; resetting stream {} \
                     connection {}",
                    key.stream_id, key.conn_id
                ));
                let frame = shared.lock().machine.connect_failed(&key);
                if let Some(frame) = frame {
                    link.send_control(frame);
                }
                return;
            }
        }
    };
    let first = (!pending.is_empty()).then_some(pending);
    let what = format!(
        "service {label}, stream {}, connection {}",
        key.stream_id, key.conn_id
    );
    log_connected(&stream, &addr, &what);
    let stream = Arc::new(stream);
    closer.set(stream.clone());
    let remote = match &*stream {
        LocalStream::Tcp(_) => stream.peer(),
        LocalStream::Unix(_) => target.clone(),
    };
    let stats = ConnStats::new(what, remote, Box::new(slot));
    let fail = |e: std::io::Error| {
        shared.exhausted(&format_args!(
            "Cannot start local connection to {target}: {e}; resetting it"
        ));
        let frame = shared.lock().machine.connect_failed(&key);
        if let Some(frame) = frame {
            link.send_control(frame);
        }
    };
    let mut conn = match Conn::new(stream, stats) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let (me, data) = (shared.clone(), link.data.clone());
    let read = ReadHalf {
        to_tunnel: link.data.clone(),
        ids,
        read_size: shared.read_size(),
        pool: shared.pool.clone(),
        on_closed: Box::new(move || {
            // Sent on the data channel, after the connection's last DATA.
            let frame = me.lock().machine.local_closed(&key);
            if let Some(frame) = frame {
                super::writer::send_data(&data, &frame);
            }
        }),
    };
    if let Err(e) = conn.spawn_read(read) {
        return fail(e);
    }
    conn.run_write(WriteHalf {
        from_tunnel: rx,
        first,
        pool: shared.pool.clone(),
        on_silence: None,
    });
}

/// What [`take_queued`] found.
enum Queue {
    /// The connection is still open (as far as the queue can tell).
    Open,
    /// The queue is empty and the tunnel side closed it.
    Closed,
    /// More than the budget waits.
    Over,
}

/// Moves what the connection's queue holds into `pending`: what is there
/// now, or (with `until`) everything that arrives until then.
fn take_queued(
    shared: &Shared,
    rx: &Receiver<Vec<u8>>,
    pending: &mut Vec<u8>,
    budget: usize,
    until: Option<Instant>,
) -> Queue {
    loop {
        let next = match until {
            None => rx.try_recv().map_err(|e| match e {
                TryRecvError::Empty => None,
                TryRecvError::Disconnected => Some(()),
            }),
            Some(t) => rx.recv_deadline(t).map_err(|e| match e {
                RecvTimeoutError::Timeout => None,
                RecvTimeoutError::Disconnected => Some(()),
            }),
        };
        match next {
            Ok(chunk) => {
                pending.extend_from_slice(&chunk);
                shared.pool.give(chunk);
                if pending.len() > budget {
                    return Queue::Over;
                }
            }
            Err(None) => return Queue::Open,
            Err(Some(())) => return Queue::Closed,
        }
    }
}

/// Resets a connection whose service cannot be reached and for which more
/// than `budget` bytes wait.
fn too_much(shared: &Shared, link: &Link, key: &ConnKey, waiting: usize, budget: usize) {
    let stalled = shared.lock().machine.stalled(key);
    if let Some((_, frame)) = stalled {
        shared.dropped(&format_args!(
            "Local service of stream {} connection {} is not reachable and {} KiB wait for \
             it (at most {} KiB): resetting that connection",
            key.stream_id,
            key.conn_id,
            waiting / 1024,
            budget / 1024
        ));
        link.send_control(frame);
    }
}
