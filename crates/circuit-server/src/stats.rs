//! CPU, memory and uptime of processes, from Linux's `/proc`:
//! `/proc/PID/stat` (utime + stime, start time), `/proc/PID/statm`
//! (resident pages) and `/proc/uptime`.
//!
//! CPU % is measured over a short sample ([`SAMPLE`]): the CPU time each
//! process used between two readings, over the wall time between them, in
//! percent of one CPU (a process busy on two CPUs shows 200 %).

use std::time::{Duration, Instant};

/// The CPU sample each `stats` request takes.
pub const SAMPLE: Duration = Duration::from_millis(circuit_proto::stats::SAMPLE_MS);

/// One reading of one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    /// CPU time used so far (user + system), in clock ticks.
    pub cpu_ticks: u64,
    /// When it started, in clock ticks after boot.
    pub start_ticks: u64,
    /// Resident memory, in bytes.
    pub rss: u64,
}

/// What a sample found for one process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    /// Percent of one CPU over the sample.
    pub cpu: f64,
    /// Resident memory at the end of the sample, bytes.
    pub rss: u64,
    /// Seconds since the process started.
    pub uptime: f64,
}

/// Clock ticks per second and the page size, from the auxiliary vector the
/// kernel gave this process (`AT_CLKTCK`, `AT_PAGESZ`); 100 and 4096 if it
/// cannot be read.
fn sys() -> (u64, u64) {
    static SYS: std::sync::OnceLock<(u64, u64)> = std::sync::OnceLock::new();
    *SYS.get_or_init(|| {
        const AT_PAGESZ: u64 = 6;
        const AT_CLKTCK: u64 = 17;
        let (mut tck, mut page) = (100, 4096);
        if let Ok(aux) = std::fs::read("/proc/self/auxv") {
            let word = std::mem::size_of::<usize>();
            let mut pairs = aux.chunks_exact(2 * word);
            for pair in &mut pairs {
                let get = |b: &[u8]| {
                    let mut w = [0u8; 8];
                    w[..word].copy_from_slice(b);
                    u64::from_ne_bytes(w)
                };
                let (k, v) = (get(&pair[..word]), get(&pair[word..]));
                match k {
                    AT_CLKTCK if v > 0 => tck = v,
                    AT_PAGESZ if v > 0 => page = v,
                    _ => {}
                }
            }
        }
        (tck, page)
    })
}

/// Parses the text of `/proc/PID/stat` and `/proc/PID/statm`.
pub fn parse(stat: &str, statm: &str, page: u64) -> Option<Reading> {
    // The command name (field 2) is in parentheses and may hold anything:
    // the fields that follow start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); utime is field 14, stime 15, starttime 22.
    let field = |n: usize| f.get(n - 3)?.parse::<u64>().ok();
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(Reading {
        cpu_ticks: field(14)? + field(15)?,
        start_ticks: field(22)?,
        rss: pages * page,
    })
}

/// Reads process `pid` now; `None` if it is gone.
pub fn read(pid: u32) -> Option<Reading> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    parse(&stat, &statm, sys().1)
}

/// Seconds since boot.
fn uptime() -> Option<f64> {
    std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Samples `pids` over [`SAMPLE`]: one [`Usage`] per pid, in order; `None`
/// for a pid that is gone (or was replaced by another process) by the end.
pub async fn sample(pids: &[u32]) -> Vec<Option<Usage>> {
    let first: Vec<Option<Reading>> = pids.iter().map(|&p| read(p)).collect();
    let t0 = Instant::now();
    tokio::time::sleep(SAMPLE).await;
    let secs = t0.elapsed().as_secs_f64();
    let (tck, _) = sys();
    let now = uptime();
    pids.iter()
        .zip(first)
        .map(|(&pid, before)| {
            let after = read(pid)?;
            let before = before.filter(|b| b.start_ticks == after.start_ticks)?;
            let used = after.cpu_ticks.saturating_sub(before.cpu_ticks) as f64 / tck as f64;
            Some(Usage {
                cpu: 100.0 * used / secs,
                rss: after.rss,
                uptime: now.map_or(0.0, |n| (n - after.start_ticks as f64 / tck as f64).max(0.0)),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        // A command name with spaces and a ')' in it.
        let stat = "1234 (a b) c) S 1 1234 1234 0 -1 4194304 100 0 0 0 250 50 0 0 20 0 1 0 7777 1000000 300 18446744073709551615";
        let r = parse(stat, "2500 300 200 1 0 100 0\n", 4096).unwrap();
        assert_eq!(
            r,
            Reading {
                cpu_ticks: 300,
                start_ticks: 7777,
                rss: 300 * 4096
            }
        );
        assert!(parse("garbage", "1 2", 4096).is_none());
    }

    #[tokio::test]
    async fn samples_this_process() {
        let me = std::process::id();
        let busy = std::thread::spawn(|| {
            let end = Instant::now() + SAMPLE + Duration::from_millis(50);
            let mut x = 0u64;
            while Instant::now() < end {
                x = x.wrapping_add(1);
            }
            x
        });
        let got = sample(&[me, u32::MAX]).await;
        busy.join().unwrap();
        let u = got[0].expect("this process exists");
        assert!(u.rss > 0 && u.uptime >= 0.0);
        assert!(u.cpu > 20.0, "a busy thread shows: {u:?}");
        assert!(got[1].is_none());
    }
}
