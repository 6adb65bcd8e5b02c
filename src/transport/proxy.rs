//! The web proxy: `HTTPS_PROXY` / `NO_PROXY` parsing and the `CONNECT` exchange.

use std::fmt;
use std::net::IpAddr;

use crate::config::HostPortError;
use crate::protocol::DEFAULT_WEB_PROXY_PORT;
use crate::secret::Secret;

use super::error::{ProxyConfigError, ProxyFailure};
use super::http::{host_port, read_head, user_agent, HeadError};
use super::memio::{HasMemIo, Outer, Pump};

/// How the proxy itself is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyScheme {
    /// Plain TCP to the proxy.
    Http,
    /// TLS to the proxy, then the endpoint's TLS inside it.
    Https,
}

impl ProxyScheme {
    fn as_str(self) -> &'static str {
        match self {
            ProxyScheme::Http => "http",
            ProxyScheme::Https => "https",
        }
    }
}

/// A web proxy to tunnel through with `CONNECT`. `Display` and `Debug` show
/// `scheme://host:port` only, never the credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct WebProxy {
    scheme: ProxyScheme,
    host: String,
    port: u16,
    /// `user:password`, percent-decoded.
    credentials: Option<Secret>,
}

/// The environment variables naming a web proxy and its exceptions, each
/// lowercase first (it wins when both are set, as in curl).
pub const PROXY_ENV_VARS: [&str; 4] = ["https_proxy", "HTTPS_PROXY", "no_proxy", "NO_PROXY"];

impl WebProxy {
    /// A proxy at `host:port`; `credentials` is `(user, password)`.
    pub fn new(
        scheme: ProxyScheme,
        host: &str,
        port: u16,
        credentials: Option<(&str, &str)>,
    ) -> Self {
        WebProxy {
            scheme,
            host: host.to_string(),
            port,
            credentials: credentials.map(|(u, p)| Secret::new(format!("{u}:{p}"))),
        }
    }

    /// Parses `[scheme://][user[:password]@]host[:port][/...]`; no scheme
    /// means `http://`, no port means 3128.
    ///
    /// The credentials run to the last `@` of the value, as in the reference
    /// proxy, so a password may hold `/`, `@` or `:` unencoded
    /// (`http://user:pa/ss@host:3128`); curl and RFC 3986 end the authority at
    /// the first `/` instead, which reads that value as host `user`, port
    /// `pa`. A proxy URL has no meaningful path, so nothing valid is lost.
    /// Percent-encoding (`%2F`) works in both. No error message holds any
    /// part of the credentials, nor text that may be part of them.
    pub fn parse(value: &str) -> Result<WebProxy, ProxyConfigError> {
        let value = value.trim();
        let (scheme, rest) = match value.split_once("://") {
            Some((s, rest)) => {
                let scheme = match s.to_ascii_lowercase().as_str() {
                    "http" => ProxyScheme::Http,
                    "https" => ProxyScheme::Https,
                    // Text before "://" that is no scheme may be a password.
                    _ if is_scheme(s) => {
                        return Err(ProxyConfigError::UnsupportedScheme(s.to_string()))
                    }
                    _ => return Err(ProxyConfigError::UnsupportedScheme("(not shown)".into())),
                };
                (scheme, rest)
            }
            None => (ProxyScheme::Http, value),
        };
        let (userinfo, after) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        let hostport = after.split(['/', '?', '#']).next().unwrap_or_default();
        let credentials = match userinfo {
            None => None,
            Some(u) => {
                let (user, pass) = u.split_once(':').unwrap_or((u, ""));
                let user = percent_decode(user)?;
                let pass = percent_decode(pass)?;
                Some(Secret::new(format!("{user}:{pass}")))
            }
        };
        let (host, port) = crate::config::parse_host_port(hostport, Some(DEFAULT_WEB_PROXY_PORT))
            .map_err(|e| match e {
            // Only digits are shown: without an '@', a mistyped
            // "user:password" would be read as "host:port".
            HostPortError::BadPort { port, .. } if port.bytes().all(|b| b.is_ascii_digit()) => {
                ProxyConfigError::InvalidPort(port)
            }
            HostPortError::BadPort { .. } => ProxyConfigError::InvalidPort("(not a number)".into()),
            HostPortError::EmptyHost(_) | HostPortError::Malformed(_) => {
                ProxyConfigError::MissingHost
            }
        })?;
        Ok(WebProxy {
            scheme,
            host,
            port,
            credentials,
        })
    }

    /// From `https_proxy`/`HTTPS_PROXY` and `no_proxy`/`NO_PROXY` as `env`
    /// gives them, the lower-case name first when both are set (as the
    /// reference and curl read them); `None` when unset or empty, or when
    /// `target_host` is excluded by `NO_PROXY`.
    pub fn from_env(
        env: &dyn Fn(&str) -> Option<String>,
        target_host: &str,
    ) -> Result<Option<WebProxy>, ProxyConfigError> {
        let get = |a: &str, b: &str| {
            env(a)
                .filter(|v| !v.trim().is_empty())
                .or_else(|| env(b).filter(|v| !v.trim().is_empty()))
        };
        let [https_lower, https_upper, no_lower, no_upper] = PROXY_ENV_VARS;
        let Some(value) = get(https_lower, https_upper) else {
            return Ok(None);
        };
        let proxy = WebProxy::parse(&value)?;
        if let Some(no_proxy) = get(no_lower, no_upper) {
            if no_proxy_matches(&no_proxy, target_host) {
                log::debug!(
                    "NO_PROXY excludes {target_host}: connecting directly, not via {proxy}"
                );
                return Ok(None);
            }
        }
        Ok(Some(proxy))
    }

    pub fn scheme(&self) -> ProxyScheme {
        self.scheme
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether a `Proxy-Authorization` header is sent.
    pub fn has_credentials(&self) -> bool {
        self.credentials.is_some()
    }

    /// The `CONNECT` request for `host:port`.
    pub(crate) fn connect_request(&self, host: &str, port: u16) -> String {
        let authority = host_port(host, port);
        let mut req = format!(
            "CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: {}\r\n",
            user_agent()
        );
        if let Some(c) = &self.credentials {
            req.push_str("Proxy-Authorization: Basic ");
            req.push_str(&openssl::base64::encode_block(c.expose().as_bytes()));
            req.push_str("\r\n");
        }
        req.push_str("\r\n");
        req
    }
}

impl fmt::Display for WebProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}://{}",
            self.scheme.as_str(),
            host_port(&self.host, self.port)
        )
    }
}

impl fmt::Debug for WebProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "WebProxy({self}{})",
            if self.credentials.is_some() {
                ", credentials <redacted>"
            } else {
                ""
            }
        )
    }
}

/// Whether `s` is a URL scheme: a letter, then letters, digits, `+`, `-`, `.`.
fn is_scheme(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
}

/// Decodes `%XX` escapes (credentials of a web proxy URL, query values of a
/// request); a `%` without two hex digits or a result that is not UTF-8 is
/// an error.
pub fn percent_decode(s: &str) -> Result<String, ProxyConfigError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or(ProxyConfigError::InvalidPercentEncoding)?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| ProxyConfigError::InvalidPercentEncoding)
}

/// Whether `NO_PROXY` (comma-separated host suffixes with an optional leading
/// `.` or `*.`, exact IP addresses, or `*` for all) covers `host`. Ports on
/// entries are ignored.
pub fn no_proxy_matches(no_proxy: &str, host: &str) -> bool {
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let host_ip = host.parse::<IpAddr>().ok();
    no_proxy.split(',').any(|entry| {
        let entry = entry.trim().to_ascii_lowercase();
        if entry.is_empty() {
            return false;
        }
        if entry == "*" {
            return true;
        }
        // An IP address, bare, bracketed, or with a port.
        let bare = entry.trim_start_matches('[');
        let bare = bare.split(']').next().unwrap_or(bare);
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return host_ip == Some(ip);
        }
        if let Some((ip, _)) = entry.rsplit_once(':') {
            if let Ok(ip) = ip.parse::<IpAddr>() {
                return host_ip == Some(ip);
            }
        }
        let name = entry.split(':').next().unwrap_or_default();
        let name = name
            .trim_start_matches("*.")
            .trim_start_matches('.')
            .trim_end_matches('.');
        if name.is_empty() || host_ip.is_some() {
            return false;
        }
        host == name || host.ends_with(&format!(".{name}"))
    })
}

/// Sends `CONNECT host:port` over `s` and checks the answer; returns the bytes
/// read past the answer's head (normally none).
pub(crate) fn connect_through<S: std::io::Read + std::io::Write + HasMemIo>(
    proxy: &WebProxy,
    s: &mut S,
    pump: &Pump<'_>,
    host: &str,
    port: u16,
) -> Result<Vec<u8>, ProxyFailure> {
    let req = proxy.connect_request(host, port);
    log::trace!(
        "CONNECT {} via {proxy}{}",
        host_port(host, port),
        if proxy.has_credentials() {
            " (Proxy-Authorization: <redacted>)"
        } else {
            ""
        }
    );
    let mut no_outer: Outer = None;
    pump.write_all(s, &mut no_outer, req.as_bytes())
        .map_err(ProxyFailure::Io)?;
    let (head, rest) = read_head(s, pump, &mut no_outer).map_err(|e| match e {
        HeadError::Io(e) => ProxyFailure::Io(e),
        HeadError::Malformed(d) => ProxyFailure::Malformed(d),
    })?;
    log::debug!(
        "web proxy {proxy} answered CONNECT: {} {}",
        head.status,
        head.status_text
    );
    if !(200..300).contains(&head.status) {
        return Err(ProxyFailure::Status {
            status: head.status,
            status_text: head.status_text,
        });
    }
    Ok(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn scheme_less_value_is_http_with_default_port() {
        let p = WebProxy::parse("proxy.example").unwrap();
        assert_eq!(p.scheme(), ProxyScheme::Http);
        assert_eq!(p.host(), "proxy.example");
        assert_eq!(p.port(), DEFAULT_WEB_PROXY_PORT);
        assert!(!p.has_credentials());
        let p = WebProxy::parse("proxy.example:8080").unwrap();
        assert_eq!(p.port(), 8080);
    }

    #[test]
    fn schemes_ports_and_paths() {
        let p = WebProxy::parse("HTTPS://proxy:443/").unwrap();
        assert_eq!(p.scheme(), ProxyScheme::Https);
        assert_eq!(p.port(), 443);
        let p = WebProxy::parse("http://[::1]:3129").unwrap();
        assert_eq!(p.host(), "::1");
        assert_eq!(p.port(), 3129);
        assert_eq!(p.to_string(), "http://[::1]:3129");
        assert_eq!(
            WebProxy::parse("socks5://h:1"),
            Err(ProxyConfigError::UnsupportedScheme("socks5".into()))
        );
        assert_eq!(
            WebProxy::parse("http://h:99999"),
            Err(ProxyConfigError::InvalidPort("99999".into()))
        );
        assert_eq!(
            WebProxy::parse("http://:80"),
            Err(ProxyConfigError::MissingHost)
        );
    }

    #[test]
    fn credentials_are_percent_decoded_and_never_shown() {
        let p = WebProxy::parse("http://us%40er:p%3Ass%25w@proxy:8080").unwrap();
        assert!(p.has_credentials());
        let req = p.connect_request("endpoint", 443);
        let expected = openssl::base64::encode_block(b"us@er:p:ss%w");
        assert!(req.contains(&format!("Proxy-Authorization: Basic {expected}\r\n")));
        assert!(req.starts_with("CONNECT endpoint:443 HTTP/1.1\r\nHost: endpoint:443\r\n"));
        let shown = format!("{p} {p:?}");
        assert!(!shown.contains("p:ss") && !shown.contains("us@er") && !shown.contains("us%40er"));
        assert_eq!(
            WebProxy::parse("http://u:%zz@proxy"),
            Err(ProxyConfigError::InvalidPercentEncoding)
        );
        let e = WebProxy::parse("http://user:secret@proxy:abc").unwrap_err();
        assert!(!e.to_string().contains("secret"));
    }

    #[test]
    fn a_password_may_hold_a_slash_or_an_at_sign() {
        for (value, user_pass) in [
            ("http://user:pa/ss@proxy:8080", "user:pa/ss"),
            ("http://user:p@ss/w@proxy:8080/", "user:p@ss/w"),
            ("user:pa/ss@proxy:8080", "user:pa/ss"),
            ("http://user:pa%2Fss@proxy:8080", "user:pa/ss"),
        ] {
            let p = WebProxy::parse(value).unwrap();
            assert_eq!((p.host(), p.port()), ("proxy", 8080), "{value}");
            let req = p.connect_request("endpoint", 443);
            let expected = openssl::base64::encode_block(user_pass.as_bytes());
            assert!(
                req.contains(&format!("Proxy-Authorization: Basic {expected}\r\n")),
                "{value}"
            );
            assert!(!format!("{p} {p:?}").contains("pa"), "{value}");
        }
    }

    #[test]
    fn no_error_shows_the_password_or_what_may_be_one() {
        for value in [
            "http://user:SECRET/x@proxy:abc",
            "http://user:SECRET@proxy:99x",
            "http://user:SECRET",
            "http://user:SECRET/",
            "user:SECRET://x@proxy",
            "http://user:SECRET@",
            "http://user:SECRET@[::1",
            "http://user:SECRET%zz@proxy",
            "http://user:SECRET@pro xy",
        ] {
            let e = WebProxy::parse(value).expect_err(value);
            let text = format!("{e} {e:?}");
            assert!(!text.contains("SECRET"), "{value}: {text}");
        }
        assert_eq!(
            WebProxy::parse("http://user:SECRET"),
            Err(ProxyConfigError::InvalidPort("(not a number)".into()))
        );
    }

    #[test]
    fn no_proxy_suffix_rules() {
        assert!(no_proxy_matches("example.com", "example.com"));
        assert!(no_proxy_matches("example.com", "a.b.example.com"));
        assert!(no_proxy_matches(".example.com", "a.example.com"));
        assert!(no_proxy_matches("*.example.com", "a.example.com"));
        assert!(no_proxy_matches(" foo , EXAMPLE.com:443 ", "x.Example.COM"));
        assert!(!no_proxy_matches("example.com", "badexample.com"));
        assert!(!no_proxy_matches("example.com", "example.org"));
        assert!(no_proxy_matches("*", "anything"));
        assert!(no_proxy_matches("127.0.0.1", "127.0.0.1"));
        assert!(!no_proxy_matches("127.0.0.1", "127.0.0.2"));
        assert!(!no_proxy_matches("0.0.1", "127.0.0.1"));
        assert!(no_proxy_matches("[::1]", "::1"));
        assert!(!no_proxy_matches("", "example.com"));
    }

    #[test]
    fn from_env_reads_both_cases_and_honours_no_proxy() {
        let none = WebProxy::from_env(&env_of(&[]), "host").unwrap();
        assert!(none.is_none());
        let p = WebProxy::from_env(&env_of(&[("https_proxy", "p:1")]), "host")
            .unwrap()
            .unwrap();
        assert_eq!((p.host(), p.port()), ("p", 1));
        let p = WebProxy::from_env(
            &env_of(&[("HTTPS_PROXY", "upper:2"), ("https_proxy", "lower:3")]),
            "host",
        )
        .unwrap()
        .unwrap();
        // The reference's precedence: the lower-case name wins.
        assert_eq!(p.host(), "lower");
        let p = WebProxy::from_env(
            &env_of(&[("HTTPS_PROXY", "upper:2"), ("https_proxy", " ")]),
            "host",
        )
        .unwrap()
        .unwrap();
        assert_eq!(p.host(), "upper");
        let bypass = WebProxy::from_env(
            &env_of(&[("HTTPS_PROXY", "p:1"), ("no_proxy", "localhost,.internal")]),
            "svc.internal",
        )
        .unwrap();
        assert!(bypass.is_none());
        let kept = WebProxy::from_env(
            &env_of(&[("HTTPS_PROXY", "p:1"), ("NO_PROXY", "localhost")]),
            "data.tunneling.iot.us-east-1.amazonaws.com",
        )
        .unwrap();
        assert!(kept.is_some());
        let bypass = WebProxy::from_env(
            &env_of(&[
                ("HTTPS_PROXY", "p:1"),
                ("NO_PROXY", "other"),
                ("no_proxy", "svc"),
            ]),
            "svc",
        )
        .unwrap();
        assert!(bypass.is_none(), "no_proxy wins over NO_PROXY");
        assert!(WebProxy::from_env(&env_of(&[("HTTPS_PROXY", "ftp://x")]), "h").is_err());
    }
}
