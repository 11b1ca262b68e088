/* q8_0.c -- ggml Q8_0 products and row dequantization.
 *
 * Weight row p: T/32 blocks of { uint16 d (half); int8 qs[32]; } = 34 bytes, packed (no alignment).
 * Activation: the ggml quantization of x to q8_0 blocks (qs int8 [T], dx float [T/32] fp16-rounded).
 *
 * Per block ib all paths compute the exact integer s_ib = sum_i w.qs[i]*x.qs[i]; the float part is fixed:
 *   acc[ib % 4] += (d_w(ib) * dx(ib)) * (float)s_ib;   y = (acc[0] + acc[1]) + (acc[2] + acc[3])
 * (four lanes, so a 128-bit path handles 4 blocks per step), so every path is bit-identical to scalar.
 */
#include <string.h>

#include "maq_internal.h"

#if defined(MAQ_X86)
#include <immintrin.h>
#endif
#if defined(MAQ_NEON)
#include <arm_neon.h>
#endif

#define Q8_BLOCK_BYTES 34

static inline float block_d(const uint8_t *blk) {
    uint16_t h;
    memcpy(&h, blk, 2);
    return maq_h2f(h);
}

static inline float lanes_final(const float acc[4]) { return (acc[0] + acc[1]) + (acc[2] + acc[3]); }

/* ================================================================== scalar reference */
static float row_dot_scalar(const uint8_t *wrow, const int8_t *xq, const float *dx, int nb) {
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int ib = 0; ib < nb; ib++) {
        const uint8_t *blk = wrow + (size_t)ib * Q8_BLOCK_BYTES;
        const int8_t *qs = (const int8_t *)(blk + 2);
        int32_t s = 0;
        for (int i = 0; i < 32; i++) s += (int32_t)qs[i] * xq[32 * ib + i];
        acc[ib % 4] += (block_d(blk) * dx[ib]) * (float)s;
    }
    return lanes_final(acc);
}

static void rows_scalar(const maq_weight *w, const q8_act_layout *L, const uint8_t *act, int B, int p0, int p1,
                        float *Y) {
    const size_t row_bytes = (size_t)L->nb * Q8_BLOCK_BYTES;
    for (int p = p0; p < p1; p++) {
        const uint8_t *wrow = (const uint8_t *)w->data + (size_t)p * row_bytes;
        for (int t = 0; t < B; t++) {
            const uint8_t *a = act + (size_t)t * L->stride;
            Y[(size_t)t * w->P + p] = row_dot_scalar(wrow, (const int8_t *)(a + L->qs), (const float *)(a + L->dx), L->nb);
        }
    }
}

/* ================================================================== dispatch */
void q8_0_rows(const maq_weight *w, const uint8_t *act, int B, int p0, int p1, float *Y, int path) {
    q8_act_layout L;
    q8_act_layout_init(&L, w->T);
    switch (path) {
    default:
        rows_scalar(w, &L, act, B, p0, p1, Y);
        break;
    }
}

void q8_0_get_row(const maq_weight *w, int p, float *out) {
    const int nb = w->T / 32;
    const uint8_t *wrow = (const uint8_t *)w->data + (size_t)p * nb * Q8_BLOCK_BYTES;
    for (int ib = 0; ib < nb; ib++) {
        const uint8_t *blk = wrow + (size_t)ib * Q8_BLOCK_BYTES;
        const float d = block_d(blk);
        const int8_t *qs = (const int8_t *)(blk + 2);
        for (int i = 0; i < 32; i++) out[32 * ib + i] = (float)qs[i] * d;
    }
}
