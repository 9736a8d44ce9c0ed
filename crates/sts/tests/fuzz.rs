//! Fuzzing tokenvend-sts's token validation with arbitrary and mangled bearer tokens against a
//! real JWKS: every input is rejected or accepted without a panic, and nothing but a correctly
//! signed, unexpired token for the right audience and issuer is accepted.

use std::time::Duration;

use proptest::prelude::*;
use tokenvend_sts::policy::PolicyTemplate;
use tokenvend_sts::validate::{JwksSource, JwksValidator};
use tokenvend_testkit::{CLUSTER_ISSUER, Cluster, agreed, fuzz};

#[test]
fn fuzz_bearer_tokens() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let cluster = Cluster::new();
    let dir = tempfile::tempdir().expect("tmp");
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, serde_json::to_vec(&cluster.jwks).expect("jwks")).expect("write");
    let v = rt
        .block_on(JwksValidator::new(
            JwksSource::File(jwks),
            CLUSTER_ISSUER.into(),
            "tokenvend".into(),
            Duration::from_secs(2),
        ))
        .expect("validator");
    let good = cluster.token("shop", "orders", Some("p"), "tokenvend", 600);
    assert!(rt.block_on(v.validate(&good)).is_ok());
    let tokens = prop_oneof![
        ".{0,200}",
        // Mangle a valid token: every changed byte must make it invalid.
        (0..good.len(), "[A-Za-z0-9_=.-]").prop_map({
            let good = good.clone();
            move |(i, c)| {
                let mut t = good.clone();
                t.replace_range(i..i + 1, &c);
                t
            }
        }),
    ];
    fuzz("bearer-token", tokens, |t| {
        let r = rt.block_on(v.validate(&t));
        if t != good {
            // A changed signature byte can still decode to the same signature bits only in the
            // last base64 character's padding bits; anything else must be rejected.
            let same_prefix = t.len() == good.len() && t[..t.len() - 1] == good[..good.len() - 1];
            prop_assert!(r.is_err() || same_prefix, "accepted a mangled token");
        }
        Ok(())
    });
}

#[path = "oracles/jinja2.rs"]
mod jinja2;

/// Filters as a template writes them: Jinja2's built-in ones, with arguments. Not the HTML ones
/// (`escape`, `safe`: Python prints an escaped list item as `Markup('...')`), nor `pprint`,
/// `indent`, `int` and `float`, which the README lists as different.
const FILTERS: &[&str] = &[
    "upper",
    "lower",
    "title",
    "capitalize",
    "trim",
    "string",
    "length",
    "count",
    "reverse | join",
    "first",
    "last",
    "list",
    "sort",
    "unique | list",
    "min",
    "max",
    "urlencode",
    "tojson",
    "default('d')",
    "d('x')",
    "default('e', true)",
    "join(d='/')",
    "replace('a', 'b')",
    "replace('-', '')",
    "join('/')",
    "join",
    "abs",
    "batch(2) | list",
    "slice(2) | list",
    "map('upper') | list",
    "select('lower') | list",
    "select('odd') | list",
    "reject('even') | list",
    "reject('upper') | list",
    "round",
    "sum",
    "items | list",
    "truncate",
    "truncate(5)",
    "truncate(6, true)",
    "truncate(4, end='')",
    "truncate(3, leeway=0)",
    "truncate(length=4, killwords=true, end='~', leeway=1)",
    "center(9)",
    "center(4)",
    "wordcount",
    "forceescape",
];

/// Python string and list methods as a template calls them.
const METHODS: &[&str] = &[
    "upper()",
    "lower()",
    "strip()",
    "strip('a')",
    "lstrip('t')",
    "rstrip('-')",
    "title()",
    "capitalize()",
    "split('-')",
    "split('-')[0]",
    "split('-')[-1]",
    "split()",
    "split('-', 1)",
    "replace('-', '.')",
    "replace('a', '')",
    "startswith('a')",
    "endswith('a')",
    "find('-')",
    "rfind('-')",
    "count('a')",
    "isalnum()",
    "isdigit()",
    "islower()",
    "format()",
    "join(['a', 'b'])",
    "items()",
    "keys()",
    "get('a')",
    "removeprefix('te')",
    "removeprefix('')",
    "removesuffix('a')",
    "rsplit('-')",
    "rsplit('-', 1)",
    "rsplit('-', 1)[0]",
    "rsplit()",
    "rsplit(none, 1)",
    "zfill(8)",
    "ljust(9, '*')",
    "rjust(9)",
    "center(9, '.')",
];

/// Indexes and slices, of anything (a name the token lacks included, which both refuse), and
/// of the text it prints.
const SUBSCRIPTS: &[&str] = &[
    "[0]",
    "[-1]",
    "[1]",
    "[:3]",
    "[1:]",
    "[::-1]",
    "[-4:-1]",
    "[1:8:2]",
    "| string)[:3]",
    "| string)[1:]",
    "| string)[::-1]",
    "| string)[:-2]",
];

/// Expressions over the template's variables, up to a few operations deep.
fn template_expression() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        4 => prop::sample::select(vec!["namespace", "serviceaccount"]).prop_map(String::from),
        // Mostly guarded, as a working template has them; bare, they fail without a pod.
        2 => prop::sample::select(vec![
            "(pod_name if pod_name else 'none')",
            "(pod_uid | default('none'))",
            "pod_name",
            "pod_uid",
        ])
        .prop_map(String::from),
        1 => "[a-z0-9-]{0,6}".prop_map(|s| format!("'{s}'")),
        1 => (0..40i32).prop_map(|n| n.to_string()),
    ];
    leaf.prop_recursive(4, 16, 3, |inner| {
        let condition = prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a} == {b}")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a} != {b}")),
            ("[a-z-]{1,2}", inner.clone()).prop_map(|(a, b)| format!("'{a}' in {b}")),
            inner.clone(),
            inner.clone().prop_map(|a| format!("not {a}")),
            inner.clone().prop_map(|a| format!("{a} is defined")),
            inner.clone().prop_map(|a| format!("{a} is none")),
            (inner.clone(), 0..12i32).prop_map(|(a, n)| format!("{a} | length > {n}")),
            (
                inner.clone(),
                prop::sample::select(vec!["<", "<=", ">", ">="]),
                inner.clone()
            )
                .prop_map(|(a, op, b)| format!("{a} {op} {b}")),
            (
                inner.clone(),
                prop::sample::select(vec![
                    "string",
                    "number",
                    "sequence",
                    "mapping",
                    "in(['a', 'team-a'])",
                    "sameas(none)",
                    "eq('a')",
                ])
            )
                .prop_map(|(a, t)| format!("{a} is {t}")),
            (
                inner.clone(),
                prop::sample::select(vec![
                    "odd",
                    "even",
                    "divisibleby(3)",
                    "divisibleby(0)",
                    "lower",
                    "upper"
                ])
            )
                .prop_map(|(a, t)| format!("{a} is {t}")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} and {b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} or {b})")),
        ];
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} ~ {b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} + {b})")),
            (inner.clone(), prop::sample::select(FILTERS))
                .prop_map(|(a, f)| format!("({a} | {f})")),
            (inner.clone(), prop::sample::select(METHODS)).prop_map(|(a, m)| format!("({a}).{m}")),
            (inner.clone(), prop::sample::select(SUBSCRIPTS)).prop_map(|(a, s)| {
                match s.strip_prefix('|') {
                    Some(slice) => format!("(({a}) |{slice}"),
                    None => format!("({a}){s}"),
                }
            }),
            (inner.clone(), condition, inner.clone())
                .prop_map(|(a, c, b)| format!("({a} if {c} else {b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("'%s-%s' | format({a}, {b})")),
            (
                inner.clone(),
                prop::sample::select(vec!["*", "-", "//", "%", "/"]),
                1..9i32
            )
                .prop_map(|(a, op, n)| format!("(({a}) | length {op} {n})")),
            (0..6i32, inner.clone()).prop_map(|(n, a)| format!("(range({n}) | join({a}))")),
            (inner.clone(), inner).prop_map(|(a, b)| format!("([{a}, {b}] | join('.'))")),
        ]
    })
}

/// Lists to loop over. Not a string itself: minijinja's `loop.last` is never true over a
/// string's characters (README, "Jinja2 differences").
fn template_list() -> impl Strategy<Value = String> {
    (
        template_expression(),
        prop::sample::select(vec![
            "| list",
            ".split('-')",
            "| list | sort",
            "[:0] | list",
        ]),
    )
        .prop_map(|(e, l)| format!("(({e}) | string){l}"))
}

/// Template text inside a policy's resource string: output, text with spaces, comments,
/// `if`/`elif`/`else`, `for` with `loop` and `else`, `set` (also inside a loop, read after it),
/// `with` and `filter` blocks, nested; any tag may trim the whitespace beside it (`{%-`, `-}}`).
fn template_body() -> impl Strategy<Value = String> {
    let expr = template_expression;
    let list = template_list;
    let leaf = prop_oneof![
        4 => expr().prop_map(|e| format!("{{{{ {e} }}}}")),
        2 => "[a-z/ -]{0,4}",
        1 => "[a-z ]{0,4}".prop_map(|c| format!("{{# {c} #}}")),
        1 => list().prop_map(|l| format!(
            "{{% for p in {l} %}}{{{{ loop.index }}}}{{{{ p }}}}{{% if not loop.last %}}/{{% endif %}}{{% else %}}none{{% endfor %}}"
        )),
        1 => expr().prop_map(|e| format!("{{% set v = {e} %}}{{{{ v }}}}")),
        1 => list().prop_map(|l| format!(
            "{{% for p in {l} %}}{{{{ loop.revindex }}}}{{{{ loop.cycle('a', 'b') }}}}{{{{ loop.first }}}}{{% endfor %}}"
        )),
        // An undefined argument takes the macro's default in minijinja, fails in Jinja2 (README).
        1 => (expr(), expr()).prop_map(|(a, b)| format!(
            "{{% macro m(x, y='d') %}}{{{{ x }}}}-{{{{ y }}}}{{% endmacro %}}{{{{ m({a}) }}}}{{{{ m({a}, y=({b}) | string) }}}}"
        )),
    ];
    let body = leaf.prop_recursive(3, 12, 3, move |inner| {
        let block = || proptest::collection::vec(inner.clone(), 1..3).prop_map(|b| b.concat());
        prop_oneof![
            (expr(), block(), block())
                .prop_map(|(c, a, b)| format!("{{% if {c} %}}{a}{{% else %}}{b}{{% endif %}}")),
            (expr(), block(), expr(), block(), block()).prop_map(|(c, a, d, b, e)| format!(
                "{{% if {c} %}}{a}{{% elif {d} %}}{b}{{% else %}}{e}{{% endif %}}"
            )),
            (list(), block()).prop_map(|(l, b)| format!(
                "{{% for p in {l} %}}{{{{ loop.index0 }}}}{b}{{{{ '-' if not loop.last }}}}{{% endfor %}}"
            )),
            (list(), expr()).prop_map(|(l, e)| format!(
                "{{% set v = 'x' %}}{{% for p in {l} %}}{{% set v = {e} %}}{{% endfor %}}{{{{ v }}}}"
            )),
            (expr(), block()).prop_map(|(e, b)| format!("{{% with w = {e} %}}{b}{{{{ w }}}}{{% endwith %}}")),
            (prop::sample::select(vec!["upper", "lower", "title", "trim", "replace('-', '_')"]), block())
                .prop_map(|(f, b)| format!("{{% filter {f} %}}{b}{{% endfilter %}}")),
            proptest::collection::vec(inner, 2..4).prop_map(|b| b.concat()),
        ]
    });
    (body, proptest::collection::vec(any::<bool>(), 0..24)).prop_map(|(body, trims)| {
        let mut trims = trims.into_iter();
        let mut trim = || trims.next().unwrap_or(false);
        let mut out = String::new();
        let mut rest = body.as_str();
        while let Some(i) = rest.find(['{', '}', '%']) {
            let (before, tail) = rest.split_at(i);
            out.push_str(before);
            let (tag, after) = match tail.get(..2) {
                Some("{%") if trim() => ("{%-", &tail[2..]),
                Some("{{") if trim() => ("{{-", &tail[2..]),
                Some("%}") if trim() => ("-%}", &tail[2..]),
                Some("}}") if trim() => ("-}}", &tail[2..]),
                Some(t @ ("{%" | "{{" | "%}" | "}}")) => (t, &tail[2..]),
                _ => (&tail[..1], &tail[1..]),
            };
            out.push_str(tag);
            rest = after;
        }
        out.push_str(rest);
        out
    })
}

/// Identities with names Kubernetes allows, with and without a pod (and its UID).
fn identity() -> impl Strategy<Value = tokenvend_core::Identity> {
    let label = "[a-z0-9]{1,4}(-[a-z0-9]{1,4}){0,2}";
    (
        prop_oneof![Just("production".to_owned()), label],
        label,
        proptest::option::of((
            "[a-z0-9]{1,5}(-[a-z0-9]{1,5}){0,2}(\\.[a-z0-9]{1,3}){0,1}",
            proptest::option::of("[0-9a-f]{8}-[0-9a-f]{4}"),
        )),
    )
        .prop_map(|(namespace, sa, pod)| {
            let mut id = tokenvend_core::Identity::service_account(namespace, sa);
            if let Some((name, uid)) = pod {
                id.pod_name = Some(name);
                id.pod_uid = uid;
            }
            id
        })
}

#[test]
fn fuzz_policy_templates() {
    // Session-policy templates against Jinja2 itself (`oracles/jinja2.rs`): one taken at start
    // renders Jinja2's policy for every identity; one refused is one Jinja2 fails on too.
    let mut jinja2 = jinja2::Jinja2::start();
    let cases = (
        template_body(),
        proptest::collection::vec(identity(), 1..4),
    )
        .prop_map(|(body, ids)| {
            let template = format!(
                r#"{{"Version": "2012-10-17", "Statement": [{{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/{body}"}}]}}"#
            );
            (template, ids)
        });
    let jinja2 = std::cell::RefCell::new(&mut jinja2);
    let taken = std::cell::Cell::new(0u64);
    let runs = fuzz("policy-template", cases, |(template, ids)| {
        agreed(jinja2.borrow_mut().disagreement(&template, &ids))?;
        if PolicyTemplate::from_source(template).is_ok() {
            taken.set(taken.get() + 1);
        }
        Ok(())
    });
    // Only a template taken at start has its policies compared: the property says little if
    // the generator's templates are mostly refused.
    let share = taken.get() as f64 / runs.max(1) as f64;
    println!(
        "policy-template: {:.0} % of the templates taken at start",
        share * 100.0
    );
    assert!(
        share > 0.2,
        "only {:.1} % of the templates were taken",
        share * 100.0
    );
}
