//! Waiting for a stripe without polling: a client whose request found its keys taken
//! watches the table before it tries again, and is woken when any stripe is released or
//! a waiting client leaves the room. Releasing costs one load of the watcher count while
//! nobody waits, which is almost always.

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::futures::Notified;

use super::Fences;

/// A client's watch on the table, taken before it tries the stripes again, so a release
/// between its try and its wait still wakes it.
pub struct Watch<'a> {
    fences: &'a Fences,
    notified: Pin<Box<Notified<'a>>>,
}

impl Fences {
    /// Starts watching for releases.
    pub fn watch(&self) -> Watch<'_> {
        self.watchers.fetch_add(1, Ordering::SeqCst);
        let mut notified = Box::pin(self.released.notified());
        notified.as_mut().enable();
        Watch { fences: self, notified }
    }

    /// Wakes every watcher, if there is one.
    pub(super) fn wake_watchers(&self) {
        if self.watchers.load(Ordering::SeqCst) != 0 {
            self.released.notify_waiters();
        }
    }
}

impl Watch<'_> {
    /// Waits until something was released since the watch began, or `at_most` passed (a
    /// bound, should a wake ever be missed).
    pub async fn released(mut self, at_most: Duration) {
        let _ = tokio::time::timeout(at_most, self.notified.as_mut()).await;
    }
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        self.fences.watchers.fetch_sub(1, Ordering::SeqCst);
    }
}
