//! The C entry points with fuzzed options, sizes, pointers (NULL or valid, bounded buffers) and
//! NaN patterns: every call returns a documented status, and a failed call writes nothing.
//!
//! Input layout: [struct_size lo, backend, flags, rows, dim delta, threshold byte, rest...]; the
//! rest is the model file to create a classifier from, or, with flag bit 0, embedding values for a
//! classifier on the built-in model (created once: loading it every run would leave little time
//! for fuzzing).
#![no_main]

use std::ptr::{null, null_mut};
use std::sync::OnceLock;

use gemma_cyber::ffi::*;
use gemma_cyber::Status;
use libfuzzer_sys::fuzz_target;

const SENTINEL: f32 = -7.0;

/// The built-in model's classifier, shared by every run that asks for it (never destroyed).
struct Shared(*mut gemma_cyber_classifier);
// The C API allows classify from any thread on one classifier.
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}
static BUILTIN: OnceLock<Shared> = OnceLock::new();

fn builtin() -> *mut gemma_cyber_classifier {
    BUILTIN
        .get_or_init(|| {
            let mut options = std::mem::MaybeUninit::<gemma_cyber_options>::uninit();
            let mut handle = null_mut();
            unsafe {
                gemma_cyber_options_init(options.as_mut_ptr(), std::mem::size_of::<gemma_cyber_options>());
                let mut options = options.assume_init();
                options.backend = gemma_cyber::BackendKind::Cpu;
                assert_eq!(gemma_cyber_create(&options, &mut handle), Status::Ok);
            }
            Shared(handle)
        })
        .0
}

fuzz_target!(|data: &[u8]| {
    let Some((header, rest)) = data.split_first_chunk::<6>() else { return };
    let [size_byte, backend, flags, rows, dim_delta, threshold] = *header;
    let mut options = std::mem::MaybeUninit::<gemma_cyber_options>::uninit();
    let mut options = unsafe {
        gemma_cyber_options_init(options.as_mut_ptr(), std::mem::size_of::<gemma_cyber_options>());
        options.assume_init()
    };
    // struct_size around the real one, smaller ones included; backend as a raw integer (only cpu
    // and invalid values: AUTO and the others would load system libraries).
    options.struct_size = (std::mem::size_of::<gemma_cyber_options>() as u32).saturating_sub(u32::from(size_byte % 64));
    let backend_value: u32 = if backend % 4 == 0 { u32::from(backend) + 4 } else { 1 };
    unsafe { std::ptr::addr_of_mut!(options.backend).cast::<u32>().write(backend_value) };
    options.threshold = match threshold % 4 {
        0 => f32::NAN,
        1 => f32::from(threshold) / 255.0,
        2 => f32::from(threshold) - 100.0,
        _ => f32::INFINITY,
    };
    options.num_threads = u32::from(flags >> 5);
    let use_builtin = flags & 1 == 1;
    let classifier = if use_builtin {
        builtin()
    } else {
        options.model_data = if flags & 2 == 0 { rest.as_ptr() } else { null() };
        options.model_data_len = rest.len();
        let mut classifier = null_mut();
        let status = unsafe { gemma_cyber_create(&options, &mut classifier) };
        if status != Status::Ok {
            assert!(classifier.is_null(), "out written on failure");
            assert!(matches!(status, Status::InvalidArgument | Status::ModelInvalid), "{status:?}");
            return;
        }
        classifier
    };
    let dim = unsafe { gemma_cyber_input_dim(classifier) };
    let rows = usize::from(rows % 9);
    // A dim off by a little (or the real one) and values from the input, NaN and inf included.
    let claimed_dim = (dim + usize::from(dim_delta % 3)).saturating_sub(1);
    let values: Vec<f32> = rest
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .chain(std::iter::repeat(0.25))
        .take(rows * claimed_dim)
        .collect();
    let mut probabilities = vec![SENTINEL; rows];
    let mut labels = vec![9u8; rows];
    let embeddings_ptr = if flags & 4 == 0 { values.as_ptr() } else { null() };
    let labels_ptr = if flags & 8 == 0 { labels.as_mut_ptr() } else { null_mut() };
    let status = unsafe {
        gemma_cyber_classify(classifier, embeddings_ptr, rows, claimed_dim, probabilities.as_mut_ptr(), labels_ptr)
    };
    match status {
        Status::Ok => {
            assert!(rows == 0 || (claimed_dim == dim && !embeddings_ptr.is_null()));
            assert!(values.iter().all(|v| v.is_finite()));
            assert!(probabilities.iter().all(|p| *p != SENTINEL));
        }
        Status::InvalidArgument | Status::DimensionMismatch | Status::NonFiniteInput => {
            assert!(probabilities.iter().all(|p| *p == SENTINEL), "written on failure");
            assert!(labels.iter().all(|l| *l == 9), "labels written on failure");
        }
        other => panic!("undocumented status {other:?} from classify"),
    }
    if !use_builtin {
        unsafe { gemma_cyber_destroy(classifier) };
    }
});
