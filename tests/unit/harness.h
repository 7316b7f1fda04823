/*
 * harness.h - a tiny unit-test harness in the style of libarchive's test.h.
 *
 * A test file defines any number of tests:
 *
 *   TEST(truncated)
 *   {
 *       failure("header of %d bytes", 71);
 *       EXPECT_EQ_INT(q2_hdr_parse(buf, 71, 71, &p, err, sizeof(err)),
 *                     -QCOW2_ECORRUPT);
 *   }
 *
 * Each TEST registers itself (a constructor) with the harness; harness.c
 * owns main(): with no argument it runs every test of the executable, with
 * one argument only the test of that name.  Exit status: 0 pass, 1 fail,
 * 77 skip (ctest's SKIP_RETURN_CODE).  tests/unit/CMakeLists.txt finds the
 * names by scanning the sources for "TEST(name)" at the start of a line and
 * registers each as the ctest unit.<file>.<name>.
 *
 * EXPECT_* record a failure, print both sides with file:line and go on; they
 * evaluate to 1 when the check held, so a test can stop early:
 *
 *   if (!EXPECT_EQ_INT(rc, 0))
 *       return;
 *
 * REQUIRE_* do exactly that.  failure(fmt, ...) attaches a context message
 * to the next check only (printed if that check fails).
 */
#ifndef QCHAIN_UNIT_HARNESS_H
#define QCHAIN_UNIT_HARNESS_H

#include <stddef.h>
#include <stdint.h>

typedef void (*harness_fn)(void);

void harness_register(const char *name, harness_fn fn, const char *file);

void failure(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void harness_skip(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

int harness_expect_int(const char *file, int line, const char *ea,
                       long long a, const char *eb, long long b);
int harness_expect_u64(const char *file, int line, const char *ea,
                       uint64_t a, const char *eb, uint64_t b);
int harness_expect_str(const char *file, int line, const char *ea,
                       const char *a, const char *eb, const char *b);
int harness_expect_mem(const char *file, int line, const char *ea,
                       const void *a, const char *eb, const void *b,
                       size_t len);
int harness_expect_true(const char *file, int line, const char *e, int v);
int harness_expect_contains(const char *file, int line, const char *ea,
                            const char *hay, const char *needle);

#define TEST(name)                                                          \
    static void test_##name(void);                                          \
    __attribute__((constructor)) static void register_##name(void)          \
    {                                                                       \
        harness_register(#name, test_##name, __FILE__);                     \
    }                                                                       \
    static void test_##name(void)

#define EXPECT_EQ_INT(a, b)                                                 \
    harness_expect_int(__FILE__, __LINE__, #a, (long long)(a), #b,          \
                       (long long)(b))
#define EXPECT_EQ_U64(a, b)                                                 \
    harness_expect_u64(__FILE__, __LINE__, #a, (uint64_t)(a), #b,           \
                       (uint64_t)(b))
#define EXPECT_EQ_STR(a, b)                                                 \
    harness_expect_str(__FILE__, __LINE__, #a, (a), #b, (b))
#define EXPECT_EQ_MEM(a, b, len)                                            \
    harness_expect_mem(__FILE__, __LINE__, #a, (a), #b, (b), (len))
#define EXPECT_TRUE(x) harness_expect_true(__FILE__, __LINE__, #x, !!(x))
/* hay (a string, may be NULL) contains needle */
#define EXPECT_CONTAINS(hay, needle)                                        \
    harness_expect_contains(__FILE__, __LINE__, #hay, (hay), (needle))

#define REQUIRE_EQ_INT(a, b)                                                \
    do {                                                                    \
        if (!EXPECT_EQ_INT(a, b))                                           \
            return;                                                         \
    } while (0)
#define REQUIRE_TRUE(x)                                                     \
    do {                                                                    \
        if (!EXPECT_TRUE(x))                                                \
            return;                                                         \
    } while (0)

/* Skip the rest of the current test (exit code 77 when run alone). */
#define SKIP(...)                                                           \
    do {                                                                    \
        harness_skip(__FILE__, __LINE__, __VA_ARGS__);                      \
        return;                                                             \
    } while (0)

#endif /* QCHAIN_UNIT_HARNESS_H */
