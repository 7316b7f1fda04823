/*
 * qchain-create - create a new qcow2 or raw image, as qemu-img create does.
 *
 *   qchain-create [-f qcow2|raw] [-o OPTIONS] [-b BACKING [-F FMT]] FILE [SIZE]
 *
 * OPTIONS (comma separated, qemu-img's names): cluster_size, refcount_bits,
 * compat (0.10|1.1|v2|v3), compression_type (zlib|zstd), extended_l2
 * (on|off), lazy_refcounts (on|off).  SIZE takes K/M/G/T suffixes and
 * defaults to the backing file's size.  Unlike qemu-img, FILE must not
 * exist: qchain never overwrites an image file.  A block device (an LVM
 * volume) is the exception: the image is written over its start, as
 * qemu-img create does, when the device is large enough.  Invalid options
 * leave no file.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "json.h"

static void usage(void)
{
    printf("Usage: %s [OPTIONS] FILE [SIZE]\n"
           "Create a new image FILE (which must not exist).\n\n"
           "  -f, --format=FMT          qcow2 (default) or raw\n"
           "  -o, --options=OPTS        qcow2 options, comma separated:\n"
           "        cluster_size=SIZE      512 to 2M, a power of two (64k)\n"
           "        refcount_bits=N        1, 2, 4, 8, 16 (default), 32, 64\n"
           "        compat=0.10|1.1        image version (1.1)\n"
           "        compression_type=zlib|zstd\n"
           "        extended_l2=on|off     subclusters (clusters >= 16k)\n"
           "        lazy_refcounts=on|off\n"
           "  -b, --backing=BACKING     backing file, stored as given\n"
           "  -F, --backing-format=FMT  its format (qcow2 or raw; required)\n"
           "  --output=human|json       report format; --json\n"
           "  -h, --help                this help\n"
           "  -V, --version             version\n\n"
           "SIZE takes K, M, G, T suffixes; it defaults to BACKING's size.\n",
           cli_progname());
}

static bool parse_bool(const char *key, const char *v)
{
    if (!strcmp(v, "on") || !strcmp(v, "true"))
        return true;
    if (!strcmp(v, "off") || !strcmp(v, "false"))
        return false;
    cli_usage_error("option %s must be on or off, not '%s'", key, v);
}

static void parse_options(char *s, struct qcow2_create_opts *o)
{
    char *save = NULL, *tok;

    for (tok = strtok_r(s, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *v = strchr(tok, '=');
        uint64_t n;
        if (!v)
            cli_usage_error("option '%s' needs a value (key=value)", tok);
        *v++ = '\0';
        if (!strcmp(tok, "cluster_size")) {
            if (cli_parse_size(v, &n) < 0 || n > UINT32_MAX)
                cli_usage_error("invalid cluster_size '%s'", v);
            o->cluster_size = (uint32_t)n;
        } else if (!strcmp(tok, "refcount_bits")) {
            if (cli_parse_u64(v, &n) < 0 || n == 0 || n > 64)
                cli_usage_error("invalid refcount_bits '%s'", v);
            o->refcount_bits = (unsigned)n;
        } else if (!strcmp(tok, "compat")) {
            if (!strcmp(v, "0.10") || !strcmp(v, "v2"))
                o->version = 2;
            else if (!strcmp(v, "1.1") || !strcmp(v, "v3"))
                o->version = 3;
            else
                cli_usage_error("compat must be 0.10 or 1.1, not '%s'", v);
        } else if (!strcmp(tok, "compression_type")) {
            if (!strcmp(v, "zlib"))
                o->compression_type = QCOW2_COMPRESSION_ZLIB;
            else if (!strcmp(v, "zstd"))
                o->compression_type = QCOW2_COMPRESSION_ZSTD;
            else
                cli_usage_error("compression_type must be zlib or zstd, not "
                                "'%s'", v);
        } else if (!strcmp(tok, "extended_l2")) {
            o->extended_l2 = parse_bool(tok, v);
        } else if (!strcmp(tok, "lazy_refcounts")) {
            o->lazy_refcounts = parse_bool(tok, v);
        } else {
            cli_usage_error("invalid option '%s'", tok);
        }
    }
}

struct args {
    struct qcow2_create_opts o;
    const char *file, *fmt;
    bool have_size;
};

static struct cli_common common;

static void parse_args(int argc, char **argv, struct args *a)
{
    static const struct option longopts[] = {
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {"format", required_argument, NULL, 'f'},
        {"options", required_argument, NULL, 'o'},
        {"backing", required_argument, NULL, 'b'},
        {"backing-format", required_argument, NULL, 'F'},
        {"output", required_argument, NULL, CLI_OPT_OUTPUT},
        {"json", no_argument, NULL, CLI_OPT_JSON},
        {NULL, 0, NULL, 0}};
    struct qcow2_create_opts *o = &a->o;
    bool have_opts = false;
    int opt;

    o->size = sizeof(*o);
    o->format = QCOW2_FORMAT_QCOW2;
    a->fmt = "qcow2";
    while ((opt = getopt_long(argc, argv, ":hVf:o:b:F:", longopts, NULL)) !=
           -1) {
        switch (opt) {
        case 'f':
            a->fmt = optarg;
            break;
        case 'o':
            have_opts = true;
            parse_options(optarg, o);
            break;
        case 'b':
            o->backing_name = optarg;
            break;
        case 'F':
            if (strcmp(optarg, "qcow2") && strcmp(optarg, "raw"))
                cli_usage_error("backing format must be qcow2 or raw");
            o->backing_format = optarg;
            break;
        default:
            if (!cli_common_option(opt, optarg, &common, usage))
                cli_usage_error("incorrect parameter");
        }
    }
    if (strcmp(a->fmt, "qcow2") == 0)
        o->format = QCOW2_FORMAT_QCOW2;
    else if (strcmp(a->fmt, "raw") == 0)
        o->format = QCOW2_FORMAT_RAW;
    else
        cli_usage_error("format must be qcow2 or raw, not '%s'", a->fmt);
    if (o->format == QCOW2_FORMAT_RAW && have_opts)
        cli_usage_error("-o options apply to qcow2 images only");
    if (o->backing_format && !o->backing_name)
        cli_usage_error("-F needs -b");
    if (argc - optind < 1 || argc - optind > 2)
        cli_usage_error(argc - optind < 1 ? "missing FILE"
                                          : "too many arguments");
    a->file = argv[optind];
    a->have_size = argc - optind == 2;
    if (a->have_size &&
        cli_parse_size(argv[optind + 1], &o->virtual_size) < 0)
        cli_usage_error("invalid size '%s'", argv[optind + 1]);
    if (!a->have_size && !o->backing_name)
        cli_usage_error("missing SIZE (needed without a backing file)");
    if (a->have_size) {
        if (o->virtual_size > INT64_MAX - 511)
            cli_usage_error("size '%s' is too large", argv[optind + 1]);
        /* qemu-img create rounds up to whole sectors */
        o->virtual_size = (o->virtual_size + 511) & ~511ull;
    }
}

/* The backing file, resolved as QEMU will resolve it, must open; its size
 * is the default.  Prints and returns -1 when it does not open. */
static int check_backing(const char *file, bool have_size,
                         struct qcow2_create_opts *o, bool quiet)
{
    struct qcow2_open_opts bo = {.size = sizeof(bo),
                                 .flags = QCOW2_OPEN_NO_BACKING |
                                          QCOW2_OPEN_FORCE_SHARE,
                                 .format = o->backing_format,
                                 .warn = quiet ? NULL : cli_warn_cb};
    struct qcow2_image *b;
    char *path;
    int rc;

    if (qcow2_name_is_protocol(o->backing_name)) {
        if (!quiet)
            cli_error_file(file, "backing file '%s' names a protocol, "
                           "which qchain does not open", o->backing_name);
        return -1;
    }
    path = qcow2_backing_resolve(file, o->backing_name);
    b = qcow2_new();
    if (!path || !b) {
        free(path);
        qcow2_close(b);
        return -1;
    }
    rc = qcow2_open(b, path, &bo);
    if (rc < 0) {
        if (!quiet)
            cli_error_file(file, "cannot open backing file '%s': %s", path,
                           qcow2_errmsg(b));
        qcow2_close(b);
        free(path);
        return -1;
    }
    if (!have_size) {
        const struct qcow2_header *h = qcow2_header_get(b);
        o->virtual_size = h ? h->size : qcow2_virtual_size(b);
    }
    qcow2_close(b);
    free(path);
    return 0;
}

static void report(const struct args *a)
{
    const struct qcow2_create_opts *o = &a->o;
    const char *file = a->file, *fmt = a->fmt;

if (common.output == CLI_OUTPUT_JSON) {
    struct json j;
    json_init(&j, stdout, true);
    json_object_begin(&j, NULL);
    json_string(&j, "filename", file);
    json_string(&j, "format", fmt);
    json_u64(&j, "virtual-size", o->virtual_size);
    if (o->format == QCOW2_FORMAT_QCOW2) {
        json_u64(&j, "cluster-size",
                 o->cluster_size ? o->cluster_size : 65536);
        json_string(&j, "compat", o->version == 2 ? "0.10" : "1.1");
        json_u64(&j, "refcount-bits",
                 o->refcount_bits ? o->refcount_bits : 16);
        json_string(&j, "compression-type",
                    o->compression_type ? "zstd" : "zlib");
        json_bool(&j, "extended-l2", o->extended_l2);
        json_bool(&j, "lazy-refcounts", o->lazy_refcounts);
    }
    if (o->backing_name) {
        json_string(&j, "backing-filename", o->backing_name);
        json_string(&j, "backing-filename-format", o->backing_format);
    }
    json_object_end(&j);
    json_end(&j);
} else {
    char sz[32];
    printf("Created '%s': %s, %s (%" PRIu64 " bytes)%s%s%s%s\n", file,
           fmt, cli_size_str(o->virtual_size, sz, sizeof(sz)),
           o->virtual_size, o->backing_name ? ", backed by '" : "",
           o->backing_name ? o->backing_name : "",
           o->backing_name ? "' as " : "",
           o->backing_name ? o->backing_format : "");
}
}

int main(int argc, char **argv)
{
    struct args a = {0};
    char err[512];
    struct stat st;

    cli_init("qchain-create", argv);
    parse_args(argc, argv, &a);
    if (a.o.backing_name && !a.o.backing_format) {
        cli_error_file(a.file, "a backing file needs its format (-F qcow2 "
                       "or -F raw), as qemu-img requires");
        return QCHAIN_EXIT_FAILURE;
    }
    if (qcow2_create_check(&a.o, err, sizeof(err)) < 0) {
        cli_error_file(a.file, "%s", err);
        return QCHAIN_EXIT_FAILURE;
    }
    /* a block device (an LVM volume) is written over, as qemu-img create
     * does: the library refuses it when it is too small, writing nothing */
    if (stat(a.file, &st) == 0 && !S_ISBLK(st.st_mode)) {
        /* the very image this command makes, named by a run a crash
         * interrupted before it reported: made */
        if ((!a.o.backing_name ||
             check_backing(a.file, a.have_size, &a.o, true) == 0) &&
            cli_made_already(a.file, &a.o)) {
            report(&a);
            return QCHAIN_EXIT_OK;
        }
        cli_error_file(a.file, "already exists; qchain-create never "
                       "overwrites a file");
        return QCHAIN_EXIT_FAILURE;
    }
    if (a.o.backing_name &&
        check_backing(a.file, a.have_size, &a.o, false) < 0)
        return QCHAIN_EXIT_FAILURE;
    if (qcow2_create(a.file, &a.o, err, sizeof(err)) < 0) {
        cli_error_file(a.file, "%s", err);
        return QCHAIN_EXIT_FAILURE;
    }
    report(&a);
    return QCHAIN_EXIT_OK;
}
