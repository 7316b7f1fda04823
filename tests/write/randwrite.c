/*
 * randwrite - random guest writes through libqcow2, mirrored into a raw
 * "model" file, for the write-path tests (tests/write/ scripts).
 *
 *   randwrite IMAGE MODEL SEED COUNT [--flush-every N] [--max-clusters N]
 *             [--verify] [--log FILE] [--rebuild-first]
 *
 * Each operation is a data write (random bytes), a zero write or a discard
 * of a random range (1 sector to several clusters).  The model gets what a
 * reader must see afterwards; discards follow QEMU's rule (whole clusters
 * read as zeros, unless the image is version 2 over a backing file;
 * partial clusters are untouched).  With --verify the whole guest view is
 * compared with the model at the end; --log writes "offset length" of
 * every operation (for the bitmap test); --rebuild-first rebuilds the
 * refcounts (qcow2_rebuild_refcounts, as a resumed commit does) before the
 * first write.  A kill test runs it with a huge COUNT and SIGKILLs it.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <qcow2/qcow2.h>

static uint64_t rng_state;

static uint64_t rnd(void)
{
    /* splitmix64 */
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void die(const char *what, struct qcow2_image *img)
{
    fprintf(stderr, "randwrite: %s: %s\n", what, img ? qcow2_errmsg(img) : "");
    exit(1);
}

int main(int argc, char **argv)
{
    struct qcow2_open_opts opts = {.size = sizeof(opts),
                                   .flags = QCOW2_OPEN_RDWR};
    struct qcow2_image *img;
    struct qcow2_info info;
    uint64_t seed, count, i, size, cs, flush_every = 0, max_clusters = 4;
    bool verify = false, rebuild = false, discard_zeroes;
    FILE *log = NULL;
    const char *ready = NULL;
    uint8_t *buf, *buf2;
    int model, a;

    if (argc < 5) {
        fprintf(stderr, "usage: randwrite IMAGE MODEL SEED COUNT "
                        "[--flush-every N] [--max-clusters N] [--verify] "
                        "[--log FILE] [--rebuild-first] [--ready FILE]\n");
        return 2;
    }
    seed = strtoull(argv[3], NULL, 0);
    count = strtoull(argv[4], NULL, 0);
    for (a = 5; a < argc; a++) {
        if (!strcmp(argv[a], "--flush-every") && a + 1 < argc)
            flush_every = strtoull(argv[++a], NULL, 0);
        else if (!strcmp(argv[a], "--max-clusters") && a + 1 < argc)
            max_clusters = strtoull(argv[++a], NULL, 0);
        else if (!strcmp(argv[a], "--verify"))
            verify = true;
        else if (!strcmp(argv[a], "--log") && a + 1 < argc)
            log = fopen(argv[++a], "w");
        else if (!strcmp(argv[a], "--rebuild-first"))
            rebuild = true;
        else if (!strcmp(argv[a], "--ready") && a + 1 < argc)
            ready = argv[++a]; /* made once the image is open (locked) */
        else
            return 2;
    }
    rng_state = seed;
    img = qcow2_new();
    if (!img || qcow2_open(img, argv[1], &opts) < 0)
        die("open", img);
    if (rebuild && qcow2_rebuild_refcounts(img) < 0)
        die("rebuild", img);
    if (ready) {
        FILE *f = fopen(ready, "w");
        if (!f || fclose(f) != 0) {
            perror(ready);
            return 1;
        }
    }
    qcow2_info_get(img, &info);
    size = info.virtual_size;
    cs = info.format == QCOW2_FORMAT_QCOW2 ? info.cluster_size : 4096;
    /* raw images ignore discards; qcow2 follows QEMU's rule */
    discard_zeroes = info.format == QCOW2_FORMAT_QCOW2 &&
                     (info.version >= 3 || !qcow2_backing(img));
    model = open(argv[2], O_RDWR);
    if (model < 0) {
        perror(argv[2]);
        return 1;
    }
    buf = malloc(max_clusters * cs + cs);
    buf2 = malloc(size < (64u << 20) ? size : (64u << 20));
    if (!buf || !buf2)
        return 1;

    for (i = 0; i < count; i++) {
        uint64_t sectors = size / 512, len, off, op = rnd() % 10, k;
        uint64_t maxlen = max_clusters * cs / 512;

        len = (1 + rnd() % maxlen) * 512;
        if (rnd() % 4 == 0) /* cluster aligned, whole clusters */
            len = (1 + rnd() % max_clusters) * cs;
        off = (rnd() % sectors) * 512;
        if (rnd() % 3 == 0)
            off &= ~(cs - 1);
        if (off + len > size)
            len = size - off;
        if (len == 0)
            continue;
        if (log)
            fprintf(log, "%" PRIu64 " %" PRIu64 "\n", off, len);
        if (op < 7) {
            for (k = 0; k < len; k += 8) {
                uint64_t r = rnd();
                memcpy(buf + k, &r, 8);
            }
            if (rnd() % 4 == 0)
                memset(buf, 0, len / 2); /* data that happens to be zero */
            if (qcow2_pwrite(img, buf, len, off) < 0)
                die("write", img);
            if (pwrite(model, buf, len, (off_t)off) != (ssize_t)len)
                return 1;
        } else if (op < 9) {
            if (qcow2_pwrite_zeroes(img, off, len) < 0)
                die("zero", img);
            memset(buf, 0, len);
            if (pwrite(model, buf, len, (off_t)off) != (ssize_t)len)
                return 1;
        } else {
            uint64_t a0 = (off + cs - 1) & ~(cs - 1);
            uint64_t a1 = (off + len) & ~(cs - 1);
            if (qcow2_discard(img, off, len) < 0)
                die("discard", img);
            if (discard_zeroes && a1 > a0) {
                /* whole clusters read as zeros; the last partial cluster
                 * of the image counts as whole */
                memset(buf2, 0, a1 - a0 < (64u << 20) ? a1 - a0 : 0);
                if (pwrite(model, buf2, a1 - a0, (off_t)a0) !=
                    (ssize_t)(a1 - a0))
                    return 1;
            }
        }
        if (flush_every && (i + 1) % flush_every == 0) {
            if (qcow2_flush(img) < 0)
                die("flush", img);
            fsync(model);
        }
    }
    if (verify) {
        uint64_t pos;
        for (pos = 0; pos < size; pos += (64u << 20)) {
            size_t n = size - pos < (64u << 20) ? size - pos : (64u << 20);
            if (qcow2_pread(img, buf2, n, pos) != (int64_t)n)
                die("read back", img);
            uint8_t *m = malloc(n);
            if (!m || pread(model, m, n, (off_t)pos) != (ssize_t)n)
                return 1;
            if (memcmp(m, buf2, n) != 0) {
                size_t d = 0;
                while (m[d] == buf2[d])
                    d++;
                fprintf(stderr, "randwrite: guest view differs from the "
                        "model at 0x%" PRIx64 "\n", pos + d);
                return 1;
            }
            free(m);
        }
    }
    if (qcow2_close(img) < 0) {
        fprintf(stderr, "randwrite: close failed\n");
        return 1;
    }
    close(model);
    if (log)
        fclose(log);
    free(buf);
    free(buf2);
    return 0;
}
