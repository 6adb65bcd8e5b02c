//! Secrets (access and client tokens): a type that never reaches a log, and
//! the random bytes tokens are made of.
//!
//! `Debug` and `Display` print a fixed placeholder; the value is read only
//! through [`Secret::expose`], at the one place it goes on the wire.

use std::fmt;

/// A token that must not appear in logs, errors or panics.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value itself, for the request that carries it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the value is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// `text` with every occurrence of each of `secrets` replaced by the
/// placeholder: for what a peer sent back, which may quote the request (a
/// refusal that echoes its headers) and is shown in errors and logs.
pub fn scrub(text: &str, secrets: &[&Secret]) -> String {
    let mut out = text.to_string();
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        if out.contains(s.expose()) {
            out = out.replace(s.expose(), "<redacted>");
        }
    }
    out
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Fills `buf` from OpenSSL's CSPRNG, falling back to `/dev/urandom`.
/// Errors only when neither source works.
pub fn fill_random(buf: &mut [u8]) -> std::io::Result<()> {
    if openssl::rand::rand_bytes(buf).is_ok() {
        return Ok(());
    }
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(buf)
}

/// `n` random bytes as `2n` lowercase hex digits (client tokens, ids).
pub fn random_hex(n: usize) -> std::io::Result<String> {
    let mut b = vec![0u8; n];
    fill_random(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// A new client token: 32 random bytes as 64 hex digits, within
/// `^[a-zA-Z0-9-]{32,128}$`.
pub fn new_client_token() -> std::io::Result<Secret> {
    random_hex(32).map(Secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_removes_every_secret_from_peer_text() {
        let (a, c, empty) = (
            Secret::new("AQGAtoken"),
            Secret::new("client-1"),
            Secret::new(""),
        );
        assert_eq!(
            scrub(
                "refused AQGAtoken for client-1, AQGAtoken",
                &[&a, &c, &empty]
            ),
            "refused <redacted> for <redacted>, <redacted>"
        );
        assert_eq!(scrub("nothing here", &[&a, &empty]), "nothing here");
    }

    #[test]
    fn random_hex_has_the_length_and_alphabet_asked() {
        let a = random_hex(32).expect("random");
        assert_eq!(a.len(), 64);
        assert!(a
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_ne!(a, random_hex(32).expect("random"));
    }

    #[test]
    fn debug_and_display_print_nothing_of_the_value() {
        let s = Secret::new("AQGAAXhQ-very-secret");
        assert!(!format!("{s:?} {s} {:#?}", Some(&s)).contains("secret"));
        assert_eq!(s.expose(), "AQGAAXhQ-very-secret");
    }

    #[test]
    fn new_client_tokens_are_valid_and_distinct() {
        let a = new_client_token().unwrap();
        let b = new_client_token().unwrap();
        assert_eq!(a.expose().len(), 64);
        assert!(crate::protocol::is_valid_client_token(a.expose()));
        assert_ne!(a, b);
        assert_eq!(random_hex(4).unwrap().len(), 8);
    }
}
