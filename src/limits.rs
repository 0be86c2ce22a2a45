//! Resource limits that hold however a client behaves: the process's file-descriptor budget, an
//! HTTP server that admits only so many connections that have not sent a request yet (and drops
//! those that stay silent), and the token bucket that rate-limits a session's requests.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit. Returns (before, after).
#[allow(clippy::unnecessary_cast)] // rlim_t is u64 here, not on every platform
pub fn raise_fd_limit() -> std::io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let before = lim.rlim_cur as u64;
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        return Ok((before, raised.rlim_cur as u64));
    }
    Ok((before, before))
}

/// Hands memory freed after a burst (a flood of large messages) back to the system; without
/// it glibc keeps it in its per-thread arenas and RSS stays at the burst's peak.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// A token bucket: `rate` tokens a second, at most `burst` saved up.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(rate: u32, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            rate: f64::from(rate),
            burst,
            tokens: burst,
            last: Instant::now(),
        }
    }

    /// Takes one token if there is one.
    pub fn take(&mut self) -> bool {
        let now = Instant::now();
        let earned = now.duration_since(self.last).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + earned).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Seconds from a setting, as a `Duration` that cannot overflow (saturates at ~136 years).
pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s.min(u64::from(u32::MAX)))
}

/// Milliseconds from a setting, likewise.
pub fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms.min(u64::from(u32::MAX) * 1000))
}

/// The client's address, as the HTTP server saw it (what `warp::addr::remote` gives under
/// warp's own server).
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// `warp::addr::remote()` for routes served by [`serve`].
pub fn remote()
-> impl warp::Filter<Extract = (Option<SocketAddr>,), Error = std::convert::Infallible> + Clone {
    use warp::Filter;
    warp::ext::optional::<PeerAddr>().map(|p: Option<PeerAddr>| p.map(|p| p.0))
}

/// How the HTTP server admits connections.
#[derive(Debug, Clone, Copy)]
pub struct Admission {
    /// Connections that have not sent a request yet, at most; beyond it the oldest such one is
    /// closed to make room (so a flood of silent connections cannot lock everyone out).
    pub max_silent: usize,
    /// A connection that sends no request within this time is closed.
    pub first_request_timeout: Duration,
}

/// What happened to connections, for the metrics.
pub trait AdmissionEvents: Send + Sync + 'static {
    /// A silent connection was closed: `"timeout"` or `"evicted"`.
    fn dropped(&self, why: &'static str);
}

struct Silent {
    cap: usize,
    next: AtomicU64,
    waiting: Mutex<BTreeMap<u64, Arc<Notify>>>,
}

impl Silent {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<Notify>>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a new connection; returns its id, its eviction signal and whether an older
    /// one had to go.
    fn admit(&self) -> (u64, Arc<Notify>, bool) {
        let id = self.next.fetch_add(1, Ordering::SeqCst);
        let kick = Arc::new(Notify::new());
        let mut waiting = self.lock();
        let mut evicted = false;
        while waiting.len() >= self.cap.max(1) {
            if let Some((_, victim)) = waiting.pop_first() {
                victim.notify_one();
                evicted = true;
            }
        }
        waiting.insert(id, kick.clone());
        (id, kick, evicted)
    }

    fn spoke(&self, id: u64) {
        self.lock().remove(&id);
    }
}

/// Removes a connection from the silent set however its task ends.
struct SilentGuard {
    silent: Arc<Silent>,
    id: u64,
}

impl Drop for SilentGuard {
    fn drop(&mut self) {
        self.silent.spoke(self.id);
    }
}

pub type Routes = warp::filters::BoxedFilter<(Box<dyn warp::Reply>,)>;

/// Serves `routes` on `listener` until `shutdown`, then lets open requests finish. Like warp's
/// own server (HTTP/1 and 2, upgrades for the link socket), plus [`Admission`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    routes: Routes,
    admission: Admission,
    events: Arc<dyn AdmissionEvents>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let silent = Arc::new(Silent {
        cap: admission.max_silent,
        next: AtomicU64::new(0),
        waiting: Mutex::new(BTreeMap::new()),
    });
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors (or a connection reset before accept): wait a
                    // little instead of spinning; the silent ones time out meanwhile.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let (id, kick, evicted) = silent.admit();
        if evicted {
            events.dropped("evicted");
        }
        let guard = SilentGuard {
            silent: silent.clone(),
            id,
        };
        let spoken = Arc::new(AtomicBool::new(false));
        let service = {
            let spoken = spoken.clone();
            let silent = silent.clone();
            let filtered = warp::service(routes.clone());
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                if !spoken.swap(true, Ordering::SeqCst) {
                    silent.spoke(id);
                }
                req.extensions_mut().insert(PeerAddr(addr));
                // An upgrade (the link socket) is finished by its route with its own settings.
                if req.headers().contains_key(hyper::header::UPGRADE) {
                    let on = hyper::upgrade::on(&mut req);
                    req.extensions_mut()
                        .insert(crate::controller::ws::UpgradeSlot::new(on));
                }
                let mut filtered = filtered.clone();
                async move { tower_service::Service::call(&mut filtered, req).await }
            })
        };
        let watcher = graceful.watcher();
        let events = events.clone();
        let timeout = admission.first_request_timeout;
        tokio::spawn(async move {
            let _guard = guard;
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            let conn = watcher.watch(conn);
            let silence = async {
                tokio::time::sleep(timeout).await;
                if spoken.load(Ordering::SeqCst) {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                result = conn => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "HTTP connection ended with an error");
                    }
                }
                _ = kick.notified() => {}
                _ = silence => events.dropped("timeout"),
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_allows_a_burst_then_refuses() {
        let mut b = TokenBucket::new(1, 3);
        assert!(b.take() && b.take() && b.take());
        assert!(!b.take());
    }

    #[test]
    fn huge_second_counts_do_not_overflow() {
        assert!(secs(u64::MAX) > Duration::from_secs(1 << 31));
        assert!(millis(u64::MAX) > Duration::from_secs(1 << 31));
        let _ = Instant::now() + secs(u64::MAX);
    }

    #[test]
    fn the_oldest_silent_connection_makes_room() {
        let s = Silent {
            cap: 2,
            next: AtomicU64::new(0),
            waiting: Mutex::new(BTreeMap::new()),
        };
        let (a, _, e1) = s.admit();
        let (_b, _, e2) = s.admit();
        assert!(!e1 && !e2);
        let (_c, _, e3) = s.admit();
        assert!(e3);
        assert!(!s.lock().contains_key(&a));
        assert_eq!(s.lock().len(), 2);
    }
}
