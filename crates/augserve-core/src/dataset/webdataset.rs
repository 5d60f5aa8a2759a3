//! WebDataset tar shards. Members sharing a key (the member path up to the first dot of its
//! file name) form one sample: `.jpg`/`.jpeg`/`.png`/`.webp` holds the image, `.cls` the label as
//! decimal text. The index stores each image's byte range, so reads are a single `pread`;
//! tar member names are never used as filesystem paths.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::{has_ext, Entry, Index, Location};
use crate::error::{Error, Result};

/// Largest `.cls` member read (a label is a short number).
const MAX_CLS_BYTES: u64 = 64;

/// A sample while its shard is scanned: the image member (offset, size, name) and label.
#[derive(Default)]
struct PendingSample {
    image: Option<(u64, u64, String)>,
    label: Option<i64>,
}

pub(crate) fn index(path: &Path) -> Result<Index> {
    let (root, shard_paths) = if path.is_dir() {
        let mut v: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| Error::dataset(path, format!("cannot list: {e}")))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| has_ext(p, "tar") && p.is_file())
            .collect();
        v.sort();
        (path.to_path_buf(), v)
    } else {
        let root = path
            .parent()
            .map(Path::to_path_buf)
            .filter(|p| !p.as_os_str().is_empty());
        (
            root.unwrap_or_else(|| PathBuf::from(".")),
            vec![path.to_path_buf()],
        )
    };
    if shard_paths.is_empty() {
        return Err(Error::dataset(path, "no .tar shards found"));
    }
    let mut entries = Vec::new();
    let mut shards = Vec::new();
    let mut skipped = Vec::new();
    for (si, sp) in shard_paths.iter().enumerate() {
        let shard_name = sp
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let file =
            File::open(sp).map_err(|e| Error::dataset(sp, format!("cannot open shard: {e}")))?;
        // key -> (image (offset, size, member), label)
        let mut samples: BTreeMap<String, PendingSample> = BTreeMap::new();
        let mut archive = tar::Archive::new(&file);
        let bad = |e: std::io::Error| Error::dataset(sp, format!("not a valid tar archive: {e}"));
        for member in archive.entries().map_err(bad)? {
            let mut member = member.map_err(bad)?;
            if !member.header().entry_type().is_file() {
                continue;
            }
            let name = match member.path() {
                Ok(p) => p.to_string_lossy().into_owned(),
                Err(_) => continue,
            };
            let Some((key, ext)) = split_key(&name) else {
                continue;
            };
            let ext = ext.to_ascii_lowercase();
            let size = member.size();
            if super::IMAGE_EXTENSIONS.contains(&ext.as_str()) {
                let offset = member.raw_file_position();
                samples.entry(key.to_owned()).or_default().image =
                    Some((offset, size, name.clone()));
            } else if ext == "cls" {
                let mut text = String::new();
                if size <= MAX_CLS_BYTES
                    && (&mut member)
                        .take(MAX_CLS_BYTES)
                        .read_to_string(&mut text)
                        .is_ok()
                {
                    match text.trim().parse::<i64>() {
                        Ok(v) if v >= 0 => {
                            samples.entry(key.to_owned()).or_default().label = Some(v)
                        }
                        _ => skipped.push(format!(
                            "{shard_name}:{name}: label is not a non-negative integer"
                        )),
                    }
                } else {
                    skipped.push(format!("{shard_name}:{name}: unreadable label"));
                }
            }
        }
        for (key, PendingSample { image, label }) in samples {
            match image {
                Some((offset, size, member)) => entries.push(Entry {
                    name: format!("{shard_name}:{member}"),
                    label: label.unwrap_or(-1),
                    location: Location::Tar {
                        shard: si as u32,
                        offset,
                        size,
                    },
                }),
                None => skipped.push(format!("{shard_name}:{key}: no .jpg member")),
            }
        }
        shards.push(file);
    }
    Ok(Index {
        root,
        entries,
        classes: Vec::new(),
        shards,
        skipped,
    })
}

/// `dir/abc.d.jpg` -> key `dir/abc`, extension `d.jpg`'s last part `jpg`.
fn split_key(name: &str) -> Option<(&str, &str)> {
    let file_start = name.rfind('/').map_or(0, |i| i + 1);
    let dot = name[file_start..].find('.')? + file_start;
    let ext = name.rsplit('.').next()?;
    Some((&name[..dot], ext))
}
