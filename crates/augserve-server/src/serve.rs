//! Listening on TCP and/or a Unix socket, health and reflection, graceful shutdown.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use augserve_proto::v1::aug_serve_server::AugServeServer;
use tokio::sync::watch;
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};
use tokio_stream::StreamExt;

use crate::auth::TokenCheck;
use crate::lingering_close::{Lingering, LingeringClose, LINGER};
use crate::{AugServeService, ServerConfig, ServerError};
use tonic::service::interceptor::InterceptedService;

/// How long cut streams get to deliver their UNAVAILABLE after the grace period.
const CUT_FLUSH: Duration = Duration::from_secs(2);

/// Resolves when the server should stop (SIGTERM/SIGINT in the binary; anything in tests).
pub type ShutdownSignal = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Serves until `shutdown` resolves, then gives streams `grace_period_s` to end.
pub async fn run_server(cfg: ServerConfig, shutdown: ShutdownSignal) -> Result<(), ServerError> {
    // Listeners first: a taken address fails the start at once, before any work.
    let tcp_listener = match &cfg.listen_tcp {
        Some(addr) => Some(bind_tcp(addr).await?),
        None => None,
    };
    let uds_listener = cfg.listen_uds.as_deref().map(bind_uds).transpose()?;
    let stopping = Arc::new(AtomicBool::new(false));
    let service = AugServeService::new(&cfg, stopping.clone())?;
    if let Some(addr) = &cfg.metrics_listen {
        install_metrics(addr, &service)?;
    }
    let ticker = tokio::spawn(service.telemetry().run_ticker(
        service.batch_ops(),
        Duration::from_secs_f64(cfg.telemetry_log_interval_s.max(0.0)),
    ));
    let max_out = cfg.limits.max_batch_bytes as usize + (16 << 20);
    let max_in = cfg.limits.max_request_bytes as usize;
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<AugServeServer<AugServeService>>()
        .await;
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(augserve_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let map = |e: tonic_reflection::server::Error| ServerError::Config(format!("reflection: {e}"));
    let reflection_v1 = reflection().build_v1().map_err(map)?;
    // grpcurl before 1.9 and older grpc_cli ask only v1alpha.
    let reflection_v1alpha = reflection().build_v1alpha().map_err(map)?;
    let check = token_check(&cfg)?;
    let tls = match (&cfg.tls_cert, &cfg.tls_key) {
        (Some(c), Some(k)) => Some(crate::auth::tls_config(c, k)?),
        _ => None,
    };
    // Health is open (probes carry no secret); the service and reflection need the token.
    let router = |tls: Option<tonic::transport::ServerTlsConfig>| {
        let mut builder = tonic::transport::Server::builder();
        if let Some(t) = tls {
            builder = builder
                .tls_config(t)
                .map_err(|e| ServerError::Config(format!("tls: {e}")))?;
        }
        let c1 = check.clone();
        let c2 = check.clone();
        let c3 = check.clone();
        Ok::<_, ServerError>(
            builder
                .add_service(health_service.clone())
                .add_service(InterceptedService::new(reflection_v1.clone(), move |r| {
                    c1.check(r)
                }))
                .add_service(InterceptedService::new(
                    reflection_v1alpha.clone(),
                    move |r| c3.check(r),
                ))
                .add_service(InterceptedService::new(
                    AugServeServer::new(service.clone())
                        .max_decoding_message_size(max_in)
                        .max_encoding_message_size(max_out),
                    move |r| c2.check(r),
                )),
        )
    };
    let (tx, rx) = watch::channel(false);
    let wait = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    let mut tasks = Vec::new();
    let lingering = Lingering::default();
    if let Some(listener) = tcp_listener {
        tracing::info!(addr = %listener.local_addr()?, tls = tls.is_some(), "listening on TCP");
        let r = router(tls.clone())?;
        let rx = rx.clone();
        let l = lingering.clone();
        let incoming =
            TcpListenerStream::new(listener).map(move |c| c.map(|c| LingeringClose::new(c, &l)));
        tasks.push(tokio::spawn(async move {
            r.serve_with_incoming_shutdown(incoming, wait(rx)).await
        }));
    }
    if let (Some(listener), Some(path)) = (uds_listener, &cfg.listen_uds) {
        tracing::info!(path = %path.display(), "listening on a Unix socket");
        let r = router(None)?;
        let rx = rx.clone();
        let l = lingering.clone();
        let incoming =
            UnixListenerStream::new(listener).map(move |c| c.map(|c| LingeringClose::new(c, &l)));
        tasks.push(tokio::spawn(async move {
            r.serve_with_incoming_shutdown(incoming, wait(rx)).await
        }));
    }
    shutdown.await;
    drain(&cfg, &health, tx, tasks, &stopping, &lingering).await;
    if let Some(path) = &cfg.listen_uds {
        let _ = std::fs::remove_file(path);
    }
    ticker.abort();
    if let Some(report) = service.batch_ops().decode_report() {
        tracing::info!("{report}");
    }
    Ok(())
}

/// Serves Prometheus metrics on `addr`, with the server's fixed gauges set.
fn install_metrics(addr: &str, service: &AugServeService) -> Result<(), ServerError> {
    let addr: std::net::SocketAddr = addr
        .parse()
        .map_err(|e| ServerError::Config(format!("metrics_listen '{addr}': {e}")))?;
    crate::telemetry::install_exporter(addr)?;
    tracing::info!(%addr, "metrics on http://{addr}/metrics");
    metrics::gauge!(crate::telemetry::names::INFO, "version" => env!("CARGO_PKG_VERSION"), "batch_device" => service.batch_ops().device()).set(1.0);
    metrics::gauge!(crate::telemetry::names::BATCH_MEMORY_BUDGET_BYTES)
        .set(service.batch_memory_budget() as f64);
    Ok(())
}

/// The bearer tokens the configuration and its tokens file give.
fn token_check(cfg: &ServerConfig) -> Result<TokenCheck, ServerError> {
    let mut tokens = cfg.tokens.clone();
    if let Some(f) = &cfg.tokens_file {
        tokens.extend(crate::auth::read_tokens_file(f)?);
    }
    let check = TokenCheck::new(&tokens);
    if check.enabled() {
        tracing::info!(
            tokens = tokens.len(),
            "bearer tokens required (health stays open)"
        );
    }
    Ok(check)
}

type ServeTask = tokio::task::JoinHandle<Result<(), tonic::transport::Error>>;

/// The shutdown: no new connections, open streams get the grace period, then the ones still
/// open are cut (UNAVAILABLE) and closed connections linger until their clients have read
/// the last frames.
async fn drain(
    cfg: &ServerConfig,
    health: &tonic_health::server::HealthReporter,
    listening: watch::Sender<bool>,
    tasks: Vec<ServeTask>,
    stopping: &AtomicBool,
    lingering: &Lingering,
) {
    tracing::info!(
        grace_s = cfg.grace_period_s,
        "shutting down: no new connections; open streams get the grace period to finish"
    );
    health
        .set_not_serving::<AugServeServer<AugServeService>>()
        .await;
    // Listeners close, connections get GOAWAY; streams already open go on to their end.
    let _ = listening.send(true);
    let grace = Duration::from_secs_f64(cfg.grace_period_s.max(0.0));
    let all = futures_join(tasks);
    tokio::pin!(all);
    if tokio::time::timeout(grace, &mut all).await.is_err() {
        // Streams still open are cut now, each ending with UNAVAILABLE (never OK); a moment
        // more lets those statuses reach their clients.
        tracing::warn!("grace period over: cutting the streams still open (UNAVAILABLE)");
        stopping.store(true, Ordering::Relaxed);
        if tokio::time::timeout(CUT_FLUSH, &mut all).await.is_err() {
            tracing::warn!("closing the connections still open");
        }
    }
    // Closed connections linger until their clients have read the last frames.
    lingering
        .wait_until(std::time::Instant::now() + LINGER)
        .await;
}

async fn bind_tcp(addr: &str) -> Result<tokio::net::TcpListener, ServerError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| ServerError::Listen {
            address: format!("TCP {addr}"),
            reason: match e.kind() {
                std::io::ErrorKind::AddrInUse => format!(
                    "{e}: another process (a second server?) has this port; choose another \
                     with --listen-tcp, or --listen-tcp \"\" for none"
                ),
                _ => e.to_string(),
            },
        })
}

/// Binds the Unix socket `path`. A socket file another server still accepts on is never taken
/// over; a stale one (left by a killed server) is replaced.
fn bind_uds(path: &std::path::Path) -> Result<tokio::net::UnixListener, ServerError> {
    use std::os::unix::fs::FileTypeExt;
    let fail = |reason: String| ServerError::Listen {
        address: format!("Unix socket {}", path.display()),
        reason,
    };
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(fail("the path exists and is not a socket".into()));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(fail(
                "another server is listening on it; choose another path with --listen-uds".into(),
            ));
        }
        std::fs::remove_file(path).map_err(|e| fail(format!("removing the stale socket: {e}")))?;
    }
    let listener = tokio::net::UnixListener::bind(path).map_err(|e| fail(e.to_string()))?;
    // Owner and group may connect (the trainer container shares the group).
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o660))
        .map_err(|e| fail(format!("setting its mode: {e}")))?;
    Ok(listener)
}

async fn futures_join(tasks: Vec<ServeTask>) {
    for t in tasks {
        match t.await {
            Ok(Err(e)) => tracing::warn!("server: {e}"),
            Err(e) => tracing::warn!("server task: {e}"),
            Ok(Ok(())) => {}
        }
    }
}
