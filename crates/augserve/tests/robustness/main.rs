#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]
//! The robustness suite, against the real server binary: hostile images, absurd requests, path
//! escapes, 64 concurrent streams with cancellations and slow readers, killed clients and
//! SIGTERM under load. Each test appends its summary (inputs per class, errors returned,
//! crashes, peak RSS) to `target/tmp/robustness-summary.md`; scripts/test.sh prints it. One test
//! binary; the shared helpers are here, the tests in `hostile.rs` (images), `requests.rs`
//! (absurd requests, path escapes) and `load.rs` (concurrency, shutdown, memory).

#[path = "../common/mod.rs"]
mod common;
use common::{rt, Server};

mod hostile;
mod load;
mod requests;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use augserve_client::v1;
use tonic::{Code, Status};

fn testdata() -> PathBuf {
    common::jpeg_testdata()
}

fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}

fn summary(section: &str, lines: &[String]) {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("robustness-summary.md");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    let mut text = format!("## {section}\n\n");
    for l in lines {
        text.push_str(l);
        text.push('\n');
    }
    text.push('\n');
    f.write_all(text.as_bytes()).unwrap();
    print!("{text}");
}

/// A small deterministic generator (the suite needs no statistical quality).
struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn proc_status(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(key)
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    proc_status(pid, "VmRSS:")
}

fn threads(pid: u32) -> u64 {
    proc_status(pid, "Threads:")
}

fn open_fds(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count() as u64)
        .unwrap_or(0)
}

/// Samples a process's RSS every 50 ms until dropped; `peak()` is the largest seen.
struct RssWatch {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl RssWatch {
    fn new(pid: u32) -> Self {
        let peak = Arc::new(AtomicU64::new(rss_kib(pid)));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(rss_kib(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        RssWatch { peak, stop }
    }
    fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }
}

impl Drop for RssWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

async fn healthy(addr: &str) -> bool {
    let Ok(ch) = augserve_client::connect_channel(addr).await else {
        return false;
    };
    let mut h = tonic_health::pb::health_client::HealthClient::new(ch);
    h.check(tonic_health::pb::HealthCheckRequest {
        service: String::new(),
    })
    .await
    .is_ok_and(|r| {
        r.into_inner().status
            == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    })
}
