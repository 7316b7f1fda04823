/*
 * fuzz_open_map.c - open an image (and its chain) from memory, describe it,
 * map it and read it.
 *
 * Input layout: an image file, optionally followed by layers below it,
 * each introduced by the 8-byte separator "QCHAINBK":
 *
 *   image [ "QCHAINBK" layer1 [ "QCHAINBK" layer2 ... ]]   (5 files at most)
 *
 * Every file the library asks the `open_file` resolver for (backing files
 * whatever their name, an external data file) is served from memory: the
 * k-th request gets layer k, and once the layers run out the last one again
 * (so one separator gives "any backing name reads these bytes").  Without
 * a separator there is no backing file (-ENOENT).
 *
 * Each file is an in-memory backend dressed as a sparse file, so the
 * optional backend methods are exercised too: identity (dev 1, inode =
 * layer number, so serving the last layer again is a loop), block_status
 * (4 KiB blocks of zeros are holes, past EOF is a hole) and allocated (the
 * bytes of non-hole blocks).
 *
 * After a successful open:
 *   1. every getter answers, and what it returns stays inside the handle;
 *   2. qcow2_map walks the first 64 MiB and a few windows spread over the
 *      virtual size, with invariants on every extent (below);
 *   3. qcow2_pread reads the first 4 MiB in odd-sized pieces, and each
 *      extent of each piece must read as the map says: zeros, or the bytes
 *      of its layer's file at its host offset;
 *   4. each internal snapshot is selected and mapped and read again;
 *   5. (before 4) each layer alone (qcow2_layer_pread) and each snapshot's
 *      VM state (qcow2_vmstate_*) is read and held against its own map.
 *   6. (before 4) salvage mode (qcow2_set_salvage): the chain is mapped
 *      and read again, and so are the views of 5; a salvage map never
 *      fails (but for memory), a salvage read only for what is not damage
 *      (an external data file that cannot be opened, encryption); every
 *      range reported lies inside the call's range, reads as zeros, and an
 *      extent flagged QCOW2_EXTENT_UNREADABLE is reported as it is.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <qcow2/qcow2.h>

#include "fuzz_helpers.h"
#include "internal.h" /* q2_io_mem_data */

#define MAX_INPUT (4u << 20)      /* the .options file says 1 MiB */
#define MAX_LAYERS 5              /* the image and four below it */
#define MAX_DEPTH 3               /* chain depth limit: reachable */
#define FS_BLOCK 4096u            /* hole granularity of the sparse files */
#define CACHE_BYTES (64u << 10)   /* small: evictions are code too */
#define MAP_SPAN (64ull << 20)    /* guest bytes walked from offset 0 */
#define MAP_WINDOWS 8             /* windows spread over larger images */
#define WINDOW_SPAN (1ull << 20)  /* bytes per window */
#define WINDOW_ALIGN (2ull << 20) /* window start: a multiple of any cluster */
#define MAX_EXTENTS (1ul << 18)   /* extents per input, all walks together */
#define READ_SPAN (4ull << 20)    /* guest bytes read and compared */
#define READ_PIECE 65521u         /* prime, so pieces start mid-cluster */
#define SNAP_SPAN (16ull << 20)   /* guest bytes mapped per snapshot */
#define MAX_SNAPS 4               /* snapshots selected per input */

struct layers {
    const uint8_t *data[MAX_LAYERS];
    size_t len[MAX_LAYERS];
    unsigned n;
    unsigned served; /* resolver calls answered */
};

struct run {
    struct qcow2_image *top;
    unsigned long extents; /* budget used */
    /* salvage mode: the range of the call in progress, and what was
     * reported during it */
    uint64_t lo, hi;
    unsigned long reports;
    uint64_t last_start, last_len;
    bool any_external; /* a layer has an external data file */
};

static void split_layers(const uint8_t *data, size_t size, struct layers *l)
{
    memset(l, 0, sizeof(*l));
    for (;;) {
        size_t sep = l->n + 1 < MAX_LAYERS ? fuzz_find_sep(data, size)
                                           : size;
        l->data[l->n] = data;
        l->len[l->n] = sep;
        l->n++;
        if (sep == size)
            break;
        data += sep + FUZZ_CHAIN_SEP_LEN;
        size -= sep + FUZZ_CHAIN_SEP_LEN;
    }
}

/* ---- the in-memory backend, dressed as a sparse file ---- */

struct sparse_file {
    struct qcow2_io mem; /* qcow2_io_open_mem() holding the bytes */
    unsigned index;      /* layer number: the inode */
};

static int64_t sf_pread(void *ctx, void *buf, size_t len, uint64_t off)
{
    struct sparse_file *f = ctx;
    return f->mem.pread(f->mem.ctx, buf, len, off);
}

static int64_t sf_pwrite(void *ctx, const void *buf, size_t len, uint64_t off)
{
    struct sparse_file *f = ctx;
    return f->mem.pwrite(f->mem.ctx, buf, len, off);
}

static int sf_flush(void *ctx)
{
    struct sparse_file *f = ctx;
    return f->mem.flush(f->mem.ctx);
}

static int sf_truncate(void *ctx, uint64_t size)
{
    struct sparse_file *f = ctx;
    return f->mem.truncate(f->mem.ctx, size);
}

static int64_t sf_size(void *ctx)
{
    struct sparse_file *f = ctx;
    return f->mem.size(f->mem.ctx);
}

static void sf_close(void *ctx)
{
    struct sparse_file *f = ctx;
    f->mem.close(f->mem.ctx);
    free(f);
}

/* Is the file block holding byte `off` data (not all zeros)? */
static bool sf_block_is_data(const uint8_t *data, size_t size, uint64_t off)
{
    static const uint8_t zeros[FS_BLOCK];
    uint64_t b = off - off % FS_BLOCK;

    if (b >= size)
        return false;
    return memcmp(data + b, zeros,
                  size - b < FS_BLOCK ? (size_t)(size - b) : FS_BLOCK) != 0;
}

static int sf_block_status(void *ctx, uint64_t off, uint64_t len,
                           uint64_t *pnum)
{
    struct sparse_file *f = ctx;
    size_t size;
    const uint8_t *data = q2_io_mem_data(&f->mem, &size);
    uint64_t pos;
    bool is_data;

    FUZZ_ASSERT(len > 0 && pnum != NULL);
    if (off >= size) { /* past EOF: a hole */
        *pnum = len;
        return 0;
    }
    is_data = sf_block_is_data(data, size, off);
    pos = off - off % FS_BLOCK + FS_BLOCK;
    while (pos - off < len && pos < size &&
           sf_block_is_data(data, size, pos) == is_data)
        pos += FS_BLOCK;
    if (pos >= size && !is_data)
        pos = off + len; /* a trailing hole runs on past EOF */
    else if (pos > size)
        pos = size;      /* data stops at EOF */
    *pnum = pos - off < len ? pos - off : len;
    return is_data;
}

static int sf_identity(void *ctx, uint64_t *dev, uint64_t *ino)
{
    struct sparse_file *f = ctx;
    *dev = 1;
    *ino = f->index;
    return 0;
}

static int64_t sf_allocated(void *ctx)
{
    struct sparse_file *f = ctx;
    size_t size;
    const uint8_t *data = q2_io_mem_data(&f->mem, &size);
    uint64_t off;
    int64_t n = 0;

    for (off = 0; off < size; off += FS_BLOCK)
        if (sf_block_is_data(data, size, off))
            n += FS_BLOCK;
    return n;
}

static int sparse_open(const uint8_t *data, size_t len, unsigned index,
                       struct qcow2_io *out)
{
    struct sparse_file *f = calloc(1, sizeof(*f));
    int rc;

    if (!f)
        return -ENOMEM;
    rc = qcow2_io_open_mem(data, len, &f->mem);
    if (rc < 0) {
        free(f);
        return rc;
    }
    f->index = index;
    memset(out, 0, sizeof(*out));
    out->version = QCOW2_IO_VERSION;
    out->ctx = f;
    out->pread = sf_pread;
    out->pwrite = sf_pwrite;
    out->flush = sf_flush;
    out->truncate = sf_truncate;
    out->size = sf_size;
    out->close = sf_close;
    out->block_status = sf_block_status;
    out->identity = sf_identity;
    out->allocated = sf_allocated;
    return 0;
}

/* ---- the harness ---- */

static int open_file(void *ctx, const char *name, unsigned io_flags,
                     struct qcow2_io *out, char *err, size_t errlen)
{
    struct layers *l = ctx;
    unsigned i;

    FUZZ_ASSERT(name != NULL && name[0] != '\0');
    FUZZ_ASSERT(err != NULL && errlen > 0);
    /* a read-only open never asks for a writable or new file */
    FUZZ_ASSERT(!(io_flags & (QCOW2_IO_RDWR | QCOW2_IO_CREATE)));
    if (l->n < 2) {
        snprintf(err, errlen, "no layer after the image in the input");
        return -ENOENT;
    }
    i = 1 + l->served;
    if (i >= l->n)
        i = l->n - 1;
    l->served++;
    return sparse_open(l->data[i], l->len[i], i, out);
}

static void warn(void *ctx, const char *msg)
{
    (void)ctx;
    FUZZ_ASSERT(msg != NULL && strlen(msg) < 4096);
}

static void touch(const void *p, size_t len)
{
    const volatile uint8_t *b = p;
    volatile uint8_t sum = 0;
    size_t i;

    for (i = 0; i < len; i++)
        sum ^= b[i];
    (void)sum;
}

static void touch_str(const char *s)
{
    if (s)
        touch(s, strlen(s) + 1);
}

/* The layer at `depth` below the top. */
static struct qcow2_image *layer_at(struct qcow2_image *top, unsigned depth)
{
    while (top && depth--)
        top = qcow2_backing(top);
    return top;
}

/* Getters of one layer: everything they return is readable and sane. */
static void check_layer(struct qcow2_image *img)
{
    struct qcow2_info info;
    const struct qcow2_header *h;
    struct qcow2_extension ext;
    struct qcow2_feature feat;
    struct qcow2_snapshot snap;
    struct qcow2_bitmap bm;
    struct qcow2_damage dmg;
    bool snaps_damaged = false;
    uint64_t dev, ino;
    unsigned i;

    FUZZ_ASSERT(qcow2_info_get(img, &info) == 0);
    FUZZ_ASSERT(info.format == QCOW2_FORMAT_RAW ||
                info.format == QCOW2_FORMAT_QCOW2);
    FUZZ_ASSERT(info.virtual_size == qcow2_virtual_size(img));
    FUZZ_ASSERT(info.virtual_size % 512 == 0);
    FUZZ_ASSERT(info.file_size >= 0);
    touch_str(info.filename);
    touch_str(qcow2_filename(img));
    touch_str(qcow2_errmsg(img));
    FUZZ_ASSERT(qcow2_identity(img, &dev, &ino) == 0 && dev == 1 &&
                ino < MAX_LAYERS);

    h = qcow2_header_get(img);
    if (info.format == QCOW2_FORMAT_RAW) {
        FUZZ_ASSERT(h == NULL);
        FUZZ_ASSERT(qcow2_extension_get(img, 0, &ext) == -EINVAL);
        return;
    }
    FUZZ_ASSERT(h != NULL);
    FUZZ_ASSERT(info.cluster_size >= 512 && info.cluster_size <= (2u << 20));
    FUZZ_ASSERT((info.cluster_size & (info.cluster_size - 1)) == 0);
    FUZZ_ASSERT(info.cluster_size == 1u << h->cluster_bits);
    FUZZ_ASSERT(info.version == 2 || info.version == 3);
    FUZZ_ASSERT(info.refcount_bits >= 1 && info.refcount_bits <= 64);
    FUZZ_ASSERT(info.virtual_size <= h->size);
    touch_str(info.compression);
    touch_str(info.backing_name);
    touch_str(info.backing_format);
    touch_str(info.backing_path);
    touch_str(info.data_file);
    if (info.backing_name)
        FUZZ_ASSERT(strlen(info.backing_name) <= 1023);
    if (info.backing_format)
        FUZZ_ASSERT(strlen(info.backing_format) <= 15);

    for (i = 0; i < info.nb_extensions; i++) {
        FUZZ_ASSERT(qcow2_extension_get(img, i, &ext) == 0);
        FUZZ_ASSERT(ext.offset + 8 + (uint64_t)ext.length <=
                    info.cluster_size);
        FUZZ_ASSERT(ext.offset + 8 + (uint64_t)ext.length <=
                    (uint64_t)info.file_size);
        touch(ext.data, ext.length);
    }
    FUZZ_ASSERT(qcow2_extension_get(img, i, &ext) == -EINVAL);

    for (i = 0; i < info.nb_features; i++) {
        FUZZ_ASSERT(qcow2_feature_get(img, i, &feat) == 0);
        FUZZ_ASSERT(memchr(feat.name, '\0', sizeof(feat.name)) != NULL);
    }
    FUZZ_ASSERT(qcow2_feature_get(img, i, &feat) == -EINVAL);

    /* damaged parts left aside: each reported once, with a message; a
     * snapshot table among them is listed but cannot be used */
    for (i = 0; qcow2_damage_get(img, i, &dmg) == 0; i++) {
        FUZZ_ASSERT(i < 2 && dmg.part && dmg.message && dmg.err < 0);
        touch_str(dmg.message);
        if (strcmp(dmg.part, "snapshot table") == 0)
            snaps_damaged = true;
        else
            FUZZ_ASSERT(strcmp(dmg.part, "bitmap directory") == 0);
    }
    for (i = 0; i < info.nb_snapshots; i++) {
        FUZZ_ASSERT(qcow2_snapshot_get(img, i, &snap) == 0);
        touch_str(snap.id);
        touch_str(snap.name);
        touch(snap.extra_data, snap.extra_data_size);
        FUZZ_ASSERT(snap.extra_data_size <= 1024);
        if (snaps_damaged) {
            FUZZ_ASSERT(qcow2_snapshot_find(img, snap.id) ==
                        -QCOW2_ECORRUPT);
            continue;
        }
        FUZZ_ASSERT(qcow2_snapshot_find(img, snap.id) >= 0);
        FUZZ_ASSERT(qcow2_snapshot_find(img, snap.name) >= 0);
    }
    FUZZ_ASSERT(qcow2_snapshot_get(img, i, &snap) == -EINVAL);

    for (i = 0; i < info.nb_bitmaps; i++) {
        FUZZ_ASSERT(qcow2_bitmap_get(img, i, &bm) == 0);
        touch_str(bm.name);
        FUZZ_ASSERT(strlen(bm.name) <= 1023);
    }
    FUZZ_ASSERT(qcow2_bitmap_get(img, i, &bm) == -EINVAL);
}

/* A data extent of a layer's own file starts inside that file.  A walk
 * that starts cluster-aligned meets depth 0 only at unit (cluster or
 * subcluster) boundaries, so there the offset itself must lie in the file
 * (map.c's invariant).  Elsewhere an extent may begin in the middle of a
 * cluster whose tail is past EOF (bytes there read as zeros, as in QEMU),
 * so only the cluster it starts in must.  With QCOW2_MAP_HOLES the host
 * file's EOF splits extents anywhere, and the part of a data cluster past
 * EOF is reported as data that reads as zeros. */
static void check_data_offset(const struct qcow2_extent *e, bool strict,
                              unsigned flags)
{
    struct qcow2_info info;
    uint64_t unit, off = e->offset;

    FUZZ_ASSERT(qcow2_info_get(e->layer, &info) == 0);
    unit = info.format == QCOW2_FORMAT_QCOW2 ? info.cluster_size : 512;
    if (e->depth > 0 || !strict)
        off &= ~(unit - 1);
    if (off >= (uint64_t)info.file_size)
        FUZZ_ASSERT((flags & QCOW2_MAP_HOLES) &&
                    (e->flags & QCOW2_EXTENT_ZERO));
}

/* Invariants of one extent returned for [pos, end) by a walk that started
 * at walk_start. */
static void check_extent(struct run *r, const struct qcow2_extent *e,
                         uint64_t walk_start, uint64_t pos, uint64_t end,
                         unsigned flags)
{
    uint64_t vs = qcow2_virtual_size(r->top);
    struct qcow2_image *layer;

    FUZZ_ASSERT(e->length > 0);
    FUZZ_ASSERT(e->start == pos);
    FUZZ_ASSERT(e->length <= end - pos);
    FUZZ_ASSERT(e->start + e->length <= vs);
    FUZZ_ASSERT(e->kind <= QCOW2_KIND_COMPRESSED);
    FUZZ_ASSERT(e->depth <= MAX_DEPTH);
    if (!(flags & QCOW2_MAP_CHAIN))
        FUZZ_ASSERT(e->depth == 0);
    layer = layer_at(r->top, e->depth);
    FUZZ_ASSERT(layer != NULL && e->layer == layer);
    /* through the chain, every byte is data or reads as zeros */
    if (flags & QCOW2_MAP_CHAIN)
        FUZZ_ASSERT(e->flags & (QCOW2_EXTENT_DATA | QCOW2_EXTENT_ZERO));
    if (e->kind == QCOW2_KIND_DATA) {
        FUZZ_ASSERT(e->flags & QCOW2_EXTENT_DATA);
    } else if (e->kind == QCOW2_KIND_COMPRESSED) {
        struct qcow2_info info;
        FUZZ_ASSERT(qcow2_info_get(e->layer, &info) == 0);
        FUZZ_ASSERT(e->flags & QCOW2_EXTENT_DATA);
        FUZZ_ASSERT(!(e->flags & QCOW2_EXTENT_OFFSET_VALID));
        FUZZ_ASSERT(!e->in_data_file);
        FUZZ_ASSERT(e->offset < (uint64_t)info.file_size);
        FUZZ_ASSERT(e->csize > 0 && e->csize <= 2ull * info.cluster_size);
        FUZZ_ASSERT(e->length <= info.cluster_size);
    } else if (e->kind == QCOW2_KIND_ZERO) {
        FUZZ_ASSERT(e->flags & QCOW2_EXTENT_ZERO);
    }
    if (e->kind == QCOW2_KIND_DATA &&
        (e->flags & QCOW2_EXTENT_OFFSET_VALID) && !e->in_data_file)
        check_data_offset(e, (walk_start & (WINDOW_ALIGN - 1)) == 0, flags);
}

/* Walk [start, end) with qcow2_map; stop at the first error or when the
 * extent budget runs out. */
static void map_walk(struct run *r, uint64_t start, uint64_t end,
                     unsigned flags)
{
    uint64_t pos = start;
    struct qcow2_extent e;

    while (pos < end && r->extents < MAX_EXTENTS) {
        int rc = qcow2_map(r->top, pos, end - pos, flags, &e);
        if (rc < 0) {
            FUZZ_ASSERT(rc != -EINVAL); /* the range is inside the image */
            FUZZ_ASSERT(qcow2_errmsg(r->top)[0] != '\0');
            return;
        }
        check_extent(r, &e, start, pos, end, flags);
        r->extents++;
        pos += e.length;
    }
}

static void map_image(struct run *r)
{
    uint64_t vs = qcow2_virtual_size(r->top), end, w;
    struct qcow2_extent e;

    if (vs == 0) {
        FUZZ_ASSERT(qcow2_map(r->top, 0, 1, QCOW2_MAP_CHAIN, &e) == -EINVAL);
        return;
    }
    FUZZ_ASSERT(qcow2_map(r->top, vs, 1, QCOW2_MAP_CHAIN, &e) == -EINVAL);
    FUZZ_ASSERT(qcow2_map(r->top, 0, 0, QCOW2_MAP_CHAIN, &e) == -EINVAL);

    end = vs < MAP_SPAN ? vs : MAP_SPAN;
    map_walk(r, 0, end, QCOW2_MAP_CHAIN);
    /* the same start without the chain, and with host holes */
    end = vs < READ_SPAN ? vs : READ_SPAN;
    map_walk(r, 0, end, 0);
    map_walk(r, 0, end, QCOW2_MAP_CHAIN | QCOW2_MAP_HOLES);
    if (vs <= MAP_SPAN)
        return;
    /* windows spread over the rest of a large image */
    for (w = 1; w < MAP_WINDOWS; w++) {
        uint64_t start = (vs / MAP_WINDOWS * w) & ~(WINDOW_ALIGN - 1);
        if (start < MAP_SPAN)
            continue;
        end = vs - start < WINDOW_SPAN ? vs : start + WINDOW_SPAN;
        map_walk(r, start, end, QCOW2_MAP_CHAIN);
    }
    /* and the very end, which may stop mid-cluster */
    map_walk(r, (vs - 1) & ~(WINDOW_ALIGN - 1), vs, QCOW2_MAP_CHAIN);
}

/* Check the extents of [pos, pos + len) against buf, which qcow2_pread
 * filled with those bytes: zero extents read as zeros, data extents as the
 * bytes of their layer's file.  False when the walk cannot go on. */
/* Do the bytes read for extent e (got) hold what it maps: zeros, or its
 * layer's file at its host offset (compressed data is not compared)?
 * host: scratch of e->length bytes.  False when the host read fails. */
static bool content_as_mapped(const struct qcow2_extent *e, bool zeros,
                              const uint8_t *got, uint8_t *host)
{
    int64_t n;

    if (zeros) {
        memset(host, 0, e->length);
    } else if (e->kind == QCOW2_KIND_DATA) {
        n = qcow2_host_pread(e->layer, e->in_data_file, host, e->length,
                             e->offset);
        if (n < 0)
            return false;
        FUZZ_ASSERT((uint64_t)n == e->length);
    } else {
        return true;
    }
    FUZZ_ASSERT(memcmp(got, host, e->length) == 0);
    return true;
}

static bool verify_piece(struct run *r, const uint8_t *buf, uint8_t *host,
                         uint64_t pos, size_t len)
{
    uint64_t p, end = pos + len;
    struct qcow2_extent e;

    for (p = pos; p < end; p += e.length) {
        if (r->extents >= MAX_EXTENTS ||
            qcow2_map(r->top, p, end - p, QCOW2_MAP_CHAIN, &e) < 0)
            return false;
        check_extent(r, &e, pos, p, end, QCOW2_MAP_CHAIN);
        r->extents++;
        if (!content_as_mapped(&e, (e.flags & QCOW2_EXTENT_ZERO) ||
                                       !(e.flags & QCOW2_EXTENT_DATA),
                               buf + (p - pos), host))
            return false;
    }
    return true;
}

/*
 * 5. forensic reads.  read_fn reads `len` bytes at `pos` of a view, map_fn
 * describes it; every piece must read as its extents say: zeros where they
 * say zero or unallocated (a layer alone, a VM state: never the backing
 * file), the layer's own bytes where they say data.
 */
typedef int64_t (*view_read_fn)(struct qcow2_image *img, unsigned idx,
                                void *buf, size_t len, uint64_t off);
typedef int (*view_map_fn)(struct qcow2_image *img, unsigned idx,
                           uint64_t start, uint64_t len,
                           struct qcow2_extent *e);

static int64_t layer_read(struct qcow2_image *img, unsigned idx, void *buf,
                          size_t len, uint64_t off)
{
    (void)idx;
    return qcow2_layer_pread(img, buf, len, off);
}

static int layer_map(struct qcow2_image *img, unsigned idx, uint64_t start,
                     uint64_t len, struct qcow2_extent *e)
{
    (void)idx;
    return qcow2_map(img, start, len, 0, e);
}

static void read_view_alone(struct run *r, struct qcow2_image *img,
                            unsigned idx, uint64_t size, view_read_fn rd,
                            view_map_fn mp)
{
    uint64_t pos, span = size < (1u << 20) ? size : (1u << 20);
    uint8_t *buf = malloc(READ_PIECE), *host = malloc(READ_PIECE);
    struct qcow2_extent e;
    size_t len;

    if (!buf || !host)
        goto out;
    for (pos = 0; pos < span; pos += len) {
        uint64_t p;
        int64_t n;
        len = span - pos < READ_PIECE ? (size_t)(span - pos) : READ_PIECE;
        n = rd(img, idx, buf, len, pos);
        if (n < 0) {
            FUZZ_ASSERT(qcow2_errmsg(img)[0] != '\0');
            goto out;
        }
        FUZZ_ASSERT((uint64_t)n == len);
        for (p = pos; p < pos + len; p += e.length) {
            if (r->extents >= MAX_EXTENTS ||
                mp(img, idx, p, pos + len - p, &e) < 0)
                goto out;
            r->extents++;
            FUZZ_ASSERT(e.start == p && e.length > 0 &&
                        e.length <= pos + len - p);
            FUZZ_ASSERT(e.depth == 0 && e.layer == img);
            if (!content_as_mapped(&e, e.kind == QCOW2_KIND_UNALLOCATED ||
                                           e.kind == QCOW2_KIND_ZERO,
                                   buf + (p - pos), host))
                goto out;
        }
    }
    /* reads stop at the end of the view */
    FUZZ_ASSERT(rd(img, idx, buf, 1, size) == 0);
out:
    free(buf);
    free(host);
}

static void forensic_reads(struct run *r)
{
    struct qcow2_image *l;
    struct qcow2_info info;
    struct qcow2_vmstate vm;
    unsigned i;

    for (l = r->top; l; l = qcow2_backing(l))
        read_view_alone(r, l, 0, qcow2_virtual_size(l), layer_read,
                        layer_map);
    FUZZ_ASSERT(qcow2_info_get(r->top, &info) == 0);
    FUZZ_ASSERT(qcow2_vmstate_get(r->top, info.nb_snapshots, &vm) < 0);
    for (i = 0; i < info.nb_snapshots && i < MAX_SNAPS; i++) {
        if (qcow2_vmstate_get(r->top, i, &vm) < 0) {
            FUZZ_ASSERT(qcow2_errmsg(r->top)[0] != '\0');
            continue;
        }
        FUZZ_ASSERT(vm.offset + vm.size >= vm.offset); /* no overflow */
        read_view_alone(r, r->top, i, vm.size, qcow2_vmstate_pread,
                        qcow2_vmstate_map);
    }
}

/* Read [0, span) in odd-sized pieces and check each against the map. */
static void read_image(struct run *r, uint64_t span)
{
    uint64_t vs = qcow2_virtual_size(r->top), pos;
    uint8_t *buf, *host;
    size_t len;
    int64_t n;

    if (span > vs)
        span = vs;
    buf = malloc(READ_PIECE);
    host = malloc(READ_PIECE);
    if (!buf || !host)
        goto out;
    for (pos = 0; pos < span; pos += len) {
        len = span - pos < READ_PIECE ? (size_t)(span - pos) : READ_PIECE;
        n = qcow2_pread(r->top, buf, len, pos);
        if (n < 0) {
            FUZZ_ASSERT(qcow2_errmsg(r->top)[0] != '\0');
            goto out; /* bad metadata or data: nothing to compare */
        }
        FUZZ_ASSERT((uint64_t)n == len);
        if (!verify_piece(r, buf, host, pos, len))
            goto out;
    }
    /* reads stop at the virtual size */
    FUZZ_ASSERT(qcow2_pread(r->top, buf, 1, vs) == 0);
out:
    free(buf);
    free(host);
}

/* ---- 6. salvage mode ---- */

static void salvage_cb(void *ctx, uint64_t start, uint64_t len,
                       const char *why)
{
    struct run *r = ctx;

    FUZZ_ASSERT(len > 0 && why != NULL && why[0] != '\0');
    FUZZ_ASSERT(strlen(why) < 1200);
    FUZZ_ASSERT(start >= r->lo && start < r->hi && len <= r->hi - start);
    r->reports++;
    r->last_start = start;
    r->last_len = len;
}

/* Where the map without salvage mode answers (n), salvage mode (e) gives
 * the same answer, but for data past the end of the layer's file: there
 * it stops at the end, and a range entered past it is unreadable. */
static void salvage_same(const struct qcow2_extent *n,
                         const struct qcow2_extent *e)
{
    struct qcow2_info info;
    uint64_t fsize;

    FUZZ_ASSERT(qcow2_info_get(n->layer, &info) == 0);
    fsize = (uint64_t)info.file_size;
    if (e->flags & QCOW2_EXTENT_UNREADABLE) {
        FUZZ_ASSERT(n->kind == QCOW2_KIND_DATA && !n->in_data_file &&
                    n->offset >= fsize);
        return;
    }
    FUZZ_ASSERT(e->kind == n->kind && e->flags == n->flags &&
                e->depth == n->depth && e->layer == n->layer &&
                e->offset == n->offset && e->csize == n->csize &&
                e->in_data_file == n->in_data_file);
    if (e->length != n->length)
        FUZZ_ASSERT(e->kind == QCOW2_KIND_DATA && e->length < n->length &&
                    e->offset + e->length == fsize);
}

/* Map [start, end) of the chain in salvage mode: it never fails, and it
 * answers as the map without salvage mode where that one answers. */
static void salvage_map(struct run *r, uint64_t start, uint64_t end)
{
    uint64_t pos = start;
    struct qcow2_extent e, n;

    while (pos < end && r->extents < MAX_EXTENTS) {
        unsigned long before;
        int rc, nrc;
        FUZZ_ASSERT(qcow2_set_salvage(r->top, NULL, NULL) == 0);
        nrc = qcow2_map(r->top, pos, end - pos, QCOW2_MAP_CHAIN, &n);
        FUZZ_ASSERT(qcow2_set_salvage(r->top, salvage_cb, r) == 0);
        r->lo = pos;
        r->hi = end;
        before = r->reports;
        rc = qcow2_map(r->top, pos, end - pos, QCOW2_MAP_CHAIN, &e);
        if (rc == -ENOMEM)
            return;
        FUZZ_ASSERT(rc == 0);
        if (nrc == 0)
            salvage_same(&n, &e);
        check_extent(r, &e, start, pos, end, QCOW2_MAP_CHAIN);
        r->extents++;
        if (e.flags & QCOW2_EXTENT_UNREADABLE) {
            FUZZ_ASSERT(e.flags & QCOW2_EXTENT_ZERO);
            FUZZ_ASSERT(e.kind == QCOW2_KIND_ZERO);
            FUZZ_ASSERT(r->reports == before + 1);
            FUZZ_ASSERT(r->last_start == pos && r->last_len == e.length);
        } else {
            FUZZ_ASSERT(r->reports == before);
        }
        pos += e.length;
    }
}

/* Read [0, span) of the chain in salvage mode in odd pieces: each read
 * succeeds unless something other than damage stops it, and holds what
 * its extents say. */
static void salvage_read(struct run *r, uint64_t span)
{
    uint64_t vs = qcow2_virtual_size(r->top), pos;
    uint8_t *buf = malloc(READ_PIECE), *host = malloc(READ_PIECE);
    size_t len;

    if (span > vs)
        span = vs;
    if (!buf || !host)
        goto out;
    for (pos = 0; pos < span; pos += len) {
        int64_t n;
        len = span - pos < READ_PIECE ? (size_t)(span - pos) : READ_PIECE;
        r->lo = pos;
        r->hi = pos + len;
        n = qcow2_pread(r->top, buf, len, pos);
        if (n < 0) {
            FUZZ_ASSERT(qcow2_errmsg(r->top)[0] != '\0');
            FUZZ_ASSERT(n != -QCOW2_ECORRUPT || r->any_external);
            goto out;
        }
        FUZZ_ASSERT((uint64_t)n == len);
        if (!verify_piece(r, buf, host, pos, len))
            goto out;
    }
out:
    free(buf);
    free(host);
}

/* The views of 5 in salvage mode: reports stay inside each view. */
static void salvage_views(struct run *r)
{
    struct qcow2_image *l;
    struct qcow2_info info;
    struct qcow2_vmstate vm;
    unsigned i;

    for (l = r->top; l; l = qcow2_backing(l)) {
        r->lo = 0;
        r->hi = qcow2_virtual_size(l);
        read_view_alone(r, l, 0, r->hi, layer_read, layer_map);
    }
    FUZZ_ASSERT(qcow2_info_get(r->top, &info) == 0);
    for (i = 0; i < info.nb_snapshots && i < MAX_SNAPS; i++) {
        if (qcow2_vmstate_get(r->top, i, &vm) < 0)
            continue;
        r->lo = 0;
        r->hi = vm.size;
        read_view_alone(r, r->top, i, vm.size, qcow2_vmstate_pread,
                        qcow2_vmstate_map);
    }
}

static void salvage(struct run *r)
{
    uint64_t vs = qcow2_virtual_size(r->top);
    struct qcow2_image *l;
    struct qcow2_info info;

    for (l = r->top; l; l = qcow2_backing(l)) {
        FUZZ_ASSERT(qcow2_info_get(l, &info) == 0);
        r->any_external |= info.has_external_data;
    }
    FUZZ_ASSERT(qcow2_set_salvage(r->top, salvage_cb, r) == 0);
    if (vs > 0)
        salvage_map(r, 0, vs < MAP_SPAN ? vs : MAP_SPAN);
    salvage_read(r, READ_SPAN);
    salvage_views(r);
    FUZZ_ASSERT(qcow2_set_salvage(r->top, NULL, NULL) == 0);
}

static void select_snapshots(struct run *r)
{
    struct qcow2_info info;
    struct qcow2_snapshot s;
    unsigned i;

    FUZZ_ASSERT(qcow2_info_get(r->top, &info) == 0);
    if (qcow2_snapshot_find(r->top, "no such snapshot\x01") ==
        -QCOW2_ECORRUPT) {
        /* a damaged snapshot table: listed, never selected */
        FUZZ_ASSERT(qcow2_snapshot_select(r->top, "no such snapshot\x01") ==
                    -QCOW2_ECORRUPT);
        return;
    }
    FUZZ_ASSERT(qcow2_snapshot_select(r->top, "no such snapshot\x01") ==
                -ENOENT);
    for (i = 0; i < info.nb_snapshots && i < MAX_SNAPS; i++) {
        uint64_t vs;
        int rc;
        FUZZ_ASSERT(qcow2_snapshot_get(r->top, i, &s) == 0);
        rc = qcow2_snapshot_select(r->top, s.id);
        FUZZ_ASSERT(rc != -ENOENT);
        if (rc < 0) {
            FUZZ_ASSERT(qcow2_errmsg(r->top)[0] != '\0');
            continue;
        }
        vs = qcow2_virtual_size(r->top);
        map_walk(r, 0, vs < SNAP_SPAN ? vs : SNAP_SPAN, QCOW2_MAP_CHAIN);
        read_image(r, 1u << 20);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct layers l;
    struct qcow2_open_opts opts;
    struct qcow2_io io;
    struct run r;
    struct qcow2_image *img, *layer;
    unsigned depth;
    int rc;

    if (size > MAX_INPUT)
        return 0;
    split_layers(data, size, &l);
    img = qcow2_new();
    if (!img)
        return 0;
    if (sparse_open(l.data[0], l.len[0], 0, &io) < 0) {
        qcow2_close(img);
        return 0;
    }
    memset(&opts, 0, sizeof(opts));
    opts.size = sizeof(opts);
    opts.flags = QCOW2_OPEN_FORCE_SHARE;
    opts.max_depth = MAX_DEPTH;
    opts.cache_bytes = CACHE_BYTES;
    opts.open_file = open_file;
    opts.open_ctx = &l;
    opts.warn = warn;
    rc = qcow2_open_io(img, &io, "fuzz.img", &opts);
    if (rc < 0) {
        FUZZ_ASSERT(qcow2_errmsg(img)[0] != '\0');
        FUZZ_ASSERT(qcow2_virtual_size(img) == 0);
        qcow2_close(img);
        return 0;
    }

    /* 1. getters of every layer */
    for (layer = img, depth = 0; layer; layer = qcow2_backing(layer)) {
        FUZZ_ASSERT(depth <= MAX_DEPTH);
        check_layer(layer);
        depth++;
    }

    memset(&r, 0, sizeof(r));
    r.top = img;
    map_image(&r);                /* 2. */
    read_image(&r, READ_SPAN);    /* 3. */
    forensic_reads(&r);           /* 5. (before 4 changes the view) */
    salvage(&r);                  /* 6. (before 4) */
    select_snapshots(&r);         /* 4. */

    qcow2_close(img);
    return 0;
}
