//! `gemma_cyber::convert` and `gemma-cyber convert`: real PyTorch checkpoints convert and agree with
//! PyTorch's own outputs on every backend; hostile files are refused with a message, nothing run.
#![cfg(feature = "convert")]

mod common;

use std::io::Write;

use common::*;
use gemma_cyber::convert::{convert_checkpoint, Conversion, ConvertOptions};
use gemma_cyber::model::NormOrder;
use gemma_cyber::{BackendKind, Classifier, ModelSource, Options, Status};

const DIR: &str = "tests/fixtures/checkpoints";

/// Every fixture made by tools/make_checkpoint_fixtures.py: folder, name, flag given, order the
/// PyTorch model really has.
const FIXTURES: [(&str, &str, Option<NormOrder>, NormOrder); 5] = [
    ("", "sequential_bn_relu", None, NormOrder::LinearBnRelu),
    (
        "",
        "sequential_relu_bn_dropout",
        None,
        NormOrder::LinearReluBn,
    ),
    ("", "named_bn_relu", None, NormOrder::LinearBnRelu),
    (
        "",
        "named_relu_bn",
        Some(NormOrder::LinearReluBn),
        NormOrder::LinearReluBn,
    ),
    (
        "with_config/",
        "nested_relu_bn_f64",
        None,
        NormOrder::LinearReluBn,
    ),
];

/// Every backend (the plugins are built beside the core); each must match PyTorch.
fn backends() -> Vec<BackendKind> {
    vec![
        BackendKind::Cpu,
        BackendKind::Onnxruntime,
        BackendKind::Wgpu,
    ]
}

fn convert_file(relative: &str, norm_order: Option<NormOrder>) -> gemma_cyber::Result<Conversion> {
    let path = repo_path(relative);
    let config = path.with_file_name("config.json");
    convert_checkpoint(
        &std::fs::read(&path).unwrap_or_else(|e| panic!("{relative}: {e}")),
        &ConvertOptions {
            file_name: path.file_name().unwrap().to_string_lossy().into_owned(),
            norm_order,
            config_json: std::fs::read(config).ok(),
            config_name: String::new(),
        },
    )
}

fn classify(model: &[u8], backend: BackendKind, inputs: &[f32], dim: usize) -> Vec<f32> {
    let classifier = Classifier::new(&Options {
        backend,
        model: ModelSource::Bytes(model.to_vec()),
        ..Options::default()
    })
    .unwrap_or_else(|e| panic!("{}: {e}", backend.name()));
    let mut probabilities = vec![0.0; inputs.len() / dim];
    classifier
        .classify(inputs, dim, &mut probabilities, None)
        .unwrap();
    probabilities
}

#[test]
fn every_fixture_converts_and_every_backend_matches_pytorch() {
    for (folder, name, flag, order) in FIXTURES {
        let conversion = convert_file(&format!("{DIR}/{folder}{name}.pt"), flag)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            conversion.norm_order, order,
            "{name}: {:?}",
            conversion.report
        );
        assert_eq!(conversion.model.hidden_sizes(), &[512, 256, 128], "{name}");
        assert_eq!(conversion.model.parameter_count(), 561_409, "{name}");
        let (inputs, dim) = npy_f32(&format!("{DIR}/{folder}{name}.inputs.npy"));
        let expected = npy_f64(&format!("{DIR}/{folder}{name}.expected.npy"));
        for backend in backends() {
            let probabilities = classify(&conversion.safetensors, backend, &inputs, dim);
            let diff = max_abs_diff(&probabilities, &expected);
            assert!(
                diff <= TOLERANCE,
                "{name} on {}: max |ours - PyTorch| = {diff:e}",
                backend.name()
            );
        }
    }
}

#[test]
fn protocol_4_and_half_precision_checkpoints_match_pytorch() {
    for name in ["protocol4", "float16", "bfloat16"] {
        let conversion = convert_file(&format!("{DIR}/small/{name}.pt"), None)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let (inputs, dim) = npy_f32(&format!("{DIR}/small/{name}.inputs.npy"));
        let expected = npy_f64(&format!("{DIR}/small/{name}.expected.npy"));
        for backend in backends() {
            let probabilities = classify(&conversion.safetensors, backend, &inputs, dim);
            let diff = max_abs_diff(&probabilities, &expected);
            assert!(diff <= TOLERANCE, "{name} on {}: {diff:e}", backend.name());
        }
    }
}

#[test]
fn sequential_indices_decide_the_norm_order_and_the_report_says_so() {
    let bn_relu = convert_file(&format!("{DIR}/sequential_bn_relu.pt"), None).unwrap();
    assert!(
        bn_relu.report.iter().any(|l| l.starts_with(
            "norm order: linear_bn_relu (inferred: Linear 1 and BatchNorm 2 are 1 apart"
        )),
        "{:?}",
        bn_relu.report
    );
    let relu_bn = convert_file(&format!("{DIR}/sequential_relu_bn_dropout.pt"), None).unwrap();
    assert!(
        relu_bn.report.iter().any(|l| l.starts_with(
            "norm order: linear_relu_bn (inferred: Linear 1 and BatchNorm 3 are 2 apart"
        )),
        "{:?}",
        relu_bn.report
    );
}

#[test]
fn named_modules_need_the_flag_when_relu_comes_first() {
    let path = format!("{DIR}/named_relu_bn.pt");
    let (inputs, dim) = npy_f32(&format!("{DIR}/named_relu_bn.inputs.npy"));
    let expected = npy_f64(&format!("{DIR}/named_relu_bn.expected.npy"));

    // Without the flag nothing says ReLU comes first: the default is assumed, and it is wrong.
    let assumed = convert_file(&path, None).unwrap();
    assert_eq!(assumed.norm_order, NormOrder::LinearBnRelu);
    assert!(
        assumed.report.iter().any(|l| l.contains("assumed")),
        "{:?}",
        assumed.report
    );
    let wrong = classify(&assumed.safetensors, BackendKind::Cpu, &inputs, dim);
    assert!(
        max_abs_diff(&wrong, &expected) > 1e-3,
        "the order must matter"
    );

    let forced = convert_file(&path, Some(NormOrder::LinearReluBn)).unwrap();
    assert!(forced.report.iter().any(|l| l.contains("forced")));
    let right = classify(&forced.safetensors, BackendKind::Cpu, &inputs, dim);
    assert!(max_abs_diff(&right, &expected) <= TOLERANCE);
}

#[test]
fn the_flag_wins_over_the_indices_and_names_what_they_say() {
    let forced = convert_file(
        &format!("{DIR}/sequential_bn_relu.pt"),
        Some(NormOrder::LinearReluBn),
    )
    .unwrap();
    assert_eq!(forced.norm_order, NormOrder::LinearReluBn);
    let line = forced
        .report
        .iter()
        .find(|l| l.starts_with("norm order:"))
        .unwrap();
    assert!(
        line.contains("forced by the caller; the layer indices say linear_bn_relu"),
        "{line}"
    );
}

#[test]
fn metadata_records_the_format_the_source_and_plain_checkpoint_values() {
    let conversion = convert_file(&format!("{DIR}/sequential_relu_bn_dropout.pt"), None).unwrap();
    let metadata = conversion.model.metadata();
    let get = |key: &str| metadata.get(key).map(String::as_str);
    assert_eq!(get("format"), Some("gemma-cyber"));
    assert_eq!(get("format_version"), Some("1"));
    assert_eq!(get("norm_order"), Some("linear_relu_bn"));
    assert_eq!(get("threshold"), Some("0.5"));
    assert_eq!(
        get("source"),
        Some("converted from sequential_relu_bn_dropout.pt by gemma-cyber convert")
    );
    assert_eq!(get("checkpoint.epoch"), Some("17"));
    assert_eq!(get("checkpoint.best"), Some("true"));
    assert_eq!(get("checkpoint.metrics.val_accuracy"), Some("0.9731"));
    assert_eq!(get("checkpoint.config.hidden_dims"), Some("[512,256,128]"));
    // The optimizer's state is not plain data: left out, and the report says so.
    assert!(!metadata
        .keys()
        .any(|k| k.starts_with("checkpoint.optimizer_state_dict.param_groups")));
    assert!(conversion
        .report
        .iter()
        .any(|l| l.contains("not kept as metadata: checkpoint.optimizer_state_dict")));
}

#[test]
fn config_json_sets_eps_threshold_and_embedding_model() {
    let conversion =
        convert_file(&format!("{DIR}/with_config/nested_relu_bn_f64.pt"), None).unwrap();
    let model = &conversion.model;
    assert_eq!(model.threshold(), 0.4);
    assert_eq!(model.layer_norm_eps(), 1e-6);
    assert_eq!(model.batch_norm_eps(), 1e-3);
    assert_eq!(
        model.metadata().get("embedding_model").map(String::as_str),
        Some("google/embeddinggemma-300m")
    );
    assert_eq!(
        model.metadata().get("config.input_dim").map(String::as_str),
        Some("768")
    );
}

#[test]
fn a_bad_config_json_is_refused() {
    let bytes = std::fs::read(repo_path(&format!("{DIR}/sequential_bn_relu.pt"))).unwrap();
    for (config, wanted) in [
        (&b"{\"threshold\": 2}"[..], "threshold is 2"),
        (
            b"{\"norm_order\": \"relu_first\"}",
            "norm_order is \"relu_first\"",
        ),
        (b"{\"layer_norm_eps\": -1}", "layer_norm_eps is -1"),
        (b"[1, 2]", "not a JSON object"),
        (b"{", "not valid JSON"),
    ] {
        let error = convert_checkpoint(
            &bytes,
            &ConvertOptions {
                config_json: Some(config.to_vec()),
                ..ConvertOptions::default()
            },
        )
        .expect_err("refused");
        assert_eq!(error.status(), Status::ModelInvalid);
        assert!(error.message().contains(wanted), "{}", error.message());
    }
}

// ---------------------------------------------------------------------------------------------
// Hostile files.

fn refused(bytes: &[u8]) -> String {
    let error = convert_checkpoint(bytes, &ConvertOptions::default()).expect_err("must be refused");
    assert_eq!(error.status(), Status::ModelInvalid, "{}", error.message());
    error.message().to_owned()
}

fn refused_file(name: &str) -> String {
    refused(&std::fs::read(repo_path(&format!("{DIR}/hostile/{name}"))).unwrap())
}

const MARKER: &str = "/tmp/gemma-cyber-pwned";

#[test]
fn a_checkpoint_calling_os_system_is_refused_and_nothing_runs() {
    let _ = std::fs::remove_file(MARKER);
    let message = refused_file("os_system.pt");
    // pickle writes os.system as posix.system on Linux.
    assert!(message.contains("refused global posix.system"), "{message}");
    assert!(message.contains("nothing was executed"), "{message}");
    assert!(!std::path::Path::new(MARKER).exists(), "the command ran");
}

#[test]
fn a_checkpoint_calling_builtins_eval_is_refused() {
    let message = refused_file("builtins_eval.pt");
    assert!(
        message.contains("refused global __builtin__.eval"),
        "{message}"
    );
}

#[test]
fn a_whole_pickled_module_is_refused_with_a_hint() {
    let message = refused_file("whole_module.pt");
    assert!(
        message.contains("refused global torch.nn.modules.linear.Linear"),
        "{message}"
    );
}

#[test]
fn a_zip_bomb_is_refused_without_inflating() {
    let message = refused_file("zip_bomb.pt");
    assert!(message.contains("is compressed"), "{message}");
}

#[test]
fn truncated_and_non_zip_files_are_refused() {
    let bytes = std::fs::read(repo_path(&format!("{DIR}/sequential_bn_relu.pt"))).unwrap();
    for cut in [0, 4, 100, bytes.len() / 2, bytes.len() - 1] {
        refused(&bytes[..cut]);
    }
    assert!(refused(b"\x80\x02}q\x00.").contains("legacy"));
    assert!(refused(b"{\"not\": \"a checkpoint\"}").contains("not a zip file"));
}

/// A pickle writer for crafted checkpoints: the opcodes torch.save emits.
#[derive(Default)]
struct Pickler(Vec<u8>);

impl Pickler {
    fn op(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.extend_from_slice(bytes);
        self
    }
    fn str(&mut self, s: &str) -> &mut Self {
        self.0.push(b'X');
        self.0.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.op(s.as_bytes())
    }
    fn int(&mut self, v: u64) -> &mut Self {
        self.0.push(0x8a);
        self.0.push(8);
        self.op(&v.to_le_bytes())
    }
    fn global(&mut self, module: &str, name: &str) -> &mut Self {
        self.op(format!("c{module}\n{name}\n").as_bytes())
    }
    fn ints(&mut self, values: &[u64]) -> &mut Self {
        self.op(b"(");
        for v in values {
            self.int(*v);
        }
        self.op(b"t")
    }
    /// `_rebuild_tensor_v2(storage, 0, shape, contiguous stride, False, OrderedDict())`.
    fn tensor(&mut self, storage_class: &str, key: &str, numel: u64, shape: &[u64]) -> &mut Self {
        let mut stride = vec![1; shape.len()];
        for d in (0..shape.len().saturating_sub(1)).rev() {
            stride[d] = stride[d + 1] * shape[d + 1];
        }
        self.view(storage_class, key, numel, 0, shape, &stride)
    }
    /// `_rebuild_tensor_v2(storage, offset, shape, stride, False, OrderedDict())`.
    fn view(
        &mut self,
        storage_class: &str,
        key: &str,
        numel: u64,
        offset: u64,
        shape: &[u64],
        stride: &[u64],
    ) -> &mut Self {
        self.global("torch._utils", "_rebuild_tensor_v2").op(b"((");
        self.str("storage")
            .global("torch", storage_class)
            .str(key)
            .str("cpu")
            .int(numel);
        self.op(b"tQ")
            .int(offset)
            .ints(shape)
            .ints(stride)
            .op(b"\x89");
        self.global("collections", "OrderedDict").op(b")RtR")
    }
}

/// One tensor of a crafted state dict: name, storage class, shape; storage numel equals the
/// shape's unless `numel` says otherwise.
struct Spec<'a> {
    name: &'a str,
    class: &'a str,
    shape: Vec<u64>,
    numel: Option<u64>,
    bytes: Option<usize>,
}

fn spec<'a>(name: &'a str, shape: &[u64]) -> Spec<'a> {
    Spec {
        name,
        class: "FloatStorage",
        shape: shape.to_vec(),
        numel: None,
        bytes: None,
    }
}

/// The small model LayerNorm(8) → Linear(8→4) + BN(4) → Linear(4→1), as a Sequential state dict.
fn small_model() -> Vec<Spec<'static>> {
    vec![
        spec("0.weight", &[8]),
        spec("0.bias", &[8]),
        spec("1.weight", &[4, 8]),
        spec("1.bias", &[4]),
        spec("2.weight", &[4]),
        spec("2.bias", &[4]),
        spec("2.running_mean", &[4]),
        spec("2.running_var", &[4]),
        spec("4.weight", &[1, 4]),
        spec("4.bias", &[1]),
    ]
}

/// A torch.save-shaped zip (stored entries) holding `specs` as an OrderedDict state dict; every
/// float is 0.5.
fn crafted(specs: &[Spec<'_>]) -> Vec<u8> {
    let (pickle, storages) = crafted_parts(specs);
    torch_zip(&pickle, &storages)
}

/// The pickle and the storages of [`crafted`], to be zipped.
fn crafted_parts(specs: &[Spec<'_>]) -> (Vec<u8>, Vec<(String, Vec<u8>)>) {
    let mut p = Pickler::default();
    p.op(b"\x80\x02")
        .global("collections", "OrderedDict")
        .op(b")R(");
    let mut storages = Vec::new();
    for (i, s) in specs.iter().enumerate() {
        let key = i.to_string();
        let numel = s.numel.unwrap_or(s.shape.iter().product());
        p.str(s.name).tensor(s.class, &key, numel, &s.shape);
        let len = s.bytes.unwrap_or(numel as usize * 4);
        storages.push((
            key,
            0.5f32.to_le_bytes().repeat(len.div_ceil(4))[..len].to_vec(),
        ));
    }
    p.op(b"u.");
    (p.0, storages)
}

fn torch_zip(pickle: &[u8], storages: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    zip.start_file("archive/data.pkl", stored).unwrap();
    zip.write_all(pickle).unwrap();
    zip.start_file("archive/byteorder", stored).unwrap();
    zip.write_all(b"little").unwrap();
    for (key, bytes) in storages {
        zip.start_file(format!("archive/data/{key}"), stored)
            .unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

#[test]
fn the_crafted_small_model_converts() {
    // The baseline every crafted hostile file below departs from by one thing.
    let conversion = convert_checkpoint(&crafted(&small_model()), &ConvertOptions::default())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(conversion.model.input_dim(), 8);
    assert_eq!(conversion.model.hidden_sizes(), &[4]);
}

#[test]
fn strided_views_with_an_offset_are_read_element_by_element() {
    // 1.weight W[o][i] = 8 o + i, stored transposed after 100 unrelated floats: offset 100,
    // shape [4, 8], stride [1, 4] (what `weight.t()` of a contiguous [8, 4] tensor looks like).
    let (_, mut storages) = crafted_parts(&small_model());
    let mut p = Pickler::default();
    p.op(b"\x80\x02")
        .global("collections", "OrderedDict")
        .op(b")R(");
    for (i, s) in small_model().iter().enumerate() {
        let numel: u64 = s.shape.iter().product();
        if s.name == "1.weight" {
            p.str(s.name)
                .view("FloatStorage", "w", 132, 100, &[4, 8], &[1, 4]);
        } else {
            p.str(s.name)
                .tensor("FloatStorage", &i.to_string(), numel, &s.shape);
        }
    }
    p.op(b"u.");
    let mut transposed = vec![-1.0f32; 100];
    for i in 0..8 {
        for o in 0..4 {
            transposed.push((8 * o + i) as f32);
        }
    }
    storages.push((
        "w".to_owned(),
        transposed.iter().flat_map(|v| v.to_le_bytes()).collect(),
    ));
    let conversion = convert_checkpoint(&torch_zip(&p.0, &storages), &ConvertOptions::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let file = safetensors::SafeTensors::deserialize(&conversion.safetensors).unwrap();
    let weight: Vec<f32> = file
        .tensor("hidden.0.linear.weight")
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    assert_eq!(weight, (0..32).map(|v| v as f32).collect::<Vec<_>>());
}

#[test]
fn a_storage_shorter_than_its_tensor_claims_is_refused() {
    let mut specs = small_model();
    specs[2].bytes = Some(20);
    let message = refused(&crafted(&specs));
    assert!(
        message.contains("storage \"2\" is 20 bytes but the pickle says it holds 128"),
        "{message}"
    );
}

#[test]
fn a_refusal_lists_a_few_modules_with_short_names() {
    // 200 Linear modules with 1,000-character names: the listing made a line of megabytes.
    let names: Vec<String> = (0..200)
        .map(|i| format!("{}{i:04}.weight", "a".repeat(1000)))
        .collect();
    let specs: Vec<Spec<'_>> = names.iter().map(|name| spec(name, &[1, 4])).collect();
    let message = refused(&crafted(&specs));
    assert!(message.contains("and 180 more"), "{message}");
    assert!(message.len() < 4096, "{} bytes", message.len());
}

#[test]
fn a_tensor_larger_than_its_storage_is_refused() {
    let mut specs = small_model();
    specs[2].numel = Some(16);
    let message = refused(&crafted(&specs));
    assert!(message.contains("has 32 elements but storage"), "{message}");
}

#[test]
fn mismatched_shapes_are_refused() {
    let mut specs = small_model();
    specs[6].shape = vec![3];
    let message = refused(&crafted(&specs));
    assert!(
        message.contains("2: BatchNorm1d(3): weight has shape [4]")
            || message.contains("running_mean has shape [3]; expected [4]"),
        "{message}"
    );

    let mut specs = small_model();
    specs[2].shape = vec![4, 7];
    let message = refused(&crafted(&specs));
    assert!(
        message.contains("1: Linear(7→4) does not take the 8 values before it"),
        "{message}"
    );

    let mut specs = small_model();
    specs[8].shape = vec![2, 4];
    specs[9].shape = vec![2];
    let message = refused(&crafted(&specs));
    assert!(message.contains("is not Linear(4→1)"), "{message}");
}

#[test]
fn a_model_that_is_not_this_architecture_is_refused() {
    // No LayerNorm.
    let message = refused(&crafted(&small_model()[2..]));
    assert!(message.contains("modules with weights"), "{message}");
    // An unknown kind of module.
    let mut specs = small_model();
    specs.insert(2, spec("1.scale", &[4]));
    let message = refused(&crafted(&specs));
    assert!(
        message.contains("not a LayerNorm, Linear or BatchNorm1d"),
        "{message}"
    );
}

#[test]
fn parameters_without_batchnorm_buffers_get_a_hint() {
    // What `dict(model.named_parameters())` saves: BatchNorm's weight and bias, no running stats.
    let specs: Vec<Spec<'_>> = small_model()
        .into_iter()
        .filter(|s| !s.name.contains("running"))
        .collect();
    let message = refused(&crafted(&specs));
    assert!(message.contains("save model.state_dict()"), "{message}");
}

#[test]
fn integer_weights_are_refused() {
    let mut specs = small_model();
    specs[2].class = "LongStorage";
    specs[2].bytes = Some(32 * 8);
    let message = refused(&crafted(&specs));
    assert!(message.contains("must be floating point"), "{message}");
}

#[test]
fn an_absurd_tensor_count_is_refused() {
    let names: Vec<String> = (0..5000).map(|i| format!("t{i}.weight")).collect();
    let specs: Vec<Spec<'_>> = names.iter().map(|n| spec(n, &[1])).collect();
    let message = refused(&crafted(&specs));
    assert!(message.contains("more than 4096 tensors"), "{message}");
}

#[test]
fn a_huge_claimed_storage_is_refused_without_allocating_it() {
    let mut specs = small_model();
    // 2^40 floats claimed, 128 bytes present: refused when read, never allocated.
    specs[2].numel = Some(1 << 40);
    specs[2].bytes = Some(128);
    let message = refused(&crafted(&specs));
    assert!(
        message.contains("is 128 bytes but the pickle says it holds"),
        "{message}"
    );
}

#[test]
fn a_self_referencing_extra_entry_is_walked_a_bounded_number_of_times() {
    // {"model_state_dict": ..., "loop": d} where d holds 1000 references to itself: a walk
    // bounded by depth alone would visit 1000^4 values.
    let (pickle, storages) = crafted_parts(&small_model());
    let state_dict = &pickle[2..pickle.len() - 1];
    let mut p = Pickler::default();
    p.op(b"\x80\x02}(").str("model_state_dict").op(state_dict);
    p.str("loop").op(b"}q\x01(");
    for i in 0..1000 {
        p.str(&format!("k{i}")).op(b"h\x01");
    }
    p.op(b"uu.");
    let started = std::time::Instant::now();
    let conversion = convert_checkpoint(&torch_zip(&p.0, &storages), &ConvertOptions::default())
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(started.elapsed().as_secs() < 20);
    assert!(
        conversion
            .report
            .iter()
            .any(|l| l.contains("more than 4096 values to look at")),
        "{:?}",
        conversion.report
    );
}

/// A zip whose classic end record claims one entry but, its directory offset saturated at
/// 0xFFFFFFFF, sends the zip reader to a zip64 record claiming `entries` (directory records all
/// named alike, which the reader's name index collapses into one).
fn zip64_claiming(entries: u32) -> Vec<u8> {
    let name = b"archive/data.pkl";
    let data = b"\x80\x02}.";
    let mut bytes = Vec::new();
    bytes.extend_from_slice(b"PK\x03\x04");
    for field in [20u16, 0, 0, 0, 0] {
        bytes.extend_from_slice(&field.to_le_bytes());
    }
    bytes.extend_from_slice(&0u32.to_le_bytes()); // crc
    bytes.extend_from_slice(&(data.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&(data.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&(name.len() as u16).to_le_bytes());
    bytes.extend_from_slice(&0u16.to_le_bytes());
    bytes.extend_from_slice(name);
    bytes.extend_from_slice(data);
    let directory_start = bytes.len() as u64;
    for _ in 0..entries {
        bytes.extend_from_slice(b"PK\x01\x02");
        for field in [20u16, 20, 0, 0, 0, 0] {
            bytes.extend_from_slice(&field.to_le_bytes());
        }
        bytes.extend_from_slice(&[0; 12]); // crc, sizes
        bytes.extend_from_slice(&1u16.to_le_bytes()); // name length
        bytes.extend_from_slice(&[0; 12]); // extra, comment, disk, attributes
        bytes.extend_from_slice(&0u32.to_le_bytes()); // local header offset
        bytes.push(b'x');
    }
    let zip64_record = bytes.len() as u64;
    let directory_len = zip64_record - directory_start;
    bytes.extend_from_slice(b"PK\x06\x06");
    bytes.extend_from_slice(&44u64.to_le_bytes());
    bytes.extend_from_slice(&45u16.to_le_bytes());
    bytes.extend_from_slice(&45u16.to_le_bytes());
    bytes.extend_from_slice(&[0; 8]); // disks
    bytes.extend_from_slice(&u64::from(entries).to_le_bytes());
    bytes.extend_from_slice(&u64::from(entries).to_le_bytes());
    bytes.extend_from_slice(&directory_len.to_le_bytes());
    bytes.extend_from_slice(&directory_start.to_le_bytes());
    bytes.extend_from_slice(b"PK\x06\x07");
    bytes.extend_from_slice(&0u32.to_le_bytes());
    bytes.extend_from_slice(&zip64_record.to_le_bytes());
    bytes.extend_from_slice(&1u32.to_le_bytes());
    bytes.extend_from_slice(b"PK\x05\x06");
    bytes.extend_from_slice(&[0; 4]); // disks
    bytes.extend_from_slice(&1u16.to_le_bytes());
    bytes.extend_from_slice(&1u16.to_le_bytes());
    bytes.extend_from_slice(&u32::MAX.to_le_bytes());
    bytes.extend_from_slice(&u32::MAX.to_le_bytes());
    bytes.extend_from_slice(&0u16.to_le_bytes());
    bytes
}

#[test]
fn a_zip64_entry_count_behind_a_saturated_classic_record_is_refused() {
    // Before, only a classic count of 0xFFFF sent the check to the zip64 record: this claim went
    // unchecked, and the reader reserved and parsed every record (8 times the file in memory, or
    // an abort when the reservation failed).
    let message = refused(&zip64_claiming(20_000));
    assert!(
        message.contains("claims 20000 entries; the limit is 16384"),
        "{message}"
    );
}

#[test]
fn an_absurd_zip_entry_count_is_refused_before_reading_the_directory() {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for i in 0..20_000 {
        zip.start_file(format!("archive/data/{i}"), stored).unwrap();
    }
    let bytes = zip.finish().unwrap().into_inner();
    let message = refused(&bytes);
    assert!(
        message.contains("claims 20000 entries; the limit is 16384"),
        "{message}"
    );
}

#[test]
fn zip_entries_sharing_their_bytes_are_refused() {
    // Every storage claims 16384 floats (64 KiB); each tensor views the first few.
    let mut specs = small_model();
    for spec in &mut specs {
        spec.numel = Some(16384);
    }
    let (pickle, mut storages) = crafted_parts(&specs);
    convert_checkpoint(&torch_zip(&pickle, &storages), &ConvertOptions::default())
        .unwrap_or_else(|e| panic!("each storage with bytes of its own converts: {e}"));
    // Only storage 0 keeps its bytes; the directory records of the others are pointed at them,
    // so ten 64 KiB reads come from a 66 KiB file.
    for (key, bytes) in &mut storages {
        if key != "0" {
            bytes.clear();
        }
    }
    let mut bytes = torch_zip(&pickle, &storages);
    let eocd = bytes.len() - 22;
    assert_eq!(&bytes[eocd..eocd + 4], b"PK\x05\x06");
    let field = |bytes: &[u8], at: usize, len: usize| {
        let mut buf = [0u8; 4];
        buf[..len].copy_from_slice(&bytes[at..at + len]);
        u32::from_le_bytes(buf) as usize
    };
    let mut record = field(&bytes, eocd + 16, 4);
    let mut shared = None;
    let mut aliases = Vec::new();
    while &bytes[record..record + 4] == b"PK\x01\x02" {
        let name_len = field(&bytes, record + 28, 2);
        let name = &bytes[record + 46..record + 46 + name_len];
        if name == b"archive/data/0" {
            // CRC, sizes, and the local header's offset.
            let fields = [
                &bytes[record + 16..record + 28],
                &bytes[record + 42..record + 46],
            ];
            shared = Some(fields.map(<[u8]>::to_vec));
        } else if name.starts_with(b"archive/data/") {
            aliases.push(record);
        }
        record += 46 + name_len + field(&bytes, record + 30, 2) + field(&bytes, record + 32, 2);
    }
    let [sizes, offset] = shared.expect("archive/data/0 in the directory");
    assert_eq!(aliases.len(), 9);
    for record in aliases {
        bytes[record + 16..record + 28].copy_from_slice(&sizes);
        bytes[record + 42..record + 46].copy_from_slice(&offset);
    }
    let message = refused(&bytes);
    assert!(
        message.contains("overlaps entries already read"),
        "{message}"
    );
}

#[test]
fn a_file_of_end_of_directory_records_is_refused() {
    // 256 KiB of end-of-central-directory records after a local header's signature, each
    // claiming one entry in a directory at offset 0: tried one by one, from the last.
    let mut bytes = b"PK\x03\x04".to_vec();
    let record = b"PK\x05\x06\0\0\0\0\x01\0\x01\0\x2e\0\0\0\0\0\0\0\0\0";
    while bytes.len() + record.len() <= 256 * 1024 {
        bytes.extend_from_slice(record);
    }
    let message = refused(&bytes);
    assert!(message.contains("not a readable zip file"), "{message}");
}

#[test]
fn a_missing_storage_entry_is_refused() {
    let (pickle, mut storages) = crafted_parts(&small_model());
    storages.retain(|(key, _)| key != "2");
    let message = refused(&torch_zip(&pickle, &storages));
    assert!(
        message.contains("the zip has no archive/data/2"),
        "{message}"
    );
}

// ---------------------------------------------------------------------------------------------
// The command line.

#[test]
fn cli_converts_reads_config_json_and_prints_what_it_inferred() {
    let out = std::env::temp_dir().join(format!(
        "gemma-cyber-convert-{}.safetensors",
        std::process::id()
    ));
    let output = cli(&[
        "convert",
        &format!("{DIR}/with_config/nested_relu_bn_f64.pt"),
        "-o",
        out.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("config: tests/fixtures/checkpoints/with_config/config.json"),
        "{stdout}"
    );
    assert!(
        stdout.contains("norm order: linear_relu_bn (inferred"),
        "{stdout}"
    );
    assert!(
        stdout.contains("layers: input_norm: LayerNorm(768) → hidden.0: Linear(768→512)"),
        "{stdout}"
    );
    let model = gemma_cyber::Model::from_path(&out).unwrap();
    assert_eq!(model.threshold(), 0.4);
    std::fs::remove_file(&out).unwrap();
}

#[test]
fn cli_norm_order_flag_and_no_config() {
    let out = std::env::temp_dir().join(format!(
        "gemma-cyber-convert-flag-{}.safetensors",
        std::process::id()
    ));
    let output = cli(&[
        "convert",
        &format!("{DIR}/with_config/nested_relu_bn_f64.pt"),
        "-o",
        out.to_str().unwrap(),
        "--norm-order",
        "linear_bn_relu",
        "--no-config",
    ]);
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("config: none"), "{stdout}");
    assert!(
        stdout.contains("norm order: linear_bn_relu (forced by the caller"),
        "{stdout}"
    );
    let model = gemma_cyber::Model::from_path(&out).unwrap();
    assert_eq!(model.threshold(), 0.5);
    std::fs::remove_file(&out).unwrap();
}

#[test]
fn cli_prints_names_from_the_checkpoint_escaped() {
    // A global whose module and name carry terminal commands: the refusal quotes them, inertly.
    let mut pickle = Pickler::default();
    pickle
        .op(b"\x80\x02")
        .global("os\u{1b}]0;owned\u{7}", "system\u{1b}[2J\u{9b}1m")
        .op(b".");
    let path = std::env::temp_dir().join(format!(
        "gemma-cyber-convert-escape-{}.pt",
        std::process::id()
    ));
    std::fs::write(&path, torch_zip(&pickle.0, &[])).unwrap();
    let out = path.with_extension("safetensors");
    let output = cli(&[
        "convert",
        path.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    let _ = std::fs::remove_file(&path);
    assert_eq!(output.status.code(), Some(10 + Status::ModelInvalid as i32));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("os\\u{1b}]0;owned\\u{7}"), "{stderr}");
    assert!(
        !stderr.trim_end_matches('\n').chars().any(char::is_control),
        "{stderr:?}"
    );
    assert!(!out.exists());
}

#[test]
fn cli_exit_codes_say_missing_or_refused_and_no_output_is_left() {
    let out = std::env::temp_dir().join(format!(
        "gemma-cyber-convert-bad-{}.safetensors",
        std::process::id()
    ));
    let output = cli(&["convert", "no/such/model.pt", "-o", out.to_str().unwrap()]);
    assert_eq!(
        output.status.code(),
        Some(10 + Status::ModelNotFound as i32)
    );
    let output = cli(&[
        "convert",
        &format!("{DIR}/hostile/os_system.pt"),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(10 + Status::ModelInvalid as i32));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("refused global posix.system"), "{stderr}");
    assert!(!out.exists());
}

// ---------------------------------------------------------------------------------------------
// Shapes and sizes that once panicked, and pickles that once took unbounded work.

/// The crafted file through the Rust API and through `gemma-cyber convert`: both refuse it as
/// MODEL_INVALID (exit 15) with one line, and nothing is written. Returns the API's message.
fn refused_everywhere(bytes: &[u8], name: &str) -> String {
    let message = refused(bytes);
    let dir =
        std::env::temp_dir().join(format!("gemma-cyber-hostile-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join(format!("{name}.pt"));
    let out = dir.join("out.safetensors");
    std::fs::write(&input, bytes).unwrap();
    let output = cli(&[
        "convert",
        input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--no-config",
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(10 + Status::ModelInvalid as i32),
        "{name}: {stderr}"
    );
    assert_eq!(stderr.trim_end().lines().count(), 1, "{name}: {stderr}");
    assert!(!out.exists(), "{name}: an output was written");
    std::fs::remove_dir_all(&dir).unwrap();
    message
}

#[test]
fn a_zero_dimensional_batchnorm_buffer_is_refused() {
    for part in ["2.running_mean", "2.running_var", "2.weight"] {
        let mut specs = small_model();
        let spec = specs.iter_mut().find(|s| s.name == part).unwrap();
        spec.shape = vec![];
        let message = refused_everywhere(&crafted(&specs), "bn_0d");
        assert!(
            message.contains("has shape []; expected [4]"),
            "{part}: {message}"
        );
    }
    // A 0-d LayerNorm weight and a 1-d Linear weight are refused as well.
    let mut specs = small_model();
    specs[0].shape = vec![];
    specs[1].shape = vec![];
    refused_everywhere(&crafted(&specs), "ln_0d");
}

#[test]
fn a_storage_named_twice_with_a_huge_element_count_is_refused() {
    // Tensor "1.bias" views storage "0" (the LayerNorm weight's, 8 floats, read first) but claims
    // it holds 2^62 elements and sits at its end: the claim's byte count wraps 64 bits. Named
    // first, the claim is refused as soon as its size is computed.
    let specs = small_model();
    let mut p = Pickler::default();
    p.op(b"\x80\x02")
        .global("collections", "OrderedDict")
        .op(b")R(");
    let mut storages = Vec::new();
    for (i, s) in specs.iter().enumerate() {
        let key = i.to_string();
        let numel: u64 = s.shape.iter().product();
        p.str(s.name);
        if s.name == "1.bias" {
            p.view("FloatStorage", "0", 1 << 62, (1 << 62) - 4, &[4], &[1]);
        } else {
            p.tensor(s.class, &key, numel, &s.shape);
        }
        storages.push((key, 0.5f32.to_le_bytes().repeat(numel as usize)));
    }
    p.op(b"u.");
    let message = refused_everywhere(&torch_zip(&p.0, &storages), "storage_twice");
    assert!(message.contains("storage \"0\""), "{message}");
    let mut first = small_model();
    first[0].numel = Some(1 << 62);
    first[0].bytes = Some(32);
    let message = refused_everywhere(&crafted(&first), "storage_huge");
    assert!(message.contains("more than 64 bits count"), "{message}");
}

/// A checkpoint dict holding the small model's state dict plus `extra` (pickle opcodes leaving one
/// value on the stack) under the key "extra".
fn with_extra(extra: &[u8]) -> Vec<u8> {
    let (pickle, storages) = crafted_parts(&small_model());
    let state_dict = &pickle[2..pickle.len() - 1];
    let mut p = Pickler::default();
    p.op(b"\x80\x02}(").str("model_state_dict").op(state_dict);
    p.str("extra").op(extra);
    p.op(b"u.");
    torch_zip(&p.0, &storages)
}

/// Converts a checkpoint with `extra` beside its state dict; its report must hold `fragment`.
fn converted_reporting(extra: &Pickler, fragment: &str) -> Conversion {
    let conversion = convert_checkpoint(&with_extra(&extra.0), &ConvertOptions::default())
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        conversion.report.iter().any(|line| line.contains(fragment)),
        "{fragment:?} not in {:?}",
        conversion.report
    );
    conversion
}

#[test]
fn kept_metadata_stays_within_what_a_model_header_may_hold() {
    // 100 values of 4,000 control characters, 24,000 bytes each once escaped as JSON: kept whole,
    // they made a header over the loader's 1 MiB, and the conversion refused its own model.
    let mut extra = Pickler::default();
    extra.op(b"}(");
    for i in 0..100 {
        extra.str(&format!("note{i}")).str(&"\u{1}".repeat(4000));
    }
    extra.op(b"u");
    let conversion =
        converted_reporting(&extra, "the kept entries would take more than 262144 bytes");
    assert!(conversion
        .model
        .metadata()
        .contains_key("checkpoint.extra.note0"));
}

#[test]
fn setting_one_long_key_many_times_is_linear_work() {
    // A 64 KiB key memoised, then set 20,000 times in one dict and once in 20,000 dicts: a
    // reader that copied or hashed the key's bytes each time would move gigabytes.
    let mut extra = Pickler::default();
    extra.op(b"(}q\x02");
    extra.str(&"k".repeat(65536)).op(b"q\x03");
    extra.op(b"0");
    for _ in 0..20_000 {
        extra.op(b"h\x03Ns");
    }
    for _ in 0..20_000 {
        extra.op(b"}h\x03Ns0");
    }
    extra.op(b"t");
    let conversion = convert_checkpoint(&with_extra(&extra.0), &ConvertOptions::default())
        .unwrap_or_else(|e| panic!("{e}"));
    // The long key is not metadata, and the report says so in a line of bounded length.
    assert!(conversion.report.iter().all(|line| line.len() < 1024));
    assert!(!conversion.model.metadata().keys().any(|k| k.len() > 1024));
}

#[test]
fn an_ordered_dict_rebuilt_from_one_shared_list_is_stopped_by_the_item_budget() {
    // One list of 1,000 pairs, memoised, then OrderedDict(list) 100,000 times in 0.8 MB: 10^8
    // entries if each were built.
    let mut extra = Pickler::default();
    extra.global("collections", "OrderedDict").op(b"q\x04");
    extra.op(b"](");
    for i in 0..1000 {
        extra.str(&format!("k{i}")).op(b"N\x86");
    }
    extra.op(b"e\x85q\x05(");
    for _ in 0..100_000 {
        extra.op(b"h\x04h\x05R0");
    }
    extra.op(b"t");
    let bytes = with_extra(&extra.0);
    let message = refused_everywhere(&bytes, "ordered_dict_bomb");
    assert!(message.contains("container items"), "{message}");
}

#[test]
fn a_list_of_one_long_string_repeated_is_not_built_as_metadata() {
    // A 1 MiB string memoised and listed 1,000 times, then that list named by 4,000 entries:
    // building each as JSON text would take gigabytes.
    let mut extra = Pickler::default();
    extra.op(b"}(");
    extra.str("list").op(b"](");
    extra.str(&"x".repeat(1 << 20)).op(b"q\x06");
    for _ in 0..999 {
        extra.op(b"h\x06");
    }
    extra.op(b"eq\x07");
    for i in 0..4000 {
        extra.str(&format!("again{i}")).op(b"h\x07");
    }
    extra.op(b"u");
    converted_reporting(
        &extra,
        "checkpoint.extra.list (longer than 4096 characters)",
    );
}
