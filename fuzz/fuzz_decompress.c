/*
 * fuzz_decompress.c - q2_decompress over arbitrary compressed clusters.
 *
 * Input layout:
 *   byte 0     selector: bit 0 = compression type (0 zlib, 1 zstd),
 *              bits 1-7 = cluster_bits - 9, modulo 13 (9..21);
 *              0xff selects an unknown compression type (-ENOTSUP)
 *   bytes 1..  the compressed stream, as read from the image (up to two
 *              clusters, as the library reads it)
 *
 * The output is an exact-size heap buffer of one cluster, so ASan catches
 * a codec writing past it; the result must be one of the documented codes.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_helpers.h"
#include "internal.h"

#define MAX_INPUT (1u + (4u << 20)) /* selector + two 2 MiB clusters */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    unsigned type, cluster_bits;
    size_t dstlen, srclen;
    uint8_t *src, *dst;
    int rc;

    if (size < 1 || size > MAX_INPUT)
        return 0;
    type = data[0] & 1;
    if (data[0] == 0xff)
        type = 2;
    cluster_bits = 9 + (unsigned)((data[0] >> 1) % 13);
    dstlen = (size_t)1 << cluster_bits;
    srclen = size - 1;
    if (srclen > 2 * dstlen)
        srclen = 2 * dstlen; /* what read_compressed can ever pass */

    src = malloc(srclen ? srclen : 1);
    dst = malloc(dstlen);
    if (!src || !dst)
        goto out;
    if (srclen)
        memcpy(src, data + 1, srclen);
    rc = q2_decompress(type, src, srclen, dst, dstlen);
    if (type == 2)
        FUZZ_ASSERT(rc == -ENOTSUP);
    else
        FUZZ_ASSERT(rc == 0 || rc == -QCOW2_ECORRUPT || rc == -ENOMEM);
    if (rc == 0) {
        /* touch the whole cluster: it must be fully written */
        volatile uint8_t sum = 0;
        size_t i;
        for (i = 0; i < dstlen; i += 64)
            sum ^= dst[i];
        (void)sum;
    }
out:
    free(src);
    free(dst);
    return 0;
}
