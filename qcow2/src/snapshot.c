/*
 * snapshot.c - the internal snapshot table.
 *
 * nb_snapshots variable-length entries from snapshots_offset, each starting
 * 8-byte aligned:
 *
 *   OFFSET  SIZE  FIELD
 *       0     8   l1_table_offset      cluster aligned
 *       8     4   l1_size              entries
 *      12     2   id_str_size
 *      14     2   name_size
 *      16     4   date_sec
 *      20     4   date_nsec
 *      24     8   vm_clock_nsec
 *      32     4   vm_state_size        32-bit
 *      36     4   extra_data_size      <= 1024 (QEMU)
 *      40     n   extra data: [0] u64 vm_state_size, [8] u64 disk_size,
 *                 [16] u64 icount (each present if extra is long enough)
 *   40+n   id_str_size bytes of id, then name_size bytes of name, padding
 *
 * Invariants on success: every entry lies inside buf; every snapshot L1
 * table is cluster aligned and within QEMU's 32 MiB cap (whether it lies in
 * the file is checked when the snapshot is selected).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "endian.h"
#include "format.h"
#include "internal.h"

static char *dup_name(const uint8_t *p, size_t n)
{
    char *s = malloc(n + 1);
    size_t i;

    if (!s)
        return NULL;
    for (i = 0; i < n; i++)
        s[i] = p[i] ? (char)p[i] : '?';
    s[n] = '\0';
    return s;
}

void q2_snap_free(struct q2_snapshot *s, unsigned n)
{
    unsigned i;

    if (!s)
        return;
    for (i = 0; i < n; i++) {
        free(s[i].id);
        free(s[i].name);
        free(s[i].extra);
    }
    free(s);
}

int q2_snap_parse(const uint8_t *buf, size_t len, uint64_t table_off,
                  uint32_t count, unsigned version, uint64_t image_size,
                  struct q2_snapshot **out, char *err, size_t errlen)
{
    struct q2_snapshot *snaps;
    size_t off = 0;
    uint32_t i;

    (void)version;
    snaps = calloc(count ? count : 1, sizeof(*snaps));
    if (!snaps)
        return -ENOMEM;
    for (i = 0; i < count; i++) {
        struct q2_snapshot *s = &snaps[i];
        struct qcow2_snapshot *p = &s->pub;
        uint64_t eoff = table_off + off;
        uint32_t extra;
        uint16_t id_len, name_len;

        off = (off + 7) & ~(size_t)7;
        eoff = table_off + off;
        if (off > len || len - off < Q2_SNAP_FIXED_LEN) {
            snprintf(err, errlen, "snapshot table entry %" PRIu32 " runs "
                     "past the end of the table (at offset 0x%" PRIx64 ")",
                     i, eoff);
            goto corrupt;
        }
        p->entry_offset = eoff;
        p->l1_table_offset = q2_load_be64(buf + off);
        p->l1_size = q2_load_be32(buf + off + 8);
        id_len = q2_load_be16(buf + off + 12);
        name_len = q2_load_be16(buf + off + 14);
        p->date_sec = q2_load_be32(buf + off + 16);
        p->date_nsec = q2_load_be32(buf + off + 20);
        p->vm_clock_nsec = q2_load_be64(buf + off + 24);
        p->vm_state_size32 = q2_load_be32(buf + off + 32);
        p->vm_state_size = p->vm_state_size32;
        extra = q2_load_be32(buf + off + 36);
        if (extra > Q2_MAX_SNAPSHOT_EXTRA) {
            snprintf(err, errlen, "snapshot %" PRIu32 ": extra data of %"
                     PRIu32 " bytes is too large (at offset 0x%" PRIx64 ")",
                     i, extra, eoff + 36);
            goto corrupt;
        }
        off += Q2_SNAP_FIXED_LEN;
        if (len - off < (uint64_t)extra + id_len + name_len) {
            snprintf(err, errlen, "snapshot table entry %" PRIu32 " runs "
                     "past the end of the table (at offset 0x%" PRIx64 ")",
                     i, eoff);
            goto corrupt;
        }
        p->extra_data_size = extra;
        if (extra) {
            s->extra = malloc(extra);
            if (!s->extra)
                goto nomem;
            memcpy(s->extra, buf + off, extra);
            p->extra_data = s->extra;
        }
        if (extra >= Q2_SNAP_EXTRA_VMSTATE)
            p->vm_state_size = q2_load_be64(buf + off);
        if (extra >= Q2_SNAP_EXTRA_DISK) {
            p->has_disk_size = true;
            p->disk_size = q2_load_be64(buf + off + 8);
        } else {
            p->disk_size = image_size;
        }
        if (extra >= Q2_SNAP_EXTRA_ICOUNT) {
            p->has_icount = true;
            p->icount = q2_load_be64(buf + off + 16);
        }
        off += extra;
        s->id = dup_name(buf + off, id_len);
        off += id_len;
        s->name = dup_name(buf + off, name_len);
        off += name_len;
        if (!s->id || !s->name)
            goto nomem;
        p->id = s->id;
        p->name = s->name;
        if ((uint64_t)p->l1_size * 8 > Q2_MAX_L1_BYTES) {
            snprintf(err, errlen, "snapshot %s: L1 table too large: %" PRIu32
                     " entries (at offset 0x%" PRIx64 ")", s->id, p->l1_size,
                     eoff + 8);
            goto corrupt;
        }
        if (p->l1_table_offset & 511) {
            snprintf(err, errlen, "snapshot %s: L1 table offset 0x%" PRIx64
                     " is not aligned (at offset 0x%" PRIx64 ")", s->id,
                     p->l1_table_offset, eoff);
            goto corrupt;
        }
    }
    *out = snaps;
    return 0;
corrupt:
    q2_snap_free(snaps, count);
    return -QCOW2_ECORRUPT;
nomem:
    q2_snap_free(snaps, count);
    return -ENOMEM;
}

uint64_t q2_snap_table_len(const struct q2_snapshot *s, unsigned n,
                           uint64_t table_off)
{
    const struct qcow2_snapshot *last;

    if (n == 0)
        return 0;
    last = &s[n - 1].pub;
    return last->entry_offset + Q2_SNAP_FIXED_LEN + last->extra_data_size +
           strlen(last->id) + strlen(last->name) - table_off;
}

/*
 * The table rewritten with complete extra data (what QEMU writes when its
 * check repairs version 3 entries with less than 16 bytes of it): every
 * entry gets max(24, extra_data_size) bytes of extra data: the 64-bit VM
 * state size (from the old extra data, else from the 32-bit field), the
 * disk size (else image_size), the icount (else -1), then the old bytes
 * past 24 unchanged.  The 32-bit VM state size becomes the 64-bit one
 * where that fits, 0 otherwise; ids, names and every other field are
 * copied byte for byte.  in[0..len) holds the n entries (as parsed by
 * q2_snap_parse, so each lies inside it).
 */
int q2_snap_complete(const uint8_t *in, size_t len, uint32_t n,
                     uint64_t image_size, uint8_t **out, size_t *out_len)
{
    size_t off = 0, o = 0, cap;
    uint8_t *b;
    uint32_t i;

    /* each entry grows by at most 24 bytes of extra data and 7 of padding */
    if (n > (SIZE_MAX - len) / 32)
        return -EFBIG;
    cap = len + (size_t)n * 32;
    b = calloc(1, cap ? cap : 1);
    if (!b)
        return -ENOMEM;
    for (i = 0; i < n; i++) {
        const uint8_t *e;
        uint32_t extra, nextra;
        size_t names;
        uint64_t vms;

        off = (off + 7) & ~(size_t)7;
        o = (o + 7) & ~(size_t)7;
        if (off > len || len - off < Q2_SNAP_FIXED_LEN)
            goto corrupt;
        e = in + off;
        extra = q2_load_be32(e + 36);
        names = (size_t)q2_load_be16(e + 12) + q2_load_be16(e + 14);
        if (len - off - Q2_SNAP_FIXED_LEN < (uint64_t)extra + names)
            goto corrupt;
        nextra = extra > Q2_SNAP_EXTRA_ICOUNT ? extra : Q2_SNAP_EXTRA_ICOUNT;
        if (cap - o < Q2_SNAP_FIXED_LEN + (uint64_t)nextra + names)
            goto corrupt; /* cannot happen: cap counts the growth */
        memcpy(b + o, e, Q2_SNAP_FIXED_LEN);
        vms = extra >= Q2_SNAP_EXTRA_VMSTATE
                  ? q2_load_be64(e + Q2_SNAP_FIXED_LEN)
                  : q2_load_be32(e + 32);
        q2_store_be32(b + o + 32, vms <= UINT32_MAX ? (uint32_t)vms : 0);
        q2_store_be32(b + o + 36, nextra);
        q2_store_be64(b + o + 40, vms);
        q2_store_be64(b + o + 48, extra >= Q2_SNAP_EXTRA_DISK
                                      ? q2_load_be64(e + 48) : image_size);
        q2_store_be64(b + o + 56, extra >= Q2_SNAP_EXTRA_ICOUNT
                                      ? q2_load_be64(e + 56) : UINT64_MAX);
        if (extra > Q2_SNAP_EXTRA_ICOUNT)
            memcpy(b + o + 64, e + 64, extra - Q2_SNAP_EXTRA_ICOUNT);
        memcpy(b + o + Q2_SNAP_FIXED_LEN + nextra,
               e + Q2_SNAP_FIXED_LEN + extra, names);
        off += Q2_SNAP_FIXED_LEN + extra + names;
        o += Q2_SNAP_FIXED_LEN + nextra + names;
    }
    *out = b;
    *out_len = o;
    return 0;
corrupt:
    free(b);
    return -QCOW2_ECORRUPT;
}
