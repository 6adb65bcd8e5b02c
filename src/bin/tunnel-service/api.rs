//! The control plane: the AWS IoT Secure Tunneling API (IoTSecuredTunneling,
//! AWS JSON 1.1) over plain HTTP, so the AWS CLI and SDKs work with
//! `--endpoint-url http://127.0.0.1:PORT`. Request signatures are NOT checked.
//!
//! Operations (`POST /`, header `X-Amz-Target: IoTSecuredTunneling.<Op>`):
//! OpenTunnel, CloseTunnel, DescribeTunnel, ListTunnels,
//! RotateTunnelAccessToken. Errors are HTTP 400 with
//! `{"__type": "...Exception", "message": "..."}` and `x-amzn-ErrorType`.
//!
//! Local test operations (`X-Amz-Target: LocalTest.<Op>`, not part of AWS):
//! - `LocalTest.Inject {tunnelId, side: "source"|"destination", hexBytes}`:
//!   appends the bytes to the relayed byte stream toward that side (they are
//!   not checked: use it to send broken frames); or `{..., textFrame: "..."}`
//!   sends one WebSocket text message.
//! - `LocalTest.Drop {tunnelId, side}`: drops that side's TCP connection at
//!   once, without a close frame (a network failure).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::http::{read_head, write_response, HeadError, RequestHead};
use crate::side::Side;
use crate::tunnels::{ApiError, OpenParams, Out, Registry};

/// Largest request head and body the API reads.
const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 1 << 20;
/// Idle time before an API connection is closed.
const IDLE: Duration = Duration::from_secs(60);
/// JSON 1.1 content type.
pub const CONTENT_TYPE: &str = "application/x-amz-json-1.1";
/// Default and largest tunnel lifetime, in minutes.
pub const MAX_LIFETIME_MINUTES: u64 = 720;

/// Serves one API connection (keep-alive) until it closes.
pub fn serve(mut tcp: TcpStream, registry: Arc<Registry>) {
    let _ = tcp.set_nodelay(true);
    let _ = tcp.set_read_timeout(Some(IDLE));
    let _ = tcp.set_write_timeout(Some(IDLE));
    let mut carry = Vec::new();
    loop {
        let head = match read_head(&mut tcp, &mut carry, MAX_HEAD) {
            Ok(h) => h,
            Err(HeadError::Closed { .. }) => return,
            Err(e) => {
                log::debug!("API request: {e}");
                let _ = respond_error(
                    &mut tcp,
                    400,
                    "SerializationException",
                    &e.to_string(),
                    true,
                );
                return;
            }
        };
        let req = match RequestHead::parse(&head) {
            Ok(r) => r,
            Err(e) => {
                let _ = respond_error(
                    &mut tcp,
                    400,
                    "SerializationException",
                    &e.to_string(),
                    true,
                );
                return;
            }
        };
        let close = req.has_token("Connection", "close");
        if req.header("Transfer-Encoding").is_some() {
            let _ = respond_error(
                &mut tcp,
                411,
                "SerializationException",
                "chunked bodies are not supported: send Content-Length",
                true,
            );
            return;
        }
        let len = match req.header("Content-Length").map(|v| v.parse::<usize>()) {
            None => 0,
            Some(Ok(n)) if n <= MAX_BODY => n,
            Some(_) => {
                let _ = respond_error(
                    &mut tcp,
                    413,
                    "SerializationException",
                    "bad or too large Content-Length",
                    true,
                );
                return;
            }
        };
        while carry.len() < len {
            let mut buf = vec![0u8; (len - carry.len()).min(64 * 1024)];
            match tcp.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => carry.extend_from_slice(&buf[..n]),
            }
        }
        let rest = carry.split_off(len);
        let body = std::mem::replace(&mut carry, rest);
        let target = req.header("X-Amz-Target").unwrap_or("").to_string();
        let result = if req.method != "POST" || req.path() != "/" {
            Err((
                404,
                ApiError {
                    kind: "UnknownOperationException",
                    message: format!(
                        "{} {} is not an operation: POST / with X-Amz-Target",
                        req.method,
                        req.path()
                    ),
                },
            ))
        } else {
            dispatch(&registry, &target, &body).map_err(|e| (400, e))
        };
        let written = match result {
            Ok(v) => {
                log::debug!("API {target}: ok");
                let body = v.to_string();
                write_response(
                    &mut tcp,
                    200,
                    &[
                        ("Content-Type", CONTENT_TYPE),
                        ("x-amzn-RequestId", &request_id()),
                        ("Connection", if close { "close" } else { "keep-alive" }),
                    ],
                    body.as_bytes(),
                )
            }
            Err((status, e)) => {
                log::info!("API {target}: {}: {}", e.kind, e.message);
                respond_error(&mut tcp, status, e.kind, &e.message, close)
            }
        };
        if written.is_err() || close {
            return;
        }
    }
}

/// A request id for `x-amzn-RequestId` (uniqueness is all it needs).
fn request_id() -> String {
    localproxy::secret::random_hex(16).unwrap_or_else(|_| "0".repeat(32))
}

fn respond_error<W: Write>(
    w: &mut W,
    status: u16,
    kind: &str,
    message: &str,
    close: bool,
) -> std::io::Result<()> {
    let body = json!({ "__type": kind, "message": message }).to_string();
    write_response(
        w,
        status,
        &[
            ("Content-Type", CONTENT_TYPE),
            ("x-amzn-ErrorType", kind),
            ("x-amzn-RequestId", &request_id()),
            ("Connection", if close { "close" } else { "keep-alive" }),
        ],
        body.as_bytes(),
    )
}

/// Runs operation `target` on a JSON body.
pub fn dispatch(registry: &Registry, target: &str, body: &[u8]) -> Result<Value, ApiError> {
    let input: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(body).map_err(|e| ApiError {
            kind: "SerializationException",
            message: format!("body is not JSON: {e}"),
        })?
    };
    let input = input.as_object().ok_or_else(|| ApiError {
        kind: "SerializationException",
        message: "body is not a JSON object".into(),
    })?;
    match target {
        "IoTSecuredTunneling.OpenTunnel" => open_tunnel(registry, input),
        "IoTSecuredTunneling.CloseTunnel" => {
            let id = tunnel_id(input)?;
            let delete = opt_bool(input, "delete")?.unwrap_or(false);
            registry.close(&id, delete)?;
            Ok(json!({}))
        }
        "IoTSecuredTunneling.DescribeTunnel" => {
            let id = tunnel_id(input)?;
            Ok(json!({ "tunnel": registry.describe(&id)? }))
        }
        "IoTSecuredTunneling.ListTunnels" => list_tunnels(registry, input),
        "IoTSecuredTunneling.RotateTunnelAccessToken" => rotate(registry, input),
        "LocalTest.Inject" => {
            let id = tunnel_id(input)?;
            let side = side(input)?;
            let out = match (opt_str(input, "hexBytes")?, opt_str(input, "textFrame")?) {
                (Some(h), None) => Out::Bytes(from_hex(h)?),
                (None, Some(t)) => Out::Text(t.to_string()),
                _ => {
                    return Err(ApiError::invalid(
                        "give exactly one of hexBytes and textFrame",
                    ))
                }
            };
            registry.send_to(&id, side, out)?;
            log::info!("tunnel {id}: injected a message toward the {side}");
            Ok(json!({}))
        }
        "LocalTest.Drop" => {
            let id = tunnel_id(input)?;
            let side = side(input)?;
            registry.send_to(&id, side, Out::Drop)?;
            log::info!("tunnel {id}: dropping the {side} connection on request");
            Ok(json!({}))
        }
        _ => Err(ApiError {
            kind: "UnknownOperationException",
            message: format!("unknown operation {target:?}"),
        }),
    }
}

fn opt_str<'a>(o: &'a Map<String, Value>, k: &str) -> Result<Option<&'a str>, ApiError> {
    match o.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::invalid(format!("{k} must be a string"))),
    }
}

fn opt_bool(o: &Map<String, Value>, k: &str) -> Result<Option<bool>, ApiError> {
    match o.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ApiError::invalid(format!("{k} must be a boolean"))),
    }
}

fn opt_u64(o: &Map<String, Value>, k: &str) -> Result<Option<u64>, ApiError> {
    match o.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| ApiError::invalid(format!("{k} must be a non-negative integer"))),
    }
}

fn tunnel_id(o: &Map<String, Value>) -> Result<String, ApiError> {
    let id = opt_str(o, "tunnelId")?.ok_or_else(|| ApiError::invalid("tunnelId is required"))?;
    if id.is_empty()
        || id.len() > 128
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-+=:".contains(c))
    {
        return Err(ApiError::invalid(format!(
            "tunnelId {id:?} does not match [a-zA-Z0-9_\\-+=:]{{1,128}}"
        )));
    }
    Ok(id.to_string())
}

fn side(o: &Map<String, Value>) -> Result<Side, ApiError> {
    let s = opt_str(o, "side")?
        .ok_or_else(|| ApiError::invalid("side is required (source or destination)"))?;
    Side::parse(s)
        .ok_or_else(|| ApiError::invalid(format!("side {s:?} is not source or destination")))
}

fn from_hex(h: &str) -> Result<Vec<u8>, ApiError> {
    let h: Vec<u8> = h.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if h.len() % 2 != 0 {
        return Err(ApiError::invalid("hexBytes has an odd number of digits"));
    }
    h.chunks(2)
        .map(|p| {
            let s = std::str::from_utf8(p).unwrap_or("zz");
            u8::from_str_radix(s, 16)
                .map_err(|_| ApiError::invalid(format!("hexBytes: {s:?} is not hex")))
        })
        .collect()
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || ":_-".contains(c))
}

/// Parses a DestinationConfig object: (thingName, services).
fn destination_config(v: &Value) -> Result<(Option<String>, Vec<String>), ApiError> {
    let o = v
        .as_object()
        .ok_or_else(|| ApiError::invalid("destinationConfig must be an object"))?;
    let thing = opt_str(o, "thingName")?.map(str::to_string);
    if let Some(t) = &thing {
        if !is_name(t) {
            return Err(ApiError::invalid(format!(
                "thingName {t:?} does not match [a-zA-Z0-9:_-]{{1,128}}"
            )));
        }
    }
    let list = o.get("services").and_then(Value::as_array).ok_or_else(|| {
        ApiError::invalid("destinationConfig.services is required (a list of 1 to 3 service ids)")
    })?;
    if list.is_empty() || list.len() > 3 {
        return Err(ApiError::invalid(format!(
            "destinationConfig.services has {} entries: 1 to 3 allowed",
            list.len()
        )));
    }
    let mut services: Vec<String> = Vec::new();
    for s in list {
        let s = s
            .as_str()
            .ok_or_else(|| ApiError::invalid("service ids must be strings"))?;
        if !is_name(s) {
            return Err(ApiError::invalid(format!(
                "service id {s:?} does not match [a-zA-Z0-9:_-]{{1,128}}"
            )));
        }
        if services.iter().any(|x| x == s) {
            return Err(ApiError::invalid(format!("service id {s:?} appears twice")));
        }
        services.push(s.to_string());
    }
    Ok((thing, services))
}

fn open_tunnel(registry: &Registry, o: &Map<String, Value>) -> Result<Value, ApiError> {
    let mut p = OpenParams {
        lifetime_minutes: MAX_LIFETIME_MINUTES,
        ..Default::default()
    };
    if let Some(d) = opt_str(o, "description")? {
        if d.chars().count() > 128 {
            return Err(ApiError::invalid(
                "description is longer than 128 characters",
            ));
        }
        p.description = Some(d.to_string());
    }
    if let Some(tags) = o.get("tags").filter(|v| !v.is_null()) {
        let tags = tags
            .as_array()
            .ok_or_else(|| ApiError::invalid("tags must be a list"))?;
        if tags.len() > 200 {
            return Err(ApiError::invalid("more than 200 tags"));
        }
        for t in tags {
            let key = t.get("key").and_then(Value::as_str).unwrap_or("");
            let value = t.get("value").and_then(Value::as_str);
            if key.is_empty() || key.len() > 128 || value.map_or(true, |v| v.len() > 256) {
                return Err(ApiError::invalid(
                    "each tag needs a key (1-128 characters) and a value (0-256 characters)",
                ));
            }
        }
        p.tags = tags.clone();
    }
    if let Some(dc) = o.get("destinationConfig").filter(|v| !v.is_null()) {
        let (thing, services) = destination_config(dc)?;
        p.thing_name = thing;
        p.services = services;
    }
    if let Some(tc) = o.get("timeoutConfig").filter(|v| !v.is_null()) {
        let tc = tc
            .as_object()
            .ok_or_else(|| ApiError::invalid("timeoutConfig must be an object"))?;
        if let Some(m) = opt_u64(tc, "maxLifetimeTimeoutMinutes")? {
            if !(1..=MAX_LIFETIME_MINUTES).contains(&m) {
                return Err(ApiError::invalid(format!(
                    "maxLifetimeTimeoutMinutes {m} is outside 1..={MAX_LIFETIME_MINUTES}"
                )));
            }
            p.lifetime_minutes = m;
        }
    }
    let t = registry.open(p)?;
    Ok(json!({
        "tunnelId": t.tunnel_id,
        "tunnelArn": t.tunnel_arn,
        "sourceAccessToken": t.source_token.expose(),
        "destinationAccessToken": t.destination_token.expose(),
    }))
}

fn list_tunnels(registry: &Registry, o: &Map<String, Value>) -> Result<Value, ApiError> {
    let thing = opt_str(o, "thingName")?;
    let max = opt_u64(o, "maxResults")?.unwrap_or(100);
    if !(1..=100).contains(&max) {
        return Err(ApiError::invalid(format!(
            "maxResults {max} is outside 1..=100"
        )));
    }
    let start = match opt_str(o, "nextToken")? {
        None => 0,
        Some(t) => t
            .parse::<usize>()
            .map_err(|_| ApiError::invalid(format!("invalid nextToken {t:?}")))?,
    };
    let (page, next) = registry.list(thing, max as usize, start);
    let mut v = json!({ "tunnelSummaries": page });
    if let Some(n) = next {
        v["nextToken"] = json!(n.to_string());
    }
    Ok(v)
}

fn rotate(registry: &Registry, o: &Map<String, Value>) -> Result<Value, ApiError> {
    let id = tunnel_id(o)?;
    let mode = opt_str(o, "clientMode")?
        .ok_or_else(|| ApiError::invalid("clientMode is required (SOURCE, DESTINATION or ALL)"))?;
    let sides: &[Side] = match mode {
        "SOURCE" => &[Side::Source],
        "DESTINATION" => &[Side::Destination],
        "ALL" => &Side::BOTH,
        m => {
            return Err(ApiError::invalid(format!(
                "clientMode {m:?} is not SOURCE, DESTINATION or ALL"
            )))
        }
    };
    let config = match o.get("destinationConfig").filter(|v| !v.is_null()) {
        None => None,
        Some(_) if mode == "SOURCE" => {
            return Err(ApiError::invalid(
                "destinationConfig cannot be used with clientMode SOURCE",
            ))
        }
        Some(dc) => Some(destination_config(dc)?),
    };
    let r = registry.rotate(&id, sides, config)?;
    let mut v = json!({ "tunnelArn": r.tunnel_arn });
    if let Some(t) = r.source_token {
        v["sourceAccessToken"] = json!(t.expose());
    }
    if let Some(t) = r.destination_token {
        v["destinationAccessToken"] = json!(t.expose());
    }
    Ok(v)
}
