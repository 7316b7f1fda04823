/*
 * test_write.c - the write path in memory: images made by qcow2_create_io,
 * written through qcow2_pwrite/zeroes/discard and read back against a
 * model; write errors (fault injection in the memory backend) are sticky;
 * read-only handles refuse writes.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "internal.h"

#define SIZE (4u << 20)

/* A new image in memory, opened read-write.  *raw keeps a copy of the
 * backend (its ctx is shared with the handle) for fault injection. */
static struct qcow2_image *new_image(const struct qcow2_create_opts *o,
                                     struct qcow2_io *raw)
{
    struct qcow2_open_opts oo = {.size = sizeof(oo),
                                 .flags = QCOW2_OPEN_RDWR};
    struct qcow2_image *img;
    char err[256];

    if (qcow2_io_open_mem(NULL, 0, raw) < 0)
        return NULL;
    if (qcow2_create_io(raw, "mem.qcow2", o, err, sizeof(err)) < 0) {
        failure("create: %s", err);
        raw->close(raw->ctx);
        return NULL;
    }
    img = qcow2_new();
    if (qcow2_open_io(img, raw, "mem.qcow2", &oo) < 0) {
        failure("open: %s", qcow2_errmsg(img));
        qcow2_close(img);
        return NULL;
    }
    return img;
}

static uint64_t rng = 42;
static uint64_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static void roundtrip(unsigned cluster_size, unsigned refbits, unsigned ver,
                      bool extl2)
{
    struct qcow2_create_opts o = {.size = sizeof(o), .virtual_size = SIZE,
                                  .cluster_size = cluster_size,
                                  .refcount_bits = refbits, .version = ver,
                                  .extended_l2 = extl2};
    struct qcow2_io raw;
    struct qcow2_image *img = new_image(&o, &raw);
    uint8_t *model = calloc(1, SIZE), *got = malloc(SIZE), *buf = malloc(SIZE);
    unsigned i;

    REQUIRE_TRUE(img && model && got && buf);
    for (i = 0; i < 300; i++) {
        uint64_t off = rnd() % (SIZE / 512) * 512;
        uint64_t len = (1 + rnd() % (4 * cluster_size / 512)) * 512, k;
        unsigned op = (unsigned)(rnd() % 10);
        if (off + len > SIZE)
            len = SIZE - off;
        if (op < 7) {
            for (k = 0; k < len; k++)
                buf[k] = (uint8_t)rnd();
            EXPECT_EQ_INT(qcow2_pwrite(img, buf, len, off), (int64_t)len);
            memcpy(model + off, buf, len);
        } else {
            EXPECT_EQ_INT(qcow2_pwrite_zeroes(img, off, len), 0);
            memset(model + off, 0, len);
        }
    }
    EXPECT_EQ_INT(qcow2_pread(img, got, SIZE, 0), SIZE);
    EXPECT_TRUE(memcmp(got, model, SIZE) == 0);
    EXPECT_EQ_INT(qcow2_flush(img), 0);
    EXPECT_EQ_INT(qcow2_close(img), 0);
    free(model);
    free(got);
    free(buf);
}

TEST(roundtrip_64k)
{
    roundtrip(65536, 16, 3, false);
}

TEST(roundtrip_512_rc64)
{
    roundtrip(512, 64, 3, false);
}

TEST(roundtrip_4k_rc1_v2)
{
    roundtrip(4096, 16, 2, false);
}

TEST(roundtrip_extl2)
{
    roundtrip(32768, 8, 3, true);
}

TEST(errors_are_sticky)
{
    struct qcow2_create_opts o = {.size = sizeof(o), .virtual_size = SIZE};
    struct qcow2_io raw;
    struct qcow2_image *img = new_image(&o, &raw);
    uint8_t buf[4096];

    REQUIRE_TRUE(img != NULL);
    memset(buf, 0x5a, sizeof(buf));
    EXPECT_EQ_INT(qcow2_pwrite(img, buf, sizeof(buf), 0), 4096);
    failure("the backend fails: the write reports it");
    q2_io_mem_fail_after(&raw, 0);
    EXPECT_EQ_INT(qcow2_pwrite(img, buf, sizeof(buf), 1 << 20), -EIO);
    failure("the backend works again: the handle still refuses");
    q2_io_mem_fail_after(&raw, -1);
    EXPECT_EQ_INT(qcow2_pwrite(img, buf, sizeof(buf), 2 << 20), -EIO);
    EXPECT_CONTAINS(qcow2_errmsg(img), "refuses further writes");
    EXPECT_EQ_INT(qcow2_pwrite_zeroes(img, 0, 4096), -EIO);
    EXPECT_EQ_INT(qcow2_flush(img), -EIO);
    EXPECT_EQ_INT(qcow2_close(img), -EIO);
}

TEST(flush_failure_is_reported)
{
    struct qcow2_create_opts o = {.size = sizeof(o), .virtual_size = SIZE};
    struct qcow2_io raw;
    struct qcow2_image *img = new_image(&o, &raw);
    uint8_t buf[4096];

    REQUIRE_TRUE(img != NULL);
    memset(buf, 1, sizeof(buf));
    EXPECT_EQ_INT(qcow2_pwrite(img, buf, sizeof(buf), 0), 4096);
    q2_io_mem_fail_after(&raw, 0);
    EXPECT_EQ_INT(qcow2_flush(img), -EIO);
    q2_io_mem_fail_after(&raw, -1);
    EXPECT_EQ_INT(qcow2_pwrite(img, buf, sizeof(buf), 0), -EIO);
    EXPECT_EQ_INT(qcow2_close(img), -EIO);
}

TEST(read_only_refuses_writes)
{
    struct qcow2_create_opts o = {.size = sizeof(o), .virtual_size = SIZE};
    struct qcow2_io raw, copy;
    struct qcow2_image *img;
    const uint8_t *data;
    size_t len;
    char err[256];

    REQUIRE_EQ_INT(qcow2_io_open_mem(NULL, 0, &raw), 0);
    REQUIRE_EQ_INT(qcow2_create_io(&raw, "m", &o, err, sizeof(err)), 0);
    data = q2_io_mem_data(&raw, &len);
    REQUIRE_EQ_INT(qcow2_io_open_mem(data, len, &copy), 0);
    raw.close(raw.ctx);
    img = qcow2_new();
    REQUIRE_EQ_INT(qcow2_open_io(img, &copy, "m", NULL), 0);
    EXPECT_EQ_INT(qcow2_pwrite(img, err, 16, 0), -EROFS);
    EXPECT_EQ_INT(qcow2_resize(img, 2 * SIZE), -EROFS);
    qcow2_close(img);
}

TEST(write_beyond_size_refused)
{
    struct qcow2_create_opts o = {.size = sizeof(o), .virtual_size = SIZE};
    struct qcow2_io raw;
    struct qcow2_image *img = new_image(&o, &raw);
    uint8_t buf[512] = {0};

    REQUIRE_TRUE(img != NULL);
    EXPECT_EQ_INT(qcow2_pwrite(img, buf, 512, SIZE), -EINVAL);
    EXPECT_EQ_INT(qcow2_resize(img, SIZE + 1), -EINVAL);
    EXPECT_EQ_INT(qcow2_resize(img, SIZE / 2), -ENOTSUP);
    EXPECT_EQ_INT(qcow2_resize(img, 4 * SIZE), 0);
    EXPECT_EQ_INT(qcow2_pwrite(img, buf, 512, 3 * SIZE), 512);
    EXPECT_EQ_U64(qcow2_virtual_size(img), 4 * SIZE);
    EXPECT_EQ_INT(qcow2_close(img), 0);
}

TEST(create_rejects_bad_options)
{
    struct qcow2_create_opts o = {.size = sizeof(o), .virtual_size = SIZE,
                                  .cluster_size = 3000};
    char err[256];

    EXPECT_EQ_INT(qcow2_create_check(&o, err, sizeof(err)), -EINVAL);
    EXPECT_CONTAINS(err, "cluster size");
    o.cluster_size = 8192;
    o.extended_l2 = true;
    EXPECT_EQ_INT(qcow2_create_check(&o, err, sizeof(err)), -EINVAL);
    o.extended_l2 = false;
    o.backing_name = "base";
    EXPECT_EQ_INT(qcow2_create_check(&o, err, sizeof(err)), -EINVAL);
    EXPECT_CONTAINS(err, "format");
}
