/*
 * read.c - mapping and reading guest data: the read layer over the tables
 * (map.c decodes one layer's L2 entries; this file walks chains, views and
 * host files).
 *
 * Reading (qcow2_pread) walks extents of the chain (qcow2_map) and serves
 * each one from the layer that owns it: host reads for data, zeros for
 * zero and unallocated ranges, one decompressed cluster (kept per layer) for
 * compressed ones.  The forensic reads (end of file) use the same walk on
 * one image alone: qcow2_layer_pread over its own L1 table, and the VM
 * state of an internal snapshot over the snapshot's L1 table past its disk.
 *
 * Salvage mode (qcow2_set_salvage) turns damage into zeros: map.c flags
 * what the tables cannot describe, map_chain reports those extents to the
 * caller's callback (with the backing file named when it is at fault), and
 * read_view zeroes and reports the extents whose data or compressed stream
 * cannot be read.  Reports carry guest offsets of the view read.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "endian.h"
#include "format.h"
#include "internal.h"

/* The L1 table of snapshot idx is aligned and lies inside the file (its
 * size was bounded by QEMU's cap when the table was parsed). */
int q2_snapshot_l1_check(struct qcow2_image *img, unsigned idx)
{
    const struct qcow2_snapshot *s = &img->snaps[idx].pub;

    if (s->l1_table_offset & (img->cluster_size - 1))
        return q2_err(img, -QCOW2_ECORRUPT, "snapshot %s: L1 table offset "
                      "0x%" PRIx64 " is not cluster aligned (at offset 0x%"
                      PRIx64 ")", s->id, s->l1_table_offset, s->entry_offset);
    if (s->l1_size && (s->l1_table_offset > (uint64_t)img->file_size ||
                       (uint64_t)s->l1_size * 8 >
                           (uint64_t)img->file_size - s->l1_table_offset))
        return q2_err(img, -QCOW2_ECORRUPT, "snapshot %s: L1 table 0x%" PRIx64
                      " lies past the end of the file (at offset 0x%" PRIx64
                      ")", s->id, s->l1_table_offset, s->entry_offset);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Host I/O                                                                 */
/* ------------------------------------------------------------------------ */

int q2_data_io(struct qcow2_image *img, struct qcow2_io **out)
{
    char err[512] = "";
    unsigned flags = QCOW2_IO_NOLOCK;
    int rc;

    if (!img->external_data) {
        *out = &img->io;
        return 0;
    }
    if (img->data_io_open) {
        *out = &img->data_io;
        return 0;
    }
    if (!img->data_file_name)
        return q2_err(img, -QCOW2_ECORRUPT, "image has an external data file "
                      "but does not name it");
    if (q2_name_has_protocol(img->data_file_name) &&
        strncmp(img->data_file_name, "./", 2) != 0)
        return q2_err(img, -ENOTSUP, "external data file name '%s' is a "
                      "protocol name, which qchain never follows",
                      img->data_file_name);
    if (!(img->opts.flags & QCOW2_OPEN_FORCE_SHARE))
        flags = 0;
    /* QEMU opens data file names as given, relative to the working
     * directory, not to the image */
    rc = img->opts.open_file
             ? img->opts.open_file(img->opts.open_ctx, img->data_file_name,
                                   flags, &img->data_io, err, sizeof(err))
             : qcow2_io_open_file(img->data_file_name, flags, &img->data_io,
                                  err, sizeof(err));
    if (rc < 0)
        return q2_err(img, rc, "cannot open external data file '%s': %s",
                      img->data_file_name, err[0] ? err : qcow2_strerror(rc));
    img->data_io_open = true;
    *out = &img->data_io;
    return 0;
}

int64_t qcow2_host_pread(struct qcow2_image *img, bool data_file, void *buf,
                         size_t len, uint64_t off)
{
    struct qcow2_io *io = &img->io;
    int64_t n;
    int rc;

    if (!q2_usable(img))
        return -EINVAL;
    if (data_file) {
        rc = q2_data_io(img, &io);
        if (rc < 0)
            return rc;
    }
    n = q2_pread_full(io, buf, len, off);
    if (n < 0)
        return q2_err(img, (int)n, "cannot read '%s': %s (at offset 0x%"
                      PRIx64 ")", img->filename, qcow2_strerror((int)n), off);
    return n;
}

/* ------------------------------------------------------------------------ */
/* Mapping through the chain                                                */
/* ------------------------------------------------------------------------ */

/* A layer's answer, refined by holes in its host file (QEMU's want_zero
 * block status). */
static int layer_status(struct qcow2_image *img, uint64_t start, uint64_t len,
                        unsigned flags, struct qcow2_extent *ext)
{
    struct qcow2_io *io;
    uint64_t pnum, fsize, n;
    int64_t sz;
    int rc;

    rc = q2_map_layer(img, start, len, ext);
    if (rc < 0 || !(flags & (QCOW2_MAP_HOLES | QCOW2_MAP_HOST_HOLES)) ||
        ext->kind != QCOW2_KIND_DATA || img->encrypted)
        return rc;
    if (img->format == QCOW2_FORMAT_QCOW2 &&
        !(flags & QCOW2_MAP_HOST_HOLES) && q2_detect_prealloc(img) != 1)
        return 0;
    rc = q2_data_io(img, &io);
    if (rc < 0)
        return rc;
    if (!io->block_status)
        return 0;
    /* a read-only image's own file keeps the size it had at open (the
     * size every bound of its mapping was checked against) */
    sz = io == &img->io && !img->writable ? img->file_size
                                           : io->size(io->ctx);
    if (sz < 0)
        return 0;
    fsize = (uint64_t)sz;
    if (img->format == QCOW2_FORMAT_RAW) {
        /* raw: the file's answer is the layer's answer */
        if (ext->offset >= fsize) {
            ext->kind = QCOW2_KIND_ZERO;
            ext->flags = QCOW2_EXTENT_PRESENT | QCOW2_EXTENT_ZERO |
                         QCOW2_EXTENT_OFFSET_VALID;
            return 0;
        }
        n = ext->length < fsize - ext->offset ? ext->length
                                              : fsize - ext->offset;
        rc = io->block_status(io->ctx, ext->offset, n, &pnum);
        if (rc < 0)
            return 0;
        if (rc == 0) {
            ext->kind = QCOW2_KIND_ZERO;
            ext->flags = QCOW2_EXTENT_PRESENT | QCOW2_EXTENT_ZERO |
                         QCOW2_EXTENT_OFFSET_VALID;
            if (ext->offset + pnum < fsize)
                ext->length = pnum;
        } else {
            ext->length = pnum;
        }
        return 0;
    }
    /* qcow2 data cluster: look through into the host file */
    if (ext->offset >= fsize) {
        ext->flags |= QCOW2_EXTENT_ZERO;
        return 0;
    }
    n = ext->length < fsize - ext->offset ? ext->length : fsize - ext->offset;
    rc = io->block_status(io->ctx, ext->offset, n, &pnum);
    if (rc < 0)
        return 0;
    if (rc == 0 && ext->offset + pnum >= fsize) {
        ext->flags |= QCOW2_EXTENT_ZERO; /* a hole up to EOF: all zero */
        return 0;
    }
    ext->length = pnum;
    if (rc == 0)
        ext->flags |= QCOW2_EXTENT_ZERO;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Salvage mode                                                             */
/* ------------------------------------------------------------------------ */

int qcow2_set_salvage(struct qcow2_image *img, qcow2_unreadable_fn fn,
                      void *ctx)
{
    struct qcow2_image *l;

    if (!q2_usable(img) || img->writable)
        return -EINVAL;
    q2_err_clear(img);
    for (l = img; l; l = l->backing) {
        l->salvage = fn != NULL;
        l->salvage_fn = fn;
        l->salvage_ctx = ctx;
    }
    return 0;
}

/* Tell top's reporter that guest bytes [start, start + len) of its view
 * could not be read in layer l. */
static void report(const struct qcow2_image *top, const struct qcow2_image *l,
                   uint64_t start, uint64_t len, const char *why)
{
    char msg[1200];

    if (!top->salvage_fn)
        return;
    if (l != top) {
        snprintf(msg, sizeof(msg), "backing file '%s': %s", l->filename,
                 why);
        why = msg;
    }
    top->salvage_fn(top->salvage_ctx, start - top->salvage_base, len, why);
}

static int map_chain(struct qcow2_image *img, uint64_t start, uint64_t len,
                     unsigned flags, unsigned stop, struct qcow2_extent *ext)
{
    struct qcow2_image *cur = img;
    unsigned depth = 0;
    int rc;

    for (;;) {
        if (cur != img)
            q2_err_clear(cur);
        rc = layer_status(cur, start, len, flags, ext);
        if (rc < 0) {
            if (cur != img)
                return q2_err(img, rc, "backing file '%s': %s",
                              cur->filename, cur->errmsg);
            return rc;
        }
        len = ext->length;
        if (ext->flags & QCOW2_EXTENT_UNREADABLE)
            report(img, cur, start, len, cur->salvage_why);
        if (!(flags & QCOW2_MAP_CHAIN) ||
            (ext->flags & (QCOW2_EXTENT_DATA | QCOW2_EXTENT_ZERO)))
            break;
        if (!cur->backing || start >= cur->backing->virtual_size) {
            ext->flags |= QCOW2_EXTENT_ZERO; /* nothing below: zeros */
            break;
        }
        if (depth + 1 == stop) {
            /* falls through to the layer at `stop`, which is not asked */
            ext->kind = QCOW2_KIND_UNALLOCATED;
            ext->flags = 0;
            ext->layer = cur->backing;
            ext->depth = stop;
            /* past its end the layers above read zeros (caught by the
             * next call) */
            if (ext->length > cur->backing->virtual_size - start)
                ext->length = cur->backing->virtual_size - start;
            return 0;
        }
        cur = cur->backing;
        depth++;
    }
    ext->depth = depth;
    return 0;
}

/* map_chain for the public calls: *ext written only on success. */
static int map_out(struct qcow2_image *img, uint64_t start, uint64_t len,
                   unsigned flags, unsigned stop, struct qcow2_extent *ext)
{
    struct qcow2_extent x;
    int rc = map_chain(img, start, len, flags, stop, &x);

    if (rc == 0)
        *ext = x;
    return rc;
}

int qcow2_map(struct qcow2_image *img, uint64_t start, uint64_t len,
              unsigned flags, struct qcow2_extent *ext)
{
    if (!q2_usable(img) || !ext)
        return -EINVAL;
    q2_err_clear(img);
    if (start >= img->virtual_size || len == 0)
        return q2_err(img, -EINVAL, "qcow2_map: range 0x%" PRIx64 "+%" PRIu64
                      " is outside the image", start, len);
    if (len > img->virtual_size - start)
        len = img->virtual_size - start;
    return map_out(img, start, len, flags, UINT32_MAX, ext);
}

int qcow2_map_above(struct qcow2_image *img, uint64_t start, uint64_t len,
                    unsigned flags, unsigned stop_depth,
                    struct qcow2_extent *ext)
{
    if (!q2_usable(img) || !ext || stop_depth == 0)
        return -EINVAL;
    q2_err_clear(img);
    if (start >= img->virtual_size || len == 0)
        return q2_err(img, -EINVAL, "qcow2_map_above: range 0x%" PRIx64 "+%"
                      PRIu64 " is outside the image", start, len);
    if (len > img->virtual_size - start)
        len = img->virtual_size - start;
    return map_out(img, start, len, flags | QCOW2_MAP_CHAIN, stop_depth,
                   ext);
}

/* ------------------------------------------------------------------------ */
/* Reading                                                                  */
/* ------------------------------------------------------------------------ */

/* "backing file 'NAME': " when l is not the image the caller opened. */
static const char *layer_prefix(const struct qcow2_image *top,
                                const struct qcow2_image *l, char *buf,
                                size_t len)
{
    if (l == top)
        return "";
    snprintf(buf, len, "backing file '%s': ", l->filename);
    return buf;
}

/* One compressed extent into buf; on failure *why says what failed. */
static int read_compressed(struct qcow2_image *top, struct qcow2_image *l,
                           const struct qcow2_extent *e, uint8_t *buf,
                           const char **why)
{
    char pfx[600];

    uint64_t in_cluster = e->start & (l->cluster_size - 1);
    int64_t n;
    int rc;

    if (!l->cbuf)
        l->cbuf = q2_buf_alloc(2 * l->cluster_size);
    if (!l->dbuf)
        l->dbuf = q2_buf_alloc(l->cluster_size);
    if (!l->cbuf || !l->dbuf)
        return q2_err(top, -ENOMEM, "out of memory");
    /* key: the descriptor's offset + 1 (0 means empty) */
    if (l->dbuf_key != e->offset + 1) {
        l->dbuf_key = 0;
        n = q2_pread_full(&l->io, l->cbuf, e->csize, e->offset);
        *why = "compressed cluster cannot be read";
        if (n < 0)
            return q2_err(top, (int)n, "%scannot read compressed cluster: "
                          "%s (at offset 0x%" PRIx64 ")",
                          layer_prefix(top, l, pfx, sizeof(pfx)),
                          qcow2_strerror((int)n), e->offset);
        rc = q2_decompress(l->hp.h.compression_type, l->cbuf, e->csize,
                           l->dbuf, l->cluster_size);
        *why = l->hp.h.compression_type
                   ? "compressed cluster cannot be decompressed (zstd)"
                   : "compressed cluster cannot be decompressed (zlib)";
        if (rc < 0)
            return q2_err(top, rc, "%scompressed cluster cannot be "
                          "decompressed (%s) (at offset 0x%" PRIx64 ")",
                          layer_prefix(top, l, pfx, sizeof(pfx)),
                          l->hp.h.compression_type ? "zstd" : "zlib",
                          e->offset);
        l->dbuf_key = e->offset + 1;
    }
    memcpy(buf, l->dbuf + in_cluster, e->length);
    return 0;
}

/* A read of extent e (into buf) that failed with rc: in salvage mode
 * (damage, not a lack of memory) the bytes become zeros and are reported,
 * and the failure is forgotten. */
static bool salvaged(struct qcow2_image *img, const struct qcow2_image *l,
                     const struct qcow2_extent *e, uint8_t *buf, int rc,
                     const char *why)
{
    if (!img->salvage || rc == -ENOMEM || !why)
        return false;
    q2_err_clear(img);
    memset(buf, 0, e->length);
    report(img, l, e->start, e->length, why);
    return true;
}

/* Read guest bytes of the current view through extents from map_chain
 * with `mflags` (QCOW2_MAP_CHAIN: the chain; 0: this image alone, where
 * unallocated ranges read as zeros). */
static int64_t read_view(struct qcow2_image *img, void *buf, size_t len,
                         uint64_t off, unsigned mflags)
{
    uint8_t *p = buf;
    uint64_t done = 0;
    struct qcow2_extent e;
    int rc;

    if (off >= img->virtual_size)
        return 0;
    if (len > img->virtual_size - off)
        len = (size_t)(img->virtual_size - off);
    while (done < len) {
        rc = map_chain(img, off + done, len - done, mflags, UINT32_MAX, &e);
        if (rc < 0)
            return rc;
        if (e.flags & QCOW2_EXTENT_ZERO || !(e.flags & QCOW2_EXTENT_DATA)) {
            memset(p + done, 0, e.length);
        } else if (e.layer->encrypted) {
            char pfx[600];
            return q2_err(img, -ENOTSUP, "%simage is encrypted; qchain "
                          "cannot read encrypted data",
                          layer_prefix(img, e.layer, pfx, sizeof(pfx)));
        } else if (e.kind == QCOW2_KIND_COMPRESSED) {
            const char *why = NULL;
            rc = read_compressed(img, e.layer, &e, p + done, &why);
            if (rc < 0 && !salvaged(img, e.layer, &e, p + done, rc, why))
                return rc;
        } else {
            struct qcow2_io *io = &e.layer->io;
            int64_t n;
            if (e.in_data_file) {
                rc = q2_data_io(e.layer, &io);
                if (rc < 0)
                    return e.layer == img ? rc
                                          : q2_err(img, rc, "backing file "
                                                   "'%s': %s",
                                                   e.layer->filename,
                                                   e.layer->errmsg);
            }
            n = q2_pread_full(io, p + done, e.length, e.offset);
            if (n < 0 && !salvaged(img, e.layer, &e, p + done, (int)n,
                                   "data cannot be read")) {
                char pfx[600];
                return q2_err(img, (int)n, "%scannot read data: %s (at "
                              "offset 0x%" PRIx64 ")",
                              layer_prefix(img, e.layer, pfx, sizeof(pfx)),
                              qcow2_strerror((int)n), e.offset);
            }
        }
        done += e.length;
    }
    return (int64_t)done;
}

int64_t qcow2_pread(struct qcow2_image *img, void *buf, size_t len,
                    uint64_t off)
{
    if (!q2_usable(img) || (!buf && len))
        return -EINVAL;
    q2_err_clear(img);
    return read_view(img, buf, len, off, QCOW2_MAP_CHAIN);
}

/* ------------------------------------------------------------------------ */
/* Forensic reads: one layer alone, the VM state of a snapshot              */
/* ------------------------------------------------------------------------ */

int64_t qcow2_layer_pread(struct qcow2_image *img, void *buf, size_t len,
                          uint64_t off)
{
    if (!q2_usable(img) || (!buf && len))
        return -EINVAL;
    q2_err_clear(img);
    return read_view(img, buf, len, off, 0);
}

/*
 * Where QEMU keeps the VM state of snapshot idx (qcow2_vm_state_offset at
 * the time of savevm): guest offsets from the first L1 index past the
 * snapshot's disk size, l1_index << (cluster_bits + l2_bits), read and
 * written like guest data through the snapshot's L1 table.  Every byte of
 * it must be addressable by that table: QEMU grows the active L1 over the
 * VM state before it copies the table into the snapshot, so a VM state
 * reaching past the snapshot's L1 comes from a damaged or forged entry
 * (and would otherwise let one number describe petabytes of zeros).
 */
static int vmstate_locate(struct qcow2_image *img, unsigned idx,
                          struct qcow2_vmstate *out)
{
    const struct qcow2_snapshot *s = &img->snaps[idx].pub;
    unsigned shift = img->cluster_bits + img->l2_bits;
    uint64_t first = (s->disk_size >> shift) +
                     ((s->disk_size & ((1ull << shift) - 1)) != 0);
    uint64_t entries, span;
    int rc;

    rc = q2_snapshot_l1_check(img, idx);
    if (rc < 0)
        return rc;
    if (s->vm_state_size) {
        /* first < l1_size <= 4 Mi entries, so nothing below overflows */
        if (first >= s->l1_size)
            return q2_err(img, -QCOW2_ECORRUPT, "snapshot %s: VM state of "
                          "%" PRIu64 " bytes starts at L1 index %" PRIu64
                          ", past the snapshot's L1 table of %" PRIu32
                          " entries (at offset 0x%" PRIx64 ")", s->id,
                          s->vm_state_size, first, s->l1_size,
                          s->entry_offset);
        entries = s->l1_size - first;
        span = entries << shift;
        if (s->vm_state_size > span)
            return q2_err(img, -QCOW2_ECORRUPT, "snapshot %s: VM state of "
                          "%" PRIu64 " bytes extends past the snapshot's L1 "
                          "table (%" PRIu64 " bytes from guest offset 0x%"
                          PRIx64 " are mapped) (at offset 0x%" PRIx64 ")",
                          s->id, s->vm_state_size, span, first << shift,
                          s->entry_offset);
    } else if (first > (UINT64_MAX >> shift)) {
        first = 0; /* no VM state: its offset does not matter */
    }
    out->offset = first << shift;
    out->size = s->vm_state_size;
    return 0;
}

/* The image's view while a VM state is read, to restore afterwards. */
struct saved_view {
    uint64_t l1_offset;
    uint32_t l1_size;
    bool l1_checked;
    uint64_t virtual_size;
};

/* Switch the view to snapshot idx's L1 table with the guest size ending
 * where its VM state ends. */
static void enter_vmstate_view(struct qcow2_image *img, unsigned idx,
                               const struct qcow2_vmstate *vm,
                               struct saved_view *save)
{
    const struct qcow2_snapshot *s = &img->snaps[idx].pub;

    save->l1_offset = img->l1_offset;
    save->l1_size = img->l1_size;
    save->l1_checked = img->l1_checked;
    save->virtual_size = img->virtual_size;
    img->l1_offset = s->l1_table_offset;
    img->l1_size = s->l1_size;
    img->l1_checked = img->vmstate_checked == (int)idx;
    img->virtual_size = vm->offset + vm->size;
    img->salvage_base = vm->offset; /* salvage reports: VM state offsets */
}

static void leave_vmstate_view(struct qcow2_image *img, unsigned idx,
                               const struct saved_view *save)
{
    if (img->l1_checked)
        img->vmstate_checked = (int)idx;
    img->l1_offset = save->l1_offset;
    img->l1_size = save->l1_size;
    img->l1_checked = save->l1_checked;
    img->virtual_size = save->virtual_size;
    img->salvage_base = 0;
}

static int vmstate_args(struct qcow2_image *img, unsigned idx,
                        const char *fn)
{
    if (!q2_usable(img))
        return -EINVAL;
    q2_err_clear(img);
    if (img->format != QCOW2_FORMAT_QCOW2 || idx >= img->n_snaps)
        return q2_err(img, -EINVAL, "%s: no snapshot %u", fn, idx);
    return 0;
}

int qcow2_vmstate_get(struct qcow2_image *img, unsigned idx,
                      struct qcow2_vmstate *out)
{
    struct qcow2_vmstate vm;
    int rc;

    if (!out)
        return -EINVAL;
    rc = vmstate_args(img, idx, "qcow2_vmstate_get");
    if (rc < 0)
        return rc;
    rc = vmstate_locate(img, idx, &vm);
    if (rc < 0)
        return rc;
    *out = vm;
    return 0;
}

int qcow2_vmstate_map(struct qcow2_image *img, unsigned idx, uint64_t start,
                      uint64_t len, struct qcow2_extent *ext)
{
    struct qcow2_vmstate vm;
    struct saved_view save;
    int rc;

    if (!ext)
        return -EINVAL;
    rc = vmstate_args(img, idx, "qcow2_vmstate_map");
    if (rc < 0)
        return rc;
    rc = vmstate_locate(img, idx, &vm);
    if (rc < 0)
        return rc;
    if (start >= vm.size || len == 0)
        return q2_err(img, -EINVAL, "qcow2_vmstate_map: range 0x%" PRIx64
                      "+%" PRIu64 " is outside the VM state", start, len);
    if (len > vm.size - start)
        len = vm.size - start;
    enter_vmstate_view(img, idx, &vm, &save);
    rc = map_out(img, vm.offset + start, len, 0, UINT32_MAX, ext);
    leave_vmstate_view(img, idx, &save);
    if (rc == 0)
        ext->start = start;
    return rc;
}

int64_t qcow2_vmstate_pread(struct qcow2_image *img, unsigned idx, void *buf,
                            size_t len, uint64_t off)
{
    struct qcow2_vmstate vm;
    struct saved_view save;
    int64_t n;
    int rc;

    if (!buf && len)
        return -EINVAL;
    rc = vmstate_args(img, idx, "qcow2_vmstate_pread");
    if (rc < 0)
        return rc;
    rc = vmstate_locate(img, idx, &vm);
    if (rc < 0)
        return rc;
    if (off >= vm.size)
        return 0;
    if (len > vm.size - off)
        len = (size_t)(vm.size - off);
    enter_vmstate_view(img, idx, &vm, &save);
    n = read_view(img, buf, len, vm.offset + off, 0);
    leave_vmstate_view(img, idx, &save);
    return n;
}
