//! The table of settings: each key's TOML name, environment variable, flag, kind, help and
//! how it is applied, declared once ([`SETTINGS`]); the other variables the server reads.

use std::path::PathBuf;

use super::ServerConfig;

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
    pub(super) set: fn(&mut ServerConfig, &str) -> Result<(), String>,
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
pub(super) const LIST_VARIABLES: [&str; 2] = ["AUGSERVE_DATASETS", "AUGSERVE_TOKENS"];
