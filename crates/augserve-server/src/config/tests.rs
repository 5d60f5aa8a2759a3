//! Layering, unknown keys, validation.

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
    let share = |v: &str| ServerConfig::load(None, env(&[("AUGSERVE_GPU_DECODE_SHARE", v)]), &[]);
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
