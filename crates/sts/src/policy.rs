//! Session-policy templates: Jinja2 syntax (minijinja) rendered per identity into the inline
//! policy passed to AssumeRole. Checked at start so a broken template never reaches a request.

use std::path::Path;

use minijinja::{Environment, ErrorKind, Value};
use tokenvend_core::Identity;

/// AWS limit on the plaintext of an inline session policy.
pub const MAX_POLICY_CHARS: usize = 2048;

/// Template instructions one rendering may run. A policy fits in 2,048 characters, which a
/// template renders in hundreds of steps; one needing this many loops without end or far too
/// long, and would hold a worker thread (and memory) instead of failing.
pub const MAX_RENDER_STEPS: u64 = 100_000;

/// Why a template cannot be used, or a rendering is not a usable policy.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The template file could not be read.
    #[error("policy template {path}: {source}")]
    Read {
        /// Path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// `${name}` placeholders are not Jinja2 and would be sent literally.
    #[error(
        "policy template uses the placeholder {found}, which Jinja2 does not expand (the policy \
         would grant a literal {found} path): write {suggestion} instead"
    )]
    DollarPlaceholder {
        /// What was found.
        found: String,
        /// The Jinja2 spelling.
        suggestion: String,
    },
    /// Jinja2 syntax or rendering error.
    #[error("policy template: {0}")]
    Template(String),
    /// Rendered text is not a JSON object.
    #[error("rendered policy is not valid JSON: {0}")]
    NotJson(String),
    /// The rendering ran out of steps.
    #[error(
        "policy template: rendering took more than {MAX_RENDER_STEPS} steps, far more than a \
         {MAX_POLICY_CHARS}-character policy needs: is a loop too long, or endless?"
    )]
    TooManySteps,
    /// Rendered policy exceeds AWS's limit.
    #[error(
        "rendered policy is {0} characters after removing whitespace; AWS allows {MAX_POLICY_CHARS}"
    )]
    TooLarge(usize),
}

/// The names a template renders with (`pod_name` and `pod_uid` only for a token bound to a pod).
const VARIABLES: [&str; 4] = ["namespace", "serviceaccount", "pod_name", "pod_uid"];

/// A compiled policy template.
#[derive(Debug)]
pub struct PolicyTemplate {
    env: Environment<'static>,
}

impl PolicyTemplate {
    /// Load a template file and check it (syntax, `${...}` mistakes, trial renderings).
    pub fn from_file(path: &Path) -> Result<Self, PolicyError> {
        let text =
            tokenvend_core::limited::read_to_string(path, tokenvend_core::limited::MAX_BYTES)
                .map_err(|source| PolicyError::Read {
                    path: path.display().to_string(),
                    source,
                })?;
        Self::from_source(text)
    }

    /// Compile and check template source.
    pub fn from_source(source: String) -> Result<Self, PolicyError> {
        if let Some(found) = dollar_placeholder(&source) {
            let name = found.trim_start_matches("${").trim_end_matches('}').trim();
            return Err(PolicyError::DollarPlaceholder {
                suggestion: format!("{{{{ {name} }}}}"),
                found: found.to_owned(),
            });
        }
        let mut env = crate::jinja2::environment();
        env.set_fuel(Some(MAX_RENDER_STEPS));
        // Slicing a name the token lacks fails, as in Jinja2, instead of printing `[]`.
        let source = crate::slices::checked(&source).into_owned();
        env.add_template_owned("policy", source)
            .map_err(|e| PolicyError::Template(e.to_string()))?;
        let t = PolicyTemplate { env };
        // A filter, test, function or variable the trial renderings do not reach (`urlize`
        // under `{% if namespace == 'x' %}`) would otherwise fail the requests that do; a
        // misspelled variable under `is defined` would silently never apply its branch.
        let tmpl = t
            .env
            .get_template("policy")
            .map_err(|e| PolicyError::Template(e.to_string()))?;
        if let Some(unknown) = crate::unknown_names::unknown_name(&tmpl, &VARIABLES) {
            let why = if unknown.kind == "variable" {
                format!(
                    "a template has {} and what it binds itself (set, for, macro arguments), so \
                     it has no value in any rendering",
                    VARIABLES.join(", ")
                )
            } else {
                "tokenvend-sts does not have it (README, \"Jinja2 differences\"), so every \
                 rendering that reaches it would fail"
                    .to_owned()
            };
            return Err(PolicyError::Template(format!("{unknown}: {why}")));
        }
        // Trial renderings for a token without and with a pod binding catch, before any
        // request, the errors that do not depend on the names (a `{% if pod_name %}` branch
        // runs only for the second).
        for id in start_check_identities() {
            t.render(&id).map_err(|e| match e {
                PolicyError::Template(m) if id.pod_name.is_some() => PolicyError::Template(
                    format!("trial rendering for a token bound to a pod failed: {m}"),
                ),
                PolicyError::Template(m) => PolicyError::Template(format!(
                    "trial rendering without a pod binding failed: {m}{}",
                    if m.contains("undefined") {
                        " (guard pod_name and pod_uid with {% if pod_name %})"
                    } else {
                        ""
                    }
                )),
                other => other,
            })?;
        }
        Ok(t)
    }

    /// Render for one identity; returns compact JSON within AWS's size limit.
    pub fn render(&self, id: &Identity) -> Result<String, PolicyError> {
        let tmpl = self
            .env
            .get_template("policy")
            .map_err(|e| PolicyError::Template(e.to_string()))?;
        // A name the token lacks stays undefined: printing it is then an error, where a `none`
        // would print as `none` into the policy.
        let mut vars = std::collections::BTreeMap::new();
        vars.insert("namespace", Value::from(id.namespace.as_str()));
        vars.insert("serviceaccount", Value::from(id.service_account.as_str()));
        if let Some(pod) = &id.pod_name {
            vars.insert("pod_name", Value::from(pod.as_str()));
        }
        if let Some(uid) = &id.pod_uid {
            vars.insert("pod_uid", Value::from(uid.as_str()));
        }
        let text = tmpl.render(vars).map_err(|e| match e.kind() {
            ErrorKind::OutOfFuel => PolicyError::TooManySteps,
            _ => PolicyError::Template(e.to_string()),
        })?;
        checked_policy(&text)
    }
}

/// The identities every template is rendered for at start, before any request.
pub fn start_check_identities() -> Vec<Identity> {
    let unbound = Identity::service_account("check-namespace", "check-sa");
    let bound = Identity {
        pod_name: Some("check-pod-7d9f8b6c5-x2x4z".into()),
        pod_uid: Some("0c7a4a3e-6f0e-4b8e-9d5f-3b2a1c0d9e8f".into()),
        ..unbound.clone()
    };
    vec![unbound, bound]
}

/// A rendered template as the policy sent to STS: a JSON object, compacted, within AWS's size
/// limit.
pub fn checked_policy(text: &str) -> Result<String, PolicyError> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| PolicyError::NotJson(e.to_string()))?;
    if !value.is_object() {
        return Err(PolicyError::NotJson("expected a JSON object".into()));
    }
    let compact = value.to_string();
    if compact.chars().count() > MAX_POLICY_CHARS {
        return Err(PolicyError::TooLarge(compact.chars().count()));
    }
    Ok(compact)
}

/// The first `${name}` in `source` meant as a template variable. IAM's own policy variables
/// (`${aws:userid}`, `${aws:PrincipalTag/team, 'none'}`, `${s3:prefix}`) always carry a service
/// prefix, and `${*}`, `${?}`, `${$}` are IAM's escapes: AWS resolves those when it evaluates the
/// session policy, so they pass through untouched.
fn dollar_placeholder(source: &str) -> Option<&str> {
    source.match_indices("${").find_map(|(start, _)| {
        let end = start + source[start..].find('}')?;
        let inner = source[start + 2..end].trim();
        let iam = inner.contains(':') || matches!(inner, "*" | "?" | "$");
        (!iam).then(|| &source[start..=end])
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn id(ns: &str, sa: &str) -> Identity {
        Identity::service_account(ns, sa)
    }

    const SEED_BASIC: &str = r#"{
  "Version": "2012-10-17",
  "Statement": [
    {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
     "Resource": ["arn:aws:s3:::my-bucket/{{ namespace }}/{{ serviceaccount }}/*"]},
    {"Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": ["arn:aws:s3:::my-bucket"],
     "Condition": {"StringLike": {"s3:prefix": ["{{ namespace }}/{{ serviceaccount }}/*"]}}}
  ]
}"#;

    const SEED_ADVANCED: &str = r#"{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Effect": "Allow",
      "Action": ["s3:*"],
      "Resource": [
        "arn:aws:s3:::{{ 'prod' if namespace == 'production' else 'dev' }}-bucket/{{ namespace }}/{{ serviceaccount }}/*"
      ]
    }
    {% if namespace == "production" %},
    {
      "Effect": "Allow",
      "Action": ["kms:Decrypt"],
      "Resource": ["arn:aws:kms:*:*:key/prod-key-id"]
    }
    {% endif %}
  ]
}"#;

    fn render(src: &str, id: &Identity) -> serde_json::Value {
        let t = PolicyTemplate::from_source(src.into()).expect("template");
        serde_json::from_str(&t.render(id).expect("render")).expect("json")
    }

    #[test]
    fn seed_basic_example_scopes_to_the_identity() {
        let v = render(SEED_BASIC, &id("shop", "orders"));
        assert_eq!(
            v["Statement"][0]["Resource"],
            json!(["arn:aws:s3:::my-bucket/shop/orders/*"])
        );
        assert_eq!(
            v["Statement"][1]["Condition"]["StringLike"]["s3:prefix"],
            json!(["shop/orders/*"])
        );
    }

    #[test]
    fn seed_advanced_example_conditionals_and_expressions() {
        let prod = render(SEED_ADVANCED, &id("production", "api"));
        assert_eq!(prod["Statement"].as_array().map(Vec::len), Some(2));
        assert_eq!(
            prod["Statement"][0]["Resource"],
            json!(["arn:aws:s3:::prod-bucket/production/api/*"])
        );
        assert_eq!(prod["Statement"][1]["Action"], json!(["kms:Decrypt"]));
        let dev = render(SEED_ADVANCED, &id("staging", "api"));
        assert_eq!(dev["Statement"].as_array().map(Vec::len), Some(1));
        assert_eq!(
            dev["Statement"][0]["Resource"],
            json!(["arn:aws:s3:::dev-bucket/staging/api/*"])
        );
    }

    #[test]
    fn filters_and_pod_name_when_the_token_carries_it() {
        let src = r#"{"Statement":[{"Resource":"arn:aws:s3:::b/{{ namespace | upper }}/{% if pod_name %}{{ pod_name }}{% else %}shared{% endif %}"}]}"#;
        let mut with_pod = id("shop", "orders");
        with_pod.pod_name = Some("orders-1".into());
        assert_eq!(
            render(src, &with_pod)["Statement"][0]["Resource"],
            json!("arn:aws:s3:::b/SHOP/orders-1")
        );
        assert_eq!(
            render(src, &id("shop", "orders"))["Statement"][0]["Resource"],
            json!("arn:aws:s3:::b/SHOP/shared")
        );
        // Using pod_name bare when the token has none is an error, never an empty path segment.
        let bare = PolicyTemplate::from_source(r#"{"R":"{{ namespace }}"}"#.into()).expect("ok");
        assert!(bare.render(&id("a", "b")).is_ok());
        let needs_pod = r#"{"R":"{{ pod_name }}"}"#;
        let err = PolicyTemplate::from_source(needs_pod.into()).expect_err("needs a pod");
        assert!(
            matches!(&err, PolicyError::Template(m) if m.starts_with(
                "trial rendering without a pod binding failed: undefined value"
            ) && m.ends_with("(guard pod_name and pod_uid with {% if pod_name %})")),
            "{err}"
        );
    }

    #[test]
    fn slicing_a_name_the_token_lacks_is_an_error_not_an_empty_list() {
        // minijinja alone printed `[]` into the policy of a token without a pod.
        for slice in [
            "pod_uid[:8]",
            "(pod_uid)[-4:]",
            "(pod_uid if pod_uid is defined else pod_name)[:3]",
        ] {
            let src = format!(r#"{{"R":"b/{{{{ {slice} }}}}/*"}}"#);
            let err = PolicyTemplate::from_source(src).expect_err(slice);
            assert!(
                err.to_string().contains("undefined")
                    && err.to_string().contains("guard pod_name and pod_uid"),
                "{slice}: {err}"
            );
        }
        let guarded = r#"{"R":"b/{% if pod_uid %}{{ pod_uid[:8] }}{% else %}{{ namespace[::-1][:2] }}{% endif %}/*"}"#;
        let t = PolicyTemplate::from_source(guarded.into()).expect("guarded");
        let with_pod = pod("shop", "orders", "orders-1", Some("0b1c2d3e-4f50"));
        let rendered = |who: &Identity| -> serde_json::Value {
            serde_json::from_str(&t.render(who).expect("renders")).expect("json")
        };
        assert_eq!(rendered(&with_pod)["R"], json!("b/0b1c2d3e/*"));
        assert_eq!(rendered(&id("shop", "orders"))["R"], json!("b/po/*"));
    }

    fn pod(ns: &str, sa: &str, name: &str, uid: Option<&str>) -> Identity {
        Identity {
            pod_name: Some(name.into()),
            pod_uid: uid.map(Into::into),
            ..id(ns, sa)
        }
    }

    fn resource(src: &str, id: &Identity) -> serde_json::Value {
        let v = render(&format!(r#"{{"Resource":"{src}"}}"#), id);
        v["Resource"].clone()
    }

    /// Each of `prints` is an expression and the text it prints for `who`; each of `refused` one
    /// refused at start, and part of the reason.
    fn printed_or_refused(who: &Identity, prints: &[(&str, &str)], refused: &[(&str, &str)]) {
        for (expr, want) in prints {
            assert_eq!(
                resource(&format!("{{{{ {expr} }}}}"), who),
                json!(want),
                "{expr}"
            );
        }
        for (expr, why) in refused {
            let src = format!(r#"{{"R":"{{{{ {expr} }}}}"}}"#);
            let err = PolicyTemplate::from_source(src)
                .expect_err(expr)
                .to_string();
            assert!(err.contains(why), "{expr}: {err}");
        }
    }

    #[test]
    fn a_template_that_fails_for_every_token_bound_to_a_pod_is_refused_at_start() {
        // The branch runs only for pod-bound tokens, which the check without a pod never takes.
        let err = PolicyTemplate::from_source(
            r#"{"R":"{% if pod_name %}{{ pod_name.nosuchmethod() }}{% endif %}"}"#.into(),
        )
        .expect_err("refused");
        let msg = err.to_string();
        assert!(
            msg.contains("trial rendering for a token bound to a pod failed")
                && msg.contains("nosuchmethod"),
            "{msg}"
        );
    }

    /// Each of `refused` (a body, and what it names) refused at start with `line 2: <named> is
    /// unknown` and `because`, in the second line of a policy; each of `taken` taken.
    fn unknown_at_start(refused: &[(&str, &str)], because: &str, taken: &[&str]) {
        for (body, named) in refused {
            let source = format!("{{\"Version\":\"2012-10-17\",\n\"R\":\"{body}\"}}");
            let msg = PolicyTemplate::from_source(source)
                .expect_err(body)
                .to_string();
            assert!(
                msg.contains(&format!("line 2: {named} is unknown")) && msg.contains(because),
                "{body}: {msg}"
            );
        }
        for body in taken {
            let source = format!("{{\"R\":\"{body}\"}}");
            PolicyTemplate::from_source(source).expect(body);
        }
    }

    #[test]
    fn a_filter_test_or_function_it_lacks_is_refused_at_start_in_any_branch() {
        // Each in a branch neither trial rendering takes, where only a request would reach it.
        let refused = [
            (
                "{% if namespace == 'x' %}{{ pod_name | urlize }}{% endif %}",
                "filter urlize",
            ),
            (
                "{% if false %}{% filter wordwrap %}a{% endfilter %}{% endif %}",
                "filter wordwrap",
            ),
            (
                "{% if false %}{% if namespace is prime %}a{% endif %}{% endif %}",
                "test prime",
            ),
            (
                "{% if false %}{{ [namespace] | map('filesizeformat') | join }}{% endif %}",
                "filter filesizeformat",
            ),
            (
                "{% if false %}{{ [1] | select('prime') | list }}{% endif %}",
                "test prime",
            ),
            (
                "{% if false %}{{ [1] | reject('prime') | list }}{% endif %}",
                "test prime",
            ),
            (
                "{% if false %}{{ [] | selectattr('a', 'prime') | list }}{% endif %}",
                "test prime",
            ),
            (
                "{% macro m(x) %}{{ x | striptags }}{% endmacro %}",
                "filter striptags",
            ),
            ("{% if false %}{{ now() }}{% endif %}", "function now"),
            (
                "{% if false %}{{ cycler(1, 2).next() }}{% endif %}",
                "function cycler",
            ),
            (
                "{% block b %}{{ namespace | xmlattr }}{% endblock %}",
                "filter xmlattr",
            ),
        ];
        // Known ones, and one the template checks for itself, as Jinja2 lets it.
        let taken = [
            "{% if false %}{{ pod_name | upper | replace('-', '_') | first }}{% endif %}",
            "{% if false %}{{ [1] | select('odd') | map('string') | reject('even') | list }}{% endif %}",
            "{% if false %}{{ [] | selectattr('a', 'equalto', 1) | map(attribute='a') | list }}{% endif %}",
            "{% if false %}{{ namespace is lower and namespace is divisibleby(2) }}{% endif %}",
            "{% if 'urlize' is filter %}{{ namespace | urlize }}{% endif %}",
            "{% if 'prime' is test %}{{ 1 is prime }}{% endif %}",
            // Calls of globals and of what the template binds.
            "{% if false %}{{ range(2) | list }}{{ dict(a=1) }}{% endif %}",
            "{% macro m(f) %}{{ caller() }}{% endmacro %}{% if false %}{% call m(1) %}x{% endcall %}{{ m(2) }}{% endif %}",
            "{% if false %}{% for x in [[1]] recursive %}{{ loop(x) if x is sequence }}{% endfor %}{% endif %}",
            "{% set f = range %}{% if false %}{{ f(2) }}{% endif %}",
        ];
        unknown_at_start(&refused, "README", &taken);
    }

    #[test]
    fn a_variable_no_rendering_defines_is_refused_at_start_in_any_branch() {
        // Before, each passed the start-up check and failed every request that reached it, or
        // (`is defined`) silently never applied its branch.
        let refused = [
            (
                "{% if namespace == 'x' %}{{ namepsace }}{% endif %}",
                "variable namepsace",
            ),
            (
                "{% if pod_nme is defined %}{{ pod_name }}{% endif %}",
                "variable pod_nme",
            ),
            (
                "{% if false %}{{ service_account | default('a') }}{% endif %}",
                "variable service_account",
            ),
            ("{% macro m(a) %}{{ a }}{{ b }}{% endmacro %}", "variable b"),
            (
                "{% block p %}{{ podname.x }}{% endblock %}",
                "variable podname",
            ),
            // minijinja's macros have no `varargs`; Jinja2's do.
            (
                "{% macro m() %}{{ varargs | length }}{% endmacro %}",
                "variable varargs",
            ),
        ];
        // The four, globals, and whatever the template binds: set (in a branch too), for,
        // with, macro arguments, caller and loop.
        let taken = [
            "{% if false %}{{ namespace }}{{ serviceaccount }}{{ pod_uid is defined }}{% endif %}",
            "{% if false %}{% set x = 1 %}{% endif %}{% if false %}{{ x }}{% endif %}",
            "{% for k, v in {'a': 1} | items %}{{ k }}{{ v }}{{ loop.index }}{% endfor %}",
            "{% with z = namespace %}{{ z }}{% endwith %}{% set t %}x{% endset %}{{ t }}",
            "{% macro m(a, b=1) %}{{ a }}{{ b }}{{ caller() }}{% endmacro %}{% call m(1) %}x{% endcall %}",
            "{% for a in [[1]] recursive %}{{ loop(a) if a is sequence }}{% endfor %}",
        ];
        unknown_at_start(
            &refused,
            "namespace, serviceaccount, pod_name, pod_uid",
            &taken,
        );
    }

    #[test]
    fn python_methods_and_tests_work_as_in_jinja2() {
        let who = pod(
            "team-a",
            "orders",
            "orders-7d9f8b6c5-x2x4z",
            Some("0c7a-4b8e"),
        );
        assert_eq!(
            resource(
                "{% if pod_name %}{{ pod_name.split('-')[0] }}{% endif %}/{{ namespace.upper() }}",
                &who
            ),
            json!("orders/TEAM-A")
        );
        assert_eq!(
            resource(
                "{{ namespace.startswith('team') }}/{{ serviceaccount.replace('o', '0') }}",
                &who
            ),
            json!("True/0rders")
        );
        // Python's str.title() starts a word after any non-letter; the `title` filter does not.
        assert_eq!(
            resource("{{ 'ab1cd-0a'.title() }}/{{ 'ab1cd-0a' | title }}", &who),
            json!("Ab1Cd-0A/Ab1cd-0a")
        );
        assert_eq!(
            resource(
                "{{ namespace is sequence }}/{{ {} is sequence }}/{{ 1 is sequence }}",
                &who
            ),
            json!("True/True/False")
        );
    }

    #[test]
    fn str_methods_contrib_lacks_as_python_has_them() {
        let who = id("team-a", "orders");
        // Each expected text is what Jinja2 3.1.6 (Python 3.11) renders.
        let cases = [
            ("namespace.removeprefix('team-')", "a"),
            ("namespace.removeprefix('x')", "team-a"),
            ("'a.json'.removesuffix('.json')", "a"),
            ("'a'.removesuffix('')", "a"),
            ("'a-b-c'.rsplit('-')", "['a', 'b', 'c']"),
            ("'a-b-c'.rsplit('-', 1)", "['a-b', 'c']"),
            ("'a-b-c'.rsplit('-', 0)", "['a-b-c']"),
            ("'a--b'.rsplit('-', 1)", "['a-', 'b']"),
            ("'  a b  c '.rsplit(none, 1)", "['  a b', 'c']"),
            ("'  a b  c '.rsplit()", "['a', 'b', 'c']"),
            ("'a  b'.rsplit(none, 5)", "['a', 'b']"),
            ("''.rsplit()", "[]"),
            ("''.rsplit('-')", "['']"),
            ("'-42'.zfill(6)", "-00042"),
            ("'42'.zfill(1)", "42"),
            ("'+'.zfill(3)", "+00"),
            ("'ab'.zfill(4)", "00ab"),
            ("'ab'.ljust(5, '*')", "ab***"),
            ("'ab'.rjust(5)", "   ab"),
            ("'-5'.rjust(4)", "  -5"),
            ("'  a b '.rsplit(none, 0)", "['  a b']"),
            // Long padding within the steps a policy has.
            ("'a'.ljust(2000) | length", "2000"),
            ("'ab'.center(7, '.')", "...ab.."),
        ];
        let refused = [
            ("namespace.rsplit('')", "empty separator"),
            ("namespace.rsplit(1)", "separator must be text"),
            ("namespace.ljust(9, '**')", "exactly one character"),
            ("namespace.zfill('9')", "must be an integer"),
            ("namespace.zfill(9, '0')", "zfill takes one argument"),
            ("namespace.removeprefix(1)", "invalid"),
            // Padding is charged to the rendering's steps before it is made.
            ("namespace.center(100000000)", "steps"),
            ("namespace.center(1000000000000)", "steps"),
            ("namespace | center(100000000)", "steps"),
        ];
        printed_or_refused(&who, &cases, &refused);
    }

    #[test]
    fn filters_refuse_a_name_the_token_lacks_rather_than_print_nothing() {
        for filter in ["urlencode", "e", "escape", "tojson", "pprint", "indent(2)"] {
            let src = format!(r#"{{"R":"b/{{{{ pod_name | {filter} }}}}/*"}}"#);
            let err = PolicyTemplate::from_source(src).expect_err(filter);
            assert!(err.to_string().contains("undefined"), "{filter}: {err}");
        }
        for inside in [
            "[namespace, pod_name] | join('/')",
            "[pod_name] | e",
            "[pod_name] | tojson",
            "[namespace] | map('lower') | join(pod_name)",
            "[namespace, pod_name]",
            "[[namespace, {'k': pod_name}]]",
        ] {
            let src = format!(r#"{{"R":"b/{{{{ {inside} }}}}/*"}}"#);
            let err = PolicyTemplate::from_source(src).expect_err(inside);
            assert!(err.to_string().contains("undefined"), "{inside}: {err}");
        }
        // Lists and mappings of defined values print as Jinja2 prints them.
        assert_eq!(
            resource(
                "{{ [namespace, [serviceaccount], {'k': 1}] }}",
                &id("a", "b")
            ),
            json!("['a', ['b'], {'k': 1}]")
        );
        // A pod-bound token without a UID: `pod_uid` is undefined, never printed as `none`.
        let t = PolicyTemplate::from_source(
            r#"{"R":"{% if pod_name %}{{ pod_uid }}{% endif %}"}"#.into(),
        )
        .expect("checked with a UID");
        let err = t
            .render(&pod("a", "b", "p", None))
            .expect_err("no UID to print");
        assert!(err.to_string().contains("undefined"), "{err}");
        assert_eq!(
            t.render(&pod("a", "b", "p", Some("u-1"))).expect("uid"),
            r#"{"R":"u-1"}"#
        );
    }

    #[test]
    fn truncate_center_wordcount_and_forceescape_as_jinja2_writes_them() {
        let who = id("shop", "orders");
        // Each expected text is what Jinja2 3.1.6 renders.
        let cases = [
            ("'hello wonderful world' | truncate(12)", "hello..."),
            (
                "'hello wonderful world' | truncate(12, true)",
                "hello won...",
            ),
            (
                "'hello wonderful world' | truncate(12, end='!', leeway=0)",
                "hello!",
            ),
            ("'hello wonderful' | truncate(12)", "hello wonderful"),
            (
                "'hello wonderful world' | truncate(12, false, '!', 0)",
                "hello!",
            ),
            ("namespace ~ '-' ~ serviceaccount | truncate", "shop-orders"),
            ("[1, 2] | truncate(3, leeway=0)", "[1, 2]"),
            ("'a b' | truncate(3, leeway=0)", "a b"),
            (
                "'abcdef' | escape | truncate(4, end='<', leeway=0)",
                "abc&lt;",
            ),
            ("'abc' | center(8)", "  abc   "),
            ("'abc' | center(9)", "   abc   "),
            ("'ab' | center(7)", "   ab  "),
            ("'ab' | center(-3)", "ab"),
            ("none | center(7)", "  None "),
            ("'a b_c d-e' | wordcount", "4"),
            ("'<a>' | escape | forceescape", "&amp;lt;a&amp;gt;"),
        ];
        let refused = [
            ("namespace | truncate(2)", "expected length >= 3, got 2"),
            ("namespace | truncate(5, leeway=-1)", "expected leeway >= 0"),
            ("[1, 2, 3, 4] | truncate(3, leeway=0)", "cannot cut a list"),
            ("namespace | center('x')", "must be an integer"),
            ("namespace | truncate(5.0)", "must be an integer"),
            (
                "namespace | truncate(5, false, '.', 0, 9)",
                "at most 4 arguments",
            ),
            ("namespace | truncate(5, length=6)", "two values for length"),
            ("namespace | truncate(5, colour=1)", "colour"),
        ];
        printed_or_refused(&who, &cases, &refused);
        // A name the token lacks is refused, not cut or centred into "".
        for filter in ["truncate", "center", "wordcount", "forceescape"] {
            let src = format!(
                r#"{{"R":"{{% if pod_name %}}x{{% else %}}{{{{ pod_name | {filter} }}}}{{% endif %}}"}}"#
            );
            let err = PolicyTemplate::from_source(src)
                .expect_err(filter)
                .to_string();
            assert!(err.contains("undefined"), "{filter}: {err}");
        }
    }

    #[test]
    fn case_and_number_tests_as_jinja2_has_them() {
        let who = id("shop", "orders");
        // Case tests look at any value as Python prints it, not only at text.
        assert_eq!(
            resource(
                "{{ namespace | batch(2) | select('lower') | list | length }}/{{ [none] is lower }}/{{ 'AB' is upper }}/{{ 2.5 is lower }}",
                &who
            ),
            json!("2/False/True/False")
        );
        assert_eq!(
            resource(
                "{{ 3.0 is odd }}/{{ 4 is even }}/{{ 9 is divisibleby(3) }}",
                &who
            ),
            json!("True/True/True")
        );
        // A name the token lacks is an error in these tests too, not false.
        for test in [
            "pod_name is lower",
            "pod_name is upper",
            "pod_name is odd",
            "pod_name is even",
            "pod_name is divisibleby(2)",
            "4 is divisibleby(pod_name)",
        ] {
            let src = format!(r#"{{"R":"{{% if {test} %}}x{{% endif %}}"}}"#);
            let err = PolicyTemplate::from_source(src).expect_err(test);
            assert!(err.to_string().contains("undefined"), "{test}: {err}");
        }
        let err = PolicyTemplate::from_source(r#"{"R":"{{ 4 is divisibleby(0) }}"}"#.into())
            .expect_err("division by zero");
        assert!(err.to_string().contains("4 % 0"), "{err}");
    }

    #[test]
    fn escape_and_urlencode_write_what_jinja2_writes() {
        let who = id("shop", "orders");
        assert_eq!(
            resource(r"{{ '<a href=\'x/y\'>&' | e }}", &who),
            json!("&lt;a href=&#39;x/y&#39;&gt;&amp;")
        );
        assert_eq!(
            resource("{{ 'a b/c~d' | urlencode }}", &who),
            json!("a%20b/c~d")
        );
        assert_eq!(
            resource("{{ {'k': 'a b', 'ns': namespace} | urlencode }}", &who),
            json!("k=a+b&ns=shop")
        );
        assert_eq!(
            resource("{{ [('a/b', 1), ('c', 'd')] | urlencode }}", &who),
            json!("a%2Fb=1&c=d")
        );
        assert!(
            PolicyTemplate::from_source(r#"{"R":"{{ ['a'] | urlencode }}"}"#.into()).is_err(),
            "a list that is not of pairs"
        );
        // The filters wrapped for undefined names still take their arguments by keyword too.
        assert_eq!(
            resource(
                "{{ 'ab' | indent(width=2, first=true) }}/{{ [namespace, 'x'] | join('-') }}",
                &who
            ),
            json!("  ab/shop-x")
        );
    }

    #[test]
    fn dollar_placeholders_are_refused_with_the_jinja_spelling() {
        let err = PolicyTemplate::from_source(r#"{"R":"arn:aws:s3:::b/${namespace}/*"}"#.into())
            .expect_err("refused");
        let msg = err.to_string();
        assert!(
            msg.contains("${namespace}") && msg.contains("{{ namespace }}"),
            "{msg}"
        );
    }

    #[test]
    fn iam_policy_variables_pass_through_for_aws_to_resolve() {
        let src = r#"{"Statement":[{"Resource":[
            "arn:aws:s3:::b/{{ namespace }}/${aws:userid}/*",
            "arn:aws:s3:::b/${aws:PrincipalTag/team, 'none'}/${ aws:SourceIdentity }/*",
            "arn:aws:s3:::b/${*}${?}${$}"],
            "Condition":{"StringLike":{"s3:prefix":["${s3:prefix}"]}}}]}"#;
        let v = render(src, &id("shop", "orders"));
        assert_eq!(
            v["Statement"][0]["Resource"],
            json!([
                "arn:aws:s3:::b/shop/${aws:userid}/*",
                "arn:aws:s3:::b/${aws:PrincipalTag/team, 'none'}/${ aws:SourceIdentity }/*",
                "arn:aws:s3:::b/${*}${?}${$}"
            ])
        );
        // A template placeholder after an IAM variable is still caught, and named.
        let err = PolicyTemplate::from_source(
            r#"{"R":["b/${aws:userid}/*", "b/${ serviceaccount }/*"]}"#.into(),
        )
        .expect_err("refused");
        assert!(
            matches!(&err, PolicyError::DollarPlaceholder { found, suggestion }
                if found == "${ serviceaccount }" && suggestion == "{{ serviceaccount }}"),
            "{err}"
        );
    }

    #[test]
    fn a_template_that_loops_too_long_is_refused_not_rendered_for_ever() {
        // 10^10 iterations: hours of CPU and gigabytes of text without a bound.
        let endless = r#"{"R":"{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}"}"#;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(PolicyTemplate::from_source(endless.into()).map(|_| ()));
        });
        let err = rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("refused within 20 s")
            .expect_err("refused");
        assert!(matches!(err, PolicyError::TooManySteps), "{err}");
        assert!(err.to_string().contains("is a loop too long"), "{err}");
        // The bound is on steps, not text: the Jinja2 property's find, a loop over about 100
        // characters inside one over the pod name's 25, prints under 100 characters in more
        // than 100,000 steps, which Jinja2 renders and tokenvend-sts refuses (README).
        let nested = r#"{"R":"{% for p in (((pod_name if pod_name else 'none')) | string)| list %}{{ loop.index0 }}{% set v = 'x' %}{% for p in (('%s-%s' | format((namespace | join(d='/')), (namespace | list))) | string)| list | sort %}{% set v = ((namespace + namespace) | list) %}{% endfor %}{{ v }}{{ '-' if not loop.last }}{% endfor %}"}"#;
        let err = PolicyTemplate::from_source(nested.into()).expect_err("over the bound");
        assert!(matches!(err, PolicyError::TooManySteps), "{err}");
        // A loop over a list, as a real template has, is well within the bound.
        let listed = r#"{"Statement":[{% for b in ["a","b","c"] %}{"Resource":"arn:aws:s3:::{{ b }}/{{ namespace }}/*"}{% if not loop.last %},{% endif %}{% endfor %}]}"#;
        let v = render(listed, &id("shop", "orders"));
        assert_eq!(v["Statement"].as_array().map(Vec::len), Some(3));
    }

    #[test]
    fn invalid_json_syntax_errors_and_size_limit() {
        assert!(matches!(
            PolicyTemplate::from_source("{\"a\": {{ namespace }}}".into()),
            Err(PolicyError::NotJson(_))
        ));
        assert!(matches!(
            PolicyTemplate::from_source("[1]".into()),
            Err(PolicyError::NotJson(_))
        ));
        assert!(matches!(
            PolicyTemplate::from_source("{% if %}".into()),
            Err(PolicyError::Template(_))
        ));
        let big = format!(r#"{{"a":"{}"}}"#, "x".repeat(MAX_POLICY_CHARS));
        assert!(matches!(
            PolicyTemplate::from_source(big),
            Err(PolicyError::TooLarge(_))
        ));
        // Whitespace does not count: a pretty template just under the limit once compacted is fine.
        let pretty = format!(
            "{{\n    \"a\":    \"{}\"\n}}",
            "x".repeat(MAX_POLICY_CHARS - 8)
        );
        assert!(PolicyTemplate::from_source(pretty).is_ok());
    }
}
