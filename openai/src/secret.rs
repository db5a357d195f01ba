//! The API key: read from the environment or a file, hidden from `Debug` and scrubbed from
//! anything a server sends back.

use std::path::Path;

#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// `None` for an empty key (surrounding whitespace, such as a file's newline, dropped).
    pub fn new(key: &str) -> Option<Self> {
        let key = key.trim();
        (!key.is_empty()).then(|| Self(key.to_string()))
    }

    /// The key in `NAME_FILE` (a file's path) or else in `NAME`; `None` when neither is set.
    pub fn from_env(name: &str) -> Result<Option<Self>, String> {
        let file_var = format!("{name}_FILE");
        if let Some(path) = std::env::var_os(&file_var) {
            let path = Path::new(&path);
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("{file_var}={}: {e}", path.display()))?;
            return Self::new(&text)
                .map(Some)
                .ok_or_else(|| format!("{file_var}={}: the file is empty", path.display()));
        }
        Ok(std::env::var(name).ok().and_then(|k| Self::new(&k)))
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    /// `text` with every occurrence of the key replaced.
    pub fn scrub(&self, text: &str) -> String {
        text.replace(&self.0, "<redacted>")
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::ApiKey;

    #[test]
    fn the_key_is_hidden_and_scrubbed() {
        let key = ApiKey::new(" sk-abc123\n").unwrap();
        assert_eq!(key.expose(), "sk-abc123");
        assert!(!format!("{key:?}").contains("abc123"));
        assert_eq!(key.scrub("bad key sk-abc123 given"), "bad key <redacted> given");
        assert!(ApiKey::new(" \n").is_none());
    }

    #[test]
    fn a_key_file_wins_over_the_variable() {
        let dir = std::env::temp_dir().join(format!("herd-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("key");
        std::fs::write(&file, "sk-from-file\n").unwrap();
        std::env::set_var("HERD_TEST_KEY_A", "sk-from-var");
        std::env::set_var("HERD_TEST_KEY_A_FILE", &file);
        assert_eq!(ApiKey::from_env("HERD_TEST_KEY_A").unwrap().unwrap().expose(), "sk-from-file");
        std::env::remove_var("HERD_TEST_KEY_A_FILE");
        assert_eq!(ApiKey::from_env("HERD_TEST_KEY_A").unwrap().unwrap().expose(), "sk-from-var");
        std::env::set_var("HERD_TEST_KEY_A_FILE", dir.join("missing"));
        assert!(ApiKey::from_env("HERD_TEST_KEY_A").unwrap_err().contains("HERD_TEST_KEY_A_FILE"));
        std::env::remove_var("HERD_TEST_KEY_A_FILE");
        std::env::remove_var("HERD_TEST_KEY_A");
        assert_eq!(ApiKey::from_env("HERD_TEST_KEY_A").unwrap(), None);
    }
}
