/*
 * qchain-sum - a checksum of the guest-visible content of images (through
 * their backing chains), of an internal snapshot (-s), or of one layer
 * alone (--layer N), computed from the chain's extents: ranges that read as
 * zeros are hashed without being read.
 *
 * Default: the block hash of blkhash/blksum (the figure `blksum` prints for
 * a raw copy): the content cut into 64 KiB blocks (the last may be
 * shorter), digest = SHA-256(SHA-256(block 1) || ... || SHA-256(block N) ||
 * the content's length in bytes as 64-bit little-endian).  A block of zeros
 * has a constant inner digest, computed once per block length; the inner
 * digests of data are computed by threads (up to the cores), the outer hash
 * takes them in order.  --plain: SHA-256 of the content as one stream (what
 * sha256sum of the exported raw file prints); zeros are fed from a zero
 * buffer, never read.
 *
 * Reading: the content is taken in batches of up to 64 MiB, in which
 * blocks that are wholly zeros are only marked and the others (at most
 * 4 MiB of them) are read in runs into a buffer; the threads hash a batch
 * while the next one is read into a second buffer.
 *
 * Images are only ever opened read-only (read locks, none with -U).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "cli.h"
#include "holders.h"
#include "json.h"

#define BLOCK (64u << 10)  /* block of the block hash (blksum's default) */
#define CHUNK (4u << 20)   /* data buffered per batch (a multiple of BLOCK) */
#define NBLOCKS (CHUNK / BLOCK)  /* its blocks (slots) */
#define BATCH_BLOCKS 1024u /* content per batch: 64 MiB, zero blocks marked */
#define ZERO_RUN ((uint64_t)BATCH_BLOCKS * BLOCK) /* zeros hashed apart */
#define MD_LEN 32          /* SHA-256 */
#define MAX_THREADS 16

static void usage(void)
{
    printf("Usage: %s [OPTIONS] IMAGE...\n"
           "Print a checksum of the guest-visible content of each IMAGE.\n\n"
           "  -s, --snapshot=SNAP  of internal snapshot SNAP (id or name)\n"
           "  --layer=N            of what the layer at depth N of the chain "
           "holds by\n"
           "                       itself (0 = IMAGE), zeros where it "
           "allocates nothing\n"
           "  --plain              SHA-256 of the content as one stream (as "
           "sha256sum of\n"
           "                       a raw copy); default: blksum's block hash "
           "(SHA-256,\n"
           "                       64 KiB blocks)\n"
           "  -f, --format=FMT     format of the images (qcow2 or raw)\n"
           "  -U, --force-share    read an image another process holds\n"
           "  --output=human|json  report format (default human); --json\n"
           "  -h, --help           this help\n"
           "  -V, --version        version\n",
           cli_progname());
}

/* What is hashed: the guest view through the chain (or a snapshot of the
 * top image), or one layer alone. */
struct source {
    bool layer_only;
    struct qcow2_image *img; /* the image read: the top, or layer N */
    uint64_t size;
};

static int source_map(const struct source *src, uint64_t pos,
                      struct qcow2_extent *ext)
{
    return qcow2_map(src->img, pos, src->size - pos,
                     src->layer_only ? 0 : QCOW2_MAP_CHAIN, ext);
}

static int64_t source_read(const struct source *src, void *buf, size_t n,
                           uint64_t pos)
{
    return src->layer_only ? qcow2_layer_pread(src->img, buf, n, pos)
                           : qcow2_pread(src->img, buf, n, pos);
}

static bool extent_is_zero(const struct qcow2_extent *e)
{
    return (e->flags & QCOW2_EXTENT_ZERO) || !(e->flags & QCOW2_EXTENT_DATA);
}

/* ------------------------------------------------------------- hashing */

static const uint8_t zeros[CHUNK];

struct hasher;

/* One thread's share of a batch: blocks first, first + step, ... (with
 * --plain the whole batch, fed to the stream) */
struct share {
    struct hasher *h;
    struct batch *b;
    unsigned first, step;
    int rc;
};

/*
 * A range of content read and handed to the threads: while they hash it,
 * the next is read into the other batch.  Up to BATCH_BLOCKS blocks, of
 * which only those not wholly zeros are in buf, one slot of BLOCK bytes
 * each, in order (so a run of such blocks is contiguous in buf); the
 * others are only marked.  With --plain every block has its slot (slot i
 * holds block i: buf is the content).
 */
struct batch {
    uint8_t *buf;                   /* NBLOCKS slots, page-aligned */
    size_t len;                     /* content bytes */
    unsigned nslots;                /* slots used */
    bool pending;                   /* threads started, not yet joined */
    unsigned nt;
    int16_t slot[BATCH_BLOCKS];     /* block -> slot, -1: all zeros */
    uint8_t digests[BATCH_BLOCKS][MD_LEN];
    struct share sh[MAX_THREADS];
    pthread_t tid[MAX_THREADS];
    bool started[MAX_THREADS];
};

struct hasher {
    bool plain;
    const EVP_MD *md;
    EVP_MD_CTX *outer;              /* the stream, or the outer hash */
    uint8_t zero_md[MD_LEN];        /* digest of a zero block of BLOCK */
    unsigned nthreads;
};

static int block_digest(const EVP_MD *md, const uint8_t *p, size_t n,
                        uint8_t *out)
{
    return EVP_Digest(p, n, out, NULL, md, NULL) == 1 ? 0 : -1;
}

static void *hash_share(void *arg)
{
    struct share *s = arg;
    const struct batch *b = s->b;
    unsigned i, nb = (unsigned)((b->len + BLOCK - 1) / BLOCK);

    s->rc = 0;
    if (s->h->plain) {
        s->rc = EVP_DigestUpdate(s->h->outer, b->buf, b->len) == 1 ? 0 : -1;
        return NULL;
    }
    for (i = s->first; i < nb && s->rc == 0; i += s->step) {
        size_t off = (size_t)i * BLOCK;
        size_t n = b->len - off < BLOCK ? b->len - off : BLOCK;
        const uint8_t *p =
            b->slot[i] < 0 ? NULL : b->buf + (size_t)b->slot[i] * BLOCK;
        /* zeros (also in data clusters): the constant digest */
        if (!p || (n == BLOCK && qcow2_buffer_is_zero(p, n)))
            memcpy(s->b->digests[i], s->h->zero_md, MD_LEN);
        else
            s->rc = block_digest(s->h->md, p, n, s->b->digests[i]);
    }
    return NULL;
}

/* Start hashing the len bytes of data in b (at a block boundary): its
 * blocks shared out to the threads (one thread takes the stream with
 * --plain); a share no thread could take is done here and now. */
static void batch_start(struct hasher *h, struct batch *b, size_t len)
{
    unsigned nb = (unsigned)((len + BLOCK - 1) / BLOCK), i;

    b->len = len;
    b->nt = h->plain ? 1 : h->nthreads < nb ? h->nthreads : nb;
    for (i = 0; i < b->nt; i++) {
        b->sh[i] = (struct share){h, b, i, b->nt, 0};
        b->started[i] =
            pthread_create(&b->tid[i], NULL, hash_share, &b->sh[i]) == 0;
        if (!b->started[i])
            hash_share(&b->sh[i]);
    }
    b->pending = true;
}

/* Wait for b's threads; the inner digests then go to the outer hash in
 * order.  Nothing to do when b is not pending. */
static int batch_finish(struct hasher *h, struct batch *b)
{
    unsigned i;
    int rc = 0;

    if (!b->pending)
        return 0;
    b->pending = false;
    for (i = 0; i < b->nt; i++) {
        if (b->started[i])
            pthread_join(b->tid[i], NULL);
        if (b->sh[i].rc < 0)
            rc = -1;
    }
    if (rc == 0 && !h->plain &&
        EVP_DigestUpdate(h->outer, b->digests,
                         (b->len + BLOCK - 1) / BLOCK * MD_LEN) != 1)
        rc = -1;
    return rc;
}

/* len bytes of zeros at a block boundary: whole blocks, and a short last
 * block only at the end of the content. */
static int hash_zeros(struct hasher *h, uint64_t len)
{
    uint8_t digests[NBLOCKS][MD_LEN];

    while (len > 0) {
        size_t n = len < CHUNK ? (size_t)len : CHUNK;
        if (h->plain) {
            if (EVP_DigestUpdate(h->outer, zeros, n) != 1)
                return -1;
        } else if (n >= BLOCK) {
            n -= n % BLOCK;
            for (size_t i = 0; i < n / BLOCK; i++)
                memcpy(digests[i], h->zero_md, MD_LEN);
            if (EVP_DigestUpdate(h->outer, digests, n / BLOCK * MD_LEN) != 1)
                return -1;
        } else {
            uint8_t md[MD_LEN]; /* the short last block's own digest */
            if (block_digest(h->md, zeros, n, md) < 0 ||
                EVP_DigestUpdate(h->outer, md, MD_LEN) != 1)
                return -1;
        }
        len -= n;
    }
    return 0;
}

static int hasher_start(struct hasher *h)
{
    long cores = sysconf(_SC_NPROCESSORS_ONLN);

    h->md = EVP_sha256();
    h->outer = EVP_MD_CTX_new();
    h->nthreads = cores < 1 ? 1 : cores > MAX_THREADS ? MAX_THREADS
                                                      : (unsigned)cores;
    if (!h->outer || EVP_DigestInit_ex(h->outer, h->md, NULL) != 1 ||
        block_digest(h->md, zeros, BLOCK, h->zero_md) < 0)
        return -1;
    return 0;
}

/* The final digest into hex (65 bytes). */
static int hasher_finish(struct hasher *h, uint64_t size, char *hex)
{
    uint8_t md[EVP_MAX_MD_SIZE], le[8];
    unsigned n = 0, i;

    for (i = 0; i < 8; i++)
        le[i] = (uint8_t)(size >> (8 * i));
    if ((!h->plain && EVP_DigestUpdate(h->outer, le, sizeof(le)) != 1) ||
        EVP_DigestFinal_ex(h->outer, md, &n) != 1 || n != MD_LEN)
        return -1;
    for (i = 0; i < n; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    return 0;
}

/* ------------------------------------------------------------- walking */

/*
 * The zeros at pos: the length of the run of zero extents there (0 when
 * pos is data), looked at until it reaches limit bytes or the end.
 */
static int zero_len(const struct source *src, const char *file, uint64_t pos,
                    uint64_t limit, uint64_t *len)
{
    uint64_t cur = pos;

    while (cur < src->size && cur - pos < limit) {
        struct qcow2_extent ext;
        if (source_map(src, cur, &ext) < 0) {
            cli_error_file(file, "%s", qcow2_errmsg(src->img));
            return -1;
        }
        if (!extent_is_zero(&ext))
            break;
        cur += ext.length;
    }
    *len = cur - pos;
    return 0;
}

/* How much of n bytes at cur (data, or zeros to be marked) a batch with
 * room free slots can take: all, or up to the block boundary where its
 * slots run out (0: nothing). */
static uint64_t fit(unsigned room, uint64_t cur, uint64_t n, bool zero)
{
    uint64_t first = (cur + BLOCK - 1) / BLOCK; /* first block begun here */
    uint64_t last = (cur + n + BLOCK - 1) / BLOCK; /* begun: [first, last) */

    if (zero) { /* whole blocks only marked; a partial one begun, a slot */
        uint64_t t = (cur + n) / BLOCK * BLOCK; /* the last block's start */
        return (cur + n) % BLOCK == 0 || t < cur || room > 0 ? n : t - cur;
    }
    if (last - first <= room)
        return n;
    return (first + room) * BLOCK - cur;
}

/* The buffer address of content offset cur (its block has a slot). */
static uint8_t *at(const struct batch *b, uint64_t pos, uint64_t cur)
{
    size_t blk = (size_t)((cur - pos) / BLOCK);

    return b->buf + (size_t)b->slot[blk] * BLOCK + (size_t)(cur % BLOCK);
}

/* Slots for the blocks that begin in [cur, cur + n); with mark_zero, the
 * whole blocks there marked as zeros instead. */
static void assign(struct batch *b, uint64_t pos, uint64_t cur, uint64_t n,
                   bool mark_zero)
{
    uint64_t blk, e = cur - pos + n;

    for (blk = (cur - pos + BLOCK - 1) / BLOCK; blk * BLOCK < e; blk++) {
        if (mark_zero && (blk + 1) * BLOCK <= e)
            b->slot[blk] = -1;
        else
            b->slot[blk] = (int16_t)b->nslots++;
    }
}

/* n bytes of zeros at cur: whole blocks marked (with --plain set, as all
 * the rest), a block's head or tail set in its slot. */
static void put_zeros(struct batch *b, bool plain, uint64_t pos,
                      uint64_t cur, uint64_t n)
{
    uint64_t head = (BLOCK - cur % BLOCK) % BLOCK, tail;

    assign(b, pos, cur, n, !plain);
    if (plain || n <= head) {
        memset(at(b, pos, cur), 0, (size_t)n);
        return;
    }
    if (head)
        memset(at(b, pos, cur), 0, (size_t)head);
    tail = (cur + n) % BLOCK;
    if (tail)
        memset(at(b, pos, cur + n - tail), 0, (size_t)tail);
}

/*
 * Read the content from pos (a block boundary) into batch b, up to
 * BATCH_BLOCKS blocks (with --plain NBLOCKS) or until its slots run out:
 * data read, whole blocks of zeros only marked (set with --plain), the
 * zero head or tail of a block set; stopping before a run of zeros that
 * starts at a block boundary and is ZERO_RUN long (or runs to the end),
 * which the caller hashes apart.  Zero runs are measured over consecutive
 * extents (a map call stops at an L2 table's end: 32 KiB of guest with
 * 512-byte clusters).  Returns the bytes of content taken (0 when pos
 * starts such a run), or -1 (said).
 */
static int64_t fill(const struct source *src, const char *file,
                    struct batch *b, bool plain, uint64_t pos)
{
    uint64_t lim = (uint64_t)(plain ? NBLOCKS : BATCH_BLOCKS) * BLOCK;
    uint64_t end = src->size - pos < lim ? src->size : pos + lim;
    uint64_t cur = pos, n;

    b->nslots = 0;
    while (cur < end) {
        if (zero_len(src, file, cur, ZERO_RUN, &n) < 0)
            return -1;
        if (n > 0) {
            if (cur % BLOCK == 0 &&
                (n >= ZERO_RUN || cur + n == src->size))
                break;
            n = fit(NBLOCKS - b->nslots, cur,
                    n < end - cur ? n : end - cur, !plain);
            if (n == 0)
                break;
            put_zeros(b, plain, pos, cur, n);
        } else {
            struct qcow2_extent ext;
            int64_t got;
            if (source_map(src, cur, &ext) < 0) {
                cli_error_file(file, "%s", qcow2_errmsg(src->img));
                return -1;
            }
            n = fit(NBLOCKS - b->nslots, cur,
                    ext.length < end - cur ? ext.length : end - cur, false);
            if (n == 0)
                break;
            assign(b, pos, cur, n, false);
            got = source_read(src, at(b, pos, cur), (size_t)n, cur);
            if (got < 0) {
                cli_error_file(file, "%s", qcow2_errmsg(src->img));
                return -1;
            }
            if ((uint64_t)got != n) {
                cli_error_file(file, "short read at offset 0x%" PRIx64, cur);
                return -1;
            }
        }
        cur += n;
    }
    return (int64_t)(cur - pos);
}

/* The zero run at pos (a block boundary, ZERO_RUN long or to the end): its
 * whole blocks, or all the rest when it runs to the end. */
static int64_t zero_run(const struct source *src, const char *file,
                        uint64_t pos)
{
    uint64_t n;

    if (zero_len(src, file, pos, UINT64_MAX, &n) < 0)
        return -1;
    if (pos + n >= src->size)
        return (int64_t)(src->size - pos);
    if (n < BLOCK) { /* fill saw a run here: the image changed under us? */
        cli_error_file(file, "the map changed at offset 0x%" PRIx64, pos);
        return -1;
    }
    return (int64_t)(n - n % BLOCK);
}

/* Walk the content: data hashed as read (a chunk hashed by the threads
 * while the next is read into the other batch), zero ranges without
 * reading (after the data before them). */
static int walk(const struct source *src, const char *file,
                struct hasher *h, struct batch *bt)
{
    uint64_t pos = 0;
    unsigned cur = 0;
    int rc = 0;

    while (rc == 0 && pos < src->size) {
        struct batch *b = &bt[cur], *prev = &bt[cur ^ 1];
        int64_t n = fill(src, file, b, h->plain, pos);
        if (n < 0) {
            rc = -1;
            break;
        }
        if (batch_finish(h, prev) < 0) {
            rc = -2;
            break;
        }
        if (n > 0) {
            batch_start(h, b, (size_t)n);
            cur ^= 1;
        } else {
            n = zero_run(src, file, pos);
            if (n < 0)
                rc = -1;
            else if (hash_zeros(h, (uint64_t)n) < 0)
                rc = -2;
        }
        pos += (uint64_t)n;
    }
    /* no thread is left running on a buffer, also after a failure */
    if (batch_finish(h, &bt[0]) < 0 && rc == 0)
        rc = -2;
    if (batch_finish(h, &bt[1]) < 0 && rc == 0)
        rc = -2;
    return rc;
}

/* The checksum of src into hex, or -1 (said).  bufs: two buffers of CHUNK
 * bytes. */
static int sum_source(const struct source *src, const char *file, bool plain,
                      uint8_t *bufs, char *hex)
{
    struct hasher *h = calloc(1, sizeof(*h));
    struct batch *bt = calloc(2, sizeof(*bt));
    int rc = -2;

    if (!h || !bt) {
        cli_error("out of memory");
        free(h);
        free(bt);
        return -1;
    }
    h->plain = plain;
    bt[0].buf = bufs;
    bt[1].buf = bufs + CHUNK;
    if (hasher_start(h) == 0)
        rc = walk(src, file, h, bt);
    if (rc == 0 && hasher_finish(h, src->size, hex) < 0)
        rc = -2;
    if (rc == -2)
        cli_error_file(file, "SHA-256 failed (OpenSSL)");
    EVP_MD_CTX_free(h->outer);
    free(bt);
    free(h);
    return rc < 0 ? -1 : 0;
}

/* ------------------------------------------------------------- main */

struct args {
    const char *snapshot;
    uint64_t layer;
    bool layer_only, plain;
};

static struct cli_common common;

static void parse_args(int argc, char **argv, struct args *a)
{
    enum { OPT_LAYER = 0x2000, OPT_PLAIN };
    static const struct option longopts[] = {
        CLI_COMMON_LONGOPTS,
        {"snapshot", required_argument, NULL, 's'},
        {"layer", required_argument, NULL, OPT_LAYER},
        {"plain", no_argument, NULL, OPT_PLAIN},
        {NULL, 0, NULL, 0}};
    int opt;

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
            a->layer_only = true;
            break;
        case OPT_PLAIN:
            a->plain = true;
            break;
        default:
            cli_bad_option(opt);
        }
    }
    if (a->snapshot && a->layer_only)
        cli_usage_error("--snapshot and --layer exclude each other");
    if (optind >= argc)
        cli_usage_error("missing IMAGE");
}

/* Open one image read-only (read locks, none with -U) and find what is
 * hashed.  *img is the caller's to close. */
static int open_source(const struct args *a, const char *file,
                       struct qcow2_image **img, struct source *src)
{
    struct qcow2_open_opts opts;
    unsigned d;
    int rc;

    *img = qcow2_new();
    if (!*img) {
        cli_error("out of memory");
        return -1;
    }
    cli_open_opts(&common, &opts, 0);
    rc = qcow2_open(*img, file, &opts);
    if (rc == -EBUSY) {
        /* which file of the chain a VM holds, who holds it */
        char *msg = strdup(qcow2_errmsg(*img));
        qcow2_close(*img);
        *img = NULL;
        cli_busy_error(file, common.format, 0, msg ? msg : "in use",
                       "stop the VM, or use -U");
        free(msg);
        return -1;
    }
    if (rc == 0 && a->snapshot)
        rc = qcow2_snapshot_select(*img, a->snapshot);
    if (rc < 0) {
        cli_error_file(file, "%s", qcow2_errmsg(*img));
        return -1;
    }
    src->layer_only = a->layer_only;
    src->img = *img;
    for (d = 0; a->layer_only && d < a->layer && src->img; d++)
        src->img = qcow2_backing(src->img);
    if (!src->img) {
        cli_error_file(file, "no layer at depth %" PRIu64 ": the chain has "
                       "%u (depths 0 to %u)", a->layer, d, d - 1);
        return -1;
    }
    src->size = qcow2_virtual_size(src->img);
    return 0;
}

int main(int argc, char **argv)
{
    struct args a = {0};
    struct json j;
    void *mem = NULL;
    int status = QCHAIN_EXIT_OK, i;

    cli_init("qchain-sum", argv);
    parse_args(argc, argv, &a);
    /* two buffers (one read while the other is hashed), page-aligned: the
     * kernel copies faster into aligned buffers */
    if (posix_memalign(&mem, 4096, 2 * (size_t)CHUNK) != 0) {
        cli_error("out of memory");
        return QCHAIN_EXIT_FAILURE;
    }
    if (common.output == CLI_OUTPUT_JSON) {
        json_init(&j, stdout, true);
        json_array_begin(&j, NULL);
    }
    /* as sha256sum: every image, a failure said and the next one tried */
    for (i = optind; i < argc; i++) {
        struct qcow2_image *img = NULL;
        struct source src;
        char hex[2 * MD_LEN + 1];

        if (open_source(&a, argv[i], &img, &src) < 0 ||
            sum_source(&src, argv[i], a.plain, mem, hex) < 0) {
            status = QCHAIN_EXIT_FAILURE;
        } else if (common.output == CLI_OUTPUT_JSON) {
            json_object_begin(&j, NULL);
            json_string(&j, "filename", argv[i]);
            json_string(&j, "checksum", hex);
            json_string(&j, "algorithm", "sha256");
            if (!a.plain)
                json_u64(&j, "block-size", BLOCK);
            json_u64(&j, "virtual-size", src.size);
            json_object_end(&j);
        } else {
            printf("%s  %s\n", hex, argv[i]);
            fflush(stdout);
        }
        qcow2_close(img);
    }
    if (common.output == CLI_OUTPUT_JSON) {
        json_array_end(&j);
        json_end(&j);
    }
    free(mem);
    if (fflush(stdout) != 0) {
        cli_error("cannot write the output: %s", strerror(errno));
        status = QCHAIN_EXIT_FAILURE;
    }
    return status;
}
