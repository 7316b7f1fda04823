/*
 * json.c - the JSON emitter behind every --output=json.
 *
 * Strings are written as UTF-8; control characters are escaped and bytes
 * that are not valid UTF-8 (names read from hostile images) become U+FFFD,
 * so the output always parses.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"

void json_init(struct json *j, FILE *f, bool pretty)
{
    memset(j, 0, sizeof(*j));
    j->f = f;
    j->pretty = pretty;
}

static void indent(struct json *j)
{
    int i;
    if (!j->pretty)
        return;
    fputc('\n', j->f);
    for (i = 0; i < j->depth; i++)
        fputs("    ", j->f);
}

static void item(struct json *j, const char *key)
{
    if (j->depth > 0) {
        if (j->has_items[j->depth])
            fputc(',', j->f);
        if (!j->pretty && j->has_items[j->depth])
            fputc(' ', j->f);
        j->has_items[j->depth] = true;
        indent(j);
    }
    if (key) {
        json_write_escaped(j->f, key, strlen(key));
        fputs(": ", j->f);
    }
}

static size_t utf8_len(const unsigned char *s, size_t n)
{
    size_t need, i;
    unsigned c = s[0];

    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        need = 2;
    else if (c >= 0xe0 && c <= 0xef)
        need = 3;
    else if (c >= 0xf0 && c <= 0xf4)
        need = 4;
    else
        return 0;
    if (n < need)
        return 0;
    for (i = 1; i < need; i++)
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    return need;
}

void json_write_escaped(FILE *f, const char *str, size_t len)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;

    fputc('"', f);
    while (i < len) {
        unsigned c = s[i];
        size_t n;
        switch (c) {
        case '"': fputs("\\\"", f); i++; continue;
        case '\\': fputs("\\\\", f); i++; continue;
        case '\b': fputs("\\b", f); i++; continue;
        case '\f': fputs("\\f", f); i++; continue;
        case '\n': fputs("\\n", f); i++; continue;
        case '\r': fputs("\\r", f); i++; continue;
        case '\t': fputs("\\t", f); i++; continue;
        default: break;
        }
        if (c < 0x20 || c == 0x7f) {
            fprintf(f, "\\u%04x", c);
            i++;
            continue;
        }
        n = utf8_len(s + i, len - i);
        if (n == 0) {
            fputs("\\ufffd", f);
            i++;
            continue;
        }
        fwrite(s + i, 1, n, f);
        i += n;
    }
    fputc('"', f);
}

void json_object_begin(struct json *j, const char *key)
{
    item(j, key);
    fputc('{', j->f);
    if (j->depth + 1 < JSON_MAX_DEPTH)
        j->depth++;
    j->has_items[j->depth] = false;
}

void json_object_end(struct json *j)
{
    bool had = j->has_items[j->depth];
    j->depth--;
    if (had)
        indent(j);
    fputc('}', j->f);
}

void json_array_begin(struct json *j, const char *key)
{
    item(j, key);
    fputc('[', j->f);
    if (j->depth + 1 < JSON_MAX_DEPTH)
        j->depth++;
    j->has_items[j->depth] = false;
}

void json_array_end(struct json *j)
{
    j->depth--;
    indent(j);
    fputc(']', j->f);
}

void json_string(struct json *j, const char *key, const char *v)
{
    if (!v) {
        json_null(j, key);
        return;
    }
    json_string_len(j, key, v, strlen(v));
}

void json_string_len(struct json *j, const char *key, const char *v,
                     size_t len)
{
    item(j, key);
    json_write_escaped(j->f, v, len);
}

void json_u64(struct json *j, const char *key, uint64_t v)
{
    item(j, key);
    fprintf(j->f, "%llu", (unsigned long long)v);
}

void json_i64(struct json *j, const char *key, int64_t v)
{
    item(j, key);
    fprintf(j->f, "%lld", (long long)v);
}

void json_double(struct json *j, const char *key, double v)
{
    char buf[32];
    int prec;

    item(j, key);
    if (!isfinite(v)) {
        fputs("null", j->f); /* JSON has no infinities */
        return;
    }
    /* the shortest form that reads back as the same double */
    for (prec = 6; prec < 17; prec++) {
        snprintf(buf, sizeof(buf), "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            break;
    }
    if (prec == 17)
        snprintf(buf, sizeof(buf), "%.17g", v);
    fputs(buf, j->f);
}

void json_bool(struct json *j, const char *key, bool v)
{
    item(j, key);
    fputs(v ? "true" : "false", j->f);
}

void json_null(struct json *j, const char *key)
{
    item(j, key);
    fputs("null", j->f);
}

void json_end(struct json *j)
{
    fputc('\n', j->f);
}
