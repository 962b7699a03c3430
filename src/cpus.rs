//! How many CPUs this process may use, and whether they are its own: the affinity mask, the
//! machine's online CPUs and the cgroup CPU quota (v1 and v2).
//!
//! `workers = 0` means one worker per usable CPU. The affinity mask alone overcounts in a
//! container: on a 64-CPU node a pod with `limits.cpu: 500m` still sees 64 CPUs in its mask, but
//! the CFS quota lets it run half of one. So the count is the mask's size capped by the quota
//! rounded up, and at least 1 (the same rule as Go's `GOMAXPROCS` in containers and
//! `std::thread::available_parallelism`).
//!
//! Pinning worker *i* to CPU *i* only helps when the CPUs are this process's alone; on a shared
//! node every pod would pin its first worker to the same CPU. `pin_cores = "auto"` pins only
//! when the mask is narrower than the machine (someone chose these CPUs for us: Kubernetes'
//! static CPU manager, `taskset`, a cpuset) and any quota covers the whole mask.
//!
//! Everything here reads files below a root directory (`/` in production), so the tests run
//! the readers on fixture trees (`testdata/cgroup/`).

use std::path::{Path, PathBuf};

use crate::config::PinCores;

/// The CPUs this process may use, as found at start.
#[derive(Debug, Clone, PartialEq)]
pub struct CpuBudget {
    /// CPU ids in the affinity mask, ascending.
    pub affinity: Vec<usize>,
    /// CPUs online on the machine (`/sys/devices/system/cpu/online`); `None` if unreadable.
    pub online: Option<usize>,
    /// The cgroup CPU quota in CPUs (quota ÷ period; the smallest along the cgroup's path);
    /// `None` when unlimited or unreadable.
    pub quota: Option<f64>,
}

impl CpuBudget {
    /// Reads the budget of the running process.
    pub fn current() -> CpuBudget {
        let affinity = core_affinity::get_core_ids()
            .map(|v| {
                let mut ids: Vec<usize> = v.into_iter().map(|c| c.id).collect();
                ids.sort_unstable();
                ids
            })
            .unwrap_or_default();
        CpuBudget::read(Path::new("/"), affinity)
    }

    /// Reads the online CPUs and the quota below `root` (`/` in production) for a process with
    /// the given affinity mask.
    pub fn read(root: &Path, affinity: Vec<usize>) -> CpuBudget {
        let online = std::fs::read_to_string(root.join("sys/devices/system/cpu/online"))
            .ok()
            .and_then(|s| count_cpu_list(s.trim()));
        CpuBudget {
            affinity,
            online,
            quota: cgroup_quota(root),
        }
    }

    /// Workers for `workers = 0`: the mask's size capped by the quota rounded up, at least 1.
    pub fn default_workers(&self) -> usize {
        let mask = self.affinity.len().max(1);
        match self.quota {
            Some(q) => mask.min(q.ceil().max(1.0) as usize),
            None => mask,
        }
    }

    /// Whether the CPUs in the mask are this process's own: the mask is narrower than the
    /// machine and any quota covers every CPU in it.
    pub fn exclusive(&self) -> bool {
        let n = self.affinity.len();
        let narrowed = matches!(self.online, Some(online) if n > 0 && n < online);
        let covered = self.quota.map_or(true, |q| q + 1e-9 >= n as f64);
        narrowed && covered
    }

    /// The CPU worker `i` of `workers` is pinned to under `pin`, or `None` for no pinning.
    pub fn pin_for(&self, pin: PinCores, i: usize) -> Option<usize> {
        let pin = match pin {
            PinCores::Always => true,
            PinCores::Never => false,
            PinCores::Auto => self.exclusive(),
        };
        (pin && !self.affinity.is_empty()).then(|| self.affinity[i % self.affinity.len()])
    }
}

/// Counts the CPUs in a kernel CPU list such as `0-3,8,10-11`. `None` if malformed.
pub fn count_cpu_list(s: &str) -> Option<usize> {
    let mut n = 0;
    for part in s.split(',').filter(|p| !p.is_empty()) {
        n += match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.parse().ok()?, b.parse().ok()?);
                b.checked_sub(a)? + 1
            }
            None => part.parse::<usize>().map(|_| 1).ok()?,
        };
    }
    (n > 0).then_some(n)
}

/// The CPU quota (in CPUs) of the process's cgroup below `root`: cgroup v2's `cpu.max`, or v1's
/// `cpu.cfs_quota_us` ÷ `cpu.cfs_period_us`, taking the smallest limit on the path from the
/// process's cgroup up to the hierarchy's root. `None` when no level has a limit or nothing is
/// readable.
pub fn cgroup_quota(root: &Path) -> Option<f64> {
    let membership = std::fs::read_to_string(root.join("proc/self/cgroup")).ok()?;
    let mut best: Option<f64> = None;
    let mut fold = |q: Option<f64>| {
        if let Some(q) = q {
            best = Some(best.map_or(q, |b| b.min(q)));
        }
    };
    for line in membership.lines() {
        let mut f = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        if id == "0" && controllers.is_empty() {
            // cgroup v2 (unified): where mountinfo says (/sys/fs/cgroup, or
            // /sys/fs/cgroup/unified on hybrid systems), else the usual place. A cgroup
            // namespace makes `path` "/".
            let (base, mount_root) = cgroup_mount(root, "cgroup2", None)
                .unwrap_or_else(|| (root.join("sys/fs/cgroup"), "/".into()));
            fold(walk_up(&base, &strip_root(path, &mount_root), read_v2));
        } else if controllers.split(',').any(|c| c == "cpu") {
            if let Some((mount, mount_root)) = cgroup_mount(root, "cgroup", Some("cpu")) {
                fold(walk_up(&mount, &strip_root(path, &mount_root), read_v1));
            }
        }
    }
    best
}

/// The smallest quota from `base/rel` up to `base`, each level read by `read`.
fn walk_up(base: &Path, rel: &str, read: fn(&Path) -> Option<f64>) -> Option<f64> {
    let mut dir: PathBuf = base.join(rel.trim_start_matches('/'));
    let mut best: Option<f64> = None;
    loop {
        if let Some(q) = read(&dir) {
            best = Some(best.map_or(q, |b| b.min(q)));
        }
        if dir == base || !dir.pop() || !dir.starts_with(base) {
            return best;
        }
    }
}

/// cgroup v2 `cpu.max`: `max 100000` (no limit) or `50000 100000` (half a CPU).
fn read_v2(dir: &Path) -> Option<f64> {
    let s = std::fs::read_to_string(dir.join("cpu.max")).ok()?;
    let mut f = s.split_whitespace();
    let (quota, period) = (f.next()?, f.next()?);
    ratio(quota.parse().ok()?, period.parse().ok()?)
}

/// cgroup v1 `cpu.cfs_quota_us` (-1 = no limit) ÷ `cpu.cfs_period_us`.
fn read_v1(dir: &Path) -> Option<f64> {
    let quota = std::fs::read_to_string(dir.join("cpu.cfs_quota_us")).ok()?;
    let period = std::fs::read_to_string(dir.join("cpu.cfs_period_us")).ok()?;
    ratio(quota.trim().parse().ok()?, period.trim().parse().ok()?)
}

fn ratio(quota: i64, period: i64) -> Option<f64> {
    (quota > 0 && period > 0).then(|| quota as f64 / period as f64)
}

/// `path` (a cgroup path from `/proc/self/cgroup`) relative to the cgroup mounted at a mount
/// point whose root is `mount_root`; "" when it lies outside (the mount's root is then the
/// closest level we can read).
fn strip_root(path: &str, mount_root: &str) -> String {
    Path::new(path)
        .strip_prefix(mount_root)
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The mount point (below `root`) of a cgroup filesystem of type `fstype` (`cgroup2`, or v1's
/// `cgroup` with the `controller` among its options) and the cgroup path mounted there, from
/// `/proc/self/mountinfo`.
fn cgroup_mount(root: &Path, fstype: &str, controller: Option<&str>) -> Option<(PathBuf, String)> {
    let info = std::fs::read_to_string(root.join("proc/self/mountinfo")).ok()?;
    info.lines().find_map(|line| {
        // `id parent major:minor root mount-point options [optional...] - fstype source super`
        let (pre, post) = line.split_once(" - ")?;
        let mut post = post.split_whitespace();
        let (fs, _source, sup) = (post.next()?, post.next()?, post.next()?);
        if fs != fstype || !controller.map_or(true, |c| sup.split(',').any(|o| o == c)) {
            return None;
        }
        let mut pre = pre.split_whitespace();
        let mount_root = pre.nth(3)?.to_string();
        let point = pre.next()?;
        Some((root.join(point.trim_start_matches('/')), mount_root))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testdata/cgroup")
            .join(name)
    }

    fn budget(name: &str, mask: usize) -> CpuBudget {
        CpuBudget::read(&fixture(name), (0..mask).collect())
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(count_cpu_list("0-63"), Some(64));
        assert_eq!(count_cpu_list("0-3,8,10-11"), Some(7));
        assert_eq!(count_cpu_list("5"), Some(1));
        assert_eq!(count_cpu_list(""), None);
        assert_eq!(count_cpu_list("3-1"), None);
        assert_eq!(count_cpu_list("x"), None);
    }

    #[test]
    fn v2_half_a_cpu_on_a_64_cpu_node_is_one_unpinned_worker() {
        let b = budget("v2-500m", 64);
        assert_eq!(b.online, Some(64));
        assert_eq!(b.quota, Some(0.5));
        assert_eq!(b.default_workers(), 1);
        assert!(!b.exclusive());
        assert_eq!(b.pin_for(PinCores::Auto, 0), None);
        assert_eq!(b.pin_for(PinCores::Always, 1), Some(1));
        assert_eq!(b.pin_for(PinCores::Never, 0), None);
    }

    #[test]
    fn v2_takes_the_smallest_limit_on_the_path() {
        // The container's own cpu.max is 2.5 CPUs, its pod's (the parent) is 1.5.
        let b = budget("v2-nested", 64);
        assert_eq!(b.quota, Some(1.5));
        assert_eq!(b.default_workers(), 2);
    }

    #[test]
    fn v2_unlimited_uses_the_mask() {
        let b = budget("v2-max", 8);
        assert_eq!(b.quota, None);
        assert_eq!(b.default_workers(), 8);
        // The whole machine: not ours alone, so no pinning by default.
        assert!(!b.exclusive());
    }

    #[test]
    fn v1_quota_through_mountinfo() {
        // 3 CPUs (300000/100000) in a container whose cgroup path is mounted at the
        // controller's mount point (mount root = the container's path).
        let b = budget("v1-3cpu", 64);
        assert_eq!(b.quota, Some(3.0));
        assert_eq!(b.default_workers(), 3);
    }

    #[test]
    fn hybrid_hierarchy_reads_v1_cpu_and_the_unified_mount() {
        // systemd's hybrid layout: v1 controllers, cgroup2 at /sys/fs/cgroup/unified (no cpu
        // controller there). The v1 cpu quota, 1.5 CPUs, is what counts.
        let b = budget("hybrid", 2);
        assert_eq!(b.quota, Some(1.5));
        assert_eq!(b.default_workers(), 2);
    }

    #[test]
    fn exclusive_cpus_are_pinned() {
        // Kubernetes' static CPU manager: 2 exclusive CPUs (ids 4 and 5) and a 2-CPU quota.
        let b = CpuBudget::read(&fixture("v2-2cpu-exclusive"), vec![4, 5]);
        assert_eq!(b.quota, Some(2.0));
        assert_eq!(b.default_workers(), 2);
        assert!(b.exclusive());
        assert_eq!(b.pin_for(PinCores::Auto, 0), Some(4));
        assert_eq!(b.pin_for(PinCores::Auto, 1), Some(5));
        // The shared pool: a narrowed mask of 60 CPUs but a 2-CPU quota is not ours.
        let shared = CpuBudget::read(&fixture("v2-2cpu-exclusive"), (4..64).collect());
        assert!(!shared.exclusive());
        assert_eq!(shared.default_workers(), 2);
    }

    #[test]
    fn nothing_readable_means_the_mask() {
        let b = CpuBudget::read(Path::new("/nonexistent"), (0..4).collect());
        assert_eq!((b.online, b.quota), (None, None));
        assert_eq!(b.default_workers(), 4);
        assert!(!b.exclusive());
        let none = CpuBudget::read(Path::new("/nonexistent"), vec![]);
        assert_eq!(none.default_workers(), 1);
    }
}
