use super::*;

fn pat(s: &str) -> SubjectPattern {
    SubjectPattern::new(s).unwrap()
}

#[test]
fn subjects_reject_malformed_text() {
    for (text, reason) in [
        ("", "it is empty"),
        ("a..b", "empty token"),
        (".a", "empty token"),
        ("a.", "empty token"),
        ("a b", "whitespace"),
        ("a\tb", "whitespace"),
        ("a.\u{7}", "control"),
        ("a.*", "wildcards"),
        ("a.>", "wildcards"),
        ("a.b*", "wildcards"),
    ] {
        let err = Subject::new(text).unwrap_err().to_string();
        assert!(err.contains(reason), "{text:?}: {err}");
    }
    assert_eq!(
        Subject::new("cdc.public.orders").unwrap().as_str(),
        "cdc.public.orders"
    );
}

#[test]
fn patterns_place_wildcards_as_whole_tokens() {
    for ok in ["a", "a.*", "*", ">", "a.>", "a.*.>", "*.*"] {
        SubjectPattern::new(ok).unwrap();
    }
    assert_eq!(
        SubjectPattern::new("a.>.b").unwrap_err().to_string(),
        "`a.>.b` is not a valid NATS subject pattern: `>` may only be the last token"
    );
    assert!(
        SubjectPattern::new("a.b*")
            .unwrap_err()
            .to_string()
            .contains("whole token")
    );
    assert!(
        SubjectPattern::new("a..>")
            .unwrap_err()
            .to_string()
            .contains("empty token")
    );
    assert!(
        SubjectPattern::new("a >")
            .unwrap_err()
            .to_string()
            .contains("whitespace")
    );
}

#[test]
fn matching_follows_nats_rules() {
    let s = |t: &str| Subject::new(t).unwrap();
    assert!(pat("cdc.>").matches(&s("cdc.a")));
    assert!(pat("cdc.>").matches(&s("cdc.a.b.c")));
    assert!(!pat("cdc.>").matches(&s("cdc")));
    assert!(pat("cdc.*").matches(&s("cdc.a")));
    assert!(!pat("cdc.*").matches(&s("cdc.a.b")));
    assert!(!pat("cdc.*").matches(&s("cdc")));
    assert!(pat("a.*.c").matches(&s("a.b.c")));
    assert!(!pat("a.*.c").matches(&s("a.b.d")));
    assert!(pat("a.b").matches(&s("a.b")));
    assert!(!pat("a.b").matches(&s("a.bc")));
    assert!(pat(">").matches(&s("x")));
}

#[test]
fn coverage_between_patterns() {
    assert!(pat("cdc.>").covers(&pat("cdc.>")));
    assert!(pat("cdc.>").covers(&pat("cdc.orders.*")));
    assert!(pat(">").covers(&pat("cdc.>")));
    assert!(pat("cdc.*").covers(&pat("cdc.*")));
    assert!(pat("cdc.*").covers(&pat("cdc.orders")));
    assert!(!pat("cdc.*").covers(&pat("cdc.>")));
    assert!(!pat("cdc.orders").covers(&pat("cdc.*")));
    assert!(!pat("cdc.>").covers(&pat("cdc")));
    assert!(!pat("cdc.*.x").covers(&pat("cdc.*")));
}

#[test]
fn filter_names_subject_and_allowed_list() {
    let filter = SubjectFilter::parse(["cdc.>", "audit.*"]).unwrap();
    assert_eq!(
        filter.check("cdc.public.t").unwrap().as_str(),
        "cdc.public.t"
    );
    assert_eq!(
        filter.check("other.x").unwrap_err().to_string(),
        "subject `other.x` is not allowed: this pipeline may publish only to `cdc.>`, `audit.*`"
    );
    assert!(matches!(
        filter.check("cdc.*"),
        Err(SubjectError::InvalidSubject { .. })
    ));
    assert!(filter.allows("audit.x"));
    assert!(!filter.allows("audit.x.y"));
    assert_eq!(filter.to_string(), "cdc.>, audit.*");
    assert_eq!(
        SubjectFilter::parse(Vec::<String>::new()),
        Err(SubjectError::EmptyFilter)
    );
}

#[test]
fn huge_subjects_are_shortened_in_errors() {
    let long = format!("{} x", "a".repeat(10_000));
    let err = Subject::new(long).unwrap_err().to_string();
    assert!(err.len() < 400, "{err}");
    assert!(err.contains("(10002 bytes)"), "{err}");
}

#[test]
fn patterns_deserialize_with_validation() {
    let ok: Vec<SubjectPattern> = serde_json::from_str(r#"["cdc.>"]"#).unwrap();
    assert_eq!(ok[0].as_str(), "cdc.>");
    let err = serde_json::from_str::<Vec<SubjectPattern>>(r#"["cdc.>.x"]"#).unwrap_err();
    assert!(
        err.to_string().contains("`>` may only be the last token"),
        "{err}"
    );
}
