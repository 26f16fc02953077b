//! Pure incremental operators for behaviour analytics, and their batch references.
//!
//! Data enters as a timely stream of [`Event`]s stamped with logical time (event time
//! rounded up to a tick, see [`event::Clock`]) and leaves as differential collections,
//! one per view of the registry ([`registry`], [`views::build_views`]). The per-device
//! sequence logic lives in [`device::Device`], which keeps the timeline and calls the
//! hooks of one module per signal ([`signals`]); it runs inside one timely operator
//! ([`behaviour::behaviour`]), and aggregates are differential operators on top. Every
//! view has a plain batch implementation of the same definition in its signal module,
//! run by [`reference`](mod@reference) for the oracle tests. Nothing here does I/O.
//!
//! ```
//! use std::sync::Arc;
//! use sightflow_operators::{event::*, params::Params, stats::StateStats, sym::Sym, views::build_views};
//! use timely::dataflow::operators::Input;
//!
//! let params = Arc::new(Params::from_config(&sightflow_config::Config::defaults()));
//! timely::execute_directly(move |worker| {
//!     let mut input = worker.dataflow::<u64, _, _>(|scope| {
//!         let (input, events) = scope.new_input::<Vec<Event>>();
//!         let views = build_views(events, params, StateStats::default(), true);
//!         views.sessions.inspect(|x| println!("{x:?}"));
//!         input
//!     });
//!     let device = DeviceKey { project: Sym::new("demo"), device: Sym::new("d1") };
//!     input.advance_to(1_000);
//!     input.send(Event { ts: 1_000, device, tab: Sym::new("t"), seq: 0, sub: 0, url: Sym::EMPTY, kind: Kind::Activity });
//! });
//! ```

#![warn(missing_docs, unreachable_pub)]

pub mod behaviour;
pub mod columns;
pub mod device;
pub mod event;
pub mod params;
pub mod reference;
pub mod registry;
pub mod signals;
pub mod stats;
pub mod sym;
pub mod views;

pub use event::{DeviceKey, Event, Kind};

pub use params::Params;
pub use registry::{Update, ViewId, Views};
pub use sym::Sym;

/// The hash map of the hot paths: foldhash with a fixed seed (the keys are symbols and
/// rows the engine made itself, so no flooding defence is needed, and iteration order is
/// the same run to run).
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::FixedState>;
/// The hash set of the hot paths (see [`FastMap`]).
pub type FastSet<K> = std::collections::HashSet<K, foldhash::fast::FixedState>;
