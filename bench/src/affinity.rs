//! CPU affinity: `--server-cpus LIST` for the server under test and
//! `--client-cpus LIST` for this generator.
//!
//! A list is what `taskset -c` and `/sys/devices/system/cpu/online` use:
//! `0-7`, `8-15`, `0,2,4-6`. Every CPU named must be online and allowed to
//! this process when it starts. The generator pins itself (every thread it
//! has, and so every thread and `idle-worker` process it starts later); the
//! server is pinned in its child process between fork and exec. A server
//! started while the generator is pinned but without `--server-cpus` gets the
//! CPUs the bench itself started with, not the generator's.

use std::collections::BTreeSet;
use std::fmt;
use std::fs;
use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Highest CPU number a `cpu_set_t` holds, plus one.
const MAX_CPUS: usize = libc::CPU_SETSIZE as usize;

/// A set of CPU numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuSet(BTreeSet<usize>);

impl CpuSet {
    /// Parses a CPU list (`0-7`, `8-15`, `0,2,4-6`): comma-separated CPU
    /// numbers and inclusive ranges, nothing empty, every range ascending.
    pub fn parse(list: &str) -> Result<CpuSet, String> {
        let mut cpus = BTreeSet::new();
        for part in list.trim().split(',') {
            let part = part.trim();
            if part.is_empty() {
                return Err("an empty entry".to_owned());
            }
            let number = |text: &str| -> Result<usize, String> {
                let text = text.trim();
                if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(format!("{text:?} is not a CPU number"));
                }
                match text.parse::<usize>() {
                    Ok(cpu) if cpu < MAX_CPUS => Ok(cpu),
                    _ => Err(format!(
                        "CPU {text} is beyond the {MAX_CPUS} a CPU set holds"
                    )),
                }
            };
            let (first, last) = match part.split_once('-') {
                Some((first, last)) => (number(first)?, number(last)?),
                None => {
                    let cpu = number(part)?;
                    (cpu, cpu)
                }
            };
            if first > last {
                return Err(format!("the range {part} runs backwards"));
            }
            cpus.extend(first..=last);
        }
        Ok(CpuSet(cpus))
    }

    /// The CPUs the calling thread may run on (`sched_getaffinity`).
    pub fn current() -> io::Result<CpuSet> {
        // SAFETY: an all-zero cpu_set_t is a valid, empty set, and the size
        // passed is its own.
        let set = unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
                return Err(io::Error::last_os_error());
            }
            set
        };
        Ok(CpuSet(
            (0..MAX_CPUS)
                // SAFETY: `cpu` is below CPU_SETSIZE.
                .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
                .collect(),
        ))
    }

    /// The machine's online CPUs (`/sys/devices/system/cpu/online`).
    fn online() -> Option<CpuSet> {
        let text = fs::read_to_string("/sys/devices/system/cpu/online").ok()?;
        CpuSet::parse(text.trim()).ok()
    }

    fn to_raw(&self) -> libc::cpu_set_t {
        // SAFETY: an all-zero cpu_set_t is a valid, empty set; every CPU set
        // is below CPU_SETSIZE (checked by `parse`).
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            for &cpu in &self.0 {
                libc::CPU_SET(cpu, &mut set);
            }
            set
        }
    }
}

/// The canonical list form, ranges collapsed: `0-3,6`.
impl fmt::Display for CpuSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        let mut cpus = self.0.iter().copied().peekable();
        while let Some(first) = cpus.next() {
            let mut last = first;
            while cpus.peek() == Some(&(last + 1)) {
                last += 1;
                cpus.next();
            }
            parts.push(if first == last {
                first.to_string()
            } else {
                format!("{first}-{last}")
            });
        }
        write!(f, "{}", parts.join(","))
    }
}

/// Where the server and the generator may run.
#[derive(Debug, Clone)]
pub struct Pinning {
    /// What this process was allowed when it started.
    original: CpuSet,
    /// `--server-cpus`.
    pub server: Option<CpuSet>,
    /// `--client-cpus`.
    pub client: Option<CpuSet>,
}

impl Pinning {
    /// Parses and checks `--server-cpus` and `--client-cpus`. The error is one
    /// line naming the option and what is wrong with it.
    pub fn from_options(server: Option<&str>, client: Option<&str>) -> Result<Pinning, String> {
        let original = CpuSet::current().map_err(|e| format!("sched_getaffinity: {e}"))?;
        let online = CpuSet::online();
        let check = |option: &str, list: Option<&str>| -> Result<Option<CpuSet>, String> {
            let Some(list) = list else { return Ok(None) };
            let bad = |why: String| {
                format!(
                    "{option} {list:?}: {why} (a CPU list is e.g. 0-7, 8-15 or 0,2,4-6; this machine has CPUs {})",
                    online
                        .as_ref()
                        .map_or_else(|| "?".to_owned(), ToString::to_string)
                )
            };
            let set = CpuSet::parse(list).map_err(bad)?;
            if let Some(online) = &online
                && let Some(cpu) = set.0.iter().find(|cpu| !online.0.contains(cpu))
            {
                return Err(bad(format!("CPU {cpu} does not exist or is offline")));
            }
            if let Some(cpu) = set.0.iter().find(|cpu| !original.0.contains(cpu)) {
                return Err(bad(format!(
                    "CPU {cpu} is not among the CPUs this process may use ({original})"
                )));
            }
            Ok(Some(set))
        };
        Ok(Pinning {
            server: check("--server-cpus", server)?,
            client: check("--client-cpus", client)?,
            original: original.clone(),
        })
    }

    /// The CPUs to give a server process, if it needs any: `--server-cpus`,
    /// or, when only the generator is pinned, what the bench started with
    /// (a child inherits its parent's affinity).
    pub fn server_cpus(&self) -> Option<&CpuSet> {
        self.server
            .as_ref()
            .or_else(|| self.client.as_ref().map(|_| &self.original))
    }

    /// Pins every thread of this process to `--client-cpus` (threads and
    /// processes started later inherit it), and checks that it took.
    pub fn pin_generator(&self) -> io::Result<()> {
        let Some(cpus) = &self.client else {
            return Ok(());
        };
        let raw = cpus.to_raw();
        let mut tids: Vec<libc::pid_t> = fs::read_dir("/proc/self/task")?
            .flatten()
            .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
            .take(10_000)
            .collect();
        if tids.is_empty() {
            tids.push(0);
        }
        for tid in tids {
            // SAFETY: `raw` is a valid cpu_set_t of the size passed.
            let rc = unsafe {
                libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &raw)
            };
            if rc != 0 {
                let error = io::Error::last_os_error();
                // A thread that exited in between is no concern.
                if error.raw_os_error() != Some(libc::ESRCH) {
                    return Err(io::Error::other(format!(
                        "--client-cpus {cpus}: sched_setaffinity: {error}"
                    )));
                }
            }
        }
        let now = CpuSet::current()?;
        if now != *cpus {
            return Err(io::Error::other(format!(
                "--client-cpus {cpus}: the generator runs on CPUs {now} instead"
            )));
        }
        Ok(())
    }
}

/// Has the child `command` starts run on `cpus` only, set between fork and exec.
pub fn pin_child(command: &mut Command, cpus: &CpuSet) {
    let raw = cpus.to_raw();
    // SAFETY: sched_setaffinity is a plain system call, async-signal-safe;
    // the closure only reads its own copy of the set.
    unsafe {
        command.pre_exec(move || {
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &raw) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// The CPUs `pid` may run on, as `/proc/PID/status` lists them.
pub fn allowed_list(pid: u32) -> Option<String> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
        .map(|list| list.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::CpuSet;

    #[test]
    fn lists_parse_and_print() {
        let cases = [
            ("0-7", "0-7"),
            ("8-15", "8-15"),
            ("0,2,4-6", "0,2,4-6"),
            ("3", "3"),
            ("1,0", "0-1"),
            (" 0 - 1 , 3 ", "0-1,3"),
            ("2-2", "2"),
        ];
        for (list, canonical) in cases {
            assert_eq!(
                CpuSet::parse(list).unwrap().to_string(),
                canonical,
                "{list}"
            );
        }
    }

    #[test]
    fn bad_lists_are_refused() {
        for list in [
            "", ",", "0,", "a", "1-", "-1", "3-1", "0-2-4", "1.5", "99999", "+1",
        ] {
            assert!(CpuSet::parse(list).is_err(), "{list:?} accepted");
        }
    }
}
