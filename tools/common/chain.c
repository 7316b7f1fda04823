/*
 * chain.c - layers of an open chain and TOP/BASE resolution.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "chain.h"
#include "cli.h"
#include "holders.h"

int cli_chain_load(struct qcow2_image *active, struct cli_chain *c)
{
    struct qcow2_image *l;
    unsigned i;

    c->n = 0;
    for (l = active; l; l = qcow2_backing(l))
        c->n++;
    c->layers = calloc(c->n, sizeof(*c->layers));
    if (!c->layers) {
        cli_error("out of memory");
        return -1;
    }
    for (i = 0, l = active; l; l = qcow2_backing(l), i++) {
        struct qcow2_info info;
        struct cli_layer *y = &c->layers[i];
        qcow2_info_get(l, &info);
        y->img = l;
        y->name = qcow2_filename(l);
        y->format = info.format == QCOW2_FORMAT_QCOW2 ? "qcow2" : "raw";
        if (qcow2_identity(l, &y->dev, &y->ino) < 0) {
            cli_error_file(y->name, "cannot identify the file");
            return -1;
        }
        y->device = info.fixed_size;
    }
    return 0;
}

int cli_chain_open(const struct cli_common *common, const char *active,
                   unsigned flags, struct qcow2_image **img,
                   struct cli_chain *c)
{
    struct qcow2_open_opts o;
    int rc;

    *img = qcow2_new();
    if (!*img) {
        cli_error("out of memory");
        return -1;
    }
    cli_open_opts(common, &o, flags);
    rc = qcow2_open(*img, active, &o);
    if (rc == -EBUSY) {
        /* which image a VM holds, who holds it, what to do */
        char *msg = strdup(qcow2_errmsg(*img));
        qcow2_close(*img);
        *img = NULL;
        cli_busy_error(active, common->format, flags, msg ? msg : "in use",
                       "stop the VM, or use -U for read-only figures");
        free(msg);
        return -1;
    }
    if (rc < 0) {
        cli_error_file(active, "%s", qcow2_errmsg(*img));
        return -1;
    }
    return cli_chain_load(*img, c);
}

void cli_chain_free(struct cli_chain *c)
{
    free(c->layers);
    c->layers = NULL;
    c->n = 0;
}

int cli_chain_find(const struct cli_chain *c, const char *path)
{
    struct stat st;
    unsigned i;

    if (stat(path, &st) < 0)
        return -1;
    for (i = 0; i < c->n; i++)
        if (c->layers[i].dev == (uint64_t)st.st_dev &&
            c->layers[i].ino == (uint64_t)st.st_ino)
            return (int)i;
    return -1;
}

/* TOP or BASE by name: -1 (said) when it does not exist or is not in the
 * chain. */
static int find_named(const struct cli_chain *c, const char *active,
                      const char *name)
{
    struct stat st;
    int d = cli_chain_find(c, name);

    if (d >= 0)
        return d;
    if (stat(name, &st) < 0)
        cli_error_file(name, "%s", strerror(errno));
    else
        cli_error_file(name, "is not in the backing chain of '%s'", active);
    return -1;
}

static void print_chain(const struct cli_chain *c)
{
    unsigned i;

    fputs("  chain: ", stderr);
    for (i = c->n; i-- > 0;)
        fprintf(stderr, "%s%s", c->layers[i].name, i ? " <- " : "\n");
}

int cli_chain_resolve(struct cli_chain *c, const char *active,
                      const char *top, const char *base)
{
    int d;

    c->top = 0;
    if (c->n < 2) {
        cli_error_file(active, "has no backing file: nothing to commit");
        return -1;
    }
    if (top) {
        if ((d = find_named(c, active, top)) < 0)
            return -1;
        c->top = (unsigned)d;
    }
    if (base) {
        if ((d = find_named(c, active, base)) < 0)
            return -1;
        c->base = (unsigned)d;
    } else {
        c->base = c->top + 1;
        if (c->base >= c->n) {
            cli_error_file(c->layers[c->top].name, "has no backing file: "
                           "nothing to commit into");
            return -1;
        }
    }
    if (c->base == c->top) {
        cli_error_file(c->layers[c->base].name, "is both TOP and BASE: "
                       "nothing to commit");
        return -1;
    }
    if (c->base < c->top) {
        cli_error_file(c->layers[c->base].name, "is above TOP '%s' in the "
                       "chain: are TOP and BASE swapped? (BASE is the "
                       "backing file the layers go into)",
                       c->layers[c->top].name);
        print_chain(c);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------ layers, each alone */

static int layers_push(struct cli_layers *l, struct qcow2_image *img)
{
    struct qcow2_image **v = realloc(l->v, (l->n + 1) * sizeof(*v));

    if (!v)
        return -1;
    l->v = v;
    l->v[l->n++] = img;
    return 0;
}

/* Below the top (opened alone): each backing file alone, as a chain open
 * would find it (resolved name, recorded format, its locks), until one
 * does not open, is a protocol name, loops or is deeper than the cap.
 * The chain open that failed already said every warning these opens
 * would say (the same layers, in the same order): theirs are dropped. */
static void layers_walk(const struct cli_common *common,
                        struct cli_layers *l)
{
    for (;;) {
        struct qcow2_image *cur = l->v[l->n - 1], *next;
        struct qcow2_open_opts o;
        struct qcow2_info in;
        uint64_t dev, ino, d2, i2;
        unsigned k;

        if (qcow2_info_get(cur, &in) < 0 || !in.backing_name ||
            !in.backing_path || l->n > QCOW2_DEFAULT_MAX_DEPTH)
            return;
        next = qcow2_new();
        if (!next)
            return;
        cli_open_opts(common, &o, QCOW2_OPEN_NO_BACKING);
        o.format = in.backing_format;
        o.warn = NULL;
        if (qcow2_open(next, in.backing_path, &o) < 0) {
            qcow2_close(next);
            return;
        }
        if (qcow2_identity(next, &dev, &ino) == 0) {
            for (k = 0; k < l->n; k++) {
                if (qcow2_identity(l->v[k], &d2, &i2) == 0 && d2 == dev &&
                    i2 == ino) {
                    qcow2_close(next);
                    return;
                }
            }
        }
        if (layers_push(l, next) < 0) {
            qcow2_close(next);
            return;
        }
    }
}

/* The chain open failed with `first`: FILE alone, its message kept when
 * it fails too (rc < 0). */
static int open_alone(const struct cli_common *common, const char *file,
                      unsigned flags, struct qcow2_image **img)
{
    struct qcow2_open_opts o;

    *img = qcow2_new();
    if (!*img)
        return -ENOMEM;
    cli_open_opts(common, &o, flags | QCOW2_OPEN_NO_BACKING);
    o.warn = NULL; /* said by the chain open, which opened FILE first */
    return qcow2_open(*img, file, &o);
}

int cli_layers_open(const struct cli_common *common, const char *file,
                    unsigned flags, struct cli_layers *out,
                    struct qcow2_image **failed, int *rc)
{
    struct qcow2_open_opts o;
    struct qcow2_image *img, *l;
    char *first;

    memset(out, 0, sizeof(*out));
    *failed = NULL;
    img = qcow2_new();
    if (!img) {
        *rc = -ENOMEM;
        cli_error("out of memory");
        return -1;
    }
    cli_open_opts(common, &o, flags);
    *rc = qcow2_open(img, file, &o);
    if (*rc == 0) {
        for (l = img; l; l = qcow2_backing(l))
            if (layers_push(out, l) < 0) {
                cli_error("out of memory");
                cli_layers_close(out);
                return -1;
            }
        return 0;
    }
    if (*rc == -EBUSY || *rc == -ENOMEM) {
        *failed = img;
        return -1;
    }
    first = strdup(qcow2_errmsg(img));
    qcow2_close(img);
    *rc = open_alone(common, file, flags, &img);
    if (*rc < 0 || !first || layers_push(out, img) < 0) {
        free(first);
        if (*rc == 0)
            *rc = -ENOMEM;
        *failed = img;
        return -1;
    }
    out->separate = true;
    out->stop = first;
    layers_walk(common, out);
    return 0;
}

void cli_layers_close(struct cli_layers *l)
{
    unsigned i;

    for (i = 0; i < l->n; i++)
        if (i == 0 || l->separate)
            qcow2_close(l->v[i]);
    free(l->v);
    free(l->stop);
    memset(l, 0, sizeof(*l));
}

int cli_open_alone_if_needed(const struct cli_common *common,
                             const char *file, unsigned flags,
                             struct qcow2_image **img)
{
    struct qcow2_open_opts o;
    char *first;
    int rc;

    *img = qcow2_new();
    if (!*img)
        return -ENOMEM;
    cli_open_opts(common, &o, flags);
    rc = qcow2_open(*img, file, &o);
    if (rc == 0 || rc == -EBUSY || rc == -ENOMEM)
        return rc;
    first = strdup(qcow2_errmsg(*img));
    if (!first)
        return rc; /* the first failure stands */
    qcow2_close(*img);
    rc = open_alone(common, file, flags, img);
    if (rc == 0)
        cli_warning("'%s': %s; the image is read by itself", file, first);
    free(first);
    return rc;
}
