//! Which images the GPU decodes, and how many: the per-image route (what nvJPEG's backends
//! take, from the JPEG headers) and the automatic CPU/GPU split of a batch (from measured
//! rates, so both finish together; DALI's `hw_decoder_load`, found rather than set).
//! Pure logic: tested on the CPU; the decoder itself is `decoder.rs`.

use augserve_core::decode::{JpegCoding, JpegInfo};

/// nvJPEG's decoding engines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NvJpegBackend {
    /// The hardware JPEG engines of A100 / H100 (NVJPEG_BACKEND_HARDWARE): baseline only.
    Hardware,
    /// nvJPEG's default backend (hybrid: Huffman decoding on the CPU or the GPU, as nvJPEG
    /// chooses; IDCT on the GPU): baseline and progressive.
    Cuda,
}

impl NvJpegBackend {
    /// The name GetServerInfo and the metrics use.
    pub fn name(self) -> &'static str {
        match self {
            NvJpegBackend::Hardware => "nvjpeg-hardware",
            NvJpegBackend::Cuda => "nvjpeg-cuda",
        }
    }
}

/// Whether GPUs of compute capability `cc` carry hardware JPEG engines (NVJPG): the GA100
/// (A100, A30, A800: 8.0), Hopper (H100, H200, H800, H20, GH200: 9.0) and data-centre
/// Blackwell (B200, GB200: 10.0). Consumer and workstation GPUs of 8.6/8.9/12.x have none.
pub fn has_jpeg_engines(cc: (i32, i32)) -> bool {
    matches!(cc, (8, 0) | (9, 0) | (10, 0))
}

/// Which nvJPEG backend decodes, and, when it is not the hardware engine, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendChoice {
    pub backend: NvJpegBackend,
    /// Empty on the hardware engine; else why not, with the likely cause.
    pub note: String,
}

impl BackendChoice {
    /// The choice on a GPU named `gpu` of compute capability `cc`, after asking nvJPEG for
    /// the hardware engine: `refused` is its answer when it could not open one.
    pub fn new(gpu: &str, cc: (i32, i32), refused: Option<&str>) -> Self {
        let Some(status) = refused else {
            return BackendChoice {
                backend: NvJpegBackend::Hardware,
                note: String::new(),
            };
        };
        let note = if has_jpeg_engines(cc) {
            format!(
                "the {gpu} (compute capability {}.{}) has hardware JPEG engines, but nvJPEG could \
                 not open them ({status}). Likely causes: a container started without the NVIDIA \
                 driver's video capability (set NVIDIA_DRIVER_CAPABILITIES=compute,utility,video; \
                 docker/README.md), a MIG slice without media extensions (only +me profiles have \
                 an engine), or a driver older than the nvJPEG library. Decoding uses the \
                 slower CUDA backend",
                cc.0, cc.1
            )
        } else {
            format!(
                "the {gpu} has no hardware JPEG engine (A100/A30, H100/H200 and B200-class GPUs \
                 do): nvJPEG's CUDA backend decodes"
            )
        };
        BackendChoice {
            backend: NvJpegBackend::Cuda,
            note,
        }
    }
}

impl std::fmt::Display for BackendChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.backend {
            NvJpegBackend::Hardware => write!(f, "nvJPEG, hardware JPEG engine"),
            NvJpegBackend::Cuda => write!(f, "nvJPEG, CUDA backend: {}", self.note),
        }
    }
}

/// Where one image is decoded, and why not on the GPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeRoute {
    Gpu,
    Cpu(&'static str),
}

/// Images smaller than this on a side stay on the CPU: a GPU launch costs more than decoding
/// them, and nvJPEG's hardware engine was seen to decode 2x2 to 4x4 images 4-19 levels away
/// from zune-jpeg (benches/results/gpu-NVIDIA-H200/run.txt).
pub const MIN_GPU_SIDE: u32 = 32;

/// The route for an image with headers `info` on `backend`. The CPU keeps what nvJPEG would
/// refuse or decode differently: CMYK/YCCK (no RGB conversion), 12-bit, lossless, arithmetic,
/// hierarchical, odd sampling (4:1:1 included: the conversion kernel takes full or halved
/// chroma), progressive on the hardware engine, RGB-coded images (nvJPEG converts them as
/// YCbCr), subsampled grayscale, and tiny images.
pub fn route(info: &JpegInfo, backend: NvJpegBackend) -> DecodeRoute {
    use DecodeRoute::Cpu;
    if !info.ends_with_eoi {
        // Cut short: nvJPEG may fill in the rest without a word; the CPU decoder reports it.
        return Cpu("no_end_marker");
    }
    if info.components == 4 {
        return Cpu("cmyk");
    }
    if info.precision != 8 {
        return Cpu("12_bit");
    }
    match info.coding {
        JpegCoding::Baseline => {}
        JpegCoding::Progressive if backend == NvJpegBackend::Cuda => {}
        JpegCoding::Progressive => return Cpu("progressive_on_hardware"),
        JpegCoding::Lossless => return Cpu("lossless"),
        JpegCoding::Arithmetic => return Cpu("arithmetic"),
        JpegCoding::Hierarchical => return Cpu("hierarchical"),
    }
    if info.components == 3 && info.subsampling().is_none() {
        return Cpu("unusual_sampling");
    }
    if info.components != 1 && info.components != 3 {
        return Cpu("components");
    }
    if info.subsampling() == Some("4:1:1") {
        // Chroma quartered: our conversion kernel handles full and halved chroma only.
        return Cpu("chroma_4_1_1");
    }
    if info.rgb {
        return Cpu("rgb_coded");
    }
    if info.components == 1 && info.sampling.first() != Some(&(1, 1)) {
        return Cpu("gray_subsampled");
    }
    if info.width < MIN_GPU_SIDE || info.height < MIN_GPU_SIDE {
        return Cpu("tiny");
    }
    DecodeRoute::Gpu
}

/// The CPU/GPU split, tuned from measured rates: each batch, eligible images go to the GPU in
/// the proportion `gpu_rate / (cpu_rate + gpu_rate)`, so that the CPU workers and the GPU
/// decoder finish at the same time. Rates are smoothed (EWMA); the share stays within
/// [`MIN_SHARE`, `MAX_SHARE`] so both sides keep being measured. A fixed share
/// ([`DecodeSplit::fixed`], `--gpu-decode-share`) replaces the tuning: which images the GPU
/// decodes is then a function of their sample ids alone, so seeded runs are reproducible.
#[derive(Debug, Clone)]
pub struct DecodeSplit {
    cpu_rate: Option<f64>,
    gpu_rate: Option<f64>,
    smoothing: f64,
    fixed: Option<f64>,
}

pub const MIN_SHARE: f64 = 0.05;
pub const MAX_SHARE: f64 = 0.95;

impl Default for DecodeSplit {
    fn default() -> Self {
        DecodeSplit {
            cpu_rate: None,
            gpu_rate: None,
            smoothing: 0.3,
            fixed: None,
        }
    }
}

impl DecodeSplit {
    /// A split that sends the share `share` (0 < share <= 1) of the eligible images to the
    /// GPU whatever the rates (still measured, for reports).
    pub fn fixed(share: f64) -> Result<Self, String> {
        if !(share > 0.0 && share <= 1.0) {
            return Err(format!(
                "GPU decode share must be above 0 and at most 1, got {share}"
            ));
        }
        Ok(DecodeSplit {
            fixed: Some(share),
            ..DecodeSplit::default()
        })
    }

    /// The split the settings ask for: none without GPU decoding; a fixed share implies it.
    pub fn from_settings(gpu_decode: bool, share: Option<f64>) -> Result<Option<Self>, String> {
        match share {
            Some(share) => Self::fixed(share).map(Some),
            None => Ok(gpu_decode.then(Self::default)),
        }
    }

    /// Whether the share is fixed rather than tuned.
    pub fn is_fixed(&self) -> bool {
        self.fixed.is_some()
    }

    /// Records one batch: `cpu_images` decoded by all CPU workers in `cpu_secs` of wall time,
    /// `gpu_images` by the GPU in `gpu_secs`. Sides with no images or no time are skipped.
    pub fn observe(&mut self, cpu_images: usize, cpu_secs: f64, gpu_images: usize, gpu_secs: f64) {
        let a = self.smoothing;
        let mix = |old: Option<f64>, new: f64| Some(old.map_or(new, |o| (1.0 - a) * o + a * new));
        if cpu_images > 0 && cpu_secs > 0.0 {
            self.cpu_rate = mix(self.cpu_rate, cpu_images as f64 / cpu_secs);
        }
        if gpu_images > 0 && gpu_secs > 0.0 {
            self.gpu_rate = mix(self.gpu_rate, gpu_images as f64 / gpu_secs);
        }
    }

    /// Share of eligible images for the GPU (0.5 until both rates are known).
    pub fn gpu_share(&self) -> f64 {
        if let Some(share) = self.fixed {
            return share;
        }
        match (self.cpu_rate, self.gpu_rate) {
            (Some(c), Some(g)) if c + g > 0.0 => (g / (c + g)).clamp(MIN_SHARE, MAX_SHARE),
            _ => 0.5,
        }
    }

    /// How many of a batch of `total` images, `eligible` of them GPU-decodable, go to the GPU
    /// (images the CPU must take count as CPU work already).
    pub fn gpu_count(&self, total: usize, eligible: usize) -> usize {
        let want = (self.gpu_share() * total as f64).round() as usize;
        want.min(eligible)
    }

    /// The measured rates (images/s), for reports.
    pub fn rates(&self) -> (Option<f64>, Option<f64>) {
        (self.cpu_rate, self.gpu_rate)
    }
}

/// Whether the image with `sample_id` goes to the GPU when the share is `share`: a
/// well-mixed hash of the id against the share, so the choice depends on the image alone (not
/// on thread timing), picks images evenly, and an image picked at one share is picked at
/// every larger one.
pub fn picks_gpu(sample_id: u64, share: f64) -> bool {
    ((mix64(sample_id) >> 11) as f64 / (1u64 << 53) as f64) < share
}

/// splitmix64's finaliser.
fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backend_choice_says_why_not_the_hardware_engine() {
        let hw = BackendChoice::new("NVIDIA H200", (9, 0), None);
        assert_eq!(hw.backend, NvJpegBackend::Hardware);
        assert_eq!(hw.to_string(), "nvJPEG, hardware JPEG engine");
        let refused = BackendChoice::new("NVIDIA H100 80GB HBM3", (9, 0), Some("NOT_SUPPORTED"));
        assert_eq!(refused.backend, NvJpegBackend::Cuda);
        for needle in ["has hardware JPEG engines", "NOT_SUPPORTED", "video", "MIG"] {
            assert!(refused.note.contains(needle), "{needle}: {}", refused.note);
        }
        let none = BackendChoice::new("NVIDIA L4", (8, 9), Some("NOT_SUPPORTED"));
        assert!(
            none.note.contains("has no hardware JPEG engine"),
            "{}",
            none.note
        );
        assert!([(8, 0), (9, 0), (10, 0)].into_iter().all(has_jpeg_engines));
        assert!(![(7, 5), (8, 6), (8, 9), (12, 0)]
            .into_iter()
            .any(has_jpeg_engines));
        assert_eq!(NvJpegBackend::Cuda.name(), "nvjpeg-cuda");
    }

    fn info(coding: JpegCoding, components: u8, sampling: Vec<(u8, u8)>) -> JpegInfo {
        JpegInfo {
            width: 500,
            height: 375,
            components,
            precision: 8,
            coding,
            sampling,
            restarts: false,
            rgb: false,
            ends_with_eoi: true,
        }
    }

    #[test]
    fn a_file_without_its_end_marker_stays_on_the_cpu() {
        let mut cut = info(JpegCoding::Baseline, 3, vec![(2, 2), (1, 1), (1, 1)]);
        assert_eq!(route(&cut, NvJpegBackend::Hardware), DecodeRoute::Gpu);
        cut.ends_with_eoi = false;
        assert_eq!(
            route(&cut, NvJpegBackend::Hardware),
            DecodeRoute::Cpu("no_end_marker")
        );
    }

    #[test]
    fn routes_follow_what_each_backend_takes() {
        let s420 = vec![(2, 2), (1, 1), (1, 1)];
        let base = info(JpegCoding::Baseline, 3, s420.clone());
        assert_eq!(route(&base, NvJpegBackend::Hardware), DecodeRoute::Gpu);
        let prog = info(JpegCoding::Progressive, 3, s420.clone());
        assert_eq!(
            route(&prog, NvJpegBackend::Hardware),
            DecodeRoute::Cpu("progressive_on_hardware")
        );
        assert_eq!(route(&prog, NvJpegBackend::Cuda), DecodeRoute::Gpu);
        let cmyk = info(JpegCoding::Baseline, 4, vec![(1, 1); 4]);
        assert_eq!(route(&cmyk, NvJpegBackend::Cuda), DecodeRoute::Cpu("cmyk"));
        let gray = info(JpegCoding::Baseline, 1, vec![(1, 1)]);
        assert_eq!(route(&gray, NvJpegBackend::Hardware), DecodeRoute::Gpu);
        let odd = info(JpegCoding::Baseline, 3, vec![(3, 1), (1, 1), (1, 1)]);
        assert_eq!(
            route(&odd, NvJpegBackend::Cuda),
            DecodeRoute::Cpu("unusual_sampling")
        );
        let mut twelve = base.clone();
        twelve.precision = 12;
        assert_eq!(
            route(&twelve, NvJpegBackend::Cuda),
            DecodeRoute::Cpu("12_bit")
        );
        let mut rgb = base.clone();
        rgb.rgb = true;
        assert_eq!(
            route(&rgb, NvJpegBackend::Hardware),
            DecodeRoute::Cpu("rgb_coded")
        );
        let gray22 = info(JpegCoding::Baseline, 1, vec![(2, 2)]);
        assert_eq!(
            route(&gray22, NvJpegBackend::Hardware),
            DecodeRoute::Cpu("gray_subsampled")
        );
        let s411 = info(JpegCoding::Baseline, 3, vec![(4, 1), (1, 1), (1, 1)]);
        assert_eq!(
            route(&s411, NvJpegBackend::Hardware),
            DecodeRoute::Cpu("chroma_4_1_1")
        );
        let mut tiny = base.clone();
        tiny.width = 16;
        assert_eq!(route(&tiny, NvJpegBackend::Cuda), DecodeRoute::Cpu("tiny"));
        let arith = info(JpegCoding::Arithmetic, 3, s420);
        assert_eq!(
            route(&arith, NvJpegBackend::Cuda),
            DecodeRoute::Cpu("arithmetic")
        );
    }

    #[test]
    fn the_split_converges_to_equal_finishing_times() {
        let mut s = DecodeSplit::default();
        assert_eq!(s.gpu_share(), 0.5);
        // A CPU pool of 1,100 images/s against a GPU decoder of 4,400 images/s: 80 % GPU.
        let (cpu_rate, gpu_rate) = (1100.0, 4400.0);
        for _ in 0..30 {
            let n = 256;
            let g = s.gpu_count(n, n);
            let c = n - g;
            s.observe(c, c as f64 / cpu_rate, g, g as f64 / gpu_rate);
        }
        assert!((s.gpu_share() - 0.8).abs() < 1e-6, "{}", s.gpu_share());
        // Both sides then take the same time for a batch.
        let g = s.gpu_count(256, 256);
        let (tc, tg) = ((256 - g) as f64 / cpu_rate, g as f64 / gpu_rate);
        assert!((tc - tg).abs() < 0.003, "{tc} vs {tg}");
        // Never more than the eligible images; never all of them to one side.
        assert_eq!(s.gpu_count(256, 10), 10);
        s.observe(100, 1.0, 100, 1e-6);
        assert!(s.gpu_share() <= MAX_SHARE);
        // The GPU slows down (another process on it): the share follows.
        for _ in 0..40 {
            s.observe(100, 100.0 / 1100.0, 100, 100.0 / 550.0);
        }
        assert!(
            (s.gpu_share() - 550.0 / 1650.0).abs() < 0.01,
            "{}",
            s.gpu_share()
        );
    }

    #[test]
    fn a_fixed_split_ignores_the_rates_and_picks_by_sample_id_alone() {
        let mut s = DecodeSplit::fixed(0.7).expect("valid share");
        assert!(s.is_fixed());
        for _ in 0..10 {
            s.observe(100, 1.0, 100, 1e-3);
        }
        assert_eq!(s.gpu_share(), 0.7);
        assert_eq!(s.gpu_count(256, 256), 179);
        assert_eq!(s.rates().1, Some(100_000.0));
        assert_eq!(DecodeSplit::fixed(1.0).map(|s| s.gpu_count(64, 60)), Ok(60));
        for bad in [0.0, -0.5, 1.01, f64::NAN] {
            assert!(DecodeSplit::fixed(bad).is_err(), "{bad}");
        }
        // From the settings: a share implies GPU decoding.
        assert!(DecodeSplit::from_settings(false, None).unwrap().is_none());
        assert!(!DecodeSplit::from_settings(true, None)
            .unwrap()
            .unwrap()
            .is_fixed());
        assert!(DecodeSplit::from_settings(false, Some(0.5))
            .unwrap()
            .unwrap()
            .is_fixed());
        assert!(DecodeSplit::from_settings(true, Some(2.0)).is_err());
        // The pick: even over ids, nested across shares, the same every time.
        let ids = 0..100_000u64;
        let at = |share: f64| {
            ids.clone()
                .filter(|&i| picks_gpu(i, share))
                .collect::<Vec<_>>()
        };
        let (low, high) = (at(0.3), at(0.7));
        assert!(
            (low.len() as f64 / 1e5 - 0.3).abs() < 0.005,
            "{}",
            low.len()
        );
        assert!(
            (high.len() as f64 / 1e5 - 0.7).abs() < 0.005,
            "{}",
            high.len()
        );
        assert!(low.iter().all(|i| picks_gpu(*i, 0.7)));
        assert_eq!(at(0.3), low);
        assert!(ids.clone().all(|i| picks_gpu(i, 1.0)));
    }
}
