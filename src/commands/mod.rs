pub mod coordinator;
pub mod judge_worker;
pub mod worker;
