//! A static check of Python source, compatible with CPython 3.11: the script parses, and it
//! defines a usable top-level `main`. Errors read and point where CPython's `compile()` would.
//!
//! [`check`] never panics and refuses hostile nesting with a token pre-scan before any AST is
//! built, so neither parsing nor dropping the AST recurses deeper than [`Limits`] allow. That
//! bounded recursion still needs stack: run the check on a thread with at least
//! [`MIN_STACK_BYTES`]. With the default [`Limits`] the deepest accepted inputs (four nested
//! f-strings around a 2960-level expression) peak at about 1.6 MiB in a debug build, too close
//! to a spawned thread's usual 2 MiB to rely on it. Raising [`Limits::max_expression_depth`],
//! [`Limits::max_nesting_tokens`] or [`Limits::max_fstring_nesting`] raises the need too.
//!
//! ```
//! let main = pycheck::check("def main(n=3):\n    return n\n", &pycheck::Limits::default())
//!     .expect("a valid script");
//! assert!(!main.is_async);
//! assert_eq!(main.parameters[0].name, "n");
//! ```

mod diagnostic;
mod fstring;
mod limits;
mod long_int;
mod main_def;
mod messages;
mod parse;
mod position;
mod prescan;
#[cfg(test)]
mod testing;

pub use diagnostic::{Diagnostic, Position, Problem};
pub use limits::Limits;
pub use main_def::{MainSignature, Parameter, ParameterKind};

use std::borrow::Cow;
use std::ops::Range;

use parse::ParserInput;
use rustpython_parser::ast::Stmt;

/// Stack a thread running [`check`] with the default [`Limits`] needs, with a margin of about
/// five times the measured peak; `tests/pycheck/robustness.rs` runs the deepest inputs on it.
pub const MIN_STACK_BYTES: usize = 8 * 1024 * 1024;

/// Checks that `source` parses as a Python module and has a top-level `main` that can be
/// called with no arguments, and describes that `main`.
///
/// # Errors
/// A [`Diagnostic`]: a syntax error with CPython's message and position, no usable `main`, or a
/// `main` with parameters that need arguments.
pub fn check(source: &str, limits: &Limits) -> Result<MainSignature, Diagnostic> {
    check_call(source, limits, &[])
}

/// [`check`] for a `main` called with keyword arguments of these `names` (`main(**args)`)
/// instead of none.
///
/// # Errors
/// As [`check`], and a `main` whose parameters do not take exactly these names.
pub fn check_call(
    source: &str,
    limits: &Limits,
    names: &[String],
) -> Result<MainSignature, Diagnostic> {
    let body = parse_module(source, limits)?;
    let main = main_def::find_main(&body)?;
    main.check_call(names)?;
    Ok(main)
}

/// Checks only that `source` parses as a Python module, with the same limits and errors as
/// [`check`]: what CPython's `compile(source, path, "exec")` would say, whatever the script does.
///
/// # Errors
/// A [`Diagnostic`] of [`Problem::Syntax`].
pub fn check_syntax(source: &str, limits: &Limits) -> Result<(), Diagnostic> {
    parse_module(source, limits).map(drop)
}

fn parse_module(source: &str, limits: &Limits) -> Result<Vec<Stmt>, Diagnostic> {
    if let Some(nul) = source.find('\0') {
        return Err(position::syntax_at(
            source,
            "source code cannot contain null bytes",
            nul,
        ));
    }
    let runs = long_int::long_digit_runs(source, limits.max_int_digits);
    let lexed = long_int::blank_digit_runs(source, &runs);
    let ctx = prescan::Ctx {
        source,
        runs: &runs,
        limits,
    };
    let prescanned = prescan::prescan(&ctx, &lexed)?;
    let input = if runs.is_empty() {
        ParserInput::Tokens(prescanned.tokens)
    } else {
        // Tokens lexed from the blanked copy carry the wrong values, so the parser re-lexes.
        ParserInput::Text(rewritten(source, &prescanned.rewrites))
    };
    parse::parse(source, &lexed, input)
}

/// `source` with the pre-scan's same-length rewrites applied.
fn rewritten<'s>(source: &'s str, rewrites: &[(Range<usize>, String)]) -> Cow<'s, str> {
    if rewrites.is_empty() {
        return Cow::Borrowed(source);
    }
    let mut text = String::with_capacity(source.len());
    let mut copied = 0;
    for (range, replacement) in rewrites {
        text.push_str(&source[copied..range.start]);
        text.push_str(replacement);
        copied = range.end;
    }
    text.push_str(&source[copied..]);
    Cow::Owned(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    #[test]
    fn unicode_identifiers_and_strings_are_fine() {
        let source = "def main():\n    café = 'naïve ☕ 日本語'\n    データ = f\"{café!r:>10}\"\n    return データ\n";
        assert_eq!(main_kind(source), Ok(Main::Def));
    }

    #[test]
    fn tab_indentation_is_fine() {
        assert_eq!(
            main_kind("def main():\n\tif True:\n\t\treturn 1\n"),
            Ok(Main::Def)
        );
    }

    #[test]
    fn crlf_line_endings_are_fine() {
        assert_eq!(
            main_kind("import os\r\n\r\ndef main():\r\n    return 1\r\n"),
            Ok(Main::Def)
        );
    }

    #[test]
    fn byte_order_mark_is_tolerated() {
        assert_eq!(main_kind("\u{feff}def main():\n    pass\n"), Ok(Main::Def));
    }

    #[test]
    fn null_bytes_are_refused() {
        let (message, _, _) = syntax("x = 1\0\n");
        assert!(message.contains("null bytes"), "{message}");
    }

    #[test]
    fn syntax_error_message_is_the_display_text() {
        let error = main_kind("x = (").expect_err("unclosed bracket");
        assert_eq!(
            error.to_string(),
            "SyntaxError: '(' was never closed (line 1, column 5)"
        );
        assert_eq!(error.problem, Problem::Syntax);
    }
}
