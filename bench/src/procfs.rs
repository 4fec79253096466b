//! What `/proc` says about a process: CPU time (also per thread), resident
//! memory, open files.

use std::collections::BTreeMap;
use std::fs;
use std::io;

use serde::Serialize;

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`), the unit of `/proc/PID/stat` times.
pub fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// User + system CPU time of `pid` (all its threads) in clock ticks: fields 14
/// and 15 of `/proc/PID/stat`. `pid` 0 means this process.
pub fn cpu_ticks(pid: u32) -> io::Result<u64> {
    let path = if pid == 0 {
        "/proc/self/stat".to_owned()
    } else {
        format!("/proc/{pid}/stat")
    };
    let stat = fs::read_to_string(path)?;
    parse_stat(&stat).map(|(_, ticks)| ticks)
}

/// The command name (field 2) and user + system ticks (fields 14 and 15) of
/// a `/proc/PID/stat` or `/proc/PID/task/TID/stat` line.
fn parse_stat(stat: &str) -> io::Result<(&str, u64)> {
    // The command name may hold spaces and parentheses; it runs from the
    // first '(' to the last ')'.
    let (head, after) = stat
        .rsplit_once(')')
        .ok_or_else(|| io::Error::other("malformed stat"))?;
    let comm = head.split_once('(').map_or("", |(_, comm)| comm);
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3, so field N is fields[N - 3].
    let field = |n: usize| -> io::Result<u64> {
        fields
            .get(n - 3)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| io::Error::other("malformed stat"))
    };
    Ok((comm, field(14)? + field(15)?))
}

/// User + system ticks of every thread of a process at one moment, with the
/// threads' names (`comm`, as `/proc/PID/task/TID/comm` gives it).
#[derive(Debug, Clone, Default)]
pub struct ThreadTicks {
    threads: BTreeMap<u32, (String, u64)>,
}

impl ThreadTicks {
    /// Reads `/proc/PID/task/*/stat`. A thread that exits while the
    /// directory is read is left out; nothing is read for pid 0.
    pub fn read(pid: u32) -> ThreadTicks {
        let mut threads = BTreeMap::new();
        if pid == 0 {
            return ThreadTicks { threads };
        }
        let Ok(dir) = fs::read_dir(format!("/proc/{pid}/task")) else {
            return ThreadTicks { threads };
        };
        for entry in dir.flatten().take(100_000) {
            let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            if let Ok((comm, ticks)) = parse_stat(&stat) {
                threads.insert(tid, (comm.to_owned(), ticks));
            }
        }
        ThreadTicks { threads }
    }

    /// How the CPU time from `self` to `later` was spread over the threads:
    /// each thread's ticks are its ticks at `later` minus those at `self`
    /// (from 0 for a thread that appeared in between); a thread gone by
    /// `later` is left out, as its last ticks are unknown. `None` when the
    /// threads used no tick at all (or none could be read).
    pub fn share_until(&self, later: &ThreadTicks) -> Option<ThreadShare> {
        let mut deltas: Vec<(u32, &str, u64)> = Vec::with_capacity(later.threads.len());
        let mut new_threads = 0;
        for (&tid, (comm, end)) in &later.threads {
            let start = match self.threads.get(&tid) {
                // A lower count means the tid was reused by a new thread.
                Some((_, start)) if start <= end => *start,
                _ => {
                    new_threads += 1;
                    0
                }
            };
            deltas.push((tid, comm, end - start));
        }
        let vanished_threads = self
            .threads
            .keys()
            .filter(|tid| !later.threads.contains_key(tid))
            .count();
        let total_ticks: u64 = deltas.iter().map(|&(_, _, ticks)| ticks).sum();
        if total_ticks == 0 {
            return None;
        }
        // Busiest first; ties by tid, so the order is stable.
        deltas.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
        let busy_threads = deltas.iter().filter(|d| d.2 > 0).count();
        let top: Vec<ThreadTime> = deltas
            .iter()
            .take(4)
            .filter(|d| d.2 > 0)
            .map(|&(tid, comm, ticks)| ThreadTime {
                tid,
                comm: comm.to_owned(),
                ticks,
            })
            .collect();
        let busiest = top[0].clone();
        Some(ThreadShare {
            busiest_pct: 100.0 * busiest.ticks as f64 / total_ticks as f64,
            busiest,
            total_ticks,
            threads: later.threads.len(),
            busy_threads,
            new_threads,
            vanished_threads,
            top,
        })
    }
}

/// One thread's CPU time over an interval.
#[derive(Debug, Clone, Serialize)]
pub struct ThreadTime {
    pub tid: u32,
    pub comm: String,
    /// User + system clock ticks.
    pub ticks: u64,
}

/// The busiest thread's share of a process's CPU time over an interval.
#[derive(Debug, Clone, Serialize)]
pub struct ThreadShare {
    /// The busiest thread's ticks over all threads' ticks, in percent.
    pub busiest_pct: f64,
    pub busiest: ThreadTime,
    /// All threads' ticks over the interval.
    pub total_ticks: u64,
    /// Threads at the end of the interval.
    pub threads: usize,
    /// Threads that used at least one tick.
    pub busy_threads: usize,
    /// Threads that appeared during the interval (counted from 0).
    pub new_threads: usize,
    /// Threads that exited during the interval (their ticks are not counted).
    pub vanished_threads: usize,
    /// The (at most) four busiest threads, busiest first.
    pub top: Vec<ThreadTime>,
}

/// CPU seconds of `pid` (0 = this process).
pub fn cpu_secs(pid: u32) -> f64 {
    cpu_ticks(pid).map_or(0.0, |ticks| ticks as f64 / clock_ticks_per_sec())
}

/// `VmRSS` of `pid` in KiB (the chaos run's reading, which `tests/chaos.rs`
/// compiles on its own, so it lives there).
pub use crate::chaos::process::rss_kib;

/// Number of open file descriptors of `pid`.
pub fn fd_count(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |dir| dir.count())
}

/// Raises this process's soft `RLIMIT_NOFILE` to its hard limit; returns the new soft limit.
pub fn raise_fd_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid rlimit for getrlimit/setrlimit to read and write.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
            }
        }
    }
    limit.rlim_cur
}

/// CPU seconds the whole machine has been busy (all cores; `/proc/stat`,
/// everything but idle and iowait), and the part of it spent in interrupts
/// and softirqs (where loopback TCP does much of its work, charged to no process).
pub fn system_busy_secs() -> (f64, f64) {
    let Ok(stat) = fs::read_to_string("/proc/stat") else {
        return (0.0, 0.0);
    };
    let Some(cpu) = stat.lines().next() else {
        return (0.0, 0.0);
    };
    let ticks: Vec<u64> = cpu
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    let at = |i: usize| ticks.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal (guest time is in user).
    let busy = at(0) + at(1) + at(2) + at(5) + at(6) + at(7);
    let irq = at(5) + at(6);
    let hz = clock_ticks_per_sec();
    (busy as f64 / hz, irq as f64 / hz)
}

/// A CPU reading of the server (in all and per thread), of this generator
/// and of the whole machine, for the time in between.
#[derive(Debug, Clone)]
pub struct CpuMark {
    server: f64,
    server_threads: ThreadTicks,
    client: f64,
    system: f64,
    irq: f64,
    at: std::time::Instant,
}

impl CpuMark {
    /// Reads them all now.
    pub fn now(server_pid: u32) -> Self {
        let server_threads = ThreadTicks::read(server_pid);
        let (system, irq) = system_busy_secs();
        CpuMark {
            server: cpu_secs(server_pid),
            server_threads,
            client: cpu_secs(0),
            system,
            irq,
            at: std::time::Instant::now(),
        }
    }

    /// CPU used from `self` to `later`.
    pub fn until(&self, later: &CpuMark) -> CpuSpan {
        CpuSpan {
            server_secs: later.server - self.server,
            client_secs: later.client - self.client,
            system_secs: later.system - self.system,
            irq_secs: later.irq - self.irq,
            wall_secs: later.at.duration_since(self.at).as_secs_f64(),
            server_threads: self.server_threads.share_until(&later.server_threads),
        }
    }
}

/// CPU used over a measured interval.
#[derive(Debug, Clone)]
pub struct CpuSpan {
    pub server_secs: f64,
    pub client_secs: f64,
    pub system_secs: f64,
    pub irq_secs: f64,
    pub wall_secs: f64,
    /// How the server's CPU time was spread over its threads.
    pub server_threads: Option<ThreadShare>,
}

impl CpuSpan {
    /// Server CPU µs per unit of work (`count` messages, cycles, …).
    pub fn server_us_per(&self, count: u64) -> f64 {
        if count == 0 {
            0.0
        } else {
            self.server_secs * 1e6 / count as f64
        }
    }

    /// Server CPU as a percentage of one core.
    pub fn server_pct(&self) -> f64 {
        100.0 * self.server_secs / self.wall_secs.max(1e-9)
    }

    /// Generator CPU as a percentage of one core.
    pub fn client_pct(&self) -> f64 {
        100.0 * self.client_secs / self.wall_secs.max(1e-9)
    }

    /// Interrupt and softirq CPU of the whole machine (mostly loopback TCP
    /// here), as a percentage of one core.
    pub fn irq_pct(&self) -> f64 {
        100.0 * self.irq_secs / self.wall_secs.max(1e-9)
    }

    /// CPU used by processes other than the server and the generator, as a
    /// percentage of one core: a noise indicator on a shared machine.
    pub fn other_pct(&self) -> f64 {
        let other = self.system_secs - self.irq_secs - self.server_secs - self.client_secs;
        100.0 * other.max(0.0) / self.wall_secs.max(1e-9)
    }
}

/// The system's `TcpExt ListenOverflows` counter: connections dropped because
/// a listener's accept queue was full (on this machine, only the bench's).
pub fn listen_overflows() -> u64 {
    let Ok(netstat) = fs::read_to_string("/proc/net/netstat") else {
        return 0;
    };
    let mut lines = netstat.lines().filter(|line| line.starts_with("TcpExt:"));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == "ListenOverflows")
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or(0)
}
