#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]
//! Helpers shared by the integration tests.

use std::path::PathBuf;

/// `../shared/testdata/jpeg` relative to the repository root (the checkout's sibling).
pub fn jpeg_testdata() -> PathBuf {
    if let Ok(p) = std::env::var("AUGSERVE_JPEG_TESTDATA") {
        return PathBuf::from(p);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let p = root.join("../shared/testdata/jpeg");
    assert!(
        p.is_dir(),
        "JPEG test data not found at {} (set AUGSERVE_JPEG_TESTDATA)",
        p.display()
    );
    p
}

pub fn files_with_ext(dir: &std::path::Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}
