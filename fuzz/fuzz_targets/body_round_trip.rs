//! libFuzzer driver of the `body_round_trip` property (fuzz/props.rs).

#![no_main]

#[path = "../props.rs"]
mod props;

libfuzzer_sys::fuzz_target!(|data: &[u8]| props::body_round_trip(data));
