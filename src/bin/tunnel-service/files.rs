//! Files that hold secrets (the `--state-file` with its tokens, the key in
//! `--cert-dir`) and the others the service writes beside them.
//!
//! Writes are atomic: a temporary file with a random name in the same
//! directory, created exclusively (`O_CREAT|O_EXCL`, `O_NOFOLLOW`, so a
//! planted file or symlink is never written through), set to mode 0600 on
//! every write whatever the umask or an earlier file said, synced, then
//! renamed over the target (which replaces a symlink there instead of
//! following it). Reads of secrets refuse symlinks, files of another owner
//! and files other users can read.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode of files holding secrets.
pub const SECRET_MODE: u32 = 0o600;
/// Mode of the public files (the certificate).
pub const PUBLIC_MODE: u32 = 0o644;

/// Writes `data` to `path` atomically with mode 0600.
pub fn write_secret(path: &Path, data: &[u8]) -> io::Result<()> {
    write_atomic(path, data, SECRET_MODE)
}

/// Writes `data` to `path` atomically with mode 0644.
pub fn write_public(path: &Path, data: &[u8]) -> io::Result<()> {
    write_atomic(path, data, PUBLIC_MODE)
}

fn write_atomic(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::other(format!("{}: not a file name", path.display())))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let (tmp, mut f) = create_temp(&dir, &name.to_string_lossy())?;
    let written = (|| {
        // Exactly `mode`, whatever the umask made of the create mode.
        f.set_permissions(Permissions::from_mode(mode))?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(io::Error::new(
            e.kind(),
            format!("writing {}: {e}", path.display()),
        ));
    }
    // The rename is durable once the directory is synced.
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// A new file `.NAME.RANDOM.tmp` in `dir`, created exclusively, owner-only.
fn create_temp(dir: &Path, name: &str) -> io::Result<(PathBuf, File)> {
    let mut last = None;
    for _ in 0..8 {
        let suffix = localproxy::secret::random_hex(8)?;
        let tmp = dir.join(format!(".{name}.{suffix}.tmp"));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(SECRET_MODE)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
        {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("creating a temporary file in {}: {e}", dir.display()),
                ))
            }
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free temporary name")))
}

/// Reads a file holding secrets: refuses a symlink, a file that is not
/// regular, owned by another user, or readable by group or others (naming
/// the file and what to do). `Ok(None)` when it does not exist.
pub fn read_secret(path: &Path) -> io::Result<Option<Vec<u8>>> {
    let Some((mut f, meta)) = open_nofollow(path)? else {
        return Ok(None);
    };
    check_private(path, &meta)?;
    let mut data = Vec::new();
    f.read_to_end(&mut data)?;
    Ok(Some(data))
}

/// Reads a file the service trusts without it being secret (the reused
/// certificate): refuses a symlink, a file of another owner or one that
/// group or others may write. `Ok(None)` when it does not exist.
pub fn read_owned(path: &Path) -> io::Result<Option<Vec<u8>>> {
    let Some((mut f, meta)) = open_nofollow(path)? else {
        return Ok(None);
    };
    if !meta.file_type().is_file() {
        return Err(refused(path, "is not a regular file"));
    }
    check_owner(path, &meta)?;
    if meta.mode() & 0o022 != 0 {
        return Err(refused(
            path,
            &format!(
                "has mode {:o}: others could change it (chmod go-w it)",
                meta.mode() & 0o777
            ),
        ));
    }
    let mut data = Vec::new();
    f.read_to_end(&mut data)?;
    Ok(Some(data))
}

fn open_nofollow(path: &Path) -> io::Result<Option<(File, fs::Metadata)>> {
    let f = match OpenOptions::new()
        .read(true)
        // Non-blocking: a FIFO would otherwise block the open until a
        // writer comes; it is refused below as not a regular file.
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(refused(path, "is a symbolic link: give the file itself"))
        }
        Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
    };
    let meta = f.metadata()?;
    Ok(Some((f, meta)))
}

/// Checks that the file behind `meta` is a regular file of ours that only
/// we can read.
pub fn check_private(path: &Path, meta: &fs::Metadata) -> io::Result<()> {
    if !meta.file_type().is_file() {
        return Err(refused(path, "is not a regular file"));
    }
    check_owner(path, meta)?;
    if meta.mode() & 0o077 != 0 {
        return Err(refused(
            path,
            &format!(
                "has mode {:o}: a file holding secrets must be readable by its owner only (chmod 600 it, or remove it)",
                meta.mode() & 0o777
            ),
        ));
    }
    Ok(())
}

/// Checks that `meta` belongs to the user running the service.
pub fn check_owner(path: &Path, meta: &fs::Metadata) -> io::Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(refused(
            path,
            &format!(
                "belongs to uid {}, not to this user (uid {me}): remove it or use another path",
                meta.uid()
            ),
        ));
    }
    Ok(())
}

/// Checks a directory the service keeps files in: ours, and not writable by
/// group or others (who could swap the files).
pub fn check_dir(dir: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(dir)?;
    if !meta.file_type().is_dir() {
        return Err(refused(dir, "is not a directory"));
    }
    check_owner(dir, &meta)?;
    if meta.mode() & 0o022 != 0 {
        return Err(refused(
            dir,
            &format!(
                "has mode {:o}: others could replace the files in it (chmod go-w it)",
                meta.mode() & 0o777
            ),
        ));
    }
    Ok(())
}

fn refused(path: &Path, why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!("{} {why}", path.display()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn temp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "ts-files-{tag}-{}-{}",
            std::process::id(),
            localproxy::secret::random_hex(4).expect("random")
        ));
        fs::create_dir_all(&d).expect("dir");
        fs::set_permissions(&d, Permissions::from_mode(0o700)).expect("chmod");
        d
    }

    fn mode(p: &Path) -> u32 {
        fs::symlink_metadata(p).expect("meta").mode() & 0o777
    }

    #[test]
    fn secrets_are_0600_on_every_write_and_no_temporary_is_left() {
        let d = temp("mode");
        let p = d.join("state.json");
        fs::write(&p, b"old").expect("write");
        fs::set_permissions(&p, Permissions::from_mode(0o666)).expect("chmod");
        write_secret(&p, b"new").expect("saved");
        assert_eq!(mode(&p), 0o600);
        assert_eq!(fs::read(&p).expect("read"), b"new");
        // A leftover of the old fixed temporary name changes nothing.
        fs::write(d.join("state.json.tmp"), b"x").expect("write");
        fs::set_permissions(d.join("state.json.tmp"), Permissions::from_mode(0o666))
            .expect("chmod");
        write_secret(&p, b"newer").expect("saved");
        assert_eq!(mode(&p), 0o600);
        let names: Vec<_> = fs::read_dir(&d)
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert!(!names.iter().any(|n| n.starts_with('.')), "{names:?}");
        assert_eq!(read_secret(&p).expect("read"), Some(b"newer".to_vec()));
        fs::remove_dir_all(&d).expect("cleaned");
    }

    #[test]
    fn a_planted_symlink_is_replaced_not_followed() {
        let d = temp("link");
        let victim = d.join("victim");
        fs::write(&victim, b"precious").expect("write");
        let p = d.join("state.json");
        symlink(&victim, &p).expect("symlink");
        assert!(read_secret(&p)
            .expect_err("symlink refused")
            .to_string()
            .contains("symbolic link"));
        write_secret(&p, b"tokens").expect("saved");
        assert_eq!(fs::read(&victim).expect("read"), b"precious");
        assert!(fs::symlink_metadata(&p)
            .expect("meta")
            .file_type()
            .is_file());
        assert_eq!(mode(&p), 0o600);
        fs::remove_dir_all(&d).expect("cleaned");
    }

    #[test]
    fn readable_secrets_and_open_directories_are_refused() {
        let d = temp("checks");
        let p = d.join("key");
        fs::write(&p, b"k").expect("write");
        fs::set_permissions(&p, Permissions::from_mode(0o640)).expect("chmod");
        let e = read_secret(&p).expect_err("group-readable");
        assert!(e.to_string().contains("mode 640"), "{e}");
        assert_eq!(read_secret(&d.join("absent")).expect("absent"), None);
        // A FIFO is refused at once, not waited on for a writer.
        let fifo = d.join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().expect("utf-8")).expect("path");
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = read_secret(&fifo).expect_err("a FIFO");
        assert!(e.to_string().contains("not a regular file"), "{e}");
        assert!(read_owned(&fifo).is_err());
        check_dir(&d).expect("0700 is fine");
        fs::set_permissions(&d, Permissions::from_mode(0o777)).expect("chmod");
        assert!(check_dir(&d).is_err());
        fs::remove_dir_all(&d).expect("cleaned");
    }
}
