//! What `/proc` says about a process: CPU time, resident memory, open files.

use std::fs;
use std::io;

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
    // The command name (field 2) may hold spaces; count from the last ')'.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| io::Error::other("malformed stat"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3, so field N is fields[N - 3].
    let field = |n: usize| -> io::Result<u64> {
        fields
            .get(n - 3)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| io::Error::other("malformed stat"))
    };
    Ok(field(14)? + field(15)?)
}

/// CPU seconds of `pid` (0 = this process).
pub fn cpu_secs(pid: u32) -> f64 {
    cpu_ticks(pid).map_or(0.0, |ticks| ticks as f64 / clock_ticks_per_sec())
}

/// `VmRSS` of `pid` in KiB.
pub fn rss_kib(pid: u32) -> io::Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .ok_or_else(|| io::Error::other("no VmRSS"))
}

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

/// A CPU reading of the server, of this generator and of the whole machine,
/// for the time in between.
#[derive(Debug, Clone, Copy)]
pub struct CpuMark {
    server: f64,
    client: f64,
    system: f64,
    irq: f64,
    at: std::time::Instant,
}

impl CpuMark {
    /// Reads both now.
    pub fn now(server_pid: u32) -> Self {
        let (system, irq) = system_busy_secs();
        CpuMark {
            server: cpu_secs(server_pid),
            client: cpu_secs(0),
            system,
            irq,
            at: std::time::Instant::now(),
        }
    }

    /// CPU used from `self` to `later`: (server secs, client secs, wall secs).
    pub fn until(&self, later: &CpuMark) -> CpuSpan {
        CpuSpan {
            server_secs: later.server - self.server,
            client_secs: later.client - self.client,
            system_secs: later.system - self.system,
            irq_secs: later.irq - self.irq,
            wall_secs: later.at.duration_since(self.at).as_secs_f64(),
        }
    }
}

/// CPU used over a measured interval.
#[derive(Debug, Clone, Copy)]
pub struct CpuSpan {
    pub server_secs: f64,
    pub client_secs: f64,
    pub system_secs: f64,
    pub irq_secs: f64,
    pub wall_secs: f64,
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
