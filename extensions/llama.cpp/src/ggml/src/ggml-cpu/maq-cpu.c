// maq-cpu.c -- MAQ2 / MAQ3 / MAQ4 x Q8_1 dot products for ggml-cpu: scalar, SSSE3, AVX2, NEON (+dotprod).
//
// vec_dot_type is Q8_1 (int8 y per 32 inputs, fp16 scale dy, and fp16 S = dy * sum y), as for llama.cpp's Q4_1:
// the group minimum's term needs only S, so a half costs one integer dot product.
// Canonical computation (every path performs exactly these operations, so all agree bit for bit):
// 8 float lanes, lane l of half h (32 inputs, one Q8_1 block) covers the inputs 4l .. 4l+3 of the half, with
//   A_l = sum q*y over 2-bit-coded inputs (0 in a MAQ2 salient word),
//   C_l = c_k * (y_4l + .. + y_4l+3), Bs_l = y_4l + .. + y_4l+3 in a MAQ2 salient word (its mean k = l % 4), else 0;
// factors sf = (d*sc[h])*dy, mnf = (dmin*m[h])*dy, salf = dsal*dy:
//   acc_l = fma(sf, A_l, acc_l)            [MAQ2 blocks holding a salient word, then: acc_l = fma(salf, C_l, acc_l);
//                                           acc_l = fma(-mnf, Bs_l, acc_l) (the minimum does not apply there)]
//   summ  = fma(dmin*m[h], S_h, summ)
// result = (((acc_0+acc_4) + (acc_2+acc_6)) + ((acc_1+acc_5) + (acc_3+acc_7))) + summ.
// fma is fused where the hardware has it (FP_FAST_FMAF / __FMA__ / aarch64), else a multiply and an add.
// Layouts: ggml/include/ggml-maq.h.
#include "ggml-maq.h"
#define GGML_COMMON_DECL_C
#include "ggml-common.h"
#include "ggml-impl.h"
#include "simd-mappings.h"
#include "ggml-cpu-impl.h"
#include "maq-cpu.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

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

// the float factors of half h: sf, mnf, salf (see the top of the file) and dmin*m
static inline void maq_factors(const uint8_t * blk, int bits, const block_q8_1 * y, int h, float f[4]) {
    const ggml_maq_head * hd = (const ggml_maq_head *) blk;
    const float dy = GGML_CPU_FP16_TO_FP32(y[h].d);
    f[3] = GGML_CPU_FP16_TO_FP32(hd->dmin) * (float) hd->m[h];
    f[0] = (GGML_CPU_FP16_TO_FP32(hd->d) * (float) hd->sc[h]) * dy;
    f[1] = f[3] * dy;
    f[2] = bits == 2 ? GGML_CPU_FP16_TO_FP32(((const block_maq2 *) blk)->dsal) * dy : 0.0f;
}

// integer lane sums A, Bs, C of half h (scalar; the reference, and the SIMD paths' route for MAQ2 salient blocks)
static void maq_lanes_scalar(const uint8_t * blk, int bits, const block_q8_1 * y, int h, int32_t A[8], int32_t B[8],
                             int32_t C[8]) {
    const ggml_maq_head * hd = (const ggml_maq_head *) blk;
    const uint8_t * qh = blk + sizeof(ggml_maq_head);
    const int sal = bits == 2 ? ((const block_maq2 *) blk)->sal : 0;
    for (int l = 0; l < 8; l++) {
        const int8_t * yy = y[h].qs + 4 * l;
        A[l] = B[l] = C[l] = 0;
        if ((sal >> (2 * h + l / 4)) & 1) {
            B[l] = yy[0] + yy[1] + yy[2] + yy[3];
            C[l] = ggml_maq2_mean(hd->qs, h, l / 4, l % 4) * B[l];
            continue;
        }
        for (int i = 0; i < 4; i++) {
            A[l] += ggml_maq_code(blk + offsetof(ggml_maq_head, qs), qh, bits, 32 * h + 4 * l + i) * yy[i];
        }
    }
}

static inline float maq_reduce8(const float acc[8]) {
    const float t0 = acc[0] + acc[4], t1 = acc[1] + acc[5], t2 = acc[2] + acc[6], t3 = acc[3] + acc[7];
    return (t0 + t2) + (t1 + t3);
}

// One block (two halves, yb[0..1]) by the canonical computation into the 8 lane accumulators and summ: the
// reference's loop body, and what the SIMD paths run for MAQ2 blocks holding a salient word (lane l of their
// vectors is acc[l], and every fma here is the one they would do, so they stay bit-identical).
static void maq_block_scalar(const uint8_t * blk, int bits, const block_q8_1 * yb, float acc[8], float * summ) {
    const int salient = bits == 2 && ((const block_maq2 *) blk)->sal;
    for (int h = 0; h < 2; h++) {
        int32_t A[8], B[8], C[8];
        float f[4];
        maq_lanes_scalar(blk, bits, yb, h, A, B, C);
        maq_factors(blk, bits, yb, h, f);
        for (int l = 0; l < 8; l++) {
            acc[l] = MAQ_FMA(f[0], (float) A[l], acc[l]);
            if (salient) {
                acc[l] = MAQ_FMA(f[2], (float) C[l], acc[l]);
                acc[l] = MAQ_FMA(-f[1], (float) B[l], acc[l]);
            }
        }
        *summ = MAQ_FMA(f[3], GGML_CPU_FP16_TO_FP32(yb[h].s), *summ);
    }
}

void ggml_vec_dot_maq_q8_1_ref(int bits, int n, float * s, const void * vx, const void * vy) {
    const int nb = n / QK_MAQ;
    const block_q8_1 * y = (const block_q8_1 *) vy;
    const size_t bsz = maq_block_size(bits);
    float acc[8] = {0}, summ = 0.0f;
    for (int b = 0; b < nb; b++) {
        maq_block_scalar((const uint8_t *) vx + b * bsz, bits, y + 2 * b, acc, &summ);
    }
    *s = maq_reduce8(acc) + summ;
}

#if defined(__AVX2__) && defined(__FMA__)
static inline __m256i maq_bytes_from_bits_32(const uint8_t * x) {   // 0xFF in byte i where bit i is set
    uint32_t x32;
    memcpy(&x32, x, sizeof(uint32_t));
    const __m256i shuf = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0x0000000000000000);
    __m256i bytes = _mm256_shuffle_epi8(_mm256_set1_epi32((int) x32), shuf);
    bytes = _mm256_or_si256(bytes, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
    return _mm256_cmpeq_epi8(bytes, _mm256_set1_epi64x(-1));
}

static void maq_vec_dot_avx2(int bits, int n, float * s, const void * vx, const void * vy) {
    const int nb = n / QK_MAQ;
    const block_q8_1 * y = (const block_q8_1 *) vy;
    const size_t bsz = maq_block_size(bits);
    const __m256i one16 = _mm256_set1_epi16(1);
    const __m128i m3 = _mm_set1_epi8(3);
    const __m256i m0f256 = _mm256_set1_epi8(0x0f);
    __m256 acc = _mm256_setzero_ps();
    float summ = 0.0f;
    for (int b = 0; b < nb; b++) {
        const uint8_t * blk = (const uint8_t *) vx + b * bsz;
        const block_q8_1 * yb = y + 2 * b;
        if (bits == 2 && ((const block_maq2 *) blk)->sal) {   // rare: the canonical scalar block on the lanes
            float a[8];
            _mm256_storeu_ps(a, acc);
            maq_block_scalar(blk, bits, yb, a, &summ);
            acc = _mm256_loadu_ps(a);
            continue;
        }
        float f0[4], f1[4];
        maq_factors(blk, bits, yb, 0, f0);
        maq_factors(blk, bits, yb, 1, f1);
        const ggml_maq_head * hd = (const ggml_maq_head *) blk;
        __m256i c0, c1;
        if (bits == 4) {   // nibbles: byte i of half h = inputs i (low) and 16 + i (high)
            const __m256i x = _mm256_loadu_si256((const __m256i *) (blk + offsetof(ggml_maq_head, qs)));
            const __m256i lo = _mm256_and_si256(x, m0f256), hi = _mm256_and_si256(_mm256_srli_epi16(x, 4), m0f256);
            c0 = _mm256_permute2x128_si256(lo, hi, 0x20);
            c1 = _mm256_permute2x128_si256(lo, hi, 0x31);
        } else {
            const __m128i v = _mm_loadu_si128((const __m128i *) hd->qs);
            const __m128i k0 = _mm_and_si128(v, m3);
            const __m128i k1 = _mm_and_si128(_mm_srli_epi16(v, 2), m3);
            const __m128i k2 = _mm_and_si128(_mm_srli_epi16(v, 4), m3);
            const __m128i k3 = _mm_and_si128(_mm_srli_epi16(v, 6), m3);
            c0 = _mm256_set_m128i(_mm_unpacklo_epi64(k2, k3), _mm_unpacklo_epi64(k0, k1));
            c1 = _mm256_set_m128i(_mm_unpackhi_epi64(k2, k3), _mm_unpackhi_epi64(k0, k1));
        }
        if (bits == 3) {
            const uint8_t * qh = blk + sizeof(ggml_maq_head);
            const __m256i four = _mm256_set1_epi8(4);
            c0 = _mm256_or_si256(c0, _mm256_and_si256(maq_bytes_from_bits_32(qh), four));
            c1 = _mm256_or_si256(c1, _mm256_and_si256(maq_bytes_from_bits_32(qh + 4), four));
        }
        const __m256i y0 = _mm256_loadu_si256((const __m256i *) yb[0].qs);
        const __m256i y1 = _mm256_loadu_si256((const __m256i *) yb[1].qs);
        const __m256 a0 = _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_maddubs_epi16(c0, y0), one16));
        const __m256 a1 = _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_maddubs_epi16(c1, y1), one16));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(f0[0]), a0, acc);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(f1[0]), a1, acc);
        summ = MAQ_FMA(f0[3], GGML_CPU_FP16_TO_FP32(yb[0].s), summ);
        summ = MAQ_FMA(f1[3], GGML_CPU_FP16_TO_FP32(yb[1].s), summ);
    }
    float out[8];
    _mm256_storeu_ps(out, acc);
    *s = maq_reduce8(out) + summ;
}
#elif defined(__SSSE3__)
#if defined(__FMA__)
#define MAQ_VFMA(a, b, c) _mm_fmadd_ps((a), (b), (c))
#else
#define MAQ_VFMA(a, b, c) _mm_add_ps(_mm_mul_ps((a), (b)), (c))
#endif
static inline __m128i maq_bytes_from_bits_16(const uint8_t * x) {
    const __m128i shuf = _mm_set_epi64x(0x0101010101010101, 0x0000000000000000);
    __m128i bytes = _mm_shuffle_epi8(_mm_set1_epi16((short) (x[0] | (x[1] << 8))), shuf);
    bytes = _mm_or_si128(bytes, _mm_set1_epi64x(0x7fbfdfeff7fbfdfe));
    return _mm_cmpeq_epi8(bytes, _mm_set1_epi64x(-1));
}

static void maq_vec_dot_sse(int bits, int n, float * s, const void * vx, const void * vy) {
    const int nb = n / QK_MAQ;
    const block_q8_1 * y = (const block_q8_1 *) vy;
    const size_t bsz = maq_block_size(bits);
    const __m128i one16 = _mm_set1_epi16(1);
    __m128 lo = _mm_setzero_ps(), hi = _mm_setzero_ps();   // lanes 0-3, 4-7
    float summ = 0.0f;
    for (int b = 0; b < nb; b++) {
        const uint8_t * blk = (const uint8_t *) vx + b * bsz;
        const block_q8_1 * yb = y + 2 * b;
        if (bits == 2 && ((const block_maq2 *) blk)->sal) {   // rare: the canonical scalar block on the lanes
            float a[8];
            _mm_storeu_ps(a, lo);
            _mm_storeu_ps(a + 4, hi);
            maq_block_scalar(blk, bits, yb, a, &summ);
            lo = _mm_loadu_ps(a);
            hi = _mm_loadu_ps(a + 4);
            continue;
        }
        float f[2][4];
        maq_factors(blk, bits, yb, 0, f[0]);
        maq_factors(blk, bits, yb, 1, f[1]);
        const ggml_maq_head * hd = (const ggml_maq_head *) blk;
        const uint8_t * qh = blk + sizeof(ggml_maq_head);
        __m128i c[4];
        if (bits == 4) {   // nibbles: byte i of half h = inputs i (low) and 16 + i (high)
            const __m128i m0f = _mm_set1_epi8(0x0f);
            for (int h = 0; h < 2; h++) {
                const __m128i v = _mm_loadu_si128((const __m128i *) (blk + offsetof(ggml_maq_head, qs) + 16 * h));
                c[2 * h] = _mm_and_si128(v, m0f);
                c[2 * h + 1] = _mm_and_si128(_mm_srli_epi16(v, 4), m0f);
            }
        } else {
            const __m128i v = _mm_loadu_si128((const __m128i *) hd->qs);
            const __m128i m3 = _mm_set1_epi8(3);
            const __m128i k0 = _mm_and_si128(v, m3);
            const __m128i k1 = _mm_and_si128(_mm_srli_epi16(v, 2), m3);
            const __m128i k2 = _mm_and_si128(_mm_srli_epi16(v, 4), m3);
            const __m128i k3 = _mm_and_si128(_mm_srli_epi16(v, 6), m3);
            c[0] = _mm_unpacklo_epi64(k0, k1);
            c[1] = _mm_unpacklo_epi64(k2, k3);
            c[2] = _mm_unpackhi_epi64(k0, k1);
            c[3] = _mm_unpackhi_epi64(k2, k3);
        }
        if (bits == 3) {
            const __m128i four = _mm_set1_epi8(4);
            for (int i = 0; i < 4; i++) {
                c[i] = _mm_or_si128(c[i], _mm_and_si128(maq_bytes_from_bits_16(qh + 2 * i), four));
            }
        }
        for (int h = 0; h < 2; h++) {
            const __m128i ya = _mm_loadu_si128((const __m128i *) yb[h].qs);
            const __m128i yc = _mm_loadu_si128((const __m128i *) (yb[h].qs + 16));
            const __m128 sv = _mm_set1_ps(f[h][0]);
            lo = MAQ_VFMA(sv, _mm_cvtepi32_ps(_mm_madd_epi16(_mm_maddubs_epi16(c[2 * h], ya), one16)), lo);
            hi = MAQ_VFMA(sv, _mm_cvtepi32_ps(_mm_madd_epi16(_mm_maddubs_epi16(c[2 * h + 1], yc), one16)), hi);
            summ = MAQ_FMA(f[h][3], GGML_CPU_FP16_TO_FP32(yb[h].s), summ);
        }
    }
    float out[8];
    _mm_storeu_ps(out, lo);
    _mm_storeu_ps(out + 4, hi);
    *s = maq_reduce8(out) + summ;
}
#elif defined(__ARM_NEON) && defined(__aarch64__)
static inline int32x4_t maq_dot4(int8x16_t a, int8x16_t b) {   // lane l = sum of bytes 4l .. 4l+3 of a*b
#if defined(__ARM_FEATURE_DOTPROD)
    return vdotq_s32(vdupq_n_s32(0), a, b);
#else
    const int32x4_t p0 = vpaddlq_s16(vmull_s8(vget_low_s8(a), vget_low_s8(b)));
    const int32x4_t p1 = vpaddlq_s16(vmull_s8(vget_high_s8(a), vget_high_s8(b)));
    return vpaddq_s32(p0, p1);
#endif
}

static void maq_vec_dot_neon(int bits, int n, float * s, const void * vx, const void * vy) {
    const int nb = n / QK_MAQ;
    const block_q8_1 * y = (const block_q8_1 *) vy;
    const size_t bsz = maq_block_size(bits);
    static const uint8_t bitsel[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
    const uint8x16_t vbits = vld1q_u8(bitsel);
    float32x4_t lo = vdupq_n_f32(0.0f), hi = vdupq_n_f32(0.0f);
    float summ = 0.0f;
    for (int b = 0; b < nb; b++) {
        const uint8_t * blk = (const uint8_t *) vx + b * bsz;
        const block_q8_1 * yb = y + 2 * b;
        if (bits == 2 && ((const block_maq2 *) blk)->sal) {   // rare: the canonical scalar block on the lanes
            float a[8];
            vst1q_f32(a, lo);
            vst1q_f32(a + 4, hi);
            maq_block_scalar(blk, bits, yb, a, &summ);
            lo = vld1q_f32(a);
            hi = vld1q_f32(a + 4);
            continue;
        }
        float f[2][4];
        maq_factors(blk, bits, yb, 0, f[0]);
        maq_factors(blk, bits, yb, 1, f[1]);
        const ggml_maq_head * hd = (const ggml_maq_head *) blk;
        const uint8_t * qh = blk + sizeof(ggml_maq_head);
        uint8x16_t c[4];
        if (bits == 4) {   // nibbles: byte i of half h = inputs i (low) and 16 + i (high)
            for (int h = 0; h < 2; h++) {
                const uint8x16_t v = vld1q_u8(blk + offsetof(ggml_maq_head, qs) + 16 * h);
                c[2 * h] = vandq_u8(v, vdupq_n_u8(0x0f));
                c[2 * h + 1] = vshrq_n_u8(v, 4);
            }
        } else {
            const uint8x16_t v = vld1q_u8(hd->qs);
            const uint8x16_t m3 = vdupq_n_u8(3);
            const uint8x16_t k0 = vandq_u8(v, m3);
            const uint8x16_t k1 = vandq_u8(vshrq_n_u8(v, 2), m3);
            const uint8x16_t k2 = vandq_u8(vshrq_n_u8(v, 4), m3);
            const uint8x16_t k3 = vshrq_n_u8(v, 6);
            c[0] = vcombine_u8(vget_low_u8(k0), vget_low_u8(k1));
            c[1] = vcombine_u8(vget_low_u8(k2), vget_low_u8(k3));
            c[2] = vcombine_u8(vget_high_u8(k0), vget_high_u8(k1));
            c[3] = vcombine_u8(vget_high_u8(k2), vget_high_u8(k3));
        }
        if (bits == 3) {
            const uint8x16_t four = vdupq_n_u8(4);
            for (int i = 0; i < 4; i++) {
                const uint8x16_t hb = vcombine_u8(vdup_n_u8(qh[2 * i]), vdup_n_u8(qh[2 * i + 1]));
                c[i] = vorrq_u8(c[i], vandq_u8(vtstq_u8(hb, vbits), four));
            }
        }
        for (int h = 0; h < 2; h++) {
            const int8x16_t ya = vld1q_s8(yb[h].qs), yc = vld1q_s8(yb[h].qs + 16);
            const float32x4_t sv = vdupq_n_f32(f[h][0]);
            lo = vfmaq_f32(lo, sv, vcvtq_f32_s32(maq_dot4(vreinterpretq_s8_u8(c[2 * h]), ya)));
            hi = vfmaq_f32(hi, sv, vcvtq_f32_s32(maq_dot4(vreinterpretq_s8_u8(c[2 * h + 1]), yc)));
            summ = MAQ_FMA(f[h][3], GGML_CPU_FP16_TO_FP32(yb[h].s), summ);
        }
    }
    float out[8];
    vst1q_f32(out, lo);
    vst1q_f32(out + 4, hi);
    *s = maq_reduce8(out) + summ;
}
#endif

// mul_mat walks a tensor's rows in order and they are contiguous: ask for the row about 2 KiB ahead of this one
// (the hardware prefetchers stop at every 4 KiB page). A hint only: prefetches never fault; results unchanged.
// MAQ's own runtime measured 87 -> 125 tok/s on SmolLM2 decode with the same distance (docs/BENCHMARKS.md).
static inline void maq_prefetch_ahead(const void * vx, size_t row_bytes) {
    const size_t ahead = row_bytes >= 2048 ? row_bytes : (2048 + row_bytes - 1) / row_bytes * row_bytes;
    const char * p = (const char *) vx + ahead;
    for (size_t o = 0; o < row_bytes; o += 64) {
        __builtin_prefetch(p + o, 0, 3);
    }
}

static void maq_vec_dot(int bits, int n, float * s, const void * vx, const void * vy) {
    maq_prefetch_ahead(vx, (size_t) (n / QK_MAQ) * maq_block_size(bits));
#if defined(__AVX2__) && defined(__FMA__)
    maq_vec_dot_avx2(bits, n, s, vx, vy);
#elif defined(__SSSE3__)
    maq_vec_dot_sse(bits, n, s, vx, vy);
#elif defined(__ARM_NEON) && defined(__aarch64__)
    maq_vec_dot_neon(bits, n, s, vx, vy);
#else
    ggml_vec_dot_maq_q8_1_ref(bits, n, s, vx, vy);
#endif
}

void ggml_vec_dot_maq2_q8_1(int n, float * s, size_t bs, const void * vx, size_t bx, const void * vy, size_t by, int nrc) {
    GGML_UNUSED(bs); GGML_UNUSED(bx); GGML_UNUSED(by); GGML_UNUSED(nrc);
    maq_vec_dot(2, n, s, vx, vy);
}

void ggml_vec_dot_maq3_q8_1(int n, float * s, size_t bs, const void * vx, size_t bx, const void * vy, size_t by, int nrc) {
    GGML_UNUSED(bs); GGML_UNUSED(bx); GGML_UNUSED(by); GGML_UNUSED(nrc);
    maq_vec_dot(3, n, s, vx, vy);
}

void ggml_vec_dot_maq4_q8_1(int n, float * s, size_t bs, const void * vx, size_t bx, const void * vy, size_t by, int nrc) {
    GGML_UNUSED(bs); GGML_UNUSED(bx); GGML_UNUSED(by); GGML_UNUSED(nrc);
    maq_vec_dot(4, n, s, vx, vy);
}
