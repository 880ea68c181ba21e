//! Deterministic `Nats-Msg-Id`s.
//!
//! JetStream drops a message whose `Nats-Msg-Id` it has already stored within the
//! stream's duplicate window. Sluice derives the id from where the message comes
//! from, never from a clock or a random number, so that a transaction PostgreSQL
//! replays after a crash, and a publish retried after an ack was lost, produce the
//! very same ids and are de-duplicated:
//!
//! ```text
//! <pipeline>:<commit LSN as 16 uppercase hex digits>:<xid>:<event index>:<output index>
//! ```
//!
//! for example `orders:00000000016B3748:750:12:0`. The xid is there because a
//! commit LSN alone is not unique: a non-transactional logical message (xid 0)
//! is identified by the LSN where its record ends, and the next transaction's
//! commit record may start at exactly that LSN. The event index is the index, among
//! the transaction's decoded events (from 0, before transforms), of the first event
//! of the batch the message came from; the output index counts that batch's
//! messages from 0. Batches are cut at the same events on every replay, so both are
//! deterministic, and a batch split to isolate a failing event numbers its messages
//! the same way. The LSN has a fixed width so that ids of one pipeline sort in
//! commit order. The pipeline name may itself contain `:`; [`MsgId::from_str`]
//! reads the four other fields from the right.
//!
//! **Timelines.** After a promotion, the new primary's WAL past the switch
//! point reuses the LSNs (and, since the standby's transaction counter
//! continues from what it replayed, even the xids) of whatever the old
//! primary wrote there. When the stream already holds such changes ("ghost
//! changes", accepted with `source.on-ghost-changes = "mark"`), the new
//! primary's transactions there would get the ghosts' very ids, and
//! JetStream would drop them as duplicates: silent loss. So with `"mark"`,
//! the LSN field of a change written on a timeline above 1 carries that
//! timeline after an `@`:
//!
//! ```text
//! orders:00000000016B3748@2:750:12:0
//! ```
//!
//! The timeline is the one that *wrote* the change, read from the server's
//! timeline history (`crate::position::history`), not the server's timeline
//! now: a transaction the new primary replays from below the switch point
//! gets the id it had when the old primary sent it, and a crash and replay
//! on the new timeline gets the same ids again. Without `"mark"`, and on
//! timeline 1, ids have no qualifier, as they always had. Turning `"mark"`
//! on for a server already past timeline 1 changes the ids of what it
//! commits from then on; a clean restart replays nothing, so nothing is
//! published twice.
//!
//! The marker message for a ghost range has its own id,
//! `<pipeline>:ghost:<old timeline>:<new timeline>:<switch point as 16 hex
//! digits>` ([`ghost_msg_id`]): a restart that marks the same promotion
//! again is de-duplicated.

use std::fmt;
use std::str::FromStr;

use crate::lsn::Lsn;

/// The id of message `output_index` of the batch starting at event
/// `event_index` of transaction `xid`, committed at `commit_lsn`.
pub fn msg_id(
    pipeline: &str,
    commit_lsn: Lsn,
    xid: u32,
    event_index: u64,
    output_index: u64,
) -> String {
    timeline_msg_id(pipeline, commit_lsn, None, xid, event_index, output_index)
}

/// [`msg_id`] for a change written on `timeline` (see the module
/// documentation); `None` or `Some(1)` gives the unqualified id.
pub fn timeline_msg_id(
    pipeline: &str,
    commit_lsn: Lsn,
    timeline: Option<u32>,
    xid: u32,
    event_index: u64,
    output_index: u64,
) -> String {
    // Written straight into one buffer: this runs once per published message.
    let mut id = String::with_capacity(pipeline.len() + 64);
    id.push_str(pipeline);
    id.push(':');
    push_hex16(&mut id, commit_lsn.0);
    let mut digits = itoa::Buffer::new();
    if let Some(timeline) = timeline.filter(|&t| t > 1) {
        id.push('@');
        id.push_str(digits.format(timeline));
    }
    for n in [u64::from(xid), event_index, output_index] {
        id.push(':');
        id.push_str(digits.format(n));
    }
    id
}

/// Appends `value` as 16 uppercase hex digits.
fn push_hex16(out: &mut String, value: u64) {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    let mut buf = [0u8; 16];
    for (i, digit) in buf.iter_mut().enumerate() {
        *digit = DIGITS[((value >> (60 - 4 * i)) & 0xF) as usize];
    }
    out.push_str(std::str::from_utf8(&buf).expect("hex digits are ASCII"));
}

/// The id of the marker message for the ghost range after the promotion
/// from timeline `from` to `to` at `switch_point`.
pub fn ghost_msg_id(pipeline: &str, from: u32, to: u32, switch_point: Lsn) -> String {
    format!("{pipeline}:ghost:{from}:{to}:{:016X}", switch_point.0)
}

/// The id of the message `output_index` that the sink produced for event
/// `event_index` of a snapshot chunk of table `table_oid` whose rows hash
/// to `digest` (see `crate::snapshot`): a chunk read again with the same
/// rows gets the same ids, so JetStream drops the repeat.
///
/// ```text
/// <pipeline>:read:<table OID>:<digest as 16 hex digits>:<event index>:<output index>
/// ```
pub fn read_msg_id(
    pipeline: &str,
    table_oid: u32,
    digest: u64,
    event_index: u64,
    output_index: u64,
) -> String {
    format!("{pipeline}:read:{table_oid}:{digest:016X}:{event_index}:{output_index}")
}

/// The parts of a `Nats-Msg-Id` written by Sluice.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MsgId {
    pub pipeline: String,
    pub commit_lsn: Lsn,
    /// The timeline that wrote the change, when it is qualified (above 1).
    pub timeline: Option<u32>,
    pub xid: u32,
    pub event_index: u64,
    pub output_index: u64,
}

impl fmt::Display for MsgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&timeline_msg_id(
            &self.pipeline,
            self.commit_lsn,
            self.timeline,
            self.xid,
            self.event_index,
            self.output_index,
        ))
    }
}

/// Why a text is not a Sluice message id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{text}` is not a Sluice message id: expected `<pipeline>:<16 hex digits>[@<timeline>]:<xid>:<event>:<output>`"
)]
pub struct MsgIdError {
    text: String,
}

impl FromStr for MsgId {
    type Err = MsgIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || MsgIdError {
            text: s.chars().take(200).collect(),
        };
        let mut parts = s.rsplitn(5, ':');
        let output = parts.next().ok_or_else(err)?;
        let event = parts.next().ok_or_else(err)?;
        let xid = parts.next().ok_or_else(err)?;
        let lsn = parts.next().ok_or_else(err)?;
        let pipeline = parts.next().ok_or_else(err)?;
        let decimal = |t: &str| {
            if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err());
            }
            t.parse::<u64>().map_err(|_| err())
        };
        let (lsn, timeline) = match lsn.split_once('@') {
            Some((lsn, text)) => {
                let timeline = u32::try_from(decimal(text)?).map_err(|_| err())?;
                // Written only above 1, without leading zeros: one id per
                // change.
                if timeline < 2 || timeline.to_string() != text {
                    return Err(err());
                }
                (lsn, Some(timeline))
            }
            None => (lsn, None),
        };
        if lsn.len() != 16 || !lsn.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(err());
        }
        Ok(MsgId {
            pipeline: pipeline.to_owned(),
            commit_lsn: Lsn(u64::from_str_radix(lsn, 16).map_err(|_| err())?),
            timeline,
            xid: u32::try_from(decimal(xid)?).map_err(|_| err())?,
            event_index: decimal(event)?,
            output_index: decimal(output)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_is_stable() {
        assert_eq!(
            msg_id("orders", Lsn(0x16B3748), 750, 12, 0),
            "orders:00000000016B3748:750:12:0"
        );
        assert_eq!(
            msg_id("p", Lsn(u64::MAX), 0, 0, 3),
            "p:FFFFFFFFFFFFFFFF:0:0:3"
        );
    }

    #[test]
    fn hex_and_decimal_fields_print_as_format_does() {
        for (lsn, xid, event, output) in [
            (0, 0, 0, 0),
            (0x0123_4567_89AB_CDEF, u32::MAX, u64::MAX, 10),
            (0xF0, 1_000_000, 99, 100),
        ] {
            assert_eq!(
                msg_id("p", Lsn(lsn), xid, event, output),
                format!("p:{lsn:016X}:{xid}:{event}:{output}")
            );
        }
        assert_eq!(
            timeline_msg_id("p", Lsn(0xAB), Some(1234), 5, 6, 7),
            "p:00000000000000AB@1234:5:6:7"
        );
    }

    #[test]
    fn parses_back_even_with_colons_in_the_pipeline_name() {
        let id = MsgId {
            pipeline: "a:b".into(),
            commit_lsn: Lsn(1 << 32),
            timeline: None,
            xid: 9,
            event_index: 7,
            output_index: 2,
        };
        assert_eq!(id.to_string().parse::<MsgId>().unwrap(), id);
        let on_3 = MsgId {
            timeline: Some(3),
            ..id
        };
        assert_eq!(on_3.to_string(), "a:b:0000000100000000@3:9:7:2");
        assert_eq!(on_3.to_string().parse::<MsgId>().unwrap(), on_3);
    }

    #[test]
    fn a_timeline_qualifies_the_lsn_above_timeline_1_only() {
        // Single-timeline deployments keep their ids.
        for timeline in [None, Some(1)] {
            assert_eq!(
                timeline_msg_id("orders", Lsn(0x16B3748), timeline, 750, 12, 0),
                "orders:00000000016B3748:750:12:0"
            );
        }
        // The same LSN and xid on timeline 2 is another id: a ghost's twin
        // on the promoted server is not de-duplicated against it.
        assert_eq!(
            timeline_msg_id("orders", Lsn(0x16B3748), Some(2), 750, 12, 0),
            "orders:00000000016B3748@2:750:12:0"
        );
        assert_ne!(
            timeline_msg_id("orders", Lsn(0x16B3748), Some(2), 750, 12, 0),
            msg_id("orders", Lsn(0x16B3748), 750, 12, 0)
        );
    }

    #[test]
    fn the_ghost_marker_id_names_the_promotion_and_is_no_change_id() {
        let id = ghost_msg_id("orders", 1, 2, Lsn(0x3000060));
        assert_eq!(id, "orders:ghost:1:2:0000000003000060");
        assert!(id.parse::<MsgId>().is_err(), "{id}");
    }

    #[test]
    fn rejects_foreign_ids() {
        for text in [
            "",
            "x",
            "p:1:2:3",
            "p:00000000016B3748:1:2",
            "p:00000000016B3748:99999999999:1:2",
            "p:00000000016B3748:-1:0",
            "p:00000000016B3748:1:",
            "00000000016B3748:1:2",
            "p:00000000016B3748@:1:2:3",
            "p:00000000016B3748@1:1:2:3",
            "p:00000000016B3748@02:1:2:3",
            "p:00000000016B3748@x:1:2:3",
            "p:00000000016B3748@99999999999:1:2:3",
            "p:016B3748@2:1:2:3",
        ] {
            assert!(text.parse::<MsgId>().is_err(), "{text}");
        }
    }
}
