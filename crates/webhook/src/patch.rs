//! RFC 6902 patch building: per-field `add` operations only, arrays created when absent,
//! every path segment JSON-pointer escaped. Values are rendered to JSON text once, straight from
//! the typed Kubernetes objects, and written into the patch verbatim (no intermediate JSON tree).

use serde::Serialize;
use serde::ser::SerializeStruct;
use serde_json::value::RawValue;

/// A JSON pointer built from unescaped segments (each one is escaped on the way in).
pub fn pointer<'a>(segments: impl IntoIterator<Item = Seg<'a>>) -> String {
    let mut p = String::new();
    for s in segments {
        p.push('/');
        match s {
            Seg::Key(k) => {
                for ch in k.chars() {
                    match ch {
                        '~' => p.push_str("~0"),
                        '/' => p.push_str("~1"),
                        c => p.push(c),
                    }
                }
            }
            Seg::Index(i) => p.push_str(&i.to_string()),
            Seg::End => p.push('-'),
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

/// One RFC 6902 `add` operation; its value is JSON text.
#[derive(Debug, Clone)]
pub struct AddOp {
    /// JSON pointer to the target location.
    pub path: String,
    /// The value to add.
    pub value: Box<RawValue>,
}

impl PartialEq for AddOp {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path && self.value.get() == other.value.get()
    }
}

impl Serialize for AddOp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut op = s.serialize_struct("AddOp", 3)?;
        op.serialize_field("op", "add")?;
        op.serialize_field("path", &self.path)?;
        op.serialize_field("value", &self.value)?;
        op.end()
    }
}

/// An RFC 6902 JSON patch made of `add` operations; serializes as the JSON array.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
#[serde(transparent)]
pub struct Patch(pub Vec<AddOp>);

impl Patch {
    /// The same patch as the `json_patch` crate's type, e.g. to apply it to a document.
    pub fn to_json_patch(&self) -> Result<json_patch::Patch, serde_json::Error> {
        serde_json::from_str(&serde_json::to_string(self)?)
    }
}

/// Accumulates `add` operations in application order.
#[derive(Debug, Default)]
pub struct PatchBuilder {
    ops: Vec<AddOp>,
    /// The first value that failed to render (k8s-openapi objects always render; a failure
    /// must still never turn into a wrong patch).
    error: Option<serde_json::Error>,
}

impl PatchBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// `add` a value at a path.
    pub fn add<T: Serialize + ?Sized>(&mut self, path: String, value: &T) {
        match serde_json::value::to_raw_value(value) {
            Ok(value) => self.ops.push(AddOp { path, value }),
            Err(e) => {
                self.error.get_or_insert(e);
            }
        }
    }

    /// Append items to the array at `array`; when the array does not exist yet, create it with
    /// all items at once (RFC 6902 cannot append to a missing array).
    pub fn append<T: Serialize>(&mut self, array: &[Seg<'_>], exists: bool, items: &[T]) {
        if items.is_empty() {
            return;
        }
        if exists {
            for item in items {
                self.add(pointer(array.iter().copied().chain([Seg::End])), item);
            }
        } else {
            self.add(pointer(array.iter().copied()), items);
        }
    }

    /// Insert one item at the front of the array at `array`, creating the array if needed.
    pub fn prepend<T: Serialize>(&mut self, array: &[Seg<'_>], exists: bool, item: &T) {
        if exists {
            self.add(pointer(array.iter().copied().chain([Seg::Index(0)])), item);
        } else {
            self.add(pointer(array.iter().copied()), &[item]);
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

    /// The finished patch, or the first rendering error.
    pub fn build(self) -> Result<Patch, serde_json::Error> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(Patch(self.ops)),
        }
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
        assert_eq!(p, "/metadata/annotations/a.io~1b~0c");
        let p = pointer([
            Seg::Key("spec"),
            Seg::Key("containers"),
            Seg::Index(3),
            Seg::Key("env"),
            Seg::End,
        ]);
        assert_eq!(p, "/spec/containers/3/env/-");
    }

    #[test]
    fn append_creates_missing_arrays_and_appends_to_existing_ones() {
        let mut b = PatchBuilder::new();
        b.append(&[Seg::Key("spec"), Seg::Key("volumes")], false, &[1, 2]);
        b.append(&[Seg::Key("spec"), Seg::Key("containers")], true, &[3, 4]);
        b.prepend(&[Seg::Key("spec"), Seg::Key("initContainers")], true, &5);
        b.prepend(&[Seg::Key("spec"), Seg::Key("ephemeral")], false, &"e");
        b.append::<i32>(&[Seg::Key("x")], true, &[]);
        assert_eq!(b.len(), 5);
        let patch = b.build().expect("renders");
        assert_eq!(
            serde_json::to_value(&patch).expect("serialize"),
            json!([
                {"op": "add", "path": "/spec/volumes", "value": [1, 2]},
                {"op": "add", "path": "/spec/containers/-", "value": 3},
                {"op": "add", "path": "/spec/containers/-", "value": 4},
                {"op": "add", "path": "/spec/initContainers/0", "value": 5},
                {"op": "add", "path": "/spec/ephemeral", "value": ["e"]},
            ])
        );
        let mut doc = json!({"spec": {"containers": [0], "initContainers": [9]}});
        json_patch::patch(&mut doc, &patch.to_json_patch().expect("parses")).expect("applies");
        assert_eq!(
            doc,
            json!({"spec": {"containers": [0, 3, 4], "initContainers": [5, 9],
                            "volumes": [1, 2], "ephemeral": ["e"]}})
        );
    }

    #[test]
    fn a_value_that_cannot_render_fails_the_build() {
        // JSON object keys must be strings: a map with tuple keys cannot render.
        let bad: std::collections::BTreeMap<(u8, u8), u8> = [((1, 2), 3)].into_iter().collect();
        let mut b = PatchBuilder::new();
        b.add(pointer([Seg::Key("a")]), &1);
        b.add(pointer([Seg::Key("b")]), &bad);
        assert!(b.build().is_err());
    }
}
