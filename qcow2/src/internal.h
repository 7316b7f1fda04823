/*
 * internal.h - the private side of libqcow2: the image handle, named limits,
 * and the prototypes modules share.  Only src/ and the unit tests include it.
 *
 * The layers (qcow2/src/README.md: io, format parsers, cache, tables,
 * read, allocation, write, operations, lifecycle) use only those below
 * them; tests/CMakeLists.txt's structure.shape test checks it from the
 * objects.
 */
#ifndef Q2_INTERNAL_H
#define Q2_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "qcow2/qcow2.h"

#define Q2_HIDDEN __attribute__((visibility("hidden")))

#ifdef QCOW2_TESTING
#define Q2_TESTABLE Q2_HIDDEN
#else
#define Q2_TESTABLE static
#endif

/* ---- Limits (QEMU's where it has one, so everything we accept QEMU does
 * too; each bounds an allocation or a loop driven by file content). ---- */
#define Q2_MIN_CLUSTER_BITS 9          /* spec minimum */
#define Q2_MAX_CLUSTER_BITS 21         /* QEMU: 2 MiB clusters */
#define Q2_MIN_CLUSTER_BITS_EXTL2 14   /* 32 subclusters of >= 512 bytes */
#define Q2_MAX_REFCOUNT_ORDER 6        /* 64-bit refcounts */
#define Q2_MAX_BACKING_NAME 1023       /* spec */
#define Q2_MAX_BACKING_FORMAT 15       /* QEMU: backing_format[16] */
#define Q2_MAX_L1_BYTES (32u << 20)    /* QEMU QCOW_MAX_L1_SIZE */
#define Q2_MAX_REFTABLE_BYTES (8u << 20) /* QEMU QCOW_MAX_REFTABLE_SIZE */
#define Q2_MAX_SNAPSHOTS 65536         /* QEMU QCOW_MAX_SNAPSHOTS */
#define Q2_MAX_SNAPSHOT_EXTRA 1024     /* QEMU QCOW_MAX_SNAPSHOT_EXTRA_DATA */
#define Q2_MAX_SNAPSHOTS_BYTES (64u << 20) /* QEMU QCOW_MAX_SNAPSHOTS_SIZE */
#define Q2_MAX_BITMAPS 65535           /* QEMU QCOW2_MAX_BITMAPS */
#define Q2_MAX_BITMAP_NAME 1023        /* QEMU BME_MAX_NAME_SIZE */
#define Q2_MAX_BITMAP_DIR_BYTES (1024ull * 65535) /* QEMU */
#define Q2_MAX_HOST_OFFSET (1ull << 56) /* QEMU QCOW_MAX_CLUSTER_OFFSET */
#define Q2_DEFAULT_CACHE_BYTES (1u << 20) /* metadata cache per image */
#define Q2_MIN_CACHE_SLOTS 4           /* L1 page + L2 + refcount pages */

/* ---- Scanning tables ---- */
/* The number of leading bytes of p[0, len) that lie in all-zero 64-bit
 * words (a multiple of 8; len is one).  Most of a sparse image's L2 tables
 * are zero entries: map.c and check.c skip them with this, eight words to
 * a test, at the speed of memory instead of one decoded entry at a time
 * (issue 20: ~4 ns per entry was most of a check of a 1 TiB image). */
static inline uint64_t q2_word(const uint8_t *p)
{
    uint64_t w;

    memcpy(&w, p, sizeof(w));
    return w;
}

static inline size_t q2_zero_prefix(const uint8_t *p, size_t len)
{
    size_t i = 0;

    /* one OR chain of plain loads (an array copy here made the compiler
     * bounce every block through the stack) */
    for (; len - i >= 64; i += 64) {
        const uint8_t *b = p + i;
        if ((q2_word(b) | q2_word(b + 8) | q2_word(b + 16) | q2_word(b + 24) |
             q2_word(b + 32) | q2_word(b + 40) | q2_word(b + 48) |
             q2_word(b + 56)) != 0)
            break;
    }
    while (len - i >= 8 && q2_word(p + i) == 0)
        i += 8;
    return i;
}

/* ---- The in-memory backend's test hooks (io_mem.c; unit tests and
 * fuzzers reach them through this header) ---- */
/* Fail every call after the next `calls` calls with -EIO (fault injection);
 * a negative count disables it. */
Q2_HIDDEN void q2_io_mem_fail_after(struct qcow2_io *io, long calls);
/* Current content of an in-memory backend (valid until its next write). */
Q2_HIDDEN const uint8_t *q2_io_mem_data(const struct qcow2_io *io,
                                        size_t *len);

/* ---- The crash-simulating backend (io_crash.c): test hooks ----
 * One simulated machine holds several in-memory files; every change
 * (write, truncate, punch) and flush of any of them is recorded as an
 * event in one global order, and the content a file would have after a
 * power loss just before any event is rebuilt from the record.  The model:
 * a change is durable once its file is flushed after it; at a power loss
 * each change not yet durable may or may not have reached the disk,
 * independently (applied in their original order), and a write of several
 * 512-byte sectors may have reached it sector by sector. */
struct q2_crash;

enum q2_crash_kind {
    Q2_CRASH_WRITE = 1,
    Q2_CRASH_TRUNCATE, /* len: the new size */
    Q2_CRASH_PUNCH,    /* zeros over [off, off+len), size unchanged */
    Q2_CRASH_FLUSH
};

struct q2_crash_event {
    unsigned file;
    enum q2_crash_kind kind;
    uint64_t off;
    uint64_t len;
};

/* A machine with no file; NULL on ENOMEM.  q2_crash_free frees it with
 * every file (after the ios opened on it are closed). */
Q2_HIDDEN struct q2_crash *q2_crash_new(void);
Q2_HIDDEN void q2_crash_free(struct q2_crash *c);
/* A new file of the machine with content buf[0..len) (copied): *io reads
 * and writes its live copy and records every pwrite, truncate, punch and
 * flush; io->close leaves the file (and its record) to the machine.
 * *file gets its index (0, 1, ... in opening order).  0 or -errno. */
Q2_HIDDEN int q2_crash_open(struct q2_crash *c, const void *buf, size_t len,
                            struct qcow2_io *io, unsigned *file);
/* Another io on file `file` of the machine (its live copy, recorded like
 * the first one).  0 or -EINVAL. */
Q2_HIDDEN int q2_crash_io(struct q2_crash *c, unsigned file,
                          struct qcow2_io *io);
/* Ios opened from now on offer copy_range between the machine's files
 * (a file system with reflinks), recorded as writes of the source's
 * bytes. */
Q2_HIDDEN void q2_crash_share(struct q2_crash *c, bool on);
/* Events recorded so far; a crash point `at` is 0 .. q2_crash_events(). */
Q2_HIDDEN uint64_t q2_crash_events(const struct q2_crash *c);
/* Event idx (to find the flushes: the barrier points).  0 or -EINVAL. */
Q2_HIDDEN int q2_crash_event_get(const struct q2_crash *c, uint64_t idx,
                                 struct q2_crash_event *out);
/* Changes of file f before event `at` that no flush of f has made
 * durable yet. */
Q2_HIDDEN uint64_t q2_crash_pending(const struct q2_crash *c, unsigned f,
                                    uint64_t at);
/* The content of file f after a power loss just before event `at`: every
 * change a flush of f made durable before `at`, and of the later ones
 * before `at` a subset chosen from `seed`: 0, none of them; 1, all of them
 * (what SIGKILL leaves); any other seed, each dropped or kept with even
 * odds and a kept multi-sector write torn (each of its sectors kept or
 * not) one time in two, deterministically.  *buf (malloc'd, the caller
 * frees it) and *len get the content.  0, -EINVAL or -ENOMEM. */
Q2_HIDDEN int q2_crash_state(const struct q2_crash *c, unsigned f,
                             uint64_t at, uint64_t seed, uint8_t **buf,
                             size_t *len);

/* ---- Errors (err.c) ---- */
/* Record a message on the handle (the first one of a failing call wins)
 * and return err.  Corruption is reported as -QCOW2_ECORRUPT. */
Q2_HIDDEN int q2_err(struct qcow2_image *img, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
Q2_HIDDEN void q2_err_clear(struct qcow2_image *img);
/* Every public options struct starts with its size (sizeof as the caller
 * compiled it): src (NULL: defaults) into dst of dst_size bytes, the part
 * the caller knows copied, the rest zeros (defaults), dst's size field set
 * to dst_size.  -EINVAL when src's size cannot hold even its size field
 * (an uninitialised struct).  One rule for every options struct, so a
 * struct can grow without breaking callers built against an older one. */
Q2_HIDDEN int q2_opts_copy(void *dst, size_t dst_size, const void *src);
Q2_HIDDEN void q2_warn(struct qcow2_image *img, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* ---- Header (header.c): pure parse of the first cluster ---- */
struct q2_ext {
    uint32_t type;
    uint32_t len;
    uint64_t off;        /* offset of the extension header in the file */
    const uint8_t *data; /* points into the header copy */
};

struct q2_hdr_parsed {
    struct qcow2_header h;
    struct q2_ext *exts; /* malloc'd, n_exts entries */
    unsigned n_exts;
    const uint8_t *backing_name;  /* into buf, backing_name_len bytes */
    uint32_t backing_name_len;
    int ext_backing_format;       /* index into exts or -1 (last wins) */
    int ext_feature_table;
    int ext_bitmaps;
    int ext_crypto;
    int ext_data_file;
    /* validation left to the open (an unusable part, not a refusal):
     * snapshots_offset lies past the end of the file; the bitmap
     * directory does */
    bool snap_past_end;
    bool bitmaps_past_end;
};

/* Parse and validate a qcow2 header held in buf[0..len) (the first cluster,
 * or as much of the file as there is).  file_size bounds every table.
 * On failure writes a message into err and returns -QCOW2_ECORRUPT,
 * -ENOTSUP or -ENOMEM.  The caller frees out->exts. */
Q2_HIDDEN int q2_hdr_parse(const uint8_t *buf, size_t len, uint64_t file_size,
                           struct q2_hdr_parsed *out, char *err,
                           size_t errlen);
/* The same, with flags: Q2_HDR_ANY_SNAPSHOT_COUNT, more than QEMU's 65536
 * snapshots are accepted (a check reads the first 65536 and reports the
 * rest, as QEMU's check-mode open does; the table's offset is validated
 * all the same); Q2_HDR_DEFER_PARTS, a snapshot table or bitmap directory
 * that lies past the end of the file is not a refusal but noted
 * (snap_past_end, bitmaps_past_end) for the open to leave aside. */
#define Q2_HDR_ANY_SNAPSHOT_COUNT 0x1
#define Q2_HDR_DEFER_PARTS 0x2
Q2_HIDDEN int q2_hdr_parse_ex(const uint8_t *buf, size_t len,
                              uint64_t file_size, unsigned flags,
                              struct q2_hdr_parsed *out, char *err,
                              size_t errlen);

/* Name of an incompatible feature bit from a feature name table. */
Q2_HIDDEN void q2_hdr_feature_name(const struct q2_hdr_parsed *p, unsigned type,
                                   unsigned bit, char *name, size_t len);

/* ---- Metadata cache (cache.c): fixed number of cluster-sized pages keyed
 * by host offset, LRU replacement. ---- */
/* What a page holds; dirty pages are written back kind by kind. */
enum q2_page_kind {
    Q2_PAGE_META = 0, /* read only */
    Q2_PAGE_REFBLOCK,
    Q2_PAGE_REFTABLE,
    Q2_PAGE_L2,       /* L2 tables, and bitmap tables */
    Q2_PAGE_L1,
    Q2_PAGE_BITMAP    /* bitmap data clusters */
};

struct q2_cache_slot {
    uint64_t key;  /* host offset of the page */
    uint64_t used; /* LRU tick */
    bool valid;
    bool dirty;
    enum q2_page_kind kind;
};

struct q2_cache {
    unsigned nslots;
    size_t page;          /* bytes per page (cluster size) */
    uint64_t tick;
    struct q2_cache_slot *slots;
    uint8_t *mem;         /* nslots * page bytes */
    uint64_t hits, misses;
    int (*flush)(void *ctx); /* write every dirty page (owner's order) */
    void *flush_ctx;
    void *aux;            /* freed with the cache: map.c's salvage bits of
                             duplicate L1 entries (one bit an entry) */
};

Q2_HIDDEN int q2_cache_init(struct q2_cache *c, size_t page, size_t budget);
Q2_HIDDEN void q2_cache_free(struct q2_cache *c);
/* Page at host offset key (page aligned), read through io when missing;
 * bytes past EOF read as zeros.  Returns 0 or -errno, *out valid until the
 * next call. */
Q2_HIDDEN int q2_cache_get(struct q2_cache *c, const struct qcow2_io *io,
                           uint64_t key, const uint8_t **out);
/* Like q2_cache_get, for a page about to be modified (marked dirty). */
Q2_HIDDEN int q2_cache_get_mut(struct q2_cache *c, const struct qcow2_io *io,
                               uint64_t key, enum q2_page_kind kind,
                               uint8_t **out);
/* A zero-filled dirty page for a newly allocated cluster (no read). */
Q2_HIDDEN int q2_cache_new(struct q2_cache *c, uint64_t key,
                           enum q2_page_kind kind, uint8_t **out);
/* Write every dirty page of one kind; counts them in *written. */
Q2_HIDDEN int q2_cache_write_kind(struct q2_cache *c,
                                  const struct qcow2_io *io,
                                  enum q2_page_kind kind, unsigned *written);
Q2_HIDDEN bool q2_cache_dirty(const struct q2_cache *c);
Q2_HIDDEN bool q2_cache_dirty_kind(const struct q2_cache *c,
                                   enum q2_page_kind kind);
/* Forget every clean page (structures were rewritten behind the cache). */
Q2_HIDDEN void q2_cache_clear(struct q2_cache *c);
/* Forget a page (its cluster was freed or rewritten behind the cache). */
Q2_HIDDEN void q2_cache_drop(struct q2_cache *c, uint64_t key);

/* ---- Compressed clusters (compress.c) ---- */
/* Decompress src[0..srclen) into exactly dstlen bytes.  Returns 0,
 * -QCOW2_ECORRUPT when the data does not decode to dstlen bytes, -ENOTSUP
 * for an unknown type, -ENOMEM. */
Q2_HIDDEN int q2_decompress(unsigned type, const uint8_t *src, size_t srclen,
                            uint8_t *dst, size_t dstlen);

/* ---- Backing names (backing.c) ---- */
/* True when QEMU would treat name as a protocol (':' before any '/'). */
Q2_HIDDEN bool q2_name_has_protocol(const char *name);
/* QEMU's path_combine: name relative to the directory of base_path (the
 * path string as opened).  Returns a malloc'd string or NULL. */
Q2_HIDDEN char *q2_path_combine(const char *base_path, const char *name);

/* ---- Snapshots (snapshot.c) ---- */
struct q2_snapshot {
    struct qcow2_snapshot pub;
    char *id;
    char *name;
    uint8_t *extra;
};

/* Parse the snapshot table from buf[0..len) (read from snapshots_offset).
 * Returns 0 or -QCOW2_ECORRUPT/-ENOMEM with a message in err. */
Q2_HIDDEN int q2_snap_parse(const uint8_t *buf, size_t len, uint64_t table_off,
                            uint32_t count, unsigned version,
                            uint64_t image_size, struct q2_snapshot **out,
                            char *err, size_t errlen);
Q2_HIDDEN void q2_snap_free(struct q2_snapshot *s, unsigned n);
/* Bytes from the table's offset to the end of its last entry (0: none). */
/* in[0..len), n parsed entries, rewritten with complete extra data (at
 * least 24 bytes, QEMU's check repair); *out malloc'd. */
Q2_HIDDEN int q2_snap_complete(const uint8_t *in, size_t len, uint32_t n,
                               uint64_t image_size, uint8_t **out,
                               size_t *out_len);
Q2_HIDDEN uint64_t q2_snap_table_len(const struct q2_snapshot *s, unsigned n,
                                     uint64_t table_off);

/* ---- Bitmaps (bitmap.c) ---- */
struct q2_bitmap {
    struct qcow2_bitmap pub;
    char *name;
    bool tracked; /* enabled: this writer sets its bits (and in_use) */
};

Q2_HIDDEN int q2_bitmap_parse(const uint8_t *buf, size_t len, uint64_t dir_off,
                              uint32_t count, unsigned cluster_bits,
                              struct q2_bitmap **out, char *err,
                              size_t errlen);
Q2_HIDDEN void q2_bitmap_free(struct q2_bitmap *b, unsigned n);

/* ---- The image handle ---- */
#define Q2_HANDLE_MAGIC 0x71326831U /* "q2h1" */

/* A part of an image an open left aside (struct qcow2_damage). */
#define Q2_MAX_DAMAGE 4
struct q2_damage {
    const char *part;   /* static string */
    uint64_t offset;
    int err;
    char msg[512];
};

enum q2_state { Q2_STATE_NEW = 0, Q2_STATE_OPEN, Q2_STATE_CLOSED };

struct qcow2_image {
    uint32_t magic;            /* Q2_HANDLE_MAGIC */
    enum q2_state state;
    char errmsg[1024];         /* first message of the failing call */
    bool err_set;
    char *filename;            /* as opened */
    struct qcow2_open_opts opts; /* copy of the caller's options */
    struct qcow2_io io;        /* the image file */
    bool io_open;
    enum qcow2_format format;
    int64_t file_size;         /* at open */
    uint64_t virtual_size;     /* guest size of the active view */

    /* qcow2 only */
    struct q2_hdr_parsed hp;   /* decoded header and extensions */
    uint8_t *hdr_buf;          /* the first cluster (or the file) */
    size_t hdr_len;
    unsigned cluster_bits;
    uint64_t cluster_size;
    unsigned l2_bits;          /* log2 of entries per L2 table */
    unsigned l2_entry_len;     /* 8, or 16 with extended L2 */
    bool extended_l2;
    bool external_data;
    bool encrypted;
    unsigned csize_shift;      /* compressed descriptor decoding */
    uint64_t csize_mask;
    uint64_t coffset_mask;
    uint64_t l1_offset;        /* L1 of the active view */
    uint32_t l1_size;
    uint64_t l1_guest_entries; /* L1 entries that map guest data */
    int selected_snapshot;     /* -1: the active image */
    char *backing_name;        /* NUL-terminated copies */
    char *backing_format;
    char *backing_path;        /* resolved */
    char *data_file_name;
    struct q2_snapshot *snaps;
    unsigned n_snaps;
    /* check-mode opens (QCOW2_OPEN_CHECK): entries of the table on disk
     * past the ones loaded (beyond 65536, or past 64 MiB), which a check
     * reports and -r all drops; snap_too_big: the 64 MiB limit did it */
    uint32_t snap_overhang;
    bool snap_too_big;
    struct q2_bitmap *bitmaps;
    unsigned n_bitmaps;
    /* parts a read-only or check-mode open left aside as unusable
     * (qcow2_damage_get): the snapshot table, the bitmap directory; the
     * image opens without them (n_snaps or n_bitmaps 0) */
    struct q2_damage damage[Q2_MAX_DAMAGE];
    unsigned n_damage;
    bool snaps_damaged;        /* the snapshot table is one of them */
    bool bitmaps_damaged;      /* the bitmap directory is one of them */
    struct q2_cache cache;     /* L1 pages, L2 tables, refcount pages */
    struct qcow2_io data_io;   /* external data file, opened on demand */
    bool data_io_open;
    uint8_t *cbuf;             /* compressed input, 2 clusters */
    uint8_t *dbuf;             /* decompressed cluster */
    uint64_t dbuf_key;         /* L2 entry dbuf holds, 0: none */
    int prealloc;              /* -1 unknown, 0/1 QEMU's heuristic */
    bool l1_checked;           /* the active view's L1 passed q2_l1_check */
    int vmstate_checked;       /* snapshot whose L1 passed q2_l1_check for
                                  VM state reads, -1 none */

    /* writer (write.c, refcount.c) */
    bool writable;
    int write_err;             /* sticky: first failed write, refuses more */
    uint64_t free_hint;        /* lowest cluster index that may be free */
    uint64_t *pending_free;    /* clusters to decrement after the next L2/L1
                                  barrier (q2_flush step 5) */
    size_t n_pending, cap_pending;
    uint8_t *wbuf;             /* one cluster of scratch for copy on write */

    /* chain */
    struct qcow2_image *backing;
    unsigned depth;            /* position in the chain, 0 = top */

    /* salvage mode (qcow2_set_salvage in read.c; map.c honours it) */
    bool salvage;              /* unusable metadata and data read as zeros */
    qcow2_unreadable_fn salvage_fn; /* told each range that could not be
                                       read (NULL: nobody) */
    void *salvage_ctx;
    const char *salvage_why;   /* map.c: why the last extent it flagged
                                  QCOW2_EXTENT_UNREADABLE is (a constant) */
    uint64_t salvage_base;     /* guest offset reported as 0 (VM state) */
    bool l1_dup_valid;         /* cache.aux holds the duplicate-entry bits
                                  of the L1 table at l1_dup_offset */
    uint64_t l1_dup_offset;
    uint32_t l1_dup_size;
};

/* A handle that is open (magic and state checked). */
static inline bool q2_usable(const struct qcow2_image *img)
{
    return img && img->magic == Q2_HANDLE_MAGIC && img->state == Q2_STATE_OPEN;
}

/* ---- read.c ---- */
/* The L1 table of snapshot idx is aligned and inside the file. */
Q2_HIDDEN int q2_snapshot_l1_check(struct qcow2_image *img, unsigned idx);

/* Storage of a fixed size (a block device): file_size is its capacity;
 * it never grows, so allocations are checked against it. */
static inline bool q2_fixed_size(const struct qcow2_image *img)
{
    return (img->io.caps & QCOW2_IO_CAP_FIXED_SIZE) != 0;
}

/* ---- map.c ---- */
/* One layer's answer for the bytes at guest offset `start` (< virtual
 * size), at most len bytes, not crossing an L2 table.  Fills kind, offset,
 * csize, length, flags (PRESENT/ZERO/DATA/OFFSET_VALID as the layer alone
 * sees it). */
Q2_HIDDEN int q2_map_layer(struct qcow2_image *img, uint64_t start,
                           uint64_t len, struct qcow2_extent *ext);

/* Validate the whole L1 table of the active view once: reserved bits, L2
 * offsets aligned and inside the file, and no L2 table named twice (which
 * QEMU never writes, and which would let a small file describe an
 * unbounded amount of mapping work). */
Q2_HIDDEN int q2_l1_check(struct qcow2_image *img);

/* ---- tables.c: refcount entries through the cache ---- */
/* log2 of the entries of a refcount block */
static inline unsigned q2_rb_bits(const struct qcow2_image *img)
{
    return img->cluster_bits + 3 - img->hp.h.refcount_order;
}
/* entries of the refcount table */
static inline uint64_t q2_rt_entries(const struct qcow2_image *img)
{
    return ((uint64_t)img->hp.h.refcount_table_clusters << img->cluster_bits)
           / 8;
}
/* Offset of the refcount block of table index rt (0: none; checked). */
Q2_HIDDEN int q2_rt_get(struct qcow2_image *img, uint64_t rt, uint64_t *out);
/* Name block rb_off in table entry rt (a dirty REFTABLE page). */
Q2_HIDDEN int q2_rt_set(struct qcow2_image *img, uint64_t rt, uint64_t rb_off);
/* The refcount block of table index rt (*page NULL: none). */
Q2_HIDDEN int q2_rb_page(struct qcow2_image *img, uint64_t rt,
                         const uint8_t **page);
/* Entry i of a refcount block of 1 << order bits per entry (widths below
 * 8 bits pack LSB first within a byte). */
Q2_HIDDEN uint64_t q2_rc_entry_get(const uint8_t *blk, unsigned order,
                                   uint64_t i);
Q2_HIDDEN void q2_rc_entry_set(uint8_t *blk, unsigned order, uint64_t i,
                               uint64_t v);
/* Clusters below `end` with a non-zero refcount, counting stops at
 * `limit`. */
Q2_HIDDEN int q2_rc_count_used(struct qcow2_image *img, uint64_t end,
                               uint64_t limit, uint64_t *out);
/* End of the image in clusters: one past the last cluster with a
 * non-zero refcount (on a device, where the file size says nothing). */
Q2_HIDDEN int q2_rc_used_end(struct qcow2_image *img, uint64_t *out);
/* ---- alloc.c: allocation and the flush barrier ---- */
/* Record a failed write or flush: the handle refuses later writes with rc
 * (sticky); the message is "what: strerror". */
Q2_HIDDEN int q2_fail(struct qcow2_image *img, int rc, const char *what);
/* The refcount blocks (*nb) and table clusters (*m) placed from cluster
 * `start` on, blocks covering [first, the end of both) and a table of at
 * least min_entries covering that end and cluster `need` too: the fixed
 * point a grown table (alloc.c), a rebuilt one (alloc.c) and qchain-delta's
 * growth model (estimate.c) all use. */
Q2_HIDDEN void q2_rc_layout(const struct qcow2_image *img, uint64_t first,
                            uint64_t start, uint64_t need,
                            uint64_t min_entries, uint64_t *nb, uint64_t *m);
/* Add delta (+1 or -1) to a cluster's refcount in its (cached) block. */
Q2_HIDDEN int q2_rc_update(struct qcow2_image *img, uint64_t cluster,
                           int delta);
/* Allocate n contiguous clusters (refcounts set to 1); *out = offset. */
Q2_HIDDEN int q2_rc_alloc(struct qcow2_image *img, uint64_t n,
                          uint64_t *out);
/* Decrement every cluster touching [off, off+len) once the references to
 * them are gone from durable metadata (after the next flush barrier). */
Q2_HIDDEN int q2_rc_free_later(struct qcow2_image *img, uint64_t off,
                               uint64_t len);
Q2_HIDDEN int q2_rc_apply_pending(struct qcow2_image *img);

/* Write every dirty page in crash-safe order (refcount blocks, table,
 * fsync, L2 tables, fsync, L1, fsync) and apply deferred frees. */
Q2_HIDDEN int q2_flush(struct qcow2_image *img);
/* A synced write of len header bytes at off. */
Q2_HIDDEN int q2_header_write(struct qcow2_image *img, uint64_t off,
                              const void *buf, size_t len);

/* ---- write.c ---- */
/* The write path's allocation decisions, which qchain-delta's model
 * (estimate.c) asks too: does a write into a guest cluster whose L2 entry
 * is e allocate a new cluster (whole_zeros: the write is a whole cluster of
 * zeros); does a write under an L1 entry l1e need a new L2 table (none, or
 * one shared with a snapshot)? */
Q2_HIDDEN bool q2_write_allocates(const struct qcow2_image *img, uint64_t e,
                                  bool whole_zeros);
Q2_HIDDEN bool q2_l2_write_allocates(uint64_t l1e);
/* Clone (write.c): guest data taken from another file by sharing its
 * extents.  A piece is whole clusters of the image at guest offset `guest`
 * (cluster aligned) whose bytes are [src_off, src_off + len) of the file
 * that holds layer's data (q2_data_io). */
struct q2_clone_piece {
    uint64_t guest;
    uint64_t src_off;
    uint64_t len;
    struct qcow2_image *layer;
};
/* Write pieces p[0..n), contiguous in one source (p[i+1].src_off ==
 * p[i].src_off + p[i].len), into one run of new clusters: the bytes shared
 * with the source in one copy_range call (the run and the source both at
 * the storage's block alignment; what it leaves, copied); then the L2
 * entries name the new clusters and what they named before is freed after
 * the barrier (the order of any write that allocates, so the crash
 * guarantees are the same).  *shared gets the bytes the storage copied
 * itself: 0 when it could not start, and then nothing is written (the
 * caller writes the pieces); *cannot is set when it answered that it
 * never can (-ENOTSUP).  0 or -errno. */
Q2_HIDDEN int q2_clone_run(struct qcow2_image *img,
                           const struct q2_clone_piece *p, size_t n,
                           uint64_t *shared, bool *cannot);
/* Replace the snapshot table (old_len bytes at snapshots_offset) with
 * buf[0..len) holding count entries, crash-safely (write.c). */
Q2_HIDDEN int q2_snap_table_switch(struct qcow2_image *img,
                                   const uint8_t *buf, uint64_t len,
                                   uint32_t count, uint64_t old_len);
/* Make a freshly opened image writable, in two steps around the refcount
 * rebuild a dirty image needs: prepare checks that it may be written;
 * begin hooks the flush barrier to the cache, clears unknown autoclear
 * bits and flags enabled bitmaps in use. */
Q2_HIDDEN int q2_write_prepare(struct qcow2_image *img);
Q2_HIDDEN int q2_write_begin(struct qcow2_image *img);
/* Grow to size bytes (any size: the header keeps it exactly, the guest
 * sees whole sectors, as QEMU does). */
Q2_HIDDEN int q2_resize(struct qcow2_image *img, uint64_t size);
/* Rebuild the refcount structures from the references (check.c: counted
 * by the check's walk), then clear the dirty bit. */
Q2_HIDDEN int q2_rebuild_refcounts(struct qcow2_image *img);
/* Write fresh refcount blocks and table for reference counts cnt[0..n)
 * (cluster indexes; the old refcount structures must not be counted), past
 * cluster n (on a device: past the last referenced one), switch the header
 * to them, clear the dirty bit (alloc.c). */
Q2_HIDDEN int q2_rebuild_from_counts(struct qcow2_image *img,
                                     const uint32_t *cnt, uint64_t n);
/* The references every structure makes, per host cluster, counted by the
 * check's walk (check.c: budget, shared tables weighted), without the
 * refcount table and blocks: the counts a rebuild starts from.  *out is
 * malloc'd with *n counters.  -QCOW2_ECORRUPT (the first invalid
 * reference in the message) when a reference cannot be trusted, -E2BIG
 * past the budget. */
Q2_HIDDEN int q2_refs_count(struct qcow2_image *img, uint32_t **out,
                            uint64_t *n);
/* Final flushes at close; returns the first error. */
Q2_HIDDEN int q2_write_close(struct qcow2_image *img);

/* qcow2_commit_estimate with the base read through `base` (a writer's
 * handle on the file at depth stop), or the chain's own layer (NULL). */
Q2_HIDDEN int q2_commit_estimate(struct qcow2_image *top, unsigned stop,
                                 struct qcow2_image *base, unsigned flags,
                                 struct qcow2_commit_estimate *out);

/* QEMU's metadata-preallocation heuristic for an image (0 or 1). */
Q2_HIDDEN int q2_detect_prealloc(struct qcow2_image *img);

/* Refcount of a host cluster (cluster index). */
Q2_HIDDEN int q2_refcount_get(struct qcow2_image *img, uint64_t cluster,
                              uint64_t *out);

/* Host I/O of an image: its file or its external data file. */
Q2_HIDDEN int q2_data_io(struct qcow2_image *img, struct qcow2_io **out);
Q2_HIDDEN int64_t q2_pread_full(const struct qcow2_io *io, void *buf,
                                size_t len, uint64_t off);

/* A buffer for file I/O, page-aligned (freed with free()).  The kernel's
 * page-cache copies depend on the user buffer's alignment: into malloc's
 * 16-byte-aligned large chunks pread ran at a third of the speed on the
 * AMD EPYC machines we measure on (64 KiB reads: 42 us against 12 us). */
Q2_HIDDEN void *q2_buf_alloc(size_t len);

#endif /* Q2_INTERNAL_H */
