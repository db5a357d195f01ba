//! What the distributed end-to-end tests share: the real services (RabbitMQ on
//! 127.0.0.1:5672, an s3s-fs server per test on a free port, both from
//! scripts/test-services.sh) and the `herd` roles as real processes.
//!
//! A [`Cluster`] is one test's run: a unique run id (so its queues are its own), its own S3
//! server and bucket prefix, a folder for logs, secrets and run folders, and the env every
//! role gets. [`Role`] is one spawned `herd` process whose stdout and stderr go to files, so
//! a test can read its logs at any time (and a failing test prints them). Dropping a
//! cluster kills what is still running and deletes the run's queues.
#![allow(dead_code)]

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use herd_queue::{JobQueue, QueueName, QueueStats, RabbitConfig, RabbitQueue};
use herd_store::ResultStore;

pub use crate::s3::{free_port, S3Server, ACCESS_KEY, BUCKET, SECRET_KEY};

/// The default model: generator and judge of every test.
pub const MODEL: &str = "smollm2-135m-instruct";
pub const AMQP_HOST: &str = "127.0.0.1:5672";
/// Short judge prompts keep the judge's prefill cheap on two cores.
pub const JUDGE_MAX_CONTEXT: &str = "600";

/// A run id no other test (or earlier test run) uses.
/// The flags of a coordinator for `limit` instructions of the default model as generator
/// `generator` (24 new tokens, chat template), judged by the default model in logprob mode
/// as `judge`, writing its run folder to `out`.
pub fn default_model_coordinator_args(
    generator: &str,
    judge: &str,
    limit: usize,
    out: &Path,
) -> Vec<String> {
    let spec = format!("name={generator},model={MODEL},template=chat,max_new_tokens=24");
    let limit = limit.to_string();
    [
        "coordinator",
        "--generator",
        &spec,
        "--judge-name",
        judge,
        "--judge-model",
        MODEL,
        "--judge-mode",
        "logprob",
        "--judge-max-context",
        JUDGE_MAX_CONTEXT,
        "--limit",
        &limit,
        "--poll-interval-ms",
        "200",
        "--out",
        out.to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec()
}

pub fn unique_run(tag: &str) -> String {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("t-{tag}-{}-{nanos}", std::process::id())
}

/// Fails the test at once, with the fix, when RabbitMQ is not listening.
pub fn require_rabbitmq() {
    let addr: SocketAddr = AMQP_HOST.parse().unwrap();
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok(),
        "RabbitMQ is not listening on {AMQP_HOST}; run scripts/test-services.sh (or `rabbitmq-server -detached`)"
    );
}

/// Polls `ready` every 100 ms until it holds; panics with `what` (and `context()`, e.g. the
/// roles' logs) after `limit`.
pub fn wait_until(
    limit: Duration,
    what: &str,
    mut ready: impl FnMut() -> bool,
    context: impl Fn() -> String,
) {
    let started = Instant::now();
    while !ready() {
        if started.elapsed() > limit {
            panic!("waited {limit:?} for {what}\n{}", context());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A tokio runtime for the tests' own queue and store calls.
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(future)
}

/// One test's run: services, identity and the environment of its roles.
pub struct Cluster {
    pub run_id: String,
    pub s3: S3Server,
    /// Logs, secret files and run folders.
    pub dir: tempfile::TempDir,
    amqp_user: String,
    amqp_password_file: PathBuf,
    roles: Vec<String>,
}

impl Cluster {
    /// A new run on RabbitMQ's guest account (password from a file) and a fresh s3s-fs.
    pub fn new(tag: &str) -> Self {
        require_rabbitmq();
        let dir = tempfile::tempdir().unwrap();
        let amqp_password_file = dir.path().join("amqp-password");
        std::fs::write(&amqp_password_file, "guest\n").unwrap();
        std::fs::write(dir.path().join("s3-secret"), format!("{SECRET_KEY}\n")).unwrap();
        Self {
            run_id: unique_run(tag),
            s3: S3Server::start(),
            dir,
            amqp_user: "guest".into(),
            amqp_password_file,
            roles: Vec::new(),
        }
    }

    /// Roles log in as `user` with `password` (from the password file).
    pub fn with_amqp_login(mut self, user: &str, password: &str) -> Self {
        self.amqp_user = user.into();
        std::fs::write(&self.amqp_password_file, format!("{password}\n")).unwrap();
        self
    }

    pub fn amqp_url(&self) -> String {
        format!("amqp://{}@{AMQP_HOST}/%2f", self.amqp_user)
    }

    /// `s3://results/<run id>`: the run's store on this cluster's S3 server.
    pub fn store_url(&self) -> String {
        format!("s3://{BUCKET}/{}", self.run_id)
    }

    /// The same store, for the test to look into.
    pub fn store(&self) -> ResultStore {
        ResultStore::open(&self.s3.config(&self.run_id)).unwrap()
    }

    /// A folder inside the cluster's temporary folder (created).
    pub fn path(&self, name: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::create_dir_all(&path).unwrap();
        path
    }

    /// The command line of `herd <args>` with the cluster's environment and nothing
    /// inherited that could change it (HERD_*, AWS_*), one inference thread (two cores
    /// shared by several roles), and info logs (what the tests read and search for secrets).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_herd"));
        for (name, _) in std::env::vars() {
            if name.starts_with("HERD_") || name.starts_with("AWS_") {
                command.env_remove(name);
            }
        }
        command
            .args(args)
            .env("HERD_LOG", "info")
            .env("HERD_THREADS", "1")
            .env("HERD_RUN_ID", &self.run_id)
            .env("HERD_AMQP_URL", self.amqp_url())
            .env("HERD_AMQP_PASSWORD_FILE", &self.amqp_password_file)
            .env("HERD_STORE", self.store_url())
            .env("HERD_S3_ENDPOINT", self.s3.endpoint())
            .env("HERD_S3_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY_FILE", self.dir.path().join("s3-secret"));
        command
    }

    /// Starts `herd <args>` (args[0] is the role) as `name`, serving /metrics on a free port.
    pub fn spawn(&mut self, name: &str, args: &[&str]) -> Role {
        let mut command = self.command(args);
        self.spawn_command(name, &mut command)
    }

    /// Starts a prepared command (see [`Cluster::command`]) as `name`.
    pub fn spawn_command(&mut self, name: &str, command: &mut Command) -> Role {
        let port = free_port();
        let logs = self.path("logs");
        let (stdout, stderr) =
            (logs.join(format!("{name}.stdout")), logs.join(format!("{name}.stderr")));
        let child = command
            .env("HERD_METRICS_ADDR", format!("127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        self.roles.push(name.to_string());
        Role {
            name: name.to_string(),
            child: RefCell::new(child),
            stdout,
            stderr,
            metrics_addr: SocketAddr::from(([127, 0, 0, 1], port)),
            status: Cell::new(None),
        }
    }

    /// Runs `herd <args>` to completion (e.g. `herd run`, the in-process reference).
    pub fn run_to_end(&self, args: &[&str], limit: Duration) -> (ExitStatus, String, String) {
        let mut child =
            self.command(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let started = Instant::now();
        loop {
            if let Some(_status) = child.try_wait().unwrap() {
                let output = child.wait_with_output().unwrap();
                return (
                    output.status,
                    String::from_utf8_lossy(&output.stdout).into_owned(),
                    String::from_utf8_lossy(&output.stderr).into_owned(),
                );
            }
            if started.elapsed() > limit {
                let _ = child.kill();
                let output = child.wait_with_output().unwrap();
                panic!(
                    "herd {args:?} ran longer than {limit:?}\nstderr:\n{}",
                    String::from_utf8_lossy(&output.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A connection to the broker as the tests' own client (guest account).
    pub async fn queue(&self) -> RabbitQueue {
        let config = RabbitConfig {
            password: Some("guest".into()),
            reconnect_deadline: Duration::from_secs(20),
            ..RabbitConfig::new(format!("amqp://guest@{AMQP_HOST}/%2f"))
        };
        RabbitQueue::connect(config).await.expect("the tests' RabbitMQ connection")
    }

    /// What a queue of this run holds (ready messages, consumers).
    pub fn queue_stats(&self, queue: &QueueName) -> Option<QueueStats> {
        block_on(async { self.queue().await.stats(queue).await.ok() })
    }

    /// Keys stored under `prefix` in the run's store.
    pub fn stored(&self, prefix: &str) -> Vec<String> {
        let store = self.store();
        block_on(async { store.list(prefix).await.unwrap() })
    }

    /// The run's queues as RabbitMQ lists them (`herd.<run>.…`).
    pub fn queues(&self) -> Vec<QueueName> {
        let output = Command::new("rabbitmqctl").args(["-q", "list_queues", "name"]).output();
        let Ok(output) = output else { return Vec::new() };
        let prefix = format!("herd.{}.", self.run_id);
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(str::trim)
            .filter(|name| name.starts_with(&prefix))
            .filter_map(|name| queue_name(&self.run_id, name))
            .collect()
    }
}

/// A `QueueName` back from its text, for the kinds herd declares.
fn queue_name(run: &str, text: &str) -> Option<QueueName> {
    let rest = text.strip_prefix(&format!("herd.{run}."))?;
    if rest == "dlq" {
        return Some(QueueName::dead_letters(run));
    }
    if let Some(generator) = rest.strip_prefix("gen.") {
        return Some(QueueName::generation(run, generator));
    }
    rest.strip_prefix("judge.").map(|judge| QueueName::judge(run, judge))
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // The run's queues, whatever the test declared (the broker is shared by every test).
        let mut queues = self.queues();
        queues.push(QueueName::dead_letters(&self.run_id));
        block_on(async {
            let queue = self.queue().await;
            for name in &queues {
                let _ = queue.delete(name).await;
            }
        });
    }
}

/// One `herd` process. Dropping it kills it if it still runs.
pub struct Role {
    pub name: String,
    child: RefCell<Child>,
    stdout: PathBuf,
    stderr: PathBuf,
    pub metrics_addr: SocketAddr,
    status: Cell<Option<ExitStatus>>,
}

impl Role {
    pub fn pid(&self) -> u32 {
        self.child.borrow().id()
    }

    /// SIGTERM: what Kubernetes sends a pod it stops.
    pub fn terminate(&self) {
        let status =
            Command::new("kill").args(["-TERM", &self.pid().to_string()]).status().unwrap();
        assert!(status.success(), "kill -TERM {} failed", self.pid());
    }

    /// SIGKILL: a crash, with no chance to settle anything.
    pub fn kill(&self) {
        let mut child = self.child.borrow_mut();
        let _ = child.kill();
        self.status.set(Some(child.wait().unwrap()));
    }

    /// The exit status, if it has exited.
    pub fn exited(&self) -> Option<ExitStatus> {
        if self.status.get().is_none() {
            self.status.set(self.child.borrow_mut().try_wait().unwrap());
        }
        self.status.get()
    }

    /// Waits for the process to exit; panics with its logs after `limit`.
    pub fn wait(&self, limit: Duration) -> ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.exited() {
                return status;
            }
            if started.elapsed() > limit {
                panic!("{} did not exit within {limit:?}\n{}", self.name, self.logs());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for a successful exit; panics with the logs otherwise.
    pub fn wait_success(&self, limit: Duration) {
        let status = self.wait(limit);
        assert!(status.success(), "{} exited with {status}\n{}", self.name, self.logs());
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Both outputs, labelled, for failure messages.
    pub fn logs(&self) -> String {
        format!(
            "--- {} stdout:\n{}\n--- {} stderr:\n{}",
            self.name,
            self.stdout(),
            self.name,
            self.stderr()
        )
    }

    /// The body of `GET path` on the role's metrics server, or `None` while it does not answer.
    pub fn http_get(&self, path: &str) -> Option<(u16, String)> {
        let mut stream =
            TcpStream::connect_timeout(&self.metrics_addr, Duration::from_millis(500)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.metrics_addr
        )
        .ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let (head, body) = response.split_once("\r\n\r\n")?;
        let status = head.split_whitespace().nth(1)?.parse().ok()?;
        Some((status, body.to_string()))
    }

    /// The role's `/metrics` text (empty while it does not answer).
    pub fn metrics(&self) -> String {
        self.http_get("/metrics").map(|(_, body)| body).unwrap_or_default()
    }

    /// Waits until `/healthz` answers 200.
    pub fn wait_healthy(&self, limit: Duration) {
        let started = Instant::now();
        while self.http_get("/healthz").map(|(status, _)| status) != Some(200) {
            if let Some(status) = self.exited() {
                panic!("{} exited with {status} before it was healthy\n{}", self.name, self.logs());
            }
            assert!(
                started.elapsed() < limit,
                "{} not healthy within {limit:?}\n{}",
                self.name,
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Role {
    fn drop(&mut self) {
        if self.exited().is_none() {
            self.kill();
        }
    }
}

/// The sum of a metric's samples whose labels contain every `name="value"` of `labels`
/// (Prometheus text format).
pub fn metric_sum(text: &str, metric: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (name, label_text) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if name != metric {
                return None;
            }
            let matches = labels.iter().all(|(k, v)| label_text.contains(&format!("{k}=\"{v}\"")));
            matches.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// Every file under `dir` (but not under a `store/` folder), by `/`-separated relative path.
pub fn folder_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(dir: &Path, root: &Path, files: &mut BTreeMap<String, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if path.file_name().unwrap() != "store" {
                    walk(&path, root, files);
                }
            } else if dir == root && path.file_name().unwrap() == herd_coordinator::CLAIM_FILE {
                // Which run owns the folder (`--out`), not a result: the store's copy of the
                // run folder has none.
            } else {
                let relative = path.strip_prefix(root).unwrap();
                let key = relative
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy())
                    .collect::<Vec<_>>()
                    .join("/");
                files.insert(key, std::fs::read(&path).unwrap());
            }
        }
    }
    let mut files = BTreeMap::new();
    walk(dir, dir, &mut files);
    files
}

/// The run folder as stored under `runs/<run>/report/`, by relative path.
pub fn stored_report(cluster: &Cluster) -> BTreeMap<String, Vec<u8>> {
    let store = cluster.store();
    let prefix = herd_store::keys::report_prefix(&cluster.run_id);
    block_on(async {
        let mut files = BTreeMap::new();
        for key in store.list(&prefix).await.unwrap() {
            let bytes = store.get_bytes(&key).await.unwrap().unwrap();
            files.insert(key.strip_prefix(&prefix).unwrap().to_string(), bytes);
        }
        files
    })
}

/// The eval-set indices of the answers stored for `generator`, sorted.
pub fn stored_indices(cluster: &Cluster, generator: &str) -> Vec<usize> {
    let prefix = herd_store::keys::outputs_prefix(&cluster.run_id, generator);
    let mut indices: Vec<usize> = cluster
        .stored(&prefix)
        .iter()
        .map(|key| key.rsplit('/').next().unwrap().trim_end_matches(".json").parse().unwrap())
        .collect();
    indices.sort();
    indices
}
