//! End-to-end tests of `tunnel-service`: the binary as a child process on
//! 127.0.0.1 port 0, the API over HTTP and raw WebSocket clients over TLS.

mod common;

use common::raw::*;
use localproxy::frame::{message, FrameDecoder, MessageType};
use localproxy::protocol::CLOSE_REASON_REPLACED;
use serde_json::json;
use tungstenite::Message as WsMessage;

#[test]
fn api_operations_have_the_aws_shapes() {
    let svc = Svc::start(&[]);
    let (status, headers, v) = svc.call(
        "IoTSecuredTunneling.OpenTunnel",
        &json!({"description": "d", "tags": [{"key": "k", "value": "v"}],
                "destinationConfig": {"thingName": "thing1", "services": ["SSH1", "WEB"]},
                "timeoutConfig": {"maxLifetimeTimeoutMinutes": 30}})
        .to_string(),
    );
    assert_eq!(status, 200);
    assert!(headers
        .iter()
        .any(|(n, v)| n == "content-type" && v == "application/x-amz-json-1.1"));
    let mut keys: Vec<_> = v.as_object().expect("object").keys().cloned().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "destinationAccessToken",
            "sourceAccessToken",
            "tunnelArn",
            "tunnelId"
        ]
    );
    let id = v["tunnelId"].as_str().expect("id").to_string();
    assert!(v["tunnelArn"]
        .as_str()
        .expect("arn")
        .ends_with(&format!(":tunnel/{id}")));
    assert!(v["sourceAccessToken"].as_str().expect("token").len() >= 100);
    assert_ne!(v["sourceAccessToken"], v["destinationAccessToken"]);

    let t = svc.describe(&id);
    for k in [
        "tunnelId",
        "tunnelArn",
        "status",
        "sourceConnectionState",
        "destinationConnectionState",
        "description",
        "destinationConfig",
        "timeoutConfig",
        "tags",
        "createdAt",
        "lastUpdatedAt",
    ] {
        assert!(t.get(k).is_some(), "describe lacks {k}: {t}");
    }
    assert_eq!(t["status"], "OPEN");
    assert_eq!(t["sourceConnectionState"]["status"], "DISCONNECTED");
    assert!(t["sourceConnectionState"]["lastUpdatedAt"].is_number());
    assert!(t["createdAt"].is_number());
    assert_eq!(
        t["destinationConfig"],
        json!({"thingName": "thing1", "services": ["SSH1", "WEB"]})
    );
    assert_eq!(t["timeoutConfig"], json!({"maxLifetimeTimeoutMinutes": 30}));
    assert_eq!(t["tags"], json!([{"key": "k", "value": "v"}]));

    let (id2, _, _) = svc.open(&["X"], 5);
    let l = svc.ok("IoTSecuredTunneling.ListTunnels", json!({}));
    let s = l["tunnelSummaries"].as_array().expect("summaries");
    assert_eq!(s.len(), 2);
    for k in [
        "tunnelId",
        "tunnelArn",
        "status",
        "createdAt",
        "lastUpdatedAt",
    ] {
        assert!(s[0].get(k).is_some(), "summary lacks {k}");
    }
    let page = svc.ok("IoTSecuredTunneling.ListTunnels", json!({"maxResults": 1}));
    assert_eq!(page["tunnelSummaries"].as_array().expect("page").len(), 1);
    let token = page["nextToken"].as_str().expect("nextToken").to_string();
    let page2 = svc.ok(
        "IoTSecuredTunneling.ListTunnels",
        json!({"maxResults": 1, "nextToken": token}),
    );
    // Newest first: the first page holds id2, the second the older id.
    assert_eq!(page["tunnelSummaries"][0]["tunnelId"], json!(id2));
    assert_eq!(page2["tunnelSummaries"][0]["tunnelId"], json!(id));
    assert!(page2.get("nextToken").is_none());
    let by_thing = svc.ok(
        "IoTSecuredTunneling.ListTunnels",
        json!({"thingName": "thing1"}),
    );
    assert_eq!(
        by_thing["tunnelSummaries"].as_array().expect("list").len(),
        1
    );

    let r = svc.ok(
        "IoTSecuredTunneling.RotateTunnelAccessToken",
        json!({"tunnelId": id, "clientMode": "SOURCE"}),
    );
    assert!(r["sourceAccessToken"].is_string() && r.get("destinationAccessToken").is_none());
    assert!(r["tunnelArn"].is_string());
    let r = svc.ok(
        "IoTSecuredTunneling.RotateTunnelAccessToken",
        json!({"tunnelId": id, "clientMode": "ALL"}),
    );
    assert!(r["sourceAccessToken"].is_string() && r["destinationAccessToken"].is_string());

    assert_eq!(
        svc.ok("IoTSecuredTunneling.CloseTunnel", json!({"tunnelId": id})),
        json!({})
    );
    assert_eq!(svc.describe(&id)["status"], "CLOSED");
    svc.ok(
        "IoTSecuredTunneling.CloseTunnel",
        json!({"tunnelId": id, "delete": true}),
    );
    let (status, headers, e) = svc.call(
        "IoTSecuredTunneling.DescribeTunnel",
        &json!({"tunnelId": id}).to_string(),
    );
    assert_eq!(status, 400);
    assert_eq!(e["__type"], "ResourceNotFoundException");
    assert!(e["message"].as_str().expect("message").contains(&id));
    assert!(headers
        .iter()
        .any(|(n, v)| n == "x-amzn-errortype" && v == "ResourceNotFoundException"));

    for (target, body) in [
        (
            "IoTSecuredTunneling.OpenTunnel",
            json!({"destinationConfig": {"services": ["a", "b", "c", "d"]}}),
        ),
        (
            "IoTSecuredTunneling.OpenTunnel",
            json!({"timeoutConfig": {"maxLifetimeTimeoutMinutes": 721}}),
        ),
        (
            "IoTSecuredTunneling.RotateTunnelAccessToken",
            json!({"tunnelId": id2, "clientMode": "BOTH"}),
        ),
        (
            "IoTSecuredTunneling.RotateTunnelAccessToken",
            json!({"tunnelId": id2, "clientMode": "SOURCE", "destinationConfig": {"services": ["X"]}}),
        ),
    ] {
        let (status, _, e) = svc.call(target, &body.to_string());
        assert_eq!(
            (status, e["__type"].as_str()),
            (400, Some("ValidationException")),
            "{body}"
        );
    }
    let (status, _, e) = svc.call("IoTSecuredTunneling.Nope", "{}");
    assert_eq!(
        (status, e["__type"].as_str()),
        (400, Some("UnknownOperationException"))
    );
}

#[test]
fn cli_client_prints_tokens() {
    let svc = Svc::start(&[]);
    let bin = env!("CARGO_BIN_EXE_tunnel-service");
    let out = std::process::Command::new(bin)
        .args([
            "open",
            "--api",
            &svc.api,
            "--services",
            "SSH1,WEB",
            "--format",
            "env",
        ])
        .output()
        .expect("runs");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).expect("utf8");
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .map(str::to_string)
    };
    let id = get("TUNNEL_ID").expect("id");
    assert!(get("SOURCE_TOKEN").expect("src").len() >= 100);
    assert!(get("DESTINATION_TOKEN").is_some());
    assert_eq!(
        svc.describe(&id)["destinationConfig"]["services"],
        json!(["SSH1", "WEB"])
    );
    let list = std::process::Command::new(bin)
        .args(["list", "--api", &svc.api])
        .output()
        .expect("runs");
    assert!(String::from_utf8_lossy(&list.stdout).contains(&format!("{id} OPEN")));
    let close = std::process::Command::new(bin)
        .args(["close", "--api", &svc.api, "--tunnel-id", &id])
        .output()
        .expect("runs");
    assert!(close.status.success());
    assert_eq!(svc.describe(&id)["status"], "CLOSED");
    let bad = std::process::Command::new(bin)
        .args(["close", "--api", &svc.api, "--tunnel-id", "nope"])
        .output()
        .expect("runs");
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("ResourceNotFoundException"));
    let help = std::process::Command::new(bin)
        .arg("--help")
        .output()
        .expect("runs");
    assert!(String::from_utf8_lossy(&help.stdout).contains("SIGNATURES ARE NOT CHECKED"));
}

#[test]
fn handshake_refusal_matrix() {
    let svc = Svc::start(&[]);
    let (id, src, dst) = svc.open(&["SSH1"], 10);
    let ct = "c".repeat(32);
    let src_q = "/tunnel?local-proxy-mode=source";
    let long = "x".repeat(4100);
    let two_cookies = format!("awsiot-tunnel-token={src}; awsiot-tunnel-token={src}");
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            "/other?local-proxy-mode=source",
            vec![("access-token", &src), ("sec-websocket-protocol", V3)],
            404,
            "path",
        ),
        (
            "/tunnel",
            vec![("access-token", &src), ("sec-websocket-protocol", V3)],
            400,
            "missing local-proxy-mode",
        ),
        (
            "/tunnel?local-proxy-mode=both",
            vec![("access-token", &src), ("sec-websocket-protocol", V3)],
            400,
            "invalid local-proxy-mode",
        ),
        (
            src_q,
            vec![("sec-websocket-protocol", V3)],
            401,
            "missing access token",
        ),
        (
            src_q,
            vec![
                ("access-token", &src),
                ("access-token", &src),
                ("sec-websocket-protocol", V3),
            ],
            400,
            "exactly one",
        ),
        (
            src_q,
            vec![
                ("access-token", &src),
                ("cookie", &two_cookies),
                ("sec-websocket-protocol", V3),
            ],
            400,
            "exactly one",
        ),
        (
            src_q,
            vec![
                ("access-token", &src),
                ("client-token", "short"),
                ("sec-websocket-protocol", V3),
            ],
            400,
            "invalid client token",
        ),
        (
            src_q,
            vec![
                ("access-token", &src),
                ("sec-websocket-protocol", "aws.iot.securetunneling-9.0"),
            ],
            400,
            "subprotocol",
        ),
        (src_q, vec![("access-token", &src)], 400, "subprotocol"),
        (
            src_q,
            vec![
                ("access-token", &src),
                ("x-pad", &long),
                ("sec-websocket-protocol", V3),
            ],
            400,
            "too large",
        ),
        (
            src_q,
            vec![
                ("access-token", "not-a-token"),
                ("sec-websocket-protocol", V3),
            ],
            403,
            "invalid access token",
        ),
        (
            src_q,
            vec![("access-token", &dst), ("sec-websocket-protocol", V3)],
            403,
            "destination mode, not source",
        ),
    ];
    for (q, h, status, reason) in &cases {
        let (s, r) = connect(&svc, q, h).map(|_| ()).expect_err("refused");
        assert_eq!(s, *status, "{q} {reason}: got {s} {r}");
        assert!(r.contains(reason), "{q}: reason {r:?} lacks {reason:?}");
    }
    // The cookie works as the token; subprotocol and channel-id come back.
    let cookie = format!("awsiot-tunnel-token={src}");
    let (_ws, proto, channel) = connect(
        &svc,
        src_q,
        &[
            ("cookie", &cookie),
            (
                "sec-websocket-protocol",
                "aws.iot.securetunneling-2.0, aws.iot.securetunneling-1.0",
            ),
        ],
    )
    .expect("accepted");
    assert_eq!(proto.as_deref(), Some("aws.iot.securetunneling-2.0"));
    assert!(channel.expect("channel-id").len() >= 16);
    // Without a client token, the token is spent.
    let again = connect(
        &svc,
        src_q,
        &[("access-token", &src), ("sec-websocket-protocol", V3)],
    )
    .map(|_| ())
    .expect_err("spent");
    assert_eq!(again.0, 403);
    assert!(again.1.contains("already used"), "{}", again.1);
    // With a client token: reconnects need the same one.
    let dst_q = "/tunnel?local-proxy-mode=destination";
    let _d = join(&svc, "destination", &dst, Some(&ct));
    for (h, reason) in [
        (
            vec![
                ("access-token", dst.as_str()),
                ("sec-websocket-protocol", V3),
            ],
            "client-token header required",
        ),
        (
            vec![
                ("access-token", dst.as_str()),
                ("client-token", &"d".repeat(32)),
                ("sec-websocket-protocol", V3),
            ],
            "client token mismatch",
        ),
    ] {
        let (s, r) = connect(&svc, dst_q, &h).map(|_| ()).expect_err("refused");
        assert_eq!((s, r.contains(reason)), (403, true), "{r}");
    }
    let _d2 = join(&svc, "destination", &dst, Some(&ct));
    // Closed tunnel.
    svc.ok("IoTSecuredTunneling.CloseTunnel", json!({"tunnelId": id}));
    let (s, r) = connect(
        &svc,
        dst_q,
        &[
            ("access-token", &dst),
            ("client-token", &ct),
            ("sec-websocket-protocol", V3),
        ],
    )
    .map(|_| ())
    .expect_err("closed");
    assert_eq!((s, r.as_str()), (403, "tunnel is closed"));
}

#[test]
fn relays_frames_between_source_and_destination() {
    let svc = Svc::start(&[]);
    let (id, src, dst) = svc.open(&["SSH1", "WEB"], 10);
    let dst_ct = "d".repeat(32);
    let mut d = join(&svc, "destination", &dst, Some(&dst_ct));
    let mut s = join(&svc, "source", &src, None);
    let (mut dd, mut sd) = (FrameDecoder::default(), FrameDecoder::default());
    for (ws, dec) in [(&mut d, &mut dd), (&mut s, &mut sd)] {
        match recv(ws, dec, 1) {
            Event::Frames(m) => {
                assert_eq!(m[0].type_pb, MessageType::SERVICE_IDS);
                assert_eq!(m[0].availableServiceIds, vec!["SSH1", "WEB"]);
            }
            e => panic!("expected SERVICE_IDS, got {e:?}"),
        }
    }
    let described = svc.describe(&id);
    assert_eq!(described["sourceConnectionState"]["status"], "CONNECTED");
    assert_eq!(
        described["destinationConnectionState"]["status"],
        "CONNECTED"
    );
    let big = vec![0x5au8; 60_000];
    let sent = vec![
        message(MessageType::STREAM_START, 1, "SSH1", 1, b""),
        message(MessageType::DATA, 1, "SSH1", 1, b"hello"),
        message(MessageType::DATA, 1, "SSH1", 1, &big),
        message(MessageType::CONNECTION_START, 1, "SSH1", 2, b""),
    ];
    // Split across WebSocket messages at odd points.
    let bytes = frames(&sent);
    for part in [&bytes[..3], &bytes[3..20], &bytes[20..]] {
        send(&mut s, part.to_vec());
    }
    match recv(&mut d, &mut dd, 4) {
        Event::Frames(m) => assert_eq!(m, sent),
        e => panic!("{e:?}"),
    }
    let reply = vec![message(MessageType::DATA, 1, "SSH1", 1, b"world")];
    send(&mut d, frames(&reply));
    match recv(&mut s, &mut sd, 1) {
        Event::Frames(m) => assert_eq!(m, reply),
        e => panic!("{e:?}"),
    }
    // Pings are answered.
    s.send(WsMessage::Ping(b"p1".to_vec().into()))
        .expect("ping");
    match s.read().expect("pong") {
        WsMessage::Pong(p) => assert_eq!(&p[..], b"p1"),
        m => panic!("unexpected {m:?}"),
    }
    // The destination goes away: as the real service, ours tells the
    // source nothing...
    d.close(None).expect("close");
    let _ = d.read();
    assert_silent(
        &mut s,
        std::time::Duration::from_millis(300),
        "the source heard of the destination's departure",
    );
    // ...until a new destination connection replaces it: then the source
    // gets a reset of its stream.
    let _d2 = join(&svc, "destination", &dst, Some(&dst_ct));
    match recv(&mut s, &mut sd, 1) {
        Event::Frames(m) => assert_eq!(
            m,
            vec![message(MessageType::STREAM_RESET, 1, "SSH1", 0, b"")]
        ),
        e => panic!("{e:?}"),
    }
}

#[test]
fn rule_violations_close_the_client() {
    let svc = Svc::start(&[]);
    // One client token per side: a token is unique across tunnel sides.
    let (ct_src, ct_dst) = ("a".repeat(40), "b".repeat(40));
    let (_, src, dst) = svc.open(&["SSH1"], 10);
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "destination",
            frames(&[message(MessageType::STREAM_START, 1, "SSH1", 1, b"")]),
            1008,
            "destination must not send STREAM_START",
        ),
        (
            "source",
            frames(&[message(MessageType::DATA, 0, "SSH1", 1, b"x")]),
            1008,
            "stream id 0",
        ),
        (
            "source",
            frames(&[message(MessageType::DATA, 1, "NOPE", 1, b"x")]),
            1008,
            "NOPE",
        ),
        (
            "source",
            frames(&[message(MessageType::SESSION_RESET, 1, "", 0, b"")]),
            1008,
            "SESSION_RESET",
        ),
        (
            "source",
            frames(&[message(MessageType::SERVICE_IDS, 1, "", 0, b"")]),
            1008,
            "SERVICE_IDS",
        ),
        (
            "source",
            frames(&[message(MessageType::DATA, 1, "SSH1", 1, &vec![0u8; 64_513])]),
            1008,
            "64512",
        ),
        (
            "source",
            vec![0, 6, 0x08, 1, 0x10, 1, 0x48, 1],
            1008,
            "unknown field 9",
        ),
        ("source", vec![0, 0], 1008, "unknown type"),
        ("source", vec![0u8; 131_077], 1009, "131076"),
    ];
    for (mode, bytes, code, reason) in cases {
        let (token, ct) = if mode == "source" {
            (&src, &ct_src)
        } else {
            (&dst, &ct_dst)
        };
        let mut ws = join(&svc, mode, token, Some(ct));
        match recv(&mut ws, &mut FrameDecoder::default(), 1) {
            Event::Frames(_) => {}
            e => panic!("{e:?}"),
        }
        // The service may close before it read all of an oversized frame.
        let _ = ws.send(WsMessage::Binary(bytes.into()));
        let (c, r) = expect_close(&mut ws);
        assert_eq!(c, code, "{reason}: {r}");
        assert!(r.contains(reason), "{r:?} lacks {reason:?}");
    }
    let mut ws = join(&svc, "source", &src, Some(&ct_src));
    ws.send(WsMessage::Text("hi".into())).expect("sent");
    let (c, r) = expect_close(&mut ws);
    assert_eq!(c, 1003);
    assert!(r.contains("text frame"), "{r}");
}

/// A message marked ignorable is held to the same rules as the others
/// (type non-zero, no extra fields, known fields of their wire type, payload
/// at most 64512 bytes): before, `ignorable` skipped every check and the
/// message went to the peer as it was. A valid one of an unknown type is
/// still relayed.
#[test]
fn ignorable_messages_are_held_to_the_same_rules() {
    let _w = common::watchdog("ignorable", std::time::Duration::from_secs(60));
    let svc = Svc::start(&[]);
    let ct = "i".repeat(40);
    let (_, src, dst) = svc.open(&["SSH1"], 10);
    let raw = |body: &[u8]| {
        let mut f = u16::try_from(body.len())
            .expect("fits")
            .to_be_bytes()
            .to_vec();
        f.extend_from_slice(body);
        f
    };
    let mut big = vec![0x08, 99, 0x10, 5, 0x18, 1, 0x22, 0xe8, 0xfb, 0x03];
    big.extend(std::iter::repeat(b'x').take(65_000));
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "explicit type 0",
            raw(&[0x08, 0, 0x10, 0, 0x18, 1]),
            "type 0",
        ),
        (
            "unknown field",
            raw(&[0x08, 99, 0x10, 5, 0x18, 1, 0xa0, 0x06, 5]),
            "unknown field 100",
        ),
        ("payload over the limit", raw(&big), "64512"),
        (
            "wrong wire type",
            raw(&[0x08, 99, 0x18, 1, 0x20, 7]),
            "field 4 has wire type 0",
        ),
    ];
    for (what, bytes, reason) in cases {
        let mut ws = join(&svc, "source", &src, Some(&ct));
        match recv(&mut ws, &mut FrameDecoder::default(), 1) {
            Event::Frames(_) => {}
            e => panic!("{what}: {e:?}"),
        }
        send(&mut ws, bytes);
        let (c, r) = expect_close(&mut ws);
        assert_eq!(c, 1008, "{what}: {r}");
        assert!(r.contains(reason), "{what}: {r:?} lacks {reason:?}");
    }
    let mut d = join(&svc, "destination", &dst, None);
    let mut s = join(&svc, "source", &src, Some(&ct));
    for ws in [&mut d, &mut s] {
        match recv(ws, &mut FrameDecoder::default(), 1) {
            Event::Frames(_) => {}
            e => panic!("{e:?}"),
        }
    }
    let mut sent = raw(&[0x08, 42, 0x10, 1, 0x18, 1, 0x22, 1, b'a']);
    sent.extend(frames(&[message(
        MessageType::STREAM_START,
        1,
        "SSH1",
        1,
        b"",
    )]));
    send(&mut s, sent.clone());
    let mut got = Vec::new();
    while got.len() < sent.len() {
        match d.read().expect("relayed") {
            WsMessage::Binary(b) => got.extend_from_slice(&b),
            WsMessage::Ping(_) | WsMessage::Pong(_) => {}
            m => panic!("unexpected {m:?}"),
        }
    }
    assert_eq!(got, sent, "relayed unchanged");
}

#[test]
fn a_new_connection_replaces_the_old_and_resets_peer_streams() {
    let svc = Svc::start(&[]);
    let ct = "b".repeat(32);
    let (_, src, dst) = svc.open(&["SSH1"], 10);
    let mut d = join(&svc, "destination", &dst, None);
    let mut dd = FrameDecoder::default();
    recv(&mut d, &mut dd, 1);
    let mut s1 = join(&svc, "source", &src, Some(&ct));
    recv(&mut s1, &mut FrameDecoder::default(), 1);
    send(
        &mut s1,
        frames(&[message(MessageType::STREAM_START, 7, "SSH1", 1, b"")]),
    );
    match recv(&mut d, &mut dd, 1) {
        Event::Frames(m) => assert_eq!(m[0].type_pb, MessageType::STREAM_START),
        e => panic!("{e:?}"),
    }
    let mut s2 = join(&svc, "source", &src, Some(&ct));
    let (c, r) = expect_close(&mut s1);
    assert_eq!((c, r.as_str()), (1008, CLOSE_REASON_REPLACED));
    match recv(&mut d, &mut dd, 1) {
        Event::Frames(m) => assert_eq!(
            m,
            vec![message(MessageType::STREAM_RESET, 7, "SSH1", 0, b"")]
        ),
        e => panic!("{e:?}"),
    }
    recv(&mut s2, &mut FrameDecoder::default(), 1);
    send(
        &mut s2,
        frames(&[message(MessageType::STREAM_START, 8, "SSH1", 1, b"")]),
    );
    match recv(&mut d, &mut dd, 1) {
        Event::Frames(m) => assert_eq!(m[0].streamId, 8),
        e => panic!("{e:?}"),
    }
}

#[test]
fn close_tunnel_and_rotation_close_clients() {
    let svc = Svc::start(&[]);
    let (id, src, dst) = svc.open(&["SSH1"], 10);
    let mut s = join(&svc, "source", &src, None);
    let mut d = join(&svc, "destination", &dst, None);
    let r = svc.ok(
        "IoTSecuredTunneling.RotateTunnelAccessToken",
        json!({"tunnelId": id, "clientMode": "SOURCE"}),
    );
    let (c, reason) = expect_close(&mut s);
    assert_eq!((c, reason.as_str()), (1008, "access token rotated"));
    let (status, _) = connect(
        &svc,
        "/tunnel?local-proxy-mode=source",
        &[("access-token", &src), ("sec-websocket-protocol", V3)],
    )
    .map(|_| ())
    .expect_err("old token");
    assert_eq!(status, 403);
    let mut s = join(
        &svc,
        "source",
        r["sourceAccessToken"].as_str().expect("token"),
        None,
    );
    svc.ok("IoTSecuredTunneling.CloseTunnel", json!({"tunnelId": id}));
    assert_eq!(expect_close(&mut s), (1000, "tunnel closed".to_string()));
    assert_eq!(expect_close(&mut d), (1000, "tunnel closed".to_string()));
}

#[test]
fn lifetime_expiry_closes_both_sides() {
    let svc = Svc::start(&["--lifetime-unit-seconds"]);
    let (id, src, dst) = svc.open(&["SSH1"], 1);
    let mut s = join(&svc, "source", &src, None);
    let mut d = join(&svc, "destination", &dst, None);
    assert_eq!(expect_close(&mut s), (1000, "tunnel expired".to_string()));
    assert_eq!(expect_close(&mut d), (1000, "tunnel expired".to_string()));
    assert_eq!(svc.describe(&id)["status"], "CLOSED");
}

#[test]
fn sigterm_and_sigint_close_connections_with_1001_and_exit_0() {
    let _w = common::watchdog("signals", std::time::Duration::from_secs(60));
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let mut svc = Svc::start(&[]);
        let (_, src, dst) = svc.open(&["SSH1"], 10);
        let mut s = join(&svc, "source", &src, None);
        let mut d = join(&svc, "destination", &dst, None);
        recv(&mut s, &mut FrameDecoder::default(), 1);
        recv(&mut d, &mut FrameDecoder::default(), 1);
        assert!(svc.ca_dir.join("tunnel-service.pem").exists());
        svc.signal(sig);
        for ws in [&mut s, &mut d] {
            assert_eq!(
                expect_close(ws),
                (1001, "service shutting down".to_string()),
                "signal {sig}"
            );
        }
        assert_eq!(
            svc.wait_exit(std::time::Duration::from_secs(10)),
            0,
            "signal {sig}"
        );
        assert!(
            !svc.ca_dir.exists(),
            "the temporary CA directory {} is left behind",
            svc.ca_dir.display()
        );
    }
}

#[test]
fn serve_help_documents_serve() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tunnel-service"))
        .args(["serve", "--help"])
        .output()
        .expect("runs");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("tunnel-service serve:"), "{text}");
    for needle in [
        "--state-file",
        "--cert-dir",
        "--max-open-tunnels",
        "LocalTest.Drop",
        "LocalTest.Silence",
        "LocalTest.StopReading",
        "--drop-after-bytes",
        "--request-timeout",
        "SIGTERM",
        "1001",
    ] {
        assert!(
            text.contains(needle),
            "serve --help lacks {needle}:\n{text}"
        );
    }
    let general = std::process::Command::new(env!("CARGO_BIN_EXE_tunnel-service"))
        .arg("--help")
        .output()
        .expect("runs");
    assert!(String::from_utf8_lossy(&general.stdout).contains("serve --help"));
}

/// Runs `tunnel-service serve ARGS` expecting it to fail at start; returns stderr.
fn serve_fails(args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tunnel-service"))
        .arg("serve")
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1), "{args:?} should fail to start");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn cert_dir_holds_a_checked_leaf_certificate_and_a_private_key() {
    use openssl::x509::store::X509StoreBuilder;
    use openssl::x509::{X509StoreContext, X509};
    use std::os::unix::fs::PermissionsExt;
    let _w = common::watchdog("cert_dir", std::time::Duration::from_secs(60));
    let dir = common::temp_dir("cert-dir").join("certs");
    let dir_s = dir.to_str().expect("utf8").to_string();
    let pem = {
        let svc = Svc::start(&["--cert-dir", &dir_s]);
        assert_eq!(svc.ca_dir, dir);
        // The proxy side trusts it through the directory (as -c DIR does).
        let (_, src, _) = svc.open(&["SSH1"], 5);
        drop(join(&svc, "source", &src, None));
        std::fs::read(dir.join("tunnel-service.pem")).expect("cert")
    };
    let key = dir.join("tunnel-service.key");
    let mode =
        |p: &std::path::Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode(&key), 0o600);
    let cert = X509::from_pem(&pem).expect("PEM");
    let sans: Vec<String> = cert
        .subject_alt_names()
        .expect("SAN")
        .iter()
        .map(|n| {
            n.dnsname().map(str::to_string).unwrap_or_else(|| {
                let ip = n.ipaddress().expect("ip");
                match ip.len() {
                    4 => std::net::IpAddr::from(<[u8; 4]>::try_from(ip).expect("v4")).to_string(),
                    _ => std::net::IpAddr::from(<[u8; 16]>::try_from(ip).expect("v6")).to_string(),
                }
            })
        })
        .collect();
    assert_eq!(sans, ["localhost", "127.0.0.1", "::1"]);
    // Not a CA: a certificate signed with its key does not verify through it.
    let service_key = openssl::pkey::PKey::private_key_from_pem(&std::fs::read(&key).expect("key"))
        .expect("key PEM");
    let other = common::cert::self_signed(&["evil.example"]).expect("cert");
    let mut b = X509::builder().expect("builder");
    b.set_version(2).expect("v3");
    b.set_subject_name(other.cert.subject_name())
        .expect("subject");
    b.set_issuer_name(cert.subject_name()).expect("issuer");
    b.set_pubkey(&other.key).expect("pubkey");
    b.set_not_before(cert.not_before()).expect("nb");
    b.set_not_after(cert.not_after()).expect("na");
    b.sign(&service_key, openssl::hash::MessageDigest::sha256())
        .expect("sign");
    let forged = b.build();
    let mut store = X509StoreBuilder::new().expect("store");
    store.add_cert(cert.clone()).expect("trust");
    let store = store.build();
    let chain = openssl::stack::Stack::new().expect("stack");
    let mut ctx = X509StoreContext::new().expect("ctx");
    let ok = ctx
        .init(&store, &forged, &chain, |c| c.verify_cert())
        .expect("verify runs");
    assert!(
        !ok,
        "a certificate signed by the service's key must not verify"
    );
    let mut ctx = X509StoreContext::new().expect("ctx");
    let ok = ctx
        .init(&store, &cert, &chain, |c| c.verify_cert())
        .expect("verify runs");
    assert!(ok, "the service's own certificate verifies against itself");

    // Reused on restart, unchanged.
    {
        let _svc = Svc::start(&["--cert-dir", &dir_s]);
        assert_eq!(
            std::fs::read(dir.join("tunnel-service.pem")).expect("cert"),
            pem
        );
    }
    // A key others can read is refused, naming it.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let err = serve_fails(&["--cert-dir", &dir_s]);
    assert!(
        err.contains("tunnel-service.key") && err.contains("mode 644"),
        "{err}"
    );
    // A key that is not the certificate's is refused.
    let wrong = common::cert::self_signed(&["localhost"]).expect("cert");
    std::fs::remove_file(&key).expect("rm");
    std::fs::write(&key, wrong.key.private_key_to_pem_pkcs8().expect("pem")).expect("write");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let err = serve_fails(&["--cert-dir", &dir_s]);
    assert!(err.contains("is not the key of"), "{err}");
    let _ = std::fs::remove_dir_all(dir.parent().expect("parent"));
}

#[test]
fn state_file_is_private_and_a_planted_symlink_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let _w = common::watchdog("state_file", std::time::Duration::from_secs(60));
    let dir = common::temp_dir("state-file");
    let state = dir.join("state.json");
    let state_s = state.to_str().expect("utf8").to_string();
    {
        let svc = Svc::start(&["--state-file", &state_s]);
        svc.open(&["SSH1"], 5);
    }
    let mode = std::fs::metadata(&state)
        .expect("meta")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .expect("list")
        .map(|e| e.expect("entry").file_name())
        .filter(|n| n.to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let victim = dir.join("victim");
    std::fs::write(&victim, b"{}").expect("write");
    std::fs::remove_file(&state).expect("rm");
    std::os::unix::fs::symlink(&victim, &state).expect("symlink");
    let err = serve_fails(&["--state-file", &state_s]);
    assert!(err.contains("symbolic link"), "{err}");
    assert_eq!(std::fs::read(&victim).expect("victim"), b"{}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A state file that cannot be written stops the service at start, as the
/// other bad state files do: started anyway, it logged an error on every
/// save and a restart found no tunnels.
#[test]
fn a_state_file_that_cannot_be_written_stops_the_service_at_start() {
    let _w = common::watchdog("state_file_unwritable", std::time::Duration::from_secs(60));
    let dir = common::temp_dir("state-file-unwritable");
    let state = dir.join("missing").join("state.json");
    let state_s = state.to_str().expect("utf8").to_string();
    let err = serve_fails(&["--state-file", &state_s]);
    assert!(err.contains(&state_s), "names the path: {err}");
    assert!(
        err.contains("create the directory") && err.contains("--state-file"),
        "says what to do: {err}"
    );
    assert!(!state.exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A client token is unique across the open tunnels (the protocol guide):
/// bound to one tunnel side, it is refused for the other side and for
/// another tunnel, and free again once its tunnel is closed.
#[test]
fn a_client_token_is_unique_across_open_tunnels() {
    let _w = common::watchdog("client_token_unique", std::time::Duration::from_secs(60));
    let svc = Svc::start(&[]);
    let (a, a_src, a_dst) = svc.open(&["SSH1"], 60);
    let (_b, _b_src, b_dst) = svc.open(&["SSH1"], 60);
    let ct = "c".repeat(32);
    let _a_dst = join(&svc, "destination", &a_dst, Some(&ct));
    for (mode, token) in [("source", &a_src), ("destination", &b_dst)] {
        let (s, r) = connect(
            &svc,
            &format!("/tunnel?local-proxy-mode={mode}"),
            &[
                ("access-token", token),
                ("client-token", &ct),
                ("sec-websocket-protocol", V3),
            ],
        )
        .map(|_| ())
        .expect_err("a client token in use elsewhere");
        assert_eq!(s, 403, "{mode}: {r}");
        assert!(r.contains("client token already in use"), "{mode}: {r}");
    }
    // The same side reconnecting with it is still fine.
    let _again = join(&svc, "destination", &a_dst, Some(&ct));
    svc.ok("IoTSecuredTunneling.CloseTunnel", json!({"tunnelId": a}));
    let _b_dst = join(&svc, "destination", &b_dst, Some(&ct));
}

/// As the protocol guide says of the real service: a message naming a
/// service id that has had no STREAM_START in the tunnel closes its sender;
/// once started (by the source), either side may name it, also after the
/// stream was reset ("an active or previously active stream").
#[test]
fn a_service_id_must_have_had_a_stream_start_before_other_messages_name_it() {
    let _w = common::watchdog("service_id_started", std::time::Duration::from_secs(60));
    let svc = Svc::start(&[]);
    let (_, src, dst) = svc.open(&["SSH1", "WEB"], 10);
    let (ct_src, ct_dst) = ("s".repeat(32), "t".repeat(32));
    let mut d = join(&svc, "destination", &dst, Some(&ct_dst));
    let mut s = join(&svc, "source", &src, Some(&ct_src));
    let (mut dd, mut sd) = (FrameDecoder::default(), FrameDecoder::default());
    for (ws, dec) in [(&mut d, &mut dd), (&mut s, &mut sd)] {
        match recv(ws, dec, 1) {
            Event::Frames(_) => {} // SERVICE_IDS
            e => panic!("{e:?}"),
        }
    }
    // DATA for WEB before any STREAM_START for WEB: the source is closed.
    send(
        &mut s,
        frames(&[message(MessageType::DATA, 7, "WEB", 1, b"early")]),
    );
    let (code, reason) = expect_close(&mut s);
    assert_eq!(code, 1008, "{reason}");
    assert!(reason.contains("no STREAM_START"), "{reason}");
    // Started, then reset: both sides may still name it.
    let mut s = join(&svc, "source", &src, Some(&ct_src));
    match recv(&mut s, &mut sd, 1) {
        Event::Frames(_) => {}
        e => panic!("{e:?}"),
    }
    let started = [
        message(MessageType::STREAM_START, 8, "WEB", 1, b""),
        message(MessageType::STREAM_RESET, 8, "WEB", 0, b""),
        message(MessageType::STREAM_START, 9, "WEB", 1, b""),
        message(MessageType::DATA, 9, "WEB", 1, b"now"),
    ];
    send(&mut s, frames(&started));
    let mut got = Vec::new();
    while got.len() < 4 {
        match recv(&mut d, &mut dd, 1) {
            Event::Frames(m) => got.extend(m),
            e => panic!("{e:?}"),
        }
    }
    assert_eq!(got[3], message(MessageType::DATA, 9, "WEB", 1, b"now"));
    send(
        &mut d,
        frames(&[message(MessageType::DATA, 9, "WEB", 1, b"reply")]),
    );
    match recv(&mut s, &mut sd, 1) {
        Event::Frames(m) => assert_eq!(m, vec![message(MessageType::DATA, 9, "WEB", 1, b"reply")]),
        e => panic!("{e:?}"),
    }
}

/// Sends `request` over TLS to the data plane; returns the response head.
fn raw_handshake(svc: &common::Service, request: &str) -> String {
    use std::io::{Read, Write};
    let tcp = std::net::TcpStream::connect(&svc.data_addr).expect("data plane connects");
    tcp.set_read_timeout(Some(WATCHDOG)).expect("timeout");
    let mut b = openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls_client())
        .expect("connector");
    b.set_ca_file(svc.ca_dir.join("tunnel-service.pem"))
        .expect("CA");
    let mut tls = b.build().connect("localhost", tcp).expect("TLS handshake");
    tls.write_all(request.as_bytes()).expect("request sent");
    let mut resp = Vec::new();
    let _ = tls.read_to_end(&mut resp);
    String::from_utf8_lossy(&resp).into_owned()
}

/// Tokens sent where they do not belong (a header line without a colon, the
/// path, the mode, the subprotocol, API members and the operation name) are
/// refused without being logged, even at trace level: the log names the
/// part of the request instead. Before, the bad header line, the path and
/// the API's validation messages were logged as sent.
#[test]
fn tokens_in_rejected_input_never_reach_the_log() {
    let _w = common::watchdog("tokens_not_logged", std::time::Duration::from_secs(60));
    let svc = common::Service::start(&["-v", "6"]);
    let t = svc.open(&["SSH1"]);
    let tok = t.source_token.clone();
    let head = |target: &str, extra: &str| {
        format!(
            "GET {target} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
        )
    };
    let proto = "Sec-WebSocket-Protocol: aws.iot.securetunneling-3.0\r\n";
    let handshakes = [
        head(
            "/tunnel?local-proxy-mode=source",
            &format!("access-token {tok}\r\n{proto}"),
        ),
        head(
            &format!("/tun{tok}?local-proxy-mode=source"),
            &format!("access-token: {tok}\r\n{proto}"),
        ),
        head(
            &format!("/tunnel?local-proxy-mode={tok}"),
            &format!("access-token: {tok}\r\n{proto}"),
        ),
        head(
            "/tunnel?local-proxy-mode=source",
            &format!("access-token: {tok}\r\nSec-WebSocket-Protocol: {tok}\r\n"),
        ),
        format!("GET /tunnel?{tok} HTTP/1.1 x\r\n\r\n"),
    ];
    let mut responses = Vec::new();
    for h in &handshakes {
        let resp = raw_handshake(&svc, h);
        assert!(resp.starts_with("HTTP/1.1 4"), "{resp}");
        responses.push(resp);
    }
    // What goes back may quote the request (the client sent it).
    assert!(responses[1].contains("no such path"), "{}", responses[1]);
    let api = &svc.api_addr;
    let calls = [
        (
            "IoTSecuredTunneling.DescribeTunnel",
            json!({ "tunnelId": tok }),
        ),
        (
            "IoTSecuredTunneling.RotateTunnelAccessToken",
            json!({ "tunnelId": t.id, "clientMode": tok }),
        ),
        (
            "IoTSecuredTunneling.ListTunnels",
            json!({ "nextToken": tok }),
        ),
        (tok.as_str(), json!({})),
    ];
    for (target, body) in &calls {
        let (status, _, v) = raw_call(api, target, &body.to_string());
        assert_eq!(status, 400, "{target}: {v}");
    }
    // A tunnel id that fits the pattern but names no tunnel.
    let alnum: String = tok
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(100)
        .collect();
    let (status, _, _) = raw_call(
        api,
        "IoTSecuredTunneling.DescribeTunnel",
        &json!({ "tunnelId": alnum }).to_string(),
    );
    assert_eq!(status, 400);
    let log = &svc.proc.stderr;
    log.wait_for_nth(
        "refused: 4",
        handshakes.len(),
        std::time::Duration::from_secs(10),
    );
    log.wait_for_nth(
        "Exception: ",
        calls.len() + 1,
        std::time::Duration::from_secs(10),
    );
    let all = log.all();
    for secret in [&tok, &alnum, &t.destination_token] {
        for l in all.lines() {
            assert!(
                !l.contains(secret.as_str()) && !l.contains(&secret[..16]),
                "token in the log: {l}"
            );
        }
    }
    // The log names what was wrong.
    for needle in [
        "is not a header",
        "no such path",
        "invalid local-proxy-mode",
        "no supported subprotocol",
        "bad request line",
        "at 'clientMode'",
        "names no tunnel",
        "nextToken",
        "unknown X-Amz-Target",
    ] {
        assert!(all.contains(needle), "{needle:?} not in the log:\n{all}");
    }
}
