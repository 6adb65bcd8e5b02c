//! OpenSSL client setup (TLS 1.2+, no renegotiation, system roots plus `-c`,
//! SNI and host name checks, or none with `-k`) and the handshake over [`MemIo`].

use std::path::Path;

use openssl::ssl::{
    HandshakeError, SslConnector, SslMethod, SslOptions, SslStream, SslVerifyMode, SslVersion,
};
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

/// Builds a client connector from `settings`.
pub(crate) fn connector(settings: &TlsSettings<'_>) -> Result<SslConnector, String> {
    let mut b = SslConnector::builder(SslMethod::tls_client()).map_err(|e| e.to_string())?;
    b.set_min_proto_version(Some(SslVersion::TLS1_2))
        .map_err(|e| e.to_string())?;
    b.set_options(SslOptions::NO_RENEGOTIATION);
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
    Ok(b.build())
}

/// Runs the client handshake with `host` over a fresh [`MemIo`] holding
/// `initial` bytes, pumping the socket (through `outer`, if any) as needed.
pub(crate) fn handshake(
    connector: &SslConnector,
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
    let mut cfg = connector.configure().map_err(setup)?;
    cfg.set_verify_hostname(!no_verify);
    let ssl = cfg.into_ssl(host).map_err(setup)?;
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
