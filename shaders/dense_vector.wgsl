// Dense layer, one invocation per output value: a vec4 dot product of an input row with a weight
// row, plus bias, then the activation. Best for tiny batches, for the one-output last layer, and
// on software adapters (lavapipe), where LLVM vectorises it better than the tiled kernel.
//
// output[row, col] = activate(dot(input[row, :], weight[col, :]) + bias[col])

// Inputs per row, in vec4s (the input width rounded up to 4, zero-padded).
override K4: u32;
// Outputs per row, padding included (padded weight rows and biases are zero).
override N: u32;

struct Params {
    // Rows in this chunk.
    rows: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> input: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> weight: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> output: array<f32>;

const THREADS: u32 = 64u;

@compute @workgroup_size(64)
fn main(
    @builtin(global_invocation_id) id: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    // Dispatches wider than the per-dimension limit spill into y.
    let index = id.x + id.y * groups.x * THREADS;
    let row = index / N;
    let col = index % N;
    if row >= params.rows {
        return;
    }
    let a = row * K4;
    let w = col * K4;
    var sum = vec4<f32>(0.0);
    for (var k = 0u; k < K4; k = k + 1u) {
        sum = fma(input[a + k], weight[w + k], sum);
    }
    output[row * N + col] = activate(sum.x + sum.y + sum.z + sum.w + bias[col]);
}
