/*
 * users.c - which images use a file as their backing file (users.h).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <qcow2/qcow2.h>

#include "cli.h"
#include "users.h"

/* Is `path` a qcow2 image (its magic)?  -errno when it cannot be read. */
static int is_qcow2(const char *path)
{
    unsigned char magic[4];
    /* O_NONBLOCK: a FIFO's open would wait for a writer */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK), ok;

    if (fd < 0)
        return -errno;
    ok = read(fd, magic, 4) == 4 && memcmp(magic, "QFI\xfb", 4) == 0;
    close(fd);
    return ok;
}

/* targets[] index of the backing file of the qcow2 image at path, -1 for
 * none of them, -2 when the image cannot be read (warned). */
static int backing_target(const char *path, const struct cli_target *targets,
                          unsigned n)
{
    struct qcow2_open_opts o = {.size = sizeof(o),
                                .flags = QCOW2_OPEN_NO_BACKING |
                                         QCOW2_OPEN_FORCE_SHARE,
                                .format = "qcow2"};
    struct qcow2_image *img = qcow2_new();
    struct qcow2_info info;
    struct stat st;
    int t = -1;
    unsigned i;

    if (!img)
        return -2;
    if (qcow2_open(img, path, &o) < 0) {
        cli_warning("'%s': cannot read it to tell its backing file: %s", path,
                    qcow2_errmsg(img));
        t = -2;
    } else if (qcow2_info_get(img, &info) == 0 && info.backing_path &&
               stat(info.backing_path, &st) == 0) {
        for (i = 0; i < n && t < 0; i++)
            if (targets[i].dev == (uint64_t)st.st_dev &&
                targets[i].ino == (uint64_t)st.st_ino)
                t = (int)i;
    }
    qcow2_close(img);
    return t;
}

int cli_find_users(const char *dir, const struct cli_target *targets,
                   unsigned n, cli_skip_fn skip, cli_user_fn found,
                   void *ctx)
{
    DIR *d = opendir(dir);
    struct dirent *de;

    if (!d)
        return -errno;
    while ((de = readdir(d)) != NULL) {
        char path[PATH_MAX];
        struct stat st;
        int rc, t;

        if (de->d_name[0] == '.' &&
            (!de->d_name[1] || (de->d_name[1] == '.' && !de->d_name[2])))
            continue;
        if (strcmp(dir, ".") == 0)
            snprintf(path, sizeof(path), "%s", de->d_name);
        else
            snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        if (stat(path, &st) < 0 ||
            !(S_ISREG(st.st_mode) || S_ISBLK(st.st_mode)))
            continue; /* images live in files and on devices (LVs) */
        if (skip && skip(ctx, &st))
            continue;
        rc = is_qcow2(path);
        if (rc < 0)
            cli_warning("'%s': cannot read it to tell its backing file: %s",
                        path, strerror(-rc));
        if (rc <= 0)
            continue; /* not qcow2: no backing file */
        t = backing_target(path, targets, n);
        if (t >= 0)
            found(ctx, (unsigned)t, path, &st);
    }
    closedir(d);
    return 0;
}
