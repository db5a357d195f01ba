//! Which store to open, and with which credentials.

use std::path::PathBuf;
use std::time::Duration;

use herd_core::redact::redact_url;

use crate::StoreError;

/// Where results go. The URL chooses the backend:
/// - `file:///abs/path` or a plain path: a local folder (created if missing);
/// - `s3://bucket/prefix`: S3 or an S3-compatible server;
/// - `memory://`: in memory, for tests.
///
/// S3 settings left `None` are taken from the usual AWS variables by
/// [`StoreConfig::with_env`]: `AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, each also readable from a file named by
/// the same variable with `_FILE` appended (a mounted secret). [`StoreConfig::s3_ca_file`]
/// falls back to `AWS_CA_BUNDLE`, the variable the AWS SDKs and CLI read for the same thing.
#[derive(Clone)]
pub struct StoreConfig {
    pub url: String,
    /// `http://host:port` or `https://host:port` for an S3-compatible server; plain
    /// `http://` is allowed then.
    pub s3_endpoint: Option<String>,
    /// PEM file with the CA certificate(s) that signed an `https://` endpoint's certificate
    /// (a private CA). They are trusted in addition to the system's roots.
    pub s3_ca_file: Option<PathBuf>,
    /// Default `us-east-1`.
    pub s3_region: Option<String>,
    pub s3_access_key_id: Option<String>,
    pub s3_secret_access_key: Option<String>,
    pub s3_session_token: Option<String>,
    /// `bucket.host/key` instead of `host/bucket/key` (path style, what self-hosted
    /// servers expect, is the default).
    pub s3_virtual_hosted_style: bool,
    /// How long an operation keeps retrying while the store is unreachable; a result is
    /// never dropped before this.
    pub retry_deadline: Duration,
}

impl StoreConfig {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            s3_endpoint: None,
            s3_ca_file: None,
            s3_region: None,
            s3_access_key_id: None,
            s3_secret_access_key: None,
            s3_session_token: None,
            s3_virtual_hosted_style: false,
            retry_deadline: Duration::from_secs(600),
        }
    }

    /// Fills the S3 settings still unset from the AWS environment variables (or their
    /// `_FILE` variants).
    pub fn with_env(mut self) -> Result<Self, StoreError> {
        fill(&mut self.s3_endpoint, &["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ENDPOINT"])?;
        fill(&mut self.s3_region, &["AWS_REGION", "AWS_DEFAULT_REGION"])?;
        fill(&mut self.s3_access_key_id, &["AWS_ACCESS_KEY_ID"])?;
        fill(&mut self.s3_secret_access_key, &["AWS_SECRET_ACCESS_KEY"])?;
        fill(&mut self.s3_session_token, &["AWS_SESSION_TOKEN"])?;
        if self.s3_ca_file.is_none() {
            self.s3_ca_file =
                std::env::var_os("AWS_CA_BUNDLE").filter(|v| !v.is_empty()).map(PathBuf::from);
        }
        Ok(self)
    }

    /// The secrets, to scrub them from any message that might quote them.
    pub(crate) fn secrets(&self) -> Vec<String> {
        [&self.s3_secret_access_key, &self.s3_session_token]
            .into_iter()
            .flatten()
            .filter(|s| !s.is_empty())
            .cloned()
            .collect()
    }
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |v: &Option<String>| v.as_ref().map(|_| "<redacted>");
        f.debug_struct("StoreConfig")
            .field("url", &self.url)
            .field("s3_endpoint", &self.s3_endpoint.as_deref().map(redact_url))
            .field("s3_ca_file", &self.s3_ca_file)
            .field("s3_region", &self.s3_region)
            .field("s3_access_key_id", &self.s3_access_key_id)
            .field("s3_secret_access_key", &hidden(&self.s3_secret_access_key))
            .field("s3_session_token", &hidden(&self.s3_session_token))
            .field("s3_virtual_hosted_style", &self.s3_virtual_hosted_style)
            .field("retry_deadline", &self.retry_deadline)
            .finish()
    }
}

fn fill(slot: &mut Option<String>, variables: &[&str]) -> Result<(), StoreError> {
    if slot.is_some() {
        return Ok(());
    }
    for variable in variables {
        if let Some(value) = std::env::var(variable).ok().filter(|v| !v.is_empty()) {
            *slot = Some(value);
            return Ok(());
        }
        let file_variable = format!("{variable}_FILE");
        if let Some(path) = std::env::var(&file_variable).ok().filter(|v| !v.is_empty()) {
            let value = std::fs::read_to_string(&path).map_err(|source| {
                StoreError::CredentialFile { variable: file_variable, path, source }
            })?;
            *slot = Some(value.trim().to_string());
            return Ok(());
        }
    }
    Ok(())
}

/// The backend a URL names.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Location {
    Local(std::path::PathBuf),
    S3 { bucket: String, prefix: String },
    Memory,
}

pub(crate) fn parse_location(url: &str) -> Result<Location, StoreError> {
    let invalid =
        |reason: &str| StoreError::InvalidUrl { url: redact_url(url), reason: reason.to_string() };
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(invalid("no bucket name (expected s3://bucket/prefix)"));
        }
        return Ok(Location::S3 {
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
        });
    }
    if let Some(path) = url.strip_prefix("file://") {
        if !path.starts_with('/') {
            return Err(invalid("a file:// URL needs an absolute path (file:///abs/path)"));
        }
        return Ok(Location::Local(path.into()));
    }
    if url == "memory://" || url == "memory:" {
        return Ok(Location::Memory);
    }
    if url.contains("://") {
        return Err(invalid("unknown scheme (expected file://, s3:// or a plain path)"));
    }
    if url.is_empty() {
        return Err(invalid("empty"));
    }
    Ok(Location::Local(url.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_choose_the_backend() {
        assert_eq!(parse_location("file:///tmp/x").unwrap(), Location::Local("/tmp/x".into()));
        assert_eq!(parse_location("results").unwrap(), Location::Local("results".into()));
        assert_eq!(
            parse_location("s3://bucket/a/b/").unwrap(),
            Location::S3 { bucket: "bucket".into(), prefix: "a/b".into() }
        );
        assert_eq!(
            parse_location("s3://bucket").unwrap(),
            Location::S3 { bucket: "bucket".into(), prefix: "".into() }
        );
        assert!(parse_location("file://relative").is_err());
        assert!(parse_location("gs://b").is_err());
    }

    #[test]
    fn debug_output_hides_secrets() {
        let config = StoreConfig {
            s3_secret_access_key: Some("very-secret".into()),
            s3_endpoint: Some("http://u:pw@h:9000".into()),
            ..StoreConfig::new("s3://b")
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("very-secret") && !shown.contains("pw@"), "{shown}");
    }
}
