/*
 * check.c - consistency check and repair of a qcow2 image, with qemu-img
 * check's verdict and counters (QEMU 7.2, qcow2_co_check_locked).
 *
 * One pass counts the references every structure makes into an array of
 * one counter per host cluster (the file's size in clusters, plus one:
 * QEMU accepts a reference that ends less than a cluster past the end of
 * the file), checking entries on the way; a second loop compares each
 * counter with the stored refcount, one refcount block at a time.  In a
 * read-only check the COPIED flags of the active tables are checked during
 * the first pass against the stored refcounts (QEMU reads the active L2
 * tables a second time for this).
 *
 * Repairs follow QEMU's order: entries that can be fixed without guessing
 * are rewritten during the walk; then refcounts are set to the references
 * (in place, or by rebuilding the refcount structures when a referenced
 * cluster has none); then COPIED flags follow the new refcounts; then the
 * whole check runs again and its counters are the result.
 *
 * Every number read from the file is hostile: offsets are bounded by the
 * file size before anything is read, tables are read a cluster at a time,
 * and the table entries visited are budgeted.  Tables may be shared
 * (snapshots share L2 tables, and may name one L1 table; a crafted file
 * names one L2 table from all 4Mi entries of its L1), so a small file can
 * describe an unbounded walk: a table named again is not walked again at
 * once but counted, and walked once more at the end of the pass with that
 * count as the weight of everything it references and finds (the same
 * counters as one walk per reference: 2^40 references of l1-max-same-l2
 * counted in 3.8 s instead of a budget error after 17 s).  A table walked
 * a second time is walked quietly: its references and the counters count,
 * but its findings, reported on the first walk, are not reported again.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "endian.h"
#include "format.h"
#include "internal.h"

#define MAX_CHECK_CLUSTERS (1ull << 28) /* 1 GiB of counters */
/* Table entries (L1, L2, bitmap) a check may visit: this many walks of a
 * table as large as the file.  A table named again costs nothing until it
 * is walked once more with its weight, so every distinct table is walked
 * at most three times (first reference, weighted as active, weighted as a
 * snapshot's); what the budget still bounds is distinct tables overlapping
 * one another (snapshots naming 65536 different offsets of one 32 MiB L1
 * range).  At ~17 ns per visit that is ~0.14 s of CPU per MiB of file at
 * worst: well inside the 2 s per MiB tests/cli/bounds.sh allows, also for
 * sanitizer builds. */
#define BUDGET_WALKS 64
/* L1 tables are read this much at a time (at least a cluster) */
#define L1_CHUNK 65536
#define Q2_L2E_BITMAP_ALLOC 0xffffffffULL

/* Tables named again during a pass: key (a, b) -> the number of further
 * references (an open-addressing hash table; b == 0 marks a free slot).
 * Its size is bounded by the distinct tables, themselves bounded by the
 * file. */
struct again {
    struct again_slot { uint64_t a, b, n; } *slot;
    size_t cap, used;
};

struct chk {
    struct qcow2_image *img;
    const struct qcow2_check_opts *o;
    struct qcow2_check_result *r;
    uint64_t cs;
    uint64_t file_size;
    uint64_t file_clusters; /* the file's size in clusters */
    uint64_t nclusters;     /* counters: file_clusters + 1 */
    uint64_t used_clusters; /* highest counter touched + 1 */
    uint32_t *n;
    uint32_t max_count;     /* refcount_max, capped to the counter type */
    uint8_t *rt;            /* the refcount table */
    uint64_t rt_entries;
    uint8_t *l1buf, *l2buf; /* l2buf: one cluster; l1buf: one cluster
                               or L1_CHUNK, whichever is larger */
    size_t l1buf_len;
    uint64_t budget;        /* L1, L2 and bitmap table entries left */
    uint8_t *walked;        /* per cluster: bit 0 walked as an L2 table,
                               bit 1 as a bitmap table, bit 2 as an L2
                               table by copied_pass (this run) */
    struct again l1_again;  /* (L1 offset, size + 1) of snapshots */
    struct again l2_again;  /* (L2 offset << 1 | active, 1) */
    uint64_t weight;        /* references the table being walked stands
                               for: what it counts and finds counts this
                               many times (1 outside weighted walks) */
    bool quiet;             /* revisiting a table: findings not reported */
    bool fix_all, fix_leaks;
    bool copied_inline;     /* COPIED checked while walking */
    bool recheck;
    bool rebuild;           /* the refcount structures must be rebuilt */
    uint64_t pre_refblocks; /* corruptions before the refcount blocks */
    uint32_t snap_incomplete; /* v3 entries with < 16 bytes of extra data */
    int err;                /* first fatal error */
    bool refs_only;         /* q2_refs_count: no refcount structures, and
                               invalid references collected below */
    uint64_t invalid;       /* references a rebuild cannot trust */
    char invalid_msg[256];  /* the first of them */
};

/* ------------------------------------------------------------ findings */

__attribute__((format(printf, 6, 0)))
static void emit(struct chk *c, enum qcow2_check_severity sev,
                 const char *kind, uint64_t off, uint64_t len,
                 const char *fmt, va_list ap)
{
    struct qcow2_check_finding f;
    char msg[256];

    if (!c->o || !c->o->finding || c->quiet)
        return;
    vsnprintf(msg, sizeof(msg), fmt, ap);
    f.kind = kind;
    f.severity = sev;
    f.offset = off;
    f.length = len;
    f.recheck = c->recheck;
    f.message = msg;
    c->o->finding(c->o->ctx, &f);
}

/* A corruption that makes a reference untrustworthy for a rebuild (the
 * others: flags, subcluster bitmaps, incomplete snapshot entries, are
 * kept as they are by a rebuild). */
static bool invalid_kind(const char *kind)
{
    return strcmp(kind, "copied-flag") && strcmp(kind, "compressed-copied") &&
           strcmp(kind, "subcluster-bitmap") &&
           strcmp(kind, "snapshot-incomplete");
}

__attribute__((format(printf, 4, 5)))
static void corrupt(struct chk *c, const char *kind, uint64_t off,
                    const char *fmt, ...)
{
    va_list ap;

    if (c->refs_only && invalid_kind(kind) && c->invalid++ == 0) {
        va_start(ap, fmt);
        vsnprintf(c->invalid_msg, sizeof(c->invalid_msg), fmt, ap);
        va_end(ap);
    }
    c->r->corruptions += c->weight;
    va_start(ap, fmt);
    emit(c, QCOW2_CHECK_CORRUPTION, kind, off, 0, fmt, ap);
    va_end(ap);
}

__attribute__((format(printf, 4, 5)))
static void repaired(struct chk *c, const char *kind, uint64_t off,
                     const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    emit(c, QCOW2_CHECK_REPAIRED, kind, off, 0, fmt, ap);
    va_end(ap);
}

__attribute__((format(printf, 5, 6)))
static void leak(struct chk *c, const char *kind, uint64_t off, uint64_t len,
                 const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    emit(c, QCOW2_CHECK_LEAK, kind, off, len, fmt, ap);
    va_end(ap);
}

__attribute__((format(printf, 4, 5)))
static void check_error(struct chk *c, const char *kind, uint64_t off,
                        const char *fmt, ...)
{
    va_list ap;

    c->r->check_errors++;
    va_start(ap, fmt);
    emit(c, QCOW2_CHECK_ERROR, kind, off, 0, fmt, ap);
    va_end(ap);
}

/* ------------------------------------------------------------ counting */

/* Does [off, off+len) end less than a cluster past the end of the file
 * (QEMU's rule: the last cluster may be partly allocated)? */
static bool within_file(const struct chk *c, uint64_t off, uint64_t len)
{
    uint64_t limit = c->file_size + c->cs - 1; /* exclusive end allowed */

    return off < limit && len <= limit - off;
}

/* Count one reference (c->weight of them) to every cluster [off, off+len)
 * touches.  Returns false (a corruption) when the range lies past the end
 * of the file. */
static bool inc(struct chk *c, uint64_t off, uint64_t len, const char *what)
{
    uint64_t i, last, w = c->weight;

    if (len == 0)
        return true;
    if (!within_file(c, off, len)) {
        corrupt(c, "past-end-of-file", off, "%s at 0x%" PRIx64 " (%" PRIu64
                " bytes) lies past the end of the file", what, off, len);
        return false;
    }
    last = (off + len - 1) / c->cs;
    for (i = off / c->cs; i <= last; i++) {
        uint64_t room = c->max_count - c->n[i]; /* n[i] <= max_count */
        if (w > room) {
            /* every reference past the maximum is one corruption */
            c->weight = w - room;
            corrupt(c, "refcount-overflow", i * c->cs, "cluster 0x%" PRIx64
                    " has more references than %u-bit refcounts hold", i * c->cs,
                    1u << c->img->hp.h.refcount_order);
            c->weight = w;
            c->n[i] = c->max_count;
            continue;
        }
        c->n[i] += (uint32_t)w;
    }
    if (last + 1 > c->used_clusters)
        c->used_clusters = last + 1;
    return true;
}

/* Stored refcount of a cluster, read the way QEMU reads it: no table entry
 * or block means 0; an unaligned block cannot be read. */
static int get_rc(struct chk *c, uint64_t cluster, uint64_t *out)
{
    struct qcow2_image *img = c->img;
    unsigned rb_bits = img->cluster_bits + 3 - img->hp.h.refcount_order;
    uint64_t idx = cluster >> rb_bits, rb;
    const uint8_t *page;
    int rc;

    *out = 0;
    if (idx >= c->rt_entries)
        return 0;
    rb = q2_load_be64(c->rt + idx * 8) & Q2_REFT_OFFSET_MASK;
    if (rb == 0)
        return 0;
    if (rb & (c->cs - 1))
        return -QCOW2_ECORRUPT;
    rc = q2_cache_get(&img->cache, &img->io, rb, &page);
    if (rc < 0)
        return rc;
    *out = q2_rc_entry_get(page, img->hp.h.refcount_order,
                           cluster & ((1ull << rb_bits) - 1));
    return 0;
}

/* Set a stored refcount (through the cache; q2_flush writes it). */
static int set_rc(struct chk *c, uint64_t cluster, uint64_t v)
{
    struct qcow2_image *img = c->img;
    unsigned rb_bits = img->cluster_bits + 3 - img->hp.h.refcount_order;
    uint64_t idx = cluster >> rb_bits, rb;
    uint8_t *page;
    int rc;

    if (idx >= c->rt_entries)
        return -QCOW2_ECORRUPT;
    rb = q2_load_be64(c->rt + idx * 8) & Q2_REFT_OFFSET_MASK;
    if (rb == 0 || (rb & (c->cs - 1)))
        return -QCOW2_ECORRUPT;
    rc = q2_cache_get_mut(&img->cache, &img->io, rb, Q2_PAGE_REFBLOCK, &page);
    if (rc < 0)
        return rc;
    q2_rc_entry_set(page, img->hp.h.refcount_order,
                    cluster & ((1ull << rb_bits) - 1), v);
    return 0;
}

static bool overlaps(uint64_t off, uint64_t a, uint64_t len)
{
    return len && off >= a && off - a < len;
}

/* May a repair rewrite the table entry at off?  Not when the table lies
 * over a structure open depends on (a table overlapping the header, the
 * snapshot table, the bitmap directory or the LUKS header is unsound
 * itself: its entries are left alone and stay reported). */
static bool may_write(const struct chk *c, uint64_t off)
{
    const struct qcow2_image *img = c->img;
    const struct qcow2_header *h = &img->hp.h;

    if (off < c->cs)
        return false;
    if (img->n_snaps) {
        const struct qcow2_snapshot *l = &img->snaps[img->n_snaps - 1].pub;
        if (overlaps(off, h->snapshots_offset,
                     l->entry_offset + Q2_SNAP_FIXED_LEN + l->extra_data_size +
                         strlen(l->id) + strlen(l->name) - h->snapshots_offset))
            return false;
    }
    if (img->n_bitmaps) {
        const struct q2_ext *e = &img->hp.exts[img->hp.ext_bitmaps];
        if (overlaps(off, q2_load_be64(e->data + 16), q2_load_be64(e->data + 8)))
            return false;
    }
    if (img->hp.ext_crypto >= 0) {
        const struct q2_ext *e = &img->hp.exts[img->hp.ext_crypto];
        if (e->len >= 16 &&
            overlaps(off, q2_load_be64(e->data), q2_load_be64(e->data + 8)))
            return false;
    }
    return true;
}

static int write_u64(struct chk *c, uint64_t off, uint64_t v)
{
    uint8_t b[8];
    int64_t n;

    q2_store_be64(b, v);
    n = c->img->io.pwrite(c->img->io.ctx, b, 8, off);
    if (n < 0)
        return q2_err(c->img, (int)n, "cannot write at offset 0x%" PRIx64
                      ": %s", off, qcow2_strerror((int)n));
    return 0;
}

/* The entry a dropped reference becomes: it read as zeros (past the end
 * of the file), so a zero cluster keeps the guest view; version 2 has no
 * zero clusters. */
static uint64_t zero_entry(const struct chk *c)
{
    return c->img->hp.h.version >= 3 && !c->img->extended_l2 ? Q2_OFLAG_ZERO
                                                              : 0;
}

/* COPIED of an active entry against the stored refcount (refcount 1 set,
 * anything else clear).  Returns 0 or a fatal error. */
static int check_copied(struct chk *c, uint64_t entry, uint64_t entry_off,
                        uint64_t target, bool is_l1, bool fix)
{
    uint64_t rc = 1, want;
    int r;

    if (is_l1 || !c->img->external_data) {
        if (get_rc(c, target / c->cs, &rc) < 0)
            return 0; /* reported by the comparison */
    }
    if ((rc == 1) == ((entry & Q2_OFLAG_COPIED) != 0))
        return 0;
    want = rc == 1 ? entry | Q2_OFLAG_COPIED : entry & ~Q2_OFLAG_COPIED;
    if (!fix || !may_write(c, entry_off)) {
        corrupt(c, "copied-flag", entry_off, "%s entry 0x%016" PRIx64 " at "
                "0x%" PRIx64 ": COPIED flag %s but the refcount of 0x%" PRIx64
                " is %" PRIu64, is_l1 ? "L1" : "L2", entry, entry_off,
                (entry & Q2_OFLAG_COPIED) ? "set" : "clear", target, rc);
        return 0;
    }
    r = write_u64(c, entry_off, want);
    if (r < 0)
        return r;
    c->r->corruptions_fixed++;
    repaired(c, "copied-flag", entry_off, "%s entry at 0x%" PRIx64 ": 0x%016"
             PRIx64 " -> 0x%016" PRIx64 " (refcount %" PRIu64 ")",
             is_l1 ? "L1" : "L2", entry_off, entry, want, rc);
    return 0;
}

static int read_cluster(struct chk *c, uint8_t *buf, uint64_t off)
{
    int64_t n = q2_pread_full(&c->img->io, buf, c->cs, off);

    if (n < 0)
        return q2_err(c->img, (int)n, "cannot read at offset 0x%" PRIx64
                      ": %s", off, qcow2_strerror((int)n));
    return 0;
}

/* Has the table at off been walked before in this run (as kind bit
 * `bit`)?  Marks it walked. */
static bool revisit(struct chk *c, uint64_t off, unsigned bit)
{
    uint64_t i = off / c->cs;
    bool seen;

    if (i >= c->nclusters)
        return false;
    seen = (c->walked[i] & bit) != 0;
    c->walked[i] |= (uint8_t)bit;
    return seen;
}

static size_t again_hash(uint64_t a, uint64_t b, size_t cap)
{
    uint64_t h = a * 0x9e3779b97f4a7c15ull ^ b * 0xc2b2ae3d27d4eb4full;

    return (size_t)(h ^ (h >> 29)) & (cap - 1);
}

/* The slot of key (a, b), b != 0, inserted with n = 0 if it is new; NULL
 * when memory runs out. */
static struct again_slot *again_get(struct again *t, uint64_t a, uint64_t b)
{
    struct again_slot *s;
    size_t i;

    if (2 * (t->used + 1) > t->cap) {
        size_t cap = t->cap ? 2 * t->cap : 64, k;
        struct again_slot *ns = calloc(cap, sizeof(*ns));
        if (!ns)
            return NULL;
        for (k = 0; k < t->cap; k++) {
            if (!t->slot[k].b)
                continue;
            for (i = again_hash(t->slot[k].a, t->slot[k].b, cap); ns[i].b;
                 i = (i + 1) & (cap - 1))
                ;
            ns[i] = t->slot[k];
        }
        free(t->slot);
        t->slot = ns;
        t->cap = cap;
    }
    for (i = again_hash(a, b, t->cap);; i = (i + 1) & (t->cap - 1)) {
        s = &t->slot[i];
        if (s->b == b && s->a == a)
            return s;
        if (!s->b)
            break;
    }
    s->a = a;
    s->b = b;
    s->n = 0;
    t->used++;
    return s;
}

static void again_clear(struct again *t)
{
    free(t->slot);
    memset(t, 0, sizeof(*t));
}

/* Budget `entries` table entries for a walk of the table at off. */
static int spend(struct chk *c, uint64_t entries, const char *what,
                 uint64_t off)
{
    if (c->budget < entries)
        return q2_err(c->img, -E2BIG, "the tables describe too many %s "
                      "entries to check (%s at 0x%" PRIx64 ")", what, what,
                      off);
    c->budget -= entries;
    return 0;
}

static int walk_l2_entries(struct chk *c, uint64_t l2_off, bool active);

/* Walk the L2 table at l2_off now (with c->weight and c->quiet). */
static int walk_l2_now(struct chk *c, uint64_t l2_off, bool active)
{
    int rc = spend(c, 1u << c->img->l2_bits, "L2 table", l2_off);

    if (rc == 0)
        rc = read_cluster(c, c->l2buf, l2_off);
    if (rc == 0)
        rc = walk_l2_entries(c, l2_off, active);
    return rc;
}

/* One L2 table: entries checked and their clusters counted; a table walked
 * before in this run only counted, for walk_l2_again. */
static int walk_l2(struct chk *c, uint64_t l2_off, bool active)
{
    struct again_slot *s;

    if (!revisit(c, l2_off, 1))
        return walk_l2_now(c, l2_off, active);
    s = again_get(&c->l2_again, l2_off << 1 | active, 1);
    if (!s)
        return -ENOMEM;
    s->n += c->weight;
    return 0;
}

/* The L2 tables named again during the pass, each walked once more
 * (quietly) with its further references as weight. */
static int walk_l2_again(struct chk *c)
{
    struct again *t = &c->l2_again;
    size_t i;
    int rc = 0;

    c->quiet = true;
    for (i = 0; i < t->cap && rc == 0; i++) {
        if (!t->slot[i].b)
            continue;
        c->weight = t->slot[i].n;
        rc = walk_l2_now(c, t->slot[i].a >> 1, t->slot[i].a & 1);
    }
    c->weight = 1;
    c->quiet = false;
    again_clear(t);
    return rc;
}

/* The first entry from k on (of `entries` of elen bytes) that is not all
 * zero bytes, or entries. */
static unsigned nonzero_entry(const uint8_t *l2, unsigned k, unsigned entries,
                              size_t elen)
{
    return k + (unsigned)(q2_zero_prefix(l2 + k * elen, (entries - k) * elen) /
                          elen);
}

static int walk_l2_entries(struct chk *c, uint64_t l2_off, bool active)
{
    struct qcow2_image *img = c->img;
    unsigned entries = 1u << img->l2_bits, k;
    size_t elen = img->l2_entry_len;
    uint64_t next = 0;
    uint8_t *l2 = c->l2buf;
    int rc;

    /* all-zero entries are unallocated clusters, nothing to check or
     * count: only the others are visited (a sparse image's are few) */
    for (k = nonzero_entry(l2, 0, entries, elen); k < entries;
         k = nonzero_entry(l2, k + 1, entries, elen)) {
        uint64_t eoff = l2_off + (uint64_t)k * img->l2_entry_len;
        uint64_t e = q2_load_be64(l2 + (size_t)k * img->l2_entry_len);
        uint64_t bm = img->extended_l2
                          ? q2_load_be64(l2 + (size_t)k * 16 + 8) : 0;
        uint64_t off = e & Q2_L2E_OFFSET_MASK;
        bool zero = !img->extended_l2 && (e & Q2_OFLAG_ZERO);

        if (e & Q2_OFLAG_COMPRESSED) {
            uint64_t coff = e & img->coffset_mask;
            uint64_t nb = ((e >> img->csize_shift) & img->csize_mask) + 1;
            uint64_t csize = nb * 512 - (coff & 511);
            if (e & Q2_OFLAG_COPIED)
                corrupt(c, "compressed-copied", eoff, "compressed cluster at "
                        "0x%" PRIx64 " has the COPIED flag (L2 entry at 0x%"
                        PRIx64 ")", coff, eoff);
            if (img->external_data) {
                corrupt(c, "compressed-data-file", eoff, "compressed cluster "
                        "in an image with an external data file (L2 entry at "
                        "0x%" PRIx64 ")", eoff);
                continue;
            }
            if (bm) {
                corrupt(c, "subcluster-bitmap", eoff, "compressed cluster "
                        "with a non-zero subcluster bitmap (L2 entry at 0x%"
                        PRIx64 ")", eoff);
                continue;
            }
            if (!inc(c, coff, csize, "compressed cluster") && c->fix_all &&
                may_write(c, eoff)) {
                if ((rc = write_u64(c, eoff, zero_entry(c))) < 0)
                    return rc;
                if (img->extended_l2 &&
                    (rc = write_u64(c, eoff + 8, ~0ull << 32)) < 0)
                    return rc;
                /* the first reference repairs it, the others find it
                 * repaired */
                c->r->corruptions -= c->weight;
                c->r->corruptions_fixed++;
                repaired(c, "dropped-reference", eoff, "L2 entry at 0x%"
                         PRIx64 ": compressed cluster past the end of the "
                         "file dropped (0x%016" PRIx64 " -> 0x%016" PRIx64 ")",
                         eoff, e, zero_entry(c));
                continue;
            }
            if (active) {
                c->r->allocated_clusters += c->weight;
                c->r->compressed_clusters += c->weight;
                c->r->fragmented_clusters += c->weight;
            }
            continue;
        }
        if (e & Q2_L2E_STD_RESERVED_MASK)
            corrupt(c, "reserved-bits", eoff, "L2 entry 0x%016" PRIx64
                    " at 0x%" PRIx64 " has reserved bits set", e, eoff);
        if (off == 0 && !(img->external_data && (e & Q2_OFLAG_COPIED) &&
                          !zero)) {
            /* unallocated or a plain zero cluster */
            if (img->extended_l2 && (bm & Q2_L2E_BITMAP_ALLOC))
                corrupt(c, "subcluster-bitmap", eoff, "unallocated cluster "
                        "with allocated subclusters (L2 entry at 0x%" PRIx64
                        ")", eoff);
            continue;
        }
        /* a data cluster, or a preallocated zero cluster */
        if (img->extended_l2 && ((bm >> 32) & bm))
            corrupt(c, "subcluster-bitmap", eoff, "subclusters both "
                    "allocated and zero (L2 entry at 0x%" PRIx64 ")", eoff);
        if (off & (c->cs - 1)) {
            bool data = img->extended_l2 ? (bm & Q2_L2E_BITMAP_ALLOC) != 0
                                         : !zero;
            if (!data && c->fix_all && may_write(c, eoff)) {
                uint64_t ze = img->extended_l2 ? 0 : Q2_OFLAG_ZERO;
                if ((rc = write_u64(c, eoff, ze)) < 0)
                    return rc;
                if (img->extended_l2 &&
                    (rc = write_u64(c, eoff + 8, ~0ull << 32)) < 0)
                    return rc;
                c->r->corruptions_fixed++;
                repaired(c, "unaligned", eoff, "L2 entry at 0x%" PRIx64
                         ": unaligned preallocated zero cluster 0x%" PRIx64
                         " made a plain zero cluster", eoff, off);
                continue;
            }
            corrupt(c, "unaligned", eoff, "%s cluster offset 0x%" PRIx64
                    " is not cluster aligned (L2 entry at 0x%" PRIx64 ")",
                    data ? "data" : "preallocated zero", off, eoff);
        }
        if (!img->external_data &&
            !inc(c, off, c->cs, "data cluster") && c->fix_all &&
            may_write(c, eoff)) {
            uint64_t ze = zero_entry(c);
            if ((rc = write_u64(c, eoff, ze)) < 0)
                return rc;
            if (img->extended_l2 &&
                (rc = write_u64(c, eoff + 8, ~0ull << 32)) < 0)
                return rc;
            c->r->corruptions -= c->weight;
            c->r->corruptions_fixed++;
            repaired(c, "dropped-reference", eoff, "L2 entry at 0x%" PRIx64
                     ": data cluster 0x%" PRIx64 " past the end of the file "
                     "dropped (reads as zeros)", eoff, off);
            continue;
        }
        if (active) {
            c->r->allocated_clusters += c->weight;
            if (next && off != next)
                c->r->fragmented_clusters += c->weight;
            next = off + c->cs;
            if (c->copied_inline &&
                (rc = check_copied(c, e, eoff, off, false, false)) < 0)
                return rc;
        }
    }
    return 0;
}

/* An L1 table, its L2 tables and their clusters. */
static int walk_l1(struct chk *c, uint64_t l1_off, uint32_t l1_size,
                   bool active)
{
    uint64_t per = c->l1buf_len / 8, i, bytes = (uint64_t)l1_size * 8;
    int rc;

    if (l1_size == 0)
        return 0;
    if (!inc(c, l1_off, bytes, active ? "active L1 table"
                                      : "snapshot L1 table"))
        return 0; /* it reads as zeros: nothing more */
    if ((rc = spend(c, l1_size, "L1 table", l1_off)) < 0)
        return rc;
    for (i = 0; i < l1_size; i++) {
        uint64_t eoff = l1_off + i * 8, e, l2;
        if (i % per == 0) {
            uint64_t left = bytes - i * 8;
            int64_t n = q2_pread_full(&c->img->io, c->l1buf,
                                      left < per * 8 ? left : per * 8, eoff);
            if (n < 0)
                return q2_err(c->img, (int)n, "cannot read an L1 table at "
                              "0x%" PRIx64 ": %s", eoff, qcow2_strerror((int)n));
        }
        e = q2_load_be64(c->l1buf + (i % per) * 8);
        if (!e)
            continue;
        if (e & Q2_L1E_RESERVED_MASK)
            corrupt(c, "reserved-bits", eoff, "L1 entry 0x%016" PRIx64 " at 0x%"
                    PRIx64 " has reserved bits set", e, eoff);
        l2 = e & Q2_L1E_OFFSET_MASK;
        if (l2 && active && c->copied_inline &&
            (rc = check_copied(c, e, eoff, l2, true, false)) < 0)
            return rc;
        if (!inc(c, l2, c->cs, "L2 table")) {
            if (c->fix_all && may_write(c, eoff)) {
                if ((rc = write_u64(c, eoff, 0)) < 0)
                    return rc;
                c->r->corruptions -= c->weight;
                c->r->corruptions_fixed++;
                repaired(c, "dropped-reference", eoff, "L1 entry at 0x%" PRIx64
                         ": L2 table 0x%" PRIx64 " past the end of the file "
                         "dropped (its range reads as unallocated)", eoff, l2);
            }
            continue; /* reads as zeros: no entries */
        }
        if (l2 & (c->cs - 1))
            corrupt(c, "unaligned", eoff, "L2 table offset 0x%" PRIx64 " is "
                    "not cluster aligned (L1 entry at 0x%" PRIx64 ")", l2, eoff);
        if ((rc = walk_l2(c, l2, active)) < 0)
            return rc;
        /* walk_l2 used only l2buf: the L1 chunk in l1buf is intact */
    }
    return 0;
}

static int walk_bitmaps(struct chk *c)
{
    struct qcow2_image *img = c->img;
    const struct q2_ext *e;
    unsigned i;

    if (img->n_bitmaps == 0)
        return 0;
    e = &img->hp.exts[img->hp.ext_bitmaps];
    inc(c, q2_load_be64(e->data + 16), q2_load_be64(e->data + 8),
        "bitmap directory");
    for (i = 0; i < img->n_bitmaps; i++) {
        const struct qcow2_bitmap *bm = &img->bitmaps[i].pub;
        uint64_t per = c->cs / 8, k;
        if (!inc(c, bm->table_offset, (uint64_t)bm->table_size * 8,
                 "bitmap table"))
            continue;
        /* QEMU never shares a bitmap table, but 65535 bitmaps may name
         * one: the same budget as the L1 and L2 walks bounds the work */
        if (c->budget < bm->table_size)
            return q2_err(img, -E2BIG, "the bitmaps reference bitmap tables "
                          "too many times to check (bitmap table at 0x%"
                          PRIx64 ")", bm->table_offset);
        c->budget -= bm->table_size;
        c->quiet = revisit(c, bm->table_offset, 2);
        for (k = 0; k < bm->table_size; k++) {
            uint64_t eoff = bm->table_offset + k * 8, v, off;
            if (k % per == 0) {
                uint64_t left = ((uint64_t)bm->table_size - k) * 8;
                int64_t n = q2_pread_full(&img->io, c->l1buf,
                                          left < c->cs ? left : c->cs, eoff);
                if (n < 0) {
                    c->quiet = false;
                    return q2_err(img, (int)n, "cannot read a bitmap table "
                                  "at 0x%" PRIx64 ": %s", eoff,
                                  qcow2_strerror((int)n));
                }
            }
            v = q2_load_be64(c->l1buf + (k % per) * 8);
            off = v & Q2_BME_OFFSET_MASK;
            if ((v & Q2_BME_RESERVED_MASK) || (off && ((v & 1) ||
                                                       (off & (c->cs - 1))))) {
                corrupt(c, "bitmap", eoff, "bitmap '%s': invalid table entry "
                        "0x%016" PRIx64 " at 0x%" PRIx64, bm->name, v, eoff);
                continue;
            }
            if (off)
                inc(c, off, c->cs, "bitmap data cluster");
        }
        c->quiet = false;
    }
    return 0;
}

static void walk_refblocks(struct chk *c)
{
    uint64_t i;

    for (i = 0; i < c->rt_entries; i++) {
        uint64_t eoff = c->img->hp.h.refcount_table_offset + i * 8;
        uint64_t e = q2_load_be64(c->rt + i * 8);
        uint64_t off = e & Q2_REFT_OFFSET_MASK, cl = off / c->cs;
        if (e & Q2_REFT_RESERVED_MASK) {
            corrupt(c, "reserved-bits", eoff, "refcount table entry %" PRIu64
                    " has reserved bits set (at offset 0x%" PRIx64 ")", i,
                    eoff);
            c->rebuild = true;
            continue;
        }
        if (off & (c->cs - 1)) {
            corrupt(c, "unaligned", eoff, "refcount block %" PRIu64 " at 0x%"
                    PRIx64 " is not cluster aligned", i, off);
            c->rebuild = true;
            continue;
        }
        if (cl >= c->file_clusters) {
            corrupt(c, "past-end-of-file", eoff, "refcount block %" PRIu64
                    " at 0x%" PRIx64 " lies past the end of the file", i, off);
            c->rebuild = true;
            continue;
        }
        if (off) {
            inc(c, off, c->cs, "refcount block");
            if (c->n[cl] != 1) {
                corrupt(c, "refcount-block-shared", off, "refcount block %"
                        PRIu64 " at 0x%" PRIx64 " has %" PRIu32 " references",
                        i, off, c->n[cl]);
                c->rebuild = true;
            }
        }
    }
}

/* Everything but the refcount blocks (walk_refblocks, counted last as
 * QEMU does). */
static int count_all(struct chk *c)
{
    struct qcow2_image *img = c->img;
    const struct qcow2_header *h = &img->hp.h;
    struct again_slot *sl;
    unsigned i;
    size_t j;
    int rc;

    /* version 3 wants the VM state and disk size in the extra data;
     * -r all rewrites the table with them (rewrite_snapshots) */
    c->snap_incomplete = 0;
    for (i = 0; h->version >= 3 && i < img->n_snaps; i++) {
        const struct qcow2_snapshot *s = &img->snaps[i].pub;
        if (s->extra_data_size >= Q2_SNAP_EXTRA_DISK)
            continue;
        c->snap_incomplete++;
        if (c->fix_all)
            repaired(c, "snapshot-incomplete", s->entry_offset, "snapshot "
                     "table entry %u is incomplete: %" PRIu32 " bytes of "
                     "extra data (rewriting the table)", i,
                     s->extra_data_size);
        else
            corrupt(c, "snapshot-incomplete", s->entry_offset, "snapshot "
                    "table entry %u is incomplete: %" PRIu32 " bytes of "
                    "extra data, version 3 wants 16 (repair with -r all)", i,
                    s->extra_data_size);
    }
    inc(c, 0, c->cs, "header");
    rc = walk_l1(c, h->l1_table_offset, h->l1_size, true);
    if (rc < 0)
        return rc;
    for (i = 0; i < img->n_snaps; i++) {
        const struct qcow2_snapshot *s = &img->snaps[i].pub;
        if (s->l1_table_offset & (c->cs - 1)) {
            corrupt(c, "snapshot", s->entry_offset, "snapshot %s: L1 table "
                    "offset 0x%" PRIx64 " is not cluster aligned", s->id,
                    s->l1_table_offset);
            continue;
        }
        /* snapshots naming one L1 table: it is walked once more, with
         * their number less one as the weight */
        sl = again_get(&c->l1_again, s->l1_table_offset,
                       (uint64_t)s->l1_size + 1);
        if (!sl)
            return -ENOMEM;
        if (sl->n++)
            continue;
        rc = walk_l1(c, s->l1_table_offset, s->l1_size, false);
        if (rc < 0)
            return rc;
    }
    for (j = 0; j < c->l1_again.cap; j++) {
        sl = &c->l1_again.slot[j];
        if (!sl->b || sl->n < 2)
            continue;
        c->weight = sl->n - 1;
        c->quiet = true;
        rc = walk_l1(c, sl->a, (uint32_t)(sl->b - 1), false);
        c->weight = 1;
        c->quiet = false;
        if (rc < 0)
            return rc;
    }
    again_clear(&c->l1_again);
    if ((rc = walk_l2_again(c)) < 0)
        return rc;
    if (img->n_snaps)
        inc(c, h->snapshots_offset,
            q2_snap_table_len(img->snaps, img->n_snaps, h->snapshots_offset),
            "snapshot table");
    if (!c->refs_only)
        inc(c, h->refcount_table_offset, c->rt_entries * 8, "refcount table");
    if (img->hp.ext_crypto >= 0) {
        const struct q2_ext *e = &img->hp.exts[img->hp.ext_crypto];
        if (e->len >= 16)
            inc(c, q2_load_be64(e->data), q2_load_be64(e->data + 8),
                "encryption header");
    }
    rc = walk_bitmaps(c);
    if (rc < 0)
        return rc;
    c->pre_refblocks = c->r->corruptions;
    if (!c->refs_only)
        walk_refblocks(c);
    return 0;
}

/* Report leaked clusters nobody references as one range. */
static void leaked_run(struct chk *c, uint64_t first, uint64_t count)
{
    if (count)
        leak(c, "leaked-range", first * c->cs, count * c->cs, "clusters 0x%"
             PRIx64 "..0x%" PRIx64 " (%" PRIu64 " bytes) have a refcount but "
             "no reference", first * c->cs, (first + count) * c->cs - 1,
             count * c->cs);
}

/* Stored refcounts against the counters; fixes what the mode allows. */
static int compare(struct chk *c, bool fix_leaks, bool fix_errors,
                   uint64_t *highest)
{
    uint64_t i, n = c->used_clusters > c->file_clusters ? c->used_clusters
                                                         : c->file_clusters;
    uint64_t run = 0, run_len = 0;
    int rc;

    *highest = 0;
    for (i = 0; i < n; i++) {
        uint64_t stored, refs = c->n[i];
        rc = get_rc(c, i, &stored);
        if (rc < 0) {
            if (rc != -QCOW2_ECORRUPT)
                return q2_err(c->img, rc, "cannot read the refcount of "
                              "cluster 0x%" PRIx64 ": %s", i * c->cs,
                              qcow2_strerror(rc));
            check_error(c, "refcount-unreadable", i * c->cs, "cannot get the "
                        "refcount of cluster 0x%" PRIx64 ": its refcount "
                        "block is not cluster aligned", i * c->cs);
            continue;
        }
        if (stored || refs)
            *highest = i;
        if (stored > refs && refs == 0) {
            if (run_len && run + run_len == i) {
                run_len++;
            } else {
                leaked_run(c, run, run_len);
                run = i;
                run_len = 1;
            }
        }
        if (stored == refs)
            continue;
        if (stored == 0) {
            c->rebuild = true;
        } else if ((stored > refs && fix_leaks) ||
                   (stored < refs && fix_errors)) {
            rc = set_rc(c, i, refs);
            if (rc < 0 && rc != -QCOW2_ECORRUPT)
                return rc;
            if (rc == 0) {
                if (stored > refs)
                    c->r->leaks_fixed++;
                else
                    c->r->corruptions_fixed++;
                repaired(c, stored > refs ? "leak" : "refcount-too-low",
                         i * c->cs, "cluster 0x%" PRIx64 ": refcount %" PRIu64
                         " -> %" PRIu64, i * c->cs, stored, refs);
                continue;
            }
        }
        if (stored < refs) {
            corrupt(c, "refcount-too-low", i * c->cs, "cluster 0x%" PRIx64
                    ": refcount %" PRIu64 " below its %" PRIu64 " references",
                    i * c->cs, stored, refs);
        } else {
            c->r->leaks++;
            if (refs)
                leak(c, "refcount-too-high", i * c->cs, 0, "cluster 0x%"
                     PRIx64 ": refcount %" PRIu64 " above its %" PRIu64
                     " references", i * c->cs, stored, refs);
        }
    }
    leaked_run(c, run, run_len);
    return 0;
}

/* COPIED flags of one active L2 table (with c->weight). */
static int copied_l2(struct chk *c, uint64_t l2, bool fix)
{
    struct qcow2_image *img = c->img;
    unsigned entries = 1u << img->l2_bits, k;
    int rc;

    if ((rc = read_cluster(c, c->l2buf, l2)) < 0)
        return rc;
    for (k = 0; k < entries; k++) {
        uint64_t xoff = l2 + (uint64_t)k * img->l2_entry_len;
        uint64_t x = q2_load_be64(c->l2buf + (size_t)k * img->l2_entry_len);
        bool zero = !img->extended_l2 && (x & Q2_OFLAG_ZERO);
        uint64_t off = x & Q2_L2E_OFFSET_MASK;
        if (x & Q2_OFLAG_COMPRESSED)
            continue;
        if (off == 0 && !(img->external_data && (x & Q2_OFLAG_COPIED) &&
                          !zero))
            continue;
        if ((rc = check_copied(c, x, xoff, off, false, fix)) < 0)
            return rc;
    }
    return 0;
}

/* COPIED flags of the active tables after a refcount repair.  An L2 table
 * named again is checked once more at the end with the number of further
 * references as weight (its repairs are made by the first). */
static int copied_pass(struct chk *c, bool fix)
{
    struct qcow2_image *img = c->img;
    const struct qcow2_header *h = &img->hp.h;
    uint64_t per = c->cs / 8, i;
    size_t j;
    int rc = 0;

    if (!within_file(c, h->l1_table_offset, (uint64_t)h->l1_size * 8))
        return 0;
    for (i = 0; i < h->l1_size; i++) {
        uint64_t eoff = h->l1_table_offset + i * 8, e, l2;
        if (i % per == 0) {
            uint64_t left = ((uint64_t)h->l1_size - i) * 8;
            int64_t n = q2_pread_full(&img->io, c->l1buf,
                                      left < c->cs ? left : c->cs, eoff);
            if (n < 0)
                return q2_err(img, (int)n, "cannot read the L1 table: %s",
                              qcow2_strerror((int)n));
        }
        e = q2_load_be64(c->l1buf + (i % per) * 8);
        l2 = e & Q2_L1E_OFFSET_MASK;
        if (!l2)
            continue;
        if ((rc = check_copied(c, e, eoff, l2, true, fix)) < 0)
            return rc;
        if (!within_file(c, l2, c->cs))
            continue;
        if (revisit(c, l2, 4)) { /* once more at the end, weighted */
            struct again_slot *s = again_get(&c->l2_again, l2 << 1, 1);
            if (!s)
                return -ENOMEM;
            s->n++;
            continue;
        }
        if ((rc = copied_l2(c, l2, fix)) < 0)
            return rc;
    }
    c->quiet = true;
    for (j = 0; j < c->l2_again.cap && rc == 0; j++) {
        if (!c->l2_again.slot[j].b)
            continue;
        c->weight = c->l2_again.slot[j].n;
        rc = copied_l2(c, c->l2_again.slot[j].a >> 1, fix);
    }
    c->weight = 1;
    c->quiet = false;
    again_clear(&c->l2_again);
    return rc < 0 ? rc : 0;
}

static int load_reftable(struct chk *c)
{
    const struct qcow2_header *h = &c->img->hp.h;
    uint64_t bytes = (uint64_t)h->refcount_table_clusters << c->img->cluster_bits;
    int64_t n;

    /* bounded to 8 MiB by the header check */
    free(c->rt);
    c->rt_entries = bytes / 8;
    c->rt = malloc(bytes ? bytes : 1);
    if (!c->rt)
        return -ENOMEM;
    n = q2_pread_full(&c->img->io, c->rt, bytes, h->refcount_table_offset);
    if (n < 0)
        return q2_err(c->img, (int)n, "cannot read the refcount table: %s",
                      qcow2_strerror((int)n));
    return 0;
}

/* -r all: the snapshot table rewritten with complete extra data, after
 * the refcounts are repaired (QEMU's qcow2_check_fix_snapshot_table), so
 * that the new table's clusters come from sound refcounts; the switch is
 * q2_snap_table_switch's.  The entries are re-read from the new table. */
static int rewrite_snapshots(struct chk *c)
{
    struct qcow2_image *img = c->img;
    const struct qcow2_header *h = &img->hp.h;
    uint64_t old_len = q2_snap_table_len(img->snaps, img->n_snaps,
                                         h->snapshots_offset);
    uint8_t *old = NULL, *neu = NULL;
    size_t neu_len = 0;
    struct q2_snapshot *parsed = NULL;
    char err[256];
    int64_t n;
    int rc;

    /* the loaded entries end within 64 MiB of the table's start */
    old = malloc(old_len ? old_len : 1);
    if (!old)
        return -ENOMEM;
    n = q2_pread_full(&img->io, old, old_len, h->snapshots_offset);
    if (n >= 0 && (uint64_t)n < old_len)
        n = -QCOW2_ECORRUPT;
    if (n < 0) {
        rc = q2_err(img, (int)n, "cannot read the snapshot table: %s",
                    qcow2_strerror((int)n));
        goto out;
    }
    rc = q2_snap_complete(old, old_len, img->n_snaps, img->virtual_size,
                          &neu, &neu_len);
    if (rc < 0) {
        q2_err(img, rc, "cannot rewrite the snapshot table: %s",
               qcow2_strerror(rc));
        goto out;
    }
    rc = q2_snap_table_switch(img, neu, neu_len, img->n_snaps, old_len);
    if (rc < 0)
        goto out;
    rc = q2_snap_parse(neu, neu_len, h->snapshots_offset, img->n_snaps,
                       h->version, h->size, &parsed, err, sizeof(err));
    if (rc < 0) {
        q2_err(img, rc, "%s", err);
        goto out;
    }
    q2_snap_free(img->snaps, img->n_snaps);
    img->snaps = parsed;
    repaired(c, "snapshot-table", h->snapshots_offset, "snapshot table "
             "rewritten with complete extra data at 0x%" PRIx64,
             h->snapshots_offset);
    c->r->corruptions_fixed += c->snap_incomplete;
out:
    free(old);
    free(neu);
    return rc;
}

/* Snapshots past QEMU's limits (65536 entries, a 64 MiB table) that a
 * check-mode open left unloaded: without -r all the check cannot be done
 * (qemu-img check exits 1); -r all drops them by writing the number of
 * loaded entries into the header, as QEMU does; the table's tail and what
 * only the dropped entries referenced then leak, and the same check
 * repairs the leaks. */
static int drop_overhang(struct chk *c)
{
    struct qcow2_image *img = c->img;
    uint32_t over = img->snap_overhang;
    uint8_t b[4];
    int rc;

    if (!over)
        return 0;
    if (!c->fix_all) {
        check_error(c, "snapshot-table", 60, "the snapshot table is too "
                    "large (%s): %" PRIu32 " overhanging snapshots; remove "
                    "them with -r all", img->snap_too_big ? "over 64 MiB"
                    : "over 65536 entries", over);
        return q2_err(img, -EFBIG, "the snapshot table is too large (%s): "
                      "%" PRIu32 " overhanging snapshots can be removed with "
                      "-r all", img->snap_too_big ? "over 64 MiB"
                      : "over 65536 entries", over);
    }
    q2_store_be32(b, img->n_snaps);
    if ((rc = q2_header_write(img, 60, b, sizeof(b))) < 0)
        return rc;
    img->hp.h.nb_snapshots = img->n_snaps;
    img->snap_overhang = 0;
    img->snap_too_big = false;
    c->r->corruptions_fixed += over;
    repaired(c, "snapshot-table", 60, "%" PRIu32 " overhanging snapshots "
             "dropped (the table keeps %u)", over, img->n_snaps);
    return 0;
}

/* What the open recorded about a part it left aside ("" if nothing). */
static const char *damage_msg(const struct qcow2_image *img,
                              const char *part)
{
    unsigned i;

    for (i = 0; i < img->n_damage; i++)
        if (strcmp(img->damage[i].part, part) == 0)
            return img->damage[i].msg;
    return "";
}

/*
 * Parts the open left aside as unusable (qcow2_damage_get).
 *
 * The snapshot table, cut by the end of a truncated file.  When its
 * entries, with the missing bytes read as zeros, parsed, the open loaded
 * them as QEMU does: the check counts them as qemu-img check does (the
 * same exit code).  When they did not, the open left the table aside: a
 * corruption (qemu-img check finds errors in such garbage too, exit 2).
 * Without -r all nothing is repaired, not even leaks: the clusters only
 * the (lost or zero-read) snapshots name are not the check's to free
 * while the header still names their table.  -r all drops the table either way
 * (it cannot be trusted): nb_snapshots and snapshots_offset zeroed together
 * by one synced write inside the header's first sector, before anything
 * else is written (nothing is pending); the check that follows frees
 * what only the dropped snapshots referenced and lowers the refcounts
 * they shared (leaks), fixes the COPIED flags, and checks again.  An
 * interruption leaves at worst those leaks and flags, which any -r all
 * repairs; refcounts never fall below the references.
 *
 * The bitmap directory: qemu-img cannot open such an image (check exits
 * 1); here the check runs without its bitmaps and counts an internal
 * error (exit 1), and repairs nothing (they would free the bitmaps'
 * clusters).
 */
static int left_aside(struct chk *c)
{
    struct qcow2_image *img = c->img;
    uint64_t off = img->hp.h.snapshots_offset;
    uint32_t nb = img->hp.h.nb_snapshots;
    uint8_t b[12] = {0};
    int rc;

    if (img->bitmaps_damaged) {
        check_error(c, "bitmap-directory", img->hp.exts[img->hp.ext_bitmaps]
                    .off, "the bitmap directory is unusable: %s; the check "
                    "went on without its bitmaps and repaired nothing",
                    damage_msg(img, "bitmap directory"));
        c->fix_leaks = c->fix_all = false;
    }
    if (!img->snaps_damaged)
        return 0;
    if (!c->fix_all)
        c->fix_leaks = false; /* nothing freed while the table is named */
    if (!c->fix_all && img->n_snaps)
        return 0; /* loaded: checked as qemu-img checks it */
    if (!c->fix_all) {
        c->weight = 1;
        corrupt(c, "snapshot-table", 0x3c, "the snapshot table (%" PRIu32
                " snapshots at 0x%" PRIx64 ") is unusable: %s; -r all "
                "drops it", nb, off, damage_msg(img, "snapshot table"));
        c->fix_leaks = false;
        return 0;
    }
    if ((rc = q2_flush(img)) < 0 ||
        (rc = q2_header_write(img, 60, b, sizeof(b))) < 0)
        return rc;
    img->hp.h.nb_snapshots = 0;
    img->hp.h.snapshots_offset = 0;
    img->snaps_damaged = false;
    q2_snap_free(img->snaps, img->n_snaps);
    img->snaps = NULL;
    img->n_snaps = 0;
    img->snap_overhang = 0;
    img->snap_too_big = false;
    c->r->corruptions_fixed++;
    repaired(c, "snapshot-table", 0x3c, "unusable snapshot table (%" PRIu32
             " snapshots at 0x%" PRIx64 ") dropped: %s", nb, off,
             damage_msg(img, "snapshot table"));
    return 0;
}

/* Ready for one pass: counters for the file's clusters, the budget, no
 * table met yet, no page cached. */
static int pass_setup(struct chk *c)
{
    struct qcow2_image *img = c->img;
    int64_t sz;

    sz = img->io.size(img->io.ctx);
    if (sz < 0)
        return q2_err(img, (int)sz, "cannot get the file size: %s",
                      qcow2_strerror((int)sz));
    c->file_size = (uint64_t)sz;
    c->file_clusters = (c->file_size + c->cs - 1) / c->cs;
    if (c->file_clusters >= MAX_CHECK_CLUSTERS)
        return q2_err(img, -EFBIG, "image file too large to check");
    c->nclusters = c->file_clusters + 1;
    free(c->n);
    c->n = calloc(c->nclusters, sizeof(*c->n));
    if (!c->n)
        return -ENOMEM;
    free(c->walked);
    c->walked = calloc(c->nclusters, 1);
    if (!c->walked)
        return -ENOMEM;
    c->used_clusters = 0;
    c->rebuild = false;
    c->budget = (c->file_size / 8 + 1) * BUDGET_WALKS + (1u << 20);
    c->weight = 1;
    again_clear(&c->l1_again);
    again_clear(&c->l2_again);
    c->copied_inline = !c->fix_leaks && !c->refs_only;
    q2_cache_clear(&img->cache);
    return 0;
}

/* Clusters past the end of the file that nothing references but whose
 * refcount is set: an allocation a crash interrupted before its cluster
 * was written leaves one.  Not counted (QEMU's check stops at the end of
 * the file too), but a repair that then grows the file, or any later
 * allocation, would bring them inside as leaks; repairing leaks, the
 * refcounts of the clusters the file could grow into next are cleared,
 * uncounted. */
#define PAST_END_WINDOW 65536 /* clusters */

static int clear_past_end(struct chk *c)
{
    uint64_t i = c->used_clusters > c->file_clusters ? c->used_clusters
                                                      : c->file_clusters;
    uint64_t end = i + PAST_END_WINDOW, stored;
    int rc;

    for (; i < end; i++) {
        rc = get_rc(c, i, &stored);
        if (rc == -QCOW2_ECORRUPT)
            continue;
        if (rc < 0)
            return rc;
        if (stored && (rc = set_rc(c, i, 0)) < 0 && rc != -QCOW2_ECORRUPT)
            return rc;
    }
    return 0;
}

/* One check (with the repairs of c->fix_*); fills c->r. */
static int run(struct chk *c)
{
    struct qcow2_image *img = c->img;
    uint64_t highest, old_corr;
    int rc;

    if ((rc = pass_setup(c)) < 0 || (rc = load_reftable(c)) < 0)
        return rc;
    c->r->total_clusters = (img->virtual_size + c->cs - 1) / c->cs;

    if ((rc = count_all(c)) < 0)
        return rc;
    rc = compare(c, c->fix_leaks, c->fix_all, &highest);
    if (rc < 0)
        return rc;
    if (c->rebuild && c->fix_all) {
        /* fresh structures from the references, the old ones not among
         * them (they become free space) */
        uint64_t n = c->used_clusters > c->file_clusters ? c->used_clusters
                                                          : c->file_clusters;
        uint64_t i, corr = c->r->corruptions - c->pre_refblocks;
        uint64_t leaks = c->r->leaks;
        const struct qcow2_header *h = &img->hp.h;
        for (i = 0; i < c->rt_entries; i++) {
            uint64_t e = q2_load_be64(c->rt + i * 8);
            uint64_t off = e & Q2_REFT_OFFSET_MASK;
            if (off && !(e & Q2_REFT_RESERVED_MASK) && !(off & (c->cs - 1)) &&
                off / c->cs < c->file_clusters && c->n[off / c->cs])
                c->n[off / c->cs]--;
        }
        if (within_file(c, h->refcount_table_offset, c->rt_entries * 8)) {
            uint64_t a = h->refcount_table_offset / c->cs;
            uint64_t b = (h->refcount_table_offset + c->rt_entries * 8 - 1) /
                         c->cs;
            for (i = a; i <= b && c->rt_entries; i++)
                if (c->n[i])
                    c->n[i]--;
        }
        if ((rc = q2_flush(img)) < 0) /* nothing pending, in principle */
            return rc;
        rc = q2_rebuild_from_counts(img, c->n, n);
        if (rc < 0)
            return rc;
        c->r->rebuilt = true;
        repaired(c, "rebuilt-refcounts", img->hp.h.refcount_table_offset,
                 "refcount structures rebuilt from the references (new "
                 "refcount table at 0x%" PRIx64 ")",
                 img->hp.h.refcount_table_offset);
        /* what the refcount comparison found is fixed now */
        c->r->corruptions_fixed += corr;
        c->r->leaks_fixed += leaks;
        c->r->corruptions = c->pre_refblocks;
        c->r->leaks = 0;
        c->rebuild = false;
        if ((rc = load_reftable(c)) < 0)
            return rc;
    } else if (c->rebuild && c->fix_leaks) {
        check_error(c, "rebuild-needed", 0, "referenced clusters have no "
                    "refcount: the refcount structures need a rebuild (-r all)");
        return q2_err(img, -QCOW2_ECORRUPT, "the refcount structures need to "
                      "be rebuilt; repair with -r all");
    }
    if (c->fix_leaks) {
        /* (a rebuild put fresh structures past the old end: skipped) */
        if ((!c->r->rebuilt && (rc = clear_past_end(c)) < 0) ||
            (rc = q2_flush(img)) < 0)
            return rc;
        q2_cache_clear(&img->cache);
        /* QEMU fixes COPIED with -r leaks only when nothing else is wrong:
         * the refcounts can then be trusted */
        old_corr = c->r->corruptions;
        rc = copied_pass(c, c->fix_all || old_corr == 0);
        if (rc < 0)
            return rc;
        if ((rc = img->io.flush(img->io.ctx)) < 0)
            return rc;
    }
    if (c->fix_all && c->snap_incomplete &&
        (rc = rewrite_snapshots(c)) < 0)
        return rc;
    c->r->image_end_offset = (highest + 1) * c->cs;
    return 0;
}

static int mark_consistent(struct chk *c)
{
    struct qcow2_header *h = &c->img->hp.h;
    uint64_t bits = Q2_INCOMPAT_DIRTY | Q2_INCOMPAT_CORRUPT;
    int rc;

    if (h->version < 3 || !(h->incompatible_features & bits))
        return 0;
    h->incompatible_features &= ~bits;
    if ((rc = write_u64(c, 72, h->incompatible_features)) < 0)
        return rc;
    repaired(c, "header-flags", 72, "dirty and corrupt bits cleared");
    return c->img->io.flush(c->img->io.ctx);
}

static int chk_init(struct chk *c, struct qcow2_image *img,
                    const struct qcow2_check_opts *opts,
                    struct qcow2_check_result *res)
{
    memset(res, 0, sizeof(*res));
    memset(c, 0, sizeof(*c));
    c->img = img;
    c->o = opts;
    c->r = res;
    c->cs = img->cluster_size;
    c->max_count = img->hp.h.refcount_order >= 5
                       ? UINT32_MAX
                       : (uint32_t)((1u << (1u << img->hp.h.refcount_order)) -
                                    1);
    c->l1buf_len = c->cs > L1_CHUNK ? c->cs : L1_CHUNK;
    c->l1buf = q2_buf_alloc(c->l1buf_len);
    c->l2buf = q2_buf_alloc(c->cs);
    return c->l1buf && c->l2buf ? 0 : -ENOMEM;
}

static void chk_free(struct chk *c)
{
    free(c->n);
    free(c->walked);
    again_clear(&c->l1_again);
    again_clear(&c->l2_again);
    free(c->rt);
    free(c->l1buf);
    free(c->l2buf);
}

int qcow2_check(struct qcow2_image *img, const struct qcow2_check_opts *opts,
                struct qcow2_check_result *out)
{
    struct qcow2_check_result res, fixed;
    struct qcow2_check_opts o;
    struct chk c = {0};
    unsigned flags;
    int rc;

    if (!img || img->magic != Q2_HANDLE_MAGIC || img->state != Q2_STATE_OPEN ||
        !out)
        return -EINVAL;
    q2_err_clear(img);
    if (q2_opts_copy(&o, sizeof(o), opts) < 0)
        return q2_err(img, -EINVAL, "qcow2_check: the options' size field "
                      "is not set");
    flags = o.flags;
    if (img->format != QCOW2_FORMAT_QCOW2)
        return q2_err(img, -ENOTSUP, "this image format does not support "
                      "checks");
    if (flags & ~QCOW2_CHECK_FIX_ALL)
        return q2_err(img, -EINVAL, "qcow2_check: unknown flags 0x%x", flags);
    if (flags && (!img->writable || !(img->opts.flags & QCOW2_OPEN_CHECK)))
        return q2_err(img, -EROFS, "repairs need the image open read-write "
                      "for checking");

    rc = chk_init(&c, img, &o, &res);
    if (rc < 0)
        goto out;
    c.fix_leaks = (flags & QCOW2_CHECK_FIX_LEAKS) != 0;
    c.fix_all = (flags & QCOW2_CHECK_FIX_ALL) == QCOW2_CHECK_FIX_ALL;
    rc = drop_overhang(&c);
    if (rc == 0)
        rc = left_aside(&c);
    if (rc < 0)
        goto out;
    rc = run(&c);
    if (rc < 0)
        goto out;
    if (res.corruptions_fixed || res.leaks_fixed) {
        fixed = res;
        memset(&res, 0, sizeof(res));
        c.fix_leaks = c.fix_all = false;
        c.recheck = true;
        rc = run(&c);
        if (rc < 0)
            goto out;
        res.corruptions_fixed = fixed.corruptions_fixed;
        res.leaks_fixed = fixed.leaks_fixed;
        res.rebuilt = fixed.rebuilt;
        res.rechecked = true;
    }
    if (flags && res.check_errors == 0 && res.corruptions == 0)
        rc = mark_consistent(&c);
    if (rc == 0)
        *out = res;
out:
    if (rc < 0 && !img->err_set)
        q2_err(img, rc, "check failed: %s", qcow2_strerror(rc));
    chk_free(&c);
    return rc;
}

int q2_refs_count(struct qcow2_image *img, uint32_t **out, uint64_t *n)
{
    struct qcow2_check_result res;
    struct chk c;
    int rc;

    *out = NULL;
    *n = 0;
    rc = chk_init(&c, img, NULL, &res);
    c.refs_only = true;
    if (rc == 0)
        rc = pass_setup(&c);
    if (rc == 0)
        rc = count_all(&c);
    if (rc == 0 && c.invalid)
        rc = q2_err(img, -QCOW2_ECORRUPT, "%s", c.invalid_msg);
    if (rc == 0) {
        *n = c.used_clusters > c.file_clusters ? c.used_clusters
                                               : c.file_clusters;
        *out = c.n;
        c.n = NULL;
    }
    chk_free(&c);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Rebuild                                                                  */
/* ------------------------------------------------------------------------ */
/*
 * The refcount rebuild: the structures made anew from the references the
 * metadata makes (QEMU's rebuild_refcount_structure), counted by the
 * check's own walk.
 *
 * Needed before writing an image whose dirty bit is set: with lazy
 * refcounts QEMU postpones refcount updates, and a QEMU that dies leaves
 * refcounts lower than the references.  Steps:
 *
 *   1. count references, one per cluster touched, into an array of the
 *      file's size in clusters, with the check's walk (q2_refs_count: its work budget, shared tables walked once and
 *      weighted): the header; the active L1 table, its L2 tables and their
 *      data; the snapshot table and, per snapshot, its L1, L2 and data;
 *      the bitmap directory, tables and data; the LUKS header;
 *   2. (alloc.c, q2_rebuild_from_counts) past everything in use, write refcount blocks covering the whole
 *      file and the new structures themselves, then the new table; fsync;
 *   3. switch the header to the new table with one synced write;
 *   4. clear the dirty bit with one synced write.
 *
 * Crash safety: until step 3 the old structures and the dirty bit stay in
 * place (a crash means a rebuild next time); between 3 and 4 the new
 * structures are complete and the dirty bit still asks for a rebuild.
 * The old table and blocks end up unreferenced (refcount 0: free space).
 *
 * Any reference that is invalid (unaligned, past the end of the file,
 * reserved bits, more references than a refcount holds) is corruption:
 * nothing is written and the caller refuses the image.  A crafted image
 * that describes more work than the budget stops with -E2BIG.
 */

int q2_rebuild_refcounts(struct qcow2_image *img)
{
    uint32_t *cnt;
    uint64_t n;
    int rc = q2_refs_count(img, &cnt, &n);

    if (rc == 0)
        rc = q2_rebuild_from_counts(img, cnt, n);
    else if (!img->err_set)
        q2_err(img, rc, "cannot rebuild the refcounts: %s",
               qcow2_strerror(rc));
    free(cnt);
    return rc;
}

int qcow2_rebuild_refcounts(struct qcow2_image *img)
{
    int rc;

    if (!img || img->magic != Q2_HANDLE_MAGIC || img->state != Q2_STATE_OPEN)
        return -EINVAL;
    q2_err_clear(img);
    if (!img->writable)
        return q2_err(img, -EROFS, "image is open read-only");
    if (img->format != QCOW2_FORMAT_QCOW2)
        return 0;
    /* everything written, frees applied (twice: the second flush writes
     * the decrements the first released); the writer's state, enabled
     * bitmaps in use among it, stays as it is: the handle goes on */
    rc = q2_flush(img);
    if (rc == 0)
        rc = q2_flush(img);
    if (rc < 0)
        return rc;
    return q2_rebuild_refcounts(img);
}
