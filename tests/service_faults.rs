//! Fault injection of `tunnel-service`: re-chunking, injected bytes and text
//! frames, dropped connections.

mod common;

use common::raw::*;
use localproxy::frame::{message, FrameDecoder, MessageType};
use serde_json::json;
use tungstenite::Message as WsMessage;

#[test]
fn rechunking_splits_the_stream_into_small_messages() {
    let svc = Svc::start(&["--rechunk-seed", "42", "--rechunk-max", "7"]);
    let (_, src, dst) = svc.open(&["SSH1"], 10);
    let mut d = join(&svc, "destination", &dst, None);
    let mut s = join(&svc, "source", &src, None);
    recv(&mut s, &mut FrameDecoder::default(), 1);
    let sent = vec![
        message(MessageType::STREAM_START, 1, "SSH1", 1, b""),
        message(MessageType::DATA, 1, "SSH1", 1, &[9u8; 1000]),
    ];
    send(&mut s, frames(&sent));
    let mut dec = FrameDecoder::default();
    let mut got = Vec::new();
    let mut sizes = Vec::new();
    while got.len() < 3 {
        match d.read().expect("data") {
            WsMessage::Binary(b) => {
                sizes.push(b.len());
                dec.decode::<localproxy::frame::FrameError, _>(&b, |m| {
                    if let localproxy::frame::Decoded::Message(m) = m {
                        got.push(into_owned(m));
                    }
                    Ok(())
                })
                .expect("frames");
            }
            m => panic!("{m:?}"),
        }
    }
    assert_eq!(got[1..], sent[..]);
    assert!(sizes.iter().all(|&n| (1..=7).contains(&n)), "{sizes:?}");
    assert!(sizes.len() > 100);
}

#[test]
fn injected_bytes_and_text_frames_reach_one_side() {
    let svc = Svc::start(&[]);
    let (id, _, dst) = svc.open(&["SSH1"], 10);
    let mut d = join(&svc, "destination", &dst, None);
    recv(&mut d, &mut FrameDecoder::default(), 1);
    let raw = frames(&[message(MessageType::SESSION_RESET, 0, "", 0, b"")]);
    let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    svc.ok(
        "LocalTest.Inject",
        json!({"tunnelId": id, "side": "destination", "hexBytes": hex}),
    );
    match recv(&mut d, &mut FrameDecoder::default(), 1) {
        Event::Frames(m) => assert_eq!(m[0].type_pb, MessageType::SESSION_RESET),
        e => panic!("{e:?}"),
    }
    svc.ok(
        "LocalTest.Inject",
        json!({"tunnelId": id, "side": "destination", "textFrame": "oops"}),
    );
    match recv(&mut d, &mut FrameDecoder::default(), 1) {
        Event::Text(t) => assert_eq!(t, "oops"),
        e => panic!("{e:?}"),
    }
    let (status, _, e) = svc.call(
        "LocalTest.Inject",
        &json!({"tunnelId": id, "side": "source", "hexBytes": "00"}).to_string(),
    );
    assert_eq!(status, 400);
    assert!(e["message"]
        .as_str()
        .expect("msg")
        .contains("no source connected"));
    svc.ok(
        "LocalTest.Drop",
        json!({"tunnelId": id, "side": "destination"}),
    );
    match recv(&mut d, &mut FrameDecoder::default(), 1) {
        Event::Eof(_) => {}
        e => panic!("expected a dropped connection, got {e:?}"),
    }
}

#[test]
fn drop_after_bytes_cuts_the_first_connection_only() {
    let svc = Svc::start(&["--drop-after-bytes", "100", "--drop-side", "destination"]);
    let (_, src, dst) = svc.open(&["SSH1"], 10);
    let ct = "e".repeat(32);
    let mut d = join(&svc, "destination", &dst, Some(&ct));
    let mut s = join(&svc, "source", &src, None);
    recv(&mut s, &mut FrameDecoder::default(), 1);
    send(
        &mut s,
        frames(&[
            message(MessageType::STREAM_START, 1, "SSH1", 1, b""),
            message(MessageType::DATA, 1, "SSH1", 1, &[1u8; 500]),
        ]),
    );
    let mut total = 0;
    loop {
        match d.read() {
            Ok(WsMessage::Binary(b)) => total += b.len(),
            Ok(WsMessage::Close(_)) => panic!("a drop sends no close frame"),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    assert!(total <= 100, "{total}");
    // The reconnect is not dropped.
    let mut d2 = join(&svc, "destination", &dst, Some(&ct));
    recv(&mut d2, &mut FrameDecoder::default(), 1);
    send(
        &mut s,
        frames(&[
            message(MessageType::STREAM_START, 2, "SSH1", 1, b""),
            message(MessageType::DATA, 2, "SSH1", 1, &[2u8; 500]),
        ]),
    );
    match recv(&mut d2, &mut FrameDecoder::default(), 2) {
        Event::Frames(m) => assert_eq!(m[1].payload.len(), 500),
        e => panic!("{e:?}"),
    }
}
