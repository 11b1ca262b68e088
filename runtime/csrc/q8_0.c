/* q8_0.c -- ggml Q8_0 products and row dequantization.
 *
 * Weight row p: T/32 blocks of { uint16 d (half); int8 qs[32]; } = 34 bytes, packed (no alignment).
 * Activation: the ggml quantization of x to q8_0 blocks (qs int8 [T], dx float [T/32] fp16-rounded).
 *
 * Per block ib all paths compute the exact integer s_ib = sum_i w.qs[i]*x.qs[i]; the float part is fixed:
 *   acc[ib % 4] += (d_w(ib) * dx(ib)) * (float)s_ib;   y = (acc[0] + acc[1]) + (acc[2] + acc[3])
 * (four lanes, so a 128-bit path handles 4 blocks per step), so every path is bit-identical to scalar.
 */
#include <stdlib.h>
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

/* ================================================================== tiling shared by the SIMD paths */
#define Q8_NT 4   /* tokens per tile: each weight block is loaded once for NT tokens */

/* ================================================================== SSE (SSSE3 + SSE4.1), x86-64 */
#if defined(MAQ_X86)
#define SSE_FN static inline __attribute__((always_inline, target("ssse3,sse4.1")))

/* int32 x4 partial sums of one block: |w| (u8) x sign(x, w) (s8) pairs never saturate int16 since
 * |w| <= 128 and |x| <= 127 (activations are quantized to -127..127): 2*128*127 = 32512. */
SSE_FN __m128i block_dot_sse(const uint8_t *blk, const int8_t *x) {
    const __m128i w0 = _mm_loadu_si128((const __m128i *)(blk + 2));
    const __m128i w1 = _mm_loadu_si128((const __m128i *)(blk + 18));
    const __m128i x0 = _mm_load_si128((const __m128i *)x), x1 = _mm_load_si128((const __m128i *)(x + 16));
    /* widen each half to int32 before adding: two int16 pair sums can exceed 32767 together */
    const __m128i one = _mm_set1_epi16(1);
    return _mm_add_epi32(_mm_madd_epi16(_mm_maddubs_epi16(_mm_abs_epi8(w0), _mm_sign_epi8(x0, w0)), one),
                         _mm_madd_epi16(_mm_maddubs_epi16(_mm_abs_epi8(w1), _mm_sign_epi8(x1, w1)), one));
}

SSE_FN void row_sse_nt(const uint8_t *wrow, const int8_t *const *xq, const float *const *dx, const int NT, int nb,
                       float *out) {
    __m128 f[Q8_NT];
    for (int t = 0; t < NT; t++) f[t] = _mm_setzero_ps();
    const int nq = nb / 4;
    for (int q = 0; q < nq; q++) {
        const int ib = 4 * q;
        const uint8_t *b0 = wrow + (size_t)ib * Q8_BLOCK_BYTES;
        uint16_t h[4];
        for (int j = 0; j < 4; j++) memcpy(&h[j], b0 + (size_t)j * Q8_BLOCK_BYTES, 2);
        const __m128 dw = maq_h2f_sse(_mm_setr_epi32(h[0], h[1], h[2], h[3]));     /* exact, as maq_h2f */
        for (int t = 0; t < NT; t++) {
            const int8_t *x = xq[t] + 32 * ib;
            const __m128i s01 = _mm_hadd_epi32(block_dot_sse(wrow + (size_t)ib * Q8_BLOCK_BYTES, x),
                                               block_dot_sse(wrow + (size_t)(ib + 1) * Q8_BLOCK_BYTES, x + 32));
            const __m128i s23 = _mm_hadd_epi32(block_dot_sse(wrow + (size_t)(ib + 2) * Q8_BLOCK_BYTES, x + 64),
                                               block_dot_sse(wrow + (size_t)(ib + 3) * Q8_BLOCK_BYTES, x + 96));
            const __m128 sv = _mm_cvtepi32_ps(_mm_hadd_epi32(s01, s23));
            f[t] = _mm_add_ps(f[t], _mm_mul_ps(_mm_mul_ps(dw, _mm_loadu_ps(dx[t] + ib)), sv));
        }
    }
    float acc[Q8_NT][4];
    for (int t = 0; t < NT; t++) _mm_storeu_ps(acc[t], f[t]);
    for (int ib = 4 * nq; ib < nb; ib++) {          /* remainder blocks: SIMD dot, scalar float update */
        const uint8_t *blk = wrow + (size_t)ib * Q8_BLOCK_BYTES;
        const float d = block_d(blk);
        for (int t = 0; t < NT; t++) {
            __m128i v = block_dot_sse(blk, xq[t] + 32 * ib);
            v = _mm_add_epi32(v, _mm_shuffle_epi32(v, 0x4E));
            v = _mm_add_epi32(v, _mm_shuffle_epi32(v, 0xB1));
            acc[t][ib % 4] += (d * dx[t][ib]) * (float)_mm_cvtsi128_si32(v);
        }
    }
    for (int t = 0; t < NT; t++) out[t] = lanes_final(acc[t]);
}

#define AVX2_FN static inline __attribute__((always_inline, target("avx2,f16c,ssse3,sse4.1")))

AVX2_FN __m256i block_dot_avx2(const uint8_t *blk, const int8_t *x) {
    const __m256i w = _mm256_loadu_si256((const __m256i *)(blk + 2));
    const __m256i xv = _mm256_load_si256((const __m256i *)x);
    return _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_abs_epi8(w), _mm256_sign_epi8(xv, w)), _mm256_set1_epi16(1));
}

/* VNNI path: the same 8 int32 lanes of 4-product sums per block with one vpdpbusd (|w| u8 x sign-moved x s8: each
 * product <= 128*127, sums of 4 exact), so the block integer equals the AVX2 one. Inlined once row_avx2_any sits
 * inside the VNNI-targeted row functions. */
#define MAQ_VNNI_TARGET "avx2,f16c,ssse3,sse4.1,avx512f,avx512bw,avx512vl,avx512vnni"
static inline __attribute__((target(MAQ_VNNI_TARGET))) __m256i block_dot_vnni(const uint8_t *blk, const int8_t *x) {
    const __m256i w = _mm256_loadu_si256((const __m256i *)(blk + 2));
    const __m256i xv = _mm256_load_si256((const __m256i *)x);
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_abs_epi8(w), _mm256_sign_epi8(xv, w));
}
#define BLOCK_DOT_X86(VNNI, blk, x) ((VNNI) ? block_dot_vnni((blk), (x)) : block_dot_avx2((blk), (x)))

/* VNNI (compile time): 0 = AVX2 maddubs + madd, 1 = vpdpbusd (only inside MAQ_VNNI_TARGET functions). */
AVX2_FN void row_avx2_any(const uint8_t *wrow, const int8_t *const *xq, const float *const *dx, const int NT, int nb,
                          float *out, const int VNNI) {
    __m128 f[Q8_NT];
    for (int t = 0; t < NT; t++) f[t] = _mm_setzero_ps();
    const int nq = nb / 4;
    for (int q = 0; q < nq; q++) {
        const int ib = 4 * q;
        const uint8_t *b0 = wrow + (size_t)ib * Q8_BLOCK_BYTES;
        uint16_t h4[4];
        for (int j = 0; j < 4; j++) memcpy(&h4[j], b0 + (size_t)j * Q8_BLOCK_BYTES, 2);
        const __m128 dw = _mm_cvtph_ps(_mm_loadl_epi64((const __m128i *)h4));     /* exact, as maq_h2f */
        for (int t = 0; t < NT; t++) {
            const int8_t *x = xq[t] + 32 * ib;
            const __m256i h01 = _mm256_hadd_epi32(BLOCK_DOT_X86(VNNI, b0, x), BLOCK_DOT_X86(VNNI, b0 + Q8_BLOCK_BYTES, x + 32));
            const __m256i h23 = _mm256_hadd_epi32(BLOCK_DOT_X86(VNNI, b0 + 2 * Q8_BLOCK_BYTES, x + 64),
                                                  BLOCK_DOT_X86(VNNI, b0 + 3 * Q8_BLOCK_BYTES, x + 96));
            const __m256i s8 = _mm256_hadd_epi32(h01, h23);
            const __m128i s = _mm_add_epi32(_mm256_castsi256_si128(s8), _mm256_extracti128_si256(s8, 1));
            f[t] = _mm_add_ps(f[t], _mm_mul_ps(_mm_mul_ps(dw, _mm_loadu_ps(dx[t] + ib)), _mm_cvtepi32_ps(s)));
        }
    }
    float acc[Q8_NT][4];
    for (int t = 0; t < NT; t++) _mm_storeu_ps(acc[t], f[t]);
    for (int ib = 4 * nq; ib < nb; ib++) {          /* remainder blocks: SIMD dot, scalar float update */
        const uint8_t *blk = wrow + (size_t)ib * Q8_BLOCK_BYTES;
        const float d = block_d(blk);
        for (int t = 0; t < NT; t++) {
            const __m256i v8 = BLOCK_DOT_X86(VNNI, blk, xq[t] + 32 * ib);
            __m128i v = _mm_add_epi32(_mm256_castsi256_si128(v8), _mm256_extracti128_si256(v8, 1));
            v = _mm_add_epi32(v, _mm_shuffle_epi32(v, 0x4E));
            v = _mm_add_epi32(v, _mm_shuffle_epi32(v, 0xB1));
            acc[t][ib % 4] += (d * dx[t][ib]) * (float)_mm_cvtsi128_si32(v);
        }
    }
    for (int t = 0; t < NT; t++) out[t] = lanes_final(acc[t]);
}
AVX2_FN void row_avx2_nt(const uint8_t *wrow, const int8_t *const *xq, const float *const *dx, const int NT, int nb,
                         float *out) {
    row_avx2_any(wrow, xq, dx, NT, nb, out, 0);
}
static inline __attribute__((always_inline, target(MAQ_VNNI_TARGET))) void row_vnni_nt(const uint8_t *wrow,
                                                                                      const int8_t *const *xq,
                                                                                      const float *const *dx,
                                                                                      const int NT, int nb,
                                                                                      float *out) {
    row_avx2_any(wrow, xq, dx, NT, nb, out, 1);
}
#endif /* MAQ_X86 */

/* ================================================================== NEON (128-bit), aarch64 */
#if defined(MAQ_NEON)
static inline int32x4_t block_dot_neon(const uint8_t *blk, const int8_t *x) {
    const int8x16_t w0 = vld1q_s8((const int8_t *)(blk + 2)), w1 = vld1q_s8((const int8_t *)(blk + 18));
    const int8x16_t x0 = vld1q_s8(x), x1 = vld1q_s8(x + 16);
    /* each int16 lane sums two products of magnitude <= 128*127: no overflow */
    const int16x8_t p0 = vmlal_high_s8(vmull_s8(vget_low_s8(w0), vget_low_s8(x0)), w0, x0);
    const int16x8_t p1 = vmlal_high_s8(vmull_s8(vget_low_s8(w1), vget_low_s8(x1)), w1, x1);
    return vpadalq_s16(vpaddlq_s16(p0), p1);
}

/* SDOT version (dotprod path). */
static inline MAQ_DOTPROD_ATTR int32x4_t block_dot_dp(const uint8_t *blk, const int8_t *x) {
    const int32x4_t a = vdotq_s32(vdupq_n_s32(0), vld1q_s8((const int8_t *)(blk + 2)), vld1q_s8(x));
    return vdotq_s32(a, vld1q_s8((const int8_t *)(blk + 18)), vld1q_s8(x + 16));
}
#define BLOCK_DOT(DOT, blk, x) ((DOT) ? block_dot_dp((blk), (x)) : block_dot_neon((blk), (x)))

/* DOT (compile time): 0 = NEON widening multiplies, 1 = SDOT (only inside MAQ_DOTPROD_ATTR functions). */
static inline __attribute__((always_inline)) void row_neon_any(const uint8_t *wrow, const int8_t *const *xq,
                                                               const float *const *dx, const int NT, int nb, float *out,
                                                               const int DOT) {
    float32x4_t f[Q8_NT];
    for (int t = 0; t < NT; t++) f[t] = vdupq_n_f32(0.0f);
    const int nq = nb / 4;
    for (int q = 0; q < nq; q++) {
        const int ib = 4 * q;
        const uint8_t *b0 = wrow + (size_t)ib * Q8_BLOCK_BYTES;
        uint16_t h[4];
        for (int j = 0; j < 4; j++) memcpy(&h[j], b0 + (size_t)j * Q8_BLOCK_BYTES, 2);
        const float32x4_t dw = vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(h)));      /* exact, as maq_h2f */
        for (int t = 0; t < NT; t++) {
            const int8_t *x = xq[t] + 32 * ib;
            const int32x4_t s =
                vpaddq_s32(vpaddq_s32(BLOCK_DOT(DOT, b0, x), BLOCK_DOT(DOT, b0 + Q8_BLOCK_BYTES, x + 32)),
                           vpaddq_s32(BLOCK_DOT(DOT, b0 + 2 * Q8_BLOCK_BYTES, x + 64),
                                      BLOCK_DOT(DOT, b0 + 3 * Q8_BLOCK_BYTES, x + 96)));
            f[t] = vaddq_f32(f[t], vmulq_f32(vmulq_f32(dw, vld1q_f32(dx[t] + ib)), vcvtq_f32_s32(s)));
        }
    }
    float acc[Q8_NT][4];
    for (int t = 0; t < NT; t++) vst1q_f32(acc[t], f[t]);
    for (int ib = 4 * nq; ib < nb; ib++) {          /* remainder blocks: SIMD dot, scalar float update */
        const uint8_t *blk = wrow + (size_t)ib * Q8_BLOCK_BYTES;
        const float d = block_d(blk);
        for (int t = 0; t < NT; t++)
            acc[t][ib % 4] += (d * dx[t][ib]) * (float)vaddvq_s32(BLOCK_DOT(DOT, blk, xq[t] + 32 * ib));
    }
    for (int t = 0; t < NT; t++) out[t] = lanes_final(acc[t]);
}
static inline __attribute__((always_inline)) void row_neon_nt(const uint8_t *wrow, const int8_t *const *xq,
                                                              const float *const *dx, const int NT, int nb, float *out) {
    row_neon_any(wrow, xq, dx, NT, nb, out, 0);
}
static inline __attribute__((always_inline)) MAQ_DOTPROD_ATTR void row_dot_nt(const uint8_t *wrow, const int8_t *const *xq,
                                                                            const float *const *dx, const int NT, int nb,
                                                                            float *out) {
    row_neon_any(wrow, xq, dx, NT, nb, out, 1);
}
#endif /* MAQ_NEON */

/* ================================================================== the row driver (every SIMD path) */
/* A path's row body: out[t] = row wrow . token t (t < NT); always_inline, NT a compile-time constant in row_loop. */
typedef void (*row_body)(const uint8_t *wrow, const int8_t *const *xq, const float *const *dx, const int NT, int nb,
                         float *out);

/* Rows [pa, pb) for a tile of NT tokens, Y[t*P + p]; the body is inlined (constants hoisted). pf: rows ahead to
 * prefetch (0: none; rows_tiled decides, see maq_internal.h). */
static inline __attribute__((always_inline)) void row_loop(const maq_weight *w, const int8_t *const *xq,
                                                           const float *const *dx, int pa, int pb, float *Y, int pf,
                                                           const int NT, row_body body) {
    const int nb = w->T / 32;
    const size_t P = (size_t)w->P, row_bytes = (size_t)nb * Q8_BLOCK_BYTES;
    for (int p = pa; p < pb; p++) {
        float o[Q8_NT];
        if (pf && p + pf < pb) maq_prefetch((const uint8_t *)w->data + (size_t)(p + pf) * row_bytes, row_bytes);
        body((const uint8_t *)w->data + (size_t)p * row_bytes, xq, dx, NT, nb, o);
        for (int t = 0; t < NT; t++) Y[t * P + p] = o[t];
    }
}

/* The driver each path's rows_* function inlines with its body: a tile of nt tokens (1 <= nt <= Q8_NT), nt a
 * compile-time constant in each branch. */
static inline __attribute__((always_inline)) void rows_drive(const maq_weight *w, const int8_t *const *xq,
                                                             const float *const *dx, int nt, int pa, int pb, float *Y,
                                                             int pf, row_body body) {
    if (nt == 1) row_loop(w, xq, dx, pa, pb, Y, pf, 1, body);
    else if (nt == 2) row_loop(w, xq, dx, pa, pb, Y, pf, 2, body);
    else if (nt == 3) row_loop(w, xq, dx, pa, pb, Y, pf, 3, body);
    else row_loop(w, xq, dx, pa, pb, Y, pf, 4, body);
}

typedef void (*rows_fn)(
    const maq_weight *w, const int8_t *const *xq, const float *const *dx, int nt, int pa, int pb, float *Y, int pf);
#if defined(MAQ_X86)
static __attribute__((noinline, target("ssse3,sse4.1"))) void rows_sse(
    const maq_weight *w, const int8_t *const *xq, const float *const *dx, int nt, int pa, int pb, float *Y, int pf) {
    rows_drive(w, xq, dx, nt, pa, pb, Y, pf, row_sse_nt);
}
static __attribute__((noinline, target("avx2,f16c,ssse3,sse4.1"))) void rows_avx2(
    const maq_weight *w, const int8_t *const *xq, const float *const *dx, int nt, int pa, int pb, float *Y, int pf) {
    rows_drive(w, xq, dx, nt, pa, pb, Y, pf, row_avx2_nt);
}
static __attribute__((noinline, target(MAQ_VNNI_TARGET))) void rows_vnni(
    const maq_weight *w, const int8_t *const *xq, const float *const *dx, int nt, int pa, int pb, float *Y, int pf) {
    rows_drive(w, xq, dx, nt, pa, pb, Y, pf, row_vnni_nt);
}
#endif
#if defined(MAQ_NEON)
static __attribute__((noinline)) void rows_neon(
    const maq_weight *w, const int8_t *const *xq, const float *const *dx, int nt, int pa, int pb, float *Y, int pf) {
    rows_drive(w, xq, dx, nt, pa, pb, Y, pf, row_neon_nt);
}
static __attribute__((noinline)) MAQ_DOTPROD_ATTR void rows_dot(
    const maq_weight *w, const int8_t *const *xq, const float *const *dx, int nt, int pa, int pb, float *Y, int pf) {
    rows_drive(w, xq, dx, nt, pa, pb, Y, pf, row_dot_nt);
}
#endif

#if defined(MAQ_X86)
/* ================================================================== VNNI panels (x86-64): products of many tokens
 * As maq2.c's panels: 16 rows are unpacked once into the u8 operand of vpdpbusd, [T/4][16 rows][4] holding w + 128
 * (each weight as an unsigned byte), with the rows' block scales d_w as float [nb][16]; tiles of up to Q8_PANEL_NT
 * tokens run over the panel: per 4 inputs one 64-byte load and one vpdpbusd per token with the token's 4 int8
 * inputs broadcast (lanes = rows). Per block ib, s_ib = C - 128 * (the token's 32-input sum, the activation's xs) is
 * the reference's exact integer, then its float steps: lane ib % 4 += (d_w * dx) * (float)s_ib, y = (l0 + l1) + (l2 + l3). */
#define Q8_PANEL_NT 8
#define Q8_PANEL_MIN_B 8   /* tokens from which a product runs panels (docs/BENCHMARKS.md "Prompt panels") */
#define Q8_PANEL_FN static inline __attribute__((always_inline, target(MAQ_VNNI_TARGET)))

/* Rows [pa, pa + nr), nr <= 16: codes [T/4][16][4] (w + 128; rows past nr 0) and the block scales [nb][16] (rows
 * past nr 0), as float into dw or, dw NULL, as the file's fp16 into dh (the load-time panels below). */
static void q8_panel_unpack(const maq_weight *w, int pa, int nr, uint8_t *codes, float *dw, uint16_t *dh) {
    const int nb = w->T / 32;
    const size_t row_bytes = (size_t)nb * Q8_BLOCK_BYTES;
    uint32_t *c32 = (uint32_t *)codes;
    if (nr < 16) {
        memset(codes, 0, (size_t)16 * w->T);
        if (dw) memset(dw, 0, (size_t)64 * nb);
        else memset(dh, 0, (size_t)32 * nb);
    }
    for (int r = 0; r < nr; r++) {
        const uint8_t *wrow = (const uint8_t *)w->data + (size_t)(pa + r) * row_bytes;
        for (int ib = 0; ib < nb; ib++) {
            const uint8_t *blk = wrow + (size_t)ib * Q8_BLOCK_BYTES;
            if (dw) dw[16 * ib + r] = block_d(blk);
            else memcpy(&dh[16 * ib + r], blk, 2);
            for (int j = 0; j < 8; j++) {
                uint32_t v;
                memcpy(&v, blk + 2 + 4 * j, 4);
                c32[(size_t)(8 * ib + j) * 16 + r] = v ^ 0x80808080u;
            }
        }
    }
}

/* Y[n * P + pa + r] (r < nr) for NT tokens: xq / dx / xs their activation rows' parts (q8_act_layout). The block
 * scales: dw float [nb][16], or (dw NULL) dh fp16 [nb][16] (a load-time panel, below). pf: bytes ahead to prefetch
 * (0: none). */
Q8_PANEL_FN void q8_panel_tile(const uint8_t *codes, const float *dw, const uint16_t *dh, const int8_t *const *xq,
                               const float *const *dx, const int32_t *const *xs, const int NT, int nb, float *Y,
                               size_t P, int pa, int nr, size_t pf) {
    __m512 f[Q8_PANEL_NT][4];
    for (int n = 0; n < NT; n++) f[n][0] = f[n][1] = f[n][2] = f[n][3] = _mm512_setzero_ps();
    for (int ib = 0; ib < nb; ib++) {
        __m512i C[Q8_PANEL_NT];
        for (int n = 0; n < NT; n++) C[n] = _mm512_setzero_si512();
        if (pf) {   /* the block's 512 code bytes and 32 scale bytes, pf bytes ahead */
            maq_prefetch_l2(codes + (size_t)512 * ib + pf, 512);
            maq_prefetch_l2((const uint8_t *)(dh + 16 * ib) + pf, 32);
        }
        for (int k = 8 * ib; k < 8 * ib + 8; k++) {
            const __m512i a = _mm512_load_si512((const void *)(codes + (size_t)64 * k));
            for (int n = 0; n < NT; n++) {
                int32_t x4;
                memcpy(&x4, xq[n] + 4 * k, 4);
                C[n] = _mm512_dpbusd_epi32(C[n], a, _mm512_set1_epi32(x4));
            }
        }
        const __m512 d = dw ? _mm512_load_ps(dw + 16 * ib)
                            : _mm512_cvtph_ps(_mm256_load_si256((const __m256i *)(dh + 16 * ib)));
        const int l = ib & 3;
        for (int n = 0; n < NT; n++) {
            const __m512i sv = _mm512_sub_epi32(C[n], _mm512_set1_epi32(128 * xs[n][ib]));
            f[n][l] = _mm512_add_ps(f[n][l], _mm512_mul_ps(_mm512_mul_ps(d, _mm512_set1_ps(dx[n][ib])),
                                                           _mm512_cvtepi32_ps(sv)));
        }
    }
    const __mmask16 keep = (__mmask16)((1u << nr) - 1u);
    for (int n = 0; n < NT; n++)
        _mm512_mask_storeu_ps(Y + (size_t)n * P + pa, keep,
                              _mm512_add_ps(_mm512_add_ps(f[n][0], f[n][1]), _mm512_add_ps(f[n][2], f[n][3])));
}

/* Every token tile of B tokens over one panel, the tile size a compile-time constant in each branch. */
static __attribute__((noinline, target(MAQ_VNNI_TARGET))) void q8_panel_tokens(
    const uint8_t *codes, const float *dw, const uint16_t *dh, const q8_act_layout *L, const uint8_t *act, int B,
    float *Y, size_t P, int pa, int nr, size_t pf) {
    for (int t0 = 0; t0 < B; t0 += Q8_PANEL_NT) {
        const int nt = B - t0 < Q8_PANEL_NT ? B - t0 : Q8_PANEL_NT;
        const int8_t *xq[Q8_PANEL_NT];
        const float *dx[Q8_PANEL_NT];
        const int32_t *xs[Q8_PANEL_NT];
        for (int n = 0; n < nt; n++) {
            const uint8_t *a = act + (size_t)(t0 + n) * L->stride;
            xq[n] = (const int8_t *)(a + L->qs);
            dx[n] = (const float *)(a + L->dx);
            xs[n] = (const int32_t *)(a + L->xs);
        }
        float *y = Y + (size_t)t0 * P;
        switch (nt) {
#define Q8_PANEL_CASE(N) \
    case N: q8_panel_tile(codes, dw, dh, xq, dx, xs, N, L->nb, y, P, pa, nr, pf); break;
            Q8_PANEL_CASE(1) Q8_PANEL_CASE(2) Q8_PANEL_CASE(3) Q8_PANEL_CASE(4) Q8_PANEL_CASE(5)
            Q8_PANEL_CASE(6) Q8_PANEL_CASE(7)
            default: q8_panel_tile(codes, dw, dh, xq, dx, xs, Q8_PANEL_NT, L->nb, y, P, pa, nr, pf); break;
#undef Q8_PANEL_CASE
        }
    }
}

/* Rows [p0, p1) for B >= Q8_PANEL_MIN_B tokens, a 16-row panel at a time. Returns 0 if its scratch could not be
 * allocated (the caller then runs the row functions). */
static int q8_panel_rows(const maq_weight *w, const q8_act_layout *L, const uint8_t *act, int B, int p0, int p1,
                         float *Y) {
    const int nb = L->nb;
    const size_t codes = (size_t)16 * w->T;
    uint8_t *buf = aligned_alloc(64, codes + (size_t)64 * nb);   /* codes, then the block scales */
    if (!buf) return 0;
    float *dw = (float *)(buf + codes);
    for (int pa = p0; pa < p1; pa += 16) {
        const int nr = p1 - pa < 16 ? p1 - pa : 16;
        q8_panel_unpack(w, pa, nr, buf, dw, NULL);
        q8_panel_tokens(buf, dw, NULL, L, act, B, Y, (size_t)w->P, pa, nr, 0);
    }
    free(buf);
    return 1;
}

/* Load-time panels (maq_r16_bytes / maq_r16_pack through the type's traits; w->r16): the panel of rows
 * 16i..16i+15, 17 T bytes (the file's bytes: 34 per 32 weights) rounded up to 64, panel_bytes apart:
 *   codes uint8 [T/4][16 rows][4]   w + 128 (as q8_panel_unpack; rows past P 0)
 *   dh    fp16  [T/32][16 rows]     block scales (the file's halves; rows past P 0)
 * Single tokens read it as one stream with a software prefetch (MAQ_PF_BYTES_PANEL ahead, into L2); several tokens
 * run token tiles over it as over an unpacked panel. Same integers and float steps: bit-identical. */
static size_t q8_r16_panel_bytes(const maq_weight *w) { return ((size_t)17 * w->T + 63) / 64 * 64; }
static int q8_r16_rows(const maq_weight *w, const q8_act_layout *L, const uint8_t *act, int B, int p0, int p1,
                       float *Y) {
    const size_t pb = q8_r16_panel_bytes(w);
    for (int pa = p0; pa < p1; pa += 16) {
        const uint8_t *panel = w->r16 + (size_t)(pa / 16) * pb;
        const int nr = p1 - pa < 16 ? p1 - pa : 16;
        q8_panel_tokens(panel, NULL, (const uint16_t *)(panel + (size_t)16 * w->T), L, act, B, Y, (size_t)w->P, pa,
                        nr, B <= Q8_PANEL_NT ? MAQ_PF_BYTES_PANEL : 0);
    }
    return 1;
}
#endif

size_t q8_r16_bytes(const maq_weight *w) {
#if defined(MAQ_X86)
    return maq_cpu_vnni() ? (size_t)((w->P + 15) / 16) * q8_r16_panel_bytes(w) : 0;
#else
    (void)w;
    return 0;
#endif
}

void q8_r16_pack(const maq_weight *w, void *dst) {
#if defined(MAQ_X86)
    const size_t pb = q8_r16_panel_bytes(w);
    memset(dst, 0, (size_t)(w->P + 15) / 16 * pb);   /* (the padding after each panel) */
    for (int pa = 0; pa < w->P; pa += 16) {
        uint8_t *panel = (uint8_t *)dst + (size_t)(pa / 16) * pb;
        q8_panel_unpack(w, pa, w->P - pa < 16 ? w->P - pa : 16, panel, NULL, (uint16_t *)(panel + (size_t)16 * w->T));
    }
#else
    (void)w, (void)dst;
#endif
}

/* Rows [p0, p1) x B tokens in tiles of Q8_NT tokens (maq_rows_tiled). */
typedef struct {
    const maq_weight *w;
    const q8_act_layout *L;
    const uint8_t *act;
    float *Y;
    rows_fn rows;           /* the path's rows */
    int pf;                 /* rows ahead to prefetch */
} q8_tiles;

static void q8_tile(void *ctx, int t0, int nt, int pa, int pb) {
    const q8_tiles *c = (const q8_tiles *)ctx;
    const int8_t *xq[Q8_NT];
    const float *dx[Q8_NT];
    for (int t = 0; t < nt; t++) {
        const uint8_t *a = c->act + (size_t)(t0 + t) * c->L->stride;
        xq[t] = (const int8_t *)(a + c->L->qs);
        dx[t] = (const float *)(a + c->L->dx);
    }
    c->rows(c->w, xq, dx, nt, pa, pb, c->Y + (size_t)t0 * c->w->P, c->pf);
}

static void rows_tiled(const maq_weight *w, const q8_act_layout *L, const uint8_t *act, int B, int p0, int p1,
                       float *Y, rows_fn rows) {
    /* prefetch only when each row is visited once (B <= Q8_NT): revisited 16-row tiles are already in cache */
    const size_t rb = (size_t)L->nb * Q8_BLOCK_BYTES;
    q8_tiles c = {w, L, act, Y, rows, B <= Q8_NT ? maq_pf_rows(rb, MAQ_PF_BYTES_Q8) : 0};
    maq_rows_tiled(B, p0, p1, Q8_NT, q8_tile, &c);
}

/* ================================================================== dispatch */
/* Rows per SIMD path; a path without an entry runs the scalar reference. */
static const rows_fn Q8_PATHS[MAQ_N_PATHS] = {
#if defined(MAQ_X86)
    [MAQ_PATH_SSE] = rows_sse,
    [MAQ_PATH_AVX2] = rows_avx2,
    [MAQ_PATH_VNNI] = rows_vnni,
#endif
#if defined(MAQ_NEON)
    [MAQ_PATH_NEON] = rows_neon,
    [MAQ_PATH_DOTPROD] = rows_dot,
#endif
};

void q8_0_rows(const maq_weight *w, const uint8_t *act, int B, int p0, int p1, float *Y, int path) {
    q8_act_layout L;
    q8_act_layout_init(&L, w->T);
    path = maq_path_int8_base(path);   /* amx: the vnni code (no AMX variant here) */
#if defined(MAQ_X86)
    if (path == MAQ_PATH_VNNI && w->r16 && q8_r16_rows(w, &L, act, B, p0, p1, Y)) return;
    if (path == MAQ_PATH_VNNI && B >= Q8_PANEL_MIN_B && q8_panel_rows(w, &L, act, B, p0, p1, Y)) return;
#endif
    if (path > 0 && path < MAQ_N_PATHS && Q8_PATHS[path])
        rows_tiled(w, &L, act, B, p0, p1, Y, Q8_PATHS[path]);
    else
        rows_scalar(w, &L, act, B, p0, p1, Y);
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
