//! Positions: byte offsets to CPython's 1-based lines and character columns, and syntax errors
//! placed there.

use std::fmt::Display;
use std::ops::Range;

use rustpython_parser::text_size::TextSize;

use crate::diagnostic::Diagnostic;

pub(crate) fn syntax_error(message: impl Display, line: u32, column: u32) -> Diagnostic {
    Diagnostic::syntax(message, line, column)
}

pub(crate) fn syntax_at(source: &str, message: impl Display, offset: usize) -> Diagnostic {
    let (line, column) = line_col(source, offset);
    syntax_error(message, line, column)
}

pub(crate) fn floor_boundary(source: &str, offset: usize) -> usize {
    let mut offset = offset.min(source.len());
    while !source.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

pub(crate) fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

pub(crate) fn text_size(n: usize) -> TextSize {
    TextSize::new(to_u32(n))
}

/// Line number and byte range (without the line break) of the line holding `offset`. Line
/// breaks are `\n`, `\r\n` and lone `\r`, as in the lexer.
pub(crate) fn line_bounds(source: &str, offset: usize) -> (u32, Range<usize>) {
    let offset = floor_boundary(source, offset);
    let bytes = source.as_bytes();
    let mut line = 1u32;
    let mut start = 0;
    let mut i = 0;
    while i < offset {
        match bytes[i] {
            b'\n' => {
                line = line.saturating_add(1);
                start = i + 1;
            }
            b'\r' if bytes.get(i + 1) != Some(&b'\n') => {
                line = line.saturating_add(1);
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    let end = source[start..]
        .find(['\n', '\r'])
        .map_or(source.len(), |n| start + n);
    (line, start..end.max(offset))
}

/// 1-based line and 1-based column counted in characters, like CPython's lineno/offset.
pub(crate) fn line_col(source: &str, offset: usize) -> (u32, u32) {
    let offset = floor_boundary(source, offset);
    let (line, range) = line_bounds(source, offset);
    let column = source[range.start..offset].chars().count() + 1;
    (line, to_u32(column))
}

/// Moves an end-of-input offset back over one trailing line break, where CPython reports
/// errors found at the end of the file.
pub(crate) fn before_final_newline(source: &str, offset: usize) -> usize {
    let offset = floor_boundary(source, offset);
    let head = &source[..offset];
    if offset < source.len() {
        offset
    } else if let Some(rest) = head.strip_suffix("\r\n") {
        rest.len()
    } else if let Some(rest) = head.strip_suffix(['\n', '\r']) {
        rest.len()
    } else {
        offset
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::*;

    #[test]
    fn columns_count_characters_not_bytes() {
        assert_like_cpython("s = 'héllo'; ü = 1 +\n", "invalid syntax", 1, 21);
        assert_like_cpython("ü = 'é' $\n", "invalid syntax", 1, 9);
        assert_like_cpython(
            "x = 1\u{a0}+ 2\n",
            "invalid non-printable character U+00A0",
            1,
            6,
        );
    }

    #[test]
    fn tabs_count_as_one_column() {
        assert_like_cpython("if x:\n\ty = 1 $\n", "invalid syntax", 2, 8);
    }

    #[test]
    fn crlf_errors_are_located_like_cpython() {
        assert_like_cpython("x = 1\r\ny = 2 3\r\n", "invalid syntax", 2, 7);
        assert_like_cpython("x = 1\r\ny = (\r\n", "'(' was never closed", 2, 5);
    }
}
