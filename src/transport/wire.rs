//! WebSocket binary frames built in place around tunnel bytes, masked as RFC 6455
//! requires of a client, for the writer to hand to TLS as they are.
//!
//! The data path's messages are most of what a proxy sends. Framing them
//! where they were read (the local connection's read half leaves
//! [`HEADER_ROOM`] bytes before the DATA frame) saves copying every byte into
//! tungstenite's send buffer; tungstenite still frames everything else
//! (pings, pongs, close, control messages) and reads everything.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::ops::Range;

use tungstenite::Bytes;

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
pub fn seal(buf: &mut [u8], msg: Range<usize>, mask: [u8; 4]) -> Range<usize> {
    let (header, len) = header(msg.len(), mask);
    let start = msg.start - len;
    buf[start..msg.start].copy_from_slice(&header[..len]);
    apply_mask(&mut buf[msg.clone()], mask);
    start..msg.end
}

/// A frame of its own carrying `msg` (the small messages: stream starts
/// and resets).
pub fn frame(msg: &[u8], masks: &mut Masks) -> Bytes {
    let mut buf = vec![0u8; HEADER_ROOM + msg.len()];
    buf[HEADER_ROOM..].copy_from_slice(msg);
    let range = seal(
        &mut buf,
        HEADER_ROOM..HEADER_ROOM + msg.len(),
        masks.next_key(),
    );
    Bytes::from(buf).slice(range)
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
            let (h2, p2) = parse(&frame(&msg, &mut masks));
            assert_eq!(h2.opcode, OpCode::Data(Data::Binary));
            assert!(p2 == msg, "frame() of {len} bytes differs");
        }
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
