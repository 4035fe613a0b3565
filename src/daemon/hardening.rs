//! Process hardening at start, before any secret is read: no core dumps and no ptrace by
//! other users (PR_SET_DUMPABLE=0, RLIMIT_CORE=0), and memory locked where the OS allows.

use nix::sys::mman::{mlockall, MlockAllFlags};
use nix::sys::prctl;
use nix::sys::resource::{getrlimit, setrlimit, Resource, RLIM_INFINITY};

/// CAP_IPC_LOCK's bit in /proc/self/status `CapEff`.
const CAP_IPC_LOCK: u32 = 14;

/// What took effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hardening {
    /// The memory-locking outcome.
    pub memory: MemoryLock,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemoryLock {
    /// mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT) succeeded: nothing is swapped out.
    /// MCL_ONFAULT locks each page when it is first touched rather than every page of every
    /// mapping at once, so a thread's 2 MiB stack costs what the thread uses of it.
    Locked,
    /// `[security] lock_memory = false`.
    Disabled,
    /// Not possible here; why.
    Unavailable(String),
}

#[derive(Debug, thiserror::Error)]
pub enum HardeningError {
    #[error("cannot turn core dumps off: {0}")]
    CoreDumps(String),
}

/// Applies the hardening and logs what took effect. Core dumps that cannot be turned off
/// stop start-up; memory that cannot be locked is a warning.
pub fn apply(lock_memory: bool) -> Result<Hardening, HardeningError> {
    prctl::set_dumpable(false)
        .map_err(|e| HardeningError::CoreDumps(format!("PR_SET_DUMPABLE: {e}")))?;
    core_limit_zero()?;
    let memory = if lock_memory {
        lock_all_memory()
    } else {
        MemoryLock::Disabled
    };
    match &memory {
        MemoryLock::Locked => tracing::info!(
            "process hardening: core dumps off (PR_SET_DUMPABLE=0, RLIMIT_CORE=0), memory locked (mlockall)"
        ),
        MemoryLock::Disabled => tracing::info!(
            "process hardening: core dumps off (PR_SET_DUMPABLE=0, RLIMIT_CORE=0); memory not locked ([security] lock_memory = false)"
        ),
        MemoryLock::Unavailable(why) => tracing::warn!(
            "process hardening: core dumps off (PR_SET_DUMPABLE=0, RLIMIT_CORE=0); memory NOT locked: {why}"
        ),
    }
    Ok(Hardening { memory })
}

/// glibc malloc arenas keyorchd allows itself. glibc's default is 8 per core, and every
/// thread of the blocking pool that touches the store ends up with its own arena, each
/// keeping freed memory: at 1,000,000 keys a walk through every key left 458 MiB resident
/// with the default and 364 MiB with 2 (docs/benchmarks.md, "Scale"), and with
/// `MCL_ONFAULT` 208 MiB with 2 and 190 MiB with 1, at the same speed. Under `mlockall`
/// every resident page is locked, so this is memory the host loses.
pub const MALLOC_ARENAS: i32 = 1;

/// Caps glibc's malloc arenas at [`MALLOC_ARENAS`] unless `MALLOC_ARENA_MAX` is set (the
/// operator's choice wins). Call first, before any thread starts.
pub fn limit_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    // SAFETY: mallopt only sets a glibc tunable; it is called before any other thread
    // exists, and M_ARENA_MAX takes any positive value.
    #[allow(unsafe_code)]
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS);
    }
}

/// RLIMIT_CORE = 0 (soft and hard). If a sandbox forbids setrlimit, a limit that is
/// already 0 (systemd's LimitCORE=0) is as good.
fn core_limit_zero() -> Result<(), HardeningError> {
    match setrlimit(Resource::RLIMIT_CORE, 0, 0) {
        Ok(()) => Ok(()),
        Err(e) => match getrlimit(Resource::RLIMIT_CORE) {
            Ok((0, _)) => Ok(()),
            _ => Err(HardeningError::CoreDumps(format!("RLIMIT_CORE: {e}"))),
        },
    }
}

/// Locks current and future memory, but only where that cannot make later allocations
/// fail: with CAP_IPC_LOCK or an unlimited RLIMIT_MEMLOCK. Under a finite limit,
/// MCL_FUTURE would turn growth past the limit into allocation failures, so keyorchd
/// declines and says how to allow it (`LimitMEMLOCK=infinity`).
fn lock_all_memory() -> MemoryLock {
    let privileged = has_ipc_lock();
    if !privileged {
        match getrlimit(Resource::RLIMIT_MEMLOCK) {
            Ok((soft, _)) if soft == RLIM_INFINITY => {}
            Ok((soft, hard)) if hard == RLIM_INFINITY => {
                if let Err(e) = setrlimit(Resource::RLIMIT_MEMLOCK, RLIM_INFINITY, hard) {
                    return MemoryLock::Unavailable(format!(
                        "RLIMIT_MEMLOCK is {soft} bytes and cannot be raised ({e})"
                    ));
                }
            }
            Ok((soft, _)) => {
                return MemoryLock::Unavailable(format!(
                    "RLIMIT_MEMLOCK is {soft} bytes and the process lacks CAP_IPC_LOCK; \
                     allow it with LimitMEMLOCK=infinity (systemd) or ulimit -l unlimited"
                ))
            }
            Err(e) => return MemoryLock::Unavailable(format!("RLIMIT_MEMLOCK: {e}")),
        }
    }
    let flags = MlockAllFlags::MCL_CURRENT | MlockAllFlags::MCL_FUTURE;
    let on_fault = flags | MlockAllFlags::from_bits_retain(libc::MCL_ONFAULT);
    match mlockall(on_fault) {
        Ok(()) => MemoryLock::Locked,
        // Linux before 4.4 has no MCL_ONFAULT: lock every page of every mapping then.
        Err(nix::errno::Errno::EINVAL) => match mlockall(flags) {
            Ok(()) => MemoryLock::Locked,
            Err(e) => MemoryLock::Unavailable(format!("mlockall: {e}")),
        },
        Err(e) => MemoryLock::Unavailable(format!("mlockall: {e}")),
    }
}

/// Whether the effective capabilities include CAP_IPC_LOCK (read from /proc).
fn has_ipc_lock() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << CAP_IPC_LOCK) != 0)
}
