//! libFuzzer driver of the `request_head` property (fuzz/props.rs).

#![no_main]

#[path = "../props.rs"]
mod props;

libfuzzer_sys::fuzz_target!(|data: &[u8]| props::request_head(data));
