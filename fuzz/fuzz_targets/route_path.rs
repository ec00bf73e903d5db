#![no_main]
//! See `api_shield_fuzz::route_path`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| api_shield_fuzz::route_path(data));
