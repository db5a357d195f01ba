//! How a herd process runs and stops: its tokio runtime, and the signals that stop it —
//! SIGTERM (Kubernetes stopping a pod) or SIGINT (Ctrl-C). The first signal asks for a clean
//! stop; a second SIGINT or SIGTERM during it ends the process at once.

use std::fmt;

/// The runtime every command runs on: two tokio threads (inference runs on its own thread).
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?)
}

/// Which signal asked the process to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    Terminate,
    Interrupt,
}

impl StopSignal {
    /// The exit status a shell gives a process this signal killed (128 + its number), which
    /// a cleanly stopped process also returns, so scripts see that it did not finish.
    pub fn exit_code(self) -> u8 {
        match self {
            StopSignal::Interrupt => 130,
            StopSignal::Terminate => 143,
        }
    }
}

impl fmt::Display for StopSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StopSignal::Terminate => "SIGTERM",
            StopSignal::Interrupt => "SIGINT",
        })
    }
}

/// Resolves with the first SIGTERM or SIGINT; after it, a second one exits the process.
pub async fn stop_signal() -> StopSignal {
    let first = next_signal().await;
    tracing::info!("{first}: stopping");
    tokio::spawn(async {
        let second = next_signal().await;
        eprintln!("herd: {second} again: exiting at once");
        std::process::exit(i32::from(second.exit_code()));
    });
    first
}

async fn next_signal() -> StopSignal {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => tokio::select! {
                _ = terminate.recv() => StopSignal::Terminate,
                _ = tokio::signal::ctrl_c() => StopSignal::Interrupt,
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only SIGINT stops herd");
                let _ = tokio::signal::ctrl_c().await;
                StopSignal::Interrupt
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        StopSignal::Interrupt
    }
}

/// The error of a command that a signal stopped before it finished; `main` exits with the
/// signal's code.
#[derive(Debug)]
pub struct Interrupted {
    pub signal: StopSignal,
    /// What the user can do next, e.g. how to resume.
    pub what_is_kept: String,
}

impl fmt::Display for Interrupted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "stopped by {} before the run finished; {}", self.signal, self.what_is_kept)
    }
}

impl std::error::Error for Interrupted {}
