//! Robustness: arbitrary bytes, token soup and pathological nesting never panic, never overflow
//! pycheck's documented minimum stack, and are answered quickly.

use std::time::Duration;

use proptest::prelude::*;

use crate::check_on_min_stack;

/// Generous, for debug builds on a busy machine; release builds answer these in milliseconds.
const TIME_BOUND: Duration = Duration::from_secs(2);

fn assert_answered_quickly(source: &str) -> Result<(), pycheck::Diagnostic> {
    let (verdict, took) = check_on_min_stack(source);
    assert!(
        took < TIME_BOUND,
        "took {took:?} for {:?}...",
        source.chars().take(60).collect::<String>()
    );
    verdict
}

/// Pieces of Python that open, close or deepen structures, or that lexers find tricky.
const PIECES: &[&str] = &[
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    ":",
    ",",
    ".",
    "-",
    "+",
    "~",
    "*",
    "**",
    "not ",
    " if ",
    " else ",
    "lambda ",
    "lambda x: ",
    "x",
    "1",
    "0x1f",
    "1_0",
    "1e5",
    "1j",
    "'s'",
    "\"s\"",
    "'''",
    "\"\"\"",
    "f'",
    "f\"",
    "f'''",
    "rf'",
    "b'",
    "{x!r:>{w}}",
    "{x=}",
    "\\",
    "\\\n",
    "\\N{DASH}",
    "\n",
    "\n    ",
    "\n\t",
    "\r\n",
    "\r",
    "=",
    ":=",
    " is ",
    " in ",
    " and ",
    " or ",
    "def ",
    "main",
    "async ",
    "await ",
    "yield ",
    "return ",
    "class ",
    "if ",
    "elif ",
    "else:",
    "for ",
    "while ",
    "try:",
    "except ",
    "with ",
    "match ",
    "case ",
    "#",
    "é",
    "🙂",
    "\u{a0}",
    "\u{feff}",
    ";",
    "@",
    "\0",
    " ",
];

fn token_soup() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(PIECES), 0..200).prop_map(|pieces| pieces.concat())
}

/// One opener (or prefix operator) repeated many times, then maybe some closers.
fn deep_nesting() -> impl Strategy<Value = String> {
    let openers = prop::sample::select(
        &[
            "(", "[", "{", "-", "not ", "lambda: ", "await ", "f'{", "a.", "x[", "f(", "if x:\n ",
            " ", "\t", "(-", "[*", "{**",
        ][..],
    );
    let closers = prop::sample::select(&[")", "]", "}", "'}", "", "1", "1)"][..]);
    (openers, 1..60_000usize, closers, 0..60_000usize)
        .prop_map(|(open, n, close, m)| format!("x = {}1{}", open.repeat(n), close.repeat(m)))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_are_answered_quickly(bytes in prop::collection::vec(any::<u8>(), 0..2000)) {
        let _ = assert_answered_quickly(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn arbitrary_text_is_answered_quickly(text in any::<String>()) {
        let _ = assert_answered_quickly(&text);
    }

    #[test]
    fn token_soup_is_answered_quickly(source in token_soup()) {
        let _ = assert_answered_quickly(&source);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn deep_nesting_is_answered_quickly(source in deep_nesting()) {
        let _ = assert_answered_quickly(&source);
    }
}

fn assert_refused_quickly(source: &str) {
    let verdict = assert_answered_quickly(source);
    assert!(verdict.is_err(), "accepted {:?}...", &source[..40]);
}

#[test]
fn a_hundred_thousand_open_brackets_are_refused_quickly() {
    for open in ["(", "[", "{", "(["] {
        assert_refused_quickly(&open.repeat(100_000));
        assert_refused_quickly(&format!("x = {}1", open.repeat(100_000)));
    }
}

#[test]
fn long_chains_of_unary_operators_are_refused_quickly() {
    for op in ["-", "+", "~", "not ", "await ", "*", "lambda: "] {
        assert_refused_quickly(&format!("x = {}1", op.repeat(100_000)));
    }
}

#[test]
fn deeply_nested_f_strings_are_refused_quickly() {
    let mut source = "1".to_owned();
    for quote in ["'", "\"", "'''", "\"\"\""].iter().cycle().take(40) {
        source = format!("f{quote}{{{source}}}{quote}");
    }
    assert_refused_quickly(&source);
    assert_refused_quickly(&format!("x = f'{}'", "{f'".repeat(10_000)));
    assert_refused_quickly(&format!("x = f'{{{}1}}'", "-".repeat(100_000)));
}

#[test]
fn deep_indentation_is_refused_quickly() {
    let source: String = (0..5_000)
        .map(|level| format!("{}if x:\n", " ".repeat(level)))
        .collect();
    assert_refused_quickly(&source);
    assert_refused_quickly(&"\\\n".repeat(100_000));
}

#[test]
fn huge_integer_literals_are_refused_quickly() {
    assert_refused_quickly(&format!("x = {}", "7".repeat(1_000_000)));
    assert_refused_quickly(&format!("x = f'{{{}}}'", "7".repeat(1_000_000)));
    // Not integers, so fine, but still long.
    let (verdict, took) = check_on_min_stack(&format!("x = 0x{}", "f".repeat(1_000_000)));
    assert!(
        verdict.is_ok() && took < TIME_BOUND,
        "{verdict:?} in {took:?}"
    );
}

/// The deepest structures the default limits accept, checked on the minimum stack: the stack
/// pycheck documents must hold for what it lets through, not only for what it refuses early.
#[test]
fn deepest_accepted_inputs_fit_the_minimum_stack() {
    let indented: String = (0..98)
        .map(|level| format!("{}if x:\n", " ".repeat(level)))
        .chain([format!("{}x = {}1\n", " ".repeat(98), "-".repeat(2880))])
        .collect();
    let cases = [
        format!("x = {}1", "-".repeat(2989)),
        format!("x = {}1", "not ".repeat(2985)),
        format!("x = 2{}", "**2".repeat(2985)),
        format!("x = a{}", ".b".repeat(2985)),
        format!("x = f{}", "()".repeat(2985)),
        format!("x = {}1", "lambda: ".repeat(2985)),
        format!("x = 1{}", " if c else 1".repeat(2985)),
        format!("if x: pass\n{}", "elif x: pass\n".repeat(2985)),
        format!(
            "x = {}{}1{}",
            "(".repeat(199),
            "-".repeat(2780),
            ")".repeat(199)
        ),
        format!("x = f'{{{}1}}'", "-".repeat(2980)),
        format!(
            "x = f'''{{f\"\"\"{{f'{{f\"{{{}1}}\"}}'}}\"\"\"}}'''",
            "-".repeat(2960)
        ),
        indented,
    ];
    for source in &cases {
        let verdict = assert_answered_quickly(source);
        assert_eq!(verdict, Ok(()), "for {:?}...", &source[..40]);
    }
}
