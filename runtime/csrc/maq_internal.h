/* maq_internal.h -- shared between the MAQ C kernel files; not part of the Python cdef.
 *
 * Kernel families (one .c file each, #if per ISA inside, scalar reference beside every SIMD path):
 *   dispatch.c  SIMD path selection (scalar / sse / avx2 / neon / dotprod), fp16 conversion
 *   pool.c      persistent thread pool
 *   act.c       activation preprocessing (layouts below)
 *   maq2.c      MAQ2 / MAQ3 / MAQ4 products and get_row (one family: same words, scales and activation)
 *   q8_0.c      Q8_0 products and get_row
 *   float.c     F32 / F16 products and get_row
 *   matmul.c    public entry points: split rows across the pool, dispatch by type
 *   bench.c     read-bandwidth helper for scripts/bench_kernel.py
 *
 * Exactness contract: every path computes the same integers per block and performs the same float
 * operations in the same order (no FMA contraction: built with -ffp-contract=off), so all paths give
 * bit-identical results; tests check equality, not a tolerance.
 */
#ifndef MAQ_INTERNAL_H
#define MAQ_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "maq.h"

#if defined(__x86_64__) || defined(_M_X64)
#define MAQ_X86 1
#endif
#if defined(__aarch64__)
#define MAQ_NEON 1
#endif

#define MAQ_ALIGN 64
#define MAQ_ROUND_UP(x, a) ((((x) + (a) - 1) / (a)) * (a))

/* ------------------------------------------------------------------ paths (dispatch.c) */
/* MAQ_PATH_VNNI: the AVX2 code with AVX-512 VNNI (vpdpbusd on 256-bit registers) where a kernel has a use for it;
 * kernels without one run their AVX2 code on it (maq_path_x86_base).
 * MAQ_PATH_AMX: the VNNI path plus AMX int8 tiles (TDPBUSD, 16 rows x 16 tokens x 64 inputs per instruction) for
 * batched MAQ2 / MAQ3 / MAQ4 products (B >= MAQ_AMX_MIN_B); every other product runs its VNNI code
 * (maq_path_int8_base). */
enum maq_path { MAQ_PATH_SCALAR = 0, MAQ_PATH_SSE = 1, MAQ_PATH_AVX2 = 2, MAQ_PATH_NEON = 3, MAQ_PATH_DOTPROD = 4,
                MAQ_PATH_VNNI = 5, MAQ_PATH_AMX = 6 };
#define MAQ_N_PATHS 7
/* The path whose code a kernel without a VNNI variant runs: AVX2 for VNNI and AMX, else the path itself. */
static inline int maq_path_x86_base(int path) {
    return path == MAQ_PATH_VNNI || path == MAQ_PATH_AMX ? MAQ_PATH_AVX2 : path;
}
/* The path whose code a kernel without an AMX variant runs: VNNI for AMX, else the path itself. */
static inline int maq_path_int8_base(int path) { return path == MAQ_PATH_AMX ? MAQ_PATH_VNNI : path; }
/* aarch64 "dotprod": the NEON path with the ARMv8.2 SDOT instruction for the int8 dot products (optional, like
 * AVX2 on x86), compiled with a target attribute and chosen at run time from the CPU's HWCAP. */
#if defined(MAQ_NEON)
#if defined(__clang__)
#define MAQ_DOTPROD_ATTR __attribute__((target("dotprod")))
#else
#define MAQ_DOTPROD_ATTR __attribute__((target("arch=armv8.2-a+dotprod")))
#endif
#endif
int maq_path_id(void); /* the active path (enum maq_path) */
/* x86-64: whether the CPU has GFNI (the vnni path's single-token MAQ rows use vgf2p8affineqb) and the environment
 * does not say MAQ_NO_GFNI=1 (then those rows run the 256-bit code, as on CPUs without GFNI); 0 elsewhere. */
int maq_cpu_gfni(void);
/* x86-64: the CPU has the VNNI path's instructions (AVX-512 F/BW/VL/VNNI), whatever path is active. */
int maq_cpu_vnni(void);

/* IEEE half <-> float, exact (bit manipulation, no hardware conversion needed). */
static inline float maq_h2f(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t em = h & 0x7fffu;
    uint32_t bits;
    if (em >= 0x7c00u) {                 /* inf / nan */
        bits = sign | 0x7f800000u | ((em & 0x3ffu) << 13);
    } else if (em >= 0x0400u) {          /* normal */
        bits = sign | ((em << 13) + ((uint32_t)(127 - 15) << 23));
    } else {                             /* zero / subnormal: em * 2^-24, exact in float */
        float f = (float)em * 5.9604644775390625e-08f;
        memcpy(&bits, &f, 4);
        bits |= sign;
    }
    float out;
    memcpy(&out, &bits, 4);
    return out;
}

/* float -> half, round to nearest even (used only to round activation scales the way ggml does). */
static inline uint16_t maq_f2h(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) return (uint16_t)(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u : 0u));
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);          /* overflow -> inf */
    if (ax < 0x38800000u) {                                           /* subnormal half or zero */
        /* value * 2^24 rounded to nearest even integer */
        float v;
        uint32_t axb = ax;
        memcpy(&v, &axb, 4);
        v = v * 16777216.0f;                                          /* exact (power of two) */
        uint32_t i = (uint32_t)v;
        float rem = v - (float)i;
        if (rem > 0.5f || (rem == 0.5f && (i & 1u))) i++;
        return (uint16_t)(sign | i);
    }
    uint32_t mant = ax & 0x7fffffu;
    uint32_t exp = (ax >> 23) - 127 + 15;
    uint32_t h = (exp << 10) | (mant >> 13);
    uint32_t rest = mant & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) h++;
    return (uint16_t)(sign | h);
}

/* ------------------------------------------------------------------ software prefetch of the weight stream */
/* Decode is a stream of weight rows; the hardware prefetchers stop at every 4 KiB page boundary and track few
 * streams, so a row loop asks for the row about `ahead` bytes past the one it computes. Distances measured on
 * SmolLM2 decode (x86-64 Xeon, 1 thread, bench_speed-style loop; docs/BENCHMARKS.md): MAQ3/4 rows (words + hi
 * plane) 2 KiB: 87 -> 125 tok/s (1 KiB 117, 4 KiB 116); Q8_0 rows 1 KiB: 62 -> 77 tok/s (4 KiB 57). Rows are
 * prefetched whole, a cache line at a time; a hint only, no effect on results. Only when a product visits each row
 * once (tokens <= one token tile): rows revisited per token tile are in cache already (pp512 ~3 % faster without). */
#define MAQ_PF_BYTES_MAQ 2048
#define MAQ_PF_BYTES_Q8 1024
/* Rows ahead for a stream of rb bytes per row: enough rows to cover `ahead` bytes, at least 1. */
static inline int maq_pf_rows(size_t rb, size_t ahead) { return rb >= ahead ? 1 : (int)((ahead + rb - 1) / rb); }
static inline void maq_prefetch(const void *p, size_t n) {
    for (size_t o = 0; o < n; o += 64) __builtin_prefetch((const char *)p + o, 0, 3);
}
/* Load-time 16-row panels (maq2_r16.c, q8_0.c) are one sequential stream per product: a single-token product asks
 * for the bytes MAQ_PF_BYTES_PANEL ahead of what it reads, into L2 (hint T1). SmolLM2 MAQ 4.0 decode, 1 thread,
 * ms/token (2026-12-08, load ~0.6): none 4.7 (the hardware prefetchers alone), 8 KiB 4.57, 16 KiB 4.28, 32 KiB
 * 4.32; 16 KiB into L1 (T0) 6.03 -- it evicts the activations; 16 KiB T2 4.33. A streamed 11008 x 4096 MAQ4
 * product (1 thread) runs at 50-59 Gweights/s with it (~30 GB/s). */
#define MAQ_PF_BYTES_PANEL 16384

/* x86-64 GFNI: vgf2p8affineqb matrices, output bit i of a byte = parity(matrix byte 7-i & input byte).
 * GF_BITS(a, b): output bits 0, 1 = input bits a, b, the rest 0 (a 2-bit field moved down to a byte of its own);
 * GF_BIT_TO_2(n): output bit 2 = input bit n, the rest 0 (a MAQ3 hi bit beside its 2 low bits). */
#define GF_BITS(a, b) (1ull << (a) << 56 | 1ull << (b) << 48)
#define GF_BIT_TO_2(n) (1ull << (n) << 40)
static inline void maq_prefetch_l2(const void *p, size_t n) {
    for (size_t o = 0; o < n; o += 64) __builtin_prefetch((const char *)p + o, 0, 2);
}

/* ------------------------------------------------------------------ row x token tiling (maq2.c, q8_0.c, float.c) */
/* Rows [p0, p1) x B tokens: tiles of 16 rows (their weights stay in L1/L2) x ntmax tokens, or all rows at once when
 * B <= ntmax (no row is visited twice). tile(ctx, t0, nt, pa, pb) computes tokens t0..t0+nt-1 of rows [pa, pb);
 * each kernel family passes its own (it builds the per-token activation pointers and calls its row function). */
typedef void (*maq_tile_fn)(void *ctx, int t0, int nt, int pa, int pb);
static inline void maq_rows_tiled(int B, int p0, int p1, int ntmax, maq_tile_fn tile, void *ctx) {
    const int rt = B <= ntmax ? p1 - p0 : 16;
    for (int pt = p0; pt < p1; pt += rt) {
        const int pe = pt + rt < p1 ? pt + rt : p1;
        for (int t0 = 0; t0 < B; t0 += ntmax) tile(ctx, t0, B - t0 < ntmax ? B - t0 : ntmax, pt, pe);
    }
}

/* ------------------------------------------------------------------ activation layouts (act.c) */
/* MAQ2 activation (also MAQ3 / MAQ4), one token row of T inputs (all regions 64-byte aligned inside the row):
 *   xp    int8  [nb][128]   x quantized per 128-input block, each block stored permuted for the SIMD paths:
 *                           xp[b*128 + 32*k + 16*c + 4*i + t] = x[128*b + 64*c + 16*i + 4*t + k]
 *                           (c = 64-input chunk 0..1, i = word in chunk 0..3, t = byte of word 0..3,
 *                           k = 2-bit field of the byte 0..3); only full 64-input chunks, rest zero.
 *   xn    int8  [T]         the same int8 values in natural order (scalar path, tail words)
 *   dx    float [nb]        block scale: x ~= dx[b] * q
 *   s4    int16 [T/4]       sums of 4 consecutive int8 inputs (salient words)
 *   xs32  int16 [ceil(T/32)], xs64 int16 [ceil(T/64)], xs128 int16 [nb]: sums of int8 inputs per group
 *   xz    int8  [ceil(nb/2)][4][2][32]   (x86-64 builds only; elsewhere empty) xp regrouped for 512-bit registers:
 *                           xz[256*(b/2) + 64*k + 32*(b%2) + n] = xp[128*b + 32*k + n] (n = 0..31), so field k of
 *                           two consecutive blocks is one 64-byte load; an odd last block's partner half is zero
 *   nb = ceil(T/128); the last block (and last group) may be ragged.
 */
typedef struct {
    int T, nb;
    size_t xp, xn, dx, s4, xs32, xs64, xs128, xz, stride;   /* byte offsets in a row; stride = row bytes */
} maq2_act_layout;
void maq2_act_layout_init(maq2_act_layout *L, int T);

/* Q8_0 activation, one token row (T % 32 == 0): the ggml block_q8_0 quantization of x, split for alignment:
 *   qs int8 [T]; dx float [T/32] (the fp16-rounded block scale, as float); xs int32 [T/32] (each block's sum of
 *   qs: the VNNI panels' correction for their unsigned weight bytes, q8_0.c). */
typedef struct {
    int T, nb;
    size_t qs, dx, xs, stride;
} q8_act_layout;
void q8_act_layout_init(q8_act_layout *L, int T);

/* AMX operands of a MAQ-family activation (x86-64 builds, B >= MAQ_AMX_MIN_B; written by maq_act_prepare only when
 * the active path is "amx"), placed right after the B rows (offset B * stride, 64-byte aligned). Per token tile j
 * (tokens 16j..16j+15, missing tokens zero), maq2_act_tile_stride(T) bytes:
 *   ops int8  [nch][16 k4][16 n][4 i] = xn[token 16j + n][64c + 4*k4 + i] (inputs >= T zero): per 64-input chunk c,
 *             1 KiB, the B operand of TDPBUSD (4 consecutive inputs of one token per int32 lane); its first 512
 *             bytes are the tile of inputs 64c..64c+31, the last 512 of 64c+32..64c+63 (the 32-input tiles of G = 32)
 *   dx  float [nb][16 n]   the tokens' block scales
 *   xs  int32 [nb][16 n]   128 * the tokens' block input sums (xs128)
 * with nch = ceil(T/64), nb = ceil(T/128). A 64-byte trailer follows the last tile: uint32 MAQ_AMX_TILES_MARK ^ B when
 * the tiles were laid out for these B rows, else 0 (a product whose activation was prepared on another path runs its
 * VNNI code instead of reading stale tiles). */
#define MAQ_AMX_MIN_B 16
#define MAQ_AMX_TILES_MARK 0x414d5854u   /* "TXMA" */
static inline size_t maq2_act_tile_stride(int T) {
    return (size_t)((T + 63) / 64) * 1024u + (size_t)((T + 127) / 128) * 128u;
}
static inline size_t maq2_act_tiles_bytes(int T, int B) {
#if defined(MAQ_X86)
    return B >= MAQ_AMX_MIN_B ? (size_t)((B + 15) / 16) * maq2_act_tile_stride(T) + 64u : 0;
#else
    (void)T;
    (void)B;
    return 0;
#endif
}
/* The trailer of the AMX operands of B activation rows of `stride` bytes at act (maq2_act_tiles_bytes(T, B) > 0). */
static inline uint8_t *maq2_act_tiles_mark(const uint8_t *act, size_t stride, int T, int B) {
    return (uint8_t *)(uintptr_t)act + (size_t)B * stride + maq2_act_tiles_bytes(T, B) - 64;
}

/* Bytes of B activation rows (without the alignment slack maq_act_bytes adds); MAQ family: plus the AMX tiles. */
size_t maq_act_rows_bytes(const maq_weight *w, int B);
/* The 64-byte aligned start of the activation inside a caller's buffer. */
static inline uint8_t *maq_act_align(const void *p) {
    return (uint8_t *)(((uintptr_t)p + (MAQ_ALIGN - 1)) & ~(uintptr_t)(MAQ_ALIGN - 1));
}

/* F32 / F16 activation: float [T] per row, stride rounded up to 64 bytes. */
size_t float_act_stride(int T);

/* ------------------------------------------------------------------ per-type traits (as ggml's type_traits_cpu) */
/* What a weight type needs from the kernels: its activation (bytes, preparation) and its products. The table is
 * matmul.c's, indexed by maq_weight.type (maq.h); the loader only hands C the types it lists. */
typedef struct {
    size_t (*act_rows_bytes)(int T, int B);   /* bytes of B activation rows (MAQ family: plus the AMX tiles) */
    /* B rows of X [B][T] into the activation at a (aligned); tmp [T]: scratch for a rotated input row */
    void (*act_prepare)(const maq_weight *w, const float *X, int B, uint8_t *a, float *tmp, int path);
    /* rows [p0, p1) of Y [B][P] (row-major, token-major) from B activation rows of `stride` bytes */
    void (*rows)(const maq_weight *w, const uint8_t *act, int B, int p0, int p1, float *Y, int path);
    void (*get_row)(const maq_weight *w, int p, float *out);   /* row p dequantized */
    /* load-time 16-row panels (maq_r16_bytes / maq_r16_pack); NULL where the type has none */
    size_t (*r16_bytes)(const maq_weight *w);
    void (*r16_pack)(const maq_weight *w, void *dst);
} maq_type_traits;
const maq_type_traits *maq_traits(int type);

/* act.c, per activation layout (maq2_*: MAQ2, MAQ3 and MAQ4) */
size_t maq2_act_rows_bytes(int T, int B);
size_t q8_act_rows_bytes(int T, int B);
size_t float_act_rows_bytes(int T, int B);
void maq2_act_prepare(const maq_weight *w, const float *X, int B, uint8_t *a, float *tmp, int path);
void q8_act_prepare(const maq_weight *w, const float *X, int B, uint8_t *a, float *tmp, int path);
void float_act_prepare(const maq_weight *w, const float *X, int B, uint8_t *a, float *tmp, int path);

/* kernels: maq2_rows / maq2_get_row serve MAQ_TYPE_MAQ2, MAQ3 and MAQ4 (by w->type) */
void maq2_rows(const maq_weight *w, const uint8_t *act, int B, int p0, int p1, float *Y, int path);
void q8_0_rows(const maq_weight *w, const uint8_t *act, int B, int p0, int p1, float *Y, int path);
void float_rows(const maq_weight *w, const uint8_t *act, int B, int p0, int p1, float *Y, int path);

void maq2_get_row(const maq_weight *w, int p, float *out);
/* maq2_r16.c: the MAQ family's panels (its traits' r16_bytes / r16_pack), and rows [p0, p1) (p0 a multiple of 16) of
 * a weight with w->r16 for B tokens; 0 where not compiled (the caller then runs maq2.c's code). */
size_t maq2_r16_bytes(const maq_weight *w);
void maq2_r16_pack(const maq_weight *w, void *dst);
/* q8_0.c: Q8_0's panels */
size_t q8_r16_bytes(const maq_weight *w);
void q8_r16_pack(const maq_weight *w, void *dst);
int maq2_r16_rows(const maq_weight *w, const maq2_act_layout *L, const uint8_t *act, int B, int p0, int p1, float *Y);
/* maq_s8.c: MAQ2 int8 salient words (w->salw != NULL): added to / written over what maq2_rows / maq2_get_row gave. */
void maq_s8_rows(const maq_weight *w, const uint8_t *act, int B, int p0, int p1, float *Y, int path);
void maq_s8_get_row(const maq_weight *w, int p, float *out);
void q8_0_get_row(const maq_weight *w, int p, float *out);
void float_get_row(const maq_weight *w, int p, float *out);

/* ------------------------------------------------------------------ x86 SIMD helpers shared by kernel files */
#if defined(MAQ_X86)
#include <immintrin.h>
/* IEEE half (low 16 bits of each 32-bit lane) -> float, exact, no denormal arithmetic (as maq_h2f). SSE4.1. */
static inline __attribute__((always_inline, target("ssse3,sse4.1"))) __m128 maq_h2f_sse(__m128i h) {
    const __m128i sign = _mm_slli_epi32(_mm_and_si128(h, _mm_set1_epi32(0x8000)), 16);
    const __m128i em = _mm_and_si128(h, _mm_set1_epi32(0x7fff));
    __m128i norm = _mm_add_epi32(_mm_slli_epi32(em, 13), _mm_set1_epi32(112 << 23));
    norm = _mm_or_si128(norm, _mm_and_si128(_mm_cmpgt_epi32(em, _mm_set1_epi32(0x7bff)), _mm_set1_epi32(0x7f800000)));
    const __m128 sub = _mm_mul_ps(_mm_cvtepi32_ps(em), _mm_set1_ps(5.9604644775390625e-08f));
    const __m128 f = _mm_blendv_ps(_mm_castsi128_ps(norm), sub, _mm_castsi128_ps(_mm_cmplt_epi32(em, _mm_set1_epi32(0x400))));
    return _mm_or_ps(f, _mm_castsi128_ps(sign));
}
#endif

#endif /* MAQ_INTERNAL_H */
