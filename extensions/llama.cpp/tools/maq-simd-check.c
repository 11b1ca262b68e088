// maq-simd-check: the vec_dot (MAQ x Q8_1) path this file is compiled for (AVX2 / SSSE3 / NEON / NEON+dotprod / scalar) against
// the scalar reference, bit for bit, and against a float64 product of the dequantized rows, on random blocks.
// Built stand-alone from the patched source (no ggml library), so it cross-compiles for aarch64 and runs in qemu:
//   aarch64-linux-gnu-gcc -O2 -march=armv8.2-a+dotprod -I$LL/ggml/include -I$LL/ggml/src -I$LL/ggml/src/ggml-cpu \
//       maq-simd-check.c -o chk -lm && qemu-aarch64 -L /usr/aarch64-linux-gnu ./chk
// Prints "ok <path> <n rows>" and exits 0, or names the first mismatch and exits 1.
#include "ggml.h"
size_t ggml_type_size(enum ggml_type type);   // stub below: the repack is not exercised here
#include "../src/ggml-maq.c"
#include "../src/ggml-cpu/maq-cpu.c"

#include <stdio.h>
#include <stdlib.h>

float ggml_table_f32_f16[1 << 16];   // what ggml_cpu_init() fills (some fp16 conversions read it)

size_t ggml_type_size(enum ggml_type type) {
    return type == GGML_TYPE_MAQ2 ? sizeof(block_maq2) : type == GGML_TYPE_MAQ3 ? sizeof(block_maq3) : sizeof(block_maq4);
}

static uint32_t rng_state = 12345;
static uint32_t rnd(void) { rng_state = rng_state * 1664525u + 1013904223u; return rng_state >> 8; }

static uint16_t half_of(float f) {   // f in a normal fp16 range, truncated
    uint32_t u; memcpy(&u, &f, 4);
    const uint32_t e = ((u >> 23) & 0xff) - 127 + 15;
    return (uint16_t) (((u >> 16) & 0x8000) | (e << 10) | ((u >> 13) & 0x3ff));
}

static const char * path_name(void) {
#if defined(__AVX2__)
    return "avx2";
#elif defined(__SSSE3__)
    return "ssse3";
#elif defined(__ARM_NEON) && defined(__ARM_FEATURE_DOTPROD)
    return "neon+dotprod";
#elif defined(__ARM_NEON)
    return "neon";
#else
    return "scalar";
#endif
}

int main(void) {
    enum { NB = 6, N = NB * QK_MAQ, ROWS = 300 };
    static uint8_t x[NB * sizeof(block_maq4)];
    static block_q8_1 y[2 * NB];
    static float w[N];
    for (int i = 0; i < (1 << 16); i++) ggml_table_f32_f16[i] = ggml_compute_fp16_to_fp32((ggml_fp16_t) i);
    for (int row = 0; row < ROWS; row++) {
        const int bits = 2 + row % 3;
        const size_t bsz = maq_block_size(bits);
        for (size_t i = 0; i < sizeof(x); i++) x[i] = (uint8_t) rnd();
        for (int b = 0; b < NB; b++) {
            ggml_maq_head * hd = (ggml_maq_head *) (x + b * bsz);
            hd->d = half_of(0.001f + (rnd() % 1000) * 1e-5f);
            hd->dmin = half_of(0.001f + (rnd() % 1000) * 1e-5f);
            if (bits == 2) {
                block_maq2 * m2 = (block_maq2 *) hd;
                m2->dsal = half_of(0.001f + (rnd() % 1000) * 1e-5f);
                m2->sal = (rnd() % 3 == 0) ? (uint8_t) (rnd() & 15) : 0;
            }
        }
        for (int b = 0; b < 2 * NB; b++) {
            y[b].d = half_of(0.01f + (rnd() % 1000) * 1e-4f);
            int sum = 0;
            for (int i = 0; i < 32; i++) sum += y[b].qs[i] = (int8_t) ((int) (rnd() % 255) - 127);
            y[b].s = half_of(GGML_CPU_FP16_TO_FP32(y[b].d) * (float) sum + 1e-30f);
        }
        float simd, ref;
        maq_vec_dot(bits, N, &simd, x, y);
        ggml_vec_dot_maq_q8_1_ref(bits, N, &ref, x, y);
        if (bits == 2) ggml_maq_dequantize_row_maq2((const block_maq2 *) x, w, N);
        if (bits == 3) ggml_maq_dequantize_row_maq3((const block_maq3 *) x, w, N);
        if (bits == 4) ggml_maq_dequantize_row_maq4((const block_maq4 *) x, w, N);
        double exact = 0.0, scale = 0.0;
        for (int i = 0; i < N; i++) {
            const double yi = (double) GGML_CPU_FP16_TO_FP32(y[i / 32].d) * y[i / 32].qs[i % 32];
            exact += (double) w[i] * yi;
            scale += fabs((double) w[i] * yi);
        }
        // Q8_1 keeps dy * sum(y) as fp16 (S): the minimum's term carries its 2^-11 rounding, as for llama.cpp's Q4_1
        if (memcmp(&simd, &ref, sizeof(float)) != 0 || fabs(simd - exact) > 2e-3 * scale + 1e-30) {
            printf("mismatch row %d (maq%d): %s %.9g, scalar %.9g, float64 %.9g\n", row, bits, path_name(), simd, ref, exact);
            return 1;
        }
    }
    printf("ok %s %d\n", path_name(), ROWS);
    return 0;
}
