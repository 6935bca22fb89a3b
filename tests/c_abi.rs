//! The C ABI itself: every entry point, every documented status, outputs untouched on failure.

mod common;

use std::ffi::{CStr, CString};
use std::mem::size_of;
use std::ptr::{null, null_mut};

use common::*;
use gemma_cyber::ffi::*;
use gemma_cyber::{BackendKind, Status};

fn default_options() -> gemma_cyber_options {
    let mut options = std::mem::MaybeUninit::<gemma_cyber_options>::uninit();
    // SAFETY: the pointer covers a whole gemma_cyber_options, which options_init fills before it is read.
    unsafe {
        gemma_cyber_options_init(options.as_mut_ptr(), size_of::<gemma_cyber_options>());
        options.assume_init()
    }
}

fn last_error() -> String {
    // SAFETY: the library's own NUL-terminated string, valid until this thread's next failing call.
    unsafe { CStr::from_ptr(gemma_cyber_last_error()) }
        .to_string_lossy()
        .into_owned()
}

/// Creates a classifier or returns the status and message.
fn create(options: &gemma_cyber_options) -> Result<*mut gemma_cyber_classifier, (Status, String)> {
    let mut handle = null_mut();
    // SAFETY: options is a filled struct of its own struct_size and handle is writable.
    match unsafe { gemma_cyber_create(options, &mut handle) } {
        Status::Ok => Ok(handle),
        status => {
            assert!(handle.is_null(), "out must stay untouched on failure");
            Err((status, last_error()))
        }
    }
}

fn create_with_model_bytes(bytes: &[u8]) -> Result<*mut gemma_cyber_classifier, (Status, String)> {
    let mut options = default_options();
    options.model_data = bytes.as_ptr();
    options.model_data_len = bytes.len();
    create(&options)
}

struct Handle(*mut gemma_cyber_classifier);

// SAFETY: the C ABI documents classify and the accessors as safe to call from many threads at
// once on one classifier.
unsafe impl Send for Handle {}
// SAFETY: as above.
unsafe impl Sync for Handle {}

impl Handle {
    fn ptr(&self) -> *mut gemma_cyber_classifier {
        self.0
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: a classifier from gemma_cyber_create, destroyed only here, once.
        unsafe { gemma_cyber_destroy(self.0) }
    }
}

fn builtin() -> Handle {
    Handle(create(&default_options()).expect("built-in model loads"))
}

const SENTINEL: f32 = -7.0;

#[test]
fn options_init_writes_documented_defaults() {
    let options = default_options();
    assert_eq!(
        options.struct_size as usize,
        size_of::<gemma_cyber_options>()
    );
    assert_eq!(options.backend as u32, BackendKind::Auto as u32);
    assert!(
        options.model_path.is_null()
            && options.model_data.is_null()
            && options.onnxruntime_library.is_null()
            && options.model_sha256.is_null()
            && options.plugin_dir.is_null()
            && options.plugin_name.is_null()
            && options.plugin_settings.is_null()
    );
    assert_eq!(options.model_data_len, 0);
    assert!(options.threshold.is_nan());
    assert_eq!(options.num_threads, 0);
}

#[test]
fn options_init_never_writes_past_struct_size() {
    let mut buffer = [0xAAu8; 64];
    // SAFETY: the buffer has 64 writable bytes, more than the 12 passed.
    unsafe { gemma_cyber_options_init(buffer.as_mut_ptr().cast(), 12) };
    assert_eq!(u32::from_ne_bytes(buffer[..4].try_into().unwrap()), 12);
    assert!(
        buffer[12..].iter().all(|&b| b == 0xAA),
        "bytes past struct_size were written"
    );

    // A caller from a later version with a larger struct: our fields set, the rest zeroed.
    let later = size_of::<gemma_cyber_options>() + 32;
    let mut larger = [0xAAu8; 256];
    // SAFETY: the buffer has 256 writable bytes, more than the later size passed.
    unsafe { gemma_cyber_options_init(larger.as_mut_ptr().cast(), later) };
    assert_eq!(
        u32::from_ne_bytes(larger[..4].try_into().unwrap()) as usize,
        later
    );
    assert!(larger[size_of::<gemma_cyber_options>()..later]
        .iter()
        .all(|&b| b == 0));
    assert!(larger[later..].iter().all(|&b| b == 0xAA));
    // SAFETY: NULL is documented to be refused without a write.
    unsafe { gemma_cyber_options_init(null_mut(), size_of::<gemma_cyber_options>()) };
    assert!(last_error().contains("options is NULL"));
}

#[test]
fn builtin_model_classifies_golden_inputs_through_the_c_abi() {
    let handle = builtin();
    // SAFETY: a live classifier.
    assert_eq!(unsafe { gemma_cyber_input_dim(handle.0) }, 768);
    // AUTO resolves to a concrete backend, whichever this machine offers.
    // SAFETY: a live classifier.
    let backend = unsafe { gemma_cyber_active_backend(handle.0) };
    assert_ne!(backend as u32, BackendKind::Auto as u32);
    // SAFETY: a live classifier; its device name is a NUL-terminated string it owns while alive.
    let device = unsafe { CStr::from_ptr(gemma_cyber_device_name(handle.0)) };
    assert!(!device.to_bytes().is_empty());

    let (inputs, dim) = npy_f32("tests/golden/default.inputs.npy");
    let rows = inputs.len() / dim;
    let mut probabilities = vec![SENTINEL; rows];
    let mut labels = vec![9u8; rows];
    // SAFETY: the input holds rows * dim floats and each output holds rows values, on a live
    // classifier.
    let status = unsafe {
        gemma_cyber_classify(
            handle.0,
            inputs.as_ptr(),
            rows,
            dim,
            probabilities.as_mut_ptr(),
            labels.as_mut_ptr(),
        )
    };
    assert_eq!(status, Status::Ok, "{}", last_error());
    let diff = max_abs_diff(
        &probabilities,
        &npy_f64("tests/golden/default.expected.npy"),
    );
    assert!(diff <= TOLERANCE, "max diff {diff:e}");
    assert_eq!(labels, npy_u8("tests/golden/default.labels.npy"));

    // Labels are optional.
    let mut again = vec![SENTINEL; rows];
    // SAFETY: the input holds rows * dim floats and each output holds rows values, on a live
    // classifier.
    let status = unsafe {
        gemma_cyber_classify(
            handle.0,
            inputs.as_ptr(),
            rows,
            dim,
            again.as_mut_ptr(),
            null_mut(),
        )
    };
    assert_eq!(status, Status::Ok);
    assert_eq!(again, probabilities);
}

#[test]
fn threshold_option_overrides_the_models_own() {
    let mut options = default_options();
    options.threshold = 0.0;
    let handle = Handle(create(&options).unwrap());
    let (inputs, dim) = npy_f32("tests/golden/default.inputs.npy");
    let mut probabilities = vec![0.0; 4];
    let mut labels = vec![0u8; 4];
    // SAFETY: the input holds rows * dim floats and each output holds rows values, on a live
    // classifier.
    let status = unsafe {
        gemma_cyber_classify(
            handle.0,
            inputs.as_ptr(),
            4,
            dim,
            probabilities.as_mut_ptr(),
            labels.as_mut_ptr(),
        )
    };
    assert_eq!(status, Status::Ok);
    assert_eq!(labels, vec![1; 4], "threshold 0 labels everything cyber");

    for bad in [1.5f32, -0.1, f32::INFINITY] {
        options.threshold = bad;
        let (status, message) = create(&options).unwrap_err();
        assert_eq!(status, Status::InvalidArgument);
        assert!(message.contains("threshold"), "{message}");
    }
}

#[test]
fn null_pointers_are_invalid_arguments_and_write_nothing() {
    let handle = builtin();
    let input = vec![0.1f32; 768];
    let mut probabilities = [SENTINEL];
    let mut labels = [9u8];
    let cases: [(&str, *mut gemma_cyber_classifier, *const f32, *mut f32); 3] = [
        (
            "classifier is NULL",
            null_mut(),
            input.as_ptr(),
            probabilities.as_mut_ptr(),
        ),
        (
            "embeddings is NULL",
            handle.0,
            null(),
            probabilities.as_mut_ptr(),
        ),
        (
            "probabilities is NULL",
            handle.0,
            input.as_ptr(),
            null_mut(),
        ),
    ];
    for (needle, classifier, embeddings, output) in cases {
        // SAFETY: each case has one NULL pointer, which the call must refuse before reading any;
        // the others are valid for one row.
        let status = unsafe {
            gemma_cyber_classify(classifier, embeddings, 1, 768, output, labels.as_mut_ptr())
        };
        assert_eq!(status, Status::InvalidArgument, "{needle}");
        assert!(
            last_error().contains(needle),
            "{} lacks {needle}",
            last_error()
        );
        assert_eq!(
            (probabilities[0], labels[0]),
            (SENTINEL, 9),
            "{needle}: outputs written"
        );
    }
    let mut out = null_mut();
    assert_eq!(
        // SAFETY: NULL options are documented to be refused; out is writable.
        unsafe { gemma_cyber_create(null(), &mut out) },
        Status::InvalidArgument
    );
    assert!(last_error().contains("options is NULL"));
    assert_eq!(
        // SAFETY: a filled options struct; NULL out is documented to be refused.
        unsafe { gemma_cyber_create(&default_options(), null_mut()) },
        Status::InvalidArgument
    );
    assert!(last_error().contains("out is NULL"));
}

#[test]
fn accessors_and_destroy_accept_null() {
    // SAFETY: NULL is documented to be accepted by every accessor and by destroy.
    unsafe {
        assert_eq!(
            gemma_cyber_active_backend(null()) as u32,
            BackendKind::Auto as u32
        );
        assert_eq!(
            CStr::from_ptr(gemma_cyber_device_name(null())).to_bytes(),
            b""
        );
        assert_eq!(gemma_cyber_input_dim(null()), 0);
        gemma_cyber_destroy(null_mut());
        assert_eq!(
            CStr::from_ptr(gemma_cyber_version()).to_str().unwrap(),
            env!("CARGO_PKG_VERSION")
        );
        assert_eq!(gemma_cyber_abi_version(), GEMMA_CYBER_ABI_VERSION);
    }
}

#[test]
fn wrong_dim_is_dimension_mismatch_naming_both() {
    let handle = builtin();
    let input = vec![0.1f32; 767 * 2];
    let mut probabilities = [SENTINEL; 2];
    // SAFETY: the input holds two rows of 767 floats, read only after the dimension check refuses
    // them; the output holds two values.
    let status = unsafe {
        gemma_cyber_classify(
            handle.0,
            input.as_ptr(),
            2,
            767,
            probabilities.as_mut_ptr(),
            null_mut(),
        )
    };
    assert_eq!(status, Status::DimensionMismatch);
    let message = last_error();
    assert!(
        message.contains("767") && message.contains("768"),
        "{message}"
    );
    assert_eq!(probabilities, [SENTINEL; 2]);
}

#[test]
fn size_overflow_is_invalid_argument() {
    let handle = builtin();
    let input = [0.0f32; 4];
    let mut probabilities = [SENTINEL; 4];
    for (rows, dim) in [
        (usize::MAX, 768),
        (usize::MAX / 768 + 1, 768),
        (usize::MAX / 2048, 768),
    ] {
        // SAFETY: the sizes overflow on purpose and must be refused before any pointer is read.
        let status = unsafe {
            gemma_cyber_classify(
                handle.0,
                input.as_ptr(),
                rows,
                dim,
                probabilities.as_mut_ptr(),
                null_mut(),
            )
        };
        assert_eq!(status, Status::InvalidArgument, "rows {rows}");
        assert!(last_error().contains("overflows"), "{}", last_error());
    }
    assert_eq!(probabilities, [SENTINEL; 4]);
}

#[test]
fn misaligned_float_pointers_are_invalid_arguments() {
    let handle = builtin();
    // Floats read from one byte into a buffer, as a caller slicing raw bytes would pass them.
    let bytes = vec![0u8; 768 * 4 + 8];
    let aligned_start = bytes.as_ptr().align_offset(4);
    let misaligned = bytes[aligned_start + 1..].as_ptr().cast::<f32>();
    let input = vec![0.0f32; 768];
    let mut probabilities = [SENTINEL; 2];
    let mut out_bytes = [0u8; 12];
    let out_start = out_bytes.as_ptr().align_offset(4) + 1;
    let misaligned_out = out_bytes[out_start..].as_mut_ptr().cast::<f32>();
    for (what, embeddings, output) in [
        ("embeddings", misaligned, probabilities.as_mut_ptr()),
        ("probabilities", input.as_ptr(), misaligned_out),
    ] {
        // SAFETY: both pointers cover one row and one probability; the misaligned one must be
        // refused before it is read or written.
        let status =
            unsafe { gemma_cyber_classify(handle.0, embeddings, 1, 768, output, null_mut()) };
        assert_eq!(status, Status::InvalidArgument, "{what}");
        assert!(
            last_error().contains(&format!("{what} is not aligned")),
            "{}",
            last_error()
        );
    }
    assert_eq!(probabilities, [SENTINEL; 2]);
    assert_eq!(out_bytes, [0; 12]);
}

#[test]
fn overlapping_buffers_are_invalid_arguments_and_write_nothing() {
    let handle = builtin();
    // Two rows of a spike, then room for two probabilities and two labels, all in one buffer.
    let mut buffer = vec![0.0f32; 2 * 768 + 4];
    buffer[0] = 1.0;
    buffer[768] = 1.0;
    let before = buffer.clone();
    let base = buffer.as_mut_ptr();
    // SAFETY: every offset lies within `buffer`.
    let (rows_end, last_row, labels) = unsafe {
        (
            base.add(2 * 768),
            base.add(768),
            base.add(2 * 768 + 2).cast::<u8>(),
        )
    };
    for (what, probabilities, labels) in [
        ("probabilities overlaps embeddings", base, null_mut()),
        ("probabilities overlaps embeddings", last_row, null_mut()),
        // The labels' first byte is the probabilities' last float.
        (
            "labels overlaps probabilities",
            rows_end,
            // SAFETY: within `buffer`.
            unsafe { rows_end.add(1).cast::<u8>() },
        ),
        // SAFETY: within `buffer`.
        ("labels overlaps embeddings", rows_end, unsafe {
            last_row.cast::<u8>().add(7)
        }),
    ] {
        // SAFETY: every pointer covers its two rows or two values within `buffer`; overlapping
        // ones must be refused before anything is read or written.
        let status = unsafe { gemma_cyber_classify(handle.0, base, 2, 768, probabilities, labels) };
        assert_eq!(status, Status::InvalidArgument, "{what}");
        assert!(last_error().contains(what), "{what}: {}", last_error());
        assert_eq!(buffer, before, "{what}: something was written");
    }
    // Adjacent but apart: the rows, then the probabilities, then the labels.
    // SAFETY: as above, without overlap.
    let status = unsafe { gemma_cyber_classify(handle.0, base, 2, 768, rows_end, labels) };
    assert_eq!(status, Status::Ok, "{}", last_error());
    assert!(buffer[2 * 768] > 0.0 && buffer[2 * 768 + 1] > 0.0);
}

#[test]
fn dim_zero_with_any_row_count_is_dimension_mismatch() {
    // rows * 0 fits any size check, so the dimension must be refused before outputs of `rows`
    // values are taken as slices.
    let handle = builtin();
    let input = [0.0f32; 4];
    let mut probabilities = [SENTINEL; 4];
    let mut labels = [7u8; 4];
    for rows in [usize::MAX, 1 << 62, 1 << 61, 3] {
        // SAFETY: the dimension is wrong on purpose and must be refused before any pointer is
        // read or written.
        let status = unsafe {
            gemma_cyber_classify(
                handle.0,
                input.as_ptr(),
                rows,
                0,
                probabilities.as_mut_ptr(),
                labels.as_mut_ptr(),
            )
        };
        assert_eq!(status, Status::DimensionMismatch, "rows {rows}");
        assert!(last_error().contains("dim 0"), "{}", last_error());
    }
    assert_eq!(probabilities, [SENTINEL; 4]);
    assert_eq!(labels, [7; 4]);
}

#[test]
fn nan_or_infinity_anywhere_is_non_finite_input_and_writes_nothing() {
    let handle = builtin();
    let rows = 5;
    for (position, bad) in [
        (0, f32::NAN),
        (4 * 768 + 767, f32::INFINITY),
        (2 * 768 + 100, f32::NEG_INFINITY),
    ] {
        let mut input = random_embeddings(rows, 768, 3);
        input[position] = bad;
        let mut probabilities = [SENTINEL; 5];
        let mut labels = [9u8; 5];
        // SAFETY: the input holds rows * dim floats and each output holds rows values, on a live
        // classifier.
        let status = unsafe {
            gemma_cyber_classify(
                handle.0,
                input.as_ptr(),
                rows,
                768,
                probabilities.as_mut_ptr(),
                labels.as_mut_ptr(),
            )
        };
        assert_eq!(status, Status::NonFiniteInput);
        let message = last_error();
        assert!(
            message.contains(&format!("row {} column {}", position / 768, position % 768)),
            "{message}"
        );
        assert_eq!((probabilities, labels), ([SENTINEL; 5], [9u8; 5]));
    }
}

#[test]
fn zero_rows_is_a_no_op_that_reads_no_pointer() {
    let handle = builtin();
    // SAFETY: with zero rows no pointer but the classifier is read.
    let status = unsafe { gemma_cyber_classify(handle.0, null(), 0, 768, null_mut(), null_mut()) };
    assert_eq!(status, Status::Ok);
    // SAFETY: as above.
    let status = unsafe { gemma_cyber_classify(handle.0, null(), 0, 5, null_mut(), null_mut()) };
    assert_eq!(status, Status::Ok, "rows == 0 succeeds whatever dim says");
}

#[test]
fn successful_calls_leave_the_last_error_alone() {
    let handle = builtin();
    let input = [f32::NAN; 768];
    let mut out = [0.0f32];
    // SAFETY: one row of 768 floats in, one value out.
    unsafe {
        gemma_cyber_classify(
            handle.0,
            input.as_ptr(),
            1,
            768,
            out.as_mut_ptr(),
            null_mut(),
        )
    };
    let failure = last_error();
    assert!(
        failure.starts_with("GEMMA_CYBER_STATUS_NON_FINITE_INPUT"),
        "{failure}"
    );
    let good = [0.5f32; 768];
    assert_eq!(
        // SAFETY: one row of 768 floats in, one value out.
        unsafe {
            gemma_cyber_classify(
                handle.0,
                good.as_ptr(),
                1,
                768,
                out.as_mut_ptr(),
                null_mut(),
            )
        },
        Status::Ok
    );
    assert_eq!(last_error(), failure);
    // The last error belongs to the thread that failed.
    let other = std::thread::spawn(last_error).join().unwrap();
    assert_eq!(other, "");
}

#[test]
fn missing_model_file_is_model_not_found() {
    let mut options = default_options();
    let path = CString::new(repo_path("models/absent.safetensors").to_str().unwrap()).unwrap();
    options.model_path = path.as_ptr();
    let (status, message) = create(&options).unwrap_err();
    assert_eq!(status, Status::ModelNotFound);
    assert!(message.contains("absent.safetensors"), "{message}");
}

#[test]
fn model_path_loads_a_fixture() {
    let mut options = default_options();
    let path = CString::new(
        repo_path("tests/fixtures/small_f16.safetensors")
            .to_str()
            .unwrap(),
    )
    .unwrap();
    options.model_path = path.as_ptr();
    let handle = Handle(create(&options).unwrap());
    // SAFETY: a live classifier.
    assert_eq!(unsafe { gemma_cyber_input_dim(handle.0) }, 16);
}

#[test]
fn malformed_models_in_memory_are_model_invalid() {
    let good = std::fs::read(repo_path("tests/fixtures/no_metadata.safetensors")).unwrap();
    let (mut tensors, metadata) = read_model("tests/fixtures/no_metadata.safetensors");
    let mut huge_header = good.clone();
    huge_header[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    tensors
        .iter_mut()
        .find(|t| t.name == "output.weight")
        .unwrap()
        .dtype = "I32".into();
    let wrong_dtype = write_model(&tensors, &metadata);
    let mut wrong_shape = read_model("tests/fixtures/no_metadata.safetensors").0;
    wrong_shape
        .iter_mut()
        .find(|t| t.name == "output.weight")
        .unwrap()
        .shape = vec![6, 1];
    let wrong_shape = write_model(&wrong_shape, &metadata);
    let bad_offsets = with_header(
        r#"{"input_norm.weight":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
        &[0u8; 12],
    );
    for (case, bytes) in [
        ("junk", b"\x01\x02garbage garbage garbage".to_vec()),
        ("truncated", good[..good.len() / 2].to_vec()),
        ("empty", Vec::new()),
        ("wrong dtype", wrong_dtype),
        ("wrong shape", wrong_shape),
        ("huge header length", huge_header),
        ("inconsistent offsets", bad_offsets),
    ] {
        let (status, message) = create_with_model_bytes(&bytes).unwrap_err();
        assert_eq!(status, Status::ModelInvalid, "{case}: {message}");
        assert!(
            message.starts_with("GEMMA_CYBER_STATUS_MODEL_INVALID: model data: "),
            "{case}: {message}"
        );
    }
}

#[test]
fn bad_options_are_invalid_arguments() {
    let mut small = default_options();
    small.struct_size = 16;
    let (status, message) = create(&small).unwrap_err();
    assert_eq!(status, Status::InvalidArgument);
    assert!(message.contains("struct_size is 16"), "{message}");

    // Write an out-of-range backend value as an integer, the way a C caller could.
    let mut unknown = default_options();
    // SAFETY: the field is written as the 32-bit integer a C caller could store there; nothing
    // reads it as the enum.
    unsafe {
        std::ptr::addr_of_mut!(unknown.backend)
            .cast::<u32>()
            .write(99)
    };
    let (status, message) = create(&unknown).unwrap_err();
    assert_eq!(status, Status::InvalidArgument);
    assert!(message.contains("options.backend is 99"), "{message}");

    let bytes = std::fs::read(repo_path("models/default.safetensors")).unwrap();
    let path = CString::new("models/default.safetensors").unwrap();
    let mut both = default_options();
    both.model_path = path.as_ptr();
    both.model_data = bytes.as_ptr();
    both.model_data_len = bytes.len();
    assert_eq!(create(&both).unwrap_err().0, Status::InvalidArgument);

    let mut dangling_length = default_options();
    dangling_length.model_data_len = 10;
    assert_eq!(
        create(&dangling_length).unwrap_err().0,
        Status::InvalidArgument
    );

    let mut too_many_threads = default_options();
    too_many_threads.num_threads = 1_000_000;
    assert_eq!(
        create(&too_many_threads).unwrap_err().0,
        Status::InvalidArgument
    );

    let empty = CString::new("").unwrap();
    let mut empty_path = default_options();
    empty_path.model_path = empty.as_ptr();
    assert_eq!(create(&empty_path).unwrap_err().0, Status::InvalidArgument);
}

#[test]
fn concurrent_classify_on_one_handle_is_bit_identical() {
    let handle = builtin();
    let inputs = random_embeddings(300, 768, 11);
    let classify = |rows: usize| {
        let mut out = vec![0.0f32; rows];
        // SAFETY: the input holds 300 rows of 768 floats (rows is at most that) and out holds rows
        // values.
        let status = unsafe {
            gemma_cyber_classify(
                handle.ptr(),
                inputs.as_ptr(),
                rows,
                768,
                out.as_mut_ptr(),
                null_mut(),
            )
        };
        assert_eq!(status, Status::Ok);
        out
    };
    let reference: Vec<Vec<f32>> = [1, 7, 300].iter().map(|&rows| classify(rows)).collect();
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                for i in 0..30 {
                    let which = i % 3;
                    assert_eq!(classify([1, 7, 300][which]), reference[which]);
                }
            });
        }
    });
}

fn sha256_of(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

#[test]
fn model_sha256_accepts_the_right_model_and_refuses_any_other() {
    let bytes = std::fs::read(repo_path("models/default.safetensors")).unwrap();
    let good = sha256_of(&bytes);
    let mut options = default_options();
    options.model_sha256 = good.as_ptr();
    drop(Handle(create(&options).expect("matching SHA-256 loads")));

    let path = CString::new(repo_path("models/default.safetensors").to_str().unwrap()).unwrap();
    options.model_path = path.as_ptr();
    drop(Handle(create(&options).expect("the same check for a file")));

    let mut bad = good;
    bad[31] ^= 1;
    options.model_sha256 = bad.as_ptr();
    let (status, message) = create(&options).unwrap_err();
    assert_eq!(status, Status::ModelInvalid);
    assert!(
        message.contains("SHA-256 is ") && message.contains("default.safetensors"),
        "{message}"
    );

    // The same for a model given in memory: the check runs before any parsing.
    let mut in_memory = default_options();
    in_memory.model_data = bytes.as_ptr();
    in_memory.model_data_len = bytes.len();
    in_memory.model_sha256 = bad.as_ptr();
    assert_eq!(create(&in_memory).unwrap_err().0, Status::ModelInvalid);
}

#[test]
fn fields_past_struct_size_are_never_read() {
    // A caller built against the first version-1 header knows nothing of model_sha256: whatever
    // lies past its struct_size must be ignored, here a pointer that would crash if read.
    let mut options = default_options();
    options.struct_size = std::mem::offset_of!(gemma_cyber_options, model_sha256) as u32;
    options.model_sha256 = 8 as *const u8;
    drop(Handle(
        create(&options).expect("older callers' struct_size works"),
    ));
    options.struct_size -= 1;
    assert_eq!(create(&options).unwrap_err().0, Status::InvalidArgument);
}

#[test]
fn model_data_over_the_limit_is_refused_without_being_copied() {
    // Calloc'd and never touched: the length alone refuses it.
    let too_big = vec![0u8; gemma_cyber::model::MAX_FILE_BYTES as usize + 1];
    let (status, message) = create_with_model_bytes(&too_big).unwrap_err();
    assert_eq!(status, Status::ModelInvalid);
    assert!(message.contains("the limit is 1073741824"), "{message}");
}
