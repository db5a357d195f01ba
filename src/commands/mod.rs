pub mod coordinator;
pub mod errors;
pub mod judge_worker;
pub mod metrics;
pub mod report;
pub mod worker;
