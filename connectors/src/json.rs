//! The JSON event format (what the SDK sends and what `--events` files hold, one
//! object per line), decoded into envelopes with errors that name the field.
//!
//! ```json
//! {"type": "click", "device_id": "d1", "tab_id": "t1", "seq": 7, "ts": 1795342061075,
//!  "url": "https://shop.test/cart", "x": 480, "y": 432, "selector": "button#buy",
//!  "tag": "button", "interactive": true}
//! ```
//!
//! Types: `page_view` (referrer, viewport_width, viewport_height, user_agent,
//! page_height, country, title), `click` (x, y, page_x, page_y, selector, tag,
//! interactive, text_field, pointer: mouse|touch|pen), `scroll` (node, x, y),
//! `mouse_move` and `touch_move` (positions: [{x, y, t}] with t the offset in ms),
//! `input` (node), `resize` (width, height), `mutation`, `snapshot` (scroll_x,
//! scroll_y), `error` (message, source, stack, fingerprint), `exit` (hidden), `custom`
//! (name, properties), `identify` (user_id, traits), `vitals` (lcp, cls, inp, ttfb, fcp:
//! numbers, ms but cls), `activity` (name), and `rrweb` (event: a raw rrweb event, decoded
//! with the tab's node map; `ts` defaults to its timestamp).

use serde_json::value::RawValue;
use sightflow_proto::v1::envelope::Kind;
use sightflow_proto::v1::{
    Activity, Click, CustomEvent, DomMutation, DomSnapshot, Envelope, Identify, Input, JsError, MouseMove, PageExit,
    PageView, PointerType, Position, Scroll, TouchMove, ViewportResize, WebVitals,
};

use crate::files::BadElement;
use crate::rrweb::{DecodeError, Decoders, Key, Note};
use crate::validate::Invalid;

/// Identity that events may leave out.
#[derive(Clone, Debug, Default)]
pub struct Defaults {
    /// Project key for events without `project`.
    pub project: String,
    /// Device id for events without `device_id`.
    pub device_id: String,
}

/// An object's fields as their JSON texts, read as each is asked for.
struct Fields<'a> {
    fields: Vec<(Key<'a>, &'a RawValue)>,
}

impl<'a> Fields<'a> {
    fn get(&self, k: &str) -> Option<&'a RawValue> {
        self.fields.iter().find(|(f, _)| f.0 == k).map(|(_, v)| *v).filter(|v| v.get() != "null")
    }

    fn str(&self, k: &'static str) -> Result<Option<std::borrow::Cow<'a, str>>, BadEvent> {
        match self.get(k) {
            None => Ok(None),
            Some(v) if v.get().starts_with('"') => {
                serde_json::from_str::<Key<'a>>(v.get()).map(|s| Some(s.0)).map_err(|e| json_error(&e))
            }
            Some(v) => Err(BadEvent::WrongType { key: k, expected: "a string", got: kind_name(v).into() }),
        }
    }

    fn need_str(&self, k: &'static str, ty: &'static str) -> Result<std::borrow::Cow<'a, str>, BadEvent> {
        self.str(k)?.ok_or(BadEvent::Missing { key: k, ty })
    }

    fn string(&self, k: &'static str) -> Result<String, BadEvent> {
        Ok(self.str(k)?.map(|s| s.into_owned()).unwrap_or_default())
    }

    /// A number's text, or the error for a field that is not a number.
    fn number(&self, k: &'static str, expected: &'static str) -> Result<Option<&'a str>, BadEvent> {
        match self.get(k) {
            None => Ok(None),
            Some(v) if kind_name(v) == "a number" => Ok(Some(v.get())),
            Some(v) => Err(BadEvent::WrongType { key: k, expected, got: kind_name(v).into() }),
        }
    }

    fn int(&self, k: &'static str) -> Result<Option<i64>, BadEvent> {
        let Some(n) = self.number(k, "an integer")? else { return Ok(None) };
        let f = || n.parse::<f64>().ok().filter(|f| f.is_finite() && f.abs() < 9.0e15).map(|f| f as i64);
        match n.parse::<i64>().ok().or_else(f) {
            Some(i) => Ok(Some(i)),
            None => Err(BadEvent::WrongType { key: k, expected: "an integer", got: shown(n) }),
        }
    }

    fn need_int(&self, k: &'static str) -> Result<i64, BadEvent> {
        self.int(k)?.ok_or(BadEvent::Missing { key: k, ty: "" })
    }

    fn i32(&self, k: &'static str) -> Result<i32, BadEvent> {
        let v = self.need_int(k)?;
        i32::try_from(v).map_err(|_| BadEvent::OutOfRange {
            key: k,
            value: v,
            min: i32::MIN.into(),
            max: i32::MAX.into(),
        })
    }

    fn u32_or(&self, k: &'static str, default: u32) -> Result<u32, BadEvent> {
        match self.int(k)? {
            None => Ok(default),
            Some(v) => {
                u32::try_from(v).map_err(|_| BadEvent::OutOfRange { key: k, value: v, min: 0, max: u32::MAX.into() })
            }
        }
    }

    fn f64(&self, k: &'static str) -> Result<Option<f64>, BadEvent> {
        let Some(n) = self.number(k, "a number")? else { return Ok(None) };
        match n.parse::<f64>() {
            Ok(f) if f.is_finite() => Ok(Some(f)),
            _ => Err(BadEvent::WrongType { key: k, expected: "a finite number", got: shown(n) }),
        }
    }

    /// An object field as compact JSON text.
    fn object(&self, k: &'static str) -> Result<String, BadEvent> {
        match self.get(k) {
            None => Ok(String::new()),
            Some(p) if p.get().starts_with('{') => {
                serde_json::from_str::<serde_json::Value>(p.get()).map(|v| v.to_string()).map_err(|e| json_error(&e))
            }
            Some(v) => Err(BadEvent::WrongType { key: k, expected: "an object", got: kind_name(v).into() }),
        }
    }

    fn bool(&self, k: &'static str) -> Result<bool, BadEvent> {
        match self.get(k) {
            None => Ok(false),
            Some(v) if v.get() == "true" => Ok(true),
            Some(v) if v.get() == "false" => Ok(false),
            Some(v) => Err(BadEvent::WrongType { key: k, expected: "true or false", got: kind_name(v).into() }),
        }
    }
}

/// Why a JSON event is refused: what was wrong, and where.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BadEvent {
    /// The event's JSON is not an object.
    #[error("an event must be a JSON object, got {got}")]
    NotAnObject {
        /// What it is instead (`an array`, `a number`, ...).
        got: &'static str,
    },
    /// The event's text is not valid JSON (the parser's message).
    #[error("invalid JSON: {0}")]
    Json(String),
    /// The event's text is longer than allowed.
    #[error("the event is {len} bytes of JSON, at most {max} allowed")]
    TooLarge {
        /// Its length in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// An `rrweb` event's fields other than `event` exceed the SDK event limit.
    #[error("the event has more than {max} bytes of JSON besides its `event`, at most {max} allowed")]
    TooLargeBesidesEvent {
        /// The SDK event limit in bytes.
        max: usize,
    },
    /// A raw rrweb event is longer than allowed.
    #[error("the rrweb event is {len} bytes of JSON, at most {max} allowed")]
    RrwebTooLarge {
        /// Its length in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// A required field is absent (or null).
    #[error("field `{key}` is required{}", if ty.is_empty() { String::new() } else { format!(" for type {ty}") })]
    Missing {
        /// The field's name.
        key: &'static str,
        /// The event type that requires it; empty when every type does.
        ty: &'static str,
    },
    /// A field has the wrong JSON type.
    #[error("field `{key}` must be {expected}, got {got}")]
    WrongType {
        /// The field's name.
        key: &'static str,
        /// What it must be (`a string`, `an integer`, ...).
        expected: &'static str,
        /// What it is, or the number that is not an integer.
        got: String,
    },
    /// An integer field does not fit its type.
    #[error("field `{key}` is out of range: {value} (expected {min} to {max})")]
    OutOfRange {
        /// The field's name.
        key: &'static str,
        /// The value given.
        value: i64,
        /// The smallest value accepted.
        min: i64,
        /// The largest value accepted.
        max: i64,
    },
    /// A field that counts (`seq`) is negative.
    #[error("field `{key}` must not be negative, got {value}")]
    Negative {
        /// The field's name.
        key: &'static str,
        /// The value given.
        value: i64,
    },
    /// `pointer` is not one of the known pointer types (the value given).
    #[error("field `pointer` must be mouse, touch or pen, got {0:?}")]
    Pointer(String),
    /// An element of `positions` is bad.
    #[error("positions[{index}]: {source}")]
    Position {
        /// Its index in `positions`.
        index: usize,
        /// What is wrong with it.
        source: Box<BadEvent>,
    },
    /// An element of `positions` is not an object.
    #[error("positions[{index}] must be an object")]
    PositionNotAnObject {
        /// Its index in `positions`.
        index: usize,
    },
    /// A `page_view` with an empty or absent `url`.
    #[error("a page view needs a `url`")]
    PageViewWithoutUrl,
    /// `type` is none of the known event types (the value given).
    #[error(
        "unknown event type {0:?} (expected page_view, click, scroll, mouse_move, touch_move, input, resize, mutation, snapshot, error, exit, custom, activity or rrweb)"
    )]
    UnknownType(String),
    /// The raw rrweb event does not decode.
    #[error(transparent)]
    Rrweb(#[from] DecodeError),
    /// A raw rrweb event in a protobuf batch is not UTF-8.
    #[error("rrweb event JSON is not valid UTF-8 (from byte {at})")]
    NotUtf8 {
        /// Byte offset of the first invalid byte.
        at: usize,
    },
    /// The array element holding the event is empty or cut off.
    #[error(transparent)]
    Element(#[from] BadElement),
    /// The decoded event fails validation.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// The event names a project other than the one the request is authorised for.
    #[error("event belongs to project {event:?}, but the request is for {request:?}")]
    WrongProject {
        /// The event's project.
        event: String,
        /// The request's project.
        request: String,
    },
}

impl BadEvent {
    /// A short name of the kind of refusal, for metrics (a fixed set).
    pub fn label(&self) -> &'static str {
        match self {
            BadEvent::NotAnObject { .. } => "not_an_object",
            BadEvent::Json(_) => "json",
            BadEvent::NotUtf8 { .. } => "not_utf8",
            BadEvent::TooLarge { .. } | BadEvent::TooLargeBesidesEvent { .. } => "too_large",
            BadEvent::RrwebTooLarge { .. } => "rrweb_too_large",
            BadEvent::Missing { .. } => "missing_field",
            BadEvent::WrongType { .. } => "wrong_type",
            BadEvent::OutOfRange { .. } | BadEvent::Negative { .. } => "out_of_range",
            BadEvent::Pointer(_) | BadEvent::Position { .. } | BadEvent::PositionNotAnObject { .. } => "position",
            BadEvent::PageViewWithoutUrl => "page_view_without_url",
            BadEvent::UnknownType(_) => "unknown_type",
            BadEvent::Rrweb(_) => "rrweb",
            BadEvent::Element(_) => "element",
            BadEvent::Invalid(_) => "invalid",
            BadEvent::WrongProject { .. } => "wrong_project",
        }
    }
}

fn json_error(e: &serde_json::Error) -> BadEvent {
    BadEvent::Json(e.to_string())
}

/// A number's text as an error shows it: at most 24 characters (JSON allows any length).
fn shown(n: &str) -> String {
    match n.char_indices().nth(24) {
        Some((at, _)) => format!("{}… ({} digits)", &n[..at], n.len()),
        None => n.to_string(),
    }
}

/// What kind of JSON value a text is, by its first character.
fn kind_name(v: &RawValue) -> &'static str {
    match v.get().as_bytes().first() {
        Some(b'n') => "null",
        Some(b't' | b'f') => "a boolean",
        Some(b'"') => "a string",
        Some(b'[') => "an array",
        Some(b'{') => "an object",
        _ => "a number",
    }
}

fn positions(f: &Fields<'_>) -> Result<Vec<Position>, BadEvent> {
    let list = match f.get("positions") {
        Some(v) if v.get().starts_with('[') => v,
        Some(v) => {
            return Err(BadEvent::WrongType { key: "positions", expected: "an array", got: kind_name(v).into() });
        }
        None => return Err(BadEvent::Missing { key: "positions", ty: "" }),
    };
    let items: Vec<&RawValue> = serde_json::from_str(list.get()).map_err(|e| json_error(&e))?;
    items
        .into_iter()
        .enumerate()
        .map(|(index, p)| {
            if !p.get().starts_with('{') {
                return Err(BadEvent::PositionNotAnObject { index });
            }
            let pf = Fields { fields: serde_json::from_str::<EventItem<'_>>(p.get()).map_err(|e| json_error(&e))?.0? };
            let at = |e: BadEvent| BadEvent::Position { index, source: Box::new(e) };
            Ok(Position {
                x: pf.i32("x").map_err(at)?,
                y: pf.i32("y").map_err(at)?,
                time_offset: pf.int("t").map_err(at)?.unwrap_or(0).clamp(-3_600_000, 0) as i32,
            })
        })
        .collect()
}

/// Size bounds on one event, checked before it is parsed.
#[derive(Clone, Debug)]
pub struct Sizes {
    /// Largest SDK event (any type but `rrweb`), in JSON bytes.
    pub max_event_bytes: usize,
    /// Largest raw rrweb event (the `event` of type `rrweb`), in JSON bytes.
    pub max_rrweb_event_bytes: usize,
}

impl Default for Sizes {
    fn default() -> Self {
        Sizes { max_event_bytes: 64 << 10, max_rrweb_event_bytes: 16 << 20 }
    }
}

/// One decoded JSON event.
#[derive(Debug, Clone)]
pub struct DecodedEvent<'a> {
    /// The event as an envelope (not yet validated).
    pub envelope: Envelope,
    /// The raw rrweb event's text, for type `rrweb` (kept for replay).
    pub rrweb: Option<&'a str>,
    /// What the views could not use of a raw rrweb event.
    pub note: Option<Note>,
}

/// Decodes one JSON event from its text; `index` is its position (the default sequence
/// number). Events are bounded by `sizes` before they are parsed, and only an SDK event
/// (small) is parsed into a JSON tree; a raw rrweb event goes to the rrweb decoder as
/// text.
pub fn decode_event<'a>(
    text: &'a str,
    defaults: &Defaults,
    index: u64,
    decoders: &Decoders,
    sizes: &Sizes,
) -> Result<DecodedEvent<'a>, BadEvent> {
    let t = text.trim_start();
    if !t.starts_with('{') {
        let got = match t.bytes().next() {
            Some(b'[') => "an array",
            Some(b'"') => "a string",
            Some(b't' | b'f') => "a boolean",
            Some(b'n') => "null",
            Some(b'-' | b'0'..=b'9') => "a number",
            _ => "no JSON value",
        };
        return Err(BadEvent::NotAnObject { got });
    }
    let max = sizes.max_rrweb_event_bytes.max(sizes.max_event_bytes);
    if text.len() > max {
        return Err(BadEvent::TooLarge { len: text.len(), max });
    }
    // The fields as raw text: nothing is built yet.
    let fields = serde_json::from_str::<EventItem<'a>>(text).map_err(|e| json_error(&e))?.0?;
    decode_fields(fields, text.len(), defaults, index, decoders, sizes)
}

/// An event (an array element of a batch, read with the batch, or a whole text): an
/// object's fields as raw text (or the first field given twice), or what else it is.
pub struct EventItem<'a>(Result<Vec<(Key<'a>, &'a RawValue)>, BadEvent>);

impl<'de> serde::Deserialize<'de> for EventItem<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<EventItem<'de>, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = EventItem<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an event")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<EventItem<'de>, A::Error> {
                let mut out: Vec<(Key<'de>, &'de RawValue)> = Vec::new();
                let mut twice: Option<String> = None;
                while let Some((k, v)) = m.next_entry::<Key<'de>, &'de RawValue>()? {
                    if out.iter().any(|(o, _)| o.0 == k.0) {
                        twice.get_or_insert_with(|| k.0.to_string());
                    }
                    out.push((k, v));
                }
                Ok(EventItem(match twice {
                    None => Ok(out),
                    Some(k) => Err(BadEvent::Json(format!("field `{k}` is given twice"))),
                }))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut s: A) -> Result<EventItem<'de>, A::Error> {
                // Skipped as raw text: however deep it nests, it is only not an event.
                while s.next_element::<&'de RawValue>()?.is_some() {}
                Ok(not_an_object("an array"))
            }
            fn visit_str<E>(self, _: &str) -> Result<EventItem<'de>, E> {
                Ok(not_an_object("a string"))
            }
            fn visit_bool<E>(self, _: bool) -> Result<EventItem<'de>, E> {
                Ok(not_an_object("a boolean"))
            }
            fn visit_unit<E>(self) -> Result<EventItem<'de>, E> {
                Ok(not_an_object("null"))
            }
            fn visit_u64<E>(self, _: u64) -> Result<EventItem<'de>, E> {
                Ok(not_an_object("a number"))
            }
            fn visit_i64<E>(self, _: i64) -> Result<EventItem<'de>, E> {
                Ok(not_an_object("a number"))
            }
            fn visit_f64<E>(self, _: f64) -> Result<EventItem<'de>, E> {
                Ok(not_an_object("a number"))
            }
        }
        d.deserialize_any(V)
    }
}

fn not_an_object(got: &'static str) -> EventItem<'static> {
    EventItem(Err(BadEvent::NotAnObject { got }))
}

/// Decodes one event of a batch, read with the batch as an [`EventItem`]; as
/// [`decode_event`] with the event's length taken as its compact JSON's.
pub fn decode_item<'a>(
    item: EventItem<'a>,
    defaults: &Defaults,
    index: u64,
    decoders: &Decoders,
    sizes: &Sizes,
) -> Result<DecodedEvent<'a>, BadEvent> {
    let fields = item.0?;
    let len = 1 + fields.iter().map(|(k, v)| k.0.len() + 4 + v.get().len()).sum::<usize>();
    let max = sizes.max_rrweb_event_bytes.max(sizes.max_event_bytes);
    if len > max {
        return Err(BadEvent::TooLarge { len, max });
    }
    decode_fields(fields, len, defaults, index, decoders, sizes)
}

/// Decodes an event from its fields (as raw text); `len` is its length in JSON bytes.
fn decode_fields<'a>(
    mut fields: Vec<(Key<'a>, &'a RawValue)>,
    len: usize,
    defaults: &Defaults,
    index: u64,
    decoders: &Decoders,
    sizes: &Sizes,
) -> Result<DecodedEvent<'a>, BadEvent> {
    let is_rrweb = fields.iter().any(|(k, v)| k.0 == "type" && v.get() == "\"rrweb\"");
    let mut event: Option<&'a RawValue> = None;
    if is_rrweb && let Some(at) = fields.iter().position(|(k, _)| k.0 == "event") {
        event = Some(fields.swap_remove(at).1);
    }
    let small: usize = fields.iter().map(|(k, v)| k.0.len() + v.get().len()).sum();
    if small > sizes.max_event_bytes {
        let max = sizes.max_event_bytes;
        return Err(if is_rrweb { BadEvent::TooLargeBesidesEvent { max } } else { BadEvent::TooLarge { len, max } });
    }
    let f = Fields { fields };
    let ty = f.need_str("type", "")?;
    let project = f.str("project")?.map_or_else(|| defaults.project.clone(), |s| s.into_owned());
    let device_id = f.str("device_id")?.map_or_else(|| defaults.device_id.clone(), |s| s.into_owned());
    let tab_id = f.string("tab_id")?;
    let seq = match f.int("seq")? {
        Some(s) if s >= 0 => s as u64,
        Some(value) => return Err(BadEvent::Negative { key: "seq", value }),
        None => index,
    };
    if is_rrweb {
        let event = event.ok_or(BadEvent::Missing { key: "event", ty: "rrweb" })?.get();
        if event.len() > sizes.max_rrweb_event_bytes {
            return Err(BadEvent::RrwebTooLarge { len: event.len(), max: sizes.max_rrweb_event_bytes });
        }
        let tab = if tab_id.is_empty() { device_id.clone() } else { tab_id };
        let d = decoders.decode(&project, &device_id, &tab, seq, event)?;
        let mut envelope = d.envelope;
        if let Some(ts) = f.int("ts")? {
            envelope.ts = ts;
        }
        return Ok(DecodedEvent { envelope, rrweb: Some(event), note: d.note });
    }
    if len > sizes.max_event_bytes {
        return Err(BadEvent::TooLarge { len, max: sizes.max_event_bytes });
    }
    let envelope = decode_sdk(&f, &ty, project, device_id, tab_id, seq)?;
    Ok(DecodedEvent { envelope, rrweb: None, note: None })
}

/// An SDK event (every type but `rrweb`).
fn decode_sdk(
    f: &Fields<'_>,
    ty: &str,
    project: String,
    device_id: String,
    tab_id: String,
    seq: u64,
) -> Result<Envelope, BadEvent> {
    let ts = f.need_int("ts")?;
    let url = f.string("url")?;
    let kind = match ty {
        "page_view" if url.is_empty() => return Err(BadEvent::PageViewWithoutUrl),
        "page_view" => Kind::PageView(PageView {
            url: url.clone(),
            referrer: f.string("referrer")?,
            viewport_width: f.u32_or("viewport_width", 0)?,
            viewport_height: f.u32_or("viewport_height", 0)?,
            user_agent: f.string("user_agent")?,
            page_height: f.u32_or("page_height", 0)?,
            country: f.string("country")?,
            title: f.string("title")?,
        }),
        "click" => Kind::Click(Click {
            x: f.i32("x")?,
            y: f.i32("y")?,
            page_x: f.int("page_x")?.map(|v| v as i32),
            page_y: f.int("page_y")?.map(|v| v as i32),
            selector: f.string("selector")?,
            tag: f.string("tag")?,
            interactive: f.bool("interactive")?,
            text_field: f.bool("text_field")?,
            text: f.string("text")?,
            pointer: match f.str("pointer")?.as_deref() {
                None | Some("mouse") => PointerType::Mouse as i32,
                Some("touch") => PointerType::Touch as i32,
                Some("pen") => PointerType::Pen as i32,
                Some(other) => return Err(BadEvent::Pointer(other.to_string())),
            },
            no_position: false,
        }),
        "scroll" => {
            Kind::Scroll(Scroll { node: f.u32_or("node", 1)?, x: f.int("x")?.unwrap_or(0) as i32, y: f.i32("y")? })
        }
        "mouse_move" => Kind::MouseMove(MouseMove { positions: positions(f)? }),
        "touch_move" => Kind::TouchMove(TouchMove { positions: positions(f)? }),
        "input" => Kind::Input(Input { node: f.u32_or("node", 0)? }),
        "resize" => Kind::Resize(ViewportResize { width: f.u32_or("width", 0)?, height: f.u32_or("height", 0)? }),
        "mutation" => Kind::Mutation(DomMutation {
            adds: f.u32_or("adds", 0)?,
            removes: f.u32_or("removes", 0)?,
            attributes: f.u32_or("attributes", 0)?,
            texts: f.u32_or("texts", 0)?,
        }),
        "snapshot" => Kind::Snapshot(DomSnapshot {
            scroll_x: f.int("scroll_x")?.unwrap_or(0) as i32,
            scroll_y: f.int("scroll_y")?.unwrap_or(0) as i32,
        }),
        "error" => Kind::Error(JsError {
            message: f.need_str("message", "error")?.to_string(),
            source: f.string("source")?,
            stack: f.string("stack")?,
            fingerprint: f.string("fingerprint")?,
        }),
        "exit" => Kind::Exit(PageExit { hidden: f.bool("hidden")? }),
        "custom" => Kind::Custom(CustomEvent {
            name: f.need_str("name", "custom")?.to_string(),
            properties_json: f.object("properties")?,
        }),
        "identify" => Kind::Identify(Identify {
            user_id: f.need_str("user_id", "identify")?.to_string(),
            traits_json: f.object("traits")?,
        }),
        "vitals" => Kind::Vitals(WebVitals {
            lcp_ms: f.f64("lcp")?,
            cls: f.f64("cls")?,
            inp_ms: f.f64("inp")?,
            ttfb_ms: f.f64("ttfb")?,
            fcp_ms: f.f64("fcp")?,
        }),
        "activity" => Kind::Activity(Activity { name: f.string("name")? }),
        other => return Err(BadEvent::UnknownType(other.to_string())),
    };
    Ok(Envelope { project, device_id, tab_id, seq, ts, url, logical_time: 0, kind: Some(kind) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn check(v: Value, expect: Result<(), &str>) {
        let d = Defaults { project: "p".into(), device_id: String::new() };
        let text = v.to_string();
        let got = decode_event(&text, &d, 0, &Decoders::default(), &Sizes::default());
        match (got, expect) {
            (Ok(_), Ok(())) => {}
            (Err(e), Err(needle)) => {
                let e = e.to_string();
                assert!(e.contains(needle), "error {e:?} should contain {needle:?}")
            }
            (got, expect) => panic!("{v}: got {got:?}, expected {expect:?}"),
        }
    }

    #[test]
    fn fields_are_read_from_their_text_as_json_means_them() {
        let d = Defaults { project: "p".into(), device_id: String::new() };
        let text = r#"{"type": "custom", "device_id": "d\u00e9\"", "ts": 1.5e3, "seq": 7, "tab_id": null,
            "name": "buy", "properties": { "plan" : "pro", "n": [1, 2] }}"#;
        let e = decode_event(text, &d, 0, &Decoders::default(), &Sizes::default()).unwrap().envelope;
        assert_eq!((e.device_id.as_str(), e.ts, e.seq, e.tab_id.as_str()), ("dé\"", 1500, 7, ""));
        assert_eq!(e.project, "p", "the default project");
        match e.kind {
            Some(Kind::Custom(c)) => assert_eq!(c.properties_json, r#"{"n":[1,2],"plan":"pro"}"#),
            other => panic!("{other:?}"),
        }
        for (text, says) in [
            (r#"{"type": "click", "device_id": "d", "ts": 1, "x": 1, "y": 2, "x": 3}"#, "field `x` is given twice"),
            (
                r#"{"type": "vitals", "device_id": "d", "ts": 1, "lcp": 1e400}"#,
                "`lcp` must be a finite number, got 1e400",
            ),
            (r#"{"type": "click", "device_id": "d", "ts": 1e20, "x": 1, "y": 2}"#, "`ts` must be an integer, got 1e20"),
            (
                &format!(r#"{{"type": "click", "device_id": "d", "ts": 1{}, "x": 1, "y": 2}}"#, "0".repeat(5000)),
                "`ts` must be an integer, got 100000000000000000000000… (5001 digits)",
            ),
        ] {
            let err = decode_event(text, &d, 0, &Decoders::default(), &Sizes::default()).unwrap_err();
            assert!(err.to_string().contains(says), "{err}");
        }
    }

    #[test]
    fn events_decode_or_name_the_field() {
        check(json!({"type": "click", "device_id": "d", "ts": 1, "x": 1, "y": 2}), Ok(()));
        check(
            json!({"type": "click", "device_id": "d", "ts": 1, "x": "1", "y": 2}),
            Err("field `x` must be an integer, got a string"),
        );
        check(json!({"type": "click", "device_id": "d", "ts": 1, "y": 2}), Err("field `x` is required"));
        check(
            json!({"type": "page_view", "device_id": "d", "ts": 1, "url": "/", "viewport_width": -5}),
            Err("viewport_width"),
        );
        check(json!({"type": "page_view", "device_id": "d", "ts": 1}), Err("needs a `url`"));
        check(
            json!({"type": "click", "device_id": "d", "ts": 1, "x": 1, "y": 2, "pad": "x".repeat(70_000)}),
            Err("65536"),
        );
        check(
            json!({"type": "rrweb", "device_id": "d", "event": {"type": 3, "timestamp": 5, "data": {"source": 5, "id": 1, "text": "x".repeat(70_000)}}}),
            Ok(()),
        );
        check(json!({"type": "rrweb", "device_id": "d", "event": {"type": 7, "timestamp": 5, "data": {}}}), Ok(()));
        check(json!({"type": "warp", "device_id": "d", "ts": 1}), Err("unknown event type \"warp\""));
        check(json!({"device_id": "d", "ts": 1}), Err("field `type` is required"));
        check(
            json!({"type": "custom", "device_id": "d", "ts": 1, "name": "buy", "properties": [1]}),
            Err("`properties` must be an object"),
        );
        check(
            json!({"type": "mouse_move", "device_id": "d", "ts": 1, "positions": [{"x": 1}]}),
            Err("positions[0]: field `y` is required"),
        );
        check(
            json!({"type": "rrweb", "device_id": "d", "event": {"type": 4, "timestamp": 5, "data": {"href": "http://x/"}}}),
            Ok(()),
        );
        check(
            json!({"type": "identify", "device_id": "d", "ts": 1, "user_id": "u-7", "traits": {"plan": "pro"}}),
            Ok(()),
        );
        check(json!({"type": "identify", "device_id": "d", "ts": 1}), Err("field `user_id` is required"));
        check(json!({"type": "identify", "device_id": "d", "ts": 1, "user_id": 7}), Err("`user_id` must be a string"));
        check(json!({"type": "vitals", "device_id": "d", "ts": 1, "lcp": 812.5, "cls": 0.02}), Ok(()));
        check(json!({"type": "vitals", "device_id": "d", "ts": 1, "lcp": "fast"}), Err("`lcp` must be a number"));
        check(json!({"type": "exit", "device_id": "d", "ts": 1, "hidden": 1}), Err("`hidden` must be true or false"));
        check(
            json!({"type": "click", "device_id": "d", "ts": 1.5, "x": [1], "y": 2}),
            Err("`x` must be an integer, got an array"),
        );
        check(json!([1]), Err("must be a JSON object, got an array"));
        check(json!(5), Err("must be a JSON object, got a number"));
    }
}
