//! Result storage: a local folder or S3-compatible object storage
