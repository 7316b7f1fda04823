/*
 * holders.c - the processes that hold locks on an image, from /proc.
 *
 * /proc/locks lists every lock: "N: OFDLCK ADVISORY READ -1 fe:00:1234
 * 100 100" (type, mode, access, pid, major:minor:inode in hex, hex,
 * decimal, range).  A POSIX lock shows its owner's pid; an OFD lock (what
 * QEMU and qchain take) belongs to an open file description, not a
 * process, and shows -1.  Its holders are found the other way round: every
 * /proc/PID/fd/N that is the file (stat follows the link) and whose
 * /proc/PID/fdinfo/N lists a "lock:" line holds a lock through it.  Only
 * the processes this user may inspect are seen; the answer is a hint for
 * a message, never a reason to refuse or allow anything.
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <qcow2/qcow2.h>
#include <qcow2/qcow2_io.h>

#include "holders.h"

struct found {
    struct cli_holder *out;
    unsigned max, n;
};

static void add_pid(struct found *f, int pid)
{
    char path[64];
    FILE *fp;
    unsigned i;

    if (pid <= 0 || pid == (int)getpid())
        return;
    for (i = 0; i < f->n && i < f->max; i++)
        if (f->out[i].pid == pid)
            return;
    if (f->n < f->max) {
        struct cli_holder *h = &f->out[f->n];
        h->pid = pid;
        snprintf(h->comm, sizeof(h->comm), "?");
        snprintf(path, sizeof(path), "/proc/%d/comm", pid);
        if ((fp = fopen(path, "r"))) {
            if (fgets(h->comm, sizeof(h->comm), fp))
                h->comm[strcspn(h->comm, "\n")] = '\0';
            fclose(fp);
        }
    }
    f->n++;
}

/* Owners of POSIX locks on the file st from /proc/locks.  Returns true
 * when a lock with no owner (pid -1: OFD) is on it too. */
static bool scan_proc_locks(const struct stat *st, struct found *f)
{
    char line[512];
    bool anonymous = false;
    FILE *fp = fopen("/proc/locks", "r");

    if (!fp)
        return true; /* unknown: look at the open files */
    while (fgets(line, sizeof(line), fp)) {
        unsigned maj, min;
        uint64_t ino;
        int pid;
        const char *p = strstr(line, "ADVISORY");

        if (!p)
            p = strstr(line, "MANDATORY");
        if (strstr(line, "->") || !p)
            continue; /* a waiter, or a line of unknown shape */
        if (sscanf(p, "%*s %*s %d %x:%x:%" SCNu64, &pid, &maj, &min,
                   &ino) != 4)
            continue;
        if (maj != major(st->st_dev) || min != minor(st->st_dev) ||
            ino != (uint64_t)st->st_ino)
            continue;
        if (pid > 0)
            add_pid(f, pid);
        else
            anonymous = true;
    }
    fclose(fp);
    return anonymous;
}

/* Does /proc/PID/fdinfo/FD list a lock? */
static bool fd_has_lock(const char *pid, const char *fd)
{
    char path[600], line[256];
    bool lock = false;
    FILE *fp;

    snprintf(path, sizeof(path), "/proc/%s/fdinfo/%s", pid, fd);
    if (!(fp = fopen(path, "r")))
        return false;
    while (!lock && fgets(line, sizeof(line), fp))
        lock = strncmp(line, "lock:", 5) == 0;
    fclose(fp);
    return lock;
}

/* Does process `pid` hold a lock through an open file that is st? */
static bool process_holds(const char *pid, const struct stat *st)
{
    char dir[300], link[600];
    struct dirent *e;
    bool holds = false;
    DIR *d;

    snprintf(dir, sizeof(dir), "/proc/%s/fd", pid);
    if (!(d = opendir(dir)))
        return false; /* gone, or not ours to see */
    while (!holds && (e = readdir(d))) {
        struct stat fst;
        if (e->d_name[0] == '.')
            continue;
        snprintf(link, sizeof(link), "%s/%s", dir, e->d_name);
        if (stat(link, &fst) == 0 && fst.st_dev == st->st_dev &&
            fst.st_ino == st->st_ino)
            holds = fd_has_lock(pid, e->d_name);
    }
    closedir(d);
    return holds;
}

static void scan_open_files(const struct stat *st, struct found *f)
{
    struct dirent *e;
    DIR *d = opendir("/proc");

    if (!d)
        return;
    while ((e = readdir(d))) {
        if (e->d_name[0] < '1' || e->d_name[0] > '9' ||
            strspn(e->d_name, "0123456789") != strlen(e->d_name))
            continue;
        if (process_holds(e->d_name, st))
            add_pid(f, atoi(e->d_name));
    }
    closedir(d);
}

int cli_lock_holders(const char *path, struct cli_holder *out, unsigned max)
{
    struct found f = {.out = out, .max = max, .n = 0};
    struct stat st;

    if (stat(path, &st) < 0)
        return -errno;
    /* the open files too when /proc/locks shows OFD locks, or nothing
     * (its device numbers may not be stat's, as on overlay file systems) */
    if (scan_proc_locks(&st, &f) || f.n == 0)
        scan_open_files(&st, &f);
    return (int)f.n;
}

int cli_holders_str(const char *path, char *buf, size_t len)
{
    struct cli_holder h[8];
    int n = cli_lock_holders(path, h, 8), i;
    size_t o = 0;

    if (len)
        buf[0] = '\0';
    if (n <= 0)
        return 0;
    for (i = 0; i < n && i < 8 && o < len; i++) {
        int w = snprintf(buf + o, len - o, "%s%s (pid %d)", i ? ", " : "",
                         h[i].comm, h[i].pid);
        if (w < 0)
            break;
        o += (size_t)w;
    }
    if (n > 8 && o < len)
        snprintf(buf + o, len - o, " and %d more", n - 8);
    return n;
}

/* Is `path` refused when opened with io_flags (QCOW2_IO_*)? */
static bool refused(const char *path, unsigned io_flags)
{
    struct qcow2_io io;
    int rc = qcow2_io_open_file(path, io_flags, &io, NULL, 0);

    if (rc == 0)
        io.close(io.ctx);
    return rc == -EBUSY;
}

int cli_busy_file(const char *image, const char *format, unsigned open_flags,
                  char *out, size_t len)
{
    struct qcow2_open_opts o;
    struct qcow2_image *img, *l;
    int found = -1;

    if (refused(image, open_flags & QCOW2_OPEN_RDWR ? QCOW2_IO_RDWR : 0)) {
        snprintf(out, len, "%s", image);
        return 0;
    }
    /* the chain without locks, then each backing file as a reader */
    if (!(img = qcow2_new()))
        return -1;
    memset(&o, 0, sizeof(o));
    o.size = sizeof(o);
    o.flags = QCOW2_OPEN_FORCE_SHARE;
    o.format = format;
    if (qcow2_open(img, image, &o) == 0) {
        for (l = qcow2_backing(img); l && found < 0; l = qcow2_backing(l)) {
            if (refused(qcow2_filename(l), 0)) {
                snprintf(out, len, "%s", qcow2_filename(l));
                found = 0;
            }
        }
    }
    qcow2_close(img);
    return found;
}

void cli_busy_error(const char *image, const char *format,
                    unsigned open_flags, const char *msg, const char *advice)
{
    char file[4096], who[1024];

    if (cli_busy_file(image, format, open_flags, file, sizeof(file)) < 0)
        snprintf(file, sizeof(file), "%s", image);
    if (cli_holders_str(file, who, sizeof(who)) == 0)
        snprintf(who, sizeof(who), "another process");
    if (strcmp(file, image) == 0)
        cli_error_file(image, "%s; held by %s: %s", msg, who, advice);
    else
        cli_error_file(image, "%s; '%s' is held by %s: %s", msg, file, who,
                       advice);
}
