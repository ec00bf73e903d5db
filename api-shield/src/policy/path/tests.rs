use super::*;

/// (raw, normalised) pairs that must be accepted.
const ACCEPTED: &[(&str, &str)] = &[
    ("/", "/"),
    ("/v1/items", "/v1/items"),
    ("/%61dmin/x", "/admin/x"),
    ("/adm%69n/users", "/admin/users"),
    ("/%41DMIN", "/ADMIN"),
    ("/%761/items", "/v1/items"),
    ("/%2e%2e/admin", "/admin"),
    ("/public/../admin", "/admin"),
    ("/public/%2E%2e/admin", "/admin"),
    ("/public/.%2e/admin", "/admin"),
    ("/public/%2e./admin", "/admin"),
    ("/x/./admin", "/x/admin"),
    ("//admin", "/admin"),
    ("///admin//x", "/admin/x"),
    ("/a/b/..", "/a/"),
    ("/a/b/.", "/a/b/"),
    ("/a/", "/a/"),
    ("/../..", "/"),
    ("/../../admin", "/admin"),
    ("/a%7e", "/a~"),
    ("/a%2db", "/a-b"),
    ("/a%5fb", "/a_b"),
    ("/caf%c3%a9", "/caf%C3%A9"),
    ("/a%20b", "/a%20b"),
    ("/a b", "/a%20b"),
    ("/a{b}", "/a%7Bb%7D"),
    ("/a|b", "/a%7Cb"),
    ("/x%3bjsessionid=1", "/x%3Bjsessionid=1"),
    ("/a%25", "/a%25"),
    ("/a%25zz", "/a%25zz"),
    ("/a:b@c!$&'()*+,=", "/a:b@c!$&'()*+,="),
    ("/admin...", "/admin..."),
    ("/a#b", "/a%23b"),
];

/// Raw paths that must be refused, with the error they get.
fn refused() -> Vec<(&'static str, PathError)> {
    vec![
        ("*", PathError::NotAbsolute),
        ("", PathError::NotAbsolute),
        ("admin", PathError::NotAbsolute),
        ("/admin%2fx", PathError::EncodedSeparator { ch: '/', at: 6 }),
        ("/admin%2Fx", PathError::EncodedSeparator { ch: '/', at: 6 }),
        (
            "/x/..%2fadmin",
            PathError::EncodedSeparator { ch: '/', at: 5 },
        ),
        (
            "/x/..%5cadmin",
            PathError::EncodedSeparator { ch: '\\', at: 5 },
        ),
        ("/x\\..\\admin", PathError::Backslash { at: 2 }),
        ("/admin%00", PathError::ControlCharacter { byte: 0, at: 6 }),
        ("/admin\0", PathError::ControlCharacter { byte: 0, at: 6 }),
        (
            "/a%0d%0aX: y",
            PathError::ControlCharacter { byte: 0x0d, at: 2 },
        ),
        ("/a%7f", PathError::ControlCharacter { byte: 0x7f, at: 2 }),
        ("/a\tb", PathError::ControlCharacter { byte: 9, at: 2 }),
        ("/admin;x=1", PathError::PathParameter { at: 6 }),
        ("/admin/..;/x", PathError::PathParameter { at: 9 }),
        ("/%252e%252e/admin", PathError::DoubleEncoded { at: 1 }),
        ("/a%2541", PathError::DoubleEncoded { at: 2 }),
        // Found by the `route_path` fuzz target: decoding assembles `%25E3` / `%252e`.
        ("/%25%453", PathError::DoubleEncoded { at: 1 }),
        (
            "/%25%32%65%25%32%65/admin",
            PathError::DoubleEncoded { at: 1 },
        ),
        ("/a%G1", PathError::BadEscape { at: 2 }),
        ("/a%2", PathError::BadEscape { at: 2 }),
        ("/a%", PathError::BadEscape { at: 2 }),
        ("/a%%41", PathError::BadEscape { at: 2 }),
        ("/caf\u{e9}", PathError::NonAscii { at: 4 }),
    ]
}

#[test]
fn accepted_paths_are_normalised() {
    for (raw, want) in ACCEPTED {
        assert_eq!(normalize_path(raw).as_deref(), Ok(*want), "{raw:?}");
    }
}

#[test]
fn normalising_twice_changes_nothing() {
    for (_, once) in ACCEPTED {
        assert_eq!(normalize_path(once).as_deref(), Ok(*once), "{once:?}");
    }
}

#[test]
fn refused_paths_name_what_is_wrong() {
    for (raw, want) in refused() {
        assert_eq!(normalize_path(raw), Err(want.clone()), "{raw:?}");
        let msg = want.to_string();
        assert!(!msg.is_empty() && !msg.contains("admin"), "{msg}");
    }
}

#[test]
fn oversize_paths_are_refused() {
    let long = format!("/{}", "a".repeat(MAX_PATH_BYTES));
    assert_eq!(normalize_path(&long), Err(PathError::TooLong));
    let just = format!("/{}", "a".repeat(MAX_PATH_BYTES - 1));
    assert_eq!(normalize_path(&just).map(|p| p.len()), Ok(MAX_PATH_BYTES));
    // Encoding spaces triples them: the result is bounded too.
    let spaces = format!("/{}", " ".repeat(MAX_PATH_BYTES / 2));
    assert_eq!(normalize_path(&spaces), Err(PathError::TooLong));
}

#[test]
fn prefixes_match_on_segment_boundaries() {
    assert!(prefix_matches("/admin", "/admin", false));
    assert!(prefix_matches("/admin/x", "/admin", false));
    assert!(prefix_matches("/admin/", "/admin", false));
    assert!(!prefix_matches("/administrator", "/admin", false));
    assert!(!prefix_matches("/adm", "/admin", false));
    assert!(!prefix_matches("/ADMIN/x", "/admin", false));
    assert!(prefix_matches("/ADMIN/x", "/admin", true));
    assert!(prefix_matches("/AdMiN", "/admin", true));
    assert!(!prefix_matches("/ADMINISTRATOR", "/admin", true));
    assert!(prefix_matches("/anything", "", false));
}
