#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]
//! Access control through the real server binary: bearer tokens on TCP (TLS) and on the Unix
//! socket, health open to probes, and a plaintext client refused by a TLS listener.

mod common;
use common::{free_port, rt, Killed};

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use augserve_client::{v1, Security};
use tonic::Code;

fn health(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_augserve"))
        .arg("health")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    )
}

async fn list(addr: &str, security: &Security) -> Result<usize, tonic::Status> {
    let mut c = match augserve_client::connect_secure(addr, 64 << 20, security).await {
        Ok(c) => c,
        Err(e) => return Err(tonic::Status::unavailable(e.to_string())),
    };
    Ok(c.list_datasets(v1::ListDatasetsRequest {})
        .await?
        .into_inner()
        .datasets
        .len())
}

#[test]
fn tokens_and_tls_guard_everything_but_health() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(d.join("cert.pem"), cert.cert.pem()).unwrap();
    std::fs::write(d.join("key.pem"), cert.key_pair.serialize_pem()).unwrap();
    std::fs::write(d.join("tokens"), "# trainers\ntoken-from-file\n").unwrap();
    let data = d.join("data");
    augserve_core::demo::write_demo_dataset(&data, 1).unwrap();
    let port = free_port();
    let tcp = format!("localhost:{port}");
    let sock = d.join("augserve.sock");
    let _server = Killed(
        Command::new(env!("CARGO_BIN_EXE_augserve"))
            .args([
                "serve",
                "--device",
                "cpu",
                "--listen-tcp",
                &format!("127.0.0.1:{port}"),
            ])
            .arg("--listen-uds")
            .arg(&sock)
            .arg("--dataset")
            .arg(format!("shapes={}", data.display()))
            .env("AUGSERVE_TLS_CERT", d.join("cert.pem"))
            .env("AUGSERVE_TLS_KEY", d.join("key.pem"))
            .env("AUGSERVE_TOKENS", "token-from-env")
            .env("AUGSERVE_TOKENS_FILE", d.join("tokens"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let t = Instant::now();
    while !(sock.exists() && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()) {
        assert!(t.elapsed() < Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(50));
    }
    let uds = format!("unix://{}", sock.display());
    let ca = std::fs::read(d.join("cert.pem")).unwrap();
    let tls = |token: Option<&str>| Security {
        token: token.map(String::from),
        ca_pem: Some(ca.clone()),
        domain: None,
    };
    let plain = |token: Option<&str>| Security {
        token: token.map(String::from),
        ..Security::default()
    };
    rt().block_on(async {
        // TLS with either configured token: served.
        assert_eq!(list(&tcp, &tls(Some("token-from-env"))).await.unwrap(), 1);
        assert_eq!(list(&tcp, &tls(Some("token-from-file"))).await.unwrap(), 1);
        // TLS without a token, or with a wrong one: UNAUTHENTICATED.
        for bad in [None, Some("token-from-en"), Some("")] {
            let e = list(&tcp, &tls(bad)).await.unwrap_err();
            assert_eq!(e.code(), Code::Unauthenticated, "{bad:?}: {e}");
        }
        // A plaintext client on the TLS port gets nothing.
        let e = list(&tcp, &plain(Some("token-from-env")))
            .await
            .unwrap_err();
        assert_ne!(e.code(), Code::Ok);
        println!(
            "plaintext client on the TLS port: {:?} {}",
            e.code(),
            e.message()
        );
        // The socket: plaintext, the same tokens.
        assert_eq!(list(&uds, &plain(Some("token-from-env"))).await.unwrap(), 1);
        let e = list(&uds, &plain(None)).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
        assert!(e.message().contains("Bearer"), "{e}");
        // Streams too.
        let mut c = augserve_client::connect_secure(&uds, 64 << 20, &plain(None))
            .await
            .unwrap();
        let e = c
            .stream_batches(v1::StreamBatchesRequest {
                dataset: "shapes".into(),
                batch_size: 4,
                epochs: 1,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
    });
    // Health needs no token, over TLS and over the socket.
    let ca_path = d.join("cert.pem").display().to_string();
    assert_eq!(
        health(&["--addr", &tcp, "--tls-ca", &ca_path]),
        (true, "SERVING".into())
    );
    assert_eq!(health(&["--addr", &uds]), (true, "SERVING".into()));
    // ... but not in plaintext on the TLS port.
    assert!(!health(&["--addr", &tcp]).0);
    // The CLI client with a token.
    let out = Command::new(env!("CARGO_BIN_EXE_augserve"))
        .args([
            "pull",
            "--quiet",
            "--dataset",
            "shapes",
            "--batch-size",
            "5",
            "--addr",
            &tcp,
        ])
        .args(["--tls-ca", &ca_path])
        .env("AUGSERVE_TOKEN", "token-from-file")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("pulled 10 images"));
    assert_socket_mode(&sock);
}

fn assert_socket_mode(sock: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(sock).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o660, "socket mode {mode:o}");
}
