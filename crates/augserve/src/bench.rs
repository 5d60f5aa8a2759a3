//! `augserve bench`: throughput and per-stage cost of the pipeline with the batch ops on the
//! CPU and, where one is usable, on the GPU, over thread counts and batch sizes.

use std::fmt::Write as _;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use augserve_core::pipeline::{run_in_flight, BatchJob, CpuBatchOps};
use augserve_core::spec::{ColorJitter, DType, Layout, MixSpec, OutputSpec};
use augserve_core::{
    BatchOps, Dataset, DatasetFormat, DecodeLimits, Pipeline, PipelineOptions, PipelineSpec,
    StageTimings,
};
use augserve_cuda::jpeg::route::DecodeSplit;
use augserve_cuda::{open_backend, DeviceRequest, GpuDevice};

use crate::chart;
use crate::run::{finish_into_slot, output_slots, with_output_slot};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Dataset (ImageFolder, file list, WebDataset); default: the built-in demo dataset.
    #[arg(long, env = "AUGSERVE_DATA")]
    data: Option<PathBuf>,
    /// Pipeline spec; default: RandomResizedCrop 224, flip, brightness/contrast 0.4,
    /// mixup 0.2, float16 NCHW.
    #[arg(long)]
    spec: Option<PathBuf>,
    /// Worker thread counts to try (0 = one per core).
    #[arg(long, value_delimiter = ',', default_value = "1,0")]
    threads: Vec<usize>,
    /// Batch sizes to try.
    #[arg(long, value_delimiter = ',', default_value = "64,256")]
    batch_sizes: Vec<usize>,
    /// Timed batches per configuration (after one warm-up batch).
    #[arg(long, default_value_t = 4)]
    batches: usize,
    /// Batch-ops devices: auto (CPU, and the GPU when usable), cpu, or gpu (fail without one).
    #[arg(long, value_enum, default_value = "auto")]
    devices: DevicesArg,
    /// Which GPU: its CUDA device ordinal.
    #[arg(long, default_value_t = 0, env = "AUGSERVE_CUDA_DEVICE")]
    cuda_device: usize,
    /// Write bench.json and bench.csv here.
    #[arg(long)]
    out_dir: Option<PathBuf>,
    #[arg(long, env = "AUGSERVE_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    #[arg(long)]
    quiet: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum DevicesArg {
    Auto,
    Cpu,
    Gpu,
}

/// The benchmark recipe (issue 6): the ImageNet crop, jitter, mixup, half-precision output.
fn bench_spec() -> PipelineSpec {
    PipelineSpec {
        color: ColorJitter {
            brightness: 0.4,
            contrast: 0.4,
            saturation: 0.0,
        },
        mix: MixSpec {
            mixup_alpha: 0.2,
            ..MixSpec::default()
        },
        output: OutputSpec {
            dtype: DType::Float16,
            layout: Layout::Nchw,
        },
        ..PipelineSpec::default()
    }
}

#[derive(Debug, Clone, serde::Serialize)]
struct Row {
    device: String,
    threads: usize,
    batch_size: usize,
    images_per_s: f64,
    output_mb_per_s: f64,
    /// Milliseconds per batch; read/decode/color summed over worker threads.
    read_ms: f64,
    decode_ms: f64,
    color_ms: f64,
    per_image_wall_ms: f64,
    resize_ms: f64,
    mix_normalize_ms: f64,
    stats_ms: f64,
    total_ms: f64,
    /// What a batch kept the GPU busy (CUDA events); 0 on the CPU.
    gpu_busy_ms: f64,
}

fn ms(d: Duration, n: usize) -> f64 {
    d.as_secs_f64() * 1e3 / n.max(1) as f64
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// nvJPEG's batched decode alone on the dataset's first images (those it takes; see
/// `jpeg::route::route`), at the largest batch size: whole images, and (when ROI decode passes
/// its check) only the part each image's crop under `spec` needs.
fn gpu_decode_rows(
    dataset: &Dataset,
    spec: &PipelineSpec,
    args: &BenchArgs,
) -> anyhow::Result<Vec<Row>> {
    use augserve_core::decode::jpeg_info;
    use augserve_core::ops::resize::read_region;
    use augserve_core::pipeline::ImagePlan;
    use augserve_cuda::jpeg::planes::{roi_for_header, Roi};
    use augserve_cuda::jpeg::route::{route, DecodeRoute, NvJpegBackend};
    use augserve_cuda::jpeg::{GpuJpegDecoder, NvJpeg};
    let dev = GpuDevice::open(args.cuda_device)?;
    let nv = NvJpeg::load()?;
    let mut dec = GpuJpegDecoder::new(nv, &dev, NvJpegBackend::Hardware)?;
    let check = dec.check_against_cpu();
    match &check {
        Ok(report) => println!("nvJPEG start-up check: {report}"),
        Err(why) => println!(
            "nvJPEG start-up check FAILED: {why} (the pipeline would keep decoding on the CPU; the rows below time nvJPEG anyway)"
        ),
    }
    let refused_at_start_up = |info: &_| check.as_ref().is_ok_and(|c| c.refuses(info));
    let roi = dec.check_roi();
    println!("nvJPEG {roi}");
    let batch = args.batch_sizes.iter().copied().max().unwrap_or(256);
    let (mut jpegs, mut dims, mut refused) = (Vec::new(), Vec::new(), 0usize);
    let mut parts = Vec::new();
    for id in 0..dataset.len() as u64 {
        if jpegs.len() == batch {
            break;
        }
        let Ok(bytes) = dataset.read(id) else {
            continue;
        };
        match jpeg_info(&bytes) {
            Ok(info)
                if route(&info, dec.backend()) == DecodeRoute::Gpu
                    && !refused_at_start_up(&info) =>
            {
                // The crop of epoch 0 under seed 0, as a training run would draw it.
                let plan = ImagePlan::draw(spec, 0, 0, id, info.width, info.height);
                let (w, h) = (spec.size.width, spec.size.height);
                let region = read_region(info.width, info.height, plan.crop, w, h);
                parts.push(if roi.allows(&info) {
                    roi_for_header(&info, region)
                } else {
                    Roi::full(info.width, info.height)
                });
                dims.push((info.width, info.height));
                jpegs.push(bytes);
            }
            _ => refused += 1,
        }
    }
    anyhow::ensure!(
        !jpegs.is_empty(),
        "no image of the dataset is GPU-decodable"
    );
    let refs: Vec<&[u8]> = jpegs.iter().map(Vec::as_slice).collect();
    tracing::info!(
        refused,
        "GPU decode rows: images the GPU does not take were left out"
    );
    let whole: Vec<Roi> = dims.iter().map(|&(w, h)| Roi::full(w, h)).collect();
    let mut rows = vec![time_gpu_decode(
        &mut dec, &refs, &dims, &whole, args, "whole",
    )?];
    if roi.any() {
        rows.push(time_gpu_decode(
            &mut dec, &refs, &dims, &parts, args, "roi",
        )?);
    } else {
        println!("GPU decode with ROI: not measured ({roi})");
    }
    Ok(rows)
}

/// Times nvJPEG decoding `rois` of the images (after one warm-up batch).
fn time_gpu_decode(
    dec: &mut augserve_cuda::jpeg::GpuJpegDecoder,
    refs: &[&[u8]],
    dims: &[(u32, u32)],
    rois: &[augserve_cuda::jpeg::planes::Roi],
    args: &BenchArgs,
    what: &str,
) -> anyhow::Result<Row> {
    dec.decode_parts(refs, dims, rois)?; // warm-up
    let started = Instant::now();
    for _ in 0..args.batches {
        dec.decode_parts(refs, dims, rois)?;
    }
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    let n = refs.len() * args.batches;
    let ms_per_batch = secs * 1e3 / args.batches as f64;
    let bytes: f64 = rois.iter().map(|r| r.pixels() as f64 * 3.0).sum();
    Ok(Row {
        device: format!("gpu-decode-{what} {:?}", dec.backend()),
        threads: 0,
        batch_size: refs.len(),
        images_per_s: n as f64 / secs,
        output_mb_per_s: bytes * args.batches as f64 / secs / 1e6,
        read_ms: 0.0,
        decode_ms: ms_per_batch,
        color_ms: 0.0,
        per_image_wall_ms: ms_per_batch,
        resize_ms: 0.0,
        mix_normalize_ms: 0.0,
        stats_ms: 0.0,
        total_ms: ms_per_batch,
        // Decoding alone, synchronously: its wall time bounds the GPU's busy time.
        gpu_busy_ms: ms_per_batch,
    })
}

pub fn bench(args: BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.batches > 0, "--batches must be > 0");
    anyhow::ensure!(
        args.batch_sizes.iter().all(|&b| b > 0),
        "--batch-sizes must be > 0"
    );
    let (path, _) = crate::run::dataset_path(args.data.as_ref(), args.cache_dir.as_ref())?;
    let limits = DecodeLimits::default();
    let dataset = Arc::new(
        Dataset::open(&path, DatasetFormat::detect(&path)?, limits.max_file_bytes)
            .with_context(|| format!("dataset {}", path.display()))?,
    );
    anyhow::ensure!(!dataset.is_empty(), "the dataset is empty");
    let spec = match &args.spec {
        Some(f) => PipelineSpec::from_path(f)?,
        None => bench_spec(),
    };

    let (devices, gpu_line) = open_devices(&args)?;
    let mut configs: Vec<(usize, usize, usize)> = Vec::new();
    for d in 0..devices.len() {
        for &t in &args.threads {
            for &b in &args.batch_sizes {
                configs.push((d, t, b));
            }
        }
    }
    println!(
        "bench: {} ({} samples) | {} | CPU: {}, {} cores | GPU: {gpu_line}",
        dataset.root().display(),
        dataset.len(),
        crate::run::describe(&spec),
        cpu_model(),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
    );
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new((configs.len() * (args.batches + 1)) as u64)
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} batches {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let mut rows = Vec::new();
    for (d, threads, batch_size) in configs {
        let (name, ops) = &devices[d];
        rows.push(measure(
            &args,
            &dataset,
            &spec,
            (name, ops),
            (threads, batch_size),
            &bar,
        )?);
    }
    bar.finish_and_clear();
    for (name, ops) in &devices {
        if let Some(r) = ops.decode_report() {
            println!("{name}: {r}");
        }
    }
    if args.devices != DevicesArg::Cpu {
        match gpu_decode_rows(&dataset, &spec, &args) {
            Ok(r) => rows.extend(r),
            Err(e) => {
                println!("GPU decode (nvJPEG): not measured: {e}");
            }
        }
    }

    let mut table = table_text(&rows);
    print!("{table}");
    // How close the whole pipeline gets to its own decode time, per thread. The decode is of
    // the crops' regions (what the per-image stage decodes), not of whole images.
    for r in rows.iter().filter(|r| r.threads == 1 && r.decode_ms > 0.0) {
        let decode_only = r.batch_size as f64 * 1e3 / r.decode_ms;
        let line = format!(
            "{} batch {}: one thread decodes the crops' regions at {decode_only:.0} images/s alone; the pipeline runs at {:.0} % of that",
            r.device,
            r.batch_size,
            100.0 * r.images_per_s / decode_only
        );
        println!("{line}");
        table.push_str(&line);
        table.push('\n');
    }
    if let Some(dir) = &args.out_dir {
        let gpu_shown = devices
            .iter()
            .any(|(n, _)| n != "cpu")
            .then_some(gpu_line.as_str());
        write_results(dir, &dataset, &spec, &gpu_line, gpu_shown, &rows, &table)?;
    }
    Ok(())
}

/// A backend to measure, by the name its rows carry.
type Device = (String, Arc<dyn BatchOps>);

/// The backends to measure: the CPU, the GPU, the GPU with nvJPEG decoding, as `--devices`
/// asks and the machine allows; and one line about the GPU.
fn open_devices(args: &BenchArgs) -> anyhow::Result<(Vec<Device>, String)> {
    let mut devices: Vec<Device> = Vec::new();
    if args.devices != DevicesArg::Gpu {
        devices.push(("cpu".into(), Arc::new(CpuBatchOps::default())));
    }
    let mut gpu_line = "none".to_string();
    if args.devices != DevicesArg::Cpu {
        let cpu = CpuBatchOps::default();
        match open_backend(DeviceRequest::Gpu, args.cuda_device, cpu.clone(), None) {
            Ok(plain) => {
                gpu_line = plain.ops.device();
                devices.push((plain.ops.device(), plain.ops));
                // The same GPU, decoding JPEGs too (nvJPEG), split with the CPU workers.
                let split = Some(DecodeSplit::default());
                match open_backend(DeviceRequest::Gpu, args.cuda_device, cpu, split) {
                    Ok(b) => match b.gpu_decode {
                        Some(Ok(choice)) => {
                            gpu_line += &format!(", {choice}");
                            devices.push(("gpu+nvjpeg".into(), b.ops));
                        }
                        Some(Err(e)) => gpu_line += &format!(" (no GPU decoding: {e})"),
                        None => {}
                    },
                    Err(e) => gpu_line += &format!(" (no GPU decoding: {e})"),
                }
            }
            Err(e) if args.devices == DevicesArg::Gpu => {
                anyhow::bail!("--devices gpu, but {e}")
            }
            Err(e) => {
                gpu_line = e.to_string();
                tracing::info!("{e}; CPU rows only");
            }
        }
    }
    Ok((devices, gpu_line))
}

/// One row: `ops` on `threads` threads, batches of `batch_size`, through the batch loop
/// `augserve run` and the server use.
fn measure(
    args: &BenchArgs,
    dataset: &Arc<Dataset>,
    spec: &PipelineSpec,
    (name, ops): (&String, &Arc<dyn BatchOps>),
    (threads, batch_size): (usize, usize),
    bar: &ProgressBar,
) -> anyhow::Result<Row> {
    let limits = DecodeLimits::default();
    let len = dataset.len() as u64;
    let pipeline = Pipeline::new(
        dataset.clone(),
        spec.clone(),
        PipelineOptions { threads, limits },
    )?
    .with_batch_ops(ops.clone());
    bar.set_message(format!(
        "{name}, {} threads, batch {batch_size}",
        pipeline.threads()
    ));
    let ids = |k: usize| -> Vec<u64> {
        (0..batch_size as u64)
            .map(|i| (k as u64 * batch_size as u64 + i) % len)
            .collect()
    };
    // Warm-up: pools, buffers, kernels; with GPU decoding, also the CPU/GPU split, which
    // starts at half and then follows the measured rates.
    let warmups = if ops.device_decoder().is_some() { 6 } else { 1 };
    for k in 0..warmups {
        let b = pipeline.batch(0, 0, 1000 + k, 1000 + k, &ids(k as usize))?;
        pipeline.recycle(b.tensor.data);
    }
    bar.inc(1);
    let mut acc = StageTimings::default();
    let (mut images, mut bytes) = (0usize, 0usize);
    let mut failure = None;
    let jobs = (1..=args.batches).map(|k| {
        Ok(BatchJob {
            epoch: 0,
            index: k as u64,
            mix_key: k as u64,
            ids: ids(k),
        })
    });
    let started = Instant::now();
    // The batch loop `augserve run` and the server use: preparing batch k+1 overlaps
    // batch k's batch ops, and a GPU has several batches in its batch ops at once.
    // Into output slots registered with the batch ops, as `run` and the inline transport.
    let out_slots = output_slots(&pipeline, batch_size);
    let admit = |prepared| ControlFlow::Continue(with_output_slot(&out_slots, prepared));
    let make = |admitted: augserve_core::Result<_>| {
        admitted.and_then(|(p, slot)| finish_into_slot(&pipeline, p, slot))
    };
    run_in_flight(
        &pipeline,
        0,
        jobs,
        usize::MAX,
        admit,
        make,
        |made| match made {
            Ok((b, slot)) => {
                images += b.len();
                bytes += slot.as_ref().len();
                crate::run::add_timings(&mut acc, &b.timings);
                bar.inc(1);
                ControlFlow::Continue(())
            }
            Err(e) => {
                failure = Some(e);
                ControlFlow::Break(())
            }
        },
    );
    if let Some(e) = failure {
        return Err(e.into());
    }
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    let n = args.batches;
    Ok(Row {
        device: name.clone(),
        threads: pipeline.threads(),
        batch_size,
        images_per_s: images as f64 / secs,
        output_mb_per_s: bytes as f64 / secs / 1e6,
        read_ms: ms(acc.read, n),
        decode_ms: ms(acc.decode, n),
        color_ms: ms(acc.color, n),
        per_image_wall_ms: ms(acc.per_image_wall, n),
        resize_ms: ms(acc.resize, n),
        mix_normalize_ms: ms(acc.mix_normalize, n),
        stats_ms: ms(acc.stats, n),
        total_ms: ms(acc.total, n),
        gpu_busy_ms: ms(acc.device_busy, n),
    })
}

/// The rows as a text table.
fn table_text(rows: &[Row]) -> String {
    let mut table = String::from(
        "device              threads  batch   images/s   MB/s | ms/batch: read  decode  colour  per-image | resize  mix+norm  stats | total | GPU busy\n",
    );
    for r in rows {
        let _ = writeln!(
            table,
            "{:<20}{:>7}{:>7}{:>11.1}{:>7.0} | {:>14.1}{:>8.1}{:>8.1}{:>11.1} | {:>6.1}{:>10.1}{:>7.1} | {:>5.1} | {:>8.1}",
            r.device.chars().take(19).collect::<String>(),
            r.threads,
            r.batch_size,
            r.images_per_s,
            r.output_mb_per_s,
            r.read_ms,
            r.decode_ms,
            r.color_ms,
            r.per_image_wall_ms,
            r.resize_ms,
            r.mix_normalize_ms,
            r.stats_ms,
            r.total_ms,
            r.gpu_busy_ms
        );
    }
    table
}

/// Writes bench.json, bench.csv, bench.txt and the chart bench.png to `dir`.
fn write_results(
    dir: &std::path::Path,
    dataset: &Dataset,
    spec: &PipelineSpec,
    gpu_line: &str,
    gpu_shown: Option<&str>,
    rows: &[Row],
    table: &str,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let doc = serde_json::json!({
        "dataset": dataset.root().display().to_string(),
        "samples": dataset.len(),
        "spec": spec,
        "cpu": cpu_model(),
        "cores": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "gpu": gpu_line,
        "version": env!("CARGO_PKG_VERSION"),
        "rows": rows,
    });
    std::fs::write(dir.join("bench.json"), serde_json::to_string_pretty(&doc)?)?;
    let mut csv = String::from("device,threads,batch_size,images_per_s,output_mb_per_s,read_ms,decode_ms,color_ms,per_image_wall_ms,resize_ms,mix_normalize_ms,stats_ms,total_ms,gpu_busy_ms\n");
    for r in rows {
        let _ = writeln!(
            csv,
            "\"{}\",{},{},{:.2},{:.2},{:.3},{:.3},{:.3},{:.3},{:.3},{:.3},{:.3},{:.3},{:.3}",
            r.device.replace('"', "'"),
            r.threads,
            r.batch_size,
            r.images_per_s,
            r.output_mb_per_s,
            r.read_ms,
            r.decode_ms,
            r.color_ms,
            r.per_image_wall_ms,
            r.resize_ms,
            r.mix_normalize_ms,
            r.stats_ms,
            r.total_ms,
            r.gpu_busy_ms
        );
    }
    std::fs::write(dir.join("bench.csv"), csv)?;
    std::fs::write(dir.join("bench.txt"), table)?;
    let largest = rows.iter().map(|r| r.batch_size).max().unwrap_or(0);
    let series: Vec<chart::Series> = rows
        .iter()
        .filter(|r| r.batch_size == largest)
        .map(|r| chart::Series {
            label: format!(
                "{} x{} thread{}",
                r.device.chars().take(24).collect::<String>(),
                r.threads,
                if r.threads == 1 { "" } else { "s" }
            ),
            stage_ms: [
                r.per_image_wall_ms,
                r.resize_ms,
                r.mix_normalize_ms,
                r.total_ms,
            ],
            images_per_s: r.images_per_s,
        })
        .collect();
    let title = format!(
        "augserve bench, batch {largest}: {} ({} cores), GPU: {}",
        cpu_model(),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        gpu_shown.map_or("none".to_string(), |g| g
            .chars()
            .take(40)
            .collect::<String>())
    );
    chart::write_png(&dir.join("bench.png"), &title, &series)?;
    println!(
        "wrote {}/bench.json, bench.csv, bench.txt and bench.png",
        dir.display()
    );
    Ok(())
}
