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
 * The job, step by step:
 *   1. resolve the chain and check everything (chain membership, siblings
 *      that share BASE, locks: BASE and the image to re-point are held
 *      for writing, every other layer read is held for reading)
 *   2. write a journal beside BASE naming the job (uuid, identities)
 *   3. copy (library qcow2_commit): never changes the guest view
 *   4. re-point the image above TOP (one atomic sector write)
 *   5. remove the journal
 * Killed anywhere, every image still reads as before (until step 4 the
 * layers above shadow what was written; step 4 is atomic).  Run again, the
 * journal identifies the job: the base's leaked clusters are reclaimed and
 * the copy (idempotent) is redone, or, past step 4, the job is finished.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <uuid/uuid.h>

#include "chain.h"
#include "cli.h"
#include "json.h"
#include "paths.h"

#define MAX_SEARCH 64

struct job {
    const char *active;
    struct cli_chain c;
    struct cli_layer *layers; /* c.layers */
    unsigned n;       /* layers in ACTIVE's chain */
    unsigned top;     /* depth of TOP */
    unsigned base;    /* depth of BASE */
    char journal[PATH_MAX];
    char uuid[37];
    bool resuming;
};

static struct cli_common common;
static bool show_progress;

static void usage(void)
{
    printf("Usage: %s [OPTIONS] ACTIVE\n"
           "Commit the layers of ACTIVE's chain from TOP down to just above "
           "BASE into BASE.\n\n"
           "  --top=TOP            first layer to commit (default: ACTIVE)\n"
           "  --base=BASE          image to commit into (default: TOP's "
           "backing file)\n"
           "  --search=DIR         also look in DIR for other images backed "
           "by BASE\n"
           "  --force              commit even when other images use BASE\n"
           "  -p, --progress       show a progress bar on stderr\n"
           "  -f, --format=FMT     format of ACTIVE (qcow2 or raw)\n"
           "  --output=human|json  report format; --json\n"
           "  -h, --help           this help\n"
           "  -V, --version        version\n\n"
           "The committed layers are left in place (now redundant); the "
           "command lists them.\n",
           cli_progname());
}

static int identity_of(const char *path, uint64_t *dev, uint64_t *ino)
{
    struct stat st;
    if (stat(path, &st) < 0)
        return -errno;
    *dev = (uint64_t)st.st_dev;
    *ino = (uint64_t)st.st_ino;
    return 0;
}

static int find_layer(const struct job *j, const char *path)
{
    return cli_chain_find(&j->c, path);
}

/* ---- journal ---- */

static int fsync_dir_of(const char *path)
{
    char *copy = strdup(path);
    int fd, rc = 0;

    if (!copy)
        return -ENOMEM;
    fd = open(dirname(copy), O_RDONLY | O_DIRECTORY);
    free(copy);
    if (fd < 0)
        return -errno;
    if (fsync(fd) < 0)
        rc = -errno;
    close(fd);
    return rc;
}

static void journal_line(FILE *f, const char *key,
                         const struct cli_layer *l)
{
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
    return fsync_dir_of(j->journal);
}

struct journal {
    char uuid[37];
    uint64_t dev[3], ino[3]; /* active, top, base */
    char top_name[PATH_MAX];
};

static int journal_read(const char *path, struct journal *out)
{
    static const char *const keys[3] = {"active", "top", "base"};
    char line[PATH_MAX + 128];
    unsigned seen = 0, k;
    FILE *f = fopen(path, "r");

    if (!f)
        return -errno;
    memset(out, 0, sizeof(*out));
    if (!fgets(line, sizeof(line), f) ||
        strcmp(line, "qchain-commit journal 1\n") != 0) {
        fclose(f);
        return -EINVAL;
    }
    while (fgets(line, sizeof(line), f)) {
        char name[PATH_MAX];
        if (sscanf(line, "uuid %36s", out->uuid) == 1) {
            seen |= 8;
            continue;
        }
        for (k = 0; k < 3; k++) {
            size_t kl = strlen(keys[k]);
            if (strncmp(line, keys[k], kl) == 0 && line[kl] == ' ' &&
                sscanf(line + kl, " %" SCNu64 ":%" SCNu64 " %4095[^\n]",
                       &out->dev[k], &out->ino[k], name) == 3) {
                seen |= 1u << k;
                if (k == 1)
                    snprintf(out->top_name, sizeof(out->top_name), "%s",
                             name);
            }
        }
    }
    fclose(f);
    return seen == 15 ? 0 : -EINVAL;
}

/* ---- layers committed earlier ----
 * Committed layers stay in place, still naming BASE as their backing file,
 * so a later commit into BASE would take them for siblings.  BASE's
 * directory keeps a record of them ("BASE.qchain-committed": device, inode,
 * size and modification time); a recorded file that has not changed since
 * is a redundant leftover, not a sibling. */

static void record_path(const struct job *j, char *out, size_t len)
{
    snprintf(out, len, "%s.qchain-committed", j->layers[j->base].name);
}

/* Is the file st listed, unchanged, in the record beside base_name? */
static bool recorded_in(const char *base_name, const struct stat *st)
{
    char path[PATH_MAX], line[256];
    FILE *f;
    bool found = false;

    snprintf(path, sizeof(path), "%s.qchain-committed", base_name);
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
    return recorded_in(j->layers[j->base].name, st);
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

static void report_done(const char *active, const char *top, const char *base)
{
    if (common.output == CLI_OUTPUT_JSON) {
        struct json js;
        json_init(&js, stdout, true);
        json_object_begin(&js, NULL);
        json_string(&js, "active", active);
        json_string(&js, "top", top);
        json_string(&js, "base", base);
        json_bool(&js, "completed", true);
        json_object_end(&js);
        json_end(&js);
    } else {
        printf("The commit of '%s' into '%s' had already completed; nothing "
               "to do.\n", top, base);
    }
}

static void record_committed(const struct job *j)
{
    char path[PATH_MAX];
    unsigned i;
    FILE *f;

    record_path(j, path, sizeof(path));
    f = fopen(path, "a");
    if (!f)
        return;
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
    fclose(f);
}

/* ---- siblings ---- */

/* Images in dir, outside the chain, whose backing file is BASE. */
static int find_siblings(const struct job *j, const char *dir, FILE *report,
                         unsigned *count)
{
    const struct cli_layer *b = &j->layers[j->base];
    DIR *d = opendir(dir);
    struct dirent *de;

    if (!d)
        return 0; /* nothing to search */
    while ((de = readdir(d)) != NULL) {
        char path[PATH_MAX];
        struct qcow2_open_opts o = {.size = sizeof(o),
                                    .flags = QCOW2_OPEN_NO_BACKING |
                                             QCOW2_OPEN_FORCE_SHARE,
                                    .format = "qcow2"};
        struct qcow2_image *img;
        struct qcow2_info info;
        uint64_t dev = 0, ino = 0;
        struct stat st;
        unsigned char magic[4];
        int fd;
        bool in_chain = false;
        unsigned i;

        if (de->d_name[0] == '.' &&
            (!de->d_name[1] || (de->d_name[1] == '.' && !de->d_name[2])))
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        if (stat(path, &st) < 0 || !S_ISREG(st.st_mode))
            continue;
        for (i = 0; i < j->n; i++)
            if (j->layers[i].dev == (uint64_t)st.st_dev &&
                j->layers[i].ino == (uint64_t)st.st_ino)
                in_chain = true;
        if (in_chain || recorded(j, &st))
            continue;
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue;
        if (read(fd, magic, 4) != 4 || memcmp(magic, "QFI\xfb", 4) != 0) {
            close(fd);
            continue;
        }
        close(fd);
        img = qcow2_new();
        if (!img)
            return -ENOMEM;
        if (qcow2_open(img, path, &o) == 0 && qcow2_get_info(img, &info) == 0
            && info.backing_path &&
            identity_of(info.backing_path, &dev, &ino) == 0 &&
            dev == b->dev && ino == b->ino) {
            fprintf(report, "  %s\n", path);
            (*count)++;
        }
        qcow2_close(img);
    }
    closedir(d);
    return 0;
}

/* ---- progress ---- */

static int progress_cb(void *ctx, uint64_t done, uint64_t total)
{
    static struct timespec last;
    struct timespec now;
    const struct timespec *start = ctx;
    double el, rate;
    char a[32], b[32], r[32];

    clock_gettime(CLOCK_MONOTONIC, &now);
    if (done < total && (now.tv_sec - last.tv_sec) * 1000000000L +
                                (now.tv_nsec - last.tv_nsec) < 200000000L)
        return 0;
    last = now;
    el = (double)(now.tv_sec - start->tv_sec) +
         (double)(now.tv_nsec - start->tv_nsec) / 1e9;
    rate = el > 0 ? (double)done / el : 0;
    fprintf(stderr, "\r  [%3u%%] %s / %s, %s/s, %.0f s left   ",
            total ? (unsigned)(done * 100 / total) : 100,
            cli_size_str(done, a, sizeof(a)),
            cli_size_str(total, b, sizeof(b)),
            cli_size_str((uint64_t)rate, r, sizeof(r)),
            rate > 0 ? (double)(total - done) / rate : 0.0);
    if (done >= total)
        fputc('\n', stderr);
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        CLI_COMMON_LONGOPTS,
        {"top", required_argument, NULL, 't'},
        {"base", required_argument, NULL, 'b'},
        {"search", required_argument, NULL, 's'},
        {"force", no_argument, NULL, 'F'},
        {"progress", no_argument, NULL, 'p'},
        {NULL, 0, NULL, 0}};
    const char *top_arg = NULL, *base_arg = NULL, *search[MAX_SEARCH];
    unsigned nsearch = 0, i, siblings = 0, nlocks = 0;
    struct qcow2_image *chain = NULL, *base = NULL, *above = NULL;
    struct qcow2_io *locks = NULL;
    struct qcow2_open_opts o;
    struct qcow2_commit_stats st = {0};
    struct timespec t0, t1;
    struct journal jr;
    struct job j = {0};
    bool force = false;
    char *rebase_name = NULL, err[512];
    double secs;
    int opt, rc, status = QCHAIN_EXIT_FAILURE;

    cli_init("qchain-commit", argv);
    while ((opt = getopt_long(argc, argv, CLI_COMMON_SHORTOPTS "p", longopts,
                              NULL)) != -1) {
        if (cli_common_option(opt, optarg, &common, usage))
            continue;
        switch (opt) {
        case 't': top_arg = optarg; break;
        case 'b': base_arg = optarg; break;
        case 's':
            if (nsearch == MAX_SEARCH)
                cli_usage_error("too many --search directories");
            search[nsearch++] = optarg;
            break;
        case 'F': force = true; break;
        case 'p': show_progress = true; break;
        default: cli_usage_error("incorrect parameter");
        }
    }
    if (common.force_share)
        cli_usage_error("-U does not apply: commit writes images");
    if (optind != argc - 1)
        cli_usage_error(optind >= argc ? "missing ACTIVE"
                                       : "too many arguments");
    j.active = argv[optind];
    if (!show_progress && common.output == CLI_OUTPUT_HUMAN && isatty(2))
        show_progress = true;

    /* 1. the chain, without locks: who is who */
    chain = qcow2_new();
    if (!chain)
        return QCHAIN_EXIT_FAILURE;
    cli_open_opts(&common, &o, QCOW2_OPEN_FORCE_SHARE);
    if (qcow2_open(chain, j.active, &o) < 0) {
        cli_error_file(j.active, "%s", qcow2_errmsg(chain));
        goto out;
    }
    if (cli_chain_load(chain, &j.c) < 0)
        goto out;
    j.layers = j.c.layers;
    j.n = j.c.n;
    if (top_arg && j.n >= 2) {
        rc = find_layer(&j, top_arg);
        if (rc < 0) {
            /* maybe this very job already finished: its journal (killed
             * after the re-point) or the record of committed layers beside
             * a layer of the chain says so */
            struct stat tst;
            const char *done_base = NULL;
            if (base_arg && find_layer(&j, base_arg) >= 0) {
                snprintf(j.journal, sizeof(j.journal), "%s.qchain-commit",
                         j.layers[find_layer(&j, base_arg)].name);
                uint64_t dev = 0, ino = 0;
                if (journal_read(j.journal, &jr) == 0 &&
                    identity_of(top_arg, &dev, &ino) == 0 &&
                    jr.dev[1] == dev && jr.ino[1] == ino) {
                    unlink(j.journal);
                    fsync_dir_of(j.journal);
                    done_base = base_arg;
                }
            }
            if (!done_base && stat(top_arg, &tst) == 0)
                for (i = 0; i < j.n && !done_base; i++)
                    if (recorded_in(j.layers[i].name, &tst))
                        done_base = j.layers[i].name;
            if (done_base) {
                report_done(j.active, top_arg, done_base);
                status = QCHAIN_EXIT_OK;
                goto out;
            }
            cli_error_file(top_arg, "is not in the backing chain of '%s'",
                           j.active);
            goto out;
        }
    }
    if (cli_chain_resolve(&j.c, j.active, top_arg, base_arg) < 0)
        goto out;
    j.top = j.c.top;
    j.base = j.c.base;
    snprintf(j.journal, sizeof(j.journal), "%s.qchain-commit",
             j.layers[j.base].name);
    if (access(j.journal, F_OK) != 0 && job_done(&j)) {
        report_done(j.active, j.layers[j.top].name, j.layers[j.base].name);
        status = QCHAIN_EXIT_OK;
        goto out;
    }

    /* an unfinished job? only this very job may be resumed */
    if (journal_read(j.journal, &jr) == 0) {
        if (jr.dev[0] != j.layers[0].dev || jr.ino[0] != j.layers[0].ino ||
            jr.dev[1] != j.layers[j.top].dev ||
            jr.ino[1] != j.layers[j.top].ino ||
            jr.dev[2] != j.layers[j.base].dev ||
            jr.ino[2] != j.layers[j.base].ino) {
            cli_error_file(j.journal, "an unfinished commit job (%s, top "
                           "'%s') left this journal; run that job again to "
                           "finish it, or remove the journal if you know it "
                           "is stale", jr.uuid, jr.top_name);
            goto out;
        }
        memcpy(j.uuid, jr.uuid, sizeof(j.uuid));
        j.resuming = true;
    } else if (access(j.journal, F_OK) == 0) {
        cli_error_file(j.journal, "is not a qchain-commit journal; remove "
                       "it or move it away");
        goto out;
    }

    /* siblings: other images backed by BASE would see changed data */
    {
        char *bcopy = strdup(j.layers[j.base].name);
        FILE *rep = tmpfile();
        if (!bcopy || !rep)
            goto out;
        find_siblings(&j, dirname(bcopy), rep, &siblings);
        for (i = 0; i < nsearch; i++)
            find_siblings(&j, search[i], rep, &siblings);
        free(bcopy);
        if (siblings && !force) {
            char line[PATH_MAX + 8];
            cli_error_file(j.layers[j.base].name, "%u other image%s outside "
                           "this chain use%s it as backing file and would "
                           "read changed data (--force to commit anyway):",
                           siblings, siblings > 1 ? "s" : "",
                           siblings > 1 ? "" : "s");
            rewind(rep);
            while (fgets(line, sizeof(line), rep))
                fputs(line, stderr);
            fclose(rep);
            goto out;
        }
        fclose(rep);
    }

    /* locks: BASE and the image to re-point for writing, the rest for
     * reading (nobody may write what we copy) */
    base = qcow2_new();
    if (!base)
        goto out;
    cli_open_opts(&common, &o, QCOW2_OPEN_RDWR);
    o.format = j.layers[j.base].format;
    if (qcow2_open(base, j.layers[j.base].name, &o) < 0) {
        cli_error_file(j.layers[j.base].name, "%s", qcow2_errmsg(base));
        goto out;
    }
    if (j.top > 0) {
        above = qcow2_new();
        if (!above)
            goto out;
        cli_open_opts(&common, &o, QCOW2_OPEN_RDWR | QCOW2_OPEN_NO_BACKING);
        o.format = "qcow2";
        if (qcow2_open(above, j.layers[j.top - 1].name, &o) < 0) {
            cli_error_file(j.layers[j.top - 1].name, "%s",
                           qcow2_errmsg(above));
            goto out;
        }
    }
    locks = calloc(j.n, sizeof(*locks));
    if (!locks)
        goto out;
    for (i = 0; i < j.base; i++) {
        if (j.top > 0 && i == j.top - 1)
            continue;
        rc = qcow2_io_open_file(j.layers[i].name, 0, &locks[nlocks], err,
                                sizeof(err));
        if (rc < 0) {
            cli_error_file(j.layers[i].name, "%s", err);
            goto out;
        }
        nlocks++;
    }

    /* 2. the journal */
    if (!j.resuming) {
        rc = journal_write(&j);
        if (rc < 0) {
            cli_error_file(j.journal, "cannot write the journal: %s",
                           strerror(-rc));
            goto out;
        }
    } else {
        if (common.output == CLI_OUTPUT_HUMAN)
            printf("Resuming the interrupted commit %s.\n", j.uuid);
        if (qcow2_rebuild_refcounts(base) < 0) {
            cli_error_file(j.layers[j.base].name, "cannot reclaim the "
                           "clusters the interrupted run leaked: %s",
                           qcow2_errmsg(base));
            goto out;
        }
    }

    /* 3. copy */
    clock_gettime(CLOCK_MONOTONIC, &t0);
    rc = qcow2_commit(j.layers[j.top].img, j.base - j.top, base,
                      show_progress ? progress_cb : NULL, &t0, &st);
    if (rc < 0) {
        cli_error_file(j.layers[j.top].name, "%s",
                       qcow2_errmsg(j.layers[j.top].img));
        goto out;
    }
    if (qcow2_close(base) < 0) {
        base = NULL;
        cli_error_file(j.layers[j.base].name, "cannot flush the base");
        goto out;
    }
    base = NULL;

    /* 4. re-point the image above TOP */
    if (above) {
        rebase_name = cli_backing_name(j.layers[j.top - 1].name,
                                       j.layers[j.base].name,
                                       BACKING_PATH_AUTO);
        if (!rebase_name ||
            qcow2_set_backing(above, rebase_name, j.layers[j.base].format) <
                0) {
            cli_error_file(j.layers[j.top - 1].name, "cannot re-point it at "
                           "the base: %s", qcow2_errmsg(above));
            goto out;
        }
        if (qcow2_close(above) < 0) {
            above = NULL;
            cli_error_file(j.layers[j.top - 1].name, "cannot flush it");
            goto out;
        }
        above = NULL;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    secs = (double)(t1.tv_sec - t0.tv_sec) +
           (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;

    /* 5. done */
    record_committed(&j);
    unlink(j.journal);
    fsync_dir_of(j.journal);
    status = QCHAIN_EXIT_OK;

    if (common.output == CLI_OUTPUT_JSON) {
        struct json js;
        json_init(&js, stdout, true);
        json_object_begin(&js, NULL);
        json_string(&js, "active", j.active);
        json_string(&js, "top", j.layers[j.top].name);
        json_string(&js, "base", j.layers[j.base].name);
        json_u64(&js, "data-bytes", st.data_bytes);
        json_u64(&js, "zero-bytes", st.zero_bytes);
        json_double(&js, "seconds", secs);
        json_u64(&js, "bytes-per-second",
                 secs > 0 ? (uint64_t)((double)st.data_bytes / secs) : 0);
        if (j.top > 0)
            json_string(&js, "rebased", j.layers[j.top - 1].name);
        else
            json_null(&js, "rebased");
        json_array_begin(&js, "unreferenced");
        for (i = j.top; i < j.base; i++)
            json_string(&js, NULL, j.layers[i].name);
        json_array_end(&js);
        json_bool(&js, "base-grown", st.grown);
        json_u64(&js, "offloaded-bytes", st.offloaded_bytes);
        json_string(&js, "job", j.uuid);
        json_object_end(&js);
        json_end(&js);
    } else {
        char a[32], b[32], r[32];
        printf("Committed %s of data and %s of zeros into '%s' in %.2f s "
               "(%s/s).\n", cli_size_str(st.data_bytes, a, sizeof(a)),
               cli_size_str(st.zero_bytes, b, sizeof(b)),
               j.layers[j.base].name, secs,
               cli_size_str(secs > 0 ? (uint64_t)((double)st.data_bytes / secs)
                                     : 0, r, sizeof(r)));
        if (st.grown)
            printf("'%s' was grown to %" PRIu64 " bytes.\n",
                   j.layers[j.base].name, st.total_bytes);
        if (j.top > 0)
            printf("'%s' now has '%s' as its backing file.\n",
                   j.layers[j.top - 1].name, rebase_name);
        else
            printf("'%s' holds the guest's whole view: the guest can start "
                   "on it.\n", j.layers[j.base].name);
        printf("No longer referenced by the chain (not deleted):\n");
        for (i = j.top; i < j.base; i++)
            printf("  %s\n", j.layers[i].name);
    }
out:
    for (i = 0; i < nlocks; i++)
        locks[i].close(locks[i].ctx);
    free(locks);
    qcow2_close(above);
    qcow2_close(base);
    qcow2_close(chain);
    cli_chain_free(&j.c);
    free(rebase_name);
    return status;
}
