//! pycheck's integration tests: robustness against hostile input, and fidelity with CPython 3.11.

mod cpython_fidelity;
mod robustness;

use std::time::{Duration, Instant};

use pycheck::{Diagnostic, Limits};

/// Runs `check_syntax` on a thread with the least stack pycheck promises to work with, so a
/// stack overflow aborts the test binary; returns the verdict and how long it took.
fn check_on_min_stack(source: &str) -> (Result<(), Diagnostic>, Duration) {
    let source = source.to_owned();
    std::thread::Builder::new()
        .stack_size(pycheck::MIN_STACK_BYTES)
        .spawn(move || {
            let started = Instant::now();
            let verdict = pycheck::check_syntax(&source, &Limits::default());
            (verdict, started.elapsed())
        })
        .expect("spawn a check thread")
        .join()
        .expect("pycheck must not panic")
}
