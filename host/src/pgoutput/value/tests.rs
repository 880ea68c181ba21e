use super::*;

fn ok(kind: ValueKind, text: &str) -> Value {
    decode_text(kind, text.as_bytes()).unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn err(kind: ValueKind, text: &str) -> String {
    match decode_text(kind, text.as_bytes()) {
        Ok(v) => panic!("{text} decoded to {v:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn booleans_and_integers() {
    assert_eq!(ok(ValueKind::Bool, "t"), Value::Boolean(true));
    assert_eq!(ok(ValueKind::Bool, "f"), Value::Boolean(false));
    assert_eq!(
        err(ValueKind::Bool, "true"),
        "the value (4 bytes) is not `t` or `f`"
    );
    assert_eq!(ok(ValueKind::Int, "-32768"), Value::Int(-32768));
    assert_eq!(
        ok(ValueKind::Int, "9223372036854775807"),
        Value::Int(i64::MAX)
    );
    assert_eq!(
        ok(ValueKind::Int, "-9223372036854775808"),
        Value::Int(i64::MIN)
    );
    assert_eq!(ok(ValueKind::Int, "4294967295"), Value::Int(4_294_967_295)); // oid
    assert_eq!(
        err(ValueKind::Int, "9223372036854775808"),
        "the value (19 bytes) is not an integer"
    );
    assert_eq!(
        err(ValueKind::Int, "1.0"),
        "the value (3 bytes) is not an integer"
    );
}

#[test]
fn floats_keep_every_special_value() {
    let f = |t: &str| match ok(ValueKind::Float, t) {
        Value::Float(f) => f,
        v => panic!("{v:?}"),
    };
    assert!(f("NaN").is_nan());
    assert_eq!(f("Infinity"), f64::INFINITY);
    assert_eq!(f("-Infinity"), f64::NEG_INFINITY);
    assert!(f("-0").is_sign_negative() && f("-0") == 0.0);
    assert_eq!(f("1e+308"), 1e308);
    assert_eq!(f("1.7976931348623157e+308"), f64::MAX);
    assert_eq!(f("5e-324"), 5e-324);
    assert_eq!(f("0.1"), 0.1);
    // float4 text, as printed by PostgreSQL 12+ (shortest exact form).
    assert_eq!(f("3.4028235e+38"), 3.4028235e38);
    assert_eq!(f("1.1754944e-38"), 1.1754944e-38);
    for bad in ["inf", "nan", "infinity", "1e309", "", "1,5", "0x10"] {
        assert!(
            err(ValueKind::Float, bad).contains("is not a float"),
            "{bad}"
        );
    }
}

#[test]
fn numerics_are_exact_text() {
    let big = format!("-{}.{}", "9".repeat(1000), "0".repeat(1000));
    for text in [
        "0",
        "-12.340",
        "0.000000000000000000001",
        "NaN",
        "Infinity",
        "-Infinity",
        &big,
    ] {
        assert_eq!(
            ok(ValueKind::Numeric, text),
            Value::Numeric(text.to_owned())
        );
    }
    for bad in ["", "-", "1.", ".5", "1e5", "+1", "1.2.3", "nan", " 1"] {
        assert!(
            err(ValueKind::Numeric, bad).contains("is not a decimal number"),
            "{bad}"
        );
    }
}

#[test]
fn text_types_and_json() {
    assert_eq!(
        ok(ValueKind::Text, "héllo wörld"),
        Value::Text("héllo wörld".into())
    );
    assert_eq!(ok(ValueKind::Text, ""), Value::Text(String::new()));
    assert_eq!(
        ok(ValueKind::Json, r#"{"a": [1, 2]}"#),
        Value::Json(r#"{"a": [1, 2]}"#.into())
    );
    assert_eq!(
        ok(ValueKind::Other, "{1,2,NULL}"),
        Value::Other("{1,2,NULL}".into())
    );
    assert_eq!(
        decode_text(ValueKind::Text, b"\xff\xfe").unwrap_err(),
        ValueError::InvalidUtf8
    );
}

#[test]
fn bytea_hex_and_escape() {
    assert_eq!(ok(ValueKind::Bytes, "\\x"), Value::Bytes(vec![]));
    assert_eq!(
        ok(ValueKind::Bytes, "\\x00ff10Ab"),
        Value::Bytes(vec![0, 255, 16, 0xab])
    );
    assert_eq!(
        ok(ValueKind::Bytes, "abc\\\\\\000\\377"),
        Value::Bytes(b"abc\\\x00\xff".to_vec())
    );
    assert_eq!(ok(ValueKind::Bytes, ""), Value::Bytes(vec![]));
    for bad in ["\\x0", "\\x0g", "\\4", "\\400", "a\\"] {
        assert!(err(ValueKind::Bytes, bad).contains("bytea output"), "{bad}");
    }
}

#[test]
fn uuids_are_canonical_lowercase() {
    let canonical = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11";
    assert_eq!(
        ok(ValueKind::Uuid, canonical),
        Value::Uuid(canonical.into())
    );
    assert_eq!(
        ok(ValueKind::Uuid, &canonical.to_uppercase()),
        Value::Uuid(canonical.into())
    );
    for bad in [
        "a0eebc999c0b4ef8bb6d6bb9bd380a11",
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1g",
        "",
    ] {
        assert!(err(ValueKind::Uuid, bad).contains("is not a UUID"), "{bad}");
    }
}

#[test]
fn dates_and_times_map_to_their_variants() {
    assert_eq!(ok(ValueKind::Date, "2024-02-29"), Value::Date(19_782));
    assert_eq!(ok(ValueKind::Date, "infinity"), Value::Date(i32::MAX));
    assert_eq!(ok(ValueKind::Time, "24:00:00"), Value::Time(86_400_000_000));
    assert_eq!(
        ok(ValueKind::Timestamp, "-infinity"),
        Value::Timestamp(i64::MIN)
    );
    assert_eq!(
        ok(ValueKind::Timestamptz, "1970-01-01 01:00:00+01"),
        Value::Timestamptz(0)
    );
    assert_eq!(
        ok(ValueKind::Interval, "1 mon 2 days 00:00:00.000003"),
        Value::Interval(Interval {
            months: 1,
            days: 2,
            microseconds: 3
        })
    );
    // Well-formed but beyond the model: kept verbatim.
    assert_eq!(
        ok(ValueKind::Timestamptz, "294276-12-31 23:59:59.999999+00"),
        Value::Other("294276-12-31 23:59:59.999999+00".into())
    );
    assert_eq!(
        ok(ValueKind::Interval, "infinity"),
        Value::Other("infinity".into())
    );
    // Another DateStyle is refused, not guessed at.
    assert_eq!(
        err(ValueKind::Date, "02/29/2024"),
        "the value (10 bytes) is not an ISO date such as `2024-02-29`, `0044-03-15 BC`, `infinity` or `-infinity`"
    );
}

#[test]
fn kinds_follow_type_oids_and_names() {
    assert_eq!(ValueKind::for_type(23, None), ValueKind::Int);
    assert_eq!(ValueKind::for_type(1184, None), ValueKind::Timestamptz);
    assert_eq!(ValueKind::for_type(1007, None), ValueKind::Other); // int4[]
    assert_eq!(ValueKind::for_type(16_500, Some("citext")), ValueKind::Text);
    assert_eq!(ValueKind::for_type(16_501, Some("mood")), ValueKind::Other);
}
