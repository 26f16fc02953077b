//! Raw rrweb events to analytic envelopes.
//!
//! A [`Decoder`] keeps one node map per (project, device, tab), built from each
//! FullSnapshot and kept current by Mutation events, so that a click knows its target's
//! tag, a CSS selector and whether it is interactive or a text field. Page views come
//! from Meta events, scrolls, mouse positions, resizes, inputs and mutation markers from
//! IncrementalSnapshot events, errors from the console plugin (`rrweb/console@1`, level
//! `error`, message starting `Uncaught`) and from Custom events tagged `error`, and other
//! Custom events become custom events.

use std::collections::HashMap;

use serde_json::Value;
use sightflow_proto::v1::envelope::Kind;
use sightflow_proto::v1::{
    Activity, Click, CustomEvent, DomMutation, DomSnapshot, Envelope, Input, JsError, MouseMove, PageView, PointerType,
    Position, Scroll, TouchMove, ViewportResize,
};

/// Why one rrweb event could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct DecodeError {
    pub reason: String,
}

fn bad(reason: impl Into<String>) -> DecodeError {
    DecodeError { reason: reason.into() }
}

/// What the node map remembers of one DOM node.
#[derive(Clone, Debug, Default)]
struct Node {
    parent: u32,
    /// Lower-case tag for elements; empty for text and other nodes.
    tag: String,
    id_attr: String,
    classes: Vec<String>,
    role: String,
    input_type: String,
    has_href: bool,
    editable: bool,
    tabindex: bool,
}

/// The DOM of one tab as far as clicks need it.
#[derive(Default, Debug)]
pub struct NodeMap {
    nodes: HashMap<u32, Node>,
}

impl NodeMap {
    fn clear(&mut self) {
        self.nodes.clear();
    }

    fn insert_tree(&mut self, node: &Value, parent: u32) {
        let Some(id) = node.get("id").and_then(Value::as_u64) else {
            return;
        };
        let id = id as u32;
        let mut n = Node { parent, ..Default::default() };
        if node.get("type").and_then(Value::as_u64) == Some(2) {
            n.tag = node.get("tagName").and_then(Value::as_str).unwrap_or("").to_ascii_lowercase();
            if let Some(attrs) = node.get("attributes").and_then(Value::as_object) {
                for (k, v) in attrs {
                    set_attr(&mut n, k, v);
                }
            }
        }
        self.nodes.insert(id, n);
        if let Some(children) = node.get("childNodes").and_then(Value::as_array) {
            for c in children {
                self.insert_tree(c, id);
            }
        }
    }

    fn mutate(&mut self, data: &Value) {
        if let Some(removes) = data.get("removes").and_then(Value::as_array) {
            for r in removes {
                if let Some(id) = r.get("id").and_then(Value::as_u64) {
                    self.nodes.remove(&(id as u32));
                }
            }
        }
        if let Some(adds) = data.get("adds").and_then(Value::as_array) {
            for a in adds {
                let parent = a.get("parentId").and_then(Value::as_u64).unwrap_or(0) as u32;
                if let Some(node) = a.get("node") {
                    self.insert_tree(node, parent);
                }
            }
        }
        if let Some(attrs) = data.get("attributes").and_then(Value::as_array) {
            for a in attrs {
                let Some(id) = a.get("id").and_then(Value::as_u64) else {
                    continue;
                };
                let Some(n) = self.nodes.get_mut(&(id as u32)) else {
                    continue;
                };
                if let Some(map) = a.get("attributes").and_then(Value::as_object) {
                    for (k, v) in map {
                        set_attr(n, k, v);
                    }
                }
            }
        }
    }

    /// The element a click on `id` lands on (text nodes resolve to their parent).
    fn element(&self, id: u32) -> Option<(u32, &Node)> {
        let mut cur = id;
        for _ in 0..3 {
            let n = self.nodes.get(&cur)?;
            if !n.tag.is_empty() {
                return Some((cur, n));
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
            if n.tag.is_empty() || n.tag == "html" || n.tag == "body" {
                break;
            }
            let mut seg = n.tag.clone();
            if !n.id_attr.is_empty() {
                seg.push('#');
                seg.push_str(&n.id_attr);
                parts.push(seg);
                break;
            }
            for c in n.classes.iter().take(2) {
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
            let clickable_tag = matches!(
                n.tag.as_str(),
                "button" | "input" | "select" | "textarea" | "label" | "summary" | "option" | "details"
            ) || (n.tag == "a" && n.has_href);
            let clickable_role = matches!(
                n.role.as_str(),
                "button"
                    | "link"
                    | "checkbox"
                    | "menuitem"
                    | "tab"
                    | "switch"
                    | "radio"
                    | "option"
                    | "combobox"
                    | "textbox"
            );
            if clickable_tag || clickable_role || n.editable || n.tabindex {
                return true;
            }
            if n.tag == "body" || n.parent == 0 {
                return false;
            }
            cur = n.parent;
        }
        false
    }

    fn text_field(&self, id: u32) -> bool {
        let Some((_, n)) = self.element(id) else {
            return false;
        };
        match n.tag.as_str() {
            "textarea" | "select" => true,
            "input" => !matches!(
                n.input_type.as_str(),
                "checkbox" | "radio" | "button" | "submit" | "reset" | "file" | "image" | "range" | "color" | "hidden"
            ),
            _ => n.editable || n.role == "textbox",
        }
    }

    fn tag(&self, id: u32) -> String {
        self.element(id).map(|(_, n)| n.tag.clone()).unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

fn set_attr(n: &mut Node, k: &str, v: &Value) {
    let s = v.as_str().unwrap_or("");
    let present = !v.is_null() && v.as_bool() != Some(false);
    match k {
        "id" => n.id_attr = s.to_string(),
        "class" => n.classes = s.split_whitespace().filter(|c| c.len() <= 40).map(str::to_string).collect(),
        "role" => n.role = s.to_ascii_lowercase(),
        "type" => n.input_type = s.to_ascii_lowercase(),
        "href" => n.has_href = present,
        "contenteditable" => n.editable = present && s != "false",
        "tabindex" => n.tabindex = present && s.trim().parse::<i32>().is_ok_and(|t| t >= 0),
        _ => {}
    }
}

/// Per-tab decoding state.
#[derive(Default, Debug)]
struct TabState {
    nodes: NodeMap,
    url: String,
    last_used: u64,
}

/// Tabs kept before the least recently used are forgotten.
const MAX_TABS: usize = 50_000;

/// Decodes rrweb events, keeping a node map per tab (the most recently used
/// `MAX_TABS` of them).
#[derive(Default, Debug)]
pub struct Decoder {
    tabs: HashMap<(String, String, String), TabState>,
    clock: u64,
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// Tabs with decoding state.
    pub fn tabs(&self) -> usize {
        self.tabs.len()
    }

    /// Forgets a tab (its node map).
    pub fn forget(&mut self, project: &str, device: &str, tab: &str) {
        self.tabs.remove(&(project.to_string(), device.to_string(), tab.to_string()));
    }

    /// Whether a tab has decoding state (after a restart it has none until its events
    /// are replayed through the decoder again).
    pub fn knows(&self, project: &str, device: &str, tab: &str) -> bool {
        self.tabs.contains_key(&(project.to_string(), device.to_string(), tab.to_string()))
    }

    fn evict(&mut self) {
        if self.tabs.len() <= MAX_TABS {
            return;
        }
        let mut ages: Vec<u64> = self.tabs.values().map(|t| t.last_used).collect();
        ages.sort_unstable();
        let cut = ages[ages.len() / 10];
        self.tabs.retain(|_, t| t.last_used > cut);
    }

    /// Decodes one rrweb event into an envelope with the given identity.
    pub fn decode(
        &mut self,
        project: &str,
        device: &str,
        tab: &str,
        seq: u64,
        event: &Value,
    ) -> Result<Envelope, DecodeError> {
        let obj = event.as_object().ok_or_else(|| bad("an rrweb event must be a JSON object"))?;
        let ty = obj.get("type").and_then(Value::as_u64).ok_or_else(|| bad("rrweb event has no integer `type`"))?;
        let ts = obj
            .get("timestamp")
            .and_then(|v| v.as_i64().or_else(|| v.as_f64().map(|f| f as i64)))
            .ok_or_else(|| bad("rrweb event has no numeric `timestamp`"))?;
        let empty = Value::Null;
        let data = obj.get("data").unwrap_or(&empty);
        self.clock += 1;
        if !self.knows(project, device, tab) {
            self.evict();
        }
        let state = self.tabs.entry((project.to_string(), device.to_string(), tab.to_string())).or_default();
        state.last_used = self.clock;
        let num = |v: &Value, k: &str| v.get(k).and_then(|x| x.as_f64()).map(|f| f as i64);
        let need = |v: &Value, k: &str| {
            num(v, k).ok_or_else(|| bad(format!("rrweb type {ty} event has no numeric `data.{k}`")))
        };
        let kind = match ty {
            4 => {
                let href =
                    data.get("href").and_then(Value::as_str).ok_or_else(|| bad("Meta event has no `data.href`"))?;
                state.url = href.to_string();
                Kind::PageView(PageView {
                    url: href.to_string(),
                    viewport_width: num(data, "width").unwrap_or(0).clamp(0, 100_000) as u32,
                    viewport_height: num(data, "height").unwrap_or(0).clamp(0, 100_000) as u32,
                    ..Default::default()
                })
            }
            2 => {
                let node = data.get("node").ok_or_else(|| bad("FullSnapshot event has no `data.node`"))?;
                state.nodes.clear();
                state.nodes.insert_tree(node, 0);
                let off = data.get("initialOffset");
                Kind::Snapshot(DomSnapshot {
                    scroll_x: off.and_then(|o| num(o, "left")).unwrap_or(0) as i32,
                    scroll_y: off.and_then(|o| num(o, "top")).unwrap_or(0) as i32,
                })
            }
            3 => {
                let source = need(data, "source")?;
                match source {
                    0 => {
                        state.nodes.mutate(data);
                        let count = |k: &str| data.get(k).and_then(Value::as_array).map_or(0, |a| a.len() as u32);
                        Kind::Mutation(DomMutation {
                            adds: count("adds"),
                            removes: count("removes"),
                            attributes: count("attributes"),
                            texts: count("texts"),
                        })
                    }
                    1 | 6 => {
                        let positions = data
                            .get("positions")
                            .and_then(Value::as_array)
                            .ok_or_else(|| bad("MouseMove event has no `data.positions` array"))?
                            .iter()
                            .filter_map(|p| {
                                Some(Position {
                                    x: num(p, "x")? as i32,
                                    y: num(p, "y")? as i32,
                                    time_offset: num(p, "timeOffset").unwrap_or(0) as i32,
                                })
                            })
                            .collect();
                        if source == 1 {
                            Kind::MouseMove(MouseMove { positions })
                        } else {
                            Kind::TouchMove(TouchMove { positions })
                        }
                    }
                    2 => {
                        let t = need(data, "type")?;
                        if t == 2 {
                            let id = num(data, "id").unwrap_or(0) as u32;
                            let pointer = match num(data, "pointerType") {
                                Some(2) => PointerType::Touch,
                                Some(1) => PointerType::Pen,
                                _ => PointerType::Mouse,
                            };
                            Kind::Click(Click {
                                x: need(data, "x")? as i32,
                                y: need(data, "y")? as i32,
                                page_x: None,
                                page_y: None,
                                selector: state.nodes.selector(id),
                                tag: state.nodes.tag(id),
                                interactive: state.nodes.interactive(id),
                                text_field: state.nodes.text_field(id),
                                text: String::new(),
                                pointer: pointer as i32,
                            })
                        } else {
                            Kind::Activity(Activity { name: format!("mouse_interaction_{t}") })
                        }
                    }
                    3 => Kind::Scroll(Scroll {
                        node: need(data, "id")? as u32,
                        x: num(data, "x").unwrap_or(0) as i32,
                        y: need(data, "y")? as i32,
                    }),
                    4 => Kind::Resize(ViewportResize {
                        width: need(data, "width")?.clamp(0, 100_000) as u32,
                        height: need(data, "height")?.clamp(0, 100_000) as u32,
                    }),
                    5 => Kind::Input(Input { node: num(data, "id").unwrap_or(0) as u32 }),
                    other => Kind::Activity(Activity { name: format!("incremental_{other}") }),
                }
            }
            5 => {
                let tag =
                    data.get("tag").and_then(Value::as_str).ok_or_else(|| bad("Custom event has no `data.tag`"))?;
                let payload = data.get("payload").unwrap_or(&empty);
                if tag == "error" {
                    let field = |k: &str| payload.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                    let message = payload.as_str().map(str::to_string).unwrap_or_else(|| field("message"));
                    Kind::Error(JsError {
                        message,
                        source: field("source"),
                        stack: field("stack"),
                        fingerprint: String::new(),
                    })
                } else {
                    Kind::Custom(CustomEvent { name: tag.to_string(), properties_json: payload.to_string() })
                }
            }
            6 => {
                let plugin = data.get("plugin").and_then(Value::as_str).unwrap_or("");
                match console_error(plugin, data.get("payload").unwrap_or(&empty)) {
                    Some(e) => Kind::Error(e),
                    None => Kind::Activity(Activity { name: format!("plugin:{plugin}") }),
                }
            }
            0 | 1 => {
                Kind::Activity(Activity { name: if ty == 0 { "dom_content_loaded".into() } else { "load".into() } })
            }
            other => return Err(bad(format!("unknown rrweb event type {other}"))),
        };
        Ok(Envelope {
            project: project.to_string(),
            device_id: device.to_string(),
            tab_id: tab.to_string(),
            seq,
            ts,
            url: state.url.clone(),
            logical_time: 0,
            kind: Some(kind),
        })
    }
}

/// An uncaught error recorded by the console plugin.
fn console_error(plugin: &str, payload: &Value) -> Option<JsError> {
    if plugin != "rrweb/console@1" || payload.get("level").and_then(Value::as_str) != Some("error") {
        return None;
    }
    let first = payload.get("payload").and_then(Value::as_array)?.first()?;
    // The plugin stores each argument as a JSON string of its value.
    let raw = first.as_str()?;
    let message = serde_json::from_str::<String>(raw).unwrap_or_else(|_| raw.to_string());
    if !message.starts_with("Uncaught") {
        return None;
    }
    let trace: Vec<&str> = payload
        .get("trace")
        .and_then(Value::as_array)
        .map(|t| t.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let source =
        trace.first().map(|f| f.rsplit('(').next().unwrap_or(f).trim_end_matches(')').to_string()).unwrap_or_default();
    Some(JsError { message, source, stack: trace.join("\n"), fingerprint: String::new() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn snapshot() -> Value {
        serde_json::from_str(
            r#"{"type": 2, "timestamp": 2, "data": {"initialOffset": {"top": 40, "left": 0}, "node": {"type": 0, "id": 1, "childNodes": [
            {"type": 2, "tagName": "html", "id": 2, "attributes": {}, "childNodes": [
                {"type": 2, "tagName": "body", "id": 3, "attributes": {}, "childNodes": [
                    {"type": 2, "tagName": "section", "id": 4, "attributes": {"id": "hero"}, "childNodes": [
                        {"type": 2, "tagName": "div", "id": 5, "attributes": {"class": "cta big"}, "childNodes": [
                            {"type": 2, "tagName": "button", "id": 6, "attributes": {}, "childNodes": [{"type": 3, "textContent": "Go", "id": 7}]},
                            {"type": 2, "tagName": "div", "id": 8, "attributes": {"id": "fake"}, "childNodes": []},
                            {"type": 2, "tagName": "input", "id": 9, "attributes": {"type": "email"}, "childNodes": []}
                        ]}
                    ]}
                ]}
            ]}
        ]}}}"#,
        )
        .unwrap()
    }

    fn click(id: u32) -> Value {
        json!({"type": 3, "timestamp": 10, "data": {"source": 2, "type": 2, "id": id, "x": 5, "y": 6, "pointerType": 0}})
    }

    fn decoded_click(d: &mut Decoder, id: u32) -> Click {
        match d.decode("p", "d", "t", 0, &click(id)).unwrap().kind {
            Some(Kind::Click(c)) => c,
            other => panic!("not a click: {other:?}"),
        }
    }

    #[test]
    fn clicks_know_their_target() {
        let mut d = Decoder::new();
        d.decode(
            "p",
            "d",
            "t",
            0,
            &json!({"type": 4, "timestamp": 1, "data": {"href": "http://x.test/a", "width": 800, "height": 600}}),
        )
        .unwrap();
        let snap = d.decode("p", "d", "t", 1, &snapshot()).unwrap();
        assert!(matches!(snap.kind, Some(Kind::Snapshot(DomSnapshot { scroll_y: 40, .. }))));
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
        d.decode("p", "d", "t", 2, &json!({"type": 3, "timestamp": 11, "data": {"source": 0, "texts": [], "removes": [], "adds": [], "attributes": [{"id": 8, "attributes": {"role": "button"}}]}})).unwrap();
        assert!(decoded_click(&mut d, 8).interactive);
    }

    #[test]
    fn console_plugin_uncaught_errors() {
        let mut d = Decoder::new();
        let e = json!({"type": 6, "timestamp": 5, "data": {"plugin": "rrweb/console@1", "payload": {"level": "error", "trace": ["HTMLButtonElement.<anonymous> (http://x.test/app.js:26:25)"], "payload": ["\"Uncaught TypeError: boom\""]}}});
        match d.decode("p", "d", "t", 0, &e).unwrap().kind {
            Some(Kind::Error(err)) => {
                assert_eq!(err.message, "Uncaught TypeError: boom");
                assert_eq!(err.source, "http://x.test/app.js:26:25");
            }
            other => panic!("{other:?}"),
        }
        let log = json!({"type": 6, "timestamp": 5, "data": {"plugin": "rrweb/console@1", "payload": {"level": "error", "trace": [], "payload": ["\"handled\""]}}});
        assert!(matches!(d.decode("p", "d", "t", 0, &log).unwrap().kind, Some(Kind::Activity(_))));
        let custom = json!({"type": 5, "timestamp": 5, "data": {"tag": "error", "payload": {"message": "x", "source": "s.js", "stack": ""}}});
        assert!(matches!(d.decode("p", "d", "t", 0, &custom).unwrap().kind, Some(Kind::Error(_))));
    }

    #[test]
    fn malformed_events_say_what_is_wrong() {
        let mut d = Decoder::new();
        let e = d
            .decode("p", "d", "t", 0, &json!({"type": 3, "timestamp": 1, "data": {"source": 3, "id": 1}}))
            .unwrap_err();
        assert!(e.reason.contains("data.y"), "{e}");
        let e = d.decode("p", "d", "t", 0, &json!({"type": 4, "data": {}})).unwrap_err();
        assert!(e.reason.contains("timestamp"), "{e}");
        let e = d.decode("p", "d", "t", 0, &json!([1, 2])).unwrap_err();
        assert!(e.reason.contains("object"), "{e}");
    }
}
