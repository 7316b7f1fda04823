/*
 * refcount.c - refcounts of host clusters: read, update, allocate, free.
 *
 * On disk (refcount_bits = 1 << refcount_order, rb_entries = cluster_size *
 * 8 / refcount_bits):
 *
 *   refcount table: refcount_table_clusters clusters of 64-bit entries,
 *     bits 9-63 the offset of a refcount block, 0 = none (all refcounts 0)
 *   refcount block: one cluster of rb_entries packed big-endian entries;
 *     widths below 8 bits pack LSB first within a byte
 *
 *   cluster i -> table index i / rb_entries, block index i % rb_entries
 *
 * Allocation is first fit from a hint (the lowest cluster that may be
 * free), as QEMU's is, so freed holes are reused.  A cluster whose range has
 * no refcount block yet becomes the block itself (a self-describing block:
 * it lies inside the range it covers and counts itself).  When the table is
 * full, a new larger table and the blocks that cover it are written past
 * everything in use and the header is switched to it with one synced write
 * (qcow2_refcount_area's scheme).
 *
 * Write order (see write.c for the whole picture):
 *   - increments go to cached blocks, written before any L2 or L1 entry
 *     that uses the clusters (q2_flush step 1);
 *   - decrements are deferred (q2_rc_free_later) and applied only after
 *     the L2/L1 changes that dropped the references are durable, so a
 *     crash can leak clusters but never leave a reference with a refcount
 *     too small.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "endian.h"
#include "format.h"
#include "internal.h"

static unsigned rb_bits(const struct qcow2_image *img)
{
    return img->cluster_bits + 3 - img->hp.h.refcount_order;
}

static uint64_t rt_entries(const struct qcow2_image *img)
{
    return ((uint64_t)img->hp.h.refcount_table_clusters << img->cluster_bits)
           / 8;
}

uint64_t q2_rc_entry_get(const uint8_t *blk, unsigned order, uint64_t i)
{
    switch (order) {
    case 0: case 1: case 2: {
        unsigned w = 1u << order;
        uint64_t bit = i * w;
        return (blk[bit / 8] >> (bit % 8)) & ((1u << w) - 1);
    }
    case 3: return blk[i];
    case 4: return q2_load_be16(blk + i * 2);
    case 5: return q2_load_be32(blk + i * 4);
    default: return q2_load_be64(blk + i * 8);
    }
}

void q2_rc_entry_set(uint8_t *blk, unsigned order, uint64_t i, uint64_t v)
{
    switch (order) {
    case 0: case 1: case 2: {
        unsigned w = 1u << order;
        uint64_t bit = i * w;
        uint8_t mask = (uint8_t)(((1u << w) - 1) << (bit % 8));
        blk[bit / 8] = (uint8_t)((blk[bit / 8] & ~mask) |
                                 ((v << (bit % 8)) & mask));
        break;
    }
    case 3: blk[i] = (uint8_t)v; break;
    case 4: q2_store_be16(blk + i * 2, (uint16_t)v); break;
    case 5: q2_store_be32(blk + i * 4, (uint32_t)v); break;
    default: q2_store_be64(blk + i * 8, v); break;
    }
}

static uint64_t rc_max(const struct qcow2_image *img)
{
    unsigned bits = 1u << img->hp.h.refcount_order;
    return bits == 64 ? UINT64_MAX : (1ull << bits) - 1;
}

/* Offset of the refcount block for table index rt (0: none). */
static int rt_get(struct qcow2_image *img, uint64_t rt, uint64_t *out)
{
    uint64_t pos = img->hp.h.refcount_table_offset + rt * 8;
    uint64_t key = pos & ~(img->cluster_size - 1), e;
    const uint8_t *page;
    int rc;

    *out = 0;
    if (rt >= rt_entries(img))
        return 0;
    rc = q2_cache_get(&img->cache, &img->io, key, &page);
    if (rc < 0)
        return q2_err(img, rc, "cannot read the refcount table: %s (at "
                      "offset 0x%" PRIx64 ")", qcow2_strerror(rc), pos);
    e = q2_load_be64(page + (pos - key));
    if (e & Q2_REFT_RESERVED_MASK)
        return q2_err(img, -QCOW2_ECORRUPT, "refcount table entry %" PRIu64
                      " has reserved bits set (at offset 0x%" PRIx64 ")", rt,
                      pos);
    e &= Q2_REFT_OFFSET_MASK;
    if (e & (img->cluster_size - 1))
        return q2_err(img, -QCOW2_ECORRUPT, "refcount block offset 0x%" PRIx64
                      " is not cluster aligned (at offset 0x%" PRIx64 ")", e,
                      pos);
    *out = e;
    return 0;
}

static int rt_set(struct qcow2_image *img, uint64_t rt, uint64_t rb_off)
{
    uint64_t pos = img->hp.h.refcount_table_offset + rt * 8;
    uint64_t key = pos & ~(img->cluster_size - 1);
    uint8_t *page;
    int rc = q2_cache_get_mut(&img->cache, &img->io, key, Q2_PAGE_REFTABLE,
                              &page);

    if (rc < 0)
        return rc;
    q2_store_be64(page + (pos - key), rb_off);
    return 0;
}

int q2_refcount_get(struct qcow2_image *img, uint64_t cluster, uint64_t *out)
{
    uint64_t rb_off;
    const uint8_t *page;
    int rc;

    *out = 0;
    rc = rt_get(img, cluster >> rb_bits(img), &rb_off);
    if (rc < 0 || rb_off == 0)
        return rc;
    rc = q2_cache_get(&img->cache, &img->io, rb_off, &page);
    if (rc < 0)
        return q2_err(img, rc, "cannot read a refcount block: %s (at offset "
                      "0x%" PRIx64 ")", qcow2_strerror(rc), rb_off);
    *out = q2_rc_entry_get(page, img->hp.h.refcount_order,
                     cluster & ((1ull << rb_bits(img)) - 1));
    return 0;
}

/* The refcount block of table index rt (*page NULL: none). */
static int rb_page(struct qcow2_image *img, uint64_t rt, const uint8_t **page)
{
    uint64_t rb_off;
    int rc = rt_get(img, rt, &rb_off);

    *page = NULL;
    if (rc < 0 || rb_off == 0)
        return rc;
    rc = q2_cache_get(&img->cache, &img->io, rb_off, page);
    if (rc < 0)
        return q2_err(img, rc, "cannot read a refcount block: %s (at offset "
                      "0x%" PRIx64 ")", qcow2_strerror(rc), rb_off);
    return 0;
}

int q2_rc_count_used(struct qcow2_image *img, uint64_t end, uint64_t limit,
                     uint64_t *out)
{
    unsigned order = img->hp.h.refcount_order;
    uint64_t rbe = 1ull << rb_bits(img), count = 0, rt, i;
    int rc;

    /* one table entry and one block page per range of rbe clusters */
    for (rt = 0; rt * rbe < end && count < limit; rt++) {
        uint64_t last = (rt + 1) * rbe < end ? (rt + 1) * rbe : end;
        const uint8_t *page;
        if ((rc = rb_page(img, rt, &page)) < 0)
            return rc;
        if (!page)
            continue;
        for (i = rt * rbe; i < last && count < limit; i++)
            count += q2_rc_entry_get(page, order, i - rt * rbe) != 0;
    }
    *out = count;
    return 0;
}

int q2_rc_used_end(struct qcow2_image *img, uint64_t *out)
{
    unsigned order = img->hp.h.refcount_order;
    uint64_t rbe = 1ull << rb_bits(img), rt = rt_entries(img), i;
    int rc;

    /* from the last table entry down: the first non-zero refcount found
     * ends the image */
    while (rt-- > 0) {
        const uint8_t *page;
        if ((rc = rb_page(img, rt, &page)) < 0)
            return rc;
        if (!page)
            continue;
        for (i = rbe; i-- > 0;) {
            if (q2_rc_entry_get(page, order, i) != 0) {
                *out = rt * rbe + i + 1;
                return 0;
            }
        }
    }
    *out = 0;
    return 0;
}

int q2_rc_update(struct qcow2_image *img, uint64_t cluster, int delta)
{
    unsigned order = img->hp.h.refcount_order;
    uint64_t rb_off, i = cluster & ((1ull << rb_bits(img)) - 1), v;
    uint8_t *page;
    int rc;

    rc = rt_get(img, cluster >> rb_bits(img), &rb_off);
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

/*
 * Grow the refcount table so that it covers cluster `need` (QEMU's
 * qcow2_refcount_area): after everything in use, write the refcount blocks
 * for the new area and a new table 1.5 times as large, then switch the
 * header to it with one synced write and free the old table.
 */
static int grow_reftable(struct qcow2_image *img, uint64_t need)
{
    uint64_t cs = img->cluster_size, rbe = 1ull << rb_bits(img);
    uint64_t old_entries = rt_entries(img);
    uint64_t old_off = img->hp.h.refcount_table_offset;
    uint64_t old_clusters = img->hp.h.refcount_table_clusters;
    uint64_t start, nb = 0, m = 0, end, entries, k, r0, i;
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
    for (;;) {
        uint64_t nb2, m2, top;
        end = start + nb + m;
        top = end > need + 1 ? end : need + 1;
        entries = (top + rbe - 1) / rbe;
        if (entries < old_entries * 3 / 2)
            entries = old_entries * 3 / 2;
        m2 = (entries * 8 + cs - 1) / cs;
        nb2 = (end ? (end - 1) / rbe : 0) - start / rbe + 1;
        if (nb2 == nb && m2 == m)
            break;
        nb = nb2;
        m = m2;
    }
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
    uint64_t rbe = 1ull << rb_bits(img), i = img->free_hint ? img->free_hint
                                                             : 1;
    uint64_t run_start = i, run = 0;
    int rc;

    while (run < n) {
        uint64_t rt = i / rbe, rb_off, end = (rt + 1) * rbe;
        const uint8_t *page;

        if (rt >= rt_entries(img)) {
            rc = grow_reftable(img, i + (n - run));
            if (rc < 0)
                return rc;
            continue; /* its structures sit at i or later */
        }
        rc = rt_get(img, rt, &rb_off);
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
    uint64_t rbe = 1ull << rb_bits(img), start = 0, rt, last, rb_off, k;
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
            rc = rt_get(img, rt, &rb_off);
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
            rc = rt_set(img, rt, start << img->cluster_bits);
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
