/*
 * test_crash.c - power loss, proven (issue 15): the library's write paths
 * run over the crash-simulating backend (io_crash.c), then the files are
 * rebuilt as a power loss would leave them at many points (every flush of
 * the record with seeds 0 and 1 and a random one, plus random points and
 * seeds), and every such state is held to four rules:
 *
 *   (a) the image opens (its chain from the other files' states);
 *   (b) qcow2_check finds no corruption in any file that was written
 *       (leaks allowed; corruption kinds the image had before the
 *       operation, which a repair is there to fix, are allowed too);
 *   (c) every 512-byte sector of the guest view reads either what it held
 *       at the last completed durability point (qcow2_flush, the end of
 *       the operation) before the crash, or a value a later write gave it
 *       before the crash; operations that must not change the guest view
 *       (refcount rebuild, repairs, commit under the active image,
 *       re-pointing the backing file) must leave it exactly as it was;
 *   (d) running the interrupted operation again on the state completes it:
 *       afterwards (and after check -r leaks) qcow2_check finds neither
 *       leaks nor corruption, and the guest view is the final one.
 *
 * Each scenario prints how many states it tried ("crash.NAME: N states,
 * F failures"); a failing state prints the scenario, crash point, seed and
 * what was wrong.  CRASH_EVENTS=1 in the environment also lists each
 * scenario's events and the findings of the repairs re-run.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "endian.h"
#include "harness.h"
#include "imgbuild.h"
#include "internal.h"

#define SEC 512u
#define MAXF 4
#define N_RANDOM 150       /* random (point, seed) pairs per scenario */
#define N_BARRIER_RANDOM 2 /* random seeds per flush, besides 0 and 1 */
#define MAX_REPORTS 8      /* failing states described per scenario */
#define CHUNK (256u << 10)
/* A small metadata cache: evictions write metadata back in the middle of
 * operations (more orders to crash in), and lookups stay cheap. */
#define CACHE_BYTES (64u << 10)

/* ---- a machine's files by name: opts.open_file over io_crash ---- */

struct mfs {
    struct q2_crash *c;
    unsigned n;
    const char *names[MAXF];
    const char *formats[MAXF]; /* "raw", "qcow2" */
};

static int mfs_find(const struct mfs *m, const char *name)
{
    unsigned i;

    if (strncmp(name, "./", 2) == 0)
        name += 2;
    for (i = 0; i < m->n; i++)
        if (strcmp(m->names[i], name) == 0)
            return (int)i;
    return -1;
}

static int mfs_open(void *ctx, const char *name, unsigned io_flags,
                    struct qcow2_io *out, char *err, size_t errlen)
{
    struct mfs *m = ctx;
    int i = mfs_find(m, name);

    (void)io_flags;
    if (i < 0) {
        snprintf(err, errlen, "no file named '%s'", name);
        return -ENOENT;
    }
    return q2_crash_io(m->c, (unsigned)i, out);
}

/* Open file i of the machine; *out always set, closed by the caller. */
static int mfs_image(struct mfs *m, unsigned i, unsigned flags,
                     struct qcow2_image **out)
{
    struct qcow2_open_opts o = {.size = sizeof(o), .flags = flags,
                                .format = m->formats[i],
                                .cache_bytes = CACHE_BYTES,
                                .open_file = mfs_open, .open_ctx = m};
    struct qcow2_io io;
    int rc;

    *out = qcow2_new();
    if (!*out)
        return -ENOMEM;
    if ((rc = q2_crash_io(m->c, i, &io)) < 0)
        return rc;
    return qcow2_open_io(*out, &io, m->names[i], &o);
}

static int mfs_add(struct mfs *m, const char *name, const char *format,
                   const void *buf, size_t len)
{
    unsigned f;
    struct qcow2_io io;
    int rc = q2_crash_open(m->c, buf, len, &io, &f);

    if (rc == 0) {
        m->names[f] = name;
        m->formats[f] = format;
        m->n = f + 1;
    }
    return rc;
}

/* ---- the guest model: 64-bit hashes of sectors ---- */

static uint64_t sec_hash(const uint8_t *p)
{
    uint64_t h = 0xcbf29ce484222325ull, w;
    unsigned i;

    for (i = 0; i < SEC; i += 8) {
        memcpy(&w, p + i, 8);
        h = (h ^ w) * 0x100000001b3ull;
        h ^= h >> 29;
    }
    return h;
}

static uint64_t zero_hash(void)
{
    static const uint8_t z[SEC];
    return sec_hash(z);
}

enum op_kind { OP_WRITE, OP_ZERO, OP_DISCARD, OP_FLUSH, OP_RESIZE };

struct op {
    enum op_kind kind;
    uint64_t off, len, seed; /* OP_RESIZE: len is the new size */
};

struct durable {     /* a completed durability point */
    uint64_t end;    /* events recorded when it completed */
    uint64_t vsize;
    size_t op;       /* ops done before it */
    uint64_t *h;     /* the view then */
};

struct change {      /* a sector value (or size) a write gave */
    uint64_t start;  /* events recorded when the write began */
    uint64_t sec;    /* UINT64_MAX: a resize to h */
    uint64_t h;
};

struct run;
typedef int (*run_fn)(struct run *r, struct mfs *m, size_t from_op,
                      char *why, size_t len);

struct run {
    const char *name;
    struct mfs m;
    unsigned top;          /* file whose guest view is checked */
    unsigned top_flags;    /* extra open flags for the view */
    bool final_only;       /* create: only states after the last flush */
    uint64_t nsec;         /* sectors tracked (the largest size) */
    uint64_t vsize;
    uint64_t *cur;
    struct durable *dur;
    size_t n_dur;
    struct change *ch;
    size_t n_ch, cap_ch;
    struct op *ops;
    size_t n_ops;
    char allow[8][48];     /* corruption kinds of the initial image */
    unsigned n_allow;
    unsigned nb_snapshots;
    run_fn rerun;          /* complete the operation on a state */
    run_fn final_check;    /* optional extra check of a completed state */
    run_fn state_check;    /* optional extra check of every crash state */
    uint64_t hdr_sig[3];   /* header_whole: the top's extensions at start */
    unsigned barrier_random; /* random seeds per flush; 0: N_BARRIER_RANDOM */
    bool share;            /* files share extents (q2_crash_share) */
    unsigned states, failures;
};

static void model_init(struct run *r, uint64_t vsize, uint64_t max_size)
{
    uint64_t i;

    r->vsize = vsize;
    r->nsec = max_size / SEC;
    r->cur = malloc(r->nsec * sizeof(uint64_t));
    for (i = 0; r->cur && i < r->nsec; i++)
        r->cur[i] = zero_hash();
}

static void model_durable(struct run *r, size_t op)
{
    struct durable *d;

    r->dur = realloc(r->dur, (r->n_dur + 1) * sizeof(*r->dur));
    d = &r->dur[r->n_dur++];
    d->end = q2_crash_events(r->m.c);
    d->vsize = r->vsize;
    d->op = op;
    d->h = malloc(r->nsec * sizeof(uint64_t));
    memcpy(d->h, r->cur, r->nsec * sizeof(uint64_t));
}

static void model_change(struct run *r, uint64_t start, uint64_t sec,
                         uint64_t h)
{
    if (r->n_ch == r->cap_ch) {
        r->cap_ch = r->cap_ch ? 2 * r->cap_ch : 4096;
        r->ch = realloc(r->ch, r->cap_ch * sizeof(*r->ch));
    }
    r->ch[r->n_ch++] = (struct change){start, sec, h};
    if (sec == UINT64_MAX)
        r->vsize = h;
    else
        r->cur[sec] = h;
}

/* The view as the model has it now (from the image: the initial view). */
static int model_read(struct run *r, struct qcow2_image *img)
{
    uint8_t *buf = malloc(CHUNK);
    uint64_t off, i;
    int64_t n = 0;

    if (!buf)
        return -ENOMEM;
    for (off = 0; off < r->vsize && n >= 0; off += CHUNK) {
        uint64_t len = r->vsize - off < CHUNK ? r->vsize - off : CHUNK;
        n = qcow2_pread(img, buf, len, off);
        for (i = 0; n == (int64_t)len && i < len / SEC; i++)
            r->cur[off / SEC + i] = sec_hash(buf + i * SEC);
    }
    free(buf);
    return n < 0 ? (int)n : 0;
}

static void run_free(struct run *r)
{
    size_t i;

    for (i = 0; i < r->n_dur; i++)
        free(r->dur[i].h);
    free(r->dur);
    free(r->ch);
    free(r->cur);
    free(r->ops);
    q2_crash_free(r->m.c);
}

/* ---- guest operations, recorded in the model ---- */

static void pattern(uint8_t *buf, size_t len, uint64_t seed)
{
    uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
    size_t i;

    for (i = 0; i < len; i += 8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        memcpy(buf + i, &x, len - i < 8 ? len - i : 8);
    }
}

static int do_op(struct qcow2_image *img, const struct op *o, uint8_t *buf)
{
    switch (o->kind) {
    case OP_WRITE:
        pattern(buf, o->len, o->seed);
        return qcow2_pwrite(img, buf, o->len, o->off) == (int64_t)o->len
                   ? 0 : -EIO;
    case OP_ZERO:
        return qcow2_pwrite_zeroes(img, o->off, o->len);
    case OP_DISCARD:
        return qcow2_discard(img, o->off, o->len);
    case OP_FLUSH:
        return qcow2_flush(img);
    case OP_RESIZE:
        return qcow2_resize(img, o->len);
    }
    return -EINVAL;
}

/* Run ops[0..n) on img over the machine, recording the model. */
static int play(struct run *r, struct qcow2_image *img)
{
    uint8_t *buf = malloc(1 << 20);
    size_t k;
    uint64_t s;
    int rc = 0;

    for (k = 0; k < r->n_ops && rc == 0; k++) {
        const struct op *o = &r->ops[k];
        uint64_t start = q2_crash_events(r->m.c);
        if ((rc = do_op(img, o, buf)) < 0) {
            failure("op %zu: %s", k, qcow2_errmsg(img));
            break;
        }
        for (s = 0; o->kind != OP_FLUSH && o->kind != OP_RESIZE &&
                    s < o->len / SEC; s++)
            model_change(r, start, o->off / SEC + s,
                         o->kind == OP_WRITE ? sec_hash(buf + s * SEC)
                                             : zero_hash());
        if (o->kind == OP_RESIZE)
            model_change(r, start, UINT64_MAX, o->len);
        if (o->kind == OP_FLUSH)
            model_durable(r, k + 1);
    }
    free(buf);
    return rc;
}

static void add_op(struct run *r, enum op_kind kind, uint64_t off,
                   uint64_t len, uint64_t seed)
{
    r->ops = realloc(r->ops, (r->n_ops + 1) * sizeof(*r->ops));
    r->ops[r->n_ops++] = (struct op){kind, off, len, seed};
}

/* ---- checks of one state ---- */

struct findings {
    const struct run *r;
    uint64_t bad;          /* corruptions not allowed */
    char first[256];
};

static void on_finding(void *ctx, const struct qcow2_check_finding *f)
{
    struct findings *fd = ctx;
    unsigned i;

    if (f->severity != QCOW2_CHECK_CORRUPTION || f->recheck)
        return;
    for (i = 0; fd->r && i < fd->r->n_allow; i++)
        if (strcmp(fd->r->allow[i], f->kind) == 0)
            return;
    if (!fd->bad++)
        snprintf(fd->first, sizeof(fd->first), "%s: %s", f->kind,
                 f->message);
}

/* qcow2_check of file i (no backing); allow: the run's kinds, or NULL for
 * none.  strict: leaks are failures too. */
static int check_file(struct run *r, struct mfs *m, unsigned i,
                      const struct run *allow, bool strict, char *why,
                      size_t len)
{
    struct findings fd = {.r = allow};
    struct qcow2_check_opts co = {.size = sizeof(co), .finding = on_finding,
                                  .ctx = &fd};
    struct qcow2_check_result res;
    struct qcow2_image *img;
    int rc = mfs_image(m, i, QCOW2_OPEN_NO_BACKING, &img);

    (void)r;
    if (rc < 0) {
        snprintf(why, len, "%s does not open: %s", m->names[i],
                 qcow2_errmsg(img));
    } else if ((rc = qcow2_check(img, &co, &res)) < 0) {
        snprintf(why, len, "check of %s fails: %s", m->names[i],
                 qcow2_errmsg(img));
    } else if (fd.bad || res.check_errors) {
        rc = -QCOW2_ECORRUPT;
        snprintf(why, len, "check of %s: %" PRIu64 " corruptions, %" PRIu64
                 " check errors (%s)", m->names[i], fd.bad, res.check_errors,
                 fd.first);
    } else if (strict && res.leaks) {
        rc = -QCOW2_ECORRUPT;
        snprintf(why, len, "check of %s: %" PRIu64 " leaks remain",
                 m->names[i], res.leaks);
    }
    qcow2_close(img);
    return rc;
}

/* check -r leaks of file i */
static int fix_leaks(struct mfs *m, unsigned i, char *why, size_t len)
{
    struct qcow2_check_opts co = {.size = sizeof(co),
                                  .flags = QCOW2_CHECK_FIX_LEAKS};
    struct qcow2_check_result res;
    struct qcow2_image *img;
    int rc = mfs_image(m, i, QCOW2_OPEN_RDWR | QCOW2_OPEN_CHECK |
                                 QCOW2_OPEN_NO_BACKING, &img);

    if (rc == 0)
        rc = qcow2_check(img, &co, &res);
    if (rc == 0)
        rc = qcow2_close(img);
    else
        qcow2_close(img);
    if (rc < 0)
        snprintf(why, len, "check -r leaks of %s fails: %s", m->names[i],
                 qcow2_strerror(rc));
    return rc;
}

/* Is the view allowed: per sector, the value at the durability point d or
 * one later writes before `at` gave it (exact: only d's). */
static int view_check(struct run *r, struct qcow2_image *img, uint64_t at,
                      const struct durable *d, bool exact, char *why,
                      size_t len)
{
    uint64_t vs = qcow2_virtual_size(img), nsec = vs / SEC, s, off, i, bad = 0;
    uint8_t *buf = malloc(CHUNK), *ok = calloc(1, r->nsec + 1);
    uint64_t *got = malloc((r->nsec + 1) * sizeof(uint64_t));
    bool size_ok = vs == d->vsize;
    int rc = 0;

    for (i = 0; !exact && i < r->n_ch; i++)
        if (r->ch[i].start >= d->end && r->ch[i].start < at &&
            r->ch[i].sec == UINT64_MAX && r->ch[i].h == vs)
            size_ok = true;
    if (!size_ok || nsec > r->nsec) {
        snprintf(why, len, "virtual size %" PRIu64 " (expected %" PRIu64
                 ")", vs, d->vsize);
        rc = -EINVAL;
        goto out;
    }
    for (off = 0; off < vs; off += CHUNK) {
        uint64_t n = vs - off < CHUNK ? vs - off : CHUNK;
        if (qcow2_pread(img, buf, n, off) != (int64_t)n) {
            snprintf(why, len, "guest read at %" PRIu64 " fails: %s", off,
                     qcow2_errmsg(img));
            rc = -EIO;
            goto out;
        }
        for (i = 0; i < n / SEC; i++) {
            s = off / SEC + i;
            got[s] = sec_hash(buf + i * SEC);
            ok[s] = got[s] == d->h[s];
        }
    }
    for (i = 0; !exact && i < r->n_ch; i++) {
        const struct change *c = &r->ch[i];
        if (c->start >= d->end && c->start < at && c->sec < nsec &&
            got[c->sec] == c->h)
            ok[c->sec] = 1;
    }
    for (s = 0; s < nsec; s++)
        if (!ok[s] && !bad++)
            snprintf(why, len, "guest sector %" PRIu64 " (offset 0x%" PRIx64
                     ") holds a value it never had", s, s * SEC);
    if (bad) {
        size_t l = strlen(why);
        snprintf(why + l, len - l, " (%" PRIu64 " such sectors)", bad);
        rc = -EINVAL;
    }
out:
    free(buf);
    free(ok);
    free(got);
    return rc;
}

static void report(struct run *r, uint64_t at, uint64_t seed,
                   const char *what)
{
    char pend[160] = "";
    size_t l = 0;
    unsigned f;

    if (++r->failures > MAX_REPORTS)
        return;
    for (f = 0; f < r->m.n && l < sizeof(pend) - 48; f++) {
        uint64_t n = q2_crash_pending(r->m.c, f, at);
        if (n)
            l += (size_t)snprintf(pend + l, sizeof(pend) - l, ", %" PRIu64
                                  " changes pending in %s", n,
                                  r->m.names[f]);
    }
    fprintf(stderr, "crash.%s: FAIL at point %" PRIu64 "/%" PRIu64 " seed %"
            PRIu64 "%s: %s\n", r->name, at, q2_crash_events(r->m.c), seed,
            l ? pend : ", nothing pending", what);
}

/* The last durability point completed before `at`. */
static const struct durable *durable_at(const struct run *r, uint64_t at)
{
    size_t i = r->n_dur;

    while (i > 1 && r->dur[i - 1].end > at)
        i--;
    return &r->dur[i - 1];
}

/* A machine whose files hold the states of r's files at (at, seed). */
static int state_machine(struct run *r, uint64_t at, uint64_t seed,
                         struct mfs *m)
{
    unsigned f;
    int rc = 0;

    memset(m, 0, sizeof(*m));
    if (!(m->c = q2_crash_new()))
        return -ENOMEM;
    q2_crash_share(m->c, r->share);
    for (f = 0; f < r->m.n && rc == 0; f++) {
        uint8_t *buf;
        size_t len;
        if ((rc = q2_crash_state(r->m.c, f, at, seed, &buf, &len)) < 0)
            break;
        rc = mfs_add(m, r->m.names[f], r->m.formats[f], buf, len);
        free(buf);
    }
    return rc;
}

static bool touched(const struct run *r, unsigned f)
{
    struct q2_crash_event e;
    uint64_t i;

    for (i = 0; q2_crash_event_get(r->m.c, i, &e) == 0; i++)
        if (e.file == f && e.kind != Q2_CRASH_FLUSH)
            return true;
    return false;
}

/* (a), (b), (c) on a state, and the snapshot count. */
static int check_state(struct run *r, struct mfs *m, uint64_t at, bool strict,
                       const struct durable *d, bool exact, char *why,
                       size_t len)
{
    struct qcow2_image *img;
    struct qcow2_info info;
    unsigned f;
    int rc;

    for (f = 0; f < m->n; f++) {
        if (strcmp(m->formats[f], "qcow2") == 0 && touched(r, f) &&
            (rc = check_file(r, m, f, strict ? NULL : r, strict, why, len)) < 0)
            return rc;
    }
    rc = mfs_image(m, r->top, r->top_flags, &img);
    if (rc < 0) {
        snprintf(why, len, "%s does not open: %s", m->names[r->top],
                 qcow2_errmsg(img));
    } else if (qcow2_info_get(img, &info) == 0 &&
               info.nb_snapshots != r->nb_snapshots) {
        snprintf(why, len, "%u snapshots (expected %u)", info.nb_snapshots,
                 r->nb_snapshots);
        rc = -EINVAL;
    } else {
        rc = view_check(r, img, at, d, exact, why, len);
    }
    qcow2_close(img);
    return rc;
}

/* (d): run the operation again, check -r leaks, then everything exact. */
static int complete_state(struct run *r, struct mfs *m, const struct durable *d,
                          char *why, size_t len)
{
    const struct durable *fin = &r->dur[r->n_dur - 1];
    unsigned f;
    int rc;

    if ((rc = r->rerun(r, m, d->op, why, len)) < 0)
        return rc;
    for (f = 0; f < m->n; f++)
        if (strcmp(m->formats[f], "qcow2") == 0 && touched(r, f) &&
            (rc = fix_leaks(m, f, why, len)) < 0)
            return rc;
    if ((rc = check_state(r, m, UINT64_MAX, true, fin, true, why, len)) < 0)
        return rc;
    return r->final_check ? r->final_check(r, m, 0, why, len) : 0;
}

static void try_state(struct run *r, uint64_t at, uint64_t seed)
{
    const struct durable *d = durable_at(r, at);
    bool exact = d == &r->dur[0] && r->n_ch == 0;
    struct mfs m;
    char why[512] = "";
    int rc;

    r->states++;
    rc = state_machine(r, at, seed, &m);
    if (rc < 0)
        snprintf(why, sizeof(why), "cannot rebuild the state: %s",
                 qcow2_strerror(rc));
    if (rc == 0)
        rc = check_state(r, &m, at, false, d, exact, why, sizeof(why));
    if (rc == 0 && r->state_check)
        rc = r->state_check(r, &m, 0, why, sizeof(why));
    if (rc == 0 && r->rerun) {
        size_t l;
        rc = complete_state(r, &m, d, why, sizeof(why));
        l = strlen(why);
        if (rc < 0 && l + 20 < sizeof(why))
            memmove(why + 18, why, l + 1), memcpy(why, "after re-running: ", 18);
    }
    if (rc < 0)
        report(r, at, seed, why);
    q2_crash_free(m.c);
}

static uint64_t rng_state = 0x15;
/* Each scenario draws from its own sequence (the same run alone or not). */
static void reseed(const struct run *r)
{
    const char *p;

    rng_state = 0x15;
    for (p = r->name; *p; p++)
        rng_state = (rng_state ^ (uint8_t)*p) * 0x100000001b3ull;
}

static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* Every flush with seeds 0, 1 and N_BARRIER_RANDOM random ones, the end
 * (seeds 0 and 1), and N_RANDOM
 * random points with random seeds. */
static void sweep(struct run *r)
{
    uint64_t n = q2_crash_events(r->m.c), i, last = 0, k;
    struct q2_crash_event e;

    for (i = 0; i < n; i++) {
        if (q2_crash_event_get(r->m.c, i, &e) < 0 || e.kind != Q2_CRASH_FLUSH)
            continue;
        last = i + 1;
        if (r->final_only)
            continue;
        try_state(r, i, 0);
        try_state(r, i, 1);
        for (k = 0; k < (r->barrier_random ? r->barrier_random
                                           : N_BARRIER_RANDOM); k++)
            try_state(r, i, 2 + rnd() % 100000);
    }
    for (k = 0; k < 2 + N_RANDOM; k++) {
        uint64_t at = r->final_only || k < 2 ? n : rnd() % (n + 1);
        if (r->final_only && k % 2)
            at = last;
        try_state(r, at, k < 2 ? k : 2 + rnd() % 100000);
    }
    if (getenv("CRASH_EVENTS"))
        for (i = 0; q2_crash_event_get(r->m.c, i, &e) == 0; i++)
            printf("  event %" PRIu64 ": file %u kind %d off %" PRIu64
                   " len %" PRIu64 "\n", i, e.file, (int)e.kind, e.off, e.len);
    printf("crash.%s: %u states, %u failures (%" PRIu64 " events)\n",
           r->name, r->states, r->failures, n);
    fflush(stdout);
    failure("crash.%s: %u of %u crash states fail", r->name, r->failures,
            r->states);
    EXPECT_EQ_INT(r->failures, 0);
}

/* The initial view of the top file, and the corruption kinds the files
 * have before anything runs (a repair's reason to run). */
static void collect_kinds(void *ctx, const struct qcow2_check_finding *f)
{
    struct run *r = ctx;
    unsigned i;

    if (f->severity != QCOW2_CHECK_CORRUPTION)
        return;
    for (i = 0; i < r->n_allow; i++)
        if (strcmp(r->allow[i], f->kind) == 0)
            return;
    if (r->n_allow < 8)
        snprintf(r->allow[r->n_allow++], sizeof(r->allow[0]), "%s", f->kind);
}

static int run_start(struct run *r, uint64_t max_size)
{
    struct qcow2_check_opts co = {.size = sizeof(co),
                                  .finding = collect_kinds, .ctx = r};
    struct qcow2_check_result res;
    struct qcow2_image *img;
    struct qcow2_info info;
    unsigned f;
    int rc;

    for (f = 0; f < r->m.n; f++) {
        if (strcmp(r->m.formats[f], "qcow2") != 0)
            continue;
        rc = mfs_image(&r->m, f, QCOW2_OPEN_NO_BACKING, &img);
        if (rc == 0)
            rc = qcow2_check(img, &co, &res);
        qcow2_close(img);
        if (rc < 0)
            return rc;
    }
    rc = mfs_image(&r->m, r->top, r->top_flags, &img);
    if (rc == 0 && (rc = qcow2_info_get(img, &info)) == 0) {
        r->nb_snapshots = info.nb_snapshots;
        model_init(r, info.virtual_size,
                   max_size > info.virtual_size ? max_size
                                                : info.virtual_size);
        rc = model_read(r, img);
    }
    if (rc < 0)
        failure("initial %s: %s", r->m.names[r->top], qcow2_errmsg(img));
    qcow2_close(img);
    if (rc == 0)
        model_durable(r, 0);
    return rc;
}

/* ---- building the files a scenario starts from ---- */

/* A qcow2 image made through a scratch machine by qcow2_create_io, then
 * ops played on it (opened without its backing file: whole clusters only),
 * and `leaks` clusters allocated that nothing names.  *len: its size. */
static uint8_t *make_qcow2(const struct qcow2_create_opts *o,
                           const struct op *ops, size_t n_ops,
                           unsigned leaks, size_t *len)
{
    struct mfs m = {.c = q2_crash_new(), .n = 1, .names = {"x.qcow2"},
                    .formats = {"qcow2"}};
    struct qcow2_image *img = NULL;
    struct qcow2_io io;
    uint8_t *buf = NULL, *tmp = malloc(1 << 20);
    uint64_t off = 0;
    char err[256] = "";
    size_t k;
    int rc = q2_crash_open(m.c, NULL, 0, &io, NULL);

    if (rc == 0)
        rc = qcow2_create_io(&io, "x.qcow2", o, err, sizeof(err));
    if (rc == 0)
        rc = mfs_image(&m, 0, QCOW2_OPEN_RDWR | QCOW2_OPEN_NO_BACKING, &img);
    for (k = 0; rc == 0 && k < n_ops; k++)
        rc = do_op(img, &ops[k], tmp);
    if (rc == 0 && leaks && (rc = q2_rc_alloc(img, leaks, &off)) == 0) {
        memset(tmp, 0, 1 << 20);
        if (img->io.pwrite(img->io.ctx, tmp, (size_t)leaks *
                           img->cluster_size, off) < 0)
            rc = -EIO;
    }
    if (rc < 0)
        failure("making an image: %s %s", err, img ? qcow2_errmsg(img) : "");
    if (qcow2_close(img) < 0 && rc == 0)
        rc = -EIO;
    if (rc == 0)
        rc = q2_crash_state(m.c, 0, q2_crash_events(m.c), 1, &buf, len);
    q2_crash_free(m.c);
    free(tmp);
    return rc == 0 ? buf : NULL;
}

/* ops writing whole clusters [first, first+n) of a layer, every step-th */
static size_t cluster_ops(struct op *ops, uint64_t cs, unsigned first,
                          unsigned n, unsigned step, uint64_t seed)
{
    size_t k = 0;
    unsigned i;

    for (i = first; i < first + n; i += step)
        ops[k++] = (struct op){OP_WRITE, i * cs, cs, seed + i};
    return k;
}

/* ---- scenarios: the write path ---- */

static int rerun_ops(struct run *r, struct mfs *m, size_t from, char *why,
                     size_t len)
{
    struct qcow2_image *img;
    uint8_t *buf = malloc(1 << 20);
    size_t k;
    int rc = mfs_image(m, r->top, QCOW2_OPEN_RDWR | r->top_flags, &img);

    for (k = from; rc == 0 && k < r->n_ops; k++)
        rc = do_op(img, &r->ops[k], buf);
    if (rc < 0)
        snprintf(why, len, "op %zu fails: %s", k, qcow2_errmsg(img));
    if (qcow2_close(img) < 0 && rc == 0) {
        snprintf(why, len, "close fails");
        rc = -EIO;
    }
    free(buf);
    return rc;
}

/* Play r->ops on the top image over the machine, then sweep. */
static void write_scenario(struct run *r, uint64_t max_size)
{
    struct qcow2_image *img;
    const struct qcow2_header *h;

    r->rerun = rerun_ops;
    if (run_start(r, max_size) < 0 || !r->cur) {
        EXPECT_TRUE(0);
        return;
    }
    REQUIRE_EQ_INT(mfs_image(&r->m, r->top, QCOW2_OPEN_RDWR | r->top_flags,
                             &img), 0);
    EXPECT_EQ_INT(play(r, img), 0);
    h = qcow2_header_get(img);
    printf("crash.%s: refcount table %u clusters, L1 %u entries\n", r->name,
           h->refcount_table_clusters, h->l1_size);
    EXPECT_EQ_INT(qcow2_close(img), 0);
    model_durable(r, r->n_ops);
    sweep(r);
}

/* New clusters, refcount blocks and the refcount table grown (512-byte
 * clusters, 64-bit refcounts: a block covers 64 clusters, the first table
 * 4096), zeroes and discards. */
TEST(write_alloc)
{
    struct qcow2_create_opts o = {.size = sizeof(o), .virtual_size = 4 << 20,
                                  .cluster_size = 512, .refcount_bits = 64};
    struct run r = {.name = "write_alloc"};
    uint8_t *img;
    size_t len, k;

    reseed(&r);
    img = make_qcow2(&o, NULL, 0, 0, &len);
    REQUIRE_TRUE(img != NULL);
    r.m.c = q2_crash_new();
    mfs_add(&r.m, "img.qcow2", "qcow2", img, len);
    free(img);
    for (k = 0; k < 200; k++) {
        uint64_t off = (k * 97 % 256) * 16384; /* 3.2 MiB of new clusters */
        add_op(&r, OP_WRITE, off, 16384, rnd());
        if (k % 3 == 0)
            add_op(&r, OP_WRITE, rnd() % 8184 * SEC, SEC * (1 + rnd() % 8),
                   rnd());
        if (k % 10 == 9)
            add_op(&r, k % 20 == 9 ? OP_ZERO : OP_DISCARD,
                   rnd() % 8000 * SEC, SEC * (1 + rnd() % 16), 0);
        if (k % 16 == 15)
            add_op(&r, OP_FLUSH, 0, 0, 0);
    }
    write_scenario(&r, 0);
    run_free(&r);
}

/* L1 growth: 512-byte clusters (an L2 table maps 32 KiB), 64 KiB grown to
 * 2 MiB then 4 MiB, written past each old end. */
TEST(write_l1_growth)
{
    struct qcow2_create_opts o = {.size = sizeof(o), .virtual_size = 65536,
                                  .cluster_size = 512};
    struct run r = {.name = "write_l1_growth"};
    uint8_t *img;
    size_t len, k;

    reseed(&r);
    img = make_qcow2(&o, NULL, 0, 0, &len);
    REQUIRE_TRUE(img != NULL);
    r.m.c = q2_crash_new();
    mfs_add(&r.m, "img.qcow2", "qcow2", img, len);
    free(img);
    add_op(&r, OP_WRITE, 0, 4096, 1);
    add_op(&r, OP_FLUSH, 0, 0, 0);
    add_op(&r, OP_RESIZE, 0, 2 << 20, 0);
    for (k = 0; k < 12; k++)
        add_op(&r, OP_WRITE, 65536 + k * 150 * SEC, 2048, 10 + k);
    add_op(&r, OP_FLUSH, 0, 0, 0);
    add_op(&r, OP_RESIZE, 0, 4 << 20, 0);
    for (k = 0; k < 12; k++)
        add_op(&r, OP_WRITE, (2 << 20) + k * 300 * SEC, 1024, 30 + k);
    add_op(&r, OP_WRITE, 0, 8192, 99);
    write_scenario(&r, 4 << 20);
    run_free(&r);
}

/* Growing over a larger backing file: the grown range reads as zeros, not
 * as the backing file's data past the old end, in every state (the zeros
 * must be durable before the new size). */
TEST(resize_over_larger_backing)
{
    struct qcow2_create_opts o = {.size = sizeof(o), .virtual_size = 1 << 20,
                                  .cluster_size = 16384,
                                  .backing_name = "base.raw",
                                  .backing_format = "raw"};
    struct run r = {.name = "resize_over_larger_backing"};
    uint8_t *img, *base = malloc(4 << 20);
    size_t len;

    reseed(&r);
    REQUIRE_TRUE(base != NULL);
    pattern(base, 4 << 20, 11);
    img = make_qcow2(&o, NULL, 0, 0, &len);
    REQUIRE_TRUE(img != NULL);
    r.m.c = q2_crash_new();
    mfs_add(&r.m, "top.qcow2", "qcow2", img, len);
    mfs_add(&r.m, "base.raw", "raw", base, 4 << 20);
    free(img);
    free(base);
    add_op(&r, OP_WRITE, 4096, 8192, 1);
    add_op(&r, OP_FLUSH, 0, 0, 0);
    add_op(&r, OP_RESIZE, 0, 3 << 20, 0);
    add_op(&r, OP_WRITE, (2 << 20) + 512, 4096, 2);
    add_op(&r, OP_FLUSH, 0, 0, 0);
    write_scenario(&r, 4 << 20);
    run_free(&r);
}

/* Copy on write: partial-cluster writes, zeroes and discards over a raw
 * backing file (16 KiB clusters). */
TEST(write_cow)
{
    struct qcow2_create_opts o = {.size = sizeof(o), .virtual_size = 2 << 20,
                                  .cluster_size = 16384,
                                  .backing_name = "base.raw",
                                  .backing_format = "raw"};
    struct run r = {.name = "write_cow"};
    uint8_t *img, *base = malloc(2 << 20);
    size_t len, k;

    reseed(&r);
    REQUIRE_TRUE(base != NULL);
    pattern(base, 2 << 20, 7);
    img = make_qcow2(&o, NULL, 0, 0, &len);
    REQUIRE_TRUE(img != NULL);
    r.m.c = q2_crash_new();
    mfs_add(&r.m, "top.qcow2", "qcow2", img, len);
    mfs_add(&r.m, "base.raw", "raw", base, 2 << 20);
    free(img);
    free(base);
    for (k = 0; k < 60; k++) {
        uint64_t off = rnd() % 4096 * SEC;
        uint64_t n = SEC * (1 + rnd() % 12);
        if (off + n > (2 << 20))
            n = (2 << 20) - off;
        add_op(&r, OP_WRITE, off, n, rnd());
        if (k % 12 == 5)
            add_op(&r, OP_ZERO, rnd() % 4000 * SEC, SEC * (1 + rnd() % 64), 0);
        if (k % 12 == 11)
            add_op(&r, OP_DISCARD, rnd() % 128 * 16384, 16384, 0);
        if (k % 8 == 7)
            add_op(&r, OP_FLUSH, 0, 0, 0);
    }
    write_scenario(&r, 0);
    run_free(&r);
}

/* ---- scenarios: operations that keep the guest view ---- */

/* An operation run once over the machine (r->rerun on r->m), the view
 * unchanged, then the sweep. */
static void same_view_scenario(struct run *r)
{
    char why[512] = "";

    if (run_start(r, 0) < 0 || !r->cur) {
        EXPECT_TRUE(0);
        return;
    }
    failure("%s", why);
    if (!EXPECT_EQ_INT(r->rerun(r, &r->m, 0, why, sizeof(why)), 0))
        return;
    model_durable(r, 0);
    sweep(r);
}

static int rerun_rebuild(struct run *r, struct mfs *m, size_t from,
                         char *why, size_t len)
{
    struct qcow2_image *img;
    int rc = mfs_image(m, r->top, QCOW2_OPEN_RDWR | QCOW2_OPEN_NO_BACKING,
                       &img);

    (void)from;
    if (rc == 0)
        rc = qcow2_rebuild_refcounts(img);
    if (rc < 0)
        snprintf(why, len, "rebuild fails: %s", qcow2_errmsg(img));
    if (qcow2_close(img) < 0 && rc == 0)
        rc = -EIO;
    return rc;
}

static void print_finding(void *ctx, const struct qcow2_check_finding *f)
{
    (void)ctx;
    printf("    finding %s sev %d off 0x%" PRIx64 " len %" PRIu64
           " recheck %d: %s\n", f->kind, (int)f->severity, f->offset,
           f->length, f->recheck, f->message);
}

static int rerun_check(struct run *r, struct mfs *m, unsigned flags,
                       char *why, size_t len)
{
    struct qcow2_check_opts co = {.size = sizeof(co), .flags = flags,
                                  .finding = getenv("CRASH_EVENTS")
                                                 ? print_finding : NULL};
    struct qcow2_check_result res;
    struct qcow2_image *img;
    int rc = mfs_image(m, r->top, QCOW2_OPEN_RDWR | QCOW2_OPEN_CHECK |
                                      QCOW2_OPEN_NO_BACKING, &img);

    if (rc == 0)
        rc = qcow2_check(img, &co, &res);
    if (rc == 0 && (res.corruptions || res.leaks)) {
        snprintf(why, len, "check -r %s leaves %" PRIu64 " corruptions, %"
                 PRIu64 " leaks", flags == QCOW2_CHECK_FIX_ALL ? "all"
                 : "leaks", res.corruptions, res.leaks);
        rc = -EINVAL;
    } else if (rc < 0) {
        snprintf(why, len, "check -r fails: %s", qcow2_errmsg(img));
    }
    if (qcow2_close(img) < 0 && rc == 0)
        rc = -EIO;
    return rc;
}

static int rerun_fix_leaks(struct run *r, struct mfs *m, size_t from,
                           char *why, size_t len)
{
    (void)from;
    return rerun_check(r, m, QCOW2_CHECK_FIX_LEAKS, why, len);
}

static int rerun_fix_all(struct run *r, struct mfs *m, size_t from,
                         char *why, size_t len)
{
    (void)from;
    return rerun_check(r, m, QCOW2_CHECK_FIX_ALL, why, len);
}

/* 4 KiB clusters, data spread over 2 MiB, 40 leaked clusters. */
static void leaky_scenario(struct run *r)
{
    struct qcow2_create_opts o = {.size = sizeof(o), .virtual_size = 2 << 20,
                                  .cluster_size = 4096};
    struct op ops[512];
    size_t n = cluster_ops(ops, 4096, 0, 512, 3, 100), len;
    uint8_t *img = make_qcow2(&o, ops, n, 40, &len);

    REQUIRE_TRUE(img != NULL);
    r->m.c = q2_crash_new();
    mfs_add(&r->m, "img.qcow2", "qcow2", img, len);
    free(img);
    same_view_scenario(r);
}

TEST(rebuild_refcounts)
{
    struct run r = {.name = "rebuild_refcounts", .rerun = rerun_rebuild};

    reseed(&r);
    leaky_scenario(&r);
    run_free(&r);
}

TEST(check_fix_leaks)
{
    struct run r = {.name = "check_fix_leaks", .rerun = rerun_fix_leaks};

    reseed(&r);
    leaky_scenario(&r);
    run_free(&r);
}

/* A referenced data cluster with refcount 0 (refcount-too-low: -r all
 * raises it), a COPIED flag missing, and leaks. */
TEST(check_fix_all)
{
    struct run r = {.name = "check_fix_all", .rerun = rerun_fix_all};
    struct qimg q;
    uint64_t host = 0, rb, e;
    unsigned i;

    reseed(&r);
    qimg_init(&q, 3, 12, 2 << 20, 0);
    for (i = 0; i < 64; i++)
        host = qimg_data(&q, (uint64_t)i * 3 * 4096, NULL);
    qimg_finish(&q);
    rb = qimg_get64(&q, q.rt_off);
    q.buf[rb + 2 * (host / 4096)] = 0;        /* refcount of the last: 0 */
    q.buf[rb + 2 * (host / 4096) + 1] = 0;
    e = qimg_get64(&q, qimg_l2_entry_off(&q, 0));
    qimg_put64(&q, qimg_l2_entry_off(&q, 0), e & ~(1ull << 63));
    r.m.c = q2_crash_new();
    mfs_add(&r.m, "img.qcow2", "qcow2", q.buf, q.len);
    qimg_free(&q);
    same_view_scenario(&r);
    run_free(&r);
}

/* The snapshot-table switch: a version 3 snapshot entry without its 16
 * bytes of extra data, which check -r all rewrites into a new table. */
TEST(snapshot_table_switch)
{
    struct run r = {.name = "snapshot_table_switch", .rerun = rerun_fix_all};
    struct qimg q;
    uint8_t *p;
    unsigned i;

    reseed(&r);
    qimg_init(&q, 3, 12, 2 << 20, 0);
    for (i = 0; i < 32; i++)
        qimg_data(&q, (uint64_t)i * 5 * 4096, NULL);
    qimg_snapshot(&q, "1", "before", 0);
    for (i = 0; i < 16; i++)
        qimg_data(&q, (uint64_t)i * 7 * 4096, NULL);
    qimg_finish(&q);
    /* the entry again, with no extra data: id and name moved down */
    p = q.buf + q.snap_table_off;
    q2_store_be32(p + 36, 0);
    memmove(p + 40, p + 56, 1 + 6);
    memset(p + 47, 0, 16);
    r.m.c = q2_crash_new();
    mfs_add(&r.m, "img.qcow2", "qcow2", q.buf, q.len);
    qimg_free(&q);
    same_view_scenario(&r);
    run_free(&r);
}

/* ---- qcow2_create: complete after its last flush ---- */

TEST(create)
{
    struct qcow2_create_opts o = {.size = sizeof(o), .virtual_size = 3 << 20,
                                  .cluster_size = 4096,
                                  .backing_name = "base.raw",
                                  .backing_format = "raw"};
    struct run r = {.name = "create", .final_only = true};
    struct qcow2_io io;
    uint8_t *base = calloc(1, 1 << 20);
    char err[256];

    reseed(&r);
    REQUIRE_TRUE(base != NULL);
    r.m.c = q2_crash_new();
    REQUIRE_EQ_INT(q2_crash_open(r.m.c, NULL, 0, &io, NULL), 0);
    r.m.names[0] = "new.qcow2";
    r.m.formats[0] = "qcow2";
    r.m.n = 1;
    mfs_add(&r.m, "base.raw", "raw", base, 1 << 20);
    free(base);
    failure("%s", err);
    REQUIRE_EQ_INT(qcow2_create_io(&io, "new.qcow2", &o, err, sizeof(err)),
                   0);
    REQUIRE_EQ_INT(run_start(&r, 0), 0);
    model_durable(&r, 0);
    sweep(&r);
    run_free(&r);
}

/* ---- commit and re-point: the view through the active image ---- */

/* base <- s1 <- s2 (2 MiB, 16 KiB clusters, raw or qcow2 base); s1 holds
 * every 3rd cluster of the first half, s2 every 5th of all (or nothing:
 * s1_clusters 0). */
enum s2_layout {
    S2_FORMAT_EXT,    /* qemu-img create -F: the format extension first */
    S2_NO_EXT,        /* no format extension, a feature name table that
                         takes the header past sector 0 */
    S2_NO_EXT_FULL,   /* no format extension, an unknown extension that
                         fills sector 0 */
    S2_EXT_LONG       /* the format extension, then a feature name table
                         that passes sector 0 even without it */
};

static void make_chain(struct run *r, bool raw_base, unsigned s1_clusters,
                       enum s2_layout s2)
{
    const uint64_t cs = 16384, size = 2 << 20;
    struct qcow2_create_opts o = {.size = sizeof(o), .virtual_size = size,
                                  .cluster_size = (uint32_t)cs};
    struct op ops[128];
    uint8_t *buf;
    size_t len, n;

    r->m.c = q2_crash_new();
    if (raw_base) {
        buf = malloc(size);
        pattern(buf, size, 3);
        mfs_add(&r->m, "base.raw", "raw", buf, size);
    } else {
        n = cluster_ops(ops, cs, 0, 128, 2, 3);
        buf = make_qcow2(&o, ops, n, 0, &len);
        mfs_add(&r->m, "base.qcow2", "qcow2", buf, len);
    }
    free(buf);
    o.backing_name = raw_base ? "base.raw" : "base.qcow2";
    o.backing_format = raw_base ? "raw" : "qcow2";
    n = cluster_ops(ops, cs, 0, s1_clusters, 3, 1000);
    buf = make_qcow2(&o, ops, n, 0, &len);
    mfs_add(&r->m, "s1.qcow2", "qcow2", buf, len);
    free(buf);
    if (s2 == S2_FORMAT_EXT) {
        o.backing_name = "s1.qcow2";
        o.backing_format = "qcow2";
        n = cluster_ops(ops, cs, 1, 127, 5, 2000);
        buf = make_qcow2(&o, ops, n, 0, &len);
        mfs_add(&r->m, "s2.qcow2", "qcow2", buf, len);
        free(buf);
    } else {
        /* qemu-img create without -F: no backing format extension, and
         * a feature name table that takes the header past sector 0 */
        struct qimg q;
        unsigned i;
        uint8_t blob[400];
        qimg_init(&q, 3, 16, size, 0);
        qimg_backing(&q, "s1.qcow2", s2 == S2_EXT_LONG ? "qcow2" : NULL);
        for (i = 0; (s2 == S2_NO_EXT || s2 == S2_EXT_LONG) && i < 9; i++)
            qimg_feature(&q, i < 5 ? 0 : i < 6 ? 1 : 2, i < 5 ? i : 0,
                         "some feature");
        pattern(blob, sizeof(blob), 5);
        if (s2 == S2_NO_EXT_FULL)
            qimg_ext(&q, 0x7c0ffee7, blob, sizeof(blob));
        qimg_data(&q, 65536, NULL);
        qimg_data(&q, 5 * 65536, NULL);
        qimg_finish(&q);
        mfs_add(&r->m, "s2.qcow2", "qcow2", q.buf, q.len);
        qimg_free(&q);
    }
    r->top = 2;
}

/* Commit the layers above depth `stop` of `top` into the file at that
 * depth; st (or NULL) gets the commit's figures. */
static int commit_into(struct mfs *m, unsigned top, unsigned stop,
                       unsigned base, struct qcow2_commit_stats *st,
                       char *why, size_t len)
{
    struct qcow2_image *t = NULL, *b = NULL;
    int rc = mfs_image(m, top, 0, &t);

    if (rc == 0)
        rc = mfs_image(m, base, QCOW2_OPEN_RDWR | QCOW2_OPEN_NO_BACKING, &b);
    if (rc == 0)
        rc = qcow2_commit(t, stop, b, NULL, st);
    if (rc < 0)
        snprintf(why, len, "commit fails: %s / %s", qcow2_errmsg(t),
                 b ? qcow2_errmsg(b) : "");
    if (qcow2_close(b) < 0 && rc == 0)
        rc = -EIO;
    qcow2_close(t);
    return rc;
}

static int rerun_commit(struct run *r, struct mfs *m, size_t from, char *why,
                        size_t len)
{
    (void)from;
    (void)r;
    return commit_into(m, 2, 2, 0, NULL, why, len);
}

/* The base alone reads what the top did. */
static int base_is_top(struct run *r, struct mfs *m, size_t from, char *why,
                       size_t len)
{
    struct qcow2_image *b;
    const struct durable *fin = &r->dur[r->n_dur - 1];
    int rc = mfs_image(m, 0, QCOW2_OPEN_NO_BACKING, &b);

    (void)from;
    if (rc < 0)
        snprintf(why, len, "the base does not open: %s", qcow2_errmsg(b));
    else if ((rc = view_check(r, b, UINT64_MAX, fin, true, why, len)) < 0)
        strncat(why, " (the base alone)", len - strlen(why) - 1);
    qcow2_close(b);
    return rc;
}

TEST(commit_raw)
{
    struct run r = {.name = "commit_raw", .rerun = rerun_commit,
                    .final_check = base_is_top};

    reseed(&r);
    make_chain(&r, true, 64, S2_FORMAT_EXT);
    same_view_scenario(&r);
    run_free(&r);
}

TEST(commit_qcow2)
{
    struct run r = {.name = "commit_qcow2", .rerun = rerun_commit,
                    .final_check = base_is_top};

    reseed(&r);
    make_chain(&r, false, 64, S2_FORMAT_EXT);
    same_view_scenario(&r);
    run_free(&r);
}

/* Into a qcow2 base on storage that shares extents: the data clusters
 * are cloned (a clone is recorded as a write of the source's bytes); every
 * run, the first and those that finish a crash state, must clone. */
static int rerun_commit_clone(struct run *r, struct mfs *m, size_t from,
                              char *why, size_t len)
{
    struct qcow2_commit_stats st = {0};
    int rc = commit_into(m, 2, 2, 0, &st, why, len);

    (void)r;
    (void)from;
    if (rc == 0 && st.offloaded_bytes == 0) {
        snprintf(why, len, "none of %" PRIu64 " data bytes cloned",
                 st.data_bytes);
        rc = -EINVAL;
    }
    return rc;
}

TEST(commit_qcow2_clone)
{
    struct run r = {.name = "commit_qcow2_clone", .rerun = rerun_commit_clone,
                    .final_check = base_is_top};

    reseed(&r);
    make_chain(&r, false, 64, S2_FORMAT_EXT);
    r.share = true;
    q2_crash_share(r.m.c, true);
    same_view_scenario(&r);
    run_free(&r);
}

static int set_backing(struct mfs *m, unsigned f, const char *name,
                       const char *fmt, char *why, size_t len)
{
    struct qcow2_image *img;
    int rc = mfs_image(m, f, QCOW2_OPEN_RDWR | QCOW2_OPEN_NO_BACKING, &img);

    if (rc == 0)
        rc = qcow2_set_backing(img, name, fmt);
    if (rc < 0)
        snprintf(why, len, "set_backing fails: %s", qcow2_errmsg(img));
    if (qcow2_close(img) < 0 && rc == 0)
        rc = -EIO;
    return rc;
}

/* The top names the base (and its format) now. */
static int top_names_base(struct run *r, struct mfs *m, size_t from,
                          char *why, size_t len)
{
    struct qcow2_image *img;
    struct qcow2_info info;
    int rc = mfs_image(m, r->top, QCOW2_OPEN_NO_BACKING, &img);

    (void)from;
    if (rc == 0 && (rc = qcow2_info_get(img, &info)) == 0 &&
        (!info.backing_name || strcmp(info.backing_name, "base.qcow2") ||
         !info.backing_format || strcmp(info.backing_format, "qcow2"))) {
        snprintf(why, len, "the top names '%s' (%s)",
                 info.backing_name ? info.backing_name : "",
                 info.backing_format ? info.backing_format : "no format");
        rc = -EINVAL;
    }
    qcow2_close(img);
    return rc;
}

/* commit --top style: s1 into the base, then s2 re-pointed at the base. */
static int rerun_commit_repoint(struct run *r, struct mfs *m, size_t from,
                                char *why, size_t len)
{
    int rc = commit_into(m, 1, 1, 0, NULL, why, len);

    (void)from;
    (void)r;
    return rc < 0 ? rc : set_backing(m, 2, "base.qcow2", "qcow2", why, len);
}

TEST(commit_top_repoint)
{
    struct run r = {.name = "commit_top_repoint",
                    .rerun = rerun_commit_repoint,
                    .final_check = top_names_base};

    reseed(&r);
    make_chain(&r, false, 64, S2_FORMAT_EXT);
    same_view_scenario(&r);
    run_free(&r);
}

static void header_start(struct run *r, unsigned seeds);

static int rerun_repoint(struct run *r, struct mfs *m, size_t from,
                         char *why, size_t len)
{
    (void)from;
    return set_backing(m, r->top, "base.qcow2", "qcow2", why, len);
}

/* s1 is empty: s2 over s1 or over the base reads the same. */
TEST(set_backing_format_ext)
{
    struct run r = {.name = "set_backing_format_ext", .rerun = rerun_repoint,
                    .final_check = top_names_base};

    reseed(&r);
    make_chain(&r, false, 0, S2_FORMAT_EXT);
    header_start(&r, 0);
    same_view_scenario(&r);
    run_free(&r);
}

TEST(set_backing_no_ext)
{
    struct run r = {.name = "set_backing_no_ext", .rerun = rerun_repoint,
                    .final_check = top_names_base};

    reseed(&r);
    make_chain(&r, false, 0, S2_NO_EXT);
    header_start(&r, 24);
    same_view_scenario(&r);
    run_free(&r);
}

/* The one layout the switch cannot split into sector writes (an unknown
 * extension fills sector 0): refused before anything is written, by the
 * check and by the switch itself, rather than rewritten whole. */
TEST(set_backing_no_ext_full_sector)
{
    struct run r = {.name = "set_backing_no_ext_full_sector"};
    struct q2_crash_event ev;
    struct qcow2_image *img = NULL;
    uint64_t before, i;
    unsigned writes = 0;

    reseed(&r);
    make_chain(&r, false, 0, S2_NO_EXT_FULL);
    EXPECT_EQ_INT(mfs_image(&r.m, 2, QCOW2_OPEN_RDWR | QCOW2_OPEN_NO_BACKING,
                            &img), 0);
    before = q2_crash_events(r.m.c);
    EXPECT_EQ_INT(qcow2_set_backing_check(img, "base.qcow2", "qcow2"),
                  -ENOTSUP);
    EXPECT_EQ_INT(qcow2_set_backing(img, "base.qcow2", "qcow2"), -ENOTSUP);
    EXPECT_CONTAINS(qcow2_errmsg(img), "no room");
    EXPECT_EQ_INT(qcow2_close(img), 0);
    for (i = before; i < q2_crash_events(r.m.c); i++)
        if (q2_crash_event_get(r.m.c, i, &ev) == 0 && ev.file == 2 &&
            ev.kind != Q2_CRASH_FLUSH)
            writes++;
    EXPECT_EQ_INT(writes, 0);
    run_free(&r);
}

/* The top's header extensions hashed: [0] all but the backing format
 * extension, [1] also without the feature name table (which the lean
 * step of a header switch leaves out); [2] 1 when there is a feature name
 * table. */
static int ext_sig(struct mfs *m, unsigned f, uint64_t sig[3],
                   struct qcow2_image **keep)
{
    struct qcow2_image *img;
    struct qcow2_extension e;
    unsigned i, k;
    int rc = mfs_image(m, f, QCOW2_OPEN_NO_BACKING, &img);

    sig[0] = sig[1] = 1469598103934665603ull;
    sig[2] = 0;
    for (i = 0; rc == 0 && qcow2_extension_get(img, i, &e) == 0; i++) {
        if (e.type == QCOW2_EXT_BACKING_FORMAT)
            continue;
        if (e.type == QCOW2_EXT_FEATURE_TABLE)
            sig[2] = 1;
        for (k = 0; k < 2; k++) {
            uint32_t j;
            if (k == 1 && e.type == QCOW2_EXT_FEATURE_TABLE)
                continue;
            sig[k] = (sig[k] ^ e.type) * 1099511628211ull;
            for (j = 0; j < e.length; j++)
                sig[k] = (sig[k] ^ e.data[j]) * 1099511628211ull;
        }
    }
    *keep = img;
    return rc;
}

/* Every crash state of a header switch holds a whole header, old or new:
 * the other extensions as they were (the feature name table whole, or
 * left out by the lean step), a format only with a name, and the name one
 * of the two the switch is between (s1.qcow2, base.qcow2) or none. */
static int header_whole(struct run *r, struct mfs *m, size_t from,
                        char *why, size_t len)
{
    struct qcow2_image *img;
    struct qcow2_info info;
    uint64_t sig[3];
    int rc = ext_sig(m, r->top, sig, &img);

    (void)from;
    if (rc == 0 && (rc = qcow2_info_get(img, &info)) == 0) {
        const char *n = info.backing_name;
        if (sig[0] != r->hdr_sig[0] &&
            (sig[1] != r->hdr_sig[1] || sig[2])) {
            snprintf(why, len, "the header's extensions changed");
            rc = -EINVAL;
        } else if ((info.backing_format && !n) ||
                   (n && strcmp(n, "s1.qcow2") && strcmp(n, "base.qcow2"))) {
            snprintf(why, len, "the header names '%s' (%s)", n ? n : "",
                     info.backing_format ? info.backing_format : "-");
            rc = -EINVAL;
        }
    }
    qcow2_close(img);
    return rc;
}

/* Record the top's extensions before the run (for header_whole); `seeds`
 * random seeds per flush (0: the default) where the switch tears writes
 * across sectors, so that their sector subsets are tried. */
static void header_start(struct run *r, unsigned seeds)
{
    struct qcow2_image *img;

    r->state_check = header_whole;
    r->barrier_random = seeds;
    EXPECT_EQ_INT(ext_sig(&r->m, r->top, r->hdr_sig, &img), 0);
    qcow2_close(img);
}

/* Safe rebase of s2 (the top) onto file `newb` of the machine, or onto
 * none (-1). */
static int rebase_to(struct mfs *m, unsigned top, int newb, char *why,
                     size_t len)
{
    struct qcow2_image *t = NULL, *b = NULL;
    int rc = mfs_image(m, top, QCOW2_OPEN_RDWR, &t);

    if (rc == 0 && newb >= 0)
        rc = mfs_image(m, (unsigned)newb, 0, &b);
    if (rc == 0)
        rc = qcow2_rebase(t, b, b ? m->names[newb] : NULL,
                          b ? m->formats[newb] : NULL, NULL, NULL);
    if (rc < 0)
        snprintf(why, len, "rebase fails: %s", qcow2_errmsg(t));
    qcow2_close(b);
    if (qcow2_close(t) < 0 && rc == 0)
        rc = -EIO;
    return rc;
}

static int rerun_rebase_base(struct run *r, struct mfs *m, size_t from,
                             char *why, size_t len)
{
    (void)from;
    return rebase_to(m, r->top, 0, why, len);
}

static int rerun_rebase_none(struct run *r, struct mfs *m, size_t from,
                             char *why, size_t len)
{
    (void)from;
    return rebase_to(m, r->top, -1, why, len);
}

/* The top names no backing file now. */
static int top_alone(struct run *r, struct mfs *m, size_t from, char *why,
                     size_t len)
{
    struct qcow2_image *img;
    struct qcow2_info info;
    int rc = mfs_image(m, r->top, QCOW2_OPEN_NO_BACKING, &img);

    (void)from;
    if (rc == 0 && (rc = qcow2_info_get(img, &info)) == 0 &&
        (info.backing_name || info.backing_format)) {
        snprintf(why, len, "the top still names '%s' (%s)",
                 info.backing_name ? info.backing_name : "",
                 info.backing_format ? info.backing_format : "no format");
        rc = -EINVAL;
    }
    qcow2_close(img);
    return rc;
}

/* s1 holds data: the rebase copies what s1 shows into s2, then names the
 * base; the view through s2 is the same at every crash state. */
TEST(rebase_drop_middle)
{
    struct run r = {.name = "rebase_drop_middle", .rerun = rerun_rebase_base,
                    .final_check = top_names_base};

    reseed(&r);
    make_chain(&r, false, 64, S2_FORMAT_EXT);
    header_start(&r, 0);
    same_view_scenario(&r);
    run_free(&r);
}

/* -b "": everything s2 read through s1 and the base copied, then the name
 * and the format extension removed (the feature name table moves up). */
TEST(rebase_remove_backing)
{
    struct run r = {.name = "rebase_remove_backing",
                    .rerun = rerun_rebase_none, .final_check = top_alone};

    reseed(&r);
    make_chain(&r, false, 64, S2_FORMAT_EXT);
    header_start(&r, 0);
    same_view_scenario(&r);
    run_free(&r);
}

/* The same from a header without a format extension whose feature name
 * table passes sector 0 (qemu-img create without -F). */
TEST(rebase_remove_backing_no_ext)
{
    struct run r = {.name = "rebase_remove_backing_no_ext",
                    .rerun = rerun_rebase_none, .final_check = top_alone};

    reseed(&r);
    make_chain(&r, false, 64, S2_NO_EXT);
    header_start(&r, 0);
    same_view_scenario(&r);
    run_free(&r);
}

/* Removal from a header whose extensions pass sector 0 after the format
 * extension is gone: the lean sector first, then the rest, then the full
 * sector 0 (SW_REMOVE_STEPS). */
TEST(rebase_remove_backing_long)
{
    struct run r = {.name = "rebase_remove_backing_long",
                    .rerun = rerun_rebase_none, .final_check = top_alone};

    reseed(&r);
    make_chain(&r, false, 64, S2_EXT_LONG);
    header_start(&r, 24);
    same_view_scenario(&r);
    run_free(&r);
}
