/*
 * qchain-map - which layer of a chain serves each guest byte.
 *
 * --output=json prints exactly what `qemu-img map --output=json` prints for
 * the same file (QEMU 7.2's layout): the same extents, merged by the same
 * rule (entry_mergeable: equal depth, present, zero, data, file, and
 * contiguous host offsets).
 *
 * --all-layers is the forensic view: for each depth of the chain, top
 * first, every extent that layer itself allocates (data, zero, compressed;
 * what it leaves unallocated is omitted), including what upper layers
 * shadow.  Each layer is walked alone over its own virtual size (clipped
 * to --start-offset/--max-length), with the answers `qemu-img map` gives
 * for that file opened with "backing": null; entries merge by the same
 * rule, except compressed clusters, which keep one entry each with their
 * compressed descriptor.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chain.h"
#include "cli.h"
#include "json.h"

static void usage(void)
{
    printf("Usage: %s [OPTIONS] IMAGE\n"
           "Show which layer of IMAGE's backing chain serves each guest "
           "byte.\n\n"
           "  --start-offset=N     start at guest offset N\n"
           "  --max-length=N       map at most N bytes\n"
           "  --all-layers         every allocation of every layer, also "
           "what upper\n"
           "                       layers shadow (forensic view)\n"
           "  --output=human|json  output format (default human); --json\n"
           "  -f, --format=FMT     format of IMAGE (qcow2 or raw)\n"
           "  -U, --force-share    read an image another process holds\n"
           "  -h, --help           this help\n"
           "  -V, --version        version\n\n"
           "JSON output matches `qemu-img map --output=json`.\n",
           cli_progname());
}

struct entry {
    uint64_t start, length, offset;
    unsigned depth;
    bool present, zero, data, has_offset;
    bool compressed;       /* --all-layers: coffset/csize valid */
    uint64_t coffset;
    uint32_t csize;
    const struct qcow2_image *layer; /* file the offset refers to */
    bool in_data_file;
};

static bool mergeable(const struct entry *a, const struct entry *b)
{
    if (a->length == 0 || a->compressed || b->compressed)
        return false;
    if (a->zero != b->zero || a->data != b->data || a->depth != b->depth ||
        a->present != b->present || a->has_offset != b->has_offset)
        return false;
    if (a->has_offset && (a->layer != b->layer ||
                          a->in_data_file != b->in_data_file ||
                          a->offset + a->length != b->offset))
        return false;
    return true;
}

static const char *entry_file(const struct entry *e)
{
    struct qcow2_info info;

    if (e->in_data_file && qcow2_info_get(e->layer, &info) == 0 &&
        info.data_file)
        return info.data_file;
    return qcow2_filename(e->layer);
}

/* The JSON line of an entry is assembled here and written at once:
 * printf's format parsing was a fifth of the time of a map of 400,000
 * extents (issue 20). */
static char *put_str(char *p, const char *s)
{
    size_t n = strlen(s);

    memcpy(p, s, n);
    return p + n;
}

static char *put_u64(char *p, uint64_t v)
{
    char tmp[20];
    unsigned n = 0;

    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        *p++ = tmp[--n];
    return p;
}

static char *put_bool(char *p, const char *key, bool v)
{
    return put_str(put_str(p, key), v ? "true" : "false");
}

static int dump(const struct entry *e, enum cli_output out, bool first)
{
    if (out == CLI_OUTPUT_JSON) {
        char line[256], *p = line; /* keys ~90 bytes, 4 numbers <= 20 */
        if (!first)
            p = put_str(p, ",\n");
        p = put_u64(put_str(p, "{ \"start\": "), e->start);
        p = put_u64(put_str(p, ", \"length\": "), e->length);
        p = put_u64(put_str(p, ", \"depth\": "), e->depth);
        p = put_bool(p, ", \"present\": ", e->present);
        p = put_bool(p, ", \"zero\": ", e->zero);
        p = put_bool(p, ", \"data\": ", e->data);
        if (e->has_offset)
            p = put_u64(put_str(p, ", \"offset\": "), e->offset);
        *p++ = '}';
        fwrite(line, 1, (size_t)(p - line), stdout);
        return 0;
    }
    if (e->data && !e->zero) {
        if (e->has_offset)
            printf("%#-16" PRIx64 "%#-16" PRIx64 "%#-16" PRIx64 "%s\n",
                   e->start, e->length, e->offset, entry_file(e));
        else
            printf("%#-16" PRIx64 "%#-16" PRIx64 "%-16s%s\n", e->start,
                   e->length, "compressed", qcow2_filename(e->layer));
    }
    return 0;
}

/* The entry's file as a JSON string, escaped once per file: 2Mi entries
 * of one layer escaped its name 2Mi times, a byte at a time (a third of
 * the time of --all-layers on tests/cli/bounds.sh's extl2-alt-16k). */
static const char *entry_file_json(const struct entry *e)
{
    static const struct qcow2_image *layer;
    static bool in_data;
    static char *json;
    const char *f;
    size_t len;
    FILE *m;

    if (json && layer == e->layer && in_data == e->in_data_file)
        return json;
    free(json);
    json = NULL;
    f = entry_file(e);
    m = open_memstream(&json, &len);
    if (!m)
        return "\"\"";
    json_write_escaped(m, f, strlen(f));
    if (fclose(m) != 0 || !json) {
        free(json);
        json = NULL;
        return "\"\"";
    }
    layer = e->layer;
    in_data = e->in_data_file;
    return json;
}

/* One --all-layers entry: qemu-img map's keys (with 8.2's "compressed"),
 * then the compressed descriptor and the file the entry belongs to. */
static void dump_layer_entry(const struct entry *e, enum cli_output out,
                             bool first)
{
    if (out == CLI_OUTPUT_JSON) {
        if (!first)
            fputs(",\n", stdout);
        printf("{ \"start\": %" PRIu64 ", \"length\": %" PRIu64
               ", \"depth\": %u, \"present\": %s, \"zero\": %s, \"data\": %s"
               ", \"compressed\": %s",
               e->start, e->length, e->depth, e->present ? "true" : "false",
               e->zero ? "true" : "false", e->data ? "true" : "false",
               e->compressed ? "true" : "false");
        if (e->has_offset)
            printf(", \"offset\": %" PRIu64, e->offset);
        if (e->compressed)
            printf(", \"compressed-offset\": %" PRIu64
                   ", \"compressed-size\": %" PRIu32, e->coffset, e->csize);
        fputs(", \"filename\": ", stdout);
        fputs(entry_file_json(e), stdout);
        putchar('}');
        return;
    }
    {
        char where[48];
        const char *kind = e->compressed ? "compressed"
                           : e->zero     ? "zero"
                                         : "data";
        if (e->compressed)
            snprintf(where, sizeof(where), "%#" PRIx64 "+%#" PRIx32,
                     e->coffset, e->csize);
        else if (e->has_offset)
            snprintf(where, sizeof(where), "%#" PRIx64, e->offset);
        else
            snprintf(where, sizeof(where), "-");
        printf("%-7u%#-16" PRIx64 "%#-16" PRIx64 "%-12s%-24s%s\n", e->depth,
               e->start, e->length, kind, where, entry_file(e));
    }
}

/* --all-layers: each layer alone over [start, min(end, its size)).
 * Returns 0, or 1 after printing an error. */
static int map_all_layers(const struct cli_layers *ls, const char *file,
                          uint64_t start, uint64_t end, enum cli_output out)
{
    struct qcow2_image *layer, *top = ls->v[0];
    bool first = true;
    unsigned depth = 0;

    if (out == CLI_OUTPUT_JSON)
        putchar('[');
    else
        printf("%-7s%-16s%-16s%-12s%-24s%s\n", "Depth", "Offset", "Length",
               "Kind", "Mapped to", "File");
    for (depth = 0; depth < ls->n; depth++) {
        uint64_t lend, pos;
        struct entry curr = {0}, next;

        layer = ls->v[depth];
        lend = qcow2_virtual_size(layer);
        if (end < lend)
            lend = end;
        for (pos = start; pos < lend; pos += next.length) {
            struct qcow2_extent ext;
            int rc = qcow2_map(layer, pos, lend - pos, QCOW2_MAP_HOLES, &ext);
            if (rc < 0) {
                fflush(stdout);
                if (layer == top)
                    cli_error_file(file, "%s", qcow2_errmsg(layer));
                else
                    cli_error_file(file, "backing file '%s': %s",
                                   qcow2_filename(layer),
                                   qcow2_errmsg(layer));
                return 1;
            }
            next = (struct entry){
                .start = pos,
                .length = ext.length,
                .offset = ext.offset,
                .depth = depth,
                .present = (ext.flags & QCOW2_EXTENT_PRESENT) != 0,
                .zero = (ext.flags & QCOW2_EXTENT_ZERO) != 0,
                .data = (ext.flags & QCOW2_EXTENT_DATA) != 0,
                .has_offset = (ext.flags & QCOW2_EXTENT_OFFSET_VALID) != 0,
                .compressed = ext.kind == QCOW2_KIND_COMPRESSED,
                .coffset = ext.offset,
                .csize = ext.csize,
                .layer = ext.layer,
                .in_data_file = ext.in_data_file,
            };
            /* unallocated runs are omitted; they end the run before */
            if (next.present && mergeable(&curr, &next)) {
                curr.length += next.length;
                continue;
            }
            if (curr.length > 0 && curr.present) {
                dump_layer_entry(&curr, out, first);
                first = false;
            }
            curr = next;
        }
        if (curr.length > 0 && curr.present) {
            dump_layer_entry(&curr, out, first);
            first = false;
        }
    }
    if (out == CLI_OUTPUT_JSON)
        puts("]");
    return 0;
}

/* --all-layers: the layers that open (a view of each needs only that
 * layer), and where the chain stops when it does not open whole. */
static int all_layers_main(const struct cli_common *common,
                           const char *file, uint64_t start,
                           uint64_t max_len)
{
    struct qcow2_image *failed;
    struct cli_layers ls;
    uint64_t end;
    int rc;

    if (cli_layers_open(common, file, 0, &ls, &failed, &rc) < 0) {
        if (failed)
            cli_error_file(file, "%s", qcow2_errmsg(failed));
        qcow2_close(failed);
        return QCHAIN_EXIT_FAILURE;
    }
    if (ls.stop)
        cli_warning("'%s': %s; the chain stops at depth %u: the layers "
                    "above it are listed", file, ls.stop, ls.n);
    /* lower layers may be larger than the top: clip to the request only */
    end = max_len > UINT64_MAX - start ? UINT64_MAX : start + max_len;
    rc = map_all_layers(&ls, file, start, end, common->output);
    cli_layers_close(&ls);
    if (rc == 0 && (fflush(stdout) != 0 || ferror(stdout))) {
        cli_error("error writing the output");
        rc = 1;
    }
    return rc ? QCHAIN_EXIT_FAILURE : QCHAIN_EXIT_OK;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        CLI_COMMON_LONGOPTS,
        {"start-offset", required_argument, NULL, 's'},
        {"max-length", required_argument, NULL, 'l'},
        {"all-layers", no_argument, NULL, 'A'},
        {NULL, 0, NULL, 0}};
    struct cli_common common = {0};
    struct qcow2_open_opts opts;
    struct qcow2_image *img;
    uint64_t start = 0, max_len = UINT64_MAX, end, pos;
    struct entry curr = {0}, next;
    bool first = true, all_layers = false;
    const char *file;
    int opt, rc;

    cli_init("qchain-map", argv);
    while ((opt = getopt_long(argc, argv, CLI_COMMON_SHORTOPTS "s:l:",
                              longopts, NULL)) != -1) {
        if (cli_common_option(opt, optarg, &common, usage))
            continue;
        switch (opt) {
        case 's':
            if (cli_parse_size(optarg, &start) < 0 || start > INT64_MAX)
                cli_usage_error("invalid --start-offset '%s'", optarg);
            break;
        case 'l':
            if (cli_parse_size(optarg, &max_len) < 0 || max_len > INT64_MAX)
                cli_usage_error("invalid --max-length '%s'", optarg);
            break;
        case 'A':
            all_layers = true;
            break;
        default:
            cli_usage_error("incorrect parameter");
        }
    }
    if (optind != argc - 1)
        cli_usage_error(optind >= argc ? "missing IMAGE"
                                       : "too many arguments");
    file = argv[optind];

    if (all_layers)
        return all_layers_main(&common, file, start, max_len);
    img = qcow2_new();
    if (!img) {
        cli_error("out of memory");
        return QCHAIN_EXIT_FAILURE;
    }
    cli_open_opts(&common, &opts, 0);
    rc = qcow2_open(img, file, &opts);
    if (rc < 0) {
        cli_error_file(file, "%s", qcow2_errmsg(img));
        qcow2_close(img);
        return QCHAIN_EXIT_FAILURE;
    }

    end = qcow2_virtual_size(img);
    if (max_len < end && start + max_len < end)
        end = start + max_len;
    if (start > end)
        end = start; /* nothing to map, as qemu-img */
    if (common.output == CLI_OUTPUT_JSON)
        putchar('[');
    else
        printf("%-16s%-16s%-16s%s\n", "Offset", "Length", "Mapped to", "File");

    curr.start = start;
    for (pos = start; pos < end; pos += next.length) {
        struct qcow2_extent ext;
        rc = qcow2_map(img, pos, end - pos,
                       QCOW2_MAP_CHAIN | QCOW2_MAP_HOLES, &ext);
        if (rc < 0) {
            fflush(stdout);
            cli_error_file(file, "%s", qcow2_errmsg(img));
            qcow2_close(img);
            return QCHAIN_EXIT_FAILURE;
        }
        next = (struct entry){
            .start = pos,
            .length = ext.length,
            .offset = ext.offset,
            .depth = ext.depth,
            .present = (ext.flags & QCOW2_EXTENT_PRESENT) != 0,
            .zero = (ext.flags & QCOW2_EXTENT_ZERO) != 0,
            .data = (ext.flags & QCOW2_EXTENT_DATA) != 0,
            .has_offset = (ext.flags & QCOW2_EXTENT_OFFSET_VALID) != 0,
            .layer = ext.layer,
            .in_data_file = ext.in_data_file,
        };
        if (mergeable(&curr, &next)) {
            curr.length += next.length;
            continue;
        }
        if (curr.length > 0) {
            dump(&curr, common.output, first);
            first = false;
        }
        curr = next;
    }
    /* like qemu-img map, the last entry is printed even when empty */
    dump(&curr, common.output, first);
    if (common.output == CLI_OUTPUT_JSON)
        puts("]");
    qcow2_close(img);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        cli_error("error writing the output");
        return QCHAIN_EXIT_FAILURE;
    }
    return QCHAIN_EXIT_OK;
}
