//! Fuzzes `localproxy::frame::FrameDecoder` with arbitrary byte streams cut
//! into arbitrary chunks.
//!
//! Input layout:
//! - byte 0: bits 0-2 = `k`, how many chunk-size bytes follow (0..=7);
//!   bit 3 set = decode with a 16-byte payload limit instead of the default.
//! - the next `k` bytes: chunk sizes, used in turn (size = byte + 1);
//!   with `k = 0` the whole stream is fed as one chunk.
//! - the rest: the byte stream.
//!
//! Invariants checked:
//! - decoding never panics;
//! - the chunked decode yields exactly what one whole-buffer decode yields
//!   (same messages, same error, same bytes left pending, same `finish`);
//! - every decoded message encodes with `encode_frame`, decodes back to the
//!   same message, and re-encoding that gives the same bytes.

#![no_main]


use libfuzzer_sys::fuzz_target;
use localproxy::frame::{encode_frame, into_owned, Decoded, FrameDecoder, FrameError, Message};
use localproxy::protocol::MAX_PAYLOAD_SIZE;

/// What one decoded frame turned into, detached from the input buffer.
#[derive(Debug, Clone, PartialEq)]
enum Item {
    Message(Message<'static>),
    Ignored(i32),
}

fn item(d: Decoded<'_>) -> Item {
    match d {
        Decoded::Message(m) => Item::Message(into_owned(m)),
        Decoded::Ignored { raw_type } => Item::Ignored(raw_type),
    }
}

/// Everything a decode run produced.
#[derive(Debug, PartialEq)]
struct Outcome {
    items: Vec<Item>,
    error: Option<FrameError>,
    pending: usize,
    finish: Result<(), FrameError>,
}

/// Feeds `chunks` in order, stopping at the first error as a caller would.
fn run<'a>(max_payload: usize, chunks: impl Iterator<Item = &'a [u8]>) -> Outcome {
    let mut dec = FrameDecoder::new(max_payload);
    let mut items = Vec::new();
    let mut error = None;
    for chunk in chunks {
        if let Err(e) = dec.decode::<FrameError, _>(chunk, |d| {
            items.push(item(d));
            Ok(())
        }) {
            error = Some(e);
            break;
        }
    }
    let (pending, finish) = if error.is_none() {
        (dec.pending(), dec.finish())
    } else {
        // After an error the stream has lost sync: nothing more to compare.
        (0, Ok(()))
    };
    Outcome {
        items,
        error,
        pending,
        finish,
    }
}

/// Splits `stream` into chunks whose sizes cycle through `sizes` (+1 each).
fn chunks<'a>(stream: &'a [u8], sizes: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut rest = stream;
    let mut i = 0;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let size = match sizes.get(i % sizes.len().max(1)) {
            Some(&s) => usize::from(s) + 1,
            None => rest.len(),
        };
        i += 1;
        let (head, tail) = rest.split_at(size.min(rest.len()));
        rest = tail;
        Some(head)
    })
}

fn round_trip(msg: &Message<'static>, max_payload: usize) {
    let mut bytes = Vec::new();
    match encode_frame(msg, &mut bytes) {
        Ok(()) => {}
        // A decoded message re-encodes canonically, which can be longer
        // than the wire form it came in (e.g. a short negative varint):
        // refusing it is the encoder's documented behaviour, not a bug.
        Err(FrameError::MessageTooLarge { .. }) => return,
        Err(e) => panic!("decoded message does not encode: {e}"),
    }
    let again = run(max_payload, std::iter::once(bytes.as_slice()));
    assert_eq!(again.error, None, "re-encoded frame does not decode");
    assert_eq!(again.pending, 0);
    assert_eq!(again.items, vec![Item::Message(msg.clone())]);
    let mut bytes2 = Vec::new();
    encode_frame(msg, &mut bytes2).expect("encoded once already");
    assert_eq!(bytes, bytes2, "encoding is not deterministic");
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let k = usize::from(control & 0x07);
    let max_payload = if control & 0x08 != 0 {
        16
    } else {
        MAX_PAYLOAD_SIZE
    };
    if rest.len() < k {
        return;
    }
    let (sizes, stream) = rest.split_at(k);

    let whole = run(max_payload, std::iter::once(stream));
    let chunked = run(max_payload, chunks(stream, sizes));
    assert_eq!(chunked, whole, "chunked decode differs from whole decode");

    for it in &whole.items {
        if let Item::Message(m) = it {
            round_trip(m, max_payload);
        }
    }
});
