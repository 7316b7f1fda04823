/*
 * test_backing.c - backing names (backing.c) and opening chains
 * (image.c): QEMU's path_combine and protocol rules, loop detection by
 * file identity, the depth cap, refused names, missing files.
 *
 * Chains are served from memory through opts.open_file.  The memory
 * backend has no identity, so loop tests wrap it in a backend that reports
 * an inode per name, letting two names stand for the same file.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "imgbuild.h"
#include "internal.h"

/* ---- q2_path_combine / q2_name_has_protocol ---- */

static void expect_combine(const char *base, const char *name,
                           const char *want)
{
    char *got = q2_path_combine(base, name);

    failure("q2_path_combine(\"%s\", \"%s\")", base, name);
    EXPECT_EQ_STR(got, want);
    free(got);
}

TEST(path_combine_relative)
{
    expect_combine("a/b/c.qcow2", "../x", "a/b/../x");
    expect_combine("a/b/c.qcow2", "x.qcow2", "a/b/x.qcow2");
    expect_combine("a/b/c.qcow2", "d/x.qcow2", "a/b/d/x.qcow2");
    expect_combine("/abs/dir/top.qcow2", "base.qcow2", "/abs/dir/base.qcow2");
    expect_combine("dir/", "x", "dir/x");
    expect_combine("./top.qcow2", "base", "./base");
}

TEST(path_combine_no_slash_base)
{
    expect_combine("c.qcow2", "x.qcow2", "x.qcow2");
    expect_combine("c.qcow2", "../x", "../x");
    expect_combine("", "x", "x");
}

TEST(path_combine_absolute_name)
{
    expect_combine("a/b/c.qcow2", "/images/base.qcow2", "/images/base.qcow2");
    expect_combine("c.qcow2", "/x", "/x");
}

TEST(path_combine_protocol_name)
{
    expect_combine("a/b/c.qcow2", "json:{\"file\":{}}", "json:{\"file\":{}}");
    expect_combine("a/b/c.qcow2", "nbd:host:10809", "nbd:host:10809");
    expect_combine("a/b/c.qcow2", "foo:bar", "foo:bar");
    failure("\"./foo:bar\" is a plain relative name");
    expect_combine("a/b/c.qcow2", "./foo:bar", "a/b/./foo:bar");
}

TEST(name_has_protocol)
{
    static const struct {
        const char *name;
        bool protocol;
    } cases[] = {
        {"json:{\"driver\":\"qcow2\"}", true},
        {"nbd:host", true},
        {"nbd://host/export", true},
        {"foo:bar", true},
        {"foo:bar/baz", true},
        {":", true},
        {"./foo:bar", false},
        {"dir/foo:bar", false},
        {"/abs/foo:bar", false},
        {"plain.qcow2", false},
        {"", false},
    };
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        failure("q2_name_has_protocol(\"%s\")", cases[i].name);
        EXPECT_EQ_INT(q2_name_has_protocol(cases[i].name), cases[i].protocol);
    }
}

/* ---- chains ---- */

/* Add to fs an empty v3 image of 64 KiB named `name` whose backing file
 * is `backing` (NULL: none). */
static void add_layer(struct memfs *fs, const char *name, const char *backing,
                      const char *fmt)
{
    struct qimg q;

    qimg_init(&q, 3, 9, 64 * 1024, 0);
    if (backing)
        qimg_backing(&q, backing, fmt);
    memfs_add_img(fs, name, &q);
    qimg_free(&q);
}

static unsigned chain_len(const struct qcow2_image *img)
{
    unsigned n = 0;

    for (; img; img = qcow2_backing(img))
        n++;
    return n;
}

TEST(chain_relative_resolution)
{
    struct memfs fs;
    struct qcow2_open_opts o;
    struct qcow2_image *img, *b;
    struct qcow2_info info;

    memset(&fs, 0, sizeof(fs));
    add_layer(&fs, "vm/disks/top.qcow2", "../base/mid.qcow2", "qcow2");
    add_layer(&fs, "vm/disks/../base/mid.qcow2", "base.qcow2", "qcow2");
    add_layer(&fs, "vm/disks/../base/base.qcow2", NULL, NULL);
    memfs_opts(&fs, &o);
    REQUIRE_EQ_INT(memfs_open_image(&fs, "vm/disks/top.qcow2", &o, &img), 0);
    EXPECT_EQ_INT(chain_len(img), 3);
    REQUIRE_EQ_INT(qcow2_info_get(img, &info), 0);
    EXPECT_EQ_STR(info.backing_name, "../base/mid.qcow2");
    EXPECT_EQ_STR(info.backing_format, "qcow2");
    EXPECT_EQ_STR(info.backing_path, "vm/disks/../base/mid.qcow2");
    b = qcow2_backing(img);
    REQUIRE_TRUE(b);
    EXPECT_EQ_STR(qcow2_filename(b), "vm/disks/../base/mid.qcow2");
    REQUIRE_EQ_INT(qcow2_info_get(b, &info), 0);
    EXPECT_EQ_STR(info.backing_path, "vm/disks/../base/base.qcow2");
    EXPECT_EQ_STR(qcow2_filename(qcow2_backing(b)),
                  "vm/disks/../base/base.qcow2");
    EXPECT_EQ_INT(fs.opens, 3);
    qcow2_close(img);
    memfs_free(&fs);
}

TEST(chain_absolute_name)
{
    struct memfs fs;
    struct qcow2_open_opts o;
    struct qcow2_image *img;

    memset(&fs, 0, sizeof(fs));
    add_layer(&fs, "d/top.qcow2", "/srv/base.qcow2", NULL);
    add_layer(&fs, "/srv/base.qcow2", NULL, NULL);
    memfs_opts(&fs, &o);
    REQUIRE_EQ_INT(memfs_open_image(&fs, "d/top.qcow2", &o, &img), 0);
    EXPECT_EQ_INT(chain_len(img), 2);
    EXPECT_EQ_STR(fs.last, "/srv/base.qcow2");
    qcow2_close(img);
    memfs_free(&fs);
}

TEST(chain_dot_slash_colon_name_followed)
{
    struct memfs fs;
    struct qcow2_open_opts o;
    struct qcow2_image *img;

    memset(&fs, 0, sizeof(fs));
    add_layer(&fs, "top.qcow2", "./foo:bar.qcow2", NULL);
    add_layer(&fs, "./foo:bar.qcow2", NULL, NULL);
    memfs_opts(&fs, &o);
    REQUIRE_EQ_INT(memfs_open_image(&fs, "top.qcow2", &o, &img), 0);
    EXPECT_EQ_INT(chain_len(img), 2);
    qcow2_close(img);
    memfs_free(&fs);
}

static void expect_refused(const char *backing)
{
    struct memfs fs;
    struct qcow2_open_opts o;
    struct qcow2_image *img;

    memset(&fs, 0, sizeof(fs));
    add_layer(&fs, "top.qcow2", backing, NULL);
    add_layer(&fs, backing, NULL, NULL); /* even if it "exists" */
    memfs_opts(&fs, &o);
    failure("backing name \"%s\"", backing);
    EXPECT_EQ_INT(memfs_open_image(&fs, "top.qcow2", &o, &img), -ENOTSUP);
    failure("backing name \"%s\"", backing);
    EXPECT_CONTAINS(qcow2_errmsg(img), backing);
    failure("backing name \"%s\" was opened", backing);
    EXPECT_EQ_INT(fs.opens, 1);
    qcow2_close(img);
    memfs_free(&fs);
}

TEST(chain_json_name_refused)
{
    expect_refused("json:{\"driver\":\"qcow2\",\"file\":{\"driver\":"
                   "\"file\",\"filename\":\"base.qcow2\"}}");
}

TEST(chain_protocol_names_refused)
{
    expect_refused("nbd:localhost:10809");
    expect_refused("foo:bar.qcow2");
}

TEST(chain_protocol_name_kept_without_backing)
{
    struct memfs fs;
    struct qcow2_open_opts o;
    struct qcow2_image *img;
    struct qcow2_info info;

    memset(&fs, 0, sizeof(fs));
    add_layer(&fs, "top.qcow2", "nbd:host", NULL);
    memfs_opts(&fs, &o);
    o.flags = QCOW2_OPEN_NO_BACKING;
    REQUIRE_EQ_INT(memfs_open_image(&fs, "top.qcow2", &o, &img), 0);
    REQUIRE_EQ_INT(qcow2_info_get(img, &info), 0);
    EXPECT_EQ_STR(info.backing_name, "nbd:host");
    EXPECT_TRUE(info.backing_path == NULL);
    qcow2_close(img);
    memfs_free(&fs);
}

TEST(chain_missing_backing)
{
    struct memfs fs;
    struct qcow2_open_opts o;
    struct qcow2_image *img;

    memset(&fs, 0, sizeof(fs));
    add_layer(&fs, "imgs/top.qcow2", "mid.qcow2", NULL);
    add_layer(&fs, "imgs/mid.qcow2", "gone.qcow2", NULL);
    memfs_opts(&fs, &o);
    EXPECT_EQ_INT(memfs_open_image(&fs, "imgs/top.qcow2", &o, &img), -ENOENT);
    EXPECT_CONTAINS(qcow2_errmsg(img), "'imgs/gone.qcow2'");
    EXPECT_CONTAINS(qcow2_errmsg(img), "of 'imgs/mid.qcow2'");
    EXPECT_CONTAINS(qcow2_errmsg(img), "does not exist");
    failure("the message shows the chain so far");
    EXPECT_CONTAINS(qcow2_errmsg(img), "'imgs/top.qcow2' -> 'imgs/mid.qcow2'");
    failure("a failed handle is not usable");
    EXPECT_TRUE(qcow2_backing(img) == NULL);
    qcow2_close(img);
    memfs_free(&fs);
}

TEST(chain_no_backing_flag)
{
    struct memfs fs;
    struct qcow2_open_opts o;
    struct qcow2_image *img;
    struct qcow2_info info;

    memset(&fs, 0, sizeof(fs));
    add_layer(&fs, "d/top.qcow2", "gone.qcow2", NULL);
    memfs_opts(&fs, &o);
    o.flags = QCOW2_OPEN_NO_BACKING;
    REQUIRE_EQ_INT(memfs_open_image(&fs, "d/top.qcow2", &o, &img), 0);
    EXPECT_TRUE(qcow2_backing(img) == NULL);
    REQUIRE_EQ_INT(qcow2_info_get(img, &info), 0);
    failure("the resolved name is known without opening it");
    EXPECT_EQ_STR(info.backing_path, "d/gone.qcow2");
    EXPECT_EQ_INT(fs.opens, 1);
    qcow2_close(img);
    memfs_free(&fs);
}

TEST(chain_bad_backing_layer)
{
    struct memfs fs;
    struct qcow2_open_opts o;
    struct qcow2_image *img;
    struct qimg q;

    memset(&fs, 0, sizeof(fs));
    add_layer(&fs, "top.qcow2", "base.qcow2", "qcow2");
    qimg_init(&q, 3, 9, 64 * 1024, 0);
    qimg_finish(&q);
    qimg_put32(&q, 4, 9); /* version 9 */
    memfs_add_img(&fs, "base.qcow2", &q);
    qimg_free(&q);
    memfs_opts(&fs, &o);
    EXPECT_EQ_INT(memfs_open_image(&fs, "top.qcow2", &o, &img), -ENOTSUP);
    EXPECT_CONTAINS(qcow2_errmsg(img), "backing file 'base.qcow2'");
    EXPECT_CONTAINS(qcow2_errmsg(img), "version 9");
    qcow2_close(img);
    memfs_free(&fs);
}

static int warnings;
static char last_warning[1024];

static void on_warn(void *ctx, const char *msg)
{
    (void)ctx;
    warnings++;
    snprintf(last_warning, sizeof(last_warning), "%s", msg);
}

TEST(chain_probed_format_warns)
{
    struct memfs fs;
    struct qcow2_open_opts o;
    struct qcow2_image *img;
    uint8_t raw[4096];

    memset(&fs, 0, sizeof(fs));
    memset(raw, 1, sizeof(raw));
    add_layer(&fs, "top.qcow2", "base.img", NULL);
    memfs_add(&fs, "base.img", raw, sizeof(raw));
    memfs_opts(&fs, &o);
    o.warn = on_warn;
    warnings = 0;
    REQUIRE_EQ_INT(memfs_open_image(&fs, "top.qcow2", &o, &img), 0);
    EXPECT_EQ_INT(warnings, 1);
    EXPECT_CONTAINS(last_warning, "not recorded");
    EXPECT_CONTAINS(last_warning, "raw");
    qcow2_close(img);
    memfs_free(&fs);
}

TEST(depth_cap)
{
    struct memfs fs;
    struct qcow2_open_opts o;
    struct qcow2_image *img;

    memset(&fs, 0, sizeof(fs));
    add_layer(&fs, "l0", "l1", NULL);
    add_layer(&fs, "l1", "l2", NULL);
    add_layer(&fs, "l2", "l3", NULL);
    add_layer(&fs, "l3", NULL, NULL);
    memfs_opts(&fs, &o);
    o.max_depth = 3;
    failure("three layers below the top: exactly the cap");
    REQUIRE_EQ_INT(memfs_open_image(&fs, "l0", &o, &img), 0);
    EXPECT_EQ_INT(chain_len(img), 4);
    qcow2_close(img);
    o.max_depth = 2;
    EXPECT_EQ_INT(memfs_open_image(&fs, "l0", &o, &img), -ELOOP);
    EXPECT_CONTAINS(qcow2_errmsg(img), "deeper than 2");
    qcow2_close(img);
    memfs_free(&fs);
}

TEST(self_reference_without_identity)
{
    struct memfs fs;
    struct qcow2_open_opts o;
    struct qcow2_image *img;

    /* no identity to compare: the default depth cap ends the loop */
    memset(&fs, 0, sizeof(fs));
    add_layer(&fs, "self.qcow2", "self.qcow2", NULL);
    memfs_opts(&fs, &o);
    EXPECT_EQ_INT(memfs_open_image(&fs, "self.qcow2", &o, &img), -ELOOP);
    EXPECT_CONTAINS(qcow2_errmsg(img), "deeper than 256");
    EXPECT_EQ_INT(fs.opens, 1 + QCOW2_DEFAULT_MAX_DEPTH);
    qcow2_close(img);
    memfs_free(&fs);
}

/* ---- a backend with identity: memfs files plus an inode per name ---- */

struct ident_ctx {
    struct qcow2_io inner;
    uint64_t ino;
};

static int64_t id_pread(void *ctx, void *buf, size_t len, uint64_t off)
{
    struct ident_ctx *c = ctx;
    return c->inner.pread(c->inner.ctx, buf, len, off);
}

static int64_t id_size(void *ctx)
{
    struct ident_ctx *c = ctx;
    return c->inner.size(c->inner.ctx);
}

static void id_close(void *ctx)
{
    struct ident_ctx *c = ctx;
    c->inner.close(c->inner.ctx);
    free(c);
}

static int id_identity(void *ctx, uint64_t *dev, uint64_t *ino)
{
    struct ident_ctx *c = ctx;
    *dev = 42;
    *ino = c->ino;
    return 0;
}

/* The inode of a name: names with the same first letter are one file. */
static uint64_t inode_of(const char *name)
{
    const char *base = strrchr(name, '/');
    return (uint8_t)(base ? base[1] : name[0]);
}

static int ident_wrap(struct qcow2_io *io, uint64_t ino)
{
    struct ident_ctx *c = malloc(sizeof(*c));

    if (!c) {
        io->close(io->ctx);
        return -ENOMEM;
    }
    c->inner = *io;
    c->ino = ino;
    memset(io, 0, sizeof(*io));
    io->version = QCOW2_IO_VERSION;
    io->ctx = c;
    io->pread = id_pread;
    io->size = id_size;
    io->close = id_close;
    io->identity = id_identity;
    return 0;
}

static int ident_open(void *ctx, const char *name, unsigned io_flags,
                      struct qcow2_io *out, char *err, size_t errlen)
{
    int rc = memfs_open(ctx, name, io_flags, out, err, errlen);

    return rc < 0 ? rc : ident_wrap(out, inode_of(name));
}

static int open_ident(struct memfs *fs, const char *name,
                      struct qcow2_image **out)
{
    struct qcow2_open_opts o;
    struct qcow2_io io;
    int rc;

    memfs_opts(fs, &o);
    o.open_file = ident_open;
    *out = qcow2_new();
    if (!*out)
        return -ENOMEM;
    rc = ident_open(fs, name, 0, &io, NULL, 0);
    if (rc < 0)
        return rc;
    return qcow2_open_io(*out, &io, name, &o);
}

TEST(identity_distinct_files_ok)
{
    struct memfs fs;
    struct qcow2_image *img;
    uint64_t dev, ino;

    memset(&fs, 0, sizeof(fs));
    add_layer(&fs, "a.qcow2", "b.qcow2", NULL);
    add_layer(&fs, "b.qcow2", "c.qcow2", NULL);
    add_layer(&fs, "c.qcow2", NULL, NULL);
    REQUIRE_EQ_INT(open_ident(&fs, "a.qcow2", &img), 0);
    EXPECT_EQ_INT(chain_len(img), 3);
    REQUIRE_EQ_INT(qcow2_identity(qcow2_backing(img), &dev, &ino), 0);
    EXPECT_EQ_U64(dev, 42);
    EXPECT_EQ_U64(ino, 'b');
    qcow2_close(img);
    memfs_free(&fs);
}

TEST(identity_loop_two_names)
{
    struct memfs fs;
    struct qcow2_image *img;

    /* "a.qcow2" -> "b.qcow2" -> "a-alias.qcow2", which is a.qcow2 */
    memset(&fs, 0, sizeof(fs));
    add_layer(&fs, "a.qcow2", "b.qcow2", NULL);
    add_layer(&fs, "b.qcow2", "a-alias.qcow2", NULL);
    add_layer(&fs, "a-alias.qcow2", "b.qcow2", NULL);
    EXPECT_EQ_INT(open_ident(&fs, "a.qcow2", &img), -ELOOP);
    EXPECT_CONTAINS(qcow2_errmsg(img), "loops");
    EXPECT_CONTAINS(qcow2_errmsg(img), "'a-alias.qcow2'");
    EXPECT_CONTAINS(qcow2_errmsg(img), "is 'a.qcow2'");
    failure("detected before opening the alias as an image");
    EXPECT_EQ_INT(fs.opens, 3);
    qcow2_close(img);
    memfs_free(&fs);
}

TEST(identity_self_loop)
{
    struct memfs fs;
    struct qcow2_image *img;

    memset(&fs, 0, sizeof(fs));
    add_layer(&fs, "x.qcow2", "x.qcow2", NULL);
    EXPECT_EQ_INT(open_ident(&fs, "x.qcow2", &img), -ELOOP);
    EXPECT_EQ_INT(fs.opens, 2);
    qcow2_close(img);
    memfs_free(&fs);
}

TEST(identity_absent_is_enotsup)
{
    struct qimg q;
    struct qcow2_image *img;
    uint64_t dev, ino;

    qimg_init(&q, 3, 9, 4096, 0);
    REQUIRE_EQ_INT(qimg_open(&q, "m.qcow2", NULL, &img), 0);
    EXPECT_EQ_INT(qcow2_identity(img, &dev, &ino), -ENOTSUP);
    qcow2_close(img);
    qimg_free(&q);
}

/* ---- misuse ---- */

TEST(handle_misuse)
{
    struct qimg q;
    struct qcow2_image *img;
    struct qcow2_io io;

    qimg_init(&q, 3, 9, 4096, 0);
    qimg_finish(&q);
    EXPECT_EQ_STR(qcow2_errmsg(NULL), "invalid handle");
    qcow2_close(NULL);
    REQUIRE_EQ_INT(qcow2_io_open_mem(q.buf, q.len, &io), 0);
    failure("NULL handle: the io is still closed (ASan would see a leak)");
    EXPECT_EQ_INT(qcow2_open_io(NULL, &io, "x", NULL), -EINVAL);

    REQUIRE_EQ_INT(qimg_open(&q, "m.qcow2", NULL, &img), 0);
    failure("a handle opens once");
    REQUIRE_EQ_INT(qcow2_io_open_mem(q.buf, q.len, &io), 0);
    EXPECT_EQ_INT(qcow2_open_io(img, &io, "again", NULL), -EINVAL);
    EXPECT_EQ_STR(qcow2_filename(img), "m.qcow2");
    qcow2_close(img);

    failure("accessors on a NULL handle");
    EXPECT_TRUE(qcow2_header_get(NULL) == NULL);
    EXPECT_TRUE(qcow2_backing(NULL) == NULL);
    EXPECT_EQ_U64(qcow2_virtual_size(NULL), 0);
    qimg_free(&q);
}

/*
 * LIBRARY BUG (reported; fails only under -DQCHAIN_SANITIZE=ON): the first
 * statement of qcow2_info_get() (image.c) is
 *     const struct qcow2_header *h = &img->hp.h;
 * evaluated before usable(img) rejects NULL, which is undefined behaviour
 * (UBSan: "member access within null pointer of type 'const struct
 * qcow2_image'").  Without sanitizers the call returns -EINVAL as it
 * should.
 */
TEST(get_info_null_handle)
{
    struct qcow2_info info;
    struct qcow2_image *img = qcow2_new();

    REQUIRE_TRUE(img);
    memset(&info, 0, sizeof(info));
    failure("a handle that was never opened");
    EXPECT_EQ_INT(qcow2_info_get(img, &info), -EINVAL);
    qcow2_close(img);
    EXPECT_EQ_INT(qcow2_info_get(NULL, &info), -EINVAL);
}

TEST(strerror)
{
    EXPECT_EQ_STR(qcow2_strerror(-QCOW2_ECORRUPT), "image is corrupt");
    EXPECT_EQ_STR(qcow2_strerror(QCOW2_ECORRUPT), "image is corrupt");
    EXPECT_EQ_STR(qcow2_strerror(-ENOENT), strerror(ENOENT));
    EXPECT_TRUE(qcow2_version_string()[0] != '\0');
}

static int failing_open(void *ctx, const char *name, unsigned io_flags,
                        struct qcow2_io *out, char *err, size_t errlen)
{
    if (strcmp(name, "base.qcow2") == 0) {
        snprintf(err, errlen, "permission denied by the test");
        return -EACCES;
    }
    return memfs_open(ctx, name, io_flags, out, err, errlen);
}

TEST(chain_resolver_error_message)
{
    struct memfs fs;
    struct qcow2_open_opts o;
    struct qcow2_image *img;

    memset(&fs, 0, sizeof(fs));
    add_layer(&fs, "top.qcow2", "base.qcow2", NULL);
    memfs_opts(&fs, &o);
    o.open_file = failing_open;
    EXPECT_EQ_INT(memfs_open_image(&fs, "top.qcow2", &o, &img), -EACCES);
    EXPECT_CONTAINS(qcow2_errmsg(img), "cannot open backing file "
                                       "'base.qcow2' of 'top.qcow2'");
    EXPECT_CONTAINS(qcow2_errmsg(img), "permission denied by the test");
    qcow2_close(img);
    memfs_free(&fs);
}

TEST(chain_unsupported_backing_format)
{
    struct memfs fs;
    struct qcow2_open_opts o;
    struct qcow2_image *img;

    memset(&fs, 0, sizeof(fs));
    add_layer(&fs, "top.qcow2", "base.vmdk", "vmdk");
    add_layer(&fs, "base.vmdk", NULL, NULL);
    memfs_opts(&fs, &o);
    EXPECT_EQ_INT(memfs_open_image(&fs, "top.qcow2", &o, &img), -ENOTSUP);
    EXPECT_CONTAINS(qcow2_errmsg(img), "vmdk");
    qcow2_close(img);
    memfs_free(&fs);
}

TEST(public_resolve_and_protocol)
{
    char *p = qcow2_backing_resolve("dir/top.qcow2", "base.raw");

    EXPECT_EQ_STR(p, "dir/base.raw");
    free(p);
    p = qcow2_backing_resolve("/vm/top.qcow2", "/abs/base");
    EXPECT_EQ_STR(p, "/abs/base");
    free(p);
    EXPECT_TRUE(qcow2_backing_resolve("top.qcow2", "nbd:host:1") == NULL);
    EXPECT_TRUE(qcow2_backing_resolve("top.qcow2", "") == NULL);
    EXPECT_TRUE(qcow2_name_is_protocol("json:{}"));
    EXPECT_TRUE(qcow2_name_is_protocol("foo:bar.qcow2"));
    EXPECT_TRUE(!qcow2_name_is_protocol("./foo:bar.qcow2"));
    EXPECT_TRUE(!qcow2_name_is_protocol("/a:b"));
}
