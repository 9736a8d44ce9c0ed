//! Helpers shared by the webhook's integration tests and its coverage-guided fuzz target
//! (`fuzz/`): the properties every patch must keep.

use k8s_openapi::api::core::v1::Pod;
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

/// The Kubernetes validation rules our patch could break.
pub fn valid_pod(v: &Value) -> Result<(), String> {
    let pod: Pod = serde_json::from_value(v.clone()).map_err(|e| format!("not a Pod: {e}"))?;
    let spec = pod.spec.ok_or("no spec")?;
    let volumes: Vec<String> = spec
        .volumes
        .unwrap_or_default()
        .into_iter()
        .map(|v| v.name)
        .collect();
    let mut uniq = volumes.clone();
    uniq.sort();
    uniq.dedup();
    if uniq.len() != volumes.len() {
        return Err(format!("duplicate volume names {volumes:?}"));
    }
    let all: Vec<_> = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .collect();
    let mut names: Vec<&str> = all.iter().map(|c| c.name.as_str()).collect();
    names.sort();
    let n = names.len();
    names.dedup();
    if names.len() != n {
        return Err("duplicate container names".into());
    }
    for c in all {
        let mut paths = Vec::new();
        for m in c.volume_mounts.iter().flatten() {
            if !volumes.contains(&m.name) && m.name.starts_with("tokenvend") {
                return Err(format!("{} mounts missing volume {}", c.name, m.name));
            }
            paths.push(m.mount_path.clone());
        }
        let k = paths.len();
        paths.sort();
        paths.dedup();
        if paths.len() != k {
            return Err(format!("{} has duplicate mount paths", c.name));
        }
    }
    Ok(())
}
