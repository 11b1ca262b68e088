/* kernel_driver.c -- run the MAQ C kernels from files, outside Python (used by tests/runtime/test_neon.py to run
 * the NEON path under qemu-aarch64, and natively to prove the driver itself right).
 *
 * usage: kernel_driver PATH IN OUT      (PATH: scalar | sse | avx2 | neon | default)
 * IN  (little-endian, written by the test):
 *     char magic[4] = "MAQD"; int32 version = 2;
 *     int32 type, T, P, G, B, n_threads, n_rows;       (n_rows: rows of maq_get_row to output)
 *     int64 n_data, n_bitmap, n_scales, n_rowscale, n_hi;   (bytes of each weight part; 0 if unused)
 *     bytes data[n_data], bitmap[n_bitmap], scales[n_scales], rowscale[n_rowscale], hi[n_hi];
 *     (type: enum maq_type, MAQ2 = 100 with a bitmap, MAQ3 = 101 / MAQ4 = 102 with hi)
 *     float X[B][T]
 * OUT: float Y[B][P]; float rows[n_rows][T]
 * stdout: "path=<active> compiled=<list>". Exit 0 ok, 2 path unavailable, 1 any other error.
 * Environment MAQ_DRIVER_R16=1: repack the weight into 16-row panels first (maq_r16_pack), where it and this CPU
 * qualify (stdout then also says "r16=<bytes>").
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "maq.h"
#include "driver_io.h"

static int read_all(FILE *f, void *dst, size_t n) { return fread(dst, 1, n, f) == n ? 0 : -1; }

static void *read_blob(FILE *f, int64_t n) {
    void *p = malloc(n > 0 ? (size_t)n : 1);
    if (!p || (n > 0 && read_all(f, p, (size_t)n))) {
        free(p);
        return NULL;
    }
    return p;
}

int main(int argc, char **argv) {
    FILE *f = NULL;
    const int rc0 = driver_start(argc, argv, &f);
    if (rc0) return rc0;
    char magic[4];
    int32_t hdr[8];
    int64_t sizes[5];
    if (read_all(f, magic, 4) || memcmp(magic, "MAQD", 4) || read_all(f, hdr, sizeof(hdr)) || hdr[0] != 2 ||
        read_all(f, sizes, sizeof(sizes))) {
        fprintf(stderr, "%s: bad header\n", argv[2]);
        return 1;
    }
    const int type = hdr[1], T = hdr[2], P = hdr[3], G = hdr[4], B = hdr[5], nth = hdr[6], n_rows = hdr[7];
    void *data = read_blob(f, sizes[0]), *bitmap = read_blob(f, sizes[1]);
    void *scales = read_blob(f, sizes[2]), *rowscale = read_blob(f, sizes[3]), *hi = read_blob(f, sizes[4]);
    float *X = (float *)read_blob(f, (int64_t)B * T * 4);
    fclose(f);
    if (!data || !bitmap || !scales || !rowscale || !hi || !X) {
        fprintf(stderr, "%s: truncated\n", argv[2]);
        return 1;
    }
    maq_weight w = driver_weight(type, T, P, G, data, bitmap, scales, rowscale);
    w.hi = hi;
    const char *want_r16 = getenv("MAQ_DRIVER_R16");
    const size_t r16_bytes = want_r16 && !strcmp(want_r16, "1") ? maq_r16_bytes(&w) : 0;
    if (r16_bytes) {
        void *r16 = aligned_alloc(64, r16_bytes);
        if (!r16) {
            fprintf(stderr, "out of memory\n");
            return 1;
        }
        maq_r16_pack(&w, r16);
        w.r16 = (const uint8_t *)r16;
        printf("r16=%zu\n", r16_bytes);
    }

    float *Y = (float *)malloc((size_t)B * P * sizeof(float));
    float *rows = (float *)malloc((size_t)(n_rows > 0 ? n_rows : 1) * T * sizeof(float));
    void *scratch = malloc(maq_act_bytes(&w, B));
    maq_pool *pool = maq_pool_create(nth);
    if (!Y || !rows || !scratch || !pool) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    maq_matmul(&w, X, B, Y, scratch, pool);
    for (int p = 0; p < n_rows; p++) maq_get_row(&w, p, rows + (size_t)p * T);
    maq_pool_destroy(pool);

    return driver_finish(argv[3], Y, (size_t)B * P, rows, (size_t)n_rows * T);
}
