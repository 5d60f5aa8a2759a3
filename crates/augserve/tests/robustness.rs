#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]
//! The robustness suite, against the real server binary: hostile images, absurd requests, path
//! escapes, 64 concurrent streams with cancellations and slow readers, killed clients and
//! SIGTERM under load. Each test appends its summary (inputs per class, errors returned,
//! crashes, peak RSS) to `target/tmp/robustness-summary.md`; scripts/test.sh prints it.

mod common;
use common::{rt, Server};

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

/// A JPEG whose frame header claims 65535 x 65535 (a decompression bomb).
fn bomb() -> Vec<u8> {
    let mut b = std::fs::read(testdata().join("reftest/mozilla_jpg-size-32x32.jpg")).unwrap();
    let sof = (0..b.len() - 9)
        .find(|&i| b[i] == 0xFF && (0xC0..=0xC2).contains(&b[i + 1]))
        .unwrap();
    b[sof + 5..sof + 9].copy_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF]);
    b
}

/// The hostile inputs, by class.
fn hostile_inputs() -> BTreeMap<&'static str, Vec<(String, Vec<u8>)>> {
    let mut classes: BTreeMap<&str, Vec<(String, Vec<u8>)>> = BTreeMap::new();
    let read = |p: &PathBuf| {
        (
            p.file_name().unwrap().to_string_lossy().to_string(),
            std::fs::read(p).unwrap(),
        )
    };
    classes.insert(
        "crash corpus",
        files(&testdata().join("crash"), "jpg")
            .iter()
            .map(read)
            .collect(),
    );
    let mut truncated = Vec::new();
    for p in files(&testdata().join("reftest"), "jpg") {
        let (name, bytes) = read(&p);
        for frac in [0.05, 0.3, 0.6, 0.95] {
            let n = ((bytes.len() as f64) * frac) as usize;
            let pct = (frac * 100.0) as u32;
            truncated.push((format!("{name}[..{n}] ({pct} %)"), bytes[..n].to_vec()));
        }
        truncated.push((
            format!("{name}[..len-2]"),
            bytes[..bytes.len() - 2].to_vec(),
        ));
    }
    classes.insert("truncated good files", truncated);
    let mut rng = XorShift(0x5eed);
    let random: Vec<(String, Vec<u8>)> = (0..60)
        .map(|i| {
            let len = rng.below(8192) as usize;
            let mut v: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            if i % 2 == 0 && v.len() > 4 {
                v[..3].copy_from_slice(&[0xFF, 0xD8, 0xFF]); // looks like a JPEG at first
            }
            (format!("random-{i}"), v)
        })
        .collect();
    classes.insert("random bytes", random);
    classes.insert("empty file", vec![("empty.jpg".into(), Vec::new())]);
    classes.insert(
        "65535x65535 header (bomb)",
        vec![("bomb.jpg".into(), bomb())],
    );
    let pngs: Vec<(String, Vec<u8>)> = files(&testdata().join("reftest"), "png")
        .iter()
        .take(5)
        .map(|p| (format!("{}.jpg", read(p).0), read(p).1))
        .collect();
    let mut png_hostile = Vec::new();
    for (name, bytes) in &pngs {
        for frac in [0.02, 0.3, 0.9] {
            let n = ((bytes.len() as f64) * frac) as usize;
            png_hostile.push((format!("{name}[..{n}]"), bytes[..n].to_vec()));
        }
    }
    classes.insert("truncated PNGs", png_hostile);
    // A PNG whose header claims 65535 x 65535: refused from the header.
    let mut png_bomb = pngs[0].1.clone();
    png_bomb[16..24].copy_from_slice(&[0, 0, 0xFF, 0xFF, 0, 0, 0xFF, 0xFF]);
    classes.insert(
        "65535x65535 PNG header (bomb)",
        vec![("bomb.png".into(), png_bomb)],
    );
    classes.insert("PNG named .jpg", pngs);
    // WebP: a real one (lossless, from the image crate), cut short, and a header claiming
    // 16383 x 16383 (refused from the header).
    let mut webp = Vec::new();
    image::codecs::webp::WebPEncoder::new_lossless(&mut webp)
        .encode(&[90u8; 64 * 48 * 3], 64, 48, image::ExtendedColorType::Rgb8)
        .unwrap();
    let mut webp_hostile: Vec<(String, Vec<u8>)> = [0.1, 0.5, 0.9]
        .iter()
        .map(|frac| {
            let n = ((webp.len() as f64) * frac) as usize;
            (format!("lossless.webp[..{n}]"), webp[..n].to_vec())
        })
        .collect();
    webp_hostile.push(("lossless.webp".into(), webp.clone()));
    classes.insert("WebP, whole and truncated", webp_hostile);
    let mut webp_bomb = webp;
    webp_bomb[21..25].copy_from_slice(&(16382u32 | (16382 << 14)).to_le_bytes());
    classes.insert(
        "16383x16383 WebP header (bomb)",
        vec![("bomb.webp".into(), webp_bomb)],
    );
    let gif = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;".to_vec();
    classes.insert("GIF named .jpg", vec![("tiny.gif.jpg".into(), gif)]);
    classes
}

/// `inputs` through AugmentImages with `on_damaged = ACCEPT`: (images kept, warnings, errors).
async fn augment_accepting_damage(
    c: &mut augserve_client::v1::aug_serve_client::AugServeClient<tonic::transport::Channel>,
    inputs: &[(String, Vec<u8>)],
) -> (usize, usize, usize) {
    let (mut kept, mut warned, mut failed) = (0, 0, 0);
    for chunk in inputs.chunks(16) {
        let req = v1::AugmentImagesRequest {
            images: chunk
                .iter()
                .map(|(_, b)| bytes::Bytes::from(b.clone()))
                .collect(),
            spec: Some(v1::PipelineSpec {
                width: Some(48),
                height: Some(48),
                on_damaged: v1::DamagedPolicy::Accept as i32,
                ..Default::default()
            }),
            seed: 1,
            ..Default::default()
        };
        let b = c.augment_images(req).await.unwrap().into_inner();
        for w in &b.warnings {
            assert!(["truncated", "damaged"].contains(&w.code.as_str()), "{w:?}");
            assert!(
                b.sample_ids.contains(&w.sample_id),
                "a warned image is not in the batch"
            );
        }
        (kept, warned, failed) = (
            kept + b.sample_ids.len(),
            warned + b.warnings.len(),
            failed + b.errors.len(),
        );
    }
    (kept, warned, failed)
}

#[test]
fn hostile_images_fail_alone_and_the_server_stays_up() {
    let classes = hostile_inputs();
    // The same inputs as files of a dataset, for the streaming path.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("hostile");
    let mut n_files = 0;
    for (class, inputs) in &classes {
        let cdir = data.join(class.replace([' ', '(', ')'], "_"));
        std::fs::create_dir_all(&cdir).unwrap();
        for (i, (_, bytes)) in inputs.iter().enumerate() {
            std::fs::write(cdir.join(format!("{i:03}.jpg")), bytes).unwrap();
            n_files += 1;
        }
    }
    let mut server = Server::start(
        &[("hostile", &data)],
        &[("AUGSERVE_MAX_PIXELS", "40000000")],
    );
    let watch = RssWatch::new(server.pid());
    let addr = server.addr();
    let idle = rss_kib(server.pid());
    let mut lines = vec![
        "| class | inputs | decoded | per-image errors (by code) |".to_string(),
        "| --- | ---: | ---: | --- |".to_string(),
    ];
    let mut partial_reported = Vec::new();
    let mut accepted = Vec::new();
    rt().block_on(async {
        let mut c = augserve_client::connect(&addr, 256 << 20).await.unwrap();
        for (class, inputs) in &classes {
            let mut decoded = 0;
            let mut decoded_names = Vec::new();
            let mut codes: BTreeMap<String, usize> = BTreeMap::new();
            for chunk in inputs.chunks(16) {
                let req = v1::AugmentImagesRequest {
                    images: chunk.iter().map(|(_, b)| bytes::Bytes::from(b.clone())).collect(),
                    spec: Some(v1::PipelineSpec {
                        width: Some(48),
                        height: Some(48),
                        ..Default::default()
                    }),
                    seed: 1,
                    ..Default::default()
                };
                match c.augment_images(req).await {
                    Ok(r) => {
                        let b = r.into_inner();
                        decoded += b.sample_ids.len();
                        decoded_names.extend(b.sample_ids.iter().map(|&i| &chunk[i as usize].0));
                        for e in &b.errors {
                            assert!(!e.code.is_empty() && !e.reason.is_empty(), "{e:?}");
                            *codes.entry(e.code.clone()).or_default() += 1;
                        }
                        // Every image is accounted for: decoded, or an error of its own.
                        let mut seen: Vec<u64> = b.sample_ids.clone();
                        seen.extend(b.errors.iter().map(|e| e.sample_id));
                        seen.sort_unstable();
                        assert_eq!(seen, (0..chunk.len() as u64).collect::<Vec<_>>(), "{class}");
                    }
                    // A bad image never fails the call (on_error = skip).
                    Err(e) => panic!("{class}: the call failed: {e}"),
                }
                assert!(healthy(&addr).await, "unhealthy after {class}");
            }
            if class.contains("(bomb)") {
                assert_eq!(codes.get("too_many_pixels"), Some(&1), "{codes:?}");
            }
            if *class == "truncated good files" {
                // Only cuts that leave the pixel data whole (the EOI marker, trailing bytes)
                // may decode; a cut into the data is reported, never filled in with grey.
                let bad: Vec<_> = decoded_names
                    .iter()
                    .filter(|n| !n.ends_with("[..len-2]") && !n.ends_with("(95 %)"))
                    .collect();
                assert!(bad.is_empty(), "decoded though cut into the data: {bad:?}");
            }
            let partial = ["truncated", "damaged"]
                .iter()
                .filter_map(|k| codes.get(*k))
                .sum::<usize>();
            if partial > 0 {
                partial_reported.push(format!("{class} {partial}"));
                // With on_damaged = accept the same images are kept, each with its warning.
                let (kept, warned, failed) = augment_accepting_damage(&mut c, inputs).await;
                assert_eq!((kept, warned), (decoded + partial, partial), "{class}");
                assert_eq!(failed + kept, inputs.len(), "{class}");
                accepted.push(format!("{class} {warned}"));
            }
            let errors: usize = codes.values().sum();
            let by_code = codes
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ");
            lines.push(format!(
                "| {class} | {} | {decoded} | {errors}: {by_code} |",
                inputs.len()
            ));
        }
        // The same files streamed from a dataset: one epoch, every file accounted for once.
        let mut s = c
            .stream_batches(v1::StreamBatchesRequest {
                dataset: "hostile".into(),
                spec: Some(v1::PipelineSpec {
                    width: Some(48),
                    height: Some(48),
                    ..Default::default()
                }),
                batch_size: 32,
                epochs: 1,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let (mut ids, mut errors) = (Vec::new(), 0);
        while let Some(b) = s.message().await.unwrap() {
            ids.extend(b.sample_ids.iter().copied());
            ids.extend(b.errors.iter().map(|e| e.sample_id));
            errors += b.errors.len();
        }
        ids.sort_unstable();
        assert_eq!(ids, (0..n_files as u64).collect::<Vec<_>>());
        lines.push(String::new());
        lines.push(format!(
            "Streamed as a dataset: {n_files} files in one epoch, {errors} per-image errors, the stream completed."
        ));
        assert!(healthy(&addr).await);
    });
    assert!(server.alive(), "the server crashed");
    lines.push(format!(
        "Partly decodable images reported as `truncated` / `damaged` instead of being decoded \
         with made-up pixels: {}.",
        partial_reported.join(", ")
    ));
    lines.push(format!(
        "With the spec's `on_damaged = accept` the same images are kept in their batch, each \
         listed in `Batch.warnings` with its code: {}.",
        accepted.join(", ")
    ));
    let peak = watch.peak();
    lines.push(format!(
        "Crashes: 0 (server alive and SERVING after every request). Server RSS: idle {} MiB, peak {} MiB.",
        idle / 1024,
        peak / 1024
    ));
    // The bomb is refused from its header; nothing near 65535^2 * 3 bytes (12 GiB) is allocated.
    assert!(peak < 512 * 1024, "peak RSS {peak} KiB");
    summary(
        "Hostile images (AugmentImages and a streamed dataset)",
        &lines,
    );
}

fn spec_with(f: impl FnOnce(&mut v1::PipelineSpec)) -> Option<v1::PipelineSpec> {
    let mut s = v1::PipelineSpec::default();
    f(&mut s);
    Some(s)
}

#[test]
fn absurd_requests_are_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    augserve_core::demo::write_demo_dataset(&data, 2).unwrap();
    let mut server = Server::start(
        &[("data", &data)],
        &[
            ("AUGSERVE_MAX_REQUEST_BYTES", "2000000"),
            ("AUGSERVE_MAX_IMAGES_PER_REQUEST", "8"),
            ("AUGSERVE_MAX_BATCH_BYTES", "50000000"),
        ],
    );
    let base = v1::StreamBatchesRequest {
        dataset: "data".into(),
        batch_size: 4,
        epochs: 1,
        ..Default::default()
    };
    type Case = (&'static str, v1::StreamBatchesRequest, Code, &'static str);
    let s = |spec: Option<v1::PipelineSpec>| v1::StreamBatchesRequest {
        spec,
        ..base.clone()
    };
    let cases: Vec<Case> = vec![
        (
            "width 0",
            s(spec_with(|p| p.width = Some(0))),
            Code::InvalidArgument,
            "size.width",
        ),
        (
            "height 100000",
            s(spec_with(|p| p.height = Some(100_000))),
            Code::InvalidArgument,
            "size.height",
        ),
        (
            "batch_size 10^9",
            v1::StreamBatchesRequest {
                batch_size: 1_000_000_000,
                ..base.clone()
            },
            Code::InvalidArgument,
            "batch_size",
        ),
        (
            "batch_size 0",
            v1::StreamBatchesRequest {
                batch_size: 0,
                ..base.clone()
            },
            Code::InvalidArgument,
            "batch_size",
        ),
        (
            "batch over max_batch_bytes",
            s(spec_with(|p| {
                p.width = Some(4096);
                p.height = Some(4096);
            })),
            Code::ResourceExhausted,
            "max_batch_bytes",
        ),
        (
            "flip_prob NaN",
            s(spec_with(|p| p.flip_prob = Some(f32::NAN))),
            Code::InvalidArgument,
            "flip_prob",
        ),
        (
            "flip_prob 2",
            s(spec_with(|p| p.flip_prob = Some(2.0))),
            Code::InvalidArgument,
            "flip_prob",
        ),
        (
            "brightness -1",
            s(spec_with(|p| {
                p.color = Some(v1::ColorJitter {
                    brightness: -1.0,
                    ..Default::default()
                })
            })),
            Code::InvalidArgument,
            "color.brightness",
        ),
        (
            "saturation NaN",
            s(spec_with(|p| {
                p.color = Some(v1::ColorJitter {
                    saturation: f32::NAN,
                    ..Default::default()
                })
            })),
            Code::InvalidArgument,
            "color.saturation",
        ),
        (
            "mixup_alpha -0.5",
            s(spec_with(|p| {
                p.mix = Some(v1::Mix {
                    mixup_alpha: -0.5,
                    ..Default::default()
                })
            })),
            Code::InvalidArgument,
            "mix.mixup_alpha",
        ),
        (
            "cutmix_alpha inf",
            s(spec_with(|p| {
                p.mix = Some(v1::Mix {
                    cutmix_alpha: f32::INFINITY,
                    ..Default::default()
                })
            })),
            Code::InvalidArgument,
            "mix.cutmix_alpha",
        ),
        (
            "label_smoothing 1",
            s(spec_with(|p| {
                p.mix = Some(v1::Mix {
                    label_smoothing: 1.0,
                    ..Default::default()
                })
            })),
            Code::InvalidArgument,
            "mix.label_smoothing",
        ),
        (
            "std 0",
            s(spec_with(|p| {
                p.normalize = Some(v1::Normalize {
                    mean: vec![0.5; 3],
                    std: vec![0.2, 0.0, 0.2],
                })
            })),
            Code::InvalidArgument,
            "normalize.std",
        ),
        (
            "mean of 2 values",
            s(spec_with(|p| {
                p.normalize = Some(v1::Normalize {
                    mean: vec![0.5; 2],
                    std: vec![],
                })
            })),
            Code::InvalidArgument,
            "normalize.mean",
        ),
        (
            "scale reversed",
            s(spec_with(|p| {
                p.crop = Some(v1::Crop {
                    scale: vec![0.9, 0.1],
                    ..Default::default()
                })
            })),
            Code::InvalidArgument,
            "crop.scale",
        ),
        (
            "ratio NaN",
            s(spec_with(|p| {
                p.crop = Some(v1::Crop {
                    ratio: vec![f32::NAN, 1.0],
                    ..Default::default()
                })
            })),
            Code::InvalidArgument,
            "crop.ratio",
        ),
        (
            "crop_pct 0",
            s(spec_with(|p| {
                p.crop = Some(v1::Crop {
                    mode: 2,
                    crop_pct: Some(0.0),
                    ..Default::default()
                })
            })),
            Code::InvalidArgument,
            "crop.crop_pct",
        ),
        (
            "dtype 77",
            s(spec_with(|p| p.dtype = 77)),
            Code::InvalidArgument,
            "dtype",
        ),
        (
            "layout 9",
            s(spec_with(|p| p.layout = 9)),
            Code::InvalidArgument,
            "layout",
        ),
        (
            "crop.mode 42",
            s(spec_with(|p| {
                p.crop = Some(v1::Crop {
                    mode: 42,
                    ..Default::default()
                })
            })),
            Code::InvalidArgument,
            "crop.mode",
        ),
        (
            "mix.mode 7",
            s(spec_with(|p| {
                p.mix = Some(v1::Mix {
                    mode: 7,
                    ..Default::default()
                })
            })),
            Code::InvalidArgument,
            "mix.mode",
        ),
        (
            "placement.resize 5",
            s(spec_with(|p| {
                p.placement = Some(v1::Placement {
                    resize: 5,
                    ..Default::default()
                })
            })),
            Code::InvalidArgument,
            "placement.resize",
        ),
        (
            "on_error 3",
            s(spec_with(|p| p.on_error = 3)),
            Code::InvalidArgument,
            "on_error",
        ),
        (
            "tail 99",
            v1::StreamBatchesRequest {
                tail: 99,
                ..base.clone()
            },
            Code::InvalidArgument,
            "tail",
        ),
        (
            "rank 5 of 2",
            v1::StreamBatchesRequest {
                rank: 5,
                world_size: 2,
                ..base.clone()
            },
            Code::InvalidArgument,
            "rank",
        ),
        (
            "prefetch 1000",
            v1::StreamBatchesRequest {
                prefetch: 1000,
                ..base.clone()
            },
            Code::InvalidArgument,
            "prefetch",
        ),
        (
            "unknown dataset",
            v1::StreamBatchesRequest {
                dataset: "imagenet".into(),
                ..base.clone()
            },
            Code::NotFound,
            "imagenet",
        ),
    ];
    let mut lines = vec![
        "| request | code | message |".to_string(),
        "| --- | --- | --- |".to_string(),
    ];
    let addr = server.addr();
    rt().block_on(async {
        let mut c = augserve_client::connect(&addr, 256 << 20).await.unwrap();
        for (what, req, code, field) in cases {
            let e = c
                .stream_batches(req)
                .await
                .err()
                .unwrap_or_else(|| panic!("{what}: accepted"));
            assert_eq!(e.code(), code, "{what}: {e}");
            assert!(
                e.message().contains(field),
                "{what}: message '{}' does not name {field}",
                e.message()
            );
            lines.push(format!("| {what} | {:?} | {} |", e.code(), e.message()));
        }
        // AugmentImages: oversize message, too many images, mismatched labels.
        let img = std::fs::read(testdata().join("reftest/mozilla_jpg-size-32x32.jpg")).unwrap();
        let aug = |images: Vec<Vec<u8>>, labels: Vec<i64>| v1::AugmentImagesRequest {
            images: images.into_iter().map(bytes::Bytes::from).collect(),
            labels,
            ..Default::default()
        };
        let checks: Vec<(&str, v1::AugmentImagesRequest, Code, &str)> = vec![
            (
                "3 MB message (max_request_bytes 2 MB)",
                aug(vec![vec![0u8; 3_000_000]], vec![]),
                Code::OutOfRange,
                "limit",
            ),
            (
                "9 images (max_images_per_request 8)",
                aug(vec![img.clone(); 9], vec![]),
                Code::ResourceExhausted,
                "max_images_per_request",
            ),
            (
                "2 images, 1 label",
                aug(vec![img.clone(); 2], vec![1]),
                Code::InvalidArgument,
                "labels",
            ),
        ];
        for (what, req, code, field) in checks {
            let e = c.augment_images(req).await.unwrap_err();
            assert_eq!(e.code(), code, "{what}: {e}");
            assert!(e.message().contains(field), "{what}: {}", e.message());
            lines.push(format!("| {what} | {:?} | {} |", e.code(), e.message()));
        }
        assert!(healthy(&addr).await);
    });
    assert!(server.alive());
    summary("Absurd requests", &lines);
}

/// A JPEG of one colour, for a "secret" outside the datasets whose pixels must never show up.
fn solid_jpeg(path: &Path, rgb: [u8; 3]) {
    image::RgbImage::from_pixel(64, 64, image::Rgb(rgb))
        .save(path)
        .unwrap();
}

#[test]
fn nothing_outside_a_dataset_root_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let outside = d.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let secret = outside.join("secret.jpg");
    solid_jpeg(&secret, [255, 0, 255]);
    // An image folder with a symlinked file and a symlinked class folder leaving the root.
    let folder = d.join("folder");
    std::fs::create_dir_all(folder.join("ok")).unwrap();
    solid_jpeg(&folder.join("ok/a.jpg"), [0, 128, 0]);
    std::os::unix::fs::symlink(&secret, folder.join("ok/link.jpg")).unwrap();
    std::os::unix::fs::symlink(&outside, folder.join("linked-class")).unwrap();
    // A file list whose entry is a symlink inside the root that points outside.
    let list_dir = d.join("list");
    std::fs::create_dir_all(&list_dir).unwrap();
    solid_jpeg(&list_dir.join("good.jpg"), [0, 0, 200]);
    std::os::unix::fs::symlink(&secret, list_dir.join("sneaky.jpg")).unwrap();
    std::fs::write(list_dir.join("list.txt"), "good.jpg 0\nsneaky.jpg 1\n").unwrap();
    // A tar whose member names try to escape: they are names, never paths.
    let tar_path = d.join("shard.tar");
    {
        let mut t = tar::Builder::new(std::fs::File::create(&tar_path).unwrap());
        let green = std::fs::read(folder.join("ok/a.jpg")).unwrap();
        for name in ["sample0.jpg", "../secret.jpg", "/etc/secret.jpg"] {
            let mut h = tar::Header::new_gnu();
            h.set_size(green.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            // set_path refuses "..": write the raw name, as a hostile shard would.
            let raw = &mut h.as_old_mut().name;
            raw.fill(0);
            raw[..name.len()].copy_from_slice(name.as_bytes());
            h.set_cksum();
            t.append(&h, green.as_slice()).unwrap();
        }
        t.finish().unwrap();
    }
    let mut server = Server::start(
        &[
            ("folder", &folder),
            ("list", &list_dir.join("list.txt")),
            ("tar", &tar_path),
        ],
        &[],
    );
    let mut lines = Vec::new();
    let addr = server.addr();
    rt().block_on(async {
        let mut c = augserve_client::connect(&addr, 256 << 20).await.unwrap();
        // Dataset names are names: paths in them find nothing.
        for name in ["../folder", "/etc/passwd", "folder/../folder", "folder/", ".", outside.to_str().unwrap()] {
            let e = c
                .stream_batches(v1::StreamBatchesRequest {
                    dataset: name.into(),
                    batch_size: 1,
                    epochs: 1,
                    ..Default::default()
                })
                .await
                .unwrap_err();
            assert_eq!(e.code(), Code::NotFound, "{name}");
        }
        lines.push("Dataset names `../folder`, `/etc/passwd`, `folder/../folder`, `folder/`, `.`, an absolute path: NOT_FOUND.".into());
        for ds in ["folder", "list", "tar"] {
            let mut s = c
                .stream_batches(v1::StreamBatchesRequest {
                    dataset: ds.into(),
                    spec: Some(v1::PipelineSpec {
                        width: Some(16),
                        height: Some(16),
                        dtype: v1::DType::DtypeUint8 as i32,
                        ..Default::default()
                    }),
                    batch_size: 8,
                    epochs: 1,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            let (mut images, mut errors) = (0, Vec::new());
            while let Some(b) = s.message().await.unwrap() {
                let t = b.images.unwrap_or_default();
                // No delivered pixel is the secret's magenta.
                for px in t.data.chunks(3).filter(|p| p.len() == 3) {
                    assert!(!(px[0] > 200 && px[1] < 60 && px[2] > 200), "{ds}: secret pixels delivered");
                }
                images += b.sample_ids.len();
                errors.extend(b.errors.iter().map(|e| format!("{} ({}: {})", e.source, e.code, e.reason)));
            }
            lines.push(format!("`{ds}`: {images} images delivered, none from outside; refused: {errors:?}"));
            if ds == "list" {
                assert_eq!(images, 1);
                assert_eq!(errors.len(), 1, "{errors:?}");
                assert!(errors[0].contains("sneaky.jpg"), "{errors:?}");
            }
            if ds == "folder" {
                assert_eq!(images, 1, "symlinks out of the root are skipped at index time");
            }
        }
    });
    assert!(server.alive());
    // A file list naming `..` or absolute paths is refused when the server starts.
    for bad in ["../outside/secret.jpg 0\n", "/etc/passwd 0\n"] {
        std::fs::write(list_dir.join("bad.txt"), bad).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_augserve"))
            .args([
                "serve",
                "--device",
                "cpu",
                "--listen-tcp",
                "127.0.0.1:0",
                "--dataset",
            ])
            .arg(format!("bad={}", list_dir.join("bad.txt").display()))
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("must be relative"), "{err}");
        lines.push(format!(
            "File list line `{}`: the server refuses to start: {}",
            bad.trim(),
            err.lines().last().unwrap_or("").trim()
        ));
    }
    summary("Path escapes", &lines);
}

/// Reads a stream, checking every completed epoch holds each of `len` samples exactly once.
async fn read_stream(
    c: &mut augserve_client::v1::aug_serve_client::AugServeClient<tonic::transport::Channel>,
    len: u64,
    batch_size: u32,
    seed: u64,
    slow: Option<Duration>,
    stop_after: Option<u64>,
    deadline: Instant,
) -> (u64, u64, u64) {
    let req = v1::StreamBatchesRequest {
        dataset: "data".into(),
        spec: Some(v1::PipelineSpec {
            width: Some(32),
            height: Some(32),
            ..Default::default()
        }),
        batch_size,
        seed,
        epochs: 0,
        tail: v1::Tail::Uneven as i32,
        ..Default::default()
    };
    // At the limit, a stream reopened right after a cancel can race the server's release of the
    // old one's slot (RESOURCE_EXHAUSTED); the client retries, as a real one would.
    let mut retries = 0u64;
    let mut s = loop {
        match c.stream_batches(req.clone()).await {
            Ok(s) => break s.into_inner(),
            Err(e) if e.code() == Code::ResourceExhausted && retries < 200 => {
                retries += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("stream refused: {e}"),
        }
    };
    let (mut batches, mut epochs_checked) = (0u64, 0u64);
    let mut epoch = 0u64;
    let mut ids: Vec<u64> = Vec::new();
    while Instant::now() < deadline {
        let b = s.message().await.unwrap().expect("an endless stream ended");
        assert!(b.errors.is_empty(), "{:?}", b.errors);
        if b.epoch != epoch {
            ids.sort_unstable();
            assert_eq!(ids, (0..len).collect::<Vec<_>>(), "epoch {epoch} not exact");
            epochs_checked += 1;
            ids.clear();
            epoch = b.epoch;
        }
        ids.extend(b.sample_ids.iter().copied());
        batches += 1;
        if stop_after.is_some_and(|n| batches >= n) {
            break; // cancel: drop the stream mid-epoch
        }
        if let Some(d) = slow {
            tokio::time::sleep(d).await;
        }
    }
    (batches, epochs_checked, retries)
}

#[test]
fn sixty_four_streams_with_cancellations_and_slow_readers() {
    let seconds: u64 = std::env::var("AUGSERVE_ROBUSTNESS_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    augserve_core::demo::write_demo_dataset(&data, 3).unwrap(); // 30 samples
    let mut server = Server::start(
        &[("data", &data)],
        &[("AUGSERVE_MAX_CONCURRENT_STREAMS", "64")],
    );
    let pid = server.pid();
    let addr = server.addr();
    // Warm up (worker pool, allocator), then take the baseline.
    rt().block_on(async {
        let mut c = augserve_client::connect(&addr, 64 << 20).await.unwrap();
        read_stream(
            &mut c,
            30,
            8,
            0,
            None,
            Some(10),
            Instant::now() + Duration::from_secs(30),
        )
        .await;
    });
    std::thread::sleep(Duration::from_millis(500));
    let (idle, fds0, threads0) = (rss_kib(pid), open_fds(pid), threads(pid));
    let watch = RssWatch::new(pid);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let (batches, epochs, cancels, retries) = rt().block_on(async {
        let mut tasks = Vec::new();
        for k in 0..64u64 {
            // Half over the Unix socket, half over TCP.
            let addr = if k % 2 == 0 {
                addr.clone()
            } else {
                server.tcp.clone()
            };
            tasks.push(tokio::spawn(async move {
                let mut rng = XorShift(0x9e37_79b9_7f4a_7c15 ^ (k + 1));
                let mut c = augserve_client::connect(&addr, 64 << 20).await.unwrap();
                let (mut batches, mut epochs, mut cancels, mut retries) = (0, 0, 0, 0);
                while Instant::now() < deadline {
                    let batch_size = 1 + rng.below(8) as u32;
                    let (slow, stop_after) = match k % 4 {
                        0 => (None, None),
                        1 => (Some(Duration::from_millis(20 + rng.below(200))), None),
                        _ => (None, Some(1 + rng.below(12))),
                    };
                    let (b, e, r) = read_stream(
                        &mut c,
                        30,
                        batch_size,
                        rng.next(),
                        slow,
                        stop_after,
                        deadline,
                    )
                    .await;
                    batches += b;
                    epochs += e;
                    retries += r;
                    cancels += u64::from(stop_after.is_some());
                }
                (batches, epochs, cancels, retries)
            }));
        }
        let (mut batches, mut epochs, mut cancels, mut retries) = (0, 0, 0, 0);
        for t in tasks {
            let (b, e, c, r) = t.await.unwrap();
            batches += b;
            epochs += e;
            cancels += c;
            retries += r;
        }
        (batches, epochs, cancels, retries)
    });
    let peak = watch.peak();
    // Streams end asynchronously after their clients leave; give them a moment.
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(10)
        && (threads(pid) > threads0 + 1 || open_fds(pid) > fds0 + 2)
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    let (after, fds1, threads1) = (rss_kib(pid), open_fds(pid), threads(pid));
    assert!(server.alive());
    let lines = vec![
        format!("64 concurrent streams for {seconds} s, half over UDS, half over TCP (16 fast readers, 16 slow readers sleeping 20-220 ms per batch, 32 cancelling after 1-12 batches and reopening): {batches} batches, {epochs} complete epochs checked exact (each of 30 samples once), {cancels} cancellations, 0 errors; {retries} reopenings had to retry a RESOURCE_EXHAUSTED at the 64-stream limit."),
        format!("Server RSS: idle {} MiB, peak {} MiB, after {} MiB. Threads: {threads0} before, {threads1} after. Open fds: {fds0} before, {fds1} after.", idle / 1024, peak / 1024, after / 1024),
    ];
    summary(
        "Load: concurrent streams, cancellations, slow readers",
        &lines,
    );
    assert!(epochs > 64, "too few epochs completed: {epochs}");
    // 64 streams x (prefetch 2 + 1 in flight) x 8 x 3 x 32 x 32 x 4 bytes is under 20 MiB; the
    // rest is decoding buffers. A generous fixed bound: 300 MiB over idle.
    assert!(
        peak < idle + 300 * 1024,
        "peak RSS {peak} KiB (idle {idle} KiB)"
    );
    assert!(
        after < idle + 32 * 1024,
        "RSS after: {after} KiB (idle {idle} KiB)"
    );
    assert!(threads1 <= threads0 + 1, "threads {threads0} -> {threads1}");
    assert!(fds1 <= fds0 + 2, "fds {fds0} -> {fds1}");
}

#[test]
fn killed_clients_and_sigterm_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    augserve_core::demo::write_demo_dataset(&data, 3).unwrap();
    let mut server = Server::start(
        &[("data", &data)],
        &[("AUGSERVE_MAX_CONCURRENT_STREAMS", "4")],
    );
    let addr = server.addr();
    // max_concurrent_streams: with 4 open, a 5th is refused; closing one lets the next in.
    let limit = rt().block_on(async {
        let mut c = augserve_client::connect(&addr, 64 << 20).await.unwrap();
        let open = |c: &mut augserve_client::v1::aug_serve_client::AugServeClient<
            tonic::transport::Channel,
        >| {
            let mut c = c.clone();
            async move {
                c.stream_batches(v1::StreamBatchesRequest {
                    dataset: "data".into(),
                    batch_size: 2,
                    epochs: 0,
                    ..Default::default()
                })
                .await
            }
        };
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(open(&mut c).await.unwrap());
        }
        let e = open(&mut c).await.unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted);
        held.pop();
        let reopened = open(&mut c).await.is_ok();
        assert!(reopened);
        e.message().to_string()
    });
    let mut lines = vec![format!("max_concurrent_streams 4: a 5th stream gets RESOURCE_EXHAUSTED ({limit}); after one closes, the next is admitted.")];
    // A client process killed mid-stream (SIGKILL: no goodbye on the wire).
    for _ in 0..4 {
        let mut client = Command::new(env!("CARGO_BIN_EXE_augserve"))
            .args([
                "pull",
                "--quiet",
                "--dataset",
                "data",
                "--batch-size",
                "4",
                "--epochs",
                "0",
                "--addr",
                &addr,
            ])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(700));
        client.kill().unwrap();
        client.wait().unwrap();
    }
    lines.push(
        "4 `augserve pull` processes killed with SIGKILL mid-stream: server still SERVING."
            .to_string(),
    );
    rt().block_on(async { assert!(healthy(&addr).await) });
    // SIGTERM with 4 streams in flight: they end, the server exits 0 within the grace period.
    let started = rt().block_on(async {
        let mut streams = Vec::new();
        for _ in 0..4 {
            let mut c = augserve_client::connect(&addr, 64 << 20).await.unwrap();
            let mut s = c
                .stream_batches(v1::StreamBatchesRequest {
                    dataset: "data".into(),
                    batch_size: 4,
                    epochs: 0,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            s.message().await.unwrap().unwrap();
            streams.push((c, s));
        }
        server.sigterm();
        let t = Instant::now();
        // Clients keep reading. These streams never end by themselves (epochs = 0), so the
        // grace period cuts them: each must end with UNAVAILABLE, never OK.
        let mut ends = Vec::new();
        for (_, mut s) in streams {
            let end = loop {
                match tokio::time::timeout(Duration::from_secs(8), s.message()).await {
                    Ok(Ok(Some(_))) => continue,
                    Ok(Ok(None)) => break "OK".to_string(),
                    Ok(Err(status)) => break format!("{:?}", status.code()),
                    Err(_) => break "no end within 8 s".to_string(),
                }
            };
            ends.push(end);
        }
        assert_eq!(ends, ["Unavailable"; 4], "cut streams must not end OK");
        t
    });
    let status = loop {
        if let Some(st) = server.child.try_wait().unwrap() {
            break st;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));
    lines.push(format!(
        "SIGTERM with 4 endless streams in flight: each ended UNAVAILABLE when the grace period ran out, exit code 0 after {:.2} s (grace period 5 s).",
        started.elapsed().as_secs_f64()
    ));
    summary("Killed clients, SIGTERM", &lines);
}

/// Reads `n` batches of `req`, one every `pause`; the first failure is returned.
async fn slow_reader(
    addr: String,
    req: v1::StreamBatchesRequest,
    n: usize,
    pause: Duration,
) -> Result<usize, Status> {
    let mut c = augserve_client::connect(&addr, 256 << 20).await.unwrap();
    let mut s = c.stream_batches(req).await?.into_inner();
    let mut got = 0;
    while got < n {
        match s.message().await? {
            Some(_) => got += 1,
            None => break,
        }
        tokio::time::sleep(pause).await;
    }
    Ok(got)
}

#[test]
fn slow_readers_stay_under_the_batch_memory_budget() {
    const MIB: u64 = 1 << 20;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    augserve_core::demo::write_demo_dataset(&data, 3).unwrap(); // 30 samples
                                                                // float32 224x224 batches of 64: 36.75 MiB each. A stream with prefetch 2 reserves
                                                                // (2 + 2) batches (queued, the one being sent, tonic's encoded copy): 147 MiB; eight of
                                                                // them fit in 1200 MiB, a ninth does not.
    let batch_bytes = 64 * 3 * 224 * 224 * 4u64;
    let budget = 1200 * MIB;
    let server = Server::start(
        &[("data", &data)],
        &[("AUGSERVE_MAX_BATCH_MEMORY_BYTES", &budget.to_string())],
    );
    let pid = server.pid();
    let req = v1::StreamBatchesRequest {
        dataset: "data".into(),
        spec: Some(v1::PipelineSpec {
            width: Some(224),
            height: Some(224),
            dtype: v1::DType::DtypeFloat32 as i32,
            ..Default::default()
        }),
        batch_size: 64,
        epochs: 0,
        prefetch: 2,
        ..Default::default()
    };
    // Warm up (worker pool, allocator), let the server go idle, then take the baseline.
    rt().block_on(slow_reader(server.addr(), req.clone(), 2, Duration::ZERO))
        .unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    let idle = rss_kib(pid);
    let watch = RssWatch::new(pid);
    let (results, ninth) = rt().block_on(async {
        let readers: Vec<_> = (0..8)
            .map(|_| {
                tokio::spawn(slow_reader(
                    server.addr(),
                    req.clone(),
                    6,
                    Duration::from_secs(1),
                ))
            })
            .collect();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let ninth = slow_reader(server.addr(), req.clone(), 1, Duration::ZERO).await;
        let mut results = Vec::new();
        for r in readers {
            results.push(r.await.unwrap());
        }
        (results, ninth)
    });
    let peak = watch.peak();
    // Streams end asynchronously after their clients leave; give them a moment.
    std::thread::sleep(Duration::from_millis(1500));
    let after = rss_kib(pid);
    for r in &results {
        assert_eq!(r.as_ref().ok(), Some(&6), "a reader failed: {r:?}");
    }
    let refused = ninth.expect_err("a ninth stream was admitted past the budget");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(
        refused.message().contains("max_batch_memory_bytes"),
        "{}",
        refused.message()
    );
    // The documented bound: the budget, plus the buffer pool (at most 4 batch buffers, kept
    // for reuse), over the idle server.
    let bound = idle + (budget + 4 * batch_bytes) / 1024;
    let held = (peak.saturating_sub(idle)) as f64 * 1024.0 / batch_bytes as f64 / 8.0;
    summary(
        "Memory: slow readers under max_batch_memory_bytes",
        &[format!(
            "8 readers of float32 224x224 batches of 64 (36.75 MiB), one batch per second, prefetch 2, budget {} MiB: server RSS idle {} MiB, peak {} MiB ({held:.1} batches per stream over idle), bound {} MiB (budget + 4 pooled buffers + idle), {} MiB after they ended; a ninth stream was refused: {}",
            budget / MIB,
            idle / 1024,
            peak / 1024,
            bound / 1024,
            after / 1024,
            refused.message()
        )],
    );
    assert!(
        peak <= bound,
        "peak RSS {peak} KiB over the bound {bound} KiB"
    );
    assert!(
        after < idle + 32 * 1024,
        "pooled buffers stayed after the streams ended: {after} KiB (idle {idle} KiB)"
    );
}
