//! The data plane's generated certificate: a self-signed certificate for
//! loopback names, and the CA directory (`localproxy -c DIR`) that trusts it.
//!
//! Self-contained (std and openssl only): the integration tests include this
//! file with `#[path]` (tests/common/mod.rs) to make certificates of the same
//! kind, and test it there (tests/service.rs) rather than in every binary
//! that includes it.

use std::path::Path;

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::extension::{BasicConstraints, SubjectAlternativeName};
use openssl::x509::{X509NameBuilder, X509};

/// A certificate and its private key.
pub struct Identity {
    pub cert: X509,
    pub key: PKey<Private>,
}

/// A self-signed certificate (2048-bit RSA, valid for ten years) for the DNS
/// names and IP addresses in `names`; the first name is the subject CN. It is
/// also a CA certificate so that `localproxy -c DIR` can trust it directly.
pub fn self_signed(names: &[&str]) -> Result<Identity, ErrorStack> {
    let rsa = Rsa::generate(2048)?;
    let key = PKey::from_rsa(rsa)?;
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
    let not_after = Asn1Time::days_from_now(3650)?;
    builder.set_not_before(&not_before)?;
    builder.set_not_after(&not_after)?;
    builder.append_extension(BasicConstraints::new().critical().ca().build()?)?;
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

/// Writes `cert` into `dir` as a PEM file plus the `<hash>.0` link name
/// OpenSSL's CA directory lookup (`-c DIR`) expects; returns the PEM path.
pub fn write_ca_dir(cert: &X509, dir: &Path) -> std::io::Result<std::path::PathBuf> {
    std::fs::create_dir_all(dir)?;
    let pem = cert.to_pem().map_err(std::io::Error::other)?;
    let path = dir.join("tunnel-service.pem");
    std::fs::write(&path, &pem)?;
    let hash = cert.subject_name_hash();
    std::fs::write(dir.join(format!("{hash:08x}.0")), &pem)?;
    Ok(path)
}
