//! Per-job cgroups: the memory and process limits of one sandbox, and the counters that tell
//! afterwards whether the job ran out of memory. cgroup v2 where the host has it, v1 otherwise.
//!
//! Every job gets a fresh cgroup directory made by the worker, with the limits written on it.
//! nsjail then creates its own child cgroup inside it for the jailed process, with a looser
//! limit, so the limit that bites — and the counters that record it — are the worker's.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

const PARENT: &str = "runbox";

/// A peak this close to the limit means the limit was reached: the kernel charges in pages
/// and reclaims a little before it kills.
const LIMIT_SLACK: u64 = 256 * 1024;

/// What the host offers for per-job limits, detected once at worker start.
#[derive(Debug, Clone)]
pub enum Cgroups {
    /// Unified hierarchy; `parent` has the memory and pids controllers enabled for children.
    V2 { parent: PathBuf },
    /// Legacy hierarchies; one parent directory per controller.
    V1 { memory: PathBuf, pids: PathBuf },
    /// No usable cgroup: memory falls back to an address-space rlimit.
    Unavailable { reason: String },
}

/// Counters read from a job's cgroup after it ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupUsage {
    /// The memory limit was hit and the kernel had to kill or refuse.
    pub memory_limit_hit: bool,
    pub peak_memory_bytes: Option<u64>,
    pub cpu_ms: Option<u64>,
}

impl Cgroups {
    /// Finds and prepares the hierarchy under `root` (normally `/sys/fs/cgroup`).
    #[must_use]
    pub fn detect(root: &Path) -> Self {
        let attempt = if root.join("cgroup.controllers").exists() {
            prepare_v2(root)
        } else if root.join("memory").is_dir() && root.join("pids").is_dir() {
            prepare_v1(root)
        } else {
            Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "no cgroup v2 or v1 memory/pids hierarchy under {}",
                    root.display()
                ),
            ))
        };
        attempt.unwrap_or_else(|e| Self::Unavailable {
            reason: e.to_string(),
        })
    }

    /// A short name for logs and the README's wording.
    #[must_use]
    pub fn describe(&self) -> String {
        match self {
            Self::V2 { parent } => format!("cgroup v2 at {}", parent.display()),
            Self::V1 { memory, pids } => {
                format!("cgroup v1 at {} and {}", memory.display(), pids.display())
            }
            Self::Unavailable { reason } => format!("no cgroups ({reason})"),
        }
    }

    /// Creates the cgroup for one job with its limits; `None` when cgroups are unavailable.
    ///
    /// # Errors
    /// When the directory or a limit cannot be written.
    pub fn create_job(
        &self,
        name: &str,
        memory_bytes: u64,
        max_processes: u32,
    ) -> io::Result<Option<JobCgroup>> {
        match self {
            Self::Unavailable { .. } => Ok(None),
            Self::V2 { parent } => {
                let dir = parent.join(name);
                let cgroup = JobCgroup {
                    version: Version::V2 { dir: dir.clone() },
                    memory_bytes,
                    max_processes,
                };
                fs::create_dir(&dir)?;
                fs::write(dir.join("memory.max"), memory_bytes.to_string())?;
                // Swapping would turn a memory limit into a slowdown; best effort, since
                // hosts without swap accounting have no such file.
                let _ = fs::write(dir.join("memory.swap.max"), "0");
                fs::write(dir.join("pids.max"), max_processes.to_string())?;
                fs::write(dir.join("cgroup.subtree_control"), "+memory +pids")?;
                Ok(Some(cgroup))
            }
            Self::V1 { memory, pids } => {
                let memory_dir = memory.join(name);
                let pids_dir = pids.join(name);
                let cgroup = JobCgroup {
                    version: Version::V1 {
                        memory_mount: memory.parent().map(Path::to_path_buf).unwrap_or_default(),
                        pids_mount: pids.parent().map(Path::to_path_buf).unwrap_or_default(),
                        memory_dir: memory_dir.clone(),
                        pids_dir: pids_dir.clone(),
                        name: format!("{PARENT}/{name}"),
                    },
                    memory_bytes,
                    max_processes,
                };
                fs::create_dir(&memory_dir)?;
                fs::create_dir(&pids_dir)?;
                fs::write(
                    memory_dir.join("memory.limit_in_bytes"),
                    memory_bytes.to_string(),
                )?;
                // memsw exists only with swap accounting; where it does, forbid swapping.
                let _ = fs::write(
                    memory_dir.join("memory.memsw.limit_in_bytes"),
                    memory_bytes.to_string(),
                );
                fs::write(pids_dir.join("pids.max"), max_processes.to_string())?;
                Ok(Some(cgroup))
            }
        }
    }
}

fn prepare_v2(root: &Path) -> io::Result<Cgroups> {
    let own = fs::read_to_string("/proc/self/cgroup")?;
    let relative = own
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .unwrap_or("/")
        .trim_start_matches('/');
    let base = root.join(relative);
    if fs::write(base.join("cgroup.subtree_control"), "+memory +pids").is_err() {
        // A cgroup with processes in it cannot hand controllers to children (the "no internal
        // processes" rule), which is the usual state inside a container: move the processes
        // of our cgroup into a leaf of their own, then enable the controllers.
        let leaf = base.join(format!("{PARENT}-supervisor"));
        if !leaf.exists() {
            fs::create_dir(&leaf)?;
        }
        for pid in fs::read_to_string(base.join("cgroup.procs"))?.lines() {
            // A process may exit between the read and the move.
            let _ = fs::write(leaf.join("cgroup.procs"), pid);
        }
        fs::write(base.join("cgroup.subtree_control"), "+memory +pids")?;
    }
    let parent = base.join(PARENT);
    if !parent.exists() {
        fs::create_dir(&parent)?;
    }
    fs::write(parent.join("cgroup.subtree_control"), "+memory +pids")?;
    Ok(Cgroups::V2 { parent })
}

fn prepare_v1(root: &Path) -> io::Result<Cgroups> {
    let memory = root.join("memory").join(PARENT);
    let pids = root.join("pids").join(PARENT);
    for dir in [&memory, &pids] {
        if !dir.exists() {
            fs::create_dir(dir)?;
        }
    }
    Ok(Cgroups::V1 { memory, pids })
}

#[derive(Debug)]
enum Version {
    V2 {
        dir: PathBuf,
    },
    V1 {
        memory_mount: PathBuf,
        pids_mount: PathBuf,
        memory_dir: PathBuf,
        pids_dir: PathBuf,
        name: String,
    },
}

/// One job's cgroup; removed when dropped (after the sandbox has exited).
#[derive(Debug)]
pub struct JobCgroup {
    version: Version,
    memory_bytes: u64,
    max_processes: u32,
}

impl JobCgroup {
    /// nsjail flags that put the jailed process in a child of this cgroup. nsjail's own limit
    /// is set above ours so that ours is the one the kernel enforces and counts.
    #[must_use]
    pub fn nsjail_args(&self) -> Vec<String> {
        let inner_memory = (self.memory_bytes.saturating_mul(2)).to_string();
        let pids = self.max_processes.to_string();
        match &self.version {
            Version::V2 { dir } => vec![
                "--use_cgroupv2".into(),
                "--cgroupv2_mount".into(),
                dir.display().to_string(),
                "--cgroup_mem_max".into(),
                inner_memory,
                "--cgroup_pids_max".into(),
                pids,
            ],
            Version::V1 {
                memory_mount,
                pids_mount,
                name,
                ..
            } => vec![
                "--cgroup_mem_max".into(),
                inner_memory,
                "--cgroup_mem_mount".into(),
                memory_mount.display().to_string(),
                "--cgroup_mem_parent".into(),
                name.clone(),
                "--cgroup_pids_max".into(),
                pids,
                "--cgroup_pids_mount".into(),
                pids_mount.display().to_string(),
                "--cgroup_pids_parent".into(),
                name.clone(),
            ],
        }
    }

    /// Reads the job's counters; call after the sandbox exited.
    #[must_use]
    pub fn usage(&self) -> CgroupUsage {
        match &self.version {
            Version::V2 { dir } => {
                let events = fs::read_to_string(dir.join("memory.events")).unwrap_or_default();
                let cpu = fs::read_to_string(dir.join("cpu.stat")).unwrap_or_default();
                CgroupUsage {
                    memory_limit_hit: keyed_value(&events, "oom_kill").unwrap_or(0) > 0
                        || keyed_value(&events, "oom").unwrap_or(0) > 0,
                    peak_memory_bytes: read_number(&dir.join("memory.peak")),
                    cpu_ms: keyed_value(&cpu, "usage_usec").map(|us| us / 1000),
                }
            }
            Version::V1 { memory_dir, .. } => {
                let peak = read_number(&memory_dir.join("memory.max_usage_in_bytes"));
                // v1 counts OOM kills on the victim's own cgroup (nsjail's, already removed)
                // and failcnt only on the counter that refused (memory or memsw, and not on
                // every kernel). What always shows is the peak reaching our limit.
                let failcnt = ["memory.failcnt", "memory.memsw.failcnt"]
                    .iter()
                    .any(|file| read_number(&memory_dir.join(file)).unwrap_or(0) > 0);
                CgroupUsage {
                    memory_limit_hit: failcnt
                        || peak.is_some_and(|p| p.saturating_add(LIMIT_SLACK) >= self.memory_bytes),
                    peak_memory_bytes: peak,
                    cpu_ms: None,
                }
            }
        }
    }
}

impl Drop for JobCgroup {
    fn drop(&mut self) {
        let dirs: Vec<&PathBuf> = match &self.version {
            Version::V2 { dir } => vec![dir],
            Version::V1 {
                memory_dir,
                pids_dir,
                ..
            } => vec![memory_dir, pids_dir],
        };
        for dir in dirs {
            // nsjail removes its own child cgroup as it exits; anything left is removed here.
            if let Ok(entries) = fs::read_dir(dir) {
                for entry in entries.flatten() {
                    if entry.file_type().is_ok_and(|t| t.is_dir()) {
                        let _ = fs::remove_dir(entry.path());
                    }
                }
            }
            if let Err(e) = fs::remove_dir(dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "could not remove job cgroup");
            }
        }
    }
}

fn read_number(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The value of `key` in a flat-keyed cgroup file such as `memory.events`.
fn keyed_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_values_are_read_by_exact_key() {
        let events = "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(keyed_value(events, "oom_kill"), Some(1));
        assert_eq!(keyed_value(events, "max"), Some(12));
        assert_eq!(keyed_value(events, "missing"), None);
    }

    #[test]
    fn nsjail_limit_is_looser_than_the_job_cgroup() {
        let cgroup = JobCgroup {
            version: Version::V2 {
                dir: PathBuf::from("/nonexistent/runbox/job-1"),
            },
            memory_bytes: 256 << 20,
            max_processes: 64,
        };
        let args = cgroup.nsjail_args();
        let mem = args
            .iter()
            .position(|a| a == "--cgroup_mem_max")
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse::<u64>().ok());
        assert_eq!(mem, Some(512 << 20));
        assert!(args.contains(&"/nonexistent/runbox/job-1".to_owned()));
        std::mem::forget(cgroup);
    }
}
