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

/// Sends 64 KiB messages until a write blocks for a second; returns the
/// bytes sent, failing past `limit` (the service would be reading).
fn send_until_blocked(ws: &mut Ws, limit: usize) -> usize {
    ws.get_ref()
        .get_ref()
        .set_write_timeout(Some(std::time::Duration::from_secs(1)))
        .expect("timeout");
    let chunk = frames(&[message(MessageType::DATA, 1, "SSH1", 1, &[7u8; 60_000])]);
    let mut sent = 0;
    while sent < limit {
        if ws.send(WsMessage::Binary(chunk.clone().into())).is_err() {
            return sent;
        }
        sent += chunk.len();
    }
    panic!("{sent} bytes written without blocking: the service is still reading");
}

#[test]
fn silence_stops_reading_and_writing_a_connection_until_it_is_replaced() {
    let _w = common::watchdog("silence", std::time::Duration::from_secs(60));
    let svc = Svc::start(&[]);
    let (id, src, dst) = svc.open(&["SSH1"], 10);
    let ct = "c".repeat(32);
    let mut d = join(&svc, "destination", &dst, Some(&ct));
    let mut s = join(&svc, "source", &src, None);
    recv(&mut d, &mut FrameDecoder::default(), 1);
    recv(&mut s, &mut FrameDecoder::default(), 1);
    assert_eq!(
        svc.ok(
            "LocalTest.Silence",
            json!({"tunnelId": id, "side": "destination"})
        ),
        json!({})
    );
    // Data for it, and a ping from it: nothing comes back, no pong, no FIN.
    send(
        &mut s,
        frames(&[
            message(MessageType::STREAM_START, 1, "SSH1", 1, b""),
            message(MessageType::DATA, 1, "SSH1", 1, b"held"),
        ]),
    );
    d.send(WsMessage::Ping(b"p".to_vec().into()))
        .expect("ping sent");
    assert_silent(
        &mut d,
        std::time::Duration::from_millis(500),
        "expected silence",
    );
    assert_eq!(
        svc.describe(&id)["destinationConnectionState"]["status"],
        "CONNECTED"
    );
    // Its own data is not read: its writes block.
    let blocked_after = send_until_blocked(&mut d, 64 << 20);
    assert!(blocked_after > 0);
    // A reconnect with the same client token is served normally.
    let mut d2 = join(&svc, "destination", &dst, Some(&ct));
    recv(&mut d2, &mut FrameDecoder::default(), 1);
    // The replaced connection ends without a close frame.
    d.get_ref()
        .get_ref()
        .set_read_timeout(Some(WATCHDOG))
        .expect("timeout");
    loop {
        match d.read() {
            Ok(WsMessage::Close(f)) => panic!("a silenced connection got a close frame {f:?}"),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    send(
        &mut s,
        frames(&[
            message(MessageType::STREAM_START, 2, "SSH1", 1, b""),
            message(MessageType::DATA, 2, "SSH1", 1, b"after"),
        ]),
    );
    match recv(&mut d2, &mut FrameDecoder::default(), 2) {
        Event::Frames(m) => assert_eq!(&m[1].payload[..], b"after"),
        e => panic!("{e:?}"),
    }
}

#[test]
fn stop_reading_keeps_writing_data_and_pings() {
    let _w = common::watchdog("stop_reading", std::time::Duration::from_secs(60));
    let svc = Svc::start(&[]);
    let (id, src, dst) = svc.open(&["SSH1"], 10);
    let ct = "d".repeat(32);
    let mut d = join(&svc, "destination", &dst, Some(&ct));
    let mut s = join(&svc, "source", &src, None);
    recv(&mut d, &mut FrameDecoder::default(), 1);
    recv(&mut s, &mut FrameDecoder::default(), 1);
    svc.ok(
        "LocalTest.StopReading",
        json!({"tunnelId": id, "side": "destination", "pingIntervalMs": 30}),
    );
    send(
        &mut s,
        frames(&[
            message(MessageType::STREAM_START, 1, "SSH1", 1, b""),
            message(MessageType::DATA, 1, "SSH1", 1, b"still written"),
        ]),
    );
    let (mut pings, mut got) = (0, Vec::new());
    let mut dec = FrameDecoder::default();
    let start = std::time::Instant::now();
    while pings < 5 || got.len() < 2 {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(5),
            "{pings} pings, {} messages",
            got.len()
        );
        match d.read().expect("read") {
            WsMessage::Ping(_) => pings += 1,
            WsMessage::Binary(b) => dec
                .decode::<localproxy::frame::FrameError, _>(&b, |m| {
                    if let localproxy::frame::Decoded::Message(m) = m {
                        got.push(into_owned(m));
                    }
                    Ok(())
                })
                .expect("frames"),
            m => panic!("{m:?}"),
        }
    }
    assert_eq!(&got[1].payload[..], b"still written");
    // Five pings at 30 ms: well under a second, well over 100 ms.
    assert!(start.elapsed() >= std::time::Duration::from_millis(100));
    send_until_blocked(&mut d, 64 << 20);
    // A reconnect is served normally.
    let mut d2 = join(&svc, "destination", &dst, Some(&ct));
    recv(&mut d2, &mut FrameDecoder::default(), 1);
    send(
        &mut s,
        frames(&[
            message(MessageType::STREAM_START, 2, "SSH1", 1, b""),
            message(MessageType::DATA, 2, "SSH1", 1, b"after"),
        ]),
    );
    match recv(&mut d2, &mut FrameDecoder::default(), 2) {
        Event::Frames(m) => assert_eq!(&m[1].payload[..], b"after"),
        e => panic!("{e:?}"),
    }
}

#[test]
fn silence_and_stop_reading_refuse_bad_calls() {
    let svc = Svc::start(&[]);
    let (id, _, _) = svc.open(&["SSH1"], 10);
    for op in ["LocalTest.Silence", "LocalTest.StopReading"] {
        let call = |body: serde_json::Value| {
            let (status, _, v) = svc.call(op, &body.to_string());
            (status, v["__type"].as_str().unwrap_or("").to_string(), v)
        };
        let (status, kind, _) = call(json!({"tunnelId": "nope", "side": "source"}));
        assert_eq!(
            (status, kind.as_str()),
            (400, "ResourceNotFoundException"),
            "{op}"
        );
        let (status, kind, _) = call(json!({"tunnelId": id, "side": "both"}));
        assert_eq!(
            (status, kind.as_str()),
            (400, "ValidationException"),
            "{op}"
        );
        let (status, kind, v) = call(json!({"tunnelId": id, "side": "source"}));
        assert_eq!(
            (status, kind.as_str()),
            (400, "InvalidRequestException"),
            "{op}"
        );
        assert!(
            v["message"]
                .as_str()
                .expect("message")
                .contains("no source connected"),
            "{v}"
        );
    }
    let (status, _, v) = svc.call(
        "LocalTest.StopReading",
        &json!({"tunnelId": id, "side": "source", "pingIntervalMs": 0}).to_string(),
    );
    assert_eq!(
        (status, v["__type"].as_str()),
        (400, Some("ValidationException"))
    );
}
