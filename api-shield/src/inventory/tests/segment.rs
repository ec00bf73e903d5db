//! Classification of single segments, on real-world shapes.

use crate::inventory::segment::{Param, classify};

const MAX: usize = 128;

#[test]
fn identifiers_become_parameters() {
    let table: &[(&str, Param)] = &[
        ("42", Param::Id),
        ("0007", Param::Id),
        ("123e4567-e89b-12d3-a456-426614174000", Param::Uuid),
        ("123E4567-E89B-12D3-A456-426614174000", Param::Uuid),
        ("01ARZ3NDEKTSV4RRFFQ69G5FAV", Param::Ulid),
        ("01arz3ndektsv4rrffq69g5fav", Param::Ulid),
        ("d41d8cd98f00b204e9800998ecf8427e", Param::Hex),
        ("da39a3ee5e6b4b0d3255bfef95601890afd80709", Param::Hex),
        ("DEADBEEF00112233", Param::Hex),
        ("dGhpcyBpcyBhIHRva2Vu", Param::Token),
        ("Xk9_qLm2-ZpR7tWvYb3N", Param::Token),
        ("alice@example.com", Param::Email),
        ("first.last+tag@mail.example.org", Param::Email),
        ("ord-2024-000123", Param::Key),
        ("2024-01-15", Param::Key),
        ("a1b2c3d4", Param::Key),
        ("INV00042X", Param::Key),
    ];
    for (segment, expected) in table {
        assert_eq!(classify(segment, MAX), Some(*expected), "{segment}");
    }
}

#[test]
fn names_stay_literal() {
    let table = [
        "users",
        "v1",
        "v2beta1",
        "oauth2",
        "sha256",
        "api",
        "index.html",
        "getUserAccountDetails",
        "authentication-providers",
        "user_profile_settings_v2",
        "well-known",
        ".well-known",
        "openid-configuration",
        "favicon.ico",
        "..",
        ".",
        "",
        "%2e%2e",
        "caf\u{e9}",
        "\u{65e5}\u{672c}\u{8a9e}",
        "@",
        "a@b",
        "{userId}",
        "abcdef",
    ];
    for segment in table {
        assert_eq!(classify(segment, MAX), None, "{segment:?}");
    }
}

#[test]
fn placeholders_classify_as_themselves() {
    for param in Param::ALL {
        assert_eq!(classify(param.placeholder(), MAX), Some(param));
    }
}

#[test]
fn overlong_segments_collapse_whatever_they_hold() {
    let long = "q".repeat(MAX + 1);
    assert_eq!(classify(&long, MAX), Some(Param::Segment));
    assert_eq!(classify(&"q".repeat(MAX), MAX), None);
    let unicode = "\u{e9}".repeat(MAX);
    assert_eq!(classify(&unicode, MAX), Some(Param::Segment));
}
