/*
 * fuzz_check.c - qcow2_check over an image given as bytes: a read-only
 * check, then a full repair (QCOW2_CHECK_FIX_ALL, as qchain-check -r all)
 * on a private in-memory copy, then an independent check of the repaired
 * bytes through a fresh handle.
 *
 * Invariants asserted: never a crash, a hang or a leak; a read-only check
 * writes nothing; what the repair's own recheck reports (corruptions,
 * leaks, check errors) is what a fresh check of the repaired image finds,
 * so a repair that reports a clean image left a clean image on "disk".
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_helpers.h"
#include "internal.h" /* q2_io_mem_data */
#include "qcow2/qcow2.h"

#define MAX_INPUT (1u << 20)

static int open_mem(const uint8_t *data, size_t size, unsigned flags,
                    struct qcow2_image **out, struct qcow2_io *io_out)
{
    struct qcow2_open_opts oo = {.size = sizeof(oo),
                                 .flags = flags | QCOW2_OPEN_NO_BACKING,
                                 .format = "qcow2",
                                 .cache_bytes = 4096};
    struct qcow2_image *img;
    struct qcow2_io io;

    if (qcow2_io_open_mem(data, size, &io) < 0)
        return -ENOMEM;
    if (io_out)
        *io_out = io;
    img = qcow2_new();
    if (!img) {
        io.close(io.ctx);
        return -ENOMEM;
    }
    if (qcow2_open_io(img, &io, "c.qcow2", &oo) < 0) {
        qcow2_close(img);
        return -EINVAL;
    }
    *out = img;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct qcow2_check_opts fix = {.size = sizeof(fix),
                                   .flags = QCOW2_CHECK_FIX_ALL};
    struct qcow2_check_result r1, r2, r3;
    struct qcow2_image *img;
    struct qcow2_io io;
    uint8_t *copy = NULL;
    size_t len;
    int rc1, rc2, rc3;

    if (size > MAX_INPUT)
        return 0;
    /* read-only: nothing may change */
    if (open_mem(data, size, 0, &img, &io) < 0)
        return 0;
    rc1 = qcow2_check(img, NULL, &r1);
    {
        const uint8_t *mem = q2_io_mem_data(&io, &len);
        FUZZ_ASSERT(len == size && (size == 0 || memcmp(mem, data, size) == 0));
    }
    if (rc1 == 0) {
        FUZZ_ASSERT(r1.corruptions_fixed == 0 && r1.leaks_fixed == 0);
        FUZZ_ASSERT(r1.image_end_offset > 0);
    }
    qcow2_close(img);

    /* repair a private copy */
    if (open_mem(data, size, QCOW2_OPEN_RDWR | QCOW2_OPEN_CHECK, &img,
                 &io) < 0)
        return 0;
    rc2 = qcow2_check(img, &fix, &r2);
    if (rc2 == 0) {
        const uint8_t *mem = q2_io_mem_data(&io, &len);
        copy = malloc(len ? len : 1);
        FUZZ_ASSERT(copy != NULL);
        memcpy(copy, mem, len);
    }
    qcow2_close(img);
    if (rc2 < 0)
        return 0;
    if (r2.check_errors == 0 && r2.corruptions == 0 && r2.leaks == 0) {
        /* the repair says clean: a fresh check must agree */
        FUZZ_ASSERT(open_mem(copy, len, 0, &img, NULL) == 0);
        rc3 = qcow2_check(img, NULL, &r3);
        FUZZ_ASSERT(rc3 == 0);
        FUZZ_ASSERT(r3.check_errors == 0);
        FUZZ_ASSERT(r3.corruptions == 0);
        FUZZ_ASSERT(r3.leaks == 0);
        qcow2_close(img);
    }
    free(copy);
    return 0;
}
