//! Fault injection for tests (all off by default): re-chunking of the
//! relayed byte stream, dropped connections and a bandwidth limit. Injection
//! of bytes or text frames is an API operation (see `api`).

use std::time::{Duration, Instant};

use crate::side::Side;

/// The faults the service was started with.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Re-chunk outgoing bytes into WebSocket messages of random sizes
    /// (1..=`rechunk_max`), from this seed.
    pub rechunk_seed: Option<u64>,
    /// Largest re-chunked message.
    pub rechunk_max: usize,
    /// Drop a connection (no close frame) once this many bytes went through
    /// it, reads and writes counted together.
    pub drop_after_bytes: Option<u64>,
    /// Only drop connections of this side.
    pub drop_side: Option<Side>,
    /// Drop every connection, not only the first one of each tunnel side.
    pub drop_repeat: bool,
    /// Outgoing bytes per second per connection.
    pub bandwidth: Option<u64>,
}

/// xorshift64*: small, seeded, good enough to pick chunk sizes.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        // Zero is a fixed point of xorshift; mix the seed so 0 works too.
        XorShift(seed ^ 0x9e37_79b9_7f4a_7c15 | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value in `1..=max` (1 when `max` is 0).
    pub fn size(&mut self, max: usize) -> usize {
        1 + (self.next_u64() % max.max(1) as u64) as usize
    }
}

/// A per-connection bandwidth limit: bytes may go out while the bytes sent
/// so far stay under `rate × elapsed` (plus one chunk of slack).
#[derive(Debug)]
pub struct Throttle {
    rate: u64,
    start: Instant,
    sent: u64,
}

impl Throttle {
    pub fn new(rate: u64) -> Self {
        Throttle {
            rate: rate.max(1),
            start: Instant::now(),
            sent: 0,
        }
    }

    /// Largest chunk to write at once (about 1/20 s of traffic).
    pub fn chunk(&self) -> usize {
        usize::try_from(self.rate / 20).unwrap_or(usize::MAX).max(1)
    }

    /// How long to wait before the next write, if at all.
    pub fn delay(&self) -> Option<Duration> {
        let due = Duration::from_secs_f64(self.sent as f64 / self.rate as f64);
        let elapsed = self.start.elapsed();
        (due > elapsed).then(|| due - elapsed)
    }

    pub fn record(&mut self, n: usize) {
        self.sent += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xorshift_is_deterministic_and_in_range() {
        let mut a = XorShift::new(7);
        let mut b = XorShift::new(7);
        let sa: Vec<usize> = (0..100).map(|_| a.size(10)).collect();
        let sb: Vec<usize> = (0..100).map(|_| b.size(10)).collect();
        assert_eq!(sa, sb);
        assert!(sa.iter().all(|&s| (1..=10).contains(&s)));
        assert!(sa.iter().any(|&s| s != sa[0]));
        assert_eq!(XorShift::new(0).size(0), 1);
    }

    #[test]
    fn throttle_delays_after_the_budget() {
        let mut t = Throttle::new(1000);
        assert!(t.delay().is_none());
        t.record(1000);
        let d = t.delay().expect("over budget");
        assert!(d > Duration::from_millis(500) && d <= Duration::from_secs(1));
        assert_eq!(t.chunk(), 50);
    }
}
