//! What benchmarks report for a process: CPU-seconds (user + system, from /proc/<pid>/stat) and
//! peak resident memory (VmHWM from /proc/<pid>/status). Read while the process runs; the
//! kernel keeps the high-water mark, so no sampling is needed.

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: f64,
    pub peak_rss_bytes: u64,
}

/// Stats of a running process, or None when it is gone.
pub fn process_stats(pid: u32) -> Option<ProcessStats> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some(ProcessStats {
        cpu_seconds: cpu_seconds(&stat, clock_ticks())?,
        peak_rss_bytes: peak_rss(&status)?,
    })
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// utime + stime (fields 14 and 15, counted after the parenthesised command name).
fn cpu_seconds(stat: &str, ticks: f64) -> Option<f64> {
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state).
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / ticks)
}

fn peak_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_seconds_are_user_plus_system_ticks_even_with_spaces_in_the_name() {
        let stat = "1234 (kube controller) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 150 0 0 20 0 12 0 100 0 0";
        assert_eq!(cpu_seconds(stat, 100.0), Some(4.0));
    }

    #[test]
    fn peak_rss_reads_vmhwm_in_kib() {
        let status = "Name:\tetcd\nVmPeak:\t  100 kB\nVmHWM:\t   2048 kB\nVmRSS:\t 1024 kB\n";
        assert_eq!(peak_rss(status), Some(2 * 1024 * 1024));
    }

    #[test]
    fn this_process_has_stats() {
        let s = process_stats(std::process::id()).expect("own stats");
        assert!(s.peak_rss_bytes > 0);
    }
}
