/*
 * The C test programs' one assertion: CHECK(condition, printf-style message) counts a pass or,
 * printing the file, line and message on stderr, a failure. Each program defines
 *   static int passed, failed;
 * before including this, and reports "N passed, M failed" at the end.
 */
#ifndef GEMMA_CYBER_TEST_CHECK_H
#define GEMMA_CYBER_TEST_CHECK_H

#include <stdio.h>

#define CHECK(cond, ...)                                         \
    do {                                                         \
        if (cond) {                                              \
            passed++;                                            \
        } else {                                                 \
            failed++;                                            \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
            fprintf(stderr, __VA_ARGS__);                        \
            fprintf(stderr, "\n");                               \
        }                                                        \
    } while (0)

#endif
