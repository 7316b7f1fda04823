/*
 * chain.h - the layers of an open chain, by depth, and TOP/BASE arguments
 * resolved against them by file identity (qchain-commit, qchain-delta).
 */
#ifndef QCHAIN_CHAIN_H
#define QCHAIN_CHAIN_H

#include <stdbool.h>
#include <stdint.h>

#include <qcow2/qcow2.h>

#include "cli.h"

struct cli_layer {
    struct qcow2_image *img; /* in the chain (owned by the top handle) */
    const char *name;        /* as resolved */
    uint64_t dev, ino;
    const char *format;      /* "qcow2" or "raw" */
    bool device;             /* a block device (an LVM volume) */
};

struct cli_chain {
    struct cli_layer *layers; /* depth 0 (ACTIVE) first */
    unsigned n;
    unsigned top;  /* depth of TOP */
    unsigned base; /* depth of BASE */
};

/* Open ACTIVE with its chain (open flags on top of the common options')
 * and fill c.  Prints and returns -1 on failure (*img may then be set:
 * the caller closes it). */
int cli_chain_open(const struct cli_common *common, const char *active,
                   unsigned flags, struct qcow2_image **img,
                   struct cli_chain *c);
/* Fill c->layers from an open chain.  Prints and returns -1 on failure. */
int cli_chain_load(struct qcow2_image *active, struct cli_chain *c);
void cli_chain_free(struct cli_chain *c);

/* Depth of the layer that is the file `path` (by device and inode), or -1
 * when no layer is. */
int cli_chain_find(const struct cli_chain *c, const char *path);

/*
 * Resolve TOP (NULL: ACTIVE) and BASE (NULL: TOP's backing file) into
 * c->top and c->base, as virsh blockcommit reads them.  Prints the reason
 * and returns -1 when either is not in the chain, BASE is not below TOP,
 * or there is nothing below TOP.
 */
int cli_chain_resolve(struct cli_chain *c, const char *active,
                      const char *top, const char *base);

/*
 * Views of one layer need only that layer.  The layers of FILE's chain,
 * top first, as far as they open: the whole chain when it opens (one
 * handle, v[0], owns it); otherwise, when FILE opens by itself, each layer
 * opened alone (QCOW2_OPEN_NO_BACKING, format as recorded, locks as a
 * chain open takes them) down to the first that does not open, loops or
 * lies past the depth cap, with `stop` saying why the chain stops there
 * (a warning for the caller to print).  A refusal of FILE itself, a lock
 * refusal (-EBUSY) or no memory is an error: -1, *failed set to the
 * failed handle (the caller prints its message and closes it) and
 * *rc to its code.
 */
struct cli_layers {
    struct qcow2_image **v; /* depth 0 first */
    unsigned n;
    bool separate;          /* each v[i] its own handle */
    char *stop;             /* why the chain stops below v[n-1], or NULL */
};

int cli_layers_open(const struct cli_common *common, const char *file,
                    unsigned flags, struct cli_layers *out,
                    struct qcow2_image **failed, int *rc);
void cli_layers_close(struct cli_layers *l);

/* Open FILE with its chain; when the chain does not open but FILE does
 * by itself (a missing or unusable backing file), FILE alone, with a
 * warning: for commands that read one layer's own structure.  Returns
 * as qcow2_open, *img set in both cases (on failure the caller prints
 * qcow2_errmsg and closes it). */
int cli_open_alone_if_needed(const struct cli_common *common,
                             const char *file, unsigned flags,
                             struct qcow2_image **img);

#endif
