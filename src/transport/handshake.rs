//! The WebSocket upgrade: the `GET /tunnel` request (tokens redacted in its
//! trace) and the checks on the service's answer.
//!
//! The request is written here rather than by tungstenite's client handshake
//! because tungstenite logs the whole request, access token included, at trace.

use crate::config::Mode;
use crate::protocol::{
    ACCESS_TOKEN_HEADER, CHANNEL_ID_HEADER, CLIENT_TOKEN_HEADER, MAX_HANDSHAKE_REQUEST,
    MODE_QUERY_PARAM, STATUS_REASON_HEADER, TUNNEL_PATH,
};
use crate::secret::Secret;

use super::http::{host_port, user_agent, ResponseHead};

/// What goes into the upgrade request.
pub(crate) struct UpgradeRequest<'a> {
    pub(crate) host: &'a str,
    pub(crate) port: u16,
    pub(crate) mode: Mode,
    pub(crate) access_token: &'a Secret,
    pub(crate) client_token: Option<&'a Secret>,
    pub(crate) subprotocol: &'a str,
    pub(crate) key: &'a str,
}

fn check_header_value(what: &str, v: &str) -> Result<(), String> {
    if v.is_empty() {
        return Err(format!("the {what} is empty"));
    }
    if v.bytes().any(|b| b.is_ascii_control() || !b.is_ascii()) {
        return Err(format!(
            "the {what} holds characters not allowed in an HTTP header"
        ));
    }
    Ok(())
}

impl UpgradeRequest<'_> {
    /// The request bytes, and the same with token values redacted (for trace).
    pub(crate) fn render(&self) -> Result<(String, String), String> {
        check_header_value("access token", self.access_token.expose())?;
        if let Some(c) = self.client_token {
            check_header_value("client token", c.expose())?;
        }
        check_header_value("subprotocol", self.subprotocol)?;
        let host = if self.port == crate::protocol::DEFAULT_ENDPOINT_PORT {
            host_port(self.host, self.port)
                .trim_end_matches(":443")
                .to_string()
        } else {
            host_port(self.host, self.port)
        };
        let build = |redact: bool| {
            let show = |s: &Secret| {
                if redact {
                    "<redacted>".to_string()
                } else {
                    s.expose().to_string()
                }
            };
            let mut r = format!(
                "GET {TUNNEL_PATH}?{MODE_QUERY_PARAM}={mode} HTTP/1.1\r\n\
                 Host: {host}\r\n\
                 Connection: Upgrade\r\n\
                 Upgrade: websocket\r\n\
                 Sec-WebSocket-Version: 13\r\n\
                 Sec-WebSocket-Key: {key}\r\n\
                 Sec-WebSocket-Protocol: {proto}\r\n\
                 {ACCESS_TOKEN_HEADER}: {token}\r\n",
                mode = self.mode.as_query(),
                key = self.key,
                proto = self.subprotocol,
                token = show(self.access_token),
            );
            if let Some(c) = self.client_token {
                r.push_str(&format!("{CLIENT_TOKEN_HEADER}: {}\r\n", show(c)));
            }
            r.push_str(&format!("User-Agent: {}\r\n\r\n", user_agent()));
            r
        };
        let real = build(false);
        if real.len() >= MAX_HANDSHAKE_REQUEST {
            return Err(format!(
                "the upgrade request is {} bytes, over the service's limit of {MAX_HANDSHAKE_REQUEST} \
                 (tokens too long?)",
                real.len()
            ));
        }
        Ok((real, build(true)))
    }
}

/// What a successful upgrade told us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Upgraded {
    pub(crate) channel_id: Option<String>,
    pub(crate) subprotocol: String,
}

/// How the service answered the upgrade.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Upgraded(Upgraded),
    /// 4xx.
    Refused {
        reason: Option<String>,
    },
    /// 5xx.
    ServerError {
        reason: Option<String>,
    },
    /// Anything else wrong.
    Protocol(String),
}

fn has_token(value: &str, token: &str) -> bool {
    value
        .split(',')
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Checks a response head against the request's `key` and `offered` subprotocols.
pub(crate) fn verify(head: &ResponseHead, key: &str, offered: &str) -> Verdict {
    let reason = head.header(STATUS_REASON_HEADER).map(|r| r.to_string());
    match head.status {
        101 => {}
        400..=499 => return Verdict::Refused { reason },
        500..=599 => return Verdict::ServerError { reason },
        s => {
            return Verdict::Protocol(format!(
                "expected HTTP 101 Switching Protocols, got {s} {}",
                head.status_text
            ))
        }
    }
    if !head
        .header("Upgrade")
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
    {
        return Verdict::Protocol("101 without `Upgrade: websocket`".into());
    }
    if !head
        .header("Connection")
        .is_some_and(|v| has_token(v, "upgrade"))
    {
        return Verdict::Protocol("101 without `Connection: Upgrade`".into());
    }
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    if head.header("Sec-WebSocket-Accept") != Some(accept.as_str()) {
        return Verdict::Protocol("Sec-WebSocket-Accept does not match the request's key".into());
    }
    let chosen = match head.header("Sec-WebSocket-Protocol") {
        None => {
            return Verdict::Protocol(format!(
                "the service chose no subprotocol (offered {offered})"
            ))
        }
        Some(c) => c.trim(),
    };
    if !offered.split(',').any(|o| o.trim() == chosen) {
        return Verdict::Protocol(format!(
            "the service chose subprotocol {:?}, which was not offered (offered {offered})",
            super::http::clip(chosen)
        ));
    }
    Verdict::Upgraded(Upgraded {
        channel_id: head.header(CHANNEL_ID_HEADER).map(|c| c.to_string()),
        subprotocol: chosen.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::http::parse_head;

    fn request<'a>(a: &'a Secret, c: Option<&'a Secret>) -> UpgradeRequest<'a> {
        UpgradeRequest {
            host: "example.com",
            port: 443,
            mode: Mode::Destination,
            access_token: a,
            client_token: c,
            subprotocol: crate::protocol::SUBPROTOCOL_V3,
            key: "dGhlIHNhbXBsZSBub25jZQ==",
        }
    }

    #[test]
    fn request_carries_tokens_and_trace_copy_does_not() {
        let a = Secret::new("ACCESS-SECRET");
        let c = Secret::new("c".repeat(40));
        let (real, redacted) = request(&a, Some(&c)).render().unwrap();
        assert!(real.starts_with(
            "GET /tunnel?local-proxy-mode=destination HTTP/1.1\r\nHost: example.com\r\n"
        ));
        assert!(real.contains("access-token: ACCESS-SECRET\r\n"));
        assert!(real.contains(&format!("client-token: {}\r\n", "c".repeat(40))));
        assert!(real.contains("Sec-WebSocket-Protocol: aws.iot.securetunneling-3.0\r\n"));
        assert!(real.contains("User-Agent: localproxy-rs/"));
        assert!(!redacted.contains("ACCESS-SECRET") && !redacted.contains(&"c".repeat(40)));
    }

    #[test]
    fn bad_tokens_and_oversized_requests_are_refused() {
        let a = Secret::new("x\r\nEvil: 1");
        assert!(request(&a, None).render().is_err());
        let a = Secret::new("a".repeat(5000));
        assert!(request(&a, None).render().unwrap_err().contains("4096"));
    }

    #[test]
    fn verdicts() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let ok = parse_head(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\
              Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
              Sec-WebSocket-Protocol: aws.iot.securetunneling-2.0\r\nchannel-id: abc\r\n\r\n",
        )
        .unwrap();
        let offered = "aws.iot.securetunneling-3.0, aws.iot.securetunneling-2.0";
        assert_eq!(
            verify(&ok, key, offered),
            Verdict::Upgraded(Upgraded {
                channel_id: Some("abc".into()),
                subprotocol: "aws.iot.securetunneling-2.0".into()
            })
        );
        assert!(matches!(
            verify(&ok, key, "aws.iot.securetunneling-3.0"),
            Verdict::Protocol(_)
        ));
        assert!(matches!(
            verify(&ok, "other", offered),
            Verdict::Protocol(_)
        ));
        let refused =
            parse_head(b"HTTP/1.1 403 Forbidden\r\nX-Status-Reason: Tunnel closed\r\n\r\n")
                .unwrap();
        assert_eq!(
            verify(&refused, key, offered),
            Verdict::Refused {
                reason: Some("Tunnel closed".into())
            }
        );
        let err = parse_head(b"HTTP/1.1 503 Busy\r\n\r\n").unwrap();
        assert_eq!(
            verify(&err, key, offered),
            Verdict::ServerError { reason: None }
        );
        let redirect = parse_head(b"HTTP/1.1 302 Found\r\n\r\n").unwrap();
        assert!(matches!(
            verify(&redirect, key, offered),
            Verdict::Protocol(_)
        ));
    }
}
