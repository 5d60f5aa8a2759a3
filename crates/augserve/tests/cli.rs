#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The `augserve` binary as a user runs it.

use std::process::Command;

/// Prints a skip notice past the test harness's capture, so it shows in the run's output.
fn skipped(why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "skipped: {why}");
}

fn augserve() -> Command {
    Command::new(env!("CARGO_BIN_EXE_augserve"))
}

#[test]
fn run_on_the_demo_dataset_reports_and_writes_a_preview() {
    let d = tempfile::tempdir().unwrap();
    let preview = d.path().join("preview.png");
    let summary = d.path().join("summary.json");
    let out = augserve()
        .args([
            "run",
            "--quiet",
            "--epochs",
            "2",
            "--batch-size",
            "32",
            "--threads",
            "2",
        ])
        .arg("--cache-dir")
        .arg(d.path().join("cache"))
        .arg("--preview")
        .arg(&preview)
        .arg("--summary-json")
        .arg(&summary)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("[built-in demo]"), "{stdout}");
    assert!(stdout.contains("batch ops: "), "{stdout}");
    if !stdout.contains("batch ops: gpu") {
        // No GPU here: the run says why and uses the CPU.
        assert!(
            stdout.contains("batch ops: cpu (GPU unavailable"),
            "{stdout}"
        );
    }
    assert!(stdout.contains("total: 640 images"), "{stdout}");
    assert!(stdout.contains("image errors: 0"), "{stdout}");
    let png = image::open(&preview).unwrap();
    assert!(png.width() > 224 * 4);
    let s: serde_json::Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    assert_eq!(s["images"], 640);
    assert!(s["images_per_s"].as_f64().unwrap() > 0.0);
}

/// Each epoch's line is timed from the previous epoch's last batch (the run's start for the
/// first) to its own last batch, so the epochs add up to the run: timed from their own first
/// batch, epochs whose batches were prepared ahead showed absurd rates (two batches an epoch
/// here, so the old timing missed a third of the run).
#[test]
fn epoch_lines_add_up_to_the_run() {
    let d = tempfile::tempdir().unwrap();
    let out = augserve()
        .args(["run", "--quiet", "--epochs", "3", "--batch-size", "160"])
        .args(["--threads", "2"])
        .arg("--cache-dir")
        .arg(d.path().join("cache"))
        .output()
        .unwrap();
    let stdout = stdout_of(&out);
    assert!(out.status.success(), "{stdout}\n{}", stderr_of(&out));
    // "epoch 0: 320 images in 0.42 s (762 images/s)"; "total: 960 images in 30 batches, 1.27 s: ..."
    let seconds_before = |line: &str, unit: &str| -> f64 {
        let head = line.split(unit).next().unwrap();
        head.rsplit(' ').next().unwrap().parse().unwrap()
    };
    let epochs: Vec<f64> = stdout
        .lines()
        .filter(|l| l.starts_with("epoch "))
        .map(|l| seconds_before(l, " s ("))
        .collect();
    assert_eq!(epochs.len(), 3, "{stdout}");
    let total_line = stdout.lines().find(|l| l.starts_with("total: ")).unwrap();
    let total = seconds_before(total_line, " s: ");
    let sum: f64 = epochs.iter().sum();
    // Printed to 10 ms each; the run's own end comes a moment after its last batch.
    assert!(
        (sum - total).abs() <= 0.05 + 0.05 * total,
        "epochs {epochs:?} add up to {sum} s, the run took {total} s\n{stdout}"
    );
}

/// The stand-in device (the GPU path's host side, no GPU): every JPEG is left to its no-op
/// decoder, and the run reports its CPU time per image.
#[test]
fn the_stand_in_device_leaves_every_jpeg_to_the_gpu_decoder_and_reports_host_cpu() {
    let d = tempfile::tempdir().unwrap();
    let summary = d.path().join("summary.json");
    let out = augserve()
        .args([
            "run",
            "--quiet",
            "--device",
            "stand-in",
            "--batch-size",
            "64",
        ])
        .arg("--cache-dir")
        .arg(d.path().join("cache"))
        .arg("--summary-json")
        .arg(&summary)
        .output()
        .unwrap();
    let stdout = stdout_of(&out);
    assert!(out.status.success(), "{stdout}\n{}", stderr_of(&out));
    assert!(stdout.contains("batch ops: stand-in"), "{stdout}");
    assert!(stdout.contains("320 left to the GPU decoder"), "{stdout}");
    assert!(stdout.contains("host CPU: "), "{stdout}");
    let s: serde_json::Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    assert_eq!(s["images"], 320);
    assert_eq!(s["decode_counts"]["gpu"], 320);
    assert!(s["host_cpu_us_per_image"].as_f64().unwrap() > 0.0, "{s}");
    // The host's copies: the JPEG files for the decoder and the descriptors, and not the
    // output, which `run` has the device write into its registered output slots.
    assert!(stdout.contains("host copies: "), "{stdout}");
    let f = |k: &str| s[k].as_f64().unwrap();
    let output_mb_per_batch = f("output_mb_per_s") * f("seconds") / f("batches");
    let copied = f("host_copy_mb_per_batch");
    assert!(
        copied > 0.0 && copied < output_mb_per_batch,
        "{copied} MB copied, output {output_mb_per_batch}"
    );
}

#[test]
fn bad_inputs_fail_with_a_clear_message() {
    let d = tempfile::tempdir().unwrap();
    let out = augserve()
        .args(["run", "--quiet", "--data"])
        .arg(d.path().join("missing"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("missing") && err.contains("error:"), "{err}");

    let spec = d.path().join("bad.toml");
    std::fs::write(&spec, "[mix]\nmixup_alpha = -1.0\n").unwrap();
    let out = augserve().arg("spec").arg(&spec).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("mix.mixup_alpha"), "{err}");

    let out = augserve().arg("spec").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("[normalize]"));
}

#[test]
fn explicit_dataset_and_spec_file() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    let out = augserve()
        .arg("demo-data")
        .arg(&data)
        .args(["--per-class", "3"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let spec = d.path().join("spec.json");
    std::fs::write(&spec, r#"{"size": {"width": 64, "height": 48}, "crop": {"mode": "center"}, "output": {"dtype": "uint8", "layout": "NHWC"}}"#).unwrap();
    let out = augserve()
        .args([
            "run",
            "--quiet",
            "--batch-size",
            "8",
            "--world-size",
            "2",
            "--rank",
            "1",
            "--tail",
            "uneven",
        ])
        .arg("--data")
        .arg(&data)
        .arg("--spec")
        .arg(&spec)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("30 samples") && stdout.contains("total: 15 images"),
        "{stdout}"
    );
    assert!(
        stdout.contains("CenterCrop") && stdout.contains("uint8 NHWC"),
        "{stdout}"
    );
}

#[test]
fn explicit_gpu_without_a_gpu_fails_clearly_and_cpu_is_honoured() {
    if augserve_cuda::GpuDevice::open(0).is_ok() {
        skipped("a GPU is present");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let out = augserve()
        .args(["run", "--quiet", "--device", "gpu", "--max-batches", "1"])
        .arg("--cache-dir")
        .arg(d.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("GPU was requested") && err.contains("GPU unavailable"),
        "{err}"
    );
    let out = augserve()
        .args(["run", "--quiet", "--device", "cpu", "--max-batches", "1"])
        .arg("--cache-dir")
        .arg(d.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("batch ops: cpu (as asked)"));
    // A fixed GPU decode share outside (0, 1] is refused before anything runs.
    let out = augserve()
        .args(["run", "--quiet", "--gpu-decode-share", "1.5"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("at most 1, got 1.5"), "{err}");
}

#[test]
fn output_digest_is_the_same_whatever_the_thread_count() {
    let d = tempfile::tempdir().unwrap();
    let digest = |threads: &str, seed: &str| {
        let out = augserve()
            .args([
                "run", "--quiet", "--digest", "--device", "cpu", "--epochs", "2",
            ])
            .args(["--batch-size", "48", "--threads", threads, "--seed", seed])
            .arg("--cache-dir")
            .arg(d.path())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{stdout}");
        let line = stdout
            .lines()
            .find_map(|l| l.strip_prefix("output digest: sha256 "))
            .unwrap_or_else(|| panic!("no digest line: {stdout}"))
            .to_string();
        assert_eq!(line.len(), 64, "{line}");
        line
    };
    let one = digest("1", "7");
    assert_eq!(digest("3", "7"), one, "1 and 3 worker threads");
    assert_ne!(digest("1", "8"), one, "another seed");
}

#[test]
fn gpu_reports_the_cuda_libraries_and_why_the_gpu_is_not_usable() {
    if augserve_cuda::GpuDevice::open(0).is_ok() {
        skipped("a GPU is present");
        return;
    }
    let out = augserve().arg("gpu").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout.starts_with("Driver: ")
            && stdout.contains("\nNVRTC:  ")
            && stdout.contains("\nnvJPEG: "),
        "{stdout}"
    );
    assert!(
        err.contains("GPU unavailable") && err.contains("run on the CPU"),
        "{err}"
    );
    // With the test venv's NVIDIA wheels (a Python environment, as PyTorch's installs are)
    // and nothing on LD_LIBRARY_PATH, both libraries are found: nothing for scripts/run.sh
    // to install.
    let Some(python) = std::env::var_os("AUGSERVE_PYTHON") else {
        skipped("no test venv (run ./scripts/test.sh)");
        return;
    };
    let venv = std::path::Path::new(&python)
        .parent()
        .unwrap()
        .parent()
        .unwrap();
    let out = augserve()
        .args(["gpu", "--missing-libs"])
        .env("VIRTUAL_ENV", venv)
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
    // Pointed nowhere, it names the wheels to install.
    let empty = tempfile::tempdir().unwrap();
    let out = augserve()
        .args(["gpu", "--missing-libs"])
        .env("HOME", empty.path())
        .env("AUGSERVE_CUDA_LIB_DIRS", empty.path())
        .env_remove("VIRTUAL_ENV")
        .env_remove("CONDA_PREFIX")
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&out.stdout);
    for line in listed.lines() {
        assert!(
            ["nvidia-cuda-nvrtc-cu12", "nvidia-nvjpeg-cu12"].contains(&line),
            "{listed}"
        );
    }
    println!("missing outside the venv: {listed:?}");
}

#[test]
fn demo_serves_and_pulls_in_one_process() {
    let d = tempfile::tempdir().unwrap();
    let out = augserve()
        .args(["demo", "--epochs", "1", "--batch-size", "32"])
        .arg("--cache-dir")
        .arg(d.path())
        .env("AUGSERVE_DEVICE", "cpu")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("pulled 320 images in 10 batches"),
        "{stdout}"
    );
    assert!(stdout.contains("image errors: 0"), "{stdout}");
}

#[test]
fn bench_measures_each_configuration_and_writes_json_csv_and_chart() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    augserve_core::demo::write_demo_dataset(&data, 2).unwrap();
    let out = augserve()
        .args([
            "bench",
            "--quiet",
            "--devices",
            "cpu",
            "--threads",
            "1,2",
            "--batch-sizes",
            "4,8",
            "--batches",
            "2",
        ])
        .arg("--data")
        .arg(&data)
        .arg("--out-dir")
        .arg(d.path().join("out"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("images/s") && stdout.contains("decode"),
        "{stdout}"
    );
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.path().join("out/bench.json")).unwrap()).unwrap();
    let rows = json["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 4);
    for r in rows {
        assert_eq!(r["device"], "cpu");
        assert!(r["images_per_s"].as_f64().unwrap() > 0.0);
        assert!(r["decode_ms"].as_f64().unwrap() > 0.0);
    }
    let csv = std::fs::read_to_string(d.path().join("out/bench.csv")).unwrap();
    assert_eq!(csv.lines().count(), 5);
    // The chart is a real PNG with the bars drawn: the palette's first two colours (one per
    // thread count) cover a good share of the image.
    let png = image::open(d.path().join("out/bench.png"))
        .unwrap()
        .to_rgb8();
    assert_eq!(png.dimensions(), (1400, 560));
    let count = |c: [u8; 3]| png.pixels().filter(|p| p.0 == c).count();
    let (blue, orange) = (count([0x4c, 0x72, 0xb0]), count([0xdd, 0x84, 0x52]));
    assert!(blue > 5_000 && orange > 5_000, "bars: {blue} / {orange} px");
    assert!(stdout.contains("% of that"), "{stdout}");
    // Asking for the GPU without one fails clearly.
    let out = augserve()
        .args(["bench", "--quiet", "--devices", "gpu", "--batches", "1"])
        .arg("--data")
        .arg(&data)
        .output()
        .unwrap();
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--devices gpu"), "{err}");
    }
}

fn stdout_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn spec_prints_numbers_as_written_and_the_readme_shows_those_defaults() {
    let out = augserve().arg("spec").output().unwrap();
    assert!(out.status.success());
    let printed = stdout_of(&out);
    assert!(
        printed.contains("    0.08,\n") && printed.contains("    0.229,\n"),
        "{printed}"
    );
    assert!(!printed.contains("99999"), "{printed}");
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let after = readme
        .split_once("**The defaults**, as `augserve spec` prints them")
        .expect("README shows the defaults")
        .1;
    let block = after
        .split_once("```toml\n")
        .and_then(|(_, rest)| rest.split_once("```\n"))
        .unwrap()
        .0;
    assert_eq!(
        block, printed,
        "README.md's defaults differ from `augserve spec`"
    );
}

#[test]
fn serve_takes_every_setting_as_a_flag() {
    let out = augserve()
        .args([
            "serve",
            "--check-config",
            "--threads",
            "2",
            "--max-prefetch",
            "3",
        ])
        .args([
            "--gpu-decode",
            "--listen-uds",
            "/tmp/x.sock",
            "--cuda-device",
            "1",
        ])
        .env_remove("AUGSERVE_LISTEN_TCP")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let cfg = stdout_of(&out);
    for line in [
        "threads = 2\n",
        "max_prefetch = 3\n",
        "gpu_decode = true\n",
        "cuda_device = 1\n",
    ] {
        assert!(cfg.contains(line), "{line} missing from\n{cfg}");
    }
    // Only the socket was asked for: no TCP listener beside it.
    assert!(!cfg.contains("listen_tcp"), "{cfg}");
    let help = stdout_of(&augserve().args(["serve", "--help"]).output().unwrap());
    for s in augserve_server::config::SETTINGS {
        assert!(
            help.contains(&format!("--{}", s.flag())),
            "--{} missing",
            s.flag()
        );
        assert!(help.contains(&s.env_name()), "{} missing", s.env_name());
    }
}

#[test]
fn an_unknown_variable_or_key_is_refused_with_the_nearest_name() {
    for args in [&["serve", "--check-config"][..], &["spec"][..]] {
        let out = augserve()
            .args(args)
            .env("AUGSERVE_THRADS", "2")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = stderr_of(&out);
        assert!(
            err.contains("'AUGSERVE_THRADS' (did you mean 'AUGSERVE_THREADS'?)"),
            "{args:?}: {err}"
        );
    }
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("server.toml");
    std::fs::write(
        &file,
        "listen_uds = \"/tmp/a.sock\"\n[limits]\nmax_batch = 64\n",
    )
    .unwrap();
    let out = augserve()
        .args(["serve", "--check-config", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr_of(&out);
    assert!(
        err.contains("limits.max_batch: unknown key 'max_batch'"),
        "{err}"
    );
    assert!(err.contains("did you mean 'max_batch_size'"), "{err}");
}

#[test]
fn a_listener_that_cannot_bind_says_which_address_and_why() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let d = tempfile::tempdir().unwrap();
    let out = augserve()
        .args(["serve", "--device", "cpu", "--listen-tcp", &addr])
        .env("AUGSERVE_CACHE_DIR", d.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr_of(&out);
    assert!(
        err.contains(&format!("cannot listen on TCP {addr}")) && err.contains("in use"),
        "{err}"
    );
    // A socket another process still accepts on is never taken over.
    let sock = d.path().join("busy.sock");
    let _busy = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let out = augserve()
        .args(["serve", "--device", "cpu", "--listen-uds"])
        .arg(&sock)
        .env("AUGSERVE_CACHE_DIR", d.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr_of(&out);
    assert!(
        err.contains("cannot listen on Unix socket") && err.contains("another server"),
        "{err}"
    );
    assert!(sock.exists(), "the other server's socket was removed");
}
