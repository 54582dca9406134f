//! A process seen through /proc (Linux) and util-linux `prlimit`: memory high-water mark, CPU
//! time, open descriptors, and the descriptor limit of a running process.

use std::process::Command;

/// A `/proc/<pid>/status` field in KiB (`VmRSS`, `VmHWM`); 0 if unreadable.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// User plus system CPU time of the process so far, in seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/pid/stat");
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')').expect("stat has a command name") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 of `rest`.
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    ticks as f64 / clock_ticks_per_second()
}

fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// File descriptors the process has open.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// The soft and hard `RLIMIT_NOFILE` of a process.
pub fn nofile(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("read limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("Max open files line");
    let numbers: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (numbers[0], numbers[1])
}

/// Sets the soft `RLIMIT_NOFILE` of a running process (`prlimit --pid`), keeping the hard one.
pub fn set_nofile(pid: u32, soft: u64) {
    let (_, hard) = nofile(pid);
    let status = Command::new("prlimit")
        .arg(format!("--pid={pid}"))
        .arg(format!("--nofile={soft}:{hard}"))
        .status()
        .expect("run prlimit (util-linux)");
    assert!(
        status.success(),
        "prlimit --pid {pid} --nofile={soft} failed"
    );
    assert_eq!(nofile(pid).0, soft, "the limit did not change");
}

/// Raises this test process's soft descriptor limit to at least `want` (children inherit it);
/// panics when the hard limit is lower.
pub fn ensure_nofile(want: u64) {
    let me = std::process::id();
    let (soft, hard) = nofile(me);
    if soft >= want {
        return;
    }
    assert!(
        hard >= want,
        "this test needs {want} file descriptors; the hard limit is {hard} (raise it, e.g. ulimit -Hn)"
    );
    set_nofile(me, want);
}

/// Connections waiting in the accept queue of the IPv4 socket listening on `port`
/// (`/proc/net/tcp`: a LISTEN socket's rx_queue); 0 if there is none.
pub fn accept_queue(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let local = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .find_map(|line| {
            let mut fields = line.split_whitespace();
            let address = fields.nth(1)?;
            let state = fields.nth(1)?;
            let queues = fields.next()?;
            if state != "0A" || !address.ends_with(&local) {
                return None;
            }
            usize::from_str_radix(queues.split(':').nth(1)?, 16).ok()
        })
        .unwrap_or(0)
}
