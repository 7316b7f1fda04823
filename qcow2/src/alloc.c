/*
 * alloc.c - allocation of host clusters and the ordered flush barrier: the
 * only module that decides where new clusters go and the only writer of
 * dirty metadata pages (refcounts, tables) to the file.
 *
 * Allocation is first fit from a hint (the lowest cluster that may be
 * free), as QEMU's is, so freed holes are reused.  A cluster whose range has
 * no refcount block yet becomes the block itself (a self-describing block:
 * it lies inside the range it covers and counts itself).  When the table is
 * full, a new larger table and the blocks that cover it are written past
 * everything in use and the header is switched to it with one synced write
 * (qcow2_refcount_area's scheme).  On a device (fixed size) nothing is ever
 * placed past its end: such an allocation fails with -ENOSPC first.
 *
 * Write order (q2_flush, the barrier):
 *     1. write dirty bitmap data and refcount blocks
 *     2. if the refcount table changed: fsync, then write its pages
 *     3. fsync              refcounts and data are durable
 *     4. write dirty L2 tables, fsync
 *     5. write dirty L1 pages, fsync
 *     6. apply deferred decrements (they reach the disk at the next
 *        flush's step 1, after the references they drop are gone)
 *   so increments are durable before any L2 or L1 entry that uses the
 *   clusters, and decrements (q2_rc_free_later) only after the L2/L1
 *   changes that dropped the references: a crash can leak clusters but
 *   never leave a reference with a refcount too small.
 *
 * A failed write or flush makes the handle refuse every later write with
 * the same error (q2_fail: sticky, like SQLite's pager ERROR state).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "endian.h"
#include "format.h"
#include "internal.h"

int q2_fail(struct qcow2_image *img, int rc, const char *what)
{
    if (!img->write_err)
        img->write_err = rc;
    return q2_err(img, rc, "%s: %s", what, qcow2_strerror(rc));
}

/* A synced write of header bytes (single fields, as QEMU updates them). */
int q2_header_write(struct qcow2_image *img, uint64_t off,
                        const void *buf, size_t len)
{
    int64_t n = img->io.pwrite(img->io.ctx, buf, len, off);
    int rc;

    if (n < 0)
        return q2_fail(img, (int)n, "cannot write the header");
    if ((rc = img->io.flush(img->io.ctx)) < 0)
        return q2_fail(img, rc, "cannot flush the header");
    return 0;
}

static uint64_t rc_max(const struct qcow2_image *img)
{
    unsigned bits = 1u << img->hp.h.refcount_order;
    return bits == 64 ? UINT64_MAX : (1ull << bits) - 1;
}

int q2_rc_update(struct qcow2_image *img, uint64_t cluster, int delta)
{
    unsigned order = img->hp.h.refcount_order;
    uint64_t rb_off, i = cluster & ((1ull << q2_rb_bits(img)) - 1), v;
    uint8_t *page;
    int rc;

    rc = q2_rt_get(img, cluster >> q2_rb_bits(img), &rb_off);
    if (rc < 0)
        return rc;
    if (rb_off == 0)
        return q2_err(img, -QCOW2_ECORRUPT, "cluster 0x%" PRIx64 " has no "
                      "refcount block", cluster << img->cluster_bits);
    rc = q2_cache_get_mut(&img->cache, &img->io, rb_off, Q2_PAGE_REFBLOCK,
                          &page);
    if (rc < 0)
        return q2_err(img, rc, "cannot read a refcount block: %s (at offset "
                      "0x%" PRIx64 ")", qcow2_strerror(rc), rb_off);
    v = q2_rc_entry_get(page, order, i);
    if (delta > 0 && v == rc_max(img))
        return q2_err(img, -EFBIG, "refcount of cluster 0x%" PRIx64 " would "
                      "overflow %u bits", cluster << img->cluster_bits,
                      1u << order);
    if (delta < 0 && v == 0)
        return q2_err(img, -QCOW2_ECORRUPT, "refcount of cluster 0x%" PRIx64
                      " would drop below zero", cluster << img->cluster_bits);
    v = delta > 0 ? v + 1 : v - 1;
    q2_rc_entry_set(page, order, i, v);
    if (v == 0 && cluster < img->free_hint)
        img->free_hint = cluster;
    return 0;
}

/* An allocation would pass the end of a device (checked before anything
 * is written at the new place). */
static int no_space(struct qcow2_image *img, uint64_t need)
{
    return q2_err(img, -ENOSPC, "the device is full: it is %" PRId64 " bytes "
                  "and the image needs %" PRIu64 " (a device cannot grow: "
                  "extend the volume)", img->file_size, need);
}

void q2_rc_layout(const struct qcow2_image *img, uint64_t first,
                  uint64_t start, uint64_t need, uint64_t min_entries,
                  uint64_t *nb, uint64_t *m)
{
    uint64_t cs = img->cluster_size, rbe = 1ull << q2_rb_bits(img);
    unsigned k;

    /* each round places what the last one counted; the counts only grow
     * and settle within a few rounds (64 is far more than any needs) */
    *nb = *m = 0;
    for (k = 0; k < 64; k++) {
        uint64_t end = start + *nb + *m, top = end > need + 1 ? end : need + 1;
        uint64_t entries = (top + rbe - 1) / rbe, nb2, m2;
        if (entries < min_entries)
            entries = min_entries;
        m2 = (entries * 8 + cs - 1) / cs;
        nb2 = (end ? (end - 1) / rbe : 0) - first / rbe + 1;
        if (nb2 == *nb && m2 == *m)
            break;
        *nb = nb2;
        *m = m2;
    }
}

/*
 * Grow the refcount table so that it covers cluster `need` (QEMU's
 * qcow2_refcount_area): after everything in use, write the refcount blocks
 * for the new area and a new table 1.5 times as large, then switch the
 * header to it with one synced write and free the old table.
 */
static int grow_reftable(struct qcow2_image *img, uint64_t need)
{
    uint64_t cs = img->cluster_size, rbe = 1ull << q2_rb_bits(img);
    uint64_t old_entries = q2_rt_entries(img);
    uint64_t old_off = img->hp.h.refcount_table_offset;
    uint64_t old_clusters = img->hp.h.refcount_table_clusters;
    uint64_t start, nb = 0, m = 0, end, k, r0, i;
    unsigned order = img->hp.h.refcount_order;
    uint8_t *buf = NULL, hdr[12];
    int64_t n;
    int rc;

    rc = q2_flush(img); /* a clean state: the old table is all on disk */
    if (rc < 0)
        return rc;
    start = old_entries * rbe;
    /* past the file's end too (clusters there are not ours to count); on a
     * device everything past the covered area is free space */
    if (!q2_fixed_size(img)) {
        n = img->io.size(img->io.ctx);
        if (n < 0)
            return q2_err(img, (int)n, "cannot get the file size");
        if ((((uint64_t)n + cs - 1) >> img->cluster_bits) > start)
            start = ((uint64_t)n + cs - 1) >> img->cluster_bits;
    }
    q2_rc_layout(img, start, start, need, old_entries * 3 / 2, &nb, &m);
    end = start + nb + m;
    if ((m << img->cluster_bits) > Q2_MAX_REFTABLE_BYTES ||
        (end << img->cluster_bits) >= Q2_MAX_HOST_OFFSET)
        return q2_err(img, -EFBIG, "the refcount table cannot grow past "
                      "QEMU's limit of 8 MiB");
    if (q2_fixed_size(img) && end * cs > (uint64_t)img->file_size)
        return no_space(img, end * cs);
    buf = calloc(1, cs);
    if (!buf)
        return -ENOMEM;
    /* the blocks: each counts the new clusters that fall in its range */
    r0 = start / rbe;
    for (k = 0; k < nb; k++) {
        uint64_t lo = (r0 + k) * rbe, hi = lo + rbe;
        memset(buf, 0, cs);
        for (i = lo < start ? start : lo; i < end && i < hi; i++)
            q2_rc_entry_set(buf, order, i - lo, 1);
        n = img->io.pwrite(img->io.ctx, buf, cs, (start + k) * cs);
        if (n < 0)
            goto io_fail;
    }
    /* the table: old entries, then the new blocks */
    for (k = 0; k < m; k++) {
        uint64_t first = k * (cs / 8), e;
        memset(buf, 0, cs);
        if (first < old_entries) {
            uint64_t len = (old_entries - first) * 8 < cs
                               ? (old_entries - first) * 8 : cs;
            n = q2_pread_full(&img->io, buf, len, old_off + first * 8);
            if (n < 0)
                goto io_fail;
        }
        for (e = first; e < first + cs / 8; e++)
            if (e >= r0 && e < r0 + nb)
                q2_store_be64(buf + (e - first) * 8, (start + e - r0) * cs);
        n = img->io.pwrite(img->io.ctx, buf, cs, (start + nb + k) * cs);
        if (n < 0)
            goto io_fail;
    }
    if ((rc = img->io.flush(img->io.ctx)) < 0)
        goto fail;
    q2_store_be64(hdr, (start + nb) * cs);
    q2_store_be32(hdr + 8, (uint32_t)m);
    n = img->io.pwrite(img->io.ctx, hdr, sizeof(hdr), 48);
    if (n < 0)
        goto io_fail;
    if ((rc = img->io.flush(img->io.ctx)) < 0)
        goto fail;
    if ((int64_t)(end * cs) > img->file_size)
        img->file_size = (int64_t)(end * cs);
    img->hp.h.refcount_table_offset = (start + nb) * cs;
    img->hp.h.refcount_table_clusters = (uint32_t)m;
    for (k = 0; k < old_clusters; k++) {
        q2_cache_drop(&img->cache, old_off + k * cs);
        rc = q2_rc_free_later(img, old_off + k * cs, cs);
        if (rc < 0)
            goto fail;
    }
    free(buf);
    return 0;
io_fail:
    rc = (int)n;
fail:
    free(buf);
    img->write_err = rc;
    return q2_err(img, rc, "cannot grow the refcount table: %s",
                  qcow2_strerror(rc));
}

/* First fit: the lowest run of n clusters with refcount 0 at or after
 * the hint; ranges without a refcount block are all free. */
static int find_run(struct qcow2_image *img, uint64_t n, uint64_t *out)
{
    unsigned order = img->hp.h.refcount_order;
    uint64_t rbe = 1ull << q2_rb_bits(img), i = img->free_hint ? img->free_hint
                                                             : 1;
    uint64_t run_start = i, run = 0;
    int rc;

    while (run < n) {
        uint64_t rt = i / rbe, rb_off, end = (rt + 1) * rbe;
        const uint8_t *page;

        if (rt >= q2_rt_entries(img)) {
            rc = grow_reftable(img, i + (n - run));
            if (rc < 0)
                return rc;
            continue; /* its structures sit at i or later */
        }
        rc = q2_rt_get(img, rt, &rb_off);
        if (rc < 0)
            return rc;
        if (rb_off == 0) {
            if (run == 0)
                run_start = i;
            run += end - i;
            i = end;
            continue;
        }
        rc = q2_cache_get(&img->cache, &img->io, rb_off, &page);
        if (rc < 0)
            return q2_err(img, rc, "cannot read a refcount block: %s (at "
                          "offset 0x%" PRIx64 ")", qcow2_strerror(rc),
                          rb_off);
        for (; i < end && run < n; i++) {
            if (q2_rc_entry_get(page, order, i % rbe) == 0) {
                if (run++ == 0)
                    run_start = i;
            } else {
                run = 0;
            }
        }
    }
    if (((run_start + n) << img->cluster_bits) > Q2_MAX_HOST_OFFSET)
        return q2_err(img, -EFBIG, "image file would exceed QEMU's size "
                      "limit");
    if (q2_fixed_size(img) &&
        ((run_start + n) << img->cluster_bits) > (uint64_t)img->file_size)
        return no_space(img, (run_start + n) << img->cluster_bits);
    *out = run_start;
    return 0;
}

int q2_rc_alloc(struct qcow2_image *img, uint64_t n, uint64_t *out)
{
    unsigned order = img->hp.h.refcount_order;
    uint64_t rbe = 1ull << q2_rb_bits(img), start = 0, rt, last, rb_off, k;
    int rc;

    for (;;) {
        rc = find_run(img, n, &start);
        if (rc < 0)
            return rc;
        /* every range the run touches needs a refcount block; a missing
         * one takes the run's first cluster (counting itself when that
         * lies in its own range), and the search starts again, as QEMU's
         * alloc_refcount_block / -EAGAIN loop does */
        last = (start + n - 1) / rbe;
        for (rt = start / rbe; rt <= last; rt++) {
            rc = q2_rt_get(img, rt, &rb_off);
            if (rc < 0)
                return rc;
            if (rb_off == 0)
                break;
        }
        if (rt > last)
            break;
        {
            uint8_t *blk;
            rc = q2_cache_new(&img->cache, start << img->cluster_bits,
                              Q2_PAGE_REFBLOCK, &blk);
            if (rc < 0)
                return rc;
            if (start / rbe == rt)
                q2_rc_entry_set(blk, order, start % rbe, 1);
            rc = q2_rt_set(img, rt, start << img->cluster_bits);
            if (rc == 0 && start / rbe != rt)
                rc = q2_rc_update(img, start, +1);
            if (rc < 0)
                return rc;
            if ((int64_t)((start + 1) << img->cluster_bits) > img->file_size)
                img->file_size = (int64_t)((start + 1) << img->cluster_bits);
        }
    }
    for (k = 0; k < n; k++) {
        rc = q2_rc_update(img, start + k, +1);
        if (rc < 0)
            return rc;
        /* a page cached while the cluster held freed metadata is stale;
         * callers may write the new cluster behind the cache */
        q2_cache_drop(&img->cache, (start + k) << img->cluster_bits);
    }
    if (n == 1 || img->free_hint >= start)
        img->free_hint = start + n;
    *out = start << img->cluster_bits;
    /* the clusters are about to be written: the mapping checks that
     * bound references by the file size must accept them */
    if ((int64_t)((start + n) << img->cluster_bits) > img->file_size)
        img->file_size = (int64_t)((start + n) << img->cluster_bits);
    return 0;
}

int q2_rc_free_later(struct qcow2_image *img, uint64_t off, uint64_t len)
{
    uint64_t c, first = off >> img->cluster_bits;
    uint64_t last = (off + len - 1) >> img->cluster_bits;

    if (len == 0)
        return 0;
    for (c = first; c <= last; c++) {
        if (img->n_pending == img->cap_pending) {
            size_t ncap = img->cap_pending ? img->cap_pending * 2 : 256;
            uint64_t *np = realloc(img->pending_free, ncap * sizeof(*np));
            if (!np)
                return -ENOMEM;
            img->pending_free = np;
            img->cap_pending = ncap;
        }
        img->pending_free[img->n_pending++] = c;
    }
    return 0;
}

int q2_rc_apply_pending(struct qcow2_image *img)
{
    uint64_t *list = img->pending_free;
    size_t i, n = img->n_pending;
    int rc = 0;

    /* detach the list first: applying it may flush, which calls us */
    img->pending_free = NULL;
    img->n_pending = img->cap_pending = 0;
    for (i = 0; i < n && rc == 0; i++)
        rc = q2_rc_update(img, list[i], -1);
    free(list);
    return rc;
}

int q2_flush(struct qcow2_image *img)
{
    unsigned n = 0;
    int rc;

    if (img->write_err)
        return img->write_err;
    if (img->format != QCOW2_FORMAT_QCOW2)
        return (rc = img->io.flush(img->io.ctx)) < 0
                   ? q2_fail(img, rc, "cannot flush the image") : 0;

    if ((rc = q2_cache_write_kind(&img->cache, &img->io, Q2_PAGE_BITMAP,
                                  &n)) < 0)
        return q2_fail(img, rc, "cannot write bitmap data");
    if ((rc = q2_cache_write_kind(&img->cache, &img->io, Q2_PAGE_REFBLOCK,
                                  &n)) < 0)
        return q2_fail(img, rc, "cannot write refcount blocks");
    if (q2_cache_dirty_kind(&img->cache, Q2_PAGE_REFTABLE)) {
        /* a new block must be durable before the table entry naming it */
        if ((rc = img->io.flush(img->io.ctx)) < 0)
            return q2_fail(img, rc, "cannot flush the image");
        if ((rc = q2_cache_write_kind(&img->cache, &img->io,
                                      Q2_PAGE_REFTABLE, &n)) < 0)
            return q2_fail(img, rc, "cannot write the refcount table");
    }
    if ((rc = img->io.flush(img->io.ctx)) < 0)
        return q2_fail(img, rc, "cannot flush the image");
    n = 0;
    if ((rc = q2_cache_write_kind(&img->cache, &img->io, Q2_PAGE_L2, &n)) < 0)
        return q2_fail(img, rc, "cannot write L2 tables");
    if (n && (rc = img->io.flush(img->io.ctx)) < 0)
        return q2_fail(img, rc, "cannot flush the image");
    n = 0;
    if ((rc = q2_cache_write_kind(&img->cache, &img->io, Q2_PAGE_L1, &n)) < 0)
        return q2_fail(img, rc, "cannot write the L1 table");
    if (n && (rc = img->io.flush(img->io.ctx)) < 0)
        return q2_fail(img, rc, "cannot flush the image");
    if (img->n_pending && (rc = q2_rc_apply_pending(img)) < 0)
        return q2_fail(img, rc, "cannot free clusters");
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Fresh refcount structures (the rebuild's steps 2-4, check.c)             */
/* ------------------------------------------------------------------------ */

/*
 * Steps 2-4 over counts n[0..clusters): one reference count per cluster,
 * the old refcount table and blocks not among them (they end up free).
 */
int q2_rebuild_from_counts(struct qcow2_image *img, const uint32_t *cnt,
                           uint64_t clusters)
{
    uint64_t cs = img->cluster_size;
    unsigned order = img->hp.h.refcount_order;
    uint64_t rbe = cs * 8 >> order, max = order == 6 ? UINT64_MAX
                                                     : (1ull << (1u << order)) - 1;
    uint64_t start, nb = 0, m = 0, end, k, i;
    uint8_t *buf = NULL, hdr[12];
    int64_t n;
    int rc = 0;

    for (i = 0; i < clusters; i++) {
        if (cnt[i] > max)
            return q2_err(img, -QCOW2_ECORRUPT, "cluster 0x%" PRIx64 " has %"
                          PRIu32 " references, more than %u-bit refcounts "
                          "hold", i * cs, cnt[i], 1u << order);
    }
    buf = malloc(cs);
    if (!buf)
        return -ENOMEM;
    /* new blocks and table past everything, covering it all: past the
     * file, or on a device (which cannot grow), past the last cluster
     * anything references */
    start = clusters;
    if (q2_fixed_size(img)) {
        while (start > 1 && cnt[start - 1] == 0)
            start--;
    }
    q2_rc_layout(img, 0, start, 0, 0, &nb, &m);
    end = start + nb + m;
    if ((m << img->cluster_bits) > Q2_MAX_REFTABLE_BYTES) {
        rc = q2_err(img, -EFBIG, "rebuilt refcount table would exceed QEMU's "
                    "limit of 8 MiB");
        goto out;
    }
    if (q2_fixed_size(img) && end * cs > (uint64_t)img->file_size) {
        rc = q2_err(img, -ENOSPC, "the device is full: it is %" PRId64
                    " bytes and the rebuilt refcounts need %" PRIu64,
                    img->file_size, end * cs);
        goto out;
    }
    for (k = 0; k < nb; k++) {
        memset(buf, 0, cs);
        for (i = k * rbe; i < (k + 1) * rbe && i < end; i++) {
            uint64_t v = i < start ? cnt[i] : 1; /* new structures */
            if (v)
                q2_rc_entry_set(buf, order, i - k * rbe, v);
        }
        n = img->io.pwrite(img->io.ctx, buf, cs, (start + k) * cs);
        if (n < 0) {
            rc = (int)n;
            goto out;
        }
    }
    for (k = 0; k < m; k++) {
        memset(buf, 0, cs);
        for (i = k * (cs / 8); i < (k + 1) * (cs / 8) && i < nb; i++)
            q2_store_be64(buf + (i - k * (cs / 8)) * 8, (start + i) * cs);
        n = img->io.pwrite(img->io.ctx, buf, cs, (start + nb + k) * cs);
        if (n < 0) {
            rc = (int)n;
            goto out;
        }
    }
    if ((rc = img->io.flush(img->io.ctx)) < 0)
        goto out;
    q2_store_be64(hdr, (start + nb) * cs);
    q2_store_be32(hdr + 8, (uint32_t)m);
    n = img->io.pwrite(img->io.ctx, hdr, sizeof(hdr), 48);
    if (n < 0) {
        rc = (int)n;
        goto out;
    }
    if ((rc = img->io.flush(img->io.ctx)) < 0)
        goto out;
    img->hp.h.refcount_table_offset = (start + nb) * cs;
    img->hp.h.refcount_table_clusters = (uint32_t)m;
    if (!q2_fixed_size(img))
        img->file_size = (int64_t)(end * cs);
    img->free_hint = 1;
    q2_cache_clear(&img->cache); /* old refcount pages are gone */
    img->hp.h.incompatible_features &= ~Q2_INCOMPAT_DIRTY;
    q2_store_be64(hdr, img->hp.h.incompatible_features);
    n = img->io.pwrite(img->io.ctx, hdr, 8, 72);
    if (n < 0) {
        rc = (int)n;
        goto out;
    }
    rc = img->io.flush(img->io.ctx);
out:
    if (rc < 0 && !img->err_set)
        q2_err(img, rc, "cannot rebuild the refcounts: %s",
               qcow2_strerror(rc));
    free(buf);
    return rc;
}
