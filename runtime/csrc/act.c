/* act.c -- activation preprocessing: float X [B][T] -> the per-type activation rows the products read.
 * Layouts are documented in maq_internal.h. One portable implementation (O(B*T), small next to the
 * O(B*T*P) products), shared by every SIMD path, so all paths see identical activations.
 */
#include <math.h>
#include <string.h>

#include "maq_internal.h"

void maq2_act_layout_init(maq2_act_layout *L, int T) {
    size_t off = 0;
    L->T = T;
    L->nb = (T + 127) / 128;
    L->xp = off;    off += MAQ_ROUND_UP((size_t)L->nb * 128, MAQ_ALIGN);
    L->xn = off;    off += MAQ_ROUND_UP((size_t)T, MAQ_ALIGN);
    L->dx = off;    off += MAQ_ROUND_UP((size_t)L->nb * sizeof(float), MAQ_ALIGN);
    L->s4 = off;    off += MAQ_ROUND_UP((size_t)(T / 4) * sizeof(int16_t), MAQ_ALIGN);
    L->xs32 = off;  off += MAQ_ROUND_UP((size_t)((T + 31) / 32) * sizeof(int16_t), MAQ_ALIGN);
    L->xs64 = off;  off += MAQ_ROUND_UP((size_t)((T + 63) / 64) * sizeof(int16_t), MAQ_ALIGN);
    L->xs128 = off; off += MAQ_ROUND_UP((size_t)L->nb * sizeof(int16_t), MAQ_ALIGN);
    L->stride = off;
}

void q8_act_layout_init(q8_act_layout *L, int T) {
    size_t off = 0;
    L->T = T;
    L->nb = T / 32;
    L->qs = off; off += MAQ_ROUND_UP((size_t)T, MAQ_ALIGN);
    L->dx = off; off += MAQ_ROUND_UP((size_t)L->nb * sizeof(float), MAQ_ALIGN);
    L->stride = off;
}

size_t float_act_stride(int T) { return MAQ_ROUND_UP((size_t)T * sizeof(float), MAQ_ALIGN); }

/* roundf(v) (half away from zero) for |v| < 2^31 without a libm call: the truncation i and the fraction
 * v - i are exact, so this is bit-for-bit roundf. NaN -> 0. */
static inline int round_away(float v) {
    if (!(v == v)) return 0;
    const int i = (int)v;
    const float fr = v - (float)i;
    return i + (fr >= 0.5f) - (fr <= -0.5f);
}

/* ggml-style symmetric int8: d = amax/127, q = roundf(x * (1/d)) clamped to -127..127; returns d.
 * (ggml's quantize_row_q8_0_ref: the same operations.) */
static float quant_block_i8(const float *x, int n, int8_t *q) {
    float amax = 0.0f;
    for (int i = 0; i < n; i++) {
        float a = fabsf(x[i]);
        amax = a > amax ? a : amax;
    }
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    for (int i = 0; i < n; i++) {
        const float v = x[i] * id;
        const float c = v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v;   /* only float rounding can exceed */
        q[i] = (int8_t)round_away(c);
    }
    return d;
}

static void maq2_act_row(const maq2_act_layout *L, const float *x, uint8_t *row) {
    const int T = L->T;
    int8_t *xp = (int8_t *)(row + L->xp);        /* [nb][128] permuted */
    int8_t *xn = (int8_t *)(row + L->xn);        /* [T] */
    float *dx = (float *)(row + L->dx);          /* [nb] */
    int16_t *s4 = (int16_t *)(row + L->s4);      /* [T/4] */
    int16_t *xs32 = (int16_t *)(row + L->xs32);  /* [ceil(T/32)], |sum| <= 32*127 */
    int16_t *xs64 = (int16_t *)(row + L->xs64);  /* [ceil(T/64)] */
    int16_t *xs128 = (int16_t *)(row + L->xs128);/* [nb], |sum| <= 128*127 = 16256 */
    memset(xp, 0, (size_t)L->nb * 128);
    for (int b = 0; b < L->nb; b++) {
        const int t0 = 128 * b;
        const int n = T - t0 < 128 ? T - t0 : 128;
        dx[b] = quant_block_i8(x + t0, n, xn + t0);
        for (int c = 0; c < n / 64; c++)          /* full 64-input chunks only */
            for (int i = 0; i < 4; i++)
                for (int t = 0; t < 4; t++)
                    for (int k = 0; k < 4; k++)
                        xp[b * 128 + 32 * k + 16 * c + 4 * i + t] = xn[t0 + 64 * c + 16 * i + 4 * t + k];
    }
    for (int j = 0; j < T / 4; j++)
        s4[j] = (int16_t)(xn[4 * j] + xn[4 * j + 1] + xn[4 * j + 2] + xn[4 * j + 3]);
    /* group sums from the 4-sums (a ragged last group sums what exists) */
    const int n4 = T / 4;
    for (int g = 0; g < (T + 31) / 32; g++) {
        int s = 0;
        for (int j = 8 * g; j < 8 * g + 8 && j < n4; j++) s += s4[j];
        xs32[g] = (int16_t)s;
    }
    for (int g = 0; g < (T + 63) / 64; g++)
        xs64[g] = (int16_t)(xs32[2 * g] + (2 * g + 1 < (T + 31) / 32 ? xs32[2 * g + 1] : 0));
    for (int g = 0; g < L->nb; g++)
        xs128[g] = (int16_t)(xs64[2 * g] + (2 * g + 1 < (T + 63) / 64 ? xs64[2 * g + 1] : 0));
}

static void q8_act_row(const q8_act_layout *L, const float *x, uint8_t *row) {
    int8_t *qs = (int8_t *)(row + L->qs);   /* [T] */
    float *dx = (float *)(row + L->dx);     /* [T/32] fp16-rounded scales */
    for (int b = 0; b < L->nb; b++) {
        float d = quant_block_i8(x + 32 * b, 32, qs + 32 * b);
        dx[b] = maq_h2f(maq_f2h(d));        /* ggml stores the activation scale as fp16 */
    }
}

/* The activation is placed at the first 64-byte boundary of the caller's buffer, hence the slack. */
size_t maq_act_bytes(const maq_weight *w, int B) {
    if (B < 1) B = 1;
    return maq_act_rows_bytes(w, B) + MAQ_ALIGN;
}

size_t maq_act_rows_bytes(const maq_weight *w, int B) {
    switch (w->type) {
    case MAQ_TYPE_MAQ2: {
        maq2_act_layout L;
        maq2_act_layout_init(&L, w->T);
        return L.stride * (size_t)B;
    }
    case MAQ_TYPE_Q8_0: {
        q8_act_layout L;
        q8_act_layout_init(&L, w->T);
        return L.stride * (size_t)B;
    }
    default:
        return float_act_stride(w->T) * (size_t)B;
    }
}

void maq_act_prepare(const maq_weight *w, const float *X, int B, void *act) {
    uint8_t *a = maq_act_align(act);
    const int T = w->T;
    switch (w->type) {
    case MAQ_TYPE_MAQ2: {
        maq2_act_layout L;
        maq2_act_layout_init(&L, T);
        for (int b = 0; b < B; b++) maq2_act_row(&L, X + (size_t)b * T, a + (size_t)b * L.stride);
        break;
    }
    case MAQ_TYPE_Q8_0: {
        q8_act_layout L;
        q8_act_layout_init(&L, T);
        for (int b = 0; b < B; b++) q8_act_row(&L, X + (size_t)b * T, a + (size_t)b * L.stride);
        break;
    }
    default: {
        size_t st = float_act_stride(T);
        for (int b = 0; b < B; b++) memcpy(a + (size_t)b * st, X + (size_t)b * T, (size_t)T * sizeof(float));
        break;
    }
    }
}
