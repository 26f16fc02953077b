//! Deterministic synthetic traffic: raw rrweb recordings of N devices with planted
//! behaviours and the ground truth of what was planted.
//!
//! Each device has one session of several page views. A page view is a Meta event, a
//! FullSnapshot of a realistic page (tens of KB), mouse-move batches every 500 ms with
//! ten positions, and a sequence of 3 s slots, each holding one action: a normal click
//! (on a button, answered by a DOM mutation), a scroll run (10 events/s, downward), a
//! custom event, an uncaught error away from any click, or a planted behaviour: a rage
//! burst, a dead click, an error click, excessive scrolling or a thrashed cursor. Some
//! sessions walk the `signup` funnel of the default config to the end; some contain a
//! quick back. The slot spacing keeps the planted behaviours apart, so the ground truth
//! is exact under the default thresholds.

use serde_json::{Value, json};

/// splitmix64: small, fast and the same on every platform.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..hi` (`hi > lo`).
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next_u64() % (hi - lo).max(1) as u64) as i64
    }

    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

/// What to generate.
#[derive(Clone, Debug)]
pub struct GenOptions {
    pub seed: u64,
    pub devices: usize,
    /// Start of the first session (ms since the epoch).
    pub start_ms: i64,
    /// Sessions start spread over this long after `start_ms`.
    pub spread_ms: i64,
    /// Paragraphs in a page snapshot (each ~200 bytes of text).
    pub paragraphs: usize,
    pub origin: String,
}

impl Default for GenOptions {
    fn default() -> Self {
        GenOptions {
            seed: 42,
            devices: 100,
            // 2026-11-20 08:00 UTC: far from midnight, so no session splits there.
            start_ms: 1_795_161_600_000,
            spread_ms: 600_000,
            paragraphs: 80,
            origin: "http://shop.bench.test".into(),
        }
    }
}

/// What was planted, summed over all devices.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Truth {
    pub devices: u64,
    pub sessions: u64,
    pub page_views: u64,
    pub clicks: u64,
    pub rage_bursts: u64,
    pub dead_clicks: u64,
    pub error_clicks: u64,
    pub quick_backs: u64,
    pub excessive_scrolls: u64,
    pub thrashed_cursors: u64,
    pub funnel_conversions: u64,
    pub uncaught_errors: u64,
    pub rrweb_events: u64,
    pub rrweb_bytes: u64,
}

impl Truth {
    /// Adds `b`'s counts (all but `rrweb_bytes`, which is measured, not planted).
    pub fn add(&mut self, b: &Truth) {
        self.devices += b.devices;
        self.sessions += b.sessions;
        self.page_views += b.page_views;
        self.clicks += b.clicks;
        self.rage_bursts += b.rage_bursts;
        self.dead_clicks += b.dead_clicks;
        self.error_clicks += b.error_clicks;
        self.quick_backs += b.quick_backs;
        self.excessive_scrolls += b.excessive_scrolls;
        self.thrashed_cursors += b.thrashed_cursors;
        self.funnel_conversions += b.funnel_conversions;
        self.uncaught_errors += b.uncaught_errors;
        self.rrweb_events += b.rrweb_events;
    }
}

/// One device's recording (one tab).
pub struct Recording {
    pub device: String,
    pub events: Vec<Value>,
    /// What this recording alone planted.
    pub truth: Truth,
}

const RANDOM_PATHS: &[&str] = &["/", "/pricing", "/blog/launch", "/blog/roadmap", "/docs/start", "/docs/api", "/about"];
const FUNNEL: &[&str] = &["/", "/pricing", "/signup", "/thanks"];

/// Node ids of one page's snapshot.
struct Page {
    snapshot: Value,
    buttons: Vec<u32>,
    paragraphs: Vec<u32>,
    text_nodes: Vec<u32>,
    input: u32,
    body: u32,
    next_id: u32,
    height: i64,
}

fn el(id: &mut u32, tag: &str, attrs: Value, children: Vec<Value>) -> Value {
    *id += 1;
    json!({"type": 2, "tagName": tag, "attributes": attrs, "childNodes": children, "id": *id})
}

fn text(id: &mut u32, t: &str) -> Value {
    *id += 1;
    json!({"type": 3, "textContent": t, "id": *id})
}

const LOREM: &str = "Teams use the dashboard to follow what visitors do on every page, where they hesitate, \
which buttons they press twice and which forms they abandon; the numbers stay fresh while the product changes. ";

fn page(rng: &mut Rng, path: &str, paragraphs: usize) -> Page {
    let mut id = 0u32;
    let mut buttons = Vec::new();
    let mut paras = Vec::new();
    let mut texts = Vec::new();
    let mut nav = Vec::new();
    for p in RANDOM_PATHS {
        let t = text(&mut id, p.trim_start_matches('/'));
        let a = el(&mut id, "a", json!({"href": p, "class": "nav-link"}), vec![t]);
        buttons.push(id);
        nav.push(a);
    }
    let nav = el(&mut id, "nav", json!({}), nav);
    let header = el(&mut id, "header", json!({"class": "site-header"}), vec![nav]);
    let mut sections = Vec::new();
    for i in 0..paragraphs {
        let t = text(&mut id, &LOREM[..(120 + rng.range(0, 90) as usize).min(LOREM.len())]);
        texts.push(id);
        let p = el(&mut id, "p", json!({"class": "copy"}), vec![t]);
        let div = el(&mut id, "div", json!({"class": format!("card card-{i}")}), vec![p]);
        paras.push(id);
        if i % 8 == 7 {
            let bt = text(&mut id, "Show more");
            let b = el(&mut id, "button", json!({"class": "toggle", "type": "button"}), vec![bt]);
            buttons.push(id);
            sections.push(el(&mut id, "section", json!({}), vec![div, b]));
        } else {
            sections.push(div);
        }
    }
    let input = el(&mut id, "input", json!({"type": "email", "name": "email"}), vec![]);
    let input_id = id;
    let bt = text(&mut id, "Continue");
    let submit = el(&mut id, "button", json!({"id": "submit", "type": "submit"}), vec![bt]);
    buttons.push(id);
    let form = el(&mut id, "form", json!({"class": "signup"}), vec![input, submit]);
    let main = el(&mut id, "main", json!({"data-path": path}), sections);
    let body = el(&mut id, "body", json!({}), vec![header, main, form]);
    let body_id = id;
    let title_text = text(&mut id, "Bench shop");
    let title = el(&mut id, "title", json!({}), vec![title_text]);
    let head = el(&mut id, "head", json!({}), vec![title]);
    let html = el(&mut id, "html", json!({"lang": "en"}), vec![head, body]);
    id += 1;
    let doctype = json!({"type": 1, "name": "html", "publicId": "", "systemId": "", "id": id});
    id += 1;
    let doc = json!({"type": 0, "childNodes": [doctype, html], "id": id});
    Page {
        snapshot: json!({"node": doc, "initialOffset": {"left": 0, "top": 0}}),
        buttons,
        paragraphs: paras,
        text_nodes: texts,
        input: input_id,
        body: body_id,
        next_id: id + 1,
        height: 400 + paragraphs as i64 * 120,
    }
}

/// Builds one device's recording, adding what it planted to `truth`.
struct Writer<'a> {
    rng: &'a mut Rng,
    events: Vec<Value>,
    truth: &'a mut Truth,
    x: i64,
    y: i64,
    dir: i64,
    batches: u32,
    scroll_y: i64,
    width: i64,
    height: i64,
}

impl Writer<'_> {
    fn push(&mut self, ty: u64, ts: i64, data: Value) {
        self.events.push(json!({"type": ty, "data": data, "timestamp": ts}));
    }

    fn incremental(&mut self, ts: i64, source: u64, mut data: Value) {
        data.as_object_mut().expect("object").insert("source".into(), json!(source));
        self.push(3, ts, data);
    }

    /// A mouse-move batch at `ts` with ten positions from the last 500 ms, moving
    /// steadily in one horizontal direction (turning at most every 1.5 s).
    fn mouse(&mut self, ts: i64) {
        self.batches += 1;
        if self.batches.is_multiple_of(3) && self.rng.chance(0.5) {
            self.dir = -self.dir;
        }
        let mut positions = Vec::with_capacity(10);
        for k in 0..10 {
            self.x = (self.x + self.dir * self.rng.range(3, 12)).clamp(1, self.width - 1);
            self.y = (self.y + self.rng.range(-6, 7)).clamp(1, self.height - 1);
            positions.push(json!({"x": self.x, "y": self.y, "id": 4, "timeOffset": -450 + k * 50}));
        }
        // Against an edge the direction turns for good, not back and forth.
        if self.x <= 1 || self.x >= self.width - 1 {
            self.dir = -self.dir;
            self.batches = 1;
        }
        self.incremental(ts, 1, json!({"positions": positions}));
    }

    fn click(&mut self, ts: i64, id: u32, x: i64, y: i64) {
        self.truth.clicks += 1;
        self.incremental(ts, 2, json!({"type": 2, "id": id, "x": x, "y": y, "pointerType": 0}));
    }

    fn mutation(&mut self, ts: i64, page: &mut Page) {
        let target = page.text_nodes[self.rng.range(0, page.text_nodes.len() as i64) as usize];
        let id = page.next_id;
        page.next_id += 2;
        self.incremental(
            ts,
            0,
            json!({
                "texts": [{"id": target, "value": "Updated just now"}],
                "attributes": [],
                "removes": [],
                "adds": [{"parentId": page.body, "nextId": null, "node": {"type": 2, "tagName": "div", "attributes": {"class": "toast"}, "childNodes": [{"type": 3, "textContent": "Saved", "id": id + 1}], "id": id}}],
            }),
        );
    }

    fn scroll(&mut self, ts: i64, y: i64) {
        self.scroll_y = y;
        self.incremental(ts, 3, json!({"id": 1, "x": 0, "y": y}));
    }

    fn error(&mut self, ts: i64) {
        self.truth.uncaught_errors += 1;
        self.push(
            6,
            ts,
            json!({"plugin": "rrweb/console@1", "payload": {"level": "error", "trace": ["HTMLButtonElement.<anonymous> (http://shop.bench.test/app.js:26:25)"], "payload": ["\"Uncaught TypeError: Cannot read properties of undefined (reading 'price')\""]}}),
        );
    }

    /// A point inside the viewport for a click.
    fn spot(&mut self) -> (i64, i64) {
        (self.rng.range(40, self.width - 40), self.rng.range(80, self.height - 40))
    }

    /// One page view from `t`: returns the time the page was left.
    fn page_view(&mut self, opts: &GenOptions, path: &str, t: i64, slots: usize, funnel: bool) -> i64 {
        let mut page = page(self.rng, path, opts.paragraphs);
        self.truth.page_views += 1;
        self.scroll_y = 0;
        self.push(
            4,
            t,
            json!({"href": format!("{}{}", opts.origin, path), "width": self.width, "height": self.height}),
        );
        self.push(2, t + 5, page.snapshot.take());
        let mut mouse_at = t + 500;
        // Excessive-scroll episodes within 10 s of each other merge: keep them 4 slots apart.
        let mut last_excessive: Option<usize> = None;
        for s in 0..slots {
            let at = t + 100 + s as i64 * 3000;
            // Mouse batches up to this slot's action.
            while mouse_at < at {
                self.mouse(mouse_at);
                mouse_at += 500;
            }
            let roll = self.rng.range(0, 100);
            let last = s + 1 == slots;
            if funnel && last && path == "/signup" {
                // Into the email field, type, then submit.
                let (x, y) = self.spot();
                self.click(at, page.input, x, y);
                self.incremental(at + 400, 5, json!({"id": page.input, "text": "ada@example.com", "isChecked": false}));
                self.push(5, at + 900, json!({"tag": "signup", "payload": {"plan": "team"}}));
                continue;
            }
            match roll {
                0..=29 => {
                    let b = page.buttons[self.rng.range(0, page.buttons.len() as i64) as usize];
                    let (x, y) = self.spot();
                    self.click(at, b, x, y);
                    self.mutation(at + 300, &mut page);
                }
                30..=49 => {
                    // Reading on: 1.5 s of downward scrolling at 10 events/s.
                    let max = (page.height - self.height).max(0);
                    let mut y = self.scroll_y;
                    for k in 0..15 {
                        y = (y + self.rng.range(20, 90)).min(max);
                        self.scroll(at + k * 100, y);
                    }
                }
                50..=57 => {
                    let name = ["add_to_cart", "video_play", "share"][self.rng.range(0, 3) as usize];
                    self.push(5, at, json!({"tag": name, "payload": {"slot": s}}));
                }
                58..=61 => self.error(at + 1200),
                62..=67 => {
                    // Rage: four clicks 150 ms apart within a few px, then a mutation.
                    self.truth.rage_bursts += 1;
                    let b = page.buttons[self.rng.range(0, page.buttons.len() as i64) as usize];
                    let (x, y) = self.spot();
                    for k in 0..4 {
                        self.click(at + k * 150, b, x + k % 2 * 4, y + k % 3 * 3);
                    }
                    self.mutation(at + 450 + 200, &mut page);
                }
                68..=73 if !last => {
                    // Dead: a paragraph, and nothing answers for a full slot.
                    self.truth.dead_clicks += 1;
                    let p = page.paragraphs[self.rng.range(0, page.paragraphs.len() as i64) as usize];
                    let (x, y) = self.spot();
                    self.click(at, p, x, y);
                }
                74..=78 => {
                    // Error click: the button throws 200 ms after the click.
                    self.truth.error_clicks += 1;
                    let b = page.buttons[self.rng.range(0, page.buttons.len() as i64) as usize];
                    let (x, y) = self.spot();
                    self.click(at, b, x, y);
                    self.error(at + 200);
                    self.mutation(at + 300, &mut page);
                }
                79..=82 if last_excessive.is_none_or(|l| s - l >= 4) => {
                    last_excessive = Some(s);
                    // Excessive scrolling: seven direction changes in 2.4 s.
                    self.truth.excessive_scrolls += 1;
                    let base = self.scroll_y.max(300);
                    for k in 0..9 {
                        self.scroll(at + k * 300, if k % 2 == 0 { base } else { base - 200 });
                    }
                    self.scroll_y = base;
                }
                83..=85 => {
                    // Thrashed cursor: the mouse shakes left and right in 500 ms.
                    self.truth.thrashed_cursors += 1;
                    while mouse_at < at + 500 {
                        self.mouse(mouse_at);
                        mouse_at += 500;
                    }
                    let mut positions = Vec::new();
                    let x0 = self.x.clamp(60, self.width - 60);
                    for k in 0..10 {
                        positions.push(json!({"x": x0 + if k % 2 == 0 { 40 } else { -40 }, "y": self.y, "id": 4, "timeOffset": -450 + k * 50}));
                    }
                    self.incremental(mouse_at, 1, json!({"positions": positions}));
                    self.x = x0 - 40;
                    self.dir = 1;
                    self.batches = 0;
                    mouse_at += 500;
                }
                _ => {}
            }
        }
        let end = t + 100 + slots as i64 * 3000;
        while mouse_at < end {
            self.mouse(mouse_at);
            mouse_at += 500;
        }
        end
    }
}

/// Generates the recordings of `opts.devices` devices.
pub fn generate(opts: &GenOptions) -> (Vec<Recording>, Truth) {
    let mut truth = Truth::default();
    let mut out = Vec::with_capacity(opts.devices);
    for d in 0..opts.devices {
        let mut own = Truth::default();
        let mut rng = Rng::new(opts.seed ^ (d as u64).wrapping_mul(0x2545_F491_4F6C_DD1D));
        let mobile = rng.chance(0.25);
        let (width, height) = if mobile { (390, 844) } else { [(1280, 800), (1440, 900), (1024, 768)][d % 3] };
        let start = opts.start_ms + rng.range(0, opts.spread_ms.max(1));
        let mut w = Writer {
            rng: &mut rng,
            events: Vec::new(),
            truth: &mut own,
            x: width / 2,
            y: height / 2,
            dir: 1,
            batches: 0,
            scroll_y: 0,
            width,
            height,
        };
        w.truth.devices += 1;
        w.truth.sessions += 1;
        let funnel = w.rng.chance(0.3);
        let mut paths: Vec<&str> = if funnel {
            FUNNEL.to_vec()
        } else {
            let n = w.rng.range(3, 7) as usize;
            let mut p: Vec<&str> = Vec::with_capacity(n);
            while p.len() < n {
                let c = RANDOM_PATHS[w.rng.range(0, RANDOM_PATHS.len() as i64) as usize];
                // Never the page before or the one before that: no accidental A, B, A.
                if p.last() != Some(&c) && (p.len() < 2 || p[p.len() - 2] != c) {
                    p.push(c);
                }
            }
            p
        };
        let quick_back = !funnel && w.rng.chance(0.15);
        if quick_back {
            // A, B, A with a short stay on B.
            let a = paths[0];
            let b = if a == "/about" { "/docs/api" } else { "/about" };
            paths.splice(1..1, [b, a]);
        }
        let mut t = start;
        for (i, path) in paths.iter().enumerate() {
            let short = quick_back && i == 1;
            if short {
                w.truth.quick_backs += 1;
                t = w.page_view(opts, path, t, 0, false) + 1500;
                continue;
            }
            let slots = w.rng.range(3, 7) as usize;
            t = w.page_view(opts, path, t, slots, funnel) + 400;
        }
        if funnel {
            w.truth.funnel_conversions += 1;
        }
        let events = std::mem::take(&mut w.events);
        own.rrweb_events += events.len() as u64;
        truth.add(&own);
        out.push(Recording { device: format!("bench-{:07}", d), events, truth: own });
    }
    (out, truth)
}

/// Encoded size of the recordings as JSON.
pub fn json_bytes(recordings: &[Recording]) -> u64 {
    recordings.iter().map(|r| serde_json::to_vec(&r.events).map_or(0, |v| v.len() as u64)).sum()
}
