//! Logging: `-v` verbosity to an env_logger filter on stderr (`RUST_LOG`
//! overrides), a rate limit for lines that peer input can trigger, and safe
//! rendering of text that came from the network.

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use log::LevelFilter;

/// Longest piece of untrusted text [`printable`] keeps.
const PRINTABLE_MAX: usize = 256;

/// The log level for a `-v` value: 0 off, 1 fatal (the final error, which
/// is printed whatever the level: no log line), 2 error, 3 warn, 4 info,
/// 5 debug, 6 and above trace.
pub fn level_for(verbosity: u8) -> LevelFilter {
    match verbosity {
        0 | 1 => LevelFilter::Off,
        2 => LevelFilter::Error,
        3 => LevelFilter::Warn,
        4 => LevelFilter::Info,
        5 => LevelFilter::Debug,
        _ => LevelFilter::Trace,
    }
}

/// Sets up the global logger on stderr, in the reference's line format
/// (see [`write_line`]). `RUST_LOG`, when set and not empty, replaces the
/// `-v` level. A second call does nothing.
pub fn init(verbosity: u8) {
    let mut builder = env_logger::Builder::new();
    builder
        .target(env_logger::Target::Pipe(Box::new(StderrSink::default())))
        .filter_level(level_for(verbosity))
        .format(|buf, record| write_line(buf, record.level(), record.args()));
    if level_for(verbosity) > LevelFilter::Debug {
        // tungstenite hex-dumps every frame at trace: slow and useless next
        // to our own trace lines. RUST_LOG can still ask for it.
        builder.filter_module("tungstenite", LevelFilter::Debug);
    }
    if let Ok(filters) = std::env::var("RUST_LOG") {
        if !filters.trim().is_empty() {
            builder.parse_filters(&filters);
        }
    }
    // Fails only when a logger is already installed; keep that one.
    let _ = builder.try_init();
}

/// One log line as the reference's Boost.Log format writes it:
/// `[2026-12-06 02:03:17.123456] (0x00007f5b8c0fd740) [info] message`, with
/// the local time, the thread and the reference's severity names (`warning`,
/// not `warn`), so what watches the reference's logs (`grep '\[error\]'`)
/// watches ours.
pub fn write_line(
    out: &mut dyn std::io::Write,
    level: log::Level,
    message: &fmt::Arguments<'_>,
) -> std::io::Result<()> {
    let severity = match level {
        log::Level::Error => "error",
        log::Level::Warn => "warning",
        log::Level::Info => "info",
        log::Level::Debug => "debug",
        log::Level::Trace => "trace",
    };
    // SAFETY: pthread_self has no preconditions.
    let thread = unsafe { libc::pthread_self() } as u64;
    writeln!(
        out,
        "[{}] ({thread:#018x}) [{severity}] {message}",
        local_time()
    )
}

/// How long a log line waits for standard error to take it before it is
/// dropped (see [`StderrSink`]).
const STDERR_PATIENCE: Duration = Duration::from_millis(250);

/// How long the final error line waits for standard error.
const FINAL_PATIENCE: Duration = Duration::from_secs(2);

/// Standard error for log lines, never waited on for long. A pipe whose
/// reader stopped reading (`| logger` stuck, a slow journal) or a terminal
/// on hold would otherwise block every thread that logs: the tunnel, the
/// connections, a SIGTERM. A line stderr cannot take within
/// [`STDERR_PATIENCE`] is dropped and counted; while it stays stuck, lines
/// are dropped at once; the count is logged when a line goes through
/// again. A failed write (a closed pipe, a full disk) is ignored.
#[derive(Default)]
struct StderrSink {
    dropped: u64,
    stuck: bool,
}

impl std::io::Write for StderrSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        let patience = if self.stuck {
            Duration::ZERO
        } else {
            STDERR_PATIENCE
        };
        if !write_stderr(buf, patience, self.dropped) {
            self.dropped += 1;
            self.stuck = true;
            return Ok(());
        }
        (self.dropped, self.stuck) = (0, false);
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Writes `line` to standard error if it can take it within `patience`,
/// after a note of `dropped` earlier lines when there were some; false when
/// it could not (nothing, or part of the line, was written).
fn write_stderr(line: &[u8], patience: Duration, dropped: u64) -> bool {
    if !stderr_writable(patience) {
        return false;
    }
    if dropped > 0 {
        let mut note = Vec::new();
        let _ = write_line(
            &mut note,
            log::Level::Warn,
            &format_args!("{dropped} log line(s) dropped: standard error was not taking them"),
        );
        if !write_fd2(&note, patience) {
            return false;
        }
    }
    write_fd2(line, patience)
}

/// Writes all of `bytes` to fd 2, waiting at most `patience` each time it
/// is full; false when it stayed full or failed.
fn write_fd2(mut bytes: &[u8], patience: Duration) -> bool {
    while !bytes.is_empty() {
        // SAFETY: writes from a valid buffer of the given length.
        let n = unsafe { libc::write(2, bytes.as_ptr().cast(), bytes.len()) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return false;
        }
        bytes = &bytes[usize::try_from(n).unwrap_or(0)..];
        if !bytes.is_empty() && !stderr_writable(patience) {
            return false;
        }
    }
    true
}

/// Whether fd 2 can take a write now or within `patience` (for a pipe:
/// room for at least an atomic write of 4 KiB, more than a log line).
fn stderr_writable(patience: Duration) -> bool {
    let mut fds = libc::pollfd {
        fd: 2,
        events: libc::POLLOUT,
        revents: 0,
    };
    let ms = libc::c_int::try_from(patience.as_millis()).unwrap_or(libc::c_int::MAX);
    loop {
        // SAFETY: one valid pollfd, and its count.
        let rc = unsafe { libc::poll(&mut fds, 1, ms) };
        if rc < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        // An error condition (POLLERR, a closed reader) is left to the
        // write, whose failure is ignored.
        return rc > 0;
    }
}

/// Prints `text` and a newline on standard error, as the last words of the
/// process: waits at most a moment for a stuck stderr, ignores a failed
/// write (a closed pipe must not turn the exit status into a panic's).
pub fn print_error(text: &str) {
    let mut line = String::with_capacity(text.len() + 1);
    line.push_str(text);
    line.push('\n');
    write_stderr(line.as_bytes(), FINAL_PATIENCE, 0);
}

/// Now, in local time (`TZ`), to the microsecond.
fn local_time() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = libc::time_t::try_from(now.as_secs()).unwrap_or(libc::time_t::MAX);
    // SAFETY: tm is plain data (all zeroes is valid); localtime_r fills it
    // from `secs` and returns null only on failure, checked below.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        (!libc::localtime_r(&secs, &mut tm).is_null()).then_some(tm)
    };
    match tm {
        Some(tm) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}",
            tm.tm_year + 1900,
            tm.tm_mon + 1,
            tm.tm_mday,
            tm.tm_hour,
            tm.tm_min,
            tm.tm_sec,
            now.subsec_micros()
        ),
        None => format!("{}.{:06}", now.as_secs(), now.subsec_micros()),
    }
}

/// Text from the network (a close reason, a status reason, a service id)
/// made safe for a log line: control characters escaped, cut at
/// [`PRINTABLE_MAX`] characters.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(PRINTABLE_MAX));
    for (i, c) in text.chars().enumerate() {
        if i == PRINTABLE_MAX {
            out.push_str("...");
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Lines logged per window and category before a [`Limiter`] holds back.
const BURST: u32 = 5;
/// The window of a [`Limiter`].
const WINDOW: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy)]
struct Window {
    start: Option<Instant>,
    logged: u32,
    held_back: u64,
}

/// Rate limit for log lines that peer input can trigger at will (a
/// thousand bad messages must not make a thousand lines): per category, the
/// first few lines of a window are logged, the rest are counted, and the
/// count is reported with the next line logged.
#[derive(Debug)]
pub struct Limiter {
    windows: Mutex<Vec<Window>>,
}

impl Limiter {
    /// A limiter for categories `0..categories`.
    pub fn new(categories: usize) -> Self {
        let w = Window {
            start: None,
            logged: 0,
            held_back: 0,
        };
        Limiter {
            windows: Mutex::new(vec![w; categories]),
        }
    }

    /// Logs `what` at `level` unless this category is over its budget.
    pub fn log(&self, category: usize, level: log::Level, what: &dyn fmt::Display) {
        if !log::log_enabled!(level) {
            return;
        }
        match self.admit(category, Instant::now()) {
            None => {}
            Some(0) => log::log!(level, "{what}"),
            Some(n) => log::log!(level, "{what} ({n} similar line(s) held back)"),
        }
    }

    /// Whether a line of `category` may be logged at `now`: `Some(lines
    /// held back since the last one)`, or `None` to hold this one back.
    fn admit(&self, category: usize, now: Instant) -> Option<u64> {
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let w = windows.get_mut(category)?;
        if w.start.map_or(true, |s| now.duration_since(s) >= WINDOW) {
            w.start = Some(now);
            w.logged = 0;
        }
        if w.logged >= BURST {
            w.held_back += 1;
            return None;
        }
        w.logged += 1;
        Some(std::mem::take(&mut w.held_back))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untrusted_text_is_escaped_and_cut() {
        assert_eq!(printable("plain words"), "plain words");
        assert_eq!(printable("a\nb\x1b[31m"), "a\\nb\\u{1b}[31m");
        let long = "x".repeat(1000);
        assert_eq!(printable(&long).len(), PRINTABLE_MAX + 3);
    }

    #[test]
    fn the_limiter_logs_a_burst_per_window_and_counts_the_rest() {
        let l = Limiter::new(2);
        let t0 = Instant::now();
        for _ in 0..BURST {
            assert_eq!(l.admit(0, t0), Some(0));
        }
        assert_eq!(l.admit(0, t0), None);
        assert_eq!(l.admit(0, t0), None);
        assert_eq!(l.admit(1, t0), Some(0), "categories are separate");
        assert_eq!(
            l.admit(0, t0 + WINDOW),
            Some(2),
            "the next window reports the count"
        );
        assert_eq!(l.admit(9, t0), None, "unknown category");
    }

    #[test]
    fn verbosity_maps_like_the_reference() {
        assert_eq!(level_for(0), LevelFilter::Off);
        assert_eq!(level_for(1), LevelFilter::Off);
        assert_eq!(level_for(2), LevelFilter::Error);
        assert_eq!(level_for(3), LevelFilter::Warn);
        assert_eq!(level_for(4), LevelFilter::Info);
        assert_eq!(level_for(5), LevelFilter::Debug);
        assert_eq!(level_for(6), LevelFilter::Trace);
        assert_eq!(level_for(255), LevelFilter::Trace);
    }

    #[test]
    fn lines_are_in_the_reference_format() {
        let mut out = Vec::new();
        write_line(&mut out, log::Level::Warn, &format_args!("a {}", "b")).unwrap();
        let line = String::from_utf8(out).unwrap();
        // [YYYY-MM-DD HH:MM:SS.ffffff] (0x<16 hex>) [warning] a b
        let (stamp, rest) = line.split_once("] (0x").unwrap();
        assert_eq!(stamp.len(), 27, "{line}");
        assert_eq!(&stamp[..1], "[");
        assert_eq!(
            (&stamp[5..6], &stamp[11..12], &stamp[20..21]),
            ("-", " ", ".")
        );
        let (thread, rest) = rest.split_once(") ").unwrap();
        assert_eq!(thread.len(), 16, "{line}");
        assert!(thread.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(rest, "[warning] a b\n");
        for (level, word) in [
            (log::Level::Error, "[error] "),
            (log::Level::Info, "[info] "),
            (log::Level::Debug, "[debug] "),
            (log::Level::Trace, "[trace] "),
        ] {
            let mut out = Vec::new();
            write_line(&mut out, level, &format_args!("x")).unwrap();
            assert!(String::from_utf8(out).unwrap().contains(word));
        }
    }
}
