//! Where the built-in demo dataset is written (`run` and `serve` share it).

use std::path::PathBuf;

pub fn default_cache_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(x).join("augserve");
    }
    if let Some(h) = std::env::var_os("HOME") {
        return PathBuf::from(h).join(".cache/augserve");
    }
    PathBuf::from(".cache/augserve")
}
