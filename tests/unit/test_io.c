/*
 * test_io.c - the storage backends: the memory backend (io_mem.c) with
 * fault injection, the POSIX backend (io_posix.c) on temporary files,
 * SEEK_DATA/SEEK_HOLE block status on a sparse file, and QEMU-compatible
 * OFD image locks.
 *
 * OFD locks belong to an open file description, not to a process, so two
 * opens of the same file in this one process see each other's locks just
 * as two processes would.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "imgbuild.h"
#include "internal.h"

/* ---- memory backend ---- */

TEST(mem_read_write)
{
    struct qcow2_io io;
    char buf[32];
    const uint8_t *data;
    size_t len;

    REQUIRE_EQ_INT(qcow2_io_open_mem("hello world", 11, &io), 0);
    EXPECT_EQ_INT(io.version, QCOW2_IO_VERSION);
    EXPECT_TRUE(io.block_status == NULL);
    EXPECT_TRUE(io.identity == NULL);
    EXPECT_EQ_INT(io.size(io.ctx), 11);
    memset(buf, 0, sizeof(buf));
    EXPECT_EQ_INT(io.pread(io.ctx, buf, 5, 6), 5);
    EXPECT_EQ_MEM(buf, "world", 5);
    failure("short read at end of file");
    EXPECT_EQ_INT(io.pread(io.ctx, buf, sizeof(buf), 6), 5);
    EXPECT_EQ_INT(io.pread(io.ctx, buf, sizeof(buf), 11), 0);
    EXPECT_EQ_INT(io.pread(io.ctx, buf, sizeof(buf), 1ull << 40), 0);

    EXPECT_EQ_INT(io.pwrite(io.ctx, "W", 1, 6), 1);
    failure("a write past the end fills the gap with zeros");
    EXPECT_EQ_INT(io.pwrite(io.ctx, "!", 1, 15), 1);
    EXPECT_EQ_INT(io.size(io.ctx), 16);
    data = q2_io_mem_data(&io, &len);
    REQUIRE_TRUE(data);
    EXPECT_EQ_INT(len, 16);
    EXPECT_EQ_MEM(data, "hello World\0\0\0\0!", 16);
    EXPECT_EQ_INT(io.flush(io.ctx), 0);
    io.close(io.ctx);
}

TEST(mem_grow_large_write)
{
    struct qcow2_io io;
    uint8_t *big = malloc(100000), *back = malloc(100000);

    qimg_pattern(big, 100000, 1);
    REQUIRE_EQ_INT(qcow2_io_open_mem(NULL, 0, &io), 0);
    EXPECT_EQ_INT(io.size(io.ctx), 0);
    EXPECT_EQ_INT(io.pwrite(io.ctx, big, 100000, 12345), 100000);
    EXPECT_EQ_INT(io.size(io.ctx), 112345);
    EXPECT_EQ_INT(io.pread(io.ctx, back, 100000, 12345), 100000);
    EXPECT_EQ_MEM(back, big, 100000);
    failure("absurd offsets are refused");
    EXPECT_EQ_INT(io.pwrite(io.ctx, big, 1, 1ull << 41), -EFBIG);
    EXPECT_EQ_INT(io.truncate(io.ctx, 1ull << 41), -EFBIG);
    io.close(io.ctx);
    free(big);
    free(back);
}

TEST(mem_truncate)
{
    struct qcow2_io io;
    uint8_t buf[64];
    uint8_t zeros[64];

    memset(zeros, 0, sizeof(zeros));
    REQUIRE_EQ_INT(qcow2_io_open_mem("0123456789abcdef", 16, &io), 0);
    EXPECT_EQ_INT(io.truncate(io.ctx, 4), 0);
    EXPECT_EQ_INT(io.size(io.ctx), 4);
    EXPECT_EQ_INT(io.pread(io.ctx, buf, sizeof(buf), 0), 4);
    EXPECT_EQ_MEM(buf, "0123", 4);
    failure("growing again shows zeros, not the old bytes");
    EXPECT_EQ_INT(io.truncate(io.ctx, 40), 0);
    EXPECT_EQ_INT(io.size(io.ctx), 40);
    EXPECT_EQ_INT(io.pread(io.ctx, buf, sizeof(buf), 0), 40);
    EXPECT_EQ_MEM(buf, "0123", 4);
    EXPECT_EQ_MEM(buf + 4, zeros, 36);
    failure("shrink, then write past the end");
    EXPECT_EQ_INT(io.truncate(io.ctx, 2), 0);
    EXPECT_EQ_INT(io.pwrite(io.ctx, "x", 1, 10), 1);
    EXPECT_EQ_INT(io.pread(io.ctx, buf, sizeof(buf), 0), 11);
    EXPECT_EQ_MEM(buf, "01\0\0\0\0\0\0\0\0x", 11);
    EXPECT_EQ_INT(io.truncate(io.ctx, 0), 0);
    EXPECT_EQ_INT(io.size(io.ctx), 0);
    io.close(io.ctx);
}

TEST(mem_fault_injection)
{
    struct qcow2_io io;
    char buf[4];

    REQUIRE_EQ_INT(qcow2_io_open_mem("abcd", 4, &io), 0);
    q2_io_mem_fail_after(&io, 2);
    EXPECT_EQ_INT(io.pread(io.ctx, buf, 1, 0), 1);
    EXPECT_EQ_INT(io.pwrite(io.ctx, "x", 1, 0), 1);
    failure("every call after the first two fails");
    EXPECT_EQ_INT(io.pread(io.ctx, buf, 1, 0), -EIO);
    EXPECT_EQ_INT(io.pwrite(io.ctx, "y", 1, 0), -EIO);
    EXPECT_EQ_INT(io.flush(io.ctx), -EIO);
    EXPECT_EQ_INT(io.truncate(io.ctx, 1), -EIO);
    EXPECT_EQ_INT(io.pread(io.ctx, buf, 1, 0), -EIO);
    failure("size is not counted and does not fail");
    EXPECT_EQ_INT(io.size(io.ctx), 4);
    q2_io_mem_fail_after(&io, -5);
    EXPECT_EQ_INT(io.pread(io.ctx, buf, 4, 0), 4);
    EXPECT_EQ_MEM(buf, "xbcd", 4);
    q2_io_mem_fail_after(&io, 0);
    EXPECT_EQ_INT(io.flush(io.ctx), -EIO);
    io.close(io.ctx);
}

TEST(mem_helpers_reject_other_backends)
{
    struct qcow2_io io;
    size_t len = 77;

    memset(&io, 0, sizeof(io));
    EXPECT_TRUE(q2_io_mem_data(&io, &len) == NULL);
    EXPECT_TRUE(q2_io_mem_data(NULL, &len) == NULL);
    EXPECT_EQ_INT(len, 77);
    q2_io_mem_fail_after(&io, 1); /* ignored, must not crash */
    q2_io_mem_fail_after(NULL, 1);
}

/* ---- POSIX backend ---- */

static char tmpdir[256];

/* A fresh directory for the test's files; "" on failure. */
static const char *make_tmpdir(void)
{
    const char *t = getenv("TMPDIR");

    snprintf(tmpdir, sizeof(tmpdir), "%s/qchain-unit-XXXXXX",
             t && t[0] ? t : "/tmp");
    if (!mkdtemp(tmpdir))
        tmpdir[0] = '\0';
    return tmpdir;
}

static void tmp_path(char *buf, size_t len, const char *name)
{
    snprintf(buf, len, "%s/%s", tmpdir, name);
}

static void remove_tmpdir(const char *name1, const char *name2)
{
    char p[512];

    if (name1) {
        tmp_path(p, sizeof(p), name1);
        unlink(p);
    }
    if (name2) {
        tmp_path(p, sizeof(p), name2);
        unlink(p);
    }
    rmdir(tmpdir);
}

TEST(posix_read_write)
{
    struct qcow2_io io, io2;
    char path[512], err[256], buf[16];
    struct stat st;
    uint64_t dev, ino;

    if (!make_tmpdir()[0])
        SKIP("cannot create a temporary directory");
    tmp_path(path, sizeof(path), "f");
    REQUIRE_EQ_INT(qcow2_io_open_file(path, QCOW2_IO_CREATE, &io, err,
                                      sizeof(err)), 0);
    EXPECT_EQ_INT(io.size(io.ctx), 0);
    EXPECT_EQ_INT(io.pwrite(io.ctx, "abcdef", 6, 0), 6);
    EXPECT_EQ_INT(io.pwrite(io.ctx, "Z", 1, 9), 1);
    EXPECT_EQ_INT(io.flush(io.ctx), 0);
    EXPECT_EQ_INT(io.size(io.ctx), 10);
    memset(buf, 0x55, sizeof(buf));
    EXPECT_EQ_INT(io.pread(io.ctx, buf, sizeof(buf), 0), 10);
    EXPECT_EQ_MEM(buf, "abcdef\0\0\0Z", 10);
    EXPECT_EQ_INT(io.pread(io.ctx, buf, sizeof(buf), 100), 0);
    EXPECT_EQ_INT(io.truncate(io.ctx, 3), 0);
    EXPECT_EQ_INT(io.size(io.ctx), 3);
    REQUIRE_EQ_INT(stat(path, &st), 0);
    REQUIRE_EQ_INT(io.identity(io.ctx, &dev, &ino), 0);
    EXPECT_EQ_U64(dev, st.st_dev);
    EXPECT_EQ_U64(ino, st.st_ino);
    EXPECT_TRUE(io.allocated(io.ctx) >= 0);

    failure("creating an existing file fails");
    EXPECT_EQ_INT(qcow2_io_open_file(path, QCOW2_IO_CREATE | QCOW2_IO_NOLOCK,
                                     &io2, err, sizeof(err)), -EEXIST);
    io.close(io.ctx);

    failure("read-only backends refuse writes");
    REQUIRE_EQ_INT(qcow2_io_open_file(path, 0, &io, NULL, 0), 0);
    EXPECT_EQ_INT(io.pwrite(io.ctx, "x", 1, 0), -EBADF);
    io.close(io.ctx);
    remove_tmpdir("f", NULL);
}

TEST(posix_open_errors)
{
    struct qcow2_io io;
    char path[512], err[256];

    if (!make_tmpdir()[0])
        SKIP("cannot create a temporary directory");
    tmp_path(path, sizeof(path), "missing");
    err[0] = 'x';
    EXPECT_EQ_INT(qcow2_io_open_file(path, 0, &io, err, sizeof(err)),
                  -ENOENT);
    EXPECT_EQ_STR(err, strerror(ENOENT));
    EXPECT_EQ_INT(qcow2_io_open_file(tmpdir, 0, &io, err, sizeof(err)),
                  -EISDIR);
    EXPECT_EQ_INT(qcow2_io_open_file(NULL, 0, &io, err, sizeof(err)),
                  -EINVAL);
    remove_tmpdir(NULL, NULL);
}

/* A sparse file: data [0, 64K), hole, data [1M, 1M + 64K), hole to 2M.
 * Returns 0, or -1 when the file system shows no holes. */
static int make_sparse(const char *path)
{
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    uint8_t *buf = malloc(65536);
    int ok = fd >= 0 && buf;

    if (ok) {
        memset(buf, 0xab, 65536);
        ok = pwrite(fd, buf, 65536, 0) == 65536 &&
             pwrite(fd, buf, 65536, 1 << 20) == 65536 &&
             ftruncate(fd, 2 << 20) == 0 && fsync(fd) == 0;
    }
    if (ok)
        ok = lseek(fd, 0, SEEK_HOLE) == 65536 &&
             lseek(fd, 65536, SEEK_DATA) == (1 << 20);
    free(buf);
    if (fd >= 0)
        close(fd);
    return ok ? 0 : -1;
}

TEST(posix_block_status_sparse)
{
    struct qcow2_io io;
    char path[512];
    uint64_t pnum, size = 2u << 20;

    if (!make_tmpdir()[0])
        SKIP("cannot create a temporary directory");
    tmp_path(path, sizeof(path), "sparse");
    if (make_sparse(path) < 0) {
        remove_tmpdir("sparse", NULL);
        SKIP("the file system under %s does not report holes", tmpdir);
    }
    REQUIRE_EQ_INT(qcow2_io_open_file(path, 0, &io, NULL, 0), 0);
    REQUIRE_TRUE(io.block_status);

    EXPECT_EQ_INT(io.block_status(io.ctx, 0, size, &pnum), 1);
    EXPECT_EQ_U64(pnum, 65536);
    failure("len bounds the run");
    EXPECT_EQ_INT(io.block_status(io.ctx, 100, 1000, &pnum), 1);
    EXPECT_EQ_U64(pnum, 1000);
    EXPECT_EQ_INT(io.block_status(io.ctx, 65536, size - 65536, &pnum), 0);
    EXPECT_EQ_U64(pnum, (1 << 20) - 65536);
    EXPECT_EQ_INT(io.block_status(io.ctx, 500000, 4096, &pnum), 0);
    EXPECT_EQ_U64(pnum, 4096);
    EXPECT_EQ_INT(io.block_status(io.ctx, 1 << 20, size, &pnum), 1);
    EXPECT_EQ_U64(pnum, 65536);
    failure("the trailing hole");
    EXPECT_EQ_INT(io.block_status(io.ctx, (1 << 20) + 65536, 4096, &pnum),
                  0);
    EXPECT_EQ_U64(pnum, 4096);
    failure("past the end of the file");
    EXPECT_EQ_INT(io.block_status(io.ctx, size + 4096, 4096, &pnum), 0);
    EXPECT_EQ_U64(pnum, 4096);
    EXPECT_TRUE(io.allocated(io.ctx) < (int64_t)size);
    io.close(io.ctx);
    remove_tmpdir("sparse", NULL);
}

/* Is the 512-byte sector at off data, as a fresh descriptor sees it? */
static int kernel_data_at(int fd, uint64_t off)
{
    off_t d = lseek(fd, (off_t)off, SEEK_DATA);
    return d >= 0 && (uint64_t)d <= off;
}

/* The backend remembers its last SEEK_HOLE/SEEK_DATA answer and keeps
 * what stays true across its own writes: every answer, after any mix of
 * writes, punches and truncations through the handle, must agree with
 * the kernel over the whole run it reports. */
TEST(posix_block_status_cache)
{
    struct qcow2_io io;
    char path[512];
    uint64_t size = 2u << 20, x = 12345;
    uint8_t *buf = malloc(1 << 17);
    int fd = -1, i, bad = 0;

    REQUIRE_TRUE(buf);
    memset(buf, 0x5a, 1 << 17);
    if (!make_tmpdir()[0]) {
        free(buf);
        SKIP("cannot create a temporary directory");
    }
    tmp_path(path, sizeof(path), "cache");
    if (make_sparse(path) < 0) {
        free(buf);
        remove_tmpdir("cache", NULL);
        SKIP("the file system under %s does not report holes", tmpdir);
    }
    REQUIRE_EQ_INT(qcow2_io_open_file(path, QCOW2_IO_RDWR, &io, NULL, 0), 0);
    fd = open(path, O_RDONLY);
    REQUIRE_TRUE(fd >= 0);
    for (i = 0; i < 3000 && !bad; i++) {
        uint64_t off, len, pnum = 0, k;
        int op, st;
        x = x * 6364136223846793005u + 1442695040888963407u;
        op = (int)(x >> 60);
        off = (x >> 20) % size & ~(uint64_t)511;
        len = 512 * (1 + (x >> 8) % 64);
        if (op < 3) { /* write: small and unaligned, or a few blocks */
            len = op == 0 ? 1 + (x >> 4) % 700 : len;
            EXPECT_EQ_INT((int)io.pwrite(io.ctx, buf, len, off), (int)len);
            continue;
        }
        if (op == 3 && (x & 1)) {
            EXPECT_EQ_INT(io.punch(io.ctx, off & ~(uint64_t)4095, 8192), 0);
            continue;
        }
        if (op == 4 && (x & 3) == 0) {
            EXPECT_EQ_INT(io.truncate(io.ctx, size), 0);
            continue;
        }
        /* queries, often where the last write ended (a writer's next) */
        if (op < 10)
            off = (off + 4096) & ~(uint64_t)4095;
        if (off >= size)
            continue;
        st = io.block_status(io.ctx, off, size - off, &pnum);
        if (st < 0 || pnum == 0 || pnum > size - off) {
            failure("block_status(%" PRIu64 ") = %d, pnum %" PRIu64, off, st,
                    pnum);
            bad = 1;
            break;
        }
        for (k = off; k < off + pnum; k += 512)
            if (kernel_data_at(fd, k) != st) {
                failure("block_status(%" PRIu64 ") says %s for %" PRIu64
                        " bytes; the kernel disagrees at %" PRIu64,
                        off, st ? "data" : "hole", pnum, k);
                bad = 1;
                break;
            }
    }
    EXPECT_EQ_INT(bad, 0);
    close(fd);
    io.close(io.ctx);

    /* the cases one by one, on a fresh copy */
    REQUIRE_EQ_INT(make_sparse(path), 0);
    REQUIRE_EQ_INT(qcow2_io_open_file(path, QCOW2_IO_RDWR, &io, NULL, 0), 0);
    {
        static const struct {
            uint64_t woff, wlen; /* a write first (wlen 0: none) */
            uint64_t q;          /* then the question */
            int st;
            uint64_t min, max;   /* the run: at least what the backend
                                    knows, at most the kernel's answer */
        } steps[] = {
            {0, 0, 0, 1, 65536, 65536},           /* data [0, 64K) */
            {60000, 10000, 0, 1, 70000, 73728},   /* a write past its end:
                                                     the run grows */
            {0, 0, 80000, 0, 968576, 968576},     /* the hole to 1M */
            {100000, 100, 98304, 1, 4096, 4096},  /* written into */
            {0, 0, 102400, 0, 946176, 946176},    /* the hole after it */
            {0, 0, 90000, 0, 8304, 8304},         /* and before it */
            {2097152, 512, 2097152, 1, 512, 512}, /* past the end */
        };
        unsigned k;
        for (k = 0; k < sizeof(steps) / sizeof(steps[0]); k++) {
            uint64_t pnum = 0;
            failure("step %u", k);
            if (steps[k].wlen)
                EXPECT_EQ_INT((int)io.pwrite(io.ctx, buf, steps[k].wlen,
                                             steps[k].woff),
                              (int)steps[k].wlen);
            EXPECT_EQ_INT(io.block_status(io.ctx, steps[k].q, 4u << 20,
                                          &pnum), steps[k].st);
            EXPECT_TRUE(pnum >= steps[k].min && pnum <= steps[k].max);
        }
    }
    io.close(io.ctx);
    free(buf);
    remove_tmpdir("cache", NULL);
}

TEST(posix_raw_map_holes)
{
    struct qcow2_image *img;
    struct qcow2_open_opts o;
    struct qcow2_extent e;
    char path[512];
    uint8_t buf[16];

    if (!make_tmpdir()[0])
        SKIP("cannot create a temporary directory");
    tmp_path(path, sizeof(path), "sparse.raw");
    if (make_sparse(path) < 0) {
        remove_tmpdir("sparse.raw", NULL);
        SKIP("the file system under %s does not report holes", tmpdir);
    }
    memset(&o, 0, sizeof(o));
    o.size = sizeof(o);
    o.format = "raw";
    img = qcow2_new();
    REQUIRE_TRUE(img);
    if (!EXPECT_EQ_INT(qcow2_open(img, path, &o), 0))
        goto out;
    EXPECT_EQ_U64(qcow2_virtual_size(img), 2u << 20);
    REQUIRE_EQ_INT(qcow2_map(img, 0, 2u << 20, QCOW2_MAP_HOLES, &e), 0);
    EXPECT_EQ_INT(e.kind, QCOW2_KIND_DATA);
    EXPECT_EQ_U64(e.length, 65536);
    REQUIRE_EQ_INT(qcow2_map(img, 65536, 2u << 20, QCOW2_MAP_HOLES, &e), 0);
    EXPECT_EQ_INT(e.kind, QCOW2_KIND_ZERO);
    EXPECT_EQ_INT(e.flags, QCOW2_EXTENT_PRESENT | QCOW2_EXTENT_ZERO |
                               QCOW2_EXTENT_OFFSET_VALID);
    EXPECT_EQ_U64(e.length, (1 << 20) - 65536);
    failure("without QCOW2_MAP_HOLES a raw file is all data");
    REQUIRE_EQ_INT(qcow2_map(img, 65536, 2u << 20, 0, &e), 0);
    EXPECT_EQ_INT(e.kind, QCOW2_KIND_DATA);
    EXPECT_EQ_U64(e.length, (2u << 20) - 65536);
    EXPECT_EQ_INT(qcow2_pread(img, buf, sizeof(buf), (1 << 20) - 8), 16);
    EXPECT_EQ_MEM(buf, "\0\0\0\0\0\0\0\0\xab\xab\xab\xab\xab\xab\xab\xab",
                  16);
out:
    qcow2_close(img);
    remove_tmpdir("sparse.raw", NULL);
}

TEST(posix_open_qcow2_file)
{
    struct qimg q;
    struct qcow2_image *img;
    struct qcow2_info info;
    char path[512];
    uint8_t got[512], want[512];
    uint64_t dev, ino;
    struct stat st;
    FILE *f;

    if (!make_tmpdir()[0])
        SKIP("cannot create a temporary directory");
    tmp_path(path, sizeof(path), "disk.qcow2");
    qimg_init(&q, 3, 9, 4096, 0);
    qimg_data(&q, 512, NULL);
    qimg_finish(&q);
    f = fopen(path, "wb");
    REQUIRE_TRUE(f);
    EXPECT_EQ_INT(fwrite(q.buf, 1, q.len, f), q.len);
    fclose(f);
    img = qcow2_new();
    REQUIRE_TRUE(img);
    if (EXPECT_EQ_INT(qcow2_open(img, path, NULL), 0)) {
        REQUIRE_EQ_INT(qcow2_info_get(img, &info), 0);
        EXPECT_EQ_STR(info.filename, path);
        EXPECT_EQ_U64(info.file_size, q.len);
        EXPECT_TRUE(info.actual_size > 0);
        REQUIRE_EQ_INT(stat(path, &st), 0);
        REQUIRE_EQ_INT(qcow2_identity(img, &dev, &ino), 0);
        EXPECT_EQ_U64(ino, st.st_ino);
        qimg_pattern(want, sizeof(want), 512 ^ q.salt);
        EXPECT_EQ_INT(qcow2_pread(img, got, sizeof(got), 512), 512);
        EXPECT_EQ_MEM(got, want, sizeof(want));
        failure("qcow2_host_pread reads the file itself, zeros past EOF");
        EXPECT_EQ_INT(qcow2_host_pread(img, false, got, 8, 0), 8);
        EXPECT_EQ_MEM(got, "QFI\xfb\0\0\0\x03", 8);
        EXPECT_EQ_INT(qcow2_host_pread(img, false, got, 8, q.len + 100), 8);
        EXPECT_EQ_MEM(got, "\0\0\0\0\0\0\0\0", 8);
    }
    qcow2_close(img);
    qimg_free(&q);

    img = qcow2_new();
    REQUIRE_TRUE(img);
    tmp_path(path, sizeof(path), "nope.qcow2");
    EXPECT_EQ_INT(qcow2_open(img, path, NULL), -ENOENT);
    EXPECT_CONTAINS(qcow2_errmsg(img), strerror(ENOENT));
    qcow2_close(img);
    remove_tmpdir("disk.qcow2", NULL);
}

/* ---- locks ---- */

/* QEMU lock bytes as qcow2_io_lock_probe reports them. */
#define PERM(n) (1 << (n))
#define SHARED(n) (1 << (8 + (n)))
#define READER_MASK (PERM(0) | SHARED(1) | SHARED(3))
#define WRITER_MASK (READER_MASK | PERM(1) | PERM(3))

/* Create an empty file for lock tests; 0, or skip-worthy -1. */
static int lock_file(char *path, size_t len)
{
    int fd, rc;

    if (!make_tmpdir()[0])
        return -1;
    snprintf(path, len, "%s/locked", tmpdir);
    fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        return -1;
    if (write(fd, "qchain lock test", 16) != 16) {
        close(fd);
        return -1;
    }
    close(fd);
    rc = qcow2_io_lock_probe(path);
    return rc == 0 ? 0 : -1; /* -EINVAL: no OFD locks here */
}

TEST(lock_probe_reader)
{
    struct qcow2_io io;
    char path[512];

    if (lock_file(path, sizeof(path)) < 0) {
        remove_tmpdir("locked", NULL);
        SKIP("no OFD locks on %s", tmpdir);
    }
    REQUIRE_EQ_INT(qcow2_io_open_file(path, 0, &io, NULL, 0), 0);
    failure("a reader holds 100 and refuses to share write (201), "
            "resize (203)");
    EXPECT_EQ_INT(qcow2_io_lock_probe(path), READER_MASK);
    io.close(io.ctx);
    failure("closing drops the locks");
    EXPECT_EQ_INT(qcow2_io_lock_probe(path), 0);
    remove_tmpdir("locked", NULL);
}

TEST(lock_probe_writer)
{
    struct qcow2_io io;
    char path[512];

    if (lock_file(path, sizeof(path)) < 0) {
        remove_tmpdir("locked", NULL);
        SKIP("no OFD locks on %s", tmpdir);
    }
    REQUIRE_EQ_INT(qcow2_io_open_file(path, QCOW2_IO_RDWR, &io, NULL, 0), 0);
    EXPECT_EQ_INT(qcow2_io_lock_probe(path), WRITER_MASK);
    io.close(io.ctx);
    remove_tmpdir("locked", NULL);
}

TEST(lock_nolock)
{
    struct qcow2_io io;
    char path[512];

    if (lock_file(path, sizeof(path)) < 0) {
        remove_tmpdir("locked", NULL);
        SKIP("no OFD locks on %s", tmpdir);
    }
    REQUIRE_EQ_INT(qcow2_io_open_file(path, QCOW2_IO_RDWR | QCOW2_IO_NOLOCK,
                                      &io, NULL, 0), 0);
    EXPECT_EQ_INT(qcow2_io_lock_probe(path), 0);
    io.close(io.ctx);
    remove_tmpdir("locked", NULL);
    EXPECT_EQ_INT(qcow2_io_lock_probe(path), -ENOENT);
}

TEST(lock_conflicts)
{
    struct qcow2_io r1, r2, w;
    char path[512], err[256];

    if (lock_file(path, sizeof(path)) < 0) {
        remove_tmpdir("locked", NULL);
        SKIP("no OFD locks on %s", tmpdir);
    }
    REQUIRE_EQ_INT(qcow2_io_open_file(path, 0, &r1, NULL, 0), 0);
    failure("a second reader shares");
    if (EXPECT_EQ_INT(qcow2_io_open_file(path, 0, &r2, err, sizeof(err)), 0))
        r2.close(r2.ctx);
    failure("a writer conflicts with the reader");
    err[0] = '\0';
    EXPECT_EQ_INT(qcow2_io_open_file(path, QCOW2_IO_RDWR, &w, err,
                                     sizeof(err)), -EBUSY);
    EXPECT_CONTAINS(err, "in use");
    failure("the refused writer left no locks behind");
    EXPECT_EQ_INT(qcow2_io_lock_probe(path), READER_MASK);
    failure("NOLOCK ignores the locks (qemu-img -U)");
    if (EXPECT_EQ_INT(qcow2_io_open_file(path, QCOW2_IO_RDWR |
                                         QCOW2_IO_NOLOCK, &w, NULL, 0), 0))
        w.close(w.ctx);
    r1.close(r1.ctx);

    REQUIRE_EQ_INT(qcow2_io_open_file(path, QCOW2_IO_RDWR, &w, NULL, 0), 0);
    failure("a reader conflicts with the writer");
    err[0] = '\0';
    EXPECT_EQ_INT(qcow2_io_open_file(path, 0, &r1, err, sizeof(err)),
                  -EBUSY);
    EXPECT_CONTAINS(err, "lock byte");
    failure("a second writer conflicts too");
    EXPECT_EQ_INT(qcow2_io_open_file(path, QCOW2_IO_RDWR, &r2, NULL, 0),
                  -EBUSY);
    w.close(w.ctx);
    remove_tmpdir("locked", NULL);
}

TEST(lock_qcow2_open_busy)
{
    struct qimg q;
    struct qcow2_image *img;
    struct qcow2_io w;
    struct qcow2_open_opts o;
    char path[512];
    FILE *f;

    if (lock_file(path, sizeof(path)) < 0) {
        remove_tmpdir("locked", NULL);
        SKIP("no OFD locks on %s", tmpdir);
    }
    qimg_init(&q, 3, 9, 4096, 0);
    qimg_finish(&q);
    f = fopen(path, "wb");
    REQUIRE_TRUE(f);
    EXPECT_EQ_INT(fwrite(q.buf, 1, q.len, f), q.len);
    fclose(f);
    qimg_free(&q);
    REQUIRE_EQ_INT(qcow2_io_open_file(path, QCOW2_IO_RDWR, &w, NULL, 0), 0);
    img = qcow2_new();
    REQUIRE_TRUE(img);
    EXPECT_EQ_INT(qcow2_open(img, path, NULL), -EBUSY);
    EXPECT_CONTAINS(qcow2_errmsg(img), "in use");
    qcow2_close(img);
    failure("QCOW2_OPEN_FORCE_SHARE takes no locks");
    memset(&o, 0, sizeof(o));
    o.size = sizeof(o);
    o.flags = QCOW2_OPEN_FORCE_SHARE;
    img = qcow2_new();
    REQUIRE_TRUE(img);
    EXPECT_EQ_INT(qcow2_open(img, path, &o), 0);
    qcow2_close(img);
    w.close(w.ctx);
    remove_tmpdir("locked", NULL);
}
