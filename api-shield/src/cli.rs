//! Command-line definitions. Addresses and durations stay strings here: `parse` validates them,
//! so the messages and the exit codes are ours rather than clap's.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::model::Action;

pub const DEFAULT_SOCKET: &str = "/run/api-shield/api-shield.sock";

/// XDP shield for API servers: a privileged daemon and the CLI that drives it.
#[derive(Debug, Parser)]
#[command(name = "api-shield", version)]
pub struct Cli {
    /// Control socket of the daemon.
    #[arg(
        long,
        global = true,
        env = "API_SHIELD_SOCKET",
        default_value = DEFAULT_SOCKET,
        value_name = "PATH"
    )]
    pub socket: PathBuf,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: attach the shield to an interface and serve the control socket.
    Run(RunArgs),
    /// Detach the shield from an interface and remove its pins (the saved state is kept).
    Detach(DetachArgs),
    /// Show whether the shield is attached, its mode and its configuration.
    Status(OutputArgs),
    /// Show the packet counters.
    Stats(OutputArgs),
    /// Block addresses or prefixes.
    Block(BlockArgs),
    /// Remove blocks.
    Unblock(UnblockArgs),
    /// Always allow addresses or prefixes (allow wins over block).
    Allow(AddrArgs),
    /// Remove allow entries.
    Unallow(AddrArgs),
    /// List blocked and allowed entries.
    List(ListArgs),
    /// Show every list (origin) with its size, source, last update and drops.
    Lists(OutputArgs),
    /// Replace a named list with the entries of a file (plain, FireHOL netset/ipset, `ipset save`).
    Import(ImportArgs),
    /// Empty a named list.
    Flush(FlushArgs),
    /// Validate a config file, reporting every problem with its line; with `run_as`, check that
    /// the user exists and can read every file the daemon reads again after giving up root.
    CheckConfig(CheckConfigArgs),
    /// Make the daemon re-read its config file (as SIGHUP does) and report the outcome: exit 0
    /// once it took effect, 1 with every problem if it changed nothing.
    Reload(OutputArgs),
    /// Live view: packets per second by verdict, drops per list, offenders, latest decisions.
    Top(TopArgs),
    /// The API endpoints the gateway learned from traffic (host, method, path template) with
    /// their figures; `inventory export --openapi` prints them as an OpenAPI 3.1 document.
    Inventory(InventoryArgs),
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct InventoryArgs {
    /// Only this host's endpoints.
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(subcommand)]
    pub action: Option<InventoryAction>,
}

#[derive(Debug, Subcommand)]
pub enum InventoryAction {
    /// Print the learned API as a document a team can start a spec from.
    Export(ExportArgs),
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// As OpenAPI 3.1 JSON (also valid YAML), the one format there is.
    #[arg(long, required = true)]
    pub openapi: bool,
    /// Only this host's endpoints.
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Network interface to protect.
    #[arg(long, value_name = "IF")]
    pub iface: String,
    /// Config file; without one every setting takes its default.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// How to attach the XDP program: `auto` tries native first and falls back to skb.
    #[arg(long, value_enum, default_value_t = XdpMode::Auto)]
    pub xdp_mode: XdpMode,
    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
}

#[derive(Debug, Args)]
pub struct DetachArgs {
    /// Network interface to detach from.
    #[arg(long, value_name = "IF")]
    pub iface: String,
    /// Config file naming where the pins are; without one the default `pin_root` is used.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Detach even while a daemon manages the interface (it keeps running, enforcing nothing,
    /// and reports `attached: false`).
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct OutputArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BlockArgs {
    /// Addresses or CIDR prefixes (host bits must be zero).
    #[arg(value_name = "ADDR", required = true)]
    pub addrs: Vec<String>,
    /// Remove the block after this long (`90s`, `10m`, `24h`); without it the block stays.
    #[arg(long, value_name = "DUR")]
    pub ttl: Option<String>,
    /// Why, recorded with the block and in the audit log.
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    /// Block even what covers this host's own addresses or a management prefix.
    #[arg(long)]
    pub force: bool,
    /// Put the blocks in this named list (its own origin) instead of `cli`.
    #[arg(long, value_name = "NAME")]
    pub list: Option<String>,
}

#[derive(Debug, Args)]
pub struct UnblockArgs {
    /// Addresses or CIDR prefixes (host bits must be zero).
    #[arg(value_name = "ADDR", required = true)]
    pub addrs: Vec<String>,
    /// Remove from this named list only; without it, from every list and the kernel's auto-blocks.
    #[arg(long, value_name = "NAME")]
    pub list: Option<String>,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The list file, read with your own rights and sent to the daemon; `-` reads standard input.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Name of the list it replaces.
    #[arg(long, value_name = "NAME")]
    pub list: String,
    /// File format; `auto` recognises `ipset save` output, else one address or CIDR a line.
    #[arg(long, value_enum, default_value = "auto")]
    pub format: crate::lists::formats::Format,
    /// Skip malformed lines (each is reported) instead of refusing the whole file.
    #[arg(long)]
    pub skip_invalid: bool,
    /// Import even lines that cover this host's own addresses or a management prefix.
    #[arg(long)]
    pub force: bool,
    /// Replace the list even if that empties it or removes more than half of its entries
    /// (a pipe whose producer failed half-way ends like a complete list).
    #[arg(long)]
    pub allow_shrink: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct FlushArgs {
    /// Name of the list to empty.
    #[arg(long, value_name = "NAME")]
    pub list: String,
}

#[derive(Debug, Args)]
pub struct AddrArgs {
    /// Addresses or CIDR prefixes (host bits must be zero).
    #[arg(value_name = "ADDR", required = true)]
    pub addrs: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only this kind of entry; both kinds without it.
    #[arg(value_enum)]
    pub kind: Option<ListKind>,
    /// Only entries of this origin (a list name, `cli`, `kernel`, `config`).
    #[arg(long, value_name = "NAME")]
    pub origin: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct TopArgs {
    /// Print plain text at each refresh instead of the terminal view (also when stdout is not a
    /// terminal).
    #[arg(long)]
    pub plain: bool,
    /// Time between refreshes (`1s`, `500ms`; at least 200ms).
    #[arg(long, value_name = "DUR", default_value = "1s")]
    pub interval: String,
    /// Exit after this many refreshes, printing plain text.
    #[arg(short = 'n', long, value_name = "N")]
    pub iterations: Option<u64>,
}

#[derive(Debug, Args)]
pub struct CheckConfigArgs {
    /// Config file to validate.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum XdpMode {
    /// Native (driver) mode if the driver supports it, else generic (skb) mode.
    Auto,
    /// Driver mode only; fail if the driver lacks XDP support.
    Native,
    /// Generic mode: works everywhere, slower.
    Skb,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ListKind {
    Blocked,
    Allowed,
}

impl From<ListKind> for Action {
    fn from(kind: ListKind) -> Self {
        match kind {
            ListKind::Blocked => Action::Block,
            ListKind::Allowed => Action::Allow,
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("api-shield").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_defaults() {
        let cli = parse(&["run", "--iface", "eth0"]);
        let Command::Run(run) = cli.command else {
            panic!("not run")
        };
        assert_eq!(run.iface, "eth0");
        assert_eq!(run.config, None);
        assert_eq!(run.xdp_mode, XdpMode::Auto);
        assert_eq!(run.log_format, LogFormat::Human);
    }

    #[test]
    fn socket_is_global() {
        let cli = parse(&["status", "--json", "--socket", "/tmp/s.sock"]);
        assert_eq!(cli.socket, PathBuf::from("/tmp/s.sock"));
        assert!(matches!(
            cli.command,
            Command::Status(OutputArgs { json: true })
        ));
    }

    #[test]
    fn block_takes_several_addresses_and_options() {
        let cli = parse(&[
            "block",
            "198.18.0.0/24",
            "2001:db8::1",
            "--ttl",
            "10m",
            "--reason",
            "scan",
            "--force",
        ]);
        let Command::Block(block) = cli.command else {
            panic!("not block")
        };
        assert_eq!(block.addrs, ["198.18.0.0/24", "2001:db8::1"]);
        assert_eq!(block.ttl.as_deref(), Some("10m"));
        assert_eq!(block.reason.as_deref(), Some("scan"));
        assert!(block.force);
        assert!(Cli::try_parse_from(["api-shield", "block"]).is_err());
    }

    #[test]
    fn list_kind_is_optional() {
        let Command::List(all) = parse(&["list"]).command else {
            panic!("not list")
        };
        assert_eq!(all.kind, None);
        let Command::List(blocked) = parse(&["list", "blocked", "--json"]).command else {
            panic!("not list")
        };
        assert_eq!(blocked.kind.map(Action::from), Some(Action::Block));
        assert!(blocked.json);
    }

    #[test]
    fn top_options() {
        let Command::Top(top) = parse(&["top"]).command else {
            panic!("not top")
        };
        assert!(!top.plain);
        assert_eq!(top.interval, "1s");
        assert_eq!(top.iterations, None);
        let Command::Top(top) = parse(&["top", "--plain", "--interval", "2s", "-n", "3"]).command
        else {
            panic!("not top")
        };
        assert!(top.plain);
        assert_eq!(top.interval, "2s");
        assert_eq!(top.iterations, Some(3));
    }

    #[test]
    fn reload_takes_no_argument() {
        assert!(matches!(
            parse(&["reload"]).command,
            Command::Reload(OutputArgs { json: false })
        ));
        assert!(Cli::try_parse_from(["api-shield", "reload", "/etc/a.toml"]).is_err());
    }

    #[test]
    fn inventory_lists_or_exports() {
        let Command::Inventory(list) =
            parse(&["inventory", "--host", "api.test", "--json"]).command
        else {
            panic!("not inventory")
        };
        assert_eq!(list.host.as_deref(), Some("api.test"));
        assert!(list.json && list.action.is_none());
        let Command::Inventory(export) = parse(&["inventory", "export", "--openapi"]).command
        else {
            panic!("not inventory")
        };
        assert!(matches!(
            export.action,
            Some(InventoryAction::Export(ExportArgs {
                openapi: true,
                host: None
            }))
        ));
        assert!(Cli::try_parse_from(["api-shield", "inventory", "export"]).is_err());
    }

    #[test]
    fn check_config_takes_a_file() {
        let Command::CheckConfig(args) = parse(&["check-config", "/etc/a.toml"]).command else {
            panic!("not check-config")
        };
        assert_eq!(args.file, PathBuf::from("/etc/a.toml"));
    }
}
