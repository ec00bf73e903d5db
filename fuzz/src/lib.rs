//! What each fuzz target does with one input, shared by the libFuzzer targets in
//! `fuzz_targets/` (nightly, `cargo fuzz`) and by the stable replay test
//! `api-shield/tests/fuzz_regressions.rs`, which includes this file and runs every saved input
//! under `fuzz/regressions/<target>/` and `fuzz/seeds/<target>/` through the same function.
//!
//! Each function panics when an input crashes the code under test or breaks a property that
//! code promises (a round trip, an accepted prefix that is not normalised, an error that does
//! not point at its line, a credential let in that is not a valid one). It uses only
//! `api_shield`, `serde_json`, `ipnet`, `toml`, `jsonwebtoken`, `base64` and std (each a
//! dependency of `api-shield` too, at the same version), so it compiles both as this crate's
//! library and as a module of an `api-shield` test.
//!
//! The HTTP auth inputs of the policy engine (Basic, bearer JWT and API-key credentials, API-key
//! hashes, JWKs) are in `auth.rs`. The push API's bearer check (`push::Token::check`) and its
//! batch validation (`push::BatchRequest::validate`) are crate-private, so `push_batch` covers
//! the public parts: the body types and the `parse_net` / `Token::new` checks they feed.

mod auth;
mod route;

pub use auth::{api_key_hash, http_basic, jwk, jwt};
pub use route::route_path;

use api_shield::config::parse_config;
use api_shield::control::Request;
use api_shield::feeds::crowdsec::{
    CrowdsecConfig, Decisions, Filter, GoDurationError, Keep, decode, parse_go_duration,
};
use api_shield::lists::formats::{self, Format};
use api_shield::lists::valid_list_name;
use api_shield::parse::{InputError, parse_duration, parse_net};
use api_shield::push::{BatchRequest, Token};
use ipnet::IpNet;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A target: the name of its directory under `fuzz/regressions/` and `fuzz/seeds/`, and what
/// it does with one input.
pub type Target = (&'static str, fn(&[u8]));

/// Every target.
pub const TARGETS: &[Target] = &[
    ("list_formats", list_formats),
    ("config", config),
    ("control_request", control_request),
    ("push_batch", push_batch),
    ("crowdsec_stream", crowdsec_stream),
    ("go_duration", go_duration),
    ("http_basic", http_basic),
    ("jwt", jwt),
    ("jwk", jwk),
    ("api_key_hash", api_key_hash),
    ("route_path", route_path),
];

/// Inputs longer than this are cut: the parsers are linear, and libFuzzer finds nothing more
/// in megabytes of text than in kilobytes.
const MAX_INPUT: usize = 64 * 1024;

fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(&data[..data.len().min(MAX_INPUT)]).ok()
}

// ---- shared checks -----------------------------------------------------------------------------

/// An accepted prefix is normalised, never IPv4-mapped, and reads back as itself.
fn check_net(token: &str, net: &IpNet) {
    assert_eq!(
        net.trunc(),
        *net,
        "`{token}` was accepted with host bits: {net}"
    );
    let again = parse_net(&net.to_string());
    assert_eq!(
        again.as_ref(),
        Ok(net),
        "`{token}` -> {net} does not read back"
    );
    if let IpNet::V6(v6) = net {
        assert!(
            v6.prefix_len() < 96 || v6.network().to_ipv4_mapped().is_none(),
            "`{token}`: the IPv4-mapped {net} was accepted"
        );
    }
}

/// `parse_net`: accepted prefixes are sound; a refusal names the token (when it has one).
fn check_parse_net(token: &str) {
    match parse_net(token) {
        Ok(net) => check_net(token, &net),
        Err(InputError::EmptyAddress) => assert!(token.is_empty()),
        Err(e) => {
            let message = e.to_string();
            assert!(
                message.contains(token),
                "{message:?} does not name {token:?}"
            );
            if let InputError::HostBits { suggestion, .. }
            | InputError::V4Mapped { suggestion, .. } = &e
            {
                assert_eq!(
                    parse_net(&suggestion.to_string()).as_ref(),
                    Ok(suggestion),
                    "the suggestion for `{token}` is refused too"
                );
            }
        }
    }
}

/// `parse_duration`: what it accepts is positive.
fn check_parse_duration(token: &str) {
    if let Ok(d) = parse_duration(token) {
        assert!(!d.is_zero(), "`{token}` was accepted as a zero duration");
    }
}

/// Every check a daemon or CLI applies to a string that could name an address, a duration or
/// a list.
fn check_string(s: &str) {
    check_parse_net(s);
    check_parse_duration(s);
    if valid_list_name(s).is_ok() {
        assert!(
            !s.is_empty() && !s.starts_with('.') && !s.contains(['/', '\0']),
            "list name {s:?} accepted"
        );
    }
}

// ---- list files ----------------------------------------------------------------------------------

const FORMATS: [Format; 4] = [Format::Auto, Format::Plain, Format::Netset, Format::Ipset];

/// `lists::formats::parse` in every format, strict and with `skip_invalid`.
pub fn list_formats(data: &[u8]) {
    let Some(text) = text(data) else { return };
    let detected = formats::detect(text);
    assert_ne!(detected, Format::Auto);
    let lines = text
        .strip_prefix('\u{feff}')
        .unwrap_or(text)
        .lines()
        .count();
    for format in FORMATS {
        let strict = formats::parse(text, "fuzz.list", format, false);
        let lenient = formats::parse(text, "fuzz.list", format, true)
            .unwrap_or_else(|e| panic!("{format:?}: skip_invalid still failed: {e}"));
        let used = if format == Format::Auto {
            detected
        } else {
            format
        };
        assert_eq!(lenient.format, used, "{format:?}");
        assert_eq!(lenient.lines, lines, "{format:?}: line count");
        let mut seen = HashSet::new();
        for e in &lenient.entries {
            check_net(&e.net.to_string(), &e.net);
            assert!(seen.insert(e.net), "{format:?}: {} listed twice", e.net);
            if let Some(ttl) = e.ttl {
                assert!(!ttl.is_zero(), "{format:?}: {} has a zero ttl", e.net);
            }
        }
        for s in &lenient.skipped {
            assert!(
                (1..=lines).contains(&s.line),
                "{format:?}: skipped line {} of {lines}",
                s.line
            );
        }
        match strict {
            Ok(parsed) => {
                assert!(
                    lenient.skipped.is_empty(),
                    "{format:?}: strict passed, lenient skipped"
                );
                assert_eq!(parsed, lenient, "{format:?}: strict and lenient differ");
            }
            Err(e) => {
                let first = lenient.skipped.first().unwrap_or_else(|| {
                    panic!("{format:?}: strict refused ({e}), lenient skipped nothing")
                });
                assert_eq!(e.line, first.line, "{format:?}: {e}");
                assert_eq!(e.message, first.reason, "{format:?}");
                assert!(e.to_string().starts_with("fuzz.list:"), "{e}");
            }
        }
    }
}

// ---- config ----------------------------------------------------------------------------------------

/// `config::parse_config`: errors point at lines of the file; a valid config round-trips
/// through its own serialization.
pub fn config(data: &[u8]) {
    let Some(text) = text(data) else { return };
    let file = Path::new("/fuzz/config.toml");
    match parse_config(text, file) {
        Ok(config) => {
            let written = toml::to_string(&config)
                .unwrap_or_else(|e| panic!("a valid config does not serialize: {e}"));
            let again = parse_config(&written, file)
                .unwrap_or_else(|e| panic!("its serialization is refused: {e}\n{written}"));
            assert_eq!(
                again, config,
                "the config changed through serialization:\n{written}"
            );
        }
        Err(errors) => {
            let lines = text.lines().count().max(1);
            assert!(!errors.errors().is_empty(), "an error without problems");
            for e in errors.errors() {
                assert_eq!(e.file, file);
                assert!(!e.message.is_empty());
                if let Some(line) = e.line {
                    // A problem at the very end of a file may point just past its last line.
                    assert!(
                        (1..=lines + 1).contains(&line),
                        "line {line} of a {lines}-line file: {e}"
                    );
                }
            }
        }
    }
}

// ---- control protocol ----------------------------------------------------------------------------

/// `control::parse_request` as the server reads a request line, then every
/// string field through the daemon's checks; a request round-trips through its wire form.
pub fn control_request(data: &[u8]) {
    let Some(text) = text(data) else { return };
    let Ok(request) = api_shield::control::parse_request(text.as_bytes()) else {
        return;
    };
    let wire = serde_json::to_string(&request).expect("a request serializes");
    assert!(
        !wire.contains('\n'),
        "a request line holds a newline: {wire}"
    );
    let again: Request = api_shield::control::parse_request(wire.as_bytes())
        .unwrap_or_else(|e| panic!("its own wire form is refused: {e}: {wire}"));
    assert_eq!(again, request, "{wire}");
    assert_eq!(
        serde_json::to_value(&request).expect("to a value")["op"],
        request.op(),
        "{wire}"
    );
    let mut strings: Vec<&str> = Vec::new();
    // Exhaustive on purpose: a new request fails to compile here until its strings are checked.
    match &request {
        Request::Status | Request::Stats | Request::Lists | Request::Reload => {}
        Request::List { origin, .. } => strings.extend(origin.as_deref()),
        Request::Import { list, source, .. } => {
            strings.push(list);
            strings.extend(source.as_deref());
        }
        Request::Flush { list } => strings.push(list),
        Request::Block {
            nets, reason, list, ..
        } => {
            strings.extend(nets.iter().map(String::as_str));
            strings.extend(reason.as_deref());
            strings.extend(list.as_deref());
        }
        Request::Unblock { nets, list } => {
            strings.extend(nets.iter().map(String::as_str));
            strings.extend(list.as_deref());
        }
        Request::Allow { nets } | Request::Unallow { nets } => {
            strings.extend(nets.iter().map(String::as_str));
        }
        // Only compared with the inventory's host names, never opened or stored.
        Request::Inventory { host } | Request::InventoryExport { host } => {
            strings.extend(host.as_deref());
        }
    }
    for s in strings {
        check_string(s);
    }
}

// ---- push API ----------------------------------------------------------------------------------------

/// A push batch body as the server decodes it, every entry through `parse_net`, reasons and
/// tokens through the public checks; a batch round-trips through its wire form.
pub fn push_batch(data: &[u8]) {
    let Some(text) = text(data) else { return };
    if let Some(secret) = text.strip_prefix("token:") {
        // `Token::new` refuses what a header cannot carry.
        if Token::new(secret.to_owned()).is_ok() {
            assert!(
                !secret.is_empty() && secret.bytes().all(|b| b.is_ascii_graphic()),
                "token {secret:?} accepted"
            );
        }
        return;
    }
    let Ok(batch) = serde_json::from_str::<BatchRequest>(text) else {
        return;
    };
    let wire = serde_json::to_string(&batch).expect("a batch serializes");
    let again: BatchRequest = serde_json::from_str(&wire)
        .unwrap_or_else(|e| panic!("its own wire form is refused: {e}: {wire}"));
    assert_eq!(again, batch, "{wire}");
    assert_eq!(batch.len(), batch.add.len() + batch.remove.len());
    for item in &batch.add {
        check_parse_net(&item.net);
        if let Some(reason) = &item.reason {
            check_string(reason);
        }
    }
    for token in &batch.remove {
        check_parse_net(token);
    }
}

// ---- CrowdSec ------------------------------------------------------------------------------------------

/// Longest TTL the bouncer gives an entry (`crowdsec::MAX_TTL`, a hundred years).
const CROWDSEC_MAX_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 3_600);

/// Stream answers, one JSON document a line: the first as the `startup=true` answer, the rest
/// as deltas applied in order, a minute apart.
pub fn crowdsec_stream(data: &[u8]) {
    let Some(text) = text(data) else { return };
    let filter = Filter::new(&CrowdsecConfig::new(PathBuf::from("/fuzz/key")));
    let mut lines = text.lines();
    // The first line that decodes is the startup answer.
    let Some((first, line)) = lines.by_ref().find_map(|l| {
        decode(l.as_bytes(), &filter, Keep::NewOnly)
            .ok()
            .map(|a| (a, l))
    }) else {
        return;
    };
    // What decodes is JSON; each of its elements is taken or skipped, once.
    let document: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("decoded but not JSON: {e}"));
    let len = |part: &str| document[part].as_array().map_or(0, Vec::len);
    let t0 = Instant::now();
    let (mut state, entries, stats) = Decisions::from_startup(first, t0);
    let counted = stats.accepted + stats.skipped();
    assert!(
        counted >= len("new") && counted <= len("new") + len("deleted"),
        "every decision is taken or skipped: {stats:?}"
    );
    assert_eq!(entries.len(), state.len(), "{stats:?}");
    let mut seen = HashSet::new();
    for e in &entries {
        check_net(&e.net.to_string(), &e.net);
        assert!(seen.insert(e.net), "{} twice", e.net);
        let ttl = e.ttl.expect("CrowdSec entries expire");
        assert!(!ttl.is_zero() && ttl <= CROWDSEC_MAX_TTL, "ttl {ttl:?}");
    }
    let answers = lines.filter_map(|l| decode(l.as_bytes(), &filter, Keep::NewAndDeleted).ok());
    for (i, answer) in answers.enumerate().take(16) {
        let now = t0 + Duration::from_secs(60 * (i as u64 + 1));
        let (change, _) = state.apply_delta(answer, now);
        let added: HashSet<IpNet> = change.add.iter().map(|e| e.net).collect();
        assert_eq!(
            added.len(),
            change.add.len(),
            "a net added twice: {change:?}"
        );
        for net in &change.remove {
            assert!(!added.contains(net), "{net} both added and removed");
        }
        for e in &change.add {
            check_net(&e.net.to_string(), &e.net);
            let ttl = e.ttl.expect("CrowdSec entries expire");
            assert!(!ttl.is_zero() && ttl <= CROWDSEC_MAX_TTL, "ttl {ttl:?}");
        }
    }
}

/// Go's `time.ParseDuration`: a value reads back from its own nanoseconds, and the sign
/// flips the value.
pub fn go_duration(data: &[u8]) {
    // Tokens longer than any duration only retread the same loop.
    let Some(token) = text(&data[..data.len().min(256)]) else {
        return;
    };
    let Ok(nanos) = parse_go_duration(token) else {
        if let Err(GoDurationError::Empty) = parse_go_duration(token) {
            assert!(token.is_empty());
        }
        return;
    };
    let again = parse_go_duration(&format!("{nanos}ns"));
    assert_eq!(again, Ok(nanos), "`{token}` = {nanos}ns does not read back");
    let unsigned = token.strip_prefix(['+', '-']).unwrap_or(token);
    if !token.starts_with('-') && nanos != i64::MIN {
        assert_eq!(
            parse_go_duration(&format!("-{unsigned}")),
            Ok(-nanos),
            "`-{unsigned}` is not the negation of `{token}`"
        );
    }
}

#[cfg(test)]
mod target_list {
    use super::TARGETS;
    use std::path::Path;

    /// `cargo xtask fuzz` runs one target per `fuzz_targets/<name>.rs`: each must be in
    /// `TARGETS` (replayed on stable) and each of `TARGETS` must have its file. This runs as
    /// a test of this crate and of `api-shield/tests/fuzz_regressions.rs`, which includes this
    /// file, so the directory is looked up from either manifest.
    #[test]
    fn every_fuzz_target_file_is_in_targets_and_back() {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let dir = [
            manifest.join("fuzz_targets"),
            manifest.join("../fuzz/fuzz_targets"),
        ]
        .into_iter()
        .find(|d| d.is_dir())
        .expect("fuzz/fuzz_targets/");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .expect("read fuzz_targets/")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "rs"))
            .filter_map(|p| p.file_stem()?.to_str().map(str::to_owned))
            .collect();
        files.sort();
        let mut listed: Vec<String> = TARGETS.iter().map(|(n, _)| (*n).to_owned()).collect();
        listed.sort();
        assert_eq!(files, listed, "fuzz_targets/*.rs and TARGETS differ");
    }
}
