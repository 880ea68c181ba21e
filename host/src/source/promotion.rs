//! Watching the standby a session decodes from for its promotion.
//!
//! A logical walsender on a standby keeps streaming when its server is
//! promoted: the session does not break, so the reader's reconnect path,
//! which learns the new timeline from `IDENTIFY_SYSTEM`, never runs. Yet
//! the offset records must name the new timeline, or a later start-up
//! would take positions past the switch point for changes of the old
//! timeline that the server never had. [`promoted`] asks the standby
//! itself (a single-host SQL session to the server the replication session
//! is on, never another host of the list) every interval whether it is
//! still in recovery, and completes with its new timeline once it is not.
//! Nothing decoded on that session can be a ghost change: it is all the
//! promoted server's own WAL.

use std::time::Duration;

use tokio_postgres::Client;

use crate::replication::ConnInfo;
use crate::replication::setup::connect_sql_one;

/// The server's timeline, or `None` while it is in recovery: from the name
/// of the WAL file being written, whose first 8 hex digits are it.
const TIMELINE: &str = "SELECT CASE WHEN pg_is_in_recovery() THEN NULL
                            ELSE substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8) END";

/// Completes with the timeline of the server at `standby` (one host) once
/// it is no longer in recovery, asking every `every`. Failures (the
/// server restarting, say) are retried on a new session.
pub(super) async fn promoted(standby: ConnInfo, every: Duration) -> u32 {
    let mut session: Option<Client> = None;
    loop {
        tokio::time::sleep(every).await;
        let client = match session.take().filter(|c| !c.is_closed()) {
            Some(c) => c,
            None => match connect_sql_one(&standby).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(standby = %standby.target(), error = %crate::causes::line(&e),
                        "cannot ask the standby whether it was promoted");
                    continue;
                }
            },
        };
        match client.query_one(TIMELINE, &[]).await {
            Ok(row) => {
                if let Some(timeline) = row.get::<_, Option<String>>(0).as_deref().and_then(parse) {
                    return timeline;
                }
                session = Some(client);
            }
            Err(e) => {
                tracing::debug!(standby = %standby.target(), error = %crate::causes::line(&e),
                    "cannot ask the standby whether it was promoted");
            }
        }
    }
}

/// The timeline in a WAL file name's first 8 hex digits.
fn parse(prefix: &str) -> Option<u32> {
    (prefix.len() == 8)
        .then(|| u32::from_str_radix(prefix, 16).ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timelines_from_wal_file_names() {
        assert_eq!(parse("00000002"), Some(2));
        assert_eq!(parse("0000001A"), Some(26));
        assert_eq!(parse("0000002"), None);
        assert_eq!(parse("0000000G"), None);
    }
}
