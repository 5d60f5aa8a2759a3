//! Server configuration: a TOML file, then `AUGSERVE_*` environment overrides.

use std::path::{Path, PathBuf};

use augserve_core::DatasetFormat;
use serde::{Deserialize, Serialize};

use crate::ServerError;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// TCP address to listen on, e.g. "0.0.0.0:50051" (env AUGSERVE_LISTEN_TCP).
    pub listen_tcp: Option<String>,
    /// Unix socket path to listen on, for sidecars (env AUGSERVE_LISTEN_UDS).
    pub listen_uds: Option<PathBuf>,
    /// Datasets clients may name (env AUGSERVE_DATASETS="name=path,name2=path2").
    pub datasets: Vec<DatasetConfig>,
    pub limits: LimitsConfig,
    /// "auto", "cpu" or "gpu" for the batch ops (env AUGSERVE_DEVICE).
    pub device: String,
    /// Which GPU: its CUDA device ordinal, as CUDA_VISIBLE_DEVICES numbers them (env
    /// AUGSERVE_CUDA_DEVICE). One server per GPU on a multi-GPU host.
    pub cuda_device: usize,
    /// Worker threads shared by all streams; 0 = one per core (env AUGSERVE_THREADS).
    pub threads: usize,
    /// Seconds streams get to finish after SIGTERM (env AUGSERVE_GRACE_PERIOD_S).
    pub grace_period_s: f64,
    /// Address for Prometheus metrics over HTTP (`GET /metrics`), e.g. "0.0.0.0:9090"; unset
    /// = no metrics endpoint (env AUGSERVE_METRICS_LISTEN).
    pub metrics_listen: Option<String>,
    /// Seconds between "batch telemetry" log lines (latest per-channel mean, std, MAD and
    /// clipped fraction per dataset, and images/s); 0 = never (env
    /// AUGSERVE_TELEMETRY_LOG_INTERVAL_S).
    pub telemetry_log_interval_s: f64,
    /// PEM certificate chain and private key: serve TCP over TLS (env AUGSERVE_TLS_CERT,
    /// AUGSERVE_TLS_KEY). The Unix socket stays plaintext (local, guarded by its 0660 mode).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// A file of accepted bearer tokens, one per line (env AUGSERVE_TOKENS_FILE). With tokens
    /// configured, every call but health needs `authorization: Bearer <token>`.
    pub tokens_file: Option<PathBuf>,
    /// Where shared-memory rings of SHM streams live (env AUGSERVE_SHM_DIR); "" disables the
    /// SHM transport. Must be on a RAM-backed file system (tmpfs) that clients can read.
    pub shm_dir: PathBuf,
    /// Decode JPEGs on the GPU too (nvJPEG), split with the CPU workers by measured rates
    /// (env AUGSERVE_GPU_DECODE=1). Needs the GPU batch ops; without nvJPEG, the CPU decodes.
    pub gpu_decode: bool,
    /// Fix the share (0 < F <= 1) of GPU-decodable images nvJPEG decodes instead of tuning
    /// it from measured rates, so seeded streams are reproducible bit for bit; implies
    /// gpu_decode (env AUGSERVE_GPU_DECODE_SHARE).
    pub gpu_decode_share: Option<f64>,
    /// Accepted tokens from the environment only (AUGSERVE_TOKENS, comma-separated); never
    /// written out.
    #[serde(skip)]
    pub tokens: Vec<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen_tcp: Some("127.0.0.1:50051".into()),
            listen_uds: None,
            datasets: Vec::new(),
            limits: LimitsConfig::default(),
            device: "auto".into(),
            cuda_device: 0,
            threads: 0,
            grace_period_s: 10.0,
            metrics_listen: None,
            telemetry_log_interval_s: 60.0,
            tls_cert: None,
            tls_key: None,
            tokens_file: None,
            shm_dir: PathBuf::from("/dev/shm"),
            gpu_decode: false,
            gpu_decode_share: None,
            tokens: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetConfig {
    pub name: String,
    pub path: PathBuf,
    /// Guessed from the path when absent.
    pub format: Option<DatasetFormat>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub max_request_bytes: u64,
    pub max_batch_bytes: u64,
    pub max_pixels: u64,
    pub max_file_bytes: u64,
    pub max_concurrent_streams: u32,
    pub max_batch_size: u32,
    pub max_prefetch: u32,
    pub max_images_per_request: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let d = augserve_core::DecodeLimits::default();
        LimitsConfig {
            max_request_bytes: 64 << 20,
            max_batch_bytes: 1 << 30,
            max_pixels: d.max_pixels,
            max_file_bytes: d.max_file_bytes,
            max_concurrent_streams: 64,
            max_batch_size: 4096,
            max_prefetch: 8,
            max_images_per_request: 1024,
        }
    }
}

fn parse<T: std::str::FromStr>(key: &str, v: &str) -> Result<T, ServerError> {
    v.parse()
        .map_err(|_| ServerError::Config(format!("{key}: cannot parse '{v}'")))
}

impl ServerConfig {
    /// Reads `path` (if any), then applies the environment.
    pub fn load(path: Option<&Path>) -> Result<Self, ServerError> {
        let mut cfg = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| ServerError::Config(format!("{}: {e}", p.display())))?;
                toml::from_str(&text)
                    .map_err(|e| ServerError::Config(format!("{}: {e}", p.display())))?
            }
            None => ServerConfig::default(),
        };
        cfg.apply_env(std::env::vars())?;
        Ok(cfg)
    }

    /// Applies `AUGSERVE_*` overrides from `vars`.
    pub fn apply_env(
        &mut self,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(), ServerError> {
        for (k, v) in vars {
            let Some(key) = k.strip_prefix("AUGSERVE_") else {
                continue;
            };
            let l = &mut self.limits;
            match key {
                "LISTEN_TCP" => self.listen_tcp = (!v.is_empty()).then(|| v.clone()),
                "LISTEN_UDS" => self.listen_uds = (!v.is_empty()).then(|| PathBuf::from(&v)),
                "DEVICE" => self.device = v.clone(),
                "CUDA_DEVICE" => self.cuda_device = parse(&k, &v)?,
                "THREADS" => self.threads = parse(&k, &v)?,
                "GRACE_PERIOD_S" => self.grace_period_s = parse(&k, &v)?,
                "METRICS_LISTEN" => self.metrics_listen = (!v.is_empty()).then(|| v.clone()),
                "TELEMETRY_LOG_INTERVAL_S" => self.telemetry_log_interval_s = parse(&k, &v)?,
                "TLS_CERT" => self.tls_cert = (!v.is_empty()).then(|| PathBuf::from(&v)),
                "TLS_KEY" => self.tls_key = (!v.is_empty()).then(|| PathBuf::from(&v)),
                "SHM_DIR" => self.shm_dir = PathBuf::from(&v),
                "GPU_DECODE" => self.gpu_decode = matches!(v.as_str(), "1" | "true" | "yes" | "on"),
                "GPU_DECODE_SHARE" => {
                    self.gpu_decode_share = (!v.is_empty()).then(|| parse(&k, &v)).transpose()?
                }
                "TOKENS_FILE" => self.tokens_file = (!v.is_empty()).then(|| PathBuf::from(&v)),
                "TOKENS" => {
                    self.tokens = v
                        .split(',')
                        .map(|t| t.trim().to_string())
                        .filter(|t| !t.is_empty())
                        .collect()
                }
                "MAX_REQUEST_BYTES" => l.max_request_bytes = parse(&k, &v)?,
                "MAX_BATCH_BYTES" => l.max_batch_bytes = parse(&k, &v)?,
                "MAX_PIXELS" => l.max_pixels = parse(&k, &v)?,
                "MAX_FILE_BYTES" => l.max_file_bytes = parse(&k, &v)?,
                "MAX_CONCURRENT_STREAMS" => l.max_concurrent_streams = parse(&k, &v)?,
                "MAX_BATCH_SIZE" => l.max_batch_size = parse(&k, &v)?,
                "MAX_PREFETCH" => l.max_prefetch = parse(&k, &v)?,
                "MAX_IMAGES_PER_REQUEST" => l.max_images_per_request = parse(&k, &v)?,
                "DATASETS" => {
                    for item in v.split(',').filter(|s| !s.trim().is_empty()) {
                        let (name, path) = item.split_once('=').ok_or_else(|| {
                            ServerError::Config(format!("{k}: '{item}' is not name=path"))
                        })?;
                        self.datasets.retain(|d| d.name != name.trim());
                        self.datasets.push(DatasetConfig {
                            name: name.trim().into(),
                            path: PathBuf::from(path.trim()),
                            format: None,
                        });
                    }
                }
                _ => {}
            }
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(ServerError::Config(
                "tls_cert and tls_key go together: set both or neither".into(),
            ));
        }
        if let Some(share) = self.gpu_decode_share {
            augserve_cuda::gpu_decode::DecodeSplit::fixed(share)
                .map_err(|e| ServerError::Config(format!("gpu_decode_share: {e}")))?;
        }
        if self.listen_tcp.is_none() && self.listen_uds.is_none() {
            return Err(ServerError::Config(
                "set listen_tcp and/or listen_uds".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_env() {
        let mut cfg: ServerConfig = toml::from_str(
            "listen_uds = \"/tmp/a.sock\"\n[[datasets]]\nname = \"train\"\npath = \"/data/train\"\n[limits]\nmax_batch_size = 512\n",
        )
        .unwrap();
        cfg.apply_env([
            ("AUGSERVE_MAX_BATCH_SIZE".to_string(), "256".to_string()),
            ("AUGSERVE_DATASETS".to_string(), "val=/data/val".to_string()),
            ("OTHER".to_string(), "x".to_string()),
        ])
        .unwrap();
        assert_eq!(cfg.limits.max_batch_size, 256);
        assert_eq!(cfg.datasets.len(), 2);
        assert!(toml::from_str::<ServerConfig>("listen = 1").is_err());
        assert!(cfg
            .apply_env([("AUGSERVE_THREADS".to_string(), "many".to_string())])
            .unwrap_err()
            .to_string()
            .contains("AUGSERVE_THREADS"));
    }

    #[test]
    fn cuda_device_from_the_file_or_env() {
        let mut cfg: ServerConfig = toml::from_str("cuda_device = 3\n").unwrap();
        assert_eq!(cfg.cuda_device, 3);
        cfg.apply_env([("AUGSERVE_CUDA_DEVICE".to_string(), "5".to_string())])
            .unwrap();
        assert_eq!(cfg.cuda_device, 5);
        let e = cfg
            .apply_env([("AUGSERVE_CUDA_DEVICE".to_string(), "-1".to_string())])
            .unwrap_err()
            .to_string();
        assert!(e.contains("AUGSERVE_CUDA_DEVICE"), "{e}");
        assert_eq!(ServerConfig::default().cuda_device, 0);
    }

    #[test]
    fn gpu_decode_share_from_the_file_or_env_and_checked() {
        let env = |v: &str| [("AUGSERVE_GPU_DECODE_SHARE".to_string(), v.to_string())];
        let mut cfg: ServerConfig = toml::from_str("gpu_decode_share = 0.5\n").unwrap();
        assert_eq!(cfg.gpu_decode_share, Some(0.5));
        cfg.apply_env(env("0.8")).unwrap();
        assert_eq!(cfg.gpu_decode_share, Some(0.8));
        cfg.apply_env(env("")).unwrap();
        assert_eq!(cfg.gpu_decode_share, None);
        for bad in ["1.5", "0", "half"] {
            let e = cfg.apply_env(env(bad)).unwrap_err().to_string();
            assert!(
                e.contains("GPU_DECODE_SHARE") || e.contains("gpu_decode_share"),
                "{e}"
            );
        }
    }
}
