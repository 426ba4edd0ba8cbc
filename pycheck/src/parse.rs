//! Parsing: runs rustpython's parser on a pre-scanned script and words its errors as CPython
//! 3.11 does ("expected ':'", "expected an indented block after ...", Python 2 `print`).

use std::borrow::Cow;

use rustpython_parser::ast::{self, Stmt};
use rustpython_parser::lexer::{self, LexicalErrorType};
use rustpython_parser::text_size::TextRange;
use rustpython_parser::{Mode, ParseError, ParseErrorType, Tok};

use crate::diagnostic::Diagnostic;
use crate::messages::{lexical_message, next_token_start};
use crate::position::{
    before_final_newline, line_bounds, line_col, syntax_at, syntax_error, to_u32,
};

/// The file name the parser puts in its errors; they are reworded before anyone sees it.
pub(crate) const SOURCE_PATH: &str = "<script>";

pub(crate) type Spanned = (Tok, TextRange);

/// What rustpython parses: the pre-scanned tokens, or a text to lex again.
pub(crate) enum ParserInput<'a> {
    Tokens(Vec<Spanned>),
    /// The source, possibly rewritten by the pre-scan; byte offsets are the source's.
    Text(Cow<'a, str>),
}

/// Parses `input`; errors are worded and placed from `source` and its pre-scanned copy `lexed`.
pub(crate) fn parse(
    source: &str,
    lexed: &str,
    input: ParserInput<'_>,
) -> Result<Vec<Stmt>, Diagnostic> {
    // The pre-scan bounds every recursion in the parser, but this is a third-party parser fed
    // untrusted input: an unknown bug must become a rejected script, not a crashed request.
    let parsed = std::panic::catch_unwind(move || match input {
        ParserInput::Tokens(tokens) => {
            rustpython_parser::parse_tokens(tokens.into_iter().map(Ok), Mode::Module, SOURCE_PATH)
        }
        ParserInput::Text(text) => rustpython_parser::parse(&text, Mode::Module, SOURCE_PATH),
    });
    match parsed {
        Ok(Ok(ast::Mod::Module(module))) => Ok(module.body),
        Ok(Ok(_)) => Ok(Vec::new()),
        Ok(Err(error)) => Err(parse_error(source, lexed, &error)),
        Err(_) => Err(syntax_error("the parser failed on this script", 1, 1)),
    }
}

pub(crate) fn parse_error(source: &str, lexed: &str, error: &ParseError) -> Diagnostic {
    let at = error.offset.to_usize();
    match &error.error {
        // rustpython's way of saying the file ended where a block should start.
        ParseErrorType::Lexical(LexicalErrorType::IndentationError) => {
            expected_block(source, lexed, at)
        }
        ParseErrorType::Lexical(lexical) => {
            syntax_at(source, lexical_message(source, lexical, at), at)
        }
        ParseErrorType::UnrecognizedToken(Tok::Indent, _) => {
            // CPython puts the column at the end of the indentation.
            let (line, range) = line_bounds(source, at);
            let width = source[range]
                .chars()
                .take_while(|c| matches!(c, ' ' | '\t' | '\x0c'))
                .count();
            syntax_error("unexpected indent", line, to_u32(width.max(1)))
        }
        ParseErrorType::UnrecognizedToken(_, Some(expected)) if expected == "Indent" => {
            expected_block(source, lexed, at)
        }
        ParseErrorType::UnrecognizedToken(_, Some(expected)) if expected == "\":\"" => {
            syntax_at(source, "expected ':'", at)
        }
        ParseErrorType::UnrecognizedToken(_, Some(expected)) if expected == "\"else\"" => {
            syntax_at(source, "expected 'else' after 'if' expression", at)
        }
        ParseErrorType::UnrecognizedToken(..) | ParseErrorType::ExtraToken(_) => {
            invalid_syntax(source, lexed, at)
        }
        ParseErrorType::Eof | ParseErrorType::InvalidToken => {
            syntax_at(source, "invalid syntax", end_of_code(source, at))
        }
    }
}

/// Tokens of `lexed` that start before `end`; errors are only re-described here, so lexing
/// trouble simply ends the list.
fn tokens_before(lexed: &str, end: usize) -> impl Iterator<Item = Spanned> + '_ {
    lexer::lex(lexed, Mode::Module)
        .map_while(Result::ok)
        .take_while(move |(_, range)| range.start().to_usize() < end)
}

/// "expected an indented block after function definition on line 1", naming the last block
/// header before the error like CPython does.
fn expected_block(source: &str, lexed: &str, at: usize) -> Diagnostic {
    let mut header = None;
    // First two tokens of the current logical line (the second matters after `async`).
    let mut head: Vec<Spanned> = Vec::with_capacity(2);
    let mut ends_with_colon = false;
    for (tok, range) in tokens_before(lexed, at) {
        match tok {
            Tok::Newline => {
                if ends_with_colon {
                    header = describe_header(&head).or(header);
                }
                head.clear();
                ends_with_colon = false;
            }
            Tok::Indent | Tok::Dedent => {}
            _ => {
                ends_with_colon = tok == Tok::Colon;
                if head.len() < 2 {
                    head.push((tok, range));
                }
            }
        }
    }
    let message = match header {
        Some((what, start)) => {
            let (line, _) = line_col(source, start);
            format!("expected an indented block after {what} on line {line}")
        }
        None => "expected an indented block".to_owned(),
    };
    syntax_at(source, message, end_of_code(source, at))
}

/// CPython reports errors found at the end of the input at the end of the last line.
fn end_of_code(source: &str, at: usize) -> usize {
    if next_token_start(source, at) >= source.len() {
        before_final_newline(source, source.len())
    } else {
        at
    }
}

fn describe_header(head: &[Spanned]) -> Option<(&'static str, usize)> {
    let (first, range) = head.first()?;
    let keyword = match first {
        Tok::Async => &head.get(1)?.0,
        other => other,
    };
    let what = match keyword {
        Tok::Def => "function definition",
        Tok::Class => "class definition",
        Tok::If => "'if' statement",
        Tok::Elif => "'elif' statement",
        Tok::Else => "'else' statement",
        Tok::For => "'for' statement",
        Tok::While => "'while' statement",
        Tok::Try => "'try' statement",
        Tok::Except => "'except' statement",
        Tok::Finally => "'finally' statement",
        Tok::With => "'with' statement",
        Tok::Match => "'match' statement",
        Tok::Case => "'case' statement",
        _ => return None,
    };
    Some((what, range.start().to_usize()))
}

/// "invalid syntax", with CPython's more specific wording for `print x` / `exec code` (Python 2
/// statements) and for `def name:` without parentheses.
fn invalid_syntax(source: &str, lexed: &str, at: usize) -> Diagnostic {
    let mut before: Option<Tok> = None;
    let mut previous: Option<Spanned> = None;
    let mut failing: Option<Tok> = None;
    for (tok, range) in lexer::lex(lexed, Mode::Module).map_while(Result::ok) {
        if range.start().to_usize() >= at {
            failing = Some(tok);
            break;
        }
        before = previous.map(|(tok, _)| tok);
        previous = Some((tok, range));
    }
    if let (Some((Tok::Name { name }, range)), Some(failing)) = (&previous, &failing) {
        let at_statement_start = matches!(
            before,
            None | Some(Tok::Newline | Tok::Indent | Tok::Dedent | Tok::Semi | Tok::Colon)
        );
        let starts_expression = matches!(
            failing,
            Tok::Name { .. }
                | Tok::Int { .. }
                | Tok::Float { .. }
                | Tok::Complex { .. }
                | Tok::String { .. }
                | Tok::True
                | Tok::False
                | Tok::None
                | Tok::Ellipsis
                | Tok::Lbrace
                | Tok::Not
                | Tok::Lambda
                | Tok::Tilde
        );
        if (name == "print" || name == "exec") && at_statement_start && starts_expression {
            return syntax_at(
                source,
                format!("Missing parentheses in call to '{name}'. Did you mean {name}(...)?"),
                range.start().to_usize(),
            );
        }
        if before == Some(Tok::Def) && *failing != Tok::Lpar {
            return syntax_at(source, "expected '('", at);
        }
    }
    syntax_at(source, "invalid syntax", at)
}

#[cfg(test)]
mod tests {
    use crate::testing::*;

    #[test]
    fn syntax_error_on_the_bracket_line_wins_over_the_unclosed_bracket() {
        assert_like_cpython("def f(:\n    pass\n", "invalid syntax", 1, 7);
    }

    #[test]
    fn common_syntax_errors_match_cpython() {
        assert_like_cpython("if x\n    pass\n", "expected ':'", 1, 5);
        assert_like_cpython("x = 1\ny = = 2\n", "invalid syntax", 2, 5);
        assert_like_cpython("x = 1 +\n", "invalid syntax", 1, 8);
        assert_like_cpython("def f:\n  pass\n", "expected '('", 1, 6);
        assert_like_cpython("x = $\n", "invalid syntax", 1, 5);
        assert_like_cpython("f()f()\n", "invalid syntax", 1, 4);
        assert_like_cpython(
            "print \"hello\"\n",
            "Missing parentheses in call to 'print'. Did you mean print(...)?",
            1,
            1,
        );
        assert_like_cpython(
            "def f(a=1, b): pass\n",
            "non-default argument follows default argument",
            1,
            12,
        );
        assert_like_cpython(
            "x = 0777\n",
            "leading zeros in decimal integer literals are not permitted; use an 0o prefix for octal integers",
            1,
            5,
        );
    }

    #[test]
    fn indentation_errors_match_cpython() {
        assert_like_cpython("x = 1\n    y = 2\n", "unexpected indent", 2, 4);
        assert_like_cpython("\tx = (1 +\n", "unexpected indent", 1, 1);
        assert_like_cpython(
            "if x:\n    a\n  b\n",
            "unindent does not match any outer indentation level",
            3,
            4,
        );
        assert_like_cpython(
            "if x:\n        a\n\tb\n",
            "inconsistent use of tabs and spaces in indentation",
            3,
            1,
        );
        assert_like_cpython(
            "def main():\nreturn 1\n",
            "expected an indented block after function definition on line 1",
            2,
            1,
        );
        assert_like_cpython(
            "def main():\n",
            "expected an indented block after function definition on line 1",
            1,
            12,
        );
        assert_like_cpython(
            "if x:\n  pass\nelif y:\nz\n",
            "expected an indented block after 'elif' statement on line 3",
            4,
            1,
        );
    }
}
