//! Long integer literals: digit runs too long for CPython, found before lexing and blanked out so
//! that lexing stays linear.

use std::borrow::Cow;
use std::ops::Range;

/// Digit runs (`[0-9][0-9_]*`) with more than `max_digits` digits. Normally none.
pub(crate) fn long_digit_runs(source: &str, max_digits: usize) -> Vec<Range<usize>> {
    let bytes = source.as_bytes();
    let mut runs = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        let mut digits = 0;
        let mut end = i;
        while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'_') {
            if bytes[i] != b'_' {
                digits += 1;
                end = i + 1;
            }
            i += 1;
        }
        if digits > max_digits {
            runs.push(start..end);
        }
    }
    runs
}

/// The text the pre-scan lexes: long digit runs become `1` plus spaces, so lexing stays linear
/// while token boundaries, lines and byte offsets are unchanged.
pub(crate) fn blank_digit_runs<'s>(source: &'s str, runs: &[Range<usize>]) -> Cow<'s, str> {
    if runs.is_empty() {
        return Cow::Borrowed(source);
    }
    let mut out = String::with_capacity(source.len());
    let mut copied = 0;
    for run in runs {
        out.push_str(&source[copied..run.start]);
        out.push('1');
        out.extend(std::iter::repeat_n(' ', run.len() - 1));
        copied = run.end;
    }
    out.push_str(&source[copied..]);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use crate::testing::*;

    #[test]
    fn huge_integer_literals_are_refused_like_cpython() {
        let (message, _, _) = syntax(&format!("x = {}", "1".repeat(200_000)));
        assert!(
            message.contains("Exceeds the limit (4300 digits)"),
            "{message}"
        );
        assert!(message.contains("value has 200000 digits"), "{message}");
        assert_eq!(
            main_kind(&with_main(&format!("x = {}", "9".repeat(4300)))),
            Ok(Main::Def)
        );
    }

    #[test]
    fn long_digit_runs_outside_integers_are_fine() {
        for code in [
            format!("x = '{}'", "7".repeat(200_000)),
            format!("# {}", "7".repeat(200_000)),
            format!("x = {}.5", "7".repeat(100_000)),
            format!("x = 0x{}", "7".repeat(100_000)),
            format!("x{} = 0", "7".repeat(100_000)),
        ] {
            assert_eq!(
                main_kind(&with_main(&code)),
                Ok(Main::Def),
                "{}",
                &code[..20]
            );
        }
    }
}
