//! `TestApp`: one API process and (optionally) one worker process on a fresh database, with
//! a method per endpoint.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use testkit::TestDatabase;
use tokio::process::{Child, Command};

pub(crate) struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub database_url: String,
    pub backend: Backend,
    dir: tempfile::TempDir,
    api: Child,
    workers: Vec<Child>,
    /// Dropped after the processes (fields drop in order, after `Drop::drop`).
    _postgres_database: Option<TestDatabase>,
    capture_logs: bool,
    /// Workers started so far, restarts included: each gets a log file of its own.
    started_workers: usize,
    /// Secrets of the keys [`Options::api_keys`] asked for.
    pub keys: Vec<String>,
    /// The log name of each running worker, by index.
    worker_names: Vec<String>,
    /// The log names of the workers killed so far.
    killed_workers: Vec<String>,
}

/// Which store the processes run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// `TEST_STORE=postgres` runs the whole end-to-end suite on Postgres.
    pub(crate) fn from_env() -> Self {
        match std::env::var("TEST_STORE").as_deref() {
            Ok("postgres") => Self::Postgres,
            _ => Self::Sqlite,
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let _ = self.api.start_kill();
        for worker in &mut self.workers {
            let _ = worker.start_kill();
        }
    }
}

/// A command for one of the service's binaries with an empty environment but `PATH`: every
/// setting a test relies on is set by the test, so nothing the caller exported (a `PORT`, a
/// `MAX_SCRIPT_BYTES`) changes what it checks.
fn service(program: &std::path::Path) -> Command {
    let mut command = Command::new(program);
    command.env_clear();
    if let Some(path) = std::env::var_os("PATH") {
        command.env("PATH", path);
    }
    command
}

/// Sends the process's JSON log lines at `info` to `<dir>/<name>.log`.
fn capture_logs(command: &mut Command, dir: &std::path::Path, name: &str) {
    let file = std::fs::File::create(dir.join(format!("{name}.log"))).expect("log file");
    command
        .env("RUST_LOG", "info")
        .env("LOG_FORMAT", "json")
        .stderr(file);
}

/// Whether the workers the tests start fork jobs from warm templates: `SANDBOX_MODE` as the
/// worker reads it (its default is warm). `make test` runs the escape suite both ways.
pub(crate) fn warm_sandboxes() -> bool {
    std::env::var("SANDBOX_MODE").map_or(true, |mode| mode != "cold")
}

/// The directory holding the built `api` and `worker` binaries.
/// Where cargo put the workspace's binaries: the profile directory this test binary was
/// built into (`target/debug/deps/system-…` → `target/debug`).
pub(crate) fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let dir = exe
        .parent()
        .and_then(std::path::Path::parent)
        .expect("the test binary sits in <profile>/deps")
        .to_path_buf();
    for name in ["api", "worker"] {
        assert!(
            dir.join(name).is_file(),
            "{} is missing: build the binaries first (cargo build --workspace --bins)",
            dir.join(name).display()
        );
    }
    dir
}

/// The workspace root: `nsjail.cfg`, the README and the container files are there.
pub(crate) fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

pub(crate) fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

/// Status and JSON body of a response; every answer of the API must be JSON.
async fn json_response(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.expect("body");
    let value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("response is not JSON ({e}): {text}"));
    (status, value)
}

/// Sends SIGTERM to a process and waits (up to 30 s) for it to exit.
async fn terminate(child: &mut Child) -> std::process::ExitStatus {
    let pid = child.id().expect("process running");
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(sent.success());
    tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("process exits after SIGTERM")
        .expect("wait for process")
}

/// Settings a test may change.
#[derive(Clone)]
pub(crate) struct Options {
    pub with_worker: bool,
    pub backend: Backend,
    pub api_env: Vec<(&'static str, String)>,
    pub worker_env: Vec<(&'static str, String)>,
    /// Write every process's JSON logs at `info` to files that [`TestApp::logs`] reads.
    pub capture_logs: bool,
    /// API keys made before the API starts, each with `api keys create` and these arguments
    /// (`--name alice --max-queued 3`); their secrets are in [`TestApp::keys`], in this order.
    pub api_keys: Vec<&'static str>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            with_worker: true,
            backend: Backend::from_env(),
            api_env: Vec::new(),
            worker_env: Vec::new(),
            capture_logs: false,
            api_keys: Vec::new(),
        }
    }
}

/// A second API process on an app's database, stopped when dropped.
pub(crate) struct ExtraApi {
    pub base: String,
    _process: Child,
}

impl TestApp {
    /// Starts another API process on this app's database, with `env` on top of the first's
    /// settings, and waits until it is ready.
    pub(crate) async fn start_another_api(&self, env: &[(&'static str, String)]) -> ExtraApi {
        let port = free_port();
        let process = service(&bin_dir().join("api"))
            .env("DATABASE_URL", &self.database_url)
            .env("PORT", port.to_string())
            .env("HOST", "127.0.0.1")
            .env("RUST_LOG", "warn")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start api");
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(response) = self.client.get(format!("{base}/ready")).send().await {
                if response.status() == StatusCode::OK {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the second api did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        ExtraApi {
            base,
            _process: process,
        }
    }
}

/// A client for the apps under test. reqwest's TLS needs a crypto provider installed first,
/// as the API installs one for its webhooks (plain HTTP is all the tests use).
pub(crate) fn http_client() -> reqwest::Client {
    #[allow(deprecated)] // ring's provider: see the API's webhooks module
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// Runs the `api` binary with `args` (a command such as `keys list`) against `database_url`.
pub(crate) async fn api_command(database_url: &str, args: &[&str]) -> std::process::Output {
    service(&bin_dir().join("api"))
        .env("DATABASE_URL", database_url)
        .args(args)
        .output()
        .await
        .expect("run api")
}

pub(crate) async fn spawn_app() -> TestApp {
    spawn_app_with(Options::default()).await
}

pub(crate) async fn spawn_app_with(options: Options) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let (database_url, postgres_database) = match options.backend {
        Backend::Sqlite => (
            format!("sqlite://{}", dir.path().join("jobs.db").display()),
            None,
        ),
        Backend::Postgres => {
            let database = TestDatabase::create("runbox_e2e").await;
            (database.url(), Some(database))
        }
    };
    let mut keys = Vec::new();
    for arguments in &options.api_keys {
        let mut args = vec!["keys", "create"];
        args.extend(arguments.split_whitespace());
        let created = api_command(&database_url, &args).await;
        assert!(created.status.success(), "api keys create: {created:?}");
        keys.push(
            String::from_utf8(created.stdout)
                .expect("utf-8")
                .trim()
                .to_owned(),
        );
    }
    let port = free_port();
    let mut api = service(&bin_dir().join("api"));
    api.env("DATABASE_URL", &database_url)
        .env("PORT", port.to_string())
        .env("HOST", "127.0.0.1")
        .env("RUST_LOG", "warn")
        .envs(options.api_env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::null())
        .kill_on_drop(true);
    if options.capture_logs {
        capture_logs(&mut api, dir.path(), "api");
    }
    let api = api.spawn().expect("start api");
    let mut app = TestApp {
        base: format!("http://127.0.0.1:{port}"),
        client: http_client(),
        database_url,
        backend: options.backend,
        dir,
        api,
        workers: Vec::new(),
        _postgres_database: postgres_database,
        capture_logs: options.capture_logs,
        started_workers: 0,
        keys,
        worker_names: Vec::new(),
        killed_workers: Vec::new(),
    };
    app.wait_until_ready().await;
    if options.with_worker {
        app.start_worker(&options.worker_env);
    }
    app
}

impl TestApp {
    async fn wait_until_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(response) = self.client.get(format!("{}/ready", self.base)).send().await {
                if response.status() == StatusCode::OK {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("api did not become ready");
    }

    /// Starts a worker process; it stops when the app is dropped.
    pub(crate) fn start_worker(&mut self, extra_env: &[(&'static str, String)]) {
        let root = repo_root();
        // Distinct outside uids per test process and worker, so per-uid limits of concurrently
        // running tests never add up.
        let slot = u32::try_from(self.workers.len() % 8).unwrap_or(0);
        let uid_base = 200_000 + (std::process::id() % 10_000) * 64 + slot * 8;
        let runtime = std::env::var("RUNTIME_DIR").unwrap_or_else(|_| "/opt/runbox".into());
        let mut worker = service(&bin_dir().join("worker"));
        if let Some(mode) = std::env::var_os("SANDBOX_MODE") {
            // The suite's own switch (`make test` runs it warm, then cold).
            worker.env("SANDBOX_MODE", mode);
        }
        worker
            .current_dir(&root)
            .env("DATABASE_URL", &self.database_url)
            .env("NSJAIL_PATH", format!("{runtime}/bin/nsjail"))
            .env("PYTHON_RUNTIME", format!("{runtime}/python"))
            .env("NSJAIL_CONFIG", root.join("nsjail.cfg"))
            .env("WORKER_CONCURRENCY", "2")
            .env("SANDBOX_UID_BASE", uid_base.to_string())
            .env("RUST_LOG", "warn")
            // Off unless a test asks for it: the default port would collide between tests.
            .env("METRICS_ADDR", "off")
            .envs(extra_env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .kill_on_drop(true);
        let name = format!("worker-{:03}", self.started_workers);
        if self.capture_logs {
            capture_logs(&mut worker, self.dir.path(), &name);
        }
        self.started_workers += 1;
        self.workers.push(worker.spawn().expect("start worker"));
        self.worker_names.push(name);
    }

    /// How worker `index` exited, or `None` while it still runs.
    pub(crate) fn worker_exit(&mut self, index: usize) -> Option<std::process::ExitStatus> {
        let worker = self.workers.get_mut(index).expect("worker exists");
        worker.try_wait().expect("worker status")
    }

    /// Kills worker `index` with SIGKILL, as a crash would, and starts a fresh one in its place.
    pub(crate) async fn crash_and_restart_worker(
        &mut self,
        index: usize,
        env: &[(&'static str, String)],
    ) {
        self.kill_worker(index).await;
        self.start_worker(env);
        let replacement = self.workers.pop().expect("just started");
        self.workers[index] = replacement;
        let name = self.worker_names.pop().expect("just started");
        self.worker_names[index] = name;
    }

    /// Kills worker `index` with SIGKILL, as a crash would.
    pub(crate) async fn kill_worker(&mut self, index: usize) {
        let worker = self.workers.get_mut(index).expect("worker exists");
        worker.kill().await.expect("kill worker");
        self.killed_workers.push(self.worker_names[index].clone());
    }

    /// Sends SIGTERM to the API and waits for it to exit; returns its exit status.
    pub(crate) async fn terminate_api(&mut self) -> std::process::ExitStatus {
        terminate(&mut self.api).await
    }

    /// Sends SIGTERM to worker `index` and waits for it to exit; returns its exit status.
    pub(crate) async fn terminate_worker(&mut self, index: usize) -> std::process::ExitStatus {
        terminate(self.workers.get_mut(index).expect("worker exists")).await
    }

    pub(crate) async fn delete(&self, path: &str) -> (StatusCode, Value) {
        let response = self
            .client
            .delete(format!("{}{path}", self.base))
            .send()
            .await
            .expect("request sent");
        json_response(response).await
    }

    /// A POST to `path`, for tests that need headers or the raw response.
    pub(crate) fn post_request(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.post(format!("{}{path}", self.base))
    }

    pub(crate) async fn post(
        &self,
        path: &str,
        body: impl Into<reqwest::Body>,
    ) -> (StatusCode, Value) {
        let response = self
            .post_request(path)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request sent");
        json_response(response).await
    }

    pub(crate) async fn execute(&self, body: Value) -> (StatusCode, Value) {
        self.post("/execute", body.to_string()).await
    }

    /// Runs `script` with default limits.
    pub(crate) async fn run(&self, script: &str) -> (StatusCode, Value) {
        self.execute(json!({ "script": script })).await
    }

    pub(crate) async fn submit(&self, body: Value) -> (StatusCode, Value) {
        self.post("/jobs", body.to_string()).await
    }

    pub(crate) async fn validate(&self, body: Value) -> (StatusCode, Value) {
        self.post("/validate", body.to_string()).await
    }

    pub(crate) async fn get(&self, path: &str) -> (StatusCode, Value) {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("request sent");
        json_response(response).await
    }

    /// The raw log of one process (`api`, `worker-0`, …) of an app started with `capture_logs`.
    pub(crate) fn process_log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }

    /// Every JSON log line written so far by the processes of an app started with
    /// `capture_logs`, api first.
    pub(crate) fn log_lines(&self) -> Vec<Value> {
        self.read_logs()
    }

    /// The log lines of every worker ever started, each with whether it was killed, skipping
    /// any line a killed worker left unfinished.
    pub(crate) fn worker_logs(&self) -> Vec<(bool, Vec<Value>)> {
        (0..self.started_workers)
            .map(|n| {
                let name = format!("worker-{n:03}");
                let lines = self
                    .process_log(&name)
                    .lines()
                    .filter_map(|line| serde_json::from_str(line).ok())
                    .collect();
                (self.killed_workers.contains(&name), lines)
            })
            .collect()
    }

    fn read_logs(&self) -> Vec<Value> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .expect("temp dir")
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.extension().is_some_and(|ext| ext == "log"))
            .collect();
        files.sort();
        files
            .iter()
            .flat_map(|path| {
                std::fs::read_to_string(path)
                    .unwrap_or_default()
                    .lines()
                    .map(|line| match serde_json::from_str(line) {
                        Ok(value) => value,
                        Err(e) => panic!("log line is not JSON ({e}): {line}"),
                    })
                    .collect::<Vec<Value>>()
            })
            .collect()
    }

    pub(crate) async fn job(&self, id: &str) -> (StatusCode, Value) {
        self.get(&format!("/jobs/{id}")).await
    }

    /// Polls `GET /jobs/<id>` until the job is terminal.
    pub(crate) async fn wait_for_terminal(&self, id: &str, limit: Duration) -> Value {
        match self.poll_until_terminal(id, limit).await {
            Ok(job) => job,
            Err(job) => panic!("job {id} still {}", job["status"]),
        }
    }

    /// Polls `GET /jobs/<id>` until the job is terminal (`Ok`) or `limit` passes (`Err` with
    /// the job as last seen).
    pub(crate) async fn poll_until_terminal(
        &self,
        id: &str,
        limit: Duration,
    ) -> Result<Value, Value> {
        let deadline = Instant::now() + limit;
        loop {
            let (status, job) = self.job(id).await;
            assert_eq!(status, StatusCode::OK, "{job}");
            if !matches!(job["status"].as_str(), Some("queued" | "running")) {
                return Ok(job);
            }
            if Instant::now() >= deadline {
                return Err(job);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
