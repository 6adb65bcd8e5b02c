//! Source side: the listeners, and each accepted local connection opened as
//! a stream (or a connection of the current V3 stream) on the tunnel.

use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::machine::{ListenOn, Refused};
use super::writer::Link;
use super::{LocalConn, RunError, Shared};
use crate::streams::{ConnKey, Refusal};
use crate::tcp::{
    self, BoundPort, Conn, ConnStats, LocalStream, ReadHalf, SilenceCheck, WriteHalf,
};

/// The address local listeners bind to (`-b`, else the settings').
fn listen_host(shared: &Shared) -> String {
    shared
        .config
        .bind_address
        .clone()
        .unwrap_or_else(|| shared.config.settings.default_bind_address.clone())
}

fn listen_error(host: &str, port: u16, service: &str, source: std::io::Error) -> RunError {
    RunError::Listen {
        address: crate::transport::host_port(host, port),
        service: service.to_string(),
        source,
    }
}

fn bind(host: &str, port: u16, service: &str) -> Result<BoundPort, RunError> {
    tcp::bind_port(host, port).map_err(|e| listen_error(host, port, service, e))
}

/// Source: binds the ports given with `-s` before the first connect, so a
/// port that is taken or a `-b` that does not resolve is an error before
/// the access token is spent (the service then accepts it only with this
/// process's client token). They listen once the tunnel is up, as the
/// reference's do: until then a connection is refused, not queued, and a
/// readiness check still means the tunnel is there. Ports picked by the
/// system (0) and ports from a mapping directory (only the advertised
/// services are looked up) are bound when the services are known.
pub(super) fn prebind(shared: &Shared) -> Result<(), RunError> {
    let cfg = &shared.config;
    if cfg.mode != crate::config::Mode::Source || cfg.services_from_dir {
        return Ok(());
    }
    let host = listen_host(shared);
    let mut bound = Vec::new();
    for mapping in &cfg.services {
        if let crate::config::Target::Listen(port) = mapping.target {
            if port != 0 {
                let name = mapping.id.as_deref().unwrap_or("(V1)");
                bound.push((port, bind(&host, port, name)?));
            }
        }
    }
    *shared.prebound.lock().unwrap_or_else(|p| p.into_inner()) = bound;
    Ok(())
}

/// Binds every listener first (a port that is taken is a setup error), then
/// starts one accept thread per listener.
pub(super) fn listen(shared: &Arc<Shared>, on: Vec<ListenOn>) -> Result<(), RunError> {
    let host = listen_host(shared);
    // What was bound before connecting; what the tunnel does not advertise
    // is closed when this returns.
    let mut prebound =
        std::mem::take(&mut *shared.prebound.lock().unwrap_or_else(|p| p.into_inner()));
    if shared.config.services_from_dir || on.iter().any(|spec| spec.port == 0) {
        // The mapping was built from the advertised services (no -s): the
        // reference's words for it, 0 for a port to pick, then one "New
        // port mapping" per picked port (scripts read them).
        log::info!("Use port mapping:");
        log::info!("---------------------------------");
        for spec in &on {
            log::info!("{} = {}", spec.label, spec.port);
        }
        log::info!("---------------------------------");
    }
    let mut listeners = Vec::new();
    for spec in on {
        let early = prebound
            .iter()
            .position(|(port, _)| spec.port != 0 && *port == spec.port)
            .map(|i| prebound.swap_remove(i).1);
        let bound = match early {
            Some(bound) => bound,
            None => bind(&host, spec.port, &spec.label)?,
        };
        let l = bound
            .listen()
            .map_err(|e| listen_error(&host, spec.port, &spec.label, e))?;
        listeners.push((spec, l));
    }
    for (spec, l) in listeners {
        let port = l.local_addr().map(|a| a.port()).unwrap_or(0);
        log::info!(
            "Listening for new connection on port {port} for service {}",
            spec.label
        );
        if spec.port == 0 {
            log::info!(
                "Listen port assigned for service id {}. New port mapping: ",
                spec.label
            );
            log::info!("{} = {port}", spec.label);
        }
        let me = shared.clone();
        std::thread::Builder::new()
            .name("accept".into())
            .stack_size(tcp::CONNECTION_THREAD_STACK)
            .spawn(move || accept_loop(&me, spec.service, &l))
            .map_err(|source| RunError::Setup {
                what: "start a listener thread",
                source,
            })?;
    }
    Ok(())
}

fn accept_loop(shared: &Arc<Shared>, service: usize, listener: &TcpListener) {
    for incoming in listener.incoming() {
        match incoming {
            Ok(stream) => accept(shared, service, stream),
            Err(e) => {
                // Out of descriptors, most likely: wait a little instead of
                // spinning on the same error.
                shared.refusal(&format_args!("Accepting a local connection failed: {e}"));
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// How long a connection to a V1/V2 service that already carries one is
/// held before it is refused: a client that closes one connection and at
/// once opens the next (`scp` then `ssh`) reaches the port before the end
/// of the first is processed.
const BUSY_HOLD: Duration = Duration::from_secs(2);
/// How often a held connection checks whether the service is free.
const BUSY_POLL: Duration = Duration::from_millis(10);

/// A local client connected to a service's port.
fn accept(shared: &Arc<Shared>, service: usize, stream: TcpStream) {
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let port = stream.local_addr().map(|a| a.port()).unwrap_or(0);
    let (handle, rx) = LocalConn::new();
    let closer = handle.closer.clone();
    let hold_until = Instant::now() + BUSY_HOLD;
    let outcome = loop {
        let outcome = {
            let mut st = shared.lock();
            match st.link.clone() {
                None => Err(Refused::NotReady),
                Some(link) => st
                    .machine
                    .accept(service, handle.clone())
                    .map(|a| (a, link)),
            }
        };
        match outcome {
            // The open connection may be ending (its client closed and
            // opened the next one): wait a little before refusing.
            Err(Refused::Busy(_)) if Instant::now() < hold_until => {
                std::thread::sleep(BUSY_POLL);
            }
            outcome => break outcome,
        }
    };
    let (acc, link) = match outcome {
        Ok(v) => v,
        Err(why) => {
            let _ = stream.shutdown(Shutdown::Both);
            return match why {
                Refused::NotReady => shared.refusal(&format_args!(
                    "Refusing local connection from {peer}: the tunnel is not connected"
                )),
                Refused::OverCap { max } => shared.refusal(&format_args!(
                    "Refusing local connection from {peer}: {max} connections are open \
                     (tunneling.proxy.tcp.max_active_connections)"
                )),
                Refused::Busy(Refusal::Busy { service, version }) => shared.refusal(&format_args!(
                    "Refusing local connection from {peer} for service {service}: a \
                         {version:?} destination carries one connection per service and one \
                         is open (use a V3 destination for more)"
                )),
            };
        }
    };
    let key = acc.key;
    log::info!(
        "Accepted tcp connection on port {port} from {peer} (service {}, stream {}, \
         connection {}, {:?})",
        acc.label,
        key.stream_id,
        key.conn_id,
        acc.opening.message_type()
    );
    if !link.send_data(&acc.frame) {
        // The tunnel connection ended meanwhile; its end closed the table.
        return;
    }
    let stream = Arc::new(LocalStream::Tcp(stream));
    closer.set(stream.clone());
    let stats = ConnStats::new(
        format!(
            "service {}, stream {}, connection {}",
            acc.label, key.stream_id, key.conn_id
        ),
        peer,
        Box::new(acc.slot),
    );
    let give_up = |e: std::io::Error| {
        shared.exhausted(&format_args!(
            "Cannot start a local connection: {e}; resetting it"
        ));
        let frame = shared.lock().machine.local_closed(&key);
        if let Some(frame) = frame {
            link.send_data(&frame);
        }
    };
    let mut conn = match Conn::new(stream.clone(), stats.clone()) {
        Ok(c) => c,
        Err(e) => return give_up(e),
    };
    let (me, data) = (shared.clone(), link.data.clone());
    let read = ReadHalf {
        to_tunnel: link.data.clone(),
        ids: acc.ids,
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
    let on_silence = answer_watch(shared, &link, key, &stats);
    if let Err(e) = conn.spawn_read(read) {
        return give_up(e);
    }
    let write = WriteHalf {
        from_tunnel: rx,
        first: None,
        pool: shared.pool.clone(),
        on_silence,
    };
    if let Err(e) = conn.spawn_write(write) {
        // The read half runs: end it through the socket.
        stream.shutdown(Shutdown::Both);
        give_up(e);
    }
}

/// Watches a connection whose data may have gone into the void: when the
/// local client sent something and nothing at all came back from the
/// destination within `tcp.answer_timeout_ms`, its start was most likely
/// lost while the destination was away (the service drops it without a
/// word): the connection is reset, and its stream too when no connection of
/// the stream was ever answered, so the next connection starts afresh. An
/// idle connection (nothing sent) is never cut.
fn answer_watch(
    shared: &Arc<Shared>,
    link: &Link,
    key: ConnKey,
    stats: &Arc<ConnStats>,
) -> Option<(Duration, SilenceCheck)> {
    let ms = shared.config.settings.tcp_answer_timeout_ms;
    if ms == 0 {
        return None;
    }
    let limit = Duration::from_millis(ms);
    let (me, link, stats) = (shared.clone(), link.clone(), stats.clone());
    let check: SilenceCheck = Box::new(move || {
        let Some(sent) = stats.first_sent.get() else {
            return Some(limit);
        };
        let waited = sent.elapsed();
        if waited < limit {
            return Some(limit - waited);
        }
        let given_up = me.lock().machine.unanswered(&key);
        if let Some((conns, frame)) = given_up {
            me.dropped(&format_args!(
                "No answer from the destination for stream {} connection {} within {limit:?} \
                 of its data (its start was lost while the destination was away?): resetting \
                 {} connection(s)",
                key.stream_id,
                key.conn_id,
                conns.len()
            ));
            // Their data never reached the destination: a reset, not an end.
            conns.into_iter().for_each(LocalConn::abort);
            link.send_control(frame);
        }
        None
    });
    Some((limit, check))
}
