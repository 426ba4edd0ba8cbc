//! The README against the real thing: its `/execute` examples, run verbatim (each
//! `-d '<body>'` is posted and the `# result:` / `# stdout:` lines under it are the expected
//! answer), and its configuration tables against `api --help` and `worker --help`.

use std::collections::{BTreeMap, BTreeSet};

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

/// The settings a binary's `--help` lists: environment variable and default (`None` when it
/// has none). Every option but `--help` must have a variable.
pub(crate) fn help_settings(binary: &str) -> BTreeMap<String, Option<String>> {
    let path = crate::app::bin_dir().join(binary);
    // No environment, so `[env: NAME=]` shows no current value.
    let output = std::process::Command::new(&path)
        .arg("--help")
        .env_clear()
        .output()
        .unwrap_or_else(|e| panic!("run {} --help: {e}", path.display()));
    assert!(output.status.success(), "{binary} --help failed");
    let help = String::from_utf8(output.stdout).expect("help is UTF-8");
    let mut options: Vec<String> = Vec::new();
    for line in help.lines() {
        if line.starts_with("  -") || line.starts_with("      --") {
            options.push(String::new());
        }
        if let Some(option) = options.last_mut() {
            option.push_str(line);
            option.push('\n');
        }
    }
    let between = |text: &str, start: &str, end: char| {
        text.split_once(start)
            .and_then(|(_, rest)| rest.split(end).next())
            .map(str::to_owned)
    };
    let mut settings = BTreeMap::new();
    for option in options {
        if option.trim_start().starts_with("-h, --help") {
            continue;
        }
        // `[env: NAME=]`, or `[env: NAME]` for settings whose values help never shows.
        let name = between(&option, "[env: ", ']')
            .and_then(|env| env.split('=').next().map(str::to_owned))
            .unwrap_or_else(|| {
                panic!("{binary} option without an environment variable:\n{option}")
            });
        settings.insert(name, between(&option, "[default: ", ']'));
    }
    assert!(settings.len() >= 10, "{binary} --help: {settings:?}");
    settings
}

/// One configuration table of the README: variable → default, `None` where the default is
/// described in words (for example "CPUs") rather than given as a value.
type Table = BTreeMap<String, Option<String>>;

/// The README's configuration tables, by the line that introduces each ("Both binaries:",
/// "`api`:", "`worker`:").
fn readme_tables() -> BTreeMap<String, Table> {
    let readme = include_str!("../../../README.md");
    let section = readme
        .split("\n## Configuration")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("a Configuration section");
    let code_spans = |cell: &str| -> Vec<String> {
        cell.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect()
    };
    let mut tables = BTreeMap::<String, Table>::new();
    let mut title = String::new();
    for line in section.lines() {
        if line.ends_with(':') && !line.starts_with('|') {
            title = line.to_owned();
            continue;
        }
        if !line.starts_with("| `") {
            continue;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let (variables, defaults) = (code_spans(cells[1]), cells[2]);
        // "`A` / `B` | `1` / `2`" pairs each variable with its default.
        let defaults: Vec<Option<String>> = if variables.len() == 1 {
            vec![code_spans(defaults).into_iter().next()]
        } else {
            let parts: Vec<&str> = defaults.split(" / ").collect();
            assert_eq!(parts.len(), variables.len(), "{line}");
            parts
                .into_iter()
                .map(|part| code_spans(part).into_iter().next())
                .collect()
        };
        tables
            .entry(title.clone())
            .or_default()
            .extend(variables.into_iter().zip(defaults));
    }
    tables
}

#[test]
fn readme_configuration_tables_match_help() {
    let api = help_settings("api");
    let worker = help_settings("worker");
    let tables = readme_tables();
    let expected = [
        ("Both binaries:", true, true),
        ("`api`:", true, false),
        ("`worker`:", false, true),
    ];
    assert_eq!(
        tables.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        expected.iter().map(|(title, ..)| *title).collect(),
        "the README's configuration tables"
    );
    for (title, in_api, in_worker) in expected {
        for (variable, default) in &tables[title] {
            for (binary, settings, listed) in
                [("api", &api, in_api), ("worker", &worker, in_worker)]
            {
                match settings.get(variable) {
                    Some(help_default) if listed => assert_eq!(
                        default, help_default,
                        "default of {variable}: README (left) vs {binary} --help (right)"
                    ),
                    Some(_) => panic!("{variable} is in `{binary} --help` but not under {title}"),
                    None if listed => {
                        panic!("{variable} is under {title} but not in `{binary} --help`")
                    }
                    None => {}
                }
            }
        }
    }
    for (binary, settings) in [("api", &api), ("worker", &worker)] {
        for variable in settings.keys() {
            assert!(
                tables.values().any(|table| table.contains_key(variable)),
                "{variable} from `{binary} --help` is missing from the README's configuration tables"
            );
        }
    }
}
