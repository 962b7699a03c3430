//! Process values from `/proc/self` for the `process_*` families (the set Linkerd's proxy
//! exports through kubert-prometheus-process): memory, threads, file descriptors and their
//! limit. Read on the admin thread at scrape time; a file that cannot be read gives zeros.

/// Values from `/proc/self/status` (bytes and a count).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Status {
    /// `VmRSS`: resident set size.
    pub resident_bytes: u64,
    /// `VmSize`: virtual memory size.
    pub virtual_bytes: u64,
    /// `Threads`.
    pub threads: u64,
}

/// Parses `/proc/<pid>/status` text.
pub fn parse_status(text: &str) -> Status {
    let kb = |v: &str| {
        v.trim()
            .trim_end_matches("kB")
            .trim()
            .parse::<u64>()
            .map_or(0, |n| n * 1024)
    };
    let mut s = Status::default();
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("VmRSS:") {
            s.resident_bytes = kb(v);
        } else if let Some(v) = line.strip_prefix("VmSize:") {
            s.virtual_bytes = kb(v);
        } else if let Some(v) = line.strip_prefix("Threads:") {
            s.threads = v.trim().parse().unwrap_or(0);
        }
    }
    s
}

/// Parses the soft `Max open files` limit from `/proc/<pid>/limits` text (`unlimited`:
/// `u64::MAX`).
pub fn parse_max_fds(text: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next())
        .map_or(0, |soft| {
            if soft == "unlimited" {
                u64::MAX
            } else {
                soft.parse().unwrap_or(0)
            }
        })
}

/// This process's `/proc/self/status` values.
pub fn status() -> Status {
    std::fs::read_to_string("/proc/self/status")
        .map(|t| parse_status(&t))
        .unwrap_or_default()
}

/// This process's soft limit on open file descriptors.
pub fn max_fds() -> u64 {
    std::fs::read_to_string("/proc/self/limits")
        .map(|t| parse_max_fds(&t))
        .unwrap_or(0)
}

/// Open file descriptors of this process.
pub fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let s = parse_status(
            "Name:\tsidewire\nVmSize:\t  123456 kB\nVmRSS:\t    2048 kB\nThreads:\t5\n",
        );
        assert_eq!(
            s,
            Status {
                resident_bytes: 2048 * 1024,
                virtual_bytes: 123456 * 1024,
                threads: 5
            }
        );
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max open files            1048576              1048576              files     \n";
        assert_eq!(parse_max_fds(limits), 1048576);
        assert_eq!(
            parse_max_fds("Max open files unlimited unlimited files"),
            u64::MAX
        );
        assert_eq!(parse_max_fds("garbage"), 0);
        // The live files parse.
        assert!(status().threads >= 1);
        assert!(max_fds() > 0);
    }
}
