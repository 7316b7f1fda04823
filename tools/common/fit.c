/*
 * fit.c - does a commit fit where the base lives (fit.h).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <sys/statvfs.h>

#include "cli.h"
#include "fit.h"

int cli_base_fit(const char *base, const struct qcow2_commit_estimate *est,
                 struct cli_fit *out)
{
    struct statvfs vfs;

    out->required = est->base_required_bytes;
    out->growth = est->base_growth_bytes;
    out->device = est->base_capacity_bytes != 0;
    out->capacity = est->base_capacity_bytes;
    out->free = 0;
    if (out->device) {
        out->fits = out->required <= out->capacity;
        return 0;
    }
    if (statvfs(base, &vfs) < 0)
        return -errno;
    out->free = (uint64_t)vfs.f_bavail * (uint64_t)vfs.f_frsize;
    out->fits = out->growth <= 0 || (uint64_t)out->growth <= out->free;
    return 0;
}

void cli_fit_refusal(const char *base, const struct cli_fit *f, char *buf,
                     unsigned len)
{
    char a[32], b[32];

    if (f->device)
        snprintf(buf, len, "'%s' is %s; the commit needs %s (%" PRIu64
                 " bytes): extend the volume and run the same command again",
                 base, cli_size_str(f->capacity, a, sizeof(a)),
                 cli_size_str(f->required, b, sizeof(b)), f->required);
    else
        snprintf(buf, len, "'%s' would grow by %s (%" PRId64 " bytes), and "
                 "its file system has %s free: make room and run the same "
                 "command again", base,
                 cli_size_str((uint64_t)f->growth, a, sizeof(a)), f->growth,
                 cli_size_str(f->free, b, sizeof(b)));
}
