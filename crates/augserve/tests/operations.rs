#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]
//! Operations: the binary run exactly as the container image runs it (docker/Dockerfile's
//! ENTRYPOINT, CMD, environment and volume layout), Prometheus metrics scraped while a stream
//! runs, and batch telemetry that makes an all-black dataset visible.

mod common;
use common::{free_port, Killed};

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// One stage of the Dockerfile: its ENV, ENTRYPOINT, CMD, HEALTHCHECK command, VOLUMEs, USER.
#[derive(Debug, Default)]
struct Stage {
    env: BTreeMap<String, String>,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    healthcheck: Vec<String>,
    volumes: Vec<String>,
    user: String,
}

fn json_array(s: &str) -> Vec<String> {
    serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("not a JSON array: {s}: {e}"))
}

/// Parses the stage `name` of docker/Dockerfile (instructions joined across `\` continuations).
fn dockerfile_stage(name: &str) -> Stage {
    let text = std::fs::read_to_string(repo().join("docker/Dockerfile")).unwrap();
    let mut lines = Vec::new();
    let mut cur = String::new();
    for raw in text.lines() {
        let l = raw.trim();
        if l.starts_with('#') || l.is_empty() {
            continue;
        }
        if let Some(body) = l.strip_suffix('\\') {
            cur.push_str(body);
            cur.push(' ');
        } else {
            cur.push_str(l);
            lines.push(std::mem::take(&mut cur));
        }
    }
    let mut stage = Stage::default();
    let mut inside = false;
    for l in lines {
        let (instr, rest) = l.split_once(' ').unwrap_or((&l, ""));
        if instr == "FROM" {
            inside = rest.ends_with(&format!(" AS {name}"));
            continue;
        }
        if !inside {
            continue;
        }
        match instr {
            "ENV" => {
                for kv in rest.split_whitespace() {
                    let (k, v) = kv.split_once('=').unwrap();
                    stage.env.insert(k.into(), v.into());
                }
            }
            "ENTRYPOINT" => stage.entrypoint = json_array(rest),
            "CMD" => stage.cmd = json_array(rest),
            "VOLUME" => stage.volumes = json_array(rest),
            "USER" => stage.user = rest.into(),
            "HEALTHCHECK" => {
                let cmd = rest.split_once("CMD ").unwrap().1;
                stage.healthcheck = json_array(cmd);
            }
            _ => {}
        }
    }
    assert!(
        !stage.entrypoint.is_empty(),
        "no stage {name} in the Dockerfile"
    );
    stage
}

/// Rewrites the container's absolute paths into `root` and its fixed ports into free ones, so
/// the image's exact settings run here side by side with other tests.
struct Layout {
    root: PathBuf,
    ports: BTreeMap<String, String>,
}

impl Layout {
    fn map(&self, v: &str) -> String {
        for (from, to) in &self.ports {
            if v == from {
                return to.clone();
            }
        }
        let root = self.root.display().to_string();
        if let Some(p) = v.strip_prefix("unix:///") {
            return format!("unix://{root}/{p}");
        }
        if v.starts_with('/') {
            return format!("{root}{v}");
        }
        v.to_string()
    }

    /// The image's binary name resolves to the binary under test.
    fn program(&self, name: &str) -> String {
        assert_eq!(name, "augserve", "ENTRYPOINT must be the augserve binary");
        env!("CARGO_BIN_EXE_augserve").into()
    }
}

fn http_get(addr: &str, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(
        out.starts_with("HTTP/1.0 200") || out.starts_with("HTTP/1.1 200"),
        "{out}"
    );
    out
}

/// `name{labels} value` lines of a Prometheus scrape.
fn samples(text: &str, name: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            let metric = key.split('{').next()?;
            if metric != name {
                return None;
            }
            Some((key.to_string(), value.parse().ok()?))
        })
        .collect()
}

fn sample(text: &str, key: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (k, v) = l.rsplit_once(' ')?;
        if k != key {
            return None;
        }
        v.parse().ok()
    })
}

fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let t = Instant::now();
    while !ok() {
        assert!(t.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_binary_runs_as_the_container_image_runs_it() {
    for stage_name in ["cpu", "gpu"] {
        let stage = dockerfile_stage(stage_name);
        assert!(
            !stage.user.is_empty() && !stage.user.starts_with('0') && stage.user != "root",
            "{stage_name}: the image must run as a non-root user"
        );
        assert!(stage.volumes.contains(&"/data".to_string()));
        assert!(stage.volumes.contains(&"/run/augserve".to_string()));
        assert_eq!(stage.healthcheck[0], "augserve");
        assert_eq!(stage.healthcheck[1], "health");
    }
    // The GPU image's settings; without a GPU here its device = auto falls back to the CPU,
    // exactly as it would in a container without one.
    let stage = dockerfile_stage("gpu");
    let dir = tempfile::tempdir().unwrap();
    let mut ports = BTreeMap::new();
    for key in ["AUGSERVE_LISTEN_TCP", "AUGSERVE_METRICS_LISTEN"] {
        let v = &stage.env[key];
        assert!(v.starts_with("0.0.0.0:"), "{key}={v}");
        ports.insert(v.clone(), format!("127.0.0.1:{}", free_port()));
    }
    let layout = Layout {
        root: dir.path().to_path_buf(),
        ports,
    };
    // The volumes and the directories the image creates, owned by the user it runs as.
    for d in stage
        .volumes
        .iter()
        .chain([&stage.env["AUGSERVE_CACHE_DIR"]])
    {
        std::fs::create_dir_all(layout.map(d)).unwrap();
    }
    let mut argv: Vec<String> = stage.entrypoint.iter().chain(&stage.cmd).cloned().collect();
    argv[0] = layout.program(&argv[0]);
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in &stage.env {
        cmd.env(k, layout.map(v));
    }
    let log = dir.path().join("server.log");
    cmd.stderr(std::fs::File::create(&log).unwrap());
    let mut server = Killed(cmd.spawn().unwrap());
    let sock = PathBuf::from(layout.map(&stage.env["AUGSERVE_LISTEN_UDS"]));
    wait_for("the socket", Duration::from_secs(60), || sock.exists());

    // HEALTHCHECK, as the image runs it.
    let health = &stage.healthcheck;
    let out = Command::new(layout.program(&health[0]))
        .args(health[1..].iter().map(|a| layout.map(a)))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "SERVING");

    // A batch through the socket: the demo dataset, since no dataset is configured.
    let out = Command::new(env!("CARGO_BIN_EXE_augserve"))
        .args(["pull", "--quiet", "--batch-size", "32", "--epochs", "1"])
        .arg("--addr")
        .arg(format!("unix://{}", sock.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("pulled 320 images in 10 batches"),
        "{stdout}"
    );

    // The socket is group-accessible only, and the metrics port answers.
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&sock).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o660);
    let metrics = http_get(
        &layout.map(&stage.env["AUGSERVE_METRICS_LISTEN"]),
        "/metrics",
    );
    assert!(
        sample(&metrics, "augserve_images_total{dataset=\"demo\"}") == Some(320.0),
        "{metrics}"
    );
    let decoded = "augserve_images_decoded_total{dataset=\"demo\",path=\"region\"}";
    assert!(sample(&metrics, decoded) == Some(320.0), "{metrics}");

    // JSON logs (AUGSERVE_LOG_FORMAT=json): one line per stream start and end with its totals.
    // SIGTERM: clean exit 0.
    let term = Command::new("kill")
        .args(["-TERM", &server.0.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let status = server.0.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    let logs = std::fs::read_to_string(&log).unwrap();
    let end = logs
        .lines()
        .find(|l| l.contains("\"stream end\""))
        .unwrap_or_else(|| panic!("no stream end line: {logs}"));
    let end: serde_json::Value = serde_json::from_str(end).unwrap();
    assert_eq!(end["fields"]["images"], 320);
    assert_eq!(end["fields"]["batches"], 10);
}

/// A server with metrics on, over a dataset in `data`.
fn metrics_server(data: &Path, dir: &Path, log_interval: &str) -> (Killed, PathBuf, String) {
    let sock = dir.join("augserve.sock");
    let metrics = format!("127.0.0.1:{}", free_port());
    let log = std::fs::File::create(dir.join("server.log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_augserve"))
        .args(["serve", "--listen-tcp", "", "--device", "cpu"])
        .arg("--listen-uds")
        .arg(&sock)
        .arg("--dataset")
        .arg(format!("data={}", data.display()))
        .args(["--metrics-listen", &metrics])
        .env("AUGSERVE_TELEMETRY_LOG_INTERVAL_S", log_interval)
        .env("AUGSERVE_THREADS", "2")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let server = Killed(child);
    wait_for("the server", Duration::from_secs(60), || {
        sock.exists() && std::net::TcpStream::connect(&metrics).is_ok()
    });
    (server, sock, metrics)
}

fn pull(sock: &Path, args: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_augserve"))
        .args(["pull", "--quiet", "--dataset", "data"])
        .arg("--addr")
        .arg(format!("unix://{}", sock.display()))
        .args(args)
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn metrics_move_while_a_stream_runs() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    augserve_core::demo::write_demo_dataset(&data, 8).unwrap();
    let (_server, sock, metrics) = metrics_server(&data, dir.path(), "0");
    let mut client = pull(&sock, &["--batch-size", "16", "--epochs", "40"]);

    let mut first = None;
    let mut saw_rate = false;
    let t = Instant::now();
    let mut last = String::new();
    while t.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(700));
        last = http_get(&metrics, "/metrics");
        let images = sample(&last, "augserve_images_total{dataset=\"data\"}").unwrap_or(0.0);
        saw_rate |= sample(&last, "augserve_images_per_second").unwrap_or(0.0) > 0.0;
        match first {
            None if images > 0.0 => first = Some(images),
            Some(f) if images > f && saw_rate => break,
            _ => {}
        }
    }
    assert!(saw_rate, "images/s never above 0:\n{last}");
    let images = sample(&last, "augserve_images_total{dataset=\"data\"}").unwrap();
    assert!(images > first.unwrap(), "images_total did not move");
    assert_eq!(sample(&last, "augserve_active_streams"), Some(1.0));
    // One stream's worst case is reserved from a budget of half the machine's memory.
    let reserved = sample(&last, "augserve_batch_memory_reserved_bytes").unwrap_or(0.0);
    let budget = sample(&last, "augserve_batch_memory_budget_bytes").unwrap_or(0.0);
    assert!(
        reserved > 0.0 && reserved < budget,
        "reserved {reserved} of {budget}"
    );
    for stage in [
        "read",
        "decode",
        "color",
        "resize",
        "mix_normalize",
        "total",
        "send",
    ] {
        let count = sample(
            &last,
            &format!("augserve_stage_seconds_count{{stage=\"{stage}\"}}"),
        );
        assert!(count.unwrap_or(0.0) > 0.0, "no {stage} histogram:\n{last}");
        let buckets = samples(&last, "augserve_stage_seconds_bucket")
            .into_iter()
            .filter(|(k, _)| k.contains(&format!("stage=\"{stage}\"")))
            .count();
        assert!(buckets >= 10, "{stage}: {buckets} buckets");
    }
    for g in [
        "augserve_batch_mean",
        "augserve_batch_std",
        "augserve_batch_mad",
        "augserve_batch_clipped_fraction",
    ] {
        let per_channel = samples(&last, g);
        assert_eq!(per_channel.len(), 3, "{g}: {per_channel:?}");
    }
    // Five percentile levels per channel.
    let percentiles = samples(&last, "augserve_batch_percentile");
    assert_eq!(percentiles.len(), 15, "{percentiles:?}");
    for name in [
        "augserve_batches_total",
        "augserve_bytes_sent_total",
        "augserve_queued_batches",
        "augserve_streams_total",
    ] {
        assert!(!samples(&last, name).is_empty(), "no {name}:\n{last}");
    }
    let _ = client.kill();
    let _ = client.wait();
    wait_for("the stream to end", Duration::from_secs(30), || {
        sample(&http_get(&metrics, "/metrics"), "augserve_active_streams") == Some(0.0)
    });
    wait_for("the reservation to end", Duration::from_secs(30), || {
        sample(
            &http_get(&metrics, "/metrics"),
            "augserve_batch_memory_reserved_bytes",
        ) == Some(0.0)
    });
}

#[test]
fn telemetry_shows_an_all_black_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("black");
    for class in ["a", "b"] {
        std::fs::create_dir_all(data.join(class)).unwrap();
        for i in 0..12 {
            image::RgbImage::new(96 + i * 8, 80)
                .save(data.join(class).join(format!("{i}.jpg")))
                .unwrap();
        }
    }
    let (_server, sock, metrics) = metrics_server(&data, dir.path(), "1");
    let status = pull(&sock, &["--batch-size", "8", "--epochs", "2"])
        .wait()
        .unwrap();
    assert!(status.success());
    let text = http_get(&metrics, "/metrics");
    // After (x/255 - mean) / std, black is -mean/std per channel, with no spread at all.
    let want = [-0.485 / 0.229, -0.456 / 0.224, -0.406 / 0.225];
    for (c, w) in want.iter().enumerate() {
        let key = |m: &str| format!("{m}{{dataset=\"data\",channel=\"{c}\"}}");
        let mean = sample(&text, &key("augserve_batch_mean")).unwrap();
        let mad = sample(&text, &key("augserve_batch_mad")).unwrap();
        let std = sample(&text, &key("augserve_batch_std")).unwrap();
        let clipped = sample(&text, &key("augserve_batch_clipped_fraction")).unwrap();
        println!("channel {c}: mean {mean:.4} (want {w:.4}), std {std:.2e}, MAD {mad:.2e}, clipped {clipped}");
        assert!(
            (mean - w).abs() < 0.01,
            "channel {c}: mean {mean}, want {w}"
        );
        assert!(
            mad < 1e-3 && std < 1e-3,
            "channel {c}: MAD {mad}, std {std}"
        );
        assert!(clipped > 0.99, "channel {c}: clipped {clipped}");
        // Every percentile is black too.
        for level in ["1", "50", "99"] {
            let p = sample(
                &text,
                &format!("augserve_batch_percentile{{dataset=\"data\",channel=\"{c}\",percentile=\"{level}\"}}"),
            );
            assert!(
                p.is_some_and(|p| (p - w).abs() < 0.01),
                "channel {c}: p{level} {p:?}, want {w}"
            );
        }
    }
    // ... and the periodic log line says the same.
    wait_for("a telemetry log line", Duration::from_secs(10), || {
        std::fs::read_to_string(dir.path().join("server.log"))
            .unwrap()
            .contains("batch telemetry")
    });
    let logs = std::fs::read_to_string(dir.path().join("server.log")).unwrap();
    let line = logs
        .lines()
        .find(|l| l.contains("batch telemetry"))
        .unwrap();
    assert!(line.contains("mean=[-2.11"), "{line}");
}
