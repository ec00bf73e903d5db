//! `cargo xtask bench ...`: benchmarks, each an ignored test of the `tests` crate, but the
//! gateway benchmark, which xtask runs itself (`gateway_bench`).

use crate::{build_cmd, test, util};
use anyhow::Result;
use clap::Subcommand;

#[derive(Subcommand, Clone)]
pub enum Bench {
    /// Per-packet cost of the XDP verdict paths (BPF_PROG_TEST_RUN), side by side with a baseline
    Datapath,
    /// Loading 1,000,000 list entries into the kernel, side by side with `nft -f` and `ipset restore`
    Ingest,
    /// Floods (UDP, TCP SYN) on veth dropped by api-shield, nftables, iptables + ipset and no
    /// filter, alternately; goodput of a legitimate HTTP client; a 1,000,000-source spoofed flood
    Flood,
    /// HTTPS through the api-shield gateway (API key + quota, and pass-through) and through
    /// nginx (API key + limit_req) to one upstream, alternately, with wrk
    Gateway(crate::gateway_bench::Args),
    /// p99 of the gateway's public route alone and under a flood of bad HTTP Basic passwords
    /// (from many sources, from one), alternately, with wrk
    GatewayAuth(crate::auth_flood_bench::Args),
}

pub fn bench(which: Bench) -> Result<()> {
    let bin = build_cmd::build(false)?;
    let name = match which {
        Bench::Datapath => "datapath_bench",
        Bench::Ingest => {
            // The peers run for real: install them if missing.
            crate::setup::ensure_packages(&["nftables", "ipset"])?;
            "ingest_bench"
        }
        Bench::Flood => {
            crate::setup::ensure_packages(&["nftables", "ipset", "iptables"])?;
            "flood_bench"
        }
        Bench::Gateway(args) => {
            crate::setup::ensure_packages(&["wrk", "nginx", "openssl"])?;
            // Run by xtask itself, not as a test of the `tests` crate: it drives external
            // programs (wrk, nginx, the daemon) in xtask's lab, which cleans them up by pid.
            return crate::gateway_bench::gateway(&bin, args);
        }
        Bench::GatewayAuth(args) => {
            crate::setup::ensure_packages(&["wrk", "nginx", "argon2", "curl"])?;
            return crate::auth_flood_bench::gateway_auth(&args.binary(bin.clone()), &args);
        }
    };
    util::run(
        test::tests_command(&bin)
            .args(["test", "--release", "-p", "tests", "--test", name])
            .args(["--", "--ignored", "--nocapture"]),
        &format!("benchmark {name}"),
    )
}
