use super::*;
use crate::model::ReplicaIdentity;
use crate::pgoutput::message::{PgOutputMessage, RelationColumn, decode};

fn column(name: &str, type_oid: u32, flags: u8) -> RelationColumn<'_> {
    RelationColumn {
        flags,
        name,
        type_oid,
        type_modifier: -1,
    }
}

fn relation<'a>(columns: Vec<RelationColumn<'a>>) -> RelationBody<'a> {
    RelationBody {
        xid: None,
        oid: 16_384,
        namespace: "public",
        name: "orders",
        replica_identity: ReplicaIdentity::Default,
        columns,
    }
}

/// An Insert message with text columns (`None` is null).
fn insert_bytes(relation: u32, values: &[Option<&str>]) -> Vec<u8> {
    let mut b = vec![b'I'];
    b.extend_from_slice(&relation.to_be_bytes());
    b.push(b'N');
    b.extend_from_slice(&(values.len() as i16).to_be_bytes());
    for v in values {
        match v {
            None => b.push(b'n'),
            Some(t) => {
                b.push(b't');
                b.extend_from_slice(&(t.len() as i32).to_be_bytes());
                b.extend_from_slice(t.as_bytes());
            }
        }
    }
    b
}

fn new_tuple(bytes: &[u8]) -> TupleData<'_> {
    match decode(bytes, false).unwrap() {
        PgOutputMessage::Insert(i) => i.new,
        m => panic!("{m:?}"),
    }
}

#[test]
fn builtin_type_table_is_sorted() {
    assert!(BUILTIN_TYPES.windows(2).all(|w| w[0].0 < w[1].0));
    assert_eq!(type_name(1184, None), "timestamptz");
    assert_eq!(type_name(1007, None), "_int4");
    assert_eq!(type_name(99_999, None), "oid:99999");
}

#[test]
fn rows_follow_schema_changes() {
    let mut cache = RelationCache::new();
    assert!(cache.apply_relation(&relation(vec![column("id", 23, 1), column("note", 25, 0)])));
    // The same shape again is not a change.
    assert!(!cache.apply_relation(&relation(vec![column("id", 23, 1), column("note", 25, 0)])));
    let bytes = insert_bytes(16_384, &[Some("7"), None]);
    let values = cache
        .get(16_384)
        .unwrap()
        .decode_tuple(&new_tuple(&bytes))
        .unwrap();
    assert_eq!(values, vec![Value::Int(7), Value::Null]);

    // ALTER TABLE … ADD COLUMN total numeric, ALTER COLUMN note TYPE int8.
    assert!(cache.apply_relation(&relation(vec![
        column("id", 23, 1),
        column("note", 20, 0),
        column("total", 1700, 0),
    ])));
    let old_shape = cache
        .get(16_384)
        .unwrap()
        .decode_tuple(&new_tuple(&bytes))
        .unwrap_err();
    assert_eq!(
        old_shape.to_string(),
        "row for public.orders has 2 columns, but its Relation message announced 3"
    );
    let bytes = insert_bytes(16_384, &[Some("7"), Some("12"), Some("1.50")]);
    let cached = cache.get(16_384).unwrap();
    assert_eq!(
        cached.decode_tuple(&new_tuple(&bytes)).unwrap(),
        vec![Value::Int(7), Value::Int(12), Value::Numeric("1.50".into())]
    );
    let columns = &cached.relation().columns;
    assert_eq!(columns[2].type_name, "numeric");
    assert!(columns[0].is_key && !columns[1].is_key);
}

#[test]
fn unknown_relations_and_bad_values_are_named() {
    let mut cache = RelationCache::new();
    let err = cache.get(42).unwrap_err();
    assert_eq!(
        err.to_string(),
        "row for relation OID 42, which no Relation message announced (the stream must be read from the start of a session)"
    );
    cache.apply_relation(&relation(vec![column("at", 1184, 0)]));
    let bytes = insert_bytes(16_384, &[Some("yesterday")]);
    let err = cache
        .get(16_384)
        .unwrap()
        .decode_tuple(&new_tuple(&bytes))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "column at (timestamptz) of public.orders: the value (9 bytes) is not an ISO timestamp with offset such as `2024-02-29 13:45:00.5+00`, `…+05:30` or `infinity`"
    );
}

#[test]
fn user_types_are_named_by_type_messages() {
    let mut cache = RelationCache::new();
    cache.apply_type(&TypeBody {
        xid: None,
        oid: 16_500,
        namespace: "public",
        name: "citext",
    });
    cache.apply_type(&TypeBody {
        xid: None,
        oid: 16_501,
        namespace: "shop",
        name: "mood",
    });
    cache.apply_relation(&relation(vec![
        column("email", 16_500, 0),
        column("m", 16_501, 0),
    ]));
    let cached = cache.get(16_384).unwrap();
    assert_eq!(cached.relation().columns[0].type_name, "citext");
    assert_eq!(cached.relation().columns[1].type_name, "shop.mood");
    let bytes = insert_bytes(16_384, &[Some("A@b.c"), Some("happy")]);
    assert_eq!(
        cached.decode_tuple(&new_tuple(&bytes)).unwrap(),
        vec![Value::Text("A@b.c".into()), Value::Other("happy".into())]
    );
}
