/* s8_driver.c -- run a MAQ2 product with int8 salient words (runtime/csrc/maq_s8.c) from files, outside Python:
 * tests/runtime/test_kernels_s8.py builds it natively and for aarch64 (run under qemu-aarch64).
 *
 * usage: s8_driver PATH IN OUT      (PATH: scalar | sse | avx2 | neon | dotprod)
 * IN (little-endian): char magic[4] = "MAQS"; int32 T, P, G, B, N;
 *     words int32 [P][T/16]; bitmap uint8 [P][ceil(T/128)]; scales uint8 [P][2*ceil(T/G)]; rowscale half [P][3];
 *     salw int8 [16*N]; saloff int32 [P+1]; X float [B][T]
 * OUT: float Y[B][P] (maq_matmul), then float rows[P][T] (maq_get_row).
 * stdout: "path=<active>". Exit 0 ok, 2 path unavailable, 1 any other error.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "maq.h"
#include "driver_io.h"

static void *blob(FILE *f, size_t n) {
    void *p = malloc(n ? n : 1);
    if (p && n && fread(p, 1, n, f) != n) {
        free(p);
        return NULL;
    }
    return p;
}

int main(int argc, char **argv) {
    if (argc != 4) return 1;
    if (maq_set_path(argv[1]) != 0) return 2;
    FILE *f = fopen(argv[2], "rb");
    char magic[4];
    int32_t h[5];
    if (!f || fread(magic, 1, 4, f) != 4 || memcmp(magic, "MAQS", 4) || fread(h, 4, 5, f) != 5) return 1;
    const int T = h[0], P = h[1], G = h[2], B = h[3], N = h[4];
    const int nw = T / 16, nbm = (nw + 7) / 8, ng = (T + G - 1) / G;
    void *words = blob(f, (size_t)P * nw * 4), *bitmap = blob(f, (size_t)P * nbm);
    void *scales = blob(f, (size_t)P * 2 * ng), *rowscale = blob(f, (size_t)P * 6);
    void *salw = blob(f, (size_t)16 * N), *saloff = blob(f, (size_t)(P + 1) * 4);
    float *X = blob(f, (size_t)B * T * 4);
    fclose(f);
    if (!words || !bitmap || !scales || !rowscale || !salw || !saloff || !X) return 1;
    maq_weight w = driver_weight(MAQ_TYPE_MAQ2, T, P, G, words, bitmap, scales, rowscale);
    w.salw = salw;
    w.saloff = saloff;
    float *Y = malloc((size_t)B * P * 4), *rows = malloc((size_t)P * T * 4);
    void *scratch = malloc(maq_act_bytes(&w, B));
    if (!Y || !rows || !scratch) return 1;
    maq_matmul(&w, X, B, Y, scratch, NULL);
    for (int p = 0; p < P; p++) maq_get_row(&w, p, rows + (size_t)p * T);
    FILE *o = fopen(argv[3], "wb");
    if (!o || fwrite(Y, 4, (size_t)B * P, o) != (size_t)B * P || fwrite(rows, 4, (size_t)P * T, o) != (size_t)P * T)
        return 1;
    fclose(o);
    printf("path=%s\n", maq_active_path());
    return 0;
}
