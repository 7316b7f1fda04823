/*
 * calibrate.c - a sample of the delta committed into scratch files beside
 * the base, timed (calibrate.h says what and why).
 */
#include <errno.h>
#include <fcntl.h>
#include <dirent.h>
#include <limits.h>
#include <signal.h>
#include <linux/falloc.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <qcow2/qcow2_io.h>

#include "calibrate.h"

#define CHUNK (1u << 20) /* bytes read or written at a time */
#define RAW_BLOCK 4096   /* a raw scratch base gets the base's non-zero
                            blocks of this size */

double calib_now(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

struct run {
    uint64_t off, len;
    size_t piece, bpiece;       /* its first piece, its base's first */
};

/* A piece: up to CHUNK bytes of a run (or of the base's blocks around it),
 * read three times: from the real files first, then twice from the
 * scratch copy.  Timed piece by piece, so that a stall of the host inside
 * one read is told from a cache that is cold throughout. */
struct piece {
    double t[3];
};

/* A zero run of the sample: a range the commit zeroes in the base. */
struct zrun {
    uint64_t off, len;
};

struct cal {
    const struct calib_in *in;
    struct run *runs;           /* the sample, in guest order */
    size_t n, cap;
    uint64_t bytes;             /* their total */
    struct zrun *zruns;         /* the zero runs' sample, in guest order */
    size_t zn;
    uint64_t zstride;           /* of the zero runs, every zstride-th */
    uint64_t zseen, zall;       /* zero runs met, their bytes */
    uint64_t zbytes;            /* the sample's */
    uint64_t size;              /* the top's virtual size */
    char dir[PATH_MAX];         /* the base's directory */
    char base[PATH_MAX];        /* scratch base and overlay */
    char top[PATH_MAX];
    char zero[PATH_MAX];        /* the overlay of zero runs */
    const char *leaf;           /* the base's name in dir */
    const char *base_leaf;      /* the scratch base's name in dir */
    bool made_base, made_top, made_zero;
    uint8_t *buf;               /* CHUNK bytes */
    struct piece *pieces;       /* of the runs, in order */
    struct piece *bpieces;      /* of the base's blocks around them */
    char *err;
    size_t errlen;
};

static int fail(struct cal *c, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(struct cal *c, int rc, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(c->err, c->errlen, fmt, ap);
    va_end(ap);
    return rc < 0 ? rc : -EIO;
}

static int add_run(struct cal *c, uint64_t off, uint64_t len)
{
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 256;
        struct run *r = realloc(c->runs, cap * sizeof(*r));
        if (!r)
            return -ENOMEM;
        c->runs = r;
        c->cap = cap;
    }
    c->runs[c->n++] = (struct run){off, len, 0, 0};
    c->bytes += len;
    return 0;
}

/* Zero run [off, off+len) ends (met in guest order): every zstride-th is
 * kept; at CALIB_ZERO_RUNS_MAX kept, every other one is dropped and the
 * stride doubles, so that the kept ones stay evenly spread over all. */
static int add_zero(struct cal *c, uint64_t off, uint64_t len)
{
    uint64_t base_size = qcow2_virtual_size(c->in->base);
    size_t i;

    if (off >= base_size)
        return 0; /* past the base's end: the commit has nothing to zero */
    if (len > base_size - off)
        len = base_size - off;
    c->zall += len;
    if (c->zseen++ % c->zstride)
        return 0;
    if (!c->zruns) {
        c->zruns = malloc(CALIB_ZERO_RUNS_MAX * sizeof(*c->zruns));
        if (!c->zruns)
            return -ENOMEM;
    }
    c->zruns[c->zn++] = (struct zrun){off, len};
    if (c->zn == CALIB_ZERO_RUNS_MAX) {
        for (i = 0; 2 * i < c->zn; i++)
            c->zruns[i] = c->zruns[2 * i];
        c->zn = i;
        c->zstride *= 2;
    }
    return 0;
}

/* The zero runs' sample within CALIB_ZERO_FILL bytes (the base's content
 * under them is copied into the scratch base): as many evenly spread runs
 * as that many whole clusters fit, each cut to its share. */
static void fit_zeros(struct cal *c, uint32_t cluster)
{
    uint64_t share;
    size_t i, j, step;

    if (c->zn == 0)
        return;
    step = (size_t)((c->zn * (uint64_t)cluster + CALIB_ZERO_FILL - 1) /
                    CALIB_ZERO_FILL);
    if (step > 1) {
        for (i = j = 0; i < c->zn; i += step)
            c->zruns[j++] = c->zruns[i];
        c->zn = j;
    }
    share = CALIB_ZERO_FILL / c->zn / cluster * cluster;
    if (share < cluster)
        share = cluster;
    for (i = 0, c->zbytes = 0; i < c->zn; i++) {
        if (c->zruns[i].len > share)
            c->zruns[i].len = share;
        c->zbytes += c->zruns[i].len;
    }
}

/*
 * The sample: the delta's data runs (guest-contiguous data extents above
 * the base, as the commit counts them) numbered in guest order, and of R
 * runs the ones where floor(i * k / R) steps, k = as many as the mean run
 * fits into the budget, at most CALIB_RUNS_MAX: k evenly spread runs.  A
 * run longer than what is left of the budget gives its first part (whole
 * clusters of the top).  A delta with zero ranges leaves CALIB_ZERO_FILL
 * of the budget to them, and is walked to its end to sample them too.
 */
static int choose(struct cal *c, uint32_t cluster)
{
    const struct calib_in *in = c->in;
    uint64_t mean = 1, k = 0, i = 0;
    uint64_t pos = 0, run_off = 0, run_len = 0, z_off = 0, z_len = 0;
    const uint64_t max = CALIB_SAMPLE_MAX -
                         (in->zero_bytes ? CALIB_ZERO_FILL : 0);
    struct qcow2_extent e;
    int rc;

    if (in->data_runs) {
        mean = in->data_bytes / in->data_runs;
        if (mean == 0)
            mean = 1;
        k = (max + mean - 1) / mean;
        if (k > CALIB_RUNS_MAX)
            k = CALIB_RUNS_MAX;
        if (k > in->data_runs)
            k = in->data_runs;
    }
    c->zstride = 1;
    while (pos <= c->size && (c->bytes < max || in->zero_bytes)) {
        bool data = false, zero = false;
        if (pos < c->size) {
            rc = qcow2_map_above(in->top, pos, c->size - pos, 0, in->stop,
                                 &e);
            if (rc < 0)
                return fail(c, rc, "reading the delta's map: %s",
                            qcow2_errmsg(in->top));
            data = e.depth < in->stop && (e.flags & QCOW2_EXTENT_DATA) &&
                   !(e.flags & QCOW2_EXTENT_ZERO);
            zero = e.depth < in->stop && (e.flags & QCOW2_EXTENT_ZERO);
        }
        if (zero && z_len && z_off + z_len == pos) {
            z_len += e.length;
        } else {
            if (z_len && (rc = add_zero(c, z_off, z_len)) < 0)
                return fail(c, rc, "out of memory");
            z_len = 0;
            if (zero) {
                z_off = pos;
                z_len = e.length;
            }
        }
        if (data && run_len && run_off + run_len == pos) {
            run_len += e.length;
        } else {
            if (run_len) {
                /* run i ends: in the sample when the step count moves
                 * (and the budget is not spent; k is 0 when the
                 * estimate counted no runs, which a hostile image can
                 * make differ from this walk) */
                if (c->bytes < max && c->n < CALIB_RUNS_MAX && k &&
                    (unsigned __int128)(i + 1) * k / in->data_runs !=
                    (unsigned __int128)i * k / in->data_runs) {
                    uint64_t left = max - c->bytes;
                    if (run_len > left)
                        run_len = left >= cluster ? left / cluster * cluster
                                                  : left;
                    if ((rc = add_run(c, run_off, run_len)) < 0)
                        return fail(c, rc, "out of memory");
                }
                i++;
                run_len = 0;
            }
            if (data) {
                run_off = pos;
                run_len = e.length;
            }
        }
        if (pos == c->size)
            break;
        pos += e.length;
    }
    fit_zeros(c, cluster);
    if ((c->bytes == 0 && c->zn == 0) || (in->data_bytes && c->n == 0))
        return fail(c, -ENODATA, "the delta holds no data to sample");
    return 0;
}

/* Scratch names beside the base: .LEAF.qchain-calibrate-PID.{base,top} */
static int names(struct cal *c)
{
    const char *name = c->in->base_name, *slash = strrchr(name, '/');
    const char *leaf = slash ? slash + 1 : name;
    int n;

    if (slash)
        n = snprintf(c->dir, sizeof(c->dir), "%.*s",
                     (int)(slash - name) ? (int)(slash - name) : 1, name);
    else
        n = snprintf(c->dir, sizeof(c->dir), ".");
    if (n < 0 || (size_t)n >= sizeof(c->dir) ||
        snprintf(c->base, sizeof(c->base), "%s/.%s.qchain-calibrate-%ld.base",
                 c->dir, leaf, (long)getpid()) >= (int)sizeof(c->base) ||
        snprintf(c->top, sizeof(c->top), "%s/.%s.qchain-calibrate-%ld.top",
                 c->dir, leaf, (long)getpid()) >= (int)sizeof(c->top) ||
        snprintf(c->zero, sizeof(c->zero), "%s/.%s.qchain-calibrate-%ld.zero",
                 c->dir, leaf, (long)getpid()) >= (int)sizeof(c->zero))
        return fail(c, -ENAMETOOLONG, "the base's name is too long for a "
                    "scratch file beside it");
    c->leaf = leaf;
    c->base_leaf = strrchr(c->base, '/') + 1;
    return 0;
}

/* Scratch files of a calibration that was killed (its process is gone)
 * are removed: the name's prefix and a PID no process has. */
static void remove_stale(struct cal *c)
{
    char prefix[NAME_MAX + 32], path[PATH_MAX];
    size_t plen;
    struct dirent *de;
    DIR *d;

    if ((size_t)snprintf(prefix, sizeof(prefix), ".%s.qchain-calibrate-",
                         c->leaf) >= sizeof(prefix) ||
        !(d = opendir(c->dir)))
        return;
    plen = strlen(prefix);
    while ((de = readdir(d))) {
        char *end;
        long pid;
        if (strncmp(de->d_name, prefix, plen))
            continue;
        errno = 0;
        pid = strtol(de->d_name + plen, &end, 10);
        if (errno || pid <= 0 || *end != '.' || pid == (long)getpid() ||
            kill((pid_t)pid, 0) == 0 || errno != ESRCH)
            continue;
        if ((size_t)snprintf(path, sizeof(path), "%s/%s", c->dir,
                             de->d_name) < sizeof(path))
            unlink(path);
    }
    closedir(d);
}

/* The scratch files, empty: the base with the base's format, geometry and
 * size (grown below when the top is larger), the overlay with the top's,
 * over it. */
static int create(struct cal *c)
{
    struct qcow2_create_opts o;
    struct qcow2_info bi, ti;
    char err[256];
    int rc;

    qcow2_info_get(c->in->base, &bi);
    qcow2_info_get(c->in->top, &ti);
    memset(&o, 0, sizeof(o));
    o.size = sizeof(o);
    o.virtual_size = bi.virtual_size < c->size ? bi.virtual_size : c->size;
    o.format = bi.format;
    if (bi.format == QCOW2_FORMAT_QCOW2) {
        o.version = bi.version;
        o.cluster_size = bi.cluster_size;
        o.refcount_bits = bi.refcount_bits;
        o.compression_type = bi.compression &&
                             !strcmp(bi.compression, "zstd")
                                 ? QCOW2_COMPRESSION_ZSTD
                                 : QCOW2_COMPRESSION_ZLIB;
        o.extended_l2 = bi.extended_l2;
        o.lazy_refcounts = bi.lazy_refcounts;
    }
    if ((rc = qcow2_create(c->base, &o, err, sizeof(err))) < 0)
        return fail(c, rc, "cannot create a scratch file beside the base: "
                    "%s", err);
    c->made_base = true;
    memset(&o, 0, sizeof(o));
    o.size = sizeof(o);
    o.virtual_size = c->size;
    o.format = QCOW2_FORMAT_QCOW2;
    o.version = ti.version;
    o.cluster_size = ti.cluster_size;
    o.refcount_bits = ti.refcount_bits;
    o.extended_l2 = ti.extended_l2;
    o.backing_name = c->base_leaf;
    o.backing_format = bi.format == QCOW2_FORMAT_RAW ? "raw" : "qcow2";
    if ((rc = qcow2_create(c->top, &o, err, sizeof(err))) < 0)
        return fail(c, rc, "cannot create a scratch file beside the base: "
                    "%s", err);
    c->made_top = true;
    if (c->zn == 0)
        return 0;
    if ((rc = qcow2_create(c->zero, &o, err, sizeof(err))) < 0)
        return fail(c, rc, "cannot create a scratch file beside the base: "
                    "%s", err);
    c->made_zero = true;
    return 0;
}

/* A scratch file, opened with its format named (never probed: the base's
 * content copied into a raw scratch base may look like anything). */
static int open_path(struct cal *c, struct qcow2_image **img,
                     const char *path, unsigned flags)
{
    bool base = path == c->base;
    struct qcow2_open_opts o;
    struct qcow2_info bi;

    qcow2_info_get(c->in->base, &bi);
    memset(&o, 0, sizeof(o));
    o.size = sizeof(o);
    o.flags = flags;
    o.format = base && bi.format == QCOW2_FORMAT_RAW ? "raw" : "qcow2";
    *img = qcow2_new();
    if (!*img)
        return fail(c, -ENOMEM, "out of memory");
    if (qcow2_open(*img, path, &o) < 0)
        return fail(c, -EIO, "scratch file '%s': %s", path,
                    qcow2_errmsg(*img));
    return 0;
}

/* The scratch base, or the scratch overlay of the sample's data. */
static int open_img(struct cal *c, struct qcow2_image **img, bool base,
                    unsigned flags)
{
    return open_path(c, img, base ? c->base : c->top, flags);
}

/* The commit grows a smaller base to the top's size before it copies (a
 * truncate, or a qcow2 L1 table made larger, maybe moved): the same done
 * to the scratch base and made durable, timed. */
static int grow(struct cal *c, double *secs)
{
    struct qcow2_image *img = NULL;
    double t0;
    int rc;

    if (qcow2_virtual_size(c->in->base) >= c->size)
        return 0;
    if ((rc = open_img(c, &img, true,
                       QCOW2_OPEN_RDWR | QCOW2_OPEN_NO_BACKING)) < 0)
        return rc;
    t0 = calib_now();
    if ((rc = qcow2_resize(img, c->size)) < 0 ||
        (rc = qcow2_flush(img)) < 0)
        rc = fail(c, rc, "growing a scratch file: %s", qcow2_errmsg(img));
    else
        *secs = calib_now() - t0;
    if (qcow2_close(img) < 0 && rc == 0)
        rc = fail(c, -EIO, "closing a scratch file");
    return rc;
}

/* The base's blocks around [off, off+len): whole blocks of `block` bytes,
 * up to the base's size (a base that grows has nothing past it). */
static void base_span(const struct cal *c, uint64_t off, uint64_t len,
                      uint64_t block, uint64_t *lo, uint64_t *hi)
{
    uint64_t base_size = qcow2_virtual_size(c->in->base);

    *lo = off / block * block;
    *hi = (off + len + block - 1) / block * block;
    if (*hi > base_size)
        *hi = base_size;
    if (*lo > *hi)
        *lo = *hi;
}

static uint64_t base_block(const struct cal *c)
{
    struct qcow2_info bi;

    qcow2_info_get(c->in->base, &bi);
    return bi.format == QCOW2_FORMAT_QCOW2 ? bi.cluster_size : RAW_BLOCK;
}

/* The base's blocks around [off, off+length) as img holds them (a layer
 * alone): its data extents read (not its holes, nor what it does not
 * allocate: the commit reads neither), the reads timed piece by piece into
 * pc's `pass` (pc NULL: untimed); with sb, each stretch
 * of non-zero blocks written there at the same offset, in one write, as a
 * guest or a copy wrote it (the page cache then holds it alike). */
static int base_run(struct cal *c, struct qcow2_image *img, uint64_t off,
                    uint64_t length, struct qcow2_image *sb, struct piece *pc,
                    int pass)
{
    uint64_t block = base_block(c), lo, hi, pos, end, first;
    struct qcow2_extent e;
    double t;

    base_span(c, off, length, block, &lo, &hi);
    for (first = lo; lo < hi; lo += e.length) {
        if (qcow2_map(img, lo, hi - lo, QCOW2_MAP_HOLES, &e) < 0)
            return fail(c, -EIO, "reading '%s': %s", qcow2_filename(img),
                        qcow2_errmsg(img));
        if (!(e.flags & QCOW2_EXTENT_DATA) || (e.flags & QCOW2_EXTENT_ZERO))
            continue;
        for (pos = lo, end = lo + e.length; pos < end;) {
            uint64_t k = (pos - first) / CHUNK;
            uint64_t stop = first + (k + 1) * CHUNK;
            size_t len = (size_t)((stop < end ? stop : end) - pos);
            size_t b, x, bl = 0;
            t = calib_now();
            if (qcow2_layer_pread(img, c->buf, len, pos) != (int64_t)len)
                return fail(c, -EIO, "reading '%s': %s", qcow2_filename(img),
                            qcow2_errmsg(img));
            if (pc)
                pc[k].t[pass] += calib_now() - t;
            for (b = 0; sb && b < len; b = x < len ? x + bl : x) {
                for (x = b; x < len; x += bl) {
                    bl = len - x < block ? len - x : (size_t)block;
                    if (qcow2_buffer_is_zero(c->buf + x, bl))
                        break;
                }
                if (x > b && qcow2_pwrite(sb, c->buf + b, x - b, pos + b) < 0)
                    return fail(c, -EIO, "writing a scratch file: %s",
                                qcow2_errmsg(sb));
            }
            pos += len;
        }
    }
    return 0;
}

/* Read the base's data under the sample through img (the scratch base),
 * timed into the pieces' pass. */
static int read_base(struct cal *c, struct qcow2_image *img, int pass)
{
    size_t r;
    int rc;

    for (r = 0; r < c->n; r++)
        if ((rc = base_run(c, img, c->runs[r].off, c->runs[r].len, NULL,
                           c->bpieces + c->runs[r].bpiece, pass)) < 0)
            return rc;
    return 0;
}

/* The base's own content under the sample into the scratch base (not its
 * backing file's: what it does not allocate stays unallocated), so that
 * what the commit compares, overwrites or allocates there is the same;
 * reading it from the real base is timed run by run. */
static int fill_base(struct cal *c)
{
    struct qcow2_image *sb;
    size_t r;
    int rc;

    if ((rc = open_img(c, &sb, true,
                       QCOW2_OPEN_RDWR | QCOW2_OPEN_NO_BACKING)) < 0)
        goto out;
    for (r = 0; r < c->n; r++)
        if ((rc = base_run(c, c->in->base, c->runs[r].off, c->runs[r].len,
                           sb, c->bpieces + c->runs[r].bpiece, 0)) < 0)
            goto out;
    for (r = 0; r < c->zn; r++) /* under the zero runs: untimed */
        if ((rc = base_run(c, c->in->base, c->zruns[r].off, c->zruns[r].len,
                           sb, NULL, 0)) < 0)
            goto out;
    if (qcow2_flush(sb) < 0)
        rc = fail(c, -EIO, "flushing a scratch file: %s", qcow2_errmsg(sb));
out:
    qcow2_close(sb);
    return rc;
}

/* Keep the first n runs of the sample. */
static void cut(struct cal *c, size_t n)
{
    size_t r;

    for (r = n; r < c->n; r++)
        c->bytes -= c->runs[r].len;
    c->n = n;
}

/* Read the data of the sample through img (the layers above depth stop)
 * as the commit reads it: the data extents, not the holes of their files
 * (QCOW2_MAP_HOST_HOLES), timed piece by piece into `pass` (the map's
 * lookups counted with the read that follows them); past `deadline` (0:
 * none) the sample is cut. */
static int read_sample(struct cal *c, struct qcow2_image *img, unsigned stop,
                       int pass, double deadline)
{
    struct qcow2_extent e;
    size_t r;
    double t, now;

    for (r = 0; r < c->n; r++) {
        uint64_t off = c->runs[r].off, pos = off, end = off + c->runs[r].len;
        struct piece *pc = c->pieces + c->runs[r].piece;
        if (r > 0 && deadline > 0 && calib_now() > deadline) {
            cut(c, r); /* a slow read side: the runs read so far */
            break;
        }
        t = calib_now();
        for (; pos < end; pos += e.length) {
            uint64_t p, eend;
            if (qcow2_map_above(img, pos, end - pos, QCOW2_MAP_HOST_HOLES,
                                stop, &e) < 0)
                return fail(c, -EIO, "reading '%s': %s", qcow2_filename(img),
                            qcow2_errmsg(img));
            if (e.flags & QCOW2_EXTENT_ZERO)
                continue;
            for (p = pos, eend = pos + e.length; p < eend;) {
                uint64_t k = (p - off) / CHUNK, next = off + (k + 1) * CHUNK;
                size_t len = (size_t)((next < eend ? next : eend) - p);
                if (qcow2_pread(img, c->buf, len, p) != (int64_t)len)
                    return fail(c, -EIO, "reading '%s': %s",
                                qcow2_filename(img), qcow2_errmsg(img));
                now = calib_now();
                pc[k].t[pass] += now - t;
                t = now;
                p += len;
            }
        }
        /* zeros after the last read: nothing read, their lookup counted */
        pc[(c->runs[r].len - 1) / CHUNK].t[pass] += calib_now() - t;
    }
    return 0;
}

/* How many pieces run r has, of its own bytes or of the base's blocks
 * around them. */
static size_t run_pieces(const struct cal *c, size_t r, bool base)
{
    uint64_t lo = 0, hi = c->runs[r].len;

    if (base)
        base_span(c, c->runs[r].off, c->runs[r].len, base_block(c), &lo, &hi);
    return (size_t)((hi - lo + CHUNK - 1) / CHUNK);
}

/* The pieces of the runs kept (a cut keeps a prefix of both numberings). */
static size_t pieces_kept(const struct cal *c, bool base)
{
    if (c->n == 0)
        return 0;
    return (base ? c->runs[c->n - 1].bpiece : c->runs[c->n - 1].piece) +
           run_pieces(c, c->n - 1, base);
}

/* The pieces of the runs and of the base's blocks around them, numbered
 * once the runs are chosen. */
static int number_pieces(struct cal *c)
{
    size_t r, np = 0, nbp = 0;

    for (r = 0; r < c->n; r++) {
        c->runs[r].piece = np;
        np += run_pieces(c, r, false);
        c->runs[r].bpiece = nbp;
        nbp += run_pieces(c, r, true);
    }
    c->pieces = calloc(np ? np : 1, sizeof(*c->pieces));
    c->bpieces = calloc(nbp ? nbp : 1, sizeof(*c->bpieces));
    if (!c->pieces || !c->bpieces)
        return fail(c, -ENOMEM, "out of memory");
    return 0;
}

struct excess {
    double real, hot;
};

static int by_excess(const void *a, const void *b)
{
    const struct excess *x = a, *y = b;
    double dx = x->real - x->hot, dy = y->real - y->hot;
    return (dx < dy) - (dx > dy); /* the largest first */
}

/*
 * What reading n pieces from the real files cost beyond reading them from
 * the scratch copy (the faster of its two reads, in all): a cold cache,
 * decompression, a slower file system.  The thirty-second of the pieces
 * that differ most is left out and the rest scaled up: a stall of the host
 * lands in the one or two pieces being read, where a cold cache slows them
 * all.  Less than a quarter of the read is what two reads of the same
 * cached bytes differ by: none.
 */
static double read_excess(const struct piece *p, size_t n, int *rc)
{
    struct excess *x;
    double real = 0, hot = 0, h1 = 0, h2 = 0;
    size_t i, keep = n - n / 32;
    int fast;

    if (n == 0)
        return 0;
    x = malloc(n * sizeof(*x));
    if (!x) {
        *rc = -ENOMEM;
        return 0;
    }
    for (i = 0; i < n; i++) {
        h1 += p[i].t[1];
        h2 += p[i].t[2];
    }
    fast = h1 <= h2 ? 1 : 2;
    for (i = 0; i < n; i++) {
        x[i].real = p[i].t[0];
        x[i].hot = p[i].t[fast];
    }
    qsort(x, n, sizeof(*x), by_excess);
    for (i = n - keep; i < n; i++) {
        real += x[i].real;
        hot += x[i].hot;
    }
    free(x);
    if (real <= 1.25 * hot)
        return 0;
    return (real - hot) * (double)n / (double)keep;
}

/* The layers' data of the sample into the scratch overlay.  Writing stops
 * at the deadline: the sample is cut there. */
static int fill_top(struct cal *c, double deadline)
{
    struct qcow2_image *st;
    size_t r;
    int rc;

    if ((rc = open_img(c, &st, false, QCOW2_OPEN_RDWR)) < 0)
        goto out;
    for (r = 0; r < c->n; r++) {
        uint64_t pos = c->runs[r].off, end = pos + c->runs[r].len;
        if (r > 0 && calib_now() > deadline) {
            cut(c, r); /* a slow device: the runs filled so far */
            break;
        }
        while (pos < end) {
            size_t len = end - pos < CHUNK ? (size_t)(end - pos) : CHUNK;
            int64_t got = qcow2_pread(c->in->top, c->buf, len, pos);
            if (got != (int64_t)len) {
                rc = fail(c, got < 0 ? (int)got : -EIO, "reading '%s': %s",
                          qcow2_filename(c->in->top),
                          qcow2_errmsg(c->in->top));
                goto out;
            }
            if (qcow2_pwrite(st, c->buf, len, pos) < 0) {
                rc = fail(c, -EIO, "writing a scratch file: %s",
                          qcow2_errmsg(st));
                goto out;
            }
            pos += len;
        }
    }
    if (qcow2_flush(st) < 0)
        rc = fail(c, -EIO, "flushing a scratch file: %s", qcow2_errmsg(st));
out:
    qcow2_close(st);
    return rc;
}

/* Holes of the layers' files inside their data clusters (a sparse copy of
 * an overlay has them where clusters hold zeros) read as zeros, and the
 * commit skips them without reading: the scratch overlay gets them too,
 * punched where its own clusters hold those bytes.  A file system that
 * cannot punch leaves them as written zeros. */
static int punch_holes(struct cal *c)
{
    struct qcow2_image *st = NULL;
    struct qcow2_extent e, h;
    int fd = -1, rc;
    size_t r;

    if ((rc = open_img(c, &st, false, QCOW2_OPEN_NO_BACKING)) < 0)
        goto out;
    for (r = 0; r < c->n; r++) {
        uint64_t pos = c->runs[r].off, end = pos + c->runs[r].len;
        for (; pos < end; pos += e.length) {
            uint64_t p, hend;
            if (qcow2_map_above(c->in->top, pos, end - pos,
                                QCOW2_MAP_HOST_HOLES, c->in->stop, &e) < 0) {
                rc = fail(c, -EIO, "reading the delta's map: %s",
                          qcow2_errmsg(c->in->top));
                goto out;
            }
            if ((e.flags & (QCOW2_EXTENT_ZERO | QCOW2_EXTENT_DATA)) !=
                (QCOW2_EXTENT_ZERO | QCOW2_EXTENT_DATA))
                continue;
            hend = pos + e.length;
            for (p = pos; p < hend; p += h.length) {
                if (qcow2_map(st, p, hend - p, 0, &h) < 0) {
                    rc = fail(c, -EIO, "scratch file '%s': %s", c->top,
                              qcow2_errmsg(st));
                    goto out;
                }
                if (!(h.flags & QCOW2_EXTENT_OFFSET_VALID))
                    continue;
                if (fd < 0 && (fd = open(c->top, O_RDWR | O_CLOEXEC)) < 0) {
                    rc = fail(c, -errno, "scratch file '%s': %s", c->top,
                              strerror(errno));
                    goto out;
                }
                if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                              (off_t)h.offset, (off_t)h.length) < 0)
                    goto out; /* cannot: zeros stay written */
            }
        }
    }
    if (fd >= 0 && fsync(fd) < 0)
        rc = fail(c, -errno, "scratch file '%s': %s", c->top,
                  strerror(errno));
out:
    if (fd >= 0)
        close(fd);
    qcow2_close(st);
    return rc;
}

/* Asked between extents: the time the last one was handed to the base. */
static int stamp(void *ctx)
{
    *(double *)ctx = calib_now();
    return 0;
}

/* The commit of a scratch overlay (path) into the scratch base, as
 * qchain-commit opens them (the chain read-only, the base read-write),
 * timed: *copy up to the last extent handed to the base, *flush what
 * follows (its last writes leaving the page cache, the base's flush).  For
 * the data, the flush waits for what the background writeback has not yet
 * written, the last stretch, not the whole; the caller scales it apart. */
static int commit_scratch(struct cal *c, const char *path, double *copy,
                          double *flush)
{
    struct qcow2_image *chain = NULL, *base = NULL;
    struct qcow2_commit_opts co;
    double t0, last;
    int rc;

    /* the chain without locks, so that the base opens for writing */
    if ((rc = open_path(c, &chain, path, QCOW2_OPEN_FORCE_SHARE)) < 0 ||
        (rc = open_img(c, &base, true,
                       QCOW2_OPEN_RDWR | QCOW2_OPEN_NO_BACKING)) < 0)
        goto out;
    memset(&co, 0, sizeof(co));
    co.size = sizeof(co);
    co.cancel = stamp;
    co.cancel_ctx = &last;
    last = t0 = calib_now();
    if (qcow2_commit(chain, 1, base, &co, NULL) < 0) {
        rc = fail(c, -EIO, "committing the sample: %s", qcow2_errmsg(chain));
        goto out;
    }
    *flush = calib_now() - last;
    *copy = last - t0;
out:
    qcow2_close(base);
    qcow2_close(chain);
    return rc;
}

/* The zero runs as zero clusters of the third scratch file (over the
 * scratch base, which holds the base's content under them). */
static int fill_zero(struct cal *c)
{
    struct qcow2_image *zt;
    size_t r;
    int rc;

    if ((rc = open_path(c, &zt, c->zero, QCOW2_OPEN_RDWR)) < 0)
        goto out;
    for (r = 0; r < c->zn; r++)
        if (qcow2_pwrite_zeroes(zt, c->zruns[r].off, c->zruns[r].len) < 0) {
            rc = fail(c, -EIO, "writing a scratch file: %s",
                      qcow2_errmsg(zt));
            goto out;
        }
    if (qcow2_flush(zt) < 0)
        rc = fail(c, -EIO, "flushing a scratch file: %s", qcow2_errmsg(zt));
out:
    qcow2_close(zt);
    return rc;
}

/* The syncs qchain-commit makes around the copy, in the same directory:
 * its journal and the base's record (each a small file made durable,
 * renamed into place, the directory synced), the re-point of the image
 * above TOP when there is one (a small write made durable: a third round
 * stands for it), then the journal removed. */
static int time_syncs(struct cal *c, double *secs)
{
    char tmp[PATH_MAX + 8], name[PATH_MAX + 8], line[128];
    double t0 = calib_now();
    int i, fd, rc = 0;

    snprintf(line, sizeof(line), "calibration %ld\n", (long)getpid());
    snprintf(tmp, sizeof(tmp), "%s.tmp", c->top);
    snprintf(name, sizeof(name), "%s.rec", c->top);
    for (i = 0; i < (c->in->repoint ? 3 : 2) && rc == 0; i++) {
        fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0) {
            rc = -errno;
            break;
        }
        if (write(fd, line, strlen(line)) < 0 || fsync(fd) < 0)
            rc = -errno;
        close(fd);
        if (rc == 0 && rename(tmp, name) < 0)
            rc = -errno;
        if (rc == 0)
            rc = qcow2_io_sync_dir(name);
    }
    if (rc < 0) {
        unlink(tmp);
        unlink(name);
        return fail(c, rc, "cannot write beside the base: %s", strerror(-rc));
    }
    if (unlink(name) < 0 || (rc = qcow2_io_sync_dir(name)) < 0)
        return fail(c, rc < 0 ? rc : -errno, "cannot remove a scratch file: "
                    "%s", strerror(rc < 0 ? -rc : errno));
    *secs = calib_now() - t0;
    return 0;
}

int calibrate(const struct calib_in *in, struct calib_out *out, char *err,
              size_t errlen)
{
    struct cal c;
    struct qcow2_image *st = NULL;
    struct qcow2_info ti;
    double t0 = calib_now(), prep, zcopy = 0, zflush = 0;
    struct qcow2_info bi;
    int rc, xrc = 0;

    memset(&c, 0, sizeof(c));
    memset(out, 0, sizeof(*out));
    c.in = in;
    c.err = err;
    c.errlen = errlen;
    c.size = qcow2_virtual_size(in->top);
    if ((in->data_bytes == 0 || in->data_runs == 0) && in->zero_bytes == 0)
        return fail(&c, -ENODATA, "the delta holds no data to sample");
    qcow2_info_get(in->top, &ti);
    c.buf = malloc(CHUNK);
    if (!c.buf)
        return fail(&c, -ENOMEM, "out of memory");
    if ((rc = choose(&c, ti.cluster_size ? ti.cluster_size : 65536)) < 0 ||
        (rc = number_pieces(&c)) < 0 || (rc = names(&c)) < 0 ||
        (remove_stale(&c), (rc = create(&c)) < 0))
        goto out;
    /* the walk done, the preparation gets CALIB_PREPARE_MAX: half of it
     * for reading the sample from the layers first (the read side, in the
     * cache state the commit would meet), the rest for writing it */
    prep = calib_now();
    if ((rc = read_sample(&c, in->top, in->stop, 0,
                          prep + CALIB_PREPARE_MAX / 2)) < 0 ||
        (rc = grow(&c, &out->grow_seconds)) < 0 ||
        (rc = fill_base(&c)) < 0 ||
        (rc = fill_top(&c, prep + CALIB_PREPARE_MAX)) < 0 ||
        (rc = punch_holes(&c)) < 0 || (c.zn && (rc = fill_zero(&c)) < 0))
        goto out;
    /* the same bytes read back from the scratch overlay twice, as the
     * copy below reads them: what the real layers cost beyond is the read
     * side (a cold cache, decompression) */
    if ((rc = open_img(&c, &st, false, 0)) < 0 ||
        (rc = read_sample(&c, st, 1, 1, 0)) < 0 ||
        (rc = read_sample(&c, st, 1, 2, 0)) < 0)
        goto out;
    qcow2_close(st);
    st = NULL;
    out->read_seconds = read_excess(c.pieces, pieces_kept(&c, false), &xrc);
    /* a raw base is read where the commit compares what it writes with
     * what the base holds: the same for the base's blocks under the
     * sample, read from the real base while filling the scratch one */
    qcow2_info_get(in->base, &bi);
    if (bi.format == QCOW2_FORMAT_RAW) {
        if ((rc = open_img(&c, &st, true, QCOW2_OPEN_NO_BACKING)) < 0 ||
            (rc = read_base(&c, st, 1)) < 0 ||
            (rc = read_base(&c, st, 2)) < 0)
            goto out;
        qcow2_close(st);
        st = NULL;
        out->read_seconds += read_excess(c.bpieces, pieces_kept(&c, true),
                                         &xrc);
    }
    if (xrc < 0) {
        rc = fail(&c, xrc, "out of memory");
        goto out;
    }
    /* the data, then the zero runs: all of their commit counts, its flush
     * too (what zeroing leaves to write is file system metadata, which
     * grows with the runs) */
    if ((c.n && (rc = commit_scratch(&c, c.top, &out->copy_seconds,
                                     &out->flush_seconds)) < 0) ||
        (c.zn && (rc = commit_scratch(&c, c.zero, &zcopy, &zflush)) < 0) ||
        (rc = time_syncs(&c, &out->sync_seconds)) < 0)
        goto out;
    out->zero_seconds = zcopy + zflush;
    out->sample_bytes = c.bytes;
    out->sample_runs = c.n;
    out->zero_bytes = c.zall;
    out->zero_runs = c.zseen;
    out->zero_sample_bytes = c.zbytes;
    out->zero_sample_runs = c.zn;
out:
    qcow2_close(st);
    if (c.made_top)
        unlink(c.top);
    if (c.made_zero)
        unlink(c.zero);
    if (c.made_base)
        unlink(c.base);
    if (c.made_top || c.made_base || c.made_zero)
        qcow2_io_sync_dir(c.top);
    free(c.buf);
    free(c.runs);
    free(c.zruns);
    free(c.pieces);
    free(c.bpieces);
    out->seconds = calib_now() - t0;
    return rc;
}
