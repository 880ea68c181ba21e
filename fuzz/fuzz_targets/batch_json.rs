//! `sluice_host::fuzzing::batch_json` under libFuzzer.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sluice_host::fuzzing::batch_json(data));
