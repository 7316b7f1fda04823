/*
 * cache.c - the metadata cache: a fixed number of cluster-sized pages keyed
 * by host offset, replaced least recently used first.
 *
 * L1 pages, L2 tables and refcount pages all pass through it, so the memory
 * an image needs is fixed at open (nslots * cluster size) whatever its
 * virtual size.  Read-only for now: pages are never dirty.
 *
 * Invariants:
 *   1. nslots >= Q2_MIN_CACHE_SLOTS and mem holds nslots * page bytes.
 *   2. A valid slot holds the bytes of the file at [key, key + page), with
 *      bytes past EOF as zeros.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

int q2_cache_init(struct q2_cache *c, size_t page, size_t budget)
{
    size_t n = budget / page;

    memset(c, 0, sizeof(*c));
    if (n < Q2_MIN_CACHE_SLOTS)
        n = Q2_MIN_CACHE_SLOTS;
    c->slots = calloc(n, sizeof(*c->slots));
    c->mem = malloc(n * page);
    if (!c->slots || !c->mem) {
        q2_cache_free(c);
        return -ENOMEM;
    }
    c->nslots = (unsigned)n;
    c->page = page;
    return 0;
}

void q2_cache_free(struct q2_cache *c)
{
    free(c->slots);
    free(c->mem);
    c->slots = NULL;
    c->mem = NULL;
    c->nslots = 0;
}

int64_t q2_pread_full(const struct qcow2_io *io, void *buf, size_t len,
                      uint64_t off)
{
    int64_t n = io->pread(io->ctx, buf, len, off);

    if (n < 0)
        return n;
    if ((size_t)n < len)
        memset((uint8_t *)buf + n, 0, len - (size_t)n);
    return (int64_t)len;
}

int q2_cache_get(struct q2_cache *c, const struct qcow2_io *io, uint64_t key,
                 const uint8_t **out)
{
    unsigned i, victim = 0;
    uint64_t oldest = UINT64_MAX;
    int64_t n;

    c->tick++;
    for (i = 0; i < c->nslots; i++) {
        struct q2_cache_slot *s = &c->slots[i];
        if (s->valid && s->key == key) {
            s->used = c->tick;
            c->hits++;
            *out = c->mem + (size_t)i * c->page;
            return 0;
        }
        if (!s->valid) {
            if (oldest) {
                oldest = 0;
                victim = i;
            }
        } else if (s->used < oldest) {
            oldest = s->used;
            victim = i;
        }
    }
    c->misses++;
    c->slots[victim].valid = false;
    n = q2_pread_full(io, c->mem + (size_t)victim * c->page, c->page, key);
    if (n < 0)
        return (int)n;
    c->slots[victim].key = key;
    c->slots[victim].valid = true;
    c->slots[victim].used = c->tick;
    *out = c->mem + (size_t)victim * c->page;
    return 0;
}
