//! ImageFolder: `root/<class>/**/<image>.jpg`, as torchvision's `ImageFolder`.

use std::path::{Path, PathBuf};

use super::{is_image_path, Entry, Index, Location};
use crate::error::{Error, Result};

pub(crate) fn index(root: &Path) -> Result<Index> {
    let real_root = root
        .canonicalize()
        .map_err(|e| Error::dataset(root, format!("cannot resolve: {e}")))?;
    let mut classes: Vec<String> = Vec::new();
    for e in
        std::fs::read_dir(root).map_err(|e| Error::dataset(root, format!("cannot list: {e}")))?
    {
        let e = e.map_err(|e| Error::dataset(root, format!("cannot list: {e}")))?;
        if e.path().is_dir() {
            if let Some(name) = e.file_name().to_str() {
                if !name.starts_with('.') {
                    classes.push(name.to_owned());
                }
            }
        }
    }
    if classes.is_empty() {
        return Err(Error::dataset(
            root,
            "no class sub-folders: an image_folder dataset is root/<class>/<image>.jpg",
        ));
    }
    classes.sort();
    let mut entries = Vec::new();
    let mut skipped = Vec::new();
    for (label, class) in classes.iter().enumerate() {
        let mut files = Vec::new();
        walk(
            &real_root,
            &PathBuf::from(class),
            &mut files,
            &mut skipped,
            0,
        )?;
        files.sort();
        for rel in files {
            entries.push(Entry {
                name: rel.display().to_string(),
                label: label as i64,
                location: Location::File(rel),
            });
        }
    }
    Ok(Index {
        root: real_root,
        entries,
        classes,
        shards: Vec::new(),
        skipped,
    })
}

/// Collects image files under `root/rel`, following symlinks only while they stay in `root`.
fn walk(
    root: &Path,
    rel: &Path,
    out: &mut Vec<PathBuf>,
    skipped: &mut Vec<String>,
    depth: usize,
) -> Result<()> {
    if depth > 32 {
        skipped.push(format!(
            "{}: directory nesting deeper than 32",
            rel.display()
        ));
        return Ok(());
    }
    let dir = root.join(rel);
    let rd = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) => {
            skipped.push(format!("{}: cannot list: {e}", rel.display()));
            return Ok(());
        }
    };
    for e in rd.flatten() {
        let name = e.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let child_rel = rel.join(&name);
        let child = root.join(&child_rel);
        let real = match child.canonicalize() {
            Ok(r) => r,
            Err(err) => {
                skipped.push(format!("{}: {err}", child_rel.display()));
                continue;
            }
        };
        if !real.starts_with(root) {
            skipped.push(format!(
                "{}: links outside the dataset root",
                child_rel.display()
            ));
            continue;
        }
        if real.is_dir() {
            walk(root, &child_rel, out, skipped, depth + 1)?;
        } else if is_image_path(&child_rel) {
            out.push(child_rel);
        }
    }
    Ok(())
}
