/*
 * fit.h - does a commit fit where the base lives?  A base on a device
 * (which cannot grow) must be as large as the commit leaves the image; a
 * base file's growth must fit in the free space of its file system.
 * qchain-delta reports the answer, qchain-commit refuses before writing.
 */
#ifndef QCHAIN_FIT_H
#define QCHAIN_FIT_H

#include <stdbool.h>
#include <stdint.h>

#include <qcow2/qcow2.h>

struct cli_fit {
    uint64_t required;  /* base-required-bytes */
    bool device;        /* the base is a device of `capacity` bytes */
    uint64_t capacity;
    int64_t growth;     /* a file: bytes its storage grows */
    uint64_t free;      /* a file: free bytes of its file system */
    bool fits;
};

/* The answer for the base file `base` and what the estimate says.
 * Returns 0, or -errno when the file system cannot be asked. */
int cli_base_fit(const char *base, const struct qcow2_commit_estimate *est,
                 struct cli_fit *out);

/* One sentence saying why it does not fit and what to do (no newline). */
void cli_fit_refusal(const char *base, const struct cli_fit *f, char *buf,
                     unsigned len);

#endif
