/*
 * fuzz_helpers.h - what the qchain fuzz targets share: the libFuzzer entry
 * point prototype, the invariant macro, and the input conventions.
 *
 * Every target is a pure function of its input bytes: it bounds the input
 * first, keeps no state between runs and frees everything it allocates, so
 * the same file replays the same way under libFuzzer and under
 * regression_driver.c (ctest).
 *
 * Invariant violations abort() after printing the failed condition, so
 * libFuzzer, ASan and ctest all see a crash with a readable reason.
 */
#ifndef QCHAIN_FUZZ_HELPERS_H
#define QCHAIN_FUZZ_HELPERS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* The libFuzzer entry point every target defines. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_ASSERT(cond)                                                   \
    do {                                                                    \
        if (!(cond)) {                                                      \
            fprintf(stderr, "%s:%d: fuzz invariant failed: %s\n", __FILE__, \
                    __LINE__, #cond);                                       \
            abort();                                                        \
        }                                                                   \
    } while (0)

/* Separator of the layers of a chain in one fuzz_open_map input: the bytes
 * before the first one are the image, the bytes after it serve the backing
 * (or external data) files. */
#define FUZZ_CHAIN_SEP "QCHAINBK"
#define FUZZ_CHAIN_SEP_LEN 8

/* Position of the first FUZZ_CHAIN_SEP in data[0..size), or size. */
static inline size_t fuzz_find_sep(const uint8_t *data, size_t size)
{
    size_t i;

    for (i = 0; i + FUZZ_CHAIN_SEP_LEN <= size; i++) {
        if (data[i] == 'Q' && data[i + 1] == 'C' && data[i + 2] == 'H' &&
            data[i + 3] == 'A' && data[i + 4] == 'I' && data[i + 5] == 'N' &&
            data[i + 6] == 'B' && data[i + 7] == 'K')
            return i;
    }
    return size;
}

#endif /* QCHAIN_FUZZ_HELPERS_H */
