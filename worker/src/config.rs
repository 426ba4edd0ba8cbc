//! Worker settings: where the queue is, how many jobs run at once, how sandboxes are built.

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use shared::config::{LogConfig, StoreConfig};

/// Everything the `worker` binary is configured with; `worker --help` lists it.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "worker",
    about = "Claims queued Python jobs and runs each one under nsjail."
)]
pub struct WorkerConfig {
    #[command(flatten)]
    pub store: StoreConfig,

    #[command(flatten)]
    pub log: LogConfig,

    #[command(flatten)]
    pub sandbox: SandboxConfig,

    /// How jobs are run: `nsjail` (the sandbox), or `noop`, a BENCHMARK-ONLY mode that marks
    /// every job succeeded without running it, to measure the queue alone.
    #[arg(long, env = "WORKER_EXECUTOR", value_enum, default_value = "nsjail")]
    pub executor: ExecutorKind,

    /// Name recorded on every job this worker runs (default: hostname-pid).
    #[arg(long, env = "WORKER_ID")]
    pub worker_id: Option<String>,

    /// Jobs run at the same time by this process (default: number of CPUs).
    #[arg(long, env = "WORKER_CONCURRENCY")]
    pub concurrency: Option<usize>,

    /// How often an idle worker looks for new jobs when the store pushes no wake-ups
    /// (`DATABASE_NOTIFICATIONS=false`, or inotify unavailable), in milliseconds. With them, on
    /// either database, it waits for a wake-up and polls only every
    /// `DATABASE_BACKSTOP_POLL_MS`.
    #[arg(long, env = "WORKER_POLL_MS", default_value_t = 20)]
    pub poll_ms: u64,

    /// How long a claim stays valid without a heartbeat, in seconds.
    #[arg(long, env = "WORKER_LEASE_SECS", default_value_t = 15)]
    pub lease_secs: u64,

    /// How often a running job's lease is renewed, in milliseconds; a cancelled job is
    /// noticed and its sandbox killed within one interval.
    #[arg(long, env = "WORKER_HEARTBEAT_MS", default_value_t = 500)]
    pub heartbeat_ms: u64,

    /// Jobs of one API key running at once across all workers, for keys that set no
    /// `--max-running` of their own (0: no limit). Jobs past it wait in the queue while other
    /// tenants' jobs run; jobs submitted without a key have no such limit.
    #[arg(long, env = "QUOTA_MAX_RUNNING", default_value_t = 0)]
    pub quota_max_running: u32,

    /// Runs a job gets when its worker disappears mid-run; after the last it fails with
    /// `worker_lost`.
    #[arg(long, env = "WORKER_MAX_ATTEMPTS", default_value_t = 3)]
    pub max_attempts: u32,

    /// How long running jobs may finish after SIGTERM/SIGINT before they are released.
    #[arg(long, env = "WORKER_SHUTDOWN_GRACE_SECS", default_value_t = 30)]
    pub shutdown_grace_secs: u64,

    /// Where Prometheus metrics are served (`GET /metrics`), as host:port; `off` (or empty)
    /// serves none (default: the first free port from 127.0.0.1:9091 up).
    #[arg(long, env = "METRICS_ADDR")]
    pub metrics_addr: Option<MetricsAddr>,
}

impl WorkerConfig {
    /// The worker's name in the jobs table.
    #[must_use]
    pub fn worker_id(&self) -> String {
        self.worker_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_else(|_| "worker".to_owned());
            format!("{host}-{}", std::process::id())
        })
    }

    /// Jobs run at the same time.
    #[must_use]
    pub fn concurrency(&self) -> usize {
        self.concurrency
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
            .max(1)
    }

    /// Where metrics are served; [`MetricsAddr::Default`] when `METRICS_ADDR` is not set.
    #[must_use]
    pub fn metrics_addr(&self) -> MetricsAddr {
        self.metrics_addr.unwrap_or(MetricsAddr::Default)
    }

    #[must_use]
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_ms.max(1))
    }

    #[must_use]
    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_secs.max(1))
    }
}

/// The metrics listener's address, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsAddr {
    /// Not configured: the first free port of [`DEFAULT_METRICS_PORTS`] on loopback, so
    /// several workers on one host start without settings of their own.
    Default,
    Off,
    /// Configured: this address or, when it is taken, no worker.
    Listen(SocketAddr),
}

/// The ports tried, in order, when `METRICS_ADDR` is not set.
pub const DEFAULT_METRICS_PORTS: RangeInclusive<u16> = 9091..=9190;

impl FromStr for MetricsAddr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim() {
            "" | "off" => Ok(Self::Off),
            address => address.parse().map(Self::Listen).map_err(|_| {
                format!("`{address}` is not host:port (e.g. 127.0.0.1:9091) or `off`")
            }),
        }
    }
}

/// Which executor runs claimed jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExecutorKind {
    /// Each job in a fresh nsjail sandbox.
    Nsjail,
    /// Benchmark mode: jobs succeed without running.
    Noop,
}

/// How sandboxes start; both give each job a fresh sandbox of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SandboxMode {
    /// Each job's sandbox is forked from a template that has Python, the harness and
    /// numpy/pandas loaded (see docs/warm-sandboxes.md); jobs run cold while no template is
    /// ready, and all of them where templates cannot run.
    Warm,
    /// nsjail and Python start afresh for every job.
    Cold,
}

/// How each sandbox is built.
#[derive(Debug, Clone, clap::Args)]
pub struct SandboxConfig {
    /// `warm` (default): fork each job's sandbox from a pre-loaded template; `cold`: start
    /// nsjail and Python per job.
    #[arg(long, env = "SANDBOX_MODE", value_enum, default_value = "warm")]
    pub mode: SandboxMode,

    /// Jobs a warm template serves before it is replaced by a fresh one (which renews the
    /// hash seed and memory layout its children share).
    #[arg(long, env = "SANDBOX_TEMPLATE_MAX_JOBS", default_value_t = 5000)]
    pub template_max_jobs: u32,

    /// Seconds a warm template serves before it is replaced.
    #[arg(long, env = "SANDBOX_TEMPLATE_MAX_AGE_SECS", default_value_t = 600)]
    pub template_max_age_secs: u64,

    /// The nsjail binary.
    #[arg(long, env = "NSJAIL_PATH", default_value = "/opt/runbox/bin/nsjail")]
    pub nsjail_path: PathBuf,

    /// The sandbox policy file.
    #[arg(long, env = "NSJAIL_CONFIG", default_value = "nsjail.cfg")]
    pub nsjail_config: PathBuf,

    /// The Python runtime (a virtualenv holding numpy and pandas), mounted read-only.
    #[arg(long, env = "PYTHON_RUNTIME", default_value = "/opt/runbox/python")]
    pub python_runtime: PathBuf,

    /// Bytes of stdout and of stderr kept per job; the rest is dropped and the job marked
    /// truncated.
    #[arg(long, env = "OUTPUT_LIMIT_BYTES", default_value_t = 1 << 20)]
    pub output_limit_bytes: usize,

    /// Largest JSON encoding of `main()`'s return value that is kept, in bytes.
    #[arg(long, env = "RESULT_LIMIT_BYTES", default_value_t = 1 << 20)]
    pub result_limit_bytes: usize,

    /// First outside uid/gid used for sandboxes; slot n's jobs run as base + n, so concurrent
    /// jobs never share a uid, and (warm mode) its templates as base + concurrency + n. Give
    /// each worker on a host its own range of 2 × concurrency ids.
    #[arg(long, env = "SANDBOX_UID_BASE", default_value_t = 100_000)]
    pub uid_base: u32,

    /// Maximum processes and threads per job.
    #[arg(long, env = "SANDBOX_MAX_PROCESSES", default_value_t = 64)]
    pub max_processes: u32,

    /// Root of the cgroup hierarchy used for per-job memory, process and CPU limits (v2 if
    /// it is a unified mount, else the v1 hierarchies below it).
    #[arg(long, env = "CGROUP_ROOT", default_value = "/sys/fs/cgroup")]
    pub cgroup_root: PathBuf,

    /// Where per-job scratch directories (script, harness) are created on the host.
    #[arg(long, env = "SANDBOX_WORK_DIR", default_value = "/tmp")]
    pub work_dir: PathBuf,
}

impl SandboxConfig {
    /// The outside uid and gid of slot `slot`'s jobs.
    #[must_use]
    pub fn job_uid(&self, slot: usize) -> u32 {
        self.uid_base
            .saturating_add(u32::try_from(slot).unwrap_or(u32::MAX))
    }

    /// The outside uid and gid of slot `slot`'s warm templates, above every slot's job uid.
    #[must_use]
    pub fn template_uid(&self, concurrency: usize, slot: usize) -> u32 {
        self.job_uid(concurrency.saturating_add(slot))
    }

    /// The interpreter inside the runtime.
    #[must_use]
    pub fn python(&self) -> PathBuf {
        self.python_runtime.join("bin").join("python3")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn settings(args: &[&str]) -> WorkerConfig {
        testkit::settings_without_env(args)
    }

    #[test]
    fn metrics_are_served_on_a_free_loopback_port_unless_configured() {
        let default = settings(&["worker"]);
        assert_eq!(default.metrics_addr(), MetricsAddr::Default);
        for off in ["off", ""] {
            let config = settings(&["worker", "--metrics-addr", off]);
            assert_eq!(config.metrics_addr(), MetricsAddr::Off);
        }
        let first = settings(&["worker", "--metrics-addr", "127.0.0.1:9091"]);
        assert_eq!(
            first.metrics_addr(),
            MetricsAddr::Listen(SocketAddr::from(([127, 0, 0, 1], 9091)))
        );
        let any = settings(&["worker", "--metrics-addr", "0.0.0.0:9100"]);
        assert_eq!(
            any.metrics_addr(),
            MetricsAddr::Listen(SocketAddr::from(([0, 0, 0, 0], 9100)))
        );
        assert!(WorkerConfig::try_parse_from(["worker", "--metrics-addr", "localhost"]).is_err());
    }
}
