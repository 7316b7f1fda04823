/*
 * tables.c - refcount entries on disk, read and written through the
 * metadata cache (the tables layer: no allocation, no flushing).
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
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "endian.h"
#include "format.h"
#include "internal.h"

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

/* Offset of the refcount block for table index rt (0: none). */
int q2_rt_get(struct qcow2_image *img, uint64_t rt, uint64_t *out)
{
    uint64_t pos = img->hp.h.refcount_table_offset + rt * 8;
    uint64_t key = pos & ~(img->cluster_size - 1), e;
    const uint8_t *page;
    int rc;

    *out = 0;
    if (rt >= q2_rt_entries(img))
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

int q2_rt_set(struct qcow2_image *img, uint64_t rt, uint64_t rb_off)
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
    rc = q2_rt_get(img, cluster >> q2_rb_bits(img), &rb_off);
    if (rc < 0 || rb_off == 0)
        return rc;
    rc = q2_cache_get(&img->cache, &img->io, rb_off, &page);
    if (rc < 0)
        return q2_err(img, rc, "cannot read a refcount block: %s (at offset "
                      "0x%" PRIx64 ")", qcow2_strerror(rc), rb_off);
    *out = q2_rc_entry_get(page, img->hp.h.refcount_order,
                     cluster & ((1ull << q2_rb_bits(img)) - 1));
    return 0;
}

/* The refcount block of table index rt (*page NULL: none). */
int q2_rb_page(struct qcow2_image *img, uint64_t rt, const uint8_t **page)
{
    uint64_t rb_off;
    int rc = q2_rt_get(img, rt, &rb_off);

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
    uint64_t rbe = 1ull << q2_rb_bits(img), count = 0, rt, i;
    int rc;

    /* one table entry and one block page per range of rbe clusters */
    for (rt = 0; rt * rbe < end && count < limit; rt++) {
        uint64_t last = (rt + 1) * rbe < end ? (rt + 1) * rbe : end;
        const uint8_t *page;
        if ((rc = q2_rb_page(img, rt, &page)) < 0)
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
    uint64_t rbe = 1ull << q2_rb_bits(img), rt = q2_rt_entries(img), i;
    int rc;

    /* from the last table entry down: the first non-zero refcount found
     * ends the image */
    while (rt-- > 0) {
        const uint8_t *page;
        if ((rc = q2_rb_page(img, rt, &page)) < 0)
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
