/*
 * estimate.c - what a commit would do, without doing it (qchain-delta).
 *
 * The walk is the commit's own (commit.c): qcow2_map_above over the top's
 * guest range with QCOW2_MAP_HOST_HOLES, classified the same way, so the
 * data and zero figures are by construction the ones the commit reports.
 * Only metadata is read: the layers' L1/L2 tables, and the base's L1/L2
 * tables, refcount structures (qcow2) or hole map (raw).
 *
 * Growth of the base, as the write path (write.c, refcount.c) would
 * allocate it:
 *
 *   raw base    storage that appears and disappears, counted in blocks of
 *               RAW_BLOCK bytes: data written over holes (or past the end
 *               of the file) allocates; zeros are punched, which frees the
 *               allocated blocks they cover whole.  Growing the file is a
 *               truncate and allocates nothing.
 *
 *   qcow2 base  clusters the write path allocates, decided per guest
 *               cluster of the base from its L2 entry exactly as
 *               write_std/write_ext decide:
 *                 data, or zeros over part of a cluster, or zeros in a
 *                 version 2 image over a backing file: a new cluster unless
 *                 the entry is ours (allocated, COPIED, not compressed)
 *                 whole clusters of zeros otherwise: metadata only
 *               plus an L2 table per L1 entry written that has none of its
 *               own (missing, or shared with a snapshot), a new L1 table
 *               when the base grows past its L1, and the refcount blocks
 *               and table growth the allocations need.  New clusters first
 *               fill free clusters inside the file (first fit), then extend
 *               it; the growth is how far the file's end moves.
 *
 *               Enabled persistent bitmaps (auto, not in use) get a data
 *               cluster for every bitmap cluster a write marks that has
 *               none yet.
 *
 *   a device    (QCOW2_IO_CAP_FIXED_SIZE) does not grow: a raw base's
 *               growth is 0; a qcow2 base's image ends after its last
 *               cluster in use (refcounts), not at the device's end, and
 *               grows from there as in a file.
 *
 * base_required_bytes is the size the base's file or device must have when
 * the commit is done: the image's end after the growth (qcow2), the top's
 * virtual size when a raw base grows, else its current size.
 *
 * Not modelled: clusters freed during the commit and reused by later
 * allocations of the same commit (frees are deferred to flushes).  That
 * makes the estimate an upper bound, which is what a device needs before
 * the first write; qchain-delta's tests hold it against real commits.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "endian.h"
#include "format.h"
#include "internal.h"

#define RAW_BLOCK 4096u

struct est {
    struct qcow2_image *base;
    uint64_t base_file_size; /* at the start */
    /* raw */
    uint64_t raw_added, raw_freed;
    uint64_t raw_counted_end; /* blocks below this already counted */
    /* qcow2 */
    uint64_t new_clusters;
    uint64_t last_l1;    /* L1 index whose L2 was last considered, +1 */
    uint64_t last_gc;    /* guest cluster last made ours, +1 */
    uint32_t l1_entries; /* the base's L1 size after growing */
    uint64_t *bm_next;   /* per bitmap: bitmap clusters below this are
                            counted; UINT64_MAX: not marked by writes */
    uint64_t bm_guest;   /* no bitmap reaches an uncounted cluster below
                            this guest offset (up to 65535 bitmaps need
                            not be visited for every write) */
    uint64_t end_clusters; /* qcow2: where the image ends before */
};

/* ---- raw base ---- */

/* Bytes of [off, off+len) the base file has storage for. */
static int raw_allocated(struct est *s, uint64_t off, uint64_t len,
                         uint64_t *out)
{
    struct qcow2_io *io = &s->base->io;
    uint64_t end = off + len, n = 0;

    if (end > s->base_file_size)
        end = s->base_file_size;
    if (!io->block_status) {
        *out = end > off ? end - off : 0;
        return 0;
    }
    while (off < end) {
        uint64_t pnum = 0;
        int rc = io->block_status(io->ctx, off, end - off, &pnum);
        if (rc < 0)
            return q2_err(s->base, rc, "cannot read the base's hole map: %s",
                          qcow2_strerror(rc));
        if (pnum == 0 || pnum > end - off)
            pnum = end - off;
        if (rc == 1)
            n += pnum;
        off += pnum;
    }
    *out = n;
    return 0;
}

/* Data written over [off, off+len) allocates the blocks it touches that
 * are holes; zeros punched there free the allocated blocks it covers whole
 * (a punch leaves partial blocks in place). */
static int raw_range(struct est *s, uint64_t off, uint64_t len, bool zeros)
{
    uint64_t a = zeros ? (off + RAW_BLOCK - 1) / RAW_BLOCK * RAW_BLOCK
                       : off / RAW_BLOCK * RAW_BLOCK;
    uint64_t b = zeros ? (off + len) / RAW_BLOCK * RAW_BLOCK
                       : (off + len + RAW_BLOCK - 1) / RAW_BLOCK * RAW_BLOCK;
    uint64_t have = 0;
    int rc;

    if (a < s->raw_counted_end)
        a = s->raw_counted_end;
    if (a >= b)
        return 0;
    rc = raw_allocated(s, a, b - a, &have);
    if (rc < 0)
        return rc;
    if (zeros) {
        s->raw_freed += have;
    } else {
        s->raw_added += (b - a) - have;
        s->raw_counted_end = b;
    }
    return 0;
}

/* ---- qcow2 base ---- */

static int base_l1(struct est *s, uint64_t idx, uint64_t *out)
{
    struct qcow2_image *b = s->base;
    uint64_t pos, key;
    const uint8_t *page;
    int rc;

    *out = 0;
    if (idx >= b->l1_size)
        return 0;
    pos = b->l1_offset + idx * 8;
    key = pos & ~(b->cluster_size - 1);
    rc = q2_cache_get(&b->cache, &b->io, key, &page);
    if (rc < 0)
        return q2_err(b, rc, "cannot read the L1 table: %s (at offset 0x%"
                      PRIx64 ")", qcow2_strerror(rc), pos);
    *out = q2_load_be64(page + (pos - key));
    return 0;
}

/* The base's L2 entry (and subcluster bitmap) of guest cluster gc. */
static int base_entry(struct est *s, uint64_t gc, uint64_t *l1e, uint64_t *e,
                      uint64_t *bm)
{
    struct qcow2_image *b = s->base;
    uint64_t l2_off;
    unsigned i = (unsigned)(gc & ((1ull << b->l2_bits) - 1));
    const uint8_t *l2;
    int rc;

    *e = *bm = 0;
    rc = base_l1(s, gc >> b->l2_bits, l1e);
    if (rc < 0)
        return rc;
    l2_off = *l1e & Q2_L1E_OFFSET_MASK;
    if (!l2_off)
        return 0;
    if ((l2_off & (b->cluster_size - 1)) ||
        l2_off >= (uint64_t)b->file_size)
        return q2_err(b, -QCOW2_ECORRUPT, "L2 table offset 0x%" PRIx64
                      " is invalid (L1 entry at offset 0x%" PRIx64 ")",
                      l2_off, b->l1_offset + (gc >> b->l2_bits) * 8);
    rc = q2_cache_get(&b->cache, &b->io, l2_off, &l2);
    if (rc < 0)
        return q2_err(b, rc, "cannot read an L2 table: %s (at offset 0x%"
                      PRIx64 ")", qcow2_strerror(rc), l2_off);
    *e = q2_load_be64(l2 + (size_t)i * b->l2_entry_len);
    if (b->extended_l2)
        *bm = q2_load_be64(l2 + (size_t)i * 16 + 8);
    return 0;
}

/* One write into base cluster gc, bytes [in, in+len) of it. */
static int q_write(struct est *s, uint64_t gc, uint64_t in, uint64_t len,
                   bool zeros)
{
    struct qcow2_image *b = s->base;
    uint64_t l1e, e, bm;
    bool whole = in == 0 && len == b->cluster_size;
    int rc;

    rc = base_entry(s, gc, &l1e, &e, &bm);
    if (rc < 0)
        return rc;
    /* the L2 table: allocated, or copied from a snapshot's, once; then
     * the cluster, as the write path decides it */
    if (s->last_l1 != (gc >> b->l2_bits) + 1) {
        s->last_l1 = (gc >> b->l2_bits) + 1;
        if (q2_l2_write_allocates(l1e))
            s->new_clusters++;
    }
    if (s->last_gc == gc + 1)
        return 0; /* made ours by the previous write */
    if (!q2_write_allocates(b, e, zeros && whole))
        return 0; /* metadata only, or a cluster of ours */
    s->new_clusters++;
    s->last_gc = gc + 1;
    return 0;
}

/* Bitmap data clusters the writes to [off, off+len) allocate: one per
 * bitmap cluster that has none (and is not all ones), as bitmap_mark. */
static int q_bitmaps(struct est *s, uint64_t off, uint64_t len)
{
    struct qcow2_image *b = s->base;
    uint64_t cs = b->cluster_size, bpc = cs * 8;
    unsigned i;

    if (len == 0 || off + len <= s->bm_guest)
        return 0;
    s->bm_guest = UINT64_MAX;
    for (i = 0; i < b->n_bitmaps; i++) {
        const struct qcow2_bitmap *p = &b->bitmaps[i].pub;
        unsigned gb = p->granularity_bits;
        uint64_t first = (off >> gb) / bpc, last = ((off + len - 1) >> gb) /
                                                   bpc, ci;
        if (s->bm_next[i] == UINT64_MAX)
            continue;
        for (ci = first > s->bm_next[i] ? first : s->bm_next[i]; ci <= last;
             ci++) {
            uint64_t pos = p->table_offset + ci * 8, key, e;
            const uint8_t *page;
            int rc;
            if (ci >= p->table_size)
                break;
            key = pos & ~(cs - 1);
            rc = q2_cache_get(&b->cache, &b->io, key, &page);
            if (rc < 0)
                return q2_err(b, rc, "cannot read a bitmap table: %s (at "
                              "offset 0x%" PRIx64 ")", qcow2_strerror(rc),
                              pos);
            e = q2_load_be64(page + (pos - key));
            if (!(e & Q2_BME_OFFSET_MASK) && !(e & Q2_BME_ALL_ONES))
                s->new_clusters++;
        }
        if (last + 1 > s->bm_next[i])
            s->bm_next[i] = last + 1;
        if (s->bm_next[i] < p->table_size &&
            s->bm_next[i] < (UINT64_MAX >> gb) / bpc &&
            (s->bm_next[i] * bpc << gb) < s->bm_guest)
            s->bm_guest = s->bm_next[i] * bpc << gb;
    }
    return 0;
}

static int q_range(struct est *s, uint64_t off, uint64_t len, bool zeros)
{
    uint64_t cs = s->base->cluster_size;
    int brc = s->bm_next ? q_bitmaps(s, off, len) : 0;

    if (brc < 0)
        return brc;
    while (len) {
        uint64_t in = off & (cs - 1), n = cs - in < len ? cs - in : len;
        int rc = q_write(s, off >> s->base->cluster_bits, in, n, zeros);
        if (rc < 0)
            return rc;
        off += n;
        len -= n;
    }
    return 0;
}

/*
 * Where the file's end goes when `need` more clusters are allocated: free
 * clusters inside the file first, then the end, plus a refcount block for
 * every range of the new end that has none, plus a larger refcount table
 * (1.5 times, with its own blocks) when the end passes what the table
 * covers.  Returns the growth in bytes.
 */
static int q_growth(struct est *s, uint64_t need, int64_t *out)
{
    struct qcow2_image *b = s->base;
    uint64_t cs = b->cluster_size, used, free_in, end, rb, nb = 0, k;
    uint64_t rbe = 1ull << (b->cluster_bits + 3 - b->hp.h.refcount_order);
    uint64_t rt_entries = (uint64_t)b->hp.h.refcount_table_clusters * cs / 8;
    uint64_t old_end = ((uint64_t)b->file_size + cs - 1) / cs;
    int rc;

    if (q2_fixed_size(b) && (rc = q2_rc_used_end(b, &old_end)) < 0)
        return rc;
    s->end_clusters = old_end;
    rc = q2_rc_count_used(b, old_end, UINT64_MAX, &used);
    if (rc < 0)
        return rc;
    free_in = old_end > used ? old_end - used : 0;
    if (need <= free_in) {
        *out = 0;
        return 0;
    }
    end = old_end + (need - free_in);
    /* refcount blocks for table entries of the new area that have none */
    for (k = 0;; k++) {
        uint64_t first = old_end / rbe, last = (end + nb - 1) / rbe, n = 0;
        for (rb = first; rb <= last; rb++) {
            uint64_t off = 0;
            if (rb < rt_entries) {
                uint64_t pos = b->hp.h.refcount_table_offset + rb * 8;
                uint64_t key = pos & ~(cs - 1);
                const uint8_t *page;
                rc = q2_cache_get(&b->cache, &b->io, key, &page);
                if (rc < 0)
                    return rc;
                off = q2_load_be64(page + (pos - key));
            }
            n += off == 0;
        }
        if (n == nb || k > 64)
            break;
        nb = n;
    }
    end += nb;
    if ((end - 1) / rbe >= rt_entries) {
        /* grow_reftable: blocks for its area and a table 1.5x larger,
         * placed after everything */
        uint64_t m, nb2;
        q2_rc_layout(b, end, end, 0, rt_entries * 3 / 2, &nb2, &m);
        end += nb2 + m;
    }
    *out = (int64_t)((end - old_end) * cs);
    return 0;
}

/* ---- the walk ---- */

int qcow2_commit_estimate(struct qcow2_image *top, unsigned stop,
                          unsigned flags,
                          struct qcow2_commit_estimate *out)
{
    return q2_commit_estimate(top, stop, NULL, flags, out);
}

int q2_commit_estimate(struct qcow2_image *top, unsigned stop,
                       struct qcow2_image *base, unsigned flags,
                       struct qcow2_commit_estimate *out)
{
    struct qcow2_commit_estimate st = {0};
    struct est s = {0};
    struct qcow2_extent e;
    uint64_t size, pos = 0, run_end = UINT64_MAX; /* the last data run's */
    unsigned d;
    int rc = 0;

    if (!top || top->magic != Q2_HANDLE_MAGIC ||
        top->state != Q2_STATE_OPEN || stop == 0 || !out)
        return -EINVAL;
    q2_err_clear(top);
    s.base = top;
    for (d = 0; d < stop && s.base; d++)
        s.base = s.base->backing;
    if (!s.base)
        return q2_err(top, -EINVAL, "the chain has no layer at depth %u",
                      stop);
    if (base)
        s.base = base; /* the same file, through the writer's handle */
    s.base_file_size = s.base->file_size > 0 ? (uint64_t)s.base->file_size
                                             : 0;
    size = top->virtual_size;
    st.total_bytes = size;
    st.grows = s.base->virtual_size < size;

    if (s.base->format == QCOW2_FORMAT_QCOW2 && st.grows) {
        uint64_t per_l2 = 1ull << (s.base->cluster_bits + s.base->l2_bits);
        uint64_t need = size / per_l2 + (size % per_l2 != 0);
        if (need > s.base->l1_size)
            s.new_clusters += (need * 8 + s.base->cluster_size - 1) /
                              s.base->cluster_size;
    }
    if (s.base->format == QCOW2_FORMAT_QCOW2 && s.base->n_bitmaps) {
        s.bm_next = malloc(s.base->n_bitmaps * sizeof(*s.bm_next));
        if (!s.bm_next)
            return -ENOMEM;
        for (d = 0; d < s.base->n_bitmaps; d++) {
            /* the ones a writer marks: a writer's handle knows, else
             * write.c's rule (auto, and not in use) */
            uint32_t f = s.base->bitmaps[d].pub.flags;
            bool marked = s.base->writable
                              ? s.base->bitmaps[d].tracked
                              : (f & QCOW2_BITMAP_AUTO) &&
                                    !(f & QCOW2_BITMAP_IN_USE);
            s.bm_next[d] = marked ? 0 : UINT64_MAX;
        }
    }

    while (pos < size) {
        bool zeros;
        rc = qcow2_map_above(top, pos, size - pos, QCOW2_MAP_HOST_HOLES, stop,
                             &e);
        if (rc < 0) {
            uint64_t span;
            if (!(flags & QCOW2_ESTIMATE_TOLERANT) || rc == -ENOMEM)
                goto out;
            /* metadata caught mid-update: skip this L2 table's range of
             * the top and say how much was skipped */
            span = 1ull << (top->format == QCOW2_FORMAT_QCOW2
                                ? top->cluster_bits + top->l2_bits : 30);
            e.length = (pos | (span - 1)) + 1 - pos;
            if (e.length > size - pos)
                e.length = size - pos;
            st.skipped_bytes += e.length;
            pos += e.length;
            rc = 0;
            continue;
        }
        if (e.depth >= stop) {
            pos += e.length;
            continue;
        }
        zeros = (e.flags & QCOW2_EXTENT_ZERO) != 0;
        if (zeros && e.kind != QCOW2_KIND_DATA) {
            st.zero_bytes += e.length;
        } else {
            st.data_bytes += e.length;
            if (e.kind == QCOW2_KIND_COMPRESSED)
                st.compressed_bytes += e.length;
            if (!zeros && pos != run_end)
                st.data_runs++; /* as the commit counts the runs it copies */
            if (!zeros)
                run_end = pos + e.length;
        }
        if (zeros) {
            /* as the commit: what growing added reads as zeros already */
            uint64_t old = s.base->virtual_size;
            uint64_t zlen = pos >= old ? 0
                            : e.length < old - pos ? e.length : old - pos;
            if (zlen == 0)
                rc = 0;
            else if (s.base->format == QCOW2_FORMAT_RAW)
                rc = raw_range(&s, pos, zlen, true);
            else
                rc = q_range(&s, pos, zlen, true);
        } else if (s.base->format == QCOW2_FORMAT_RAW) {
            rc = raw_range(&s, pos, e.length, false);
        } else {
            rc = q_range(&s, pos, e.length, false);
        }
        if (rc < 0)
            goto base_fail;
        pos += e.length;
    }

    if (q2_fixed_size(s.base))
        st.base_capacity_bytes = s.base_file_size;
    if (s.base->format == QCOW2_FORMAT_RAW) {
        /* a device's storage is all there: nothing grows or shrinks */
        st.base_growth_bytes = q2_fixed_size(s.base)
                                   ? 0
                                   : (int64_t)s.raw_added -
                                         (int64_t)s.raw_freed;
        st.base_required_bytes = st.grows ? size : s.base_file_size;
    } else {
        st.new_clusters = s.new_clusters;
        rc = q_growth(&s, s.new_clusters, &st.base_growth_bytes);
        if (rc < 0)
            goto base_fail;
        /* a file that does not grow keeps its size, whatever lies past
         * its last cluster */
        st.base_required_bytes =
            !q2_fixed_size(s.base) && st.base_growth_bytes == 0
                ? s.base_file_size
                : s.end_clusters * s.base->cluster_size +
                      (uint64_t)st.base_growth_bytes;
    }
    *out = st;
    goto out;
base_fail:
    if (s.base != top)
        rc = q2_err(top, rc, "'%s': %s", s.base->filename, s.base->errmsg);
out:
    free(s.bm_next);
    return rc;
}
