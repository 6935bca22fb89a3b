//! The whole conversion on arbitrary bytes (zip, pickle, state dict, tensors). The seeds are
//! small crafted checkpoints, so mutations reach past the zip reader.
#![no_main]

use gemma_cyber::convert::{convert_checkpoint, ConvertOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = convert_checkpoint(data, &ConvertOptions::default());
});
