//! Funnels: ordered steps (a page-view URL path pattern, a custom event name, or a click
//! selector) reached in order within one session, all within the funnel's window of
//! its first step; other events may come in between. Per step, how many sessions (or
//! devices, when the funnel counts devices) reached it.

use crate::event::{Kind, PageView};
use crate::params::{Params, StepMatcher, glob_match, selector_match};
use crate::reference::Timeline;
use crate::registry::Emit;
use crate::row;
use crate::signals::sessions::SessionRow;
use crate::signals::{Kept, replace_kept};
use crate::sym::Sym;

row! {
    /// How many leading steps of a funnel a session reached.
    FunnelRow {
        session: u64 as session_id Session,
        project: Sym as project Str,
        device: Sym as device_id Str,
        funnel: u32 as funnel Funnel,
        steps: u32 as steps_reached I64,
    }
}

row! {
    /// A funnel step; its multiplicity is the number of sessions (or devices) reaching it.
    FunnelStepRow {
        /// The project.
        project: Sym,
        /// Index of the funnel in the configuration.
        funnel: u32,
        /// The step reached, counting from 1.
        step: u32,
    }
}

impl Kept for FunnelRow {
    type Part = u32;
    fn part(&self) -> Self::Part {
        self.steps
    }
    fn with(self, steps: Self::Part) -> Self {
        FunnelRow { steps, ..self }
    }
}

#[derive(Clone, Debug)]
struct Progress {
    /// For each step, the latest start time of a chain that reached it (`NONE` when no
    /// chain has).
    best_start: Box<[i64]>,
    emitted: Option<u32>,
}

const NONE: i64 = i64::MIN;

/// A session's progress through every funnel.
#[derive(Clone, Debug, Default)]
pub struct SessionState {
    funnels: Vec<Progress>,
}

impl SessionState {
    /// A fresh session's state.
    pub fn new(p: &Params) -> SessionState {
        SessionState {
            funnels: p
                .funnels
                .iter()
                .map(|f| Progress { best_start: vec![NONE; f.steps.len()].into(), emitted: None })
                .collect(),
        }
    }

    fn step(&mut self, eff: i64, p: &Params, matches: impl Fn(&StepMatcher) -> bool) {
        for (spec, f) in p.funnels.iter().zip(self.funnels.iter_mut()) {
            for k in (0..spec.steps.len()).rev() {
                if !matches(&spec.steps[k]) {
                    continue;
                }
                if k == 0 {
                    f.best_start[0] = eff;
                } else {
                    let start = f.best_start[k - 1];
                    if start != NONE && eff - start <= spec.window {
                        f.best_start[k] = f.best_start[k].max(start);
                    }
                }
            }
        }
    }

    /// A page view at `eff`.
    pub fn on_page_view(&mut self, pv: &PageView, eff: i64, p: &Params) {
        let (url, path) = (pv.url, pv.path);
        self.step(eff, p, |m| match m {
            StepMatcher::Page { pattern, whole_url } => {
                glob_match(pattern, &if *whole_url { url } else { path }.as_string())
            }
            _ => false,
        });
    }

    /// A click on `selector` at `eff`.
    pub fn on_click(&mut self, selector: Sym, eff: i64, p: &Params) {
        if !p.funnels.iter().any(|f| f.steps.iter().any(|s| matches!(s, StepMatcher::Click(_)))) {
            return;
        }
        let text = selector.as_string();
        self.step(eff, p, |m| matches!(m, StepMatcher::Click(sel) if selector_match(sel, &text)));
    }

    /// A custom event `name` at `eff`.
    pub fn on_custom(&mut self, name: Sym, eff: i64, p: &Params) {
        self.step(eff, p, |m| matches!(m, StepMatcher::Event(n) if *n == name));
    }

    /// Emits every funnel's progress that changed.
    pub fn flush(&mut self, row: &SessionRow, p: &Params, out: &mut Emit) {
        for (i, (spec, f)) in p.funnels.iter().zip(self.funnels.iter_mut()).enumerate() {
            let steps = (0..spec.steps.len()).rev().find(|k| f.best_start[*k] != NONE).map_or(0, |k| k as u32 + 1);
            let r =
                FunnelRow { session: row.session, project: row.project, device: row.device, funnel: i as u32, steps };
            replace_kept(&mut out.funnels, &mut f.emitted, Some(r), true);
        }
    }

    /// Heap bytes (the struct itself is counted where it is held).
    pub fn heap_bytes(&self) -> usize {
        self.funnels.capacity() * std::mem::size_of::<Progress>()
            + self.funnels.iter().map(|f| f.best_start.len() * std::mem::size_of::<i64>()).sum::<usize>()
    }
}

/// Reference: `*` matches any run of characters (a wildcard match by dynamic
/// programming over pattern and text).
fn reference_glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    // m[j]: the pattern's first i characters match the text's first j.
    let mut m = vec![false; t.len() + 1];
    m[0] = true;
    for &pc in &p {
        let mut next = vec![false; t.len() + 1];
        if pc == '*' {
            let mut any = false;
            for j in 0..=t.len() {
                any |= m[j];
                next[j] = any;
            }
        } else {
            for j in 1..=t.len() {
                next[j] = m[j - 1] && t[j - 1] == pc;
            }
        }
        m = next;
    }
    m[t.len()]
}

/// Reference: a click step matches the whole selector or its trailing segments (split
/// at descendant and child combinators).
fn reference_selector(pattern: &str, selector: &str) -> bool {
    if pattern == selector {
        return true;
    }
    let tokens: Vec<&str> = selector.split_inclusive([' ', '>']).collect();
    (1..tokens.len()).any(|k| tokens[k..].concat() == pattern)
}

/// Reference: the longest chain of steps in order within one session, all within the
/// window of its start.
pub(crate) fn reference(tl: &Timeline, p: &Params, rows: &[SessionRow], v: &mut crate::Views) {
    for (s, row) in rows.iter().enumerate() {
        for (fi, spec) in p.funnels.iter().enumerate() {
            let n = spec.steps.len();
            let mut best: Vec<Option<i64>> = vec![None; n];
            for a in tl.anns.iter().filter(|a| a.session == s) {
                let is = |m: &StepMatcher| match (m, a.ev.kind) {
                    (StepMatcher::Page { pattern, whole_url }, Kind::PageView(pv)) => {
                        reference_glob(pattern, &if *whole_url { pv.url } else { pv.path }.as_string())
                    }
                    (StepMatcher::Event(name), Kind::Custom { name: e }) => *name == e,
                    (StepMatcher::Click(sel), Kind::Click(c)) => reference_selector(sel, &c.selector.as_string()),
                    _ => false,
                };
                for k in (0..n).rev() {
                    if !is(&spec.steps[k]) {
                        continue;
                    }
                    if k == 0 {
                        best[0] = Some(a.eff);
                    } else if let Some(st) = best[k - 1]
                        && a.eff - st <= spec.window
                    {
                        best[k] = Some(best[k].map_or(st, |b| b.max(st)));
                    }
                }
            }
            let steps = best.iter().rposition(|b| b.is_some()).map_or(0, |k| k as u32 + 1);
            *v.session_funnels
                .entry(FunnelRow {
                    session: row.session,
                    project: tl.key.project,
                    device: tl.key.device,
                    funnel: fi as u32,
                    steps,
                })
                .or_insert(0) += 1;
        }
    }
}

/// Reference: steps from per-session progress (or per-device best progress).
pub(crate) fn reference_finish(p: &Params, v: &mut crate::Views) {
    let mut device_best: std::collections::BTreeMap<(Sym, u32, Sym), u32> = Default::default();
    let mut steps: Vec<FunnelStepRow> = Vec::new();
    for f in v.session_funnels.keys() {
        if p.funnels[f.funnel as usize].per_device {
            let e = device_best.entry((f.project, f.funnel, f.device)).or_insert(0);
            *e = (*e).max(f.steps);
        } else {
            steps.extend((1..=f.steps).map(|step| FunnelStepRow { project: f.project, funnel: f.funnel, step }));
        }
    }
    for ((project, funnel, _), n) in device_best {
        steps.extend((1..=n).map(|step| FunnelStepRow { project, funnel, step }));
    }
    for s in steps {
        *v.funnel_steps.entry(s).or_insert(0) += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::{reference_glob, reference_selector};
    use crate::params::{glob_match, selector_match};
    use crate::signals::testing::check;

    #[test]
    fn the_reference_matchers_agree_with_the_incremental_ones() {
        for (pat, text) in [
            ("/", "/"),
            ("/", "/pricing"),
            ("/blog/*", "/blog/a/b"),
            ("*/thanks", "/signup/thanks"),
            ("/a*c*e", "/abcde"),
            ("/a*c*e", "/abcd"),
            ("*", ""),
            ("a**b", "ab"),
        ] {
            assert_eq!(reference_glob(pat, text), glob_match(pat, text), "{pat} {text}");
        }
        for (pat, sel) in [
            ("button#buy", "main > button#buy"),
            ("button#buy", "button#buy"),
            ("button#buy", "main > xbutton#buy"),
            ("div > a", "main div > a"),
        ] {
            assert_eq!(reference_selector(pat, sel), selector_match(pat, sel), "{pat} {sel}");
        }
    }

    #[test]
    fn steps_are_reached_in_order() {
        // The default signup funnel: /, /pricing, /signup, /thanks.
        let steps = |v: &crate::Views| v.session_funnels.keys().map(|f| f.steps).collect::<Vec<_>>();
        check("0 pv /; 100 pv /pricing; 200 pv /signup", |v| assert_eq!(steps(v), [3]));
        check("0 pv /pricing; 100 pv /; 200 pv /signup", |v| assert_eq!(steps(v), [1]));
        check("0 pv /; 100 pv /other; 200 pv /pricing; 300 pv /signup; 400 pv /thanks", |v| assert_eq!(steps(v), [4]));
    }
}
