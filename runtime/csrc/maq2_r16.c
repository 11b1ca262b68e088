/* maq2_r16.c -- MAQ2 / MAQ3 / MAQ4 weights repacked at load time into 16-row interleaved panels ("R16"), and their
 * products on the VNNI path (AVX-512 VNNI + GFNI).
 *
 * Why: a single-token product of the file's layout runs one row at a time (maq2.c's 512-bit rows): per row a 32-bit
 * word per 16 inputs, then per-row lane sums and float steps, about 9.5 ns of fixed cost on each of SmolLM2's
 * 576-wide rows. Here 16 rows are one panel, one row per int32 lane of a 512-bit register: a 64-byte load holds 4
 * inputs' codes of each of the 16 rows, vpdpbusd against 4 broadcast int8 inputs accumulates all 16 rows at once, and
 * the per-group / per-block steps run once per 16 rows with nothing reduced across lanes (the layout of maq2.c's
 * prompt panels, kept packed so that it costs the file's bits and is read as one sequential stream).
 *
 * Layout (maq_r16_bytes / maq_r16_pack, the MAQ family's traits): panel i holds rows 16i..16i+15 (rows past P all zero), panel_bytes(w) apart:
 *   codes  MAQ4: uint8 [T/8][16 rows][4]    byte 64k + 4r + j = code(8k + j) | code(8k + 4 + j) << 4
 *          MAQ2: uint8 [T/16][16 rows][4]   byte 64k + 4r + j: bits 2f..2f+1 = code(16k + 4f + j), f = 0..3
 *          MAQ3: uint8 [T/32][3][16 rows][4], step k of 32 inputs = three 64-byte parts:
 *                part s (s = 0, 1), byte 4r + j: bits 2f..2f+1 = low 2 bits of code(32k + 16s + 4f + j), f = 0..3
 *                part 2,            byte 4r + j: bit 4s + f   = bit 2 of code(32k + 16s + 4f + j)
 *   sc     uint8 [ng][16]   group scales
 *   m      int8  [ng][16]   group minima
 *   d      float [16], dmin float [16]   row scales (the file's halves, converted)
 *   dsal   float [16]                    MAQ2 only (its final step adds dsal * S, S = 0 here, as the reference)
 * then zero padding to a multiple of 64 bytes. Codes cost the file's bits per weight (4, 3, 2).
 * Eligible: MAQ3 / MAQ4, and MAQ2 tensors without salient words (no bitmap bit set, no int8 coding: RTN files,
 * tensors the allocation gave none), T % 32 == 0, on a CPU with AVX-512 VNNI and GFNI; maq_r16_bytes is 0
 * otherwise. The products are bit-identical to the scalar reference: per group the exact integer code dots C give
 * D_b += sc * C and M_b += m * XS_g, per block the float steps of maq2.c's acc_block / acc_final with lanes = rows.
 */
#ifndef _GNU_SOURCE       /* mmap / madvise flags (a build may define it already: llama.cpp's) */
#define _GNU_SOURCE
#endif
#include <stdlib.h>
#include <string.h>
#if defined(__linux__)
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#endif

#include "maq_internal.h"

#if defined(MAQ_X86)
#include <immintrin.h>
#endif

static int r16_ng(const maq_weight *w) { return (w->T + w->G - 1) / w->G; }

/* Bytes of one panel's codes, and of the whole panel (see the layout above). */
static int r16_bits(const maq_weight *w) { return w->type == MAQ_TYPE_MAQ4 ? 4 : w->type == MAQ_TYPE_MAQ3 ? 3 : 2; }
static size_t r16_codes_bytes(const maq_weight *w) { return (size_t)2 * r16_bits(w) * w->T; }
static size_t r16_tail_bytes(const maq_weight *w) { return (size_t)32 * r16_ng(w) + (r16_bits(w) == 2 ? 192 : 128); }
static size_t r16_panel_bytes(const maq_weight *w) { return (r16_codes_bytes(w) + r16_tail_bytes(w) + 63) / 64 * 64; }

static int no_salient_words(const maq_weight *w) {
    if (!w->bitmap || w->salw) return 0;   /* (a descriptor without its parts: not known to qualify) */
    const size_t n = (size_t)w->P * (size_t)((w->T + 127) / 128);
    for (size_t i = 0; i < n; i++)
        if (w->bitmap[i]) return 0;
    return 1;
}

static int r16_eligible(const maq_weight *w) {
    if (w->type != MAQ_TYPE_MAQ2 && w->type != MAQ_TYPE_MAQ3 && w->type != MAQ_TYPE_MAQ4) return 0;
    return w->T % 32 == 0 && maq_cpu_vnni() && maq_cpu_gfni() && (w->type != MAQ_TYPE_MAQ2 || no_salient_words(w));
}

size_t maq2_r16_bytes(const maq_weight *w) {
    return r16_eligible(w) ? (size_t)((w->P + 15) / 16) * r16_panel_bytes(w) : 0;
}

/* c[i] = code of input i0 + i of row p, i < n (n, i0 multiples of 16; the file's words and hi plane:
 * docs/FORMAT.md). */
static void row_codes(const maq_weight *w, int p, int i0, int n, uint8_t *c) {
    const int nw = w->T >> 4;
    const uint32_t *words = (const uint32_t *)w->data + (size_t)p * nw;
    c -= i0;
    for (int wi = i0 >> 4; wi < (i0 + n) >> 4; wi++) {
        const uint32_t lo = words[wi];
        const uint32_t hi = w->type == MAQ_TYPE_MAQ4 ? ((const uint32_t *)w->hi)[(size_t)p * nw + wi]
                          : w->type == MAQ_TYPE_MAQ3 ? ((const uint16_t *)w->hi)[(size_t)p * nw + wi] : 0;
        for (int j = 0; j < 16; j++) {
            const unsigned h = w->type == MAQ_TYPE_MAQ4 ? hi >> (2 * j) & 3u : hi >> j & 1u;
            c[16 * wi + j] = (uint8_t)((lo >> (2 * j) & 3u) | h << 2);
        }
    }
}

/* Row r of a panel's codes of n inputs (a multiple of 32) from the row's code bytes c[n]; codes: the panel's codes
 * from the first of those inputs. */
static void r16_pack_codes(const maq_weight *w, const uint8_t *c, int n, int r, uint8_t *codes) {
    const int T = n;
    if (w->type == MAQ_TYPE_MAQ4) {
        for (int k = 0; k < T / 8; k++)
            for (int j = 0; j < 4; j++) codes[64 * k + 4 * r + j] = (uint8_t)(c[8 * k + j] | c[8 * k + 4 + j] << 4);
        return;
    }
    if (w->type == MAQ_TYPE_MAQ2) {
        for (int k = 0; k < T / 16; k++)
            for (int j = 0; j < 4; j++) {
                const uint8_t *q = c + 16 * k + j;
                codes[64 * k + 4 * r + j] = (uint8_t)(q[0] | q[4] << 2 | q[8] << 4 | q[12] << 6);
            }
        return;
    }
    for (int k = 0; k < T / 32; k++) {
        uint8_t *step = codes + (size_t)192 * k;
        for (int j = 0; j < 4; j++) {
            unsigned hi = 0;
            for (int s = 0; s < 2; s++) {
                unsigned lo = 0;
                for (int f = 0; f < 4; f++) {
                    const unsigned q = c[32 * k + 16 * s + 4 * f + j];
                    lo |= (q & 3u) << (2 * f);
                    hi |= (q >> 2) << (4 * s + f);
                }
                step[64 * s + 4 * r + j] = (uint8_t)lo;
            }
            step[128 + 4 * r + j] = (uint8_t)hi;
        }
    }
}

#define R16_PACK_CHUNK 512   /* inputs decoded at a time: a multiple of every step (8, 16, 32 inputs) */
void maq2_r16_pack(const maq_weight *w, void *dst) {
    const int ng = r16_ng(w), np = (w->P + 15) / 16;
    const size_t pb = r16_panel_bytes(w), cb = r16_codes_bytes(w);
    uint8_t c[R16_PACK_CHUNK];   /* codes of a row's inputs i0..i0+n */
    memset(dst, 0, (size_t)np * pb);
    for (int i = 0; i < np; i++) {
        uint8_t *panel = (uint8_t *)dst + (size_t)i * pb;
        uint8_t *sc = panel + cb;
        int8_t *m = (int8_t *)(sc + (size_t)16 * ng);
        float *d = (float *)(sc + (size_t)32 * ng), *dmin = d + 16, *dsal = d + 32;
        for (int r = 0; r < 16 && 16 * i + r < w->P; r++) {
            const int p = 16 * i + r;
            for (int i0 = 0; i0 < w->T; i0 += R16_PACK_CHUNK) {
                const int n = w->T - i0 < R16_PACK_CHUNK ? w->T - i0 : R16_PACK_CHUNK;
                row_codes(w, p, i0, n, c);
                r16_pack_codes(w, c, n, r, panel + (size_t)2 * r16_bits(w) * i0);   /* 2 x bits bytes per input */
            }
            const uint8_t *rs = w->scales + (size_t)p * 2 * ng;
            for (int g = 0; g < ng; g++) {
                sc[16 * g + r] = rs[g];
                m[16 * g + r] = (int8_t)rs[ng + g];
            }
            d[r] = maq_h2f(w->rowscale[3 * (size_t)p]);
            dmin[r] = maq_h2f(w->rowscale[3 * (size_t)p + 1]);
            if (w->type == MAQ_TYPE_MAQ2) dsal[r] = maq_h2f(w->rowscale[3 * (size_t)p + 2]);
        }
    }
}

int maq_pages_from_file(const void *p, size_t n, const char *path, uint64_t offset, int remap) {
#if defined(__linux__)
    const uintptr_t ps = (uintptr_t)sysconf(_SC_PAGESIZE), a = ((uintptr_t)p + ps - 1) / ps * ps;
    const uintptr_t b = ((uintptr_t)p + n) / ps * ps;
    if (b <= a) return 0;
    const uint64_t off = offset + (a - (uintptr_t)p);
    if (off % ps) return -1;   /* the buffer's pages do not line up with the file's */
    if (remap) {
        const int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) return -1;
        struct stat st;
        void *tmp = MAP_FAILED;
        if (fstat(fd, &st) == 0 && (uint64_t)st.st_size >= off + (b - a))
            tmp = mmap(NULL, b - a, PROT_READ, MAP_PRIVATE, fd, (off_t)off);
        int ok = tmp != MAP_FAILED && memcmp(tmp, (const void *)a, b - a) == 0;   /* the file still holds them */
        if (ok) ok = mmap((void *)a, b - a, PROT_READ, MAP_PRIVATE | MAP_FIXED, fd, (off_t)off) != MAP_FAILED;
        if (tmp != MAP_FAILED) munmap(tmp, b - a);
        close(fd);
        if (!ok) return -1;
    }
    return madvise((void *)a, b - a, MADV_DONTNEED) == 0 ? 0 : -1;
#else
    (void)p, (void)n, (void)path, (void)offset, (void)remap;
    return -1;
#endif
}

#if defined(MAQ_X86)
#define R16_TARGET "avx2,f16c,ssse3,sse4.1,avx512f,avx512bw,avx512vl,avx512vnni,gfni"
#define R16_FN static inline __attribute__((always_inline, target(R16_TARGET)))
#define R16_NT 8   /* tokens per tile: each 64-byte load of codes serves up to 8 tokens */


static int32_t load_x4(const int8_t *x) {
    int32_t v;
    memcpy(&v, x, 4);
    return v;
}

/* Packed codes come in steps: MAQ4 8 inputs in 64 bytes, MAQ2 16 in 64, MAQ3 32 in 192 (the layout above). */
#define R16_STEP_INPUTS(BITS) ((BITS) == 4 ? 8 : (BITS) == 2 ? 16 : 32)
#define R16_STEP_BYTES(BITS) ((BITS) == 3 ? 192 : 64)

/* The code bytes of inputs 4j..4j+3 of a packed step st, one row per int32 lane (vpdpbusd's u8 operand): MAQ4
 * nibble j; MAQ2 field j (one GF(2) affine map); MAQ3 field j % 4 of part j / 4 with its hi bit (bit j of part 2). */
R16_FN __m512i step_codes(const uint8_t *st, const int BITS, const int j) {
    if (BITS == 4) {
        const __m512i v = _mm512_load_si512((const void *)st);
        return _mm512_and_si512(j ? _mm512_srli_epi16(v, 4) : v, _mm512_set1_epi8(0x0f));
    }
    if (BITS == 2) {
        const __m512i v = _mm512_load_si512((const void *)st);
        return j ? _mm512_gf2p8affine_epi64_epi8(v, _mm512_set1_epi64((long long)GF_BITS(2 * j, 2 * j + 1)), 0)
                 : _mm512_and_si512(v, _mm512_set1_epi8(3));
    }
    const int f = j & 3;
    const __m512i lo = _mm512_load_si512((const void *)(st + 64 * (j >> 2)));
    const __m512i h = _mm512_load_si512((const void *)(st + 128));
    const __m512i hb = _mm512_gf2p8affine_epi64_epi8(h, _mm512_set1_epi64((long long)GF_BIT_TO_2(j)), 0);
    /* (3 & (lo >> 2f)) | hb: ternary logic 0xea = (A & B) | C */
    return _mm512_ternarylogic_epi32(_mm512_set1_epi8(3), f ? _mm512_srli_epi16(lo, 2 * f) : lo, hb, 0xea);
}

/* C[n] += code dots of packed step k with token n's int8 inputs xn[n] (two accumulator chains below 4 tokens). */
R16_FN void step_packed(const uint8_t *codes, int k, const int NT, const int BITS, const int8_t *const *xn,
                        __m512i C[][2]) {
    const uint8_t *st = codes + (size_t)R16_STEP_BYTES(BITS) * k;
    const size_t i0 = (size_t)R16_STEP_INPUTS(BITS) * k;   /* the step's first input */
    for (int j = 0; j < R16_STEP_INPUTS(BITS) / 4; j++) {
        const __m512i c = step_codes(st, BITS, j);
        for (int n = 0; n < NT; n++)
            C[n][NT >= 4 ? 0 : j & 1] = _mm512_dpbusd_epi32(C[n][NT >= 4 ? 0 : j & 1], c,
                                                            _mm512_set1_epi32(load_x4(xn[n] + i0 + 4 * j)));
    }
}

/* C[n] += code dots of inputs 4k..4k+3 from a panel's codes unpacked to bytes (r16_unpack). */
R16_FN void step_u8(const uint8_t *codes, int k, const int NT, const int8_t *const *xn, __m512i C[][2]) {
    const __m512i a = _mm512_load_si512((const void *)(codes + (size_t)64 * k));
    for (int n = 0; n < NT; n++) C[n][0] = _mm512_dpbusd_epi32(C[n][0], a, _mm512_set1_epi32(load_x4(xn[n] + 4 * k)));
}

/* A panel's codes as bytes, [T/4][16 rows][4] (the u8 operand of vpdpbusd, maq2.c's prompt panel layout): when a
 * panel serves several token tiles, each tile then skips the nibble / bit-field extraction. */
R16_FN void r16_unpack(const uint8_t *panel, int T, const int BITS, uint8_t *out) {
    const int J = R16_STEP_INPUTS(BITS) / 4;   /* 4-input groups per step */
    for (int k = 0; k < T / R16_STEP_INPUTS(BITS); k++)
#pragma GCC unroll 8
        for (int j = 0; j < J; j++)
            _mm512_store_si512((void *)(out + (size_t)64 * (J * k + j)),
                               step_codes(panel + (size_t)R16_STEP_BYTES(BITS) * k, BITS, j));
}

/* Y[n * P + pa + r] (r < nr) for the NT tokens whose activation rows start at act: one panel, every block, from its
 * packed codes or (UNPACKED) from u8, its codes unpacked to bytes (r16_unpack). */
R16_FN void r16_tile(const uint8_t *panel, const uint8_t *u8, const maq_weight *w, const maq2_act_layout *L,
                     const uint8_t *act, const int NT, const int BITS, const int UNPACKED, float *Y, int pa, int nr,
                     size_t pf) {
    const int T = w->T, G = w->G, ng = r16_ng(w), kstep = UNPACKED ? 4 : R16_STEP_INPUTS(BITS);
    const uint8_t *sc = panel + r16_codes_bytes(w);
    const int8_t *m = (const int8_t *)(sc + (size_t)16 * ng);
    const float *d = (const float *)(sc + (size_t)32 * ng);
    const size_t xs_off = G == 32 ? L->xs32 : G == 64 ? L->xs64 : L->xs128;
    const int8_t *xn[R16_NT];
    const float *dx[R16_NT];
    const int16_t *xs[R16_NT];
    for (int n = 0; n < NT; n++) {
        const uint8_t *row = act + (size_t)n * L->stride;
        xn[n] = (const int8_t *)(row + L->xn);
        dx[n] = (const float *)(row + L->dx);
        xs[n] = (const int16_t *)(row + xs_off);
    }
    if (pf) maq_prefetch_l2(sc + pf, r16_tail_bytes(w));   /* this panel's scales, pf bytes ahead */
    __m512 fD[R16_NT][4], fM[R16_NT][4];   /* lane b % 4 of acc_block, one row per element */
    for (int n = 0; n < NT; n++)
        for (int l = 0; l < 4; l++) fD[n][l] = fM[n][l] = _mm512_setzero_ps();
    for (int b = 0; b < L->nb; b++) {
        __m512i D[R16_NT], M[R16_NT];
        for (int n = 0; n < NT; n++) D[n] = M[n] = _mm512_setzero_si512();
        const int i1 = 128 * b + 128 < T ? 128 * b + 128 : T;
        for (int g = 128 * b / G; g * G < i1; g++) {
            const int k1 = ((g + 1) * G < T ? (g + 1) * G : T) / kstep;
            __m512i C[R16_NT][2];
            for (int n = 0; n < NT; n++) C[n][0] = C[n][1] = _mm512_setzero_si512();
            for (int k = g * G / kstep; k < k1; k++) {
                if (pf) maq_prefetch_l2(panel + pf + (size_t)R16_STEP_BYTES(BITS) * k, R16_STEP_BYTES(BITS));
                if (UNPACKED) step_u8(u8, k, NT, xn, C);
                else step_packed(panel, k, NT, BITS, xn, C);
            }
            const __m512i scg = _mm512_cvtepu8_epi32(_mm_load_si128((const __m128i *)(sc + 16 * g)));
            const __m512i mg = _mm512_cvtepi8_epi32(_mm_load_si128((const __m128i *)(m + 16 * g)));
            for (int n = 0; n < NT; n++) {
                const __m512i Cn = NT >= 4 || UNPACKED ? C[n][0] : _mm512_add_epi32(C[n][0], C[n][1]);
                D[n] = _mm512_add_epi32(D[n], _mm512_mullo_epi32(Cn, scg));
                M[n] = _mm512_add_epi32(M[n], _mm512_mullo_epi32(mg, _mm512_set1_epi32(xs[n][g])));
            }
        }
        const int l = b & 3;
        for (int n = 0; n < NT; n++) {
            const __m512 dv = _mm512_set1_ps(dx[n][b]);
            fD[n][l] = _mm512_add_ps(fD[n][l], _mm512_mul_ps(dv, _mm512_cvtepi32_ps(D[n])));
            fM[n][l] = _mm512_add_ps(fM[n][l], _mm512_mul_ps(dv, _mm512_cvtepi32_ps(M[n])));
        }
    }
    const __m512 vd = _mm512_loadu_ps(d), vdmin = _mm512_loadu_ps(d + 16);
    /* MAQ2: the reference's final + dsal * S, with S = +0 (no salient words) */
    const __m512 sal0 = BITS == 2 ? _mm512_mul_ps(_mm512_loadu_ps(d + 32), _mm512_setzero_ps()) : _mm512_setzero_ps();
    const __mmask16 keep = (__mmask16)((1u << nr) - 1u);
    for (int n = 0; n < NT; n++) {
        const __m512 Dv = _mm512_add_ps(_mm512_add_ps(fD[n][0], fD[n][1]), _mm512_add_ps(fD[n][2], fD[n][3]));
        const __m512 Mv = _mm512_add_ps(_mm512_add_ps(fM[n][0], fM[n][1]), _mm512_add_ps(fM[n][2], fM[n][3]));
        __m512 y = _mm512_add_ps(_mm512_mul_ps(vd, Dv), _mm512_mul_ps(vdmin, Mv));
        if (BITS == 2) y = _mm512_add_ps(y, sal0);
        _mm512_mask_storeu_ps(Y + (size_t)n * w->P + pa, keep, y);
    }
}

/* Every token tile of B tokens over one panel (the tile size a compile-time constant in each branch). */
R16_FN void r16_tokens(const uint8_t *panel, const uint8_t *u8, const maq_weight *w, const maq2_act_layout *L,
                       const uint8_t *act, int B, const int BITS, const int UNPACKED, float *Y, int pa, int nr,
                       size_t pf) {
    for (int t0 = 0; t0 < B; t0 += R16_NT) {
        const int nt = B - t0 < R16_NT ? B - t0 : R16_NT;
        const uint8_t *a = act + (size_t)t0 * L->stride;
        float *y = Y + (size_t)t0 * w->P;
        switch (nt) {
#define R16_CASE(N) \
    case N: r16_tile(panel, u8, w, L, a, N, BITS, UNPACKED, y, pa, nr, pf); break;
            R16_CASE(1) R16_CASE(2) R16_CASE(3) R16_CASE(4) R16_CASE(5) R16_CASE(6) R16_CASE(7)
            default: r16_tile(panel, u8, w, L, a, R16_NT, BITS, UNPACKED, y, pa, nr, pf); break;
#undef R16_CASE
        }
    }
}

/* Every panel of rows [p0, p1) (p0 a multiple of 16) for B tokens: one token tile reads the packed codes (and
 * prefetches the stream ahead: each panel is visited once); several unpack each panel first (if the stage can be
 * allocated). */
R16_FN void r16_rows_bits(const maq_weight *w, const maq2_act_layout *L, const uint8_t *act, int B, int p0, int p1,
                          float *Y, const int BITS) {
    const size_t pb = r16_panel_bytes(w);
    uint8_t *u8 = B > R16_NT ? aligned_alloc(64, (size_t)16 * w->T) : NULL;
    const size_t pf = B <= R16_NT ? MAQ_PF_BYTES_PANEL : 0;
    for (int pa = p0; pa < p1; pa += 16) {
        const uint8_t *panel = w->r16 + (size_t)(pa / 16) * pb;
        const int nr = p1 - pa < 16 ? p1 - pa : 16;
        if (u8) {
            r16_unpack(panel, w->T, BITS, u8);
            r16_tokens(panel, u8, w, L, act, B, BITS, 1, Y, pa, nr, 0);
        } else {
            r16_tokens(panel, NULL, w, L, act, B, BITS, 0, Y, pa, nr, pf);
        }
    }
    free(u8);
}
static __attribute__((noinline, target(R16_TARGET))) void r16_rows_b2(const maq_weight *w, const maq2_act_layout *L,
                                                                      const uint8_t *act, int B, int p0, int p1,
                                                                      float *Y) {
    r16_rows_bits(w, L, act, B, p0, p1, Y, 2);
}
static __attribute__((noinline, target(R16_TARGET))) void r16_rows_b3(const maq_weight *w, const maq2_act_layout *L,
                                                                      const uint8_t *act, int B, int p0, int p1,
                                                                      float *Y) {
    r16_rows_bits(w, L, act, B, p0, p1, Y, 3);
}
static __attribute__((noinline, target(R16_TARGET))) void r16_rows_b4(const maq_weight *w, const maq2_act_layout *L,
                                                                      const uint8_t *act, int B, int p0, int p1,
                                                                      float *Y) {
    r16_rows_bits(w, L, act, B, p0, p1, Y, 4);
}

int maq2_r16_rows(const maq_weight *w, const maq2_act_layout *L, const uint8_t *act, int B, int p0, int p1, float *Y) {
    if (w->type == MAQ_TYPE_MAQ4) r16_rows_b4(w, L, act, B, p0, p1, Y);
    else if (w->type == MAQ_TYPE_MAQ3) r16_rows_b3(w, L, act, B, p0, p1, Y);
    else r16_rows_b2(w, L, act, B, p0, p1, Y);
    return 1;
}
#else
int maq2_r16_rows(const maq_weight *w, const maq2_act_layout *L, const uint8_t *act, int B, int p0, int p1, float *Y) {
    (void)w, (void)L, (void)act, (void)B, (void)p0, (void)p1, (void)Y;
    return 0;
}
#endif
