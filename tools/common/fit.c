/*
 * fit.c - does a commit fit where the base lives (fit.h).
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
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

/* The mount point of the file system that holds `path` (the highest
 * directory above it on the same device), or its directory. */
static void mount_point(const char *path, char *out, size_t len)
{
    char cur[PATH_MAX], parent[PATH_MAX], *slash;
    struct stat st, up;

    if (!realpath(path, cur) || stat(cur, &st) < 0) {
        snprintf(out, len, "%s", path);
        return;
    }
    while (strcmp(cur, "/") != 0) {
        snprintf(parent, sizeof(parent), "%s", cur);
        slash = strrchr(parent, '/');
        if (slash == parent)
            slash[1] = '\0'; /* "/x" -> "/" */
        else
            *slash = '\0';
        if (stat(parent, &up) < 0 || up.st_dev != st.st_dev)
            break;
        snprintf(cur, sizeof(cur), "%s", parent);
    }
    snprintf(out, len, "%s", cur);
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
    {
        char mp[PATH_MAX];
        mount_point(base, mp, sizeof(mp));
        snprintf(buf, len, "'%s': the commit grows it by %s (%" PRId64
                 " bytes), more than the %s free on %s; free space, then run "
                 "the same command again", base,
                 cli_size_str((uint64_t)f->growth, a, sizeof(a)), f->growth,
                 cli_size_str(f->free, b, sizeof(b)), mp);
    }
}
