/*
 * test_map.c - qcow2_map (map.c and the chain walk of image.c) on images
 * built in memory: every kind of L2 entry, how runs merge and split, the
 * corruption checks, and the walk through backing chains.
 *
 * Most images use 512-byte clusters, so one L2 table (64 entries) maps
 * 32 KiB and table boundaries are cheap to reach.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "format.h"
#include "harness.h"
#include "imgbuild.h"
#include "internal.h"

#define CS 512u
#define L2_SPAN (64u * CS)

#define FLAGS_DATA                                                          \
    (QCOW2_EXTENT_PRESENT | QCOW2_EXTENT_DATA | QCOW2_EXTENT_OFFSET_VALID)

static int map(struct qcow2_image *img, uint64_t start, uint64_t len,
               unsigned flags, struct qcow2_extent *e)
{
    memset(e, 0xa5, sizeof(*e)); /* catch fields left unset */
    return qcow2_map(img, start, len, flags, e);
}

/* Open q from memory; on failure report the message and return NULL. */
static struct qcow2_image *open_img(struct qimg *q)
{
    struct qcow2_image *img;
    int rc = qimg_open(q, "t.qcow2", NULL, &img);

    if (rc < 0) {
        failure("open: %s", qcow2_errmsg(img));
        EXPECT_EQ_INT(rc, 0);
        qcow2_close(img);
        return NULL;
    }
    return img;
}

TEST(unallocated)
{
    struct qimg q;
    struct qcow2_image *img;
    struct qcow2_extent e;

    qimg_init(&q, 3, 9, 64 * 1024, 0);
    img = open_img(&q);
    REQUIRE_TRUE(img);
    REQUIRE_EQ_INT(map(img, 0, 64 * 1024, 0, &e), 0);
    EXPECT_EQ_U64(e.start, 0);
    EXPECT_EQ_INT(e.kind, QCOW2_KIND_UNALLOCATED);
    EXPECT_EQ_INT(e.flags, 0);
    EXPECT_EQ_INT(e.depth, 0);
    EXPECT_TRUE(e.layer == img);
    EXPECT_TRUE(!e.in_data_file);
    failure("an empty L1 entry still ends at its L2 table's span");
    EXPECT_EQ_U64(e.length, L2_SPAN);
    REQUIRE_EQ_INT(map(img, L2_SPAN + 100, 1000, 0, &e), 0);
    EXPECT_EQ_U64(e.start, L2_SPAN + 100);
    EXPECT_EQ_U64(e.length, 1000);
    qcow2_close(img);
    qimg_free(&q);
}

TEST(unallocated_in_table)
{
    struct qimg q;
    struct qcow2_image *img;
    struct qcow2_extent e;

    qimg_init(&q, 3, 9, 64 * 1024, 0);
    qimg_data(&q, 0, NULL);
    img = open_img(&q);
    REQUIRE_TRUE(img);
    REQUIRE_EQ_INT(map(img, CS, 64 * 1024, 0, &e), 0);
    EXPECT_EQ_INT(e.kind, QCOW2_KIND_UNALLOCATED);
    EXPECT_EQ_INT(e.flags, 0);
    EXPECT_EQ_U64(e.length, L2_SPAN - CS);
    qcow2_close(img);
    qimg_free(&q);
}

TEST(zero_prefix)
{
    uint8_t buf[200];
    size_t len, at;

    memset(buf, 0, sizeof(buf));
    for (len = 0; len <= 192; len += 8)
        EXPECT_EQ_U64(q2_zero_prefix(buf, len), len);
    /* one non-zero byte anywhere: the prefix ends at its word, whether the
     * word is met by the 64-byte blocks or the single words after them */
    for (len = 8; len <= 192; len += 8) {
        for (at = 0; at < len; at++) {
            buf[at] = 0x80;
            failure("len %zu, non-zero byte %zu", len, at);
            EXPECT_EQ_U64(q2_zero_prefix(buf, len), at / 8 * 8);
            buf[at] = 0;
        }
    }
}

TEST(unallocated_runs_end_at_each_entry)
{
    struct qimg q;
    struct qcow2_image *img;
    struct qcow2_extent e;
    unsigned k;

    /* the zero-entry skip tests entries eight at a time: a data cluster at
     * every index of the table ends the unallocated run right there */
    for (k = 1; k < 64; k++) {
        qimg_init(&q, 3, 9, 64 * 1024, 0);
        qimg_data(&q, (uint64_t)k * CS, NULL);
        img = open_img(&q);
        REQUIRE_TRUE(img);
        failure("data cluster at index %u", k);
        REQUIRE_EQ_INT(map(img, 0, 64 * 1024, 0, &e), 0);
        EXPECT_EQ_INT(e.kind, QCOW2_KIND_UNALLOCATED);
        EXPECT_EQ_U64(e.length, (uint64_t)k * CS);
        REQUIRE_EQ_INT(map(img, (uint64_t)k * CS, 64 * 1024, 0, &e), 0);
        EXPECT_EQ_INT(e.kind, QCOW2_KIND_DATA);
        EXPECT_EQ_U64(e.length, CS);
        qcow2_close(img);
        qimg_free(&q);
    }
}

TEST(data_merged)
{
    struct qimg q;
    struct qcow2_image *img;
    struct qcow2_extent e;
    uint64_t h0, i;

    qimg_init(&q, 3, 9, 64 * 1024, 0);
    qimg_l2(&q, 0); /* the table first, so the data clusters are adjacent */
    h0 = qimg_data(&q, 0, NULL);
    for (i = 1; i < 4; i++)
        qimg_data(&q, i * CS, NULL);
    img = open_img(&q);
    REQUIRE_TRUE(img);
    REQUIRE_EQ_INT(map(img, 0, 64 * 1024, 0, &e), 0);
    EXPECT_EQ_INT(e.kind, QCOW2_KIND_DATA);
    EXPECT_EQ_INT(e.flags, FLAGS_DATA);
    EXPECT_EQ_U64(e.offset, h0);
    EXPECT_EQ_U64(e.length, 4 * CS);
    EXPECT_EQ_INT(e.depth, 0);
    EXPECT_EQ_INT(e.csize, 0);

    failure("entering a run in the middle of a cluster");
    REQUIRE_EQ_INT(map(img, 700, 64 * 1024, 0, &e), 0);
    EXPECT_EQ_U64(e.offset, h0 + 700);
    EXPECT_EQ_U64(e.length, 4 * CS - 700);

    failure("len limits the run");
    REQUIRE_EQ_INT(map(img, 100, 1000, 0, &e), 0);
    EXPECT_EQ_U64(e.offset, h0 + 100);
    EXPECT_EQ_U64(e.length, 1000);

    failure("the run after the data");
    REQUIRE_EQ_INT(map(img, 4 * CS, 64 * 1024, 0, &e), 0);
    EXPECT_EQ_INT(e.kind, QCOW2_KIND_UNALLOCATED);
    EXPECT_EQ_U64(e.length, L2_SPAN - 4 * CS);
    qcow2_close(img);
    qimg_free(&q);
}

TEST(data_split_on_host_gap)
{
    struct qimg q;
    struct qcow2_image *img;
    struct qcow2_extent e;
    uint64_t h0, h1, h2;

    qimg_init(&q, 3, 9, 64 * 1024, 0);
    qimg_l2(&q, 0);
    h0 = qimg_data(&q, 0, NULL);
    qimg_alloc(&q, 1); /* a gap in the host file */
    h1 = qimg_data(&q, CS, NULL);
    h2 = qimg_data(&q, 2 * CS, NULL);
    img = open_img(&q);
    REQUIRE_TRUE(img);
    REQUIRE_EQ_INT(map(img, 0, 8 * CS, 0, &e), 0);
    EXPECT_EQ_INT(e.kind, QCOW2_KIND_DATA);
    EXPECT_EQ_U64(e.offset, h0);
    EXPECT_EQ_U64(e.length, CS);
    REQUIRE_EQ_INT(map(img, CS, 8 * CS, 0, &e), 0);
    EXPECT_EQ_U64(e.offset, h1);
    EXPECT_EQ_U64(e.length, 2 * CS);
    EXPECT_EQ_U64(h2, h1 + CS);
    qcow2_close(img);
    qimg_free(&q);
}

TEST(data_split_on_backwards_host)
{
    struct qimg q;
    struct qcow2_image *img;
    struct qcow2_extent e;
    uint64_t h0, h1;

    /* guest cluster 1 lies before guest cluster 0 in the file */
    qimg_init(&q, 3, 9, 64 * 1024, 0);
    qimg_l2(&q, 0);
    h1 = qimg_data(&q, CS, NULL);
    h0 = qimg_data(&q, 0, NULL);
    img = open_img(&q);
    REQUIRE_TRUE(img);
    REQUIRE_EQ_INT(map(img, 0, 8 * CS, 0, &e), 0);
    EXPECT_EQ_U64(e.offset, h0);
    EXPECT_EQ_U64(e.length, CS);
    REQUIRE_EQ_INT(map(img, CS, 8 * CS, 0, &e), 0);
    EXPECT_EQ_U64(e.offset, h1);
    EXPECT_EQ_U64(e.length, CS);
    qcow2_close(img);
    qimg_free(&q);
}

TEST(same_host_cluster_twice_not_merged)
{
    struct qimg q;
    struct qcow2_image *img;
    struct qcow2_extent e;
    uint64_t h0;

    qimg_init(&q, 3, 9, 64 * 1024, 0);
    h0 = qimg_data(&q, 0, NULL);
    qimg_map_at(&q, CS, h0);
    img = open_img(&q);
    REQUIRE_TRUE(img);
    REQUIRE_EQ_INT(map(img, 0, 8 * CS, 0, &e), 0);
    EXPECT_EQ_U64(e.length, CS);
    REQUIRE_EQ_INT(map(img, CS, 8 * CS, 0, &e), 0);
    EXPECT_EQ_U64(e.offset, h0);
    EXPECT_EQ_U64(e.length, CS);
    qcow2_close(img);
    qimg_free(&q);
}

TEST(zero_clusters)
{
    struct qimg q;
    struct qcow2_image *img;
    struct qcow2_extent e;
    uint64_t h;

    qimg_init(&q, 3, 9, 64 * 1024, 0);
    qimg_zero(&q, 0);
    qimg_zero(&q, CS);
    qimg_zero(&q, 2 * CS);
    h = qimg_alloc(&q, 1);
    qimg_set_l2(&q, 3 * CS, h | Q2_OFLAG_ZERO); /* preallocated zero */
    img = open_img(&q);
    REQUIRE_TRUE(img);
    REQUIRE_EQ_INT(map(img, 0, 64 * 1024, 0, &e), 0);
    EXPECT_EQ_INT(e.kind, QCOW2_KIND_ZERO);
    EXPECT_EQ_INT(e.flags, QCOW2_EXTENT_PRESENT | QCOW2_EXTENT_ZERO);
    EXPECT_EQ_U64(e.length, 3 * CS);
    failure("a zero cluster that keeps its host cluster");
    REQUIRE_EQ_INT(map(img, 3 * CS, 64 * 1024, 0, &e), 0);
    EXPECT_EQ_INT(e.kind, QCOW2_KIND_ZERO);
    EXPECT_EQ_INT(e.flags, QCOW2_EXTENT_PRESENT | QCOW2_EXTENT_ZERO |
                               QCOW2_EXTENT_OFFSET_VALID);
    EXPECT_EQ_U64(e.offset, h);
    EXPECT_EQ_U64(e.length, CS);
    qcow2_close(img);
    qimg_free(&q);
}

TEST(zero_flag_in_v2_is_corrupt)
{
    struct qimg q;
    struct qcow2_image *img;
    struct qcow2_extent e;

    qimg_init(&q, 2, 9, 64 * 1024, 0);
    qimg_zero(&q, CS);
    img = open_img(&q);
    REQUIRE_TRUE(img);
    EXPECT_EQ_INT(map(img, CS, CS, 0, &e), -QCOW2_ECORRUPT);
    EXPECT_CONTAINS(qcow2_errmsg(img), "version 2");
    qcow2_close(img);
    qimg_free(&q);
}

TEST(compressed)
{
    struct qimg q;
    struct qcow2_image *img;
    struct qcow2_extent e;
    uint64_t c1, c2, cs = 4096;

    qimg_init(&q, 3, 12, 64 * 1024, 0);
    c1 = qimg_compressed(&q, cs, NULL, 0, 0);
    c2 = qimg_compressed(&q, 2 * cs, NULL, 0, 300);
    img = open_img(&q);
    REQUIRE_TRUE(img);
    REQUIRE_EQ_INT(map(img, cs, 64 * 1024, 0, &e), 0);
    EXPECT_EQ_INT(e.kind, QCOW2_KIND_COMPRESSED);
    EXPECT_EQ_INT(e.flags, QCOW2_EXTENT_PRESENT | QCOW2_EXTENT_DATA);
    EXPECT_EQ_U64(e.offset, c1);
    failure("a compressed extent is one cluster, never merged");
    EXPECT_EQ_U64(e.length, cs);
    EXPECT_TRUE(e.csize > 0 && e.csize % 512 == 0 && e.csize <= 2 * cs);

    failure("entered in the middle; data 300 bytes into a sector");
    REQUIRE_EQ_INT(map(img, 2 * cs + 1000, 64 * 1024, 0, &e), 0);
    EXPECT_EQ_INT(e.kind, QCOW2_KIND_COMPRESSED);
    EXPECT_EQ_U64(e.offset, c2);
    EXPECT_EQ_U64(e.length, cs - 1000);
    /* sectors * 512 minus the offset into the first sector */
    EXPECT_EQ_U64((e.csize + 300) % 512, 0);
    qcow2_close(img);
    qimg_free(&q);
}

TEST(compressed_descriptor_decoding)
{
    struct qimg q;
    struct qcow2_image *img;
    struct qcow2_extent e;
    uint64_t base;

    /* 64 KiB clusters: x = 62 - 8 = 54 offset bits, 8 sector bits */
    qimg_init(&q, 3, 16, 1 << 20, 0);
    base = qimg_alloc(&q, 2);
    qimg_set_l2(&q, 0, Q2_OFLAG_COMPRESSED | 5ull << 54 | (base + 0x123));
    img = open_img(&q);
    REQUIRE_TRUE(img);
    REQUIRE_EQ_INT(map(img, 0, 1 << 20, 0, &e), 0);
    EXPECT_EQ_INT(e.kind, QCOW2_KIND_COMPRESSED);
    EXPECT_EQ_U64(e.offset, base + 0x123);
    EXPECT_EQ_U64(e.csize, 6 * 512 - 0x123);
    EXPECT_EQ_U64(e.length, 65536);
    qcow2_close(img);
    qimg_free(&q);
}

TEST(compressed_past_eof)
{
    struct qimg q;
    struct qcow2_image *img;
    struct qcow2_extent e;

    qimg_init(&q, 3, 12, 64 * 1024, 0);
    qimg_set_l2(&q, 0, Q2_OFLAG_COMPRESSED | (1ull << 40));
    img = open_img(&q);
    REQUIRE_TRUE(img);
    EXPECT_EQ_INT(map(img, 0, 4096, 0, &e), -QCOW2_ECORRUPT);
    EXPECT_CONTAINS(qcow2_errmsg(img), "past the end of the file");
    qcow2_close(img);
    qimg_free(&q);
}

TEST(l2_past_eof)
{
    struct qimg q;
    struct qcow2_image *img;
    struct qcow2_extent e;

    qimg_init(&q, 3, 9, 64 * 1024, 0);
    qimg_finish(&q);
    qimg_put64(&q, q.l1_off + 8, (q.len + 100 * CS) | Q2_OFLAG_COPIED);
    img = open_img(&q);
    REQUIRE_TRUE(img);
    EXPECT_EQ_INT(map(img, L2_SPAN, CS, 0, &e), -QCOW2_ECORRUPT);
    EXPECT_CONTAINS(qcow2_errmsg(img), "L2 table");
    EXPECT_CONTAINS(qcow2_errmsg(img), "past the end of the file");
    EXPECT_CONTAINS(qcow2_errmsg(img), "0x408");
    failure("the whole L1 table is validated: other tables fail too");
    EXPECT_EQ_INT(map(img, 0, CS, 0, &e), -QCOW2_ECORRUPT);
    qcow2_close(img);
    qimg_free(&q);
}

TEST(l2_named_twice)
{
    struct qimg q;
    struct qcow2_image *img;
    struct qcow2_extent e;
    uint64_t l2;

    qimg_init(&q, 3, 9, 64 * 1024, 0);
    l2 = qimg_l2(&q, 0);
    qimg_finish(&q);
    qimg_put64(&q, q.l1_off + 8, l2);
    img = open_img(&q);
    REQUIRE_TRUE(img);
    EXPECT_EQ_INT(map(img, 0, CS, 0, &e), -QCOW2_ECORRUPT);
    EXPECT_CONTAINS(qcow2_errmsg(img), "named by two L1 entries");
    qcow2_close(img);
    qimg_free(&q);
}

TEST(error_message_cleared)
{
    struct qimg q;
    struct qcow2_image *img;
    struct qcow2_extent e;

    qimg_init(&q, 3, 9, 64 * 1024, 0);
    img = open_img(&q);
    REQUIRE_TRUE(img);
    EXPECT_EQ_INT(map(img, 1 << 20, CS, 0, &e), -EINVAL);
    EXPECT_TRUE(qcow2_errmsg(img)[0] != '\0');
    failure("the next successful call clears the message");
    EXPECT_EQ_INT(map(img, 0, CS, 0, &e), 0);
    EXPECT_EQ_STR(qcow2_errmsg(img), "");
    qcow2_close(img);
    qimg_free(&q);
}

TEST(l2_unaligned)
{
    struct qimg q;
    struct qcow2_image *img;
    struct qcow2_extent e;
    uint64_t l2;

    qimg_init(&q, 3, 12, 64 * 1024, 0);
    l2 = qimg_l2(&q, 0);
    qimg_finish(&q);
    qimg_put64(&q, q.l1_off, (l2 + 512) | Q2_OFLAG_COPIED);
    img = open_img(&q);
    REQUIRE_TRUE(img);
    EXPECT_EQ_INT(map(img, 0, 4096, 0, &e), -QCOW2_ECORRUPT);
    EXPECT_CONTAINS(qcow2_errmsg(img), "not cluster aligned");
    qcow2_close(img);
    qimg_free(&q);
}

TEST(l1_reserved_bits)
{
    struct qimg q;
    struct qcow2_image *img;
    struct qcow2_extent e;
    uint64_t l2;

    qimg_init(&q, 3, 12, 64 * 1024, 0);
    l2 = qimg_l2(&q, 0);
    qimg_finish(&q);
    qimg_put64(&q, q.l1_off, l2 | 1);
    img = open_img(&q);
    REQUIRE_TRUE(img);
    EXPECT_EQ_INT(map(img, 0, 4096, 0, &e), -QCOW2_ECORRUPT);
    EXPECT_CONTAINS(qcow2_errmsg(img), "reserved bits");
    qcow2_close(img);
    qimg_free(&q);
}

TEST(data_past_eof)
{
    struct qimg q;
    struct qcow2_image *img;
    struct qcow2_extent e;

    qimg_init(&q, 3, 9, 64 * 1024, 0);
    qimg_set_l2(&q, 0, (1ull << 30) | Q2_OFLAG_COPIED);
    img = open_img(&q);
    REQUIRE_TRUE(img);
    EXPECT_EQ_INT(map(img, 0, CS, 0, &e), -QCOW2_ECORRUPT);
    EXPECT_CONTAINS(qcow2_errmsg(img), "data cluster at 0x40000000");
    qcow2_close(img);
    qimg_free(&q);
}

TEST(data_unaligned)
{
    struct qimg q;
    struct qcow2_image *img;
    struct qcow2_extent e;
    uint64_t h;

    qimg_init(&q, 3, 12, 64 * 1024, 0);
    h = qimg_alloc(&q, 2);
    qimg_set_l2(&q, 0, (h + 512) | Q2_OFLAG_COPIED);
    img = open_img(&q);
    REQUIRE_TRUE(img);
    EXPECT_EQ_INT(map(img, 0, 4096, 0, &e), -QCOW2_ECORRUPT);
    EXPECT_CONTAINS(qcow2_errmsg(img), "not cluster aligned");
    qcow2_close(img);
    qimg_free(&q);
}

TEST(never_crosses_l2_table)
{
    struct qimg q;
    struct qcow2_image *img;
    struct qcow2_extent e;
    uint64_t h0, i;

    /* 128 clusters over two L2 tables, contiguous in the host file */
    qimg_init(&q, 3, 9, 128 * CS, 0);
    qimg_l2(&q, 0);
    qimg_l2(&q, L2_SPAN);
    h0 = qimg_data(&q, 0, NULL);
    for (i = 1; i < 128; i++)
        qimg_data(&q, i * CS, NULL);
    img = open_img(&q);
    REQUIRE_TRUE(img);
    REQUIRE_EQ_INT(map(img, 0, 128 * CS, 0, &e), 0);
    EXPECT_EQ_INT(e.kind, QCOW2_KIND_DATA);
    EXPECT_EQ_U64(e.length, L2_SPAN);
    REQUIRE_EQ_INT(map(img, 1000, 128 * CS, 0, &e), 0);
    EXPECT_EQ_U64(e.length, L2_SPAN - 1000);
    REQUIRE_EQ_INT(map(img, L2_SPAN, 128 * CS, 0, &e), 0);
    EXPECT_EQ_U64(e.offset, h0 + L2_SPAN);
    EXPECT_EQ_U64(e.length, L2_SPAN);
    qcow2_close(img);
    qimg_free(&q);
}

TEST(range_checks)
{
    struct qimg q;
    struct qcow2_image *img;
    struct qcow2_extent e;

    qimg_init(&q, 3, 9, 3 * CS + 100, 0); /* 1636: 3 whole sectors */
    img = open_img(&q);
    REQUIRE_TRUE(img);
    EXPECT_EQ_U64(qcow2_virtual_size(img), 3 * CS);
    EXPECT_EQ_INT(map(img, 0, 0, 0, &e), -EINVAL);
    EXPECT_EQ_INT(map(img, 3 * CS, 1, 0, &e), -EINVAL);
    EXPECT_CONTAINS(qcow2_errmsg(img), "outside the image");
    REQUIRE_EQ_INT(map(img, 0, UINT64_MAX, 0, &e), 0);
    EXPECT_EQ_U64(e.length, 3 * CS);
    EXPECT_EQ_INT(qcow2_map(NULL, 0, 1, 0, &e), -EINVAL);
    EXPECT_EQ_INT(qcow2_map(img, 0, 1, 0, NULL), -EINVAL);
    qcow2_close(img);
    qimg_free(&q);
}

TEST(beyond_l1_table)
{
    struct qimg q;
    struct qcow2_image *img;
    struct qcow2_extent e;

    /* an L1 table larger than needed: nothing special */
    qimg_init(&q, 3, 9, 2 * L2_SPAN, 0);
    qimg_finish(&q);
    qimg_put64(&q, 24, L2_SPAN); /* size: one table's worth */
    img = open_img(&q);
    REQUIRE_TRUE(img);
    REQUIRE_EQ_INT(map(img, 0, UINT64_MAX, 0, &e), 0);
    EXPECT_EQ_U64(e.length, L2_SPAN);
    qcow2_close(img);
    qimg_free(&q);
}

/* ---- extended L2 (16 KiB clusters of 32 x 512-byte subclusters) ---- */

#define XCS 16384u
#define SUB 512u

TEST(extl2_subcluster_runs)
{
    struct qimg q;
    struct qcow2_image *img;
    struct qcow2_extent e;
    uint64_t h;

    qimg_init(&q, 3, 14, 1 << 20, QIMG_EXTL2);
    /* subclusters 0-3 data, 4-7 zero, 8-31 unallocated */
    h = qimg_data_sub(&q, 0, 0x0000000f, 0x000000f0);
    img = open_img(&q);
    REQUIRE_TRUE(img);
    REQUIRE_EQ_INT(map(img, 0, 1 << 20, 0, &e), 0);
    EXPECT_EQ_INT(e.kind, QCOW2_KIND_DATA);
    EXPECT_EQ_INT(e.flags, FLAGS_DATA);
    EXPECT_EQ_U64(e.offset, h);
    EXPECT_EQ_U64(e.length, 4 * SUB);

    REQUIRE_EQ_INT(map(img, 100, 1 << 20, 0, &e), 0);
    EXPECT_EQ_U64(e.offset, h + 100);
    EXPECT_EQ_U64(e.length, 4 * SUB - 100);

    REQUIRE_EQ_INT(map(img, 4 * SUB, 1 << 20, 0, &e), 0);
    EXPECT_EQ_INT(e.kind, QCOW2_KIND_ZERO);
    EXPECT_EQ_INT(e.flags, QCOW2_EXTENT_PRESENT | QCOW2_EXTENT_ZERO |
                               QCOW2_EXTENT_OFFSET_VALID);
    EXPECT_EQ_U64(e.offset, h + 4 * SUB);
    EXPECT_EQ_U64(e.length, 4 * SUB);

    failure("unallocated subclusters end with their cluster");
    REQUIRE_EQ_INT(map(img, 8 * SUB, 1 << 20, 0, &e), 0);
    EXPECT_EQ_INT(e.kind, QCOW2_KIND_UNALLOCATED);
    EXPECT_TRUE(!(e.flags & QCOW2_EXTENT_PRESENT));
    EXPECT_EQ_U64(e.length, XCS - 8 * SUB);
    qcow2_close(img);
    qimg_free(&q);
}

TEST(extl2_runs_cross_clusters)
{
    struct qimg q;
    struct qcow2_image *img;
    struct qcow2_extent e;
    uint64_t h0, h1;

    qimg_init(&q, 3, 14, 1 << 20, QIMG_EXTL2);
    qimg_l2(&q, 0);
    h0 = qimg_data_sub(&q, 0, 0xffffffff, 0);
    h1 = qimg_data_sub(&q, XCS, 0x00000003, 0);
    REQUIRE_EQ_INT(h1, h0 + XCS);
    img = open_img(&q);
    REQUIRE_TRUE(img);
    REQUIRE_EQ_INT(map(img, 0, 1 << 20, 0, &e), 0);
    EXPECT_EQ_INT(e.kind, QCOW2_KIND_DATA);
    EXPECT_EQ_U64(e.length, XCS + 2 * SUB);
    qcow2_close(img);
    qimg_free(&q);
}

TEST(extl2_zero_without_host)
{
    struct qimg q;
    struct qcow2_image *img;
    struct qcow2_extent e;

    qimg_init(&q, 3, 14, 1 << 20, QIMG_EXTL2);
    qimg_zero(&q, 0);
    qimg_zero(&q, XCS);
    img = open_img(&q);
    REQUIRE_TRUE(img);
    REQUIRE_EQ_INT(map(img, 0, 1 << 20, 0, &e), 0);
    EXPECT_EQ_INT(e.kind, QCOW2_KIND_ZERO);
    EXPECT_EQ_INT(e.flags, QCOW2_EXTENT_PRESENT | QCOW2_EXTENT_ZERO);
    EXPECT_EQ_U64(e.length, 2 * XCS);
    qcow2_close(img);
    qimg_free(&q);
}

TEST(extl2_invalid_bitmaps)
{
    struct qimg q;
    struct qcow2_image *img;
    struct qcow2_extent e;

    qimg_init(&q, 3, 14, 1 << 20, QIMG_EXTL2);
    qimg_data_sub(&q, 0, 0x1, 0x1);             /* allocated and zero */
    qimg_set_l2(&q, XCS, 0);
    qimg_set_bitmap(&q, XCS, 0x1);              /* allocated, no host */
    qimg_compressed(&q, 2 * XCS, NULL, 0, 0);
    qimg_set_bitmap(&q, 2 * XCS, 0x1ull << 32); /* compressed + bitmap */
    img = open_img(&q);
    REQUIRE_TRUE(img);
    EXPECT_EQ_INT(map(img, 0, SUB, 0, &e), -QCOW2_ECORRUPT);
    EXPECT_CONTAINS(qcow2_errmsg(img), "both allocated and zero");
    EXPECT_EQ_INT(map(img, XCS, SUB, 0, &e), -QCOW2_ECORRUPT);
    EXPECT_CONTAINS(qcow2_errmsg(img), "unallocated cluster");
    EXPECT_EQ_INT(map(img, 2 * XCS, SUB, 0, &e), -QCOW2_ECORRUPT);
    EXPECT_CONTAINS(qcow2_errmsg(img), "compressed");
    qcow2_close(img);
    qimg_free(&q);
}

TEST(extl2_compressed)
{
    struct qimg q;
    struct qcow2_image *img;
    struct qcow2_extent e;
    uint64_t c;

    qimg_init(&q, 3, 14, 1 << 20, QIMG_EXTL2);
    c = qimg_compressed(&q, XCS, NULL, 0, 0);
    img = open_img(&q);
    REQUIRE_TRUE(img);
    REQUIRE_EQ_INT(map(img, XCS + SUB, 1 << 20, 0, &e), 0);
    EXPECT_EQ_INT(e.kind, QCOW2_KIND_COMPRESSED);
    EXPECT_EQ_U64(e.offset, c);
    failure("compressed clusters are whole clusters, not subclusters");
    EXPECT_EQ_U64(e.length, XCS - SUB);
    qcow2_close(img);
    qimg_free(&q);
}

/* ---- chains ---- */

struct chain {
    struct memfs fs;
    struct qcow2_image *top;
};

/* Open "top.qcow2" from c->fs with its chain. */
static int open_chain(struct chain *c)
{
    struct qcow2_open_opts o;
    int rc;

    memfs_opts(&c->fs, &o);
    rc = memfs_open_image(&c->fs, "top.qcow2", &o, &c->top);
    if (rc < 0)
        failure("open: %s", qcow2_errmsg(c->top));
    return rc;
}

static void close_chain(struct chain *c)
{
    qcow2_close(c->top);
    memfs_free(&c->fs);
}

TEST(chain_depth)
{
    struct chain c;
    struct qimg base, mid, top;
    struct qcow2_extent e;
    struct qcow2_image *l1, *l2;
    uint64_t hb, hm, ht;

    memset(&c, 0, sizeof(c));
    qimg_init(&base, 3, 9, 64 * 1024, 0);
    hb = qimg_data(&base, 2 * CS, NULL);
    memfs_add_img(&c.fs, "base.qcow2", &base);
    qimg_init(&mid, 3, 9, 64 * 1024, 0);
    hm = qimg_data(&mid, CS, NULL);
    qimg_zero(&mid, 3 * CS);
    qimg_backing(&mid, "base.qcow2", "qcow2");
    memfs_add_img(&c.fs, "mid.qcow2", &mid);
    qimg_init(&top, 3, 9, 64 * 1024, 0);
    ht = qimg_data(&top, 0, NULL);
    qimg_backing(&top, "mid.qcow2", "qcow2");
    memfs_add_img(&c.fs, "top.qcow2", &top);
    REQUIRE_EQ_INT(open_chain(&c), 0);
    l1 = qcow2_backing(c.top);
    REQUIRE_TRUE(l1);
    l2 = qcow2_backing(l1);
    REQUIRE_TRUE(l2);
    EXPECT_TRUE(qcow2_backing(l2) == NULL);

    REQUIRE_EQ_INT(map(c.top, 0, 64 * 1024, QCOW2_MAP_CHAIN, &e), 0);
    EXPECT_EQ_INT(e.depth, 0);
    EXPECT_TRUE(e.layer == c.top);
    EXPECT_EQ_U64(e.offset, ht);
    EXPECT_EQ_U64(e.length, CS);

    REQUIRE_EQ_INT(map(c.top, CS, 64 * 1024, QCOW2_MAP_CHAIN, &e), 0);
    EXPECT_EQ_INT(e.depth, 1);
    EXPECT_TRUE(e.layer == l1);
    EXPECT_EQ_INT(e.kind, QCOW2_KIND_DATA);
    EXPECT_EQ_INT(e.flags, FLAGS_DATA);
    EXPECT_EQ_U64(e.offset, hm);
    EXPECT_EQ_U64(e.length, CS);

    REQUIRE_EQ_INT(map(c.top, 2 * CS, 64 * 1024, QCOW2_MAP_CHAIN, &e), 0);
    EXPECT_EQ_INT(e.depth, 2);
    EXPECT_TRUE(e.layer == l2);
    EXPECT_EQ_U64(e.offset, hb);
    EXPECT_EQ_U64(e.length, CS);

    failure("a zero cluster in the middle layer hides the base");
    REQUIRE_EQ_INT(map(c.top, 3 * CS, 64 * 1024, QCOW2_MAP_CHAIN, &e), 0);
    EXPECT_EQ_INT(e.depth, 1);
    EXPECT_EQ_INT(e.kind, QCOW2_KIND_ZERO);
    EXPECT_EQ_INT(e.flags, QCOW2_EXTENT_PRESENT | QCOW2_EXTENT_ZERO);

    failure("allocated nowhere: zero at the bottom layer, not present");
    REQUIRE_EQ_INT(map(c.top, 4 * CS, 64 * 1024, QCOW2_MAP_CHAIN, &e), 0);
    EXPECT_EQ_INT(e.depth, 2);
    EXPECT_EQ_INT(e.kind, QCOW2_KIND_UNALLOCATED);
    EXPECT_EQ_INT(e.flags, QCOW2_EXTENT_ZERO);
    EXPECT_EQ_U64(e.length, L2_SPAN - 4 * CS);

    failure("without QCOW2_MAP_CHAIN only the top layer answers");
    REQUIRE_EQ_INT(map(c.top, CS, 64 * 1024, 0, &e), 0);
    EXPECT_EQ_INT(e.depth, 0);
    EXPECT_EQ_INT(e.kind, QCOW2_KIND_UNALLOCATED);
    EXPECT_EQ_INT(e.flags, 0);
    EXPECT_EQ_U64(e.length, L2_SPAN - CS);
    close_chain(&c);
    qimg_free(&base);
    qimg_free(&mid);
    qimg_free(&top);
}

TEST(chain_length_limited_by_lower_layer)
{
    struct chain c;
    struct qimg base, top;
    struct qcow2_extent e;

    memset(&c, 0, sizeof(c));
    qimg_init(&base, 3, 9, 64 * 1024, 0);
    qimg_l2(&base, 0);
    qimg_data(&base, 0, NULL);
    qimg_data(&base, CS, NULL);
    memfs_add_img(&c.fs, "base.qcow2", &base);
    qimg_init(&top, 3, 9, 64 * 1024, 0);
    qimg_backing(&top, "base.qcow2", "qcow2");
    memfs_add_img(&c.fs, "top.qcow2", &top);
    REQUIRE_EQ_INT(open_chain(&c), 0);
    REQUIRE_EQ_INT(map(c.top, 0, 64 * 1024, QCOW2_MAP_CHAIN, &e), 0);
    EXPECT_EQ_INT(e.depth, 1);
    EXPECT_EQ_U64(e.length, 2 * CS);
    REQUIRE_EQ_INT(map(c.top, 2 * CS, 64 * 1024, QCOW2_MAP_CHAIN, &e), 0);
    EXPECT_EQ_INT(e.depth, 1);
    EXPECT_EQ_INT(e.flags, QCOW2_EXTENT_ZERO);
    EXPECT_EQ_U64(e.length, L2_SPAN - 2 * CS);
    close_chain(&c);
    qimg_free(&base);
    qimg_free(&top);
}

TEST(chain_backing_shorter)
{
    struct chain c;
    struct qimg base, top;
    struct qcow2_extent e;

    memset(&c, 0, sizeof(c));
    qimg_init(&base, 3, 9, 16 * 1024, 0);
    qimg_l2(&base, 0);
    qimg_data(&base, 15 * 1024, NULL);
    qimg_data(&base, 15 * 1024 + CS, NULL);
    memfs_add_img(&c.fs, "base.qcow2", &base);
    qimg_init(&top, 3, 9, 64 * 1024, 0);
    qimg_backing(&top, "base.qcow2", "qcow2");
    memfs_add_img(&c.fs, "top.qcow2", &top);
    REQUIRE_EQ_INT(open_chain(&c), 0);

    failure("past the end of the backing file: zero at depth 0");
    REQUIRE_EQ_INT(map(c.top, 16 * 1024, 64 * 1024, QCOW2_MAP_CHAIN, &e),
                   0);
    EXPECT_EQ_INT(e.depth, 0);
    EXPECT_EQ_INT(e.kind, QCOW2_KIND_UNALLOCATED);
    EXPECT_EQ_INT(e.flags, QCOW2_EXTENT_ZERO);
    EXPECT_TRUE(!(e.flags & QCOW2_EXTENT_PRESENT));
    EXPECT_EQ_U64(e.length, 16 * 1024);
    REQUIRE_EQ_INT(map(c.top, 40 * 1024, 64 * 1024, QCOW2_MAP_CHAIN, &e),
                   0);
    EXPECT_EQ_INT(e.depth, 0);
    EXPECT_EQ_INT(e.flags, QCOW2_EXTENT_ZERO);

    failure("a run that starts in the backing file stops at its end");
    REQUIRE_EQ_INT(map(c.top, 15 * 1024, 64 * 1024, QCOW2_MAP_CHAIN, &e),
                   0);
    EXPECT_EQ_INT(e.depth, 1);
    EXPECT_EQ_INT(e.kind, QCOW2_KIND_DATA);
    EXPECT_EQ_U64(e.length, 1024);
    close_chain(&c);
    qimg_free(&base);
    qimg_free(&top);
}

TEST(chain_raw_backing)
{
    struct chain c;
    struct qimg top;
    struct qcow2_extent e;
    uint8_t raw[3000];

    memset(&c, 0, sizeof(c));
    qimg_pattern(raw, sizeof(raw), 7);
    memfs_add(&c.fs, "base.raw", raw, sizeof(raw));
    qimg_init(&top, 3, 9, 64 * 1024, 0);
    qimg_backing(&top, "base.raw", "raw");
    memfs_add_img(&c.fs, "top.qcow2", &top);
    REQUIRE_EQ_INT(open_chain(&c), 0);
    /* 3000 bytes round up to 3072 */
    EXPECT_EQ_U64(qcow2_virtual_size(qcow2_backing(c.top)), 3072);
    REQUIRE_EQ_INT(map(c.top, 1000, 64 * 1024, QCOW2_MAP_CHAIN, &e), 0);
    EXPECT_EQ_INT(e.depth, 1);
    EXPECT_EQ_INT(e.kind, QCOW2_KIND_DATA);
    EXPECT_EQ_INT(e.flags, FLAGS_DATA);
    EXPECT_EQ_U64(e.offset, 1000);
    EXPECT_EQ_U64(e.length, 2072);
    close_chain(&c);
    qimg_free(&top);
}

TEST(chain_error_in_backing_names_layer)
{
    struct chain c;
    struct qimg base, top;
    struct qcow2_extent e;

    memset(&c, 0, sizeof(c));
    qimg_init(&base, 3, 9, 64 * 1024, 0);
    qimg_set_l2(&base, 0, (1ull << 30) | Q2_OFLAG_COPIED);
    memfs_add_img(&c.fs, "base.qcow2", &base);
    qimg_init(&top, 3, 9, 64 * 1024, 0);
    qimg_backing(&top, "base.qcow2", "qcow2");
    memfs_add_img(&c.fs, "top.qcow2", &top);
    REQUIRE_EQ_INT(open_chain(&c), 0);
    EXPECT_EQ_INT(map(c.top, 0, CS, QCOW2_MAP_CHAIN, &e), -QCOW2_ECORRUPT);
    EXPECT_CONTAINS(qcow2_errmsg(c.top), "'base.qcow2'");
    EXPECT_CONTAINS(qcow2_errmsg(c.top), "past the end of the file");
    failure("without the chain the top alone is fine");
    EXPECT_EQ_INT(map(c.top, 0, CS, 0, &e), 0);
    close_chain(&c);
    qimg_free(&base);
    qimg_free(&top);
}

/* ---- internals ---- */

TEST(refcount_get)
{
    struct qimg q;
    struct qcow2_image *img;
    uint64_t rc, h, n;

    qimg_init(&q, 3, 9, 64 * 1024, 0);
    h = qimg_data(&q, 0, NULL);
    qimg_map_at(&q, CS, h); /* referenced twice */
    img = open_img(&q);
    REQUIRE_TRUE(img);
    REQUIRE_EQ_INT(q2_refcount_get(img, 0, &rc), 0);
    EXPECT_EQ_U64(rc, 1);
    REQUIRE_EQ_INT(q2_refcount_get(img, h / CS, &rc), 0);
    EXPECT_EQ_U64(rc, 2);
    n = q.len / CS;
    REQUIRE_EQ_INT(q2_refcount_get(img, n + 10, &rc), 0);
    EXPECT_EQ_U64(rc, 0);
    failure("far beyond the refcount table");
    REQUIRE_EQ_INT(q2_refcount_get(img, 1ull << 40, &rc), 0);
    EXPECT_EQ_U64(rc, 0);
    qcow2_close(img);
    qimg_free(&q);
}

TEST(cache_lru)
{
    struct qcow2_io io;
    struct q2_cache c;
    const uint8_t *p;
    uint8_t buf[8 * 512];
    unsigned i;

    for (i = 0; i < sizeof(buf); i++)
        buf[i] = (uint8_t)(i / 512 + 1);
    REQUIRE_EQ_INT(qcow2_io_open_mem(buf, sizeof(buf), &io), 0);
    /* a budget below the minimum still gives 4 slots */
    REQUIRE_EQ_INT(q2_cache_init(&c, 512, 100), 0);
    EXPECT_EQ_INT(c.nslots, Q2_MIN_CACHE_SLOTS);
    for (i = 0; i < 4; i++) {
        REQUIRE_EQ_INT(q2_cache_get(&c, &io, i * 512, &p), 0);
        EXPECT_EQ_INT(p[0], i + 1);
    }
    EXPECT_EQ_U64(c.misses, 4);
    REQUIRE_EQ_INT(q2_cache_get(&c, &io, 0, &p), 0); /* 0 is now newest */
    EXPECT_EQ_U64(c.hits, 1);
    REQUIRE_EQ_INT(q2_cache_get(&c, &io, 4 * 512, &p), 0); /* evicts 512 */
    EXPECT_EQ_INT(p[0], 5);
    REQUIRE_EQ_INT(q2_cache_get(&c, &io, 0, &p), 0);
    EXPECT_EQ_U64(c.hits, 2);
    REQUIRE_EQ_INT(q2_cache_get(&c, &io, 512, &p), 0);
    EXPECT_EQ_U64(c.misses, 6);
    failure("a page past EOF reads as zeros");
    REQUIRE_EQ_INT(q2_cache_get(&c, &io, 100 * 512, &p), 0);
    EXPECT_EQ_INT(p[0], 0);
    EXPECT_EQ_INT(p[511], 0);
    failure("a read error is returned and caches nothing");
    q2_io_mem_fail_after(&io, 0);
    EXPECT_EQ_INT(q2_cache_get(&c, &io, 6 * 512, &p), -EIO);
    q2_io_mem_fail_after(&io, -1);
    REQUIRE_EQ_INT(q2_cache_get(&c, &io, 6 * 512, &p), 0);
    EXPECT_EQ_INT(p[0], 7);
    q2_cache_free(&c);
    io.close(io.ctx);
}

TEST(small_cache_walk)
{
    struct qimg q;
    struct qcow2_image *img;
    struct qcow2_open_opts o;
    struct qcow2_extent e;
    uint64_t size = 8 * L2_SPAN, off, i;
    uint8_t *got = malloc(size), *want = calloc(1, size);

    /* every other cluster allocated over 8 L2 tables, read through a
     * cache of the minimum 4 slots (L1 page, L2 tables evicted often) */
    qimg_init(&q, 3, 9, size, 0);
    for (i = 0; i < size / CS; i += 2) {
        qimg_data(&q, i * CS, NULL);
        qimg_pattern(want + i * CS, CS, (i * CS) ^ q.salt);
    }
    qimg_finish(&q);
    memset(&o, 0, sizeof(o));
    o.size = sizeof(o);
    o.cache_bytes = 1;
    REQUIRE_EQ_INT(qimg_open(&q, "c.qcow2", &o, &img), 0);
    EXPECT_EQ_INT(img->cache.nslots, Q2_MIN_CACHE_SLOTS);
    EXPECT_EQ_INT(qcow2_pread(img, got, size, 0), size);
    EXPECT_EQ_MEM(got, want, size);
    failure("walking the map backwards through the tables");
    for (off = size; off > 0; off -= L2_SPAN) {
        REQUIRE_EQ_INT(map(img, off - CS, CS, 0, &e), 0);
        EXPECT_EQ_INT(e.kind, QCOW2_KIND_UNALLOCATED);
        REQUIRE_EQ_INT(map(img, off - 2 * CS, CS, 0, &e), 0);
        EXPECT_EQ_INT(e.kind, QCOW2_KIND_DATA);
    }
    qcow2_close(img);
    qimg_free(&q);
    free(got);
    free(want);
}

/* ---- QCOW2_MAP_HOLES on qcow2: QEMU's metadata preallocation ---- */

/* A memory backend that claims [hole, hole + hole_len) is a hole and that
 * `allocated` bytes of storage are in use. */
struct holey {
    struct qcow2_io inner;
    uint64_t hole, hole_len;
    int64_t allocated;
};

static int64_t holey_pread(void *ctx, void *buf, size_t len, uint64_t off)
{
    struct holey *h = ctx;
    return h->inner.pread(h->inner.ctx, buf, len, off);
}

static int64_t holey_size(void *ctx)
{
    struct holey *h = ctx;
    return h->inner.size(h->inner.ctx);
}

static int64_t holey_allocated(void *ctx)
{
    return ((struct holey *)ctx)->allocated;
}

static void holey_close(void *ctx)
{
    struct holey *h = ctx;
    h->inner.close(h->inner.ctx);
    free(h);
}

static int holey_status(void *ctx, uint64_t off, uint64_t len,
                        uint64_t *pnum)
{
    struct holey *h = ctx;
    uint64_t end = h->hole + h->hole_len, n;

    if (off >= h->hole && off < end) {
        n = end - off;
        *pnum = n < len ? n : len;
        return 0;
    }
    n = off < h->hole ? h->hole - off : len;
    *pnum = n < len ? n : len;
    return 1;
}

static int open_holey(struct qimg *q, uint64_t hole, uint64_t hole_len,
                      int64_t allocated, struct qcow2_image **out)
{
    struct holey *h = calloc(1, sizeof(*h));
    struct qcow2_io io;
    int rc;

    *out = qcow2_new();
    if (!h || !*out) {
        free(h);
        return -ENOMEM;
    }
    qimg_finish(q);
    rc = qcow2_io_open_mem(q->buf, q->len, &h->inner);
    if (rc < 0) {
        free(h);
        return rc;
    }
    h->hole = hole;
    h->hole_len = hole_len;
    h->allocated = allocated;
    memset(&io, 0, sizeof(io));
    io.version = QCOW2_IO_VERSION;
    io.ctx = h;
    io.pread = holey_pread;
    io.size = holey_size;
    io.close = holey_close;
    io.block_status = holey_status;
    io.allocated = holey_allocated;
    return qcow2_open_io(*out, &io, "holey.qcow2", NULL);
}

TEST(holes_with_metadata_preallocation)
{
    struct qimg q;
    struct qcow2_image *img;
    struct qcow2_extent e;
    uint64_t h0, i;

    qimg_init(&q, 3, 9, 64 * 1024, 0);
    qimg_l2(&q, 0);
    h0 = qimg_data(&q, 0, NULL);
    for (i = 1; i < 4; i++)
        qimg_data(&q, i * CS, NULL);
    /* the file "occupies" nothing: every used cluster looks preallocated */
    REQUIRE_EQ_INT(open_holey(&q, h0 + CS, CS, 0, &img), 0);
    EXPECT_EQ_INT(q2_detect_prealloc(img), 1);

    REQUIRE_EQ_INT(map(img, 0, 64 * 1024, QCOW2_MAP_HOLES, &e), 0);
    EXPECT_EQ_INT(e.kind, QCOW2_KIND_DATA);
    EXPECT_EQ_INT(e.flags, FLAGS_DATA);
    EXPECT_EQ_U64(e.length, CS);
    failure("a hole in the host file under a data cluster reads as zero");
    REQUIRE_EQ_INT(map(img, CS, 64 * 1024, QCOW2_MAP_HOLES, &e), 0);
    EXPECT_EQ_INT(e.kind, QCOW2_KIND_DATA);
    EXPECT_EQ_INT(e.flags, FLAGS_DATA | QCOW2_EXTENT_ZERO);
    EXPECT_EQ_U64(e.offset, h0 + CS);
    EXPECT_EQ_U64(e.length, CS);
    REQUIRE_EQ_INT(map(img, 2 * CS, 64 * 1024, QCOW2_MAP_HOLES, &e), 0);
    EXPECT_EQ_INT(e.flags, FLAGS_DATA);
    EXPECT_EQ_U64(e.length, 2 * CS);
    failure("without QCOW2_MAP_HOLES the host file is not consulted");
    REQUIRE_EQ_INT(map(img, 0, 64 * 1024, 0, &e), 0);
    EXPECT_EQ_U64(e.length, 4 * CS);
    qcow2_close(img);

    failure("a fully allocated file is not preallocated");
    REQUIRE_EQ_INT(open_holey(&q, h0 + CS, CS, (int64_t)q.len, &img), 0);
    EXPECT_EQ_INT(q2_detect_prealloc(img), 0);
    REQUIRE_EQ_INT(map(img, CS, 64 * 1024, QCOW2_MAP_HOLES, &e), 0);
    EXPECT_EQ_INT(e.flags, FLAGS_DATA);
    EXPECT_EQ_U64(e.length, 3 * CS);
    qcow2_close(img);
    qimg_free(&q);
}
