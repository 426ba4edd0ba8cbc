//! `Diagnostic`: why a script was refused, in CPython's words, and where.

use std::fmt;

/// A refused script: what is wrong and, for syntax errors, where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub problem: Problem,
    /// For people: CPython's `SyntaxError.msg` for syntax errors, else what was found and what
    /// is expected.
    pub message: String,
    /// Set for [`Problem::Syntax`] only.
    pub position: Option<Position>,
}

/// The kinds of refusal, for programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Problem {
    /// The source does not compile.
    Syntax,
    /// No usable top-level `main` function.
    MissingMain,
    /// `main` has parameters without defaults, so it cannot be called with no arguments.
    MainParameters,
}

/// 1-based line and column (counted in characters), like CPython's `lineno` and `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub line: u32,
    pub column: u32,
}

impl Diagnostic {
    pub(crate) fn syntax(message: impl fmt::Display, line: u32, column: u32) -> Self {
        Self {
            problem: Problem::Syntax,
            message: message.to_string(),
            position: Some(Position { line, column }),
        }
    }

    pub(crate) fn missing_main(message: String) -> Self {
        Self {
            problem: Problem::MissingMain,
            message,
            position: None,
        }
    }

    pub(crate) fn main_parameters(message: String) -> Self {
        Self {
            problem: Problem::MainParameters,
            message,
            position: None,
        }
    }
}

/// Syntax errors read `SyntaxError: <message> (line L, column C)`; others are their message.
impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.problem, self.position) {
            (Problem::Syntax, Some(Position { line, column })) => write!(
                f,
                "SyntaxError: {} (line {line}, column {column})",
                self.message
            ),
            _ => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for Diagnostic {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax_errors_display_like_the_api_always_answered() {
        assert_eq!(
            Diagnostic::syntax("'(' was never closed", 1, 5).to_string(),
            "SyntaxError: '(' was never closed (line 1, column 5)"
        );
    }

    #[test]
    fn other_diagnostics_display_their_message_alone() {
        let diagnostic = Diagnostic::missing_main("no main here".to_owned());
        assert_eq!(diagnostic.to_string(), "no main here");
        assert_eq!(diagnostic.position, None);
    }
}
