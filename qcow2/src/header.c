/*
 * header.c - parse and validate the qcow2 header and its extensions.
 *
 * A pure function over bytes (q2_hdr_parse), so fuzzers and unit tests call
 * it directly.  The header layout is in format.h; the extension area is
 *
 *   header_length (72 for v2)
 *     { u32 type, u32 length, data[length], zero padding to 8 } ...
 *     { 0, 0 }                        end marker (optional if the area ends)
 *   backing_file_offset: backing file name (no NUL), up to the cluster end
 *
 * The extension area ends at the end marker, at backing_file_offset, or at
 * the end of the first cluster, whichever comes first (QEMU's ext_end).
 *
 * Invariants established for the rest of the library on success:
 *   1. 9 <= cluster_bits <= 21 (>= 14 with extended L2), refcount_order <= 6.
 *   2. No unknown incompatible bit is set; crypt_method <= 2.
 *   3. The L1 table, refcount table and snapshot table offsets are cluster
 *      aligned; the L1 table and the refcount table lie inside the file and
 *      within QEMU's size caps; l1_size covers the virtual size.
 *   4. Every extension lies inside the extension area; the backing name
 *      (<= 1023 bytes) lies inside the first cluster and the buffer.
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

static int fail(char *err, size_t errlen, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(char *err, size_t errlen, int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return rc;
}

#define CORRUPT(...) fail(err, errlen, -QCOW2_ECORRUPT, __VA_ARGS__)

void q2_hdr_feature_name(const struct q2_hdr_parsed *p, unsigned type,
                         unsigned bit, char *name, size_t len)
{
    name[0] = '\0';
    if (p->ext_feature_table >= 0) {
        const struct q2_ext *e = &p->exts[p->ext_feature_table];
        uint32_t i, n = e->len / Q2_FEATURE_ENTRY_LEN;
        for (i = 0; i < n; i++) {
            const uint8_t *f = e->data + (size_t)i * Q2_FEATURE_ENTRY_LEN;
            if (f[0] == type && f[1] == bit) {
                size_t k = 0;
                while (k < 46 && k + 1 < len && f[2 + k]) {
                    char c = (char)f[2 + k];
                    name[k] = (c >= 0x20 && c < 0x7f) ? c : '?';
                    k++;
                }
                name[k] = '\0';
                return;
            }
        }
    }
}

/* Does [off, off + len) lie in a file of file_size bytes? */
static bool in_file(uint64_t off, uint64_t len, uint64_t file_size)
{
    return off <= file_size && len <= file_size - off;
}

static int parse_extensions(const uint8_t *buf, size_t len, uint64_t ext_end,
                            struct q2_hdr_parsed *p, char *err, size_t errlen)
{
    uint64_t off = p->h.header_length;
    unsigned cap = 0;

    while (off < ext_end) {
        uint32_t type, elen;
        struct q2_ext *e;

        if (ext_end - off < 8)
            return CORRUPT("header extension header truncated "
                           "(at offset 0x%" PRIx64 ")", off);
        if (off + 8 > len)
            return CORRUPT("header extension area past the end of the file "
                           "(at offset 0x%" PRIx64 ")", off);
        type = q2_load_be32(buf + off);
        elen = q2_load_be32(buf + off + 4);
        if (type == Q2_EXT_END)
            break;
        if (elen > ext_end - off - 8)
            return CORRUPT("header extension 0x%08" PRIx32 " too large: "
                           "length %" PRIu32 " runs past the extension area "
                           "(at offset 0x%" PRIx64 ")", type, elen, off);
        if (off + 8 + elen > len)
            return CORRUPT("header extension 0x%08" PRIx32 " runs past the "
                           "end of the file (at offset 0x%" PRIx64 ")",
                           type, off);
        if (p->n_exts == cap) {
            unsigned ncap = cap ? cap * 2 : 8;
            struct q2_ext *ne = realloc(p->exts, ncap * sizeof(*ne));
            if (!ne)
                return -ENOMEM;
            p->exts = ne;
            cap = ncap;
        }
        e = &p->exts[p->n_exts];
        e->type = type;
        e->len = elen;
        e->off = off;
        e->data = buf + off + 8;

        switch (type) {
        case Q2_EXT_BACKING_FORMAT:
            if (elen > Q2_MAX_BACKING_FORMAT)
                return CORRUPT("backing format name too long: %" PRIu32
                               " bytes (at offset 0x%" PRIx64 ")", elen, off);
            p->ext_backing_format = (int)p->n_exts;
            break;
        case Q2_EXT_FEATURE_TABLE:
            p->ext_feature_table = (int)p->n_exts;
            break;
        case Q2_EXT_BITMAPS:
            if (elen != Q2_BITMAP_EXT_LEN)
                return CORRUPT("bitmaps extension has length %" PRIu32
                               ", not 24 (at offset 0x%" PRIx64 ")", elen,
                               off);
            p->ext_bitmaps = (int)p->n_exts;
            break;
        case Q2_EXT_CRYPTO:
            if (p->h.crypt_method != Q2_CRYPT_LUKS)
                return CORRUPT("crypto header extension without LUKS "
                               "encryption (at offset 0x%" PRIx64 ")", off);
            if (elen != 16)
                return CORRUPT("crypto header extension has length %" PRIu32
                               ", not 16 (at offset 0x%" PRIx64 ")", elen,
                               off);
            p->ext_crypto = (int)p->n_exts;
            break;
        case Q2_EXT_DATA_FILE:
            if (elen == 0)
                return CORRUPT("external data file name is empty "
                               "(at offset 0x%" PRIx64 ")", off);
            p->ext_data_file = (int)p->n_exts;
            break;
        default:
            break;
        }
        p->n_exts++;
        off += 8 + (((uint64_t)elen + 7) & ~7ull);
    }
    return 0;
}

static int check_bitmaps_ext(struct q2_hdr_parsed *p, uint64_t cs,
                             uint64_t file_size, bool defer, char *err,
                             size_t errlen)
{
    const struct q2_ext *e = &p->exts[p->ext_bitmaps];
    uint32_t nb = q2_load_be32(e->data);
    uint32_t reserved = q2_load_be32(e->data + 4);
    uint64_t dsize = q2_load_be64(e->data + 8);
    uint64_t doff = q2_load_be64(e->data + 16);

    if (reserved)
        return CORRUPT("bitmaps extension: reserved field is not zero "
                       "(at offset 0x%" PRIx64 ")", e->off);
    if (nb == 0 || nb > Q2_MAX_BITMAPS)
        return CORRUPT("bitmaps extension: %" PRIu32 " bitmaps is out of "
                       "range 1..%u (at offset 0x%" PRIx64 ")", nb,
                       Q2_MAX_BITMAPS, e->off);
    if (dsize > Q2_MAX_BITMAP_DIR_BYTES)
        return CORRUPT("bitmaps extension: directory size %" PRIu64
                       " too large (at offset 0x%" PRIx64 ")", dsize, e->off);
    if (doff & (cs - 1))
        return CORRUPT("bitmaps extension: directory offset 0x%" PRIx64
                       " is not cluster aligned (at offset 0x%" PRIx64 ")",
                       doff, e->off);
    if (!in_file(doff, dsize, file_size) && defer) {
        p->bitmaps_past_end = true; /* the open says it, and goes on */
        return 0;
    }
    if (!in_file(doff, dsize, file_size))
        return CORRUPT("bitmap directory 0x%" PRIx64 "+%" PRIu64
                       " lies past the end of the file (at offset 0x%" PRIx64
                       ")", doff, dsize, e->off);
    return 0;
}

int q2_hdr_parse(const uint8_t *buf, size_t len, uint64_t file_size,
                 struct q2_hdr_parsed *out, char *err, size_t errlen)
{
    return q2_hdr_parse_ex(buf, len, file_size, 0, out, err, errlen);
}

size_t qcow2_header_decode(const void *buf, size_t len,
                           struct qcow2_header *out)
{
    const uint8_t *b = buf;
    struct qcow2_header h;
    size_t n;

    if (!b || !out || len < 8 || q2_load_be32(b) != Q2_MAGIC)
        return 0;
    memset(&h, 0, sizeof(h));
    h.magic = Q2_MAGIC;
    h.version = q2_load_be32(b + 4);
    n = 8;
    /* each field only when its bytes are there; none past 104 (+1) */
#define FIELD(end, stmt) do { if (len < (end)) goto done; stmt; n = (end); } \
    while (0)
    FIELD(16, h.backing_file_offset = q2_load_be64(b + 8));
    FIELD(20, h.backing_file_size = q2_load_be32(b + 16));
    FIELD(24, h.cluster_bits = q2_load_be32(b + 20));
    FIELD(32, h.size = q2_load_be64(b + 24));
    FIELD(36, h.crypt_method = q2_load_be32(b + 32));
    FIELD(40, h.l1_size = q2_load_be32(b + 36));
    FIELD(48, h.l1_table_offset = q2_load_be64(b + 40));
    FIELD(56, h.refcount_table_offset = q2_load_be64(b + 48));
    FIELD(60, h.refcount_table_clusters = q2_load_be32(b + 56));
    FIELD(64, h.nb_snapshots = q2_load_be32(b + 60));
    FIELD(72, h.snapshots_offset = q2_load_be64(b + 64));
    if (h.version < 3)
        goto done;
    FIELD(80, h.incompatible_features = q2_load_be64(b + 72));
    FIELD(88, h.compatible_features = q2_load_be64(b + 80));
    FIELD(96, h.autoclear_features = q2_load_be64(b + 88));
    FIELD(100, h.refcount_order = q2_load_be32(b + 96));
    FIELD(104, h.header_length = q2_load_be32(b + 100));
    if (h.header_length > 104)
        FIELD(105, h.compression_type = b[104]);
#undef FIELD
done:
    *out = h;
    return n;
}

/* The fixed fields (and the version 3 ones), with their own bounds. */
static int parse_fields(const uint8_t *buf, size_t len,
                        struct qcow2_header *h, char *err, size_t errlen)
{
    uint64_t cs;

    h->magic = q2_load_be32(buf);
    if (h->magic != Q2_MAGIC)
        return CORRUPT("not a qcow2 image: bad magic 0x%08" PRIx32
                       " (at offset 0x0)", h->magic);
    h->version = q2_load_be32(buf + 4);
    if (h->version != 2 && h->version != 3)
        return fail(err, errlen, -ENOTSUP,
                    "unsupported qcow2 version %" PRIu32 " (at offset 0x4)",
                    h->version);
    h->backing_file_offset = q2_load_be64(buf + 8);
    h->backing_file_size = q2_load_be32(buf + 16);
    h->cluster_bits = q2_load_be32(buf + 20);
    h->size = q2_load_be64(buf + 24);
    h->crypt_method = q2_load_be32(buf + 32);
    h->l1_size = q2_load_be32(buf + 36);
    h->l1_table_offset = q2_load_be64(buf + 40);
    h->refcount_table_offset = q2_load_be64(buf + 48);
    h->refcount_table_clusters = q2_load_be32(buf + 56);
    h->nb_snapshots = q2_load_be32(buf + 60);
    h->snapshots_offset = q2_load_be64(buf + 64);

    if (h->cluster_bits < Q2_MIN_CLUSTER_BITS ||
        h->cluster_bits > Q2_MAX_CLUSTER_BITS)
        return CORRUPT("cluster_bits %" PRIu32 " is out of range %d..%d "
                       "(at offset 0x14)", h->cluster_bits,
                       Q2_MIN_CLUSTER_BITS, Q2_MAX_CLUSTER_BITS);
    cs = 1ull << h->cluster_bits;

    if (h->version == 2) {
        h->refcount_order = 4;
        h->header_length = Q2_V2_HEADER_LEN;
    } else {
        if (len < Q2_V3_HEADER_MIN)
            return CORRUPT("truncated header: %zu bytes, a version 3 header "
                           "needs at least 104 (at offset 0x0)", len);
        h->incompatible_features = q2_load_be64(buf + 72);
        h->compatible_features = q2_load_be64(buf + 80);
        h->autoclear_features = q2_load_be64(buf + 88);
        h->refcount_order = q2_load_be32(buf + 96);
        h->header_length = q2_load_be32(buf + 100);
        if (h->header_length < Q2_V3_HEADER_MIN)
            return CORRUPT("header_length %" PRIu32 " is shorter than 104 "
                           "(at offset 0x64)", h->header_length);
        if (h->header_length > cs)
            return CORRUPT("header_length %" PRIu32 " exceeds the cluster "
                           "size %" PRIu64 " (at offset 0x64)",
                           h->header_length, cs);
        if (h->header_length > len)
            return CORRUPT("header_length %" PRIu32 " runs past the end of "
                           "the file (at offset 0x64)", h->header_length);
        if (h->header_length > 104)
            h->compression_type = buf[104];
    }
    return 0;
}

/* Feature bits, refcount width, encryption and compression type. */
static int check_features(const uint8_t *buf, size_t len,
                          struct q2_hdr_parsed *pp, char *err, size_t errlen)
{
    struct q2_hdr_parsed p = *pp;
    struct qcow2_header *h = &p.h;
    uint64_t cs = 1ull << h->cluster_bits, unknown;
    int rc;

    unknown = h->incompatible_features & ~Q2_INCOMPAT_KNOWN;
    if (unknown) {
        unsigned bit = (unsigned)__builtin_ctzll(unknown);
        char name[64];
        /* its name, from the feature name table if there is one */
        rc = parse_extensions(buf, len,
                              h->backing_file_offset &&
                                      h->backing_file_offset < cs
                                  ? h->backing_file_offset
                                  : (cs < len ? cs : len),
                              &p, err, errlen);
        name[0] = '\0';
        if (rc == 0)
            q2_hdr_feature_name(&p, 0, bit, name, sizeof(name));
        free(p.exts);
        return fail(err, errlen, -ENOTSUP,
                    "unsupported incompatible feature bit %u%s%s%s "
                    "(at offset 0x48)", bit, name[0] ? " ('" : "", name,
                    name[0] ? "')" : "");
    }
    if (h->refcount_order > Q2_MAX_REFCOUNT_ORDER)
        return CORRUPT("refcount_order %" PRIu32 " is larger than 6 "
                       "(at offset 0x60)", h->refcount_order);
    if ((h->incompatible_features & Q2_INCOMPAT_EXTL2) &&
        h->cluster_bits < Q2_MIN_CLUSTER_BITS_EXTL2)
        return CORRUPT("extended L2 entries need clusters of at least 16 "
                       "KiB, cluster_bits is %" PRIu32 " (at offset 0x14)",
                       h->cluster_bits);
    if (h->crypt_method > Q2_CRYPT_LUKS)
        return fail(err, errlen, -ENOTSUP,
                    "unsupported encryption method %" PRIu32
                    " (at offset 0x20)", h->crypt_method);
    if (h->incompatible_features & Q2_INCOMPAT_COMPRESSION) {
        if (h->compression_type == 0)
            return CORRUPT("compression type bit set but compression_type "
                           "is zlib (at offset 0x68)");
    } else if (h->compression_type != 0) {
        return CORRUPT("compression_type %u without the compression type "
                       "bit (at offset 0x68)", h->compression_type);
    }
    if (h->compression_type > Q2_COMPRESSION_ZSTD)
        return fail(err, errlen, -ENOTSUP,
                    "unsupported compression type %u (at offset 0x68)",
                    h->compression_type);
    return 0;
}

/* The backing file name (p->backing_name), and where the extensions end:
 * at the name, or at the end of the first cluster. */
static int check_backing_name(const uint8_t *buf, size_t len,
                              struct q2_hdr_parsed *pp, uint64_t *ext_end,
                              char *err, size_t errlen)
{
    struct qcow2_header *h = &pp->h;
    uint64_t cs = 1ull << h->cluster_bits;

    if (h->backing_file_offset) {
        if (h->backing_file_offset > cs)
            return CORRUPT("backing file name offset 0x%" PRIx64 " is past "
                           "the first cluster (at offset 0x8)",
                           h->backing_file_offset);
        if (h->backing_file_size > Q2_MAX_BACKING_NAME ||
            h->backing_file_size > cs - h->backing_file_offset)
            return CORRUPT("backing file name too long: %" PRIu32
                           " bytes (at offset 0x10)", h->backing_file_size);
        if (h->backing_file_offset < h->header_length)
            return CORRUPT("backing file name at 0x%" PRIx64 " overlaps "
                           "the header (at offset 0x8)",
                           h->backing_file_offset);
        if (!in_file(h->backing_file_offset, h->backing_file_size, len))
            return CORRUPT("backing file name runs past the end of the file "
                           "(at offset 0x%" PRIx64 ")",
                           h->backing_file_offset);
        if (h->backing_file_size == 0)
            return CORRUPT("backing file name is empty (at offset 0x10)");
        pp->backing_name = buf + h->backing_file_offset;
        pp->backing_name_len = h->backing_file_size;
        *ext_end = h->backing_file_offset;
    } else {
        *ext_end = cs;
    }
    if (*ext_end > len)
        *ext_end = len; /* bytes past EOF read as zeros: an end marker */
    return 0;
}

/* The L1 table, refcount table and snapshot table positions. */
static int check_tables(struct q2_hdr_parsed *p, uint64_t file_size,
                        unsigned flags, char *err, size_t errlen)
{
    const struct qcow2_header *h = &p->h;
    uint64_t cs = 1ull << h->cluster_bits, bytes_per_l2, need;
    unsigned l2_bits;

    /* L1 table */
    l2_bits = h->cluster_bits -
              ((h->incompatible_features & Q2_INCOMPAT_EXTL2) ? 4 : 3);
    bytes_per_l2 = 1ull << (h->cluster_bits + l2_bits);
    if (h->size > INT64_MAX)
        return CORRUPT("virtual size %" PRIu64 " is too large "
                       "(at offset 0x18)", h->size);
    need = h->size / bytes_per_l2 + (h->size % bytes_per_l2 != 0);
    if ((uint64_t)h->l1_size * 8 > Q2_MAX_L1_BYTES)
        return CORRUPT("L1 table too large: %" PRIu32 " entries "
                       "(at offset 0x24)", h->l1_size);
    if (h->l1_size < need)
        return CORRUPT("L1 table is too small: %" PRIu32 " entries for a "
                       "virtual size of %" PRIu64 " bytes (at offset 0x24)",
                       h->l1_size, h->size);
    if (h->l1_table_offset & (cs - 1))
        return CORRUPT("L1 table offset 0x%" PRIx64 " is not cluster aligned "
                       "(at offset 0x28)", h->l1_table_offset);
    if (h->l1_size &&
        (h->l1_table_offset == 0 ||
         !in_file(h->l1_table_offset, (uint64_t)h->l1_size * 8, file_size)))
        return CORRUPT("L1 table 0x%" PRIx64 "+%" PRIu64 " lies outside the "
                       "file (at offset 0x28)", h->l1_table_offset,
                       (uint64_t)h->l1_size * 8);

    /* Refcount table */
    if (h->refcount_table_offset & (cs - 1))
        return CORRUPT("refcount table offset 0x%" PRIx64 " is not cluster "
                       "aligned (at offset 0x30)", h->refcount_table_offset);
    if ((uint64_t)h->refcount_table_clusters << h->cluster_bits >
        Q2_MAX_REFTABLE_BYTES)
        return CORRUPT("refcount table too large: %" PRIu32 " clusters "
                       "(at offset 0x38)", h->refcount_table_clusters);
    if (h->refcount_table_clusters == 0)
        return CORRUPT("image has no refcount table (at offset 0x38)");
    if (h->refcount_table_offset == 0 ||
        !in_file(h->refcount_table_offset,
                 (uint64_t)h->refcount_table_clusters << h->cluster_bits,
                 file_size + cs - 1))
        return CORRUPT("refcount table 0x%" PRIx64 " lies outside the file "
                       "(at offset 0x30)", h->refcount_table_offset);

    /* Snapshot table position (entries are parsed by snapshot.c) */
    if (h->nb_snapshots > Q2_MAX_SNAPSHOTS &&
        !(flags & Q2_HDR_ANY_SNAPSHOT_COUNT))
        return CORRUPT("too many snapshots: %" PRIu32 " (at offset 0x3c)",
                       h->nb_snapshots);
    if (h->nb_snapshots && h->snapshots_offset &&
        !(h->snapshots_offset & (cs - 1)) &&
        h->snapshots_offset >= file_size && (flags & Q2_HDR_DEFER_PARTS)) {
        p->snap_past_end = true; /* the open says it, and goes on */
        return 0;
    }
    if (h->nb_snapshots &&
        ((h->snapshots_offset & (cs - 1)) || h->snapshots_offset == 0 ||
         h->snapshots_offset >= file_size))
        return CORRUPT("snapshot table offset 0x%" PRIx64 " is invalid "
                       "(at offset 0x40)", h->snapshots_offset);
    return 0;
}

int q2_hdr_parse_ex(const uint8_t *buf, size_t len, uint64_t file_size,
                    unsigned flags, struct q2_hdr_parsed *out, char *err,
                    size_t errlen)
{
    struct q2_hdr_parsed p;
    struct qcow2_header *h = &p.h;
    uint64_t ext_end = 0;
    int rc;

    memset(&p, 0, sizeof(p));
    p.ext_backing_format = p.ext_feature_table = p.ext_bitmaps = -1;
    p.ext_crypto = p.ext_data_file = -1;

    if (len < Q2_V2_HEADER_LEN)
        return CORRUPT("truncated header: %zu bytes, a qcow2 header needs "
                       "at least 72 (at offset 0x0)", len);
    if ((rc = parse_fields(buf, len, h, err, errlen)) < 0 ||
        (rc = check_features(buf, len, &p, err, errlen)) < 0 ||
        (rc = check_backing_name(buf, len, &p, &ext_end, err, errlen)) < 0)
        return rc;
    rc = parse_extensions(buf, len, ext_end, &p, err, errlen);
    if (rc < 0)
        goto fail;
    if (p.ext_bitmaps >= 0 &&
        (h->autoclear_features & Q2_AUTOCLEAR_BITMAPS)) {
        rc = check_bitmaps_ext(&p, 1ull << h->cluster_bits, file_size,
                               (flags & Q2_HDR_DEFER_PARTS) != 0, err,
                               errlen);
        if (rc < 0)
            goto fail;
    }
    if (h->crypt_method == Q2_CRYPT_LUKS && p.ext_crypto < 0) {
        rc = CORRUPT("LUKS encryption without a crypto header extension "
                     "(at offset 0x20)");
        goto fail;
    }
    if ((h->autoclear_features & Q2_AUTOCLEAR_DATA_FILE_RAW) &&
        !(h->incompatible_features & Q2_INCOMPAT_DATA_FILE)) {
        rc = CORRUPT("raw external data bit without an external data file "
                     "(at offset 0x58)");
        goto fail;
    }

    rc = check_tables(&p, file_size, flags, err, errlen);
    if (rc < 0)
        goto fail;
    *out = p;
    return 0;
fail:
    free(p.exts);
    return rc;
}
