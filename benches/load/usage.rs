//! What a process uses, read from `/proc`: resident memory and CPU time.

use std::time::Instant;

/// Clock ticks per second of `/proc/PID/stat` (USER_HZ, 100 on every Linux architecture natter targets).
const TICKS_PER_SECOND: f64 = 100.0;

/// Resident memory of a process in KiB (`VmRSS` of `/proc/PID/status`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// User plus system CPU time of a process, in clock ticks (`/proc/PID/stat` fields 14 and 15).
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Measures a process's CPU use over a stretch of time, as a percentage of one core.
pub struct CpuMeter {
    pid: Option<u32>,
    ticks: Option<u64>,
    started: Instant,
}

impl CpuMeter {
    pub fn start(pid: Option<u32>) -> CpuMeter {
        CpuMeter {
            pid,
            ticks: pid.and_then(cpu_ticks),
            started: Instant::now(),
        }
    }

    pub fn percent(&self) -> Option<f64> {
        let now = cpu_ticks(self.pid?)?;
        let seconds = (now.checked_sub(self.ticks?)?) as f64 / TICKS_PER_SECOND;
        Some(100.0 * seconds / self.started.elapsed().as_secs_f64())
    }
}
