//! A process's resources: figures from `/proc` (Linux) and the open-files limit.

#![allow(dead_code)] // each example uses its part

use std::{fs, io, time::Duration};

/// Raises this process's open-files soft limit to its hard limit (children inherit it) and
/// returns the new limit.
///
/// # Errors
///
/// The hard limit is below `needed` (raise `ulimit -Hn`), or the system call failed.
pub fn raise_open_files(needed: libc::rlim_t) -> io::Result<libc::rlim_t> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable `rlimit`.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if limit.rlim_max < needed {
        let max = limit.rlim_max;
        let msg =
            format!("{needed} open files needed, the hard limit is {max}: raise `ulimit -Hn`");
        return Err(io::Error::other(msg));
    }
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: `limit` is a valid `rlimit`, within the hard limit.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(limit.rlim_cur)
}

/// A field of `/proc/PID/status` in KiB: `VmRSS` (resident memory), `VmHWM` (its peak).
///
/// # Errors
///
/// No such process, or no such field.
pub fn status_kib(pid: u32, field: &str) -> io::Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let value = status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'));
    let kib = value.and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok());
    kib.ok_or_else(|| io::Error::other(format!("no {field} in /proc/{pid}/status")))
}

/// A process's resident memory, CPU time and write system calls, from `/proc`.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    /// Resident memory in bytes: `VmRSS` of `/proc/PID/status`.
    pub rss: u64,
    /// User and system CPU time: `utime + stime` of `/proc/PID/stat`.
    pub cpu: Duration,
    /// Write system calls (`write`, `writev`, ...): `syscw` of `/proc/PID/io`.
    pub writes: u64,
}

/// The [`Usage`] of process `pid` now.
///
/// # Errors
///
/// No such process, or a file of `/proc/PID` that reads other than expected.
pub fn usage(pid: u32) -> io::Result<Usage> {
    let bad = |what: &str| io::Error::other(format!("{what} in /proc/{pid}"));
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The fields after the command name, from the state (field 3): utime is 14, stime 15.
    let (_, fields) = stat
        .rsplit_once(')')
        .ok_or_else(|| bad("no command in stat"))?;
    let fields: Vec<&str> = fields.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
    let ticks = ticks(11)
        .zip(ticks(12))
        .map(|(user, system)| user + system)
        .ok_or_else(|| bad("no utime or stime in stat"))?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let io = fs::read_to_string(format!("/proc/{pid}/io"))?;
    let writes = io
        .lines()
        .find_map(|line| line.strip_prefix("syscw:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| bad("no syscw in io"))?;
    Ok(Usage {
        rss: status_kib(pid, "VmRSS")? * 1024,
        cpu: Duration::from_nanos(ticks * 1_000_000_000 / hz),
        writes,
    })
}

/// The load averages over 1, 5 and 15 minutes, as `/proc/loadavg` gives them; empty where
/// there is no such file.
pub fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
