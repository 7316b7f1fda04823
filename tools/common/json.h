/*
 * json.h - a small streaming JSON emitter: stable key order (the order of
 * the calls), escaping, and the pretty layout qemu-img uses (4-space
 * indent, "key": value).
 */
#ifndef QCHAIN_JSON_H
#define QCHAIN_JSON_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#define JSON_MAX_DEPTH 32

struct json {
    FILE *f;
    int depth;
    bool pretty;
    bool has_items[JSON_MAX_DEPTH];
};

void json_init(struct json *j, FILE *f, bool pretty);
/* key is NULL for array elements and the top-level value. */
void json_object_begin(struct json *j, const char *key);
void json_object_end(struct json *j);
void json_array_begin(struct json *j, const char *key);
void json_array_end(struct json *j);
void json_string(struct json *j, const char *key, const char *v);
void json_string_len(struct json *j, const char *key, const char *v,
                     size_t len);
void json_u64(struct json *j, const char *key, uint64_t v);
void json_i64(struct json *j, const char *key, int64_t v);
void json_double(struct json *j, const char *key, double v);
void json_bool(struct json *j, const char *key, bool v);
void json_null(struct json *j, const char *key);
/* Finish the document with a newline. */
void json_end(struct json *j);

/* Write s as a JSON string literal (with quotes). */
void json_write_escaped(FILE *f, const char *s, size_t len);

#endif
