/*
 * format.h - on-disk constants of the qcow2 format (QEMU docs/interop/
 * qcow2.txt).  Offsets of the header fields:
 *
 *   OFFSET  SIZE  FIELD                      NOTES
 *       0     4   magic                      "QFI\xfb"
 *       4     4   version                    2 or 3
 *       8     8   backing_file_offset        0: no backing file
 *      16     4   backing_file_size          name length, <= 1023
 *      20     4   cluster_bits               9..21 (QEMU)
 *      24     8   size                       virtual size in bytes
 *      32     4   crypt_method               0 none, 1 AES, 2 LUKS
 *      36     4   l1_size                    entries
 *      40     8   l1_table_offset            cluster aligned
 *      48     8   refcount_table_offset      cluster aligned
 *      56     4   refcount_table_clusters
 *      60     4   nb_snapshots
 *      64     8   snapshots_offset           cluster aligned
 *   -- end of the version 2 header (72 bytes) --
 *      72     8   incompatible_features
 *      80     8   compatible_features
 *      88     8   autoclear_features
 *      96     4   refcount_order             0..6; 4 for version 2
 *     100     4   header_length              >= 104
 *     104     1   compression_type           if header_length > 104
 *     105     7   padding
 */
#ifndef Q2_FORMAT_H
#define Q2_FORMAT_H

#define Q2_MAGIC 0x514649fbU
#define Q2_V2_HEADER_LEN 72
#define Q2_V3_HEADER_MIN 104
#define Q2_V3_HEADER_LEN 112

#define Q2_INCOMPAT_DIRTY (1ULL << 0)
#define Q2_INCOMPAT_CORRUPT (1ULL << 1)
#define Q2_INCOMPAT_DATA_FILE (1ULL << 2)
#define Q2_INCOMPAT_COMPRESSION (1ULL << 3)
#define Q2_INCOMPAT_EXTL2 (1ULL << 4)
#define Q2_INCOMPAT_KNOWN 0x1fULL

#define Q2_COMPAT_LAZY_REFCOUNTS (1ULL << 0)

#define Q2_AUTOCLEAR_BITMAPS (1ULL << 0)
#define Q2_AUTOCLEAR_DATA_FILE_RAW (1ULL << 1)
#define Q2_AUTOCLEAR_KNOWN 0x3ULL

#define Q2_CRYPT_NONE 0
#define Q2_CRYPT_AES 1
#define Q2_CRYPT_LUKS 2

#define Q2_COMPRESSION_ZLIB 0
#define Q2_COMPRESSION_ZSTD 1

/* Header extension types. */
#define Q2_EXT_END 0x00000000U
#define Q2_EXT_BACKING_FORMAT 0xe2792acaU
#define Q2_EXT_FEATURE_TABLE 0x6803f857U
#define Q2_EXT_BITMAPS 0x23852875U
#define Q2_EXT_CRYPTO 0x0537be77U
#define Q2_EXT_DATA_FILE 0x44415441U

#define Q2_FEATURE_ENTRY_LEN 48

/* L1 entries. */
#define Q2_L1E_OFFSET_MASK 0x00fffffffffffe00ULL
#define Q2_L1E_RESERVED_MASK 0x7f000000000001ffULL
#define Q2_OFLAG_COPIED (1ULL << 63)

/* L2 entries. */
#define Q2_OFLAG_COMPRESSED (1ULL << 62)
#define Q2_OFLAG_ZERO 1ULL
#define Q2_L2E_OFFSET_MASK 0x00fffffffffffe00ULL

/* Bitmap table entries: bits 9-55 the data cluster, bit 0 with no cluster
 * "all ones", the others reserved. */
#define Q2_BME_OFFSET_MASK 0x00fffffffffffe00ULL
#define Q2_BME_RESERVED_MASK 0xff000000000001feULL
#define Q2_BME_ALL_ONES 0x1ULL
#define Q2_L2E_STD_RESERVED_MASK 0x3f000000000001feULL

/* Refcount table entries. */
#define Q2_REFT_OFFSET_MASK 0xfffffffffffffe00ULL
#define Q2_REFT_RESERVED_MASK 0x1ffULL

/* Snapshot table entry: fixed part and the extra data fields. */
#define Q2_SNAP_FIXED_LEN 40
#define Q2_SNAP_EXTRA_VMSTATE 8 /* extra data up to the 64-bit vm size */
#define Q2_SNAP_EXTRA_DISK 16   /* ... and the disk size */
#define Q2_SNAP_EXTRA_ICOUNT 24 /* ... and icount */

/* Bitmap directory entry. */
#define Q2_BITMAP_ENTRY_FIXED 24
#define Q2_BITMAP_EXT_LEN 24
#define Q2_BITMAP_FLAGS_KNOWN 0x7U

/* QEMU lock bytes (block/file-posix.c). */
#define Q2_LOCK_PERM_BASE 100
#define Q2_LOCK_SHARED_BASE 200
#define Q2_PERM_CONSISTENT_READ 0
#define Q2_PERM_WRITE 1
#define Q2_PERM_WRITE_UNCHANGED 2
#define Q2_PERM_RESIZE 3

#endif /* Q2_FORMAT_H */
