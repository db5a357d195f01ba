//! Prometheus metrics of every herd role
