//! A batch slot's buffers on the device and in pinned host memory, grown to what a batch
//! needs and reused across batches, and the host copies into and out of them.

use std::sync::{Arc, Mutex, MutexGuard, TryLockError};

use augserve_core::pipeline::{tensor_bytes, PreparedImage};
use augserve_core::PipelineSpec;
use cudarc::driver::{CudaSlice, CudaStream, DeviceRepr, PinnedHostSlice};

use crate::kernels::{MixDesc, ResizeDesc};
use crate::GpuError;

/// How many batches the GPU backend (and its stand-in) has in flight, each in its own slot on
/// its own stream: one uploading, one computing, one downloading.
pub(crate) const BATCHES_IN_FLIGHT: usize = 3;

/// A backend's batch slots, each behind its own lock: a batch takes a free one, or waits for
/// the first.
pub(crate) struct SlotPool<T>(Vec<Mutex<T>>);

impl<T> SlotPool<T> {
    pub(crate) fn new(slots: Vec<T>) -> Self {
        SlotPool(slots.into_iter().map(Mutex::new).collect())
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// A free slot, or (all busy) the first one once it frees up.
    pub(crate) fn acquire(&self) -> MutexGuard<'_, T> {
        for s in &self.0 {
            match s.try_lock() {
                Ok(g) => return g,
                Err(TryLockError::Poisoned(p)) => return p.into_inner(),
                Err(TryLockError::WouldBlock) => {}
            }
        }
        self.lock(0)
    }

    /// Slot `i`, once it is free.
    pub(crate) fn lock(&self, i: usize) -> MutexGuard<'_, T> {
        self.0[i].lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Per-batch buffers, reused across batches (grown, never shrunk). Each slot has its own
/// stream, so batches in different slots overlap: one uploads while another computes.
pub(crate) struct Slot {
    stream: Arc<CudaStream>,
    stage_in: Option<PinnedHostSlice<u8>>,
    stage_out: Option<PinnedHostSlice<u8>>,
    src: Option<CudaSlice<u8>>,
    tmp: Option<CudaSlice<u8>>,
    resized: Option<CudaSlice<u8>>,
    out: Option<CudaSlice<u8>>,
    descs: Option<CudaSlice<ResizeDesc>>,
    coeffs: Option<CudaSlice<i32>>,
    mix: Option<CudaSlice<MixDesc>>,
    norm: Option<CudaSlice<f32>>,
    sums: Option<CudaSlice<f64>>,
}

/// What one batch needs of each buffer, in elements.
pub(crate) struct BufferSizes {
    pub stage_in: usize,
    pub stage_out: usize,
    pub src: usize,
    pub tmp: usize,
    pub resized: usize,
    pub out: usize,
    pub images: usize,
    pub coeffs: usize,
}

impl BufferSizes {
    /// What a batch of `n` images under `spec` needs of the device buffers the output shape
    /// sizes; the others (packed regions, source images, tables) zero, and the pinned
    /// output staging too: the fronts download into registered memory or a device ring, and
    /// one that does not (`bench`) grows it at its first batch.
    pub(crate) fn for_output(spec: &PipelineSpec, n: usize) -> Self {
        let out = tensor_bytes(spec, n);
        let hw = spec.size.width as usize * spec.size.height as usize;
        BufferSizes {
            stage_in: 0,
            stage_out: 0,
            src: 0,
            tmp: 0,
            resized: n * hw * 3,
            out,
            images: n,
            coeffs: 0,
        }
    }
}

/// A slot's buffers for one batch, each at least the size it needs.
pub(crate) struct Buffers<'a> {
    pub stage_in: &'a mut PinnedHostSlice<u8>,
    pub stage_out: &'a mut PinnedHostSlice<u8>,
    pub src: &'a mut CudaSlice<u8>,
    pub tmp: &'a mut CudaSlice<u8>,
    pub resized: &'a mut CudaSlice<u8>,
    pub out: &'a mut CudaSlice<u8>,
    pub descs: &'a mut CudaSlice<ResizeDesc>,
    pub coeffs: &'a mut CudaSlice<i32>,
    pub mix: &'a mut CudaSlice<MixDesc>,
    /// Normalisation scale (3) and bias (3).
    pub norm: &'a mut CudaSlice<f32>,
    /// The output's sums (9: sum, sum of squares, clipped, per channel) and absolute
    /// deviations (3).
    pub sums: &'a mut CudaSlice<f64>,
}

impl Slot {
    /// A slot with no buffers yet, on its own stream.
    pub(crate) fn new(stream: Arc<CudaStream>) -> Self {
        Slot {
            stream,
            stage_in: None,
            stage_out: None,
            src: None,
            tmp: None,
            resized: None,
            out: None,
            descs: None,
            coeffs: None,
            mix: None,
            norm: None,
            sums: None,
        }
    }

    pub(crate) fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// The buffers, grown where the batch needs more than they hold.
    pub(crate) fn buffers(&mut self, need: &BufferSizes) -> Result<Buffers<'_>, GpuError> {
        let s = &self.stream;
        Ok(Buffers {
            stage_in: grown_pinned(s, &mut self.stage_in, need.stage_in, true)?,
            stage_out: grown_pinned(s, &mut self.stage_out, need.stage_out, false)?,
            src: grown(s, &mut self.src, need.src)?,
            tmp: grown(s, &mut self.tmp, need.tmp)?,
            resized: grown(s, &mut self.resized, need.resized)?,
            out: grown(s, &mut self.out, need.out)?,
            descs: grown(s, &mut self.descs, need.images)?,
            coeffs: grown(s, &mut self.coeffs, need.coeffs)?,
            mix: grown(s, &mut self.mix, need.images)?,
            norm: grown(s, &mut self.norm, 6)?,
            sums: grown(s, &mut self.sums, 12)?,
        })
    }
}

/// `buf`, grown to hold `n` elements (with headroom, so slowly varying batches reuse it).
fn grown<'b, T: DeviceRepr>(
    stream: &Arc<CudaStream>,
    buf: &'b mut Option<CudaSlice<T>>,
    n: usize,
) -> Result<&'b mut CudaSlice<T>, GpuError> {
    // A buffer too small is freed before the new one is allocated.
    let kept = buf.take().filter(|b| b.len() >= n.max(1));
    let b = match kept {
        Some(b) => b,
        None => {
            let len = (n + n / 4).max(1);
            // SAFETY: the contents are uninitialised; every use writes before it reads.
            unsafe { stream.alloc::<T>(len) }
                .map_err(|e| GpuError::alloc(e, len * std::mem::size_of::<T>()))?
        }
    };
    Ok(buf.insert(b))
}

/// `grown` for pinned host memory; `write_combined` for uploads only.
fn grown_pinned<'b>(
    stream: &Arc<CudaStream>,
    buf: &'b mut Option<PinnedHostSlice<u8>>,
    n: usize,
    write_combined: bool,
) -> Result<&'b mut PinnedHostSlice<u8>, GpuError> {
    let kept = buf.take().filter(|b| b.len() >= n.max(1));
    let b = match kept {
        Some(b) => b,
        None => {
            let len = (n + n / 4).max(1);
            // Write-combined memory is fast for the host to write and the device to read, and
            // very slow for the host to read: only for uploads.
            let flags = if write_combined {
                cudarc::driver::sys::CU_MEMHOSTALLOC_WRITECOMBINED
            } else {
                0
            };
            // SAFETY: the contents are uninitialised; we write before the device reads, and
            // the device writes before we read.
            unsafe { stream.context().alloc_pinned_with_flags::<u8>(len, flags) }
                .map_err(|e| GpuError::alloc(e, len))?
        }
    };
    Ok(buf.insert(b))
}

/// Threads for the host copies of a batch (packing the upload, the output out of pinned
/// memory): one thread moves about 3 GB/s on an H200's host, a few come near what the memory
/// gives. Their own threads, not the pipeline's pool: there the copies waited behind the next
/// batch's per-image work (the upload took 23 ms instead of 13).
const COPY_THREADS: usize = 4;

/// Copies each `(dst, src)` pair (equal lengths) on up to [`COPY_THREADS`] scoped threads,
/// in contiguous runs of about equal bytes.
fn copy_parallel(pairs: Vec<(&mut [u8], &[u8])>) {
    let total: usize = pairs.iter().map(|(d, _)| d.len()).sum();
    let threads = COPY_THREADS
        .min(std::thread::available_parallelism().map_or(1, |n| n.get()))
        .min(total / (1 << 20)) // under 1 MiB a thread: not worth one
        .max(1);
    let copy = |(d, s): (&mut [u8], &[u8])| d.copy_from_slice(s);
    if threads == 1 {
        pairs.into_iter().for_each(copy);
        return;
    }
    let share = total.div_ceil(threads);
    let mut runs: Vec<Vec<(&mut [u8], &[u8])>> = vec![Vec::new()];
    let mut in_run = 0;
    for pair in pairs {
        if in_run >= share {
            runs.push(Vec::new());
            in_run = 0;
        }
        in_run += pair.0.len();
        if let Some(run) = runs.last_mut() {
            run.push(pair);
        }
    }
    std::thread::scope(|scope| {
        for run in runs {
            scope.spawn(move || run.into_iter().for_each(copy));
        }
    });
}

/// Copies `src` into `dst` (the same length) in 4 MiB pieces, in parallel.
pub(crate) fn copy_bytes(dst: &mut [u8], src: &[u8]) {
    const PIECE: usize = 4 << 20;
    copy_parallel(dst.chunks_mut(PIECE).zip(src.chunks(PIECE)).collect());
}

/// Packs the images' host regions back to back into `host` (exactly their total size), in
/// parallel (100 MB a batch of 256 ImageNet-sized crops).
pub(crate) fn pack_regions(host: &mut [u8], images: &[PreparedImage]) {
    let mut parts = Vec::with_capacity(images.len());
    let mut rest = host;
    for im in images {
        let (part, tail) = std::mem::take(&mut rest).split_at_mut(im.region.data.len());
        parts.push((part, im.region.data.as_slice()));
        rest = tail;
    }
    copy_parallel(parts);
}
