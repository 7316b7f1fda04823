/*
 * qchain-check - account for every host cluster of a qcow2 image, as
 * `qemu-img check` does, with the same verdict (exit 0 clean, 1 could not
 * check, 2 corruptions, 3 only leaks) and the same JSON keys in the same
 * order (QEMU 7.2 prints its QDict in hash order; the counters appear only
 * when non-zero).  Beyond qemu-img: "findings", each problem at its host
 * offset, and "leaked-ranges", the host ranges nothing references.
 *
 * -r leaks / -r all repair (qcow2_check); the image is then opened for
 * writing, with QEMU's write lock.  Without -r nothing is written.
 *
 * An unfinished qchain-commit job into the image or an image of its chain
 * gets a warning on stderr (the check goes on: leaked clusters of the base
 * are what an interrupted commit leaves, and its re-run reclaims them).
 * A lock refusal names the image in use and the process holding it.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chain.h"
#include "cli.h"
#include "holders.h"
#include "json.h"
#include "pending.h"

#define EXIT_CHECK_ERRORS 1
#define EXIT_CORRUPTIONS 2
#define EXIT_LEAKS 3
#define EXIT_NO_CHECKS 63
#define MAX_FINDINGS 100000 /* kept for the output; the rest are counted */

static void usage(void)
{
    printf("Usage: %s [OPTIONS] IMAGE\n"
           "Check the consistency of a qcow2 image: account for every host "
           "cluster.\n\n"
           "  -r, --repair=leaks|all  free leaked clusters; with 'all' also "
           "fix refcounts,\n"
           "                       COPIED flags and references past the end "
           "of the file\n"
           "  --output=human|json  output format (default human); --json\n"
           "  -f, --format=FMT     format of IMAGE (qcow2)\n"
           "  -U, --force-share    check an image another process holds "
           "(no locks)\n"
           "  -h, --help           this help\n"
           "  -V, --version        version\n\n"
           "Exit status: 0 clean, 1 the check could not complete, 2 "
           "corruptions,\n3 leaked clusters only, 63 not a qcow2 image (as qemu-img "
           "check).\n",
           cli_progname());
}

struct finding {
    const char *kind; /* static strings of the library */
    enum qcow2_check_severity severity;
    uint64_t offset, length;
    bool recheck;
    char *message;
};

struct findings {
    struct finding *v;
    size_t n, cap;
    uint64_t omitted;
    bool human;
};

static const char *severity_name(enum qcow2_check_severity s)
{
    switch (s) {
    case QCOW2_CHECK_CORRUPTION:
        return "corruption";
    case QCOW2_CHECK_LEAK:
        return "leak";
    case QCOW2_CHECK_ERROR:
        return "error";
    case QCOW2_CHECK_REPAIRED:
        return "repaired";
    }
    return "unknown";
}

static void on_finding(void *ctx, const struct qcow2_check_finding *f)
{
    struct findings *fs = ctx;
    struct finding *e;

    if (fs->human && !f->recheck)
        fprintf(stderr, "%s: %s: %s\n", cli_progname(),
                severity_name(f->severity), f->message);
    if (fs->n == MAX_FINDINGS) {
        fs->omitted++;
        return;
    }
    if (fs->n == fs->cap) {
        size_t cap = fs->cap ? fs->cap * 2 : 64;
        struct finding *v = realloc(fs->v, cap * sizeof(*v));
        if (!v) {
            fs->omitted++;
            return;
        }
        fs->v = v;
        fs->cap = cap;
    }
    e = &fs->v[fs->n];
    e->message = strdup(f->message);
    if (!e->message) {
        fs->omitted++;
        return;
    }
    e->kind = f->kind;
    e->severity = f->severity;
    e->offset = f->offset;
    e->length = f->length;
    e->recheck = f->recheck;
    fs->n++;
}

/* The counters as qemu-img prints them: QDict hash order, non-zero ones
 * only (check-errors, filename and format always). */
static void dump_json(const char *file, const struct qcow2_check_result *r,
                      const struct findings *fs)
{
    struct json j;
    size_t i;

    json_init(&j, stdout, true);
    json_object_begin(&j, NULL);
    if (r->image_end_offset)
        json_u64(&j, "image-end-offset", r->image_end_offset);
    if (r->compressed_clusters)
        json_u64(&j, "compressed-clusters", r->compressed_clusters);
    if (r->total_clusters)
        json_u64(&j, "total-clusters", r->total_clusters);
    if (r->corruptions)
        json_u64(&j, "corruptions", r->corruptions);
    if (r->corruptions_fixed)
        json_u64(&j, "corruptions-fixed", r->corruptions_fixed);
    json_u64(&j, "check-errors", r->check_errors);
    if (r->leaks)
        json_u64(&j, "leaks", r->leaks);
    if (r->leaks_fixed)
        json_u64(&j, "leaks-fixed", r->leaks_fixed);
    if (r->allocated_clusters)
        json_u64(&j, "allocated-clusters", r->allocated_clusters);
    json_string(&j, "filename", file);
    json_string(&j, "format", "qcow2");
    if (r->fragmented_clusters)
        json_u64(&j, "fragmented-clusters", r->fragmented_clusters);

    /* what the image holds: the first check's findings and the repairs;
     * leaked ranges of the final state */
    json_array_begin(&j, "findings");
    for (i = 0; i < fs->n; i++) {
        const struct finding *f = &fs->v[i];
        if (f->recheck && f->severity != QCOW2_CHECK_REPAIRED)
            continue;
        json_object_begin(&j, NULL);
        json_string(&j, "kind", f->kind);
        json_string(&j, "severity", severity_name(f->severity));
        json_u64(&j, "offset", f->offset);
        if (f->length)
            json_u64(&j, "length", f->length);
        json_string(&j, "message", f->message);
        json_object_end(&j);
    }
    json_array_end(&j);
    if (fs->omitted)
        json_u64(&j, "findings-omitted", fs->omitted);
    json_array_begin(&j, "leaked-ranges");
    for (i = 0; i < fs->n; i++) {
        const struct finding *f = &fs->v[i];
        if (strcmp(f->kind, "leaked-range") != 0 ||
            f->recheck != r->rechecked)
            continue;
        json_object_begin(&j, NULL);
        json_u64(&j, "offset", f->offset);
        json_u64(&j, "length", f->length);
        json_object_end(&j);
    }
    json_array_end(&j);
    json_object_end(&j);
    json_end(&j);
}

static void dump_human(const struct qcow2_check_result *r)
{
    if (r->rechecked)
        printf("The following inconsistencies were found and repaired:\n\n"
               "    %" PRIu64 " leaked clusters\n"
               "    %" PRIu64 " corruptions\n\n"
               "Double checking the fixed image now...\n",
               r->leaks_fixed, r->corruptions_fixed);
    if (!r->corruptions && !r->leaks && !r->check_errors) {
        printf("No errors were found on the image.\n");
    } else {
        if (r->corruptions)
            printf("\n%" PRIu64 " errors were found on the image.\n"
                   "Data may be corrupted, or further writes to the image "
                   "may corrupt it.\n", r->corruptions);
        if (r->leaks)
            printf("\n%" PRIu64 " leaked clusters were found on the image.\n"
                   "This means waste of disk space, but no harm to data.\n",
                   r->leaks);
        if (r->check_errors)
            printf("\n%" PRIu64 " internal errors have occurred during the "
                   "check.\n", r->check_errors);
    }
    if (r->total_clusters && r->allocated_clusters)
        printf("%" PRIu64 "/%" PRIu64 " = %0.2f%% allocated, %0.2f%% "
               "fragmented, %0.2f%% compressed clusters\n",
               r->allocated_clusters, r->total_clusters,
               (double)r->allocated_clusters * 100.0 /
                   (double)r->total_clusters,
               (double)r->fragmented_clusters * 100.0 /
                   (double)r->allocated_clusters,
               (double)r->compressed_clusters * 100.0 /
                   (double)r->allocated_clusters);
    if (r->image_end_offset)
        printf("Image end offset: %" PRIu64 "\n", r->image_end_offset);
}

/* Open `file` with its chain (for repairs `fix`, read-write).  NULL on
 * failure (said). */
static struct qcow2_image *open_image(const struct cli_common *common,
                                      const char *file, unsigned fix)
{
    struct qcow2_open_opts opts;
    struct qcow2_image *img;
    char *msg;
    int rc;

    /* the check reads this image only: its backing chain is opened as
     * qemu-img check opens it, but a missing or unusable backing file is
     * a warning, and the image is checked by itself (as qemu-img checks
     * it opened with "backing": null) */
    cli_open_opts(common, &opts,
                  fix ? QCOW2_OPEN_RDWR | QCOW2_OPEN_CHECK : 0);
    rc = cli_open_alone_if_needed(common, file, opts.flags & ~(unsigned)
                                  QCOW2_OPEN_FORCE_SHARE, &img);
    if (!img) {
        cli_error("out of memory");
        return NULL;
    }
    if (rc == 0)
        return img;
    /* the handle goes first: its own locks would be in the way of the
     * search for the one refused */
    msg = strdup(qcow2_errmsg(img));
    qcow2_close(img);
    if (rc == -EBUSY)
        cli_busy_error(file, common->format, opts.flags,
                       msg ? msg : qcow2_strerror(rc),
                       fix ? "stop the VM first: a repair needs the image "
                             "to itself"
                           : "stop the VM, or use -U for read-only figures");
    else
        cli_error_file(file, "%s", msg ? msg : qcow2_strerror(rc));
    free(msg);
    return NULL;
}

/* A warning for each unfinished commit job into an image of the chain. */
static void warn_pending(struct qcow2_image *img)
{
    struct cli_chain c = {0};
    struct cli_pending *p = NULL;
    int n;

    if (cli_chain_load(img, &c) == 0 &&
        (n = cli_pending_find(&c, NULL, &p)) > 0)
        cli_pending_warn(&c, p, (unsigned)n);
    free(p);
    cli_chain_free(&c);
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        CLI_COMMON_LONGOPTS,
        {"repair", required_argument, NULL, 'r'},
        {NULL, 0, NULL, 0}};
    struct cli_common common = {0};
    struct qcow2_check_opts copts;
    struct qcow2_check_result res;
    struct findings fs = {0};
    struct qcow2_image *img;
    unsigned fix = 0;
    const char *file;
    int opt, rc, status;
    size_t i;

    cli_init("qchain-check", argv);
    while ((opt = getopt_long(argc, argv, CLI_COMMON_SHORTOPTS "r:",
                              longopts, NULL)) != -1) {
        if (cli_common_option(opt, optarg, &common, usage))
            continue;
        switch (opt) {
        case 'r':
            if (strcmp(optarg, "leaks") == 0)
                fix = QCOW2_CHECK_FIX_LEAKS;
            else if (strcmp(optarg, "all") == 0)
                fix = QCOW2_CHECK_FIX_ALL;
            else
                cli_usage_error("invalid -r '%s': expected 'leaks' or 'all'",
                                optarg);
            break;
        default:
            cli_bad_option(opt);
        }
    }
    if (optind != argc - 1)
        cli_usage_error(optind >= argc ? "missing IMAGE"
                                       : "too many arguments");
    if (fix && common.force_share)
        cli_usage_error("-U cannot be used with -r: a repair takes the "
                        "image's write lock");
    file = argv[optind];

    img = open_image(&common, file, fix);
    if (!img)
        return EXIT_CHECK_ERRORS;
    warn_pending(img);
    memset(&copts, 0, sizeof(copts));
    copts.size = sizeof(copts);
    copts.flags = fix;
    copts.finding = on_finding;
    copts.ctx = &fs;
    fs.human = common.output == CLI_OUTPUT_HUMAN;
    rc = qcow2_check(img, &copts, &res);
    if (rc == -ENOTSUP) {
        /* a raw image: qemu-img check's code for "no checks" */
        cli_error_file(file, "%s", qcow2_errmsg(img));
        qcow2_close(img);
        status = EXIT_NO_CHECKS;
        goto out;
    }
    if (rc < 0) {
        cli_error_file(file, "%s", qcow2_errmsg(img));
        qcow2_close(img);
        status = EXIT_CHECK_ERRORS;
        goto out;
    }
    rc = qcow2_close(img);
    if (rc < 0) {
        cli_error_file(file, "cannot write the repairs: %s",
                       qcow2_strerror(rc));
        status = EXIT_CHECK_ERRORS;
        goto out;
    }
    if (common.output == CLI_OUTPUT_JSON)
        dump_json(file, &res, &fs);
    else
        dump_human(&res);
    if (res.check_errors) {
        cli_error_file(file, "check failed: %" PRIu64 " internal errors",
                       res.check_errors);
        status = EXIT_CHECK_ERRORS;
    } else if (res.corruptions) {
        status = EXIT_CORRUPTIONS;
    } else if (res.leaks) {
        status = EXIT_LEAKS;
    } else {
        status = 0;
    }
    if (fflush(stdout) != 0 || ferror(stdout)) {
        cli_error("error writing the output");
        status = EXIT_CHECK_ERRORS;
    }
out:
    for (i = 0; i < fs.n; i++)
        free(fs.v[i].message);
    free(fs.v);
    return status;
}
