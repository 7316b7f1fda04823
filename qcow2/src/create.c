/*
 * create.c - new qcow2 and raw images.
 *
 * A new qcow2 image starts the way QEMU starts one (qcow2_co_create):
 *
 *   cluster 0   header, extensions (backing format, feature name table),
 *               end marker, backing file name
 *   cluster 1   refcount table, entry 0 -> cluster 2
 *   cluster 2   refcount block: clusters 0, 1, 2 have refcount 1
 *
 * with an empty L1 table; the image is then opened and grown to its size
 * through the write path, which allocates the L1 table (and whatever
 * refcount blocks or table growth that needs) like any other metadata.
 * Everything written stays inside QEMU's limits, so QEMU opens it.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "endian.h"
#include "format.h"
#include "internal.h"

static int cfail(char *err, size_t errlen, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int cfail(char *err, size_t errlen, int rc, const char *fmt, ...)
{
    va_list ap;
    if (err && errlen) {
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return rc;
}

static const struct {
    uint8_t type, bit;
    const char *name;
} features[] = {
    {0, 0, "dirty bit"},          {0, 1, "corrupt bit"},
    {0, 2, "external data file"}, {0, 3, "compression type"},
    {0, 4, "extended L2 entries"}, {1, 0, "lazy refcounts"},
    {2, 0, "bitmaps"},            {2, 1, "raw external data"},
};

/* The caller's options as this library knows them (q2_opts_copy). */
static int take_opts(struct qcow2_create_opts *o,
                     const struct qcow2_create_opts *opts, char *err,
                     size_t errlen)
{
    if (!opts || q2_opts_copy(o, sizeof(*o), opts) < 0)
        return cfail(err, errlen, -EINVAL, "creation options: the size "
                     "field is not set");
    return 0;
}

static int check_opts(const struct qcow2_create_opts *o, char *err,
                      size_t errlen)
{
    unsigned version = o->version ? o->version : 3;
    uint64_t cs = o->cluster_size ? o->cluster_size : 65536;
    unsigned rb = o->refcount_bits ? o->refcount_bits : 16;

    if (o->format == QCOW2_FORMAT_RAW) {
        if (o->backing_name)
            return cfail(err, errlen, -EINVAL, "raw images have no backing "
                         "file");
        return 0;
    }
    if (o->format && o->format != QCOW2_FORMAT_QCOW2)
        return cfail(err, errlen, -EINVAL, "unknown image format");
    if (version != 2 && version != 3)
        return cfail(err, errlen, -EINVAL, "compat must be 0.10 or 1.1");
    if (cs < 512 || cs > (2u << 20) || (cs & (cs - 1)))
        return cfail(err, errlen, -EINVAL, "cluster size must be a power of "
                     "two between 512 and 2048k");
    if (rb == 0 || rb > 64 || (rb & (rb - 1)))
        return cfail(err, errlen, -EINVAL, "refcount width must be a power "
                     "of two and may not exceed 64 bits");
    if (version < 3 && rb != 16)
        return cfail(err, errlen, -EINVAL, "refcount widths other than 16 "
                     "bits need compat 1.1");
    if (o->extended_l2 && version < 3)
        return cfail(err, errlen, -EINVAL, "extended L2 entries need compat "
                     "1.1");
    if (o->extended_l2 && cs < 16384)
        return cfail(err, errlen, -EINVAL, "extended L2 entries need a "
                     "cluster size of at least 16384 bytes");
    if (o->lazy_refcounts && version < 3)
        return cfail(err, errlen, -EINVAL, "lazy refcounts need compat 1.1");
    if (o->compression_type > 1)
        return cfail(err, errlen, -EINVAL, "compression type must be zlib or "
                     "zstd");
    if (o->compression_type && version < 3)
        return cfail(err, errlen, -EINVAL, "zstd compression needs compat "
                     "1.1");
    if (o->backing_name) {
        size_t n = strlen(o->backing_name), f;
        if (n == 0 || n > Q2_MAX_BACKING_NAME)
            return cfail(err, errlen, -EINVAL, "backing file name must be 1 "
                         "to 1023 bytes long");
        if (!o->backing_format)
            return cfail(err, errlen, -EINVAL, "a backing file needs its "
                         "format");
        f = strlen(o->backing_format);
        if (f == 0 || f > Q2_MAX_BACKING_FORMAT)
            return cfail(err, errlen, -EINVAL, "backing format name must be 1 "
                         "to 15 bytes long");
    }
    if (o->virtual_size > INT64_MAX - cs)
        return cfail(err, errlen, -EINVAL, "image size is too large");
    return 0;
}

int qcow2_create_check(const struct qcow2_create_opts *opts, char *err,
                       size_t errlen)
{
    struct qcow2_create_opts o;
    int rc = take_opts(&o, opts, err, errlen);

    return rc < 0 ? rc : check_opts(&o, err, errlen);
}

/* A non-owning view of a caller's backend (its close does nothing). */
static int64_t v_pread(void *ctx, void *buf, size_t len, uint64_t off)
{
    const struct qcow2_io *io = ctx;
    return io->pread(io->ctx, buf, len, off);
}
static int64_t v_pwrite(void *ctx, const void *buf, size_t len, uint64_t off)
{
    const struct qcow2_io *io = ctx;
    return io->pwrite(io->ctx, buf, len, off);
}
static int v_flush(void *ctx)
{
    const struct qcow2_io *io = ctx;
    return io->flush(io->ctx);
}
static int v_truncate(void *ctx, uint64_t size)
{
    const struct qcow2_io *io = ctx;
    return io->truncate(io->ctx, size);
}
static int64_t v_size(void *ctx)
{
    const struct qcow2_io *io = ctx;
    return io->size(io->ctx);
}
static int64_t v_allocated(void *ctx)
{
    const struct qcow2_io *io = ctx;
    return io->allocated ? io->allocated(io->ctx) : io->size(io->ctx);
}
static void v_close(void *ctx)
{
    (void)ctx;
}

static int create_io(struct qcow2_io *io, const char *name,
                     const struct qcow2_create_opts *o, char *err,
                     size_t errlen)
{
    unsigned version = o->version ? o->version : 3;
    uint64_t cs = o->cluster_size ? o->cluster_size : 65536;
    unsigned rb = o->refcount_bits ? o->refcount_bits : 16;
    unsigned cbits = (unsigned)__builtin_ctzll(cs);
    unsigned order = (unsigned)__builtin_ctz(rb);
    uint64_t incompat = 0, compat = 0, pos, i;
    size_t hlen = version >= 3 ? Q2_V3_HEADER_LEN : Q2_V2_HEADER_LEN;
    struct qcow2_open_opts oo = {.size = sizeof(oo),
                                 .flags = QCOW2_OPEN_RDWR |
                                          QCOW2_OPEN_NO_BACKING,
                                 .format = "qcow2"};
    struct qcow2_io view;
    struct qcow2_image *img;
    uint8_t *buf;
    int64_t n;
    int rc;

    rc = check_opts(o, err, errlen);
    if (rc < 0)
        return rc;
    if (o->format == QCOW2_FORMAT_RAW) {
        rc = io->truncate(io->ctx, o->virtual_size);
        if (rc == 0)
            rc = io->flush(io->ctx);
        return rc < 0 ? cfail(err, errlen, rc, "cannot size the file: %s",
                              qcow2_strerror(rc)) : 0;
    }
    if (o->compression_type)
        incompat |= Q2_INCOMPAT_COMPRESSION;
    if (o->extended_l2)
        incompat |= Q2_INCOMPAT_EXTL2;
    if (o->lazy_refcounts)
        compat |= Q2_COMPAT_LAZY_REFCOUNTS;

    buf = calloc(3, cs);
    if (!buf)
        return -ENOMEM;
    q2_store_be32(buf, Q2_MAGIC);
    q2_store_be32(buf + 4, version);
    q2_store_be32(buf + 20, cbits);
    q2_store_be64(buf + 48, cs);          /* refcount table: cluster 1 */
    q2_store_be32(buf + 56, 1);
    if (version >= 3) {
        q2_store_be64(buf + 72, incompat);
        q2_store_be64(buf + 80, compat);
        q2_store_be32(buf + 96, order);
        q2_store_be32(buf + 100, (uint32_t)hlen);
        buf[104] = (uint8_t)o->compression_type;
    }
    pos = hlen;
    if (o->backing_format) {
        size_t f = strlen(o->backing_format);
        q2_store_be32(buf + pos, Q2_EXT_BACKING_FORMAT);
        q2_store_be32(buf + pos + 4, (uint32_t)f);
        memcpy(buf + pos + 8, o->backing_format, f);
        pos += 8 + ((f + 7) & ~(size_t)7);
    }
    if (version >= 3 && cs > 4096) { /* as QEMU writes it */
        size_t k, nf = sizeof(features) / sizeof(features[0]);
        q2_store_be32(buf + pos, Q2_EXT_FEATURE_TABLE);
        q2_store_be32(buf + pos + 4, (uint32_t)(nf * Q2_FEATURE_ENTRY_LEN));
        for (k = 0; k < nf; k++) {
            uint8_t *e = buf + pos + 8 + k * Q2_FEATURE_ENTRY_LEN;
            e[0] = features[k].type;
            e[1] = features[k].bit;
            memcpy(e + 2, features[k].name, strlen(features[k].name));
        }
        pos += 8 + nf * Q2_FEATURE_ENTRY_LEN;
    }
    pos += 8; /* end marker */
    if (o->backing_name) {
        size_t b = strlen(o->backing_name);
        if (pos + b > cs) {
            free(buf);
            return cfail(err, errlen, -EINVAL, "backing file name does not "
                         "fit in the first cluster");
        }
        q2_store_be64(buf + 8, pos);
        q2_store_be32(buf + 16, (uint32_t)b);
        memcpy(buf + pos, o->backing_name, b);
    }
    q2_store_be64(buf + cs, 2 * cs);     /* reftable[0] -> cluster 2 */
    for (i = 0; i < 3; i++)              /* clusters 0..2: refcount 1 */
        q2_rc_entry_set(buf + 2 * cs, order, i, 1);
    n = io->pwrite(io->ctx, buf, 3 * cs, 0);
    free(buf);
    if (n < 0)
        return cfail(err, errlen, (int)n, "cannot write the image: %s",
                     qcow2_strerror((int)n));
    rc = io->flush(io->ctx);
    if (rc < 0)
        return cfail(err, errlen, rc, "cannot write the image: %s",
                     qcow2_strerror(rc));

    /* grow to the size through the write path */
    view = (struct qcow2_io){.version = QCOW2_IO_VERSION, .ctx = io,
                             .pread = v_pread, .pwrite = v_pwrite,
                             .flush = v_flush, .truncate = v_truncate,
                             .size = v_size, .allocated = v_allocated,
                             .close = v_close};
    img = qcow2_new();
    if (!img)
        return -ENOMEM;
    rc = qcow2_open_io(img, &view, name, &oo);
    if (rc == 0)
        rc = q2_resize(img, o->virtual_size);
    if (rc == 0)
        rc = q2_flush(img);
    if (rc < 0)
        cfail(err, errlen, rc, "%s", qcow2_errmsg(img));
    if (qcow2_close(img) < 0 && rc == 0)
        rc = cfail(err, errlen, -EIO, "cannot flush the new image");
    return rc;
}

/* The new image made in memory: *io holds exactly the bytes qcow2_create
 * would write (the caller closes it). */
static int create_mem(const struct qcow2_create_opts *o, const char *name,
                      struct qcow2_io *io, char *err, size_t errlen)
{
    int rc = qcow2_io_open_mem(NULL, 0, io);

    if (rc < 0)
        return cfail(err, errlen, rc, "out of memory");
    rc = create_io(io, name, o, err, errlen);
    if (rc < 0)
        io->close(io->ctx);
    return rc;
}

static int create_size(const struct qcow2_create_opts *o, uint64_t *out,
                       char *err, size_t errlen)
{
    struct qcow2_io io;
    size_t len = 0;
    int rc = check_opts(o, err, errlen);

    if (rc < 0)
        return rc;
    if (o->format == QCOW2_FORMAT_RAW) {
        *out = o->virtual_size;
        return 0;
    }
    rc = create_mem(o, "", &io, err, errlen);
    if (rc < 0)
        return rc;
    q2_io_mem_data(&io, &len);
    io.close(io.ctx);
    *out = len;
    return 0;
}

/*
 * A new image on an existing block device (an LVM volume), as qemu-img
 * create writes one: the device is not created and keeps its size; a raw
 * image is the device itself (nothing is written); a qcow2 image is made
 * in memory, checked against the device's size, and written over the
 * device's start in one write, then flushed.  Refused before anything is
 * written when it does not fit.
 */
static int create_on_device(const char *path,
                            const struct qcow2_create_opts *o, char *err,
                            size_t errlen)
{
    struct qcow2_io dev, mem;
    const uint8_t *bytes;
    size_t len = 0;
    int64_t cap, n;
    int rc;

    rc = qcow2_io_open_file(path, QCOW2_IO_RDWR, &dev, err, errlen);
    if (rc < 0)
        return rc;
    if (!(dev.caps & QCOW2_IO_CAP_FIXED_SIZE)) {
        dev.close(dev.ctx); /* replaced by a file since we looked */
        return cfail(err, errlen, -EEXIST, "%s", strerror(EEXIST));
    }
    cap = dev.size(dev.ctx);
    if (cap < 0) {
        dev.close(dev.ctx);
        return cfail(err, errlen, (int)cap, "cannot get the size of the "
                     "device: %s", qcow2_strerror((int)cap));
    }
    if (o->format == QCOW2_FORMAT_RAW) {
        dev.close(dev.ctx);
        if (o->virtual_size > (uint64_t)cap)
            return cfail(err, errlen, -ENOSPC, "the device is %" PRId64
                         " bytes, smaller than the image's %" PRIu64,
                         cap, o->virtual_size);
        return 0;
    }
    rc = create_mem(o, path, &mem, err, errlen);
    if (rc < 0) {
        dev.close(dev.ctx);
        return rc;
    }
    bytes = q2_io_mem_data(&mem, &len);
    if ((uint64_t)len > (uint64_t)cap) {
        rc = cfail(err, errlen, -ENOSPC, "the device is %" PRId64 " bytes; "
                   "the new image's metadata needs %zu", cap, len);
    } else {
        n = dev.pwrite(dev.ctx, bytes, len, 0);
        rc = n < 0 ? (int)n : dev.flush(dev.ctx);
        if (rc < 0)
            cfail(err, errlen, rc, "cannot write the image: %s",
                  qcow2_strerror(rc));
    }
    mem.close(mem.ctx);
    dev.close(dev.ctx);
    return rc;
}

static int create(const char *path, const struct qcow2_create_opts *o,
                  char *err, size_t errlen)
{
    struct qcow2_io io;
    struct stat st;
    char tmp[4096 + 32];
    int rc;

    rc = check_opts(o, err, errlen);
    if (rc < 0)
        return rc;
    if (stat(path, &st) == 0 && S_ISBLK(st.st_mode))
        return create_on_device(path, o, err, errlen);
    /* made under a temporary name, then named: a power loss leaves the
     * whole image or no file, never a half-written one under its name */
    rc = qcow2_io_create_temp(path, 0, &io, tmp, sizeof(tmp), err, errlen);
    if (rc < 0)
        return rc;
    rc = create_io(&io, path, o, err, errlen);
    io.close(io.ctx);
    if (rc == 0) {
        rc = qcow2_io_publish(tmp, path);
        if (rc < 0)
            cfail(err, errlen, rc, "cannot name the new image: %s",
                  qcow2_strerror(rc));
    }
    if (rc < 0)
        unlink(tmp); /* we made it: a failed create leaves no file */
    return rc;
}

/* The public entry points: the caller's options taken once (q2_opts_copy),
 * then the work. */
int qcow2_create_io(struct qcow2_io *io, const char *name,
                    const struct qcow2_create_opts *opts, char *err,
                    size_t errlen)
{
    struct qcow2_create_opts o;
    int rc = take_opts(&o, opts, err, errlen);

    return rc < 0 ? rc : create_io(io, name, &o, err, errlen);
}

int qcow2_create_size(const struct qcow2_create_opts *opts, uint64_t *out,
                      char *err, size_t errlen)
{
    struct qcow2_create_opts o;
    int rc = take_opts(&o, opts, err, errlen);

    return rc < 0 ? rc : create_size(&o, out, err, errlen);
}

int qcow2_create(const char *path, const struct qcow2_create_opts *opts,
                 char *err, size_t errlen)
{
    struct qcow2_create_opts o;
    int rc = take_opts(&o, opts, err, errlen);

    return rc < 0 ? rc : create(path, &o, err, errlen);
}
