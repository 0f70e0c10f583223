//! The configuration as a tree of YAML values, before it is typed: the file (parsed by
//! `yaml-rust2`) with the `REGISTRY_*` environment overrides merged in, and a serde
//! [`Deserializer`] over it that the typed schema is read through.
//!
//! The deserializer is where Distribution's leniencies live, so the schema can use plain types:
//! - keys are case-insensitive (lowercased), except header names under `http.headers`;
//! - a scalar is a string wherever a string is wanted (`realm: 2024`), `yes`/`no`/`1`/`0` are
//!   booleans as well as `true`/`false` (environment values are always strings), and a scalar is
//!   a one-element list wherever a list is wanted (`repos: "*"`);
//! - `auth: htpasswd` (a section named by a scalar) means `auth: {htpasswd: {}}`.
//!
//! It also decides what happens to keys the schema does not have, from the field lists serde
//! derives: Distribution keys that mean nothing here are warned about as ignored, other unknown
//! keys as unknown (naming the config key and/or the `REGISTRY_*` variable they came from), and
//! unknown keys inside `auth` are errors (an authentication scheme pier does not have must not
//! be dropped silently: that would open the registry). Every error carries the dotted key it is
//! about.

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use yaml_rust2::Yaml;

/// Keys that exist in Distribution but mean nothing here: accepted with a warning.
const IGNORED: &[&str] = &[
    "storage.cache",
    "storage.redirect",
    "http.secret",
    "http.debug",
    "log.fields",
    "health",
    "notifications",
    "storage.maintenance.uploadpurging.dryrun",
    "http.http2",
];

const ONLY_HTPASSWD: &str = "only auth.htpasswd (realm, path, legacyhashes, upgradelegacy) is supported; token and silly authentication are not";

/// Sections where an unknown key is an error, with the reason.
const STRICT: &[(&str, &str)] = &[("auth", ONLY_HTPASSWD), ("auth.htpasswd", ONLY_HTPASSWD)];

/// Sections that a scalar may name instead of spelling out: `auth: htpasswd`.
const NAMED_BY_SCALAR: &[&str] = &["auth"];

/// Sections whose keys are data, not configuration keys: kept as written.
const CASE_KEPT: &[&str] = &["http.headers"];

/// A YAML value with string keys, in document order.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Node {
    Null,
    Bool(bool),
    Int(i64),
    /// A YAML float, as written.
    Real(String),
    Str(String),
    List(Vec<Node>),
    Map(Vec<(String, Node)>),
}

impl Node {
    /// Converts a parsed YAML value found at `path`; keys that are not scalars are reported in
    /// `warnings` and left out.
    pub(super) fn from_yaml(yaml: &Yaml, path: &str, warnings: &mut Vec<String>) -> Node {
        match yaml {
            Yaml::Null | Yaml::BadValue | Yaml::Alias(_) => Node::Null,
            Yaml::Boolean(b) => Node::Bool(*b),
            Yaml::Integer(i) => Node::Int(*i),
            Yaml::Real(s) => Node::Real(s.clone()),
            Yaml::String(s) => Node::Str(s.clone()),
            Yaml::Array(items) => Node::List(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| Node::from_yaml(v, &join(path, &i.to_string()), warnings))
                    .collect(),
            ),
            Yaml::Hash(map) => {
                let keep_case = CASE_KEPT.contains(&path);
                let mut entries: Vec<(String, Node)> = Vec::new();
                for (k, v) in map {
                    let name = match k {
                        Yaml::String(s) | Yaml::Real(s) => s.clone(),
                        Yaml::Integer(i) => i.to_string(),
                        Yaml::Boolean(b) => b.to_string(),
                        _ => {
                            let shown = if path.is_empty() { "the top level" } else { path };
                            warnings.push(format!("a key in {shown} is not a string or number; ignored"));
                            continue;
                        }
                    };
                    let name = if keep_case { name } else { name.to_ascii_lowercase() };
                    let value = Node::from_yaml(v, &join(path, &name), warnings);
                    match entries.iter_mut().find(|(k, _)| *k == name) {
                        Some(entry) => {
                            let key = join(path, &name);
                            warnings.push(format!(
                                "config key {key} is given more than once (keys are case-insensitive); the last one is used"
                            ));
                            entry.1 = value;
                        }
                        None => entries.push((name, value)),
                    }
                }
                Node::Map(entries).named_sections(path)
            }
        }
    }

    /// A tree holding `value` at the dotted `path`.
    pub(super) fn at_path(path: &str, value: Node) -> Node {
        let tree = path.rsplit('.').fold(value, |inner, key| Node::Map(vec![(key.to_string(), inner)]));
        tree.named_sections("")
    }

    /// Rewrites sections named by a scalar (`auth: htpasswd`) into mappings, below `path`.
    fn named_sections(self, path: &str) -> Node {
        let Node::Map(entries) = self else { return self };
        Node::Map(
            entries
                .into_iter()
                .map(|(k, v)| {
                    let here = join(path, &k);
                    let v = match v {
                        Node::Str(s) if NAMED_BY_SCALAR.contains(&here.as_str()) => {
                            Node::Map(vec![(s.to_ascii_lowercase(), Node::Map(Vec::new()))])
                        }
                        Node::Map(children) if NAMED_BY_SCALAR.contains(&here.as_str()) => Node::Map(
                            children
                                .into_iter()
                                .map(|(name, c)| (name, if c == Node::Null { Node::Map(Vec::new()) } else { c }))
                                .collect(),
                        ),
                        other => other.named_sections(&here),
                    };
                    (k, v)
                })
                .collect(),
        )
    }

    /// Merges `overlay` into `self`: mappings key by key, anything else replaced.
    pub(super) fn merge(&mut self, overlay: Node) {
        match (self, overlay) {
            (Node::Map(mine), Node::Map(theirs)) => {
                for (k, v) in theirs {
                    match mine.iter_mut().find(|(name, _)| *name == k) {
                        Some(entry) => entry.1.merge(v),
                        None => mine.push((k, v)),
                    }
                }
            }
            (me, other) => *me = other,
        }
    }

    /// The value at a dotted path.
    pub(super) fn get(&self, path: &str) -> Option<&Node> {
        path.split('.').try_fold(self, |node, key| match node {
            Node::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            Node::List(items) => key.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        })
    }

    fn describe(&self) -> String {
        match self {
            Node::Null => String::from("nothing"),
            Node::Bool(b) => b.to_string(),
            Node::Int(i) => i.to_string(),
            Node::Real(s) | Node::Str(s) => format!("{s:?}"),
            Node::List(_) => String::from("a list"),
            Node::Map(_) => String::from("a mapping"),
        }
    }

    fn scalar_text(&self) -> Option<String> {
        match self {
            Node::Bool(b) => Some(b.to_string()),
            Node::Int(i) => Some(i.to_string()),
            Node::Real(s) | Node::Str(s) => Some(s.clone()),
            Node::Null | Node::List(_) | Node::Map(_) => None,
        }
    }
}

pub(super) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// A problem with one key: its dotted path (empty until the deserializer places it).
#[derive(Debug)]
pub(super) struct KeyError {
    pub key: String,
    pub message: String,
}

impl KeyError {
    pub(super) fn new(key: &str, message: impl Into<String>) -> KeyError {
        KeyError { key: key.to_string(), message: message.into() }
    }

    /// Places an error raised below `key` without one (serde's own, or a leaf's).
    fn placed(mut self, key: &str) -> KeyError {
        if self.key.is_empty() {
            self.key = key.to_string();
        }
        self
    }
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

impl std::error::Error for KeyError {}

impl de::Error for KeyError {
    fn custom<T: fmt::Display>(msg: T) -> KeyError {
        KeyError { key: String::new(), message: msg.to_string() }
    }
}

/// Where the values of the tree came from, to name them in warnings.
pub(super) struct Origins<'a> {
    /// The file's own tree (`None` without a file).
    pub file: Option<&'a Node>,
    /// `(dotted path, variable name)` of every `REGISTRY_*` override.
    pub env: &'a [(String, String)],
    pub warnings: RefCell<Vec<String>>,
}

impl Origins<'_> {
    /// The `REGISTRY_*` variable that set `key` or a section around it, if any.
    pub(super) fn variable_for(&self, key: &str) -> Option<&str> {
        self.env
            .iter()
            .rev()
            .find(|(path, _)| key == path || key.strip_prefix(path.as_str()).is_some_and(|r| r.starts_with('.')))
            .map(|(_, var)| var.as_str())
    }

    /// A key the schema does not have, found at `key` in the section `section`.
    fn unknown(&self, section: &str, key: &str) -> Result<(), KeyError> {
        if let Some((_, why)) = STRICT.iter().find(|(s, _)| *s == section) {
            return Err(KeyError::new(key, *why));
        }
        let ignored = IGNORED.iter().any(|i| key == *i || key.strip_prefix(i).is_some_and(|r| r.starts_with('.')));
        let mut warnings = self.warnings.borrow_mut();
        if self.file.and_then(|f| f.get(key)).is_some() {
            warnings.push(if ignored {
                format!("config key {key} is not used by pier; ignored")
            } else {
                format!("unknown config key {key}; ignored")
            });
        }
        let below = |path: &str| path == key || path.strip_prefix(key).is_some_and(|r| r.starts_with('.'));
        for (_, var) in self.env.iter().filter(|(path, _)| below(path)) {
            warnings.push(if ignored {
                format!("environment variable {var} is not used by pier; ignored")
            } else {
                format!("unknown environment variable {var}; ignored")
            });
        }
        Ok(())
    }
}

/// Deserializes the node at `path`.
pub(super) struct NodeDeserializer<'a> {
    pub node: &'a Node,
    pub path: String,
    pub origins: &'a Origins<'a>,
}

impl<'a> NodeDeserializer<'a> {
    fn child(&self, node: &'a Node, key: &str) -> NodeDeserializer<'a> {
        NodeDeserializer { node, path: join(&self.path, key), origins: self.origins }
    }

    fn wrong(&self, expected: &str) -> KeyError {
        KeyError::new(&self.path, format!("expected {expected}, not {}", self.node.describe()))
    }
}

impl<'de> Deserializer<'de> for NodeDeserializer<'_> {
    type Error = KeyError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, KeyError> {
        match self.node {
            Node::Null => visitor.visit_unit(),
            Node::Bool(b) => visitor.visit_bool(*b),
            Node::Int(i) => visitor.visit_i64(*i),
            Node::Real(s) => match s.parse::<f64>() {
                Ok(f) => visitor.visit_f64(f),
                Err(_) => visitor.visit_str(s),
            },
            Node::Str(s) => visitor.visit_str(s),
            Node::List(_) => self.deserialize_seq(visitor),
            Node::Map(_) => self.deserialize_map(visitor),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, KeyError> {
        match self.node {
            Node::Bool(b) => visitor.visit_bool(*b),
            Node::Str(s) => match s.to_ascii_lowercase().as_str() {
                "true" | "yes" | "1" => visitor.visit_bool(true),
                "false" | "no" | "0" => visitor.visit_bool(false),
                _ => Err(self.wrong("true or false")),
            },
            _ => Err(self.wrong("true or false")),
        }
    }

    /// A whole number, also written as a string (as every `REGISTRY_*` variable is).
    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, KeyError> {
        match self.node {
            Node::Int(i) => {
                u64::try_from(*i).map_err(|_| self.wrong("a whole number")).and_then(|n| visitor.visit_u64(n))
            }
            Node::Str(s) => {
                s.trim().parse::<u64>().map_err(|_| self.wrong("a whole number")).and_then(|n| visitor.visit_u64(n))
            }
            _ => Err(self.wrong("a whole number")),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, KeyError> {
        match self.node.scalar_text() {
            Some(s) => visitor.visit_string(s),
            None => Err(self.wrong("a string")),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, KeyError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, KeyError> {
        match self.node {
            Node::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, KeyError> {
        match self.node {
            Node::List(items) => visitor.visit_seq(Items { items: items.iter().enumerate(), of: &self }),
            Node::Map(_) | Node::Null => Err(self.wrong("a list")),
            // A scalar is a list of one.
            _ => visitor.visit_seq(One { item: Some(self) }),
        }
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, KeyError> {
        match self.node {
            Node::Map(entries) => {
                visitor.visit_map(Entries { entries: entries.iter(), fields: None, of: &self, value: None })
            }
            _ => Err(self.wrong("a mapping")),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, KeyError> {
        match self.node {
            Node::Map(entries) => {
                visitor.visit_map(Entries { entries: entries.iter(), fields: Some(fields), of: &self, value: None })
            }
            _ => Err(self.wrong("a mapping")),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, KeyError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, KeyError> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        i8 i16 i32 i64 i128 u8 u16 u32 u128 f32 f64 char bytes byte_buf unit unit_struct tuple
        tuple_struct identifier enum
    }
}

/// The items of a list, at `path.0`, `path.1`, ...
struct Items<'a, 'b> {
    items: std::iter::Enumerate<std::slice::Iter<'a, Node>>,
    of: &'b NodeDeserializer<'a>,
}

impl<'de> SeqAccess<'de> for Items<'_, '_> {
    type Error = KeyError;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, KeyError> {
        let Some((i, node)) = self.items.next() else { return Ok(None) };
        let item = self.of.child(node, &i.to_string());
        let path = item.path.clone();
        seed.deserialize(item).map(Some).map_err(|e| e.placed(&path))
    }
}

/// A scalar read as a list of one.
struct One<'a> {
    item: Option<NodeDeserializer<'a>>,
}

impl<'de> SeqAccess<'de> for One<'_> {
    type Error = KeyError;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, KeyError> {
        let Some(item) = self.item.take() else { return Ok(None) };
        let path = item.path.clone();
        seed.deserialize(item).map(Some).map_err(|e| e.placed(&path))
    }
}

/// The entries of a mapping; with `fields` (a struct), keys outside them are unknown keys.
struct Entries<'a, 'b> {
    entries: std::slice::Iter<'a, (String, Node)>,
    fields: Option<&'static [&'static str]>,
    of: &'b NodeDeserializer<'a>,
    value: Option<(&'a str, &'a Node)>,
}

impl<'de> MapAccess<'de> for Entries<'_, '_> {
    type Error = KeyError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, KeyError> {
        for (key, node) in self.entries.by_ref() {
            if let Some(fields) = self.fields {
                if !fields.contains(&key.as_str()) {
                    self.of.origins.unknown(&self.of.path, &join(&self.of.path, key))?;
                    continue;
                }
            }
            self.value = Some((key, node));
            let name: de::value::StrDeserializer<'_, KeyError> = key.as_str().into_deserializer();
            return seed.deserialize(name).map(Some);
        }
        Ok(None)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, KeyError> {
        let Some((key, node)) = self.value.take() else {
            return Err(KeyError::new(&self.of.path, "a value without a key"));
        };
        let child = self.of.child(node, key);
        let path = child.path.clone();
        seed.deserialize(child).map_err(|e| e.placed(&path))
    }
}
