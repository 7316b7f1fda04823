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
