//! The control plane: the AWS IoT Secure Tunneling API (IoTSecuredTunneling,
//! AWS JSON 1.1) over plain HTTP, so the AWS CLI and SDKs work with
//! `--endpoint-url http://127.0.0.1:PORT`. Request signatures are NOT checked.
//!
//! Operations (`POST /`, header `X-Amz-Target: IoTSecuredTunneling.<Op>`),
//! the eight of the service model: OpenTunnel, CloseTunnel, DescribeTunnel,
//! ListTunnels, RotateTunnelAccessToken, TagResource, UntagResource,
//! ListTagsForResource. Requests are checked against the model ([`model`]).
//! Errors are HTTP 400 (500 for the service's own failures) with
//! `{"__type": "...Exception", "message": "..."}` and `x-amzn-ErrorType`.
//! `X-Amz-Target: LocalTest.<Op>` calls are the fault operations of
//! [`local_test`], not part of AWS.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::gate::Ticket;
use crate::http::{read_head, write_response, HeadError, RequestHead};
use crate::local_test;
use crate::model::{self, ApiError, Shape};
use crate::side::Side;
use crate::tunnels::{OpenParams, Registry};

/// Largest request head and body the API reads.
const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 1 << 20;
/// Longest wait for one read or write (the gate's request deadline usually
/// ends a slow request first).
const IDLE: Duration = Duration::from_secs(60);
/// JSON 1.1 content type.
pub const CONTENT_TYPE: &str = "application/x-amz-json-1.1";
/// Default and largest tunnel lifetime, in minutes.
pub const MAX_LIFETIME_MINUTES: u64 = 720;
/// Services of one tunnel at most: the protocol multiplexes up to three.
pub const MAX_SERVICES: usize = 3;

/// Answers a connection the API's gate refused: 503 ThrottlingException
/// (which AWS clients retry), written without blocking, then closed.
pub fn refuse_busy(tcp: &mut TcpStream) {
    let _ = tcp.set_nonblocking(true);
    let _ = respond_error(
        tcp,
        503,
        "ThrottlingException",
        "too many connections to this service: try again",
        true,
    );
}

/// Serves one API connection (keep-alive) until it closes. `ticket` is its
/// place in the API's gate, which enforces each request's overall deadline
/// (idle time before it included) and may evict an idle connection.
pub fn serve(mut tcp: TcpStream, mut ticket: Ticket, registry: Arc<Registry>) {
    let _ = tcp.set_nodelay(true);
    let _ = tcp.set_read_timeout(Some(IDLE));
    let _ = tcp.set_write_timeout(Some(IDLE));
    let mut carry = Vec::new();
    let mut first = true;
    loop {
        if !first && !ticket.next_request(&tcp) {
            return;
        }
        first = false;
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
        ticket.settled();
        let target = req.header("X-Amz-Target").unwrap_or("").to_string();
        let result = if req.method != "POST" || req.path() != "/" {
            Err(ApiError::unknown_operation(format!(
                "{} {} is not an operation: POST / with X-Amz-Target",
                req.method,
                req.path()
            ))
            .logged_as("the request's method and path are not POST /"))
        } else {
            dispatch(&registry, &target, &body)
        };
        let written = match result {
            Ok(v) => {
                log::debug!("API {}: ok", target_for_log(&target));
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
            Err(e) => {
                // Neither the target nor the message may repeat request
                // input in the log: a token pasted in the wrong place.
                log::info!(
                    "API {}: {}: {}",
                    target_for_log(&target),
                    e.kind,
                    e.for_log()
                );
                respond_error(&mut tcp, e.status, e.kind, &e.message, close)
            }
        };
        if written.is_err() || close {
            return;
        }
    }
}

/// The operations, as `X-Amz-Target` names them.
const OPERATIONS: &[&str] = &[
    "IoTSecuredTunneling.OpenTunnel",
    "IoTSecuredTunneling.CloseTunnel",
    "IoTSecuredTunneling.DescribeTunnel",
    "IoTSecuredTunneling.ListTunnels",
    "IoTSecuredTunneling.RotateTunnelAccessToken",
    "IoTSecuredTunneling.TagResource",
    "IoTSecuredTunneling.UntagResource",
    "IoTSecuredTunneling.ListTagsForResource",
    "LocalTest.Inject",
    "LocalTest.Drop",
    "LocalTest.Silence",
    "LocalTest.StopReading",
];

/// `target` for the log when it names an operation; otherwise only its
/// length (the header's value is the caller's, and may be anything).
fn target_for_log(target: &str) -> String {
    if OPERATIONS.contains(&target) {
        target.to_string()
    } else {
        format!("(unknown X-Amz-Target of {} bytes)", target.len())
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
        serde_json::from_slice(body)
            .map_err(|e| ApiError::serialization(format!("body is not JSON: {e}")))?
    };
    if !input.is_object() {
        return Err(ApiError::serialization("body is not a JSON object"));
    }
    let op = target
        .strip_prefix("IoTSecuredTunneling.")
        .map(|op| (true, op))
        .or_else(|| target.strip_prefix("LocalTest.").map(|op| (false, op)));
    let checked = |shape: &Shape| model::check(&input, shape).map(|()| &input);
    match op {
        Some((true, "OpenTunnel")) => open_tunnel(registry, checked(&model::OPEN_TUNNEL)?),
        Some((true, "CloseTunnel")) => {
            let i = checked(&model::CLOSE_TUNNEL)?;
            registry.close(str_of(i, "tunnelId"), i["delete"].as_bool().unwrap_or(false))?;
            Ok(json!({}))
        }
        Some((true, "DescribeTunnel")) => {
            let i = checked(&model::DESCRIBE_TUNNEL)?;
            Ok(json!({ "tunnel": registry.describe(str_of(i, "tunnelId"))? }))
        }
        Some((true, "ListTunnels")) => list_tunnels(registry, checked(&model::LIST_TUNNELS)?),
        Some((true, "RotateTunnelAccessToken")) => {
            rotate(registry, checked(&model::ROTATE_TUNNEL_ACCESS_TOKEN)?)
        }
        Some((true, "TagResource")) => {
            let i = checked(&model::TAG_RESOURCE)?;
            registry.tag(str_of(i, "resourceArn"), unique_tags(&i["tags"]))?;
            Ok(json!({}))
        }
        Some((true, "UntagResource")) => {
            let i = checked(&model::UNTAG_RESOURCE)?;
            let keys: Vec<String> = strings(&i["tagKeys"]);
            registry.untag(str_of(i, "resourceArn"), &keys)?;
            Ok(json!({}))
        }
        Some((true, "ListTagsForResource")) => {
            let i = checked(&model::LIST_TAGS_FOR_RESOURCE)?;
            Ok(match registry.tags(str_of(i, "resourceArn"))? {
                Some(tags) => json!({ "tags": tags }),
                None => json!({}),
            })
        }
        Some((false, op)) => local_test::dispatch(registry, op, &input),
        _ => Err(ApiError::unknown_operation(format!(
            "unknown operation {target:?}: IoTSecuredTunneling.<Operation> (or LocalTest.<Operation>)"
        ))
        .logged_as("X-Amz-Target names no operation")),
    }
}

/// A string member the model check has already required.
fn str_of<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or_default()
}

/// The strings of a checked list of strings.
fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// A checked TagList with one entry per key (the last one given wins), in
/// `{"key", "value"}` form.
fn unique_tags(v: &Value) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    for t in v.as_array().map(Vec::as_slice).unwrap_or_default() {
        let tag = json!({ "key": t["key"], "value": t["value"] });
        match out.iter_mut().find(|x| x["key"] == tag["key"]) {
            Some(old) => *old = tag,
            None => out.push(tag),
        }
    }
    out
}

/// Checks beyond the model on a checked DestinationConfig: at most
/// [`MAX_SERVICES`] services (the protocol's multiplexing limit), no
/// service named twice. Returns (thingName, services).
fn destination_config(v: &Value) -> Result<(Option<String>, Vec<String>), ApiError> {
    let services = strings(&v["services"]);
    if services.len() > MAX_SERVICES {
        let constraint = format!("have length less than or equal to {MAX_SERVICES}");
        let path = "destinationConfig.services";
        return Err(ApiError::validation(format!(
            "1 validation error detected: {}",
            model::violation(&v["services"], path, &constraint)
        ))
        .logged_as(format!(
            "1 validation error detected: {}",
            model::violation_logged(path, &constraint)
        )));
    }
    for (i, s) in services.iter().enumerate() {
        if services[..i].contains(s) {
            return Err(ApiError::validation(format!(
                "destinationConfig.services names service {s:?} twice"
            ))
            .logged_as(format!(
                "destinationConfig.services names service {} twice",
                i + 1
            )));
        }
    }
    Ok((v["thingName"].as_str().map(str::to_string), services))
}

fn open_tunnel(registry: &Registry, i: &Value) -> Result<Value, ApiError> {
    let mut p = OpenParams {
        lifetime_minutes: MAX_LIFETIME_MINUTES,
        description: i["description"].as_str().map(str::to_string),
        tags: unique_tags(&i["tags"]),
        ..Default::default()
    };
    if !i["destinationConfig"].is_null() {
        (p.thing_name, p.services) = destination_config(&i["destinationConfig"])?;
    }
    if let Some(m) = i["timeoutConfig"]["maxLifetimeTimeoutMinutes"].as_u64() {
        p.lifetime_minutes = m;
    }
    let t = registry.open(p)?;
    Ok(json!({
        "tunnelId": t.tunnel_id,
        "tunnelArn": t.tunnel_arn,
        "sourceAccessToken": t.source_token.expose(),
        "destinationAccessToken": t.destination_token.expose(),
    }))
}

fn list_tunnels(registry: &Registry, i: &Value) -> Result<Value, ApiError> {
    let max = i["maxResults"].as_u64().unwrap_or(100);
    let before = match i["nextToken"].as_str() {
        None => None,
        Some(t) => Some(parse_next_token(t).ok_or_else(|| {
            ApiError::validation(format!("nextToken {t:?} was not returned by ListTunnels"))
                .logged_as("the nextToken given was not returned by ListTunnels")
        })?),
    };
    let max = usize::try_from(max).unwrap_or(100);
    let (page, next) = registry.list(i["thingName"].as_str(), max, before);
    let mut v = json!({ "tunnelSummaries": page });
    if let Some(n) = next {
        v["nextToken"] = json!(format!("{NEXT_TOKEN_PREFIX}{n}"));
    }
    Ok(v)
}

/// Prefix of the nextToken values ListTunnels returns (then a number).
const NEXT_TOKEN_PREFIX: &str = "lt1-";

fn parse_next_token(t: &str) -> Option<u64> {
    t.strip_prefix(NEXT_TOKEN_PREFIX)?.parse().ok()
}

fn rotate(registry: &Registry, i: &Value) -> Result<Value, ApiError> {
    let id = str_of(i, "tunnelId");
    let mode = str_of(i, "clientMode");
    let sides: &[Side] = match mode {
        "SOURCE" => &[Side::Source],
        "DESTINATION" => &[Side::Destination],
        _ => &Side::BOTH,
    };
    let config = match &i["destinationConfig"] {
        Value::Null => None,
        _ if mode == "SOURCE" => {
            return Err(ApiError::validation(
                "destinationConfig cannot be given with clientMode SOURCE: it configures the destination",
            ))
        }
        dc => Some(destination_config(dc)?),
    };
    let r = registry.rotate(id, sides, config)?;
    let mut v = json!({ "tunnelArn": r.tunnel_arn });
    if let Some(t) = r.source_token {
        v["sourceAccessToken"] = json!(t.expose());
    }
    if let Some(t) = r.destination_token {
        v["destinationAccessToken"] = json!(t.expose());
    }
    Ok(v)
}
