/*
 * restack.c - safe rebase (qemu-img rebase without -u): move an image onto
 * another backing chain, or onto none, without changing what its guest
 * reads.
 *
 *   image:        the layer rebased, open read-write over its old chain
 *   old view:     what the image's unallocated ranges read today (through
 *                 its open backing chain)
 *   new view:     what they would read through `backing` (zeros without
 *                 one, and past the end of a shorter one)
 *
 * State sequence:
 *
 *   DIRTY   (version 3) the dirty bit set, synced: a run that stops
 *           anywhere leaves an image whose next writer (the re-run, QEMU)
 *           rebuilds its refcounts, freeing clusters the interrupted run
 *           had allocated and not yet named
 *   COPY    walk the image's own extents; only the ranges it does not
 *           allocate are looked at.  In them, the two chains' extents are
 *           compared first: zeros on both sides, or the same host bytes of
 *           the same file (a layer both chains share, by device and inode),
 *           are equal without reading.  Elsewhere both views are read and
 *           compared (sub)cluster by (sub)cluster; where they differ, the
 *           old view is written into the image: as zeros (zero clusters)
 *           where it reads zeros, else as data.
 *   FLUSH   everything durable
 *   SWITCH  the header names the new backing file (qcow2_set_backing:
 *           crash safe under sector tearing)
 *   CLEAN   the dirty bit cleared, synced
 *
 * Every write puts into the image what its guest already reads there, so
 * the guest view is the same at every moment, before and after the
 * switch; a run that stops anywhere (crash, power loss, cancel) leaves an
 * image that a second run finishes: what the first wrote is allocated
 * now, and is skipped.  Memory: two buffers of CHUNK bytes.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "endian.h"
#include "format.h"
#include "internal.h"

#define CHUNK (4u << 20)

struct restack {
    struct qcow2_image *img, *backing;
    uint64_t vsize;  /* the image's */
    uint64_t bsize;  /* the new backing's (0 without one) */
    uint64_t unit;   /* the image's allocation unit: (sub)cluster */
    uint8_t *old, *neu;
    const struct qcow2_rebase_opts *opts;
    struct qcow2_rebase_stats st;
};

/* Does either chain's answer read as zeros without reading? */
static bool reads_zero(const struct qcow2_extent *e)
{
    return (e->flags & QCOW2_EXTENT_ZERO) || e->kind == QCOW2_KIND_UNALLOCATED;
}

/* Read n bytes of one view at off into buf: zeros where `zero`, and past
 * `size`. */
static int view_read(struct restack *r, struct qcow2_image *view,
                     uint64_t size, bool zero, uint8_t *buf, size_t n,
                     uint64_t off)
{
    size_t want = off >= size ? 0 : size - off < n ? (size_t)(size - off) : n;
    int64_t got;

    if (zero)
        want = 0;
    if (want) {
        got = qcow2_pread(view, buf, want, off);
        if (got < 0 || (size_t)got != want) {
            if (view == r->img)
                return got < 0 ? (int)got : q2_err(r->img, -EIO, "short "
                                                   "read at offset %" PRIu64,
                                                   off);
            return q2_err(r->img, got < 0 ? (int)got : -EIO, "cannot read "
                          "the new backing file '%s' at offset %" PRIu64
                          ": %s", qcow2_filename(view), off,
                          got < 0 ? qcow2_errmsg(view) : "short read");
        }
    }
    memset(buf + want, 0, n - want);
    return 0;
}

/* Write the old view's bytes old[a, b) of the chunk at `base` into the
 * image: zeros as zeros. */
static int put_run(struct restack *r, uint64_t base, size_t a, size_t b,
                   bool zero)
{
    int rc;

    /* version 2 has no zero flag: a zero write there could leave the
     * range unallocated (no backing file today), which would read the new
     * backing file's data after the switch; write the zeros out */
    if (zero && r->img->hp.h.version >= 3) {
        rc = qcow2_pwrite_zeroes(r->img, base + a, b - a);
        r->st.zero_bytes += b - a;
    } else {
        int64_t n = qcow2_pwrite(r->img, r->old + a, b - a, base + a);
        rc = n < 0 ? (int)n : 0;
        r->st.data_bytes += b - a;
    }
    r->st.ranges++;
    return rc;
}

/* Compare the chunk [off, off+n) of both views unit by unit (units aligned
 * to the image's, clipped to the chunk) and write the runs that differ. */
static int write_differences(struct restack *r, uint64_t off, size_t n)
{
    size_t i = 0, run = 0;
    bool in_run = false, run_zero = false;
    int rc;

    while (i < n) {
        uint64_t g = off + i;
        size_t m = (size_t)(r->unit - g % r->unit);
        bool differ, zero;

        if (m > n - i)
            m = n - i;
        differ = memcmp(r->old + i, r->neu + i, m) != 0;
        zero = differ && qcow2_buffer_is_zero(r->old + i, m);
        if (in_run && (!differ || zero != run_zero)) {
            if ((rc = put_run(r, off, run, i, run_zero)) < 0)
                return rc;
            in_run = false;
        }
        if (differ && !in_run) {
            in_run = true;
            run = i;
            run_zero = zero;
        }
        i += m;
    }
    return in_run ? put_run(r, off, run, n, run_zero) : 0;
}

/* [off, off+len): one answer of each chain; read and compare both. */
static int compare_range(struct restack *r, uint64_t off, uint64_t len,
                         bool old_zero, bool new_zero)
{
    uint64_t end = off + len;
    int rc;

    while (off < end) {
        size_t n = end - off < CHUNK ? (size_t)(end - off) : CHUNK;

        if ((rc = view_read(r, r->img, r->vsize, old_zero, r->old, n,
                            off)) < 0 ||
            (rc = view_read(r, r->backing, r->bsize, new_zero, r->neu, n,
                            off)) < 0 ||
            (rc = write_differences(r, off, n)) < 0)
            return rc;
        r->st.compared_bytes += n;
        off += n;
    }
    return 0;
}

/* The new chain's answer at off (zeros without a backing file or past its
 * end), at most len bytes. */
static int new_extent(struct restack *r, uint64_t off, uint64_t len,
                      struct qcow2_extent *e)
{
    int rc;

    if (!r->backing || off >= r->bsize) {
        *e = (struct qcow2_extent){.start = off, .length = len,
                                   .kind = QCOW2_KIND_ZERO,
                                   .flags = QCOW2_EXTENT_ZERO};
        return 0;
    }
    if (len > r->bsize - off)
        len = r->bsize - off;
    rc = qcow2_map(r->backing, off, len, QCOW2_MAP_CHAIN, e);
    if (rc < 0)
        return q2_err(r->img, rc, "cannot map the new backing file '%s' at "
                      "offset %" PRIu64 ": %s", qcow2_filename(r->backing),
                      off, qcow2_errmsg(r->backing));
    return 0;
}

/* A range the image does not allocate: where the chains' answers differ
 * in a way only the data can settle, read and compare. */
static int restack_range(struct restack *r, uint64_t off, uint64_t end)
{
    while (off < end) {
        struct qcow2_extent eo, en;
        uint64_t n;
        int rc = qcow2_map(r->img, off, end - off, QCOW2_MAP_CHAIN, &eo);

        if (rc < 0)
            return rc;
        if ((rc = new_extent(r, off, end - off, &en)) < 0)
            return rc;
        n = eo.length < en.length ? eo.length : en.length;
        if (n > end - off)
            n = end - off;
        if ((reads_zero(&eo) && reads_zero(&en)) ||
            qcow2_extent_same_bytes(&eo, &en))
            r->st.skipped_bytes += n;
        else if ((rc = compare_range(r, off, n, reads_zero(&eo),
                                     reads_zero(&en))) < 0)
            return rc;
        off += n;
    }
    return 0;
}

static int restack_walk(struct restack *r)
{
    const struct qcow2_rebase_opts *o = r->opts;
    uint64_t off = 0;
    int rc;

    while (off < r->vsize) {
        struct qcow2_extent e;

        if (o && o->cancel && o->cancel(o->cancel_ctx))
            return q2_err(r->img, -ECANCELED, "rebase cancelled");
        rc = qcow2_map(r->img, off, r->vsize - off, 0, &e);
        if (rc < 0)
            return rc;
        if (e.kind == QCOW2_KIND_UNALLOCATED)
            rc = restack_range(r, off, off + e.length);
        else
            r->st.allocated_bytes += e.length;
        if (rc < 0)
            return rc;
        off += e.length;
        if (o && o->progress && o->progress(o->progress_ctx, off, r->vsize))
            return q2_err(r->img, -ECANCELED, "rebase cancelled");
    }
    return 0;
}

/* Set or clear the dirty bit (version 3 only: version 2 has no feature
 * bits; an interrupted run leaves leaks there, which check -r leaks
 * frees).  One synced 8-byte write. */
static int mark_dirty(struct qcow2_image *img, bool on)
{
    uint64_t f = img->hp.h.incompatible_features;
    uint8_t b[8];
    int rc;

    if (img->hp.h.version < 3)
        return 0;
    f = on ? f | Q2_INCOMPAT_DIRTY : f & ~Q2_INCOMPAT_DIRTY;
    if (f == img->hp.h.incompatible_features)
        return 0;
    q2_store_be64(b, f);
    rc = q2_header_write(img, 72, b, sizeof(b));
    if (rc == 0)
        img->hp.h.incompatible_features = f;
    return rc;
}

/* Is the image itself a layer of `chain`?  (A rebase onto it would make a
 * loop.) */
static bool in_chain(struct qcow2_image *img, struct qcow2_image *chain)
{
    uint64_t d, i, dc, ic;

    if (qcow2_identity(img, &d, &i) < 0)
        return false;
    for (; chain; chain = qcow2_backing(chain))
        if (chain == img ||
            (qcow2_identity(chain, &dc, &ic) == 0 && dc == d && ic == i))
            return true;
    return false;
}

int qcow2_rebase(struct qcow2_image *img, struct qcow2_image *backing,
                 const char *name, const char *fmt,
                 const struct qcow2_rebase_opts *opts,
                 struct qcow2_rebase_stats *out)
{
    struct restack r = {.img = img, .backing = backing, .opts = opts};
    void *m1 = NULL, *m2 = NULL;
    int rc;

    if (!q2_usable(img) || (backing && !q2_usable(backing)) ||
        (opts && opts->size < sizeof(*opts)) || (!name) != (!backing) ||
        (name && (!*name || !fmt)))
        return -EINVAL;
    q2_err_clear(img);
    if (!img->writable)
        return q2_err(img, -EROFS, "image is open read-only");
    if (backing && in_chain(img, backing))
        return q2_err(img, -ELOOP, "the new backing chain contains the image "
                      "itself");
    rc = qcow2_set_backing_check(img, name, fmt);
    if (rc < 0)
        return rc;
    r.vsize = img->virtual_size;
    r.bsize = backing ? qcow2_virtual_size(backing) : 0;
    r.unit = img->extended_l2 ? img->cluster_size / 32 : img->cluster_size;
    if (posix_memalign(&m1, 4096, CHUNK) || posix_memalign(&m2, 4096, CHUNK)) {
        free(m1);
        return q2_err(img, -ENOMEM, "out of memory");
    }
    r.old = m1;
    r.neu = m2;
    rc = qcow2_flush(img);
    if (rc == 0)
        rc = mark_dirty(img, true);
    if (rc == 0)
        rc = restack_walk(&r);
    free(m1);
    free(m2);
    if (rc == 0)
        rc = qcow2_set_backing(img, name, fmt); /* flushes first */
    if (rc == 0 || rc == -ECANCELED) {
        /* cancelled: what was written is whole once flushed */
        int rc2 = qcow2_flush(img);
        if (rc2 == 0)
            rc2 = mark_dirty(img, false);
        if (rc2 < 0)
            rc = rc2;
    }
    if (rc == 0 && out)
        *out = r.st;
    return rc;
}
