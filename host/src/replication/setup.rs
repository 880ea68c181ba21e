//! Pre-flight checks on an ordinary SQL connection (tokio-postgres), run
//! before streaming: is the server, the role, the publication and the slot
//! fit for logical replication with pgoutput?
//!
//! Every problem found is reported, not only the first, each naming the
//! object at fault and the command that fixes it. The checks only read,
//! except creating the publication when the caller asks for it (never on a
//! standby, which is read-only: there a missing publication is a problem
//! naming the command to run on the primary).

use std::fmt;

use tokio_postgres::{Client, NoTls};

use super::conninfo::{ConnInfo, Host, ServerRole, SessionAttrs, SslMode};
use super::slot::{SlotName, quote_ident, quote_literal};
use super::sql::{SqlError, reason};
use super::tls::{self, MakeRustlsConnect, TlsError};
use super::walk::{self, Session};
use crate::lsn::Lsn;

/// Why the setup checks could not run, or what they found.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Connecting (`cannot connect to PostgreSQL at …`) or a statement failed.
    #[error(transparent)]
    Sql(#[from] SqlError),
    #[error("PostgreSQL is not ready for logical replication:\n{}", bullets(.0))]
    Problems(Vec<SetupProblem>),
    /// Every host of the list was tried; none is what
    /// `target_session_attrs` asks for.
    #[error("no server at {targets} is what target_session_attrs={attrs} asks for ({found})")]
    NoMatchingHost {
        targets: String,
        attrs: SessionAttrs,
        found: String,
    },
}

impl SetupError {
    /// Whether retrying later may help (a network failure, a server
    /// starting or shutting down); problems found by the checks are not.
    pub fn is_transient(&self) -> bool {
        match self {
            SetupError::Sql(e) => e.is_transient(),
            SetupError::NoMatchingHost { .. } => true,
            SetupError::Tls(_) | SetupError::Problems(_) => false,
        }
    }
}

fn bullets(problems: &[SetupProblem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// One thing that stands in the way of replication, and its fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetupProblem {
    #[error(
        "wal_level is `{actual}`, but logical replication needs `logical`: run `ALTER SYSTEM SET wal_level = logical;` as a superuser, then restart PostgreSQL"
    )]
    WalLevel { actual: String },
    #[error(
        "role \"{role}\" may not start replication (it has neither REPLICATION nor SUPERUSER): run `ALTER ROLE {} WITH REPLICATION;` as a superuser", quote_ident(.role)
    )]
    NoReplicationPrivilege { role: String },
    #[error(
        "publication \"{publication}\" does not exist in database \"{database}\": create it with `{create}`, or let sluice create it"
    )]
    PublicationMissing {
        publication: String,
        database: String,
        create: String,
    },
    #[error(
        "publication \"{publication}\" does not exist in database \"{database}\" on this standby, where it cannot be created: create it on the primary with `{create}` and start again once the standby has replayed it"
    )]
    PublicationMissingOnStandby {
        publication: String,
        database: String,
        create: String,
    },
    #[error("cannot create publication \"{publication}\" with `{command}`: {reason}")]
    PublicationCreate {
        publication: String,
        command: String,
        reason: String,
    },
    #[error(
        "table {table} in publication \"{publication}\" has no primary key and REPLICA IDENTITY {identity}, so its updates and deletes carry no old key (PostgreSQL refuses them while the table is published): add a primary key, or run `ALTER TABLE {table} REPLICA IDENTITY FULL;`"
    )]
    NoReplicaIdentity {
        publication: String,
        /// Quoted, schema-qualified.
        table: String,
        /// `DEFAULT` or `NOTHING`.
        identity: String,
    },
    #[error(
        "replication slot \"{slot}\" does not exist: create it with `SELECT pg_create_logical_replication_slot({}, 'pgoutput');`, or let sluice create it", quote_literal(.slot)
    )]
    SlotMissing { slot: String },
    #[error(
        "replication slot \"{slot}\" is a physical slot, but sluice needs a logical slot with the pgoutput plugin: choose another slot name, or drop it with `SELECT pg_drop_replication_slot({});`", quote_literal(.slot)
    )]
    SlotPhysical { slot: String },
    #[error(
        "replication slot \"{slot}\" uses the output plugin \"{plugin}\", but sluice needs \"pgoutput\": choose another slot name, or drop it with `SELECT pg_drop_replication_slot({});`", quote_literal(.slot)
    )]
    SlotPlugin { slot: String, plugin: String },
    #[error(
        "replication slot \"{slot}\" belongs to database \"{slot_database}\", not \"{database}\": connect to \"{slot_database}\" or choose another slot name"
    )]
    SlotDatabase {
        slot: String,
        slot_database: String,
        database: String,
    },
    #[error(
        "replication slot \"{slot}\" is in use by process {pid}: stop the other consumer, or end it with `SELECT pg_terminate_backend({pid});`"
    )]
    SlotActive { slot: String, pid: i32 },
    #[error(
        "replication slot \"{slot}\" has been invalidated (wal_status = lost): the WAL it needed was removed (see max_slot_wal_keep_size); drop it with `SELECT pg_drop_replication_slot({});` and start again with a new snapshot", quote_literal(.slot)
    )]
    SlotLost { slot: String },
    #[error(
        "cannot create replication slot \"{slot}\": all {max} slots allowed by max_replication_slots are in use; drop an unused slot (see `SELECT slot_name, active FROM pg_replication_slots;`) or raise max_replication_slots and restart PostgreSQL"
    )]
    SlotsExhausted { slot: String, max: i32 },
    #[error(
        "all {max} WAL sender processes allowed by max_wal_senders are in use: stop an unused replication client or raise max_wal_senders and restart PostgreSQL"
    )]
    WalSendersExhausted { max: i32 },
    #[error(
        "source.url resolves to a standby running PostgreSQL {version}: logical decoding from a standby needs PostgreSQL 16 or later; point source.url at the primary (target_session_attrs=primary), or upgrade"
    )]
    StandbyTooOld { version: String },
    #[error(
        "source.origin = \"none\" needs PostgreSQL 16 or later (pgoutput's `origin` option), but the server is {version}: remove the setting, or upgrade"
    )]
    OriginUnsupported { version: String },
}

/// A table name, schema-qualified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableName {
    pub schema: String,
    pub name: String,
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{}",
            quote_ident(&self.schema),
            quote_ident(&self.name)
        )
    }
}

/// What a publication that sluice creates covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PublicationScope {
    AllTables,
    Tables(Vec<TableName>),
}

/// What the checks need to know.
#[derive(Clone, Debug)]
pub struct SetupSpec {
    pub publication: String,
    /// Create the publication when it is missing, covering this.
    pub create_publication: Option<PublicationScope>,
    pub slot: SlotName,
    /// The slot may be created (so its absence is no problem, but a full
    /// `max_replication_slots` is).
    pub create_slot: bool,
    /// How a publication sluice creates is set up, and the origin filter
    /// the server must support.
    pub changes: crate::config::ChangeOptions,
}

/// A slot found by the checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExistingSlot {
    pub confirmed_flush_lsn: Option<Lsn>,
    pub restart_lsn: Option<Lsn>,
}

/// What the checks found when they found no problem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetupReport {
    pub publication_created: bool,
    /// `None` when the slot does not exist yet (and may be created).
    pub slot: Option<ExistingSlot>,
}

/// Opens an ordinary SQL connection with the same settings (TLS included) as
/// the replication connection, to the first server of the host list that
/// `target_session_attrs` accepts (as [`ReplicationConnection::connect`]
/// chooses). The connection task runs on the runtime until the client is
/// dropped.
///
/// [`ReplicationConnection::connect`]: super::ReplicationConnection::connect
pub async fn connect_sql(info: &ConnInfo) -> Result<Client, SetupError> {
    walk::walk::<Client>(info).await
}

impl Session for Client {
    type Error = SetupError;

    async fn open(candidate: &ConnInfo) -> Result<Self, SetupError> {
        connect_sql_one(candidate).await
    }

    async fn server_role(&mut self) -> Result<ServerRole, SetupError> {
        sql_role(self).await
    }

    /// Dropping the client ends its connection task.
    async fn end(self) {}

    fn no_matching_host(targets: String, attrs: SessionAttrs, found: String) -> SetupError {
        SetupError::NoMatchingHost {
            targets,
            attrs,
            found,
        }
    }
}

/// What the server behind `client` is, for `target_session_attrs`.
pub async fn sql_role(client: &Client) -> Result<ServerRole, SetupError> {
    let row = client
        .query_one(
            "SELECT pg_is_in_recovery(), current_setting('default_transaction_read_only') = 'on'",
            &[],
        )
        .await
        .map_err(sql_err("asking the server whether it is a standby"))?;
    let in_recovery: bool = row.get(0);
    let read_only: bool = row.get(1);
    Ok(ServerRole {
        in_recovery,
        read_only: read_only || in_recovery,
    })
}

/// [`connect_sql`] to `info`'s first host only.
pub(crate) async fn connect_sql_one(info: &ConnInfo) -> Result<Client, SetupError> {
    let mut config = tokio_postgres::Config::new();
    config
        .user(&info.user)
        .dbname(&info.dbname)
        .port(info.port)
        .application_name(&info.application_name);
    match &info.host {
        Host::Tcp(name) => config.host(name),
        Host::Unix(dir) => config.host_path(dir),
    };
    if let Some(p) = &info.password {
        config.password(p.expose());
    }
    if let Some(t) = info.connect_timeout {
        config.connect_timeout(t);
    }
    config.ssl_mode(match info.ssl_mode {
        SslMode::Disable => tokio_postgres::config::SslMode::Disable,
        SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
        _ => tokio_postgres::config::SslMode::Require,
    });
    let connect_err = SqlError::during::<SetupError>(format!(
        "cannot connect to PostgreSQL at {}",
        info.target()
    ));
    let client = match tls::client_config(info)? {
        Some(tls) => {
            let (client, conn) = config
                .connect(MakeRustlsConnect::new(tls))
                .await
                .map_err(connect_err)?;
            tokio::spawn(run_connection(conn));
            client
        }
        None => {
            config.ssl_mode(tokio_postgres::config::SslMode::Disable);
            let (client, conn) = config.connect(NoTls).await.map_err(connect_err)?;
            tokio::spawn(run_connection(conn));
            client
        }
    };
    Ok(client)
}

async fn run_connection<F>(conn: F)
where
    F: std::future::Future<Output = Result<(), tokio_postgres::Error>>,
{
    if let Err(e) = conn.await {
        tracing::debug!(error = %reason(&e), "SQL connection ended");
    }
}

fn sql_err(during: &str) -> impl FnOnce(tokio_postgres::Error) -> SetupError {
    SqlError::during(during)
}

/// Connects with `info` and runs every check.
pub async fn check(info: &ConnInfo, spec: &SetupSpec) -> Result<SetupReport, SetupError> {
    let client = connect_sql(info).await?;
    check_with(&client, spec).await
}

/// Runs every check on an open SQL connection.
pub async fn check_with(client: &Client, spec: &SetupSpec) -> Result<SetupReport, SetupError> {
    let mut problems = Vec::new();

    let server = client
        .query_one(
            "SELECT current_setting('wal_level'),
                    current_setting('max_replication_slots')::int4,
                    current_setting('max_wal_senders')::int4,
                    r.rolname::text, r.rolsuper, r.rolreplication, current_database()::text,
                    (SELECT count(*)::int4 FROM pg_replication_slots),
                    (SELECT count(*)::int4 FROM pg_stat_activity WHERE backend_type = 'walsender'),
                    current_setting('server_version_num')::int4, current_setting('server_version'),
                    pg_is_in_recovery()
             FROM pg_roles r WHERE r.rolname = current_user",
            &[],
        )
        .await
        .map_err(sql_err("reading server settings"))?;
    let wal_level: String = server.get(0);
    let max_slots: i32 = server.get(1);
    let max_senders: i32 = server.get(2);
    let role: String = server.get(3);
    let (is_super, can_replicate): (bool, bool) = (server.get(4), server.get(5));
    let database: String = server.get(6);
    let used_slots: i32 = server.get(7);
    let used_senders: i32 = server.get(8);
    let version_num: i32 = server.get(9);
    let in_recovery: bool = server.get(11);

    if wal_level != "logical" {
        problems.push(SetupProblem::WalLevel { actual: wal_level });
    }
    if !is_super && !can_replicate {
        problems.push(SetupProblem::NoReplicationPrivilege { role });
    }
    if used_senders >= max_senders {
        problems.push(SetupProblem::WalSendersExhausted { max: max_senders });
    }

    if in_recovery && version_num < 160_000 {
        problems.push(SetupProblem::StandbyTooOld {
            version: server.get(10),
        });
    }
    if spec.changes.origin == crate::config::Origin::None && version_num < 160_000 {
        problems.push(SetupProblem::OriginUnsupported {
            version: server.get(10),
        });
    }
    let facts = ServerFacts {
        database,
        version_num,
        in_recovery,
    };
    let publication_created = check_publication(client, spec, &facts, &mut problems).await?;
    let database = facts.database;

    let slot = check_slot(client, spec, &database, &mut problems).await?;
    if slot.is_none() && spec.create_slot && used_slots >= max_slots {
        problems.push(SetupProblem::SlotsExhausted {
            slot: spec.slot.to_string(),
            max: max_slots,
        });
    }

    if problems.is_empty() {
        Ok(SetupReport {
            publication_created,
            slot,
        })
    } else {
        Err(SetupError::Problems(problems))
    }
}

/// What the publication check needs to know about the server.
struct ServerFacts {
    database: String,
    version_num: i32,
    /// A standby, where nothing can be created.
    in_recovery: bool,
}

/// Checks (or creates) the publication and its tables' replica identity.
/// Returns whether it created the publication.
async fn check_publication(
    client: &Client,
    spec: &SetupSpec,
    server: &ServerFacts,
    problems: &mut Vec<SetupProblem>,
) -> Result<bool, SetupError> {
    let (database, version_num) = (server.database.as_str(), server.version_num);
    let name = &spec.publication;
    let row = client
        .query_opt(
            "SELECT pubupdate OR pubdelete FROM pg_publication WHERE pubname = $1",
            &[name],
        )
        .await
        .map_err(sql_err("looking up the publication"))?;
    let mut created = false;
    let publishes_old_keys = match row {
        Some(row) => row.get::<_, bool>(0),
        None => {
            let command = create_publication_sql(
                name,
                spec.create_publication
                    .as_ref()
                    .unwrap_or(&PublicationScope::AllTables),
                &publication_with(&spec.changes, version_num),
            );
            if server.in_recovery {
                problems.push(SetupProblem::PublicationMissingOnStandby {
                    publication: name.clone(),
                    database: database.to_owned(),
                    create: command,
                });
                return Ok(false);
            }
            if spec.create_publication.is_none() {
                problems.push(SetupProblem::PublicationMissing {
                    publication: name.clone(),
                    database: database.to_owned(),
                    create: command,
                });
                return Ok(false);
            }
            if let Err(e) = client.batch_execute(&command).await {
                problems.push(SetupProblem::PublicationCreate {
                    publication: name.clone(),
                    command,
                    reason: reason(&e),
                });
                return Ok(false);
            }
            tracing::info!(publication = %name, "created publication");
            created = true;
            true
        }
    };
    if publishes_old_keys {
        let rows = client
            .query(
                "SELECT pt.schemaname::text, pt.tablename::text,
                        CASE c.relreplident WHEN 'n' THEN 'NOTHING' ELSE 'DEFAULT' END
                 FROM pg_publication_tables pt
                 JOIN pg_namespace n ON n.nspname = pt.schemaname
                 JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename
                 WHERE pt.pubname = $1
                   AND (c.relreplident = 'n'
                        OR (c.relreplident = 'd' AND NOT EXISTS (
                              SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)))
                 ORDER BY 1, 2",
                &[name],
            )
            .await
            .map_err(sql_err("checking the replica identity of published tables"))?;
        for row in rows {
            let table = TableName {
                schema: row.get(0),
                name: row.get(1),
            };
            problems.push(SetupProblem::NoReplicaIdentity {
                publication: name.clone(),
                table: table.to_string(),
                identity: row.get(2),
            });
        }
    }
    Ok(created)
}

/// The `WITH (…)` options of a publication sluice creates on a server of
/// `version_num`: `publish_via_partition_root` as configured (PostgreSQL
/// 13+, so every supported server), and `publish_generated_columns =
/// stored` on PostgreSQL 18+ when configured (older servers never publish
/// generated columns and do not know the option).
pub fn publication_with(changes: &crate::config::ChangeOptions, version_num: i32) -> Vec<String> {
    let mut with = vec![format!(
        "publish_via_partition_root = {}",
        changes.via_partition_root
    )];
    if changes.generated_columns && version_num >= 180_000 {
        with.push("publish_generated_columns = stored".to_owned());
    }
    with
}

/// `CREATE PUBLICATION` for `scope`, with the options `with` (as
/// [`publication_with`] writes them).
pub fn create_publication_sql(name: &str, scope: &PublicationScope, with: &[String]) -> String {
    let mut sql = match scope {
        PublicationScope::AllTables => {
            format!("CREATE PUBLICATION {} FOR ALL TABLES", quote_ident(name))
        }
        PublicationScope::Tables(tables) => format!(
            "CREATE PUBLICATION {} FOR TABLE {}",
            quote_ident(name),
            tables
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    if !with.is_empty() {
        sql.push_str(&format!(" WITH ({})", with.join(", ")));
    }
    sql
}

async fn check_slot(
    client: &Client,
    spec: &SetupSpec,
    database: &str,
    problems: &mut Vec<SetupProblem>,
) -> Result<Option<ExistingSlot>, SetupError> {
    let slot = spec.slot.to_string();
    let row = client
        .query_opt(
            "SELECT slot_type, plugin::text, database::text, active, active_pid,
                    confirmed_flush_lsn::text, restart_lsn::text, wal_status
             FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(sql_err("looking up the replication slot"))?;
    let Some(row) = row else {
        if !spec.create_slot {
            problems.push(SetupProblem::SlotMissing { slot });
        }
        return Ok(None);
    };
    let slot_type: String = row.get(0);
    let plugin: Option<String> = row.get(1);
    let slot_database: Option<String> = row.get(2);
    let active: bool = row.get(3);
    let active_pid: Option<i32> = row.get(4);
    let lsn = |i: usize| -> Option<Lsn> { row.get::<_, Option<String>>(i)?.parse().ok() };
    let wal_status: Option<String> = row.get(7);
    if slot_type != "logical" {
        problems.push(SetupProblem::SlotPhysical { slot });
        return Ok(None);
    }
    if let Some(plugin) = plugin.filter(|p| p != "pgoutput") {
        problems.push(SetupProblem::SlotPlugin {
            slot: slot.clone(),
            plugin,
        });
    }
    if let Some(slot_database) = slot_database.filter(|d| d != database) {
        problems.push(SetupProblem::SlotDatabase {
            slot: slot.clone(),
            slot_database,
            database: database.to_owned(),
        });
    }
    if active {
        problems.push(SetupProblem::SlotActive {
            slot: slot.clone(),
            pid: active_pid.unwrap_or_default(),
        });
    }
    if wal_status.as_deref() == Some("lost") {
        problems.push(SetupProblem::SlotLost { slot });
    }
    Ok(Some(ExistingSlot {
        confirmed_flush_lsn: lsn(5),
        restart_lsn: lsn(6),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publication_sql_quotes_names() {
        let tables = PublicationScope::Tables(vec![
            TableName {
                schema: "public".into(),
                name: "Orders".into(),
            },
            TableName {
                schema: "s\"x".into(),
                name: "t".into(),
            },
        ]);
        assert_eq!(
            create_publication_sql("p\"1", &tables, &[]),
            "CREATE PUBLICATION \"p\"\"1\" FOR TABLE \"public\".\"Orders\", \"s\"\"x\".\"t\""
        );
        assert_eq!(
            create_publication_sql("p", &PublicationScope::AllTables, &[]),
            "CREATE PUBLICATION \"p\" FOR ALL TABLES"
        );
    }

    #[test]
    fn publication_options_follow_the_manifest_and_the_server_version() {
        let defaults = crate::config::ChangeOptions::default();
        assert_eq!(
            create_publication_sql(
                "p",
                &PublicationScope::AllTables,
                &publication_with(&defaults, 170_004)
            ),
            "CREATE PUBLICATION \"p\" FOR ALL TABLES WITH (publish_via_partition_root = true)"
        );
        assert_eq!(
            publication_with(&defaults, 180_004),
            [
                "publish_via_partition_root = true",
                "publish_generated_columns = stored"
            ]
        );
        let leaves = crate::config::ChangeOptions {
            via_partition_root: false,
            generated_columns: false,
            ..defaults
        };
        assert_eq!(
            publication_with(&leaves, 180_004),
            ["publish_via_partition_root = false"]
        );
    }
}
