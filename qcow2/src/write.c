/*
 * write.c - guest writes into qcow2 and raw images: allocation, copy on
 * write, zero writes, discard, growth, and the order of durable writes.
 *
 * Crash safety comes from the order in which the pieces reach the disk
 * (QEMU's cache dependencies, made explicit):
 *
 *   guest write of a new cluster:
 *     allocate (refcount +1 in a cached block)   -> dirty REFBLOCK page
 *     write the cluster's data (pwrite, now)      -> data in the file
 *     set the L2 entry (host | COPIED)            -> dirty L2 page
 *     old cluster replaced (shared/compressed)    -> deferred decrement
 *
 *   then q2_flush (alloc.c), the only writer of metadata, writes refcounts
 *   and data durable before the L2 and L1 entries that name them, and
 *   applies the deferred decrements after the references they drop are
 *   gone.  So at every moment the file holds, for every L2/L1 entry on
 *   disk, a durable cluster with a durable refcount >= its references: a
 *   writer killed anywhere leaves leaked clusters at worst.  Flushes are
 *   batched: they happen when the cache is full of dirty pages, on
 *   qcow2_flush and at close, not per cluster.
 *
 * A failed write or flush makes the handle refuse every later write with
 * the same error (q2_fail, sticky).
 *
 * Clusters whose L2 entry lacks COPIED (shared with an internal snapshot)
 * and compressed clusters are never written in place: the new data goes to
 * a new cluster together with the old content of the rest of it.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "endian.h"
#include "format.h"
#include "internal.h"

#define MAX_PENDING_FREES (1u << 16) /* flush when this many wait */

/* ------------------------------------------------------------------------ */
/* Flush                                                                    */
/* ------------------------------------------------------------------------ */

static int flush_cb(void *ctx)
{
    return q2_flush(ctx);
}

static int set_bitmap_flags(struct qcow2_image *img, bool in_use);

int q2_write_close(struct qcow2_image *img)
{
    int rc;

    if (!img->writable || img->write_err)
        return img->write_err;
    /* twice: the second writes the decrements the first released */
    rc = q2_flush(img);
    if (rc == 0 && img->format == QCOW2_FORMAT_QCOW2)
        rc = q2_flush(img);
    /* the bitmaps are complete and durable: consistent again */
    if (rc == 0 && img->format == QCOW2_FORMAT_QCOW2)
        rc = set_bitmap_flags(img, false);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Persistent dirty bitmaps                                                 */
/* ------------------------------------------------------------------------ */
/*
 * Enabled ("auto") bitmaps must record every range the guest writes.  As
 * QEMU does, they are flagged in_use (synced) before the first write and
 * only flagged consistent again after the final flush at close: a writer
 * that dies leaves them marked inconsistent, never silently stale.  Bits
 * are set in cached bitmap clusters, written with the data before the
 * bitmap table entries that name new clusters (q2_flush).  Disabled
 * bitmaps, and bitmaps already in use (inconsistent), are left alone.
 *
 * Bitmap table entry: bits 9-55 data cluster offset; bit 0 with offset 0:
 * the cluster reads as all ones.  Data: bit n covers guest bytes
 * [n << granularity_bits, (n + 1) << granularity_bits), LSB first.
 */

static int set_bitmap_flags(struct qcow2_image *img, bool in_use)
{
    unsigned i, n = 0;
    uint8_t b[4];
    int64_t w;
    int rc;

    for (i = 0; i < img->n_bitmaps; i++) {
        struct q2_bitmap *bm = &img->bitmaps[i];
        uint32_t flags;
        if (!bm->tracked)
            continue;
        flags = in_use ? bm->pub.flags | QCOW2_BITMAP_IN_USE
                       : bm->pub.flags & ~(uint32_t)QCOW2_BITMAP_IN_USE;
        q2_store_be32(b, flags);
        w = img->io.pwrite(img->io.ctx, b, 4, bm->pub.entry_offset + 12);
        if (w < 0)
            return q2_fail(img, (int)w, "cannot update a bitmap directory entry");
        bm->pub.flags = flags;
        n++;
    }
    if (n && (rc = img->io.flush(img->io.ctx)) < 0)
        return q2_fail(img, rc, "cannot flush the bitmap directory");
    return 0;
}

static int prepare_bitmaps(struct qcow2_image *img)
{
    uint64_t cs = img->cluster_size;
    unsigned i;

    for (i = 0; i < img->n_bitmaps; i++) {
        struct q2_bitmap *bm = &img->bitmaps[i];
        const struct qcow2_bitmap *p = &bm->pub;
        uint64_t bits, need;

        if (!(p->flags & QCOW2_BITMAP_AUTO) ||
            (p->flags & QCOW2_BITMAP_IN_USE))
            continue;
        bits = (img->virtual_size + (1ull << p->granularity_bits) - 1) >>
               p->granularity_bits;
        need = (bits + cs * 8 - 1) / (cs * 8);
        if (p->table_size < need ||
            p->table_offset > (uint64_t)img->file_size ||
            (uint64_t)p->table_size * 8 >
                (uint64_t)img->file_size - p->table_offset)
            return q2_err(img, -QCOW2_ECORRUPT, "bitmap '%s': its table "
                          "(0x%" PRIx64 ", %" PRIu32 " entries) does not "
                          "cover the disk or lies past the end of the file "
                          "(at offset 0x%" PRIx64 ")", bm->name,
                          p->table_offset, p->table_size, p->entry_offset);
        bm->tracked = true;
    }
    return set_bitmap_flags(img, true);
}

/* Set the bits of [off, off+len) in one tracked bitmap. */
static int bitmap_mark(struct qcow2_image *img, struct q2_bitmap *bm,
                       uint64_t off, uint64_t len)
{
    uint64_t cs = img->cluster_size, bpc = cs * 8;
    unsigned gb = bm->pub.granularity_bits;
    uint64_t first = off >> gb, last = (off + len - 1) >> gb, ci;
    int rc;

    for (ci = first / bpc; ci <= last / bpc; ci++) {
        uint64_t pos = bm->pub.table_offset + ci * 8;
        uint64_t key = pos & ~(cs - 1), e, data, lo, hi, n;
        const uint8_t *tp;
        uint8_t *page;

        rc = q2_cache_get(&img->cache, &img->io, key, &tp);
        if (rc < 0)
            return rc;
        e = q2_load_be64(tp + (pos - key));
        if (e & Q2_BME_RESERVED_MASK)
            return q2_err(img, -QCOW2_ECORRUPT, "bitmap '%s': table entry "
                          "has reserved bits set (at offset 0x%" PRIx64 ")",
                          bm->name, pos);
        data = e & Q2_BME_OFFSET_MASK;
        if (!data && (e & Q2_BME_ALL_ONES))
            continue; /* all ones already */
        if (!data) {
            uint8_t *tw;
            rc = q2_rc_alloc(img, 1, &data);
            if (rc < 0)
                return rc;
            rc = q2_cache_new(&img->cache, data, Q2_PAGE_BITMAP, &page);
            if (rc < 0)
                return rc;
            rc = q2_cache_get_mut(&img->cache, &img->io, key, Q2_PAGE_L2,
                                  &tw);
            if (rc < 0)
                return rc;
            q2_store_be64(tw + (pos - key), data);
        } else if (data & (cs - 1) || data >= (uint64_t)img->file_size) {
            return q2_err(img, -QCOW2_ECORRUPT, "bitmap '%s': data cluster "
                          "0x%" PRIx64 " is invalid (at offset 0x%" PRIx64
                          ")", bm->name, data, pos);
        }
        rc = q2_cache_get_mut(&img->cache, &img->io, data, Q2_PAGE_BITMAP,
                              &page);
        if (rc < 0)
            return rc;
        lo = first > ci * bpc ? first - ci * bpc : 0;
        hi = last < (ci + 1) * bpc ? last - ci * bpc : bpc - 1;
        for (n = lo; n <= hi; n++) {
            if ((n & 7) == 0 && n + 8 <= hi + 1) {
                uint64_t bytes = (hi + 1 - n) / 8;
                memset(page + n / 8, 0xff, bytes);
                n += bytes * 8 - 1;
                continue;
            }
            page[n / 8] |= (uint8_t)(1u << (n & 7));
        }
    }
    return 0;
}

static int bitmaps_mark(struct qcow2_image *img, uint64_t off, uint64_t len)
{
    unsigned i;
    int rc;

    if (len == 0)
        return 0;
    for (i = 0; i < img->n_bitmaps; i++) {
        if (!img->bitmaps[i].tracked)
            continue;
        rc = bitmap_mark(img, &img->bitmaps[i], off, len);
        if (rc < 0)
            return rc;
    }
    return 0;
}

int q2_write_prepare(struct qcow2_image *img)
{
    const struct qcow2_header *h = &img->hp.h;

    img->writable = true;
    if (img->format != QCOW2_FORMAT_QCOW2)
        return 0;
    if ((h->incompatible_features & Q2_INCOMPAT_CORRUPT) &&
        !(img->opts.flags & QCOW2_OPEN_CHECK))
        return q2_err(img, -EACCES, "image is marked corrupt and cannot be "
                      "opened for writing (repair it first)");
    if (img->encrypted)
        return q2_err(img, -ENOTSUP, "writing encrypted images is not "
                      "supported");
    if (img->external_data)
        return q2_err(img, -ENOTSUP, "writing images with an external data "
                      "file is not supported");
    img->wbuf = q2_buf_alloc(img->cluster_size);
    if (!img->wbuf)
        return -ENOMEM;
    return 0;
}

int q2_write_begin(struct qcow2_image *img)
{
    struct qcow2_header *h = &img->hp.h;
    uint8_t b[8];
    int rc;

    if (img->format != QCOW2_FORMAT_QCOW2)
        return 0;
    img->cache.flush = flush_cb;
    img->cache.flush_ctx = img;
    if (h->autoclear_features & ~Q2_AUTOCLEAR_KNOWN) {
        /* the spec: clear unknown autoclear bits before the first write */
        h->autoclear_features &= Q2_AUTOCLEAR_KNOWN;
        q2_store_be64(b, h->autoclear_features);
        rc = q2_header_write(img, 88, b, 8);
        if (rc < 0)
            return rc;
    }
    if (img->opts.flags & QCOW2_OPEN_CHECK)
        return 0; /* repairs write no guest data: bitmaps stay as they are */
    return prepare_bitmaps(img);
}

/* ------------------------------------------------------------------------ */
/* L1 / L2 access for writing                                               */
/* ------------------------------------------------------------------------ */

static uint64_t l1_pos(const struct qcow2_image *img, uint64_t idx)
{
    return img->l1_offset + idx * 8;
}

static int l1_read(struct qcow2_image *img, uint64_t idx, uint64_t *out)
{
    uint64_t pos = l1_pos(img, idx), key = pos & ~(img->cluster_size - 1);
    const uint8_t *page;
    int rc = q2_cache_get(&img->cache, &img->io, key, &page);

    if (rc < 0)
        return rc;
    *out = q2_load_be64(page + (pos - key));
    return 0;
}

static int l1_write(struct qcow2_image *img, uint64_t idx, uint64_t v)
{
    uint64_t pos = l1_pos(img, idx), key = pos & ~(img->cluster_size - 1);
    uint8_t *page;
    int rc = q2_cache_get_mut(&img->cache, &img->io, key, Q2_PAGE_L1, &page);

    if (rc < 0)
        return rc;
    q2_store_be64(page + (pos - key), v);
    return 0;
}

/* The L2 table for l1 index idx, allocated or copied so that it can be
 * written (COPIED set in the L1 entry).  *l2_off receives its offset. */
bool q2_write_allocates(const struct qcow2_image *img, uint64_t e,
                        bool whole_zeros)
{
    /* whole clusters of zeros are an entry: the v3 zero flag, all-zero
     * subclusters, or (version 2 without a backing file) unallocated */
    if (whole_zeros && (img->extended_l2 || img->hp.h.version >= 3 ||
                        !img->backing))
        return false;
    /* a cluster of ours is written in place; a shared, compressed or
     * missing one is replaced by a new cluster */
    return (e & Q2_OFLAG_COMPRESSED) || !(e & Q2_L2E_OFFSET_MASK) ||
           !(e & Q2_OFLAG_COPIED);
}

bool q2_l2_write_allocates(uint64_t l1e)
{
    return !(l1e & Q2_L1E_OFFSET_MASK) || !(l1e & Q2_OFLAG_COPIED);
}

static int l2_for_write(struct qcow2_image *img, uint64_t idx,
                        uint64_t *l2_off)
{
    uint64_t e, old, neu;
    const uint8_t *src;
    uint8_t *dst;
    int rc;

    rc = l1_read(img, idx, &e);
    if (rc < 0)
        return rc;
    old = e & Q2_L1E_OFFSET_MASK;
    if (!q2_l2_write_allocates(e)) {
        *l2_off = old;
        return 0;
    }
    rc = q2_rc_alloc(img, 1, &neu);
    if (rc < 0)
        return rc;
    if (old) {
        /* shared with a snapshot: copy it (the data clusters it names are
         * already counted for both tables) */
        rc = q2_cache_get(&img->cache, &img->io, old, &src);
        if (rc < 0)
            return rc;
        memcpy(img->wbuf, src, img->cluster_size);
        rc = q2_cache_new(&img->cache, neu, Q2_PAGE_L2, &dst);
        if (rc < 0)
            return rc;
        memcpy(dst, img->wbuf, img->cluster_size);
        rc = q2_rc_free_later(img, old, img->cluster_size);
        if (rc < 0)
            return rc;
    } else {
        rc = q2_cache_new(&img->cache, neu, Q2_PAGE_L2, &dst);
        if (rc < 0)
            return rc;
    }
    rc = l1_write(img, idx, neu | Q2_OFLAG_COPIED);
    if (rc < 0)
        return rc;
    *l2_off = neu;
    return 0;
}

/* Read and write one L2 entry (and its bitmap with extended L2). */
static int l2_get(struct qcow2_image *img, uint64_t l2_off, unsigned i,
                  uint64_t *e, uint64_t *bm)
{
    const uint8_t *page;
    int rc = q2_cache_get(&img->cache, &img->io, l2_off, &page);

    if (rc < 0)
        return rc;
    *e = q2_load_be64(page + (size_t)i * img->l2_entry_len);
    *bm = img->extended_l2 ? q2_load_be64(page + (size_t)i * 16 + 8) : 0;
    return 0;
}

static int l2_set(struct qcow2_image *img, uint64_t l2_off, unsigned i,
                  uint64_t e, uint64_t bm)
{
    uint8_t *page;
    int rc = q2_cache_get_mut(&img->cache, &img->io, l2_off, Q2_PAGE_L2,
                              &page);

    if (rc < 0)
        return rc;
    q2_store_be64(page + (size_t)i * img->l2_entry_len, e);
    if (img->extended_l2)
        q2_store_be64(page + (size_t)i * 16 + 8, bm);
    return 0;
}

/* Release whatever host storage an L2 entry holds (after the barrier). */
static int free_entry_later(struct qcow2_image *img, uint64_t e)
{
    if (e & Q2_OFLAG_COMPRESSED) {
        uint64_t coff = e & img->coffset_mask;
        uint64_t nb = ((e >> img->csize_shift) & img->csize_mask) + 1;
        return q2_rc_free_later(img, coff & ~511ull, nb * 512);
    }
    if (e & Q2_L2E_OFFSET_MASK)
        return q2_rc_free_later(img, e & Q2_L2E_OFFSET_MASK,
                                img->cluster_size);
    return 0;
}

static int64_t data_pwrite(struct qcow2_image *img, const void *buf,
                           size_t len, uint64_t off)
{
    int64_t n = img->io.pwrite(img->io.ctx, buf, len, off);
    if (n < 0)
        return q2_fail(img, (int)n, "cannot write data");
    return n;
}

/* The current guest view of [off, off+len) (for copy on write). */
static int read_view(struct qcow2_image *img, uint8_t *buf, size_t len,
                     uint64_t off)
{
    int64_t n = qcow2_pread(img, buf, len, off);

    if (n < 0)
        return (int)n;
    if ((size_t)n < len)
        memset(buf + n, 0, len - (size_t)n);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* One cluster                                                              */
/* ------------------------------------------------------------------------ */

enum wmode { W_DATA, W_ZERO, W_DISCARD };

static int check_writable(struct qcow2_image *img, uint64_t off,
                          uint64_t len);

/*
 * Write into guest cluster `gc`, bytes [in, in+len) of it.  src: the data
 * (W_DATA), NULL for zeros.  Standard L2 entries.
 */
static int write_std(struct qcow2_image *img, uint64_t gc, uint64_t in,
                     uint64_t len, const uint8_t *src, enum wmode mode)
{
    uint64_t cs = img->cluster_size, goff = gc << img->cluster_bits;
    uint64_t l1_idx = gc >> img->l2_bits, l2_off, e, bm, host, neu;
    unsigned i = (unsigned)(gc & ((1ull << img->l2_bits) - 1));
    bool full = in == 0 && len == cs;
    bool v3 = img->hp.h.version >= 3;
    bool in_place;
    int rc;

    /* whole clusters of zeros or discards change only metadata */
    if (mode != W_DATA && full) {
        if (mode == W_DISCARD && !v3 && img->backing)
            return 0; /* QEMU ignores discards there */
        rc = l2_for_write(img, l1_idx, &l2_off);
        if (rc < 0)
            return rc;
        rc = l2_get(img, l2_off, i, &e, &bm);
        if (rc < 0)
            return rc;
        if (v3) {
            /* the zero flag; discarding without a backing file leaves the
             * cluster unallocated, which reads as zeros as well */
            uint64_t ne = (mode == W_DISCARD && !img->backing)
                              ? 0 : Q2_OFLAG_ZERO;
            if (e == ne)
                return 0;
            rc = l2_set(img, l2_off, i, ne, 0);
            if (rc < 0)
                return rc;
            return free_entry_later(img, e);
        }
        if (!img->backing) {
            if (e == 0)
                return 0;
            rc = l2_set(img, l2_off, i, 0, 0);
            if (rc < 0)
                return rc;
            return free_entry_later(img, e);
        }
        /* version 2 over a backing file: real zeros below */
    }
    if (mode == W_DISCARD)
        return 0; /* partial discards are ignored, as QEMU does */

    rc = l2_for_write(img, l1_idx, &l2_off);
    if (rc < 0)
        return rc;
    rc = l2_get(img, l2_off, i, &e, &bm);
    if (rc < 0)
        return rc;
    host = e & Q2_L2E_OFFSET_MASK;
    in_place = !q2_write_allocates(img, e, false);
    if (in_place && !(e & Q2_OFLAG_ZERO)) {
        /* our own cluster: overwrite in place */
        if (src) {
            if (data_pwrite(img, src, len, host + in) < 0)
                return img->write_err;
        } else {
            memset(img->wbuf, 0, len);
            if (data_pwrite(img, img->wbuf, len, host + in) < 0)
                return img->write_err;
        }
        return 0;
    }
    /* build the whole new cluster: old view, then the new bytes */
    if (!full) {
        if (e & Q2_OFLAG_ZERO)
            memset(img->wbuf, 0, cs);
        else if ((rc = read_view(img, img->wbuf, cs, goff)) < 0)
            return rc;
    }
    if (src)
        memcpy(img->wbuf + in, src, len);
    else
        memset(img->wbuf + in, 0, len);
    if (in_place) {
        /* a preallocated zero cluster of ours: reuse it */
        neu = host;
    } else {
        rc = q2_rc_alloc(img, 1, &neu);
        if (rc < 0)
            return rc;
    }
    if (data_pwrite(img, img->wbuf, cs, neu) < 0)
        return img->write_err;
    rc = l2_set(img, l2_off, i, neu | Q2_OFLAG_COPIED, 0);
    if (rc < 0)
        return rc;
    return in_place ? 0 : free_entry_later(img, e);
}

/*
 * Extended L2: the same, subcluster by subcluster.  A cluster that is not
 * ours (unallocated, compressed, shared) first gets a cluster of its own
 * holding what it held; then the touched subclusters are written in place,
 * partial ones completed from the current view.
 */
static int write_ext(struct qcow2_image *img, uint64_t gc, uint64_t in,
                     uint64_t len, const uint8_t *src, enum wmode mode)
{
    uint64_t cs = img->cluster_size, sc = cs >> 5;
    uint64_t goff = gc << img->cluster_bits;
    uint64_t l1_idx = gc >> img->l2_bits, l2_off, e, bm, host, neu, pos;
    unsigned i = (unsigned)(gc & ((1ull << img->l2_bits) - 1));
    uint32_t alloc, zero;
    int rc;

    if (mode == W_DISCARD && !(in == 0 && len == cs))
        return 0;
    rc = l2_for_write(img, l1_idx, &l2_off);
    if (rc < 0)
        return rc;
    rc = l2_get(img, l2_off, i, &e, &bm);
    if (rc < 0)
        return rc;
    host = e & Q2_L2E_OFFSET_MASK;

    if (mode != W_DATA && in == 0 && len == cs) {
        /* whole cluster: all subclusters zero (or unallocated when
         * discarding without a backing file), host released */
        uint64_t nbm = (mode == W_DISCARD && !img->backing)
                           ? 0 : 0xffffffff00000000ull;
        if (e == 0 && bm == nbm)
            return 0;
        rc = l2_set(img, l2_off, i, 0, nbm);
        if (rc < 0)
            return rc;
        return free_entry_later(img, e);
    }

    if (q2_write_allocates(img, e, false)) {
        /* give the cluster a host cluster of its own */
        uint32_t keep_zero = (uint32_t)(bm >> 32);
        uint32_t keep_alloc = (uint32_t)bm;
        rc = q2_rc_alloc(img, 1, &neu);
        if (rc < 0)
            return rc;
        if (e & Q2_OFLAG_COMPRESSED) {
            if ((rc = read_view(img, img->wbuf, cs, goff)) < 0)
                return rc;
            keep_alloc = 0xffffffffu;
            keep_zero = 0;
        } else if (host) {
            int64_t n = q2_pread_full(&img->io, img->wbuf, cs, host);
            if (n < 0)
                return q2_fail(img, (int)n, "cannot read a shared cluster");
        } else {
            memset(img->wbuf, 0, cs);
        }
        if (data_pwrite(img, img->wbuf, cs, neu) < 0)
            return img->write_err;
        bm = (uint64_t)keep_zero << 32 | keep_alloc;
        rc = l2_set(img, l2_off, i, neu | Q2_OFLAG_COPIED, bm);
        if (rc < 0)
            return rc;
        rc = free_entry_later(img, e);
        if (rc < 0)
            return rc;
        host = neu;
    }

    alloc = (uint32_t)bm;
    zero = (uint32_t)(bm >> 32);
    for (pos = in; pos < in + len;) {
        unsigned s = (unsigned)(pos / sc);
        uint64_t s_start = (uint64_t)s * sc, s_end = s_start + sc;
        uint64_t a = pos, b = in + len < s_end ? in + len : s_end;
        bool whole = a == s_start && b == s_end;

        if (mode != W_DATA && whole) {
            zero |= 1u << s;
            alloc &= ~(1u << s);
        } else {
            const uint8_t *data = src ? src + (a - in) : NULL;
            if (!(alloc >> s & 1) && !whole) {
                /* complete the subcluster from the current view */
                if (zero >> s & 1)
                    memset(img->wbuf, 0, sc);
                else if ((rc = read_view(img, img->wbuf, sc,
                                         goff + s_start)) < 0)
                    return rc;
                if (data)
                    memcpy(img->wbuf + (a - s_start), data, b - a);
                else
                    memset(img->wbuf + (a - s_start), 0, b - a);
                if (data_pwrite(img, img->wbuf, sc, host + s_start) < 0)
                    return img->write_err;
            } else if (data) {
                if (data_pwrite(img, data, b - a, host + a) < 0)
                    return img->write_err;
            } else {
                memset(img->wbuf, 0, b - a);
                if (data_pwrite(img, img->wbuf, b - a, host + a) < 0)
                    return img->write_err;
            }
            alloc |= 1u << s;
            zero &= ~(1u << s);
        }
        pos = b;
    }
    return l2_set(img, l2_off, i, host | Q2_OFLAG_COPIED,
                  (uint64_t)zero << 32 | alloc);
}

/* ------------------------------------------------------------------------ */
/* Clone: whole clusters shared with another file                          */
/* ------------------------------------------------------------------------ */

/* Fill [host, host+len) of img with [src_off, src_off+len) of src through
 * the handle's cluster buffer (past the source's end: zeros). */
static int clone_by_hand(struct qcow2_image *img, struct qcow2_io *src,
                         uint64_t src_off, uint64_t host, uint64_t len)
{
    uint64_t cs = img->cluster_size, done = 0;

    while (done < len) {
        size_t k = (size_t)(len - done < cs ? len - done : cs);
        int64_t got = q2_pread_full(src, img->wbuf, k, src_off + done);
        if (got < 0)
            return q2_fail(img, (int)got, "cannot read the data to copy");
        if ((size_t)got < k)
            memset(img->wbuf + got, 0, k - (size_t)got);
        if (data_pwrite(img, img->wbuf, k, host + done) < 0)
            return img->write_err;
        done += k;
    }
    return 0;
}

int q2_clone_run(struct qcow2_image *img, const struct q2_clone_piece *p,
                 size_t n, uint64_t *shared, bool *cannot)
{
    uint64_t cs = img->cluster_size, total = 0, host, done = 0, pos;
    struct qcow2_io *src;
    size_t k;
    int rc;

    *shared = 0;
    *cannot = false;
    if (n == 0)
        return 0;
    for (k = 0; k < n; k++) {
        if (p[k].layer != p[0].layer || p[k].len == 0 || p[k].len % cs ||
            p[k].guest % cs || p[k].src_off != p[0].src_off + total)
            return -EINVAL;
        rc = check_writable(img, p[k].guest, p[k].len);
        if (rc < 0)
            return rc;
        total += p[k].len;
    }
    if (img->format != QCOW2_FORMAT_QCOW2 || img->external_data)
        return -EINVAL;
    if ((rc = q2_data_io(p[0].layer, &src)) < 0)
        return rc;
    for (k = 0; k < n; k++) {
        rc = bitmaps_mark(img, p[k].guest, p[k].len);
        if (rc < 0)
            goto fail;
    }
    rc = q2_rc_alloc(img, total >> img->cluster_bits, &host);
    if (rc < 0)
        goto fail;

    /* the data, before any entry names it */
    while (img->io.copy_range && done < total) {
        int64_t got = img->io.copy_range(img->io.ctx, src,
                                         p[0].src_off + done, host + done,
                                         (size_t)(total - done));
        if (got == -ENOTSUP)
            *cannot = true;
        if (got == -EAGAIN || got == -ENOTSUP || got == 0)
            break; /* by hand from here (got 0: the source ended) */
        if (got < 0) {
            rc = q2_fail(img, (int)got, "cannot copy data into the image");
            goto fail;
        }
        done += (uint64_t)got;
    }
    *shared = done;
    if (done == 0) {
        /* nothing shared: give the run back (nothing names it, nothing
         * was written); the caller writes the pieces as any data, in
         * place where the image has clusters of its own */
        uint64_t c0 = host >> img->cluster_bits;
        for (k = 0; k < total >> img->cluster_bits; k++)
            if ((rc = q2_rc_update(img, c0 + k, -1)) < 0)
                goto fail;
        return 0;
    }
    if (done < total &&
        (rc = clone_by_hand(img, src, p[0].src_off + done, host + done,
                            total - done)) < 0)
        goto fail;

    /* then the entries */
    pos = host;
    for (k = 0; k < n; k++) {
        uint64_t g;
        for (g = p[k].guest; g < p[k].guest + p[k].len; g += cs, pos += cs) {
            uint64_t gc = g >> img->cluster_bits, l2_off, e, bm;
            unsigned i = (unsigned)(gc & ((1ull << img->l2_bits) - 1));
            if ((rc = l2_for_write(img, gc >> img->l2_bits, &l2_off)) < 0 ||
                (rc = l2_get(img, l2_off, i, &e, &bm)) < 0 ||
                (rc = l2_set(img, l2_off, i, pos | Q2_OFLAG_COPIED,
                             img->extended_l2 ? 0xffffffffull : 0)) < 0 ||
                (rc = free_entry_later(img, e)) < 0)
                goto fail;
        }
    }
    if (img->n_pending > MAX_PENDING_FREES && (rc = q2_flush(img)) < 0)
        return rc;
    return 0;
fail:
    if (!img->write_err)
        img->write_err = rc;
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Public entry points                                                      */
/* ------------------------------------------------------------------------ */

static int check_writable(struct qcow2_image *img, uint64_t off, uint64_t len)
{
    if (!img || img->magic != Q2_HANDLE_MAGIC || img->state != Q2_STATE_OPEN)
        return -EINVAL;
    q2_err_clear(img);
    if (!img->writable)
        return q2_err(img, -EROFS, "image is open read-only");
    if (img->write_err)
        return q2_err(img, img->write_err, "an earlier write failed (%s); "
                      "the image refuses further writes",
                      qcow2_strerror(img->write_err));
    if (off > img->virtual_size || len > img->virtual_size - off)
        return q2_err(img, -EINVAL, "range 0x%" PRIx64 "+%" PRIu64 " is "
                      "beyond the virtual size", off, len);
    return 0;
}

static int do_write(struct qcow2_image *img, const uint8_t *src,
                    uint64_t off, uint64_t len, enum wmode mode)
{
    uint64_t cs = img->cluster_size;
    int rc = check_writable(img, off, len);

    if (rc < 0)
        return rc;
    if (img->format == QCOW2_FORMAT_RAW) {
        int64_t n;
        if (mode == W_DISCARD)
            return 0;
        if (src) {
            n = img->io.pwrite(img->io.ctx, src, len, off);
            return n < 0 ? q2_fail(img, (int)n, "cannot write data") : 0;
        }
        /* zeros: a hole where the file system makes one (none needed
         * where there is one already: a punch costs a journal update) */
        if (img->io.punch) {
            int64_t fsz = img->io.size(img->io.ctx);
            uint64_t in, pnum = 0; /* bytes of the range inside the file */
            if (fsz < 0)
                return q2_fail(img, (int)fsz, "cannot get the file size");
            in = off >= (uint64_t)fsz ? 0
                 : len < (uint64_t)fsz - off ? len : (uint64_t)fsz - off;
            if (in && img->io.block_status &&
                img->io.block_status(img->io.ctx, off, in, &pnum) == 0 &&
                pnum >= in)
                in = 0; /* a hole already */
            rc = in ? img->io.punch(img->io.ctx, off, len) : 0;
            if (rc == 0 && off + len > (uint64_t)fsz && !q2_fixed_size(img))
                rc = img->io.truncate(img->io.ctx, off + len);
            if (rc == 0)
                return 0;
            if (rc != -ENOTSUP)
                return q2_fail(img, rc, "cannot punch a hole");
        }
        /* else written in bounded chunks */
        while (len) {
            static const uint8_t zeros[65536];
            size_t k = len < sizeof(zeros) ? (size_t)len : sizeof(zeros);
            n = img->io.pwrite(img->io.ctx, zeros, k, off);
            if (n < 0)
                return q2_fail(img, (int)n, "cannot write zeros");
            off += k;
            len -= k;
        }
        return 0;
    }
    rc = bitmaps_mark(img, off, len);
    if (rc < 0) {
        if (!img->write_err)
            img->write_err = rc;
        return rc;
    }
    while (len) {
        uint64_t gc = off >> img->cluster_bits, in = off & (cs - 1);
        uint64_t n = cs - in < len ? cs - in : len;
        rc = img->extended_l2 ? write_ext(img, gc, in, n, src, mode)
                              : write_std(img, gc, in, n, src, mode);
        if (rc < 0) {
            if (!img->write_err)
                img->write_err = rc;
            return rc;
        }
        if (img->n_pending > MAX_PENDING_FREES &&
            (rc = q2_flush(img)) < 0)
            return rc;
        if (src)
            src += n;
        off += n;
        len -= n;
    }
    return 0;
}

int64_t qcow2_pwrite(struct qcow2_image *img, const void *buf, size_t len,
                     uint64_t off)
{
    int rc;

    if (!buf && len)
        return -EINVAL;
    rc = do_write(img, buf, off, len, W_DATA);
    return rc < 0 ? rc : (int64_t)len;
}

int qcow2_pwrite_zeroes(struct qcow2_image *img, uint64_t off, uint64_t len)
{
    return do_write(img, NULL, off, len, W_ZERO);
}

int qcow2_discard(struct qcow2_image *img, uint64_t off, uint64_t len)
{
    return do_write(img, NULL, off, len, W_DISCARD);
}

int qcow2_flush(struct qcow2_image *img)
{
    int rc;

    if (!img || img->magic != Q2_HANDLE_MAGIC || img->state != Q2_STATE_OPEN)
        return -EINVAL;
    q2_err_clear(img);
    if (!img->writable)
        return 0;
    rc = q2_flush(img);
    /* the first flush applied deferred decrements: write them too */
    if (rc == 0 && img->format == QCOW2_FORMAT_QCOW2 &&
        q2_cache_dirty(&img->cache))
        rc = q2_flush(img);
    return rc;
}

/* Grow the L1 table to `entries` (QEMU's qcow2_grow_l1_table): write a new
 * table, switch the header to it with one synced write, free the old. */
static int grow_l1(struct qcow2_image *img, uint64_t entries)
{
    uint64_t cs = img->cluster_size, bytes = entries * 8, old_bytes, neu, k;
    uint64_t old_off = img->l1_offset, old_size = img->l1_size;
    uint64_t clusters = (bytes + cs - 1) / cs;
    uint8_t hdr[12], *buf;
    int64_t n;
    int rc;

    if (bytes > Q2_MAX_L1_BYTES)
        return q2_err(img, -EFBIG, "the L1 table would exceed QEMU's limit "
                      "of 32 MiB");
    rc = q2_flush(img); /* the old table is all on disk */
    if (rc < 0)
        return rc;
    rc = q2_rc_alloc(img, clusters, &neu);
    if (rc < 0)
        return rc;
    rc = q2_flush(img); /* the new table's refcounts first */
    if (rc < 0)
        return rc;
    buf = calloc(1, clusters * cs);
    if (!buf)
        return -ENOMEM;
    old_bytes = old_size * 8;
    if (old_bytes && (n = q2_pread_full(&img->io, buf, old_bytes,
                                        old_off)) < 0) {
        free(buf);
        return q2_fail(img, (int)n, "cannot read the L1 table");
    }
    n = img->io.pwrite(img->io.ctx, buf, clusters * cs, neu);
    free(buf);
    if (n < 0)
        return q2_fail(img, (int)n, "cannot write the L1 table");
    if ((rc = img->io.flush(img->io.ctx)) < 0)
        return q2_fail(img, rc, "cannot flush the image");
    q2_store_be32(hdr, (uint32_t)entries);
    q2_store_be64(hdr + 4, neu);
    rc = q2_header_write(img, 36, hdr, sizeof(hdr));
    if (rc < 0)
        return rc;
    for (k = 0; k * cs < old_bytes; k++)
        q2_cache_drop(&img->cache, (old_off & ~(cs - 1)) + k * cs);
    img->l1_offset = img->hp.h.l1_table_offset = neu;
    img->l1_size = img->hp.h.l1_size = (uint32_t)entries;
    if (old_bytes)
        rc = q2_rc_free_later(img, old_off, old_bytes);
    return rc;
}

/* The crash-safe switch of the snapshot table, in QEMU's order
 * (qcow2_write_snapshots): the new clusters' refcounts durable, the new
 * table written and flushed, nb_snapshots and snapshots_offset switched
 * with one synced write, then the old table's clusters released (after the
 * next barrier).  A crash leaves the old table in use and at worst the new
 * clusters leaked. */
int q2_snap_table_switch(struct qcow2_image *img, const uint8_t *buf,
                         uint64_t len, uint32_t count, uint64_t old_len)
{
    uint64_t cs = img->cluster_size, neu = 0, old = img->hp.h.snapshots_offset;
    uint64_t clusters = (len + cs - 1) / cs, k;
    uint8_t hdr[12], *page;
    int64_t n;
    int rc;

    if ((rc = q2_flush(img)) < 0)
        return rc;
    if (clusters && (rc = q2_rc_alloc(img, clusters, &neu)) < 0)
        return rc;
    if ((rc = q2_flush(img)) < 0) /* the new refcounts first */
        return rc;
    if (clusters) {
        /* whole clusters: the tail of the last one zeroed */
        page = calloc(1, clusters * cs);
        if (!page)
            return -ENOMEM;
        memcpy(page, buf, len);
        n = img->io.pwrite(img->io.ctx, page, clusters * cs, neu);
        free(page);
        if (n < 0)
            return q2_fail(img, (int)n, "cannot write the snapshot table");
        if ((rc = img->io.flush(img->io.ctx)) < 0)
            return q2_fail(img, rc, "cannot flush the image");
    }
    q2_store_be32(hdr, count);
    q2_store_be64(hdr + 4, neu);
    if ((rc = q2_header_write(img, 60, hdr, sizeof(hdr))) < 0)
        return rc;
    for (k = 0; k * cs < old_len; k++)
        q2_cache_drop(&img->cache, (old & ~(cs - 1)) + k * cs);
    img->hp.h.nb_snapshots = count;
    img->hp.h.snapshots_offset = neu;
    if (old_len && (rc = q2_rc_free_later(img, old, old_len)) < 0)
        return rc;
    /* twice: the second writes the decrements the first released */
    if ((rc = q2_flush(img)) < 0)
        return rc;
    return q2_flush(img);
}

int q2_resize(struct qcow2_image *img, uint64_t size)
{
    uint64_t old, need, bytes_per_l2, back, vs = size & ~511ull;
    uint8_t b[8];
    int rc = check_writable(img, 0, 0);

    if (rc < 0)
        return rc;
    old = img->virtual_size;
    if (vs < old)
        return q2_err(img, -ENOTSUP, "shrinking images is not supported");
    if (img->n_bitmaps && vs != old)
        return q2_err(img, -ENOTSUP, "cannot resize an image with persistent "
                      "bitmaps (QEMU refuses it too)");
    if (size > INT64_MAX)
        return q2_err(img, -EFBIG, "size %" PRIu64 " is too large", size);
    if (img->format == QCOW2_FORMAT_RAW && q2_fixed_size(img)) {
        /* a device is as large as it is: its virtual size already */
        if (size > (uint64_t)img->file_size)
            return q2_err(img, -ENOSPC, "the device is %" PRId64 " bytes; "
                          "%" PRIu64 " bytes are needed (a device cannot "
                          "grow: extend the volume)", img->file_size, size);
        return 0;
    }
    if (img->format == QCOW2_FORMAT_RAW) {
        rc = img->io.truncate(img->io.ctx, size);
        if (rc < 0)
            return q2_fail(img, rc, "cannot grow the file");
        img->virtual_size = (size + 511) & ~511ull;
        return 0;
    }
    if (size == img->hp.h.size)
        return 0;
    bytes_per_l2 = 1ull << (img->cluster_bits + img->l2_bits);
    need = size / bytes_per_l2 + (size % bytes_per_l2 != 0);
    if (need > img->l1_size && (rc = grow_l1(img, need)) < 0)
        return rc;
    /* QEMU: data a larger backing file holds past the old end must not
     * show through the new range; the zeros that hide it are durable
     * before the size that would expose it */
    back = img->backing ? img->backing->virtual_size : 0;
    if (back > old && vs > old) {
        img->virtual_size = vs;
        rc = qcow2_pwrite_zeroes(img, old, (back < vs ? back : vs) - old);
        if (rc == 0)
            rc = q2_flush(img);
        if (rc < 0) {
            img->virtual_size = old;
            return rc;
        }
    }
    q2_store_be64(b, size);
    rc = q2_header_write(img, 24, b, 8);
    if (rc < 0) {
        img->virtual_size = old;
        return rc;
    }
    img->hp.h.size = size;
    img->virtual_size = vs;
    return 0;
}

int qcow2_resize(struct qcow2_image *img, uint64_t size)
{
    if (!img || img->magic != Q2_HANDLE_MAGIC || img->state != Q2_STATE_OPEN)
        return -EINVAL;
    if (size & 511)
        return q2_err(img, -EINVAL, "size %" PRIu64 " is not a multiple of "
                      "512 bytes", size);
    return q2_resize(img, size);
}
