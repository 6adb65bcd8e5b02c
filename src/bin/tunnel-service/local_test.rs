//! The `LocalTest.*` operations of the control plane: fault injection for
//! tests, not part of AWS (`X-Amz-Target: LocalTest.<Op>`, JSON body).
//!
//! - `Inject {tunnelId, side, hexBytes}`: appends the bytes to the relayed
//!   byte stream toward that side (unchecked: use it to send broken frames);
//!   or `{tunnelId, side, textFrame}`: sends one WebSocket text message.
//! - `Drop {tunnelId, side}`: drops that side's TCP connection at once,
//!   without a close frame (a network failure).
//! - `Silence {tunnelId, side}`: the service stops reading from and writing
//!   to that side's current connection: no data, no pings, no pongs, no
//!   close frame; the TCP connection stays open. Data for that side is
//!   queued, and its peer stops being read once the queue is full, as for
//!   any client that does not read.
//! - `StopReading {tunnelId, side, pingIntervalMs}`: the service stops
//!   reading that side's current connection (its receive buffer fills, the
//!   client's writes block) but keeps writing to it: the other side's data
//!   and a ping every `pingIntervalMs` (1 to 600000, default 50).
//!
//! Silence and StopReading last for that connection's life: until a new
//! connection of the side replaces it (a reconnect with the same client
//! token), it is dropped, or the tunnel closes; a silenced connection then
//! ends without a close frame. New connections are served normally. Both
//! answer once the relay has stopped reading.
//!
//! `side` is `source` or `destination`. Answers: `200 {}`;
//! ResourceNotFoundException for an unknown tunnel; ValidationException for
//! a bad member; InvalidRequestException when that side has no connection.

use std::time::Duration;

use crossbeam_channel::Receiver;
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
/// Drop and Silence.
const ONE_SIDE: Shape = Shape::Struct {
    members: &[("tunnelId", &model::TUNNEL_ID), ("side", &SIDE)],
    required: &["tunnelId", "side"],
};
const STOP_READING: Shape = Shape::Struct {
    members: &[
        ("tunnelId", &model::TUNNEL_ID),
        ("side", &SIDE),
        (
            "pingIntervalMs",
            &Shape::Int {
                min: 1,
                max: 600_000,
            },
        ),
    ],
    required: &["tunnelId", "side"],
};
/// Default ping interval of StopReading.
pub const DEFAULT_PING_INTERVAL_MS: u64 = 50;
/// How long the API waits for a relay to acknowledge Silence/StopReading.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);

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
                (Some(h), None) => Out::Bytes(from_hex(h)?.into()),
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
            let (id, side) = target(&ONE_SIDE)?;
            registry.send_to(&id, side, Out::Drop)?;
            log::info!("tunnel {id}: dropping the {side} connection on request");
        }
        "Silence" => {
            let (id, side) = target(&ONE_SIDE)?;
            let (ack, acked) = crossbeam_channel::bounded(1);
            registry.send_to(&id, side, Out::Silence(ack))?;
            wait_ack(&acked, &id, side)?;
        }
        "StopReading" => {
            let (id, side) = target(&STOP_READING)?;
            let ms = input["pingIntervalMs"]
                .as_u64()
                .unwrap_or(DEFAULT_PING_INTERVAL_MS);
            let (ack, acked) = crossbeam_channel::bounded(1);
            let out = Out::StopReading {
                ping_interval: Duration::from_millis(ms),
                ack,
            };
            registry.send_to(&id, side, out)?;
            wait_ack(&acked, &id, side)?;
        }
        _ => {
            return Err(ApiError::unknown_operation(format!(
                "unknown operation \"LocalTest.{op}\": Inject, Drop, Silence or StopReading"
            ))
            .logged_as("unknown LocalTest operation: Inject, Drop, Silence or StopReading"))
        }
    }
    Ok(json!({}))
}

/// Waits for the relay of `side` to confirm the change.
fn wait_ack(acked: &Receiver<()>, id: &str, side: Side) -> Result<(), ApiError> {
    acked.recv_timeout(ACK_TIMEOUT).map_err(|_| {
        ApiError::invalid_request(format!(
            "the {side} connection of tunnel {id} ended before it could be changed"
        ))
    })
}

fn from_hex(h: &str) -> Result<Vec<u8>, ApiError> {
    let h: Vec<u8> = h.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if h.len() % 2 != 0 {
        return Err(ApiError::validation("hexBytes has an odd number of digits"));
    }
    h.chunks(2)
        .map(|p| {
            let s = String::from_utf8_lossy(p);
            u8::from_str_radix(&s, 16).map_err(|_| {
                ApiError::validation(format!("hexBytes: {s:?} is not hex"))
                    .logged_as("hexBytes holds a pair that is not hex")
            })
        })
        .collect()
}
