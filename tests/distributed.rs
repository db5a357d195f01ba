//! The distributed roles end to end: `herd coordinator`, `herd worker` and
//! `herd judge-worker` as separate processes over the real RabbitMQ (127.0.0.1:5672) and a
//! real S3 server (s3s-fs), both set up by scripts/test-services.sh.
//!
//! `cargo test --release --test distributed` runs them all. Shared helpers (services,
//! processes, metrics) are in distributed/common.rs.

#[path = "../store/tests/support/mod.rs"]
mod s3;

#[path = "distributed/common.rs"]
mod common;

#[path = "distributed/roles.rs"]
mod roles;

#[path = "distributed/faults.rs"]
mod faults;

#[path = "distributed/forged.rs"]
mod forged;
