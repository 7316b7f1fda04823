/*
 * history.h - what each commit into a base did, kept in the base's record
 * of committed layers (BASE.qchain-committed, pending.c names it): one
 * line per finished commit, the last HISTORY_KEEP kept.  qchain-commit
 * writes it; qchain-delta reads the most recent comparable one to say how
 * long a commit into this base took, rather than what a guessed rate says.
 *
 *   history 1 time=UNIX base-format=FMT data=B zero=B runs=N offloaded=B
 *             compressed=B seconds=S resumed=0|1 rebuilt=0|1
 *
 * (one line).  The record's other lines (device:inode:size:mtime NAME)
 * never start with a letter, so the two kinds cannot be confused; a line
 * that does not parse is ignored, not an error.
 */
#ifndef QCHAIN_HISTORY_H
#define QCHAIN_HISTORY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HISTORY_KEEP 16

struct cli_history {
    int64_t time;           /* when it finished (seconds since the epoch) */
    char base_format[8];    /* "raw" or "qcow2" */
    uint64_t data, zero;    /* guest bytes copied, zeroed */
    uint64_t runs;          /* guest-contiguous runs of data */
    uint64_t offloaded;     /* part of data shared or copied by the storage */
    uint64_t compressed;    /* part of data that was compressed */
    double seconds;         /* from the job's start to the base made durable */
    bool resumed;           /* it finished an interrupted run */
    bool rebuilt;           /* the base's refcounts were rebuilt first */
};

/* The line for h (with its newline) into buf; -ENAMETOOLONG when it does
 * not fit, else its length. */
int cli_history_format(const struct cli_history *h, char *buf, size_t len);

/* Is line a history line?  Then 0 and *h filled; else -EINVAL. */
int cli_history_parse(const char *line, struct cli_history *h);

/* The rate of h's commit: data bytes per second (seconds > 0 once parsed
 * and held comparable). */
static inline double cli_history_rate(const struct cli_history *h)
{
    return (double)h->data / h->seconds;
}

/* Does h describe a commit whose time says something about one of data
 * bytes in runs runs into a base of format fmt: not resumed, no rebuild,
 * the same base format, data moved, and its mean run within a factor of 4
 * of this one's (a commit of scattered clusters and one of a long run move
 * bytes at very different speeds). */
bool cli_history_comparable(const struct cli_history *h, const char *fmt,
                            uint64_t data, uint64_t runs);

#endif
