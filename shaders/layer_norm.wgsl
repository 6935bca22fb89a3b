// LayerNorm without affine (the affine is folded into the first dense layer), in place: one
// workgroup per row. The mean in two steps: the plain mean of the values, then the mean of their
// differences from it, which corrects it. A narrow row far from zero (10,000 ± 0.01) loses its
// small differences to a float32 sum of its raw values, but not its differences from a first
// estimate of its mean: those are exact, and near zero. Then the biased variance of the
// differences from the corrected mean. (Taking the values relative to the row's first value
// instead, as this shader did, lost precision when that first value was an outlier.)
//
// Shapes come from the model as pipeline-overridable constants.

// Values in a row that belong to the embedding.
override DIM: u32;
// Values per row in the buffer: DIM rounded up to a multiple of 4 (the padding stays zero).
override STRIDE: u32;
override EPS: f32;

struct Params {
    // Rows in this chunk.
    rows: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;

const THREADS: u32 = 64u;
var<workgroup> partial: array<f32, THREADS>;

fn workgroup_sum(value: f32, lane: u32) -> f32 {
    partial[lane] = value;
    workgroupBarrier();
    for (var step = THREADS / 2u; step > 0u; step = step / 2u) {
        if lane < step {
            partial[lane] = partial[lane] + partial[lane + step];
        }
        workgroupBarrier();
    }
    let total = partial[0];
    // Everyone reads the total before the next call overwrites `partial`.
    workgroupBarrier();
    return total;
}

@compute @workgroup_size(THREADS)
fn main(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    // Dispatches wider than the per-dimension limit spill into y.
    let row = group.x + group.y * groups.x;
    if row >= params.rows {
        return;
    }
    let base = row * STRIDE;

    var sum = 0.0;
    for (var i = lane; i < DIM; i = i + THREADS) {
        sum = sum + x[base + i];
    }
    let estimate = workgroup_sum(sum, lane) / f32(DIM);

    var correction = 0.0;
    for (var i = lane; i < DIM; i = i + THREADS) {
        correction = correction + (x[base + i] - estimate);
    }
    let offset = workgroup_sum(correction, lane) / f32(DIM);

    var squares = 0.0;
    for (var i = lane; i < DIM; i = i + THREADS) {
        let d = (x[base + i] - estimate) - offset;
        squares = squares + d * d;
    }
    let variance = workgroup_sum(squares, lane) / f32(DIM);
    let inv_std = 1.0 / sqrt(variance + EPS);

    for (var i = lane; i < DIM; i = i + THREADS) {
        x[base + i] = ((x[base + i] - estimate) - offset) * inv_std;
    }
}
