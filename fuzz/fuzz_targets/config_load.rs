//! libFuzzer driver of the `config_load` property (fuzz/props.rs).

#![no_main]

#[path = "../props.rs"]
mod props;

libfuzzer_sys::fuzz_target!(|data: &[u8]| props::config_load(data));
