//! Settings (`tunneling.proxy.*`): one table describes each key once (name,
//! default, meaning, accepted values), and the [`Settings`] struct, its
//! defaults, `--export-default-settings`, `--settings-json` and the settings
//! part of `--help` all come from it.
//!
//! The export is the reference's (`boost::property_tree::write_json`: nested
//! objects, 4-space indent, every value a string, keys in the reference's
//! order) plus the keys the reference reads but does not write
//! (`tcp.write_buffer_size`, `endpoint_format`). A file in the reference's
//! format loads and means the same; values may also be JSON numbers or
//! booleans. Keys absent from a `--settings-json` file keep their defaults.

use std::collections::BTreeMap;

use serde_json::Value;

use super::mapping;
use crate::protocol;

/// Root of every settings key.
pub const ROOT: &str = "tunneling.proxy";

/// The values a key accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepts {
    /// An integer in `min..=max`, as a JSON number or a string of digits.
    Int { min: i64, max: i64 },
    /// `true`/`false` (also `1`/`0`), as a JSON boolean or string.
    Bool,
    /// A non-empty string.
    Text,
    /// One of these strings.
    OneOf(&'static [&'static str]),
    /// A `HOST[:PORT]` pattern holding `%s` once, where the region goes.
    RegionFormat,
    /// An object: region name -> `HOST[:PORT]`.
    RegionMap,
}

impl Accepts {
    /// The accepted values in words (for errors and the README).
    pub fn describe(self) -> String {
        match self {
            Accepts::Int { min, max } if min == max => format!("{min}"),
            Accepts::Int { min, max } if max == i64::MAX => format!("an integer >= {min}"),
            Accepts::Int { min, max } => format!("an integer in {min}..={max}"),
            Accepts::Bool => "a boolean (true/false, as JSON boolean or string)".into(),
            Accepts::Text => "a non-empty string".into(),
            Accepts::OneOf(list) => format!("one of {}", list.join(", ")),
            Accepts::RegionFormat => "HOST[:PORT] holding %s once (the region)".into(),
            Accepts::RegionMap => "an object of region names to HOST[:PORT]".into(),
        }
    }
}

/// One settings key.
pub struct Key {
    /// The key below [`ROOT`], dotted: `tcp.max_active_connections`.
    pub key: &'static str,
    /// What it means (from the field's documentation).
    pub meaning: &'static str,
    pub accepts: Accepts,
    /// False for keys accepted for compatibility with the reference's
    /// settings files that this proxy does not use.
    pub used: bool,
    get: fn(&Settings) -> Value,
    set: fn(&mut Settings, &Value) -> Result<(), String>,
}

impl Key {
    /// The full dotted key: `tunneling.proxy.tcp.max_active_connections`.
    pub fn full(&self) -> String {
        format!("{ROOT}.{}", self.key)
    }

    /// The value in `s` as the export writes it (a string, or an object of
    /// strings for `region_endpoint_overrides`).
    pub fn get(&self, s: &Settings) -> Value {
        (self.get)(s)
    }

    /// The default, as the export writes it.
    pub fn default_value(&self) -> Value {
        (self.get)(&Settings::default())
    }
}

/// A settings value type: how it is written and read back.
trait SettingValue {
    fn to_json(&self) -> Value;
    /// Replaces `self` with `v` (checked against `accepts`); the
    /// region map merges instead.
    fn apply(&mut self, v: &Value, accepts: Accepts) -> Result<(), String>;
}

fn int_of(v: &Value, accepts: Accepts) -> Result<i64, String> {
    let Accepts::Int { min, max } = accepts else {
        return Err(format!("expected {}", accepts.describe()));
    };
    let n = match v {
        Value::Number(n) => n.as_i64(),
        Value::String(t) => t.trim().parse::<i64>().ok(),
        _ => None,
    };
    match n {
        Some(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!(
            "expected {} (JSON number or string), found {}",
            accepts.describe(),
            shown(v)
        )),
    }
}

macro_rules! integer_setting {
    ($($t:ty),*) => {$(
        impl SettingValue for $t {
            fn to_json(&self) -> Value {
                Value::String(self.to_string())
            }
            fn apply(&mut self, v: &Value, accepts: Accepts) -> Result<(), String> {
                let n = int_of(v, accepts)?;
                *self = <$t>::try_from(n)
                    .map_err(|_| format!("{n} does not fit this setting on this machine"))?;
                Ok(())
            }
        }
    )*};
}
integer_setting!(i64, u64, usize);

impl SettingValue for bool {
    fn to_json(&self) -> Value {
        Value::String(self.to_string())
    }
    fn apply(&mut self, v: &Value, accepts: Accepts) -> Result<(), String> {
        *self = match v {
            Value::Bool(b) => *b,
            Value::String(t) if matches!(t.trim(), "true" | "1") => true,
            Value::String(t) if matches!(t.trim(), "false" | "0") => false,
            _ => {
                return Err(format!(
                    "expected {}, found {}",
                    accepts.describe(),
                    shown(v)
                ))
            }
        };
        Ok(())
    }
}

impl SettingValue for String {
    fn to_json(&self) -> Value {
        Value::String(self.clone())
    }
    fn apply(&mut self, v: &Value, accepts: Accepts) -> Result<(), String> {
        let text = match v {
            Value::String(t) if !t.trim().is_empty() => t.trim(),
            _ => return Err(format!("expected a non-empty string, found {}", shown(v))),
        };
        match accepts {
            Accepts::OneOf(list) if !list.contains(&text) => {
                return Err(format!(
                    "expected {}, found {}",
                    accepts.describe(),
                    shown(v)
                ))
            }
            Accepts::RegionFormat => check_region_format(text)?,
            _ => {}
        }
        *self = text.to_string();
        Ok(())
    }
}

impl SettingValue for BTreeMap<String, String> {
    fn to_json(&self) -> Value {
        Value::Object(
            self.iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect(),
        )
    }
    fn apply(&mut self, v: &Value, accepts: Accepts) -> Result<(), String> {
        let Value::Object(map) = v else {
            return Err(format!(
                "expected {}, found {}",
                accepts.describe(),
                shown(v)
            ));
        };
        // Checked as a whole first, so an error leaves the map unchanged.
        let mut add = Vec::with_capacity(map.len());
        for (region, endpoint) in map {
            check_region(region).map_err(|e| format!("region '{}': {e}", shorten(region)))?;
            let Value::String(endpoint) = endpoint else {
                return Err(format!(
                    "region '{region}': expected HOST[:PORT] as a string, found {}",
                    shown(endpoint)
                ));
            };
            let endpoint = endpoint.trim();
            mapping::parse_host_port(endpoint, Some(protocol::DEFAULT_ENDPOINT_PORT))
                .map_err(|e| format!("region '{region}': expected HOST[:PORT]: {e}"))?;
            add.push((region.clone(), endpoint.to_string()));
        }
        self.extend(add);
        Ok(())
    }
}

/// Declares the settings: each entry is one key, once. The doc comment is the
/// key's meaning; `compat` marks keys accepted but not used.
macro_rules! settings_table {
    ($(
        $(#[doc = $doc:literal])+
        $key:literal => $field:ident: $ty:ty = $default:expr, $accepts:expr, $used:literal;
    )+) => {
        /// `tunneling.proxy.*` settings, after `--settings-json` overrides.
        /// Each field is one row of the settings table ([`KEYS`]).
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct Settings {
            $(
                #[doc = concat!("`", $key, "`: ")]
                $(#[doc = $doc])+
                pub $field: $ty,
            )+
        }

        impl Default for Settings {
            fn default() -> Self {
                Settings { $($field: $default,)+ }
            }
        }

        /// Every settings key, in the export's order.
        pub static KEYS: &[Key] = &[
            $(Key {
                key: $key,
                meaning: concat!($($doc),+),
                accepts: $accepts,
                used: $used,
                get: |s| SettingValue::to_json(&s.$field),
                set: |s, v| SettingValue::apply(&mut s.$field, v, $accepts),
            },)+
        ];
    };
}

const ANY: i64 = i64::MAX;

settings_table! {
    /// Address the source listens on when -b/--local-bind-address is not given.
    "default_bind_address" => default_bind_address: String = "localhost".into(),
        Accepts::Text, true;
    /// Size of the length prefix before each tunnel message. Accepted for
    /// compatibility: the prefix is always 2 bytes, so only 2 is valid.
    "message.data_length_size" => data_length_size: usize = protocol::FRAME_LENGTH_PREFIX,
        Accepts::Int { min: 2, max: 2 }, false;
    /// The reference's largest tunnel frame (max_size plus the prefix).
    /// Accepted for compatibility; not used.
    "message.data_frame_max_size" => data_frame_max_size: usize = 65_538,
        Accepts::Int { min: 0, max: ANY }, false;
    /// Largest payload of one DATA message sent to the tunnel; a local read
    /// is cut into messages of at most this size.
    "message.max_payload_size" => max_payload_size: usize = protocol::MAX_PAYLOAD_SIZE,
        Accepts::Int { min: 1, max: protocol::MAX_PAYLOAD_SIZE as i64 }, true;
    /// The reference's largest serialized message. Accepted for
    /// compatibility; not used (a 2-byte prefix bounds a message at 65535).
    "message.max_size" => max_size: usize = 65_536,
        Accepts::Int { min: 1, max: protocol::MAX_MESSAGE_SIZE as i64 + 1 }, false;
    /// Attempts to connect to a local service (destination) before the
    /// stream is reset; -1: no limit.
    "tcp.connection_retry_count" => tcp_connection_retry_count: i64 = 5,
        Accepts::Int { min: -1, max: ANY }, true;
    /// Delay between those attempts, in milliseconds.
    "tcp.connection_retry_delay_ms" => tcp_connection_retry_delay_ms: u64 = 2_500,
        Accepts::Int { min: 0, max: ANY }, true;
    /// Size of one read from a local connection, in bytes.
    "tcp.read_buffer_size" => tcp_read_buffer_size: usize = 131_076,
        Accepts::Int { min: 1, max: ANY }, true;
    /// Simultaneous local connections per tunnel; more are refused (source)
    /// or reset (destination).
    "tcp.max_active_connections" => tcp_max_active_connections: usize = 128,
        Accepts::Int { min: 1, max: ANY }, true;
    /// Source: a local connection whose client sent data and heard nothing
    /// at all back from the destination for this long, in milliseconds, is
    /// reset (its start was most likely lost while the destination was
    /// away); 0: never. Not in the reference.
    "tcp.answer_timeout_ms" => tcp_answer_timeout_ms: u64 = 30_000,
        Accepts::Int { min: 0, max: ANY }, true;
    /// The reference's write buffer per local connection (read, not
    /// exported, by the reference). Accepted for compatibility; not used.
    "tcp.write_buffer_size" => tcp_write_buffer_size: usize = 131_076,
        Accepts::Int { min: 1, max: ANY }, false;
    /// Period of the WebSocket pings sent to the service, in milliseconds.
    "websocket.ping_period_ms" => ping_period_ms: u64 = 20_000,
        Accepts::Int { min: 1, max: ANY }, true;
    /// First delay before reconnecting to the service, in milliseconds
    /// (doubling up to 60 s).
    "websocket.retry_delay_ms" => retry_delay_ms: u64 = 2_500,
        Accepts::Int { min: 0, max: ANY }, true;
    /// Connection attempts to the service before giving up (exit 4); -1: no
    /// limit.
    "websocket.connect_retry_count" => connect_retry_count: i64 = -1,
        Accepts::Int { min: -1, max: ANY }, true;
    /// Reconnect after a protocol error; false: exit 5 instead.
    "websocket.reconnect_on_data_error" => reconnect_on_data_error: bool = true,
        Accepts::Bool, true;
    /// WebSocket subprotocol offered to the service (the protocol version).
    "websocket.subprotocol" => subprotocol: String = protocol::SUBPROTOCOL_V3.into(),
        Accepts::OneOf(&protocol::SUBPROTOCOLS), true;
    /// Largest WebSocket message accepted or sent, in bytes.
    "websocket.max_frame_size" => max_frame_size: usize = protocol::MAX_WEBSOCKET_FRAME,
        Accepts::Int { min: 1, max: ANY }, true;
    /// The reference's WebSocket write buffer. Accepted for compatibility;
    /// not used.
    "websocket.write_buffer_size" => ws_write_buffer_size: usize = 131_076,
        Accepts::Int { min: 1, max: ANY }, false;
    /// The reference's WebSocket read buffer. Accepted for compatibility;
    /// not used.
    "websocket.read_buffer_size" => ws_read_buffer_size: usize = 131_076,
        Accepts::Int { min: 1, max: ANY }, false;
    /// Endpoint (HOST[:PORT]) of a region for -r/--region, by region name;
    /// entries in a settings file are added to these.
    "region_endpoint_overrides" => region_endpoint_overrides: BTreeMap<String, String> =
        default_region_overrides(),
        Accepts::RegionMap, true;
    /// Endpoint of a region without an override: %s is the region.
    "endpoint_format" => endpoint_format: String = DEFAULT_ENDPOINT_FORMAT.into(),
        Accepts::RegionFormat, true;
}

/// The endpoint of a region without an override (the reference's default).
const DEFAULT_ENDPOINT_FORMAT: &str = "data.tunneling.iot.%s.amazonaws.com";

/// The reference's overrides: the China regions live under `amazonaws.com.cn`.
fn default_region_overrides() -> BTreeMap<String, String> {
    ["cn-north-1", "cn-northwest-1"]
        .into_iter()
        .map(|r| {
            (
                r.to_string(),
                format!("data.tunneling.iot.{r}.amazonaws.com.cn"),
            )
        })
        .collect()
}

/// Keys the reference's `--export-default-settings` writes (the others are
/// ours or read-only there).
pub const REFERENCE_EXPORT: [&str; 18] = [
    "default_bind_address",
    "message.data_length_size",
    "message.data_frame_max_size",
    "message.max_payload_size",
    "message.max_size",
    "tcp.connection_retry_count",
    "tcp.connection_retry_delay_ms",
    "tcp.read_buffer_size",
    "tcp.max_active_connections",
    "websocket.ping_period_ms",
    "websocket.retry_delay_ms",
    "websocket.connect_retry_count",
    "websocket.reconnect_on_data_error",
    "websocket.subprotocol",
    "websocket.max_frame_size",
    "websocket.write_buffer_size",
    "websocket.read_buffer_size",
    "region_endpoint_overrides",
];

impl Settings {
    /// The service endpoint for `-r REGION`: its `region_endpoint_overrides`
    /// entry, else `endpoint_format` with the region; `HOST[:PORT]`, port 443
    /// when absent.
    pub fn endpoint_for_region(&self, region: &str) -> Result<(String, u16), String> {
        let endpoint = match self.region_endpoint_overrides.get(region) {
            Some(e) => e.clone(),
            None => self.endpoint_format.replacen("%s", region, 1),
        };
        mapping::parse_host_port(&endpoint, Some(protocol::DEFAULT_ENDPOINT_PORT))
            .map_err(|e| e.to_string())
    }

    /// Checks the combinations of values (each value alone was checked when set).
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.max_payload_size > self.max_frame_size {
            return Err((
                "message.max_payload_size",
                format!(
                    "{} is larger than websocket.max_frame_size ({}): a DATA message must fit \
                     in one WebSocket message",
                    self.max_payload_size, self.max_frame_size
                ),
            ));
        }
        Ok(())
    }
}

/// A region name: lower-case letters, digits and `-`, 1 to 64 characters
/// (the reference's rule).
pub fn check_region(region: &str) -> Result<(), String> {
    if region.is_empty() {
        Err("empty region".into())
    } else if region.len() > 64 {
        Err("longer than 64 characters".into())
    } else if !region
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        Err("a region holds only lower-case letters, digits and '-'".into())
    } else {
        Ok(())
    }
}

fn check_region_format(format: &str) -> Result<(), String> {
    let with_region = format.replacen("%s", "region", 1);
    if format.matches("%s").count() != 1 || with_region.contains('%') {
        return Err(format!(
            "expected {}, found \"{}\"",
            Accepts::RegionFormat.describe(),
            shorten(format)
        ));
    }
    mapping::parse_host_port(&with_region, Some(protocol::DEFAULT_ENDPOINT_PORT))
        .map(|_| ())
        .map_err(|e| format!("expected HOST[:PORT] holding %s: {e}"))
}

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
    KEYS.iter().map(Key::full).collect()
}

/// An ordered JSON-like tree, as `boost::property_tree` keeps it.
enum Node {
    Leaf(String),
    Tree(Vec<(String, Node)>),
}

impl Node {
    /// The child `name` of a tree, created (empty) when absent.
    fn child(children: &mut Vec<(String, Node)>, name: &str) -> usize {
        match children.iter().position(|(n, _)| n == name) {
            Some(i) => i,
            None => {
                children.push((name.to_string(), Node::Tree(Vec::new())));
                children.len() - 1
            }
        }
    }

    fn insert(&mut self, path: &[&str], value: Node) {
        let Node::Tree(children) = self else { return };
        match path {
            [] => {}
            [last] => children.push((last.to_string(), value)),
            [first, rest @ ..] => {
                let i = Node::child(children, first);
                children[i].1.insert(rest, value);
            }
        }
    }

    fn from_json(v: &Value) -> Node {
        match v {
            Value::Object(map) => Node::Tree(
                map.iter()
                    .map(|(k, v)| (k.clone(), Node::from_json(v)))
                    .collect(),
            ),
            Value::String(s) => Node::Leaf(s.clone()),
            other => Node::Leaf(other.to_string()),
        }
    }

    /// Writes the node as `write_json` does with `pretty`: 4 spaces per level.
    fn write(&self, out: &mut String, level: usize) {
        match self {
            Node::Leaf(s) => out.push_str(&quote(s)),
            Node::Tree(children) => {
                out.push_str("{\n");
                for (i, (name, child)) in children.iter().enumerate() {
                    out.push_str(&" ".repeat(4 * (level + 1)));
                    out.push_str(&quote(name));
                    out.push_str(": ");
                    child.write(out, level + 1);
                    if i + 1 < children.len() {
                        out.push(',');
                    }
                    out.push('\n');
                }
                out.push_str(&" ".repeat(4 * level));
                out.push('}');
            }
        }
    }
}

/// A JSON string as `write_json` writes it (it also escapes `/`).
fn quote(s: &str) -> String {
    Value::String(s.to_string()).to_string().replace('/', "\\/")
}

/// The keys of `s` selected by `include`, in the reference's export format.
fn export_keys(s: &Settings, include: impl Fn(&Key) -> bool) -> String {
    let mut root = Node::Tree(Vec::new());
    for key in KEYS.iter().filter(|k| include(k)) {
        let full = key.full();
        let path: Vec<&str> = full.split('.').collect();
        root.insert(&path, Node::from_json(&key.get(s)));
    }
    let mut out = String::new();
    root.write(&mut out, 0);
    out.push('\n');
    out
}

/// `s` as `--export-default-settings` writes it: the reference's format and
/// keys, plus ours.
pub fn export_json(s: &Settings) -> String {
    export_keys(s, |_| true)
}

/// Only the keys the reference writes: what the reference itself exports for
/// `s` (used to check the format).
pub fn export_reference_json(s: &Settings) -> String {
    export_keys(s, |k| REFERENCE_EXPORT.contains(&k.key))
}

/// Applies the settings in `text` (any subset of keys; values as JSON
/// strings, numbers or booleans) over `s`. Returns one warning per unknown
/// key. On error `s` may be partly updated.
pub fn apply_json(s: &mut Settings, text: &str) -> Result<Vec<String>, SettingsIssue> {
    let root: Value = serde_json::from_str(text).map_err(|e| SettingsIssue {
        key: None,
        reason: format!("not valid JSON: {e}"),
    })?;
    let mut warnings = Vec::new();
    walk(s, &root, "", &mut warnings)?;
    s.check().map_err(|(key, reason)| SettingsIssue {
        key: Some(format!("{ROOT}.{key}")),
        reason,
    })?;
    Ok(warnings)
}

/// Whether `path` is a group on the way to or inside [`ROOT`].
fn is_group(path: &str) -> bool {
    path == "tunneling"
        || path == ROOT
        || KEYS.iter().any(|k| {
            k.full()
                .strip_prefix(path)
                .is_some_and(|rest| rest.starts_with('.'))
        })
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
        if let Some(key) = KEYS.iter().find(|k| k.full() == full) {
            (key.set)(s, child).map_err(|reason| SettingsIssue {
                key: Some(full.clone()),
                reason,
            })?;
        } else if is_group(&full) {
            walk(s, child, &full, warnings)?;
        } else {
            warnings.push(format!("unknown settings key '{}' ignored", shorten(&full)));
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

/// At most 60 characters of `text`.
fn shorten(text: &str) -> String {
    match text.char_indices().nth(57) {
        Some((i, _)) if text.len() > 60 => format!("{}...", &text[..i]),
        _ => text.to_string(),
    }
}

fn shown(v: &Value) -> String {
    shorten(&v.to_string())
}

/// The settings part of `--help`: every key with its default.
pub fn help_text() -> String {
    let mut out = String::new();
    for key in KEYS {
        let default = match key.default_value() {
            Value::String(s) => s,
            Value::Object(map) => map
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(", "),
            other => other.to_string(),
        };
        let note = if key.used {
            ""
        } else {
            "  (accepted, not used)"
        };
        out.push_str(&format!("  {} = {default}{note}\n", key.full()));
    }
    out
}

/// The settings table as the README shows it (its check keeps the two equal).
#[cfg(test)]
fn markdown_table() -> String {
    let mut out = String::from(
        "| key (below `tunneling.proxy.`) | default | meaning | accepted values |\n\
         | --- | --- | --- | --- |\n",
    );
    for key in KEYS {
        let default = match key.default_value() {
            Value::String(s) => format!("`{s}`"),
            Value::Object(map) => map
                .iter()
                .map(|(k, v)| format!("`{k}`: `{}`", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join("<br>"),
            other => format!("`{other}`"),
        };
        let meaning = key.meaning.split_whitespace().collect::<Vec<_>>().join(" ");
        out.push_str(&format!(
            "| `{}` | {default} | {meaning} | {} |\n",
            key.key,
            key.accepts.describe()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readme_shows_this_table() {
        let readme = include_str!("../../README.md");
        let table = markdown_table();
        if !readme.contains(&table) {
            panic!("README.md's settings table differs from the settings table; it should be:\n{table}");
        }
    }

    /// What the reference v3.3.1 writes for `--export-default-settings`
    /// (`apply_default_settings` then `write_json(path, tree, locale, true)`).
    const REFERENCE_EXPORT_TEXT: &str = include_str!("../../tests/data/reference-settings.json");

    #[test]
    fn the_export_of_the_reference_keys_is_the_reference_byte_for_byte() {
        assert_eq!(
            export_reference_json(&Settings::default()),
            REFERENCE_EXPORT_TEXT
        );
    }

    #[test]
    fn the_export_is_a_superset_key_for_key() {
        let ours: Value = serde_json::from_str(&export_json(&Settings::default())).unwrap();
        let reference: Value = serde_json::from_str(REFERENCE_EXPORT_TEXT).unwrap();
        fn leaves(v: &Value, path: String, out: &mut Vec<(String, Value)>) {
            match v {
                Value::Object(map) => {
                    for (k, v) in map {
                        leaves(v, format!("{path}.{k}"), out)
                    }
                }
                other => out.push((path, other.clone())),
            }
        }
        let (mut r, mut o) = (Vec::new(), Vec::new());
        leaves(&reference, String::new(), &mut r);
        leaves(&ours, String::new(), &mut o);
        for leaf in &r {
            assert!(o.contains(leaf), "{leaf:?} missing from our export");
        }
        assert_eq!(
            ours["tunneling"]["proxy"]["message"]["data_frame_max_size"],
            "65538"
        );
        assert_eq!(
            ours["tunneling"]["proxy"]["tcp"]["max_active_connections"],
            "128"
        );
        assert_eq!(
            ours["tunneling"]["proxy"]["region_endpoint_overrides"]["cn-northwest-1"],
            "data.tunneling.iot.cn-northwest-1.amazonaws.com.cn"
        );
        assert_eq!(
            ours["tunneling"]["proxy"]["endpoint_format"],
            "data.tunneling.iot.%s.amazonaws.com"
        );
        assert_eq!(
            ours["tunneling"]["proxy"]["tcp"]["answer_timeout_ms"],
            "30000"
        );
        // Ours adds exactly these: tcp.write_buffer_size and endpoint_format
        // (read by the reference, not written) and tcp.answer_timeout_ms.
        assert_eq!(o.len(), r.len() + 3);
    }

    #[test]
    fn the_reference_file_loads_to_the_defaults() {
        let mut s = Settings {
            tcp_max_active_connections: 7,
            region_endpoint_overrides: BTreeMap::new(),
            ..Settings::default()
        };
        let warnings = apply_json(&mut s, REFERENCE_EXPORT_TEXT).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(s, Settings::default());
    }

    #[test]
    fn every_default_passes_its_own_check() {
        for key in KEYS {
            let mut s = Settings::default();
            (key.set)(&mut s, &key.default_value()).unwrap_or_else(|e| panic!("{}: {e}", key.key));
            assert_eq!(s, Settings::default(), "{}", key.key);
            assert!(!key.meaning.trim().is_empty());
        }
        assert_eq!(keys().len(), KEYS.len());
        assert!(keys().iter().all(|k| k.starts_with("tunneling.proxy.")));
    }

    #[test]
    fn round_trip_of_non_default_values() {
        let mut custom = Settings {
            default_bind_address: "0.0.0.0".into(),
            max_payload_size: 1000,
            tcp_connection_retry_count: -1,
            tcp_max_active_connections: 3,
            connect_retry_count: 3,
            reconnect_on_data_error: false,
            subprotocol: protocol::SUBPROTOCOL_V2.into(),
            ping_period_ms: 1,
            endpoint_format: "tunnel.%s.example:8443".into(),
            ..Settings::default()
        };
        custom
            .region_endpoint_overrides
            .insert("lab-1".into(), "127.0.0.1:9000".into());
        let mut back = Settings::default();
        let warnings = apply_json(&mut back, &export_json(&custom)).unwrap();
        assert!(warnings.is_empty());
        assert_eq!(back, custom);
    }

    #[test]
    fn regions_route_through_the_overrides_then_the_format() {
        let mut s = Settings::default();
        assert_eq!(
            s.endpoint_for_region("us-east-1").unwrap(),
            ("data.tunneling.iot.us-east-1.amazonaws.com".into(), 443)
        );
        assert_eq!(
            s.endpoint_for_region("cn-north-1").unwrap(),
            ("data.tunneling.iot.cn-north-1.amazonaws.com.cn".into(), 443)
        );
        apply_json(
            &mut s,
            r#"{"tunneling":{"proxy":{"region_endpoint_overrides":
                {"us-east-1":"127.0.0.1:4443","eu-west-9":"[::1]"}}}}"#,
        )
        .unwrap();
        assert_eq!(
            s.endpoint_for_region("us-east-1").unwrap(),
            ("127.0.0.1".into(), 4443)
        );
        assert_eq!(
            s.endpoint_for_region("eu-west-9").unwrap(),
            ("::1".into(), 443)
        );
        // The defaults stay.
        assert!(s.region_endpoint_overrides.contains_key("cn-northwest-1"));
        apply_json(
            &mut s,
            r#"{"tunneling":{"proxy":{"endpoint_format":"t.%s.example:8443"}}}"#,
        )
        .unwrap();
        assert_eq!(
            s.endpoint_for_region("ap-south-1").unwrap(),
            ("t.ap-south-1.example".into(), 8443)
        );
    }

    #[test]
    fn bad_overrides_and_formats_name_the_region() {
        let case = |json: &str| apply_json(&mut Settings::default(), json).unwrap_err();
        let e = case(r#"{"tunneling":{"proxy":{"region_endpoint_overrides":{"US":"h"}}}}"#);
        assert_eq!(
            e.key.as_deref(),
            Some("tunneling.proxy.region_endpoint_overrides")
        );
        assert!(e.reason.contains("region 'US'"), "{}", e.reason);
        let e = case(r#"{"tunneling":{"proxy":{"region_endpoint_overrides":{"x-1":"h:0"}}}}"#);
        assert!(e.reason.contains("HOST[:PORT]"), "{}", e.reason);
        let e = case(r#"{"tunneling":{"proxy":{"region_endpoint_overrides":{"x-1":5}}}}"#);
        assert!(e.reason.contains("as a string"), "{}", e.reason);
        let e = case(r#"{"tunneling":{"proxy":{"region_endpoint_overrides":"h"}}}"#);
        assert!(e.reason.contains("object"), "{}", e.reason);
        for bad in [
            "no-region.example",
            "%s.%s.example",
            "%d.%s.example",
            "a b.%s",
        ] {
            let json = format!(r#"{{"tunneling":{{"proxy":{{"endpoint_format":"{bad}"}}}}}}"#);
            let e = case(&json);
            assert_eq!(
                e.key.as_deref(),
                Some("tunneling.proxy.endpoint_format"),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_connection_cap_is_at_least_one() {
        let mut s = Settings::default();
        assert_eq!(s.tcp_max_active_connections, 128);
        apply_json(
            &mut s,
            r#"{"tunneling":{"proxy":{"tcp":{"max_active_connections":"2"}}}}"#,
        )
        .unwrap();
        assert_eq!(s.tcp_max_active_connections, 2);
        let e = apply_json(
            &mut s,
            r#"{"tunneling":{"proxy":{"tcp":{"max_active_connections":0}}}}"#,
        )
        .unwrap_err();
        assert_eq!(
            e.key.as_deref(),
            Some("tunneling.proxy.tcp.max_active_connections")
        );
        assert!(e.reason.contains("integer >= 1"), "{}", e.reason);
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
        let (k, r) = case(r#"{"tunneling":{"proxy":{"websocket":{"max_frame_size":"1000"}}}}"#);
        assert_eq!(k, "tunneling.proxy.message.max_payload_size");
        assert!(r.contains("max_frame_size"), "{r}");
    }

    #[test]
    fn help_lists_every_key_and_marks_the_unused_ones() {
        let help = help_text();
        for key in KEYS {
            let line = help
                .lines()
                .find(|l| l.trim_start().starts_with(&format!("{} =", key.full())))
                .unwrap_or_else(|| panic!("{} missing", key.key));
            assert_eq!(line.contains("not used"), !key.used, "{line}");
        }
        assert!(help.contains("tunneling.proxy.tcp.max_active_connections = 128\n"));
    }
}
