//! Warm sandboxes: per execution slot, templates (`template.py`, each in an nsjail of its own)
//! that have Python, the harness and numpy/pandas loaded and fork one fresh, single-use
//! sandbox per job. Design and threat model: `docs/warm-sandboxes.md`.
//!
//! Invariants kept here (the template keeps the rest, see the top of `template.py`):
//! - a job is handed only to a child that reported ready (`R`) from a template whose every
//!   answer so far followed the protocol; anything else retires the template;
//! - each child gets pipes and a cgroup made for its job alone, destroyed after it;
//! - a template that dies mid-job costs the job nothing: it runs again on the cold path;
//! - templates are replaced after `SANDBOX_TEMPLATE_MAX_JOBS` jobs or
//!   `SANDBOX_TEMPLATE_MAX_AGE_SECS`, off the job's path, and whenever one fails.

use std::collections::VecDeque;
use std::io::{IoSlice, Write as _};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use command_fds::{CommandFdExt, FdMapping};
use nix::sys::socket::{
    sendmsg, socketpair, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType, UnixAddr,
};
use shared::job::{ClaimedJob, Outcome};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::unix::pipe;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use super::cgroup::{Cgroups, JobCgroup, JobSpec};
use super::verdict::{self, JailExit};
use super::{
    conclude, monotonic_ns, nsjail_args, seccomp, supervised_command, Ended, Executor,
    NsjailExecutor, NsjailInvocation, OutputTap, Role, SandboxError, Streams, HARNESS, RESULT_FD,
};
use crate::config::SandboxConfig;

/// The template program, embedded like the harness.
const TEMPLATE: &str = include_str!("template.py");

/// How long a template may take to import its modules and say it is ready.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a forked child may take to report ready once its job is waiting for it; it
/// normally did long before the job arrived.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long after a kill the template may take to report how the child ended.
const REPORT_GRACE: Duration = Duration::from_secs(5);

/// After a template failed to start, how long before another is tried in its place.
const RESTART_BACKOFF: Duration = Duration::from_secs(10);

/// A template's own memory: the interpreter with numpy and pandas, and room for its children's
/// start (pages they share with it stay charged here).
const TEMPLATE_MEMORY_BYTES: u64 = 1 << 30;

/// Tasks in a template's cgroup: nsjail, the template, and a child on its way to its own
/// cgroup.
const TEMPLATE_TASKS: u32 = 8;

/// The memory limit a child's cgroup has until its job (and the job's limit) is known.
const PENDING_MEMORY_BYTES: u64 = 256 << 20;

/// Children each template keeps forked and ready. With one, a job that arrives soon after the
/// previous one ended (a client sending requests one after another) waits for the fork and
/// set-up of its child; with two, the next child was made during the previous job. More cost
/// memory and cgroups and save nothing: forks happen once per job either way.
const CHILDREN_AHEAD: usize = 2;

/// What a template has loaded; a job goes to the lightest template that has what its script
/// imports. A wrong guess costs time, never correctness: a child can import anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The harness and the standard library modules most scripts use.
    Light,
    /// Also numpy and pandas (about 60 MB more per fork, so only for scripts that use them).
    Scientific,
}

impl Kind {
    const ALL: [Self; 2] = [Self::Light, Self::Scientific];

    fn index(self) -> usize {
        match self {
            Self::Light => 0,
            Self::Scientific => 1,
        }
    }

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Light => "light",
            Self::Scientific => "scientific",
        }
    }

    fn preload(self) -> &'static str {
        match self {
            Self::Light => "json,math,random,re,collections,datetime",
            Self::Scientific => "json,math,random,re,collections,datetime,numpy,pandas",
        }
    }

    /// A textual look suffices: the name in a comment only costs the heavier fork.
    #[must_use]
    pub fn for_script(script: &str) -> Self {
        if script.contains("numpy") || script.contains("pandas") {
            Self::Scientific
        } else {
            Self::Light
        }
    }
}

/// What every template start needs; shared with the tasks that start replacements.
#[derive(Debug)]
struct Launcher {
    config: SandboxConfig,
    cgroups: Cgroups,
    concurrency: usize,
    job_policy: String,
    template_policy: String,
    /// Mounted read-only at `/job` in every template: `template.py` and `harness.py`, plus
    /// each template's logs (outside the jail's view: the mount is of this directory's
    /// `files` subdirectory).
    dir: tempfile::TempDir,
}

/// Runs each job in a child forked from a warm template of its slot, and on the cold path
/// when no template can serve it.
pub struct WarmExecutor {
    launcher: Arc<Launcher>,
    cold: NsjailExecutor,
    slots: Vec<Mutex<Slot>>,
    /// Off when the warm self-test failed on this host.
    enabled: bool,
}

/// The templates of one slot, one per [`Kind`].
#[derive(Default)]
struct Slot {
    templates: [Option<Template>; 2],
    replacements: [Option<JoinHandle<Result<Template, SandboxError>>>; 2],
    /// No new template of that kind is started before this (after a failed start).
    retry_after: [Option<Instant>; 2],
}

impl WarmExecutor {
    /// Prepares the template files and starts every slot's templates, waiting until each is
    /// ready or has failed; failed ones are retried later, and their jobs run cold meanwhile.
    ///
    /// # Errors
    /// When the cold executor cannot be built or the template files cannot be written.
    pub async fn start(config: SandboxConfig, concurrency: usize) -> Result<Self, SandboxError> {
        let cold = NsjailExecutor::new(config.clone())?;
        let dir = tempfile::Builder::new()
            .prefix("runbox-templates-")
            .tempdir_in(&config.work_dir)?;
        let files = dir.path().join("files");
        std::fs::create_dir(&files)?;
        // The template's root is "other" to these files: it must traverse and read them.
        for path in [dir.path(), files.as_path()] {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
        }
        for (name, text) in [("template.py", TEMPLATE), ("harness.py", HARNESS)] {
            let path = files.join(name);
            std::fs::write(&path, text)?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
        }
        let launcher = Arc::new(Launcher {
            cgroups: cold.cgroups.clone(),
            job_policy: cold.policy.clone(),
            template_policy: seccomp::encoded(seccomp::Policy::Template)?,
            config,
            concurrency,
            dir,
        });
        let mut slots: Vec<Slot> = (0..concurrency).map(|_| Slot::default()).collect();
        let mut starting = Vec::new();
        for slot in 0..concurrency {
            for kind in Kind::ALL {
                let launcher = Arc::clone(&launcher);
                starting.push((
                    slot,
                    kind,
                    tokio::spawn(Template::start(launcher, kind, slot)),
                ));
            }
        }
        for (slot, kind, start) in starting {
            let state = slots
                .get_mut(slot)
                .ok_or_else(|| SandboxError::Template("slot".into()))?;
            match flatten(start.await) {
                Ok(template) => state.templates[kind.index()] = Some(template),
                Err(e) => {
                    tracing::error!(slot, kind = kind.as_str(), error = %e, "warm template failed to start; its jobs run cold");
                    state.retry_after[kind.index()] = Some(Instant::now() + RESTART_BACKOFF);
                }
            }
        }
        Ok(Self {
            launcher,
            cold,
            slots: slots.into_iter().map(Mutex::new).collect(),
            enabled: true,
        })
    }

    /// The cold path's self-test, then the same job on slot 0's light template: the warm path
    /// must enforce what the cold one does (seccomp, no x32 calls). When only the warm one
    /// fails, the warm path is turned off: every job then still gets a fresh sandbox of its
    /// own, started cold, and the worker says so loudly.
    ///
    /// # Errors
    /// [`SandboxError::SelfTest`] when the cold path fails.
    pub async fn self_test(&mut self) -> Result<(), SandboxError> {
        self.cold.self_test().await?;
        if let Err(e) = self.warm_self_test().await {
            tracing::error!(
                error = %e,
                "warm sandboxes do not work on this host; every job runs cold \
                 (SANDBOX_MODE=cold says so without this error)"
            );
            self.enabled = false;
            for slot in &self.slots {
                *slot.lock().await = Slot::default();
            }
        }
        Ok(())
    }

    async fn warm_self_test(&self) -> Result<(), SandboxError> {
        let ready = {
            let slot = self
                .slots
                .first()
                .ok_or_else(|| SandboxError::SelfTest("no slot".into()))?;
            slot.lock().await.templates[Kind::Light.index()].is_some()
        };
        if !ready {
            return Err(SandboxError::SelfTest(
                "no warm template could be started (the worker logged why)".into(),
            ));
        }
        let outcome = self
            .run_warm(&super::self_test_job(), 0, &None)
            .await
            .unwrap_or_else(|reason| {
                Outcome::sandbox_error(format!("the warm path did not run the job: {reason}"))
            });
        super::judge_self_test(outcome)
    }

    /// Runs `job` on its kind's template of `slot`, if one is ready: `Err` when there is
    /// none or it failed (the job has not run to an outcome then, and may run cold).
    async fn run_warm(
        &self,
        job: &ClaimedJob,
        slot: usize,
        tap: &OutputTap,
    ) -> Result<Outcome, &'static str> {
        if !self.enabled {
            return Err("warm_unavailable");
        }
        let kind = Kind::for_script(&job.script);
        let Some(state) = self.slots.get(slot) else {
            return Err("no_slot");
        };
        let mut state = state.lock().await;
        state.adopt_replacement(kind).await;
        let Some(template) = state.templates[kind.index()].as_mut() else {
            state.replace(&self.launcher, kind, slot, "missing");
            return Err("no_template");
        };
        match template.run(&self.launcher, job, tap).await {
            Ok(outcome) => {
                crate::metrics::warm_start(kind.as_str());
                fork_ahead(&self.launcher, &template.forker, kind, slot);
                let due = template.due(&self.launcher.config);
                if let Some(reason) = due {
                    state.replace(&self.launcher, kind, slot, reason);
                }
                Ok(outcome)
            }
            Err(e) => {
                tracing::warn!(slot, kind = kind.as_str(), error = %e, "warm template failed; replacing it, the job runs cold");
                state.templates[kind.index()] = None;
                state.replace(&self.launcher, kind, slot, "failed");
                Err("template_failed")
            }
        }
    }
}

/// Has a template fork the child that replaces the one a job just used, in the background: the
/// job's outcome does not wait for the child's cgroup to be made, and the template's fork
/// runs after the job, not beside it. Past [`CHILDREN_AHEAD`] waiting children (the slot's
/// next job forked one itself meanwhile) the parts are dropped, and with them the cgroup.
fn fork_ahead(launcher: &Arc<Launcher>, forker: &Arc<Forker>, kind: Kind, slot: usize) {
    let launcher = Arc::clone(launcher);
    let forker = Arc::clone(forker);
    tokio::spawn(async move {
        let made = tokio::task::spawn_blocking(move || ChildParts::make(&launcher, slot)).await;
        let parts = match made {
            Ok(Ok(parts)) => parts,
            Ok(Err(e)) => {
                tracing::warn!(slot, kind = kind.as_str(), error = %e, "could not prepare the next warm child");
                return;
            }
            Err(_) => return,
        };
        if forker.waiting() >= CHILDREN_AHEAD {
            return;
        }
        match forker.fork(parts) {
            Ok(child) => forker.push(child),
            // The template is gone or going: its next job finds out and replaces it.
            Err(e) => {
                tracing::debug!(slot, kind = kind.as_str(), error = %e, "warm template could not fork the next child")
            }
        }
    });
}

#[async_trait]
impl Executor for WarmExecutor {
    async fn execute(&self, job: &ClaimedJob, slot: usize, tap: &OutputTap) -> Outcome {
        match self.run_warm(job, slot, tap).await {
            Ok(outcome) => outcome,
            Err(reason) => self.cold.execute_cold(job, slot, reason, tap).await,
        }
    }
}

impl Slot {
    /// Swaps in a replacement of `kind` that has finished starting.
    async fn adopt_replacement(&mut self, kind: Kind) {
        let i = kind.index();
        if !self.replacements[i]
            .as_ref()
            .is_some_and(JoinHandle::is_finished)
        {
            return;
        }
        let Some(handle) = self.replacements[i].take() else {
            return;
        };
        match flatten(handle.await) {
            // The old template (if any) is dropped here, which kills it and its idle child.
            Ok(template) => self.templates[i] = Some(template),
            Err(e) => {
                tracing::error!(kind = kind.as_str(), error = %e, "warm template failed to start; its jobs run cold");
                self.retry_after[i] = Some(Instant::now() + RESTART_BACKOFF);
            }
        }
    }

    /// Starts a replacement for `kind` in the background, unless one is starting already or a
    /// failed start is too recent.
    fn replace(&mut self, launcher: &Arc<Launcher>, kind: Kind, slot: usize, reason: &'static str) {
        let i = kind.index();
        if self.replacements[i].is_some()
            || self.retry_after[i].is_some_and(|after| Instant::now() < after)
        {
            return;
        }
        self.retry_after[i] = None;
        tracing::info!(
            slot,
            kind = kind.as_str(),
            reason,
            "replacing a warm template"
        );
        crate::metrics::template_restart(kind.as_str(), reason);
        self.replacements[i] = Some(tokio::spawn(Template::start(
            Arc::clone(launcher),
            kind,
            slot,
        )));
    }
}

fn flatten(
    joined: Result<Result<Template, SandboxError>, tokio::task::JoinError>,
) -> Result<Template, SandboxError> {
    joined.map_err(|e| SandboxError::Template(e.to_string()))?
}

/// One running template and the children it forked for the next jobs.
struct Template {
    kind: Kind,
    slot: usize,
    /// The template's nsjail; killing it ends the template and every child.
    process: tokio::process::Child,
    /// Asks the template for children; shared with the tasks that fork ahead.
    forker: Arc<Forker>,
    /// Where the template and its nsjail write their logs, read when it fails.
    logs: [PathBuf; 2],
    started: Instant,
    served: u32,
    /// Declared last: dropped after the process is killed.
    _cgroup: JobCgroup,
}

/// The worker's side of a template's control socket and the children it forked for the next
/// jobs.
struct Forker {
    /// The worker's end of the template's SOCK_SEQPACKET control socket (a stream type to
    /// tokio; each read returns one message).
    control: tokio::net::UnixStream,
    /// Forked for the next jobs, oldest first; up to [`CHILDREN_AHEAD`], give or take one
    /// being forked.
    ahead: std::sync::Mutex<VecDeque<Child>>,
}

impl Forker {
    /// The next message on the control socket; empty when the template is gone.
    async fn receive(&self) -> std::io::Result<Vec<u8>> {
        let mut buf = [0u8; 64];
        loop {
            self.control.readable().await?;
            match self.control.try_read(&mut buf) {
                Ok(n) => return Ok(buf.get(..n).unwrap_or_default().to_vec()),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Asks the template to fork a child onto `parts`.
    fn fork(&self, parts: ChildParts) -> std::io::Result<Child> {
        let ChildParts {
            cgroup,
            procs,
            script: (script_r, script_w),
            stdout: (stdout_r, stdout_w),
            stderr: (stderr_r, stderr_w),
            result: (result_r, result_w),
            status: (status_r, status_w),
        } = parts;
        let mut fds = vec![
            script_r.as_raw_fd(),
            stdout_w.as_raw_fd(),
            stderr_w.as_raw_fd(),
            result_w.as_raw_fd(),
            status_w.as_raw_fd(),
        ];
        fds.extend(procs.iter().map(AsRawFd::as_raw_fd));
        sendmsg::<UnixAddr>(
            self.control.as_raw_fd(),
            &[IoSlice::new(b"spawn")],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
            None,
        )
        .map_err(std::io::Error::from)?;
        // The template holds its own copies now; ours of the child's ends go.
        drop((script_r, stdout_w, stderr_w, result_w, status_w, procs));
        Ok(Child {
            script: pipe::Sender::from_owned_fd(OwnedFd::from(script_w))?,
            stdout: pipe::Receiver::from_owned_fd(OwnedFd::from(stdout_r))?,
            stderr: pipe::Receiver::from_owned_fd(OwnedFd::from(stderr_r))?,
            result: result_r,
            status: BufReader::new(pipe::Receiver::from_owned_fd(OwnedFd::from(status_r))?).lines(),
            cgroup,
        })
    }

    fn push(&self, child: Child) {
        self.queue().push_back(child);
    }

    fn pop(&self) -> Option<Child> {
        self.queue().pop_front()
    }

    fn waiting(&self) -> usize {
        self.queue().len()
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, VecDeque<Child>> {
        self.ahead
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A forked child, ready (or getting ready) for a job; its cgroup and pipes are its own.
struct Child {
    script: pipe::Sender,
    stdout: pipe::Receiver,
    stderr: pipe::Receiver,
    result: std::io::PipeReader,
    status: Lines<BufReader<pipe::Receiver>>,
    cgroup: JobCgroup,
}

/// What a child is forked onto, made by the worker before it asks the template: the child's
/// cgroup (its `cgroup.procs` files open for the child to enter) and its pipes. Making them
/// (a directory and limits per cgroup hierarchy) is the worker's share of a fork, done off
/// any job's path.
struct ChildParts {
    cgroup: JobCgroup,
    procs: Vec<std::fs::File>,
    script: (std::io::PipeReader, std::io::PipeWriter),
    stdout: (std::io::PipeReader, std::io::PipeWriter),
    stderr: (std::io::PipeReader, std::io::PipeWriter),
    result: (std::io::PipeReader, std::io::PipeWriter),
    status: (std::io::PipeReader, std::io::PipeWriter),
}

impl ChildParts {
    fn make(launcher: &Launcher, slot: usize) -> Result<Self, SandboxError> {
        let cgroup = launcher
            .cgroups
            .create_job(
                &format!("job-warm-{}", uuid::Uuid::new_v4().simple()),
                &JobSpec {
                    memory_bytes: PENDING_MEMORY_BYTES,
                    max_processes: launcher.config.max_processes,
                    supervisors: 0,
                    slot: Some(slot),
                },
            )?
            .ok_or_else(|| SandboxError::Template("no cgroup for the child".into()))?;
        let procs = cgroup
            .procs_files()
            .into_iter()
            .map(|path| std::fs::OpenOptions::new().write(true).open(path))
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(Self {
            cgroup,
            procs,
            script: std::io::pipe()?,
            stdout: std::io::pipe()?,
            stderr: std::io::pipe()?,
            result: std::io::pipe()?,
            status: std::io::pipe()?,
        })
    }
}

impl Template {
    async fn start(launcher: Arc<Launcher>, kind: Kind, slot: usize) -> Result<Self, SandboxError> {
        let config = &launcher.config;
        let name = format!(
            "template-{slot}-{}-{}",
            kind.as_str(),
            uuid::Uuid::new_v4().simple()
        );
        let cgroup = launcher
            .cgroups
            .create_job(
                &name,
                &JobSpec {
                    memory_bytes: TEMPLATE_MEMORY_BYTES,
                    max_processes: TEMPLATE_TASKS,
                    supervisors: 0,
                    slot: None,
                },
            )?
            .ok_or_else(|| {
                SandboxError::Template(
                    "warm sandboxes need per-job cgroups, and none is usable".into(),
                )
            })?;
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(std::io::Error::from)?;
        let nsjail_log = launcher.dir.path().join(format!("{name}.nsjail.log"));
        let stderr_log = launcher.dir.path().join(format!("{name}.stderr.log"));
        let args = nsjail_args(&NsjailInvocation {
            config,
            role: Role::Template {
                template_uid: config.template_uid(launcher.concurrency, slot),
                preload: kind.preload(),
                template_policy: &launcher.template_policy,
            },
            job_uid: config.job_uid(slot),
            job_dir: &launcher.dir.path().join("files"),
            nsjail_log: &nsjail_log,
            policy: &launcher.job_policy,
        });
        let mut command = supervised_command(Some(&cgroup), &config.nsjail_path, &args);
        command
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr_log)?)
            .kill_on_drop(true);
        command
            .fd_mappings(vec![FdMapping {
                parent_fd: theirs,
                child_fd: RESULT_FD,
            }])
            .map_err(|e| SandboxError::Io(std::io::Error::other(e.to_string())))?;
        let process = command.spawn()?;
        drop(command);
        let control = std::os::unix::net::UnixStream::from(ours);
        control.set_nonblocking(true)?;
        let template = Self {
            kind,
            slot,
            process,
            forker: Arc::new(Forker {
                control: tokio::net::UnixStream::from_std(control)?,
                ahead: std::sync::Mutex::new(VecDeque::new()),
            }),
            logs: [nsjail_log, stderr_log],
            started: Instant::now(),
            served: 0,
            _cgroup: cgroup,
        };
        match tokio::time::timeout(START_TIMEOUT, template.forker.receive()).await {
            Ok(Ok(message)) if message == b"ready" => {}
            Ok(Ok(message)) => {
                return Err(template.failure(&format!(
                    "said {:?} instead of ready",
                    String::from_utf8_lossy(&message)
                )))
            }
            Ok(Err(e)) => return Err(template.failure(&e.to_string())),
            Err(_) => return Err(template.failure("did not become ready in time")),
        }
        for _ in 0..CHILDREN_AHEAD {
            template.fork_now(&launcher)?;
        }
        tracing::info!(
            slot,
            kind = kind.as_str(),
            took_ms = template.started.elapsed().as_millis(),
            "warm template ready"
        );
        Ok(template)
    }

    /// Forks a child on the job's path, for when none is waiting (or at start).
    fn fork_now(&self, launcher: &Launcher) -> Result<(), SandboxError> {
        let child = self
            .forker
            .fork(ChildParts::make(launcher, self.slot)?)
            .map_err(|e| self.failure(&format!("could not be asked to fork: {e}")))?;
        self.forker.push(child);
        Ok(())
    }

    /// A [`SandboxError`] carrying the end of the template's logs.
    fn failure(&self, what: &str) -> SandboxError {
        let tail = |path: &PathBuf| {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(5)..].join(" | ")
        };
        SandboxError::Template(format!(
            "{} template of slot {} {what}; stderr: {}; nsjail: {}",
            self.kind.as_str(),
            self.slot,
            tail(&self.logs[1]),
            tail(&self.logs[0]),
        ))
    }

    /// Why this template should be replaced now, if it should.
    fn due(&self, config: &SandboxConfig) -> Option<&'static str> {
        if self.served >= config.template_max_jobs.max(1) {
            Some("max_jobs")
        } else if self.started.elapsed() >= Duration::from_secs(config.template_max_age_secs.max(1))
        {
            Some("max_age")
        } else {
            None
        }
    }

    /// Runs `job` in the waiting child. `Err` means the template failed and the job did not
    /// run to an outcome (its child, if it started, is dead).
    async fn run(
        &mut self,
        launcher: &Launcher,
        job: &ClaimedJob,
        tap: &OutputTap,
    ) -> Result<Outcome, SandboxError> {
        if let Ok(Some(status)) = self.process.try_wait() {
            return Err(self.failure(&format!("exited ({status})")));
        }
        if self.forker.waiting() == 0 {
            // Jobs came faster than the children forked ahead after the previous ones.
            self.fork_now(launcher)?;
        }
        let mut child = self
            .forker
            .pop()
            .ok_or_else(|| self.failure("has no child ready"))?;
        match tokio::time::timeout(READY_TIMEOUT, child.status.next_line()).await {
            Ok(Ok(Some(line))) if line == "R" => {}
            Ok(Ok(Some(line))) => return Err(self.failure(&format!("child set-up failed: {line}"))),
            Ok(Ok(None) | Err(_)) => return Err(self.failure("died before its child was ready")),
            Err(_) => return Err(self.failure("child was not ready in time")),
        }
        child
            .cgroup
            .set_memory_limit(u64::from(job.limits.memory_mb) << 20)?;
        let config = &launcher.config;
        let timeout_secs = job.limits.timeout.as_secs_f64().ceil();
        let mut input = Vec::with_capacity(job.script.len() + 64);
        // One line of header: the args go in as a JSON string (their text may hold newlines),
        // which the child decodes to the text the client sent.
        let args = serde_json::to_string(&job.args).map_err(std::io::Error::other)?;
        writeln!(
            input,
            "{{\"cpu_limit_secs\": {timeout_secs}, \"args\": {args}}}"
        )?;
        input.extend_from_slice(job.script.as_bytes());
        let handed_ns = monotonic_ns();
        let started = Instant::now();
        let Child {
            mut script,
            stdout,
            stderr,
            result,
            mut status,
            cgroup,
        } = child;
        let written = script.write_all(&input).await;
        drop(script);
        let mut streams = Streams::start(config, stdout, stderr, result, tap)?;
        self.served += 1;
        if let Err(e) = written {
            cgroup.kill_all();
            return Err(self.failure(&format!("child did not take its job: {e}")));
        }

        let deadline = tokio::time::Instant::now() + job.limits.timeout;
        let first = tokio::time::timeout_at(deadline, async {
            tokio::select! {
                line = status.next_line() => First::Reported(line),
                () = streams.closed() => First::Closed,
            }
        })
        .await;
        let (ending, timed_out) = match first {
            Ok(First::Reported(line)) => (line, false),
            Ok(First::Closed) => {
                if streams
                    .record()
                    .is_some_and(|record| verdict::is_complete(record, config.result_limit_bytes))
                {
                    let read = streams.read().await;
                    return Ok(finish_early(
                        config, job, read, cgroup, status, started, handed_ns,
                    ));
                }
                match tokio::time::timeout_at(deadline, status.next_line()).await {
                    Ok(line) => (line, false),
                    Err(_) => (kill_and_wait(&cgroup, &mut status).await, true),
                }
            }
            Err(_) => (kill_and_wait(&cgroup, &mut status).await, true),
        };
        let wall = started.elapsed();
        let jail = match ending {
            Ok(Some(line)) => parse_status(&line),
            Ok(None) | Err(_) if !timed_out => {
                // The template is gone and took the job's child with it.
                cgroup.kill_all();
                return Err(self.failure("died while its child ran a job"));
            }
            Ok(None) | Err(_) => JailExit::Unknown,
        };
        let left = streams.finish(Some(cgroup), job, "warm", handed_ns).await;
        Ok(conclude(
            config,
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

/// What ended the wait for a running job first.
enum First {
    /// The template reported how the child ended.
    Reported(std::io::Result<Option<String>>),
    /// Every process of the job closed its stdout, stderr and result pipe.
    Closed,
}

/// Kills the job after its timeout and waits a little for the template's report.
async fn kill_and_wait(
    cgroup: &JobCgroup,
    status: &mut Lines<BufReader<pipe::Receiver>>,
) -> std::io::Result<Option<String>> {
    cgroup.kill_all();
    tokio::time::timeout(REPORT_GRACE, status.next_line())
        .await
        .unwrap_or(Ok(None))
}

/// The job is over once the harness has written its whole record and every process of the
/// job has closed its output: nothing it does any more can change its outcome. Its processes
/// are killed at once (so no code of the job runs after this), and tearing them down (the
/// kernel unmapping a copy of the template's memory, then destroying the namespaces: several
/// milliseconds for a pandas job), the template's report and the cgroup's removal all happen
/// off the job's path. The harness exits with 0 right after closing its output, so that is
/// the exit the verdict is given; the cgroup's counters are read now, final for memory.
fn finish_early(
    config: &SandboxConfig,
    job: &ClaimedJob,
    read: super::Read,
    cgroup: JobCgroup,
    mut status: Lines<BufReader<pipe::Receiver>>,
    started: Instant,
    handed_ns: Option<u64>,
) -> Outcome {
    cgroup.kill_all();
    let wall = started.elapsed();
    let usage = cgroup.usage();
    let job_id = job.lease.job_id;
    tokio::spawn(async move {
        let _ = tokio::time::timeout(REPORT_GRACE, status.next_line()).await;
        if !cgroup.settle(super::SETTLE_GRACE).await {
            tracing::error!(%job_id, "processes of the job survived SIGKILL");
        }
        let _ = tokio::task::spawn_blocking(move || drop(cgroup)).await;
    });
    conclude(
        config,
        job,
        Ended {
            jail: JailExit::Exited(0),
            timed_out: false,
            wall,
            left: super::Left::new(read, usage, "warm", handed_ns),
        },
    )
}

/// The template's report on how a child ended: `exit <code>` or `signal <number>`.
fn parse_status(line: &str) -> JailExit {
    let mut words = line.split_whitespace();
    match (words.next(), words.next().and_then(|n| n.parse().ok())) {
        (Some("exit"), Some(code)) => JailExit::Exited(code),
        (Some("signal"), Some(number)) => JailExit::Signaled(number),
        _ => JailExit::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_that_name_numpy_or_pandas_go_to_the_scientific_template() {
        assert_eq!(Kind::for_script("import pandas as pd\n"), Kind::Scientific);
        assert_eq!(
            Kind::for_script("from numpy import array\n"),
            Kind::Scientific
        );
        assert_eq!(Kind::for_script("def main():\n    return 1\n"), Kind::Light);
    }

    #[test]
    fn the_templates_report_is_read_as_the_childs_fate() {
        assert_eq!(parse_status("exit 0"), JailExit::Exited(0));
        assert_eq!(parse_status("exit 3"), JailExit::Exited(3));
        assert_eq!(parse_status("signal 9"), JailExit::Signaled(9));
        assert_eq!(parse_status("R"), JailExit::Unknown);
        assert_eq!(parse_status("exit"), JailExit::Unknown);
    }
}
