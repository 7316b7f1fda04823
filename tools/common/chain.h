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

#endif
