//! Heartbeats: periodic writes to the source so that a quiet slot still
//! moves (`[position.heartbeat]`). PostgreSQL 15 and later send nothing for
//! transactions that touch no published table, so without a write of its
//! own a pipeline on a quiet publication never confirms anything, and the
//! slot holds WAL back. A failed heartbeat is logged, never fatal: it only
//! delays confirmation.

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The statement run when the manifest gives none: a non-transactional
/// logical message, which every publication sees.
const DEFAULT_STATEMENT: &str = "SELECT pg_logical_emit_message(false, 'sluice.heartbeat', '')";

/// Runs `statement` on `sql` every `interval` until `token` is cancelled.
pub(super) fn spawn(
    sql: tokio_postgres::Client,
    interval: Duration,
    statement: Option<String>,
    token: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let statement = statement.unwrap_or_else(|| DEFAULT_STATEMENT.to_owned());
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = token.cancelled() => return,
                _ = tick.tick() => {
                    if let Err(e) = sql.batch_execute(&statement).await {
                        tracing::warn!(error = %e, "heartbeat failed");
                    }
                }
            }
        }
    })
}
