//! Minimal HTTP/1.1: read a response head off a layer (keeping the bytes
//! that follow it) and parse its status line and headers; the pieces the
//! upgrade and CONNECT requests share.

use std::io::{self, Read};

use super::memio::{HasMemIo, Outer, Pump};

/// Largest response head accepted.
pub(crate) const MAX_HEAD: usize = 16 * 1024;

/// `localproxy-rs/<version>`.
pub(crate) fn user_agent() -> String {
    format!("localproxy-rs/{}", env!("CARGO_PKG_VERSION"))
}

/// `host:port`, with brackets around an IPv6 address.
pub fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// A parsed response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ResponseHead {
    pub(crate) status: u16,
    pub(crate) status_text: String,
    pub(crate) headers: Vec<(String, String)>,
}

impl ResponseHead {
    /// The first value of header `name` (case-insensitive).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Why a head could not be read.
#[derive(Debug)]
pub(crate) enum HeadError {
    Io(io::Error),
    Malformed(String),
}

impl From<io::Error> for HeadError {
    fn from(e: io::Error) -> Self {
        HeadError::Io(e)
    }
}

/// Reads a response head from `s`; returns it and the bytes read past it.
pub(crate) fn read_head<S: Read + HasMemIo>(
    s: &mut S,
    pump: &Pump<'_>,
    outer: &mut Outer,
) -> Result<(ResponseHead, Vec<u8>), HeadError> {
    let mut acc = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = pump.read(s, outer, &mut buf)?;
        if n == 0 {
            return Err(HeadError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "connection closed after {} bytes of the HTTP response",
                    acc.len()
                ),
            )));
        }
        let start = acc.len().saturating_sub(3);
        acc.extend_from_slice(&buf[..n]);
        if let Some(pos) = find_head_end(&acc, start) {
            let end = pos + 4;
            let head = parse_head(&acc[..end]).map_err(HeadError::Malformed)?;
            return Ok((head, acc[end..].to_vec()));
        }
        if acc.len() > MAX_HEAD {
            return Err(HeadError::Malformed(format!(
                "response head longer than {MAX_HEAD} bytes"
            )));
        }
    }
}

/// Parses `HTTP/1.x NNN text\r\n(name: value\r\n)*\r\n`.
pub(crate) fn parse_head(raw: &[u8]) -> Result<ResponseHead, String> {
    let text = std::str::from_utf8(raw).map_err(|_| "response head is not UTF-8".to_string())?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(format!(
            "not an HTTP/1.x status line: {:?}",
            clip(status_line)
        ));
    }
    let code = parts.next().unwrap_or_default();
    let status = code
        .parse::<u16>()
        .ok()
        .filter(|s| (100..=999).contains(s))
        .ok_or_else(|| format!("bad status code in {:?}", clip(status_line)))?;
    let status_text = parts.next().unwrap_or_default().trim().to_string();
    // A response's bad line is quoted: it comes from the service or a web
    // proxy, not from our request.
    let headers = parse_header_lines(lines).map_err(|e| {
        let line = text.split("\r\n").nth(e.line - 1).unwrap_or_default();
        format!("bad header line {:?}", clip(line))
    })?;
    Ok(ResponseHead {
        status,
        status_text,
        headers,
    })
}

/// Where the `\r\n\r\n` ending an HTTP head starts in `buf`, searching
/// from offset `from` (pass the length already searched minus 3).
pub fn find_head_end(buf: &[u8], from: usize) -> Option<usize> {
    buf.get(from..)?
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + from)
}

/// A header line without `:`. It names the line by its number, not by its
/// text: a request's header line may hold a token (`access-token abc`),
/// and the error may be logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadHeaderLine {
    /// The line's number in the head, 1 being the request or status line.
    pub line: usize,
    /// Its length in bytes.
    pub len: usize,
}

impl std::fmt::Display for BadHeaderLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "line {} of the head ({} bytes) is not a header: no ':'",
            self.line, self.len
        )
    }
}

impl std::error::Error for BadHeaderLine {}

/// The header lines of an HTTP/1.x head (after its first line, split at
/// CRLF; empty lines skipped) as `(name, value)` pairs, both trimmed, in
/// order. A line without `:` is an error naming its number.
pub fn parse_header_lines<'a>(
    lines: impl Iterator<Item = &'a str>,
) -> Result<Vec<(String, String)>, BadHeaderLine> {
    let mut headers = Vec::new();
    for (i, line) in lines.enumerate() {
        if line.is_empty() {
            continue;
        }
        let (name, value) = line.split_once(':').ok_or(BadHeaderLine {
            line: i + 2,
            len: line.len(),
        })?;
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
    Ok(headers)
}

/// At most 200 characters of `s`, for error messages.
pub(crate) fn clip(s: &str) -> String {
    s.chars().take(200).collect()
}

/// A printable snippet of a response body, or `None` when empty.
pub(crate) fn body_snippet(body: &[u8]) -> Option<String> {
    let text: String = String::from_utf8_lossy(body)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect();
    let text = text.trim().to_string();
    (!text.is_empty()).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_and_headers() {
        let h = parse_head(
            b"HTTP/1.1 403 Forbidden\r\nX-Status-Reason: token spent\r\nContent-Length: 0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(h.status, 403);
        assert_eq!(h.status_text, "Forbidden");
        assert_eq!(h.header("x-status-reason"), Some("token spent"));
        assert_eq!(h.header("missing"), None);
    }

    #[test]
    fn head_end_and_header_lines() {
        let head = b"GET / HTTP/1.1\r\nA: 1\r\n\r\nrest";
        assert_eq!(find_head_end(head, 0), Some(20));
        assert_eq!(find_head_end(head, 21), None);
        assert_eq!(
            parse_header_lines(["A : 1 ", "", "b:2"].into_iter()).unwrap(),
            vec![("A".into(), "1".into()), ("b".into(), "2".into())]
        );
        assert!(parse_header_lines(["x"].into_iter()).is_err());
        // The error names the line, never its text (it may hold a token).
        let e =
            parse_header_lines(["A: 1", "access-token secret"].into_iter()).expect_err("no colon");
        assert_eq!(e, BadHeaderLine { line: 3, len: 19 });
        assert!(!e.to_string().contains("secret"), "{e}");
        // A response's bad line is still quoted.
        let r = parse_head(b"HTTP/1.1 200 OK\r\nA: 1\r\nnocolon\r\n\r\n").expect_err("bad");
        assert_eq!(r, "bad header line \"nocolon\"");
    }

    #[test]
    fn rejects_non_http() {
        assert!(parse_head(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 abc OK\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nnocolon\r\n\r\n").is_err());
    }

    #[test]
    fn snippet_is_printable_and_short() {
        assert_eq!(body_snippet(b""), None);
        assert_eq!(body_snippet(b"a\r\nb").as_deref(), Some("a  b"));
        assert_eq!(body_snippet(&[b'x'; 500]).unwrap().len(), 200);
    }
}
