//! One-line cases for the signal modules: a small language of events, run through a
//! [`Device`] (as the behaviour operator runs it) and through the reference; the two
//! must agree on every view, and the case checks its own.
//!
//! Events are `;`-separated: `<ms> [@ms] [tN] [dN] <kind> <args>`, with `@ms` when it
//! arrived (default: on time, at its own time), `tN` the tab and `dN` the device
//! (default `t1`, `d1`). Kinds: `pv <url> [width] [height] [page height]`,
//! `click <x|-> <y|-> [selector] [tag] [field]`, `scroll <node> <y>`, `move <x> <y>
//! [offset]`, `mut`, `input`, `resize <w> <h>`, `snap <scroll y>`, `error <message>`,
//! `custom <name>`, `act`.

use crate::device::Device;
use crate::event::{Click, DeviceKey, Event, Kind, PageView, tick_ceil};
use crate::params::Params;
use crate::reference::reference;
use crate::registry::{Emit, Views};
use crate::sym::Sym;

/// Event times count from here (the epoch: a case's times are its own).
const T0: i64 = 0;

/// The events with the time each arrived (`None`: on time).
fn parse(events: &str) -> Vec<(Option<i64>, Event)> {
    let mut out = Vec::new();
    for (seq, spec) in events.split(';').map(str::trim).filter(|s| !s.is_empty()).enumerate() {
        let mut words: Vec<&str> = spec.split_whitespace().collect();
        let ts = T0 + words.remove(0).parse::<i64>().expect("a time");
        let mut tab = "t1";
        let mut dev = "d1";
        let mut arrived = None;
        while let Some(w) = words.first() {
            if let Some(at) = w.strip_prefix('@') {
                arrived = Some(T0 + at.parse::<i64>().expect("an arrival time"));
                words.remove(0);
            } else if w.len() > 1 && w.starts_with('t') && w[1..].chars().all(|c| c.is_ascii_digit()) {
                tab = words.remove(0);
            } else if w.len() > 1 && w.starts_with('d') && w[1..].chars().all(|c| c.is_ascii_digit()) {
                dev = words.remove(0);
            } else {
                break;
            }
        }
        let arg = |i: usize| words.get(i).copied();
        let num = |i: usize, d: i64| arg(i).map_or(d, |w| w.parse().expect("a number"));
        let kind = match words[0] {
            "pv" => Kind::PageView(PageView {
                url: Sym::new(arg(1).expect("a url")),
                path: Sym::new(arg(1).expect("a url")),
                width: num(2, 1280) as u32,
                height: num(3, 800) as u32,
                page_height: num(4, 0) as u32,
                browser: Sym::EMPTY,
                os: Sym::EMPTY,
                device_type: Sym::EMPTY,
                country: Sym::EMPTY,
            }),
            "click" => {
                let positioned = arg(1) != Some("-");
                Kind::Click(Click {
                    x: if positioned { num(1, 0) as i32 } else { 0 },
                    y: if positioned { num(2, 0) as i32 } else { 0 },
                    page_x: 0,
                    page_y: 0,
                    has_page: false,
                    has_position: positioned,
                    selector: Sym::new(arg(3).unwrap_or("button#go")),
                    tag: Sym::new(arg(4).unwrap_or("button")),
                    interactive: true,
                    text_field: arg(5) == Some("field"),
                    touch: false,
                })
            }
            "scroll" => Kind::Scroll { node: num(1, 1) as u32, x: 0, y: num(2, 0) as i32 },
            "move" => Kind::Move { x: num(1, 0) as i32, y: num(2, 0) as i32, offset: num(3, 0) as i32, first: true },
            "mut" => Kind::Mutation,
            "input" => Kind::Input { node: 3 },
            "resize" => Kind::Resize { width: num(1, 0) as u32, height: num(2, 0) as u32 },
            "snap" => Kind::Snapshot { scroll_x: 0, scroll_y: num(1, 0) as i32 },
            "error" => {
                let m = arg(1).unwrap_or("boom");
                Kind::Error { message: Sym::new(m), fingerprint: xxhash_rust::xxh3::xxh3_64(m.as_bytes()) }
            }
            "custom" => Kind::Custom { name: Sym::new(arg(1).unwrap_or("go")) },
            "act" => Kind::Activity,
            "identify" => Kind::Identify { user: Sym::new(arg(1).unwrap_or("u1")) },
            "vitals" => {
                let opt = |i: usize| arg(i).filter(|w| *w != "-").map(|w| w.parse().expect("a number"));
                Kind::Vitals(crate::event::Vitals::new(opt(1), opt(2), opt(3), opt(4), opt(5)))
            }
            other => panic!("unknown event kind {other:?} in {spec:?}"),
        };
        out.push((
            arrived,
            Event {
                ts,
                device: DeviceKey { project: Sym::new("p"), device: Sym::new(dev) },
                tab: Sym::new(tab),
                seq: seq as u64 + 1,
                sub: 0,
                url: Sym::EMPTY,
                kind,
            },
        ));
    }
    out
}

/// Runs devices over events at their on-time logical times, as the behaviour operator
/// does, through every deadline; returns the views their changes add up to.
fn incremental(events: &[(u64, Event)], p: &Params) -> Views {
    let mut views = Views::default();
    let mut by_device: std::collections::BTreeMap<DeviceKey, Vec<(u64, Event)>> = Default::default();
    for (t, e) in events {
        by_device.entry(e.device).or_default().push((*t, *e));
    }
    for (key, mut evs) in by_device {
        evs.sort_by_key(|(t, e)| (*t, e.order_key()));
        let mut dev = Device::new(key);
        let mut emit = Emit::default();
        let mut i = 0;
        loop {
            let deadline = dev.next_deadline(p);
            let next = evs.get(i).map(|(t, _)| *t);
            match next {
                Some(t) if t <= deadline => {
                    dev.event(t, &evs[i].1, p, &mut emit);
                    i += 1;
                    if evs.get(i).is_none_or(|(n, _)| *n != t) {
                        dev.flush(p, &mut emit);
                    }
                }
                _ if deadline == u64::MAX => break,
                _ => {
                    let release = deadline >= dev.evict_at(p);
                    dev.advance(deadline, p, &mut emit);
                    if release {
                        dev = Device::new(key);
                    }
                }
            }
        }
        views.add_direct(emit);
    }
    views
}

/// Runs `events` through the incremental path and the reference, checks that they agree
/// on the views a device emits directly, and hands the reference's views to `expect`.
pub(crate) fn check(events: &str, expect: impl FnOnce(&Views)) {
    let p = Params::from_config(&sightflow_config::Config::defaults());
    let evs: Vec<(u64, Event)> =
        parse(events).into_iter().map(|(at, e)| (tick_ceil(at.unwrap_or(e.ts).max(e.ts), p.tick), e)).collect();
    let want = reference(&evs, u64::MAX, &p);
    let got = incremental(&evs, &p);
    // The views a device emits as they are (the aggregates on top are checked by the
    // oracle tests through the dataflow).
    let (g, w) = (got.direct(), want.direct());
    assert!(g == w, "{events}: the device and the reference disagree\n{}", g.diff(&w));
    expect(&want);
}
