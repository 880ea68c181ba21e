//! Heartbeats: periodic writes to the source so that a quiet slot still
//! moves (`[position.heartbeat]`). PostgreSQL 15 and later send nothing for
//! transactions that touch no published table, so without a write of its
//! own a pipeline on a quiet publication never confirms anything, and the
//! slot holds WAL back. A failed heartbeat is logged, never fatal: it only
//! delays confirmation.
//!
//! Heartbeats are writes, so they go to the primary, on a
//! [`PrimarySession`]: the pipeline's SQL session while its server is the
//! primary, otherwise (a source URL that resolves to a standby, decoded
//! there) a session opened over the source's host list with
//! `target_session_attrs=primary`. When a heartbeat fails (the server died,
//! a failover, a server that no longer accepts writes), the next tick walks
//! the list again, so heartbeats reach a promoted standby without a
//! restart. A run of failures is logged once when it starts and once when
//! it ends.

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use crate::replication::ConnInfo;
use crate::replication::primary::PrimarySession;

/// The statement run when the manifest gives none: a non-transactional
/// logical message, which every publication sees.
const DEFAULT_STATEMENT: &str = "SELECT pg_logical_emit_message(false, 'sluice.heartbeat', '')";

/// Runs `statement` every `interval` until `token` is cancelled, on `sql`
/// while it works and its server is the primary, else on a session to the
/// primary of `source`.
pub(super) fn spawn(
    sql: Client,
    source: &ConnInfo,
    interval: Duration,
    statement: Option<String>,
    token: CancellationToken,
) -> JoinHandle<()> {
    let source = source.clone();
    tokio::spawn(async move {
        let statement = statement.unwrap_or_else(|| DEFAULT_STATEMENT.to_owned());
        let mut primary = PrimarySession::reuse(&source, sql).await;
        let mut failing = false;
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = token.cancelled() => return,
                _ = tick.tick() => {
                    let result = primary.execute(&statement).await;
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
