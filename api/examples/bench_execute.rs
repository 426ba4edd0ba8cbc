//! Benchmark: `/execute` against a running api + worker, each figure printed beside its target
//! and, where the target is relative, as a ratio to a floor measured in the same run (the
//! sandbox runtime's bare `python3 -I -c pass` and `python3 -I -c "import pandas"`).
//!
//! `make bench` (scripts/bench.sh) runs, for each store, before starting the services:
//!   `bench_execute floors --out FLOORS.json`
//! and once they answer `/ready`:
//!   `bench_execute load --store NAME --base http://127.0.0.1:PORT --floors FLOORS.json \
//!      --api-pid PID --worker-pid PID`
//! A missed target is reported (`MISS`) and the exit status stays 0; a failed job or a service
//! that is not there is an error.

#![allow(clippy::print_stdout)] // a benchmark reports on stdout

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

const PASS_RUNS: usize = 30;
const PANDAS_IMPORT_RUNS: usize = 10;
const FLOOR_WARMUPS: usize = 3;
const TRIVIAL_RUNS: usize = 200;
const PANDAS_RUNS: usize = 100;
const LIGHT_WARMUPS: usize = 5;
const CLIENTS: usize = 8;
const THROUGHPUT_WINDOW: Duration = Duration::from_secs(5);
/// Quiet time after the load before idle CPU is measured, so jobs finishing, leases and
/// sandbox teardown are not counted as idle.
const IDLE_SETTLE: Duration = Duration::from_secs(3);
/// Long enough that one clock tick (usually 10 ms) is 1 ms/s, well under the 5 ms/s target.
const IDLE_WINDOW: Duration = Duration::from_secs(10);

const TRIVIAL_MAX_PASS_RATIO_P50: f64 = 0.5;
const TRIVIAL_MAX_PASS_RATIO_P99: f64 = 1.0;
const PANDAS_MAX_IMPORT_RATIO_P50: f64 = 0.05;
const TRIVIAL_MIN_JOBS_PER_SEC: f64 = 300.0;
const PANDAS_MIN_JOBS_PER_SEC: f64 = 100.0;
const IDLE_MAX_CPU_MS_PER_SEC: f64 = 5.0;

#[derive(Parser)]
#[command(about = "/execute latency, throughput and idle CPU against their targets")]
enum Cli {
    /// Measure the floors with the sandbox runtime's Python and write them to `--out`.
    Floors {
        #[arg(long, env = "PYTHON_RUNTIME", default_value = "/opt/runbox/python")]
        python_runtime: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Load a running api + worker and print the table.
    Load {
        /// Label for the table (`sqlite`, `postgres`).
        #[arg(long)]
        store: String,
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        base: String,
        /// The file `floors` wrote.
        #[arg(long)]
        floors: PathBuf,
        #[arg(long)]
        api_pid: u32,
        #[arg(long)]
        worker_pid: u32,
    },
}

/// p50 wall times of the bare runtime, in milliseconds.
#[derive(Serialize, Deserialize)]
struct Floors {
    pass_ms: f64,
    import_pandas_ms: f64,
}

/// A script and the `result` its successful run must return.
struct Script {
    source: &'static str,
    expected: fn() -> Value,
}

const TRIVIAL: Script = Script {
    source: "def main():\n    return {\"ok\": True}\n",
    expected: || json!({ "ok": true }),
};

const PANDAS: Script = Script {
    source: "import pandas as pd\n\n\
             def main():\n    \
                 df = pd.DataFrame({\"a\": range(100), \"b\": range(100)})\n    \
                 return int(df.sum().sum())\n",
    expected: || json!(9900),
};

fn main() -> anyhow::Result<()> {
    match Cli::parse() {
        Cli::Floors {
            python_runtime,
            out,
        } => {
            let floors = measure_floors(&python_runtime.join("bin/python3"))?;
            std::fs::write(&out, serde_json::to_vec(&floors)?)
                .with_context(|| format!("writing {}", out.display()))
        }
        Cli::Load {
            store,
            base,
            floors,
            api_pid,
            worker_pid,
        } => {
            let text = std::fs::read(&floors)
                .with_context(|| format!("reading {} (run `floors` first)", floors.display()))?;
            let floors: Floors = serde_json::from_slice(&text)?;
            tokio::runtime::Runtime::new()?.block_on(load(
                &store,
                &base,
                &floors,
                Pids {
                    api: api_pid,
                    worker: worker_pid,
                },
            ))
        }
    }
}

fn measure_floors(python: &Path) -> anyhow::Result<Floors> {
    let pass = floor(python, "pass", PASS_RUNS)?;
    let import_pandas = floor(python, "import pandas", PANDAS_IMPORT_RUNS)?;
    println!(
        "floors ({}): python3 -I -c pass p50 {}, python3 -I -c \"import pandas\" p50 {}  ({PASS_RUNS}/{PANDAS_IMPORT_RUNS} runs)",
        python.display(),
        ms(pass),
        ms(import_pandas)
    );
    Ok(Floors {
        pass_ms: millis(pass),
        import_pandas_ms: millis(import_pandas),
    })
}

/// p50 of spawning `python3 -I -c CODE` and waiting for it, after a few warm-ups.
fn floor(python: &Path, code: &str, runs: usize) -> anyhow::Result<Duration> {
    let mut times = Vec::with_capacity(runs);
    for run in 0..FLOOR_WARMUPS + runs {
        let started = Instant::now();
        let status = std::process::Command::new(python)
            .args(["-I", "-c", code])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .with_context(|| format!("running {}", python.display()))?;
        let elapsed = started.elapsed();
        anyhow::ensure!(
            status.success(),
            "{} -I -c {code:?}: {status}",
            python.display()
        );
        if run >= FLOOR_WARMUPS {
            times.push(elapsed);
        }
    }
    times.sort();
    Ok(percentile(&times, 0.5))
}

#[derive(Clone, Copy)]
struct Pids {
    api: u32,
    worker: u32,
}

async fn load(store: &str, base: &str, floors: &Floors, pids: Pids) -> anyhow::Result<()> {
    for (name, pid) in [("api", pids.api), ("worker", pids.worker)] {
        anyhow::ensure!(
            Path::new(&format!("/proc/{pid}")).exists(),
            "the {name} (pid {pid}) is not running"
        );
    }
    let pass = Duration::from_secs_f64(floors.pass_ms / 1000.0);
    let import_pandas = Duration::from_secs_f64(floors.import_pandas_ms / 1000.0);
    api::webhooks::install_tls_provider();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()?;
    let mut rows = Vec::new();

    let trivial = light_load(&client, base, &TRIVIAL, TRIVIAL_RUNS).await?;
    rows.push(Row::ratio(
        "trivial /execute p50",
        percentile(&trivial, 0.5),
        "python -c pass",
        pass,
        Some(TRIVIAL_MAX_PASS_RATIO_P50),
    ));
    rows.push(Row::ratio(
        "trivial /execute p99",
        percentile(&trivial, 0.99),
        "python -c pass",
        pass,
        Some(TRIVIAL_MAX_PASS_RATIO_P99),
    ));

    let pandas = light_load(&client, base, &PANDAS, PANDAS_RUNS).await?;
    rows.push(Row::ratio(
        "pandas /execute p50",
        percentile(&pandas, 0.5),
        "import pandas",
        import_pandas,
        Some(PANDAS_MAX_IMPORT_RATIO_P50),
    ));
    rows.push(Row::ratio(
        "pandas /execute p99",
        percentile(&pandas, 0.99),
        "import pandas",
        import_pandas,
        None,
    ));

    for (name, script, min) in [
        (
            "trivial jobs/s, 8 clients",
            &TRIVIAL,
            TRIVIAL_MIN_JOBS_PER_SEC,
        ),
        ("pandas jobs/s, 8 clients", &PANDAS, PANDAS_MIN_JOBS_PER_SEC),
    ] {
        let (jobs, elapsed) = throughput(&client, base, script).await?;
        rows.push(Row::at_least(
            name,
            jobs as f64 / elapsed.as_secs_f64(),
            &format!("{jobs} jobs in {:.1} s", elapsed.as_secs_f64()),
            min,
        ));
    }

    tokio::time::sleep(IDLE_SETTLE).await;
    let clock_ticks = clock_ticks_per_sec();
    let before = [tree_cpu_ticks(pids.api)?, tree_cpu_ticks(pids.worker)?];
    tokio::time::sleep(IDLE_WINDOW).await;
    let after = [tree_cpu_ticks(pids.api)?, tree_cpu_ticks(pids.worker)?];
    for ((name, before), after) in ["idle CPU, api tree", "idle CPU, worker tree"]
        .into_iter()
        .zip(before)
        .zip(after)
    {
        let cpu_ms = after.saturating_sub(before) as f64 * 1000.0 / clock_ticks;
        rows.push(Row::below(
            name,
            cpu_ms / IDLE_WINDOW.as_secs_f64(),
            &format!(
                "{} s after {} s quiet, {:.0} ms ticks",
                IDLE_WINDOW.as_secs(),
                IDLE_SETTLE.as_secs(),
                1000.0 / clock_ticks
            ),
            IDLE_MAX_CPU_MS_PER_SEC,
        ));
    }

    println!(
        "store {store}: light load {TRIVIAL_RUNS} trivial + {PANDAS_RUNS} pandas sequential requests, \
         throughput {CLIENTS} clients for {} s each",
        THROUGHPUT_WINDOW.as_secs()
    );
    for row in &rows {
        println!(
            "  {:<28} {:>12}   {:<42} {:<22} {}",
            row.name, row.figure, row.reference, row.target, row.verdict
        );
    }
    Ok(())
}

/// One `/execute`: its wall time, or an error unless the job succeeded with the expected result.
async fn execute(
    client: &reqwest::Client,
    base: &str,
    script: &Script,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let response = client
        .post(format!("{base}/execute"))
        .json(&json!({ "script": script.source }))
        .send()
        .await
        .context("POST /execute")?;
    let status = response.status();
    let body = response.bytes().await?;
    let elapsed = started.elapsed();
    anyhow::ensure!(
        status == reqwest::StatusCode::OK,
        "job failed: /execute answered {status}: {}",
        String::from_utf8_lossy(&body)
    );
    let body: Value = serde_json::from_slice(&body)?;
    anyhow::ensure!(
        body["result"] == (script.expected)(),
        "job returned a wrong result: {body}"
    );
    Ok(elapsed)
}

/// Sorted wall times of `runs` requests one at a time, after a few warm-ups.
async fn light_load(
    client: &reqwest::Client,
    base: &str,
    script: &Script,
    runs: usize,
) -> anyhow::Result<Vec<Duration>> {
    for _ in 0..LIGHT_WARMUPS {
        execute(client, base, script).await?;
    }
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        times.push(execute(client, base, script).await?);
    }
    times.sort();
    Ok(times)
}

/// Jobs finished by `CLIENTS` clients each sending one request after another for
/// `THROUGHPUT_WINDOW`, and the time until the last of them finished.
async fn throughput(
    client: &reqwest::Client,
    base: &str,
    script: &'static Script,
) -> anyhow::Result<(usize, Duration)> {
    // One request per client first, so every worker slot has run once before the clock starts.
    let mut warmups = tokio::task::JoinSet::new();
    for _ in 0..CLIENTS {
        let (client, base) = (client.clone(), base.to_owned());
        warmups.spawn(async move { execute(&client, &base, script).await });
    }
    while let Some(done) = warmups.join_next().await {
        done??;
    }

    let started = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..CLIENTS {
        let (client, base) = (client.clone(), base.to_owned());
        clients.spawn(async move {
            let mut jobs = 0;
            let mut last = Duration::ZERO;
            while started.elapsed() < THROUGHPUT_WINDOW {
                execute(&client, &base, script).await?;
                jobs += 1;
                last = started.elapsed();
            }
            anyhow::Ok((jobs, last))
        });
    }
    let (mut jobs, mut elapsed) = (0, Duration::ZERO);
    while let Some(done) = clients.join_next().await {
        let (n, last) = done??;
        jobs += n;
        elapsed = elapsed.max(last);
    }
    Ok((jobs, elapsed))
}

/// CPU time, in clock ticks, used so far by `root` and every process below it: live
/// processes' own time plus what they have reaped from children that have exited, so a
/// sandbox that comes and goes within the window is counted by its parent.
///
/// # Errors
/// When `root` is not running.
fn tree_cpu_ticks(root: u32) -> anyhow::Result<u64> {
    let mut processes = HashMap::new();
    for entry in std::fs::read_dir("/proc")? {
        let Some(pid) = entry?
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        // A process may exit between the listing and the read.
        if let Some(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|text| parse_stat(&text))
        {
            processes.insert(pid, stat);
        }
    }
    anyhow::ensure!(
        processes.contains_key(&root),
        "process {root} is no longer running"
    );
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for (&pid, &(ppid, _)) in &processes {
        children.entry(ppid).or_default().push(pid);
    }
    let (mut total, mut pending) = (0, vec![root]);
    while let Some(pid) = pending.pop() {
        total += processes.get(&pid).map_or(0, |&(_, ticks)| ticks);
        pending.extend(children.get(&pid).into_iter().flatten());
    }
    Ok(total)
}

/// `(ppid, utime + stime + cutime + cstime)` from `/proc/<pid>/stat`.
fn parse_stat(text: &str) -> Option<(u32, u64)> {
    // The command name (field 2) is in parentheses and may hold spaces or `)`: fields are
    // counted from the last `)`, which makes `state` (field 3) the first.
    let fields: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
    let ppid = fields.get(1)?.parse().ok()?;
    let mut ticks = 0;
    for field in 11..=14 {
        ticks += fields.get(field)?.parse::<u64>().ok()?;
    }
    Some((ppid, ticks))
}

/// `USER_HZ`, the unit of `/proc/<pid>/stat` times: asked of `getconf`, 100 (what Linux
/// uses on every common architecture) if that fails.
fn clock_ticks_per_sec() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(100.0)
}

/// One line of the table.
struct Row {
    name: &'static str,
    figure: String,
    reference: String,
    target: String,
    verdict: &'static str,
}

impl Row {
    /// A time next to its ratio to `floor`; `max_ratio` is the target, if there is one.
    fn ratio(
        name: &'static str,
        value: Duration,
        floor_name: &str,
        floor: Duration,
        max_ratio: Option<f64>,
    ) -> Self {
        let ratio = value.as_secs_f64() / floor.as_secs_f64();
        Self {
            name,
            figure: ms(value),
            reference: format!("{ratio:.2} × {floor_name} ({})", ms(floor)),
            target: max_ratio.map_or_else(|| "no target".into(), |max| format!("target ≤ {max} ×")),
            verdict: max_ratio.map_or("-", |max| verdict(ratio <= max)),
        }
    }

    fn at_least(name: &'static str, value: f64, detail: &str, min: f64) -> Self {
        Self {
            name,
            figure: format!("{value:.1} jobs/s"),
            reference: format!("({detail})"),
            target: format!("target ≥ {min} jobs/s"),
            verdict: verdict(value >= min),
        }
    }

    fn below(name: &'static str, value: f64, detail: &str, max: f64) -> Self {
        Self {
            name,
            figure: format!("{value:.1} ms/s"),
            reference: format!("({detail})"),
            target: format!("target < {max} ms/s"),
            verdict: verdict(value < max),
        }
    }
}

fn verdict(met: bool) -> &'static str {
    if met {
        "OK"
    } else {
        "MISS"
    }
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn ms(duration: Duration) -> String {
    format!("{:.1} ms", millis(duration))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(rank).copied().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let text = "42 (a) b) c) S 7 42 42 0 -1 4194560 100 0 0 0 3 4 5 6 20 0 1 0 100 0 0";
        assert_eq!(parse_stat(text), Some((7, 18)));
    }
}
