/* Classifies one embedding with the built-in model; prints its probability. */
#include <stdio.h>

#include "gemma_cyber.h"

int main(void) {
    gemma_cyber_options options;
    gemma_cyber_options_init(&options, sizeof options);
    gemma_cyber_classifier *classifier = NULL;
    if (gemma_cyber_create(&options, &classifier) != GEMMA_CYBER_STATUS_OK) {
        fprintf(stderr, "%s\n", gemma_cyber_last_error());
        return 1;
    }
    float embedding[768] = {1.0f};
    float probability = 0.0f;
    gemma_cyber_status status = gemma_cyber_classify(classifier, embedding, 1, 768, &probability, NULL);
    if (status == GEMMA_CYBER_STATUS_OK) printf("gemma-cyber %s: probability %.6f\n", gemma_cyber_version(), probability);
    else fprintf(stderr, "%s\n", gemma_cyber_last_error());
    gemma_cyber_destroy(classifier);
    return status == GEMMA_CYBER_STATUS_OK ? 0 : 1;
}
