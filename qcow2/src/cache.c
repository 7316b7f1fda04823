/*
 * cache.c - the metadata cache: a fixed number of cluster-sized pages keyed
 * by host offset, replaced least recently used first.
 *
 * L1 pages, L2 tables, refcount table pages and refcount blocks all pass
 * through it, so the memory an image needs is fixed at open (nslots *
 * cluster size) whatever its virtual size.
 *
 * Writers modify pages in place (q2_cache_get_mut, q2_cache_new) and the
 * pages stay dirty until the image flushes them kind by kind, in the order
 * crash safety needs (refcount blocks, refcount table, L2 tables, L1; see
 * write.c).  The cache never writes a dirty page by itself: when every slot
 * is dirty it asks its owner to flush (the `flush` callback) and then
 * evicts a clean page.
 *
 * Invariants:
 *   1. nslots >= Q2_MIN_CACHE_SLOTS and mem holds nslots * page bytes.
 *   2. A valid clean slot holds the bytes of the file at [key, key + page),
 *      bytes past EOF as zeros; a dirty slot holds what the file will hold
 *      once it is written.
 *   3. A pointer returned by get/get_mut/new stays valid until the next
 *      call into the cache.
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
    c->mem = q2_buf_alloc(n * page);
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
    free(c->aux);
    c->aux = NULL;
    c->slots = NULL;
    c->mem = NULL;
    c->nslots = 0;
}

bool qcow2_buffer_is_zero(const void *buf, size_t len)
{
    const uint8_t *b = buf;

    /* the first byte is zero and every byte equals the one before it */
    return len == 0 || (b[0] == 0 && memcmp(b, b + 1, len - 1) == 0);
}

void *q2_buf_alloc(size_t len)
{
    void *p;

    return posix_memalign(&p, 4096, len ? len : 1) == 0 ? p : NULL;
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

/* The slot holding key, or the slot to reuse for it (*hit false). */
static int lookup(struct q2_cache *c, uint64_t key, unsigned *slot,
                  bool *hit)
{
    unsigned i, victim, tries = 0;
    uint64_t oldest;
    int rc;

    c->tick++;
again:
    victim = c->nslots;
    oldest = UINT64_MAX;
    for (i = 0; i < c->nslots; i++) {
        struct q2_cache_slot *s = &c->slots[i];
        if (s->valid && s->key == key) {
            s->used = c->tick;
            c->hits++;
            *slot = i;
            *hit = true;
            return 0;
        }
        if (!s->valid) {
            if (oldest) {
                oldest = 0;
                victim = i;
            }
        } else if (!s->dirty && s->used < oldest) {
            oldest = s->used;
            victim = i;
        }
    }
    if (victim == c->nslots) {
        /* Every page is dirty: the owner writes them out in order.  The
         * flush may itself load pages (deferred refcount decrements), even
         * this very key, so look again from the start: one key must never
         * live in two slots. */
        if (!c->flush || ++tries > 4)
            return -EIO;
        rc = c->flush(c->flush_ctx);
        if (rc < 0)
            return rc;
        goto again;
    }
    c->misses++;
    *slot = victim;
    *hit = false;
    return 0;
}

static int fill(struct q2_cache *c, const struct qcow2_io *io, unsigned slot,
                uint64_t key, enum q2_page_kind kind)
{
    struct q2_cache_slot *s = &c->slots[slot];
    int64_t n;

    s->valid = false;
    n = q2_pread_full(io, c->mem + (size_t)slot * c->page, c->page, key);
    if (n < 0)
        return (int)n;
    s->key = key;
    s->valid = true;
    s->dirty = false;
    s->kind = kind;
    s->used = c->tick;
    return 0;
}

int q2_cache_get(struct q2_cache *c, const struct qcow2_io *io, uint64_t key,
                 const uint8_t **out)
{
    unsigned slot;
    bool hit;
    int rc = lookup(c, key, &slot, &hit);

    if (rc < 0)
        return rc;
    if (!hit && (rc = fill(c, io, slot, key, Q2_PAGE_META)) < 0)
        return rc;
    *out = c->mem + (size_t)slot * c->page;
    return 0;
}

int q2_cache_get_mut(struct q2_cache *c, const struct qcow2_io *io,
                     uint64_t key, enum q2_page_kind kind, uint8_t **out)
{
    unsigned slot;
    bool hit;
    int rc = lookup(c, key, &slot, &hit);

    if (rc < 0)
        return rc;
    if (!hit && (rc = fill(c, io, slot, key, kind)) < 0)
        return rc;
    c->slots[slot].dirty = true;
    c->slots[slot].kind = kind;
    *out = c->mem + (size_t)slot * c->page;
    return 0;
}

int q2_cache_new(struct q2_cache *c, uint64_t key, enum q2_page_kind kind,
                 uint8_t **out)
{
    unsigned slot;
    bool hit;
    int rc = lookup(c, key, &slot, &hit);
    struct q2_cache_slot *s;

    if (rc < 0)
        return rc;
    s = &c->slots[slot];
    memset(c->mem + (size_t)slot * c->page, 0, c->page);
    s->key = key;
    s->valid = true;
    s->dirty = true;
    s->kind = kind;
    s->used = c->tick;
    *out = c->mem + (size_t)slot * c->page;
    return 0;
}

int q2_cache_write_kind(struct q2_cache *c, const struct qcow2_io *io,
                        enum q2_page_kind kind, unsigned *written)
{
    unsigned i;

    for (i = 0; i < c->nslots; i++) {
        struct q2_cache_slot *s = &c->slots[i];
        int64_t n;
        if (!s->valid || !s->dirty || s->kind != kind)
            continue;
        n = io->pwrite(io->ctx, c->mem + (size_t)i * c->page, c->page,
                       s->key);
        if (n < 0)
            return (int)n;
        s->dirty = false;
        (*written)++;
    }
    return 0;
}

bool q2_cache_dirty_kind(const struct q2_cache *c, enum q2_page_kind kind)
{
    unsigned i;

    for (i = 0; i < c->nslots; i++)
        if (c->slots[i].valid && c->slots[i].dirty &&
            c->slots[i].kind == kind)
            return true;
    return false;
}

bool q2_cache_dirty(const struct q2_cache *c)
{
    unsigned i;

    for (i = 0; i < c->nslots; i++)
        if (c->slots[i].valid && c->slots[i].dirty)
            return true;
    return false;
}

void q2_cache_drop(struct q2_cache *c, uint64_t key)
{
    unsigned i;

    for (i = 0; i < c->nslots; i++)
        if (c->slots[i].valid && c->slots[i].key == key)
            c->slots[i].valid = c->slots[i].dirty = false;
}

void q2_cache_clear(struct q2_cache *c)
{
    unsigned i;

    for (i = 0; i < c->nslots; i++)
        if (!c->slots[i].dirty)
            c->slots[i].valid = false;
}
