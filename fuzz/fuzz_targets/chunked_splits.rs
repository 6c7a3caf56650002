//! libFuzzer driver of the `chunked_splits` property (fuzz/props.rs).

#![no_main]

#[path = "../props.rs"]
mod props;

libfuzzer_sys::fuzz_target!(|data: &[u8]| props::chunked_splits(data));
