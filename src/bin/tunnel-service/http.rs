//! Minimal HTTP/1.1 requests and responses for the control plane and the
//! WebSocket handshake: reading a request head with a size limit, its
//! request line, and writing responses. Header lines, the end of a head and
//! percent-decoding are the library's (`localproxy::transport`).

use std::fmt;
use std::io::{self, Read, Write};

use localproxy::transport::{find_head_end, parse_header_lines, percent_decode};

/// Why a request head could not be read.
#[derive(Debug)]
pub enum HeadError {
    /// The head did not end within `limit` bytes.
    TooLarge { have: usize, limit: usize },
    /// The peer closed the connection before a complete head (or sent nothing).
    Closed { have: usize },
    /// A socket error (including read timeouts).
    Io(io::Error),
    /// The bytes are not an HTTP/1.x request head.
    Malformed(String),
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeadError::TooLarge { have, limit } => write!(
                f,
                "request head of at least {have} bytes exceeds the limit of {} bytes",
                limit - 1
            ),
            HeadError::Closed { have } => {
                write!(f, "connection closed after {have} bytes of request head")
            }
            HeadError::Io(e) => write!(f, "reading request head: {e}"),
            HeadError::Malformed(why) => write!(f, "malformed request: {why}"),
        }
    }
}

impl std::error::Error for HeadError {}

/// A parsed request line and headers.
#[derive(Debug, Clone)]
pub struct RequestHead {
    pub method: String,
    /// The request target as sent (path and query).
    pub target: String,
    pub headers: Vec<(String, String)>,
}

impl RequestHead {
    /// Parses a head ending with `\r\n\r\n`.
    pub fn parse(head: &[u8]) -> Result<Self, HeadError> {
        let text = std::str::from_utf8(head)
            .map_err(|_| HeadError::Malformed("request head is not UTF-8".into()))?;
        let mut lines = text.split("\r\n");
        let line = lines.next().unwrap_or("");
        let mut parts = line.split(' ');
        let (method, target, version) = match (parts.next(), parts.next(), parts.next()) {
            (Some(m), Some(t), Some(v)) if parts.next().is_none() => (m, t, v),
            _ => return Err(bad_request_line(line)),
        };
        if !version.starts_with("HTTP/1.") || method.is_empty() || !target.starts_with('/') {
            return Err(bad_request_line(line));
        }
        let headers = parse_header_lines(lines).map_err(|e| HeadError::Malformed(e.to_string()))?;
        if let Some((name, _)) = headers.iter().find(|(n, _)| n.is_empty()) {
            return Err(HeadError::Malformed(format!("bad header name {name:?}")));
        }
        Ok(RequestHead {
            method: method.to_string(),
            target: target.to_string(),
            headers,
        })
    }

    /// Every value of header `name` (case-insensitive), in order.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The first value of header `name`.
    pub fn header<'a>(&'a self, name: &'a str) -> Option<&'a str> {
        self.all(name).next()
    }

    /// The path part of the target.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    /// Query parameters, percent-decoded; an invalid escape is an error
    /// naming the parameter.
    pub fn query(&self) -> Result<Vec<(String, String)>, String> {
        let Some((_, q)) = self.target.split_once('?') else {
            return Ok(Vec::new());
        };
        q.split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                match (percent_decode(k), percent_decode(v)) {
                    (Ok(k), Ok(v)) => Ok((k, v)),
                    _ => Err(format!(
                        "query parameter {p:?}: a `%` not followed by two hex digits, or not UTF-8"
                    )),
                }
            })
            .collect()
    }

    /// Whether a comma-separated header contains `token` (case-insensitive).
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.all(name)
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }
}

/// A request line that is not `METHOD /target HTTP/1.x`. Its text is not
/// quoted: the target may hold a token, and the error is logged.
fn bad_request_line(line: &str) -> HeadError {
    HeadError::Malformed(format!(
        "bad request line ({} bytes): expected METHOD /target HTTP/1.x",
        line.len()
    ))
}

/// Reads from `r` until the end of a request head. `carry` holds bytes read
/// earlier; on success returns the head (terminator included) and leaves in
/// `carry` the bytes that followed it. The head must be shorter than `limit`.
pub fn read_head<R: Read>(
    r: &mut R,
    carry: &mut Vec<u8>,
    limit: usize,
) -> Result<Vec<u8>, HeadError> {
    let mut searched = 0;
    loop {
        if let Some(pos) = find_head_end(carry, searched) {
            let end = pos + 4;
            if end >= limit {
                return Err(HeadError::TooLarge { have: end, limit });
            }
            let rest = carry.split_off(end);
            let head = std::mem::replace(carry, rest);
            return Ok(head);
        }
        if carry.len() >= limit {
            return Err(HeadError::TooLarge {
                have: carry.len(),
                limit,
            });
        }
        searched = carry.len().saturating_sub(3);
        let mut buf = [0u8; 2048];
        let want = buf.len().min(limit + 1 - carry.len());
        let n = match r.read(&mut buf[..want]) {
            Ok(0) => return Err(HeadError::Closed { have: carry.len() }),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(HeadError::Io(e)),
        };
        carry.extend_from_slice(&buf[..n]);
    }
}

/// The standard phrase of the status codes this crate sends.
pub fn status_text(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        500 => "Internal Server Error",
        _ => "Unknown",
    }
}

/// Writes a complete response with a body and `Content-Length`.
pub fn write_response<W: Write>(
    w: &mut W,
    status: u16,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<()> {
    let mut out = format!("HTTP/1.1 {status} {}\r\n", status_text(status));
    for (n, v) in headers {
        // Header values never carry CR/LF: reasons are built from our own text.
        let v: String = v.chars().filter(|c| *c != '\r' && *c != '\n').collect();
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    out.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    w.write_all(&bytes)?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_head_and_keeps_the_rest() {
        let data =
            b"GET /tunnel?local-proxy-mode=source HTTP/1.1\r\nHost: x\r\nA: 1\r\na: 2\r\n\r\nEXTRA";
        let mut carry = Vec::new();
        let head = read_head(&mut &data[..], &mut carry, 4096).expect("head");
        assert_eq!(carry, b"EXTRA");
        let h = RequestHead::parse(&head).expect("parsed");
        assert_eq!(h.path(), "/tunnel");
        assert_eq!(
            h.query(),
            Ok(vec![("local-proxy-mode".into(), "source".into())])
        );
        assert_eq!(h.all("a").collect::<Vec<_>>(), vec!["1", "2"]);
    }

    #[test]
    fn refuses_heads_at_the_limit() {
        let mut data = b"GET / HTTP/1.1\r\nX: ".to_vec();
        data.resize(4092, b'a');
        data.extend_from_slice(b"\r\n\r\n");
        let err = read_head(&mut &data[..], &mut Vec::new(), 4096).expect_err("too large");
        assert!(matches!(err, HeadError::TooLarge { .. }), "{err}");
        let ok = b"GET / HTTP/1.1\r\n\r\n";
        assert!(read_head(&mut &ok[..], &mut Vec::new(), 4096).is_ok());
    }

    #[test]
    fn query_values_are_percent_decoded_and_bad_escapes_refused() {
        let h = |t: &str| {
            RequestHead::parse(format!("GET {t} HTTP/1.1\r\n\r\n").as_bytes()).expect("parses")
        };
        assert_eq!(
            h("/t?a=x%20y&b").query(),
            Ok(vec![
                ("a".into(), "x y".into()),
                ("b".into(), String::new())
            ])
        );
        assert!(h("/t?a=%zz").query().expect_err("bad").contains("a=%zz"));
    }
}
