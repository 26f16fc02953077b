//! The behaviour operator: a timely operator, keyed by device, that runs each device's
//! [`Device`] state machine and emits the changes to every sequence view as
//! differential collections.
//!
//! Events are exchanged by device, stashed by logical time, and processed once the input
//! frontier has passed their time, so a device sees each tick's events all at once and in
//! a deterministic order regardless of arrival order. Deadlines (dead-click verdicts,
//! session ends, state release) fire when the frontier passes them. A device's changes are
//! flushed whenever its processing moves to a later logical time and are stamped with the
//! earlier one, so a device emits at most one update per row per tick.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::rc::Rc;
use std::sync::Arc;

use differential_dataflow::{AsCollection, VecCollection};
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::channels::pushers;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;

use differential_dataflow::difference::IsZero;

use crate::FastMap;
use crate::device::Device;
use crate::event::{DeviceKey, Event};
use crate::params::Params;
use crate::registry::Emit;
use crate::stats::StateStats;

macro_rules! declare_outputs {
    ($($field:ident : $row:ty, $diff:ty, $kind:ident;)*) => {
        /// The collections the behaviour operator produces, one per output of
        /// [`for_each_output!`](crate::for_each_output).
        pub struct Behaviour<'s> {
            $(#[doc = concat!("The `", stringify!($field), "` output.")] pub $field: VecCollection<'s, u64, $row, $diff>,)*
        }

        /// The operator's output handles, in the same order.
        struct Outputs { $($field: Out<$row, $diff>,)* }

        /// Creates every output on `builder`.
        fn outputs<'s>(builder: &mut OperatorBuilder<'s, u64>) -> (Outputs, Behaviour<'s>) {
            $( let $field = builder.new_output::<Vec<($row, u64, $diff)>>(); )*
            (Outputs { $($field: $field.0,)* }, Behaviour { $($field: $field.1.as_collection(),)* })
        }

        impl Outputs {
            /// Sends one time's changes, each output with its own capability (they are in
            /// output order).
            fn ship(&mut self, caps: &[Capability<u64>], t: u64, emit: Emit) {
                let mut i = 0;
                $(
                    ship(&mut self.$field, &caps[i], t, emit.$field.into_iter().filter(|(_, d)| !d.is_zero()));
                    i += 1;
                )*
                debug_assert_eq!(i, caps.len());
            }
        }
    };
}

crate::for_each_output!(declare_outputs);

type Out<D, R> = pushers::Output<u64, Vec<(D, u64, R)>>;

/// Sends `(data, diff)` pairs at time `t` through `out`.
fn ship<D, R>(out: &mut Out<D, R>, cap: &Capability<u64>, t: u64, data: impl IntoIterator<Item = (D, R)>)
where
    D: 'static,
    R: 'static,
{
    let mut buf: Vec<(D, u64, R)> = data.into_iter().map(|(d, r)| (d, t, r)).collect();
    if !buf.is_empty() {
        let cap = cap.delayed(&t);
        out.activate().give(&cap, &mut buf);
    }
}

/// Builds the behaviour operator over a stream of events stamped with logical time.
///
/// With `per_time`, every change carries the logical time of the event or deadline that
/// caused it, so the views are correct at every frontier. Without it, the changes of one
/// activation are folded into its largest time: fewer updates, but correct only at the
/// frontiers this operator itself stopped at; use it when only the final state is read.
pub fn behaviour<'s>(
    events: Stream<'s, u64, Vec<Event>>,
    params: Arc<Params>,
    stats: StateStats,
    per_time: bool,
) -> Behaviour<'s> {
    let scope = events.scope();
    let worker = scope.index();
    let mut builder = OperatorBuilder::new("Behaviour".to_owned(), scope);
    let mut input = builder.new_input(events, Exchange::new(|e: &Event| e.device.route()));

    let (mut outs, streams) = outputs(&mut builder);

    builder.build(move |caps| {
        let mut caps: Option<Vec<Capability<u64>>> = Some(caps);
        // Each message's events, kept in the buffer they came in (swapped for a spare one,
        // so that neither side copies or regrows a buffer per message).
        let mut stash: BTreeMap<u64, Vec<Vec<Event>>> = BTreeMap::new();
        let mut spare: Vec<Vec<Event>> = Vec::new();
        // A round's events: their buffers, and one entry per event (or per device with
        // only a deadline due) sorted into processing order.
        let mut round: Vec<Vec<Event>> = Vec::new();
        let mut order: Vec<(DeviceKey, u64, OrderKey, u32, u32)> = Vec::new();
        let mut devices: FastMap<DeviceKey, Device> = FastMap::default();
        let mut deadlines: BinaryHeap<Reverse<(u64, DeviceKey)>> = BinaryHeap::new();
        let mut bytes: usize = 0;
        let params = Rc::new(params);
        move |frontiers| {
            input.for_each(|cap, data| {
                // Events carry one logical time per message (their source's capability).
                let t = cap.least().copied().unwrap_or(0);
                let mut buf = spare.pop().unwrap_or_default();
                std::mem::swap(&mut buf, data);
                stash.entry(t).or_default().push(buf);
            });
            let frontier = frontiers[0].frontier().iter().next().copied();
            let done = |t: u64| frontier.is_none_or(|f| t < f);
            let ready_events = stash.first_key_value().is_some_and(|(t, _)| done(*t));
            let ready_deadlines = deadlines.peek().is_some_and(|Reverse((d, _))| done(*d));
            if (ready_events || ready_deadlines)
                && let Some(c) = &caps
            {
                let p: &Params = &params;
                // Gather this round's events in processing order: by device, then time and
                // the event's own order. Entries point into the round's buffers.
                let mut max_t = c[0].time().to_owned();
                while let Some((&t, _)) = stash.first_key_value() {
                    if !done(t) {
                        break;
                    }
                    let (t, bufs) = stash.pop_first().expect("present");
                    max_t = max_t.max(t);
                    for evs in bufs {
                        let b = round.len() as u32;
                        order.extend(evs.iter().enumerate().map(|(i, e)| (e.device, t, e.order_key(), b, i as u32)));
                        round.push(evs);
                    }
                }
                // Devices with due deadlines but no events (an entry that names no event).
                while let Some(Reverse((d, key))) = deadlines.peek().copied() {
                    if !done(d) {
                        break;
                    }
                    deadlines.pop();
                    if let Some(dev) = devices.get_mut(&key)
                        && dev.scheduled == d
                    {
                        dev.scheduled = u64::MAX;
                        order.push((key, 0, OrderKey::default(), u32::MAX, 0));
                    }
                }
                order.sort_unstable();
                // Changes are stamped with the logical time of the event or deadline that
                // caused them, so every frontier downstream sees a consistent state. When
                // only the final state is published, one round's changes share one time.
                let mut emits: BTreeMap<u64, Emit> = BTreeMap::new();
                let fold = !per_time;
                let mut next = 0;
                let mut evs: Vec<(u64, &Event)> = Vec::new();
                while next < order.len() {
                    let key = order[next].0;
                    let group = order[next..].iter().take_while(|o| o.0 == key).count();
                    evs.clear();
                    evs.extend(
                        order[next..next + group]
                            .iter()
                            .filter(|o| o.3 != u32::MAX)
                            .map(|o| (o.1, &round[o.3 as usize][o.4 as usize])),
                    );
                    next += group;
                    let dev = devices.entry(key).or_insert_with(|| Device::new(key));
                    bytes = bytes.saturating_sub(dev.heap_bytes());
                    let mut i = 0;
                    let mut cur: Option<u64> = None;
                    loop {
                        let next_t = evs.get(i).map(|(t, _)| *t);
                        let deadline = dev.next_deadline(p);
                        // Deadlines come after the events of their own time.
                        let due = deadline != u64::MAX && done(deadline) && next_t.is_none_or(|t| deadline < t);
                        let Some(at) = (if due { Some(deadline) } else { next_t }) else {
                            break;
                        };
                        max_t = max_t.max(at);
                        let slot = if fold { 0 } else { at };
                        if !fold && cur.is_some_and(|c| c != at) {
                            // Moving to a later time: what changed so far belongs to the earlier one.
                            dev.flush(p, emits.entry(cur.expect("current time")).or_default());
                        }
                        cur = Some(at);
                        let emit = emits.entry(slot).or_default();
                        if due {
                            let release = deadline >= dev.evict_at(p);
                            dev.advance(deadline, p, emit);
                            if release {
                                // The state is released; later events start afresh.
                                *dev = Device::new(key);
                            }
                            continue;
                        }
                        let (t, e) = evs[i];
                        dev.event(t, e, p, emit);
                        i += 1;
                    }
                    let evicted = dev.is_empty();
                    if evicted {
                        devices.remove(&key);
                    } else {
                        let last = if fold { 0 } else { cur.unwrap_or(max_t) };
                        dev.flush(p, emits.entry(last).or_default());
                        bytes += dev.heap_bytes();
                        let d = dev.next_deadline(p);
                        if d != u64::MAX && dev.scheduled != d {
                            dev.scheduled = d;
                            deadlines.push(Reverse((d, key)));
                        }
                    }
                }
                for (slot, emit) in emits {
                    let t = if fold { max_t } else { slot };
                    outs.ship(c, t, emit);
                }
                // The buffers go back to the spares (a few, to bound what idle ones hold).
                order.clear();
                for mut evs in round.drain(..) {
                    if spare.len() < MAX_SPARE && evs.capacity() <= MAX_SPARE_EVENTS {
                        evs.clear();
                        spare.push(evs);
                    }
                }
                if order.capacity() > 1 << 16 {
                    order = Vec::new();
                }
                // Closed sessions leave the tables: give their slots back once they are
                // mostly empty.
                if devices.capacity() > 4 * devices.len() + 1024 {
                    devices.shrink_to_fit();
                }
                if deadlines.capacity() > 4 * deadlines.len() + 1024 {
                    deadlines.shrink_to_fit();
                }
                // The tables count at their capacity (a slot and a control byte each).
                let tables = devices.capacity() * (std::mem::size_of::<(DeviceKey, Device)>() + 1)
                    + deadlines.capacity() * std::mem::size_of::<Reverse<(u64, DeviceKey)>>();
                stats.set("behaviour", worker, devices.len(), bytes + tables);
                let spares: usize = spare.iter().map(|v| v.capacity() * std::mem::size_of::<Event>()).sum();
                stats.set("behaviour_input", worker, stash.len(), stash_bytes(&stash) + spares);
                // The heap only needs live entries; rebuild it when stale ones dominate.
                if deadlines.len() > 2 * devices.len() + 1024 {
                    deadlines = devices
                        .iter()
                        .filter(|(_, d)| d.scheduled != u64::MAX)
                        .map(|(k, d)| Reverse((d.scheduled, *k)))
                        .collect();
                }
            }
            // Hold capabilities at the earliest time anything may still be emitted.
            let mut hold = frontier;
            if let Some((&t, _)) = stash.first_key_value() {
                hold = Some(hold.map_or(t, |h| h.min(t)));
            }
            if let Some(Reverse((d, _))) = deadlines.peek() {
                hold = Some(hold.map_or(*d, |h| h.min(*d)));
            }
            match hold {
                None => caps = None,
                Some(h) => {
                    if let Some(cs) = &mut caps {
                        for c in cs.iter_mut() {
                            if *c.time() < h {
                                c.downgrade(&h);
                            }
                        }
                    }
                }
            }
        }
    });
    streams
}

fn stash_bytes(stash: &BTreeMap<u64, Vec<Vec<Event>>>) -> usize {
    stash
        .values()
        .map(|bufs| bufs.iter().map(|v| v.capacity() * std::mem::size_of::<Event>() + 24).sum::<usize>() + 48)
        .sum()
}

/// Spare message buffers kept for the next messages, and the largest kept.
const MAX_SPARE: usize = 64;
const MAX_SPARE_EVENTS: usize = 4096;

/// An event's order within its device and time ([`Event::order_key`]).
type OrderKey = (i64, crate::sym::Sym, u64, u32);
