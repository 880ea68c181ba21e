//! The ghost-range marker: the one message the host itself makes when it
//! continues past ghost changes (`source.on-ghost-changes = "mark"`,
//! DESIGN.md §3, "Failover").
//!
//! After a promotion, the stream may hold changes the new primary never
//! had: those the old primary sent between the switch point and the end of
//! what was streamed. Instead of refusing, the pipeline publishes one
//! message to `source.ghost-subject` naming that range, and only once
//! JetStream has stored it does it read anything of the new timeline (see
//! `source_loop` and `crate::position::confirm`). Consumers reconcile the
//! range from the marker: every message whose `Sluice-Commit-Lsn` lies
//! above the switch point and up to the ghost end, and whose
//! `Nats-Msg-Id` has no `@<new timeline>` qualifier, is a ghost.
//!
//! The marker does not go through the plugins: it is the host's statement,
//! like a dead letter's headers, and a sink could not know its format. Its
//! payload is JSON:
//!
//! ```json
//! {"type": "ghost-range", "pipeline": "orders", "slot": "sluice_orders",
//!  "old_timeline": 1, "new_timeline": 2,
//!  "switch_point": "0/3000060", "ghost_end": "0/30012A0"}
//! ```
//!
//! with `Sluice-Op: ghost-range`, `Sluice-Commit-Lsn` the switch point, and
//! a `Nats-Msg-Id` made of the promotion alone
//! (`crate::publish::ghost_msg_id`), so that a restart which marks the same
//! promotion again is de-duplicated.

use crate::model::Message;
use crate::position::startup::TimelineChange;
use crate::publish::{self, HostMeta};
use crate::replication::SlotName;

/// The `Sluice-Op` of the marker.
pub(super) const OP: &str = "ghost-range";

/// What the marker names besides the promotion.
#[derive(Clone, Debug)]
pub(super) struct GhostMarker {
    pub(super) pipeline: String,
    pub(super) slot: SlotName,
    /// `source.ghost-subject` (checked against `nats.subjects` by the
    /// manifest).
    pub(super) subject: String,
}

impl GhostMarker {
    /// The marker for `change`, whose `ghost_end` is set.
    pub(super) fn message(&self, change: &TimelineChange) -> publish::Outgoing {
        let end = change.ghost_end.unwrap_or(change.switch_point);
        let payload = serde_json::json!({
            "type": OP,
            "pipeline": self.pipeline,
            "slot": self.slot.as_str(),
            "old_timeline": change.from,
            "new_timeline": change.to,
            "switch_point": change.switch_point.to_string(),
            "ghost_end": end.to_string(),
        });
        publish::Outgoing {
            message: Message {
                subject: self.subject.clone(),
                headers: Vec::new(),
                payload: payload.to_string().into_bytes(),
                event: None,
            },
            meta: HostMeta {
                msg_id: publish::ghost_msg_id(
                    &self.pipeline,
                    change.from,
                    change.to,
                    change.switch_point,
                ),
                commit_lsn: change.switch_point,
                lsn: None,
                table: None,
                op: Some(OP),
                error: None,
                // Consumers recognise the marker by its `Sluice-Op`.
                metadata: true,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lsn::Lsn;

    #[test]
    fn the_marker_names_the_pipeline_the_promotion_and_the_range() {
        let marker = GhostMarker {
            pipeline: "orders".into(),
            slot: SlotName::new("sluice_orders").unwrap(),
            subject: "cdc.ghosts".into(),
        };
        let change = TimelineChange {
            from: 1,
            to: 2,
            switch_point: Lsn(0x3000060),
            ghost_end: Some(Lsn(0x30012A0)),
        };
        let out = marker.message(&change);
        assert_eq!(out.message.subject, "cdc.ghosts");
        let payload: serde_json::Value = serde_json::from_slice(&out.message.payload).unwrap();
        assert_eq!(
            payload,
            serde_json::json!({
                "type": "ghost-range",
                "pipeline": "orders",
                "slot": "sluice_orders",
                "old_timeline": 1,
                "new_timeline": 2,
                "switch_point": "0/3000060",
                "ghost_end": "0/30012A0",
            })
        );
        assert_eq!(out.meta.msg_id, "orders:ghost:1:2:0000000003000060");
        assert_eq!(out.meta.op, Some("ghost-range"));
        assert_eq!(out.meta.commit_lsn, Lsn(0x3000060));
        // The same promotion marked again (a restart) has the same id.
        assert_eq!(marker.message(&change).meta.msg_id, out.meta.msg_id);
    }
}
