/*
 * users.h - which images use a file as their backing file: the images
 * outside a chain that a commit would change under them (siblings of the
 * base, forks of a committed layer), and the forks a new snapshot makes.
 * Found by scanning directories: every qcow2 image there (regular file or
 * block device) whose backing file resolves to one of the targets, by
 * device and inode.
 */
#ifndef QCHAIN_USERS_H
#define QCHAIN_USERS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>

struct cli_target {
    uint64_t dev, ino;
};

/* A file the scan should pass over (a layer of the chain, a file already
 * committed), true to skip. */
typedef bool (*cli_skip_fn)(void *ctx, const struct stat *st);
/* An image at `path` uses targets[t] as its backing file. */
typedef void (*cli_user_fn)(void *ctx, unsigned t, const char *path,
                            const struct stat *st);

/*
 * Scan `dir` for users of targets[0..n).  Images that cannot be read are
 * reported as warnings ("cannot tell whether it uses ..."), never skipped
 * silently; candidates are opened with O_NONBLOCK (a FIFO is no image).
 * Returns 0, or -errno when `dir` cannot be read (a search that cannot be
 * made must not pass for one that found nothing).
 */
int cli_find_users(const char *dir, const struct cli_target *targets,
                   unsigned n, cli_skip_fn skip, cli_user_fn found,
                   void *ctx);

#endif
