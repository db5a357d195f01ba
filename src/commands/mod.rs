pub mod coordinator;
pub mod errors;
pub mod evaluate;
pub mod judge_worker;
pub mod metrics;
pub mod report;
pub mod run;
pub mod worker;
