//! Jinja2 itself (the Python package the test command installs into `.venv`) as an oracle for
//! session-policy templates: tokenvend-sts promises Jinja2, so a template it takes at start must
//! render, for every identity, the policy Jinja2 renders, and one it refuses must be one Jinja2
//! fails on too. Used by the `fuzz_policy_templates` property (`tests/fuzz.rs`).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use tokenvend_core::Identity;
use tokenvend_sts::policy::{PolicyTemplate, checked_policy, start_check_identities};

/// Renders JSON-lines requests with Jinja2's default environment. The setting changed is
/// tokenvend-sts's documented one: printing or iterating an undefined name is an error (a token
/// without a pod must not get `b//*`), while `{% if pod_name %}` stays false, as minijinja's
/// `SemiStrict`. Besides, Python's repr of safe text is its text's (see the comment inside).
const RENDERER: &str = r#"
import json, sys
import jinja2, markupsafe

class SemiStrict(jinja2.Undefined):
    __slots__ = ()
    __str__ = __iter__ = __len__ = jinja2.Undefined._fail_with_undefined_error

# Not optimized: the optimizer folds constants at compile time, so `''[0]` in a branch never
# taken fails the whole template, where rendering alone would not.
env = jinja2.Environment(undefined=SemiStrict, optimized=False)
# A list holding text from `tojson` prints its items as `Markup('"a"')`, Python's repr of the
# safe-text class, where minijinja prints the text (README). Nobody writes that into a policy;
# the oracle prints such text as the text it is, so everything else in the policy is compared.
markupsafe.Markup.__repr__ = str.__repr__
source, template = None, None
for line in sys.stdin:
    req = json.loads(line)
    try:
        if req["template"] != source:
            source = None  # stays unset if compiling fails, so the next request compiles again
            template = env.from_string(req["template"])
            source = req["template"]
        answer = {"ok": template.render(req["context"])}
    except Exception as e:
        answer = {"error": f"{type(e).__name__}: {e}"}
    sys.stdout.write(json.dumps(answer) + "\n")
    sys.stdout.flush()
"#;

/// One Python process running Jinja2, asked a template and an identity at a time.
pub struct Jinja2 {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Jinja2 {
    /// Start the renderer with the venv's Python.
    pub fn start() -> Jinja2 {
        let mut child = Command::new(tokenvend_testkit::venv_bin("python"))
            .args(["-W", "ignore", "-c", RENDERER])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start python with jinja2");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        Jinja2 {
            child,
            stdin,
            stdout,
        }
    }

    /// Jinja2's text for `template` rendered with `id`'s variables, or its error. The context
    /// is the one tokenvend-sts gives: the pod's name and UID only when the token carries them.
    pub fn render(&mut self, template: &str, id: &Identity) -> Result<String, String> {
        let mut context = serde_json::json!({
            "namespace": id.namespace,
            "serviceaccount": id.service_account,
        });
        if let Some(pod) = &id.pod_name {
            context["pod_name"] = pod.as_str().into();
        }
        if let Some(uid) = &id.pod_uid {
            context["pod_uid"] = uid.as_str().into();
        }
        let request = serde_json::json!({"template": template, "context": context});
        writeln!(self.stdin, "{request}").expect("write to jinja2");
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("read from jinja2");
        let answer: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| {
            panic!("jinja2 answered {line:?} ({e}): is jinja2 in .venv (.ci/requirements.txt)?")
        });
        match (answer["ok"].as_str(), answer["error"].as_str()) {
            (Some(text), _) => Ok(text.to_owned()),
            (_, Some(error)) => Err(error.to_owned()),
            _ => panic!("jinja2 answered {line:?}"),
        }
    }

    /// The policy tokenvend-sts would send for Jinja2's rendering: the same JSON checks.
    fn policy(&mut self, template: &str, id: &Identity) -> Result<String, String> {
        let text = self.render(template, id)?;
        checked_policy(&text).map_err(|e| e.to_string())
    }

    /// Where `PolicyTemplate` and Jinja2 disagree on `template`, if they do: at the start-up
    /// check, or on the policy for one of `ids`.
    pub fn disagreement(&mut self, template: &str, ids: &[Identity]) -> Option<String> {
        let ours = PolicyTemplate::from_source(template.to_owned());
        let theirs = start_check_identities()
            .iter()
            .try_for_each(|id| self.policy(template, id).map(drop));
        let ours = match (ours, theirs) {
            (Ok(ours), Ok(())) => ours,
            (Err(_), Err(_)) => return None,
            (Ok(ours), Err(e)) if lenient(&e) => ours,
            (Ok(_), Err(e)) => {
                return Some(format!(
                    "took at start what Jinja2 fails on ({e}):\n{template}"
                ));
            }
            (Err(e), Ok(())) if !stricter(&e) => {
                return Some(format!(
                    "refused at start what Jinja2 renders ({e}):\n{template}"
                ));
            }
            (Err(_), Ok(())) => return None,
        };
        for id in ids {
            match (ours.render(id), self.policy(template, id)) {
                (Ok(a), Ok(b)) if a == b => {}
                (Err(_), Err(_)) => {}
                (Err(e), Ok(_)) if stricter(&e) => {}
                (Ok(_), Err(e)) if lenient(&e) => {}
                (a, b) => {
                    return Some(format!(
                        "for {id:?}, ours {a:?}, Jinja2's {b:?}:\n{template}"
                    ));
                }
            }
        }
        None
    }
}

/// Whether `error` is minijinja being stricter than Jinja2, which the README lists: using a name
/// the identity lacks (`pod_name` without a pod) in any way but a test is an error, and so is an
/// operation on a value of the wrong type; some of Jinja2's filters let both through as empty
/// (`pod_name | map('upper') | list` and `false | map('upper') | list` are `[]`). So is a
/// rendering over `MAX_RENDER_STEPS`, which Jinja2 does not bound: nested loops over long text
/// reach it (a loop over a 100-character text inside one over the pod name took over 100,000).
/// A missing filter or method is not excused, nor a variable refused at start (the generator
/// names only variables a template has, so such a refusal would be a false one).
fn stricter(error: &tokenvend_sts::policy::PolicyError) -> bool {
    if matches!(error, tokenvend_sts::policy::PolicyError::TooManySteps) {
        return true;
    }
    let error = error.to_string();
    error.contains("undefined") || error.contains("invalid operation")
}

/// Whether Jinja2's `error` is Python's type or value error where minijinja renders: an
/// operation on a value of a type it does not take, which minijinja answers in its own way
/// (`0 | indent`, `'%s' | format('a', 'b')`, a list to `urlencode`). Neither is a policy anyone
/// writes; on the types each operation takes, the two must agree.
fn lenient(error: &str) -> bool {
    error.starts_with("TypeError") || error.starts_with("ValueError")
}

impl Drop for Jinja2 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
