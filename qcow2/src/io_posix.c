/*
 * io_posix.c - POSIX file backend with QEMU-compatible image locking.
 *
 * QEMU's file driver (block/file-posix.c) announces what it does with an
 * image through one-byte OFD read locks: byte 100+n while it holds
 * permission n, byte 200+n while it refuses to share permission n
 * (n: 0 consistent-read, 1 write, 2 write-unchanged, 3 resize).  A reader
 * holds 100 and refuses to share write and resize (201, 203); a writer also
 * holds 101 and 103.  We take the same bytes, so QEMU and qchain see each
 * other, and close the check/lock race the way QEMU does: lock our own bytes
 * first, then test for the others' (F_OFD_GETLK with a write lock conflicts
 * exactly with read locks held through other open file descriptions).
 *
 * A writer is stricter than QEMU: it refuses when any other process holds
 * any lock byte at all (a running VM reading the image as a backing file).
 *
 * Block devices (LVM volumes) are storage of a fixed size: st_size is 0
 * for them, so the size comes from BLKGETSIZE64; they cannot be truncated
 * (the backend says so with QCOW2_IO_CAP_FIXED_SIZE and refuses); zeroing
 * goes through fallocate on the device, which discards only where the
 * device guarantees that the range reads back as zeros and otherwise
 * writes zeros in the kernel; extents are never shared with files.  A
 * device opened for writing is opened exclusively (O_EXCL), so a mounted
 * file system or another exclusive user refuses us.  The locks are the
 * same bytes on the device node, which is what QEMU locks too.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "format.h"
#include "internal.h"

#define NPERMS 5 /* bits 0..4, 4 = the removed graph-mod permission */

static const char *const perm_names[NPERMS] = {
    "consistent read", "write", "write unchanged", "resize", "graph mod"};

/* The last answer of SEEK_HOLE/SEEK_DATA, valid until this handle
 * changes the file (a reader's file is locked against writers).  Walks
 * ask about the same run many times (the rest of a cluster, the zeros
 * after a write), and each lseek on ext4 is a walk of its extent tree. */
struct hole_cache {
    uint64_t start, end; /* [start, end) is one run; end == start: none */
    bool data;
    uint64_t hole_at;    /* a hole is known to start here (UINT64_MAX) */
    uint64_t block;      /* the file system's block size */
};

/* Writeback started in the background: sync_file_range does the file
 * system's work of building the I/O (allocation, bios) in the caller, so
 * a thread takes it and the copy goes on on another CPU. */
struct writeback {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    bool started, requested, stop;
};

struct posix_file {
    int fd;
    bool blockdev;    /* a block device: fixed size, device zeroing */
    unsigned sector;  /* blockdev: logical block size (fallocate's unit) */
    int share; /* copy_range: 0 not probed, 1 extents shared, -1 cannot */
    struct hole_cache hc;
    struct writeback wb;
};

static void hole_cache_drop(struct posix_file *f)
{
    f->hc.start = f->hc.end = 0;
    f->hc.hole_at = UINT64_MAX;
}

/* [off, off+len) is being written: what of the cached run stays true.
 * Data written into data leaves it data; a hole keeps the part past the
 * last block the write touches (writers move forward, so that is the part
 * asked about next). */
static void hole_cache_write(struct posix_file *f, uint64_t off, uint64_t len)
{
    struct hole_cache *c = &f->hc;
    uint64_t end = off + len, after;

    c->hole_at = UINT64_MAX;
    if (c->end == c->start || end <= c->start || off >= c->end)
        return; /* no overlap */
    if (c->data) {
        if (end > c->end)
            c->end = end; /* the run grows: still data */
        return;
    }
    after = (end + c->block - 1) / c->block * c->block;
    if (after < end || after >= c->end) {
        hole_cache_drop(f);
        return;
    }
    c->start = after;
}

static int64_t posix_pread(void *ctx, void *buf, size_t len, uint64_t off)
{
    struct posix_file *f = ctx;
    size_t done = 0;

    while (done < len) {
        ssize_t n = pread(f->fd, (char *)buf + done, len - done,
                          (off_t)(off + done));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            break;
        done += (size_t)n;
    }
    return (int64_t)done;
}

/* All of buf at off: 0 or -errno (a write of nothing is -EIO). */
static int pwrite_all(int fd, const void *buf, size_t len, uint64_t off)
{
    size_t done = 0;

    while (done < len) {
        ssize_t n = pwrite(fd, (const char *)buf + done, len - done,
                           (off_t)(off + done));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            return -EIO;
        done += (size_t)n;
    }
    return 0;
}

static int64_t posix_pwrite(void *ctx, const void *buf, size_t len,
                            uint64_t off)
{
    struct posix_file *f = ctx;
    int rc;

    hole_cache_write(f, off, len);
    rc = pwrite_all(f->fd, buf, len, off);
    return rc < 0 ? rc : (int64_t)len;
}

static int posix_flush(void *ctx)
{
    struct posix_file *f = ctx;
    return fdatasync(f->fd) < 0 ? -errno : 0;
}

static void *writeback_main(void *arg)
{
    struct posix_file *f = arg;

    pthread_mutex_lock(&f->wb.lock);
    for (;;) {
        while (!f->wb.requested && !f->wb.stop)
            pthread_cond_wait(&f->wb.wake, &f->wb.lock);
        if (f->wb.stop)
            break;
        f->wb.requested = false;
        pthread_mutex_unlock(&f->wb.lock);
        /* the whole file: pages already on their way are skipped */
        (void)sync_file_range(f->fd, 0, 0, SYNC_FILE_RANGE_WRITE);
        pthread_mutex_lock(&f->wb.lock);
    }
    pthread_mutex_unlock(&f->wb.lock);
    return NULL;
}

static void posix_writeback(void *ctx)
{
    struct posix_file *f = ctx;

    if (!f->wb.started) {
        if (pthread_mutex_init(&f->wb.lock, NULL) != 0)
            goto inline_;
        if (pthread_cond_init(&f->wb.wake, NULL) != 0) {
            pthread_mutex_destroy(&f->wb.lock);
            goto inline_;
        }
        f->wb.requested = f->wb.stop = false;
        if (pthread_create(&f->wb.thread, NULL, writeback_main, f) != 0) {
            pthread_cond_destroy(&f->wb.wake);
            pthread_mutex_destroy(&f->wb.lock);
            goto inline_;
        }
        f->wb.started = true;
    }
    pthread_mutex_lock(&f->wb.lock);
    f->wb.requested = true;
    pthread_cond_signal(&f->wb.wake);
    pthread_mutex_unlock(&f->wb.lock);
    return;
inline_: /* no thread: start it here */
    (void)sync_file_range(f->fd, 0, 0, SYNC_FILE_RANGE_WRITE);
}

static void writeback_stop(struct posix_file *f)
{
    if (!f->wb.started)
        return;
    pthread_mutex_lock(&f->wb.lock);
    f->wb.stop = true;
    pthread_cond_signal(&f->wb.wake);
    pthread_mutex_unlock(&f->wb.lock);
    pthread_join(f->wb.thread, NULL);
    pthread_cond_destroy(&f->wb.wake);
    pthread_mutex_destroy(&f->wb.lock);
    f->wb.started = false;
}

static int64_t device_size(int fd)
{
    uint64_t n;

    if (ioctl(fd, BLKGETSIZE64, &n) < 0)
        return -errno;
    return n > INT64_MAX ? -EFBIG : (int64_t)n;
}

static int64_t posix_size(void *ctx)
{
    struct posix_file *f = ctx;
    struct stat st;

    if (f->blockdev)
        return device_size(f->fd);
    if (fstat(f->fd, &st) < 0)
        return -errno;
    return (int64_t)st.st_size;
}

/* A device keeps its size: asking for it is a no-op, anything else is
 * refused (the library never asks; this is the backstop). */
static int posix_truncate(void *ctx, uint64_t size)
{
    struct posix_file *f = ctx;

    hole_cache_drop(f);
    if (f->blockdev) {
        int64_t cap = device_size(f->fd);
        if (cap < 0)
            return (int)cap;
        return size == (uint64_t)cap ? 0
               : size > (uint64_t)cap ? -ENOSPC : -EINVAL;
    }
    return ftruncate(f->fd, (off_t)size) < 0 ? -errno : 0;
}

static void posix_close(void *ctx)
{
    struct posix_file *f = ctx;
    if (f) {
        writeback_stop(f);
        close(f->fd); /* drops our OFD locks */
        free(f);
    }
}

/*
 * Copy offload where the file system shares extents (reflinks: XFS, btrfs,
 * ...): copy_file_range then links the source's blocks instead of writing
 * the bytes.  Whether it does is probed once per destination with
 * FICLONERANGE on the first block-aligned range: where the file system
 * cannot share (ext4), copy_file_range would still copy the bytes in the
 * kernel, and measured per 64 KiB cluster that is slower than the
 * library's coalesced writes (0.50 s against 0.21 s for 4096 scattered
 * clusters), so the answer is then -ENOTSUP for good.
 */
static int64_t posix_copy_range(void *ctx, const struct qcow2_io *src,
                                uint64_t src_off, uint64_t dst_off,
                                size_t len)
{
    struct posix_file *d = ctx;
    const struct posix_file *s;
    size_t done = 0;

    if (!src || src->copy_range != posix_copy_range || d->share < 0)
        return -ENOTSUP; /* not a file of ours: no descriptor to hand over */
    s = src->ctx;
    hole_cache_drop(d); /* the copy changes what is allocated */
    if (d->share == 0) {
        struct file_clone_range r = {.src_fd = s->fd,
                                     .src_offset = src_off,
                                     .src_length = len,
                                     .dest_offset = dst_off};
        if (((src_off | dst_off | len) & 4095) != 0)
            return -EAGAIN; /* probe on an aligned range */
        if (ioctl(d->fd, FICLONERANGE, &r) < 0) {
            if (errno == EINVAL)
                return -EAGAIN; /* alignment, or past the source's end */
            d->share = -1;
            return -ENOTSUP;
        }
        d->share = 1;
        return (int64_t)len;
    }
    while (done < len) {
        loff_t so = (loff_t)(src_off + done), dof = (loff_t)(dst_off + done);
        ssize_t n = copy_file_range(s->fd, &so, d->fd, &dof, len - done, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (done == 0 && (errno == EXDEV || errno == EINVAL ||
                              errno == ENOSYS || errno == EOPNOTSUPP))
                return -EAGAIN;
            return -errno;
        }
        if (n == 0)
            break; /* the source ended */
        done += (size_t)n;
    }
    return (int64_t)done;
}

/* The answer of file-posix's block status (SEEK_DATA / SEEK_HOLE), asked
 * with SEEK_HOLE first: a run of data, the common case inside a data
 * cluster, then takes one call, and where it ends a hole is known to
 * start. */
static int posix_block_status(void *ctx, uint64_t off, uint64_t len,
                              uint64_t *pnum)
{
    struct posix_file *f = ctx;
    struct hole_cache *c = &f->hc;
    off_t data, hole;
    uint64_t end;

    if (len == 0) {
        *pnum = 0;
        return 1;
    }
    if (off >= c->start && off < c->end) {
        end = c->end;
        goto answer;
    }
    if (off != c->hole_at) {
        hole = lseek(f->fd, (off_t)off, SEEK_HOLE);
        if (hole < 0) {
            if (errno == ENXIO) { /* past EOF: reads as zeros */
                *pnum = len;
                return 0;
            }
            *pnum = len; /* no information: everything is data */
            return 1;
        }
        if ((uint64_t)hole > off) {
            c->start = off;
            c->end = end = (uint64_t)hole;
            c->data = true;
            c->hole_at = (uint64_t)hole;
            goto answer;
        }
    }
    /* a hole starts at off: where does data come back? */
    data = lseek(f->fd, (off_t)off, SEEK_DATA);
    if (data < 0) {
        if (errno != ENXIO) {
            *pnum = len;
            return 1;
        }
        end = UINT64_MAX; /* a trailing hole, and past EOF */
    } else if ((uint64_t)data <= off) {
        *pnum = len; /* changed under us: say data, the safe answer */
        return 1;
    } else {
        end = (uint64_t)data;
    }
    c->start = off;
    c->end = end;
    c->data = false;
answer:
    *pnum = end - off < len ? end - off : len;
    return c->data ? 1 : 0;
}

static int posix_identity(void *ctx, uint64_t *dev, uint64_t *ino)
{
    struct posix_file *f = ctx;
    struct stat st;

    if (fstat(f->fd, &st) < 0)
        return -errno;
    *dev = (uint64_t)st.st_dev;
    *ino = (uint64_t)st.st_ino;
    return 0;
}

static int64_t posix_allocated(void *ctx)
{
    struct posix_file *f = ctx;
    struct stat st;

    if (fstat(f->fd, &st) < 0)
        return -errno;
    return (int64_t)st.st_blocks * 512;
}

static int write_zeros(int fd, uint64_t off, uint64_t len)
{
    static const uint8_t zeros[4096];

    while (len) {
        size_t k = len < sizeof(zeros) ? (size_t)len : sizeof(zeros);
        int rc = pwrite_all(fd, zeros, k, off);
        if (rc < 0)
            return rc;
        off += k;
        len -= k;
    }
    return 0;
}

/*
 * Zero a range of a block device.  fallocate on a device works in its
 * logical blocks: PUNCH_HOLE sends a write-zeroes request that may unmap
 * (thin volumes give the space back) and fails rather than fall back when
 * the device cannot guarantee zeros; ZERO_RANGE then makes the kernel
 * write them.  Parts of blocks at either end are written as zeros.
 */
static int device_zero(struct posix_file *f, uint64_t off, uint64_t len)
{
    uint64_t s = f->sector, a = (off + s - 1) / s * s;
    uint64_t b = (off + len) / s * s;
    int rc;

    if (a >= b)
        return write_zeros(f->fd, off, len);
    if (a > off && (rc = write_zeros(f->fd, off, a - off)) < 0)
        return rc;
    if (fallocate(f->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                  (off_t)a, (off_t)(b - a)) < 0 &&
        fallocate(f->fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE,
                  (off_t)a, (off_t)(b - a)) < 0 &&
        (rc = write_zeros(f->fd, a, b - a)) < 0)
        return rc;
    if (off + len > b && (rc = write_zeros(f->fd, b, off + len - b)) < 0)
        return rc;
    return 0;
}

static int posix_punch(void *ctx, uint64_t off, uint64_t len)
{
    struct posix_file *f = ctx;

    hole_cache_drop(f);
    if (f->blockdev) {
        int64_t cap = device_size(f->fd);
        if (cap < 0)
            return (int)cap;
        if (off > (uint64_t)cap || len > (uint64_t)cap - off)
            return -ENOSPC;
        return len ? device_zero(f, off, len) : 0;
    }
    if (fallocate(f->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                  (off_t)off, (off_t)len) < 0)
        return (errno == EOPNOTSUPP || errno == ENOSYS) ? -ENOTSUP : -errno;
    return 0;
}

static int lock_byte(int fd, int byte)
{
    struct flock fl = {.l_type = F_RDLCK, .l_whence = SEEK_SET,
                       .l_start = byte, .l_len = 1};
    return fcntl(fd, F_OFD_SETLK, &fl) < 0 ? -errno : 0;
}

/* 1 when another open file description holds a lock on the byte. */
static int byte_held(int fd, int byte)
{
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET,
                       .l_start = byte, .l_len = 1};

    if (fcntl(fd, F_OFD_GETLK, &fl) < 0)
        return -errno;
    return fl.l_type != F_UNLCK;
}

static int take_locks(int fd, bool writer, char *err, size_t errlen)
{
    /* held permissions and permissions we do not share */
    unsigned held = 1u << Q2_PERM_CONSISTENT_READ;
    unsigned unshared = 1u << Q2_PERM_WRITE | 1u << Q2_PERM_RESIZE;
    int n, rc;

    if (writer)
        held |= 1u << Q2_PERM_WRITE | 1u << Q2_PERM_RESIZE;
    for (n = 0; n < NPERMS; n++) {
        if ((held >> n & 1) &&
            (rc = lock_byte(fd, Q2_LOCK_PERM_BASE + n)) < 0)
            goto fail;
        if ((unshared >> n & 1) &&
            (rc = lock_byte(fd, Q2_LOCK_SHARED_BASE + n)) < 0)
            goto fail;
    }
    for (n = 0; n < NPERMS; n++) {
        /* someone refuses to share a permission we hold */
        if ((writer || (held >> n & 1)) &&
            (rc = byte_held(fd, Q2_LOCK_SHARED_BASE + n)) != 0) {
            if (rc > 0)
                snprintf(err, errlen,
                         "image is in use: another process holds it and "
                         "does not share the \"%s\" permission (lock byte %d)",
                         perm_names[n], Q2_LOCK_SHARED_BASE + n);
            return rc > 0 ? -EBUSY : rc;
        }
        /* someone holds a permission we do not share (a writer: any) */
        if ((writer || (unshared >> n & 1)) &&
            (rc = byte_held(fd, Q2_LOCK_PERM_BASE + n)) != 0) {
            if (rc > 0)
                snprintf(err, errlen,
                         "image is in use: another process holds the \"%s\" "
                         "permission (lock byte %d)",
                         perm_names[n], Q2_LOCK_PERM_BASE + n);
            return rc > 0 ? -EBUSY : rc;
        }
    }
    return 0;
fail:
    if (rc == -EINVAL || rc == -ENOSYS)
        return 0; /* no OFD locks here: QEMU's locking=auto takes none */
    snprintf(err, errlen, "cannot take image lock: %s", strerror(-rc));
    return rc;
}

int qcow2_io_lock_probe(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK); /* FIFOs */
    int n, mask = 0, rc;

    if (fd < 0)
        return -errno;
    for (n = 0; n < NPERMS; n++) {
        if ((rc = byte_held(fd, Q2_LOCK_PERM_BASE + n)) < 0)
            goto out;
        mask |= rc << n;
        if ((rc = byte_held(fd, Q2_LOCK_SHARED_BASE + n)) < 0)
            goto out;
        mask |= rc << (8 + n);
    }
    rc = mask;
out:
    close(fd);
    return rc;
}

/* Re-open the block device *fd names with O_EXCL (claiming it), making
 * sure the name still gives the same device. */
static int open_exclusive(const char *path, int oflags, const struct stat *st,
                          int *fd, char *err, size_t errlen)
{
    struct stat st2;
    int fd2 = open(path, (oflags & ~O_CREAT) | O_EXCL | O_NONBLOCK);
    int rc;

    if (fd2 < 0) {
        rc = -errno;
        if (rc == -EBUSY)
            snprintf(err, errlen, "the device is in use (mounted, or "
                     "claimed by another program)");
        else
            snprintf(err, errlen, "%s", strerror(-rc));
        close(*fd);
        return rc;
    }
    if (fstat(fd2, &st2) < 0 || !S_ISBLK(st2.st_mode) ||
        st2.st_rdev != st->st_rdev) {
        snprintf(err, errlen, "the device changed while it was opened");
        close(fd2);
        close(*fd);
        return -EAGAIN;
    }
    close(*fd);
    *fd = fd2;
    return 0;
}

int qcow2_io_open_file(const char *path, unsigned flags, struct qcow2_io *io,
                       char *err, size_t errlen)
{
    struct posix_file *f;
    int oflags = O_CLOEXEC, fd, rc;
    struct stat st;
    char dummy[1];

    if (!err) {
        err = dummy;
        errlen = sizeof(dummy);
    }
    err[0] = '\0';
    if (!path || !io)
        return -EINVAL;
    oflags |= (flags & QCOW2_IO_RDWR) ? O_RDWR : O_RDONLY;
    if (flags & QCOW2_IO_CREATE)
        oflags |= O_CREAT | O_EXCL | O_RDWR;
    /* O_NONBLOCK: opening a FIFO nobody writes to (a backing file name
     * is file content, so it may name one) would block forever */
    fd = open(path, oflags | O_NONBLOCK, 0644);
    if (fd < 0) {
        rc = -errno;
        snprintf(err, errlen, "%s", strerror(errno));
        return rc;
    }
    if (fstat(fd, &st) < 0) {
        rc = -errno;
        snprintf(err, errlen, "%s", strerror(-rc));
        close(fd);
        return rc;
    }
    if (S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "%s", strerror(EISDIR));
        close(fd);
        return -EISDIR;
    }
    if (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode)) {
        snprintf(err, errlen, "a FIFO or socket is not an image file");
        close(fd);
        return -EINVAL;
    }
    if (S_ISBLK(st.st_mode) && (oflags & O_ACCMODE) == O_RDWR) {
        /* a writer claims the device: a mounted file system, or another
         * program that claimed it, refuses us (QEMU does not claim it:
         * the locks below see a running VM) */
        rc = open_exclusive(path, oflags, &st, &fd, err, errlen);
        if (rc < 0)
            return rc;
    }
    if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) < 0) {
        rc = -errno;
        snprintf(err, errlen, "%s", strerror(-rc));
        close(fd);
        return rc;
    }
    if (!(flags & QCOW2_IO_NOLOCK)) {
        rc = take_locks(fd, (flags & (QCOW2_IO_RDWR | QCOW2_IO_CREATE)) != 0,
                        err, errlen);
        if (rc < 0) {
            close(fd);
            return rc;
        }
    }
    f = malloc(sizeof(*f));
    if (!f) {
        close(fd);
        return -ENOMEM;
    }
    memset(f, 0, sizeof(*f));
    f->fd = fd;
    hole_cache_drop(f);
    f->hc.block = st.st_blksize > 0 ? (uint64_t)st.st_blksize : 4096;
    if (S_ISBLK(st.st_mode)) {
        int ss = 512;
        int64_t cap = device_size(fd);
        if (cap < 0) {
            snprintf(err, errlen, "cannot get the size of the device: %s",
                     strerror((int)-cap));
            close(fd);
            free(f);
            return (int)cap;
        }
        if (ioctl(fd, BLKSSZGET, &ss) < 0 || ss < 512 || (ss & (ss - 1)))
            ss = 512;
        f->blockdev = true;
        f->sector = (unsigned)ss;
        f->share = -1; /* no extents to share with files */
    }
    memset(io, 0, sizeof(*io));
    io->version = QCOW2_IO_VERSION;
    io->ctx = f;
    io->pread = posix_pread;
    io->pwrite = posix_pwrite;
    io->flush = posix_flush;
    io->truncate = posix_truncate;
    io->size = posix_size;
    io->close = posix_close;
    io->block_status = posix_block_status;
    io->identity = posix_identity;
    io->allocated = posix_allocated;
    io->punch = posix_punch;
    io->copy_range = posix_copy_range;
    io->writeback = posix_writeback;
    io->caps = f->blockdev ? QCOW2_IO_CAP_FIXED_SIZE : 0;
    return 0;
}

/* ---- new files, crash-atomic ----
 * A new image is written under a temporary name in its directory, made
 * durable, and only then given its name (rename, then the directory
 * synced): after a power loss the name holds the whole image or nothing. */

/* "DIR/.NAME.qchain-tmp" for "DIR/NAME". */
static int temp_name(const char *path, char *tmp, size_t len)
{
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    int dirlen = slash ? (int)(slash - path + 1) : 0, n;

    if (!*base)
        return -EISDIR;
    n = snprintf(tmp, len, "%.*s.%s.qchain-tmp", dirlen, path, base);
    return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

int qcow2_io_sync_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    char dir[4096];
    int fd, rc = 0;

    if (!slash)
        snprintf(dir, sizeof(dir), ".");
    else if (slash == path)
        snprintf(dir, sizeof(dir), "/");
    else if ((size_t)(slash - path) >= sizeof(dir))
        return -ENAMETOOLONG;
    else
        snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);
    fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    if (fsync(fd) < 0)
        rc = -errno;
    close(fd);
    return rc;
}

int qcow2_io_create_temp(const char *path, unsigned flags, struct qcow2_io *io,
                         char *tmp, size_t tmplen, char *err, size_t errlen)
{
    int rc;

    if (!path || !io || !tmp)
        return -EINVAL;
    if (access(path, F_OK) == 0 || errno != ENOENT) {
        rc = errno == ENOENT ? -EEXIST : -errno;
        if (err && errlen)
            snprintf(err, errlen, "%s", strerror(-rc));
        return rc;
    }
    rc = temp_name(path, tmp, tmplen);
    if (rc < 0) {
        if (err && errlen)
            snprintf(err, errlen, "%s", strerror(-rc));
        return rc;
    }
    /* a leftover of a creation interrupted by a crash: nobody holds it */
    if (access(tmp, F_OK) == 0 && qcow2_io_lock_probe(tmp) == 0)
        unlink(tmp);
    return qcow2_io_open_file(tmp, (flags & ~QCOW2_IO_CREATE) |
                                       QCOW2_IO_CREATE | QCOW2_IO_RDWR,
                              io, err, errlen);
}

int qcow2_io_publish(const char *tmp, const char *path)
{
    int rc;

    if (!tmp || !path)
        return -EINVAL;
    /* never replaces: an image that appeared meanwhile wins */
    rc = renameat2(AT_FDCWD, tmp, AT_FDCWD, path, RENAME_NOREPLACE);
    if (rc < 0 && (errno == EINVAL || errno == ENOSYS)) {
        /* a file system without RENAME_NOREPLACE: link, then unlink */
        rc = link(tmp, path);
        if (rc == 0)
            unlink(tmp);
    }
    if (rc < 0)
        return -errno;
    return qcow2_io_sync_dir(path);
}
