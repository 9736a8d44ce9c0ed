//! minijinja set up to render Jinja2 as Jinja2 does, where the two differ in ways a template for
//! Jinja2 meets: Python's methods, a few filters written as Jinja2 writes them, and names a token
//! lacks refused wherever they would be printed. What still differs is listed in the README
//! ("Jinja2 differences"), found by the property that renders with Jinja2 itself
//! (`tests/fuzz.rs`, `tests/oracles/jinja2.rs`).

use minijinja::value::{Kwargs, Rest, ValueKind, ValueOrKwargs, from_args};
use minijinja::{Environment, Error, ErrorKind, State, UndefinedBehavior, Value, filters, tests};

/// An environment for Jinja2 templates.
pub fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    // `{% if pod_name %}` works when absent; using it bare when absent is an error, not "".
    env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
    // Python's str, list and dict methods, which Jinja2 templates call. Not contrib's filters:
    // its `truncate` and `wordwrap` take keyword arguments only, so a Jinja2 `truncate(5)` would
    // fail, and `truncate` of an undefined name gives "".
    env.set_unknown_method_callback(python_methods);
    refuse_undefined_in_filters(&mut env);
    crate::slices::add_filter(&mut env);
    missing_text_filters(&mut env);
    python_tests(&mut env);
    // Jinja2's `sequence` is anything with a length and items: text and mappings too.
    env.add_test("sequence", |value: &Value| {
        matches!(
            value.kind(),
            ValueKind::String | ValueKind::Seq | ValueKind::Map
        )
    });
    env
}

/// Jinja2's `lower`, `upper`, `odd`, `even` and `divisibleby` tests. minijinja's are false on a
/// name the token lacks, where Jinja2's fail like any other use of it, and its case tests are
/// false on anything but text, where Jinja2's look at the value as printed (`[['a']] is lower`
/// is true, `[None] is lower` is false; minijinja prints values as Python does, but for floats
/// outside 1e-4..1e16, README).
fn python_tests(env: &mut Environment<'static>) {
    let case = [
        ("lower", tests::is_lower as fn(&Value) -> bool),
        ("upper", tests::is_upper),
    ];
    for (name, test) in case {
        env.add_test(name, move |value: &Value| {
            defined(value)?;
            Ok::<_, Error>(test(&Value::from(value.to_string())))
        });
    }
    let parity = [
        ("odd", tests::is_odd as fn(Value) -> bool),
        ("even", tests::is_even),
    ];
    for (name, test) in parity {
        env.add_test(name, move |value: Value| {
            defined(&value)?;
            Ok::<_, Error>(test(value))
        });
    }
    env.add_test("divisibleby", |value: &Value, by: &Value| {
        defined(value)?;
        defined(by)?;
        // minijinja's builtin fails on a zero divisor, as Python does; its exported function,
        // called here, answers false.
        let number = |v: &Value| matches!(v.kind(), ValueKind::Number | ValueKind::Bool);
        if number(value) && number(by) && !by.is_true() {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("unable to calculate {value} % {by}"),
            ));
        }
        Ok(tests::is_divisibleby(value, by))
    });
}

/// Fails if `value` is undefined (a name the token lacks, which must not be printed) or is a
/// list or mapping that holds one.
fn defined(value: &Value) -> Result<(), Error> {
    if value.is_undefined() || holds_undefined(value) {
        Err(Error::new(
            ErrorKind::UndefinedError,
            "an undefined name passed to a filter or test",
        ))
    } else {
        Ok(())
    }
}

/// Python's methods on a value, as Jinja2 calls them: minijinja-contrib's, except `str.title()`,
/// which contrib answers with the `title` filter's rule (words split at spaces and `-`), where
/// Python starts a word after any character that is not a letter (`"0a".title()` is `"0A"`),
/// plus the str methods contrib lacks that a policy may call (`removeprefix`, `rsplit`...).
fn python_methods(
    state: &mut State,
    value: &Value,
    method: &str,
    args: &[Value],
) -> Result<Value, Error> {
    match (value.as_str(), method, args) {
        (Some(text), "title", []) => {
            let mut after_letter = false;
            let titled: String = text
                .chars()
                .flat_map(|c| {
                    let cased = c.is_lowercase() || c.is_uppercase();
                    let out: Vec<char> = if after_letter {
                        c.to_lowercase().collect()
                    } else {
                        c.to_uppercase().collect()
                    };
                    after_letter = cased;
                    out
                })
                .collect();
            Ok(Value::from(titled))
        }
        (
            Some(text),
            "removeprefix" | "removesuffix" | "rsplit" | "zfill" | "ljust" | "rjust" | "center",
            _,
        ) => more_str_methods(state, text, method, args),
        _ => minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args),
    }
}

/// Python's str methods that minijinja-contrib lacks and a policy may call.
fn more_str_methods(
    state: &State,
    text: &str,
    method: &str,
    args: &[Value],
) -> Result<Value, Error> {
    let wrong = |what: &str| Error::new(ErrorKind::InvalidOperation, what.to_owned());
    match method {
        "removeprefix" => {
            let (prefix,): (&str,) = from_args(args)?;
            Ok(Value::from(text.strip_prefix(prefix).unwrap_or(text)))
        }
        "removesuffix" => {
            let (suffix,): (&str,) = from_args(args)?;
            Ok(Value::from(text.strip_suffix(suffix).unwrap_or(text)))
        }
        "rsplit" => {
            let (sep, maxsplit): (Option<Value>, Option<Value>) = from_args(args)?;
            let maxsplit = integer(maxsplit, -1, "rsplit's maxsplit")?;
            let parts: Vec<&str> = match sep.filter(|s| !s.is_none()) {
                None => rsplit_whitespace(text, maxsplit),
                Some(sep) => {
                    let sep = sep
                        .as_str()
                        .ok_or_else(|| wrong("rsplit's separator must be text"))?;
                    if sep.is_empty() {
                        return Err(wrong("empty separator"));
                    }
                    match usize::try_from(maxsplit) {
                        Ok(n) => {
                            let mut parts: Vec<&str> =
                                text.rsplitn(n.saturating_add(1), sep).collect();
                            parts.reverse();
                            parts
                        }
                        Err(_) => text.split(sep).collect(),
                    }
                }
            };
            Ok(parts.into_iter().map(Value::from).collect())
        }
        _ => {
            let (width, fill): (Value, Option<Value>) = from_args(args)?;
            let width = integer(Some(width), 0, &format!("{method}'s width"))?;
            let fill = match fill {
                None if method == "zfill" => '0',
                None => ' ',
                Some(fill) => {
                    let mut chars = fill.as_str().map(str::chars).into_iter().flatten();
                    match (chars.next(), chars.next(), method) {
                        (Some(c), None, "ljust" | "rjust" | "center") => c,
                        (_, _, "zfill") => return Err(wrong("zfill takes one argument")),
                        _ => {
                            return Err(wrong(
                                "The fill character must be exactly one character long",
                            ));
                        }
                    }
                }
            };
            let pad = match method {
                "ljust" => Pad::Right,
                "rjust" => Pad::Left,
                "center" => Pad::Centre,
                _ => Pad::Zeros,
            };
            Ok(Value::from(padded(state, text, width, fill, pad)?))
        }
    }
}

/// Python's `str.rsplit(None, maxsplit)`: runs of whitespace split, from the right, at most
/// `maxsplit` times (all when negative); the rest keeps its leading whitespace.
fn rsplit_whitespace(text: &str, maxsplit: i128) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut rest = text.trim_end();
    while !rest.is_empty() && (maxsplit < 0 || (parts.len() as i128) < maxsplit) {
        match rest.rfind(char::is_whitespace) {
            Some(at) => {
                let space = rest[at..].chars().next().map_or(1, char::len_utf8);
                parts.push(&rest[at + space..]);
                rest = rest[..at].trim_end();
            }
            None => {
                parts.push(rest);
                rest = "";
            }
        }
    }
    if !rest.is_empty() {
        parts.push(rest);
    }
    parts.reverse();
    parts
}

/// Where [`padded`] puts the fill.
enum Pad {
    /// `str.ljust`.
    Right,
    /// `str.rjust`.
    Left,
    /// `str.center`: an odd margin's extra fill goes left when the width is odd.
    Centre,
    /// `str.zfill`: zeros after a leading sign.
    Zeros,
}

/// `text` padded to `width` characters as Python's str methods pad it. The padding is charged
/// to the rendering's fuel before it is made, so `center(10**9)` runs out of steps instead of
/// allocating a gigabyte.
fn padded(state: &State, text: &str, width: i128, fill: char, pad: Pad) -> Result<String, Error> {
    let margin = width - text.chars().count() as i128;
    if margin <= 0 {
        return Ok(text.to_owned());
    }
    state.consume_fuel(u64::try_from(margin / 64).unwrap_or(u64::MAX))?;
    let fill_n =
        |n: i128| std::iter::repeat_n(fill, usize::try_from(n).unwrap_or(0)).collect::<String>();
    Ok(match pad {
        Pad::Right => format!("{text}{}", fill_n(margin)),
        Pad::Left => format!("{}{text}", fill_n(margin)),
        Pad::Centre => {
            let left = margin / 2 + (margin & width & 1);
            format!("{}{text}{}", fill_n(left), fill_n(margin - left))
        }
        Pad::Zeros => match text.strip_prefix(['+', '-']) {
            Some(digits) => format!("{}{}{digits}", &text[..1], fill_n(margin)),
            None => format!("{}{text}", fill_n(margin)),
        },
    })
}

/// minijinja's `escape`, `urlencode`, `tojson`, `pprint`, `indent` and `join`, and the printing of
/// a list, turn an undefined name into "" (or `null`, `undefined`) even when printing one is an
/// error; Jinja2 refuses most of them. Without this, `{{ pod_name | urlencode }}` would give a
/// token without a pod an empty path segment (`b/shop//*`).
fn refuse_undefined_in_filters(env: &mut Environment<'static>) {
    // As Jinja2's (markupsafe): minijinja writes `/` as `&#x2f;`, `'` as `&#x27;` and `"` as
    // `&quot;`, the same characters to a browser but other text in a policy.
    let escape = |value: &Value| {
        defined(value)?;
        if value.is_safe() {
            return Ok(value.clone());
        }
        Ok::<_, Error>(Value::from_safe_string(html_escape(&value.to_string())))
    };
    env.add_filter("escape", escape);
    env.add_filter("e", escape);
    env.add_filter("urlencode", jinja2_urlencode);
    env.add_filter(
        "tojson",
        |value: &Value, indent: Option<Value>, kwargs: Kwargs| {
            defined(value)?;
            filters::tojson(value, indent, kwargs)
        },
    );
    env.add_filter("pprint", |value: &Value| {
        defined(value)?;
        Ok::<_, Error>(filters::pprint(value))
    });
    // minijinja's own `indent` and `join` take a type it does not export, so they are called as
    // function values, with their arguments as given (keywords too).
    let indent = Value::from_function(filters::indent);
    env.add_filter(
        "indent",
        move |state: &mut State, args: Rest<ValueOrKwargs>| {
            let args = args.into_values();
            defined(args.first().unwrap_or(&Value::UNDEFINED))?;
            indent.call(state, &args)
        },
    );
    // `[namespace, pod_name] | join('/')` would give `shop/` without a pod.
    let join = Value::from_function(filters::join);
    env.add_filter(
        "join",
        move |state: &mut State, args: Rest<ValueOrKwargs>| {
            let args = args.into_values();
            // The list's items, and the separator even for an empty list (Jinja2 prints it into
            // a string first).
            args.iter().try_for_each(defined)?;
            join.call(state, &args)
        },
    );
    // `{{ [pod_name] }}` would print `[undefined]`.
    env.set_formatter(|out, state, value| {
        if holds_undefined(value) {
            return Err(Error::new(
                ErrorKind::UndefinedError,
                "an undefined name inside a printed list or mapping",
            ));
        }
        minijinja::escape_formatter(out, state, value)
    });
}

/// Text as markupsafe's `escape` writes it.
fn html_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '\'' => escaped.push_str("&#39;"),
            '"' => escaped.push_str("&#34;"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// Jinja2's `truncate`, `center`, `wordcount` and `forceescape`, which minijinja lacks
/// (minijinja-contrib's `truncate` takes keywords only and gives "" for an undefined name).
fn missing_text_filters(env: &mut Environment<'static>) {
    env.add_filter("truncate", truncate);
    env.add_filter(
        "center",
        |state: &State, value: &Value, width: Option<Value>| {
            defined(value)?;
            let width = integer(width, 80, "center's width")?;
            let centred = padded(state, &value.to_string(), width, ' ', Pad::Centre)?;
            Ok::<_, Error>(value_like(value, centred))
        },
    );
    env.add_filter("wordcount", |value: &Value| {
        defined(value)?;
        // Python's `\w+` runs: letters, digits and `_`.
        let word = |c: char| c.is_alphanumeric() || c == '_';
        let text = value.to_string();
        let starts = text
            .chars()
            .scan(false, |in_word, c| {
                let start = word(c) && !*in_word;
                *in_word = word(c);
                Some(start)
            })
            .filter(|start| *start)
            .count();
        Ok::<_, Error>(Value::from(starts))
    });
    env.add_filter("forceescape", |value: &Value| {
        defined(value)?;
        Ok::<_, Error>(Value::from_safe_string(html_escape(&value.to_string())))
    });
}

/// `text` as safe text if `like` is (markupsafe's methods keep a `Markup` one), else plain.
fn value_like(like: &Value, text: String) -> Value {
    if like.is_safe() {
        Value::from_safe_string(text)
    } else {
        Value::from(text)
    }
}

/// An integer argument (Python's `int`, `bool` among them), or `default` when not given.
fn integer(arg: Option<Value>, default: i128, what: &str) -> Result<i128, Error> {
    let Some(arg) = arg else {
        return Ok(default);
    };
    defined(&arg)?;
    if arg.kind() == ValueKind::Bool {
        return Ok(i128::from(arg.is_true()));
    }
    match i128::try_from(arg.clone()) {
        Ok(n) if arg.is_integer() => Ok(n),
        _ => Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("{what} must be an integer, not {arg}"),
        )),
    }
}

/// Jinja2's `truncate(s, length=255, killwords=False, end='...', leeway=None)`: text longer
/// than `length + leeway` (leeway 5) characters is cut to `length` with `end`, at the last space
/// unless `killwords`. A list or mapping that short is kept, as Jinja2 keeps it.
fn truncate(value: &Value, args: Rest<ValueOrKwargs>) -> Result<Value, Error> {
    defined(value)?;
    let args = args.into_values();
    let (positional, kwargs) = from_args::<(&[Value], Kwargs)>(&args)?;
    let names = ["length", "killwords", "end", "leeway"];
    if positional.len() > names.len() {
        return Err(Error::new(
            ErrorKind::TooManyArguments,
            "truncate takes at most 4 arguments",
        ));
    }
    let mut bound: [Option<Value>; 4] = Default::default();
    for (at, name) in names.iter().enumerate() {
        bound[at] = match (positional.get(at), kwargs.get::<Option<Value>>(name)?) {
            (Some(_), Some(_)) => {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!("truncate got two values for {name}"),
                ));
            }
            (given, keyword) => given.cloned().or(keyword),
        };
    }
    kwargs.assert_all_used()?;
    let [length, killwords, end, leeway] = bound;
    let length = integer(length, 255, "truncate's length")?;
    let leeway = integer(leeway, 5, "truncate's leeway")?;
    let end = match end {
        None => "...".to_owned(),
        Some(end) => {
            defined(&end)?;
            end.as_str().map(str::to_owned).ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidOperation,
                    format!("truncate's end must be text, not {end}"),
                )
            })?
        }
    };
    let end_chars = end.chars().count() as i128;
    let wrong = |what: String| Error::new(ErrorKind::InvalidOperation, what);
    if length < end_chars {
        return Err(wrong(format!(
            "expected length >= {end_chars}, got {length}"
        )));
    }
    if leeway < 0 {
        return Err(wrong(format!("expected leeway >= 0, got {leeway}")));
    }
    let size = match value.kind() {
        ValueKind::String => value.to_string().chars().count(),
        ValueKind::Seq | ValueKind::Map => value.len().unwrap_or(0),
        _ => return Err(wrong(format!("truncate takes text, not {value}"))),
    };
    if size as i128 <= length + leeway {
        return Ok(value.clone());
    }
    let Some(text) = value.as_str() else {
        return Err(wrong(format!(
            "truncate cannot cut a list or mapping of {size} items"
        )));
    };
    let kept: String = text
        .chars()
        .take(usize::try_from(length - end_chars).unwrap_or(0))
        .collect();
    let kept = match killwords.is_some_and(|k| k.is_true()) {
        true => kept.as_str(),
        false => kept
            .rsplit_once(' ')
            .map_or(kept.as_str(), |(head, _)| head),
    };
    // Markup + text escapes the text.
    let end = if value.is_safe() {
        html_escape(&end)
    } else {
        end
    };
    Ok(value_like(value, format!("{kept}{end}")))
}

/// Whether a list or mapping holds an undefined value, at any depth (a template's values are
/// finite and nested no deeper than its source).
fn holds_undefined(value: &Value) -> bool {
    let nested = |v: &Value| v.is_undefined() || holds_undefined(v);
    match value.kind() {
        ValueKind::Seq | ValueKind::Iterable => value
            .try_iter()
            .is_ok_and(|mut items| items.any(|v| nested(&v))),
        ValueKind::Map => value
            .try_iter()
            .is_ok_and(|mut keys| keys.any(|k| value.get_item(&k).is_ok_and(|v| nested(&v)))),
        _ => false,
    }
}

/// Jinja2's `urlencode`: text quoted as Python's `urllib.parse.quote` does (`/` kept), a mapping
/// or a list of pairs as a query string (`a=b+c&d=e`). minijinja's writes a space in a query as
/// `%20` and quotes a list's printed form.
fn jinja2_urlencode(value: &Value) -> Result<String, Error> {
    fn quote(text: &str, query: bool) -> String {
        let mut quoted = String::new();
        for b in text.bytes() {
            match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-' | b'~' => {
                    quoted.push(char::from(b))
                }
                b'/' if !query => quoted.push('/'),
                b' ' if query => quoted.push('+'),
                _ => quoted.push_str(&format!("%{b:02X}")),
            }
        }
        quoted
    }
    let pair = |key: Value, value: Value| {
        format!(
            "{}={}",
            quote(&key.to_string(), true),
            quote(&value.to_string(), true)
        )
    };
    let wrong = |what: &str| Error::new(ErrorKind::InvalidOperation, what.to_owned());
    defined(value)?;
    match value.kind() {
        ValueKind::Map => {
            let mut pairs = Vec::new();
            for key in value.try_iter()? {
                let item = value.get_item(&key)?;
                pairs.push(pair(key, item));
            }
            Ok(pairs.join("&"))
        }
        ValueKind::Seq | ValueKind::Iterable => {
            let mut pairs = Vec::new();
            for item in value.try_iter()? {
                let mut parts = item
                    .try_iter()
                    .map_err(|_| wrong("urlencode takes pairs"))?;
                match (parts.next(), parts.next(), parts.next()) {
                    (Some(key), Some(value), None) => pairs.push(pair(key, value)),
                    _ => return Err(wrong("urlencode takes pairs")),
                }
            }
            Ok(pairs.join("&"))
        }
        _ => Ok(quote(&value.to_string(), false)),
    }
}
