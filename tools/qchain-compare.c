/*
 * qchain-compare - are two images the same to the guest?  The semantics,
 * messages (on stdout) and exit codes of `qemu-img compare`:
 *
 *   0  identical ("Images are identical.")
 *   1  they differ ("Content mismatch at offset N!", "Strict mode: ...")
 *   2  an image cannot be opened, or bad usage (qemu-img says 1 for bad
 *      usage, which would read as "they differ")
 *   3  the allocation of an image cannot be read (its tables)
 *   4  an image's data cannot be read
 *
 * The offset reported is that of the first differing 512-byte sector, as
 * qemu-img reports it (it compares sector by sector).  Images of different
 * sizes compare equal when the longer one's tail reads as zeros ("Warning:
 * Image size mismatch!"); -s (strict) refuses different sizes and, as
 * qemu-img, differing block status (allocation, zero and data flags, and
 * where an answer of qemu's block status reaches the end of the image).
 *
 * Extent-aware: both chains are walked with qcow2_map; ranges that read as
 * zeros on both sides are not read, nor are ranges both chains map to the
 * same host bytes of the same file.  Everything else is read in large
 * chunks through the chains.  Images are opened read-only with QEMU's read
 * locks (none with -U).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "holders.h"
#include "json.h"

#define CHUNK (4u << 20) /* bytes read per call on each side */
#define SECTOR 512u      /* qemu-img's granularity of mismatch offsets */

#define EXIT_DIFFER 1
#define EXIT_OPEN 2
#define EXIT_MAP 3
#define EXIT_READ 4

/* A status bit beside QCOW2_EXTENT_*: qemu's BDRV_BLOCK_EOF, set when an
 * answer of block status reaches the end of the image. */
#define STATUS_EOF 0x100

static void usage(void)
{
    printf("Usage: %s [OPTIONS] IMAGE1 IMAGE2\n"
           "Compare the guest-visible content of two images (through their "
           "backing chains).\n\n"
           "  -f, --format=FMT     format of IMAGE1 (qcow2 or raw)\n"
           "  -F, --image2-format=FMT  format of IMAGE2\n"
           "  -s, --strict         images of different sizes or block status "
           "differ\n"
           "  -U, --force-share    read images another process holds\n"
           "  -p, --progress       show a progress bar on stderr\n"
           "  --output=human|json  output format (default human); --json\n"
           "  -h, --help           this help\n"
           "  -V, --version        version\n\n"
           "Exit status: 0 identical, 1 different, 2 cannot open (or bad "
           "usage),\n3 cannot read the allocation, 4 cannot read the data "
           "(as qemu-img compare).\n",
           cli_progname());
}

struct side {
    const char *file;
    struct qcow2_image *img;
    uint64_t size; /* rounded up to sectors, as QEMU sizes images */
    uint8_t *buf;
};

/* What was found: a mismatch (kind and offset) or none. */
enum mismatch { SAME, DIFF_CONTENT, DIFF_SIZE, DIFF_STATUS };

struct result {
    enum mismatch kind;
    uint64_t offset;
    bool size_warning; /* sizes differ, the tail was compared */
};

static struct cli_common common;
static bool strict, show_progress;
static struct timespec t0;

static void progress(uint64_t done, uint64_t total)
{
    static struct timespec last;

    if (show_progress)
        cli_progress(&t0, &last, done, total);
}

/* Open one side read-only; prints and returns -1 on failure. */
static int side_open(struct side *s, const char *file, const char *format)
{
    struct qcow2_open_opts opts;
    char *msg;
    int rc;

    s->file = file;
    s->img = qcow2_new();
    if (!s->img) {
        cli_error("out of memory");
        return -1;
    }
    cli_open_opts(&common, &opts, 0);
    opts.format = format;
    rc = qcow2_open(s->img, file, &opts);
    if (rc == 0) {
        uint64_t v = qcow2_virtual_size(s->img);
        s->size = v + (SECTOR - v % SECTOR) % SECTOR;
        return 0;
    }
    /* our own locks would be in the way of the search for the holder */
    msg = strdup(qcow2_errmsg(s->img));
    qcow2_close(s->img);
    s->img = NULL;
    if (rc == -EBUSY)
        cli_busy_error(file, format, opts.flags,
                       msg ? msg : qcow2_strerror(rc),
                       "stop the VM, or use -U to compare what it holds");
    else
        cli_error_file(file, "%s", msg ? msg : qcow2_strerror(rc));
    free(msg);
    return -1;
}

/* The extent at off (the chain's answer, holes of host files as zeros as
 * qemu-img sees them); past the image's real end (a size not a multiple
 * of sectors) zeros.  Returns 0, or EXIT_MAP after printing. */
static int side_map(const struct side *s, uint64_t off,
                    struct qcow2_extent *ext)
{
    uint64_t vsize = qcow2_virtual_size(s->img);
    int rc;

    if (off >= vsize) {
        *ext = (struct qcow2_extent){.start = off, .length = s->size - off,
                                     .kind = QCOW2_KIND_ZERO,
                                     .flags = QCOW2_EXTENT_ZERO};
        return 0;
    }
    rc = qcow2_map(s->img, off, vsize - off,
                   QCOW2_MAP_CHAIN | QCOW2_MAP_HOLES, ext);
    if (rc < 0) {
        cli_error_file(s->file, "cannot get the allocation at offset %"
                       PRIu64 ": %s", off, qcow2_errmsg(s->img));
        return EXIT_MAP;
    }
    if (off + ext->length == vsize)
        ext->length = s->size - off;
    return 0;
}

/* Read [off, off+n) into s->buf, zeros where ext says zeros (and past the
 * real end).  Returns 0, or EXIT_READ after printing. */
static int side_read(const struct side *s, const struct qcow2_extent *ext,
                     uint64_t off, size_t n)
{
    uint64_t vsize = qcow2_virtual_size(s->img);
    size_t want = n;
    int64_t got;

    if ((ext->flags & QCOW2_EXTENT_ZERO) || off >= vsize) {
        memset(s->buf, 0, n);
        return 0;
    }
    if (off + want > vsize)
        want = (size_t)(vsize - off);
    got = qcow2_pread(s->img, s->buf, want, off);
    if (got < 0 || (size_t)got != want) {
        cli_error_file(s->file, "cannot read at offset %" PRIu64 ": %s",
                       off, got < 0 ? qcow2_errmsg(s->img) : "short read");
        return EXIT_READ;
    }
    memset(s->buf + want, 0, n - want);
    return 0;
}

static unsigned status(const struct side *s, const struct qcow2_extent *e,
                       uint64_t off)
{
    return (e->flags & (QCOW2_EXTENT_PRESENT | QCOW2_EXTENT_ZERO |
                        QCOW2_EXTENT_DATA | QCOW2_EXTENT_OFFSET_VALID)) |
           (off + e->length == s->size ? STATUS_EOF : 0);
}

/* The offset of the first differing sector of two buffers, or -1. */
static int64_t first_diff(const uint8_t *a, const uint8_t *b, size_t n)
{
    size_t i;

    if (memcmp(a, b, n) == 0)
        return -1;
    for (i = 0; i < n; i += SECTOR) {
        size_t m = n - i < SECTOR ? n - i : SECTOR;
        if (memcmp(a + i, b + i, m))
            return (int64_t)i;
    }
    return -1;
}

/* The offset of the first sector with a non-zero byte, or -1. */
static int64_t first_nonzero(const uint8_t *a, size_t n)
{
    size_t i;

    if (qcow2_buffer_is_zero(a, n))
        return -1;
    for (i = 0; i < n; i += SECTOR) {
        size_t m = n - i < SECTOR ? n - i : SECTOR;
        if (!qcow2_buffer_is_zero(a + i, m))
            return (int64_t)i;
    }
    return -1;
}

/* Compare [off, off+len) read from both sides.  Returns 0 (res says
 * whether they differ) or an exit code after printing. */
static int compare_range(struct side *s1, const struct qcow2_extent *e1,
                         struct side *s2, const struct qcow2_extent *e2,
                         uint64_t off, uint64_t len, struct result *res,
                         uint64_t total)
{
    uint64_t end = off + len;

    while (off < end) {
        size_t n = end - off < CHUNK ? (size_t)(end - off) : CHUNK;
        int64_t i;
        int rc;

        if ((rc = side_read(s1, e1, off, n)) != 0 ||
            (rc = side_read(s2, e2, off, n)) != 0)
            return rc;
        i = first_diff(s1->buf, s2->buf, n);
        if (i >= 0) {
            res->kind = DIFF_CONTENT;
            res->offset = off + (uint64_t)i;
            return 0;
        }
        off += n;
        progress(off, total);
    }
    return 0;
}

/* The part both images have, as qemu-img walks it: both block statuses
 * asked at each offset, the shorter answer compared.  Returns 0 or an
 * exit code after printing. */
static int compare_common(struct side *s1, struct side *s2,
                          struct result *res, uint64_t total)
{
    uint64_t common_size = s1->size < s2->size ? s1->size : s2->size;
    uint64_t off = 0;

    while (off < common_size && res->kind == SAME) {
        struct qcow2_extent e1, e2;
        uint64_t chunk;
        int rc;

        if ((rc = side_map(s1, off, &e1)) != 0 ||
            (rc = side_map(s2, off, &e2)) != 0)
            return rc;
        chunk = e1.length < e2.length ? e1.length : e2.length;
        if (strict && status(s1, &e1, off) != status(s2, &e2, off)) {
            res->kind = DIFF_STATUS;
            res->offset = off;
            return 0;
        }
        if (!((e1.flags & e2.flags & QCOW2_EXTENT_ZERO) ||
              qcow2_extent_same_bytes(&e1, &e2))) {
            rc = compare_range(s1, &e1, s2, &e2, off, chunk, res, total);
            if (rc)
                return rc;
        }
        off += chunk;
        progress(off, total);
    }
    return 0;
}

/* The tail of the longer image must read as zeros.  Returns 0 or an exit
 * code after printing. */
static int compare_tail(struct side *s, uint64_t off, struct result *res)
{
    while (off < s->size) {
        struct qcow2_extent e;
        uint64_t end;
        int rc;

        if ((rc = side_map(s, off, &e)) != 0)
            return rc;
        end = off + e.length;
        while (off < end && !(e.flags & QCOW2_EXTENT_ZERO)) {
            size_t n = end - off < CHUNK ? (size_t)(end - off) : CHUNK;
            int64_t i;

            if ((rc = side_read(s, &e, off, n)) != 0)
                return rc;
            i = first_nonzero(s->buf, n);
            if (i >= 0) {
                res->kind = DIFF_CONTENT;
                res->offset = off + (uint64_t)i;
                return 0;
            }
            off += n;
            progress(off, s->size);
        }
        off = end;
        progress(off, s->size);
    }
    return 0;
}

static int compare(struct side *s1, struct side *s2, struct result *res)
{
    uint64_t total = s1->size > s2->size ? s1->size : s2->size;
    int rc;

    if (s1->size != s2->size && strict) {
        res->kind = DIFF_SIZE;
        return 0;
    }
    rc = compare_common(s1, s2, res, total);
    if (rc || res->kind != SAME || s1->size == s2->size) {
        progress(total, total);
        return rc;
    }
    res->size_warning = true;
    rc = compare_tail(s1->size > s2->size ? s1 : s2,
                      s1->size < s2->size ? s1->size : s2->size, res);
    progress(total, total);
    return rc;
}

static void report(const struct side *s1, const struct side *s2,
                   const struct result *res)
{
    static const char *const kinds[] = {NULL, "content", "size",
                                        "block-status"};
    struct json j;

    if (common.output == CLI_OUTPUT_HUMAN) {
        if (res->kind == DIFF_SIZE)
            puts("Strict mode: Image size mismatch!");
        if (res->kind == DIFF_STATUS)
            printf("Strict mode: Offset %" PRIu64
                   " block status mismatch!\n", res->offset);
        if (res->size_warning)
            puts("Warning: Image size mismatch!");
        if (res->kind == DIFF_CONTENT)
            printf("Content mismatch at offset %" PRIu64 "!\n",
                   res->offset);
        if (res->kind == SAME)
            puts("Images are identical.");
        return;
    }
    json_init(&j, stdout, true);
    json_object_begin(&j, NULL);
    json_bool(&j, "identical", res->kind == SAME);
    if (res->kind == DIFF_CONTENT || res->kind == DIFF_STATUS)
        json_u64(&j, "first-mismatch", res->offset);
    else
        json_null(&j, "first-mismatch");
    if (res->kind == SAME)
        json_null(&j, "mismatch");
    else
        json_string(&j, "mismatch", kinds[res->kind]);
    json_u64(&j, "size1", qcow2_virtual_size(s1->img));
    json_u64(&j, "size2", qcow2_virtual_size(s2->img));
    json_object_end(&j);
    json_end(&j);
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        CLI_COMMON_LONGOPTS,
        {"image2-format", required_argument, NULL, 'F'},
        {"strict", no_argument, NULL, 's'},
        {"progress", no_argument, NULL, 'p'},
        {NULL, 0, NULL, 0}};
    struct side s1 = {0}, s2 = {0};
    struct result res = {SAME, 0, false};
    const char *format2 = NULL;
    void *mem1 = NULL, *mem2 = NULL;
    int opt, rc = EXIT_OPEN;

    cli_init("qchain-compare", argv);
    while ((opt = getopt_long(argc, argv, CLI_COMMON_SHORTOPTS "F:sp",
                              longopts, NULL)) != -1) {
        if (cli_common_option(opt, optarg, &common, usage))
            continue;
        switch (opt) {
        case 'F': format2 = optarg; break;
        case 's': strict = true; break;
        case 'p': show_progress = true; break;
        default: cli_usage_error("incorrect parameter");
        }
    }
    if (argc - optind != 2)
        cli_usage_error(argc - optind < 2 ? "expecting two image file names"
                                          : "too many arguments");
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (posix_memalign(&mem1, 4096, CHUNK) || posix_memalign(&mem2, 4096,
                                                             CHUNK)) {
        cli_error("out of memory");
    } else if (side_open(&s1, argv[optind], common.format) == 0 &&
               side_open(&s2, argv[optind + 1], format2) == 0) {
        s1.buf = mem1;
        s2.buf = mem2;
        rc = compare(&s1, &s2, &res);
        if (rc == 0) {
            report(&s1, &s2, &res);
            rc = res.kind == SAME ? QCHAIN_EXIT_OK : EXIT_DIFFER;
        }
        if (fflush(stdout) != 0 || ferror(stdout)) {
            cli_error("error writing the output");
            rc = rc > EXIT_DIFFER ? rc : EXIT_READ;
        }
    }
    free(mem1);
    free(mem2);
    qcow2_close(s1.img);
    qcow2_close(s2.img);
    return rc;
}
