//! Exponential backoff bounded by a deadline, for reconnecting to the broker.

use std::time::Duration;
use tokio::time::Instant;

pub(crate) struct Backoff {
    started: Instant,
    deadline: Duration,
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub(crate) fn new(deadline: Duration) -> Self {
        Self {
            started: Instant::now(),
            deadline,
            next: Duration::from_millis(100),
            max: Duration::from_secs(5),
        }
    }

    /// Sleeps before the next attempt; `Err(waited)` once the deadline has passed.
    pub(crate) async fn wait(&mut self) -> Result<(), Duration> {
        let waited = self.started.elapsed();
        if waited >= self.deadline {
            return Err(waited);
        }
        // Up to 25% jitter so that many workers do not reconnect in lockstep.
        let jitter = self.next.mul_f64(0.25 * pseudo_random_fraction());
        let sleep = (self.next + jitter).min(self.deadline - waited);
        tokio::time::sleep(sleep).await;
        self.next = (self.next * 2).min(self.max);
        Ok(())
    }

    pub(crate) fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

fn pseudo_random_fraction() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    f64::from(nanos % 1000) / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn backoff_doubles_and_stops_at_the_deadline() {
        let mut b = Backoff::new(Duration::from_millis(900));
        let mut sleeps = Vec::new();
        loop {
            let before = Instant::now();
            if b.wait().await.is_err() {
                break;
            }
            sleeps.push(before.elapsed());
        }
        assert!(
            sleeps[0] >= Duration::from_millis(100) && sleeps[0] < Duration::from_millis(200),
            "{sleeps:?}"
        );
        assert!(sleeps[1] >= Duration::from_millis(200), "{sleeps:?}");
        assert!(sleeps[2] >= Duration::from_millis(400), "{sleeps:?}");
        assert!(
            b.elapsed() >= Duration::from_millis(900) && b.elapsed() < Duration::from_millis(1500),
            "{sleeps:?}"
        );
    }
}
