//! CPU time of keyorchd and of this process over a bench level, to report CPU per call on
//! each side. On a small host, client and daemon share the cores, so their CPU per call,
//! not only ops/s, says where a gain can come from (docs/benchmarks.md, "CPU budget").

use std::path::Path;
use std::time::Duration;

/// Whose CPU is counted: keyorchd's process id, learnt from the socket's peer credentials.
#[derive(Debug, Clone, Copy)]
pub struct CpuClock {
    daemon_pid: Option<i32>,
}

/// CPU time (user + system) used so far; `None` where it could not be read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuSample {
    pub daemon: Option<Duration>,
    pub client: Option<Duration>,
}

/// CPU per call over one level.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuPerOp {
    pub daemon: Option<Duration>,
    pub client: Option<Duration>,
}

impl CpuClock {
    /// Asks the kernel who listens on `socket` (SO_PEERCRED of a short connection). With
    /// no answer, keyorchd's CPU is reported as unknown rather than guessed.
    pub async fn for_daemon(socket: &Path) -> CpuClock {
        let daemon_pid = match tokio::net::UnixStream::connect(socket).await {
            Ok(stream) => stream.peer_cred().ok().and_then(|c| c.pid()),
            Err(_) => None,
        };
        CpuClock { daemon_pid }
    }

    pub fn sample(&self) -> CpuSample {
        CpuSample {
            daemon: self
                .daemon_pid
                .and_then(|pid| process_cpu(&format!("/proc/{pid}/stat"))),
            client: own_cpu(),
        }
    }
}

impl CpuSample {
    /// CPU per call between `self` and a later sample, over `ops` calls.
    pub fn per_op(&self, later: &CpuSample, ops: u64) -> CpuPerOp {
        let per = |a: Option<Duration>, b: Option<Duration>| match (a, b) {
            (Some(a), Some(b)) if ops > 0 && b >= a => {
                u64::try_from((b - a).as_nanos() / u128::from(ops))
                    .ok()
                    .map(Duration::from_nanos)
            }
            _ => None,
        };
        CpuPerOp {
            daemon: per(self.daemon, later.daemon),
            client: per(self.client, later.client),
        }
    }
}

/// utime + stime of a process from `/proc/<pid>/stat` (fields 14 and 15, in clock ticks).
fn process_cpu(path: &str) -> Option<Duration> {
    let text = std::fs::read_to_string(path).ok()?;
    parse_stat_cpu(&text, clock_ticks_per_sec()?)
}

fn parse_stat_cpu(stat: &str, ticks_per_sec: u64) -> Option<Duration> {
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // after_name starts at field 3 (state); utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let ticks = utime.checked_add(stime)?;
    Some(Duration::from_nanos(
        ticks.checked_mul(1_000_000_000)? / ticks_per_sec.max(1),
    ))
}

fn clock_ticks_per_sec() -> Option<u64> {
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok()??;
    u64::try_from(ticks).ok().filter(|t| *t > 0)
}

/// This process's user + system CPU time (getrusage: microsecond resolution).
fn own_cpu() -> Option<Duration> {
    use nix::sys::resource::{getrusage, UsageWho};
    use nix::sys::time::TimeValLike;
    let usage = getrusage(UsageWho::RUSAGE_SELF).ok()?;
    let micros = usage.user_time().num_microseconds() + usage.system_time().num_microseconds();
    u64::try_from(micros).ok().map(Duration::from_micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_spaces_in_the_name_parse() {
        let line = "4242 (tokio rt) S 1 4242 4242 0 -1 4194560 1 0 0 0 250 75 0 0 20 0 9 0 1 1 1";
        assert_eq!(parse_stat_cpu(line, 100), Some(Duration::from_millis(3250)));
        assert_eq!(parse_stat_cpu("garbage", 100), None);
        assert_eq!(parse_stat_cpu("1 (x) S 1 2", 100), None);
    }

    #[test]
    fn own_cpu_grows_with_work_and_reads_the_same_as_proc() {
        let before = own_cpu().expect("getrusage");
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_millis(50) {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        let after = own_cpu().expect("getrusage");
        assert!(after > before, "{before:?} -> {after:?}");
        let proc_self = process_cpu("/proc/self/stat").expect("/proc/self/stat");
        // /proc counts in clock ticks (10 ms here): the two agree to within a few ticks.
        let diff = proc_self.abs_diff(after);
        assert!(
            diff < Duration::from_millis(100),
            "{proc_self:?} vs {after:?}"
        );
    }

    #[test]
    fn per_op_divides_the_difference_and_refuses_what_it_cannot_know() {
        let a = CpuSample {
            daemon: Some(Duration::from_millis(100)),
            client: Some(Duration::from_millis(10)),
        };
        let b = CpuSample {
            daemon: Some(Duration::from_millis(1100)),
            client: None,
        };
        let per = a.per_op(&b, 20_000);
        assert_eq!(per.daemon, Some(Duration::from_micros(50)));
        assert_eq!(per.client, None);
        assert_eq!(a.per_op(&b, 0).daemon, None);
        assert_eq!(b.per_op(&a, 10).daemon, None);
    }
}
