//! Persistence of the service's tunnels (`serve --state-file PATH`): a JSON
//! snapshot written after every change and read at start, so that a
//! restarted service still knows its tunnels, tokens and bound client tokens.

use std::io;
use std::path::Path;

use serde_json::Value;

use crate::files;

/// Version of the snapshot's shape, checked on load.
pub const FORMAT_VERSION: u64 = 1;

/// Writes `snapshot` to `path` as a secret file (see [`files`]: atomic,
/// random temporary name, no symlink followed, mode 0600 on every write).
pub fn save(path: &Path, snapshot: &Value) -> io::Result<()> {
    let text = serde_json::to_vec_pretty(snapshot).map_err(io::Error::other)?;
    files::write_secret(path, &text)
}

/// Reads a snapshot; `Ok(None)` when the file does not exist yet. A
/// symlink, another user's file or one others can read is refused.
pub fn load(path: &Path) -> io::Result<Option<Value>> {
    let Some(text) = files::read_secret(path)? else {
        return Ok(None);
    };
    let v: Value = serde_json::from_slice(&text).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("state file {}: not JSON: {e}", path.display()),
        )
    })?;
    match v["version"].as_u64() {
        Some(FORMAT_VERSION) => Ok(Some(v)),
        other => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "state file {}: version {other:?}, expected {FORMAT_VERSION}",
                path.display()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_missing_file() {
        let dir = std::env::temp_dir().join(format!("lp-state-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("state.json");
        assert!(load(&path).expect("missing is fine").is_none());
        let v = serde_json::json!({"version": FORMAT_VERSION, "tunnels": []});
        save(&path, &v).expect("saved");
        assert_eq!(load(&path).expect("loads"), Some(v));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o077, 0, "owner only");
        std::fs::write(&path, b"{\"version\": 99}").expect("write");
        assert!(load(&path).is_err());
        std::fs::remove_dir_all(&dir).expect("cleaned");
    }
}
