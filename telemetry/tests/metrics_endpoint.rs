//! The /metrics endpoint over real HTTP, and a real Prometheus scraping it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use herd_telemetry::{Metrics, MetricsServer};

/// One HTTP/1.0 GET (no chunking to decode); returns the status line and the body.
fn http_get(addr: SocketAddr, target: &str) -> (String, String, String) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET {target} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    let (head, body) = response.split_once("\r\n\r\n").expect("a response head");
    let status = head.lines().next().unwrap_or("").to_string();
    (status, head.to_string(), body.to_string())
}

/// Every metric with one child, so each family appears in the exposition.
fn touch_every_metric(metrics: &Metrics) {
    let m = metrics;
    m.jobs_published.with_label_values(&["t1", "herd.t1.gen.smol"]).inc_by(3);
    for counter in [&m.jobs_completed, &m.jobs_failed, &m.jobs_redelivered, &m.jobs_dead_lettered] {
        counter.with_label_values(&["t1", "worker", "herd.t1.gen.smol"]).inc();
    }
    for counter in [&m.examples_generated, &m.output_tokens, &m.prompt_tokens] {
        counter.with_label_values(&["t1", "smol"]).inc_by(2);
    }
    m.judge_prompt_tokens.with_label_values(&["t1", "judge"]).inc_by(900);
    m.annotations.with_label_values(&["t1", "judge", "smol"]).inc();
    m.generation_seconds.with_label_values(&["t1", "smol"]).observe(0.7);
    m.judge_seconds.with_label_values(&["t1", "judge"]).observe(0.02);
    m.batch_size.with_label_values(&["worker", "smol"]).observe(8.0);
    m.queue_depth.with_label_values(&["t1", "herd.t1.gen.smol"]).set(12);
    m.queue_consumers.with_label_values(&["t1", "herd.t1.gen.smol"]).set(1);
    m.run_jobs_done.with_label_values(&["t1", "generation"]).set(3);
    m.run_jobs_expected.with_label_values(&["t1", "generation"]).set(805);
    m.results_rejected.with_label_values(&["t1", "output"]).inc();
    m.worker_info.with_label_values(&["worker", "smol", "host-1", "0.1.0"]).set(1);
}

/// The metric names in telemetry/README.md's table.
fn documented_names() -> Vec<String> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let mut names: Vec<String> = readme
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split('`').next())
        .map(str::to_string)
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn metrics_endpoint_serves_every_documented_name_in_prometheus_text_format() {
    let metrics = Metrics::new().unwrap();
    touch_every_metric(&metrics);
    let server = MetricsServer::start("127.0.0.1:0".parse().unwrap(), metrics.registry().clone())
        .await
        .unwrap();
    let addr = server.local_addr();
    let (status, head, body) =
        tokio::task::spawn_blocking(move || http_get(addr, "/metrics")).await.unwrap();
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(head.contains("Content-Type: text/plain; version=0.0.4"), "{head}");

    let mut registered: Vec<String> =
        metrics.registry().gather().iter().map(|f| f.name().to_string()).collect();
    registered.sort();
    assert_eq!(
        registered,
        documented_names(),
        "telemetry/README.md's table and the registry disagree"
    );
    for name in &registered {
        assert!(body.contains(&format!("# TYPE {name} ")), "{name} missing from /metrics");
    }
    assert!(
        body.contains("herd_jobs_published_total{queue=\"herd.t1.gen.smol\",run=\"t1\"} 3"),
        "{body}"
    );
    assert!(body.contains(
        "herd_generation_duration_seconds_bucket{generator=\"smol\",run=\"t1\",le=\"1\"} 1"
    ));
    server.shutdown().await;
}

#[tokio::test]
async fn healthz_reports_the_health_flag_and_unknown_paths_are_404() {
    let metrics = Metrics::new().unwrap();
    // An address of its own in 127/8: once this server has stopped, its port is free again,
    // and on 127.0.0.1 another test's (or process's) listener may take it before the check
    // below connects.
    let server = MetricsServer::start("127.0.0.77:0".parse().unwrap(), metrics.registry().clone())
        .await
        .unwrap();
    let addr = server.local_addr();
    let get =
        move |target: &'static str| tokio::task::spawn_blocking(move || http_get(addr, target));
    let (status, _, body) = get("/healthz").await.unwrap();
    assert_eq!((status.as_str(), body.as_str()), ("HTTP/1.1 200 OK", "ok\n"));
    server.health().set(false);
    assert_eq!(get("/healthz").await.unwrap().0, "HTTP/1.1 503 Service Unavailable");
    assert_eq!(get("/nope").await.unwrap().0, "HTTP/1.1 404 Not Found");
    server.shutdown().await;
    // The address can be listened on again at once: nothing holds it. tokio binds with
    // SO_REUSEADDR, so the closed connections' TIME_WAIT does not count; a listener would.
    // (A freed ephemeral port can still be taken by another process in the meantime: the
    // one failure seen, with a connect check, came while other herd processes ran.)
    assert!(tokio::net::TcpListener::bind(addr).await.is_ok(), "still listening after shutdown");
}

/// A Prometheus process with a generated config; killed on drop.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(scrape: SocketAddr) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: herd-test\n    static_configs:\n      - targets: ['{scrape}']\n"
            ),
        )
        .unwrap();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus is not installed; run scripts/test-services.sh");
        Self { child, addr, _dir: dir }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn a_real_prometheus_scrapes_the_endpoint_and_answers_a_query() {
    let metrics = Metrics::new().unwrap();
    touch_every_metric(&metrics);
    let server = MetricsServer::start("127.0.0.1:0".parse().unwrap(), metrics.registry().clone())
        .await
        .unwrap();
    let prometheus = Prometheus::start(server.local_addr());
    let api = prometheus.addr;
    let query = "/api/v1/query?query=herd_run_jobs_expected%7Bphase%3D%22generation%22%7D";
    let started = Instant::now();
    let answer = loop {
        let response = tokio::task::spawn_blocking(move || {
            TcpStream::connect_timeout(&api, Duration::from_millis(500))
                .ok()
                .map(|_| http_get(api, query))
        })
        .await
        .unwrap();
        if let Some((status, _, body)) = response {
            if status.contains("200") && body.contains("\"result\":[{") {
                break body;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "Prometheus returned no value within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let json: serde_json::Value = serde_json::from_str(&answer).unwrap();
    let result = &json["data"]["result"][0];
    assert_eq!(result["metric"]["__name__"], "herd_run_jobs_expected");
    assert_eq!(result["metric"]["run"], "t1");
    assert_eq!(result["value"][1], "805");
    drop(prometheus);
    server.shutdown().await;
}
