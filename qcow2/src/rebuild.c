/*
 * rebuild.c - rebuild the refcount structures of an image from the
 * references its metadata makes (QEMU's rebuild_refcount_structure).
 *
 * Needed before writing an image whose dirty bit is set: with lazy
 * refcounts QEMU postpones refcount updates, and a QEMU that dies leaves
 * refcounts lower than the references.  Steps:
 *
 *   1. count references, one per cluster touched, into an array of the
 *      file's size in clusters: the header; the active L1 table, its L2
 *      tables and their data (standard, zero-allocated and compressed
 *      clusters); the snapshot table and, per snapshot, its L1, L2 and
 *      data; the bitmap directory, tables and data; the LUKS header;
 *   2. past everything in use, write refcount blocks covering the whole
 *      file and the new structures themselves, then the new table; fsync;
 *   3. switch the header to the new table with one synced write;
 *   4. clear the dirty bit with one synced write.
 *
 * Crash safety: until step 3 the old structures and the dirty bit stay in
 * place (a crash means a rebuild next time); between 3 and 4 the new
 * structures are complete and the dirty bit still asks for a rebuild.
 * The old table and blocks end up unreferenced (refcount 0: free space).
 *
 * Any reference that is invalid (unaligned, past the end of the file) is
 * corruption: nothing is written and the caller refuses the image.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "endian.h"
#include "format.h"
#include "internal.h"

#define MAX_REBUILD_CLUSTERS (1ull << 28) /* 1 GiB of counters */

struct counts {
    uint32_t *n;
    uint64_t clusters;
};

static int ref(struct qcow2_image *img, struct counts *c, uint64_t off,
               uint64_t len, const char *what)
{
    uint64_t first = off >> img->cluster_bits, last, i;

    if (len == 0)
        return 0;
    last = (off + len - 1) >> img->cluster_bits;
    if (last >= c->clusters)
        return q2_err(img, -QCOW2_ECORRUPT, "%s at 0x%" PRIx64 " lies past "
                      "the end of the file", what, off);
    for (i = first; i <= last; i++)
        if (c->n[i] != UINT32_MAX)
            c->n[i]++;
    return 0;
}

/* An L1 table and everything it reaches. */
static int walk_l1(struct qcow2_image *img, struct counts *c, uint64_t l1_off,
                   uint32_t l1_size)
{
    uint64_t cs = img->cluster_size, i;
    unsigned entries = 1u << img->l2_bits, k;
    uint8_t *l2 = malloc(cs), *l1 = malloc(cs);
    int rc = 0;

    if (!l2 || !l1) {
        free(l1);
        free(l2);
        return -ENOMEM;
    }
    if (l1_size && (rc = ref(img, c, l1_off, (uint64_t)l1_size * 8,
                             "L1 table")) < 0)
        goto out;
    for (i = 0; i < l1_size; i++) {
        uint64_t e1, l2_off, per = cs / 8;
        int64_t n;
        if (i % per == 0) {
            uint64_t left = (l1_size - i) * 8;
            n = q2_pread_full(&img->io, l1, left < cs ? left : cs,
                              l1_off + i * 8);
            if (n < 0) {
                rc = (int)n;
                goto out;
            }
        }
        e1 = q2_load_be64(l1 + (i % per) * 8);
        l2_off = e1 & Q2_L1E_OFFSET_MASK;
        if (!l2_off)
            continue;
        if (l2_off & (cs - 1)) {
            rc = q2_err(img, -QCOW2_ECORRUPT, "L2 table offset 0x%" PRIx64
                        " is not cluster aligned", l2_off);
            goto out;
        }
        if ((rc = ref(img, c, l2_off, cs, "L2 table")) < 0)
            goto out;
        n = q2_pread_full(&img->io, l2, cs, l2_off);
        if (n < 0) {
            rc = (int)n;
            goto out;
        }
        for (k = 0; k < entries; k++) {
            uint64_t e = q2_load_be64(l2 + (size_t)k * img->l2_entry_len);
            if (e & Q2_OFLAG_COMPRESSED) {
                uint64_t coff = e & img->coffset_mask;
                uint64_t nb = ((e >> img->csize_shift) & img->csize_mask) + 1;
                rc = ref(img, c, coff & ~511ull, nb * 512,
                         "compressed cluster");
            } else if ((e & Q2_L2E_OFFSET_MASK) && !img->external_data) {
                uint64_t host = e & Q2_L2E_OFFSET_MASK;
                if (host & (cs - 1))
                    rc = q2_err(img, -QCOW2_ECORRUPT, "data cluster offset "
                                "0x%" PRIx64 " is not cluster aligned", host);
                else
                    rc = ref(img, c, host, cs, "data cluster");
            }
            if (rc < 0)
                goto out;
        }
    }
out:
    free(l1);
    free(l2);
    return rc;
}

static int count_refs(struct qcow2_image *img, struct counts *c)
{
    const struct qcow2_header *h = &img->hp.h;
    uint64_t cs = img->cluster_size;
    unsigned i;
    int rc;

    if ((rc = ref(img, c, 0, cs, "header")) < 0)
        return rc;
    if ((rc = walk_l1(img, c, h->l1_table_offset, h->l1_size)) < 0)
        return rc;
    if (img->n_snaps) {
        if ((rc = ref(img, c, h->snapshots_offset,
                      q2_snap_table_len(img->snaps, img->n_snaps,
                                        h->snapshots_offset),
                      "snapshot table")) < 0)
            return rc;
        for (i = 0; i < img->n_snaps; i++) {
            const struct qcow2_snapshot *s = &img->snaps[i].pub;
            if (s->l1_table_offset & (cs - 1))
                return q2_err(img, -QCOW2_ECORRUPT, "snapshot %s: L1 table "
                              "is not cluster aligned", s->id);
            if ((rc = walk_l1(img, c, s->l1_table_offset, s->l1_size)) < 0)
                return rc;
        }
    }
    if (img->hp.ext_bitmaps >= 0 &&
        (h->autoclear_features & Q2_AUTOCLEAR_BITMAPS)) {
        const struct q2_ext *e = &img->hp.exts[img->hp.ext_bitmaps];
        uint8_t b[8];
        if ((rc = ref(img, c, q2_load_be64(e->data + 16),
                      q2_load_be64(e->data + 8), "bitmap directory")) < 0)
            return rc;
        for (i = 0; i < img->n_bitmaps; i++) {
            const struct qcow2_bitmap *bm = &img->bitmaps[i].pub;
            uint32_t k;
            if ((rc = ref(img, c, bm->table_offset,
                          (uint64_t)bm->table_size * 8, "bitmap table")) < 0)
                return rc;
            for (k = 0; k < bm->table_size; k++) {
                int64_t n = q2_pread_full(&img->io, b, 8,
                                          bm->table_offset + k * 8ull);
                uint64_t data;
                if (n < 0)
                    return (int)n;
                data = q2_load_be64(b) & 0x00fffffffffffe00ULL;
                if (data && (rc = ref(img, c, data, cs,
                                      "bitmap data cluster")) < 0)
                    return rc;
            }
        }
    }
    if (img->hp.ext_crypto >= 0) {
        const struct q2_ext *e = &img->hp.exts[img->hp.ext_crypto];
        if ((rc = ref(img, c, q2_load_be64(e->data), q2_load_be64(e->data + 8),
                      "encryption header")) < 0)
            return rc;
    }
    return 0;
}

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
    for (;;) {
        uint64_t nb2, m2;
        end = start + nb + m;
        nb2 = (end + rbe - 1) / rbe;
        m2 = (nb2 * 8 + cs - 1) / cs;
        if (nb2 == nb && m2 == m)
            break;
        nb = nb2;
        m = m2;
    }
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

int q2_rebuild_refcounts(struct qcow2_image *img)
{
    uint64_t cs = img->cluster_size;
    struct counts c = {0};
    int rc;

    c.clusters = ((uint64_t)img->file_size + cs - 1) >> img->cluster_bits;
    if (c.clusters > MAX_REBUILD_CLUSTERS)
        return q2_err(img, -ENOMEM, "image too large to rebuild its "
                      "refcounts");
    c.n = calloc(c.clusters ? c.clusters : 1, sizeof(*c.n));
    if (!c.n)
        return -ENOMEM;
    rc = count_refs(img, &c);
    if (rc == 0)
        rc = q2_rebuild_from_counts(img, c.n, c.clusters);
    else if (!img->err_set)
        q2_err(img, rc, "cannot rebuild the refcounts: %s",
               qcow2_strerror(rc));
    free(c.n);
    return rc;
}

int qcow2_rebuild_refcounts(struct qcow2_image *img)
{
    int rc;

    if (!img || img->magic != Q2_HANDLE_MAGIC || img->state != Q2_STATE_OPEN)
        return -EINVAL;
    q2_err_clear(img);
    if (!img->writable)
        return q2_err(img, -EROFS, "image is open read-only");
    if (img->format != QCOW2_FORMAT_QCOW2)
        return 0;
    /* everything written, frees applied (twice: the second flush writes
     * the decrements the first released); the writer's state, enabled
     * bitmaps in use among it, stays as it is: the handle goes on */
    rc = q2_flush(img);
    if (rc == 0)
        rc = q2_flush(img);
    if (rc < 0)
        return rc;
    return q2_rebuild_refcounts(img);
}

/*
 * Compare every stored refcount with the references the metadata makes,
 * the refcount table and blocks included: a refcount below its references
 * is a corruption, above them a leak (qemu-img check's classification).
 * Clusters past the end of the file with a refcount are leaks too.
 */
int q2_check_refcounts(struct qcow2_image *img, uint64_t *corruptions,
                       uint64_t *leaks)
{
    const struct qcow2_header *h = &img->hp.h;
    uint64_t cs = img->cluster_size, i, rt_entries, v;
    struct counts c = {0};
    uint8_t b[8];
    int rc;

    *corruptions = *leaks = 0;
    if (img->format != QCOW2_FORMAT_QCOW2)
        return 0;
    c.clusters = ((uint64_t)img->file_size + cs - 1) >> img->cluster_bits;
    if (c.clusters > MAX_REBUILD_CLUSTERS)
        return -ENOMEM;
    c.n = calloc(c.clusters ? c.clusters : 1, sizeof(*c.n));
    if (!c.n)
        return -ENOMEM;
    rc = count_refs(img, &c);
    if (rc < 0)
        goto out;
    rc = ref(img, &c, h->refcount_table_offset,
             (uint64_t)h->refcount_table_clusters << img->cluster_bits,
             "refcount table");
    if (rc < 0)
        goto out;
    rt_entries = ((uint64_t)h->refcount_table_clusters << img->cluster_bits) / 8;
    for (i = 0; i < rt_entries; i++) {
        int64_t n = q2_pread_full(&img->io, b, 8,
                                  h->refcount_table_offset + i * 8);
        uint64_t off;
        if (n < 0) {
            rc = (int)n;
            goto out;
        }
        off = q2_load_be64(b) & Q2_REFT_OFFSET_MASK;
        if (off && (rc = ref(img, &c, off, cs, "refcount block")) < 0)
            goto out;
    }
    for (i = 0; i < c.clusters; i++) {
        rc = q2_refcount_get(img, i, &v);
        if (rc < 0)
            goto out;
        if (v < c.n[i])
            (*corruptions)++;
        else if (v > c.n[i])
            (*leaks)++;
    }
out:
    free(c.n);
    return rc;
}
