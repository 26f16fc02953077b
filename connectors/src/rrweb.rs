//! Raw rrweb events to analytic envelopes.
//!
//! A [`Decoder`] keeps one node map per (project, device, tab), built from each
//! FullSnapshot and kept current by Mutation events, so that a click knows its target's
//! tag, a CSS selector and whether it is interactive or a text field. Page views come
//! from Meta events, scrolls, mouse positions, resizes, inputs and mutation markers from
//! IncrementalSnapshot events, errors from the console plugin (`rrweb/console@1`, level
//! `error`, message starting `Uncaught`) and from Custom events tagged `error`, and other
//! Custom events become custom events.
//!
//! Every well-formed rrweb event (a JSON object with an integer `type` and a numeric
//! `timestamp`) decodes, so that it is stored for replay: what the views cannot use
//! (a type they do not know, a Meta without `href`, a click without coordinates, fields
//! missing) is still an envelope, with a [`Note`] that names the reason, counted by the
//! caller. Only text that is not such an event is a [`DecodeError`].
//!
//! Events are read with typed serde visitors that never build a JSON tree: a snapshot's
//! nodes go straight into the node map, whose size is bounded per tab and over all
//! tabs ([`DecoderLimits`]), so memory follows what is kept, not what was sent.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, MutexGuard};

use serde::Deserialize;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use sightflow_proto::v1::envelope::Kind;
use sightflow_proto::v1::{
    Activity, Click, CustomEvent, DomMutation, DomSnapshot, Envelope, Input, JsError, MouseMove, PageView, PointerType,
    Position, Scroll, TouchMove, ViewportResize,
};

/// Why a text is not an rrweb event at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct DecodeError {
    /// What is wrong with the text.
    pub reason: String,
}

fn bad(reason: impl Into<String>) -> DecodeError {
    DecodeError { reason: reason.into() }
}

/// What the views could not use of a well-formed rrweb event (it is still stored for
/// replay and counted as activity).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Note {
    /// An event type the views do not know (rrweb 2.x Asset events, later types).
    UnknownType,
    /// A Meta event without `href`: a page view with an unknown URL.
    MetaWithoutHref,
    /// A click without `x`/`y`: a click, without heat cells or a rage burst.
    ClickWithoutPosition,
    /// Fields the event's kind needs are missing or have the wrong type.
    Incomplete,
    /// The tab's node map is full: later nodes are not remembered (clicks on them get
    /// no target).
    NodeLimit,
    /// A Custom event's payload was too large for the views (the replay keeps it).
    PayloadTooLarge,
}

impl Note {
    /// A short label, for metrics.
    pub fn label(self) -> &'static str {
        match self {
            Note::UnknownType => "unknown_type",
            Note::MetaWithoutHref => "meta_without_href",
            Note::ClickWithoutPosition => "click_without_position",
            Note::Incomplete => "incomplete",
            Note::NodeLimit => "node_limit",
            Note::PayloadTooLarge => "payload_too_large",
        }
    }

    /// Every note, in label order.
    pub const ALL: [Note; 6] = [
        Note::ClickWithoutPosition,
        Note::Incomplete,
        Note::MetaWithoutHref,
        Note::NodeLimit,
        Note::PayloadTooLarge,
        Note::UnknownType,
    ];
}

/// A decoded rrweb event.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// The event as an envelope.
    pub envelope: Envelope,
    /// What the views could not use of it, if anything.
    pub note: Option<Note>,
}

/// The visit methods for every JSON scalar a lenient visitor does not read: each
/// yields `$v` (arrays and objects are each visitor's own).
macro_rules! others {
    ($v:expr) => {
        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
            Ok($v)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok($v)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok($v)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok($v)
        }
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok($v)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok($v)
        }
    };
}

/// Bounds on what a decoder remembers.
#[derive(Debug, Clone, Copy)]
pub struct DecoderLimits {
    /// DOM nodes remembered per tab (config `ingest.max_nodes_per_tab`).
    pub max_nodes_per_tab: usize,
    /// DOM nodes remembered over all tabs; least recently used tabs are forgotten beyond
    /// it (config `ingest.max_nodes_total`).
    pub max_nodes_total: usize,
    /// Tabs remembered before the least recently used are forgotten.
    pub max_tabs: usize,
    /// Longest Custom event payload passed on to the views (bytes).
    pub max_payload_bytes: usize,
}

impl Default for DecoderLimits {
    fn default() -> Self {
        DecoderLimits {
            max_nodes_per_tab: 100_000,
            max_nodes_total: 1_000_000,
            max_tabs: 50_000,
            max_payload_bytes: 8192,
        }
    }
}

/// Longest tag, id or class remembered (longer classes are skipped, longer tags and ids
/// cut).
const MAX_NAME: usize = 64;

/// An element's role, as far as clicks need it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Role {
    #[default]
    None,
    /// button, link, checkbox, menuitem, ...
    Clickable,
    Textbox,
}

/// What the node map remembers of an element.
#[derive(Clone, Debug, Default)]
struct Element {
    /// Lower-case tag.
    tag: Box<str>,
    id_attr: Option<Box<str>>,
    /// The first two classes (selectors use two).
    classes: Box<[Box<str>]>,
    role: Role,
    /// `type` names a non-text input (checkbox, button, ...).
    non_text_type: bool,
    has_href: bool,
    editable: bool,
    tabindex: bool,
}

/// One DOM node: its parent, and what an element needs.
#[derive(Clone, Debug, Default)]
struct Node {
    parent: u32,
    el: Option<Box<Element>>,
}

/// The DOM of one tab as far as clicks need it.
#[derive(Default, Debug)]
pub struct NodeMap {
    nodes: HashMap<u32, Node>,
    /// Nodes were left out because the map was full.
    truncated: bool,
}

fn cut(s: &str) -> Box<str> {
    let mut end = s.len().min(MAX_NAME);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].into()
}

impl NodeMap {
    fn clear(&mut self) {
        self.nodes.clear();
        self.nodes.shrink_to(1024);
        self.truncated = false;
    }

    /// The element a click on `id` lands on (text nodes resolve to their parent).
    fn element(&self, id: u32) -> Option<(u32, &Element)> {
        let mut cur = id;
        for _ in 0..3 {
            let n = self.nodes.get(&cur)?;
            if let Some(el) = &n.el {
                return Some((cur, el));
            }
            cur = n.parent;
        }
        None
    }

    /// A CSS selector for a node: up to the nearest ancestor with an id, at most five
    /// levels, e.g. `section#hero > div.cta > button.primary`.
    pub fn selector(&self, id: u32) -> String {
        let Some((mut cur, _)) = self.element(id) else {
            return String::new();
        };
        let mut parts: Vec<String> = Vec::new();
        for _ in 0..5 {
            let Some(n) = self.nodes.get(&cur) else { break };
            let Some(el) = &n.el else { break };
            if el.tag.is_empty() || &*el.tag == "html" || &*el.tag == "body" {
                break;
            }
            let mut seg = el.tag.to_string();
            if let Some(id) = &el.id_attr {
                seg.push('#');
                seg.push_str(id);
                parts.push(seg);
                break;
            }
            for c in el.classes.iter() {
                seg.push('.');
                seg.push_str(c);
            }
            parts.push(seg);
            cur = n.parent;
        }
        parts.reverse();
        parts.join(" > ")
    }

    fn interactive(&self, id: u32) -> bool {
        let mut cur = id;
        for _ in 0..6 {
            let Some(n) = self.nodes.get(&cur) else {
                return false;
            };
            if let Some(el) = &n.el {
                let clickable_tag = matches!(
                    &*el.tag,
                    "button" | "input" | "select" | "textarea" | "label" | "summary" | "option" | "details"
                ) || (&*el.tag == "a" && el.has_href);
                if clickable_tag || el.role != Role::None || el.editable || el.tabindex {
                    return true;
                }
                if &*el.tag == "body" {
                    return false;
                }
            }
            if n.parent == 0 {
                return false;
            }
            cur = n.parent;
        }
        false
    }

    fn text_field(&self, id: u32) -> bool {
        let Some((_, el)) = self.element(id) else {
            return false;
        };
        match &*el.tag {
            "textarea" | "select" => true,
            "input" => !el.non_text_type,
            _ => el.editable || el.role == Role::Textbox,
        }
    }

    fn tag(&self, id: u32) -> String {
        self.element(id).map(|(_, el)| el.tag.to_string()).unwrap_or_default()
    }

    /// Nodes remembered.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether no node is remembered.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Bytes the map holds: its table at capacity, and each element's strings.
    pub fn heap_bytes(&self) -> usize {
        let table = self.nodes.capacity() * (std::mem::size_of::<(u32, Node)>() + 1);
        let elements: usize = self
            .nodes
            .values()
            .filter_map(|n| n.el.as_deref())
            .map(|e| {
                std::mem::size_of::<Element>()
                    + e.tag.len()
                    + e.id_attr.as_ref().map_or(0, |s| s.len())
                    + e.classes.iter().map(|c| std::mem::size_of::<Box<str>>() + c.len()).sum::<usize>()
            })
            .sum();
        table + elements
    }
}

fn set_attr(el: &mut Element, k: &str, v: &RawValue) {
    let text = || serde_json::from_str::<String>(v.get()).ok();
    let present = || !matches!(v.get(), "null" | "false");
    match k {
        "id" => el.id_attr = text().filter(|s| !s.is_empty()).map(|s| cut(&s)),
        "class" => {
            el.classes = text()
                .map(|s| s.split_whitespace().filter(|c| c.len() <= 40).take(2).map(Box::from).collect())
                .unwrap_or_default()
        }
        "role" => {
            el.role = match text().map(|s| s.to_ascii_lowercase()).as_deref() {
                Some("textbox") => Role::Textbox,
                Some(
                    "button" | "link" | "checkbox" | "menuitem" | "tab" | "switch" | "radio" | "option" | "combobox",
                ) => Role::Clickable,
                _ => Role::None,
            }
        }
        "type" => {
            el.non_text_type = matches!(
                text().map(|s| s.to_ascii_lowercase()).as_deref(),
                Some(
                    "checkbox"
                        | "radio"
                        | "button"
                        | "submit"
                        | "reset"
                        | "file"
                        | "image"
                        | "range"
                        | "color"
                        | "hidden"
                )
            )
        }
        "href" => el.has_href = present(),
        "contenteditable" => el.editable = present() && text().as_deref() != Some("false"),
        "tabindex" => {
            let t = text().or_else(|| Some(v.get().to_string()));
            el.tabindex = present() && t.is_some_and(|t| t.trim().parse::<i32>().is_ok_and(|t| t >= 0));
        }
        _ => {}
    }
}

/// A map key (or any string), borrowed from the input when it has no escapes.
pub(crate) struct Key<'de>(pub(crate) std::borrow::Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Key<'de>, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(V)
    }
}

/// Inserts a serialized node tree (rrweb's `serializedNodeWithId`) into a node map as it
/// is read, without building it in memory. Yields the node's id.
struct NodeSeed<'m> {
    map: &'m mut NodeMap,
    parent: u32,
    limit: usize,
}

impl<'de> DeserializeSeed<'de> for NodeSeed<'_> {
    type Value = Option<u32>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<u32>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for NodeSeed<'_> {
    type Value = Option<u32>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an rrweb node")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Option<u32>, A::Error> {
        let mut id: Option<u32> = None;
        let mut ty: Option<u64> = None;
        let mut el = Element::default();
        let mut children: Vec<u32> = Vec::new();
        while let Some(key) = m.next_key::<Key<'de>>()? {
            match &*key.0 {
                "id" => id = m.next_value::<&RawValue>()?.get().parse::<u32>().ok(),
                "type" => ty = m.next_value::<&RawValue>()?.get().parse::<u64>().ok(),
                "tagName" => {
                    if let Some(t) = text(Some(m.next_value::<&RawValue>()?)) {
                        el.tag = cut(&t.to_ascii_lowercase());
                    }
                }
                "attributes" => m.next_value_seed(AttrsSeed(&mut el))?,
                "childNodes" => {
                    m.next_value_seed(ChildrenSeed { map: &mut *self.map, out: &mut children, limit: self.limit })?
                }
                _ => {
                    m.next_value::<IgnoredAny>()?;
                }
            }
        }
        let Some(id) = id else { return Ok(None) };
        for c in children {
            if let Some(n) = self.map.nodes.get_mut(&c) {
                n.parent = id;
            }
        }
        if self.map.nodes.len() >= self.limit && !self.map.nodes.contains_key(&id) {
            self.map.truncated = true;
            return Ok(Some(id));
        }
        let el = (ty == Some(2)).then(|| Box::new(el));
        self.map.nodes.insert(id, Node { parent: self.parent, el });
        Ok(Some(id))
    }

    // Anything else where a node belongs is skipped.
    fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Option<u32>, A::Error> {
        while s.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }
    others!(None);
}

struct ChildrenSeed<'m, 'o> {
    map: &'m mut NodeMap,
    out: &'o mut Vec<u32>,
    limit: usize,
}

impl<'de> DeserializeSeed<'de> for ChildrenSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ChildrenSeed<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of rrweb nodes")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<(), A::Error> {
        // Children get their parent once the parent's id is read (rrweb writes it last).
        while let Some(id) = s.next_element_seed(NodeSeed { map: &mut *self.map, parent: 0, limit: self.limit })? {
            if let Some(id) = id {
                self.out.push(id);
            }
        }
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<(), A::Error> {
        while m.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(())
    }
    others!(());
}

struct AttrsSeed<'e>(&'e mut Element);

impl<'de> DeserializeSeed<'de> for AttrsSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for AttrsSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an attribute map")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<(), A::Error> {
        while let Some(k) = m.next_key::<Key<'de>>()? {
            let v: &RawValue = m.next_value()?;
            set_attr(self.0, &k.0, v);
        }
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<(), A::Error> {
        while s.next_element::<IgnoredAny>()?.is_some() {}
        Ok(())
    }
    others!(());
}

/// A number, whatever JSON number form it takes.
fn num(v: Option<&RawValue>) -> Option<f64> {
    v.and_then(|v| v.get().parse::<f64>().ok()).filter(|f| f.is_finite())
}

fn int(v: Option<&RawValue>) -> Option<i64> {
    num(v).filter(|f| f.abs() < 9.0e15).map(|f| f as i64)
}

fn text(v: Option<&RawValue>) -> Option<String> {
    v.and_then(|v| serde_json::from_str::<String>(v.get()).ok())
}

/// An rrweb event read in one pass: `type` and `timestamp` as text, and `data` read for
/// the event's type when `type` comes before it (rrweb writes `type` first), so that a
/// FullSnapshot's nodes go into the node map as the text is read. When `data` comes
/// first it is kept as text and read once `type` is known.
struct Event<'a> {
    ty: Option<&'a RawValue>,
    timestamp: Option<&'a RawValue>,
    data: Data<'a>,
}

enum Data<'a> {
    Absent,
    Text(&'a RawValue),
    Read(Body<'a>),
}

/// An event's `data`, read for its type. Each kind's fields are read leniently (a field
/// of the wrong type reads as missing); only a field given twice is an error.
enum Body<'a> {
    Meta(Meta<'a>),
    /// A FullSnapshot, its nodes read into the decoder's spare node map.
    Full(Full<'a>),
    Incremental(Incremental<'a>),
    Tagged(Tagged<'a>),
    /// Types whose `data` the views do not read.
    Skipped,
}

/// What a FullSnapshot's `data` held besides its nodes.
#[derive(Default)]
struct Full<'a> {
    /// `node` was there (and was read into the spare map).
    node: bool,
    initial_offset: Option<&'a RawValue>,
}

fn rrweb_type(v: Option<&RawValue>) -> Option<u64> {
    v.and_then(|v| v.get().parse::<u64>().ok())
}

/// Reads an event, `data` into `spare` when it is a FullSnapshot's.
struct EventSeed<'s> {
    spare: &'s mut NodeMap,
    limit: usize,
}

impl<'de> DeserializeSeed<'de> for EventSeed<'_> {
    type Value = Event<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Event<'de>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for EventSeed<'_> {
    type Value = Event<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an rrweb event")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Event<'de>, A::Error> {
        let mut e = Event { ty: None, timestamp: None, data: Data::Absent };
        let mut data_seen = false;
        let twice = |k: &str| serde::de::Error::custom(format_args!("duplicate field `{k}`"));
        while let Some(key) = m.next_key::<Key<'de>>()? {
            match &*key.0 {
                "type" if e.ty.is_some() => return Err(twice("type")),
                "type" => e.ty = m.next_value::<Option<&RawValue>>()?.or(Some(null())),
                "timestamp" if e.timestamp.is_some() => return Err(twice("timestamp")),
                "timestamp" => e.timestamp = m.next_value::<Option<&RawValue>>()?.or(Some(null())),
                "data" if data_seen => return Err(twice("data")),
                "data" => {
                    data_seen = true;
                    e.data = match rrweb_type(e.ty) {
                        Some(ty) => {
                            let seed = BodySeed { ty, spare: &mut *self.spare, limit: self.limit };
                            Data::Read(m.next_value_seed(seed)?)
                        }
                        None => m.next_value::<Option<&RawValue>>()?.map_or(Data::Absent, Data::Text),
                    }
                }
                _ => {
                    m.next_value::<IgnoredAny>()?;
                }
            }
        }
        // A `null` field counts as missing.
        e.ty = e.ty.filter(|v| v.get() != "null");
        e.timestamp = e.timestamp.filter(|v| v.get() != "null");
        Ok(e)
    }
}

/// The text `null`, standing for a field that was given as null.
fn null() -> &'static RawValue {
    serde_json::from_str("null").expect("null is JSON")
}

/// Reads `data` for an event of type `ty`.
struct BodySeed<'s> {
    ty: u64,
    spare: &'s mut NodeMap,
    limit: usize,
}

impl<'de> DeserializeSeed<'de> for BodySeed<'_> {
    type Value = Body<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Body<'de>, D::Error> {
        Ok(match self.ty {
            4 => Body::Meta(Lenient::default().deserialize(d)?),
            2 => Body::Full(FullSeed { spare: self.spare, limit: self.limit }.deserialize(d)?),
            3 => Body::Incremental(Lenient::default().deserialize(d)?),
            5 | 6 => Body::Tagged(Lenient::default().deserialize(d)?),
            _ => {
                IgnoredAny::deserialize(d)?;
                Body::Skipped
            }
        })
    }
}

/// A FullSnapshot's `data`: `node` goes into the (cleared) spare map as it is read.
struct FullSeed<'s> {
    spare: &'s mut NodeMap,
    limit: usize,
}

impl<'de> DeserializeSeed<'de> for FullSeed<'_> {
    type Value = Full<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Full<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for FullSeed<'_> {
    type Value = Full<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a FullSnapshot's data")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Full<'de>, A::Error> {
        let mut full = Full::default();
        let twice = |k: &str| serde::de::Error::custom(format_args!("duplicate field `{k}`"));
        while let Some(key) = m.next_key::<Key<'de>>()? {
            match &*key.0 {
                "node" if full.node => return Err(twice("node")),
                "node" => full.node = m.next_value_seed(RootSeed { map: &mut *self.spare, limit: self.limit })?,
                "initialOffset" if full.initial_offset.is_some() => return Err(twice("initialOffset")),
                "initialOffset" => full.initial_offset = Some(m.next_value::<&RawValue>()?),
                _ => {
                    m.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(full)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Full<'de>, A::Error> {
        while s.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Full::default())
    }
    others!(Full::default());
}

/// A FullSnapshot's `node`: unless it is null, the map is cleared and the tree read into
/// it; yields whether it was there.
struct RootSeed<'m> {
    map: &'m mut NodeMap,
    limit: usize,
}

impl<'de> DeserializeSeed<'de> for RootSeed<'_> {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for RootSeed<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an rrweb node")
    }
    fn visit_none<E>(self) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        self.map.clear();
        NodeSeed { map: self.map, parent: 0, limit: self.limit }.deserialize(d)?;
        Ok(true)
    }
}

/// Reads an object into `T` (its derived fields), and anything else as `T::default()`.
struct Lenient<T>(std::marker::PhantomData<T>);

impl<T> Default for Lenient<T> {
    fn default() -> Self {
        Lenient(std::marker::PhantomData)
    }
}

impl<'de, T: Deserialize<'de> + Default> DeserializeSeed<'de> for Lenient<T> {
    type Value = T;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, T: Deserialize<'de> + Default> Visitor<'de> for Lenient<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }
    fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<T, A::Error> {
        T::deserialize(serde::de::value::MapAccessDeserializer::new(m))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<T, A::Error> {
        while s.next_element::<IgnoredAny>()?.is_some() {}
        Ok(T::default())
    }
    others!(T::default());
}

/// A JSON number as f64, and anything else (read and skipped) as none.
struct Num(Option<f64>);

impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Num, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Num;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number")
            }
            fn visit_u64<E>(self, v: u64) -> Result<Num, E> {
                Ok(Num(Some(v as f64)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Num, E> {
                Ok(Num(Some(v as f64)))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Num, E> {
                Ok(Num(Some(v).filter(|f| f.is_finite())))
            }
            fn visit_str<E>(self, _: &str) -> Result<Num, E> {
                Ok(Num(None))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Num, E> {
                Ok(Num(None))
            }
            fn visit_unit<E>(self) -> Result<Num, E> {
                Ok(Num(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Num, A::Error> {
                while s.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Num(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Num, A::Error> {
                while m.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Num(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// A number as an i32 the way [`int`] reads it (finite, below 9e15, clamped).
fn num_i32(n: Option<f64>) -> Option<i32> {
    n.filter(|f| f.abs() < 9.0e15).map(|f| (f as i64).clamp(i32::MIN as i64, i32::MAX as i64) as i32)
}

/// A mouse or touch move's `positions`, read straight into positions: an element that
/// is not an object with numeric `x` and `y` is skipped, and anything but an array
/// reads as none.
#[derive(Default)]
struct Points(Vec<Position>);

impl<'de> Deserialize<'de> for Points {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Points, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Points;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of positions")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Points, A::Error> {
                let mut out = Vec::with_capacity(s.size_hint().unwrap_or(0).min(64));
                while let Some(p) = s.next_element::<Point>()? {
                    out.extend(p.0);
                }
                Ok(Points(out))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Points, A::Error> {
                while m.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Points::default())
            }
            others!(Points::default());
        }
        d.deserialize_any(V)
    }
}

/// One element of `positions`: a position, or none when it does not fit.
struct Point(Option<Position>);

impl<'de> Deserialize<'de> for Point {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Point, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Point;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a position")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Point, A::Error> {
                let (mut x, mut y, mut t) = (None, None, None);
                let mut twice = false;
                while let Some(key) = m.next_key::<Key<'de>>()? {
                    let slot = match &*key.0 {
                        "x" => &mut x,
                        "y" => &mut y,
                        "timeOffset" => &mut t,
                        _ => {
                            m.next_value::<IgnoredAny>()?;
                            continue;
                        }
                    };
                    twice |= slot.is_some();
                    *slot = Some(m.next_value::<Num>()?.0);
                }
                if twice {
                    return Ok(Point(None));
                }
                let (Some(x), Some(y)) = (num_i32(x.flatten()), num_i32(y.flatten())) else {
                    return Ok(Point(None));
                };
                Ok(Point(Some(Position { x, y, time_offset: num_i32(t.flatten()).unwrap_or(0) })))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Point, A::Error> {
                while s.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Point(None))
            }
            others!(Point(None));
        }
        d.deserialize_any(V)
    }
}

/// The fields of an IncrementalSnapshot's `data` the views use (each read leniently).
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Incremental<'a> {
    #[serde(borrow)]
    source: Option<&'a RawValue>,
    #[serde(rename = "type", borrow)]
    ty: Option<&'a RawValue>,
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    x: Option<&'a RawValue>,
    #[serde(borrow)]
    y: Option<&'a RawValue>,
    #[serde(borrow)]
    pointer_type: Option<&'a RawValue>,
    positions: Option<Points>,
    #[serde(borrow)]
    width: Option<&'a RawValue>,
    #[serde(borrow)]
    height: Option<&'a RawValue>,
    #[serde(borrow)]
    adds: Option<&'a RawValue>,
    #[serde(borrow)]
    removes: Option<&'a RawValue>,
    #[serde(borrow)]
    attributes: Option<&'a RawValue>,
    #[serde(borrow)]
    texts: Option<&'a RawValue>,
}

#[derive(Deserialize, Default)]
struct Meta<'a> {
    #[serde(borrow)]
    href: Option<&'a RawValue>,
    #[serde(borrow)]
    width: Option<&'a RawValue>,
    #[serde(borrow)]
    height: Option<&'a RawValue>,
    // What the sightflow SDK adds to the Meta it records (rrweb's replayer ignores them).
    #[serde(borrow)]
    referrer: Option<&'a RawValue>,
    #[serde(borrow, rename = "userAgent")]
    user_agent: Option<&'a RawValue>,
    #[serde(borrow)]
    title: Option<&'a RawValue>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Offset<'a> {
    #[serde(borrow)]
    top: Option<&'a RawValue>,
    #[serde(borrow)]
    left: Option<&'a RawValue>,
}

#[derive(Deserialize, Default)]
struct Tagged<'a> {
    #[serde(borrow)]
    tag: Option<&'a RawValue>,
    #[serde(borrow)]
    plugin: Option<&'a RawValue>,
    #[serde(borrow)]
    payload: Option<&'a RawValue>,
}

#[derive(Deserialize, Default)]
struct ErrorPayload<'a> {
    #[serde(borrow)]
    message: Option<&'a RawValue>,
    #[serde(borrow)]
    source: Option<&'a RawValue>,
    #[serde(borrow)]
    stack: Option<&'a RawValue>,
}

#[derive(Deserialize, Default)]
struct ConsolePayload<'a> {
    #[serde(borrow)]
    level: Option<&'a RawValue>,
    #[serde(borrow)]
    trace: Option<&'a RawValue>,
    #[serde(borrow)]
    payload: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Add<'a> {
    #[serde(rename = "parentId", borrow)]
    parent_id: Option<&'a RawValue>,
    #[serde(borrow)]
    node: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct IdOnly<'a> {
    #[serde(borrow)]
    id: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct AttrChange<'a> {
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    attributes: Option<&'a RawValue>,
}

/// Parses `raw` as `T`, or `T::default()` when it is absent or does not fit.
fn parse<'a, T: Deserialize<'a> + Default>(raw: Option<&'a RawValue>) -> T {
    raw.and_then(|r| serde_json::from_str(r.get()).ok()).unwrap_or_default()
}

/// Parses `raw` as a list of `T`, skipping elements that do not fit.
fn list<'a, T: Deserialize<'a>>(raw: Option<&'a RawValue>) -> Vec<T> {
    let items: Vec<&'a RawValue> = parse(raw);
    items.into_iter().filter_map(|r| serde_json::from_str(r.get()).ok()).collect()
}

fn count(raw: Option<&RawValue>) -> u32 {
    raw.and_then(|r| serde_json::from_str::<Vec<IgnoredAny>>(r.get()).ok()).map_or(0, |v| v.len() as u32)
}

/// Per-tab decoding state.
#[derive(Default, Debug)]
struct TabState {
    nodes: NodeMap,
    url: String,
    last_used: u64,
    /// When the tab last sent an event (wall clock), for [`Decoder::forget_idle`].
    touched: Option<std::time::Instant>,
    /// Raw bytes stored for replay (the store's quota per tab).
    replay_bytes: u64,
}

type TabKey = (String, String, String);

/// Decodes rrweb events, keeping a node map per tab within [`DecoderLimits`].
#[derive(Debug)]
pub struct Decoder {
    tabs: HashMap<TabKey, TabState>,
    clock: u64,
    limits: DecoderLimits,
    /// Nodes held over all tabs.
    nodes: usize,
    /// Where a FullSnapshot's nodes are read, to replace its tab's map once the whole
    /// event has been read (an event that turns out malformed changes nothing).
    spare: NodeMap,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::with_limits(DecoderLimits::default())
    }
}

fn key(project: &str, device: &str, tab: &str) -> TabKey {
    (project.to_string(), device.to_string(), tab.to_string())
}

impl Decoder {
    /// A decoder with the default limits.
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// A decoder that remembers at most what `limits` allow.
    pub fn with_limits(limits: DecoderLimits) -> Decoder {
        Decoder { tabs: HashMap::new(), clock: 0, limits, nodes: 0, spare: NodeMap::default() }
    }

    /// Tabs with decoding state.
    pub fn tabs(&self) -> usize {
        self.tabs.len()
    }

    /// DOM nodes held over all tabs.
    pub fn nodes(&self) -> usize {
        self.nodes
    }

    /// Forgets a tab (its node map).
    pub fn forget(&mut self, project: &str, device: &str, tab: &str) {
        if let Some(t) = self.tabs.remove(&key(project, device, tab)) {
            self.nodes -= t.nodes.len();
        }
    }

    /// Forgets the tabs that sent nothing for `idle` (wall clock): their sessions have
    /// ended, so their node maps are unlikely to be needed, and they would otherwise be
    /// held until the limits push them out. Returns how many were forgotten.
    pub fn forget_idle(&mut self, idle: std::time::Duration) -> usize {
        let now = std::time::Instant::now();
        let before = self.tabs.len();
        let mut freed = 0;
        self.tabs.retain(|_, t| {
            let keep = t.touched.is_some_and(|at| now.duration_since(at) < idle);
            if !keep {
                freed += t.nodes.len();
            }
            keep
        });
        self.nodes -= freed;
        if self.tabs.capacity() > 4 * self.tabs.len() + 64 {
            self.tabs.shrink_to_fit();
        }
        before - self.tabs.len()
    }

    /// Bytes held: every tab's state and node map, and the table of tabs.
    pub fn heap_bytes(&self) -> usize {
        let table = self.tabs.capacity() * (std::mem::size_of::<(TabKey, TabState)>() + 1);
        table
            + self.spare.heap_bytes()
            + self
                .tabs
                .iter()
                .map(|((p, d, t), s)| {
                    p.capacity() + d.capacity() + t.capacity() + s.url.capacity() + s.nodes.heap_bytes()
                })
                .sum::<usize>()
    }

    /// Whether a tab has decoding state (after a restart it has none until its events
    /// are replayed through the decoder again).
    pub fn knows(&self, project: &str, device: &str, tab: &str) -> bool {
        self.tabs.contains_key(&key(project, device, tab))
    }

    /// Counts `bytes` against a tab's replay quota; false when they do not fit.
    pub fn charge_replay(&mut self, project: &str, device: &str, tab: &str, bytes: u64, quota: u64) -> bool {
        let t = self.tabs.entry(key(project, device, tab)).or_default();
        t.touched = Some(std::time::Instant::now());
        if t.replay_bytes.saturating_add(bytes) > quota {
            return false;
        }
        t.replay_bytes += bytes;
        true
    }

    /// Forgets the least recently used tabs (never `keep`) until the limits hold again,
    /// with room to spare so that this is rare.
    fn evict(&mut self, keep: &TabKey) {
        let l = self.limits;
        if self.tabs.len() <= l.max_tabs && self.nodes <= l.max_nodes_total {
            return;
        }
        let mut ages: Vec<(u64, usize, TabKey)> = self
            .tabs
            .iter()
            .filter(|(k, _)| *k != keep)
            .map(|(k, t)| (t.last_used, t.nodes.len(), k.clone()))
            .collect();
        ages.sort_unstable_by_key(|a| a.0);
        let (tab_goal, node_goal) = (l.max_tabs - l.max_tabs / 10, l.max_nodes_total - l.max_nodes_total / 10);
        for (_, n, k) in ages {
            if self.tabs.len() <= tab_goal && self.nodes <= node_goal {
                break;
            }
            self.tabs.remove(&k);
            self.nodes -= n;
        }
    }

    /// Decodes one rrweb event (its JSON text) into an envelope with the given identity.
    pub fn decode(
        &mut self,
        project: &str,
        device: &str,
        tab: &str,
        seq: u64,
        raw: &str,
    ) -> Result<Decoded, DecodeError> {
        if !raw.trim_start().starts_with('{') {
            return Err(bad("an rrweb event must be a JSON object"));
        }
        let limit = self.limits.max_nodes_per_tab;
        let mut de = serde_json::Deserializer::from_str(raw);
        let event = EventSeed { spare: &mut self.spare, limit }
            .deserialize(&mut de)
            .and_then(|e| de.end().map(|()| e))
            .map_err(|e| bad(format!("invalid rrweb event JSON: {e}")));
        let head = event.and_then(|event| {
            let ty = rrweb_type(event.ty).ok_or_else(|| bad("rrweb event has no integer `type`"))?;
            let ts = int(event.timestamp).ok_or_else(|| bad("rrweb event has no numeric `timestamp`"))?;
            Ok((ty, ts, event.data))
        });
        let (ty, ts, data) = match head {
            Ok(h) => h,
            Err(e) => {
                self.spare.clear();
                return Err(e);
            }
        };
        // `data` that came before `type` is read now.
        let body = match data {
            Data::Absent => None,
            Data::Read(body) => Some(body),
            Data::Text(text) => {
                let mut de = serde_json::Deserializer::from_str(text.get());
                let read = BodySeed { ty, spare: &mut self.spare, limit }.deserialize(&mut de);
                match read {
                    Ok(body) => Some(body),
                    Err(e) => {
                        self.spare.clear();
                        return Err(bad(format!("invalid rrweb event JSON: {e}")));
                    }
                }
            }
        };
        self.clock += 1;
        let k = key(project, device, tab);
        if !self.tabs.contains_key(&k) {
            self.tabs.insert(k.clone(), TabState::default());
            self.evict(&k);
        }
        let max_payload = self.limits.max_payload_bytes;
        let state = self.tabs.get_mut(&k).expect("inserted");
        state.last_used = self.clock;
        state.touched = Some(std::time::Instant::now());
        let before = state.nodes.len();
        let mut note = None;
        let kind = decode_kind(ty, body, state, &mut self.spare, limit, max_payload, &mut note);
        let after = state.nodes.len();
        if state.nodes.truncated && note.is_none() && matches!(kind, Kind::Snapshot(_) | Kind::Mutation(_)) {
            note = Some(Note::NodeLimit);
        }
        let url = state.url.clone();
        // Only this tab's map changed.
        self.nodes = self.nodes - before + after;
        if self.nodes > self.limits.max_nodes_total {
            self.evict(&k);
        }
        Ok(Decoded {
            envelope: Envelope {
                project: project.to_string(),
                device_id: device.to_string(),
                tab_id: tab.to_string(),
                seq,
                ts,
                url,
                logical_time: 0,
                kind: Some(kind),
            },
            note,
        })
    }
}

fn activity(name: impl Into<String>) -> Kind {
    Kind::Activity(Activity { name: name.into() })
}

fn decode_kind(
    ty: u64,
    body: Option<Body<'_>>,
    state: &mut TabState,
    spare: &mut NodeMap,
    limit: usize,
    max_payload: usize,
    note: &mut Option<Note>,
) -> Kind {
    match ty {
        4 => {
            let m = match body {
                Some(Body::Meta(m)) => m,
                _ => Meta::default(),
            };
            let href = text(m.href).unwrap_or_default();
            if href.is_empty() {
                *note = Some(Note::MetaWithoutHref);
            }
            state.url = href.clone();
            Kind::PageView(PageView {
                url: href,
                viewport_width: int(m.width).unwrap_or(0).clamp(0, 100_000) as u32,
                viewport_height: int(m.height).unwrap_or(0).clamp(0, 100_000) as u32,
                referrer: text(m.referrer).unwrap_or_default(),
                user_agent: text(m.user_agent).unwrap_or_default(),
                title: text(m.title).unwrap_or_default(),
                ..Default::default()
            })
        }
        2 => {
            let full = match body {
                Some(Body::Full(f)) => f,
                _ => Full::default(),
            };
            if !full.node {
                *note = Some(Note::Incomplete);
                return activity("full_snapshot");
            }
            // The snapshot's nodes were read into the spare map: they replace the tab's.
            std::mem::swap(&mut state.nodes, spare);
            spare.clear();
            let off: Offset<'_> = parse(full.initial_offset);
            Kind::Snapshot(DomSnapshot {
                scroll_x: int(off.left).unwrap_or(0).clamp(i32::MIN as i64, i32::MAX as i64) as i32,
                scroll_y: int(off.top).unwrap_or(0).clamp(i32::MIN as i64, i32::MAX as i64) as i32,
            })
        }
        3 => {
            let d = match body {
                Some(Body::Incremental(d)) => d,
                _ => Incremental::default(),
            };
            let Some(source) = int(d.source) else {
                *note = Some(Note::Incomplete);
                return activity("incremental");
            };
            let i32_of = |v: Option<&RawValue>| int(v).map(|v| v.clamp(i32::MIN as i64, i32::MAX as i64) as i32);
            match source {
                0 => {
                    for r in list::<IdOnly<'_>>(d.removes) {
                        if let Some(id) = int(r.id) {
                            state.nodes.nodes.remove(&(id as u32));
                        }
                    }
                    for a in list::<Add<'_>>(d.adds) {
                        let parent = int(a.parent_id).unwrap_or(0) as u32;
                        if let Some(node) = a.node {
                            let mut de = serde_json::Deserializer::from_str(node.get());
                            let _ = NodeSeed { map: &mut state.nodes, parent, limit }.deserialize(&mut de);
                        }
                    }
                    for a in list::<AttrChange<'_>>(d.attributes) {
                        let Some(id) = int(a.id) else { continue };
                        let Some(el) = state.nodes.nodes.get_mut(&(id as u32)).and_then(|n| n.el.as_deref_mut()) else {
                            continue;
                        };
                        if let Some(attrs) = a.attributes {
                            let mut de = serde_json::Deserializer::from_str(attrs.get());
                            let _ = AttrsSeed(el).deserialize(&mut de);
                        }
                    }
                    Kind::Mutation(DomMutation {
                        adds: count(d.adds),
                        removes: count(d.removes),
                        attributes: count(d.attributes),
                        texts: count(d.texts),
                    })
                }
                1 | 6 => {
                    let Some(Points(positions)) = d.positions else {
                        *note = Some(Note::Incomplete);
                        return activity("mouse_move");
                    };
                    if source == 1 {
                        Kind::MouseMove(MouseMove { positions })
                    } else {
                        Kind::TouchMove(TouchMove { positions })
                    }
                }
                2 => {
                    let Some(t) = int(d.ty) else {
                        *note = Some(Note::Incomplete);
                        return activity("mouse_interaction");
                    };
                    if t != 2 {
                        return activity(format!("mouse_interaction_{t}"));
                    }
                    let id = int(d.id).unwrap_or(0) as u32;
                    let pointer = match int(d.pointer_type) {
                        Some(2) => PointerType::Touch,
                        Some(1) => PointerType::Pen,
                        _ => PointerType::Mouse,
                    };
                    let (x, y) = (i32_of(d.x), i32_of(d.y));
                    if x.is_none() || y.is_none() {
                        *note = Some(Note::ClickWithoutPosition);
                    }
                    Kind::Click(Click {
                        x: x.unwrap_or(0),
                        y: y.unwrap_or(0),
                        page_x: None,
                        page_y: None,
                        selector: state.nodes.selector(id),
                        tag: state.nodes.tag(id),
                        interactive: state.nodes.interactive(id),
                        text_field: state.nodes.text_field(id),
                        text: String::new(),
                        pointer: pointer as i32,
                        no_position: x.is_none() || y.is_none(),
                    })
                }
                3 => match (int(d.id), i32_of(d.y)) {
                    (Some(node), Some(y)) => Kind::Scroll(Scroll { node: node as u32, x: i32_of(d.x).unwrap_or(0), y }),
                    _ => {
                        *note = Some(Note::Incomplete);
                        activity("scroll")
                    }
                },
                4 => match (int(d.width), int(d.height)) {
                    (Some(w), Some(h)) => Kind::Resize(ViewportResize {
                        width: w.clamp(0, 100_000) as u32,
                        height: h.clamp(0, 100_000) as u32,
                    }),
                    _ => {
                        *note = Some(Note::Incomplete);
                        activity("viewport_resize")
                    }
                },
                5 => Kind::Input(Input { node: int(d.id).unwrap_or(0) as u32 }),
                other => activity(format!("incremental_{other}")),
            }
        }
        5 => {
            let t = match body {
                Some(Body::Tagged(t)) => t,
                _ => Tagged::default(),
            };
            let Some(tag) = text(t.tag) else {
                *note = Some(Note::Incomplete);
                return activity("custom");
            };
            if tag == "error" {
                let payload = t.payload;
                let message = text(payload).unwrap_or_else(|| {
                    let p: ErrorPayload<'_> = parse(payload);
                    text(p.message).unwrap_or_default()
                });
                let p: ErrorPayload<'_> = parse(payload);
                return Kind::Error(JsError {
                    message,
                    source: text(p.source).unwrap_or_default(),
                    stack: text(p.stack).unwrap_or_default(),
                    fingerprint: String::new(),
                });
            }
            let mut properties_json = t.payload.map(|p| p.get().to_string()).unwrap_or_default();
            if properties_json.len() > max_payload {
                properties_json.clear();
                *note = Some(Note::PayloadTooLarge);
            }
            Kind::Custom(CustomEvent { name: tag, properties_json })
        }
        6 => {
            let t = match body {
                Some(Body::Tagged(t)) => t,
                _ => Tagged::default(),
            };
            let plugin = text(t.plugin).unwrap_or_default();
            match console_error(&plugin, t.payload) {
                Some(e) => Kind::Error(e),
                None => activity(format!("plugin:{plugin}")),
            }
        }
        0 => activity("dom_content_loaded"),
        1 => activity("load"),
        7 => activity("asset"),
        other => {
            *note = Some(Note::UnknownType);
            activity(format!("rrweb_type_{other}"))
        }
    }
}

/// An uncaught error recorded by the console plugin.
fn console_error(plugin: &str, payload: Option<&RawValue>) -> Option<JsError> {
    if plugin != "rrweb/console@1" {
        return None;
    }
    let p: ConsolePayload<'_> = parse(payload);
    if text(p.level).as_deref() != Some("error") {
        return None;
    }
    let args: Vec<&RawValue> = parse(p.payload);
    // The plugin stores each argument as a JSON string of its value.
    let raw = text(args.first().copied())?;
    let message = serde_json::from_str::<String>(&raw).unwrap_or(raw);
    if !message.starts_with("Uncaught") {
        return None;
    }
    let trace: Vec<String> = list::<String>(p.trace);
    let source =
        trace.first().map(|f| f.rsplit('(').next().unwrap_or(f).trim_end_matches(')').to_string()).unwrap_or_default();
    Some(JsError { message, source, stack: trace.join("\n"), fingerprint: String::new() })
}

/// Decoders sharded by device, so that requests for different devices decode in
/// parallel; each shard gets its part of the limits.
#[derive(Debug)]
pub struct Decoders {
    shards: Vec<Mutex<Decoder>>,
}

impl Default for Decoders {
    fn default() -> Self {
        Decoders::new(1, DecoderLimits::default())
    }
}

impl Decoders {
    /// `shards` decoders (at least one); the total node and tab limits are divided among
    /// them.
    pub fn new(shards: usize, limits: DecoderLimits) -> Decoders {
        let n = shards.max(1);
        let part = DecoderLimits {
            max_nodes_per_tab: limits.max_nodes_per_tab,
            max_nodes_total: (limits.max_nodes_total / n).max(limits.max_nodes_per_tab),
            max_tabs: (limits.max_tabs / n).max(16),
            max_payload_bytes: limits.max_payload_bytes,
        };
        Decoders { shards: (0..n).map(|_| Mutex::new(Decoder::with_limits(part))).collect() }
    }

    /// The decoder of a device's tabs.
    pub fn shard(&self, project: &str, device: &str) -> MutexGuard<'_, Decoder> {
        let h = crate::kafka::device_hash(project, device);
        let i = (h % self.shards.len() as u64) as usize;
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Decodes one event with its device's decoder.
    pub fn decode(&self, project: &str, device: &str, tab: &str, seq: u64, raw: &str) -> Result<Decoded, DecodeError> {
        self.shard(project, device).decode(project, device, tab, seq, raw)
    }

    /// DOM nodes and tabs held over all shards.
    pub fn size(&self) -> (usize, usize) {
        self.shards.iter().fold((0, 0), |(n, t), s| {
            let d = s.lock().unwrap_or_else(|e| e.into_inner());
            (n + d.nodes(), t + d.tabs())
        })
    }

    /// Bytes held over all shards (a walk of every node map: for a periodic report).
    pub fn heap_bytes(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).heap_bytes()).sum()
    }

    /// Forgets, in every shard, the tabs idle for `idle` ([`Decoder::forget_idle`]).
    pub fn forget_idle(&self, idle: std::time::Duration) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).forget_idle(idle)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn snapshot() -> String {
        r#"{"type": 2, "timestamp": 2, "data": {"initialOffset": {"top": 40, "left": 0}, "node": {"type": 0, "childNodes": [
            {"type": 2, "tagName": "html", "attributes": {}, "childNodes": [
                {"type": 2, "tagName": "body", "attributes": {}, "childNodes": [
                    {"type": 2, "tagName": "section", "attributes": {"id": "hero"}, "childNodes": [
                        {"type": 2, "tagName": "div", "attributes": {"class": "cta big"}, "childNodes": [
                            {"type": 2, "tagName": "button", "attributes": {}, "childNodes": [{"type": 3, "textContent": "Go", "id": 7}], "id": 6},
                            {"type": 2, "tagName": "div", "attributes": {"id": "fake"}, "childNodes": [], "id": 8},
                            {"type": 2, "tagName": "input", "attributes": {"type": "email"}, "childNodes": [], "id": 9}
                        ], "id": 5}
                    ], "id": 4}
                ], "id": 3}
            ], "id": 2}
        ], "id": 1}}}"#
            .to_string()
    }

    fn click(id: u32) -> String {
        json!({"type": 3, "timestamp": 10, "data": {"source": 2, "type": 2, "id": id, "x": 5, "y": 6, "pointerType": 0}})
            .to_string()
    }

    fn decoded_click(d: &mut Decoder, id: u32) -> Click {
        match d.decode("p", "d", "t", 0, &click(id)).unwrap().envelope.kind {
            Some(Kind::Click(c)) => c,
            other => panic!("not a click: {other:?}"),
        }
    }

    #[test]
    fn a_meta_from_the_sdk_carries_referrer_user_agent_and_title() {
        let mut d = Decoder::new();
        let meta = json!({"type": 4, "timestamp": 1, "data": {"href": "http://x.test/a", "width": 800, "height": 600,
            "referrer": "http://r.test/", "userAgent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0", "title": "A"}});
        match d.decode("p", "d", "t", 0, &meta.to_string()).unwrap().envelope.kind {
            Some(Kind::PageView(pv)) => {
                assert_eq!((pv.referrer.as_str(), pv.title.as_str()), ("http://r.test/", "A"));
                assert!(pv.user_agent.contains("Chrome/120"));
            }
            other => panic!("not a page view: {other:?}"),
        }
    }

    #[test]
    fn clicks_know_their_target() {
        let mut d = Decoder::new();
        let meta = json!({"type": 4, "timestamp": 1, "data": {"href": "http://x.test/a", "width": 800, "height": 600}});
        d.decode("p", "d", "t", 0, &meta.to_string()).unwrap();
        let snap = d.decode("p", "d", "t", 1, &snapshot()).unwrap();
        assert!(matches!(snap.envelope.kind, Some(Kind::Snapshot(DomSnapshot { scroll_y: 40, .. }))));
        assert_eq!(snap.note, None);
        let c = decoded_click(&mut d, 7);
        assert_eq!(c.selector, "section#hero > div.cta.big > button");
        assert_eq!(c.tag, "button");
        assert!(c.interactive && !c.text_field);
        let c = decoded_click(&mut d, 8);
        assert_eq!(c.selector, "div#fake");
        assert!(!c.interactive);
        let c = decoded_click(&mut d, 9);
        assert!(c.text_field && c.interactive);
        // A mutation turns the fake div into a button role.
        let m = json!({"type": 3, "timestamp": 11, "data": {"source": 0, "texts": [], "removes": [], "adds": [], "attributes": [{"id": 8, "attributes": {"role": "button"}}]}});
        d.decode("p", "d", "t", 2, &m.to_string()).unwrap();
        assert!(decoded_click(&mut d, 8).interactive);
        // An added subtree hangs under its parent.
        let m = json!({"type": 3, "timestamp": 12, "data": {"source": 0, "texts": [], "removes": [{"parentId": 5, "id": 9}], "attributes": [],
            "adds": [{"parentId": 5, "nextId": null, "node": {"type": 2, "tagName": "a", "attributes": {"href": "/x", "class": "nav"}, "childNodes": [{"type": 3, "textContent": "x", "id": 21}], "id": 20}}]}});
        let e = d.decode("p", "d", "t", 3, &m.to_string()).unwrap();
        assert!(matches!(e.envelope.kind, Some(Kind::Mutation(DomMutation { adds: 1, removes: 1, .. }))));
        let c = decoded_click(&mut d, 21);
        assert_eq!(c.selector, "section#hero > div.cta.big > a.nav");
        assert!(c.interactive);
        assert_eq!(decoded_click(&mut d, 9).selector, "", "removed");
    }

    #[test]
    fn console_plugin_uncaught_errors() {
        let mut d = Decoder::new();
        let e = json!({"type": 6, "timestamp": 5, "data": {"plugin": "rrweb/console@1", "payload": {"level": "error", "trace": ["HTMLButtonElement.<anonymous> (http://x.test/app.js:26:25)"], "payload": ["\"Uncaught TypeError: boom\""]}}});
        match d.decode("p", "d", "t", 0, &e.to_string()).unwrap().envelope.kind {
            Some(Kind::Error(err)) => {
                assert_eq!(err.message, "Uncaught TypeError: boom");
                assert_eq!(err.source, "http://x.test/app.js:26:25");
            }
            other => panic!("{other:?}"),
        }
        let log = json!({"type": 6, "timestamp": 5, "data": {"plugin": "rrweb/console@1", "payload": {"level": "error", "trace": [], "payload": ["\"handled\""]}}});
        assert!(matches!(d.decode("p", "d", "t", 0, &log.to_string()).unwrap().envelope.kind, Some(Kind::Activity(_))));
        let custom = json!({"type": 5, "timestamp": 5, "data": {"tag": "error", "payload": {"message": "x", "source": "s.js", "stack": ""}}});
        assert!(matches!(d.decode("p", "d", "t", 0, &custom.to_string()).unwrap().envelope.kind, Some(Kind::Error(_))));
    }

    fn check(raw: &str, expect: Result<Option<Note>, &str>) {
        let got = Decoder::new().decode("p", "d", "t", 0, raw);
        match (got, expect) {
            (Ok(d), Ok(note)) => assert_eq!(d.note, note, "{raw}"),
            (Err(e), Err(needle)) => assert!(e.reason.contains(needle), "{raw}: {e} should mention {needle}"),
            (got, expect) => panic!("{raw}: got {got:?}, expected {expect:?}"),
        }
    }

    #[test]
    fn well_formed_events_always_decode_and_say_what_was_missing() {
        check(r#"{"type": 7, "timestamp": 1, "data": {"url": "blob:x", "payload": {}}}"#, Ok(None));
        check(r#"{"type": 42, "timestamp": 1, "data": {}}"#, Ok(Some(Note::UnknownType)));
        check(
            r#"{"type": 4, "timestamp": 1, "data": {"href": "", "width": 1, "height": 1}}"#,
            Ok(Some(Note::MetaWithoutHref)),
        );
        check(r#"{"type": 4, "timestamp": 1, "data": {}}"#, Ok(Some(Note::MetaWithoutHref)));
        check(
            r#"{"type": 3, "timestamp": 1, "data": {"source": 2, "type": 2, "id": 5}}"#,
            Ok(Some(Note::ClickWithoutPosition)),
        );
        check(r#"{"type": 3, "timestamp": 1, "data": {"source": 3, "id": 1}}"#, Ok(Some(Note::Incomplete)));
        check(r#"{"type": 3, "timestamp": 1}"#, Ok(Some(Note::Incomplete)));
        check(
            r#"{"type": 3, "timestamp": 1.5e12, "data": {"source": 4, "width": "wide", "height": 2}}"#,
            Ok(Some(Note::Incomplete)),
        );
        check(r#"{"type": 4, "data": {}}"#, Err("timestamp"));
        check(r#"{"type": "4", "timestamp": 1}"#, Err("integer `type`"));
        check("[1, 2]", Err("object"));
        check(r#"{"type": 4, "timestamp": 1"#, Err("invalid"));
    }

    #[test]
    fn events_are_read_in_any_field_order_and_a_bad_snapshot_changes_nothing() {
        let snap = snapshot();
        // The same snapshot with its keys sorted (`data` before `type`), as some JSON
        // writers store events: it is read once its type is known, to the same nodes.
        let data = &snap[snap.find("{\"initialOffset\"").unwrap()..snap.len() - 1];
        let sorted = format!(r#"{{"data": {data}, "timestamp": 2, "type": 2}}"#);
        let mut d = Decoder::new();
        let e = d.decode("p", "d", "t", 0, &sorted).unwrap();
        assert!(matches!(e.envelope.kind, Some(Kind::Snapshot(DomSnapshot { scroll_y: 40, .. }))));
        assert_eq!(e.note, None);
        assert_eq!(decoded_click(&mut d, 7).selector, "section#hero > div.cta.big > button");
        let nodes = d.nodes();
        // Snapshots of another page that turn out not to be events (no timestamp after the
        // nodes, a field given twice, text cut short) leave the tab's map as it was.
        let other = r#"{"type": 0, "childNodes": [{"type": 2, "tagName": "a", "attributes": {}, "childNodes": [], "id": 7}], "id": 1}"#;
        for bad in [
            format!(r#"{{"type": 2, "data": {{"node": {other}}}}}"#),
            format!(r#"{{"type": 2, "timestamp": 3, "data": {{"node": {other}, "node": {other}}}}}"#),
            format!(r#"{{"type": 2, "timestamp": 3, "data": {{"node": {other}}}, "type": 2}}"#),
            format!(r#"{{"type": 2, "timestamp": 3, "data": {{"node": {other}"#),
            format!(r#"{{"data": {{"node": {other}, "node": {other}}}, "timestamp": 3, "type": 2}}"#),
        ] {
            assert!(d.decode("p", "d", "t", 0, &bad).is_err(), "{bad}");
            assert_eq!(d.nodes(), nodes, "{bad}");
            assert_eq!(decoded_click(&mut d, 7).selector, "section#hero > div.cta.big > button", "{bad}");
        }
        assert!(d.spare.is_empty(), "nothing is left in the spare map");
        // A null `node` is a snapshot without nodes: noted, and the map stays too.
        let e = d.decode("p", "d", "t", 0, r#"{"type": 2, "timestamp": 3, "data": {"node": null}}"#).unwrap();
        assert_eq!(e.note, Some(Note::Incomplete));
        assert_eq!(d.nodes(), nodes);
    }

    #[test]
    fn mouse_positions_keep_what_fits_and_skip_the_rest() {
        let mut d = Decoder::new();
        let raw = r#"{"type": 3, "timestamp": 5, "data": {"source": 1, "positions": [{"x": 1, "y": 2, "id": 4, "timeOffset": -5},
            {"x": "a", "y": 1}, 7, {"x": 1.5e20, "y": 3}, {"x": 3, "y": 4, "x": 5}, {"x": 2.7, "y": -3e9}, null, [1, 2]]}}"#;
        match d.decode("p", "d", "t", 0, raw).unwrap().envelope.kind {
            Some(Kind::MouseMove(m)) => assert_eq!(
                m.positions,
                vec![Position { x: 1, y: 2, time_offset: -5 }, Position { x: 2, y: i32::MIN, time_offset: 0 }]
            ),
            other => panic!("{other:?}"),
        }
        let touch = r#"{"type": 3, "timestamp": 5, "data": {"positions": "none", "source": 6}}"#;
        assert!(
            matches!(d.decode("p", "d", "t", 0, touch).unwrap().envelope.kind, Some(Kind::TouchMove(TouchMove { positions })) if positions.is_empty())
        );
        let missing = r#"{"type": 3, "timestamp": 5, "data": {"source": 1, "positions": null}}"#;
        assert_eq!(d.decode("p", "d", "t", 0, missing).unwrap().note, Some(Note::Incomplete));
    }

    #[test]
    fn idle_tabs_are_forgotten_and_what_is_held_is_counted() {
        let mut d = Decoder::new();
        assert_eq!(d.heap_bytes(), 0);
        d.decode("p", "d", "a", 0, &snapshot()).unwrap();
        let held = d.heap_bytes();
        assert!(held > 200, "a tab with nodes holds {held} bytes");
        assert_eq!(d.forget_idle(std::time::Duration::from_secs(60)), 0, "a tab in use stays");
        assert!(d.knows("p", "d", "a"));
        std::thread::sleep(std::time::Duration::from_millis(5));
        d.decode("p", "d", "b", 0, &snapshot()).unwrap();
        assert_eq!(d.forget_idle(std::time::Duration::from_millis(4)), 1, "the idle tab goes");
        assert!(!d.knows("p", "d", "a") && d.knows("p", "d", "b"));
        assert_eq!(d.nodes(), d.tabs.values().map(|t| t.nodes.len()).sum::<usize>());
        assert_eq!(d.forget_idle(std::time::Duration::ZERO), 1);
        assert_eq!((d.tabs(), d.nodes()), (0, 0));
    }

    #[test]
    fn node_maps_are_bounded_per_tab_and_in_all() {
        let limits =
            DecoderLimits { max_nodes_per_tab: 50, max_nodes_total: 120, max_tabs: 100, max_payload_bytes: 10 };
        let mut d = Decoder::with_limits(limits);
        let children: Vec<String> = (10..200)
            .map(|i| format!(r#"{{"type": 2, "tagName": "p", "attributes": {{}}, "childNodes": [], "id": {i}}}"#))
            .collect();
        let snap = format!(
            r#"{{"type": 2, "timestamp": 1, "data": {{"node": {{"type": 0, "childNodes": [{}], "id": 1}}}}}}"#,
            children.join(",")
        );
        for tab in ["a", "b", "c", "d"] {
            let e = d.decode("p", "d", tab, 0, &snap).unwrap();
            assert_eq!(e.note, Some(Note::NodeLimit));
            assert!(d.nodes() <= 120, "{} nodes", d.nodes());
        }
        assert!(d.tabs() < 4, "the oldest tabs were forgotten");
        assert!(d.knows("p", "d", "d"), "not the one in use");
        let big =
            json!({"type": 5, "timestamp": 1, "data": {"tag": "buy", "payload": {"a": "long enough"}}}).to_string();
        let e = d.decode("p", "d", "a", 0, &big).unwrap();
        assert_eq!(e.note, Some(Note::PayloadTooLarge));
    }
}
