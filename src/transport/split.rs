//! The established connection split into a reader and a writer for two threads.
//!
//! One mutex guards the TLS layers and the WebSocket state; it is held only
//! while encrypting or decrypting, never while blocked on the socket. The
//! reader blocks on its own clone of the socket, then feeds the ciphertext in
//! and decodes. Only the writer writes the socket: under the writer lock it
//! swaps out the ciphertext produced so far (including pongs and close replies
//! the reader queued), releases the state lock and writes, so ciphertext leaves
//! in the order OpenSSL made it.
//!
//! Liveness: the reader gives up when nothing at all arrives for its silence
//! limit, the writer when a write makes no progress for its stall limit. A
//! service that stops reading while it keeps sending pings would make the
//! reader queue pongs without end: past [`REPLY_BACKLOG`] bytes of queued
//! replies the reader stops reading until the writer has sent them, so the
//! service's own sends block too and memory stays flat.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;
use tungstenite::{Bytes, Message, WebSocket};

use super::error::TransportError;
use super::memio::{push_eof, swap_outbound, swap_received, Outer, TlsIo};
use super::wire::{Masks, Outgoing};

/// TLS layers and WebSocket state.
pub(crate) struct State {
    pub(crate) outer: Outer,
    pub(crate) ws: WebSocket<TlsIo>,
}

/// Ciphertext of replies (pongs, close) the reader may leave queued for the
/// writer before it stops reading.
pub const REPLY_BACKLOG: usize = 64 * 1024;
/// The reader's first socket reads; it grows to [`READ_MAX`] the first
/// time a read fills it, so an idle tunnel keeps small buffers.
const READ_FIRST: usize = 4 * 1024;
/// The reader's socket reads during bulk transfers: a few largest messages
/// per system call.
const READ_MAX: usize = 256 * 1024;
/// How long the reader waits for the writer when no stall limit is set.
const DEFAULT_DRAIN_WAIT: Duration = Duration::from_secs(60);

pub(crate) struct Shared {
    state: Mutex<State>,
    /// Signalled when the writer took the queued ciphertext, or ended.
    drained: Condvar,
    /// The reader waits on `drained` (so the writer knows to signal).
    reader_waiting: AtomicBool,
    /// The writer is gone: nobody will drain the queue any more.
    writer_gone: AtomicBool,
    /// The socket, for writing (by the writer only) and shutting down.
    sock: Arc<TcpStream>,
    /// Held around "swap out ciphertext + write it".
    write_lock: Mutex<()>,
}

fn lock<T>(m: &Mutex<T>) -> Result<MutexGuard<'_, T>, TransportError> {
    m.lock().map_err(|_| TransportError::Poisoned)
}

pub(crate) fn split(
    state: State,
    read_sock: TcpStream,
    sock: Arc<TcpStream>,
    max_frame_size: usize,
) -> (WsReader, WsWriter) {
    let shared = Arc::new(Shared {
        state: Mutex::new(state),
        drained: Condvar::new(),
        reader_waiting: AtomicBool::new(false),
        writer_gone: AtomicBool::new(false),
        sock,
        write_lock: Mutex::new(()),
    });
    (
        WsReader {
            shared: shared.clone(),
            sock: read_sock,
            buf: Vec::new(),
            read_size: READ_FIRST,
            silence: None,
        },
        WsWriter {
            shared,
            max_frame_size,
            ciphertext: Vec::new(),
            stall: None,
            masks: Masks::new(),
        },
    )
}

/// One message from the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// Tunnel bytes, as read (no copy of the received data).
    Binary(Bytes),
    /// A ping; its pong is queued: call [`WsWriter::flush_control`].
    Ping,
    /// A pong to one of our pings, with its payload.
    Pong(Bytes),
    /// The service closed the WebSocket (code and reason, if given); the
    /// close reply is queued: call [`WsWriter::flush_control`].
    Close(Option<(u16, String)>),
}

/// The receiving half.
pub struct WsReader {
    shared: Arc<Shared>,
    sock: TcpStream,
    /// Read into from the socket, then swapped into the TLS layer's input
    /// (which hands its consumed buffer back): received bytes are not copied
    /// before OpenSSL reads them.
    buf: Vec<u8>,
    read_size: usize,
    /// Nothing received for this long ends the connection.
    silence: Option<Duration>,
}

impl std::fmt::Debug for WsReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WsReader")
    }
}

impl WsReader {
    /// Blocks until the next message. Text frames are an error
    /// ([`TransportError::TextFrame`]), not data. After `Ping` (and `Close`)
    /// the reply is queued inside; the session then asks the writer to
    /// [`WsWriter::flush_control`].
    pub fn read(&mut self) -> Result<Incoming, TransportError> {
        loop {
            {
                let st = lock(&self.shared.state)?;
                let mut st = self.wait_drained(st)?;
                match st.ws.read() {
                    Ok(msg) => return convert(&mut st, msg),
                    Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e.into()),
                }
            }
            if self.buf.len() < self.read_size {
                // Zeroed once per buffer and size: two buffers take turns.
                self.buf.resize(self.read_size, 0);
            }
            let n = match self.sock.read(&mut self.buf[..self.read_size]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if is_timeout(&e) => {
                    return Err(TransportError::Silent {
                        after: self.silence.unwrap_or_default(),
                    })
                }
                Err(e) => return Err(TransportError::Io(e)),
            };
            log::trace!("tunnel socket: read {n} bytes");
            if n == self.read_size {
                self.read_size = READ_MAX;
            }
            let mut st = lock(&self.shared.state)?;
            let State { outer, ws } = &mut *st;
            let inner = ws.get_mut().mem_mut();
            if n == 0 {
                push_eof(outer, inner)?;
            } else {
                swap_received(outer, inner, &mut self.buf, n)?;
            }
        }
    }

    /// Waits while the replies queued for the writer exceed
    /// [`REPLY_BACKLOG`]; the state lock is released meanwhile.
    fn wait_drained<'a>(
        &self,
        mut st: MutexGuard<'a, State>,
    ) -> Result<MutexGuard<'a, State>, TransportError> {
        let limit = self.silence.unwrap_or(DEFAULT_DRAIN_WAIT);
        while st.ws.get_ref().mem().outbound_len() > REPLY_BACKLOG {
            if self.shared.writer_gone.load(Ordering::SeqCst) {
                return Err(TransportError::Eof);
            }
            self.shared.reader_waiting.store(true, Ordering::SeqCst);
            let (guard, waited) = self
                .shared
                .drained
                .wait_timeout(st, limit)
                .map_err(|_| TransportError::Poisoned)?;
            st = guard;
            self.shared.reader_waiting.store(false, Ordering::SeqCst);
            if waited.timed_out() {
                return Err(TransportError::WriteStalled { after: limit });
            }
        }
        Ok(st)
    }

    /// Ends [`WsReader::read`] with [`TransportError::Silent`] when nothing
    /// at all arrives for `limit` (`None`: wait forever).
    pub fn set_silence_limit(&mut self, limit: Option<Duration>) -> io::Result<()> {
        self.silence = limit;
        self.sock.set_read_timeout(limit)
    }
}

/// Whether a socket error is a timeout (`SO_RCVTIMEO`/`SO_SNDTIMEO` report
/// `WouldBlock` on Unix).
fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn convert(st: &mut State, msg: Message) -> Result<Incoming, TransportError> {
    Ok(match msg {
        Message::Binary(b) => Incoming::Binary(b),
        Message::Text(t) => return Err(TransportError::TextFrame { len: t.len() }),
        Message::Ping(_) => {
            // Put the queued pong into the outbound ciphertext for the writer.
            queue_reply(st)?;
            Incoming::Ping
        }
        Message::Pong(p) => Incoming::Pong(p),
        Message::Close(c) => {
            queue_reply(st)?;
            Incoming::Close(c.map(|c| (u16::from(c.code), c.reason.as_str().to_owned())))
        }
        Message::Frame(_) => {
            return Err(TransportError::Protocol(
                "unexpected raw frame from tungstenite".into(),
            ))
        }
    })
}

fn queue_reply(st: &mut State) -> Result<(), TransportError> {
    match st.ws.flush() {
        Ok(()) => Ok(()),
        Err(tungstenite::Error::ConnectionClosed) | Err(tungstenite::Error::AlreadyClosed) => {
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// The sending half.
pub struct WsWriter {
    shared: Arc<Shared>,
    max_frame_size: usize,
    /// Ciphertext being written; its allocation is swapped with the TLS
    /// layer's on every message.
    ciphertext: Vec<u8>,
    /// A write without progress for this long ends the connection.
    stall: Option<Duration>,
    /// Masking keys of the data frames this side seals.
    masks: Masks,
}

impl Drop for WsWriter {
    fn drop(&mut self) {
        self.shared.writer_gone.store(true, Ordering::SeqCst);
        self.shared.drained.notify_all();
    }
}

impl std::fmt::Debug for WsWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WsWriter")
    }
}

impl WsWriter {
    /// Encrypts under the state lock with `f`, then writes the ciphertext.
    fn with_state<F>(&mut self, f: F) -> Result<(), TransportError>
    where
        F: FnOnce(&mut State) -> Result<(), TransportError>,
    {
        let _w = lock(&self.shared.write_lock)?;
        {
            let mut st = lock(&self.shared.state)?;
            let r = f(&mut st);
            // Take what was produced even on error (e.g. a close reply).
            let st = &mut *st;
            swap_outbound(
                &mut st.outer,
                st.ws.get_mut().mem_mut(),
                &mut self.ciphertext,
            )?;
            if self.shared.reader_waiting.load(Ordering::SeqCst) {
                self.shared.drained.notify_all();
            }
            r?;
        }
        if !self.ciphertext.is_empty() {
            log::trace!("tunnel socket: write {} bytes", self.ciphertext.len());
            if let Err(e) = (&*self.shared.sock).write_all(&self.ciphertext) {
                return Err(match self.stall {
                    Some(after) if is_timeout(&e) => TransportError::WriteStalled { after },
                    _ => TransportError::Io(e),
                });
            }
        }
        Ok(())
    }

    /// Sends one binary message of already framed tunnel bytes
    /// (at most `max_frame_size`).
    pub fn send_binary(&mut self, payload: &[u8]) -> Result<(), TransportError> {
        if payload.len() > self.max_frame_size {
            return Err(TransportError::FrameTooLarge {
                size: payload.len(),
                max: self.max_frame_size,
            });
        }
        self.send_binary_owned(payload.to_vec())
    }

    /// [`WsWriter::send_binary`] for a buffer the caller gives up, saving a copy.
    pub fn send_binary_owned(&mut self, payload: Vec<u8>) -> Result<(), TransportError> {
        if payload.len() > self.max_frame_size {
            return Err(TransportError::FrameTooLarge {
                size: payload.len(),
                max: self.max_frame_size,
            });
        }
        self.with_state(|st| Ok(st.ws.send(Message::Binary(payload.into()))?))
    }

    /// Sends each of `frames` as a binary message: seals it in place (before
    /// taking the state lock), writes it to TLS after whatever tungstenite
    /// has queued (a pong), and the ciphertext to the socket at once.
    /// `frames` is left empty (its allocation is kept). Refused, like any
    /// send, once a close frame was sent or received.
    pub fn send_wire(&mut self, frames: &mut Vec<Outgoing>) -> Result<(), TransportError> {
        if let Some(big) = frames.iter().find(|f| f.len() > self.max_frame_size) {
            return Err(TransportError::FrameTooLarge {
                size: big.len(),
                max: self.max_frame_size,
            });
        }
        for f in frames.iter_mut() {
            f.seal(self.masks.next_key());
        }
        self.with_state(|st| {
            if !st.ws.can_write() {
                frames.clear();
                return Err(TransportError::Closed);
            }
            st.ws.flush()?;
            let tls = st.ws.get_mut();
            for f in frames.drain(..) {
                tls.write_all(f.bytes()).map_err(TransportError::Io)?;
            }
            Ok(())
        })
    }

    /// Sends a ping (payload at most 125 bytes).
    pub fn send_ping(&mut self, payload: &[u8]) -> Result<(), TransportError> {
        if payload.len() > 125 {
            return Err(TransportError::FrameTooLarge {
                size: payload.len(),
                max: 125,
            });
        }
        self.with_state(|st| Ok(st.ws.send(Message::Ping(Bytes::copy_from_slice(payload)))?))
    }

    /// Starts (or answers) the close handshake with `code` and `reason`.
    pub fn send_close(&mut self, code: u16, reason: &str) -> Result<(), TransportError> {
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: reason.to_string().into(),
        };
        self.with_state(|st| {
            st.ws.close(Some(frame))?;
            match st.ws.flush() {
                Ok(()) | Err(tungstenite::Error::ConnectionClosed) => Ok(()),
                Err(e) => Err(e.into()),
            }
        })
    }

    /// Writes out pongs and close replies the reader queued.
    pub fn flush_control(&mut self) -> Result<(), TransportError> {
        self.with_state(|st| match st.ws.flush() {
            Ok(()) | Err(tungstenite::Error::ConnectionClosed) => Ok(()),
            Err(tungstenite::Error::AlreadyClosed) => Ok(()),
            Err(e) => Err(e.into()),
        })
    }

    /// Ends a send with [`TransportError::WriteStalled`] when the socket
    /// accepts nothing for `limit` (`None`: block until the peer reads); the
    /// connection must then be dropped, since part of a frame may have been
    /// written.
    pub fn set_stall_limit(&mut self, limit: Option<Duration>) -> io::Result<()> {
        self.stall = limit;
        self.shared.sock.set_write_timeout(limit)
    }

    /// A handle that shuts the socket down, from any thread.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            sock: self.shared.sock.clone(),
        }
    }
}

/// Shuts the tunnel socket down both ways, so a blocked [`WsReader::read`]
/// (and a blocked write) returns promptly.
#[derive(Clone, Debug)]
pub struct ShutdownHandle {
    sock: Arc<TcpStream>,
}

impl ShutdownHandle {
    pub(crate) fn new(sock: Arc<TcpStream>) -> Self {
        ShutdownHandle { sock }
    }

    /// Shuts the socket down; errors (already shut, not connected) are ignored.
    pub fn shutdown(&self) {
        if let Err(e) = self.sock.shutdown(Shutdown::Both) {
            log::debug!("tunnel socket shutdown: {e}");
        }
    }
}
