//! Dead and error clicks, each judged on its own.
//!
//! A click is *dead* when nothing reacts to it: no DOM mutation and no navigation within
//! `mutation_window_ms` / `navigation_window_ms`, no scroll within `scroll_window_ms` and
//! no input within `input_window_ms` (on its tab). Clicks into text fields are never
//! dead. A click is an *error click* when an uncaught error follows it within
//! `signals.error_click.window_ms` on the same page view.
//!
//! Verdicts need the windows closed: a click is judged as soon as the device has an event
//! past the longest window, or at a deadline in logical time when the device goes quiet
//! (`late_verdict_ms` after the click arrived, and not before its window closes), or when
//! its session or state ends. Only events that arrived by the deadline count as
//! reactions. A click that arrived on time waits as long as a late one: browsers send
//! their events in batches every few seconds, so the reaction to a click at the end of
//! one batch comes in the next, after the click's window has closed in logical time.

use std::collections::VecDeque;

use crate::event::{Click, Kind, tick_ceil};
use crate::params::Params;
use crate::reference::Timeline;
use crate::registry::Emit;
use crate::row;
use crate::signals::sessions::SessionRow;
use crate::sym::Sym;

row! {
    /// A click nothing reacted to.
    DeadRow {
        session: u64 as session_id Session,
        project: Sym as project Str,
        url: Sym as url Str,
        ts: i64 as ts Ts,
        x: i32 as x I32,
        y: i32 as y I32,
        selector: Sym as selector Str,
        tag: Sym as tag Str,
    }
}

row! {
    /// A click followed by an uncaught error.
    ErrorClickRow {
        session: u64 as session_id Session,
        project: Sym as project Str,
        url: Sym as url Str,
        ts: i64 as ts Ts,
        selector: Sym as selector Str,
        message: Sym as message Str,
        x: i32 as x I32,
        y: i32 as y I32,
        error_ts: i64 as error_ts Ts,
    }
}

/// A click waiting for its verdicts.
#[derive(Clone, Copy, Debug)]
pub struct PendingClick {
    eff: i64,
    page_number: u32,
    /// The page's URL.
    pub url: Sym,
    x: i32,
    y: i32,
    /// The target's selector.
    pub selector: Sym,
    /// The target's tag.
    pub tag: Sym,
    /// When the dead verdict is due (logical time).
    deadline: u64,
    /// Text fields are never dead.
    exempt: bool,
    reacted: bool,
    judged: bool,
    errored: bool,
}

/// A tab's clicks that may still be judged dead or become error clicks.
#[derive(Clone, Debug, Default)]
pub struct Pending {
    clicks: VecDeque<PendingClick>,
}

/// A click judged dead: its place, for whoever counts per element.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// The page's URL.
    pub url: Sym,
    /// The target's selector.
    pub selector: Sym,
    /// The target's tag.
    pub tag: Sym,
}

/// When a quiet device's click is judged: `late_verdict` after it arrived (logical time
/// `t`), and not before the tick its window closes. Its reactions may come in the
/// device's next batch, whether the click itself arrived on time or late.
pub fn verdict_deadline(t: u64, eff: i64, p: &Params) -> u64 {
    tick_ceil(eff + p.dead_window(), p.tick).max(t).max(t + p.late_verdict)
}

impl Pending {
    /// A new click of this tab, at effective time `eff`, arrived at logical time `t`.
    pub fn on_click(&mut self, t: u64, eff: i64, page_number: u32, url: Sym, c: &Click, p: &Params) {
        // Grow by half (a deque's first allocation would hold four).
        if self.clicks.len() == self.clicks.capacity() {
            self.clicks.reserve_exact(self.clicks.len() / 2 + 1);
        }
        self.clicks.push_back(PendingClick {
            eff,
            page_number,
            url,
            x: c.x,
            y: c.y,
            selector: c.selector,
            tag: c.tag,
            deadline: verdict_deadline(t, eff, p),
            exempt: c.text_field,
            reacted: false,
            judged: false,
            errored: false,
        });
    }

    /// An event of this tab: a reaction to the clicks within its window.
    pub fn on_event(&mut self, kind: &Kind, eff: i64, p: &Params) {
        let window = match kind {
            Kind::Mutation => p.dead_mutation,
            Kind::PageView(_) => p.dead_navigation,
            Kind::Scroll { .. } => p.dead_scroll,
            Kind::Input { .. } => p.dead_input,
            _ => return,
        };
        for c in self.clicks.iter_mut() {
            if !c.judged && eff - c.eff <= window {
                c.reacted = true;
            }
        }
    }

    /// The device's timeline reached `eff`: clicks whose windows closed before it are
    /// judged.
    pub fn judge_passed(
        &mut self,
        eff: i64,
        row: &mut SessionRow,
        p: &Params,
        out: &mut Emit,
        dead: &mut Vec<Verdict>,
    ) {
        let window = p.dead_window();
        for c in self.clicks.iter_mut() {
            if !c.judged && !c.exempt && eff - c.eff > window {
                judge(c, row, out, dead);
            }
        }
    }

    /// Logical time `now` passed: clicks due by then are judged (all of them at release).
    pub fn judge_due(
        &mut self,
        now: u64,
        release: bool,
        row: &mut SessionRow,
        out: &mut Emit,
        dead: &mut Vec<Verdict>,
    ) {
        for c in self.clicks.iter_mut() {
            if !c.judged && (c.deadline <= now || release) {
                judge(c, row, out, dead);
            }
        }
    }

    /// The session ends: every pending verdict is given now.
    pub fn judge_all(&mut self, row: &mut SessionRow, out: &mut Emit, dead: &mut Vec<Verdict>) {
        for c in self.clicks.iter_mut() {
            if !c.judged {
                judge(c, row, out, dead);
            }
        }
    }

    /// Clicks leave once judged and past the error window.
    pub fn prune(&mut self, eff: i64, p: &Params) {
        while let Some(c) = self.clicks.front() {
            if (c.judged || c.exempt) && eff - c.eff > p.error_window {
                self.clicks.pop_front();
                let len = self.clicks.len();
                if self.clicks.capacity() > 2 * len + 2 {
                    self.clicks.shrink_to(len + len / 2 + 1);
                }
            } else {
                break;
            }
        }
    }

    /// An uncaught error on page `page_number` at `eff`: the clicks it follows within the
    /// window are error clicks. Returns them.
    pub fn on_error(
        &mut self,
        page_number: u32,
        eff: i64,
        message: Sym,
        row: &mut SessionRow,
        p: &Params,
        out: &mut Emit,
    ) -> smallvec::SmallVec<[PendingClick; 2]> {
        let mut hit = smallvec::SmallVec::new();
        for c in self.clicks.iter_mut() {
            if !c.errored && c.page_number == page_number && eff - c.eff <= p.error_window {
                c.errored = true;
                row.error_clicks += 1;
                out.error_clicks.push((
                    ErrorClickRow {
                        session: row.session,
                        project: row.project,
                        url: c.url,
                        ts: c.eff,
                        x: c.x,
                        y: c.y,
                        selector: c.selector,
                        message,
                        error_ts: eff,
                    },
                    1,
                ));
                hit.push(*c);
            }
        }
        hit
    }

    /// The earliest verdict deadline pending (`u64::MAX`: none).
    pub fn next_deadline(&self) -> u64 {
        self.clicks.iter().filter(|c| !c.judged && !c.exempt).map(|c| c.deadline).min().unwrap_or(u64::MAX)
    }

    /// Heap bytes (the struct itself is counted where it is held).
    pub fn heap_bytes(&self) -> usize {
        self.clicks.capacity() * std::mem::size_of::<PendingClick>()
    }
}

fn judge(c: &mut PendingClick, row: &mut SessionRow, out: &mut Emit, dead: &mut Vec<Verdict>) {
    c.judged = true;
    if !c.reacted && !c.exempt {
        row.dead_clicks += 1;
        out.dead_clicks.push((
            DeadRow {
                session: row.session,
                project: row.project,
                url: c.url,
                ts: c.eff,
                x: c.x,
                y: c.y,
                selector: c.selector,
                tag: c.tag,
            },
            1,
        ));
        dead.push(Verdict { url: c.url, selector: c.selector, tag: c.tag });
    }
}

/// Reference: error clicks (click index, error index) and dead clicks (click index).
pub(crate) fn reference_verdicts(tl: &Timeline, p: &Params) -> (Vec<(usize, usize)>, Vec<usize>) {
    let (mut errors, mut dead) = (Vec::new(), Vec::new());
    let windows = [p.dead_mutation, p.dead_navigation, p.dead_scroll, p.dead_input];
    let longest = windows.into_iter().max().unwrap_or(0);
    for (i, a) in tl.anns.iter().enumerate() {
        let Kind::Click(c) = a.ev.kind else { continue };
        let same_session_tab: Vec<usize> = (i + 1..tl.anns.len())
            .take_while(|&j| tl.anns[j].session == a.session)
            .filter(|&j| tl.anns[j].ev.tab == a.ev.tab)
            .collect();
        if let Some(&j) = same_session_tab.iter().find(|&&j| {
            let b = &tl.anns[j];
            matches!(b.ev.kind, Kind::Error { .. }) && b.page_no == a.page_no && b.eff - a.eff <= p.error_window
        }) {
            errors.push((i, j));
        }
        if c.text_field {
            continue;
        }
        // The verdict's deadline in logical time.
        let closes = (a.eff + longest).max(0) as u64;
        let deadline = (closes.div_ceil(p.tick) * p.tick).max(a.t).max(a.t + p.late_verdict);
        let s = &tl.sessions[a.session];
        let moved_past = (i + 1..tl.anns.len())
            .take_while(|&j| tl.anns[j].session == a.session)
            .any(|j| tl.anns[j].eff - a.eff > longest);
        if !(moved_past || deadline <= tl.as_of || s.superseded || s.released) {
            continue;
        }
        let reacted = same_session_tab.iter().map(|&j| &tl.anns[j]).filter(|b| b.t <= deadline).any(|b| {
            let dt = b.eff - a.eff;
            match b.ev.kind {
                Kind::Mutation => dt <= p.dead_mutation,
                Kind::PageView(_) => dt <= p.dead_navigation,
                Kind::Scroll { .. } => dt <= p.dead_scroll,
                Kind::Input { .. } => dt <= p.dead_input,
                _ => false,
            }
        });
        if !reacted {
            dead.push(i);
        }
    }
    (errors, dead)
}

/// Reference: `dead_clicks` and `error_clicks` rows and the sessions' counts.
pub(crate) fn reference(
    tl: &Timeline,
    errors: &[(usize, usize)],
    dead: &[usize],
    rows: &mut [SessionRow],
    v: &mut crate::Views,
) {
    for &(i, j) in errors {
        let (a, err) = (&tl.anns[i], &tl.anns[j]);
        let (Kind::Click(c), Kind::Error { message, .. }) = (a.ev.kind, err.ev.kind) else { continue };
        rows[a.session].error_clicks += 1;
        *v.error_clicks
            .entry(ErrorClickRow {
                session: rows[a.session].session,
                project: tl.key.project,
                url: tl.url_of(a),
                ts: a.eff,
                x: c.x,
                y: c.y,
                selector: c.selector,
                message,
                error_ts: err.eff,
            })
            .or_insert(0) += 1;
    }
    for &i in dead {
        let a = &tl.anns[i];
        let Kind::Click(c) = a.ev.kind else { continue };
        rows[a.session].dead_clicks += 1;
        *v.dead_clicks
            .entry(DeadRow {
                session: rows[a.session].session,
                project: tl.key.project,
                url: tl.url_of(a),
                ts: a.eff,
                x: c.x,
                y: c.y,
                selector: c.selector,
                tag: c.tag,
            })
            .or_insert(0) += 1;
    }
}

#[cfg(test)]
mod tests {
    use crate::signals::testing::check;

    fn dead(v: &crate::Views) -> Vec<i64> {
        let mut d: Vec<i64> = v.dead_clicks.keys().map(|r| r.ts).collect();
        d.sort();
        d
    }

    #[test]
    fn a_reaction_in_the_next_batch_saves_a_click_that_came_on_time() {
        // The click ends one SDK batch and came on time; the mutation answering it comes
        // with the next batch, 5 s later, when the click's window has closed in logical
        // time. It counts: the quiet device's click waits for late_verdict_ms.
        check("0 pv /a; 1000 click 1 1; 1300 @6000 mut; 5900 @6000 act", |v| assert!(dead(v).is_empty()));
        // Nothing in the next batch answers it: dead.
        check("0 pv /a; 1000 click 1 1; 5900 @6000 act", |v| assert_eq!(dead(v), [1000]));
    }

    #[test]
    fn a_click_nothing_reacts_to_is_dead() {
        check("0 pv /a; 100 click 1 1", |v| assert_eq!(dead(v), [100]));
        check("0 pv /a; 100 click 1 1; 2600 mut", |v| assert_eq!(dead(v), [] as [i64; 0]));
        check("0 pv /a; 100 click 1 1; 2601 mut", |v| assert_eq!(dead(v), [100]));
        check("0 pv /a; 100 click 1 1; 200 scroll 1 50", |v| assert_eq!(dead(v), [] as [i64; 0]));
        check("0 pv /a; 100 click 1 1; 201 scroll 1 50", |v| assert_eq!(dead(v), [100]));
        check("0 pv /a; 100 click 1 1; 2600 input", |v| assert_eq!(dead(v), [] as [i64; 0]));
        check("0 pv /a; 100 click 1 1; 200 pv /b", |v| assert_eq!(dead(v), [] as [i64; 0]));
        check("0 pv /a; 100 click 1 1 input#q input field", |v| assert_eq!(dead(v), [] as [i64; 0]));
        // A reaction on another tab does not count.
        check("0 pv /a; 0 t2 pv /b; 100 click 1 1; 200 t2 mut", |v| assert_eq!(dead(v), [100]));
    }

    #[test]
    fn an_error_soon_after_a_click_on_its_page_makes_an_error_click() {
        let errs = |v: &crate::Views| v.error_clicks.len();
        check("0 pv /a; 100 click 1 1; 1100 error boom", |v| assert_eq!(errs(v), 1));
        check("0 pv /a; 100 click 1 1; 1101 error boom", |v| assert_eq!(errs(v), 0));
        check("0 pv /a; 100 click 1 1; 500 pv /b; 600 error boom", |v| assert_eq!(errs(v), 0));
        // Dead and error are independent.
        check("0 pv /a; 100 click 1 1; 300 error boom", |v| assert_eq!((errs(v), v.dead_clicks.len()), (1, 1)));
    }
}
