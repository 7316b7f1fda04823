/*
 * calibrate.h - how fast a commit of this delta goes on this host: a
 * sample of the delta committed for real, through the commit's own write
 * path, into scratch files beside the base (qchain-delta --rate=auto).
 *
 * The sample: a systematic choice of the data runs the commit would write
 * (every n-th guest-contiguous run, so that the mix of run lengths and
 * their alignment are the delta's), at most CALIB_SAMPLE_MAX bytes.  The
 * scratch base (the base's format and cluster geometry) gets the base's
 * content under the sample, the scratch overlay the layers' data there;
 * both are made durable, then qcow2_commit copies the overlay into the
 * base, timed to its last extent and, apart, its final flush.  Reading
 * the sample from the real layers is timed too, piece by piece: what it
 * costs beyond reading it back from the scratch overlay (a cold cache,
 * decompression, a slower file system) is added, the thirty-second of the
 * pieces that differ most left out (a stall of the host, not the read
 * side).
 * Last, the syncs the commit tool makes around the copy (its journal and
 * the base's record: a small file made durable, renamed, its directory
 * synced, twice, a third time for a re-point, and a removal) are made and
 * timed in the same directory.
 * A base smaller than the top is grown first, as the commit grows it,
 * timed.  The delta's zero ranges are sampled the same way (evenly spread
 * zero runs, each cut to its share of CALIB_ZERO_FILL), put as zero
 * clusters in a third scratch file over the scratch base, which holds the
 * base's content under them, and committed after the data, timed apart.
 * The scratch files are removed before returning, on every path; the base
 * and the layers are only read.
 */
#ifndef QCHAIN_CALIBRATE_H
#define QCHAIN_CALIBRATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <qcow2/qcow2.h>

#define CALIB_SAMPLE_MAX (64ull << 20) /* bytes of the delta committed */
#define CALIB_RUNS_MAX 8192            /* runs in the sample: what each
                                          costs beyond its bytes (maps,
                                          calls) stays bounded when they are
                                          tiny (512-byte subclusters) */
#define CALIB_ZERO_RUNS_MAX 256        /* zero runs in the sample */
#define CALIB_ZERO_FILL (16ull << 20)  /* of CALIB_SAMPLE_MAX, for the base's
                                          content under the zero runs (when
                                          the delta has zero ranges) */
#define CALIB_PREPARE_MAX 1.0          /* seconds for reading the sample and
                                          writing the scratch files, once
                                          the runs are chosen: past them
                                          the sample is cut */

struct calib_in {
    struct qcow2_image *top;   /* TOP, in its chain */
    unsigned stop;             /* depth of BASE below TOP */
    struct qcow2_image *base;  /* BASE, in the same chain (read only) */
    const char *base_name;     /* BASE's file: the scratch files go beside */
    uint64_t data_bytes;       /* the estimate's: what the commit copies */
    uint64_t data_runs;
    uint64_t zero_bytes;       /* the estimate's: what the commit zeroes */
    bool repoint;              /* TOP is not ACTIVE: the commit re-points
                                  the image above it */
};

struct calib_out {
    uint64_t sample_bytes;     /* data committed by the calibration */
    uint64_t sample_runs;
    double copy_seconds;       /* the sample's commit, to its last extent */
    double flush_seconds;      /* the rest of it: the last writes and the
                                  base's flush (not scaled: it waits for
                                  the last stretch the background
                                  writeback had not yet written) */
    double read_seconds;       /* reading the sample from the layers,
                                  beyond reading it from the scratch copy */
    double grow_seconds;       /* growing the base to the top's size (0:
                                  the commit does not) */
    double sync_seconds;       /* the tool's journal and record syncs */
    uint64_t zero_bytes;       /* the zero runs the commit would zero in the
                                  base (up to the base's end), */
    uint64_t zero_runs;        /* how many */
    uint64_t zero_sample_bytes;  /* the part of them sampled */
    uint64_t zero_sample_runs;
    double zero_seconds;       /* their commit into the scratch base (the
                                  base's content under them), flush
                                  included */
    double seconds;            /* the calibration's own wall time */
};

/*
 * Run the calibration.  0, or -errno with the reason in err (nothing to
 * sample, the directory not writable, an I/O error); the scratch files
 * are gone either way.
 */
int calibrate(const struct calib_in *in, struct calib_out *out, char *err,
              size_t errlen);

/* Monotonic seconds. */
double calib_now(void);

#endif
