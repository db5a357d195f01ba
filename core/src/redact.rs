//! Secrets policy for anything shown to people (logs, errors, `Debug`): a URL keeps its
//! user name but loses its password. The queue (AMQP URLs) and the store (S3 endpoints)
//! both show URLs through this one function.

/// `scheme://user:secret@host/…` → `scheme://user@host/…`, for logs and errors. A URL
/// without userinfo (or without `://`) comes back unchanged.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}@{host}{path}")
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_password_when_shown() {
        assert_eq!(redact_url("amqp://herd:s3cret@mq:5672/%2f"), "amqp://herd@mq:5672/%2f");
        assert_eq!(redact_url("amqps://mq.example/vh"), "amqps://mq.example/vh");
        assert_eq!(redact_url("http://u:pw@h:9000"), "http://u@h:9000");
        assert_eq!(redact_url("results/today"), "results/today");
    }
}
