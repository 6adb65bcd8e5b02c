//! Settings JSON: `--export-default-settings` (the reference's nested shape, values
//! as strings) and `--settings-json` (key-by-key overrides of the defaults).

use serde_json::Value;

use super::Settings;
use crate::protocol;

/// Root of every settings key.
const ROOT: &str = "tunneling.proxy";

/// The groups below [`ROOT`] and their leaves, in export order; `""` is the
/// root group itself.
const GROUPS: [(&str, &[&str]); 4] = [
    ("", &["default_bind_address"]),
    (
        "message",
        &["data_length_size", "max_payload_size", "max_size"],
    ),
    (
        "tcp",
        &[
            "connection_retry_count",
            "connection_retry_delay_ms",
            "read_buffer_size",
            "max_active_connections",
            "answer_timeout_ms",
        ],
    ),
    (
        "websocket",
        &[
            "ping_period_ms",
            "retry_delay_ms",
            "connect_retry_count",
            "reconnect_on_data_error",
            "subprotocol",
            "max_frame_size",
            "write_buffer_size",
            "read_buffer_size",
        ],
    ),
];

/// Why a settings file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingsIssue {
    /// The dotted key at fault, when the problem is one key.
    pub key: Option<String>,
    pub reason: String,
}

/// Every settings key, dotted (`tunneling.proxy.tcp.read_buffer_size`), in
/// export order.
pub fn keys() -> Vec<String> {
    let mut out = Vec::new();
    for (group, leaves) in GROUPS {
        for leaf in leaves {
            out.push(dotted(group, leaf));
        }
    }
    out
}

fn dotted(group: &str, leaf: &str) -> String {
    if group.is_empty() {
        format!("{ROOT}.{leaf}")
    } else {
        format!("{ROOT}.{group}.{leaf}")
    }
}

/// The value of `key` (a dotted key from [`keys`]) as the export writes it.
pub fn value_string(s: &Settings, key: &str) -> Option<String> {
    let leaf = key.strip_prefix(ROOT)?.strip_prefix('.')?;
    Some(match leaf {
        "default_bind_address" => s.default_bind_address.clone(),
        "message.data_length_size" => s.data_length_size.to_string(),
        "message.max_payload_size" => s.max_payload_size.to_string(),
        "message.max_size" => s.max_size.to_string(),
        "tcp.connection_retry_count" => s.tcp_connection_retry_count.to_string(),
        "tcp.connection_retry_delay_ms" => s.tcp_connection_retry_delay_ms.to_string(),
        "tcp.read_buffer_size" => s.tcp_read_buffer_size.to_string(),
        "tcp.max_active_connections" => s.tcp_max_active_connections.to_string(),
        "tcp.answer_timeout_ms" => s.tcp_answer_timeout_ms.to_string(),
        "websocket.ping_period_ms" => s.ping_period_ms.to_string(),
        "websocket.retry_delay_ms" => s.retry_delay_ms.to_string(),
        "websocket.connect_retry_count" => s.connect_retry_count.to_string(),
        "websocket.reconnect_on_data_error" => s.reconnect_on_data_error.to_string(),
        "websocket.subprotocol" => s.subprotocol.clone(),
        "websocket.max_frame_size" => s.max_frame_size.to_string(),
        "websocket.write_buffer_size" => s.ws_write_buffer_size.to_string(),
        "websocket.read_buffer_size" => s.ws_read_buffer_size.to_string(),
        _ => return None,
    })
}

/// `s` as the reference's nested JSON (4-space indent, keys in the reference's
/// order, every value a string), ending with a newline.
pub fn export_json(s: &Settings) -> String {
    let q = |text: &str| Value::String(text.to_string()).to_string();
    let mut out = String::from("{\n    \"tunneling\": {\n        \"proxy\": {\n");
    let mut blocks = Vec::new();
    for (group, leaves) in GROUPS {
        let indent = if group.is_empty() { 12 } else { 16 };
        let lines: Vec<String> = leaves
            .iter()
            .map(|leaf| {
                let value = value_string(s, &dotted(group, leaf)).unwrap_or_default();
                format!("{:indent$}{}: {}", "", q(leaf), q(&value))
            })
            .collect();
        let body = lines.join(",\n");
        if group.is_empty() {
            blocks.push(body);
        } else {
            blocks.push(format!("{:12}{}: {{\n{body}\n{:12}}}", "", q(group), ""));
        }
    }
    out.push_str(&blocks.join(",\n"));
    out.push_str("\n        }\n    }\n}\n");
    out
}

/// Applies the settings in `text` (the export shape; any subset of keys;
/// values as JSON strings, numbers or booleans) over `s`. Returns one warning
/// per unknown key. On error `s` may be partly updated.
pub fn apply_json(s: &mut Settings, text: &str) -> Result<Vec<String>, SettingsIssue> {
    let root: Value = serde_json::from_str(text).map_err(|e| SettingsIssue {
        key: None,
        reason: format!("not valid JSON: {e}"),
    })?;
    let mut warnings = Vec::new();
    walk(s, &root, "", &mut warnings)?;
    Ok(warnings)
}

/// Whether `path` is a group on the way to or inside [`ROOT`].
fn is_group(path: &str) -> bool {
    path == "tunneling"
        || path == ROOT
        || GROUPS
            .iter()
            .any(|(g, _)| !g.is_empty() && path == format!("{ROOT}.{g}"))
}

fn walk(
    s: &mut Settings,
    value: &Value,
    path: &str,
    warnings: &mut Vec<String>,
) -> Result<(), SettingsIssue> {
    let Value::Object(map) = value else {
        let what = if path.is_empty() {
            "the document"
        } else {
            path
        };
        return Err(SettingsIssue {
            key: (!path.is_empty()).then(|| path.to_string()),
            reason: format!("expected a JSON object for {what}, found {}", kind(value)),
        });
    };
    for (name, child) in map {
        let full = if path.is_empty() {
            name.clone()
        } else {
            format!("{path}.{name}")
        };
        if value_string(&Settings::default(), &full).is_some() {
            set(s, &full, child).map_err(|reason| SettingsIssue {
                key: Some(full.clone()),
                reason,
            })?;
        } else if is_group(&full) {
            walk(s, child, &full, warnings)?;
        } else {
            warnings.push(format!("unknown settings key '{full}' ignored"));
        }
    }
    Ok(())
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn shown(v: &Value) -> String {
    let text = v.to_string();
    if text.len() > 60 {
        format!(
            "{}...",
            &text[..text.char_indices().nth(57).map_or(text.len(), |(i, _)| i)]
        )
    } else {
        text
    }
}

/// An integer in `min..=max` from a JSON number or a string of digits.
fn int(v: &Value, min: i64, max: i64) -> Result<i64, String> {
    let n = match v {
        Value::Number(n) => n.as_i64(),
        Value::String(t) => t.trim().parse::<i64>().ok(),
        _ => None,
    };
    let expected = if max == i64::MAX {
        format!("an integer >= {min}")
    } else {
        format!("an integer in {min}..={max}")
    };
    match n {
        Some(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!(
            "expected {expected} (JSON number or string), found {}",
            shown(v)
        )),
    }
}

fn uint(v: &Value, min: u64, max: u64) -> Result<u64, String> {
    let n = match v {
        Value::Number(n) => n.as_u64(),
        Value::String(t) => t.trim().parse::<u64>().ok(),
        _ => None,
    };
    let expected = if max == u64::MAX {
        format!("an integer >= {min}")
    } else if min == max {
        format!("{min}")
    } else {
        format!("an integer in {min}..={max}")
    };
    match n {
        Some(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!(
            "expected {expected} (JSON number or string), found {}",
            shown(v)
        )),
    }
}

fn size(v: &Value, min: usize, max: usize) -> Result<usize, String> {
    // usize fits in u64 on every supported target; the result is <= max.
    uint(v, min as u64, max as u64).map(|n| n as usize)
}

fn boolean(v: &Value) -> Result<bool, String> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::String(t) => match t.trim() {
            "true" | "1" => Ok(true),
            "false" | "0" => Ok(false),
            _ => Err(format!(
                "expected a boolean (true/false, as JSON boolean or string), found {}",
                shown(v)
            )),
        },
        _ => Err(format!(
            "expected a boolean (true/false, as JSON boolean or string), found {}",
            shown(v)
        )),
    }
}

fn text(v: &Value) -> Result<String, String> {
    match v {
        Value::String(t) if !t.trim().is_empty() => Ok(t.trim().to_string()),
        _ => Err(format!("expected a non-empty string, found {}", shown(v))),
    }
}

fn set(s: &mut Settings, key: &str, v: &Value) -> Result<(), String> {
    const ANY: u64 = u64::MAX;
    let leaf = key
        .strip_prefix(ROOT)
        .unwrap_or(key)
        .trim_start_matches('.');
    match leaf {
        "default_bind_address" => s.default_bind_address = text(v)?,
        "message.data_length_size" => {
            s.data_length_size = size(
                v,
                protocol::FRAME_LENGTH_PREFIX,
                protocol::FRAME_LENGTH_PREFIX,
            )?
        }
        "message.max_payload_size" => s.max_payload_size = size(v, 1, protocol::MAX_PAYLOAD_SIZE)?,
        "message.max_size" => s.max_size = size(v, 1, protocol::MAX_MESSAGE_SIZE + 1)?,
        "tcp.connection_retry_count" => s.tcp_connection_retry_count = int(v, -1, i64::MAX)?,
        "tcp.connection_retry_delay_ms" => s.tcp_connection_retry_delay_ms = uint(v, 0, ANY)?,
        "tcp.read_buffer_size" => s.tcp_read_buffer_size = size(v, 1, usize::MAX)?,
        "tcp.max_active_connections" => s.tcp_max_active_connections = size(v, 1, usize::MAX)?,
        "tcp.answer_timeout_ms" => s.tcp_answer_timeout_ms = uint(v, 0, ANY)?,
        "websocket.ping_period_ms" => s.ping_period_ms = uint(v, 1, ANY)?,
        "websocket.retry_delay_ms" => s.retry_delay_ms = uint(v, 0, ANY)?,
        "websocket.connect_retry_count" => s.connect_retry_count = int(v, -1, i64::MAX)?,
        "websocket.reconnect_on_data_error" => s.reconnect_on_data_error = boolean(v)?,
        "websocket.subprotocol" => {
            let p = text(v)?;
            if !protocol::SUBPROTOCOLS.contains(&p.as_str()) {
                return Err(format!(
                    "expected one of {}, found {}",
                    protocol::SUBPROTOCOLS.join(", "),
                    shown(v)
                ));
            }
            s.subprotocol = p;
        }
        "websocket.max_frame_size" => s.max_frame_size = size(v, 1, usize::MAX)?,
        "websocket.write_buffer_size" => s.ws_write_buffer_size = size(v, 1, usize::MAX)?,
        "websocket.read_buffer_size" => s.ws_read_buffer_size = size(v, 1, usize::MAX)?,
        _ => return Err("unknown key".to_string()),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_has_exactly_the_protocol_keys_as_strings() {
        let json: Value = serde_json::from_str(&export_json(&Settings::default())).unwrap();
        let proxy = &json["tunneling"]["proxy"];
        assert_eq!(proxy["default_bind_address"], "localhost");
        assert_eq!(proxy["message"]["data_length_size"], "2");
        assert_eq!(proxy["message"]["max_payload_size"], "64512");
        assert_eq!(proxy["message"]["max_size"], "65536");
        assert_eq!(proxy["tcp"]["connection_retry_count"], "5");
        assert_eq!(proxy["tcp"]["connection_retry_delay_ms"], "2500");
        assert_eq!(proxy["tcp"]["read_buffer_size"], "131076");
        let ws = &proxy["websocket"];
        assert_eq!(ws["ping_period_ms"], "20000");
        assert_eq!(ws["retry_delay_ms"], "2500");
        assert_eq!(ws["connect_retry_count"], "-1");
        assert_eq!(ws["reconnect_on_data_error"], "true");
        assert_eq!(ws["subprotocol"], "aws.iot.securetunneling-3.0");
        assert_eq!(ws["max_frame_size"], "131076");
        assert_eq!(ws["write_buffer_size"], "131076");
        assert_eq!(ws["read_buffer_size"], "131076");
        assert_eq!(json.as_object().unwrap().len(), 1);
        assert_eq!(json["tunneling"].as_object().unwrap().len(), 1);
        assert_eq!(proxy.as_object().unwrap().len(), 4);
        assert_eq!(proxy["message"].as_object().unwrap().len(), 3);
        assert_eq!(proxy["tcp"].as_object().unwrap().len(), 5);
        assert_eq!(ws.as_object().unwrap().len(), 8);
        assert_eq!(keys().len(), 17);
    }

    #[test]
    fn export_keeps_the_reference_key_order() {
        let text = export_json(&Settings::default());
        let pos = |k: &str| text.find(&format!("\"{k}\"")).unwrap();
        assert!(pos("default_bind_address") < pos("message"));
        assert!(pos("message") < pos("tcp"));
        assert!(pos("tcp") < pos("websocket"));
        assert!(pos("ping_period_ms") < pos("subprotocol"));
    }

    #[test]
    fn round_trip_of_non_default_values() {
        let custom = Settings {
            default_bind_address: "0.0.0.0".into(),
            max_payload_size: 1000,
            tcp_connection_retry_count: -1,
            connect_retry_count: 3,
            reconnect_on_data_error: false,
            subprotocol: protocol::SUBPROTOCOL_V2.into(),
            ping_period_ms: 1,
            ..Settings::default()
        };
        let mut back = Settings::default();
        let warnings = apply_json(&mut back, &export_json(&custom)).unwrap();
        assert!(warnings.is_empty());
        assert_eq!(back, custom);
    }

    #[test]
    fn overrides_are_key_by_key_and_accept_numbers_and_bools() {
        let mut s = Settings::default();
        let w = apply_json(
            &mut s,
            r#"{"tunneling":{"proxy":{"tcp":{"connection_retry_count":2},
                "websocket":{"reconnect_on_data_error":false,"ping_period_ms":"100"}}}}"#,
        )
        .unwrap();
        assert!(w.is_empty());
        assert_eq!(s.tcp_connection_retry_count, 2);
        assert!(!s.reconnect_on_data_error);
        assert_eq!(s.ping_period_ms, 100);
        assert_eq!(s.tcp_connection_retry_delay_ms, 2_500);
        assert_eq!(s.max_frame_size, 131_076);
    }

    #[test]
    fn unknown_keys_are_warnings_with_the_full_key() {
        let mut s = Settings::default();
        let w = apply_json(
            &mut s,
            r#"{"tunneling":{"proxy":{"tcp":{"nodelay":"1"},"colour":"blue"}},"x":1}"#,
        )
        .unwrap();
        assert_eq!(w.len(), 3);
        assert!(w
            .iter()
            .any(|w| w.contains("'tunneling.proxy.tcp.nodelay'")));
        assert!(w.iter().any(|w| w.contains("'tunneling.proxy.colour'")));
        assert!(w.iter().any(|w| w.contains("'x'")));
        assert_eq!(s, Settings::default());
    }

    #[test]
    fn bad_values_name_the_key_and_the_type() {
        let case = |json: &str| {
            let e = apply_json(&mut Settings::default(), json).unwrap_err();
            (e.key.unwrap_or_default(), e.reason)
        };
        let (k, r) = case(r#"{"tunneling":{"proxy":{"tcp":{"connection_retry_count":"many"}}}}"#);
        assert_eq!(k, "tunneling.proxy.tcp.connection_retry_count");
        assert!(r.contains("integer >= -1") && r.contains("\"many\""), "{r}");
        let (k, r) =
            case(r#"{"tunneling":{"proxy":{"websocket":{"reconnect_on_data_error":"yes"}}}}"#);
        assert!(k.ends_with("reconnect_on_data_error"));
        assert!(r.contains("boolean"));
        let (_, r) = case(r#"{"tunneling":{"proxy":{"message":{"max_payload_size":70000}}}}"#);
        assert!(r.contains("1..=64512"), "{r}");
        let (_, r) = case(r#"{"tunneling":{"proxy":{"message":{"data_length_size":"4"}}}}"#);
        assert!(r.contains("expected 2"), "{r}");
        let (_, r) = case(r#"{"tunneling":{"proxy":{"websocket":{"subprotocol":"x"}}}}"#);
        assert!(r.contains("aws.iot.securetunneling-3.0"));
        let (_, r) = case(r#"{"tunneling":{"proxy":{"websocket":{"ping_period_ms":1.5}}}}"#);
        assert!(r.contains("integer"));
        let (k, r) = case(r#"{"tunneling":{"proxy":"x"}}"#);
        assert_eq!(k, "tunneling.proxy");
        assert!(r.contains("object"));
        let (k, r) = case("[1]");
        assert_eq!(k, "");
        assert!(r.contains("the document"));
        assert!(case("{").1.contains("not valid JSON"));
    }
}
