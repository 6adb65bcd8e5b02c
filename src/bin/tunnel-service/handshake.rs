//! The data-plane handshake: TLS, the WebSocket upgrade request and its
//! checks, then the hand-over to the relay.
//!
//! Every refusal is an HTTP response with a status and an `X-Status-Reason`
//! header (also the body), then the connection is closed. Checks run in
//! this order; the first failing one answers:
//!
//! | # | condition | status |
//! |---|-----------|--------|
//! | 1 | request head of 4096 bytes or more | 400 |
//! | 2 | not an HTTP/1.x request | 400 |
//! | 3 | path is not `/tunnel` | 404 |
//! | 4 | method is not GET | 400 |
//! | 5 | `local-proxy-mode` missing, repeated or not `source`/`destination` | 400 |
//! | 6 | not a WebSocket upgrade (Upgrade, Connection, Sec-WebSocket-Key, version 13) | 400 |
//! | 7 | no access token (header `access-token` nor cookie `awsiot-tunnel-token`) | 401 |
//! | 8 | more than one access token (two headers, two cookies, header and cookie) | 400 |
//! | 9 | more than one `client-token`, or one not matching `^[a-zA-Z0-9-]{32,128}$` | 400 |
//! | 10 | no offered subprotocol among 3.0, 2.0, 1.0 | 400 |
//! | 11 | unknown (or rotated-out, or deleted-tunnel) access token | 403 |
//! | 12 | tunnel closed or expired | 403 |
//! | 13 | token of the other mode | 403 |
//! | 14 | token bound to a client token, request without one or with another | 403 |
//! | 15 | token already used by a handshake without client token | 403 |
//! | 16 | client token already bound to another open tunnel or side | 403 |
//!
//! Success: `101 Switching Protocols` with the chosen `Sec-WebSocket-Protocol`
//! (the most capable offered) and a random `channel-id`.

use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use openssl::ssl::SslAcceptor;
use tungstenite::handshake::derive_accept_key;
use tungstenite::protocol::Role;
use tungstenite::WebSocket;

use localproxy::protocol::{
    is_valid_client_token, ACCESS_TOKEN_COOKIE, ACCESS_TOKEN_HEADER, CHANNEL_ID_HEADER,
    CLIENT_TOKEN_HEADER, MAX_HANDSHAKE_REQUEST, MODE_QUERY_PARAM, STATUS_REASON_HEADER,
    SUBPROTOCOLS, TUNNEL_PATH,
};

use crate::gate::Ticket;
use crate::http::{read_head, write_response, HeadError, RequestHead};
use crate::relay;
use crate::side::Side;
use crate::stream::{ws_config, Buffered, Stream};
use crate::tunnels::{Refusal, Registry};

/// Longest wait for one read or write during the handshake (the gate's
/// overall deadline usually ends it first).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the static checks extracted from an acceptable request.
#[derive(Debug)]
pub struct Checked {
    pub mode: Side,
    pub token: String,
    pub client_token: Option<String>,
    pub subprotocol: &'static str,
    pub key: String,
}

/// Checks 2 to 10 of the table, which need no tunnel state.
pub fn check_request(h: &RequestHead) -> Result<Checked, Refusal> {
    if h.path() != TUNNEL_PATH {
        return Err(Refusal::echoing(
            404,
            format!("no such path {:?}: use {TUNNEL_PATH}", h.path()),
            format!(
                "no such path (the request's path, {} bytes, is not {TUNNEL_PATH})",
                h.path().len()
            ),
        ));
    }
    if h.method != "GET" {
        return Err(Refusal::echoing(
            400,
            format!("method {} is not GET", h.method),
            "the request's method is not GET",
        ));
    }
    let modes: Vec<String> = h
        .query()
        .map_err(|e| {
            Refusal::echoing(
                400,
                e,
                "a query parameter has a `%` not followed by two hex digits, or is not UTF-8",
            )
        })?
        .into_iter()
        .filter(|(k, _)| k == MODE_QUERY_PARAM)
        .map(|(_, v)| v)
        .collect();
    let mode = match modes.as_slice() {
        [] => {
            return Err(Refusal::new(
                400,
                format!("missing {MODE_QUERY_PARAM} query parameter"),
            ))
        }
        [m] => Side::parse(m).ok_or_else(|| {
            Refusal::echoing(
                400,
                format!("invalid {MODE_QUERY_PARAM} {m:?}: expected source or destination"),
                format!("invalid {MODE_QUERY_PARAM}: expected source or destination"),
            )
        })?,
        _ => {
            return Err(Refusal::new(
                400,
                format!("more than one {MODE_QUERY_PARAM}"),
            ))
        }
    };
    if !h.has_token("Upgrade", "websocket") || !h.has_token("Connection", "upgrade") {
        return Err(Refusal::new(400, "not a WebSocket upgrade request"));
    }
    if h.header("Sec-WebSocket-Version") != Some("13") {
        return Err(Refusal::new(400, "Sec-WebSocket-Version must be 13"));
    }
    let key = h
        .header("Sec-WebSocket-Key")
        .filter(|k| !k.is_empty())
        .ok_or_else(|| Refusal::new(400, "missing Sec-WebSocket-Key"))?
        .to_string();
    let mut tokens: Vec<String> = h.all(ACCESS_TOKEN_HEADER).map(str::to_string).collect();
    for cookie in h.all("Cookie") {
        for pair in cookie.split(';') {
            if let Some((k, v)) = pair.trim().split_once('=') {
                if k.trim() == ACCESS_TOKEN_COOKIE {
                    tokens.push(v.trim().to_string());
                }
            }
        }
    }
    let token = match tokens.len() {
        0 => {
            return Err(Refusal::new(
                401,
                format!("missing access token ({ACCESS_TOKEN_HEADER} header or {ACCESS_TOKEN_COOKIE} cookie)"),
            ))
        }
        1 => tokens.remove(0),
        n => return Err(Refusal::new(400, format!("{n} access tokens in the request: exactly one allowed"))),
    };
    if token.is_empty() {
        return Err(Refusal::new(401, "empty access token"));
    }
    let client_tokens: Vec<&str> = h.all(CLIENT_TOKEN_HEADER).collect();
    let client_token = match client_tokens.as_slice() {
        [] => None,
        [c] if is_valid_client_token(c) => Some(c.to_string()),
        [c] => {
            return Err(Refusal::new(
                400,
                format!(
                    "invalid client token of {} characters: expected [a-zA-Z0-9-]{{32,128}}",
                    c.len()
                ),
            ))
        }
        _ => return Err(Refusal::new(400, "more than one client-token header")),
    };
    let offered: Vec<&str> = h
        .all("Sec-WebSocket-Protocol")
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let subprotocol = SUBPROTOCOLS
        .iter()
        .copied()
        .find(|p| offered.contains(p))
        .ok_or_else(|| {
            Refusal::echoing(
                400,
                format!(
                    "no supported subprotocol offered (got {:?}, supported {})",
                    offered.join(","),
                    SUBPROTOCOLS.join(",")
                ),
                format!(
                    "no supported subprotocol offered ({} offered, supported {})",
                    offered.len(),
                    SUBPROTOCOLS.join(",")
                ),
            )
        })?;
    Ok(Checked {
        mode,
        token,
        client_token,
        subprotocol,
        key,
    })
}

fn refuse(stream: &mut Stream, peer: &str, r: &Refusal) {
    // The reason sent back may quote the request; the log never does.
    log::info!(
        "handshake from {peer} refused: {} {}",
        r.status,
        r.for_log()
    );
    let _ = write_response(
        stream,
        r.status,
        &[
            (STATUS_REASON_HEADER, &r.reason),
            ("Content-Type", "text/plain"),
            ("Connection", "close"),
        ],
        r.reason.as_bytes(),
    );
    let _ = stream.tcp().shutdown(std::net::Shutdown::Both);
}

/// Serves one data-plane connection from accept to close. `ticket` is its
/// place in the data plane's gate, which also enforces the handshake's
/// overall deadline; it is settled once the upgrade is answered.
pub fn serve(
    tcp: TcpStream,
    mut ticket: Ticket,
    acceptor: Option<Arc<SslAcceptor>>,
    registry: Arc<Registry>,
) {
    let peer = tcp
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "?".into());
    let _ = tcp.set_nodelay(true);
    let _ = tcp.set_read_timeout(Some(HANDSHAKE_TIMEOUT));
    let _ = tcp.set_write_timeout(Some(HANDSHAKE_TIMEOUT));
    let mut stream = match acceptor {
        Some(a) => match a.accept(Buffered::new(tcp)) {
            Ok(s) => Stream::Tls(Box::new(s)),
            Err(e) => {
                log::debug!("TLS handshake from {peer} failed: {e}");
                return;
            }
        },
        None => Stream::Plain(tcp),
    };
    let mut rest = Vec::new();
    let head = match read_head(&mut stream, &mut rest, MAX_HANDSHAKE_REQUEST) {
        Ok(h) => h,
        Err(e @ HeadError::TooLarge { .. }) => {
            let r = Refusal::new(400, format!("upgrade request too large: {e}"));
            return refuse(&mut stream, &peer, &r);
        }
        Err(e) => {
            log::debug!("handshake from {peer}: {e}");
            return;
        }
    };
    let request = match RequestHead::parse(&head) {
        Ok(r) => r,
        Err(e) => return refuse(&mut stream, &peer, &Refusal::new(400, e.to_string())),
    };
    let checked = match check_request(&request) {
        Ok(c) => c,
        Err(r) => return refuse(&mut stream, &peer, &r),
    };
    let admission = match registry.admit(
        &checked.token,
        checked.mode,
        checked.client_token.as_deref(),
    ) {
        Ok(a) => a,
        Err(r) => return refuse(&mut stream, &peer, &r),
    };
    let channel_id = match localproxy::secret::random_hex(16) {
        Ok(c) => c,
        Err(e) => {
            let r = Refusal::new(500, format!("no source of randomness: {e}"));
            return refuse(&mut stream, &peer, &r);
        }
    };
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\nSec-WebSocket-Protocol: {}\r\n{CHANNEL_ID_HEADER}: {channel_id}\r\n\r\n",
        derive_accept_key(checked.key.as_bytes()),
        checked.subprotocol
    );
    if let Err(e) = stream
        .write_all(response.as_bytes())
        .and_then(|_| stream.flush())
    {
        log::debug!("handshake from {peer}: writing 101: {e}");
        return;
    }
    ticket.settled();
    log::info!(
        "tunnel {}: {} connected from {peer}, subprotocol {}, channel-id {channel_id}{}",
        admission.tunnel_id,
        admission.side,
        checked.subprotocol,
        if checked.client_token.is_some() {
            ", with client token"
        } else {
            ""
        }
    );
    let ws = WebSocket::from_partially_read(stream, rest, Role::Server, Some(ws_config()));
    relay::run(
        ws,
        ticket,
        admission,
        checked.subprotocol,
        channel_id,
        peer,
        registry,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(extra: &str) -> RequestHead {
        let text = format!(
            "GET /tunnel?local-proxy-mode=source HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
        );
        RequestHead::parse(text.as_bytes()).expect("parses")
    }

    #[test]
    fn static_checks() {
        let p =
            "Sec-WebSocket-Protocol: aws.iot.securetunneling-2.0, aws.iot.securetunneling-3.0\r\n";
        let ok = check_request(&req(&format!("access-token: t\r\n{p}"))).expect("ok");
        assert_eq!(ok.subprotocol, localproxy::protocol::SUBPROTOCOL_V3);
        assert_eq!(ok.mode, Side::Source);
        assert_eq!(check_request(&req(p)).expect_err("no token").status, 401);
        let two = format!("access-token: t\r\nCookie: a=b; awsiot-tunnel-token=u\r\n{p}");
        assert_eq!(check_request(&req(&two)).expect_err("two").status, 400);
        let cookie = format!("Cookie: awsiot-tunnel-token=u\r\n{p}");
        assert_eq!(check_request(&req(&cookie)).expect("cookie").token, "u");
        let bad_ct = format!("access-token: t\r\nclient-token: short\r\n{p}");
        assert_eq!(check_request(&req(&bad_ct)).expect_err("ct").status, 400);
        let no_proto = check_request(&req("access-token: t\r\nSec-WebSocket-Protocol: x\r\n"))
            .expect_err("proto");
        assert_eq!(no_proto.status, 400);
        assert!(no_proto.reason.contains("subprotocol"));
    }
}
