//! Running one job in a fresh nsjail sandbox, behind the [`Executor`] seam: the cold path
//! here starts nsjail and Python per job; [`warm`] forks each job's sandbox from a template
//! that has Python and its heavy modules loaded. Both end in the same verdict.

pub mod cgroup;
pub mod seccomp;
pub mod verdict;
pub mod warm;

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use command_fds::{CommandFdExt, FdMapping};
use shared::job::{ClaimedJob, Lease, Limits, Outcome, Output, OutputStream, Usage};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio::sync::mpsc;

use crate::config::SandboxConfig;
use cgroup::{CgroupUsage, Cgroups, JobCgroup, JobSpec};
use verdict::{judge, parse_jail_exit, Record, RunReport};

/// The harness, embedded so the worker binary is all a host needs besides nsjail and Python.
const HARNESS: &str = include_str!("harness.py");

/// The job the worker runs before taking any (see [`NsjailExecutor::self_test`]).
const SELF_TEST: &str = include_str!("self_test.py");

/// The fd the harness writes its one result record to.
const RESULT_FD: i32 = 3;

/// uid and gid of the script inside the jail; mapped to an unprivileged id outside.
const INSIDE_ID: u32 = 1000;

/// How long after the process ends its output pipes may still be drained.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// How long the kernel may take to tear down a jail's processes after nsjail is gone before
/// the worker kills whatever is left in the job's cgroup.
const SETTLE_GRACE: Duration = Duration::from_secs(1);

/// Problems with the sandbox itself; they stop the worker from starting.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("{what} not found at {path}; run `make provision` (or set {env}) first")]
    Missing {
        what: &'static str,
        path: PathBuf,
        env: &'static str,
    },
    #[error("could not prepare the sandbox: {0}")]
    Io(#[from] std::io::Error),
    #[error(
        "the sandbox self-test failed: {0}. nsjail needs root (or CAP_SYS_ADMIN) and working \
         user, mount, pid and network namespaces; jobs are never run without the sandbox"
    )]
    SelfTest(String),
    #[error(transparent)]
    Policy(#[from] seccomp::PolicyError),
    /// A warm template died, failed or answered out of protocol.
    #[error("warm template: {0}")]
    Template(String),
}

/// Where a running job's output goes as it is printed, besides the outcome's capture: each
/// read of its stdout or stderr, within the output cap. `None` when nobody follows.
pub type OutputTap = Option<OutputSender>;

/// The sending end of an [`OutputTap`]: which stream, and the bytes read from it.
pub type OutputSender = mpsc::UnboundedSender<(OutputStream, Vec<u8>)>;

/// Runs one claimed job to an outcome. A script's failure is an `Outcome`, never an error.
#[async_trait]
pub trait Executor: Send + Sync + 'static {
    /// Runs the job in execution slot `slot` (0-based, below the worker's concurrency),
    /// sending its output to `tap` as it comes.
    async fn execute(&self, job: &ClaimedJob, slot: usize, tap: &OutputTap) -> Outcome;
}

/// Runs each job as `nsjail --config nsjail.cfg <per-job flags> -- python3 harness.py`.
#[derive(Debug)]
pub struct NsjailExecutor {
    config: SandboxConfig,
    cgroups: Cgroups,
    /// The job's seccomp policy as the harness installs it (see [`seccomp::encoded`]).
    policy: String,
    /// `harness.py`, written once in the work directory and hard-linked into each job's.
    harness: tempfile::TempDir,
}

/// The program that starts every nsjail: it sets a parent-death signal and then becomes
/// nsjail, so when the worker dies, even by SIGKILL, nsjail and its jail die with it (nsjail
/// gives its jail the same signal). Without it a jail lives on until its own time limit, and
/// a job re-run elsewhere after its lease expired could overlap its earlier attempt.
const PARENT_DEATH: [&str; 4] = ["/usr/bin/setpriv", "--pdeathsig", "KILL", "--"];

/// Host paths of one job's scratch directory.
struct JobFiles {
    /// Removed (with everything in it) when dropped.
    root: tempfile::TempDir,
    /// Mounted read-only at `/job`: the script and the harness.
    mounted: PathBuf,
    nsjail_log: PathBuf,
}

impl NsjailExecutor {
    /// Checks that nsjail, its policy and the Python runtime exist and detects cgroups.
    ///
    /// # Errors
    /// When a required file is missing.
    pub fn new(config: SandboxConfig) -> Result<Self, SandboxError> {
        for (what, path, env) in [
            ("nsjail", config.nsjail_path.clone(), "NSJAIL_PATH"),
            (
                "sandbox policy",
                config.nsjail_config.clone(),
                "NSJAIL_CONFIG",
            ),
            ("Python runtime", config.python(), "PYTHON_RUNTIME"),
        ] {
            if !path.exists() {
                return Err(SandboxError::Missing { what, path, env });
            }
        }
        if !Path::new(PARENT_DEATH[0]).exists() {
            return Err(SandboxError::Missing {
                what: "setpriv (util-linux)",
                path: PathBuf::from(PARENT_DEATH[0]),
                env: "PATH",
            });
        }
        let policy = seccomp::encoded(seccomp::Policy::Job)?;
        let cgroups = Cgroups::detect(&config.cgroup_root);
        match &cgroups {
            Cgroups::Unavailable { reason } => tracing::warn!(
                %reason,
                "no usable cgroup: memory is limited by RLIMIT_AS and processes by \
                 RLIMIT_NPROC (per outside uid) only; memory_limit verdicts, peak memory, \
                 cpu_ms and CPU pinning are not available"
            ),
            other => tracing::info!(cgroups = %other.describe(), "per-job cgroups enabled"),
        }
        let harness = tempfile::Builder::new()
            .prefix("runbox-harness-")
            .tempdir_in(&config.work_dir)?;
        let harness_file = harness.path().join("harness.py");
        std::fs::write(&harness_file, HARNESS)?;
        std::fs::set_permissions(&harness_file, std::fs::Permissions::from_mode(0o644))?;
        Ok(Self {
            config,
            cgroups,
            policy,
            harness,
        })
    }

    /// Runs a trivial job end to end, and checks that the kernel refuses x32 system calls
    /// (which the seccomp policy cannot filter); the worker refuses to start when this fails.
    ///
    /// # Errors
    /// [`SandboxError::SelfTest`] with what went wrong.
    pub async fn self_test(&self) -> Result<(), SandboxError> {
        judge_self_test(
            self.execute_cold(&self_test_job(), 0, "self_test", &None)
                .await,
        )
    }

    fn prepare_files(&self, script: &str, args: Option<&str>) -> std::io::Result<JobFiles> {
        let root = tempfile::Builder::new()
            .prefix("runbox-job-")
            .tempdir_in(&self.config.work_dir)?;
        // The jailed uid is "other" to these files: it must be able to traverse and read.
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755))?;
        let mounted = root.path().join("job");
        std::fs::create_dir(&mounted)?;
        std::fs::set_permissions(&mounted, std::fs::Permissions::from_mode(0o755))?;
        let script_file = mounted.join("script.py");
        std::fs::write(&script_file, script)?;
        std::fs::set_permissions(&script_file, std::fs::Permissions::from_mode(0o644))?;
        if let Some(args) = args {
            let args_file = mounted.join("args.json");
            std::fs::write(&args_file, args)?;
            std::fs::set_permissions(&args_file, std::fs::Permissions::from_mode(0o644))?;
        }
        // A link, not a copy: the harness is the same for every job.
        std::fs::hard_link(
            self.harness.path().join("harness.py"),
            mounted.join("harness.py"),
        )?;
        let nsjail_log = root.path().join("nsjail.log");
        Ok(JobFiles {
            root,
            mounted,
            nsjail_log,
        })
    }

    fn args(
        &self,
        limits: Limits,
        slot: usize,
        files: &JobFiles,
        in_cgroup: bool,
    ) -> Vec<OsString> {
        nsjail_args(&NsjailInvocation {
            config: &self.config,
            role: Role::Job { limits, in_cgroup },
            job_uid: self.config.job_uid(slot),
            job_dir: &files.mounted,
            nsjail_log: &files.nsjail_log,
            policy: &self.policy,
        })
    }

    async fn run(
        &self,
        job: &ClaimedJob,
        slot: usize,
        tap: &OutputTap,
    ) -> Result<Outcome, SandboxError> {
        let files = self.prepare_files(&job.script, job.args.as_deref())?;
        // Unique per run: a released job runs again under the same attempt number, and the
        // cgroup of an aborted run may still be tearing down.
        let cgroup_name = format!("job-{}-{}", job.lease.job_id, uuid::Uuid::new_v4().simple());
        let cgroup = self.cgroups.create_job(
            &cgroup_name,
            &JobSpec {
                memory_bytes: u64::from(job.limits.memory_mb) << 20,
                max_processes: self.config.max_processes,
                supervisors: 1,
                slot: Some(slot),
            },
        )?;
        let args = self.args(job.limits, slot, &files, cgroup.is_some());

        let (result_reader, result_writer) = std::io::pipe()?;
        let mut command = supervised_command(cgroup.as_ref(), &self.config.nsjail_path, &args);
        command
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
            .fd_mappings(vec![FdMapping {
                parent_fd: result_writer.into(),
                child_fd: RESULT_FD,
            }])
            .map_err(|e| SandboxError::Io(std::io::Error::other(e.to_string())))?;

        let spawned_ns = monotonic_ns();
        let started = Instant::now();
        let mut child = command.spawn()?;
        // Our copy of the pipe's write end lives in `command`; drop it so the reader sees EOF
        // once the sandbox is gone.
        drop(command);
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(SandboxError::Io(std::io::Error::other(
                "nsjail has no output pipes",
            )));
        };
        let streams = Streams::start(&self.config, stdout, stderr, result_reader, tap)?;

        let (status, timed_out) = match tokio::time::timeout(job.limits.timeout, child.wait()).await
        {
            Ok(status) => (status?, false),
            Err(_) => {
                // Killing nsjail kills the jail (its init has nsjail's death as its parent-
                // death signal, and the kernel then tears down the whole pid namespace);
                // killing the cgroup as well does not depend on that.
                if let Some(cgroup) = &cgroup {
                    cgroup.kill_all();
                }
                child.start_kill()?;
                (child.wait().await?, true)
            }
        };
        let wall = started.elapsed();
        let left = streams.finish(cgroup, job, "cold", spawned_ns).await;
        let nsjail_log = std::fs::read_to_string(&files.nsjail_log).unwrap_or_default();
        drop(files.root);

        let jail = parse_jail_exit(&nsjail_log);
        if jail == verdict::JailExit::Unknown && !timed_out {
            if status.code() == Some(cgroup::ENTER_FAILED) && nsjail_log.is_empty() {
                tracing::error!(
                    job_id = %job.lease.job_id,
                    stderr = %String::from_utf8_lossy(&left.stderr.0).trim(),
                    "could not move the sandbox into the job's cgroup"
                );
            } else {
                tracing::error!(job_id = %job.lease.job_id, log = %nsjail_log.trim(), "nsjail failed");
            }
        }
        Ok(conclude(
            &self.config,
            job,
            Ended {
                jail,
                timed_out,
                wall,
                left,
            },
        ))
    }
}

/// A command that starts `program args` under [`PARENT_DEATH`], inside `cgroup` if there is
/// one.
fn supervised_command(cgroup: Option<&JobCgroup>, program: &Path, args: &[OsString]) -> Command {
    let mut supervised: Vec<OsString> = PARENT_DEATH.iter().skip(1).map(OsString::from).collect();
    supervised.push(program.as_os_str().to_owned());
    supervised.extend(args.iter().cloned());
    let setpriv = Path::new(PARENT_DEATH[0]);
    match cgroup {
        Some(cgroup) => cgroup.command(setpriv, &supervised),
        None => {
            let mut command = Command::new(setpriv);
            command.args(&supervised);
            command
        }
    }
}

/// The reader of a running sandbox's stdout, stderr and result pipe. It reads past the caps
/// so the script never blocks on a full pipe.
struct Streams {
    reader: tokio::task::JoinHandle<Read>,
    /// What the reader returned, once [`Self::closed`] saw it finish.
    read: Option<Read>,
}

/// Everything a sandbox wrote.
struct Read {
    stdout: Captured,
    stderr: Captured,
    record: Record,
}

impl Streams {
    fn start(
        config: &SandboxConfig,
        stdout: impl AsyncRead + Unpin + Send + 'static,
        stderr: impl AsyncRead + Unpin + Send + 'static,
        result: std::io::PipeReader,
        tap: &OutputTap,
    ) -> std::io::Result<Self> {
        let output_limit = config.output_limit_bytes;
        let stdout_tap = tap.clone().map(|tap| (OutputStream::Stdout, tap));
        let stderr_tap = tap.clone().map(|tap| (OutputStream::Stderr, tap));
        let record_limit = config.result_limit_bytes.saturating_add(4096);
        let result = tokio::net::unix::pipe::Receiver::from_owned_fd(result.into())?;
        let reader = tokio::spawn(async move {
            let (stdout, stderr, record) = tokio::join!(
                read_capped(stdout, output_limit, stdout_tap),
                read_capped(stderr, output_limit, stderr_tap),
                read_capped(result, record_limit, None),
            );
            Read {
                stdout,
                stderr,
                record: match record {
                    (_, true) => Record::TooLarge,
                    (bytes, false) if bytes.is_empty() => Record::Missing,
                    (bytes, false) => Record::Written(bytes),
                },
            }
        });
        Ok(Self { reader, read: None })
    }

    /// The harness's record, once [`Self::closed`] has resolved.
    fn record(&self) -> Option<&Record> {
        self.read.as_ref().map(|read| &read.record)
    }

    /// Resolves once no process holds the sandbox's stdout, stderr or result pipe any more.
    async fn closed(&mut self) {
        if self.read.is_none() {
            self.read = Some((&mut self.reader).await.unwrap_or_else(|_| Read::nothing()));
        }
    }

    /// What the sandbox wrote; call once it is gone (a pipe some stray holder keeps open is
    /// given up on after [`DRAIN_GRACE`]).
    async fn read(self) -> Read {
        if let Some(read) = self.read {
            return read;
        }
        let abort = self.reader.abort_handle();
        match tokio::time::timeout(DRAIN_GRACE, self.reader).await {
            Ok(Ok(read)) => read,
            Ok(Err(_)) => Read::nothing(),
            Err(_) => {
                abort.abort();
                Read::nothing()
            }
        }
    }

    /// What the run left, once the sandbox is gone: waits until no process of the job is
    /// left in `cgroup` (only then are its counters final), reads them, and removes the
    /// cgroup off the job's path. `started_from` is when the sandbox was handed its job, for
    /// the start-up time metric of `mode`.
    async fn finish(
        self,
        cgroup: Option<JobCgroup>,
        job: &ClaimedJob,
        mode: &'static str,
        started_from: Option<u64>,
    ) -> Left {
        if let Some(cgroup) = &cgroup {
            if !cgroup.settle(SETTLE_GRACE).await {
                tracing::error!(job_id = %job.lease.job_id, "processes of the job survived SIGKILL");
            }
        }
        let read = self.read().await;
        let usage = cgroup.as_ref().map(JobCgroup::usage).unwrap_or_default();
        if let Some(cgroup) = cgroup {
            // A directory per v1 hierarchy to remove: not on the job's path.
            tokio::task::spawn_blocking(move || drop(cgroup));
        }
        Left::new(read, usage, mode, started_from)
    }
}

impl Read {
    fn nothing() -> Self {
        Self {
            stdout: Captured::default(),
            stderr: Captured::default(),
            record: Record::Missing,
        }
    }
}

impl Left {
    /// Records the sandbox's start-up time for `mode` from the harness's record, if it has
    /// one: `started_from` is when the sandbox was handed its job.
    fn new(read: Read, usage: CgroupUsage, mode: &'static str, started_from: Option<u64>) -> Self {
        if let (Record::Written(bytes), Some(from), Some(now)) =
            (&read.record, started_from, monotonic_ns())
        {
            if let Some(took) = script_start_delay(bytes, from, now) {
                crate::metrics::sandbox_started(mode, took);
            }
        }
        Self {
            stdout: read.stdout,
            stderr: read.stderr,
            record: read.record,
            usage,
        }
    }
}

/// What a finished run left: its output, the harness's record and the cgroup's counters.
struct Left {
    stdout: Captured,
    stderr: Captured,
    record: Record,
    usage: CgroupUsage,
}

/// Bytes read from a stream and whether more were dropped.
type Captured = (Vec<u8>, bool);

/// Everything known about a sandbox run once it is over.
struct Ended {
    jail: verdict::JailExit,
    timed_out: bool,
    wall: Duration,
    left: Left,
}

/// The job's outcome from how its sandbox ended, the same for cold and warm runs.
fn conclude(config: &SandboxConfig, job: &ClaimedJob, ended: Ended) -> Outcome {
    let Left {
        stdout,
        stderr,
        record,
        usage,
    } = ended.left;
    let verdict = judge(&RunReport {
        jail: ended.jail,
        timed_out: ended.timed_out,
        timeout: job.limits.timeout,
        memory_mb: job.limits.memory_mb,
        memory_limit_hit: usage.memory_limit_hit,
        record,
        result_limit_bytes: config.result_limit_bytes,
    });
    Outcome {
        result: verdict.result,
        stdout: to_output(stdout),
        stderr: to_output(stderr),
        usage: to_usage(ended.wall, usage, verdict.exit_code, verdict.signal),
    }
}

impl NsjailExecutor {
    /// Runs `job` cold, counted as a cold start for `reason`.
    async fn execute_cold(
        &self,
        job: &ClaimedJob,
        slot: usize,
        reason: &'static str,
        tap: &OutputTap,
    ) -> Outcome {
        crate::metrics::cold_start(reason);
        match self.run(job, slot, tap).await {
            Ok(outcome) => outcome,
            Err(e) => {
                tracing::error!(job_id = %job.lease.job_id, error = %e, "sandbox failed");
                Outcome::sandbox_error("the sandbox could not be set up for this job")
            }
        }
    }
}

#[async_trait]
impl Executor for NsjailExecutor {
    async fn execute(&self, job: &ClaimedJob, slot: usize, tap: &OutputTap) -> Outcome {
        self.execute_cold(job, slot, "cold_mode", tap).await
    }
}

/// The job every executor runs before taking any (see [`check_self_test`]).
fn self_test_job() -> ClaimedJob {
    ClaimedJob {
        lease: Lease {
            job_id: shared::job::JobId::new(),
            worker_id: "self-test".to_owned(),
            attempt: 1,
        },
        created_at: chrono::Utc::now(),
        script: SELF_TEST.to_owned(),
        limits: Limits {
            timeout: Duration::from_secs(30),
            memory_mb: 256,
        },
        request_id: None,
        args: None,
    }
}

/// Judges how the self-test job went; the worker refuses to start when this fails.
fn judge_self_test(outcome: Outcome) -> Result<(), SandboxError> {
    match outcome.result {
        Ok(value) => check_self_test(&serde_json::from_str(value.get()).unwrap_or_default())
            .map_err(SandboxError::SelfTest),
        Err(failure) => Err(SandboxError::SelfTest(format!(
            "{}: {}; stderr: {}",
            failure.kind.as_str(),
            failure.message,
            outcome.stderr.text.trim()
        ))),
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds: the clock the harness reports `started_ns` on, the same
/// inside the jail (which has no time namespace).
fn monotonic_ns() -> Option<u64> {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).ok()?;
    let secs = u64::try_from(now.tv_sec()).ok()?;
    let nanos = u64::try_from(now.tv_nsec()).ok()?;
    secs.checked_mul(1_000_000_000)?.checked_add(nanos)
}

/// How long after nsjail was spawned the script's code began to run, from the `started_ns`
/// the harness puts in its record. The script can write to the record's pipe too, so a time
/// outside the run is ignored.
fn script_start_delay(record: &[u8], spawned_ns: u64, now_ns: u64) -> Option<Duration> {
    #[derive(serde::Deserialize)]
    struct Started {
        started_ns: Option<u64>,
    }
    let started = serde_json::from_slice::<Started>(record).ok()?.started_ns?;
    (spawned_ns..=now_ns)
        .contains(&started)
        .then(|| Duration::from_nanos(started - spawned_ns))
}

/// Judges what the self-test job returned.
fn check_self_test(value: &serde_json::Value) -> Result<(), String> {
    if value["json"] != serde_json::json!([1, 2]) {
        return Err(format!(
            "expected the self-test job to parse [1, 2], got {value}"
        ));
    }
    if value["x32_getpid"]
        .as_i64()
        .is_none_or(|result| result >= 0)
    {
        return Err(format!(
            "the kernel accepts x32 system calls ({value}), which the seccomp policy cannot \
             filter; boot it with syscall.x32=n or use a kernel without CONFIG_X86_X32_ABI"
        ));
    }
    Ok(())
}

fn to_output((bytes, truncated): (Vec<u8>, bool)) -> Output {
    Output {
        text: String::from_utf8_lossy(&bytes).into_owned(),
        truncated,
    }
}

fn to_usage(
    wall: Duration,
    cgroup: CgroupUsage,
    exit_code: Option<i32>,
    signal: Option<String>,
) -> Usage {
    Usage {
        wall_ms: Some(u64::try_from(wall.as_millis()).unwrap_or(u64::MAX)),
        cpu_ms: cgroup.cpu_ms,
        peak_memory_bytes: cgroup.peak_memory_bytes,
        exit_code,
        signal,
    }
}

/// Reads a stream to its end, keeping the first `cap` bytes, each read of them also sent to
/// `tap`. Reading continues past the cap so the writer never blocks on a full pipe; the flag
/// says whether anything was dropped.
async fn read_capped<R: AsyncRead + Unpin>(
    mut reader: R,
    cap: usize,
    tap: Option<(OutputStream, OutputSender)>,
) -> (Vec<u8>, bool) {
    let mut kept = Vec::new();
    let mut truncated = false;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = cap.saturating_sub(kept.len());
                let take = n.min(room);
                let fresh = buf.get(..take).unwrap_or_default();
                kept.extend_from_slice(fresh);
                truncated |= take < n;
                if let Some((stream, tap)) = tap.as_ref().filter(|_| take > 0) {
                    let _ = tap.send((*stream, fresh.to_vec()));
                }
            }
        }
    }
    (kept, truncated)
}

/// What an nsjail is started for.
enum Role<'a> {
    /// One job: `harness.py` runs the script and the jail ends with it.
    Job {
        limits: Limits,
        /// nsjail runs inside the job's cgroup, which holds the memory and process limits.
        in_cgroup: bool,
    },
    /// A warm template (`template.py`), root of its jail's user namespace with its
    /// capabilities there, which maps root to `template_uid` outside and the job uid 1000 to
    /// the slot's job uid; it lives until the worker retires it.
    Template {
        template_uid: u32,
        /// Modules imported before the first fork, comma-separated.
        preload: &'a str,
        /// The template's own seccomp policy.
        template_policy: &'a str,
    },
}

/// Inputs of one nsjail command line.
struct NsjailInvocation<'a> {
    config: &'a SandboxConfig,
    role: Role<'a>,
    /// The unprivileged outside uid (and gid) the script runs as.
    job_uid: u32,
    /// Mounted read-only at `/job`: the script and the harness, or the template's files.
    job_dir: &'a Path,
    nsjail_log: &'a Path,
    /// The job's seccomp policy.
    policy: &'a str,
}

/// The nsjail command line: the policy file plus the flags of one job or template.
fn nsjail_args(inv: &NsjailInvocation<'_>) -> Vec<OsString> {
    let runtime = inv.config.python_runtime.display().to_string();
    let mut args: Vec<String> = vec![
        "--config".into(),
        inv.config.nsjail_config.display().to_string(),
        "--log".into(),
        inv.nsjail_log.display().to_string(),
        "--bindmount_ro".into(),
        format!("{runtime}:{runtime}"),
        "--bindmount_ro".into(),
        format!("{}:/job", inv.job_dir.display()),
        "--pass_fd".into(),
        RESULT_FD.to_string(),
    ];
    let mut env = vec![
        "PATH=/usr/bin:/bin".to_owned(),
        "HOME=/tmp".to_owned(),
        "LANG=C.UTF-8".to_owned(),
        // One thread per numeric library: the job's CPU and process limits are per job, and
        // a template must have no thread when it forks.
        "OPENBLAS_NUM_THREADS=1".to_owned(),
        "OMP_NUM_THREADS=1".to_owned(),
        "MKL_NUM_THREADS=1".to_owned(),
        format!("RUNBOX_SECCOMP={}", inv.policy),
    ];
    let program = match &inv.role {
        Role::Job { limits, in_cgroup } => {
            let timeout_secs = limits.timeout.as_secs_f64().ceil();
            // CPU time may not exceed the wall-clock timeout: the harness lowers RLIMIT_CPU's
            // soft limit to it (SIGXCPU, reported as a timeout). nsjail's wall-clock limit and
            // the hard RLIMIT_CPU (SIGKILL) are a backstop one second later; the worker's
            // clock decides.
            let backstop = format!("{}", timeout_secs + 1.0);
            let ids = format!("{INSIDE_ID}:{}", inv.job_uid);
            args.extend([
                "--time_limit".into(),
                backstop.clone(),
                "--rlimit_cpu".into(),
                backstop,
                "--user".into(),
                ids.clone(),
                "--group".into(),
                ids,
            ]);
            env.push(format!("RUNBOX_RESULT_FD={RESULT_FD}"));
            env.push(format!("RUNBOX_CPU_LIMIT_SECS={timeout_secs}"));
            if !in_cgroup {
                // The fallback where no cgroup can be used (logged at worker start): address
                // space instead of memory, and processes per outside uid, which is per slot,
                // not per job.
                args.push("--rlimit_as".into());
                args.push(limits.memory_mb.to_string());
                args.push("--rlimit_nproc".into());
                args.push(inv.config.max_processes.to_string());
            }
            "/job/harness.py"
        }
        Role::Template {
            template_uid,
            preload,
            template_policy,
        } => {
            let root = format!("0:{template_uid}");
            let job = format!("{INSIDE_ID}:{}", inv.job_uid);
            args.extend([
                // The worker retires templates itself; 0 is no limit.
                "--time_limit".into(),
                "0".into(),
                // Capabilities inside the jail's own user namespace only (uid 0 there is
                // `template_uid` outside, an unprivileged user): what building each child's
                // namespaces takes. Every child drops them all before its script runs.
                "--keep_caps".into(),
                "--user".into(),
                root.clone(),
                "--user".into(),
                job.clone(),
                "--group".into(),
                root,
                "--group".into(),
                job,
            ]);
            env.push(format!("RUNBOX_CONTROL_FD={RESULT_FD}"));
            env.push(format!("RUNBOX_PRELOAD={preload}"));
            env.push(format!("RUNBOX_SECCOMP_TEMPLATE={template_policy}"));
            env.push(format!("RUNBOX_JOB_UID={INSIDE_ID}"));
            "/job/template.py"
        }
    };
    for var in env {
        args.push("--env".into());
        args.push(var);
    }
    args.push("--".into());
    args.push(inv.config.python().display().to_string());
    // -I: ignore PYTHON* variables and the user site; -B: no .pyc writes on a read-only
    // filesystem; -u: unbuffered, so output printed before a kill is not lost in a buffer.
    for flag in ["-I", "-B", "-u", program] {
        args.push(flag.into());
    }
    args.into_iter().map(OsString::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> SandboxConfig {
        testkit::settings_without_env::<crate::config::WorkerConfig>(&["worker"]).sandbox
    }

    fn args_for(limits: Limits, in_cgroup: bool) -> Vec<String> {
        strings(&Role::Job { limits, in_cgroup })
    }

    fn strings(role: &Role<'_>) -> Vec<String> {
        let config = config();
        nsjail_args(&NsjailInvocation {
            config: &config,
            role: match role {
                Role::Job { limits, in_cgroup } => Role::Job {
                    limits: *limits,
                    in_cgroup: *in_cgroup,
                },
                Role::Template {
                    template_uid,
                    preload,
                    template_policy,
                } => Role::Template {
                    template_uid: *template_uid,
                    preload,
                    template_policy,
                },
            },
            job_uid: 100_003,
            job_dir: Path::new("/tmp/runbox-job-x/job"),
            nsjail_log: Path::new("/tmp/runbox-job-x/nsjail.log"),
            policy: "00",
        })
        .into_iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect()
    }

    fn value_after(args: &[String], flag: &str) -> Option<String> {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    }

    const LIMITS: Limits = Limits {
        timeout: Duration::from_millis(2500),
        memory_mb: 128,
    };

    #[test]
    fn script_runs_as_an_unprivileged_outside_uid() {
        let args = args_for(LIMITS, true);
        assert_eq!(value_after(&args, "--user").as_deref(), Some("1000:100003"));
        assert_eq!(
            value_after(&args, "--group").as_deref(),
            Some("1000:100003")
        );
    }

    #[test]
    fn nsjail_time_limit_backs_up_the_worker_clock() {
        let args = args_for(LIMITS, true);
        assert_eq!(value_after(&args, "--time_limit").as_deref(), Some("4"));
        assert_eq!(value_after(&args, "--rlimit_cpu").as_deref(), Some("4"));
    }

    #[test]
    fn job_dir_is_mounted_read_only_and_harness_runs_isolated() {
        let args = args_for(LIMITS, true);
        assert!(args.contains(&"/tmp/runbox-job-x/job:/job".to_owned()));
        let dash = args.iter().position(|a| a == "--").expect("separator");
        assert_eq!(
            args.get(dash + 1..).map(<[String]>::to_vec),
            Some(vec![
                "/opt/runbox/python/bin/python3".to_owned(),
                "-I".to_owned(),
                "-B".to_owned(),
                "-u".to_owned(),
                "/job/harness.py".to_owned(),
            ])
        );
    }

    #[test]
    fn environment_carries_no_worker_secrets() {
        let args = args_for(LIMITS, true);
        let env: Vec<&String> = args
            .iter()
            .zip(args.iter().skip(1))
            .filter(|(flag, _)| *flag == "--env")
            .map(|(_, value)| value)
            .collect();
        assert!(env.iter().all(|v| !v.contains("DATABASE_URL")));
        assert!(env.iter().any(|v| v.as_str() == "HOME=/tmp"));
    }

    #[test]
    fn a_kernel_that_accepts_x32_calls_fails_the_self_test() {
        let fine = serde_json::json!({"json": [1, 2], "x32_getpid": -38});
        assert_eq!(check_self_test(&fine), Ok(()));
        let x32 = serde_json::json!({"json": [1, 2], "x32_getpid": 7});
        assert!(check_self_test(&x32).is_err_and(|e| e.contains("x32")));
        let broken = serde_json::json!({"json": null, "x32_getpid": -38});
        assert!(check_self_test(&broken).is_err());
    }

    #[test]
    fn script_start_is_read_from_the_record_within_the_run() {
        let record = br#"{"ok": true, "started_ns": 1500, "result": [1]}"#;
        assert_eq!(
            script_start_delay(record, 1000, 2000),
            Some(Duration::from_nanos(500))
        );
        // Before the spawn or after the run: not the harness's clock reading.
        assert_eq!(script_start_delay(record, 1600, 2000), None);
        assert_eq!(script_start_delay(record, 1000, 1400), None);
        let never_started = br#"{"ok": false, "kind": "syntax_error", "message": "x"}"#;
        assert_eq!(script_start_delay(never_started, 1000, 2000), None);
        assert_eq!(script_start_delay(b"not json", 1000, 2000), None);
    }

    #[test]
    fn the_cpu_time_limit_is_the_timeout_rounded_up() {
        let args = args_for(LIMITS, true);
        assert!(args.contains(&"RUNBOX_CPU_LIMIT_SECS=3".to_owned()));
    }

    #[test]
    fn rlimits_stand_in_for_the_cgroup_only_without_one() {
        let without = args_for(LIMITS, false);
        assert_eq!(value_after(&without, "--rlimit_as").as_deref(), Some("128"));
        assert_eq!(
            value_after(&without, "--rlimit_nproc").as_deref(),
            Some("64")
        );
        let with = args_for(LIMITS, true);
        assert_eq!(value_after(&with, "--rlimit_as"), None);
        assert_eq!(value_after(&with, "--rlimit_nproc"), None);
        // nsjail's own cgroups would move the jail out of the job's cgroup.
        assert!(!with.iter().any(|a| a.starts_with("--cgroup")));
    }
}
