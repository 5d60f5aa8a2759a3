//! `augserve run`: the main job. Streams epochs of batches through the pipeline in-process,
//! with a progress bar, and prints what it did.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use augserve_core::buffers::{OutputSlot, OutputSlots};
use augserve_core::ops::stats::PERCENTILES;
use augserve_core::pipeline::{
    run_in_flight, tensor_bytes, BatchOrder, CpuBatchOps, CpuResize, PreparedBatch,
};
use augserve_core::spec::{ColorJitter, CropSpec, Device, MixSpec};
use augserve_core::{
    demo, BatchOps, Dataset, DatasetFormat, DecodeLimits, Destination, Pipeline, PipelineOptions,
    PipelineSpec, ShardSpec, StageTimings, TailPolicy,
};
use augserve_cuda::jpeg::route::DecodeSplit;
use augserve_cuda::{open_backend, DeviceRequest};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Dataset: an ImageFolder directory, a file list, or WebDataset .tar shard(s).
    /// Without it, the built-in demo dataset is generated (once) and used.
    #[arg(long, env = "AUGSERVE_DATA")]
    data: Option<PathBuf>,
    /// Dataset format; `auto` guesses from the path.
    #[arg(long, value_enum, default_value = "auto")]
    format: FormatArg,
    /// Pipeline spec (.toml or .json). Default: the ImageNet training recipe
    /// (`augserve spec` prints it); on the demo dataset, that recipe plus jitter and mixup.
    #[arg(long)]
    spec: Option<PathBuf>,
    #[arg(long, default_value_t = 1)]
    epochs: u64,
    #[arg(long, default_value_t = 0)]
    start_epoch: u64,
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Worker threads (0 = one per core).
    #[arg(long, default_value_t = 0, env = "AUGSERVE_THREADS")]
    threads: usize,
    #[arg(long, default_value_t = 0)]
    rank: u32,
    #[arg(long, default_value_t = 1)]
    world_size: u32,
    /// Keep the dataset order instead of shuffling each epoch.
    #[arg(long)]
    no_shuffle: bool,
    /// How shards handle a dataset size that world_size does not divide.
    #[arg(long, value_enum, default_value = "pad")]
    tail: TailArg,
    /// Drop the last batch of an epoch when it is short.
    #[arg(long)]
    drop_last: bool,
    /// Stop after this many batches in total (0 = no limit).
    #[arg(long, default_value_t = 0)]
    max_batches: u64,
    /// Where the batch ops (resize, mixup + normalise) run: `auto` uses the GPU when one is
    /// usable (driver, device, NVRTC) and the spec's placement allows, else the CPU.
    /// `stand-in`: no device, the GPU path's host side only, with every JPEG left to a no-op
    /// GPU decoder, to measure its host CPU time per image (the tensors hold no pixels).
    #[arg(long, value_enum, default_value = "auto", env = "AUGSERVE_DEVICE")]
    device: DeviceArg,
    /// Which GPU: its CUDA device ordinal, as CUDA_VISIBLE_DEVICES numbers them (e.g. the
    /// local rank when several runs share a multi-GPU host).
    #[arg(long, default_value_t = 0, env = "AUGSERVE_CUDA_DEVICE")]
    cuda_device: usize,
    /// Decode JPEGs on the GPU too (nvJPEG; the hardware engine on A100/H100/H200), split
    /// with the CPU workers by their measured rates. Needs `--device gpu` or `auto` with a
    /// usable GPU; without nvJPEG, decoding stays on the CPU and the run says why.
    #[arg(long, env = "AUGSERVE_GPU_DECODE")]
    gpu_decode: bool,
    /// Fix the share (0 < F <= 1) of GPU-decodable images that nvJPEG decodes instead of
    /// tuning it from measured rates (implies --gpu-decode). Which images the GPU decodes is
    /// then a function of their sample ids alone, so a seeded run is reproducible bit for bit
    /// on the same GPU and libnvjpeg, as it is on the CPU; the tuned split depends on timing.
    #[arg(long, value_name = "F", env = "AUGSERVE_GPU_DECODE_SHARE", value_parser = parse_share)]
    gpu_decode_share: Option<f64>,
    /// CPU resize: `reference` (Pillow-exact, identical to the GPU kernel; the faster one
    /// since its own AVX2/AVX-512 passes) or `fast` (fast_image_resize, within one level).
    #[arg(long, value_enum, default_value = "reference")]
    resize: ResizeArg,
    /// Refuse images with more pixels than this (checked from the header, before decoding).
    #[arg(long, default_value_t = DecodeLimits::default().max_pixels)]
    max_pixels: u64,
    /// Refuse files larger than this many bytes.
    #[arg(long, default_value_t = DecodeLimits::default().max_file_bytes)]
    max_file_bytes: u64,
    /// Write a PNG contact sheet of the first batch here.
    #[arg(long)]
    preview: Option<PathBuf>,
    /// Write the run summary as JSON here.
    #[arg(long)]
    summary_json: Option<PathBuf>,
    /// Print a SHA-256 of the output: every batch's tensor, labels, mixing weights and sample
    /// ids, in order. The same data, spec, seed and shard give the same digest whatever
    /// --threads (with GPU decoding, on the same GPU and only with --gpu-decode-share).
    #[arg(long)]
    digest: bool,
    /// Where the demo dataset is cached (default: $XDG_CACHE_HOME/augserve or ~/.cache/augserve).
    #[arg(long, env = "AUGSERVE_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum FormatArg {
    Auto,
    ImageFolder,
    FileList,
    Webdataset,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum TailArg {
    Pad,
    Drop,
    Uneven,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum DeviceArg {
    Auto,
    Cpu,
    Gpu,
    StandIn,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum ResizeArg {
    Fast,
    Reference,
}

/// The demo recipe: the default plus the augmentations worth seeing.
fn demo_spec() -> PipelineSpec {
    PipelineSpec {
        color: ColorJitter {
            brightness: 0.3,
            contrast: 0.3,
            saturation: 0.3,
        },
        mix: MixSpec {
            mixup_alpha: 0.2,
            cutmix_alpha: 1.0,
            num_classes: demo::CLASSES.len() as u32,
            label_smoothing: 0.1,
            ..MixSpec::default()
        },
        ..PipelineSpec::default()
    }
}

pub fn describe(spec: &PipelineSpec) -> String {
    let crop = match &spec.crop {
        CropSpec::RandomResized { scale, ratio } => format!(
            "RandomResizedCrop(scale {scale:?}, ratio [{:.3}, {:.3}])",
            ratio[0], ratio[1]
        ),
        CropSpec::Center { crop_pct } => format!("CenterCrop(crop_pct {crop_pct})"),
        CropSpec::Resize => "Resize".into(),
    };
    let c = &spec.color;
    let m = &spec.mix;
    let mix = if m.is_enabled() {
        format!(
            "mixup {} / cutmix {} ({:?}, prob {}, from epoch {} full at {})",
            m.mixup_alpha,
            m.cutmix_alpha,
            m.mode,
            m.prob,
            m.schedule.start_epoch,
            m.schedule.full_epoch
        )
    } else {
        "no mixup".into()
    };
    format!(
        "{crop} -> {}x{}, flip {}, jitter b/c/s {}/{}/{}, {mix}, {} {}",
        spec.size.width,
        spec.size.height,
        spec.flip_prob,
        c.brightness,
        c.contrast,
        c.saturation,
        spec.output.dtype.name(),
        spec.output.layout.name()
    )
}

fn parse_share(v: &str) -> Result<f64, String> {
    let share: f64 = v.parse().map_err(|_| format!("not a number: '{v}'"))?;
    DecodeSplit::fixed(share).map(|_| share)
}

/// Adds what a trainer receives of `b` to the output digest (`--digest`).
fn digest_batch(h: &mut sha2::Sha256, b: &augserve_core::Batch, data: &[u8]) {
    use sha2::Digest;
    h.update(data);
    for label in b.labels_a.iter().chain(&b.labels_b) {
        h.update(label.to_le_bytes());
    }
    for x in b.lam.iter().chain(b.soft_targets.iter().flatten()) {
        h.update(x.to_le_bytes());
    }
    for id in &b.sample_ids {
        h.update(id.to_le_bytes());
    }
}

/// Picks the batch-ops backend: the GPU when asked for or available, else the CPU.
/// Returns it with a line saying what was chosen and why.
fn choose_batch_ops(
    device: DeviceArg,
    cuda_device: usize,
    spec: &PipelineSpec,
    cpu: CpuBatchOps,
    gpu_decode: Option<DecodeSplit>,
) -> anyhow::Result<(Arc<dyn BatchOps>, String)> {
    let placed = [spec.placement.resize, spec.placement.mix];
    let explicit = device == DeviceArg::Gpu || placed.contains(&Device::Gpu);
    let allowed = device != DeviceArg::Cpu && !placed.contains(&Device::Cpu);
    if device == DeviceArg::Gpu && !allowed {
        anyhow::bail!("--device gpu conflicts with the spec's placement (resize/mix = \"cpu\")");
    }
    let request = match (allowed, explicit) {
        _ if device == DeviceArg::StandIn => DeviceRequest::StandIn,
        (false, _) => DeviceRequest::Cpu,
        (true, true) => DeviceRequest::Gpu,
        (true, false) => DeviceRequest::Auto,
    };
    let backend = open_backend(request, cuda_device, cpu, gpu_decode)
        .map_err(|e| anyhow::anyhow!("the GPU was requested, but {e}"))?;
    Ok((backend.ops, backend.summary))
}

/// `--data`, or the built-in demo dataset (generated once into the cache); true for the demo.
pub fn dataset_path(
    data: Option<&PathBuf>,
    cache_dir: Option<&PathBuf>,
) -> anyhow::Result<(PathBuf, bool)> {
    if let Some(p) = data {
        return Ok((p.clone(), false));
    }
    let cache = cache_dir
        .cloned()
        .unwrap_or_else(crate::cache_dir::default_cache_dir);
    std::fs::create_dir_all(&cache)
        .with_context(|| format!("cannot create cache dir {}", cache.display()))?;
    tracing::info!(cache = %cache.display(), "no --data given: using the built-in demo dataset");
    Ok((demo::ensure_demo_dataset(&cache)?, true))
}

pub fn add_timings(acc: &mut StageTimings, t: &StageTimings) {
    acc.read += t.read;
    acc.decode += t.decode;
    acc.color += t.color;
    acc.per_image_wall += t.per_image_wall;
    acc.resize += t.resize;
    acc.mix_normalize += t.mix_normalize;
    acc.stats += t.stats;
    acc.total += t.total;
    acc.decoded.add(&t.decoded);
    acc.device_busy += t.device_busy;
    acc.host_copy_bytes += t.host_copy_bytes;
}

/// Output slots for batches of up to `batch_size` images, registered with `pipeline`'s
/// batch ops: one for each batch they make at once.
pub(crate) fn output_slots(pipeline: &Pipeline, batch_size: usize) -> Arc<OutputSlots> {
    let ops = pipeline.batch_ops();
    OutputSlots::new(
        ops.as_ref(),
        ops.batches_in_flight().max(1),
        tensor_bytes(pipeline.spec(), batch_size),
    )
}

/// A prepared batch with the output slot it will be written into, taken in batch order
/// (`run_in_flight`'s admit step), waiting for one to come back while all are out.
pub(crate) fn with_output_slot(
    slots: &Arc<OutputSlots>,
    prepared: augserve_core::Result<PreparedBatch>,
) -> augserve_core::Result<(PreparedBatch, OutputSlot)> {
    let p = prepared?;
    // Never `None`: nothing here gives up waiting.
    let slot = slots.take(&|| false);
    slot.map(|s| (p, s))
        .ok_or_else(|| augserve_core::Error::Backend("no output slot".into()))
}

/// The batch stage of `p`, its tensor written into `slot`.
pub(crate) fn finish_into_slot(
    pipeline: &Pipeline,
    p: PreparedBatch,
    mut slot: OutputSlot,
) -> augserve_core::Result<(augserve_core::Batch, OutputSlot)> {
    let batch = pipeline.finish_batch(p, Destination::Host(slot.buffer()))?;
    slot.set_len(batch.tensor.byte_len());
    Ok((batch, slot))
}

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.batch_size > 0, "--batch-size must be > 0");
    let job = open_job(&args)?;
    job.print_header(&args);
    let order = BatchOrder {
        max_batches: args.max_batches,
        ..BatchOrder::new(
            job.shard,
            args.batch_size,
            args.drop_last,
            args.start_epoch..args.start_epoch + args.epochs,
        )
    };
    let bar = progress_bar(&args, &job, &order)?;
    let mut tally = RunTally::new(args.digest);
    let started = Instant::now();
    let cpu_started = process_cpu_time();
    let mut first_batch = true;
    let mut failure = None;
    let len = job.dataset.len();
    let pipeline = &job.pipeline;
    // The shared batch loop: batch k+1's per-image stage overlaps batch k's batch ops, and a
    // GPU has several batches in its batch ops at once (delivered in order).
    // Each batch goes straight into one of these (a GPU downloads into it), one per batch the
    // ops make at once: a slot is taken in batch order and given back once the batch is tallied.
    let out_slots = output_slots(pipeline, args.batch_size);
    let admit = |prepared| ControlFlow::Continue(with_output_slot(&out_slots, prepared));
    let make = |admitted: augserve_core::Result<_>| {
        admitted.and_then(|(p, slot)| finish_into_slot(pipeline, p, slot))
    };
    let jobs = order.jobs(len);
    run_in_flight(pipeline, args.seed, jobs, usize::MAX, admit, make, |made| {
        let (batch, slot) = match made {
            Ok(b) => b,
            Err(e) => {
                failure = Some(e);
                return ControlFlow::Break(());
            }
        };
        if std::mem::take(&mut first_batch) {
            if let Some(p) = &args.preview {
                let shown =
                    crate::preview::write_preview(&batch, slot.as_ref(), &job.spec.normalize, p);
                if let Err(e) = shown {
                    failure = Some(augserve_core::Error::Backend(format!("preview: {e}")));
                    return ControlFlow::Break(());
                }
                tracing::info!(path = %p.display(), "wrote preview of the first batch");
            }
        }
        tally.add(&batch, slot.as_ref(), &bar, started);
        ControlFlow::Continue(())
    });
    if let Some(e) = failure {
        return Err(e.into());
    }
    tally.end_epoch(&bar);
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    tally.host_cpu = process_cpu_time().saturating_sub(cpu_started);
    let report = tally.report(&job, secs);
    if let Some(p) = &args.summary_json {
        std::fs::write(p, serde_json::to_string_pretty(&report)?)?;
    }
    Ok(())
}

/// CPU time of this process so far, user + system, all threads (getrusage).
fn process_cpu_time() -> Duration {
    // SAFETY: getrusage only writes the struct it is given, which lives on this stack.
    let usage = unsafe {
        let mut u = std::mem::zeroed::<libc::rusage>();
        if libc::getrusage(libc::RUSAGE_SELF, &mut u) != 0 {
            return Duration::ZERO;
        }
        u
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// What `run` works on: the dataset, the spec, the pipeline on its backend, the shard.
struct Job {
    dataset: Arc<Dataset>,
    is_demo: bool,
    spec: PipelineSpec,
    pipeline: Pipeline,
    ops: Arc<dyn BatchOps>,
    ops_line: String,
    resize: CpuResize,
    shard: ShardSpec,
}

fn open_job(args: &RunArgs) -> anyhow::Result<Job> {
    let (path, is_demo) = dataset_path(args.data.as_ref(), args.cache_dir.as_ref())?;
    let format = match args.format {
        FormatArg::Auto => DatasetFormat::detect(&path)?,
        FormatArg::ImageFolder => DatasetFormat::ImageFolder,
        FormatArg::FileList => DatasetFormat::FileList,
        FormatArg::Webdataset => DatasetFormat::WebDataset,
    };
    let limits = DecodeLimits {
        max_pixels: args.max_pixels,
        max_file_bytes: args.max_file_bytes,
    };
    let dataset = Arc::new(Dataset::open(&path, format, limits.max_file_bytes)?);
    for s in dataset.skipped().iter().take(5) {
        tracing::warn!("skipped while indexing: {s}");
    }
    let spec = match (&args.spec, is_demo) {
        (Some(f), _) => PipelineSpec::from_path(f)?,
        (None, true) => demo_spec(),
        (None, false) => PipelineSpec::default(),
    };
    let resize = match args.resize {
        ResizeArg::Fast => CpuResize::Fast,
        ResizeArg::Reference => CpuResize::Reference,
    };
    let split = DecodeSplit::from_settings(args.gpu_decode, args.gpu_decode_share)
        .map_err(anyhow::Error::msg)?;
    let (ops, ops_line) = choose_batch_ops(
        args.device,
        args.cuda_device,
        &spec,
        CpuBatchOps::new(resize),
        split,
    )?;
    let options = PipelineOptions {
        threads: args.threads,
        limits,
    };
    let pipeline =
        Pipeline::new(dataset.clone(), spec.clone(), options)?.with_batch_ops(ops.clone());
    let shard = ShardSpec {
        seed: args.seed,
        shuffle: !args.no_shuffle,
        rank: args.rank,
        world_size: args.world_size,
        tail: match args.tail {
            TailArg::Pad => TailPolicy::Pad,
            TailArg::Drop => TailPolicy::Drop,
            TailArg::Uneven => TailPolicy::Uneven,
        },
    };
    shard.validate()?;
    Ok(Job {
        dataset,
        is_demo,
        spec,
        pipeline,
        ops,
        ops_line,
        resize,
        shard,
    })
}

impl Job {
    fn print_header(&self, args: &RunArgs) {
        let ds = &self.dataset;
        println!(
            "dataset: {} ({}, {} samples, {} classes){}",
            ds.root().display(),
            ds.format().name(),
            ds.len(),
            ds.num_classes(),
            if self.is_demo { " [built-in demo]" } else { "" }
        );
        println!("pipeline: {}", describe(&self.spec));
        println!(
            "batch ops: {}; CPU resize: {}; worker threads: {}; rank {}/{}",
            self.ops_line,
            match self.resize {
                CpuResize::Fast => "fast_image_resize",
                CpuResize::Reference => "reference",
            },
            self.pipeline.threads(),
            args.rank,
            args.world_size
        );
    }
}

fn progress_bar(args: &RunArgs, job: &Job, order: &BatchOrder) -> anyhow::Result<ProgressBar> {
    let per_epoch = order.epoch_jobs(job.dataset.len(), 0)?.len() as u64;
    let mut total_batches = per_epoch * args.epochs;
    if args.max_batches > 0 {
        total_batches = total_batches.min(args.max_batches);
    }
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(total_batches)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} epoch {prefix} [{bar:30}] {pos}/{len} batches {msg} ({elapsed}, eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    Ok(bar)
}

/// What the batches of a run added up to, for the progress bar and the summary.
struct RunTally {
    images: u64,
    out_bytes: u64,
    done: u64,
    errors: BTreeMap<&'static str, u64>,
    first_errors: Vec<String>,
    /// Damaged images the spec accepts (on_damaged = accept), by reason code.
    warnings: BTreeMap<&'static str, u64>,
    timings: StageTimings,
    last_stats: Option<augserve_core::ops::stats::BatchStats>,
    device: String,
    digest: Option<sha2::Sha256>,
    /// The epoch in progress: its number, when it started, its images so far. An epoch starts
    /// at the previous epoch's last delivery (the run's start for the first) and ends at its own
    /// last delivery: timed from its own first delivery instead, an epoch whose batches were
    /// prepared ahead showed tens of thousands of images/s.
    epoch: Option<(u64, Instant, u64)>,
    /// When the last batch was delivered.
    last_delivery: Option<Instant>,
    /// The process's CPU time over the run, all threads.
    host_cpu: Duration,
}

impl RunTally {
    fn new(digest: bool) -> Self {
        RunTally {
            images: 0,
            out_bytes: 0,
            done: 0,
            errors: BTreeMap::new(),
            first_errors: Vec::new(),
            warnings: BTreeMap::new(),
            timings: StageTimings::default(),
            last_stats: None,
            device: String::new(),
            digest: digest.then(<sha2::Sha256 as sha2::Digest>::new),
            epoch: None,
            last_delivery: None,
            host_cpu: Duration::ZERO,
        }
    }

    /// Counts `batch`, whose tensor bytes are `data`.
    fn add(
        &mut self,
        batch: &augserve_core::Batch,
        data: &[u8],
        bar: &ProgressBar,
        started: Instant,
    ) {
        if self.epoch.map(|e| e.0) != Some(batch.epoch) {
            self.end_epoch(bar);
            self.epoch = Some((batch.epoch, self.last_delivery.unwrap_or(started), 0));
            bar.set_prefix(batch.epoch.to_string());
        }
        for e in &batch.errors {
            *self.errors.entry(e.kind.reason_code()).or_default() += 1;
            if self.first_errors.len() < 5 {
                self.first_errors.push(e.to_string());
            }
            tracing::debug!("{e}");
        }
        for w in &batch.warnings {
            *self.warnings.entry(w.kind.reason_code()).or_default() += 1;
            tracing::warn!("kept a damaged image (on_damaged = accept): {w}");
        }
        if let Some(h) = self.digest.as_mut() {
            digest_batch(h, batch, data);
        }
        let n = batch.len() as u64;
        self.images += n;
        if let Some(e) = self.epoch.as_mut() {
            e.2 += n;
        }
        self.out_bytes += data.len() as u64;
        add_timings(&mut self.timings, &batch.timings);
        self.last_stats = Some(batch.stats);
        self.device.clone_from(&batch.device);
        self.done += 1;
        self.last_delivery = Some(Instant::now());
        let secs = started.elapsed().as_secs_f64().max(1e-9);
        bar.set_message(format!("{:.0} img/s", self.images as f64 / secs));
        bar.inc(1);
    }

    /// Prints the finished epoch's line, if one is in progress.
    fn end_epoch(&mut self, bar: &ProgressBar) {
        if let Some((epoch, start, n)) = self.epoch.take() {
            let end = self.last_delivery.unwrap_or_else(Instant::now);
            let es = end.saturating_duration_since(start).as_secs_f64().max(1e-9);
            bar.suspend(|| {
                println!(
                    "epoch {epoch}: {n} images in {es:.2} s ({:.0} images/s)",
                    n as f64 / es
                )
            });
        }
    }

    fn per_batch(&self, d: Duration) -> f64 {
        if self.done == 0 {
            0.0
        } else {
            d.as_secs_f64() * 1e3 / self.done as f64
        }
    }

    /// The host's copies per batch on a device path, in bytes (zero on the CPU).
    fn host_copy_bytes_per_batch(&self) -> f64 {
        self.timings.host_copy_bytes as f64 / self.done.max(1) as f64
    }

    /// Prints the summary and returns it as JSON (for `--summary-json`).
    fn report(self, job: &Job, secs: f64) -> serde_json::Value {
        let (images, done) = (self.images, self.done);
        println!(
            "total: {images} images in {done} batches, {secs:.2} s: {:.1} images/s, {:.1} MB/s of output, device {}",
            images as f64 / secs,
            self.out_bytes as f64 / secs / 1e6,
            self.device
        );
        let cpu_s = self.host_cpu.as_secs_f64();
        let cpu_us_per_image = cpu_s * 1e6 / images.max(1) as f64;
        println!(
            "host CPU: {cpu_s:.2} s, all threads ({:.2} cores busy), {cpu_us_per_image:.1} us per image",
            cpu_s / secs
        );
        let t = &self.timings;
        let ms = |d: Duration| self.per_batch(d);
        println!(
            "stages, ms per batch (per-image stages summed over threads): read {:.1}, decode {:.1}, colour {:.1} | per-image wall {:.1} | resize {:.1}, mix+normalise {:.1}, stats {:.1} | total {:.1}",
            ms(t.read), ms(t.decode), ms(t.color), ms(t.per_image_wall),
            ms(t.resize), ms(t.mix_normalize), ms(t.stats), ms(t.total)
        );
        if !t.device_busy.is_zero() {
            println!(
                "GPU busy: {:.2} ms per batch (CUDA events, first upload to last download: what augmentation costs the GPU a trainer shares)",
                ms(t.device_busy)
            );
        }
        let copied_mb = self.host_copy_bytes_per_batch() / 1e6;
        if t.host_copy_bytes > 0 {
            println!(
                "host copies: {copied_mb:.1} MB per batch (packing the upload into pinned memory, pageable uploads, JPEG bytes for the device decoder, the output out of pinned memory)"
            );
        }
        let d = &t.decoded;
        println!(
            "decoded: {} by region (libjpeg-turbo; {} of them scaled, {} progressive: every scan read down to the crop), {} whole (zune-jpeg, PNG, WebP), {} left to the GPU decoder",
            d.region, d.scaled, d.progressive, d.whole, d.device
        );
        if let Some(s) = &self.last_stats {
            print_stats(s);
        }
        let digest = self
            .digest
            .clone()
            .map(|h| crate::digest::hex(&sha2::Digest::finalize(h)));
        if let Some(d) = &digest {
            println!("output digest: sha256 {d}");
        }
        let decode_report = job.ops.decode_report();
        if let Some(r) = &decode_report {
            println!("{r}");
        }
        self.print_problems();
        let ds = &job.dataset;
        serde_json::json!({
            "dataset": ds.root(), "format": ds.format().name(), "samples": ds.len(),
            "images": images, "batches": done, "seconds": secs,
            "images_per_s": images as f64 / secs, "output_mb_per_s": self.out_bytes as f64 / secs / 1e6,
            "threads": job.pipeline.threads(), "device": self.device, "errors": self.errors,
            "host_cpu_s": cpu_s, "host_cpu_us_per_image": cpu_us_per_image,
            "warnings": self.warnings,
            "decode": decode_report, "output_sha256": digest,
            "decode_counts": job.ops.decode_counts().map(|c| serde_json::json!({
                "gpu": c.on_device, "cpu_fallback": c.fell_back, "cpu_by_header": c.kept_on_cpu,
                "gpu_share": c.device_share, "pixel_fraction": c.pixel_fraction,
            })),
            "decoded": {"region": d.region, "scaled": d.scaled, "progressive": d.progressive,
                "whole": d.whole, "device": d.device},
            "ms_per_batch": {
                "read": ms(t.read), "decode": ms(t.decode), "color": ms(t.color),
                "per_image_wall": ms(t.per_image_wall), "resize": ms(t.resize),
                "mix_normalize": ms(t.mix_normalize), "stats": ms(t.stats), "total": ms(t.total),
            },
            "gpu_busy_ms_per_batch": ms(t.device_busy),
            "host_copy_mb_per_batch": copied_mb,
            "last_batch_stats": self.last_stats.map(|s| serde_json::json!({"mean": s.mean, "std": s.std, "mad": s.mad, "clipped": s.clipped,
                "percentile_levels": PERCENTILES, "percentiles": s.percentiles})),
        })
    }

    fn print_problems(&self) {
        let n_err: u64 = self.errors.values().sum();
        if n_err > 0 {
            println!(
                "image errors: {n_err} ({:?}); first: {}",
                self.errors,
                self.first_errors.join("; ")
            );
        } else {
            println!("image errors: 0");
        }
        if !self.warnings.is_empty() {
            let n: u64 = self.warnings.values().sum();
            println!(
                "damaged images kept (on_damaged = accept): {n} ({:?})",
                self.warnings
            );
        }
    }
}

fn print_stats(s: &augserve_core::ops::stats::BatchStats) {
    let f = |v: [f32; 3]| format!("[{:.3}, {:.3}, {:.3}]", v[0], v[1], v[2]);
    println!(
        "last batch stats: mean {} std {} mad {} clipped {}",
        f(s.mean),
        f(s.std),
        f(s.mad),
        f(s.clipped)
    );
    if let Some(p) = &s.percentiles {
        let levels: Vec<String> = PERCENTILES.iter().map(|l| format!("p{l}")).collect();
        let per_channel: Vec<String> = (0..3)
            .map(|c| {
                let v: Vec<String> = p.iter().map(|level| format!("{:.3}", level[c])).collect();
                format!("[{}]", v.join(", "))
            })
            .collect();
        println!(
            "last batch percentiles ({}) per channel: {}",
            levels.join(", "),
            per_channel.join(" ")
        );
    }
}
