//! Helpers shared by the binary's integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::print_stderr)] // each test file uses a part; a failed test prints its server's log

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free loopback TCP port (bound, then released for the server to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed and reaped when dropped (a failed test leaves no server behind).
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

pub struct Server {
    pub child: Child,
    pub uds: PathBuf,
    pub tcp: String,
    _dir: Option<tempfile::TempDir>,
}

impl Server {
    pub fn start(datasets: &[(&str, &Path)], env: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let uds = dir.path().join("augserve.sock");
        let port = free_port();
        let tcp = format!("127.0.0.1:{port}");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_augserve"));
        cmd.args(["serve", "--device", "cpu", "--listen-tcp", &tcp])
            .arg("--listen-uds")
            .arg(&uds)
            .env("AUGSERVE_THREADS", "2")
            .env("AUGSERVE_GRACE_PERIOD_S", "5")
            .env("AUGSERVE_LOG", "warn")
            .stdout(Stdio::null())
            // Kept, and printed if the test fails (see Drop): why a server went away.
            .stderr(std::fs::File::create(dir.path().join("server.log")).unwrap());
        for (name, path) in datasets {
            cmd.arg("--dataset")
                .arg(format!("{name}={}", path.display()));
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let t = Instant::now();
        // Connects, not only the socket file: it exists from bind(), before listen(), and a
        // connect in between is refused.
        let listening = || {
            std::os::unix::net::UnixStream::connect(&uds).is_ok()
                && std::net::TcpStream::connect(&tcp).is_ok()
        };
        while !listening() {
            assert!(
                child.try_wait().unwrap().is_none(),
                "server exited at start"
            );
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Server {
            child,
            uds,
            tcp,
            _dir: Some(dir),
        }
    }

    pub fn addr(&self) -> String {
        format!("unix://{}", self.uds.display())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    pub fn sigterm(&self) {
        assert!(Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap()
            .success());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let status = self.child.wait();
        if std::thread::panicking() {
            if let Some(dir) = &self._dir {
                let log =
                    std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default();
                eprintln!("server {status:?}; its log:\n{log}");
            }
        }
    }
}

/// The repository's JPEG test files (`testdata/jpeg`), or the GPU kit's copy: the kit's test
/// binaries run on a device machine where this checkout's path does not exist, and
/// `benches/gpu/run.sh` points AUGSERVE_JPEG_TESTDATA at the copy.
pub fn jpeg_testdata() -> std::path::PathBuf {
    std::env::var_os("AUGSERVE_JPEG_TESTDATA")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/jpeg")
        })
}
