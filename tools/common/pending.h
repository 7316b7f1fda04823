/*
 * pending.h - unfinished qchain-commit jobs: where a job's journal lives,
 * its format, and which journals concern the images of an open chain, so
 * that qchain-info, qchain-check and qchain-delta can tell the operator
 * that a commit was interrupted and how to finish it.
 *
 * Where (the rule qchain-commit writes by): beside a BASE that is a
 * regular file, BASE.qchain-commit.  For a BASE on a block device (nothing
 * is written under /dev) a name made from the device's stable path
 * (/dev/vg/base -> dev-vg-base.qchain-commit) in --state-dir, else beside
 * the chain's first image that is a regular file, else in
 * CLI_STATE_DIR_DEFAULT.
 *
 * The journal (written whole under a temporary name, then renamed):
 *
 *   qchain-commit journal 1
 *   uuid 0f1e...                      the job
 *   active DEV:INO PATH               a regular file: identity and name
 *   top device /dev/vg/top            a device: its stable name
 *   base DEV:INO PATH
 */
#ifndef QCHAIN_PENDING_H
#define QCHAIN_PENDING_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>

#include "chain.h"
#include "json.h"

#define CLI_STATE_DIR_DEFAULT "/var/lib/qchain"
#define CLI_JOURNAL_SUFFIX ".qchain-commit"

enum { CLI_JOURNAL_ACTIVE, CLI_JOURNAL_TOP, CLI_JOURNAL_BASE };

struct cli_journal {
    char uuid[37];
    uint64_t dev[3], ino[3]; /* active, top, base (CLI_JOURNAL_*) */
    bool device[3];          /* named by name[] only (a block device) */
    char name[3][PATH_MAX];  /* the path (file) or stable name (device) */
};

struct cli_pending {
    char journal[PATH_MAX]; /* the journal's path */
    unsigned layer;         /* depth of the job's base in the chain */
    struct cli_journal jr;
};

/* The stable name of a device path: its directory's real path and its own
 * name, not followed (/dev/vg/base stays; /dev/dm-3 would change across
 * reboots).  Returns 0 or -errno. */
int cli_device_name(const char *path, char *out, size_t len);

/*
 * Where the state file `suffix` (CLI_JOURNAL_SUFFIX, ".qchain-committed")
 * of the commits into layer b of the chain lives, by the rule above;
 * state_dir is --state-dir (NULL: none).  Returns 0, -ENOMEM,
 * -ENAMETOOLONG, or -errno when the device's directory cannot be resolved.
 */
int cli_state_path(const struct cli_chain *c, unsigned b,
                   const char *state_dir, const char *suffix, char *out,
                   size_t len);

/* Read a journal.  Returns 0, -errno when it cannot be opened, or -EINVAL
 * when it is not a complete journal of this format. */
int cli_journal_read(const char *path, struct cli_journal *out);

/* Is layer l the image the journal names as `k` (CLI_JOURNAL_*)?  A file
 * by device and inode, a device by its stable name. */
bool cli_journal_names(const struct cli_journal *jr, unsigned k,
                       const struct cli_layer *l);

/*
 * The journals of unfinished commit jobs into any layer of c: beside each
 * layer that is a regular file; for a layer on a device, its device-named
 * journal in state_dir (when not NULL), beside each regular file of the
 * chain and in CLI_STATE_DIR_DEFAULT.  Files that are not journals are
 * skipped.  *out is a malloc'd array (free it), ordered by layer depth;
 * returns the number of jobs (0: *out is NULL), or -ENOMEM.
 */
int cli_pending_find(const struct cli_chain *c, const char *state_dir,
                     struct cli_pending **out);

/* "job U into 'BASE' (active 'A', top 'T'): run the same qchain-commit
 * command again to finish it; journal J" (no newline). */
void cli_pending_str(const struct cli_pending *p, char *buf, size_t len);

/* A warning on stderr for each job: "progname: warning: 'IMAGE': pending
 * commit: ...".  Returns the number of jobs. */
unsigned cli_pending_warn(const struct cli_chain *c,
                          const struct cli_pending *p, unsigned n);

/* The JSON object "pending-commit": {journal, job, active, top, base}. */
void cli_pending_json(struct json *j, const struct cli_pending *p);

#endif
