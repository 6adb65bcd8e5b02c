//! Secrets (access and client tokens): a type that never reaches a log, and
//! the generation of random tokens.
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

/// `bytes` random bytes from OpenSSL's generator, as lower-case hex.
pub fn random_hex(bytes: usize) -> Result<String, openssl::error::ErrorStack> {
    let mut buf = vec![0u8; bytes];
    openssl::rand::rand_bytes(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// A new client token: 32 random bytes as 64 hex digits, within
/// `^[a-zA-Z0-9-]{32,128}$`.
pub fn new_client_token() -> Result<Secret, openssl::error::ErrorStack> {
    random_hex(32).map(Secret)
}

#[cfg(test)]
mod tests {
    use super::*;

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
