//! One tunnel connection's life on the reader thread: set up the writer,
//! read and decode tunnel frames, act on the machine's decision for each
//! message, and tear everything down when the connection ends.

use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, SendTimeoutError, TrySendError};

use super::machine::{Known, Step};
use super::writer::{self, Control, Link};
use super::{destination, source, End, LocalConn, RunError, Shared, TunnelError};
use crate::frame::{Decoded, FrameDecoder, FrameError};
use crate::protocol;
use crate::sockets::Keepalive;
use crate::stop::{Hook, Stop};
use crate::tcp::Closer;
use crate::transport::{self, Incoming, TransportError};

/// How long the reader waits for a local application whose queue is full
/// before resetting that connection. While it waits, the tunnel (and so
/// every connection) pauses: the bound on that pause.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(1);

/// Errors that end the reader loop from inside a dispatch.
enum Failure {
    Frame(FrameError),
    Protocol(TunnelError),
    Fatal(RunError),
}

impl From<FrameError> for Failure {
    fn from(e: FrameError) -> Self {
        Failure::Frame(e)
    }
}

/// Serves one tunnel connection until it ends. Returns how it ended and
/// whether it got as far as knowing the tunnel's services.
pub(super) fn serve(
    shared: &Arc<Shared>,
    conn: transport::Connection,
    stop: &Arc<Stop>,
) -> (End, bool) {
    let settings = &shared.config.settings;
    let ping = Duration::from_millis(settings.ping_period_ms.max(100));
    let limit = super::liveness_limit(ping);
    let keepalive = Keepalive {
        idle: ping,
        interval: (ping / 4).max(Duration::from_secs(1)),
        probes: 3,
        user_timeout: limit,
    };
    if let Err(e) = conn.set_keepalive(&keepalive) {
        log::debug!("TCP keepalive on the tunnel socket: {e}");
    }
    let v1_only = conn.subprotocol() == protocol::SUBPROTOCOL_V1;
    let (mut reader, mut ws_writer) = conn.split();
    if let Err(e) = reader
        .set_silence_limit(Some(limit))
        .and_then(|()| ws_writer.set_stall_limit(Some(limit)))
    {
        return (
            End::Lost(TunnelError::Transport(TransportError::Io(e))),
            false,
        );
    }
    let shutdown = ws_writer.shutdown_handle();
    let (link, inputs) = writer::channels();
    let writer_thread = match writer::spawn(ws_writer, inputs, ping, shutdown.clone()) {
        Ok(t) => t,
        Err(e) => return (End::Lost(TunnelError::Thread(e)), false),
    };
    shared.lock().link = Some(link.clone());
    let close_tx = link.control.clone();
    stop.set_hook(Some(Hook {
        send_close: Box::new(move || {
            // A full queue (a service that stopped reading) gets no polite
            // close; the stop then shuts the socket down.
            let _ = close_tx.try_send(Control::Close(
                protocol::CLOSE_NORMAL,
                "local proxy stopped".into(),
            ));
        }),
        shutdown: shutdown.clone(),
    }));
    if stop.is_set() {
        // The stop came while connecting, before there was a connection to
        // close: close this one as the signal would have.
        let stop = stop.clone();
        let late = move || stop.trigger();
        if let Err(e) = std::thread::Builder::new()
            .name("stop".into())
            .stack_size(64 * 1024)
            .spawn(late)
        {
            log::debug!("closing on a thread of its own: {e}; closing in the reader");
            shutdown.shutdown();
        }
    }
    let mut decoder = FrameDecoder::new(settings.max_payload_size);
    let first = if v1_only {
        // V1 has no SERVICE_IDS: the mappings stand as configured.
        let known = shared.lock().machine.services_known(None);
        services_known(shared, known)
    } else {
        Ok(())
    };
    let end = match first {
        Err(f) => failure_end(f),
        Ok(()) => loop {
            match reader.read() {
                Ok(Incoming::Binary(chunk)) => {
                    if let Err(f) =
                        decoder.decode::<Failure, _>(&chunk, |d| dispatch(shared, &link, d))
                    {
                        break failure_end(f);
                    }
                }
                Ok(Incoming::Ping) => link.flush_replies(),
                Ok(Incoming::Pong(payload)) => {
                    writer::log_pong(&payload);
                    shared.release_idle_memory();
                }
                Ok(Incoming::Close(frame)) => {
                    // The close reply is queued: let the writer send it.
                    link.flush_replies();
                    break close_outcome(frame);
                }
                Err(e) if stop.is_set() => {
                    log::debug!("reader ended while stopping: {e}");
                    break End::Stopped;
                }
                // What the service sent breaks the protocol: a data error,
                // subject to reconnect_on_data_error.
                Err(
                    e @ (TransportError::TextFrame { .. } | TransportError::FrameTooLarge { .. }),
                ) => break End::Protocol(TunnelError::Transport(e)),
                Err(e) => break End::Lost(TunnelError::Transport(e)),
            }
        },
    };
    let end = if stop.is_set() { End::Stopped } else { end };
    let usable = shared.lock().machine.is_ready();
    let writer_failed = finish(shared, &end, stop, &link, &shutdown, writer_thread);
    // When the writer failed first (a write that made no progress), the
    // reader only saw the socket it shut down: the writer's error says why.
    let end = match (end, writer_failed) {
        (
            End::Lost(TunnelError::Transport(TransportError::Eof | TransportError::Io(_))),
            Some(w),
        ) => End::Lost(TunnelError::Transport(w)),
        (end, _) => end,
    };
    (end, usable)
}

fn failure_end(f: Failure) -> End {
    match f {
        Failure::Frame(e) => End::Protocol(TunnelError::Frame(e)),
        Failure::Protocol(e) => End::Protocol(e),
        Failure::Fatal(e) => End::Fatal(e),
    }
}

/// Closes every local connection and ends the writer; returns the
/// writer's error, if a send failed.
fn finish(
    shared: &Shared,
    end: &End,
    stop: &Stop,
    link: &Link,
    shutdown: &transport::ShutdownHandle,
    writer: std::thread::JoinHandle<Option<TransportError>>,
) -> Option<TransportError> {
    let closed = {
        let mut st = shared.lock();
        st.link = None;
        st.machine.reset_all()
    };
    if !closed.is_empty() {
        log::info!("Closing {} local connection(s)", closed.len());
    }
    // What they were sending or receiving is lost: each application gets a
    // reset, not the clean end of a stream that was cut.
    closed.into_iter().for_each(LocalConn::abort);
    if let End::Fatal(_) | End::Protocol(_) = end {
        let _ = link
            .control
            .try_send(Control::Close(1002, "protocol error".into()));
    }
    // The writer may be blocked on a service that stopped reading: it ends
    // at its stall limit, or now if the socket is shut down.
    if link.control.try_send(Control::Stop).is_err() {
        shutdown.shutdown();
    }
    let failed = writer.join().ok().flatten();
    shutdown.shutdown();
    stop.set_hook(None);
    failed
}

/// The connection's services became known: a source starts listening the
/// first time.
fn services_known(
    shared: &Arc<Shared>,
    known: Result<Known, super::machine::ServicesError>,
) -> Result<(), Failure> {
    match known {
        Ok(Known::Ready) => Ok(()),
        Ok(Known::Listen(on)) => source::listen(shared, on).map_err(Failure::Fatal),
        Err(e) if e.is_protocol() => Err(Failure::Protocol(TunnelError::Services(e))),
        Err(e) => Err(Failure::Fatal(RunError::Services(e))),
    }
}

/// Acts on one decoded message.
fn dispatch(shared: &Arc<Shared>, link: &Link, d: Decoded<'_>) -> Result<(), Failure> {
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
        crate::logging::printable(&msg.serviceId),
        msg.connectionId,
        msg.payload.len()
    );
    let mut pending: Option<(Receiver<Vec<u8>>, Arc<Closer>)> = None;
    let step = shared.lock().machine.on_message(&msg, || {
        let (conn, rx) = LocalConn::new();
        pending = Some((rx, conn.closer.clone()));
        conn
    });
    match step {
        Step::Note(note) => shared.note(&note),
        Step::Deliver { key, to } => {
            let payload = if msg.payload.len() >= shared.pool.size() / 4 {
                // A bulk payload: into a recycled buffer.
                let mut buf = shared.pool.take_empty();
                buf.extend_from_slice(&msg.payload);
                buf
            } else {
                msg.payload.to_vec()
            };
            deliver(shared, link, key, to, payload)
        }
        Step::Connect {
            open,
            replaced,
            note,
        } => {
            shared.note(&note);
            replaced.into_iter().for_each(LocalConn::abort);
            if let Some((rx, closer)) = pending {
                destination::spawn(shared, link, open, rx, closer);
            }
        }
        Step::Close { conns, note, abort } => {
            shared.note(&note);
            if abort {
                conns.into_iter().for_each(LocalConn::abort);
            } else {
                drop(conns);
            }
        }
        Step::Reply {
            frame,
            replaced,
            note,
        } => {
            shared.note(&note);
            replaced.into_iter().for_each(LocalConn::abort);
            link.send_control(frame);
        }
        Step::Services(known) => services_known(shared, known)?,
    }
    Ok(())
}

/// Hands a payload to a local connection; one whose application stopped
/// reading for [`STALL_TIMEOUT`] is reset. The wait holds up the whole
/// tunnel, so it is only for an application that is there: a connection
/// whose connect failed is reset as soon as its queue is full (a service
/// that is down would otherwise stall every other service for a second per
/// connection). Its connect thread empties the queue while it waits for a
/// retry, so that happens only during an attempt.
fn deliver(
    shared: &Shared,
    link: &Link,
    key: crate::streams::ConnKey,
    to: LocalConn,
    payload: Vec<u8>,
) {
    let unreachable = to.closer.is_unreachable();
    let sent = if unreachable {
        to.tx.try_send(payload).map_err(|e| match e {
            TrySendError::Full(p) => SendTimeoutError::Timeout(p),
            TrySendError::Disconnected(p) => SendTimeoutError::Disconnected(p),
        })
    } else {
        to.tx.send_timeout(payload, STALL_TIMEOUT)
    };
    if let Err(SendTimeoutError::Timeout(_)) = sent {
        let stalled = shared.lock().machine.stalled(&key);
        if let Some((conn, frame)) = stalled {
            let queued = super::LOCAL_QUEUE * shared.config.settings.max_payload_size / 1024;
            if unreachable {
                shared.dropped(&format_args!(
                    "Local service of stream {} connection {} is not reachable and its queue \
                     is full ({} payloads): resetting that connection",
                    key.stream_id,
                    key.conn_id,
                    super::LOCAL_QUEUE
                ));
            } else {
                shared.dropped(&format_args!(
                    "Local application of stream {} connection {} stopped reading \
                     ({queued} KiB queued for {STALL_TIMEOUT:?}): resetting that connection",
                    key.stream_id, key.conn_id,
                ));
            }
            conn.abort();
            link.send_control(frame);
        }
    }
}

fn close_outcome(frame: Option<(u16, String)>) -> End {
    match &frame {
        Some((code, reason)) => log::info!(
            "Web socket close received. Code: {code}; Reason: {}",
            crate::logging::printable(reason)
        ),
        None => log::info!("Web socket close received without a close code"),
    }
    match frame {
        Some((code, reason))
            if code == protocol::CLOSE_POLICY_VIOLATION
                && reason.to_ascii_lowercase().contains("replaced") =>
        {
            End::Replaced
        }
        Some((code, reason)) if code == protocol::CLOSE_NORMAL => {
            End::Closed(if reason.is_empty() {
                "normal close".into()
            } else {
                crate::logging::printable(&reason)
            })
        }
        Some((code, reason)) => End::Lost(TunnelError::Closed { code, reason }),
        None => End::Lost(TunnelError::ClosedWithoutCode),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(
            matches!(
                close_outcome(Some((1011, "replaced by nothing".into()))),
                End::Lost(_)
            ),
            "only a policy close means replaced"
        );
        assert!(matches!(
            close_outcome(Some((1011, "oops".into()))),
            End::Lost(_)
        ));
        assert!(matches!(close_outcome(None), End::Lost(_)));
    }
}
