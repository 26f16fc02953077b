//! One module per signal: each owns its rows, the state it keeps in a device, the hooks
//! [`Device`](crate::device::Device) calls as events come, and its batch reference.
//!
//! The references are written apart from the incremental code and share none of its
//! helpers: each states its definition over the reference timeline
//! ([`crate::reference::Timeline`]) from scratch, so the oracle tests can see a mistake
//! in either.
//!
//! | module | views |
//! |---|---|
//! | [`sessions`] | `sessions`, `page_views` |
//! | [`rage`] | `rage_clicks` |
//! | [`clicks`] | `dead_clicks`, `error_clicks` |
//! | [`quick_back`] | `quick_backs` |
//! | [`excessive_scroll`], [`thrashed_cursor`] (on [`episodes`]) | `excessive_scrolls`, `thrashed_cursors` |
//! | [`heatmap`] | `heatmap_cells` |
//! | [`scroll_depth`] | `scroll_depth` (and the scroll kind of `heatmap_cells`) |
//! | [`funnels`] | `session_funnels`, `funnel_steps` |
//! | [`page_stats`] | `page_stats` |
//! | [`errors`] | `errors` |
//! | [`element_clicks`] (on facts) | `element_clicks` |
//!
//! Signals that build on what the others found (a click became part of a rage burst,
//! was judged dead, was followed by an error) subscribe to [`Fact`]s instead of hooking
//! into the device: see [`FactSignal`] and the registry's
//! [`for_each_fact_signal!`](crate::for_each_fact_signal).

pub mod clicks;
pub mod element_clicks;
pub mod episodes;
pub mod errors;
pub mod excessive_scroll;
pub mod funnels;
pub mod heatmap;
pub mod page_stats;
pub mod quick_back;
pub mod rage;
pub mod scroll_depth;
pub mod sessions;
pub mod thrashed_cursor;

#[cfg(test)]
pub(crate) mod testing;

use crate::signals::sessions::{SessionId, SessionRow};
use crate::sym::Sym;

/// Something a device's signals found, for the signals that build on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fact {
    /// A click on a page view's element.
    Click {
        /// The page's URL.
        url: Sym,
        /// The element's selector.
        selector: Sym,
        /// The element's tag.
        tag: Sym,
    },
    /// A click became a rage click (it is in a burst with enough clicks).
    RageClick {
        /// The page's URL.
        url: Sym,
        /// The element's selector.
        selector: Sym,
    },
    /// A click was judged dead.
    DeadClick {
        /// The page's URL.
        url: Sym,
        /// The element's selector.
        selector: Sym,
    },
    /// A click was followed by an uncaught error.
    ErrorClick {
        /// The page's URL.
        url: Sym,
        /// The element's selector.
        selector: Sym,
    },
}

/// A signal built from [`Fact`]s, with state kept per session. Listed in
/// [`for_each_fact_signal!`](crate::for_each_fact_signal), it needs no hook in the device.
pub trait FactSignal: Default + Clone + std::fmt::Debug {
    /// A fact of the session whose row is `row`.
    fn on_fact(&mut self, fact: &Fact, row: &SessionRow, out: &mut crate::registry::Emit);
    /// Heap bytes of the state.
    fn heap_bytes(&self) -> usize;
    /// Reference: the views from every fact of one device, with the index of the session
    /// (into `rows`) it belongs to.
    fn reference(facts: &[(usize, Fact)], rows: &[SessionRow], v: &mut crate::Views);
}

/// What the rows of a page are stamped with.
#[derive(Clone, Copy, Debug)]
pub struct RowCtx {
    /// The session.
    pub session: SessionId,
    /// The device's project.
    pub project: Sym,
    /// The page's URL.
    pub url: Sym,
}

/// Replaces an emitted row with its current value (retract + insert) when it changed.
pub(crate) fn replace<R: Copy + PartialEq>(out: &mut Vec<(R, isize)>, emitted: &mut Option<R>, current: Option<R>) {
    if *emitted != current {
        if let Some(old) = emitted.take() {
            out.push((old, -1));
        }
        if let Some(new) = current {
            out.push((new, 1));
        }
        *emitted = current;
    }
}

/// A row held in emitted form only by the part of it that can change while its state is
/// held; the rest is the same in the row built from that state now.
pub(crate) trait Kept: Copy + PartialEq {
    type Part: Copy + PartialEq;
    fn part(&self) -> Self::Part;
    /// `self` with `part` put back: the row as emitted.
    fn with(self, part: Self::Part) -> Self;
}

/// [`replace`] for a [`Kept`] row. `now` is the row built from the state as it is,
/// whether or not it is shown; it exists whenever a part is held.
pub(crate) fn replace_kept<R: Kept>(
    out: &mut Vec<(R, isize)>,
    emitted: &mut Option<R::Part>,
    now: Option<R>,
    shown: bool,
) {
    let current = now.filter(|_| shown);
    let part = current.as_ref().map(R::part);
    if *emitted != part {
        if let Some(old) = emitted.take() {
            let now = now.expect("an emitted row's state is held");
            out.push((now.with(old), -1));
        }
        if let Some(new) = current {
            out.push((new, 1));
        }
        *emitted = part;
    }
}
