//! The thread that runs the engine. Inference is synchronous CPU (or GPU) work that holds a
//! core for seconds; on tokio's workers it would stall every task of the process (queue
//! heartbeats, stores, the metrics endpoint). Each worker sends its batches here instead.

use std::sync::mpsc;

use tokio::sync::oneshot;

type Task = Box<dyn FnOnce() + Send>;

/// The engine thread ended (it panicked while running a task, or was shut down).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the engine thread {name} stopped: {reason}")]
pub struct EngineThreadGone {
    pub name: String,
    pub reason: String,
}

/// A dedicated OS thread that runs closures one at a time, in order. Dropping it lets the
/// thread finish its queue and exit.
#[derive(Debug)]
pub struct EngineThread {
    name: String,
    tasks: mpsc::Sender<Task>,
}

impl EngineThread {
    pub fn spawn(name: &str) -> Self {
        let (tasks, inbox) = mpsc::channel::<Task>();
        std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                for task in inbox {
                    task();
                }
            })
            .expect("the OS starts a thread");
        Self { name: name.to_string(), tasks }
    }

    /// Queues `task` and returns at once; the receiver yields its value when it has run.
    /// A panic inside `task` is caught and reported as an error; the thread carries on.
    pub fn submit<R: Send + 'static>(
        &self,
        task: impl FnOnce() -> R + Send + 'static,
    ) -> impl std::future::Future<Output = Result<R, EngineThreadGone>> {
        let (reply, answer) = oneshot::channel();
        let sent = self.tasks.send(Box::new(move || {
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(task));
            let _ = reply.send(outcome.map_err(|panic| panic_message(&panic)));
        }));
        let name = self.name.clone();
        async move {
            if sent.is_err() {
                return Err(EngineThreadGone { name, reason: "it is no longer running".into() });
            }
            match answer.await {
                Ok(Ok(value)) => Ok(value),
                Ok(Err(reason)) => {
                    Err(EngineThreadGone { name, reason: format!("a task panicked: {reason}") })
                }
                Err(_) => Err(EngineThreadGone { name, reason: "it dropped the task".into() }),
            }
        }
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tasks_run_off_the_runtime_in_order_and_a_panic_is_an_error() {
        let thread = EngineThread::spawn("test-engine");
        let caller = std::thread::current().id();
        let first = thread.submit(move || std::thread::current().id() != caller);
        let panics = thread.submit(|| -> u32 { panic!("boom") });
        let after = thread.submit(|| 7);
        assert!(first.await.unwrap(), "the task ran on another thread");
        let err = panics.await.unwrap_err();
        assert!(err.reason.contains("boom"), "{err}");
        assert_eq!(after.await.unwrap(), 7, "the thread survives a panicking task");
    }
}
