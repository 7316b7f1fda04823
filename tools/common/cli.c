/*
 * cli.c - messages, exit codes and option helpers shared by the commands.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"

static const char *progname = "qchain";

static char **args;

void cli_init(const char *name, char **argv)
{
    progname = name;
    args = argv;
    opterr = 0; /* getopt's own messages lack our prefix */
}

void cli_bad_option(int opt)
{
    const char *arg = args && optind > 0 ? args[optind - 1] : NULL;

    if (opt == ':') {
        if (arg && arg[0] == '-' && arg[1] == '-')
            cli_usage_error("option '%s' requires an argument", arg);
        cli_usage_error("option requires an argument -- '%c'", optopt);
    }
    if (optopt)
        cli_usage_error("invalid option -- '%c'", optopt);
    cli_usage_error("unrecognized option '%s'", arg ? arg : "?");
}

const char *cli_progname(void)
{
    return progname;
}

/* "progname: PREFIX message" on stderr. */
__attribute__((format(printf, 2, 0)))
static void vmsg(const char *prefix, const char *fmt, va_list ap)
{
    fprintf(stderr, "%s: %s", progname, prefix);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

void cli_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vmsg("", fmt, ap);
    va_end(ap);
}

void cli_error_file(const char *file, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s: '%s': ", progname, file);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

void cli_warning(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vmsg("warning: ", fmt, ap);
    va_end(ap);
}

void cli_usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vmsg("", fmt, ap);
    va_end(ap);
    fprintf(stderr, "Try '%s --help' for more information.\n", progname);
    exit(QCHAIN_EXIT_USAGE);
}

void cli_warn_cb(void *ctx, const char *msg)
{
    (void)ctx;
    cli_warning("%s", msg);
}

int cli_common_option(int opt, const char *arg, struct cli_common *c,
                      void (*usage)(void))
{
    switch (opt) {
    case 'h':
        usage();
        exit(QCHAIN_EXIT_OK);
    case 'V':
        printf("%s (qchain) %s\nlibqcow2 %s\n", progname, QCHAIN_VERSION,
               qcow2_version_string());
        exit(QCHAIN_EXIT_OK);
    case 'f':
        if (strcmp(arg, "qcow2") != 0 && strcmp(arg, "raw") != 0)
            cli_usage_error("unknown image format '%s' (qcow2 or raw)", arg);
        c->format = arg;
        return 1;
    case 'U':
        c->force_share = true;
        return 1;
    case CLI_OPT_OUTPUT:
        if (strcmp(arg, "json") == 0)
            c->output = CLI_OUTPUT_JSON;
        else if (strcmp(arg, "human") == 0)
            c->output = CLI_OUTPUT_HUMAN;
        else
            cli_usage_error("--output must be 'human' or 'json', not '%s'",
                            arg);
        return 1;
    case CLI_OPT_JSON:
        c->output = CLI_OUTPUT_JSON;
        return 1;
    case '?':
    case ':':
        cli_bad_option(opt);
    default:
        return 0;
    }
}

void cli_open_opts(const struct cli_common *c, struct qcow2_open_opts *o,
                   unsigned flags)
{
    memset(o, 0, sizeof(*o));
    o->size = sizeof(*o);
    o->flags = flags | (c->force_share ? QCOW2_OPEN_FORCE_SHARE : 0);
    o->format = c->format;
    o->warn = cli_warn_cb;
}

int cli_parse_u64(const char *s, uint64_t *out)
{
    char *end;
    unsigned long long v;

    if (!s || !*s || *s == '-' || *s == '+')
        return -1;
    errno = 0;
    v = strtoull(s, &end, 0);
    if (errno || *end)
        return -1;
    *out = v;
    return 0;
}

int cli_parse_size(const char *s, uint64_t *out)
{
    const char *p = s;
    uint64_t whole = 0, mult = 1;
    double frac = 0, scale = 0.1;
    unsigned shift = 0;
    bool digits = false;

    while (*p >= '0' && *p <= '9') {
        uint64_t d = (uint64_t)(*p - '0');
        if (whole > (UINT64_MAX - d) / 10)
            return -1;
        whole = whole * 10 + d;
        digits = true;
        p++;
    }
    if (*p == '.') {
        p++;
        while (*p >= '0' && *p <= '9') {
            frac += (*p - '0') * scale;
            scale /= 10;
            digits = true;
            p++;
        }
    }
    if (!digits)
        return -1;
    switch (*p) {
    case '\0': break;
    case 'b': case 'B': p++; break;
    case 'k': case 'K': shift = 10; p++; break;
    case 'm': case 'M': shift = 20; p++; break;
    case 'g': case 'G': shift = 30; p++; break;
    case 't': case 'T': shift = 40; p++; break;
    case 'p': case 'P': shift = 50; p++; break;
    case 'e': case 'E': shift = 60; p++; break;
    default: return -1;
    }
    if (*p)
        return -1;
    mult = 1ull << shift;
    if (frac > 0 && shift == 0)
        return -1; /* fractions of a byte */
    if (whole > UINT64_MAX / mult)
        return -1;
    whole *= mult;
    if (frac > 0) {
        double extra = frac * (double)mult;
        if ((double)(UINT64_MAX - whole) < extra)
            return -1;
        whole += (uint64_t)extra;
    }
    *out = whole;
    return 0;
}

char *cli_size_str(uint64_t v, char *buf, unsigned len)
{
    static const char *const suffix[] = {"", "Ki", "Mi", "Gi",
                                         "Ti", "Pi", "Ei"};
    int e;
    unsigned i;

    frexp((double)v / (1000.0 / 1024.0), &e);
    i = e > 0 ? (unsigned)(e - 1) / 10 : 0;
    if (i > 6)
        i = 6;
    snprintf(buf, len, "%0.3g %sB", (double)v / (double)(1ull << (i * 10)),
             suffix[i]);
    return buf;
}

bool cli_made_already(const char *path, const struct qcow2_create_opts *o)
{
    struct qcow2_io mem, file;
    struct stat st;
    uint8_t *a = NULL, *b = NULL;
    int64_t len;
    bool same = false;
    char err[256];

    if (o->format != QCOW2_FORMAT_QCOW2 || stat(path, &st) < 0 ||
        !S_ISREG(st.st_mode) ||
        st.st_size > (off_t)64 << 20 || qcow2_io_lock_probe(path) != 0)
        return false;
    if (qcow2_io_open_mem(NULL, 0, &mem) < 0)
        return false;
    if (qcow2_create_io(&mem, path, o, err, sizeof(err)) == 0 &&
        (len = mem.size(mem.ctx)) == (int64_t)st.st_size &&
        qcow2_io_open_file(path, 0, &file, err, sizeof(err)) == 0) {
        a = malloc(len ? (size_t)len : 1);
        b = malloc(len ? (size_t)len : 1);
        same = a && b && mem.pread(mem.ctx, a, (size_t)len, 0) == len &&
               file.pread(file.ctx, b, (size_t)len, 0) == len &&
               memcmp(a, b, (size_t)len) == 0;
        file.close(file.ctx);
    }
    free(a);
    free(b);
    mem.close(mem.ctx);
    return same;
}

void cli_progress(const struct timespec *start, struct timespec *last,
                  uint64_t done, uint64_t total)
{
    struct timespec now;
    double el, rate;
    char a[32], b[32], r[32];

    clock_gettime(CLOCK_MONOTONIC, &now);
    if (done < total && (now.tv_sec - last->tv_sec) * 1000000000L +
                                (now.tv_nsec - last->tv_nsec) < 200000000L)
        return;
    *last = now;
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
}
