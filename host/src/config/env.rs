//! `${VAR}` substitution in a manifest's string values.
//!
//! Substitution happens on parsed TOML strings, not on the file's text, so
//! a variable's value can never change the file's structure (a password
//! holding `"` or a newline stays one string).

use super::fields::Problems;

/// Replaces `${NAME}` in every string of `table`; `$$` stands for `$`.
pub(crate) fn substitute(
    table: toml::Table,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Problems,
) -> toml::Table {
    table
        .into_iter()
        .map(|(k, v)| {
            let v = value(v, &k, env, problems);
            (k, v)
        })
        .collect()
}

fn value(
    v: toml::Value,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Problems,
) -> toml::Value {
    match v {
        toml::Value::String(s) => toml::Value::String(text(&s, path, env, problems)),
        toml::Value::Array(items) => toml::Value::Array(
            items
                .into_iter()
                .enumerate()
                .map(|(i, item)| value(item, &format!("{path}[{i}]"), env, problems))
                .collect(),
        ),
        toml::Value::Table(t) => toml::Value::Table(
            t.into_iter()
                .map(|(k, item)| {
                    let item = value(item, &format!("{path}.{k}"), env, problems);
                    (k, item)
                })
                .collect(),
        ),
        other => other,
    }
}

fn text(
    s: &str,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Problems,
) -> String {
    if !s.contains('$') {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        if let Some(after) = rest.strip_prefix("$$") {
            out.push('$');
            rest = after;
        } else if let Some(after) = rest.strip_prefix("${") {
            let Some(end) = after.find('}') else {
                problems.push(
                    path,
                    "has `${` without a closing `}` (write `$$` for a literal `$`)",
                );
                return out;
            };
            let name = &after[..end];
            let valid = !name.is_empty()
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && !name.as_bytes()[0].is_ascii_digit();
            if !valid {
                problems.push(
                    path,
                    format!("`${{{name}}}` is not a valid environment variable name"),
                );
            } else {
                match env(name) {
                    Some(v) => out.push_str(&v),
                    None => {
                        problems.push(path, format!("environment variable `{name}` is not set"))
                    }
                }
            }
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "PW").then(|| "s\"e}cret".to_owned())
    }

    #[test]
    fn substitutes_and_escapes() {
        let mut p = Problems::default();
        assert_eq!(text("a${PW}b$$c$d", "k", &env, &mut p), "as\"e}cretb$c$d");
        assert!(p.0.is_empty());
    }

    #[test]
    fn reports_missing_and_malformed_without_values() {
        let mut p = Problems::default();
        text("${NOPE} ${1X} ${OPEN", "source.url", &env, &mut p);
        let msgs: Vec<String> = p.0.iter().map(ToString::to_string).collect();
        assert_eq!(
            msgs,
            [
                "source.url: environment variable `NOPE` is not set",
                "source.url: `${1X}` is not a valid environment variable name",
                "source.url: has `${` without a closing `}` (write `$$` for a literal `$`)",
            ]
        );
    }
}
