//! `sluice_host::fuzzing::manifest` under libFuzzer.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sluice_host::fuzzing::manifest(data));
