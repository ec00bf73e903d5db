//! What each CLI verb does. Client verbs validate their input locally first (so a typo is
//! reported with exit code 2 even when the daemon is down) and then ask the daemon.

use crate::cli::{
    BlockArgs, Cli, Command, DetachArgs, InventoryAction, InventoryArgs, LogFormat, RunArgs,
    TopArgs, XdpMode,
};
use crate::config::load_config;
use crate::control::{
    self, CounterBody, ListedBody, ListsRowBody, ReloadBody, Request, Response, StatsBody,
    protocol::EXIT_REFUSED,
};
use crate::daemon::{self, RunOptions, instance_lock};
use crate::kernel::loader::{self, AttachMode};
use crate::parse::{parse_duration, parse_net};
use api_shield_common::verdict;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub fn dispatch(cli: Cli) -> ExitCode {
    let socket = cli.socket;
    match cli.command {
        Command::Run(args) => run(args, socket),
        Command::Detach(args) => detach(&args),
        Command::CheckConfig(args) => check_config(&args.file),
        Command::Status(o) => ask(&socket, &Request::Status, o.json, print_status),
        Command::Reload(o) => ask(&socket, &Request::Reload, o.json, print_reload),
        Command::Stats(o) => ask(&socket, &Request::Stats, o.json, print_stats),
        Command::List(l) => ask(
            &socket,
            &Request::List {
                action: l.kind.map(Into::into),
                origin: l.origin,
            },
            l.json,
            print_list,
        ),
        Command::Lists(o) => ask(&socket, &Request::Lists, o.json, print_lists),
        Command::Import(i) => import(&socket, i),
        Command::Flush(f) => ask(
            &socket,
            &Request::Flush { list: f.list },
            false,
            print_change,
        ),
        Command::Block(b) => block(&socket, b),
        Command::Unblock(a) => {
            let list = a.list;
            change(&socket, a.addrs, |nets| Request::Unblock { nets, list })
        }
        Command::Top(t) => top(socket, &t),
        Command::Allow(a) => change(&socket, a.addrs, |nets| Request::Allow { nets }),
        Command::Unallow(a) => change(&socket, a.addrs, |nets| Request::Unallow { nets }),
        Command::Inventory(i) => inventory(&socket, i),
    }
}

/// `inventory`: the endpoints as a table or JSON; `inventory export --openapi`: the document.
fn inventory(socket: &Path, i: InventoryArgs) -> ExitCode {
    match i.action {
        Some(InventoryAction::Export(e)) => {
            let host = e.host.or(i.host);
            ask(
                socket,
                &Request::InventoryExport { host },
                true,
                print_change,
            )
        }
        None => ask(
            socket,
            &Request::Inventory { host: i.host },
            i.json,
            print_inventory,
        ),
    }
}

fn print_inventory(body: &Value) {
    // An answer of another shape (a newer daemon) prints as no rows; `--json` shows it all.
    let rows: Vec<crate::inventory::EndpointRow> =
        serde_json::from_value(body.clone()).unwrap_or_default();
    let now = crate::kernel::clock::now_unix_ms();
    print!("{}", crate::inventory::render_table(&rows, now));
}

/// `run`: the daemon, on a runtime of its own, until SIGTERM or SIGINT.
fn run(args: RunArgs, socket: PathBuf) -> ExitCode {
    init_tracing(args.log_format);
    let opts = RunOptions {
        iface: args.iface,
        config_path: args.config,
        attach_mode: match args.xdp_mode {
            XdpMode::Auto => AttachMode::Auto,
            XdpMode::Native => AttachMode::Native,
            XdpMode::Skb => AttachMode::Skb,
        },
        socket,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(1, &format!("starting the runtime: {e}")),
    };
    match runtime.block_on(daemon::run(opts, std::future::pending())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(1, &format!("{e:#}")),
    }
}

/// `detach`: refused while a daemon manages the interface, unless `--force`.
fn detach(args: &DetachArgs) -> ExitCode {
    let config = match args.config.as_deref().map(load_config).transpose() {
        Ok(c) => c.unwrap_or_default(),
        Err(e) => return fail(EXIT_REFUSED, &e.to_string()),
    };
    match instance_lock::holder(&config.state_dir, &args.iface) {
        Ok(None) => {}
        Ok(Some(pid)) if args.force => eprintln!(
            "api-shield: warning: detaching {} while its daemon{} runs: it stays up but \
             enforces nothing (its status shows attached=false) until it is restarted",
            args.iface,
            pid.map(|p| format!(" (pid {p})")).unwrap_or_default(),
        ),
        Ok(Some(pid)) => {
            return fail(
                EXIT_REFUSED,
                &format!(
                    "refusing to detach {}: the api-shield daemon{} manages it and would \
                     keep running while enforcing nothing; stop the daemon first, or pass \
                     --force",
                    args.iface,
                    pid.map(|p| format!(" (pid {p})")).unwrap_or_default(),
                ),
            );
        }
        Err(e) => return fail(1, &format!("cannot tell whether a daemon runs: {e}")),
    }
    match loader::detach(&args.iface, &config.pin_root) {
        Ok(true) => {
            println!("detached api-shield from {} (snapshot kept)", args.iface);
            ExitCode::SUCCESS
        }
        Ok(false) => {
            println!("api-shield was not attached to {}", args.iface);
            ExitCode::SUCCESS
        }
        Err(e) => fail(1, &e.to_string()),
    }
}

/// `block`: the lifetime and every address checked here first.
fn block(socket: &Path, b: BlockArgs) -> ExitCode {
    let ttl_secs = match b.ttl.as_deref().map(parse_duration).transpose() {
        Ok(d) => d.map(|d| d.as_secs().max(1)),
        Err(e) => return fail(EXIT_REFUSED, &format!("invalid --ttl: {e}")),
    };
    if let Err(code) = check_addrs(&b.addrs) {
        return code;
    }
    let req = Request::Block {
        nets: b.addrs,
        ttl_secs,
        reason: b.reason,
        force: b.force,
        list: b.list,
    };
    ask(socket, &req, false, print_change)
}

/// `top`: the interval checked here first.
fn top(socket: PathBuf, t: &TopArgs) -> ExitCode {
    let interval = match parse_duration(&t.interval) {
        Ok(d) if d >= crate::top::MIN_INTERVAL => d,
        Ok(_) => {
            return fail(
                EXIT_REFUSED,
                &format!(
                    "invalid --interval: `{}` is shorter than {}",
                    t.interval,
                    humantime::format_duration(crate::top::MIN_INTERVAL)
                ),
            );
        }
        Err(e) => return fail(EXIT_REFUSED, &format!("invalid --interval: {e}")),
    };
    crate::top::run(crate::top::TopOptions {
        socket,
        plain: t.plain,
        interval,
        iterations: t.iterations,
    })
}

/// What `run` would refuse at start, found without touching anything: the config, `run_as`
/// and what it must be able to read, the gateway's policy, upstreams, certificates and keys
/// (JWKS URLs are not fetched).
fn check_config(file: &std::path::Path) -> ExitCode {
    let config = match load_config(file) {
        Ok(config) => config,
        Err(e) => return fail(EXIT_REFUSED, &e.to_string()),
    };
    if let Some(name) = &config.run_as {
        let files = config.files_read_after_start(Some(file));
        match crate::privilege::check_run_as(name, &files) {
            Ok(_) => {}
            Err(e @ crate::privilege::PrivilegeError::CannotProbe(_)) => {
                eprintln!("api-shield: warning: {e}");
            }
            Err(e) => return fail(EXIT_REFUSED, &format!("{}: {e}", file.display())),
        }
    }
    if let Some(gateway) = config.gateway {
        let fetcher = std::sync::Arc::new(crate::policy::NoFetcher);
        if let Err(e) = crate::gateway::live::Live::load(gateway, None, fetcher) {
            return fail(EXIT_REFUSED, &format!("{}: {e}", file.display()));
        }
    }
    println!("{}: valid", file.display());
    ExitCode::SUCCESS
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn fail(code: u8, message: &str) -> ExitCode {
    // Messages may quote what a list line or a peer sent; the terminal gets it escaped.
    eprintln!("api-shield: {}", crate::text::escape_keeping_lines(message));
    ExitCode::from(code)
}

fn check_addrs(addrs: &[String]) -> Result<(), ExitCode> {
    let errors: Vec<String> = addrs
        .iter()
        .filter_map(|a| parse_net(a).err().map(|e| e.to_string()))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(fail(
            EXIT_REFUSED,
            &format!(
                "invalid address: {}; nothing was applied",
                errors.join("; ")
            ),
        ))
    }
}

fn change(
    socket: &std::path::Path,
    addrs: Vec<String>,
    make: impl FnOnce(Vec<String>) -> Request,
) -> ExitCode {
    if let Err(code) = check_addrs(&addrs) {
        return code;
    }
    ask(socket, &make(addrs), false, print_change)
}

/// `import FILE|-`: the CLI opens the file with the rights of whoever runs it and streams its
/// bytes to the daemon, which never opens a path a client names.
fn import(socket: &std::path::Path, i: crate::cli::ImportArgs) -> ExitCode {
    let stdin = i.file.as_os_str() == "-";
    let (source, name): (control::client::BodySource, String) = if stdin {
        (Box::new(std::io::stdin()), "stdin".to_owned())
    } else {
        match std::fs::File::open(&i.file) {
            Ok(f) => (Box::new(f), source_name(&i.file)),
            Err(e) => {
                return fail(
                    EXIT_REFUSED,
                    &format!("cannot read {}: {e}", i.file.display()),
                );
            }
        }
    };
    let req = Request::Import {
        list: i.list,
        source: Some(name.clone()),
        format: i.format,
        skip_invalid: i.skip_invalid,
        force: i.force,
        allow_shrink: i.allow_shrink,
    };
    let answer = control::request_with_body(socket, &req, source).map_err(|e| match e {
        control::ClientError::Source(io) => control::ClientError::Source(std::io::Error::new(
            io.kind(),
            format!("cannot read {name}: {io}"),
        )),
        other => other,
    });
    show(answer, i.json, print_change)
}

/// The name the daemon shows for an imported file: its path made safe to keep (escaped, and
/// its end kept if it is long, since the file name is the part that tells lists apart).
fn source_name(path: &std::path::Path) -> String {
    let shown = crate::text::escape(&path.display().to_string()).into_owned();
    let chars = shown.chars().count();
    if chars <= crate::text::MAX_TEXT_CHARS {
        return shown;
    }
    let tail: String = shown
        .chars()
        .skip(chars - (crate::text::MAX_TEXT_CHARS - 1))
        .collect();
    format!("…{tail}")
}

fn ask(socket: &std::path::Path, req: &Request, json: bool, human: fn(&Value)) -> ExitCode {
    show(control::request(socket, req), json, human)
}

fn show(answer: Result<Response, control::ClientError>, json: bool, human: fn(&Value)) -> ExitCode {
    match answer {
        Ok(Response::Ok { body }) => {
            if json {
                println!(
                    "{}",
                    crate::text::escape_json(
                        &serde_json::to_string_pretty(&body).unwrap_or_default()
                    )
                );
            } else {
                human(&body);
            }
            ExitCode::SUCCESS
        }
        Ok(Response::Error { code, message }) => fail(code.exit_code(), &message),
        Err(e) => fail(e.exit_code(), &e.to_string()),
    }
}

/// The typed answer in `body`; an answer of another shape (a newer daemon) reads as empty, and
/// `--json` shows it all.
fn typed<T: serde::de::DeserializeOwned + Default>(body: &Value) -> T {
    serde_json::from_value(body.clone()).unwrap_or_default()
}

fn print_reload(body: &Value) {
    let reload: ReloadBody = typed(body);
    match &reload.config {
        Some(path) => println!("reloaded {}", shown(&path.display().to_string())),
        None => println!("reloaded (no config file: every setting at its default)"),
    }
    for w in &reload.warnings {
        println!("warning: {}", shown(w));
    }
}

/// The answer to a change (`block`, `unblock`, `allow`, `unallow`, `flush`, `import`) printed
/// as the daemon sent it, as one line of JSON: scripts read this line, and passing it through
/// keeps the fields a newer daemon adds (the typed answers are in `control::answers`).
fn print_change(body: &Value) {
    println!(
        "{}",
        crate::text::escape_json(&serde_json::to_string(body).unwrap_or_default())
    );
}

/// Every field the daemon sent, as sent: a dump, not a reading, so it stays the JSON object
/// (a `StatusBody` would drop the fields of a newer daemon and invent those an older one lacks).
fn print_status(body: &Value) {
    if let Value::Object(map) = body {
        for (k, v) in map {
            println!("{k:>28}: {}", crate::text::escape_json(&v.to_string()));
        }
    }
}

fn print_stats(body: &Value) {
    // An answer of another shape (a newer daemon) prints as no rows; `--json` shows it all.
    let stats: StatsBody = typed(body);
    let row = |name: &str, c: &CounterBody| {
        println!("{name:<20} {:>14} {:>16}", c.packets, c.bytes);
    };
    println!("{:<20} {:>14} {:>16}", "verdict", "packets", "bytes");
    // Counter order, not alphabetical: final verdicts, then the detail counters.
    for (i, name) in verdict::NAMES.iter().enumerate() {
        let section = if i < verdict::VERDICTS as usize {
            &stats.verdicts
        } else {
            &stats.details
        };
        if i == verdict::VERDICTS as usize {
            println!("-- details");
        }
        if let Some(c) = section.get(*name) {
            row(name, c);
        }
    }
    if body.get("origins").is_some_and(Value::is_object) {
        println!("-- drops by origin");
        for (name, c) in &stats.origins {
            row(name, c);
        }
    }
}

fn print_lists(body: &Value) {
    println!(
        "{:<24} {:>10} {:>10} {:>14}  source",
        "list", "entries", "revision", "drops"
    );
    let rows: Vec<ListsRowBody> = typed(body);
    for l in &rows {
        println!(
            "{:<24} {:>10} {:>10} {:>14}  {}",
            shown(or_unknown(&l.name)),
            l.entries,
            l.revision.map_or("-".to_string(), |r| r.to_string()),
            l.dropped_packets(),
            shown(if l.source.is_empty() { "-" } else { &l.source }),
        );
    }
}

/// Text from the daemon as the terminal may show it: outside text (reasons, list sources) is
/// checked on the way in, and escaped here too, so a terminal never receives a control
/// sequence whatever the daemon holds.
fn shown(text: &str) -> std::borrow::Cow<'_, str> {
    crate::text::escape(text)
}

/// `?` for a field the daemon's answer did not carry.
fn or_unknown(text: &str) -> &str {
    if text.is_empty() { "?" } else { text }
}

fn print_list(body: &Value) {
    let Ok(items) = serde_json::from_value::<Vec<ListedBody>>(body.clone()) else {
        // Another shape (a newer daemon): nothing to print, as before; `--json` shows it.
        return;
    };
    if items.is_empty() {
        println!("no entries");
    }
    for d in items {
        let expires = d
            .expires_at_ms
            .map(crate::kernel::clock::format_rfc3339_ms)
            .unwrap_or_else(|| "never".into());
        println!(
            "{:<6} {:<40} origin={:<10} expires={} reason={}",
            shown(or_unknown(&d.action)),
            shown(or_unknown(&d.net)),
            shown(or_unknown(&d.origin)),
            expires,
            shown(d.reason.as_deref().unwrap_or("-")),
        );
    }
}
