/*
 * imgbuild.c - compose qcow2 images in memory (see imgbuild.h).
 */
#include "imgbuild.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>

#include "endian.h"
#include "format.h"

static void die(const char *what)
{
    fprintf(stderr, "imgbuild: %s\n", what);
    abort();
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        die("out of memory");
    return p;
}

void qimg_pattern(uint8_t *buf, size_t len, uint64_t seed)
{
    uint64_t x = seed * 0x9e3779b97f4a7c15ull + 0x632be59bd9b4e019ull;
    size_t i;

    for (i = 0; i < len; i++) {
        if (i % 8 == 0) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
        buf[i] = (uint8_t)(x >> (8 * (i % 8)));
    }
}

void qimg_put32(struct qimg *q, uint64_t off, uint32_t v)
{
    if (off + 4 > q->len)
        die("put32 past the end of the image");
    q2_store_be32(q->buf + off, v);
}

void qimg_put64(struct qimg *q, uint64_t off, uint64_t v)
{
    if (off + 8 > q->len)
        die("put64 past the end of the image");
    q2_store_be64(q->buf + off, v);
}

uint64_t qimg_get64(const struct qimg *q, uint64_t off)
{
    if (off + 8 > q->len)
        die("get64 past the end of the image");
    return q2_load_be64(q->buf + off);
}

uint64_t qimg_alloc(struct qimg *q, unsigned n)
{
    uint64_t off = q->len, need = q->len + (uint64_t)n * q->cs;

    if (q->finished)
        die("alloc after finish");
    if (need > q->cap) {
        size_t ncap = q->cap ? q->cap : 4096;
        while (ncap < need)
            ncap *= 2;
        q->buf = realloc(q->buf, ncap);
        if (!q->buf)
            die("out of memory");
        q->cap = ncap;
    }
    memset(q->buf + off, 0, (size_t)(need - off));
    q->len = (size_t)need;
    return off;
}

static unsigned l1_clusters(const struct qimg *q, uint32_t l1_size)
{
    uint64_t n = ((uint64_t)l1_size * 8 + q->cs - 1) / q->cs;
    return n ? (unsigned)n : 1;
}

void qimg_init(struct qimg *q, unsigned version, unsigned cluster_bits,
               uint64_t size, unsigned flags)
{
    uint64_t per_l2;

    memset(q, 0, sizeof(*q));
    if ((version != 2 && version != 3) || cluster_bits < 9 ||
        cluster_bits > 21)
        die("bad init parameters");
    if ((flags & (QIMG_EXTL2 | QIMG_ZSTD)) && version < 3)
        die("extended L2 and zstd need version 3");
    q->version = version;
    q->cluster_bits = cluster_bits;
    q->cs = 1ull << cluster_bits;
    q->size = size;
    q->flags = flags;
    q->l2_entry_len = (flags & QIMG_EXTL2) ? 16 : 8;
    q->l2_bits = cluster_bits - ((flags & QIMG_EXTL2) ? 4 : 3);
    q->feature_ext = -1;
    per_l2 = 1ull << (cluster_bits + q->l2_bits);
    q->l1_size = (uint32_t)((size + per_l2 - 1) / per_l2);

    qimg_alloc(q, 1); /* header */
    q->rt_off = qimg_alloc(q, 1);
    q->l1_off = qimg_alloc(q, l1_clusters(q, q->l1_size));
}

void qimg_free(struct qimg *q)
{
    free(q->buf);
    q->buf = NULL;
    q->len = q->cap = 0;
}

uint64_t qimg_l2(struct qimg *q, uint64_t guest)
{
    uint64_t idx = guest >> (q->cluster_bits + q->l2_bits);
    uint64_t e, off;

    if (idx >= q->l1_size)
        die("guest offset beyond the L1 table");
    e = qimg_get64(q, q->l1_off + idx * 8) & Q2_L1E_OFFSET_MASK;
    if (e)
        return e;
    off = qimg_alloc(q, 1);
    qimg_put64(q, q->l1_off + idx * 8, off | Q2_OFLAG_COPIED);
    return off;
}

uint64_t qimg_l2_entry_off(struct qimg *q, uint64_t guest)
{
    uint64_t l2 = qimg_l2(q, guest);
    uint64_t i = (guest >> q->cluster_bits) & ((1ull << q->l2_bits) - 1);

    return l2 + i * q->l2_entry_len;
}

void qimg_set_l2(struct qimg *q, uint64_t guest, uint64_t entry)
{
    qimg_put64(q, qimg_l2_entry_off(q, guest), entry);
}

void qimg_set_bitmap(struct qimg *q, uint64_t guest, uint64_t bitmap)
{
    if (!(q->flags & QIMG_EXTL2))
        die("bitmap without extended L2");
    qimg_put64(q, qimg_l2_entry_off(q, guest) + 8, bitmap);
}

uint64_t qimg_data(struct qimg *q, uint64_t guest, const void *data)
{
    uint64_t host = qimg_alloc(q, 1);

    if (data)
        memcpy(q->buf + host, data, (size_t)q->cs);
    else
        qimg_pattern(q->buf + host, (size_t)q->cs, guest ^ q->salt);
    qimg_map_at(q, guest, host);
    return host;
}

void qimg_map_at(struct qimg *q, uint64_t guest, uint64_t host)
{
    qimg_set_l2(q, guest, host | Q2_OFLAG_COPIED);
    if (q->flags & QIMG_EXTL2)
        qimg_set_bitmap(q, guest, 0xffffffffull);
}

void qimg_zero(struct qimg *q, uint64_t guest)
{
    if (q->flags & QIMG_EXTL2) {
        qimg_set_l2(q, guest, 0);
        qimg_set_bitmap(q, guest, 0xffffffffull << 32);
    } else {
        qimg_set_l2(q, guest, Q2_OFLAG_ZERO);
    }
}

uint64_t qimg_data_sub(struct qimg *q, uint64_t guest, uint32_t alloc,
                       uint32_t zero)
{
    uint64_t host = qimg_alloc(q, 1);

    qimg_pattern(q->buf + host, (size_t)q->cs, guest ^ q->salt);
    qimg_set_l2(q, guest, host | Q2_OFLAG_COPIED);
    qimg_set_bitmap(q, guest, alloc | (uint64_t)zero << 32);
    return host;
}

static uint64_t place_compressed(struct qimg *q, uint64_t guest,
                                 const uint8_t *c, size_t clen, unsigned pad)
{
    unsigned shift = 62 - (q->cluster_bits - 8);
    uint64_t mask = (1ull << (q->cluster_bits - 8)) - 1;
    uint64_t n = (pad + clen + q->cs - 1) / q->cs;
    uint64_t host, coff, nb1;

    if (clen == 0)
        die("empty compressed cluster");
    host = qimg_alloc(q, (unsigned)(n ? n : 1));
    coff = host + pad;
    memcpy(q->buf + coff, c, clen);
    nb1 = ((coff + clen - 1) >> 9) - (coff >> 9);
    if (nb1 > mask)
        die("compressed data too long for the descriptor");
    qimg_set_l2(q, guest, Q2_OFLAG_COMPRESSED | nb1 << shift | coff);
    if (q->flags & QIMG_EXTL2)
        qimg_set_bitmap(q, guest, 0);
    return coff;
}

uint64_t qimg_compressed(struct qimg *q, uint64_t guest, const void *data,
                         unsigned type, unsigned pad)
{
    size_t cs = (size_t)q->cs, cap = 2 * cs + 1024, clen;
    uint8_t *src = xmalloc(cs), *dst = xmalloc(cap);
    uint64_t coff;

    if (data)
        memcpy(src, data, cs);
    else
        qimg_pattern(src, cs, guest ^ q->salt);
    if (type == 0) {
        z_stream s;
        memset(&s, 0, sizeof(s));
        if (deflateInit2(&s, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -12, 9,
                         Z_DEFAULT_STRATEGY) != Z_OK)
            die("deflateInit2");
        s.next_in = src;
        s.avail_in = (uInt)cs;
        s.next_out = dst;
        s.avail_out = (uInt)cap;
        if (deflate(&s, Z_FINISH) != Z_STREAM_END)
            die("deflate");
        clen = (size_t)s.total_out;
        deflateEnd(&s);
    } else {
        clen = ZSTD_compress(dst, cap, src, cs, 3);
        if (ZSTD_isError(clen))
            die("ZSTD_compress");
    }
    coff = place_compressed(q, guest, dst, clen, pad);
    free(src);
    free(dst);
    return coff;
}

uint64_t qimg_compressed_raw(struct qimg *q, uint64_t guest,
                             const void *bytes, size_t n)
{
    return place_compressed(q, guest, bytes, n, 0);
}

void qimg_ext(struct qimg *q, uint32_t type, const void *data, uint32_t len)
{
    struct qimg_ext *e;

    if (q->n_exts == QIMG_MAX_EXTS || len > sizeof(e->data))
        die("too many or too large extensions");
    e = &q->exts[q->n_exts++];
    e->type = type;
    e->len = len;
    if (len)
        memcpy(e->data, data, len);
}

void qimg_backing(struct qimg *q, const char *name, const char *format)
{
    if (strlen(name) >= sizeof(q->backing))
        die("backing name too long for the builder");
    strcpy(q->backing, name);
    if (format)
        qimg_ext(q, Q2_EXT_BACKING_FORMAT, format, (uint32_t)strlen(format));
}

void qimg_feature(struct qimg *q, unsigned type, unsigned bit,
                  const char *name)
{
    struct qimg_ext *e;
    uint8_t *f;

    if (q->feature_ext < 0) {
        q->feature_ext = (int)q->n_exts;
        qimg_ext(q, Q2_EXT_FEATURE_TABLE, NULL, 0);
    }
    e = &q->exts[q->feature_ext];
    if (e->len + Q2_FEATURE_ENTRY_LEN > sizeof(e->data))
        die("feature table full");
    f = e->data + e->len;
    memset(f, 0, Q2_FEATURE_ENTRY_LEN);
    f[0] = (uint8_t)type;
    f[1] = (uint8_t)bit;
    strncpy((char *)f + 2, name, Q2_FEATURE_ENTRY_LEN - 2);
    e->len += Q2_FEATURE_ENTRY_LEN;
}

void qimg_snapshot(struct qimg *q, const char *id, const char *name,
                   uint64_t disk_size)
{
    struct qimg_snap *s;
    unsigned ncl = l1_clusters(q, q->l1_size);
    uint64_t l1 = qimg_alloc(q, ncl), i, j;

    if (q->n_snaps == QIMG_MAX_SNAPS)
        die("too many snapshots");
    for (i = 0; i < q->l1_size; i++) {
        uint64_t l2 = qimg_get64(q, q->l1_off + i * 8) & Q2_L1E_OFFSET_MASK;
        uint64_t copy;
        if (!l2)
            continue;
        copy = qimg_alloc(q, 1);
        memcpy(q->buf + copy, q->buf + l2, (size_t)q->cs);
        for (j = 0; j < q->cs; j += q->l2_entry_len) {
            uint64_t e = qimg_get64(q, copy + j);
            if (!(e & Q2_OFLAG_COMPRESSED))
                qimg_put64(q, copy + j, e & ~Q2_OFLAG_COPIED);
        }
        qimg_put64(q, l1 + i * 8, copy);
    }
    s = &q->snaps[q->n_snaps++];
    memset(s, 0, sizeof(*s));
    snprintf(s->id, sizeof(s->id), "%s", id);
    snprintf(s->name, sizeof(s->name), "%s", name);
    s->l1_off = l1;
    s->l1_size = q->l1_size;
    s->disk_size = disk_size ? disk_size : q->size;
}

/* ---- finish ---- */

static void write_snapshot_table(struct qimg *q)
{
    uint64_t size = 0, off;
    unsigned i;

    if (!q->n_snaps)
        return;
    for (i = 0; i < q->n_snaps; i++) {
        size = (size + 7) & ~7ull;
        size += Q2_SNAP_FIXED_LEN + 16 + strlen(q->snaps[i].id) +
                strlen(q->snaps[i].name);
    }
    size = (size + 7) & ~7ull;
    off = qimg_alloc(q, (unsigned)((size + q->cs - 1) / q->cs));
    q->snap_table_off = off;
    for (i = 0; i < q->n_snaps; i++) {
        const struct qimg_snap *s = &q->snaps[i];
        size_t idl = strlen(s->id), nl = strlen(s->name);
        uint8_t *p;

        off = (off + 7) & ~7ull;
        p = q->buf + off;
        q2_store_be64(p, s->l1_off);
        q2_store_be32(p + 8, s->l1_size);
        q2_store_be16(p + 12, (uint16_t)idl);
        q2_store_be16(p + 14, (uint16_t)nl);
        q2_store_be32(p + 16, 1700000000u + i); /* date */
        q2_store_be32(p + 20, 0);
        q2_store_be64(p + 24, 0);               /* vm clock */
        q2_store_be32(p + 32, 0);               /* vm state size */
        q2_store_be32(p + 36, 16);              /* extra data size */
        q2_store_be64(p + 40, 0);               /* vm state size, 64 */
        q2_store_be64(p + 48, s->disk_size);
        memcpy(p + 56, s->id, idl);
        memcpy(p + 56 + idl, s->name, nl);
        off += 56 + idl + nl;
    }
}

static void ref_range(const struct qimg *q, uint32_t *refs, uint64_t n,
                      uint64_t off, uint64_t len)
{
    uint64_t c;

    if (len == 0)
        return;
    for (c = off / q->cs; c <= (off + len - 1) / q->cs && c < n; c++)
        refs[c]++;
}

/* Count the references of one L1 table and its L2 tables. */
static void ref_tables(const struct qimg *q, uint32_t *refs, uint64_t n,
                       uint64_t l1, uint32_t l1_size)
{
    unsigned shift = 62 - (q->cluster_bits - 8);
    uint64_t cmask = (1ull << (q->cluster_bits - 8)) - 1;
    uint64_t i, j;

    ref_range(q, refs, n, l1, (uint64_t)l1_size * 8);
    for (i = 0; i < l1_size; i++) {
        uint64_t l2 = qimg_get64(q, l1 + i * 8) & Q2_L1E_OFFSET_MASK;
        if (!l2 || (l2 & (q->cs - 1)) || l2 >= q->len)
            continue;
        ref_range(q, refs, n, l2, q->cs);
        for (j = 0; j < q->cs; j += q->l2_entry_len) {
            uint64_t e = qimg_get64(q, l2 + j), host;
            if (e & Q2_OFLAG_COMPRESSED) {
                uint64_t coff = e & ((1ull << shift) - 1);
                uint64_t nb = ((e >> shift) & cmask) + 1;
                ref_range(q, refs, n, coff, nb * 512 - (coff & 511));
                continue;
            }
            host = e & Q2_L2E_OFFSET_MASK;
            if (host && !(host & (q->cs - 1)) && host < q->len)
                ref_range(q, refs, n, host, q->cs);
        }
    }
}

/* Active tables: COPIED exactly when the refcount is 1. */
static void fix_copied(struct qimg *q, const uint32_t *refs, uint64_t n)
{
    uint64_t i, j;

    for (i = 0; i < q->l1_size; i++) {
        uint64_t pos = q->l1_off + i * 8, e = qimg_get64(q, pos);
        uint64_t l2 = e & Q2_L1E_OFFSET_MASK;
        if (!l2 || (l2 & (q->cs - 1)) || l2 >= q->len)
            continue;
        e &= ~Q2_OFLAG_COPIED;
        if (l2 / q->cs < n && refs[l2 / q->cs] == 1)
            e |= Q2_OFLAG_COPIED;
        qimg_put64(q, pos, e);
        for (j = 0; j < q->cs; j += q->l2_entry_len) {
            uint64_t le = qimg_get64(q, l2 + j);
            uint64_t host = le & Q2_L2E_OFFSET_MASK;
            if ((le & Q2_OFLAG_COMPRESSED) || !host ||
                (host & (q->cs - 1)) || host >= q->len)
                continue;
            le &= ~Q2_OFLAG_COPIED;
            if (host / q->cs < n && refs[host / q->cs] == 1)
                le |= Q2_OFLAG_COPIED;
            qimg_put64(q, l2 + j, le);
        }
    }
}

static void write_refcounts(struct qimg *q)
{
    uint64_t per_rb = q->cs / 2; /* 16-bit refcounts */
    uint64_t rt_entries = q->cs / 8;
    uint64_t nrb = 0, n, i, rb0;
    uint32_t *refs;
    unsigned s;

    for (;;) {
        uint64_t total = q->len / q->cs + nrb;
        uint64_t need = (total + per_rb - 1) / per_rb;
        if (need <= nrb)
            break;
        nrb = need;
    }
    if (nrb > rt_entries)
        die("image too large for one refcount table cluster");
    rb0 = qimg_alloc(q, (unsigned)nrb);
    n = q->len / q->cs;
    refs = calloc(n, sizeof(*refs));
    if (!refs)
        die("out of memory");
    refs[0]++;                        /* header */
    ref_range(q, refs, n, q->rt_off, q->cs);
    ref_range(q, refs, n, rb0, nrb * q->cs);
    ref_tables(q, refs, n, q->l1_off, q->l1_size);
    for (s = 0; s < q->n_snaps; s++)
        ref_tables(q, refs, n, q->snaps[s].l1_off, q->snaps[s].l1_size);
    if (q->n_snaps) {
        uint64_t end = q->snap_table_off;
        for (s = 0; s < q->n_snaps; s++) {
            end = (end + 7) & ~7ull;
            end += 56 + strlen(q->snaps[s].id) + strlen(q->snaps[s].name);
        }
        ref_range(q, refs, n, q->snap_table_off, end - q->snap_table_off);
    }
    fix_copied(q, refs, n);
    for (i = 0; i < nrb; i++)
        qimg_put64(q, q->rt_off + i * 8, rb0 + i * q->cs);
    for (i = 0; i < n; i++) {
        uint64_t rb = rb0 + (i / per_rb) * q->cs;
        q2_store_be16(q->buf + rb + (i % per_rb) * 2,
                      (uint16_t)(refs[i] > 0xffff ? 0xffff : refs[i]));
    }
    free(refs);
}

void qimg_finish(struct qimg *q)
{
    uint8_t *h;
    uint64_t off, bfo = 0;
    unsigned i;

    if (q->finished)
        return;
    write_snapshot_table(q);
    write_refcounts(q);

    h = q->buf;
    memset(h, 0, (size_t)q->cs);
    off = q->version == 2 ? Q2_V2_HEADER_LEN : Q2_V3_HEADER_LEN;
    for (i = 0; i < q->n_exts; i++) {
        const struct qimg_ext *e = &q->exts[i];
        if (off + 8 + e->len > q->cs)
            die("extensions do not fit the first cluster");
        q2_store_be32(h + off, e->type);
        q2_store_be32(h + off + 4, e->len);
        memcpy(h + off + 8, e->data, e->len);
        off += 8 + ((e->len + 7) & ~7u);
    }
    off += 8; /* end marker: zeros */
    if (q->backing[0]) {
        size_t bl = strlen(q->backing);
        if (off + bl > q->cs)
            die("backing name does not fit the first cluster");
        bfo = off;
        memcpy(h + off, q->backing, bl);
    }

    q2_store_be32(h + 0, Q2_MAGIC);
    q2_store_be32(h + 4, q->version);
    q2_store_be64(h + 8, bfo);
    q2_store_be32(h + 16, (uint32_t)strlen(q->backing));
    q2_store_be32(h + 20, q->cluster_bits);
    q2_store_be64(h + 24, q->size);
    q2_store_be32(h + 32, 0);
    q2_store_be32(h + 36, q->l1_size);
    q2_store_be64(h + 40, q->l1_off);
    q2_store_be64(h + 48, q->rt_off);
    q2_store_be32(h + 56, 1);
    q2_store_be32(h + 60, q->n_snaps);
    q2_store_be64(h + 64, q->snap_table_off);
    if (q->version == 3) {
        uint64_t inc = q->incompat;
        if (q->flags & QIMG_EXTL2)
            inc |= Q2_INCOMPAT_EXTL2;
        if (q->flags & QIMG_ZSTD)
            inc |= Q2_INCOMPAT_COMPRESSION;
        q2_store_be64(h + 72, inc);
        q2_store_be64(h + 80, q->compat);
        q2_store_be64(h + 88, q->autoclear);
        q2_store_be32(h + 96, 4);
        q2_store_be32(h + 100, Q2_V3_HEADER_LEN);
        h[104] = (q->flags & QIMG_ZSTD) ? Q2_COMPRESSION_ZSTD
                                        : Q2_COMPRESSION_ZLIB;
    }
    q->finished = true;
}

/* ---- opening ---- */

int qimg_open_buf(const void *buf, size_t len, const char *name,
                  const struct qcow2_open_opts *opts,
                  struct qcow2_image **out)
{
    struct qcow2_io io;
    int rc;

    *out = qcow2_new();
    if (!*out)
        return -ENOMEM;
    rc = qcow2_io_open_mem(buf, len, &io);
    if (rc < 0)
        return rc;
    return qcow2_open_io(*out, &io, name, opts);
}

int qimg_open(struct qimg *q, const char *name,
              const struct qcow2_open_opts *opts, struct qcow2_image **out)
{
    qimg_finish(q);
    return qimg_open_buf(q->buf, q->len, name, opts, out);
}

/* ---- memfs ---- */

void memfs_add(struct memfs *fs, const char *name, const void *buf,
               size_t len)
{
    if (fs->n == MEMFS_MAX || strlen(name) >= sizeof(fs->files[0].name))
        die("memfs full");
    snprintf(fs->files[fs->n].name, sizeof(fs->files[0].name), "%s", name);
    fs->files[fs->n].buf = xmalloc(len);
    memcpy(fs->files[fs->n].buf, buf, len);
    fs->files[fs->n].len = len;
    fs->n++;
}

void memfs_add_img(struct memfs *fs, const char *name, struct qimg *q)
{
    qimg_finish(q);
    memfs_add(fs, name, q->buf, q->len);
}

void memfs_free(struct memfs *fs)
{
    unsigned i;

    for (i = 0; i < fs->n; i++)
        free(fs->files[i].buf);
    fs->n = 0;
}

int memfs_open(void *ctx, const char *name, unsigned io_flags,
               struct qcow2_io *out, char *err, size_t errlen)
{
    struct memfs *fs = ctx;
    unsigned i;
    int rc;

    (void)io_flags;
    snprintf(fs->last, sizeof(fs->last), "%s", name);
    for (i = 0; i < fs->n; i++) {
        if (strcmp(fs->files[i].name, name) == 0) {
            rc = qcow2_io_open_mem(fs->files[i].buf, fs->files[i].len, out);
            if (rc == 0)
                fs->opens++;
            return rc;
        }
    }
    if (err && errlen)
        snprintf(err, errlen, "memfs: no file named '%s'", name);
    return -ENOENT;
}

void memfs_opts(struct memfs *fs, struct qcow2_open_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->size = sizeof(*o);
    o->open_file = memfs_open;
    o->open_ctx = fs;
}

int memfs_open_image(struct memfs *fs, const char *name,
                     const struct qcow2_open_opts *opts,
                     struct qcow2_image **out)
{
    struct qcow2_io io;
    char err[256];
    int rc;

    *out = qcow2_new();
    if (!*out)
        return -ENOMEM;
    rc = memfs_open(fs, name, 0, &io, err, sizeof(err));
    if (rc < 0)
        return rc;
    return qcow2_open_io(*out, &io, name, opts);
}
