//! Fuzz target `session`: the body, the operations it decodes from the input and its
//! checks are `sockchat_proto::fuzzing::session` (proto/src/fuzzing/session.rs).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sockchat_proto::fuzzing::session(data));
