// Dense layer as a tiled matrix product for real GPUs: each workgroup computes a 64×64 tile of
// the output, staging 64×16 slices of the input and the weights in workgroup memory; each of its
// 16×16 invocations keeps a 4×4 block of outputs in registers.
//
// output[row, col] = activate(dot(input[row, :], weight_t[:, col]) + bias[col])

// Inputs per row (padding included; a multiple of 4).
override K: u32;
// Outputs per row, padding included (padded weight rows and biases are zero).
override N: u32;

struct Params {
    // Rows in this chunk.
    rows: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> input: array<f32>;
// Transposed: K rows of N values.
@group(0) @binding(2) var<storage, read> weight: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> output: array<f32>;

const TILE_M: u32 = 64u;
const TILE_N: u32 = 64u;
const TILE_K: u32 = 16u;
const SIDE: u32 = 16u;
const THREADS: u32 = 256u;
// Tile values each invocation loads: TILE_M * TILE_K / THREADS (TILE_N = TILE_M).
const LOADS: u32 = 4u;

// Stored k-major ([k][m] and [k][n]) so the inner loop reads 4 rows and 4 columns per k. The
// input tile's rows are one longer than the tile: its loads write down a column, and a stride of
// 64 would put all 16 of a row's writes in one memory bank.
const INPUT_STRIDE: u32 = 65u;
var<workgroup> tile_input: array<f32, 1040>;
var<workgroup> tile_weight: array<f32, 1024>;

@compute @workgroup_size(16, 16)
fn main(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(local_invocation_id) local: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let row0 = group.y * TILE_M;
    let col0 = group.x * TILE_N;
    // This invocation's outputs: rows local.y + 16 i, columns local.x + 16 j, so that
    // neighbouring invocations write neighbouring columns.
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);

    for (var k0 = 0u; k0 < K; k0 = k0 + TILE_K) {
        for (var i = 0u; i < LOADS; i = i + 1u) {
            // Neighbouring invocations load neighbouring addresses: k along an input row,
            // columns along a row of the transposed weights.
            let flat = lane + i * THREADS;
            let r = flat / TILE_K;
            let c = flat % TILE_K;
            let row = row0 + r;
            var a = 0.0;
            if row < params.rows && k0 + c < K {
                a = input[row * K + k0 + c];
            }
            tile_input[c * INPUT_STRIDE + r] = a;
            let wk = flat / TILE_N;
            let wn = flat % TILE_N;
            var w = 0.0;
            if col0 + wn < N && k0 + wk < K {
                w = weight[(k0 + wk) * N + col0 + wn];
            }
            tile_weight[wk * TILE_N + wn] = w;
        }
        workgroupBarrier();
        for (var c = 0u; c < TILE_K; c = c + 1u) {
            let ai = c * INPUT_STRIDE + local.y;
            let wi = c * TILE_N + local.x;
            let w = vec4<f32>(
                tile_weight[wi],
                tile_weight[wi + SIDE],
                tile_weight[wi + 2u * SIDE],
                tile_weight[wi + 3u * SIDE],
            );
            acc0 = fma(vec4<f32>(tile_input[ai]), w, acc0);
            acc1 = fma(vec4<f32>(tile_input[ai + SIDE]), w, acc1);
            acc2 = fma(vec4<f32>(tile_input[ai + 2u * SIDE]), w, acc2);
            acc3 = fma(vec4<f32>(tile_input[ai + 3u * SIDE]), w, acc3);
        }
        workgroupBarrier();
    }

    store_row(row0 + local.y, col0 + local.x, acc0);
    store_row(row0 + local.y + SIDE, col0 + local.x, acc1);
    store_row(row0 + local.y + 2u * SIDE, col0 + local.x, acc2);
    store_row(row0 + local.y + 3u * SIDE, col0 + local.x, acc3);
}

// Writes columns col, col + 16, col + 32, col + 48 of `row`, those inside the output.
fn store_row(row: u32, col: u32, values: vec4<f32>) {
    if row >= params.rows {
        return;
    }
    for (var j = 0u; j < 4u; j = j + 1u) {
        let n = col + j * SIDE;
        if n < N {
            output[row * N + n] = activate(values[j] + bias[n]);
        }
    }
}
