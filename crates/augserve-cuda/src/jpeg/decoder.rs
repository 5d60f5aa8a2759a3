//! The batched nvJPEG decoder: `GpuJpegDecoder::decode_into` decodes a batch straight into
//! the caller's device buffer as interleaved RGB (the layout the resize kernels read), with the
//! hardware engine where the GPU has one (A100/H100/H200) and the CUDA backend elsewhere.
//! nvJPEG is asked for planar YCbCr at the native chroma subsampling (`NVJPEG_OUTPUT_YUV`),
//! and our kernel (kernels/ycbcr.cu) upsamples the chroma and converts to RGB with zune-jpeg's
//! arithmetic: nvJPEG's own RGB output replicates chroma, which put colourful images up to 2.8
//! levels away from the CPU decoder (measured on an H200; see benches/results/gpu-NVIDIA-H200).
//! Images `route::route` sends to the CPU never reach it.

use std::ffi::{c_int, c_uint};
use std::sync::Arc;
use std::time::Instant;

use cudarc::driver::{CudaSlice, CudaStream, DevicePtrMut, PushKernelArg};

use crate::device::GpuDevice;
use crate::jpeg::planes::{
    batch_planes, chroma_layout, plane_destinations, ChromaLayout, PlaneInfo, Roi, MAX_COMPONENTS,
};
use crate::jpeg::route::{BackendChoice, NvJpegBackend};
use crate::kernels::Kernel;
use crate::launch::{elapsed_ms, grid, launch, timing_event, BLOCK};
use crate::GpuError;

use super::ffi::*;

/// A batch decoded on the device: interleaved RGB images back to back in `buffer`.
pub struct DecodedBatch {
    pub buffer: CudaSlice<u8>,
    /// Per image: byte offset in `buffer`, width, height.
    pub images: Vec<(usize, u32, u32)>,
}

/// A batched nvJPEG decoder on one device and stream.
pub struct GpuJpegDecoder {
    pub(super) nv: Arc<NvJpeg>,
    pub(super) device: Arc<GpuDevice>,
    pub(super) handle: Handle,
    /// One decoding state per output format and chroma layout in use: one state switched
    /// between formats every batch ran 2x slower on an H200 (set up anew each time).
    pub(super) states: Vec<FormatState>,
    /// The backend in use, and why not the hardware engine when it was asked for.
    pub(super) choice: BackendChoice,
    pub(super) stream: Arc<CudaStream>,
    /// Where the time of the last `decode_into` went.
    pub(super) last_times: DecodeTimes,
    /// Scratch output of `time_nvjpeg_output` (measurements only).
    pub(super) raw_scratch: Option<CudaSlice<u8>>,
    /// nvJPEG's planar output, reused across batches (grown, never shrunk).
    pub(super) planes: Option<CudaSlice<u8>>,
    /// One nvJPEG decode-params object per batch position (ROI decode), created on demand.
    pub(super) params: Vec<Params>,
}

// SAFETY: the handle and state are used by one thread at a time (methods take &mut self);
// nvJPEG handles may move between threads.
unsafe impl Send for GpuJpegDecoder {}

impl GpuJpegDecoder {
    /// A decoder on `device`: the hardware engine if asked for and present, else CUDA.
    pub fn new(
        nv: Arc<NvJpeg>,
        device: &Arc<GpuDevice>,
        prefer: NvJpegBackend,
    ) -> Result<Self, GpuError> {
        device.ctx.bind_to_thread()?;
        let stream = device.ctx.new_stream()?;
        let mut handle: Handle = std::ptr::null_mut();
        let mut refused = None;
        // SAFETY: out-pointer to a handle; null allocators select nvJPEG's defaults.
        let mut s = unsafe {
            (nv.create_ex)(
                if prefer == NvJpegBackend::Hardware {
                    NVJPEG_BACKEND_HARDWARE
                } else {
                    NVJPEG_BACKEND_DEFAULT
                },
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                0,
                &mut handle,
            )
        };
        if s != 0 && prefer == NvJpegBackend::Hardware {
            // No usable hardware engine (none on this GPU, or not exposed to a container):
            // the CUDA backend; `choice` says which and why.
            refused = Some(status_name(s));
            // SAFETY: as above.
            s = unsafe {
                (nv.create_ex)(
                    NVJPEG_BACKEND_DEFAULT,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    0,
                    &mut handle,
                )
            };
        }
        check("nvjpegCreateEx", s)?;
        let mut state: State = std::ptr::null_mut();
        // SAFETY: `handle` is live; out-pointer to a state.
        if let Err(e) = check("nvjpegJpegStateCreate", unsafe {
            (nv.state_create)(handle, &mut state)
        }) {
            // SAFETY: created above, destroyed once.
            unsafe { (nv.destroy)(handle) };
            return Err(e);
        }
        Ok(GpuJpegDecoder {
            nv,
            device: device.clone(),
            handle,
            states: vec![FormatState {
                key: StateKey {
                    format: NVJPEG_OUTPUT_YUV,
                    layout: Some(ChromaLayout::Color { h: true, v: true }),
                },
                state,
                batch: None,
            }],
            choice: match prefer {
                NvJpegBackend::Hardware => BackendChoice::new(
                    &device.info.name,
                    device.info.compute_capability,
                    refused.as_deref(),
                ),
                NvJpegBackend::Cuda => BackendChoice {
                    backend: NvJpegBackend::Cuda,
                    note: "the CUDA backend was asked for".into(),
                },
            },
            stream,
            last_times: DecodeTimes::default(),
            raw_scratch: None,
            planes: None,
            params: Vec::new(),
        })
    }

    pub fn backend(&self) -> NvJpegBackend {
        self.choice.backend
    }

    /// The backend in use, and why not the hardware engine.
    pub fn backend_choice(&self) -> &BackendChoice {
        &self.choice
    }

    /// The nvJPEG file in use.
    pub fn library(&self) -> &str {
        &self.nv.library
    }

    /// Components and plane sizes of `jpeg` as nvJPEG parses them.
    pub fn plane_info(&self, jpeg: &[u8]) -> Result<PlaneInfo, GpuError> {
        let mut p = PlaneInfo {
            components: 0,
            widths: [0; MAX_COMPONENTS],
            heights: [0; MAX_COMPONENTS],
        };
        let mut subsampling: c_int = 0;
        // SAFETY: `jpeg` is a live host buffer of jpeg.len() bytes; the out-pointers are
        // locals, widths/heights arrays of NVJPEG_MAX_COMPONENT ints as nvjpeg.h requires.
        check("nvjpegGetImageInfo", unsafe {
            (self.nv.get_image_info)(
                self.handle,
                jpeg.as_ptr(),
                jpeg.len(),
                &mut p.components,
                &mut subsampling,
                p.widths.as_mut_ptr(),
                p.heights.as_mut_ptr(),
            )
        })?;
        Ok(p)
    }

    /// Decodes `jpegs` (sizes from their headers: `dims`) into one device buffer, RGB
    /// interleaved. Fails as a whole if nvJPEG refuses the batch; the caller then decodes
    /// those images on the CPU (per-image fallback).
    pub fn decode_batch(
        &mut self,
        jpegs: &[&[u8]],
        dims: &[(u32, u32)],
    ) -> Result<DecodedBatch, GpuError> {
        let rois: Vec<Roi> = dims.iter().map(|&(w, h)| Roi::full(w, h)).collect();
        self.decode_parts(jpegs, dims, &rois)
    }

    /// Decodes part `rois[k]` of each image into one device buffer, RGB interleaved, back to
    /// back (`DecodedBatch.images` gives each part's offset and size).
    pub fn decode_parts(
        &mut self,
        jpegs: &[&[u8]],
        dims: &[(u32, u32)],
        rois: &[Roi],
    ) -> Result<DecodedBatch, GpuError> {
        let mut images = Vec::with_capacity(rois.len());
        let mut total = 0usize;
        for r in rois {
            images.push((total, r.width, r.height));
            total += r.pixels() as usize * 3;
        }
        // SAFETY: u8 needs no initialisation before the conversion writes every pixel.
        let mut buffer = unsafe { self.stream.alloc::<u8>(total.max(1)) }
            .map_err(|e| GpuError::alloc(e, total))?;
        let offsets: Vec<usize> = images.iter().map(|&(o, _, _)| o).collect();
        self.decode_into(jpegs, dims, rois, &mut buffer, &offsets)?;
        Ok(DecodedBatch { buffer, images })
    }

    /// Decodes part `rois[k]` of image k of `jpegs` into `dst` as interleaved RGB (pitch
    /// roi width * 3) at byte `offsets[k]`, and waits for it. `dims` are the headers' full
    /// sizes (nvJPEG's reading must agree); every part must fit. nvJPEG writes planar YCbCr
    /// into a scratch buffer; `ycbcr_to_rgb_u8` converts with zune-jpeg's arithmetic
    /// (nvJPEG's own RGB output replicates chroma: up to 2.8 levels off).
    pub fn decode_into(
        &mut self,
        jpegs: &[&[u8]],
        dims: &[(u32, u32)],
        rois: &[Roi],
        dst: &mut CudaSlice<u8>,
        offsets: &[usize],
    ) -> Result<(), GpuError> {
        let n = jpegs.len();
        let bad = |status: String| GpuError::NvJpeg {
            call: "decode_into",
            status,
        };
        if n == 0 || n > 65535 || dims.len() != n || rois.len() != n || offsets.len() != n {
            return Err(bad(format!(
                "{n} images, {} sizes, {} parts, {} offsets",
                dims.len(),
                rois.len(),
                offsets.len()
            )));
        }
        for (r, &off) in rois.iter().zip(offsets) {
            if off as u64 + r.pixels() * 3 > dst.len() as u64 {
                return Err(bad(format!("a {r:?} part at {off} overruns the buffer")));
            }
        }
        let started = Instant::now();
        // Plane layouts from nvJPEG's own reading of each header, checked against ours.
        let infos = jpegs
            .iter()
            .map(|j| self.plane_info(j))
            .collect::<Result<Vec<_>, _>>()?;
        let mut times = DecodeTimes {
            images: n,
            headers_ms: started.elapsed().as_secs_f64() * 1e3,
            ..DecodeTimes::default()
        };
        // One nvJPEG call and decoding state per chroma layout: the hardware engine took
        // 30 ms for 256 corpus images of two layouts in one call, 10 ms for the two apart
        // (H200, benches/results/gpu-NVIDIA-H200/profile.txt).
        let mut groups: std::collections::BTreeMap<ChromaLayout, Vec<usize>> = Default::default();
        for (k, p) in infos.iter().enumerate() {
            groups.entry(chroma_layout(p)).or_default().push(k);
        }
        for (layout, ks) in groups {
            let g = Group {
                layout,
                jpegs: ks.iter().map(|&k| jpegs[k]).collect(),
                dims: ks.iter().map(|&k| dims[k]).collect(),
                rois: ks.iter().map(|&k| rois[k]).collect(),
                offsets: ks.iter().map(|&k| offsets[k]).collect(),
                infos: ks.iter().map(|&k| infos[k]).collect(),
            };
            self.decode_ycc_into(&g, dst, &mut times)?;
        }
        self.stream.synchronize()?;
        times.total_ms = started.elapsed().as_secs_f64() * 1e3;
        self.last_times = times;
        Ok(())
    }

    /// Planar YCbCr of `g`'s images into the scratch buffer, then our conversion into `dst`.
    pub(super) fn decode_ycc_into(
        &mut self,
        g: &Group<'_>,
        dst: &mut CudaSlice<u8>,
        times: &mut DecodeTimes,
    ) -> Result<(), GpuError> {
        let (descs, plane_bytes) =
            batch_planes(&g.infos, &g.dims, &g.rois, &g.offsets).map_err(|status| {
                GpuError::NvJpeg {
                    call: "decode_into",
                    status,
                }
            })?;
        let stream = self.stream.clone();
        if self.planes.as_ref().is_none_or(|p| p.len() < plane_bytes) {
            self.planes = None; // free the old one first
            let len = plane_bytes + plane_bytes / 4;
            // SAFETY: nvJPEG writes every plane byte the conversion reads.
            self.planes =
                Some(unsafe { stream.alloc::<u8>(len) }.map_err(|e| GpuError::alloc(e, len))?);
        }
        let mut planes = self
            .planes
            .take()
            .ok_or_else(|| GpuError::Internal("no plane buffer".into()))?;
        let submitted = {
            let (base, _sync) = planes.device_ptr_mut(&stream);
            let at = |off: u64| (base + off) as *mut u8;
            let mut dest: Vec<NvJpegImage> = descs
                .iter()
                .map(|d| {
                    let [y, cb, cr] = plane_destinations(d);
                    NvJpegImage {
                        channel: [at(y.0), at(cb.0), at(cr.0), std::ptr::null_mut()],
                        pitch: [y.1, cb.1, cr.1, 0],
                    }
                })
                .collect();
            // SAFETY: each image's planes point into `planes` at the sizes nvJPEG itself
            // reported for that image and part (`batch_planes`; the buffer was grown to
            // their sum above).
            unsafe { self.submit(g, &mut dest, times) }
        };
        let converted = submitted.and_then(|()| {
            let before = timing_event(&stream)?;
            let descs_dev = stream.clone_htod(&descs)?;
            let most = descs
                .iter()
                .map(|d| (d.width as u32).saturating_mul(d.height as u32))
                .max()
                .unwrap_or(1);
            // Grid stride over each image's pixels: up to 128 blocks per image.
            let cfg = grid(most.min(128 * BLOCK), 1, descs.len() as u32);
            launch(&stream, self.device.kernel(Kernel::YcbcrToRgb), cfg, |a| {
                a.arg(&planes).arg(&mut *dst).arg(&descs_dev);
            })?;
            let after = timing_event(&stream)?;
            // Also what lets the next layout group of the batch reuse the planes.
            after.synchronize()?;
            times.convert_ms += elapsed_ms(&before, &after)?;
            Ok(())
        });
        self.planes = Some(planes);
        converted
    }

    /// One batched nvJPEG call for `g` into `dest`, planar YCbCr (decode params with each
    /// image's ROI when any image is decoded in part). After a failed call the state is
    /// made anew: a batch nvJPEG refuses can leave it unusable for the next ones.
    ///
    /// # Safety
    /// `dest[k]` must point at device memory that holds the planes of image k of `g` (its
    /// ROI part) at the given pitches.
    unsafe fn submit(
        &mut self,
        g: &Group<'_>,
        dest: &mut [NvJpegImage],
        times: &mut DecodeTimes,
    ) -> Result<(), GpuError> {
        let n = g.jpegs.len();
        let partial = g
            .rois
            .iter()
            .zip(&g.dims)
            .any(|(r, &(w, h))| *r != Roi::full(w, h));
        let params = if partial {
            Some(self.roi_params(&g.rois, &g.dims)?)
        } else {
            None
        };
        let key = StateKey {
            format: NVJPEG_OUTPUT_YUV,
            layout: Some(g.layout),
        };
        let state = self.initialize(n, key)?;
        let stream = self.stream.clone();
        let data: Vec<*const u8> = g.jpegs.iter().map(|j| j.as_ptr()).collect();
        let lengths: Vec<usize> = g.jpegs.iter().map(|j| j.len()).collect();
        let before = timing_event(&stream)?;
        let submitted = Instant::now();
        // SAFETY: `data`/`lengths` describe `n` live host buffers; `dest` as the caller
        // guarantees; `params` (ROI decode) holds n live decode-params objects of this
        // handle, each with its image's ROI and this output set; the stream belongs to this
        // device's context. nvJPEG copies what it needs from the host buffers and params
        // before returning.
        let status = unsafe {
            match &params {
                Some(params) => {
                    let api = self.nv.roi.ok_or_else(|| GpuError::NvJpeg {
                        call: "decode_into",
                        status: "no ROI decode".into(),
                    })?;
                    (api.decode_batched_ex)(
                        self.handle,
                        state,
                        data.as_ptr(),
                        lengths.as_ptr(),
                        dest.as_mut_ptr(),
                        params.as_ptr().cast_mut(),
                        stream.cu_stream(),
                    )
                }
                None => (self.nv.decode_batched)(
                    self.handle,
                    state,
                    data.as_ptr(),
                    lengths.as_ptr(),
                    dest.as_mut_ptr(),
                    stream.cu_stream(),
                ),
            }
        };
        times.submit_ms += submitted.elapsed().as_secs_f64() * 1e3;
        let call = if params.is_some() {
            "nvjpegDecodeBatchedEx"
        } else {
            "nvjpegDecodeBatched"
        };
        if status != 0 {
            self.renew_state(key);
            return check(call, status);
        }
        let after = timing_event(&stream)?;
        after.synchronize()?;
        times.nvjpeg_ms += elapsed_ms(&before, &after)?;
        Ok(())
    }

    /// A fresh decoding state for `key` in place of one a failed batch may have left
    /// unusable (after the stream's work on it ended). Keeps the old one if nvJPEG cannot
    /// make another.
    pub(super) fn renew_state(&mut self, key: StateKey) {
        let _ = self.stream.synchronize();
        let Some(fs) = self.states.iter_mut().find(|f| f.key == key) else {
            return;
        };
        fs.batch = None;
        let mut state: State = std::ptr::null_mut();
        // SAFETY: live handle; out-pointer to a local.
        if unsafe { (self.nv.state_create)(self.handle, &mut state) } == 0 {
            // SAFETY: the old state is not in use (stream synchronised) and destroyed once.
            unsafe { (self.nv.state_destroy)(fs.state) };
            fs.state = state;
        }
    }

    /// Where the time of the last successful `decode_into` went.
    pub fn last_times(&self) -> DecodeTimes {
        self.last_times
    }

    /// The decoding state for `key`, initialised for batches of `n` (made on first use;
    /// initialised again when the count changes). The batch size is fixed at
    /// initialisation, so a new count re-initialises (most batches, as the split moves);
    /// NVIDIA's nvImageCodec initialises before every batched hardware decode, so this is the
    /// intended use, not a slow path (measured: no cost on an H200).
    pub(super) fn initialize(&mut self, n: usize, key: StateKey) -> Result<State, GpuError> {
        let k = match self.states.iter().position(|f| f.key == key) {
            Some(k) => k,
            None => {
                let mut state: State = std::ptr::null_mut();
                // SAFETY: live handle; out-pointer to a local (destroyed in Drop).
                check("nvjpegJpegStateCreate", unsafe {
                    (self.nv.state_create)(self.handle, &mut state)
                })?;
                self.states.push(FormatState {
                    key,
                    state,
                    batch: None,
                });
                self.states.len() - 1
            }
        };
        let fs = &mut self.states[k];
        if fs.batch != Some(n) {
            fs.batch = None;
            // SAFETY: live handle and state; batch size n, no CPU threads of nvJPEG's own.
            check("nvjpegDecodeBatchedInitialize", unsafe {
                (self.nv.batched_initialize)(self.handle, fs.state, n as c_int, 1, key.format)
            })?;
            fs.batch = Some(n);
        }
        Ok(fs.state)
    }

    /// The hardware decoder's engines and cores per engine, where nvJPEG says (hardware
    /// backend, nvJPEG 11.9+).
    pub fn hardware_engines(&self) -> Option<(u32, u32)> {
        let f = self.nv.hardware_decoder_info?;
        if self.choice.backend != NvJpegBackend::Hardware {
            return None;
        }
        let (mut engines, mut cores): (c_uint, c_uint) = (0, 0);
        // SAFETY: live handle; out-pointers to locals.
        (unsafe { f(self.handle, &mut engines, &mut cores) } == 0).then_some((engines, cores))
    }

    /// Allocates nvJPEG's internal buffers for batches of `batch` images up to `width` x
    /// `height` (4:2:0, planar YCbCr out) now rather than during the first batches, as
    /// NVIDIA's nvImageCodec does for the hardware decoder. False where this nvJPEG lacks it.
    pub fn preallocate(&mut self, batch: usize, width: u32, height: u32) -> Result<bool, GpuError> {
        let Some(f) = self.nv.pre_allocate else {
            return Ok(false);
        };
        let state = self.initialize(
            batch,
            StateKey {
                format: NVJPEG_OUTPUT_YUV,
                layout: Some(ChromaLayout::Color { h: true, v: true }),
            },
        )?;
        // SAFETY: live handle and state; plain sizes and enum values from nvjpeg.h.
        check("nvjpegDecodeBatchedPreAllocate", unsafe {
            f(
                self.handle,
                state,
                batch as c_int,
                width as c_int,
                height as c_int,
                NVJPEG_CSS_420,
                NVJPEG_OUTPUT_YUV,
            )
        })?;
        for fs in &mut self.states {
            fs.batch = None;
        }
        Ok(true)
    }
}

/// What a decoding state is for: an output format and chroma layout (None: any, for
/// measurements).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct StateKey {
    pub(super) format: c_int,
    pub(super) layout: Option<ChromaLayout>,
}

/// A decoding state and what it is set up for.
pub(super) struct FormatState {
    pub(super) key: StateKey,
    pub(super) state: State,
    /// The batch size it was initialised for.
    pub(super) batch: Option<usize>,
}

/// One output group of a batch: the images `decode_into` sends to one nvJPEG call.
pub(super) struct Group<'a> {
    pub(super) layout: ChromaLayout,
    pub(super) jpegs: Vec<&'a [u8]>,
    pub(super) dims: Vec<(u32, u32)>,
    pub(super) rois: Vec<Roi>,
    pub(super) offsets: Vec<usize>,
    pub(super) infos: Vec<PlaneInfo>,
}

/// Where the time of one batched decode went (milliseconds).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DecodeTimes {
    pub images: usize,
    /// Host: nvjpegGetImageInfo on every image.
    pub headers_ms: f64,
    /// Host: inside the nvjpegDecodeBatched(Ex) call.
    pub submit_ms: f64,
    /// Device: from before the call to the end of nvJPEG's work on the stream.
    pub nvjpeg_ms: f64,
    /// Device: our YCbCr to RGB conversion (with its descriptor upload).
    pub convert_ms: f64,
    /// Host: the whole call, synchronisation included.
    pub total_ms: f64,
}

impl std::fmt::Display for DecodeTimes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} images: headers {:.2} ms, nvJPEG submit {:.2} ms, nvJPEG {:.2} ms, conversion {:.2} ms, total {:.2} ms",
            self.images, self.headers_ms, self.submit_ms, self.nvjpeg_ms, self.convert_ms, self.total_ms
        )
    }
}

impl GpuJpegDecoder {
    /// One decode-params object per image with its ROI set (the whole image: -1 sizes).
    pub(super) fn roi_params(
        &mut self,
        rois: &[Roi],
        dims: &[(u32, u32)],
    ) -> Result<Vec<Params>, GpuError> {
        let api = self.nv.roi.ok_or_else(|| {
            GpuError::NoNvJpeg("this libnvjpeg has no nvjpegDecodeBatchedEx".into())
        })?;
        while self.params.len() < rois.len() {
            let mut p: Params = std::ptr::null_mut();
            // SAFETY: live handle; out-pointer to a params object, destroyed in Drop.
            check("nvjpegDecodeParamsCreate", unsafe {
                (api.params_create)(self.handle, &mut p)
            })?;
            self.params.push(p);
        }
        for ((&p, r), &(w, h)) in self.params.iter().zip(rois).zip(dims) {
            let (x, y, rw, rh) = if *r == Roi::full(w, h) {
                (0, 0, -1, -1)
            } else {
                (
                    r.x as c_int,
                    r.y as c_int,
                    r.width as c_int,
                    r.height as c_int,
                )
            };
            // SAFETY: `p` is a live params object created above.
            check("nvjpegDecodeParamsSetROI", unsafe {
                (api.params_set_roi)(p, x, y, rw, rh)
            })?;
            // SAFETY: as above.
            check("nvjpegDecodeParamsSetOutputFormat", unsafe {
                (api.params_set_output_format)(p, NVJPEG_OUTPUT_YUV)
            })?;
        }
        Ok(self.params[..rois.len()].to_vec())
    }
}

impl Drop for GpuJpegDecoder {
    fn drop(&mut self) {
        if let Some(api) = self.nv.roi {
            for &p in &self.params {
                // SAFETY: created by roi_params with this handle, destroyed once, before it.
                unsafe { (api.params_destroy)(p) };
            }
        }
        // SAFETY: created in `new` / `initialize`, destroyed once, states before handle.
        unsafe {
            for fs in &self.states {
                (self.nv.state_destroy)(fs.state);
            }
            (self.nv.destroy)(self.handle);
        }
    }
}
