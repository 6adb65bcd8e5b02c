//! Orderly shutdown on SIGINT and SIGTERM: a close frame to the service,
//! local connections closed, exit 0 within a second.
//!
//! The signals are blocked in every thread (the mask is inherited, so
//! [`install`] runs before any thread is spawned) and one thread waits for
//! them with `sigwait`, so no work happens in a signal handler.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender};

use crate::transport::ShutdownHandle;

/// How long a stopping proxy waits for the service to answer its close frame.
pub const CLOSE_GRACE: Duration = Duration::from_millis(600);

/// What the current tunnel connection needs to be closed from outside.
pub struct Hook {
    /// Asks the writer to send a close frame.
    pub send_close: Box<dyn Fn() + Send>,
    /// Unblocks the reader if the service does not answer in time.
    pub shutdown: ShutdownHandle,
}

/// A stop request shared by the signal thread and the session.
pub struct Stop {
    flag: AtomicBool,
    wake_tx: Sender<()>,
    wake_rx: Receiver<()>,
    hook: Mutex<Option<Hook>>,
}

impl Stop {
    pub fn new() -> Arc<Stop> {
        let (wake_tx, wake_rx) = bounded(1);
        Arc::new(Stop {
            flag: AtomicBool::new(false),
            wake_tx,
            wake_rx,
            hook: Mutex::new(None),
        })
    }

    /// Whether a stop was requested.
    pub fn is_set(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// Waits up to `d`; true when a stop was requested meanwhile.
    pub fn wait(&self, d: Duration) -> bool {
        if self.is_set() {
            return true;
        }
        let _ = self.wake_rx.recv_timeout(d);
        self.is_set()
    }

    /// Registers the live tunnel connection (None when it is gone).
    pub fn set_hook(&self, hook: Option<Hook>) {
        if let Ok(mut h) = self.hook.lock() {
            *h = hook;
        }
    }

    /// Requests a stop: closes the tunnel connection politely, then firmly.
    pub fn trigger(&self) {
        self.flag.store(true, Ordering::SeqCst);
        let _ = self.wake_tx.try_send(());
        let shutdown = match self.hook.lock() {
            Ok(h) => h.as_ref().map(|h| {
                (h.send_close)();
                h.shutdown.clone()
            }),
            Err(_) => None,
        };
        if let Some(s) = shutdown {
            // The session clears the hook when the connection has ended.
            let deadline = Instant::now() + CLOSE_GRACE;
            while Instant::now() < deadline {
                if self.hook.lock().map(|h| h.is_none()).unwrap_or(true) {
                    return;
                }
                thread::sleep(Duration::from_millis(10));
            }
            s.shutdown();
        }
    }
}

/// Blocks SIGINT and SIGTERM in this thread (and every thread it spawns
/// later) and starts the thread that turns them into [`Stop::trigger`].
pub fn install(stop: Arc<Stop>) -> std::io::Result<()> {
    // SAFETY: sigset manipulation on a local, zero-initialised set, and
    // pthread_sigmask on the calling thread; return codes are checked.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            return Err(std::io::Error::from_raw_os_error(rc));
        }
        set
    };
    thread::Builder::new()
        .name("signals".into())
        .stack_size(64 * 1024)
        .spawn(move || loop {
            let mut sig: libc::c_int = 0;
            // SAFETY: `set` is a valid signal set; `sig` receives the number.
            if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
                continue;
            }
            let name = if sig == libc::SIGINT {
                "SIGINT"
            } else {
                "SIGTERM"
            };
            // Stop first: logging may wait on a stuck stderr.
            stop.trigger();
            log::info!("{name} received: closing the tunnel");
        })?;
    Ok(())
}
