//! Secrets (access and client tokens) wrapped so they never reach a log.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_print_nothing_of_the_value() {
        let s = Secret::new("AQGAAXhQ-very-secret");
        assert!(!format!("{s:?} {s} {:#?}", Some(&s)).contains("secret"));
        assert_eq!(s.expose(), "AQGAAXhQ-very-secret");
    }
}
