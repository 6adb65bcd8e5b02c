//! OpenSSL client setup (TLS 1.2+, no renegotiation, system roots plus `-c`,
//! SNI and host name checks, or none with `-k`) and the handshake over [`MemIo`].
//!
//! The settings are those of the openssl crate's `SslConnector` (derived
//! from Python's), but for the system roots: `SslConnector` loads the whole
//! system CA bundle into memory at every connect (about 870 KiB of heap for
//! Debian's 146 certificates, most of a connected proxy's private memory).
//! Here the system's hashed certificate directory is looked up lazily, one
//! issuer file when a chain needs it, as `-c DIR` is; the bundle file is
//! loaded only when `SSL_CERT_FILE` names it or no hashed directory exists
//! (as on Fedora and RHEL).

use std::ffi::{CStr, OsString};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use openssl::error::ErrorStack;
use openssl::ssl::{
    HandshakeError, Ssl, SslContext, SslContextBuilder, SslFiletype, SslMethod, SslMode,
    SslOptions, SslStream, SslVerifyMode, SslVersion,
};
use openssl::x509::store::X509Lookup;
use openssl::x509::verify::X509CheckFlags;
use openssl::x509::X509VerifyResult;

use super::memio::{MemIo, Outer, Pump};

/// How the peer's certificate is checked.
pub(crate) struct TlsSettings<'a> {
    pub(crate) capath: Option<&'a Path>,
    pub(crate) no_verify: bool,
}

/// A TLS handshake failure: OpenSSL's error text and, when the certificate
/// was rejected, the X509 verification error.
pub(crate) struct TlsFailure {
    pub(crate) detail: String,
    pub(crate) verify: Option<String>,
    /// The failure was the socket's (timeout, reset), not TLS's.
    pub(crate) io: Option<std::io::Error>,
}

/// A client TLS context, ready to open sessions to a host.
pub(crate) struct Connector(SslContext);

impl Connector {
    /// A session for `host`: SNI unless it is an IP address, and, with
    /// `verify_hostname`, the certificate must name it (no partial wildcards).
    fn ssl(&self, host: &str, verify_hostname: bool) -> Result<Ssl, ErrorStack> {
        let mut ssl = Ssl::new(&self.0)?;
        let ip = host.parse::<IpAddr>();
        if ip.is_err() {
            ssl.set_hostname(host)?;
        }
        if verify_hostname {
            let param = ssl.param_mut();
            param.set_hostflags(X509CheckFlags::NO_PARTIAL_WILDCARDS);
            match ip {
                Ok(ip) => param.set_ip(ip)?,
                Err(_) => param.set_host(host)?,
            }
        }
        Ok(ssl)
    }
}

/// Builds a client connector from `settings`.
pub(crate) fn connector(settings: &TlsSettings<'_>) -> Result<Connector, String> {
    let mut b = context().map_err(|e| e.to_string())?;
    b.set_min_proto_version(Some(SslVersion::TLS1_2))
        .map_err(|e| e.to_string())?;
    if !settings.no_verify {
        system_roots(&mut b).map_err(|e| format!("system CA certificates: {e}"))?;
    }
    if let Some(path) = settings.capath {
        let meta =
            std::fs::metadata(path).map_err(|e| format!("CA path {} (-c): {e}", path.display()))?;
        let loaded = if meta.is_dir() {
            b.load_verify_locations(None, Some(path))
        } else {
            b.set_ca_file(path)
        };
        loaded.map_err(|e| format!("CA path {} (-c): {e}", path.display()))?;
    }
    if settings.no_verify {
        b.set_verify(SslVerifyMode::NONE);
    }
    Ok(Connector(b.build()))
}

/// What `SslConnector::builder` sets up, without its system roots.
fn context() -> Result<SslContextBuilder, ErrorStack> {
    let mut b = SslContextBuilder::new(SslMethod::tls_client())?;
    let opts = (SslOptions::ALL
        | SslOptions::NO_COMPRESSION
        | SslOptions::NO_SSLV2
        | SslOptions::NO_SSLV3
        | SslOptions::SINGLE_DH_USE
        | SslOptions::SINGLE_ECDH_USE
        | SslOptions::NO_RENEGOTIATION)
        & !SslOptions::DONT_INSERT_EMPTY_FRAGMENTS;
    b.set_options(opts);
    b.set_mode(
        SslMode::AUTO_RETRY
            | SslMode::ACCEPT_MOVING_WRITE_BUFFER
            | SslMode::ENABLE_PARTIAL_WRITE
            | SslMode::RELEASE_BUFFERS,
    );
    b.set_cipher_list("DEFAULT:!aNULL:!eNULL:!MD5:!3DES:!DES:!RC4:!IDEA:!SEED:!aDSS:!SRP:!PSK")?;
    b.set_verify(SslVerifyMode::PEER);
    Ok(b)
}

/// `X509_FILETYPE_DEFAULT`: "the directories of `SSL_CERT_DIR`, else the
/// built-in one" for a hashed-directory lookup.
const FILETYPE_DEFAULT: i32 = 3;

/// Trusts the system's roots as OpenSSL's default paths do (`SSL_CERT_DIR`
/// and `SSL_CERT_FILE`, else the built-in directory and file), but reads the
/// file only when it is asked for or the directory is not hashed.
fn system_roots(b: &mut SslContextBuilder) -> Result<(), ErrorStack> {
    b.cert_store_mut()
        .add_lookup(X509Lookup::hash_dir())?
        .add_dir("", SslFiletype::from_raw(FILETYPE_DEFAULT))?;
    let named = non_empty_env("SSL_CERT_FILE");
    if named.is_none() && cert_dirs().iter().any(|d| is_hashed(d)) {
        return Ok(());
    }
    let file = named
        .map(PathBuf::from)
        .or_else(|| default_path(openssl_sys::X509_get_default_cert_file));
    if let Some(file) = file.filter(|f| f.is_file()) {
        // A bundle that cannot be read is skipped, as the default paths
        // skip it: verification then says which issuer is missing.
        let loaded = b
            .cert_store_mut()
            .add_lookup(X509Lookup::file())?
            .load_cert_file(&file, SslFiletype::PEM);
        if let Err(e) = loaded {
            log::debug!("system CA file {}: {e}", file.display());
        }
    }
    Ok(())
}

fn non_empty_env(name: &str) -> Option<OsString> {
    std::env::var_os(name).filter(|v| !v.is_empty())
}

/// The directories a hashed-directory lookup with the default type searches.
fn cert_dirs() -> Vec<PathBuf> {
    match non_empty_env("SSL_CERT_DIR") {
        Some(dirs) => std::env::split_paths(&dirs).collect(),
        None => default_path(openssl_sys::X509_get_default_cert_dir)
            .into_iter()
            .collect(),
    }
}

/// One of OpenSSL's built-in default paths.
fn default_path(get: unsafe extern "C" fn() -> *const std::os::raw::c_char) -> Option<PathBuf> {
    // SAFETY: these functions take no arguments and return a pointer to a
    // static NUL-terminated string (never freed), or NULL.
    let p = unsafe { get() };
    if p.is_null() {
        return None;
    }
    // SAFETY: non-NULL, static and NUL-terminated, as said above.
    let s = unsafe { CStr::from_ptr(p) };
    Some(PathBuf::from(s.to_string_lossy().into_owned()))
}

/// Whether `dir` holds hashed certificate names (`5ad8a5d6.0`), as
/// `c_rehash` / `update-ca-certificates` make them.
fn is_hashed(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        let name = e.file_name();
        let name = name.to_string_lossy();
        match name.split_once('.') {
            Some((hash, n)) => {
                hash.len() == 8
                    && hash.bytes().all(|c| c.is_ascii_hexdigit())
                    && !n.is_empty()
                    && n.bytes().all(|c| c.is_ascii_digit())
            }
            None => false,
        }
    })
}

/// Runs the client handshake with `host` over a fresh [`MemIo`] holding
/// `initial` bytes, pumping the socket (through `outer`, if any) as needed.
pub(crate) fn handshake(
    connector: &Connector,
    host: &str,
    no_verify: bool,
    initial: &[u8],
    pump: &Pump<'_>,
    outer: &mut Outer,
) -> Result<SslStream<MemIo>, TlsFailure> {
    let setup = |e: openssl::error::ErrorStack| TlsFailure {
        detail: e.to_string(),
        verify: None,
        io: None,
    };
    let ssl = connector.ssl(host, !no_verify).map_err(setup)?;
    let mut result = ssl.connect(MemIo::with_inbound(initial));
    loop {
        match result {
            Ok(mut s) => {
                // TLS 1.3: the client's Finished may still be buffered.
                pump.flush(outer, s.get_mut()).map_err(io_failure)?;
                return Ok(s);
            }
            Err(HandshakeError::WouldBlock(mut mid)) => {
                pump.flush(outer, mid.get_mut()).map_err(io_failure)?;
                pump.fill(outer, mid.get_mut()).map_err(io_failure)?;
                result = mid.handshake();
            }
            Err(HandshakeError::Failure(mid)) => {
                let v = mid.ssl().verify_result();
                let verify = (v != X509VerifyResult::OK).then(|| v.error_string().to_string());
                return Err(TlsFailure {
                    detail: mid.error().to_string(),
                    verify,
                    io: None,
                });
            }
            Err(HandshakeError::SetupFailure(e)) => return Err(setup(e)),
        }
    }
}

fn io_failure(e: std::io::Error) -> TlsFailure {
    TlsFailure {
        detail: e.to_string(),
        verify: None,
        io: Some(e),
    }
}
