//! Error messages: rustpython's lexer errors reworded and repositioned as CPython 3.11 reports
//! them.

use rustpython_parser::lexer::LexicalErrorType;

use crate::diagnostic::Diagnostic;
use crate::position::{
    before_final_newline, floor_boundary, line_bounds, line_col, syntax_at, syntax_error, to_u32,
};

fn invalid_character(c: char) -> String {
    let code = u32::from(c);
    let format_char = matches!(
        c,
        '\u{AD}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}'
    );
    if c.is_ascii() && !c.is_ascii_control() {
        "invalid syntax".to_owned()
    } else if c.is_control() || c.is_whitespace() || format_char {
        format!("invalid non-printable character U+{code:04X}")
    } else {
        format!("invalid character '{c}' (U+{code:04X})")
    }
}

/// Where a token that failed to lex starts: past whitespace, comments and line continuations
/// that follow the previous token.
pub(crate) fn next_token_start(source: &str, from: usize) -> usize {
    let bytes = source.as_bytes();
    let mut i = floor_boundary(source, from);
    while i < bytes.len() {
        match bytes[i] {
            b' ' | b'\t' | b'\x0c' | b'\r' | b'\n' => i += 1,
            b'\\' if matches!(bytes.get(i + 1), Some(b'\n' | b'\r')) => i += 2,
            b'#' => {
                while i < bytes.len() && !matches!(bytes[i], b'\n' | b'\r') {
                    i += 1;
                }
            }
            _ => break,
        }
    }
    i
}

pub(crate) fn starts_string(text: &str) -> bool {
    let rest = text.trim_start_matches(['r', 'R', 'b', 'B', 'u', 'U', 'f', 'F']);
    text.len() - rest.len() <= 2 && rest.starts_with(['\'', '"'])
}

fn unterminated_string(source: &str, last_end: usize, location: usize, triple: bool) -> Diagnostic {
    let start = next_token_start(source, last_end);
    let (detected, _) = line_col(source, location.saturating_sub(1).max(start));
    let kind = if triple {
        "triple-quoted string"
    } else {
        "string"
    };
    syntax_at(
        source,
        format!("unterminated {kind} literal (detected at line {detected})"),
        start,
    )
}

/// Maps an error of rustpython's lexer to CPython's wording and position. `last_end` is the end
/// of the last good token and `open_bracket` the innermost unclosed bracket, when known.
pub(crate) fn lexer_error(
    source: &str,
    error: &LexicalErrorType,
    location: usize,
    last_end: usize,
    open_bracket: Option<(char, usize)>,
) -> Diagnostic {
    match error {
        LexicalErrorType::UnrecognizedToken { tok } => syntax_at(
            source,
            invalid_character(*tok),
            location.saturating_sub(tok.len_utf8()),
        ),
        LexicalErrorType::NestingError => {
            let at = floor_boundary(source, location.saturating_sub(1));
            let close = source[at..].chars().next().unwrap_or(')');
            syntax_at(source, format!("unmatched '{close}'"), at)
        }
        LexicalErrorType::IndentationError => {
            let (line, range) = line_bounds(source, location);
            let column = to_u32(source[range].chars().count() + 1);
            syntax_error(
                "unindent does not match any outer indentation level",
                line,
                column,
            )
        }
        LexicalErrorType::TabError | LexicalErrorType::TabsAfterSpaces => {
            let (line, _) = line_bounds(source, location);
            syntax_error(
                "inconsistent use of tabs and spaces in indentation",
                line,
                1,
            )
        }
        LexicalErrorType::StringError => unterminated_string(source, last_end, location, false),
        LexicalErrorType::OtherError(message) if message == "EOL while scanning string literal" => {
            unterminated_string(source, last_end, location, false)
        }
        LexicalErrorType::Eof => {
            let start = next_token_start(source, last_end);
            if start < source.len() && starts_string(&source[start..]) {
                unterminated_string(source, last_end, location, true)
            } else if let Some((open, at)) = open_bracket {
                syntax_at(source, format!("'{open}' was never closed"), at)
            } else {
                syntax_at(
                    source,
                    "unexpected EOF while parsing",
                    before_final_newline(source, location),
                )
            }
        }
        LexicalErrorType::LineContinuationError if location >= source.len() => {
            syntax_at(source, "unexpected EOF while parsing", location)
        }
        LexicalErrorType::OtherError(message) if message == "Invalid Token" => {
            // Leading zeros; rustpython points past the literal, CPython at its start.
            let head = &source[..floor_boundary(source, location)];
            let start = head
                .trim_end_matches(|c: char| c.is_ascii_alphanumeric() || c == '_')
                .len();
            syntax_at(
                source,
                "leading zeros in decimal integer literals are not permitted; \
                 use an 0o prefix for octal integers",
                start,
            )
        }
        other => syntax_at(source, lexical_message(source, other, location), location),
    }
}

pub(crate) fn lexical_message(source: &str, error: &LexicalErrorType, location: usize) -> String {
    match error {
        LexicalErrorType::OtherError(message)
            if message == "Invalid decimal literal" || message == "Invalid Syntax" =>
        {
            "invalid decimal literal".to_owned()
        }
        LexicalErrorType::OtherError(message) if message.starts_with("ParseBigIntError") => {
            let literal = source.get(floor_boundary(source, location)..).unwrap_or("");
            match literal.get(..2) {
                Some("0x" | "0X") => "invalid hexadecimal literal",
                Some("0o" | "0O") => "invalid octal literal",
                Some("0b" | "0B") => "invalid binary literal",
                _ => "invalid syntax",
            }
            .to_owned()
        }
        LexicalErrorType::UnicodeError | LexicalErrorType::StringError => {
            "(unicode error) 'unicodeescape' codec can't decode bytes: malformed escape sequence"
                .to_owned()
        }
        LexicalErrorType::UnrecognizedToken { tok } => invalid_character(*tok),
        LexicalErrorType::NestingError => "unmatched closing bracket".to_owned(),
        LexicalErrorType::FStringError(rustpython_parser::FStringErrorType::InvalidExpression(
            _,
        )) => "f-string: invalid syntax".to_owned(),
        LexicalErrorType::TabsAfterSpaces => {
            "inconsistent use of tabs and spaces in indentation".to_owned()
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::*;

    #[test]
    fn emoji_identifiers_are_refused_like_cpython() {
        assert_like_cpython("x = 🙂\n", "invalid character '🙂' (U+1F642)", 1, 5);
    }

    #[test]
    fn unclosed_bracket_is_reported_at_the_bracket() {
        assert_like_cpython("x = (", "'(' was never closed", 1, 5);
        assert_like_cpython("x = (\n  [1,\n  2\n", "'[' was never closed", 2, 3);
        assert_like_cpython("x = [1, 2\ny = 3\n", "'[' was never closed", 1, 5);
    }

    #[test]
    fn bracket_mismatches_match_cpython() {
        assert_like_cpython(")\n", "unmatched ')'", 1, 1);
        assert_like_cpython(
            "(]\n",
            "closing parenthesis ']' does not match opening parenthesis '('",
            1,
            2,
        );
        assert_like_cpython(
            "x = (\n]\n",
            "closing parenthesis ']' does not match opening parenthesis '(' on line 1",
            2,
            1,
        );
    }

    #[test]
    fn unterminated_strings_match_cpython() {
        assert_like_cpython(
            "x = 'abc\n",
            "unterminated string literal (detected at line 1)",
            1,
            5,
        );
        assert_like_cpython(
            "x = f'abc\n",
            "unterminated string literal (detected at line 1)",
            1,
            5,
        );
        assert_like_cpython(
            "x = 1\ny = '''abc\n\n\n",
            "unterminated triple-quoted string literal (detected at line 4)",
            2,
            5,
        );
    }
}
