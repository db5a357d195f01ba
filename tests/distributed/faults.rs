//! Faults a distributed run must outlive, and its metrics in a real Prometheus:
//! (c) RabbitMQ restarted mid-run, (d) the S3 server away for a while, (g) Prometheus
//! scraping the roles and answering the examples/s query.
//!
//! The broker restart uses a RabbitMQ node of its own (own port, data folder and Erlang
//! node name) rather than the shared one on 5672, so stopping it disturbs no other test
//! running at the same time, in this binary or in another.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use herd_core::eval_set::EvalSet;

use crate::common::{default_model_coordinator_args, free_port, wait_until, Cluster, Role, MODEL};

const GENERATOR: &str = "smol";
const JUDGE: &str = "judge";
/// Instructions per run: enough for the fault to land mid-run, few enough for two cores.
const LIMIT: usize = 6;
/// How long a run may take once its fault is over.
const RUN_LIMIT: Duration = Duration::from_secs(150);

/// The three roles of one run.
struct Roles {
    worker: Role,
    judge: Role,
    coordinator: Role,
}

impl Roles {
    /// Starts a generation worker and a judge worker on the default model, then the
    /// coordinator for the first [`LIMIT`] instructions, writing its run folder to `out/`.
    /// `amqp_url` replaces the shared broker.
    fn start(cluster: &mut Cluster, amqp_url: Option<&str>) -> Self {
        let (worker, judge) = Self::start_workers(cluster, amqp_url);
        let coordinator = Self::start_coordinator(cluster, amqp_url, &[]);
        Self { worker, judge, coordinator }
    }

    /// The two workers. The generation worker decodes two sequences at a time, so that its
    /// answers land over several batches (the run has a middle for a fault to hit).
    fn start_workers(cluster: &mut Cluster, amqp_url: Option<&str>) -> (Role, Role) {
        let worker = spawn(
            cluster,
            amqp_url,
            "worker",
            &["worker", "--generator", GENERATOR, "--model", MODEL, "--batch-size", "2"],
        );
        let judge = spawn(
            cluster,
            amqp_url,
            "judge-worker",
            &["judge-worker", "--judge-name", JUDGE, "--judge-model", MODEL],
        );
        (worker, judge)
    }

    /// The coordinator, with `extra` flags after the run's.
    fn start_coordinator(cluster: &mut Cluster, amqp_url: Option<&str>, extra: &[&str]) -> Role {
        let out = cluster.path("out");
        let mut args = default_model_coordinator_args(GENERATOR, JUDGE, LIMIT, &out);
        args.extend(extra.iter().map(|flag| flag.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        spawn(cluster, amqp_url, "coordinator", &args)
    }

    fn all(&mut self) -> [&mut Role; 3] {
        [&mut self.worker, &mut self.judge, &mut self.coordinator]
    }

    fn logs(&self) -> String {
        [&self.worker, &self.judge, &self.coordinator]
            .iter()
            .map(|r| r.logs())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Panics (with the logs) if a role has exited: during a fault every role must wait.
    fn assert_all_running(&mut self, during: &str) {
        for role in self.all() {
            if let Some(status) = role.exited() {
                panic!("{} exited with {status} {during}\n{}", role.name, role.logs());
            }
        }
    }

    /// Stops the workers (SIGTERM) once the coordinator is done.
    fn stop_workers(&mut self) {
        for role in [&mut self.worker, &mut self.judge] {
            if role.exited().is_none() {
                role.terminate();
                role.wait(Duration::from_secs(30));
            }
        }
    }
}

/// `herd <args>` as `name` in the cluster, on `amqp_url` instead of the shared broker if given.
fn spawn(cluster: &mut Cluster, amqp_url: Option<&str>, name: &str, args: &[&str]) -> Role {
    let mut command = cluster.command(args);
    if let Some(url) = amqp_url {
        command.env("HERD_AMQP_URL", url);
    }
    cluster.spawn_command(name, &mut command)
}

/// Files under `dir` whose name ends in `.json`, counted on disk (the S3 server's folder
/// can be read while the server is down).
fn json_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .count()
}

/// Where s3s-fs keeps the run's answers and verdicts (the bucket is a folder, keys are paths).
fn stored_on_disk(cluster: &Cluster) -> (PathBuf, PathBuf) {
    let run = &cluster.run_id;
    let root = cluster.s3.data_dir().join(crate::common::BUCKET).join(run);
    (
        root.join(herd_store::keys::outputs_prefix(run, GENERATOR)),
        root.join(herd_store::keys::annotations_prefix(run, JUDGE, GENERATOR)),
    )
}

/// The finished run folder has every one of the first [`LIMIT`] instructions exactly once,
/// in eval-set order, in both model_outputs.json and annotations.json, each with a verdict;
/// and the store holds exactly [`LIMIT`] answers and verdicts.
fn assert_every_example_once(cluster: &Cluster, roles: &Roles) {
    let folder = cluster.dir.path().join("out").join(herd_report::folder_name(GENERATOR));
    let read = |file: &str| -> Vec<serde_json::Value> {
        let path = folder.join(file);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}\n{}", path.display(), roles.logs()));
        serde_json::from_str(&text).unwrap()
    };
    let eval_set = EvalSet::embedded();
    let expected: Vec<&str> =
        eval_set.rows()[..LIMIT].iter().map(|r| r.instruction.as_str()).collect();
    let outputs = read("model_outputs.json");
    let annotations = read("annotations.json");
    let instructions = |rows: &[serde_json::Value]| -> Vec<String> {
        rows.iter().map(|r| r["instruction"].as_str().unwrap_or_default().to_string()).collect()
    };
    assert_eq!(
        instructions(&outputs),
        expected,
        "model_outputs.json: each instruction once, in order"
    );
    assert_eq!(
        instructions(&annotations),
        expected,
        "annotations.json: each instruction once, in order"
    );
    for row in &annotations {
        assert!(row["preference"].as_f64().is_some(), "a verdict without a preference: {row}");
    }
    let (outputs_dir, annotations_dir) = stored_on_disk(cluster);
    assert_eq!(json_files(&outputs_dir), LIMIT, "answers in the store");
    assert_eq!(json_files(&annotations_dir), LIMIT, "verdicts in the store");
}

/// One RabbitMQ node of this test's own, started with `rabbitmq-server` in the foreground
/// (the package's script runs it as the `rabbitmq` user, hence the chown of its folder).
struct PrivateBroker {
    node: String,
    port: u16,
    dist_port: u16,
    dir: tempfile::TempDir,
    server: Option<Child>,
}

impl PrivateBroker {
    fn start(label: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let (port, dist_port) = (free_port(), free_port());
        std::fs::create_dir_all(dir.path().join("mnesia")).unwrap();
        std::fs::create_dir_all(dir.path().join("log")).unwrap();
        std::fs::write(
            dir.path().join("rabbitmq.conf"),
            format!("listeners.tcp.1 = 127.0.0.1:{port}\n"),
        )
        .unwrap();
        let chown =
            Command::new("chown").args(["-R", "rabbitmq:rabbitmq"]).arg(dir.path()).status();
        assert!(
            chown.map(|s| s.success()).unwrap_or(false),
            "cannot hand {} to the rabbitmq user",
            dir.path().display()
        );
        let node = format!("herd-{label}-{}@localhost", std::process::id());
        let mut broker = Self { node, port, dist_port, dir, server: None };
        broker.spawn();
        broker
    }

    fn spawn(&mut self) {
        let dir = self.dir.path();
        let server = Command::new("rabbitmq-server")
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq.conf"))
            .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir.join("log"))
            .env("RABBITMQ_PID_FILE", dir.join("pid"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("plugins"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("rabbitmq-server is not installed; run scripts/test-services.sh");
        self.server = Some(server);
        let addr = self.addr();
        let started = Instant::now();
        while !listening(addr) {
            if started.elapsed() > Duration::from_secs(90) {
                panic!(
                    "RabbitMQ node {} did not listen on {addr} within 90 s; log:\n{}",
                    self.node,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn log_tail(&self) -> String {
        let log = self.dir.path().join("log").join(format!("{}.log", self.node));
        let text = std::fs::read_to_string(log).unwrap_or_default();
        text.lines()
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Stops the node (SIGTERM to the Erlang VM: a clean broker shutdown) and waits until
    /// it is gone. The data folder stays, so the durable queues come back on restart.
    fn stop(&mut self) {
        let mut server = self.server.take();
        let pid = std::fs::read_to_string(self.dir.path().join("pid"))
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok());
        if let Some(pid) = pid {
            let _ = Command::new("kill").arg(pid.to_string()).status();
            // Gone, or a zombie its parent (the package's start script, our child) has not reaped yet.
            let gone = || {
                if let Some(server) = server.as_mut() {
                    let _ = server.try_wait();
                }
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                stat.rsplit(')')
                    .next()
                    .map(|rest| rest.trim_start())
                    .is_none_or(|state| state.is_empty() || state.starts_with('Z'))
            };
            wait_until(Duration::from_secs(60), "the RabbitMQ node to stop", gone, || {
                self.log_tail()
            });
        }
        if let Some(mut server) = server {
            let _ = server.kill();
            let _ = server.wait();
        }
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A Prometheus process with a generated config scraping `targets` every second; killed on
/// drop.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(targets: &[SocketAddr]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 250ms\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: herd\n    static_configs:\n      - targets: [{}]\n",
                targets.join(", ")
            ),
        )
        .unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus is not installed; run scripts/test-services.sh");
        wait_until(
            Duration::from_secs(30),
            "Prometheus to listen",
            || listening(addr),
            String::new,
        );
        // It listens before its storage has started, answering 503 to queries until then.
        let ready = || http_get(addr, "/-/ready").0.contains("200");
        wait_until(
            Duration::from_secs(60),
            "Prometheus to be ready (/-/ready)",
            ready,
            String::new,
        );
        Self { child, addr, _dir: dir }
    }

    /// The instant vector `promql` evaluates to now, as (labels, value) pairs.
    fn query(&self, promql: &str) -> Vec<(serde_json::Value, f64)> {
        let (status, body) =
            http_get(self.addr, &format!("/api/v1/query?query={}", url_encode(promql)));
        assert!(status.contains("200"), "Prometheus answered {status} to {promql}: {body}");
        let json: serde_json::Value = serde_json::from_str(&body).expect("Prometheus answers JSON");
        json["data"]["result"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                let value = r["value"][1].as_str().and_then(|v| v.parse().ok()).unwrap_or(f64::NAN);
                (r["metric"].clone(), value)
            })
            .collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One HTTP/1.0 GET (the answer ends with the connection); the status line and the body.
fn http_get(addr: SocketAddr, target: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET {target} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read the response");
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (head.lines().next().unwrap_or("").to_string(), body.to_string())
}

fn listening(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// (c) The broker stops after the first answer, while the workers hold jobs and the
/// coordinator still has judge jobs to publish; every role waits, both workers' consumers
/// reconnect when it is back (jobs they held unacknowledged come back), and the run
/// completes with every example once.
#[test]
fn run_completes_when_rabbitmq_restarts_mid_run() {
    let mut broker = PrivateBroker::start("restart");
    let mut cluster = Cluster::new("mq");
    // guest's password comes from the cluster's password file, as for every role.
    let url = format!("amqp://guest@127.0.0.1:{}/%2f", broker.port);
    let mut roles = Roles::start(&mut cluster, Some(&url));
    let (outputs, annotations) = stored_on_disk(&cluster);
    wait_until(RUN_LIMIT, "the first answer", || json_files(&outputs) >= 1, || roles.logs());

    broker.stop();
    let at_stop = (json_files(&outputs), json_files(&annotations));
    // Verdicts still missing need judge jobs, and the coordinator publishes those as answers land.
    assert!(
        at_stop.1 < LIMIT,
        "the run was complete before the broker stopped ({at_stop:?}): nothing was tested"
    );
    std::thread::sleep(Duration::from_secs(3));
    roles.assert_all_running("while the broker was down");
    broker.spawn();

    roles.coordinator.wait_success(RUN_LIMIT);
    roles.stop_workers();
    for role in [&roles.worker, &roles.judge] {
        assert!(
            role.logs().contains("consumer resumed"),
            "{} never reconnected\n{}",
            role.name,
            role.logs()
        );
    }
    assert_every_example_once(&cluster, &roles);
}

/// (d) The S3 server is killed while answers are being stored and comes back on the same
/// port with the same folder; the roles wait and retry instead of failing, and nothing is
/// lost or stored twice.
#[test]
fn run_waits_for_the_s3_server_and_loses_no_example() {
    let mut cluster = Cluster::new("s3");
    let mut roles = Roles::start(&mut cluster, None);
    let (outputs, annotations) = stored_on_disk(&cluster);
    wait_until(RUN_LIMIT, "the first answer", || json_files(&outputs) >= 1, || roles.logs());

    cluster.s3.stop();
    let at_stop = (json_files(&outputs), json_files(&annotations));
    assert!(
        at_stop.1 < LIMIT,
        "the run was complete before the S3 server stopped ({at_stop:?}): nothing was tested"
    );
    std::thread::sleep(Duration::from_secs(6));
    roles.assert_all_running("while the S3 server was down");
    cluster.s3.restart();

    roles.coordinator.wait_success(RUN_LIMIT);
    roles.stop_workers();
    // The coordinator lists the store every 200 ms; a worker stored an answer or a verdict.
    let waited = |role: &Role| role.logs().contains("store unavailable; retrying");
    assert!(
        waited(&roles.coordinator),
        "the coordinator never waited for the store\n{}",
        roles.logs()
    );
    assert!(
        waited(&roles.worker) || waited(&roles.judge),
        "no worker waited for the store\n{}",
        roles.logs()
    );
    assert_every_example_once(&cluster, &roles);
}

/// (g) A real Prometheus scrapes the three roles during a run; over its HTTP API the
/// generator's examples/s is a positive rate and its scraped total is the run's size.
#[test]
fn prometheus_scrapes_the_roles_and_answers_examples_per_second() {
    let mut cluster = Cluster::new("prom");
    let (worker, judge) = Roles::start_workers(&mut cluster, None);
    // The coordinator's port is chosen here (the flag wins over the cluster's env), so that
    // Prometheus scrapes the workers before the first job is published.
    let coordinator_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let prometheus =
        Prometheus::start(&[worker.metrics_addr, judge.metrics_addr, coordinator_addr]);
    let worker_up = format!("up{{instance=\"{}\"}}", worker.metrics_addr);
    let worker_scraped = || prometheus.query(&worker_up).first().is_some_and(|(_, up)| *up == 1.0);
    wait_until(
        Duration::from_secs(30),
        "Prometheus to scrape the worker",
        worker_scraped,
        String::new,
    );
    let addr = coordinator_addr.to_string();
    let coordinator = Roles::start_coordinator(&mut cluster, None, &["--metrics-addr", &addr]);
    let mut roles = Roles { worker, judge, coordinator };
    roles.coordinator.wait_success(RUN_LIMIT);

    let run = cluster.run_id.clone();
    let total = format!("sum(herd_examples_generated_total{{run=\"{run}\"}})");
    let total_scraped =
        || prometheus.query(&total).first().is_some_and(|(_, n)| *n == LIMIT as f64);
    wait_until(
        Duration::from_secs(30),
        "Prometheus to scrape the final count",
        total_scraped,
        || roles.logs(),
    );
    let rate = prometheus.query(&format!(
        "sum by (generator) (rate(herd_examples_generated_total{{run=\"{run}\"}}[1m]))"
    ));
    assert_eq!(rate.len(), 1, "one examples/s series per generator: {rate:?}");
    let (labels, examples_per_second) = &rate[0];
    assert_eq!(labels["generator"], GENERATOR, "{labels}");
    assert!(
        examples_per_second.is_finite() && *examples_per_second > 0.0,
        "examples/s of {GENERATOR}: {examples_per_second}"
    );
    // Every role was a target that answered, the coordinator included.
    let up = prometheus.query("max_over_time(up{job=\"herd\"}[5m])");
    assert_eq!(up.len(), 3, "{up:?}");
    assert!(up.iter().all(|(_, v)| *v == 1.0), "a role was never scraped: {up:?}");
    // The judge worker counts a verdict once it is stored, so the coordinator may finish
    // before the last count is scraped: wait for a scrape that has them all.
    let verdicts = format!("sum(herd_annotations_total{{run=\"{run}\"}})");
    let verdicts_scraped =
        || prometheus.query(&verdicts).first().is_some_and(|(_, n)| *n == LIMIT as f64);
    wait_until(
        Duration::from_secs(30),
        "Prometheus to scrape every verdict of the judge worker",
        verdicts_scraped,
        || format!("{:?}", prometheus.query(&verdicts)),
    );
    roles.stop_workers();
}
