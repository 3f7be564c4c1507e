use super::*;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn sel(s: &str) -> Selector {
    s.parse()
        .unwrap_or_else(|e| panic!("{s:?} should parse:\n{e}"))
}

fn err(s: &str) -> SelectorError {
    match s.parse::<Selector>() {
        Ok(ok) => panic!("{s:?} should not parse, got {ok:?}"),
        Err(e) => e,
    }
}

fn set(values: &[&str]) -> BTreeSet<String> {
    values.iter().map(|v| v.to_string()).collect()
}

#[test]
fn empty_and_whitespace_select_everything() {
    for s in ["", " ", "\t\n  "] {
        let parsed = sel(s);
        assert_eq!(parsed, Selector::everything());
        assert!(parsed.is_everything());
        assert!(parsed.matches(&labels(&[])));
        assert!(parsed.matches(&labels(&[("role", "web")])));
        assert_eq!(parsed.to_string(), "");
    }
}

#[test]
fn parses_every_operator() {
    let cases = [
        ("role=web", Operator::Equals("web".into())),
        ("role==web", Operator::Equals("web".into())),
        ("role!=web", Operator::NotEquals("web".into())),
        ("role in (a,b)", Operator::In(set(&["a", "b"]))),
        ("role notin (a,b)", Operator::NotIn(set(&["a", "b"]))),
        ("role", Operator::Exists),
        ("!role", Operator::DoesNotExist),
        ("role=\"\"", Operator::Equals(String::new())),
        ("role!=\"\"", Operator::NotEquals(String::new())),
    ];
    for (input, operator) in cases {
        let parsed = sel(input);
        assert_eq!(parsed.requirements().len(), 1, "{input}");
        assert_eq!(parsed.requirements()[0].key(), "role", "{input}");
        assert_eq!(parsed.requirements()[0].operator(), &operator, "{input}");
    }
}

#[test]
fn equals_matching() {
    let s = sel("role=web");
    assert!(s.matches(&labels(&[("role", "web")])));
    assert!(!s.matches(&labels(&[("role", "db")])));
    assert!(!s.matches(&labels(&[])));
    assert_eq!(sel("role==web"), s);
}

#[test]
fn not_equals_matches_hosts_without_the_key() {
    let s = sel("cloud!=aws");
    assert!(!s.matches(&labels(&[("cloud", "aws")])));
    assert!(s.matches(&labels(&[("cloud", "gcp")])));
    assert!(s.matches(&labels(&[])));
}

#[test]
fn in_and_notin_matching() {
    let s = sel("region in (eu-1, eu-2)");
    assert!(s.matches(&labels(&[("region", "eu-1")])));
    assert!(s.matches(&labels(&[("region", "eu-2")])));
    assert!(!s.matches(&labels(&[("region", "us-1")])));
    assert!(!s.matches(&labels(&[])));

    let s = sel("region notin (eu-1,eu-2)");
    assert!(!s.matches(&labels(&[("region", "eu-1")])));
    assert!(s.matches(&labels(&[("region", "us-1")])));
    assert!(s.matches(&labels(&[])));
}

#[test]
fn exists_and_does_not_exist() {
    let s = sel("canary");
    assert!(s.matches(&labels(&[("canary", "")])));
    assert!(s.matches(&labels(&[("canary", "true")])));
    assert!(!s.matches(&labels(&[("role", "web")])));

    let s = sel("!canary");
    assert!(!s.matches(&labels(&[("canary", "true")])));
    assert!(s.matches(&labels(&[("role", "web")])));
}

#[test]
fn empty_value_only_matches_present_empty_label() {
    let s = sel("role=\"\"");
    assert!(s.matches(&labels(&[("role", "")])));
    assert!(!s.matches(&labels(&[("role", "web")])));
    assert!(!s.matches(&labels(&[])));
    let s = sel("role in (\"\", web)");
    assert!(s.matches(&labels(&[("role", "")])));
    assert!(s.matches(&labels(&[("role", "web")])));
}

#[test]
fn all_requirements_must_hold() {
    let s = sel("role=web,cloud!=aws,region in (eu-1,eu-2),!canary");
    assert_eq!(s.requirements().len(), 4);
    let host = |pairs: &[(&str, &str)]| s.matches(&labels(pairs));
    assert!(host(&[
        ("role", "web"),
        ("cloud", "gcp"),
        ("region", "eu-1")
    ]));
    assert!(host(&[("role", "web"), ("region", "eu-2")]));
    assert!(!host(&[("role", "db"), ("region", "eu-1")]));
    assert!(!host(&[
        ("role", "web"),
        ("cloud", "aws"),
        ("region", "eu-1")
    ]));
    assert!(!host(&[("role", "web"), ("region", "us-1")]));
    assert!(!host(&[
        ("role", "web"),
        ("region", "eu-1"),
        ("canary", "yes")
    ]));
}

#[test]
fn whitespace_around_tokens() {
    let tight = sel("role=web,cloud!=aws,region in (eu-1,eu-2),!canary");
    let loose = sel("  role = web ,cloud != aws,\tregion in(eu-1 , eu-2 ) , ! canary ");
    assert_eq!(tight, loose);
    assert_eq!(sel("role == web"), sel("role=web"));
}

#[test]
fn display_is_canonical_and_round_trips() {
    let s = sel("role==web, !canary, region in (eu-2,eu-1,eu-2), cloud!=aws");
    assert_eq!(
        s.to_string(),
        "!canary,cloud!=aws,region in (eu-1,eu-2),role=web"
    );
    assert_eq!(sel(&s.to_string()), s);
    // Order and duplicates do not matter for equality.
    assert_eq!(sel("b=1,a=2,a=2"), sel("a=2,b=1"));

    for input in [
        "role=\"\"",
        "role in (\"\",web)",
        "a notin (x)",
        "example.com/team=core",
        "kubernetes.io/hostname",
        "tier=in",
    ] {
        let s = sel(input);
        assert_eq!(s.to_string(), input);
        assert_eq!(sel(&s.to_string()), s);
    }
}

#[test]
fn accepts_valid_keys_and_values() {
    sel("a=b");
    sel("A_b.c-D=1.2_3-x");
    sel("my-corp.example.com/tier=gold");
    sel(&format!("{}=v", "k".repeat(63)));
    sel(&format!("k={}", "v".repeat(63)));
    sel(&format!("{}/k", "p".repeat(63)));
    sel("k notin (in, notin)");
}

#[test]
fn error_columns() {
    // (input, column, start of the message)
    let cases = [
        (
            "role=",
            6,
            "expected a value after '=', found end of selector",
        ),
        (
            "role==web==x",
            10,
            "expected ',' or end of selector, found '=='",
        ),
        (
            "region in (a,b",
            15,
            "unclosed '(' opened at column 11: expected ',' or ')', found end of selector",
        ),
        (",role=web", 1, "expected a label key, found ','"),
        (
            "role=web,",
            10,
            "expected a requirement after ',', found end of selector",
        ),
        ("in (a)", 1, "expected a label key, found keyword 'in'"),
        (
            "role=w@b",
            7,
            "invalid label value \"w@b\": expected letters, digits, '-', '_' or '.', found '@'",
        ),
        ("!role=web", 6, "expected ',' or end of selector, found '='"),
        (
            "role=web x",
            10,
            "expected ',' or end of selector, found 'x'",
        ),
        (
            "role in ()",
            10,
            "expected at least one value in 'in (…)', found ')'",
        ),
        (
            "role notin ()",
            13,
            "expected at least one value in 'notin (…)'",
        ),
        ("role in a", 9, "expected '(' after 'in', found 'a'"),
        ("role in (a b)", 12, "expected ',' or ')', found 'b'"),
        (
            "role in (a,)",
            12,
            "expected a value in 'in (…)', found ')'",
        ),
        (
            "role in (",
            10,
            "unclosed '(' opened at column 9: expected a value",
        ),
        (
            "role web",
            6,
            "expected '=', '==', '!=', 'in', 'notin', ',' or end",
        ),
        ("role=,a=b", 6, "expected a value after '=', found ','"),
        (
            "role!=",
            7,
            "expected a value after '!=', found end of selector",
        ),
        ("a=b,,c", 5, "expected a label key, found ','"),
        (
            "!",
            2,
            "expected a label key after '!', found end of selector",
        ),
        (
            "!in",
            2,
            "expected a label key after '!', found keyword 'in'",
        ),
        (
            "role=\"web\"",
            6,
            "expected a value without quotes, found '\"'",
        ),
        (
            "-role=web",
            1,
            "invalid label key \"-role\": must start and end",
        ),
        (
            "role-=web",
            5,
            "invalid label key \"role-\": must start and end",
        ),
        (
            "rôle=web",
            2,
            "invalid label key \"rôle\": expected letters",
        ),
        ("\u{a0}a=w@b", 5, "invalid label value \"w@b\""),
        ("/role=x", 1, "label key \"/role\" has an empty prefix"),
        ("a.com/=x", 7, "label key \"a.com/\" has an empty name"),
        ("a/b/c", 4, "label key \"a/b/c\" has more than one '/'"),
        (
            "Example.com/a",
            1,
            "label key prefix of \"Example.com/a\": expected lowercase",
        ),
        (
            "a..b/c",
            3,
            "label key prefix of \"a..b/c\": expected a letter or digit",
        ),
        (
            "a.-b/c",
            3,
            "label key prefix of \"a.-b/c\": each dot-separated part",
        ),
        (
            "a.com/b_",
            8,
            "invalid label key name \"b_\": must start and end",
        ),
    ];
    for (input, column, message) in cases {
        let e = err(input);
        assert!(
            e.message.starts_with(message),
            "{input:?}: message {:?} does not start with {message:?}",
            e.message
        );
        assert_eq!(e.column, column, "{input:?}: {e}");
        assert_eq!(e.input(), input);
    }
}

#[test]
fn long_names_and_values_are_rejected() {
    let value = "v".repeat(64);
    let e = err(&format!("role={value}"));
    assert_eq!(e.column, 6);
    assert_eq!(
        e.message,
        format!("label value \"{value}\" is longer than 63 characters (64)")
    );

    let key = "k".repeat(64);
    let e = err(&format!("{key}=v"));
    assert_eq!(e.column, 1);
    assert!(e.message.starts_with("label key \"kkk"), "{}", e.message);

    let e = err(&format!("{}.com/k", "p".repeat(64)));
    assert_eq!(e.column, 1);
    assert!(
        e.message.contains("is longer than 63 characters"),
        "{}",
        e.message
    );

    let prefix = vec!["p".repeat(63); 4].join(".") + ".com"; // 259 chars
    let e = err(&format!("{prefix}/k"));
    assert!(e.message.contains("longer than 253"), "{}", e.message);
}

#[test]
fn negated_key_with_value_explains_itself() {
    let e = err("!role=web");
    assert!(e.message.contains("write 'role!=value'"), "{}", e.message);
    // The hint is only for operator tokens.
    assert!(!err("!role x").message.contains("write"));
}

#[test]
fn error_display_points_at_column() {
    let e = err("role=web,env=");
    assert_eq!(
        e.to_string(),
        "invalid selector at column 14: expected a value after '=', found end of selector \
             (write \"\" for the empty value)\n  role=web,env=\n               ^"
    );
    let e = err("a=b,\tc@=d");
    assert_eq!(e.column, 7);
    assert!(e.to_string().ends_with("\n  a=b, c@=d\n        ^"), "{e}");
    let boxed: Box<dyn std::error::Error> = Box::new(e);
    assert!(
        boxed
            .to_string()
            .starts_with("invalid selector at column 7")
    );
}
