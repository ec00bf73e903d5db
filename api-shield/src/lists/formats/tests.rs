use super::*;
use std::time::Duration;

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn ok(text: &str, format: Format) -> Parsed {
    parse(text, "test.list", format, false).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn a_file_of_junk_costs_a_counter_not_a_record_per_line() {
    let junk = "x y\n".repeat(10_000);
    let parsed = parse(&junk, "junk", Format::Plain, true).unwrap();
    assert_eq!(parsed.skipped_total, 10_000);
    assert_eq!(parsed.skipped.len(), MAX_SKIPPED_KEPT);
    assert!(parsed.entries.is_empty());
}

#[test]
fn messages_quoting_a_line_are_escaped_and_bounded() {
    let set_name = format!("\u{1b}[2J{}", "n".repeat(100_000));
    let text = format!("create {set_name} list:set\n");
    let err = parse(&text, "evil", Format::Ipset, false).unwrap_err();
    let shown = err.to_string();
    assert!(!shown.chars().any(crate::text::is_unsafe), "{shown:?}");
    assert!(shown.len() < 1_000, "{} bytes", shown.len());
    let skipped = parse("a\u{9b}31m b\n", "evil", Format::Plain, true).unwrap();
    let s = &skipped.skipped[0];
    assert!(!s.text.chars().any(crate::text::is_unsafe), "{s:?}");
    assert!(!s.reason.chars().any(crate::text::is_unsafe), "{s:?}");
}

#[test]
fn line_of_names_where_an_entry_is() {
    let plain = "\u{feff}# header\n198.18.0.0/24\r\n\n::/0 # all of IPv6\n::/0\n";
    assert_eq!(line_of(plain, Format::Auto, &net("::/0")), Some(4));
    assert_eq!(
        line_of(plain, Format::Netset, &net("198.18.0.0/24")),
        Some(2)
    );
    assert_eq!(line_of(plain, Format::Plain, &net("0.0.0.0/0")), None);
    let ipset = "create s hash:net family inet\nadd s 198.18.0.0/24\nadd s 0.0.0.0/0 timeout 5\n";
    assert_eq!(line_of(ipset, Format::Auto, &net("0.0.0.0/0")), Some(3));
    // A CRLF ipset file whose entry repeats: the first line holding it.
    let repeated = "add s 2001:db8::/32\r\nadd s ::/0\r\nadd s ::/0 timeout 9\r\n";
    assert_eq!(line_of(repeated, Format::Ipset, &net("::/0")), Some(2));
}

fn err(text: &str, format: Format) -> ListError {
    match parse(text, "test.list", format, false) {
        Ok(p) => panic!("parsed: {p:?}"),
        Err(e) => e,
    }
}

fn nets(parsed: &Parsed) -> Vec<String> {
    parsed.entries.iter().map(|e| e.net.to_string()).collect()
}

fn entry(n: &str, ttl: Option<u64>, reason: Option<&str>) -> ListEntry {
    ListEntry {
        net: net(n),
        ttl: ttl.map(Duration::from_secs),
        reason: reason.map(str::to_owned),
    }
}

#[test]
fn plain_addresses_and_prefixes() {
    let p = ok(
        "198.18.0.7\n198.18.4.0/24\n2001:db8::1\n2001:db8:bad::/48\n",
        Format::Plain,
    );
    assert_eq!(
        nets(&p),
        [
            "198.18.0.7/32",
            "198.18.4.0/24",
            "2001:db8::1/128",
            "2001:db8:bad::/48"
        ]
    );
    assert!(
        p.entries
            .iter()
            .all(|e| e.ttl.is_none() && e.reason.is_none())
    );
    assert_eq!((p.format, p.lines, p.duplicates), (Format::Plain, 4, 0));
    assert!(p.skipped.is_empty());
}

#[test]
fn comments_blank_lines_whitespace_and_crlf() {
    let text = "# FireHOL level1\r\n\
                ; another comment style\r\n\
                \r\n\
                \t  \r\n\
                198.18.0.1   # trailing comment\r\n\
                \t198.18.0.2;trailing too\r\n\
                \x20 198.18.1.0/24 \t\r\n\
                2001:db8::5#no space\r\n\
                198.18.0.3";
    let p = ok(text, Format::Netset);
    assert_eq!(
        nets(&p),
        [
            "198.18.0.1/32",
            "198.18.0.2/32",
            "198.18.1.0/24",
            "2001:db8::5/128",
            "198.18.0.3/32"
        ]
    );
    assert_eq!(p.lines, 9);
    assert_eq!(p.format, Format::Netset);
}

#[test]
fn lone_cr_and_bom_are_accepted() {
    let p = ok("\u{feff}198.18.0.1\n198.18.0.2\r", Format::Auto);
    assert_eq!(nets(&p), ["198.18.0.1/32", "198.18.0.2/32"]);
    assert_eq!(p.format, Format::Plain);
}

#[test]
fn empty_and_comment_only_files() {
    for text in ["", "\n\n", "# nothing here\n; nor here\n   # indented\n"] {
        for format in [Format::Auto, Format::Plain, Format::Netset, Format::Ipset] {
            let p = ok(text, format);
            assert!(p.entries.is_empty(), "{text:?} {format:?}");
            assert!(p.skipped.is_empty());
            assert_eq!(p.duplicates, 0);
        }
    }
    assert_eq!(ok("", Format::Plain).lines, 0);
    assert_eq!(ok("# a\n# b\n# c\n", Format::Plain).lines, 3);
}

#[test]
fn ipv6_textual_forms() {
    let p = ok(
        "2001:0db8:0000:0000:0000:0000:0000:0001\n\
         2001:DB8:0:0:0:0:0:2\n\
         2001:db8::3\n\
         2001:db8:0:0::/64\n\
         64:ff9b::198.18.0.1\n\
         ::\n\
         ::/0\n",
        Format::Plain,
    );
    assert_eq!(
        nets(&p),
        [
            "2001:db8::1/128",
            "2001:db8::2/128",
            "2001:db8::3/128",
            "2001:db8::/64",
            "64:ff9b::c612:1/128",
            "::/128",
            "::/0"
        ]
    );
    // The full and compressed forms of one address are one entry.
    let p = ok(
        "2001:db8::1\n2001:0db8:0000:0000:0000:0000:0000:0001\n",
        Format::Plain,
    );
    assert_eq!((p.entries.len(), p.duplicates), (1, 1));
}

#[test]
fn zone_ids_are_refused() {
    let e = err("198.18.0.1\nfe80::1%eth0\n", Format::Plain);
    assert_eq!((e.file.as_str(), e.line), ("test.list", 2));
    assert!(
        e.message.contains("fe80::1%eth0") && e.message.contains("zone"),
        "{e}"
    );
    assert!(e.to_string().starts_with("test.list:2: "), "{e}");
}

#[test]
fn host_bits_are_refused_with_the_network_form() {
    let e = err("198.18.0.7/24\n", Format::Plain);
    assert_eq!(e.line, 1);
    assert!(
        e.message.contains("host bits") && e.message.contains("198.18.0.0/24"),
        "{e}"
    );
    let e = err("# x\n2001:db8::1/64\n", Format::Netset);
    assert_eq!(e.line, 2);
    assert!(e.message.contains("2001:db8::/64"), "{e}");
}

#[test]
fn v4_mapped_is_refused_with_the_ipv4_form() {
    let e = err("::ffff:198.18.0.7\n", Format::Plain);
    assert!(
        e.message.contains("IPv4-mapped") && e.message.contains("198.18.0.7/32"),
        "{e}"
    );
    let e = err("::ffff:198.18.0.0/120\n", Format::Plain);
    assert!(e.message.contains("198.18.0.0/24"), "{e}");
    let e = err("0:0:0:0:0:ffff:c612:7\n", Format::Plain);
    assert!(e.message.contains("198.18.0.7/32"), "{e}");
}

#[test]
fn garbage_is_refused_naming_the_token() {
    for (text, named) in [
        ("example.com\n", "example.com"),
        ("198.18.0.300\n", "198.18.0.300"),
        ("198.18.0.0/33\n", "198.18.0.0/33"),
        ("010.0.0.1\n", "010.0.0.1"),
        ("198.18.0.1 198.18.0.2\n", "198.18.0.1 198.18.0.2"),
        (
            "198.18.0.1 is a scanner and so is everyone in its /24\n",
            "expected one",
        ),
        ("198.18.0.1-198.18.0.9\n", "ranges"),
    ] {
        let e = err(text, Format::Plain);
        assert_eq!(e.line, 1);
        assert!(e.message.contains(named), "{text:?}: {e}");
    }
    // A huge line is not repeated whole in the message.
    let long = "x".repeat(10_000);
    let e = err(&long, Format::Plain);
    assert!(e.message.len() < 300, "{}", e.message.len());
}

#[test]
fn duplicates_collapse_keeping_the_longest_ttl() {
    let p = ok(
        "create s hash:net timeout 600\n\
         add s 198.18.0.0/24 timeout 60 comment \"short\"\n\
         add s 198.18.0.0/24 timeout 300 comment \"long\"\n\
         add s 198.18.0.0/24 timeout 120\n\
         add s 198.18.1.1 timeout 30\n\
         add s 198.18.1.1 timeout 0\n\
         add s 198.18.1.1 timeout 90 comment \"late\"\n\
         add s 198.18.2.2 timeout 10\n\
         add s 198.18.2.2 comment \"default ttl, longer\"\n",
        Format::Ipset,
    );
    assert_eq!(
        p.entries,
        [
            entry("198.18.0.0/24", Some(300), Some("long")),
            entry("198.18.1.1/32", None, Some("late")),
            entry("198.18.2.2/32", Some(600), Some("default ttl, longer")),
        ]
    );
    assert_eq!(p.duplicates, 5);

    let p = ok("198.18.0.1\n198.18.0.1/32\n198.18.0.1\n", Format::Plain);
    assert_eq!((nets(&p), p.duplicates), (vec!["198.18.0.1/32".into()], 2));
}

#[test]
fn overlaps_are_kept() {
    let p = ok(
        "198.18.0.0/24\n198.18.0.7\n198.18.0.0/16\n2001:db8::/32\n2001:db8::1\n",
        Format::Plain,
    );
    assert_eq!(p.entries.len(), 5);
    assert_eq!(p.duplicates, 0);
}

#[test]
fn ipset_save_output() {
    let text = "create blocklist hash:net family inet hashsize 1024 maxelem 65536 timeout 300 counters comment\n\
                add blocklist 198.18.0.0/24 timeout 120 packets 12 bytes 960 comment \"scanner; see #42\"\n\
                add blocklist 198.18.9.9 timeout 0\n\
                add blocklist 198.18.7.7\n\
                create six hash:ip family inet6 timeout 300\n\
                add six 2001:db8::1 timeout 250\n\
                add -exist six 2001:db8::2 timeout 100 -exist\n\
                create plainset hash:ip family inet hashsize 64 maxelem 10 bucketsize 12 initval 0x1234abcd\n\
                add plainset 198.18.3.3 skbmark 0x1/0xff skbprio 1:10 skbqueue 2\n";
    let p = ok(text, Format::Auto);
    assert_eq!(p.format, Format::Ipset);
    assert_eq!(
        p.entries,
        [
            entry("198.18.0.0/24", Some(120), Some("scanner; see #42")),
            entry("198.18.9.9/32", None, None),
            entry("198.18.7.7/32", Some(300), None),
            entry("2001:db8::1/128", Some(250), None),
            entry("2001:db8::2/128", Some(100), None),
            entry("198.18.3.3/32", None, None),
        ]
    );
    assert_eq!(p.lines, 9);
}

#[test]
fn ipset_comments_blank_lines_and_crlf() {
    let p = ok(
        "# saved\r\n\r\ncreate s hash:ip\r\n  add s 198.18.0.1   # trailing\r\nadd s 198.18.0.2 ; too\r\n",
        Format::Ipset,
    );
    assert_eq!(nets(&p), ["198.18.0.1/32", "198.18.0.2/32"]);
}

#[test]
fn ipset_adds_without_create_are_taken() {
    let p = ok(
        "add s 198.18.0.1\nadd t 2001:db8::/48 timeout 5\n",
        Format::Ipset,
    );
    assert_eq!(
        p.entries,
        [
            entry("198.18.0.1/32", None, None),
            entry("2001:db8::/48", Some(5), None)
        ]
    );
}

#[test]
fn ipset_netmask_widens_addresses() {
    let p = ok(
        "create m hash:ip family inet netmask 24\nadd m 198.18.5.0\nadd m 198.18.0.0/16\n\
         create b bitmap:ip range 198.18.0.0-198.18.255.255 netmask 28\nadd b 198.18.6.16\n",
        Format::Ipset,
    );
    assert_eq!(
        nets(&p),
        ["198.18.5.0/24", "198.18.0.0/16", "198.18.6.16/28"]
    );
    let e = err(
        "create m hash:ip netmask 24\nadd m 198.18.5.7\n",
        Format::Ipset,
    );
    assert_eq!(e.line, 2);
    assert!(e.message.contains("198.18.5.0/24"), "{e}");
}

#[test]
fn ipset_family_is_enforced() {
    let e = err(
        "create s hash:net family inet\nadd s 2001:db8::/32\n",
        Format::Ipset,
    );
    assert_eq!(e.line, 2);
    assert!(e.message.contains("family inet"), "{e}");
    // hash sets default to inet, as in ipset.
    let e = err("create s hash:ip\nadd s 2001:db8::1\n", Format::Ipset);
    assert_eq!(e.line, 2);
    let e = err(
        "create s hash:ip family inet6\nadd s 198.18.0.1\n",
        Format::Ipset,
    );
    assert!(e.message.contains("inet6"), "{e}");
}

#[test]
fn ipset_nomatch_is_refused() {
    let e = err(
        "create s hash:net\nadd s 198.18.0.0/16\nadd s 198.18.3.0/24 nomatch\n",
        Format::Ipset,
    );
    assert_eq!(e.line, 3);
    assert!(
        e.message.contains("nomatch") && e.message.contains("198.18.3.0/24"),
        "{e}"
    );
}

#[test]
fn ipset_unknown_commands_and_options_are_refused() {
    for (text, line, named) in [
        ("create s hash:ip\nflush s\n", 2, "flush"),
        ("destroy s\n", 1, "destroy"),
        ("create s hash:ip\ndel s 198.18.0.1\n", 2, "del"),
        (
            "create s hash:ip\nadd s 198.18.0.1 frobnicate 3\n",
            2,
            "frobnicate",
        ),
        ("create s hash:ip wibble\n", 1, "wibble"),
        ("create s hash:ip,port\n", 1, "hash:ip,port"),
        ("create s list:set\n", 1, "list:set"),
        ("create s hash:ip bitmask 255.255.0.255\n", 1, "bitmask"),
        ("create s bitmap:ip family inet6\n", 1, "inet6"),
        ("create s hash:ip netmask 33\n", 1, "netmask 33"),
        (
            "create s hash:ip\nadd s 198.18.0.1 timeout soon\n",
            2,
            "soon",
        ),
        (
            "create s hash:ip\nadd s 198.18.0.1 timeout 9999999999\n",
            2,
            "timeout",
        ),
        ("create s hash:ip\nadd s 198.18.0.1 timeout\n", 2, "timeout"),
        (
            "create s hash:ip\nadd s 198.18.0.1 packets many\n",
            2,
            "many",
        ),
        (
            "create s hash:ip\nadd s 198.18.0.1 comment \"open\n",
            2,
            "unterminated",
        ),
        ("create s hash:ip\nadd s\n", 2, "add"),
        ("create s\n", 1, "create"),
        (
            "create s hash:ip\nadd s 198.18.0.1/24\n",
            2,
            "198.18.0.0/24",
        ),
        ("create s hash:ip\n198.18.0.1\n", 2, "198.18.0.1"),
    ] {
        let e = err(text, Format::Ipset);
        assert_eq!(e.line, line, "{text:?}: {e}");
        assert!(e.message.contains(named), "{text:?}: {e}");
    }
}

#[test]
fn ipset_entries_of_a_refused_set_are_refused_too() {
    let p = parse(
        "create ports hash:ip,port\nadd ports 198.18.0.1,tcp:80\ncreate s hash:ip\nadd s 198.18.0.2\n",
        "f",
        Format::Ipset,
        true,
    )
    .unwrap();
    assert_eq!(nets(&p), ["198.18.0.2/32"]);
    assert_eq!(p.skipped.iter().map(|s| s.line).collect::<Vec<_>>(), [1, 2]);
    assert!(p.skipped[1].reason.contains("line 1"), "{:?}", p.skipped);
}

#[test]
fn detect_recognises_ipset_only() {
    assert_eq!(
        detect("create s hash:net family inet\nadd s 198.18.0.0/24\n"),
        Format::Ipset
    );
    assert_eq!(
        detect("# saved by ipset\n\n  add s 198.18.0.1\n"),
        Format::Ipset
    );
    assert_eq!(detect("-exist create s hash:ip\n"), Format::Ipset);
    assert_eq!(detect("\u{feff}create s hash:ip\n"), Format::Ipset);
    assert_eq!(detect("198.18.0.1\nadd s 198.18.0.2\n"), Format::Plain);
    assert_eq!(detect("# create s hash:ip\n198.18.0.1\n"), Format::Plain);
    assert_eq!(detect("add::1\n"), Format::Plain);
    assert_eq!(detect(""), Format::Plain);
    assert_eq!(detect("# only comments\n"), Format::Plain);
    // An explicit format is used as given.
    assert_eq!(ok("198.18.0.1\n", Format::Netset).format, Format::Netset);
    assert_eq!(err("198.18.0.1\n", Format::Ipset).line, 1);
}

#[test]
fn skip_invalid_reports_every_bad_line() {
    let text = "198.18.0.1\n\
                nonsense\n\
                # fine\n\
                198.18.0.7/24\n\
                fe80::1%eth0\n\
                2001:db8::1\n\
                ::ffff:198.18.0.9\n\
                \x20 also bad  \n\
                198.18.0.1\n";
    let e = err(text, Format::Plain);
    assert_eq!(
        e.line, 2,
        "without skip_invalid the first bad line is the error"
    );

    let p = parse(text, "f", Format::Plain, true).unwrap();
    assert_eq!(nets(&p), ["198.18.0.1/32", "2001:db8::1/128"]);
    assert_eq!(p.duplicates, 1);
    assert_eq!(p.lines, 9);
    let lines: Vec<usize> = p.skipped.iter().map(|s| s.line).collect();
    assert_eq!(lines, [2, 4, 5, 7, 8]);
    assert_eq!(p.skipped[0].text, "nonsense");
    assert_eq!(p.skipped[4].text, "also bad");
    assert!(p.skipped[1].reason.contains("198.18.0.0/24"));
    assert!(p.skipped[2].reason.contains("zone"));
    assert!(p.skipped[3].reason.contains("198.18.0.9/32"));
}

#[test]
fn format_names() {
    use clap::ValueEnum;
    let names: Vec<String> = Format::value_variants()
        .iter()
        .map(|f| f.to_possible_value().unwrap().get_name().to_owned())
        .collect();
    assert_eq!(names, ["auto", "plain", "netset", "ipset"]);
    assert_eq!(
        serde_json::to_string(&Format::Netset).unwrap(),
        "\"netset\""
    );
    let f: Format = serde_json::from_str("\"ipset\"").unwrap();
    assert_eq!(f, Format::Ipset);
}
