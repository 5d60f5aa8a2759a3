//! `augserve demo`: a server on the demo dataset and a client pulling from it, in one process.

use std::path::PathBuf;

use augserve_server::run_server;

use crate::pull::{pull_async, PullArgs, SecurityArgs, TransportArg};
use crate::runtime::runtime;
use crate::serve::{server_config, ServeArgs};
use crate::serve_flags::SettingFlags;

/// `augserve demo`: a server on the demo dataset and a client pulling from it, in one process.
pub fn demo(epochs: u64, batch_size: u32, cache_dir: Option<PathBuf>) -> anyhow::Result<()> {
    let sock = std::env::temp_dir().join(format!("augserve-demo-{}.sock", std::process::id()));
    let args = ServeArgs {
        config: None,
        datasets: vec![],
        cache_dir,
        check_config: false,
        settings: SettingFlags(vec![("listen_uds", sock.display().to_string())]),
    };
    let cfg = server_config(&args)?;
    let rt = runtime()?;
    rt.block_on(async move {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(run_server(
            cfg,
            Box::pin(async move {
                let _ = rx.await;
            }),
        ));
        for _ in 0..100 {
            if sock.exists() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        println!("demo: server on {}", sock.display());
        let pull = PullArgs {
            addr: format!("unix://{}", sock.display()),
            dataset: "demo".into(),
            spec: None,
            batch_size,
            epochs,
            start_epoch: 0,
            seed: 0,
            rank: 0,
            world_size: 1,
            prefetch: 2,
            start_batch: 0,
            start_position: 0,
            record: None,
            security: SecurityArgs::default(),
            // Same host: shared memory (falls back to inline where /dev/shm is missing).
            transport: TransportArg::Shm,
            quiet: false,
        };
        let r = pull_async(&pull).await;
        let _ = tx.send(());
        server.await??;
        r
    })
}
