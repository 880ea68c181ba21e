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
    MsgId {
        pipeline: pipeline.to_owned(),
        commit_lsn,
        xid,
        event_index,
        output_index,
    }
    .to_string()
}

/// The parts of a `Nats-Msg-Id` written by Sluice.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MsgId {
    pub pipeline: String,
    pub commit_lsn: Lsn,
    pub xid: u32,
    pub event_index: u64,
    pub output_index: u64,
}

impl fmt::Display for MsgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{:016X}:{}:{}:{}",
            self.pipeline, self.commit_lsn.0, self.xid, self.event_index, self.output_index
        )
    }
}

/// Why a text is not a Sluice message id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{text}` is not a Sluice message id: expected `<pipeline>:<16 hex digits>:<xid>:<event>:<output>`"
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
        if lsn.len() != 16 || !lsn.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(err());
        }
        Ok(MsgId {
            pipeline: pipeline.to_owned(),
            commit_lsn: Lsn(u64::from_str_radix(lsn, 16).map_err(|_| err())?),
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
    fn parses_back_even_with_colons_in_the_pipeline_name() {
        let id = MsgId {
            pipeline: "a:b".into(),
            commit_lsn: Lsn(1 << 32),
            xid: 9,
            event_index: 7,
            output_index: 2,
        };
        assert_eq!(id.to_string().parse::<MsgId>().unwrap(), id);
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
        ] {
            assert!(text.parse::<MsgId>().is_err(), "{text}");
        }
    }
}
