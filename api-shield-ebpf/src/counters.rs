//! Per-CPU packet and byte counters.

use crate::maps::{COUNTERS, ORIGIN_COUNTERS};
use api_shield_common::state::Counter;
use aya_ebpf::maps::PerCpuArray;

#[inline(always)]
fn bump(map: &PerCpuArray<Counter>, index: u32, bytes: u64) {
    if let Some(c) = map.get_ptr_mut(index) {
        // SAFETY: a per-CPU slot is only touched by this CPU, with preemption disabled in XDP.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
        }
    }
}

#[inline(always)]
pub fn count(index: u32, bytes: u64) {
    bump(&COUNTERS, index, bytes);
}

#[inline(always)]
pub fn count_origin(origin: u32, bytes: u64) {
    bump(&ORIGIN_COUNTERS, origin, bytes);
}
