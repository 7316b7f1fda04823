/*
 * imgbuild.h - compose qcow2 images byte by byte in memory, for unit tests.
 *
 * No committed binaries and no qemu-img: every test builds exactly the image
 * it needs, then pokes the bytes it wants to break.  Layout of a built image
 * (cluster size cs):
 *
 *   0            header, extensions, end marker, backing file name
 *   cs           refcount table (one cluster)
 *   2*cs ...     L1 table (as many clusters as l1_size needs, at least one)
 *   ...          L2 tables, data clusters, compressed data, snapshot L1/L2
 *                copies, in the order the test asked for them
 *   end          snapshot table, then refcount blocks (written by finish)
 *
 * Refcounts are 16 bits wide and computed by qimg_finish() from the
 * metadata (as qemu-img check would), and the COPIED flags of the active
 * tables are set from them, so untouched built images are consistent.
 * Tests that want inconsistent images poke q->buf after qimg_finish().
 *
 * Every function aborts on misuse (a bug in the test, not in the library).
 */
#ifndef QCHAIN_UNIT_IMGBUILD_H
#define QCHAIN_UNIT_IMGBUILD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "qcow2/qcow2.h"

#define QIMG_EXTL2 0x01 /* extended L2 entries (v3, cluster_bits >= 14) */
#define QIMG_ZSTD 0x02  /* compression type zstd (v3) */

#define QIMG_MAX_EXTS 16
#define QIMG_MAX_SNAPS 8

struct qimg_ext {
    uint32_t type;
    uint32_t len;
    uint8_t data[1024];
};

struct qimg_snap {
    char id[32];
    char name[64];
    uint64_t l1_off;
    uint32_t l1_size;
    uint64_t disk_size;
};

struct qimg {
    unsigned version;       /* 2 or 3 */
    unsigned cluster_bits;
    uint64_t cs;            /* cluster size */
    uint64_t size;          /* virtual size written to the header */
    unsigned flags;         /* QIMG_* */
    unsigned l2_entry_len;  /* 8 or 16 */
    unsigned l2_bits;       /* log2 of entries per L2 table */
    uint64_t incompat, compat, autoclear; /* extra header bits */
    uint64_t salt;          /* mixed into the default data pattern */

    uint8_t *buf;           /* the file */
    size_t len;
    size_t cap;

    uint64_t l1_off;
    uint32_t l1_size;
    uint64_t rt_off;

    struct qimg_ext exts[QIMG_MAX_EXTS];
    unsigned n_exts;
    int feature_ext;        /* index of the feature table in exts, or -1 */
    char backing[1100];     /* backing file name ("" none) */

    struct qimg_snap snaps[QIMG_MAX_SNAPS];
    unsigned n_snaps;
    uint64_t snap_table_off; /* set by qimg_finish */

    bool finished;
};

/* Start an image: version 2 or 3, cluster_bits, virtual size, QIMG_*. */
void qimg_init(struct qimg *q, unsigned version, unsigned cluster_bits,
               uint64_t size, unsigned flags);
void qimg_free(struct qimg *q);

/* n fresh zeroed clusters at the end of the file; returns the offset. */
uint64_t qimg_alloc(struct qimg *q, unsigned n);

/* Host offset of the L2 table for guest offset `guest`, allocated and
 * linked into the active L1 table on first use. */
uint64_t qimg_l2(struct qimg *q, uint64_t guest);
/* File offset of the L2 entry for `guest` (allocating the table). */
uint64_t qimg_l2_entry_off(struct qimg *q, uint64_t guest);
/* Raw L2 entry (first 64 bits) and, with extended L2, the bitmap. */
void qimg_set_l2(struct qimg *q, uint64_t guest, uint64_t entry);
void qimg_set_bitmap(struct qimg *q, uint64_t guest, uint64_t bitmap);

/* A data cluster for the guest cluster at `guest`: cs bytes from data, or
 * the pattern qimg_pattern(.., guest ^ q->salt) when data is NULL.  With
 * extended L2 all 32 subclusters are marked allocated.  Returns the host
 * offset. */
uint64_t qimg_data(struct qimg *q, uint64_t guest, const void *data);
/* Map the guest cluster to an existing host cluster (no allocation). */
void qimg_map_at(struct qimg *q, uint64_t guest, uint64_t host);
/* Zero cluster: the v3 zero flag (standard L2) or all-zero bitmap bits
 * (extended L2); keeps no host cluster. */
void qimg_zero(struct qimg *q, uint64_t guest);
/* Extended L2: a data cluster whose subcluster bitmap is alloc | zero<<32;
 * the cluster is filled with the default pattern. */
uint64_t qimg_data_sub(struct qimg *q, uint64_t guest, uint32_t alloc,
                       uint32_t zero);

/* A compressed cluster: compress cs bytes of `data` (NULL: pattern) with
 * zlib raw deflate (windowBits -12, as QEMU) or zstd, store them `pad`
 * bytes into fresh clusters and point the L2 entry at them.  Returns the
 * byte offset of the compressed data. */
uint64_t qimg_compressed(struct qimg *q, uint64_t guest, const void *data,
                         unsigned type, unsigned pad);
/* A compressed descriptor over raw bytes (garbage, truncated streams). */
uint64_t qimg_compressed_raw(struct qimg *q, uint64_t guest,
                             const void *bytes, size_t n);

/* Header extras. */
void qimg_backing(struct qimg *q, const char *name, const char *format);
void qimg_ext(struct qimg *q, uint32_t type, const void *data, uint32_t len);
void qimg_feature(struct qimg *q, unsigned type, unsigned bit,
                  const char *name);

/* Freeze the active L1/L2 tables as an internal snapshot (deep copy of the
 * tables; data clusters are shared).  disk_size 0: the image size. */
void qimg_snapshot(struct qimg *q, const char *id, const char *name,
                   uint64_t disk_size);

/* Write the header area, snapshot table and refcounts. */
void qimg_finish(struct qimg *q);

/* Deterministic filler. */
void qimg_pattern(uint8_t *buf, size_t len, uint64_t seed);

/* Byte pokes (big-endian) into the built file. */
void qimg_put32(struct qimg *q, uint64_t off, uint32_t v);
void qimg_put64(struct qimg *q, uint64_t off, uint64_t v);
uint64_t qimg_get64(const struct qimg *q, uint64_t off);

/* Open buf[0..len) from memory as `name`.  *out is always set (to NULL only
 * when qcow2_new fails); the caller closes it, also on failure. */
int qimg_open_buf(const void *buf, size_t len, const char *name,
                  const struct qcow2_open_opts *opts,
                  struct qcow2_image **out);
/* qimg_finish (if needed), then qimg_open_buf. */
int qimg_open(struct qimg *q, const char *name,
              const struct qcow2_open_opts *opts, struct qcow2_image **out);

/* ---- A little in-memory file system for chains (opts.open_file) ---- */
#define MEMFS_MAX 16

struct memfs {
    struct {
        char name[256];
        uint8_t *buf;
        size_t len;
    } files[MEMFS_MAX];
    unsigned n;
    unsigned opens;         /* successful opens */
    char last[256];         /* last name asked for */
};

/* Add a copy of a finished image (or of any bytes) under `name`. */
void memfs_add(struct memfs *fs, const char *name, const void *buf,
               size_t len);
void memfs_add_img(struct memfs *fs, const char *name, struct qimg *q);
void memfs_free(struct memfs *fs);
/* The resolver: -ENOENT for unknown names. */
int memfs_open(void *ctx, const char *name, unsigned io_flags,
               struct qcow2_io *out, char *err, size_t errlen);
/* Options wired to the file system. */
void memfs_opts(struct memfs *fs, struct qcow2_open_opts *o);
/* Open `name` from the file system with opts (chain included). */
int memfs_open_image(struct memfs *fs, const char *name,
                     const struct qcow2_open_opts *opts,
                     struct qcow2_image **out);

#endif /* QCHAIN_UNIT_IMGBUILD_H */
