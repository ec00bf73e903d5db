//! The api-shield XDP program: parse, then allow / block / rate-limit each packet.
#![no_std]
#![no_main]
// A function past `too-many-lines-threshold` (clippy.toml) does more than one step: name the
// steps, or say why not with an `#[expect]`. Scenario tests under `tests/tests` are exempt.
#![warn(clippy::too_many_lines)]

mod counters;
mod cursor;
mod decide;
mod headers;
mod lists;
mod maps;
mod parse;
mod ratelimit;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

#[xdp]
pub fn api_shield(ctx: XdpContext) -> u32 {
    decide::run(&ctx)
}

/// The cheapest possible XDP program: the yardstick the benchmarks divide by. Loaded only by
/// the benchmarks; the daemon never attaches it.
#[xdp]
pub fn baseline_drop(_ctx: XdpContext) -> u32 {
    XDP_DROP
}

/// Sends every frame out of the interface it arrived on. Run by BPF_PROG_TEST_RUN with live
/// frames on a veth, it is the flood generator of the benchmarks: frames cross the veth as
/// xdp_frames, so the generator costs far less than an AF_PACKET one. Never attached.
#[xdp]
pub fn bench_tx(_ctx: XdpContext) -> u32 {
    XDP_TX
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any program that could reach a panic, so this is never executed.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";

/// Keeps the action constants in one place for the other modules.
pub(crate) const XDP_PASS: u32 = xdp_action::XDP_PASS;
pub(crate) const XDP_DROP: u32 = xdp_action::XDP_DROP;
pub(crate) const XDP_TX: u32 = xdp_action::XDP_TX;
