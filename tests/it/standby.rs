//! Logical decoding from a hot standby (issue 15, point 5): a PostgreSQL
//! 17 primary and a streaming standby (`hot_standby_feedback = on`,
//! physical slot `standby1`, from `support/ha.rs`), with `source.url`
//! resolving to the standby. Skips, saying why, when PostgreSQL 17 and 18
//! are not installed under /opt/sluice-pg, as the failover tests do.
//!
//! Asserted is what a user sees: what `sluice check` says, where the slot
//! is, where heartbeats land, and the rows in the JetStream stream against
//! the rows on the server, each exactly once, across the standby's
//! promotion and a restart after it.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::failover::{
    Writer, ha_manifest, ha_or_skip, json, max_stream_id, sluice_log, start_sluice, stream_ids,
};
use crate::support::ha::{HaOptions, HaPair, Node, STANDBY_SLOT};
use crate::support::nats::{NatsServer, read_stream};
use crate::support::pipeline::{signal, sluice_binary, wait_exit};
use crate::support::wait_until;

/// `sluice check`'s standard output.
fn check(manifest: &Path, dir: &Path) -> String {
    let out = Command::new(sluice_binary())
        .args(["check", manifest.to_str().unwrap()])
        .env("XDG_CACHE_HOME", dir.join("cache"))
        .output()
        .unwrap();
    crate::support::keep_log("standby", &out.stderr);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "sluice check failed: {said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    said
}

fn count(node: &Node, sql: &str) -> u64 {
    node.psql("app", sql).parse().unwrap()
}

/// Waits until three more heartbeats than now are written on `node`.
async fn heartbeats_reach(node: &Node, what: &str) {
    let beats = count(node, "SELECT count(*) FROM beats");
    wait_until(what, Duration::from_secs(60), || async {
        count(node, "SELECT count(*) FROM beats") >= beats + 3
    })
    .await;
}

/// Sets `hot_standby_feedback` on the standby and waits until it applies.
fn hot_standby_feedback(standby: &Node, value: &str) {
    standby.psql(
        "app",
        &format!("ALTER SYSTEM SET hot_standby_feedback = {value}"),
    );
    standby.psql("app", "SELECT pg_reload_conf()");
    standby.wait_for(
        "app",
        "SHOW hot_standby_feedback",
        value,
        Duration::from_secs(30),
    );
}

/// The acceptance test: rows written on the primary arrive exactly once
/// from the standby (the table's earlier rows as the initial snapshot, read
/// on the standby under the slot's exported snapshot); the primary dies,
/// the standby is promoted, and streaming continues from the same slot;
/// a restart after the promotion continues from the stored offset.
#[tokio::test(flavor = "multi_thread")]
async fn decoding_from_a_standby_continues_across_its_promotion() {
    if !ha_or_skip("decoding_from_a_standby_continues_across_its_promotion") {
        return;
    }
    // A plain standby: no slot synchronisation, which decoding there does
    // not need.
    let mut pair = HaPair::start(
        "app",
        HaOptions {
            synchronized_standby_slots: false,
            sync_replication_slots: false,
        },
    );
    let (primary, standby) = (&pair.primary, &pair.standby);
    primary.psql(
        "app",
        "CREATE TABLE items (id bigint PRIMARY KEY, email text);
         CREATE TABLE beats (id bigserial PRIMARY KEY);
         INSERT INTO items SELECT g, 'before' FROM generate_series(-100, -1) g;
         CREATE PUBLICATION pub_fo FOR TABLE items;",
    );
    standby.wait_for(
        "app",
        "SELECT count(*) FROM pg_publication WHERE pubname = 'pub_fo'",
        "1",
        Duration::from_secs(60),
    );
    let nats = NatsServer::launch();
    let js = nats.jetstream().await;
    let dir = tempfile::tempdir().unwrap();
    // prefer-standby: the standby while there is one, else (after the
    // failover) the server that answers.
    let manifest = ha_manifest(
        dir.path(),
        &pair.url("app", "prefer-standby"),
        &nats,
        "file",
    );
    let text = std::fs::read_to_string(&manifest)
        .unwrap()
        .replace(
            "slot = \"slot_fo\"\n",
            "slot = \"slot_fo\"\nsnapshot = \"initial\"\n",
        )
        // With ghost marking on, message ids name the timeline that wrote the
        // change once it is above 1: the promoted standby's history must reach
        // them while the session streams on, not only after a restart (a
        // replay would otherwise publish the same changes under other ids).
        .replace(
            "create-publication",
            "on-ghost-changes = \"mark\"\nghost-subject = \"cdc.ghosts\"\ncreate-publication",
        )
        + "\n[position.heartbeat]\ninterval = \"300ms\"\nsql = \"INSERT INTO beats DEFAULT VALUES\"\n";
    std::fs::write(&manifest, text).unwrap();

    // `sluice check` names a missing hot_standby_feedback, and is content
    // once it is on.
    hot_standby_feedback(standby, "off");
    let said = check(&manifest, dir.path());
    let standby_host = standby.hostport();
    assert!(
        said.contains(&format!(
            "ha warning ({standby_host}): hot_standby_feedback is `off`: decoding from a standby needs `on`"
        )),
        "{said}"
    );
    hot_standby_feedback(standby, "on");
    let said = check(&manifest, dir.path());
    assert!(
        said.contains(&format!(
            "ha ok ({standby_host}): the standby streams through physical replication slot \"{STANDBY_SLOT}\" on the primary"
        )),
        "{said}"
    );
    assert!(!said.contains("ha warning"), "{said}");

    let mut host = start_sluice(&manifest, dir.path());
    standby.wait_for(
        "app",
        "SELECT count(*) FROM pg_replication_slots
          WHERE slot_name = 'slot_fo' AND active AND confirmed_flush_lsn IS NOT NULL",
        "1",
        Duration::from_secs(120),
    );
    assert_eq!(
        count(
            primary,
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'slot_fo'"
        ),
        0,
        "the slot is on the standby only"
    );
    let log = sluice_log(dir.path());
    assert!(
        log.contains("asked the primary of") && log.contains("pg_log_standby_snapshot()"),
        "{log}"
    );

    // A backfill is refused while the source is a standby, with the reason.
    let out = Command::new(sluice_binary())
        .args(["backfill", manifest.to_str().unwrap(), "public.items"])
        .output()
        .unwrap();
    crate::support::keep_log("standby", &out.stderr);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        said.contains(&format!(
            "cannot request a backfill of public.items: source.url ({},{}) resolves to a standby, and backfills are not supported when decoding from a standby",
            primary.hostport(),
            standby.hostport()
        )),
        "{said}"
    );

    let writer = Writer::start(primary.port);
    wait_until(
        "2000 rows in the stream",
        Duration::from_secs(120),
        || async { max_stream_id(&js).await >= 2000 },
    )
    .await;
    // Heartbeats are written on the primary (the standby takes no writes).
    heartbeats_reach(primary, "heartbeats on the primary").await;
    let log = sluice_log(dir.path());
    assert!(!log.contains("heartbeat failed"), "{log}");

    // A failover: the primary is gone, the standby promoted.
    pair.primary.kill();
    pair.standby.promote();
    let standby = &pair.standby;
    let first_new = writer.transactions();
    writer.primary.store(standby.port, Ordering::Relaxed);
    wait_until(
        "a row written on the promoted standby in the stream",
        Duration::from_secs(120),
        || async { max_stream_id(&js).await >= i64::try_from(first_new * 100).unwrap() + 100 },
    )
    .await;
    heartbeats_reach(standby, "heartbeats on the promoted standby").await;
    let after = writer.transactions();
    wait_until("20 more transactions", Duration::from_secs(60), || async {
        writer.transactions() >= after + 20
    })
    .await;
    writer.finish();
    let last: i64 = standby
        .psql("app", "SELECT max(id) FROM items")
        .parse()
        .unwrap();
    wait_until(
        "the last row in the stream",
        Duration::from_secs(120),
        || async { max_stream_id(&js).await >= last },
    )
    .await;
    signal(&host, "-TERM");
    let status = wait_exit(&mut host, Duration::from_secs(30));
    let log = sluice_log(dir.path());
    assert!(status.success(), "sluice failed: {status}\n{log}");
    assert!(
        log.contains("the standby sluice decodes from was promoted"),
        "{log}"
    );
    // Rows from before the promotion keep their ids; the last row, written
    // on the promoted server long after sluice saw the promotion, names
    // timeline 2. A standby's own promotion leaves no ghosts to mark.
    let messages = read_stream(&js, "FO").await;
    let id_of_row = |row: i64| {
        messages
            .iter()
            .find(|m| m.subject == "cdc.public.items" && json(&m.payload)["after"]["id"] == row)
            .and_then(|m| m.msg_id())
            .unwrap_or_else(|| panic!("row {row} is not in the stream"))
            .to_owned()
    };
    let before = id_of_row(1);
    assert!(!before.contains('@'), "{before}");
    let after = id_of_row(last);
    assert!(after.contains("@2:"), "{after}");
    assert!(messages.iter().all(|m| m.subject != "cdc.ghosts"));

    // A restart on the promoted server continues from the stored offset.
    standby.psql(
        "app",
        "INSERT INTO items SELECT g, 'later' FROM generate_series(1000000, 1000099) g",
    );
    let mut host = start_sluice(&manifest, dir.path());
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while max_stream_id(&js).await < 1_000_099 {
        assert!(
            std::time::Instant::now() < deadline,
            "the rows written after the restart never arrived; sluice's log:\n{}",
            sluice_log(dir.path())
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    signal(&host, "-TERM");
    let status = wait_exit(&mut host, Duration::from_secs(30));
    let log = sluice_log(dir.path());
    assert!(
        status.success(),
        "sluice failed after the restart: {status}\n{log}"
    );

    let truth: Vec<i64> = standby
        .psql("app", "SELECT id FROM items ORDER BY id")
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    let ids = stream_ids(&js).await;
    let twice: Vec<_> = ids.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "rows in the stream more than once: {twice:?}"
    );
    let streamed: Vec<i64> = ids.keys().copied().collect();
    assert_eq!(
        streamed, truth,
        "the stream holds exactly the server's rows"
    );
    eprintln!(
        "standby: {} rows, {} written before the promotion, all exactly once",
        truth.len(),
        first_new * 100
    );
}

/// A source URL naming only the standby: no primary can be asked for a
/// running-transactions record, so the slot creation says once what it
/// waits for and how to end the wait; running what it says on the primary
/// ends it.
#[tokio::test(flavor = "multi_thread")]
async fn a_slot_creation_without_a_primary_to_ask_says_what_it_waits_for() {
    if !ha_or_skip("a_slot_creation_without_a_primary_to_ask_says_what_it_waits_for") {
        return;
    }
    let pair = HaPair::start(
        "app",
        HaOptions {
            synchronized_standby_slots: false,
            sync_replication_slots: false,
        },
    );
    pair.primary.psql(
        "app",
        "CREATE TABLE items (id bigint PRIMARY KEY, email text);
         CREATE PUBLICATION pub_fo FOR TABLE items;",
    );
    let standby = &pair.standby;
    standby.wait_for(
        "app",
        "SELECT count(*) FROM pg_publication WHERE pubname = 'pub_fo'",
        "1",
        Duration::from_secs(60),
    );
    let nats = NatsServer::launch();
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "postgres://postgres@{}/app?sslmode=disable",
        standby.hostport()
    );
    let manifest = ha_manifest(dir.path(), &url, &nats, "memory");
    let mut host = start_sluice(&manifest, dir.path());
    let waiting = format!(
        "creating replication slot \"slot_fo\" on the standby {0} waits until the primary logs a running-transactions record, which an idle primary may not do until its next checkpoint; sluice could not ask a primary among source.url's hosts ({0}) to log one: run `SELECT pg_log_standby_snapshot();` on the primary",
        standby.hostport()
    );
    wait_until("the warning", Duration::from_secs(60), || async {
        sluice_log(dir.path()).contains(&waiting)
    })
    .await;
    wait_until(
        "the slot on the standby",
        Duration::from_secs(60),
        || async {
            pair.primary.psql("app", "SELECT pg_log_standby_snapshot()");
            count(
                standby,
                "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'slot_fo' AND active",
            ) == 1
        },
    )
    .await;
    signal(&host, "-TERM");
    let status = wait_exit(&mut host, Duration::from_secs(30));
    let log = sluice_log(dir.path());
    assert!(status.success(), "{log}");
    assert_eq!(log.matches(&waiting).count(), 1, "warned once: {log}");
}
