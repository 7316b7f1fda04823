/*
 * err.c - error codes and per-handle messages.
 *
 * Detection is one line: `return q2_err(img, -QCOW2_ECORRUPT, "...", ...)`.
 * The first message of a failing call is kept (callers up the stack may add
 * nothing that hides the original cause); public entry points clear it.
 */
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
