/*
 * qchain-delta - what a commit would copy, how much the base grows, how
 * long it takes, and whether another live round would shrink the offline
 * window; from metadata alone, writing nothing.
 *
 *   qchain-delta [--top TOP] [--base BASE] [-U] [--rate RATE]
 *                [--growth-rate RATE | --sample SECONDS]
 *                [--downtime SECONDS] [--output=human|json] ACTIVE
 *
 * ACTIVE, TOP and BASE mean what they mean for qchain-commit, and the
 * figures come from the walk the commit makes (qcow2_commit_estimate), so
 * data-bytes and zero-bytes are what the commit then reports.
 *
 * The plan model (README): round i commits D(i-1) bytes live, in
 * D(i-1)/rate seconds, while the guest writes D(i) = growth x D(i-1)/rate
 * bytes into a new overlay; D(0) is today's data-bytes.  iterations is the
 * smallest k >= 0 with D(k)/rate <= downtime; when no k up to MAX_ROUNDS
 * reaches it the plan does not converge and describes D(MAX_ROUNDS).
 */
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chain.h"
#include "cli.h"
#include "fit.h"
#include "json.h"

#define MAX_ROUNDS 10

static struct cli_common common;

static void usage(void)
{
    printf("Usage: %s [OPTIONS] ACTIVE\n"
           "Measure what `qchain-commit` with the same TOP and BASE would "
           "copy, without\nwriting anything.\n\n"
           "  --top=TOP            first layer to commit (default: ACTIVE)\n"
           "  --base=BASE          image to commit into (default: TOP's "
           "backing file)\n"
           "  --rate=RATE          commit speed in bytes/s (K/M/G/T): "
           "estimate the time\n"
           "  --growth-rate=RATE   bytes/s the guest writes into a fresh "
           "overlay\n"
           "  --sample=SECONDS     measure the growth rate of ACTIVE over "
           "SECONDS\n"
           "  --downtime=SECONDS   offline window: plan live rounds (needs "
           "--rate and\n"
           "                       --growth-rate or --sample)\n"
           "  -U, --force-share    read images a running VM holds "
           "(approximate figures)\n"
           "  -f, --format=FMT     format of ACTIVE (qcow2 or raw)\n"
           "  --output=human|json  report format; --json\n"
           "  -h, --help           this help\n"
           "  -V, --version        version\n",
           cli_progname());
}

struct layer_stats {
    uint64_t data, zero, compressed;
    int64_t file_size;
    uint64_t skipped;
};

/* What one layer alone holds (qemu-img map of the file without its
 * backing chain): data, zero and compressed guest bytes. */
static int layer_stats(struct qcow2_image *img, bool tolerant,
                       struct layer_stats *out)
{
    uint64_t size = qcow2_virtual_size(img), pos = 0;
    struct qcow2_info info;
    struct qcow2_extent e;
    int rc;

    memset(out, 0, sizeof(*out));
    qcow2_get_info(img, &info);
    out->file_size = info.file_size;
    while (pos < size) {
        rc = qcow2_map(img, pos, size - pos, 0, &e);
        if (rc < 0) {
            /* a table caught mid-update: skip to the next cluster of the
             * L1 table's reach */
            uint64_t span = (uint64_t)info.cluster_size * (info.cluster_size /
                            (info.extended_l2 ? 16 : 8));
            if (!tolerant || rc == -ENOMEM || span == 0)
                return rc;
            e.length = (pos | (span - 1)) + 1 - pos;
            if (e.length > size - pos)
                e.length = size - pos;
            out->skipped += e.length;
            pos += e.length;
            continue;
        }
        if (e.flags & QCOW2_EXTENT_DATA)
            out->data += e.length;
        else if (e.flags & QCOW2_EXTENT_ZERO)
            out->zero += e.length;
        if (e.kind == QCOW2_KIND_COMPRESSED)
            out->compressed += e.length;
        pos += e.length;
    }
    return 0;
}

/* Data bytes ACTIVE itself holds now (for --sample). */
static int sample_data(const char *path, uint64_t *out)
{
    struct qcow2_image *img = qcow2_new();
    struct qcow2_open_opts o;
    struct layer_stats ls;
    int rc;

    if (!img)
        return -1;
    cli_open_opts(&common, &o, QCOW2_OPEN_NO_BACKING);
    if (common.force_share)
        o.flags |= QCOW2_OPEN_FORCE_SHARE;
    rc = qcow2_open(img, path, &o);
    if (rc == 0)
        rc = layer_stats(img, common.force_share, &ls);
    if (rc < 0) {
        cli_error_file(path, "%s", qcow2_errmsg(img));
        qcow2_close(img);
        return -1;
    }
    *out = ls.data;
    qcow2_close(img);
    return 0;
}

static int parse_seconds(const char *s, double *out)
{
    char *end;
    double v;

    if (!s || !*s)
        return -1;
    v = strtod(s, &end);
    if (*end || !(v >= 0) || !isfinite(v))
        return -1;
    *out = v;
    return 0;
}

struct plan {
    unsigned iterations;
    bool converges;
    double final_bytes, final_seconds;
};

static struct plan make_plan(double d0, double rate, double growth,
                             double downtime)
{
    struct plan p = {0};
    double d = d0;
    unsigned k;

    for (k = 0;; k++) {
        if (d / rate <= downtime) {
            p.converges = true;
            break;
        }
        if (k == MAX_ROUNDS)
            break;
        d = growth * d / rate;
    }
    p.iterations = k;
    p.final_bytes = d;
    p.final_seconds = d / rate;
    return p;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        CLI_COMMON_LONGOPTS,
        {"top", required_argument, NULL, 't'},
        {"base", required_argument, NULL, 'b'},
        {"rate", required_argument, NULL, 'r'},
        {"growth-rate", required_argument, NULL, 'g'},
        {"sample", required_argument, NULL, 's'},
        {"downtime", required_argument, NULL, 'd'},
        {NULL, 0, NULL, 0}};
    const char *top_arg = NULL, *base_arg = NULL, *active;
    bool have_rate = false, have_growth = false, have_sample = false;
    bool have_downtime = false;
    uint64_t rate = 0, growth = 0;
    double sample_secs = 0, downtime = 0, growth_bps = 0;
    struct qcow2_image *chain = NULL;
    struct qcow2_open_opts o;
    struct qcow2_commit_estimate est;
    struct cli_fit fit;
    struct layer_stats *ls = NULL;
    struct cli_chain c = {0};
    struct plan plan = {0};
    uint64_t skipped = 0;
    unsigned i, nl;
    int opt, rc, status = QCHAIN_EXIT_FAILURE;

    cli_init("qchain-delta", argv);
    while ((opt = getopt_long(argc, argv, CLI_COMMON_SHORTOPTS, longopts,
                              NULL)) != -1) {
        if (cli_common_option(opt, optarg, &common, usage))
            continue;
        switch (opt) {
        case 't': top_arg = optarg; break;
        case 'b': base_arg = optarg; break;
        case 'r':
            if (cli_parse_size(optarg, &rate) < 0 || rate == 0)
                cli_usage_error("invalid --rate '%s': bytes per second "
                                "above 0, with an optional K/M/G/T suffix",
                                optarg);
            have_rate = true;
            break;
        case 'g':
            if (cli_parse_size(optarg, &growth) < 0)
                cli_usage_error("invalid --growth-rate '%s': bytes per "
                                "second, with an optional K/M/G/T suffix",
                                optarg);
            have_growth = true;
            break;
        case 's':
            if (parse_seconds(optarg, &sample_secs) < 0 || sample_secs <= 0 ||
                sample_secs > 86400)
                cli_usage_error("invalid --sample '%s': seconds, above 0 "
                                "and at most 86400", optarg);
            have_sample = true;
            break;
        case 'd':
            if (parse_seconds(optarg, &downtime) < 0)
                cli_usage_error("invalid --downtime '%s': seconds, 0 or "
                                "more", optarg);
            have_downtime = true;
            break;
        default: cli_usage_error("incorrect parameter");
        }
    }
    if (optind != argc - 1)
        cli_usage_error(optind >= argc ? "missing ACTIVE"
                                       : "too many arguments");
    active = argv[optind];
    if (have_growth && have_sample)
        cli_usage_error("--growth-rate and --sample exclude each other");
    if (have_downtime && (!have_rate || !(have_growth || have_sample)))
        cli_usage_error("--downtime plans live rounds: it needs --rate and "
                        "--growth-rate or --sample");
    if ((have_growth || have_sample) && !have_downtime)
        cli_usage_error("--growth-rate and --sample need --downtime (and "
                        "--rate)");

    chain = qcow2_new();
    if (!chain)
        return QCHAIN_EXIT_FAILURE;
    cli_open_opts(&common, &o, 0);
    if (common.force_share)
        o.flags |= QCOW2_OPEN_FORCE_SHARE;
    if (qcow2_open(chain, active, &o) < 0) {
        cli_error_file(active, "%s", qcow2_errmsg(chain));
        goto out;
    }
    if (cli_chain_load(chain, &c) < 0 ||
        cli_chain_resolve(&c, active, top_arg, base_arg) < 0)
        goto out;

    nl = c.base - c.top;
    ls = calloc(nl, sizeof(*ls));
    if (!ls)
        goto out;
    for (i = 0; i < nl; i++) {
        struct cli_layer *y = &c.layers[c.top + i];
        if (layer_stats(y->img, common.force_share, &ls[i]) < 0) {
            cli_error_file(y->name, "%s", qcow2_errmsg(y->img));
            goto out;
        }
        skipped += ls[i].skipped;
    }
    rc = qcow2_commit_estimate(c.layers[c.top].img, nl,
                               common.force_share ? QCOW2_ESTIMATE_TOLERANT
                                                  : 0, &est);
    if (rc < 0) {
        cli_error_file(c.layers[c.top].name, "%s",
                       qcow2_errmsg(c.layers[c.top].img));
        goto out;
    }
    skipped += est.skipped_bytes;
    rc = cli_base_fit(c.layers[c.base].name, &est, &fit);
    if (rc < 0) {
        cli_error_file(c.layers[c.base].name, "cannot read the free space "
                       "of its file system: %s", strerror(-rc));
        goto out;
    }
    if (skipped)
        cli_warning("%" PRIu64 " guest bytes were skipped: their metadata "
                    "changed while it was read (the image is in use)",
                    skipped);

    if (have_sample) {
        uint64_t d1, d2;
        if (sample_data(active, &d1) < 0)
            goto out;
        {
            struct timespec w;
            w.tv_sec = (time_t)sample_secs;
            w.tv_nsec = (long)((sample_secs - (double)w.tv_sec) * 1e9);
            while (nanosleep(&w, &w) < 0)
                ;
        }
        if (sample_data(active, &d2) < 0)
            goto out;
        growth_bps = d2 > d1 ? (double)(d2 - d1) / sample_secs : 0;
    } else {
        growth_bps = (double)growth;
    }
    if (have_downtime)
        plan = make_plan((double)est.data_bytes, (double)rate, growth_bps,
                         downtime);

    if (common.output == CLI_OUTPUT_JSON) {
        struct json js;
        json_init(&js, stdout, true);
        json_object_begin(&js, NULL);
        json_string(&js, "active", active);
        json_string(&js, "top", c.layers[c.top].name);
        json_string(&js, "base", c.layers[c.base].name);
        json_string(&js, "base-format", c.layers[c.base].format);
        json_array_begin(&js, "layers");
        for (i = 0; i < nl; i++) {
            json_object_begin(&js, NULL);
            json_string(&js, "filename", c.layers[c.top + i].name);
            json_string(&js, "format", c.layers[c.top + i].format);
            json_i64(&js, "file-size", ls[i].file_size);
            json_u64(&js, "data-bytes", ls[i].data);
            json_u64(&js, "zero-bytes", ls[i].zero);
            json_u64(&js, "compressed-bytes", ls[i].compressed);
            json_object_end(&js);
        }
        json_array_end(&js);
        json_u64(&js, "data-bytes", est.data_bytes);
        json_u64(&js, "zero-bytes", est.zero_bytes);
        json_u64(&js, "compressed-bytes", est.compressed_bytes);
        json_i64(&js, "base-growth-bytes", est.base_growth_bytes);
        json_bool(&js, "base-grows", est.grows);
        json_u64(&js, "base-required-bytes", fit.required);
        json_bool(&js, "base-fits", fit.fits);
        if (have_rate) {
            json_u64(&js, "rate-bytes-per-second", rate);
            json_double(&js, "estimated-seconds",
                        (double)est.data_bytes / (double)rate);
        }
        if (have_downtime) {
            json_object_begin(&js, "plan");
            json_u64(&js, "iterations", plan.iterations);
            json_bool(&js, "converges", plan.converges);
            json_u64(&js, "final-data-bytes",
                     (uint64_t)llround(plan.final_bytes));
            json_double(&js, "final-seconds", plan.final_seconds);
            json_u64(&js, "growth-bytes-per-second",
                     (uint64_t)llround(growth_bps));
            json_double(&js, "downtime-seconds", downtime);
            json_object_end(&js);
        }
        json_bool(&js, "approximate", common.force_share);
        json_object_end(&js);
        json_end(&js);
    } else {
        char a[32], b[32], g[32], f[32];
        printf("Commit of '%s' into '%s' (%s)%s:\n", c.layers[c.top].name,
               c.layers[c.base].name, c.layers[c.base].format,
               common.force_share ? " (approximate: images may be in use)"
                                  : "");
        for (i = 0; i < nl; i++) {
            printf("  layer %s (%s, file %s): %s data, %s zero",
                   c.layers[c.top + i].name, c.layers[c.top + i].format,
                   cli_size_str((uint64_t)(ls[i].file_size > 0
                                               ? ls[i].file_size : 0),
                                f, sizeof(f)),
                   cli_size_str(ls[i].data, a, sizeof(a)),
                   cli_size_str(ls[i].zero, b, sizeof(b)));
            if (ls[i].compressed)
                printf(", %s compressed",
                       cli_size_str(ls[i].compressed, g, sizeof(g)));
            printf("\n");
        }
        printf("Copies %s of data (%" PRIu64 " bytes), zeroes %s "
               "(%" PRIu64 " bytes).\n",
               cli_size_str(est.data_bytes, a, sizeof(a)), est.data_bytes,
               cli_size_str(est.zero_bytes, b, sizeof(b)), est.zero_bytes);
        if (fit.device && !strcmp(c.layers[c.base].format, "raw"))
            ; /* a device's storage is all there: the sentence below */
        else if (est.base_growth_bytes >= 0)
            printf("The base grows by %s (%" PRId64 " bytes)%s.\n",
                   cli_size_str((uint64_t)est.base_growth_bytes, g,
                                sizeof(g)),
                   est.base_growth_bytes,
                   est.grows ? ", and its virtual size to the top's" : "");
        else
            printf("The base shrinks by %s (%" PRId64 " bytes).\n",
                   cli_size_str((uint64_t)-est.base_growth_bytes, g,
                                sizeof(g)),
                   est.base_growth_bytes);
        if (fit.device)
            printf("The base is a device of %s; the commit needs %s "
                   "(%" PRIu64 " bytes): %s.\n",
                   cli_size_str(fit.capacity, a, sizeof(a)),
                   cli_size_str(fit.required, b, sizeof(b)), fit.required,
                   fit.fits ? "it fits"
                            : "it does not fit, extend the volume first");
        else if (fit.growth > 0)
            printf("The base's file system has %s free: %s.\n",
                   cli_size_str(fit.free, a, sizeof(a)),
                   fit.fits ? "the growth fits"
                            : "the growth does not fit, make room first");
        if (have_rate)
            printf("At %s/s the commit takes about %.1f s.\n",
                   cli_size_str(rate, a, sizeof(a)),
                   (double)est.data_bytes / (double)rate);
        if (have_downtime) {
            printf("Guest growth %s/s, downtime %.1f s: ",
                   cli_size_str((uint64_t)growth_bps, a, sizeof(a)),
                   downtime);
            if (plan.converges && plan.iterations == 0)
                printf("commit offline now: %.1f s.\n", plan.final_seconds);
            else if (plan.converges)
                printf("%u live round%s, then an offline commit of %s in "
                       "%.1f s.\n", plan.iterations,
                       plan.iterations > 1 ? "s" : "",
                       cli_size_str((uint64_t)llround(plan.final_bytes), b,
                                    sizeof(b)), plan.final_seconds);
            else
                printf("live rounds do not converge (after %u rounds the "
                       "offline commit still takes %.1f s).\n",
                       plan.iterations, plan.final_seconds);
        }
    }
    status = QCHAIN_EXIT_OK;
out:
    free(ls);
    cli_chain_free(&c);
    qcow2_close(chain);
    return status;
}
