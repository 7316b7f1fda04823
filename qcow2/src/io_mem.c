/*
 * io_mem.c - in-memory storage backend: a growable buffer, with optional
 * fault injection ("fail every call after N calls") for tests.  Unit tests
 * and fuzzers open images and whole chains from memory through it.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define MEM_MAX_SIZE ((uint64_t)1 << 40) /* refuse absurd truncates */

struct mem_file {
    uint8_t *buf;
    size_t len;
    size_t cap;
    long fail_after; /* < 0: never */
};

static int mem_fault(struct mem_file *m)
{
    if (m->fail_after < 0)
        return 0;
    if (m->fail_after == 0)
        return -EIO;
    m->fail_after--;
    return 0;
}

static int64_t mem_pread(void *ctx, void *buf, size_t len, uint64_t off)
{
    struct mem_file *m = ctx;
    int rc = mem_fault(m);

    if (rc < 0)
        return rc;
    if (off >= m->len)
        return 0;
    if (len > m->len - off)
        len = m->len - (size_t)off;
    memcpy(buf, m->buf + off, len);
    return (int64_t)len;
}

static int mem_reserve(struct mem_file *m, uint64_t size)
{
    uint8_t *nb;
    size_t ncap;

    if (size > MEM_MAX_SIZE)
        return -EFBIG;
    if (size <= m->cap)
        return 0;
    ncap = m->cap ? m->cap : 4096;
    while (ncap < size)
        ncap *= 2;
    nb = realloc(m->buf, ncap);
    if (!nb)
        return -ENOMEM;
    memset(nb + m->cap, 0, ncap - m->cap);
    m->buf = nb;
    m->cap = ncap;
    return 0;
}

static int64_t mem_pwrite(void *ctx, const void *buf, size_t len, uint64_t off)
{
    struct mem_file *m = ctx;
    int rc = mem_fault(m);

    if (rc < 0)
        return rc;
    if (off > MEM_MAX_SIZE || len > MEM_MAX_SIZE - off)
        return -EFBIG;
    rc = mem_reserve(m, off + len);
    if (rc < 0)
        return rc;
    if (off > m->len)
        memset(m->buf + m->len, 0, (size_t)off - m->len);
    memcpy(m->buf + off, buf, len);
    if (off + len > m->len)
        m->len = (size_t)(off + len);
    return (int64_t)len;
}

static int mem_flush(void *ctx)
{
    return mem_fault(ctx);
}

static int mem_truncate(void *ctx, uint64_t size)
{
    struct mem_file *m = ctx;
    int rc = mem_fault(m);

    if (rc < 0)
        return rc;
    rc = mem_reserve(m, size);
    if (rc < 0)
        return rc;
    if (size > m->len)
        memset(m->buf + m->len, 0, (size_t)size - m->len);
    m->len = (size_t)size;
    return 0;
}

static int64_t mem_size(void *ctx)
{
    return (int64_t)((struct mem_file *)ctx)->len;
}

static void mem_close(void *ctx)
{
    struct mem_file *m = ctx;
    if (m) {
        free(m->buf);
        free(m);
    }
}

int qcow2_io_open_mem(const void *buf, size_t len, struct qcow2_io *io)
{
    struct mem_file *m = calloc(1, sizeof(*m));

    if (!m)
        return -ENOMEM;
    m->fail_after = -1;
    if (len && mem_reserve(m, len) < 0) {
        free(m);
        return -ENOMEM;
    }
    if (len)
        memcpy(m->buf, buf, len);
    m->len = len;
    memset(io, 0, sizeof(*io));
    io->version = QCOW2_IO_VERSION;
    io->ctx = m;
    io->pread = mem_pread;
    io->pwrite = mem_pwrite;
    io->flush = mem_flush;
    io->truncate = mem_truncate;
    io->size = mem_size;
    io->close = mem_close;
    return 0;
}

void q2_io_mem_fail_after(struct qcow2_io *io, long calls)
{
    if (io && io->close == mem_close)
        ((struct mem_file *)io->ctx)->fail_after = calls < 0 ? -1 : calls;
}

const uint8_t *q2_io_mem_data(const struct qcow2_io *io, size_t *len)
{
    const struct mem_file *m;

    if (!io || io->close != mem_close)
        return NULL;
    m = io->ctx;
    if (len)
        *len = m->len;
    return m->buf;
}
