//! `api-shield import` as a member of the control group would attack it: the daemon (root)
//! never opens a path a client names, a stalled pipe never stalls the daemon, and oversize,
//! endless, cut-off or non-text input is refused whole with the old lists still enforced.

use serde_json::Value;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tests::daemon::{Daemon, KERNEL_QUIET};
use tests::lab_env::Env;
use tests::proc::Proc;

/// `nobody` and `nogroup` on Debian.
const NOBODY: u32 = 65_534;
const NOGROUP: u32 = 65_534;
const N: u64 = 50;
/// The cap the tests configure, small enough to cross with a test file.
const MAX_BYTES: usize = 4096;
/// Long enough for the checks made while a pipe is stalled.
const READ_TIMEOUT_SECS: u64 = 4;
/// What `status` or `block` may take while an import is pending: far below the read timeout.
const RESPONSIVE: Duration = Duration::from_millis(1500);
/// Text only the root-only file holds.
const SECRET: &str = "root-only-secret-line";

fn config() -> String {
    format!(
        "control_group = \"nogroup\"\n\
         {KERNEL_QUIET}\
         [import]\nmax_bytes = {MAX_BYTES}\nread_timeout = \"{READ_TIMEOUT_SECS}s\"\n"
    )
}

/// The shared lab with the daemon's directory open to `nobody`.
fn start() -> Env {
    let env = Env::new(&config()).with_probes(N);
    // Lets `nobody` reach the socket (0660, group nogroup) and the files it may read.
    std::fs::set_permissions(&env.daemon.dir, std::fs::Permissions::from_mode(0o755))
        .expect("chmod the daemon's directory");
    env
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

#[test]
fn import_reads_as_the_caller_and_never_as_root() {
    let env = start();
    let d = &env.daemon;
    let secret = env.file_with_mode(
        "secret.txt",
        format!("198.18.9.9\n{SECRET}\n").as_bytes(),
        0o600,
    );
    let out = d.cli_as(
        NOBODY,
        NOGROUP,
        &[
            "import",
            path_str(&secret),
            "--list",
            "x",
            "--skip-invalid",
            "--json",
        ],
    );
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(
        out.stderr.contains("cannot read") && out.stderr.contains("ermission denied"),
        "{out:?}"
    );
    assert!(
        !out.stdout.contains(SECRET) && !out.stderr.contains(SECRET),
        "a root-only file's content reached the caller: {out:?}"
    );
    assert!(!env.list_names().contains(&"x".to_owned()));

    // What the caller may read imports, named by its path.
    let readable = env.file_with_mode(
        "readable.txt",
        format!("{}\n", env.lab.bad.v4).as_bytes(),
        0o644,
    );
    let out = d.cli_as(
        NOBODY,
        NOGROUP,
        &["import", path_str(&readable), "--list", "x", "--json"],
    );
    assert!(out.success(), "{out:?}");
    let body: Value = serde_json::from_str(&out.stdout).expect("import prints JSON");
    assert_eq!(body["entries"], 1, "{body}");
    assert_eq!(body["source"], path_str(&readable), "{body}");
    assert_eq!(
        env.probe(&env.lab.bad, false),
        0,
        "the imported list is not enforced"
    );

    // The audit trail says who imported what, and how much.
    let audited: Vec<Value> = d
        .audit_records()
        .into_iter()
        .filter(|r| r["op"] == "import")
        .collect();
    let last = audited.last().expect("the import is audited");
    assert_eq!(last["uid"], NOBODY, "{last}");
    assert_eq!(last["args"]["source"], path_str(&readable), "{last}");
    assert!(last["args"]["bytes"].as_u64().is_some(), "{last}");
}

/// `import - --list piped` reading from a pipe the test holds, with `first` already written.
fn piped_import(d: &Daemon, extra: &[&str], first: &[u8]) -> (Proc, std::process::ChildStdin) {
    let mut args = vec!["import", "-", "--list", "piped"];
    args.extend_from_slice(extra);
    let mut child = d
        .cli_command(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the import");
    let mut stdin = child.stdin.take().expect("the import's stdin");
    let importer = Proc {
        name: "import from a pipe",
        child,
    };
    stdin.write_all(first).expect("first bytes");
    (importer, stdin)
}

#[test]
fn a_stalled_pipe_never_stalls_the_daemon_and_stdin_imports() {
    let env = start();
    let d = &env.daemon;
    let (mut importer, mut stdin) = piped_import(d, &["--json"], b"# from a pipe\n");

    // The import is pending: the daemon answers and changes state meanwhile.
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    assert_eq!(d.status()["attached"], true);
    d.ok(&["block", "198.18.6.6"]);
    let took = started.elapsed();
    assert!(
        took < RESPONSIVE,
        "status and block took {took:?} while an import was pending"
    );

    stdin
        .write_all(format!("{}\n", env.lab.bad.v4).as_bytes())
        .expect("the rest");
    drop(stdin);
    let out = importer.child.wait_with_output_bounded();
    assert_eq!(out.0, Some(0), "{out:?}");
    let body: Value = serde_json::from_str(&out.1).expect("import prints JSON");
    assert_eq!(body["entries"], 1, "{body}");
    assert_eq!(body["source"], "stdin", "{body}");
    assert_eq!(
        env.probe(&env.lab.bad, false),
        0,
        "the piped list is not enforced"
    );

    // A pipe that stops sending is dropped after the read timeout; the list stays as it was.
    let before = env.lists();
    let (mut stalled, stdin) = piped_import(d, &[], b"198.18.6.7\n");
    let started = Instant::now();
    let out = stalled.child.wait_with_output_bounded();
    drop(stdin);
    assert_eq!(out.0, Some(2), "{out:?}");
    assert!(
        out.2
            .contains(&format!("no data arrived for {READ_TIMEOUT_SECS}s")),
        "{out:?}"
    );
    assert!(started.elapsed() >= Duration::from_secs(READ_TIMEOUT_SECS));
    assert_eq!(env.lists(), before, "a stalled import changed the lists");
    assert_eq!(env.probe(&env.lab.bad, false), 0);
}

#[test]
fn oversize_endless_cut_and_binary_imports_change_nothing() {
    let env = start();
    let d = &env.daemon;
    let kept = env.file_with_mode(
        "kept.txt",
        format!("{}\n", env.lab.bad.v4).as_bytes(),
        0o644,
    );
    d.ok(&["import", path_str(&kept), "--list", "kept"]);
    let before = env.lists();

    let mut big = String::new();
    let mut i = 0u32;
    while big.len() <= MAX_BYTES {
        big.push_str(&format!("198.19.{}.{}\n", i / 256, i % 256));
        i += 1;
    }
    let big = env.file_with_mode("big.txt", big.as_bytes(), 0o644);
    let binary = env.file_with_mode("binary.txt", b"198.18.9.1\n\xff\xfe\n", 0o644);
    let refusals: [(&[&str], &str); 3] = [
        (
            &["import", path_str(&big), "--list", "kept"],
            "larger than 4096 bytes",
        ),
        (
            &["import", "/dev/zero", "--list", "kept"],
            "larger than 4096 bytes",
        ),
        (
            &["import", path_str(&binary), "--list", "kept"],
            "not UTF-8 text",
        ),
    ];
    for (args, named) in refusals {
        let out = d.cli(args);
        assert_eq!(out.code, Some(2), "{args:?}: {out:?}");
        assert!(out.stderr.contains(named), "{args:?}: {out:?}");
        assert!(out.stderr.contains("nothing was applied"), "{out:?}");
        assert_eq!(env.lists(), before, "{args:?} changed the lists");
    }

    // A client that stops before the end of its list (killed, or its read failed).
    let mut cut = b"{\"op\":\"import\",\"list\":\"kept\"}\n".to_vec();
    let frame = b"198.18.9.2\n";
    cut.extend_from_slice(&u32::try_from(frame.len()).unwrap().to_be_bytes());
    cut.extend_from_slice(frame);
    let answer = d.raw_request(&cut);
    assert_eq!(answer["code"], "invalid_input", "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap_or("")
            .contains("stopped before the end of the list"),
        "{answer}"
    );
    // An import request with a path, as older clients sent, is refused naming the field.
    let answer = d.raw_request(b"{\"op\":\"import\",\"list\":\"kept\",\"path\":\"/etc/shadow\"}\n");
    assert_eq!(answer["code"], "invalid_input", "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap_or("")
            .contains("unknown field `path`"),
        "{answer}"
    );
    assert_eq!(env.lists(), before, "a cut import changed the lists");
    assert_eq!(
        env.probe(&env.lab.bad, false),
        0,
        "the kept list stopped enforcing"
    );
    let failed = d
        .audit_records()
        .into_iter()
        .filter(|r| r["op"] == "import" && r["result"] == "error")
        .count();
    assert!(failed >= 4, "refused imports are audited: {failed}");
}

/// A pipe whose producer failed half-way ends like a complete list: an import that would empty
/// a list or take more than half of it away is refused unless `--allow-shrink` says it is meant.
#[test]
fn an_import_that_shrinks_a_list_by_half_is_held_back_unless_allowed() {
    let env = start();
    let d = &env.daemon;
    let mut full = format!("{}\n", env.lab.bad.v4);
    for i in 0..9 {
        full.push_str(&format!("198.19.3.{i}\n"));
    }
    let full = env.file_with_mode("full.txt", full.as_bytes(), 0o644);
    d.ok(&["import", path_str(&full), "--list", "cut"]);
    let before = env.lists();
    let cut = env.file_with_mode("cut.txt", b"198.19.3.0\n198.19.3.1\n", 0o644);
    let out = d.cli(&["import", path_str(&cut), "--list", "cut"]);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(
        out.stderr.contains("from 10 to 2 entries") && out.stderr.contains("--allow-shrink"),
        "{out:?}"
    );
    assert_eq!(env.lists(), before, "a held-back import changed the lists");
    assert_eq!(
        env.probe(&env.lab.bad, false),
        0,
        "the full list stopped enforcing"
    );
    let out = d.cli(&[
        "import",
        path_str(&cut),
        "--list",
        "cut",
        "--allow-shrink",
        "--json",
    ]);
    assert!(out.success(), "{out:?}");
    assert_eq!(
        env.probe(&env.lab.bad, false),
        N,
        "the shrunk list is not the one enforced"
    );
}

/// Outside text (block reasons, ipset comments) with terminal escapes, bidirectional overrides
/// or over 256 characters is refused naming what is wrong, and changes nothing.
#[test]
fn outside_text_is_refused_naming_what_is_wrong() {
    let env = start();
    let d = &env.daemon;
    for reason in [
        "\u{1b}[2J\u{1b}[31mred",
        "evil\u{202E}txt.exe",
        "line\nforged",
    ] {
        let out = d.cli(&["block", "198.18.9.5", "--reason", reason]);
        assert_eq!(out.code, Some(2), "{reason:?}: {out:?}");
        assert!(out.stderr.contains("control character"), "{out:?}");
    }
    let long = "r".repeat(257);
    let out = d.cli(&["block", "198.18.9.5", "--reason", &long]);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("at most 256"), "{out:?}");
    assert!(
        d.list(None).is_empty(),
        "a refused reason changed the lists"
    );

    let escape = env.file_with_mode(
        "escape.ipset",
        b"create s hash:ip family inet timeout 0\nadd s 198.18.9.3 comment \"\x1b]0;owned\x07\"\n",
        0o644,
    );
    let huge = format!(
        "create s hash:ip family inet timeout 0\nadd s 198.18.9.4 comment \"{}\"\n",
        "c".repeat(3000)
    );
    let huge = env.file_with_mode("huge.ipset", huge.as_bytes(), 0o644);
    for (file, named) in [
        (&escape, "comment holds a control character"),
        (&huge, "at most 256"),
    ] {
        let out = d.cli(&["import", path_str(file), "--list", "s", "--format", "ipset"]);
        assert_eq!(out.code, Some(2), "{out:?}");
        assert!(out.stderr.contains(named), "{out:?}");
        assert!(out.stderr.contains(":2"), "the line is named: {out:?}");
        assert!(
            !out.stderr.contains('\u{1b}'),
            "the refusal echoed the escape: {out:?}"
        );
    }
    assert!(!env.list_names().contains(&"s".to_owned()));
}

/// Waiting on a child with a bound, since a test must not hang on a stuck CLI.
trait BoundedWait {
    /// (exit code, stdout, stderr), waiting at most the command timeout.
    fn wait_with_output_bounded(&mut self) -> (Option<i32>, String, String);
}

impl BoundedWait for std::process::Child {
    fn wait_with_output_bounded(&mut self) -> (Option<i32>, String, String) {
        use std::io::Read;
        let deadline = Instant::now() + tests::netns::COMMAND_TIMEOUT;
        loop {
            match self.try_wait().expect("wait for the CLI") {
                Some(status) => {
                    let mut out = String::new();
                    let mut err = String::new();
                    if let Some(mut o) = self.stdout.take() {
                        o.read_to_string(&mut out).expect("stdout");
                    }
                    if let Some(mut e) = self.stderr.take() {
                        e.read_to_string(&mut err).expect("stderr");
                    }
                    return (status.code(), out, err);
                }
                None if Instant::now() > deadline => panic!("the CLI did not finish in time"),
                None => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}
