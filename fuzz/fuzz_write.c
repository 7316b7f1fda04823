/*
 * fuzz_write.c - the write path: random guest writes, zero writes,
 * discards, flushes and growth decoded from the input, into a small image
 * created in memory, mirrored into a model.
 *
 * Input layout:
 *   byte 0   cluster_bits - 9 (mod 8: 512 B .. 64 KiB)
 *   byte 1   refcount order (mod 7), bit 7: version 2
 *   byte 2   bit 0: extended L2 (when allowed), bits 1-7: virtual size in
 *            64 KiB units (1..128)
 *   then 8-byte operations: op, 3 bytes offset (512-byte units), 2 bytes
 *   length (512-byte units), 2 bytes data seed
 *
 * Invariants asserted: every operation inside the image succeeds; after
 * them, and again after close and reopen, the guest view equals the model
 * and no refcount is below its references (no corruption); after a clean
 * close nothing leaks either.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_helpers.h"
#include "internal.h"

#define MAX_OPS 256

static void verify(struct qcow2_image *img, const uint8_t *model,
                   uint64_t size, bool expect_no_leaks)
{
    uint8_t *got = malloc(size);
    struct qcow2_check_result r;

    FUZZ_ASSERT(got != NULL);
    FUZZ_ASSERT(qcow2_pread(img, got, size, 0) == (int64_t)size);
    FUZZ_ASSERT(memcmp(got, model, size) == 0);
    free(got);
    /* the check's own walk (the one the refcount rebuild uses) */
    FUZZ_ASSERT(qcow2_flush(img) == 0);
    FUZZ_ASSERT(qcow2_check(img, NULL, &r) == 0);
    FUZZ_ASSERT(r.corruptions == 0 && r.check_errors == 0);
    if (expect_no_leaks)
        FUZZ_ASSERT(r.leaks == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct qcow2_create_opts o = {.size = sizeof(o)};
    struct qcow2_open_opts oo = {.size = sizeof(oo),
                                 .flags = QCOW2_OPEN_RDWR,
                                 .cache_bytes = 4096};
    struct qcow2_image *img;
    struct qcow2_io io, again;
    uint64_t vsize, cs, orig;
    uint8_t *model, *buf;
    const uint8_t *mem;
    size_t i, n, mlen;
    char err[256];
    bool discard_zeroes;

    if (size < 3)
        return 0;
    o.cluster_size = 512u << (data[0] % 8);
    o.refcount_bits = 1u << (data[1] % 7);
    o.version = (data[1] & 0x80) ? 2 : 3;
    if (o.version == 2)
        o.refcount_bits = 16;
    o.extended_l2 = (data[2] & 1) && o.version == 3 &&
                    o.cluster_size >= 16384;
    vsize = (uint64_t)(1 + (data[2] >> 1) % 128) << 16;
    o.virtual_size = vsize;
    orig = vsize;
    cs = o.cluster_size;
    discard_zeroes = true; /* v3, or v2 without a backing file */

    if (qcow2_io_open_mem(NULL, 0, &io) < 0)
        return 0;
    FUZZ_ASSERT(qcow2_create_io(&io, "w.qcow2", &o, err, sizeof(err)) == 0);
    img = qcow2_new();
    FUZZ_ASSERT(img && qcow2_open_io(img, &io, "w.qcow2", &oo) == 0);
    model = calloc(1, 2 * vsize);
    buf = malloc(2 * vsize);
    FUZZ_ASSERT(model && buf);

    n = (size - 3) / 8;
    if (n > MAX_OPS)
        n = MAX_OPS;
    for (i = 0; i < n; i++) {
        const uint8_t *p = data + 3 + i * 8;
        uint64_t off = ((uint64_t)p[1] << 16 | p[2] << 8 | p[3]) * 512 % vsize;
        uint64_t len = ((uint64_t)(p[4] << 8 | p[5]) % 256 + 1) * 512, k;
        uint16_t seed = (uint16_t)(p[6] << 8 | p[7]);
        if (len > vsize - off)
            len = vsize - off;
        switch (p[0] % 6) {
        case 0: case 1: case 2:
            for (k = 0; k < len; k++)
                buf[k] = (uint8_t)(seed + k * 7 + (k >> 9));
            FUZZ_ASSERT(qcow2_pwrite(img, buf, len, off) == (int64_t)len);
            memcpy(model + off, buf, len);
            break;
        case 3:
            FUZZ_ASSERT(qcow2_pwrite_zeroes(img, off, len) == 0);
            memset(model + off, 0, len);
            break;
        case 4: {
            uint64_t a = (off + cs - 1) & ~(cs - 1);
            uint64_t b = (off + len) & ~(cs - 1);
            FUZZ_ASSERT(qcow2_discard(img, off, len) == 0);
            if (discard_zeroes && b > a)
                memset(model + a, 0, b - a);
            break;
        }
        default:
            if (seed & 1) {
                FUZZ_ASSERT(qcow2_flush(img) == 0);
            } else if (vsize == orig && !(seed & 2)) {
                FUZZ_ASSERT(qcow2_resize(img, 2 * vsize) == 0);
                vsize *= 2; /* the model buffer was sized for this */
                break;
            }
            break;
        }
    }
    FUZZ_ASSERT(qcow2_flush(img) == 0);
    verify(img, model, vsize, false);

    /* closed cleanly and reopened: the same view, no leaks */
    mem = q2_io_mem_data(&io, &mlen);
    FUZZ_ASSERT(mem != NULL);
    FUZZ_ASSERT(qcow2_io_open_mem(mem, mlen, &again) == 0);
    FUZZ_ASSERT(qcow2_close(img) == 0);
    img = qcow2_new();
    FUZZ_ASSERT(img && qcow2_open_io(img, &again, "w.qcow2", NULL) == 0);
    verify(img, model, vsize, true);
    qcow2_close(img);
    free(model);
    free(buf);
    return 0;
}
