//! RFC 6902 patch building: per-field `add` operations only, arrays created when absent,
//! every path segment JSON-pointer escaped.

use json_patch::jsonptr::{PointerBuf, Token};
use json_patch::{AddOperation, Patch, PatchOperation};
use serde_json::Value;

/// A JSON pointer built from unescaped segments (each one is escaped on the way in).
pub fn pointer<'a>(segments: impl IntoIterator<Item = Seg<'a>>) -> PointerBuf {
    let mut p = PointerBuf::new();
    for s in segments {
        match s {
            Seg::Key(k) => p.push_back(Token::new(k)),
            Seg::Index(i) => p.push_back(i),
            Seg::End => p.push_back("-"),
        }
    }
    p
}

/// One segment of a JSON pointer.
#[derive(Debug, Clone, Copy)]
pub enum Seg<'a> {
    /// An object member name (escaped: `~` → `~0`, `/` → `~1`).
    Key(&'a str),
    /// An array index.
    Index(usize),
    /// The array end (`-`), for appending.
    End,
}

/// Accumulates `add` operations in application order.
#[derive(Debug, Default)]
pub struct PatchBuilder {
    ops: Vec<PatchOperation>,
}

impl PatchBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// `add` a value at a path.
    pub fn add(&mut self, path: PointerBuf, value: Value) {
        self.ops
            .push(PatchOperation::Add(AddOperation { path, value }));
    }

    /// Append items to the array at `array`; when the array does not exist yet, create it with
    /// all items at once (RFC 6902 cannot append to a missing array).
    pub fn append(&mut self, array: &[Seg<'_>], exists: bool, items: Vec<Value>) {
        if items.is_empty() {
            return;
        }
        if exists {
            for item in items {
                self.add(pointer(array.iter().copied().chain([Seg::End])), item);
            }
        } else {
            self.add(pointer(array.iter().copied()), Value::Array(items));
        }
    }

    /// Insert one item at the front of the array at `array`, creating the array if needed.
    pub fn prepend(&mut self, array: &[Seg<'_>], exists: bool, item: Value) {
        if exists {
            self.add(pointer(array.iter().copied().chain([Seg::Index(0)])), item);
        } else {
            self.add(pointer(array.iter().copied()), Value::Array(vec![item]));
        }
    }

    /// Number of operations so far.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether no operation was added.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The finished patch.
    pub fn build(self) -> Patch {
        Patch(self.ops)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn segments_are_escaped() {
        let p = pointer([
            Seg::Key("metadata"),
            Seg::Key("annotations"),
            Seg::Key("a.io/b~c"),
        ]);
        assert_eq!(p.as_str(), "/metadata/annotations/a.io~1b~0c");
        let p = pointer([
            Seg::Key("spec"),
            Seg::Key("containers"),
            Seg::Index(3),
            Seg::Key("env"),
            Seg::End,
        ]);
        assert_eq!(p.as_str(), "/spec/containers/3/env/-");
    }

    #[test]
    fn append_creates_missing_arrays_and_appends_to_existing_ones() {
        let mut b = PatchBuilder::new();
        b.append(
            &[Seg::Key("spec"), Seg::Key("volumes")],
            false,
            vec![json!(1), json!(2)],
        );
        b.append(
            &[Seg::Key("spec"), Seg::Key("containers")],
            true,
            vec![json!(3), json!(4)],
        );
        b.prepend(
            &[Seg::Key("spec"), Seg::Key("initContainers")],
            true,
            json!(5),
        );
        b.append(&[Seg::Key("x")], true, vec![]);
        let patch = serde_json::to_value(b.build()).expect("serialize");
        assert_eq!(
            patch,
            json!([
                {"op": "add", "path": "/spec/volumes", "value": [1, 2]},
                {"op": "add", "path": "/spec/containers/-", "value": 3},
                {"op": "add", "path": "/spec/containers/-", "value": 4},
                {"op": "add", "path": "/spec/initContainers/0", "value": 5},
            ])
        );
        let mut doc = json!({"spec": {"containers": [0], "initContainers": [9]}});
        let mut b = PatchBuilder::new();
        b.append(
            &[Seg::Key("spec"), Seg::Key("volumes")],
            false,
            vec![json!(1)],
        );
        b.append(
            &[Seg::Key("spec"), Seg::Key("containers")],
            true,
            vec![json!(3)],
        );
        b.prepend(
            &[Seg::Key("spec"), Seg::Key("initContainers")],
            true,
            json!(5),
        );
        json_patch::patch(&mut doc, &b.build()).expect("applies");
        assert_eq!(
            doc,
            json!({"spec": {"containers": [0, 3], "initContainers": [5, 9], "volumes": [1]}})
        );
    }
}
