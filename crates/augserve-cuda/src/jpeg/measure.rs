//! Measurement and diagnostics on the decoder: nvJPEG's own output formats timed against the
//! pipeline's (`augserve bench`, tests/gpu.rs), and single images copied back to the host.

use std::ffi::c_int;
use std::time::Instant;

use cudarc::driver::{CudaSlice, DevicePtrMut};

use crate::jpeg::planes::{Roi, MAX_COMPONENTS};
use crate::launch::{elapsed_ms, timing_event};
use crate::GpuError;

use super::decoder::*;
use super::ffi::*;

/// nvJPEG output formats `time_nvjpeg_output` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum NvJpegOutput {
    /// Planar Y, Cb, Cr at the image's own subsampling (what the pipeline uses).
    Yuv,
    /// Interleaved RGB, nvJPEG's conversion (replicated chroma).
    Rgbi,
    /// Luma only.
    Y,
    /// Y plane + interleaved CbCr at 4:2:0.
    Nv12,
}

impl NvJpegOutput {
    fn code(self) -> c_int {
        match self {
            NvJpegOutput::Yuv => NVJPEG_OUTPUT_YUV,
            NvJpegOutput::Rgbi => NVJPEG_OUTPUT_RGBI,
            NvJpegOutput::Y => NVJPEG_OUTPUT_Y,
            NvJpegOutput::Nv12 => NVJPEG_OUTPUT_NV12,
        }
    }
}

impl GpuJpegDecoder {
    /// Times nvJPEG alone decoding `jpegs` whole in `output` into a scratch buffer (no
    /// conversion kernel; the pixels are not used): what each output format costs on this
    /// GPU's engines. Measurements only; the pipeline decodes through `decode_into`.
    pub fn time_nvjpeg_output(
        &mut self,
        jpegs: &[&[u8]],
        output: NvJpegOutput,
    ) -> Result<DecodeTimes, GpuError> {
        let n = jpegs.len();
        let started = Instant::now();
        let infos = jpegs
            .iter()
            .map(|j| self.plane_info(j))
            .collect::<Result<Vec<_>, _>>()?;
        let headers_ms = started.elapsed().as_secs_f64() * 1e3;
        // Per image, per channel: byte offset in the scratch buffer and pitch.
        let mut layout: Vec<[(usize, usize); MAX_COMPONENTS]> = Vec::with_capacity(n);
        let mut total = 0usize;
        for p in &infos {
            let (w, h) = (p.widths[0].max(0) as usize, p.heights[0].max(0) as usize);
            let mut channels = [(0usize, 0usize); MAX_COMPONENTS];
            let mut plane = |k: usize, pitch: usize, rows: usize| {
                channels[k] = (total, pitch);
                total += pitch * rows;
            };
            match output {
                NvJpegOutput::Rgbi => plane(0, w * 3, h),
                NvJpegOutput::Y => plane(0, w, h),
                NvJpegOutput::Nv12 => {
                    plane(0, w, h);
                    plane(1, w.div_ceil(2) * 2, h.div_ceil(2));
                }
                // Full-size chroma destinations for grayscale, as `plane_layout` gives them.
                NvJpegOutput::Yuv if p.components == 1 => (0..3).for_each(|k| plane(k, w, h)),
                NvJpegOutput::Yuv => {
                    for k in 0..3 {
                        plane(k, p.widths[k].max(0) as usize, p.heights[k].max(0) as usize);
                    }
                }
            }
            layout.push(channels);
        }
        let stream = self.stream.clone();
        if self.raw_scratch.as_ref().is_none_or(|b| b.len() < total) {
            self.raw_scratch = None;
            // SAFETY: scratch output, never read.
            self.raw_scratch = Some(
                unsafe { stream.alloc::<u8>(total.max(1)) }
                    .map_err(|e| GpuError::alloc(e, total))?,
            );
        }
        // One state for whatever layouts the measurement mixes.
        let key = StateKey {
            format: output.code(),
            layout: None,
        };
        let state = self.initialize(n, key)?;
        let mut scratch = self
            .raw_scratch
            .take()
            .ok_or_else(|| GpuError::Internal("scratch".into()))?;
        let result =
            self.time_into_scratch(jpegs, &layout, &mut scratch, state, headers_ms, started);
        if result.is_err() {
            self.renew_state(key);
        }
        self.raw_scratch = Some(scratch);
        result
    }

    fn time_into_scratch(
        &mut self,
        jpegs: &[&[u8]],
        layout: &[[(usize, usize); MAX_COMPONENTS]],
        scratch: &mut CudaSlice<u8>,
        state: State,
        headers_ms: f64,
        started: Instant,
    ) -> Result<DecodeTimes, GpuError> {
        let n = jpegs.len();
        let stream = self.stream.clone();
        let (base, _sync) = scratch.device_ptr_mut(&stream);
        let mut dest: Vec<NvJpegImage> = layout
            .iter()
            .map(|c| {
                let mut img = NvJpegImage {
                    channel: [std::ptr::null_mut(); MAX_COMPONENTS],
                    pitch: [0; MAX_COMPONENTS],
                };
                for (k, &(off, pitch)) in c.iter().enumerate() {
                    if pitch > 0 {
                        img.channel[k] = (base + off as u64) as *mut u8;
                        img.pitch[k] = pitch;
                    }
                }
                img
            })
            .collect();
        let data: Vec<*const u8> = jpegs.iter().map(|j| j.as_ptr()).collect();
        let lengths: Vec<usize> = jpegs.iter().map(|j| j.len()).collect();
        let before = timing_event(&stream)?;
        let submitted = Instant::now();
        // SAFETY: as in decode_into: n live host buffers; every destination channel points
        // into `scratch` at the size nvJPEG reported for that image and format.
        let status = unsafe {
            (self.nv.decode_batched)(
                self.handle,
                state,
                data.as_ptr(),
                lengths.as_ptr(),
                dest.as_mut_ptr(),
                stream.cu_stream(),
            )
        };
        let submit_ms = submitted.elapsed().as_secs_f64() * 1e3;
        check("nvjpegDecodeBatched", status)?;
        let after = timing_event(&stream)?;
        stream.synchronize()?;
        Ok(DecodeTimes {
            images: n,
            headers_ms,
            submit_ms,
            nvjpeg_ms: elapsed_ms(&before, &after)?,
            convert_ms: 0.0,
            total_ms: started.elapsed().as_secs_f64() * 1e3,
        })
    }

    /// Decodes part `roi` of one image (full size `dims`) and copies it to the host, RGB with
    /// pitch roi width * 3 (checks only).
    pub fn decode_part_to_host(
        &mut self,
        jpeg: &[u8],
        dims: (u32, u32),
        roi: Roi,
    ) -> Result<Vec<u8>, GpuError> {
        let b = self.decode_parts(&[jpeg], &[dims], &[roi])?;
        self.download(&b, 0)
    }

    /// Copies image `k` of a decoded batch back to the host (checks only: the pipeline keeps
    /// decoded images on the device).
    pub fn download(&self, batch: &DecodedBatch, k: usize) -> Result<Vec<u8>, GpuError> {
        let (off, w, h) = batch.images[k];
        let len = w as usize * h as usize * 3;
        Ok(self
            .stream
            .clone_dtoh(&batch.buffer.slice(off..off + len))?)
    }
}
