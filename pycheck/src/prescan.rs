//! Pre-scan: lexes the whole script once and computes, token by token, how deep the AST will be,
//! refusing hostile nesting before the parser (which recurses) ever sees it.

use std::ops::Range;

use rustpython_parser::lexer::{self, LexicalErrorType};
use rustpython_parser::text_size::TextRange;
use rustpython_parser::{Mode, ParseErrorType, StringKind, Tok};

use crate::diagnostic::Diagnostic;
use crate::fstring::{blank_inner_quotes, fstring_fields};
use crate::limits::Limits;
use crate::messages::{lexer_error, next_token_start, starts_string};
use crate::parse::{parse_error, Spanned, SOURCE_PATH};
use crate::position::{line_col, syntax_at, text_size, to_u32};

pub(crate) const TOO_COMPLEX: &str = "too complex: expression nesting is too deep";

pub(crate) struct Ctx<'a> {
    /// The script as submitted; all offsets refer to it (and equally to the blanked copy).
    pub(crate) source: &'a str,
    /// Its long digit runs (see `long_int`).
    pub(crate) runs: &'a [Range<usize>],
    pub(crate) limits: &'a Limits,
}

/// What the parser gets from a pre-scan that passed.
pub(crate) struct Prescanned {
    /// Every token of the script, f-string bodies rewritten as `rewrites` says.
    pub(crate) tokens: Vec<Spanned>,
    /// f-string bodies to replace, by byte range of the source, before rustpython parses them
    /// (see `fstring::blank_inner_quotes`); each replacement has the same length.
    pub(crate) rewrites: Vec<(Range<usize>, String)>,
}

/// Lexes the whole script once, refusing what CPython's tokenizer refuses and any nesting that
/// would make the AST too deep. Every token the parser will ever see passes through here first.
pub(crate) fn prescan(ctx: &Ctx<'_>, lexed: &str) -> Result<Prescanned, Diagnostic> {
    let mut tokens = Vec::new();
    let mut rewrites = Vec::new();
    let mut scanner = Scanner::new(ctx, 0, 0, 0);
    let mut last_end = 0;
    for token in lexer::lex(lexed, Mode::Module) {
        match token {
            Ok((mut tok, range)) => {
                if let Some(rewrite) = blank_fstring_inner_quotes(&mut tok, range) {
                    rewrites.push(rewrite);
                }
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
    Ok(Prescanned { tokens, rewrites })
}

/// Rewrites an f-string token whose fields hold triple-quoted strings; returns where its body
/// is in the source and what replaces it.
fn blank_fstring_inner_quotes(tok: &mut Tok, range: TextRange) -> Option<(Range<usize>, String)> {
    let Tok::String {
        value,
        kind,
        triple_quoted,
    } = tok
    else {
        return None;
    };
    if !kind.is_any_fstring() {
        return None;
    }
    let blanked = blank_inner_quotes(value, kind.is_raw())?;
    let quotes = if *triple_quoted { 3 } else { 1 };
    let start = range.start().to_usize() + kind.prefix_len().to_usize() + quotes;
    let body = start..start + value.len();
    *value = blanked.clone();
    Some((body, blanked))
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
) -> Diagnostic {
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
    pub(super) const LAMBDA: u8 = 1; // also `yield`
    pub(super) const WALRUS: u8 = 2;
    pub(super) const TERNARY: u8 = 3;
    pub(super) const OR: u8 = 4;
    pub(super) const AND: u8 = 5;
    pub(super) const NOT: u8 = 6;
    pub(super) const COMPARE: u8 = 7; // also `*x` / `**x` unpacking
    pub(super) const BIT_OR: u8 = 8;
    pub(super) const BIT_XOR: u8 = 9;
    pub(super) const BIT_AND: u8 = 10;
    pub(super) const SHIFT: u8 = 11;
    pub(super) const ARITH: u8 = 12;
    pub(super) const TERM: u8 = 13;
    pub(super) const UNARY: u8 = 14;
    pub(super) const POWER: u8 = 15;
    pub(super) const AWAIT: u8 = 16;
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
    /// Backstop count of nesting tokens (see `Limits::max_nesting_tokens`) and its value at the start of
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

    fn too_complex(&self, at: usize) -> Diagnostic {
        syntax_at(self.ctx.source, TOO_COMPLEX, at)
    }

    /// Every pending operator adds at least one level above the current operand, so this is a
    /// lower bound of the final depth; every depth the segment reaches passes through here.
    fn check(&self, at: usize) -> Result<(), Diagnostic> {
        let frame = self.top();
        let depth = frame
            .base
            .saturating_add(frame.cur)
            .saturating_add(self.pending());
        if depth > self.ctx.limits.max_expression_depth
            || frame.nesting > self.ctx.limits.max_nesting_tokens
        {
            Err(self.too_complex(at))
        } else {
            Ok(())
        }
    }

    fn count_token(&mut self) {
        let frame = self.top_mut();
        frame.nesting = frame.nesting.saturating_add(1);
    }

    fn feed(&mut self, tok: &Tok, range: TextRange) -> Result<(), Diagnostic> {
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
                if self.elifs.len() - 1 > self.ctx.limits.max_indent_levels {
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

    fn start_line(&mut self, tok: &Tok, at: usize) -> Result<(), Diagnostic> {
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
        if depth > self.ctx.limits.max_expression_depth {
            return Err(self.too_complex(at));
        }
        Ok(())
    }

    fn operand(&mut self, depth: u32, at: usize) -> Result<(), Diagnostic> {
        let frame = self.top_mut();
        frame.cur = frame.cur.max(depth);
        self.check(at)
    }

    fn trailer(&mut self, at: usize) -> Result<(), Diagnostic> {
        self.count_token();
        let frame = self.top_mut();
        frame.cur = frame.cur.saturating_add(1);
        self.check(at)
    }

    fn push_op(&mut self, prec: u8, kind: OpKind, at: usize) -> Result<(), Diagnostic> {
        let frame = self.top_mut();
        let left = frame.cur;
        frame.cur = 0;
        self.ops.push(Op { prec, left, kind });
        self.check(at)
    }

    fn prefix(&mut self, prec: u8, at: usize) -> Result<(), Diagnostic> {
        self.count_token();
        self.push_op(prec, OpKind::Plain, at)
    }

    fn binary(&mut self, prec: u8, right_assoc: bool, at: usize) -> Result<(), Diagnostic> {
        self.count_token();
        self.reduce_while(at, |top| top > prec || (top == prec && !right_assoc))?;
        self.push_op(prec, OpKind::Plain, at)
    }

    fn flat(&mut self, prec: u8, at: usize) -> Result<(), Diagnostic> {
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

    fn ternary_if(&mut self, at: usize) -> Result<(), Diagnostic> {
        self.count_token();
        // Strictly looser only: `a if b else c if d else e` nests to the right.
        self.reduce_while(at, |top| top > prec::TERNARY)?;
        self.push_op(prec::TERNARY, OpKind::AwaitingElse, at)
    }

    fn ternary_else(&mut self, at: usize) -> Result<(), Diagnostic> {
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

    fn reduce_while(&mut self, at: usize, pred: impl Fn(u8) -> bool) -> Result<(), Diagnostic> {
        while let Some(op) = self.top_op_mut() {
            if !pred(op.prec) {
                break;
            }
            self.reduce_one(at)?;
        }
        Ok(())
    }

    fn reduce_one(&mut self, at: usize) -> Result<(), Diagnostic> {
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
    fn finish_segment(&mut self, at: usize) -> Result<(), Diagnostic> {
        while self.top_op_mut().is_some() {
            self.reduce_one(at)?;
        }
        let frame = self.top_mut();
        frame.max = frame.max.max(frame.cur);
        frame.cur = 0;
        frame.nesting = frame.nesting_base;
        Ok(())
    }

    fn end_statement(&mut self, at: usize) -> Result<(), Diagnostic> {
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

    fn open(&mut self, open: char, at: usize) -> Result<(), Diagnostic> {
        self.brackets += 1;
        if self.brackets > self.ctx.limits.max_bracket_nesting {
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

    fn close(&mut self, close: char, at: usize) -> Result<(), Diagnostic> {
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

    fn lambda(&mut self, at: usize) -> Result<(), Diagnostic> {
        self.count_token();
        self.check(at)?;
        self.push_frame(FrameKind::LambdaParams);
        Ok(())
    }

    fn colon(&mut self, at: usize) -> Result<(), Diagnostic> {
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
    fn check_identifier(&self, name: &str, at: usize) -> Result<(), Diagnostic> {
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
    fn check_int(&self, at: usize) -> Result<(), Diagnostic> {
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
        let limit = self.ctx.limits.max_int_digits;
        let context = if self.fstring_depth > 0 {
            "f-string: "
        } else {
            ""
        };
        Err(syntax_at(
            source,
            format!(
                "{context}Exceeds the limit ({limit} digits) for integer string conversion: \
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
    ) -> Result<u32, Diagnostic> {
        if self.fstring_depth >= self.ctx.limits.max_fstring_nesting {
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

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use crate::testing::*;

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
        assert_eq!(main_kind(&nested(200)), Ok(Main::Def));
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
        assert_eq!(main_kind(&nested(99)), Ok(Main::Def));
        assert_like_cpython(&nested(100), "too many levels of indentation", 101, 1);
    }

    #[test]
    fn expression_depth_limit_matches_cpython_compile() {
        // compile() accepts 2989 unary minus signs and raises RecursionError at 2990.
        let chain = |n: usize| with_main(&format!("x = {}1", "-".repeat(n)));
        assert_eq!(main_kind(&chain(2989)), Ok(Main::Def));
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
            assert_eq!(
                main_kind(&with_main(&code)),
                Ok(Main::Def),
                "{}",
                &code[..30]
            );
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
        assert_eq!(main_kind(&source), Ok(Main::AsyncDef));
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
            let _ = main_kind(&source);
        }
    }
}
