//! `amqps://` against a real RabbitMQ node: one of this test's own, with a TLS listener only,
//! whose certificate (for 127.0.0.1 and localhost) is signed by a CA made for the test. The
//! shared broker on 127.0.0.1:5672 is not touched.

mod support;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use herd_core::jobs::GenerationJob;
use herd_queue::{JobQueue, QueueError, QueueName, RabbitConfig, RabbitQueue};
use support::{job, next_within, unique_run};

/// Writes `ca.pem`, `server.pem` and `server.key` into `dir` with the `openssl` tool.
fn make_certificates(dir: &Path) {
    let openssl = |args: &[&str]| {
        let out =
            Command::new("openssl").args(args).current_dir(dir).output().expect("run openssl");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=herd amqps test CA",
            ],
            &[
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req", "-new"][..],
            &ec,
            &["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"],
        ]
        .concat(),
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "server.ext",
        "-out",
        "server.pem",
    ]);
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A RabbitMQ node run by `rabbitmq-server` in the foreground, listening for AMQP over TLS
/// only. Dropping it (also when the test panics) stops the node.
struct TlsNode {
    name: String,
    tls_port: u16,
    dir: tempfile::TempDir,
    server: Option<Child>,
}

impl TlsNode {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path();
        make_certificates(root);
        let (tls_port, dist_port) = (free_port(), free_port());
        for sub in ["mnesia", "log"] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        let file = |name: &str| root.join(name).display().to_string();
        std::fs::write(
            root.join("rabbitmq.conf"),
            format!(
                "listeners.tcp = none\n\
                 listeners.ssl.1 = 127.0.0.1:{tls_port}\n\
                 ssl_options.cacertfile = {}\n\
                 ssl_options.certfile = {}\n\
                 ssl_options.keyfile = {}\n\
                 ssl_options.verify = verify_none\n\
                 ssl_options.fail_if_no_peer_cert = false\n",
                file("ca.pem"),
                file("server.pem"),
                file("server.key"),
            ),
        )
        .unwrap();
        // The package's script runs the node as the rabbitmq user: it must read all of this.
        let chown = Command::new("chown").args(["-R", "rabbitmq:rabbitmq"]).arg(root).status();
        assert!(
            chown.is_ok_and(|s| s.success()),
            "cannot give {} to the rabbitmq user",
            root.display()
        );

        let name = format!("herd-tls-{}@localhost", std::process::id());
        let server = Command::new("rabbitmq-server")
            .env("RABBITMQ_NODENAME", &name)
            .env("RABBITMQ_DIST_PORT", dist_port.to_string())
            .env("RABBITMQ_CONFIG_FILE", root.join("rabbitmq.conf"))
            .env("RABBITMQ_MNESIA_BASE", root.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", root.join("log"))
            .env("RABBITMQ_PID_FILE", root.join("pid"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", root.join("plugins"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("rabbitmq-server is not installed; run scripts/test-services.sh");
        let mut node = Self { name, tls_port, dir, server: Some(server) };
        let addr = SocketAddr::from(([127, 0, 0, 1], tls_port));
        let started = Instant::now();
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Some(Ok(Some(status))) = node.server.as_mut().map(Child::try_wait) {
                panic!("RabbitMQ node {} exited ({status}); log:\n{}", node.name, node.log_tail());
            }
            if started.elapsed() > Duration::from_secs(90) {
                let log = node.log_tail();
                node.stop();
                panic!("RabbitMQ node did not listen on {addr} within 90 s; log:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        node
    }

    fn url(&self, host: &str) -> String {
        format!("amqps://guest:guest@{host}:{}/%2f", self.tls_port)
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn log_tail(&self) -> String {
        let text =
            std::fs::read_to_string(self.dir.path().join("log").join(format!("{}.log", self.name)))
                .unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// SIGTERM to the Erlang VM (the pid file names it), then waits until it is gone.
    fn stop(&mut self) {
        let Some(mut server) = self.server.take() else { return };
        let pid = std::fs::read_to_string(self.dir.path().join("pid"))
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok());
        if let Some(pid) = pid {
            let _ = Command::new("kill").arg(pid.to_string()).status();
            let started = Instant::now();
            loop {
                let _ = server.try_wait();
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                // Gone, or a zombie the start script (our child) has not reaped yet.
                let state = stat.rsplit(')').next().unwrap_or("").trim_start();
                if state.is_empty() || state.starts_with('Z') {
                    break;
                }
                if started.elapsed() > Duration::from_secs(30) {
                    let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let _ = server.kill();
        let _ = server.wait();
    }
}

impl Drop for TlsNode {
    fn drop(&mut self) {
        self.stop();
    }
}

fn config(url: String, ca_file: Option<PathBuf>) -> RabbitConfig {
    RabbitConfig {
        tls_ca_file: ca_file,
        reconnect_deadline: Duration::from_secs(60),
        connection_name: "herd-queue amqps test".into(),
        ..RabbitConfig::new(url)
    }
}

async fn round_trip(queue: &RabbitQueue, label: &str) {
    let run = unique_run(label);
    let q = QueueName::generation(&run, "smol");
    let sent = job(&run, "smol", 7);
    queue.publish(&q, std::slice::from_ref(&sent)).await.expect("publish over amqps");
    let mut consumer = queue.consume::<GenerationJob>(&q, 1).await.expect("consume over amqps");
    let delivery = next_within(&mut consumer, Duration::from_secs(10))
        .await
        .expect("the job, back over amqps");
    assert_eq!(delivery.job, sent);
    delivery.ack().await.unwrap();
    consumer.close().await;
    queue.delete(&q).await.unwrap();
    queue.delete(&q.dead_letter_queue()).await.unwrap();
}

#[tokio::test]
async fn amqps_with_the_ca_file_carries_jobs_and_without_it_fails_fast_on_the_certificate() {
    let started = Instant::now();
    let node = TlsNode::start();
    eprintln!("node {} up in {:?}", node.name, started.elapsed());

    // Trusted through the CA file, by IP address and by name (both are in the certificate).
    for host in ["127.0.0.1", "localhost"] {
        let queue = RabbitQueue::connect(config(node.url(host), Some(node.ca_file())))
            .await
            .expect("connect over amqps");
        assert!(queue.endpoint().starts_with("amqps://guest@"), "{}", queue.endpoint());
        round_trip(&queue, "amqps").await;
    }

    // Without it the system's roots do not know the CA: a clear error at once, not a wait
    // for the reconnect deadline.
    let attempt = Instant::now();
    let err = RabbitQueue::connect(config(node.url("127.0.0.1"), None))
        .await
        .expect_err("an untrusted certificate");
    let message = err.to_string();
    eprintln!("without the CA file: {message}");
    assert!(attempt.elapsed() < Duration::from_secs(15), "took {:?}: {message}", attempt.elapsed());
    assert!(matches!(err, QueueError::Tls { .. }), "{err:?}");
    assert!(message.contains("certificate") && message.contains("UnknownIssuer"), "{message}");
    assert!(
        message.contains(&format!("127.0.0.1:{}", node.tls_port)),
        "names the broker: {message}"
    );
    assert!(!message.contains("guest:guest"), "no password: {message}");
    drop(node);
    eprintln!("whole test {:?}", started.elapsed());
}
