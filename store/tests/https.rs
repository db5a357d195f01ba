//! The store over `https://`: s3s-fs (which serves plain HTTP only) behind a TLS proxy of
//! this test's own, whose certificate for 127.0.0.1 is signed by a CA made for the test.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use herd_core::jobs::{FinishReason, GenerationResult};
use herd_store::{keys, ResultStore, StoreConfig, StoreError, Stored};
use support::*;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

/// A CA and a server certificate (127.0.0.1 and localhost) it signed, made with the
/// `openssl` command line tool.
struct TestPki {
    dir: tempfile::TempDir,
}

impl TestPki {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .output()
                .expect("run openssl");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        openssl(
            &[
                &["req", "-x509"][..],
                &ec,
                &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=herd test CA"],
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
            dir.path().join("server.ext"),
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
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// Accepts TLS on a free port of 127.0.0.1 and forwards the plain bytes to `backend`.
/// Stops when dropped.
struct TlsProxy {
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl TlsProxy {
    async fn start(pki: &TestPki, backend: std::net::SocketAddr) -> Self {
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(pki.path("server.pem"))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
        let key = PrivateKeyDer::from_pem_file(pki.path("server.key")).unwrap();
        let config =
            ServerConfig::builder().with_no_client_auth().with_single_cert(chain, key).unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else { continue };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // A client that does not trust the certificate ends the handshake: nothing to forward.
                    let Ok(mut tls) = acceptor.accept(client).await else { return };
                    let Ok(mut server) = TcpStream::connect(backend).await else { return };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut server).await;
                });
            }
        });
        Self { port, task }
    }

    fn endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn https_config(
    server: &S3Server,
    proxy: &TlsProxy,
    prefix: &str,
    ca: Option<&Path>,
) -> StoreConfig {
    StoreConfig {
        s3_endpoint: Some(proxy.endpoint()),
        s3_ca_file: ca.map(Path::to_path_buf),
        retry_deadline: Duration::from_secs(60),
        ..server.config(prefix)
    }
}

fn output(run: &str, generator: &str, index: usize, text: &str) -> GenerationResult {
    GenerationResult {
        run_id: run.into(),
        generator: generator.into(),
        index,
        instruction: format!("instruction {index}"),
        dataset: "helpful_base".into(),
        output: text.into(),
        prompt_tokens: 12,
        output_tokens: 34,
        seconds: 0.5,
        finish_reason: FinishReason::Eos,
        worker: "test".into(),
        stored: None,
    }
}

#[tokio::test]
async fn https_endpoint_with_the_ca_file_writes_and_reads_results() {
    let pki = TestPki::new();
    let server = S3Server::start();
    let proxy = TlsProxy::start(&pki, server.addr()).await;
    let store = ResultStore::open(&https_config(&server, &proxy, "tls", Some(&pki.path("ca.pem"))))
        .unwrap();
    assert!(store.description().contains(&proxy.endpoint()), "{}", store.description());

    let key = keys::output("r", "smol", 3);
    assert_eq!(store.put_output(&output("r", "smol", 3, "over TLS")).await.unwrap(), Stored::New);
    assert_eq!(
        store.put_output(&output("r", "smol", 3, "again")).await.unwrap(),
        Stored::AlreadyThere
    );
    let back: GenerationResult = store.get_json(&key).await.unwrap().expect("the stored answer");
    assert_eq!(back.output, "over TLS");
    assert!(store.exists(&key).await.unwrap());
    assert_eq!(store.list(&keys::outputs_prefix("r", "smol")).await.unwrap(), vec![key.clone()]);
    // It went through the proxy to s3s-fs's folder.
    assert!(server.data_dir().join(BUCKET).join("tls").join(&key).is_file());
}

#[tokio::test]
async fn https_endpoint_without_the_ca_file_fails_fast_naming_the_endpoint() {
    let pki = TestPki::new();
    let server = S3Server::start();
    let proxy = TlsProxy::start(&pki, server.addr()).await;
    let store = ResultStore::open(&https_config(&server, &proxy, "untrusted", None)).unwrap();
    let started = Instant::now();
    let err = store.put_output(&output("r", "smol", 1, "x")).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "an untrusted certificate is not transient (took {:?}): {err}",
        started.elapsed()
    );
    assert!(matches!(err, StoreError::Operation { .. }), "{err:?}");
    let message = err.to_string();
    eprintln!("without the CA: {message}");
    assert!(message.contains(&proxy.endpoint()), "names the endpoint: {message}");
    assert!(message.contains("certificate"), "says it is the certificate: {message}");
    assert!(!message.contains(SECRET_KEY), "{message}");
}

#[tokio::test]
async fn an_unreadable_or_empty_ca_file_is_an_error_naming_it() {
    let pki = TestPki::new();
    let server = S3Server::start();
    let proxy = TlsProxy::start(&pki, server.addr()).await;
    let missing = pki.path("no-such-ca.pem");
    let err = ResultStore::open(&https_config(&server, &proxy, "x", Some(&missing))).unwrap_err();
    assert!(matches!(err, StoreError::CaFile { .. }), "{err:?}");
    assert!(err.to_string().contains("no-such-ca.pem"), "{err}");
    let err = ResultStore::open(&https_config(&server, &proxy, "x", Some(&pki.path("server.ext"))))
        .unwrap_err();
    assert!(
        err.to_string().contains("server.ext") && err.to_string().contains("no PEM certificate"),
        "{err}"
    );
}
