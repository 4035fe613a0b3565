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
//! blocking pool, so it never sits in the lane's queue in front of an Encrypt (a lane
//! thread can still wait for a free HSM session that such work holds).
//!
//! A job whose caller has gone (a cancelled request) is dropped unrun. At shutdown the lane
//! finishes what is queued and its threads end ([`Lane::stop`]).

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

type Job = Box<dyn FnOnce() + Send + 'static>;

enum Msg {
    Run(Job),
    Stop,
}

/// The lane's threads are gone or going (keyorchd is shutting down), or the job panicked.
#[derive(Debug)]
pub(crate) struct LaneClosed;

/// A fixed set of threads fed by one queue.
pub(crate) struct Lane {
    jobs: crossbeam_channel::Sender<Msg>,
    /// Kept to drop, at [`Lane::stop`], jobs that no thread will run (their callers then
    /// get [`LaneClosed`] rather than waiting for ever).
    queue: crossbeam_channel::Receiver<Msg>,
    threads: usize,
    exited: crossbeam_channel::Receiver<()>,
    stopping: AtomicBool,
}

impl Lane {
    /// Starts `threads` threads named `keyorch-hsm-<n>`.
    pub(crate) fn start(threads: usize) -> std::io::Result<Lane> {
        let threads = threads.max(1);
        let (jobs, queue) = crossbeam_channel::unbounded::<Msg>();
        let (exit_tx, exited) = crossbeam_channel::unbounded::<()>();
        for n in 0..threads {
            let queue = queue.clone();
            let exit_tx = exit_tx.clone();
            std::thread::Builder::new()
                .name(format!("keyorch-hsm-{n}"))
                .spawn(move || {
                    while let Ok(Msg::Run(job)) = queue.recv() {
                        // A panicking job drops its result sender, so its caller gets an
                        // error; the thread goes on with the next job.
                        let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
                    }
                    let _ = exit_tx.send(());
                })?;
        }
        Ok(Lane {
            jobs,
            queue,
            threads,
            exited,
            stopping: AtomicBool::new(false),
        })
    }

    /// Runs `f` on a lane thread and waits for its result without blocking the executor.
    /// If the caller has gone (its request was cancelled) by the time a thread takes the
    /// job, `f` is dropped unrun. Fails if `f` panicked or the lane is stopping.
    pub(crate) async fn run<T, F>(&self, f: F) -> Result<T, LaneClosed>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        if self.stopping.load(Ordering::Acquire) {
            return Err(LaneClosed);
        }
        let (done, result) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Msg::Run(Box::new(move || {
                if !done.is_closed() {
                    let _ = done.send(f());
                }
            })))
            .map_err(|_| LaneClosed)?;
        result.await.map_err(|_| LaneClosed)
    }

    /// Lets the threads finish the jobs already queued, then stops them; new calls fail
    /// with [`LaneClosed`]. Returns false if a thread was still busy after `wait` (an HSM
    /// call that does not return): the caller may then exit without it.
    pub(crate) fn stop(&self, wait: Duration) -> bool {
        self.stopping.store(true, Ordering::Release);
        for _ in 0..self.threads {
            let _ = self.jobs.send(Msg::Stop);
        }
        let deadline = Instant::now() + wait;
        for _ in 0..self.threads {
            let left = deadline.saturating_duration_since(Instant::now());
            if self.exited.recv_timeout(left).is_err() {
                return false;
            }
        }
        // Calls that raced with the stop: nobody will run them.
        while self.queue.try_recv().is_ok() {}
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;

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
    async fn a_job_whose_caller_has_gone_is_not_run() {
        use std::sync::atomic::AtomicBool;
        use std::sync::Arc;
        use std::task::{Context, Waker};
        let lane = Lane::start(1).unwrap();
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let busy = lane.run(move || gate.recv().is_ok());
        tokio::pin!(busy);
        let mut cx = Context::from_waker(Waker::noop());
        assert!(busy.as_mut().poll(&mut cx).is_pending());
        // Queue a job behind the busy one, then drop its caller.
        let ran = Arc::new(AtomicBool::new(false));
        let flag = ran.clone();
        let mut gone = Box::pin(lane.run(move || flag.store(true, Ordering::SeqCst)));
        assert!(gone.as_mut().poll(&mut cx).is_pending());
        drop(gone);
        release.send(()).unwrap();
        assert!(busy.await.unwrap());
        // A later job runs, so the dropped one has had its turn.
        assert_eq!(lane.run(|| 7).await.unwrap(), 7);
        assert!(!ran.load(Ordering::SeqCst), "the abandoned job ran");
    }

    #[tokio::test]
    async fn stop_finishes_queued_work_then_refuses_and_reports_a_stuck_thread() {
        let lane = Lane::start(2).unwrap();
        assert_eq!(lane.run(|| 1).await.unwrap(), 1);
        assert!(lane.stop(Duration::from_secs(10)));
        assert!(lane.run(|| 2).await.is_err());

        let lane = Lane::start(1).unwrap();
        let (_hold, gate) = std::sync::mpsc::channel::<()>();
        let stuck = lane.run(move || gate.recv());
        tokio::pin!(stuck);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(stuck.as_mut().poll(&mut cx).is_pending());
        // Wait until the thread has taken the job, then it never returns.
        let since = Instant::now();
        while !lane.queue.is_empty() && since.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(!lane.stop(Duration::from_millis(200)));
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
