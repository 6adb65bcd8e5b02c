//! The client-token file (`--client-token-file`): the client token kept
//! across restarts, read from the file or, when there is none, generated and
//! written to a new file private to this user.
//!
//! Creation is atomic: the token goes to a new file of a random name in the
//! same directory (`O_CREAT|O_EXCL|O_NOFOLLOW`, mode 0600), is flushed to
//! disk, then linked to its name, which fails if the name was taken in the
//! meantime (then that file is read instead); where hard links are not
//! supported it is renamed. A reader never sees a half-written file. A
//! symbolic link, a file others may read or change, and a file of another
//! user are refused. The token never appears in a message.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::protocol;
use crate::secret::{self, Secret};

/// Longest file read: a token has at most 128 characters.
const MAX_FILE_SIZE: u64 = 1024;

/// Why the client-token file cannot be used. `Display` names the file and
/// what to do; it never shows the file's content.
#[derive(Debug)]
pub struct TokenFileError {
    pub path: PathBuf,
    pub kind: TokenFileProblem,
}

/// What is wrong with the client-token file.
#[derive(Debug)]
pub enum TokenFileProblem {
    /// The path is a symbolic link.
    Symlink,
    /// Not a regular file (a directory, a FIFO...).
    NotAFile,
    /// Group or others have permissions on it (the mode).
    TooOpen(u32),
    /// Owned by another user (its uid, ours).
    NotOwner { owner: u32, me: u32 },
    /// Empty, or only white space.
    Empty,
    /// Not a valid client token (why, without the content).
    Invalid(String),
    /// The path has no file name.
    NoFileName,
    /// The system's random generator failed.
    Random(io::Error),
    /// An I/O operation failed.
    Io {
        during: &'static str,
        source: io::Error,
    },
}

impl fmt::Display for TokenFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.path.display();
        match &self.kind {
            TokenFileProblem::Symlink => write!(
                f,
                "client token file {p} is a symbolic link: refused (a link could send the \
                 token elsewhere); give the path of the file itself"
            ),
            TokenFileProblem::NotAFile => write!(
                f,
                "client token file {p} is not a regular file: give the path of a file, or of \
                 one to be created"
            ),
            TokenFileProblem::TooOpen(mode) => write!(
                f,
                "client token file {p} has mode {:04o}: other users may read or change it; \
                 restrict it with 'chmod 600 {p}'",
                mode & 0o7777
            ),
            TokenFileProblem::NotOwner { owner, me } => write!(
                f,
                "client token file {p} belongs to user id {owner}, not to this user ({me}): \
                 give it to this user ('chown'), or delete it to have a new token generated"
            ),
            TokenFileProblem::Empty => write!(
                f,
                "client token file {p} is empty: delete it to have a new token generated, or \
                 write a token in it"
            ),
            TokenFileProblem::Invalid(why) => write!(
                f,
                "client token file {p} does not hold a client token (^[a-zA-Z0-9-]{{32,128}}$, \
                 one line): {why}; delete it to have a new token generated"
            ),
            TokenFileProblem::NoFileName => {
                write!(f, "client token file {p}: the path names no file")
            }
            TokenFileProblem::Random(e) => {
                write!(f, "client token file {p}: cannot generate a token: {e}")
            }
            TokenFileProblem::Io { during, .. } => {
                write!(f, "client token file {p}: cannot {during}")
            }
        }
    }
}

impl std::error::Error for TokenFileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            TokenFileProblem::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The client token in the file at `path`, created with a new token when
/// there is no file.
pub fn load_or_create(path: &Path) -> Result<Secret, TokenFileError> {
    match read_existing(path)? {
        Some(token) => Ok(token),
        None => create(path),
    }
}

fn fail(path: &Path, kind: TokenFileProblem) -> TokenFileError {
    TokenFileError {
        path: path.to_path_buf(),
        kind,
    }
}

fn io_fail<'a>(path: &'a Path, during: &'static str) -> impl Fn(io::Error) -> TokenFileError + 'a {
    move |source| fail(path, TokenFileProblem::Io { during, source })
}

/// The effective user id of this process.
fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Reads the token; `None` when there is no file at `path`.
fn read_existing(path: &Path) -> Result<Option<Secret>, TokenFileError> {
    // O_NOFOLLOW: a symbolic link (even a dangling one) fails with ELOOP.
    // O_NONBLOCK: a FIFO does not block the open; it is refused below.
    let opened = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path);
    let file = match opened {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(fail(path, TokenFileProblem::Symlink))
        }
        Err(e) => return Err(io_fail(path, "open it")(e)),
    };
    let meta = file.metadata().map_err(io_fail(path, "read its status"))?;
    if !meta.is_file() {
        return Err(fail(path, TokenFileProblem::NotAFile));
    }
    let me = euid();
    if meta.uid() != me {
        return Err(fail(
            path,
            TokenFileProblem::NotOwner {
                owner: meta.uid(),
                me,
            },
        ));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(fail(path, TokenFileProblem::TooOpen(meta.mode())));
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(io_fail(path, "read it"))?;
    if bytes.len() as u64 > MAX_FILE_SIZE {
        return Err(fail(
            path,
            TokenFileProblem::Invalid(format!("it is longer than {MAX_FILE_SIZE} bytes")),
        ));
    }
    let Ok(text) = String::from_utf8(bytes) else {
        return Err(fail(
            path,
            TokenFileProblem::Invalid("it is not text".into()),
        ));
    };
    let token = text.trim_end();
    if token.is_empty() {
        return Err(fail(path, TokenFileProblem::Empty));
    }
    check_token(token).map_err(|why| fail(path, TokenFileProblem::Invalid(why)))?;
    Ok(Some(Secret::new(token)))
}

/// Why `token` is not a client token, in words that do not show it.
pub fn check_token(token: &str) -> Result<(), String> {
    if protocol::is_valid_client_token(token) {
        return Ok(());
    }
    let n = token.chars().count();
    if token.lines().count() > 1 {
        Err("it holds more than one line".into())
    } else if !(protocol::CLIENT_TOKEN_MIN_LEN..=protocol::CLIENT_TOKEN_MAX_LEN).contains(&n) {
        Err(format!(
            "it is {n} characters long, not {}-{}",
            protocol::CLIENT_TOKEN_MIN_LEN,
            protocol::CLIENT_TOKEN_MAX_LEN
        ))
    } else {
        Err("it holds characters other than letters, digits and '-'".into())
    }
}

/// Writes a new token to a new file at `path`.
fn create(path: &Path) -> Result<Secret, TokenFileError> {
    let Some(name) = path.file_name() else {
        return Err(fail(path, TokenFileProblem::NoFileName));
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let random = |e| fail(path, TokenFileProblem::Random(e));
    let token = secret::new_client_token().map_err(random)?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        secret::random_hex(8).map_err(random)?
    ));
    let written = write_new(&tmp, &token).and_then(|()| publish(&tmp, path));
    // The temporary name is gone after a rename, and must go after a link.
    let _ = fs::remove_file(&tmp);
    match written.map_err(|(during, e)| io_fail(path, during)(e))? {
        Published::Ours => {}
        // Another process created the file first: use its token.
        Published::Taken => {
            return read_existing(path)?
                .ok_or_else(|| io_fail(path, "read it")(io::Error::from(io::ErrorKind::NotFound)))
        }
    }
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(io_fail(path, "flush its directory to disk"))?;
    Ok(token)
}

/// The new file `tmp` holding `token` and a newline, flushed to disk.
fn write_new(tmp: &Path, token: &Secret) -> Result<(), (&'static str, io::Error)> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(tmp)
        .map_err(|e| ("create it (in its directory)", e))?;
    // The umask may have narrowed the mode; make it exactly 0600.
    file.set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(|e| ("set its mode", e))?;
    file.write_all(format!("{}\n", token.expose()).as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| ("write it", e))
}

enum Published {
    Ours,
    /// A file appeared at the name meanwhile; ours was not put there.
    Taken,
}

/// Gives `tmp` the name `path` unless a file took it meanwhile.
fn publish(tmp: &Path, path: &Path) -> Result<Published, (&'static str, io::Error)> {
    match fs::hard_link(tmp, path) {
        Ok(()) => Ok(Published::Ours),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(Published::Taken),
        // A file system without hard links: rename (replaces a file that
        // appeared in the meantime, a race only two proxies sharing the
        // file could run).
        Err(_) => fs::rename(tmp, path)
            .map(|()| Published::Ours)
            .map_err(|e| ("give it its name", e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let dir =
                std::env::temp_dir().join(format!("lp-tokenfile-{}-{name}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }
        fn write(&self, name: &str, text: &str, mode: u32) -> PathBuf {
            let p = self.0.join(name);
            fs::write(&p, text).unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
            p
        }
        fn entries(&self) -> usize {
            fs::read_dir(&self.0).unwrap().count()
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    const TOKEN: &str = "0123456789abcdef-SECRET-0123456789abcdef";

    fn problem(path: &Path) -> (TokenFileProblem, String) {
        let e = load_or_create(path).unwrap_err();
        let text = e.to_string();
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(!text.contains("SECRET"), "token shown: {text}");
        (e.kind, text)
    }

    #[test]
    fn creates_a_private_file_then_reuses_it() {
        let dir = Scratch::new("create");
        let path = dir.0.join("client-token");
        let first = load_or_create(&path).unwrap();
        assert!(protocol::is_valid_client_token(first.expose()));
        assert_eq!(first.expose().len(), 64);
        let meta = fs::symlink_metadata(&path).unwrap();
        assert!(meta.is_file());
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert_eq!(meta.uid(), euid());
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            format!("{}\n", first.expose())
        );
        // No temporary file left behind.
        assert_eq!(dir.entries(), 1);
        // The same token on every later start.
        assert_eq!(load_or_create(&path).unwrap(), first);
        assert_eq!(load_or_create(&path).unwrap(), first);
    }

    #[test]
    fn reads_a_token_written_by_hand_without_its_newline() {
        let dir = Scratch::new("read");
        let path = dir.write("t", &format!("{TOKEN}\r\n"), 0o600);
        assert_eq!(load_or_create(&path).unwrap().expose(), TOKEN);
        let path = dir.write("u", TOKEN, 0o400);
        assert_eq!(load_or_create(&path).unwrap().expose(), TOKEN);
    }

    #[test]
    fn a_symbolic_link_is_refused_dangling_or_not() {
        let dir = Scratch::new("link");
        let target = dir.write("target", TOKEN, 0o600);
        let link = dir.0.join("link");
        symlink(&target, &link).unwrap();
        let (kind, text) = problem(&link);
        assert!(matches!(kind, TokenFileProblem::Symlink), "{text}");
        assert!(text.contains("symbolic link"));
        let dangling = dir.0.join("dangling");
        symlink(dir.0.join("nowhere"), &dangling).unwrap();
        let (kind, _) = problem(&dangling);
        assert!(matches!(kind, TokenFileProblem::Symlink));
        // Nothing was created through the link.
        assert!(!dir.0.join("nowhere").exists());
    }

    #[test]
    fn a_file_others_may_read_is_refused_with_the_fix() {
        let dir = Scratch::new("mode");
        for mode in [0o644, 0o640, 0o604, 0o620] {
            let path = dir.write("t", TOKEN, mode);
            let (kind, text) = problem(&path);
            assert!(matches!(kind, TokenFileProblem::TooOpen(_)), "{text}");
            assert!(
                text.contains(&format!("chmod 600 {}", path.display())),
                "{text}"
            );
            assert!(text.contains(&format!("{mode:04o}")), "{text}");
        }
    }

    #[test]
    fn bad_content_is_refused_without_showing_it() {
        let dir = Scratch::new("content");
        let cases = [
            ("", "empty"),
            ("\n  \n", "empty"),
            ("SECRET-too-short", "16 characters long"),
            (
                "0123456789abcdef_SECRET_0123456789abcdef",
                "characters other than",
            ),
            (
                "0123456789abcdef-SECRET-0123456789abcdef\nmore",
                "more than one line",
            ),
        ];
        for (content, why) in cases {
            let path = dir.write("t", content, 0o600);
            let (_, text) = problem(&path);
            assert!(text.contains(why), "{content:?}: {text}");
        }
        let path = dir.write("big", &"a".repeat(2000), 0o600);
        assert!(problem(&path).1.contains("longer than"));
        let path = dir.0.join("bin");
        fs::write(&path, [0xff, 0xfe, 0x00]).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(problem(&path).1.contains("not text"));
    }

    #[test]
    fn a_directory_or_a_missing_directory_is_a_clear_error() {
        let dir = Scratch::new("dir");
        fs::create_dir(dir.0.join("sub")).unwrap();
        fs::set_permissions(dir.0.join("sub"), fs::Permissions::from_mode(0o700)).unwrap();
        let (kind, _) = problem(&dir.0.join("sub"));
        assert!(matches!(kind, TokenFileProblem::NotAFile));
        let (kind, text) = problem(&dir.0.join("missing/client-token"));
        assert!(matches!(kind, TokenFileProblem::Io { .. }), "{text}");
        assert!(text.contains("cannot create it"), "{text}");
    }

    #[test]
    fn a_file_that_appears_meanwhile_wins() {
        let dir = Scratch::new("race");
        let path = dir.write("t", TOKEN, 0o600);
        let tmp = dir.0.join(".t.x.tmp");
        write_new(&tmp, &Secret::new("f".repeat(64))).unwrap();
        assert!(matches!(publish(&tmp, &path), Ok(Published::Taken)));
        assert_eq!(fs::read_to_string(&path).unwrap(), TOKEN);
    }

    #[test]
    fn a_file_of_another_user_is_refused() {
        if euid() != 0 {
            // Only root can give a file away; the check is the same for all.
            return;
        }
        let dir = Scratch::new("owner");
        let path = dir.write("t", TOKEN, 0o600);
        std::os::unix::fs::chown(&path, Some(65_534), None).unwrap();
        let (kind, text) = problem(&path);
        assert!(
            matches!(
                kind,
                TokenFileProblem::NotOwner {
                    owner: 65_534,
                    me: 0
                }
            ),
            "{text}"
        );
        assert!(text.contains("chown"), "{text}");
    }
}
