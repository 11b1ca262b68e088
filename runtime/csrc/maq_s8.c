/* maq_s8.c -- MAQ2 salient words with the int8 coding (runtime/format.py, docs/FORMAT.md section 9).
 *
 * A MAQ2 tensor with the int8 salient coding has, beside its words / bitmap / scales / rowscale,
 *   salw   int8  [16*N]   the 16 int8 codes of every salient word (rows in order, words of a row in order)
 *   saloff int32 [P+1]    salient words in the rows before row p
 * Salient word w of row p (bitmap bit set) has its codes at salw + 16*(saloff[p] + popcount of row p's bitmap
 * bits before w); its 32-bit slot holds its fp16 scale s (low 16 bits) and input j has the value s * c_j.
 * The row's dsal is 0, so maq2.c's mean4 reading of the slot contributes dsal*S = 0 exactly; this file adds the
 * int8 words' products on top, after maq2_rows has written the row:
 *
 *   y[p] += sum over salient words w of row p, in word order:  acc += (s_w * dx[w/8]) * (float)I_w
 *   I_w = sum_j c_j * xq_j    (xq: the int8 activation of the MAQ2 layout, exact int32: |I_w| <= 16*128*127)
 *
 * Only I_w differs between paths (scalar, SSE, AVX2, NEON, NEON + dotprod) and it is an exact integer, so every
 * path is bit-identical to the scalar one. maq_s8_get_row overwrites the salient words' 16 values with s * c_j.
 */
#include <string.h>

#include "maq_internal.h"

#if defined(MAQ_X86)
#include <immintrin.h>
#endif
#if defined(MAQ_NEON)
#include <arm_neon.h>
#endif

static int32_t dot16_scalar(const int8_t *c, const int8_t *x) {
    int32_t s = 0;
    for (int j = 0; j < 16; j++) s += (int32_t)c[j] * x[j];
    return s;
}

#if defined(MAQ_X86)
__attribute__((target("ssse3,sse4.1"))) static int32_t dot16_sse(const int8_t *c, const int8_t *x) {
    const __m128i a = _mm_loadu_si128((const __m128i *)c), b = _mm_loadu_si128((const __m128i *)x);
    __m128i s = _mm_add_epi32(_mm_madd_epi16(_mm_cvtepi8_epi16(a), _mm_cvtepi8_epi16(b)),
                              _mm_madd_epi16(_mm_cvtepi8_epi16(_mm_srli_si128(a, 8)),
                                             _mm_cvtepi8_epi16(_mm_srli_si128(b, 8))));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

__attribute__((target("avx2"))) static int32_t dot16_avx2(const int8_t *c, const int8_t *x) {
    const __m256i p = _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)c)),
                                        _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)x)));
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(p), _mm256_extracti128_si256(p, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}
#endif

#if defined(MAQ_NEON)
static int32_t dot16_neon(const int8_t *c, const int8_t *x) {
    const int8x16_t a = vld1q_s8(c), b = vld1q_s8(x);
    int32x4_t s = vpaddlq_s16(vmull_s8(vget_low_s8(a), vget_low_s8(b)));     /* |c*x| <= 16384: exact int16 */
    s = vpadalq_s16(s, vmull_s8(vget_high_s8(a), vget_high_s8(b)));
    return vaddvq_s32(s);
}

MAQ_DOTPROD_ATTR static int32_t dot16_dotprod(const int8_t *c, const int8_t *x) {
    return vaddvq_s32(vdotq_s32(vdupq_n_s32(0), vld1q_s8(c), vld1q_s8(x)));
}
#endif

typedef int32_t (*dot16_fn)(const int8_t *, const int8_t *);

static dot16_fn dot16_for(int path) {
    switch (maq_path_x86_base(path)) {      /* the vnni path runs the AVX2 code here */
#if defined(MAQ_X86)
    case MAQ_PATH_SSE: return dot16_sse;
    case MAQ_PATH_AVX2: return dot16_avx2;
#endif
#if defined(MAQ_NEON)
    case MAQ_PATH_NEON: return dot16_neon;
    case MAQ_PATH_DOTPROD: return dot16_dotprod;
#endif
    default: return dot16_scalar;
    }
}

void maq_s8_rows(const maq_weight *w, const uint8_t *act, int B, int p0, int p1, float *Y, int path) {
    if (!w->salw || w->type != MAQ_TYPE_MAQ2) return;
    const dot16_fn dot = dot16_for(path);
    maq2_act_layout L;
    maq2_act_layout_init(&L, w->T);
    const int nw = w->T / 16, nbm = (nw + 7) / 8;
    for (int p = p0; p < p1; p++) {
        const int32_t first = w->saloff[p];
        if (w->saloff[p + 1] == first) continue;
        const uint8_t *bm = w->bitmap + (size_t)p * nbm;
        const uint32_t *words = (const uint32_t *)w->data + (size_t)p * nw;
        for (int t = 0; t < B; t++) {
            const uint8_t *row = act + (size_t)t * L.stride;
            const int8_t *xn = (const int8_t *)(row + L.xn);
            const float *dx = (const float *)(row + L.dx);
            const int8_t *c = w->salw + 16 * (size_t)first;
            float acc = 0.0f;
            for (int b = 0; b < nbm; b++) {
                for (unsigned bits = bm[b]; bits; bits &= bits - 1u) {
                    const int wi = 8 * b + __builtin_ctz(bits);
                    const float s = maq_h2f((uint16_t)(words[wi] & 0xffffu));
                    acc += (s * dx[b]) * (float)dot(c, xn + 16 * wi);
                    c += 16;
                }
            }
            Y[(size_t)t * w->P + p] += acc;
        }
    }
}

void maq_s8_get_row(const maq_weight *w, int p, float *out) {
    if (!w->salw || w->type != MAQ_TYPE_MAQ2) return;
    const int nw = w->T / 16, nbm = (nw + 7) / 8;
    const uint8_t *bm = w->bitmap + (size_t)p * nbm;
    const uint32_t *words = (const uint32_t *)w->data + (size_t)p * nw;
    const int8_t *c = w->salw + 16 * (size_t)w->saloff[p];
    for (int wi = 0; wi < nw; wi++) {
        if (!(bm[wi >> 3] >> (wi & 7) & 1u)) continue;
        const float s = maq_h2f((uint16_t)(words[wi] & 0xffffu));
        for (int j = 0; j < 16; j++) out[16 * wi + j] = s * (float)c[j];
        c += 16;
    }
}
