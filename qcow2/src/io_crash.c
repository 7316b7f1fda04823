/*
 * io_crash.c - a crash-simulating storage backend for tests: one simulated
 * machine (struct q2_crash) holding several files, each an in-memory file
 * like io_mem's, whose every change (write, truncate, punch) and every
 * flush is recorded as an event in one global order.  From the record it
 * rebuilds what a file would hold after a power loss at any point.
 *
 * The durability model (DESIGN.md A.3): a change to a file is durable once
 * that file is flushed after it.  At a power loss everything durable is
 * there; every change not yet durable may or may not have reached the
 * disk, independently of the others (the chosen ones applied in their
 * original order), and a write of several 512-byte sectors may have
 * reached it in part, sector by sector.  Truncates and punches are applied
 * whole or not at all.
 *
 * Memory: the initial content and the data of every write are kept (the
 * tests use images of a few MiB); a machine refuses to record more than
 * CRASH_MAX_DATA bytes of write data (-ENOMEM).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define CRASH_SECTOR 512
#define CRASH_MAX_SIZE ((uint64_t)1 << 32)   /* a test file: 4 GiB at most */
#define CRASH_MAX_DATA ((uint64_t)1 << 31)   /* recorded write data */

struct crash_event {
    unsigned file;
    enum q2_crash_kind kind;
    uint64_t off;  /* write, punch */
    uint64_t len;  /* write, punch; truncate: the new size */
    uint8_t *data; /* write: len bytes */
};

struct crash_file {
    struct q2_crash *machine;
    unsigned idx;
    uint8_t *init; /* initial content */
    size_t init_len;
    uint8_t *buf;  /* live content */
    size_t len;
    size_t cap;
};

struct q2_crash {
    bool share;    /* its files offer copy_range (q2_crash_share) */
    struct crash_event *ev;
    uint64_t n_ev;
    uint64_t cap_ev;
    struct crash_file **files;
    unsigned n_files;
    uint64_t data_bytes;
};

/* ---- growable byte buffers (the live files and the rebuilt states) ---- */

static int buf_reserve(uint8_t **buf, size_t *cap, uint64_t size)
{
    uint8_t *nb;
    size_t ncap;

    if (size > CRASH_MAX_SIZE)
        return -EFBIG;
    if (size <= *cap)
        return 0;
    ncap = *cap ? *cap : 4096;
    while (ncap < size)
        ncap *= 2;
    nb = realloc(*buf, ncap);
    if (!nb)
        return -ENOMEM;
    memset(nb + *cap, 0, ncap - *cap);
    *buf = nb;
    *cap = ncap;
    return 0;
}

static int buf_write(uint8_t **buf, size_t *len, size_t *cap, const void *src,
                     uint64_t n, uint64_t off)
{
    int rc;

    if (off > CRASH_MAX_SIZE || n > CRASH_MAX_SIZE - off)
        return -EFBIG;
    if (n == 0)
        return 0;
    if ((rc = buf_reserve(buf, cap, off + n)) < 0)
        return rc;
    if (off > *len)
        memset(*buf + *len, 0, (size_t)off - *len);
    memcpy(*buf + off, src, (size_t)n);
    if (off + n > *len)
        *len = (size_t)(off + n);
    return 0;
}

static int buf_truncate(uint8_t **buf, size_t *len, size_t *cap,
                        uint64_t size)
{
    int rc = buf_reserve(buf, cap, size);

    if (rc < 0)
        return rc;
    if (size > *len)
        memset(*buf + *len, 0, (size_t)size - *len);
    *len = (size_t)size;
    return 0;
}

/* Zeros over [off, off+n) without changing the size. */
static void buf_punch(uint8_t *buf, size_t len, uint64_t off, uint64_t n)
{
    if (off >= len)
        return;
    if (n > len - off)
        n = len - off;
    memset(buf + off, 0, (size_t)n);
}

/* ---- recording ---- */

static int record(struct q2_crash *c, const struct crash_event *e)
{
    if (c->n_ev == c->cap_ev) {
        uint64_t ncap = c->cap_ev ? 2 * c->cap_ev : 256;
        struct crash_event *nev = realloc(c->ev, ncap * sizeof(*nev));
        if (!nev)
            return -ENOMEM;
        c->ev = nev;
        c->cap_ev = ncap;
    }
    c->ev[c->n_ev++] = *e;
    return 0;
}

static int64_t crash_pread(void *ctx, void *buf, size_t len, uint64_t off)
{
    struct crash_file *f = ctx;

    if (off >= f->len)
        return 0;
    if (len > f->len - off)
        len = f->len - (size_t)off;
    memcpy(buf, f->buf + off, len);
    return (int64_t)len;
}

static int64_t crash_pwrite(void *ctx, const void *buf, size_t len,
                            uint64_t off)
{
    struct crash_file *f = ctx;
    struct q2_crash *c = f->machine;
    struct crash_event e = {.file = f->idx, .kind = Q2_CRASH_WRITE,
                            .off = off, .len = len};
    int rc;

    if (len == 0)
        return 0;
    if (c->data_bytes + len > CRASH_MAX_DATA)
        return -ENOMEM;
    e.data = malloc(len);
    if (!e.data)
        return -ENOMEM;
    memcpy(e.data, buf, len);
    rc = buf_write(&f->buf, &f->len, &f->cap, buf, len, off);
    if (rc == 0)
        rc = record(c, &e);
    if (rc < 0) {
        free(e.data);
        return rc;
    }
    c->data_bytes += len;
    return (int64_t)len;
}

static int crash_flush(void *ctx)
{
    struct crash_file *f = ctx;
    struct crash_event e = {.file = f->idx, .kind = Q2_CRASH_FLUSH};

    return record(f->machine, &e);
}

static int crash_truncate(void *ctx, uint64_t size)
{
    struct crash_file *f = ctx;
    struct crash_event e = {.file = f->idx, .kind = Q2_CRASH_TRUNCATE,
                            .len = size};
    int rc = buf_truncate(&f->buf, &f->len, &f->cap, size);

    return rc < 0 ? rc : record(f->machine, &e);
}

static int crash_punch(void *ctx, uint64_t off, uint64_t len)
{
    struct crash_file *f = ctx;
    struct crash_event e = {.file = f->idx, .kind = Q2_CRASH_PUNCH,
                            .off = off, .len = len};

    buf_punch(f->buf, f->len, off, len);
    return record(f->machine, &e);
}

static int64_t crash_size(void *ctx)
{
    return (int64_t)((struct crash_file *)ctx)->len;
}

/* The file stays with the machine (its record outlives the io). */
static void crash_close(void *ctx)
{
    (void)ctx;
}

struct q2_crash *q2_crash_new(void)
{
    return calloc(1, sizeof(struct q2_crash));
}

void q2_crash_free(struct q2_crash *c)
{
    uint64_t i;
    unsigned f;

    if (!c)
        return;
    for (i = 0; i < c->n_ev; i++)
        free(c->ev[i].data);
    free(c->ev);
    for (f = 0; f < c->n_files; f++) {
        free(c->files[f]->init);
        free(c->files[f]->buf);
        free(c->files[f]);
    }
    free(c->files);
    free(c);
}

/* A file system that shares extents, as far as a power loss can tell: a
 * clone changes the destination's content like a write of the source's
 * bytes (not durable before a flush, torn sector by sector at worst), so
 * it is recorded as one. */
static int64_t crash_copy_range(void *ctx, const struct qcow2_io *src,
                                uint64_t src_off, uint64_t dst_off,
                                size_t len)
{
    struct crash_file *d = ctx;
    const struct crash_file *s;
    int64_t rc;

    if (!src || src->copy_range != crash_copy_range)
        return -ENOTSUP;
    s = src->ctx;
    if (s->machine != d->machine)
        return -ENOTSUP;
    if (((src_off | dst_off | len) & 4095) != 0)
        return -EAGAIN; /* as FICLONERANGE: block aligned */
    if (src_off >= s->len)
        return 0;
    if (len > s->len - src_off)
        len = s->len - (size_t)src_off; /* the source ends */
    if (s == d) {
        /* the same file: the source as it is before the copy */
        uint8_t *tmp = malloc(len);
        if (!tmp)
            return -ENOMEM;
        memcpy(tmp, s->buf + src_off, len);
        rc = crash_pwrite(ctx, tmp, len, dst_off);
        free(tmp);
        return rc;
    }
    return crash_pwrite(ctx, s->buf + src_off, len, dst_off);
}

void q2_crash_share(struct q2_crash *c, bool on)
{
    if (c)
        c->share = on;
}

int q2_crash_io(struct q2_crash *c, unsigned file, struct qcow2_io *io)
{
    if (!c || !io || file >= c->n_files)
        return -EINVAL;
    memset(io, 0, sizeof(*io));
    io->version = QCOW2_IO_VERSION;
    io->ctx = c->files[file];
    io->pread = crash_pread;
    io->pwrite = crash_pwrite;
    io->flush = crash_flush;
    io->truncate = crash_truncate;
    io->size = crash_size;
    io->close = crash_close;
    io->punch = crash_punch;
    if (c->share)
        io->copy_range = crash_copy_range;
    return 0;
}

static int file_init(struct crash_file *f, const void *buf, size_t len)
{
    size_t cap = 0;
    int rc;

    if (len) {
        f->init = malloc(len);
        if (!f->init)
            return -ENOMEM;
        memcpy(f->init, buf, len);
        f->init_len = len;
    }
    rc = buf_write(&f->buf, &f->len, &cap, buf, len, 0);
    f->cap = cap;
    return rc;
}

int q2_crash_open(struct q2_crash *c, const void *buf, size_t len,
                  struct qcow2_io *io, unsigned *file)
{
    struct crash_file *f, **nf;
    int rc;

    if (!c || !io || (len && !buf) || len > CRASH_MAX_SIZE)
        return -EINVAL;
    nf = realloc(c->files, (c->n_files + 1) * sizeof(*nf));
    if (!nf)
        return -ENOMEM;
    c->files = nf;
    f = calloc(1, sizeof(*f));
    if (!f)
        return -ENOMEM;
    f->machine = c;
    f->idx = c->n_files;
    if ((rc = file_init(f, buf, len)) < 0) {
        free(f->init);
        free(f->buf);
        free(f);
        return rc;
    }
    c->files[c->n_files++] = f;
    if (file)
        *file = f->idx;
    return q2_crash_io(c, f->idx, io);
}

uint64_t q2_crash_events(const struct q2_crash *c)
{
    return c ? c->n_ev : 0;
}

int q2_crash_event_get(const struct q2_crash *c, uint64_t idx,
                       struct q2_crash_event *out)
{
    const struct crash_event *e;

    if (!c || idx >= c->n_ev || !out)
        return -EINVAL;
    e = &c->ev[idx];
    out->file = e->file;
    out->kind = e->kind;
    out->off = e->off;
    out->len = e->len;
    return 0;
}

/* Index of the last flush of file f before event `at`, or -1. */
static int64_t last_flush(const struct q2_crash *c, unsigned f, uint64_t at)
{
    uint64_t i;

    for (i = at; i-- > 0;)
        if (c->ev[i].file == f && c->ev[i].kind == Q2_CRASH_FLUSH)
            return (int64_t)i;
    return -1;
}

uint64_t q2_crash_pending(const struct q2_crash *c, unsigned f, uint64_t at)
{
    uint64_t i, n = 0;
    int64_t d;

    if (!c || f >= c->n_files)
        return 0;
    if (at > c->n_ev)
        at = c->n_ev;
    d = last_flush(c, f, at);
    for (i = (uint64_t)(d + 1); i < at; i++)
        n += c->ev[i].file == f && c->ev[i].kind != Q2_CRASH_FLUSH;
    return n;
}

/* splitmix64: the deterministic choices of a crash state */
static uint64_t mix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* A pending write that reached the disk in part: each 512-byte sector it
 * touches (the pieces of an unaligned write split at sector boundaries)
 * independently there or not. */
static int apply_torn(uint8_t **buf, size_t *len, size_t *cap,
                      const struct crash_event *e, uint64_t *rng)
{
    uint64_t pos = e->off, end = e->off + e->len;
    int rc;

    while (pos < end) {
        uint64_t next = (pos / CRASH_SECTOR + 1) * CRASH_SECTOR;
        if (next > end)
            next = end;
        if (mix(rng) & 1) {
            rc = buf_write(buf, len, cap, e->data + (pos - e->off),
                           next - pos, pos);
            if (rc < 0)
                return rc;
        }
        pos = next;
    }
    return 0;
}

static int apply(uint8_t **buf, size_t *len, size_t *cap,
                 const struct crash_event *e)
{
    switch (e->kind) {
    case Q2_CRASH_WRITE:
        return buf_write(buf, len, cap, e->data, e->len, e->off);
    case Q2_CRASH_TRUNCATE:
        return buf_truncate(buf, len, cap, e->len);
    case Q2_CRASH_PUNCH:
        buf_punch(*buf, *len, e->off, e->len);
        return 0;
    case Q2_CRASH_FLUSH:
        break;
    }
    return 0;
}

/* A pending change under a random seed: dropped (1/2), applied whole, or,
 * a write across sectors, torn (1/2 of the applied ones). */
static int apply_pending(uint8_t **buf, size_t *len, size_t *cap,
                         const struct crash_event *e, uint64_t *rng)
{
    uint64_t r = mix(rng);
    bool multi = e->kind == Q2_CRASH_WRITE &&
                 e->off / CRASH_SECTOR != (e->off + e->len - 1) / CRASH_SECTOR;

    if (r & 1)
        return 0;
    if (multi && ((r >> 1) & 1))
        return apply_torn(buf, len, cap, e, rng);
    return apply(buf, len, cap, e);
}

int q2_crash_state(const struct q2_crash *c, unsigned f, uint64_t at,
                   uint64_t seed, uint8_t **out, size_t *out_len)
{
    uint8_t *buf = NULL;
    size_t len = 0, cap = 0;
    uint64_t i, rng = seed * 0x2545f4914f6cdd1dull ^ (at << 20) ^ f;
    int64_t d;
    int rc;

    if (!c || f >= c->n_files || at > c->n_ev || !out || !out_len)
        return -EINVAL;
    d = last_flush(c, f, at);
    rc = buf_write(&buf, &len, &cap, c->files[f]->init,
                   c->files[f]->init_len, 0);
    for (i = 0; rc == 0 && i < at; i++) {
        const struct crash_event *e = &c->ev[i];
        if (e->file != f || e->kind == Q2_CRASH_FLUSH)
            continue;
        if ((int64_t)i < d || seed == 1)
            rc = apply(&buf, &len, &cap, e);
        else if (seed != 0)
            rc = apply_pending(&buf, &len, &cap, e, &rng);
    }
    if (rc < 0) {
        free(buf);
        return rc;
    }
    if (!buf && !(buf = malloc(1)))
        return -ENOMEM;
    *out = buf;
    *out_len = len;
    return 0;
}
