/*
 * qchain-commit - commit layers of a backing chain into their base, offline.
 *
 *   qchain-commit [--top TOP] [--base BASE] [--search DIR]... [--force]
 *                 [-p|--progress] [--output=human|json] ACTIVE
 *
 * All data of the layers from TOP down to just above BASE goes into BASE
 * (virsh blockcommit's vocabulary).  TOP defaults to ACTIVE, BASE to TOP's
 * backing file; both are matched by file identity, not spelling.  When TOP
 * is not ACTIVE, the image above TOP is re-pointed at BASE afterwards.
 *
 * The job, step by step (main reads as this list):
 *   1. open the chain, without locks: who is who; TOP and BASE in it
 *   2. its state: done already, or an unfinished run of this very job
 *   3. siblings: other images that BASE backs refuse the job
 *   4. room: the base's growth fits its file system or device
 *   5. locks: BASE and the image to re-point held for writing, every
 *      other layer read held for reading
 *   6. write a journal beside BASE naming the job (uuid, identities);
 *      for a BASE on a device, beside the chain's first regular file or
 *      in the state directory (nothing is written under /dev)
 *   7. copy (library qcow2_commit): never changes the guest view
 *   8. re-point the image above TOP (one atomic sector write)
 *   9. record the committed layers, remove the journal
 * Killed anywhere, every image still reads as before (until step 8 the
 * layers above shadow what was written; step 8 is atomic).  Run again, the
 * journal identifies the job: the base's leaked clusters are reclaimed and
 * the copy (idempotent) is redone, or, past step 8, the job is finished.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>
#include <uuid/uuid.h>

#include "chain.h"
#include "cli.h"
#include "fit.h"
#include "history.h"
#include "holders.h"
#include "json.h"
#include "paths.h"
#include "pending.h"
#include "users.h"

#define MAX_SEARCH 64

#define MAX_DISKS 16 /* ACTIVE images of one VM, committed concurrently */

struct args {
    const char *active, *top, *base; /* as given (top, base: NULL) */
    const char *actives[MAX_DISKS];  /* several: the disks of one VM */
    unsigned ndisks;
    const char *search[MAX_SEARCH];
    unsigned nsearch;
    bool force;
};

struct job {
    const char *active;
    struct qcow2_image *chain; /* ACTIVE's chain, read without locks */
    struct cli_chain c;
    struct cli_layer *layers; /* c.layers */
    unsigned n;       /* layers in ACTIVE's chain */
    unsigned top;     /* depth of TOP */
    unsigned base;    /* depth of BASE */
    char journal[PATH_MAX];
    char uuid[37];
    bool resuming;
    struct qcow2_io base_lock;    /* BASE, write-locked until the end */
    bool base_locked;             /* base_lock is open (not in base_img) */
    struct qcow2_image *base_img; /* BASE, read-write, while copying */
    struct qcow2_io above_lock;   /* the image to re-point, write-locked */
    bool above_locked;            /* above_lock is open */
    struct qcow2_image *above;    /* it, opened for the re-point only */
    struct qcow2_io *locks;       /* read locks on the other layers */
    unsigned nlocks;
    char *rebase_name;            /* what `above` names BASE by */
    struct qcow2_commit_stats st;
    double secs;
    struct timespec t_start;      /* the job's start (its history line) */
    struct user *users;           /* images outside the chain that use */
    unsigned n_users, cap_users;  /* a layer from TOP down to BASE */
    bool done;                    /* completed by an earlier run: */
    const char *done_top, *done_base;
    char done_job[37];            /* its uuid, "" when unknown */
    int rc;                       /* STEP_* of the copy (its thread) */
    struct cli_fit fit;           /* the base's room (check_fit) */
    bool fit_known;
    bool base_dirty;              /* its refcounts rebuilt at its open */
};

/* An image outside the chain whose backing file is layer `layer`. */
struct user {
    unsigned layer;
    uint64_t dev, ino;
    char *path;
};

/* What a step of the job says: go on, stop (done, reported), fail. */
#define STEP_ON 0
#define STEP_DONE 1
#define STEP_FAIL (-1)
#define STEP_INTERRUPTED (-2) /* SIGINT or SIGTERM: stopped at a safe point */


static struct cli_common common;
static bool show_progress;
static const char *state_dir; /* --state-dir, NULL: the default rule */
static volatile sig_atomic_t stop_signal; /* SIGINT or SIGTERM received */

static void on_stop_signal(int sig)
{
    stop_signal = sig;
}

static int cancel_cb(void *ctx)
{
    (void)ctx;
    return stop_signal != 0;
}

/* Ctrl-C or a TERM stops the job at a safe point (between two chunks of
 * the copy, or before anything is written) instead of killing it. */
static void catch_stop_signals(void)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

/* "interrupted; run the same command again", with the command as typed
 * (shell-quoted where needed); exit status 128 + the signal. */
static int report_interrupted(int argc, char **argv)
{
    int i;

    fprintf(stderr, "%s: interrupted; run the same command again to "
            "finish: %s", cli_progname(), cli_progname());
    for (i = 1; i < argc; i++) {
        const char *a = argv[i], *q;
        if (*a && !a[strspn(a, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOP"
                               "QRSTUVWXYZ0123456789-_./=:,+@%")]) {
            fprintf(stderr, " %s", a);
            continue;
        }
        fputs(" '", stderr);
        for (q = a; *q; q++)
            if (*q == '\'')
                fputs("'\\''", stderr);
            else
                fputc(*q, stderr);
        fputc('\'', stderr);
    }
    fputc('\n', stderr);
    return 128 + (stop_signal ? stop_signal : SIGINT);
}

static void usage(void)
{
    printf("Usage: %s [OPTIONS] ACTIVE...\n"
           "Commit the layers of ACTIVE's chain from TOP down to just above "
           "BASE into BASE.\n"
           "Several ACTIVEs (the disks of one VM): all checked before any is "
           "written, then\ncommitted concurrently.\n\n"
           "  --top=TOP            first layer to commit (default: ACTIVE; "
           "one ACTIVE only)\n"
           "  --base=BASE          image to commit into (default: TOP's "
           "backing file)\n"
           "  --search=DIR         also look in DIR for other images backed "
           "by BASE\n"
           "  --force              commit even when other images use BASE\n"
           "  --state-dir=DIR      where the journal of a BASE on a device "
           "lives (default:\n"
           "                       beside the chain's first regular file, "
           "else " CLI_STATE_DIR_DEFAULT ")\n"
           "  -p, --progress       show a progress bar on stderr\n"
           "  -f, --format=FMT     format of ACTIVE (qcow2 or raw)\n"
           "  --output=human|json  report format; --json\n"
           "  -h, --help           this help\n"
           "  -V, --version        version\n\n"
           "The committed layers are left in place (now redundant); the "
           "command lists them.\n",
           cli_progname());
}

static int find_layer(const struct job *j, const char *path)
{
    return cli_chain_find(&j->c, path);
}

/* ---- where the job's state lives ----
 * Beside BASE: BASE.qchain-commit (the journal) and BASE.qchain-committed
 * (the layers committed into it).  Nothing is written under /dev: for a
 * BASE on a device both go, under a name made from the device's path,
 * into --state-dir, or beside the chain's first image that is a regular
 * file, or into CLI_STATE_DIR_DEFAULT when every image is a device.  The path
 * (its directory resolved, the last name kept: /dev/vg/base) names a volume
 * across reboots, when device numbers and /dev inodes change. */

/* (the rule: cli_state_path, pending.c) */
static int state_path(const struct job *j, unsigned b, const char *suffix,
                      char *out, size_t len)
{
    return cli_state_path(&j->c, b, state_dir, suffix, out, len);
}

/* ---- journal ---- */

/* A layer by identity: a file by device and inode, a device by its
 * stable name (a reboot renumbers devices). */
static void journal_line(FILE *f, const char *key,
                         const struct cli_layer *l)
{
    char name[PATH_MAX];

    if (l->device && cli_device_name(l->name, name, sizeof(name)) == 0)
        fprintf(f, "%s device %s\n", key, name);
    else
        fprintf(f, "%s %" PRIu64 ":%" PRIu64 " %s\n", key, l->dev, l->ino,
                l->name);
}

static int journal_write(struct job *j)
{
    char tmp[PATH_MAX + 8];
    uuid_t u;
    FILE *f;
    int fd;

    uuid_generate(u);
    uuid_unparse_lower(u, j->uuid);
    if (j->layers[j->base].device) {
        /* the state directory may be new (its parent must exist) */
        char *copy = strdup(j->journal);
        if (!copy)
            return -ENOMEM;
        if (mkdir(dirname(copy), 0700) < 0 && errno != EEXIST) {
            int rc = -errno;
            free(copy);
            return rc;
        }
        free(copy);
    }
    snprintf(tmp, sizeof(tmp), "%s.tmp", j->journal);
    /* a run killed before its rename may have left tmp: never read as a
     * journal, so it is replaced */
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC,
              0644);
    if (fd < 0 || !(f = fdopen(fd, "w"))) {
        int rc = -errno;
        if (fd >= 0)
            close(fd);
        return rc;
    }
    fprintf(f, "qchain-commit journal 1\nuuid %s\n", j->uuid);
    journal_line(f, "active", &j->layers[0]);
    journal_line(f, "top", &j->layers[j->top]);
    journal_line(f, "base", &j->layers[j->base]);
    if (fflush(f) != 0 || (fd = fileno(f)) < 0 || fsync(fd) < 0) {
        fclose(f);
        unlink(tmp);
        return -EIO;
    }
    fclose(f);
    if (rename(tmp, j->journal) < 0) {
        int rc = -errno;
        unlink(tmp);
        return rc;
    }
    return qcow2_io_sync_dir(j->journal);
}


/* ---- layers committed earlier ----
 * Committed layers stay in place, still naming BASE as their backing file,
 * so a later commit into BASE would take them for siblings.  BASE's
 * directory keeps a record of them ("BASE.qchain-committed": device, inode,
 * size and modification time); a recorded file that has not changed since
 * is a redundant leftover, not a sibling. */

/* Is the file st listed, unchanged, in the record of commits into layer
 * b of the chain? */
static bool recorded_in(const struct job *j, unsigned b,
                        const struct stat *st)
{
    char path[PATH_MAX], line[256];
    FILE *f;
    bool found = false;

    if (state_path(j, b, ".qchain-committed", path, sizeof(path)) < 0)
        return false;
    f = fopen(path, "r");
    if (!f)
        return false;
    while (!found && fgets(line, sizeof(line), f)) {
        uint64_t dev, ino, size, mtime;
        if (sscanf(line, "%" SCNu64 ":%" SCNu64 ":%" SCNu64 ":%" SCNu64,
                   &dev, &ino, &size, &mtime) == 4)
            found = dev == (uint64_t)st->st_dev &&
                    ino == (uint64_t)st->st_ino &&
                    size == (uint64_t)st->st_size &&
                    mtime == (uint64_t)st->st_mtim.tv_sec * UINT64_C(1000000000) +
                                 (uint64_t)st->st_mtim.tv_nsec;
    }
    fclose(f);
    return found;
}

static bool recorded(const struct job *j, const struct stat *st)
{
    return recorded_in(j, j->base, st);
}

/* Every layer from TOP to just above BASE committed into BASE and left
 * unchanged since: the job is done. */
static bool job_done(const struct job *j)
{
    unsigned i;

    for (i = j->top; i < j->base; i++) {
        struct stat st;
        if (stat(j->layers[i].name, &st) < 0 || !recorded(j, &st))
            return false;
    }
    return true;
}

/* What a run reports, the same keys whether it committed now or found the
 * job completed already. */
struct outcome {
    const char *active, *top, *base;
    const char *rebased;              /* the image re-pointed, or NULL */
    const char *const *unreferenced;  /* the committed layers nothing uses */
    unsigned n_unreferenced;
    const struct job *users;          /* the images that still use one of
                                         them (NULL: none looked for) */
    const char *job;                  /* the job's uuid, or NULL */
    struct qcow2_commit_stats st;
    double secs;
    bool already;                     /* completed by an earlier run */
    bool rebuilt;                     /* the base's refcounts rebuilt */
};

static void outcome_json(struct json *jp, const struct outcome *o)
{
    unsigned i;

    json_object_begin(jp, NULL);
    json_string(jp, "active", o->active);
    json_string(jp, "top", o->top);
    json_string(jp, "base", o->base);
    json_u64(jp, "data-bytes", o->st.data_bytes);
    json_u64(jp, "zero-bytes", o->st.zero_bytes);
    /* to the microsecond */
    json_double(jp, "seconds", round(o->secs * 1e6) / 1e6);
    json_u64(jp, "bytes-per-second",
             o->secs > 0 ? (uint64_t)((double)o->st.data_bytes / o->secs)
                         : 0);
    if (o->rebased)
        json_string(jp, "rebased", o->rebased);
    else
        json_null(jp, "rebased");
    json_array_begin(jp, "unreferenced");
    for (i = 0; i < o->n_unreferenced; i++)
        json_string(jp, NULL, o->unreferenced[i]);
    json_array_end(jp);
    json_array_begin(jp, "dependents");
    for (i = 0; o->users && i < o->users->n_users; i++) {
        const struct user *u = &o->users->users[i];
        if (u->layer >= o->users->base)
            continue;
        json_object_begin(jp, NULL);
        json_string(jp, "filename", u->path);
        json_string(jp, "backing-filename", o->users->layers[u->layer].name);
        json_object_end(jp);
    }
    json_array_end(jp);
    json_bool(jp, "base-grows", o->st.grown);
    json_bool(jp, "base-refcounts-rebuilt", o->rebuilt);
    json_u64(jp, "offloaded-bytes", o->st.offloaded_bytes);
    json_u64(jp, "data-runs", o->st.data_runs);
    if (o->job)
        json_string(jp, "job", o->job);
    else
        json_null(jp, "job");
    json_bool(jp, "already-completed", o->already);
    json_object_end(jp);
}

/* The job had completed: TOP (and the layers below it, down to BASE)
 * committed, the image above re-pointed. */
static void report_done(struct job *j, const char *top, const char *base,
                        const char *job)
{
    j->done = true;
    j->done_top = top;
    j->done_base = base;
    snprintf(j->done_job, sizeof(j->done_job), "%s", job ? job : "");
}

static void show_done(struct json *js, const struct job *j)
{
    const char *top = j->done_top, *base = j->done_base;
    struct outcome o = {.active = j->active, .top = top, .base = base,
                        .unreferenced = &top, .n_unreferenced = 1,
                        .job = *j->done_job ? j->done_job : NULL,
                        .already = true};
    unsigned i;

    /* the image above BASE in the chain now, if TOP had one above it */
    for (i = 1; i < j->n; i++)
        if (!strcmp(j->layers[i].name, base) &&
            strcmp(j->layers[i - 1].name, top) != 0)
            o.rebased = j->layers[i - 1].name;
    if (js)
        outcome_json(js, &o);
    else
        printf("The commit of '%s' into '%s' had already completed; nothing "
               "to do.\n", top, base);
}

/* The record with this job's layers added and a history line saying
 * what it did (history.h; the oldest dropped past HISTORY_KEEP), replaced
 * whole (a temporary file made durable, renamed over it, the directory
 * synced): after a power loss it is the old record or the new one. */
static int record_committed(const struct job *j, double secs)
{
    char path[PATH_MAX], tmp[PATH_MAX + 8], line[PATH_MAX + 128];
    struct cli_history h = {.time = (int64_t)time(NULL),
                            .data = j->st.data_bytes,
                            .zero = j->st.zero_bytes,
                            .runs = j->st.data_runs,
                            .offloaded = j->st.offloaded_bytes,
                            .compressed = j->st.compressed_bytes,
                            .seconds = secs, .resumed = j->resuming,
                            .rebuilt = j->base_dirty};
    struct cli_history old_h;
    FILE *old, *f;
    unsigned i, n_hist = 0, skip;
    int fd, rc = 0;

    snprintf(h.base_format, sizeof(h.base_format), "%s",
             j->layers[j->base].format);

    if (state_path(j, j->base, ".qchain-committed", path, sizeof(path)) < 0)
        return -ENAMETOOLONG;
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC,
              0644);
    if (fd < 0)
        return -errno;
    f = fdopen(fd, "w");
    if (!f) {
        rc = -errno;
        close(fd);
        unlink(tmp);
        return rc;
    }
    if ((old = fopen(path, "r")) != NULL) {
        /* count the history lines, then copy all but the oldest */
        while (fgets(line, sizeof(line), old))
            n_hist += cli_history_parse(line, &old_h) == 0;
        rewind(old);
        skip = n_hist >= HISTORY_KEEP ? n_hist - (HISTORY_KEEP - 1) : 0;
        while (fgets(line, sizeof(line), old)) {
            if (skip && cli_history_parse(line, &old_h) == 0) {
                skip--;
                continue;
            }
            fputs(line, f);
        }
        fclose(old);
    }
    for (i = j->top; i < j->base; i++) {
        struct stat st;
        if (stat(j->layers[i].name, &st) == 0)
            fprintf(f, "%" PRIu64 ":%" PRIu64 ":%" PRIu64 ":%" PRIu64 " %s\n",
                    (uint64_t)st.st_dev, (uint64_t)st.st_ino,
                    (uint64_t)st.st_size,
                    (uint64_t)st.st_mtim.tv_sec * UINT64_C(1000000000) +
                        (uint64_t)st.st_mtim.tv_nsec,
                    j->layers[i].name);
    }
    if (cli_history_format(&h, line, sizeof(line)) > 0)
        fputs(line, f);
    if (ferror(f) || fflush(f) != 0 || fsync(fileno(f)) < 0)
        rc = -(errno ? errno : EIO);
    if (fclose(f) != 0 && rc == 0)
        rc = -errno;
    if (rc == 0 && rename(tmp, path) < 0)
        rc = -errno;
    if (rc < 0) {
        unlink(tmp);
        return rc;
    }
    return qcow2_io_sync_dir(path);
}

/* ---- images that use the layers ----
 * Outside the chain, an image whose backing file is BASE (a sibling) or a
 * layer between TOP and BASE would read changed data once the layers above
 * are committed into BASE: refused unless --force.  One whose backing file
 * is TOP itself (a fork made with qchain-snapshot TOP FORK) reads the same
 * as before, as long as TOP is kept: reported, and TOP is not called
 * unreferenced. */

static bool skip_user(void *ctx, const struct stat *st)
{
    const struct job *j = ctx;
    unsigned i;

    for (i = 0; i < j->n; i++)
        if (j->layers[i].dev == (uint64_t)st->st_dev &&
            j->layers[i].ino == (uint64_t)st->st_ino)
            return true;
    return recorded(j, st);
}

static void add_user(void *ctx, unsigned t, const char *path,
                     const struct stat *st)
{
    struct job *j = ctx;
    struct user *u;
    unsigned i;

    for (i = 0; i < j->n_users; i++)
        if (j->users[i].dev == (uint64_t)st->st_dev &&
            j->users[i].ino == (uint64_t)st->st_ino)
            return; /* found through another directory */
    if (j->n_users == j->cap_users) {
        unsigned cap = j->cap_users ? 2 * j->cap_users : 8;
        u = realloc(j->users, cap * sizeof(*u));
        if (!u)
            return;
        j->users = u;
        j->cap_users = cap;
    }
    u = &j->users[j->n_users];
    u->path = strdup(path);
    if (!u->path)
        return;
    u->layer = j->top + t;
    u->dev = (uint64_t)st->st_dev;
    u->ino = (uint64_t)st->st_ino;
    j->n_users++;
}

/* Scan dir (once, whatever name it is given by) for users of the layers. */
static int scan_users(struct job *j, const char *dir, struct cli_target *seen,
                      unsigned *n_seen)
{
    struct cli_target t[QCOW2_DEFAULT_MAX_DEPTH + 1];
    struct stat st;
    unsigned i;

    if (stat(dir, &st) == 0) {
        for (i = 0; i < *n_seen; i++)
            if (seen[i].dev == (uint64_t)st.st_dev &&
                seen[i].ino == (uint64_t)st.st_ino)
                return 0;
        seen[(*n_seen)++] = (struct cli_target){(uint64_t)st.st_dev,
                                                (uint64_t)st.st_ino};
    }
    for (i = j->top; i <= j->base && i - j->top <= QCOW2_DEFAULT_MAX_DEPTH;
         i++)
        t[i - j->top] = (struct cli_target){j->layers[i].dev,
                                            j->layers[i].ino};
    return cli_find_users(dir, t, i - j->top, skip_user, add_user, j);
}

static void dir_of(const char *path, char *out, size_t len)
{
    const char *slash = strrchr(path, '/');

    if (!slash)
        snprintf(out, len, ".");
    else if (slash == path)
        snprintf(out, len, "/");
    else
        snprintf(out, len, "%.*s", (int)(slash - path), path);
}

/* Refused: the images that would read changed data, per layer. */
static unsigned refuse_users(const struct job *j)
{
    unsigned i, k, n, bad = 0;

    for (i = j->top + 1; i <= j->base; i++) {
        for (n = 0, k = 0; k < j->n_users; k++)
            n += j->users[k].layer == i;
        if (!n)
            continue;
        bad += n;
        if (i == j->base)
            cli_error_file(j->layers[i].name, "%u other image%s outside this "
                           "chain use%s it as backing file and would read "
                           "changed data (--force to commit anyway):", n,
                           n > 1 ? "s" : "", n > 1 ? "" : "s");
        else
            cli_error_file(j->layers[i].name, "%u other image%s outside this "
                           "chain use%s it as backing file and would read "
                           "changed data once the layers above it are in "
                           "'%s' (--force to commit anyway):", n,
                           n > 1 ? "s" : "", n > 1 ? "" : "s",
                           j->layers[j->base].name);
        for (k = 0; k < j->n_users; k++)
            if (j->users[k].layer == i)
                fprintf(stderr, "  %s\n", j->users[k].path);
    }
    return bad;
}

/* 3. images that use the layers: BASE's directory, the committed layers'
 * directories and every --search DIR */
static int check_users(struct job *j, const struct args *a)
{
    struct cli_target seen[QCOW2_DEFAULT_MAX_DEPTH + 3 + MAX_SEARCH];
    unsigned n_seen = 0, i;
    char dir[PATH_MAX];

    for (i = j->top; i <= j->base && n_seen < QCOW2_DEFAULT_MAX_DEPTH + 2;
         i++) {
        dir_of(j->layers[i].name, dir, sizeof(dir));
        scan_users(j, dir, seen, &n_seen);
    }
    /* a --search that cannot be read would hide the very images it is
     * there to find */
    for (i = 0; i < a->nsearch; i++) {
        int rc = scan_users(j, a->search[i], seen, &n_seen);
        if (rc < 0) {
            cli_error_file(a->search[i], "cannot search it for images "
                           "that use the base: %s", strerror(-rc));
            return STEP_FAIL;
        }
    }
    return !a->force && refuse_users(j) ? STEP_FAIL : STEP_ON;
}

/* ---- room for the commit ---- */

static int check_fit(struct job *j)
{
    const struct cli_layer *t = &j->layers[j->top], *b = &j->layers[j->base];
    struct qcow2_commit_estimate est;
    struct cli_fit fit;
    char msg[PATH_MAX + 256];
    int rc;

    if (qcow2_commit_estimate(t->img, j->base - j->top, 0, &est) < 0) {
        cli_error_file(t->name, "%s", qcow2_errmsg(t->img));
        return -1;
    }
    rc = cli_base_fit(b->name, &est, &fit);
    j->fit = fit;
    j->fit_known = rc == 0;
    if (rc < 0) {
        cli_error_file(b->name, "cannot read the free space of its file "
                       "system: %s", strerror(-rc));
        return -1;
    }
    if (fit.fits)
        return 0;
    cli_fit_refusal(b->name, &fit, msg, sizeof(msg));
    cli_error("%s", msg);
    return -1;
}

/* ---- progress ---- */

static int progress_cb(void *ctx, uint64_t done, uint64_t total)
{
    static struct timespec last;

    cli_progress(ctx, &last, done, total);
    return 0;
}

static void parse_args(int argc, char **argv, struct args *a)
{
    static const struct option longopts[] = {
        CLI_COMMON_LONGOPTS,
        {"top", required_argument, NULL, 't'},
        {"base", required_argument, NULL, 'b'},
        {"search", required_argument, NULL, 's'},
        {"force", no_argument, NULL, 'F'},
        {"progress", no_argument, NULL, 'p'},
        {"state-dir", required_argument, NULL, 'D'},
        {NULL, 0, NULL, 0}};
    int opt;

    while ((opt = getopt_long(argc, argv, CLI_COMMON_SHORTOPTS "p", longopts,
                              NULL)) != -1) {
        if (cli_common_option(opt, optarg, &common, usage))
            continue;
        switch (opt) {
        case 't': a->top = optarg; break;
        case 'b': a->base = optarg; break;
        case 's':
            if (a->nsearch == MAX_SEARCH)
                cli_usage_error("too many --search directories");
            a->search[a->nsearch++] = optarg;
            break;
        case 'F': a->force = true; break;
        case 'p': show_progress = true; break;
        case 'D':
            if (!*optarg)
                cli_usage_error("--state-dir needs a directory");
            state_dir = optarg;
            break;
        default: cli_usage_error("incorrect parameter");
        }
    }
    if (common.force_share)
        cli_usage_error("-U does not apply: commit writes images");
    if (optind >= argc)
        cli_usage_error("missing ACTIVE");
    if (argc - optind > MAX_DISKS)
        cli_usage_error("too many ACTIVE images (at most %d)", MAX_DISKS);
    for (; optind < argc; optind++)
        a->actives[a->ndisks++] = argv[optind];
    a->active = a->actives[0];
    if (a->ndisks > 1 && (a->top || a->base))
        cli_usage_error("--top and --base apply to a single ACTIVE");
    if (!show_progress && common.output == CLI_OUTPUT_HUMAN && isatty(2))
        show_progress = a->ndisks == 1;
    if (a->ndisks > 1)
        show_progress = false; /* one bar per disk would be garbled */
}

/* TOP is not in the chain: maybe this very job finished already, which
 * its journal (killed after the re-point) or the record of committed
 * layers beside a layer of the chain says.  STEP_DONE (reported) or
 * STEP_FAIL. */
static int top_left_the_chain(struct job *j, const struct args *a)
{
    struct cli_journal jr;
    struct stat ts;
    const char *done_base = NULL, *job = NULL;
    int b = a->base ? find_layer(j, a->base) : -1;
    unsigned i;

    if (b >= 0 && state_path(j, (unsigned)b, ".qchain-commit", j->journal,
                             sizeof(j->journal)) == 0) {
        struct cli_layer tl = {.name = a->top};
        if (stat(a->top, &ts) == 0) {
            tl.dev = (uint64_t)ts.st_dev;
            tl.ino = (uint64_t)ts.st_ino;
            tl.device = S_ISBLK(ts.st_mode);
        }
        if (cli_journal_read(j->journal, &jr) == 0 &&
            cli_journal_names(&jr, 1, &tl)) {
            unlink(j->journal);
            qcow2_io_sync_dir(j->journal);
            done_base = a->base;
            job = jr.uuid;
        }
    }
    if (!done_base && stat(a->top, &ts) == 0)
        for (i = 0; i < j->n && !done_base; i++)
            if (recorded_in(j, i, &ts))
                done_base = j->layers[i].name;
    if (done_base) {
        report_done(j, a->top, done_base, job);
        return STEP_DONE;
    }
    if (stat(a->top, &ts) < 0)
        cli_error_file(a->top, "%s", strerror(errno));
    else
        cli_error_file(a->top, "is not in the backing chain of '%s'",
                       j->active);
    return STEP_FAIL;
}

/* 1. the chain, without locks: who is who; TOP and BASE in it */
static int open_chain(struct job *j, const struct args *a)
{
    if (cli_chain_open(&common, j->active, QCOW2_OPEN_FORCE_SHARE, &j->chain,
                       &j->c) < 0)
        return STEP_FAIL;
    j->layers = j->c.layers;
    j->n = j->c.n;
    if (a->top && j->n >= 2 && find_layer(j, a->top) < 0)
        return top_left_the_chain(j, a);
    if (cli_chain_resolve(&j->c, j->active, a->top, a->base) < 0)
        return STEP_FAIL;
    j->top = j->c.top;
    j->base = j->c.base;
    return STEP_ON;
}

/* 2. the job's state: done already, or an unfinished run to resume (only
 * this very job may be resumed) */
static int job_state(struct job *j)
{
    struct cli_journal jr;

    if (state_path(j, j->base, ".qchain-commit", j->journal,
                   sizeof(j->journal)) < 0) {
        cli_error_file(j->layers[j->base].name, "cannot name its journal");
        return STEP_FAIL;
    }
    if (access(j->journal, F_OK) != 0 && job_done(j)) {
        report_done(j, j->layers[j->top].name, j->layers[j->base].name,
                    NULL);
        return STEP_DONE;
    }
    if (cli_journal_read(j->journal, &jr) == 0) {
        if (!cli_journal_names(&jr, 0, &j->layers[0]) ||
            !cli_journal_names(&jr, 1, &j->layers[j->top]) ||
            !cli_journal_names(&jr, 2, &j->layers[j->base])) {
            cli_error_file(j->journal, "an unfinished commit job (%s, top "
                           "'%s') left this journal; run that job again to "
                           "finish it, or remove the journal if you know it "
                           "is stale", jr.uuid, jr.name[1]);
            return STEP_FAIL;
        }
        memcpy(j->uuid, jr.uuid, sizeof(j->uuid));
        j->resuming = true;
    } else if (access(j->journal, F_OK) == 0) {
        cli_error_file(j->journal, "is not a qchain-commit journal; remove "
                       "it or move it away");
        return STEP_FAIL;
    }
    return STEP_ON;
}


/* 4b. a base someone made read-only is refused with that reason, before
 * anything is written (root would write through the mode bits) */
static int check_writable(const struct job *j)
{
    const struct cli_layer *b = &j->layers[j->base];
    struct statvfs vfs;
    struct stat st;
    int fd, attr = 0;

    if (stat(b->name, &st) < 0)
        return STEP_ON; /* the open says why */
    if (!(st.st_mode & 0222)) {
        cli_error_file(b->name, "is read-only (mode %04o): make it writable "
                       "(chmod u+w) to commit into it", st.st_mode & 07777);
        return STEP_FAIL;
    }
    fd = open(b->name, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd >= 0 && ioctl(fd, FS_IOC_GETFLAGS, &attr) == 0 &&
        (attr & (FS_IMMUTABLE_FL | FS_APPEND_FL))) {
        close(fd);
        cli_error_file(b->name, "is %s (chattr %s): remove the attribute "
                       "to commit into it", attr & FS_IMMUTABLE_FL
                       ? "immutable" : "append-only",
                       attr & FS_IMMUTABLE_FL ? "+i" : "+a");
        return STEP_FAIL;
    }
    if (fd >= 0)
        close(fd);
    if (statvfs(b->name, &vfs) == 0 && (vfs.f_flag & ST_RDONLY)) {
        cli_error_file(b->name, "is on a file system mounted read-only");
        return STEP_FAIL;
    }
    return STEP_ON;
}

/* Open `l` by name with locks (flags: QCOW2_IO_*) and make sure it is the
 * file the chain was read from: a rename between the two opens must not
 * make the job lock, or later write, another file. */
static int lock_layer(const struct job *j, const struct cli_layer *l,
                      unsigned flags, struct qcow2_io *io)
{
    char err[512], who[256];
    uint64_t dev = 0, ino = 0;
    struct cli_journal jr;
    int rc = qcow2_io_open_file(l->name, flags, io, err, sizeof(err));

    if (rc == -EBUSY) {
        /* the image in use, who holds it, what to do */
        if (cli_holders_str(l->name, who, sizeof(who)) <= 0)
            snprintf(who, sizeof(who), "another process");
        if (!strstr(who, "qchain-commit (pid"))
            cli_error_file(l->name, "%s; held by %s: stop the VM (or the "
                           "program holding it), then run the same command "
                           "again", err, who);
        else if (cli_journal_read(j->journal, &jr) == 0)
            cli_error_file(l->name, "a commit is running on it: held by %s, "
                           "job %s: wait for it to finish", who, jr.uuid);
        else
            cli_error_file(l->name, "a commit is running on it: held by %s: "
                           "wait for it to finish", who);
        return -1;
    }
    if (rc < 0) {
        cli_error_file(l->name, "%s", err);
        return -1;
    }
    if (!l->device && (!io->identity || io->identity(io->ctx, &dev, &ino) < 0 ||
                       dev != l->dev || ino != l->ino)) {
        io->close(io->ctx);
        cli_error_file(l->name, "was replaced by another file while the chain "
                       "was read; run the command again");
        return -1;
    }
    return 0;
}

/* 5. locks: BASE and the image to re-point for writing, the rest for
 * reading (nobody may write what we copy) */
static int take_locks(struct job *j)
{
    unsigned i;

    /* from the active image down, so that a VM is named by the image it
     * writes (it holds the layers below as backing files).  The image to
     * re-point: locked for writing now, opened as an image only for the
     * re-point (opened read-write, an image flags its persistent bitmaps
     * in use until it is closed: a kill during the copy would cost the
     * VM's incremental backups); the others for reading */
    j->locks = calloc(j->n, sizeof(*j->locks));
    if (!j->locks)
        return STEP_FAIL;
    for (i = 0; i < j->base; i++) {
        if (j->top > 0 && i == j->top - 1) {
            if (lock_layer(j, &j->layers[i], QCOW2_IO_RDWR, &j->above_lock) < 0)
                return STEP_FAIL;
            j->above_locked = true;
            continue;
        }
        if (lock_layer(j, &j->layers[i], 0, &j->locks[j->nlocks]) < 0)
            return STEP_FAIL;
        j->nlocks++;
    }
    /* BASE last: locked for writing until
     * the job's journal is gone; opened as an image only to copy (nothing
     * is written before every check) */
    if (lock_layer(j, &j->layers[j->base], QCOW2_IO_RDWR, &j->base_lock) < 0)
        return STEP_FAIL;
    j->base_locked = true;
    return STEP_ON;
}

/* The chain read again now that nobody may write it (what was read before
 * the locks only named the files to lock): the same files, or refused. */
static int reread_chain(struct job *j)
{
    struct qcow2_image *chain = NULL;
    struct cli_chain c;
    unsigned i;

    if (cli_chain_open(&common, j->active, QCOW2_OPEN_FORCE_SHARE, &chain,
                       &c) < 0)
        return STEP_FAIL;
    for (i = 0; i < c.n && c.n == j->n; i++)
        if (c.layers[i].dev != j->layers[i].dev ||
            c.layers[i].ino != j->layers[i].ino ||
            strcmp(c.layers[i].name, j->layers[i].name) != 0)
            break;
    if (c.n != j->n || i < c.n) {
        cli_error_file(j->active, "its backing chain changed while it was "
                       "read; run the command again");
        qcow2_close(chain);
        cli_chain_free(&c);
        return STEP_FAIL;
    }
    c.top = j->top;
    c.base = j->base;
    qcow2_close(j->chain);
    cli_chain_free(&j->c);
    j->chain = chain;
    j->c = c;
    j->layers = c.layers;
    return STEP_ON;
}

/* The re-point must be possible, crash safe, before any write. */
static int check_repoint(struct job *j)
{
    struct qcow2_image *above;

    if (j->top == 0)
        return STEP_ON;
    above = j->layers[j->top - 1].img;
    j->rebase_name = cli_backing_name(j->layers[j->top - 1].name,
                                      j->layers[j->base].name,
                                      BACKING_PATH_AUTO);
    if (!j->rebase_name ||
        qcow2_set_backing_check(above, j->rebase_name,
                                j->layers[j->base].format) < 0) {
        cli_error_file(j->layers[j->top - 1].name, "cannot be re-pointed at "
                       "the base: %s", j->rebase_name ? qcow2_errmsg(above)
                       : "out of memory");
        return STEP_FAIL;
    }
    return STEP_ON;
}

/* BASE opened as an image over its lock, for the copy. */
static int open_base(struct job *j)
{
    const struct qcow2_header *h = qcow2_header_get(j->layers[j->base].img);
    struct qcow2_open_opts o;

    /* a dirty base (lazy refcounts, its writer killed) has its refcounts
     * rebuilt by the library as it opens read-write */
    j->base_dirty = h && h->version >= 3 && (h->incompatible_features & 1);
    j->base_img = qcow2_new();
    if (!j->base_img)
        return STEP_FAIL;
    /* with its own backing chain: a write into part of a cluster copies
     * the rest from there */
    cli_open_opts(&common, &o, QCOW2_OPEN_RDWR);
    o.format = j->layers[j->base].format;
    j->base_locked = false; /* the handle owns the lock now */
    if (qcow2_open_io(j->base_img, &j->base_lock, j->layers[j->base].name,
                      &o) < 0) {
        cli_error_file(j->layers[j->base].name, "%s",
                       qcow2_errmsg(j->base_img));
        return STEP_FAIL;
    }
    return STEP_ON;
}

/* The copy failed: name the file that failed (the base being written, or
 * the layer being read) and say that the job resumes. */
static int copy_failed(const struct job *j, int rc)
{
    const char *bmsg = qcow2_errmsg(j->base_img);
    bool base = bmsg && *bmsg;

    cli_error_file(base ? j->layers[j->base].name : j->layers[j->top].name,
                   "%s; the commit stopped at a safe point: %s, then run the "
                   "same command again to resume", base ? bmsg
                   : qcow2_errmsg(j->layers[j->top].img),
                   rc == -ENOSPC || rc == -EDQUOT ? "free space"
                   : "fix that");
    return STEP_FAIL;
}

/* The image to re-point, opened read-write over the lock held since
 * take_locks (the handle owns it from here). */
static int open_above(struct job *j)
{
    struct qcow2_open_opts o;

    j->above = qcow2_new();
    if (!j->above)
        return -ENOMEM;
    cli_open_opts(&common, &o, QCOW2_OPEN_RDWR | QCOW2_OPEN_NO_BACKING);
    o.format = "qcow2";
    j->above_locked = false;
    if (qcow2_open_io(j->above, &j->above_lock, j->layers[j->top - 1].name,
                      &o) < 0) {
        cli_error_file(j->layers[j->top - 1].name, "%s",
                       qcow2_errmsg(j->above));
        return -EIO;
    }
    return 0;
}

/* 6. the journal (or, resuming, the clusters the interrupted run leaked
 * reclaimed), 7. the copy, 8. the re-point */
static int run(struct job *j)
{
    struct qcow2_commit_opts co = {.size = sizeof(co)};
    struct timespec t0, t1;
    int rc;

    if (stop_signal)
        return STEP_INTERRUPTED; /* nothing written yet */
    if (open_base(j) != STEP_ON)
        return STEP_FAIL;
    if (!j->resuming) {
        rc = journal_write(j);
        if (rc < 0) {
            cli_error_file(j->journal, "cannot write the journal: %s",
                           strerror(-rc));
            return STEP_FAIL;
        }
    } else {
        if (common.output == CLI_OUTPUT_HUMAN)
            printf("Resuming the interrupted commit %s.\n", j->uuid);
        if (qcow2_rebuild_refcounts(j->base_img) < 0) {
            cli_error_file(j->layers[j->base].name, "cannot reclaim the "
                           "clusters the interrupted run leaked: %s",
                           qcow2_errmsg(j->base_img));
            return STEP_FAIL;
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &t0);
    co.progress = show_progress ? progress_cb : NULL;
    co.progress_ctx = &t0;
    co.cancel = cancel_cb;
    rc = qcow2_commit(j->layers[j->top].img, j->base - j->top, j->base_img,
                      &co, &j->st);
    if (rc == -ECANCELED && stop_signal) {
        if (show_progress)
            fputc('\n', stderr);
        return STEP_INTERRUPTED;
    }
    if (rc < 0)
        return copy_failed(j, rc);
    /* the base finished (flushed, its bitmaps consistent) and kept
     * locked until the journal is gone */
    rc = qcow2_close_keep_io(j->base_img, &j->base_lock);
    j->base_img = NULL;
    j->base_locked = rc == 0;
    if (rc < 0) {
        cli_error_file(j->layers[j->base].name, "cannot flush the base");
        return STEP_FAIL;
    }
    /* 9. the layers committed recorded, durably, before the re-point
     * takes TOP out of the chain: a re-run then knows the job is done */
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if ((rc = record_committed(j, (double)(t1.tv_sec - j->t_start.tv_sec) +
                                      (double)(t1.tv_nsec -
                                               j->t_start.tv_nsec) /
                                          1e9)) < 0) {
        cli_error_file(j->layers[j->base].name, "cannot record the "
                       "committed layers: %s", strerror(-rc));
        return STEP_FAIL;
    }
    if (j->above_locked && (rc = open_above(j)) < 0)
        return STEP_FAIL;
    if (j->above) {
        if (qcow2_set_backing(j->above, j->rebase_name,
                              j->layers[j->base].format) < 0) {
            cli_error_file(j->layers[j->top - 1].name, "cannot re-point it "
                           "at the base: %s", qcow2_errmsg(j->above));
            return STEP_FAIL;
        }
        rc = qcow2_close(j->above);
        j->above = NULL;
        if (rc < 0) {
            cli_error_file(j->layers[j->top - 1].name, "cannot flush it");
            return STEP_FAIL;
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    j->secs = (double)(t1.tv_sec - t0.tv_sec) +
              (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    /* 10. done: the journal removed */
    rc = unlink(j->journal) < 0 ? -errno : qcow2_io_sync_dir(j->journal);
    if (rc < 0) {
        cli_error_file(j->journal, "cannot remove the finished job's "
                       "journal: %s", strerror(-rc));
        return STEP_FAIL;
    }
    return STEP_ON;
}

/* Does an image outside the chain use layer i? */
static bool layer_used(const struct job *j, unsigned i)
{
    unsigned k;

    for (k = 0; k < j->n_users; k++)
        if (j->users[k].layer == i)
            return true;
    return false;
}

static void report(struct json *js, const struct job *j)
{
    const struct qcow2_commit_stats *st = &j->st;
    unsigned i, k;

    if (js) {
        const char *names[QCOW2_DEFAULT_MAX_DEPTH + 1];
        struct outcome o = {.active = j->active,
                            .top = j->layers[j->top].name,
                            .base = j->layers[j->base].name,
                            .rebased = j->top > 0 ? j->layers[j->top - 1].name
                                                  : NULL,
                            .unreferenced = names, .users = j,
                            .job = j->uuid, .st = *st, .secs = j->secs,
                            .rebuilt = j->base_dirty};
        for (i = j->top; i < j->base && o.n_unreferenced <
                                            QCOW2_DEFAULT_MAX_DEPTH + 1; i++)
            if (!layer_used(j, i))
                names[o.n_unreferenced++] = j->layers[i].name;
        outcome_json(js, &o);
        return;
    }
    {
        char a[32], b[32], r[32];
        printf("Committed %s of data and %s of zeros into '%s' in %.2f s "
               "(%s/s).\n", cli_size_str(st->data_bytes, a, sizeof(a)),
               cli_size_str(st->zero_bytes, b, sizeof(b)),
               j->layers[j->base].name, j->secs,
               cli_size_str(j->secs > 0 ? (uint64_t)((double)st->data_bytes /
                                                     j->secs)
                                        : 0, r, sizeof(r)));
    }
    if (j->base_dirty)
        printf("The refcounts of '%s' were rebuilt first (its dirty bit was "
               "set: a writer with lazy refcounts had stopped without "
               "closing it).\n", j->layers[j->base].name);
    if (st->grown)
        printf("'%s' was grown to %" PRIu64 " bytes.\n",
               j->layers[j->base].name, st->total_bytes);
    if (j->top > 0)
        printf("'%s' now has '%s' as its backing file.\n",
               j->layers[j->top - 1].name, j->rebase_name);
    else
        printf("'%s' holds the guest's whole view: the guest can start on "
               "it.\n", j->layers[j->base].name);
    for (i = j->top, k = 0; i < j->base; i++) {
        if (layer_used(j, i))
            continue;
        if (k++ == 0)
            printf("No longer referenced (not deleted):\n");
        printf("  %s\n", j->layers[i].name);
    }
    for (i = j->top; i < j->base; i++) {
        if (!layer_used(j, i))
            continue;
        printf("Still the backing file of other images (keep it): '%s', "
               "used by:\n", j->layers[i].name);
        for (k = 0; k < j->n_users; k++)
            if (j->users[k].layer == i)
                printf("  %s\n", j->users[k].path);
    }
}

static void job_free(struct job *j)
{
    unsigned i;

    for (i = 0; i < j->nlocks; i++)
        j->locks[i].close(j->locks[i].ctx);
    free(j->locks);
    if (j->above_locked)
        j->above_lock.close(j->above_lock.ctx);
    if (j->base_locked)
        j->base_lock.close(j->base_lock.ctx);
    qcow2_close(j->above);
    qcow2_close(j->base_img);
    qcow2_close(j->chain);
    cli_chain_free(&j->c);
    free(j->rebase_name);
    for (i = 0; i < j->n_users; i++)
        free(j->users[i].path);
    free(j->users);
}

/* Several disks whose bases share a file system must fit there together,
 * each alone is not enough.  Returns the number of file systems short
 * (said). */
static unsigned check_fit_together(const struct job *jobs, unsigned n)
{
    unsigned i, k, short_fs = 0;

    for (i = 0; i < n; i++) {
        const struct job *j = &jobs[i];
        struct stat st, sk;
        uint64_t sum = 0;
        bool first = true;
        char a[32], b[32];
        if (!j->fit_known || j->fit.device ||
            stat(j->layers[j->base].name, &st) < 0)
            continue;
        for (k = 0; k < n; k++) {
            const struct job *o = &jobs[k];
            if (!o->fit_known || o->fit.device ||
                stat(o->layers[o->base].name, &sk) < 0 ||
                sk.st_dev != st.st_dev)
                continue;
            if (k < i)
                first = false; /* that file system counted already */
            if (o->fit.growth > 0)
                sum += (uint64_t)o->fit.growth;
        }
        if (!first || sum <= j->fit.free)
            continue;
        short_fs++;
        cli_error_file(j->layers[j->base].name, "the commits of these disks "
                       "grow the bases on its file system by %s (%" PRIu64
                       " bytes) together, more than the %s free; free space, "
                       "then run the same command again",
                       cli_size_str(sum, a, sizeof(a)), sum,
                       cli_size_str(j->fit.free, b, sizeof(b)));
    }
    return short_fs;
}

/* Steps 1-5 for one disk: everything is checked, nothing written. */
static int prepare(struct job *j, const struct args *a)
{
    int rc = open_chain(j, a);

    if (rc == STEP_ON)
        rc = job_state(j);
    if (rc == STEP_ON)
        rc = check_writable(j);
    /* every check below reads the chain under locks: nobody writes it
     * from here on */
    if (rc == STEP_ON)
        rc = take_locks(j);
    if (rc == STEP_ON)
        rc = reread_chain(j);
    if (rc == STEP_ON)
        rc = check_users(j, a);
    /* 4. room, before anything is written (a resumed job first reclaims
     * what the interrupted run leaked: the library checks a device then,
     * before it writes) */
    if (rc == STEP_ON && !j->resuming)
        rc = check_fit(j);
    if (rc == STEP_ON)
        rc = check_repoint(j);
    return rc;
}

static void *run_thread(void *arg)
{
    struct job *j = arg;

    j->rc = run(j);
    return NULL;
}

/* 6-10 for every disk that has work, concurrently (one thread each). */
static void run_all(struct job *jobs, unsigned n)
{
    pthread_t th[MAX_DISKS];
    bool started[MAX_DISKS] = {false};
    unsigned i;

    for (i = 0; i < n; i++) {
        if (jobs[i].done)
            continue;
        if (n == 1 || pthread_create(&th[i], NULL, run_thread, &jobs[i]))
            run_thread(&jobs[i]); /* one disk, or no thread: here */
        else
            started[i] = true;
    }
    for (i = 0; i < n; i++)
        if (started[i])
            pthread_join(th[i], NULL);
}

/* Each disk's report: one object (one disk) or {"disks": [...]}; in human
 * form each disk under its own heading. */
static void report_all(const struct job *jobs, unsigned n)
{
    struct json js;
    unsigned i;

    if (common.output == CLI_OUTPUT_JSON) {
        json_init(&js, stdout, true);
        if (n > 1) {
            json_object_begin(&js, NULL);
            json_array_begin(&js, "disks");
        }
        for (i = 0; i < n; i++)
            if (jobs[i].done)
                show_done(&js, &jobs[i]);
            else if (jobs[i].rc == STEP_ON)
                report(&js, &jobs[i]);
        if (n > 1) {
            json_array_end(&js);
            json_object_end(&js);
        }
        json_end(&js);
        return;
    }
    for (i = 0; i < n; i++) {
        if (!jobs[i].done && jobs[i].rc != STEP_ON)
            continue;
        if (n > 1)
            printf("%sDisk %u of %u, '%s':\n", i ? "\n" : "", i + 1, n,
                   jobs[i].active);
        if (jobs[i].done)
            show_done(NULL, &jobs[i]);
        else
            report(NULL, &jobs[i]);
    }
}

int main(int argc, char **argv)
{
    struct args a = {0};
    struct job jobs[MAX_DISKS];
    unsigned i;
    struct timespec start;
    int rc = STEP_ON;

    clock_gettime(CLOCK_MONOTONIC, &start);
    cli_init("qchain-commit", argv);
    parse_args(argc, argv, &a);
    catch_stop_signals();
    memset(jobs, 0, sizeof(jobs));
    /* every disk checked (locks, siblings, dependents, room) before any
     * is written */
    for (i = 0; i < a.ndisks && rc != STEP_FAIL; i++) {
        jobs[i].active = a.actives[i];
        jobs[i].t_start = start;
        rc = prepare(&jobs[i], &a);
        if (rc == STEP_DONE)
            rc = STEP_ON;
    }
    if (rc == STEP_ON && a.ndisks > 1 && check_fit_together(jobs, a.ndisks))
        rc = STEP_FAIL;
    if (rc == STEP_ON) {
        run_all(jobs, a.ndisks);
        for (i = 0; i < a.ndisks; i++)
            if (!jobs[i].done && jobs[i].rc != STEP_ON &&
                rc != STEP_INTERRUPTED)
                rc = jobs[i].rc;
        report_all(jobs, a.ndisks);
    }
    for (i = 0; i < a.ndisks; i++)
        job_free(&jobs[i]);
    if (rc == STEP_INTERRUPTED)
        return report_interrupted(argc, argv);
    return rc == STEP_FAIL ? QCHAIN_EXIT_FAILURE : QCHAIN_EXIT_OK;
}
