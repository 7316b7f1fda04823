/*
 * test_device.c - images on storage of a fixed size (block devices, LVM
 * volumes), simulated in memory: a backend that says
 * QCOW2_IO_CAP_FIXED_SIZE, reports its capacity as its size and counts
 * every write past its end and every truncate (the library must make
 * neither).  Allocation stops with -ENOSPC at the end of the device,
 * refcount structures go after the last cluster in use, not after the
 * device's end, a raw device keeps its size, and a commit that does not fit
 * is refused before the base changes.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "internal.h"

struct dev {
    struct qcow2_io mem; /* the bytes, capacity long */
    uint64_t cap;
    unsigned violations; /* writes past the end, truncates */
};

static int64_t d_pread(void *ctx, void *buf, size_t len, uint64_t off)
{
    struct dev *d = ctx;
    if (off >= d->cap)
        return 0;
    if (len > d->cap - off)
        len = (size_t)(d->cap - off);
    return d->mem.pread(d->mem.ctx, buf, len, off);
}

static int64_t d_pwrite(void *ctx, const void *buf, size_t len, uint64_t off)
{
    struct dev *d = ctx;
    if (off > d->cap || len > d->cap - off) {
        d->violations++;
        return -ENOSPC;
    }
    return d->mem.pwrite(d->mem.ctx, buf, len, off);
}

static int d_flush(void *ctx)
{
    (void)ctx;
    return 0;
}

static int d_truncate(void *ctx, uint64_t size)
{
    struct dev *d = ctx;
    (void)size;
    d->violations++;
    return -EINVAL;
}

static int64_t d_size(void *ctx)
{
    return (int64_t)((struct dev *)ctx)->cap;
}

static void d_close(void *ctx)
{
    (void)ctx; /* the test owns the device */
}

/* A handle's view of the device (several may share it). */
static void dev_view(struct dev *d, struct qcow2_io *io)
{
    memset(io, 0, sizeof(*io));
    io->version = QCOW2_IO_VERSION;
    io->ctx = d;
    io->pread = d_pread;
    io->pwrite = d_pwrite;
    io->flush = d_flush;
    io->truncate = d_truncate;
    io->size = d_size;
    io->close = d_close;
    io->caps = QCOW2_IO_CAP_FIXED_SIZE;
}

/* A device of cap bytes holding a new image (qcow2_create_io's bytes,
 * then zeros; raw: zeros). */
static int dev_init(struct dev *d, uint64_t cap,
                    const struct qcow2_create_opts *o)
{
    char err[256];
    size_t len = 0;

    memset(d, 0, sizeof(*d));
    d->cap = cap;
    if (qcow2_io_open_mem(NULL, 0, &d->mem) < 0)
        return -1;
    if (o && qcow2_create_io(&d->mem, "dev", o, err, sizeof(err)) < 0) {
        failure("create: %s", err);
        return -1;
    }
    q2_io_mem_data(&d->mem, &len);
    if (len > cap) {
        failure("the image needs %zu bytes, the device has %llu", len,
                (unsigned long long)cap);
        return -1;
    }
    return d->mem.truncate(d->mem.ctx, cap);
}

static void dev_free(struct dev *d)
{
    d->mem.close(d->mem.ctx);
}

static struct qcow2_image *dev_open(struct dev *d, unsigned flags)
{
    struct qcow2_open_opts oo = {.size = sizeof(oo),
                                 .flags = flags | QCOW2_OPEN_NO_BACKING};
    struct qcow2_image *img = qcow2_new();
    struct qcow2_io io;

    dev_view(d, &io);
    if (qcow2_open_io(img, &io, "dev", &oo) < 0) {
        failure("open: %s", qcow2_errmsg(img));
        qcow2_close(img);
        return NULL;
    }
    return img;
}

/* A copy of the device's bytes. */
static uint8_t *dev_bytes(struct dev *d)
{
    size_t len = 0;
    const uint8_t *p = q2_io_mem_data(&d->mem, &len);
    uint8_t *c = malloc(len ? len : 1);
    if (c)
        memcpy(c, p, len);
    return c;
}

static uint64_t image_end(struct dev *d)
{
    struct qcow2_image *img = dev_open(d, 0);
    struct qcow2_check_result r;
    uint64_t end = 0;

    if (img && EXPECT_EQ_INT(qcow2_check(img, NULL, &r), 0)) {
        EXPECT_EQ_U64(r.corruptions, 0);
        EXPECT_EQ_U64(r.leaks, 0);
        end = r.image_end_offset;
    }
    qcow2_close(img);
    return end;
}

TEST(qcow2_fills_the_device_then_enospc)
{
    struct qcow2_create_opts o = {.size = sizeof(o), .virtual_size = 8 << 20,
                                  .cluster_size = 4096};
    struct qcow2_image *img;
    struct dev d;
    uint8_t buf[4096];
    uint64_t off, written = 0, durable = 0;
    int64_t rc = 0;

    REQUIRE_EQ_INT(dev_init(&d, 256 << 10, &o), 0);
    img = dev_open(&d, QCOW2_OPEN_RDWR);
    REQUIRE_TRUE(img != NULL);
    for (off = 0; off < (8u << 20); off += 4096) {
        memset(buf, (int)(off >> 12) | 1, sizeof(buf));
        rc = qcow2_pwrite(img, buf, sizeof(buf), off);
        if (rc < 0)
            break;
        written = off + 4096;
        if ((written >> 12) % 8 == 0 && qcow2_flush(img) == 0)
            durable = written;
    }
    failure("256 KiB of 4 KiB clusters hold fewer than 64 data clusters");
    EXPECT_EQ_INT(rc, -ENOSPC);
    EXPECT_CONTAINS(qcow2_errmsg(img), "the device is full");
    EXPECT_TRUE(written >= (32u << 12) && written < (64u << 12));
    qcow2_close(img);
    failure("nothing written past the device's end, never truncated");
    EXPECT_EQ_INT(d.violations, 0);
    /* what was flushed before the device filled up is all there (the
     * failed handle writes no more metadata: the rest is not) */
    EXPECT_TRUE(durable >= (24u << 12));
    img = dev_open(&d, 0);
    REQUIRE_TRUE(img != NULL);
    for (off = 0; off < durable; off += 4096) {
        uint8_t want[4096];
        memset(want, (int)(off >> 12) | 1, sizeof(want));
        EXPECT_EQ_INT(qcow2_pread(img, buf, sizeof(buf), off), 4096);
        if (!EXPECT_EQ_MEM(buf, want, sizeof(buf)))
            break;
    }
    qcow2_close(img);
    {
        struct qcow2_check_result r;
        img = dev_open(&d, 0);
        REQUIRE_TRUE(img != NULL);
        EXPECT_EQ_INT(qcow2_check(img, NULL, &r), 0);
        failure("a failed allocation leaks at worst");
        EXPECT_EQ_U64(r.corruptions, 0);
        EXPECT_TRUE(r.image_end_offset <= d.cap);
        qcow2_close(img);
    }
    dev_free(&d);
}

TEST(refcount_table_growth_stays_on_the_device)
{
    /* 512-byte clusters with 64-bit refcounts: one refcount block covers
     * 64 clusters, the first table 64 blocks (2 MiB): writing 3 MiB grows
     * the table, which must go after what is in use, not past the end of
     * the 8 MiB device */
    struct qcow2_create_opts o = {.size = sizeof(o), .virtual_size = 4 << 20,
                                  .cluster_size = 512, .refcount_bits = 64};
    struct qcow2_image *img;
    struct dev d;
    uint8_t *buf = malloc(3 << 20), *got = malloc(3 << 20);
    uint64_t i;

    REQUIRE_TRUE(buf && got);
    for (i = 0; i < (3u << 20); i++)
        buf[i] = (uint8_t)(i * 7 + 1);
    REQUIRE_EQ_INT(dev_init(&d, 8 << 20, &o), 0);
    img = dev_open(&d, QCOW2_OPEN_RDWR);
    REQUIRE_TRUE(img != NULL);
    EXPECT_EQ_INT(qcow2_pwrite(img, buf, 3 << 20, 0), 3 << 20);
    EXPECT_EQ_INT(qcow2_close(img), 0);
    EXPECT_EQ_INT(d.violations, 0);
    img = dev_open(&d, 0);
    REQUIRE_TRUE(img != NULL);
    EXPECT_TRUE(qcow2_header_get(img)->refcount_table_clusters > 1);
    EXPECT_TRUE(qcow2_header_get(img)->refcount_table_offset < (6u << 20));
    EXPECT_EQ_INT(qcow2_pread(img, got, 3 << 20, 0), 3 << 20);
    EXPECT_EQ_MEM(got, buf, 3 << 20);
    qcow2_close(img);
    EXPECT_TRUE(image_end(&d) < (6u << 20));
    dev_free(&d);
    free(buf);
    free(got);
}

TEST(rebuild_places_refcounts_after_the_last_reference)
{
    struct qcow2_create_opts o = {.size = sizeof(o), .virtual_size = 4 << 20};
    struct qcow2_image *img;
    struct dev d;
    uint8_t buf[65536];
    uint64_t end_before;

    memset(buf, 0x3c, sizeof(buf));
    REQUIRE_EQ_INT(dev_init(&d, 64 << 20, &o), 0);
    img = dev_open(&d, QCOW2_OPEN_RDWR);
    REQUIRE_TRUE(img != NULL);
    EXPECT_EQ_INT(qcow2_pwrite(img, buf, sizeof(buf), 1 << 20), 65536);
    EXPECT_EQ_INT(qcow2_close(img), 0);
    end_before = image_end(&d);
    img = dev_open(&d, QCOW2_OPEN_RDWR);
    REQUIRE_TRUE(img != NULL);
    EXPECT_EQ_INT(qcow2_rebuild_refcounts(img), 0);
    failure("the new table right after the image, not past 64 MiB");
    EXPECT_EQ_U64(qcow2_header_get(img)->refcount_table_offset,
                  end_before + 65536);
    EXPECT_EQ_INT(qcow2_close(img), 0);
    EXPECT_EQ_INT(d.violations, 0);
    EXPECT_EQ_U64(image_end(&d), end_before + 2 * 65536);
    dev_free(&d);
}

TEST(rebuild_refused_when_the_device_is_full)
{
    struct qcow2_create_opts o = {.size = sizeof(o), .virtual_size = 4 << 20};
    struct qcow2_image *img;
    struct dev d;
    uint8_t buf[65536], *before;

    memset(buf, 0x3c, sizeof(buf));
    /* header, reftable, refblock, L1, L2, data: 6 clusters, all of it */
    REQUIRE_EQ_INT(dev_init(&d, 6 * 65536, &o), 0);
    img = dev_open(&d, QCOW2_OPEN_RDWR);
    REQUIRE_TRUE(img != NULL);
    EXPECT_EQ_INT(qcow2_pwrite(img, buf, sizeof(buf), 0), 65536);
    EXPECT_EQ_INT(qcow2_close(img), 0);
    before = dev_bytes(&d);
    img = dev_open(&d, QCOW2_OPEN_RDWR);
    REQUIRE_TRUE(img != NULL);
    EXPECT_EQ_INT(qcow2_rebuild_refcounts(img), -ENOSPC);
    qcow2_close(img);
    EXPECT_EQ_INT(d.violations, 0);
    {
        size_t len = 0;
        const uint8_t *now = q2_io_mem_data(&d.mem, &len);
        failure("refused before anything was written");
        EXPECT_EQ_MEM(now, before, len);
    }
    free(before);
    dev_free(&d);
}

TEST(raw_device_keeps_its_size)
{
    struct qcow2_image *img;
    struct dev d;
    uint8_t buf[4096];

    REQUIRE_EQ_INT(dev_init(&d, 1 << 20, NULL), 0);
    img = qcow2_new();
    {
        struct qcow2_open_opts oo = {.size = sizeof(oo),
                                     .flags = QCOW2_OPEN_RDWR,
                                     .format = "raw"};
        struct qcow2_io io;
        dev_view(&d, &io);
        REQUIRE_EQ_INT(qcow2_open_io(img, &io, "dev", &oo), 0);
    }
    EXPECT_EQ_U64(qcow2_virtual_size(img), 1 << 20);
    EXPECT_EQ_INT(qcow2_resize(img, 1 << 20), 0);
    EXPECT_EQ_INT(qcow2_resize(img, 2 << 20), -ENOSPC);
    EXPECT_CONTAINS(qcow2_errmsg(img), "2097152 bytes are needed");
    EXPECT_EQ_U64(qcow2_virtual_size(img), 1 << 20);
    memset(buf, 0x77, sizeof(buf));
    EXPECT_EQ_INT(qcow2_pwrite(img, buf, sizeof(buf), (1 << 20) - 4096),
                  4096);
    EXPECT_EQ_INT(qcow2_pwrite_zeroes(img, 0, 1 << 20), 0);
    EXPECT_EQ_INT(qcow2_close(img), 0);
    EXPECT_EQ_INT(d.violations, 0);
    dev_free(&d);
}

/* ---- commit into a device ---- */

static int open_dev_file(void *ctx, const char *name, unsigned io_flags,
                         struct qcow2_io *out, char *err, size_t errlen)
{
    (void)io_flags;
    if (strcmp(name, "base.dev") != 0) {
        snprintf(err, errlen, "no such file");
        return -ENOENT;
    }
    dev_view(ctx, out);
    return 0;
}

/* A 64 MiB qcow2 top in memory over the qcow2 base on d, holding `mib`
 * MiB of data from 1 MiB on; opened with its chain. */
static struct qcow2_image *top_over(struct dev *d, unsigned mib)
{
    struct qcow2_create_opts o = {.size = sizeof(o),
                                  .virtual_size = 64 << 20,
                                  .backing_name = "base.dev",
                                  .backing_format = "qcow2"};
    struct qcow2_open_opts oo = {.size = sizeof(oo),
                                 .open_file = open_dev_file,
                                 .open_ctx = d};
    struct qcow2_image *top = qcow2_new();
    struct qcow2_io mem;
    uint8_t *buf = malloc(1 << 20);
    char err[256];
    unsigned i;

    if (!buf || qcow2_io_open_mem(NULL, 0, &mem) < 0 ||
        qcow2_create_io(&mem, "top.qcow2", &o, err, sizeof(err)) < 0)
        goto fail;
    oo.flags = QCOW2_OPEN_RDWR;
    if (qcow2_open_io(top, &mem, "top.qcow2", &oo) < 0)
        goto fail;
    for (i = 0; i < mib; i++) {
        memset(buf, (int)i + 1, 1 << 20);
        if (qcow2_pwrite(top, buf, 1 << 20, (uint64_t)(i + 1) << 20) < 0)
            goto fail;
    }
    {   /* reopen read-only: the commit reads a chain nobody writes */
        const uint8_t *p;
        size_t len = 0;
        struct qcow2_io copy;
        if (qcow2_flush(top) < 0)
            goto fail;
        p = q2_io_mem_data(&mem, &len);
        if (qcow2_io_open_mem(p, len, &copy) < 0)
            goto fail;
        qcow2_close(top);
        top = qcow2_new();
        oo.flags = 0;
        if (qcow2_open_io(top, &copy, "top.qcow2", &oo) < 0)
            goto fail;
    }
    free(buf);
    return top;
fail:
    failure("top: %s", qcow2_errmsg(top));
    free(buf);
    qcow2_close(top);
    return NULL;
}

TEST(commit_refused_before_writing_when_it_does_not_fit)
{
    struct qcow2_create_opts o = {.size = sizeof(o), .virtual_size = 64 << 20};
    struct qcow2_commit_estimate est;
    struct qcow2_image *top, *base;
    struct dev d;
    uint8_t *before;
    size_t len = 0;

    REQUIRE_EQ_INT(dev_init(&d, 4 << 20, &o), 0);
    top = top_over(&d, 8);
    REQUIRE_TRUE(top != NULL);
    REQUIRE_EQ_INT(qcow2_commit_estimate(top, 1, 0, &est), 0);
    EXPECT_EQ_U64(est.base_capacity_bytes, 4 << 20);
    EXPECT_TRUE(est.base_required_bytes > (8u << 20));
    before = dev_bytes(&d);
    base = dev_open(&d, QCOW2_OPEN_RDWR);
    REQUIRE_TRUE(base != NULL);
    EXPECT_EQ_INT(qcow2_commit(top, 1, base, NULL, NULL), -ENOSPC);
    EXPECT_CONTAINS(qcow2_errmsg(top), "extend the volume");
    qcow2_close(base);
    EXPECT_EQ_INT(d.violations, 0);
    failure("the base is as it was");
    EXPECT_EQ_MEM(q2_io_mem_data(&d.mem, &len), before, 4 << 20);
    free(before);
    qcow2_close(top);
    dev_free(&d);
}

TEST(commit_fits_exactly_as_estimated)
{
    struct qcow2_create_opts o = {.size = sizeof(o), .virtual_size = 64 << 20};
    struct qcow2_commit_estimate est;
    struct qcow2_image *top, *base;
    struct dev d;
    uint8_t *a = malloc(64 << 20), *b = malloc(64 << 20);

    REQUIRE_TRUE(a && b);
    REQUIRE_EQ_INT(dev_init(&d, 32 << 20, &o), 0);
    top = top_over(&d, 8);
    REQUIRE_TRUE(top != NULL);
    REQUIRE_EQ_INT(qcow2_commit_estimate(top, 1, 0, &est), 0);
    base = dev_open(&d, QCOW2_OPEN_RDWR);
    REQUIRE_TRUE(base != NULL);
    EXPECT_EQ_INT(qcow2_commit(top, 1, base, NULL, NULL), 0);
    EXPECT_EQ_INT(qcow2_close(base), 0);
    EXPECT_EQ_INT(d.violations, 0);
    failure("the image ends where the estimate said");
    EXPECT_EQ_U64(image_end(&d), est.base_required_bytes);
    base = dev_open(&d, 0);
    REQUIRE_TRUE(base != NULL);
    EXPECT_EQ_INT(qcow2_pread(top, a, 64 << 20, 0), 64 << 20);
    EXPECT_EQ_INT(qcow2_pread(base, b, 64 << 20, 0), 64 << 20);
    EXPECT_EQ_MEM(a, b, 64 << 20);
    qcow2_close(base);
    qcow2_close(top);
    dev_free(&d);
    free(a);
    free(b);
}
