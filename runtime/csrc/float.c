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

/* ================================================================== SIMD paths: rows x token tiles */
#define F_NT 4   /* tokens per tile: each weight vector is loaded (and converted) once for F_NT tokens */

/* Tail j in [j0, T): scalar, into the lanes. */
static inline void tail_lanes(const maq_weight *w, int p, const float *const *x, int NT, int j0, float a[][8]) {
    for (int j = j0; j < w->T; j++) {
        const float wj = w->type == MAQ_TYPE_F32 ? ((const float *)w->data)[(size_t)p * w->T + j]
                                                 : maq_h2f(((const uint16_t *)w->data)[(size_t)p * w->T + j]);
        for (int t = 0; t < NT; t++) a[t][j % 8] += wj * x[t][j];
    }
}

#if defined(MAQ_X86)
#define SSE_FN static inline __attribute__((always_inline, target("ssse3,sse4.1")))

SSE_FN void row_sse_nt(const maq_weight *w, int p, const float *const *x, const int NT, float *out) {
    const int T = w->T, T8 = T & ~7;
    __m128 a0[F_NT], a1[F_NT];
    for (int t = 0; t < NT; t++) a0[t] = a1[t] = _mm_setzero_ps();
    const int f16 = w->type == MAQ_TYPE_F16;
    const float *w32 = (const float *)w->data + (size_t)p * T;
    const uint16_t *w16 = (const uint16_t *)w->data + (size_t)p * T;
    for (int j = 0; j < T8; j += 8) {
        __m128 w0, w1;
        if (f16) {
            const __m128i h = _mm_loadu_si128((const __m128i *)(w16 + j));
            w0 = maq_h2f_sse(_mm_unpacklo_epi16(h, _mm_setzero_si128()));
            w1 = maq_h2f_sse(_mm_unpackhi_epi16(h, _mm_setzero_si128()));
        } else {
            w0 = _mm_loadu_ps(w32 + j);
            w1 = _mm_loadu_ps(w32 + j + 4);
        }
        for (int t = 0; t < NT; t++) {
            a0[t] = _mm_add_ps(a0[t], _mm_mul_ps(w0, _mm_loadu_ps(x[t] + j)));
            a1[t] = _mm_add_ps(a1[t], _mm_mul_ps(w1, _mm_loadu_ps(x[t] + j + 4)));
        }
    }
    float a[F_NT][8];
    for (int t = 0; t < NT; t++) {
        _mm_storeu_ps(a[t], a0[t]);
        _mm_storeu_ps(a[t] + 4, a1[t]);
    }
    tail_lanes(w, p, x, NT, T8, a);
    for (int t = 0; t < NT; t++) out[t] = lanes_final(a[t]);
}

#define AVX2_FN static inline __attribute__((always_inline, target("avx2,f16c,ssse3,sse4.1")))
AVX2_FN void row_avx2_nt(const maq_weight *w, int p, const float *const *x, const int NT, float *out) {
    const int T = w->T, T8 = T & ~7;
    __m256 a8[F_NT];
    for (int t = 0; t < NT; t++) a8[t] = _mm256_setzero_ps();
    const int f16 = w->type == MAQ_TYPE_F16;
    const float *w32 = (const float *)w->data + (size_t)p * T;
    const uint16_t *w16 = (const uint16_t *)w->data + (size_t)p * T;
    for (int j = 0; j < T8; j += 8) {
        const __m256 wv = f16 ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w16 + j))) : _mm256_loadu_ps(w32 + j);
        for (int t = 0; t < NT; t++) a8[t] = _mm256_add_ps(a8[t], _mm256_mul_ps(wv, _mm256_loadu_ps(x[t] + j)));
    }
    float a[F_NT][8];
    for (int t = 0; t < NT; t++) _mm256_storeu_ps(a[t], a8[t]);
    tail_lanes(w, p, x, NT, T8, a);
    for (int t = 0; t < NT; t++) out[t] = lanes_final(a[t]);
}
#endif /* MAQ_X86 */

#if defined(MAQ_NEON)
static inline __attribute__((always_inline)) void row_neon_nt(const maq_weight *w, int p, const float *const *x,
                                                              const int NT, float *out) {
    const int T = w->T, T8 = T & ~7;
    float32x4_t a0[F_NT], a1[F_NT];
    for (int t = 0; t < NT; t++) a0[t] = a1[t] = vdupq_n_f32(0.0f);
    const int f16 = w->type == MAQ_TYPE_F16;
    const float *w32 = (const float *)w->data + (size_t)p * T;
    const uint16_t *w16 = (const uint16_t *)w->data + (size_t)p * T;
    for (int j = 0; j < T8; j += 8) {
        float32x4_t w0, w1;
        if (f16) {
            const float16x8_t h = vreinterpretq_f16_u16(vld1q_u16(w16 + j));
            w0 = vcvt_f32_f16(vget_low_f16(h));
            w1 = vcvt_high_f32_f16(h);
        } else {
            w0 = vld1q_f32(w32 + j);
            w1 = vld1q_f32(w32 + j + 4);
        }
        for (int t = 0; t < NT; t++) {
            a0[t] = vaddq_f32(a0[t], vmulq_f32(w0, vld1q_f32(x[t] + j)));
            a1[t] = vaddq_f32(a1[t], vmulq_f32(w1, vld1q_f32(x[t] + j + 4)));
        }
    }
    float a[F_NT][8];
    for (int t = 0; t < NT; t++) {
        vst1q_f32(a[t], a0[t]);
        vst1q_f32(a[t] + 4, a1[t]);
    }
    tail_lanes(w, p, x, NT, T8, a);
    for (int t = 0; t < NT; t++) out[t] = lanes_final(a[t]);
}
#endif /* MAQ_NEON */

/* ================================================================== the row driver (every SIMD path) */
/* A path's row body: out[t] = row p . token t (t < NT); always_inline, NT a compile-time constant in row_loop. */
typedef void (*row_body)(const maq_weight *w, int p, const float *const *x, const int NT, float *out);

/* Rows [pa, pb) for a tile of NT tokens, Y[t*P + p]; the body is inlined. */
static inline __attribute__((always_inline)) void row_loop(const maq_weight *w, const float *const *x, int pa, int pb,
                                                           float *Y, const int NT, row_body body) {
    const size_t P = (size_t)w->P;
    for (int p = pa; p < pb; p++) {
        float o[F_NT];
        body(w, p, x, NT, o);
        for (int t = 0; t < NT; t++) Y[t * P + p] = o[t];
    }
}

/* The driver each path's rows_* function inlines with its body: a tile of nt tokens (1 <= nt <= F_NT), nt a
 * compile-time constant in each branch. */
static inline __attribute__((always_inline)) void rows_drive(const maq_weight *w, const float *const *x, int nt,
                                                             int pa, int pb, float *Y, row_body body) {
    if (nt == 1) row_loop(w, x, pa, pb, Y, 1, body);
    else if (nt == 2) row_loop(w, x, pa, pb, Y, 2, body);
    else if (nt == 3) row_loop(w, x, pa, pb, Y, 3, body);
    else row_loop(w, x, pa, pb, Y, 4, body);
}

typedef void (*rows_fn)(
    const maq_weight *w, const float *const *x, int nt, int pa, int pb, float *Y);
#if defined(MAQ_X86)
static __attribute__((noinline, target("ssse3,sse4.1"))) void rows_sse(
    const maq_weight *w, const float *const *x, int nt, int pa, int pb, float *Y) {
    rows_drive(w, x, nt, pa, pb, Y, row_sse_nt);
}
static __attribute__((noinline, target("avx2,f16c,ssse3,sse4.1"))) void rows_avx2(
    const maq_weight *w, const float *const *x, int nt, int pa, int pb, float *Y) {
    rows_drive(w, x, nt, pa, pb, Y, row_avx2_nt);
}
#endif
#if defined(MAQ_NEON)
static __attribute__((noinline)) void rows_neon(
    const maq_weight *w, const float *const *x, int nt, int pa, int pb, float *Y) {
    rows_drive(w, x, nt, pa, pb, Y, row_neon_nt);
}
#endif

/* Rows [p0, p1) x B tokens in tiles of F_NT tokens (maq_rows_tiled). */
typedef struct {
    const maq_weight *w;
    const uint8_t *act;
    size_t stride;          /* activation row bytes */
    float *Y;
    rows_fn rows;           /* the path's rows */
} f_tiles;

static void f_tile(void *ctx, int t0, int nt, int pa, int pb) {
    const f_tiles *c = (const f_tiles *)ctx;
    const float *x[F_NT];
    for (int t = 0; t < nt; t++) x[t] = (const float *)(c->act + (size_t)(t0 + t) * c->stride);
    c->rows(c->w, x, nt, pa, pb, c->Y + (size_t)t0 * c->w->P);
}

static void rows_tiled(const maq_weight *w, const uint8_t *act, int B, int p0, int p1, float *Y,
                       rows_fn rows) {
    f_tiles c = {w, act, float_act_stride(w->T), Y, rows};
    maq_rows_tiled(B, p0, p1, F_NT, f_tile, &c);
}

/* ================================================================== dispatch */
/* Rows per SIMD path (no int8 products here: VNNI runs the AVX2 code, dotprod the NEON code); a path without an
 * entry runs the scalar reference. */
static const rows_fn F_PATHS[MAQ_N_PATHS] = {
#if defined(MAQ_X86)
    [MAQ_PATH_SSE] = rows_sse,
    [MAQ_PATH_AVX2] = rows_avx2,
    [MAQ_PATH_VNNI] = rows_avx2,
#endif
#if defined(MAQ_NEON)
    [MAQ_PATH_NEON] = rows_neon,
    [MAQ_PATH_DOTPROD] = rows_neon,
#endif
};

void float_rows(const maq_weight *w, const uint8_t *act, int B, int p0, int p1, float *Y, int path) {
    path = maq_path_int8_base(path);   /* amx: the vnni code (no AMX variant here) */
    if (path > 0 && path < MAQ_N_PATHS && F_PATHS[path])
        rows_tiled(w, act, B, p0, p1, Y, F_PATHS[path]);
    else
        rows_scalar(w, act, B, p0, p1, Y);
}

void float_get_row(const maq_weight *w, int p, float *out) {
    if (w->type == MAQ_TYPE_F32) {
        memcpy(out, (const float *)w->data + (size_t)p * w->T, (size_t)w->T * sizeof(float));
    } else {
        const uint16_t *h = (const uint16_t *)w->data + (size_t)p * w->T;
        for (int j = 0; j < w->T; j++) out[j] = maq_h2f(h[j]);
    }
}
