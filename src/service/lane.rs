//! The crypto lane: a few long-lived threads that run the short symmetric operations
//! (AES-GCM, data keys, HMAC) one after another, off tokio's worker threads.
//!
//! Why not `spawn_blocking` for these: under load, each call there woke one of dozens of
//! pool threads, so every Encrypt paid a thread wake-up and two context switches, and up to
//! sixteen threads fought over SoftHSM2's locks. With a fixed lane the threads take queued
//! calls back to back. Measured on two cores at concurrency 16 (docs/benchmarks.md, "What
//! moved it"): keyorchd's CPU per 4 KiB Encrypt fell from ≈ 69 µs to ≈ 56 µs with one lane
//! thread; a second thread cost ≈ 8 µs per call more in wake-ups, hence the default of one.
//!
//! Slow or rare work (key generation, RSA and ECDSA, installs, store writes) stays on the
//! blocking pool, so it never queues in front of an Encrypt.

use std::panic::AssertUnwindSafe;

type Job = Box<dyn FnOnce() + Send + 'static>;

/// The lane's threads are gone (only while keyorchd shuts down).
#[derive(Debug)]
pub(crate) struct LaneClosed;

/// A fixed set of threads fed by one queue. The threads end when the lane is dropped and
/// the queue is drained.
pub(crate) struct Lane {
    jobs: crossbeam_channel::Sender<Job>,
}

impl Lane {
    /// Starts `threads` threads named `keyorch-hsm-<n>`.
    pub(crate) fn start(threads: usize) -> std::io::Result<Lane> {
        let (jobs, queue) = crossbeam_channel::unbounded::<Job>();
        for n in 0..threads.max(1) {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("keyorch-hsm-{n}"))
                .spawn(move || {
                    for job in queue.iter() {
                        // A panicking job drops its result sender, so its caller gets an
                        // internal error; the thread goes on with the next job.
                        let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
                    }
                })?;
        }
        Ok(Lane { jobs })
    }

    /// Runs `f` on a lane thread and waits for its result without blocking the executor.
    /// Fails only if `f` panicked or the lane is shutting down.
    pub(crate) async fn run<T, F>(&self, f: F) -> Result<T, LaneClosed>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (done, result) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move || {
                let _ = done.send(f());
            }))
            .map_err(|_| LaneClosed)?;
        result.await.map_err(|_| LaneClosed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_jobs_off_the_executor_and_survives_a_panic() {
        let lane = Lane::start(2).unwrap();
        let name = lane
            .run(|| std::thread::current().name().map(str::to_string))
            .await
            .unwrap();
        assert!(
            name.as_deref()
                .is_some_and(|n| n.starts_with("keyorch-hsm-")),
            "{name:?}"
        );
        assert!(lane.run(|| -> u8 { panic!("boom") }).await.is_err());
        // Both threads are still there: two jobs that wait for each other both finish.
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
        let (a, b) = (barrier.clone(), barrier);
        let both = async {
            tokio::join!(
                lane.run(move || a.wait().is_leader()),
                lane.run(move || b.wait().is_leader())
            )
        };
        let (x, y) = tokio::time::timeout(std::time::Duration::from_secs(10), both)
            .await
            .expect("a lane thread died with the panicking job");
        assert_ne!(x.unwrap(), y.unwrap());
    }

    #[tokio::test]
    async fn results_come_back_to_their_callers() {
        let lane = Lane::start(1).unwrap();
        let mut calls = Vec::new();
        for i in 0..100u32 {
            calls.push(lane.run(move || i * 3));
        }
        for (i, call) in calls.into_iter().enumerate() {
            assert_eq!(call.await.unwrap(), i as u32 * 3);
        }
    }
}
