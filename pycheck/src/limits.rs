//! `Limits`: how deep, nested and long a script may be; the defaults are CPython 3.11's own.

/// What the checker refuses beyond CPython's grammar. The defaults refuse exactly what CPython
/// 3.11 refuses, and keep the parser's recursion within [`crate::MIN_STACK_BYTES`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Open brackets at once. CPython's tokenizer (MAXLEVEL) refuses the 201st.
    pub max_bracket_nesting: usize,
    /// Indentation levels. CPython's tokenizer (MAXINDENT = 100, counting the base level)
    /// refuses the 100th indent.
    pub max_indent_levels: usize,
    /// Deepest expression, in AST nodes as the pre-scan models them. CPython 3.11's
    /// `compile()` accepts `"-" * 2989 + "1"` (2990 nodes); one more `-` is a RecursionError.
    pub max_expression_depth: u32,
    /// Backstop if the precedence model under-counts some construct: a plain count of nesting
    /// tokens that can never be below the real AST depth by more than a small factor. At the
    /// default the AST stays a few tens of thousands of levels deep at worst.
    pub max_nesting_tokens: u32,
    /// f-strings inside f-string fields. Quote styles bound real nesting to about four levels;
    /// this is only a guard.
    pub max_fstring_nesting: u32,
    /// Digits of a decimal integer literal. CPython refuses longer ones
    /// (`sys.int_info.default_max_str_digits`); converting them is also quadratic in the parser,
    /// so they are refused before lexing.
    pub max_int_digits: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_bracket_nesting: 200,
            max_indent_levels: 99,
            max_expression_depth: 2990,
            max_nesting_tokens: 20_000,
            max_fstring_nesting: 8,
            max_int_digits: 4300,
        }
    }
}
