use super::*;

#[test]
fn major_versions() {
    assert_eq!(major_version("17.10"), Some(17));
    assert_eq!(major_version("15.8 (Debian 15.8-0+deb12u1)"), Some(15));
    assert_eq!(major_version("18beta1"), Some(18));
    assert_eq!(major_version("devel"), None);
}

#[test]
fn transient_sqlstates() {
    let e = |code: &str| ServerError {
        severity: "FATAL".into(),
        code: code.into(),
        message: "m".into(),
        detail: None,
        hint: None,
    };
    assert!(e("57P01").is_transient());
    assert!(e("53300").is_transient());
    assert!(e("08006").is_transient());
    assert!(!e("28P01").is_transient());
    assert!(!e("42704").is_transient());
}

#[test]
fn server_error_display_has_all_fields() {
    let e = ServerError {
        severity: "ERROR".into(),
        code: "42704".into(),
        message: "replication slot \"x\" does not exist".into(),
        detail: Some("d".into()),
        hint: Some("h".into()),
    };
    assert_eq!(
        e.to_string(),
        "ERROR: replication slot \"x\" does not exist (SQLSTATE 42704)\nDETAIL: d\nHINT: h"
    );
}
