//! `GET /metrics` on the API and on a worker: well-formed Prometheus text, and counters that
//! move when jobs run.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::app::{free_port, spawn_app_with, Options};

/// One sample line.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A scrape, checked line by line.
#[derive(Debug)]
pub(crate) struct Exposition {
    samples: Vec<Sample>,
    types: HashMap<String, String>,
}

impl Exposition {
    /// The sum of the samples named `name` whose labels include all of `labels` (0 when there
    /// are none: a counter appears once first incremented).
    pub(crate) fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .sum()
    }
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A sample value as the text format spells it: a Go float, `+Inf`, `-Inf` or `NaN`.
fn parse_value(text: &str) -> Result<f64, String> {
    match text {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ if !text.is_empty()
            && text
                .chars()
                .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-')) =>
        {
            text.parse().map_err(|e| format!("value {text:?}: {e}"))
        }
        _ => Err(format!("value {text:?} is not a float")),
    }
}

/// `name{label="value",...} value [timestamp]`, label values with `\\`, `\"` and `\n` escapes.
fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(['{', ' '])
        .ok_or("a sample needs a value after its name")?;
    let name = &line[..name_end];
    if !is_metric_name(name) {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(mut list) = rest.strip_prefix('{') {
        loop {
            if let Some(after) = list.strip_prefix('}') {
                rest = after;
                break;
            }
            let (label, after) = list.split_once('=').ok_or("label without `=`")?;
            if !is_label_name(label) {
                return Err(format!("bad label name {label:?}"));
            }
            let mut chars = after
                .strip_prefix('"')
                .ok_or("label value not quoted")?
                .chars();
            let mut value = String::new();
            loop {
                match chars.next().ok_or("unterminated label value")? {
                    '"' => break,
                    '\\' => match chars.next() {
                        Some('\\') => value.push('\\'),
                        Some('"') => value.push('"'),
                        Some('n') => value.push('\n'),
                        other => return Err(format!("bad escape {other:?}")),
                    },
                    '\n' => return Err("newline in a label value".to_owned()),
                    c => value.push(c),
                }
            }
            if labels.insert(label.to_owned(), value).is_some() {
                return Err(format!("label {label} twice"));
            }
            list = chars.as_str();
            if let Some(after) = list.strip_prefix(',') {
                list = after;
            } else if !list.starts_with('}') {
                return Err("labels must be separated by `,`".to_owned());
            }
        }
    }
    let mut fields = rest
        .strip_prefix(' ')
        .ok_or("one space before the value")?
        .split(' ');
    let value = parse_value(fields.next().unwrap_or_default())?;
    if let Some(timestamp) = fields.next() {
        timestamp
            .parse::<i64>()
            .map_err(|_| format!("bad timestamp {timestamp:?}"))?;
    }
    if fields.next().is_some() {
        return Err("text after the timestamp".to_owned());
    }
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// The `# TYPE`d family a sample belongs to: its own name, or a histogram's or summary's
/// `_bucket` / `_sum` / `_count` series.
fn family<'a>(name: &'a str, types: &HashMap<String, String>) -> Option<&'a str> {
    if types.contains_key(name) {
        return Some(name);
    }
    for (suffix, kinds) in [
        ("_bucket", &["histogram"][..]),
        ("_sum", &["histogram", "summary"][..]),
        ("_count", &["histogram", "summary"][..]),
    ] {
        if let Some(base) = name.strip_suffix(suffix) {
            if types
                .get(base)
                .is_some_and(|kind| kinds.contains(&kind.as_str()))
            {
                return Some(base);
            }
        }
    }
    None
}

/// Checks every line of an exposition: `# HELP` and `# TYPE` lines are well formed and come
/// once per family, every sample belongs to a family typed before it, values are floats,
/// histogram buckets carry a numeric `le`, and every family has help text.
fn parse_strictly(text: &str) -> Exposition {
    let mut types = HashMap::new();
    let mut helped = HashSet::new();
    let mut samples = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let at = || format!("line {}: {line:?}", number + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            assert!(is_metric_name(name) && !help.trim().is_empty(), "{}", at());
            assert!(helped.insert(name.to_owned()), "HELP twice, {}", at());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            assert!(is_metric_name(name), "{}", at());
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{}",
                at()
            );
            assert!(
                types.insert(name.to_owned(), kind.to_owned()).is_none(),
                "TYPE twice, {}",
                at()
            );
            continue;
        }
        assert!(!line.starts_with('#'), "stray comment, {}", at());
        let sample = parse_sample(line).unwrap_or_else(|e| panic!("{e}, {}", at()));
        let family = family(&sample.name, &types)
            .unwrap_or_else(|| panic!("sample of no TYPE'd family, {}", at()));
        if sample.name.ends_with("_bucket") && types[family] == "histogram" {
            let le = sample.labels.get("le").map(String::as_str);
            assert!(le.is_some_and(|le| parse_value(le).is_ok()), "{}", at());
        }
        samples.push(sample);
    }
    for name in types.keys() {
        assert!(helped.contains(name), "{name} has no HELP");
    }
    Exposition { samples, types }
}

/// `GET url` as Prometheus would, parsed by `prometheus-parse` and line by line; the two
/// must agree on every counter and gauge `prometheus-parse` reads. (It skips lines whose label
/// values contain `}`, such as `route="/jobs/{id}"`, hence the strict parser.)
pub(crate) async fn scrape(client: &reqwest::Client, url: &str) -> Exposition {
    let response = client.get(url).send().await.expect("scrape sent");
    assert_eq!(response.status(), StatusCode::OK, "{url}");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = response.text().await.expect("body");
    let strict = parse_strictly(&text);
    let parsed = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .expect("prometheus-parse reads the exposition");
    for sample in &parsed.samples {
        let value = match sample.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) => v,
            _ => continue,
        };
        let labels: Vec<(&str, &str)> = sample
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            strict.value(&sample.metric, &labels),
            value,
            "{} {labels:?}",
            sample.metric
        );
    }
    let documented: HashSet<&String> = parsed.docs.keys().collect();
    assert_eq!(documented, strict.types.keys().collect(), "{text}");
    strict
}

/// Scrapes `url` until `ready` holds, or fails after `limit`.
pub(crate) async fn scrape_until(
    client: &reqwest::Client,
    url: &str,
    limit: Duration,
    ready: impl Fn(&Exposition) -> bool,
) -> Exposition {
    let deadline = Instant::now() + limit;
    loop {
        let answered = client.get(url).send().await.is_ok();
        if answered {
            let exposition = scrape(client, url).await;
            if ready(&exposition) {
                return exposition;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{url} never showed what was expected"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn api_and_worker_metrics_parse_and_move_when_jobs_run() {
    let port = free_port();
    let app = spawn_app_with(Options {
        worker_env: vec![("METRICS_ADDR", format!("127.0.0.1:{port}"))],
        ..Options::default()
    })
    .await;
    let api_url = format!("{}/metrics", app.base);
    let worker_url = format!("http://127.0.0.1:{port}/metrics");

    let api_before = scrape(&app.client, &api_url).await;
    // The worker takes jobs once its sandbox self-tests have recorded their starts: one cold,
    // and one warm unless sandboxes are cold.
    let self_tests = if crate::app::warm_sandboxes() {
        2.0
    } else {
        1.0
    };
    let worker_before = scrape_until(&app.client, &worker_url, Duration::from_secs(20), |m| {
        m.value("runbox_sandbox_start_seconds_count", &[]) >= self_tests
    })
    .await;

    let (status, body) = app.run("def main():\n    return 1\n").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = app.run("def main():\n    raise ValueError('no')\n").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error_kind"], "exception", "{body}");

    let finished = |m: &Exposition, status: &str, kind: &str| {
        m.value(
            "runbox_jobs_finished_total",
            &[("status", status), ("error_kind", kind)],
        )
    };
    // The worker counts a finished job just after the store has it, so the API may answer
    // first: poll.
    let worker_after = scrape_until(&app.client, &worker_url, Duration::from_secs(10), |m| {
        finished(m, "succeeded", "none") > finished(&worker_before, "succeeded", "none")
            && finished(m, "failed", "exception") > finished(&worker_before, "failed", "exception")
            && m.value("runbox_jobs_running", &[]) == 0.0
    })
    .await;
    // The API counts the jobs table at most once a second, so a scrape may show a count
    // from before the two jobs finished: poll.
    let api_after = scrape_until(&app.client, &api_url, Duration::from_secs(5), |m| {
        m.value("runbox_jobs", &[("status", "succeeded")]) == 1.0
            && m.value("runbox_jobs", &[("status", "failed")]) == 1.0
    })
    .await;

    let delta = |after: &Exposition, before: &Exposition, name: &str, labels: &[(&str, &str)]| {
        after.value(name, labels) - before.value(name, labels)
    };
    assert_eq!(
        delta(
            &api_after,
            &api_before,
            "runbox_jobs_submitted_total",
            &[("endpoint", "execute")]
        ),
        2.0
    );
    let execute = |status| {
        [
            ("method", "POST"),
            ("route", "/execute"),
            ("status", status),
        ]
    };
    for status in ["200", "422"] {
        assert_eq!(
            delta(
                &api_after,
                &api_before,
                "runbox_http_requests_total",
                &execute(status)
            ),
            1.0,
            "{status}"
        );
        assert_eq!(
            delta(
                &api_after,
                &api_before,
                "runbox_http_request_duration_seconds_count",
                &execute(status)
            ),
            1.0,
            "{status}"
        );
    }
    assert_eq!(
        delta(
            &api_after,
            &api_before,
            "runbox_validation_duration_seconds_count",
            &[]
        ),
        2.0
    );
    assert_eq!(api_after.value("runbox_jobs", &[("status", "queued")]), 0.0);
    assert_eq!(api_after.value("runbox_jobs_count_up", &[]), 1.0);

    assert_eq!(
        finished(&worker_after, "succeeded", "none")
            - finished(&worker_before, "succeeded", "none"),
        1.0
    );
    assert_eq!(
        finished(&worker_after, "failed", "exception")
            - finished(&worker_before, "failed", "exception"),
        1.0
    );
    for (name, moved) in [
        ("runbox_jobs_claimed_total", 2.0),
        ("runbox_job_queue_wait_seconds_count", 2.0),
        ("runbox_job_run_seconds_count", 2.0),
        // Both scripts reached their own code; the failing one raised there.
        ("runbox_sandbox_start_seconds_count", 2.0),
    ] {
        assert_eq!(
            delta(&worker_after, &worker_before, name, &[]),
            moved,
            "{name}"
        );
    }
    let start_sum = delta(
        &worker_after,
        &worker_before,
        "runbox_sandbox_start_seconds_sum",
        &[],
    );
    let run_sum = delta(
        &worker_after,
        &worker_before,
        "runbox_job_run_seconds_sum",
        &[],
    );
    assert!(
        start_sum > 0.0 && start_sum < run_sum,
        "start {start_sum} s of run {run_sum} s"
    );
    for (name, kind) in [
        ("runbox_job_queue_wait_seconds", "histogram"),
        ("runbox_job_run_seconds", "histogram"),
        ("runbox_sandbox_start_seconds", "histogram"),
        ("runbox_jobs_finished_total", "counter"),
        ("runbox_jobs_running", "gauge"),
    ] {
        assert_eq!(
            worker_after.types.get(name).map(String::as_str),
            Some(kind),
            "{name}"
        );
    }

    let response = app
        .client
        .get(format!("http://127.0.0.1:{port}/other"))
        .send()
        .await
        .expect("request sent");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn api_metrics_label_unknown_paths_as_unmatched_and_count_the_queue() {
    let app = spawn_app_with(Options {
        with_worker: false,
        ..Options::default()
    })
    .await;
    let (status, _) = app.get("/no/such/path/8f1c").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = app.post("/metrics", "").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(body["code"], "method_not_allowed");
    let (status, body) = app
        .submit(json!({"script": "def main():\n    return 1\n"}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");

    let url = format!("{}/metrics", app.base);
    let metrics = scrape_until(&app.client, &url, Duration::from_secs(5), |m| {
        m.value("runbox_jobs", &[("status", "queued")]) == 1.0
    })
    .await;
    assert_eq!(
        metrics.value(
            "runbox_http_requests_total",
            &[("method", "GET"), ("route", "unmatched"), ("status", "404")]
        ),
        1.0
    );
    assert_eq!(
        metrics.value(
            "runbox_http_requests_total",
            &[("method", "POST"), ("route", "/metrics"), ("status", "405")]
        ),
        1.0
    );
    assert_eq!(
        metrics.value("runbox_jobs_submitted_total", &[("endpoint", "jobs")]),
        1.0
    );
    for (name, kind) in [
        ("runbox_http_request_duration_seconds", "histogram"),
        ("runbox_validation_duration_seconds", "histogram"),
        ("runbox_http_requests_total", "counter"),
        ("runbox_jobs_submitted_total", "counter"),
        ("runbox_jobs", "gauge"),
    ] {
        assert_eq!(
            metrics.types.get(name).map(String::as_str),
            Some(kind),
            "{name}"
        );
    }
    assert!(
        metrics
            .samples
            .iter()
            .all(|s| s.labels.values().all(|v| !v.contains("/no/such"))),
        "a raw path became a label value"
    );
}

#[tokio::test]
async fn a_worker_that_takes_jobs_answers_its_health_check() {
    let port = free_port();
    let app = spawn_app_with(Options {
        worker_env: vec![("METRICS_ADDR", format!("127.0.0.1:{port}"))],
        ..Options::default()
    })
    .await;
    let (status, body) = app.run("def main():\n    return 1\n").await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let response = app
        .client
        .get(format!("http://127.0.0.1:{port}/health"))
        .send()
        .await
        .expect("the worker's health check answers");
    assert_eq!(response.status(), StatusCode::OK);
    let body: serde_json::Value = response.json().await.expect("JSON");
    assert_eq!(body, serde_json::json!({"status": "ok"}));
}
