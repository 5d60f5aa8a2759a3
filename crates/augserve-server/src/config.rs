//! Server configuration. Every setting is declared once, in [`SETTINGS`]: its TOML key, its
//! `AUGSERVE_<KEY>` environment variable and its `augserve serve --key` flag all come from that
//! one entry, and so does the help text. Layers, lowest to highest precedence: the TOML file,
//! the environment, the flags; each overrides the one before key by key. Unknown keys, variables
//! and flags are refused with the nearest known name.

use std::path::{Path, PathBuf};

use augserve_core::DatasetFormat;
use serde::{Deserialize, Serialize};

use crate::ServerError;

/// Where the server listens when no listener is given anywhere (file, environment, flags).
pub const DEFAULT_LISTEN_TCP: &str = "127.0.0.1:50051";

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServerConfig {
    pub listen_tcp: Option<String>,
    pub listen_uds: Option<PathBuf>,
    pub datasets: Vec<DatasetConfig>,
    pub limits: LimitsConfig,
    pub device: String,
    pub cuda_device: usize,
    pub threads: usize,
    pub grace_period_s: f64,
    pub metrics_listen: Option<String>,
    pub telemetry_log_interval_s: f64,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tokens_file: Option<PathBuf>,
    pub shm_dir: PathBuf,
    pub gpu_decode: bool,
    pub gpu_decode_share: Option<f64>,
    /// Accepted tokens from the environment only (AUGSERVE_TOKENS, comma-separated); never
    /// written out.
    #[serde(skip)]
    pub tokens: Vec<String>,
    /// Whether any layer named a listener: only then are the defaults replaced.
    #[serde(skip)]
    listeners_given: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen_tcp: None,
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
            listeners_given: false,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LimitsConfig {
    pub max_request_bytes: u64,
    pub max_batch_bytes: u64,
    pub max_pixels: u64,
    pub max_file_bytes: u64,
    pub max_concurrent_streams: u32,
    pub max_batch_size: u32,
    pub max_prefetch: u32,
    pub max_images_per_request: u32,
    /// Server-wide budget for batch memory; 0 = half the machine's (or cgroup's) memory.
    pub max_batch_memory_bytes: u64,
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
            max_batch_memory_bytes: 0,
        }
    }
}

/// Where a setting's TOML key lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Top,
    /// Under `[limits]`.
    Limits,
}

/// What a setting's value is, for the flag's shape and the help's value name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Address,
    Path,
    Choice,
    Count,
    Seconds,
    Bytes,
    Fraction,
    /// On or off: `--flag` alone means on.
    Switch,
}

impl Kind {
    pub fn value_name(self) -> &'static str {
        match self {
            Kind::Address => "ADDR",
            Kind::Path => "PATH",
            Kind::Choice => "NAME",
            Kind::Count => "N",
            Kind::Seconds => "SECONDS",
            Kind::Bytes => "BYTES",
            Kind::Fraction => "F",
            Kind::Switch => "BOOL",
        }
    }
}

/// One scalar setting: TOML `key` (in `section`), variable `AUGSERVE_<KEY>`, flag `--key`
/// (underscores as dashes). `set` reads the text any layer gives; `show` prints the value.
pub struct Setting {
    pub key: &'static str,
    pub section: Section,
    pub kind: Kind,
    pub help: &'static str,
    set: fn(&mut ServerConfig, &str) -> Result<(), String>,
    show: fn(&ServerConfig) -> String,
}

impl Setting {
    pub fn env_name(&self) -> String {
        format!("AUGSERVE_{}", self.key.to_uppercase())
    }

    /// The `augserve serve` flag, without its dashes.
    pub fn flag(&self) -> String {
        self.key.replace('_', "-")
    }

    /// The TOML key as a reader writes it (`limits.max_batch_size`).
    pub fn toml_key(&self) -> String {
        match self.section {
            Section::Top => self.key.to_string(),
            Section::Limits => format!("limits.{}", self.key),
        }
    }

    /// The value in `cfg`, as the help shows a default ("" for unset).
    pub fn show(&self, cfg: &ServerConfig) -> String {
        (self.show)(cfg)
    }
}

fn number<T: std::str::FromStr>(v: &str, what: &str) -> Result<T, String> {
    v.trim()
        .parse()
        .map_err(|_| format!("cannot read '{v}' as {what}"))
}

fn switch(v: &str) -> Result<bool, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        _ => Err(format!("cannot read '{v}' as on/off (true, false, 1, 0)")),
    }
}

fn text(v: &str) -> Option<String> {
    (!v.is_empty()).then(|| v.to_string())
}

fn path(v: &str) -> Option<PathBuf> {
    (!v.is_empty()).then(|| PathBuf::from(v))
}

fn shown<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref().map(ToString::to_string).unwrap_or_default()
}

fn shown_path(v: &Option<PathBuf>) -> String {
    v.as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// A `[limits]` entry: whole numbers only.
macro_rules! limit {
    ($key:ident, $kind:expr, $help:expr) => {
        Setting {
            key: stringify!($key),
            section: Section::Limits,
            kind: $kind,
            help: $help,
            set: |c, v| {
                c.limits.$key = number(v, "a whole number")?;
                Ok(())
            },
            show: |c| c.limits.$key.to_string(),
        }
    };
}

/// Every scalar setting of the server. `datasets` (a list) and `tokens` (a secret, environment
/// only) are the two keys outside this table: see [`ServerConfig::apply_env`].
pub static SETTINGS: &[Setting] = &[
    Setting {
        key: "listen_tcp",
        section: Section::Top,
        kind: Kind::Address,
        help: "TCP address, e.g. 0.0.0.0:50051; \"\" = none. When no listener is given \
               anywhere: 127.0.0.1:50051",
        set: |c, v| {
            c.listeners_given = true;
            c.listen_tcp = text(v);
            Ok(())
        },
        show: |c| shown(&c.listen_tcp),
    },
    Setting {
        key: "listen_uds",
        section: Section::Top,
        kind: Kind::Path,
        help: "Unix socket path (created 0660); replaces the default TCP listener",
        set: |c, v| {
            c.listeners_given = true;
            c.listen_uds = path(v);
            Ok(())
        },
        show: |c| shown_path(&c.listen_uds),
    },
    Setting {
        key: "device",
        section: Section::Top,
        kind: Kind::Choice,
        help: "where the batch ops run: auto | cpu | gpu",
        set: |c, v| match v {
            "auto" | "cpu" | "gpu" => {
                c.device = v.to_string();
                Ok(())
            }
            _ => Err(format!("'{v}' is not auto, cpu or gpu")),
        },
        show: |c| c.device.clone(),
    },
    Setting {
        key: "cuda_device",
        section: Section::Top,
        kind: Kind::Count,
        help: "which GPU: its CUDA device ordinal, as CUDA_VISIBLE_DEVICES numbers them",
        set: |c, v| {
            c.cuda_device = number(v, "a device ordinal")?;
            Ok(())
        },
        show: |c| c.cuda_device.to_string(),
    },
    Setting {
        key: "threads",
        section: Section::Top,
        kind: Kind::Count,
        help: "worker threads shared by all streams; 0 = one per core",
        set: |c, v| {
            c.threads = number(v, "a thread count")?;
            Ok(())
        },
        show: |c| c.threads.to_string(),
    },
    Setting {
        key: "grace_period_s",
        section: Section::Top,
        kind: Kind::Seconds,
        help: "seconds streams get to finish after SIGTERM",
        set: |c, v| {
            c.grace_period_s = number(v, "seconds")?;
            Ok(())
        },
        show: |c| c.grace_period_s.to_string(),
    },
    Setting {
        key: "metrics_listen",
        section: Section::Top,
        kind: Kind::Address,
        help: "Prometheus GET /metrics address, e.g. 0.0.0.0:9090; unset = no endpoint",
        set: |c, v| {
            c.metrics_listen = text(v);
            Ok(())
        },
        show: |c| shown(&c.metrics_listen),
    },
    Setting {
        key: "telemetry_log_interval_s",
        section: Section::Top,
        kind: Kind::Seconds,
        help: "seconds between batch-statistics log lines; 0 = never",
        set: |c, v| {
            c.telemetry_log_interval_s = number(v, "seconds")?;
            Ok(())
        },
        show: |c| c.telemetry_log_interval_s.to_string(),
    },
    Setting {
        key: "tls_cert",
        section: Section::Top,
        kind: Kind::Path,
        help: "PEM certificate chain: TCP over TLS (with tls_key; the socket stays plaintext)",
        set: |c, v| {
            c.tls_cert = path(v);
            Ok(())
        },
        show: |c| shown_path(&c.tls_cert),
    },
    Setting {
        key: "tls_key",
        section: Section::Top,
        kind: Kind::Path,
        help: "PEM private key for tls_cert",
        set: |c, v| {
            c.tls_key = path(v);
            Ok(())
        },
        show: |c| shown_path(&c.tls_key),
    },
    Setting {
        key: "tokens_file",
        section: Section::Top,
        kind: Kind::Path,
        help: "accepted bearer tokens, one per line; then every call but health needs \
               `authorization: Bearer <token>`",
        set: |c, v| {
            c.tokens_file = path(v);
            Ok(())
        },
        show: |c| shown_path(&c.tokens_file),
    },
    Setting {
        key: "shm_dir",
        section: Section::Top,
        kind: Kind::Path,
        help: "tmpfs folder for shared-memory streams; \"\" = SHM transport off",
        set: |c, v| {
            c.shm_dir = PathBuf::from(v);
            Ok(())
        },
        show: |c| c.shm_dir.display().to_string(),
    },
    Setting {
        key: "gpu_decode",
        section: Section::Top,
        kind: Kind::Switch,
        help: "decode JPEGs on the GPU too (nvJPEG), split with the CPU workers by measured rates",
        set: |c, v| {
            c.gpu_decode = switch(v)?;
            Ok(())
        },
        show: |c| c.gpu_decode.to_string(),
    },
    Setting {
        key: "gpu_decode_share",
        section: Section::Top,
        kind: Kind::Fraction,
        help: "fixed share (0-1] of GPU-decodable images for nvJPEG, for reproducible \
               streams (implies gpu_decode)",
        set: |c, v| {
            c.gpu_decode_share = match v.trim() {
                "" => None,
                t => Some(number(t, "a share between 0 and 1")?),
            };
            Ok(())
        },
        show: |c| shown(&c.gpu_decode_share),
    },
    limit!(max_request_bytes, Kind::Bytes, "largest request message"),
    limit!(
        max_batch_bytes,
        Kind::Bytes,
        "largest batch tensor a stream may ask for"
    ),
    limit!(
        max_pixels,
        Kind::Count,
        "largest image, in pixels (checked from the header, before decoding)"
    ),
    limit!(max_file_bytes, Kind::Bytes, "largest image file"),
    limit!(
        max_concurrent_streams,
        Kind::Count,
        "streams served at once"
    ),
    limit!(max_batch_size, Kind::Count, "largest batch size"),
    limit!(
        max_prefetch,
        Kind::Count,
        "most batches a stream prepares ahead"
    ),
    limit!(
        max_images_per_request,
        Kind::Count,
        "most images in one AugmentImages request"
    ),
    limit!(
        max_batch_memory_bytes,
        Kind::Bytes,
        "budget for all streams' batches together; a stream that would pass it is refused \
         (0 = half the machine's or container's memory)"
    ),
];

/// `AUGSERVE_*` variables that augserve reads but that are no server settings: the server
/// accepts them (and [`HARNESS_VARIABLES`]) in its environment and refuses any other one.
pub static OTHER_VARIABLES: &[(&str, &str)] = &[
    ("AUGSERVE_CONFIG", "the configuration file (serve --config)"),
    (
        "AUGSERVE_LOG",
        "log filter, e.g. info or augserve_server=debug",
    ),
    ("AUGSERVE_LOG_FORMAT", "text | json"),
    ("AUGSERVE_CACHE_DIR", "where the demo dataset is cached"),
    (
        "AUGSERVE_CUDA_LIB_DIRS",
        "extra folders to look for libnvrtc and libnvjpeg in",
    ),
    ("AUGSERVE_DATA", "augserve run/bench --data"),
    ("AUGSERVE_ADDR", "augserve pull/health --addr"),
    ("AUGSERVE_TOKEN", "augserve pull --token"),
    ("AUGSERVE_TLS_CA", "augserve pull --tls-ca"),
];

/// The test suite's and the benchmarks' own variables (scripts/test.sh, benches/): servers
/// they start inherit them.
pub static HARNESS_VARIABLES: &[(&str, &str)] = &[
    ("AUGSERVE_BIN", "the test suite: the binary under test"),
    ("AUGSERVE_PYTHON", "the test suite: its Python"),
    ("AUGSERVE_TEST_PHOTOS", "the test suite: real photos"),
    (
        "AUGSERVE_REQUIRE_PEERS",
        "the test suite: fail instead of skipping",
    ),
    ("AUGSERVE_TURBOJPEG", "the test suite: libturbojpeg"),
    (
        "AUGSERVE_JPEG_TESTDATA",
        "the test suite: the JPEG test files",
    ),
    (
        "AUGSERVE_ROBUSTNESS_SECONDS",
        "the test suite: robustness soak time",
    ),
    (
        "AUGSERVE_CUDA_LIBS_CHILD",
        "the test suite: library search child",
    ),
    (
        "AUGSERVE_CUDA_LIBS_CHILD_CASE",
        "the test suite: library search case",
    ),
    ("AUGSERVE_BENCH_CORPUS", "benchmarks: the corpus"),
    ("AUGSERVE_BENCH_JPEG", "benchmarks: one JPEG"),
];

/// The variables outside [`SETTINGS`] that configure the server.
const LIST_VARIABLES: [&str; 2] = ["AUGSERVE_DATASETS", "AUGSERVE_TOKENS"];

/// `name` is not one of `known`: the error, with the nearest known name when one is close.
/// Jaro-Winkler weighs a shared start (`max_batch` -> `max_batch_size`); the common
/// `AUGSERVE_` prefix is left out of the comparison, or every variable would look close.
fn unknown(what: &str, name: &str, known: impl IntoIterator<Item = String>) -> String {
    let bare = |n: &str| {
        n.strip_prefix("AUGSERVE_")
            .unwrap_or(n)
            .to_ascii_lowercase()
    };
    let nearest = known
        .into_iter()
        .map(|k| (strsim::jaro_winkler(&bare(name), &bare(&k)), k))
        .max_by(|a, b| a.0.total_cmp(&b.0));
    match nearest {
        Some((score, k)) if score >= 0.8 => {
            format!("unknown {what} '{name}' (did you mean '{k}'?)")
        }
        _ => format!("unknown {what} '{name}'"),
    }
}

/// A TOML scalar as the text any other layer would give.
fn scalar_text(v: &toml::Value) -> Result<String, String> {
    match v {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        _ => Err("expected a single value".into()),
    }
}

fn config_error(place: impl std::fmt::Display, e: impl std::fmt::Display) -> ServerError {
    ServerError::Config(format!("{place}: {e}"))
}

impl ServerConfig {
    /// The configuration `augserve serve` runs with: `file`, then the `AUGSERVE_*` variables of
    /// `env`, then `flags` (setting key, value), then defaults for what none of them set.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: &[(&str, String)],
    ) -> Result<Self, ServerError> {
        let mut cfg = ServerConfig::default();
        if let Some(p) = file {
            let text = std::fs::read_to_string(p).map_err(|e| config_error(p.display(), e))?;
            cfg.apply_toml(&text)
                .map_err(|e| config_error(p.display(), e))?;
        }
        cfg.apply_env(env)?;
        for (key, value) in flags {
            let flag = format!("--{}", key.replace('_', "-"));
            let s = SETTINGS
                .iter()
                .find(|s| s.key == *key)
                .ok_or_else(|| config_error(&flag, "no such setting"))?;
            (s.set)(&mut cfg, value).map_err(|e| config_error(&flag, e))?;
        }
        cfg.finish()?;
        Ok(cfg)
    }

    /// A configuration from TOML text alone (defaults filled in, checked).
    pub fn from_toml_str(text: &str) -> Result<Self, ServerError> {
        let mut cfg = ServerConfig::default();
        cfg.apply_toml(text).map_err(ServerError::Config)?;
        cfg.finish()?;
        Ok(cfg)
    }

    fn apply_toml(&mut self, text: &str) -> Result<(), String> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| e.to_string())?;
        for (key, value) in table {
            match (key.as_str(), value) {
                ("datasets", v) => {
                    self.datasets = v.try_into().map_err(|e| format!("datasets: {e}"))?;
                }
                ("limits", toml::Value::Table(limits)) => {
                    for (k, v) in limits {
                        let t = scalar_text(&v).map_err(|e| format!("limits.{k}: {e}"))?;
                        self.apply_setting(Section::Limits, &k, &t)
                            .map_err(|e| format!("limits.{k}: {e}"))?;
                    }
                }
                (k, v) => {
                    let t = scalar_text(&v).map_err(|e| format!("{k}: {e}"))?;
                    self.apply_setting(Section::Top, k, &t)
                        .map_err(|e| format!("{k}: {e}"))?;
                }
            }
        }
        Ok(())
    }

    /// Sets the setting `key` of `section` from `value`; an unknown key names the nearest.
    fn apply_setting(&mut self, section: Section, key: &str, value: &str) -> Result<(), String> {
        if let Some(s) = SETTINGS
            .iter()
            .find(|s| s.key == key && s.section == section)
        {
            return (s.set)(self, value);
        }
        if let Some(s) = SETTINGS.iter().find(|s| s.key == key) {
            return Err(match s.section {
                Section::Limits => format!("'{key}' belongs under [limits]"),
                Section::Top => format!("'{key}' is not a limit: write it outside [limits]"),
            });
        }
        let known = SETTINGS
            .iter()
            .filter(|s| s.section == section)
            .map(|s| s.key.to_string());
        let extra = (section == Section::Top).then(|| ["datasets".into(), "limits".into()]);
        Err(unknown(
            "key",
            key,
            known.chain(extra.into_iter().flatten()),
        ))
    }

    /// Applies the `AUGSERVE_*` variables of `vars` (others are ignored): each setting's, plus
    /// `AUGSERVE_DATASETS=name=path,...` and `AUGSERVE_TOKENS=t1,t2`. Any other `AUGSERVE_*`
    /// that augserve does not read ([`OTHER_VARIABLES`]) is refused.
    pub fn apply_env(
        &mut self,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(), ServerError> {
        for (name, value) in vars {
            if !name.starts_with("AUGSERVE_") {
                continue;
            }
            match name.as_str() {
                "AUGSERVE_DATASETS" => self.add_datasets(&name, &value)?,
                "AUGSERVE_TOKENS" => {
                    self.tokens = value
                        .split(',')
                        .map(|t| t.trim().to_string())
                        .filter(|t| !t.is_empty())
                        .collect()
                }
                _ if OTHER_VARIABLES
                    .iter()
                    .chain(HARNESS_VARIABLES)
                    .any(|(n, _)| *n == name) => {}
                _ => {
                    let s = SETTINGS
                        .iter()
                        .find(|s| s.env_name() == name)
                        .ok_or_else(|| ServerError::Config(unknown_variable(&name)))?;
                    (s.set)(self, &value).map_err(|e| config_error(&name, e))?;
                }
            }
        }
        Ok(())
    }

    fn add_datasets(&mut self, var: &str, list: &str) -> Result<(), ServerError> {
        for item in list.split(',').filter(|s| !s.trim().is_empty()) {
            let (name, path) = item
                .split_once('=')
                .ok_or_else(|| config_error(var, format_args!("'{item}' is not name=path")))?;
            self.datasets.retain(|d| d.name != name.trim());
            self.datasets.push(DatasetConfig {
                name: name.trim().into(),
                path: PathBuf::from(path.trim()),
                format: None,
            });
        }
        Ok(())
    }

    /// Defaults for what no layer set, then the checks across settings.
    fn finish(&mut self) -> Result<(), ServerError> {
        if !self.listeners_given {
            self.listen_tcp = Some(DEFAULT_LISTEN_TCP.into());
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(ServerError::Config(
                "tls_cert and tls_key go together: set both or neither".into(),
            ));
        }
        if let Some(share) = self.gpu_decode_share {
            augserve_cuda::gpu_decode::DecodeSplit::fixed(share)
                .map_err(|e| config_error("gpu_decode_share", e))?;
        }
        if self.listen_tcp.is_none() && self.listen_uds.is_none() {
            return Err(ServerError::Config(
                "no listener: listen_tcp and listen_uds are both off; set one of them".into(),
            ));
        }
        Ok(())
    }
}

/// Every `AUGSERVE_*` variable augserve reads.
pub fn known_variables() -> impl Iterator<Item = String> {
    SETTINGS
        .iter()
        .map(Setting::env_name)
        .chain(LIST_VARIABLES.iter().map(|v| v.to_string()))
        .chain(
            OTHER_VARIABLES
                .iter()
                .chain(HARNESS_VARIABLES)
                .map(|(v, _)| v.to_string()),
        )
}

/// The error for an `AUGSERVE_*` variable augserve does not read.
pub fn unknown_variable(name: &str) -> String {
    unknown("environment variable", name, known_variables())
}

/// The first `AUGSERVE_*` variable of `vars` that augserve does not read, as an error: a
/// mistyped name must not pass silently (the binary checks this for every subcommand).
pub fn check_variables(
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ServerError> {
    let known: Vec<String> = known_variables().collect();
    for (name, _) in vars {
        if name.starts_with("AUGSERVE_") && !known.contains(&name) {
            return Err(ServerError::Config(unknown_variable(&name)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn file_then_env_then_flags() {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(
            file.path(),
            "listen_uds = \"/tmp/a.sock\"\nthreads = 3\n[[datasets]]\nname = \"train\"\npath = \"/data/train\"\n[limits]\nmax_batch_size = 512\n",
        )
        .unwrap();
        let cfg = ServerConfig::load(
            Some(file.path()),
            env(&[
                ("AUGSERVE_MAX_BATCH_SIZE", "256"),
                ("AUGSERVE_DATASETS", "val=/data/val"),
                ("AUGSERVE_THREADS", "4"),
                ("OTHER", "x"),
            ]),
            &[("threads", "2".into()), ("max_prefetch", "3".into())],
        )
        .unwrap();
        assert_eq!(cfg.limits.max_batch_size, 256);
        assert_eq!(cfg.limits.max_prefetch, 3);
        assert_eq!(cfg.threads, 2);
        assert_eq!(cfg.datasets.len(), 2);
        // A listener was given (the socket): no TCP listener was asked for, none is opened.
        assert_eq!(cfg.listen_tcp, None);
    }

    #[test]
    fn the_default_tcp_listener_only_when_no_listener_is_given() {
        let cfg = ServerConfig::load(None, env(&[]), &[]).unwrap();
        assert_eq!(cfg.listen_tcp.as_deref(), Some(DEFAULT_LISTEN_TCP));
        let cfg = ServerConfig::load(None, env(&[]), &[("listen_uds", "/tmp/s".into())]).unwrap();
        assert_eq!(
            (cfg.listen_tcp, cfg.listen_uds),
            (None, Some("/tmp/s".into()))
        );
        let e = ServerConfig::load(None, env(&[]), &[("listen_tcp", "".into())])
            .unwrap_err()
            .to_string();
        assert!(e.contains("no listener"), "{e}");
    }

    #[test]
    fn unknown_keys_and_variables_name_the_nearest() {
        let e = ServerConfig::from_toml_str("thread = 2\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown key 'thread' (did you mean 'threads'?)"),
            "{e}"
        );
        let e = ServerConfig::from_toml_str("[limits]\nmax_batch_sise = 2\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("did you mean 'max_batch_size'"), "{e}");
        let e = ServerConfig::from_toml_str("max_batch_size = 2\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("belongs under [limits]"), "{e}");
        let e = ServerConfig::from_toml_str("[[datasets]]\nname = \"a\"\npat = \"/x\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("pat"), "{e}");
        let e = ServerConfig::load(None, env(&[("AUGSERVE_THREAD", "2")]), &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("'AUGSERVE_THREAD' (did you mean 'AUGSERVE_THREADS'?)"),
            "{e}"
        );
        let e = check_variables(env(&[("AUGSERVE_MAX_BATCH", "2")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("AUGSERVE_MAX_BATCH_SIZE"), "{e}");
        check_variables(env(&[("AUGSERVE_LOG", "debug"), ("PATH", "/bin")])).unwrap();
        // Nothing close: no guess.
        let e = unknown_variable("AUGSERVE_ZZZ");
        assert_eq!(e, "unknown environment variable 'AUGSERVE_ZZZ'");
    }

    #[test]
    fn values_are_checked_with_the_name_they_came_under() {
        let e = ServerConfig::load(None, env(&[("AUGSERVE_THREADS", "many")]), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("AUGSERVE_THREADS") && e.contains("many"), "{e}");
        let e = ServerConfig::load(None, env(&[]), &[("device", "tpu".into())])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--device") && e.contains("tpu"), "{e}");
        let e = ServerConfig::from_toml_str("threads = [1]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("threads: expected a single value"), "{e}");
        let e = ServerConfig::load(None, env(&[("AUGSERVE_GPU_DECODE", "maybe")]), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("AUGSERVE_GPU_DECODE"), "{e}");
    }

    #[test]
    fn cuda_device_from_the_file_or_env() {
        let cfg = ServerConfig::from_toml_str("cuda_device = 3\n").unwrap();
        assert_eq!(cfg.cuda_device, 3);
        let cfg = ServerConfig::load(None, env(&[("AUGSERVE_CUDA_DEVICE", "5")]), &[]).unwrap();
        assert_eq!(cfg.cuda_device, 5);
        let e = ServerConfig::load(None, env(&[("AUGSERVE_CUDA_DEVICE", "-1")]), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("AUGSERVE_CUDA_DEVICE"), "{e}");
        assert_eq!(ServerConfig::default().cuda_device, 0);
    }

    #[test]
    fn gpu_decode_share_from_the_file_or_env_and_checked() {
        let share =
            |v: &str| ServerConfig::load(None, env(&[("AUGSERVE_GPU_DECODE_SHARE", v)]), &[]);
        assert_eq!(
            ServerConfig::from_toml_str("gpu_decode_share = 0.5\n")
                .unwrap()
                .gpu_decode_share,
            Some(0.5)
        );
        assert_eq!(share("0.8").unwrap().gpu_decode_share, Some(0.8));
        assert_eq!(share("").unwrap().gpu_decode_share, None);
        for bad in ["1.5", "0", "half"] {
            let e = share(bad).unwrap_err().to_string();
            assert!(
                e.contains("GPU_DECODE_SHARE") || e.contains("gpu_decode_share"),
                "{e}"
            );
        }
    }

    #[test]
    fn the_printed_configuration_reads_back_the_same() {
        let cfg = ServerConfig::load(
            None,
            env(&[
                ("AUGSERVE_DATASETS", "a=/d/a"),
                ("AUGSERVE_GPU_DECODE", "1"),
            ]),
            &[
                ("listen_uds", "/tmp/x.sock".into()),
                ("max_pixels", "1000".into()),
            ],
        )
        .unwrap();
        let again = ServerConfig::from_toml_str(&toml::to_string(&cfg).unwrap()).unwrap();
        assert_eq!(again, cfg);
    }

    #[test]
    fn every_setting_is_a_field_of_the_printed_configuration() {
        let printed: toml::Table = toml::to_string(&ServerConfig {
            listen_tcp: Some("x".into()),
            listen_uds: Some("y".into()),
            metrics_listen: Some("z".into()),
            tls_cert: Some("c".into()),
            tls_key: Some("k".into()),
            tokens_file: Some("t".into()),
            gpu_decode_share: Some(0.5),
            ..ServerConfig::default()
        })
        .unwrap()
        .parse()
        .unwrap();
        let mut keys: Vec<String> = printed
            .iter()
            .flat_map(|(k, v)| match v {
                toml::Value::Table(t) if k == "limits" => {
                    t.keys().map(|l| format!("limits.{l}")).collect()
                }
                _ => vec![k.clone()],
            })
            .filter(|k| k != "datasets")
            .collect();
        keys.sort();
        let mut declared: Vec<String> = SETTINGS.iter().map(Setting::toml_key).collect();
        declared.sort();
        assert_eq!(keys, declared);
    }
}
