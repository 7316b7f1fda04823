/*
 * err.c - error codes and per-handle messages.
 *
 * Detection is one line: `return q2_err(img, -QCOW2_ECORRUPT, "...", ...)`.
 * The first message of a failing call is kept (callers up the stack may add
 * nothing that hides the original cause); public entry points clear it.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

const char *qcow2_strerror(int err)
{
    if (err < 0)
        err = -err;
    if (err == QCOW2_ECORRUPT)
        return "image is corrupt";
    return strerror(err);
}

const char *qcow2_errmsg(const struct qcow2_image *img)
{
    if (!img || img->magic != Q2_HANDLE_MAGIC)
        return "invalid handle";
    return img->errmsg;
}

int q2_err(struct qcow2_image *img, int err, const char *fmt, ...)
{
    if (img && !img->err_set) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(img->errmsg, sizeof(img->errmsg), fmt, ap);
        va_end(ap);
        img->err_set = true;
    }
    return err;
}

void q2_err_clear(struct qcow2_image *img)
{
    img->err_set = false;
    img->errmsg[0] = '\0';
}

void q2_warn(struct qcow2_image *img, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    if (!img->opts.warn)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    img->opts.warn(img->opts.warn_ctx, msg);
}

int q2_opts_copy(void *dst, size_t dst_size, const void *src)
{
    size_t n;

    memset(dst, 0, dst_size);
    *(size_t *)dst = dst_size;
    if (!src)
        return 0;
    memcpy(&n, src, sizeof(n));
    if (n < sizeof(size_t))
        return -EINVAL; /* not even the size field: an uninitialised struct */
    memcpy((char *)dst + sizeof(size_t), (const char *)src + sizeof(size_t),
           (n < dst_size ? n : dst_size) - sizeof(size_t));
    return 0;
}
