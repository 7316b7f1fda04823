/*
 * qchain-delta - what a commit would copy, how much the base grows, how
 * long it takes, and whether another live round would shrink the offline
 * window; from metadata alone, writing nothing but, for the time, scratch
 * files beside the base (calibrate.h; not with --rate RATE|history).
 *
 *   qchain-delta [--top TOP] [--base BASE] [-U] [--rate RATE|auto|history]
 *                [--growth-rate RATE | --sample SECONDS]
 *                [--downtime SECONDS] [--output=human|json] ACTIVE...
 *
 * ACTIVE, TOP and BASE mean what they mean for qchain-commit, and the
 * figures come from the walk the commit makes (qcow2_commit_estimate), so
 * data-bytes and zero-bytes are what the commit then reports.
 *
 * The plan model (README): round i commits D(i-1) bytes live, in
 * D(i-1)/rate seconds, while the guest writes D(i) = growth x D(i-1)/rate
 * bytes into a new overlay; D(0) is today's data-bytes.  iterations is the
 * smallest k >= 0 with D(k)/rate <= downtime; when no k up to MAX_ROUNDS
 * reaches it the plan does not converge and describes D(MAX_ROUNDS); a
 * guest that writes as fast as the commit copies (or faster) gets 0 rounds
 * and D(0) when D(0) does not fit.
 *
 * Several ACTIVEs are the disks of one VM: each is reported as it would be
 * alone, then the totals, with the plan made over the summed delta and the
 * VM's growth rate (the sum of the disks' with --sample).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <qcow2/qcow2_io.h>

#include "calibrate.h"
#include "chain.h"
#include "cli.h"
#include "fit.h"
#include "history.h"
#include "json.h"
#include "pending.h"

#define MAX_ROUNDS 10

static struct cli_common common;

static void usage(void)
{
    printf("Usage: %s [OPTIONS] ACTIVE...\n"
           "Measure what `qchain-commit` with the same TOP and BASE would "
           "copy, without\nwriting anything.  Several ACTIVEs (the disks "
           "of one VM): each one's commit\ninto its backing file, and the "
           "totals.\n\n"
           "  --top=TOP            first layer to commit (default: ACTIVE; "
           "one ACTIVE)\n"
           "  --base=BASE          image to commit into (default: TOP's "
           "backing file)\n"
           "  --rate=RATE          commit speed in bytes/s (K/M/G/T); auto "
           "(default):\n"
           "                       measure it by committing a sample beside "
           "the base;\n"
           "                       history: the last comparable commit's\n"
           "  --growth-rate=RATE   bytes/s the guest writes into a fresh "
           "overlay\n"
           "  --sample=SECONDS     measure the growth rate of ACTIVE over "
           "SECONDS\n"
           "  --downtime=SECONDS   offline window: plan live rounds (needs "
           "--growth-rate\n"
           "                       or --sample)\n"
           "  -U, --force-share    read images a running VM holds "
           "(approximate figures)\n"
           "  -f, --format=FMT     format of ACTIVE (qcow2 or raw)\n"
           "  --output=human|json  report format; --json\n"
           "  -h, --help           this help\n"
           "  -V, --version        version\n",
           cli_progname());
}

struct layer_stats {
    uint64_t data, zero, compressed;
    int64_t file_size;
    uint64_t skipped;
};

/* What one layer alone holds (qemu-img map of the file without its
 * backing chain): data, zero and compressed guest bytes. */
static int layer_stats(struct qcow2_image *img, bool tolerant,
                       struct layer_stats *out)
{
    uint64_t size = qcow2_virtual_size(img), pos = 0;
    struct qcow2_info info;
    struct qcow2_extent e;
    int rc;

    memset(out, 0, sizeof(*out));
    qcow2_info_get(img, &info);
    out->file_size = info.file_size;
    while (pos < size) {
        rc = qcow2_map(img, pos, size - pos, 0, &e);
        if (rc < 0) {
            /* a table caught mid-update: skip to the next cluster of the
             * L1 table's reach */
            uint64_t span = (uint64_t)info.cluster_size * (info.cluster_size /
                            (info.extended_l2 ? 16 : 8));
            if (!tolerant || rc == -ENOMEM || span == 0)
                return rc;
            e.length = (pos | (span - 1)) + 1 - pos;
            if (e.length > size - pos)
                e.length = size - pos;
            out->skipped += e.length;
            pos += e.length;
            continue;
        }
        if (e.flags & QCOW2_EXTENT_DATA)
            out->data += e.length;
        else if (e.flags & QCOW2_EXTENT_ZERO)
            out->zero += e.length;
        if (e.kind == QCOW2_KIND_COMPRESSED)
            out->compressed += e.length;
        pos += e.length;
    }
    return 0;
}

/* Data bytes ACTIVE itself holds now (for --sample). */
static int sample_data(const char *path, uint64_t *out)
{
    struct qcow2_image *img = qcow2_new();
    struct qcow2_open_opts o;
    struct layer_stats ls;
    int rc;

    if (!img)
        return -1;
    cli_open_opts(&common, &o, QCOW2_OPEN_NO_BACKING);
    if (common.force_share)
        o.flags |= QCOW2_OPEN_FORCE_SHARE;
    rc = qcow2_open(img, path, &o);
    if (rc == 0)
        rc = layer_stats(img, common.force_share, &ls);
    if (rc < 0) {
        cli_error_file(path, "%s", qcow2_errmsg(img));
        qcow2_close(img);
        return -1;
    }
    *out = ls.data;
    qcow2_close(img);
    return 0;
}

static int parse_seconds(const char *s, double *out)
{
    char *end;
    double v;

    if (!s || !*s)
        return -1;
    v = strtod(s, &end);
    if (*end || !(v >= 0) || !isfinite(v))
        return -1;
    *out = v;
    return 0;
}

struct plan {
    unsigned iterations;
    bool converges;
    double final_bytes, final_seconds;
};

static struct plan make_plan(double d0, double rate, double growth,
                             double downtime)
{
    struct plan p = {0};
    double d = d0;
    unsigned k;

    for (k = 0;; k++) {
        if (d / rate <= downtime) {
            p.converges = true;
            break;
        }
        /* a guest that writes as fast as the commit copies (or faster)
         * leaves at least as much after each round: no live round helps */
        if (k == MAX_ROUNDS || growth >= rate)
            break;
        d = growth * d / rate;
    }
    p.iterations = k;
    p.final_bytes = d;
    p.final_seconds = d / rate;
    return p;
}

/* Seconds in JSON: rounded to microseconds (at most 6 decimals). */
static void json_seconds(struct json *js, const char *key, double v)
{
    json_double(js, key, round(v * 1e6) / 1e6);
}

/* Seconds for people: three significant digits, at least one decimal
 * (4096.0, 40.0, 1.25, 0.005), at most six; 0 is "0". */
static const char *secs_str(double v, char *buf, unsigned len)
{
    int dec = v > 0 ? 2 - (int)floor(log10(v)) : 0;
    size_t n;

    if (v == 0) {
        snprintf(buf, len, "0");
        return buf;
    }
    dec = dec < 1 ? 1 : dec > 6 ? 6 : dec;
    snprintf(buf, len, "%.*f", dec, v);
    n = strlen(buf);
    while (n > 2 && buf[n - 1] == '0' && buf[n - 2] != '.')
        buf[--n] = 0;
    return buf;
}

/* ------------------------------------------------------------------------ */
/* A dirty base: the refcount rebuild the commit starts with                 */
/* ------------------------------------------------------------------------ */
/*
 * A qcow2 base with the dirty bit set (lazy refcounts, and the QEMU that
 * wrote it did not close it) has refcounts that may be lower than the
 * references: opening it for writing, the commit first rebuilds them
 * (qcow2_rebuild_refcounts: new refcount blocks and table written past the
 * end of the file, the old ones left free), and only then allocates,
 * reusing the clusters the rebuild freed.  qcow2_commit_estimate reads the
 * base as it is, so it neither counts what the rebuild writes nor knows
 * which clusters are really free.
 *
 * So delta does the rebuild itself, on a shadow of the base: a backend
 * that reads the file (read-only, unlocked: the chain's handle holds the
 * locks) and keeps every write in memory.  The library rebuilds into it
 * exactly as the commit will; the growth of the shadow is what the rebuild
 * allocates (base-rebuild-bytes), and qcow2_commit_estimate over the chain
 * with the base served from the shadow gives the commit's allocations
 * after it.  Nothing reaches the file.  Memory: the rebuild's own (4 bytes
 * per cluster of the file) and the new refcount structures (the refcount
 * bits of every cluster, e.g. 32 MiB for 1 TiB of 64 KiB clusters with
 * 16-bit refcounts).  A base on a device does not grow: its rebuilt
 * structures go after the last cluster in use, which base-required-bytes
 * then counts.
 */
struct shadow_write {
    uint64_t off;
    size_t len;
    uint8_t *data;
};

struct shadow {
    struct qcow2_io file;        /* the base, open while a handle uses it */
    struct shadow_write *writes; /* in the order made */
    size_t n, cap;
    uint64_t size;
    uint64_t dev, ino;           /* the base's identity */
};

static int64_t shadow_pread(void *ctx, void *buf, size_t len, uint64_t off)
{
    struct shadow *sh = ctx;
    int64_t n;
    size_t i;

    if (off >= sh->size)
        return 0;
    if (len > sh->size - off)
        len = (size_t)(sh->size - off);
    n = sh->file.pread(sh->file.ctx, buf, len, off);
    if (n < 0)
        return n;
    memset((uint8_t *)buf + n, 0, len - (size_t)n);
    for (i = 0; i < sh->n; i++) {
        const struct shadow_write *w = &sh->writes[i];
        uint64_t lo = w->off > off ? w->off : off;
        uint64_t hi = w->off + w->len < off + len ? w->off + w->len
                                                   : off + len;
        if (lo < hi)
            memcpy((uint8_t *)buf + (lo - off), w->data + (lo - w->off),
                   (size_t)(hi - lo));
    }
    return (int64_t)len;
}

static int64_t shadow_pwrite(void *ctx, const void *buf, size_t len,
                             uint64_t off)
{
    struct shadow *sh = ctx;
    struct shadow_write *w;

    if (sh->n == sh->cap) {
        size_t cap = sh->cap ? sh->cap * 2 : 64;
        w = realloc(sh->writes, cap * sizeof(*w));
        if (!w)
            return -ENOMEM;
        sh->writes = w;
        sh->cap = cap;
    }
    w = &sh->writes[sh->n];
    w->data = malloc(len ? len : 1);
    if (!w->data)
        return -ENOMEM;
    memcpy(w->data, buf, len);
    w->off = off;
    w->len = len;
    sh->n++;
    if (off + len > sh->size)
        sh->size = off + len;
    return (int64_t)len;
}

static int shadow_flush(void *ctx)
{
    (void)ctx;
    return 0;
}

static int shadow_truncate(void *ctx, uint64_t size)
{
    ((struct shadow *)ctx)->size = size;
    return 0;
}

static int64_t shadow_size(void *ctx)
{
    return (int64_t)((struct shadow *)ctx)->size;
}

static int shadow_identity(void *ctx, uint64_t *dev, uint64_t *ino)
{
    const struct shadow *sh = ctx;

    *dev = sh->dev;
    *ino = sh->ino;
    return 0;
}

/* The handle is done with it: the file closes, the writes stay. */
static void shadow_close(void *ctx)
{
    struct shadow *sh = ctx;

    if (sh->file.close)
        sh->file.close(sh->file.ctx);
    memset(&sh->file, 0, sizeof(sh->file));
}

static void shadow_free(struct shadow *sh)
{
    size_t i;

    for (i = 0; i < sh->n; i++)
        free(sh->writes[i].data);
    free(sh->writes);
}

/* The shadow as a backend over a freshly opened `file`. */
static struct qcow2_io shadow_io(struct shadow *sh, const struct qcow2_io *file)
{
    struct qcow2_io io = {0};

    sh->file = *file;
    io.version = QCOW2_IO_VERSION;
    io.ctx = sh;
    io.pread = shadow_pread;
    io.pwrite = shadow_pwrite;
    io.flush = shadow_flush;
    io.truncate = shadow_truncate;
    io.size = shadow_size;
    io.close = shadow_close;
    io.identity = shadow_identity;
    io.caps = file->caps;
    return io;
}

/* open_file of the chain read through the shadow: the base (by identity)
 * comes from the shadow, every other file from the file system. */
static int shadow_open_file(void *ctx, const char *name, unsigned io_flags,
                            struct qcow2_io *out, char *err, size_t errlen)
{
    struct shadow *sh = ctx;
    struct qcow2_io f;
    uint64_t dev, ino;
    int rc = qcow2_io_open_file(name, io_flags | QCOW2_IO_NOLOCK, &f, err,
                                errlen);

    if (rc < 0)
        return rc;
    if (f.identity && f.identity(f.ctx, &dev, &ino) == 0 &&
        dev == sh->dev && ino == sh->ino) {
        *out = shadow_io(sh, &f);
        return 0;
    }
    *out = f;
    return 0;
}

/* Rebuild the base's refcounts into the shadow, as the commit's open does;
 * returns the bytes the file grows by, or -1 (printed). */
static int64_t shadow_rebuild(struct shadow *sh, const char *base)
{
    struct qcow2_image *img = qcow2_new();
    struct qcow2_open_opts o = {0};
    struct qcow2_io f, io;
    char err[256];
    int64_t before;
    int rc;

    if (!img)
        return -1;
    rc = qcow2_io_open_file(base, QCOW2_IO_NOLOCK, &f, err, sizeof(err));
    if (rc < 0) {
        cli_error_file(base, "%s", err);
        qcow2_close(img);
        return -1;
    }
    before = f.size(f.ctx);
    sh->size = before > 0 ? (uint64_t)before : 0;
    io = shadow_io(sh, &f);
    /* QCOW2_OPEN_CHECK: opened for writing without the open's own rebuild
     * and without touching bitmaps (the commit's writer flags them, which
     * the estimate models); then the rebuild itself */
    o.size = sizeof(o);
    o.flags = QCOW2_OPEN_RDWR | QCOW2_OPEN_CHECK | QCOW2_OPEN_NO_BACKING;
    o.format = "qcow2";
    rc = qcow2_open_io(img, &io, base, &o);
    if (rc == 0)
        rc = qcow2_rebuild_refcounts(img);
    if (rc < 0) {
        cli_error_file(base, "cannot model the refcount rebuild: %s",
                       qcow2_errmsg(img));
        qcow2_close(img);
        return -1;
    }
    qcow2_close(img);
    return (int64_t)sh->size - before;
}

struct args {
    char **actives;            /* ACTIVE... */
    unsigned n;
    const char *top, *base;
    bool have_rate, have_growth, have_sample, have_downtime;
    bool rate_history;         /* --rate=history: no calibration */
    uint64_t rate, growth;
    double sample_secs, downtime;
};

/* What the delta found, for the report. */
struct delta {
    const char *active;
    struct qcow2_image *chain;
    struct cli_chain c;
    unsigned nl;               /* committed layers */
    struct layer_stats *ls;    /* per committed layer, TOP first */
    struct qcow2_commit_estimate est;
    struct cli_fit fit;
    bool dirty;                /* the base's dirty bit: refcounts rebuilt */
    int64_t rebuild_bytes;     /* what the rebuild allocates */
    double growth_bps;
    struct plan plan;
    bool have_hist;            /* a comparable commit into this base */
    struct cli_history hist;   /* the most recent one */
    /* the time: its source, the rate, the seconds estimated */
    enum { SRC_NONE, SRC_GIVEN, SRC_MEASURED, SRC_HISTORY } src;
    double rate, seconds;
    struct calib_out cal;      /* SRC_MEASURED */
    double overhead;           /* SRC_MEASURED: seconds besides copying */
    double open_secs, walk_secs, rebuild_secs; /* measured here */
    char why[320];             /* no measurement: why not */
};

static void parse_args(int argc, char **argv, struct args *a)
{
    static const struct option longopts[] = {
        CLI_COMMON_LONGOPTS,
        {"top", required_argument, NULL, 't'},
        {"base", required_argument, NULL, 'b'},
        {"rate", required_argument, NULL, 'r'},
        {"growth-rate", required_argument, NULL, 'g'},
        {"sample", required_argument, NULL, 's'},
        {"downtime", required_argument, NULL, 'd'},
        {NULL, 0, NULL, 0}};
    int opt;

    while ((opt = getopt_long(argc, argv, CLI_COMMON_SHORTOPTS, longopts,
                              NULL)) != -1) {
        if (cli_common_option(opt, optarg, &common, usage))
            continue;
        switch (opt) {
        case 't': a->top = optarg; break;
        case 'b': a->base = optarg; break;
        case 'r':
            a->have_rate = a->rate_history = false;
            if (!strcmp(optarg, "auto"))
                break;
            if (!strcmp(optarg, "history")) {
                a->rate_history = true;
                break;
            }
            if (cli_parse_size(optarg, &a->rate) < 0 || a->rate == 0)
                cli_usage_error("invalid --rate '%s': bytes per second "
                                "above 0, with an optional K/M/G/T suffix, "
                                "or auto, or history", optarg);
            a->have_rate = true;
            break;
        case 'g':
            if (cli_parse_size(optarg, &a->growth) < 0)
                cli_usage_error("invalid --growth-rate '%s': bytes per "
                                "second, with an optional K/M/G/T suffix",
                                optarg);
            a->have_growth = true;
            break;
        case 's':
            if (parse_seconds(optarg, &a->sample_secs) < 0 ||
                a->sample_secs <= 0 || a->sample_secs > 86400)
                cli_usage_error("invalid --sample '%s': seconds, above 0 "
                                "and at most 86400", optarg);
            a->have_sample = true;
            break;
        case 'd':
            if (parse_seconds(optarg, &a->downtime) < 0)
                cli_usage_error("invalid --downtime '%s': seconds, 0 or "
                                "more", optarg);
            a->have_downtime = true;
            break;
        default: cli_usage_error("incorrect parameter");
        }
    }
    if (optind >= argc)
        cli_usage_error("missing ACTIVE");
    a->actives = argv + optind;
    a->n = (unsigned)(argc - optind);
    if (a->n > 1 && (a->top || a->base))
        cli_usage_error("--top and --base need a single ACTIVE (several "
                        "ACTIVEs commit each one's backing file)");
    if (a->have_growth && a->have_sample)
        cli_usage_error("--growth-rate and --sample exclude each other");
    if (a->have_downtime && !(a->have_growth || a->have_sample))
        cli_usage_error("--downtime plans live rounds: it needs "
                        "--growth-rate or --sample");
    if ((a->have_growth || a->have_sample) && !a->have_downtime)
        cli_usage_error("--growth-rate and --sample need --downtime");
}

/*
 * A dirty base: the estimate again, over a second open of the chain whose
 * base is the shadow after the rebuild; the growth is the rebuild's plus
 * the commit's after it (see the shadow above).
 */
static int dirty_estimate(struct delta *d, unsigned est_flags)
{
    const struct cli_layer *b = &d->c.layers[d->c.base];
    struct shadow sh = {.dev = b->dev, .ino = b->ino};
    struct qcow2_image *chain = NULL, *t;
    struct qcow2_commit_estimate est;
    struct qcow2_open_opts o;
    int64_t rebuilt = shadow_rebuild(&sh, b->name);
    unsigned i;
    int rc = -1;

    if (rebuilt < 0)
        goto out;
    chain = qcow2_new();
    if (!chain)
        goto out;
    cli_open_opts(&common, &o, QCOW2_OPEN_FORCE_SHARE);
    o.warn = NULL; /* said by the first open */
    o.open_file = shadow_open_file;
    o.open_ctx = &sh;
    if (qcow2_open(chain, d->active, &o) < 0) {
        cli_error_file(d->active, "%s", qcow2_errmsg(chain));
        goto out;
    }
    for (t = chain, i = 0; t && i < d->c.top; i++)
        t = qcow2_backing(t);
    if (!t || qcow2_commit_estimate(t, d->nl, est_flags, &est) < 0) {
        cli_error_file(b->name, "cannot estimate the commit after the "
                       "refcount rebuild: %s",
                       t ? qcow2_errmsg(t) : "the chain changed");
        goto out;
    }
    d->dirty = true;
    d->rebuild_bytes = rebuilt;
    d->est.base_growth_bytes = rebuilt + est.base_growth_bytes;
    d->est.base_required_bytes = est.base_required_bytes;
    d->est.new_clusters = est.new_clusters;
    rc = 0;
out:
    qcow2_close(chain);
    shadow_free(&sh);
    return rc;
}

/* The most recent commit into the base comparable with this one, from the
 * base's record (history.h): d->have_hist and d->hist.  A record that
 * cannot be read is as none. */
static void find_history(struct delta *d)
{
    char path[PATH_MAX], line[PATH_MAX + 128];
    struct cli_history h;
    FILE *f;

    d->have_hist = false;
    if (cli_state_path(&d->c, d->c.base, NULL, ".qchain-committed", path,
                       sizeof(path)) < 0 ||
        !(f = fopen(path, "r")))
        return;
    while (fgets(line, sizeof(line), f))
        if (cli_history_parse(line, &h) == 0 &&
            cli_history_comparable(&h, d->c.layers[d->c.base].format,
                                   d->est.data_bytes, d->est.data_runs) &&
            (!d->have_hist || h.time >= d->hist.time)) {
            d->hist = h;
            d->have_hist = true;
        }
    fclose(f);
}

/*
 * The time: --rate as given (seconds = data / rate); else, unless
 * --rate=history, measured (calibrate.h): the sample's copy scaled to the
 * delta's data, plus what the commit does besides copying, measured here
 * too: opening the chain, walking its metadata twice (the space check and
 * the copy), a dirty base's refcount rebuild, the journal and record
 * syncs; the rate is then data / seconds.  Without a measurement (a base
 * on a device, where nothing may be written; a directory that refuses
 * the scratch files; --rate=history), the last comparable commit's rate.
 */
static void find_time(struct delta *d, const struct args *a)
{
    const struct cli_layer *b = &d->c.layers[d->c.base];
    double data = (double)d->est.data_bytes;

    d->src = SRC_NONE;
    if (a->have_rate) {
        d->src = SRC_GIVEN;
        d->rate = (double)a->rate;
        d->seconds = data / d->rate;
        return;
    }
    if (a->rate_history)
        snprintf(d->why, sizeof(d->why), "--rate=history");
    else if (b->device || d->fit.device)
        snprintf(d->why, sizeof(d->why), "the base is a device, where "
                 "nothing may be written");
    else if (d->est.data_bytes == 0 && d->est.zero_bytes == 0)
        snprintf(d->why, sizeof(d->why), "nothing to copy");
    else {
        struct calib_in in = {
            .top = d->c.layers[d->c.top].img, .stop = d->nl,
            .base = b->img, .base_name = b->name,
            .data_bytes = d->est.data_bytes, .data_runs = d->est.data_runs,
            .zero_bytes = d->est.zero_bytes, .repoint = d->c.top > 0};
        char err[256];
        if (calibrate(&in, &d->cal, err, sizeof(err)) == 0) {
            /* the copy scales with the bytes; the flush after it with
             * the runs: what the writeback has left to write at the end
             * grows with the separate writes (a sample of scattered runs
             * stands for four times as many), not with the length of one
             * run the sample cut short; the zeroing with the bytes zeroed
             * (zero runs cut to their share count for what they were) */
            const struct calib_out *k = &d->cal;
            double runs = k->sample_runs ? (double)d->est.data_runs /
                                               (double)k->sample_runs
                                         : 0;
            d->overhead = k->sync_seconds + k->grow_seconds +
                          d->open_secs + 2 * d->walk_secs + d->rebuild_secs;
            d->seconds = d->overhead;
            if (k->sample_bytes)
                d->seconds += data * (k->copy_seconds + k->read_seconds) /
                              (double)k->sample_bytes;
            d->seconds += (runs > 1 ? runs : 1) * k->flush_seconds;
            if (k->zero_sample_bytes)
                d->seconds += k->zero_seconds * (double)k->zero_bytes /
                              (double)k->zero_sample_bytes;
            d->rate = data / d->seconds;
            d->src = SRC_MEASURED;
            return;
        }
        snprintf(d->why, sizeof(d->why), "cannot measure the commit rate "
                 "beside the base: %s", err);
    }
    if (d->have_hist) {
        d->src = SRC_HISTORY;
        d->rate = cli_history_rate(&d->hist);
        d->seconds = data / d->rate;
    }
}

/* The layers alone, the commit's walk, and whether it fits. */
static int measure(struct delta *d, const struct args *a)
{
    struct cli_layer *t;
    uint64_t skipped = 0;
    unsigned i;
    double t0 = calib_now();
    int rc;

    if (cli_chain_open(&common, d->active,
                       common.force_share ? QCOW2_OPEN_FORCE_SHARE : 0,
                       &d->chain, &d->c) < 0 ||
        cli_chain_resolve(&d->c, d->active, a->top, a->base) < 0)
        return -1;
    d->open_secs = calib_now() - t0;
    {
        /* an unfinished commit into a layer changes what is left to do */
        struct cli_pending *p = NULL;
        int n = cli_pending_find(&d->c, NULL, &p);
        if (n > 0)
            cli_pending_warn(&d->c, p, (unsigned)n);
        free(p);
    }
    d->nl = d->c.base - d->c.top;
    d->ls = calloc(d->nl, sizeof(*d->ls));
    if (!d->ls)
        return -1;
    for (i = 0; i < d->nl; i++) {
        struct cli_layer *y = &d->c.layers[d->c.top + i];
        if (layer_stats(y->img, common.force_share, &d->ls[i]) < 0) {
            cli_error_file(y->name, "%s", qcow2_errmsg(y->img));
            return -1;
        }
        skipped += d->ls[i].skipped;
    }
    t = &d->c.layers[d->c.top];
    t0 = calib_now();
    rc = qcow2_commit_estimate(t->img, d->nl,
                               common.force_share ? QCOW2_ESTIMATE_TOLERANT
                                                  : 0, &d->est);
    d->walk_secs = calib_now() - t0;
    if (rc < 0) {
        cli_error_file(t->name, "%s", qcow2_errmsg(t->img));
        return -1;
    }
    skipped += d->est.skipped_bytes;
    if (!strcmp(d->c.layers[d->c.base].format, "qcow2")) {
        struct qcow2_info bi;
        qcow2_info_get(d->c.layers[d->c.base].img, &bi);
        t0 = calib_now();
        if (bi.dirty && !bi.corrupt &&
            dirty_estimate(d, common.force_share ? QCOW2_ESTIMATE_TOLERANT
                                                    : 0) < 0)
            return -1;
        d->rebuild_secs = calib_now() - t0;
    }
    rc = cli_base_fit(d->c.layers[d->c.base].name, &d->est, &d->fit);
    if (rc < 0) {
        cli_error_file(d->c.layers[d->c.base].name, "cannot read the free "
                       "space of its file system: %s", strerror(-rc));
        return -1;
    }
    find_history(d);
    find_time(d, a);
    if (skipped)
        cli_warning("%" PRIu64 " guest bytes were skipped: their metadata "
                    "changed while it was read (the image is in use)",
                    skipped);
    return 0;
}

/* Sleep for secs seconds (whole and fractional). */
static void sleep_seconds(double secs)
{
    struct timespec w;

    w.tv_sec = (time_t)secs;
    w.tv_nsec = (long)((secs - (double)w.tv_sec) * 1e9);
    while (nanosleep(&w, &w) < 0)
        ;
}

/* --sample: the data each ACTIVE itself holds, read before and after one
 * sleep of secs seconds.  Done before the chains are measured, so that the
 * figures reported are the ones at the end of the sample. */
static int sample_growth(struct delta *disks, unsigned n, double secs)
{
    uint64_t *d1 = calloc(n, sizeof(*d1)), d2;
    unsigned i;
    int rc = -1;

    if (!d1)
        return -1;
    for (i = 0; i < n; i++) {
        if (sample_data(disks[i].active, &d1[i]) < 0)
            goto out;
    }
    sleep_seconds(secs);
    for (i = 0; i < n; i++) {
        if (sample_data(disks[i].active, &d2) < 0)
            goto out;
        disks[i].growth_bps = d2 > d1[i] ? (double)(d2 - d1[i]) / secs : 0;
    }
    rc = 0;
out:
    free(d1);
    return rc;
}

/* The disks of one VM together: sums, and the plan over the sums. */
struct totals {
    uint64_t data, zero;
    int64_t growth;
    double growth_bps;
    bool timed;                /* every disk has a time: their sum */
    double seconds, rate;      /* the sum, and data / it */
    struct plan plan;
};

static void json_plan(struct json *js, const struct plan *p,
                      double growth_bps, double downtime)
{
    json_object_begin(js, "plan");
    json_u64(js, "iterations", p->iterations);
    json_bool(js, "converges", p->converges);
    json_u64(js, "final-data-bytes", (uint64_t)llround(p->final_bytes));
    json_seconds(js, "final-seconds", p->final_seconds);
    json_u64(js, "growth-bytes-per-second", (uint64_t)llround(growth_bps));
    json_seconds(js, "downtime-seconds", downtime);
    json_object_end(js);
}

/* One disk: the whole document for a single ACTIVE. */
static void json_disk(struct json *js, const struct delta *d,
                      const struct args *a)
{
    const struct cli_chain *c = &d->c;
    unsigned i;

    json_object_begin(js, NULL);
    json_string(js, "active", d->active);
    json_string(js, "top", c->layers[c->top].name);
    json_string(js, "base", c->layers[c->base].name);
    json_string(js, "base-format", c->layers[c->base].format);
    json_array_begin(js, "layers");
    for (i = 0; i < d->nl; i++) {
        json_object_begin(js, NULL);
        json_string(js, "filename", c->layers[c->top + i].name);
        json_string(js, "format", c->layers[c->top + i].format);
        json_i64(js, "file-size", d->ls[i].file_size);
        json_u64(js, "data-bytes", d->ls[i].data);
        json_u64(js, "zero-bytes", d->ls[i].zero);
        json_u64(js, "compressed-bytes", d->ls[i].compressed);
        json_object_end(js);
    }
    json_array_end(js);
    json_u64(js, "data-bytes", d->est.data_bytes);
    json_u64(js, "zero-bytes", d->est.zero_bytes);
    json_u64(js, "compressed-bytes", d->est.compressed_bytes);
    json_u64(js, "data-runs", d->est.data_runs);
    json_i64(js, "base-growth-bytes", d->est.base_growth_bytes);
    json_bool(js, "base-grows", d->est.grows);
    if (d->dirty) {
        json_bool(js, "base-dirty", true);
        json_i64(js, "base-rebuild-bytes", d->rebuild_bytes);
    }
    json_u64(js, "base-required-bytes", d->fit.required);
    json_bool(js, "base-fits", d->fit.fits);
    if (d->src != SRC_NONE) {
        static const char *const src[] = {"", "given", "measured",
                                          "history"};
        json_u64(js, "rate-bytes-per-second", (uint64_t)d->rate);
        json_string(js, "rate-source", src[d->src]);
        json_seconds(js, "estimated-seconds", d->seconds);
    }
    if (d->src == SRC_MEASURED) {
        json_seconds(js, "calibration-seconds", d->cal.seconds);
        json_object_begin(js, "calibration");
        json_u64(js, "sample-bytes", d->cal.sample_bytes);
        json_u64(js, "sample-runs", d->cal.sample_runs);
        json_seconds(js, "copy-seconds", d->cal.copy_seconds);
        json_seconds(js, "read-seconds", d->cal.read_seconds);
        json_seconds(js, "flush-seconds", d->cal.flush_seconds);
        json_seconds(js, "grow-seconds", d->cal.grow_seconds);
        json_u64(js, "zero-bytes", d->cal.zero_bytes);
        json_u64(js, "zero-runs", d->cal.zero_runs);
        json_u64(js, "zero-sample-bytes", d->cal.zero_sample_bytes);
        json_u64(js, "zero-sample-runs", d->cal.zero_sample_runs);
        json_seconds(js, "zero-seconds", d->cal.zero_seconds);
        json_seconds(js, "overhead-seconds", d->overhead);
        json_object_end(js);
    }
    if (d->have_hist) {
        json_object_begin(js, "history");
        json_i64(js, "time", d->hist.time);
        json_u64(js, "data-bytes", d->hist.data);
        json_u64(js, "data-runs", d->hist.runs);
        json_u64(js, "offloaded-bytes", d->hist.offloaded);
        json_seconds(js, "seconds", d->hist.seconds);
        json_u64(js, "rate-bytes-per-second",
                 (uint64_t)cli_history_rate(&d->hist));
        json_object_end(js);
    }
    if (a->have_downtime)
        json_plan(js, &d->plan, d->growth_bps, a->downtime);
    json_bool(js, "approximate", common.force_share);
    json_object_end(js);
}

static void report_json(const struct delta *disks, unsigned n,
                        const struct totals *t, const struct args *a)
{
    struct json js;
    unsigned i;

    json_init(&js, stdout, true);
    if (n == 1) {
        json_disk(&js, &disks[0], a);
        json_end(&js);
        return;
    }
    json_object_begin(&js, NULL);
    json_array_begin(&js, "disks");
    for (i = 0; i < n; i++)
        json_disk(&js, &disks[i], a);
    json_array_end(&js);
    json_u64(&js, "data-bytes", t->data);
    json_u64(&js, "zero-bytes", t->zero);
    json_i64(&js, "base-growth-bytes", t->growth);
    if (t->timed)
        json_seconds(&js, "estimated-seconds", t->seconds);
    if (a->have_downtime)
        json_plan(&js, &t->plan, t->growth_bps, a->downtime);
    json_object_end(&js);
    json_end(&js);
}

/* The plan in a sentence. */
static void print_plan(const struct plan *p, double growth_bps,
                       double rate, const struct args *a)
{
    char g[32], t[32], f[32], b[32];

    printf("Guest growth %s/s, downtime %s s: ",
           cli_size_str((uint64_t)growth_bps, g, sizeof(g)),
           secs_str(a->downtime, t, sizeof(t)));
    secs_str(p->final_seconds, f, sizeof(f));
    if (p->converges && p->iterations == 0)
        printf("commit offline now: %s s.\n", f);
    else if (p->converges)
        printf("%u live round%s, then an offline commit of %s in %s s.\n",
               p->iterations, p->iterations > 1 ? "s" : "",
               cli_size_str((uint64_t)llround(p->final_bytes), b, sizeof(b)),
               f);
    else if (growth_bps >= rate)
        printf("the guest writes as fast as the commit copies or faster, so "
               "live rounds would only make the delta larger: commit "
               "offline now, in %s s (more than the downtime).\n", f);
    else
        printf("live rounds do not converge (after %u rounds the offline "
               "commit still takes %s s).\n", p->iterations, f);
}

static void report_human(const struct delta *d, const struct args *a)
{
    const struct cli_chain *c = &d->c;
    char sa[32], sb[32], g[32], f[32];
    unsigned i;

    printf("Commit of '%s' into '%s' (%s)%s:\n", c->layers[c->top].name,
           c->layers[c->base].name, c->layers[c->base].format,
           common.force_share ? " (approximate: images may be in use)"
                              : "");
    for (i = 0; i < d->nl; i++) {
        printf("  layer %s (%s, file %s): %s data, %s zero",
               c->layers[c->top + i].name, c->layers[c->top + i].format,
               cli_size_str((uint64_t)(d->ls[i].file_size > 0
                                           ? d->ls[i].file_size : 0),
                            f, sizeof(f)),
               cli_size_str(d->ls[i].data, sa, sizeof(sa)),
               cli_size_str(d->ls[i].zero, sb, sizeof(sb)));
        if (d->ls[i].compressed)
            printf(", %s compressed",
                   cli_size_str(d->ls[i].compressed, g, sizeof(g)));
        printf("\n");
    }
    printf("Copies %s of data (%" PRIu64 " bytes), zeroes %s "
           "(%" PRIu64 " bytes).\n",
           cli_size_str(d->est.data_bytes, sa, sizeof(sa)), d->est.data_bytes,
           cli_size_str(d->est.zero_bytes, sb, sizeof(sb)), d->est.zero_bytes);
    if (d->fit.device && !strcmp(c->layers[c->base].format, "raw"))
        ; /* a device's storage is all there: the sentence below */
    else if (d->est.base_growth_bytes >= 0)
        printf("The base grows by %s (%" PRId64 " bytes)%s.\n",
               cli_size_str((uint64_t)d->est.base_growth_bytes, g,
                            sizeof(g)),
               d->est.base_growth_bytes,
               d->est.grows ? ", and its virtual size to the top's" : "");
    else
        printf("The base shrinks by %s (%" PRId64 " bytes).\n",
               cli_size_str((uint64_t)-d->est.base_growth_bytes, g,
                            sizeof(g)),
               d->est.base_growth_bytes);
    if (d->dirty)
        printf("The base's dirty bit is set (lazy refcounts, not closed "
               "cleanly): the commit first rebuilds its refcounts, which "
               "allocates %s (%" PRId64 " bytes), counted in the growth.\n",
               cli_size_str((uint64_t)(d->rebuild_bytes > 0 ? d->rebuild_bytes
                                                            : 0), g,
                            sizeof(g)), d->rebuild_bytes);
    if (d->fit.device)
        printf("The base is a device of %s; the commit needs %s "
               "(%" PRIu64 " bytes): %s.\n",
               cli_size_str(d->fit.capacity, sa, sizeof(sa)),
               cli_size_str(d->fit.required, sb, sizeof(sb)), d->fit.required,
               d->fit.fits ? "it fits"
                        : "it does not fit, extend the volume first");
    else if (d->fit.growth > 0)
        printf("The base's file system has %s free: %s.\n",
               cli_size_str(d->fit.free, sa, sizeof(sa)),
               d->fit.fits ? "the growth fits"
                        : "the growth does not fit, make room first");
    if (d->src == SRC_GIVEN)
        printf("At %s/s the commit takes about %s s.\n",
               cli_size_str(a->rate, sa, sizeof(sa)),
               secs_str(d->seconds, f, sizeof(f)));
    else if (d->src == SRC_MEASURED) {
        char cs[32], what[160], zr[96] = "";
        const struct calib_out *k = &d->cal;
        if (k->zero_sample_runs)
            snprintf(zr, sizeof(zr), "%" PRIu64 " of its %" PRIu64
                     " zero range%s", k->zero_sample_runs, k->zero_runs,
                     k->zero_runs == 1 ? "" : "s");
        if (k->sample_runs)
            snprintf(what, sizeof(what), "%s of the delta in %" PRIu64
                     " run%s%s%s", cli_size_str(k->sample_bytes, sa,
                                                sizeof(sa)),
                     k->sample_runs, k->sample_runs == 1 ? "" : "s",
                     zr[0] ? " and " : "", zr);
        else
            snprintf(what, sizeof(what), "%s", zr);
        printf("Measured here (%s committed beside the base, %s s in all): "
               "the commit takes about %s s", what,
               secs_str(k->seconds, cs, sizeof(cs)),
               secs_str(d->seconds, f, sizeof(f)));
        if (d->est.data_bytes)
            printf(" (%s/s)", cli_size_str((uint64_t)d->rate, sb,
                                          sizeof(sb)));
        printf(".\n");
    } else if (!d->have_hist && d->why[0])
        printf("No time estimate (%s)%s.\n", d->why,
               d->est.data_bytes ? ": give --rate" : "");
    if (d->have_hist) {
        char when[64], hb[32], hs[32];
        time_t tt = (time_t)d->hist.time;
        struct tm tm;
        strftime(when, sizeof(when), "%Y-%m-%d %H:%M",
                 localtime_r(&tt, &tm));
        printf("%s the commit of %s into this base on %s, which took %s s "
               "(%s/s), it takes about %s s.\n",
               d->src == SRC_HISTORY ? "Going by" : "At the rate of",
               cli_size_str(d->hist.data, hb, sizeof(hb)), when,
               secs_str(d->hist.seconds, hs, sizeof(hs)),
               cli_size_str((uint64_t)cli_history_rate(&d->hist), sa,
                            sizeof(sa)),
               secs_str((double)d->est.data_bytes /
                            cli_history_rate(&d->hist), f, sizeof(f)));
    }
    if (a->have_downtime)
        print_plan(&d->plan, d->growth_bps, d->rate, a);
}

/* Several disks: each one's report, then the totals. */
static void report_human_disks(const struct delta *disks, unsigned n,
                               const struct totals *t, const struct args *a)
{
    char sa[32], sb[32], f[32];
    unsigned i;

    for (i = 0; i < n; i++) {
        printf("Disk %u of %u, '%s':\n", i + 1, n, disks[i].active);
        report_human(&disks[i], a);
        printf("\n");
    }
    printf("Totals over %u disks: copies %s of data (%" PRIu64 " bytes), "
           "zeroes %s (%" PRIu64 " bytes).\n", n,
           cli_size_str(t->data, sa, sizeof(sa)), t->data,
           cli_size_str(t->zero, sb, sizeof(sb)), t->zero);
    printf("The bases %s by %s (%" PRId64 " bytes).\n",
           t->growth >= 0 ? "grow" : "shrink",
           cli_size_str((uint64_t)(t->growth >= 0 ? t->growth : -t->growth),
                        sa, sizeof(sa)), t->growth);
    if (a->have_rate)
        printf("At %s/s the commits take about %s s.\n",
               cli_size_str(a->rate, sa, sizeof(sa)),
               secs_str(t->seconds, f, sizeof(f)));
    else if (t->timed)
        printf("One after the other, the commits take about %s s.\n",
               secs_str(t->seconds, f, sizeof(f)));
    if (a->have_downtime)
        print_plan(&t->plan, t->growth_bps, t->rate, a);
}

/* Measure every disk, plan each and the totals (growth: with --sample the
 * sum of the disks' rates; --growth-rate is the VM's). */
static int run(struct delta *disks, unsigned n, const struct args *a,
               struct totals *t)
{
    unsigned i;

    for (i = 0; i < n; i++) {
        disks[i].active = a->actives[i];
        disks[i].growth_bps = (double)a->growth;
    }
    if (a->have_sample && sample_growth(disks, n, a->sample_secs) < 0)
        return -1;
    memset(t, 0, sizeof(*t));
    t->growth_bps = a->have_sample ? 0 : (double)a->growth;
    t->timed = true;
    for (i = 0; i < n; i++) {
        struct delta *d = &disks[i];
        if (measure(d, a) < 0)
            return -1;
        if (d->src == SRC_NONE && d->est.data_bytes && a->have_downtime) {
            cli_error_file(d->active, "--downtime needs the commit's rate: "
                           "no time estimate (%s); give --rate", d->why);
            return -1;
        }
        if (a->have_downtime)
            d->plan = make_plan((double)d->est.data_bytes,
                                d->rate > 0 ? d->rate : 1,
                                d->growth_bps, a->downtime);
        t->timed = t->timed && d->src != SRC_NONE;
        t->seconds += d->seconds;
        t->data += d->est.data_bytes;
        t->zero += d->est.zero_bytes;
        t->growth += d->est.base_growth_bytes;
        if (a->have_sample)
            t->growth_bps += d->growth_bps;
    }
    if (a->have_rate)
        t->rate = (double)a->rate; /* as the disks' */
    else if (t->timed && t->seconds > 0)
        t->rate = (double)t->data / t->seconds;
    if (a->have_downtime)
        t->plan = make_plan((double)t->data, t->rate > 0 ? t->rate : 1,
                            t->growth_bps, a->downtime);
    return 0;
}

int main(int argc, char **argv)
{
    struct args a = {0};
    struct delta *disks;
    struct totals t;
    int status = QCHAIN_EXIT_FAILURE;
    unsigned i;

    cli_init("qchain-delta", argv);
    parse_args(argc, argv, &a);
    disks = calloc(a.n, sizeof(*disks));
    if (!disks) {
        cli_error("out of memory");
        return status;
    }
    if (run(disks, a.n, &a, &t) == 0) {
        if (common.output == CLI_OUTPUT_JSON)
            report_json(disks, a.n, &t, &a);
        else if (a.n == 1)
            report_human(&disks[0], &a);
        else
            report_human_disks(disks, a.n, &t, &a);
        status = QCHAIN_EXIT_OK;
    }
    for (i = 0; i < a.n; i++) {
        free(disks[i].ls);
        cli_chain_free(&disks[i].c);
        qcow2_close(disks[i].chain);
    }
    free(disks);
    return status;
}
