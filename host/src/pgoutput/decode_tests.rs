//! Tests of the message decoder: every message type against bytes built
//! from the protocol documentation, exact error texts for malformed input,
//! and a seeded fuzz loop over truncated, random and mutated messages.

use std::num::NonZeroUsize;

use crate::lsn::Lsn;
use crate::model::ReplicaIdentity;

use super::Batcher;
use super::message::*;
use super::test_encode::{Col, Msg, begin, commit, insert, pg_time, relation};
use super::value::{ValueKind, decode_text};

const T0: i64 = 1_700_000_000_000_000;

fn ok(bytes: &[u8]) -> PgOutputMessage<'_> {
    decode(bytes, false).unwrap_or_else(|e| panic!("{e}"))
}

fn err(bytes: &[u8]) -> String {
    match decode(bytes, false) {
        Ok(m) => panic!("decoded {m:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn transaction_messages() {
    assert_eq!(
        ok(&begin(0x16B3748, T0, 733)),
        PgOutputMessage::Begin(Begin {
            final_lsn: Lsn(0x16B3748),
            commit_time: T0,
            xid: 733
        })
    );
    assert_eq!(
        ok(&commit(0x16B3748, 0x16B3778, T0)),
        PgOutputMessage::Commit(Commit {
            flags: 0,
            commit_lsn: Lsn(0x16B3748),
            end_lsn: Lsn(0x16B3778),
            commit_time: T0
        })
    );
    let origin = Msg::new(b'O').u64(0x42).str("node_a").done();
    assert_eq!(
        ok(&origin),
        PgOutputMessage::Origin(Origin {
            commit_lsn: Lsn(0x42),
            name: "node_a"
        })
    );
}

#[test]
fn relation_and_type_messages() {
    let bytes = Msg::new(b'R')
        .u32(16_384)
        .str("")
        .str("pg_thing")
        .u8(b'f')
        .i16(2)
        .u8(1)
        .str("id")
        .u32(23)
        .i32(-1)
        .u8(0)
        .str("name")
        .u32(1043)
        .i32(68)
        .done();
    assert_eq!(
        ok(&bytes),
        PgOutputMessage::Relation(RelationBody {
            xid: None,
            oid: 16_384,
            namespace: "",
            name: "pg_thing",
            replica_identity: ReplicaIdentity::Full,
            columns: vec![
                RelationColumn {
                    flags: 1,
                    name: "id",
                    type_oid: 23,
                    type_modifier: -1
                },
                RelationColumn {
                    flags: 0,
                    name: "name",
                    type_oid: 1043,
                    type_modifier: 68
                },
            ],
        })
    );
    let ty = Msg::new(b'Y')
        .u32(16_500)
        .str("public")
        .str("citext")
        .done();
    assert_eq!(
        ok(&ty),
        PgOutputMessage::Type(TypeBody {
            xid: None,
            oid: 16_500,
            namespace: "public",
            name: "citext"
        })
    );
}

fn tuple_of(message: &PgOutputMessage<'_>) -> Vec<ColumnData<'static>> {
    let t = match message {
        PgOutputMessage::Insert(i) => i.new,
        PgOutputMessage::Update(u) => u.new,
        m => panic!("{m:?}"),
    };
    t.iter()
        .map(|c| match c {
            ColumnData::Text(b) => ColumnData::Text(b.to_vec().leak()),
            ColumnData::Binary(b) => ColumnData::Binary(b.to_vec().leak()),
            ColumnData::Null => ColumnData::Null,
            ColumnData::UnchangedToast => ColumnData::UnchangedToast,
        })
        .collect()
}

#[test]
fn row_messages() {
    let bytes = insert(
        7,
        &[
            Col::Text("1"),
            Col::Null,
            Col::Toast,
            Col::Binary(&[0, 1]),
            Col::Text(""),
        ],
    );
    let message = ok(&bytes);
    assert_eq!(
        tuple_of(&message),
        [
            ColumnData::Text(b"1"),
            ColumnData::Null,
            ColumnData::UnchangedToast,
            ColumnData::Binary(&[0, 1]),
            ColumnData::Text(b""),
        ]
    );

    let plain = Msg::new(b'U')
        .u32(7)
        .u8(b'N')
        .tuple(&[Col::Text("2")])
        .done();
    assert!(matches!(
        ok(&plain),
        PgOutputMessage::Update(Update {
            old: None,
            relation: 7,
            ..
        })
    ));
    let keyed = Msg::new(b'U')
        .u32(7)
        .u8(b'K')
        .tuple(&[Col::Text("1")])
        .u8(b'N')
        .tuple(&[Col::Text("2")])
        .done();
    match ok(&keyed) {
        PgOutputMessage::Update(Update {
            old: Some(OldTuple::Key(old)),
            new,
            ..
        }) => {
            assert_eq!(old.iter().collect::<Vec<_>>(), [ColumnData::Text(b"1")]);
            assert_eq!(new.iter().collect::<Vec<_>>(), [ColumnData::Text(b"2")]);
        }
        m => panic!("{m:?}"),
    }
    let full = Msg::new(b'U')
        .u32(7)
        .u8(b'O')
        .tuple(&[Col::Null])
        .u8(b'N')
        .tuple(&[Col::Null])
        .done();
    assert!(matches!(
        ok(&full),
        PgOutputMessage::Update(Update {
            old: Some(OldTuple::Full(_)),
            ..
        })
    ));

    let delete = Msg::new(b'D')
        .u32(7)
        .u8(b'K')
        .tuple(&[Col::Text("1")])
        .done();
    assert!(matches!(
        ok(&delete),
        PgOutputMessage::Delete(Delete {
            old: OldTuple::Key(_),
            ..
        })
    ));
    let delete = Msg::new(b'D').u32(7).u8(b'O').tuple(&[]).done();
    match ok(&delete) {
        PgOutputMessage::Delete(Delete {
            old: OldTuple::Full(t),
            ..
        }) => assert!(t.is_empty()),
        m => panic!("{m:?}"),
    }

    let truncate = Msg::new(b'T').i32(2).u8(1).u32(7).u32(8).done();
    assert_eq!(
        ok(&truncate),
        PgOutputMessage::Truncate(TruncateBody {
            xid: None,
            cascade: true,
            restart_identity: false,
            relations: vec![7, 8]
        })
    );
    let message = Msg::new(b'M')
        .u8(1)
        .u64(0x99)
        .str("p")
        .i32(3)
        .bytes(b"\0\xffa")
        .done();
    assert_eq!(
        ok(&message),
        PgOutputMessage::Message(LogicalMessageBody {
            xid: None,
            transactional: true,
            lsn: Lsn(0x99),
            prefix: "p",
            content: b"\0\xffa",
        })
    );
}

#[test]
fn streamed_transactions_carry_xids() {
    let mut d = Decoder::new();
    let start = Msg::new(b'S').u32(900).u8(1).done();
    assert_eq!(
        d.decode(&start).unwrap(),
        PgOutputMessage::StreamStart(StreamStart {
            xid: 900,
            first_segment: true
        })
    );
    assert!(d.in_stream());
    let rel = Msg::new(b'R')
        .u32(900)
        .u32(7)
        .str("public")
        .str("t")
        .u8(b'd')
        .i16(0)
        .done();
    assert!(matches!(
        d.decode(&rel).unwrap(),
        PgOutputMessage::Relation(RelationBody {
            xid: Some(900),
            oid: 7,
            ..
        })
    ));
    let ins = Msg::new(b'I').u32(900).u32(7).u8(b'N').tuple(&[]).done();
    assert!(matches!(
        d.decode(&ins).unwrap(),
        PgOutputMessage::Insert(Insert {
            xid: Some(900),
            relation: 7,
            ..
        })
    ));
    let ty = Msg::new(b'Y').u32(900).u32(16_500).str("s").str("t").done();
    assert!(matches!(
        d.decode(&ty).unwrap(),
        PgOutputMessage::Type(TypeBody { xid: Some(900), .. })
    ));
    let upd = Msg::new(b'U').u32(900).u32(7).u8(b'N').tuple(&[]).done();
    assert!(matches!(
        d.decode(&upd).unwrap(),
        PgOutputMessage::Update(Update { xid: Some(900), .. })
    ));
    let del = Msg::new(b'D').u32(900).u32(7).u8(b'K').tuple(&[]).done();
    assert!(matches!(
        d.decode(&del).unwrap(),
        PgOutputMessage::Delete(Delete { xid: Some(900), .. })
    ));
    let tr = Msg::new(b'T').u32(900).i32(1).u8(2).u32(7).done();
    assert!(matches!(
        d.decode(&tr).unwrap(),
        PgOutputMessage::Truncate(TruncateBody {
            xid: Some(900),
            restart_identity: true,
            cascade: false,
            ..
        })
    ));
    let msg = Msg::new(b'M').u32(900).u8(1).u64(5).str("p").i32(0).done();
    assert!(matches!(
        d.decode(&msg).unwrap(),
        PgOutputMessage::Message(LogicalMessageBody { xid: Some(900), .. })
    ));
    assert_eq!(d.decode(b"E").unwrap(), PgOutputMessage::StreamStop);
    assert!(!d.in_stream());
    // Outside the block the same Insert bytes are misread as relation 900
    // followed by garbage, which the decoder refuses.
    assert_eq!(
        d.decode(&ins).unwrap_err().to_string(),
        "malformed pgoutput message: unexpected new tuple marker '\\0' at byte 5, expected 'N'"
    );

    let sc = Msg::new(b'c')
        .u32(900)
        .u8(0)
        .u64(0x10)
        .u64(0x20)
        .i64(pg_time(T0))
        .done();
    assert_eq!(
        ok(&sc),
        PgOutputMessage::StreamCommit(StreamCommit {
            xid: 900,
            flags: 0,
            commit_lsn: Lsn(0x10),
            end_lsn: Lsn(0x20),
            commit_time: T0
        })
    );
    let abort = Msg::new(b'A').u32(900).u32(901).done();
    assert_eq!(
        ok(&abort),
        PgOutputMessage::StreamAbort(StreamAbort {
            xid: 900,
            subxid: 901,
            abort_lsn: None,
            abort_time: None
        })
    );
    let parallel = Msg::new(b'A')
        .u32(900)
        .u32(901)
        .u64(0x30)
        .i64(pg_time(T0))
        .done();
    assert_eq!(
        ok(&parallel),
        PgOutputMessage::StreamAbort(StreamAbort {
            xid: 900,
            subxid: 901,
            abort_lsn: Some(Lsn(0x30)),
            abort_time: Some(T0)
        })
    );
    assert_eq!(
        err(&Msg::new(b'A').u32(900).u32(901).u64(0x30).done()),
        "truncated pgoutput message: reading abort timestamp at byte 17 needed 8 bytes, 0 left"
    );
}

#[test]
fn two_phase_messages() {
    let body = |flags| PrepareBody {
        flags,
        lsn: Lsn(0x10),
        end_lsn: Lsn(0x20),
        time: T0,
        xid: 5,
        gid: "g1",
    };
    let bp = Msg::new(b'b')
        .u64(0x10)
        .u64(0x20)
        .i64(pg_time(T0))
        .u32(5)
        .str("g1")
        .done();
    assert_eq!(ok(&bp), PgOutputMessage::BeginPrepare(body(0)));
    let tail = |tag| {
        Msg::new(tag)
            .u8(0)
            .u64(0x10)
            .u64(0x20)
            .i64(pg_time(T0))
            .u32(5)
            .str("g1")
            .done()
    };
    assert_eq!(ok(&tail(b'P')), PgOutputMessage::Prepare(body(0)));
    assert_eq!(ok(&tail(b'K')), PgOutputMessage::CommitPrepared(body(0)));
    assert_eq!(ok(&tail(b'p')), PgOutputMessage::StreamPrepare(body(0)));
    let rb = Msg::new(b'r')
        .u8(0)
        .u64(0x20)
        .u64(0x30)
        .i64(pg_time(T0))
        .i64(pg_time(T0 + 1))
        .u32(5)
        .str("g1")
        .done();
    assert_eq!(
        ok(&rb),
        PgOutputMessage::RollbackPrepared(RollbackPrepared {
            flags: 0,
            prepare_end_lsn: Lsn(0x20),
            rollback_end_lsn: Lsn(0x30),
            prepare_time: T0,
            rollback_time: T0 + 1,
            xid: 5,
            gid: "g1",
        })
    );
}

#[test]
fn malformed_input_gets_exact_errors() {
    assert_eq!(err(b""), "empty pgoutput message");
    assert_eq!(err(b"Z"), "unknown pgoutput message type 'Z' (byte 0x5a)");
    assert_eq!(
        err(&begin(1, T0, 2)[..10]),
        "truncated pgoutput message: reading commit timestamp at byte 9 needed 8 bytes, 1 left"
    );
    let mut long = commit(1, 2, T0);
    long.push(0);
    assert_eq!(
        err(&long),
        "malformed pgoutput Commit message: 1 unexpected bytes after its last field at byte 26"
    );
    assert_eq!(
        err(&Msg::new(b'O').u64(1).bytes(b"abc").done()),
        "malformed pgoutput message: origin name at byte 9 has no terminating NUL byte"
    );
    assert_eq!(
        err(&Msg::new(b'O').u64(1).bytes(b"a\xffc\0").done()),
        "malformed pgoutput message: origin name at byte 9 is not valid UTF-8"
    );
    assert_eq!(
        err(&Msg::new(b'I').u32(7).u8(b'N').i16(1).u8(b'x').done()),
        "malformed pgoutput message: unexpected tuple column kind 'x' at byte 8, expected 'n', 'u', 't' or 'b'"
    );
    assert_eq!(
        err(&Msg::new(b'I').u32(7).u8(b'N').i16(-1).done()),
        "malformed pgoutput message: tuple column count at byte 6 is negative (-1)"
    );
    // A length that claims 2 GiB is refused by what is left, not allocated.
    assert_eq!(
        err(&Msg::new(b'I')
            .u32(7)
            .u8(b'N')
            .i16(1)
            .u8(b't')
            .i32(i32::MAX)
            .bytes(b"abc")
            .done()),
        "truncated pgoutput message: reading column value at byte 13 needed 2147483647 bytes, 3 left"
    );
    assert_eq!(
        err(&Msg::new(b'T').i32(i32::MAX).u8(0).u32(1).done()),
        "truncated pgoutput message: reading truncated relation OID at byte 10 needed 4 bytes, 0 left"
    );
    assert_eq!(
        err(&Msg::new(b'R')
            .u32(1)
            .str("s")
            .str("t")
            .u8(b'x')
            .i16(0)
            .done()),
        "malformed pgoutput message: unexpected replica identity 'x' at byte 9, expected 'd', 'n', 'f' or 'i'"
    );
    assert_eq!(
        err(&Msg::new(b'U').u32(7).u8(b'Q').done()),
        "malformed pgoutput message: unexpected tuple marker 'Q' at byte 5, expected 'K', 'O' or 'N'"
    );
    assert_eq!(
        err(&Msg::new(b'B').u64(1).i64(i64::MAX).u32(1).done()),
        "malformed pgoutput message: commit timestamp at byte 9 is out of range (9223372036854775807)"
    );
}

/// A small deterministic generator (xorshift64*), so that a failure
/// reproduces from the printed case number.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Valid messages of every type, the seeds for truncation and mutation.
fn corpus() -> Vec<Vec<u8>> {
    let stamp = pg_time(T0);
    vec![
        begin(0x500, T0, 9),
        commit(0x500, 0x528, T0),
        Msg::new(b'O').u64(1).str("origin").done(),
        relation(
            7,
            "public",
            "t",
            &[
                (true, "id", 23),
                (false, "at", 1184),
                (false, "n", 1700),
                (false, "b", 17),
            ],
        ),
        relation(
            8,
            "public",
            "u",
            &[
                (false, "d", 1082),
                (false, "i", 1186),
                (false, "u", 2950),
                (false, "f", 701),
            ],
        ),
        Msg::new(b'Y')
            .u32(16_500)
            .str("public")
            .str("citext")
            .done(),
        insert(
            7,
            &[
                Col::Text("1"),
                Col::Text("2024-02-29 12:00:00.5+05:30"),
                Col::Text("-1.5"),
                Col::Text("\\x00ff"),
            ],
        ),
        insert(
            8,
            &[
                Col::Text("0044-03-15 BC"),
                Col::Text("1 year -2 days +03:04:05.6"),
                Col::Text("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
                Col::Text("-Infinity"),
            ],
        ),
        insert(
            7,
            &[
                Col::Null,
                Col::Toast,
                Col::Binary(&[1, 2]),
                Col::Text("\\001abc"),
            ],
        ),
        Msg::new(b'U')
            .u32(7)
            .u8(b'K')
            .tuple(&[Col::Text("1"), Col::Null, Col::Null, Col::Null])
            .u8(b'N')
            .tuple(&[Col::Text("2"), Col::Toast, Col::Text("3"), Col::Null])
            .done(),
        Msg::new(b'U')
            .u32(7)
            .u8(b'O')
            .tuple(&[Col::Text("1"), Col::Null, Col::Null, Col::Null])
            .u8(b'N')
            .tuple(&[Col::Text("2"), Col::Null, Col::Null, Col::Null])
            .done(),
        Msg::new(b'D')
            .u32(8)
            .u8(b'K')
            .tuple(&[
                Col::Text("infinity"),
                Col::Text("00:00:00"),
                Col::Null,
                Col::Text("1e+308"),
            ])
            .done(),
        Msg::new(b'T').i32(2).u8(3).u32(7).u32(8).done(),
        Msg::new(b'M')
            .u8(1)
            .u64(0x99)
            .str("prefix")
            .i32(4)
            .bytes(b"data")
            .done(),
        Msg::new(b'M').u8(0).u64(0x99).str("prefix").i32(0).done(),
        Msg::new(b'S').u32(900).u8(1).done(),
        b"E".to_vec(),
        Msg::new(b'c')
            .u32(900)
            .u8(0)
            .u64(0x10)
            .u64(0x20)
            .i64(stamp)
            .done(),
        Msg::new(b'A').u32(900).u32(901).u64(0x30).i64(stamp).done(),
        Msg::new(b'b')
            .u64(0x10)
            .u64(0x20)
            .i64(stamp)
            .u32(5)
            .str("g1")
            .done(),
        Msg::new(b'P')
            .u8(0)
            .u64(0x10)
            .u64(0x20)
            .i64(stamp)
            .u32(5)
            .str("g1")
            .done(),
        Msg::new(b'r')
            .u8(0)
            .u64(0x20)
            .u64(0x30)
            .i64(stamp)
            .i64(stamp)
            .u32(5)
            .str("g1")
            .done(),
    ]
}

/// Decodes, and feeds what decodes into a batcher (which converts values),
/// so that a panic anywhere on the path fails the test. Only typed results
/// are possible; the outcome itself is not the point here.
fn exercise(batcher: &mut Batcher, bytes: &[u8], in_stream: bool, lsn: u64) -> bool {
    let Ok(message) = decode(bytes, in_stream) else {
        return false;
    };
    let _ = batcher.push(message, Lsn(lsn));
    if !batcher.in_transaction() {
        let _ = batcher.push_bytes(&begin(lsn + 1, T0, 1), Lsn(lsn));
    }
    true
}

#[test]
fn malformed_input_never_panics() {
    malformed_cases(0x5EED_CAFE_F00D_0001, 1_000_000);
}

/// The same loop from a fresh seed each run, printed so that a failure can
/// be replayed with `malformed_cases(seed, …)`.
#[test]
fn malformed_input_from_a_fresh_seed_never_panics() {
    use std::hash::{BuildHasher as _, Hasher as _};
    let seed = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    println!("malformed_input_from_a_fresh_seed_never_panics: seed {seed:#x}");
    malformed_cases(seed | 1, 200_000);
}

/// `cases` truncated, random and mutated messages drawn from `seed`.
fn malformed_cases(seed: u64, cases_wanted: usize) {
    let corpus = corpus();
    let mut batcher = Batcher::new(NonZeroUsize::new(4).unwrap());
    for seed in &corpus[..5] {
        let _ = batcher.push_bytes(seed, Lsn(0));
    }
    let mut rng = Rng(seed);
    let (mut cases, mut decoded) = (0usize, 0usize);
    // Every prefix of every valid message.
    for seed in &corpus {
        for len in 0..seed.len() {
            for in_stream in [false, true] {
                decoded += usize::from(exercise(
                    &mut batcher,
                    &seed[..len],
                    in_stream,
                    cases as u64,
                ));
                cases += 1;
            }
        }
    }
    let mut buf = Vec::with_capacity(256);
    while cases < cases_wanted {
        buf.clear();
        match cases % 4 {
            // Random bytes behind a valid tag.
            0 => {
                let tags = b"BCORYIUDTMSEcAbPKpr";
                buf.push(tags[rng.below(tags.len())]);
                let len = rng.below(48);
                buf.extend((0..len).map(|_| rng.next() as u8));
            }
            // A valid message with 1–4 bytes overwritten.
            1 | 2 => {
                buf.extend_from_slice(&corpus[rng.below(corpus.len())]);
                for _ in 0..=rng.below(4) {
                    let i = rng.below(buf.len());
                    buf[i] = match rng.below(4) {
                        0 => 0,
                        1 => 0xff,
                        2 => buf[i] ^ (1 << rng.below(8)),
                        _ => rng.next() as u8,
                    };
                }
            }
            // A valid message with bytes inserted or removed.
            _ => {
                buf.extend_from_slice(&corpus[rng.below(corpus.len())]);
                let i = rng.below(buf.len());
                if rng.below(2) == 0 {
                    buf.insert(i, rng.next() as u8);
                } else {
                    buf.remove(i);
                }
            }
        }
        decoded += usize::from(exercise(
            &mut batcher,
            &buf,
            rng.below(8) == 0,
            cases as u64,
        ));
        cases += 1;
    }
    // Some mutations must still decode, or the loop tested only the
    // first bytes of each message.
    assert!(
        decoded > cases_wanted / 20,
        "only {decoded} of {cases} cases decoded (seed {seed:#x})"
    );
}

#[test]
fn random_value_text_never_panics() {
    let kinds = [
        ValueKind::Bool,
        ValueKind::Int,
        ValueKind::Float,
        ValueKind::Numeric,
        ValueKind::Bytes,
        ValueKind::Uuid,
        ValueKind::Date,
        ValueKind::Time,
        ValueKind::Timestamp,
        ValueKind::Timestamptz,
        ValueKind::Interval,
    ];
    let alphabet = b"0123456789-+:. BCyearsmondayinfINtxabcdefNaE\\";
    let mut rng = Rng(42);
    let mut text = Vec::new();
    for _ in 0..200_000 {
        text.clear();
        let len = rng.below(40);
        text.extend((0..len).map(|_| alphabet[rng.below(alphabet.len())]));
        for kind in kinds {
            let _ = decode_text(kind, &text);
        }
    }
}
