// Classifies one embedding with the built-in model through the C++ wrapper.
#include <cstdio>
#include <vector>

#include "gemma_cyber.hpp"

int main() {
    try {
        gemma_cyber::classifier classifier;
        std::vector<float> embedding(classifier.input_dim(), 0.0f);
        embedding[0] = 1.0f;
        auto result = classifier.classify(embedding, embedding.size());
        std::printf("gemma-cyber %s: probability %.6f\n", gemma_cyber::version().c_str(), result.probabilities[0]);
        return 0;
    } catch (const gemma_cyber::error &e) {
        std::fprintf(stderr, "%s\n", e.what());
        return 1;
    }
}
