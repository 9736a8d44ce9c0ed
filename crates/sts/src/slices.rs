//! Slicing an undefined value refused, as Jinja2 refuses it. In its semi-strict mode minijinja
//! 3.1 slices an undefined value to `[]` (its VM checks only in strict mode), so
//! `{{ pod_uid[:8] }}` would put `[]` into the policy of a token without a pod, where Jinja2
//! fails. Each slice's target is therefore passed through [`FILTER`] before it is compiled.

use std::borrow::Cow;

use minijinja::machinery::{Span, Token, parse, tokenize};
use minijinja::{Environment, Error, ErrorKind, Value};

/// The filter a slice's target goes through: the value unchanged, or an error if undefined.
pub const FILTER: &str = "tokenvend_sliceable";

/// Add [`FILTER`] to `env`.
pub fn add_filter(env: &mut Environment<'static>) {
    env.add_filter(FILTER, |value: Value| {
        if value.is_undefined() {
            return Err(Error::new(
                ErrorKind::UndefinedError,
                "an undefined name sliced",
            ));
        }
        Ok(value)
    });
}

/// `source` with the target of each slice passed through [`FILTER`] (`pod_uid[:8]` →
/// `((pod_uid)|tokenvend_sliceable)[:8]`), on the same lines. Source that does not parse is
/// given back unchanged, for the compiler to name its error.
pub fn checked(source: &str) -> Cow<'_, str> {
    let Some(ast) = parse(source, "policy", Default::default())
        .ok()
        .and_then(|ast| serde_json::to_value(&ast).ok())
    else {
        return Cow::Borrowed(source);
    };
    let mut slices = Vec::new();
    find_slices(&ast, &mut slices);
    if slices.is_empty() {
        return Cow::Borrowed(source);
    }
    let Ok(tokens) = tokenize(source, false, Default::default())
        .map(|t| t.map(|(token, span)| (token, offsets(&span))))
        .collect::<Result<Vec<_>, _>>()
    else {
        return Cow::Borrowed(source);
    };
    let partner = partners(&tokens);
    let mut edits = Vec::new();
    for (from, end) in slices {
        // The slice's `[` is the partner of the `]` it ends with; its target ends before it.
        let Some(open) = tokens
            .iter()
            .position(|(t, span)| matches!(t, Token::BracketClose) && span.1 == end)
            .and_then(|close| partner[close])
        else {
            continue;
        };
        // minijinja's spans may start inside the target's parentheses (`(a | f)`'s starts at
        // `f`, `(a ~ b)`'s at `a`): the target starts at the earliest span of its nodes, or at
        // the opening parenthesis of a group it closes.
        let Some(first) = tokens
            .iter()
            .position(|(_, span)| span.0 >= from)
            .filter(|&first| first < open)
        else {
            continue;
        };
        let widened = partner[first..open].iter().flatten().copied().min();
        let first = widened.map_or(first, |p| p.min(first));
        edits.push((tokens[first].1.0, Edit::Open));
        edits.push((tokens[open].1.0, Edit::Filter));
    }
    // At one offset every edit is of one kind: a target starts before its `[`, and a `[` that
    // subscripts is not the start of a list.
    edits.sort_by_key(|&(at, _)| at);
    let mut out = String::with_capacity(source.len() + edits.len() * (FILTER.len() + 2));
    let mut copied = 0;
    for (at, edit) in edits {
        let Some(text) = source.get(copied..at) else {
            return Cow::Borrowed(source);
        };
        out.push_str(text);
        match edit {
            Edit::Open => out.push_str("(("),
            Edit::Filter => {
                out.push_str(")|");
                out.push_str(FILTER);
                out.push(')');
            }
        }
        copied = at;
    }
    out.push_str(&source[copied..]);
    Cow::Owned(out)
}

/// What [`checked`] writes at an offset.
#[derive(Clone, Copy)]
enum Edit {
    /// `((`, where a target starts.
    Open,
    /// `)|tokenvend_sliceable)`, where it ends.
    Filter,
}

fn offsets(span: &Span) -> (usize, usize) {
    (span.start_offset as usize, span.end_offset as usize)
}

/// For each bracket token, the index of the one it pairs with.
fn partners(tokens: &[(Token<'_>, (usize, usize))]) -> Vec<Option<usize>> {
    let mut partner = vec![None; tokens.len()];
    let mut open = Vec::new();
    for (i, (token, _)) in tokens.iter().enumerate() {
        match token {
            Token::ParenOpen | Token::BracketOpen | Token::BraceOpen => open.push(i),
            Token::ParenClose | Token::BracketClose | Token::BraceClose => {
                if let Some(o) = open.pop() {
                    partner[o] = Some(i);
                    partner[i] = Some(o);
                }
            }
            _ => {}
        }
    }
    partner
}

/// Each slice in `node`, minijinja's AST as serde writes it (an expression is `{"expr": kind,
/// "inner": [fields, span]}`; a constant's value is a literal, never a mapping that could look
/// like a node): the earliest start of its own span and its target's nodes, and the end of its
/// own span.
fn find_slices(node: &serde_json::Value, found: &mut Vec<(usize, usize)>) {
    match node {
        serde_json::Value::Array(items) => items.iter().for_each(|n| find_slices(n, found)),
        serde_json::Value::Object(map) => {
            if map.get("expr").and_then(|k| k.as_str()) == Some("Slice")
                && let (Some(span), Some(target)) =
                    (node.pointer("/inner/1"), node.pointer("/inner/0/expr"))
                && let (Some(start), Some(end)) =
                    (offset(span, "start_offset"), offset(span, "end_offset"))
            {
                found.push((earliest_start(target).map_or(start, |s| s.min(start)), end));
            }
            map.values().for_each(|n| find_slices(n, found));
        }
        _ => {}
    }
}

/// The earliest start offset of the spans in `node`.
fn earliest_start(node: &serde_json::Value) -> Option<usize> {
    match node {
        serde_json::Value::Array(items) => items.iter().filter_map(earliest_start).min(),
        serde_json::Value::Object(map) => {
            let own = offset(node, "start_offset");
            map.values().filter_map(earliest_start).chain(own).min()
        }
        _ => None,
    }
}

fn offset(span: &serde_json::Value, key: &str) -> Option<usize> {
    span.get(key)?
        .as_u64()
        .and_then(|o| usize::try_from(o).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_slice_target_goes_through_the_filter_whole_on_the_same_lines() {
        let f = FILTER;
        let cases = [
            (
                "{{ pod_uid[:8] }}",
                format!("{{{{ ((pod_uid)|{f})[:8] }}}}"),
            ),
            (
                "{{ (pod_uid)[:8] }}",
                format!("{{{{ (((pod_uid))|{f})[:8] }}}}"),
            ),
            // minijinja's spans start at the filter's name, the test's, inside the parentheses.
            (
                "{{ (((namespace | lower)) | string)[:-2] }}",
                format!("{{{{ (((((namespace | lower)) | string))|{f})[:-2] }}}}"),
            ),
            (
                "{{ (a is defined)[1:] }}",
                format!("{{{{ (((a is defined))|{f})[1:] }}}}"),
            ),
            (
                "{{ (a ~ b)[1:] }}",
                format!("{{{{ (((a ~ b))|{f})[1:] }}}}"),
            ),
            // ... and at the last link of a chain.
            ("{{ x.y[1:] }}", format!("{{{{ ((x.y)|{f})[1:] }}}}")),
            ("{{ f(1)[1:] }}", format!("{{{{ ((f(1))|{f})[1:] }}}}")),
            ("{{ (x).y[1:] }}", format!("{{{{ (((x).y)|{f})[1:] }}}}")),
            ("{{ x['a'][1:] }}", format!("{{{{ ((x['a'])|{f})[1:] }}}}")),
            (
                "{{ x[1:][2:] }}",
                format!("{{{{ ((((x)|{f})[1:])|{f})[2:] }}}}"),
            ),
            (
                "{{ a ~ b [ 1 : ] }}",
                format!("{{{{ a ~ ((b )|{f})[ 1 : ] }}}}"),
            ),
            ("{{ [1, 2][1:] }}", format!("{{{{ (([1, 2])|{f})[1:] }}}}")),
            // A literal naming a span's field is a literal.
            (
                "{{ x }}{{ {'start_offset': 0}[1:] }}",
                format!("{{{{ x }}}}{{{{ (({{'start_offset': 0}})|{f})[1:] }}}}"),
            ),
            (
                "{% if x %}\n{{ -x[::2] }}{% endif %}",
                format!("{{% if x %}}\n{{{{ -((x)|{f})[::2] }}}}{{% endif %}}"),
            ),
        ];
        for (source, want) in cases {
            assert_eq!(checked(source), want, "{source}");
        }
        // Nothing sliced, an index, a mapping that reads like a node, source that does not
        // parse: unchanged.
        for source in [
            "{{ x[1] }}{{ x | list }}",
            "{{ {'expr': 'Slice', 'inner': [{'expr': 1}, {'start_offset': 0}]} }}",
            "{{ x[1:",
        ] {
            assert!(matches!(checked(source), Cow::Borrowed(_)), "{source}");
        }
    }
}
