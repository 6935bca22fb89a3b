//! The pickle machine on arbitrary bytes: it must return Ok or Err, never panic, hang or blow up.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = gemma_cyber::convert::pickle::read(data);
});
