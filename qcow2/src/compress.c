/*
 * compress.c - compressed cluster codecs: raw deflate (qcow2 "zlib",
 * compression_type 0) and zstd (compression_type 1).
 *
 * A compressed cluster always decodes to exactly one cluster.  The input is
 * known only to 512-byte-sector precision, so trailing bytes after the
 * stream are allowed (QEMU accepts a deflate stream that fills the output
 * even without Z_STREAM_END, and ignores padding after zstd frames).  The
 * output buffer is the bound: no input can make us produce more than
 * dstlen bytes or allocate by what the stream claims.
 */
#include <errno.h>
#include <limits.h>
#include <zlib.h>
#include <zstd.h>

#include "format.h"
#include "internal.h"

static int inflate_raw(const uint8_t *src, size_t srclen, uint8_t *dst,
                       size_t dstlen)
{
    z_stream s = {0};
    int zrc;

    if (srclen > UINT_MAX || dstlen > UINT_MAX)
        return -EINVAL;
    /* window -15 decodes QEMU's -12 streams (a subset) */
    if (inflateInit2(&s, -15) != Z_OK)
        return -ENOMEM;
    s.next_in = (Bytef *)(uintptr_t)src;
    s.avail_in = (uInt)srclen;
    s.next_out = dst;
    s.avail_out = (uInt)dstlen;
    zrc = inflate(&s, Z_FINISH);
    inflateEnd(&s);
    if ((zrc == Z_STREAM_END || zrc == Z_BUF_ERROR) && s.avail_out == 0)
        return 0;
    return -QCOW2_ECORRUPT;
}

static int unzstd(const uint8_t *src, size_t srclen, uint8_t *dst,
                  size_t dstlen)
{
    ZSTD_DCtx *d = ZSTD_createDCtx();
    ZSTD_inBuffer in = {src, srclen, 0};
    ZSTD_outBuffer out = {dst, dstlen, 0};
    int rc = -QCOW2_ECORRUPT;

    if (!d)
        return -ENOMEM;
    /* a frame may not ask for a window beyond 2 clusters of 2 MiB */
    ZSTD_DCtx_setParameter(d, ZSTD_d_windowLogMax, 22);
    while (out.pos < out.size) {
        size_t last_in = in.pos, last_out = out.pos;
        size_t zr = ZSTD_decompressStream(d, &out, &in);
        if (ZSTD_isError(zr))
            break;
        if (out.pos == out.size) {
            rc = 0;
            break;
        }
        if (in.pos == last_in && out.pos == last_out)
            break; /* no progress: truncated input */
    }
    ZSTD_freeDCtx(d);
    return rc;
}

int q2_decompress(unsigned type, const uint8_t *src, size_t srclen,
                  uint8_t *dst, size_t dstlen)
{
    switch (type) {
    case Q2_COMPRESSION_ZLIB:
        return inflate_raw(src, srclen, dst, dstlen);
    case Q2_COMPRESSION_ZSTD:
        return unzstd(src, srclen, dst, dstlen);
    default:
        return -ENOTSUP;
    }
}
