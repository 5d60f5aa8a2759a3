//! Under load: 64 streams with cancellations and slow readers, killed clients and SIGTERM,
//! slow readers within the batch memory budget.

use super::*;

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
        let mut messages = Vec::new();
        for (_, mut s) in streams {
            let end = loop {
                match tokio::time::timeout(Duration::from_secs(8), s.message()).await {
                    Ok(Ok(Some(_))) => continue,
                    Ok(Ok(None)) => break "OK".to_string(),
                    Ok(Err(status)) => {
                        messages.push(format!("{:?}: {}", status.code(), status.message()));
                        break format!("{:?}", status.code());
                    }
                    Err(_) => break "no end within 8 s".to_string(),
                }
            };
            ends.push(end);
        }
        assert_eq!(
            ends, ["Unavailable"; 4],
            "cut streams must not end OK; statuses: {messages:?}"
        );
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
