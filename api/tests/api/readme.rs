//! The README's `/execute` examples, run verbatim: each `-d '<body>'` is posted and the
//! `# result:` / `# stdout:` lines under it are the expected answer.

use reqwest::StatusCode;
use serde_json::Value;

use crate::app::spawn_app;

struct Example {
    body: String,
    result: Option<Value>,
    stdout: Option<Value>,
}

fn examples() -> Vec<Example> {
    let readme = include_str!("../../../README.md");
    let mut examples = Vec::new();
    for block in readme.split("```sh").skip(1) {
        let block = block.split("```").next().unwrap_or_default();
        if !block.contains("/execute") {
            continue;
        }
        let Some(start) = block.find("-d '") else {
            continue;
        };
        let rest = &block[start + 4..];
        let Some(end) = rest.find('\'') else { continue };
        let expected = |prefix: &str| {
            block
                .lines()
                .find_map(|line| line.strip_prefix(prefix))
                .map(|json| serde_json::from_str(json).expect("README expectation is JSON"))
        };
        examples.push(Example {
            body: rest[..end].to_owned(),
            result: expected("# result: "),
            stdout: expected("# stdout: "),
        });
    }
    examples
}

#[tokio::test]
async fn every_readme_execute_example_answers_as_documented() {
    let examples = examples();
    assert!(examples.len() >= 5, "README examples not found");
    let app = spawn_app().await;
    for example in examples {
        let (status, body) = app.post("/execute", example.body.clone()).await;
        assert_eq!(status, StatusCode::OK, "{} -> {body}", example.body);
        let result = example.result.expect("each example states its result");
        assert_eq!(body["result"], result, "{}", example.body);
        if let Some(stdout) = example.stdout {
            assert_eq!(body["stdout"], stdout, "{}", example.body);
        }
    }
}
