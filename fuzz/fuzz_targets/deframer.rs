//! Fuzz target `deframer`: the body, its input layout and its checks are
//! `sockchat_proto::fuzzing::deframer` (proto/src/fuzzing/deframer.rs).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sockchat_proto::fuzzing::deframer(data));
