use super::*;

fn parse(s: &str) -> Result<ConnInfo, ConnInfoError> {
    ConnInfo::parse_with_env(s, |_| None)
}

#[test]
fn parses_a_full_url() {
    let c = parse("postgres://alice:s%40cret@db.example:6543/app?sslmode=verify-full&sslrootcert=/ca.pem&application_name=x").unwrap();
    assert_eq!(c.host, Host::Tcp("db.example".into()));
    assert_eq!(c.port, 6543);
    assert_eq!(c.user, "alice");
    assert_eq!(c.password.as_ref().unwrap().expose(), "s@cret");
    assert_eq!(c.dbname, "app");
    assert_eq!(c.ssl_mode, SslMode::VerifyFull);
    assert_eq!(c.ssl_root_cert, Some(PathBuf::from("/ca.pem")));
    assert_eq!(c.application_name, "x");
}

#[test]
fn defaults_follow_libpq() {
    let c = parse("postgresql://bob@localhost").unwrap();
    assert_eq!(c.port, 5432);
    assert_eq!(c.dbname, "bob");
    assert_eq!(c.ssl_mode, SslMode::Prefer);
    assert_eq!(c.application_name, "sluice");
    assert_eq!(c.password, None);
    let c = parse("postgresql://bob@").unwrap();
    assert_eq!(c.host, Host::Unix(PathBuf::from(DEFAULT_SOCKET_DIR)));
}

#[test]
fn unix_sockets_from_path_host_or_query() {
    let c = parse("postgres://u@%2Fvar%2Frun%2Fpostgresql:5433/db").unwrap();
    assert_eq!(c.host, Host::Unix(PathBuf::from("/var/run/postgresql")));
    assert_eq!(
        c.socket_path().unwrap(),
        PathBuf::from("/var/run/postgresql/.s.PGSQL.5433")
    );
    let c = parse("postgres:///db?host=/tmp/sock&user=u&port=7").unwrap();
    assert_eq!(c.host, Host::Unix(PathBuf::from("/tmp/sock")));
    assert_eq!(c.target(), "/tmp/sock/.s.PGSQL.7");
}

#[test]
fn ipv6_hosts() {
    let c = parse("postgres://u@[::1]:5000/d").unwrap();
    assert_eq!(c.host, Host::Tcp("::1".into()));
    assert_eq!(c.port, 5000);
    assert_eq!(c.target(), "[::1]:5000");
}

#[test]
fn keyword_strings() {
    let c = parse("host=/tmp port=6000 user=u password='a b\\'c' dbname = d").unwrap();
    assert_eq!(c.host, Host::Unix(PathBuf::from("/tmp")));
    assert_eq!(c.password.unwrap().expose(), "a b'c");
    assert_eq!(c.dbname, "d");
}

#[test]
fn password_from_environment_only_when_absent() {
    let env = |k: &str| (k == "PGPASSWORD").then(|| "fromenv".to_owned());
    let c = ConnInfo::parse_with_env("postgres://u@h/d", env).unwrap();
    assert_eq!(c.password.unwrap().expose(), "fromenv");
    let c = ConnInfo::parse_with_env("postgres://u:given@h/d", env).unwrap();
    assert_eq!(c.password.unwrap().expose(), "given");
}

#[test]
fn display_and_debug_redact_the_password() {
    let c = parse("postgres://u:hunter2@h:1/d?sslmode=require").unwrap();
    assert_eq!(c.to_string(), "postgres://u:***@h:1/d?sslmode=require");
    assert!(!format!("{c:?}").contains("hunter2"));
}

#[test]
fn errors_never_quote_the_input() {
    for bad in [
        "postgres://u:hunter2@h:99999/d",
        "postgres://u:hunter2@h/d?bogus=1",
        "postgres://u:hunter2%zz@h/d",
        "postgres://u:hunter2@h/d?sslmode=allow",
        "postgres://u:hunter2@a,b/d?port=1,2,3",
        "mysql://u:hunter2@h/d",
        "password=hunter2 host",
    ] {
        let err = parse(bad).unwrap_err().to_string();
        assert!(!err.contains("hunter2"), "{err}");
    }
    assert_eq!(
        parse("postgres://u@h:0/d").unwrap_err().to_string(),
        "invalid value for connection parameter `port`: expected a number from 1 to 65535"
    );
    assert_eq!(
        parse("postgres://u@h/d?bogus=1").unwrap_err(),
        ConnInfoError::UnknownParameter("bogus".into())
    );
}

#[test]
fn host_lists_with_ports() {
    let c = parse("postgres://u@h1:5432,h2:5433,h3/db?target_session_attrs=primary").unwrap();
    let hosts: Vec<_> = c.hosts.iter().map(|e| (e.host.clone(), e.port)).collect();
    assert_eq!(
        hosts,
        vec![
            (Host::Tcp("h1".into()), 5432),
            (Host::Tcp("h2".into()), 5433),
            (Host::Tcp("h3".into()), 5432),
        ]
    );
    assert_eq!((c.host.clone(), c.port), (Host::Tcp("h1".into()), 5432));
    assert_eq!(c.session_attrs, SessionAttrs::Primary);
    assert!(c.walks());
    assert_eq!(c.targets(), "h1:5432,h2:5433,h3:5432");
    assert_eq!(
        c.to_string(),
        "postgres://u@h1:5432,h2:5433,h3:5432/db?sslmode=prefer&target_session_attrs=primary"
    );
    let candidates = c.candidates();
    assert_eq!(candidates.len(), 3);
    assert_eq!(candidates[1].target(), "h2:5433");
    assert_eq!(candidates[1].hosts.len(), 1);
    assert_eq!(candidates[1].session_attrs, SessionAttrs::Primary);

    let c =
        parse("host=h1,h2,/tmp port=5432,5433,7 user=u target_session_attrs=read-write").unwrap();
    assert_eq!(c.targets(), "h1:5432,h2:5433,/tmp/.s.PGSQL.7");
    assert_eq!(c.session_attrs, SessionAttrs::ReadWrite);
    let c = parse("host=h1,h2 port=6000 user=u").unwrap();
    assert_eq!(c.targets(), "h1:6000,h2:6000");
    assert!(c.walks());
    let c = parse("postgres://u@[::1]:5000,[::2]/d").unwrap();
    assert_eq!(c.targets(), "[::1]:5000,[::2]:5432");
    assert!(!parse("postgres://u@h/d").unwrap().walks());
}

#[test]
fn host_list_errors() {
    assert_eq!(
        parse("host=a,b,c port=1,2 user=u").unwrap_err(),
        ConnInfoError::PortCount { hosts: 3, ports: 2 }
    );
    assert!(parse("postgres://u@h/d?target_session_attrs=master").is_err());
}

#[test]
fn session_attrs_accept_roles() {
    let primary = ServerRole {
        in_recovery: false,
        read_only: false,
    };
    let standby = ServerRole {
        in_recovery: true,
        read_only: true,
    };
    let read_only_primary = ServerRole {
        in_recovery: false,
        read_only: true,
    };
    use SessionAttrs::*;
    for (attrs, p, s, r) in [
        (Any, true, true, true),
        (ReadWrite, true, false, false),
        (ReadOnly, false, true, true),
        (Primary, true, false, true),
        (Standby, false, true, false),
        (PreferStandby, false, true, false),
    ] {
        assert_eq!(attrs.accepts(primary), p, "{attrs} primary");
        assert_eq!(attrs.accepts(standby), s, "{attrs} standby");
        assert_eq!(attrs.accepts(read_only_primary), r, "{attrs} ro primary");
    }
}
