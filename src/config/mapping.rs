//! Service mappings: `-s`/`-d` values, `--config-dir` files, ports, `host:port`.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use super::{DestinationAddr, Mode, ServiceMapping, Target};

/// Why one item of a mapping is not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingIssue {
    /// The item at fault, as written.
    pub item: String,
    pub reason: String,
    /// The reference's message for the item, when it refuses it too.
    pub reference: Option<String>,
}

impl MappingIssue {
    fn new(item: &str, reason: String, reference: Option<String>) -> MappingIssue {
        MappingIssue {
            item: item.to_string(),
            reason,
            reference,
        }
    }

    /// An issue with the target of `item`: the reference's message comes
    /// from its own checks of the target.
    fn target(item: &str, target: &str, reason: String) -> MappingIssue {
        let reference = reference_target_check(target.trim()).map(str::to_string);
        MappingIssue::new(item, reason, reference)
    }
}

/// The reference's message for a port it refuses (its `validate_port_string`).
fn reference_port_check(port: &str) -> Option<&'static str> {
    if port.is_empty() {
        Some("Port cannot be empty")
    } else if !port.bytes().all(|b| b.is_ascii_digit()) {
        Some("Port must contain only digits")
    } else {
        match port.parse::<i32>() {
            Err(_) => Some("Port value is too large"),
            Ok(p) if !(1..=65_535).contains(&p) => Some("Port must be between 1 and 65535"),
            Ok(_) => None,
        }
    }
}

/// The reference's message for a mapping target it refuses (its
/// `validate_destination_endpoint`), `None` when it accepts the target.
fn reference_target_check(target: &str) -> Option<&'static str> {
    if target.is_empty() {
        return Some("Endpoint cannot be empty");
    }
    if target.bytes().all(|b| b.is_ascii_digit()) {
        return reference_port_check(target);
    }
    if target.contains('/') {
        return None;
    }
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b"._:[]-".contains(&b);
    if target.len() > 253 {
        return Some("Bind address exceeds maximum allowed length");
    }
    if !target.bytes().all(allowed) {
        return Some("Bind address contains invalid characters");
    }
    let last_colon = target.rfind(':')?;
    if target.rfind(']').is_some_and(|b| b > last_colon) {
        return None;
    }
    match &target[last_colon + 1..] {
        "" => None,
        port => reference_port_check(port),
    }
}

/// A mapping and where it was written (for duplicate-id messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub mapping: ServiceMapping,
    pub location: String,
}

/// Why a `--config-dir` cannot be used.
#[derive(Debug)]
pub enum DirIssue {
    /// The directory or one of its files cannot be read.
    Unreadable {
        path: PathBuf,
        reason: String,
        source: Option<std::io::Error>,
    },
}

/// Deepest directory nesting read below a `--config-dir` (guards symlink loops).
const MAX_DIR_DEPTH: usize = 16;

/// A port in 1..=65535.
pub fn parse_port(text: &str) -> Result<u16, String> {
    let text = text.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("'{text}' is not a port number (1-65535)"));
    }
    match text.parse::<u32>() {
        Ok(p) if (1..=65_535).contains(&p) => Ok(p as u16),
        _ => Err(format!("port {text} is outside 1-65535")),
    }
}

/// Why a `host[:port]` is not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPortError {
    /// Nothing before the port (the whole text).
    EmptyHost(String),
    /// The port is not a number in 1..=65535 (the port text, and why).
    BadPort { port: String, reason: String },
    /// Any other problem, in words that quote the text.
    Malformed(String),
}

impl std::fmt::Display for HostPortError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostPortError::EmptyHost(text) => write!(f, "'{text}': empty host"),
            HostPortError::BadPort { reason, .. } => f.write_str(reason),
            HostPortError::Malformed(why) => f.write_str(why),
        }
    }
}

/// `host:port`, `[v6]:port`, or `host` alone when `default_port` is given.
/// The host is returned without brackets. The one parser of `host:port` in
/// the crate (the endpoint, mappings, region settings, the web proxy).
pub fn parse_host_port(
    text: &str,
    default_port: Option<u16>,
) -> Result<(String, u16), HostPortError> {
    let text = text.trim();
    let port_of = |port: &str| {
        parse_port(port).map_err(|reason| HostPortError::BadPort {
            port: port.to_string(),
            reason,
        })
    };
    let malformed = |why: String| Err(HostPortError::Malformed(why));
    if let Some(rest) = text.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            return malformed(format!("'{text}': missing ']' after the IPv6 address"));
        };
        if host.is_empty() {
            return Err(HostPortError::EmptyHost(text.to_string()));
        }
        let port = match after.strip_prefix(':') {
            Some(port) => port_of(port)?,
            None if after.is_empty() => match default_port {
                Some(p) => p,
                None => return malformed(format!("'{text}': a port is needed ([address]:port)")),
            },
            None => return malformed(format!("'{text}': expected ':port' after ']'")),
        };
        return Ok((host.to_string(), port));
    }
    let (host, port) = match text.rsplit_once(':') {
        Some((host, _)) if host.contains(':') => {
            return malformed(format!(
                "'{text}': write an IPv6 address in brackets, as [address]:port"
            ))
        }
        Some((host, port)) => (host, port_of(port)?),
        None => match default_port {
            Some(p) => (text, p),
            None => return malformed(format!("'{text}': expected host:port")),
        },
    };
    if host.is_empty() {
        return Err(HostPortError::EmptyHost(text.to_string()));
    }
    if host.chars().any(|c| c.is_whitespace() || c == '/') {
        return malformed(format!("'{text}': '{host}' is not a host name or address"));
    }
    Ok((host.to_string(), port))
}

/// A destination: `port` (on localhost), `host:port`, `[v6]:port`, or a Unix
/// socket path (any value containing `/`).
pub fn parse_destination(text: &str) -> Result<DestinationAddr, String> {
    let text = text.trim();
    if text.contains('/') {
        return Ok(DestinationAddr::Unix(PathBuf::from(text)));
    }
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(DestinationAddr::Tcp {
            host: "localhost".to_string(),
            port: parse_port(text)?,
        });
    }
    let (host, port) = parse_host_port(text, None).map_err(|e| e.to_string())?;
    Ok(DestinationAddr::Tcp { host, port })
}

/// The target of one mapping value in `mode`.
pub fn parse_target(text: &str, mode: Mode) -> Result<Target, String> {
    match mode {
        Mode::Source => parse_port(text).map(Target::Listen),
        Mode::Destination => parse_destination(text).map(Target::Connect),
    }
}

/// Splits `ID=value` (the id must not contain `/`, so a socket path with `=`
/// stays a value). `None` when the item has no id.
fn split_id(item: &str) -> Option<(&str, &str)> {
    item.split_once('=').filter(|(id, _)| !id.contains('/'))
}

/// Checks a service id: non-empty, no white space, no `,`.
fn check_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        Err("empty service id before '='".to_string())
    } else if id.chars().any(|c| c.is_whitespace() || c == ',') {
        Err(format!("service id '{id}' contains white space or ','"))
    } else {
        Ok(())
    }
}

/// An `-s`/`-d` value: one unnamed target (`5555`, `22`, `host:port`, path)
/// or `ID=target,ID=target,...`.
pub fn parse_mappings(value: &str, mode: Mode) -> Result<Vec<ServiceMapping>, MappingIssue> {
    let items: Vec<&str> = value.split(',').map(str::trim).collect();
    if items.len() == 1 && split_id(items[0]).is_none() {
        let target = parse_target(items[0], mode)
            .map_err(|r| MappingIssue::target(items[0], items[0], r))?;
        return Ok(vec![ServiceMapping { id: None, target }]);
    }
    let mut out = Vec::with_capacity(items.len());
    // Empty items (`A=1,,B=2`, a trailing ',') are skipped, as the reference does.
    for item in items.into_iter().filter(|i| !i.is_empty()) {
        let Some((id, target)) = split_id(item) else {
            return Err(MappingIssue::new(
                item,
                "several services need ids: write ID=value for each".to_string(),
                Some("Wrong format for the port mappings! Example: SSH1=5555,SSH2=6666.".into()),
            ));
        };
        let id = id.trim();
        let wrong_format = || {
            Some(format!(
                "Wrong format for the port mappings: {item} .Example: SSH1=5555"
            ))
        };
        check_id(id)
            .map_err(|r| MappingIssue::new(item, r, id.is_empty().then(wrong_format).flatten()))?;
        let target = parse_target(target, mode).map_err(|r| {
            let mut issue = MappingIssue::target(item, target, r);
            if target.trim().is_empty() {
                issue.reference = wrong_format();
            }
            issue
        })?;
        out.push(ServiceMapping {
            id: Some(id.to_string()),
            target,
        });
    }
    Ok(out)
}

/// The first duplicate service id of `mappings`, with both locations.
pub fn find_duplicate(mappings: &[Located]) -> Option<(String, String, String)> {
    let mut seen: HashMap<&str, &str> = HashMap::new();
    for m in mappings {
        if let Some(id) = m.mapping.id.as_deref() {
            if let Some(first) = seen.insert(id, &m.location) {
                return Some((id.to_string(), first.to_string(), m.location.clone()));
            }
        }
    }
    None
}

/// What a `--config-dir` gave: its mappings, and what was skipped and why.
#[derive(Debug, Default)]
pub struct DirMappings {
    pub found: Vec<Located>,
    /// One line per skipped file or entry, naming it (for warnings).
    pub skipped: Vec<String>,
}

/// Reads every file below `dir` (recursively, in name order) as the
/// reference does, as INI: `ID = port|host:port|path` lines at the top level,
/// blank lines, `#` and `;` comments. Like the reference, it skips (with a
/// note in [`DirMappings::skipped`]) rather than refuses what is not its
/// business: a file that is not INI (a README, a YAML file) or cannot be
/// read, and keys inside `[sections]`. An entry whose id or target is invalid
/// is skipped too, with the reason: the reference would only fail on it if
/// the tunnel has that service. Only the directory itself being unreadable
/// is an error.
pub fn read_config_dir(dir: &Path, mode: Mode) -> Result<DirMappings, DirIssue> {
    let mut files = Vec::new();
    collect_files(dir, 0, &mut files)?;
    let mut out = DirMappings::default();
    for (file, len) in files {
        if len > super::file::MAX_FILE_BYTES as u64 {
            out.skipped.push(format!(
                "{}: larger than {} KiB, not a configuration file; skipped",
                file.display(),
                super::file::MAX_FILE_BYTES / 1024
            ));
            continue;
        }
        let text = match fs::read(&file) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => text,
                Err(_) => {
                    out.skipped.push(format!(
                        "{}: not a text file in .ini format; skipped",
                        file.display()
                    ));
                    continue;
                }
            },
            Err(e) => {
                out.skipped
                    .push(format!("{}: cannot be read ({e}); skipped", file.display()));
                continue;
            }
        };
        match read_ini_mappings(&file, &text, mode) {
            Ok((found, skipped)) => {
                out.found.extend(found);
                out.skipped.extend(skipped);
            }
            Err((line, what)) => out.skipped.push(format!(
                "{}, line {line}: '{what}' is not an .ini line (ID = value); \
                 the file is skipped",
                file.display()
            )),
        }
    }
    Ok(out)
}

/// The top-level `ID = value` entries of one INI file, and the entries
/// skipped (with why); `Err((line, text))` when a line is not INI.
#[allow(clippy::type_complexity)]
fn read_ini_mappings(
    file: &Path,
    text: &str,
    mode: Mode,
) -> Result<(Vec<Located>, Vec<String>), (usize, String)> {
    let mut found = Vec::new();
    let mut skipped = Vec::new();
    let mut section: Option<&str> = None;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let at = || format!("{}, line {}", file.display(), n + 1);
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = Some(name);
            continue;
        }
        let Some((id, value)) = split_id(line) else {
            return Err((n + 1, line.to_string()));
        };
        let id = id.trim();
        if let Some(section) = section {
            skipped.push(format!(
                "{}: '{id}' is in section [{section}], where service ids are not read; skipped",
                at()
            ));
            continue;
        }
        // A source's 0 asks for a free port, as the reference reads it.
        let target = check_id(id).and_then(|()| match mode {
            Mode::Source if value.trim() == "0" => Ok(Target::Listen(0)),
            _ => parse_target(value, mode),
        });
        match target {
            Ok(target) => found.push(Located {
                mapping: ServiceMapping {
                    id: Some(id.to_string()),
                    target,
                },
                location: at(),
            }),
            Err(reason) => skipped.push(format!("{}: '{line}': {reason}; skipped", at())),
        }
    }
    Ok((found, skipped))
}

/// Collects the regular files below `dir` with their sizes.
fn collect_files(dir: &Path, depth: usize, out: &mut Vec<(PathBuf, u64)>) -> Result<(), DirIssue> {
    let unreadable = |path: &Path, e: std::io::Error| DirIssue::Unreadable {
        path: path.to_path_buf(),
        reason: "cannot be read".to_string(),
        source: Some(e),
    };
    if depth > MAX_DIR_DEPTH {
        return Err(DirIssue::Unreadable {
            path: dir.to_path_buf(),
            reason: format!("nested more than {MAX_DIR_DEPTH} directories deep"),
            source: None,
        });
    }
    let mut entries = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| unreadable(dir, e))? {
        entries.push(entry.map_err(|e| unreadable(dir, e))?.path());
    }
    entries.sort();
    for path in entries {
        // `metadata` follows symbolic links, so linked files and directories count.
        let meta = fs::metadata(&path).map_err(|e| unreadable(&path, e))?;
        if meta.is_dir() {
            collect_files(&path, depth + 1, out)?;
        } else if meta.is_file() {
            out.push((path, meta.len()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(host: &str, port: u16) -> Target {
        Target::Connect(DestinationAddr::Tcp {
            host: host.into(),
            port,
        })
    }

    #[test]
    fn ports_are_1_to_65535() {
        assert_eq!(parse_port("5555"), Ok(5555));
        assert_eq!(parse_port(" 65535 "), Ok(65535));
        assert!(parse_port("0").unwrap_err().contains("outside 1-65535"));
        assert!(parse_port("65536").unwrap_err().contains("outside"));
        assert!(parse_port("99999999999").unwrap_err().contains("outside"));
        assert!(parse_port("-1").unwrap_err().contains("not a port"));
        assert!(parse_port("ssh").unwrap_err().contains("not a port"));
        assert!(parse_port("").is_err());
    }

    #[test]
    fn host_port_accepts_names_v4_and_bracketed_v6() {
        assert_eq!(parse_host_port("h:8443", None), Ok(("h".into(), 8443)));
        assert_eq!(
            parse_host_port("10.0.0.1:80", None),
            Ok(("10.0.0.1".into(), 80))
        );
        assert_eq!(parse_host_port("[::1]:22", None), Ok(("::1".into(), 22)));
        assert_eq!(parse_host_port("[::1]", Some(443)), Ok(("::1".into(), 443)));
        assert_eq!(parse_host_port("h", Some(443)), Ok(("h".into(), 443)));
        assert!(parse_host_port("h", None).is_err());
        assert!(parse_host_port("::1:22", None)
            .unwrap_err()
            .to_string()
            .contains("brackets"));
        assert!(parse_host_port("[::1:22", None).is_err());
        assert!(parse_host_port(":22", None)
            .unwrap_err()
            .to_string()
            .contains("empty"));
        assert!(parse_host_port("h:0", None).is_err());
    }

    #[test]
    fn source_values_are_ports() {
        assert_eq!(
            parse_mappings("5555", Mode::Source),
            Ok(vec![ServiceMapping {
                id: None,
                target: Target::Listen(5555)
            }])
        );
        let m = parse_mappings("SSH1=5555, SSH2 = 6666", Mode::Source).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[1].id.as_deref(), Some("SSH2"));
        assert_eq!(m[1].target, Target::Listen(6666));
        assert!(parse_mappings("0", Mode::Source).is_err());
        assert!(parse_mappings("SSH1=localhost:22", Mode::Source).is_err());
    }

    #[test]
    fn destination_values_are_addresses_or_socket_paths() {
        let m = parse_mappings(
            "SSH1=22,WEB=10.0.0.1:80,APP=/run/app.sock",
            Mode::Destination,
        )
        .unwrap();
        assert_eq!(m[0].target, tcp("localhost", 22));
        assert_eq!(m[1].target, tcp("10.0.0.1", 80));
        assert_eq!(
            m[2].target,
            Target::Connect(DestinationAddr::Unix("/run/app.sock".into()))
        );
        let one = parse_mappings("host:2222", Mode::Destination).unwrap();
        assert_eq!(one[0].id, None);
        assert_eq!(one[0].target, tcp("host", 2222));
        let path = parse_mappings("/tmp/a=b.sock", Mode::Destination).unwrap();
        assert_eq!(path[0].id, None);
        assert_eq!(
            path[0].target,
            Target::Connect(DestinationAddr::Unix("/tmp/a=b.sock".into()))
        );
    }

    #[test]
    fn several_values_all_need_ids() {
        let e = parse_mappings("5555,SSH=6666", Mode::Source).unwrap_err();
        assert_eq!(e.item, "5555");
        assert!(e.reason.contains("ID=value"));
        assert_eq!(
            e.reference.as_deref(),
            Some("Wrong format for the port mappings! Example: SSH1=5555,SSH2=6666.")
        );
        assert_eq!(parse_mappings("A=1,,B=2,", Mode::Source).unwrap().len(), 2);
        let e = parse_mappings("=1", Mode::Source).unwrap_err();
        assert!(e.reason.contains("empty"));
        assert_eq!(
            e.reference.as_deref(),
            Some("Wrong format for the port mappings: =1 .Example: SSH1=5555")
        );
        let e = parse_mappings("SSH1=", Mode::Source).unwrap_err();
        assert_eq!(
            e.reference.as_deref(),
            Some("Wrong format for the port mappings: SSH1= .Example: SSH1=5555")
        );
    }

    #[test]
    fn refused_targets_carry_the_reference_message() {
        let reference = |v: &str, mode| parse_mappings(v, mode).unwrap_err().reference;
        let port = |v: &str| reference(v, Mode::Source);
        assert_eq!(
            port("0").as_deref(),
            Some("Port must be between 1 and 65535")
        );
        assert_eq!(
            port("A=65536").as_deref(),
            Some("Port must be between 1 and 65535")
        );
        assert_eq!(
            port("99999999999").as_deref(),
            Some("Port value is too large")
        );
        // The reference takes a name as a target; we refuse it without its words.
        assert_eq!(port("A=ssh"), None);
        let dst = |v: &str| reference(v, Mode::Destination);
        assert_eq!(
            dst("host:0").as_deref(),
            Some("Port must be between 1 and 65535")
        );
        assert_eq!(
            dst("host:x").as_deref(),
            Some("Port must contain only digits")
        );
        assert_eq!(
            dst("A=ho st:22").as_deref(),
            Some("Bind address contains invalid characters")
        );
    }

    #[test]
    fn duplicates_are_found_with_both_places() {
        let at = |id: &str, loc: &str| Located {
            mapping: ServiceMapping {
                id: Some(id.into()),
                target: Target::Listen(1),
            },
            location: loc.into(),
        };
        assert_eq!(find_duplicate(&[at("A", "x"), at("B", "y")]), None);
        assert_eq!(
            find_duplicate(&[at("A", "x"), at("B", "y"), at("A", "z")]),
            Some(("A".into(), "x".into(), "z".into()))
        );
    }

    #[test]
    fn config_dir_is_read_recursively_in_name_order() {
        let dir = std::env::temp_dir().join(format!("lp-cfgdir-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("sub")).unwrap();
        fs::write(dir.join("a.ini"), "# comment\n\nSSH1 = 22\n").unwrap();
        fs::write(
            dir.join("sub/b.ini"),
            "WEB=10.0.0.1:80\nAPP = /run/app.sock\n",
        )
        .unwrap();
        let got = read_config_dir(&dir, Mode::Destination).unwrap();
        assert!(got.skipped.is_empty(), "{:?}", got.skipped);
        let got = got.found;
        let ids: Vec<_> = got.iter().map(|l| l.mapping.id.clone().unwrap()).collect();
        assert_eq!(ids, ["SSH1", "WEB", "APP"]);
        assert_eq!(got[0].mapping.target, tcp("localhost", 22));
        assert!(got[1].location.ends_with("b.ini, line 1"));
        fs::remove_dir_all(&dir).unwrap();
        assert!(matches!(
            read_config_dir(&dir, Mode::Source),
            Err(DirIssue::Unreadable { .. })
        ));
    }

    #[test]
    fn config_dir_skips_what_is_not_ini_as_the_reference_does() {
        let dir = std::env::temp_dir().join(format!("lp-cfgskip-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        // Not INI at all: the whole file is skipped, even its good lines.
        fs::write(
            dir.join("README"),
            "SSH2 = 2222
This is a readme
",
        )
        .unwrap();
        fs::write(dir.join("app.yaml"), "server:\n  port: 80\n").unwrap();
        fs::write(dir.join("blob.bin"), [0xff, 0xfe, 0x00]).unwrap();
        // INI: top-level keys are read; keys in sections and invalid
        // entries are skipped one by one.
        fs::write(
            dir.join("m.ini"),
            "SSH1 = 5555\nRDP = notaport\nBIG = 99999\n[db]\nDB = 5432\n",
        )
        .unwrap();
        let got = read_config_dir(&dir, Mode::Source).unwrap();
        let ids: Vec<_> = got
            .found
            .iter()
            .map(|l| l.mapping.id.clone().unwrap())
            .collect();
        assert_eq!(ids, ["SSH1"]);
        assert_eq!(got.found[0].mapping.target, Target::Listen(5555));
        let skipped = got.skipped.join("\n");
        for expected in [
            "README, line 2: 'This is a readme' is not an .ini line",
            "app.yaml, line 1: 'server:'",
            "blob.bin: not a text file",
            "m.ini, line 2: 'RDP = notaport'",
            "m.ini, line 3: 'BIG = 99999': port 99999 is outside 1-65535",
            "m.ini, line 5: 'DB' is in section [db]",
        ] {
            assert!(
                skipped.contains(expected),
                "{expected:?} not in:\n{skipped}"
            );
        }
        assert_eq!(got.skipped.len(), 6, "{skipped}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
