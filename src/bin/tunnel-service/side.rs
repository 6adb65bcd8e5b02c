//! Which end of a tunnel a client is: source or destination.

use std::fmt;

/// Which end of a tunnel a client is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    Source,
    Destination,
}

impl Side {
    /// Both sides, source first (the order of per-side arrays).
    pub const BOTH: [Side; 2] = [Side::Source, Side::Destination];

    /// Index into per-side arrays.
    pub fn index(self) -> usize {
        match self {
            Side::Source => 0,
            Side::Destination => 1,
        }
    }

    /// The other end.
    pub fn peer(self) -> Side {
        match self {
            Side::Source => Side::Destination,
            Side::Destination => Side::Source,
        }
    }

    /// The `local-proxy-mode` value of this side.
    pub fn mode(self) -> &'static str {
        match self {
            Side::Source => "source",
            Side::Destination => "destination",
        }
    }

    /// Parses `source` / `destination` (any case).
    pub fn parse(s: &str) -> Option<Side> {
        if s.eq_ignore_ascii_case("source") {
            Some(Side::Source)
        } else if s.eq_ignore_ascii_case("destination") {
            Some(Side::Destination)
        } else {
            None
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.mode())
    }
}
