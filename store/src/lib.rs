//! Result storage: a local folder or S3-compatible object storage, through object_store.
//!
//! Results are JSON documents under idempotent keys ([`keys`]): a job that runs twice (a
//! redelivery after a crash) writes the same key twice. Results are written with
//! [`ResultStore::put_json_once`]: the first write wins and a later one is a harmless no-op.
//! Every operation retries transient failures (the store unreachable, 5xx, throttling) with
//! exponential backoff until [`StoreConfig::retry_deadline`], so a result is never dropped
//! because the store was away for a while.

mod config;
mod error;
pub mod keys;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use herd_core::jobs::{GenerationResult, JudgeResult};
use herd_core::redact::redact_url;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{
    BackoffConfig, Certificate, ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions,
    PutPayload, RetryConfig,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::time::Instant;

pub use config::StoreConfig;
pub use error::StoreError;

use config::{parse_location, Location};

/// What a write-once put found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// This call wrote the document.
    New,
    /// The key already held a document (an earlier delivery of the same job); it was kept.
    AlreadyThere,
}

/// JSON documents by key, in a local folder or an S3 bucket. Cheap to clone.
#[derive(Clone)]
pub struct ResultStore {
    store: Arc<dyn ObjectStore>,
    /// The URL (and endpoint), without credentials: what errors and logs show.
    description: String,
    retry_deadline: Duration,
    secrets: Arc<Vec<String>>,
}

impl std::fmt::Debug for ResultStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResultStore").field("store", &self.description).finish_non_exhaustive()
    }
}

impl ResultStore {
    /// Opens the store the config's URL names (see [`StoreConfig`]). Nothing is contacted
    /// yet: an unreachable S3 server shows up (and is waited for) at the first operation.
    pub fn open(config: &StoreConfig) -> Result<Self, StoreError> {
        let secrets = Arc::new(config.secrets());
        let (store, description): (Arc<dyn ObjectStore>, String) =
            match parse_location(&config.url)? {
                Location::Local(dir) => {
                    let open_error = |message: String| StoreError::Open {
                        store: dir.display().to_string(),
                        message,
                    };
                    std::fs::create_dir_all(&dir).map_err(|e| open_error(e.to_string()))?;
                    let local = LocalFileSystem::new_with_prefix(&dir)
                        .map_err(|e| open_error(e.to_string()))?;
                    let dir = dir.canonicalize().unwrap_or(dir);
                    (Arc::new(local), format!("file://{}", dir.display()))
                }
                Location::Memory => (Arc::new(InMemory::new()), "memory://".to_string()),
                Location::S3 { bucket, prefix } => {
                    let endpoint = config.s3_endpoint.clone();
                    let description = match &endpoint {
                        Some(e) => format!("{} at {}", redact_url(&config.url), redact_url(e)),
                        None => redact_url(&config.url),
                    };
                    let s3 = s3_builder(config, &bucket, &description)?.build().map_err(|e| {
                        StoreError::Open {
                            store: description.clone(),
                            message: scrub(&e.to_string(), &secrets),
                        }
                    })?;
                    let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
                        Arc::new(s3)
                    } else {
                        Arc::new(PrefixStore::new(s3, prefix.as_str()))
                    };
                    (store, description)
                }
            };
        Ok(Self { store, description, retry_deadline: config.retry_deadline, secrets })
    }

    /// A local folder (created if missing), with the default retry deadline.
    pub fn local(dir: impl AsRef<std::path::Path>) -> Result<Self, StoreError> {
        Self::open(&StoreConfig::new(dir.as_ref().to_string_lossy()))
    }

    /// The store's URL without credentials, e.g. `s3://bucket/prefix at http://host:9000`.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Writes `value` at `key`, replacing what is there (last write wins).
    pub async fn put_json<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
    ) -> Result<(), StoreError> {
        let (path, payload) = self.encode(key, value)?;
        self.retrying("put", key, || {
            let payload = payload.clone();
            let path = path.clone();
            async move { self.store.put(&path, payload).await.map(|_| ()) }
        })
        .await
    }

    /// Writes `value` at `key` unless the key already holds a document: the first write
    /// wins, a repeated one (the same job delivered twice) returns [`Stored::AlreadyThere`].
    pub async fn put_json_once<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
    ) -> Result<Stored, StoreError> {
        let (path, payload) = self.encode(key, value)?;
        let result = self
            .retrying("put", key, || {
                let payload = payload.clone();
                let path = path.clone();
                async move {
                    let options = PutOptions { mode: PutMode::Create, ..PutOptions::default() };
                    self.store.put_opts(&path, payload, options).await.map(|_| ())
                }
            })
            .await;
        match result {
            Ok(()) => Ok(Stored::New),
            Err(StoreError::Operation { message, .. }) if message.starts_with(ALREADY_EXISTS) => {
                Ok(Stored::AlreadyThere)
            }
            Err(e) => Err(e),
        }
    }

    /// Writes raw `bytes` at `key`, replacing what is there (files such as a run's report).
    pub async fn put_bytes(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        let path = self.path(key)?;
        let payload = PutPayload::from(bytes);
        self.retrying("put", key, || {
            let payload = payload.clone();
            let path = path.clone();
            async move { self.store.put(&path, payload).await.map(|_| ()) }
        })
        .await
    }

    /// The bytes at `key`, or `None` when there are none.
    pub async fn get_bytes(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.path(key)?;
        self.retrying("get", key, || {
            let path = path.clone();
            async move {
                match self.store.get(&path).await {
                    Ok(result) => result.bytes().await.map(|b| Some(b.to_vec())),
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(e),
                }
            }
        })
        .await
    }

    /// The document at `key`, or `None` when there is none.
    pub async fn get_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StoreError> {
        let path = self.path(key)?;
        let bytes = self
            .retrying("get", key, || {
                let path = path.clone();
                async move {
                    match self.store.get(&path).await {
                        Ok(result) => result.bytes().await.map(Some),
                        Err(object_store::Error::NotFound { .. }) => Ok(None),
                        Err(e) => Err(e),
                    }
                }
            })
            .await?;
        let Some(bytes) = bytes else { return Ok(None) };
        serde_json::from_slice(&bytes).map(Some).map_err(|source| StoreError::Decode {
            store: self.description.clone(),
            key: key.to_string(),
            source,
        })
    }

    /// Whether `key` holds a document.
    pub async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        let path = self.path(key)?;
        self.retrying("head", key, || {
            let path = path.clone();
            async move {
                match self.store.head(&path).await {
                    Ok(_) => Ok(true),
                    Err(object_store::Error::NotFound { .. }) => Ok(false),
                    Err(e) => Err(e),
                }
            }
        })
        .await
    }

    /// Every key under `prefix` (a folder such as [`keys::outputs_prefix`]), sorted.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let trimmed = prefix.trim_matches('/');
        let path = if trimmed.is_empty() { None } else { Some(self.path(trimmed)?) };
        let mut keys = self
            .retrying("list", prefix, || {
                let path = path.clone();
                async move {
                    match self
                        .store
                        .list(path.as_ref())
                        .map_ok(|meta| meta.location.to_string())
                        .try_collect()
                        .await
                    {
                        Err(object_store::Error::NotFound { .. }) => Ok(Vec::new()),
                        other => other,
                    }
                }
            })
            .await?;
        keys.sort();
        Ok(keys)
    }

    /// Deletes `key` (no error when it is already gone).
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = self.path(key)?;
        self.retrying("delete", key, || {
            let path = path.clone();
            async move {
                match self.store.delete(&path).await {
                    Err(object_store::Error::NotFound { .. }) => Ok(()),
                    other => other,
                }
            }
        })
        .await
    }

    /// Stores one generated answer under [`keys::output`], first write wins.
    pub async fn put_output(&self, result: &GenerationResult) -> Result<Stored, StoreError> {
        self.put_json_once(&keys::output(&result.run_id, &result.generator, result.index), result)
            .await
    }

    /// Stores one verdict under [`keys::annotation`], first write wins.
    pub async fn put_annotation(&self, result: &JudgeResult) -> Result<Stored, StoreError> {
        self.put_json_once(
            &keys::annotation(&result.run_id, &result.judge, &result.generator, result.index),
            result,
        )
        .await
    }

    fn path(&self, key: &str) -> Result<Path, StoreError> {
        Path::parse(key)
            .map_err(|e| StoreError::InvalidKey { key: key.to_string(), reason: e.to_string() })
    }

    fn encode<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
    ) -> Result<(Path, PutPayload), StoreError> {
        let path = self.path(key)?;
        let json = serde_json::to_vec(value)
            .map_err(|source| StoreError::Encode { key: key.to_string(), source })?;
        Ok((path, PutPayload::from(json)))
    }

    /// Runs `attempt` until it succeeds, fails for good, or transient failures outlast
    /// the retry deadline.
    async fn retrying<R, F, Fut>(
        &self,
        operation: &'static str,
        key: &str,
        attempt: F,
    ) -> Result<R, StoreError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = object_store::Result<R>>,
    {
        let started = Instant::now();
        let mut pause = Duration::from_millis(200);
        loop {
            let error = match attempt().await {
                Ok(value) => return Ok(value),
                Err(e) => e,
            };
            if let Some(tls) = tls_failure(&error) {
                // An untrusted or mismatched certificate does not heal by waiting.
                return Err(StoreError::Operation {
                    store: self.description.clone(),
                    key: key.to_string(),
                    operation,
                    message: scrub(&tls, &self.secrets),
                });
            }
            let message = scrub(&error.to_string(), &self.secrets);
            if !is_transient(&error) {
                let message = match error {
                    object_store::Error::AlreadyExists { .. }
                    | object_store::Error::Precondition { .. } => {
                        format!("{ALREADY_EXISTS}: {message}")
                    }
                    _ => message,
                };
                return Err(StoreError::Operation {
                    store: self.description.clone(),
                    key: key.to_string(),
                    operation,
                    message,
                });
            }
            let waited = started.elapsed();
            if waited >= self.retry_deadline {
                return Err(StoreError::Unavailable {
                    store: self.description.clone(),
                    key: key.to_string(),
                    operation,
                    waited,
                    last_error: message,
                });
            }
            tracing::warn!(store = %self.description, key, operation, error = %message, "store unavailable; retrying");
            tokio::time::sleep(pause.min(self.retry_deadline - waited)).await;
            pause = (pause * 2).min(Duration::from_secs(10));
        }
    }
}

const ALREADY_EXISTS: &str = "already exists";

fn s3_builder(
    config: &StoreConfig,
    bucket: &str,
    description: &str,
) -> Result<AmazonS3Builder, StoreError> {
    // object_store's own retries are kept short; `retrying` owns the long deadline.
    let retry = RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            base: 2.0,
        },
        max_retries: 2,
        retry_timeout: Duration::from_secs(10),
    };
    let mut client = ClientOptions::new();
    if let Some(path) = &config.s3_ca_file {
        for certificate in ca_certificates(path, description)? {
            client = client.with_root_certificate(certificate);
        }
    }
    // What `AmazonS3Builder::from_env` does, on top of our client options: every AWS_*
    // variable object_store knows (client settings included) still applies.
    let mut builder = AmazonS3Builder::new().with_client_options(client);
    for (name, value) in std::env::vars_os() {
        let (Some(name), Some(value)) = (name.to_str(), value.to_str()) else { continue };
        if name.starts_with("AWS_") {
            if let Ok(key) = name.to_ascii_lowercase().parse() {
                builder = builder.with_config(key, value);
            }
        }
    }
    builder = builder
        .with_bucket_name(bucket)
        .with_region(config.s3_region.clone().unwrap_or_else(|| "us-east-1".to_string()))
        .with_virtual_hosted_style_request(config.s3_virtual_hosted_style)
        .with_retry(retry);
    if let Some(endpoint) = &config.s3_endpoint {
        builder = builder.with_endpoint(endpoint).with_allow_http(endpoint.starts_with("http://"));
    }
    if let Some(key) = &config.s3_access_key_id {
        builder = builder.with_access_key_id(key);
    }
    if let Some(secret) = &config.s3_secret_access_key {
        builder = builder.with_secret_access_key(secret);
    }
    if let Some(token) = &config.s3_session_token {
        builder = builder.with_token(token);
    }
    Ok(builder)
}

/// The certificates of a PEM bundle (one CA or several), to trust for an https:// endpoint.
fn ca_certificates(
    path: &std::path::Path,
    description: &str,
) -> Result<Vec<Certificate>, StoreError> {
    let error = |message: String| StoreError::CaFile {
        store: description.to_string(),
        path: path.display().to_string(),
        message,
    };
    let pem = std::fs::read(path).map_err(|e| error(e.to_string()))?;
    let certificates = Certificate::from_pem_bundle(&pem).map_err(|e| error(e.to_string()))?;
    if certificates.is_empty() {
        return Err(error("it holds no PEM certificate".to_string()));
    }
    Ok(certificates)
}

/// The TLS handshake's complaint when the server's certificate was refused (an unknown
/// CA, a name mismatch, an expired certificate): the innermost errors say so, the outer
/// ones only that a request failed.
fn tls_failure(error: &object_store::Error) -> Option<String> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    let mut texts = Vec::new();
    while let Some(e) = source {
        texts.push(e.to_string());
        source = e.source();
    }
    let reason = texts.iter().rev().find(|t| t.contains("certificate"))?;
    Some(format!(
        "TLS: the server's certificate was not accepted ({reason}); if a private CA signed it, \
         pass that CA's PEM file as the store's CA file (--s3-ca-file, HERD_S3_CA_FILE or AWS_CA_BUNDLE)"
    ))
}

/// Whether waiting may fix the failure: the server unreachable, timeouts, 5xx, throttling.
fn is_transient(error: &object_store::Error) -> bool {
    match error {
        object_store::Error::Generic { store, .. } => {
            if *store == "LocalFileSystem" {
                return false; // a disk error does not heal by waiting
            }
            let text = error.to_string();
            let client_error = ["status code: 4", "status code 4"].iter().any(|p| text.contains(p))
                && !["408", "429"].iter().any(|c| text.contains(c));
            !client_error
        }
        object_store::Error::JoinError { .. } => true,
        _ => false,
    }
}

/// Removes secrets from a message (error texts may quote a request or a config value).
fn scrub(message: &str, secrets: &[String]) -> String {
    secrets.iter().fold(message.to_string(), |m, secret| m.replace(secret.as_str(), "<redacted>"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_store_round_trip_and_second_put_is_harmless() {
        let store = ResultStore::open(&StoreConfig::new("memory://")).unwrap();
        assert_eq!(store.put_json_once("runs/r/outputs/m/1.json", &1).await.unwrap(), Stored::New);
        assert_eq!(
            store.put_json_once("runs/r/outputs/m/1.json", &2).await.unwrap(),
            Stored::AlreadyThere
        );
        assert_eq!(store.get_json::<i32>("runs/r/outputs/m/1.json").await.unwrap(), Some(1));
        assert_eq!(store.get_json::<i32>("runs/r/outputs/m/2.json").await.unwrap(), None);
    }

    #[tokio::test]
    async fn bytes_round_trip_and_overwrite() {
        let store = ResultStore::open(&StoreConfig::new("memory://")).unwrap();
        store.put_bytes("runs/r/report/leaderboard.csv", b"a,b\n".to_vec()).await.unwrap();
        store.put_bytes("runs/r/report/leaderboard.csv", b"c,d\n".to_vec()).await.unwrap();
        assert_eq!(
            store.get_bytes("runs/r/report/leaderboard.csv").await.unwrap(),
            Some(b"c,d\n".to_vec())
        );
        assert_eq!(store.get_bytes("runs/r/report/none.csv").await.unwrap(), None);
    }

    #[tokio::test]
    async fn keys_with_empty_segments_are_rejected_with_the_key_named() {
        let store = ResultStore::open(&StoreConfig::new("memory://")).unwrap();
        let err = store.put_json("runs//x.json", &1).await.unwrap_err();
        assert!(err.to_string().contains("runs//x.json"), "{err}");
    }
}
