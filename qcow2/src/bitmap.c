/*
 * bitmap.c - the persistent bitmap directory (extension 0x23852875).
 *
 * Entries of bitmap_directory_size bytes in total, each padded to 8:
 *
 *   OFFSET  SIZE  FIELD
 *       0     8   bitmap_table_offset   cluster aligned
 *       8     4   bitmap_table_size     entries
 *      12     4   flags                 0 in_use, 1 auto, 2 extra_data_compatible
 *      16     1   type                  1 = dirty tracking
 *      17     1   granularity_bits      9..31 (QEMU)
 *      18     2   name_size             1..1023
 *      20     4   extra_data_size
 *      24     n   extra data, then the name, then padding
 *
 * Only read for reporting here; the entry fields are checked the way QEMU's
 * check_dir_entry() checks them, and the entries must fill the directory.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "endian.h"
#include "format.h"
#include "internal.h"

void q2_bitmap_free(struct q2_bitmap *b, unsigned n)
{
    unsigned i;

    if (!b)
        return;
    for (i = 0; i < n; i++)
        free(b[i].name);
    free(b);
}

int q2_bitmap_parse(const uint8_t *buf, size_t len, uint64_t dir_off,
                    uint32_t count, unsigned cluster_bits,
                    struct q2_bitmap **out, char *err, size_t errlen)
{
    struct q2_bitmap *bms = calloc(count ? count : 1, sizeof(*bms));
    size_t off = 0;
    uint32_t i;
    uint64_t cs = 1ull << cluster_bits;

    if (!bms)
        return -ENOMEM;
    for (i = 0; i < count; i++) {
        struct qcow2_bitmap *p = &bms[i].pub;
        uint64_t eoff = dir_off + off;
        uint16_t name_len;
        size_t k;

        if (len - off < Q2_BITMAP_ENTRY_FIXED) {
            snprintf(err, errlen, "bitmap directory entry %" PRIu32 " runs "
                     "past the directory (at offset 0x%" PRIx64 ")", i, eoff);
            goto corrupt;
        }
        p->entry_offset = eoff;
        p->table_offset = q2_load_be64(buf + off);
        p->table_size = q2_load_be32(buf + off + 8);
        p->flags = q2_load_be32(buf + off + 12);
        p->type = buf[off + 16];
        p->granularity_bits = buf[off + 17];
        name_len = q2_load_be16(buf + off + 18);
        p->extra_data_size = q2_load_be32(buf + off + 20);
        if (name_len == 0 || name_len > Q2_MAX_BITMAP_NAME ||
            p->extra_data_size > len ||
            len - off - Q2_BITMAP_ENTRY_FIXED <
                (uint64_t)p->extra_data_size + name_len) {
            snprintf(err, errlen, "bitmap directory entry %" PRIu32 " is "
                     "malformed (at offset 0x%" PRIx64 ")", i, eoff);
            goto corrupt;
        }
        if (p->table_offset == 0 || (p->table_offset & (cs - 1)) ||
            p->table_size == 0 || p->granularity_bits < 9 ||
            p->granularity_bits > 31 || p->type != 1) {
            snprintf(err, errlen, "bitmap directory entry %" PRIu32 " has "
                     "an invalid table, type or granularity "
                     "(at offset 0x%" PRIx64 ")", i, eoff);
            goto corrupt;
        }
        bms[i].name = malloc((size_t)name_len + 1);
        if (!bms[i].name)
            goto nomem;
        for (k = 0; k < name_len; k++) {
            uint8_t c = buf[off + Q2_BITMAP_ENTRY_FIXED +
                            p->extra_data_size + k];
            bms[i].name[k] = c ? (char)c : '?';
        }
        bms[i].name[name_len] = '\0';
        p->name = bms[i].name;
        off += Q2_BITMAP_ENTRY_FIXED + p->extra_data_size + name_len;
        off = (off + 7) & ~(size_t)7;
        if (off > len) {
            snprintf(err, errlen, "bitmap directory entry %" PRIu32 " runs "
                     "past the directory (at offset 0x%" PRIx64 ")", i, eoff);
            goto corrupt;
        }
    }
    if (off != len) {
        snprintf(err, errlen, "broken bitmap directory: entries fill %zu of "
                 "%zu bytes (at offset 0x%" PRIx64 ")", off, len, dir_off);
        goto corrupt;
    }
    *out = bms;
    return 0;
corrupt:
    q2_bitmap_free(bms, count);
    return -QCOW2_ECORRUPT;
nomem:
    q2_bitmap_free(bms, count);
    return -ENOMEM;
}
