/*
 * harness.c - registry, checks and main() of the unit-test harness
 * (see harness.h).
 */
#include "harness.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_TESTS 512

struct test {
    const char *name;
    harness_fn fn;
    const char *file;
};

static struct test tests[MAX_TESTS];
static int ntests;

static char context[1024]; /* failure() message for the next check */
static int failures;       /* failed checks in the current test */
static int skipped;        /* the current test called SKIP */
static const char *current;

void harness_register(const char *name, harness_fn fn, const char *file)
{
    if (ntests == MAX_TESTS) {
        fprintf(stderr, "harness: too many tests (raise MAX_TESTS)\n");
        exit(1);
    }
    tests[ntests].name = name;
    tests[ntests].fn = fn;
    tests[ntests].file = file;
    ntests++;
}

void failure(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(context, sizeof(context), fmt, ap);
    va_end(ap);
}

void harness_skip(const char *file, int line, const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "%s:%d: %s: skipped: ", file, line, current);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    skipped = 1;
}

/* Start a failure report; print the context, then forget it. */
static void report(const char *file, int line, const char *what)
{
    fprintf(stderr, "%s:%d: %s: %s\n", file, line, current, what);
    if (context[0])
        fprintf(stderr, "    context: %s\n", context);
    failures++;
}

static int done(int ok)
{
    context[0] = '\0';
    return ok;
}

int harness_expect_int(const char *file, int line, const char *ea,
                       long long a, const char *eb, long long b)
{
    if (a == b)
        return done(1);
    report(file, line, "EXPECT_EQ_INT failed");
    fprintf(stderr, "    %s = %lld\n    %s = %lld\n", ea, a, eb, b);
    return done(0);
}

int harness_expect_u64(const char *file, int line, const char *ea,
                       uint64_t a, const char *eb, uint64_t b)
{
    if (a == b)
        return done(1);
    report(file, line, "EXPECT_EQ_U64 failed");
    fprintf(stderr,
            "    %s = %" PRIu64 " (0x%" PRIx64 ")\n"
            "    %s = %" PRIu64 " (0x%" PRIx64 ")\n",
            ea, a, a, eb, b, b);
    return done(0);
}

int harness_expect_str(const char *file, int line, const char *ea,
                       const char *a, const char *eb, const char *b)
{
    if ((a == NULL && b == NULL) || (a && b && strcmp(a, b) == 0))
        return done(1);
    report(file, line, "EXPECT_EQ_STR failed");
    fprintf(stderr, "    %s = %s%s%s\n    %s = %s%s%s\n", ea, a ? "\"" : "",
            a ? a : "NULL", a ? "\"" : "", eb, b ? "\"" : "",
            b ? b : "NULL", b ? "\"" : "");
    return done(0);
}

static void hexdump(const char *label, const uint8_t *p, size_t from,
                    size_t to)
{
    size_t i;

    fprintf(stderr, "    %s [%zu..%zu):", label, from, to);
    for (i = from; i < to; i++)
        fprintf(stderr, " %02x", p[i]);
    fputc('\n', stderr);
}

int harness_expect_mem(const char *file, int line, const char *ea,
                       const void *a, const char *eb, const void *b,
                       size_t len)
{
    const uint8_t *pa = a, *pb = b;
    size_t i, from, to;

    if (len == 0 || (a && b && memcmp(a, b, len) == 0))
        return done(1);
    report(file, line, "EXPECT_EQ_MEM failed");
    if (!a || !b) {
        fprintf(stderr, "    %s = %p\n    %s = %p\n", ea, a, eb, b);
        return done(0);
    }
    for (i = 0; i < len && pa[i] == pb[i]; i++)
        ;
    from = i > 8 ? i - 8 : 0;
    to = i + 16 < len ? i + 16 : len;
    fprintf(stderr, "    first difference at byte %zu of %zu\n", i, len);
    hexdump(ea, pa, from, to);
    hexdump(eb, pb, from, to);
    return done(0);
}

int harness_expect_true(const char *file, int line, const char *e, int v)
{
    if (v)
        return done(1);
    report(file, line, "EXPECT_TRUE failed");
    fprintf(stderr, "    %s is false\n", e);
    return done(0);
}

int harness_expect_contains(const char *file, int line, const char *ea,
                            const char *hay, const char *needle)
{
    if (hay && strstr(hay, needle))
        return done(1);
    report(file, line, "EXPECT_CONTAINS failed");
    fprintf(stderr, "    %s = %s%s%s\n    does not contain \"%s\"\n", ea,
            hay ? "\"" : "", hay ? hay : "NULL", hay ? "\"" : "", needle);
    return done(0);
}

/* 0 pass, 1 fail, 77 skip */
static int run(const struct test *t)
{
    current = t->name;
    failures = 0;
    skipped = 0;
    context[0] = '\0';
    t->fn();
    if (failures) {
        fprintf(stderr, "FAIL %s (%d failed check%s)\n", t->name, failures,
                failures == 1 ? "" : "s");
        return 1;
    }
    if (skipped) {
        fprintf(stderr, "SKIP %s\n", t->name);
        return 77;
    }
    fprintf(stderr, "ok   %s\n", t->name);
    return 0;
}

int main(int argc, char **argv)
{
    int i, nfail = 0, nskip = 0;

    if (argc > 2 || (argc == 2 && strcmp(argv[1], "--list") == 0)) {
        if (argc > 2) {
            fprintf(stderr, "usage: %s [--list | test-name]\n", argv[0]);
            return 1;
        }
        for (i = 0; i < ntests; i++)
            printf("%s\n", tests[i].name);
        return 0;
    }
    if (argc == 2) {
        for (i = 0; i < ntests; i++)
            if (strcmp(tests[i].name, argv[1]) == 0)
                return run(&tests[i]);
        fprintf(stderr, "%s: no test named '%s'\n", argv[0], argv[1]);
        return 1;
    }
    for (i = 0; i < ntests; i++) {
        int rc = run(&tests[i]);
        nfail += rc == 1;
        nskip += rc == 77;
    }
    fprintf(stderr, "%d tests: %d passed, %d failed, %d skipped\n", ntests,
            ntests - nfail - nskip, nfail, nskip);
    if (nfail)
        return 1;
    return ntests && nskip == ntests ? 77 : 0;
}
