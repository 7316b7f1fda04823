/*
 * qcow2.h - libqcow2, the qchain library: read, write, check and commit
 * QEMU qcow2 and raw images and their backing chains, without QEMU.
 *
 * Conventions of the whole API:
 *  - Functions returning int or int64_t return >= 0 on success and a negative
 *    errno on failure:
 *      -ENOMEM           out of memory
 *      -EIO, ...         errors of the storage backend, passed through
 *      -EINVAL           misuse or a bad argument
 *      -ENOTSUP          unknown incompatible feature, unsupported version,
 *                        encryption, unsupported compression type
 *      -ENOENT           a backing or data file does not exist
 *      -ELOOP            a backing chain loops or is too deep
 *      -EBUSY            the image is in use by another process (locks)
 *      -EROFS            write on a read-only handle
 *      -QCOW2_ECORRUPT   the image is corrupt
 *    qcow2_errmsg() then describes the failure, naming the structure and its
 *    file offset.
 *  - Handles are opaque, created by qcow2_new() and freed by qcow2_close()
 *    (which accepts NULL).  One handle, one thread at a time.  The library
 *    keeps no global state, never prints and never exits.
 *  - Strings returned by a handle live until the handle is closed unless
 *    documented otherwise; buffers passed in stay owned by the caller.
 *  - Out-parameters are written only on success.
 */
#ifndef QCOW2_H
#define QCOW2_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <qcow2/qcow2_io.h>
#include <qcow2/qcow2_version.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Corruption: EUCLEAN ("Structure needs cleaning") on Linux. */
#ifdef EUCLEAN
#define QCOW2_ECORRUPT EUCLEAN
#else
#define QCOW2_ECORRUPT EBADMSG
#endif

/** Library version as "x.y.z". */
QCOW2_API const char *qcow2_version_string(void);

/** Like strerror(3), with QCOW2_ECORRUPT described as image corruption.
 *  Accepts negative or positive codes. */
QCOW2_API const char *qcow2_strerror(int err);

/* ------------------------------------------------------------------------ */
/* Opening                                                                  */
/* ------------------------------------------------------------------------ */

struct qcow2_image;

#define QCOW2_OPEN_RDWR 0x01        /* open for writing */
#define QCOW2_OPEN_NO_BACKING 0x02  /* do not open the backing chain */
#define QCOW2_OPEN_FORCE_SHARE 0x04 /* take no locks (qemu-img -U) */
#define QCOW2_OPEN_CHECK 0x08       /* with RDWR, for qcow2_check repairs
                                       (QEMU's BDRV_O_CHECK): an image
                                       marked corrupt or dirty opens for
                                       writing, unrepaired */

/* Longest chain opened (layers below the top); deeper chains give -ELOOP. */
#define QCOW2_DEFAULT_MAX_DEPTH 256

struct qcow2_open_opts {
    size_t size;        /* sizeof(struct qcow2_open_opts) */
    unsigned flags;     /* QCOW2_OPEN_* */
    const char *format; /* "qcow2", "raw", or NULL to probe */
    unsigned max_depth; /* 0: QCOW2_DEFAULT_MAX_DEPTH */
    size_t cache_bytes; /* metadata cache per image; 0: default (1 MiB) */
    /* Opens backing and external data files by name (already resolved the
     * way QEMU resolves it).  NULL: qcow2_io_open_file().  Returns 0 or
     * -errno, with a message in err. */
    int (*open_file)(void *ctx, const char *name, unsigned io_flags,
                     struct qcow2_io *out, char *err, size_t errlen);
    void *open_ctx;
    /* Receives warnings (a probed format, ...).  NULL: dropped. */
    void (*warn)(void *ctx, const char *msg);
    void *warn_ctx;
};

/** Allocate an empty handle.  @return the handle, or NULL on ENOMEM. */
QCOW2_API struct qcow2_image *qcow2_new(void);

/**
 * Open an image file, and its backing chain unless QCOW2_OPEN_NO_BACKING.
 * Relative backing names resolve against the directory of `path` as given
 * (not its real path), as QEMU resolves them.
 *
 * @param[in] img   a handle from qcow2_new(), not yet opened
 * @param[in] path  file name; kept as the image's filename
 * @param[in] opts  options, or NULL for defaults
 * @return 0, or -EINVAL, -ENOMEM, -ENOENT, -ENOTSUP, -ELOOP, -EBUSY,
 *         -QCOW2_ECORRUPT or a backend errno; qcow2_errmsg() explains.
 */
QCOW2_API int qcow2_open(struct qcow2_image *img, const char *path,
                         const struct qcow2_open_opts *opts);

/**
 * Open an image from a caller-supplied backend.  On success and on failure
 * the handle owns `io` (it is closed by qcow2_close()).
 * @param[in] name  the name the image is known by (used for backing-file
 *                  resolution and messages)
 */
QCOW2_API int qcow2_open_io(struct qcow2_image *img, struct qcow2_io *io,
                            const char *name,
                            const struct qcow2_open_opts *opts);

/**
 * Close a handle and its whole backing chain.  Accepts NULL.  A writable
 * image is flushed first.
 * @return 0, or the first error of the final flush (the handle is freed
 *         all the same).
 */
QCOW2_API int qcow2_close(struct qcow2_image *img);

/** Message describing the last failure on this handle ("" if none). */
/**
 * Close a handle as qcow2_close() does (a writable image finished: flushed,
 * its bitmaps consistent again), but hand its storage backend to the caller
 * instead of closing it: the file stays open with its locks, so that no
 * other process can take the image before the caller is done with it
 * (io->close releases it).
 * @return as qcow2_close(), or -EINVAL (nothing done) when img is not a
 *         handle with a backend of its own.
 */
QCOW2_API int qcow2_close_keep_io(struct qcow2_image *img,
                                  struct qcow2_io *io);

QCOW2_API const char *qcow2_errmsg(const struct qcow2_image *img);

/* ------------------------------------------------------------------------ */
/* What an image is                                                         */
/* ------------------------------------------------------------------------ */

enum qcow2_format { QCOW2_FORMAT_RAW = 1, QCOW2_FORMAT_QCOW2 = 2 };

/* The qcow2 header, decoded (host byte order); fields absent from a version
 * 2 header read as their implied values. */
struct qcow2_header {
    uint32_t magic;
    uint32_t version;
    uint64_t backing_file_offset;
    uint32_t backing_file_size;
    uint32_t cluster_bits;
    uint64_t size;
    uint32_t crypt_method;
    uint32_t l1_size;
    uint64_t l1_table_offset;
    uint64_t refcount_table_offset;
    uint32_t refcount_table_clusters;
    uint32_t nb_snapshots;
    uint64_t snapshots_offset;
    uint64_t incompatible_features;
    uint64_t compatible_features;
    uint64_t autoclear_features;
    uint32_t refcount_order;
    uint32_t header_length;
    uint8_t compression_type;
};

struct qcow2_info {
    enum qcow2_format format;
    const char *filename;        /* as opened */
    uint64_t virtual_size;       /* guest-visible size in bytes */
    int64_t file_size;           /* size of the image file (a device:
                                    its capacity) */
    bool fixed_size;             /* on a block device: it cannot grow */
    int64_t actual_size;         /* allocated bytes of the file, -1 unknown */
    uint32_t cluster_size;       /* qcow2 only */
    unsigned version;            /* qcow2 only: 2 or 3 */
    unsigned refcount_bits;      /* qcow2 only */
    const char *compression;     /* "zlib" or "zstd" (qcow2 v3) */
    bool dirty;                  /* incompatible bit 0 */
    bool corrupt;                /* incompatible bit 1 */
    bool lazy_refcounts;         /* compatible bit 0 */
    bool extended_l2;            /* incompatible bit 4 */
    bool encrypted;              /* crypt_method != 0 */
    unsigned crypt_method;       /* 0 none, 1 aes, 2 luks */
    const char *backing_name;    /* as stored in the header, or NULL */
    const char *backing_format;  /* backing-format extension, or NULL */
    const char *backing_path;    /* resolved the way QEMU does, or NULL */
    const char *data_file;       /* external data file name, or NULL */
    bool data_file_raw;          /* autoclear bit 1 */
    bool has_external_data;      /* incompatible bit 2 */
    unsigned nb_extensions;
    unsigned nb_features;        /* entries of the feature name table */
    unsigned nb_snapshots;
    unsigned nb_bitmaps;
    bool bitmaps_valid;          /* autoclear bit 0 with the extension */
};

/** Describe an open image.  @return 0 or -EINVAL. */
QCOW2_API int qcow2_info_get(const struct qcow2_image *img,
                             struct qcow2_info *out);

/*
 * Damaged parts.  A part of an image that the views of a read-only open
 * do not need (the snapshot table for the current view, the bitmap
 * directory) may be unusable: past the end of a truncated file, or
 * malformed.  A read-only open, or a check-mode one (QCOW2_OPEN_CHECK),
 * then opens the image without it: the warn callback gets a message with
 * the part's offset, the part reads as empty (no snapshots, no bitmaps),
 * the snapshot calls refuse with -QCOW2_ECORRUPT, and qcow2_check reports
 * it (and with QCOW2_CHECK_FIX_ALL drops an unusable snapshot table).  A
 * writable open refuses such an image as before.
 */
struct qcow2_damage {
    const char *part;     /* "snapshot table" or "bitmap directory" */
    uint64_t offset;      /* file offset where it is broken */
    int err;              /* what the open would have failed with */
    const char *message;  /* what is wrong (owned by the handle) */
};

/** i-th part an open left aside.  @return 0 or -EINVAL (no such part). */
QCOW2_API int qcow2_damage_get(const struct qcow2_image *img, unsigned i,
                               struct qcow2_damage *out);

/**
 * Decode the header fields of a qcow2 file from its first bytes,
 * buf[0..len), without judging them: for describing an image an open
 * refused.  Fields whose bytes lie past len (a truncated file) are left
 * 0; version 3 fields only when the version says 3 or more.
 * @return the bytes of buf the decoded fields cover (8 .. 105), or 0 when
 *         buf does not start with the qcow2 magic (out untouched).
 */
QCOW2_API size_t qcow2_header_decode(const void *buf, size_t len,
                                     struct qcow2_header *out);

/** The decoded header of a qcow2 image; NULL for raw images. */
QCOW2_API const struct qcow2_header *
qcow2_header_get(const struct qcow2_image *img);

/* Header extension magics (the spec's). */
#define QCOW2_EXT_BACKING_FORMAT 0xe2792acaU
#define QCOW2_EXT_FEATURE_TABLE 0x6803f857U
#define QCOW2_EXT_BITMAPS 0x23852875U
#define QCOW2_EXT_CRYPTO 0x0537be77U
#define QCOW2_EXT_DATA_FILE 0x44415441U

struct qcow2_extension {
    uint32_t type;       /* magic */
    uint32_t length;     /* data length */
    uint64_t offset;     /* file offset of the extension's 8-byte header */
    const uint8_t *data; /* length bytes, owned by the handle */
    bool known;          /* one of the five defined types */
};

/** i-th header extension in file order.  @return 0 or -EINVAL (range). */
QCOW2_API int qcow2_extension_get(const struct qcow2_image *img, unsigned i,
                                  struct qcow2_extension *out);

struct qcow2_feature {
    unsigned type;  /* 0 incompatible, 1 compatible, 2 autoclear */
    unsigned bit;   /* 0..63 */
    char name[47];  /* NUL-terminated */
};

/** i-th entry of the feature name table.  @return 0 or -EINVAL. */
QCOW2_API int qcow2_feature_get(const struct qcow2_image *img, unsigned i,
                                struct qcow2_feature *out);

struct qcow2_snapshot {
    uint64_t entry_offset;     /* file offset of the table entry */
    uint64_t l1_table_offset;
    uint32_t l1_size;
    const char *id;            /* NUL-terminated copies */
    const char *name;
    uint32_t date_sec;
    uint32_t date_nsec;
    uint64_t vm_clock_nsec;
    uint64_t vm_state_size;    /* 64-bit extra field if present, else 32 */
    uint32_t vm_state_size32;
    bool has_disk_size;
    uint64_t disk_size;        /* extra data; else the image's size */
    bool has_icount;
    uint64_t icount;           /* extra data; -1 disabled */
    uint32_t extra_data_size;
    const uint8_t *extra_data; /* extra_data_size bytes */
};

/** i-th internal snapshot.  @return 0 or -EINVAL. */
QCOW2_API int qcow2_snapshot_get(const struct qcow2_image *img, unsigned i,
                                 struct qcow2_snapshot *out);

/** Index of the snapshot whose id, or else whose name, is `which`.
 *  @return the index, -ENOENT, or -QCOW2_ECORRUPT when the snapshot
 *          table is unusable (qcow2_damage_get). */
QCOW2_API int qcow2_snapshot_find(const struct qcow2_image *img,
                                  const char *which);

/**
 * Switch the guest view of this image (not of its backing files) to an
 * internal snapshot: reads and maps then use the snapshot's L1 table and
 * disk size.  The image must be opened read-only.
 * @return 0, -ENOENT (no such snapshot), -EINVAL, -QCOW2_ECORRUPT (also
 *         when the open left the snapshot table aside as unusable).
 */
QCOW2_API int qcow2_snapshot_select(struct qcow2_image *img,
                                    const char *which);

#define QCOW2_BITMAP_IN_USE 0x1
#define QCOW2_BITMAP_AUTO 0x2
#define QCOW2_BITMAP_EXTRA_DATA_COMPATIBLE 0x4

struct qcow2_bitmap {
    uint64_t entry_offset;     /* file offset of the directory entry */
    uint64_t table_offset;
    uint32_t table_size;
    uint32_t flags;            /* QCOW2_BITMAP_* */
    uint8_t type;
    uint8_t granularity_bits;
    uint32_t extra_data_size;
    const char *name;          /* NUL-terminated copy */
};

/** i-th persistent bitmap of the directory.  @return 0 or -EINVAL. */
QCOW2_API int qcow2_bitmap_get(const struct qcow2_image *img, unsigned i,
                               struct qcow2_bitmap *out);

/* ------------------------------------------------------------------------ */
/* Chains                                                                   */
/* ------------------------------------------------------------------------ */

/** The backing image (owned by img), or NULL when there is none or it was
 *  not opened. */
QCOW2_API struct qcow2_image *qcow2_backing(const struct qcow2_image *img);

/** True when buf[0..len) is all zero bytes (len 0: true). */
QCOW2_API bool qcow2_buffer_is_zero(const void *buf, size_t len);

/** True when QEMU reads `name` as a protocol ("nbd:...", "json:{...}",
 *  even "foo:bar.qcow2": a ':' before any '/'), not as a file name. */
QCOW2_API bool qcow2_name_is_protocol(const char *name);

/**
 * The file a backing name stored in `image` names, resolved as QEMU
 * resolves it: relative to the directory of `image` as given (no realpath,
 * no symlinks followed), absolute names as they are.
 * @return a malloc'd path (the caller frees it), or NULL for a protocol
 *         name, an empty name or no memory.
 */
QCOW2_API char *qcow2_backing_resolve(const char *image, const char *name);

/** The name the image was opened by. */
QCOW2_API const char *qcow2_filename(const struct qcow2_image *img);

/** File identity (device, inode) of the image file.  @return 0 or -ENOTSUP
 *  when the backend has none. */
QCOW2_API int qcow2_identity(const struct qcow2_image *img, uint64_t *dev,
                             uint64_t *ino);

/* ------------------------------------------------------------------------ */
/* Extents: who serves each guest byte                                      */
/* ------------------------------------------------------------------------ */

enum qcow2_kind {
    QCOW2_KIND_UNALLOCATED = 0, /* falls through to the backing file */
    QCOW2_KIND_DATA = 1,        /* host data (offset valid) */
    QCOW2_KIND_ZERO = 2,        /* reads as zeros (zero flag) */
    QCOW2_KIND_COMPRESSED = 3   /* a compressed cluster */
};

/* Flags of an extent, with the meaning of qemu-img map's keys. */
#define QCOW2_EXTENT_PRESENT 0x01      /* allocated in the layer at depth */
#define QCOW2_EXTENT_ZERO 0x02         /* reads as zeros */
#define QCOW2_EXTENT_DATA 0x04         /* read from a file */
#define QCOW2_EXTENT_OFFSET_VALID 0x08 /* offset is a host offset */
#define QCOW2_EXTENT_UNREADABLE 0x10   /* salvage mode (qcow2_set_salvage):
                                          the metadata or data for these
                                          bytes is unusable; they read as
                                          zeros (ZERO is set too) */

struct qcow2_extent {
    uint64_t start;             /* guest offset */
    uint64_t length;            /* guest bytes, > 0 */
    uint64_t offset;            /* host offset (OFFSET_VALID), or the byte
                                   offset of compressed data */
    uint32_t csize;             /* compressed: bytes to read at offset */
    unsigned depth;             /* 0 = the image itself, 1 = its backing.. */
    enum qcow2_kind kind;       /* the layer's answer for these bytes */
    unsigned flags;             /* QCOW2_EXTENT_* */
    struct qcow2_image *layer;  /* image at depth (owned by the chain) */
    bool in_data_file;          /* offset refers to the external data file */
};

#define QCOW2_MAP_CHAIN 0x01 /* resolve through the backing chain */
#define QCOW2_MAP_HOLES 0x02 /* report holes of the host file as zeros, as
                                qemu-img map does */
#define QCOW2_MAP_HOST_HOLES 0x04 /* always look for holes of the host file
                                     inside data clusters (not only when
                                     QEMU would); they get ZERO with DATA */

/**
 * Describe the guest bytes starting at `start`: the longest run (at most
 * `len` bytes, and not crossing an L2 table) that has one answer.  Callers
 * walk a range by calling again at start + ext->length; runs of equal
 * answers in consecutive calls are theirs to merge.
 *
 * Without QCOW2_MAP_CHAIN only this image is consulted (depth 0).
 * @return 0, -EINVAL (start beyond the virtual size, len 0),
 *         -QCOW2_ECORRUPT (a table or entry is invalid), backend errors.
 */
QCOW2_API int qcow2_map(struct qcow2_image *img, uint64_t start, uint64_t len,
                        unsigned flags, struct qcow2_extent *ext);

/**
 * Like qcow2_map with QCOW2_MAP_CHAIN, but only the layers above depth
 * stop_depth are asked: a range none of them allocates comes back with
 * depth == stop_depth, kind QCOW2_KIND_UNALLOCATED, no flags, and layer =
 * the image at stop_depth (what a commit into that image would not copy).
 * A range past the end of a shorter backing file above it reads as zeros
 * and comes back with QCOW2_EXTENT_ZERO.
 * @return as qcow2_map; -EINVAL when stop_depth is 0.
 */
QCOW2_API int qcow2_map_above(struct qcow2_image *img, uint64_t start,
                              uint64_t len, unsigned flags,
                              unsigned stop_depth, struct qcow2_extent *ext);

/**
 * Do two extents (from qcow2_map of any chains) name the same host bytes of
 * the same file: both data at one host offset (or both compressed at one
 * offset and length) of layers that are the same file by device and inode?
 * Such ranges read alike without being read (two overlays of one base).
 */
QCOW2_API bool qcow2_extent_same_bytes(const struct qcow2_extent *a,
                                       const struct qcow2_extent *b);

/** Guest-visible size of the image (of the selected snapshot, if any). */
QCOW2_API uint64_t qcow2_virtual_size(const struct qcow2_image *img);

/**
 * Read guest data through the chain.  Bytes past the virtual size are not
 * readable; reads that stop there are short.
 * @return bytes read, or -errno (-ENOTSUP on encrypted images,
 *         -QCOW2_ECORRUPT on bad metadata or undecodable compressed data).
 */
QCOW2_API int64_t qcow2_pread(struct qcow2_image *img, void *buf, size_t len,
                              uint64_t off);

/**
 * Told, in salvage mode, of a guest range that could not be read and reads
 * as zeros: `start` and `length` in guest bytes of the view read (for a VM
 * state, bytes of the VM state), `reason` a short constant description
 * ("data cluster past the end of the file", ...), prefixed with
 * "backing file 'NAME': " when a backing layer is at fault; valid during
 * the call only.
 */
typedef void (*qcow2_unreadable_fn)(void *ctx, uint64_t start,
                                    uint64_t length, const char *reason);

/**
 * Salvage mode, for getting out what a damaged image still holds: maps
 * and reads of this image (and of the layers of its chain) no longer fail
 * on unusable parts, which read as zeros instead and are reported:
 *  - qcow2_map returns such a range as an extent flagged
 *    QCOW2_EXTENT_UNREADABLE | QCOW2_EXTENT_ZERO (kind QCOW2_KIND_ZERO)
 *    and tells `fn` of it: an L1 entry with reserved bits, an L2 table
 *    misaligned, past the end of the file, unreadable or named by an
 *    earlier L1 entry too (the whole range of the table, one extent), an
 *    invalid L2 entry, a data cluster misaligned or (partly) past the end
 *    of the file, compressed data starting past it;
 *  - qcow2_pread, qcow2_layer_pread and qcow2_vmstate_pread zero and report
 *    what fails while reading: data the backend cannot read, compressed
 *    clusters that cannot be read or decompressed (and what qcow2_map
 *    flags, should they be asked for it).
 * A range is reported each time a call meets it; callers merge.  Work and
 * memory stay bounded by the file, not by the virtual size (an L2 table
 * that cannot be used is one extent).  Failures that are not damage
 * (encryption, a missing external data file, no memory, a bad argument)
 * still fail.  Without salvage mode nothing of this changes.
 * @param[in] img  a read-only handle; its backing layers get the mode too
 * @param[in] fn   the reporter, or NULL to leave salvage mode
 * @return 0, -EINVAL (not an open read-only handle).
 */
QCOW2_API int qcow2_set_salvage(struct qcow2_image *img,
                                qcow2_unreadable_fn fn, void *ctx);

/**
 * Read from the host file of an image (its own file, or its external data
 * file when data_file is true); bytes past EOF read as zeros.
 * @return len or -errno.
 */
QCOW2_API int64_t qcow2_host_pread(struct qcow2_image *img, bool data_file,
                                   void *buf, size_t len, uint64_t off);

/* ------------------------------------------------------------------------ */
/* Writing (open with QCOW2_OPEN_RDWR)                                      */
/* ------------------------------------------------------------------------ */
/*
 * Writes are crash safe by order: a cluster's refcount and data are durable
 * before any table points to it, so a writer killed at any moment leaves an
 * image with leaked clusters at worst.  Metadata is written back in batches
 * (when the cache fills, on qcow2_flush, at close).  After a failed write
 * the handle refuses further writes with the same error.  Writing refuses
 * images with the corrupt bit (-EACCES), encryption or an external data file
 * (-ENOTSUP).  An image with the dirty bit (lazy refcounts, not closed
 * cleanly) gets its refcounts rebuilt at open.  Enabled persistent bitmaps
 * record every written range (flagged in use until a clean close).
 */

/** Write guest data.  @return len, -EROFS, -EINVAL (beyond the virtual
 *  size), -ENOSPC/-EIO/... from the backend, -EFBIG (QEMU limits). */
QCOW2_API int64_t qcow2_pwrite(struct qcow2_image *img, const void *buf,
                               size_t len, uint64_t off);

/** Make a guest range read as zeros: whole clusters (subclusters) become
 *  zero clusters and release their storage; partial ones get zero bytes.
 *  @return 0 or as qcow2_pwrite. */
QCOW2_API int qcow2_pwrite_zeroes(struct qcow2_image *img, uint64_t off,
                                  uint64_t len);

/** Discard whole clusters of a range as QEMU does: they read as zeros
 *  afterwards (version 3, or without a backing file); partial clusters and
 *  version 2 images over a backing file are left as they are.
 *  @return 0 or as qcow2_pwrite. */
QCOW2_API int qcow2_discard(struct qcow2_image *img, uint64_t off,
                            uint64_t len);

/** Make everything written so far durable.  @return 0 or -errno. */
QCOW2_API int qcow2_flush(struct qcow2_image *img);

/** Grow the virtual size (a multiple of 512).  Data a larger backing file
 *  holds past the old size does not show through.
 *  @return 0, -EINVAL, -ENOTSUP (shrinking), -EFBIG. */
QCOW2_API int qcow2_resize(struct qcow2_image *img, uint64_t size);

/**
 * Name another backing file (qemu-img rebase -u): store `name` (as given;
 * it resolves against this image's directory) and its format; name NULL
 * or "" removes the backing file (and its format extension; fmt is then
 * ignored), after which unallocated ranges read as zeros.  The switch
 * is crash safe: under sector-by-sector tearing the header names the old
 * or the new file, whole, at every moment (one sector write where the
 * backing format extension lies in sector 0, else synced steps).  A header
 * whose extensions leave no room for that is refused (-ENOTSUP) rather
 * than rewritten at once.  The open backing chain of the handle is not
 * changed; reopen to follow the new one.
 * @return 0, -EROFS, -EINVAL (bad name/format, raw image), -ENOTSUP (no
 *         crash-safe way), backend errors.
 */
QCOW2_API int qcow2_set_backing(struct qcow2_image *img, const char *name,
                                const char *format);

/**
 * Could qcow2_set_backing(img, name, fmt) make its switch?  Reads the
 * header only; the image may be open read-only.
 * @return 0, or the error qcow2_set_backing would return before writing
 *         (-ENOTSUP, -EINVAL, ...) with its message.
 */
QCOW2_API int qcow2_set_backing_check(struct qcow2_image *img,
                                      const char *name, const char *fmt);

/* Called as work progresses; a non-zero return cancels (-ECANCELED). */
typedef int (*qcow2_progress_fn)(void *ctx, uint64_t done, uint64_t total);

/* What qcow2_rebase did, in guest bytes. */
struct qcow2_rebase_stats {
    uint64_t data_bytes;      /* written into the image as data */
    uint64_t zero_bytes;      /* written as zeros (zero clusters) */
    uint64_t ranges;          /* runs written */
    uint64_t compared_bytes;  /* read through both chains and compared */
    uint64_t skipped_bytes;   /* equal without reading: zeros on both
                                 sides, or the same host bytes of a layer
                                 both chains share */
    uint64_t allocated_bytes; /* the image's own: not looked at */
};

struct qcow2_rebase_opts {
    size_t size;                /* sizeof(struct qcow2_rebase_opts) */
    /* Gets the guest bytes walked so far and the virtual size; a non-zero
     * return cancels (-ECANCELED).  NULL: none. */
    qcow2_progress_fn progress;
    void *progress_ctx;
    /* Asked between extents: non-zero stops with -ECANCELED, the backing
     * file unchanged (a safe point: run again to finish).  NULL: never. */
    int (*cancel)(void *ctx);
    void *cancel_ctx;
};

/**
 * Safe rebase (qemu-img rebase without -u): write into `img` every range it
 * does not allocate itself where the view through its open backing chain
 * differs from the view through `backing` (a chain the caller opened,
 * read-only is enough; NULL: no backing file, which reads as zeros), then
 * name `name` and `fmt` (NULL: none) as its backing file with
 * qcow2_set_backing.  Ranges that read as zeros through both chains, or
 * that both map to the same host bytes of the same file, are not read;
 * differing ranges that read as zeros are written as zero clusters
 * (version 3).  The guest view of img never changes, and a run stopped
 * anywhere (crash included) is finished by running it again.
 * @param[in]  name  the backing file name to store, NULL iff backing is NULL
 * @param[out] out   what was done (on success only), or NULL
 * @return 0, -EINVAL, -EROFS, -ELOOP (img is in backing's chain),
 *         -ENOTSUP (as qcow2_set_backing), -ECANCELED, or an error of
 *         either image; qcow2_errmsg(img) explains.
 */
QCOW2_API int qcow2_rebase(struct qcow2_image *img,
                           struct qcow2_image *backing, const char *name,
                           const char *fmt,
                           const struct qcow2_rebase_opts *opts,
                           struct qcow2_rebase_stats *out);

/**
 * Rebuild the refcount structures from the references the metadata makes
 * (leaks freed, too-low refcounts raised), as qemu-img check -r all does
 * for refcounts.  The image must be open read-write.
 * @return 0, -EROFS, -QCOW2_ECORRUPT (a reference is invalid: nothing
 *         changed), -ENOMEM, -EFBIG, backend errors.
 */
QCOW2_API int qcow2_rebuild_refcounts(struct qcow2_image *img);

/* ------------------------------------------------------------------------ */
/* Checking                                                                 */
/* ------------------------------------------------------------------------ */

#define QCOW2_CHECK_FIX_LEAKS 0x01 /* free leaked clusters (-r leaks) */
#define QCOW2_CHECK_FIX_ALL 0x03   /* and fix errors (-r all) */

enum qcow2_check_severity {
    QCOW2_CHECK_CORRUPTION = 1, /* counted in corruptions */
    QCOW2_CHECK_LEAK = 2,       /* counted in leaks */
    QCOW2_CHECK_ERROR = 3,      /* the check could not look (check_errors) */
    QCOW2_CHECK_REPAIRED = 4    /* a change a repair made */
};

struct qcow2_check_finding {
    const char *kind;      /* stable short name ("refcount-too-low", ...) */
    enum qcow2_check_severity severity;
    uint64_t offset;       /* host offset concerned */
    uint64_t length;       /* bytes concerned (leaked ranges), else 0 */
    bool recheck;          /* found by the check after a repair */
    const char *message;   /* valid during the callback only */
};

struct qcow2_check_opts {
    size_t size;           /* sizeof(struct qcow2_check_opts) */
    unsigned flags;        /* QCOW2_CHECK_FIX_*: needs a QCOW2_OPEN_RDWR |
                              QCOW2_OPEN_CHECK handle */
    /* Receives every finding; NULL: counted only. */
    void (*finding)(void *ctx, const struct qcow2_check_finding *f);
    void *ctx;
};

/* qemu-img check's counters (QAPI ImageCheck), with its meaning. */
struct qcow2_check_result {
    uint64_t check_errors;
    uint64_t corruptions;
    uint64_t leaks;
    uint64_t corruptions_fixed;
    uint64_t leaks_fixed;
    uint64_t image_end_offset;    /* end of the last cluster in use */
    uint64_t total_clusters;      /* virtual size in clusters */
    uint64_t allocated_clusters;  /* of the active L1 */
    uint64_t fragmented_clusters;
    uint64_t compressed_clusters;
    bool rechecked;               /* a repair ran; counters are the
                                     recheck's, *_fixed the repair's */
    bool rebuilt;                 /* the refcount structures were rebuilt */
};

/**
 * Check a qcow2 image the way `qemu-img check` does: count the references
 * every structure makes to each host cluster (header, L1/L2 of the image
 * and of every snapshot, compressed extents, refcount table and blocks,
 * snapshot table, bitmaps, LUKS header) and compare them with the stored
 * refcounts; check entries (alignment, reserved bits, references past the
 * end of the file, COPIED flags, subcluster bitmaps).  A cluster with
 * no reference but a refcount is a leak; with fewer references than
 * refcount, a leak too (qemu-img's count); below, a corruption.  Leaked
 * clusters without any reference are reported as coalesced ranges
 * (kind "leaked-range").
 *
 * Repairs (opts->flags): FIX_LEAKS lowers refcounts to the references
 * (and fixes COPIED flags when nothing else is wrong); FIX_ALL also raises
 * refcounts (rebuilding the refcount structures when a referenced cluster
 * has none), fixes COPIED flags, drops references past the end of the file
 * (they read as zeros: the entry becomes a zero cluster, an L1 entry
 * unallocated) and unaligned preallocated zero clusters, then checks again.
 * Memory: 4 bytes per cluster of the file, and the refcount table.
 * @return 0 when the check completed (out filled), -EINVAL, -ENOMEM,
 *         -ENOTSUP (not qcow2), -QCOW2_ECORRUPT (a repair needs a rebuild
 *         that FIX_LEAKS does not allow), -E2BIG (the metadata describes
 *         too much work), backend errors.
 */
QCOW2_API int qcow2_check(struct qcow2_image *img,
                          const struct qcow2_check_opts *opts,
                          struct qcow2_check_result *out);

/* ------------------------------------------------------------------------ */
/* Commit                                                                   */
/* ------------------------------------------------------------------------ */

struct qcow2_commit_stats {
    uint64_t data_bytes;       /* guest bytes the layers hold as data */
    uint64_t zero_bytes;       /* guest bytes they mark as zeros */
    uint64_t compressed_bytes; /* part of data_bytes held compressed */
    uint64_t total_bytes;      /* guest size walked */
    bool grown;                /* the base was grown to the top's size */
    uint64_t offloaded_bytes;  /* part of data_bytes copied by the storage
                                  (copy_file_range, reflinks) */
    uint64_t data_runs;        /* guest-contiguous runs of data: how the
                                  data_bytes lie (data_bytes / data_runs is
                                  the mean run a commit writes) */
};

struct qcow2_commit_opts {
    size_t size;                /* sizeof(struct qcow2_commit_opts) */
    /* Gets the guest bytes handled so far and the total the layers hold
     * (data and zeros: qcow2_commit_estimate's data_bytes + zero_bytes,
     * walked first from metadata), at least once at the end with done
     * equal to total; a non-zero return cancels the commit.  NULL: none. */
    qcow2_progress_fn progress;
    void *progress_ctx;
    /* Asked between extents: non-zero stops the commit there with
     * -ECANCELED (a safe point, as every point is: run again, the commit
     * redoes what it had not made durable).  NULL: never. */
    int (*cancel)(void *ctx);
    void *cancel_ctx;
};

/**
 * Copy into `base` everything the layers of `top`'s chain above depth
 * `stop` hold: data (holes of their files inside data clusters become
 * zeros without being copied), zero clusters, and zeros past a shorter
 * backing file; grow the base to the top's size first; flush at the end.
 * `base` is a read-write handle on the image at depth `stop` of `top`'s
 * chain.  The guest view through `top` never changes, and running it
 * again after an interruption writes the same bytes.  A base on a device
 * (which cannot grow) too small for what the commit allocates is refused
 * before anything is written (-ENOSPC).
 * @param[in]  opts  options, or NULL for none
 * @param[out] out   what was done (written on success only), or NULL
 * @return 0, -EINVAL, -EROFS, -ENOSPC, -ECANCELED, or an error of either
 *         image; qcow2_errmsg(top) explains.
 */
QCOW2_API int qcow2_commit(struct qcow2_image *top, unsigned stop,
                           struct qcow2_image *base,
                           const struct qcow2_commit_opts *opts,
                           struct qcow2_commit_stats *out);

/* What a commit would do (qchain-delta), from metadata alone. */
struct qcow2_commit_estimate {
    uint64_t data_bytes;       /* as qcow2_commit_stats */
    uint64_t zero_bytes;
    uint64_t compressed_bytes;
    uint64_t total_bytes;
    bool grows;                /* the base would be grown to the top's size */
    int64_t base_growth_bytes; /* raw: storage allocated minus storage
                                  punched; qcow2: how far the file's end
                                  moves */
    uint64_t new_clusters;     /* qcow2: clusters allocated (data, L2, L1),
                                  before refcount structures */
    uint64_t skipped_bytes;    /* QCOW2_ESTIMATE_TOLERANT: guest bytes whose
                                  metadata could not be read */
    uint64_t base_required_bytes; /* the size the base's file or device must
                                     have once the commit is done: qcow2,
                                     where the image ends after the growth;
                                     raw, the top's virtual size when it
                                     grows, else the base's size */
    uint64_t base_capacity_bytes; /* a base on a device (which cannot grow):
                                     its size; 0 for a file */
    uint64_t data_runs;        /* as qcow2_commit_stats */
};

#define QCOW2_ESTIMATE_TOLERANT 0x1 /* skip unreadable L2 ranges (images
                                       another process is writing) */

/**
 * Walk what qcow2_commit(top, stop, ...) would copy, without writing or
 * reading guest data: the same data and zero figures the commit reports,
 * and the growth of the base (the image at depth stop of top's chain) as
 * the write path would allocate it.
 * @return 0, -EINVAL, or an error of an image; qcow2_errmsg(top) explains.
 */
QCOW2_API int qcow2_commit_estimate(struct qcow2_image *top, unsigned stop,
                                    unsigned flags,
                                    struct qcow2_commit_estimate *out);

/* ------------------------------------------------------------------------ */
/* Creating images                                                          */
/* ------------------------------------------------------------------------ */

#define QCOW2_COMPRESSION_ZLIB 0
#define QCOW2_COMPRESSION_ZSTD 1

struct qcow2_create_opts {
    size_t size;                /* sizeof(struct qcow2_create_opts) */
    enum qcow2_format format;   /* 0: qcow2 */
    uint64_t virtual_size;      /* bytes */
    unsigned version;           /* 2 (compat 0.10) or 3 (1.1); 0: 3 */
    uint32_t cluster_size;      /* 512 .. 2 MiB, power of two; 0: 64 KiB */
    unsigned refcount_bits;     /* 1 .. 64, power of two; 0: 16 */
    unsigned compression_type;  /* QCOW2_COMPRESSION_* */
    bool extended_l2;           /* needs v3 and clusters >= 16 KiB */
    bool lazy_refcounts;        /* the compatible bit (v3) */
    const char *backing_name;   /* stored as given, or NULL */
    const char *backing_format; /* required with a backing name */
};

/** Validate creation options as qemu-img create does.
 *  @return 0 or -EINVAL with a message in err. */
QCOW2_API int qcow2_create_check(const struct qcow2_create_opts *opts,
                                 char *err, size_t errlen);

/**
 * Create a new image file.  Fails with -EEXIST when path exists.  The
 * image is made under a temporary name beside path, flushed, then named
 * (qcow2_io_create_temp, qcow2_io_publish): after a power loss path holds
 * the whole image or nothing; on any failure the file is removed.  A path that names a block device (an LVM
 * volume) is written over instead, as qemu-img create does: the device
 * keeps its size; a raw image is the device itself (nothing is written); a
 * qcow2 image's metadata (qcow2_create_size bytes) is written over the
 * device's start.  The device is opened exclusively and with writer locks;
 * when it is smaller than the image needs nothing is written (-ENOSPC).
 * @return 0, -EEXIST, -EINVAL (options), -ENOSPC, -EBUSY, or a backend
 *         errno; err explains.
 */
QCOW2_API int qcow2_create(const char *path,
                           const struct qcow2_create_opts *opts, char *err,
                           size_t errlen);

/**
 * Bytes qcow2_create writes for these options: for qcow2, the header,
 * refcount structures and L1 table (where the new image ends); for raw,
 * the virtual size.  The smallest device such an image fits on.
 * @param[out] out  the byte count
 * @return 0, -EINVAL (options), -ENOMEM; err explains.
 */
QCOW2_API int qcow2_create_size(const struct qcow2_create_opts *opts,
                                uint64_t *out, char *err, size_t errlen);

/** Create an image in an empty caller-owned backend (name: for messages).
 *  @return as qcow2_create. */
QCOW2_API int qcow2_create_io(struct qcow2_io *io, const char *name,
                              const struct qcow2_create_opts *opts,
                              char *err, size_t errlen);

/* ------------------------------------------------------------------------ */
/* Forensic reads                                                           */
/* ------------------------------------------------------------------------ */
/*
 * What one layer of a chain holds by itself (the data upper layers may
 * shadow), and the saved VM state (RAM and devices, as QEMU's savevm wrote
 * it) of an internal snapshot.  They read; nothing here writes.
 */

/**
 * Read guest data of this image alone: ranges it does not allocate read as
 * zeros and its backing file is never consulted (`qemu-img convert` of the
 * image opened with "backing": null).  Map the same view with qcow2_map
 * without QCOW2_MAP_CHAIN.  Reads stop at the image's virtual size.
 * @return bytes read (short at the end), or as qcow2_pread.
 */
QCOW2_API int64_t qcow2_layer_pread(struct qcow2_image *img, void *buf,
                                    size_t len, uint64_t off);

/* Where a snapshot's VM state lives in its guest address space. */
struct qcow2_vmstate {
    uint64_t offset; /* guest offset of its first byte: the first L1 index
                        past the snapshot's disk size, shifted by
                        cluster_bits + l2_bits (QEMU's vm_state_offset) */
    uint64_t size;   /* bytes (the snapshot's vm_state_size) */
};

/**
 * Locate the VM state of internal snapshot `idx` (qcow2_snapshot_find) and
 * check that the snapshot's L1 table is in the file and maps all of it.
 * @return 0, -EINVAL (no such snapshot, raw image), -QCOW2_ECORRUPT (a VM
 *         state size or L1 table no valid image has).
 */
QCOW2_API int qcow2_vmstate_get(struct qcow2_image *img, unsigned idx,
                                struct qcow2_vmstate *out);

/**
 * Describe VM state bytes of snapshot `idx` from offset `start` (relative
 * to the VM state's first byte; ext->start is too), as qcow2_map does for
 * guest data of the image alone: unallocated ranges read as zeros.
 * @return 0, -EINVAL (range outside the VM state), or as qcow2_vmstate_get
 *         and qcow2_map.
 */
QCOW2_API int qcow2_vmstate_map(struct qcow2_image *img, unsigned idx,
                                uint64_t start, uint64_t len,
                                struct qcow2_extent *ext);

/**
 * Read VM state bytes of snapshot `idx` at offset `off` of the VM state,
 * through the snapshot's L1 table (data, zero, compressed and unallocated
 * clusters as for guest data; never the backing file).  Reads stop at the
 * VM state's size.
 * @return bytes read (short at the end), or as qcow2_vmstate_get and
 *         qcow2_pread.
 */
QCOW2_API int64_t qcow2_vmstate_pread(struct qcow2_image *img, unsigned idx,
                                      void *buf, size_t len, uint64_t off);

#ifdef __cplusplus
}
#endif
#endif /* QCOW2_H */
