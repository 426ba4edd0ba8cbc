//! Per-job cgroups: the memory, process and CPU limits of one sandbox, and the counters read
//! after it ended. cgroup v2 where the host has it, v1 otherwise, detected at worker start.
//!
//! nsjail itself is started inside the job's cgroup ([`JobCgroup::command`]), so the jail and
//! everything it forks are limited by, and counted on, this one cgroup. nsjail's own cgroup
//! flags are not used: they put the jail in a child cgroup that nsjail removes as it exits,
//! and cgroup v1 counts an OOM kill only on the victim's own cgroup, so the count was lost.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const PARENT: &str = "runbox";

/// Runs as root between the worker and nsjail: moves itself into every listed `cgroup.procs`
/// (its arguments up to `--`), then becomes nsjail. Moving before exec means nsjail and all
/// it forks are in the job's cgroup from their first instruction; moving nsjail after it was
/// spawned would race with its clone of the jail. A shell keeps the worker free of `unsafe`
/// (a `pre_exec` hook would need it); 125 says the move failed, before nsjail ran.
const ENTER_SCRIPT: &str =
    r#"while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@""#;

/// The shell that runs [`ENTER_SCRIPT`].
const SHELL: &str = "/bin/sh";

/// Exit status of the entering shell when it could not join the job's cgroup.
pub const ENTER_FAILED: i32 = 125;

/// A cgroup controller runbox uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Controller {
    /// The memory limit, its OOM-kill counter and the peak.
    Memory,
    /// The process and thread limit.
    Pids,
    /// An equal CPU share per job, whatever the number of its processes.
    Cpu,
    /// CPU time used (v1; v2 reports it in `cpu.stat` without a controller).
    Cpuacct,
    /// Pins each execution slot to one CPU of its own.
    Cpuset,
}

impl Controller {
    const REQUIRED: [Self; 2] = [Self::Memory, Self::Pids];
    const OPTIONAL: [Self; 3] = [Self::Cpu, Self::Cpuacct, Self::Cpuset];

    fn name(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Pids => "pids",
            Self::Cpu => "cpu",
            Self::Cpuacct => "cpuacct",
            Self::Cpuset => "cpuset",
        }
    }
}

/// One v1 hierarchy: the `runbox` directory in it and the controllers it carries (several
/// when co-mounted, e.g. `cpu,cpuacct`).
#[derive(Debug, Clone)]
pub struct Hierarchy {
    parent: PathBuf,
    controllers: Vec<Controller>,
}

impl Hierarchy {
    /// A hierarchy with only the CPU share and the pinning keeps nothing of a job: no limit
    /// that depends on the job, no counter. Jobs of a slot, which run one after another, share
    /// one directory in it: a v1 job then costs two directories fewer to make and remove.
    fn per_slot(&self) -> bool {
        self.controllers
            .iter()
            .all(|c| matches!(c, Controller::Cpu | Controller::Cpuset))
    }
}

/// What the host offers for per-job limits, detected once at worker start.
#[derive(Debug, Clone)]
pub enum Cgroups {
    /// Unified hierarchy; `parent` hands `controllers` to its children.
    V2 {
        parent: PathBuf,
        controllers: Vec<Controller>,
        cpus: Vec<u32>,
    },
    /// Legacy hierarchies, one or more controllers each.
    V1 {
        hierarchies: Vec<Hierarchy>,
        cpus: Vec<u32>,
        mems: String,
    },
    /// No usable cgroup: memory and processes fall back to rlimits.
    Unavailable { reason: String },
}

/// The limits written on one job's cgroup.
#[derive(Debug, Clone, Copy)]
pub struct JobSpec {
    pub memory_bytes: u64,
    /// Processes and threads the script may have, itself included.
    pub max_processes: u32,
    /// Tasks of the sandbox itself in the cgroup besides the script's: 1 for nsjail on the
    /// cold path, none for a warm child, which enters its cgroup alone.
    pub supervisors: u32,
    /// The execution slot; picks the CPU the job is pinned to. `None`: any CPU (a warm
    /// template, whose work for the next job should not compete with its slot's job).
    pub slot: Option<usize>,
}

/// Counters read from a job's cgroup after it ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupUsage {
    /// The kernel's OOM killer killed a process of the job.
    pub memory_limit_hit: bool,
    pub peak_memory_bytes: Option<u64>,
    pub cpu_ms: Option<u64>,
}

impl Cgroups {
    /// Finds and prepares the hierarchy under `root` (normally `/sys/fs/cgroup`): v2 when
    /// `root` is a unified mount, else the v1 hierarchies mounted below it.
    #[must_use]
    pub fn detect(root: &Path) -> Self {
        let prepare = || {
            if root.join("cgroup.controllers").exists() {
                fs::read_to_string("/proc/self/cgroup").and_then(|own| prepare_v2(root, &own))
            } else {
                prepare_v1(root)
            }
        };
        let attempt = match prepare() {
            // A container engine mounts the container's own cgroup namespace read-only unless
            // the container is privileged; with CAP_SYS_ADMIN the worker can make that mount
            // writable, and the jobs' cgroups then nest inside the container's own.
            Err(e) if e.raw_os_error() == Some(nix::libc::EROFS) => match remount_writable(root) {
                Ok(remounted) if remounted > 0 => {
                    tracing::info!(
                        mounts = remounted,
                        "made the read-only cgroup mounts under {} writable",
                        root.display()
                    );
                    prepare()
                }
                Ok(_) => Err(e),
                Err(remount) => Err(io::Error::new(
                    e.kind(),
                    format!(
                        "{e}; making it writable failed ({remount}): give the container \
                             CAP_SYS_ADMIN and its own cgroup namespace"
                    ),
                )),
            },
            attempt => attempt,
        };
        let cgroups = attempt.unwrap_or_else(|e| Self::Unavailable {
            reason: e.to_string(),
        });
        let removed: usize = cgroups.parents().iter().map(|p| remove_stale(p)).sum();
        if removed > 0 {
            tracing::info!(
                removed,
                "removed job and template cgroups left by stopped workers"
            );
        }
        cgroups
    }

    /// The directories job and template cgroups are made in, one per hierarchy.
    fn parents(&self) -> Vec<&Path> {
        match self {
            Self::V2 { parent, .. } => vec![parent.as_path()],
            Self::V1 { hierarchies, .. } => {
                hierarchies.iter().map(|h| h.parent.as_path()).collect()
            }
            Self::Unavailable { .. } => Vec::new(),
        }
    }

    /// A short description for the worker's start-up log.
    #[must_use]
    pub fn describe(&self) -> String {
        let names = |controllers: &[Controller]| {
            controllers
                .iter()
                .map(|c| c.name())
                .collect::<Vec<_>>()
                .join(",")
        };
        match self {
            Self::V2 {
                parent,
                controllers,
                cpus,
            } => format!(
                "cgroup v2 at {} ({}; {} CPUs to pin slots to)",
                parent.display(),
                names(controllers),
                cpus.len()
            ),
            Self::V1 {
                hierarchies, cpus, ..
            } => {
                let parts: Vec<String> = hierarchies
                    .iter()
                    .map(|h| format!("{} ({})", h.parent.display(), names(&h.controllers)))
                    .collect();
                format!(
                    "cgroup v1 at {}; {} CPUs to pin slots to",
                    parts.join(", "),
                    cpus.len()
                )
            }
            Self::Unavailable { reason } => format!("no cgroups ({reason})"),
        }
    }

    /// Creates the cgroup for one job with its limits; `None` when cgroups are unavailable.
    ///
    /// # Errors
    /// When a directory or a required limit cannot be written; whatever was created is
    /// removed again.
    pub fn create_job(&self, name: &str, spec: &JobSpec) -> io::Result<Option<JobCgroup>> {
        match self {
            Self::Unavailable { .. } => Ok(None),
            Self::V2 {
                parent,
                controllers,
                cpus,
            } => {
                let dir = parent.join(name);
                fs::create_dir(&dir)?;
                let job = JobCgroup {
                    v2: true,
                    memory_limit: spec.memory_bytes,
                    dirs: vec![JobDir {
                        path: dir.clone(),
                        controllers: controllers.clone(),
                        shared: false,
                    }],
                };
                fs::write(dir.join("memory.max"), spec.memory_bytes.to_string())?;
                // Swapping would turn the memory limit into a slowdown; hosts without swap
                // accounting have no such file.
                let _ = fs::write(dir.join("memory.swap.max"), "0");
                fs::write(dir.join("pids.max"), pids_max(spec).to_string())?;
                if let Some(cpu) = spec.slot.and_then(|slot| pinned_cpu(cpus, slot)) {
                    pin(&dir, cpu);
                }
                // No cgroup.subtree_control here: the job's cgroup holds processes, and v2
                // refuses processes in a cgroup that hands controllers to children.
                Ok(Some(job))
            }
            Self::V1 {
                hierarchies,
                cpus,
                mems,
            } => {
                let mut job = JobCgroup {
                    v2: false,
                    memory_limit: spec.memory_bytes,
                    dirs: Vec::new(),
                };
                for hierarchy in hierarchies {
                    if let Some(slot) = spec.slot.filter(|_| hierarchy.per_slot()) {
                        job.dirs.push(JobDir {
                            path: slot_dir(hierarchy, slot, cpus, mems)?,
                            controllers: hierarchy.controllers.clone(),
                            shared: true,
                        });
                        continue;
                    }
                    let dir = hierarchy.parent.join(name);
                    fs::create_dir(&dir)?;
                    job.dirs.push(JobDir {
                        path: dir.clone(),
                        controllers: hierarchy.controllers.clone(),
                        shared: false,
                    });
                    for controller in &hierarchy.controllers {
                        match controller {
                            Controller::Memory => {
                                fs::write(
                                    dir.join("memory.limit_in_bytes"),
                                    spec.memory_bytes.to_string(),
                                )?;
                                // memsw exists only with swap accounting; where it does,
                                // forbid swapping.
                                let _ = fs::write(
                                    dir.join("memory.memsw.limit_in_bytes"),
                                    spec.memory_bytes.to_string(),
                                );
                            }
                            Controller::Pids => {
                                fs::write(dir.join("pids.max"), pids_max(spec).to_string())?;
                            }
                            Controller::Cpuset => {
                                // A v1 cpuset takes no task until it has memory nodes and CPUs.
                                fill_cpuset(&dir, spec.slot, cpus, mems)?;
                            }
                            // A fresh cgroup already has the default share and counts CPU.
                            Controller::Cpu | Controller::Cpuacct => {}
                        }
                    }
                }
                Ok(Some(job))
            }
        }
    }
}

/// Slot `slot`'s directory in a [per-slot](Hierarchy::per_slot) hierarchy, made on first use.
/// Its name carries the worker's pid, so workers sharing a host never share one, and a
/// starting worker knows which ones a dead worker left (see [`remove_stale`]).
fn slot_dir(hierarchy: &Hierarchy, slot: usize, cpus: &[u32], mems: &str) -> io::Result<PathBuf> {
    // Making the directory and filling in its cpuset is one step for the tasks that race to
    // use a slot's directory first.
    static MAKING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let dir = hierarchy
        .parent
        .join(format!("slot-{}-{slot}", std::process::id()));
    let _making = MAKING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !dir.exists() {
        fs::create_dir(&dir)?;
        if hierarchy.controllers.contains(&Controller::Cpuset) {
            fill_cpuset(&dir, Some(slot), cpus, mems)?;
        }
    }
    Ok(dir)
}

/// A v1 cpuset takes no task until it has memory nodes and CPUs: the slot's CPU, or every
/// CPU for a cgroup of no slot.
fn fill_cpuset(dir: &Path, slot: Option<usize>, cpus: &[u32], mems: &str) -> io::Result<()> {
    fs::write(dir.join("cpuset.mems"), mems)?;
    let allowed = match slot {
        Some(slot) => pinned_cpu(cpus, slot).map(|cpu| cpu.to_string()),
        None => (!cpus.is_empty()).then(|| {
            cpus.iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",")
        }),
    }
    .ok_or_else(|| io::Error::other("the runbox cpuset has no CPUs"))?;
    fs::write(dir.join("cpuset.cpus"), allowed)
}

/// The script's processes plus the sandbox's own tasks in the cgroup.
fn pids_max(spec: &JobSpec) -> u32 {
    spec.max_processes.saturating_add(spec.supervisors)
}

/// Slot n runs on the n-th CPU (wrapping), so a job that keeps every CPU busy with its
/// processes slows only jobs of slots that share its CPU, and those by half at most.
fn pinned_cpu(cpus: &[u32], slot: usize) -> Option<u32> {
    if cpus.is_empty() {
        return None;
    }
    cpus.get(slot % cpus.len()).copied()
}

/// Best effort: an unpinned job still has its equal CPU share.
fn pin(dir: &Path, cpu: u32) {
    if let Err(e) = fs::write(dir.join("cpuset.cpus"), cpu.to_string()) {
        tracing::warn!(dir = %dir.display(), cpu, error = %e, "could not pin the job to a CPU");
    }
}

/// `own` is the worker's `/proc/self/cgroup`; its `0::` line names the worker's own cgroup,
/// under which the `runbox` parent is made (the only place a delegated worker may write).
/// How old an empty job or template cgroup must be before a starting worker removes it: far
/// longer than the moment between making a cgroup and a sandbox entering it, so a cgroup
/// another worker on this host is about to use is never taken.
const STALE_AFTER: Duration = Duration::from_secs(60);

/// Removes the empty job and template cgroups in `parent` older than [`STALE_AFTER`], and the
/// empty slot cgroups of workers no longer running: what workers that were stopped or killed
/// left behind (the kernel refuses to remove a cgroup that still holds a process, so a live
/// sandbox's is safe). Returns how many it removed.
fn remove_stale(parent: &Path) -> usize {
    let Ok(entries) = fs::read_dir(parent) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|entry| {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            (name.starts_with("job-") || name.starts_with("template-") || of_dead_worker(&name))
                && entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|made| made.elapsed().ok())
                    .is_some_and(|age| age >= STALE_AFTER)
        })
        .filter(|entry| fs::remove_dir(entry.path()).is_ok())
        .count()
}

/// Whether `name` is a slot directory (`slot-<pid>-<n>`, see [`slot_dir`]) of a worker that is
/// no longer running. Another live worker's are not: its next job would find them gone.
fn of_dead_worker(name: &str) -> bool {
    name.strip_prefix("slot-")
        .and_then(|rest| rest.split_once('-'))
        .and_then(|(pid, _)| pid.parse::<u32>().ok())
        .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
}

/// Remounts every read-only cgroup mount at or below `root` read-write, keeping its other
/// flags; returns how many it changed.
fn remount_writable(root: &Path) -> io::Result<usize> {
    use nix::mount::{mount, MsFlags};
    let mut remounted = 0;
    for (point, options) in
        read_only_cgroup_mounts(&fs::read_to_string("/proc/self/mountinfo")?, root)
    {
        let mut flags = MsFlags::MS_REMOUNT | MsFlags::MS_BIND;
        for (name, flag) in [
            ("nosuid", MsFlags::MS_NOSUID),
            ("nodev", MsFlags::MS_NODEV),
            ("noexec", MsFlags::MS_NOEXEC),
            ("relatime", MsFlags::MS_RELATIME),
        ] {
            if options.split(',').any(|o| o == name) {
                flags |= flag;
            }
        }
        mount(None::<&str>, &point, None::<&str>, flags, None::<&str>)
            .map_err(|errno| io::Error::other(format!("remount {}: {errno}", point.display())))?;
        remounted += 1;
    }
    Ok(remounted)
}

/// The mount points of read-only `cgroup` and `cgroup2` mounts at or below `root`, with their
/// per-mount options, from `/proc/self/mountinfo`.
fn read_only_cgroup_mounts(mountinfo: &str, root: &Path) -> Vec<(PathBuf, String)> {
    mountinfo
        .lines()
        .filter_map(|line| {
            // id parent major:minor root mount-point options [optional fields] - type ...
            let (mount, filesystem) = line.split_once(" - ")?;
            let fields: Vec<&str> = mount.split(' ').collect();
            let point = PathBuf::from(fields.get(4)?);
            let options = (*fields.get(5)?).to_owned();
            let kind = filesystem.split(' ').next()?;
            ((kind == "cgroup" || kind == "cgroup2")
                && point.starts_with(root)
                && options.split(',').any(|o| o == "ro"))
            .then_some((point, options))
        })
        .collect()
}

fn prepare_v2(root: &Path, own: &str) -> io::Result<Cgroups> {
    let relative = own
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .unwrap_or("/")
        .trim_start_matches('/');
    let base = root.join(relative);
    let available = fs::read_to_string(base.join("cgroup.controllers"))?;
    let has = |c: Controller| available.split_whitespace().any(|name| name == c.name());
    if let Some(missing) = Controller::REQUIRED.iter().find(|c| !has(**c)) {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "the {} controller is not delegated to {}",
                missing.name(),
                base.display()
            ),
        ));
    }
    if enable(&base, &Controller::REQUIRED).is_err() {
        // A cgroup with processes in it cannot hand controllers to children (the "no
        // internal processes" rule), which is the usual state inside a container: move the
        // processes of our cgroup into a leaf of their own, then enable the controllers.
        let leaf = base.join(format!("{PARENT}-supervisor"));
        if !leaf.exists() {
            fs::create_dir(&leaf)?;
        }
        for pid in fs::read_to_string(base.join("cgroup.procs"))?.lines() {
            // A process may exit between the read and the move.
            let _ = fs::write(leaf.join("cgroup.procs"), pid);
        }
        enable(&base, &Controller::REQUIRED)?;
    }
    let parent = base.join(PARENT);
    if !parent.exists() {
        fs::create_dir(&parent)?;
    }
    enable(&parent, &Controller::REQUIRED)?;
    let mut controllers = Controller::REQUIRED.to_vec();
    // cpu.stat (and so cpu_ms) exists without the cpu controller; the controller adds the
    // equal share, cpuset the pinning. Neither is required.
    for optional in [Controller::Cpu, Controller::Cpuset] {
        if has(optional)
            && enable(&base, &[optional]).is_ok()
            && enable(&parent, &[optional]).is_ok()
        {
            controllers.push(optional);
        }
    }
    let cpus = if controllers.contains(&Controller::Cpuset) {
        fs::read_to_string(parent.join("cpuset.cpus.effective"))
            .map(|list| parse_cpu_list(&list))
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    Ok(Cgroups::V2 {
        parent,
        controllers,
        cpus,
    })
}

fn enable(dir: &Path, controllers: &[Controller]) -> io::Result<()> {
    let line: Vec<String> = controllers
        .iter()
        .map(|c| format!("+{}", c.name()))
        .collect();
    fs::write(dir.join("cgroup.subtree_control"), line.join(" "))
}

fn prepare_v1(root: &Path) -> io::Result<Cgroups> {
    let mut hierarchies: Vec<(PathBuf, Vec<Controller>)> = Vec::new();
    for controller in Controller::REQUIRED.into_iter().chain(Controller::OPTIONAL) {
        // Co-mounted controllers (`cpu,cpuacct`, with `cpu` and `cpuacct` as symlinks) are
        // one hierarchy: creating the job directory twice in it would fail.
        let Ok(mount) = fs::canonicalize(root.join(controller.name())) else {
            if Controller::REQUIRED.contains(&controller) {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!(
                        "no cgroup v2 or v1 {} hierarchy under {}",
                        controller.name(),
                        root.display()
                    ),
                ));
            }
            continue;
        };
        match hierarchies.iter_mut().find(|(m, _)| *m == mount) {
            Some((_, controllers)) => controllers.push(controller),
            None => hierarchies.push((mount, vec![controller])),
        }
    }
    let mut prepared = Vec::new();
    let mut cpus = Vec::new();
    let mut mems = String::new();
    for (mount, controllers) in hierarchies {
        let parent = mount.join(PARENT);
        let ready = (|| -> io::Result<()> {
            if !parent.exists() {
                fs::create_dir(&parent)?;
            }
            if controllers.contains(&Controller::Cpuset) {
                // v1 cpusets start empty; ours spans whatever the hierarchy's root has.
                for file in ["cpuset.cpus", "cpuset.mems"] {
                    let current = fs::read_to_string(parent.join(file)).unwrap_or_default();
                    if current.trim().is_empty() {
                        fs::write(parent.join(file), fs::read_to_string(mount.join(file))?)?;
                    }
                }
                cpus = parse_cpu_list(&fs::read_to_string(parent.join("cpuset.cpus"))?);
                mems = fs::read_to_string(parent.join("cpuset.mems"))?
                    .trim()
                    .to_owned();
            }
            Ok(())
        })();
        match ready {
            Ok(()) => prepared.push(Hierarchy {
                parent,
                controllers,
            }),
            Err(e) if controllers.iter().any(|c| Controller::REQUIRED.contains(c)) => {
                return Err(e)
            }
            Err(e) => {
                tracing::warn!(hierarchy = %mount.display(), error = %e, "optional cgroup controller unusable");
            }
        }
    }
    Ok(Cgroups::V1 {
        hierarchies: prepared,
        cpus,
        mems,
    })
}

/// Parses a kernel CPU list such as `0-3,6,8-9`.
fn parse_cpu_list(list: &str) -> Vec<u32> {
    let mut cpus = Vec::new();
    for part in list.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((first, last)) => {
                if let (Ok(first), Ok(last)) = (first.parse::<u32>(), last.parse::<u32>()) {
                    cpus.extend(first..=last);
                }
            }
            None => cpus.extend(part.parse::<u32>().ok()),
        }
    }
    cpus
}

#[derive(Debug)]
struct JobDir {
    path: PathBuf,
    controllers: Vec<Controller>,
    /// The slot's directory, used by its jobs in turn: not removed with the job.
    shared: bool,
}

/// One job's cgroup (one directory per v1 hierarchy); removed when dropped.
#[derive(Debug)]
pub struct JobCgroup {
    v2: bool,
    /// The memory limit last written.
    memory_limit: u64,
    dirs: Vec<JobDir>,
}

impl JobCgroup {
    /// The `cgroup.procs` file of each directory; a process that writes `0` to one it was
    /// given open moves itself there (how a warm child enters its job's cgroup).
    #[must_use]
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs
            .iter()
            .map(|d| d.path.join("cgroup.procs"))
            .collect()
    }

    /// Sets the memory limit, for a cgroup made before its job was known; nothing to write
    /// when the job's limit is the one the cgroup was made with (the usual case).
    ///
    /// # Errors
    /// When the limit cannot be written (v1 refuses one below current usage).
    pub fn set_memory_limit(&mut self, bytes: u64) -> io::Result<()> {
        if bytes == self.memory_limit {
            return Ok(());
        }
        let Some(dir) = self.dir_with(Controller::Memory) else {
            return Ok(());
        };
        if self.v2 {
            fs::write(dir.join("memory.max"), bytes.to_string())?;
        } else {
            // v1 refuses a memory limit above the memory+swap one: raise memsw first, lower it
            // last. One of the two memsw writes fails harmlessly (and both do without swap
            // accounting).
            let memsw = dir.join("memory.memsw.limit_in_bytes");
            let _ = fs::write(&memsw, bytes.to_string());
            fs::write(dir.join("memory.limit_in_bytes"), bytes.to_string())?;
            let _ = fs::write(&memsw, bytes.to_string());
        }
        self.memory_limit = bytes;
        Ok(())
    }

    /// A command that starts `program args` inside this cgroup (see [`ENTER_SCRIPT`]).
    #[must_use]
    pub fn command(&self, program: &Path, args: &[std::ffi::OsString]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(SHELL);
        command
            .arg("-c")
            .arg(ENTER_SCRIPT)
            .arg("runbox-enter-cgroup")
            .args(self.dirs.iter().map(|d| d.path.join("cgroup.procs")))
            .arg("--")
            .arg(program)
            .args(args)
            .stdin(Stdio::null());
        command
    }

    fn dir_with(&self, controller: Controller) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|d| d.controllers.contains(&controller))
            .map(|d| d.path.as_path())
    }

    /// Host pids of every process still in the job.
    fn processes(&self) -> Vec<i32> {
        // Every process is in every hierarchy, so one of the job's own directories lists them
        // all (a slot's shared one lists its next jobs' waiting sandboxes too).
        self.dirs
            .iter()
            .find(|d| !d.shared)
            .and_then(|d| fs::read_to_string(d.path.join("cgroup.procs")).ok())
            .map(|text| text.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// SIGKILLs every process in the job, nsjail included.
    pub fn kill_all(&self) {
        if self.v2 {
            if let Some(dir) = self.dirs.first() {
                // cgroup.kill (Linux 5.14+) kills the whole cgroup at once, racing no fork.
                if fs::write(dir.path.join("cgroup.kill"), "1").is_ok() {
                    return;
                }
            }
        }
        // Without cgroup.kill: signal each listed process. A fork racing the loop is caught
        // by the next call ([`Self::settle`] repeats it); pids.max bounds how many there are.
        for pid in self.processes() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }

    /// Waits until no process is left in the job, killing what remains after `grace`.
    /// Returns false if processes were still there after twice `grace`.
    pub async fn settle(&self, grace: Duration) -> bool {
        let started = Instant::now();
        loop {
            if self.processes().is_empty() {
                return true;
            }
            let waited = started.elapsed();
            if waited > grace.saturating_mul(2) {
                return false;
            }
            if waited > grace {
                self.kill_all();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Reads the job's counters; call once no process is left in it.
    #[must_use]
    pub fn usage(&self) -> CgroupUsage {
        let Some(memory) = self.dir_with(Controller::Memory) else {
            return CgroupUsage::default();
        };
        if self.v2 {
            let events = fs::read_to_string(memory.join("memory.events")).unwrap_or_default();
            let cpu = fs::read_to_string(memory.join("cpu.stat")).unwrap_or_default();
            CgroupUsage {
                // oom_kill counts processes of this cgroup the OOM killer killed; "oom" alone
                // also counts allocations that failed without a kill.
                memory_limit_hit: keyed_value(&events, "oom_kill").unwrap_or(0) > 0,
                // memory.peak exists from Linux 5.19.
                peak_memory_bytes: read_number(&memory.join("memory.peak")),
                cpu_ms: keyed_value(&cpu, "usage_usec").map(|us| us / 1000),
            }
        } else {
            let oom = fs::read_to_string(memory.join("memory.oom_control")).unwrap_or_default();
            CgroupUsage {
                // v1 counts an OOM kill on the victim's cgroup, which is this one since the
                // jail does not run in a child cgroup (the oom_kill line exists from 4.13).
                memory_limit_hit: keyed_value(&oom, "oom_kill").unwrap_or(0) > 0,
                peak_memory_bytes: read_number(&memory.join("memory.max_usage_in_bytes")),
                cpu_ms: self
                    .dir_with(Controller::Cpuacct)
                    .and_then(|dir| read_number(&dir.join("cpuacct.usage")))
                    .map(|ns| ns / 1_000_000),
            }
        }
    }
}

impl Drop for JobCgroup {
    fn drop(&mut self) {
        // Normally empty by now (the executor settles it first); when a job is abandoned at
        // shutdown, kill what is left and give the kernel a moment to reap it.
        if !self.processes().is_empty() {
            self.kill_all();
            for _ in 0..20 {
                if self.processes().is_empty() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        for dir in self.dirs.iter().filter(|d| !d.shared) {
            if let Err(e) = fs::remove_dir(&dir.path) {
                tracing::warn!(dir = %dir.path.display(), error = %e, "could not remove job cgroup");
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
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n";
        assert_eq!(keyed_value(v1, "oom_kill"), Some(2));
    }

    #[test]
    fn read_only_cgroup_mounts_below_the_root_are_found_with_their_options() {
        // As a container sees its own cgroup namespace on a v1 host, and a v2 one.
        let mountinfo = "\
143 135 0:60 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime - tmpfs tmpfs rw,mode=755
144 143 0:29 / /sys/fs/cgroup/cpu ro,nosuid,nodev,noexec,relatime - cgroup cgroup rw,cpu
147 143 0:32 / /sys/fs/cgroup/memory ro,nosuid,nodev,noexec,relatime master:12 - cgroup cgroup rw,memory
148 143 0:33 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime - cgroup cgroup rw,pids
150 135 0:34 / /other/cgroup ro,relatime - cgroup2 cgroup2 rw
151 135 0:35 / /sys/fs/cgroup/unified/x ro,nosuid - cgroup2 cgroup2 rw
";
        let found = read_only_cgroup_mounts(mountinfo, Path::new("/sys/fs/cgroup"));
        let points: Vec<_> = found
            .iter()
            .map(|(p, _)| p.to_str().expect("UTF-8"))
            .collect();
        assert_eq!(
            points,
            [
                "/sys/fs/cgroup/cpu",
                "/sys/fs/cgroup/memory",
                "/sys/fs/cgroup/unified/x"
            ]
        );
        assert_eq!(found[1].1, "ro,nosuid,nodev,noexec,relatime");
    }

    #[test]
    fn a_starting_worker_removes_old_empty_job_and_template_cgroups_and_dead_workers_slots() {
        let parent = tempfile::tempdir().expect("temp dir");
        let made = |name: &str, age: Duration| {
            let dir = parent.path().join(name);
            fs::create_dir(&dir).expect("mkdir");
            let made = std::time::SystemTime::now() - age;
            fs::File::open(&dir)
                .and_then(|d| d.set_modified(made))
                .expect("set the time it was made");
            dir
        };
        let old = Duration::from_secs(120);
        made("job-warm-1", old);
        made("template-0-light-1", old);
        let fresh = made("job-warm-2", Duration::ZERO);
        let other = made("supervisor", old);
        made("slot-999999999-0", old); // pids never go that high: a dead worker's
        let live = made(&format!("slot-{}-0", std::process::id()), old);
        // Stands for a cgroup that still holds a process: the kernel refuses to remove it.
        let busy = made("template-1-light-2", old);
        fs::write(busy.join("cgroup.procs"), "42").expect("write");

        assert_eq!(remove_stale(parent.path()), 3);
        let mut left: Vec<_> = fs::read_dir(parent.path())
            .expect("read")
            .map(|e| e.expect("entry").path())
            .collect();
        left.sort();
        let mut expected = vec![fresh, other, busy, live];
        expected.sort();
        assert_eq!(left, expected);
    }

    #[test]
    fn cpu_lists_are_parsed_like_the_kernel_writes_them() {
        assert_eq!(parse_cpu_list("0-1\n"), vec![0, 1]);
        assert_eq!(parse_cpu_list("0,2-4,7"), vec![0, 2, 3, 4, 7]);
        assert_eq!(parse_cpu_list("\n"), Vec::<u32>::new());
    }

    #[test]
    fn slots_are_pinned_round_robin() {
        let cpus = [2, 3];
        assert_eq!(pinned_cpu(&cpus, 0), Some(2));
        assert_eq!(pinned_cpu(&cpus, 1), Some(3));
        assert_eq!(pinned_cpu(&cpus, 2), Some(2));
        assert_eq!(pinned_cpu(&[], 0), None);
    }

    #[test]
    fn nsjail_counts_as_one_task_of_the_job_and_a_warm_child_as_none() {
        let cold = JobSpec {
            memory_bytes: 1 << 28,
            max_processes: 64,
            supervisors: 1,
            slot: Some(0),
        };
        assert_eq!(pids_max(&cold), 65);
        assert_eq!(
            pids_max(&JobSpec {
                supervisors: 0,
                ..cold
            }),
            64
        );
    }

    /// Both layouts are exercised on a directory tree that mimics cgroupfs (files the kernel
    /// would provide are written by hand), so the v2 code is checked even on v1 hosts.
    fn write(path: &Path, text: &str) {
        fs::write(path, text).expect("write a fake cgroup file");
    }

    fn read(path: &Path) -> String {
        fs::read_to_string(path)
            .expect("read a fake cgroup file")
            .trim()
            .to_owned()
    }

    #[test]
    fn v1_job_gets_a_directory_per_hierarchy_with_its_limits() {
        let root = tempfile::tempdir().expect("temp dir");
        let root = root.path();
        for dir in ["memory", "pids", "cpu,cpuacct", "cpuset"] {
            fs::create_dir(root.join(dir)).expect("mkdir");
        }
        // The usual co-mount: `cpu` and `cpuacct` are symlinks to one hierarchy.
        std::os::unix::fs::symlink("cpu,cpuacct", root.join("cpu")).expect("symlink");
        std::os::unix::fs::symlink("cpu,cpuacct", root.join("cpuacct")).expect("symlink");
        write(&root.join("cpuset/cpuset.cpus"), "0-3\n");
        write(&root.join("cpuset/cpuset.mems"), "0\n");

        let cgroups = prepare_v1(root).expect("v1 layout");
        let Cgroups::V1 {
            hierarchies, cpus, ..
        } = &cgroups
        else {
            panic!("expected v1: {cgroups:?}");
        };
        assert_eq!(hierarchies.len(), 4, "{hierarchies:?}");
        assert_eq!(cpus, &vec![0, 1, 2, 3]);
        assert_eq!(read(&root.join("cpuset/runbox/cpuset.cpus")), "0-3");

        let spec = JobSpec {
            memory_bytes: 64 << 20,
            max_processes: 64,
            supervisors: 1,
            slot: Some(5),
        };
        let job = cgroups
            .create_job("job-1", &spec)
            .expect("job cgroup")
            .expect("cgroups are available");
        let runbox = |h: &str| root.join(h).join("runbox/job-1");
        assert_eq!(
            read(&runbox("memory").join("memory.limit_in_bytes")),
            "67108864"
        );
        assert_eq!(read(&runbox("pids").join("pids.max")), "65");
        // The pinning is the slot's, in a directory its jobs share and do not remove.
        let slot = root
            .join("cpuset/runbox")
            .join(format!("slot-{}-5", std::process::id()));
        assert_eq!(read(&slot.join("cpuset.cpus")), "1");
        assert_eq!(read(&slot.join("cpuset.mems")), "0");
        assert!(!runbox("cpuset").exists());
        let command = job.command(Path::new("/bin/nsjail"), &[]);
        let entered = command
            .as_std()
            .get_args()
            .filter(|a| a.to_string_lossy().ends_with("cgroup.procs"))
            .count();
        assert_eq!(entered, 4);

        write(
            &runbox("memory").join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
        );
        write(
            &runbox("memory").join("memory.max_usage_in_bytes"),
            "67108864\n",
        );
        write(&runbox("cpu,cpuacct").join("cpuacct.usage"), "1234567890\n");
        assert_eq!(
            job.usage(),
            CgroupUsage {
                memory_limit_hit: true,
                peak_memory_bytes: Some(64 << 20),
                cpu_ms: Some(1234),
            }
        );
    }

    #[test]
    fn v2_job_is_one_leaf_with_its_limits_and_counters() {
        let root = tempfile::tempdir().expect("temp dir");
        let root = root.path();
        write(
            &root.join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        );
        fs::create_dir(root.join("runbox")).expect("mkdir");
        write(&root.join("runbox/cpuset.cpus.effective"), "2-3\n");

        let cgroups = prepare_v2(root, "0::/\n").expect("v2 layout");
        let Cgroups::V2 {
            parent,
            controllers,
            cpus,
        } = &cgroups
        else {
            panic!("expected v2: {cgroups:?}");
        };
        assert_eq!(parent, &root.join("runbox"));
        assert!(controllers.contains(&Controller::Cpu), "{controllers:?}");
        assert_eq!(cpus, &vec![2, 3]);

        let spec = JobSpec {
            memory_bytes: 256 << 20,
            max_processes: 64,
            supervisors: 1,
            slot: Some(1),
        };
        let job = cgroups
            .create_job("job-1", &spec)
            .expect("job cgroup")
            .expect("cgroups are available");
        let dir = root.join("runbox/job-1");
        assert_eq!(read(&dir.join("memory.max")), "268435456");
        assert_eq!(read(&dir.join("memory.swap.max")), "0");
        assert_eq!(read(&dir.join("pids.max")), "65");
        assert_eq!(read(&dir.join("cpuset.cpus")), "3");
        // A leaf that will hold processes must not hand controllers to children.
        assert!(!dir.join("cgroup.subtree_control").exists());

        write(
            &dir.join("memory.events"),
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n",
        );
        write(&dir.join("memory.peak"), "268435456\n");
        write(
            &dir.join("cpu.stat"),
            "usage_usec 250000\nuser_usec 200000\n",
        );
        assert_eq!(
            job.usage(),
            CgroupUsage {
                memory_limit_hit: true,
                peak_memory_bytes: Some(256 << 20),
                cpu_ms: Some(250),
            }
        );
        write(&dir.join("memory.events"), "max 3\noom 1\noom_kill 0\n");
        assert!(
            !job.usage().memory_limit_hit,
            "an OOM without a kill is not"
        );
    }

    #[test]
    fn v2_without_the_memory_controller_is_unusable() {
        let root = tempfile::tempdir().expect("temp dir");
        write(&root.path().join("cgroup.controllers"), "cpu io pids\n");
        let error = prepare_v2(root.path(), "0::/\n").expect_err("no memory controller");
        assert!(error.to_string().contains("memory"), "{error}");
    }

    #[test]
    fn nsjail_is_started_through_the_cgroup_entering_shell() {
        let job = JobCgroup {
            v2: false,
            memory_limit: 0,
            dirs: vec![
                JobDir {
                    path: PathBuf::from("/nonexistent/memory/runbox/job-1"),
                    controllers: vec![Controller::Memory],
                    shared: false,
                },
                JobDir {
                    path: PathBuf::from("/nonexistent/pids/runbox/job-1"),
                    controllers: vec![Controller::Pids],
                    shared: false,
                },
            ],
        };
        let command = job.command(Path::new("/bin/nsjail"), &["--config".into()]);
        let std = command.as_std();
        assert_eq!(std.get_program(), SHELL);
        let args: Vec<_> = std.get_args().map(|a| a.to_string_lossy()).collect();
        assert_eq!(
            args.get(2..).map(<[_]>::to_vec),
            Some(vec![
                "runbox-enter-cgroup".into(),
                "/nonexistent/memory/runbox/job-1/cgroup.procs".into(),
                "/nonexistent/pids/runbox/job-1/cgroup.procs".into(),
                "--".into(),
                "/bin/nsjail".into(),
                "--config".into(),
            ])
        );
        // Nothing to remove: the directories were never created.
        std::mem::forget(job);
    }

    #[tokio::test]
    async fn the_entering_shell_fails_closed_when_the_cgroup_is_missing() {
        let job = JobCgroup {
            v2: false,
            memory_limit: 0,
            dirs: vec![JobDir {
                path: PathBuf::from("/nonexistent/runbox/job-1"),
                controllers: vec![Controller::Memory],
                shared: false,
            }],
        };
        let status = job
            .command(Path::new("/bin/true"), &[])
            .stderr(Stdio::null())
            .status()
            .await
            .expect("the shell runs");
        assert_eq!(status.code(), Some(ENTER_FAILED));
        std::mem::forget(job);
    }
}
