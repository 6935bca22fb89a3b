// Dense layer without workgroup memory: each invocation computes one output column for ROWS
// consecutive rows, reading the input as vec4s and the transposed weights so that neighbouring
// invocations (neighbouring columns) read neighbouring addresses. The backend's only dense kernel,
// also for the one-output last layer (fused with the sigmoid): a tiled kernel in workgroup memory
// measured slower at every batch size, on lavapipe and on an NVIDIA H200 (docs/BENCHMARKS.md).
//
// output[row, col] = activate(dot(input[row, :], weight_t[:, col]) + bias[col])

// Inputs per row, in vec4s (the input width rounded up to 4, zero-padded).
override K4: u32;
// Outputs per row, padding included (padded weight columns and biases are zero).
override N: u32;

struct Params {
    // Rows in this chunk.
    rows: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> input: array<vec4<f32>>;
// Transposed: 4 * K4 rows of N values.
@group(0) @binding(2) var<storage, read> weight: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> output: array<f32>;

// Invocations per workgroup; set by the backend, whose dispatch depends on it.
override THREADS: u32;
// Rows per invocation, a multiple of 4: each weight value loaded serves this many rows. Set by
// the backend, whose dispatch depends on it.
override ROWS: u32;

// Workgroup (x, y) computes columns THREADS x … THREADS x + THREADS - 1 of rows ROWS y …
// ROWS y + ROWS - 1: the rows are the same for the whole workgroup, so compilers can load the
// input once for all of its invocations.
@compute @workgroup_size(THREADS)
fn main(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let col = group.x * THREADS + lane;
    let row0 = group.y * ROWS;
    if col >= N || row0 >= params.rows {
        return;
    }
    let b = bias[col];
    if row0 + ROWS <= params.rows {
        // Four rows at a time, one vec4 of sums.
        for (var r = row0; r < row0 + ROWS; r = r + 4u) {
            let a0 = r * K4;
            let a1 = a0 + K4;
            let a2 = a1 + K4;
            let a3 = a2 + K4;
            var acc = vec4<f32>(0.0);
            for (var k = 0u; k < K4; k = k + 1u) {
                let w = weight_column(k, col);
                acc = acc + vec4<f32>(
                    dot(input[a0 + k], w),
                    dot(input[a1 + k], w),
                    dot(input[a2 + k], w),
                    dot(input[a3 + k], w),
                );
            }
            for (var i = 0u; i < 4u; i = i + 1u) {
                output[(r + i) * N + col] = activate(acc[i] + b);
            }
        }
    } else {
        // The chunk's last, partial group of rows (all of a batch under ROWS rows): one at a time,
        // so a single row costs one pass over the weights, not four.
        for (var row = row0; row < params.rows; row = row + 1u) {
            let a = row * K4;
            var acc = 0.0;
            for (var k = 0u; k < K4; k = k + 1u) {
                acc = acc + dot(input[a + k], weight_column(k, col));
            }
            output[row * N + col] = activate(acc + b);
        }
    }
}

// Weights k4 * 4 … k4 * 4 + 3 of output column `col`.
fn weight_column(k4: u32, col: u32) -> vec4<f32> {
    let base = 4u * k4 * N + col;
    return vec4<f32>(weight[base], weight[base + N], weight[base + 2u * N], weight[base + 3u * N]);
}
