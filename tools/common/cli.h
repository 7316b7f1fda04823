/*
 * cli.h - what every qchain command shares: its name in messages, exit
 * codes, option helpers, size parsing and formatting.  Commands include
 * only this, json.h and the library's public header.
 */
#ifndef QCHAIN_CLI_H
#define QCHAIN_CLI_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include <qcow2/qcow2.h>

/* Exit codes of every command but check-style ones. */
#define QCHAIN_EXIT_OK 0
#define QCHAIN_EXIT_FAILURE 1
#define QCHAIN_EXIT_USAGE 2

enum cli_output { CLI_OUTPUT_HUMAN = 0, CLI_OUTPUT_JSON = 1 };

/* Options every command takes; the short letters are reserved for these. */
#define CLI_COMMON_SHORTOPTS ":hVf:U" /* ':': missing arguments */
#define CLI_OPT_OUTPUT 0x1000
#define CLI_OPT_JSON 0x1001
#define CLI_COMMON_LONGOPTS                                                   \
    {"help", no_argument, NULL, 'h'},                                         \
    {"version", no_argument, NULL, 'V'},                                      \
    {"format", required_argument, NULL, 'f'},                                 \
    {"force-share", no_argument, NULL, 'U'},                                  \
    {"output", required_argument, NULL, CLI_OPT_OUTPUT},                      \
    {"json", no_argument, NULL, CLI_OPT_JSON}

struct cli_common {
    enum cli_output output;
    const char *format; /* -f, NULL: probe */
    bool force_share;   /* -U */
};

/* Set the program name used in messages (e.g. "qchain-info") and take
 * over getopt's error messages. */
void cli_init(const char *progname, char **argv);
/* A usage error for the option getopt just rejected (exit 2). */
_Noreturn void cli_bad_option(int opt);
const char *cli_progname(void);

/* Handle a common option.  Returns 1 when handled, 0 when not a common
 * option; exits for -h (after calling usage), -V and bad values. */
int cli_common_option(int opt, const char *arg, struct cli_common *c,
                      void (*usage)(void));

/* "progname: message" on stderr. */
void cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* "progname: 'file': message" on stderr. */
void cli_error_file(const char *file, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void cli_warning(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* A usage error: message, hint, exit 2. */
_Noreturn void cli_usage_error(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

/* Warning callback for struct qcow2_open_opts (ctx unused). */
void cli_warn_cb(void *ctx, const char *msg);

/* Open options filled from the common options. */
void cli_open_opts(const struct cli_common *c, struct qcow2_open_opts *o,
                   unsigned flags);

/* Parse a size: digits with an optional fraction and a binary suffix
 * (B, K, M, G, T, P, E; case-insensitive for k), as qemu-img does.
 * Returns 0 or -1. */
int cli_parse_size(const char *s, uint64_t *out);
/* Parse an unsigned integer (decimal or 0x hex).  Returns 0 or -1. */
int cli_parse_u64(const char *s, uint64_t *out);

/* qemu-img's human size: three significant digits and a binary unit
 * ("336 KiB", "2.19 MiB", "0 B").  Returns buf. */
char *cli_size_str(uint64_t v, char *buf, unsigned len);

/* Is `path` a regular file that nobody holds and that is byte for byte the
 * image qcow2_create would make with `o` (made by an earlier run of the
 * same command that a crash interrupted after naming it)? */
bool cli_made_already(const char *path, const struct qcow2_create_opts *o);

/* The progress bar on stderr: done of total bytes, the rate since `start`
 * and the time left; redrawn at most every 0.2 s (`last` keeps the time of
 * the previous drawing), and once more, with a newline, when done reaches
 * total. */
void cli_progress(const struct timespec *start, struct timespec *last,
                  uint64_t done, uint64_t total);

#endif
