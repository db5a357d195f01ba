//! The metric families the running herd roles serve, for the dashboard check: a small run of
//! `herd coordinator`, `herd worker` and `herd judge-worker` on the real RabbitMQ
//! (127.0.0.1:5672, scripts/test-services.sh) with a file:// store, each serving /metrics.
//!
//! A Prometheus metric vector shows in /metrics only once one of its label sets was used,
//! so the run is made to go through every path a dashboard panel watches: jobs published,
//! answered and judged (the default model generates two tokens; the judge is the no-op
//! benchmark model), and after the run, two jobs the worker cannot do: one with an empty
//! prompt (the engine refuses it: given back, redelivered, until the delivery limit sends
//! it to the dead-letter queue) and one naming a model the worker does not serve
//! (dead-lettered at once).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use herd_core::jobs::{GenerationJob, GeneratorSpec, PromptTemplate};
use herd_queue::{JobQueue, QueueName, RabbitConfig, RabbitQueue};

const AMQP_HOST: &str = "127.0.0.1:5672";
const MODEL: &str = "smollm2-135m-instruct";
const NOOP: &str = "bench-noop";
const GENERATOR: &str = "g";
const JUDGE: &str = "noop-judge";

/// Metric family → the label names of its samples (`le` left out), across every scrape of
/// every role of the run.
pub type Families = BTreeMap<String, BTreeSet<String>>;

pub fn scrape_a_small_run() -> Families {
    assert!(
        TcpStream::connect_timeout(&AMQP_HOST.parse().unwrap(), Duration::from_secs(2)).is_ok(),
        "RabbitMQ is not listening on {AMQP_HOST}; run scripts/test-services.sh"
    );
    let dir = tempfile::tempdir().unwrap();
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let run = format!("chart-live-{}-{nanos}", std::process::id());
    std::fs::write(dir.path().join("amqp-password"), "guest\n").unwrap();
    let roles = RoleEnv { dir: dir.path(), run: &run };
    let mut families = Families::new();

    let mut worker = roles.spawn(
        "worker",
        &[
            "worker",
            "--generator",
            GENERATOR,
            "--model",
            MODEL,
            "--batch-size",
            "2",
            "--prefetch",
            "2",
        ],
    );
    let mut judge = roles
        .spawn("judge-worker", &["judge-worker", "--judge-name", JUDGE, "--judge-model", NOOP]);
    let generator = format!("name={GENERATOR},model={MODEL},template=chat,max_new_tokens=2");
    let mut coordinator = roles.spawn(
        "coordinator",
        &[
            "coordinator",
            "--generator",
            &generator,
            "--judge-name",
            JUDGE,
            "--judge-model",
            NOOP,
            "--limit",
            "2",
            "--poll-interval-ms",
            "100",
        ],
    );
    // The coordinator exits when the run is complete: scrape it until then.
    let started = Instant::now();
    while coordinator.child.try_wait().unwrap().is_none() {
        if let Some(text) = coordinator.scrape() {
            add_families(&mut families, &text);
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the run did not finish\n{}",
            roles.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = coordinator.child.wait().unwrap();
    assert!(status.success(), "the coordinator failed\n{}", roles.logs());

    let queue = QueueName::generation(&run, GENERATOR);
    block_on(async {
        let broker = broker().await;
        broker
            .publish(
                &queue,
                &[
                    unanswerable_job(&run, PromptTemplate::Raw, MODEL),
                    unanswerable_job(&run, PromptTemplate::Chat, NOOP),
                ],
            )
            .await
            .unwrap();
    });
    let worker_counts =
        ["herd_jobs_failed_total", "herd_jobs_redelivered_total", "herd_jobs_dead_lettered_total"];
    let started = Instant::now();
    loop {
        let text = worker.scrape().unwrap_or_default();
        if worker_counts.iter().all(|name| text.lines().any(|l| l.starts_with(name))) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the worker never counted {worker_counts:?}\n{text}\n{}",
            roles.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for role in [&mut worker, &mut judge] {
        add_families(&mut families, &role.scrape().expect("a running role answers /metrics"));
        role.stop();
    }
    block_on(async {
        let broker = broker().await;
        for name in [queue, QueueName::judge(&run, JUDGE), QueueName::dead_letters(&run)] {
            let _ = broker.delete(&name).await;
        }
    });
    families
}

/// A job of the run's generator queue the worker cannot answer: with `Raw` and no
/// instruction the prompt is empty (the default model adds no BOS), which the engine
/// refuses; with a model other than the worker's, the worker dead-letters it.
fn unanswerable_job(run: &str, template: PromptTemplate, model: &str) -> GenerationJob {
    GenerationJob {
        run_id: run.to_string(),
        generator: GeneratorSpec {
            name: GENERATOR.to_string(),
            model: model.to_string(),
            template,
            max_new_tokens: 2,
            stop: vec![],
            endpoint: None,
            sampling: None,
        },
        index: if model == MODEL { 800 } else { 801 },
        instruction: String::new(),
        dataset: "helpful_base".to_string(),
    }
}

/// Adds the families of one /metrics text: `# TYPE` names, each with the label names of
/// its samples (a histogram's `_bucket`, `_sum` and `_count` belong to its family).
fn add_families(families: &mut Families, text: &str) {
    let mut declared = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let name = rest.split_whitespace().next().unwrap_or_default().to_string();
            families.entry(name.clone()).or_default();
            declared.push(name);
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let series = line.rsplit_once(' ').map(|(s, _)| s).unwrap_or(line);
        let (name, labels) = series.split_once('{').unwrap_or((series, ""));
        let family = declared
            .iter()
            .find(|f| {
                ["", "_bucket", "_sum", "_count"]
                    .iter()
                    .any(|suffix| format!("{f}{suffix}") == name)
            })
            .cloned()
            .unwrap_or_else(|| name.to_string());
        let entry = families.entry(family).or_default();
        for pair in labels.trim_end_matches('}').split("\",").filter(|p| !p.is_empty()) {
            let label = pair.split('=').next().unwrap_or_default().trim_matches(',');
            if label != "le" {
                entry.insert(label.to_string());
            }
        }
    }
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(future)
}

async fn broker() -> RabbitQueue {
    let config = RabbitConfig {
        password: Some("guest".into()),
        reconnect_deadline: Duration::from_secs(20),
        ..RabbitConfig::new(format!("amqp://guest@{AMQP_HOST}/%2f"))
    };
    RabbitQueue::connect(config).await.expect("a connection to the test broker")
}

/// How the roles of the run are started: one folder, one run id, the guest account.
struct RoleEnv<'a> {
    dir: &'a Path,
    run: &'a str,
}

impl RoleEnv<'_> {
    fn spawn(&self, name: &str, args: &[&str]) -> LiveRole {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log = self.dir.join(format!("{name}.log"));
        let mut command = Command::new(env!("CARGO_BIN_EXE_herd"));
        for (variable, _) in std::env::vars() {
            if variable.starts_with("HERD_") || variable.starts_with("AWS_") {
                command.env_remove(variable);
            }
        }
        let child = command
            .args(args)
            .env("HERD_LOG", "info")
            .env("HERD_THREADS", "1")
            .env("HERD_RUN_ID", self.run)
            .env("HERD_AMQP_URL", format!("amqp://guest@{AMQP_HOST}/%2f"))
            .env("HERD_AMQP_PASSWORD_FILE", self.dir.join("amqp-password"))
            .env("HERD_STORE", format!("file://{}", self.dir.join("store").display()))
            .env("HERD_METRICS_ADDR", format!("127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::from(std::fs::File::options().append(true).open(&log).unwrap()))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start herd {name}: {e}"));
        LiveRole { child, metrics: SocketAddr::from(([127, 0, 0, 1], port)) }
    }

    fn logs(&self) -> String {
        ["worker", "judge-worker", "coordinator"]
            .iter()
            .map(|name| {
                let text = std::fs::read_to_string(self.dir.join(format!("{name}.log")))
                    .unwrap_or_default();
                format!("--- {name}:\n{text}")
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// One running role; killed on drop if still running.
struct LiveRole {
    child: Child,
    metrics: SocketAddr,
}

impl LiveRole {
    /// The role's /metrics text, or `None` while it does not answer.
    fn scrape(&self) -> Option<String> {
        let mut stream =
            TcpStream::connect_timeout(&self.metrics, Duration::from_millis(300)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(stream, "GET /metrics HTTP/1.0\r\nHost: {}\r\n\r\n", self.metrics).ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let (head, body) = response.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.1 200").then(|| body.to_string())
    }

    /// SIGTERM, then wait (a worker finishes its batch and exits).
    fn stop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let started = Instant::now();
        while self.child.try_wait().unwrap().is_none() {
            if started.elapsed() > Duration::from_secs(20) {
                let _ = self.child.kill();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for LiveRole {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
