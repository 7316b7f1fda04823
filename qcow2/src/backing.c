/*
 * backing.c - backing file names, resolved exactly as QEMU resolves them
 * (block.c: path_has_protocol, path_combine, bdrv_make_absolute_filename).
 *
 * A relative name is joined to the directory part of the *path string by
 * which the referencing image was opened*: no realpath, no symlink
 * resolution, no ".." folding.  That is what QEMU does, and qchain must pick
 * the same file QEMU would.  Names QEMU treats as protocols (a ':' before
 * the first '/': "json:{...}", "nbd:...", even "foo:bar.qcow2") are never
 * followed; the caller refuses them.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

bool q2_name_has_protocol(const char *name)
{
    const char *colon = strchr(name, ':');
    const char *slash = strchr(name, '/');

    return colon && (!slash || colon < slash);
}

char *q2_path_combine(const char *base_path, const char *name)
{
    const char *slash;
    size_t dirlen, nlen = strlen(name);
    char *out;

    if (name[0] == '/' || q2_name_has_protocol(name))
        return strdup(name);
    slash = strrchr(base_path, '/');
    dirlen = slash ? (size_t)(slash - base_path) + 1 : 0;
    out = malloc(dirlen + nlen + 1);
    if (!out)
        return NULL;
    memcpy(out, base_path, dirlen);
    memcpy(out + dirlen, name, nlen + 1);
    return out;
}

bool qcow2_name_is_protocol(const char *name)
{
    return name && q2_name_has_protocol(name);
}

char *qcow2_backing_resolve(const char *image, const char *name)
{
    if (!image || !name || !*name || q2_name_has_protocol(name))
        return NULL;
    return q2_path_combine(image, name);
}
