//! Static checks on a submitted script before it is queued: it parses, and it defines a usable
//! top-level `main`. Hostile nesting is refused by a token pre-scan before any AST is built, so
//! neither parsing nor dropping the AST can recurse deeply.

use std::borrow::Cow;
use std::fmt::Display;
use std::ops::Range;

use rustpython_parser::ast::{self, Expr, Stmt};
use rustpython_parser::lexer::{self, LexicalErrorType};
use rustpython_parser::text_size::{TextRange, TextSize};
use rustpython_parser::{Mode, ParseError, ParseErrorType, StringKind, Tok};

/// How the script declares its entry point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub enum MainKind {
    #[serde(rename = "def")]
    Def,
    #[serde(rename = "async def")]
    AsyncDef,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// message is the full human text, exactly "SyntaxError: <msg> (line L, column C)"; line and
    /// column are 1-based like CPython's lineno/offset.
    #[error("{message}")]
    Syntax {
        message: String,
        line: u32,
        column: u32,
    },
    /// no usable top-level `main` function; message says what was found and what is expected.
    #[error("{0}")]
    MissingMain(String),
    /// `main` has a parameter without a default; message names the parameter(s).
    #[error("{0}")]
    MainSignature(String),
}

impl ValidationError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Syntax { .. } => "syntax_error",
            Self::MissingMain(_) => "missing_main",
            Self::MainSignature(_) => "main_signature",
        }
    }
}

/// Checks that `source` parses as a Python module and has a top-level `main` callable with no
/// arguments. Never panics and never recurses deeper than a small bound, whatever the input.
pub fn validate(source: &str) -> Result<MainKind, ValidationError> {
    if let Some(nul) = source.find('\0') {
        return Err(syntax_at(
            source,
            "source code cannot contain null bytes",
            nul,
        ));
    }
    let runs = long_digit_runs(source);
    let lexed = blank_digit_runs(source, &runs);
    let ctx = Ctx {
        source,
        runs: &runs,
    };
    let tokens = prescan(&ctx, &lexed)?;
    // Tokens lexed from the blanked copy carry the wrong values, so the parser re-lexes.
    let tokens = runs.is_empty().then_some(tokens);
    let body = parse(source, &lexed, tokens)?;
    find_main(&body)
}

/// CPython's tokenizer (MAXLEVEL) refuses the 201st open bracket.
const MAX_BRACKET_NESTING: usize = 200;
/// CPython's tokenizer (MAXINDENT = 100, counting the base level) refuses the 100th indent.
const MAX_INDENT_LEVELS: usize = 99;
/// Deepest expression CPython 3.11's `compile()` accepts: `"-" * 2989 + "1"` (2990 nodes) compiles,
/// one more `-` raises RecursionError. Depth here counts AST nodes the way the pre-scan models them.
const MAX_EXPR_DEPTH: u32 = 2990;
/// Backstop if the precedence model under-counts some construct: a plain count of nesting tokens
/// that can never be below the real AST depth by more than a small factor. At this value the
/// AST stays a few tens of thousands of levels deep at worst, far inside a 64 MiB stack.
const MAX_NESTING_TOKENS: u32 = 20_000;
/// Quote styles bound real f-string nesting to about four levels; this is only a guard.
const MAX_FSTRING_NESTING: u32 = 8;
/// CPython refuses longer decimal literals (sys.int_info.default_max_str_digits); converting
/// them is also quadratic in the parser, so they are refused before lexing.
const MAX_INT_DIGITS: usize = 4300;

const TOO_COMPLEX: &str = "too complex: expression nesting is too deep";
const NO_MAIN: &str =
    "script must define a top-level function `main` (def main(): ... or async def main(): ...)";
const HOW_TO_DEFINE: &str = "define it with a top-level `def main():` or `async def main():`";
const SOURCE_PATH: &str = "<script>";

type Spanned = (Tok, TextRange);

// ---------------------------------------------------------------------------------------------
// Positions

fn syntax_error(message: impl Display, line: u32, column: u32) -> ValidationError {
    ValidationError::Syntax {
        message: format!("SyntaxError: {message} (line {line}, column {column})"),
        line,
        column,
    }
}

fn syntax_at(source: &str, message: impl Display, offset: usize) -> ValidationError {
    let (line, column) = line_col(source, offset);
    syntax_error(message, line, column)
}

fn floor_boundary(source: &str, offset: usize) -> usize {
    let mut offset = offset.min(source.len());
    while !source.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn text_size(n: usize) -> TextSize {
    TextSize::new(to_u32(n))
}

/// Line number and byte range (without the line break) of the line holding `offset`. Line
/// breaks are `\n`, `\r\n` and lone `\r`, as in the lexer.
fn line_bounds(source: &str, offset: usize) -> (u32, Range<usize>) {
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
fn line_col(source: &str, offset: usize) -> (u32, u32) {
    let offset = floor_boundary(source, offset);
    let (line, range) = line_bounds(source, offset);
    let column = source[range.start..offset].chars().count() + 1;
    (line, to_u32(column))
}

/// Moves an end-of-input offset back over one trailing line break, where CPython reports
/// errors found at the end of the file.
fn before_final_newline(source: &str, offset: usize) -> usize {
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

// ---------------------------------------------------------------------------------------------
// Long integer literals

/// Digit runs (`[0-9][0-9_]*`) with more than `MAX_INT_DIGITS` digits. Normally none.
fn long_digit_runs(source: &str) -> Vec<Range<usize>> {
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
        if digits > MAX_INT_DIGITS {
            runs.push(start..end);
        }
    }
    runs
}

/// The text the pre-scan lexes: long digit runs become `1` plus spaces, so lexing stays linear
/// while token boundaries, lines and byte offsets are unchanged.
fn blank_digit_runs<'s>(source: &'s str, runs: &[Range<usize>]) -> Cow<'s, str> {
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

// ---------------------------------------------------------------------------------------------
// Pre-scan

struct Ctx<'a> {
    /// The script as submitted; all offsets refer to it (and equally to the blanked copy).
    source: &'a str,
    runs: &'a [Range<usize>],
}

/// Lexes the whole script once, refusing what CPython's tokenizer refuses and any nesting that
/// would make the AST too deep. Every token the parser will ever see passes through here first.
fn prescan(ctx: &Ctx<'_>, lexed: &str) -> Result<Vec<Spanned>, ValidationError> {
    let mut tokens = Vec::new();
    let mut scanner = Scanner::new(ctx, 0, 0, 0);
    let mut last_end = 0;
    for token in lexer::lex(lexed, Mode::Module) {
        match token {
            Ok((tok, range)) => {
                scanner.feed(&tok, range)?;
                last_end = range.end().to_usize();
                tokens.push((tok, range));
            }
            Err(error) => {
                let open = scanner.innermost_bracket();
                return Err(lexing_failed(
                    ctx.source, lexed, tokens, error, last_end, open,
                ));
            }
        }
    }
    Ok(tokens)
}

/// Chooses between a lexing error and an earlier parse error the way CPython does: it parses
/// up to the bad token first, then lets tokenizer errors win over ordinary syntax errors,
/// except "unexpected indent", and except an unclosed bracket unless the parser failed on a
/// later line than the bracket.
fn lexing_failed(
    source: &str,
    lexed: &str,
    tokens: Vec<Spanned>,
    error: lexer::LexicalError,
    last_end: usize,
    open: Option<(char, usize)>,
) -> ValidationError {
    let location = error.location.to_usize();
    let unclosed = match error.error {
        LexicalErrorType::Eof if !starts_string(&source[next_token_start(source, last_end)..]) => {
            open
        }
        _ => None,
    };
    let tokenizer_error = lexer_error(source, &error.error, location, last_end, open);
    // Every token here has been scanned, so parsing them is as safe as the main parse.
    let stream = tokens
        .into_iter()
        .map(Ok)
        .chain(std::iter::once(Err(error)));
    let parsed = std::panic::catch_unwind(move || {
        rustpython_parser::parse_tokens(stream, Mode::Module, SOURCE_PATH)
    });
    let Ok(Err(parse_failure)) = parsed else {
        return tokenizer_error;
    };
    let reached_bad_token = matches!(parse_failure.error, ParseErrorType::Lexical(_))
        && parse_failure.offset.to_usize() == location;
    if reached_bad_token {
        return tokenizer_error;
    }
    let parser_error = || parse_error(source, lexed, &parse_failure);
    if matches!(
        parse_failure.error,
        ParseErrorType::UnrecognizedToken(Tok::Indent, _)
    ) {
        return parser_error();
    }
    match unclosed {
        Some((_, at)) => {
            let (bracket_line, _) = line_col(source, at);
            let (error_line, _) = line_col(source, parse_failure.offset.to_usize());
            if error_line > bracket_line {
                tokenizer_error
            } else {
                parser_error()
            }
        }
        None => tokenizer_error,
    }
}

/// Binding strength of the operators, loosest first, as in the grammar.
mod prec {
    pub const LAMBDA: u8 = 1; // also `yield`
    pub const WALRUS: u8 = 2;
    pub const TERNARY: u8 = 3;
    pub const OR: u8 = 4;
    pub const AND: u8 = 5;
    pub const NOT: u8 = 6;
    pub const COMPARE: u8 = 7; // also `*x` / `**x` unpacking
    pub const BIT_OR: u8 = 8;
    pub const BIT_XOR: u8 = 9;
    pub const BIT_AND: u8 = 10;
    pub const SHIFT: u8 = 11;
    pub const ARITH: u8 = 12;
    pub const TERM: u8 = 13;
    pub const UNARY: u8 = 14;
    pub const POWER: u8 = 15;
    pub const AWAIT: u8 = 16;
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum OpKind {
    Plain,
    /// `or`, `and` and comparison chains build one flat node however long they are.
    Flat,
    /// A conditional expression between its `if` and `else`.
    AwaitingElse,
}

/// An operator still waiting for its right operand; `left` is the depth of what it will wrap.
#[derive(Clone, Copy)]
struct Op {
    prec: u8,
    left: u32,
    kind: OpKind,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum FrameKind {
    Statement,
    Bracket {
        open: char,
        at: usize,
        trailer: bool,
    },
    /// Parameters of a `lambda`, up to its `:`; commas there do not end the lambda.
    LambdaParams,
}

/// One bracket level (or the statement itself). Depths in `cur`/`max` are relative to the
/// frame; `base` is a lower bound of the absolute depth of its contents.
struct Frame {
    kind: FrameKind,
    base: u32,
    ops_start: usize,
    /// Depth of the operand being built, 0 while an operand is expected.
    cur: u32,
    max: u32,
    /// Backstop count of nesting tokens (see `MAX_NESTING_TOKENS`) and its value at the start of
    /// the current segment.
    nesting_base: u32,
    nesting: u32,
}

impl Frame {
    fn new(kind: FrameKind, base: u32, ops_start: usize, nesting: u32) -> Self {
        Self {
            kind,
            base,
            ops_start,
            cur: 0,
            max: 0,
            nesting_base: nesting,
            nesting,
        }
    }
}

/// Computes, token by token, the depth of the AST the parser will build: an operator-precedence
/// walk (shunting-yard without the output) over each segment between separators.
struct Scanner<'a> {
    ctx: &'a Ctx<'a>,
    stmt: Frame,
    nested: Vec<Frame>,
    ops: Vec<Op>,
    brackets: usize,
    /// Depth (and backstop count) at which this scanner's statements sit: 0 for the module,
    /// inherited from the enclosing expression in f-string fields.
    base: u32,
    nesting_base: u32,
    /// Number of `elif`s of the current if-chain at each indentation level; each nests one `If`.
    elifs: Vec<u32>,
    elif_total: u32,
    fstring_depth: u32,
    line_start: bool,
    stmt_start: bool,
    in_import: bool,
    /// The previous token was `is`, so a `not` now is part of the `is not` operator.
    after_is: bool,
    max_depth: u32,
}

impl<'a> Scanner<'a> {
    fn new(ctx: &'a Ctx<'a>, base: u32, nesting: u32, fstring_depth: u32) -> Self {
        Self {
            ctx,
            stmt: Frame::new(FrameKind::Statement, base, 0, nesting),
            nested: Vec::new(),
            ops: Vec::new(),
            brackets: 0,
            base,
            nesting_base: nesting,
            elifs: vec![0],
            elif_total: 0,
            fstring_depth,
            line_start: true,
            stmt_start: true,
            in_import: false,
            after_is: false,
            max_depth: 0,
        }
    }

    fn top(&self) -> &Frame {
        self.nested.last().unwrap_or(&self.stmt)
    }

    fn top_mut(&mut self) -> &mut Frame {
        match self.nested.last_mut() {
            Some(frame) => frame,
            None => &mut self.stmt,
        }
    }

    fn pending(&self) -> u32 {
        to_u32(self.ops.len().saturating_sub(self.top().ops_start))
    }

    fn top_op_mut(&mut self) -> Option<&mut Op> {
        let start = self.top().ops_start;
        if self.ops.len() > start {
            self.ops.last_mut()
        } else {
            None
        }
    }

    fn innermost_bracket(&self) -> Option<(char, usize)> {
        self.nested.iter().rev().find_map(|frame| match frame.kind {
            FrameKind::Bracket { open, at, .. } => Some((open, at)),
            _ => None,
        })
    }

    fn too_complex(&self, at: usize) -> ValidationError {
        syntax_at(self.ctx.source, TOO_COMPLEX, at)
    }

    /// Every pending operator adds at least one level above the current operand, so this is a
    /// lower bound of the final depth; every depth the segment reaches passes through here.
    fn check(&self, at: usize) -> Result<(), ValidationError> {
        let frame = self.top();
        let depth = frame
            .base
            .saturating_add(frame.cur)
            .saturating_add(self.pending());
        if depth > MAX_EXPR_DEPTH || frame.nesting > MAX_NESTING_TOKENS {
            Err(self.too_complex(at))
        } else {
            Ok(())
        }
    }

    fn count_token(&mut self) {
        let frame = self.top_mut();
        frame.nesting = frame.nesting.saturating_add(1);
    }

    fn feed(&mut self, tok: &Tok, range: TextRange) -> Result<(), ValidationError> {
        let at = range.start().to_usize();
        match tok {
            Tok::Newline => {
                self.end_statement(at)?;
                self.line_start = true;
                return Ok(());
            }
            Tok::EndOfFile => return self.end_statement(at),
            Tok::Semi => {
                self.end_statement(at)?;
                self.stmt_start = true;
                return Ok(());
            }
            Tok::Indent => {
                self.elifs.push(0);
                if self.elifs.len() - 1 > MAX_INDENT_LEVELS {
                    return Err(syntax_at(
                        self.ctx.source,
                        "too many levels of indentation",
                        at,
                    ));
                }
                return Ok(());
            }
            Tok::Dedent => {
                if self.elifs.len() > 1 {
                    let closed = self.elifs.pop().unwrap_or(0);
                    self.elif_total = self.elif_total.saturating_sub(closed);
                }
                return Ok(());
            }
            _ => {}
        }
        if self.line_start {
            self.line_start = false;
            self.stmt_start = true;
            self.start_line(tok, at)?;
        }
        if self.stmt_start {
            self.stmt_start = false;
            self.in_import = matches!(tok, Tok::Import | Tok::From);
        }
        let expecting_operand = self.top().cur == 0;
        let after_is = std::mem::replace(&mut self.after_is, *tok == Tok::Is);
        match tok {
            Tok::Not if after_is => Ok(()),
            Tok::Name { name } => {
                self.check_identifier(name, at)?;
                self.operand(1, at)
            }
            Tok::Int { .. } => {
                self.check_int(at)?;
                self.operand(1, at)
            }
            Tok::Float { .. }
            | Tok::Complex { .. }
            | Tok::True
            | Tok::False
            | Tok::None
            | Tok::Ellipsis => self.operand(1, at),
            Tok::String {
                value,
                kind,
                triple_quoted,
            } => {
                let depth = if kind.is_any_fstring() {
                    self.fstring(value, *kind, *triple_quoted, at)?
                } else {
                    1
                };
                self.operand(depth, at)
            }
            Tok::Lpar => self.open('(', at),
            Tok::Lsqb => self.open('[', at),
            Tok::Lbrace => self.open('{', at),
            Tok::Rpar => self.close(')', at),
            Tok::Rsqb => self.close(']', at),
            Tok::Rbrace => self.close('}', at),
            Tok::Colon => self.colon(at),
            Tok::Comma
            | Tok::Equal
            | Tok::Rarrow
            | Tok::For
            | Tok::As
            | Tok::PlusEqual
            | Tok::MinusEqual
            | Tok::StarEqual
            | Tok::SlashEqual
            | Tok::PercentEqual
            | Tok::AmperEqual
            | Tok::VbarEqual
            | Tok::CircumflexEqual
            | Tok::LeftShiftEqual
            | Tok::RightShiftEqual
            | Tok::DoubleStarEqual
            | Tok::DoubleSlashEqual
            | Tok::AtEqual => self.finish_segment(at),
            // `raise x from y`; in `yield from` and `from m import` an operand is expected.
            Tok::From if !expecting_operand => self.finish_segment(at),
            Tok::Dot if !expecting_operand && !self.in_import => self.trailer(at),
            Tok::Lambda => self.lambda(at),
            Tok::Yield => self.prefix(prec::LAMBDA, at),
            Tok::Await => self.prefix(prec::AWAIT, at),
            Tok::Tilde => self.prefix(prec::UNARY, at),
            Tok::Not if expecting_operand => self.prefix(prec::NOT, at),
            Tok::Plus | Tok::Minus if expecting_operand => self.prefix(prec::UNARY, at),
            Tok::Star | Tok::DoubleStar if expecting_operand => self.prefix(prec::COMPARE, at),
            _ if expecting_operand => Ok(()),
            // From here on an operand has just been completed.
            Tok::Plus | Tok::Minus => self.binary(prec::ARITH, false, at),
            Tok::Star | Tok::Slash | Tok::DoubleSlash | Tok::Percent | Tok::At => {
                self.binary(prec::TERM, false, at)
            }
            Tok::DoubleStar => self.binary(prec::POWER, true, at),
            Tok::LeftShift | Tok::RightShift => self.binary(prec::SHIFT, false, at),
            Tok::Amper => self.binary(prec::BIT_AND, false, at),
            Tok::CircumFlex => self.binary(prec::BIT_XOR, false, at),
            Tok::Vbar => self.binary(prec::BIT_OR, false, at),
            Tok::ColonEqual => self.binary(prec::WALRUS, true, at),
            Tok::Less
            | Tok::Greater
            | Tok::EqEqual
            | Tok::NotEqual
            | Tok::LessEqual
            | Tok::GreaterEqual
            | Tok::In
            | Tok::Is
            | Tok::Not => self.flat(prec::COMPARE, at),
            Tok::And => self.flat(prec::AND, at),
            Tok::Or => self.flat(prec::OR, at),
            Tok::If => self.ternary_if(at),
            Tok::Else => self.ternary_else(at),
            _ => Ok(()),
        }
    }

    fn start_line(&mut self, tok: &Tok, at: usize) -> Result<(), ValidationError> {
        if let Some(level) = self.elifs.last_mut() {
            let old = *level;
            *level = match tok {
                Tok::Elif => old.saturating_add(1),
                Tok::Else | Tok::Except | Tok::Finally => old,
                _ => 0,
            };
            self.elif_total = self.elif_total.saturating_sub(old).saturating_add(*level);
        }
        let enclosing = to_u32(self.elifs.len() - 1).saturating_add(self.elif_total);
        let depth = self.base.saturating_add(enclosing);
        let nesting = self.nesting_base.saturating_add(enclosing);
        self.ops.clear();
        self.stmt = Frame::new(FrameKind::Statement, depth, 0, nesting);
        if depth > MAX_EXPR_DEPTH {
            return Err(self.too_complex(at));
        }
        Ok(())
    }

    fn operand(&mut self, depth: u32, at: usize) -> Result<(), ValidationError> {
        let frame = self.top_mut();
        frame.cur = frame.cur.max(depth);
        self.check(at)
    }

    fn trailer(&mut self, at: usize) -> Result<(), ValidationError> {
        self.count_token();
        let frame = self.top_mut();
        frame.cur = frame.cur.saturating_add(1);
        self.check(at)
    }

    fn push_op(&mut self, prec: u8, kind: OpKind, at: usize) -> Result<(), ValidationError> {
        let frame = self.top_mut();
        let left = frame.cur;
        frame.cur = 0;
        self.ops.push(Op { prec, left, kind });
        self.check(at)
    }

    fn prefix(&mut self, prec: u8, at: usize) -> Result<(), ValidationError> {
        self.count_token();
        self.push_op(prec, OpKind::Plain, at)
    }

    fn binary(&mut self, prec: u8, right_assoc: bool, at: usize) -> Result<(), ValidationError> {
        self.count_token();
        self.reduce_while(at, |top| top > prec || (top == prec && !right_assoc))?;
        self.push_op(prec, OpKind::Plain, at)
    }

    fn flat(&mut self, prec: u8, at: usize) -> Result<(), ValidationError> {
        self.reduce_while(at, |top| top > prec)?;
        let cur = self.top().cur;
        match self.top_op_mut() {
            Some(op) if op.prec == prec && op.kind == OpKind::Flat => {
                op.left = op.left.max(cur);
                self.top_mut().cur = 0;
                self.check(at)
            }
            _ => self.push_op(prec, OpKind::Flat, at),
        }
    }

    fn ternary_if(&mut self, at: usize) -> Result<(), ValidationError> {
        self.count_token();
        // Strictly looser only: `a if b else c if d else e` nests to the right.
        self.reduce_while(at, |top| top > prec::TERNARY)?;
        self.push_op(prec::TERNARY, OpKind::AwaitingElse, at)
    }

    fn ternary_else(&mut self, at: usize) -> Result<(), ValidationError> {
        self.reduce_while(at, |top| top > prec::TERNARY)?;
        let cur = self.top().cur;
        match self.top_op_mut() {
            Some(op) if op.kind == OpKind::AwaitingElse => {
                op.left = op.left.max(cur);
                op.kind = OpKind::Plain;
                self.top_mut().cur = 0;
                self.check(at)
            }
            _ => self.push_op(prec::TERNARY, OpKind::Plain, at),
        }
    }

    fn reduce_while(
        &mut self,
        at: usize,
        pred: impl Fn(u8) -> bool,
    ) -> Result<(), ValidationError> {
        while let Some(op) = self.top_op_mut() {
            if !pred(op.prec) {
                break;
            }
            self.reduce_one(at)?;
        }
        Ok(())
    }

    fn reduce_one(&mut self, at: usize) -> Result<(), ValidationError> {
        // Operators below `ops_start` belong to enclosing frames.
        if self.pending() == 0 {
            return Ok(());
        }
        let Some(op) = self.ops.pop() else {
            return Ok(());
        };
        let frame = self.top_mut();
        frame.cur = frame.cur.max(op.left).saturating_add(1);
        self.check(at)
    }

    /// Ends the current comma/colon/`=`-separated segment of the top frame: everything in it
    /// is complete, so later siblings start again from the frame's base.
    fn finish_segment(&mut self, at: usize) -> Result<(), ValidationError> {
        while self.top_op_mut().is_some() {
            self.reduce_one(at)?;
        }
        let frame = self.top_mut();
        frame.max = frame.max.max(frame.cur);
        frame.cur = 0;
        frame.nesting = frame.nesting_base;
        Ok(())
    }

    fn end_statement(&mut self, at: usize) -> Result<(), ValidationError> {
        while !self.nested.is_empty() {
            self.finish_segment(at)?;
            self.nested.pop();
        }
        self.brackets = 0;
        self.finish_segment(at)?;
        self.max_depth = self.max_depth.max(self.stmt.max);
        Ok(())
    }

    fn push_frame(&mut self, kind: FrameKind) {
        let base = self
            .top()
            .base
            .saturating_add(self.pending())
            .saturating_add(1);
        let nesting = self.top().nesting;
        let frame = Frame::new(kind, base, self.ops.len(), nesting);
        self.nested.push(frame);
    }

    fn open(&mut self, open: char, at: usize) -> Result<(), ValidationError> {
        self.brackets += 1;
        if self.brackets > MAX_BRACKET_NESTING {
            return Err(syntax_at(
                self.ctx.source,
                "too many nested parentheses",
                at,
            ));
        }
        let trailer = self.top().cur > 0 && open != '{';
        self.count_token();
        self.check(at)?;
        self.push_frame(FrameKind::Bracket { open, at, trailer });
        Ok(())
    }

    fn close(&mut self, close: char, at: usize) -> Result<(), ValidationError> {
        // A lambda whose `:` never came is a syntax error the parser reports; fold it away.
        while self.top().kind == FrameKind::LambdaParams {
            self.finish_segment(at)?;
            self.nested.pop();
        }
        let FrameKind::Bracket {
            open,
            at: open_at,
            trailer,
        } = self.top().kind
        else {
            return Err(syntax_at(
                self.ctx.source,
                format!("unmatched '{close}'"),
                at,
            ));
        };
        if !matches!((open, close), ('(', ')') | ('[', ']') | ('{', '}')) {
            let (open_line, _) = line_col(self.ctx.source, open_at);
            let (close_line, _) = line_col(self.ctx.source, at);
            let suffix = if open_line == close_line {
                String::new()
            } else {
                format!(" on line {open_line}")
            };
            return Err(syntax_at(
                self.ctx.source,
                format!(
                    "closing parenthesis '{close}' does not match opening parenthesis '{open}'{suffix}"
                ),
                at,
            ));
        }
        self.finish_segment(at)?;
        let inner = self.nested.pop().map_or(0, |frame| frame.max);
        self.brackets = self.brackets.saturating_sub(1);
        let frame = self.top_mut();
        frame.cur = if trailer {
            frame.cur.max(inner).saturating_add(1)
        } else {
            frame.cur.max(inner.saturating_add(1))
        };
        self.check(at)
    }

    fn lambda(&mut self, at: usize) -> Result<(), ValidationError> {
        self.count_token();
        self.check(at)?;
        self.push_frame(FrameKind::LambdaParams);
        Ok(())
    }

    fn colon(&mut self, at: usize) -> Result<(), ValidationError> {
        if self.top().kind == FrameKind::LambdaParams {
            self.finish_segment(at)?;
            let params = self.nested.pop().map_or(0, |frame| frame.max);
            let frame = self.top_mut();
            frame.cur = frame.cur.max(params);
            return self.push_op(prec::LAMBDA, OpKind::Plain, at);
        }
        self.finish_segment(at)?;
        if self.nested.is_empty() {
            // After a block header a simple statement may follow on the same line.
            self.stmt_start = true;
        }
        Ok(())
    }

    /// rustpython lexes emoji as one-character names; CPython refuses them.
    fn check_identifier(&self, name: &str, at: usize) -> Result<(), ValidationError> {
        let mut chars = name.chars();
        if let (Some(c), None) = (chars.next(), chars.next()) {
            let other_id_start = matches!(c, '\u{2118}' | '\u{212E}' | '\u{309B}' | '\u{309C}');
            if !c.is_alphanumeric() && c != '_' && !other_id_start {
                return Err(syntax_at(
                    self.ctx.source,
                    format!("invalid character '{c}' (U+{:04X})", u32::from(c)),
                    at,
                ));
            }
        }
        Ok(())
    }

    /// Refuses an integer token that is one of the long digit runs, as CPython does.
    fn check_int(&self, at: usize) -> Result<(), ValidationError> {
        let Ok(index) = self.ctx.runs.binary_search_by_key(&at, |run| run.start) else {
            return Ok(());
        };
        let run = &self.ctx.runs[index];
        let source = self.ctx.source;
        if source[run.end..].starts_with(['.', 'e', 'E', 'j', 'J']) {
            // A float or imaginary literal: no integer conversion, and cheap to parse.
            return Ok(());
        }
        let digits = &source[run.clone()];
        if digits.starts_with('0') {
            if digits.bytes().all(|b| b == b'0' || b == b'_') {
                return Ok(());
            }
            return Err(syntax_at(
                source,
                "leading zeros in decimal integer literals are not permitted; \
                 use an 0o prefix for octal integers",
                at,
            ));
        }
        let count = digits.bytes().filter(u8::is_ascii_digit).count();
        let context = if self.fstring_depth > 0 {
            "f-string: "
        } else {
            ""
        };
        Err(syntax_at(
            source,
            format!(
                "{context}Exceeds the limit ({MAX_INT_DIGITS} digits) for integer string conversion: \
                 value has {count} digits; use sys.set_int_max_str_digits() to increase the \
                 limit - Consider hexadecimal for huge integer literals to avoid decimal \
                 conversion limits."
            ),
            at,
        ))
    }

    /// Scans the replacement fields of an f-string token, which the parser will parse as
    /// separate expressions; returns the depth of the resulting `JoinedStr` operand.
    fn fstring(
        &mut self,
        value: &str,
        kind: StringKind,
        triple_quoted: bool,
        at: usize,
    ) -> Result<u32, ValidationError> {
        if self.fstring_depth >= MAX_FSTRING_NESTING {
            return Err(self.too_complex(at));
        }
        let quotes = if triple_quoted { 3 } else { 1 };
        let body_start = at + kind.prefix_len().to_usize() + quotes;
        let base = self
            .top()
            .base
            .saturating_add(self.pending())
            .saturating_add(1);
        let nesting = self.top().nesting.saturating_add(1);
        let mut depth = 1;
        for field in fstring_fields(value, kind.is_raw()) {
            // A format spec's fields sit two levels further down (spec JoinedStr, its field).
            let extra = 2 * field.nested;
            let mut inner = Scanner::new(
                self.ctx,
                base.saturating_add(extra),
                nesting.saturating_add(extra),
                self.fstring_depth + 1,
            );
            // Exactly what rustpython parses: the field wrapped in parentheses, positioned so
            // that `(` sits on the `{`.
            let wrapped = format!("({})", field.expression);
            let start = (body_start + field.location).saturating_sub(1);
            for token in lexer::lex_starts_at(&wrapped, Mode::Expression, text_size(start)) {
                // A lexing error fails the parser's own parse of this field at the same point.
                let Ok((tok, range)) = token else { break };
                inner.feed(&tok, range)?;
            }
            inner.end_statement(start)?;
            // The wrapping parentheses already counted one level, for the FormattedValue.
            depth = depth.max(inner.max_depth.saturating_add(1).saturating_add(extra));
        }
        Ok(depth)
    }
}

// ---------------------------------------------------------------------------------------------
// f-string fields

/// A replacement field as rustpython's f-string parser extracts it before parsing it.
struct FStringField {
    expression: String,
    /// Byte offset in the string body just after the field's `{`.
    location: usize,
    /// 1 for fields inside another field's format spec.
    nested: u32,
}

/// Mirrors rustpython 0.4's `StringParser::parse_fstring` so that exactly the fields it will
/// parse get scanned. Where it would fail, the walk stops too; everything parsed before that
/// point has been collected.
fn fstring_fields(body: &str, raw: bool) -> Vec<FStringField> {
    let mut finder = FieldFinder {
        body,
        pos: 0,
        raw,
        fields: Vec::new(),
    };
    // `None` only means the parser will report an f-string error here.
    let _ = finder.literal(0);
    finder.fields
}

struct FieldFinder<'a> {
    body: &'a str,
    pos: usize,
    raw: bool,
    fields: Vec<FStringField>,
}

impl FieldFinder<'_> {
    fn peek(&self) -> Option<char> {
        self.body.get(self.pos..)?.chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn literal(&mut self, nested: u32) -> Option<()> {
        if nested >= 2 {
            return None;
        }
        while let Some(ch) = self.peek() {
            match ch {
                '{' => {
                    self.bump();
                    if nested == 0 {
                        match self.peek() {
                            Some('{') => {
                                self.bump();
                                continue;
                            }
                            None => return None,
                            Some(_) => {}
                        }
                    }
                    self.field(nested)?;
                }
                '}' => {
                    if nested > 0 {
                        break;
                    }
                    self.bump();
                    if self.bump()? != '}' {
                        return None;
                    }
                }
                '\\' if !self.raw => {
                    self.bump();
                    match self.peek()? {
                        '{' | '}' => {}
                        'N' => {
                            // `\N{NAME}`: its braces are not a field.
                            self.bump();
                            if self.bump()? != '{' {
                                return None;
                            }
                            while self.bump()? != '}' {}
                        }
                        _ => {
                            self.bump();
                        }
                    }
                }
                _ => {
                    self.bump();
                }
            }
        }
        Some(())
    }

    fn field(&mut self, nested: u32) -> Option<()> {
        let location = self.pos;
        let mut expression = String::new();
        let mut delimiters = Vec::new();
        let mut self_documenting = false;
        while let Some(ch) = self.bump() {
            match ch {
                '!' | '=' | '>' | '<' if self.peek() == Some('=') => {
                    expression.push(ch);
                    expression.push('=');
                    self.bump();
                }
                '!' if delimiters.is_empty() => {
                    if expression.trim().is_empty() || !matches!(self.bump()?, 's' | 'a' | 'r') {
                        return None;
                    }
                    if !matches!(self.peek()?, '}' | ':') {
                        return None;
                    }
                }
                '=' if delimiters.is_empty() => self_documenting = true,
                ':' if delimiters.is_empty() => self.spec(nested)?,
                '(' | '{' | '[' => {
                    expression.push(ch);
                    delimiters.push(ch);
                }
                ')' | ']' | '}' if !delimiters.is_empty() => {
                    let open = match ch {
                        ')' => '(',
                        ']' => '[',
                        _ => '{',
                    };
                    if delimiters.pop()? != open {
                        return None;
                    }
                    expression.push(ch);
                }
                ')' | ']' => return None,
                '}' => {
                    if expression.trim().is_empty() {
                        return None;
                    }
                    self.fields.push(FStringField {
                        expression,
                        location,
                        nested,
                    });
                    return Some(());
                }
                '"' | '\'' => {
                    expression.push(ch);
                    loop {
                        let c = self.bump()?;
                        expression.push(c);
                        if c == ch {
                            break;
                        }
                    }
                }
                ' ' if self_documenting => {}
                '\\' => return None,
                _ => {
                    if self_documenting {
                        return None;
                    }
                    expression.push(ch);
                }
            }
        }
        None
    }

    fn spec(&mut self, nested: u32) -> Option<()> {
        while let Some(next) = self.peek() {
            match next {
                '{' => {
                    self.literal(nested + 1)?;
                    continue;
                }
                '}' => break,
                _ => {}
            }
            self.bump();
        }
        Some(())
    }
}

// ---------------------------------------------------------------------------------------------
// Error messages

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
fn next_token_start(source: &str, from: usize) -> usize {
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

fn starts_string(text: &str) -> bool {
    let rest = text.trim_start_matches(['r', 'R', 'b', 'B', 'u', 'U', 'f', 'F']);
    text.len() - rest.len() <= 2 && rest.starts_with(['\'', '"'])
}

fn unterminated_string(
    source: &str,
    last_end: usize,
    location: usize,
    triple: bool,
) -> ValidationError {
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
fn lexer_error(
    source: &str,
    error: &LexicalErrorType,
    location: usize,
    last_end: usize,
    open_bracket: Option<(char, usize)>,
) -> ValidationError {
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

fn lexical_message(source: &str, error: &LexicalErrorType, location: usize) -> String {
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

// ---------------------------------------------------------------------------------------------
// Parsing

fn parse(
    source: &str,
    lexed: &str,
    tokens: Option<Vec<Spanned>>,
) -> Result<Vec<Stmt>, ValidationError> {
    // The pre-scan bounds every recursion in the parser, but this is a third-party parser fed
    // untrusted input: an unknown bug must become a rejected script, not a crashed request.
    let parsed = std::panic::catch_unwind(move || match tokens {
        Some(tokens) => {
            rustpython_parser::parse_tokens(tokens.into_iter().map(Ok), Mode::Module, SOURCE_PATH)
        }
        None => rustpython_parser::parse(source, Mode::Module, SOURCE_PATH),
    });
    match parsed {
        Ok(Ok(ast::Mod::Module(module))) => Ok(module.body),
        Ok(Ok(_)) => Ok(Vec::new()),
        Ok(Err(error)) => Err(parse_error(source, lexed, &error)),
        Err(_) => Err(syntax_error("the parser failed on this script", 1, 1)),
    }
}

fn parse_error(source: &str, lexed: &str, error: &ParseError) -> ValidationError {
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
fn expected_block(source: &str, lexed: &str, at: usize) -> ValidationError {
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
fn invalid_syntax(source: &str, lexed: &str, at: usize) -> ValidationError {
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

// ---------------------------------------------------------------------------------------------
// Finding `main`

const MAIN: &str = "main";

enum Binding<'a> {
    Function(MainKind, &'a ast::Arguments),
    Other(&'static str),
    Deleted,
}

fn find_main(body: &[Stmt]) -> Result<MainKind, ValidationError> {
    // Like the interpreter, the last top-level statement binding the name decides.
    let last = body.iter().rev().find_map(top_level_binding);
    match last {
        Some(Binding::Function(kind, args)) => check_signature(args).map(|()| kind),
        Some(Binding::Other(how)) => Err(ValidationError::MissingMain(format!(
            "`main` is bound by {how}, not a def; {HOW_TO_DEFINE}"
        ))),
        Some(Binding::Deleted) => Err(ValidationError::MissingMain(format!(
            "`main` is deleted by a top-level `del` statement; {HOW_TO_DEFINE} after it"
        ))),
        None => Err(ValidationError::MissingMain(match nested_main(body) {
            Some(place) => format!("`main` is defined inside {place}; it must be at the top level"),
            None => NO_MAIN.to_owned(),
        })),
    }
}

fn top_level_binding(stmt: &Stmt) -> Option<Binding<'_>> {
    let binding = match stmt {
        Stmt::FunctionDef(def) if def.name.as_str() == MAIN => {
            Binding::Function(MainKind::Def, &def.args)
        }
        Stmt::AsyncFunctionDef(def) if def.name.as_str() == MAIN => {
            Binding::Function(MainKind::AsyncDef, &def.args)
        }
        Stmt::ClassDef(class) if class.name.as_str() == MAIN => {
            Binding::Other("a class definition")
        }
        Stmt::Assign(assign) if assign.targets.iter().any(binds_main) => {
            let direct = assign
                .targets
                .iter()
                .any(|target| matches!(target, Expr::Name(name) if name.id.as_str() == MAIN));
            if direct && matches!(*assign.value, Expr::Lambda(_)) {
                Binding::Other("a lambda assignment")
            } else {
                Binding::Other("an assignment")
            }
        }
        // A bare annotation (`main: T`) binds nothing.
        Stmt::AnnAssign(assign) if assign.value.is_some() && binds_main(&assign.target) => {
            Binding::Other("an annotated assignment")
        }
        Stmt::AugAssign(assign) if binds_main(&assign.target) => {
            Binding::Other("an augmented assignment")
        }
        Stmt::TypeAlias(alias) if binds_main(&alias.name) => Binding::Other("a `type` statement"),
        Stmt::Import(import) if import.names.iter().any(import_binds_main) => {
            Binding::Other("an import")
        }
        Stmt::ImportFrom(import)
            if import.names.iter().any(|alias| {
                alias.name.as_str() != "*"
                    && alias.asname.as_ref().unwrap_or(&alias.name).as_str() == MAIN
            }) =>
        {
            Binding::Other("an import")
        }
        Stmt::For(for_) if binds_main(&for_.target) => Binding::Other("a `for` loop target"),
        Stmt::AsyncFor(for_) if binds_main(&for_.target) => Binding::Other("a `for` loop target"),
        Stmt::With(with) if with_binds_main(&with.items) => Binding::Other("a `with` statement"),
        Stmt::AsyncWith(with) if with_binds_main(&with.items) => {
            Binding::Other("a `with` statement")
        }
        Stmt::Delete(delete) if delete.targets.iter().any(binds_main) => Binding::Deleted,
        _ => return None,
    };
    Some(binding)
}

/// `import main` and `import main.sub` bind `main`, as does any `import x as main`.
fn import_binds_main(alias: &ast::Alias) -> bool {
    match &alias.asname {
        Some(asname) => asname.as_str() == MAIN,
        None => alias.name.split('.').next() == Some(MAIN),
    }
}

fn with_binds_main(items: &[ast::WithItem]) -> bool {
    items
        .iter()
        .any(|item| item.optional_vars.as_deref().is_some_and(binds_main))
}

/// Whether an assignment target (possibly a nested tuple/list/starred pattern) binds `main`.
fn binds_main(target: &Expr) -> bool {
    let mut pending = vec![target];
    while let Some(expr) = pending.pop() {
        match expr {
            Expr::Name(name) if name.id.as_str() == MAIN => return true,
            Expr::Tuple(tuple) => pending.extend(&tuple.elts),
            Expr::List(list) => pending.extend(&list.elts),
            Expr::Starred(starred) => pending.push(&starred.value),
            _ => {}
        }
    }
    false
}

/// Describes the top-level statement inside which some `def main` hides, if any.
fn nested_main(body: &[Stmt]) -> Option<String> {
    body.iter()
        .find(|stmt| contains_main_def(stmt))
        .map(|stmt| match stmt {
            Stmt::FunctionDef(def) => format!("function `{}`", def.name.as_str()),
            Stmt::AsyncFunctionDef(def) => format!("function `{}`", def.name.as_str()),
            Stmt::ClassDef(class) => format!("class `{}`", class.name.as_str()),
            Stmt::If(_) => "an `if` block".to_owned(),
            Stmt::For(_) | Stmt::AsyncFor(_) => "a `for` loop".to_owned(),
            Stmt::While(_) => "a `while` loop".to_owned(),
            Stmt::With(_) | Stmt::AsyncWith(_) => "a `with` block".to_owned(),
            Stmt::Try(_) | Stmt::TryStar(_) => "a `try` block".to_owned(),
            Stmt::Match(_) => "a `match` block".to_owned(),
            _ => "another statement".to_owned(),
        })
}

/// Searches below `stmt` iteratively: `elif` chains can nest thousands of levels.
fn contains_main_def(stmt: &Stmt) -> bool {
    let mut pending: Vec<&Stmt> = Vec::new();
    push_children(stmt, &mut pending);
    while let Some(stmt) = pending.pop() {
        match stmt {
            Stmt::FunctionDef(def) if def.name.as_str() == MAIN => return true,
            Stmt::AsyncFunctionDef(def) if def.name.as_str() == MAIN => return true,
            _ => push_children(stmt, &mut pending),
        }
    }
    false
}

fn push_children<'a>(stmt: &'a Stmt, pending: &mut Vec<&'a Stmt>) {
    match stmt {
        Stmt::FunctionDef(def) => pending.extend(&def.body),
        Stmt::AsyncFunctionDef(def) => pending.extend(&def.body),
        Stmt::ClassDef(class) => pending.extend(&class.body),
        Stmt::For(for_) => pending.extend(for_.body.iter().chain(&for_.orelse)),
        Stmt::AsyncFor(for_) => pending.extend(for_.body.iter().chain(&for_.orelse)),
        Stmt::While(while_) => pending.extend(while_.body.iter().chain(&while_.orelse)),
        Stmt::If(if_) => pending.extend(if_.body.iter().chain(&if_.orelse)),
        Stmt::With(with) => pending.extend(&with.body),
        Stmt::AsyncWith(with) => pending.extend(&with.body),
        Stmt::Match(match_) => pending.extend(match_.cases.iter().flat_map(|case| &case.body)),
        Stmt::Try(try_) => {
            pending.extend(try_.body.iter().chain(&try_.orelse).chain(&try_.finalbody));
            pending.extend(handler_bodies(&try_.handlers));
        }
        Stmt::TryStar(try_) => {
            pending.extend(try_.body.iter().chain(&try_.orelse).chain(&try_.finalbody));
            pending.extend(handler_bodies(&try_.handlers));
        }
        _ => {}
    }
}

fn handler_bodies(handlers: &[ast::ExceptHandler]) -> impl Iterator<Item = &Stmt> {
    handlers.iter().flat_map(|handler| {
        let ast::ExceptHandler::ExceptHandler(handler) = handler;
        &handler.body
    })
}

fn check_signature(args: &ast::Arguments) -> Result<(), ValidationError> {
    let missing: Vec<&str> = args
        .posonlyargs
        .iter()
        .chain(&args.args)
        .chain(&args.kwonlyargs)
        .filter(|arg| arg.default.is_none())
        .map(|arg| arg.def.arg.as_str())
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(ValidationError::MainSignature(format!(
            "`main` is called with no arguments, so every parameter needs a default; missing: {}",
            missing.join(", ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// Runs `validate` the way the service does: on its own thread with a 64 MiB stack.
    fn run(source: &str) -> Result<MainKind, ValidationError> {
        let source = source.to_owned();
        std::thread::Builder::new()
            .stack_size(64 << 20)
            .spawn(move || validate(&source))
            .expect("spawn validation thread")
            .join()
            .expect("validate must not panic")
    }

    fn syntax(source: &str) -> (String, u32, u32) {
        match run(source) {
            Err(ValidationError::Syntax {
                message,
                line,
                column,
            }) => (message, line, column),
            other => panic!("expected a syntax error for {source:?}, got {other:?}"),
        }
    }

    /// `message`, `line` and `column` are what CPython 3.11.2's `compile()` reports as
    /// `SyntaxError.msg`, `.lineno` and `.offset` for the same source.
    fn assert_like_cpython(source: &str, message: &str, line: u32, column: u32) {
        let (actual, actual_line, actual_column) = syntax(source);
        assert_eq!(
            actual,
            format!("SyntaxError: {message} (line {line}, column {column})"),
            "for {source:?}"
        );
        assert_eq!((actual_line, actual_column), (line, column));
    }

    fn missing_main(source: &str) -> String {
        match run(source) {
            Err(ValidationError::MissingMain(message)) => message,
            other => panic!("expected MissingMain for {source:?}, got {other:?}"),
        }
    }

    fn bound_by(how: &str) -> String {
        format!(
            "`main` is bound by {how}, not a def; define it with a top-level `def main():` or \
             `async def main():`"
        )
    }

    fn assert_rejected_quickly(source: &str, message: &str) {
        let started = Instant::now();
        let (actual, _, _) = syntax(source);
        let elapsed = started.elapsed();
        assert!(actual.contains(message), "got {actual:?}");
        assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
    }

    fn assert_too_complex(source: &str) {
        assert_rejected_quickly(source, TOO_COMPLEX);
    }

    fn with_main(code: &str) -> String {
        format!("{code}\ndef main():\n    pass\n")
    }

    // --- finding `main` -----------------------------------------------------------------------

    #[test]
    fn def_main_is_accepted() {
        assert_eq!(run("def main():\n    return 1\n"), Ok(MainKind::Def));
    }

    #[test]
    fn async_main_is_accepted() {
        assert_eq!(
            run("import asyncio\n\nasync def main():\n    await asyncio.sleep(0)\n"),
            Ok(MainKind::AsyncDef)
        );
    }

    #[test]
    fn decorated_main_counts_as_def() {
        let source = "import functools\n\n@functools.lru_cache()\ndef main():\n    pass\n";
        assert_eq!(run(source), Ok(MainKind::Def));
    }

    #[test]
    fn dunder_main_guard_next_to_a_real_main_is_fine() {
        let source = "def main():\n    print('hi')\n\nif __name__ == \"__main__\":\n    main()\n";
        assert_eq!(run(source), Ok(MainKind::Def));
    }

    #[test]
    fn script_without_main_is_reported() {
        assert_eq!(missing_main("print('hello')\n"), NO_MAIN);
        assert_eq!(
            missing_main("def helper():\n    pass\n"),
            "script must define a top-level function `main` (def main(): ... or async def main(): ...)"
        );
    }

    #[test]
    fn empty_script_has_no_main() {
        assert_eq!(missing_main(""), NO_MAIN);
    }

    #[test]
    fn script_with_only_comments_has_no_main() {
        assert_eq!(
            missing_main("# just a comment\n\n   # another one\n"),
            NO_MAIN
        );
    }

    #[test]
    fn main_inside_if_does_not_count() {
        let source = "if __name__ == '__main__':\n    def main():\n        pass\n";
        assert_eq!(
            missing_main(source),
            "`main` is defined inside an `if` block; it must be at the top level"
        );
    }

    #[test]
    fn main_inside_class_function_or_try_does_not_count() {
        assert_eq!(
            missing_main("class App:\n    def main(self):\n        pass\n"),
            "`main` is defined inside class `App`; it must be at the top level"
        );
        assert_eq!(
            missing_main("def setup():\n    async def main():\n        pass\n"),
            "`main` is defined inside function `setup`; it must be at the top level"
        );
        assert_eq!(
            missing_main(
                "try:\n    import x\nexcept ImportError:\n    def main():\n        pass\n"
            ),
            "`main` is defined inside a `try` block; it must be at the top level"
        );
    }

    #[test]
    fn main_bound_other_ways_is_reported_with_how() {
        assert_eq!(missing_main("main = 1\n"), bound_by("an assignment"));
        assert_eq!(
            missing_main("main = lambda: 0\n"),
            bound_by("a lambda assignment")
        );
        assert_eq!(
            missing_main("a, [main, *b] = f()\n"),
            bound_by("an assignment")
        );
        assert_eq!(
            missing_main("main: int = 3\n"),
            bound_by("an annotated assignment")
        );
        assert_eq!(
            missing_main("main += 1\n"),
            bound_by("an augmented assignment")
        );
        assert_eq!(
            missing_main("class main:\n    pass\n"),
            bound_by("a class definition")
        );
        assert_eq!(missing_main("import main\n"), bound_by("an import"));
        assert_eq!(missing_main("import app as main\n"), bound_by("an import"));
        assert_eq!(
            missing_main("from app import main\n"),
            bound_by("an import")
        );
        assert_eq!(
            missing_main("from app import run as main\n"),
            bound_by("an import")
        );
        assert_eq!(
            missing_main("for main in range(3):\n    pass\n"),
            bound_by("a `for` loop target")
        );
        assert_eq!(
            missing_main("with open('f') as main:\n    pass\n"),
            bound_by("a `with` statement")
        );
        assert_eq!(
            missing_main("def main():\n    pass\n\ndel main\n"),
            "`main` is deleted by a top-level `del` statement; define it with a top-level \
             `def main():` or `async def main():` after it"
        );
    }

    #[test]
    fn star_import_and_bare_annotation_do_not_bind_main() {
        assert_eq!(missing_main("from app import *\n"), NO_MAIN);
        assert_eq!(missing_main("main: int\n"), NO_MAIN);
    }

    #[test]
    fn last_top_level_binding_wins() {
        assert_eq!(
            missing_main("def main():\n    pass\n\nmain = 3\n"),
            bound_by("an assignment")
        );
        assert_eq!(
            run("main = 3\n\nasync def main():\n    pass\n"),
            Ok(MainKind::AsyncDef)
        );
        // Walrus at top level and bindings inside blocks are ignored.
        assert_eq!(
            run("def main():\n    pass\n\n(main := 3)\nif x:\n    main = 4\n"),
            Ok(MainKind::Def)
        );
    }

    #[test]
    fn parameters_without_defaults_are_named() {
        let expected = |missing: &str| {
            Err(ValidationError::MainSignature(format!(
                "`main` is called with no arguments, so every parameter needs a default; missing: {missing}"
            )))
        };
        assert_eq!(run("def main(a, b=1):\n    pass\n"), expected("a"));
        assert_eq!(
            run("async def main(a, /, b, *, c, d=1, **kw):\n    pass\n"),
            expected("a, b, c")
        );
    }

    #[test]
    fn defaults_and_star_parameters_are_fine() {
        assert_eq!(
            run("def main(a=1, /, b=2, *args, c=3, **kwargs):\n    pass\n"),
            Ok(MainKind::Def)
        );
        assert_eq!(
            run("async def main(*args, **kwargs):\n    pass\n"),
            Ok(MainKind::AsyncDef)
        );
    }

    // --- text handling ------------------------------------------------------------------------

    #[test]
    fn unicode_identifiers_and_strings_are_fine() {
        let source = "def main():\n    café = 'naïve ☕ 日本語'\n    データ = f\"{café!r:>10}\"\n    return データ\n";
        assert_eq!(run(source), Ok(MainKind::Def));
    }

    #[test]
    fn tab_indentation_is_fine() {
        assert_eq!(
            run("def main():\n\tif True:\n\t\treturn 1\n"),
            Ok(MainKind::Def)
        );
    }

    #[test]
    fn crlf_line_endings_are_fine() {
        assert_eq!(
            run("import os\r\n\r\ndef main():\r\n    return 1\r\n"),
            Ok(MainKind::Def)
        );
    }

    #[test]
    fn byte_order_mark_is_tolerated() {
        assert_eq!(run("\u{feff}def main():\n    pass\n"), Ok(MainKind::Def));
    }

    #[test]
    fn emoji_identifiers_are_refused_like_cpython() {
        assert_like_cpython("x = 🙂\n", "invalid character '🙂' (U+1F642)", 1, 5);
    }

    #[test]
    fn null_bytes_are_refused() {
        let (message, _, _) = syntax("x = 1\0\n");
        assert!(message.contains("null bytes"), "{message}");
    }

    // --- syntax errors, positions checked against CPython 3.11 --------------------------------

    #[test]
    fn unclosed_bracket_is_reported_at_the_bracket() {
        assert_like_cpython("x = (", "'(' was never closed", 1, 5);
        assert_like_cpython("x = (\n  [1,\n  2\n", "'[' was never closed", 2, 3);
        assert_like_cpython("x = [1, 2\ny = 3\n", "'[' was never closed", 1, 5);
    }

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

    #[test]
    fn syntax_error_message_is_the_display_text() {
        let error = run("x = (").expect_err("unclosed bracket");
        assert_eq!(
            error.to_string(),
            "SyntaxError: '(' was never closed (line 1, column 5)"
        );
        assert_eq!(error.code(), "syntax_error");
    }

    // --- limits ---------------------------------------------------------------------------------

    #[test]
    fn hundred_thousand_minus_signs_are_rejected_quickly() {
        assert_too_complex(&format!("{}1", "-".repeat(100_000)));
        assert_too_complex(&format!("{}1", "-".repeat(256 * 1024 - 1)));
    }

    #[test]
    fn hundred_thousand_open_parens_are_rejected_quickly() {
        assert_like_cpython(&"(".repeat(100_000), "too many nested parentheses", 1, 201);
    }

    #[test]
    fn bracket_nesting_limit_matches_cpython() {
        let nested = |n: usize| with_main(&format!("x = {}1{}", "(".repeat(n), ")".repeat(n)));
        assert_eq!(run(&nested(200)), Ok(MainKind::Def));
        assert_like_cpython(&nested(201), "too many nested parentheses", 1, 205);
        assert_like_cpython(
            &format!("x={}{}", "[".repeat(201), "]".repeat(201)),
            "too many nested parentheses",
            1,
            203,
        );
    }

    #[test]
    fn indentation_limit_matches_cpython() {
        let nested = |levels: usize| {
            let mut source: String = (0..levels)
                .map(|i| format!("{}if x:\n", " ".repeat(i)))
                .collect();
            source.push_str(&" ".repeat(levels));
            source.push_str("pass\n");
            with_main(&source)
        };
        assert_eq!(run(&nested(99)), Ok(MainKind::Def));
        assert_like_cpython(&nested(100), "too many levels of indentation", 101, 1);
    }

    #[test]
    fn expression_depth_limit_matches_cpython_compile() {
        // compile() accepts 2989 unary minus signs and raises RecursionError at 2990.
        let chain = |n: usize| with_main(&format!("x = {}1", "-".repeat(n)));
        assert_eq!(run(&chain(2989)), Ok(MainKind::Def));
        assert_too_complex(&chain(2990));
    }

    #[test]
    fn long_operator_chains_are_rejected_quickly() {
        assert_too_complex(&format!("1{}", "+1".repeat(100_000)));
        assert_too_complex(&format!("x = 'a'{}", " + 'b'".repeat(5_000)));
        assert_too_complex(&format!("x = 2{}", "**2".repeat(100_000)));
        assert_too_complex(&format!("{}x", "not ".repeat(5_000)));
        assert_too_complex(&format!("x = 1{}", " if c else 1".repeat(10_000)));
    }

    #[test]
    fn long_trailer_chains_are_rejected_quickly() {
        assert_too_complex(&format!("a{}", ".b".repeat(100_000)));
        assert_too_complex(&format!("x{}", "[0]".repeat(10_000)));
        assert_too_complex(&format!("f{}", "()".repeat(100_000)));
        assert_too_complex(&format!("x = a{}", ".b(c)[d]".repeat(20_000)));
    }

    #[test]
    fn deep_lambda_chains_are_rejected_quickly() {
        assert_too_complex(&format!("{}1", "lambda: ".repeat(50_000)));
        assert_too_complex(&format!("{}1", "lambda a, b=1, *c: ".repeat(20_000)));
    }

    #[test]
    fn long_elif_chains_are_rejected_quickly() {
        assert_too_complex(&format!("if x: pass\n{}", "elif x: pass\n".repeat(20_000)));
    }

    #[test]
    fn deep_expressions_inside_f_strings_are_rejected_quickly() {
        assert_too_complex(&format!("x = f'{{{}1}}'", "-".repeat(100_000)));
        // Like CPython a field gets its own bracket budget, counting the implicit `(` around it;
        // unlike CPython (offset 201, inside the field) the column is where the bracket really is.
        let (message, line, column) = syntax(&format!(
            "x = f'{{{}1{}}}'",
            "(".repeat(200),
            ")".repeat(200)
        ));
        assert!(message.contains("too many nested parentheses"), "{message}");
        assert_eq!((line, column), (1, 207));
        let nested = "x = f'''{f\"{f'{1}'}\"}'''";
        assert_eq!(run(&with_main(nested)), Ok(MainKind::Def));
    }

    #[test]
    fn huge_integer_literals_are_refused_like_cpython() {
        let (message, _, _) = syntax(&format!("x = {}", "1".repeat(200_000)));
        assert!(
            message.contains("Exceeds the limit (4300 digits)"),
            "{message}"
        );
        assert!(message.contains("value has 200000 digits"), "{message}");
        assert_eq!(
            run(&with_main(&format!("x = {}", "9".repeat(4300)))),
            Ok(MainKind::Def)
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
            assert_eq!(run(&with_main(&code)), Ok(MainKind::Def), "{}", &code[..20]);
        }
    }

    #[test]
    fn wide_but_shallow_code_is_fine() {
        let items: Vec<String> = (0..20_000).map(|i| i.to_string()).collect();
        let entries: Vec<String> = (0..5_000).map(|i| format!("'k{i}': [{i}, -{i}]")).collect();
        for code in [
            format!("x = [{}]", items.join(", ")),
            format!("x = {{{}}}", entries.join(", ")),
            format!("x = {}", vec!["'ab'"; 300].join(" + ")),
            format!("x = {}", vec!["3*x**2"; 1200].join(" + ")),
            format!("x = {}", vec!["a.b(c) < d[0]"; 3000].join(" and ")),
            format!("x = a{}", " is not b".repeat(3000)),
            format!("x = ({})", vec!["lambda a, b: a.b"; 3000].join(", ")),
        ] {
            assert_eq!(run(&with_main(&code)), Ok(MainKind::Def), "{}", &code[..30]);
        }
    }

    #[test]
    fn ordinary_256_kib_script_validates_in_reasonable_time() {
        let mut source = String::from("import json\nimport math\n\nCONSTANTS = [");
        source.push_str(
            &(0..20_000)
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        );
        source.push_str("]\n\n");
        let mut n = 0;
        while source.len() < 256 * 1024 {
            source.push_str(&format!(
                "class Shape{n}:\n    def __init__(self, w, h):\n        self.w, self.h = w, h\n\n\
                 def area_{n}(shape, scale=1.0):\n    \"\"\"Area of shape {n}.\"\"\"\n    \
                 if shape.w < 0 or shape.h < 0:\n        raise ValueError(f\"bad shape {{shape!r}}\")\n    \
                 total = 0\n    for i in range(10):\n        total += (shape.w * shape.h + i) ** 2 / scale\n    \
                 data = {{'n': {n}, 'total': total, 'items': [x * 2 for x in range(5) if x % 2]}}\n    \
                 return json.dumps(data) + ' ' + str(math.sqrt(total))\n\n"
            ));
            n += 1;
        }
        source.push_str("async def main():\n    return area_0(Shape0(1, 2))\n\nif __name__ == '__main__':\n    main()\n");
        assert!(source.len() >= 256 * 1024);
        let started = Instant::now();
        assert_eq!(run(&source), Ok(MainKind::AsyncDef));
        let elapsed = started.elapsed();
        let budget = if cfg!(debug_assertions) { 20 } else { 1 };
        assert!(elapsed < Duration::from_secs(budget), "took {elapsed:?}");
    }

    #[test]
    fn random_token_soup_never_panics() {
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
            "*",
            "**",
            "not ",
            " if ",
            " else ",
            "lambda ",
            "x",
            "1",
            "'s'",
            "f'{",
            "}'",
            "\"",
            "'",
            "\n",
            "\n    ",
            "\t",
            "\\\n",
            "=",
            " is ",
            "def ",
            "main",
            "async ",
            "await ",
            "yield ",
            "#",
            "é",
            "🙂",
            ";",
            "@",
            ":=",
            "0x",
            "1_0",
            "f\"{x!r:{y}}\"",
            "\\N{DASH}",
            "'''",
            "elif ",
            "class ",
        ];
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..300 {
            let len = next() % 60;
            let source: String = (0..len)
                .map(|_| PIECES[usize::try_from(next() % PIECES.len() as u64).unwrap_or(0)])
                .collect();
            // Any outcome is fine as long as there is one.
            let _ = run(&source);
        }
    }

    // --- API ------------------------------------------------------------------------------------

    #[test]
    fn error_codes_are_stable() {
        assert_eq!(
            ValidationError::MissingMain(String::new()).code(),
            "missing_main"
        );
        assert_eq!(
            ValidationError::MainSignature(String::new()).code(),
            "main_signature"
        );
        assert_eq!(syntax_error("x", 1, 1).code(), "syntax_error");
    }

    #[test]
    fn main_kind_serializes_as_python_keywords() {
        assert_eq!(
            serde_json::to_string(&MainKind::Def).ok().as_deref(),
            Some("\"def\"")
        );
        assert_eq!(
            serde_json::to_string(&MainKind::AsyncDef).ok().as_deref(),
            Some("\"async def\"")
        );
    }
}
