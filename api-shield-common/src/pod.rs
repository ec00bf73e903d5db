//! `aya::Pod` for every type that crosses the map boundary.

use crate::config::ShieldConfig;
use crate::state::{
    AutoBlock, AutoBlockEvent, BucketSlot, Counter, Offender, PinRecord, RateKey, Rule, V6LpmKey,
};

macro_rules! pod {
    ($($t:ty),* $(,)?) => {
        $(
            // SAFETY: `#[repr(C)]`, `Copy`, made only of integers, with explicit padding fields
            // and no implicit padding (sizes are asserted where the type is defined).
            unsafe impl aya::Pod for $t {}
        )*
    };
}

pod!(
    ShieldConfig,
    Counter,
    Rule,
    RateKey,
    BucketSlot,
    Offender,
    AutoBlock,
    AutoBlockEvent,
    V6LpmKey,
    PinRecord,
);
