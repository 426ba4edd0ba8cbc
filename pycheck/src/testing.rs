//! Test support: runs the checker the way the service does and asserts CPython's verdicts.

use std::time::{Duration, Instant};

use crate::{check, Diagnostic, Limits, Problem};

/// What the tests care about in an accepted script.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Main {
    Def,
    AsyncDef,
}

/// Runs `check` on its own thread with the least stack pycheck promises to work with.
pub(crate) fn run(source: &str) -> Result<crate::MainSignature, Diagnostic> {
    on_min_stack(source, |source| check(source, &Limits::default()))
}

/// Runs `check_syntax` like [`run`].
pub(crate) fn compiles(source: &str) -> Result<(), Diagnostic> {
    on_min_stack(source, |source| {
        crate::check_syntax(source, &Limits::default())
    })
}

fn on_min_stack<T: Send + 'static>(source: &str, check: fn(&str) -> T) -> T {
    let source = source.to_owned();
    std::thread::Builder::new()
        .stack_size(crate::MIN_STACK_BYTES)
        .spawn(move || check(&source))
        .expect("spawn check thread")
        .join()
        .expect("check must not panic")
}

pub(crate) fn main_kind(source: &str) -> Result<Main, Diagnostic> {
    run(source).map(|main| {
        if main.is_async {
            Main::AsyncDef
        } else {
            Main::Def
        }
    })
}

/// The full text of a syntax error, with its line and column.
pub(crate) fn syntax(source: &str) -> (String, u32, u32) {
    match run(source) {
        Err(
            error @ Diagnostic {
                problem: Problem::Syntax,
                position: Some(position),
                ..
            },
        ) => (error.to_string(), position.line, position.column),
        other => panic!("expected a syntax error for {source:?}, got {other:?}"),
    }
}

/// `message`, `line` and `column` are what CPython 3.11.2's `compile()` reports as
/// `SyntaxError.msg`, `.lineno` and `.offset` for the same source.
pub(crate) fn assert_like_cpython(source: &str, message: &str, line: u32, column: u32) {
    let (actual, actual_line, actual_column) = syntax(source);
    assert_eq!(
        actual,
        format!("SyntaxError: {message} (line {line}, column {column})"),
        "for {source:?}"
    );
    assert_eq!((actual_line, actual_column), (line, column));
}

pub(crate) fn missing_main(source: &str) -> String {
    match run(source) {
        Err(Diagnostic {
            problem: Problem::MissingMain,
            message,
            ..
        }) => message,
        other => panic!("expected MissingMain for {source:?}, got {other:?}"),
    }
}

pub(crate) fn assert_rejected_quickly(source: &str, message: &str) {
    let started = Instant::now();
    let (actual, _, _) = syntax(source);
    let elapsed = started.elapsed();
    assert!(actual.contains(message), "got {actual:?}");
    assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
}

pub(crate) fn assert_too_complex(source: &str) {
    assert_rejected_quickly(source, crate::prescan::TOO_COMPLEX);
}

pub(crate) fn with_main(code: &str) -> String {
    format!("{code}\ndef main():\n    pass\n")
}
