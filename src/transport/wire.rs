//! WebSocket binary frames built in place around tunnel bytes, masked as RFC 6455
//! requires of a client, for the writer to hand to TLS as they are.
//!
//! The data path's messages are most of what a proxy sends. The local
//! connection's read half builds each DATA frame in the buffer it read into,
//! with [`HEADER_ROOM`] bytes free before it, and sends that buffer as an
//! [`Outgoing`]; the writer writes the header there and masks the payload
//! in place ([`Outgoing::seal`]) just before encrypting it. So no byte is
//! copied into tungstenite's send buffer, and the mask pass, which is the
//! first to read bytes another thread received, leaves them in the cache
//! that OpenSSL then reads them from. tungstenite still frames everything
//! else (pings, pongs, close, control messages) and reads everything.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::ops::Range;

use crate::buffers::BufferPool;

/// Bytes to leave before a message for its frame header: the longest header
/// a client sends (2 bytes, an 8-byte length, a 4-byte mask).
pub const HEADER_ROOM: usize = 14;

/// FIN set, opcode 2 (binary): one whole binary message per frame.
const FIN_BINARY: u8 = 0x82;
/// The MASK bit of the second header byte.
const MASKED: u8 = 0x80;

/// Masking keys for one sender. RFC 6455 asks for keys a script cannot
/// predict; each is SipHash, under keys std draws from the operating
/// system's random source, of a counter.
#[derive(Debug)]
pub struct Masks {
    keys: RandomState,
    counter: u64,
    spare: Option<[u8; 4]>,
}

impl Default for Masks {
    fn default() -> Self {
        Masks::new()
    }
}

impl Masks {
    pub fn new() -> Masks {
        Masks {
            keys: RandomState::new(),
            counter: 0,
            spare: None,
        }
    }

    /// The next key.
    pub fn next_key(&mut self) -> [u8; 4] {
        if let Some(k) = self.spare.take() {
            return k;
        }
        let mut h = self.keys.build_hasher();
        h.write_u64(self.counter);
        self.counter = self.counter.wrapping_add(1);
        let b = h.finish().to_le_bytes();
        self.spare = Some([b[4], b[5], b[6], b[7]]);
        [b[0], b[1], b[2], b[3]]
    }
}

/// Turns `buf[msg]`, the bytes of one binary message with at least
/// [`HEADER_ROOM`] bytes before them, into a complete masked frame and
/// returns where it lies in `buf`. The header goes right before the
/// message, so the frame starts at most `HEADER_ROOM` bytes earlier.
///
/// # Panics
/// When `msg.start` is under the room the header needs, or `msg` lies
/// outside `buf`: callers build the message at `HEADER_ROOM` or later.
fn seal(buf: &mut [u8], msg: Range<usize>, mask: [u8; 4]) -> Range<usize> {
    let (header, len) = header(msg.len(), mask);
    let start = msg.start - len;
    buf[start..msg.start].copy_from_slice(&header[..len]);
    apply_mask(&mut buf[msg.clone()], mask);
    start..msg.end
}

/// One binary message for the writer, in a buffer with room for its frame
/// header before it; sealed (framed and masked) by the writer. A pooled
/// buffer goes back to its pool when the message is dropped.
pub struct Outgoing {
    buf: Vec<u8>,
    /// The message before sealing, the whole frame after.
    range: Range<usize>,
    sealed: bool,
    pool: Option<BufferPool>,
}

impl std::fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outgoing")
            .field("len", &self.range.len())
            .field("sealed", &self.sealed)
            .finish()
    }
}

impl Outgoing {
    /// `buf[msg]`, whose buffer goes back to `pool` once sent. A message
    /// without [`HEADER_ROOM`] bytes before it (no caller builds one) is
    /// copied into a buffer that has them.
    pub fn pooled(buf: Vec<u8>, msg: Range<usize>, pool: &BufferPool) -> Outgoing {
        if msg.start < HEADER_ROOM || msg.end > buf.len() || msg.start > msg.end {
            let m = buf.get(msg).unwrap_or_default();
            let out = Outgoing::copied(m);
            pool.give(buf);
            return out;
        }
        Outgoing {
            buf,
            range: msg,
            sealed: false,
            pool: Some(pool.clone()),
        }
    }

    /// A copy of `msg` (the small messages: stream starts and resets, short reads).
    pub fn copied(msg: &[u8]) -> Outgoing {
        let mut buf = vec![0u8; HEADER_ROOM + msg.len()];
        buf[HEADER_ROOM..].copy_from_slice(msg);
        Outgoing {
            range: HEADER_ROOM..buf.len(),
            buf,
            sealed: false,
            pool: None,
        }
    }

    /// Bytes of the message (before sealing) or of the frame (after).
    pub fn len(&self) -> usize {
        self.range.len()
    }

    /// True for an empty message.
    pub fn is_empty(&self) -> bool {
        self.range.is_empty()
    }

    /// The message's bytes before [`Outgoing::seal`], the frame's after.
    pub fn bytes(&self) -> &[u8] {
        &self.buf[self.range.clone()]
    }

    /// Frames and masks the message in place with `mask` (once: later
    /// calls change nothing) and returns the frame's bytes.
    pub fn seal(&mut self, mask: [u8; 4]) -> &[u8] {
        if !self.sealed {
            self.range = seal(&mut self.buf, self.range.clone(), mask);
            self.sealed = true;
        }
        &self.buf[self.range.clone()]
    }
}

impl Drop for Outgoing {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            pool.give(std::mem::take(&mut self.buf));
        }
    }
}

/// The header of a masked binary frame of `len` payload bytes, and its length.
fn header(len: usize, mask: [u8; 4]) -> ([u8; HEADER_ROOM], usize) {
    let mut h = [0u8; HEADER_ROOM];
    h[0] = FIN_BINARY;
    let at = if len < 126 {
        // Under 126: fits the 7-bit length.
        h[1] = MASKED | len as u8;
        2
    } else if let Ok(short) = u16::try_from(len) {
        h[1] = MASKED | 126;
        h[2..4].copy_from_slice(&short.to_be_bytes());
        4
    } else {
        h[1] = MASKED | 127;
        h[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    };
    h[at..at + 4].copy_from_slice(&mask);
    (h, at + 4)
}

/// XORs `buf` with the repeated 4-byte `mask` (RFC 6455 section 5.3), 64
/// bytes at a time: the fixed-size inner loop compiles to vector XORs.
fn apply_mask(buf: &mut [u8], mask: [u8; 4]) {
    let mut pattern = [0u8; 64];
    for (i, p) in pattern.iter_mut().enumerate() {
        *p = mask[i & 3];
    }
    let mut chunks = buf.chunks_exact_mut(64);
    for c in &mut chunks {
        for (b, m) in c.iter_mut().zip(pattern.iter()) {
            *b ^= *m;
        }
    }
    // The tail starts at a multiple of 64, so at mask byte 0.
    for (b, m) in chunks.into_remainder().iter_mut().zip(pattern.iter()) {
        *b ^= *m;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;
    use tungstenite::protocol::frame::coding::{Data, OpCode};
    use tungstenite::protocol::frame::FrameHeader;

    /// What tungstenite's own parser makes of a frame we built.
    fn parse(frame: &[u8]) -> (FrameHeader, Vec<u8>) {
        let mut c = Cursor::new(frame);
        let (h, len) = FrameHeader::parse(&mut c)
            .expect("valid header")
            .expect("whole header");
        let at = c.position() as usize;
        assert_eq!(frame.len() - at, len as usize, "length field");
        let mut payload = frame[at..].to_vec();
        let mask = h.mask.expect("client frames are masked");
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i & 3];
        }
        (h, payload)
    }

    #[test]
    fn frames_of_every_length_class_parse_back_to_the_message() {
        let mut masks = Masks::new();
        for len in [0, 1, 7, 8, 9, 125, 126, 127, 4095, 65535, 65536, 131_076] {
            let msg: Vec<u8> = (0..len).map(|i| (i * 31 + 7) as u8).collect();
            let mut buf = vec![0u8; HEADER_ROOM + len + 3];
            buf[HEADER_ROOM..HEADER_ROOM + len].copy_from_slice(&msg);
            let r = seal(&mut buf, HEADER_ROOM..HEADER_ROOM + len, masks.next_key());
            assert_eq!(r.end, HEADER_ROOM + len);
            let (h, payload) = parse(&buf[r]);
            assert!(h.is_final, "len {len}");
            assert_eq!(h.opcode, OpCode::Data(Data::Binary), "len {len}");
            assert!(payload == msg, "payload of {len} bytes differs");
            let mut out = Outgoing::copied(&msg);
            let key = masks.next_key();
            let once = out.seal(key).to_vec();
            assert_eq!(out.seal(key), &once[..], "sealing twice changes nothing");
            let (h2, p2) = parse(&once);
            assert_eq!(h2.opcode, OpCode::Data(Data::Binary));
            assert!(p2 == msg, "a copied message of {len} bytes differs");
        }
    }

    #[test]
    fn pooled_messages_go_back_to_their_pool_and_lacking_room_are_copied() {
        let pool = BufferPool::new(2, 64);
        let mut buf = pool.take();
        buf[HEADER_ROOM..HEADER_ROOM + 3].copy_from_slice(b"abc");
        let mut out = Outgoing::pooled(buf, HEADER_ROOM..HEADER_ROOM + 3, &pool);
        let (_, p) = parse(out.seal([1, 2, 3, 4]));
        assert_eq!(p, b"abc");
        drop(out);
        assert_eq!(format!("{pool:?}"), "BufferPool { size: 64, spare: 1 }");
        // No room for a header: copied, and the buffer still comes back.
        let mut buf = pool.take();
        buf[..3].copy_from_slice(b"xyz");
        let mut out = Outgoing::pooled(buf, 0..3, &pool);
        let (_, p) = parse(out.seal([9, 8, 7, 6]));
        assert_eq!(p, b"xyz");
        assert_eq!(format!("{pool:?}"), "BufferPool { size: 64, spare: 1 }");
    }

    #[test]
    fn masking_matches_the_bytewise_definition_at_any_length() {
        let mask = [0x12, 0x34, 0x56, 0x78];
        for len in 0..200 {
            let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut fast = data.clone();
            apply_mask(&mut fast, mask);
            let slow: Vec<u8> = data
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[i % 4])
                .collect();
            assert_eq!(fast, slow, "len {len}");
        }
    }

    #[test]
    fn keys_vary() {
        let mut m = Masks::new();
        let keys: std::collections::HashSet<[u8; 4]> = (0..1000).map(|_| m.next_key()).collect();
        assert!(keys.len() > 990, "{} distinct keys of 1000", keys.len());
    }
}
