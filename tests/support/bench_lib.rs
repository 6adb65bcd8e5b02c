//! Benchmark measurements shared by `make bench` (tests/support/bench.rs:
//! release binaries, full sizes) and the smoke test (tests/bench_smoke.rs:
//! debug binaries, tiny sizes): the tunnel chain against its limits, in one run.
//!
//! The chain is client -> source localproxy -> TLS WebSocket -> tunnel-service
//! -> TLS WebSocket -> destination localproxy -> server, all on 127.0.0.1.
//! The limits measured beside it are a direct TCP loopback copy and a plain
//! TLS loopback pipe (OpenSSL, the same acceptor and connector defaults as the
//! product). Every figure is the median of several repetitions; the spread
//! (min..max) says how noisy it was. Nothing here asserts a timing.
#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use openssl::ssl::{SslAcceptor, SslConnector, SslMethod, SslVerifyMode, SslVersion};

use crate::common::{listening_port, proxy_with, random_bytes, settings_file, Proc, Service};

/// How much each phase moves and how often it repeats.
#[derive(Debug, Clone)]
pub struct Sizes {
    /// Repetitions of every timed figure.
    pub reps: usize,
    /// Bytes of one bulk transfer (one connection, one direction).
    pub bulk: usize,
    /// Bytes per connection in the aggregate runs with 8 and 64 connections.
    pub agg8: usize,
    pub agg64: usize,
    /// 64-byte round trips per repetition (after a warm-up).
    pub echo_rounds: usize,
    /// Connections opened one after another to time setup.
    pub setup_conns: usize,
    /// Idle connections held open while RSS is read.
    pub idle_conns: usize,
    /// Simultaneous connections of the scale run.
    pub scale_conns: usize,
}

impl Sizes {
    /// `make bench`: a few minutes on 2 cores.
    pub fn full() -> Sizes {
        Sizes {
            reps: 5,
            bulk: 1 << 30,
            agg8: 32 << 20,
            agg64: 4 << 20,
            echo_rounds: 2000,
            setup_conns: 300,
            idle_conns: 256,
            scale_conns: 1000,
        }
    }

    /// `--quick`: every phase, small sizes, seconds.
    pub fn quick() -> Sizes {
        Sizes {
            reps: 3,
            bulk: 32 << 20,
            agg8: 4 << 20,
            agg64: 512 << 10,
            echo_rounds: 500,
            setup_conns: 100,
            idle_conns: 256,
            scale_conns: 1000,
        }
    }

    /// The smoke test in `make test`: debug binaries, tiny sizes.
    pub fn smoke() -> Sizes {
        Sizes {
            reps: 2,
            bulk: 1 << 20,
            agg8: 128 << 10,
            agg64: 16 << 10,
            echo_rounds: 50,
            setup_conns: 10,
            idle_conns: 16,
            scale_conns: 40,
        }
    }
}

/// One row of the table: repeated samples of one quantity.
#[derive(Debug, Clone)]
pub struct Figure {
    /// Stable name in the JSON output.
    pub key: String,
    pub label: String,
    pub unit: &'static str,
    pub samples: Vec<f64>,
    /// Context (ratios to the limits, what was counted).
    pub note: String,
}

impl Figure {
    fn new(key: &str, label: impl Into<String>, unit: &'static str, samples: Vec<f64>) -> Figure {
        Figure {
            key: key.into(),
            label: label.into(),
            unit,
            samples,
            note: String::new(),
        }
    }

    fn note(mut self, note: impl Into<String>) -> Figure {
        self.note = note.into();
        self
    }

    pub fn median(&self) -> f64 {
        let mut s = self.samples.clone();
        s.sort_by(|a, b| a.total_cmp(b));
        match s.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => s[n / 2],
            n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
        }
    }

    pub fn min(&self) -> f64 {
        self.samples.iter().copied().fold(f64::INFINITY, f64::min)
    }

    pub fn max(&self) -> f64 {
        self.samples
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max)
    }

    /// (max - min) / median, in percent.
    pub fn spread_pct(&self) -> f64 {
        let m = self.median();
        if m == 0.0 || self.samples.len() < 2 {
            0.0
        } else {
            (self.max() - self.min()) / m * 100.0
        }
    }
}

/// Everything one run measured.
#[derive(Debug, Clone)]
pub struct Report {
    pub figures: Vec<Figure>,
    pub machine: String,
    pub sizes: Sizes,
    pub elapsed: Duration,
}

fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        "-".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

impl Report {
    pub fn get(&self, key: &str) -> Option<&Figure> {
        self.figures.iter().find(|f| f.key == key)
    }

    /// The table as printed and pasted into the README.
    pub fn table(&self) -> String {
        let mut rows = vec![[
            "Figure".to_string(),
            "Median".to_string(),
            "Unit".to_string(),
            "Spread (min..max)".to_string(),
            "Notes".to_string(),
        ]];
        for f in &self.figures {
            let spread = if f.samples.len() < 2 {
                "1 sample".to_string()
            } else {
                format!(
                    "{}..{} ({:.0}%)",
                    fmt_num(f.min()),
                    fmt_num(f.max()),
                    f.spread_pct()
                )
            };
            rows.push([
                f.label.clone(),
                fmt_num(f.median()),
                f.unit.to_string(),
                spread,
                f.note.clone(),
            ]);
        }
        let mut width = [0usize; 5];
        for r in &rows {
            for (w, c) in width.iter_mut().zip(r.iter()) {
                *w = (*w).max(c.chars().count());
            }
        }
        let mut out = String::new();
        for (i, r) in rows.iter().enumerate() {
            let mut line = String::from("|");
            for (c, (cell, w)) in r.iter().zip(width.iter()).enumerate() {
                let pad = w - cell.chars().count();
                if c == 1 {
                    line.push_str(&format!(" {}{} |", " ".repeat(pad), cell));
                } else {
                    line.push_str(&format!(" {}{} |", cell, " ".repeat(pad)));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
            if i == 0 {
                let mut sep = String::from("|");
                for (c, w) in width.iter().enumerate() {
                    if c == 1 {
                        sep.push_str(&format!("{}:|", "-".repeat(w + 1)));
                    } else {
                        sep.push_str(&format!("{}|", "-".repeat(w + 2)));
                    }
                }
                out.push_str(&sep);
                out.push('\n');
            }
        }
        out
    }

    pub fn json(&self) -> serde_json::Value {
        let figures: Vec<serde_json::Value> = self
            .figures
            .iter()
            .map(|f| {
                serde_json::json!({
                    "key": f.key,
                    "label": f.label,
                    "unit": f.unit,
                    "median": f.median(),
                    "min": f.min(),
                    "max": f.max(),
                    "spread_pct": f.spread_pct(),
                    "samples": f.samples,
                    "note": f.note,
                })
            })
            .collect();
        serde_json::json!({
            "machine": self.machine,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "sizes": {
                "reps": self.sizes.reps,
                "bulk_bytes": self.sizes.bulk,
                "agg8_bytes_per_conn": self.sizes.agg8,
                "agg64_bytes_per_conn": self.sizes.agg64,
                "echo_rounds": self.sizes.echo_rounds,
                "setup_conns": self.sizes.setup_conns,
                "idle_conns": self.sizes.idle_conns,
                "scale_conns": self.sizes.scale_conns,
            },
            "figures": figures,
        })
    }
}

// ---------------------------------------------------------------- processes

/// VmRSS and VmHWM of a process, in KiB, and its thread count.
#[derive(Debug, Clone, Copy, Default)]
pub struct Mem {
    pub rss_kib: u64,
    pub hwm_kib: u64,
    /// Private memory (heap, stacks) and mapped files (the binary, OpenSSL).
    pub anon_kib: u64,
    pub file_kib: u64,
    pub threads: u64,
}

pub fn mem(pid: u32) -> Mem {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Mem {
        rss_kib: field("VmRSS:"),
        hwm_kib: field("VmHWM:"),
        anon_kib: field("RssAnon:"),
        file_kib: field("RssFile:"),
        threads: field("Threads:"),
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// User plus system CPU time of a process so far, in seconds.
pub fn cpu_secs(pid: u32) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) in parentheses:
    // state is field 3, utime 14, stime 15.
    let rest = text.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    f.iter().sum::<u64>() as f64 / hz
}

/// Raises the soft open-file limit to the hard limit, so this process (the
/// clients and servers) and the proxies it spawns, which inherit it, can hold
/// thousands of sockets. Returns the new soft limit.
pub fn raise_nofile() -> libc::rlim_t {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        let want = lim.rlim_max;
        if lim.rlim_cur < want {
            lim.rlim_cur = want;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    lim.rlim_cur
}

/// Samples the peak VmRSS of some processes while a phase runs.
struct RssSampler {
    stop: Arc<AtomicBool>,
    peaks: Arc<Vec<AtomicU64>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl RssSampler {
    fn start(pids: Vec<u32>) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peaks: Arc<Vec<AtomicU64>> = Arc::new(pids.iter().map(|_| AtomicU64::new(0)).collect());
        let (s, p) = (stop.clone(), peaks.clone());
        let thread = thread::spawn(move || loop {
            for (i, pid) in pids.iter().enumerate() {
                p[i].fetch_max(mem(*pid).rss_kib, Ordering::Relaxed);
            }
            if s.load(Ordering::Relaxed) {
                break;
            }
            thread::sleep(Duration::from_millis(20)); // sampling period
        });
        RssSampler {
            stop,
            peaks,
            thread: Some(thread),
        }
    }

    /// Stops sampling; the peak RSS of each process, in KiB.
    fn finish(mut self) -> Vec<u64> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.peaks
            .iter()
            .map(|p| p.load(Ordering::Relaxed))
            .collect()
    }
}

// ------------------------------------------------------------ the test server

/// Commands of the bench server (first byte of a connection).
const ECHO: u8 = b'E';
const UPLOAD: u8 = b'U';
const DOWNLOAD: u8 = b'D';
const CHUNK: usize = 256 << 10;

/// The server behind the destination (and the direct TCP baseline):
/// `E` echoes until EOF; `U` + u64 N reads N bytes and answers one byte;
/// `D` + u64 N writes N bytes.
pub fn bench_server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind bench server");
    let port = l.local_addr().expect("addr").port();
    thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { continue };
            let _ = thread::Builder::new().stack_size(256 << 10).spawn(move || {
                let _ = serve(s);
            });
        }
    });
    port
}

fn serve(mut s: TcpStream) -> io::Result<()> {
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut cmd = [0u8; 1];
    s.read_exact(&mut cmd)?;
    match cmd[0] {
        ECHO => {
            let mut buf = vec![0u8; 64 << 10];
            loop {
                let n = s.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                s.write_all(&buf[..n])?;
            }
            let _ = s.shutdown(Shutdown::Write);
        }
        UPLOAD => {
            let n = read_len(&mut s)?;
            sink(&mut s, n)?;
            s.write_all(b"K")?;
            // Wait for the client to close, so the ack is not cut short.
            let _ = s.read(&mut cmd);
        }
        DOWNLOAD => {
            let n = read_len(&mut s)?;
            let buf = pattern();
            let mut left = n;
            while left > 0 {
                let k = left.min(buf.len());
                s.write_all(&buf[..k])?;
                left -= k;
            }
            let _ = s.read(&mut cmd);
        }
        _ => {}
    }
    Ok(())
}

fn read_len(s: &mut impl Read) -> io::Result<usize> {
    let mut b = [0u8; 8];
    s.read_exact(&mut b)?;
    Ok(u64::from_be_bytes(b) as usize)
}

/// Reads exactly `n` bytes and throws them away.
fn sink(s: &mut impl Read, n: usize) -> io::Result<()> {
    let mut buf = vec![0u8; CHUNK];
    let mut left = n;
    while left > 0 {
        let k = s.read(&mut buf[..left.min(CHUNK)])?;
        if k == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        left -= k;
    }
    Ok(())
}

/// Incompressible bytes to send (nothing on the path compresses, but be fair).
fn pattern() -> Arc<Vec<u8>> {
    static P: std::sync::OnceLock<Arc<Vec<u8>>> = std::sync::OnceLock::new();
    P.get_or_init(|| Arc::new(random_bytes(0x5eed, CHUNK)))
        .clone()
}

fn write_n(s: &mut impl Write, n: usize) -> io::Result<()> {
    let buf = pattern();
    let mut left = n;
    while left > 0 {
        let k = left.min(buf.len());
        s.write_all(&buf[..k])?;
        left -= k;
    }
    Ok(())
}

/// A client connection with timeouts; `None` if it cannot connect.
fn dial(port: u16) -> io::Result<TcpStream> {
    let s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.set_write_timeout(Some(Duration::from_secs(30)))?;
    Ok(s)
}

/// Sends `n` bytes to the server; returns the time until it acknowledged all.
fn upload(port: u16, n: usize) -> io::Result<Duration> {
    let mut s = dial(port)?;
    let t0 = Instant::now();
    let mut head = vec![UPLOAD];
    head.extend_from_slice(&(n as u64).to_be_bytes());
    s.write_all(&head)?;
    write_n(&mut s, n)?;
    let mut ack = [0u8; 1];
    s.read_exact(&mut ack)?;
    Ok(t0.elapsed())
}

/// Asks the server for `n` bytes; returns the time until all arrived.
fn download(port: u16, n: usize) -> io::Result<Duration> {
    let mut s = dial(port)?;
    let t0 = Instant::now();
    let mut head = vec![DOWNLOAD];
    head.extend_from_slice(&(n as u64).to_be_bytes());
    s.write_all(&head)?;
    sink(&mut s, n)?;
    Ok(t0.elapsed())
}

fn mbps(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64().max(1e-9)
}

/// 64-byte round trips on one connection; (p50, p99) in microseconds.
fn echo_latency(port: u16, rounds: usize) -> io::Result<(f64, f64)> {
    let mut s = dial(port)?;
    s.write_all(&[ECHO])?;
    let msg = [0x42u8; 64];
    let mut back = [0u8; 64];
    let mut times = Vec::with_capacity(rounds);
    for i in 0..rounds + rounds / 10 + 10 {
        let t0 = Instant::now();
        s.write_all(&msg)?;
        s.read_exact(&mut back)?;
        // The first rounds warm up (connection setup, caches).
        if i >= rounds / 10 + 10 {
            times.push(t0.elapsed().as_secs_f64() * 1e6);
        }
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let pick = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    Ok((pick(0.50), pick(0.99)))
}

/// Connections opened, one byte echoed, closed, one after another; per second.
fn setup_rate(port: u16, count: usize) -> io::Result<f64> {
    let t0 = Instant::now();
    for _ in 0..count {
        let mut s = dial(port)?;
        s.write_all(&[ECHO, b'x'])?;
        let mut b = [0u8; 1];
        s.read_exact(&mut b)?;
        if b[0] != b'x' {
            return Err(io::Error::other("wrong echo byte"));
        }
    }
    Ok(count as f64 / t0.elapsed().as_secs_f64())
}

/// `count` connections spread over `ports`, half uploading and half
/// downloading `each` bytes at the same time; aggregate MB/s.
fn aggregate(ports: &[u16], count: usize, each: usize) -> io::Result<f64> {
    let barrier = Arc::new(Barrier::new(count + 1));
    let workers: Vec<_> = (0..count)
        .map(|i| {
            let port = ports[i % ports.len()];
            let b = barrier.clone();
            thread::spawn(move || {
                b.wait();
                if i % 2 == 0 {
                    upload(port, each)
                } else {
                    download(port, each)
                }
            })
        })
        .collect();
    barrier.wait();
    let t0 = Instant::now();
    for w in workers {
        w.join()
            .map_err(|_| io::Error::other("aggregate worker panicked"))??;
    }
    Ok(mbps(count * each, t0.elapsed()))
}

/// Opens `count` connections to `ports` (round robin) from a few threads,
/// each echoing its own `ECHO` + 16-byte payload before the next is opened;
/// returns the open connections and how many were verified.
fn open_verified(ports: &[u16], count: usize, salt: u64) -> (Vec<TcpStream>, usize) {
    let threads = 8.min(count.max(1));
    let out = Arc::new(Mutex::new(Vec::with_capacity(count)));
    let ok = Arc::new(AtomicU64::new(0));
    let ports = Arc::new(ports.to_vec());
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let (out, ok, ports) = (out.clone(), ok.clone(), ports.clone());
            thread::spawn(move || {
                for i in (t..count).step_by(threads) {
                    let payload = unique(salt, i);
                    let r = dial(ports[i % ports.len()]).and_then(|mut s| {
                        s.write_all(&[ECHO])?;
                        check_echo(&mut s, &payload)?;
                        Ok(s)
                    });
                    if let Ok(s) = r {
                        ok.fetch_add(1, Ordering::Relaxed);
                        out.lock().expect("streams").push(s);
                    }
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    let streams = std::mem::take(&mut *out.lock().expect("streams"));
    (streams, ok.load(Ordering::Relaxed) as usize)
}

fn unique(salt: u64, i: usize) -> [u8; 16] {
    let mut p = [0u8; 16];
    p[..8].copy_from_slice(&salt.to_be_bytes());
    p[8..].copy_from_slice(&(i as u64).to_be_bytes());
    p
}

fn check_echo(s: &mut TcpStream, payload: &[u8]) -> io::Result<()> {
    s.write_all(payload)?;
    let mut back = vec![0u8; payload.len()];
    s.read_exact(&mut back)?;
    if back != payload {
        return Err(io::Error::other("echo mismatch"));
    }
    Ok(())
}

/// Every open connection echoes a second unique payload; how many did.
fn reverify(streams: &mut [TcpStream], salt: u64) -> usize {
    // Write to all first, then read all: every connection is in flight at once.
    let mut ok = vec![false; streams.len()];
    for (i, s) in streams.iter_mut().enumerate() {
        ok[i] = s.write_all(&unique(salt, i)).is_ok();
    }
    let mut n = 0;
    for (i, s) in streams.iter_mut().enumerate() {
        let mut back = [0u8; 16];
        if ok[i] && s.read_exact(&mut back).is_ok() && back == unique(salt, i) {
            n += 1;
        }
    }
    n
}

/// Waits (polling, with a deadline) until a process is back to `threads`
/// threads or fewer: its connections have been torn down.
fn settle(pid: u32, threads: u64, limit: Duration) {
    let deadline = Instant::now() + limit;
    while mem(pid).threads > threads {
        if Instant::now() >= deadline {
            eprintln!(
                "bench: process {pid} still has {} threads (idle: {threads}) after {limit:?}",
                mem(pid).threads
            );
            return;
        }
        thread::sleep(Duration::from_millis(20)); // polling interval
    }
}

/// A process's thread count once it has stayed the same for 200 ms (a
/// source starts its listener threads just after logging their ports).
fn stable_threads(pid: u32) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = mem(pid).threads;
    let mut same = 0;
    while same < 10 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20)); // polling interval
        let now = mem(pid).threads;
        if now == last {
            same += 1;
        } else {
            same = 0;
            last = now;
        }
    }
    last
}

// ------------------------------------------------------------- the TLS limit

/// A TLS server on loopback with the service's acceptor defaults; each
/// connection reads a u64 N, then N bytes, and answers one byte.
struct TlsPipe {
    port: u16,
    connector: SslConnector,
}

impl TlsPipe {
    fn start() -> TlsPipe {
        let id =
            crate::common::cert::self_signed(&["localhost", "127.0.0.1"]).expect("certificate");
        let mut b =
            SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).expect("acceptor");
        b.set_certificate(&id.cert).expect("cert");
        b.set_private_key(&id.key).expect("key");
        let acceptor = Arc::new(b.build());
        let l = TcpListener::bind("127.0.0.1:0").expect("bind tls");
        let port = l.local_addr().expect("addr").port();
        thread::spawn(move || {
            for s in l.incoming() {
                let Ok(s) = s else { continue };
                let a = acceptor.clone();
                thread::spawn(move || {
                    let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
                    let Ok(mut tls) = a.accept(s) else { return };
                    let r = read_len(&mut tls).and_then(|n| sink(&mut tls, n));
                    if r.is_ok() {
                        let _ = tls.write_all(b"K");
                        let _ = tls.flush();
                    }
                    let mut b = [0u8; 1];
                    let _ = tls.read(&mut b);
                });
            }
        });
        // The product's connector: TLS 1.2 or newer, OpenSSL's default ciphers.
        let mut c = SslConnector::builder(SslMethod::tls_client()).expect("connector");
        c.set_min_proto_version(Some(SslVersion::TLS1_2))
            .expect("min version");
        c.set_verify(SslVerifyMode::NONE);
        TlsPipe {
            port,
            connector: c.build(),
        }
    }

    /// One connection (handshake not timed) sending `n` bytes; the time
    /// until the server acknowledged all of them.
    fn send(&self, n: usize) -> io::Result<Duration> {
        let s = dial(self.port)?;
        let mut tls = self
            .connector
            .connect("localhost", s)
            .map_err(|e| io::Error::other(e.to_string()))?;
        let t0 = Instant::now();
        tls.write_all(&(n as u64).to_be_bytes())?;
        write_n(&mut tls, n)?;
        tls.flush()?;
        let mut ack = [0u8; 1];
        tls.read_exact(&mut ack)?;
        let d = t0.elapsed();
        let _ = tls.shutdown();
        Ok(d)
    }

    fn cipher(&self) -> String {
        dial(self.port)
            .ok()
            .and_then(|s| self.connector.connect("localhost", s).ok())
            .map(|t| {
                let c = t.ssl().current_cipher().map(|c| c.name()).unwrap_or("?");
                format!("{} {}", t.ssl().version_str(), c)
            })
            .unwrap_or_else(|| "?".into())
    }
}

// ------------------------------------------------------------------ the run

fn machine() -> String {
    let cpus = thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    format!(
        "{cpus} CPUs ({model}), Linux {kernel}, {}",
        openssl::version::version()
    )
}

fn reps<T>(n: usize, mut f: impl FnMut(usize) -> T) -> Vec<T> {
    (0..n).map(&mut f).collect()
}

/// Runs every phase with `sizes`; `progress` gets one line per phase.
pub fn run(sizes: &Sizes, progress: &mut dyn FnMut(&str)) -> Report {
    let started = Instant::now();
    let nofile = raise_nofile();
    progress(&format!(
        "open-file limit {nofile} (inherited by the proxies)"
    ));
    let mut figs: Vec<Figure> = Vec::new();
    let r = sizes.reps;
    let bulk = sizes.bulk;
    let server = bench_server();

    // ---- the limits
    progress("baseline: direct TCP loopback");
    let tcp_up: Vec<f64> = reps(r, |_| mbps(bulk, upload(server, bulk).expect("tcp upload")));
    progress("baseline: plain TLS loopback pipe");
    let tls = TlsPipe::start();
    let cipher = tls.cipher();
    let gib = bulk as f64 / (1u64 << 30) as f64;
    // CPU of this process (client and server of the pipe) per GiB: what
    // TLS itself costs on this machine, the yardstick for the proxies'.
    let me = std::process::id();
    let mut tls_cpu = Vec::new();
    let tls_up: Vec<f64> = reps(r, |_| {
        let c0 = cpu_secs(me);
        let v = mbps(bulk, tls.send(bulk).expect("tls pipe"));
        tls_cpu.push((cpu_secs(me) - c0) / gib);
        v
    });
    let tcp_echo: Vec<(f64, f64)> = reps(r, |_| {
        echo_latency(server, sizes.echo_rounds).expect("tcp echo")
    });
    let tcp_setup: Vec<f64> = reps(r, |_| {
        setup_rate(server, sizes.setup_conns).expect("tcp setup")
    });

    // ---- the chain
    progress("starting tunnel-service and both proxies (3 services)");
    let service = Service::start(&[]);
    let names = ["S1", "S2", "S3"];
    let tunnel = service.open(&names);
    let maps: Vec<String> = names.iter().map(|n| format!("{n}={server}")).collect();
    // The default cap of 128 local connections per tunnel would refuse the
    // held and scale runs: raise it past what they open.
    let settings = settings_file(
        "bench",
        &format!(
            r#"{{"tunneling":{{"proxy":{{"tcp":{{"max_active_connections":"{}"}}}}}}}}"#,
            (sizes.scale_conns + sizes.idle_conns).max(128)
        ),
    );
    let proxy = |token: &str, args: &[&str], tag: &str| {
        proxy_with(
            service.port(),
            Some(&service.ca_dir),
            token,
            args,
            tag,
            &[],
            &settings,
        )
    };
    let dest = proxy(
        &tunnel.destination_token,
        &["-d", &maps.join(",")],
        "destination",
    );
    dest.stderr.wait_for(
        "Successfully established websocket connection with proxy server",
        Duration::from_secs(30),
    );
    let source = proxy(&tunnel.source_token, &["-m", "source"], "source");
    let ports: Vec<u16> = names.iter().map(|n| listening_port(&source, n)).collect();
    let port = ports[0];
    let procs: [(&str, &Proc); 3] = [
        ("source", &source),
        ("destination", &dest),
        ("service", &service.proc),
    ];
    let pids: Vec<u32> = procs.iter().map(|(_, p)| p.pid()).collect();
    let idle_threads: Vec<u64> = pids.iter().map(|p| stable_threads(*p)).collect();
    let idle: Vec<Mem> = pids.iter().map(|p| mem(*p)).collect();

    progress(&format!(
        "chain: RSS with {} idle connections",
        sizes.idle_conns
    ));
    let mut held_rss: Vec<Vec<f64>> = vec![Vec::new(); 3];
    let mut per_conn: Vec<Vec<f64>> = vec![Vec::new(); 3];
    let mut held_ok = Vec::new();
    for rep in 0..r {
        let (streams, ok) = open_verified(&ports, sizes.idle_conns, 100 + rep as u64);
        held_ok.push(ok as f64);
        for (i, pid) in pids.iter().enumerate() {
            let now = mem(*pid);
            held_rss[i].push(mib(now.rss_kib));
            // Private memory each open connection adds to the idle proxy
            // (heap, stack pages touched; socket buffers are the kernel's).
            // Against the first snapshot, so later runs, which reuse what
            // earlier ones freed, measure the same thing.
            let added = now.anon_kib.saturating_sub(idle[i].anon_kib) as f64;
            per_conn[i].push(added / ok.max(1) as f64);
        }
        drop(streams);
        settle(pids[0], idle_threads[0], Duration::from_secs(20));
        settle(pids[1], idle_threads[1], Duration::from_secs(20));
    }

    progress("chain: 64-byte echo round trips");
    let chain_echo: Vec<(f64, f64)> = reps(r, |_| {
        echo_latency(port, sizes.echo_rounds).expect("chain echo")
    });
    progress("chain: connection setup rate");
    let chain_setup: Vec<f64> = reps(r, |_| {
        let v = setup_rate(port, sizes.setup_conns).expect("chain setup");
        settle(pids[0], idle_threads[0], Duration::from_secs(20));
        settle(pids[1], idle_threads[1], Duration::from_secs(20));
        v
    });

    progress("chain: bulk, one connection each way");
    let sampler = RssSampler::start(pids.clone());
    let mut up = Vec::new();
    let mut down = Vec::new();
    // CPU per GiB of each process, for each direction on its own: index
    // [process][0] client -> server, [process][1] server -> client.
    let mut cpu: Vec<[Vec<f64>; 2]> = vec![[Vec::new(), Vec::new()]; 3];
    for _ in 0..r {
        let before: Vec<f64> = pids.iter().map(|p| cpu_secs(*p)).collect();
        up.push(mbps(bulk, upload(port, bulk).expect("chain upload")));
        let middle: Vec<f64> = pids.iter().map(|p| cpu_secs(*p)).collect();
        down.push(mbps(bulk, download(port, bulk).expect("chain download")));
        for (i, pid) in pids.iter().enumerate() {
            cpu[i][0].push((middle[i] - before[i]) / gib);
            cpu[i][1].push((cpu_secs(*pid) - middle[i]) / gib);
        }
    }
    let bulk_peak = sampler.finish();

    progress("chain: aggregate, 8 and 64 connections over 3 services");
    let agg8: Vec<f64> = reps(r, |_| {
        aggregate(&ports, 8, sizes.agg8).expect("aggregate 8")
    });
    let agg64: Vec<f64> = reps(r, |_| {
        aggregate(&ports, 64, sizes.agg64).expect("aggregate 64")
    });
    let hwm: Vec<Mem> = pids.iter().map(|p| mem(*p)).collect();

    progress(&format!(
        "chain: scale, {} simultaneous connections on one tunnel",
        sizes.scale_conns
    ));
    let mut scale_ok = Vec::new();
    let mut scale_time = Vec::new();
    let mut scale_rss: Vec<Vec<f64>> = vec![Vec::new(); 3];
    let mut scale_threads = Vec::new();
    for rep in 0..r {
        settle(pids[0], idle_threads[0], Duration::from_secs(30));
        settle(pids[1], idle_threads[1], Duration::from_secs(30));
        let t0 = Instant::now();
        let (mut streams, _) = open_verified(&[port], sizes.scale_conns, 1000 + rep as u64);
        let all = reverify(&mut streams, 5000 + rep as u64);
        scale_time.push(t0.elapsed().as_secs_f64());
        scale_ok.push(all as f64);
        for (i, pid) in pids.iter().enumerate() {
            scale_rss[i].push(mib(mem(*pid).rss_kib));
        }
        scale_threads.push(mem(pids[0]).threads as f64);
        drop(streams);
    }
    settle(pids[0], idle_threads[0], Duration::from_secs(30));
    settle(pids[1], idle_threads[1], Duration::from_secs(30));
    let after: Vec<Mem> = pids.iter().map(|p| mem(*p)).collect();

    // ---- the table
    let med = |v: &[f64]| Figure::new("", "", "", v.to_vec()).median();
    let (tcp_m, tls_m) = (med(&tcp_up), med(&tls_up));
    let ratio = |v: &[f64]| {
        let m = med(v);
        format!(
            "{:.0}% of TLS pipe, {:.0}% of TCP",
            m / tls_m * 100.0,
            m / tcp_m * 100.0
        )
    };
    let mb = bulk >> 20;
    figs.push(
        Figure::new(
            "tcp_bulk",
            "Direct TCP loopback, 1 connection",
            "MB/s",
            tcp_up.clone(),
        )
        .note(format!("{mb} MiB per run; the limit")),
    );
    figs.push(
        Figure::new(
            "tls_bulk",
            "Plain TLS loopback pipe, 1 connection",
            "MB/s",
            tls_up.clone(),
        )
        .note(format!("{mb} MiB per run; {cipher}; the limit")),
    );
    figs.push(
        Figure::new(
            "tls_cpu_per_gib",
            "Plain TLS loopback pipe, CPU per GiB, both ends",
            "s/GiB",
            tls_cpu.clone(),
        )
        .note("user+system of the sending and the receiving end"),
    );
    let tls_end = med(&tls_cpu) / 2.0;
    figs.push(
        Figure::new(
            "chain_bulk_up",
            "Chain bulk, client -> server",
            "MB/s",
            up.clone(),
        )
        .note(ratio(&up)),
    );
    figs.push(
        Figure::new(
            "chain_bulk_down",
            "Chain bulk, server -> client",
            "MB/s",
            down.clone(),
        )
        .note(ratio(&down)),
    );
    figs.push(
        Figure::new(
            "chain_agg8",
            "Chain aggregate, 8 connections / 3 services",
            "MB/s",
            agg8,
        )
        .note(format!("{} MiB each, half each way", sizes.agg8 >> 20)),
    );
    figs.push(
        Figure::new(
            "chain_agg64",
            "Chain aggregate, 64 connections / 3 services",
            "MB/s",
            agg64,
        )
        .note(format!("{} KiB each, half each way", sizes.agg64 >> 10)),
    );
    let p = |v: &[(f64, f64)], q: usize| -> Vec<f64> {
        v.iter().map(|t| if q == 50 { t.0 } else { t.1 }).collect()
    };
    let rounds = format!("{} round trips per run", sizes.echo_rounds);
    figs.push(
        Figure::new(
            "tcp_echo_p50",
            "Direct TCP 64-byte echo p50",
            "us",
            p(&tcp_echo, 50),
        )
        .note(rounds.clone()),
    );
    figs.push(
        Figure::new(
            "tcp_echo_p99",
            "Direct TCP 64-byte echo p99",
            "us",
            p(&tcp_echo, 99),
        )
        .note(rounds.clone()),
    );
    figs.push(
        Figure::new(
            "chain_echo_p50",
            "Chain 64-byte echo p50",
            "us",
            p(&chain_echo, 50),
        )
        .note(rounds.clone()),
    );
    figs.push(
        Figure::new(
            "chain_echo_p99",
            "Chain 64-byte echo p99",
            "us",
            p(&chain_echo, 99),
        )
        .note(rounds),
    );
    let setup_note = format!(
        "{} sequential: connect, 1 byte echoed, close",
        sizes.setup_conns
    );
    figs.push(
        Figure::new(
            "tcp_setup",
            "Direct TCP connection setup",
            "conn/s",
            tcp_setup,
        )
        .note(setup_note.clone()),
    );
    figs.push(
        Figure::new(
            "chain_setup",
            "Chain connection setup",
            "conn/s",
            chain_setup,
        )
        .note(setup_note),
    );
    for (i, (name, _)) in procs.iter().enumerate() {
        figs.push(
            Figure::new(
                &format!("rss_idle_{name}"),
                format!("RSS idle, {name}"),
                "MiB",
                vec![mib(idle[i].rss_kib)],
            )
            .note(format!(
                "connected, no connection yet; anon {:.1} + file {:.1}",
                mib(idle[i].anon_kib),
                mib(idle[i].file_kib)
            )),
        );
    }
    for (i, (name, _)) in procs.iter().enumerate() {
        figs.push(
            Figure::new(
                &format!("anon_idle_{name}"),
                format!("Private memory idle (RssAnon), {name}"),
                "MiB",
                vec![mib(idle[i].anon_kib)],
            )
            .note(format!("heap and stacks; {} threads", idle[i].threads)),
        );
    }
    for (i, (name, _)) in procs.iter().enumerate().take(2) {
        figs.push(
            Figure::new(
                &format!("mem_per_conn_{name}"),
                format!("Private memory per idle connection, {name}"),
                "KiB",
                per_conn[i].clone(),
            )
            .note(format!(
                "RssAnon added by {} open connections, divided",
                sizes.idle_conns
            )),
        );
    }
    for (i, (name, _)) in procs.iter().enumerate() {
        figs.push(
            Figure::new(
                &format!("rss_{}_{name}", sizes.idle_conns),
                format!("RSS with {} idle connections, {name}", sizes.idle_conns),
                "MiB",
                held_rss[i].clone(),
            )
            .note(format!("verified per run: {}", fmt_counts(&held_ok))),
        );
    }
    for (i, (name, _)) in procs.iter().enumerate() {
        figs.push(
            Figure::new(
                &format!("rss_bulk_{name}"),
                format!("RSS peak during bulk, {name}"),
                "MiB",
                vec![mib(bulk_peak[i])],
            )
            .note("sampled every 20 ms"),
        );
    }
    for (i, (name, _)) in procs.iter().enumerate() {
        figs.push(
            Figure::new(
                &format!("hwm_{name}"),
                format!("Peak RSS (VmHWM) before scale, {name}"),
                "MiB",
                vec![mib(hwm[i].hwm_kib)],
            )
            .note("after bulk and aggregate"),
        );
    }
    for (i, (name, _)) in procs.iter().enumerate() {
        for (d, (key, dir)) in [("up", "client -> server"), ("down", "server -> client")]
            .iter()
            .enumerate()
        {
            figs.push(
                Figure::new(
                    &format!("cpu_per_gib_{name}_{key}"),
                    format!("CPU per GiB moved, {name}, {dir}"),
                    "s/GiB",
                    cpu[i][d].clone(),
                )
                .note(format!(
                    "bulk runs, user+system; {:.1}x one TLS pipe end",
                    med(&cpu[i][d]) / tls_end
                )),
            );
        }
    }
    figs.push(
        Figure::new(
            "scale_verified",
            format!(
                "Scale: {} simultaneous connections verified",
                sizes.scale_conns
            ),
            "conns",
            scale_ok,
        )
        .note("each echoed two unique payloads, the second with all open"),
    );
    figs.push(
        Figure::new(
            "scale_time",
            "Scale: time to open and verify all",
            "s",
            scale_time,
        )
        .note(format!(
            "source threads with all open: {}",
            fmt_counts(&scale_threads)
        )),
    );
    for (i, (name, _)) in procs.iter().enumerate().take(2) {
        figs.push(Figure::new(
            &format!("rss_scale_{name}"),
            format!("RSS with {} connections, {name}", sizes.scale_conns),
            "MiB",
            scale_rss[i].clone(),
        ));
    }
    for (i, (name, _)) in procs.iter().enumerate().take(2) {
        figs.push(
            Figure::new(
                &format!("rss_after_{name}"),
                format!("RSS idle after the run, {name}"),
                "MiB",
                vec![mib(after[i].rss_kib)],
            )
            .note(format!(
                "anon {:.1} + file {:.1}; VmHWM {:.1}",
                mib(after[i].anon_kib),
                mib(after[i].file_kib),
                mib(after[i].hwm_kib)
            )),
        );
    }
    drop(source);
    drop(dest);
    drop(service);
    Report {
        figures: figs,
        machine: machine(),
        sizes: sizes.clone(),
        elapsed: started.elapsed(),
    }
}

fn fmt_counts(v: &[f64]) -> String {
    v.iter()
        .map(|x| format!("{x:.0}"))
        .collect::<Vec<_>>()
        .join(", ")
}
