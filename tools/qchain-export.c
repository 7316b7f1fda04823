/*
 * qchain-export - write the guest-visible content of an image (through its
 * backing chain), or of one of its internal snapshots, to a new raw file.
 * Forensic views: --layer N writes what the layer at depth N holds by
 * itself (zeros where it allocates nothing, so the data upper layers
 * shadow comes back), --vmstate SNAP the saved VM state of an internal
 * snapshot, exactly vm_state_size bytes as stored.
 *
 * The output is byte-identical to `qemu-img convert -O raw` (`-l SNAPSHOT`
 * for snapshots; for --layer N, of that layer opened with "backing": null)
 * and sparse where the guest sees zeros: ranges mapped as zero or
 * unallocated are never written, and neither are all-zero 4 KiB blocks of
 * data.  OUTPUT must not exist; on failure it is removed.  Images are only
 * ever opened read-only (read locks, none with -U).
 *
 * OUTPUT "-" is standard output, which may be a pipe: the content is
 * written in order, zeros included (no seeking), in large chunks; a write
 * that fails (EPIPE when the reader went away: SIGPIPE is ignored so that
 * it is reported) ends the export with an error, exit 1.  No file named
 * "-" is ever made, and --output=json is refused (stdout carries data).
 *
 * --salvage gets out what a damaged image still holds (the library's
 * salvage mode, qcow2_set_salvage): what cannot be read (clusters past the
 * end of the file, unusable L2 tables, compressed clusters that do not
 * decompress, read errors) is written as zeros, and each such guest range
 * is listed on stderr as it is met (adjacent ones with the same reason
 * merged) and, with --output=json, in "unreadable".  Exit 3 when anything
 * was salvaged, 0 when all was read.  The listing for JSON is spooled to
 * an anonymous temporary file: memory does not grow with the damage.
 *
 * --layer 0 and --vmstate need only the image itself: its backing chain is
 * not opened (a copy of an overlay without its base exports).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "json.h"

#define CHUNK (4u << 20)   /* bytes read per call: bounds memory */
#define ZERO_BLOCK 4096u   /* granularity of zero detection */
#define EXIT_SALVAGED 3    /* --salvage: some ranges were written as zeros */
#define REASON_MAX 1280    /* longest reason kept (library: < 1200) */

static void usage(void)
{
    printf("Usage: %s [OPTIONS] IMAGE OUTPUT\n"
           "Write the guest-visible content of IMAGE to the new raw file "
           "OUTPUT.\n\n"
           "  -s, --snapshot=SNAP  export internal snapshot SNAP (id or name)\n"
           "  --layer=N            export what the layer at depth N of the "
           "chain holds\n"
           "                       by itself (0 = IMAGE), zeros where it "
           "allocates nothing\n"
           "  --vmstate=SNAP       export the saved VM state of internal "
           "snapshot SNAP\n"
           "  -f, --format=FMT     format of IMAGE (qcow2 or raw)\n"
           "  --salvage            write what cannot be read as zeros, list "
           "those ranges\n"
           "                       (stderr, and \"unreadable\" in JSON); exit "
           "3 if any\n"
           "  -U, --force-share    read an image another process holds\n"
           "  --output=human|json  report format (default human); --json\n"
           "  -h, --help           this help\n"
           "  -V, --version        version\n\n"
           "OUTPUT is never overwritten; it is sparse where the guest sees "
           "zeros.  A block\ndevice as OUTPUT is written over, as qemu-img "
           "convert does.  OUTPUT - writes the\ncontent to standard output "
           "(a pipe: zeros are written out; no --output=json).\n",
           cli_progname());
}

/* Write buf (guest offset off) skipping 4 KiB-aligned zero blocks. */
static int write_sparse(struct qcow2_io *out, const uint8_t *buf, size_t len,
                        uint64_t off, uint64_t *written)
{
    size_t i = 0;

    while (i < len) {
        size_t n = ZERO_BLOCK - (size_t)((off + i) % ZERO_BLOCK), j;
        if (n > len - i)
            n = len - i;
        if (qcow2_buffer_is_zero(buf + i, n)) {
            i += n;
            continue;
        }
        /* extend over following non-zero blocks for one large write */
        j = i + n;
        while (j < len) {
            size_t m = len - j < ZERO_BLOCK ? len - j : ZERO_BLOCK;
            if (qcow2_buffer_is_zero(buf + j, m))
                break;
            j += m;
        }
        int64_t rc = out->pwrite(out->ctx, buf + i, j - i, off + i);
        if (rc < 0)
            return (int)rc;
        *written += j - i;
        i = j;
    }
    return 0;
}

/* What is exported: the guest view through the chain (or a snapshot of
 * the top image), one layer alone, or a snapshot's VM state. */
enum what { WHAT_CHAIN, WHAT_LAYER, WHAT_VMSTATE };

struct source {
    enum what what;
    struct qcow2_image *img; /* the image read: the top, or layer N */
    unsigned snap;           /* WHAT_VMSTATE: snapshot index */
    uint64_t size;           /* bytes to write */
};

static int source_map(const struct source *src, uint64_t pos,
                      struct qcow2_extent *ext)
{
    uint64_t len = src->size - pos;

    switch (src->what) {
    case WHAT_CHAIN:
        return qcow2_map(src->img, pos, len, QCOW2_MAP_CHAIN, ext);
    case WHAT_LAYER:
        return qcow2_map(src->img, pos, len, 0, ext);
    case WHAT_VMSTATE:
        return qcow2_vmstate_map(src->img, src->snap, pos, len, ext);
    }
    return -EINVAL;
}

static int64_t source_read(const struct source *src, void *buf, size_t n,
                           uint64_t pos)
{
    switch (src->what) {
    case WHAT_CHAIN:
        return qcow2_pread(src->img, buf, n, pos);
    case WHAT_LAYER:
        return qcow2_layer_pread(src->img, buf, n, pos);
    case WHAT_VMSTATE:
        return qcow2_vmstate_pread(src->img, src->snap, buf, n, pos);
    }
    return -EINVAL;
}

/* A failure reading src: named by the top image, with the layer's name
 * when a backing file is at fault. */
static void source_error(const struct source *src, const char *file)
{
    if (src->what == WHAT_LAYER && strcmp(qcow2_filename(src->img), file))
        cli_error_file(file, "backing file '%s': %s",
                       qcow2_filename(src->img), qcow2_errmsg(src->img));
    else
        cli_error_file(file, "%s", qcow2_errmsg(src->img));
}

struct args {
    const char *file, *outfile;
    const char *snapshot, *vmstate;
    uint64_t layer;
    enum what what;
    bool salvage;
};

/* --salvage: the ranges that could not be read, merged as they come. */
struct salvage {
    const char *file;     /* the image, for messages */
    FILE *log;            /* --output=json: records of merged ranges */
    uint64_t start, len;  /* the range being merged (len 0: none) */
    char why[REASON_MAX];
    uint64_t ranges, bytes;
    bool log_failed;
};

static struct salvage salv;

/* A merged range is complete: list it. */
static void salvage_flush(struct salvage *s)
{
    size_t n;

    if (!s->len)
        return;
    cli_warning("'%s': cannot read guest offset 0x%" PRIx64 ", %" PRIu64
                " bytes, written as zeros: %s", s->file, s->start, s->len,
                s->why);
    s->ranges++;
    s->bytes += s->len;
    if (s->log) {
        n = strlen(s->why) + 1;
        if (fwrite(&s->start, sizeof(s->start), 1, s->log) != 1 ||
            fwrite(&s->len, sizeof(s->len), 1, s->log) != 1 ||
            fwrite(s->why, 1, n, s->log) != n)
            s->log_failed = true;
    }
    s->len = 0;
}

/* qcow2_unreadable_fn: merge with the range before when adjacent (or
 * overlapping) with the same reason, else list that one. */
static void salvage_cb(void *ctx, uint64_t start, uint64_t len,
                       const char *why)
{
    struct salvage *s = ctx;

    if (s->len && start >= s->start && start <= s->start + s->len &&
        !strncmp(why, s->why, sizeof(s->why) - 1)) {
        if (start + len > s->start + s->len)
            s->len = start + len - s->start;
        return;
    }
    salvage_flush(s);
    s->start = start;
    s->len = len;
    snprintf(s->why, sizeof(s->why), "%s", why);
}

/* After a whole export: the last range listed, a summary.  Returns the
 * exit status (0 or EXIT_SALVAGED), or 1 when the listing for JSON was
 * lost. */
static int salvage_finish(const struct args *a)
{
    char sz[32];

    salvage_flush(&salv);
    if (salv.log && (fflush(salv.log) != 0 || salv.log_failed)) {
        cli_error("cannot keep the list of unreadable ranges: %s",
                  strerror(errno));
        return QCHAIN_EXIT_FAILURE;
    }
    if (!salv.ranges)
        return QCHAIN_EXIT_OK;
    cli_warning("'%s': %" PRIu64 " range%s (%s) could not be read; the "
                "output holds zeros there", a->file, salv.ranges,
                salv.ranges == 1 ? "" : "s",
                cli_size_str(salv.bytes, sz, sizeof(sz)));
    return EXIT_SALVAGED;
}

/* The "unreadable" array of the JSON report, from the spooled records. */
static void salvage_json(struct json *j)
{
    uint64_t start, len;
    char why[REASON_MAX];

    json_array_begin(j, "unreadable");
    rewind(salv.log);
    while (fread(&start, sizeof(start), 1, salv.log) == 1 &&
           fread(&len, sizeof(len), 1, salv.log) == 1) {
        size_t n = 0;
        int c;
        while ((c = getc(salv.log)) != EOF && c != '\0')
            if (n + 1 < sizeof(why))
                why[n++] = (char)c;
        why[n] = '\0';
        json_object_begin(j, NULL);
        json_u64(j, "start", start);
        json_u64(j, "length", len);
        json_string(j, "reason", why);
        json_object_end(j);
    }
    json_array_end(j);
    json_u64(j, "unreadable-bytes", salv.bytes);
}

static struct cli_common common;

static void parse_args(int argc, char **argv, struct args *a)
{
    enum { OPT_LAYER = 0x2000, OPT_VMSTATE, OPT_SALVAGE };
    static const struct option longopts[] = {
        CLI_COMMON_LONGOPTS,
        {"snapshot", required_argument, NULL, 's'},
        {"layer", required_argument, NULL, OPT_LAYER},
        {"vmstate", required_argument, NULL, OPT_VMSTATE},
        {"salvage", no_argument, NULL, OPT_SALVAGE},
        {NULL, 0, NULL, 0}};
    int opt;

    a->what = WHAT_CHAIN;
    while ((opt = getopt_long(argc, argv, CLI_COMMON_SHORTOPTS "s:",
                              longopts, NULL)) != -1) {
        if (cli_common_option(opt, optarg, &common, usage))
            continue;
        switch (opt) {
        case 's':
            a->snapshot = optarg;
            break;
        case OPT_LAYER:
            if (cli_parse_u64(optarg, &a->layer) < 0 ||
                a->layer > UINT32_MAX)
                cli_usage_error("invalid --layer '%s'", optarg);
            a->what = WHAT_LAYER;
            break;
        case OPT_VMSTATE:
            a->vmstate = optarg;
            break;
        case OPT_SALVAGE:
            a->salvage = true;
            break;
        default:
            cli_usage_error("incorrect parameter");
        }
    }
    if ((a->snapshot != NULL) + (a->what == WHAT_LAYER) +
            (a->vmstate != NULL) > 1)
        cli_usage_error("--snapshot, --layer and --vmstate exclude each "
                        "other");
    if (a->vmstate)
        a->what = WHAT_VMSTATE;
    if (argc - optind != 2)
        cli_usage_error(argc - optind < 2 ? "missing IMAGE or OUTPUT"
                                          : "too many arguments");
    a->file = argv[optind];
    a->outfile = argv[optind + 1];
    if (!strcmp(a->outfile, "-") && common.output == CLI_OUTPUT_JSON)
        cli_usage_error("--output=json with OUTPUT '-': standard output "
                        "carries the content");
}

/* Open what is exported, read-only whatever it is: read locks only (none
 * with -U).  *img is the caller's to close. */
static int open_source(const struct args *a, struct qcow2_image **img,
                       struct source *src)
{
    struct qcow2_open_opts opts;
    int rc;

    *img = qcow2_new();
    if (!*img) {
        cli_error("out of memory");
        return -1;
    }
    /* the top layer alone, or a VM state, needs no backing file */
    cli_open_opts(&common, &opts,
                  (a->what == WHAT_LAYER && a->layer == 0) ||
                          a->what == WHAT_VMSTATE
                      ? QCOW2_OPEN_NO_BACKING
                      : 0);
    rc = qcow2_open(*img, a->file, &opts);
    if (rc == 0 && a->snapshot)
        rc = qcow2_snapshot_select(*img, a->snapshot);
    if (rc == 0 && a->salvage) {
        salv.file = a->file;
        rc = qcow2_set_salvage(*img, salvage_cb, &salv);
    }
    if (rc < 0) {
        cli_error_file(a->file, "%s", qcow2_errmsg(*img));
        return -1;
    }
    src->what = a->what;
    src->img = *img;
    if (a->what == WHAT_LAYER) {
        unsigned d;
        for (d = 0; d < a->layer && src->img; d++)
            src->img = qcow2_backing(src->img);
        if (!src->img) {
            cli_error_file(a->file, "no layer at depth %" PRIu64 ": the "
                           "chain has %u (depths 0 to %u)", a->layer, d,
                           d - 1);
            return -1;
        }
    }
    if (a->what == WHAT_VMSTATE) {
        struct qcow2_vmstate vm;
        rc = qcow2_snapshot_find(*img, a->vmstate);
        if (rc < 0) {
            cli_error_file(a->file, "snapshot '%s' not found", a->vmstate);
            return -1;
        }
        src->snap = (unsigned)rc;
        rc = qcow2_vmstate_get(*img, src->snap, &vm);
        if (rc < 0) {
            cli_error_file(a->file, "%s", qcow2_errmsg(*img));
            return -1;
        }
        src->size = vm.size;
    } else {
        src->size = qcow2_virtual_size(src->img);
    }
    return 0;
}

/* Every data extent of the source into out (holes stay holes), then the
 * output's size set and flushed. */
static int copy(const struct args *a, struct source *src, uint8_t *buf,
                struct qcow2_io *out, uint64_t *written)
{
    bool device = (out->caps & QCOW2_IO_CAP_FIXED_SIZE) != 0;
    uint64_t pos = 0;
    int rc;

    while (pos < src->size) {
        struct qcow2_extent ext;
        uint64_t end;

        rc = source_map(src, pos, &ext);
        if (rc < 0) {
            source_error(src, a->file);
            return -1;
        }
        end = pos + ext.length;
        if ((ext.flags & QCOW2_EXTENT_ZERO) ||
            !(ext.flags & QCOW2_EXTENT_DATA)) {
            /* a hole in a file; a device gets zeros (its own zeroing) */
            if (device && (rc = out->punch(out->ctx, pos, end - pos)) < 0) {
                cli_error_file(a->outfile, "cannot write zeros: %s",
                               qcow2_strerror(rc));
                return -1;
            }
            pos = end;
            continue;
        }
        while (pos < end) {
            size_t n = end - pos < CHUNK ? (size_t)(end - pos) : CHUNK;
            int64_t got = source_read(src, buf, n, pos);
            if (got < 0) {
                source_error(src, a->file);
                return -1;
            }
            if ((size_t)got != n) {
                cli_error_file(a->file, "short read at offset 0x%" PRIx64,
                               pos);
                return -1;
            }
            if (device) {
                int64_t w = out->pwrite(out->ctx, buf, n, pos);
                rc = w < 0 ? (int)w : 0;
                *written += n;
            } else {
                rc = write_sparse(out, buf, n, pos, written);
            }
            if (rc < 0) {
                cli_error_file(a->outfile, "write failed: %s",
                               qcow2_strerror(rc));
                return -1;
            }
            pos += n;
        }
    }
    /* a device keeps its size (bytes past the image stay as they were) */
    rc = device ? 0 : out->truncate(out->ctx, src->size);
    if (rc == 0)
        rc = out->flush(out->ctx);
    if (rc < 0) {
        cli_error_file(a->outfile, "cannot finish the file: %s",
                       qcow2_strerror(rc));
        return -1;
    }
    return 0;
}

/* All of buf to fd, however the kernel splits it.  Returns 0 or -errno. */
static int write_all(int fd, const uint8_t *buf, size_t len)
{
    while (len > 0) {
        ssize_t w = write(fd, buf, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -errno;
        if (w == 0)
            return -EIO;
        buf += w;
        len -= (size_t)w;
    }
    return 0;
}

/* OUTPUT "-": the whole content to standard output in order, zeros
 * written out (a pipe cannot seek).  zeros is CHUNK zero bytes. */
static int copy_stream(const struct args *a, struct source *src,
                       uint8_t *buf, const uint8_t *zeros,
                       uint64_t *written)
{
    uint64_t pos = 0;
    int rc;

    while (pos < src->size) {
        struct qcow2_extent ext;
        uint64_t end;
        bool hole;

        if (source_map(src, pos, &ext) < 0) {
            source_error(src, a->file);
            return -1;
        }
        end = pos + ext.length;
        hole = (ext.flags & QCOW2_EXTENT_ZERO) ||
               !(ext.flags & QCOW2_EXTENT_DATA);
        while (pos < end) {
            size_t n = end - pos < CHUNK ? (size_t)(end - pos) : CHUNK;
            if (!hole) {
                int64_t got = source_read(src, buf, n, pos);
                if (got < 0) {
                    source_error(src, a->file);
                    return -1;
                }
                if ((size_t)got != n) {
                    cli_error_file(a->file, "short read at offset 0x%"
                                   PRIx64, pos);
                    return -1;
                }
                *written += n;
            }
            rc = write_all(STDOUT_FILENO, hole ? zeros : buf, n);
            if (rc < 0) {
                cli_error_file(a->outfile, "write failed at offset %" PRIu64
                               ": %s", pos, strerror(-rc));
                return -1;
            }
            pos += n;
        }
    }
    return 0;
}

/* OUTPUT "-".  Returns the exit status. */
static int export_stream(const struct args *a, uint8_t *buf)
{
    struct qcow2_image *img = NULL;
    struct source src = {.what = WHAT_CHAIN};
    uint64_t written = 0;
    uint8_t *zeros = calloc(1, CHUNK);
    int status = QCHAIN_EXIT_FAILURE;

    /* a reader that goes away is an error to report, not a signal */
    signal(SIGPIPE, SIG_IGN);
    if (!zeros)
        cli_error("out of memory");
    else if (open_source(a, &img, &src) == 0 &&
             copy_stream(a, &src, buf, zeros, &written) == 0)
        status = a->salvage ? salvage_finish(a) : QCHAIN_EXIT_OK;
    free(zeros);
    qcow2_close(img);
    return status;
}

/* A device OUTPUT (opened, nothing written yet) must hold the image. */
static int device_fits(const struct args *a, const struct source *src,
                       struct qcow2_io *out)
{
    int64_t cap;
    char x[32], y[32];

    if (!(out->caps & QCOW2_IO_CAP_FIXED_SIZE))
        return 0;
    cap = out->size(out->ctx);
    if (cap >= 0 && (uint64_t)cap >= src->size)
        return 0;
    if (cap < 0)
        cli_error_file(a->outfile, "cannot get the size of the device: %s",
                       qcow2_strerror((int)cap));
    else
        cli_error_file(a->outfile, "is %s; the export needs %s (%" PRIu64
                       " bytes)", cli_size_str((uint64_t)cap, x, sizeof(x)),
                       cli_size_str(src->size, y, sizeof(y)), src->size);
    return -1;
}

static void report_json(const struct args *a, const struct source *src,
                        uint64_t written)
{
    struct json j;

    json_init(&j, stdout, true);
    json_object_begin(&j, NULL);
    json_string(&j, "filename", a->file);
    json_string(&j, "output", a->outfile);
    json_string(&j, "snapshot", a->snapshot);
    if (src->what == WHAT_LAYER) {
        json_u64(&j, "layer", a->layer);
        json_string(&j, "layer-filename", qcow2_filename(src->img));
    }
    if (src->what == WHAT_VMSTATE) {
        json_string(&j, "vmstate-snapshot", a->vmstate);
        json_u64(&j, "vm-state-size", src->size);
    } else {
        json_u64(&j, "virtual-size", src->size);
    }
    json_u64(&j, "data-bytes-written", written);
    if (salv.log)
        salvage_json(&j);
    json_object_end(&j);
    json_end(&j);
}

int main(int argc, char **argv)
{
    struct args a = {0};
    struct qcow2_image *img = NULL;
    struct qcow2_io out;
    struct source src = {.what = WHAT_CHAIN};
    uint64_t written = 0;
    uint8_t *buf = NULL;
    void *mem = NULL;
    char err[512], tmp[PATH_MAX + 32];
    struct stat st;
    bool device;
    int status = QCHAIN_EXIT_FAILURE, rc;

    cli_init("qchain-export", argv);
    parse_args(argc, argv, &a);
    if (!strcmp(a.outfile, "-")) {
        /* page-aligned: the kernel copies faster from aligned buffers */
        if (posix_memalign(&mem, 4096, CHUNK) != 0) {
            cli_error("out of memory");
            return QCHAIN_EXIT_FAILURE;
        }
        status = export_stream(&a, mem);
        free(mem);
        return status;
    }
    device = stat(a.outfile, &st) == 0 && S_ISBLK(st.st_mode);
    if (!device && access(a.outfile, F_OK) == 0) {
        cli_error_file(a.outfile, "already exists; qchain-export never "
                       "overwrites a file");
        return QCHAIN_EXIT_FAILURE;
    }
    /* page-aligned: the kernel copies faster into aligned buffers */
    if (posix_memalign(&mem, 4096, CHUNK) == 0)
        buf = mem;
    if (a.salvage && common.output == CLI_OUTPUT_JSON &&
        !(salv.log = tmpfile()))
        cli_error("cannot make a temporary file: %s", strerror(errno));
    else if (!buf)
        cli_error("out of memory");
    else if (open_source(&a, &img, &src) == 0) {
        /* a file is written under a temporary name and named when whole:
         * a power loss leaves the whole output or none */
        if ((device ? qcow2_io_open_file(a.outfile, QCOW2_IO_RDWR, &out, err,
                                         sizeof(err))
                    : qcow2_io_create_temp(a.outfile, 0, &out, tmp,
                                           sizeof(tmp), err,
                                           sizeof(err))) < 0) {
            cli_error_file(a.outfile, "cannot %s: %s",
                           device ? "open the device" : "create", err);
        } else {
            if (device_fits(&a, &src, &out) == 0 &&
                copy(&a, &src, buf, &out, &written) == 0)
                status = a.salvage ? salvage_finish(&a) : QCHAIN_EXIT_OK;
            out.close(out.ctx);
            if (status != QCHAIN_EXIT_FAILURE && !device &&
                (rc = qcow2_io_publish(tmp, a.outfile)) < 0) {
                cli_error_file(a.outfile, "cannot name the output: %s",
                               strerror(-rc));
                status = QCHAIN_EXIT_FAILURE;
            }
            if (status == QCHAIN_EXIT_FAILURE && !device)
                unlink(tmp); /* we made it */
            if (status != QCHAIN_EXIT_FAILURE &&
                common.output == CLI_OUTPUT_JSON)
                report_json(&a, &src, written);
        }
    }
    if (salv.log)
        fclose(salv.log);
    free(buf);
    qcow2_close(img);
    return status;
}
