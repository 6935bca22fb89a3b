//! The ONNX graph of a folded [`Model`], encoded in memory.
//!
//! Only the few ONNX protobuf messages and fields the graph needs are declared here (field numbers
//! from `onnx/onnx.proto`), so no protoc, no Python and no second weights file: the graph is made
//! at create time from the same weights every other backend runs.

use prost::Message;

use gemma_cyber_plugin::Model;

/// Name of the graph's input: `rows × input_dim` float embeddings.
pub const INPUT: &str = "embeddings";
/// Name of the graph's output: `rows × 1` probabilities.
pub const OUTPUT: &str = "probability";
/// The ONNX operator set the graph is written against; 17 is the first with LayerNormalization,
/// and ONNX Runtime 1.17 (ort's lowest supported API) runs it.
pub const OPSET: i64 = 17;
/// IR version 8 goes with opset 17.
const IR_VERSION: i64 = 8;

/// `TensorProto.DataType.FLOAT`.
const FLOAT: i32 = 1;
/// `AttributeProto.AttributeType.FLOAT`.
const ATTRIBUTE_FLOAT: i32 = 1;
/// `AttributeProto.AttributeType.INT`.
const ATTRIBUTE_INT: i32 = 2;
const ATTRIBUTE_INTS: i32 = 7;

#[derive(Clone, PartialEq, Message)]
struct ModelProto {
    #[prost(int64, tag = "1")]
    ir_version: i64,
    #[prost(string, tag = "2")]
    producer_name: String,
    #[prost(string, tag = "3")]
    producer_version: String,
    #[prost(message, optional, tag = "7")]
    graph: Option<GraphProto>,
    #[prost(message, repeated, tag = "8")]
    opset_import: Vec<OperatorSetIdProto>,
}

#[derive(Clone, PartialEq, Message)]
struct OperatorSetIdProto {
    #[prost(string, tag = "1")]
    domain: String,
    #[prost(int64, tag = "2")]
    version: i64,
}

#[derive(Clone, PartialEq, Message)]
struct GraphProto {
    #[prost(message, repeated, tag = "1")]
    node: Vec<NodeProto>,
    #[prost(string, tag = "2")]
    name: String,
    #[prost(message, repeated, tag = "5")]
    initializer: Vec<TensorProto>,
    #[prost(message, repeated, tag = "11")]
    input: Vec<ValueInfoProto>,
    #[prost(message, repeated, tag = "12")]
    output: Vec<ValueInfoProto>,
}

#[derive(Clone, PartialEq, Message)]
struct NodeProto {
    #[prost(string, repeated, tag = "1")]
    input: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    output: Vec<String>,
    #[prost(string, tag = "3")]
    name: String,
    #[prost(string, tag = "4")]
    op_type: String,
    #[prost(message, repeated, tag = "5")]
    attribute: Vec<AttributeProto>,
}

#[derive(Clone, PartialEq, Message)]
struct AttributeProto {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(float, tag = "2")]
    f: f32,
    #[prost(int64, tag = "3")]
    i: i64,
    #[prost(int64, repeated, tag = "8")]
    ints: Vec<i64>,
    #[prost(int32, tag = "20")]
    r#type: i32,
}

#[derive(Clone, PartialEq, Message)]
struct TensorProto {
    #[prost(int64, repeated, tag = "1")]
    dims: Vec<i64>,
    #[prost(int32, tag = "2")]
    data_type: i32,
    #[prost(string, tag = "8")]
    name: String,
    /// Little-endian values, as ONNX requires.
    #[prost(bytes = "vec", tag = "9")]
    raw_data: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
struct ValueInfoProto {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "2")]
    r#type: Option<TypeProto>,
}

/// `TypeProto` with only its `tensor_type` alternative.
#[derive(Clone, PartialEq, Message)]
struct TypeProto {
    #[prost(message, optional, tag = "1")]
    tensor_type: Option<TensorTypeProto>,
}

/// `TypeProto.Tensor`.
#[derive(Clone, PartialEq, Message)]
struct TensorTypeProto {
    #[prost(int32, tag = "1")]
    elem_type: i32,
    #[prost(message, optional, tag = "2")]
    shape: Option<TensorShapeProto>,
}

#[derive(Clone, PartialEq, Message)]
struct TensorShapeProto {
    #[prost(message, repeated, tag = "1")]
    dim: Vec<Dimension>,
}

/// `TensorShapeProto.Dimension`: a fixed size or a named free one.
#[derive(Clone, PartialEq, Message)]
struct Dimension {
    #[prost(oneof = "DimensionValue", tags = "1, 2")]
    value: Option<DimensionValue>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum DimensionValue {
    #[prost(int64, tag = "1")]
    DimValue(i64),
    #[prost(string, tag = "2")]
    DimParam(String),
}

/// The serialized ONNX model of `model`: each row less its mean (ReduceMean, Sub), then
/// LayerNormalization (no affine: it is folded), then one Gemm per dense layer with Relu where the
/// layer has one, then Sigmoid.
///
/// BatchNorm is already folded into the dense layers in the order the file records, so the graph
/// computes exactly what the cpu backend computes. The subtraction changes nothing LayerNorm
/// computes, only how well float32 does: ONNX Runtime's LayerNormalization sums a row's raw values
/// and their squares, which loses a narrow row far from zero (10,000 ± 0.01 came out up to 0.16
/// off); less a first estimate of its mean, every such row is near zero, where those sums are
/// exact enough.
pub fn onnx_model(model: &Model<'_>) -> Vec<u8> {
    let dim = model.input_dim();
    let mut initializer = vec![tensor("norm.scale", &[dim], &vec![1.0; dim])];
    let mut node = vec![
        NodeProto {
            input: vec![INPUT.into()],
            output: vec!["row_mean".into()],
            name: "row_mean".into(),
            op_type: "ReduceMean".into(),
            attribute: vec![ints_attribute("axes", &[-1]), int_attribute("keepdims", 1)],
        },
        NodeProto {
            input: vec![INPUT.into(), "row_mean".into()],
            output: vec!["centred".into()],
            name: "centred".into(),
            op_type: "Sub".into(),
            attribute: Vec::new(),
        },
        NodeProto {
            input: vec!["centred".into(), "norm.scale".into()],
            output: vec!["normalized".into()],
            name: "norm".into(),
            op_type: "LayerNormalization".into(),
            attribute: vec![
                int_attribute("axis", -1),
                float_attribute("epsilon", model.layer_norm_eps()),
            ],
        },
    ];
    let mut current = "normalized".to_string();
    let last = model.layers().len() - 1;
    for (i, layer) in model.layers().iter().enumerate() {
        let (weight, bias) = (format!("dense.{i}.weight"), format!("dense.{i}.bias"));
        // Gemm with transB reads the weight in PyTorch's `outputs × inputs` layout as stored.
        initializer.push(tensor(
            &weight,
            &[layer.outputs, layer.inputs],
            layer.weight,
        ));
        initializer.push(tensor(&bias, &[layer.outputs], layer.bias));
        let linear = format!("dense.{i}");
        node.push(NodeProto {
            input: vec![current, weight, bias],
            output: vec![linear.clone()],
            name: linear.clone(),
            op_type: "Gemm".into(),
            attribute: vec![int_attribute("transB", 1)],
        });
        current = linear;
        if layer.relu {
            let relu = format!("relu.{i}");
            node.push(simple_node("Relu", &current, &relu));
            current = relu;
        }
        if i == last {
            node.push(simple_node("Sigmoid", &current, OUTPUT));
        }
    }
    let output_width = model.layers()[last].outputs;
    ModelProto {
        ir_version: IR_VERSION,
        producer_name: "gemma-cyber".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        graph: Some(GraphProto {
            node,
            name: "gemma_cyber".into(),
            initializer,
            input: vec![value_info(INPUT, dim)],
            output: vec![value_info(OUTPUT, output_width)],
        }),
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: OPSET,
        }],
    }
    .encode_to_vec()
}

fn tensor(name: &str, dims: &[usize], values: &[f32]) -> TensorProto {
    TensorProto {
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: FLOAT,
        name: name.into(),
        raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

fn simple_node(op_type: &str, input: &str, output: &str) -> NodeProto {
    NodeProto {
        input: vec![input.into()],
        output: vec![output.into()],
        name: output.into(),
        op_type: op_type.into(),
        attribute: Vec::new(),
    }
}

fn int_attribute(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        i: value,
        r#type: ATTRIBUTE_INT,
        ..Default::default()
    }
}

fn ints_attribute(name: &str, values: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        ints: values.to_vec(),
        r#type: ATTRIBUTE_INTS,
        ..Default::default()
    }
}

fn float_attribute(name: &str, value: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        f: value,
        r#type: ATTRIBUTE_FLOAT,
        ..Default::default()
    }
}

/// A float tensor `rows × width`, `rows` left free.
fn value_info(name: &str, width: usize) -> ValueInfoProto {
    let dims = [
        DimensionValue::DimParam("rows".into()),
        DimensionValue::DimValue(width as i64),
    ];
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TensorTypeProto {
                elem_type: FLOAT,
                shape: Some(TensorShapeProto {
                    dim: dims
                        .into_iter()
                        .map(|value| Dimension { value: Some(value) })
                        .collect(),
                }),
            }),
        }),
    }
}
