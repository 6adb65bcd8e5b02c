//! The `--config` file: INI lines `long-option-name = value`, `#` comments.

use std::fs;
use std::io::{self, Read};
use std::path::Path;
use std::time::{Duration, Instant};

use super::opt::Opt;

/// One `key = value` line of a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub opt: Opt,
    pub value: String,
    /// 1-based line number.
    pub line: usize,
}

/// Why a config file cannot be used; `line` is 0 for the file as a whole.
#[derive(Debug)]
pub struct FileIssue {
    pub line: usize,
    pub reason: String,
    /// The reference's message for the problem (boost::program_options').
    pub reference: Option<String>,
    /// The read error, when the file cannot be read.
    pub source: Option<io::Error>,
}

/// Largest `--config` or `--settings-json` file read (they are a few KiB):
/// a device or a runaway writer cannot fill the memory.
pub const MAX_FILE_BYTES: usize = 1 << 20;

/// How long a FIFO or a device (`<(...)` gives a pipe) may take to give all
/// of its content: a FIFO nobody writes to cannot hang the start.
pub const READ_DEADLINE: Duration = Duration::from_secs(10);

/// Reads the UTF-8 text of a small file: a regular file, or a pipe or
/// device within [`READ_DEADLINE`]; at most [`MAX_FILE_BYTES`].
pub fn read_text(path: &Path) -> io::Result<String> {
    read_text_within(path, READ_DEADLINE)
}

fn read_text_within(path: &Path, limit: Duration) -> io::Result<String> {
    use std::os::unix::fs::OpenOptionsExt;
    // Non-blocking: opening a FIFO with no writer returns at once.
    let mut file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    let regular = file.metadata()?.is_file();
    let deadline = Instant::now() + limit;
    let mut data = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if !regular {
            // A FIFO that never had a writer reads as empty at once: wait
            // for data or for its writer to leave instead.
            wait_readable(&file, deadline)?;
        }
        match file.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                data.extend_from_slice(&chunk[..n]);
                if data.len() > MAX_FILE_BYTES {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("larger than {} KiB", MAX_FILE_BYTES / 1024),
                    ));
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
                ) => {}
            Err(e) => return Err(e),
        }
    }
    String::from_utf8(data)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not valid UTF-8 text"))
}

/// Waits until `file` (a pipe or device) has something to read or its
/// writer left, until `deadline`.
fn wait_readable(file: &fs::File, deadline: Instant) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let left = deadline.saturating_duration_since(Instant::now());
    let mut fds = libc::pollfd {
        fd: file.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = libc::c_int::try_from(left.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: one valid pollfd, and its count.
    let rc = unsafe { libc::poll(&mut fds, 1, ms) };
    match rc {
        0 => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "gave no end of file in time (a FIFO nobody writes to?): give the path of a file",
        )),
        n if n < 0 => {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                Ok(())
            } else {
                Err(e)
            }
        }
        _ => Ok(()),
    }
}

/// Reads and parses the file at `path`.
pub fn read(path: &Path) -> Result<Vec<Entry>, FileIssue> {
    let text = read_text(path).map_err(|e| FileIssue {
        line: 0,
        reason: "cannot be read".to_string(),
        reference: Some(format!(
            "can not read options configuration file '{}'",
            path.display()
        )),
        source: Some(e),
    })?;
    parse(&text)
}

/// Removes a `#` comment: at the start of the line or after white space (so a
/// value such as `a#b` keeps its `#`).
fn strip_comment(line: &str) -> &str {
    let bytes = line.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'#' && (i == 0 || bytes[i - 1].is_ascii_whitespace()) {
            return &line[..i];
        }
    }
    line
}

/// Removes one pair of matching surrounding quotes.
fn unquote(value: &str) -> &str {
    for q in ['"', '\''] {
        if value.len() >= 2 && value.starts_with(q) && value.ends_with(q) {
            return &value[1..value.len() - 1];
        }
    }
    value
}

/// Parses config file text. Keys are long option names (`region`,
/// `access-token`, ...); blank lines and comments are skipped; a key given
/// twice, an unknown key, or a line without `=` is an error.
pub fn parse(text: &str) -> Result<Vec<Entry>, FileIssue> {
    let mut out: Vec<Entry> = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = n + 1;
        let content = strip_comment(raw).trim();
        if content.is_empty() || content.starts_with(';') {
            continue;
        }
        let fail = |reason: String, reference: Option<String>| {
            Err(FileIssue {
                line,
                reason,
                reference,
                source: None,
            })
        };
        if content.starts_with('[') {
            return fail(format!("sections are not supported: '{content}'"), None);
        }
        let Some((key, value)) = content.split_once('=') else {
            // Never echo the line: it may be a token written without its key.
            // (The reference's message quotes it; ours stops before.)
            let reference = Some("the options configuration file contains an invalid line".into());
            let word = content.split_whitespace().next().unwrap_or("");
            return match Opt::from_file_key(word) {
                Some(_) => fail(format!("expected '{word} = value'"), reference),
                None => fail("expected 'option = value'".to_string(), reference),
            };
        };
        let key = key.trim();
        let Some(opt) = Opt::from_file_key(key) else {
            // Echo the key only when it looks like an option name: a line may
            // be a token written without its key (base64 holds '=').
            let shown =
                if key.len() <= 40 && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'-') {
                    format!(" '{key}'")
                } else {
                    String::new()
                };
            let reference = (!shown.is_empty()).then(|| format!("unrecognised option '{key}'"));
            return fail(
                format!(
                    "unknown option{shown} (keys are long option names such as 'region'; \
                     --config, --export-default-settings, --help and --version are command-line \
                     only)"
                ),
                reference,
            );
        };
        if let Some(first) = out.iter().find(|e| e.opt == opt && !opt.is_repeatable()) {
            return fail(
                format!("'{key}' is already set on line {}", first.line),
                Some(format!("option '{key}' cannot be specified more than once")),
            );
        }
        out.push(Entry {
            opt,
            value: unquote(value.trim()).to_string(),
            line,
        });
    }
    Ok(out)
}

/// Whether users other than the owner may read the file (Unix permission bits).
#[cfg(unix)]
pub fn readable_by_others(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o044 != 0)
        .unwrap_or(false)
}

/// Whether users other than the owner may read the file (unknown: no).
#[cfg(not(unix))]
pub fn readable_by_others(_path: &Path) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_files_pipes_and_devices_are_read_within_bounds() {
        let dir = std::env::temp_dir().join(format!("localproxy-read-text-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let plain = dir.join("plain.ini");
        fs::write(&plain, "region = us-east-1\n").unwrap();
        assert_eq!(read_text(&plain).unwrap(), "region = us-east-1\n");
        // A FIFO nobody writes to: an error at the deadline, not a hang.
        let fifo = dir.join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let started = Instant::now();
        let e = read_text_within(&fifo, Duration::from_millis(300)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
        assert!(started.elapsed() < Duration::from_secs(5));
        // A FIFO with a writer (as `<(...)` gives): its whole content.
        let writer = {
            let fifo = fifo.clone();
            std::thread::spawn(move || fs::write(fifo, "{}\n"))
        };
        assert_eq!(
            read_text_within(&fifo, Duration::from_secs(20)).unwrap(),
            "{}\n"
        );
        writer.join().unwrap().unwrap();
        // A device that never ends.
        let e = read_text(Path::new("/dev/zero")).unwrap_err();
        assert!(e.to_string().contains("larger than"), "{e}");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn reads_the_reference_example() {
        let got = parse(
            "# tunnel\ncapath = /opt/rootca\nregion = us-west-2\n\
             local-bind-address = ::1\n  source-listen-port=6000  # fixed port\n",
        )
        .unwrap();
        let pairs: Vec<_> = got
            .iter()
            .map(|e| (e.opt, e.value.as_str(), e.line))
            .collect();
        assert_eq!(
            pairs,
            [
                (Opt::Capath, "/opt/rootca", 2),
                (Opt::Region, "us-west-2", 3),
                (Opt::LocalBindAddress, "::1", 4),
                (Opt::SourceListenPort, "6000", 5),
            ]
        );
    }

    #[test]
    fn quotes_and_hashes_inside_values() {
        let got = parse("access-token = \"a b\"\nclient-token = x#y\n").unwrap();
        assert_eq!(got[0].value, "a b");
        assert_eq!(got[1].value, "x#y");
    }

    #[test]
    fn bad_lines_name_the_line_and_key() {
        let e = parse("region = a\nbogus = 1\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.reason.contains("'bogus'"));
        let e = parse("config = other.ini").unwrap_err();
        assert!(e.reason.contains("'config'"));
        let e = parse("\nregion\n").unwrap_err();
        assert_eq!(e.line, 2);
        let e = parse("region = a\nregion = b\n").unwrap_err();
        assert!(e.reason.contains("line 1"));
        assert!(parse("[proxy]\n").is_err());
    }

    #[test]
    fn a_line_without_equals_does_not_echo_the_whole_line() {
        let e = parse("AQGAAXsecret token-ish value").unwrap_err();
        assert!(!e.reason.contains("AQGA"));
        let e = parse("AQGAAXsecrettokenvalue==").unwrap_err();
        assert!(!e.reason.contains("AQGA"));
        let e = parse("region us-east-1").unwrap_err();
        assert!(e.reason.contains("'region = value'"));
    }
}
