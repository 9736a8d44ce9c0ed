//! The filters, tests, functions and variables a template names that its environment lacks,
//! found in its compiled instructions (minijinja's `unstable_machinery`) before any rendering
//! reaches them.

use minijinja::machinery::{Instruction, Instructions, get_compiled_template};
use minijinja::{ErrorKind, Template};

/// A filter, test, function or variable a template names that its environment does not have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownName {
    /// `filter`, `test`, `function` or `variable`.
    pub kind: &'static str,
    /// The name as written.
    pub name: String,
    /// The template line that names it.
    pub line: Option<usize>,
}

impl std::fmt::Display for UnknownName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        write!(f, "{} {} is unknown", self.kind, self.name)
    }
}

/// The first filter, test, function or variable `tmpl` names that its environment lacks, in the
/// order written: a filter or test applied (`x | truncate`, `{% filter %}`, `x is foo`) or named
/// to `map`, `select`, `reject`, `selectattr` or `rejectattr` as a constant; a function called
/// (`now()`) or a variable used (`{{ namepsace }}`) though neither a global, one of `variables`,
/// nor bound by the template itself. minijinja fails only when a rendering reaches the name,
/// which in a branch the start-up renderings do not take is a request. Jinja2 refuses a filter
/// or test when it compiles the template, but inside `{% if %}`, where it waits for the
/// rendering so that `is filter` can guard it; a policy has no use for a name it can never run,
/// so only one the template checks with `is filter` or `is test` is left to the rendering here.
/// A variable that is never defined is refused however it is used, `is defined` included: in a
/// policy it is a misspelling, and the branch it guards would silently never apply.
pub fn unknown_name(tmpl: &Template<'_, '_>, variables: &[&str]) -> Option<UnknownName> {
    let compiled = get_compiled_template(tmpl);
    let code: Vec<&Instructions> = std::iter::once(&compiled.instructions)
        .chain(compiled.blocks.values())
        .collect();
    let mut state = tmpl.new_state();
    // Names a call or a lookup may use: globals (`range`, `dict`), the variables, and what the
    // template stores anywhere (`set`, `for`, `with`, macros and their arguments) or minijinja
    // binds for it.
    let mut bound: Vec<String> = state.env().globals().map(|(n, _)| n.to_owned()).collect();
    bound.extend(variables.iter().map(|v| (*v).to_owned()));
    bound.extend(["caller", "loop", "super"].map(str::to_owned));
    for instruction in code.iter().flat_map(|c| (0..).map_while(|i| c.get(i))) {
        if let Instruction::StoreLocal(name) | Instruction::BuildMacro(name, ..) = instruction {
            bound.push((*name).to_owned());
        }
    }
    code.into_iter()
        .flat_map(named)
        .find_map(|(kind, name, line)| {
            // As minijinja's VM looks a name up: without whitespace (`foo . bar`).
            let name: String = name.chars().filter(|c| !c.is_ascii_whitespace()).collect();
            // Called without arguments, a known one fails for want of them or answers; only an
            // unknown one is `UnknownFilter` / `UnknownTest`.
            let unknown = match kind {
                "filter" => state
                    .apply_filter(&name, &[])
                    .is_err_and(|e| e.kind() == ErrorKind::UnknownFilter),
                "test" => state
                    .perform_test(&name, &[])
                    .is_err_and(|e| e.kind() == ErrorKind::UnknownTest),
                _ => !bound.contains(&name),
            };
            unknown.then_some(UnknownName { kind, name, line })
        })
}

/// The filters, tests, functions and variables one instruction list names, with their lines,
/// less the filters and tests it guards with `is filter` / `is test`.
fn named<'a>(code: &'a Instructions<'a>) -> Vec<(&'static str, &'a str, Option<usize>)> {
    let all: Vec<&'a Instruction<'a>> = (0..).map_while(|i| code.get(i)).collect();
    // The text of value `nth` (0: the one filtered or tested, 1: the first argument) of the call
    // at `at` taking `count` values, when it and the values after it are constants: only then is
    // its place in the code known.
    let constant = |at: usize, count: Option<u16>, nth: usize| -> Option<&'a str> {
        let from = (at + nth).checked_sub(usize::from(count?))?;
        let loads = all.get(from..at)?;
        if !loads.iter().all(|i| matches!(i, Instruction::LoadConst(_))) {
            return None;
        }
        match *loads.first()? {
            Instruction::LoadConst(v) => v.as_str(),
            _ => None,
        }
    };
    let mut found = Vec::new();
    let mut guarded = Vec::new();
    for (at, instruction) in all.iter().enumerate() {
        let line = code.get_line(at as u32);
        match instruction {
            Instruction::ApplyFilter(name, count, _) => {
                found.push(("filter", *name, line));
                let named_arg = match *name {
                    "map" => Some(("filter", 1)),
                    "select" | "reject" => Some(("test", 1)),
                    "selectattr" | "rejectattr" => Some(("test", 2)),
                    _ => None,
                };
                if let Some((kind, nth)) = named_arg
                    && let Some(arg) = constant(at, *count, nth)
                {
                    found.push((kind, arg, line));
                }
            }
            Instruction::CallFunction(name, _) => found.push(("function", *name, line)),
            Instruction::Lookup(name) => found.push(("variable", *name, line)),
            Instruction::PerformTest(name, count, _) => {
                found.push(("test", *name, line));
                if matches!(*name, "filter" | "test")
                    && let Some(checked) = constant(at, *count, 0)
                {
                    guarded.push((*name, checked));
                }
            }
            _ => {}
        }
    }
    found.retain(|(kind, name, _)| !guarded.contains(&(*kind, *name)));
    found
}
