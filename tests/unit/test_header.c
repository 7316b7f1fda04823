/*
 * test_header.c - q2_hdr_parse (header.c) on images built in memory: the
 * valid shapes of version 2 and 3 headers, and one test per rejection.
 * Corrupt variants are a valid image with one documented field poked.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "endian.h"
#include "format.h"
#include "harness.h"
#include "imgbuild.h"
#include "internal.h"

/* Header field offsets (format.h's table). */
#define H_VERSION 4
#define H_BFO 8
#define H_BFS 16
#define H_CBITS 20
#define H_SIZE 24
#define H_CRYPT 32
#define H_L1SIZE 36
#define H_L1OFF 40
#define H_RTOFF 48
#define H_RTCL 56
#define H_NBSNAP 60
#define H_SNAPOFF 64
#define H_INCOMPAT 72
#define H_COMPAT 80
#define H_AUTOCLEAR 88
#define H_RCORDER 96
#define H_HLEN 100
#define H_CTYPE 104

static char err[512];

/* Parse the first cluster of q (or the whole file if shorter), as
 * image.c does; returns the code, the message is in err. */
static int parse_len(struct qimg *q, size_t len, uint64_t file_size,
                     struct q2_hdr_parsed *p)
{
    struct q2_hdr_parsed tmp;
    int rc;

    qimg_finish(q);
    err[0] = '\0';
    memset(&tmp, 0, sizeof(tmp));
    rc = q2_hdr_parse(q->buf, len, file_size, p ? p : &tmp, err,
                      sizeof(err));
    if (rc == 0 && !p)
        free(tmp.exts);
    return rc;
}

static int parse(struct qimg *q, struct q2_hdr_parsed *p)
{
    qimg_finish(q);
    return parse_len(q, q->len < q->cs ? q->len : (size_t)q->cs, q->len, p);
}

/* A small valid image: 64 KiB clusters, 1 MiB. */
static void v3_image(struct qimg *q)
{
    qimg_init(q, 3, 16, 1 << 20, 0);
    qimg_data(q, 0, NULL);
    qimg_finish(q);
}

/* ---- valid headers ---- */

TEST(v2_valid)
{
    struct qimg q;
    struct q2_hdr_parsed p;

    qimg_init(&q, 2, 16, 3u << 20, 0);
    qimg_backing(&q, "base.qcow2", NULL);
    qimg_data(&q, 0, NULL);
    REQUIRE_EQ_INT(parse(&q, &p), 0);
    EXPECT_EQ_U64(p.h.magic, Q2_MAGIC);
    EXPECT_EQ_INT(p.h.version, 2);
    EXPECT_EQ_INT(p.h.cluster_bits, 16);
    EXPECT_EQ_U64(p.h.size, 3u << 20);
    EXPECT_EQ_INT(p.h.l1_size, 1);
    EXPECT_EQ_U64(p.h.l1_table_offset, q.l1_off);
    EXPECT_EQ_U64(p.h.refcount_table_offset, 65536);
    EXPECT_EQ_INT(p.h.refcount_table_clusters, 1);
    /* implied values of a version 2 header */
    EXPECT_EQ_INT(p.h.refcount_order, 4);
    EXPECT_EQ_INT(p.h.header_length, 72);
    EXPECT_EQ_U64(p.h.incompatible_features, 0);
    EXPECT_EQ_INT(p.h.compression_type, 0);
    EXPECT_EQ_INT(p.n_exts, 0);
    EXPECT_EQ_INT(p.ext_backing_format, -1);
    EXPECT_EQ_INT(p.ext_feature_table, -1);
    REQUIRE_EQ_INT(p.backing_name_len, 10);
    EXPECT_EQ_MEM(p.backing_name, "base.qcow2", 10);
    /* the name follows the end marker at 72 */
    EXPECT_EQ_U64(p.h.backing_file_offset, 80);
    free(p.exts);
    qimg_free(&q);
}

TEST(v3_valid)
{
    struct qimg q;
    struct q2_hdr_parsed p;
    char name[64];

    qimg_init(&q, 3, 12, 4u << 20, 0);
    qimg_feature(&q, 0, 0, "dirty bit");
    qimg_feature(&q, 1, 0, "lazy refcounts");
    qimg_backing(&q, "base.raw", "raw");
    q.compat = Q2_COMPAT_LAZY_REFCOUNTS;
    REQUIRE_EQ_INT(parse(&q, &p), 0);
    EXPECT_EQ_INT(p.h.version, 3);
    EXPECT_EQ_INT(p.h.cluster_bits, 12);
    EXPECT_EQ_INT(p.h.header_length, 112);
    EXPECT_EQ_INT(p.h.refcount_order, 4);
    EXPECT_EQ_U64(p.h.compatible_features, Q2_COMPAT_LAZY_REFCOUNTS);
    EXPECT_EQ_INT(p.h.compression_type, 0);
    /* 4 MiB / (4 KiB * 512 entries) */
    EXPECT_EQ_INT(p.h.l1_size, 2);
    EXPECT_EQ_INT(p.n_exts, 2);
    EXPECT_EQ_INT(p.ext_feature_table, 0);
    EXPECT_EQ_INT(p.ext_backing_format, 1);
    if (p.ext_backing_format == 1) {
        EXPECT_EQ_INT(p.exts[1].len, 3);
        EXPECT_EQ_MEM(p.exts[1].data, "raw", 3);
        /* after the 96-byte feature table at 112 */
        EXPECT_EQ_U64(p.exts[1].off, 112 + 8 + 96);
    }
    EXPECT_EQ_INT(p.backing_name_len, 8);
    q2_hdr_feature_name(&p, 1, 0, name, sizeof(name));
    EXPECT_EQ_STR(name, "lazy refcounts");
    q2_hdr_feature_name(&p, 0, 5, name, sizeof(name));
    EXPECT_EQ_STR(name, "");
    free(p.exts);
    qimg_free(&q);
}

TEST(v3_zstd_valid)
{
    struct qimg q;
    struct q2_hdr_parsed p;

    qimg_init(&q, 3, 16, 1 << 20, QIMG_ZSTD);
    REQUIRE_EQ_INT(parse(&q, &p), 0);
    EXPECT_EQ_INT(p.h.compression_type, 1);
    EXPECT_EQ_U64(p.h.incompatible_features, Q2_INCOMPAT_COMPRESSION);
    free(p.exts);
    qimg_free(&q);
}

TEST(v3_header_length_104)
{
    struct qimg q;
    struct q2_hdr_parsed p;

    v3_image(&q);
    /* 104 bytes: no compression type byte; the end marker follows */
    qimg_put32(&q, H_HLEN, 104);
    REQUIRE_EQ_INT(parse(&q, &p), 0);
    EXPECT_EQ_INT(p.h.header_length, 104);
    EXPECT_EQ_INT(p.h.compression_type, 0);
    free(p.exts);
    qimg_free(&q);
}

TEST(extended_l2_valid)
{
    struct qimg q;
    struct q2_hdr_parsed p;

    /* 16 KiB clusters: 1024 16-byte entries per L2 table = 16 MiB */
    qimg_init(&q, 3, 14, 32u << 20, QIMG_EXTL2);
    REQUIRE_EQ_INT(parse(&q, &p), 0);
    EXPECT_EQ_U64(p.h.incompatible_features, Q2_INCOMPAT_EXTL2);
    EXPECT_EQ_INT(p.h.l1_size, 2);
    free(p.exts);
    qimg_free(&q);
}

TEST(unknown_compatible_and_autoclear_bits_ignored)
{
    struct qimg q;

    qimg_init(&q, 3, 16, 1 << 20, 0);
    q.compat = 1ull << 40;
    q.autoclear = 1ull << 33;
    EXPECT_EQ_INT(parse(&q, NULL), 0);
    qimg_free(&q);
}

TEST(unknown_extension_kept)
{
    struct qimg q;
    struct q2_hdr_parsed p;

    qimg_init(&q, 3, 16, 1 << 20, 0);
    qimg_ext(&q, 0x12345678, "abcde", 5);
    qimg_ext(&q, Q2_EXT_DATA_FILE, "data.raw", 8);
    REQUIRE_EQ_INT(parse(&q, &p), 0);
    REQUIRE_EQ_INT(p.n_exts, 2);
    EXPECT_EQ_U64(p.exts[0].type, 0x12345678);
    EXPECT_EQ_INT(p.exts[0].len, 5);
    EXPECT_EQ_U64(p.exts[0].off, 112);
    /* 5 bytes padded to 8 */
    EXPECT_EQ_U64(p.exts[1].off, 112 + 16);
    EXPECT_EQ_INT(p.ext_data_file, 1);
    free(p.exts);
    qimg_free(&q);
}

/* ---- rejections ---- */

TEST(truncated)
{
    struct qimg q;

    v3_image(&q);
    failure("71 bytes cannot hold even a version 2 header");
    EXPECT_EQ_INT(parse_len(&q, 71, 71, NULL), -QCOW2_ECORRUPT);
    EXPECT_CONTAINS(err, "truncated header");
    failure("a version 3 header needs 104 bytes");
    EXPECT_EQ_INT(parse_len(&q, 103, 103, NULL), -QCOW2_ECORRUPT);
    EXPECT_CONTAINS(err, "104");
    EXPECT_EQ_INT(parse_len(&q, 0, 0, NULL), -QCOW2_ECORRUPT);
    qimg_free(&q);
}

TEST(truncated_v2_ok_at_72)
{
    struct qimg q;

    qimg_init(&q, 2, 16, 1 << 20, 0);
    qimg_finish(&q);
    /* a version 2 header is 72 bytes; the rest reads as end marker */
    EXPECT_EQ_INT(parse_len(&q, 72, q.len, NULL), 0);
    qimg_free(&q);
}

TEST(bad_magic)
{
    struct qimg q;

    v3_image(&q);
    qimg_put32(&q, 0, 0x514649fa);
    EXPECT_EQ_INT(parse(&q, NULL), -QCOW2_ECORRUPT);
    EXPECT_CONTAINS(err, "bad magic 0x514649fa");
    qimg_free(&q);
}

TEST(version_4)
{
    struct qimg q;

    v3_image(&q);
    qimg_put32(&q, H_VERSION, 4);
    EXPECT_EQ_INT(parse(&q, NULL), -ENOTSUP);
    EXPECT_CONTAINS(err, "version 4");
    qimg_put32(&q, H_VERSION, 1);
    EXPECT_EQ_INT(parse(&q, NULL), -ENOTSUP);
    qimg_free(&q);
}

TEST(cluster_bits_8)
{
    struct qimg q;

    v3_image(&q);
    qimg_put32(&q, H_CBITS, 8);
    EXPECT_EQ_INT(parse(&q, NULL), -QCOW2_ECORRUPT);
    EXPECT_CONTAINS(err, "cluster_bits 8");
    qimg_free(&q);
}

TEST(cluster_bits_22)
{
    struct qimg q;

    v3_image(&q);
    qimg_put32(&q, H_CBITS, 22);
    EXPECT_EQ_INT(parse(&q, NULL), -QCOW2_ECORRUPT);
    EXPECT_CONTAINS(err, "cluster_bits 22");
    qimg_free(&q);
}

TEST(header_length_short)
{
    struct qimg q;

    v3_image(&q);
    qimg_put32(&q, H_HLEN, 100);
    EXPECT_EQ_INT(parse(&q, NULL), -QCOW2_ECORRUPT);
    EXPECT_CONTAINS(err, "header_length 100");
    qimg_free(&q);
}

TEST(header_length_past_cluster)
{
    struct qimg q;

    qimg_init(&q, 3, 9, 1 << 20, 0);
    qimg_finish(&q);
    qimg_put32(&q, H_HLEN, 1024);
    EXPECT_EQ_INT(parse_len(&q, q.len, q.len, NULL), -QCOW2_ECORRUPT);
    EXPECT_CONTAINS(err, "exceeds the cluster size");
    qimg_free(&q);
}

TEST(header_length_past_eof)
{
    struct qimg q;

    v3_image(&q);
    qimg_put32(&q, H_HLEN, 200);
    EXPECT_EQ_INT(parse_len(&q, 150, 150, NULL), -QCOW2_ECORRUPT);
    qimg_free(&q);
}

TEST(unknown_incompatible_bit_named)
{
    struct qimg q;

    qimg_init(&q, 3, 16, 1 << 20, 0);
    qimg_feature(&q, 0, 0, "dirty bit");
    qimg_feature(&q, 0, 7, "fancy feature");
    qimg_feature(&q, 1, 7, "not this one");
    q.incompat = 1ull << 7;
    EXPECT_EQ_INT(parse(&q, NULL), -ENOTSUP);
    EXPECT_CONTAINS(err, "bit 7");
    EXPECT_CONTAINS(err, "fancy feature");
    qimg_free(&q);
}

TEST(unknown_incompatible_bit_unnamed)
{
    struct qimg q;

    v3_image(&q);
    qimg_put64(&q, H_INCOMPAT, 1ull << 9);
    EXPECT_EQ_INT(parse(&q, NULL), -ENOTSUP);
    EXPECT_CONTAINS(err, "bit 9");
    qimg_free(&q);
}

TEST(unknown_incompatible_bit_lowest_reported)
{
    struct qimg q;

    qimg_init(&q, 3, 16, 1 << 20, 0);
    qimg_feature(&q, 0, 40, "forty");
    qimg_feature(&q, 0, 63, "sixty-three");
    q.incompat = 1ull << 40 | 1ull << 63;
    EXPECT_EQ_INT(parse(&q, NULL), -ENOTSUP);
    EXPECT_CONTAINS(err, "bit 40");
    EXPECT_CONTAINS(err, "forty");
    qimg_free(&q);
}

TEST(extension_length_overflow)
{
    struct qimg q;

    qimg_init(&q, 3, 16, 1 << 20, 0);
    qimg_ext(&q, 0x11223344, "xxxxxxxx", 8);
    qimg_finish(&q);
    /* the length field of the first extension (at 112 + 4) */
    qimg_put32(&q, 116, 0xfffffff8u);
    EXPECT_EQ_INT(parse(&q, NULL), -QCOW2_ECORRUPT);
    EXPECT_CONTAINS(err, "too large");
    EXPECT_CONTAINS(err, "0x70");
    qimg_free(&q);
}

TEST(extension_runs_into_backing_name)
{
    struct qimg q;

    qimg_init(&q, 3, 16, 1 << 20, 0);
    qimg_ext(&q, 0x11223344, "xxxxxxxx", 8);
    qimg_backing(&q, "base.qcow2", NULL);
    qimg_finish(&q);
    /* the area ends at the name (112 + 16 + 8 = 136): 17 bytes overflow */
    qimg_put32(&q, 116, 17);
    EXPECT_EQ_INT(parse(&q, NULL), -QCOW2_ECORRUPT);
    qimg_free(&q);
}

TEST(extension_header_truncated)
{
    struct qimg q;

    qimg_init(&q, 3, 16, 1 << 20, 0);
    qimg_backing(&q, "base.qcow2", NULL);
    qimg_finish(&q);
    /* name at 116: only 4 bytes of extension area */
    qimg_put64(&q, H_BFO, 116);
    memcpy(q.buf + 116, "base.qcow2", 10);
    qimg_put32(&q, 112, 0x11223344);
    EXPECT_EQ_INT(parse(&q, NULL), -QCOW2_ECORRUPT);
    EXPECT_CONTAINS(err, "truncated");
    qimg_free(&q);
}

TEST(backing_name_too_long)
{
    struct qimg q;

    v3_image(&q);
    qimg_put64(&q, H_BFO, 128);
    memset(q.buf + 128, 'a', 1024);
    qimg_put32(&q, H_BFS, 1024);
    EXPECT_EQ_INT(parse(&q, NULL), -QCOW2_ECORRUPT);
    EXPECT_CONTAINS(err, "too long");
    qimg_put32(&q, H_BFS, 1023);
    EXPECT_EQ_INT(parse(&q, NULL), 0);
    qimg_free(&q);
}

TEST(backing_name_past_cluster)
{
    struct qimg q;

    qimg_init(&q, 3, 9, 1 << 20, 0);
    qimg_finish(&q);
    failure("offset beyond the first cluster");
    qimg_put64(&q, H_BFO, 520);
    qimg_put32(&q, H_BFS, 4);
    EXPECT_EQ_INT(parse_len(&q, q.len, q.len, NULL), -QCOW2_ECORRUPT);
    EXPECT_CONTAINS(err, "past the first cluster");
    failure("name crossing the end of the first cluster");
    qimg_put64(&q, H_BFO, 500);
    qimg_put32(&q, H_BFS, 20);
    memset(q.buf + 500, 'n', 20);
    EXPECT_EQ_INT(parse_len(&q, q.len, q.len, NULL), -QCOW2_ECORRUPT);
    qimg_free(&q);
}

TEST(backing_name_past_eof)
{
    struct qimg q;

    qimg_init(&q, 3, 16, 1 << 20, 0);
    qimg_backing(&q, "base.qcow2", NULL);
    qimg_finish(&q);
    /* the buffer ends in the middle of the name at 120 */
    EXPECT_EQ_INT(parse_len(&q, 125, q.len, NULL), -QCOW2_ECORRUPT);
    EXPECT_CONTAINS(err, "past the end of the file");
    qimg_free(&q);
}

TEST(backing_name_overlaps_header)
{
    struct qimg q;

    qimg_init(&q, 3, 16, 1 << 20, 0);
    qimg_backing(&q, "base.qcow2", NULL);
    qimg_finish(&q);
    qimg_put64(&q, H_BFO, 100);
    EXPECT_EQ_INT(parse(&q, NULL), -QCOW2_ECORRUPT);
    EXPECT_CONTAINS(err, "overlaps");
    qimg_free(&q);
}

TEST(backing_name_empty)
{
    struct qimg q;

    qimg_init(&q, 3, 16, 1 << 20, 0);
    qimg_backing(&q, "base.qcow2", NULL);
    qimg_finish(&q);
    qimg_put32(&q, H_BFS, 0);
    EXPECT_EQ_INT(parse(&q, NULL), -QCOW2_ECORRUPT);
    qimg_free(&q);
}

TEST(backing_format_too_long)
{
    struct qimg q;

    qimg_init(&q, 3, 16, 1 << 20, 0);
    qimg_backing(&q, "base", "0123456789abcdef"); /* 16 > 15 */
    EXPECT_EQ_INT(parse(&q, NULL), -QCOW2_ECORRUPT);
    EXPECT_CONTAINS(err, "backing format");
    qimg_free(&q);
}

TEST(l1_too_small)
{
    struct qimg q;

    /* 512-byte clusters: one L2 table maps 32 KiB; 4 MiB needs 128 */
    qimg_init(&q, 3, 9, 4u << 20, 0);
    qimg_finish(&q);
    EXPECT_EQ_INT(q.l1_size, 128);
    qimg_put32(&q, H_L1SIZE, 127);
    EXPECT_EQ_INT(parse(&q, NULL), -QCOW2_ECORRUPT);
    EXPECT_CONTAINS(err, "too small");
    failure("a larger L1 table than needed is fine");
    qimg_put32(&q, H_L1SIZE, 128);
    qimg_put64(&q, H_SIZE, (4u << 20) - 512);
    EXPECT_EQ_INT(parse(&q, NULL), 0);
    qimg_free(&q);
}

TEST(l1_too_large)
{
    struct qimg q;

    v3_image(&q);
    qimg_put32(&q, H_L1SIZE, (32u << 20) / 8 + 1);
    EXPECT_EQ_INT(parse(&q, NULL), -QCOW2_ECORRUPT);
    EXPECT_CONTAINS(err, "L1 table too large");
    qimg_free(&q);
}

TEST(l1_past_eof)
{
    struct qimg q;

    v3_image(&q);
    failure("L1 table beyond the end of the file");
    qimg_put64(&q, H_L1OFF, q.len + q.cs);
    EXPECT_EQ_INT(parse(&q, NULL), -QCOW2_ECORRUPT);
    EXPECT_CONTAINS(err, "lies outside the file");
    failure("L1 table at offset 0");
    qimg_put64(&q, H_L1OFF, 0);
    EXPECT_EQ_INT(parse(&q, NULL), -QCOW2_ECORRUPT);
    failure("a file that ends inside the L1 table");
    qimg_put64(&q, H_L1OFF, q.l1_off);
    EXPECT_EQ_INT(parse_len(&q, (size_t)q.cs, q.l1_off + 4, NULL),
                  -QCOW2_ECORRUPT);
    qimg_free(&q);
}

TEST(l1_unaligned)
{
    struct qimg q;

    v3_image(&q);
    qimg_put64(&q, H_L1OFF, q.l1_off + 512);
    EXPECT_EQ_INT(parse(&q, NULL), -QCOW2_ECORRUPT);
    EXPECT_CONTAINS(err, "not cluster aligned");
    EXPECT_CONTAINS(err, "0x28");
    qimg_free(&q);
}

TEST(refcount_table_unaligned)
{
    struct qimg q;

    v3_image(&q);
    qimg_put64(&q, H_RTOFF, q.rt_off + 8);
    EXPECT_EQ_INT(parse(&q, NULL), -QCOW2_ECORRUPT);
    EXPECT_CONTAINS(err, "refcount table offset");
    qimg_free(&q);
}

TEST(refcount_table_too_large)
{
    struct qimg q;

    v3_image(&q);
    /* QEMU's cap is 8 MiB: 128 clusters of 64 KiB */
    qimg_put32(&q, H_RTCL, 129);
    EXPECT_EQ_INT(parse(&q, NULL), -QCOW2_ECORRUPT);
    EXPECT_CONTAINS(err, "refcount table too large");
    qimg_free(&q);
}

TEST(refcount_table_missing_or_past_eof)
{
    struct qimg q;

    v3_image(&q);
    qimg_put32(&q, H_RTCL, 0);
    EXPECT_EQ_INT(parse(&q, NULL), -QCOW2_ECORRUPT);
    qimg_put32(&q, H_RTCL, 1);
    qimg_put64(&q, H_RTOFF, 0);
    EXPECT_EQ_INT(parse(&q, NULL), -QCOW2_ECORRUPT);
    qimg_put64(&q, H_RTOFF, q.len + q.cs);
    EXPECT_EQ_INT(parse(&q, NULL), -QCOW2_ECORRUPT);
    qimg_put64(&q, H_RTOFF, q.rt_off);
    qimg_put32(&q, H_RTCL, 64);
    EXPECT_EQ_INT(parse(&q, NULL), -QCOW2_ECORRUPT);
    qimg_free(&q);
}

TEST(refcount_order_7)
{
    struct qimg q;

    v3_image(&q);
    qimg_put32(&q, H_RCORDER, 7);
    EXPECT_EQ_INT(parse(&q, NULL), -QCOW2_ECORRUPT);
    qimg_put32(&q, H_RCORDER, 6);
    EXPECT_EQ_INT(parse(&q, NULL), 0);
    qimg_free(&q);
}

TEST(compression_type_without_bit)
{
    struct qimg q;

    v3_image(&q);
    q.buf[H_CTYPE] = 1;
    EXPECT_EQ_INT(parse(&q, NULL), -QCOW2_ECORRUPT);
    EXPECT_CONTAINS(err, "without the compression type bit");
    qimg_free(&q);
}

TEST(compression_bit_with_zlib)
{
    struct qimg q;

    v3_image(&q);
    qimg_put64(&q, H_INCOMPAT, Q2_INCOMPAT_COMPRESSION);
    EXPECT_EQ_INT(parse(&q, NULL), -QCOW2_ECORRUPT);
    EXPECT_CONTAINS(err, "compression type bit set");
    qimg_free(&q);
}

TEST(compression_type_unknown)
{
    struct qimg q;

    v3_image(&q);
    qimg_put64(&q, H_INCOMPAT, Q2_INCOMPAT_COMPRESSION);
    q.buf[H_CTYPE] = 2;
    EXPECT_EQ_INT(parse(&q, NULL), -ENOTSUP);
    EXPECT_CONTAINS(err, "compression type 2");
    qimg_free(&q);
}

TEST(extended_l2_small_clusters)
{
    struct qimg q;

    qimg_init(&q, 3, 13, 1 << 20, 0);
    qimg_finish(&q);
    qimg_put64(&q, H_INCOMPAT, Q2_INCOMPAT_EXTL2);
    EXPECT_EQ_INT(parse(&q, NULL), -QCOW2_ECORRUPT);
    EXPECT_CONTAINS(err, "extended L2");
    qimg_free(&q);
}

TEST(bitmaps_ext_bad_length)
{
    struct qimg q;
    uint8_t data[24];

    memset(data, 0, sizeof(data));
    qimg_init(&q, 3, 16, 1 << 20, 0);
    qimg_ext(&q, Q2_EXT_BITMAPS, data, 16);
    EXPECT_EQ_INT(parse(&q, NULL), -QCOW2_ECORRUPT);
    EXPECT_CONTAINS(err, "bitmaps extension has length 16");
    qimg_free(&q);
}

TEST(bitmaps_ext_checked_when_autoclear_set)
{
    struct qimg q;
    uint8_t data[24];

    memset(data, 0, sizeof(data)); /* 0 bitmaps: invalid */
    qimg_init(&q, 3, 16, 1 << 20, 0);
    qimg_ext(&q, Q2_EXT_BITMAPS, data, 24);
    failure("autoclear bit clear: the extension is stale and ignored");
    EXPECT_EQ_INT(parse(&q, NULL), 0);
    qimg_put64(&q, H_AUTOCLEAR, Q2_AUTOCLEAR_BITMAPS);
    EXPECT_EQ_INT(parse(&q, NULL), -QCOW2_ECORRUPT);
    EXPECT_CONTAINS(err, "bitmaps");
    qimg_free(&q);
}

TEST(encryption)
{
    struct qimg q;
    uint8_t crypto[16];

    v3_image(&q);
    qimg_put32(&q, H_CRYPT, 3);
    EXPECT_EQ_INT(parse(&q, NULL), -ENOTSUP);
    failure("LUKS needs the crypto header extension");
    qimg_put32(&q, H_CRYPT, 2);
    EXPECT_EQ_INT(parse(&q, NULL), -QCOW2_ECORRUPT);
    qimg_put32(&q, H_CRYPT, 1);
    EXPECT_EQ_INT(parse(&q, NULL), 0);
    qimg_free(&q);

    memset(crypto, 0, sizeof(crypto));
    qimg_init(&q, 3, 16, 1 << 20, 0);
    qimg_ext(&q, Q2_EXT_CRYPTO, crypto, 16);
    failure("crypto extension without LUKS");
    EXPECT_EQ_INT(parse(&q, NULL), -QCOW2_ECORRUPT);
    qimg_put32(&q, H_CRYPT, 2);
    EXPECT_EQ_INT(parse(&q, NULL), 0);
    qimg_free(&q);
}

TEST(raw_data_file_bit_without_data_file)
{
    struct qimg q;

    v3_image(&q);
    qimg_put64(&q, H_AUTOCLEAR, Q2_AUTOCLEAR_DATA_FILE_RAW);
    EXPECT_EQ_INT(parse(&q, NULL), -QCOW2_ECORRUPT);
    qimg_free(&q);
}

TEST(virtual_size_too_large)
{
    struct qimg q;

    v3_image(&q);
    qimg_put64(&q, H_SIZE, 1ull << 63);
    EXPECT_EQ_INT(parse(&q, NULL), -QCOW2_ECORRUPT);
    qimg_free(&q);
}

TEST(snapshot_table_offset)
{
    struct qimg q;

    v3_image(&q);
    qimg_put32(&q, H_NBSNAP, 1);
    qimg_put64(&q, H_SNAPOFF, q.cs + 8);
    EXPECT_EQ_INT(parse(&q, NULL), -QCOW2_ECORRUPT);
    qimg_put64(&q, H_SNAPOFF, 0);
    EXPECT_EQ_INT(parse(&q, NULL), -QCOW2_ECORRUPT);
    qimg_put64(&q, H_SNAPOFF, q.len);
    EXPECT_EQ_INT(parse(&q, NULL), -QCOW2_ECORRUPT);
    qimg_put32(&q, H_NBSNAP, 65537);
    qimg_put64(&q, H_SNAPOFF, q.cs);
    EXPECT_EQ_INT(parse(&q, NULL), -QCOW2_ECORRUPT);
    EXPECT_CONTAINS(err, "too many snapshots");
    qimg_free(&q);
}

TEST(feature_name_sanitized)
{
    struct qimg q;
    struct q2_hdr_parsed p;
    char name[64];

    qimg_init(&q, 3, 16, 1 << 20, 0);
    qimg_feature(&q, 0, 4, "ab\x01\x7f" "cd");
    REQUIRE_EQ_INT(parse(&q, &p), 0);
    q2_hdr_feature_name(&p, 0, 4, name, sizeof(name));
    EXPECT_EQ_STR(name, "ab??cd");
    q2_hdr_feature_name(&p, 0, 4, name, 3);
    EXPECT_EQ_STR(name, "ab");
    free(p.exts);
    qimg_free(&q);
}

/* The same checks through the public API: the message lands on the
 * handle. */
TEST(open_reports_message)
{
    struct qimg q;
    struct qcow2_image *img;

    v3_image(&q);
    qimg_put32(&q, H_CBITS, 30);
    EXPECT_EQ_INT(qimg_open(&q, "bad.qcow2", NULL, &img), -QCOW2_ECORRUPT);
    EXPECT_CONTAINS(qcow2_errmsg(img), "cluster_bits 30");
    EXPECT_TRUE(qcow2_header_get(img) == NULL);
    qcow2_close(img);
    qimg_free(&q);
}

TEST(open_info)
{
    struct qimg q;
    struct qcow2_image *img;
    struct qcow2_info info;
    struct qcow2_extension ext;
    struct qcow2_feature feat;

    qimg_init(&q, 3, 16, (1 << 20) + 1000, 0);
    qimg_feature(&q, 0, 0, "dirty bit");
    qimg_ext(&q, 0x12345678, "abc", 3);
    q.compat = Q2_COMPAT_LAZY_REFCOUNTS;
    q.incompat = Q2_INCOMPAT_DIRTY;
    REQUIRE_EQ_INT(qimg_open(&q, "info.qcow2", NULL, &img), 0);
    REQUIRE_EQ_INT(qcow2_info_get(img, &info), 0);
    EXPECT_EQ_INT(info.format, QCOW2_FORMAT_QCOW2);
    EXPECT_EQ_STR(info.filename, "info.qcow2");
    /* QEMU counts whole sectors */
    EXPECT_EQ_U64(info.virtual_size, (1 << 20) + 512);
    EXPECT_EQ_U64(info.file_size, q.len);
    EXPECT_EQ_INT(info.cluster_size, 65536);
    EXPECT_EQ_INT(info.version, 3);
    EXPECT_EQ_INT(info.refcount_bits, 16);
    EXPECT_EQ_STR(info.compression, "zlib");
    EXPECT_TRUE(info.dirty);
    EXPECT_TRUE(!info.corrupt);
    EXPECT_TRUE(info.lazy_refcounts);
    EXPECT_TRUE(info.backing_name == NULL);
    EXPECT_EQ_INT(info.nb_extensions, 2);
    EXPECT_EQ_INT(info.nb_features, 1);
    REQUIRE_EQ_INT(qcow2_extension_get(img, 1, &ext), 0);
    EXPECT_EQ_U64(ext.type, 0x12345678);
    EXPECT_EQ_INT(ext.length, 3);
    EXPECT_TRUE(!ext.known);
    EXPECT_EQ_MEM(ext.data, "abc", 3);
    EXPECT_EQ_INT(qcow2_extension_get(img, 2, &ext), -EINVAL);
    REQUIRE_EQ_INT(qcow2_feature_get(img, 0, &feat), 0);
    EXPECT_EQ_STR(feat.name, "dirty bit");
    EXPECT_EQ_INT(qcow2_feature_get(img, 1, &feat), -EINVAL);
    qcow2_close(img);
    qimg_free(&q);
}

/* A bitmap directory with one entry "bm0" (24 + 3 bytes, padded to 32). */
static void bitmap_image(struct qimg *q, uint32_t dir_size)
{
    uint8_t ext[24];
    uint64_t dir, tbl;
    uint8_t *e;

    qimg_init(q, 3, 16, 1 << 20, 0);
    dir = qimg_alloc(q, 1);
    tbl = qimg_alloc(q, 1);
    e = q->buf + dir;
    q2_store_be64(e, tbl);
    q2_store_be32(e + 8, 1);
    q2_store_be32(e + 12, QCOW2_BITMAP_AUTO);
    e[16] = 1;  /* dirty tracking */
    e[17] = 16; /* 64 KiB granularity */
    q2_store_be16(e + 18, 3);
    q2_store_be32(e + 20, 0);
    memcpy(e + 24, "bm0", 3);
    q2_store_be32(ext, 1);
    q2_store_be32(ext + 4, 0);
    q2_store_be64(ext + 8, dir_size);
    q2_store_be64(ext + 16, dir);
    qimg_ext(q, Q2_EXT_BITMAPS, ext, 24);
    q->autoclear = Q2_AUTOCLEAR_BITMAPS;
}

TEST(bitmap_directory)
{
    struct qimg q;
    struct qcow2_image *img;
    struct qcow2_info info;
    struct qcow2_bitmap b;

    bitmap_image(&q, 32);
    REQUIRE_EQ_INT(qimg_open(&q, "bm.qcow2", NULL, &img), 0);
    REQUIRE_EQ_INT(qcow2_info_get(img, &info), 0);
    EXPECT_EQ_INT(info.nb_bitmaps, 1);
    EXPECT_TRUE(info.bitmaps_valid);
    REQUIRE_EQ_INT(qcow2_bitmap_get(img, 0, &b), 0);
    EXPECT_EQ_STR(b.name, "bm0");
    EXPECT_EQ_INT(b.granularity_bits, 16);
    EXPECT_EQ_INT(b.type, 1);
    EXPECT_EQ_INT(b.flags, QCOW2_BITMAP_AUTO);
    EXPECT_EQ_INT(b.table_size, 1);
    EXPECT_EQ_U64(b.table_offset, 4 * 65536);
    EXPECT_EQ_U64(b.entry_offset, 3 * 65536);
    EXPECT_EQ_INT(qcow2_bitmap_get(img, 1, &b), -EINVAL);
    qcow2_close(img);
    qimg_free(&q);
}

TEST(bitmap_directory_size_mismatch)
{
    struct qimg q;
    struct qcow2_image *img;

    struct qcow2_open_opts o = {.size = sizeof(o),
                                .flags = QCOW2_OPEN_RDWR};
    struct qcow2_damage d;
    struct qcow2_info info;

    /* read-only: opened without its bitmaps, the damage recorded */
    bitmap_image(&q, 40);
    REQUIRE_EQ_INT(qimg_open(&q, "bm.qcow2", NULL, &img), 0);
    REQUIRE_EQ_INT(qcow2_info_get(img, &info), 0);
    EXPECT_EQ_INT(info.nb_bitmaps, 0);
    REQUIRE_EQ_INT(qcow2_damage_get(img, 0, &d), 0);
    EXPECT_EQ_STR(d.part, "bitmap directory");
    EXPECT_EQ_U64(d.offset, 3 * 65536);
    EXPECT_EQ_INT(d.err, -QCOW2_ECORRUPT);
    EXPECT_CONTAINS(d.message, "32 of 40 bytes");
    EXPECT_EQ_INT(qcow2_damage_get(img, 1, &d), -EINVAL);
    qcow2_close(img);
    qimg_free(&q);
    /* writable: refused, as before */
    bitmap_image(&q, 40);
    EXPECT_EQ_INT(qimg_open(&q, "bm.qcow2", &o, &img), -QCOW2_ECORRUPT);
    EXPECT_CONTAINS(qcow2_errmsg(img), "32 of 40 bytes");
    qcow2_close(img);
    qimg_free(&q);
}
