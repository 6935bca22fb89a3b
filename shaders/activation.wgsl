// What follows a dense layer (concatenated in front of dense_vector.wgsl).

// Set by the backend for each layer: ReLU after a hidden layer, the sigmoid after the last one.
override RELU: bool;
override SIGMOID: bool;

fn activate(value: f32) -> f32 {
    if SIGMOID {
        // Never exp of a large positive number, so no overflow to infinity.
        if value >= 0.0 {
            return 1.0 / (1.0 + exp(-value));
        }
        let e = exp(value);
        return e / (1.0 + e);
    }
    if RELU {
        return max(value, 0.0);
    }
    return value;
}
