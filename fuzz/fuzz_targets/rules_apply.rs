#![no_main]
//! First byte: direction (bit 0) and clock (bits 1-2); the rest: one text message.
//! See `wsnorm_fuzz::rules_apply`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wsnorm_fuzz::rules_apply(data));
