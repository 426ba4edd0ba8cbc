//! `POST /execute`: the README's examples, and every status code it can answer.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::app::{spawn_app, spawn_app_with, Options};

fn assert_json_error(body: &Value, code: &str) {
    assert_eq!(body["code"], code, "{body}");
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{body}"
    );
}

#[tokio::test]
async fn readme_hello_world_returns_main_result() {
    let app = spawn_app().await;
    let (status, body) = app
        .run("def main():\n    return {\"message\": \"hello\"}\n")
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"], json!({"message": "hello"}));
    assert_eq!(body["status"], "succeeded");
    assert_eq!(body["error"], Value::Null);
    assert!(body["id"].as_str().is_some());
    assert!(body["duration_ms"].as_u64().is_some());
}

#[tokio::test]
async fn readme_print_capture_keeps_exact_stdout() {
    let app = spawn_app().await;
    let (status, body) = app
        .run("def main():\n    print(\"hello\")\n    return 42\n")
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["stdout"], "hello\n");
    assert_eq!(body["result"], 42);
}

#[tokio::test]
async fn readme_pandas_sum_returns_column_totals() {
    let app = spawn_app().await;
    let script = "import pandas as pd\n\ndef main():\n    df = pd.DataFrame({\"a\": [1, 2, 3], \"b\": [4, 5, 6]})\n    return df.sum().to_dict()\n";
    let (status, body) = app.run(script).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"], json!({"a": 6, "b": 15}));
}

#[tokio::test]
async fn pandas_series_and_numpy_values_are_converted() {
    let app = spawn_app().await;
    let script = "import numpy as np\nimport pandas as pd\n\ndef main():\n    df = pd.DataFrame({\"a\": [1, 2, 3], \"b\": [4, 5, 6]})\n    return {\"sum\": df.sum(), \"arr\": np.arange(3), \"scalar\": np.float64(1.5)}\n";
    let (status, body) = app.run(script).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["result"],
        json!({"sum": {"a": 6, "b": 15}, "arr": [0, 1, 2], "scalar": 1.5})
    );
}

#[tokio::test]
async fn readme_numpy_mean_and_std() {
    let app = spawn_app().await;
    let script = "import numpy as np\n\ndef main():\n    data = np.array([1.0, 2.0, 3.0, 4.0])\n    return {\"mean\": float(data.mean()), \"std\": float(data.std())}\n";
    let (status, body) = app.run(script).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"]["mean"], 2.5);
    let std = body["result"]["std"].as_f64().expect("std is a number");
    assert!((std - 1.118_033_988_749_895).abs() < 1e-12, "{std}");
}

#[tokio::test]
async fn readme_sleep_within_a_longer_timeout_succeeds() {
    let app = spawn_app().await;
    let script = "import time\n\ndef main():\n    time.sleep(2)\n    return \"done\"\n";
    let (status, body) = app.execute(json!({"script": script, "timeout": 25})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"], "done");
    assert!(
        body["duration_ms"].as_u64().is_some_and(|ms| ms >= 2000),
        "{body}"
    );
}

#[tokio::test]
async fn async_main_runs_with_asyncio() {
    let app = spawn_app().await;
    let script = "import asyncio\n\nasync def main():\n    await asyncio.sleep(0.01)\n    return \"async\"\n";
    let (status, body) = app.run(script).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"], "async");
}

#[tokio::test]
async fn main_is_called_exactly_once_and_dunder_main_block_does_not_run() {
    let app = spawn_app().await;
    let script = "calls = []\n\ndef main():\n    calls.append(1)\n    print('call')\n    return len(calls)\n\nif __name__ == '__main__':\n    main()\n";
    let (status, body) = app.run(script).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"], 1);
    assert_eq!(body["stdout"], "call\n");
}

#[tokio::test]
async fn print_without_newline_is_kept_verbatim() {
    let app = spawn_app().await;
    let (status, body) = app.run("def main():\n    print(\"x\", end=\"\")\n").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["stdout"], "x");
    assert_eq!(body["result"], Value::Null);
}

#[tokio::test]
async fn integers_above_two_to_the_53_come_back_exact() {
    let app = spawn_app().await;
    let response = app
        .post_request("/execute")
        .json(&json!({"script": "def main():\n    return [2**53 + 1, 2**64 + 7, -(2**70)]\n"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::OK);
    // Checked on the raw text: parsing into f64 would hide exactly the bug this catches.
    let text = response.text().await.expect("body");
    assert!(
        text.contains(
            r#""result":[9007199254740993,18446744073709551623,-1180591620717411303424]"#
        ),
        "{text}"
    );
}

#[tokio::test]
async fn unicode_round_trips_through_script_result_and_stdout() {
    let app = spawn_app().await;
    let script = "def main():\n    s = 'héllo wörld ✓ 日本語 🎉'\n    print(s)\n    return {'text': s, 'ключ': 'значение'}\n";
    let (status, body) = app.run(script).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["stdout"], "héllo wörld ✓ 日本語 🎉\n");
    assert_eq!(
        body["result"],
        json!({"text": "héllo wörld ✓ 日本語 🎉", "ключ": "значение"})
    );
}

#[tokio::test]
async fn invalid_utf8_output_is_replaced_not_an_error() {
    let app = spawn_app().await;
    let script = "import sys\n\ndef main():\n    sys.stdout.buffer.write(b'ok \\xff\\xfe end')\n    sys.stdout.flush()\n    return 1\n";
    let (status, body) = app.run(script).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["stdout"], "ok \u{fffd}\u{fffd} end");
}

#[tokio::test]
async fn stdout_beyond_the_cap_is_truncated_and_the_job_still_succeeds() {
    let app = spawn_app_with(Options {
        worker_env: vec![("OUTPUT_LIMIT_BYTES", "1000".to_owned())],
        ..Options::default()
    })
    .await;
    let (status, body) = app
        .run("def main():\n    print('y' * 5000)\n    return 'ok'\n")
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["stdout"].as_str().map(str::len), Some(1000));
    assert_eq!(body["stdout_truncated"], true);
    assert_eq!(body["result"], "ok");
}

#[tokio::test]
async fn stderr_is_captured_separately() {
    let app = spawn_app().await;
    let script = "import sys\n\ndef main():\n    print('out')\n    print('err', file=sys.stderr)\n    return None\n";
    let (status, body) = app.run(script).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["stdout"], "out\n");
    assert_eq!(body["stderr"], "err\n");
}

#[tokio::test]
async fn body_that_is_not_json_is_a_400() {
    let app = spawn_app_with(Options {
        with_worker: false,
        ..Options::default()
    })
    .await;
    let (status, body) = app.post("/execute", "def main(): pass").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_json_error(&body, "invalid_json");
}

#[tokio::test]
async fn bad_script_and_timeout_fields_are_400s_naming_the_field() {
    let app = spawn_app_with(Options {
        with_worker: false,
        ..Options::default()
    })
    .await;
    let cases = [
        (json!({}), "script"),
        (json!({"script": 42}), "script"),
        (json!({"script": ["def main(): pass"]}), "script"),
        (json!({"script": ""}), "script"),
        (
            json!({"script": "def main(): pass", "timeout": "10"}),
            "timeout",
        ),
        (
            json!({"script": "def main(): pass", "timeout": 0}),
            "timeout",
        ),
        (
            json!({"script": "def main(): pass", "timeout": -3}),
            "timeout",
        ),
        (
            json!({"script": "def main(): pass", "timeout": 3600}),
            "timeout",
        ),
        (
            json!({"script": "def main(): pass", "memory_mb": 1_000_000}),
            "memory_mb",
        ),
    ];
    for (request, field) in cases {
        let (status, body) = app.execute(request.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{request} -> {body}");
        assert_json_error(&body, "invalid_request");
        assert_eq!(body["field"], field, "{request} -> {body}");
    }
}

#[tokio::test]
async fn syntax_error_is_a_400_with_line_and_column() {
    let app = spawn_app_with(Options {
        with_worker: false,
        ..Options::default()
    })
    .await;
    let (status, body) = app.run("def main():\n    return (1,\n").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_json_error(&body, "syntax_error");
    let message = body["error"].as_str().unwrap_or_default();
    assert!(message.starts_with("SyntaxError: "), "{message}");
    let line = body["line"].as_u64().expect("line");
    let column = body["column"].as_u64().expect("column");
    assert!(
        message.ends_with(&format!("(line {line}, column {column})")),
        "{message}"
    );
}

#[tokio::test]
async fn syntax_error_found_only_by_the_sandbox_compiler_is_the_same_400() {
    // The static parser accepts assignment to a call; CPython's compile() does not.
    let app = spawn_app().await;
    let (status, body) = app.run("def main():\n    return 1\n\nf() = 1\n").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_json_error(&body, "syntax_error");
    assert_eq!(body["line"], 4, "{body}");
    assert!(body["column"].as_u64().is_some(), "{body}");
    let message = body["error"].as_str().unwrap_or_default();
    assert!(message.starts_with("SyntaxError: "), "{message}");
    assert!(message.contains("(line 4, column "), "{message}");
    assert_eq!(body["status"], "failed");
}

#[tokio::test]
async fn scripts_without_a_usable_top_level_main_are_400s() {
    let app = spawn_app_with(Options {
        with_worker: false,
        ..Options::default()
    })
    .await;
    let cases = [
        ("def helper():\n    return 1\n", "missing_main"),
        (
            "class C:\n    def main(self):\n        return 1\n",
            "missing_main",
        ),
        (
            "if True:\n    def main():\n        return 1\n",
            "missing_main",
        ),
        ("main = lambda: 1\n", "missing_main"),
        ("from os import getcwd as main\n", "missing_main"),
        ("def main(x):\n    return x\n", "main_signature"),
    ];
    for (script, code) in cases {
        let (status, body) = app.run(script).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{script} -> {body}");
        assert_json_error(&body, code);
        assert!(
            body["error"].as_str().unwrap_or_default().contains("main"),
            "{body}"
        );
    }
}

#[tokio::test]
async fn pathological_nesting_is_rejected_and_the_api_keeps_serving() {
    let app = spawn_app_with(Options {
        with_worker: false,
        ..Options::default()
    })
    .await;
    for script in ["-".repeat(100_000) + "1", "(".repeat(100_000)] {
        let (status, body) = app.run(&script).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_json_error(&body, "syntax_error");
    }
    let (status, _) = app.get("/health").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn script_over_the_size_limit_is_a_json_413() {
    let app = spawn_app_with(Options {
        with_worker: false,
        ..Options::default()
    })
    .await;
    let script = format!("def main():\n    return 1\n#{}\n", "x".repeat(300 * 1024));
    let (status, body) = app.run(&script).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_json_error(&body, "payload_too_large");
}

#[tokio::test]
async fn five_megabyte_body_is_a_json_413() {
    let app = spawn_app_with(Options {
        with_worker: false,
        ..Options::default()
    })
    .await;
    let body = json!({"script": "#".repeat(5 * 1024 * 1024)}).to_string();
    let (status, body) = app.post("/execute", body).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_json_error(&body, "payload_too_large");
}

#[tokio::test]
async fn script_past_its_timeout_is_a_408_with_earlier_stdout() {
    let app = spawn_app().await;
    let script = "import time\n\ndef main():\n    print('before', flush=True)\n    while True:\n        time.sleep(0.1)\n";
    let (status, body) = app.execute(json!({"script": script, "timeout": 1})).await;
    assert_eq!(status, StatusCode::REQUEST_TIMEOUT, "{body}");
    assert_eq!(body["code"], "timeout");
    assert_eq!(body["error_kind"], "timeout");
    assert_eq!(body["status"], "timed_out");
    assert_eq!(body["stdout"], "before\n");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("time limit"),
        "{body}"
    );
}

#[tokio::test]
async fn exception_is_a_422_with_the_user_traceback_only() {
    let app = spawn_app().await;
    let script = "def helper():\n    raise ValueError('boom')\n\ndef main():\n    print('partial')\n    helper()\n";
    let (status, body) = app.run(script).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["code"], "exception");
    assert_eq!(body["error_kind"], "exception");
    assert_eq!(body["stdout"], "partial\n");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(error.contains("ValueError: boom"), "{error}");
    assert!(error.contains("in helper"), "{error}");
    assert!(!error.contains("harness"), "{error}");
}

#[tokio::test]
async fn results_that_are_not_json_are_422s() {
    let app = spawn_app().await;
    for script in [
        "def main():\n    return set()\n",
        "def main():\n    return float('nan')\n",
        "def main():\n    return object()\n",
        "def main():\n    return {'x': float('inf')}\n",
    ] {
        let (status, body) = app.run(script).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{script} -> {body}"
        );
        assert_eq!(body["error_kind"], "result_not_json", "{body}");
    }
}

#[tokio::test]
async fn exiting_the_interpreter_is_a_422_not_a_success() {
    let app = spawn_app().await;
    let cases = [
        ("import sys\n\ndef main():\n    print('bye')\n    sys.exit(0)\n", Some(0)),
        ("import os\n\ndef main():\n    os._exit(3)\n", Some(3)),
        ("def main():\n    raise SystemExit(5)\n", Some(5)),
        (
            "import os, json\n\ndef main():\n    print(json.dumps({'result': 1}))\n    os._exit(0)\n",
            Some(0),
        ),
    ];
    for (script, code) in cases {
        let (status, body) = app.run(script).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{script} -> {body}"
        );
        assert_eq!(body["error_kind"], "exited", "{body}");
        assert_eq!(body["result"], Value::Null, "{body}");
        assert_eq!(body["exit_code"].as_i64(), code, "{body}");
    }
}

#[tokio::test]
async fn memory_over_the_limit_is_a_422_memory_limit() {
    let app = spawn_app().await;
    let script = "def main():\n    blocks = []\n    while True:\n        blocks.append(bytearray(16 * 1024 * 1024))\n";
    let (status, body) = app
        .execute(json!({"script": script, "memory_mb": 64}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error_kind"], "memory_limit", "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("64 MiB"),
        "{body}"
    );
}

#[tokio::test]
async fn twenty_concurrent_executes_each_get_their_own_result() {
    let app = spawn_app().await;
    let calls = (0..20).map(|i| {
        let app = &app;
        async move {
            let script = format!("def main():\n    print({i})\n    return {{'n': {i}}}\n");
            let (status, body) = app.execute(json!({"script": script, "timeout": 30})).await;
            (i, status, body)
        }
    });
    for (i, status, body) in futures::future::join_all(calls).await {
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["result"], json!({"n": i}));
        assert_eq!(body["stdout"], format!("{i}\n"));
    }
}

#[tokio::test]
async fn unfinished_within_the_wait_limit_is_a_202_and_the_job_is_kept() {
    let mut app = spawn_app_with(Options {
        with_worker: false,
        api_env: vec![("QUEUE_GRACE_SECS", "0.3".to_owned())],
        ..Options::default()
    })
    .await;
    let response = app
        .post_request("/execute")
        .json(&json!({"script": "def main():\n    return 7\n", "timeout": 0.5}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .expect("Location header");
    let body: Value = response.json().await.expect("json");
    let id = body["id"].as_str().expect("id").to_owned();
    assert_eq!(location, format!("/jobs/{id}"));

    app.start_worker(&[]);
    let job = app
        .wait_for_terminal(&id, std::time::Duration::from_secs(30))
        .await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["result"], 7);
}
