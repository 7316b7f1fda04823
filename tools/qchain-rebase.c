/*
 * qchain-rebase - put an image on another backing file, or on none, with
 * the semantics of `qemu-img rebase`:
 *
 *   safe (default)  every range IMAGE does not allocate itself where the
 *                   view through its old backing chain differs from the
 *                   view through the new one is written into IMAGE first
 *                   (qcow2_rebase), so its guest view does not change;
 *                   then the header names the new file
 *   -u (unsafe)     only the header changes (the backing file was moved or
 *                   renamed; its content is the same)
 *   -b ""           no backing file; in safe mode everything IMAGE read
 *                   through the old chain is copied into it first
 *
 * BACKING is stored as given; a relative name is opened relative to
 * IMAGE's directory, as QEMU resolves it.  -F is needed with a backing
 * file, as qemu-img needs it since 6.1.  IMAGE is opened for writing with
 * QEMU's locks (an image a VM uses is refused, naming the VM); the old and
 * the new chain are read with readers' locks.  An unfinished qchain-commit
 * into a layer of the chain is refused (finish it first).
 *
 * Crash safety and resuming: the library writes data before the metadata
 * naming it, flushes, and switches the header last, in sector writes that
 * leave the old or the new name whole; a run stopped anywhere (Ctrl-C, a
 * crash, a power loss) leaves IMAGE with the same guest view, and the same
 * command run again finishes the job (what was copied is IMAGE's own now,
 * and not looked at again).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "chain.h"
#include "cli.h"
#include "holders.h"
#include "json.h"
#include "pending.h"

static struct cli_common common;
static bool show_progress, unsafe;
static const char *backing_name, *backing_format;
static struct timespec t0;
static volatile sig_atomic_t stop_signal;

static void usage(void)
{
    printf("Usage: %s [OPTIONS] -b BACKING IMAGE\n"
           "Put IMAGE on another backing file (or on none, with -b \"\") "
           "without changing\nwhat its guest reads (safe mode), or change "
           "only the name it stores (-u).\n\n"
           "  -b, --backing=BACKING    the new backing file, stored as given "
           "(relative:\n"
           "                           to IMAGE's directory); \"\" for none\n"
           "  -F, --backing-format=FMT its format (qcow2 or raw); required "
           "with a backing file\n"
           "  -u, --unsafe             change only the name and format in "
           "the header\n"
           "  -f, --format=FMT         format of IMAGE (qcow2)\n"
           "  -p, --progress           show a progress bar on stderr\n"
           "  --output=human|json      output format (default human); "
           "--json\n"
           "  -h, --help               this help\n"
           "  -V, --version            version\n\n"
           "Safe mode reads IMAGE's old chain and the new one where IMAGE "
           "does not hold\nthe data itself, and copies into IMAGE what "
           "differs. Interrupted, the image\nreads as before; run the same "
           "command again to finish.\n"
           "Exit status: 0 done, 1 failed (nothing changed, or IMAGE reads "
           "as before),\n2 bad usage, 130/143 interrupted by SIGINT/SIGTERM "
           "(IMAGE reads as before).\n",
           cli_progname());
}

static void on_stop_signal(int sig)
{
    stop_signal = sig;
}

static int cancel_cb(void *ctx)
{
    (void)ctx;
    return stop_signal != 0;
}

static int progress_cb(void *ctx, uint64_t done, uint64_t total)
{
    static struct timespec last;

    (void)ctx;
    if (show_progress)
        cli_progress(&t0, &last, done, total);
    return 0;
}

/* Open IMAGE for writing: over its old chain (safe mode) or alone (-u).
 * Prints and returns NULL on failure. */
static struct qcow2_image *open_image(const char *file)
{
    struct qcow2_open_opts opts;
    struct qcow2_image *img = qcow2_new();
    unsigned flags = QCOW2_OPEN_RDWR | (unsafe ? QCOW2_OPEN_NO_BACKING : 0);
    char *msg;
    int rc;

    if (!img) {
        cli_error("out of memory");
        return NULL;
    }
    cli_open_opts(&common, &opts, flags);
    rc = qcow2_open(img, file, &opts);
    if (rc == 0)
        return img;
    /* our own locks would be in the way of the search for the holder */
    msg = strdup(qcow2_errmsg(img));
    qcow2_close(img);
    if (rc == -EBUSY)
        cli_busy_error(file, common.format, flags,
                       msg ? msg : qcow2_strerror(rc),
                       "stop the VM first: a rebase writes the image");
    else if (!unsafe && msg && strstr(msg, "backing"))
        cli_error_file(file, "%s (safe mode reads the old backing chain; "
                       "-u changes only the name)", msg);
    else
        cli_error_file(file, "%s", msg ? msg : qcow2_strerror(rc));
    free(msg);
    return NULL;
}

/* Refuse while a qchain-commit into a layer of IMAGE's chain is
 * unfinished: its resumption expects the chain as it was. */
static int refuse_pending(struct qcow2_image *img)
{
    struct cli_chain c = {0};
    struct cli_pending *p = NULL;
    char what[2 * 4096 + 256];
    int n, i;

    if (cli_chain_load(img, &c) < 0)
        return -1;
    n = cli_pending_find(&c, NULL, &p);
    for (i = 0; i < n; i++) {
        cli_pending_str(&p[i], what, sizeof(what));
        cli_error_file(qcow2_filename(img), "an interrupted commit is not "
                       "finished: %s; rebase afterwards", what);
    }
    free(p);
    cli_chain_free(&c);
    if (n < 0)
        cli_error("out of memory");
    return n != 0 ? -1 : 0;
}

/* Is IMAGE a file of the chain at `path`?  Looked at without locks (ours
 * on IMAGE would refuse the real open before the loop could be named). */
static bool makes_loop(struct qcow2_image *img, const char *path)
{
    struct qcow2_open_opts opts;
    struct qcow2_image *b = qcow2_new(), *l;
    uint64_t d, i, dl, il;
    bool loop = false;

    if (!b || qcow2_identity(img, &d, &i) < 0) {
        qcow2_close(b);
        return false;
    }
    cli_open_opts(&common, &opts, QCOW2_OPEN_FORCE_SHARE);
    opts.format = backing_format;
    if (qcow2_open(b, path, &opts) == 0)
        for (l = b; l && !loop; l = qcow2_backing(l))
            loop = qcow2_identity(l, &dl, &il) == 0 && dl == d && il == i;
    qcow2_close(b);
    return loop;
}

/* Open the new backing chain read-only (safe mode).  Prints and returns
 * NULL on failure. */
static struct qcow2_image *open_backing(struct qcow2_image *img,
                                        const char *image)
{
    struct qcow2_open_opts opts;
    struct qcow2_image *b;
    char *path, *msg;
    int rc;

    if (qcow2_name_is_protocol(backing_name)) {
        cli_error("'%s' is not a file name (QEMU reads it as a protocol): "
                  "safe mode cannot open it; -u stores it as it is",
                  backing_name);
        return NULL;
    }
    path = qcow2_backing_resolve(image, backing_name);
    b = qcow2_new();
    if (!path || !b) {
        free(path);
        qcow2_close(b);
        cli_error("out of memory");
        return NULL;
    }
    if (makes_loop(img, path)) {
        cli_error_file(image, "the new backing chain ('%s') contains the "
                       "image itself", path);
        free(path);
        qcow2_close(b);
        return NULL;
    }
    cli_open_opts(&common, &opts, 0);
    opts.format = backing_format;
    rc = qcow2_open(b, path, &opts);
    if (rc == 0) {
        free(path);
        return b;
    }
    msg = strdup(qcow2_errmsg(b));
    qcow2_close(b);
    if (rc == -EBUSY)
        cli_busy_error(path, backing_format, 0,
                       msg ? msg : qcow2_strerror(rc),
                       "a running VM writes the new backing file: stop it "
                       "first");
    else
        cli_error("cannot open the new backing file '%s': %s", path,
                  msg ? msg : qcow2_strerror(rc));
    free(msg);
    free(path);
    return NULL;
}

static void report(const char *file, const struct qcow2_info *before,
                   const struct qcow2_rebase_stats *st)
{
    const char *nb = *backing_name ? backing_name : NULL;
    char a[32], b[32], c[32];
    struct json j;

    if (common.output == CLI_OUTPUT_HUMAN) {
        if (nb)
            printf("'%s' now has the backing file '%s' (%s)", file, nb,
                   backing_format);
        else
            printf("'%s' now has no backing file", file);
        if (unsafe) {
            printf(" (-u: its name only; nothing was copied)\n");
            return;
        }
        printf(": %s written (%s of data, %s as zeros, %" PRIu64
               " ranges); %s compared\n",
               cli_size_str(st->data_bytes + st->zero_bytes, a, sizeof(a)),
               cli_size_str(st->data_bytes, b, sizeof(b)),
               cli_size_str(st->zero_bytes, c, sizeof(c)), st->ranges,
               cli_size_str(st->compared_bytes, a, sizeof(a)));
        return;
    }
    json_init(&j, stdout, true);
    json_object_begin(&j, NULL);
    json_string(&j, "filename", file);
    json_string(&j, "mode", unsafe ? "unsafe" : "safe");
    if (before->backing_name)
        json_string(&j, "old-backing-filename", before->backing_name);
    else
        json_null(&j, "old-backing-filename");
    if (nb) {
        json_string(&j, "backing-filename", nb);
        json_string(&j, "backing-filename-format", backing_format);
    } else {
        json_null(&j, "backing-filename");
        json_null(&j, "backing-filename-format");
    }
    if (!unsafe) {
        json_u64(&j, "data-bytes", st->data_bytes);
        json_u64(&j, "zero-bytes", st->zero_bytes);
        json_u64(&j, "ranges", st->ranges);
        json_u64(&j, "compared-bytes", st->compared_bytes);
        json_u64(&j, "skipped-bytes", st->skipped_bytes);
        json_u64(&j, "allocated-bytes", st->allocated_bytes);
    }
    json_u64(&j, "virtual-size", before->virtual_size);
    json_object_end(&j);
    json_end(&j);
}

/* What IMAGE is before: the old backing name copied (the handle's own
 * changes with the header).  Returns 0, or -1 after printing. */
static int describe_before(struct qcow2_image *img, struct qcow2_info *info)
{
    if (qcow2_info_get(img, info) < 0) {
        cli_error("cannot describe the image");
        return -1;
    }
    if (info->backing_name &&
        !(info->backing_name = strdup(info->backing_name))) {
        cli_error("out of memory");
        return -1;
    }
    return 0;
}

/* -u: warn when the new name does not name an existing file (QEMU will not
 * open the image until it does). */
static void warn_missing(const char *file)
{
    char *path;

    if (!*backing_name || qcow2_name_is_protocol(backing_name))
        return;
    path = qcow2_backing_resolve(file, backing_name);
    if (path && access(path, F_OK) != 0)
        cli_warning("'%s' does not exist (yet): '%s' will not open until it "
                    "does", path, file);
    free(path);
}

/* The rebase itself; returns the exit status. */
static int rebase(const char *file, struct qcow2_image *img)
{
    struct qcow2_rebase_opts ro = {.size = sizeof(ro),
                                   .progress = progress_cb,
                                   .cancel = cancel_cb};
    struct qcow2_rebase_stats st = {0};
    struct qcow2_image *nb = NULL;
    struct qcow2_info before;
    const char *name = *backing_name ? backing_name : NULL;
    char *old;
    int rc;

    if (describe_before(img, &before) < 0)
        return QCHAIN_EXIT_FAILURE;
    old = (char *)before.backing_name;
    rc = qcow2_set_backing_check(img, name, backing_format);
    if (rc < 0) {
        cli_error_file(file, "%s", qcow2_errmsg(img));
        free(old);
        return QCHAIN_EXIT_FAILURE;
    }
    if (unsafe) {
        warn_missing(file);
        rc = qcow2_set_backing(img, name, backing_format);
    } else if (refuse_pending(img) < 0 ||
               (name && !(nb = open_backing(img, file)))) {
        free(old);
        return QCHAIN_EXIT_FAILURE;
    } else {
        rc = qcow2_rebase(img, nb, name, backing_format, &ro, &st);
        qcow2_close(nb);
    }
    if (rc == -ECANCELED && stop_signal) {
        cli_error_file(file, "interrupted; the image reads as before: run "
                       "the same command again to finish");
        rc = 128 + stop_signal;
    } else if (rc < 0) {
        cli_error_file(file, "%s", qcow2_errmsg(img));
        rc = QCHAIN_EXIT_FAILURE;
    } else {
        report(file, &before, &st);
    }
    free(old);
    return rc;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        CLI_COMMON_LONGOPTS,
        {"backing", required_argument, NULL, 'b'},
        {"backing-format", required_argument, NULL, 'F'},
        {"unsafe", no_argument, NULL, 'u'},
        {"progress", no_argument, NULL, 'p'},
        {NULL, 0, NULL, 0}};
    struct sigaction sa;
    struct qcow2_image *img;
    int opt, rc;

    cli_init("qchain-rebase", argv);
    while ((opt = getopt_long(argc, argv, CLI_COMMON_SHORTOPTS "b:F:up",
                              longopts, NULL)) != -1) {
        if (cli_common_option(opt, optarg, &common, usage))
            continue;
        switch (opt) {
        case 'b': backing_name = optarg; break;
        case 'F': backing_format = optarg; break;
        case 'u': unsafe = true; break;
        case 'p': show_progress = true; break;
        default: cli_bad_option(opt);
        }
    }
    if (argc - optind != 1)
        cli_usage_error(argc == optind ? "expecting an image file name"
                                       : "too many arguments");
    if (!backing_name)
        cli_usage_error("the new backing file must be given (-b BACKING, or "
                        "-b \"\" for none)");
    if (common.force_share)
        cli_usage_error("-U cannot be used: a rebase writes the image");
    if (*backing_name && !backing_format)
        cli_usage_error("the backing format must be given (-F qcow2 or -F "
                        "raw), as qemu-img requires");
    if (backing_format && strcmp(backing_format, "qcow2") &&
        strcmp(backing_format, "raw"))
        cli_usage_error("unknown backing format '%s' (qcow2 or raw)",
                        backing_format);
    if (!*backing_name)
        backing_format = NULL;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    img = open_image(argv[optind]);
    if (!img)
        return QCHAIN_EXIT_FAILURE;
    rc = rebase(argv[optind], img);
    if (qcow2_close(img) < 0 && rc == 0) {
        cli_error_file(argv[optind], "cannot flush the image at close");
        rc = QCHAIN_EXIT_FAILURE;
    }
    if (fflush(stdout) != 0 || ferror(stdout)) {
        cli_error("error writing the output");
        rc = rc ? rc : QCHAIN_EXIT_FAILURE;
    }
    return rc;
}
