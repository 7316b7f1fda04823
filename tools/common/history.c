/*
 * history.c - the history lines of a base's commit record (history.h).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "history.h"

int cli_history_format(const struct cli_history *h, char *buf, size_t len)
{
    int n = snprintf(buf, len,
                     "history 1 time=%" PRId64 " base-format=%s data=%" PRIu64
                     " zero=%" PRIu64 " runs=%" PRIu64 " offloaded=%" PRIu64
                     " compressed=%" PRIu64 " seconds=%.6f resumed=%d "
                     "rebuilt=%d\n",
                     h->time, h->base_format, h->data, h->zero, h->runs,
                     h->offloaded, h->compressed, h->seconds, h->resumed,
                     h->rebuilt);
    return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : n;
}

/* The value of " key=" in line as an unsigned number; -EINVAL when absent
 * or not a number. */
static int field_u64(const char *line, const char *key, uint64_t *out)
{
    char pat[32];
    const char *p;
    char *end;

    snprintf(pat, sizeof(pat), " %s=", key);
    p = strstr(line, pat);
    if (!p)
        return -EINVAL;
    p += strlen(pat);
    if (*p < '0' || *p > '9')
        return -EINVAL;
    errno = 0;
    *out = strtoull(p, &end, 10);
    if (errno || (*end != ' ' && *end != '\n' && *end != '\0'))
        return -EINVAL;
    return 0;
}

int cli_history_parse(const char *line, struct cli_history *h)
{
    struct cli_history r = {0};
    uint64_t t, resumed, rebuilt;
    const char *p;
    char *end;
    size_t n;

    if (strncmp(line, "history 1 ", 10) != 0)
        return -EINVAL;
    if (field_u64(line, "time", &t) < 0 || t > INT64_MAX ||
        field_u64(line, "data", &r.data) < 0 ||
        field_u64(line, "zero", &r.zero) < 0 ||
        field_u64(line, "runs", &r.runs) < 0 ||
        field_u64(line, "offloaded", &r.offloaded) < 0 ||
        field_u64(line, "compressed", &r.compressed) < 0 ||
        field_u64(line, "resumed", &resumed) < 0 || resumed > 1 ||
        field_u64(line, "rebuilt", &rebuilt) < 0 || rebuilt > 1)
        return -EINVAL;
    r.time = (int64_t)t;
    r.resumed = resumed;
    r.rebuilt = rebuilt;
    if (!(p = strstr(line, " base-format=")))
        return -EINVAL;
    p += strlen(" base-format=");
    n = strcspn(p, " \n");
    if (n == 0 || n >= sizeof(r.base_format))
        return -EINVAL;
    memcpy(r.base_format, p, n);
    if (!(p = strstr(line, " seconds=")))
        return -EINVAL;
    p += strlen(" seconds=");
    if (*p < '0' || *p > '9')
        return -EINVAL;
    errno = 0;
    r.seconds = strtod(p, &end);
    if (errno || end == p || !(r.seconds >= 0 && r.seconds < 1e9))
        return -EINVAL;
    *h = r;
    return 0;
}

bool cli_history_comparable(const struct cli_history *h, const char *fmt,
                            uint64_t data, uint64_t runs)
{
    double a, b;

    /* a record is read from a file: a rate that fits no counter (or a
     * time too short to measure) says nothing */
    if (h->resumed || h->rebuilt || strcmp(h->base_format, fmt) != 0 ||
        h->data == 0 || h->runs == 0 || !(h->seconds >= 1e-3) ||
        !(cli_history_rate(h) < 1e18) || data == 0 || runs == 0)
        return false;
    a = (double)h->data / (double)h->runs;
    b = (double)data / (double)runs;
    return a <= 4 * b && b <= 4 * a;
}
