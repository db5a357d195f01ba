//! Test support: an s3s-fs server on a free port, which a test can stop and restart.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use herd_store::StoreConfig;

pub const ACCESS_KEY: &str = "herd-test-key";
pub const SECRET_KEY: &str = "herd-test-secret-0123456789";
pub const BUCKET: &str = "results";

/// One s3s-fs process serving a temporary folder (a bucket is a folder in it).
pub struct S3Server {
    child: Option<Child>,
    port: u16,
    data: tempfile::TempDir,
}

impl S3Server {
    /// Starts s3s-fs (installed by scripts/test-services.sh) with one bucket, [`BUCKET`].
    pub fn start() -> Self {
        let data = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(data.path().join(BUCKET)).expect("bucket folder");
        let port = free_port();
        let mut server = Self { child: None, port, data };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let child = Command::new(binary())
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(self.data.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start s3s-fs");
        self.child = Some(child);
        wait_until_listening(self.addr(), Duration::from_secs(20));
    }

    /// Kills the server; the port stays reserved for [`S3Server::restart`] by convention.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port with the same data.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The folder holding the bucket, to look at what was written.
    pub fn data_dir(&self) -> &std::path::Path {
        self.data.path()
    }

    /// A store config for `s3://results/<prefix>` on this server, path-style over http.
    pub fn config(&self, prefix: &str) -> StoreConfig {
        StoreConfig {
            s3_endpoint: Some(self.endpoint()),
            s3_region: Some("us-east-1".into()),
            s3_access_key_id: Some(ACCESS_KEY.into()),
            s3_secret_access_key: Some(SECRET_KEY.into()),
            retry_deadline: Duration::from_secs(60),
            ..StoreConfig::new(format!("s3://{BUCKET}/{prefix}"))
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn binary() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).map(|p| p.join("s3s-fs")).find(|p| p.is_file()))
        .unwrap_or_default();
    let cargo_bin =
        std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo/bin/s3s-fs"));
    on_path
        .or(cargo_bin.filter(|p| p.is_file()))
        .expect("s3s-fs is not installed; run scripts/test-services.sh")
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_until_listening(addr: SocketAddr, limit: Duration) {
    let started = Instant::now();
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(started.elapsed() < limit, "s3s-fs did not listen on {addr} within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
