/*
 * qchain-export - write the guest-visible content of an image (through its
 * backing chain), or of one of its internal snapshots, to a new raw file.
 *
 * The output is byte-identical to `qemu-img convert -O raw` (`-l SNAPSHOT`
 * for snapshots) and sparse where the guest sees zeros: ranges the chain
 * maps as zero or unallocated are never written, and neither are all-zero
 * 4 KiB blocks of data.  OUTPUT must not exist; on failure it is removed.
 */
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "json.h"

#define CHUNK (4u << 20)   /* bytes read per call: bounds memory */
#define ZERO_BLOCK 4096u   /* granularity of zero detection */

static void usage(void)
{
    printf("Usage: %s [OPTIONS] IMAGE OUTPUT\n"
           "Write the guest-visible content of IMAGE to the new raw file "
           "OUTPUT.\n\n"
           "  -s, --snapshot=SNAP  export internal snapshot SNAP (id or name)\n"
           "  -f, --format=FMT     format of IMAGE (qcow2 or raw)\n"
           "  -U, --force-share    read an image another process holds\n"
           "  --output=human|json  report format (default human); --json\n"
           "  -h, --help           this help\n"
           "  -V, --version        version\n\n"
           "OUTPUT is never overwritten; it is sparse where the guest sees "
           "zeros.\n",
           cli_progname());
}

static bool all_zero(const uint8_t *p, size_t n)
{
    static const uint8_t zeros[ZERO_BLOCK];
    while (n >= ZERO_BLOCK) {
        if (memcmp(p, zeros, ZERO_BLOCK) != 0)
            return false;
        p += ZERO_BLOCK;
        n -= ZERO_BLOCK;
    }
    return n == 0 || memcmp(p, zeros, n) == 0;
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
        if (all_zero(buf + i, n)) {
            i += n;
            continue;
        }
        /* extend over following non-zero blocks for one large write */
        j = i + n;
        while (j < len) {
            size_t m = len - j < ZERO_BLOCK ? len - j : ZERO_BLOCK;
            if (all_zero(buf + j, m))
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

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        CLI_COMMON_LONGOPTS,
        {"snapshot", required_argument, NULL, 's'},
        {NULL, 0, NULL, 0}};
    struct cli_common common = {0};
    struct qcow2_open_opts opts;
    struct qcow2_image *img = NULL;
    struct qcow2_io out;
    const char *snapshot = NULL, *file, *outfile;
    uint64_t size, pos = 0, written = 0;
    uint8_t *buf = NULL;
    char err[512];
    int opt, rc, status = QCHAIN_EXIT_FAILURE;
    bool created = false;

    cli_init("qchain-export", argv);
    while ((opt = getopt_long(argc, argv, CLI_COMMON_SHORTOPTS "s:",
                              longopts, NULL)) != -1) {
        if (cli_common_option(opt, optarg, &common, usage))
            continue;
        if (opt == 's')
            snapshot = optarg;
        else
            cli_usage_error("incorrect parameter");
    }
    if (argc - optind != 2)
        cli_usage_error(argc - optind < 2 ? "missing IMAGE or OUTPUT"
                                          : "too many arguments");
    file = argv[optind];
    outfile = argv[optind + 1];
    if (access(outfile, F_OK) == 0) {
        cli_error_file(outfile, "already exists; qchain-export never "
                       "overwrites a file");
        return QCHAIN_EXIT_FAILURE;
    }

    img = qcow2_new();
    buf = malloc(CHUNK);
    if (!img || !buf) {
        cli_error("out of memory");
        goto out;
    }
    cli_open_opts(&common, &opts, 0);
    rc = qcow2_open(img, file, &opts);
    if (rc == 0 && snapshot)
        rc = qcow2_snapshot_select(img, snapshot);
    if (rc < 0) {
        cli_error_file(file, "%s", qcow2_errmsg(img));
        goto out;
    }
    size = qcow2_virtual_size(img);

    rc = qcow2_io_open_file(outfile, QCOW2_IO_CREATE, &out, err, sizeof(err));
    if (rc < 0) {
        cli_error_file(outfile, "cannot create: %s", err);
        goto out;
    }
    created = true;

    while (pos < size) {
        struct qcow2_extent ext;
        uint64_t end;

        rc = qcow2_map(img, pos, size - pos, QCOW2_MAP_CHAIN, &ext);
        if (rc < 0) {
            cli_error_file(file, "%s", qcow2_errmsg(img));
            goto close_out;
        }
        end = pos + ext.length;
        if ((ext.flags & QCOW2_EXTENT_ZERO) ||
            !(ext.flags & QCOW2_EXTENT_DATA)) {
            pos = end; /* a hole in the output */
            continue;
        }
        while (pos < end) {
            size_t n = end - pos < CHUNK ? (size_t)(end - pos) : CHUNK;
            int64_t got = qcow2_pread(img, buf, n, pos);
            if (got < 0) {
                cli_error_file(file, "%s", qcow2_errmsg(img));
                goto close_out;
            }
            if ((size_t)got != n) {
                cli_error_file(file, "short read at guest offset 0x%" PRIx64,
                               pos);
                goto close_out;
            }
            rc = write_sparse(&out, buf, n, pos, &written);
            if (rc < 0) {
                cli_error_file(outfile, "write failed: %s",
                               qcow2_strerror(rc));
                goto close_out;
            }
            pos += n;
        }
    }
    rc = out.truncate(out.ctx, size);
    if (rc == 0)
        rc = out.flush(out.ctx);
    if (rc < 0) {
        cli_error_file(outfile, "cannot finish the file: %s",
                       qcow2_strerror(rc));
        goto close_out;
    }
    status = QCHAIN_EXIT_OK;
    if (common.output == CLI_OUTPUT_JSON) {
        struct json j;
        json_init(&j, stdout, true);
        json_object_begin(&j, NULL);
        json_string(&j, "filename", file);
        json_string(&j, "output", outfile);
        json_string(&j, "snapshot", snapshot);
        json_u64(&j, "virtual-size", size);
        json_u64(&j, "data-bytes-written", written);
        json_object_end(&j);
        json_end(&j);
    }
close_out:
    out.close(out.ctx);
out:
    if (status != QCHAIN_EXIT_OK && created)
        unlink(outfile);
    free(buf);
    qcow2_close(img);
    return status;
}
