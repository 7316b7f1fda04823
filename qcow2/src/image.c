/*
 * image.c - the handle's lifecycle: opening images and chains, describing
 * them, closing them.
 *
 * Opening a chain (qcow2_open_io):
 *   1. probe or take the format; parse and validate the header (header.c),
 *      snapshot table (snapshot.c) and bitmap directory (bitmap.c);
 *   2. unless QCOW2_OPEN_NO_BACKING, walk down the backing names with a
 *      loop (never recursion): resolve each name against the path string of
 *      the image that names it (backing.c), refuse protocol and json: names,
 *      open the file through the caller's resolver, compare its identity
 *      (device, inode) with every layer above it, and stop at the depth cap.
 *   A failure anywhere leaves the handle with a message that names the
 *   layer and shows the chain so far; qcow2_close() frees what was opened.
 *
 * Reading and mapping live in read.c; writing in write.c; this file wires
 * the handle's lifecycle and describes what was opened.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "endian.h"
#include "format.h"
#include "internal.h"

const char *qcow2_version_string(void)
{
    return QCOW2_VERSION_STRING;
}

struct qcow2_image *qcow2_new(void)
{
    struct qcow2_image *img = calloc(1, sizeof(*img));

    if (img) {
        img->magic = Q2_HANDLE_MAGIC;
        img->state = Q2_STATE_NEW;
        img->selected_snapshot = -1;
        img->vmstate_checked = -1;
        img->prealloc = -1;
    }
    return img;
}

static void release(struct qcow2_image *img)
{
    if (img->io_open && img->io.close)
        img->io.close(img->io.ctx);
    img->io_open = false;
    if (img->data_io_open && img->data_io.close)
        img->data_io.close(img->data_io.ctx);
    img->data_io_open = false;
    q2_cache_free(&img->cache);
    free(img->hp.exts);
    free(img->hdr_buf);
    free(img->filename);
    free(img->backing_name);
    free(img->backing_format);
    free(img->backing_path);
    free(img->data_file_name);
    free(img->cbuf);
    free(img->dbuf);
    free(img->wbuf);
    free(img->pending_free);
    q2_snap_free(img->snaps, img->n_snaps);
    q2_bitmap_free(img->bitmaps, img->n_bitmaps);
}

int qcow2_close(struct qcow2_image *img)
{
    int rc = 0;

    while (img && img->magic == Q2_HANDLE_MAGIC) {
        struct qcow2_image *next = img->backing;
        if (img->writable && img->state == Q2_STATE_OPEN) {
            int r = q2_write_close(img);
            if (r < 0 && rc == 0)
                rc = r;
        }
        release(img);
        img->magic = 0;
        free(img);
        img = next;
    }
    return rc;
}

int qcow2_close_keep_io(struct qcow2_image *img, struct qcow2_io *io)
{
    int rc = 0, r;

    if (!img || img->magic != Q2_HANDLE_MAGIC || !io || !img->io_open)
        return -EINVAL;
    if (img->writable && img->state == Q2_STATE_OPEN)
        rc = q2_write_close(img);
    img->writable = false; /* closed for writing: done above */
    *io = img->io;
    img->io_open = false;
    r = qcow2_close(img);
    return rc < 0 ? rc : r;
}

/* A NUL-terminated copy of a name read from the file; names with NUL bytes
 * inside are corrupt (QEMU would silently cut them). */
static int copy_name(struct qcow2_image *img, const uint8_t *p, size_t n,
                     const char *what, uint64_t off, char **out)
{
    char *s;

    if (memchr(p, 0, n))
        return q2_err(img, -QCOW2_ECORRUPT, "%s contains a NUL byte "
                      "(at offset 0x%" PRIx64 ")", what, off);
    s = malloc(n + 1);
    if (!s)
        return -ENOMEM;
    memcpy(s, p, n);
    s[n] = '\0';
    *out = s;
    return 0;
}

static int read_exact(struct qcow2_image *img, void *buf, size_t len,
                      uint64_t off, const char *what)
{
    int64_t n = img->io.pread(img->io.ctx, buf, len, off);

    if (n < 0)
        return q2_err(img, (int)n, "cannot read %s: %s (at offset 0x%" PRIx64
                      ")", what, qcow2_strerror((int)n), off);
    if ((size_t)n < len)
        return q2_err(img, -QCOW2_ECORRUPT, "%s runs past the end of the "
                      "file (at offset 0x%" PRIx64 ")", what, off);
    return 0;
}

/*
 * A part of the image the views a read-only open serves do not need (the
 * snapshot table for the current view, the bitmap directory) is unusable:
 * a read-only or check-mode open records it (qcow2_damage_get), says it
 * through the warn callback with its offset, and goes on without it; a
 * writable open (which would rewrite or depend on it) refuses the image
 * with the message, as before.  Returns 0 (left aside) or the error.
 */
__attribute__((format(printf, 5, 6)))
static int damaged(struct qcow2_image *img, const char *part, uint64_t off,
                   int err, const char *fmt, ...)
{
    struct q2_damage *d;
    char msg[sizeof(d->msg)];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if ((img->opts.flags & QCOW2_OPEN_RDWR) &&
        !(img->opts.flags & QCOW2_OPEN_CHECK))
        return q2_err(img, err, "%s", msg);
    if (img->n_damage < Q2_MAX_DAMAGE) {
        d = &img->damage[img->n_damage++];
        d->part = part;
        d->offset = off;
        d->err = err;
        memcpy(d->msg, msg, sizeof(d->msg));
    }
    q2_warn(img, "'%s': %s", img->filename, msg);
    return 0;
}

static int snaps_damaged(struct qcow2_image *img, uint64_t off,
                         const char *msg)
{
    int rc = damaged(img, "snapshot table", off, -QCOW2_ECORRUPT, "%s",
                     msg);

    if (rc == 0)
        img->snaps_damaged = true;
    return rc;
}

/* len bytes at off, those past the end of the file (end) as zeros, as
 * QEMU reads a file.  Returns 0 or a read error. */
static int read_zero_filled(struct qcow2_image *img, uint8_t *buf,
                            uint64_t len, uint64_t off, uint64_t end)
{
    uint64_t have = off >= end ? 0 : end - off < len ? end - off : len;
    int rc = have ? read_exact(img, buf, (size_t)have, off, "snapshot table")
                  : 0;

    memset(buf + have, 0, (size_t)(len - have));
    return rc;
}

/*
 * A snapshot table cut by the end of the file (at `cut`), read with its
 * missing bytes as zeros as QEMU reads it: when the entries then parse,
 * they are loaded (qemu-img info lists them, its check counts their
 * references; so do qchain-info and qcow2_check); either way the table is
 * damaged: recorded, the snapshot calls refuse, -r all drops it.  When
 * they do not parse, the table is left aside (no snapshots).
 */
static int snaps_cut(struct qcow2_image *img, uint64_t cut, int parsed,
                     const char *parse_err)
{
    char msg[sizeof(((struct q2_damage *)0)->msg)];

    if (parsed == 0)
        snprintf(msg, sizeof(msg), "snapshot table runs past the end of "
                 "the file (at offset 0x%" PRIx64 "): its missing bytes "
                 "read as zeros, as QEMU reads them; no snapshot can be "
                 "selected", cut);
    else
        snprintf(msg, sizeof(msg), "snapshot table runs past the end of "
                 "the file (at offset 0x%" PRIx64 "), and read with zeros "
                 "it is invalid: %.300s; the image is read without "
                 "snapshots",
                 cut, parse_err);
    return snaps_damaged(img, cut, msg);
}

/* The snapshot table.  A check-mode open (QCOW2_OPEN_CHECK) loads what
 * QEMU's check-mode open loads: the first 65536 entries, and of those the
 * ones that end within 64 MiB of the table's start; the rest is counted in
 * snap_overhang for qcow2_check to report or drop.  Other opens refuse
 * such a table.  Bytes past the end of the file read as zeros (snaps_cut):
 * the work stays bounded by the 65536 entries and the 64 MiB. */
static int load_snapshots(struct qcow2_image *img)
{
    const struct qcow2_header *h = &img->hp.h;
    uint64_t off = h->snapshots_offset, end = (uint64_t)img->file_size;
    uint64_t pos = 0, prev;
    uint8_t fixed[Q2_SNAP_FIXED_LEN], *buf;
    bool lenient = (img->opts.flags & QCOW2_OPEN_CHECK) != 0;
    uint32_t i, count = h->nb_snapshots;
    struct q2_snapshot *snaps = NULL;
    char err[256] = "";
    int rc;

    if (count == 0)
        return 0;
    if (count > Q2_MAX_SNAPSHOTS) /* only a lenient header parse lets it */
        count = Q2_MAX_SNAPSHOTS;
    /* first pass: the table's length, from the fixed parts */
    for (i = 0; i < count; i++) {
        prev = pos;
        pos = (pos + 7) & ~7ull;
        rc = read_zero_filled(img, fixed, sizeof(fixed), off + pos, end);
        if (rc < 0)
            return rc;
        pos += Q2_SNAP_FIXED_LEN + (uint64_t)q2_load_be32(fixed + 36) +
               q2_load_be16(fixed + 12) + q2_load_be16(fixed + 14);
        if (q2_load_be32(fixed + 36) > Q2_MAX_SNAPSHOT_EXTRA)
            return q2_err(img, -QCOW2_ECORRUPT, "snapshot %" PRIu32 ": extra "
                          "data of %" PRIu32 " bytes is too large (at offset "
                          "0x%" PRIx64 ")", i, q2_load_be32(fixed + 36),
                          off + pos);
        if (pos > Q2_MAX_SNAPSHOTS_BYTES) {
            if (!lenient)
                return q2_err(img, -QCOW2_ECORRUPT, "snapshot table is "
                              "larger than 64 MiB (at offset 0x%" PRIx64 ")",
                              off);
            img->snap_too_big = true;
            count = i;
            pos = prev;
            break;
        }
    }
    img->snap_overhang = h->nb_snapshots - count;
    buf = malloc(pos ? pos : 1);
    if (!buf)
        return -ENOMEM;
    rc = read_zero_filled(img, buf, pos, off, end);
    if (rc == 0)
        rc = q2_snap_parse(buf, pos, off, count, h->version, h->size,
                           &snaps, err, sizeof(err));
    free(buf);
    if (off + pos > end && (rc == 0 || rc == -QCOW2_ECORRUPT)) {
        int r = snaps_cut(img, off > end ? off : end, rc, err);
        if (r < 0 || rc < 0) {
            q2_snap_free(snaps, rc == 0 ? count : 0);
            return r;
        }
    } else if (rc < 0) {
        return err[0] ? q2_err(img, rc, "%s", err) : rc;
    }
    img->snaps = snaps;
    img->n_snaps = count;
    return 0;
}

static int load_bitmaps(struct qcow2_image *img)
{
    const struct q2_ext *e;
    uint64_t dsize, doff;
    uint32_t nb;
    uint8_t *buf;
    char err[256];
    int rc;

    if (img->hp.ext_bitmaps < 0 ||
        !(img->hp.h.autoclear_features & Q2_AUTOCLEAR_BITMAPS))
        return 0;
    e = &img->hp.exts[img->hp.ext_bitmaps];
    nb = q2_load_be32(e->data);
    dsize = q2_load_be64(e->data + 8);
    doff = q2_load_be64(e->data + 16);
    if (img->hp.bitmaps_past_end) {
        rc = damaged(img, "bitmap directory", doff, -QCOW2_ECORRUPT,
                     "bitmap directory 0x%" PRIx64 "+%" PRIu64 " lies past "
                     "the end of the file (at offset 0x%" PRIx64 "); the "
                     "image is read without its bitmaps", doff, dsize,
                     e->off);
        if (rc == 0)
            img->bitmaps_damaged = true;
        return rc;
    }
    buf = malloc(dsize ? dsize : 1);
    if (!buf)
        return -ENOMEM;
    rc = read_exact(img, buf, dsize, doff, "bitmap directory");
    if (rc == 0) {
        rc = q2_bitmap_parse(buf, dsize, doff, nb, img->cluster_bits,
                             &img->bitmaps, err, sizeof(err));
        if (rc == -QCOW2_ECORRUPT) {
            rc = damaged(img, "bitmap directory", doff, rc, "%s; the image "
                         "is read without its bitmaps", err);
            img->bitmaps_damaged = rc == 0;
        } else if (rc < 0) {
            q2_err(img, rc, "%s", err);
        } else {
            img->n_bitmaps = nb;
        }
    }
    free(buf);
    return rc;
}

static int open_qcow2(struct qcow2_image *img)
{
    struct q2_hdr_parsed *p = &img->hp;
    uint8_t first[Q2_V3_HEADER_LEN];
    uint32_t cbits;
    size_t want;
    char err[512];
    int rc;

    /* the first cluster, or as much of the file as there is */
    want = (size_t)(img->file_size < (int64_t)sizeof(first)
                        ? img->file_size : (int64_t)sizeof(first));
    rc = read_exact(img, first, want, 0, "header");
    if (rc < 0)
        return rc;
    cbits = want >= 24 ? q2_load_be32(first + 20) : 0;
    want = (cbits >= Q2_MIN_CLUSTER_BITS && cbits <= Q2_MAX_CLUSTER_BITS)
               ? (size_t)1 << cbits : sizeof(first);
    if ((int64_t)want > img->file_size)
        want = (size_t)img->file_size;
    img->hdr_buf = malloc(want ? want : 1);
    if (!img->hdr_buf)
        return -ENOMEM;
    img->hdr_len = want;
    rc = read_exact(img, img->hdr_buf, want, 0, "header");
    if (rc < 0)
        return rc;
    rc = q2_hdr_parse_ex(img->hdr_buf, img->hdr_len,
                         (uint64_t)img->file_size,
                         ((img->opts.flags & QCOW2_OPEN_CHECK)
                              ? Q2_HDR_ANY_SNAPSHOT_COUNT : 0) |
                             Q2_HDR_DEFER_PARTS, p, err, sizeof(err));
    if (rc < 0)
        return q2_err(img, rc, "%s", err);

    img->cluster_bits = p->h.cluster_bits;
    img->cluster_size = 1ull << img->cluster_bits;
    img->extended_l2 = (p->h.incompatible_features & Q2_INCOMPAT_EXTL2) != 0;
    img->external_data =
        (p->h.incompatible_features & Q2_INCOMPAT_DATA_FILE) != 0;
    img->encrypted = p->h.crypt_method != Q2_CRYPT_NONE;
    img->l2_entry_len = img->extended_l2 ? 16 : 8;
    img->l2_bits = img->cluster_bits - (img->extended_l2 ? 4 : 3);
    img->csize_shift = 62 - (img->cluster_bits - 8);
    img->csize_mask = (1ull << (img->cluster_bits - 8)) - 1;
    img->coffset_mask = (1ull << img->csize_shift) - 1;
    img->l1_offset = p->h.l1_table_offset;
    img->l1_size = p->h.l1_size;
    img->virtual_size = p->h.size & ~511ull; /* QEMU counts whole sectors */

    if (p->backing_name) {
        rc = copy_name(img, p->backing_name, p->backing_name_len,
                       "backing file name", p->h.backing_file_offset,
                       &img->backing_name);
        if (rc < 0)
            return rc;
    }
    if (p->ext_backing_format >= 0) {
        const struct q2_ext *e = &p->exts[p->ext_backing_format];
        rc = copy_name(img, e->data, e->len, "backing format name", e->off,
                       &img->backing_format);
        if (rc < 0)
            return rc;
    }
    if (p->ext_data_file >= 0) {
        const struct q2_ext *e = &p->exts[p->ext_data_file];
        rc = copy_name(img, e->data, e->len, "external data file name",
                       e->off, &img->data_file_name);
        if (rc < 0)
            return rc;
    }
    if (img->external_data && p->h.nb_snapshots)
        return q2_err(img, -QCOW2_ECORRUPT, "internal snapshots in an image "
                      "with an external data file (at offset 0x3c)");

    rc = load_snapshots(img);
    if (rc < 0)
        return rc;
    rc = load_bitmaps(img);
    if (rc < 0)
        return rc;
    rc = q2_cache_init(&img->cache, img->cluster_size,
                       img->opts.cache_bytes ? img->opts.cache_bytes
                                             : Q2_DEFAULT_CACHE_BYTES);
    if (rc < 0)
        return rc;
    return 0;
}

/* QEMU's probe: qcow2 when the magic is there with version >= 2, raw
 * otherwise (a file shorter than 8 bytes too).  Returns 1, 0 or -errno. */
static int probe_qcow2(struct qcow2_image *img)
{
    uint8_t b[8];
    int64_t n = img->io.pread(img->io.ctx, b, sizeof(b), 0);

    if (n < 0)
        return q2_err(img, (int)n, "cannot read the image to probe its "
                      "format: %s", qcow2_strerror((int)n));
    return n == 8 && q2_load_be32(b) == Q2_MAGIC && q2_load_be32(b + 4) >= 2;
}

/* Open one layer (no backing files). */
static int open_layer(struct qcow2_image *img, const char *name,
                      const struct qcow2_open_opts *opts)
{
    int rc;

    if (q2_opts_copy(&img->opts, sizeof(img->opts), opts) < 0)
        return q2_err(img, -EINVAL, "qcow2_open: the options' size field "
                      "is not set");
    img->filename = strdup(name ? name : "");
    if (!img->filename)
        return -ENOMEM;
    img->file_size = img->io.size(img->io.ctx);
    if (img->file_size < 0)
        return q2_err(img, (int)img->file_size, "cannot get the file size: "
                      "%s", qcow2_strerror((int)img->file_size));

    if (img->opts.format && strcmp(img->opts.format, "qcow2") == 0) {
        img->format = QCOW2_FORMAT_QCOW2;
    } else if (img->opts.format && strcmp(img->opts.format, "raw") == 0) {
        img->format = QCOW2_FORMAT_RAW;
    } else if (img->opts.format) {
        return q2_err(img, -ENOTSUP, "unsupported image format '%s'",
                      img->opts.format);
    } else {
        rc = probe_qcow2(img);
        if (rc < 0)
            return rc;
        img->format = rc ? QCOW2_FORMAT_QCOW2 : QCOW2_FORMAT_RAW;
    }
    if (img->format == QCOW2_FORMAT_RAW) {
        /* QEMU counts whole sectors, rounding a raw file up */
        img->virtual_size = ((uint64_t)img->file_size + 511) & ~511ull;
        return 0;
    }
    rc = open_qcow2(img);
    return rc;
}

/* "a -> b -> c" for messages; truncated quietly when long. */
static void chain_string(const struct qcow2_image *top, char *buf, size_t len)
{
    size_t used = 0;

    buf[0] = '\0';
    for (; top && used + 1 < len; top = top->backing) {
        int n = snprintf(buf + used, len - used, "%s'%s'",
                         used ? " -> " : "", top->filename);
        if (n < 0)
            break;
        used += (size_t)n;
    }
}

static int open_chain(struct qcow2_image *top)
{
    struct qcow2_image *cur = top;
    unsigned max = top->opts.max_depth ? top->opts.max_depth
                                       : QCOW2_DEFAULT_MAX_DEPTH;
    char chain[768], err[512];
    int rc;

    while (cur->backing_name) {
        struct qcow2_open_opts o = top->opts;
        struct qcow2_image *next, *l;
        struct qcow2_io io;
        uint64_t dev, ino, d2, i2;
        unsigned ioflags = QCOW2_IO_NOLOCK;
        char *path;

        chain_string(top, chain, sizeof(chain));
        if (cur->depth + 1 > max)
            return q2_err(top, -ELOOP, "backing chain is deeper than %u "
                          "layers: %s -> ...", max, chain);
        if (q2_name_has_protocol(cur->backing_name))
            return q2_err(top, -ENOTSUP, "backing file name '%s' of '%s' is "
                          "a protocol or json: name, which qchain never "
                          "follows (chain: %s)", cur->backing_name,
                          cur->filename, chain);
        path = q2_path_combine(cur->filename, cur->backing_name);
        if (!path)
            return -ENOMEM;
        free(cur->backing_path);
        cur->backing_path = path;

        if (!(top->opts.flags & QCOW2_OPEN_FORCE_SHARE))
            ioflags = 0; /* read locks, as QEMU takes on backing files */
        memset(&io, 0, sizeof(io));
        err[0] = '\0';
        rc = top->opts.open_file
                 ? top->opts.open_file(top->opts.open_ctx, path, ioflags, &io,
                                       err, sizeof(err))
                 : qcow2_io_open_file(path, ioflags, &io, err, sizeof(err));
        if (rc < 0) {
            if (rc == -ENOENT)
                return q2_err(top, rc, "backing file '%s' of '%s' does not "
                              "exist (chain: %s)", path, cur->filename,
                              chain);
            return q2_err(top, rc, "cannot open backing file '%s' of '%s': "
                          "%s (chain: %s)", path, cur->filename,
                          err[0] ? err : qcow2_strerror(rc), chain);
        }
        next = qcow2_new();
        if (!next) {
            io.close(io.ctx);
            return -ENOMEM;
        }
        next->io = io;
        next->io_open = true;
        next->depth = cur->depth + 1;
        cur->backing = next; /* owned from here on */

        if (io.identity && io.identity(io.ctx, &dev, &ino) == 0) {
            for (l = top; l != next; l = l->backing) {
                if (l->io.identity && l->io.identity(l->io.ctx, &d2, &i2) == 0
                    && d2 == dev && i2 == ino)
                    return q2_err(top, -ELOOP, "backing chain loops: '%s' "
                                  "(backing file of '%s') is '%s' "
                                  "(chain: %s)", path, cur->filename,
                                  l->filename, chain);
            }
        }
        o.flags = (top->opts.flags & QCOW2_OPEN_FORCE_SHARE) |
                  QCOW2_OPEN_NO_BACKING;
        o.format = cur->backing_format;
        rc = open_layer(next, path, &o);
        if (rc < 0)
            return q2_err(top, rc, "backing file '%s' of '%s': %s "
                          "(chain: %s)", path, cur->filename,
                          next->errmsg[0] ? next->errmsg : qcow2_strerror(rc),
                          chain);
        next->state = Q2_STATE_OPEN;
        if (!cur->backing_format)
            q2_warn(top, "backing file format of '%s' is not recorded; "
                    "probed '%s' as %s", cur->filename, path,
                    next->format == QCOW2_FORMAT_QCOW2 ? "qcow2" : "raw");
        cur = next;
    }
    return 0;
}

/* Writable: checks, then (lazy refcounts left behind by a QEMU that did
 * not close the image: the refcounts may be too low) the refcounts rebuilt
 * from the references, then the writer's state. */
static int open_writable(struct qcow2_image *img)
{
    int rc = q2_write_prepare(img);

    if (rc == 0 && img->format == QCOW2_FORMAT_QCOW2 &&
        (img->hp.h.incompatible_features & Q2_INCOMPAT_DIRTY) &&
        !(img->opts.flags & QCOW2_OPEN_CHECK))
        rc = q2_rebuild_refcounts(img);
    return rc < 0 ? rc : q2_write_begin(img);
}

int qcow2_open_io(struct qcow2_image *img, struct qcow2_io *io,
                  const char *name, const struct qcow2_open_opts *opts)
{
    int rc;

    if (!img || img->magic != Q2_HANDLE_MAGIC || img->state != Q2_STATE_NEW ||
        !io || !io->pread || !io->size) {
        if (io && io->close)
            io->close(io->ctx);
        return img ? q2_err(img, -EINVAL, "qcow2_open_io: invalid argument")
                   : -EINVAL;
    }
    q2_err_clear(img);
    img->io = *io;
    img->io_open = true;
    img->state = Q2_STATE_CLOSED; /* until fully open */
    rc = open_layer(img, name, opts);
    if (rc == 0 && img->backing_name &&
        !(img->opts.flags & QCOW2_OPEN_NO_BACKING)) {
        /* the resolved name is known even when the chain is not opened */
        rc = open_chain(img);
    } else if (rc == 0 && img->backing_name &&
               !q2_name_has_protocol(img->backing_name)) {
        img->backing_path = q2_path_combine(img->filename, img->backing_name);
        if (!img->backing_path)
            rc = -ENOMEM;
    }
    if (rc == 0 && (img->opts.flags & QCOW2_OPEN_RDWR))
        rc = open_writable(img);
    if (rc < 0) {
        img->writable = false;
        if (!img->err_set)
            q2_err(img, rc, "%s", qcow2_strerror(rc));
        return rc;
    }
    img->state = Q2_STATE_OPEN;
    return 0;
}

int qcow2_open(struct qcow2_image *img, const char *path,
               const struct qcow2_open_opts *opts)
{
    struct qcow2_io io;
    char err[512] = "";
    unsigned flags = 0;
    int rc;

    if (!img || img->magic != Q2_HANDLE_MAGIC || img->state != Q2_STATE_NEW ||
        !path)
        return img ? q2_err(img, -EINVAL, "qcow2_open: invalid argument")
                   : -EINVAL;
    if (opts && (opts->flags & QCOW2_OPEN_FORCE_SHARE))
        flags |= QCOW2_IO_NOLOCK;
    if (opts && (opts->flags & QCOW2_OPEN_RDWR))
        flags |= QCOW2_IO_RDWR;
    rc = opts && opts->open_file
             ? opts->open_file(opts->open_ctx, path, flags, &io, err,
                               sizeof(err))
             : qcow2_io_open_file(path, flags, &io, err, sizeof(err));
    if (rc < 0) {
        q2_err_clear(img);
        return q2_err(img, rc, "%s", err[0] ? err : qcow2_strerror(rc));
    }
    return qcow2_open_io(img, &io, path, opts);
}

/* ------------------------------------------------------------------------ */

int qcow2_info_get(const struct qcow2_image *img, struct qcow2_info *out)
{
    struct qcow2_info i;
    const struct qcow2_header *h;

    if (!q2_usable(img) || !out)
        return -EINVAL;
    h = &img->hp.h;
    memset(&i, 0, sizeof(i));
    i.format = img->format;
    i.filename = img->filename;
    i.virtual_size = img->virtual_size;
    i.file_size = img->file_size;
    i.fixed_size = q2_fixed_size(img);
    i.actual_size = img->io.allocated ? img->io.allocated(img->io.ctx) : -1;
    if (img->format == QCOW2_FORMAT_QCOW2) {
        i.cluster_size = (uint32_t)img->cluster_size;
        i.version = h->version;
        i.refcount_bits = 1u << h->refcount_order;
        i.compression = h->compression_type == Q2_COMPRESSION_ZSTD ? "zstd"
                                                                    : "zlib";
        i.dirty = (h->incompatible_features & Q2_INCOMPAT_DIRTY) != 0;
        i.corrupt = (h->incompatible_features & Q2_INCOMPAT_CORRUPT) != 0;
        i.lazy_refcounts =
            (h->compatible_features & Q2_COMPAT_LAZY_REFCOUNTS) != 0;
        i.extended_l2 = img->extended_l2;
        i.encrypted = img->encrypted;
        i.crypt_method = h->crypt_method;
        i.backing_name = img->backing_name;
        i.backing_format = img->backing_format;
        i.backing_path = img->backing_path;
        i.data_file = img->data_file_name;
        i.data_file_raw =
            (h->autoclear_features & Q2_AUTOCLEAR_DATA_FILE_RAW) != 0;
        i.has_external_data = img->external_data;
        i.nb_extensions = img->hp.n_exts;
        i.nb_features = img->hp.ext_feature_table >= 0
                            ? img->hp.exts[img->hp.ext_feature_table].len /
                                  Q2_FEATURE_ENTRY_LEN
                            : 0;
        i.nb_snapshots = img->n_snaps;
        i.nb_bitmaps = img->n_bitmaps;
        i.bitmaps_valid = img->hp.ext_bitmaps >= 0 &&
                          (h->autoclear_features & Q2_AUTOCLEAR_BITMAPS);
    }
    *out = i;
    return 0;
}

const struct qcow2_header *qcow2_header_get(const struct qcow2_image *img)
{
    if (!q2_usable(img) || img->format != QCOW2_FORMAT_QCOW2)
        return NULL;
    return &img->hp.h;
}

int qcow2_extension_get(const struct qcow2_image *img, unsigned i,
                        struct qcow2_extension *out)
{
    const struct q2_ext *e;

    if (!q2_usable(img) || img->format != QCOW2_FORMAT_QCOW2 ||
        i >= img->hp.n_exts || !out)
        return -EINVAL;
    e = &img->hp.exts[i];
    out->type = e->type;
    out->length = e->len;
    out->offset = e->off;
    out->data = e->data;
    out->known = e->type == Q2_EXT_BACKING_FORMAT ||
                 e->type == Q2_EXT_FEATURE_TABLE ||
                 e->type == Q2_EXT_BITMAPS || e->type == Q2_EXT_CRYPTO ||
                 e->type == Q2_EXT_DATA_FILE;
    return 0;
}

int qcow2_feature_get(const struct qcow2_image *img, unsigned i,
                      struct qcow2_feature *out)
{
    const struct q2_ext *e;
    const uint8_t *f;
    size_t k;

    if (!q2_usable(img) || img->format != QCOW2_FORMAT_QCOW2 ||
        img->hp.ext_feature_table < 0 || !out)
        return -EINVAL;
    e = &img->hp.exts[img->hp.ext_feature_table];
    if (i >= e->len / Q2_FEATURE_ENTRY_LEN)
        return -EINVAL;
    f = e->data + (size_t)i * Q2_FEATURE_ENTRY_LEN;
    out->type = f[0];
    out->bit = f[1];
    for (k = 0; k < 46 && f[2 + k]; k++)
        out->name[k] = (f[2 + k] >= 0x20 && f[2 + k] < 0x7f)
                           ? (char)f[2 + k] : '?';
    out->name[k] = '\0';
    return 0;
}

int qcow2_snapshot_get(const struct qcow2_image *img, unsigned i,
                       struct qcow2_snapshot *out)
{
    if (!q2_usable(img) || i >= img->n_snaps || !out)
        return -EINVAL;
    *out = img->snaps[i].pub;
    return 0;
}

int qcow2_damage_get(const struct qcow2_image *img, unsigned i,
                     struct qcow2_damage *out)
{
    const struct q2_damage *d;

    if (!q2_usable(img) || i >= img->n_damage || !out)
        return -EINVAL;
    d = &img->damage[i];
    out->part = d->part;
    out->offset = d->offset;
    out->err = d->err;
    out->message = d->msg;
    return 0;
}

/* The message of the snapshot table's damage (the open recorded it). */
static const char *snaps_damage_msg(const struct qcow2_image *img)
{
    unsigned i;

    for (i = 0; i < img->n_damage; i++)
        if (strcmp(img->damage[i].part, "snapshot table") == 0)
            return img->damage[i].msg;
    return "the snapshot table is unusable";
}

int qcow2_snapshot_find(const struct qcow2_image *img, const char *which)
{
    unsigned i;

    if (!q2_usable(img) || !which)
        return -EINVAL;
    if (img->snaps_damaged)
        return -QCOW2_ECORRUPT;
    for (i = 0; i < img->n_snaps; i++)
        if (strcmp(img->snaps[i].id, which) == 0)
            return (int)i;
    for (i = 0; i < img->n_snaps; i++)
        if (strcmp(img->snaps[i].name, which) == 0)
            return (int)i;
    return -ENOENT;
}

int qcow2_snapshot_select(struct qcow2_image *img, const char *which)
{
    const struct qcow2_snapshot *s;
    int idx, rc;

    if (!q2_usable(img))
        return -EINVAL;
    q2_err_clear(img);
    if (img->writable)
        return q2_err(img, -EINVAL, "a snapshot view needs a read-only "
                      "image");
    if (img->snaps_damaged)
        return q2_err(img, -QCOW2_ECORRUPT, "snapshot '%s': the snapshot "
                      "table is unusable: %s", which, snaps_damage_msg(img));
    idx = qcow2_snapshot_find(img, which);
    if (idx < 0)
        return q2_err(img, -ENOENT, "snapshot '%s' not found", which);
    rc = q2_snapshot_l1_check(img, (unsigned)idx);
    if (rc < 0)
        return rc;
    s = &img->snaps[idx].pub;
    /* QEMU (qcow2_snapshot_load_tmp) swaps in the snapshot's L1 table
     * and nothing else: the guest size stays the image's, and ranges past
     * the snapshot's L1 read as unallocated */
    img->l1_offset = s->l1_table_offset;
    img->l1_size = s->l1_size;
    img->selected_snapshot = idx;
    img->dbuf_key = 0;
    img->l1_checked = false;
    return 0;
}

int qcow2_bitmap_get(const struct qcow2_image *img, unsigned i,
                     struct qcow2_bitmap *out)
{
    if (!q2_usable(img) || i >= img->n_bitmaps || !out)
        return -EINVAL;
    *out = img->bitmaps[i].pub;
    return 0;
}

struct qcow2_image *qcow2_backing(const struct qcow2_image *img)
{
    return q2_usable(img) ? img->backing : NULL;
}

const char *qcow2_filename(const struct qcow2_image *img)
{
    return q2_usable(img) ? img->filename : NULL;
}

int qcow2_identity(const struct qcow2_image *img, uint64_t *dev,
                   uint64_t *ino)
{
    if (!q2_usable(img) || !dev || !ino)
        return -EINVAL;
    if (!img->io.identity)
        return -ENOTSUP;
    return img->io.identity(img->io.ctx, dev, ino);
}

uint64_t qcow2_virtual_size(const struct qcow2_image *img)
{
    return q2_usable(img) ? img->virtual_size : 0;
}

/* Same host bytes of the same file (qcow2.h). */
bool qcow2_extent_same_bytes(const struct qcow2_extent *a,
                             const struct qcow2_extent *b)
{
    uint64_t da, ia, db, ib;

    if (!a || !b || a->kind != b->kind || a->in_data_file != b->in_data_file ||
        a->offset != b->offset)
        return false;
    if (a->kind == QCOW2_KIND_DATA) {
        if (!(a->flags & b->flags & QCOW2_EXTENT_OFFSET_VALID))
            return false;
    } else if (a->kind != QCOW2_KIND_COMPRESSED || a->csize != b->csize) {
        return false;
    }
    return qcow2_identity(a->layer, &da, &ia) == 0 &&
           qcow2_identity(b->layer, &db, &ib) == 0 && da == db && ia == ib;
}
