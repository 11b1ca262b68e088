/* float.c -- F32 and F16 products and rows.
 *
 * Weight row p: float [T] (F32) or IEEE half [T] (F16). Activation: float [T] per token.
 * Fixed reduction order shared by all paths (8 lanes, no FMA):
 *   acc[j % 8] += w_j * x_j;   y = ((a0+a4) + (a2+a6)) + ((a1+a5) + (a3+a7))
 * so a 128-bit path (two 4-lane vectors) and a 256-bit path (one 8-lane vector) are bit-identical to scalar.
 */
#include <string.h>

#include "maq_internal.h"

#if defined(MAQ_X86)
#include <immintrin.h>
#endif
#if defined(MAQ_NEON)
#include <arm_neon.h>
#endif

static inline float lanes_final(const float a[8]) {
    return ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]));
}

/* ================================================================== scalar reference */
static float dot_f32_scalar(const float *w, const float *x, int T) {
    float a[8] = {0};
    for (int j = 0; j < T; j++) a[j % 8] += w[j] * x[j];
    return lanes_final(a);
}

static float dot_f16_scalar(const uint16_t *w, const float *x, int T) {
    float a[8] = {0};
    for (int j = 0; j < T; j++) a[j % 8] += maq_h2f(w[j]) * x[j];
    return lanes_final(a);
}

static void rows_scalar(const maq_weight *w, const uint8_t *act, int B, int p0, int p1, float *Y) {
    const size_t st = float_act_stride(w->T);
    for (int p = p0; p < p1; p++) {
        for (int t = 0; t < B; t++) {
            const float *x = (const float *)(act + (size_t)t * st);
            float y;
            if (w->type == MAQ_TYPE_F32) y = dot_f32_scalar((const float *)w->data + (size_t)p * w->T, x, w->T);
            else y = dot_f16_scalar((const uint16_t *)w->data + (size_t)p * w->T, x, w->T);
            Y[(size_t)t * w->P + p] = y;
        }
    }
}

/* ================================================================== dispatch */
void float_rows(const maq_weight *w, const uint8_t *act, int B, int p0, int p1, float *Y, int path) {
    switch (path) {
    default:
        rows_scalar(w, act, B, p0, p1, Y);
        break;
    }
}

void float_get_row(const maq_weight *w, int p, float *out) {
    if (w->type == MAQ_TYPE_F32) {
        memcpy(out, (const float *)w->data + (size_t)p * w->T, (size_t)w->T * sizeof(float));
    } else {
        const uint16_t *h = (const uint16_t *)w->data + (size_t)p * w->T;
        for (int j = 0; j < w->T; j++) out[j] = maq_h2f(h[j]);
    }
}
