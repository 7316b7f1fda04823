/*
 * rebase.c - change the backing file an image names (qemu-img rebase -u):
 * the backing file name and the backing format extension in cluster 0.
 *
 *   cluster 0:  header (0 .. header_length)
 *               extensions (backing format first, as QEMU writes them)
 *               end marker
 *               backing file name at backing_file_offset
 *
 * The switch is crash safe under the model of a power loss the project
 * tests against (a write reaches the disk sector by sector; nothing is
 * durable before a flush): the new name is written into unused space of
 * cluster 0 and synced first; then sector 0, which holds both the name's
 * offset and length (bytes 8..19) and the backing format extension, is
 * rewritten in one 512-byte write and synced.  A crash leaves either the
 * old or the new pair of name and format, never a mix.  When the format
 * extension is missing or lies past sector 0, the extensions are laid out
 * anew in steps that keep that promise (rewrite_cluster0).  A header that
 * leaves no room for either is refused: QEMU would rewrite the whole first
 * cluster at once, which a torn write can spoil.  Removing the backing
 * file (qemu-img rebase -b "") takes the same ways: sector 0 alone where
 * the layout without the format extension differs from today's only
 * there, else the steps.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "endian.h"
#include "format.h"
#include "internal.h"

#define SECTOR 512

static uint64_t pad8(uint64_t n)
{
    return (n + 7) & ~7ull;
}

static int write_sync(struct qcow2_image *img, const void *buf, size_t len,
                      uint64_t off)
{
    int64_t n = img->io.pwrite(img->io.ctx, buf, len, off);
    int rc;

    if (n < 0)
        return q2_err(img, (int)n, "cannot write the header: %s",
                      qcow2_strerror((int)n));
    rc = img->io.flush(img->io.ctx);
    return rc < 0 ? q2_err(img, rc, "cannot flush the header: %s",
                           qcow2_strerror(rc)) : 0;
}

/* Cluster 0's header and extensions laid out anew in out (which holds the
 * old cluster's bytes): header, format extension (none when fmt is NULL),
 * the other extensions (without the feature name table when `lean`), end
 * marker.  Returns where
 * the end marker ends, or 0 when that passes `room`. */
static uint64_t layout_exts(uint8_t *out, uint64_t room,
                            const struct q2_hdr_parsed *p, const char *fmt,
                            bool lean)
{
    uint64_t pos = p->h.header_length;
    unsigned i;

    if (fmt) {
        size_t flen = strlen(fmt);
        if (pos + 8 + pad8(flen) + 8 > room)
            return 0;
        q2_store_be32(out + pos, Q2_EXT_BACKING_FORMAT);
        q2_store_be32(out + pos + 4, (uint32_t)flen);
        memset(out + pos + 8, 0, pad8(flen));
        memcpy(out + pos + 8, fmt, flen);
        pos += 8 + pad8(flen);
    }
    for (i = 0; i < p->n_exts; i++) {
        const struct q2_ext *e = &p->exts[i];
        if (e->type == Q2_EXT_BACKING_FORMAT ||
            (lean && e->type == Q2_EXT_FEATURE_TABLE))
            continue;
        if (pos + 8 + pad8(e->len) + 8 > room)
            return 0;
        q2_store_be32(out + pos, e->type);
        q2_store_be32(out + pos + 4, e->len);
        memset(out + pos + 8, 0, pad8(e->len));
        memmove(out + pos + 8, e->data, e->len);
        pos += 8 + pad8(e->len);
    }
    memset(out + pos, 0, 8); /* end marker */
    return pos + 8;
}

static void place_name(uint8_t *out, const char *name, uint64_t off)
{
    size_t nlen = strlen(name);

    memcpy(out + off, name, nlen);
    q2_store_be64(out + 8, off);
    q2_store_be32(out + 16, (uint32_t)nlen);
}

/* How the switch is made (each way keeps a whole old or new header on the
 * disk at every moment under sector-by-sector tearing):
 *  SW_SECTOR: the format extension sits in sector 0 with room for the new
 *    format: 1. the new name where nothing reads it yet, 2. sector 0 with
 *    offset, length and format together;
 *  SW_STEPS: the extensions are laid out anew, in steps (rewrite_cluster0);
 *  SW_REMOVE_ONE: no backing file any more (offset and length zero, no
 *    format extension), and the new layout differs from the old in sector
 *    0 only: one write of sector 0;
 *  SW_REMOVE_STEPS: no backing file, the layout changes past sector 0: the
 *    steps of SW_STEPS without a name;
 *  SW_NONE: even the lean header overflows sector 0, or the first cluster
 *    cannot hold the new name apart from what it holds: refused, since
 *    only a torn-prone rewrite of cluster 0 (what QEMU does) would do. */
enum sw_kind { SW_SECTOR, SW_STEPS, SW_REMOVE_ONE, SW_REMOVE_STEPS, SW_NONE };

struct sw_plan {
    enum sw_kind kind;
    uint64_t used; /* end of what cluster 0 uses today */
    uint64_t at;   /* where the new name goes */
};

/* Where the header and extensions of the new layout end (lean: without the
 * feature name table); 0 when they pass `room`. */
static uint64_t exts_end(const struct q2_hdr_parsed *p, const char *fmt,
                         bool lean, uint64_t room)
{
    uint64_t pos = p->h.header_length + (fmt ? 8 + pad8(strlen(fmt)) : 0);
    unsigned i;

    for (i = 0; i < p->n_exts; i++) {
        const struct q2_ext *e = &p->exts[i];
        if (e->type == Q2_EXT_BACKING_FORMAT ||
            (lean && e->type == Q2_EXT_FEATURE_TABLE))
            continue;
        pos += 8 + pad8(e->len);
    }
    pos += 8;
    return pos <= room ? pos : 0;
}

/* End of what cluster 0 uses today: header, extensions, end marker, name. */
static uint64_t cluster0_used(const struct q2_hdr_parsed *p)
{
    uint64_t used = p->h.header_length;

    if (p->n_exts) {
        const struct q2_ext *last = &p->exts[p->n_exts - 1];
        used = last->off + 8 + pad8(last->len);
    }
    used += 8;
    if (p->h.backing_file_offset &&
        p->h.backing_file_offset + p->h.backing_file_size > used)
        used = p->h.backing_file_offset + p->h.backing_file_size;
    return used;
}

/* The removal's plan: the layout without a format extension is built from
 * the cluster's bytes `buf` to see whether it differs past sector 0. */
static struct sw_plan remove_plan(const uint8_t *buf,
                                  const struct q2_hdr_parsed *p, uint64_t cs)
{
    struct sw_plan w = {.kind = SW_NONE, .used = cluster0_used(p)};
    uint8_t *full;
    uint64_t end;

    if (cs < SECTOR || !(full = malloc(cs)))
        return w;
    memcpy(full, buf, cs);
    end = layout_exts(full, cs, p, NULL, false);
    if (end && (end <= SECTOR ||
                memcmp(full + SECTOR, buf + SECTOR, end - SECTOR) == 0))
        w.kind = SW_REMOVE_ONE;
    else if (end && exts_end(p, NULL, true, SECTOR))
        w.kind = SW_REMOVE_STEPS;
    free(full);
    return w;
}

static struct sw_plan sw_plan(const struct q2_hdr_parsed *p, uint64_t cs,
                              const char *name, const char *fmt)
{
    struct sw_plan w = {.kind = SW_NONE, .used = cluster0_used(p)};
    size_t nlen = strlen(name), flen = strlen(fmt);
    uint64_t full_end;

    if (cs < SECTOR)
        return w;
    if (p->ext_backing_format >= 0) {
        const struct q2_ext *e = &p->exts[p->ext_backing_format];
        w.at = pad8(w.used);
        if (e->off + 8 + pad8(e->len) <= SECTOR && pad8(e->len) >= flen &&
            w.at + nlen <= cs) {
            w.kind = SW_SECTOR;
            return w;
        }
    }
    full_end = exts_end(p, fmt, false, cs);
    w.at = pad8(w.used > full_end ? w.used : full_end);
    if (full_end && w.at + nlen <= cs && exts_end(p, fmt, true, SECTOR))
        w.kind = SW_STEPS;
    return w;
}

/* SW_STEPS, SW_REMOVE_*: the extensions laid out anew in steps that each
 * leave a header naming either the old or the new backing file (or none)
 * whole:
 *   1. the new name past everything cluster 0 uses today and will use;
 *   2. sector 0 alone as a lean header (without the feature name table,
 *      which only names features) whose extensions all lie in sector 0
 *      and which names the new file;
 *   3. the full layout's bytes between sector 0 and the name (or the end
 *      of the layout), which the lean header does not read;
 *   4. the full layout's sector 0;
 * each synced before the next.  Steps 2 and 3 are needed only where the
 * full layout passes sector 0 (and, for a removal, changes there:
 * SW_REMOVE_ONE).  name NULL removes the backing file (offset and length
 * zero, no format extension); afterwards the bytes the old header used
 * past the new layout (the old name, the old extensions' tail) are zeroed:
 * nothing reads them any more, and a forensic reader should not find a
 * stale name there. */
static int rewrite_cluster0(struct qcow2_image *img, uint8_t *buf,
                            const struct q2_hdr_parsed *p,
                            const struct sw_plan *w, const char *name,
                            const char *fmt)
{
    uint64_t cs = img->cluster_size, full_end, end;
    uint8_t *lean = malloc(cs), *full = malloc(cs);
    int rc = 0;

    if (!lean || !full) {
        free(lean);
        free(full);
        return -ENOMEM;
    }
    memcpy(full, buf, cs);
    memcpy(lean, buf, cs);
    full_end = layout_exts(full, cs, p, fmt, false);
    layout_exts(lean, SECTOR, p, fmt, true);
    if (name) {
        place_name(lean, name, w->at);
        place_name(full, name, w->at);
        rc = write_sync(img, name, strlen(name), w->at);
        end = w->at;
    } else {
        memset(full + 8, 0, 12); /* backing_file_offset, _size */
        memset(lean + 8, 0, 12);
        end = full_end;
    }
    if (rc == 0 && full_end > SECTOR && w->kind != SW_REMOVE_ONE) {
        rc = write_sync(img, lean, SECTOR, 0);
        if (rc == 0)
            rc = write_sync(img, full + SECTOR, end - SECTOR, SECTOR);
    }
    if (rc == 0)
        rc = write_sync(img, full, SECTOR, 0);
    if (rc == 0 && !name && w->used > full_end && w->used <= cs) {
        memset(full + full_end, 0, w->used - full_end);
        rc = write_sync(img, full + full_end, w->used - full_end, full_end);
    }
    if (rc == 0)
        memcpy(buf, full, cs);
    free(lean);
    free(full);
    return rc;
}

/* SW_SECTOR: the format extension edited in place. */
static int edit_sector0(struct qcow2_image *img, uint8_t *buf,
                        const struct q2_hdr_parsed *p,
                        const struct sw_plan *w, const char *name,
                        const char *fmt)
{
    const struct q2_ext *e = &p->exts[p->ext_backing_format];
    size_t nlen = strlen(name), flen = strlen(fmt);
    int rc = write_sync(img, name, nlen, w->at);

    if (rc < 0)
        return rc;
    q2_store_be64(buf + 8, w->at);
    q2_store_be32(buf + 16, (uint32_t)nlen);
    q2_store_be32(buf + e->off + 4, (uint32_t)flen);
    memset(buf + e->off + 8, 0, pad8(e->len));
    memcpy(buf + e->off + 8, fmt, flen);
    memcpy(buf + w->at, name, nlen);
    return write_sync(img, buf, SECTOR, 0);
}

/* The checks both entry points make; cluster 0 read and parsed into
 * *buf and *p (the caller frees both) and the plan made.  name NULL: the
 * backing file is removed. */
static int sw_prepare(struct qcow2_image *img, const char *name,
                      const char *fmt, uint8_t **buf,
                      struct q2_hdr_parsed *p, struct sw_plan *w)
{
    size_t nlen, flen;
    char err[512];
    int64_t n;
    int rc;

    if (img->format != QCOW2_FORMAT_QCOW2)
        return q2_err(img, -EINVAL, "only qcow2 images have a backing file");
    nlen = name ? strlen(name) : 0;
    flen = fmt ? strlen(fmt) : 0;
    if (name && (nlen > Q2_MAX_BACKING_NAME || flen == 0 ||
                 flen > Q2_MAX_BACKING_FORMAT))
        return q2_err(img, -EINVAL, "backing file name or format has a bad "
                      "length");
    if (name && (img->hp.h.autoclear_features & Q2_AUTOCLEAR_DATA_FILE_RAW))
        return q2_err(img, -EINVAL, "an image with a raw external data file "
                      "cannot have a backing file");
    *buf = calloc(1, img->cluster_size);
    if (!*buf)
        return -ENOMEM;
    n = q2_pread_full(&img->io, *buf, img->cluster_size, 0);
    if (n < 0)
        return q2_err(img, (int)n, "cannot read the header");
    rc = q2_hdr_parse(*buf, img->cluster_size, (uint64_t)img->file_size, p,
                      err, sizeof(err));
    if (rc < 0)
        return q2_err(img, rc, "%s", err);
    *w = name ? sw_plan(p, img->cluster_size, name, fmt)
              : remove_plan(*buf, p, img->cluster_size);
    if (w->kind == SW_NONE)
        return q2_err(img, -ENOTSUP, "the header's extensions leave no room "
                      "to change the backing file safely (a power loss "
                      "during the change could spoil the header): the "
                      "first sector or the first cluster is full");
    return 0;
}

int qcow2_set_backing_check(struct qcow2_image *img, const char *name,
                            const char *fmt)
{
    struct q2_hdr_parsed p = {0};
    struct sw_plan w;
    uint8_t *buf = NULL;
    int rc;

    if (!img || img->magic != Q2_HANDLE_MAGIC || img->state != Q2_STATE_OPEN ||
        (name && *name && !fmt))
        return -EINVAL;
    q2_err_clear(img);
    if (name && !*name)
        name = NULL;
    rc = sw_prepare(img, name, fmt, &buf, &p, &w);
    free(p.exts);
    free(buf);
    return rc;
}

int qcow2_set_backing(struct qcow2_image *img, const char *name,
                      const char *fmt)
{
    struct q2_hdr_parsed p = {0};
    struct sw_plan w;
    uint64_t cs;
    uint8_t *buf = NULL;
    char err[512];
    int rc;

    if (!img || img->magic != Q2_HANDLE_MAGIC || img->state != Q2_STATE_OPEN ||
        (name && *name && !fmt))
        return -EINVAL;
    q2_err_clear(img);
    if (name && !*name)
        name = NULL;
    if (!img->writable)
        return q2_err(img, -EROFS, "image is open read-only");
    rc = qcow2_flush(img);
    if (rc == 0)
        rc = sw_prepare(img, name, fmt, &buf, &p, &w);
    if (rc == 0)
        rc = w.kind == SW_SECTOR ? edit_sector0(img, buf, &p, &w, name, fmt)
                                 : rewrite_cluster0(img, buf, &p, &w, name,
                                                    fmt);
    free(p.exts);
    if (rc < 0) {
        free(buf);
        if (rc != -EINVAL && rc != -ENOTSUP && rc != -ENOMEM)
            img->write_err = rc;
        return rc;
    }

    /* the handle now describes the new header */
    cs = img->cluster_size;
    free(img->hp.exts);
    free(img->hdr_buf);
    img->hdr_buf = buf;
    img->hdr_len = cs;
    rc = q2_hdr_parse(img->hdr_buf, cs, (uint64_t)img->file_size, &img->hp,
                      err, sizeof(err));
    if (rc < 0) {
        img->hp.exts = NULL;
        img->hp.n_exts = 0;
        return q2_err(img, rc, "%s", err);
    }
    free(img->backing_name);
    free(img->backing_format);
    free(img->backing_path);
    img->backing_name = img->backing_format = img->backing_path = NULL;
    if (!name)
        return 0;
    img->backing_name = strdup(name);
    img->backing_format = strdup(fmt);
    img->backing_path = q2_name_has_protocol(name)
                            ? NULL : q2_path_combine(img->filename, name);
    if (!img->backing_name || !img->backing_format)
        return -ENOMEM;
    return 0;
}
