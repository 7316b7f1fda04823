/*
 * fuzz_header.c - q2_hdr_parse over arbitrary bytes.
 *
 * The input is the start of an image file and also the whole file
 * (file_size = size), so every table bound is checked against the input.
 * After a successful parse the invariants header.c promises (its comment,
 * 1-4) must hold; they are what the rest of the library relies on without
 * checking again.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_helpers.h"
#include "internal.h"

#define MAX_INPUT (1u << 22) /* a header is one cluster, 2 MiB at most */

static void check_parsed(const struct q2_hdr_parsed *p, const uint8_t *data,
                         size_t size)
{
    const struct qcow2_header *h = &p->h;
    uint64_t cs;
    unsigned i;
    const int idx[5] = {p->ext_backing_format, p->ext_feature_table,
                        p->ext_bitmaps, p->ext_crypto, p->ext_data_file};

    FUZZ_ASSERT(h->version == 2 || h->version == 3);
    FUZZ_ASSERT(h->cluster_bits >= Q2_MIN_CLUSTER_BITS &&
                h->cluster_bits <= Q2_MAX_CLUSTER_BITS);
    FUZZ_ASSERT(h->refcount_order <= Q2_MAX_REFCOUNT_ORDER);
    FUZZ_ASSERT(h->crypt_method <= 2);
    FUZZ_ASSERT(h->compression_type <= 1);
    cs = 1ull << h->cluster_bits;
    FUZZ_ASSERT((h->l1_table_offset & (cs - 1)) == 0);
    FUZZ_ASSERT((h->refcount_table_offset & (cs - 1)) == 0);
    FUZZ_ASSERT(h->nb_snapshots == 0 ||
                ((h->snapshots_offset & (cs - 1)) == 0 &&
                 h->snapshots_offset < size));
    FUZZ_ASSERT((uint64_t)h->l1_size * 8 <= Q2_MAX_L1_BYTES);
    FUZZ_ASSERT(h->l1_size == 0 ||
                (h->l1_table_offset <= size &&
                 (uint64_t)h->l1_size * 8 <= size - h->l1_table_offset));
    FUZZ_ASSERT(h->header_length <= size && h->header_length <= cs);

    /* extensions lie inside the buffer and inside the first cluster */
    FUZZ_ASSERT(p->n_exts == 0 || p->exts != NULL);
    for (i = 0; i < p->n_exts; i++) {
        const struct q2_ext *e = &p->exts[i];
        FUZZ_ASSERT(e->off >= h->header_length);
        FUZZ_ASSERT(e->off + 8 + (uint64_t)e->len <= size);
        FUZZ_ASSERT(e->off + 8 + (uint64_t)e->len <= cs);
        FUZZ_ASSERT(e->data == data + e->off + 8);
    }
    for (i = 0; i < 5; i++)
        FUZZ_ASSERT(idx[i] >= -1 && idx[i] < (int)p->n_exts);

    /* the backing name lies inside the first cluster and the buffer */
    if (p->backing_name) {
        FUZZ_ASSERT(p->backing_name_len > 0 &&
                    p->backing_name_len <= Q2_MAX_BACKING_NAME);
        FUZZ_ASSERT(p->backing_name == data + h->backing_file_offset);
        FUZZ_ASSERT(h->backing_file_offset + p->backing_name_len <= size);
        FUZZ_ASSERT(h->backing_file_offset + p->backing_name_len <= cs);
    }

    /* the feature name lookup stays inside the table */
    if (h->incompatible_features) {
        char name[64];
        unsigned bit = (unsigned)__builtin_ctzll(h->incompatible_features);
        q2_hdr_feature_name(p, 0, bit, name, sizeof(name));
        FUZZ_ASSERT(strlen(name) < sizeof(name));
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct q2_hdr_parsed p;
    char err[256];
    uint8_t *copy;
    int rc;

    if (size > MAX_INPUT)
        return 0;
    /* an exact-size heap copy, so ASan sees any read past the input */
    copy = malloc(size ? size : 1);
    if (!copy)
        return 0;
    if (size)
        memcpy(copy, data, size);
    memset(&p, 0, sizeof(p));
    err[0] = '\0';
    rc = q2_hdr_parse(copy, size, size, &p, err, sizeof(err));
    if (rc == 0) {
        check_parsed(&p, copy, size);
        free(p.exts);
    } else {
        FUZZ_ASSERT(rc == -QCOW2_ECORRUPT || rc == -ENOTSUP ||
                    rc == -ENOMEM);
        FUZZ_ASSERT(memchr(err, '\0', sizeof(err)) != NULL);
        FUZZ_ASSERT(rc == -ENOMEM || err[0] != '\0');
    }
    free(copy);
    return 0;
}
