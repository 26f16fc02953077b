//! Attributes arrangement sizes to views, from timely's and differential's logs.
//!
//! Arrangements are named after the view they serve (`scroll_depth`, `page_stats
//! visitors`, ...). Differential logs every batch that enters, merges or leaves a trace;
//! summing those per operator gives the records each arrangement holds, and bytes are
//! estimated from them. The distinct arrangements behind `page_stats` and `errors` are
//! measured from their batches instead (`sightflow_operators::views::MeasuredTrace`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use differential_dataflow::logging::{DifferentialEvent, DifferentialEventBuilder};
use sightflow_operators::stats::StateStats;
use timely::logging::{TimelyEvent, TimelyEventBuilder};
use timely::worker::Worker;

/// Approximate bytes per arranged update (key, time, diff and trace overhead).
const BYTES_PER_RECORD: usize = 64;

/// The view an operator's name attributes it to, if any.
fn view_of(name: &str) -> Option<&str> {
    let name = name.strip_prefix("Arrange: ").unwrap_or(name);
    let view = name.split_whitespace().next()?;
    sightflow_operators::ViewId::from_name(view).map(|v| v.name())
}

/// Starts accounting on this worker. Must run before dataflows are built, and
/// [`names_known`] right after: timely's own log is only read for operator names,
/// because leaving it on would log every scheduling event.
pub fn attach(worker: &mut Worker, stats: StateStats) {
    let index = worker.index();
    let Some(mut registry) = worker.log_register() else { return };
    let names: Rc<RefCell<HashMap<usize, String>>> = Rc::default();
    let n = names.clone();
    registry.insert::<TimelyEventBuilder, _>("timely", move |_time, data| {
        if let Some(data) = data {
            for (_, event) in data.iter() {
                if let TimelyEvent::Operates(op) = event {
                    n.borrow_mut().insert(op.id, op.name.clone());
                }
            }
        }
    });
    let mut per_operator: HashMap<usize, isize> = HashMap::new();
    registry.insert::<DifferentialEventBuilder, _>("differential/arrange", move |_time, data| {
        let Some(data) = data else { return };
        let mut touched = false;
        for (_, event) in data.iter() {
            let (op, delta) = match event {
                DifferentialEvent::Batch(b) => (b.operator, b.length as isize),
                DifferentialEvent::Merge(m) => match m.complete {
                    Some(c) => (m.operator, c as isize - m.length1 as isize - m.length2 as isize),
                    None => continue,
                },
                DifferentialEvent::Drop(d) => (d.operator, -(d.length as isize)),
                _ => continue,
            };
            *per_operator.entry(op).or_insert(0) += delta;
            touched = true;
        }
        if touched {
            let names = names.borrow();
            let mut per_view: HashMap<&str, isize> = HashMap::new();
            for (op, records) in &per_operator {
                if let Some(view) = names.get(op).and_then(|n| view_of(n)) {
                    *per_view.entry(view).or_insert(0) += *records;
                }
            }
            for (view, records) in per_view {
                let records = records.max(0) as usize;
                stats.set(view, index, records, records * BYTES_PER_RECORD);
            }
        }
    });
}

/// Stops reading timely's log once the operators (and their names) exist.
pub fn names_known(worker: &mut Worker) {
    if let Some(mut registry) = worker.log_register() {
        registry.remove("timely");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_map_to_views() {
        assert_eq!(super::view_of("Arrange: page_stats visitors"), Some("page_stats"));
        assert_eq!(super::view_of("scroll_depth"), Some("scroll_depth"));
        assert_eq!(super::view_of("Arrange: ThresholdTotal"), None);
    }
}
