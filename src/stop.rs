//! The server's stop signal as its connections see it: checked on every wait for the price of
//! one atomic load.
//!
//! A [`CancellationToken`](tokio_util::sync::CancellationToken) is the right thing to hand a
//! server, but waiting on one costs shared locks: `cancelled()` takes the token's mutex to check
//! it, and the future it returns takes the token's waiter-list lock when it is first polled and
//! again when it is dropped. A connection waits once or twice per message, so every message paid
//! for three round trips through locks that every connection on every thread shares.
//!
//! [`StopSignal`] keeps the stage in an atomic, and each connection registers one waker for its
//! whole life ([`StopSignal::watch`]): the lock is taken when a connection opens and closes, and
//! when the signal is raised (once or twice in a server's life), never per message.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;
use slab::Slab;

/// How far a server's shutdown has gone (while it serves, no stage is reached). The stages
/// only ever advance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub(crate) enum Stage {
    /// Shutdown was asked for: finish the message in hand, take no new one.
    Shutdown = 1,
    /// The grace period is over: stop even in the middle of a write.
    Cut = 2,
}

/// A stage many connections wait on. See the module documentation.
#[derive(Default)]
pub(crate) struct StopSignal {
    /// 0 while serving, then the last [`Stage`] raised.
    stage: AtomicU8,
    waiters: Mutex<Slab<Arc<AtomicWaker>>>,
}

impl StopSignal {
    /// Advances to `stage` (never back) and wakes every watcher.
    pub(crate) fn raise(&self, stage: Stage) {
        self.stage.fetch_max(stage as u8, Ordering::SeqCst);
        for (_, waker) in self.waiters().iter() {
            waker.wake();
        }
    }

    /// Whether `stage` has been reached.
    pub(crate) fn reached(&self, stage: Stage) -> bool {
        self.stage.load(Ordering::SeqCst) >= stage as u8
    }

    /// Registers a watcher, for one connection's life.
    pub(crate) fn watch(self: &Arc<Self>) -> Watch {
        let waker = Arc::new(AtomicWaker::new());
        let key = self.waiters().insert(waker.clone());
        Watch { signal: self.clone(), key, waker }
    }

    fn waiters(&self) -> MutexGuard<'_, Slab<Arc<AtomicWaker>>> {
        // Nothing panics while holding the lock; a poisoned one is still consistent.
        self.waiters.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One connection's registration with a [`StopSignal`]; unregisters when dropped.
pub(crate) struct Watch {
    signal: Arc<StopSignal>,
    key: usize,
    waker: Arc<AtomicWaker>,
}

impl Watch {
    /// Ready once `stage` is reached; otherwise the task in `cx` is woken when the signal is
    /// raised.
    pub(crate) fn poll_reached(&self, stage: Stage, cx: &mut Context<'_>) -> Poll<()> {
        if self.signal.reached(stage) {
            return Poll::Ready(());
        }
        // Register, then look again: a raise between the two is seen by the second look, and
        // one after it finds the waker registered.
        self.waker.register(cx.waker());
        if self.signal.reached(stage) { Poll::Ready(()) } else { Poll::Pending }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.signal.waiters().remove(self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_raise_wakes_every_watcher_at_its_stage() {
        let signal = Arc::new(StopSignal::default());
        let mut tasks = Vec::new();
        for i in 0..8 {
            let watch = signal.watch();
            let stage = if i % 2 == 0 { Stage::Shutdown } else { Stage::Cut };
            tasks.push(tokio::spawn(async move {
                std::future::poll_fn(|cx| watch.poll_reached(stage, cx)).await;
                stage
            }));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(tasks.iter().all(|t| !t.is_finished()), "nothing is raised yet");
        signal.raise(Stage::Shutdown);
        tokio::time::sleep(Duration::from_millis(20)).await;
        for (i, t) in tasks.iter().enumerate() {
            assert_eq!(t.is_finished(), i % 2 == 0, "watcher {i} after Shutdown");
        }
        signal.raise(Stage::Cut);
        for t in tasks {
            tokio::time::timeout(Duration::from_secs(5), t).await.expect("woken").expect("ran");
        }
        // Every watcher dropped its registration.
        assert!(signal.waiters().is_empty());
    }

    #[test]
    fn stages_only_advance() {
        let signal = StopSignal::default();
        signal.raise(Stage::Cut);
        signal.raise(Stage::Shutdown);
        assert!(signal.reached(Stage::Cut));
    }
}
