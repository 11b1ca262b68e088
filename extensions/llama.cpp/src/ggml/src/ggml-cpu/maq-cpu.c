// maq-cpu.c -- MAQ2 / MAQ3 / MAQ4 x Q8_0 dot products for ggml-cpu: scalar, SSSE3, AVX2, NEON.
//
// Per half h (32 inputs) of a block and its Q8_0 activation block (int8 y, fp16 scale dy):
//   A = sum q*y over the half's 2-bit-coded inputs, B = sum y over them, C = sum_k c_k * (y_4k + .. + y_4k+3) over
//   its MAQ2 salient words;  s += dy * ((d*sc[h])*A + (dmin*m[h])*B [+ dsal*C])
// The integers are exact on every path and the float operations run in the same order, so all paths agree bit for
// bit. Layouts: ggml/include/ggml-maq.h.
#include "ggml-maq.h"
#define GGML_COMMON_DECL_C
#include "ggml-common.h"
#include "ggml-impl.h"
#include "simd-mappings.h"
#include "ggml-cpu-impl.h"
#include "maq-cpu.h"

#include <math.h>
#include <string.h>

// explicit fused multiply-adds where the hardware has them, so that no path depends on the compiler's contraction
#if defined(FP_FAST_FMAF)
#define MAQ_FMA(a, b, c) fmaf((a), (b), (c))
#else
#define MAQ_FMA(a, b, c) ((a) * (b) + (c))
#endif

#if defined(__AVX2__) || defined(__SSSE3__)
#include <immintrin.h>
#endif


static size_t maq_block_size(int bits) {
    return bits == 2 ? sizeof(block_maq2) : bits == 3 ? sizeof(block_maq3) : sizeof(block_maq4);
}

// scalar integer sums of one block (both halves); C is 0 where there is no salient word
static void maq_ints_scalar(const uint8_t * blk, int bits, const block_q8_0 * y, int A[2], int B[2], int C[2]) {
    const ggml_maq_head * hd = (const ggml_maq_head *) blk;
    const uint8_t * qh = blk + sizeof(ggml_maq_head);
    const int sal = bits == 2 ? ((const block_maq2 *) blk)->sal : 0;
    for (int h = 0; h < 2; h++) {
        int a = 0, bsum = 0, c = 0;
        for (int s = 0; s < 2; s++) {
            const int8_t * yy = y[h].qs + 16 * s;
            if ((sal >> (2 * h + s)) & 1) {
                for (int k = 0; k < 4; k++) {
                    c += ggml_maq2_mean(hd->qs, h, s, k) * (yy[4 * k] + yy[4 * k + 1] + yy[4 * k + 2] + yy[4 * k + 3]);
                }
                continue;
            }
            for (int i = 0; i < 16; i++) {
                a += ggml_maq_code(hd->qs, qh, bits, 32 * h + 16 * s + i) * yy[i];
                bsum += yy[i];
            }
        }
        A[h] = a; B[h] = bsum; C[h] = c;
    }
}

static inline float maq_block_float(const uint8_t * blk, int bits, const block_q8_0 * y, const int A[2], const int B[2],
                                    const int C[2], float sumf) {
    const ggml_maq_head * hd = (const ggml_maq_head *) blk;
    const float d = GGML_CPU_FP16_TO_FP32(hd->d), dmin = GGML_CPU_FP16_TO_FP32(hd->dmin);
    const float dsal = bits == 2 ? GGML_CPU_FP16_TO_FP32(((const block_maq2 *) blk)->dsal) : 0.0f;
    for (int h = 0; h < 2; h++) {
        float r = MAQ_FMA(dmin * hd->m[h], (float) B[h], (d * hd->sc[h]) * (float) A[h]);
        if (bits == 2) {
            r = MAQ_FMA(dsal, (float) C[h], r);
        }
        sumf = MAQ_FMA(GGML_CPU_FP16_TO_FP32(y[h].d), r, sumf);
    }
    return sumf;
}

void ggml_vec_dot_maq_q8_0_ref(int bits, int n, float * s, const void * vx, const void * vy) {
    const int nb = n / QK_MAQ;
    const block_q8_0 * y = (const block_q8_0 *) vy;
    const size_t bsz = maq_block_size(bits);
    float sumf = 0.0f;
    for (int b = 0; b < nb; b++) {
        const uint8_t * blk = (const uint8_t *) vx + b * bsz;
        int A[2], B[2], C[2];
        maq_ints_scalar(blk, bits, y + 2 * b, A, B, C);
        sumf = maq_block_float(blk, bits, y + 2 * b, A, B, C, sumf);
    }
    *s = sumf;
}

#if defined(__AVX2__)
// 0xFF in byte i where bit i of the 32-bit mask at x is set
static inline __m256i maq_bytes_from_bits_32(const uint8_t * x) {
    uint32_t x32;
    memcpy(&x32, x, sizeof(uint32_t));
    const __m256i shuf = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0x0000000000000000);
    __m256i bytes = _mm256_shuffle_epi8(_mm256_set1_epi32((int) x32), shuf);
    bytes = _mm256_or_si256(bytes, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
    return _mm256_cmpeq_epi8(bytes, _mm256_set1_epi64x(-1));
}

// the 32 codes of half 0 and half 1, in input order
static inline void maq_codes_avx2(const uint8_t * blk, int bits, __m256i * c0, __m256i * c1) {
    const ggml_maq_head * hd = (const ggml_maq_head *) blk;
    const __m128i v = _mm_loadu_si128((const __m128i *) hd->qs);
    __m128i k0, k1, k2, k3;
    if (bits == 4) {
        const __m128i hv = _mm_loadu_si128((const __m128i *) (blk + sizeof(ggml_maq_head)));
        const __m128i m33 = _mm_set1_epi8(0x33), mcc = _mm_set1_epi8((char) 0xcc), m0f = _mm_set1_epi8(0x0f);
        const __m128i a = _mm_or_si128(_mm_and_si128(v, m33), _mm_and_si128(_mm_slli_epi16(hv, 2), mcc));
        const __m128i b = _mm_or_si128(_mm_and_si128(_mm_srli_epi16(v, 2), m33), _mm_and_si128(hv, mcc));
        k0 = _mm_and_si128(a, m0f);
        k1 = _mm_and_si128(b, m0f);
        k2 = _mm_and_si128(_mm_srli_epi16(a, 4), m0f);
        k3 = _mm_and_si128(_mm_srli_epi16(b, 4), m0f);
    } else {
        const __m128i m3 = _mm_set1_epi8(3);
        k0 = _mm_and_si128(v, m3);
        k1 = _mm_and_si128(_mm_srli_epi16(v, 2), m3);
        k2 = _mm_and_si128(_mm_srli_epi16(v, 4), m3);
        k3 = _mm_and_si128(_mm_srli_epi16(v, 6), m3);
    }
    *c0 = _mm256_set_m128i(_mm_unpacklo_epi64(k2, k3), _mm_unpacklo_epi64(k0, k1));
    *c1 = _mm256_set_m128i(_mm_unpackhi_epi64(k2, k3), _mm_unpackhi_epi64(k0, k1));
    if (bits == 3) {
        const uint8_t * qh = blk + sizeof(ggml_maq_head);
        const __m256i four = _mm256_set1_epi8(4);
        *c0 = _mm256_or_si256(*c0, _mm256_and_si256(maq_bytes_from_bits_32(qh), four));
        *c1 = _mm256_or_si256(*c1, _mm256_and_si256(maq_bytes_from_bits_32(qh + 4), four));
    }
}

static void maq_vec_dot_avx2(int bits, int n, float * s, const void * vx, const void * vy) {
    const int nb = n / QK_MAQ;
    const block_q8_0 * y = (const block_q8_0 *) vy;
    const size_t bsz = maq_block_size(bits);
    const __m256i one8 = _mm256_set1_epi8(1), one16 = _mm256_set1_epi16(1);
    float sumf = 0.0f;
    for (int b = 0; b < nb; b++) {
        const uint8_t * blk = (const uint8_t *) vx + b * bsz;
        const block_q8_0 * yb = y + 2 * b;
        int A[2], B[2], C[2] = {0, 0};
        if (bits == 2 && ((const block_maq2 *) blk)->sal) {
            maq_ints_scalar(blk, bits, yb, A, B, C);
        } else {
            __m256i c0, c1;
            maq_codes_avx2(blk, bits, &c0, &c1);
            const __m256i y0 = _mm256_loadu_si256((const __m256i *) yb[0].qs);
            const __m256i y1 = _mm256_loadu_si256((const __m256i *) yb[1].qs);
            const __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(c0, y0), one16);
            const __m256i q = _mm256_madd_epi16(_mm256_maddubs_epi16(one8, y0), one16);
            const __m256i r = _mm256_madd_epi16(_mm256_maddubs_epi16(c1, y1), one16);
            const __m256i t = _mm256_madd_epi16(_mm256_maddubs_epi16(one8, y1), one16);
            const __m256i u = _mm256_hadd_epi32(_mm256_hadd_epi32(p, q), _mm256_hadd_epi32(r, t));
            const __m128i w = _mm_add_epi32(_mm256_castsi256_si128(u), _mm256_extracti128_si256(u, 1));
            A[0] = _mm_extract_epi32(w, 0); B[0] = _mm_extract_epi32(w, 1);
            A[1] = _mm_extract_epi32(w, 2); B[1] = _mm_extract_epi32(w, 3);
        }
        sumf = maq_block_float(blk, bits, yb, A, B, C, sumf);
    }
    *s = sumf;
}
#elif defined(__SSSE3__)
static inline __m128i maq_bytes_from_bits_16(const uint8_t * x) {
    const __m128i shuf = _mm_set_epi64x(0x0101010101010101, 0x0000000000000000);
    __m128i bytes = _mm_shuffle_epi8(_mm_set1_epi16((short) (x[0] | (x[1] << 8))), shuf);
    bytes = _mm_or_si128(bytes, _mm_set1_epi64x(0x7fbfdfeff7fbfdfe));
    return _mm_cmpeq_epi8(bytes, _mm_set1_epi64x(-1));
}

static inline int maq_hsum_epi32(__m128i v) {
    v = _mm_add_epi32(v, _mm_shuffle_epi32(v, _MM_SHUFFLE(1, 0, 3, 2)));
    v = _mm_add_epi32(v, _mm_shuffle_epi32(v, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtsi128_si32(v);
}

static void maq_vec_dot_sse(int bits, int n, float * s, const void * vx, const void * vy) {
    const int nb = n / QK_MAQ;
    const block_q8_0 * y = (const block_q8_0 *) vy;
    const size_t bsz = maq_block_size(bits);
    const __m128i one8 = _mm_set1_epi8(1), one16 = _mm_set1_epi16(1);
    float sumf = 0.0f;
    for (int b = 0; b < nb; b++) {
        const uint8_t * blk = (const uint8_t *) vx + b * bsz;
        const block_q8_0 * yb = y + 2 * b;
        int A[2], B[2], C[2] = {0, 0};
        if (bits == 2 && ((const block_maq2 *) blk)->sal) {
            maq_ints_scalar(blk, bits, yb, A, B, C);
        } else {
            const ggml_maq_head * hd = (const ggml_maq_head *) blk;
            const uint8_t * qh = blk + sizeof(ggml_maq_head);
            const __m128i v = _mm_loadu_si128((const __m128i *) hd->qs);
            __m128i k0, k1, k2, k3;
            if (bits == 4) {
                const __m128i hv = _mm_loadu_si128((const __m128i *) qh);
                const __m128i m33 = _mm_set1_epi8(0x33), mcc = _mm_set1_epi8((char) 0xcc), m0f = _mm_set1_epi8(0x0f);
                const __m128i a = _mm_or_si128(_mm_and_si128(v, m33), _mm_and_si128(_mm_slli_epi16(hv, 2), mcc));
                const __m128i bb = _mm_or_si128(_mm_and_si128(_mm_srli_epi16(v, 2), m33), _mm_and_si128(hv, mcc));
                k0 = _mm_and_si128(a, m0f);
                k1 = _mm_and_si128(bb, m0f);
                k2 = _mm_and_si128(_mm_srli_epi16(a, 4), m0f);
                k3 = _mm_and_si128(_mm_srli_epi16(bb, 4), m0f);
            } else {
                const __m128i m3 = _mm_set1_epi8(3);
                k0 = _mm_and_si128(v, m3);
                k1 = _mm_and_si128(_mm_srli_epi16(v, 2), m3);
                k2 = _mm_and_si128(_mm_srli_epi16(v, 4), m3);
                k3 = _mm_and_si128(_mm_srli_epi16(v, 6), m3);
            }
            __m128i c[4] = {_mm_unpacklo_epi64(k0, k1), _mm_unpacklo_epi64(k2, k3),
                            _mm_unpackhi_epi64(k0, k1), _mm_unpackhi_epi64(k2, k3)};
            if (bits == 3) {
                const __m128i four = _mm_set1_epi8(4);
                for (int i = 0; i < 4; i++) {
                    c[i] = _mm_or_si128(c[i], _mm_and_si128(maq_bytes_from_bits_16(qh + 2 * i), four));
                }
            }
            for (int h = 0; h < 2; h++) {
                const __m128i ya = _mm_loadu_si128((const __m128i *) yb[h].qs);
                const __m128i yc = _mm_loadu_si128((const __m128i *) (yb[h].qs + 16));
                const __m128i p = _mm_add_epi32(_mm_madd_epi16(_mm_maddubs_epi16(c[2 * h], ya), one16),
                                                _mm_madd_epi16(_mm_maddubs_epi16(c[2 * h + 1], yc), one16));
                const __m128i q = _mm_add_epi32(_mm_madd_epi16(_mm_maddubs_epi16(one8, ya), one16),
                                                _mm_madd_epi16(_mm_maddubs_epi16(one8, yc), one16));
                A[h] = maq_hsum_epi32(p);
                B[h] = maq_hsum_epi32(q);
            }
        }
        sumf = maq_block_float(blk, bits, yb, A, B, C, sumf);
    }
    *s = sumf;
}
#elif defined(__ARM_NEON)
static inline int32x4_t maq_vdot(int32x4_t acc, int8x16_t a, int8x16_t b) {
#if defined(__ARM_FEATURE_DOTPROD)
    return vdotq_s32(acc, a, b);
#else
    const int16x8_t p0 = vmull_s8(vget_low_s8(a), vget_low_s8(b));
    const int16x8_t p1 = vmull_s8(vget_high_s8(a), vget_high_s8(b));
    return vaddq_s32(acc, vaddq_s32(vpaddlq_s16(p0), vpaddlq_s16(p1)));
#endif
}

static void maq_vec_dot_neon(int bits, int n, float * s, const void * vx, const void * vy) {
    const int nb = n / QK_MAQ;
    const block_q8_0 * y = (const block_q8_0 *) vy;
    const size_t bsz = maq_block_size(bits);
    static const uint8_t bitsel[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
    const uint8x16_t vbits = vld1q_u8(bitsel);
    float sumf = 0.0f;
    for (int b = 0; b < nb; b++) {
        const uint8_t * blk = (const uint8_t *) vx + b * bsz;
        const block_q8_0 * yb = y + 2 * b;
        int A[2], B[2], C[2] = {0, 0};
        if (bits == 2 && ((const block_maq2 *) blk)->sal) {
            maq_ints_scalar(blk, bits, yb, A, B, C);
        } else {
            const ggml_maq_head * hd = (const ggml_maq_head *) blk;
            const uint8_t * qh = blk + sizeof(ggml_maq_head);
            const uint8x16_t v = vld1q_u8(hd->qs);
            uint8x16_t k0, k1, k2, k3;
            if (bits == 4) {
                const uint8x16_t hv = vld1q_u8(qh);
                const uint8x16_t m33 = vdupq_n_u8(0x33), mcc = vdupq_n_u8(0xcc), m0f = vdupq_n_u8(0x0f);
                const uint8x16_t a = vorrq_u8(vandq_u8(v, m33), vandq_u8(vshlq_n_u8(hv, 2), mcc));
                const uint8x16_t bb = vorrq_u8(vandq_u8(vshrq_n_u8(v, 2), m33), vandq_u8(hv, mcc));
                k0 = vandq_u8(a, m0f);
                k1 = vandq_u8(bb, m0f);
                k2 = vshrq_n_u8(a, 4);
                k3 = vshrq_n_u8(bb, 4);
            } else {
                const uint8x16_t m3 = vdupq_n_u8(3);
                k0 = vandq_u8(v, m3);
                k1 = vandq_u8(vshrq_n_u8(v, 2), m3);
                k2 = vandq_u8(vshrq_n_u8(v, 4), m3);
                k3 = vshrq_n_u8(v, 6);
            }
            uint8x16_t c[4] = {vcombine_u8(vget_low_u8(k0), vget_low_u8(k1)), vcombine_u8(vget_low_u8(k2), vget_low_u8(k3)),
                               vcombine_u8(vget_high_u8(k0), vget_high_u8(k1)), vcombine_u8(vget_high_u8(k2), vget_high_u8(k3))};
            if (bits == 3) {
                const uint8x16_t four = vdupq_n_u8(4);
                for (int i = 0; i < 4; i++) {
                    const uint8x16_t hb = vcombine_u8(vdup_n_u8(qh[2 * i]), vdup_n_u8(qh[2 * i + 1]));
                    c[i] = vorrq_u8(c[i], vandq_u8(vtstq_u8(hb, vbits), four));
                }
            }
            for (int h = 0; h < 2; h++) {
                const int8x16_t ya = vld1q_s8(yb[h].qs), yc = vld1q_s8(yb[h].qs + 16);
                int32x4_t p = maq_vdot(vdupq_n_s32(0), vreinterpretq_s8_u8(c[2 * h]), ya);
                p = maq_vdot(p, vreinterpretq_s8_u8(c[2 * h + 1]), yc);
                A[h] = vaddvq_s32(p);
                B[h] = vaddlvq_s8(ya) + vaddlvq_s8(yc);
            }
        }
        sumf = maq_block_float(blk, bits, yb, A, B, C, sumf);
    }
    *s = sumf;
}
#endif

static void maq_vec_dot(int bits, int n, float * s, const void * vx, const void * vy) {
#if defined(__AVX2__)
    maq_vec_dot_avx2(bits, n, s, vx, vy);
#elif defined(__SSSE3__)
    maq_vec_dot_sse(bits, n, s, vx, vy);
#elif defined(__ARM_NEON)
    maq_vec_dot_neon(bits, n, s, vx, vy);
#else
    ggml_vec_dot_maq_q8_0_ref(bits, n, s, vx, vy);
#endif
}

void ggml_vec_dot_maq2_q8_0(int n, float * s, size_t bs, const void * vx, size_t bx, const void * vy, size_t by, int nrc) {
    GGML_UNUSED(bs); GGML_UNUSED(bx); GGML_UNUSED(by); GGML_UNUSED(nrc);
    maq_vec_dot(2, n, s, vx, vy);
}

void ggml_vec_dot_maq3_q8_0(int n, float * s, size_t bs, const void * vx, size_t bx, const void * vy, size_t by, int nrc) {
    GGML_UNUSED(bs); GGML_UNUSED(bx); GGML_UNUSED(by); GGML_UNUSED(nrc);
    maq_vec_dot(3, n, s, vx, vy);
}

void ggml_vec_dot_maq4_q8_0(int n, float * s, size_t bs, const void * vx, size_t bx, const void * vy, size_t by, int nrc) {
    GGML_UNUSED(bs); GGML_UNUSED(bx); GGML_UNUSED(by); GGML_UNUSED(nrc);
    maq_vec_dot(4, n, s, vx, vy);
}
