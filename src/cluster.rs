//! What the distributed roles (`herd coordinator`, `herd worker`, `herd judge-worker`)
//! share: the run id, the broker, the store, the `/metrics` endpoint, how a worker role
//! starts ([`RoleServices`]) and how a role is told to stop. Not a subcommand.
//!
//! Secrets come only from the environment or mounted files: the AMQP URL (which may hold a
//! password) is read from HERD_AMQP_URL and never shown by `--help`; the password is better
//! kept in a file (HERD_AMQP_PASSWORD_FILE); S3 keys come from AWS_ACCESS_KEY_ID /
//! AWS_SECRET_ACCESS_KEY or their `_FILE` variants. Logs and errors show the broker as
//! `scheme://user@host:port/vhost` and the store without credentials.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use herd_queue::{RabbitConfig, RabbitQueue, DEFAULT_DELIVERY_LIMIT};
use herd_runtime::{ModelCache, NOOP_BENCHMARK_MODEL};
use herd_store::{ResultStore, StoreConfig};
use herd_telemetry::{Metrics, MetricsServer};

#[derive(clap::Args)]
pub struct ClusterArgs {
    /// The run's id: it names the run's queues and its folder in the store (`runs/<id>/`).
    /// Every role of a run gets the same one.
    #[arg(long, env = "HERD_RUN_ID")]
    pub run_id: String,
    /// RabbitMQ: `amqp://user@host:5672/vhost` or `amqps://…`. Put the password in
    /// --amqp-password-file rather than here.
    #[arg(
        long,
        env = "HERD_AMQP_URL",
        default_value = "amqp://guest@127.0.0.1:5672/%2f",
        hide_env_values = true
    )]
    pub amqp_url: String,
    /// A file holding the AMQP password (a mounted secret); it replaces any password in the URL.
    #[arg(long, env = "HERD_AMQP_PASSWORD_FILE", value_name = "FILE")]
    pub amqp_password_file: Option<PathBuf>,
    /// PEM file of the CA that signed the broker's certificate (amqps:// with a private CA).
    #[arg(long, env = "HERD_AMQP_CA_FILE", value_name = "FILE")]
    pub amqp_ca_file: Option<PathBuf>,
    /// A job given back this many times goes to the run's dead-letter queue. Every role of
    /// a run must use the same value (the broker refuses to redeclare a queue otherwise).
    #[arg(long, env = "HERD_DELIVERY_LIMIT", default_value_t = DEFAULT_DELIVERY_LIMIT)]
    pub delivery_limit: u32,
    /// Seconds to keep reconnecting to an unreachable broker before giving up.
    #[arg(long, env = "HERD_RECONNECT_DEADLINE", default_value_t = 300, value_name = "SECONDS")]
    pub reconnect_deadline: u64,
    /// Where results go: `s3://bucket/prefix`, `file:///abs/path` or a folder. S3 keys come
    /// from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_*_FILE).
    #[arg(long, env = "HERD_STORE", value_name = "URL")]
    pub store: String,
    /// The S3 endpoint of an S3-compatible server (default: AWS_ENDPOINT_URL, else AWS).
    #[arg(long, env = "HERD_S3_ENDPOINT", value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// PEM file of the CA that signed an https:// S3 endpoint's certificate (a private CA),
    /// trusted besides the system's roots (default: AWS_CA_BUNDLE).
    #[arg(long, env = "HERD_S3_CA_FILE", value_name = "FILE")]
    pub s3_ca_file: Option<PathBuf>,
    /// The S3 region (default: AWS_REGION, else us-east-1).
    #[arg(long, env = "HERD_S3_REGION")]
    pub s3_region: Option<String>,
    /// Address buckets as `bucket.host` instead of `host/bucket` (path style, the default).
    #[arg(long, env = "AWS_VIRTUAL_HOSTED_STYLE_REQUEST")]
    pub s3_virtual_hosted_style: bool,
    /// Seconds a store operation keeps retrying while the store is unreachable.
    #[arg(long, env = "HERD_STORE_RETRY_DEADLINE", default_value_t = 600, value_name = "SECONDS")]
    pub store_retry_deadline: u64,
    /// Serve Prometheus `/metrics` and `/healthz` here (e.g. `0.0.0.0:9464`; port 0 picks one).
    #[arg(long, env = "HERD_METRICS_ADDR", value_name = "HOST:PORT")]
    pub metrics_addr: Option<SocketAddr>,
}

impl ClusterArgs {
    /// Connects to the broker; refused credentials fail at once, naming the user and host
    /// but not the password.
    pub async fn connect_queue(&self, role: &str) -> anyhow::Result<RabbitQueue> {
        let mut config = RabbitConfig::new(self.amqp_url.clone());
        if let Some(path) = &self.amqp_password_file {
            let password = std::fs::read_to_string(path).with_context(|| {
                format!("cannot read the AMQP password file {}", path.display())
            })?;
            config.password = Some(password.trim_end_matches(['\r', '\n']).to_string());
        }
        config.tls_ca_file = self.amqp_ca_file.clone();
        config.delivery_limit = self.delivery_limit;
        config.reconnect_deadline = Duration::from_secs(self.reconnect_deadline);
        config.connection_name = format!("herd {role} {} pid {}", self.run_id, std::process::id());
        let queue = RabbitQueue::connect(config).await.context("cannot connect to RabbitMQ")?;
        tracing::info!(broker = %queue.endpoint(), "connected to RabbitMQ");
        Ok(queue)
    }

    pub fn open_store(&self) -> anyhow::Result<ResultStore> {
        let config = StoreConfig {
            s3_endpoint: self.s3_endpoint.clone(),
            s3_ca_file: self.s3_ca_file.clone(),
            s3_region: self.s3_region.clone(),
            s3_virtual_hosted_style: self.s3_virtual_hosted_style,
            retry_deadline: Duration::from_secs(self.store_retry_deadline),
            ..StoreConfig::new(self.store.clone())
        }
        .with_env()?;
        let store = ResultStore::open(&config)?;
        tracing::info!(store = %store.description(), "opened the result store");
        Ok(store)
    }

    /// The role's metrics, served on --metrics-addr when given (the server stops when the
    /// returned handle is dropped).
    pub async fn serve_metrics(&self) -> anyhow::Result<(Metrics, Option<MetricsServer>)> {
        let metrics = Metrics::new()?;
        let server = match self.metrics_addr {
            Some(addr) => {
                let server = MetricsServer::start(addr, metrics.registry().clone())
                    .await
                    .with_context(|| format!("cannot serve /metrics on {addr}"))?;
                tracing::info!(addr = %server.local_addr(), "serving /metrics and /healthz");
                Some(server)
            }
            None => None,
        };
        Ok((metrics, server))
    }
}

/// What a worker role (`herd worker`, `herd judge-worker`) runs on.
pub struct RoleServices {
    pub queue: RabbitQueue,
    pub store: ResultStore,
    pub metrics: Metrics,
    pub models: ModelCache,
    /// This process's name in results and activity records.
    pub worker: String,
    /// Serves `/metrics` while the services are held.
    _metrics_server: Option<MetricsServer>,
}

impl RoleServices {
    /// Connects to the broker, opens the store and serves the metrics of `role`, with
    /// `models` (checked by the caller before any of this). `preload`, a model the role
    /// serves, starts loading in the background at once: the role already listens, and its
    /// first jobs wait for the same load.
    pub async fn start(
        role: &str,
        cluster: &ClusterArgs,
        models: ModelCache,
        preload: Option<&str>,
    ) -> anyhow::Result<Self> {
        let queue = cluster.connect_queue(role).await?;
        let store = cluster.open_store()?;
        let (metrics, server) = cluster.serve_metrics().await?;
        if let Some(model) = preload.filter(|&m| m != NOOP_BENCHMARK_MODEL).map(str::to_string) {
            let models = models.clone();
            tokio::spawn(async move {
                match models.get(&model).await {
                    Ok(_) => tracing::info!(%model, "model loaded"),
                    Err(e) => {
                        tracing::error!(error = %e, "the model cannot be loaded; its jobs will be dead-lettered")
                    }
                }
            });
        }
        let worker = herd_runtime::worker_id();
        Ok(Self { queue, store, metrics, models, worker, _metrics_server: server })
    }
}
