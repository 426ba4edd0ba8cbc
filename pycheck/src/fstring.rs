//! f-string fields: the replacement fields of an f-string body, found exactly as rustpython's
//! f-string parser will find them, so the pre-scan can bound their depth.

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

#[cfg(test)]
mod tests {
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
}
