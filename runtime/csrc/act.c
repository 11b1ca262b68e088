/* act.c -- activation preprocessing: float X [B][T] -> the per-type activation rows the products read.
 * Layouts are documented in maq_internal.h. A scalar reference (used by the scalar path) and SSE4.1 / NEON
 * versions (used by the SIMD paths) that perform the same float operations, so every path sees bit-identical
 * activations (the kernel tests compare all paths, act preparation included, for equality).
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
    L->xz = off;
#if defined(MAQ_X86)
    off += (size_t)((L->nb + 1) / 2) * 256;
#endif
    L->stride = off;
}

void q8_act_layout_init(q8_act_layout *L, int T) {
    size_t off = 0;
    L->T = T;
    L->nb = T / 32;
    L->qs = off; off += MAQ_ROUND_UP((size_t)T, MAQ_ALIGN);
    L->dx = off; off += MAQ_ROUND_UP((size_t)L->nb * sizeof(float), MAQ_ALIGN);
    L->xs = off; off += MAQ_ROUND_UP((size_t)L->nb * sizeof(int32_t), MAQ_ALIGN);
    L->stride = off;
}

size_t float_act_stride(int T) { return MAQ_ROUND_UP((size_t)T * sizeof(float), MAQ_ALIGN); }

/* ================================================================== scalar reference */
/* roundf(v) (half away from zero) for |v| < 2^31 without a libm call: the truncation i and the fraction
 * v - i are exact, so this is bit-for-bit roundf. NaN -> 0. */
static inline int round_away(float v) {
    if (!(v == v)) return 0;
    const int i = (int)v;
    const float fr = v - (float)i;
    return i + (fr >= 0.5f) - (fr <= -0.5f);
}

/* ggml-style symmetric int8 of n inputs: d = amax/127 (NaN inputs ignored), q = roundf(x * (1/d)) clamped to
 * -127..127 (NaN -> 0); returns d. (ggml's quantize_row_q8_0_ref: the same operations.) */
static float quant_block_scalar(const float *x, int n, int8_t *q) {
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

/* One full 64-input chunk of natural-order int8 x (xn64) -> the permuted layout at xp (k-stride 32 bytes). */
static void permute_chunk_scalar(const int8_t *xn64, int8_t *xp) {
    for (int i = 0; i < 4; i++)
        for (int t = 0; t < 4; t++)
            for (int k = 0; k < 4; k++) xp[32 * k + 4 * i + t] = xn64[16 * i + 4 * t + k];
}

/* s4[j] = sum of xn[4j..4j+3] for 32 inputs (8 sums). */
static void sums4_scalar(const int8_t *xn32, int16_t *s4) {
    for (int j = 0; j < 8; j++) s4[j] = (int16_t)(xn32[4 * j] + xn32[4 * j + 1] + xn32[4 * j + 2] + xn32[4 * j + 3]);
}

/* ================================================================== SSE4.1 (x86-64; used by the sse and avx2 paths) */
#if defined(MAQ_X86)
#include <immintrin.h>
#define SSE_FN static __attribute__((target("ssse3,sse4.1")))

SSE_FN float quant_block_sse(const float *x, int n, int8_t *q) {      /* n % 16 == 0; == quant_block_scalar */
    const __m128 absm = _mm_castsi128_ps(_mm_set1_epi32(0x7fffffff));
    __m128 m = _mm_setzero_ps();
    for (int i = 0; i < n; i += 4) m = _mm_max_ps(_mm_and_ps(_mm_loadu_ps(x + i), absm), m);  /* NaN -> keeps m */
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
    const float amax = _mm_cvtss_f32(m);
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    const __m128 idv = _mm_set1_ps(id), hi = _mm_set1_ps(127.0f), lo = _mm_set1_ps(-127.0f);
    const __m128 half = _mm_set1_ps(0.5f), mhalf = _mm_set1_ps(-0.5f);
    for (int i = 0; i < n; i += 16) {
        __m128i qi[4];
        for (int u = 0; u < 4; u++) {
            const __m128 v = _mm_mul_ps(_mm_loadu_ps(x + i + 4 * u), idv);
            const __m128 c = _mm_max_ps(_mm_min_ps(v, hi), lo);
            const __m128i t = _mm_cvttps_epi32(c);
            const __m128 fr = _mm_sub_ps(c, _mm_cvtepi32_ps(t));
            __m128i r = _mm_add_epi32(_mm_sub_epi32(t, _mm_castps_si128(_mm_cmpge_ps(fr, half))),
                                      _mm_castps_si128(_mm_cmple_ps(fr, mhalf)));
            qi[u] = _mm_and_si128(r, _mm_castps_si128(_mm_cmpord_ps(v, v)));              /* NaN -> 0 */
        }
        _mm_storeu_si128((__m128i *)(q + i),
                         _mm_packs_epi16(_mm_packs_epi32(qi[0], qi[1]), _mm_packs_epi32(qi[2], qi[3])));
    }
    return d;
}

SSE_FN void permute_chunk_sse(const int8_t *xn64, int8_t *xp) {
    const __m128i P = _mm_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    __m128i b[4];
    for (int i = 0; i < 4; i++) b[i] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(xn64 + 16 * i)), P);
    const __m128i t0 = _mm_unpacklo_epi32(b[0], b[1]), t1 = _mm_unpacklo_epi32(b[2], b[3]);
    const __m128i t2 = _mm_unpackhi_epi32(b[0], b[1]), t3 = _mm_unpackhi_epi32(b[2], b[3]);
    _mm_store_si128((__m128i *)(xp + 0), _mm_unpacklo_epi64(t0, t1));
    _mm_store_si128((__m128i *)(xp + 32), _mm_unpackhi_epi64(t0, t1));
    _mm_store_si128((__m128i *)(xp + 64), _mm_unpacklo_epi64(t2, t3));
    _mm_store_si128((__m128i *)(xp + 96), _mm_unpackhi_epi64(t2, t3));
}

SSE_FN void sums4_sse(const int8_t *xn32, int16_t *s4) {
    const __m128i one8 = _mm_set1_epi8(1), one16 = _mm_set1_epi16(1);
    const __m128i a = _mm_madd_epi16(_mm_maddubs_epi16(one8, _mm_loadu_si128((const __m128i *)xn32)), one16);
    const __m128i b = _mm_madd_epi16(_mm_maddubs_epi16(one8, _mm_loadu_si128((const __m128i *)(xn32 + 16))), one16);
    _mm_storeu_si128((__m128i *)s4, _mm_packs_epi32(a, b));
}
#endif

/* ================================================================== NEON (aarch64) */
#if defined(MAQ_NEON)
#include <arm_neon.h>

static float quant_block_neon(const float *x, int n, int8_t *q) {      /* n % 16 == 0; == quant_block_scalar */
    float32x4_t m = vdupq_n_f32(0.0f);
    for (int i = 0; i < n; i += 4) m = vmaxnmq_f32(m, vabsq_f32(vld1q_f32(x + i)));   /* maxnm ignores NaN */
    const float amax = vmaxnmvq_f32(m);
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    for (int i = 0; i < n; i += 16) {
        int32x4_t qi[4];
        for (int u = 0; u < 4; u++) {
            const float32x4_t v = vmulq_f32(vld1q_f32(x + i + 4 * u), vdupq_n_f32(id));
            /* clamp (NaN stays NaN), then FCVTAS: round to nearest, ties away (= roundf), NaN -> 0 */
            qi[u] = vcvtaq_s32_f32(vmaxq_f32(vminq_f32(v, vdupq_n_f32(127.0f)), vdupq_n_f32(-127.0f)));
        }
        const int16x8_t a = vcombine_s16(vmovn_s32(qi[0]), vmovn_s32(qi[1]));
        const int16x8_t b = vcombine_s16(vmovn_s32(qi[2]), vmovn_s32(qi[3]));
        vst1q_s8(q + i, vcombine_s8(vmovn_s16(a), vmovn_s16(b)));
    }
    return d;
}

static void permute_chunk_neon(const int8_t *xn64, int8_t *xp) {
    static const uint8_t P[16] = {0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15};
    const uint8x16_t pv = vld1q_u8(P);
    uint32x4_t b[4];
    for (int i = 0; i < 4; i++) b[i] = vreinterpretq_u32_u8(vqtbl1q_u8(vld1q_u8((const uint8_t *)xn64 + 16 * i), pv));
    const uint32x4_t t0 = vtrn1q_u32(b[0], b[1]), t1 = vtrn2q_u32(b[0], b[1]);
    const uint32x4_t t2 = vtrn1q_u32(b[2], b[3]), t3 = vtrn2q_u32(b[2], b[3]);
    vst1q_u8((uint8_t *)xp + 0, vreinterpretq_u8_u64(vtrn1q_u64(vreinterpretq_u64_u32(t0), vreinterpretq_u64_u32(t2))));
    vst1q_u8((uint8_t *)xp + 32, vreinterpretq_u8_u64(vtrn1q_u64(vreinterpretq_u64_u32(t1), vreinterpretq_u64_u32(t3))));
    vst1q_u8((uint8_t *)xp + 64, vreinterpretq_u8_u64(vtrn2q_u64(vreinterpretq_u64_u32(t0), vreinterpretq_u64_u32(t2))));
    vst1q_u8((uint8_t *)xp + 96, vreinterpretq_u8_u64(vtrn2q_u64(vreinterpretq_u64_u32(t1), vreinterpretq_u64_u32(t3))));
}

static void sums4_neon(const int8_t *xn32, int16_t *s4) {
    vst1q_s16(s4, vpaddq_s16(vpaddlq_s8(vld1q_s8(xn32)), vpaddlq_s8(vld1q_s8(xn32 + 16))));
}
#endif

/* The AMX operands after the B rows (layout in maq_internal.h): the rows' natural-order int8 inputs regrouped,
 * 4 inputs (one int32) at a time, and the tokens' block scales and input sums gathered 16 tokens per vector; copies
 * only, so every path's products see the same numbers. */
static void maq2_act_tiles(const maq2_act_layout *L, uint8_t *a, int B) {
    const int T = L->T, nch = (T + 63) / 64, nb = L->nb, ntt = (B + 15) / 16;
    const size_t ts = maq2_act_tile_stride(T);
    for (int j = 0; j < ntt; j++) {
        uint8_t *tile = a + (size_t)B * L->stride + (size_t)j * ts;
        uint32_t *ops = (uint32_t *)tile;                          /* [nch][16 k4][16 n] */
        float *dx = (float *)(tile + (size_t)nch * 1024);          /* [nb][16 n] */
        int32_t *xs = (int32_t *)(dx + (size_t)nb * 16);           /* [nb][16 n] */
        for (int n = 0; n < 16; n++) {
            const int t = 16 * j + n;
            const uint8_t *row = t < B ? a + (size_t)t * L->stride : NULL;
            const int8_t *xn = row ? (const int8_t *)(row + L->xn) : NULL;
            for (int c = 0; c < nch; c++)
                for (int k4 = 0; k4 < 16; k4++) {
                    const int i = 64 * c + 4 * k4;
                    uint32_t v = 0;
                    if (xn && i < T) memcpy(&v, xn + i, 4);   /* T % 16 == 0: a 4-input group is whole or absent */
                    ops[(size_t)c * 256 + 16 * k4 + n] = v;
                }
            for (int b = 0; b < nb; b++) {
                dx[16 * b + n] = row ? ((const float *)(row + L->dx))[b] : 0.0f;
                xs[16 * b + n] = row ? 128 * (int32_t)((const int16_t *)(row + L->xs128))[b] : 0;
            }
        }
    }
}

/* ================================================================== per-path row preprocessing */
typedef struct {
    float (*quant)(const float *x, int n, int8_t *q);   /* n % 16 == 0 */
    void (*permute)(const int8_t *xn64, int8_t *xp);
    void (*sums4)(const int8_t *xn32, int16_t *s4);
} act_ops;

static void act_ops_for(int path, act_ops *o) {
    path = maq_path_x86_base(path);
    o->quant = quant_block_scalar;
    o->permute = permute_chunk_scalar;
    o->sums4 = sums4_scalar;
#if defined(MAQ_X86)
    if (path == MAQ_PATH_SSE || path == MAQ_PATH_AVX2) {
        o->quant = quant_block_sse;
        o->permute = permute_chunk_sse;
        o->sums4 = sums4_sse;
    }
#endif
#if defined(MAQ_NEON)
    if (path == MAQ_PATH_NEON || path == MAQ_PATH_DOTPROD) {
        o->quant = quant_block_neon;
        o->permute = permute_chunk_neon;
        o->sums4 = sums4_neon;
    }
#endif
    (void)path;
}

static void maq2_act_row(const maq2_act_layout *L, const act_ops *o, const float *x, uint8_t *row) {
    const int T = L->T;
    int8_t *xp = (int8_t *)(row + L->xp);        /* [nb][128] permuted */
    int8_t *xn = (int8_t *)(row + L->xn);        /* [T] */
    float *dx = (float *)(row + L->dx);          /* [nb] */
    int16_t *s4 = (int16_t *)(row + L->s4);      /* [T/4] */
    int16_t *xs32 = (int16_t *)(row + L->xs32);  /* [ceil(T/32)], |sum| <= 32*127 */
    int16_t *xs64 = (int16_t *)(row + L->xs64);  /* [ceil(T/64)] */
    int16_t *xs128 = (int16_t *)(row + L->xs128);/* [nb], |sum| <= 128*127 = 16256 */
    for (int b = 0; b < L->nb; b++) {
        const int t0 = 128 * b;
        const int n = T - t0 < 128 ? T - t0 : 128;
        dx[b] = o->quant(x + t0, n, xn + t0);
        int c = 0;
        for (; c < n / 64; c++) o->permute(xn + t0 + 64 * c, xp + 128 * b + 16 * c);   /* full chunks */
        for (; c < 2; c++)                                                            /* rest: zero */
            for (int k = 0; k < 4; k++) memset(xp + 128 * b + 32 * k + 16 * c, 0, 16);
    }
#if defined(MAQ_X86)
    int8_t *xz = (int8_t *)(row + L->xz);        /* [ceil(nb/2)][4][2][32] */
    for (int b = 0; b < L->nb; b++)
        for (int k = 0; k < 4; k++) memcpy(xz + 256 * (b >> 1) + 64 * k + 32 * (b & 1), xp + 128 * b + 32 * k, 32);
    if (L->nb & 1)
        for (int k = 0; k < 4; k++) memset(xz + 256 * (L->nb >> 1) + 64 * k + 32, 0, 32);
#endif
    int j = 0;
    for (; j + 8 <= T / 4; j += 8) o->sums4(xn + 4 * j, s4 + j);
    for (; j < T / 4; j++) s4[j] = (int16_t)(xn[4 * j] + xn[4 * j + 1] + xn[4 * j + 2] + xn[4 * j + 3]);
    /* group sums from the 4-sums (a ragged last group sums what exists) */
    const int n4 = T / 4, n32 = (T + 31) / 32, n64 = (T + 63) / 64;
    for (int g = 0; g < n32; g++) {
        int sum = 0;
        for (int k = 8 * g; k < 8 * g + 8 && k < n4; k++) sum += s4[k];
        xs32[g] = (int16_t)sum;
    }
    for (int g = 0; g < n64; g++) xs64[g] = (int16_t)(xs32[2 * g] + (2 * g + 1 < n32 ? xs32[2 * g + 1] : 0));
    for (int g = 0; g < L->nb; g++) xs128[g] = (int16_t)(xs64[2 * g] + (2 * g + 1 < n64 ? xs64[2 * g + 1] : 0));
}

static void q8_act_row(const q8_act_layout *L, const act_ops *o, const float *x, uint8_t *row) {
    int8_t *qs = (int8_t *)(row + L->qs);   /* [T] */
    float *dx = (float *)(row + L->dx);     /* [T/32] fp16-rounded scales */
    int32_t *xs = (int32_t *)(row + L->xs); /* [T/32] block sums of qs */
    for (int b = 0; b < L->nb; b++) {
        float d = o->quant(x + 32 * b, 32, qs + 32 * b);
        dx[b] = maq_h2f(maq_f2h(d));        /* ggml stores the activation scale as fp16 */
        int32_t s = 0;
        for (int i = 0; i < 32; i++) s += qs[32 * b + i];
        xs[b] = s;
    }
}

size_t maq_act_bytes(const maq_weight *w, int B) {
    if (B < 1) B = 1;
    return maq_act_rows_bytes(w, B) + (w->in_signs ? (size_t)w->T * sizeof(float) : 0) + MAQ_ALIGN;
}

/* 1/sqrt(block) for block = 2^k as a float: 2^-(k/2), times 1/sqrt(2) rounded to float when k is odd (the
 * float32 of 1/sqrt(2^k), as numpy computes it: halving is exact). */
static float rotate_scale(int block) {
    int k = 0;
    while ((1 << k) < block) k++;
    return (k & 1 ? 0.70710678118654752f : 1.0f) / (float)(1 << (k / 2));
}

/* Spans 1, 2 and 4 of the butterflies on the 8 signed inputs x[0..7] * s[0..7], in registers (the same operations
 * on every element, in the same order, as three passes of the generic loop below). */
static inline void rotate8(const float *x, const float *s, float *out) {
    const float v0 = x[0] * s[0], v1 = x[1] * s[1], v2 = x[2] * s[2], v3 = x[3] * s[3];
    const float v4 = x[4] * s[4], v5 = x[5] * s[5], v6 = x[6] * s[6], v7 = x[7] * s[7];
    const float a0 = v0 + v1, a1 = v0 - v1, a2 = v2 + v3, a3 = v2 - v3;          /* span 1 */
    const float a4 = v4 + v5, a5 = v4 - v5, a6 = v6 + v7, a7 = v6 - v7;
    const float b0 = a0 + a2, b2 = a0 - a2, b1 = a1 + a3, b3 = a1 - a3;          /* span 2 */
    const float b4 = a4 + a6, b6 = a4 - a6, b5 = a5 + a7, b7 = a5 - a7;
    out[0] = b0 + b4, out[4] = b0 - b4, out[1] = b1 + b5, out[5] = b1 - b5;      /* span 4 */
    out[2] = b2 + b6, out[6] = b2 - b6, out[3] = b3 + b7, out[7] = b3 - b7;
}

/* A whole 64-input block: spans 1/2/4 per group of 8, then spans 8/16/32 and the scale 1/8 on a local copy
 * (constant trip counts: the compiler keeps it in vector registers). Same operations per element, same order. */
static void rotate64(const float *x, const float *s, float *out) {
    float v[64];
    for (int i = 0; i < 64; i += 8) rotate8(x + i, s + i, v + i);
    for (int h = 8; h < 64; h *= 2)
        for (int i = 0; i < 64; i += 2 * h)
            for (int j = i; j < i + h; j++) {
                const float a = v[j], c = v[j + h];
                v[j] = a + c;
                v[j + h] = a - c;
            }
    for (int i = 0; i < 64; i++) out[i] = v[i] * 0.125f;
}

void maq_rotate_row(const float *x, const float *signs, int T, int block, float *out) {
    int h = 1;
    if (block == 64) {                      /* the common case (T a multiple of 64) */
        for (int i = 0; i < T; i += 64) rotate64(x + i, signs + i, out + i);
        return;
    }
    if (block >= 8) {                       /* T is a multiple of block: whole groups of 8 */
        for (int i = 0; i < T; i += 8) rotate8(x + i, signs + i, out + i);
        h = 8;
    } else {
        for (int i = 0; i < T; i++) out[i] = x[i] * signs[i];
    }
    for (; h < block; h *= 2)
        for (int b0 = 0; b0 < T; b0 += block)
            for (int i = b0; i < b0 + block; i += 2 * h)
                for (int j = i; j < i + h; j++) {
                    const float a = out[j], c = out[j + h];
                    out[j] = a + c;
                    out[j + h] = a - c;
                }
    const float s = rotate_scale(block);
    for (int i = 0; i < T; i++) out[i] *= s;
}

/* ================================================================== per-type activation rows (maq_type_traits) */
size_t maq2_act_rows_bytes(int T, int B) {
    maq2_act_layout L;
    maq2_act_layout_init(&L, T);
    return L.stride * (size_t)B + maq2_act_tiles_bytes(T, B);
}
size_t q8_act_rows_bytes(int T, int B) {
    q8_act_layout L;
    q8_act_layout_init(&L, T);
    return L.stride * (size_t)B;
}
size_t float_act_rows_bytes(int T, int B) { return float_act_stride(T) * (size_t)B; }

size_t maq_act_rows_bytes(const maq_weight *w, int B) { return maq_traits(w->type)->act_rows_bytes(w->T, B); }

/* Row b of the input as the weight multiplies it: X's row, or R times it in tmp (a rotated weight). */
static const float *input_row(const maq_weight *w, const float *X, int b, float *tmp) {
    const float *x = X + (size_t)b * w->T;
    if (!w->in_signs) return x;
    maq_rotate_row(x, w->in_signs, w->T, w->in_block, tmp);
    return tmp;
}

/* MAQ family: the rows, then the AMX operand tiles (path "amx") or a trailer saying there are none. */
void maq2_act_prepare(const maq_weight *w, const float *X, int B, uint8_t *a, float *tmp, int path) {
    act_ops o;
    act_ops_for(path, &o);
    maq2_act_layout L;
    maq2_act_layout_init(&L, w->T);
    for (int b = 0; b < B; b++) maq2_act_row(&L, &o, input_row(w, X, b, tmp), a + (size_t)b * L.stride);
    if (maq2_act_tiles_bytes(w->T, B)) {
        uint32_t mark = 0;
        if (path == MAQ_PATH_AMX) {
            maq2_act_tiles(&L, a, B);
            mark = MAQ_AMX_TILES_MARK ^ (uint32_t)B;
        }
        memcpy(maq2_act_tiles_mark(a, L.stride, w->T, B), &mark, 4);
    }
}
void q8_act_prepare(const maq_weight *w, const float *X, int B, uint8_t *a, float *tmp, int path) {
    act_ops o;
    act_ops_for(path, &o);
    q8_act_layout L;
    q8_act_layout_init(&L, w->T);
    for (int b = 0; b < B; b++) q8_act_row(&L, &o, input_row(w, X, b, tmp), a + (size_t)b * L.stride);
}
void float_act_prepare(const maq_weight *w, const float *X, int B, uint8_t *a, float *tmp, int path) {
    (void)path;
    const size_t st = float_act_stride(w->T);
    for (int b = 0; b < B; b++) memcpy(a + (size_t)b * st, input_row(w, X, b, tmp), (size_t)w->T * sizeof(float));
}

void maq_act_prepare(const maq_weight *w, const float *X, int B, void *act) {
    uint8_t *a = maq_act_align(act);
    float *tmp = (float *)(a + maq_act_rows_bytes(w, B));   /* [T] rotated row (maq_act_bytes reserves it) */
    maq_traits(w->type)->act_prepare(w, X, B, a, tmp, maq_path_id());
}
