//! Reading a source: every `*.yaml`/`*.yml` file below a directory,
//! recursively, skipping hidden files and folders. Files are returned in a
//! stable order with names relative to the root, `/`-separated.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Largest manifest file read; anything bigger is refused with a diagnostic
/// instead of being parsed (manifests are small, and the bound keeps memory
/// and time bounded on hostile input).
pub const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;

/// A file of a source, before parsing.
#[derive(Debug, Clone)]
pub struct RawFile {
    /// Path relative to the source root, `/`-separated.
    pub name: String,
    pub content: Content,
}

/// What could be read of a file.
#[derive(Debug, Clone)]
pub enum Content {
    Bytes(Vec<u8>),
    /// The file could not be read; the reason.
    Unreadable(String),
}

/// Why a source cannot be read at all.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("`{0}` does not exist")]
    Missing(PathBuf),
    #[error("`{0}` is not a directory or a manifest file")]
    NotADirectory(PathBuf),
    #[error(
        "no manifests in `{0}`: looked for *.yaml and *.yml files below it (hidden files \
         and directories are skipped)"
    )]
    Empty(PathBuf),
    #[error("cannot read `{path}`: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn is_manifest(name: &str) -> bool {
    name.ends_with(".yaml") || name.ends_with(".yml")
}

/// Read every manifest file below `root` (or `root` itself when it is a
/// manifest file).
pub fn read_dir(root: &Path) -> Result<Vec<RawFile>, SourceError> {
    let meta = fs::metadata(root).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => SourceError::Missing(root.to_path_buf()),
        _ => SourceError::Io {
            path: root.to_path_buf(),
            source: e,
        },
    })?;
    if meta.is_file() {
        let name = root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !is_manifest(&name) {
            return Err(SourceError::NotADirectory(root.to_path_buf()));
        }
        return Ok(vec![RawFile {
            content: read_file(root),
            name,
        }]);
    }
    if !meta.is_dir() {
        return Err(SourceError::NotADirectory(root.to_path_buf()));
    }
    let mut out = Vec::new();
    // Iterative walk: a deep tree cannot overflow the stack.
    let mut todo = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = todo.pop() {
        let entries = fs::read_dir(&dir).map_err(|e| SourceError::Io {
            path: dir.clone(),
            source: e,
        })?;
        for entry in entries {
            let entry = entry.map_err(|e| SourceError::Io {
                path: dir.clone(),
                source: e,
            })?;
            let file_name = entry.file_name().to_string_lossy().into_owned();
            if file_name.starts_with('.') {
                continue;
            }
            let name = format!("{prefix}{file_name}");
            let path = entry.path();
            // Symlinks to directories are not followed (no cycles); symlinks
            // to files are read.
            let ft = match entry.file_type() {
                Ok(ft) => ft,
                Err(e) => {
                    out.push(RawFile {
                        name,
                        content: Content::Unreadable(e.to_string()),
                    });
                    continue;
                }
            };
            if ft.is_dir() {
                todo.push((path, format!("{name}/")));
            } else if is_manifest(&file_name) && !fs::metadata(&path).is_ok_and(|m| m.is_dir()) {
                out.push(RawFile {
                    content: read_file(&path),
                    name,
                });
            }
        }
    }
    // An empty source is a mistake (a wrong path, a checkout not made),
    // never a wish to run nothing: that would plan to delete everything.
    if out.is_empty() {
        return Err(SourceError::Empty(root.to_path_buf()));
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn read_file(path: &Path) -> Content {
    let mut f = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) => return Content::Unreadable(e.to_string()),
    };
    let mut buf = Vec::new();
    // Read one byte past the limit to tell "too large" without reading it all.
    match (&mut f).take(MAX_FILE_BYTES + 1).read_to_end(&mut buf) {
        Ok(_) if buf.len() as u64 > MAX_FILE_BYTES => {
            let size = f.metadata().map(|m| m.len()).unwrap_or(buf.len() as u64);
            Content::Unreadable(format!(
                "file is {:.1} MiB, larger than the {} MiB limit for a manifest file",
                size as f64 / 1048576.0,
                MAX_FILE_BYTES / 1048576
            ))
        }
        Ok(_) => Content::Bytes(buf),
        Err(e) => Content::Unreadable(e.to_string()),
    }
}
