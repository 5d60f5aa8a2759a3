//! Server configuration. Every setting is declared once, in [`SETTINGS`]: its TOML key, its
//! `AUGSERVE_<KEY>` environment variable and its `augserve serve --key` flag all come from that
//! one entry, and so does the help text. Layers, lowest to highest precedence: the TOML file,
//! the environment, the flags; each overrides the one before key by key. Unknown keys, variables
//! and flags are refused with the nearest known name.

use std::path::{Path, PathBuf};

use augserve_core::DatasetFormat;
use serde::{Deserialize, Serialize};

use crate::ServerError;

mod settings;
#[cfg(test)]
mod tests;

pub use settings::*;

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
            augserve_cuda::jpeg::route::DecodeSplit::fixed(share)
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
