//! Work that must not take CPU from searches: copying, shipping and opening a shard that
//! moves to another node. It runs on a thread of its own at a lower scheduling priority
//! (nice 10 on Linux, where niceness is per thread), so that on a busy node the kernel
//! runs searches first and the move takes the spare cycles; elsewhere it is a plain
//! thread. The thread exits when the work is done, so no pooled thread keeps the lower
//! priority (raising it back needs a privilege an unprivileged node lacks).

use tokio::sync::oneshot;

/// The niceness of background threads (0 is normal, 19 the lowest priority).
pub const BACKGROUND_NICE: i32 = 10;

/// Run `work` on a new low-priority thread named `name`; the receiver gets its result
/// (it errs if the thread could not start or `work` panicked).
pub fn spawn<T, F>(name: &str, work: F) -> oneshot::Receiver<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    let started = std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            lower_priority();
            let _ = tx.send(work());
        });
    if let Err(err) = started {
        tracing::warn!(%err, "could not start a background thread");
    }
    rx
}

/// Lower the calling thread's scheduling priority to [`BACKGROUND_NICE`] (Linux; a no-op
/// elsewhere). For threads that exit when their work is done (see the module doc).
#[cfg(target_os = "linux")]
pub(crate) fn lower_priority() {
    // SAFETY: setpriority only reads its arguments; on Linux, PRIO_PROCESS with who = 0
    // is the calling thread.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, BACKGROUND_NICE) };
    if rc != 0 {
        tracing::debug!("could not lower a background thread's priority");
    }
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn lower_priority() {}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn runs_the_work_and_returns_its_result() {
        let got = super::spawn("test", || 6 * 7).await.unwrap();
        assert_eq!(got, 42);
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_thread_runs_at_a_lower_priority() {
        // SAFETY: getpriority only reads its arguments (who = 0: this thread on Linux).
        let nice = super::spawn("test", || unsafe {
            libc::getpriority(libc::PRIO_PROCESS, 0)
        })
        .await
        .unwrap();
        assert_eq!(nice, super::BACKGROUND_NICE);
    }
}
