//! JSON specs as the original tool took them (`mkproc`, `mkwatch`, the
//! config file's tables), read through serde derives.
//!
//! [`Loose`] is a serde `Deserializer` over a `serde_json::Value` that
//! matches object keys to a struct's fields case-insensitively, with `_`
//! ignored (`numprocesses`, `num_processes` and `NumProcesses` are one
//! field), and that leaves `null` to each type to judge. Keys that match no
//! field reach the derive as written, so `deny_unknown_fields` names them as
//! the user typed them. Its [`Error`] remembers where in the document it
//! arose (`Sockets[0].Port`), so every message is one line naming the field.
//!
//! Leaf types ([`Text`], [`Count`], [`Seconds`], …) state what a field must
//! be ("a whole number ≥ 0"), for the messages.

use std::fmt;

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Deserializer, Expected, MapAccess, SeqAccess, Unexpected, Visitor,
};
use serde::{Deserialize, forward_to_deserialize_any};
use serde_json::{Map, Value};

/// Other spellings of fields, beyond case and `_`: (folded alias, field),
/// like `("cmd", "Path")`. The alias applies where that field exists.
pub type Aliases = &'static [(&'static str, &'static str)];

/// What a spec is and how it reads: for messages and for the seed's form.
#[derive(Debug, Clone, Copy)]
pub struct Kind {
    /// "process spec", "watch spec".
    pub what: &'static str,
    /// An example of the whole document, for messages.
    pub example: &'static str,
    /// Other spellings of fields.
    pub aliases: Aliases,
    /// Take text that does not start with `{` as the inside of an object
    /// (the seed README's example lost its braces), and a trailing comma
    /// before the closing brace.
    pub braceless: bool,
}

impl Kind {
    /// Parses the text of a spec into `T`: one line on any error.
    pub fn parse<T: DeserializeOwned>(&self, text: &str) -> Result<T, String> {
        self.read_object(self.object(text)?)
    }

    /// Reads `T` from a JSON object (the fields of a config-file table).
    pub fn read_object<T: DeserializeOwned>(&self, fields: Map<String, Value>) -> Result<T, String> {
        T::deserialize(Loose::new(Value::Object(fields), self.aliases)).map_err(|e| e.describe(self.what))
    }

    /// The JSON object in `text`.
    fn object(&self, text: &str) -> Result<Map<String, Value>, String> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(format!("no {} on stdin; give JSON like {}", self.what, self.example));
        }
        let wrapped = self.braceless && !trimmed.starts_with('{');
        let mut doc = if wrapped {
            format!("{{{text}\n}}")
        } else {
            text.to_string()
        };
        if self.braceless {
            drop_trailing_comma(&mut doc);
        }
        let value: Value = serde_json::from_str(&doc).map_err(|e| {
            let (line, mut column) = (e.line(), e.column());
            if wrapped && line == 1 {
                column = column.saturating_sub(1).max(1);
            }
            let full = e.to_string();
            let msg = full
                .strip_suffix(&format!(" at line {} column {}", e.line(), e.column()))
                .unwrap_or(&full);
            format!("invalid JSON on stdin at line {line} column {column}: {msg}")
        })?;
        match value {
            Value::Object(m) => Ok(m),
            _ => Err(format!(
                "the {} must be a JSON object, like {}",
                self.what, self.example
            )),
        }
    }
}

/// `{ "a": 1, }` → `{ "a": 1 }`: only the comma right before the final brace.
fn drop_trailing_comma(doc: &mut String) {
    let body = doc.trim_end();
    let Some(inner) = body.strip_suffix('}') else {
        return;
    };
    let before = inner.trim_end();
    if before.ends_with(',') {
        let at = before.len() - 1;
        doc.remove(at);
    }
}

/// A key folded for matching: lower case, without `_`.
fn fold(s: &str) -> String {
    s.chars().filter(|&c| c != '_').flat_map(char::to_lowercase).collect()
}

/// The field of `fields` that `key` names, if any.
fn field_for(key: &str, fields: &'static [&'static str], aliases: Aliases) -> Option<&'static str> {
    let k = fold(key);
    fields.iter().copied().find(|f| fold(f) == k).or_else(|| {
        aliases
            .iter()
            .find(|(a, f)| *a == k && fields.contains(f))
            .map(|(_, f)| *f)
    })
}

/// One step of the way to a value: an object key (as written) or a list index.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Key(String),
    Index(usize),
}

/// What went wrong.
#[derive(Debug, Clone, PartialEq)]
enum Problem {
    /// A value of the wrong type or range.
    Must { expected: String, got: Option<String> },
    /// A key that names no field.
    Unknown {
        key: String,
        known: &'static [&'static str],
    },
    /// Anything else serde reports (a duplicate field).
    Other(String),
}

/// An error in a spec, with where it arose.
#[derive(Debug, Clone, PartialEq)]
pub struct Error {
    at: Vec<Step>,
    problem: Problem,
}

impl Error {
    /// Adds the step to the value that failed, from the outside; the first
    /// one added also shows the value itself.
    fn within(mut self, step: Step, value: &Value) -> Error {
        if self.at.is_empty()
            && let Problem::Must { got: got @ None, .. } = &mut self.problem
        {
            *got = Some(value.to_string());
        }
        self.at.insert(0, step);
        self
    }

    /// `Flapping.Attempts`, `Sockets[0].Port`.
    fn path(&self) -> String {
        let mut s = String::new();
        for step in &self.at {
            match step {
                Step::Key(k) if s.is_empty() => s.push_str(k),
                Step::Key(k) => {
                    s.push('.');
                    s.push_str(k);
                }
                Step::Index(i) => s.push_str(&format!("[{i}]")),
            }
        }
        s
    }

    /// The one-line message, for a document that is a `what`.
    pub fn describe(&self, what: &str) -> String {
        let path = self.path();
        match &self.problem {
            Problem::Must { expected, got } => {
                let got = got.as_deref().map(|g| format!(", not {g}")).unwrap_or_default();
                if path.is_empty() {
                    format!("the {what} must be {expected}{got}")
                } else {
                    format!("field {path:?} of the {what} must be {expected}{got}")
                }
            }
            Problem::Unknown { key, known } => {
                let known = known.join(", ");
                if path.is_empty() {
                    format!("unknown field {key:?} in the {what}; known: {known}")
                } else {
                    format!("unknown field {key:?} in the {what}'s {path:?}; known: {known}")
                }
            }
            Problem::Other(msg) if path.is_empty() => format!("{msg} in the {what}"),
            Problem::Other(msg) => format!("field {path:?} of the {what}: {msg}"),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe("spec"))
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error {
            at: Vec::new(),
            problem: Problem::Other(msg.to_string()),
        }
    }

    fn invalid_type(_: Unexpected, expected: &dyn Expected) -> Self {
        Error {
            at: Vec::new(),
            problem: Problem::Must {
                expected: expected.to_string(),
                got: None,
            },
        }
    }

    fn invalid_value(unexpected: Unexpected, expected: &dyn Expected) -> Self {
        Self::invalid_type(unexpected, expected)
    }

    fn unknown_field(key: &str, known: &'static [&'static str]) -> Self {
        Error {
            at: Vec::new(),
            problem: Problem::Unknown {
                key: key.to_string(),
                known,
            },
        }
    }
}

/// The deserializer: a JSON value whose object keys match struct fields
/// loosely. `null` is a value like any other (an `Option` field is `None`
/// only when its key is absent); a struct, list or map that is `null` is
/// empty.
pub struct Loose {
    value: Value,
    aliases: Aliases,
}

impl Loose {
    /// Reads `value`, with `aliases` for fields.
    pub fn new(value: Value, aliases: Aliases) -> Loose {
        Loose { value, aliases }
    }
}

impl<'de> Deserializer<'de> for Loose {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.value {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(b),
            Value::Number(n) => match (n.as_u64(), n.as_i64()) {
                (Some(u), _) => visitor.visit_u64(u),
                (None, Some(i)) => visitor.visit_i64(i),
                _ => visitor.visit_f64(n.as_f64().unwrap_or(f64::NAN)),
            },
            Value::String(s) => visitor.visit_string(s),
            Value::Array(items) => visitor.visit_seq(Items::new(items, self.aliases)),
            Value::Object(m) => visitor.visit_map(Entries::new(m, None, self.aliases)),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _: &'static str, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.value {
            Value::Object(m) => visitor.visit_map(Entries::new(m, Some(fields), self.aliases)),
            Value::Null => visitor.visit_map(Entries::new(Map::new(), Some(fields), self.aliases)),
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.value {
            Value::Null => visitor.visit_seq(Items::new(Vec::new(), self.aliases)),
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.value {
            Value::Null => visitor.visit_map(Entries::new(Map::new(), None, self.aliases)),
            _ => self.deserialize_any(visitor),
        }
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct tuple tuple_struct enum identifier ignored_any
    }
}

/// The items of a list.
struct Items {
    items: std::vec::IntoIter<Value>,
    index: usize,
    aliases: Aliases,
}

impl Items {
    fn new(items: Vec<Value>, aliases: Aliases) -> Items {
        Items {
            items: items.into_iter(),
            index: 0,
            aliases,
        }
    }
}

impl<'de> SeqAccess<'de> for Items {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, Error> {
        let Some(value) = self.items.next() else {
            return Ok(None);
        };
        let (i, shown) = (self.index, value.clone());
        self.index += 1;
        seed.deserialize(Loose::new(value, self.aliases))
            .map(Some)
            .map_err(|e| e.within(Step::Index(i), &shown))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

/// The entries of an object; with `fields`, keys are matched to them.
struct Entries {
    entries: serde_json::map::IntoIter,
    fields: Option<&'static [&'static str]>,
    aliases: Aliases,
    pending: Option<(String, Value)>,
}

impl Entries {
    fn new(m: Map<String, Value>, fields: Option<&'static [&'static str]>, aliases: Aliases) -> Entries {
        Entries {
            entries: m.into_iter(),
            fields,
            aliases,
            pending: None,
        }
    }
}

impl<'de> MapAccess<'de> for Entries {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Error> {
        let Some((key, value)) = self.entries.next() else {
            return Ok(None);
        };
        let name = match self.fields.and_then(|f| field_for(&key, f, self.aliases)) {
            Some(field) => field.to_string(),
            None => key.clone(),
        };
        self.pending = Some((key, value));
        seed.deserialize(de::value::StringDeserializer::<Error>::new(name))
            .map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let Some((key, value)) = self.pending.take() else {
            return Err(de::Error::custom("a value without its key"));
        };
        let shown = value.clone();
        seed.deserialize(Loose::new(value, self.aliases))
            .map_err(|e| e.within(Step::Key(key), &shown))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

/// Declares a leaf type: a newtype read from any JSON value by `accept`,
/// which answers `None` for a value that is not what `expected` says.
macro_rules! leaf {
    ($(#[$doc:meta])* $name:ident($t:ty), $expected:expr, $accept:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Default, PartialEq)]
        pub struct $name(pub $t);

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let accept: fn(Value) -> Option<$t> = $accept;
                accept(Value::deserialize(d)?)
                    .map($name)
                    .ok_or_else(|| de::Error::invalid_type(Unexpected::Other("that"), &$expected))
            }
        }
    };
}

fn all_strings(items: Vec<Value>) -> Option<Vec<String>> {
    items
        .into_iter()
        .map(|v| match v {
            Value::String(s) => Some(s),
            _ => None,
        })
        .collect()
}

leaf!(
    /// A string; `null` is empty.
    Text(String),
    "a string",
    |v| match v {
        Value::Null => Some(String::new()),
        Value::String(s) => Some(s),
        _ => None,
    }
);

leaf!(
    /// A list of strings; `null` is empty.
    Strings(Vec<String>),
    "a list of strings",
    |v| match v {
        Value::Null => Some(Vec::new()),
        Value::Array(items) => all_strings(items),
        _ => None,
    }
);

leaf!(
    /// `true` or `false`.
    Flag(bool),
    "true or false",
    |v| v.as_bool()
);

leaf!(
    /// `true` or `false`; `null` is false.
    FlagOrNull(bool),
    "true or false",
    |v| if v.is_null() { Some(false) } else { v.as_bool() }
);

leaf!(
    /// A count: a whole number ≥ 0 that fits 32 bits.
    Count(u32),
    "a whole number ≥ 0",
    |v| v.as_u64().and_then(|n| u32::try_from(n).ok())
);

leaf!(
    /// A size: a whole number ≥ 0.
    Bytes(u64),
    "a whole number ≥ 0",
    |v| v.as_u64()
);

leaf!(
    /// A size: a whole number ≥ 0; `null` is 0.
    BytesOrNull(u64),
    "a whole number ≥ 0",
    |v| if v.is_null() { Some(0) } else { v.as_u64() }
);

leaf!(
    /// A size that is not 0.
    NonZeroBytes(u64),
    "a number of bytes > 0",
    |v| v.as_u64().filter(|&n| n > 0)
);

leaf!(
    /// A duration in seconds: finite, ≥ 0, under 10⁹.
    Seconds(f64),
    "a number of seconds ≥ 0",
    |v| v.as_f64().filter(|s| *s >= 0.0 && s.is_finite() && *s < 1e9)
);

leaf!(
    /// A TCP port.
    Port(u16),
    "a port number from 0 to 65535",
    |v| v.as_u64().and_then(|n| u16::try_from(n).ok())
);

leaf!(
    /// A user or group: a name or a number; `null` is empty (the server's).
    Ident(String),
    "a name or a number",
    |v| match v {
        Value::Null => Some(String::new()),
        Value::String(s) => Some(s),
        Value::Number(n) if n.as_u64().is_some_and(|n| n <= u32::MAX as u64) => Some(n.to_string()),
        _ => None,
    }
);

leaf!(
    /// A signal: a name or a number (checked by the server).
    SignalName(String),
    "a signal like \"TERM\" or 15",
    |v| match v {
        Value::String(s) => Some(s),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
);

leaf!(
    /// A command line (argv); `null` is none.
    Command(Vec<String>),
    "a command like [\"/bin/sh\", \"-c\", \"…\"]",
    |v| match v {
        Value::Null => Some(Vec::new()),
        Value::Array(items) if !items.is_empty() => all_strings(items),
        _ => None,
    }
);

leaf!(
    /// A file path, not empty.
    FilePath(String),
    "a file path",
    |v| match v {
        Value::String(s) if !s.trim().is_empty() => Some(s),
        _ => None,
    }
);

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde_json::json;

    use super::*;

    #[derive(Deserialize, Debug, Default, PartialEq)]
    #[serde(default, deny_unknown_fields, rename_all = "PascalCase")]
    struct Inner {
        max_retry: Option<Count>,
    }

    #[derive(Deserialize, Debug, Default, PartialEq)]
    #[serde(default, deny_unknown_fields, rename_all = "PascalCase")]
    struct Doc {
        path: Text,
        num_processes: Option<Count>,
        inner: Inner,
        list: Vec<Inner>,
    }

    const KIND: Kind = Kind {
        what: "test spec",
        example: "{}",
        aliases: &[("cmd", "Path")],
        braceless: false,
    };

    fn doc(v: Value) -> Result<Doc, String> {
        let Value::Object(m) = v else { panic!() };
        KIND.read_object(m)
    }

    #[test]
    fn keys_match_fields_loosely() {
        let d = doc(json!({"PATH": "/x", "num_processes": 2, "inner": {"maxretry": 1}})).unwrap();
        assert_eq!(d.path.0, "/x");
        assert_eq!(d.num_processes, Some(Count(2)));
        assert_eq!(d.inner.max_retry, Some(Count(1)));
        assert_eq!(doc(json!({"Cmd": "/y"})).unwrap().path.0, "/y");
        // null: an empty string, an empty struct or list; a count refuses it.
        let d = doc(json!({"Path": null, "Inner": null, "List": null})).unwrap();
        assert_eq!(d, Doc::default());
        assert_eq!(
            doc(json!({"NumProcesses": null})).unwrap_err(),
            "field \"NumProcesses\" of the test spec must be a whole number ≥ 0, not null"
        );
    }

    #[test]
    fn errors_name_the_field_as_written() {
        assert_eq!(
            doc(json!({"Path": "/x", "Foo_Bar": 1})).unwrap_err(),
            "unknown field \"Foo_Bar\" in the test spec; known: Path, NumProcesses, Inner, List"
        );
        assert_eq!(
            doc(json!({"inner": {"Tries": 1}})).unwrap_err(),
            "unknown field \"Tries\" in the test spec's \"inner\"; known: MaxRetry"
        );
        assert_eq!(
            doc(json!({"list": [{}, {"max_retry": -1}]})).unwrap_err(),
            "field \"list[1].max_retry\" of the test spec must be a whole number ≥ 0, not -1"
        );
        assert_eq!(
            doc(json!({"Path": ["a"]})).unwrap_err(),
            "field \"Path\" of the test spec must be a string, not [\"a\"]"
        );
        let e = doc(json!({"Path": "a", "path": "b"})).unwrap_err();
        assert!(e.contains("duplicate field `Path`"), "{e}");
    }

    #[test]
    fn documents_read_as_the_seed_wrote_them() {
        let braceless = Kind {
            braceless: true,
            ..KIND
        };
        let d: Doc = braceless.parse("  \"Path\": \"/bin/ls\",\n").unwrap();
        assert_eq!(d.path.0, "/bin/ls");
        let d: Doc = braceless.parse("{\"Path\": \"/bin/ls\",\n}").unwrap();
        assert_eq!(d.path.0, "/bin/ls");
        assert!(KIND.parse::<Doc>("\"Path\": \"/bin/ls\"").is_err());
        let e = braceless.parse::<Doc>("\"Path\" \"/bin/ls\"").unwrap_err();
        assert!(e.starts_with("invalid JSON on stdin at line 1 column 8:"), "{e}");
        assert_eq!(
            KIND.parse::<Doc>("[1]").unwrap_err(),
            "the test spec must be a JSON object, like {}"
        );
        assert_eq!(
            KIND.parse::<Doc>(" \n").unwrap_err(),
            "no test spec on stdin; give JSON like {}"
        );
    }
}
