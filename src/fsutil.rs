//! Private files: what the controller and standalone mode keep on disk
//! (stores, locks, tokens, keys) is readable by its owner only. Directories
//! are made 0700 and files 0600 as they are created, not changed after the
//! fact, so there is no moment when another user can open them; a
//! directory or file left looser by an older version is tightened when it
//! is next opened, with one log line.

use std::fs::{File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Mode of private directories.
pub const DIR_MODE: u32 = 0o700;
/// Mode of private files.
pub const FILE_MODE: u32 = 0o600;

/// Make `mode` the permission bits of `path` if group or others have any
/// access to it; returns whether it changed anything.
fn tighten(path: &Path, mode: u32) -> io::Result<bool> {
    let current = std::fs::metadata(path)?.permissions().mode() & 0o7777;
    if current & 0o077 == 0 {
        return Ok(false);
    }
    std::fs::set_permissions(path, Permissions::from_mode(mode))?;
    tracing::info!(
        path = %path.display(),
        "`{}` was readable by others (mode {current:o}); made it {mode:o}",
        path.display()
    );
    Ok(true)
}

/// Create `dir` (and missing parents, each 0700), or tighten it to 0700 if
/// it exists and others can read it. Parents that exist are left alone:
/// they may be shared directories such as the user's home.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)?;
    tighten(dir, DIR_MODE).map(drop)
}

/// Tighten an existing file to 0600; a missing file is no error (it will be
/// created private).
pub fn private_file(path: &Path) -> io::Result<()> {
    match tighten(path, FILE_MODE) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Options that create a file 0600 (an existing file keeps its mode: use
/// [`private_file`] on it).
pub fn private_options() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.mode(FILE_MODE);
    o
}

/// Open `path` for writing, creating it 0600 if missing and tightening it
/// if it exists; with `truncate`, emptied.
pub fn open_private(path: &Path, truncate: bool) -> io::Result<File> {
    let f = private_options()
        .write(true)
        .create(true)
        .truncate(truncate)
        .open(path)?;
    private_file(path)?;
    Ok(f)
}

/// Write `bytes` to `path`, a file only its owner can read, atomically: a
/// temporary file beside it, created 0600, synced, then renamed over it,
/// so a reader never sees half a key or credential and a looser file is
/// replaced. The parent directory must exist: make it with
/// [`private_dir`].
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file path"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let _ = std::fs::remove_file(&tmp);
    let mut f = private_options().write(true).create_new(true).open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn created_private_and_looser_ones_tightened() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        private_dir(&dir).unwrap();
        assert_eq!(mode(&tmp.path().join("a")), 0o700);
        assert_eq!(mode(&dir), 0o700);
        let file = dir.join("f");
        write_private(&file, b"x").unwrap();
        assert_eq!(mode(&file), 0o600);

        std::fs::set_permissions(&dir, Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&file, Permissions::from_mode(0o644)).unwrap();
        private_dir(&dir).unwrap();
        write_private(&file, b"y").unwrap();
        assert_eq!((mode(&dir), mode(&file)), (0o700, 0o600));
        assert_eq!(std::fs::read(&file).unwrap(), b"y");
        // Stricter modes are kept as they are.
        std::fs::set_permissions(&file, Permissions::from_mode(0o400)).unwrap();
        private_file(&file).unwrap();
        assert_eq!(mode(&file), 0o400);
        private_file(&dir.join("missing")).unwrap();
    }
}
