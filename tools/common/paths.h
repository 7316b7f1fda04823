/*
 * paths.h - how a new or re-pointed image names its backing file.
 */
#ifndef QCHAIN_PATHS_H
#define QCHAIN_PATHS_H

enum backing_path_mode {
    BACKING_PATH_AUTO,     /* relative when both share a directory, else
                              absolute */
    BACKING_PATH_RELATIVE, /* relative to the image's directory */
    BACKING_PATH_ABSOLUTE
};

/*
 * The name `image` should store for its backing file `target` so that it
 * resolves (QEMU's way: against image's directory) to target.  Names with
 * a ':' that would read as a protocol get a "./" prefix.  Returns a
 * malloc'd string, or NULL when a directory cannot be resolved.
 */
char *cli_backing_name(const char *image, const char *target,
                       enum backing_path_mode mode);

#endif
