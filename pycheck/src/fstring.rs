//! f-string fields: the replacement fields of an f-string body, found exactly as rustpython's
//! f-string parser will find them, so the pre-scan can bound their depth; and the rewriting of
//! triple-quoted strings inside fields, which CPython 3.11 accepts and rustpython does not.

use std::ops::Range;

/// A replacement field as rustpython's f-string parser extracts it before parsing it.
pub(crate) struct FStringField {
    pub(crate) expression: String,
    /// Byte offset in the string body just after the field's `{`.
    pub(crate) location: usize,
    /// 1 for fields inside another field's format spec.
    pub(crate) nested: u32,
}

/// Mirrors rustpython 0.4's `StringParser::parse_fstring` so that exactly the fields it will
/// parse get scanned. Where it would fail, the walk stops too; everything parsed before that
/// point has been collected.
pub(crate) fn fstring_fields(body: &str, raw: bool) -> Vec<FStringField> {
    FieldFinder::walk(body, raw).fields
}

/// `body` with the inner quote characters of each triple-quoted string inside a replacement
/// field (`f"{'''it's'''}"`, valid in CPython 3.11) blanked, or `None` when there is none.
/// rustpython 0.4 finds the end of a field by toggling "in a string" at every quote character,
/// so an odd number of them inside such a string makes it refuse the whole f-string.
///
/// The rewrite keeps the triple quotes and every byte offset, so its errors stay in place; it
/// keeps the syntax, not the value. In a plain string every inner quote character of its kind
/// becomes a space: `'''it's'''` becomes `'''it s'''`. In a nested f-string the strings in its
/// own fields keep their quotes and lose their contents, so the toggling sees only balanced
/// pairs around blanks: `f"""{a[":"]} x"y"""` becomes `f"""{a[" "]} x y"""`.
pub(crate) fn blank_inner_quotes(body: &str, raw: bool) -> Option<String> {
    let finder = FieldFinder::walk(body, raw);
    if finder.triple_quoted.is_empty() {
        return None;
    }
    let mut blanked = String::with_capacity(body.len());
    let mut copied = 0;
    for literal in &finder.triple_quoted {
        blanked.push_str(&body[copied..literal.start]);
        blanked.push_str(&blanked_literal(body, literal.clone()));
        copied = literal.end;
    }
    blanked.push_str(&body[copied..]);
    Some(blanked)
}

/// The triple-quoted literal at `range` of `body` (quotes included), inner quotes blanked.
fn blanked_literal(body: &str, range: Range<usize>) -> String {
    let literal = &body[range.clone()];
    let quote = if literal.starts_with('"') { '"' } else { '\'' };
    let inner = &literal[3..literal.len() - 3];
    let is_fstring = body[..range.start]
        .chars()
        .rev()
        .take_while(char::is_ascii_alphabetic)
        .any(|c| c == 'f' || c == 'F');
    let mut blanked = String::with_capacity(literal.len());
    blanked.push_str(&literal[..3]);
    if is_fstring {
        blank_nested_fstring(inner, quote, &mut blanked);
    } else {
        blanked.extend(inner.chars().map(|c| if c == quote { ' ' } else { c }));
    }
    blanked.push_str(&literal[literal.len() - 3..]);
    blanked
}

/// Copies the body of a nested f-string delimited by `quote`: its literal text loses its
/// `quote` characters, and `quote`-delimited strings in its fields (also those inside strings
/// of the other kind, a third f-string level) keep their quotes around blanks.
fn blank_nested_fstring(inner: &str, quote: char, out: &mut String) {
    let other = if quote == '"' { '\'' } else { '"' };
    let blank = |c: char, out: &mut String| out.extend(std::iter::repeat_n(' ', c.len_utf8()));
    let mut depth = 0u32;
    let mut in_other = false;
    let mut chars = inner.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        // A `quote` in a field opens a string only if another closes it before the other kind
        // of quote does; a lone one is text.
        let paired = c == quote
            && inner[at + 1..]
                .find([quote, other])
                .is_some_and(|end| inner[at + 1 + end..].starts_with(quote));
        match c {
            _ if c == quote && (depth == 0 || !paired) => blank(c, out),
            _ if c == quote => {
                out.push(c);
                for (_, d) in chars.by_ref() {
                    if d == quote {
                        out.push(d);
                        break;
                    }
                    blank(d, out);
                }
            }
            _ if in_other => {
                in_other = c != other;
                out.push(c);
            }
            _ if c == other && depth > 0 => {
                in_other = true;
                out.push(c);
            }
            '{' if depth == 0 && matches!(chars.peek(), Some((_, '{'))) => {
                out.push_str("{{");
                chars.next();
            }
            '{' => {
                depth += 1;
                out.push(c);
            }
            '}' => {
                depth = depth.saturating_sub(1);
                out.push(c);
            }
            _ => out.push(c),
        }
    }
}

fn triple(quote: char) -> &'static str {
    if quote == '"' {
        "\"\"\""
    } else {
        "'''"
    }
}

struct FieldFinder<'a> {
    body: &'a str,
    pos: usize,
    raw: bool,
    fields: Vec<FStringField>,
    /// Byte ranges of triple-quoted strings (quotes included) inside fields.
    triple_quoted: Vec<Range<usize>>,
}

impl<'a> FieldFinder<'a> {
    fn walk(body: &'a str, raw: bool) -> Self {
        let mut finder = FieldFinder {
            body,
            pos: 0,
            raw,
            fields: Vec::new(),
            triple_quoted: Vec::new(),
        };
        // `None` only means the parser will report an f-string error here.
        let _ = finder.literal(0);
        finder
    }

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
                '"' | '\'' if self.body[self.pos - 1..].starts_with(triple(ch)) => {
                    let start = self.pos - 1;
                    let end = self.body[self.pos + 2..].find(triple(ch))? + self.pos + 5;
                    expression.push_str(&blanked_literal(self.body, start..end));
                    self.triple_quoted.push(start..end);
                    self.pos = end;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

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
        assert_eq!(main_kind(&with_main(nested)), Ok(Main::Def));
    }

    #[test]
    fn triple_quoted_strings_inside_fields_compile_like_cpython() {
        for source in [
            "print(f\"{'''eric's'''}\")",
            "x = f'{\"x\" \"\"\"eric\"s\"\"\" \"y\"}'",
            "x = f'''{\"\"\"a\"\"\"}'''",
            "x = f\"{''''''}\"",
            "x = f\"{'''a''' + b'''c'''}\"",
            "x = f\"{'''a'''!r:>{w}}\"",
            "x = f\"{x:{'''a'''}}\"",
            "x = f\"{'''a'''=}\"",
        ] {
            assert_eq!(compiles(source), Ok(()), "for {source:?}");
        }
    }

    #[test]
    fn triple_quoted_strings_in_fields_may_span_lines() {
        assert_eq!(compiles("x = f\"\"\"{'''a\nb'''}\"\"\"\n"), Ok(()));
        assert_eq!(compiles("x = f\"\"\"{'''a\r\nb'''}\"\"\"\r\n"), Ok(()));
    }

    #[test]
    fn nested_triple_quoted_f_strings_keep_their_own_fields() {
        assert_eq!(compiles("x = f\"{f'''{d['k']}'''}\""), Ok(()));
        assert_eq!(compiles("x = f\"{f'''{'{'}'''}\""), Ok(()));
        for source in [
            "x = f'{f\"\"\"{a[\":\"]} x\"y\"\"\"}'",
            "x = f'''{f\"\"\"{f'{f\"{1}\"}'}\"\"\"}'''",
            "x = f'{f\"\"\"{f\"{b}:\"}\"\"\"}'",
            "x = f\"{f'''{x!r:>{w}} it's'''}\"",
            "x = f\"{'''a'''}{'''it's'''}{'''b'''}\"",
        ] {
            assert_eq!(compiles(source), Ok(()), "for {source:?}");
        }
        // Refused like the single-quoted form, at the same place.
        assert_eq!(
            syntax("x = f\"{f'''{1 +}'''}\""),
            syntax("x = f\"{f'{1 +}'}\"")
        );
    }

    #[test]
    fn triple_quoted_strings_in_fields_compile_when_the_parser_lexes_again() {
        // A long digit run makes the parser lex the (rewritten) source itself.
        let long = format!("y = {}.0\nprint(f\"{{'''eric's'''}}\")\n", "1".repeat(5000));
        assert_eq!(compiles(&long), Ok(()));
    }

    #[test]
    fn errors_after_a_rewritten_f_string_keep_cpython_positions() {
        assert_like_cpython("x = f\"{'''a'''}\" $", "invalid syntax", 1, 18);
        assert_like_cpython(
            "x = f\"\"\"{'''a\nb'''}\"\"\"\ny = = 1\n",
            "invalid syntax",
            3,
            5,
        );
    }

    #[test]
    fn blanking_keeps_every_offset() {
        let body = "{'''it's'''} and {\"\"\"a\"\nb\"\"\"}";
        let blanked = blank_inner_quotes(body, false).expect("two to blank");
        assert_eq!(blanked, "{'''it s'''} and {\"\"\"a \nb\"\"\"}");
        assert_eq!(blank_inner_quotes("{'a'} {{'''}}", false), None);
        let nested = "{f\"\"\"{a[\":\"]} x\"y {f'{f\"{b}:\"}'}\"\"\"}";
        let blanked = blank_inner_quotes(nested, false).expect("one to blank");
        assert_eq!(blanked, "{f\"\"\"{a[\" \"]} x y {f'{f\"    \"}'}\"\"\"}");
        assert_eq!(blanked.len(), nested.len());
    }
}
