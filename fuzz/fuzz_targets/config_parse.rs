#![no_main]
//! The input as a wsnorm TOML config. See `wsnorm_fuzz::config_parse`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wsnorm_fuzz::config_parse(data));
