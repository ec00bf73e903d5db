//! What the daemon writes under `state_dir` (and its audit log and lock) cannot be redirected
//! by what the service user plants there; one daemon per interface; `run_as` problems found
//! before the start instead of at the first reload.
//!
//! The real binary on a lab's server interface, as in the other end-to-end tests. The service
//! user is `nobody`: after a run with `run_as = "nobody"` it owns `state_dir`, so every link
//! planted here is one it could have planted. Each link points at a root-owned "canary" file
//! outside `state_dir` that must come out unchanged: content, owner and mode.
//! Needs root and the release binary (`API_SHIELD_BIN`, else `target/release/api-shield`).

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, chown, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use tests::daemon::{Daemon, binary};
use tests::netns::{COMMAND_TIMEOUT, Lab, Outcome, run};

const RUN_AS_NOBODY: &str = "run_as = \"nobody\"\n";
/// `nobody` on Debian.
const NOBODY: u32 = 65_534;
const CANARY_TEXT: &str = "root:only:a file the daemon must never write\n";
const CANARY_MODE: u32 = 0o600;
const MODE_BITS: u32 = 0o7777;

/// A root-owned file outside `state_dir`, the target of every planted link.
struct Canary {
    path: PathBuf,
}

impl Canary {
    fn new(daemon: &Daemon) -> Canary {
        let path = daemon.dir.join("canary");
        fs::write(&path, CANARY_TEXT).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(CANARY_MODE)).unwrap();
        Canary { path }
    }

    fn plant_at(&self, link: &Path) {
        symlink(&self.path, link)
            .unwrap_or_else(|e| panic!("plant a link at {}: {e}", link.display()));
    }

    fn assert_untouched(&self, when: &str) {
        let text = fs::read_to_string(&self.path).unwrap();
        assert_eq!(text, CANARY_TEXT, "{when}: the canary was written");
        let meta = fs::metadata(&self.path).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid()),
            (0, 0),
            "{when}: the canary changed owner"
        );
        assert_eq!(meta.permissions().mode() & MODE_BITS, CANARY_MODE, "{when}");
    }
}

fn snapshot_dir(d: &Daemon) -> PathBuf {
    d.dir.join("state").join(&d.iface)
}

fn blocked(d: &Daemon) -> Vec<String> {
    let mut nets: Vec<String> = d
        .list(Some("blocked"))
        .iter()
        .map(|e| e["net"].as_str().unwrap_or_default().to_owned())
        .collect();
    nets.sort();
    nets
}

fn is_link(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

fn last_start(d: &Daemon) -> Value {
    d.audit_records()
        .into_iter()
        .rev()
        .find(|r| r["op"] == "start")
        .unwrap_or_else(|| panic!("no start record in the audit log"))
}

fn assert_failed_start_audited(d: &Daemon, naming: &str) {
    let record = last_start(d);
    assert_eq!(record["result"], "error", "{record}");
    assert!(
        record["detail"]
            .as_str()
            .unwrap_or_default()
            .contains(naming),
        "the failed start's record does not name {naming}: {record}"
    );
}

fn check_config(config: &Path) -> Outcome {
    run(
        Command::new(binary()).arg("check-config").arg(config),
        COMMAND_TIMEOUT,
    )
}

/// Links at every temporary name the daemon writes through (and at the file name of a list
/// that does not exist yet), plus a crash's leftover: the root start, the hand-over to
/// `nobody` and the writes after it replace them, and the canary is untouched.
#[test]
fn links_planted_at_temporary_names_never_redirect_a_write() {
    let lab = Lab::new();
    let mut d = Daemon::start(&lab, RUN_AS_NOBODY);
    d.ok(&["block", "198.18.200.1"]);
    d.ok(&["block", "198.18.200.2", "--list", "manual"]);
    d.kill9();
    let canary = Canary::new(&d);
    let snap = snapshot_dir(&d);
    let links = [
        "index.json.tmp",
        "origins/cli.json.tmp",
        "origins/fresh.json",
        "origins/fresh.json.tmp",
    ];
    for name in links {
        canary.plant_at(&snap.join(name));
    }
    let leftover = snap.join("origins/manual.json.tmp");
    fs::write(&leftover, "{\"half\": ").unwrap();
    chown(&leftover, Some(NOBODY), Some(NOBODY)).unwrap();

    // As root: restore, write every file again, hand the tree to `nobody`.
    d.spawn();
    canary.assert_untouched("after a root start");
    assert_eq!(blocked(&d), ["198.18.200.1/32", "198.18.200.2/32"]);
    // As `nobody`: a list whose file name and temporary name hold links.
    d.ok(&["block", "198.18.200.3", "--list", "fresh"]);
    canary.assert_untouched("after a write as the service user");
    let fresh = snap.join("origins/fresh.json");
    assert!(
        !is_link(&fresh),
        "the link at {} is still there",
        fresh.display()
    );
    let text = fs::read_to_string(&fresh).unwrap();
    assert!(text.contains("198.18.200.3"), "{text}");
    for name in [
        "index.json.tmp",
        "origins/cli.json.tmp",
        "origins/fresh.json.tmp",
    ] {
        assert!(!is_link(&snap.join(name)), "{name} is still a link");
    }
    assert!(
        fs::symlink_metadata(&leftover).is_err(),
        "the leftover temporary file is still there"
    );

    // And once more as root, over files `nobody` now owns.
    d.kill9();
    canary.plant_at(&snap.join("index.json.tmp"));
    d.spawn();
    canary.assert_untouched("after a second root start");
    assert_eq!(
        blocked(&d),
        ["198.18.200.1/32", "198.18.200.2/32", "198.18.200.3/32"]
    );
}

/// A link in place of a file the daemon reads or appends to at start (the snapshot index, a
/// list's file, the `origins` directory, the audit log, the lock file) is refused with a
/// message naming it; the canary is untouched and the start is audited as failed.
#[test]
fn links_planted_at_the_files_themselves_are_refused_at_start() {
    let lab = Lab::new();
    let mut d = Daemon::start(&lab, RUN_AS_NOBODY);
    d.ok(&["block", "198.18.201.1"]);
    d.kill9();
    let canary = Canary::new(&d);
    let snap = snapshot_dir(&d);
    let elsewhere = d.dir.join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    let audit = d.dir.join("audit.jsonl");
    let cases = [
        (snap.join("index.json"), None),
        (snap.join("origins/cli.json"), None),
        (snap.join("daemon.lock"), None),
        (snap.join("origins"), Some(&elsewhere)),
        (audit.clone(), None),
    ];
    for (path, target) in cases {
        let kept = path.with_extension("kept");
        fs::rename(&path, &kept).unwrap();
        match target {
            Some(dir) => symlink(dir, &path).unwrap(),
            None => canary.plant_at(&path),
        }
        let out = d.run_expecting_refusal(&d.socket);
        let err = out.stderr;
        assert!(
            err.contains(&path.display().to_string()) && err.contains("symbolic link"),
            "the refusal does not name the link {}: {err}",
            path.display()
        );
        canary.assert_untouched(&path.display().to_string());
        assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 0);
        fs::remove_file(&path).unwrap();
        fs::rename(&kept, &path).unwrap();
        if path != audit {
            assert_failed_start_audited(&d, &path.display().to_string());
        }
    }
    d.spawn();
    assert_eq!(blocked(&d), ["198.18.201.1/32"]);
}

/// The snapshot's index is input like any other: a list name in it that is not a valid list
/// name (here one that climbs out of `state_dir` to a file the test put there) is refused
/// before it becomes a path.
#[test]
fn a_list_name_in_the_index_cannot_leave_state_dir() {
    let lab = Lab::new();
    let mut d = Daemon::start(&lab, "");
    d.ok(&["block", "198.18.202.1"]);
    d.kill9();
    let snap = snapshot_dir(&d);
    let cli = fs::read_to_string(snap.join("origins/cli.json")).unwrap();
    // `state/<iface>/origins/../../../escape.json` is the daemon's temp dir.
    let escape = d.dir.join("escape.json");
    fs::write(&escape, cli.replace("198.18.202.1", "198.18.202.99")).unwrap();
    let index_path = snap.join("index.json");
    let original = fs::read_to_string(&index_path).unwrap();
    let mut index: Value = serde_json::from_str(&original).unwrap();
    let meta = index["lists"]["cli"].clone();
    index["lists"]
        .as_object_mut()
        .unwrap()
        .insert("../../../escape".into(), meta);
    fs::write(&index_path, index.to_string()).unwrap();

    let out = d.run_expecting_refusal(&d.socket);
    assert!(
        out.stderr.contains("../../../escape") && out.stderr.contains("list name"),
        "{}",
        out.stderr
    );
    assert_failed_start_audited(&d, "../../../escape");
    fs::write(&index_path, original).unwrap();
    d.spawn();
    assert_eq!(blocked(&d), ["198.18.202.1/32"]);
}

/// Entries the service user writes into the snapshot pass the rules fresh input passes: host
/// bits, IPv4-mapped form, an allow in a named list, an expiry beyond `max_ttl` and a reason
/// with a terminal escape are each left out, logged and audited; the valid entries stay
/// enforced, and a list's source is shown escaped.
#[test]
fn restored_entries_pass_the_input_rules() {
    let lab = Lab::new();
    let mut d = Daemon::start(&lab, "");
    d.ok(&[
        "block",
        "198.18.204.1",
        "--list",
        "feed",
        "--reason",
        "kept",
    ]);
    d.ok(&["block", "198.18.204.2"]);
    d.kill9();
    let origins = snapshot_dir(&d).join("origins");
    let feed_path = origins.join("feed.json");
    let mut feed: Value = serde_json::from_str(&fs::read_to_string(&feed_path).unwrap()).unwrap();
    let template = feed["entries"][0].clone();
    let planted = [
        ("198.18.204.7/24", "block", None, None),
        ("::ffff:198.18.204.8/128", "block", None, None),
        ("198.18.204.9/32", "allow", None, None),
        ("198.18.204.10/32", "block", Some(u64::MAX / 2), None),
        ("198.18.204.11/32", "block", None, Some("\u{1b}[31mred")),
    ];
    let entries = feed["entries"].as_array_mut().unwrap();
    for (net, action, expires, reason) in planted {
        let mut e = template.clone();
        e["net"] = net.into();
        e["action"] = action.into();
        if let Some(at) = expires {
            e["expires_at_ms"] = at.into();
        }
        e["reason"] = reason.map_or(Value::Null, Value::from);
        if reason.is_none() {
            e.as_object_mut().unwrap().remove("reason");
        }
        entries.push(e);
    }
    feed["meta"]["source"] = "\u{1b}]0;pwned\u{7}".into();
    fs::write(&feed_path, feed.to_string()).unwrap();

    d.spawn();
    assert_eq!(blocked(&d), ["198.18.204.1/32", "198.18.204.2/32"]);
    assert!(
        d.list(Some("allowed")).is_empty(),
        "an allow entry planted in a named list was restored"
    );
    let refused: Vec<Value> = d
        .audit_records()
        .into_iter()
        .filter(|r| r["op"] == "restore_refused")
        .collect();
    let mut nets: Vec<&str> = refused
        .iter()
        .map(|r| r["args"]["net"].as_str().unwrap_or_default())
        .collect();
    nets.sort_unstable();
    assert_eq!(
        nets,
        [
            "198.18.204.10/32",
            "198.18.204.11/32",
            "198.18.204.7/24",
            "198.18.204.9/32",
            "::ffff:198.18.204.8/128"
        ],
        "{refused:?}"
    );
    let why = |net: &str| {
        refused
            .iter()
            .find(|r| r["args"]["net"] == net)
            .map(|r| r["detail"].as_str().unwrap_or_default().to_owned())
            .unwrap_or_default()
    };
    assert!(why("198.18.204.7/24").contains("host bits"), "{refused:?}");
    assert!(why("198.18.204.10/32").contains("max_ttl"), "{refused:?}");
    assert!(
        why("198.18.204.11/32").contains("control character"),
        "{refused:?}"
    );
    let lists = d.ok(&["lists"]).stdout;
    assert!(
        !lists.contains('\u{1b}') && !lists.contains('\u{7}'),
        "{lists:?}"
    );
    assert!(lists.contains("\\u{001B}]0;pwned"), "{lists}");
}

/// A second `run` on the interface (its own control socket, so that is not what stops it)
/// exits non-zero naming the first daemon's pid, changes nothing, and is audited as failed.
#[test]
fn a_second_daemon_on_the_same_interface_is_refused_naming_the_first() {
    let lab = Lab::new();
    let d = Daemon::start(&lab, "");
    d.ok(&["block", "198.18.203.1", "198.18.203.2"]);
    d.ok(&["block", "198.18.203.9", "--list", "manual"]);
    let before = d.list(None);
    let index = snapshot_dir(&d).join("index.json");
    let index_before = fs::read(&index).unwrap();
    let first = d.pid().expect("the first daemon runs");
    let program = d.status()["program_id"].clone();

    let out = d.run_expecting_refusal(&d.dir.join("second.sock"));
    assert!(
        out.stderr.contains(&format!("pid {first}")),
        "the refusal does not name the first daemon (pid {first}): {}",
        out.stderr
    );
    assert_eq!(d.list(None), before, "the first daemon's lists changed");
    assert_eq!(
        fs::read(&index).unwrap(),
        index_before,
        "the snapshot changed"
    );
    assert_eq!(
        d.status()["program_id"],
        program,
        "the program was replaced"
    );
    assert_failed_start_audited(&d, &format!("pid {first}"));
    // The first daemon still works.
    d.ok(&["block", "198.18.203.3"]);
    assert_eq!(d.list(None).len(), before.len() + 1);
}

/// `run_as` naming no user, and a key the user cannot read (it would be re-read at the first
/// SIGHUP): `check-config` exits 2 naming it, `run` refuses before touching the kernel and
/// audits the failed start; once the key is readable by the user, both accept the config.
#[test]
fn run_as_problems_are_found_by_check_config_and_refused_by_run() {
    let lab = Lab::new();
    let mut d = Daemon::prepare(&lab, "run_as = \"no-such-user-api-shield\"\n");
    let out = check_config(&d.config);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(
        out.stderr.contains("no-such-user-api-shield"),
        "{}",
        out.stderr
    );
    let out = d.run_expecting_refusal(&d.socket);
    assert!(
        out.stderr.contains("no-such-user-api-shield"),
        "{}",
        out.stderr
    );
    assert_failed_start_audited(&d, "no-such-user-api-shield");
    assert!(
        !d.pin_dir().exists(),
        "the refused start loaded the program"
    );

    // The same daemon, now as `nobody` with a gateway whose TLS key only root can read.
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert, key, policy) = (
        d.dir.join("cert.pem"),
        d.dir.join("key.pem"),
        d.dir.join("policy.toml"),
    );
    fs::write(&cert, generated.cert.pem()).unwrap();
    fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(&policy, "[[routes]]\nname = \"api\"\npath_prefix = \"/\"\n").unwrap();
    let config = fs::read_to_string(&d.config).unwrap().replace(
        "run_as = \"no-such-user-api-shield\"",
        &format!(
            "run_as = \"nobody\"\n[gateway]\npolicy_file = \"{}\"\n\
             default_upstream = \"http://127.0.0.1:8081\"\n\
             [[gateway.listeners]]\nlisten = \"127.0.0.1:8443\"\n\
             tls_cert = \"{}\"\ntls_key = \"{}\"",
            policy.display(),
            cert.display(),
            key.display()
        ),
    );
    fs::write(&d.config, config).unwrap();
    let key_named = key.display().to_string();
    let out = check_config(&d.config);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(
        out.stderr.contains(&key_named) && out.stderr.contains("nobody"),
        "{}",
        out.stderr
    );
    let out = d.run_expecting_refusal(&d.socket);
    assert!(out.stderr.contains(&key_named), "{}", out.stderr);
    assert_failed_start_audited(&d, &key_named);
    assert!(
        !d.pin_dir().exists(),
        "the refused start loaded the program"
    );

    chown(&key, Some(NOBODY), None).unwrap();
    let out = check_config(&d.config);
    assert_eq!(out.code, Some(0), "{out:?}");
    d.spawn();
    assert_eq!(last_start(&d)["result"], "ok");
}
