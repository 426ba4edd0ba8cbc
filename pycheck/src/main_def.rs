//! Finding `main`: the top-level function the runner calls, what else may have bound the name,
//! and the parameters it takes.

use rustpython_parser::ast::{self, Expr, Stmt};

use crate::diagnostic::Diagnostic;

/// The `main` a script defines, as the runner will call it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MainSignature {
    /// `async def main` rather than `def main`.
    pub is_async: bool,
    /// In declaration order, as `inspect.signature` lists them.
    pub parameters: Vec<Parameter>,
}

/// One parameter of `main`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parameter {
    pub name: String,
    pub kind: ParameterKind,
    /// Whether it has a default value; `*args` and `**kwargs` never do, and need none.
    pub has_default: bool,
}

/// How an argument can be passed to a parameter, named as in Python's `inspect.Parameter.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParameterKind {
    /// Before a `/`.
    PositionalOnly,
    PositionalOrKeyword,
    /// `*args`.
    VarPositional,
    /// After `*` or `*args`.
    KeywordOnly,
    /// `**kwargs`.
    VarKeyword,
}

pub(crate) const NO_MAIN: &str =
    "script must define a top-level function `main` (def main(): ... or async def main(): ...)";
const HOW_TO_DEFINE: &str = "define it with a top-level `def main():` or `async def main():`";

const MAIN: &str = "main";

enum Binding<'a> {
    Function {
        is_async: bool,
        args: &'a ast::Arguments,
    },
    Other(&'static str),
    Deleted,
}

impl MainSignature {
    /// Checks that `main(**args)` binds, for `args` with these `names`: each names a
    /// parameter that takes a keyword (or `main` has `**kwargs`), and every parameter without
    /// a default is named.
    ///
    /// # Errors
    /// A [`Problem::MainParameters`](crate::Problem) diagnostic naming the first names at fault.
    pub fn check_call(&self, names: &[String]) -> Result<(), Diagnostic> {
        let takes_any = self
            .parameters
            .iter()
            .any(|p| p.kind == ParameterKind::VarKeyword);
        let by_keyword = |name: &str| {
            self.parameters.iter().any(|p| {
                p.name == name
                    && matches!(
                        p.kind,
                        ParameterKind::PositionalOrKeyword | ParameterKind::KeywordOnly
                    )
            })
        };
        let unknown: Vec<&str> = names
            .iter()
            .map(String::as_str)
            .filter(|name| !by_keyword(name) && !takes_any)
            .collect();
        if !unknown.is_empty() {
            let positional_only = self.parameters.iter().any(|p| {
                p.kind == ParameterKind::PositionalOnly && unknown.contains(&p.name.as_str())
            });
            return Err(Diagnostic::main_parameters(format!(
                "`main` has no parameter {} that `args` could set; its parameters: {}{}",
                quoted(&unknown),
                self.describe(),
                if positional_only {
                    " (positional-only parameters cannot be given by name)"
                } else {
                    ""
                }
            )));
        }
        let missing: Vec<&str> = self
            .parameters
            .iter()
            .filter(|p| {
                !p.has_default
                    && !matches!(
                        p.kind,
                        ParameterKind::VarPositional | ParameterKind::VarKeyword
                    )
                    && (p.kind == ParameterKind::PositionalOnly || !names.contains(&p.name))
            })
            .map(|p| p.name.as_str())
            .collect();
        if missing.is_empty() {
            Ok(())
        } else if names.is_empty() {
            Err(Diagnostic::main_parameters(format!(
                "`main` is called with no arguments, so every parameter needs a default; missing: {}",
                missing.join(", ")
            )))
        } else {
            Err(Diagnostic::main_parameters(format!(
                "`args` does not give {}, which `main` needs (no default){}",
                quoted(&missing),
                if self
                    .parameters
                    .iter()
                    .any(|p| p.kind == ParameterKind::PositionalOnly && !p.has_default)
                {
                    "; positional-only parameters cannot be given by name"
                } else {
                    ""
                }
            )))
        }
    }

    fn describe(&self) -> String {
        if self.parameters.is_empty() {
            return "none".to_owned();
        }
        self.parameters
            .iter()
            .map(|p| match p.kind {
                ParameterKind::VarPositional => format!("*{}", p.name),
                ParameterKind::VarKeyword => format!("**{}", p.name),
                _ => p.name.clone(),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn quoted(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) fn find_main(body: &[Stmt]) -> Result<MainSignature, Diagnostic> {
    // Like the interpreter, the last top-level statement binding the name decides.
    let last = body.iter().rev().find_map(top_level_binding);
    match last {
        Some(Binding::Function { is_async, args }) => Ok(MainSignature {
            is_async,
            parameters: parameters(args),
        }),
        Some(Binding::Other(how)) => Err(Diagnostic::missing_main(format!(
            "`main` is bound by {how}, not a def; {HOW_TO_DEFINE}"
        ))),
        Some(Binding::Deleted) => Err(Diagnostic::missing_main(format!(
            "`main` is deleted by a top-level `del` statement; {HOW_TO_DEFINE} after it"
        ))),
        None => Err(Diagnostic::missing_main(match nested_main(body) {
            Some(place) => format!("`main` is defined inside {place}; it must be at the top level"),
            None => NO_MAIN.to_owned(),
        })),
    }
}

fn top_level_binding(stmt: &Stmt) -> Option<Binding<'_>> {
    let binding = match stmt {
        Stmt::FunctionDef(def) if def.name.as_str() == MAIN => Binding::Function {
            is_async: false,
            args: &def.args,
        },
        Stmt::AsyncFunctionDef(def) if def.name.as_str() == MAIN => Binding::Function {
            is_async: true,
            args: &def.args,
        },
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

fn parameters(args: &ast::Arguments) -> Vec<Parameter> {
    let with_default = |kind: ParameterKind| {
        move |arg: &ast::ArgWithDefault| Parameter {
            name: arg.def.arg.to_string(),
            kind,
            has_default: arg.default.is_some(),
        }
    };
    let star = |kind: ParameterKind| {
        move |arg: &ast::Arg| Parameter {
            name: arg.arg.to_string(),
            kind,
            has_default: false,
        }
    };
    let positional_only = args
        .posonlyargs
        .iter()
        .map(with_default(ParameterKind::PositionalOnly));
    let positional = args
        .args
        .iter()
        .map(with_default(ParameterKind::PositionalOrKeyword));
    let var_positional = args
        .vararg
        .as_deref()
        .map(star(ParameterKind::VarPositional));
    let keyword_only = args
        .kwonlyargs
        .iter()
        .map(with_default(ParameterKind::KeywordOnly));
    let var_keyword = args.kwarg.as_deref().map(star(ParameterKind::VarKeyword));
    positional_only
        .chain(positional)
        .chain(var_positional)
        .chain(keyword_only)
        .chain(var_keyword)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    fn bound_by(how: &str) -> String {
        format!(
            "`main` is bound by {how}, not a def; define it with a top-level `def main():` or \
             `async def main():`"
        )
    }

    #[test]
    fn def_main_is_accepted() {
        assert_eq!(main_kind("def main():\n    return 1\n"), Ok(Main::Def));
    }

    #[test]
    fn async_main_is_accepted() {
        assert_eq!(
            main_kind("import asyncio\n\nasync def main():\n    await asyncio.sleep(0)\n"),
            Ok(Main::AsyncDef)
        );
    }

    #[test]
    fn decorated_main_counts_as_def() {
        let source = "import functools\n\n@functools.lru_cache()\ndef main():\n    pass\n";
        assert_eq!(main_kind(source), Ok(Main::Def));
    }

    #[test]
    fn dunder_main_guard_next_to_a_real_main_is_fine() {
        let source = "def main():\n    print('hi')\n\nif __name__ == \"__main__\":\n    main()\n";
        assert_eq!(main_kind(source), Ok(Main::Def));
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
            main_kind("main = 3\n\nasync def main():\n    pass\n"),
            Ok(Main::AsyncDef)
        );
        // Walrus at top level and bindings inside blocks are ignored.
        assert_eq!(
            main_kind("def main():\n    pass\n\n(main := 3)\nif x:\n    main = 4\n"),
            Ok(Main::Def)
        );
    }

    #[test]
    fn parameters_without_defaults_are_named() {
        let expected = |missing: &str| {
            Err(Diagnostic::main_parameters(format!(
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
            main_kind("def main(a=1, /, b=2, *args, c=3, **kwargs):\n    pass\n"),
            Ok(Main::Def)
        );
        assert_eq!(
            main_kind("async def main(*args, **kwargs):\n    pass\n"),
            Ok(Main::AsyncDef)
        );
    }

    #[test]
    fn parameters_are_listed_in_declaration_order_with_their_kinds() {
        let main = run("async def main(a=1, /, b=2, *args, c=3, **kwargs):\n    pass\n")
            .expect("a callable main");
        assert!(main.is_async);
        let described: Vec<(&str, ParameterKind, bool)> = main
            .parameters
            .iter()
            .map(|p| (p.name.as_str(), p.kind, p.has_default))
            .collect();
        assert_eq!(
            described,
            [
                ("a", ParameterKind::PositionalOnly, true),
                ("b", ParameterKind::PositionalOrKeyword, true),
                ("args", ParameterKind::VarPositional, false),
                ("c", ParameterKind::KeywordOnly, true),
                ("kwargs", ParameterKind::VarKeyword, false),
            ]
        );
    }

    #[test]
    fn main_without_parameters_has_an_empty_list() {
        let main = run("def main():\n    pass\n").expect("a callable main");
        assert_eq!(
            main,
            MainSignature {
                is_async: false,
                parameters: Vec::new(),
            }
        );
    }

    fn call(source: &str, names: &[&str]) -> Result<(), String> {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        crate::check_call(source, &crate::Limits::default(), &names)
            .map(drop)
            .map_err(|d| {
                assert_eq!(d.problem, crate::Problem::MainParameters, "{d:?}");
                d.message
            })
    }

    #[test]
    fn args_bind_to_parameters_by_name() {
        let source = "def main(a, b=2, *, c, d=4):\n    return a\n";
        assert_eq!(call(source, &["a", "c"]), Ok(()));
        assert_eq!(call(source, &["a", "b", "c", "d"]), Ok(()));
        assert_eq!(
            call("def main(**kw):\n    return kw\n", &["x", "y"]),
            Ok(())
        );
        assert_eq!(
            call("def main(a, **kw):\n    return kw\n", &["a", "z"]),
            Ok(())
        );
    }

    #[test]
    fn an_unknown_name_is_refused_naming_it_and_the_parameters() {
        let message =
            call("def main(a=1, *rest):\n    return a\n", &["a", "nope"]).expect_err("refused");
        assert!(message.contains("`nope`"), "{message}");
        assert!(message.contains("a, *rest"), "{message}");
        let message = call("def main():\n    return 1\n", &["x"]).expect_err("refused");
        assert!(
            message.contains("`x`") && message.contains("none"),
            "{message}"
        );
    }

    #[test]
    fn a_parameter_without_default_that_args_leaves_out_is_refused_naming_it() {
        let message = call("def main(a, b, c=3):\n    return a\n", &["a"]).expect_err("refused");
        assert!(
            message.contains("`b`") && !message.contains("`a`"),
            "{message}"
        );
        let message = call("def main(a, /, b):\n    return a\n", &["a", "b"]).expect_err("refused");
        assert!(message.contains("positional-only"), "{message}");
        let message = call("def main(a):\n    return a\n", &[]).expect_err("refused");
        assert!(message.contains("no arguments"), "{message}");
    }
}
