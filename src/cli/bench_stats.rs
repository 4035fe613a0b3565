//! Benchmark arithmetic: what each worker measured, and the per-level summary
//! (operations per second and nearest-rank p50/p99 latency) built from it or from the
//! timed calls of one sequential side of an interleaved run.

use std::time::{Duration, Instant};

/// What one worker (a task or a thread) measured during a level's timed phase.
#[derive(Debug, Clone)]
pub struct WorkerSample {
    /// Latency of each completed operation, in nanoseconds.
    pub latencies_ns: Vec<u64>,
    pub started: Instant,
    pub finished: Instant,
}

/// One level's result for one side (keyorchd or raw).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub ops: u64,
    pub elapsed: Duration,
    pub ops_per_sec: f64,
    pub p50: Duration,
    pub p99: Duration,
}

impl Summary {
    /// Merges the workers of one level; elapsed spans the first start to the last finish.
    pub fn from_workers(workers: Vec<WorkerSample>) -> Summary {
        let started = workers.iter().map(|w| w.started).min();
        let finished = workers.iter().map(|w| w.finished).max();
        let elapsed = match (started, finished) {
            (Some(s), Some(f)) => f.saturating_duration_since(s),
            _ => Duration::ZERO,
        };
        let mut all: Vec<u64> = workers.into_iter().flat_map(|w| w.latencies_ns).collect();
        all.sort_unstable();
        let ops = all.len() as u64;
        let secs = elapsed.as_secs_f64();
        Summary {
            ops,
            elapsed,
            ops_per_sec: if secs > 0.0 { ops as f64 / secs } else { 0.0 },
            p50: Duration::from_nanos(percentile(&all, 50.0)),
            p99: Duration::from_nanos(percentile(&all, 99.0)),
        }
    }
}

impl Summary {
    /// One side of an interleaved sequential run (calls of both sides alternate, so wall
    /// time belongs to neither): elapsed is the sum of this side's call latencies, and
    /// ops/s is calls per second of that busy time (1 / mean latency).
    pub fn from_sequential(mut latencies_ns: Vec<u64>) -> Summary {
        latencies_ns.sort_unstable();
        let ops = latencies_ns.len() as u64;
        let elapsed = Duration::from_nanos(latencies_ns.iter().sum());
        let secs = elapsed.as_secs_f64();
        Summary {
            ops,
            elapsed,
            ops_per_sec: if secs > 0.0 { ops as f64 / secs } else { 0.0 },
            p50: Duration::from_nanos(percentile(&latencies_ns, 50.0)),
            p99: Duration::from_nanos(percentile(&latencies_ns, 99.0)),
        }
    }
}

/// `ours` relative to `baseline`: ops/s divided by the baseline's (higher is better; 1 is
/// parity). `None` when the baseline measured nothing.
pub fn throughput_ratio(ours: &Summary, baseline: &Summary) -> Option<f64> {
    (baseline.ops_per_sec > 0.0).then(|| ours.ops_per_sec / baseline.ops_per_sec)
}

/// `ours` relative to `baseline` by median latency: the baseline's p50 divided by ours, so
/// that, like [`throughput_ratio`], 1 is parity and less is slower. `None` when a p50 is 0.
pub fn median_ratio(ours: &Summary, baseline: &Summary) -> Option<f64> {
    (!ours.p50.is_zero() && !baseline.p50.is_zero())
        .then(|| baseline.p50.as_secs_f64() / ours.p50.as_secs_f64())
}

/// Nearest-rank percentile of sorted values (0 when empty).
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// A latency for the table, in milliseconds with microsecond resolution.
pub fn millis(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

/// A latency for JSON, in microseconds.
pub fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&[7], 99.0), 7);
        assert_eq!(percentile(&[], 50.0), 0);
        assert_eq!(percentile(&[1, 2, 3], 50.0), 2);
    }

    #[test]
    fn summary_merges_workers() {
        let t0 = Instant::now();
        let w = |lat: Vec<u64>, end_ms: u64| WorkerSample {
            latencies_ns: lat,
            started: t0,
            finished: t0 + Duration::from_millis(end_ms),
        };
        let s = Summary::from_workers(vec![w(vec![3, 1], 500), w(vec![2, 4], 1000)]);
        assert_eq!(s.ops, 4);
        assert_eq!(s.elapsed, Duration::from_secs(1));
        assert!((s.ops_per_sec - 4.0).abs() < 1e-9);
        assert_eq!(s.p50, Duration::from_nanos(2));
        assert_eq!(s.p99, Duration::from_nanos(4));
        assert_eq!(millis(Duration::from_micros(1500)), "1.500 ms");
    }

    #[test]
    fn sequential_summary_counts_busy_time_only() {
        let ms = 1_000_000;
        let s = Summary::from_sequential(vec![30 * ms, 10 * ms, 20 * ms, 40 * ms]);
        assert_eq!(s.ops, 4);
        assert_eq!(s.elapsed, Duration::from_millis(100));
        assert!((s.ops_per_sec - 40.0).abs() < 1e-9);
        assert_eq!(s.p50, Duration::from_millis(20));
        assert_eq!(s.p99, Duration::from_millis(40));
        let empty = Summary::from_sequential(Vec::new());
        assert_eq!((empty.ops, empty.ops_per_sec), (0, 0.0));
    }

    #[test]
    fn ratios_are_one_at_parity_and_below_one_when_slower() {
        let ms = 1_000_000;
        let raw = Summary::from_sequential(vec![10 * ms, 10 * ms]);
        let slow = Summary::from_sequential(vec![20 * ms, 20 * ms]);
        assert!((throughput_ratio(&raw, &raw).unwrap() - 1.0).abs() < 1e-9);
        assert!((throughput_ratio(&slow, &raw).unwrap() - 0.5).abs() < 1e-9);
        assert!((median_ratio(&slow, &raw).unwrap() - 0.5).abs() < 1e-9);
        let none = Summary::from_sequential(Vec::new());
        assert_eq!(throughput_ratio(&slow, &none), None);
        assert_eq!(median_ratio(&slow, &none), None);
    }
}
