//! Heartbeats: periodic writes to the source so that a quiet slot still
//! moves (`[position.heartbeat]`). PostgreSQL 15 and later send nothing for
//! transactions that touch no published table, so without a write of its
//! own a pipeline on a quiet publication never confirms anything, and the
//! slot holds WAL back. A failed heartbeat is logged, never fatal: it only
//! delays confirmation.
//!
//! Heartbeats are writes, so they go to the primary: their session is
//! opened over the source's host list with `target_session_attrs=primary`,
//! whatever the URL asks of the replication connection. When a heartbeat
//! fails (the server died, a failover, a server that no longer accepts
//! writes), its session is dropped and the next tick walks the list again,
//! so heartbeats reach a promoted standby without a restart.
//! A run of failures is logged once when it starts and once when it ends.

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use crate::replication::setup::connect_sql;
use crate::replication::{ConnInfo, SessionAttrs};

/// The statement run when the manifest gives none: a non-transactional
/// logical message, which every publication sees.
const DEFAULT_STATEMENT: &str = "SELECT pg_logical_emit_message(false, 'sluice.heartbeat', '')";

/// Runs `statement` every `interval` until `token` is cancelled, on `sql`
/// while it works and then on a new session to the primary of `source`.
pub(super) fn spawn(
    sql: Client,
    source: &ConnInfo,
    interval: Duration,
    statement: Option<String>,
    token: CancellationToken,
) -> JoinHandle<()> {
    let primary = ConnInfo {
        session_attrs: SessionAttrs::Primary,
        ..source.clone()
    };
    tokio::spawn(async move {
        let statement = statement.unwrap_or_else(|| DEFAULT_STATEMENT.to_owned());
        let mut session = Some(sql);
        let mut failing = false;
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = token.cancelled() => return,
                _ = tick.tick() => {
                    let result = beat(&mut session, &primary, &statement).await;
                    match (result, failing) {
                        (Ok(()), true) => {
                            failing = false;
                            tracing::info!(target = %primary.targets(), "heartbeats restored");
                        }
                        (Err(e), false) => {
                            failing = true;
                            tracing::warn!(error = %e,
                                "heartbeat failed; trying again every {interval:?} on the primary of {}",
                                primary.targets());
                        }
                        (Err(e), true) => tracing::debug!(error = %e, "heartbeat failed again"),
                        (Ok(()), false) => {}
                    }
                }
            }
        }
    })
}

/// One heartbeat: runs `statement` on the session, opening one to the
/// primary when there is none. The session is kept only when the
/// statement worked: whatever failed (a closed session, a server that no
/// longer takes writes, which PostgreSQL reports with several codes), the
/// next heartbeat looks for the primary again, and one connection per
/// failed heartbeat is cheap at heartbeat intervals.
async fn beat(
    session: &mut Option<Client>,
    primary: &ConnInfo,
    statement: &str,
) -> Result<(), String> {
    let client = match session.take().filter(|c| !c.is_closed()) {
        Some(client) => client,
        None => connect_sql(primary)
            .await
            .map_err(|e| crate::causes::line(&e))?,
    };
    client
        .batch_execute(statement)
        .await
        .map_err(|e| crate::causes::line(&e))?;
    *session = Some(client);
    Ok(())
}
