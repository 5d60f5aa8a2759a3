//! Hostile images: each fails alone, with its reason, and the server stays up.

use super::*;

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
