use super::*;

fn outgoing(headers: Vec<(&str, &str)>) -> Outgoing {
    Outgoing {
        message: Message {
            subject: "cdc.public.t".into(),
            headers: headers
                .into_iter()
                .map(|(n, v)| (n.into(), v.into()))
                .collect(),
            payload: b"{}".to_vec(),
            event: Some(0),
        },
        meta: HostMeta {
            msg_id: "p:0000000000000010:0:0".into(),
            commit_lsn: Lsn(0x10),
            lsn: Some(Lsn(0x8)),
            table: Some("public.t".into()),
            op: Some("insert"),
            error: None,
            metadata: true,
        },
    }
}

fn filter() -> SubjectFilter {
    SubjectFilter::parse(["cdc.>"]).unwrap()
}

#[test]
fn adds_host_headers() {
    let p = outgoing(vec![("Content-Type", "application/json")])
        .prepare(&filter(), Some(&"CDC".into()))
        .unwrap();
    let get = |n: &str| p.header(n);
    assert_eq!(get(MSG_ID).as_deref(), Some("p:0000000000000010:0:0"));
    assert_eq!(get(COMMIT_LSN).as_deref(), Some("0/10"));
    assert_eq!(get(LSN).as_deref(), Some("0/8"));
    assert_eq!(get(TABLE).as_deref(), Some("public.t"));
    assert_eq!(get(OP).as_deref(), Some("insert"));
    assert_eq!(get(EXPECTED_STREAM).as_deref(), Some("CDC"));
    assert_eq!(get("Content-Type").as_deref(), Some("application/json"));
    assert!(p.size > 2);
    assert_eq!(get(ERROR), None);
}

#[test]
fn without_metadata_only_the_id_and_the_stream_are_added() {
    let mut o = outgoing(vec![("Content-Type", "application/json")]);
    let with = o.clone().prepare(&filter(), Some(&"CDC".into())).unwrap();
    o.meta.metadata = false;
    let p = o.prepare(&filter(), Some(&"CDC".into())).unwrap();
    for name in [TABLE, OP, COMMIT_LSN, LSN] {
        assert_eq!(p.header(name), None, "{name}");
    }
    assert_eq!(p.header(MSG_ID).as_deref(), Some("p:0000000000000010:0:0"));
    assert_eq!(p.header(EXPECTED_STREAM).as_deref(), Some("CDC"));
    assert_eq!(
        p.header("Content-Type").as_deref(),
        Some("application/json")
    );
    // The byte window counts what is sent.
    let dropped = [
        (TABLE, "public.t"),
        (OP, "insert"),
        (COMMIT_LSN, "0/10"),
        (LSN, "0/8"),
    ];
    let dropped: usize = dropped.iter().map(|(n, v)| n.len() + v.len() + 4).sum();
    assert_eq!(with.size - p.size, dropped);
}

#[test]
fn a_dead_letter_error_is_one_bounded_line() {
    let mut o = outgoing(vec![]);
    o.meta.error = Some(format!("first\r\nsecond {}", "x".repeat(5000)));
    let p = o.prepare(&filter(), None).unwrap();
    let error = p.header(ERROR).unwrap();
    assert!(error.starts_with("first  second x"), "{error}");
    assert_eq!(error.chars().count(), MAX_ERROR_HEADER);
}

#[test]
fn sink_cannot_set_reserved_headers() {
    for name in ["Nats-Msg-Id", "nats-rollup", "SLUICE-LSN"] {
        let err = outgoing(vec![(name, "x")])
            .prepare(&filter(), None)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "header `{name}` on a message to `cdc.public.t` is reserved: a sink may not set headers starting with `Nats-` or `Sluice-` (the host sets them)"
            )
        );
    }
}

#[test]
fn malformed_headers_are_errors_not_panics() {
    for (name, value, reason) in [
        ("a:b", "x", "printable ASCII"),
        ("a b", "x", "printable ASCII"),
        ("", "x", "empty"),
        ("ok", "line\r\nbreak", "line break"),
    ] {
        let err = outgoing(vec![(name, value)])
            .prepare(&filter(), None)
            .unwrap_err();
        assert!(matches!(err, MessageError::MalformedHeader { .. }), "{err}");
        assert!(err.to_string().contains(reason), "{err}");
    }
}

#[test]
fn forbidden_subject_is_an_error() {
    let mut o = outgoing(vec![]);
    o.message.subject = "elsewhere.x".into();
    assert_eq!(
        o.prepare(&filter(), None).unwrap_err().to_string(),
        "subject `elsewhere.x` is not allowed: this pipeline may publish only to `cdc.>`"
    );
}

#[test]
fn a_retry_sends_the_same_headers_as_the_first_send() {
    let mut o = outgoing(vec![("Content-Type", "application/json"), ("X-Tag", "a")]);
    o.message.headers.push(("X-Tag".into(), "b".into()));
    o.meta.error = Some("bad value".into());
    let mut p = o.prepare(&filter(), Some(&"CDC".into())).unwrap();
    let render = |map: &async_nats::HeaderMap| {
        let mut pairs: Vec<(String, Vec<String>)> = map
            .iter()
            .map(|(k, vs)| {
                let mut vs: Vec<String> = vs.iter().map(|v| v.as_str().to_owned()).collect();
                vs.sort();
                (k.to_string(), vs)
            })
            .collect();
        pairs.sort();
        pairs
    };
    let first = render(&p.take_headers());
    let retry = render(&p.take_headers());
    assert_eq!(first, retry);
    assert_eq!(first.len(), 9, "{first:?}");
    assert!(first.contains(&("X-Tag".into(), vec!["a".into(), "b".into()])));
}
