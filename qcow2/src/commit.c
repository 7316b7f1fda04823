/*
 * commit.c - copy what the layers above a base hold into the base
 * (the data half of qemu-img commit / virsh blockcommit).
 *
 *   top chain:  depth 0 .. stop-1   the layers committed (read)
 *               depth stop          the base, as the chain sees it
 *   base:       a separate read-write handle on the same file
 *
 * State sequence (the caller journals and re-points around it):
 *
 *   GROW    base smaller than the top: grow it (raw: the file; qcow2: the
 *           virtual size); the new range reads as zeros, as the guest sees
 *           it through the top, so the guest view is unchanged, and zeros
 *           the layers report there need no writing
 *   COPY    walk the top's extents above the base (qcow2_map_above, whole
 *           L2 tables at a time):
 *             falls through to the base       -> nothing
 *             zero (zero clusters, past a shorter backing file, holes of
 *             the host file inside data clusters) -> zero the base range
 *                                                (v3 zero flag, or a hole)
 *             data                            -> copy, coalescing guest-
 *                                                contiguous runs into
 *                                                large writes; into a raw
 *                                                base, copy_file_range
 *                                                (reflinks where the file
 *                                                system shares extents);
 *                                                into a qcow2 base there,
 *                                                whole clusters cloned
 *                                                into new clusters, in
 *                                                runs as the layer's file
 *                                                holds them (clone_flush)
 *             compressed                      -> decompress, copy
 *   FLUSH   everything durable in the base
 *
 * Every write lands on a range the layers above the base shadow, so the
 * guest view through the top never changes, whenever the copy stops; and a
 * COPY that runs again writes the same bytes (the job is idempotent, which
 * is what makes it resumable).  Memory: one buffer of COPY_CHUNK bytes
 * (the gathered data); while a raw base's data is compared, one of
 * COMPARE_PIECE bytes (what the base holds there); for a qcow2 base on
 * storage that can share extents, CLONE_BATCH queued pieces (512 KiB).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define COPY_CHUNK (8u << 20)
/* start writing back this often: 4 MiB left the disk idle for the first
 * 40 ms of commit-4k (4096 scattered 4 KiB writes), 1 MiB keeps it busy */
#define WRITEBACK_EVERY (1u << 20)

struct pending {
    uint64_t start;    /* guest offset of buf[0] */
    size_t len;        /* bytes gathered */
    uint64_t unsynced; /* bytes written since writeback was last started */
    /* raw base: compare with what the base holds, write what differs */
    bool compare;      /* still comparing (stops when it does not pay) */
    uint8_t *cmp;      /* COMPARE_PIECE bytes, allocated at the first
                          comparison over the base's data */
    uint64_t compared, same;
};

static int write_base(struct qcow2_image *top, struct qcow2_image *base,
                      const uint8_t *data, size_t len, uint64_t off,
                      struct pending *p)
{
    int64_t n = qcow2_pwrite(base, data, len, off);

    if (n < 0)
        return q2_err(top, (int)n, "writing the base: %s",
                      qcow2_errmsg(base));
    p->unsynced += len;
    return 0;
}

/*
 * Write the gathered bytes into a raw base, skipping what the base already
 * holds.  Over a hole in the base, blocks of zeros need no writing (the
 * hole reads as zeros).  Over the base's data, only blocks that differ are
 * written: QEMU fills a cluster that a small guest write allocates with
 * the backing file's bytes (copy on write), so most of such a cluster is
 * the base's own content coming back; reading it (often from the page
 * cache) is cheaper than writing it.  When the comparisons stop paying
 * (less than one byte in COMPARE_MIN_SAME found unchanged after
 * COMPARE_PROBE bytes), comparing stops and data is written as it comes.
 *
 * The base is read COMPARE_PIECE bytes at a time into a buffer of that
 * size, and the blocks that need writing are written straight from the
 * gathered buffer in runs as long as they come (across pieces), so
 * comparing costs a small buffer, not a second copy of the gathered one,
 * and none at all until a range over the base's data is compared.
 */
#define COMPARE_BLOCK 4096u
#define COMPARE_PIECE (256u << 10)
#define COMPARE_PROBE (32u << 20)
#define COMPARE_MIN_SAME 8

/* The probe is over and found too little unchanged: stop comparing. */
static bool compare_stops(struct pending *p)
{
    if (p->compared < COMPARE_PROBE ||
        p->same >= p->compared / COMPARE_MIN_SAME)
        return false;
    free(p->cmp); /* the layers rewrite the base */
    p->cmp = NULL;
    p->compare = false;
    return true;
}

/* Write the blocks of buf[0, len) (guest offset start) that need it: over
 * a hole (over_data false) the blocks not all zero, over the base's data
 * those that differ from it (all of them once comparing stops). */
static int write_blocks(struct qcow2_image *top, struct qcow2_image *base,
                        const uint8_t *buf, size_t len, uint64_t start,
                        bool over_data, struct pending *p)
{
    size_t i = 0, run = 0, piece = 0, piece_end = 0;
    bool in_run = false, all = false;
    int rc;

    if (over_data && !p->cmp && !(p->cmp = q2_buf_alloc(COMPARE_PIECE)))
        return -ENOMEM;
    while (i < len) {
        size_t b = COMPARE_BLOCK - (size_t)((start + i) % COMPARE_BLOCK);
        bool needed;
        if (b > len - i)
            b = len - i;
        if (over_data && !all && i >= piece_end) {
            /* the next piece ends on a block boundary */
            size_t n = COMPARE_PIECE -
                       (size_t)((start + i) % COMPARE_BLOCK);
            int64_t got;
            if (compare_stops(p)) {
                all = true; /* the rest is written as it is */
            } else {
                if (n > len - i)
                    n = len - i;
                got = q2_pread_full(&base->io, p->cmp, n, start + i);
                if (got < 0)
                    return q2_err(top, (int)got, "reading the base: %s",
                                  qcow2_strerror((int)got));
                if ((size_t)got < n) /* past its end */
                    memset(p->cmp + got, 0, n - (size_t)got);
                piece = i;
                piece_end = i + n;
                p->compared += n;
            }
        }
        if (all)
            needed = true;
        else if (over_data)
            needed = memcmp(buf + i, p->cmp + (i - piece), b) != 0;
        else
            needed = !qcow2_buffer_is_zero(buf + i, b);
        if (over_data && !needed)
            p->same += b;
        if (needed && !in_run) {
            run = i;
            in_run = true;
        } else if (!needed && in_run) {
            if ((rc = write_base(top, base, buf + run, i - run, start + run,
                                 p)) < 0)
                return rc;
            in_run = false;
        }
        if (all) {
            i = len; /* one write to the end */
            break;
        }
        i += b;
    }
    if (in_run && (rc = write_base(top, base, buf + run, len - run,
                                   start + run, p)) < 0)
        return rc;
    return 0;
}

static int write_changed(struct qcow2_image *top, struct qcow2_image *base,
                         const uint8_t *buf, struct pending *p)
{
    size_t i = 0, len = p->len;
    int rc;

    while (i < len) {
        uint64_t pnum = len - i, off = p->start + i;
        int data = base->io.block_status
                       ? base->io.block_status(base->io.ctx, off, len - i,
                                               &pnum)
                       : 1;
        size_t n;
        if (data < 0 || pnum == 0 || pnum > len - i) {
            data = 1; /* no answer: treat it as data */
            pnum = len - i;
        }
        n = (size_t)pnum;
        if (!data || p->compare)
            rc = write_blocks(top, base, buf + i, n, off, data != 0, p);
        else
            rc = write_base(top, base, buf + i, n, off, p);
        if (rc < 0)
            return rc;
        i += n;
    }
    return 0;
}

static int flush_pending(struct qcow2_image *top, struct qcow2_image *base,
                         uint8_t *buf, struct pending *p)
{
    int rc;

    if (p->len == 0)
        return 0;
    /* a raw base gets only what it does not hold already */
    rc = base->format == QCOW2_FORMAT_RAW
             ? write_changed(top, base, buf, p)
             : write_base(top, base, buf, p->len, p->start, p);
    if (rc < 0)
        return rc;
    p->start += p->len;
    p->len = 0;
    /* let the disk write while we copy on: the final flush then waits
     * for the tail only */
    if (p->unsynced >= WRITEBACK_EVERY && base->io.writeback) {
        base->io.writeback(base->io.ctx);
        p->unsynced = 0;
    }
    return 0;
}

/*
 * Copy a data extent of a layer into a raw base by sharing its extents
 * (copy_file_range on a file system with reflinks).  *done gets the bytes
 * copied; the rest (a range the file system cannot share, a source that
 * ends early) is left to the caller.  -ENOTSUP: this base cannot.
 */
static int offload_copy(struct qcow2_image *top, struct qcow2_image *base,
                        const struct qcow2_extent *e, uint64_t pos,
                        uint64_t *done)
{
    struct qcow2_io *src;
    int rc = q2_data_io(e->layer, &src);

    *done = 0;
    if (rc < 0)
        return q2_err(top, rc, "'%s': %s", e->layer->filename,
                      e->layer->errmsg);
    while (*done < e->length) {
        uint64_t n = e->length - *done;
        int64_t got;
        if (n > COPY_CHUNK)
            n = COPY_CHUNK;
        got = base->io.copy_range(base->io.ctx, src, e->offset + *done,
                                  pos + *done, (size_t)n);
        if (got == -EAGAIN)
            break; /* not this range: the caller copies the rest */
        if (got == -ENOTSUP)
            return -ENOTSUP;
        if (got < 0)
            return q2_err(top, (int)got, "copying into the base: %s",
                          qcow2_strerror((int)got));
        *done += (uint64_t)got;
        if ((uint64_t)got < n)
            break; /* the source ended */
    }
    return 0;
}

/* One commit's state while it copies. */
struct copy {
    struct qcow2_image *top, *base;
    uint64_t old_size;         /* the base's size before GROW */
    uint8_t *buf;              /* COPY_CHUNK bytes gathered */
    struct pending p;
    bool offload;              /* try copy offload (raw base) */
    enum { CLONE_OFF, CLONE_PROBE, CLONE_ON } clone; /* qcow2 base */
    struct q2_clone_piece *pieces; /* CLONE_BATCH queued clusters to share */
    size_t n_pieces;
    uint64_t run_end;          /* where the last data extent ended */
    struct qcow2_commit_stats st;
    int (*cancel)(void *ctx);  /* the caller's, asked every chunk */
    void *cancel_ctx;
};

static int cancelled(const struct copy *c)
{
    return c->cancel && c->cancel(c->cancel_ctx)
               ? q2_err(c->top, -ECANCELED, "commit interrupted") : 0;
}

/* A zero extent at pos: zero the base there (what GROW added reads as
 * zeros already). */
static int copy_zero(struct copy *c, const struct qcow2_extent *e,
                     uint64_t pos)
{
    uint64_t zlen = pos >= c->old_size ? 0
                    : e->length < c->old_size - pos ? e->length
                    : c->old_size - pos;
    int rc = flush_pending(c->top, c->base, c->buf, &c->p);

    if (rc < 0)
        return rc;
    rc = zlen ? qcow2_pwrite_zeroes(c->base, pos, zlen) : 0;
    if (rc < 0)
        return q2_err(c->top, rc, "zeroing the base: %s",
                      qcow2_errmsg(c->base));
    if (e->kind == QCOW2_KIND_DATA)
        c->st.data_bytes += e->length; /* a hole in a data cluster */
    else
        c->st.zero_bytes += e->length;
    return 0;
}

/* Bytes [done, end) of a data or compressed extent at pos, gathered into
 * the buffer (written when it is full or the next extent does not
 * follow). */
static int gather(struct copy *c, const struct qcow2_extent *e, uint64_t pos,
                  uint64_t done, uint64_t end)
{
    struct qcow2_image *top = c->top;
    struct pending *p = &c->p;
    int rc;

    while (done < end) {
        size_t n;
        int64_t got;
        if (p->len && p->start + p->len != pos + done &&
            (rc = flush_pending(top, c->base, c->buf, p)) < 0)
            return rc;
        if (p->len == 0)
            p->start = pos + done;
        n = COPY_CHUNK - p->len;
        if (n > end - done)
            n = (size_t)(end - done);
        if (e->kind == QCOW2_KIND_DATA)
            got = qcow2_host_pread(e->layer, e->in_data_file, c->buf + p->len,
                                   n, e->offset + done);
        else
            got = qcow2_pread(top, c->buf + p->len, n, pos + done);
        if (got < 0)
            return e->layer != top && e->kind == QCOW2_KIND_DATA
                       ? q2_err(top, (int)got, "'%s': %s", e->layer->filename,
                                e->layer->errmsg)
                       : (int)got;
        p->len += n;
        done += n;
        if (p->len == COPY_CHUNK &&
            ((rc = flush_pending(top, c->base, c->buf, p)) < 0 ||
             (rc = cancelled(c)) < 0))
            return rc;
    }
    return 0;
}

/*
 * Clone into a qcow2 base (a file system that shares extents): the whole
 * base clusters of uncompressed data extents are queued, CLONE_BATCH at a
 * time, then sorted by where they lie in their layer's file, so that what
 * a layer holds contiguously (its clusters in the order the guest wrote
 * them, whatever their guest offsets) becomes one run of new base clusters
 * shared in one call: a call costs about as much as 64 KiB of copying, a
 * run of any length about the same.  The clusters the base held there are
 * freed (they stay in the file for later allocations).  The first piece
 * is sent alone, as the probe: where the storage cannot share, nothing
 * more is queued and the data is copied as before, in guest order.
 */
#define CLONE_BATCH 16384u
#define CLONE_ALIGN 4096u  /* what copy_range asks of both offsets */
#define CLONE_RUN_MAX (1ull << 30)

static int piece_cmp(const void *a, const void *b)
{
    const struct q2_clone_piece *x = a, *y = b;

    if (x->layer != y->layer)
        return (uintptr_t)x->layer < (uintptr_t)y->layer ? -1 : 1;
    return x->src_off < y->src_off ? -1 : x->src_off > y->src_off;
}

/* Pieces p[0..n) of one run: shared, or copied where the storage cannot
 * (the first refusal for good ends queueing). */
static int clone_pieces(struct copy *c, const struct q2_clone_piece *p,
                        size_t n)
{
    uint64_t shared = 0;
    bool cannot = false;
    size_t k;
    int rc = q2_clone_run(c->base, p, n, &shared, &cannot);

    if (rc < 0)
        return q2_err(c->top, rc, "writing the base: %s",
                      qcow2_errmsg(c->base));
    c->st.offloaded_bytes += shared;
    if (cannot)
        c->clone = CLONE_OFF;
    else if (shared && c->clone == CLONE_PROBE)
        c->clone = CLONE_ON;
    for (k = 0; shared == 0 && k < n; k++) {
        /* not shared: read and written as any data */
        struct qcow2_extent e = {.kind = QCOW2_KIND_DATA,
                                 .layer = p[k].layer,
                                 .in_data_file = p[k].layer->external_data,
                                 .offset = p[k].src_off, .length = p[k].len};
        if ((rc = gather(c, &e, p[k].guest, 0, p[k].len)) < 0)
            return rc;
    }
    return 0;
}

static int clone_flush(struct copy *c)
{
    struct q2_clone_piece *p = c->pieces;
    size_t n = c->n_pieces, i = 0, j;
    int rc;

    c->n_pieces = 0;
    if (n == 0)
        return 0;
    qsort(p, n, sizeof(*p), piece_cmp);
    while (i < n) {
        uint64_t len = p[i].len;
        for (j = i + 1; j < n && p[j].layer == p[i].layer &&
                        p[j].src_off == p[j - 1].src_off + p[j - 1].len &&
                        len + p[j].len <= CLONE_RUN_MAX;
             j++)
            len += p[j].len;
        if ((rc = clone_pieces(c, p + i, j - i)) < 0 ||
            (rc = cancelled(c)) < 0)
            return rc;
        i = j;
    }
    return 0;
}

/* A data or compressed extent at pos: offloaded where the storage can,
 * else gathered into the buffer. */
static int copy_data(struct copy *c, const struct qcow2_extent *e,
                     uint64_t pos)
{
    uint64_t done = 0, end = e->length;
    int rc;

    if (e->kind == QCOW2_KIND_COMPRESSED)
        c->st.compressed_bytes += e->length;
    c->st.data_bytes += e->length;
    if (pos != c->run_end)
        c->st.data_runs++;
    c->run_end = pos + e->length;
    if (c->offload && e->kind == QCOW2_KIND_DATA) {
        if ((rc = flush_pending(c->top, c->base, c->buf, &c->p)) < 0)
            return rc;
        rc = offload_copy(c->top, c->base, e, pos, &done);
        if (rc == -ENOTSUP)
            c->offload = false; /* this base cannot: read and write */
        else if (rc < 0)
            return rc;
        c->st.offloaded_bytes += done;
    }
    if (c->clone != CLONE_OFF && e->kind == QCOW2_KIND_DATA) {
        uint64_t cs = c->base->cluster_size;
        uint64_t a = (pos + cs - 1) / cs * cs, b = (pos + e->length) / cs * cs;
        struct qcow2_io *src; /* the file q2_clone_run shares from opens */
        if (a < b && (e->offset + (a - pos)) % CLONE_ALIGN == 0 &&
            q2_data_io(e->layer, &src) == 0) {
            struct q2_clone_piece *q = &c->pieces[c->n_pieces++];
            *q = (struct q2_clone_piece){.guest = a, .layer = e->layer,
                                         .src_off = e->offset + (a - pos),
                                         .len = b - a};
            /* the bytes before and after: by hand, in guest order */
            if ((rc = gather(c, e, pos, 0, a - pos)) < 0)
                return rc;
            done = b - pos;
            if (c->clone == CLONE_PROBE || c->n_pieces == CLONE_BATCH) {
                if ((rc = flush_pending(c->top, c->base, c->buf, &c->p)) < 0 ||
                    (rc = clone_flush(c)) < 0)
                    return rc;
            }
        }
    }
    return gather(c, e, pos, done, end);
}

/* The work to report: the guest bytes the layers hold (data and zeros),
 * walked from metadata as qchain-delta walks them; and for a base on a
 * device, which cannot grow, the space the commit needs, refused before
 * anything is written rather than found missing halfway. */
static int plan(struct qcow2_image *top, unsigned stop,
                struct qcow2_image *base, uint64_t *work)
{
    struct qcow2_commit_estimate est;
    int rc = q2_commit_estimate(top, stop, base, 0, &est);

    if (rc < 0)
        return rc;
    *work = est.data_bytes + est.zero_bytes;
    if (q2_fixed_size(base) &&
        est.base_required_bytes > (uint64_t)base->file_size)
        return q2_err(top, -ENOSPC, "the base '%s' is a device of %" PRId64
                      " bytes; the commit needs %" PRIu64 " bytes: extend "
                      "the volume", base->filename, base->file_size,
                      est.base_required_bytes);
    return 0;
}

int qcow2_commit(struct qcow2_image *top, unsigned stop,
                 struct qcow2_image *base, const struct qcow2_commit_opts *opts,
                 struct qcow2_commit_stats *out)
{
    struct copy c = {.top = top, .base = base, .run_end = UINT64_MAX};
    struct qcow2_commit_opts o;
    struct qcow2_extent e;
    uint64_t size, pos = 0, work = 0, done_work;
    qcow2_progress_fn progress;
    void *ctx;
    int rc;

    if (!q2_usable(top) || !q2_usable(base) || stop == 0)
        return -EINVAL;
    q2_err_clear(top);
    if (q2_opts_copy(&o, sizeof(o), opts) < 0)
        return q2_err(top, -EINVAL, "qcow2_commit: the options' size field "
                      "is not set");
    progress = o.progress;
    ctx = o.progress_ctx;
    if (!base->writable)
        return q2_err(top, -EROFS, "the base is open read-only");
    size = top->virtual_size;
    c.st.total_bytes = size;
    c.cancel = o.cancel;
    c.cancel_ctx = o.cancel_ctx;
    if ((progress || q2_fixed_size(base)) &&
        (rc = plan(top, stop, base, &work)) < 0)
        return rc;

    /* GROW */
    c.old_size = base->virtual_size;
    if (base->virtual_size < size) {
        rc = qcow2_resize(base, size);
        if (rc < 0)
            return q2_err(top, rc, "growing the base: %s",
                          qcow2_errmsg(base));
        c.st.grown = true;
    }
    c.buf = q2_buf_alloc(COPY_CHUNK);
    if (!c.buf)
        return -ENOMEM;
    /* uncompressed data into a raw base: copy offload where the files
     * allow it (the first refusal switches it off); otherwise only what
     * differs from the base is written */
    c.offload = base->format == QCOW2_FORMAT_RAW && base->io.copy_range &&
                !base->write_err;
    c.p.compare = base->format == QCOW2_FORMAT_RAW;
    /* uncompressed data into a qcow2 base: whole clusters shared where
     * the files allow it (probed with the first) */
    if (base->format == QCOW2_FORMAT_QCOW2 && base->io.copy_range &&
        !base->external_data && !base->write_err &&
        base->cluster_size % CLONE_ALIGN == 0) {
        c.pieces = malloc(CLONE_BATCH * sizeof(*c.pieces));
        c.clone = c.pieces ? CLONE_PROBE : CLONE_OFF;
    }

    /* COPY */
    while (pos < size) {
        rc = qcow2_map_above(top, pos, size - pos, QCOW2_MAP_HOST_HOLES, stop,
                             &e);
        if (rc < 0)
            goto out;
        if (e.depth >= stop)
            rc = 0; /* the base's own content */
        else if (e.flags & QCOW2_EXTENT_ZERO)
            rc = copy_zero(&c, &e, pos);
        else
            rc = copy_data(&c, &e, pos);
        if (rc < 0)
            goto out;
        if ((rc = cancelled(&c)) < 0)
            goto out;
        pos += e.length;
        /* done equals total once, when the base is flushed */
        done_work = c.st.data_bytes + c.st.zero_bytes;
        if (progress && e.depth < stop && done_work < work &&
            progress(ctx, done_work, work) != 0) {
            rc = q2_err(top, -ECANCELED, "commit cancelled");
            goto out;
        }
    }
    if ((rc = flush_pending(top, base, c.buf, &c.p)) < 0 ||
        (rc = clone_flush(&c)) < 0)
        goto out;

    /* FLUSH */
    rc = qcow2_flush(base);
    if (rc < 0)
        rc = q2_err(top, rc, "flushing the base: %s", qcow2_errmsg(base));
    else if (progress && progress(ctx, work, work) != 0)
        rc = q2_err(top, -ECANCELED, "commit cancelled");
out:
    free(c.pieces);
    free(c.p.cmp);
    free(c.buf);
    if (rc == 0 && out)
        *out = c.st;
    return rc;
}
