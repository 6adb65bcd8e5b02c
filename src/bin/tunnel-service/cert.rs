//! The data plane's generated certificate: a self-signed leaf certificate
//! for the loopback names, and the CA directory (`localproxy -c DIR`) that
//! trusts it.
//!
//! A leaf, not a CA: `CA:FALSE`, for TLS servers only (extended key usage
//! serverAuth), valid for exactly the names given (localhost, 127.0.0.1, ::1
//! for the service). Trusting it with `-c DIR` trusts that one certificate,
//! not whatever its key could sign. OpenSSL accepts a self-signed leaf found
//! in its trust store as a trust anchor.
//!
//! Self-contained (std and openssl only): the integration tests include this
//! file with `#[path]` (tests/common/mod.rs, tests/transport.rs) to make
//! certificates of the same kind, and test it there (tests/service.rs)
//! rather than in every binary that includes it.

use std::io;
use std::path::{Path, PathBuf};

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::{BasicConstraints, ExtendedKeyUsage, SubjectAlternativeName};
use openssl::x509::{X509NameBuilder, X509};

/// The names the service's certificate is for.
pub const LOOPBACK_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];
/// Name of the certificate in the CA directory.
pub const CERT_FILE: &str = "tunnel-service.pem";
/// Days a generated certificate is valid.
pub const VALID_DAYS: u32 = 825;

/// A certificate and its private key.
pub struct Identity {
    pub cert: X509,
    pub key: PKey<Private>,
}

/// A self-signed leaf certificate (ECDSA P-256, valid [`VALID_DAYS`]) for
/// the DNS names and IP addresses in `names`; the first name is the
/// subject CN.
pub fn self_signed(names: &[&str]) -> Result<Identity, ErrorStack> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
    let key = PKey::from_ec_key(EcKey::generate(&group)?)?;
    let mut name = X509NameBuilder::new()?;
    name.append_entry_by_nid(
        Nid::COMMONNAME,
        names.first().copied().unwrap_or("localhost"),
    )?;
    name.append_entry_by_nid(Nid::ORGANIZATIONNAME, "localproxy tunnel-service")?;
    let name = name.build();
    let mut builder = X509::builder()?;
    builder.set_version(2)?;
    let mut serial = BigNum::new()?;
    serial.rand(127, MsbOption::MAYBE_ZERO, false)?;
    let serial = serial.to_asn1_integer()?;
    builder.set_serial_number(&serial)?;
    builder.set_subject_name(&name)?;
    builder.set_issuer_name(&name)?;
    builder.set_pubkey(&key)?;
    let not_before = Asn1Time::days_from_now(0)?;
    let not_after = Asn1Time::days_from_now(VALID_DAYS)?;
    builder.set_not_before(&not_before)?;
    builder.set_not_after(&not_after)?;
    builder.append_extension(BasicConstraints::new().critical().build()?)?;
    builder.append_extension(ExtendedKeyUsage::new().server_auth().build()?)?;
    let mut san = SubjectAlternativeName::new();
    for n in names {
        if n.parse::<std::net::IpAddr>().is_ok() {
            san.ip(n);
        } else {
            san.dns(n);
        }
    }
    let san = san.build(&builder.x509v3_context(None, None))?;
    builder.append_extension(san)?;
    builder.sign(&key, MessageDigest::sha256())?;
    Ok(Identity {
        cert: builder.build(),
        key,
    })
}

/// Whether `key` is the private key of `cert`.
pub fn key_matches(cert: &X509, key: &PKey<Private>) -> bool {
    cert.public_key().is_ok_and(|p| p.public_eq(key))
}

/// Whether `cert` is still valid a day from now.
pub fn valid_for_a_day(cert: &X509) -> bool {
    Asn1Time::days_from_now(1).is_ok_and(|t| cert.not_after() > t)
}

/// Writes `cert` into `dir` as [`CERT_FILE`] plus the `<hash>.0` name
/// OpenSSL's CA directory lookup (`-c DIR`) expects, each with `write`
/// (the service writes atomically); returns the path of [`CERT_FILE`].
pub fn write_ca_dir(
    cert: &X509,
    dir: &Path,
    write: impl Fn(&Path, &[u8]) -> io::Result<()>,
) -> io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let pem = cert.to_pem().map_err(io::Error::other)?;
    let path = dir.join(CERT_FILE);
    write(&path, &pem)?;
    let hash = cert.subject_name_hash();
    write(&dir.join(format!("{hash:08x}.0")), &pem)?;
    Ok(path)
}
