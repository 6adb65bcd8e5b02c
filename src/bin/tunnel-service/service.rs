//! A running service: both listeners, their accept loops, the expiry thread,
//! the data plane's TLS set-up, and shutdown.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use openssl::ssl::{SslAcceptor, SslFiletype, SslMethod};

use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use openssl::pkey::PKey;
use openssl::x509::X509;

use crate::cert::{self, Identity};
use crate::faults::Faults;
use crate::files;
use crate::gate::{Gate, Limits, Ticket};
use crate::tunnels::Registry;
use crate::{api, handshake};

/// Where the data plane's certificate comes from.
#[derive(Debug, Clone)]
pub enum TlsSource {
    /// PEM certificate (chain) and key files.
    Files { cert: PathBuf, key: PathBuf },
    /// A self-signed certificate for localhost / 127.0.0.1, generated at
    /// start and written to this directory (a new temporary one when `None`)
    /// for `localproxy -c DIR`. A given directory also keeps the key, and a
    /// certificate and key found there are reused, so `-c DIR` stays valid
    /// across restarts.
    Generated { ca_dir: Option<PathBuf> },
    /// Plain `ws://` (debugging only).
    None,
}

/// How to run the service.
#[derive(Debug, Clone)]
pub struct Options {
    pub listen: SocketAddr,
    pub api_listen: SocketAddr,
    pub tls: TlsSource,
    /// One "minute" of maxLifetimeTimeoutMinutes (one second in tests).
    pub lifetime_unit: Duration,
    pub region: String,
    pub faults: Faults,
    /// Where the tunnels are saved after every change and loaded at start.
    pub state_file: Option<PathBuf>,
    /// OpenTunnel refuses (LimitExceededException) beyond this many open.
    pub max_open_tunnels: usize,
    /// Connection caps and handshake deadline of the data plane.
    pub data_limits: Limits,
    /// Connection caps and request deadline of the API.
    pub api_limits: Limits,
}

impl Default for Options {
    fn default() -> Self {
        let lo = SocketAddr::from(([127, 0, 0, 1], 0));
        Options {
            listen: lo,
            api_listen: lo,
            tls: TlsSource::Generated { ca_dir: None },
            lifetime_unit: Duration::from_secs(60),
            region: "us-east-1".into(),
            faults: Faults::default(),
            state_file: None,
            max_open_tunnels: crate::tunnels::DEFAULT_MAX_OPEN_TUNNELS,
            data_limits: Limits::default(),
            api_limits: Limits::default(),
        }
    }
}

/// A running service.
pub struct Service {
    pub data_addr: SocketAddr,
    pub api_addr: SocketAddr,
    /// The directory holding the generated CA certificate, if generated.
    pub ca_dir: Option<PathBuf>,
    /// Whether the data plane speaks TLS.
    pub tls: bool,
    /// `ca_dir` is a temporary directory of ours, removed on shutdown.
    ca_dir_is_temp: bool,
    pub registry: Arc<Registry>,
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Service {
    /// Binds both sockets, prepares TLS and starts serving.
    pub fn start(opts: Options) -> io::Result<Service> {
        let (acceptor, ca_dir) = match &opts.tls {
            TlsSource::Files { cert, key } => {
                // OpenSSL opens them by name: a FIFO would block it for good.
                for (what, path) in [("certificate", cert), ("key", key)] {
                    let meta = std::fs::metadata(path).map_err(|e| {
                        io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
                    })?;
                    if !meta.is_file() {
                        return Err(io::Error::other(format!(
                            "{what} {}: not a regular file: give the path of a PEM file",
                            path.display()
                        )));
                    }
                }
                let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())
                    .map_err(io::Error::other)?;
                b.set_certificate_chain_file(cert).map_err(|e| {
                    io::Error::other(format!("certificate {}: {e}", cert.display()))
                })?;
                b.set_private_key_file(key, SslFiletype::PEM)
                    .map_err(|e| io::Error::other(format!("key {}: {e}", key.display())))?;
                b.check_private_key().map_err(|e| {
                    io::Error::other(format!(
                        "key {} does not match the certificate: {e}",
                        key.display()
                    ))
                })?;
                (Some(Arc::new(b.build())), None)
            }
            TlsSource::Generated { ca_dir } => {
                let (id, dir) = match ca_dir {
                    Some(d) => (reuse_or_generate(d)?, d.clone()),
                    None => {
                        let id =
                            cert::self_signed(&cert::LOOPBACK_NAMES).map_err(io::Error::other)?;
                        let dir = std::env::temp_dir().join(format!(
                            "tunnel-service-{}-{}",
                            std::process::id(),
                            localproxy::secret::random_hex(4)?
                        ));
                        // A new directory of ours (fails if the name exists).
                        std::fs::DirBuilder::new().mode(0o755).create(&dir)?;
                        cert::write_ca_dir(&id.cert, &dir, files::write_public)?;
                        (id, dir)
                    }
                };
                let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())
                    .map_err(io::Error::other)?;
                b.set_certificate(&id.cert).map_err(io::Error::other)?;
                b.set_private_key(&id.key).map_err(io::Error::other)?;
                (Some(Arc::new(b.build())), Some(dir))
            }
            TlsSource::None => (None, None),
        };
        let data = TcpListener::bind(opts.listen)?;
        let api = TcpListener::bind(opts.api_listen)?;
        let data_addr = data.local_addr()?;
        let api_addr = api.local_addr()?;
        let registry = Registry::new(
            opts.lifetime_unit,
            &opts.region,
            opts.faults.clone(),
            opts.max_open_tunnels,
        );
        if let Some(path) = &opts.state_file {
            let n = registry.use_state_file(path)?;
            log::info!("state file {}: {n} tunnel(s) loaded", path.display());
        }
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        {
            let r = registry.clone();
            threads.push(
                thread::Builder::new()
                    .name("expiry".into())
                    .spawn(move || r.run_expiry())?,
            );
        }
        let data_gate = Gate::new("data plane", opts.data_limits)?;
        let api_gate = Gate::new("API", opts.api_limits)?;
        {
            let (r, s, tls, gate) = (
                registry.clone(),
                stop.clone(),
                acceptor.clone(),
                data_gate.clone(),
            );
            threads.push(
                thread::Builder::new()
                    .name("data-accept".into())
                    .spawn(move || {
                        accept_loop(
                            data,
                            s,
                            gate,
                            |_| {},
                            move |tcp, ticket| {
                                let (r, tls) = (r.clone(), tls.clone());
                                thread::Builder::new()
                                    .name("client".into())
                                    .stack_size(CONNECTION_STACK)
                                    .spawn(move || handshake::serve(tcp, ticket, tls, r))
                                    .map(|_| ())
                            },
                        )
                    })?,
            );
        }
        {
            let (r, s, gate) = (registry.clone(), stop.clone(), api_gate.clone());
            threads.push(
                thread::Builder::new()
                    .name("api-accept".into())
                    .spawn(move || {
                        accept_loop(api, s, gate, api::refuse_busy, move |tcp, ticket| {
                            let r = r.clone();
                            thread::Builder::new()
                                .name("api".into())
                                .stack_size(CONNECTION_STACK)
                                .spawn(move || api::serve(tcp, ticket, r))
                                .map(|_| ())
                        })
                    })?,
            );
        }
        Ok(Service {
            data_addr,
            api_addr,
            ca_dir_is_temp: matches!(opts.tls, TlsSource::Generated { ca_dir: None }),
            ca_dir,
            tls: acceptor.is_some(),
            registry,
            stop,
            threads,
        })
    }

    /// The machine-readable line printed on start:
    /// `READY data=IP:PORT api=IP:PORT ca_dir=PATH|- scheme=wss|ws`.
    pub fn ready_line(&self) -> String {
        format!(
            "READY data={} api={} ca_dir={} scheme={}",
            self.data_addr,
            self.api_addr,
            self.ca_dir
                .as_ref()
                .map_or_else(|| "-".to_string(), |d| d.display().to_string()),
            if self.tls { "wss" } else { "ws" }
        )
    }

    /// Stops accepting, closes every connection with 1001 (going away) and
    /// waits (at most [`SHUTDOWN_GRACE`]) for the close handshakes, then
    /// removes the temporary CA directory if this service made it.
    pub fn shutdown(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.registry.shutdown();
        // Wake the accept loops.
        let _ = TcpStream::connect_timeout(&self.data_addr, Duration::from_secs(1));
        let _ = TcpStream::connect_timeout(&self.api_addr, Duration::from_secs(1));
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        if !self.registry.wait_idle(SHUTDOWN_GRACE) {
            log::warn!("connections still closing after {SHUTDOWN_GRACE:?}: exiting anyway");
        }
        if let (true, Some(dir)) = (self.ca_dir_is_temp, &self.ca_dir) {
            match std::fs::remove_dir_all(dir) {
                Ok(()) => log::info!("removed {}", dir.display()),
                Err(e) => log::warn!("cannot remove {}: {e}", dir.display()),
            }
        }
    }
}

/// Stack of a connection thread: the relay and handshake need little, and
/// a capped but large number of them may run.
const CONNECTION_STACK: usize = 256 * 1024;

/// How long a stopping service waits for its connections' close handshakes.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Name of the private key kept beside the certificate in `--cert-dir`.
const KEY_FILE: &str = "tunnel-service.key";

/// The certificate and key already in `dir` (from an earlier run), checked,
/// or a new pair written there. Checks: the directory is ours and not
/// writable by others; the certificate is ours, not writable by others; the
/// key is ours and readable by us only; the key is the certificate's; the
/// certificate is valid for another day (else a new pair replaces it).
fn reuse_or_generate(dir: &Path) -> io::Result<Identity> {
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    files::check_dir(dir)?;
    let (cert_path, key_path) = (dir.join(cert::CERT_FILE), dir.join(KEY_FILE));
    let cert_pem = files::read_owned(&cert_path)?;
    let key_pem = files::read_secret(&key_path)?;
    if let (Some(cert_pem), Some(key_pem)) = (cert_pem, key_pem) {
        let bad = |what: &Path, e: openssl::error::ErrorStack| {
            io::Error::other(format!(
                "{}: {e} (remove it to generate a new one)",
                what.display()
            ))
        };
        let cert = X509::from_pem(&cert_pem).map_err(|e| bad(&cert_path, e))?;
        let key = PKey::private_key_from_pem(&key_pem).map_err(|e| bad(&key_path, e))?;
        if !cert::key_matches(&cert, &key) {
            return Err(io::Error::other(format!(
                "{} is not the key of {}: remove both to generate a new pair",
                key_path.display(),
                cert_path.display()
            )));
        }
        if cert::valid_for_a_day(&cert) {
            log::info!("reusing the certificate and key in {}", dir.display());
            // Recreate the hash link in case it was removed.
            cert::write_ca_dir(&cert, dir, files::write_public)?;
            return Ok(Identity { cert, key });
        }
        log::warn!(
            "the certificate in {} expires within a day: making a new one (give localproxy -c {} again)",
            dir.display(),
            dir.display()
        );
    }
    let id = cert::self_signed(&cert::LOOPBACK_NAMES).map_err(io::Error::other)?;
    let pem = id
        .key
        .private_key_to_pem_pkcs8()
        .map_err(io::Error::other)?;
    files::write_secret(&key_path, &pem)?;
    cert::write_ca_dir(&id.cert, dir, files::write_public)?;
    Ok(id)
}

/// Accepts connections until `stop`: each one through `gate` (a refused
/// one gets `refuse`, then is closed at once), then `spawn`ed with its
/// ticket.
fn accept_loop<R, F>(
    listener: TcpListener,
    stop: Arc<AtomicBool>,
    gate: Arc<Gate>,
    refuse: R,
    spawn: F,
) where
    R: Fn(&mut TcpStream),
    F: Fn(TcpStream, Ticket) -> io::Result<()>,
{
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            gate.stop();
            return;
        }
        match conn {
            Ok(mut tcp) => match gate.admit(&tcp) {
                Ok(ticket) => {
                    if let Err(e) = spawn(tcp, ticket) {
                        log::warn!("cannot start a connection thread: {e}");
                    }
                }
                Err(why) => {
                    let peer = tcp.peer_addr().map(|a| a.to_string()).unwrap_or_default();
                    log::warn!("refusing a connection from {peer}: {why}");
                    refuse(&mut tcp);
                }
            },
            Err(e) => {
                log::warn!("accept failed: {e}");
                // Out of descriptors and the like: do not spin.
                thread::sleep(Duration::from_millis(50));
            }
        }
    }
}
