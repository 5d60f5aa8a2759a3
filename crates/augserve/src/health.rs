//! `augserve health`: exit 0 when the server reports SERVING (container health checks).

use std::path::PathBuf;

use clap::Args;

use crate::pull::SecurityArgs;
use crate::runtime::runtime;

#[derive(Args, Debug)]
pub struct HealthArgs {
    /// Server address: host:port or unix:///path/to.sock.
    #[arg(long, default_value = "127.0.0.1:50051", env = "AUGSERVE_ADDR")]
    addr: String,
    /// PEM CA certificate, for a TLS server (health needs no token).
    #[arg(long, env = "AUGSERVE_TLS_CA")]
    tls_ca: Option<PathBuf>,
    #[arg(long)]
    tls_domain: Option<String>,
}

/// Exit 0 when the server reports SERVING (for container health checks).
pub fn health(args: HealthArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let security = SecurityArgs {
            token: None,
            tls_ca: args.tls_ca.clone(),
            tls_domain: args.tls_domain.clone(),
        }
        .load()?;
        let channel = augserve_client::connect_channel_secure(&args.addr, &security).await?;
        let mut h = tonic_health::pb::health_client::HealthClient::new(channel);
        let r = h
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await?
            .into_inner();
        let status = tonic_health::pb::health_check_response::ServingStatus::try_from(r.status)
            .map(|s| s.as_str_name().to_string())
            .unwrap_or_else(|_| r.status.to_string());
        println!("{status}");
        anyhow::ensure!(status == "SERVING", "server is {status}");
        Ok(())
    })
}
