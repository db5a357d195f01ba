//! S3 settings from the AWS environment variables and `*_FILE` secrets. Its own test binary
//! with one test, because it changes the process environment.

mod support;

use herd_store::{keys, ResultStore, StoreConfig};
use support::*;

#[tokio::test]
async fn s3_settings_come_from_aws_variables_and_secret_files() {
    let server = S3Server::start();
    let secrets = tempfile::tempdir().unwrap();
    let key_file = secrets.path().join("access-key");
    let secret_file = secrets.path().join("secret-key");
    std::fs::write(&key_file, format!("{ACCESS_KEY}\n")).unwrap();
    std::fs::write(&secret_file, format!("{SECRET_KEY}\n")).unwrap();
    for variable in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_ENDPOINT_URL_S3",
        "AWS_ENDPOINT",
    ] {
        std::env::remove_var(variable);
    }
    std::env::set_var("AWS_ENDPOINT_URL", server.endpoint());
    std::env::set_var("AWS_REGION", "us-east-1");
    std::env::set_var("AWS_ACCESS_KEY_ID_FILE", &key_file);
    std::env::set_var("AWS_SECRET_ACCESS_KEY_FILE", &secret_file);

    let config = StoreConfig::new(format!("s3://{BUCKET}/from-env")).with_env().unwrap();
    assert_eq!(config.s3_access_key_id.as_deref(), Some(ACCESS_KEY), "trailing newline trimmed");
    assert_eq!(config.s3_endpoint.as_deref(), Some(server.endpoint().as_str()));
    assert!(!format!("{config:?}").contains(SECRET_KEY));

    let store = ResultStore::open(&config).unwrap();
    store.put_json(&keys::output("r", "smol", 1), &serde_json::json!({"ok": true})).await.unwrap();
    assert!(server.data_dir().join(BUCKET).join("from-env/runs/r/outputs/smol/1.json").is_file());

    // An explicit setting wins over the environment.
    let explicit =
        StoreConfig { s3_region: Some("eu-west-1".into()), ..StoreConfig::new("s3://b") }
            .with_env()
            .unwrap();
    assert_eq!(explicit.s3_region.as_deref(), Some("eu-west-1"));

    // A secret file that cannot be read is an error naming the variable, not a silent skip.
    std::env::remove_var("AWS_ACCESS_KEY_ID_FILE");
    std::env::set_var("AWS_ACCESS_KEY_ID_FILE", secrets.path().join("missing"));
    let err = StoreConfig::new("s3://b").with_env().unwrap_err();
    assert!(err.to_string().contains("AWS_ACCESS_KEY_ID_FILE"), "{err}");
}
