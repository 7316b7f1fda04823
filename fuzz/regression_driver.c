/*
 * regression_driver.c - replay fuzz inputs without libFuzzer (zstd's
 * tests/fuzz/regression_driver.c): each argument is a file, or a directory
 * whose files (and the files of its subdirectories, one level down) are
 * replayed in name order through LLVMFuzzerTestOneInput.
 *
 * Exit status: 0 when every input ran (an invariant failure aborts), 1 when
 * an argument cannot be read or no input was found at all (an empty corpus
 * is a broken test, not a passing one).
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz_helpers.h"

static unsigned long n_inputs;

static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf = NULL;
    size_t len = 0, cap = 0;

    if (!f) {
        fprintf(stderr, "regression_driver: cannot open '%s': %s\n", path,
                strerror(errno));
        return -1;
    }
    for (;;) {
        size_t n;
        if (len == cap) {
            size_t ncap = cap ? cap * 2 : 65536;
            uint8_t *nb = realloc(buf, ncap);
            if (!nb) {
                fprintf(stderr, "regression_driver: out of memory reading "
                        "'%s'\n", path);
                free(buf);
                fclose(f);
                return -1;
            }
            buf = nb;
            cap = ncap;
        }
        n = fread(buf + len, 1, cap - len, f);
        len += n;
        if (n == 0)
            break;
    }
    if (ferror(f)) {
        fprintf(stderr, "regression_driver: cannot read '%s'\n", path);
        free(buf);
        fclose(f);
        return -1;
    }
    fclose(f);
    /* an exact-size copy, so ASan sees reads past the input */
    {
        uint8_t *exact = malloc(len ? len : 1);
        if (!exact) {
            free(buf);
            return -1;
        }
        if (len)
            memcpy(exact, buf, len);
        free(buf);
        fprintf(stderr, "running %s (%zu bytes)\n", path, len);
        LLVMFuzzerTestOneInput(exact, len);
        free(exact);
    }
    n_inputs++;
    return 0;
}

static int run_path(const char *path, int depth)
{
    struct dirent **names;
    struct stat st;
    int i, n, rc = 0;

    if (stat(path, &st) < 0) {
        fprintf(stderr, "regression_driver: '%s': %s\n", path,
                strerror(errno));
        return -1;
    }
    if (!S_ISDIR(st.st_mode))
        return run_file(path);
    if (depth > 1)
        return 0; /* directories recurse one level only */
    n = scandir(path, &names, NULL, alphasort);
    if (n < 0) {
        fprintf(stderr, "regression_driver: cannot list '%s': %s\n", path,
                strerror(errno));
        return -1;
    }
    for (i = 0; i < n; i++) {
        const char *name = names[i]->d_name;
        if (name[0] != '.') {
            size_t len = strlen(path) + strlen(name) + 2;
            char *child = malloc(len);
            if (!child) {
                rc = -1;
            } else {
                snprintf(child, len, "%s/%s", path, name);
                if (run_path(child, depth + 1) < 0)
                    rc = -1;
                free(child);
            }
        }
        free(names[i]);
    }
    free(names);
    return rc;
}

int main(int argc, char **argv)
{
    int i, rc = 0;

    if (argc < 2) {
        fprintf(stderr, "usage: %s FILE|DIR...\n", argv[0]);
        return 2;
    }
    for (i = 1; i < argc; i++)
        if (run_path(argv[i], 0) < 0)
            rc = 1;
    if (n_inputs == 0) {
        fprintf(stderr, "regression_driver: no inputs found\n");
        return 1;
    }
    fprintf(stderr, "regression_driver: %lu inputs ran\n", n_inputs);
    return rc;
}
