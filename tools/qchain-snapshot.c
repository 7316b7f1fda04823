/*
 * qchain-snapshot - the offline external snapshot: new qcow2 overlays on
 * top of the images a VM runs on.
 *
 *   qchain-snapshot [--backing-path=auto|relative|absolute] ACTIVE OVERLAY
 *   qchain-snapshot [...] ACTIVE:OVERLAY [ACTIVE:OVERLAY ...]
 *
 * Each OVERLAY is a qcow2 v3 image backed by ACTIVE, with ACTIVE's format
 * recorded and ACTIVE's virtual size.  The backing name is stored relative
 * to OVERLAY's directory when both files share it, absolute otherwise
 * (--backing-path chooses).  All pairs (all disks of a VM) are created or
 * none: every check runs before the first file is made, and a failure
 * removes the overlays already made.  Refuses when an OVERLAY exists, when
 * an ACTIVE cannot be opened with its whole chain, and when an ACTIVE is in
 * use by another process (a VM still writing it).
 *
 * An OVERLAY that is a block device (an LVM volume) is written over, as
 * qemu-img create does: refused when the device is smaller than the new
 * image's metadata; its first bytes are kept in memory first, and written
 * back if a later pair fails ("none" for a device: its old start again).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "json.h"
#include "paths.h"
#include "users.h"

struct pair {
    const char *active;
    const char *overlay;
    struct qcow2_image *img; /* ACTIVE, opened with its chain (read locks) */
    char *backing_name;      /* what OVERLAY will store */
    const char *format;      /* ACTIVE's format */
    uint64_t size;
    bool created;            /* made: under tmp, or on the device */
    bool published;          /* tmp renamed to OVERLAY */
    bool existed;            /* OVERLAY made already by an interrupted run */
    char tmp[PATH_MAX + 32]; /* where a file OVERLAY is made first */
    bool device;             /* OVERLAY is a block device */
    uint8_t *saved;          /* its first saved_len bytes before */
    size_t saved_len;
};

static void usage(void)
{
    printf("Usage: %s [OPTIONS] ACTIVE OVERLAY\n"
           "       %s [OPTIONS] ACTIVE:OVERLAY [ACTIVE:OVERLAY ...]\n"
           "Create qcow2 overlays backed by the images a VM runs on (all or "
           "none).\n\n"
           "  --backing-path=auto|relative|absolute\n"
           "                       how OVERLAY names ACTIVE (auto: relative "
           "when both\n"
           "                       are in one directory, else absolute)\n"
           "  -f, --format=FMT     format of ACTIVE (qcow2 or raw; probed)\n"
           "  --output=human|json  report format; --json\n"
           "  -h, --help           this help\n"
           "  -V, --version        version\n",
           cli_progname(), cli_progname());
}

static struct qcow2_create_opts create_opts(const struct pair *p)
{
    struct qcow2_create_opts o = {.size = sizeof(o),
                                  .format = QCOW2_FORMAT_QCOW2,
                                  .virtual_size = p->size,
                                  .version = 3,
                                  .backing_name = p->backing_name,
                                  .backing_format = p->format};
    return o;
}

/* A device overlay: large enough for the new image's metadata, and its
 * bytes there kept for a rollback. */
static int prepare_device(struct pair *p)
{
    struct qcow2_create_opts o = create_opts(p);
    struct qcow2_io io;
    uint64_t need;
    int64_t cap, n;
    char err[512], a[32], b[32];
    int rc;

    rc = qcow2_create_size(&o, &need, err, sizeof(err));
    if (rc < 0) {
        cli_error_file(p->overlay, "%s", err);
        return -1;
    }
    rc = qcow2_io_open_file(p->overlay, 0, &io, err, sizeof(err));
    if (rc < 0) {
        cli_error_file(p->overlay, "%s", err);
        return -1;
    }
    cap = io.size(io.ctx);
    if (cap >= 0 && need > (uint64_t)cap) {
        cli_error_file(p->overlay, "is a device of %s; the overlay's "
                       "metadata needs %s (%" PRIu64 " bytes)",
                       cli_size_str((uint64_t)cap, a, sizeof(a)),
                       cli_size_str(need, b, sizeof(b)), need);
        io.close(io.ctx);
        return -1;
    }
    p->saved = malloc(need ? (size_t)need : 1);
    n = p->saved && cap >= 0 ? io.pread(io.ctx, p->saved, (size_t)need, 0)
                             : -ENOMEM;
    io.close(io.ctx);
    if (n < 0 || (uint64_t)n != need) {
        cli_error_file(p->overlay, "cannot read the device: %s",
                       n < 0 ? strerror((int)-n) : "short read");
        return -1;
    }
    p->saved_len = (size_t)need;
    return 0;
}

/* Undo a device overlay: its first bytes as they were. */
static void restore_device(const struct pair *p)
{
    struct qcow2_io io;
    char err[512];

    if (qcow2_io_open_file(p->overlay, QCOW2_IO_RDWR, &io, err,
                           sizeof(err)) < 0 ||
        (io.pwrite(io.ctx, p->saved, p->saved_len, 0) < 0 ||
         io.flush(io.ctx) < 0)) {
        cli_error_file(p->overlay, "cannot restore the device's first %zu "
                       "bytes", p->saved_len);
        return;
    }
    io.close(io.ctx);
}

static int prepare(struct pair *p, enum backing_path_mode mode,
                   const struct cli_common *common)
{
    struct qcow2_open_opts o;
    struct qcow2_info info;
    struct stat st;
    int rc, locks;

    if (stat(p->overlay, &st) == 0) {
        if (!S_ISBLK(st.st_mode))
            p->existed = true; /* unless it is not what we would make */
        else
            p->device = true; /* written over, as qemu-img create does */
    }
    locks = qcow2_io_lock_probe(p->active);
    if (locks > 0) {
        cli_error_file(p->active, "image is in use by another process "
                       "(QEMU lock bytes held%s); stop the VM or take the "
                       "snapshot through it", (locks & 0x2) ? ", writing" : "");
        return -1;
    }
    p->img = qcow2_new();
    if (!p->img)
        return -1;
    cli_open_opts(common, &o, 0);
    rc = qcow2_open(p->img, p->active, &o);
    if (rc < 0) {
        cli_error_file(p->active, "%s", qcow2_errmsg(p->img));
        return -1;
    }
    qcow2_info_get(p->img, &info);
    p->format = info.format == QCOW2_FORMAT_QCOW2 ? "qcow2" : "raw";
    {
        const struct qcow2_header *h = qcow2_header_get(p->img);
        p->size = h ? h->size : info.virtual_size;
    }

    p->backing_name = cli_backing_name(p->overlay, p->active, mode);
    if (!p->backing_name) {
        cli_error_file(p->overlay, "cannot resolve the directories of '%s' "
                       "and '%s'", p->active, p->overlay);
        return -1;
    }
    if (p->existed) {
        /* a run killed while naming the overlays of several disks named
         * some: an overlay exactly as this run would make it, which nobody
         * holds, is taken as made */
        struct qcow2_create_opts co = create_opts(p);
        if (!cli_made_already(p->overlay, &co)) {
            cli_error_file(p->overlay, "already exists");
            return -1;
        }
    }
    return p->device ? prepare_device(p) : 0;
}

/* ACTIVE already the backing file of another image (in ACTIVE's or
 * OVERLAY's directory): the new overlay starts a second branch on it. */
static void found_fork(void *ctx, unsigned t, const char *path,
                       const struct stat *st)
{
    const struct pair *p = ctx;

    (void)t;
    (void)st;
    cli_warning("'%s' is already the backing file of '%s': '%s' makes a "
                "fork (two images over one; committing either into '%s' "
                "changes what the other reads)", p->active, path, p->overlay,
                p->active);
}

static void warn_fork(const struct pair *p)
{
    struct cli_target t;
    struct stat st, d1;
    char dir[2][PATH_MAX];
    unsigned k;

    if (stat(p->active, &st) < 0)
        return;
    t = (struct cli_target){(uint64_t)st.st_dev, (uint64_t)st.st_ino};
    for (k = 0; k < 2; k++) {
        const char *f = k ? p->overlay : p->active, *slash = strrchr(f, '/');
        if (!slash)
            snprintf(dir[k], sizeof(dir[k]), ".");
        else
            snprintf(dir[k], sizeof(dir[k]), "%.*s",
                     slash == f ? 1 : (int)(slash - f), f);
    }
    cli_find_users(dir[0], &t, 1, NULL, found_fork, (void *)p);
    if (stat(dir[0], &st) == 0 && stat(dir[1], &d1) == 0 &&
        (st.st_dev != d1.st_dev || st.st_ino != d1.st_ino))
        cli_find_users(dir[1], &t, 1, NULL, found_fork, (void *)p);
}

/* OVERLAY made whole: a file under its temporary name (named once every
 * overlay is made), a device in place. */
static int make_overlay(struct pair *p)
{
    struct qcow2_create_opts o = create_opts(p);
    struct qcow2_io io;
    char err[512];
    int rc;

    if (p->device) {
        rc = qcow2_create(p->overlay, &o, err, sizeof(err));
    } else {
        rc = qcow2_io_create_temp(p->overlay, 0, &io, p->tmp, sizeof(p->tmp),
                                  err, sizeof(err));
        if (rc == 0) {
            p->created = true;
            rc = qcow2_create_io(&io, p->overlay, &o, err, sizeof(err));
            io.close(io.ctx);
        }
    }
    if (rc < 0) {
        cli_error_file(p->overlay, "%s", err);
        return rc;
    }
    p->created = true;
    return 0;
}

static void report(const struct pair *pairs, size_t n,
                   const struct cli_common *common)
{
    size_t i;

    if (common->output == CLI_OUTPUT_JSON) {
        struct json j;
        json_init(&j, stdout, true);
        json_array_begin(&j, NULL);
        for (i = 0; i < n; i++) {
            struct qcow2_image *l;
            json_object_begin(&j, NULL);
            json_string(&j, "filename", pairs[i].overlay);
            json_string(&j, "backing-filename", pairs[i].backing_name);
            json_string(&j, "backing-filename-format", pairs[i].format);
            json_u64(&j, "virtual-size", pairs[i].size);
            json_array_begin(&j, "chain");
            json_string(&j, NULL, pairs[i].overlay);
            for (l = pairs[i].img; l; l = qcow2_backing(l))
                json_string(&j, NULL, qcow2_filename(l));
            json_array_end(&j);
            json_object_end(&j);
        }
        json_array_end(&j);
        json_end(&j);
    } else {
        for (i = 0; i < n; i++) {
            struct qcow2_image *l, *chain[QCOW2_DEFAULT_MAX_DEPTH + 1];
            size_t depth = 0, d;
            for (l = pairs[i].img; l && depth < QCOW2_DEFAULT_MAX_DEPTH;
                 l = qcow2_backing(l))
                chain[depth++] = l;
            printf("Created '%s' (backing file '%s', %s)\n", pairs[i].overlay,
                   pairs[i].backing_name, pairs[i].format);
            printf("  chain: ");
            for (d = depth; d-- > 0;)
                printf("%s <- ", qcow2_filename(chain[d]));
            printf("%s\n", pairs[i].overlay);
        }
    }
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        CLI_COMMON_LONGOPTS,
        {"backing-path", required_argument, NULL, 'p'},
        {NULL, 0, NULL, 0}};
    struct cli_common common = {0};
    enum backing_path_mode mode = BACKING_PATH_AUTO;
    struct pair *pairs;
    size_t n = 0, i, k;
    int opt, status = QCHAIN_EXIT_FAILURE;

    cli_init("qchain-snapshot", argv);
    while ((opt = getopt_long(argc, argv, CLI_COMMON_SHORTOPTS, longopts,
                              NULL)) != -1) {
        if (cli_common_option(opt, optarg, &common, usage))
            continue;
        if (opt != 'p')
            cli_usage_error("incorrect parameter");
        if (!strcmp(optarg, "auto"))
            mode = BACKING_PATH_AUTO;
        else if (!strcmp(optarg, "relative"))
            mode = BACKING_PATH_RELATIVE;
        else if (!strcmp(optarg, "absolute"))
            mode = BACKING_PATH_ABSOLUTE;
        else
            cli_usage_error("--backing-path must be auto, relative or "
                            "absolute");
    }
    if (common.force_share)
        cli_usage_error("-U does not apply: a snapshot of an image in use "
                        "would be meaningless");
    if (argc - optind < 1)
        cli_usage_error("missing ACTIVE and OVERLAY");
    pairs = calloc((size_t)argc, sizeof(*pairs));
    if (!pairs)
        return QCHAIN_EXIT_FAILURE;
    /* two arguments are ACTIVE OVERLAY unless they read as two pairs (a
     * file name may contain ':' itself) */
    if (argc - optind == 2 &&
        ((!strchr(argv[optind], ':') && !strchr(argv[optind + 1], ':')) ||
         access(argv[optind], F_OK) == 0)) {
        pairs[0].active = argv[optind];
        pairs[0].overlay = argv[optind + 1];
        n = 1;
    } else {
        for (i = (size_t)optind; i < (size_t)argc; i++) {
            char *colon = strrchr(argv[i], ':');
            if (!colon || colon == argv[i] || !colon[1])
                cli_usage_error("'%s' is not ACTIVE:OVERLAY", argv[i]);
            *colon = '\0';
            pairs[n].active = argv[i];
            pairs[n].overlay = colon + 1;
            n++;
        }
    }
    for (i = 0; i < n; i++)
        for (k = 0; k < i; k++)
            if (!strcmp(pairs[i].overlay, pairs[k].overlay))
                cli_usage_error("overlay '%s' named twice", pairs[i].overlay);

    /* every check before the first file is made */
    for (i = 0; i < n; i++)
        if (prepare(&pairs[i], mode, &common) < 0)
            goto out;

    for (i = 0; i < n; i++)
        warn_fork(&pairs[i]);
    for (i = 0; i < n; i++)
        if (!pairs[i].existed && make_overlay(&pairs[i]) < 0)
            goto out;
    /* each new chain must open: the overlay names its backing correctly */
    for (i = 0; i < n; i++) {
        struct qcow2_open_opts o = {.size = sizeof(o), .format = "qcow2",
                                    .warn = cli_warn_cb};
        struct qcow2_image *img = qcow2_new();
        const char *made = pairs[i].device || pairs[i].existed
                               ? pairs[i].overlay : pairs[i].tmp;
        if (!img || qcow2_open(img, made, &o) < 0) {
            cli_error_file(pairs[i].overlay, "the new overlay does not open: "
                           "%s", img ? qcow2_errmsg(img) : "out of memory");
            qcow2_close(img);
            goto out;
        }
        qcow2_close(img);
    }
    /* every overlay complete and durable before the first takes its name */
    for (i = 0; i < n; i++) {
        int rc;
        if (pairs[i].device || pairs[i].existed)
            continue;
        rc = qcow2_io_publish(pairs[i].tmp, pairs[i].overlay);
        if (rc < 0) {
            cli_error_file(pairs[i].overlay, "cannot name the new overlay: "
                           "%s", strerror(-rc));
            goto out;
        }
        pairs[i].published = true;
    }
    status = QCHAIN_EXIT_OK;

    report(pairs, n, &common);
out:
    for (i = 0; i < n; i++) {
        if (status != QCHAIN_EXIT_OK && pairs[i].created) {
            if (pairs[i].device)
                restore_device(&pairs[i]);
            else if (pairs[i].published)
                unlink(pairs[i].overlay);
            else
                unlink(pairs[i].tmp);
        }
        qcow2_close(pairs[i].img);
        free(pairs[i].backing_name);
        free(pairs[i].saved);
    }
    free(pairs);
    return status;
}
