//! Tunnel framing: `[u16 big-endian length][protobuf Message]` over a byte stream.
//!
//! The WebSocket is a byte stream below this layer: one WebSocket message may
//! hold several tunnel frames or a slice of one. [`FrameDecoder`] reassembles
//! frames from chunks of any size and hands each decoded [`Message`] to a
//! callback, borrowing its payload from the chunk (or from the decoder's
//! carry-over buffer when a frame straddles chunks), so a payload is never
//! copied before the consumer decides where it goes. [`encode_frame`] appends
//! one frame to an output buffer; [`DataFramer`] frames local bytes as DATA
//! around the place they were read into, without copying them.

use std::borrow::Cow;
use std::fmt;

use quick_protobuf::{BytesReader, MessageRead, MessageWrite, Writer};

pub use crate::proto::com::amazonaws::iot::securedtunneling::mod_Message::Type as MessageType;
pub use crate::proto::com::amazonaws::iot::securedtunneling::Message;
use crate::protocol::{FRAME_LENGTH_PREFIX, MAX_MESSAGE_SIZE, MAX_PAYLOAD_SIZE};

/// Why a tunnel frame could not be decoded or encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// A message's payload is larger than the configured limit.
    PayloadTooLarge { len: usize, max: usize },
    /// A serialized message does not fit the 2-byte length prefix.
    MessageTooLarge { len: usize, max: usize },
    /// A message of type UNKNOWN (0) that is not marked ignorable.
    UnknownType { raw: i32 },
    /// The bytes of a frame are not a valid protobuf Message.
    InvalidProtobuf { len: usize, reason: String },
    /// The stream ended inside a frame.
    Truncated { have: usize, need: usize },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::PayloadTooLarge { len, max } => write!(
                f,
                "message payload of {len} bytes exceeds max_payload_size of {max} bytes"
            ),
            FrameError::MessageTooLarge { len, max } => write!(
                f,
                "serialized message of {len} bytes exceeds the frame limit of {max} bytes"
            ),
            FrameError::UnknownType { raw } => {
                write!(f, "message of unknown type {raw} is not marked ignorable")
            }
            FrameError::InvalidProtobuf { len, reason } => {
                write!(f, "frame of {len} bytes is not a valid message: {reason}")
            }
            FrameError::Truncated { have, need } => write!(
                f,
                "stream ended inside a frame: {have} of {need} bytes received"
            ),
        }
    }
}

impl std::error::Error for FrameError {}

/// A decoded frame handed to the consumer.
#[derive(Debug)]
pub enum Decoded<'a> {
    /// A message of a known type.
    Message(Message<'a>),
    /// A message of a type this implementation does not know, marked
    /// `ignorable` by its sender: the protocol says to skip it.
    Ignored { raw_type: i32 },
}

/// Reassembles tunnel frames from byte chunks of any size.
#[derive(Debug)]
pub struct FrameDecoder {
    /// Bytes of an incomplete frame carried over from earlier chunks.
    carry: Vec<u8>,
    max_payload: usize,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new(MAX_PAYLOAD_SIZE)
    }
}

impl FrameDecoder {
    /// A decoder that refuses payloads larger than `max_payload` bytes.
    pub fn new(max_payload: usize) -> Self {
        FrameDecoder {
            carry: Vec::new(),
            max_payload,
        }
    }

    /// Bytes held for a frame not yet complete.
    pub fn pending(&self) -> usize {
        self.carry.len()
    }

    /// Errors when the stream ends inside a frame.
    pub fn finish(&self) -> Result<(), FrameError> {
        if self.carry.is_empty() {
            return Ok(());
        }
        let need = if self.carry.len() >= FRAME_LENGTH_PREFIX {
            FRAME_LENGTH_PREFIX + frame_len(&self.carry)
        } else {
            FRAME_LENGTH_PREFIX
        };
        Err(FrameError::Truncated {
            have: self.carry.len(),
            need,
        })
    }

    /// Feeds one chunk and calls `on_frame` for every frame it completes, in
    /// order. A decoding error stops at the faulty frame: the stream has lost
    /// sync (or carries a message we must not accept) and the caller decides
    /// what to do with the connection. Errors from `on_frame` are returned as
    /// they are.
    pub fn decode<E, F>(&mut self, chunk: &[u8], mut on_frame: F) -> Result<(), E>
    where
        E: From<FrameError>,
        F: FnMut(Decoded<'_>) -> Result<(), E>,
    {
        self.decode_raw(chunk, |_, d| on_frame(d))
    }

    /// [`decode`](Self::decode), also handing over each frame's bytes as
    /// they were on the wire (length prefix included), for a relay that
    /// checks frames and forwards them unchanged.
    pub fn decode_raw<E, F>(&mut self, mut chunk: &[u8], mut on_frame: F) -> Result<(), E>
    where
        E: From<FrameError>,
        F: FnMut(&[u8], Decoded<'_>) -> Result<(), E>,
    {
        // Finish a frame begun in an earlier chunk.
        if !self.carry.is_empty() {
            if self.carry.len() < FRAME_LENGTH_PREFIX {
                let take = (FRAME_LENGTH_PREFIX - self.carry.len()).min(chunk.len());
                self.carry.extend_from_slice(&chunk[..take]);
                chunk = &chunk[take..];
                if self.carry.len() < FRAME_LENGTH_PREFIX {
                    return Ok(());
                }
            }
            let total = FRAME_LENGTH_PREFIX + frame_len(&self.carry);
            let take = (total - self.carry.len()).min(chunk.len());
            self.carry.extend_from_slice(&chunk[..take]);
            chunk = &chunk[take..];
            if self.carry.len() < total {
                return Ok(());
            }
            let carried = std::mem::take(&mut self.carry);
            let result = decode_message(&carried[FRAME_LENGTH_PREFIX..], self.max_payload)
                .map_err(E::from)
                .and_then(|d| on_frame(&carried, d));
            // Keep the allocation for the next straddling frame.
            self.carry = carried;
            self.carry.clear();
            result?;
        }
        // Whole frames straight from the chunk, without copying.
        while chunk.len() >= FRAME_LENGTH_PREFIX {
            let total = FRAME_LENGTH_PREFIX + frame_len(chunk);
            if chunk.len() < total {
                break;
            }
            let msg = decode_message(&chunk[FRAME_LENGTH_PREFIX..total], self.max_payload)?;
            on_frame(&chunk[..total], msg)?;
            chunk = &chunk[total..];
        }
        self.carry.extend_from_slice(chunk);
        Ok(())
    }
}

fn frame_len(prefix: &[u8]) -> usize {
    usize::from(u16::from_be_bytes([prefix[0], prefix[1]]))
}

/// Decodes one serialized message and applies the codec's rules.
pub fn decode_message(bytes: &[u8], max_payload: usize) -> Result<Decoded<'_>, FrameError> {
    let mut reader = BytesReader::from_bytes(bytes);
    let msg =
        Message::from_reader(&mut reader, bytes).map_err(|e| FrameError::InvalidProtobuf {
            len: bytes.len(),
            reason: e.to_string(),
        })?;
    // The payload limit holds for every message, those to skip included.
    if msg.payload.len() > max_payload {
        return Err(FrameError::PayloadTooLarge {
            len: msg.payload.len(),
            max: max_payload,
        });
    }
    if msg.type_pb == MessageType::UNKNOWN {
        // The generated enum folds every number it does not know into
        // UNKNOWN; read the raw value to report it.
        let raw = raw_type(bytes);
        if msg.ignorable {
            return Ok(Decoded::Ignored { raw_type: raw });
        }
        return Err(FrameError::UnknownType { raw });
    }
    Ok(Decoded::Message(msg))
}

/// The last value of field 1 (type) as written on the wire, 0 when absent.
fn raw_type(bytes: &[u8]) -> i32 {
    let mut reader = BytesReader::from_bytes(bytes);
    let mut raw = 0;
    while !reader.is_eof() {
        match reader.next_tag(bytes) {
            Ok(8) => match reader.read_int32(bytes) {
                Ok(v) => raw = v,
                Err(_) => break,
            },
            Ok(tag) => {
                if reader.read_unknown(bytes, tag).is_err() {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    raw
}

/// Appends one frame (`[u16 BE length][message]`) holding `msg` to `out`.
pub fn encode_frame(msg: &Message<'_>, out: &mut Vec<u8>) -> Result<(), FrameError> {
    let len = msg.get_size();
    if len > MAX_MESSAGE_SIZE {
        return Err(FrameError::MessageTooLarge {
            len,
            max: MAX_MESSAGE_SIZE,
        });
    }
    out.reserve(FRAME_LENGTH_PREFIX + len);
    // `len` fits in u16: checked against MAX_MESSAGE_SIZE (u16::MAX) above.
    out.extend_from_slice(&(len as u16).to_be_bytes());
    let mut writer = Writer::new(&mut *out);
    msg.write_message(&mut writer)
        .map_err(|e| FrameError::InvalidProtobuf {
            len,
            reason: e.to_string(),
        })
}

/// Frames local bytes as DATA messages of one connection where they lie.
///
/// The caller reads a payload into a buffer at [`payload_offset`], then
/// [`seal`] writes the length prefix and the fields before the payload into
/// the room left there, and the fields after it (the protobuf field order
/// puts the service id and connection id after the payload), and says where
/// the frame lies in the buffer. The bytes are exactly those of
/// [`encode_frame`]. The buffer's length does not change, so it can be read
/// into again without being cleared or zeroed.
///
/// [`payload_offset`]: DataFramer::payload_offset
/// [`seal`]: DataFramer::seal
#[derive(Debug, Clone)]
pub struct DataFramer {
    /// Fields 1 (type) and 2 (stream id), encoded once.
    head: Vec<u8>,
    /// Fields 5 (service id) and 7 (connection id), encoded once.
    tail: Vec<u8>,
    max_payload: usize,
}

/// Tag of field 4 (payload, length-delimited).
const PAYLOAD_TAG: u8 = 0x22;
/// A payload length needs at most 3 varint bytes (frames are under 2^21).
const MAX_LEN_VARINT: usize = 3;

impl DataFramer {
    /// A framer for DATA with these ids and payloads of at most
    /// `max_payload` bytes; refused when such a frame would not fit the
    /// 2-byte length prefix.
    pub fn new(
        stream_id: i32,
        service_id: &str,
        connection_id: u32,
        max_payload: usize,
    ) -> Result<DataFramer, FrameError> {
        let mut head = Vec::new();
        let mut tail = Vec::new();
        let ids = message(MessageType::DATA, stream_id, "", 0, b"");
        ids.write_message(&mut Writer::new(&mut head))
            .and_then(|()| {
                // Type UNKNOWN and stream 0 are left out: only fields 5 and 7.
                let rest = message(MessageType::UNKNOWN, 0, service_id, connection_id, b"");
                rest.write_message(&mut Writer::new(&mut tail))
            })
            .map_err(|e| FrameError::InvalidProtobuf {
                len: 0,
                reason: e.to_string(),
            })?;
        let len = head.len() + 1 + sizeof_len_prefix(max_payload) + max_payload + tail.len();
        if len > MAX_MESSAGE_SIZE {
            return Err(FrameError::MessageTooLarge {
                len,
                max: MAX_MESSAGE_SIZE,
            });
        }
        Ok(DataFramer {
            head,
            tail,
            max_payload,
        })
    }

    /// Where the payload goes in the buffer given to [`DataFramer::seal`].
    pub fn payload_offset(&self) -> usize {
        FRAME_LENGTH_PREFIX + self.head.len() + 1 + MAX_LEN_VARINT
    }

    /// Bytes a buffer needs for a frame with the largest payload.
    pub fn buffer_len(&self) -> usize {
        self.payload_offset() + self.max_payload + self.tail.len()
    }

    /// Turns `buf`, holding a payload of `n` bytes (1 ..= max_payload) at
    /// [`DataFramer::payload_offset`], into a frame: `buf[range]` with the
    /// range returned.
    ///
    /// # Panics
    /// When `n` is 0 or over the maximum, or `buf` is too short: callers
    /// read at most the maximum into a buffer of [`DataFramer::buffer_len`].
    pub fn seal(&self, buf: &mut [u8], n: usize) -> std::ops::Range<usize> {
        assert!(n > 0 && n <= self.max_payload, "DATA payload of {n} bytes");
        let off = self.payload_offset();
        let end = off + n + self.tail.len();
        buf[off + n..end].copy_from_slice(&self.tail);
        let mut varint = [0u8; MAX_LEN_VARINT];
        let mut v = n;
        let mut vlen = 0;
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                varint[vlen] = byte;
                vlen += 1;
                break;
            }
            varint[vlen] = byte | 0x80;
            vlen += 1;
        }
        let fields = self.head.len() + 1 + vlen;
        let start = off - fields - FRAME_LENGTH_PREFIX;
        let msg_len = end - start - FRAME_LENGTH_PREFIX;
        // Fits: `new` checked the largest frame against the u16 prefix.
        let prefix = (msg_len as u16).to_be_bytes();
        let mut at = start;
        for part in [&prefix[..], &self.head, &[PAYLOAD_TAG], &varint[..vlen]] {
            buf[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        debug_assert_eq!(at, off);
        start..end
    }
}

/// Bytes of the varint length of a payload of `n` bytes.
fn sizeof_len_prefix(n: usize) -> usize {
    quick_protobuf::sizeofs::sizeof_varint(n as u64)
}

/// Detaches a decoded message from the buffer it borrows from.
pub fn into_owned(m: Message<'_>) -> Message<'static> {
    Message {
        type_pb: m.type_pb,
        streamId: m.streamId,
        ignorable: m.ignorable,
        payload: Cow::Owned(m.payload.into_owned()),
        serviceId: Cow::Owned(m.serviceId.into_owned()),
        availableServiceIds: m
            .availableServiceIds
            .into_iter()
            .map(|s| Cow::Owned(s.into_owned()))
            .collect(),
        connectionId: m.connectionId,
    }
}

/// Builds a message of `kind` with the ids given (0 / empty means absent).
pub fn message<'a>(
    kind: MessageType,
    stream_id: i32,
    service_id: &'a str,
    connection_id: u32,
    payload: &'a [u8],
) -> Message<'a> {
    Message {
        type_pb: kind,
        streamId: stream_id,
        ignorable: false,
        payload: Cow::Borrowed(payload),
        serviceId: Cow::Borrowed(service_id),
        availableServiceIds: Vec::new(),
        connectionId: connection_id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(msgs: &[Message<'_>]) -> Vec<u8> {
        let mut out = Vec::new();
        for m in msgs {
            encode_frame(m, &mut out).expect("encodes");
        }
        out
    }

    fn owned(d: Decoded<'_>) -> Message<'static> {
        match d {
            Decoded::Message(m) => into_owned(m),
            Decoded::Ignored { raw_type } => panic!("unexpected ignored type {raw_type}"),
        }
    }

    fn decode_all(dec: &mut FrameDecoder, chunks: &[&[u8]]) -> Vec<Message<'static>> {
        let mut got = Vec::new();
        for c in chunks {
            dec.decode::<FrameError, _>(c, |d| {
                got.push(owned(d));
                Ok(())
            })
            .expect("decodes");
        }
        got
    }

    fn sample() -> Vec<Message<'static>> {
        let big = vec![0xa5u8; MAX_PAYLOAD_SIZE];
        let mut ids = message(MessageType::SERVICE_IDS, 0, "", 0, b"");
        ids.availableServiceIds = vec![Cow::Borrowed("SSH1"), Cow::Borrowed("WEB")];
        vec![
            message(MessageType::STREAM_START, 1, "SSH1", 1, b""),
            message(MessageType::DATA, 1, "SSH1", 1, b"hello"),
            message(MessageType::DATA, 1, "SSH1", 1, b""),
            Message {
                payload: Cow::Owned(big),
                ..message(MessageType::DATA, 7, "WEB", 3, b"")
            },
            ids,
            message(MessageType::CONNECTION_RESET, 1, "SSH1", 2, b""),
        ]
    }

    #[test]
    fn every_split_point_of_a_multi_frame_buffer() {
        let msgs = sample();
        let bytes = frames(&msgs);
        // Every single split point, over a buffer of six frames.
        for split in 0..=bytes.len() {
            let mut dec = FrameDecoder::default();
            let got = decode_all(&mut dec, &[&bytes[..split], &bytes[split..]]);
            assert_eq!(got, msgs, "split at {split}");
            assert_eq!(dec.pending(), 0);
            dec.finish().expect("nothing left over");
        }
    }

    #[test]
    fn raw_frames_are_the_bytes_on_the_wire_at_every_split() {
        let bytes = frames(&sample());
        for split in 0..=bytes.len() {
            let mut dec = FrameDecoder::default();
            let mut raw = Vec::new();
            for c in [&bytes[..split], &bytes[split..]] {
                dec.decode_raw::<FrameError, _>(c, |r, _| {
                    raw.extend_from_slice(r);
                    Ok(())
                })
                .expect("decodes");
            }
            assert_eq!(raw, bytes, "split at {split}");
        }
    }

    #[test]
    fn byte_by_byte_and_three_way_splits() {
        let msgs = sample()[..3].to_vec();
        let bytes = frames(&msgs);
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(decode_all(&mut FrameDecoder::default(), &singles), msgs);
        for a in 0..=bytes.len() {
            for b in a..=bytes.len() {
                let chunks = [&bytes[..a], &bytes[a..b], &bytes[b..]];
                assert_eq!(decode_all(&mut FrameDecoder::default(), &chunks), msgs);
            }
        }
    }

    #[test]
    fn zero_length_frame_is_an_unknown_type() {
        // A zero-length frame is an empty message: type UNKNOWN, not ignorable.
        let mut dec = FrameDecoder::default();
        let err = dec
            .decode::<FrameError, _>(&[0, 0], |_| Ok(()))
            .expect_err("refused");
        assert_eq!(err, FrameError::UnknownType { raw: 0 });
        assert!(err.to_string().contains("unknown type 0"));
    }

    #[test]
    fn payload_over_the_limit_names_value_and_limit() {
        let payload = vec![1u8; 101];
        let bytes = frames(&[message(MessageType::DATA, 1, "", 0, &payload)]);
        let mut dec = FrameDecoder::new(100);
        let err = dec
            .decode::<FrameError, _>(&bytes, |_| Ok(()))
            .expect_err("refused");
        assert_eq!(err, FrameError::PayloadTooLarge { len: 101, max: 100 });
        assert!(err.to_string().contains("101") && err.to_string().contains("100"));
    }

    #[test]
    fn unknown_type_ignorable_is_skipped_and_not_ignorable_is_refused() {
        // type = 9, ignorable = true
        let ignorable = [0, 4, 0x08, 9, 0x18, 1];
        let mut seen = Vec::new();
        FrameDecoder::default()
            .decode::<FrameError, _>(&ignorable, |d| {
                if let Decoded::Ignored { raw_type } = d {
                    seen.push(raw_type);
                }
                Ok(())
            })
            .expect("skipped");
        assert_eq!(seen, vec![9]);
        // Skipped or not, a payload over the limit is refused.
        let mut big = vec![0x08, 9, 0x18, 1, 0x22, 101];
        big.extend([0x61; 101]);
        let mut framed = vec![0, big.len() as u8];
        framed.extend(big);
        let err = FrameDecoder::new(100)
            .decode::<FrameError, _>(&framed, |_| Ok(()))
            .expect_err("refused");
        assert_eq!(err, FrameError::PayloadTooLarge { len: 101, max: 100 });
        let strict = [0, 2, 0x08, 9];
        let err = FrameDecoder::default()
            .decode::<FrameError, _>(&strict, |_| Ok(()))
            .expect_err("refused");
        assert_eq!(err, FrameError::UnknownType { raw: 9 });
    }

    #[test]
    fn invalid_protobuf_and_truncation() {
        // Field 4 (bytes) claims 10 bytes but has 1.
        let bad = [0, 3, 0x22, 10, 1];
        let err = FrameDecoder::default()
            .decode::<FrameError, _>(&bad, |_| Ok(()))
            .expect_err("refused");
        assert!(
            matches!(err, FrameError::InvalidProtobuf { len: 3, .. }),
            "{err}"
        );
        let mut dec = FrameDecoder::default();
        dec.decode::<FrameError, _>(&[0, 9, 0x08], |_| Ok(()))
            .expect("partial");
        assert_eq!(
            dec.finish(),
            Err(FrameError::Truncated { have: 3, need: 11 })
        );
    }

    #[test]
    fn maximum_size_frame_round_trips() {
        // Largest serialized message: the 2-byte prefix says 65535.
        let payload = vec![7u8; MAX_MESSAGE_SIZE - 4 - 4];
        let msg = message(MessageType::DATA, 1, "", 0, &payload);
        assert_eq!(msg.get_size(), MAX_MESSAGE_SIZE);
        let bytes = frames(std::slice::from_ref(&msg));
        assert_eq!(&bytes[..2], &[0xff, 0xff]);
        let got = decode_all(&mut FrameDecoder::new(usize::MAX), &[&bytes]);
        assert_eq!(got, vec![msg]);
        let too_big = vec![7u8; MAX_MESSAGE_SIZE];
        let err = encode_frame(
            &message(MessageType::DATA, 1, "", 0, &too_big),
            &mut Vec::new(),
        )
        .expect_err("refused");
        assert!(matches!(err, FrameError::MessageTooLarge { .. }));
    }

    #[test]
    fn fixed_byte_vectors_match_the_schema() {
        // STREAM_START stream 1, service "SSH1", connection 1.
        let bytes = frames(&[message(MessageType::STREAM_START, 1, "SSH1", 1, b"")]);
        assert_eq!(
            bytes,
            vec![0, 12, 0x08, 2, 0x10, 1, 0x2a, 4, b'S', b'S', b'H', b'1', 0x38, 1]
        );
        // DATA stream 300 (varint 0xac 0x02), payload "hi", ignorable.
        let mut m = message(MessageType::DATA, 300, "", 0, b"hi");
        m.ignorable = true;
        assert_eq!(
            frames(&[m]),
            vec![0, 11, 0x08, 1, 0x10, 0xac, 0x02, 0x18, 1, 0x22, 2, b'h', b'i']
        );
        // SERVICE_IDS with two ids (field 6 repeated).
        let mut ids = message(MessageType::SERVICE_IDS, 0, "", 0, b"");
        ids.availableServiceIds = vec![Cow::Borrowed("A"), Cow::Borrowed("BC")];
        assert_eq!(
            frames(&[ids]),
            vec![0, 9, 0x08, 5, 0x32, 1, b'A', 0x32, 2, b'B', b'C']
        );
        // CONNECTION_RESET with connection id 2^32-1.
        assert_eq!(
            frames(&[message(MessageType::CONNECTION_RESET, 2, "", u32::MAX, b"")]),
            vec![0, 10, 0x08, 7, 0x10, 2, 0x38, 0xff, 0xff, 0xff, 0xff, 0x0f]
        );
    }

    #[test]
    fn data_framer_writes_the_bytes_of_encode_frame() {
        let max = MAX_PAYLOAD_SIZE;
        let payload: Vec<u8> = (0..max).map(|i| (i * 7) as u8).collect();
        for (stream, service, conn) in [
            (1, "", 0),
            (1, "SSH1", 1),
            (300, "WEB", 70_000),
            (-5, "", u32::MAX),
            (i32::MAX, &*"s".repeat(128), 2),
        ] {
            let framer = DataFramer::new(stream, service, conn, max).expect("fits");
            for n in [1, 2, 127, 128, 129, 16_383, 16_384, 16_385, max - 1, max] {
                // Longer than needed, as a pooled buffer is: the frame
                // ends where its fields end.
                let mut buf = vec![0xeeu8; framer.buffer_len() + 5];
                let off = framer.payload_offset();
                buf[off..off + n].copy_from_slice(&payload[..n]);
                let frame = framer.seal(&mut buf, n);
                let want = frames(&[message(
                    MessageType::DATA,
                    stream,
                    service,
                    conn,
                    &payload[..n],
                )]);
                assert_eq!(&buf[frame], &want[..], "{stream} {service} {conn} n={n}");
            }
        }
    }

    #[test]
    fn data_framer_refuses_frames_over_the_prefix() {
        let long = "x".repeat(2000);
        let err = DataFramer::new(1, &long, 1, MAX_MESSAGE_SIZE - 100).expect_err("too big");
        assert!(matches!(err, FrameError::MessageTooLarge { .. }), "{err}");
        assert!(DataFramer::new(1, "", 0, MAX_MESSAGE_SIZE - 8).is_ok());
    }

    #[test]
    fn every_field_round_trips() {
        let mut m = message(MessageType::CONNECTION_START, -5, "svc", 42, b"\x00\x01");
        m.ignorable = true;
        m.availableServiceIds = vec![Cow::Borrowed("x"), Cow::Borrowed("")];
        for t in 1..=7 {
            m.type_pb = MessageType::from(t);
            let bytes = frames(&[m.clone()]);
            assert_eq!(
                decode_all(&mut FrameDecoder::default(), &[&bytes]),
                vec![m.clone()]
            );
        }
    }
}
