//! The request shapes of the IoTSecuredTunneling service model (botocore's
//! `iotsecuretunneling` 2018-10-05) and their checks, reported the way AWS
//! JSON 1.1 services report them: a member of the wrong JSON type is a
//! `SerializationException`; broken constraints (required, length, range,
//! enum, pattern) are one `ValidationException` listing each of them as
//! `Value 'x' at 'path' failed to satisfy constraint: Member must ...`.
//!
//! Lengths count characters (Unicode scalar values), as Smithy's `@length`
//! does. Patterns are whole-string matches written as Rust functions; the
//! Unicode categories of `\p{C}`, `\p{L}`, `\p{Z}` and `\p{N}` are checked
//! with the standard library's character properties (see [`is_other`] and
//! [`is_letter`] for the two approximations). Members outside the model are
//! ignored, as AWS does.

use serde_json::Value;

/// An error of a control-plane operation, as AWS JSON 1.1 reports it: HTTP
/// `status`, `__type` and `x-amzn-ErrorType` `kind`, and a `message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub kind: &'static str,
    /// The message for the caller, in the service's words: it may repeat
    /// the rejected value (the caller sent it).
    pub message: String,
    /// The message for the log when `message` repeats a value from the
    /// request, which may be a token pasted in the wrong member: it names
    /// the member instead.
    logged: Option<String>,
}

impl ApiError {
    fn new(status: u16, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            kind,
            message: message.into(),
            logged: None,
        }
    }
    /// Logs `logged` instead of the message (which repeats request input).
    pub fn logged_as(mut self, logged: impl Into<String>) -> Self {
        self.logged = Some(logged.into());
        self
    }
    /// What the log may say: no value taken from the request.
    pub fn for_log(&self) -> &str {
        self.logged.as_deref().unwrap_or(&self.message)
    }
    /// No tunnel with this id (or ARN); the log does not repeat it.
    pub fn not_found(what: impl std::fmt::Display) -> Self {
        Self::new(
            400,
            "ResourceNotFoundException",
            format!("{what} not found"),
        )
        .logged_as("the tunnelId or resourceArn given names no tunnel")
    }
    /// A constraint of the model is broken (see [`check`]).
    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(400, "ValidationException", message)
    }
    /// The body is not JSON or a member has the wrong JSON type.
    pub fn serialization(message: impl Into<String>) -> Self {
        Self::new(400, "SerializationException", message)
    }
    /// OpenTunnel beyond the number of open tunnels allowed.
    pub fn limit(message: impl Into<String>) -> Self {
        Self::new(400, "LimitExceededException", message)
    }
    /// An `X-Amz-Target` (or method and path) that names no operation.
    pub fn unknown_operation(message: impl Into<String>) -> Self {
        Self::new(400, "UnknownOperationException", message)
    }
    /// A `LocalTest.*` call that cannot be carried out in the current state.
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(400, "InvalidRequestException", message)
    }
    /// The service cannot do its part (no randomness for a token).
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalServerException", message)
    }
}

/// A shape of the model.
pub enum Shape {
    /// A string, `min..=max` characters long, matching `pattern`.
    Str {
        min: usize,
        max: Option<usize>,
        pattern: Option<Pattern>,
    },
    /// A string out of a fixed set.
    Enum(&'static [&'static str]),
    /// An integer in `min..=max`.
    Int {
        min: i64,
        max: i64,
    },
    Bool,
    /// A list of `member`, `min..=max` long.
    List {
        member: &'static Shape,
        min: usize,
        max: Option<usize>,
    },
    /// A structure: its members and which of them are required.
    Struct {
        members: &'static [(&'static str, &'static Shape)],
        required: &'static [&'static str],
    },
}

/// A pattern of the model: its text (for messages) and its check.
pub struct Pattern {
    pub text: &'static str,
    pub matches: fn(&str) -> bool,
}

// ----------------------------------------------------------------- shapes

pub const TUNNEL_ID: Shape = Shape::Str {
    min: 0,
    max: None,
    pattern: Some(Pattern {
        text: "[a-zA-Z0-9_\\-+=:]{1,128}",
        matches: |s| {
            len_in(s, 1, 128)
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-+=:".contains(c))
        },
    }),
};
pub const DESCRIPTION: Shape = Shape::Str {
    min: 0,
    max: None,
    pattern: Some(Pattern {
        text: "[^\\p{C}]{1,2048}",
        matches: |s| len_in(s, 1, 2048) && !s.chars().any(is_other),
    }),
};
/// `Service` and `ThingName` share length and pattern.
const NAME: Shape = Shape::Str {
    min: 1,
    max: Some(128),
    pattern: Some(Pattern {
        text: "[a-zA-Z0-9:_-]+",
        matches: |s| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || ":_-".contains(c))
        },
    }),
};
pub const THING_NAME: Shape = NAME;
const SERVICE: Shape = NAME;
const SERVICE_LIST: Shape = Shape::List {
    member: &SERVICE,
    min: 1,
    max: None,
};
const TAG_PATTERN: Pattern = Pattern {
    text: "^([\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]*)$",
    matches: |s| {
        s.chars()
            .all(|c| is_letter(c) || is_separator(c) || c.is_numeric() || "_.:/=+-@".contains(c))
    },
};
const TAG_KEY: Shape = Shape::Str {
    min: 1,
    max: Some(128),
    pattern: Some(TAG_PATTERN),
};
const TAG_VALUE: Shape = Shape::Str {
    min: 0,
    max: Some(256),
    pattern: Some(TAG_PATTERN),
};
const TAG: Shape = Shape::Struct {
    members: &[("key", &TAG_KEY), ("value", &TAG_VALUE)],
    required: &["key", "value"],
};
const TAG_LIST: Shape = Shape::List {
    member: &TAG,
    min: 1,
    max: Some(200),
};
const TAG_KEY_LIST: Shape = Shape::List {
    member: &TAG_KEY,
    min: 0,
    max: Some(200),
};
const AMAZON_RESOURCE_NAME: Shape = Shape::Str {
    min: 1,
    max: Some(1011),
    pattern: None,
};
const DESTINATION_CONFIG: Shape = Shape::Struct {
    members: &[("thingName", &THING_NAME), ("services", &SERVICE_LIST)],
    required: &["services"],
};
const TIMEOUT_CONFIG: Shape = Shape::Struct {
    members: &[(
        "maxLifetimeTimeoutMinutes",
        &Shape::Int { min: 1, max: 720 },
    )],
    required: &[],
};
pub const CLIENT_MODES: [&str; 3] = ["SOURCE", "DESTINATION", "ALL"];
const NEXT_TOKEN: Shape = Shape::Str {
    min: 0,
    max: None,
    pattern: Some(Pattern {
        text: "[a-zA-Z0-9_=-]{1,4096}",
        matches: |s| {
            len_in(s, 1, 4096)
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_=-".contains(c))
        },
    }),
};

pub const OPEN_TUNNEL: Shape = Shape::Struct {
    members: &[
        ("description", &DESCRIPTION),
        ("tags", &TAG_LIST),
        ("destinationConfig", &DESTINATION_CONFIG),
        ("timeoutConfig", &TIMEOUT_CONFIG),
    ],
    required: &[],
};
pub const CLOSE_TUNNEL: Shape = Shape::Struct {
    members: &[("tunnelId", &TUNNEL_ID), ("delete", &Shape::Bool)],
    required: &["tunnelId"],
};
pub const DESCRIBE_TUNNEL: Shape = Shape::Struct {
    members: &[("tunnelId", &TUNNEL_ID)],
    required: &["tunnelId"],
};
pub const LIST_TUNNELS: Shape = Shape::Struct {
    members: &[
        ("thingName", &THING_NAME),
        ("maxResults", &Shape::Int { min: 1, max: 100 }),
        ("nextToken", &NEXT_TOKEN),
    ],
    required: &[],
};
pub const ROTATE_TUNNEL_ACCESS_TOKEN: Shape = Shape::Struct {
    members: &[
        ("tunnelId", &TUNNEL_ID),
        ("clientMode", &Shape::Enum(&CLIENT_MODES)),
        ("destinationConfig", &DESTINATION_CONFIG),
    ],
    required: &["tunnelId", "clientMode"],
};
pub const TAG_RESOURCE: Shape = Shape::Struct {
    members: &[("resourceArn", &AMAZON_RESOURCE_NAME), ("tags", &TAG_LIST)],
    required: &["resourceArn", "tags"],
};
pub const UNTAG_RESOURCE: Shape = Shape::Struct {
    members: &[
        ("resourceArn", &AMAZON_RESOURCE_NAME),
        ("tagKeys", &TAG_KEY_LIST),
    ],
    required: &["resourceArn", "tagKeys"],
};
pub const LIST_TAGS_FOR_RESOURCE: Shape = Shape::Struct {
    members: &[("resourceArn", &AMAZON_RESOURCE_NAME)],
    required: &["resourceArn"],
};

// ------------------------------------------------------------- checking

/// Checks `input` against `shape`: `Ok` when it conforms.
pub fn check(input: &Value, shape: &Shape) -> Result<(), ApiError> {
    let mut errors = Vec::new();
    walk(input, shape, "", &mut errors)?;
    if errors.is_empty() {
        return Ok(());
    }
    let n = errors.len();
    let summary = |texts: Vec<&str>| {
        format!(
            "{n} validation error{} detected: {}",
            if n == 1 { "" } else { "s" },
            texts.join("; ")
        )
    };
    Err(
        ApiError::validation(summary(errors.iter().map(|(m, _)| m.as_str()).collect()))
            .logged_as(summary(errors.iter().map(|(_, l)| l.as_str()).collect())),
    )
}

/// A constraint violation in the service's words.
pub fn violation(value: &Value, path: &str, constraint: &str) -> String {
    format!(
        "Value {} at '{path}' failed to satisfy constraint: Member must {constraint}",
        shown(value)
    )
}

/// The violation for the log: the member's path, not its value.
pub fn violation_logged(path: &str, constraint: &str) -> String {
    format!("Value at '{path}' failed to satisfy constraint: Member must {constraint}")
}

/// A violation for the caller and for the log.
fn both(value: &Value, path: &str, constraint: &str) -> (String, String) {
    (
        violation(value, path, constraint),
        violation_logged(path, constraint),
    )
}

/// The value as the messages show it: `'text'`, `'[a, b]'`, `null`.
fn shown(v: &Value) -> String {
    fn inner(v: &Value) -> String {
        match v {
            Value::String(s) => s.clone(),
            Value::Array(a) => format!("[{}]", a.iter().map(inner).collect::<Vec<_>>().join(", ")),
            Value::Object(o) => format!(
                "{{{}}}",
                o.iter()
                    .map(|(k, v)| format!("{k}={}", inner(v)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            other => other.to_string(),
        }
    }
    match v {
        Value::Null => "null".into(),
        v => format!("'{}'", inner(v)),
    }
}

fn join(path: &str, member: &str) -> String {
    if path.is_empty() {
        member.to_string()
    } else {
        format!("{path}.{member}")
    }
}

fn type_error(path: &str, expected: &str, got: &Value) -> ApiError {
    let kind = match got {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    };
    let at = if path.is_empty() { "the body" } else { path };
    ApiError::serialization(format!("{at} must be {expected}, not {kind}"))
}

fn walk(
    v: &Value,
    shape: &Shape,
    path: &str,
    errors: &mut Vec<(String, String)>,
) -> Result<(), ApiError> {
    match shape {
        Shape::Str { min, max, pattern } => {
            let s = v.as_str().ok_or_else(|| type_error(path, "a string", v))?;
            let n = s.chars().count();
            if n < *min {
                errors.push(both(
                    v,
                    path,
                    &format!("have length greater than or equal to {min}"),
                ));
            }
            if let Some(max) = max.filter(|m| n > *m) {
                errors.push(both(
                    v,
                    path,
                    &format!("have length less than or equal to {max}"),
                ));
            }
            if let Some(p) = pattern {
                if !(p.matches)(s) {
                    errors.push(both(
                        v,
                        path,
                        &format!("satisfy regular expression pattern: {}", p.text),
                    ));
                }
            }
        }
        Shape::Enum(values) => {
            let s = v.as_str().ok_or_else(|| type_error(path, "a string", v))?;
            if !values.contains(&s) {
                errors.push(both(
                    v,
                    path,
                    &format!("satisfy enum value set: [{}]", values.join(", ")),
                ));
            }
        }
        Shape::Int { min, max } => {
            let n = v
                .as_i64()
                .ok_or_else(|| type_error(path, "an integer", v))?;
            if n < *min {
                errors.push(both(
                    v,
                    path,
                    &format!("have value greater than or equal to {min}"),
                ));
            }
            if n > *max {
                errors.push(both(
                    v,
                    path,
                    &format!("have value less than or equal to {max}"),
                ));
            }
        }
        Shape::Bool => {
            v.as_bool()
                .ok_or_else(|| type_error(path, "a boolean", v))?;
        }
        Shape::List { member, min, max } => {
            let items = v.as_array().ok_or_else(|| type_error(path, "a list", v))?;
            if items.len() < *min {
                errors.push(both(
                    v,
                    path,
                    &format!("have length greater than or equal to {min}"),
                ));
            }
            if let Some(max) = max.filter(|m| items.len() > *m) {
                errors.push(both(
                    v,
                    path,
                    &format!("have length less than or equal to {max}"),
                ));
            }
            for (i, item) in items.iter().enumerate() {
                let at = format!("{}.member", join(path, &(i + 1).to_string()));
                if item.is_null() {
                    errors.push(both(item, &at, "not be null"));
                } else {
                    walk(item, member, &at, errors)?;
                }
            }
        }
        Shape::Struct { members, required } => {
            let o = v
                .as_object()
                .ok_or_else(|| type_error(path, "an object", v))?;
            for (name, member) in members.iter() {
                let at = join(path, name);
                match o.get(*name) {
                    None | Some(Value::Null) => {
                        if required.contains(name) {
                            errors.push(both(&Value::Null, &at, "not be null"));
                        }
                    }
                    Some(value) => walk(value, member, &at, errors)?,
                }
            }
        }
    }
    Ok(())
}

fn len_in(s: &str, min: usize, max: usize) -> bool {
    (min..=max).contains(&s.chars().count())
}

/// `\p{C}` (other): controls (Cc), format characters (Cf), private use (Co)
/// and the noncharacters of Cn. Surrogates (Cs) cannot occur in a decoded
/// string. Approximation: unassigned code points (the rest of Cn) are not
/// recognised, the standard library has no table of them.
pub fn is_other(c: char) -> bool {
    let u = c as u32;
    c.is_control()
        || matches!(
            u,
            0xAD | 0x600..=0x605
                | 0x61C
                | 0x6DD
                | 0x70F
                | 0x890..=0x891
                | 0x8E2
                | 0x180E
                | 0x200B..=0x200F
                | 0x202A..=0x202E
                | 0x2060..=0x2064
                | 0x2066..=0x206F
                | 0xFEFF
                | 0xFFF9..=0xFFFB
                | 0x110BD
                | 0x110CD
                | 0x13430..=0x1343F
                | 0x1BCA0..=0x1BCA3
                | 0x1D173..=0x1D17A
                | 0xE0001
                | 0xE0020..=0xE007F
                | 0xE000..=0xF8FF
                | 0xF0000..=0xFFFFD
                | 0x100000..=0x10FFFD
                | 0xFDD0..=0xFDEF
        )
        || (u & 0xFFFE) == 0xFFFE
}

/// `\p{L}` (letter). Approximation: the standard library's `Alphabetic`
/// property less numbers, which also admits the combining marks counted as
/// alphabetic (`Other_Alphabetic`, e.g. Indic vowel signs).
pub fn is_letter(c: char) -> bool {
    c.is_alphabetic() && !c.is_numeric()
}

/// `\p{Z}` (separator): space (Zs), line (Zl) and paragraph (Zp) separators.
pub fn is_separator(c: char) -> bool {
    matches!(
        c as u32,
        0x20 | 0xA0 | 0x1680 | 0x2000..=0x200A | 0x2028 | 0x2029 | 0x202F | 0x205F | 0x3000
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn message(v: Value, shape: &Shape) -> String {
        let e = check(&v, shape).expect_err("refused");
        assert_eq!(e.kind, "ValidationException", "{e:?}");
        e.message
    }

    #[test]
    fn valid_requests_pass() {
        let ok = json!({"description": "a tunnel, for SSH ✓", "tags": [{"key": "env é", "value": ""}],
            "destinationConfig": {"thingName": "t:1", "services": ["SSH1", "W_B-2"]},
            "timeoutConfig": {"maxLifetimeTimeoutMinutes": 720}, "unknown": 1});
        check(&ok, &OPEN_TUNNEL).expect("valid");
        check(&json!({}), &OPEN_TUNNEL).expect("all optional");
    }

    #[test]
    fn constraints_are_reported_like_the_service() {
        assert_eq!(
            message(json!({"clientMode": "BOTH"}), &ROTATE_TUNNEL_ACCESS_TOKEN),
            "2 validation errors detected: Value null at 'tunnelId' failed to satisfy constraint: \
             Member must not be null; Value 'BOTH' at 'clientMode' failed to satisfy constraint: \
             Member must satisfy enum value set: [SOURCE, DESTINATION, ALL]"
        );
        let m = message(
            json!({"timeoutConfig": {"maxLifetimeTimeoutMinutes": 721}}),
            &OPEN_TUNNEL,
        );
        assert!(m.ends_with("Value '721' at 'timeoutConfig.maxLifetimeTimeoutMinutes' failed to satisfy constraint: Member must have value less than or equal to 720"), "{m}");
        let m = message(
            json!({"tags": [{"key": "bad#key", "value": "v"}]}),
            &OPEN_TUNNEL,
        );
        assert!(
            m.contains("at 'tags.1.member.key'") && m.contains("regular expression"),
            "{m}"
        );
        let m = message(json!({"destinationConfig": {"services": []}}), &OPEN_TUNNEL);
        assert!(
            m.contains("Value '[]' at 'destinationConfig.services'"),
            "{m}"
        );
    }

    #[test]
    fn description_is_1_to_2048_characters_without_controls() {
        let check_desc = |d: &str| check(&json!({ "description": d }), &OPEN_TUNNEL).is_ok();
        assert!(check_desc(&"é".repeat(2048)));
        assert!(!check_desc(&"a".repeat(2049)));
        assert!(!check_desc(""));
        assert!(!check_desc("tab\there"));
        assert!(!check_desc("bell\u{7}"));
        assert!(!check_desc("zero\u{200B}width"));
    }

    #[test]
    fn tag_lengths_count_characters() {
        let tag = |k: &str, v: &str| {
            check(&json!({"tags": [{"key": k, "value": v}]}), &OPEN_TUNNEL).is_ok()
        };
        assert!(tag(&"é".repeat(128), &"ü".repeat(256)));
        assert!(!tag(&"é".repeat(129), "v"));
        assert!(!tag("k", &"ü".repeat(257)));
        assert!(!tag("", "v"));
        assert!(tag("k", ""));
        assert!(!tag("bad#key", "v"));
        assert!(check(&json!({ "tags": [] }), &OPEN_TUNNEL).is_err());
    }

    #[test]
    fn wrong_types_are_serialization_errors() {
        let e = check(&json!({"tunnelId": 5}), &DESCRIBE_TUNNEL).expect_err("type");
        assert_eq!(e.kind, "SerializationException");
        assert!(e.message.contains("tunnelId"), "{}", e.message);
        let e = check(&json!([]), &DESCRIBE_TUNNEL).expect_err("type");
        assert_eq!(e.kind, "SerializationException");
    }

    #[test]
    fn categories() {
        assert!(is_other('\u{0}') && is_other('\u{AD}') && is_other('\u{E000}'));
        assert!(!is_other('a') && !is_other('é') && !is_other(' '));
        assert!(is_letter('ß') && is_letter('字') && !is_letter('1'));
        assert!(is_separator('\u{3000}') && !is_separator('\t'));
    }
}
