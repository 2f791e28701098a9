//! What the operating system tells about processes: file descriptor
//! limits, resident memory and CPU time (Linux `/proc`).

use rlimit::Resource;
use std::io;

/// Makes sure `needed` file descriptors fit under `RLIMIT_NOFILE`, raising
/// the soft limit up to the hard one if that is enough. Returns the limit
/// in force.
pub fn ensure_fds(needed: u64) -> Result<u64, String> {
    let (soft, hard) = rlimit::getrlimit(Resource::NOFILE).map_err(|e| format!("cannot read RLIMIT_NOFILE: {e}"))?;
    if needed <= soft {
        return Ok(soft);
    }
    if needed <= hard {
        rlimit::setrlimit(Resource::NOFILE, needed, hard)
            .map_err(|e| format!("cannot raise RLIMIT_NOFILE from {soft} to {needed}: {e}"))?;
        return Ok(needed);
    }
    Err(format!(
        "this run needs about {needed} file descriptors but RLIMIT_NOFILE allows {soft} (hard limit {hard}); \
         lower --connections or raise the limit (ulimit -n)"
    ))
}

/// `VmRSS` of a process, in KiB.
pub fn rss_kib(pid: &str) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no VmRSS line"))
}

/// Clock ticks per second in `/proc/PID/stat` (`USER_HZ`, 100 on every
/// Linux architecture that matters here).
const USER_HZ: f64 = 100.0;

/// User plus system CPU time of a process (all its threads), in seconds.
pub fn cpu_seconds(pid: &str) -> io::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may hold spaces and parentheses: fields resume after
    // the last ')'. utime and stime are fields 14 and 15, so the 12th and
    // 13th after it.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "malformed stat"))?;
    let mut fields = after.split_whitespace().skip(11);
    let mut next = || -> io::Result<f64> {
        fields
            .next()
            .and_then(|f| f.parse::<u64>().ok())
            .map(|t| t as f64 / USER_HZ)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "malformed stat"))
    };
    Ok(next()? + next()?)
}

/// The summed resident set of several processes, in KiB.
pub fn rss_kib_sum(pids: &[u32]) -> Result<u64, String> {
    pids.iter()
        .map(|p| rss_kib(&p.to_string()).map_err(|e| format!("cannot read the memory of process {p}: {e}")))
        .sum()
}

/// The summed CPU time of several processes (None if there are none, or one
/// cannot be read).
pub fn cpu_seconds_sum(pids: &[u32]) -> Option<f64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|p| cpu_seconds(&p.to_string()).ok()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process() {
        assert!(rss_kib("self").unwrap() > 0);
        assert!(cpu_seconds("self").unwrap() >= 0.0);
        assert!(ensure_fds(16).is_ok());
        assert!(ensure_fds(u64::MAX / 2).is_err());
    }
}
