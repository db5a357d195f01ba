//! A minimal HTTP/1.1 server for `/metrics` and `/healthz`: one request per connection,
//! answered and closed. Prometheus needs nothing more, and it keeps the roles free of a web
//! framework.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::TelemetryError;

/// Longest request head we read; a scrape request is a few hundred bytes.
const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// A client that sends nothing for this long is dropped.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// What `/healthz` reports: 200 while healthy, 503 otherwise. Clones share the flag.
#[derive(Clone, Debug)]
pub struct Health(Arc<AtomicBool>);

impl Default for Health {
    fn default() -> Self {
        Self(Arc::new(AtomicBool::new(true)))
    }
}

impl Health {
    pub fn set(&self, healthy: bool) {
        self.0.store(healthy, Ordering::Relaxed);
    }

    pub fn is_healthy(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// The running `/metrics` + `/healthz` endpoint. Dropping it stops the server.
pub struct MetricsServer {
    local_addr: SocketAddr,
    health: Health,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Listens on `addr` (port 0 picks a free port; see [`MetricsServer::local_addr`]).
    pub async fn start(addr: SocketAddr, registry: Registry) -> Result<Self, TelemetryError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| TelemetryError::Bind { addr: addr.to_string(), source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| TelemetryError::Bind { addr: addr.to_string(), source })?;
        let health = Health::default();
        let (stop, mut stopped) = watch::channel(false);
        let (task_health, task_stop) = (health.clone(), stopped.clone());
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stopped.changed() => break,
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => {
                            let (registry, health, mut stop) = (registry.clone(), task_health.clone(), task_stop.clone());
                            tokio::spawn(async move {
                                tokio::select! {
                                    _ = stop.changed() => {}
                                    _ = answer(stream, &registry, &health) => {}
                                }
                            });
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "metrics endpoint: accept failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    },
                }
            }
        });
        tracing::info!(%local_addr, "serving /metrics and /healthz");
        Ok(Self { local_addr, health, stop, task: Some(task) })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The flag `/healthz` reports.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Stops listening and waits for the accept loop to end.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

async fn answer(mut stream: TcpStream, registry: &Registry, health: &Health) {
    let Ok(Some(head)) = tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await else {
        return;
    };
    let mut request_line = head.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (request_line.next().unwrap_or(""), request_line.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, content_type, body) = match (method, path) {
        ("GET" | "HEAD", "/metrics") => {
            ("200 OK", "text/plain; version=0.0.4; charset=utf-8", crate::render(registry))
        }
        ("GET" | "HEAD", "/healthz") if health.is_healthy() => {
            ("200 OK", "text/plain", "ok\n".to_string())
        }
        ("GET" | "HEAD", "/healthz") => {
            ("503 Service Unavailable", "text/plain", "unhealthy\n".to_string())
        }
        ("GET" | "HEAD", _) => {
            ("404 Not Found", "text/plain", "not found: try /metrics or /healthz\n".to_string())
        }
        _ => ("405 Method Not Allowed", "text/plain", "only GET and HEAD\n".to_string()),
    };
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if method != "HEAD" {
        response.push_str(&body);
    }
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Reads up to the blank line that ends the request head.
async fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut buffer = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buffer.windows(4).any(|w| w == b"\r\n\r\n") {
        if buffer.len() > MAX_REQUEST_HEAD {
            return None;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8(buffer).ok()
}
