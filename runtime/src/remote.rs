//! Models served elsewhere, over an OpenAI-compatible API: how they are called, shared by
//! the generation and judge roles.

use std::collections::HashMap;
use std::time::Duration;

use herd_openai::{ApiKey, ClientConfig, OpenAiClient, RemoteError};

/// How models served elsewhere (remote generators and judges) are called.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteSettings {
    /// Per attempt.
    pub timeout: Duration,
    /// Tries per answer, the first included.
    pub max_attempts: u32,
    /// Requests in flight per endpoint.
    pub concurrency: usize,
    /// The first retry's wait (doubling, with jitter, up to a minute).
    pub backoff_initial: Duration,
}

impl Default for RemoteSettings {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(600),
            max_attempts: 8,
            concurrency: 16,
            backoff_initial: Duration::from_secs(1),
        }
    }
}

impl RemoteSettings {
    /// A client for `url`, its key from the first of `key_variables` that is set (each
    /// `NAME_FILE`, a file's path, before `NAME`).
    pub fn client(&self, url: &str, key_variables: &[&str]) -> Result<OpenAiClient, RemoteError> {
        let mut api_key = None;
        for variable in key_variables {
            api_key = ApiKey::from_env(variable)
                .map_err(|reason| RemoteError::Config { url: url.to_string(), reason })?;
            if api_key.is_some() {
                break;
            }
        }
        OpenAiClient::new(ClientConfig {
            api_key,
            timeout: self.timeout,
            max_attempts: self.max_attempts.max(1),
            concurrency: self.concurrency.max(1),
            backoff_initial: self.backoff_initial,
            ..ClientConfig::new(url)
        })
    }
}

/// Clients by endpoint URL, made once per loop.
#[derive(Debug, Default)]
pub struct Clients {
    by_url: HashMap<String, OpenAiClient>,
}

impl Clients {
    pub fn get(
        &mut self,
        settings: &RemoteSettings,
        url: &str,
        key_variables: &[&str],
    ) -> Result<OpenAiClient, RemoteError> {
        if let Some(client) = self.by_url.get(url) {
            return Ok(client.clone());
        }
        let client = settings.client(url, key_variables)?;
        self.by_url.insert(url.to_string(), client.clone());
        Ok(client)
    }
}
