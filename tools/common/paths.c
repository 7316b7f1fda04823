/*
 * paths.c - backing file names for images qchain creates or re-points.
 */
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <qcow2/qcow2.h>

#include "paths.h"

static char *real_dir_of(const char *path)
{
    char *copy = strdup(path), *out;

    if (!copy)
        return NULL;
    out = realpath(dirname(copy), NULL);
    free(copy);
    return out;
}

/* target as a path relative to dir (both absolute, no symlinks). */
static char *relative_to(const char *dir, const char *target)
{
    size_t common = 0, i, ups = 0;
    char *out;

    for (i = 0; dir[i] && dir[i] == target[i]; i++)
        if (dir[i] == '/')
            common = i + 1;
    if (dir[i] == '\0' && target[i] == '/')
        common = i + 1; /* dir is an ancestor of target */
    if (dir[common]) {
        ups = 1;
        for (i = common; dir[i]; i++)
            ups += dir[i] == '/';
    }
    out = malloc(ups * 3 + strlen(target + common) + 1);
    if (!out)
        return NULL;
    out[0] = '\0';
    for (i = 0; i < ups; i++)
        strcat(out, "../");
    strcat(out, target + common);
    return out;
}

/* "./" in front of a relative name that QEMU would take for a protocol. */
static char *not_a_protocol(char *name)
{
    char *out;

    if (!name || !qcow2_name_is_protocol(name))
        return name;
    out = malloc(strlen(name) + 3);
    if (out)
        sprintf(out, "./%s", name);
    free(name);
    return out;
}

char *cli_backing_name(const char *image, const char *target,
                       enum backing_path_mode mode)
{
    char *idir = real_dir_of(image), *tdir = real_dir_of(target);
    char *treal = realpath(target, NULL), *out = NULL;
    const char *base = strrchr(target, '/');

    base = base ? base + 1 : target;
    if (!idir || !tdir || !treal)
        goto out;
    if (mode == BACKING_PATH_ABSOLUTE ||
        (mode == BACKING_PATH_AUTO && strcmp(idir, tdir) != 0))
        out = strdup(treal);
    else if (strcmp(idir, tdir) == 0)
        out = not_a_protocol(strdup(base));
    else
        out = not_a_protocol(relative_to(idir, treal));
out:
    free(idir);
    free(tdir);
    free(treal);
    return out;
}
