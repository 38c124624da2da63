//! How many CPUs this process may really use, for `server.workers = "auto"`: the smaller of
//! its CPU affinity (`taskset`, cpusets) and its cgroup's CPU quota (a container limited to
//! 2 CPUs on a 64-core host gets 2), never less than 1.

use std::path::{Path, PathBuf};

/// The CPUs available to this process.
pub fn available() -> usize {
    let affinity = affinity().unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    match cgroup_quota() {
        Some(quota) => affinity.min(quota),
        None => affinity,
    }
    .max(1)
}

/// The CPUs in this process's affinity mask.
fn affinity() -> Option<usize> {
    // SAFETY: an all-zero `cpu_set_t` is a valid empty set; `sched_getaffinity` writes at
    // most `size_of::<cpu_set_t>()` bytes into it, and `CPU_COUNT` only reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return None;
        }
        usize::try_from(libc::CPU_COUNT(&set))
            .ok()
            .filter(|&n| n > 0)
    }
}

/// The CPU quota of this process's cgroup and of every cgroup above it, rounded up to whole
/// CPUs; `None` when none sets one.
fn cgroup_quota() -> Option<usize> {
    let membership = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mut best: Option<usize> = None;
    for (dir, file) in quota_files(&membership, Path::new("/sys/fs/cgroup")) {
        let mut current = Some(dir.as_path());
        while let Some(here) = current {
            if let Some(cpus) = read_quota(here, file) {
                best = Some(best.map_or(cpus, |b| b.min(cpus)));
            }
            if here == Path::new("/sys/fs/cgroup") || here.parent().is_none() {
                break;
            }
            current = here.parent();
        }
    }
    best
}

/// The cgroup directories to look in, with the kind of quota file each has.
fn quota_files(membership: &str, root: &Path) -> Vec<(PathBuf, QuotaFile)> {
    let mut found = Vec::new();
    for line in membership.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(_id), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let relative = path.trim_start_matches('/');
        if controllers.is_empty() {
            // cgroup v2: one unified hierarchy.
            found.push((root.join(relative), QuotaFile::V2));
        } else if controllers.split(',').any(|c| c == "cpu") {
            for mount in ["cpu,cpuacct", "cpu", "cpuacct,cpu"] {
                let dir = root.join(mount);
                if dir.is_dir() {
                    found.push((dir.join(relative), QuotaFile::V1));
                }
            }
        }
    }
    found
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QuotaFile {
    /// `cpu.max`: `QUOTA PERIOD` or `max PERIOD`.
    V2,
    /// `cpu.cfs_quota_us` (-1: none) and `cpu.cfs_period_us`.
    V1,
}

fn read_quota(dir: &Path, kind: QuotaFile) -> Option<usize> {
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
    match kind {
        QuotaFile::V2 => parse_cpu_max(&read("cpu.max")?),
        QuotaFile::V1 => {
            let quota: i64 = read("cpu.cfs_quota_us")?.trim().parse().ok()?;
            let period: i64 = read("cpu.cfs_period_us")?.trim().parse().ok()?;
            whole_cpus(quota, period)
        }
    }
}

/// `cpu.max` as whole CPUs: `"200000 100000"` is 2, `"150000 100000"` 2, `"max 100000"` none.
fn parse_cpu_max(text: &str) -> Option<usize> {
    let mut fields = text.split_whitespace();
    let quota = fields.next()?;
    let period: i64 = fields.next().map_or(Some(100_000), |p| p.parse().ok())?;
    whole_cpus(quota.parse().ok()?, period)
}

fn whole_cpus(quota: i64, period: i64) -> Option<usize> {
    if quota <= 0 || period <= 0 {
        return None;
    }
    usize::try_from((quota + period - 1) / period).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quota_rounds_up_to_whole_cpus() {
        assert_eq!(parse_cpu_max("200000 100000\n"), Some(2));
        assert_eq!(parse_cpu_max("150000 100000"), Some(2));
        assert_eq!(parse_cpu_max("50000 100000"), Some(1));
        assert_eq!(parse_cpu_max("max 100000"), None);
        assert_eq!(whole_cpus(-1, 100_000), None);
    }

    #[test]
    fn membership_lines_name_the_quota_files() {
        let root = Path::new("/nonexistent-root");
        let v2 = quota_files("0::/system.slice/app.service\n", root);
        assert_eq!(
            v2,
            vec![(root.join("system.slice/app.service"), QuotaFile::V2)]
        );
        // v1 controllers are looked for only where they are mounted (none here).
        assert!(quota_files("4:cpu,cpuacct:/docker/abc\n", root).is_empty());
    }

    #[test]
    fn this_process_has_at_least_one() {
        assert!(available() >= 1);
    }
}
