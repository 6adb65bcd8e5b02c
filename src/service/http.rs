//! Minimal HTTP/1.1 request-head reading and parsing shared by the control
//! plane and the WebSocket handshake (no HTTP crate needed for either).

use std::fmt;
use std::io::{self, Read, Write};

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
    /// Size of the head in bytes, terminator included.
    pub len: usize,
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
            _ => return Err(HeadError::Malformed(format!("bad request line {line:?}"))),
        };
        if !version.starts_with("HTTP/1.") || method.is_empty() || !target.starts_with('/') {
            return Err(HeadError::Malformed(format!("bad request line {line:?}")));
        }
        let mut headers = Vec::new();
        for l in lines {
            if l.is_empty() {
                continue;
            }
            let (name, value) = l
                .split_once(':')
                .ok_or_else(|| HeadError::Malformed(format!("bad header line {l:?}")))?;
            if name.is_empty() || name.contains(' ') {
                return Err(HeadError::Malformed(format!("bad header name {name:?}")));
            }
            headers.push((name.to_string(), value.trim().to_string()));
        }
        Ok(RequestHead {
            method: method.to_string(),
            target: target.to_string(),
            headers,
            len: head.len(),
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

    /// Query parameters, percent-decoded.
    pub fn query(&self) -> Vec<(String, String)> {
        let Some((_, q)) = self.target.split_once('?') else {
            return Vec::new();
        };
        q.split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (percent_decode(k), percent_decode(v))
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

/// Decodes `%XX` escapes and `+` as space; invalid escapes stay as they are.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
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
        if let Some(pos) = find_terminator(carry, searched) {
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

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

fn find_terminator(buf: &[u8], from: usize) -> Option<usize> {
    buf.get(from..)?
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + from)
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
            vec![("local-proxy-mode".into(), "source".into())]
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
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b+c%zz%4"), "a b c%zz%4");
    }
}
