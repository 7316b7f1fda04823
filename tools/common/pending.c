/*
 * pending.c - journals of unfinished qchain-commit jobs (pending.h has
 * where they live and their format).
 *
 * A journal exists from the moment a commit starts copying until it has
 * re-pointed the image above TOP and recorded the committed layers; a
 * journal found later is a job that was killed (or is running now: a
 * command that reads the chain while the commit holds the base's write
 * lock is refused by that lock before it gets here, unless it reads with
 * -U).  Reading never changes anything: only qchain-commit removes a
 * journal, when it finishes that job.
 */
#include <errno.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "pending.h"

int cli_device_name(const char *path, char *out, size_t len)
{
    char *copy = strdup(path), *copy2 = strdup(path), *dir;
    int rc = 0;

    if (!copy || !copy2) {
        rc = -ENOMEM;
    } else if (!(dir = realpath(dirname(copy), NULL))) {
        rc = -errno;
    } else {
        const char *base = basename(copy2);
        int w = snprintf(out, len, "%s%s%s", dir, strcmp(dir, "/") ? "/" : "",
                         base);
        if (w < 0 || (size_t)w >= len)
            rc = -ENAMETOOLONG;
        free(dir);
    }
    free(copy);
    free(copy2);
    return rc;
}

/* "/dev/vg-a/base" -> "dev-vg%2da-base": a file name, one per path. */
static void escape_name(const char *path, char *out, size_t len)
{
    size_t o = 0;

    for (path += *path == '/'; *path && o + 4 < len; path++) {
        unsigned char ch = (unsigned char)*path;
        if (ch == '/')
            out[o++] = '-';
        else if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                 (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' ||
                 ch == '+')
            out[o++] = (char)ch;
        else
            o += (size_t)snprintf(out + o, len - o, "%%%02x", ch);
    }
    out[o] = '\0';
}

/* The file name (no directory) of the state of a device layer. */
static int device_state_name(const struct cli_layer *l, const char *suffix,
                             char *out, size_t len)
{
    char name[PATH_MAX], esc[PATH_MAX];
    int rc = cli_device_name(l->name, name, sizeof(name));

    if (rc < 0)
        return rc;
    escape_name(name, esc, sizeof(esc));
    rc = snprintf(out, len, "%s%s", esc, suffix);
    return rc < 0 || (size_t)rc >= len ? -ENAMETOOLONG : 0;
}

/* dir/name into out. */
static int join(const char *dir, const char *name, char *out, size_t len)
{
    int rc = snprintf(out, len, "%s/%s", dir, name);
    return rc < 0 || (size_t)rc >= len ? -ENAMETOOLONG : 0;
}

int cli_state_path(const struct cli_chain *c, unsigned b,
                   const char *state_dir, const char *suffix, char *out,
                   size_t len)
{
    char name[PATH_MAX], *copy = NULL;
    const char *dir = state_dir;
    unsigned i;
    int rc;

    if (!c->layers[b].device) {
        rc = snprintf(out, len, "%s%s", c->layers[b].name, suffix);
        return rc < 0 || (size_t)rc >= len ? -ENAMETOOLONG : 0;
    }
    rc = device_state_name(&c->layers[b], suffix, name, sizeof(name));
    if (rc < 0)
        return rc;
    for (i = 0; !dir && i < c->n; i++) {
        if (!c->layers[i].device) {
            copy = strdup(c->layers[i].name);
            if (!copy)
                return -ENOMEM;
            dir = dirname(copy);
        }
    }
    rc = join(dir ? dir : CLI_STATE_DIR_DEFAULT, name, out, len);
    free(copy);
    return rc;
}

/* One "KEY device NAME" or "KEY DEV:INO PATH" line (after KEY). */
static bool parse_layer(const char *rest, struct cli_journal *out, unsigned k)
{
    char name[PATH_MAX];

    if (sscanf(rest, " device %4095[^\n]", name) == 1)
        out->device[k] = true;
    else if (sscanf(rest, " %" SCNu64 ":%" SCNu64 " %4095[^\n]", &out->dev[k],
                    &out->ino[k], name) != 3)
        return false;
    snprintf(out->name[k], sizeof(out->name[k]), "%s", name);
    return true;
}

int cli_journal_read(const char *path, struct cli_journal *out)
{
    static const char *const keys[3] = {"active", "top", "base"};
    char line[PATH_MAX + 128];
    unsigned seen = 0, k;
    FILE *f = fopen(path, "r");

    if (!f)
        return -errno;
    memset(out, 0, sizeof(*out));
    if (!fgets(line, sizeof(line), f) ||
        strcmp(line, "qchain-commit journal 1\n") != 0) {
        fclose(f);
        return -EINVAL;
    }
    while (fgets(line, sizeof(line), f)) {
        if (sscanf(line, "uuid %36s", out->uuid) == 1) {
            seen |= 8;
            continue;
        }
        for (k = 0; k < 3; k++) {
            size_t kl = strlen(keys[k]);
            if (strncmp(line, keys[k], kl) == 0 && line[kl] == ' ' &&
                parse_layer(line + kl, out, k))
                seen |= 1u << k;
        }
    }
    fclose(f);
    return seen == 15 ? 0 : -EINVAL;
}

bool cli_journal_names(const struct cli_journal *jr, unsigned k,
                       const struct cli_layer *l)
{
    char name[PATH_MAX];

    if (jr->device[k])
        return l->device &&
               cli_device_name(l->name, name, sizeof(name)) == 0 &&
               strcmp(name, jr->name[k]) == 0;
    return !l->device && jr->dev[k] == l->dev && jr->ino[k] == l->ino;
}

/* ---- the search ---- */

struct search {
    struct cli_pending *v;
    unsigned n, cap;
    uint64_t (*seen)[2]; /* journal files found (device, inode) */
};

/* Add the journal at `path` for layer `layer`, once per file.  Returns 0
 * (added, absent or not a journal) or -ENOMEM. */
static int try_journal(struct search *s, const char *path, unsigned layer)
{
    struct cli_pending *p;
    struct stat st;
    unsigned i;

    if (stat(path, &st) < 0 || !S_ISREG(st.st_mode))
        return 0;
    for (i = 0; i < s->n; i++)
        if (s->seen[i][0] == (uint64_t)st.st_dev &&
            s->seen[i][1] == (uint64_t)st.st_ino)
            return 0;
    if (s->n == s->cap) {
        unsigned cap = s->cap ? 2 * s->cap : 4;
        void *v = realloc(s->v, cap * sizeof(*s->v));
        if (!v)
            return -ENOMEM;
        s->v = v;
        v = realloc(s->seen, cap * sizeof(*s->seen));
        if (!v)
            return -ENOMEM;
        s->seen = v;
        s->cap = cap;
    }
    p = &s->v[s->n];
    if (cli_journal_read(path, &p->jr) < 0)
        return 0;
    snprintf(p->journal, sizeof(p->journal), "%s", path);
    p->layer = layer;
    s->seen[s->n][0] = (uint64_t)st.st_dev;
    s->seen[s->n][1] = (uint64_t)st.st_ino;
    s->n++;
    return 0;
}

/* A layer on a device: its journal in every place a commit may have put
 * it. */
static int try_device(struct search *s, const struct cli_chain *c,
                      unsigned b, const char *state_dir)
{
    char name[PATH_MAX], path[PATH_MAX];
    unsigned i;
    int rc;

    if (device_state_name(&c->layers[b], CLI_JOURNAL_SUFFIX, name,
                          sizeof(name)) < 0)
        return 0; /* no stable name: no journal can name it */
    if (state_dir && join(state_dir, name, path, sizeof(path)) == 0 &&
        (rc = try_journal(s, path, b)) < 0)
        return rc;
    for (i = 0; i < c->n; i++) {
        char *copy;
        if (c->layers[i].device)
            continue;
        if (!(copy = strdup(c->layers[i].name)))
            return -ENOMEM;
        rc = join(dirname(copy), name, path, sizeof(path));
        free(copy);
        if (rc == 0 && (rc = try_journal(s, path, b)) < 0)
            return rc;
    }
    if (join(CLI_STATE_DIR_DEFAULT, name, path, sizeof(path)) == 0)
        return try_journal(s, path, b);
    return 0;
}

int cli_pending_find(const struct cli_chain *c, const char *state_dir,
                     struct cli_pending **out)
{
    struct search s = {0};
    char path[PATH_MAX];
    unsigned b;
    int rc = 0;

    *out = NULL;
    for (b = 0; b < c->n && rc == 0; b++) {
        if (c->layers[b].device)
            rc = try_device(&s, c, b, state_dir);
        else if (cli_state_path(c, b, NULL, CLI_JOURNAL_SUFFIX, path,
                                sizeof(path)) == 0)
            rc = try_journal(&s, path, b);
    }
    free(s.seen);
    if (rc < 0 || s.n == 0) {
        free(s.v);
        return rc;
    }
    *out = s.v;
    return (int)s.n;
}

void cli_pending_str(const struct cli_pending *p, char *buf, size_t len)
{
    const struct cli_journal *jr = &p->jr;

    snprintf(buf, len, "job %s into '%s' (active '%s', top '%s'): run the "
             "same qchain-commit command again to finish it; journal %s",
             jr->uuid, jr->name[CLI_JOURNAL_BASE],
             jr->name[CLI_JOURNAL_ACTIVE], jr->name[CLI_JOURNAL_TOP],
             p->journal);
}

unsigned cli_pending_warn(const struct cli_chain *c,
                          const struct cli_pending *p, unsigned n)
{
    char msg[4 * PATH_MAX + 256];
    unsigned i;

    for (i = 0; i < n; i++) {
        cli_pending_str(&p[i], msg, sizeof(msg));
        cli_warning("'%s': pending commit: %s", c->layers[p[i].layer].name,
                    msg);
    }
    return n;
}

void cli_pending_json(struct json *j, const struct cli_pending *p)
{
    json_object_begin(j, "pending-commit");
    json_string(j, "journal", p->journal);
    json_string(j, "job", p->jr.uuid);
    json_string(j, "active", p->jr.name[CLI_JOURNAL_ACTIVE]);
    json_string(j, "top", p->jr.name[CLI_JOURNAL_TOP]);
    json_string(j, "base", p->jr.name[CLI_JOURNAL_BASE]);
    json_object_end(j);
}
