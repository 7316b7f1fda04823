/*
 * qchain-info - describe an image, or its whole backing chain.
 *
 * With --output=json the keys qemu-img info has carry the same values
 * (filename, format, virtual-size, actual-size, cluster-size, dirty-flag,
 * backing-filename, full-backing-filename, backing-filename-format,
 * snapshots, format-specific, encrypted), in qemu-img's order; after them
 * come the forensic details qemu-img does not show: every header field,
 * every extension with its offset, the feature name table, the positions of
 * the L1 and refcount tables, the full snapshot table with extra data and
 * the bitmap directory.
 *
 * Without --backing-chain the image is read alone (as qemu-img info reads
 * it), so an overlay with a missing or hostile backing file still shows its
 * header; with --backing-chain the chain must open.
 *
 * An unfinished qchain-commit job into the image, or (without
 * --backing-chain) into any image of its chain, is reported: a line
 * "pending commit: ..." after the image's description, and in JSON the
 * key "pending-commit" last in the image's object (after every key
 * qemu-img has, which keep their order).  A lock refusal names the image
 * in use and the process holding it.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "chain.h"
#include "cli.h"
#include "holders.h"
#include "json.h"
#include "pending.h"

static void usage(void)
{
    printf("Usage: %s [OPTIONS] IMAGE\n"
           "Describe IMAGE: qemu-img info's fields and every structure of "
           "its header.\n\n"
           "  --backing-chain      describe every image of the backing chain\n"
           "  --output=human|json  output format (default human); --json\n"
           "  -f, --format=FMT     format of IMAGE (qcow2 or raw)\n"
           "  -U, --force-share    read an image another process holds\n"
           "  -h, --help           this help\n"
           "  -V, --version        version\n",
           cli_progname());
}

static const char *ext_name(uint32_t type)
{
    switch (type) {
    case QCOW2_EXT_BACKING_FORMAT: return "backing format";
    case QCOW2_EXT_FEATURE_TABLE: return "feature name table";
    case QCOW2_EXT_BITMAPS: return "bitmaps";
    case QCOW2_EXT_CRYPTO: return "full disk encryption header";
    case QCOW2_EXT_DATA_FILE: return "external data file name";
    default: return "unknown";
    }
}

static const char *feature_type(unsigned t)
{
    return t == 0 ? "incompatible" : t == 1 ? "compatible"
                                   : t == 2 ? "autoclear" : "unknown";
}

static void hex(char *out, const uint8_t *p, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", p[i]);
    out[2 * n] = '\0';
}

/* Backing path for the report: resolved name, or the name itself when it
 * is a protocol name (as QEMU reports it). */
static const char *full_backing(const struct qcow2_info *in)
{
    return in->backing_path ? in->backing_path : in->backing_name;
}

/* ---------------------------------------------------------------- JSON */

static void json_snapshots(struct json *j, const struct qcow2_image *img,
                           const struct qcow2_info *in)
{
    unsigned i;

    json_array_begin(j, "snapshots");
    for (i = 0; i < in->nb_snapshots; i++) {
        struct qcow2_snapshot s;
        qcow2_snapshot_get(img, i, &s);
        json_object_begin(j, NULL);
        if (s.has_icount && s.icount != UINT64_MAX)
            json_u64(j, "icount", s.icount);
        json_u64(j, "vm-clock-nsec", s.vm_clock_nsec % 1000000000ull);
        json_string(j, "name", s.name);
        json_u64(j, "date-sec", s.date_sec);
        json_u64(j, "date-nsec", s.date_nsec);
        json_u64(j, "vm-clock-sec", s.vm_clock_nsec / 1000000000ull);
        json_string(j, "id", s.id);
        json_u64(j, "vm-state-size", s.vm_state_size);
        json_object_end(j);
    }
    json_array_end(j);
}

static void json_format_specific(struct json *j, const struct qcow2_image *img,
                                 const struct qcow2_info *in)
{
    unsigned i;

    json_object_begin(j, "format-specific");
    json_string(j, "type", "qcow2");
    json_object_begin(j, "data");
    json_string(j, "compat", in->version >= 3 ? "1.1" : "0.10");
    json_string(j, "compression-type", in->compression);
    if (in->version >= 3)
        json_bool(j, "lazy-refcounts", in->lazy_refcounts);
    if (in->nb_bitmaps) {
        json_array_begin(j, "bitmaps");
        for (i = 0; i < in->nb_bitmaps; i++) {
            struct qcow2_bitmap b;
            qcow2_bitmap_get(img, i, &b);
            json_object_begin(j, NULL);
            json_array_begin(j, "flags");
            if (b.flags & QCOW2_BITMAP_IN_USE)
                json_string(j, NULL, "in-use");
            if (b.flags & QCOW2_BITMAP_AUTO)
                json_string(j, NULL, "auto");
            json_array_end(j);
            json_string(j, "name", b.name);
            json_u64(j, "granularity", 1ull << b.granularity_bits);
            json_object_end(j);
        }
        json_array_end(j);
    }
    json_u64(j, "refcount-bits", in->refcount_bits);
    if (in->encrypted) {
        json_object_begin(j, "encrypt");
        json_string(j, "format", in->crypt_method == 2 ? "luks" : "aes");
        json_object_end(j);
    }
    if (in->data_file)
        json_string(j, "data-file", in->data_file);
    if (in->has_external_data)
        json_bool(j, "data-file-raw", in->data_file_raw);
    if (in->version >= 3) {
        json_bool(j, "corrupt", in->corrupt);
        json_bool(j, "extended-l2", in->extended_l2);
    }
    json_object_end(j);
    json_object_end(j);
}

static void json_forensics(struct json *j, const struct qcow2_image *img,
                           const struct qcow2_info *in)
{
    const struct qcow2_header *h = qcow2_header_get(img);
    unsigned i;
    char buf[2 * 1024 + 1];

    json_u64(j, "file-size", (uint64_t)in->file_size);
    json_object_begin(j, "header");
    json_u64(j, "magic", h->magic);
    json_u64(j, "version", h->version);
    json_u64(j, "backing-file-offset", h->backing_file_offset);
    json_u64(j, "backing-file-size", h->backing_file_size);
    json_u64(j, "cluster-bits", h->cluster_bits);
    json_u64(j, "size", h->size);
    json_u64(j, "crypt-method", h->crypt_method);
    json_u64(j, "l1-size", h->l1_size);
    json_u64(j, "l1-table-offset", h->l1_table_offset);
    json_u64(j, "refcount-table-offset", h->refcount_table_offset);
    json_u64(j, "refcount-table-clusters", h->refcount_table_clusters);
    json_u64(j, "nb-snapshots", h->nb_snapshots);
    json_u64(j, "snapshots-offset", h->snapshots_offset);
    json_u64(j, "incompatible-features", h->incompatible_features);
    json_u64(j, "compatible-features", h->compatible_features);
    json_u64(j, "autoclear-features", h->autoclear_features);
    json_u64(j, "refcount-order", h->refcount_order);
    json_u64(j, "header-length", h->header_length);
    json_u64(j, "compression-type", h->compression_type);
    json_object_end(j);

    json_array_begin(j, "extensions");
    for (i = 0; i < in->nb_extensions; i++) {
        struct qcow2_extension e;
        qcow2_extension_get(img, i, &e);
        json_object_begin(j, NULL);
        json_u64(j, "type", e.type);
        json_string(j, "name", ext_name(e.type));
        json_u64(j, "offset", e.offset);
        json_u64(j, "length", e.length);
        if (e.type == QCOW2_EXT_BACKING_FORMAT ||
            e.type == QCOW2_EXT_DATA_FILE) {
            json_string_len(j, "value", (const char *)e.data, e.length);
        } else if (!e.known && e.length <= 1024) {
            hex(buf, e.data, e.length);
            json_string(j, "data", buf);
        }
        json_object_end(j);
    }
    json_array_end(j);

    json_array_begin(j, "feature-table");
    for (i = 0; i < in->nb_features; i++) {
        struct qcow2_feature f;
        qcow2_feature_get(img, i, &f);
        json_object_begin(j, NULL);
        json_string(j, "type", feature_type(f.type));
        json_u64(j, "bit", f.bit);
        json_string(j, "name", f.name);
        json_object_end(j);
    }
    json_array_end(j);

    json_object_begin(j, "l1-table");
    json_u64(j, "offset", h->l1_table_offset);
    json_u64(j, "entries", h->l1_size);
    json_object_end(j);
    json_object_begin(j, "refcount-table");
    json_u64(j, "offset", h->refcount_table_offset);
    json_u64(j, "clusters", h->refcount_table_clusters);
    json_u64(j, "refcount-bits", in->refcount_bits);
    json_object_end(j);

    json_array_begin(j, "snapshot-table");
    for (i = 0; i < in->nb_snapshots; i++) {
        struct qcow2_snapshot s;
        qcow2_snapshot_get(img, i, &s);
        json_object_begin(j, NULL);
        json_u64(j, "entry-offset", s.entry_offset);
        json_string(j, "id", s.id);
        json_string(j, "name", s.name);
        json_u64(j, "l1-table-offset", s.l1_table_offset);
        json_u64(j, "l1-size", s.l1_size);
        json_u64(j, "date-sec", s.date_sec);
        json_u64(j, "date-nsec", s.date_nsec);
        json_u64(j, "vm-clock-nsec", s.vm_clock_nsec);
        json_u64(j, "vm-state-size-32", s.vm_state_size32);
        json_u64(j, "vm-state-size", s.vm_state_size);
        if (s.has_disk_size)
            json_u64(j, "disk-size", s.disk_size);
        if (s.has_icount)
            json_i64(j, "icount", (int64_t)s.icount);
        json_u64(j, "extra-data-size", s.extra_data_size);
        hex(buf, s.extra_data, s.extra_data_size);
        json_string(j, "extra-data", buf);
        json_object_end(j);
    }
    json_array_end(j);

    json_array_begin(j, "bitmap-directory");
    for (i = 0; i < in->nb_bitmaps; i++) {
        struct qcow2_bitmap b;
        qcow2_bitmap_get(img, i, &b);
        json_object_begin(j, NULL);
        json_u64(j, "entry-offset", b.entry_offset);
        json_string(j, "name", b.name);
        json_u64(j, "table-offset", b.table_offset);
        json_u64(j, "table-size", b.table_size);
        json_u64(j, "flags", b.flags);
        json_u64(j, "type", b.type);
        json_u64(j, "granularity-bits", b.granularity_bits);
        json_u64(j, "extra-data-size", b.extra_data_size);
        json_object_end(j);
    }
    json_array_end(j);
}

/* pend: the unfinished commit job the object reports, or NULL */
static void json_image(struct json *j, const struct qcow2_image *img,
                       const struct cli_pending *pend)
{
    struct qcow2_info in;

    qcow2_info_get(img, &in);
    json_object_begin(j, NULL);
    if (in.nb_snapshots)
        json_snapshots(j, img, &in);
    if (in.backing_format)
        json_string(j, "backing-filename-format", in.backing_format);
    json_u64(j, "virtual-size", in.virtual_size);
    json_string(j, "filename", in.filename);
    if (in.format == QCOW2_FORMAT_QCOW2)
        json_u64(j, "cluster-size", in.cluster_size);
    json_string(j, "format", in.format == QCOW2_FORMAT_QCOW2 ? "qcow2"
                                                             : "raw");
    if (in.actual_size >= 0)
        json_u64(j, "actual-size", (uint64_t)in.actual_size);
    if (in.format == QCOW2_FORMAT_QCOW2)
        json_format_specific(j, img, &in);
    if (in.backing_name) {
        json_string(j, "full-backing-filename", full_backing(&in));
        json_string(j, "backing-filename", in.backing_name);
    }
    if (in.encrypted)
        json_bool(j, "encrypted", true);
    json_bool(j, "dirty-flag", in.dirty);
    if (in.format == QCOW2_FORMAT_QCOW2)
        json_forensics(j, img, &in);
    if (pend)
        cli_pending_json(j, pend);
    json_object_end(j);
}

/* --------------------------------------------------------------- human */

static void human_snapshots(const struct qcow2_image *img,
                            const struct qcow2_info *in)
{
    unsigned i;
    char size[32], date[64], clock[64], icount[32];

    printf("Snapshot list:\n");
    printf("%-10s%-17s%8s%20s%13s%11s\n", "ID", "TAG", "VM SIZE", "DATE",
           "VM CLOCK", "ICOUNT");
    for (i = 0; i < in->nb_snapshots; i++) {
        struct qcow2_snapshot s;
        time_t t;
        struct tm tm;
        uint64_t secs;

        qcow2_snapshot_get(img, i, &s);
        t = (time_t)s.date_sec;
        localtime_r(&t, &tm);
        strftime(date, sizeof(date), "%Y-%m-%d %H:%M:%S", &tm);
        secs = s.vm_clock_nsec / 1000000000ull;
        snprintf(clock, sizeof(clock), "%02d:%02d:%02d.%03d",
                 (int)(secs / 3600), (int)((secs / 60) % 60),
                 (int)(secs % 60),
                 (int)((s.vm_clock_nsec / 1000000) % 1000));
        icount[0] = '\0';
        if (s.has_icount && s.icount != UINT64_MAX)
            snprintf(icount, sizeof(icount), "%" PRIu64, s.icount);
        printf("%-9s %-16s %8s%20s%13s%11s\n", s.id, s.name,
               cli_size_str(s.vm_state_size, size, sizeof(size)), date, clock,
               icount);
    }
}

static void human_image(const struct qcow2_image *img)
{
    struct qcow2_info in;
    const struct qcow2_header *h;
    char a[32], b[32];
    unsigned i;

    qcow2_info_get(img, &in);
    printf("image: %s\n", in.filename);
    printf("file format: %s\n",
           in.format == QCOW2_FORMAT_QCOW2 ? "qcow2" : "raw");
    printf("virtual size: %s (%" PRIu64 " bytes)\n",
           cli_size_str(in.virtual_size, a, sizeof(a)), in.virtual_size);
    if (in.actual_size >= 0)
        printf("disk size: %s\n",
               cli_size_str((uint64_t)in.actual_size, b, sizeof(b)));
    if (in.encrypted)
        printf("encrypted: yes\n");
    if (in.format != QCOW2_FORMAT_QCOW2)
        return;
    printf("cluster_size: %u\n", in.cluster_size);
    if (in.backing_name) {
        if (strcmp(full_backing(&in), in.backing_name) != 0)
            printf("backing file: %s (actual path: %s)\n", in.backing_name,
                   full_backing(&in));
        else
            printf("backing file: %s\n", in.backing_name);
    }
    if (in.backing_format)
        printf("backing file format: %s\n", in.backing_format);
    if (in.dirty)
        printf("cleanly shut down: no\n");
    if (in.nb_snapshots)
        human_snapshots(img, &in);
    printf("Format specific information:\n");
    printf("    compat: %s\n", in.version >= 3 ? "1.1" : "0.10");
    printf("    compression type: %s\n", in.compression);
    if (in.version >= 3)
        printf("    lazy refcounts: %s\n",
               in.lazy_refcounts ? "true" : "false");
    if (in.nb_bitmaps) {
        printf("    bitmaps:\n");
        for (i = 0; i < in.nb_bitmaps; i++) {
            struct qcow2_bitmap bm;
            unsigned k = 0;
            qcow2_bitmap_get(img, i, &bm);
            printf("        [%u]:\n            flags:\n", i);
            if (bm.flags & QCOW2_BITMAP_IN_USE)
                printf("                [%u]: in-use\n", k++);
            if (bm.flags & QCOW2_BITMAP_AUTO)
                printf("                [%u]: auto\n", k++);
            printf("            name: %s\n", bm.name);
            printf("            granularity: %llu\n",
                   1ull << bm.granularity_bits);
        }
    }
    printf("    refcount bits: %u\n", in.refcount_bits);
    if (in.data_file)
        printf("    data file: %s\n", in.data_file);
    if (in.has_external_data)
        printf("    data file raw: %s\n", in.data_file_raw ? "true" : "false");
    if (in.version >= 3) {
        printf("    corrupt: %s\n", in.corrupt ? "true" : "false");
        printf("    extended l2: %s\n", in.extended_l2 ? "true" : "false");
    }

    /* what qemu-img does not show */
    h = qcow2_header_get(img);
    printf("Header (file size %" PRId64 " bytes):\n", in.file_size);
    printf("    magic:                   0x%08" PRIx32 "\n", h->magic);
    printf("    version:                 %" PRIu32 "\n", h->version);
    printf("    backing file offset:     0x%" PRIx64 " (%" PRIu32
           " bytes)\n", h->backing_file_offset, h->backing_file_size);
    printf("    cluster bits:            %" PRIu32 "\n", h->cluster_bits);
    printf("    size:                    %" PRIu64 "\n", h->size);
    printf("    crypt method:            %" PRIu32 "\n", h->crypt_method);
    printf("    L1 table:                0x%" PRIx64 " (%" PRIu32
           " entries)\n", h->l1_table_offset, h->l1_size);
    printf("    refcount table:          0x%" PRIx64 " (%" PRIu32
           " clusters)\n", h->refcount_table_offset,
           h->refcount_table_clusters);
    printf("    snapshot table:          0x%" PRIx64 " (%" PRIu32
           " snapshots)\n", h->snapshots_offset, h->nb_snapshots);
    printf("    incompatible features:   0x%016" PRIx64 "\n",
           h->incompatible_features);
    printf("    compatible features:     0x%016" PRIx64 "\n",
           h->compatible_features);
    printf("    autoclear features:      0x%016" PRIx64 "\n",
           h->autoclear_features);
    printf("    refcount order:          %" PRIu32 "\n", h->refcount_order);
    printf("    header length:           %" PRIu32 "\n", h->header_length);
    printf("    compression type:        %u\n", h->compression_type);
    if (in.nb_extensions) {
        printf("Header extensions:\n");
        for (i = 0; i < in.nb_extensions; i++) {
            struct qcow2_extension e;
            qcow2_extension_get(img, i, &e);
            printf("    0x%08" PRIx32 " %-28s at 0x%" PRIx64 ", %" PRIu32
                   " bytes\n", e.type, ext_name(e.type), e.offset, e.length);
        }
    }
    if (in.nb_features) {
        printf("Feature name table:\n");
        for (i = 0; i < in.nb_features; i++) {
            struct qcow2_feature f;
            qcow2_feature_get(img, i, &f);
            printf("    %-12s bit %2u: %s\n", feature_type(f.type), f.bit,
                   f.name);
        }
    }
    for (i = 0; i < in.nb_snapshots; i++) {
        struct qcow2_snapshot s;
        qcow2_snapshot_get(img, i, &s);
        if (i == 0)
            printf("Snapshot table:\n");
        printf("    [%u] at 0x%" PRIx64 ": id %s, name %s, L1 0x%" PRIx64
               " (%" PRIu32 " entries), %" PRIu32 " bytes of extra data\n",
               i, s.entry_offset, s.id, s.name, s.l1_table_offset, s.l1_size,
               s.extra_data_size);
    }
    for (i = 0; i < in.nb_bitmaps; i++) {
        struct qcow2_bitmap bm;
        qcow2_bitmap_get(img, i, &bm);
        if (i == 0)
            printf("Bitmap directory:\n");
        printf("    [%u] at 0x%" PRIx64 ": %s, table 0x%" PRIx64 " (%" PRIu32
               " entries), flags 0x%" PRIx32 "\n", i, bm.entry_offset,
               bm.name, bm.table_offset, bm.table_size, bm.flags);
    }
}

/* ------------------------------------------------ unfinished commits */

struct pendings {
    struct cli_pending *v; /* by depth of the job's base */
    unsigned n;
};

/* The unfinished commit jobs into `img` or an image of its chain, read
 * without locks (img itself when it has no backing file, or when `chain`
 * says it was opened with its chain); an image whose chain does not open
 * is looked at alone, with a warning saying why.  Nothing found on
 * failure. */
static void find_pending(const struct cli_common *common, const char *file,
                         struct qcow2_image *img, bool chain,
                         struct pendings *p)
{
    struct qcow2_image *whole = NULL;
    struct cli_chain c = {0};
    struct qcow2_info in;
    int n;

    p->v = NULL;
    p->n = 0;
    qcow2_info_get(img, &in);
    if (!chain && in.backing_name && (whole = qcow2_new())) {
        struct qcow2_open_opts o;
        cli_open_opts(common, &o, QCOW2_OPEN_FORCE_SHARE);
        o.warn = NULL; /* said once already, by the first open */
        if (qcow2_open(whole, file, &o) == 0)
            img = whole;
        else /* a missing or unusable backing file: the image alone */
            cli_warning("'%s': %s; the image is described by itself", file,
                        qcow2_errmsg(whole));
    }
    if (cli_chain_load(img, &c) == 0 &&
        (n = cli_pending_find(&c, NULL, &p->v)) > 0)
        p->n = (unsigned)n;
    cli_chain_free(&c);
    qcow2_close(whole);
}

/* The first job into the image at `depth` (-1: into any image). */
static const struct cli_pending *pending_at(const struct pendings *p,
                                            int depth)
{
    unsigned i;

    for (i = 0; i < p->n; i++)
        if (depth < 0 || p->v[i].layer == (unsigned)depth)
            return &p->v[i];
    return NULL;
}

static void human_pending(const struct pendings *p, int depth)
{
    char msg[4 * PATH_MAX + 256];
    unsigned i;

    for (i = 0; i < p->n; i++) {
        if (depth >= 0 && p->v[i].layer != (unsigned)depth)
            continue;
        cli_pending_str(&p->v[i], msg, sizeof(msg));
        printf("pending commit: %s\n", msg);
    }
}

/* ---------------------------------------------------------------- main */

/* ------------------------------------------------ a refused image */

/* The header fields of a refused qcow2 image, as far as the file holds
 * them (qcow2_header_decode), so that the examiner sees what was read
 * before the refusal; the JSON keys are the ones of "header" above. */
static void refused_header(const struct cli_common *common, const char *file)
{
    struct qcow2_header h;
    unsigned char buf[112];
    size_t n, used, i;
    struct stat st;
    FILE *f;

    /* a FIFO would block the open: regular files and devices only */
    if (stat(file, &st) < 0 || !(S_ISREG(st.st_mode) || S_ISBLK(st.st_mode)))
        return;
    f = fopen(file, "rb");
    if (!f)
        return;
    n = fread(buf, 1, sizeof(buf), f);
    fclose(f);
    used = qcow2_header_decode(buf, n, &h);
    if (used == 0)
        return;
    {
        const struct {
            const char *key, *label;
            size_t end;
            uint64_t v;
            bool hex;
        } fl[] = {
            {"magic", "magic", 4, h.magic, true},
            {"version", "version", 8, h.version, false},
            {"backing-file-offset", "backing file offset", 16,
             h.backing_file_offset, true},
            {"backing-file-size", "backing file size", 20,
             h.backing_file_size, false},
            {"cluster-bits", "cluster bits", 24, h.cluster_bits, false},
            {"size", "size", 32, h.size, false},
            {"crypt-method", "crypt method", 36, h.crypt_method, false},
            {"l1-size", "L1 entries", 40, h.l1_size, false},
            {"l1-table-offset", "L1 table", 48, h.l1_table_offset, true},
            {"refcount-table-offset", "refcount table", 56,
             h.refcount_table_offset, true},
            {"refcount-table-clusters", "refcount table clusters", 60,
             h.refcount_table_clusters, false},
            {"nb-snapshots", "snapshots", 64, h.nb_snapshots, false},
            {"snapshots-offset", "snapshot table", 72, h.snapshots_offset,
             true},
            {"incompatible-features", "incompatible features", 80,
             h.incompatible_features, true},
            {"compatible-features", "compatible features", 88,
             h.compatible_features, true},
            {"autoclear-features", "autoclear features", 96,
             h.autoclear_features, true},
            {"refcount-order", "refcount order", 100, h.refcount_order,
             false},
            {"header-length", "header length", 104, h.header_length, false},
            {"compression-type", "compression type", 105, h.compression_type,
             false},
        };
        struct json j;

        if (common->output == CLI_OUTPUT_JSON) {
            json_init(&j, stdout, true);
            json_object_begin(&j, NULL);
            json_string(&j, "filename", file);
            json_bool(&j, "refused", true);
            json_object_begin(&j, "header");
        } else {
            printf("image: %s\nHeader as read (%zu bytes; the image is "
                   "refused):\n", file, used);
        }
        for (i = 0; i < sizeof(fl) / sizeof(fl[0]); i++) {
            if (fl[i].end > used)
                break;
            if (common->output == CLI_OUTPUT_JSON)
                json_u64(&j, fl[i].key, fl[i].v);
            else if (fl[i].hex)
                printf("    %-25s0x%" PRIx64 "\n", fl[i].label, fl[i].v);
            else
                printf("    %-25s%" PRIu64 "\n", fl[i].label, fl[i].v);
        }
        if (common->output == CLI_OUTPUT_JSON) {
            json_object_end(&j);
            json_object_end(&j);
            json_end(&j);
        }
        fflush(stdout);
    }
}

/* Open `file` (with its chain when `chain`).  NULL on failure (said). */
static struct qcow2_image *open_image(const struct cli_common *common,
                                      const char *file, bool chain)
{
    struct qcow2_open_opts opts;
    struct qcow2_image *img = qcow2_new();
    char *msg;
    int rc;

    if (!img) {
        cli_error("out of memory");
        return NULL;
    }
    cli_open_opts(common, &opts, chain ? 0 : QCOW2_OPEN_NO_BACKING);
    rc = qcow2_open(img, file, &opts);
    if (rc == 0)
        return img;
    /* the handle goes first: its own locks would be in the way of the
     * search for the one refused */
    msg = strdup(qcow2_errmsg(img));
    qcow2_close(img);
    if (rc == -EBUSY)
        cli_busy_error(file, common->format, opts.flags,
                       msg ? msg : qcow2_strerror(rc),
                       "stop the VM, or use -U for read-only figures");
    else {
        /* every header field the file holds, then the refusal */
        if (rc != -ENOENT && rc != -EACCES && rc != -EISDIR)
            refused_header(common, file);
        cli_error_file(file, "%s", msg ? msg : qcow2_strerror(rc));
    }
    free(msg);
    return NULL;
}

static void report(const struct cli_common *common, struct qcow2_image *img,
                   bool chain, const struct pendings *pend)
{
    struct qcow2_image *l;
    int d;

    if (common->output == CLI_OUTPUT_JSON) {
        struct json j;
        json_init(&j, stdout, true);
        if (chain) {
            json_array_begin(&j, NULL);
            for (l = img, d = 0; l; l = qcow2_backing(l), d++)
                json_image(&j, l, pending_at(pend, d));
            json_array_end(&j);
        } else {
            json_image(&j, img, pending_at(pend, -1));
        }
        json_end(&j);
        return;
    }
    for (l = img, d = 0; l; l = chain ? qcow2_backing(l) : NULL, d++) {
        if (l != img)
            putchar('\n');
        human_image(l);
        human_pending(pend, chain ? d : -1);
    }
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        CLI_COMMON_LONGOPTS,
        {"backing-chain", no_argument, NULL, 'b'},
        {NULL, 0, NULL, 0}};
    struct cli_common common = {0};
    struct qcow2_image *img;
    struct pendings pend;
    bool chain = false;
    const char *file;
    int opt;

    cli_init("qchain-info", argv);
    while ((opt = getopt_long(argc, argv, CLI_COMMON_SHORTOPTS, longopts,
                              NULL)) != -1) {
        if (cli_common_option(opt, optarg, &common, usage))
            continue;
        if (opt == 'b')
            chain = true;
        else
            cli_usage_error("incorrect parameter");
    }
    if (optind != argc - 1)
        cli_usage_error(optind >= argc ? "missing IMAGE"
                                       : "too many arguments");
    file = argv[optind];

    img = open_image(&common, file, chain);
    if (!img)
        return QCHAIN_EXIT_FAILURE;
    find_pending(&common, file, img, chain, &pend);
    report(&common, img, chain, &pend);
    free(pend.v);
    qcow2_close(img);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        cli_error("error writing the output");
        return QCHAIN_EXIT_FAILURE;
    }
    return QCHAIN_EXIT_OK;
}
