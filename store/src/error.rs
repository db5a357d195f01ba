use std::time::Duration;

/// What can go wrong with the result store. Every message names the store (its URL without
/// credentials) and, for operations, the key.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid store URL {url}: {reason}")]
    InvalidUrl { url: String, reason: String },

    #[error("cannot read {variable} file {path}: {source}")]
    CredentialFile { variable: String, path: String, source: std::io::Error },

    #[error("cannot read the CA file {path} for store {store}: {message}")]
    CaFile { store: String, path: String, message: String },

    #[error("cannot open store {store}: {message}")]
    Open { store: String, message: String },

    #[error("invalid key {key:?}: {reason}")]
    InvalidKey { key: String, reason: String },

    /// A failure that retrying does not fix (access denied, bad request, disk error).
    #[error("{operation} {key} in {store} failed: {message}")]
    Operation { store: String, key: String, operation: &'static str, message: String },

    /// Transient failures went on past the retry deadline.
    #[error("{store} stayed unavailable for {waited:?} while trying to {operation} {key}; last error: {last_error}")]
    Unavailable {
        store: String,
        key: String,
        operation: &'static str,
        waited: Duration,
        last_error: String,
    },

    #[error("{key} in {store} does not hold the expected JSON: {source}")]
    Decode { store: String, key: String, source: serde_json::Error },

    #[error("cannot encode {key} as JSON: {source}")]
    Encode { key: String, source: serde_json::Error },
}
