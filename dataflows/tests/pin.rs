//! The string table's pin, in its own test binary: it moves the process-wide epoch.

use sightflow_operators::sym::{EPOCH_MS, Sym};

/// While a one-shot build runs (it resolves its strings only at its end), a live
/// dataflow in the same process reclaims nothing.
#[test]
fn a_pinned_table_reclaims_nothing() {
    let old = Sym::new("interned long before any frontier");
    Sym::advance(10 * EPOCH_MS);
    let pin = Sym::pin();
    Sym::advance(1000 * EPOCH_MS);
    let (held, _) = Sym::table_size();
    assert_eq!(Sym::reclaim(0), 0, "pinned");
    assert_eq!(Sym::table_size().0, held);
    drop(pin);
    assert!(Sym::reclaim(0) > 0, "unpinned, the unused entries go");
    assert!(old.resolve().is_none());
}
