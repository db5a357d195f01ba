//! The coordinator: plans a run, publishes jobs, aggregates results
