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
        let mut stash: BTreeMap<u64, Vec<Event>> = BTreeMap::new();
        let mut devices: FastMap<DeviceKey, Device> = FastMap::default();
        let mut deadlines: BinaryHeap<Reverse<(u64, DeviceKey)>> = BinaryHeap::new();
        let mut bytes: usize = 0;
        let params = Rc::new(params);
        move |frontiers| {
            input.for_each(|cap, data| {
                // Events carry one logical time per message (their source's capability).
                let t = cap.least().copied().unwrap_or(0);
                stash.entry(t).or_default().append(data);
            });
            let frontier = frontiers[0].frontier().iter().next().copied();
            let done = |t: u64| frontier.is_none_or(|f| t < f);
            let ready_events = stash.first_key_value().is_some_and(|(t, _)| done(*t));
            let ready_deadlines = deadlines.peek().is_some_and(|Reverse((d, _))| done(*d));
            if (ready_events || ready_deadlines)
                && let Some(c) = &caps
            {
                let p: &Params = &params;
                // Gather this round's events per device, in processing order.
                let mut by_device: FastMap<DeviceKey, Vec<(u64, Event)>> = FastMap::default();
                let mut max_t = c[0].time().to_owned();
                while let Some((&t, _)) = stash.first_key_value() {
                    if !done(t) {
                        break;
                    }
                    let (t, evs) = stash.pop_first().expect("present");
                    max_t = max_t.max(t);
                    for e in evs {
                        by_device.entry(e.device).or_default().push((t, e));
                    }
                }
                // Devices with due deadlines but no events.
                while let Some(Reverse((d, key))) = deadlines.peek().copied() {
                    if !done(d) {
                        break;
                    }
                    deadlines.pop();
                    if let Some(dev) = devices.get_mut(&key)
                        && dev.scheduled == d
                    {
                        dev.scheduled = u64::MAX;
                        by_device.entry(key).or_default();
                    }
                }
                // Changes are stamped with the logical time of the event or deadline that
                // caused them, so every frontier downstream sees a consistent state. When
                // only the final state is published, one round's changes share one time.
                let mut emits: BTreeMap<u64, Emit> = BTreeMap::new();
                let fold = !per_time;
                let mut keys: Vec<DeviceKey> = by_device.keys().copied().collect();
                keys.sort_unstable();
                for key in keys {
                    let mut evs = by_device.remove(&key).unwrap_or_default();
                    evs.sort_unstable_by_key(|(t, e)| (*t, e.order_key()));
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
                        let (t, e) = &evs[i];
                        dev.event(*t, e, p, emit);
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
                stats.set("behaviour_input", worker, stash.len(), stash_bytes(&stash));
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

fn stash_bytes(stash: &BTreeMap<u64, Vec<Event>>) -> usize {
    stash.values().map(|v| v.capacity() * std::mem::size_of::<Event>() + 48).sum()
}
