//! Helpers shared by the webhook's integration tests.

use serde_json::Value;

/// `old` is contained in `new`: objects keep every member, arrays keep every element in order
/// (possibly with others inserted), scalars are equal.
pub fn contained(old: &Value, new: &Value, at: &str) -> Result<(), String> {
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => o.iter().try_for_each(|(k, v)| match n.get(k) {
            Some(nv) => contained(v, nv, &format!("{at}/{k}")),
            None => Err(format!("{at}/{k} was removed")),
        }),
        (Value::Array(o), Value::Array(n)) => {
            let mut j = 0;
            for (i, v) in o.iter().enumerate() {
                loop {
                    let Some(nv) = n.get(j) else {
                        return Err(format!("{at}/{i} was changed or removed"));
                    };
                    j += 1;
                    if contained(v, nv, &format!("{at}/{i}")).is_ok() {
                        break;
                    }
                }
            }
            Ok(())
        }
        (o, n) if o == n => Ok(()),
        (o, n) => Err(format!("{at} changed from {o} to {n}")),
    }
}
