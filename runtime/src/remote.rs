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
    /// The endpoints a job may name (base URLs); `None`: any (the in-process run, whose jobs
    /// come from its own plan). A distributed worker takes its jobs from a queue, and a job
    /// naming another URL would have it send the run's data and its key there: such a job
    /// is refused.
    pub allowed_endpoints: Option<Vec<String>>,
}

impl Default for RemoteSettings {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(600),
            max_attempts: 8,
            concurrency: 16,
            backoff_initial: Duration::from_secs(1),
            allowed_endpoints: None,
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
        if let Some(allowed) = &settings.allowed_endpoints {
            if !allowed.iter().any(|a| a.trim_end_matches('/') == url.trim_end_matches('/')) {
                let reason = "the job names an endpoint this worker is not allowed to call (start it with --allow-endpoint URL)".to_string();
                return Err(RemoteError::Config { url: url.to_string(), reason });
            }
        }
        let client = settings.client(url, key_variables)?;
        self.by_url.insert(url.to_string(), client.clone());
        Ok(client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_calls_only_the_endpoints_it_is_allowed() {
        let settings = RemoteSettings {
            allowed_endpoints: Some(vec!["http://judge:8000/v1/".into()]),
            ..RemoteSettings::default()
        };
        let mut clients = Clients::default();
        assert!(clients.get(&settings, "http://judge:8000/v1", &[]).is_ok());
        let error = clients.get(&settings, "http://elsewhere/v1", &[]).unwrap_err();
        assert!(error.is_permanent(), "refused, not retried");
        assert!(error.to_string().contains("--allow-endpoint"), "{error}");
        let open = RemoteSettings::default();
        assert!(Clients::default().get(&open, "http://elsewhere/v1", &[]).is_ok());
    }
}
