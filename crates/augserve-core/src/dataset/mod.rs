//! Datasets: where samples come from. Three formats, one index: every sample gets a dense id
//! `0..len`, a label, and a location (a file under the root, or a byte range in a tar shard).
//! Nothing outside the dataset root is ever read: paths are checked lexically when the index
//! is built and again, after resolving symlinks, when a file is opened.

mod filelist;
mod folder;
mod webdataset;

use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result, SampleErrorKind};

/// Image file extensions indexed by the folder and WebDataset formats (JPEG, PNG, WebP; the
/// decoder goes by the bytes, not the name).
pub(crate) const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "jpe", "jfif", "png", "webp"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DatasetFormat {
    /// `root/<class>/**/<image>.jpg`; sorted class folder names give label indices.
    ImageFolder,
    /// A text file of `relative/path.jpg <label>` lines, paths relative to the list's folder.
    FileList,
    /// WebDataset tar shards (a `.tar` file or a folder of them): `<key>.jpg` + `<key>.cls`.
    WebDataset,
}

impl DatasetFormat {
    /// Guesses the format of `path`: a `.tar` file or a folder holding `.tar` files is a
    /// WebDataset, another file is a file list, any other folder an ImageFolder.
    pub fn detect(path: &Path) -> Result<Self> {
        let meta = std::fs::metadata(path).map_err(|e| Error::dataset(path, e.to_string()))?;
        if meta.is_file() {
            return Ok(if has_ext(path, "tar") {
                DatasetFormat::WebDataset
            } else {
                DatasetFormat::FileList
            });
        }
        let entries = std::fs::read_dir(path).map_err(|e| Error::dataset(path, e.to_string()))?;
        for e in entries.flatten() {
            if has_ext(&e.path(), "tar") {
                return Ok(DatasetFormat::WebDataset);
            }
        }
        Ok(DatasetFormat::ImageFolder)
    }

    pub fn name(self) -> &'static str {
        match self {
            DatasetFormat::ImageFolder => "image_folder",
            DatasetFormat::FileList => "file_list",
            DatasetFormat::WebDataset => "webdataset",
        }
    }
}

pub(crate) fn has_ext(path: &Path, ext: &str) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case(ext))
}

pub(crate) fn is_image_path(path: &Path) -> bool {
    IMAGE_EXTENSIONS.iter().any(|e| has_ext(path, e))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Location {
    /// A path relative to the dataset root.
    File(PathBuf),
    /// `size` bytes at `offset` in shard `shard`.
    Tar { shard: u32, offset: u64, size: u64 },
}

/// One sample of the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The sample's name for error messages: relative path, or `shard.tar:member`.
    pub name: String,
    /// Class index; -1 when the dataset gives none.
    pub label: i64,
    pub(crate) location: Location,
}

/// An opened, indexed dataset. Cheap to share (`Arc`) between threads: reads use `pread`.
#[derive(Debug)]
pub struct Dataset {
    root: PathBuf,
    format: DatasetFormat,
    entries: Vec<Entry>,
    classes: Vec<String>,
    shards: Vec<File>,
    max_file_bytes: u64,
    /// Files skipped while indexing (e.g. symlinks leaving the root), with the reason.
    skipped: Vec<String>,
    /// The root, opened once, for reads that cannot leave it (`open_beneath`).
    #[cfg(target_os = "linux")]
    root_dir: Option<std::os::fd::OwnedFd>,
}

impl Dataset {
    /// Opens and indexes the dataset at `path`. `max_file_bytes` bounds every read.
    pub fn open(path: &Path, format: DatasetFormat, max_file_bytes: u64) -> Result<Self> {
        let meta = std::fs::metadata(path)
            .map_err(|e| Error::dataset(path, format!("cannot open: {e}")))?;
        let index = match format {
            DatasetFormat::ImageFolder => {
                if !meta.is_dir() {
                    return Err(Error::dataset(
                        path,
                        "an image_folder dataset must be a directory",
                    ));
                }
                folder::index(path)?
            }
            DatasetFormat::FileList => {
                if !meta.is_file() {
                    return Err(Error::dataset(
                        path,
                        "a file_list dataset must be a text file",
                    ));
                }
                filelist::index(path)?
            }
            DatasetFormat::WebDataset => webdataset::index(path)?,
        };
        if index.entries.is_empty() {
            return Err(Error::dataset(
                path,
                format!("no samples found (looked for {} data)", format.name()),
            ));
        }
        let root = index
            .root
            .canonicalize()
            .map_err(|e| Error::dataset(&index.root, format!("cannot resolve root: {e}")))?;
        Ok(Dataset {
            #[cfg(target_os = "linux")]
            root_dir: open_root_dir(&root),
            root,
            format,
            entries: index.entries,
            classes: index.classes,
            shards: index.shards,
            max_file_bytes,
            skipped: index.skipped,
        })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn format(&self) -> DatasetFormat {
        self.format
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Class names by label index (ImageFolder); empty for formats with numeric labels.
    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    /// Number of distinct labels: class names, or the largest label + 1.
    pub fn num_classes(&self) -> usize {
        if !self.classes.is_empty() {
            return self.classes.len();
        }
        self.entries
            .iter()
            .map(|e| e.label + 1)
            .max()
            .unwrap_or(0)
            .max(0) as usize
    }

    pub fn entry(&self, id: u64) -> Option<&Entry> {
        self.entries.get(usize::try_from(id).ok()?)
    }

    pub fn skipped(&self) -> &[String] {
        &self.skipped
    }

    /// Reads the encoded bytes of sample `id`.
    pub fn read(&self, id: u64) -> Result<Vec<u8>, SampleErrorKind> {
        let entry = self.entry(id).ok_or_else(|| {
            SampleErrorKind::Read(format!("no sample {id} in a dataset of {}", self.len()))
        })?;
        match &entry.location {
            Location::File(rel) => self.read_file(rel),
            Location::Tar {
                shard,
                offset,
                size,
            } => {
                if *size > self.max_file_bytes {
                    return Err(SampleErrorKind::FileTooLarge {
                        size: *size,
                        limit: self.max_file_bytes,
                    });
                }
                let file = self
                    .shards
                    .get(*shard as usize)
                    .ok_or_else(|| SampleErrorKind::Read("bad shard index".into()))?;
                let mut buf = crate::buffers::take_read_buffer(*size as usize);
                buf.resize(*size as usize, 0);
                file.read_exact_at(&mut buf, *offset)
                    .map_err(|e| SampleErrorKind::Read(e.to_string()))?;
                Ok(buf)
            }
        }
    }

    fn read_file(&self, rel: &Path) -> Result<Vec<u8>, SampleErrorKind> {
        let file = match self.open_beneath(rel) {
            Some(file) => file,
            None => self.open_resolved(rel)?,
        };
        self.read_whole(file)
    }

    /// Opens `rel` with one `openat2(RESOLVE_BENEATH)` from the root's descriptor: the kernel
    /// refuses any resolution that leaves the root, so a file it opens is one
    /// [`Self::open_resolved`] accepts, without resolving every component in user space
    /// (canonicalize was a sixth of the GPU path's host time per ImageNet-size image). None
    /// for anything else (an absolute symlink inside the root, a missing file, a kernel or
    /// sandbox without openat2): the resolved path then decides, and reports, as before.
    #[cfg(target_os = "linux")]
    fn open_beneath(&self, rel: &Path) -> Option<File> {
        use rustix::fs::{openat2, Mode, OFlags, ResolveFlags};
        let root = self.root_dir.as_ref()?;
        let flags = OFlags::RDONLY | OFlags::CLOEXEC;
        let fd = openat2(root, rel, flags, Mode::empty(), ResolveFlags::BENEATH).ok()?;
        Some(File::from(fd))
    }

    #[cfg(not(target_os = "linux"))]
    fn open_beneath(&self, _rel: &Path) -> Option<File> {
        None
    }

    /// Opens `rel` after resolving its symlinks, refusing a path that lands outside the root.
    fn open_resolved(&self, rel: &Path) -> Result<File, SampleErrorKind> {
        let full = self.root.join(rel);
        // Resolve symlinks and refuse anything that lands outside the root.
        let real = full
            .canonicalize()
            .map_err(|e| SampleErrorKind::Read(e.to_string()))?;
        if !real.starts_with(&self.root) {
            return Err(SampleErrorKind::Read(
                "path resolves outside the dataset root".into(),
            ));
        }
        File::open(&real).map_err(|e| SampleErrorKind::Read(e.to_string()))
    }

    /// The whole of `file`, bounded by `max_file_bytes`.
    fn read_whole(&self, file: File) -> Result<Vec<u8>, SampleErrorKind> {
        let size = file
            .metadata()
            .map_err(|e| SampleErrorKind::Read(e.to_string()))?
            .len();
        if size > self.max_file_bytes {
            return Err(SampleErrorKind::FileTooLarge {
                size,
                limit: self.max_file_bytes,
            });
        }
        let mut buf = crate::buffers::take_read_buffer(size as usize);
        // `take` bounds the read even if the file grows after the size check.
        file.take(self.max_file_bytes + 1)
            .read_to_end(&mut buf)
            .map_err(|e| SampleErrorKind::Read(e.to_string()))?;
        if buf.len() as u64 > self.max_file_bytes {
            return Err(SampleErrorKind::FileTooLarge {
                size: buf.len() as u64,
                limit: self.max_file_bytes,
            });
        }
        Ok(buf)
    }
}

/// The dataset root as an `O_PATH` descriptor, for `openat2`; None where it cannot be opened
/// (reads then resolve paths as before).
#[cfg(target_os = "linux")]
fn open_root_dir(root: &Path) -> Option<std::os::fd::OwnedFd> {
    use rustix::fs::{open, Mode, OFlags};
    open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()
}

/// What an indexer found.
pub(crate) struct Index {
    root: PathBuf,
    entries: Vec<Entry>,
    classes: Vec<String>,
    shards: Vec<File>,
    skipped: Vec<String>,
}

/// A relative path with only normal components (no `..`, no root, no prefix).
pub(crate) fn is_safe_relative(p: &Path) -> bool {
    !p.as_os_str().is_empty()
        && p.components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

#[cfg(test)]
mod tests;
