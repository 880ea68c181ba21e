//! libpq's walk over a host list, for both kinds of session the host opens
//! (the walsender and ordinary SQL): the hosts are tried in order and the
//! first server whose role `target_session_attrs` accepts is kept; for
//! `prefer-standby`, the first server that answered is kept when no standby
//! did. Sessions the walk does not keep are closed.
//!
//! This module owns that order and the report of what each host turned out
//! to be, so that a walsender and a SQL session given the same URL pick the
//! same server and fail with the same account of the hosts.

use std::fmt;

use super::conninfo::{ConnInfo, ServerRole, SessionAttrs};

/// A connection the walk can open, ask and close.
pub(crate) trait Session: Sized {
    type Error: fmt::Display;

    /// Connects to `candidate`'s one host.
    async fn open(candidate: &ConnInfo) -> Result<Self, Self::Error>;

    /// Asks the server whether it is a standby and whether it takes writes.
    async fn server_role(&mut self) -> Result<ServerRole, Self::Error>;

    /// Ends a session the walk does not keep.
    async fn end(self);

    /// No host was what `target_session_attrs` asks for: `found` says what
    /// each one was, or why it could not be reached.
    fn no_matching_host(targets: String, attrs: SessionAttrs, found: String) -> Self::Error;
}

/// Opens a session to the server `info`'s host list and
/// `target_session_attrs` choose. With one host and `any`, that is simply
/// [`Session::open`].
pub(crate) async fn walk<S: Session>(info: &ConnInfo) -> Result<S, S::Error> {
    if !info.walks() {
        return S::open(info).await;
    }
    let mut found = Vec::new();
    let mut fallback = None;
    let mut last_error = None;
    for candidate in info.candidates() {
        let mut session = match S::open(&candidate).await {
            Ok(session) => session,
            Err(e) => {
                tracing::debug!(host = %candidate.target(), error = %e, "host not reachable");
                found.push(format!("{}: {e}", candidate.target()));
                last_error = Some(e);
                continue;
            }
        };
        let role = session.server_role().await?;
        if info.session_attrs.accepts(role) {
            if let Some(unused) = fallback {
                S::end(unused).await;
            }
            return Ok(session);
        }
        found.push(format!("{}: {role}", candidate.target()));
        if info.session_attrs == SessionAttrs::PreferStandby && fallback.is_none() {
            fallback = Some(session);
        } else {
            session.end().await;
        }
    }
    if let Some(session) = fallback {
        return Ok(session);
    }
    match last_error {
        // One host, unreachable: its own error says it best.
        Some(e) if found.len() == 1 => Err(e),
        _ => Err(S::no_matching_host(
            info.targets(),
            info.session_attrs,
            found.join("; "),
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    thread_local! {
        /// What the fake sessions did, in order: `open 2`, `end 3`.
        static LOG: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    }

    fn log(line: String) {
        LOG.with(|l| l.borrow_mut().push(line));
    }

    fn take_log() -> Vec<String> {
        LOG.with(|l| l.take())
    }

    /// A server chosen by port: 1 refuses the connection, 2 is a primary,
    /// 3 a standby, 4 a read-only primary.
    struct Fake(u16);

    impl Session for Fake {
        type Error = String;

        async fn open(candidate: &ConnInfo) -> Result<Self, String> {
            log(format!("open {}", candidate.port));
            match candidate.port {
                1 => Err("connection refused".into()),
                port => Ok(Fake(port)),
            }
        }

        async fn server_role(&mut self) -> Result<ServerRole, String> {
            Ok(ServerRole {
                in_recovery: self.0 == 3,
                read_only: self.0 != 2,
            })
        }

        async fn end(self) {
            log(format!("end {}", self.0));
        }

        fn no_matching_host(targets: String, attrs: SessionAttrs, found: String) -> String {
            format!("none of {targets} is {attrs}: {found}")
        }
    }

    async fn walk_ports(ports: &str, attrs: &str) -> Result<u16, String> {
        let url = format!(
            "postgres://u@127.0.0.1:{ports}/db?target_session_attrs={attrs}",
            ports = ports.replace(',', ",127.0.0.1:")
        );
        let info = ConnInfo::parse(&url).unwrap();
        walk::<Fake>(&info).await.map(|f| f.0)
    }

    #[tokio::test]
    async fn the_first_host_of_the_wanted_role_is_kept_and_the_others_closed() {
        take_log();
        assert_eq!(walk_ports("1,3,2,4", "primary").await, Ok(2));
        assert_eq!(take_log(), ["open 1", "open 3", "end 3", "open 2"]);
        assert_eq!(walk_ports("2,4,3", "read-only").await, Ok(4));
        assert_eq!(take_log(), ["open 2", "end 2", "open 4"]);
    }

    #[tokio::test]
    async fn prefer_standby_falls_back_to_the_first_server_that_answered() {
        take_log();
        assert_eq!(walk_ports("1,2,4", "prefer-standby").await, Ok(2));
        assert_eq!(take_log(), ["open 1", "open 2", "open 4", "end 4"]);
        // A standby further down the list wins, and the fallback is closed.
        assert_eq!(walk_ports("2,3", "prefer-standby").await, Ok(3));
        assert_eq!(take_log(), ["open 2", "open 3", "end 2"]);
    }

    #[tokio::test]
    async fn no_match_says_what_each_host_was() {
        assert_eq!(
            walk_ports("1,2,4", "standby").await,
            Err("none of 127.0.0.1:1,127.0.0.1:2,127.0.0.1:4 is standby: \
                 127.0.0.1:1: connection refused; 127.0.0.1:2: a primary; \
                 127.0.0.1:4: a read-only primary"
                .into())
        );
        // One host, unreachable: its own error, not the summary.
        assert_eq!(
            walk_ports("1", "primary").await,
            Err("connection refused".into())
        );
    }

    #[tokio::test]
    async fn one_host_and_any_is_opened_without_asking_its_role() {
        take_log();
        assert_eq!(walk_ports("3", "any").await, Ok(3));
        assert_eq!(take_log(), ["open 3"]);
    }
}
