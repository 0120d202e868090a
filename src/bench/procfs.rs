//! A process's CPU time and peak resident memory: another process's from `/proc/<pid>/stat`
//! and `/proc/<pid>/status`, this process's own from `getrusage(RUSAGE_SELF)`.
//!
//! Linux only, as the daemon is. The parsers are pure and take the files' text, so the
//! tests feed them samples.

use std::ops::Sub;
use std::time::Duration;

/// CPU time spent in user space and in the kernel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTime {
    pub user: Duration,
    pub system: Duration,
}

impl CpuTime {
    /// User and system time together.
    pub fn total(&self) -> Duration {
        self.user + self.system
    }
}

impl Sub for CpuTime {
    type Output = CpuTime;

    /// The time spent between two readings (saturating, should a tick round the other way).
    fn sub(self, earlier: CpuTime) -> CpuTime {
        CpuTime {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
        }
    }
}

/// Why a process's figures could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: no {field} in it")]
    Missing { path: String, field: &'static str },
    #[error("getrusage failed: {0}")]
    Rusage(std::io::Error),
}

/// The CPU time process `pid` has used so far (utime and stime of `/proc/<pid>/stat`).
///
/// # Errors
///
/// The process is gone, or the file does not read as documented in proc(5).
pub fn cpu_time_of(pid: u32) -> Result<CpuTime, ProcError> {
    cpu_time_at(format!("/proc/{pid}/stat"))
}

/// The CPU time thread `tid` of this process has used so far
/// (`/proc/self/task/<tid>/stat`), for a benchmark that leaves out a thread of its own.
///
/// # Errors
///
/// The thread is gone, or the file does not read as documented in proc(5).
pub fn thread_cpu_time(tid: u32) -> Result<CpuTime, ProcError> {
    cpu_time_at(format!("/proc/self/task/{tid}/stat"))
}

/// utime and stime of the `stat` file at `path`.
fn cpu_time_at(path: String) -> Result<CpuTime, ProcError> {
    let text = read(&path)?;
    parse_stat(&text, clock_ticks_per_sec()).ok_or(ProcError::Missing {
        path,
        field: "utime and stime",
    })
}

/// The peak resident set size of process `pid` in bytes (`VmHWM` of `/proc/<pid>/status`).
///
/// # Errors
///
/// The process is gone, or the file has no `VmHWM` line.
pub fn peak_rss_of(pid: u32) -> Result<u64, ProcError> {
    let path = format!("/proc/{pid}/status");
    let text = read(&path)?;
    parse_status_kib(&text, "VmHWM")
        .map(|kib| kib * 1024)
        .ok_or(ProcError::Missing {
            path,
            field: "VmHWM",
        })
}

/// The CPU time this process (every thread of it) has used so far.
///
/// # Errors
///
/// `getrusage` fails, which it does not for `RUSAGE_SELF` short of a broken system.
pub fn own_cpu_time() -> Result<CpuTime, ProcError> {
    // SAFETY: `usage` is a plain C struct that getrusage fills in; all zeroes is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid `who` and a pointer to a live, writable rusage.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    if rc != 0 {
        return Err(ProcError::Rusage(std::io::Error::last_os_error()));
    }
    Ok(CpuTime {
        user: timeval(usage.ru_utime),
        system: timeval(usage.ru_stime),
    })
}

/// Clock ticks per second, the unit of `/proc/<pid>/stat`'s times; 100 if sysconf cannot say.
fn clock_ticks_per_sec() -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|t| *t > 0).unwrap_or(100)
}

fn read(path: &str) -> Result<String, ProcError> {
    std::fs::read_to_string(path).map_err(|source| ProcError::Read {
        path: path.to_owned(),
        source,
    })
}

fn timeval(tv: libc::timeval) -> Duration {
    let secs = u64::try_from(tv.tv_sec).unwrap_or(0);
    let micros = u32::try_from(tv.tv_usec).unwrap_or(0);
    Duration::from_secs(secs) + Duration::from_micros(u64::from(micros))
}

/// utime and stime (fields 14 and 15) of a `/proc/<pid>/stat` line. The command name
/// (field 2) is in parentheses and may hold spaces or parentheses itself, so the fields are
/// counted from the last `)`.
fn parse_stat(text: &str, ticks_per_sec: u64) -> Option<CpuTime> {
    let (_, after_name) = text.rsplit_once(')')?;
    // After the name come field 3 (state) onwards: utime is the 12th of those.
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    let ticks = |n: u64| Duration::from_nanos(n.saturating_mul(1_000_000_000) / ticks_per_sec);
    Some(CpuTime {
        user: ticks(utime),
        system: ticks(stime),
    })
}

/// The value in kB of a `Name:   1234 kB` line of `/proc/<pid>/status`.
fn parse_status_kib(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let line = "4242 (op (events) x) S 1 4242 4242 0 -1 4194560 1500 0 0 0 \
                    250 37 0 0 20 0 9 0 123456 1000000 5000 18446744073709551615";
        assert_eq!(
            parse_stat(line, 100),
            Some(CpuTime {
                user: Duration::from_millis(2500),
                system: Duration::from_millis(370),
            })
        );
        assert_eq!(parse_stat("4242 (cut short) S 1 2", 100), None);
    }

    #[test]
    fn status_lines_are_found_by_their_whole_name() {
        let status = "Name:\tx\nVmHWMish:\t1 kB\nVmHWM:\t   20480 kB\nVmRSS:\t 1024 kB\n";
        assert_eq!(parse_status_kib(status, "VmHWM"), Some(20480));
        assert_eq!(parse_status_kib(status, "VmSwap"), None);
    }

    #[test]
    fn this_process_has_used_some_cpu() {
        let own = own_cpu_time().unwrap();
        assert!(own.total() > Duration::ZERO);
        let from_proc = cpu_time_of(std::process::id()).unwrap();
        assert!(from_proc.total() <= own.total() + Duration::from_millis(50));
        assert!(peak_rss_of(std::process::id()).unwrap() > 0);
    }
}
