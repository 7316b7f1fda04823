/*
 * qcow2_io.h - storage backends for libqcow2.
 *
 * Every byte the library reads or writes goes through a struct qcow2_io, so
 * images (and whole backing chains) can live in files, in memory (unit tests,
 * fuzzers) or anywhere a caller can read from.
 *
 * Contract for implementers (read it as sqlite3_io_methods' is read):
 *  - pread returns the number of bytes read, which is less than len only at
 *    end of file (0 at or past EOF); it never returns garbage past EOF.
 *    Errors are negative errno values.  No alignment is assumed.
 *  - pwrite returns len or a negative errno; a short write is an error.
 *  - flush makes every completed pwrite durable; returns 0 or -errno.
 *  - size returns the current size in bytes or -errno (for a block device:
 *    its capacity, never 0 as st_size says).
 *  - Optional members may be NULL; the library then assumes the answer
 *    stated next to each one.
 *  - close releases ctx; called exactly once by whoever owns the io.
 */
#ifndef QCOW2_IO_H
#define QCOW2_IO_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#ifndef QCOW2_API
#define QCOW2_API __attribute__((visibility("default")))
#endif

#define QCOW2_IO_VERSION 1

struct qcow2_io {
    unsigned version; /* QCOW2_IO_VERSION */
    void *ctx;        /* passed to every method */
    int64_t (*pread)(void *ctx, void *buf, size_t len, uint64_t off);
    int64_t (*pwrite)(void *ctx, const void *buf, size_t len, uint64_t off);
    int (*flush)(void *ctx);
    int (*truncate)(void *ctx, uint64_t size);
    int64_t (*size)(void *ctx);
    void (*close)(void *ctx);
    /* Optional: is [off, off+len) backed by storage?  Sets *pnum to the length
     * of the run starting at off (> 0, <= len) that has one answer and returns
     * 1 for data, 0 for a hole, or -errno.  NULL: everything is data. */
    int (*block_status)(void *ctx, uint64_t off, uint64_t len, uint64_t *pnum);
    /* Optional: identity of the underlying object (device, inode) for loop
     * detection.  Returns 0 or -errno.  NULL: the object has no identity. */
    int (*identity)(void *ctx, uint64_t *dev, uint64_t *ino);
    /* Optional: bytes of storage really allocated (st_blocks * 512).
     * NULL: equal to size. */
    int64_t (*allocated)(void *ctx);
    /* Optional: make [off, off+len) read as zeros and release its storage
     * without changing the size (a hole).  Returns 0, -ENOTSUP when the
     * storage cannot, or -errno.  NULL: zeros are written instead. */
    int (*punch)(void *ctx, uint64_t off, uint64_t len);
    /* Optional: copy len bytes at src_off of `src` (another backend) to
     * dst_off of this one inside the storage layer, where that beats
     * reading and writing (reflinks: shared extents, no bytes written).
     * Returns the bytes copied, fewer than len only where src ends;
     * -EAGAIN: not this range (alignment), copy it by hand; -ENOTSUP:
     * never for this destination; or -errno.  NULL: the library reads and
     * writes. */
    int64_t (*copy_range)(void *ctx, const struct qcow2_io *src,
                          uint64_t src_off, uint64_t dst_off, size_t len);
    /* Optional: start writing back what was written so far, without
     * waiting (sync_file_range), so that the storage works while the
     * writer goes on and the next flush has less to wait for.  A hint:
     * no durability is implied.  NULL: nothing is started early. */
    void (*writeback)(void *ctx);
    /* What the storage is (QCOW2_IO_CAP_*); 0 for a file that can grow. */
    unsigned caps;
    void *reserved[1]; /* zero */
};

/* The storage has a fixed size (a block device, an LVM volume): size()
 * is its capacity, it never grows or shrinks, and truncate is never
 * called.  The library checks every write and allocation against the
 * capacity before writing and fails with -ENOSPC instead. */
#define QCOW2_IO_CAP_FIXED_SIZE 0x1

/* Flags for qcow2_io_open_file(). */
#define QCOW2_IO_RDWR 0x01        /* open read-write (default read-only) */
#define QCOW2_IO_CREATE 0x02      /* create; fail if it exists (O_EXCL) */
#define QCOW2_IO_NOLOCK 0x04      /* take no QEMU-compatible locks (-U) */

/**
 * Open a POSIX file or block device as a storage backend, taking the
 * byte-range OFD locks QEMU takes (reader: bytes 100, 201, 203; writer:
 * 100, 101, 103, 201, 203) unless QCOW2_IO_NOLOCK is given.  A block device
 * gets QCOW2_IO_CAP_FIXED_SIZE, its size from the device (BLKGETSIZE64),
 * zeroing through the device (fallocate, which discards only where the
 * device guarantees zeros, or writes zeros in the kernel), and, opened for
 * writing, an exclusive open (O_EXCL: refused while it is mounted or held
 * by another exclusive user).  QCOW2_IO_CREATE on an existing block
 * device fails with -EEXIST like on a file; FIFOs and sockets are refused.
 *
 * @param[in]  path   file name
 * @param[in]  flags  QCOW2_IO_* flags
 * @param[out] io     filled on success; the caller owns it (io->close)
 * @param[out] err    optional buffer for a message on failure
 * @param[in]  errlen size of err
 * @return 0, -errno from open(2), or -EBUSY when another process holds a
 *         conflicting lock (err names the lock).
 */
QCOW2_API int qcow2_io_open_file(const char *path, unsigned flags,
                                 struct qcow2_io *io, char *err,
                                 size_t errlen);

/**
 * Create the file that will become `path` under a temporary name in the
 * same directory (".NAME.qchain-tmp"), opened for writing as with
 * QCOW2_IO_CREATE plus `flags` (QCOW2_IO_NOLOCK).  Write it whole, flush
 * it, close it, then give it its name with qcow2_io_publish(), or unlink
 * tmp to drop it.  A leftover temporary file of an interrupted creation
 * (no process holds its locks) is replaced.
 *
 * @param[in]  path    the name the file will have
 * @param[out] tmp     receives the temporary name
 * @return 0, -EEXIST when path exists, or as qcow2_io_open_file().
 */
QCOW2_API int qcow2_io_create_temp(const char *path, unsigned flags,
                                   struct qcow2_io *io, char *tmp,
                                   size_t tmplen, char *err, size_t errlen);

/**
 * Give a complete, flushed temporary file its name, crash-atomically: it is
 * renamed only when `path` does not exist, then path's directory is synced,
 * so that after a power loss the name holds the whole file or nothing.
 * @return 0, -EEXIST when path appeared meanwhile (tmp is left), or -errno.
 */
QCOW2_API int qcow2_io_publish(const char *tmp, const char *path);

/**
 * Sync the directory that holds `path` (its entries: a file created,
 * renamed or removed there is durable once this returns 0).
 * @return 0 or -errno.
 */
QCOW2_API int qcow2_io_sync_dir(const char *path);

/**
 * Report QEMU lock bytes held on a file by other processes.
 * @return a bitmask: bit n set when byte 100+n is held, bit 8+n when byte
 *         200+n is held (n = 0..4), or -errno.
 */
QCOW2_API int qcow2_io_lock_probe(const char *path);

/**
 * An in-memory backend over a growable copy of buf[0..len).
 * @param[in]  buf  initial content (copied), may be NULL when len is 0
 * @param[out] io   filled on success; io->close frees the buffer
 * @return 0 or -ENOMEM.
 */
QCOW2_API int qcow2_io_open_mem(const void *buf, size_t len,
                                struct qcow2_io *io);

#ifdef __cplusplus
}
#endif
#endif /* QCOW2_IO_H */
