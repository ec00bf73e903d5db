//! The fail2ban action `dist/fail2ban/action.d/api-shield.conf`, run as fail2ban runs it:
//! its commands, with fail2ban's tags substituted, executed by `sh -c` against a real daemon
//! in a namespace lab, with real traffic checking that a ban drops and an unban restores.
//!
//! Needs root and the release binary (`API_SHIELD_BIN`, else `target/release/api-shield`).

use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tests::daemon::{Daemon, KERNEL_QUIET};
use tests::lab_env::Env;
use tests::netns::{BAD_V4, BAD_V6, COMMAND_TIMEOUT, Outcome, run};

/// Datagrams each client sends per exchange.
const N: u64 = 100;
/// The jail whose bans the test makes.
const JAIL: &str = "sshd";
/// The list that jail's bans go to.
const LIST: &str = "fail2ban-sshd";
/// Bans timed for the per-ban figure.
const TIMED_BANS: u8 = 20;

/// What only these tests ask of the shared lab.
trait Fail2banEnv {
    /// The blocked entries of the jail's list.
    fn listed(&self) -> Vec<Value>;
}

impl Fail2banEnv for Env {
    fn listed(&self) -> Vec<Value> {
        self.daemon
            .list(Some("blocked"))
            .into_iter()
            .filter(|e| e["origin"] == LIST)
            .collect()
    }
}

/// The action file, as fail2ban reads it: `[Definition]` and `[Init]` options.
struct Action {
    options: HashMap<String, String>,
}

impl Action {
    /// Reads the action file, pointing `socket` and `api_shield` at the test's daemon and binary.
    fn load(daemon: &Daemon) -> Action {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist/fail2ban/action.d/api-shield.conf");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let ini = parse_ini(&text);
        let definition = ini.get("Definition").expect("no [Definition] section");
        let init = ini.get("Init").expect("no [Init] section");
        for key in [
            "actionstart",
            "actionstop",
            "actioncheck",
            "actionban",
            "actionunban",
            "actionflush",
        ] {
            assert!(definition.contains_key(key), "no `{key}` in [Definition]");
        }
        for (key, default) in [
            ("socket", "/run/api-shield/api-shield.sock"),
            ("api_shield", "/usr/local/bin/api-shield"),
        ] {
            assert_eq!(
                init.get(key).map(String::as_str),
                Some(default),
                "[Init] {key}"
            );
        }
        let mut options: HashMap<String, String> = definition.clone();
        options.extend(init.clone());
        options.insert("socket".into(), path_str(&daemon.socket));
        options.insert("api_shield".into(), path_str(&daemon.bin));
        Action { options }
    }

    /// `command` with every tag substituted: the ticket's (`ip`, `bantime`), the jail's
    /// `name`, and the options, recursively as fail2ban does.
    fn command(&self, command: &str, ip: &str, bantime: i64) -> String {
        let mut tags = self.options.clone();
        tags.insert("ip".into(), ip.to_owned());
        tags.insert("bantime".into(), bantime.to_string());
        tags.insert("name".into(), JAIL.to_owned());
        let mut text = tags
            .get(command)
            .unwrap_or_else(|| panic!("no `{command}` in the action"))
            .clone();
        for _ in 0..10 {
            let next = substitute(&text, &tags);
            if next == text {
                break;
            }
            text = next;
        }
        if let Some(tag) = leftover_tag(&text) {
            panic!("`<{tag}>` left in `{command}`: {text}");
        }
        text
    }

    /// Runs `command` with `sh -c`, as fail2ban does.
    fn run(&self, command: &str, ip: &str, bantime: i64) -> Outcome {
        let script = self.command(command, ip, bantime);
        run(Command::new("sh").arg("-c").arg(&script), COMMAND_TIMEOUT)
    }

    /// Runs `command`, which must exit 0.
    fn ok(&self, command: &str, ip: &str, bantime: i64) {
        let out = self.run(command, ip, bantime);
        assert!(
            out.success(),
            "`{command}` for {ip} (bantime {bantime}) failed ({:?}):\n{}\nstderr: {}",
            out.code,
            self.command(command, ip, bantime),
            out.stderr.trim()
        );
    }
}

fn path_str(path: &Path) -> String {
    path.to_str().expect("a UTF-8 path").to_owned()
}

/// A tiny INI reader with fail2ban's (Python configparser's) rules where the action file
/// needs them: `[section]`, `key = value`, indented continuation lines joined by newlines,
/// whole-line `#` / `;` comments.
fn parse_ini(text: &str) -> HashMap<String, HashMap<String, String>> {
    let mut sections: HashMap<String, HashMap<String, String>> = HashMap::new();
    let mut section: Option<String> = None;
    let mut key: Option<String> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with(['#', ';']) {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            let (Some(s), Some(k)) = (&section, &key) else {
                panic!("line {}: a continuation line without a key", i + 1)
            };
            let value = sections
                .get_mut(s)
                .and_then(|opts| opts.get_mut(k))
                .expect("the key being continued");
            if !value.is_empty() {
                value.push('\n');
            }
            value.push_str(trimmed);
            continue;
        }
        if let Some(name) = trimmed.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            sections.entry(name.to_owned()).or_default();
            section = Some(name.to_owned());
            key = None;
            continue;
        }
        let Some((k, v)) = trimmed.split_once('=') else {
            panic!(
                "line {}: neither a section, an option nor a comment: {line}",
                i + 1
            )
        };
        let s = section
            .as_ref()
            .unwrap_or_else(|| panic!("line {}: an option outside any section", i + 1));
        let k = k.trim().to_owned();
        sections
            .get_mut(s)
            .expect("the current section")
            .insert(k.clone(), v.trim().to_owned());
        key = Some(k);
    }
    sections
}

/// The first `<tag>` in `text` naming a known tag: (start, end, tag).
fn find_tag<'t>(text: &'t str, tags: &HashMap<String, String>) -> Option<(usize, usize, &'t str)> {
    let mut from = 0;
    while let Some(open) = text[from..].find('<').map(|at| from + at) {
        if let Some(close) = text[open + 1..].find('>').map(|at| open + 1 + at) {
            let tag = &text[open + 1..close];
            if tags.contains_key(tag) {
                return Some((open, close + 1, tag));
            }
        }
        from = open + 1;
    }
    None
}

/// A `<tag>` (letters, digits, `_`, `-`, `.`) still in `text`.
fn leftover_tag(text: &str) -> Option<&str> {
    text.split('<').skip(1).find_map(|rest| {
        let (tag, _) = rest.split_once('>')?;
        let is_tag = !tag.is_empty()
            && tag
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        is_tag.then_some(tag)
    })
}

/// One pass replacing every known `<tag>` of `text`.
fn substitute(text: &str, tags: &HashMap<String, String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some((start, end, tag)) = find_tag(rest, tags) {
        out.push_str(&rest[..start]);
        out.push_str(&tags[tag]);
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

fn now_ms() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970");
    u64::try_from(since.as_millis()).expect("ms fit u64")
}

/// Runs `script` with `sh -c` (no polling: `output` waits for the exit), which must succeed;
/// returns its wall time.
fn timed(script: &str) -> Duration {
    let started = Instant::now();
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .output()
        .expect("run sh");
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "`{script}` failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    took
}

/// "median M ms (min A ms, max B ms)".
fn summary(times: &mut [Duration]) -> String {
    times.sort();
    let n = times.len();
    let median = (times[(n - 1) / 2] + times[n / 2]) / 2;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    format!(
        "median {:.2} ms (min {:.2} ms, max {:.2} ms)",
        ms(median),
        ms(times[0]),
        ms(times[n - 1])
    )
}

fn entries_for<'v>(listed: &'v [Value], net: &str) -> Vec<&'v Value> {
    listed.iter().filter(|e| e["net"] == net).collect()
}

#[test]
fn fail2ban_action_bans_and_unbans() {
    let env = Env::new(KERNEL_QUIET);
    let action = Action::load(&env.daemon);
    assert_eq!(env.exchange(false, N), (N, N), "the lab lost datagrams");

    action.ok("actionstart", "", 0);
    action.ok("actioncheck", "", 0);

    // A ban for 10 minutes.
    let bad = BAD_V4.to_string();
    let bad_net = format!("{bad}/32");
    let before = now_ms();
    action.ok("actionban", &bad, 600);
    let after = now_ms();
    let listed = env.listed();
    let entry = entries_for(&listed, &bad_net);
    assert_eq!(entry.len(), 1, "{bad_net} not listed in {LIST}: {listed:?}");
    assert_eq!(entry[0]["reason"], format!("fail2ban {JAIL}"), "{entry:?}");
    let expires = entry[0]["expires_at_ms"]
        .as_u64()
        .unwrap_or_else(|| panic!("a 600 s ban has no expiry: {entry:?}"));
    assert!(
        (before + 599_000..=after + 601_000).contains(&expires),
        "expiry {expires} is not 600 s after the ban ({before}..{after})"
    );
    assert_eq!(
        env.exchange(false, N),
        (N, 0),
        "the banned client's datagrams arrived"
    );

    // Banning again changes nothing.
    action.ok("actionban", &bad, 600);
    let listed = env.listed();
    assert_eq!(entries_for(&listed, &bad_net).len(), 1, "{listed:?}");
    assert_eq!(listed.len(), 1, "{listed:?}");

    // A prolonged ban (`bantime.increment`) gets the new expiry.
    let before = now_ms();
    action.ok("actionprolong", &bad, 1200);
    let after = now_ms();
    let listed = env.listed();
    let entry = entries_for(&listed, &bad_net);
    assert_eq!(entry.len(), 1, "{listed:?}");
    let expires = entry[0]["expires_at_ms"].as_u64().unwrap_or(0);
    assert!(
        (before + 1_199_000..=after + 1_201_000).contains(&expires),
        "after actionprolong with 1200 s, the expiry is {expires}, not 1200 s after \
         {before}..{after}: {entry:?}"
    );

    // 20 bans of 20 addresses, timed one by one as fail2ban runs them; beside them, as a
    // baseline, 20 `actioncheck` runs (sh and one `status` round trip to the daemon).
    let mut bans = Vec::new();
    let mut checks = Vec::new();
    for i in 1..=TIMED_BANS {
        let ip = format!("198.18.200.{i}");
        bans.push(timed(&action.command("actionban", &ip, 600)));
        checks.push(timed(&action.command("actioncheck", "", 0)));
    }
    eprintln!(
        "fail2ban: wall time per actionban (sh + api-shield block) over {TIMED_BANS} bans: {}; \
         per actioncheck (sh + api-shield status): {}",
        summary(&mut bans),
        summary(&mut checks),
    );
    assert_eq!(env.listed().len(), 1 + usize::from(TIMED_BANS));

    // Unbanning restores delivery; unbanning again is fine.
    action.ok("actionunban", &bad, 600);
    let listed = env.listed();
    assert!(entries_for(&listed, &bad_net).is_empty(), "{listed:?}");
    assert_eq!(
        env.exchange(false, N),
        (N, N),
        "delivery not restored by the unban"
    );
    action.ok("actionunban", &bad, 600);

    // An unban from the jail's list leaves a block of the same address by the CLI alone.
    env.daemon.ok(&["block", &bad, "--reason", "operator"]);
    action.ok("actionban", &bad, 600);
    action.ok("actionunban", &bad, 600);
    let blocked = env.daemon.list(Some("blocked"));
    assert!(
        blocked
            .iter()
            .any(|e| e["net"] == bad_net.as_str() && e["origin"] == "cli"),
        "the fail2ban unban removed the CLI's block: {blocked:?}"
    );
    assert_eq!(
        env.exchange(false, N),
        (N, 0),
        "the CLI's block stopped working"
    );
    env.daemon.ok(&["unblock", &bad]);
    assert_eq!(env.exchange(false, N), (N, N));

    // A permanent ban (bantime -1), over IPv6: no expiry.
    assert_eq!(env.exchange(true, N), (N, N), "the lab lost IPv6 datagrams");
    let bad6 = BAD_V6.to_string();
    let bad6_net = format!("{bad6}/128");
    action.ok("actionban", &bad6, -1);
    let listed = env.listed();
    let entry = entries_for(&listed, &bad6_net);
    assert_eq!(entry.len(), 1, "{bad6_net} not listed: {listed:?}");
    assert!(
        entry[0]["expires_at_ms"].is_null(),
        "a permanent ban has an expiry: {entry:?}"
    );
    assert_eq!(
        env.exchange(true, N),
        (N, 0),
        "the permanently banned client got through"
    );

    // Flush (jail stop): the whole list goes, and again is fine; stop itself does nothing.
    action.ok("actionflush", "", 0);
    let listed = env.listed();
    assert!(listed.is_empty(), "left after actionflush: {listed:?}");
    assert_eq!(
        env.exchange(true, N),
        (N, N),
        "delivery not restored by the flush"
    );
    action.ok("actionflush", "", 0);
    action.ok("actionstop", "", 0);
}
