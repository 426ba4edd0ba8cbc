//! Fidelity with CPython 3.11: pycheck must never refuse a file that CPython's
//! `compile(source, path, "exec")` accepts. The corpus is CPython's own library and, when
//! Debian's `libpython3.11-testsuite` is installed (`make devtools`), its test suite.
//!
//! `cargo test` compares a fixed sample; `make fidelity` compares every file and lists where
//! pycheck accepts what CPython refuses (mostly errors only CPython's compiler stage finds, such
//! as `return` outside a function).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::check_on_min_stack;

/// The interpreter whose library is the corpus; `PYCHECK_PYTHON` overrides it.
const PYTHON: &str = "/usr/bin/python3.11";
const LIBRARY: &str = "/usr/lib/python3.11";
/// Every eighth file of the sorted corpus: about two hundred files, stdlib and tests alike.
const SAMPLE_STRIDE: usize = 8;

/// Compiles each path read from stdin and prints one JSON verdict per line, in order. Text is
/// decoded as UTF-8 first because the API hands pycheck and the sandbox the same text.
const VERDICTS_PY: &str = r#"
import json, sys, warnings
warnings.simplefilter("ignore")
sys.setrecursionlimit(10000)
for line in sys.stdin:
    path = line.rstrip("\n")
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        print(json.dumps({"skip": type(e).__name__}), flush=True)
        continue
    try:
        compile(text, path, "exec", dont_inherit=True)
        verdict = {"ok": True}
    except SyntaxError as e:
        verdict = {"ok": False, "error": f"{type(e).__name__}: {e.msg}", "line": e.lineno}
    except Exception as e:
        verdict = {"ok": False, "error": f"{type(e).__name__}: {e}", "line": None}
    print(json.dumps(verdict), flush=True)
"#;

#[derive(Debug)]
enum CPython {
    Accepts,
    Refuses(String),
    CannotDecode,
}

#[derive(Default)]
struct Report {
    compared: usize,
    skipped: usize,
    /// pycheck refuses, CPython accepts: path and pycheck's message. Must stay empty.
    false_rejections: Vec<(PathBuf, String)>,
    /// pycheck accepts, CPython refuses: path and CPython's message.
    false_acceptances: Vec<(PathBuf, String)>,
}

fn python() -> String {
    std::env::var("PYCHECK_PYTHON").unwrap_or_else(|_| PYTHON.to_owned())
}

fn python_files(root: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let entry = entry.expect("a directory entry");
            let kind = entry.file_type().expect("a file type");
            let path = entry.path();
            if kind.is_dir() {
                pending.push(path);
            } else if kind.is_file() && path.extension().is_some_and(|ext| ext == "py") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// CPython's verdict on each file, from one interpreter process for the whole corpus.
fn cpython_verdicts(files: &[PathBuf]) -> Vec<CPython> {
    let mut child = Command::new(python())
        .args(["-X", "utf8", "-c", VERDICTS_PY])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python()));
    let mut stdin = child.stdin.take().expect("piped stdin");
    let paths: String = files
        .iter()
        .map(|path| format!("{}\n", path.display()))
        .collect();
    let writer = std::thread::spawn(move || stdin.write_all(paths.as_bytes()));
    let output = child.wait_with_output().expect("python's verdicts");
    writer
        .join()
        .expect("writer thread")
        .expect("paths written");
    assert!(output.status.success(), "{} failed", python());
    let verdicts: Vec<CPython> = String::from_utf8(output.stdout)
        .expect("JSON is UTF-8")
        .lines()
        .map(|line| {
            let verdict: serde_json::Value = serde_json::from_str(line).expect("a JSON verdict");
            if verdict.get("skip").is_some() {
                CPython::CannotDecode
            } else if verdict["ok"] == true {
                CPython::Accepts
            } else {
                CPython::Refuses(format!("{} (line {})", verdict["error"], verdict["line"]))
            }
        })
        .collect();
    assert_eq!(verdicts.len(), files.len(), "one verdict per file");
    verdicts
}

fn compare(files: &[PathBuf]) -> Report {
    let mut report = Report::default();
    for (path, cpython) in files.iter().zip(cpython_verdicts(files)) {
        let text = std::fs::read(path)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok());
        let (Some(text), false) = (text, matches!(cpython, CPython::CannotDecode)) else {
            report.skipped += 1;
            continue;
        };
        report.compared += 1;
        let (pycheck, _) = check_on_min_stack(&text);
        match (pycheck, cpython) {
            (Err(diagnostic), CPython::Accepts) => report
                .false_rejections
                .push((path.clone(), diagnostic.to_string())),
            (Ok(()), CPython::Refuses(message)) => {
                report.false_acceptances.push((path.clone(), message));
            }
            _ => {}
        }
    }
    report
}

fn assert_no_false_rejections(files: &[PathBuf]) {
    let report = compare(files);
    eprintln!(
        "fidelity: {} files compared, {} skipped (not UTF-8), {} false rejections, {} false \
         acceptances",
        report.compared,
        report.skipped,
        report.false_rejections.len(),
        report.false_acceptances.len()
    );
    let by_message = report.false_acceptances.iter().fold(
        BTreeMap::<&str, Vec<&Path>>::new(),
        |mut groups, (path, message)| {
            let kind = message.split(" (line").next().unwrap_or(message);
            groups.entry(kind).or_default().push(path);
            groups
        },
    );
    for (message, paths) in &by_message {
        eprintln!("  accepted, CPython says {message}:");
        for path in paths {
            eprintln!("    {}", path.display());
        }
    }
    for (path, message) in &report.false_rejections {
        eprintln!("  REFUSED {}: {message}", path.display());
    }
    assert!(report.compared >= files.len() / 2, "too few files compared");
    assert!(
        report.false_rejections.is_empty(),
        "pycheck refused {} files CPython accepts",
        report.false_rejections.len()
    );
}

#[test]
fn sampled_library_files_cpython_compiles_are_accepted() {
    let files: Vec<PathBuf> = python_files(Path::new(LIBRARY))
        .into_iter()
        .step_by(SAMPLE_STRIDE)
        .collect();
    assert!(
        files.len() >= 100,
        "only {} files in {LIBRARY}",
        files.len()
    );
    assert_no_false_rejections(&files);
}

/// `make fidelity`: every file of the corpus.
#[test]
#[ignore = "compares about 1,600 files; run with `make fidelity`"]
fn every_library_file_cpython_compiles_is_accepted() {
    assert_no_false_rejections(&python_files(Path::new(LIBRARY)));
}
