//! Absurd requests are refused naming the field; nothing outside a dataset root is read.

use super::*;

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
