//! RFC 6902 patch building: per-field `add` operations only, arrays created when absent,
//! every path segment JSON-pointer escaped. The patch is written as JSON text as it is built,
//! from values that were rendered once (see `mutate::Injector`): no intermediate JSON tree, no
//! re-validation, one buffer per admission.

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::value::RawValue;

/// A JSON pointer built from unescaped segments (each one is escaped on the way in).
pub fn pointer<'a>(segments: impl IntoIterator<Item = Seg<'a>>) -> String {
    let mut p = String::with_capacity(64);
    for s in segments {
        p.push('/');
        match s {
            Seg::Key(k) if !k.contains(['~', '/']) => p.push_str(k),
            Seg::Key(k) => {
                for ch in k.chars() {
                    match ch {
                        '~' => p.push_str("~0"),
                        '/' => p.push_str("~1"),
                        c => p.push(c),
                    }
                }
            }
            Seg::Index(i) => {
                // Writing to a String cannot fail.
                let _ = write!(p, "{i}");
            }
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

/// A value that writes itself as JSON text; what it writes must be one valid JSON value.
pub trait WriteJson {
    /// Append the JSON text to `out`.
    fn write_json(&self, out: &mut Vec<u8>);
}

impl WriteJson for RawValue {
    fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.get().as_bytes());
    }
}

/// A JSON string.
impl WriteJson for str {
    fn write_json(&self, out: &mut Vec<u8>) {
        // Writing a string to a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, self);
    }
}

impl<T: WriteJson + ?Sized> WriteJson for &T {
    fn write_json(&self, out: &mut Vec<u8>) {
        (**self).write_json(out);
    }
}

/// An RFC 6902 JSON patch of `add` operations, kept as its JSON text (an array).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Patch {
    json: Vec<u8>,
    ops: usize,
}

impl Default for Patch {
    fn default() -> Self {
        Patch {
            json: b"[]".to_vec(),
            ops: 0,
        }
    }
}

impl Patch {
    /// Whether the patch changes nothing.
    pub fn is_empty(&self) -> bool {
        self.ops == 0
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.ops
    }

    /// The patch as JSON text.
    pub fn as_bytes(&self) -> &[u8] {
        &self.json
    }

    /// The same patch as the `json_patch` crate's type, e.g. to apply it to a document.
    pub fn to_json_patch(&self) -> Result<json_patch::Patch, serde_json::Error> {
        serde_json::from_slice(&self.json)
    }
}

impl Serialize for Patch {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let raw: Box<RawValue> =
            serde_json::from_slice(&self.json).map_err(serde::ser::Error::custom)?;
        raw.serialize(s)
    }
}

/// Largest patch the webhook answers with.
///
/// The patch of a real pod is some hundreds of bytes per container, so this is a pod of over a
/// thousand containers. It bounds the memory of one admission: without it, a 3 MiB review of
/// 170,000 minimal init containers made a 120 MB patch.
pub const MAX_PATCH_BYTES: usize = 512 * 1024;

/// Accumulates `add` operations in application order, as JSON text.
#[derive(Debug)]
pub struct PatchBuilder {
    json: Vec<u8>,
    ops: usize,
    /// Set when an operation would have taken the patch past [`MAX_PATCH_BYTES`]; nothing is
    /// written from then on.
    overflowed: bool,
}

impl Default for PatchBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl PatchBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        PatchBuilder {
            json: Vec::with_capacity(4096),
            ops: 0,
            overflowed: false,
        }
    }

    /// `add` a value at a path.
    pub fn add(&mut self, path: &str, value: &impl WriteJson) {
        if self.overflowed {
            return;
        }
        let start = self.json.len();
        self.json.push(if self.ops == 0 { b'[' } else { b',' });
        self.json.extend_from_slice(br#"{"op":"add","path":"#);
        // A path is a plain string: this cannot fail.
        let _ = serde_json::to_writer(&mut self.json, path);
        self.json.extend_from_slice(br#","value":"#);
        value.write_json(&mut self.json);
        self.json.push(b'}');
        // Room for the closing `]`.
        if self.json.len() >= MAX_PATCH_BYTES {
            self.json.truncate(start);
            self.overflowed = true;
            return;
        }
        self.ops += 1;
    }

    /// Whether an operation was left out because the patch would have passed
    /// [`MAX_PATCH_BYTES`]: the patch is incomplete and must not be answered with.
    pub fn overflowed(&self) -> bool {
        self.overflowed
    }

    /// Append items to the array at `array`; when the array does not exist yet, create it with
    /// all items at once (RFC 6902 cannot append to a missing array).
    pub fn append<T: WriteJson>(&mut self, array: &[Seg<'_>], exists: bool, items: &[T]) {
        if items.is_empty() {
            return;
        }
        if exists {
            let path = pointer(array.iter().copied().chain([Seg::End]));
            for item in items {
                self.add(&path, item);
            }
        } else {
            self.add(&pointer(array.iter().copied()), &JsonArray(items));
        }
    }

    /// Insert one item at `index` of the array at `array` (at most its length), creating the
    /// array if needed (then `index` can only be 0).
    pub fn insert(&mut self, array: &[Seg<'_>], exists: bool, index: usize, item: &impl WriteJson) {
        if exists {
            self.add(
                &pointer(array.iter().copied().chain([Seg::Index(index)])),
                item,
            );
        } else {
            self.add(&pointer(array.iter().copied()), &JsonArray(&[item]));
        }
    }

    /// Number of operations so far.
    pub fn len(&self) -> usize {
        self.ops
    }

    /// Whether no operation was added.
    pub fn is_empty(&self) -> bool {
        self.ops == 0
    }

    /// The finished patch.
    pub fn build(mut self) -> Patch {
        if self.ops == 0 {
            return Patch::default();
        }
        self.json.push(b']');
        Patch {
            json: self.json,
            ops: self.ops,
        }
    }
}

/// Items written as one JSON array.
struct JsonArray<'a, T>(&'a [T]);

impl<T: WriteJson> WriteJson for JsonArray<'_, T> {
    fn write_json(&self, out: &mut Vec<u8>) {
        out.push(b'[');
        for (i, item) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            item.write_json(out);
        }
        out.push(b']');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn raw(v: serde_json::Value) -> Box<RawValue> {
        serde_json::value::to_raw_value(&v).expect("renders")
    }

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
        let (one, two, three, four) = (raw(json!(1)), raw(json!(2)), raw(json!(3)), raw(json!(4)));
        let five = raw(json!({"five": "\"5\""}));
        let mut b = PatchBuilder::new();
        b.append(
            &[Seg::Key("spec"), Seg::Key("volumes")],
            false,
            &[&*one, &*two],
        );
        b.append(
            &[Seg::Key("spec"), Seg::Key("containers")],
            true,
            &[&*three, &*four],
        );
        b.insert(
            &[Seg::Key("spec"), Seg::Key("initContainers")],
            true,
            0,
            &&*five,
        );
        b.insert(
            &[Seg::Key("spec"), Seg::Key("initContainers")],
            true,
            2,
            &&*two,
        );
        b.insert(&[Seg::Key("spec"), Seg::Key("a\"b")], false, 0, &&*one);
        b.append::<&RawValue>(&[Seg::Key("x")], true, &[]);
        assert_eq!(b.len(), 6);
        let patch = b.build();
        assert_eq!(patch.len(), 6);
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(patch.as_bytes()).expect("valid JSON"),
            json!([
                {"op": "add", "path": "/spec/volumes", "value": [1, 2]},
                {"op": "add", "path": "/spec/containers/-", "value": 3},
                {"op": "add", "path": "/spec/containers/-", "value": 4},
                {"op": "add", "path": "/spec/initContainers/0", "value": {"five": "\"5\""}},
                {"op": "add", "path": "/spec/initContainers/2", "value": 2},
                {"op": "add", "path": "/spec/a\"b", "value": [1]},
            ])
        );
        assert_eq!(
            serde_json::to_value(&patch).expect("serializes"),
            serde_json::from_slice::<serde_json::Value>(patch.as_bytes()).expect("valid JSON")
        );
        let mut doc = json!({"spec": {"containers": [0], "initContainers": [9]}});
        json_patch::patch(&mut doc, &patch.to_json_patch().expect("parses")).expect("applies");
        assert_eq!(
            doc,
            json!({"spec": {"containers": [0, 3, 4], "initContainers": [{"five": "\"5\""}, 9, 2],
                            "volumes": [1, 2], "a\"b": [1]}})
        );
    }

    #[test]
    fn an_empty_patch_is_an_empty_array() {
        let patch = PatchBuilder::new().build();
        assert!(patch.is_empty());
        assert_eq!(patch.as_bytes(), b"[]");
        assert_eq!(patch, Patch::default());
    }
}
