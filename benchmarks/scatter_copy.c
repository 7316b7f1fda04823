/*
 * scatter_copy - the plain copy a commit benchmark is held against: copy
 * the ranges listed on stdin ("SRC_OFFSET DST_OFFSET LENGTH" per line,
 * bytes) from SRC to DST with pread/pwrite through one page-aligned
 * buffer, in the order given, then fdatasync DST once.  No comparing, no
 * metadata: what any tool that writes those bytes must at least do.
 *
 *   scatter_copy SRC DST < ranges
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define BUF (8u << 20)

int main(int argc, char **argv)
{
    uint64_t so, dof, len;
    void *buf;
    int src, dst;

    if (argc != 3) {
        fprintf(stderr, "usage: scatter_copy SRC DST < ranges\n");
        return 2;
    }
    src = open(argv[1], O_RDONLY);
    dst = open(argv[2], O_WRONLY);
    if (src < 0 || dst < 0 || posix_memalign(&buf, 4096, BUF) != 0) {
        perror("scatter_copy");
        return 1;
    }
    while (scanf("%" SCNu64 " %" SCNu64 " %" SCNu64, &so, &dof, &len) == 3) {
        while (len) {
            size_t n = len < BUF ? (size_t)len : BUF;
            if (pread(src, buf, n, (off_t)so) != (ssize_t)n ||
                pwrite(dst, buf, n, (off_t)dof) != (ssize_t)n) {
                perror("scatter_copy");
                return 1;
            }
            so += n;
            dof += n;
            len -= n;
        }
    }
    if (fdatasync(dst) != 0) {
        perror("scatter_copy");
        return 1;
    }
    return 0;
}
