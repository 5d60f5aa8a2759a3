#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]
//! Helpers shared by the integration tests.

use std::path::PathBuf;

/// The repository's `testdata/jpeg` (AUGSERVE_JPEG_TESTDATA overrides it: the GPU kit's copy).
pub fn jpeg_testdata() -> PathBuf {
    if let Ok(p) = std::env::var("AUGSERVE_JPEG_TESTDATA") {
        return PathBuf::from(p);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let p = root.join("testdata/jpeg");
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

/// Prints a skip notice past the test harness's capture, so it shows in the run's output;
/// fails instead when `AUGSERVE_REQUIRE_PEERS=1` (CI), where every reference must be there.
pub fn skip_or_fail(why: &str) {
    if std::env::var("AUGSERVE_REQUIRE_PEERS").as_deref() == Ok("1") {
        panic!("required for this run: {why}");
    }
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "skipped: {why}");
}

/// The Python with Pillow the reference scripts run under (`AUGSERVE_PYTHON`, else
/// python3), or None after `skip_or_fail` said why not.
pub fn python_with_pillow() -> Option<String> {
    let python = std::env::var("AUGSERVE_PYTHON").unwrap_or_else(|_| "python3".into());
    let has_pillow = std::process::Command::new(&python)
        .args(["-c", "import PIL"])
        .status()
        .is_ok_and(|s| s.success());
    if !has_pillow {
        skip_or_fail(&format!(
            "{python} with Pillow not found (run ./scripts/test.sh)"
        ));
        return None;
    }
    Some(python)
}

/// Runs `tests/<script>` under `python` with `args` and returns its standard output;
/// panics with the script's standard error when it fails.
pub fn run_script(python: &str, script: &str, args: &[&std::path::Path]) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(script);
    let out = std::process::Command::new(python)
        .arg(&path)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}
