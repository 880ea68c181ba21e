//! Which timeline wrote a position: the server's timeline history read as a
//! map from LSNs to timelines, for the timeline qualifier of message ids
//! (`crate::publish::msg_id`, "Timelines").
//!
//! `TIMELINE_HISTORY` of timeline N lists, for each ancestor timeline, the
//! LSN where it ended (its switch point); timeline N wrote everything from
//! the last switch point on. A transaction is placed by its commit record's
//! start (`Batch::commit_lsn`): a record starting before a switch point
//! belongs to the timeline that ended there, one starting at it to the
//! next. A non-transactional message is placed by its LSN, which is where
//! its record *ends* (see `crate::source`): one ending at the switch point
//! is the old timeline's.
//!
//! Invariant: the answer depends only on the history and the position, so
//! every replay, after a reconnect or a restart, places a change on the same
//! timeline. [`Timelines::qualifier`] is `None` unless ghost changes are
//! marked (`source.on-ghost-changes = "mark"`) and the change is above
//! timeline 1, so that ids of every other deployment stay as they were.

use std::sync::Arc;

use crate::lsn::Lsn;
use crate::replication::TimelineSwitch;

/// The history of the server's current timeline, or none when ids are not
/// qualified.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Timelines {
    marked: Option<Marked>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Marked {
    current: u32,
    /// Ancestors first, as `TIMELINE_HISTORY` lists them.
    switches: Arc<[TimelineSwitch]>,
}

impl Timelines {
    /// No qualifier for any change (`source.on-ghost-changes = "refuse"`).
    pub fn unqualified() -> Self {
        Timelines { marked: None }
    }

    /// Qualifies changes written on timelines above 1, given the history
    /// of the server's `current` timeline (empty on timeline 1).
    pub fn marked(current: u32, switches: Arc<[TimelineSwitch]>) -> Self {
        Timelines {
            marked: Some(Marked { current, switches }),
        }
    }

    /// The server is on `current` now, with `switches` as its history (when
    /// it was read): qualified ids place changes by that history from here
    /// on. Unqualified ids stay unqualified.
    pub fn follow(&mut self, current: u32, switches: Option<Arc<[TimelineSwitch]>>) {
        if let Some(switches) = switches
            && self.is_marked()
        {
            *self = Timelines::marked(current, switches);
        }
    }

    /// Whether changes are qualified at all.
    pub fn is_marked(&self) -> bool {
        self.marked.is_some()
    }

    /// The timeline that wrote the transaction committed at `commit_lsn`
    /// (or, for xid 0, the non-transactional message ending there).
    pub fn timeline_of(&self, commit_lsn: Lsn, xid: u32) -> Option<u32> {
        let marked = self.marked.as_ref()?;
        let before = |switch_point: Lsn| {
            if xid == 0 {
                commit_lsn <= switch_point
            } else {
                commit_lsn < switch_point
            }
        };
        Some(
            marked
                .switches
                .iter()
                .find(|s| before(s.switch_point))
                .map_or(marked.current, |s| s.timeline),
        )
    }

    /// The qualifier for a change's message ids: its timeline when that is
    /// above 1 and changes are qualified.
    pub fn qualifier(&self, commit_lsn: Lsn, xid: u32) -> Option<u32> {
        self.timeline_of(commit_lsn, xid).filter(|&t| t > 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> Timelines {
        Timelines::marked(
            3,
            vec![
                TimelineSwitch {
                    timeline: 1,
                    switch_point: Lsn(0x1000),
                },
                TimelineSwitch {
                    timeline: 2,
                    switch_point: Lsn(0x5000),
                },
            ]
            .into(),
        )
    }

    #[test]
    fn a_change_belongs_to_the_timeline_that_wrote_it() {
        let t = three();
        assert_eq!(t.qualifier(Lsn(0x0FFF), 7), None, "timeline 1");
        assert_eq!(t.qualifier(Lsn(0x1000), 7), Some(2), "starts at the switch");
        assert_eq!(t.qualifier(Lsn(0x4FFF), 7), Some(2));
        assert_eq!(t.qualifier(Lsn(0x5000), 7), Some(3));
        assert_eq!(t.qualifier(Lsn(0x9000), 7), Some(3));
    }

    #[test]
    fn a_message_ending_at_the_switch_point_is_the_old_timelines() {
        let t = three();
        assert_eq!(t.qualifier(Lsn(0x1000), 0), None);
        assert_eq!(t.qualifier(Lsn(0x1008), 0), Some(2));
        assert_eq!(t.qualifier(Lsn(0x5000), 0), Some(2));
        assert_eq!(t.qualifier(Lsn(0x5008), 0), Some(3));
    }

    #[test]
    fn a_promotion_is_followed_only_when_marked_and_its_history_known() {
        let switch = |t, lsn| TimelineSwitch {
            timeline: t,
            switch_point: Lsn(lsn),
        };
        let mut t = Timelines::marked(1, Vec::new().into());
        t.follow(2, None);
        assert_eq!(t.qualifier(Lsn(0x9000), 7), None);
        t.follow(2, Some(vec![switch(1, 0x1000)].into()));
        assert_eq!(t.qualifier(Lsn(0x9000), 7), Some(2));
        let mut plain = Timelines::unqualified();
        plain.follow(2, Some(vec![switch(1, 0x1000)].into()));
        assert_eq!(plain, Timelines::unqualified());
    }

    #[test]
    fn nothing_is_qualified_on_timeline_1_or_without_mark() {
        let one = Timelines::marked(1, Vec::new().into());
        assert_eq!(one.qualifier(Lsn(0x9000), 7), None);
        assert_eq!(one.timeline_of(Lsn(0x9000), 7), Some(1));
        assert_eq!(Timelines::unqualified().qualifier(Lsn(0x9000), 7), None);
        assert!(!Timelines::unqualified().is_marked());
    }
}
