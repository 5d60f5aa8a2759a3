//! File lists: one `path label` per line; `#` starts a comment. Paths are relative to the
//! list's folder and must stay inside it. The label is the last whitespace-separated field,
//! so paths may contain spaces; a line with only a path gets label -1.

use std::path::{Path, PathBuf};

use super::{is_safe_relative, Entry, Index, Location};
use crate::error::{Error, Result};

pub(crate) fn index(list: &Path) -> Result<Index> {
    let text = std::fs::read_to_string(list)
        .map_err(|e| Error::dataset(list, format!("cannot read: {e}")))?;
    let root = list
        .parent()
        .map(Path::to_path_buf)
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."));
    let mut entries = Vec::new();
    for (lineno, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = |msg: String| Error::dataset(list, format!("line {}: {msg}", lineno + 1));
        let (path, label) = match line.rsplit_once(char::is_whitespace) {
            Some((p, l)) => match l.parse::<i64>() {
                Ok(v) if v >= 0 => (p.trim(), v),
                Ok(v) => return Err(at(format!("negative label {v}"))),
                Err(_) => (line, -1),
            },
            None => (line, -1),
        };
        let rel = PathBuf::from(path);
        if !is_safe_relative(&rel) {
            return Err(at(format!(
                "path '{path}' must be relative to the list's folder, without '..'"
            )));
        }
        entries.push(Entry {
            name: path.to_owned(),
            label,
            location: Location::File(rel),
        });
    }
    Ok(Index {
        root,
        entries,
        classes: Vec::new(),
        shards: Vec::new(),
        skipped: Vec::new(),
    })
}
