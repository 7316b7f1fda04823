/*
 * holders.h - who holds an image: the processes whose locks (QEMU's OFD
 * byte-range locks, or POSIX locks) sit on a file, so that a command
 * refused by a lock can name the VM in the way and say what to do.
 */
#ifndef QCHAIN_HOLDERS_H
#define QCHAIN_HOLDERS_H

#include <stddef.h>

#include "cli.h"

struct cli_holder {
    int pid;
    char comm[32]; /* /proc/PID/comm, "?" when unreadable */
};

/*
 * The processes other than this one that hold locks on the file `path`
 * (matched by device and inode).  /proc/locks names the owners of POSIX
 * locks; OFD locks show pid -1 there, so the open files of every process
 * this user may inspect (/proc/PID/fd, /proc/PID/fdinfo "lock:" lines)
 * name theirs.  Fills out[0..max) and returns how many were found (which
 * may exceed max), or -errno when `path` cannot be stat'ed.
 */
int cli_lock_holders(const char *path, struct cli_holder *out, unsigned max);

/*
 * The holders of `path` as words: "qemu-io (pid 1234)", several joined by
 * ", ".  Returns how many there are (0: none found, buf "").
 */
int cli_holders_str(const char *path, char *buf, size_t len);

/*
 * Which file of IMAGE's chain a lock refuses, after qcow2_open failed with
 * -EBUSY: IMAGE itself is tried with the locks `open_flags` (QCOW2_OPEN_*)
 * ask for, then each backing file with a reader's locks.  Writes its name
 * to out and returns 0, or -1 when none is (any longer) refused.
 */
int cli_busy_file(const char *image, const char *format, unsigned open_flags,
                  char *out, size_t len);

/*
 * Report that opening `image` was refused by a lock (-EBUSY): the
 * library's message `msg`, the file in use and who holds it, then
 * `advice` (what to do, e.g. "stop the VM, or use -U for read-only
 * figures").  "progname: 'IMAGE': MSG; 'FILE' is held by qemu-io (pid
 * 1234): ADVICE" on stderr.
 */
void cli_busy_error(const char *image, const char *format,
                    unsigned open_flags, const char *msg, const char *advice);

#endif
