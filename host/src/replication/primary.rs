//! A session to the primary of the source URL's host list, for what must
//! run there whatever the URL asks of the replication connection: writes
//! (heartbeats) and requests a standby needs from its primary
//! (`pg_log_standby_snapshot()`, see [`super::standby`]).
//!
//! Invariant: a session is kept only while its statements work. Whatever
//! failed (a closed session, a server that no longer takes writes after a
//! failover, which PostgreSQL reports with several codes), the next
//! statement walks the host list again with `target_session_attrs=primary`,
//! so a promoted standby is found without a restart. One connection per
//! failed statement is cheap at the intervals these statements run at.

use tokio_postgres::Client;

use super::conninfo::{ConnInfo, SessionAttrs};
use super::setup::{connect_sql, sql_role};

/// See the module documentation.
#[derive(Debug)]
pub struct PrimarySession {
    primary: ConnInfo,
    client: Option<Client>,
}

impl PrimarySession {
    /// No session yet: the first statement opens one to the primary of
    /// `source`'s host list.
    pub fn new(source: &ConnInfo) -> Self {
        PrimarySession {
            primary: primary_of(source),
            client: None,
        }
    }

    /// Starts from `client`, a session already open on the source, when
    /// its server is a primary; otherwise (a standby) as [`Self::new`].
    pub async fn reuse(source: &ConnInfo, client: Client) -> Self {
        let mut session = Self::new(source);
        if matches!(sql_role(&client).await, Ok(role) if !role.in_recovery) {
            session.client = Some(client);
        }
        session
    }

    /// The hosts searched for the primary, for messages.
    pub fn targets(&self) -> String {
        self.primary.targets()
    }

    /// Runs `statement` on the primary; the error is one line naming what
    /// failed.
    pub async fn execute(&mut self, statement: &str) -> Result<(), String> {
        let client = match self.client.take().filter(|c| !c.is_closed()) {
            Some(client) => client,
            None => connect_sql(&self.primary)
                .await
                .map_err(|e| crate::causes::line(&e))?,
        };
        client
            .batch_execute(statement)
            .await
            .map_err(|e| crate::causes::line(&e))?;
        self.client = Some(client);
        Ok(())
    }
}

/// `source` with `target_session_attrs=primary`.
pub fn primary_of(source: &ConnInfo) -> ConnInfo {
    ConnInfo {
        session_attrs: SessionAttrs::Primary,
        ..source.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_primary_is_asked_for_over_the_whole_list() {
        let source =
            ConnInfo::parse("postgres://u@a:1,b:2/db?target_session_attrs=standby").unwrap();
        let primary = primary_of(&source);
        assert_eq!(primary.session_attrs, SessionAttrs::Primary);
        assert_eq!(primary.targets(), "a:1,b:2");
        assert_eq!(PrimarySession::new(&source).targets(), "a:1,b:2");
    }
}
