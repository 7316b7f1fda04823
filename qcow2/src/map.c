/*
 * map.c - guest offset -> extent: decode L1/L2 entries into runs that have
 * one answer to "who serves these bytes?".
 *
 * Mapping (cluster_size = 1 << cluster_bits, l2_entries = 1 << l2_bits):
 *   cluster  = guest_offset >> cluster_bits
 *   l1_index = cluster >> l2_bits,  l2_index = cluster & (l2_entries - 1)
 *
 *   L1 entry:  bit 63 COPIED | bits 9-55 L2 table offset | rest reserved
 *   L2 entry (standard, 64 bits):
 *     bit 63 COPIED, bit 62 COMPRESSED,
 *     standard:   bits 9-55 host offset, bit 0 zero flag (v3 only)
 *     compressed: bits 0..x-1 byte offset, x..61 extra 512-byte sectors,
 *                 x = 62 - (cluster_bits - 8)
 *   extended L2 (128 bits): the standard entry without the zero flag, then
 *     a bitmap: bit i = subcluster i allocated, bit 32+i = reads as zero.
 *
 * One call decodes one L2 table at most: it reads the table once (through
 * the cache) and walks its entries forward while they continue the same
 * run (same kind, contiguous host offsets), so a whole-image walk costs one
 * table read per L2 table.  Nothing here allocates.
 *
 * Invariants of a returned extent: length > 0; start + length <= virtual
 * size; a DATA extent's host offset is cluster-aligned (plus the offset into
 * the cluster) and starts inside the host file; a COMPRESSED extent's data
 * starts inside the file and its csize <= 2 clusters.
 *
 * The chain walk (qcow2_map with QCOW2_MAP_CHAIN) follows QEMU's
 * bdrv_block_status / qemu-img map rules, so `qchain-map --output=json`
 * reproduces `qemu-img map --output=json`: a range that no layer allocates
 * resolves at the bottom layer as an unallocated zero, a range beyond the
 * end of a shorter backing file resolves as zero at the layer above it, and
 * with QCOW2_MAP_HOLES holes in the host file read as zeros (for raw
 * layers always, for qcow2 data clusters when QEMU's metadata
 * preallocation heuristic says so).
 *
 * Salvage mode (img->salvage, set by qcow2_set_salvage in read.c): where
 * an error would end the call, the damaged range comes back as an extent
 * of kind ZERO flagged QCOW2_EXTENT_UNREADABLE, with a constant reason in
 * img->salvage_why: the whole rest of the L2 table's span for an unusable
 * L1 entry or L2 table (one extent, so a huge image with no usable tables
 * is walked at one call per table), runs of units with the same reason
 * for bad L2 entries, and data extents end at the end of the file (the
 * rest reads as "past the end").  The whole-table q2_l1_check is skipped;
 * only its duplicate rule is kept (l1_dups), to keep work bounded.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "endian.h"
#include "format.h"
#include "internal.h"

/* One decoded allocation unit (a cluster, or a subcluster). */
struct unit {
    enum qcow2_kind kind;
    bool has_offset;
    uint64_t host;   /* host offset of the unit's first byte */
    uint64_t coff;   /* compressed: byte offset */
    uint32_t csize;  /* compressed: bytes */
    const char *bad; /* salvage mode: why the unit cannot be used */
};

/* Reasons for salvaged ranges (constants: callers merge equal ones). */
#define WHY_L1_READ "L1 table cannot be read"
#define WHY_L1_RESERVED "L1 entry has reserved bits set"
#define WHY_L2_ALIGN "L2 table offset is not cluster aligned"
#define WHY_L2_EOF "L2 table past the end of the file"
#define WHY_L2_READ "L2 table cannot be read"
#define WHY_L2_DUP "L2 table named by an earlier L1 entry too"
#define WHY_L2_ENTRY "invalid L2 entry"
#define WHY_DATA_ALIGN "data cluster offset is not cluster aligned"
#define WHY_DATA_EOF "data cluster past the end of the file"
#define WHY_COMP_EOF "compressed cluster past the end of the file"

/* A unit of damaged metadata: in salvage mode it reads as zeros (kind
 * ZERO, bad set); otherwise the caller's error stands. */
#define SALVAGE_OR(img, u, why, err) \
    ((img)->salvage ? ((u)->kind = QCOW2_KIND_ZERO, (u)->bad = (why), 0) \
                    : (err))

static int read_l1_entry(struct qcow2_image *img, uint64_t idx, uint64_t *out)
{
    uint64_t pos = img->l1_offset + idx * 8;
    uint64_t key = pos & ~(img->cluster_size - 1);
    const uint8_t *page;
    int rc = q2_cache_get(&img->cache, &img->io, key, &page);

    if (rc < 0)
        return q2_err(img, rc, "cannot read L1 table: %s (at offset 0x%"
                      PRIx64 ")", qcow2_strerror(rc), pos);
    *out = q2_load_be64(page + (pos - key));
    return 0;
}

/* Decode the L2 entry for cluster index l2_idx of table `l2`, unit u
 * (subcluster index with extended L2, else 0). */
static int decode(struct qcow2_image *img, const uint8_t *l2, uint64_t l2_off,
                  unsigned l2_idx, unsigned sc, struct unit *u)
{
    uint64_t pos = l2_off + (uint64_t)l2_idx * img->l2_entry_len;
    uint64_t e = q2_load_be64(l2 + (size_t)l2_idx * img->l2_entry_len);
    uint64_t bitmap = 0, host;

    memset(u, 0, sizeof(*u));
    if (img->extended_l2)
        bitmap = q2_load_be64(l2 + (size_t)l2_idx * 16 + 8);

    if (e & Q2_OFLAG_COMPRESSED) {
        uint64_t nb;
        if (img->external_data)
            return SALVAGE_OR(img, u, WHY_L2_ENTRY,
                   q2_err(img, -QCOW2_ECORRUPT, "compressed cluster in an "
                          "image with an external data file (at offset 0x%"
                          PRIx64 ")", pos));
        if (bitmap)
            return SALVAGE_OR(img, u, WHY_L2_ENTRY,
                   q2_err(img, -QCOW2_ECORRUPT, "compressed cluster with a "
                          "non-zero subcluster bitmap (at offset 0x%" PRIx64
                          ")", pos));
        u->kind = QCOW2_KIND_COMPRESSED;
        u->coff = e & img->coffset_mask;
        nb = ((e >> img->csize_shift) & img->csize_mask) + 1;
        u->csize = (uint32_t)(nb * 512 - (u->coff & 511));
        if (u->coff >= Q2_MAX_HOST_OFFSET ||
            u->coff >= (uint64_t)img->file_size)
            return SALVAGE_OR(img, u, WHY_COMP_EOF,
                   q2_err(img, -QCOW2_ECORRUPT, "compressed cluster data at "
                          "0x%" PRIx64 " lies past the end of the file "
                          "(L2 entry at offset 0x%" PRIx64 ")", u->coff,
                          pos));
        return 0;
    }

    host = e & Q2_L2E_OFFSET_MASK;
    if (host & (img->cluster_size - 1))
        return SALVAGE_OR(img, u, WHY_DATA_ALIGN,
               q2_err(img, -QCOW2_ECORRUPT, "data cluster offset 0x%" PRIx64
                      " is not cluster aligned (L2 entry at offset 0x%" PRIx64
                      ")", host, pos));
    if (host == 0 && img->external_data && (e & Q2_OFLAG_COPIED))
        host = 0, u->has_offset = true; /* data file offset 0 */
    else if (host)
        u->has_offset = true;
    if (u->has_offset && !img->external_data &&
        host >= (uint64_t)img->file_size &&
        !(img->salvage && (img->extended_l2 || (e & Q2_OFLAG_ZERO))))
        return SALVAGE_OR(img, u, WHY_DATA_EOF,
               q2_err(img, -QCOW2_ECORRUPT, "data cluster at 0x%" PRIx64
                      " lies past the end of the file (L2 entry at offset "
                      "0x%" PRIx64 ")", host, pos));

    if (!img->extended_l2) {
        if (e & Q2_OFLAG_ZERO) {
            if (img->hp.h.version < 3)
                return SALVAGE_OR(img, u, WHY_L2_ENTRY,
                       q2_err(img, -QCOW2_ECORRUPT, "zero cluster in a "
                              "version 2 image (L2 entry at offset 0x%" PRIx64
                              ")", pos));
            u->kind = QCOW2_KIND_ZERO;
        } else {
            u->kind = u->has_offset ? QCOW2_KIND_DATA
                                    : QCOW2_KIND_UNALLOCATED;
        }
        u->host = host;
        return 0;
    }

    {
        uint32_t alloc = (uint32_t)bitmap, zero = (uint32_t)(bitmap >> 32);
        uint64_t scsize = img->cluster_size >> 5;

        if (alloc & zero)
            return SALVAGE_OR(img, u, WHY_L2_ENTRY,
                   q2_err(img, -QCOW2_ECORRUPT, "subcluster both allocated "
                          "and zero (L2 entry at offset 0x%" PRIx64 ")",
                          pos));
        if (!u->has_offset && alloc)
            return SALVAGE_OR(img, u, WHY_L2_ENTRY,
                   q2_err(img, -QCOW2_ECORRUPT, "allocated subclusters in an "
                          "unallocated cluster (L2 entry at offset 0x%" PRIx64
                          ")", pos));
        if (zero >> sc & 1)
            u->kind = QCOW2_KIND_ZERO;
        else if (alloc >> sc & 1)
            u->kind = QCOW2_KIND_DATA;
        else
            u->kind = QCOW2_KIND_UNALLOCATED;
        u->host = host + sc * scsize;
        if (u->kind == QCOW2_KIND_DATA && !img->external_data &&
            u->host >= (uint64_t)img->file_size)
            return SALVAGE_OR(img, u, WHY_DATA_EOF,
                   q2_err(img, -QCOW2_ECORRUPT, "data subcluster at 0x%"
                          PRIx64 " lies past the end of the file (L2 entry "
                          "at offset 0x%" PRIx64 ")", u->host, pos));
    }
    return 0;
}

static unsigned layer_flags(const struct qcow2_image *img, const struct unit *u)
{
    unsigned f = 0;

    switch (u->kind) {
    case QCOW2_KIND_DATA:
        f = QCOW2_EXTENT_PRESENT | QCOW2_EXTENT_DATA;
        break;
    case QCOW2_KIND_ZERO:
        f = QCOW2_EXTENT_PRESENT | QCOW2_EXTENT_ZERO;
        break;
    case QCOW2_KIND_COMPRESSED:
        return QCOW2_EXTENT_PRESENT | QCOW2_EXTENT_DATA;
    case QCOW2_KIND_UNALLOCATED:
        break;
    }
    if (u->has_offset && !img->encrypted)
        f |= QCOW2_EXTENT_OFFSET_VALID;
    return f;
}

/* Salvage mode: [ext->start, + len) reads as zeros, flagged unreadable. */
static int unreadable(struct qcow2_image *img, struct qcow2_extent *ext,
                      uint64_t len, const char *why)
{
    ext->length = len;
    ext->kind = QCOW2_KIND_ZERO;
    ext->flags = QCOW2_EXTENT_ZERO | QCOW2_EXTENT_UNREADABLE;
    img->salvage_why = why;
    return 0;
}

static int l1_dups(struct qcow2_image *img);

/*
 * The L2 table of L1 index l1_idx: *l2_off 0 when there is none.  In
 * salvage mode an unusable one comes back as *why (no error); a table an
 * earlier L1 entry names too is unusable there (q2_l1_check refuses the
 * whole table otherwise).
 */
static int find_l2(struct qcow2_image *img, uint64_t l1_idx,
                   uint64_t *l2_off, const char **why)
{
    uint64_t l1e = 0, pos = img->l1_offset + l1_idx * 8, off;
    int rc;

    *l2_off = 0;
    *why = NULL;
    if (l1_idx >= img->l1_size)
        return 0;
    rc = read_l1_entry(img, l1_idx, &l1e);
    if (rc < 0 && img->salvage && rc != -ENOMEM) {
        q2_err_clear(img);
        *why = WHY_L1_READ;
        return 0;
    }
    if (rc < 0)
        return rc;
    if (l1e & Q2_L1E_RESERVED_MASK) {
        *why = WHY_L1_RESERVED;
        return img->salvage ? 0
               : q2_err(img, -QCOW2_ECORRUPT, "L1 entry %" PRIu64 " has "
                        "reserved bits set: 0x%016" PRIx64 " (at offset 0x%"
                        PRIx64 ")", l1_idx, l1e, pos);
    }
    off = l1e & Q2_L1E_OFFSET_MASK;
    if (off == 0)
        return 0;
    if (off & (img->cluster_size - 1)) {
        *why = WHY_L2_ALIGN;
        return img->salvage ? 0
               : q2_err(img, -QCOW2_ECORRUPT, "L2 table offset 0x%" PRIx64
                        " is not cluster aligned (L1 entry at offset 0x%"
                        PRIx64 ")", off, pos);
    }
    if (off >= (uint64_t)img->file_size) {
        *why = WHY_L2_EOF;
        return img->salvage ? 0
               : q2_err(img, -QCOW2_ECORRUPT, "L2 table at 0x%" PRIx64 " lies "
                        "past the end of the file (L1 entry at offset 0x%"
                        PRIx64 ")", off, pos);
    }
    if (img->salvage) {
        const uint8_t *dup;
        rc = l1_dups(img);
        if (rc < 0)
            return rc;
        dup = img->cache.aux;
        if (dup[l1_idx / 8] >> (l1_idx % 8) & 1) {
            *why = WHY_L2_DUP;
            return 0;
        }
    }
    *l2_off = off;
    return 0;
}

/* Salvage mode: a data extent ends where the file does, and a unit entered
 * past it (after such an end) is unusable. */
static void clip_at_eof(const struct qcow2_image *img,
                        struct qcow2_extent *ext, struct unit *first)
{
    uint64_t fsize = (uint64_t)img->file_size;

    if (!img->salvage || first->kind != QCOW2_KIND_DATA || ext->in_data_file)
        return;
    if (ext->offset >= fsize) {
        first->kind = QCOW2_KIND_ZERO;
        first->bad = WHY_DATA_EOF;
    }
}

static int map_qcow2(struct qcow2_image *img, uint64_t start, uint64_t len,
                     struct qcow2_extent *ext)
{
    uint64_t cs = img->cluster_size;
    unsigned ubits = img->extended_l2 ? img->cluster_bits - 5
                                      : img->cluster_bits;
    uint64_t usize = 1ull << ubits;
    uint64_t cluster = start >> img->cluster_bits;
    uint64_t l1_idx = cluster >> img->l2_bits;
    uint64_t l2_span = 1ull << (img->cluster_bits + img->l2_bits);
    uint64_t table_end = (start & ~(l2_span - 1)) + l2_span;
    uint64_t l2_off, pos, done;
    const uint8_t *l2;
    const char *why;
    struct unit first, u;
    int rc;

    /* salvage mode checks each entry as it is met (find_l2) */
    if (!img->l1_checked && !img->salvage) {
        rc = q2_l1_check(img);
        if (rc < 0)
            return rc;
    }
    /* never cross an L2 table: one table read per call */
    if (len > table_end - start)
        len = table_end - start;

    memset(ext, 0, sizeof(*ext));
    ext->start = start;
    ext->layer = img;

    rc = find_l2(img, l1_idx, &l2_off, &why);
    if (rc < 0)
        return rc;
    if (why)
        return unreadable(img, ext, len, why);
    if (l2_off == 0) {
        ext->length = len;
        ext->kind = QCOW2_KIND_UNALLOCATED;
        return 0;
    }
    rc = q2_cache_get(&img->cache, &img->io, l2_off, &l2);
    if (rc < 0 && img->salvage && rc != -ENOMEM)
        return unreadable(img, ext, len, WHY_L2_READ);
    if (rc < 0)
        return q2_err(img, rc, "cannot read L2 table: %s (at offset 0x%"
                      PRIx64 ")", qcow2_strerror(rc), l2_off);

    /* the first unit, possibly entered in its middle */
    pos = start;
    rc = decode(img, l2, l2_off, (unsigned)(cluster & ((1u << img->l2_bits) - 1)),
                (unsigned)((start & (cs - 1)) >> ubits), &first);
    if (rc < 0)
        return rc;
    done = usize - (start & (usize - 1));
    if (first.kind == QCOW2_KIND_COMPRESSED)
        done = cs - (start & (cs - 1));
    if (done > len)
        done = len;
    ext->in_data_file = img->external_data && first.has_offset;
    ext->offset = first.host + (start & (usize - 1));
    clip_at_eof(img, ext, &first);
    ext->kind = first.kind;
    ext->flags = layer_flags(img, &first);
    if (first.kind == QCOW2_KIND_COMPRESSED) {
        ext->offset = first.coff;
        ext->csize = first.csize;
        ext->length = done;
        return 0;
    }
    if (first.bad) {
        ext->offset = 0;
        ext->in_data_file = false;
        img->salvage_why = first.bad;
        ext->flags = QCOW2_EXTENT_ZERO | QCOW2_EXTENT_UNREADABLE;
    }
    pos += done;

    /* Fast path: unallocated runs of all-zero entries (most of a sparse
     * image) are skipped without decoding each entry. */
    if (first.kind == QCOW2_KIND_UNALLOCATED && !first.has_offset &&
        (pos & (cs - 1)) == 0) {
        size_t elen = img->l2_entry_len;
        uint64_t idx = (pos >> img->cluster_bits) &
                       ((1ull << img->l2_bits) - 1);
        uint64_t last = idx + ((len - (pos - start) + cs - 1) >>
                               img->cluster_bits);
        uint64_t k;

        if (last > (1ull << img->l2_bits))
            last = 1ull << img->l2_bits;
        k = idx + q2_zero_prefix(l2 + idx * elen, (last - idx) * elen) / elen;
        pos += (k - idx) << img->cluster_bits;
    }

    /* extend over following units with the same answer */
    while (pos - start < len) {
        uint64_t c = pos >> img->cluster_bits;
        rc = decode(img, l2, l2_off,
                    (unsigned)(c & ((1u << img->l2_bits) - 1)),
                    (unsigned)((pos & (cs - 1)) >> ubits), &u);
        if (rc < 0)
            return rc;
        if (u.bad != first.bad)
            break;
        if (!first.bad && (u.kind != first.kind ||
                           u.has_offset != first.has_offset ||
                           (u.has_offset &&
                            u.host != ext->offset + (pos - start))))
            break;
        pos += usize;
    }
    ext->length = pos - start < len ? pos - start : len;
    /* salvage: data stops at the end of the file */
    if (img->salvage && ext->kind == QCOW2_KIND_DATA && !ext->in_data_file &&
        ext->length > (uint64_t)img->file_size - ext->offset)
        ext->length = (uint64_t)img->file_size - ext->offset;
    return 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int q2_l1_check(struct qcow2_image *img)
{
    enum { CHUNK = 8192 }; /* entries per read */
    uint8_t *buf;
    uint64_t *l2s, i, n = 0;
    int rc = 0;

    /* l1_size * 8 <= 32 MiB and lies inside the file (header.c, snapshot
     * selection), so both buffers are bounded by the file */
    buf = q2_buf_alloc(CHUNK * 8);
    l2s = malloc((img->l1_size ? img->l1_size : 1) * sizeof(*l2s));
    if (!buf || !l2s) {
        rc = -ENOMEM;
        goto out;
    }
    for (i = 0; i < img->l1_size; i++) {
        uint64_t pos = img->l1_offset + i * 8, e, off;
        if (i % CHUNK == 0) {
            uint64_t left = img->l1_size - i;
            size_t len = (size_t)(left < CHUNK ? left : CHUNK) * 8;
            int64_t got = q2_pread_full(&img->io, buf, len, pos);
            if (got < 0) {
                rc = q2_err(img, (int)got, "cannot read L1 table: %s (at "
                            "offset 0x%" PRIx64 ")", qcow2_strerror((int)got),
                            pos);
                goto out;
            }
        }
        e = q2_load_be64(buf + (i % CHUNK) * 8);
        if (e & Q2_L1E_RESERVED_MASK) {
            rc = q2_err(img, -QCOW2_ECORRUPT, "L1 entry %" PRIu64 " has "
                        "reserved bits set: 0x%016" PRIx64 " (at offset 0x%"
                        PRIx64 ")", i, e, pos);
            goto out;
        }
        off = e & Q2_L1E_OFFSET_MASK;
        if (!off)
            continue;
        if (off & (img->cluster_size - 1)) {
            rc = q2_err(img, -QCOW2_ECORRUPT, "L2 table offset 0x%" PRIx64
                        " is not cluster aligned (L1 entry at offset 0x%"
                        PRIx64 ")", off, pos);
            goto out;
        }
        if (off >= (uint64_t)img->file_size) {
            rc = q2_err(img, -QCOW2_ECORRUPT, "L2 table at 0x%" PRIx64
                        " lies past the end of the file (L1 entry at offset "
                        "0x%" PRIx64 ")", off, pos);
            goto out;
        }
        l2s[n++] = off;
    }
    qsort(l2s, n, sizeof(*l2s), cmp_u64);
    for (i = 1; i < n; i++) {
        if (l2s[i] == l2s[i - 1]) {
            rc = q2_err(img, -QCOW2_ECORRUPT, "L2 table at 0x%" PRIx64
                        " is named by two L1 entries (L1 table at offset 0x%"
                        PRIx64 ")", l2s[i], img->l1_offset);
            goto out;
        }
    }
    img->l1_checked = true;
out:
    free(buf);
    free(l2s);
    return rc;
}

/* An L2 table reference, for finding tables named twice. */
struct l1_ref {
    uint64_t off; /* L2 table offset */
    uint64_t idx; /* L1 index */
};

static int cmp_ref(const void *a, const void *b)
{
    const struct l1_ref *x = a, *y = b;

    if (x->off != y->off)
        return x->off < y->off ? -1 : 1;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/*
 * Salvage mode: mark (one bit an entry, in img->cache.aux) the L1 entries
 * of the active view that name an L2 table an entry before them names too.
 * QEMU never writes that; q2_l1_check refuses it because one table named
 * by every entry would let a small file describe unbounded mapping work.
 * Salvage reads the first entry's table only.  Entries that are unusable
 * anyway (reserved bits, misaligned, past the end) or sit in a part of the
 * table that cannot be read are left to find_l2.  Memory: 16 bytes an
 * entry while it runs (the table is in the file), a bit an entry kept.
 */
static int l1_dups(struct qcow2_image *img)
{
    enum { CHUNK = 8192 }; /* entries per read */
    struct l1_ref *refs = NULL;
    uint8_t *buf = NULL, *bits = NULL;
    uint64_t i, n = 0;
    int rc = 0;

    if (img->l1_dup_valid && img->l1_dup_offset == img->l1_offset &&
        img->l1_dup_size == img->l1_size)
        return 0;
    free(img->cache.aux);
    img->cache.aux = NULL;
    img->l1_dup_valid = false;
    bits = calloc((size_t)img->l1_size / 8 + 1, 1);
    buf = q2_buf_alloc(CHUNK * 8);
    refs = malloc((img->l1_size ? img->l1_size : 1) * sizeof(*refs));
    if (!bits || !buf || !refs) {
        rc = q2_err(img, -ENOMEM, "out of memory");
        goto out;
    }
    for (i = 0; i < img->l1_size; i++) {
        uint64_t e, off;
        if (i % CHUNK == 0) {
            uint64_t left = img->l1_size - i;
            size_t len = (size_t)(left < CHUNK ? left : CHUNK) * 8;
            if (q2_pread_full(&img->io, buf, len,
                              img->l1_offset + i * 8) < 0)
                memset(buf, 0, len);
        }
        e = q2_load_be64(buf + (i % CHUNK) * 8);
        off = e & Q2_L1E_OFFSET_MASK;
        if (!off || (e & Q2_L1E_RESERVED_MASK) ||
            (off & (img->cluster_size - 1)) ||
            off >= (uint64_t)img->file_size)
            continue;
        refs[n].off = off;
        refs[n].idx = i;
        n++;
    }
    qsort(refs, n, sizeof(*refs), cmp_ref);
    for (i = 1; i < n; i++)
        if (refs[i].off == refs[i - 1].off)
            bits[refs[i].idx / 8] |= (uint8_t)(1u << (refs[i].idx % 8));
    img->cache.aux = bits;
    bits = NULL;
    img->l1_dup_valid = true;
    img->l1_dup_offset = img->l1_offset;
    img->l1_dup_size = img->l1_size;
out:
    free(bits);
    free(buf);
    free(refs);
    return rc;
}

int q2_map_layer(struct qcow2_image *img, uint64_t start, uint64_t len,
                 struct qcow2_extent *ext)
{
    uint64_t vs = img->virtual_size;

    if (start >= vs || len == 0)
        return -EINVAL;
    if (len > vs - start)
        len = vs - start;
    if (img->format == QCOW2_FORMAT_RAW) {
        memset(ext, 0, sizeof(*ext));
        ext->start = start;
        ext->length = len;
        ext->kind = QCOW2_KIND_DATA;
        ext->offset = start;
        ext->layer = img;
        ext->flags = QCOW2_EXTENT_PRESENT | QCOW2_EXTENT_DATA |
                     QCOW2_EXTENT_OFFSET_VALID;
        return 0;
    }
    return map_qcow2(img, start, len, ext);
}

/*
 * QEMU decides whether an image "was preallocated with metadata" by
 * counting clusters with a non-zero refcount against the clusters the file
 * really occupies (qcow2_detect_metadata_preallocation); when it says yes,
 * block status looks through data clusters into the host file for holes.
 * qemu-img map's output depends on it, so we compute the same answer.
 */
int q2_detect_prealloc(struct qcow2_image *img)
{
    int64_t alloc, real_clusters, threshold;
    uint64_t end_cluster, count;

    if (img->prealloc >= 0)
        return img->prealloc;
    img->prealloc = 0;
    if (img->format != QCOW2_FORMAT_QCOW2)
        return 0;
    alloc = img->io.allocated ? img->io.allocated(img->io.ctx)
                              : img->file_size;
    if (alloc < 0)
        return 0;
    real_clusters = alloc / (int64_t)img->cluster_size;
    threshold = real_clusters * 10 / 9;
    if (threshold < real_clusters + 2)
        threshold = real_clusters + 2;
    end_cluster = ((uint64_t)img->file_size + img->cluster_size - 1) >>
                  img->cluster_bits;
    if (q2_rc_count_used(img, end_cluster, (uint64_t)threshold, &count) < 0) {
        q2_err_clear(img);
        return 0; /* QEMU treats a failure as "not preallocated" */
    }
    img->prealloc = count >= (uint64_t)threshold;
    return img->prealloc;
}
