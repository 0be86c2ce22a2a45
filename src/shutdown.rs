//! One shutdown signal for the whole process: SIGINT, SIGTERM, the console `stop` and fatal
//! errors all trigger it, and every long-running task waits on it (mini-redis style).

use tokio::sync::watch;

#[derive(Clone)]
pub struct Shutdown {
    tx: watch::Sender<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    pub fn new() -> Self {
        Shutdown {
            tx: watch::channel(false).0,
        }
    }

    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }

    pub fn is_triggered(&self) -> bool {
        *self.tx.borrow()
    }

    /// Resolves once shutdown has been triggered.
    pub async fn wait(&self) {
        let mut rx = self.tx.subscribe();
        let _ = rx.wait_for(|stop| *stop).await;
    }

    /// Triggers shutdown on SIGINT or SIGTERM.
    pub fn listen_for_signals(&self) -> anyhow::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut int = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        let this = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = int.recv() => tracing::info!("SIGINT received, stopping"),
                _ = term.recv() => tracing::info!("SIGTERM received, stopping"),
            }
            this.trigger();
        });
        Ok(())
    }
}

/// Lines typed on stdin (a panel's console box), read on a plain thread: a blocked read must not
/// hold up runtime shutdown. End of input just ends the stream; the process keeps running.
/// None when the reader thread cannot be started.
pub fn console_lines() -> Option<tokio::sync::mpsc::UnboundedReceiver<String>> {
    use std::io::BufRead;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let spawned = std::thread::Builder::new()
        .name("console".into())
        .spawn(move || {
            for line in std::io::stdin().lock().lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    match spawned {
        Ok(_) => Some(rx),
        Err(e) => {
            tracing::warn!(error = %e, "console unavailable");
            None
        }
    }
}
