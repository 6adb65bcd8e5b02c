//! Protocol constants of AWS IoT Secure Tunneling, in one documented place.
//!
//! Every number and name that the service, the reference proxy and this crate
//! must agree on lives here; other modules refer to these instead of repeating
//! literals. Facts come from the public protocol guides (V1, V2, V3).

/// WebSocket subprotocol of the V3 protocol (simultaneous TCP connections per service).
pub const SUBPROTOCOL_V3: &str = "aws.iot.securetunneling-3.0";
/// WebSocket subprotocol of the V2 protocol (several services per tunnel).
pub const SUBPROTOCOL_V2: &str = "aws.iot.securetunneling-2.0";
/// WebSocket subprotocol of the V1 protocol (one unnamed service).
pub const SUBPROTOCOL_V1: &str = "aws.iot.securetunneling-1.0";
/// Subprotocols the service accepts, most capable first.
pub const SUBPROTOCOLS: [&str; 3] = [SUBPROTOCOL_V3, SUBPROTOCOL_V2, SUBPROTOCOL_V1];

/// Path of the WebSocket upgrade request.
pub const TUNNEL_PATH: &str = "/tunnel";
/// Query parameter naming the proxy's mode (`source` or `destination`).
pub const MODE_QUERY_PARAM: &str = "local-proxy-mode";
/// Request header carrying the access token.
pub const ACCESS_TOKEN_HEADER: &str = "access-token";
/// Cookie the service also accepts for the access token.
pub const ACCESS_TOKEN_COOKIE: &str = "awsiot-tunnel-token";
/// Request header carrying the client token.
pub const CLIENT_TOKEN_HEADER: &str = "client-token";
/// Response header carrying the service's id for this connection.
pub const CHANNEL_ID_HEADER: &str = "channel-id";
/// Response header with the reason of a refused handshake.
pub const STATUS_REASON_HEADER: &str = "X-Status-Reason";
/// The whole upgrade request must stay under this many bytes.
pub const MAX_HANDSHAKE_REQUEST: usize = 4096;
/// Client tokens: `^[a-zA-Z0-9-]{32,128}$`.
pub const CLIENT_TOKEN_MIN_LEN: usize = 32;
/// Upper bound of a client token's length.
pub const CLIENT_TOKEN_MAX_LEN: usize = 128;

/// Payload of one WebSocket frame, either direction.
pub const MAX_WEBSOCKET_FRAME: usize = 131_076;
/// Size of the big-endian length prefix in front of every tunnel frame.
pub const FRAME_LENGTH_PREFIX: usize = 2;
/// Largest serialized message a 2-byte prefix can describe.
pub const MAX_MESSAGE_SIZE: usize = u16::MAX as usize;
/// Largest `payload` of one message (setting `max_payload_size`).
pub const MAX_PAYLOAD_SIZE: usize = 64_512;

/// Services a tunnel may carry (the service's limit; SERVICE_IDS with more
/// is a protocol error).
pub const MAX_SERVICES_PER_TUNNEL: usize = 3;
/// Longest service id.
pub const SERVICE_ID_MAX_LEN: usize = 128;

/// Port used when an endpoint names none.
pub const DEFAULT_ENDPOINT_PORT: u16 = 443;
/// Default port of a web proxy given without one.
pub const DEFAULT_WEB_PROXY_PORT: u16 = 3128;

/// WebSocket close code of a normal close: the tunnel was closed or expired.
pub const CLOSE_NORMAL: u16 = 1000;
/// WebSocket close code of an endpoint going away: the local service uses
/// it for the connections it closes when it is stopped (SIGTERM, SIGINT).
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// WebSocket close code for a policy violation: the local service uses it for
/// a broken protocol rule, a replaced connection and a rotated token.
pub const CLOSE_POLICY_VIOLATION: u16 = 1008;
/// WebSocket close code for data of an unaccepted kind (a text frame).
pub const CLOSE_UNSUPPORTED_DATA: u16 = 1003;
/// WebSocket close code for a frame or message over the size limit.
pub const CLOSE_TOO_BIG: u16 = 1009;
/// Close reason the local service sends to a connection replaced by a newer
/// one with the same access token.
pub const CLOSE_REASON_REPLACED: &str = "replaced by a new connection with the same token";

/// Whether `token` is a well-formed client token.
pub fn is_valid_client_token(token: &str) -> bool {
    (CLIENT_TOKEN_MIN_LEN..=CLIENT_TOKEN_MAX_LEN).contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Whether `id` is a well-formed service id: `^[a-zA-Z0-9:_-]{1,128}$`.
pub fn is_valid_service_id(id: &str) -> bool {
    (1..=SERVICE_ID_MAX_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_id_format() {
        assert!(is_valid_service_id("SSH1"));
        assert!(is_valid_service_id("a:b_c-d"));
        assert!(is_valid_service_id(&"x".repeat(128)));
        assert!(!is_valid_service_id(""));
        assert!(!is_valid_service_id(&"x".repeat(129)));
        assert!(!is_valid_service_id("bad id"));
        assert!(!is_valid_service_id("bad#id"));
    }

    #[test]
    fn client_token_format() {
        assert!(is_valid_client_token(&"a".repeat(32)));
        assert!(is_valid_client_token(&"A-9".repeat(40)));
        assert!(!is_valid_client_token(&"a".repeat(31)));
        assert!(!is_valid_client_token(&"a".repeat(129)));
        assert!(!is_valid_client_token(&format!("{}_", "a".repeat(32))));
    }
}
