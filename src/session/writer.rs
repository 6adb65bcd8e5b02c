//! The tunnel writer: the one thread that sends on a tunnel connection.
//!
//! It takes frames from two bounded channels: data (DATA frames, and the
//! starts and resets that must stay in order with them, each in a buffer
//! with room for the WebSocket header, which the writer seals in place, see
//! [`crate::transport::wire`]) and control (resets the reader answers with,
//! close frames, which tungstenite frames), writes up to [`WRITE_GROUP`]
//! bytes of queued data frames per write to the socket, flushes the pongs
//! the reader queued, and pings every `ping_period`. Every channel is
//! bounded, so a service that stops reading makes the senders wait (local
//! reads pause, the reader stops reading the service) instead of memory
//! growing; the WebSocket's stall limit then ends the connection.

use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, select, tick, Receiver, Sender};

use crate::transport::wire::Outgoing;
use crate::transport::{self, ShutdownHandle, WsWriter};

/// Frames waiting for the writer, from all local connections. With frames
/// of at most 64 KiB this bounds that queue to about 2 MiB: enough to keep
/// the writer busy (it takes four at a time), short enough that a start or
/// an interactive keystroke queued behind a bulk transfer waits little.
pub(super) const DATA_QUEUE: usize = 32;
/// Control frames waiting for the writer (each under 200 bytes).
const CONTROL_QUEUE: usize = 64;
/// Frames sent with one write to the socket, in bytes at most (one frame
/// more if a single one is larger): fewer system calls, each carrying about
/// four largest DATA frames of ciphertext.
pub(super) const WRITE_GROUP: usize = 256 * 1024;
/// Stack of the writer thread.
const WRITER_STACK: usize = 256 * 1024;

/// Sent to the writer by everyone but the local connections' data path.
pub(super) enum Control {
    /// A protocol frame (already framed).
    Frame(Vec<u8>),
    /// Send a close frame.
    Close(u16, String),
    /// End the writer.
    Stop,
}

/// The ways into one tunnel connection's writer.
#[derive(Clone)]
pub(super) struct Link {
    /// DATA frames, and the starts and resets ordered with them, each with
    /// room for its WebSocket header.
    pub data: Sender<Outgoing>,
    /// Frames whose order against data does not matter, and close frames.
    pub control: Sender<Control>,
    /// "The reader queued a reply (pong, close reply): send it." Holds one
    /// signal at most; more are redundant.
    pub flush: Sender<()>,
}

impl Link {
    /// Queues a control frame; waits while the queue is full. A writer that
    /// is gone means the connection is ending: the frame is moot.
    pub fn send_control(&self, frame: Vec<u8>) {
        let _ = self.control.send(Control::Frame(frame));
    }

    /// Queues a start or reset on the data channel, after the DATA queued
    /// before it; waits while the queue is full. False when the writer is
    /// gone (the connection is ending).
    pub fn send_data(&self, frame: &[u8]) -> bool {
        send_data(&self.data, frame)
    }

    /// Asks the writer to flush the replies the reader queued.
    pub fn flush_replies(&self) {
        let _ = self.flush.try_send(());
    }
}

/// [`Link::send_data`] for a holder of the data channel alone.
pub(super) fn send_data(data: &Sender<Outgoing>, frame: &[u8]) -> bool {
    data.send(Outgoing::copied(frame)).is_ok()
}

/// The writer's ends of a [`Link`].
pub(super) struct Inputs {
    data: Receiver<Outgoing>,
    control: Receiver<Control>,
    flush: Receiver<()>,
}

/// A new link and the writer's ends of it.
pub(super) fn channels() -> (Link, Inputs) {
    let (data_tx, data) = bounded(DATA_QUEUE);
    let (control_tx, control) = bounded(CONTROL_QUEUE);
    let (flush_tx, flush) = bounded(1);
    (
        Link {
            data: data_tx,
            control: control_tx,
            flush: flush_tx,
        },
        Inputs {
            data,
            control,
            flush,
        },
    )
}

/// Starts the writer thread. It returns why it ended, when a send failed.
pub(super) fn spawn(
    ws: WsWriter,
    inputs: Inputs,
    ping_period: Duration,
    shutdown: ShutdownHandle,
) -> std::io::Result<thread::JoinHandle<Option<transport::TransportError>>> {
    thread::Builder::new()
        .name("tunnel-write".into())
        .stack_size(WRITER_STACK)
        .spawn(move || write_loop(ws, inputs, ping_period, shutdown))
}

/// Process-wide origin of ping timestamps.
fn ping_epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Logs the round trip a pong measures (its payload is our ping's timestamp).
pub(super) fn log_pong(payload: &[u8]) {
    if let Ok(b) = <[u8; 8]>::try_from(payload) {
        let sent = Duration::from_micros(u64::from_be_bytes(b));
        if let Some(rtt) = ping_epoch().elapsed().checked_sub(sent) {
            log::debug!("Tunnel round trip (ping/pong): {rtt:.1?}");
        }
    }
}

fn write_loop(
    mut ws: WsWriter,
    inputs: Inputs,
    ping_period: Duration,
    shutdown: ShutdownHandle,
) -> Option<transport::TransportError> {
    let ticker = tick(ping_period);
    let Inputs {
        data,
        control,
        flush,
    } = inputs;
    let result = (|| -> Result<(), transport::TransportError> {
        loop {
            select! {
                recv(control) -> c => match c {
                    Ok(Control::Frame(f)) => ws.send_binary_owned(f)?,
                    Ok(Control::Close(code, reason)) => ws.send_close(code, &reason)?,
                    Ok(Control::Stop) | Err(_) => return Ok(()),
                },
                recv(flush) -> _ => ws.flush_control()?,
                recv(data) -> d => match d {
                    Ok(first) => send_batch(&mut ws, first, &data)?,
                    Err(_) => return Ok(()),
                },
                recv(ticker) -> _ => {
                    let micros = u64::try_from(ping_epoch().elapsed().as_micros()).unwrap_or(u64::MAX);
                    ws.send_ping(&micros.to_be_bytes())?;
                }
            }
        }
    })();
    let e = result.err()?;
    log::debug!("Tunnel writer ended: {e}");
    // Make the reader notice at once.
    shutdown.shutdown();
    Some(e)
}

/// Sends `first` and whatever else is queued (each encrypted where it lies:
/// no copy to pack frames together), up to [`WRITE_GROUP`] bytes per
/// socket write.
fn send_batch(
    ws: &mut WsWriter,
    first: Outgoing,
    data: &Receiver<Outgoing>,
) -> Result<(), transport::TransportError> {
    let mut batch = Vec::with_capacity(4);
    let mut bytes = first.len();
    batch.push(first);
    // Bound the work per call so control messages are not starved.
    for _ in 0..DATA_QUEUE {
        let Ok(next) = data.try_recv() else { break };
        if bytes + next.len() > WRITE_GROUP {
            ws.send_wire(&mut batch)?;
            bytes = 0;
        }
        bytes += next.len();
        batch.push(next);
    }
    ws.send_wire(&mut batch)
}
