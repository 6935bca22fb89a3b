// What follows a dense layer (concatenated in front of dense_vector.wgsl).

const ACTIVATION_NONE: u32 = 0u;
const ACTIVATION_RELU: u32 = 1u;
const ACTIVATION_SIGMOID: u32 = 2u;

// ACTIVATION_NONE, ACTIVATION_RELU or ACTIVATION_SIGMOID.
override ACTIVATION: u32;

fn activate(value: f32) -> f32 {
    switch ACTIVATION {
        case ACTIVATION_RELU: {
            return max(value, 0.0);
        }
        case ACTIVATION_SIGMOID: {
            // Never exp of a large positive number, so no overflow to infinity.
            if value >= 0.0 {
                return 1.0 / (1.0 + exp(-value));
            }
            let e = exp(value);
            return e / (1.0 + e);
        }
        default: {
            return value;
        }
    }
}
