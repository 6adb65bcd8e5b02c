//! The `LocalTest.*` operations of the control plane: fault injection for
//! tests, not part of AWS (`X-Amz-Target: LocalTest.<Op>`, JSON body).
//!
//! - `Inject {tunnelId, side, hexBytes}`: appends the bytes to the relayed
//!   byte stream toward that side (unchecked: use it to send broken frames);
//!   or `{tunnelId, side, textFrame}`: sends one WebSocket text message.
//! - `Drop {tunnelId, side}`: drops that side's TCP connection at once,
//!   without a close frame (a network failure).
//!
//! `side` is `source` or `destination`. Answers: `200 {}`;
//! ResourceNotFoundException for an unknown tunnel; ValidationException for
//! a bad member; InvalidRequestException when that side has no connection.

use serde_json::{json, Value};

use crate::model::{self, ApiError, Shape};
use crate::side::Side;
use crate::tunnels::{Out, Registry};

const SIDE: Shape = Shape::Enum(&["source", "destination"]);
const ANY_STRING: Shape = Shape::Str {
    min: 0,
    max: None,
    pattern: None,
};
const INJECT: Shape = Shape::Struct {
    members: &[
        ("tunnelId", &model::TUNNEL_ID),
        ("side", &SIDE),
        ("hexBytes", &ANY_STRING),
        ("textFrame", &ANY_STRING),
    ],
    required: &["tunnelId", "side"],
};
const DROP: Shape = Shape::Struct {
    members: &[("tunnelId", &model::TUNNEL_ID), ("side", &SIDE)],
    required: &["tunnelId", "side"],
};

/// Runs `LocalTest.<op>` on a JSON object.
pub fn dispatch(registry: &Registry, op: &str, input: &Value) -> Result<Value, ApiError> {
    let target = |shape: &Shape| -> Result<(String, Side), ApiError> {
        model::check(input, shape)?;
        let id = input["tunnelId"].as_str().unwrap_or_default().to_string();
        // The enum check above admits only the two names.
        let side = Side::parse(input["side"].as_str().unwrap_or_default())
            .ok_or_else(|| ApiError::validation("side must be source or destination"))?;
        Ok((id, side))
    };
    match op {
        "Inject" => {
            let (id, side) = target(&INJECT)?;
            let out = match (input["hexBytes"].as_str(), input["textFrame"].as_str()) {
                (Some(h), None) => Out::Bytes(from_hex(h)?),
                (None, Some(t)) => Out::Text(t.to_string()),
                _ => {
                    return Err(ApiError::validation(
                        "give exactly one of hexBytes and textFrame",
                    ))
                }
            };
            registry.send_to(&id, side, out)?;
            log::info!("tunnel {id}: injected a message toward the {side}");
        }
        "Drop" => {
            let (id, side) = target(&DROP)?;
            registry.send_to(&id, side, Out::Drop)?;
            log::info!("tunnel {id}: dropping the {side} connection on request");
        }
        _ => {
            return Err(ApiError::unknown_operation(format!(
                "unknown operation \"LocalTest.{op}\": Inject or Drop"
            )))
        }
    }
    Ok(json!({}))
}

fn from_hex(h: &str) -> Result<Vec<u8>, ApiError> {
    let h: Vec<u8> = h.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if h.len() % 2 != 0 {
        return Err(ApiError::validation("hexBytes has an odd number of digits"));
    }
    h.chunks(2)
        .map(|p| {
            let s = String::from_utf8_lossy(p);
            u8::from_str_radix(&s, 16)
                .map_err(|_| ApiError::validation(format!("hexBytes: {s:?} is not hex")))
        })
        .collect()
}
